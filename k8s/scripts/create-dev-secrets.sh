#!/usr/bin/env bash
# Creates the Secrets the dev overlay expects, with random passwords and a fresh RSA key pair for
# access tokens. Nothing secret is written to disk outside a temporary directory.
#   k8s/scripts/create-dev-secrets.sh [namespace]      (default: pricecast)
# For production create the same Secrets from your secret store (docs/deploy.md).
set -euo pipefail
NS=${1:-pricecast}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

kubectl get namespace "$NS" >/dev/null 2>&1 || kubectl apply -f "$(dirname "$0")/../base/namespace.yaml"
exists() { kubectl -n "$NS" get secret "$1" >/dev/null 2>&1; }

if ! exists pricecast-timescaledb; then
  pg_password=$(openssl rand -hex 24)
  kubectl -n "$NS" create secret generic pricecast-timescaledb \
    --from-literal=POSTGRES_PASSWORD="$pg_password"

  kubectl -n "$NS" create secret generic pricecast-connections \
    --from-literal=DATABASE_URL="postgresql+psycopg2://pricecast:${pg_password}@timescaledb:5432/pricecast" \
    --from-literal=REDIS_URL="redis://redis:6379/0"

fi

if ! exists pricecast-jwt-private; then
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$tmp/private.pem" 2>/dev/null
  openssl pkey -in "$tmp/private.pem" -pubout -out "$tmp/current.pem"
  kubectl -n "$NS" create secret generic pricecast-jwt-private \
    --from-file=private.pem="$tmp/private.pem"

  kubectl -n "$NS" create secret generic pricecast-jwt-public \
    --from-file=current.pem="$tmp/current.pem"

fi

if ! exists pricecast-grafana; then
  kubectl -n "$NS" create secret generic pricecast-grafana \
    --from-literal=GF_SECURITY_ADMIN_PASSWORD="$(openssl rand -hex 16)"

fi
echo "secrets ready in namespace $NS"

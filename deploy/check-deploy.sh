#!/usr/bin/env bash
# Checks what is shipped besides the code: the protos (buf lint, and no change that breaks
# the released API on the wire or in JSON), the systemd units (systemd-analyze verify,
# warnings are failures), the Kubernetes manifests (the API schemas, strict), the NATS
# configuration for Kubernetes (nats-server -t) and the kustomization's files. Each check
# also proves it can fail (a known-bad input must be refused). Run by deploy/test.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/deploy/install-tools.sh"
buf="$root/.tools/buf/node_modules/.bin/buf"
kv="$root/.tools/py/bin/kubernetes-validate"
nats="$root/.tools/nats/bin/nats-server"
bin="${HENVIS_BIN_DIR:-${CARGO_TARGET_DIR:-$root/target}/debug}"
K8S_VERSION=1.33.0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "check-deploy: $*" >&2; exit 1; }

echo "protos: buf lint, buf breaking against proto/released/v1.binpb"
(cd proto && "$buf" lint) || fail "buf lint"
(cd proto && "$buf" breaking --against released/v1.binpb) || fail "a change breaks the released API"
# the gate bites: renumbering a released field is refused
cp -r proto "$tmp/proto"
sed -i 's/string idempotency_key = 1;/string idempotency_key = 99;/' "$tmp/proto/henvis/broker/v1/broker.proto"
grep -q 'idempotency_key = 99' "$tmp/proto/henvis/broker/v1/broker.proto" || fail "self-test edit did not apply"
if (cd "$tmp/proto" && "$buf" breaking --against released/v1.binpb >/dev/null 2>&1); then
  fail "buf breaking accepted a renumbered field"
fi

echo "systemd units: systemd-analyze verify"
mkdir -p "$tmp/units"
for f in deploy/systemd/*.service; do
  sed -e "s#/usr/local/bin/nats-server#$nats#g" -e "s#/usr/local/bin/#$bin/#g" "$f" >"$tmp/units/$(basename "$f")"
done
cp "$tmp/units/henvis-sector@.service" "$tmp/units/henvis-sector@police.service"
units=("$tmp/units/henvis-router.service" "$tmp/units/henvis-admin.service" "$tmp/units/henvis-sector@police.service" "$tmp/units/henvis-nats.service")
out=$(cd "$tmp/units" && systemd-analyze verify --man=no "${units[@]}" 2>&1) || fail "systemd-analyze: $out"
[ -z "$out" ] || fail "systemd-analyze warned: $out"
printf '[Service]\nExecStart=/bin/true\nProtectSystm=yes\n' >"$tmp/units/bad.service"
bad=$(cd "$tmp/units" && systemd-analyze verify --man=no "$tmp/units/bad.service" 2>&1 || true)
[ -n "$bad" ] || fail "systemd-analyze accepted an unknown key"

echo "kubernetes manifests: kubernetes-validate --strict, Kubernetes $K8S_VERSION"
"$kv" --strict --quiet -k "$K8S_VERSION" deploy/kubernetes/*.yaml || fail "a manifest does not validate"
sed 's/replicas: 3/replicas: three/' deploy/kubernetes/nats.yaml >"$tmp/bad.yaml"
if "$kv" --strict --quiet -k "$K8S_VERSION" "$tmp/bad.yaml" >/dev/null 2>&1; then
  fail "kubernetes-validate accepted a bad manifest"
fi
# every file the kustomization names exists
for f in $(sed -n 's/^ *- \([a-z/.-]*\.\(yaml\|conf\)\)$/\1/p; s/^ *- [a-z.]*=\([a-z/.-]*\)$/\1/p' deploy/kustomization.yaml); do
  [ -f "deploy/$f" ] || fail "deploy/kustomization.yaml names deploy/$f, which does not exist"
done

echo "nats configuration for Kubernetes: nats-server -t"
mkdir -p "$tmp/nats"
cp deploy/kubernetes/nats.conf deploy/nats/tls.conf deploy/nats/cluster-route.conf deploy/nats/auth.conf "$tmp/nats/"
[ -f "$tmp/pki/ca.pem" ] || "$bin/henvis" dev-pki --dir "$tmp/pki" >/dev/null
POD_NAME=nats-0 HENVIS_NATS_STORE_KEY=ktestkeyofthirtytwobytes00000000 \
  HENVIS_NATS_CERT="$tmp/pki/service/nats.pem" HENVIS_NATS_KEY="$tmp/pki/service/nats.key" \
  HENVIS_NATS_CA="$tmp/pki/ca.pem" "$nats" -t -c "$tmp/nats/nats.conf" >/dev/null 2>&1 \
  || fail "deploy/kubernetes/nats.conf does not parse"
echo "check-deploy: all checks passed"

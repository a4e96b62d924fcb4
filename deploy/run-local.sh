#!/usr/bin/env bash
# Starts the whole local henvis deployment: nats-server (pinned, JetStream, fsync always),
# the router, the admin service and the four sector services with the default Danish agency directory and
# the default rule set, all gRPC over mutual TLS. A development PKI (CA, revocation list,
# a certificate for every service, agency, contact person and administrator) is created
# on first start.
# Stop with Ctrl-C: every service gets SIGTERM and shuts down gracefully.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/deploy/install-nats-server.sh"
cargo build --workspace --bins --quiet
bin="$root/target/debug"
state="$root/.local"
mkdir -p "$state/nats" "$state/logs" "$state/secrets"
# the key JetStream encrypts its store with: outside the store, readable by this user only
if [ ! -s "$state/secrets/nats-store.key" ]; then
  # hex after a letter: nats-server reads the variable as a configuration value, and a
  # value that starts with a letter and holds only letters and digits is a string
  (umask 077 && printf 'k%s\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$state/secrets/nats-store.key")
fi
if [ ! -f "$state/pki/ca.pem" ]; then
  "$bin/henvis" dev-pki --dir "$state/pki"
fi
# the case master key (a PKI folder made before it existed has none)
if [ ! -s "$state/pki/service/case-master.key" ]; then
  (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$state/pki/service/case-master.key")
fi

pids=()
stop() {
  echo "stopping henvis"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait
}
trap stop INT TERM EXIT

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
await_port() { # port name log
  for _ in $(seq 1 150); do
    listening "$1" && return 0
    sleep 0.2
  done
  echo "$2 did not start; see $3:" >&2
  tail -n 20 "$3" >&2
  exit 1
}

HENVIS_NATS_STORE_KEY="$(cat "$state/secrets/nats-store.key")" \
  HENVIS_NATS_STORE="$state/nats" HENVIS_NATS_CERT="$state/pki/service/nats.pem" \
  HENVIS_NATS_KEY="$state/pki/service/nats.key" HENVIS_NATS_CA="$state/pki/ca.pem" \
  "$root/.tools/nats/bin/nats-server" -c "$root/deploy/nats/single.conf" \
  >"$state/logs/nats.log" 2>&1 &
pids+=($!)
await_port 4222 nats-server "$state/logs/nats.log"

export HENVIS_NATS_URL=nats://127.0.0.1:4222
export HENVIS_PKI_DIR="$state/pki"
# each service's operator port (Prometheus /metrics, /livez, /readyz): 9550 + the last digit of its gRPC port
HENVIS_METRICS_LISTEN=127.0.0.1:9550 "$bin/henvis-router" >"$state/logs/router.log" 2>&1 &
pids+=($!)
echo "henvis-router  grpcs://127.0.0.1:50050 (health, reflection)   metrics http://127.0.0.1:9550/metrics"
HENVIS_METRICS_LISTEN=127.0.0.1:9555 HENVIS_ADMIN_LISTEN=127.0.0.1:50055 "$bin/henvis-admin" >"$state/logs/admin.log" 2>&1 &
pids+=($!)
echo "henvis-admin   grpcs://127.0.0.1:50055 (administrators)       metrics http://127.0.0.1:9555/metrics"
port=50051
for sector in police health social ngo; do
  metrics="127.0.0.1:$((port - 50051 + 9551))"
  HENVIS_METRICS_LISTEN="$metrics" HENVIS_LISTEN="127.0.0.1:$port" "$bin/henvis-$sector" >"$state/logs/$sector.log" 2>&1 &
  pids+=($!)
  echo "henvis-$sector  grpcs://127.0.0.1:$port                      metrics http://$metrics/metrics"
  port=$((port + 1))
done
port=50051
for sector in police health social ngo; do
  await_port "$port" "henvis-$sector" "$state/logs/$sector.log"
  port=$((port + 1))
done
await_port 50055 henvis-admin "$state/logs/admin.log"
cat <<MSG
henvis is running. Logs: $state/logs/. Certificates: $state/pki/<kind>/<id>.pem
Try:
  target/debug/henvis report-example --endpoint 127.0.0.1:50054 --pki-dir $state/pki --as henvis://agency/ngo-redbarnet
  target/debug/henvis inbox --ack --endpoint 127.0.0.1:50053 --pki-dir $state/pki --as henvis://agency/kommune-101
  target/debug/henvis admin list --pki-dir $state/pki --as henvis://admin/admin-1
Ctrl-C stops everything.
MSG
wait -n "${pids[@]}" || true

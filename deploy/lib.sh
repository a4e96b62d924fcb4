# Shared by run-local.sh and run-cluster.sh: prepares the state folder (the pinned
# nats-server, the binaries, a development PKI, the store and case master keys) and starts
# the henvis services. Source it; it uses `root`, `state`, `pids` (every process) and
# `services` (the henvis services) from the caller.
#   HENVIS_NO_BUILD=1     use the binaries in HENVIS_BIN_DIR (default target/debug) as they are
#   HENVIS_BIN_DIR=DIR    where the henvis binaries are (default $CARGO_TARGET_DIR/debug)

prepare() {
  "$root/deploy/install-nats-server.sh"
  bin="${HENVIS_BIN_DIR:-${CARGO_TARGET_DIR:-$root/target}/debug}"
  if [ "${HENVIS_NO_BUILD:-0}" != 1 ]; then
    (cd "$root" && cargo build --workspace --bins --quiet)
  fi
  mkdir -p "$state/logs" "$state/secrets" "$state/pids"
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
}

stop() {
  trap - INT TERM EXIT
  echo "stopping henvis"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

await_port() { # port name log
  for _ in $(seq 1 300); do
    listening "$1" && return 0
    sleep 0.2
  done
  echo "$2 did not start; see $3:" >&2
  # why, first (a panic's backtrace would push it out of the tail), then how it ended
  grep -m 5 -E 'ERROR|Error|panicked' "$3" >&2 || true
  tail -n 20 "$3" >&2
  exit 1
}

# start_nats NAME CONF STORE: one nats-server with the shipped configuration
start_nats() {
  mkdir -p "$3"
  HENVIS_NATS_STORE_KEY="$(cat "$state/secrets/nats-store.key")" \
    HENVIS_NATS_STORE="$3" HENVIS_NATS_CERT="$state/pki/service/nats.pem" \
    HENVIS_NATS_KEY="$state/pki/service/nats.key" HENVIS_NATS_CA="$state/pki/ca.pem" \
    "$root/.tools/nats/bin/nats-server" -c "$2" >"$state/logs/$1.log" 2>&1 &
  pids+=($!)
  echo $! >"$state/pids/$1.pid"
}

# start_services: the router, the admin service and the four sector services, with
# HENVIS_NATS_URL and the other HENVIS_ settings of the caller's environment; each with
# its operator port (Prometheus /metrics, /livez, /readyz) at 9550 + the last digit of its
# gRPC port
start_services() {
  export HENVIS_PKI_DIR="$state/pki"
  HENVIS_METRICS_LISTEN=127.0.0.1:9550 "$bin/henvis-router" >"$state/logs/router.log" 2>&1 &
  pids+=($!)
  echo $! >"$state/pids/router.pid"
  echo "henvis-router  grpcs://127.0.0.1:50050 (health, reflection)   metrics http://127.0.0.1:9550/metrics"
  # the administrators' web console at 8445
  HENVIS_CONSOLE_LISTEN=127.0.0.1:8445 HENVIS_METRICS_LISTEN=127.0.0.1:9555 HENVIS_ADMIN_LISTEN=127.0.0.1:50055 "$bin/henvis-admin" >"$state/logs/admin.log" 2>&1 &
  pids+=($!)
  services+=($!)
  echo $! >"$state/pids/admin.pid"
  echo "henvis-admin   grpcs://127.0.0.1:50055 (administrators)       metrics http://127.0.0.1:9555/metrics  console https://127.0.0.1:8445/"
  local port=50051 sector metrics
  for sector in police health social ngo; do
    metrics="127.0.0.1:$((port - 50051 + 9551))"
    # each sector service's web console at 8440 + the last digit of its gRPC port
    HENVIS_CONSOLE_LISTEN="127.0.0.1:$((port - 50051 + 8441))" \
      HENVIS_METRICS_LISTEN="$metrics" HENVIS_LISTEN="127.0.0.1:$port" "$bin/henvis-$sector" >"$state/logs/$sector.log" 2>&1 &
    pids+=($!)
    services+=($!)
    echo $! >"$state/pids/$sector.pid"
    echo "henvis-$sector  grpcs://127.0.0.1:$port                      metrics http://$metrics/metrics"
    port=$((port + 1))
  done
  port=50051
  for sector in police health social ngo; do
    await_port "$port" "henvis-$sector" "$state/logs/$sector.log"
    port=$((port + 1))
  done
  await_port 50055 henvis-admin "$state/logs/admin.log"
  await_port 50050 henvis-router "$state/logs/router.log"
}

try_it() {
  cat <<MSG
henvis is running. Logs: $state/logs/. Certificates: $state/pki/<kind>/<id>.pem
Consoles: police contact persons (case alerts) https://127.0.0.1:8441/, guardians on their
sector's service (e.g. the NGO's https://127.0.0.1:8444/cases), administrators
https://127.0.0.1:8445/ — import a person's certificate into the browser first (README,
"The web console").
Try:
  $bin/henvis report-example --endpoint 127.0.0.1:50054 --pki-dir $state/pki --as henvis://agency/ngo-redbarnet
  $bin/henvis inbox --ack --endpoint 127.0.0.1:50053 --pki-dir $state/pki --as henvis://agency/kommune-101
  $bin/henvis admin list --pki-dir $state/pki --as henvis://admin/admin-1
Ctrl-C stops everything.
MSG
}

#!/usr/bin/env bash
# Starts henvis on a 3-node NATS cluster on this machine (loopback ports): three
# nats-servers (deploy/nats/cluster-{1,2,3}.conf: JetStream, fsync always, store
# encryption, client and route TLS, the per-service permissions), every stream and bucket
# with three replicas, and the router, the admin service and the four sector services
# connected to all three nodes. Uses the same ports as run-local.sh (run one or the other).
# State (stores, PKI, logs, pid files): .local-cluster/ (HENVIS_STATE to change).
# Stop with Ctrl-C. Any one nats-server may be stopped and started again meanwhile
# (kill "$(cat .local-cluster/pids/nats-2.pid)"): nothing is lost or refused.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
state="${HENVIS_STATE:-$root/.local-cluster}"
pids=()
services=()
# shellcheck source=deploy/lib.sh
. "$root/deploy/lib.sh"
prepare
trap stop INT TERM EXIT

for n in 1 2 3; do
  start_nats "nats-$n" "$root/deploy/nats/cluster-$n.conf" "$state/nats-$n"
done
for n in 1 2 3; do
  await_port $((4221 + n)) "nats-server $n" "$state/logs/nats-$n.log"
done
echo "nats-server    nats://127.0.0.1:4222,4223,4224 (cluster henvis, routes over mutual TLS)"
export HENVIS_NATS_URL=nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224
export HENVIS_STREAM_REPLICAS=3
start_services
try_it
# a nats-server may stop (the cluster goes on); a henvis service that stops ends the run
wait -n "${services[@]}" || true

#!/usr/bin/env bash
# Starts the whole local henvis deployment: nats-server (pinned, JetStream, fsync always),
# the router, the admin service and the four sector services with the default Danish agency directory and
# the default rule set, all gRPC over mutual TLS. A development PKI (CA, revocation list,
# a certificate for every service, agency, contact person and administrator) is created
# on first start. State (store, PKI, logs): .local/ (HENVIS_STATE to change).
# Stop with Ctrl-C: every service gets SIGTERM and shuts down gracefully.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
state="${HENVIS_STATE:-$root/.local}"
pids=()
services=()
# shellcheck source=deploy/lib.sh
. "$root/deploy/lib.sh"
prepare
trap stop INT TERM EXIT

start_nats nats "$root/deploy/nats/single.conf" "$state/nats"
await_port 4222 nats-server "$state/logs/nats.log"
export HENVIS_NATS_URL=nats://127.0.0.1:4222
start_services
try_it
wait -n "${pids[@]}" || true

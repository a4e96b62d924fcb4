#!/usr/bin/env bash
# Runs every henvis test: installs the pinned nats-server if missing, then the unit tests
# and the integration tests (real nats-server processes, real gRPC over TCP).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/deploy/install-nats-server.sh"
export NATS_SERVER_BIN="$root/.tools/nats/bin/nats-server"
cargo test --workspace --all-targets

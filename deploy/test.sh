#!/usr/bin/env bash
# Runs every henvis test: installs the pinned nats-server and checkers if missing, checks
# what is shipped besides the code (protos, systemd units, Kubernetes manifests), then the
# unit tests, the policy proofs and the integration tests (real nats-server processes,
# real gRPC over TCP, the deployment scripts, the Python client example). Ends with one
# summary line of all test binaries together.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/deploy/install-nats-server.sh"
export NATS_SERVER_BIN="$root/.tools/nats/bin/nats-server"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# the deployment scripts' gRPC ports (50050-50055) lie in the kernel's ephemeral range:
# reserved, where this user may, so no other test's connection holds one while a
# deployment:: test starts the scripts (a no-op without the right)
reserved=/proc/sys/net/ipv4/ip_local_reserved_ports
if [ -w "$reserved" ] && ! grep -q '50050-50055' "$reserved" 2>/dev/null; then
  current=$(cat "$reserved")
  { echo "${current:+$current,}50050-50055" >"$reserved"; } 2>/dev/null || true
fi
# the crash tests run the real binaries as processes
cargo build --workspace --bins
"$root/deploy/check-deploy.sh"
cargo test --workspace --all-targets 2>&1 | tee "$log" || status=$?
passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '; [0-9]+ failed' "$log" | awk '{s+=$2} END {print s+0}')
echo
echo "tests: $passed passed, $failed failed"
exit "$status"

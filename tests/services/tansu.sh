#!/usr/bin/env bash
# Tansu, the Kafka-protocol broker the Kafka tests run against.
#
#   tests/services/tansu.sh build          make sure the binary exists (builds it once, ~16 min)
#   tests/services/tansu.sh path           print the binary's path (exit 1 when absent)
#   tests/services/tansu.sh start PORT     run a broker on 127.0.0.1:PORT in the foreground
#                                          (in-memory storage; the caller owns the process)
#
# The binary lives in $TANSU_ROOT (default /var/cache/connbeat-test/tansu) and is never
# rebuilt when present. Tests look for it at $TANSU_ROOT/bin/tansu (or $TANSU_BIN) and skip
# loudly when it is absent.
set -euo pipefail

ROOT="${TANSU_ROOT:-/var/cache/connbeat-test/tansu}"
BIN="${TANSU_BIN:-$ROOT/bin/tansu}"

build() {
  if [[ -x "$BIN" ]]; then
    return 0
  fi
  # Another build (e.g. started in the background) may be running: wait for it rather than
  # compete with it for the same directory.
  local pidfile
  pidfile="$(dirname "$ROOT")/tansu-build.pid"
  if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "tansu.sh: waiting for the Tansu build already running (pid $(cat "$pidfile"))" >&2
    while kill -0 "$(cat "$pidfile")" 2>/dev/null; do sleep 10; done
    [[ -x "$BIN" ]] && return 0
  fi
  echo "tansu.sh: building Tansu into $ROOT (about 16 minutes, once)" >&2
  mkdir -p "$ROOT"
  cargo install tansu --locked --features dynostore --root "$ROOT"
}

case "${1:-}" in
  build)
    build
    ;;
  path)
    [[ -x "$BIN" ]] && echo "$BIN"
    ;;
  start)
    port="${2:?usage: tansu.sh start PORT}"
    [[ -x "$BIN" ]] || { echo "tansu.sh: no tansu binary at $BIN; run tests/services/tansu.sh build" >&2; exit 1; }
    exec "$BIN" broker \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine "memory://tansu/"
    ;;
  *)
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac

#!/usr/bin/env bash
# One call with sipp's built-in UAC to 127.0.0.1:$1 over ${2:-u1}: INVITE, 180, 200,
# ACK, BYE, 200. Exits 0 when the call completed. sipp cannot bind port 0, so its ports
# are chosen just before; when one was taken in between, sipp fails to bind before
# sending anything and the call is tried again on new ports.
set -euo pipefail
T=${2:-u1}
HERE="$(cd "$(dirname "$0")" && pwd)"
DIR=$(mktemp -d /tmp/connbeat-sipp-call.XXXXXX)
trap 'rm -rf "$DIR"' EXIT
cd "$DIR"
for _ in 1 2 3 4 5; do
  read -r PORT MEDIA CONTROL < <(python3 "$HERE/free-ports.py" 3)
  if sipp -sn uac "127.0.0.1:$1" -t "$T" -i 127.0.0.1 -p "$PORT" -mp "$MEDIA" -cp "$CONTROL" \
    -m 1 -d 0 -timeout 30s -timeout_error -nostdin >"$DIR/uac.log" 2>&1; then
    exit 0
  fi
  grep -q "Unable to bind" "$DIR/uac.log" || break
done
tail -n 30 "$DIR/uac.log" >&2
exit 1

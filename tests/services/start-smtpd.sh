#!/usr/bin/env bash
# Starts an SMTP server (aiosmtpd, tests/services/smtpd.py) on 127.0.0.1, on a port the
# kernel chooses, in a temp dir; prints pid=, port=, dir=.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need openssl openssl
if ! python3 -c 'import aiosmtpd' 2>/dev/null; then
  echo "missing the Python package aiosmtpd (scripts/install-deps.sh test installs it)" >&2
  exit 3
fi
DIR=$(mktemp -d /tmp/connbeat-smtpd.XXXXXX)
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=mx.test \
  -keyout "$DIR/key.pem" -out "$DIR/cert.pem" >/dev/null 2>&1
python3 "$(dirname "$0")/smtpd.py" "$DIR" </dev/null >"$DIR/smtpd.log" 2>&1 &
PID=$!
for _ in $(seq 1 300); do
  [[ -s "$DIR/port" ]] && break
  if ! kill -0 "$PID" 2>/dev/null; then echo "smtpd exited: $(cat "$DIR/smtpd.log")" >&2; exit 1; fi
  sleep 0.1
done
PORT=$(cat "$DIR/port")
wait_tcp "$PORT" "$PID"
echo "pid=$PID port=$PORT dir=$DIR"

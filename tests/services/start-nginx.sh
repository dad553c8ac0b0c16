#!/usr/bin/env bash
# Starts nginx on 127.0.0.1:${1:-18080} (HTTP) and 127.0.0.1:${2:-18443} (TLS, self-signed
# certificate for localhost, ALPN http/1.1 and h2) in a temp dir; prints pid=, port=,
# tls_port=, dir=. Routes: /index.html (static), /big (64 KiB), /missing (404),
# /error (500), /login (POST echo as 200), /chunked (chunked body). $BIND replaces 127.0.0.1
# (e.g. 0.0.0.0 inside a test's network namespace); with $PROXY_TO=host:port, /app/ is
# proxied there.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
PORT=${1:-18080}
TLS_PORT=${2:-18443}
need nginx nginx-light
need openssl openssl
need curl curl
BIND=${BIND:-127.0.0.1}
PROXY=""
if [[ -n "${PROXY_TO:-}" ]]; then
  PROXY="location /app/ { proxy_pass http://$PROXY_TO; }"
fi
DIR=$(mktemp -d /tmp/connbeat-nginx.XXXXXX)
mkdir -p "$DIR/www" "$DIR/tmp"
chmod 755 "$DIR" "$DIR/www"
echo "<html><body>connbeat test</body></html>" >"$DIR/www/index.html"
head -c 65536 /dev/zero | tr '\0' 'x' >"$DIR/www/big"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$DIR/key.pem" -out "$DIR/cert.pem" \
  -days 3650 -subj "/CN=localhost" >/dev/null 2>&1
cat >"$DIR/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $DIR/nginx.pid;
error_log $DIR/error.log;
events { worker_connections 128; }
http {
  access_log off;
  client_body_temp_path $DIR/tmp; proxy_temp_path $DIR/tmp; fastcgi_temp_path $DIR/tmp;
  uwsgi_temp_path $DIR/tmp; scgi_temp_path $DIR/tmp;
  default_type text/plain;
  server {
    listen $BIND:$PORT;
    listen $BIND:$TLS_PORT ssl http2;
    ssl_certificate $DIR/cert.pem;
    ssl_certificate_key $DIR/key.pem;
    root $DIR/www;
    $PROXY
    location = /error { return 500 "boom\n"; }
    location = /login { return 200 "welcome\n"; }
    location = /chunked { gzip on; gzip_min_length 1; gzip_types text/plain; chunked_transfer_encoding on; return 200 "chunky\n"; }
  }
}
CONF
nginx -c "$DIR/nginx.conf" -p "$DIR" </dev/null >/dev/null 2>&1 &
PID=$!
wait_tcp "$PORT" "$PID"
wait_tcp "$TLS_PORT" "$PID"
echo "pid=$PID port=$PORT tls_port=$TLS_PORT dir=$DIR"

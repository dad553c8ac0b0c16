#!/usr/bin/env bash
# Re-records the captures in this directory: starts each test server with
# ../services/start-*.sh, runs a scripted session with the real client while tcpdump
# records loopback, and stops everything it started (by PID). Needs root (tcpdump).
#   tests/data/record.sh [http|dns|redis|mysql|pgsql|tls|memcache|mongodb|amqp ...]   (default: all)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SVC="$HERE/../services"
. "$SVC/lib.sh"
need tcpdump tcpdump
need editcap wireshark-common
PIDS=()
DIRS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  for d in "${DIRS[@]}"; do rm -rf "$d"; done
}
trap cleanup EXIT

start() { # start <script> [args]: runs a start script, remembers pid and dir
  local line
  line=$("$SVC/$1" "${@:2}")
  echo "started: $line" >&2
  PIDS+=("$(sed -n 's/.*pid=\([0-9]*\).*/\1/p' <<<"$line")")
  DIRS+=("$(sed -n 's/.*dir=\([^ ]*\).*/\1/p' <<<"$line")")
}

TCPDUMP_PID=
record() { # record <file> <iface> <filter> [tcpdump args]
  local err
  err=$(mktemp)
  tcpdump -i "$2" -s 0 -U --immediate-mode -w "$1" "${@:4}" "$3" 2>"$err" &
  TCPDUMP_PID=$!
  for _ in $(seq 1 100); do grep -q "listening on" "$err" && break; sleep 0.05; done
  rm -f "$err"
}
stop_record() {
  sleep 0.3 # let the last segments (FIN/ACK) reach the capture buffer
  kill -TERM "$TCPDUMP_PID"
  wait "$TCPDUMP_PID" 2>/dev/null || true
}

rec_http() {
  start start-nginx.sh 18080 18443
  record "$HERE/http.pcap" lo "tcp port 18080"
  local u=http://127.0.0.1:18080
  # One keep-alive connection with several requests, then single ones.
  curl -s -A connbeat-test "$u/index.html" "$u/missing" "$u/error" "$u/big" >/dev/null
  curl -s -o /dev/null -H 'X-Forwarded-For: 203.0.113.7, 10.0.0.1' "$u/index.html?user=alice&password=secret"
  curl -s -o /dev/null -d 'user=bob&pass=hunter2' "$u/login"
  curl -s -o /dev/null -H 'Accept-Encoding: gzip' "$u/chunked"
  curl -s -o /dev/null -I "$u/index.html"
  curl -s -o /dev/null -u user:pw "$u/missing?q=1"
  stop_record
}

rec_tls() {
  start start-nginx.sh 18081 18443
  record "$HERE/tls.pcap" lo "tcp port 18443"
  curl -sk -o /dev/null --http1.1 https://localhost:18443/index.html
  curl -sk -o /dev/null --http2 https://localhost:18443/index.html
  openssl s_client -connect 127.0.0.1:18443 -servername tls12.localhost -tls1_2 </dev/null >/dev/null 2>&1 || true
  # A handshake that ends in an alert (no shared version).
  openssl s_client -connect 127.0.0.1:18443 -servername old.localhost -tls1 -cipher 'DEFAULT:@SECLEVEL=0' </dev/null >/dev/null 2>&1 || true
  stop_record
}

rec_dns() {
  start start-dnsmasq.sh 15353
  # On "any": Linux cooked capture v1.
  record "$HERE/dns.pcap" any "port 15353"
  local d=(dig @127.0.0.1 -p 15353 +tries=1 +time=2)
  "${d[@]}" www.example.test A >/dev/null
  "${d[@]}" multi.example.test A >/dev/null
  "${d[@]}" alias.example.test CNAME >/dev/null
  "${d[@]}" txt.example.test TXT >/dev/null
  "${d[@]}" example.test MX >/dev/null
  "${d[@]}" nope.example.test A >/dev/null
  "${d[@]}" +tcp www.example.test A >/dev/null
  stop_record
}

rec_redis() {
  start start-redis.sh 16379
  record "$HERE/redis.pcap" lo "tcp port 16379"
  local r=(redis-cli -h 127.0.0.1 -p 16379)
  "${r[@]}" SET greeting hello >/dev/null
  "${r[@]}" GET greeting >/dev/null
  "${r[@]}" INCR counter >/dev/null
  "${r[@]}" RPUSH list a b c >/dev/null
  "${r[@]}" LRANGE list 0 -1 >/dev/null
  "${r[@]}" GET list >/dev/null || true
  "${r[@]}" NOSUCHCOMMAND x >/dev/null || true
  # Pipelined: three commands in one write.
  printf '*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$8\r\ngreeting\r\n*2\r\n$4\r\nINCR\r\n$7\r\ncounter\r\n' |
    "${r[@]}" --pipe >/dev/null
  # RESP3: HELLO 3 then a map reply.
  "${r[@]}" -3 HSET h f v >/dev/null
  "${r[@]}" -3 HGETALL h >/dev/null
  stop_record
  # Keep one capture in pcapng, to cover that reader too.
  editcap -F pcapng "$HERE/redis.pcap" "$HERE/redis.pcapng" && rm -f "$HERE/redis.pcap"
}

rec_mysql() {
  start start-mariadb.sh 13306
  record "$HERE/mysql.pcap" lo "tcp port 13306"
  local m=(mariadb -h 127.0.0.1 -P 13306 -u root --skip-ssl)
  "${m[@]}" -e "CREATE DATABASE t; CREATE TABLE t.kv (k INT PRIMARY KEY, v VARCHAR(20));
    INSERT INTO t.kv VALUES (1,'one'),(2,'two'),(3,'three');
    SELECT * FROM t.kv WHERE k >= 2;
    UPDATE t.kv SET v = 'uno' WHERE k = 1;
    SELECT nosuchcolumn FROM t.kv;" >/dev/null 2>&1 || true
  if perl -MDBD::MariaDB -e1 2>/dev/null; then
    perl -MDBI -e '
      my $db = DBI->connect("DBI:MariaDB:database=t;host=127.0.0.1;port=13306;mariadb_server_prepare=1", "root", "", {RaiseError => 0, PrintError => 0});
      my $s = $db->prepare("SELECT v FROM kv WHERE k = ?"); $s->execute(2); $s->fetchall_arrayref;
      $s->execute(3); $s->fetchall_arrayref; $db->disconnect;'
  fi
  stop_record
}

rec_pgsql() {
  start start-postgresql.sh 15432
  record "$HERE/pgsql.pcap" lo "tcp port 15432"
  local p=(psql -h 127.0.0.1 -p 15432 -U postgres -X -q)
  "${p[@]}" -c "CREATE TABLE kv (k int primary key, v text)" -c "INSERT INTO kv VALUES (1,'one'),(2,'two'),(3,'three')" \
    -c "SELECT * FROM kv WHERE k >= 2" -c "UPDATE kv SET v = 'uno' WHERE k = 1" -c "SELECT nosuchcolumn FROM kv" >/dev/null 2>&1 || true
  # Extended query protocol (Parse/Bind/Execute/Sync) through pgbench.
  local f
  f=$(mktemp)
  printf 'SELECT v FROM kv WHERE k = 2;\nSELECT count(*) FROM kv;\n' >"$f"
  PGHOST=127.0.0.1 PGPORT=15432 PGUSER=postgres pgbench -n -M extended -t 2 -f "$f" postgres >/dev/null 2>&1 ||
    PGHOST=127.0.0.1 PGPORT=15432 PGUSER=postgres /usr/lib/postgresql/*/bin/pgbench -n -M extended -t 2 -f "$f" postgres >/dev/null
  rm -f "$f"
  stop_record
}

rec_memcache() {
  start start-memcached.sh 11311
  record "$HERE/memcache.pcap" lo "port 11311"
  python3 "$SVC/memcache-client.py" text 11311 </dev/null >/dev/null
  local f
  f=$(mktemp -d)/binfile
  echo hello >"$f"
  memccp --servers=127.0.0.1:11311 --binary "$f"
  (cd "$(dirname "$f")" && memccat --servers=127.0.0.1:11311 --binary binfile >/dev/null &&
    memcrm --servers=127.0.0.1:11311 --binary binfile)
  memccp --servers=127.0.0.1:11311 --udp "$f"
  rm -rf "$(dirname "$f")"
  python3 "$SVC/memcache-client.py" udp 11311 </dev/null >/dev/null
  stop_record
}

rec_mongodb() {
  for c in plain zlib; do
    MONGO_PORT=27117 start start-mongodb.sh "${c/plain/}"
    record "$HERE/mongodb-$c.pcap" lo "tcp port 27117"
    python3 "$SVC/mongodb-client.py" 27117 ${c/plain/} </dev/null >/dev/null
    stop_record
    cleanup
    PIDS=()
    DIRS=()
  done
}

rec_amqp() {
  start start-rabbitmq.sh 15672
  record "$HERE/amqp.pcap" lo "tcp port 15672"
  python3 "$SVC/amqp-session.py" 15672 >/dev/null
  stop_record
}

WHAT=("$@")
[[ ${#WHAT[@]} -eq 0 ]] && WHAT=(http tls dns redis mysql pgsql memcache mongodb amqp)
for w in "${WHAT[@]}"; do
  "rec_$w"
  cleanup
  PIDS=()
  DIRS=()
done
ls -l "$HERE"/*.pcap*

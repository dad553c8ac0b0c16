#!/usr/bin/env bash
# Shipping benchmark: connbeat's pipeline to Tansu (Kafka), Redis (redis-server), Logstash
# (a Beats-protocol sink that acknowledges every window) and an HTTP collector, batch sizes
# 100/500/2000, memory queue and disk spool, with a reference producer (confluent-kafka,
# i.e. librdkafka from Python) on the same broker in the same run. Redis and Logstash run
# next to Kafka on the same events in the same run; without a Tansu binary (see
# tests/services/tansu.sh build, or BUILD_TANSU=1 here) the Kafka runs are left out, said
# so on the first line, and the file output stands beside them instead.
# The producing process is pinned to CPU 0 (taskset); the servers are not.
#
#   perf/ship.sh                 EVENTS=100000 by default
#   ONLY=outputs perf/ship.sh    just the side-by-side runs of the outputs
# Results go to standard output, one line per run, and after each batch size of the
# side-by-side runs a "# batch=" line with the Redis and Logstash rates over Kafka's
# (see perf/RESULTS.md, "Shipping").
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS="${EVENTS:-100000}"
BATCHES="${BATCHES:-100 500 2000}"
WORK="${WORK:-/tmp/connbeat-ship-bench}"
VENV="${VENV:-/var/cache/connbeat-test/perf-venv}"
ONLY="${ONLY:-all}"
mkdir -p "$WORK"

cargo build --release --example ship_bench >&2
BIN=target/release/examples/ship_bench
[[ "${BUILD_TANSU:-0}" == 1 ]] && tests/services/tansu.sh build
TANSU="$(tests/services/tansu.sh path 2>/dev/null || true)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
KPORT="$(free_port)"
HPORT="$(free_port)"
LPORT="$(free_port)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK/file"; }
trap cleanup EXIT
if [[ -n "$TANSU" ]]; then
  RUST_LOG=warn tests/services/tansu.sh start "$KPORT" >"$WORK/tansu.log" 2>&1 &
  pids+=($!)
  wait_port "$KPORT"
fi
"$BIN" collector "$HPORT" &
pids+=($!)
"$BIN" beats-sink "$LPORT" &
pids+=($!)
RPORT="$(free_port)"
redis_line="$(tests/services/start-redis.sh "$RPORT")"
pids+=("$(sed -n 's/.*pid=\([0-9]*\).*/\1/p' <<<"$redis_line")")
wait_port "$LPORT"

echo "# $(date -u +%FT%TZ) $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), EVENTS=$EVENTS"
[[ -n "$TANSU" ]] || echo "# kafka: no Tansu binary (tests/services/tansu.sh build); Kafka runs left out, the file output stands beside Redis and Logstash"

# The outputs side by side, on the same events, memory queue; then each one's rate over
# the first one's (Kafka, or the file output without Tansu).
rate() { sed -n 's/.*events_per_s=\([0-9]*\).*/\1/p' <<<"$1"; }
for b in $BATCHES; do
  if [[ -n "$TANSU" ]]; then
    topic="side-$b"
    "$TANSU" topic create --broker "tcp://127.0.0.1:$KPORT" --partitions 3 "$topic" >/dev/null
    base="$(taskset -c 0 "$BIN" kafka "127.0.0.1:$KPORT" "$topic" "$EVENTS" "$b" lz4)"
    name=kafka
  else
    base="$(taskset -c 0 "$BIN" file "$WORK/file" "$EVENTS" "$b")"
    name=file
  fi
  echo "$base"
  redis-cli -p "$RPORT" DEL connbeat >/dev/null
  redis="$(taskset -c 0 "$BIN" redis "127.0.0.1:$RPORT" "$EVENTS" "$b")"
  echo "$redis"
  logstash="$(taskset -c 0 "$BIN" logstash "127.0.0.1:$LPORT" "$EVENTS" "$b")"
  echo "$logstash"
  awk -v b="$b" -v n="$name" -v k="$(rate "$base")" -v r="$(rate "$redis")" -v l="$(rate "$logstash")" \
    'BEGIN { printf "# batch=%s redis/%s=%.2f logstash/%s=%.2f\n", b, n, r / k, n, l / k }'
done
redis-cli -p "$RPORT" DEL connbeat >/dev/null
[[ "$ONLY" == outputs ]] && exit 0
[[ -n "$TANSU" ]] || { echo "# the Kafka and HTTP runs below need Tansu: stopping here"; exit 0; }

if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q confluent-kafka
fi
"$BIN" payloads "$EVENTS" >"$WORK/payloads.ndjson"
for b in $BATCHES; do
  for mode in mem disk ref; do
    topic="bench-$b-$mode"
    "$TANSU" topic create --broker "tcp://127.0.0.1:$KPORT" --partitions 3 "$topic" >/dev/null
    case $mode in
      mem)  taskset -c 0 "$BIN" kafka "127.0.0.1:$KPORT" "$topic" "$EVENTS" "$b" lz4 ;;
      disk) taskset -c 0 "$BIN" kafka "127.0.0.1:$KPORT" "$topic" "$EVENTS" "$b" lz4 "$WORK/spool" ;;
      ref)  taskset -c 0 "$VENV/bin/python" perf/ref_producer.py "127.0.0.1:$KPORT" "$topic" "$WORK/payloads.ndjson" "$b" lz4 ;;
    esac
  done
done
for b in $BATCHES; do
  taskset -c 0 "$BIN" http "http://127.0.0.1:$HPORT" "$EVENTS" "$b"
  taskset -c 0 "$BIN" http "http://127.0.0.1:$HPORT" "$EVENTS" "$b" "$WORK/spool"
done
# Steady state: the source paced at RATE events/s (an agent's pollers do not burst 100k
# events at once), where the disk spool's cost is CPU, not throughput.
RATE="${RATE:-20000}"
for b in $BATCHES; do
  for mode in mem disk; do
    topic="steady-$b-$mode"
    "$TANSU" topic create --broker "tcp://127.0.0.1:$KPORT" --partitions 3 "$topic" >/dev/null
    spool=()
    [[ $mode == disk ]] && spool=("$WORK/spool")
    RATE=$RATE taskset -c 0 "$BIN" kafka "127.0.0.1:$KPORT" "$topic" "$EVENTS" "$b" lz4 "${spool[@]}"
    RATE=$RATE taskset -c 0 "$BIN" http "http://127.0.0.1:$HPORT" "$EVENTS" "$b" "${spool[@]}"
  done
done

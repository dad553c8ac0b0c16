#!/usr/bin/env bash
# Shipping benchmark: connbeat's pipeline to Tansu (Kafka) and to an HTTP collector, batch
# sizes 100/500/2000, memory queue and disk spool, with a reference producer
# (confluent-kafka, i.e. librdkafka from Python) on the same broker in the same run.
# The producing process is pinned to CPU 0 (taskset); the broker and the collector are not.
#
#   perf/ship.sh                 EVENTS=100000 by default
# Results go to standard output, one line per run (see perf/RESULTS.md, "Shipping").
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS="${EVENTS:-100000}"
BATCHES="${BATCHES:-100 500 2000}"
WORK="${WORK:-/tmp/connbeat-ship-bench}"
VENV="${VENV:-/var/cache/connbeat-test/perf-venv}"
mkdir -p "$WORK"

cargo build --release --example ship_bench >&2
BIN=target/release/examples/ship_bench
tests/services/tansu.sh build
TANSU="$(tests/services/tansu.sh path)"
if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q confluent-kafka
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
KPORT="$(free_port)"
HPORT="$(free_port)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
RUST_LOG=warn tests/services/tansu.sh start "$KPORT" >"$WORK/tansu.log" 2>&1 &
pids+=($!)
"$BIN" collector "$HPORT" &
pids+=($!)
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$KPORT") 2>/dev/null && break
  sleep 0.1
done
"$BIN" payloads "$EVENTS" >"$WORK/payloads.ndjson"

echo "# $(date -u +%FT%TZ) $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), EVENTS=$EVENTS"
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

#!/usr/bin/env bash
# Topology benchmark: `connbeat topology --kafka` against a plain librdkafka consumer that
# does nothing but read, the same topic of Tansu in the same run, both pinned to CPU 0.
# Events per second per core = EVENTS / (user + system CPU seconds of the process).
#
#   perf/topology.sh             EVENTS=1000000 RUNS=3 by default
#   BASE=path/to/connbeat perf/topology.sh
#                                also measures another build of connbeat in the same runs
# Results go to standard output (see perf/RESULTS.md, "Topology").
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS="${EVENTS:-1000000}"
RUNS="${RUNS:-3}"
WORK="${WORK:-/tmp/connbeat-topology-bench}"
mkdir -p "$WORK"

cargo build --release --example topology_bench --bin connbeat >&2
BIN=target/release/examples/topology_bench
CB=target/release/connbeat
BASE="${BASE:-}"
tests/services/tansu.sh build
TANSU="$(tests/services/tansu.sh path)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
KPORT="$(free_port)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
RUST_LOG=warn tests/services/tansu.sh start "$KPORT" >"$WORK/tansu.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$KPORT") 2>/dev/null && break
  sleep 0.1
done
"$TANSU" topic create --broker "tcp://127.0.0.1:$KPORT" --partitions 3 fleet >/dev/null
"$BIN" fill "127.0.0.1:$KPORT" fleet "$EVENTS"
cat >"$WORK/topology.yml" <<YML
topology.kafka:
  hosts: ["127.0.0.1:$KPORT"]
  topic: fleet
YML
chmod 600 "$WORK/topology.yml"

# Prints "cpu_seconds wall_seconds" of one command.
measure() {
  local TIMEFORMAT='%U %S %R'
  { time "$@" >/dev/null 2>>"$WORK/stderr"; } 2>&1 | awk '{printf "%.3f %.3f\n", $1 + $2, $3}'
}

echo "# $(date -u +%FT%TZ) $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), EVENTS=$EVENTS, commit $(git rev-parse --short HEAD)"
echo "| run | plain consumer CPU s | events/s/core | topology CPU s | events/s/core | ratio |"
echo "|---|---|---|---|---|---|"
: >"$WORK/ratios"
for r in $(seq "$RUNS"); do
  read -r pc pw < <(measure taskset -c 0 "$BIN" plain "127.0.0.1:$KPORT" fleet "$EVENTS")
  read -r tc tw < <(measure taskset -c 0 "$CB" -c "$WORK/topology.yml" -E "topology.group_id=bench-$r" \
    topology --kafka --output "$WORK/graph.json")
  python3 - "$r" "$pc" "$tc" "$EVENTS" <<'PY'
import sys
r, pc, tc, n = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
print(f"| {r} | {pc:.2f} | {n/pc:,.0f} | {tc:.2f} | {n/tc:,.0f} | {pc/tc:.2f} |")
PY
  echo "topology $pc $tc" >>"$WORK/ratios"
  if [[ -n "$BASE" ]]; then
    read -r bc bw < <(measure taskset -c 0 "$BASE" -c "$WORK/topology.yml" -E "topology.group_id=base-$r" \
      topology --kafka --output "$WORK/graph-base.json")
    python3 - "$r" "$pc" "$bc" "$EVENTS" <<'PY'
import sys
r, pc, tc, n = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
print(f"| {r} BASE | {pc:.2f} | {n/pc:,.0f} | {tc:.2f} | {n/tc:,.0f} | {pc/tc:.2f} |")
PY
    echo "BASE $pc $bc" >>"$WORK/ratios"
  fi
done
# Both consumers' CPU varies by a fifth from run to run on a shared machine: the median
# of the runs' ratios is the figure.
python3 - "$WORK/ratios" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    who, plain, cpu = line.split()
    runs.setdefault(who, []).append(float(plain) / float(cpu))
for who, r in runs.items():
    print(f"median ratio ({who}, {len(r)} runs): {statistics.median(r):.2f}")
PY
python3 -c 'import json,sys; g=json.load(open(sys.argv[1])); print("graph:", len(g["nodes"]), "nodes,", len(g["edges"]), "edges; events", g["events"])' "$WORK/graph.json"

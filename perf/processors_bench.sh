#!/usr/bin/env bash
# What processors cost, in one run: the same capture (`-I -N`) and the same sockets
# (`--once -N`) through connbeat without processors, with a top-level chain that every
# event goes through, and with a chain for HTTP transactions only; and, with BASE=<commit>,
# through that commit's binary (no processors: what the agent did before). Measured in
# instructions (valgrind --tool=callgrind: every thread, repeatable on a shared machine)
# and in wall time (median of 3, without valgrind).
#   perf/processors_bench.sh [PACKETS] [CONNECTIONS]     (default 100000 and 2000)
#   BASE=3868312 perf/processors_bench.sh                (also the binary of that commit)
# Needs valgrind and /usr/bin/time; the --once part needs root (it is skipped otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
CONNS=${2:-2000}
REPO=$PWD
W=$(mktemp -d /tmp/connbeat-proc-bench.XXXXXX)
HOLDER=""
cleanup() {
  [[ -n "$HOLDER" ]] && kill "$HOLDER" 2>/dev/null || true
  if [[ -d "$W/base" ]]; then git -C "$REPO" worktree remove --force "$W/base" || true; fi
  rm -rf "$W"
}
trap cleanup EXIT

bins=()
if [[ -n "${BASE:-}" ]]; then
  git worktree add -q --detach "$W/base" "$BASE"
  # Same target directory: the dependencies are reused, only the crate is rebuilt.
  (cd "$W/base" && CARGO_TARGET_DIR="$REPO/target" cargo build --release -q --bin connbeat)
  cp target/release/connbeat "$W/connbeat-base"
  bins+=("base:$W/connbeat-base")
fi
cargo build --release -q --bin connbeat
cp target/release/connbeat "$W/connbeat"
bins+=("this:$W/connbeat")
python3 perf/gen_capture.py "$W/bench.pcap" "$N" >&2

protocols='connbeat.protocols:
  - {type: http, ports: [80]HTTP}
  - {type: dns, ports: [53]}
  - {type: redis, ports: [6379]}'
chain='processors:
  - drop_event.when.equals.status: "Server Error"
  - drop_fields: {fields: [beat.hostname, notes, tcp.rttvar_us], ignore_missing: true}
  - add_fields: {target: project, fields: {name: bench, tier: 1}}
  - add_tags:
      tags: [bench]
      when.or:
        - network.client_ip: private
        - network.remote_ip: private'
http_chain=', processors: [{drop_fields: {fields: [http.request.headers], ignore_missing: true}}]'
write_cfg() { # write_cfg NAME HTTP_EXTRA TOP
  printf 'output.console: {}\nlogging.level: info\n%s\n%s\n' "${protocols/HTTP/$2}" "$3" >"$W/$1.yml"
  chmod 600 "$W/$1.yml"
}
write_cfg none "" ""
write_cfg top "" "$chain"
write_cfg http "$http_chain" ""

# instructions <label> <binary> <config> <args...>: one callgrind run, every thread.
instructions() {
  local label=$1 bin=$2 cfg=$3; shift 3
  local vg="$W/${label//\//-}.vg"
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" -c "$cfg" "$@" -N \
    >/dev/null 2>"$vg"
  local ir events dropped
  ir=$(grep -o 'Collected : [0-9]*' "$vg" | awk '{print $3}' || true)
  events=$(grep -o 'output.events.dry_run=[0-9]*' "$vg" | cut -d= -f2 || true)
  dropped=$(grep -o 'processors.dropped=[0-9]*' "$vg" | cut -d= -f2 || true)
  # median wall time of 3 plain runs
  local walls=()
  for _ in 1 2 3; do
    /usr/bin/time -f "%e" -o "$W/t" "$bin" -c "$cfg" "$@" -N >/dev/null 2>&1
    walls+=("$(cat "$W/t")")
  done
  local wall
  wall=$(printf '%s\n' "${walls[@]}" | sort -n | sed -n 2p)
  echo "$label ${ir:-?} ${events:-0} ${dropped:-0} $wall"
}

report() { # report <rows file>
  python3 - "$1" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
ref = next((r for r in rows if r[0].endswith("/none")), rows[0])
print("| run | instructions | vs no processors | events out | dropped | wall (median of 3) |")
print("|---|---:|---:|---:|---:|---:|")
for label, ir, ev, dr, wall in rows:
    ratio = int(ir) / int(ref[1]) if ir.isdigit() and ref[1].isdigit() else float("nan")
    print(f"| {label} | {int(ir):,} | {ratio:.3f} | {int(ev):,} | {int(dr):,} | {wall} s |")
PY
}

echo "## -I capture ($N packets requested), -N"
: >"$W/rows"
for b in "${bins[@]}"; do
  name=${b%%:*} bin=${b#*:}
  instructions "$name/none" "$bin" "$W/none.yml" -I "$W/bench.pcap" >>"$W/rows"
  if [[ $name == this ]]; then
    instructions "$name/top" "$bin" "$W/top.yml" -I "$W/bench.pcap" >>"$W/rows"
    instructions "$name/http" "$bin" "$W/http.yml" -I "$W/bench.pcap" >>"$W/rows"
  fi
done
report "$W/rows"

if [[ $(id -u) -ne 0 ]]; then
  echo "skipped: --once part needs root"
  exit 0
fi
echo
echo "## --once -N, $CONNS loopback connections held"
python3 - "$CONNS" >"$W/holder.out" <<'PY' &
import resource, socket, sys
n = int(sys.argv[1])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
l = socket.socket()
l.bind(("127.0.0.1", 0))
l.listen(4096)
keep = []
for _ in range(n):
    c = socket.create_connection(l.getsockname())
    s, _ = l.accept()
    keep += [c, s]
print("READY", flush=True)
sys.stdin = open("/dev/null")
import time
time.sleep(3600)
PY
HOLDER=$!
for _ in $(seq 100); do grep -q READY "$W/holder.out" && break; sleep 0.2; done
: >"$W/rows"
for b in "${bins[@]}"; do
  name=${b%%:*} bin=${b#*:}
  instructions "$name/none" "$bin" "$W/none.yml" --once >>"$W/rows"
  if [[ $name == this ]]; then
    instructions "$name/top" "$bin" "$W/top.yml" --once >>"$W/rows"
    instructions "$name/http" "$bin" "$W/http.yml" --once >>"$W/rows"
  fi
done
report "$W/rows"

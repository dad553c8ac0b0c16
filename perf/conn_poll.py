#!/usr/bin/env python3
"""Connection polling benchmark: connbeat against `ss -tanp` and `ss -tan`, same sockets.

For each size (default 10,000 and 50,000 established loopback connections, i.e. twice
as many sockets), helper processes (`examples/sockhold.rs`, at most 5,000 fds each) open
and hold the connections; then, in the same run and on the same sockets, it measures the
CPU time (user + system, from wait4's rusage) of:

  ss -tan            kernel enumeration alone (the floor)
  ss -tanp           enumeration + process mapping (the reference)
  connbeat --once    first poll: startup, sock_diag dump, full /proc index, one event per
                     socket written to /dev/null
  steady-state poll  the agent running with a 1 s poll interval and `-d conn`: cpu_us of
                     polls 2..N from its `poll done` lines (the poller thread's CPU)

Each is repeated --runs times; medians are reported.

With --churn RATE (default 100; 0 = off), on the first size, perf/churn.py opens RATE
loopback connections per second and closes each --churn-life seconds later (RATE closed
per second), and the agent runs with its defaults (a 1 s poll, following state changes)
for --churn-windows whole `aggregation` windows after its first resynchronising dump. It
reports the agent's CPU per poll over those windows, resynchronising dumps included: of
the whole process (utime+stime of every thread: polls, close notifications between them,
events written to a file) and of the poller alone (its `poll done` cpu_us), next to
`ss -tanp` measured while the churn runs; and it checks that every churned connection
that opened and closed while the agent ran has open and closed events on both ends. With --soak (default on for the
first size), the agent also runs for --soak-secs at a 1 s poll with the connections idle,
and its CPU share (utime+stime over the window after its first poll) and peak RSS
(VmHWM) are reported.

With --compare PATH (another connbeat build, e.g. of an earlier commit), the same
measurements of that binary follow each of this one's, on the same sockets, and a table of
the two side by side is added.

Run as root from the repository root:  python3 perf/conn_poll.py
Everything it starts is killed by pid on exit; helpers also exit when their stdin closes.
"""

import argparse
import collections
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PER_PROC = 5000
POLL_RE = re.compile(r"poll done: sockets=(\d+) events=(\d+) wall_us=(\d+) cpu_us=(\d+)")

children = []


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def cleanup():
    for p in children:
        if p.poll() is None:
            try:
                p.kill()
            except ProcessLookupError:
                pass
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    children.clear()


def cpu_of(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
    """Runs argv to completion; returns (user+sys seconds, wall seconds, exit status)."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"{argv[0]} exited {p.returncode}")
    return ru.ru_utime + ru.ru_stime, wall


class Helper:
    """A sockhold process; lines of its stdout are collected by a thread."""

    def __init__(self, exe, args):
        self.p = subprocess.Popen(
            [exe, "--ttl", "3600"] + args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        children.append(self.p)
        self.lines = []
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait(self, prefix, timeout=600):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for l in list(self.lines):
                if l.startswith(prefix):
                    return l
            if self.p.poll() is not None:
                raise SystemExit(f"helper {self.p.pid} exited: {self.lines[-3:]}")
            time.sleep(0.05)
        raise SystemExit(f"helper {self.p.pid}: no {prefix} in {timeout}s")


def hold_connections(helper_dir, n):
    """Opens n loopback connections over pairs of helpers; returns the helpers."""
    srv_exe = os.path.join(helper_dir, "cb-perf-srv")
    cli_exe = os.path.join(helper_dir, "cb-perf-cli")
    helpers = []
    left = n
    while left > 0:
        k = min(PER_PROC, left)
        left -= k
        srv = Helper(srv_exe, ["listen", "127.0.0.1:0", str(k)])
        port = int(srv.wait("READY").split("port=")[1])
        cli = Helper(cli_exe, ["connect", f"127.0.0.1:{port}", str(k)])
        helpers += [srv, cli]
    for h in helpers:
        h.wait("HELD")
    return helpers


def release_helpers(helpers):
    for h in helpers:
        h.p.stdin.close()
    for h in helpers:
        try:
            h.p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            h.p.kill()
            h.p.wait()
        children.remove(h.p)


def established_count():
    out = subprocess.run(["ss", "-tanH", "state", "established"], capture_output=True, text=True)
    return len(out.stdout.splitlines())


def median_cpu(argv, runs):
    cpus = [cpu_of(argv)[0] for _ in range(runs)]
    return statistics.median(cpus), cpus


def steady_polls(connbeat, cfg, polls, soak_secs=0, extra=()):
    """Runs the agent at a 1 s poll; returns (poll stats list, soak dict or None)."""
    p = subprocess.Popen(
        [connbeat, "-c", cfg, "-d", "conn", "-E", "connbeat.poll_interval=1s", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    children.append(p)
    stats = []
    soak = None
    lock = threading.Lock()

    def read():
        for line in p.stderr:
            m = POLL_RE.search(line)
            if m:
                unchanged = 1 if "unchanged=true" in line else 0
                with lock:
                    stats.append(tuple(int(x) for x in m.groups()) + (unchanged,))

    threading.Thread(target=read, daemon=True).start()

    def n_polls():
        with lock:
            return len(stats)

    def wait_polls(k, timeout):
        end = time.monotonic() + timeout
        while n_polls() < k:
            if p.poll() is not None:
                raise SystemExit("agent exited early")
            if time.monotonic() > end:
                raise SystemExit(f"agent: {n_polls()} polls after {timeout}s")
            time.sleep(0.05)

    wait_polls(1, 120)
    if soak_secs:
        clk = os.sysconf("SC_CLK_TCK")

        def ticks():
            f = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
            return int(f[11]) + int(f[12])  # utime, stime (fields 14, 15)

        t0, c0 = time.monotonic(), ticks()
        time.sleep(soak_secs)  # measuring a time window, not synchronising
        t1, c1 = time.monotonic(), ticks()
        hwm = [l for l in open(f"/proc/{p.pid}/status") if l.startswith("VmHWM")][0]
        soak = {
            "secs": t1 - t0,
            "cpu_s": (c1 - c0) / clk,
            "share_pct": 100.0 * (c1 - c0) / clk / (t1 - t0),
            "hwm_mb": int(hwm.split()[1]) / 1024.0,
        }
    wait_polls(polls, polls + 60)
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    children.remove(p)
    with lock:
        return list(stats), soak


def measure_agent(connbeat, cfg, a, soak_secs):
    """--once, then the running agent's polls: dumping every time, and by default."""
    once, once_all = median_cpu([connbeat, "-c", cfg, "--once"], a.runs)
    log(f"   {connbeat} --once {once_all}")
    # Polls that dump every socket (skipping and following changes turned off: the cost
    # of a poll of everything) ...
    full, _ = steady_polls(connbeat, cfg, a.polls, 0, ("-E", "connbeat.skip_unchanged_polls=false",
                                                      "-E", "connbeat.follow_state_changes=false"))
    # ... and the agent as configured by default (idle connections: most polls are
    # answered without a dump), with the soak.
    stats, soak = steady_polls(connbeat, cfg, a.polls, soak_secs)
    dumped = full[1:]
    quiet = [s for s in stats[1:] if s[4]]
    log(f"   polls (sockets, events, wall_us, cpu_us): {stats}")
    return dict(
        sockets=stats[-1][0],
        once=once,
        first_poll_cpu=full[0][3] / 1e6,
        steady=statistics.median(s[3] for s in dumped) / 1e6,
        steady_wall=statistics.median(s[2] for s in dumped) / 1e6,
        soak=soak,
        polls=len(dumped) + 1,
        unchanged=statistics.median(s[3] for s in quiet) / 1e6 if quiet else None,
        quiet=len(quiet),
    )


def churn_stage(connbeat, cfg, work, a):
    """The agent's CPU per poll over whole aggregation windows while connections churn,
    and whether every churned connection was reported (see the module docstring)."""
    log_path = os.path.join(work, "churn.log")
    out_path = os.path.join(work, "churn-events.ndjson")
    churner = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "perf/churn.py"), str(a.churn), str(a.churn_life), log_path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    children.append(churner)
    port = int(churner.stdout.readline().split("port=")[1])
    time.sleep(a.churn_life + 1)  # reach the steady number of churned connections
    ss_tanp, ss_all = median_cpu(["ss", "-tanp"], a.runs)
    log(f"   churn {a.churn}/s: ss -tanp {ss_all}")
    out = open(out_path, "w")
    p = subprocess.Popen(
        [connbeat, "-c", cfg, "-d", "conn", "-E", "connbeat.poll_interval=1s",
         "-E", f"connbeat.aggregation={a.churn_aggregation}s"],
        stdout=out,
        stderr=subprocess.PIPE,
        text=True,
    )
    children.append(p)
    clk = os.sysconf("SC_CLK_TCK")

    def ticks():
        f = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12])

    lock = threading.Lock()
    polls = []  # (kind, cpu_us, process ticks when read, monotonic)

    def read():
        for line in p.stderr:
            if "full dump:" in line:
                log("   agent: " + line.strip()[-60:])
                continue
            m = POLL_RE.search(line)
            if not m:
                continue
            kind = "changes" if " changes=" in line else "unchanged" if "unchanged=true" in line else "dump"
            try:
                t = ticks()
            except OSError:
                t = None
            with lock:
                polls.append((kind, int(m.group(4)), t, time.monotonic()))

    threading.Thread(target=read, daemon=True).start()

    def dumps():
        with lock:
            return [i for i, q in enumerate(polls) if q[0] == "dump"]

    # The first poll dumps; then every resynchronising dump starts a window.
    end = time.monotonic() + a.churn_aggregation * (a.churn_windows + 2) + 120
    while len(dumps()) < a.churn_windows + 2:
        if p.poll() is not None:
            raise SystemExit("agent exited early")
        if time.monotonic() > end:
            raise SystemExit(f"churn: only {len(dumps())} dumps")
        time.sleep(0.2)
    with lock:
        snap = list(polls)
    t_first = snap[0][3]
    d = [i for i, q in enumerate(snap) if q[0] == "dump"]
    w0, w1 = d[1], d[-1]
    window = snap[w0:w1]
    proc_cpu_s = (snap[w1][2] - snap[w0][2]) / clk
    n_polls = w1 - w0
    kinds = collections.Counter(q[0] for q in window)
    log("   churn polls (kind, cpu_us, s since first): " + " ".join(f"{q[0][0]}{q[1]}@{q[3] - t_first:.0f}" for q in snap))
    t_stop = time.monotonic()
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    children.remove(p)
    out.close()
    churner.stdin.close()
    done = churner.stdout.readline().strip()
    churner.wait(timeout=120)
    children.remove(churner)
    log(f"   churner: {done}")

    # Every connection opened after the first poll and closed 2 s before the agent stopped.
    opened, closed_at = {}, {}
    for l in open(log_path):
        what, cport, t = l.split()
        (opened if what == "open" else closed_at)[int(cport)] = float(t)
    want = {c for c, t in opened.items() if t > t_first + 0.5 and closed_at.get(c, 1e18) < t_stop - 2}
    seen = {k: set() for k in ("open_c", "closed_c", "open_s", "closed_s")}
    needle = f":{port},"
    with open(out_path) as f:
        for l in f:
            if needle not in l and not l.rstrip().endswith(f":{port}}}"):
                continue
            try:
                e = json.loads(l)
            except ValueError:
                continue
            act = e.get("action")
            if act not in ("open", "closed"):
                continue
            if e.get("remote_port") == port:
                seen[f"{act}_c"].add(e.get("local_port"))
            elif e.get("local_port") == port and e.get("remote_port"):
                seen[f"{act}_s"].add(e.get("remote_port"))
    missing = {k: len(want - v) for k, v in seen.items()}
    os.remove(out_path)
    os.remove(log_path)
    return dict(
        rate=a.churn,
        ss_tanp=ss_tanp,
        proc_per_poll=proc_cpu_s / n_polls,
        poller_per_poll=sum(q[1] for q in window) / n_polls / 1e6,
        dump_poller=statistics.median(q[1] for q in window if q[0] == "dump") / 1e6,
        change_poller=statistics.median(q[1] for q in window if q[0] == "changes") / 1e6 if kinds["changes"] else None,
        polls=n_polls,
        kinds=dict(kinds),
        checked=len(want),
        missing=missing,
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,50000", help="connections per stage")
    ap.add_argument("--runs", type=int, default=5, help="repetitions of each one-shot command")
    ap.add_argument("--polls", type=int, default=12, help="polls of the running agent")
    ap.add_argument("--soak-secs", type=int, default=60, help="CPU/RSS window on the first size (0 = off)")
    ap.add_argument("--no-build", action="store_true", help="use the existing release build")
    ap.add_argument("--compare", metavar="PATH", help="another connbeat binary, measured the same way")
    ap.add_argument("--churn", type=float, default=100, help="connections opened (and closed) per second on the first size (0 = no churn stage)")
    ap.add_argument("--churn-life", type=float, default=3.0, help="seconds each churned connection stays open")
    ap.add_argument("--churn-windows", type=int, default=2, help="whole aggregation windows measured")
    ap.add_argument("--churn-aggregation", type=int, default=30, help="connbeat.aggregation (s) of the churn stage")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: ss -tanp and connbeat read every process's /proc/PID/fd")

    if not a.no_build:
        subprocess.run(
            ["cargo", "build", "--release", "--bin", "connbeat", "--example", "sockhold"],
            cwd=ROOT,
            check=True,
        )
    connbeat = os.path.join(ROOT, "target/release/connbeat")
    sockhold = os.path.join(ROOT, "target/release/examples/sockhold")

    work = tempfile.mkdtemp(prefix="cb-perf-")
    for name in ["cb-perf-srv", "cb-perf-cli"]:
        shutil.copy(sockhold, os.path.join(work, name))
    cfg = os.path.join(work, "connbeat.yml")
    with open(cfg, "w") as f:
        f.write("output.console.enabled: true\n")
    os.chmod(cfg, 0o600)

    rows = []
    try:
        for i, n in enumerate(int(x) for x in a.sizes.split(",")):
            log(f"== {n} connections: opening")
            helpers = hold_connections(work, n)
            est = established_count()
            log(f"   {est} ESTABLISHED sockets on the host (test + others)")
            ss_tan, ss_tan_all = median_cpu(["ss", "-tan"], a.runs)
            ss_tanp, ss_tanp_all = median_cpu(["ss", "-tanp"], a.runs)
            log(f"   ss -tan {ss_tan_all}\n   ss -tanp {ss_tanp_all}")
            row = dict(n=n, est=est, ss_tan=ss_tan, ss_tanp=ss_tanp)
            row.update(measure_agent(connbeat, cfg, a, a.soak_secs if i == 0 else 0))
            if a.compare:
                row["other"] = measure_agent(a.compare, cfg, a, 0)
            if i == 0 and a.churn > 0:
                row["churn"] = churn_stage(connbeat, cfg, work, a)
                if a.compare:
                    row["churn_other"] = churn_stage(a.compare, cfg, work, a)
            rows.append(row)
            release_helpers(helpers)
    finally:
        cleanup()
        shutil.rmtree(work, ignore_errors=True)

    print(report(rows, a))


def report(rows, a):
    ms = lambda s: f"{s * 1000:.1f}"
    out = []
    out.append(
        f"CPU time (user+sys), median of {a.runs} runs; steady state = median cpu_us of the running "
        "agent's polls after its first that dumped the sockets (polls used in brackets); "
        "unchanged = median cpu_us of the polls answered without a dump because no socket "
        "opened or closed.\n"
    )
    out.append("| connections | sockets seen | `ss -tan` ms | `ss -tanp` ms | `connbeat --once` ms | first poll (poller) ms | steady poll ms (wall) | unchanged poll ms |")
    out.append("|---|---|---|---|---|---|---|---|")
    for r in rows:
        out.append(
            f"| {r['n']:,} | {r['sockets']:,} | {ms(r['ss_tan'])} | {ms(r['ss_tanp'])} | {ms(r['once'])} "
            f"| {ms(r['first_poll_cpu'])} | {ms(r['steady'])} ({ms(r['steady_wall'])}) [{r['polls'] - 1}] "
            f"| {ms(r['unchanged']) if r['unchanged'] is not None else '-'} [{r['quiet']}] |"
        )
    out.append("")
    out.append("| connections | steady / `ss -tan` (target ≤ 2) | `ss -tanp` / steady (target ≥ 20) | `ss -tanp` / `--once` (target ≥ 3) |")
    out.append("|---|---|---|---|")
    for r in rows:
        out.append(
            f"| {r['n']:,} | {r['steady'] / r['ss_tan']:.2f} | {r['ss_tanp'] / r['steady']:.1f} "
            f"| {r['ss_tanp'] / r['once']:.1f} |"
        )
    if a.compare:
        out.append("")
        out.append(f"Against {a.compare}, same sockets, same run (this build / that one):")
        out.append("")
        out.append("| connections | `--once` ms | first poll ms | steady poll ms | unchanged poll ms |")
        out.append("|---|---|---|---|---|")
        for r in rows:
            o = r["other"]
            pair = lambda k: f"{ms(r[k])} / {ms(o[k])}" if r[k] is not None and o[k] is not None else "-"
            out.append(
                f"| {r['n']:,} | {pair('once')} | {pair('first_poll_cpu')} | {pair('steady')} | {pair('unchanged')} |"
            )
    for r in rows:
        for key, who in (("churn", "this build"), ("churn_other", a.compare)):
            c = r.get(key)
            if not c:
                continue
            ms_ = lambda v: f"{v * 1000:.2f}" if v is not None else "-"
            out.append("")
            out.append(
                f"Churn ({who}): {r['n']:,} steady connections + {c['rate']:g} opened and {c['rate']:g} closed per second, "
                f"{a.churn_windows} whole aggregation windows of {a.churn_aggregation} s ({c['polls']} polls: {c['kinds']}), "
                f"resynchronising dumps included:"
            )
            out.append("")
            out.append("| `ss -tanp` ms | agent process CPU per poll ms | poller CPU per poll ms | dump poll (poller) ms | change poll (poller, median) ms | `ss -tanp` / process per poll (target ≥ 20) |")
            out.append("|---|---|---|---|---|---|")
            out.append(
                f"| {ms_(c['ss_tanp'])} | {ms_(c['proc_per_poll'])} | {ms_(c['poller_per_poll'])} | {ms_(c['dump_poller'])} "
                f"| {ms_(c['change_poller'])} | {c['ss_tanp'] / max(c['proc_per_poll'], 1e-9):.1f} |"
            )
            out.append("")
            out.append(
                f"Churned connections opened and closed while the agent ran: {c['checked']}; without an event "
                f"(open/closed, client/server end): {c['missing']}."
            )
    for r in rows:
        if r["soak"]:
            s = r["soak"]
            out.append("")
            out.append(
                f"Agent at 1 s poll, {r['n']:,} idle connections, {s['secs']:.0f} s window after its first poll: "
                f"CPU {s['cpu_s']:.2f} s = {s['share_pct']:.2f}% of one core (target < 1%), "
                f"peak RSS (VmHWM) {s['hwm_mb']:.1f} MB (target < 40 MB)."
            )
    return "\n".join(out)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        cleanup()
        raise

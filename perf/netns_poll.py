#!/usr/bin/env python3
"""Namespace polling benchmark: one connbeat poll of every namespace against `ss -tanp`
run in every namespace, on the same sockets, in the same run.

It makes --namespaces network namespaces (`ip netns add`, loopback up) and, in each, a
sockhold server and client holding --conns loopback connections (so 2 x conns
established sockets per namespace). Then it measures the CPU time (user + system, from
wait4's rusage) of:

  ss -tanp in each namespace   `ip netns exec NS ss -tanp` for every namespace, summed
  connbeat --once -N           namespaces: all, startup + namespace discovery + one dump
                               of every namespace + the /proc index + events built
                               (dry run: nothing written)

Each is repeated --runs times; medians and their ratio are reported.

Run as root from the repository root after `cargo build --release --examples`:
    python3 perf/netns_poll.py
Everything it starts is stopped by pid and every namespace it made is deleted on exit.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import conn_poll  # noqa: E402  (shares the helper-process and CPU-measuring code)

ROOT = conn_poll.ROOT


def ns_exec_cpu(names):
    """CPU of running `ss -tanp` in every namespace (ip netns exec included)."""
    total = 0.0
    for n in names:
        cpu, _ = conn_poll.cpu_of(["ip", "netns", "exec", n, "ss", "-tanp"])
        total += cpu
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--namespaces", type=int, default=200)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    connbeat = os.path.join(ROOT, "target/release/connbeat")
    sockhold = os.path.join(ROOT, "target/release/examples/sockhold")
    for exe in (connbeat, sockhold):
        if not os.path.exists(exe):
            raise SystemExit(f"{exe} missing: cargo build --release --examples")
    tmp = tempfile.mkdtemp(prefix="cb-netns-perf-")
    cfg = os.path.join(tmp, "connbeat.yml")
    with open(cfg, "w") as f:
        f.write("output.console.enabled: true\nconnbeat.namespaces: all\n")
    os.chmod(cfg, 0o600)
    names = [f"cbperf{os.getpid() % 10000}n{i}" for i in range(args.namespaces)]
    helpers = []
    try:
        t0 = time.monotonic()
        for n in names:
            subprocess.run(["ip", "netns", "add", n], check=True)
            subprocess.run(["ip", "-n", n, "link", "set", "lo", "up"], check=True)
        for n in names:
            path = f"--net=/run/netns/{n}"
            srv = NsHelper(path, sockhold, ["listen", "127.0.0.1:0", str(args.conns)])
            port = int(srv.wait("READY").split("port=")[1])
            cli = NsHelper(path, sockhold, ["connect", f"127.0.0.1:{port}", str(args.conns)])
            helpers += [srv, cli]
        for h in helpers:
            h.wait("HELD")
        conn_poll.log(
            f"{args.namespaces} namespaces x {args.conns} connections ready in "
            f"{time.monotonic() - t0:.1f}s"
        )
        ss = [ns_exec_cpu(names) for _ in range(args.runs)]
        cb = [
            conn_poll.cpu_of([connbeat, "-c", cfg, "--once", "-N"])[0]
            for _ in range(args.runs)
        ]
        ss_m, cb_m = statistics.median(ss), statistics.median(cb)
        print(f"namespaces={args.namespaces} connections_per_namespace={args.conns}")
        print(f"ss -tanp in every namespace: median {ss_m * 1000:.0f} ms CPU  runs {[round(x * 1000) for x in ss]}")
        print(f"connbeat --once -N (namespaces: all): median {cb_m * 1000:.0f} ms CPU  runs {[round(x * 1000) for x in cb]}")
        print(f"ratio ss/connbeat: {ss_m / cb_m:.1f}x (target >= 20x)")
    finally:
        conn_poll.release_helpers(helpers)
        conn_poll.cleanup()
        for n in names:
            subprocess.run(["ip", "netns", "del", n], stderr=subprocess.DEVNULL)


class NsHelper(conn_poll.Helper):
    """A sockhold process started inside a namespace (nsenter execs, keeping the pid)."""

    def __init__(self, ns_arg, exe, args):
        self.p = subprocess.Popen(
            ["nsenter", ns_arg, exe, "--ttl", "3600"] + args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        conn_poll.children.append(self.p)
        self.lines = []
        self.t = conn_poll.threading.Thread(target=self._read, daemon=True)
        self.t.start()


if __name__ == "__main__":
    main()

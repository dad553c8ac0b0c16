#!/usr/bin/env python3
"""Live capture under load: connbeat with `connbeat.interfaces.type: pcap` and `af_packet`
against `tcpdump -w /dev/null` (the capture floor), on the same traffic, in one run.

The benchmark makes two network namespaces joined by a veth pair (cbbench-c with
10.77.0.1 on cbv-c, cbbench-s with 10.77.0.2 on cbv-s), starts nginx and redis-server in
the server namespace (tests/services scripts), and for each rate drives HTTP and Redis
requests from the client namespace (`examples/txload.rs`: RATE requests per second per
protocol, keep-alive connections, each request waiting for its response) while exactly one
capture runs on cbv-c:

  tcpdump        tcpdump -i cbv-c -w /dev/null with the same filter; kernel drops from its
                 exit summary
  pcap           connbeat, type pcap; kernel drops = inspect.capture.dropped
  af_packet      connbeat, type af_packet, --workers workers (default 2)

For connbeat, the transactions in its output are counted against the requests the load
generator completed ("missed" = completed - published). The report gives, per tool, the
highest rate with no kernel drop (and, for connbeat, no missed transaction), and a table
of every step.

Run as root from the repository root:  python3 perf/capture_bench.py [--rates 1000,2000,...]
Everything it starts is stopped by pid, the namespaces are deleted on exit.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NS_C, NS_S = "cbbench-c", "cbbench-s"
IP_C, IP_S = "10.77.0.1", "10.77.0.2"
HTTP_PORT, REDIS_PORT, TLS_PORT = 18080, 16379, 18443
FILTER = f"tcp port {HTTP_PORT} or tcp port {REDIS_PORT}"
children = []


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def sh(*argv, check=True, **kw):
    return subprocess.run(list(argv), check=check, **kw)


def netns_up():
    sh("ip", "netns", "add", NS_C)
    sh("ip", "netns", "add", NS_S)
    sh("ip", "link", "add", "cbv-c", "netns", NS_C, "type", "veth", "peer", "name", "cbv-s", "netns", NS_S)
    for ns, dev, ip in ((NS_C, "cbv-c", IP_C), (NS_S, "cbv-s", IP_S)):
        sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
        sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")


def netns_down():
    for ns in (NS_C, NS_S):
        sh("ip", "netns", "del", ns, check=False, stderr=subprocess.DEVNULL)


def service(script, *args):
    out = subprocess.run(
        ["ip", "netns", "exec", NS_S, "bash", os.path.join(ROOT, "tests/services", script), *args],
        env=dict(os.environ, BIND="0.0.0.0"),
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"{script}: {out.stderr}")
    f = dict(w.split("=", 1) for w in out.stdout.split())
    return int(f["pid"]), f["dir"]


def wait_line(p, pattern, timeout=60):
    """Reads p's stderr until a line matches; returns the lines read."""
    lines = []
    end = time.monotonic() + timeout
    os.set_blocking(p.stderr.fileno(), False)
    buf = ""
    while time.monotonic() < end:
        try:
            chunk = p.stderr.read()
        except (BlockingIOError, TypeError):
            chunk = None
        if chunk:
            buf += chunk
            *done, buf = buf.split("\n")
            lines += done
            if any(re.search(pattern, l) for l in done):
                os.set_blocking(p.stderr.fileno(), True)
                return lines
        if p.poll() is not None:
            raise SystemExit(f"{p.args[3:5]} exited: {lines[-5:]} {buf}")
        time.sleep(0.05)
    raise SystemExit(f"no {pattern!r} within {timeout}s: {lines[-5:]}")


def start_capture(tool, a, work):
    if tool == "tcpdump":
        argv = ["ip", "netns", "exec", NS_C, "tcpdump", "-i", "cbv-c", "-n", "-w", "/dev/null",
                "-B", str(a.buffer_mb * 1024), FILTER]
        ready = "listening on"
    else:
        out = os.path.join(work, "out")
        shutil.rmtree(out, ignore_errors=True)
        cfg = os.path.join(work, f"{tool}.yml")
        with open(cfg, "w") as f:
            f.write(
                f"output.file: {{path: {out}, filename: events, rotate_every_kb: 1048576, number_of_files: 2}}\n"
                f"connbeat.interfaces: {{device: cbv-c, type: {tool}, buffer_size_mb: {a.buffer_mb}"
                f"{', workers: ' + str(a.workers) if tool == 'af_packet' else ''}}}\n"
                f"connbeat.transaction_timeout: 5s\n"
                f"queue.mem: {{events: 65536}}\n"
                f"connbeat.protocols:\n  - {{type: http, ports: [{HTTP_PORT}]}}\n  - {{type: redis, ports: [{REDIS_PORT}]}}\n"
            )
        os.chmod(cfg, 0o600)
        argv = ["ip", "netns", "exec", NS_C, a.connbeat, "-c", cfg]
        ready = "started with"
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    children.append(p)
    wait_line(p, ready)
    return p


def stop_capture(tool, p, work):
    p.send_signal(signal.SIGTERM)
    try:
        rest = p.stderr.read()
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        rest = ""
    children.remove(p)
    if tool == "tcpdump":
        m = re.search(r"(\d+) packets dropped by kernel", rest)
        c = re.search(r"(\d+) packets captured", rest)
        return dict(dropped=int(m.group(1)) if m else None, packets=int(c.group(1)) if c else None)
    line = [l for l in rest.splitlines() if "Total metrics" in l]
    metric = lambda k: int(re.search(rf"{re.escape(k)}=(\d+)", line[-1]).group(1)) if line and re.search(rf"{re.escape(k)}=(\d+)", line[-1]) else 0
    counts = {"http": 0, "redis": 0}
    out = os.path.join(work, "out")
    for name in sorted(os.listdir(out)) if os.path.isdir(out) else []:
        with open(os.path.join(out, name)) as f:
            for l in f:
                t = json.loads(l).get("type")
                if t in counts:
                    counts[t] += 1
    shutil.rmtree(out, ignore_errors=True)
    return dict(dropped=metric("inspect.capture.dropped"), packets=metric("inspect.pcap.received"), **counts)


def load(a, rate):
    out = subprocess.run(
        ["ip", "netns", "exec", NS_C, a.txload, "--http", f"{IP_S}:{HTTP_PORT}", "--redis", f"{IP_S}:{REDIS_PORT}",
         "--rate", str(rate), "--secs", str(a.secs), "--conns", str(a.conns)],
        capture_output=True,
        text=True,
        timeout=a.secs * 10 + 60,
    )
    f = dict(w.split("=", 1) for w in out.stdout.split()[1:])
    return {k: float(v) if k == "secs" else int(v) for k, v in f.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="500,1000,2000,4000,8000,16000", help="requests per second per protocol")
    ap.add_argument("--secs", type=int, default=5, help="seconds of load per step")
    ap.add_argument("--conns", type=int, default=8, help="connections per protocol")
    ap.add_argument("--workers", type=int, default=2, help="af_packet workers")
    ap.add_argument("--buffer-mb", type=int, default=32, help="capture buffer of all three (connbeat buffer_size_mb, tcpdump -B)")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--bin", help="the connbeat binary (default target/release/connbeat)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (namespaces, capture)")
    if not a.no_build:
        sh("cargo", "build", "--release", "--bin", "connbeat", "--example", "txload", cwd=ROOT)
    a.connbeat = a.bin or os.path.join(ROOT, "target/release/connbeat")
    a.txload = os.path.join(ROOT, "target/release/examples/txload")
    work = tempfile.mkdtemp(prefix="cb-capture-")
    servers = []
    rows = []
    netns_down()
    try:
        netns_up()
        servers.append(service("start-redis.sh", str(REDIS_PORT)))
        servers.append(service("start-nginx.sh", str(HTTP_PORT), str(TLS_PORT)))
        for rate in (int(r) for r in a.rates.split(",")):
            for tool in ("tcpdump", "pcap", "af_packet"):
                p = start_capture(tool, a, work)
                sent = load(a, rate)
                got = stop_capture(tool, p, work)
                row = dict(rate=rate, tool=tool, **{f"sent_{k}": v for k, v in sent.items()}, **got)
                log(f"   {row}")
                rows.append(row)
    finally:
        for p in children:
            if p.poll() is None:
                p.kill()
                p.wait()
        for pid, d in servers:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        time.sleep(0.5)  # the servers' exit before their directories go
        for _, d in servers:
            shutil.rmtree(d, ignore_errors=True)
        netns_down()
        shutil.rmtree(work, ignore_errors=True)
    print(report(rows, a))


def report(rows, a):
    out = [
        f"HTTP + Redis over a veth pair, {a.conns} keep-alive connections per protocol, {a.secs} s per step, "
        f"capture buffer {a.buffer_mb} MiB, af_packet with {a.workers} workers. Rate = requests per second per "
        "protocol (achieved = completed / duration). missed = completed requests without a published transaction.",
        "",
        "| rate | achieved http+redis /s | tool | packets | kernel drops | http missed | redis missed |",
        "|---|---|---|---|---|---|---|",
    ]
    best = {}
    failed = set()
    for r in rows:
        done = r["sent_http"] + r["sent_redis"]
        achieved = done / r["sent_secs"] if r["sent_secs"] else 0
        if r["tool"] == "tcpdump":
            miss_h = miss_r = "-"
            ok = r["dropped"] == 0
        else:
            miss_h = r["sent_http"] - r["http"]
            miss_r = r["sent_redis"] - r["redis"]
            ok = r["dropped"] == 0 and miss_h == 0 and miss_r == 0
        # The highest rate up to which every step was clean.
        tool = r["tool"]
        if tool not in failed:
            if ok and r["sent_behind"] == 0:
                best[tool] = r["rate"]
            else:
                failed.add(tool)
        out.append(
            f"| {r['rate']} | {achieved:.0f} | {r['tool']} | {r['packets']} | {r['dropped']} | {miss_h} | {miss_r} |"
        )
    out.append("")
    out.append(
        "Highest rate with no kernel drop (and for connbeat no missed transaction), the load on schedule: "
        + ", ".join(f"{t} {best.get(t, 0)}/s" for t in ("tcpdump", "pcap", "af_packet"))
    )
    return "\n".join(out)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        raise

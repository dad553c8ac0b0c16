#!/usr/bin/env python3
"""Connection churn for perf/conn_poll.py: RATE new loopback connections per second, each
closed LIFE seconds after it opened (so, in steady state, RATE closed per second too).

Listens on 127.0.0.1:0, prints "READY port=N", then opens and closes connections on a fixed
schedule until its stdin closes; each open and close is written to LOG as
"open CLIENT_PORT MONOTONIC" / "close CLIENT_PORT MONOTONIC". On exit every connection
still open is closed (and logged), then "DONE opened=N closed=M late=K" is printed, K
being the ticks that ran behind schedule by more than a second.

Usage: churn.py RATE LIFE LOG
"""

import collections
import os
import select
import socket
import sys
import time


def main():
    rate, life, log_path = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(4096)
    port = srv.getsockname()[1]
    log = open(log_path, "w")
    print(f"READY port={port}", flush=True)
    live = collections.deque()
    opened = closed = late = 0
    step = 1.0 / rate
    t0 = time.monotonic()
    k = 0

    def close(c, s, cport):
        nonlocal closed
        c.close()
        s.close()
        closed += 1
        log.write(f"close {cport} {time.monotonic():.3f}\n")

    while True:
        due = t0 + k * step
        now = time.monotonic()
        if due > now:
            # stdin closing (EOF) ends the run; otherwise wait for the next tick.
            r, _, _ = select.select([sys.stdin], [], [], due - now)
            if r and not os.read(sys.stdin.fileno(), 4096):
                break
            continue
        if now - due > 1.0:
            late += 1
        k += 1
        c = socket.create_connection(("127.0.0.1", port))
        s, _ = srv.accept()
        cport = c.getsockname()[1]
        opened += 1
        log.write(f"open {cport} {time.monotonic():.3f}\n")
        live.append((now + life, c, s, cport))
        while live and live[0][0] <= now:
            _, c, s, cport = live.popleft()
            close(c, s, cport)
    while live:
        _, c, s, cport = live.popleft()
        close(c, s, cport)
    log.close()
    print(f"DONE opened={opened} closed={closed} late={late}", flush=True)


if __name__ == "__main__":
    main()

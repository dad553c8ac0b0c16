"""Drives a memcached server with pymemcache (text protocol, TCP), or with raw UDP frames
(a `get` whose reply spans several datagrams). Prints one JSON line per operation done
({"command": ..., "status": ...}), then "done", and keeps its connection open until its
standard input closes, so that the capture can still name this process.

usage: memcache-client.py text PORT | udp PORT"""
import json
import socket
import struct
import sys

from pymemcache.client.base import Client

mode, port = sys.argv[1], int(sys.argv[2])


def op(command, status="OK"):
    print(json.dumps({"command": command, "status": status}), flush=True)


if mode == "text":
    c = Client(("127.0.0.1", port), default_noreply=False)
    c.set("k1", b"v" * 100)
    op("set")
    c.set("k2", b"w" * 20)
    op("set")
    assert c.get("k1") == b"v" * 100
    op("get")
    assert len(c.get_many(["k1", "k2", "nope"])) == 2
    op("get")
    c.set("n", b"5")
    op("set")
    assert c.incr("n", 3) == 8
    op("incr")
    assert c.decr("n", 2) == 6
    op("decr")
    assert c.touch("k1", 100)
    op("touch")
    assert c.delete("k2")
    op("delete")
    assert not c.delete("k2")
    op("delete", "Error")
    c.set("quiet", b"q", noreply=True)
    op("set")
    assert c.stats()
    op("stats")
elif mode == "udp":
    # A value larger than one datagram, stored over TCP, read back over UDP.
    c = Client(("127.0.0.1", port), default_noreply=False)
    c.set("big", b"x" * 3000)
    op("set")
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    u.settimeout(10)
    u.sendto(struct.pack(">HHHH", 7, 0, 1, 0) + b"get big\r\n", ("127.0.0.1", port))
    parts, total = {}, None
    while total is None or len(parts) < total:
        d, _ = u.recvfrom(65536)
        rid, seq, total, _ = struct.unpack(">HHHH", d[:8])
        parts[seq] = d[8:]
    body = b"".join(parts[i] for i in range(total))
    assert body.startswith(b"VALUE big 0 3000\r\n") and body.endswith(b"END\r\n"), body[:40]
    assert total > 1, "the reply should span several datagrams"
    op("get")
print("done", flush=True)
sys.stdin.read()

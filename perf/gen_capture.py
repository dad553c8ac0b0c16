#!/usr/bin/env python3
"""Writes a pcap of mixed HTTP (port 80), DNS (UDP 53) and Redis (port 6379) traffic for the
deep-inspection benchmark: complete TCP connections (handshake, requests and responses with
ACKs, FIN) and DNS query/response pairs, with increasing timestamps. Like a busy host's
capture, it has client ports reused many times (short HTTP connections, one request each,
from 500 ports of one client, random initial sequence numbers) and packets a little out of
time order (in a quarter of those connections the response is written before the request,
each keeping its own timestamp).

    perf/gen_capture.py OUT.pcap [MIN_PACKETS]     (default 1,000,000)
    perf/gen_capture.py OUT.pcap N --flood         N half-open connections, each with an
                                                   unfinished 1 KB HTTP request and no answer
Prints the number of packets and of transactions it wrote."""
import random
import struct
import sys

out_path = sys.argv[1]
min_packets = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000

ETH = b"\x00\x00\x00\x00\x00\x02" + b"\x00\x00\x00\x00\x00\x01" + b"\x08\x00"
f = open(out_path, "wb", buffering=1 << 22)
f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
ts = 1_795_000_000 * 1_000_000
packets = 0
txns = 0
rng = random.Random(14)
records = []  # (ts, frame) of the connection being written


def ip4(a):
    return struct.pack("!I", a)


def emit(src, dst, proto, l4):
    global ts, packets
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0, 64, proto, 0, ip4(src), ip4(dst))
    frame = ETH + ip + l4
    ts += 7
    records.append((ts, frame))
    packets += 1


def flush():
    for t, frame in records:
        f.write(struct.pack("<IIII", t // 1_000_000, t % 1_000_000, len(frame), len(frame)))
        f.write(frame)
    records.clear()


def tcp(src, dst, sp, dp, seq, ack, flags, payload=b""):
    hdr = struct.pack("!HHIIBBHHH", sp, dp, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 0x50, flags, 65535, 0, 0)
    emit(src, dst, 6, hdr + payload)


def udp(src, dst, sp, dp, payload):
    emit(src, dst, 17, struct.pack("!HHHH", sp, dp, 8 + len(payload), 0) + payload)


SYN, ACK, PSH, FIN = 0x02, 0x10, 0x08, 0x01


def connection(cli, srv, cport, sport, exchanges, isn=(1000, 5000), swap=False):
    """exchanges: list of (request bytes, response bytes). swap: the (first) response is
    written before its request, each with its own timestamp."""
    global txns
    c, s = isn
    tcp(cli, srv, cport, sport, c, 0, SYN)
    tcp(srv, cli, sport, cport, s, c + 1, SYN | ACK)
    c += 1
    s += 1
    tcp(cli, srv, cport, sport, c, s, ACK)
    for req, resp in exchanges:
        tcp(cli, srv, cport, sport, c, s, PSH | ACK, req)
        c += len(req)
        tcp(srv, cli, sport, cport, s, c, PSH | ACK, resp)
        if swap:
            records[-2], records[-1] = records[-1], records[-2]
            swap = False
        s += len(resp)
        tcp(cli, srv, cport, sport, c, s, ACK)
        txns += 1
    tcp(cli, srv, cport, sport, c, s, FIN | ACK)
    tcp(srv, cli, sport, cport, s, c + 1, ACK)
    tcp(srv, cli, sport, cport, s, c + 1, FIN | ACK)
    tcp(cli, srv, cport, sport, c + 1, s + 1, ACK)
    flush()


BODY = b"x" * 180
HTTP = [
    (b"GET /api/items/%d HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: bench/1.0\r\nAccept: */*\r\n\r\n" % i,
     b"HTTP/1.1 %d OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (200 if i % 10 else 404, len(BODY)) + BODY)
    for i in range(50)
]
REDIS = []
for i in range(50):
    k = b"user:%d" % i
    REDIS.append((b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$5\r\nvalue\r\n" % (len(k), k), b"+OK\r\n"))
    REDIS.append((b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(k), k), b"$5\r\nvalue\r\n"))


def dns(cli, cport, qid, name):
    global txns
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    qname = b"".join(bytes([len(p)]) + p for p in name.split(b".")) + b"\x00"
    question = qname + b"\x00\x01\x00\x01"
    udp(cli, 0x0A000035, cport, 53, q + question)
    r = struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + question
    r += b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x0e\x10\x00\x04" + ip4(0xC0000200 + qid % 200)
    udp(0x0A000035, cli, 53, cport, r)
    txns += 1
    flush()


n = 0
if "--flood" in sys.argv:
    partial = b"GET /slow HTTP/1.1\r\nHost: victim\r\nX-Pad: " + b"p" * 1000
    for n in range(min_packets):
        cli = 0x0B000000 + n
        tcp(cli, 0x0A000050, 40000 + n % 20000, 80, 1, 0, SYN)
        tcp(cli, 0x0A000050, 40000 + n % 20000, 80, 2, 0, PSH | ACK, partial)
        flush()
    f.close()
    print(f"{packets} packets of {min_packets} half-open requests written to {out_path}")
    sys.exit(0)
while packets < min_packets:
    n += 1
    cli = 0x0A010000 + (n % 60000)
    cport = 1024 + (n * 7) % 60000
    connection(cli, 0x0A000050, cport, 80, HTTP[n % 40:n % 40 + 5])
    connection(cli, 0x0A0018EB, cport + 1, 6379, REDIS[n % 80:n % 80 + 20])
    for j in range(3):  # short connections from few ports: each port reused every 500
        k = 3 * n + j
        isn = (rng.getrandbits(32), rng.getrandbits(32))
        connection(0x0A020001, 0x0A000050, 40000 + k % 500, 80, [HTTP[k % 50]], isn, k % 4 == 0)
    for j in range(10):
        dns(cli, (cport + 2 + j) % 65535 or 1, (n * 10 + j) & 0xFFFF, b"host%d.bench.example" % (n % 1000 + j))
f.close()
print(f"{packets} packets, {txns} transactions written to {out_path}")

#!/usr/bin/env python3
"""Writes a pcap of AMQP 0-9-1 traffic (port 5672) for perf/proto_bench.sh: many complete
TCP connections, each a pika-like session: protocol header, connection and channel setup,
queue.declare, publishes (method, content header and body frames in one write; every
tenth body 6000 bytes, so its frames span several segments), basic.consume with
deliveries and acks, basic.get / get-ok, a passive declare refused with channel.close 404,
the closes, FIN. Every data segment is acknowledged by the peer.

    perf/gen_amqp.py OUT.pcap [MIN_PACKETS]     (default 300,000)
Prints the number of packets, connections and AMQP transactions it wrote (with the
default hide_connection_information)."""
import random
import struct
import sys

out_path = sys.argv[1]
min_packets = int(sys.argv[2]) if len(sys.argv) > 2 else 300_000
rng = random.Random(10)
out = open(out_path, "wb", buffering=1 << 22)
out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
ETH = bytes(6) + b"\x00\x00\x00\x00\x00\x01" + b"\x08\x00"
SYN, ACK, PSH, FIN = 0x02, 0x10, 0x08, 0x01
MSS = 1448
clock = 1_795_000_000 * 1_000_000
packets = txns = 0


def packet(src, dst, sp, dp, seq, ack, flags, payload=b""):
    global clock, packets
    tcp = struct.pack("!HHIIBBHHH", sp, dp, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 0x50, flags, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + len(payload), 0, 0, 64, 6, 0,
                     struct.pack("!I", src), struct.pack("!I", dst))
    frame = ETH + ip + tcp + payload
    clock += 9
    out.write(struct.pack("<IIII", clock // 1_000_000, clock % 1_000_000, len(frame), len(frame)))
    out.write(frame)
    packets += 1


def short(s):
    b = s.encode()
    return bytes([len(b)]) + b


def frame(kind, ch, payload):
    return struct.pack("!BHI", kind, ch, len(payload)) + payload + b"\xce"


def method(ch, cls, mid, args=b""):
    return frame(1, ch, struct.pack("!HH", cls, mid) + args)


def message(ch, cls_method_args, body, ctype="text/plain"):
    props = struct.pack("!H", 1 << 15 | 1 << 12) + short(ctype) + b"\x02"
    head = frame(2, ch, struct.pack("!HHQ", 60, 0, len(body)) + props)
    return method(ch, 60, *cls_method_args) + head + frame(3, ch, body)


class Conn:
    def __init__(self, cli, srv, cport):
        self.ends = [(cli, cport), (srv, 5672)]
        self.seq = [rng.getrandbits(32), rng.getrandbits(32)]
        c, s = self.ends
        packet(c[0], s[0], c[1], s[1], self.seq[0], 0, SYN)
        packet(s[0], c[0], s[1], c[1], self.seq[1], self.seq[0] + 1, SYN | ACK)
        self.seq = [self.seq[0] + 1, self.seq[1] + 1]
        packet(c[0], s[0], c[1], s[1], self.seq[0], self.seq[1], ACK)

    def write(self, d, data):
        """Side d (0 client, 1 server) writes data: segments, each acknowledged."""
        (a, ap), (b, bp) = self.ends[d], self.ends[1 - d]
        for i in range(0, len(data), MSS):
            seg = data[i:i + MSS]
            packet(a, b, ap, bp, self.seq[d], self.seq[1 - d], ACK | PSH, seg)
            self.seq[d] += len(seg)
            packet(b, a, bp, ap, self.seq[1 - d], self.seq[d], ACK)

    def close(self):
        for d in (0, 1):
            (a, ap), (b, bp) = self.ends[d], self.ends[1 - d]
            packet(a, b, ap, bp, self.seq[d], self.seq[1 - d], FIN | ACK)
            self.seq[d] += 1
        c, s = self.ends
        packet(c[0], s[0], c[1], s[1], self.seq[0], self.seq[1], ACK)


def session(n):
    global txns
    c = Conn(0x0A000000 + 2 + n % 200, 0x0A000001, 20000 + n % 40000)
    c.write(0, b"AMQP\x00\x00\x09\x01")
    props = struct.pack("!I", 0)
    c.write(1, method(0, 10, 10, b"\x00\x09" + props + struct.pack("!I", 5) + b"PLAIN" +
                      struct.pack("!I", 5) + b"en_US"))
    c.write(0, method(0, 10, 11, props + short("PLAIN") + struct.pack("!I", 12) +
                      b"\x00guest\x00guest" + short("en_US")))
    c.write(1, method(0, 10, 30, struct.pack("!HIH", 2047, 131072, 60)))
    c.write(0, method(0, 10, 31, struct.pack("!HIH", 2047, 131072, 0)) +
            method(0, 10, 40, short("/") + short("") + b"\x00"))
    c.write(1, method(0, 10, 41, short("")))
    c.write(0, method(1, 20, 10, short("")))
    c.write(1, method(1, 20, 11, struct.pack("!I", 0)))
    q = f"queue-{n % 97}"
    c.write(0, method(1, 50, 10, b"\x00\x00" + short(q) + b"\x02" + struct.pack("!I", 0)))
    c.write(1, method(1, 50, 11, short(q) + struct.pack("!II", 0, 0)))
    txns += 1
    msgs = 8
    batch = b""
    for i in range(msgs):
        body = (b"x" * 6000) if i % 10 == 9 else f'{{"order": {n}, "line": {i}}}'.encode()
        batch += message(1, (40, b"\x00\x00" + short("") + short(q) + b"\x00"), body,
                         "application/json")
        txns += 1
    c.write(0, batch)
    c.write(0, method(1, 60, 20, b"\x00\x00" + short(q) + short("") + b"\x00" + struct.pack("!I", 0)))
    c.write(1, method(1, 60, 21, short(f"ctag{n}")))
    txns += 1
    for i in range(msgs // 2):
        c.write(1, message(1, (60, short(f"ctag{n}") + struct.pack("!QB", i + 1, 0) + short("") +
                               short(q)), b"payload %d" % i))
        c.write(0, method(1, 60, 80, struct.pack("!QB", i + 1, 0)))
        txns += 2
    c.write(0, method(1, 60, 70, b"\x00\x00" + short(q) + b"\x00"))
    c.write(1, message(1, (71, struct.pack("!QB", 99, 0) + short("") + short(q) +
                           struct.pack("!I", 3)), b"got it"))
    txns += 1
    c.write(0, method(1, 50, 10, b"\x00\x00" + short("missing") + b"\x01" + struct.pack("!I", 0)))
    c.write(1, method(1, 20, 40, struct.pack("!H", 404) + short("NOT_FOUND - no queue 'missing'") +
                      struct.pack("!HH", 50, 10)))
    c.write(0, method(1, 20, 41))
    txns += 1
    c.write(0, method(0, 10, 50, struct.pack("!H", 200) + short("Normal shutdown") + struct.pack("!HH", 0, 0)))
    c.write(1, method(0, 10, 51))
    c.close()


n = 0
while packets < min_packets:
    session(n)
    n += 1
out.close()
print(f"{packets} packets, {n} connections, {txns} transactions")

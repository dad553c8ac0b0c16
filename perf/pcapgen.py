"""Shared writer of the protocol benchmark captures (perf/gen_cassandra.py,
perf/gen_thrift.py): many complete TCP connections to one server port, each replaying a
conversation (a list of sends, client or server) with the handshake, a pure ACK after
every data segment, segments of at most 1448 bytes, and FINs. Timestamps increase."""
import random
import struct

ETH = b"\x00\x00\x00\x00\x00\x02" + b"\x00\x00\x00\x00\x00\x01" + b"\x08\x00"
MSS = 1448


class Writer:
    def __init__(self, path):
        self.f = open(path, "wb", buffering=1 << 22)
        self.f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        self.ts = 1_795_000_000 * 1_000_000
        self.packets = 0

    def frame(self, src, sport, dst, dport, seq, ack, flags, payload=b""):
        tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                          0x50, flags, 65535, 0, 0) + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0,
                         struct.pack("!I", src), struct.pack("!I", dst))
        data = ETH + ip + tcp
        self.ts += 5
        self.f.write(struct.pack("<IIII", self.ts // 1_000_000, self.ts % 1_000_000,
                                 len(data), len(data)))
        self.f.write(data)
        self.packets += 1

    def connection(self, client, cport, server, sport, sends, rng):
        c, s = rng.randrange(1 << 32), rng.randrange(1 << 32)
        self.frame(client, cport, server, sport, c, 0, 0x02)
        self.frame(server, sport, client, cport, s, c + 1, 0x12)
        c += 1
        s += 1
        self.frame(client, cport, server, sport, c, s, 0x10)
        for to_server, data in sends:
            for i in range(0, len(data), MSS):
                seg = data[i:i + MSS]
                if to_server:
                    self.frame(client, cport, server, sport, c, s, 0x18, seg)
                    c += len(seg)
                    self.frame(server, sport, client, cport, s, c, 0x10)
                else:
                    self.frame(server, sport, client, cport, s, c, 0x18, seg)
                    s += len(seg)
                    self.frame(client, cport, server, sport, c, s, 0x10)
        self.frame(client, cport, server, sport, c, s, 0x11)
        self.frame(server, sport, client, cport, s, c + 1, 0x11)
        self.frame(client, cport, server, sport, c + 1, s + 1, 0x10)

    def close(self):
        self.f.close()


def run(path, min_packets, variants, port):
    """Writes connections cycling through `variants` (each a list of sends) until
    `min_packets`; returns (packets, connections)."""
    w = Writer(path)
    rng = random.Random(9)
    n = 0
    while w.packets < min_packets:
        client = 0x0A000000 | (1 + n % 200) << 8 | 1
        w.connection(client, 20000 + n % 40000, 0x0A0000FE, port, variants[n % len(variants)], rng)
        n += 1
    w.close()
    return w.packets, n

"""The one pcap writer the per-protocol generators (perf/gen_<proto>.py) share: Ethernet/
IPv4 frames with increasing timestamps, whole TCP connections (handshake, data both ways
with sequence numbers and ACKs, FIN), UDP datagrams, and `run` for the generators that
replay whole conversations on many connections."""
import struct

ETH = b"\x00\x00\x00\x00\x00\x02" + b"\x00\x00\x00\x00\x00\x01" + b"\x08\x00"
MSS = 1460


class Pcap:
    def __init__(self, path):
        self.f = open(path, "wb", buffering=1 << 22)
        self.f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        self.ts = 1_795_000_000 * 1_000_000
        self.packets = 0

    def frame(self, src, dst, proto, l4):
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0, 64, proto, 0,
                         struct.pack("!I", src), struct.pack("!I", dst))
        frame = ETH + ip + l4
        self.ts += 7
        self.f.write(struct.pack("<IIII", self.ts // 1_000_000, self.ts % 1_000_000,
                                 len(frame), len(frame)))
        self.f.write(frame)
        self.packets += 1

    def udp(self, src, sport, dst, dport, payload):
        self.frame(src, dst, 17, struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)

    def connection(self, client, server, cport, sport, exchanges, isn):
        """A whole TCP connection: each exchange a request and its response (or b""), each
        in one segment, the client acknowledging after it."""
        t = Tcp(self, client, cport, server, sport, isn)
        for req, resp in exchanges:
            t.push(0, req)
            if resp:
                t.push(1, resp)
            t.segment(0, 0x10, b"")
        t.close()

    def close(self):
        self.f.close()


class Tcp:
    """One connection from (client, cport) to (server, sport)."""

    def __init__(self, pcap, client, cport, server, sport, isn=(1000, 5000)):
        self.p, self.c, self.cp, self.s, self.sp = pcap, client, cport, server, sport
        self.seq = list(isn)
        self.segment(0, 0x02, b"")
        self.seq[0] += 1
        self.segment(1, 0x12, b"")
        self.seq[1] += 1
        self.segment(0, 0x10, b"")

    def segment(self, d, flags, payload):
        src, sp, dst, dp = (self.c, self.cp, self.s, self.sp) if d == 0 else (self.s, self.sp, self.c, self.cp)
        hdr = struct.pack("!HHIIBBHHH", sp, dp, self.seq[d] & 0xFFFFFFFF, self.seq[1 - d] & 0xFFFFFFFF,
                          0x50, flags, 65535, 0, 0)
        self.p.frame(src, dst, 6, hdr + payload)

    def push(self, d, data):
        """`data` in one segment (PSH, ACK), whatever its size."""
        self.segment(d, 0x18, data)
        self.seq[d] += len(data)

    def send(self, d, data):
        """`data` from the client (d=0) or the server (d=1), in MSS segments, then an ACK."""
        for i in range(0, len(data), MSS):
            piece = data[i:i + MSS]
            self.segment(d, 0x18, piece)
            self.seq[d] += len(piece)
        self.segment(1 - d, 0x10, b"")

    def close(self):
        self.segment(0, 0x11, b"")
        self.seq[0] += 1
        self.segment(1, 0x11, b"")
        self.seq[1] += 1
        self.segment(0, 0x10, b"")


def run(path, min_packets, variants, port):
    """Writes connections to `port` of one server, from clients and ports that cycle (so
    that ports are reused), each replaying one of `variants` (a list of sends, each
    `(to_server, bytes)`), until `min_packets`; returns (packets, connections)."""
    p = Pcap(path)
    n = 0
    while p.packets < min_packets:
        client = 0x0A000000 | (1 + n % 200) << 8 | 1
        c = Tcp(p, client, 20000 + n % 40000, 0x0A0000FE, port)
        for to_server, data in variants[n % len(variants)]:
            c.send(0 if to_server else 1, data)
        c.close()
        n += 1
    p.close()
    return p.packets, n

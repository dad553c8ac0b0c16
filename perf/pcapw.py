"""A small pcap writer for the protocol benchmarks' generators (perf/gen_memcache.py,
perf/gen_mongodb.py): Ethernet/IPv4 frames, TCP connections with handshake, data and FIN,
UDP datagrams, increasing timestamps."""
import struct

ETH = b"\x00\x00\x00\x00\x00\x02" + b"\x00\x00\x00\x00\x00\x01" + b"\x08\x00"
SYN, ACK, PSH, FIN = 0x02, 0x10, 0x08, 0x01


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

    def tcp(self, src, dst, sp, dp, seq, ack, flags, payload=b""):
        hdr = struct.pack("!HHIIBBHHH", sp, dp, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 0x50,
                          flags, 65535, 0, 0)
        self.frame(src, dst, 6, hdr + payload)

    def udp(self, src, dst, sp, dp, payload):
        self.frame(src, dst, 17, struct.pack("!HHHH", sp, dp, 8 + len(payload), 0) + payload)

    def connection(self, cli, srv, cport, sport, exchanges, isn):
        """A whole TCP connection: exchanges are (request bytes, response bytes or b"")."""
        c, s = isn
        self.tcp(cli, srv, cport, sport, c, 0, SYN)
        self.tcp(srv, cli, sport, cport, s, c + 1, SYN | ACK)
        c, s = c + 1, s + 1
        self.tcp(cli, srv, cport, sport, c, s, ACK)
        for req, resp in exchanges:
            self.tcp(cli, srv, cport, sport, c, s, PSH | ACK, req)
            c += len(req)
            if resp:
                self.tcp(srv, cli, sport, cport, s, c, PSH | ACK, resp)
                s += len(resp)
            self.tcp(cli, srv, cport, sport, c, s, ACK)
        self.tcp(cli, srv, cport, sport, c, s, FIN | ACK)
        self.tcp(srv, cli, sport, cport, s, c + 1, FIN | ACK)
        self.tcp(cli, srv, cport, sport, c + 1, s + 1, ACK)

    def close(self):
        self.f.close()

#!/usr/bin/env python3
"""Seeds the fuzz corpora from recorded captures, so that libFuzzer starts from real messages.

    python3 fuzz/seeds.py [CAPTURE_DIR ...]      (default: tests/data)

Reads every capture under the folders with tshark and writes, into fuzz/corpus/<target>/
(ignored by git): each TCP or UDP payload of a protocol's port for its pure-parser target,
each TCP connection in the `tcp` target's chunk format (first byte: the protocol's index in
the registry, then chunks of both directions), each datagram for `udp`, and the ICMP
messages of a capture as one `icmp` input. Files are named by content hash, so running it
twice adds nothing.
"""
import hashlib
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent
PROTO = ROOT.parent / "src" / "inspect" / "proto"


def registry():
    """The protocols' names in the order of the `registry!` of src/inspect/proto/mod.rs,
    which the `tcp` and `udp` targets index with their first byte."""
    src = (PROTO / "mod.rs").read_text()
    block = src[src.index("\nregistry! {"):]
    block = block[:block.index("\n}")]
    names = []
    for module in re.findall(r"^\s*\w+ => (\w+)::Proto,", block, re.M):
        text = (PROTO / module / "mod.rs").read_text()
        names.append(re.search(r'const NAME: &\'static str = "(\w+)";', text).group(1))
    return names


REGISTRY = registry()
PORTS = {"http": [80, 8080, 8000, 5000], "dns": [53], "redis": [6379], "mysql": [3306],
         "pgsql": [5432], "tls": [443], "memcache": [11211], "mongodb": [27017],
         "amqp": [5672], "dhcpv4": [67, 68], "smtp": [25, 587, 10025], "sip": [5060],
         "nfs": [2049], "cassandra": [9042], "thrift": [9090]}
# Pure-parser targets that read a payload as it is, and those that take a first byte of
# choices before it (each seed is written with a few of those bytes).
PLAIN = {"memcache", "mongodb", "amqp", "dhcpv4", "smtp", "sip", "nfs", "dns"}
PICKED = {"cassandra": [0, 1, 2], "thrift": [0, 4, 16, 20, 32, 36]}
MAX_CHUNK = 31 * 16 + 1


def save(target, data):
    d = ROOT / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


def chunks(data, to_client):
    """`data` in the `tcp` target's chunks: a control byte (direction, length 16k+1), bytes."""
    out = bytearray()
    while data:
        n = min(len(data), MAX_CHUNK)
        n -= (n - 1) % 16  # the longest 16k+1 that fits
        out.append(((n - 1) // 16) << 3 | to_client)
        out += data[:n]
        data = data[n:]
    return bytes(out)


def fields(pcap, *names, filt):
    cmd = ["tshark", "-r", str(pcap), "-n", "-Y", filt, "-T", "fields", "-E", "occurrence=f"]
    for n in names:
        cmd += ["-e", n]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return [line.split("\t") for line in res.stdout.splitlines()]


def protocol_of(sport, dport):
    for name, ports in PORTS.items():
        if dport in ports:
            return name, False
        if sport in ports:
            return name, True
    return None, False


def seed(pcap):
    streams = {}
    for stream, sp, dp, payload in fields(pcap, "tcp.stream", "tcp.srcport", "tcp.dstport",
                                          "tcp.payload", filt="tcp.len > 0"):
        name, to_client = protocol_of(int(sp), int(dp))
        if not name or not payload:
            continue
        data = bytes.fromhex(payload)
        if name in PLAIN:
            save(name, data)
        for pick in PICKED.get(name, []):
            save(name, bytes([pick]) + data)
        s = streams.setdefault(stream, [name, bytearray()])
        s[1] += chunks(data, int(to_client))
    for name, framed in streams.values():
        save("tcp", bytes([REGISTRY.index(name)]) + bytes(framed[:16384]))
    for sp, dp, payload in fields(pcap, "udp.srcport", "udp.dstport", "udp.payload",
                                  filt="udp.length > 8"):
        name, _ = protocol_of(int(sp), int(dp))
        if not name or not payload:
            continue
        data = bytes.fromhex(payload)
        save("udp", bytes([REGISTRY.index(name)]) + data)
        if name in PLAIN:
            save(name, data)
    icmp = bytearray()
    rows = fields(pcap, "ipv6.version", "icmp.type", "icmp.code", "icmpv6.type",
                  "icmpv6.code", "icmp.ident", "icmp.seq", "icmpv6.echo.identifier",
                  "icmpv6.echo.sequence_number", filt="icmp or icmpv6")
    for i, (v6, t4, c4, t6, c6, id4, sq4, id6, sq6) in enumerate(rows):
        num = lambda *xs: next((int(x, 0) for x in xs if x), 0)
        ident, seq = num(id4, id6) & 0xFFFF, num(sq4, sq6) & 0xFFFF
        icmp += bytes([bool(v6) | (i % 2) << 1, 1, num(t4, t6), num(c4, c6)])
        icmp += ident.to_bytes(2, "big") + seq.to_bytes(2, "big")
    if icmp:
        save("icmp", bytes(icmp))


def main():
    dirs = [pathlib.Path(p) for p in sys.argv[1:]] or [ROOT.parent / "tests" / "data"]
    for d in dirs:
        for pcap in sorted(list(d.rglob("*.pcap")) + list(d.rglob("*.pcapng"))):
            seed(pcap)
    for d in sorted((ROOT / "corpus").iterdir()):
        print(f"{d.name}: {len(list(d.iterdir()))} seeds")


if __name__ == "__main__":
    main()

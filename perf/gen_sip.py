#!/usr/bin/env python3
"""Writes a pcap of SIP calls over UDP port 5060 for perf/proto_bench.sh: INVITE with an
SDP body, 100 Trying, 180 Ringing, 200 OK with SDP, ACK, BYE, 200 OK; one message each.

    perf/gen_sip.py OUT.pcap [MIN_PACKETS]     (default 300,000)
Prints the number of packets and of messages (events) it wrote."""
import sys

from pcapgen import Pcap

p = Pcap(sys.argv[1])
want = int(sys.argv[2]) if len(sys.argv) > 2 else 300_000
A, B = 0x0A000002, 0x0A000003
events = 0
n = 0


def sdp(who, ip):
    return (f"v=0\r\no={who} {n} {n + 1} IN IP4 {ip}\r\ns=call\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
            f"m=audio {6000 + n % 1000} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\n").encode()


def msg(start, cseq, method, body=b"", extra=""):
    head = (f"{start}\r\nVia: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK-{n}-{cseq}\r\n"
            f"From: \"Alice\" <sip:alice@10.0.0.2:5060>;tag={n}\r\n"
            f"To: <sip:bob@10.0.0.3:5060>{extra}\r\nCall-ID: {n}-call@10.0.0.2\r\n"
            f"CSeq: {cseq} {method}\r\nContact: <sip:alice@10.0.0.2:5060>\r\nMax-Forwards: 70\r\n"
            f"User-Agent: gen_sip\r\nAllow: INVITE, ACK, BYE, CANCEL, OPTIONS\r\n")
    if body:
        head += "Content-Type: application/sdp\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


while p.packets < want:
    n += 1
    port = 10000 + n % 50000
    tag = f";tag=b{n}"
    for d, m in [
        (0, msg("INVITE sip:bob@10.0.0.3:5060 SIP/2.0", 1, "INVITE", sdp("alice", "10.0.0.2"))),
        (1, msg("SIP/2.0 100 Trying", 1, "INVITE")),
        (1, msg("SIP/2.0 180 Ringing", 1, "INVITE", extra=tag)),
        (1, msg("SIP/2.0 200 OK", 1, "INVITE", sdp("bob", "10.0.0.3"), extra=tag)),
        (0, msg("ACK sip:bob@10.0.0.3:5060 SIP/2.0", 1, "ACK", extra=tag)),
        (0, msg("BYE sip:bob@10.0.0.3:5060 SIP/2.0", 2, "BYE", extra=tag)),
        (1, msg("SIP/2.0 200 OK", 2, "BYE", extra=tag)),
    ]:
        if d == 0:
            p.udp(A, port, B, 5060, m)
        else:
            p.udp(B, 5060, A, port, m)
        events += 1
p.close()
print(f"{p.packets} packets, {events} transactions")

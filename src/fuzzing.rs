//! Entry points for fuzzing: each takes arbitrary bytes and must never panic, hang or
//! allocate without bound. `fuzz/` calls them from libFuzzer targets (cargo-fuzz, nightly);
//! the unit tests below run each over a few thousand mutated samples so that a stable
//! `cargo test` exercises them too. Built only for tests and with the `fuzzing` feature
//! (which the fuzz crate turns on): nothing here ships in the agent.
//!
//! The protocol targets take every protocol from the registry (the first input byte picks
//! one), so a new protocol is fuzzed without any change here or in `fuzz/`.

use crate::inspect::decode::{Network, decode_frame, decode_transport, linktype};
use crate::inspect::engine::{Skip, feed_chunk};
use crate::inspect::proto::txn::{EcsSettings, Endpoints};
use crate::inspect::proto::{self, Common, Cx, Dir, Done, ProtocolConfig, TcpParser};
use crate::inspect::tcp::{Budget, Chunk};

/// The frame decoder, on every link type.
pub fn decode(data: &[u8]) {
    for link in [
        linktype::ETHERNET,
        linktype::LINUX_SLL,
        linktype::LINUX_SLL2,
        linktype::NULL,
        linktype::RAW,
    ] {
        if let Ok(Network::Ip(p)) = decode_frame(link, data) {
            let _ = decode_transport(&p);
            let _ = crate::inspect::decode::decode_icmp(&p);
        }
    }
}

const COMMON: Common = Common {
    max_pending: 16,
    transaction_timeout_us: 1_000_000,
    event_format: crate::config::EventFormat::Classic,
};

/// The registry's protocol picked by `selector`, with options that reach the most code.
fn pick(selector: u8) -> ProtocolConfig {
    let all = ProtocolConfig::fuzzing();
    let i = usize::from(selector) % all.len();
    all.into_iter().nth(i).expect("index within the registry")
}

/// A TCP protocol parser of the registry, chosen by the first byte; see [`tcp_protocol`].
pub fn tcp(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    if let Some(f) = pick(first).parsers(&COMMON).tcp {
        tcp_protocol(f().as_mut(), rest);
    }
}

/// A UDP protocol parser of the registry, chosen by the first byte: the rest is one
/// request datagram, then the same bytes as the answer.
pub fn udp(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let Some(f) = pick(first).parsers(&COMMON).udp else {
        return;
    };
    let mut p = f();
    let mut out = Vec::new();
    let mut cx = Cx {
        now: 1,
        timeout: 10,
        out: &mut out,
    };
    let _ = p.datagram(Dir::ToServer, rest, &mut cx);
    let _ = p.datagram(Dir::ToClient, rest, &mut cx);
    p.expire(&mut cx);
    p.close(&mut cx);
    write_events(&mut out, "udp");
}

/// Writes the transactions a parser made of the input as events, every other one in
/// each shape (classic, ECS), so that the event writers see what the parsers produce.
fn write_events(out: &mut Vec<Done>, transport: &'static str) {
    let ep = Endpoints::new(
        transport,
        ([192, 0, 2, 1], 40000).into(),
        ([192, 0, 2, 2], 80).into(),
    );
    let s = EcsSettings::default();
    for (i, t) in out.drain(..).enumerate() {
        let e = if i % 2 == 0 {
            t.into_event("fuzz", &ep)
        } else {
            t.into_ecs_event("fuzz", &ep, &s)
        };
        let _ = e.to_value();
    }
}

/// One TCP protocol parser: the input is cut into chunks of both directions (each chunk
/// prefixed by a control byte: direction, gap, FIN, chunk length), fed the way the stream
/// layer does, then the connection times out and closes.
pub fn tcp_protocol(p: &mut dyn TcpParser, data: &[u8]) {
    let mut out = Vec::new();
    let budget = Budget::new(1 << 20);
    let mut bufs: [Vec<u8>; 2] = Default::default();
    let mut skips: [Skip; 2] = Default::default();
    let mut at = 0;
    let mut now = 0u64;
    while at < data.len() {
        let ctl = data[at];
        at += 1;
        let dir = if ctl & 1 == 0 {
            Dir::ToServer
        } else {
            Dir::ToClient
        };
        let d = usize::from(ctl & 1);
        let len = usize::from(ctl >> 3) * 16 + 1;
        let chunk = &data[at..(at + len).min(data.len())];
        at += chunk.len();
        now += 1000;
        let mut cx = Cx {
            now,
            timeout: 1_000_000,
            out: &mut out,
        };
        let c = match ctl & 6 {
            2 => Chunk::Gap(chunk.len()),
            4 if chunk.len() == 1 => Chunk::Fin,
            _ => Chunk::Data(chunk),
        };
        feed_chunk(
            p,
            dir,
            c,
            &mut bufs[d],
            &mut skips[d],
            &budget,
            64 * 1024,
            &mut cx,
        );
        if out.len() > 64 {
            write_events(&mut out, "tcp");
        }
    }
    let mut cx = Cx {
        now: now + 2_000_000,
        timeout: 1_000_000,
        out: &mut out,
    };
    p.expire(&mut cx);
    p.close(&mut cx);
    write_events(&mut out, "tcp");
}

/// The AMQP wire parsers alone: the input is read as frames (each frame's payload
/// decoded as a method and as a content header, whatever its type), then whole as a
/// method's arguments and as a field table.
pub fn amqp(data: &[u8]) {
    use proto::amqp::{fields::Reader, parser};
    let mut at = data;
    while let Some(h) = parser::frame_head(at) {
        let end = (parser::HEAD + h.size as usize).min(at.len());
        let payload = &at[parser::HEAD..end];
        let _ = parser::method(payload, true);
        let _ = parser::content_header(payload, true);
        at = &at[(end + 1).min(at.len())..];
    }
    let _ = parser::method(data, true);
    let _ = Reader::new(data).table();
}

/// The SMTP parser's pure entries: a command, a reply, a mailbox, the end of a body.
pub fn smtp(data: &[u8]) {
    use proto::smtp::parser;
    if let Ok(Some((n, c))) = parser::command(data) {
        assert!(n <= data.len());
        let _ = parser::mailbox(c.arg, "FROM:");
    }
    if let Ok(Some((n, r))) = parser::reply(data) {
        assert!(n <= data.len() && r.lines.len() <= parser::MAX_REPLY_LINES);
    }
    // Bodies one after the other, fed in pieces: every byte is taken, each `.` line once.
    let mut end = parser::BodyEnd::start();
    for piece in data.chunks(7) {
        let mut rest = piece;
        while !rest.is_empty() {
            let s = end.scan(rest);
            assert!(s.used >= 1 && s.used <= rest.len() && s.marker <= 3);
            assert!(s.done || s.used == rest.len());
            rest = &rest[s.used..];
            if s.done {
                end = parser::BodyEnd::start();
            }
        }
    }
}

/// The SIP parser's pure entries: a message (framed and as a datagram), and the header
/// readers on its text.
pub fn sip(data: &[u8]) {
    use proto::sip::parser::{self, Auth, NameAddr, Sdp, Uri};
    for framed in [true, false] {
        if let Ok(Some((n, m))) = parser::message(data, framed) {
            assert!(n <= data.len() && m.headers.len() <= parser::MAX_HEADERS);
        }
    }
    let text = String::from_utf8_lossy(data);
    let _ = Uri::parse(&text);
    let _ = NameAddr::parse(&text);
    let _ = Auth::parse(&text);
    let _ = Sdp::parse(&text);
    let _ = parser::redact_authorization(data);
}

/// The ONC RPC / NFS parser's pure entries: a record, then the RPC message in it (and the
/// input itself as one).
pub fn nfs(data: &[u8]) {
    use proto::nfs::parser;
    if let Ok(Some((n, body))) = parser::record(data, 1 << 16) {
        assert!(n <= data.len());
        let _ = parser::rpc(&body);
    }
    if let Ok(parser::Rpc::Reply(r)) = parser::rpc(data) {
        let _ = parser::nfs_status(1, r.results);
    }
}

/// The DNS message parser alone.
pub fn dns(data: &[u8]) {
    let _ = proto::dns::parser::parse(data);
}

/// The pure TLS entries: the first byte picks a ClientHello or ServerHello (with its
/// extensions decoded as the events show them), a Certificate message body, or one DER
/// certificate read into its event fields.
pub fn tls(data: &[u8]) {
    use crate::inspect::proto::tls::{parser, x509};
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    match pick % 3 {
        0 => {
            if let Ok(h) = parser::hello(rest, pick & 4 != 0) {
                let _ = (h.ja3(), h.server_names(), h.alpn(), h.offered_versions());
                let _ = h.extensions.as_deref().map(proto::tls::ext::to_map);
            }
        }
        1 => {
            for der in parser::certificates(rest).unwrap_or_default() {
                let _ = x509::parse(der);
            }
        }
        _ => {
            let _ = x509::parse(rest);
        }
    }
}

/// The TCP stream layer as a whole (sort window, connection life, reassembly, HTTP on
/// top): the input is a list of segments, each of both directions with arbitrary flags,
/// sequence and acknowledgement numbers and timestamps. Each segment is a 9-byte header:
/// `ctl` (bit 0 direction, bits 1-2 which of 4 client ports, bits 3-7 payload length / 4),
/// TCP flags, 4 bytes of sequence number (big-endian; a value below 2^16 is taken as an
/// offset from the direction's last one), 2 bytes of acknowledgement offset, 1 byte of
/// time step (may go back); then the payload (bytes of an HTTP exchange, so that parsing
/// goes deep). At the end every byte held must be back in the budget.
pub fn tcp_stream(data: &[u8]) {
    use crate::config::from_yaml_str;
    const YAML: &str = "output.console: {enabled: true}\nconnbeat.protocols: [{type: http, ports: [80]}]\nconnbeat.interfaces: {sort_window: 2ms, reorder_window_kb: 4, max_out_of_order_kb: 2, reassembly_memory_mb: 1, max_streams: 3}\n";
    const TEXT: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let Ok(config) = from_yaml_str(YAML, &[], &|_| None) else {
        return;
    };
    let mut sink = |_e: crate::event::Event| {};
    let Ok(mut engine) = crate::inspect::engine::Engine::new(&config, &mut sink, None) else {
        return;
    };
    let mut last_seq = [0u32; 2];
    let mut ts: u64 = 1_000_000_000;
    let mut at = 0;
    let mut frame = Vec::with_capacity(128);
    while at + 9 <= data.len() {
        let h = &data[at..at + 9];
        at += 9;
        let d = usize::from(h[0] & 1);
        let client_port = 40000 + u16::from((h[0] >> 1) & 3);
        let len = usize::from(h[0] >> 3) * 4;
        let raw = u32::from_be_bytes([h[2], h[3], h[4], h[5]]);
        let seq = if raw < 1 << 16 {
            last_seq[d].wrapping_add(raw)
        } else {
            raw
        };
        last_seq[d] = seq;
        let ack = last_seq[1 - d].wrapping_add(u32::from(u16::from_be_bytes([h[6], h[7]])));
        let step = i64::from(h[8] as i8) * 500;
        ts = ts.saturating_add_signed(step);
        let start = usize::from(h[8]) % TEXT.len();
        let payload: Vec<u8> = TEXT.iter().cycle().skip(start).take(len).copied().collect();
        let (sport, dport) = if d == 0 {
            (client_port, 80)
        } else {
            (80, client_port)
        };
        frame.clear();
        frame.extend_from_slice(&[0x45, 0]);
        frame.extend_from_slice(&((40 + payload.len()) as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        if d == 1 {
            frame[12..20].rotate_left(4);
        }
        frame.extend_from_slice(&sport.to_be_bytes());
        frame.extend_from_slice(&dport.to_be_bytes());
        frame.extend_from_slice(&seq.to_be_bytes());
        frame.extend_from_slice(&ack.to_be_bytes());
        frame.extend_from_slice(&[0x50, h[1], 0xff, 0xff, 0, 0, 0, 0]);
        frame.extend_from_slice(&payload);
        engine.packet(linktype::RAW, ts, &frame);
    }
    engine.finish();
    assert_eq!(
        engine.memory_used(),
        0,
        "bytes still accounted after finish"
    );
}

/// The DHCPv4 message parser alone.
pub fn dhcpv4(data: &[u8]) {
    let _ = proto::dhcpv4::parser::parse(data);
}
/// The engine with ICMP, DHCPv4 and flows on (a table of 8 flows, so that the bound and
/// the room-making path are reached): the input is a list of frames, each a 3-byte header
/// (length, time step in 100 ms units that may go back) then an Ethernet frame's bytes.
/// A common prefix (Ethernet, optional VLAN, IPv4 or IPv6 header) is put in front of the
/// frames whose first byte says so, so that mutated inputs reach ICMP and the flows.
pub fn flows(data: &[u8]) {
    use crate::config::from_yaml_str;
    const YAML: &str = "output.console: {enabled: true}\n\
        connbeat.protocols: [{type: icmp, max_pending: 4}, {type: dhcpv4, ports: [67, 68]}]\n\
        connbeat.flows: {timeout: 1s, period: 1s, max_flows: 8}\n";
    let Ok(config) = from_yaml_str(YAML, &[], &|_| None) else {
        return;
    };
    let mut sink = |_e: crate::event::Event| {};
    let Ok(engine) = crate::inspect::engine::Engine::new(&config, &mut sink, None) else {
        return;
    };
    let mut engine = engine.with_flows(&config, data.first().is_some_and(|b| b & 1 == 1));
    let mut ts: u64 = 1_000_000_000;
    let mut at = 1;
    let mut frame = Vec::with_capacity(256);
    while at + 3 <= data.len() {
        let len = usize::from(data[at]);
        let step = i64::from(data[at + 1] as i8) * 100_000;
        let kind = data[at + 2];
        at += 3;
        let body = &data[at..(at + len).min(data.len())];
        at += body.len();
        ts = ts.saturating_add_signed(step);
        frame.clear();
        frame.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
        if kind & 4 != 0 {
            frame.extend_from_slice(&[0x81, 0, 0, kind >> 3]);
        }
        match kind & 3 {
            0 => {
                frame.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
                frame.extend_from_slice(&((20 + body.len()) as u16).to_be_bytes());
                frame.extend_from_slice(&[0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
                if kind & 8 != 0 {
                    frame[26..34].rotate_left(4);
                }
            }
            1 => {
                frame.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
                frame.extend_from_slice(&(body.len() as u16).to_be_bytes());
                frame.extend_from_slice(&[58, 64]);
                frame.extend_from_slice(&[0; 15]);
                frame.push(1 + (kind >> 7));
                frame.extend_from_slice(&[0; 15]);
                frame.push(2 - (kind >> 7));
            }
            2 => {
                frame.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
                frame.extend_from_slice(&((28 + body.len()) as u16).to_be_bytes());
                frame
                    .extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255]);
                frame.extend_from_slice(&[0, 68, 0, 67]);
                frame.extend_from_slice(&((8 + body.len()) as u16).to_be_bytes());
                frame.extend_from_slice(&[0, 0]);
            }
            _ => {}
        }
        frame.extend_from_slice(body);
        engine.packet(linktype::ETHERNET, ts, &frame);
        if kind & 0x40 != 0 {
            engine.tick(ts + 1_500_000);
        }
    }
    engine.finish();
}

/// The ICMP tracker alone (requests paired with replies, a bound of 4 pending, timeouts)
/// and the message names: the input is a list of 8-byte messages, each version and
/// direction (bit 0: v6, bit 1: reply way, bits 2-3: which of 4 hosts), time step (may go
/// back), type, code, 2 bytes of identifier, 2 of sequence number.
pub fn icmp(data: &[u8]) {
    use proto::icmp::{Tracker, message};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let host = |v6: bool, n: u8| -> IpAddr {
        if v6 {
            Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, u16::from(n)).into()
        } else {
            Ipv4Addr::new(10, 0, 0, n).into()
        }
    };
    let mut t = Tracker::new(4, 1_000_000);
    let mut now: u64 = 1_000_000_000;
    for m in data.chunks_exact(8) {
        let v6 = m[0] & 1 != 0;
        let (a, b) = (host(v6, 1), host(v6, 2 + (m[0] >> 2 & 3)));
        let (src, dst) = if m[0] & 2 != 0 { (b, a) } else { (a, b) };
        now = now.saturating_add_signed(i64::from(m[1] as i8) * 100_000);
        let h = crate::inspect::decode::IcmpHeader {
            version: if v6 { 6 } else { 4 },
            icmp_type: m[2],
            code: m[3],
            id: u16::from_be_bytes([m[4], m[5]]),
            seq: u16::from_be_bytes([m[6], m[7]]),
            payload_len: usize::from(m[7]),
        };
        let _ = message::name(h.version, h.icmp_type, h.code);
        t.message(src, dst, &h, now);
        assert!(t.pending() <= 4, "pending requests beyond the bound");
        if m[0] & 0x80 != 0 {
            t.expire(now);
        }
        t.out.clear();
    }
    t.close();
    assert_eq!(t.pending(), 0, "requests left after close");
}

/// Every target by name, for the fuzz crate and the tests.
pub const TARGETS: &[&str] = &[
    "decode",
    "dns",
    "tls",
    "tcp",
    "udp",
    "btf",
    "stream",
    "memcache",
    "mongodb",
    "amqp",
    "dhcpv4",
    "flows",
    "smtp",
    "sip",
    "nfs",
    "cassandra",
    "thrift",
    "afpacket",
    "icmp",
];

/// The memcache message parser alone, both directions, with values kept and not, and
/// the UDP frame header.
pub fn memcache(data: &[u8]) {
    use proto::memcache::parser::{Limits, message, udp_header};
    let _ = udp_header(data);
    for (max_values, max_bytes) in [(0, 0), (-1, 0), (2, 3)] {
        let l = Limits {
            max_values,
            max_bytes_per_value: max_bytes,
            parse_unknown: max_values != 0,
        };
        let mut at = 0;
        // A stream of messages, as the TCP parser reads them.
        while at < data.len() {
            match message(&data[at..], max_values == 0, &l) {
                Ok(Some(m)) if m.len > 0 => at += m.len,
                _ => break,
            }
        }
    }
}

/// The MongoDB message parser alone: header, every opcode's body, OP_COMPRESSED payloads
/// decompressed with each compressor, and the documents written as JSON.
pub fn mongodb(data: &[u8]) {
    use proto::mongodb::bson::{Doc, Json};
    use proto::mongodb::parser::{Body, HEADER, body, compressed, decompress, header};
    let json = Json {
        hide: &["payload"],
        max: 4096,
    };
    let mut out = String::new();
    if let Ok(Some(h)) = header(data) {
        let b = data.get(HEADER..h.len.min(data.len())).unwrap_or_default();
        for op in [1, 1000, 2001, 2002, 2004, 2005, 2006, 2007, 2013, h.opcode] {
            if let Ok(Body::Msg { body: Some(d), .. } | Body::Query { query: d, .. }) = body(op, b)
            {
                json.write(&d, &[], &mut out);
            }
        }
        if let Ok((_, size, _, payload)) = compressed(b) {
            for id in 0..4 {
                let _ = decompress(id, payload, size, 1 << 20);
            }
        }
    }
    if let Some(d) = Doc::read(data) {
        let _ = d.valid();
        json.write(&d, &["x"], &mut out);
    }
}
/// The kernel BTF reader of the connection source: any bytes parse or fail cleanly, and
/// lookups on what parsed stay in bounds (a BTF magic is put in front, so that mutated
/// inputs get past the first check).
pub fn btf(data: &[u8]) {
    use crate::conn::btf::{Btf, Kind};
    let mut bytes = vec![0x9f, 0xeb, 1, 0];
    bytes.extend_from_slice(data);
    for input in [data, &bytes[..]] {
        if let Ok(b) = Btf::parse(input) {
            for id in 1..=(b.len() as u32).min(256) {
                let _ = b.member(id, "i_ino");
            }
            if let Some(id) = b.find(Kind::Struct, "inode") {
                let _ = b.member(id, "i_mode");
            }
            let _ = b.find(Kind::Func, "bpf_iter_task_file");
        }
    }
}

/// The CQL parser alone: the first byte picks the header flags' treatment, the rest is a
/// frame (header and body, compressed or not) and, read again, a v5 segment.
pub fn cassandra(data: &[u8]) {
    use proto::cassandra::parser as p;
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let _ = p::segment(rest, pick & 1 != 0);
    if let Ok(Some(h)) = p::header(rest) {
        let body = &rest[p::HEADER_LEN..];
        let c = [
            p::Compression::None,
            p::Compression::Snappy,
            p::Compression::Lz4,
        ][usize::from(pick % 3)];
        let plain = p::decompress(c, body, 1 << 20).unwrap_or_else(|_| body.to_vec());
        let _ = p::request(&h, &plain);
        let _ = p::response(&h, &plain);
    }
}

/// The Thrift message parser alone (the first byte picks protocol, framing, limits), and
/// the IDL reader on the same bytes as text.
pub fn thrift(data: &[u8]) {
    use proto::thrift::parser as p;
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let r = p::Render {
        string_max_size: usize::from(pick >> 4),
        collection_max_size: usize::from(pick & 3),
        drop_after_n_struct_fields: 64,
        obfuscate_strings: pick & 8 != 0,
    };
    let proto = if pick & 4 != 0 {
        p::Protocol::Compact
    } else {
        p::Protocol::Binary
    };
    let _ = p::message(rest, pick & 16 != 0, proto, &r, pick & 32 == 0);
    if let Ok(text) = std::str::from_utf8(rest) {
        let _ = proto::thrift::idl::Idl::default().add(text);
    }
}

/// A TPACKET_V3 block of the af_packet capture and a change record of the connect
/// recorder, both written by the kernel into shared memory: any bytes are walked without
/// reading outside them, and every packet handed over lies inside the block and goes
/// through the frame decoder.
pub fn afpacket(data: &[u8]) {
    let mut n = 0usize;
    crate::inspect::afpacket::walk_block(data, 1, &mut |_, pkt| {
        n += pkt.len();
        if let Ok(Network::Ip(p)) = decode_frame(linktype::RAW, pkt) {
            let _ = decode_transport(&p);
        }
    });
    assert!(n <= data.len());
    let _ = crate::conn::connects::parse_change(data);
}

/// Runs one target by name.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "decode" => decode(data),
        "dns" => dns(data),
        "tls" => tls(data),
        "amqp" => amqp(data),
        "tcp" => tcp(data),
        "udp" => udp(data),
        "btf" => btf(data),
        "stream" => tcp_stream(data),
        "afpacket" => afpacket(data),
        "cassandra" => cassandra(data),
        "thrift" => thrift(data),
        "memcache" => memcache(data),
        "mongodb" => mongodb(data),
        "dhcpv4" => dhcpv4(data),
        "flows" => flows(data),
        "smtp" => smtp(data),
        "sip" => sip(data),
        "nfs" => nfs(data),
        "icmp" => icmp(data),
        other => panic!("no fuzz target {other:?}; targets: {TARGETS:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// Seeds: real messages of each protocol, wrapped in chunk control bytes.
    fn seeds() -> Vec<Vec<u8>> {
        let msgs: &[&[u8]] = &[
            b"get a b\r\nVALUE a 0 2\r\nxy\r\nEND\r\nset k 1 0 3 noreply\r\nabc\r\nSTAT pid 1\r\n",
            b"\x80\x01\x00\x01\x08\x00\x00\x00\x00\x00\x00\x0a\x00\x00\x00\x07\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00kv",
            b"\x30\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\xdd\x07\x00\x00\x00\x00\x00\x00\x00\x1b\x00\x00\x00\x02find\x00\x02\x00\x00\x00c\x00\x10n\x00\x01\x00\x00\x00\x00",
            b"GET /a?pass=1 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n%1\r\n+a\r\n*1\r\n:1\r\n",
            b"\x0f\x00\x00\x00\x03SELECT 1 FROM t\x01\x00\x00\x01\x01\x05\x00\x00\x02\xfe\x00\x00\x02\x00",
            b"Q\x00\x00\x00\x0dSELECT 1\x00T\x00\x00\x00\x06\x00\x01D\x00\x00\x00\x04Z\x00\x00\x00\x05I",
            b"\x16\x03\x01\x00\x30\x01\x00\x00\x2c\x03\x03AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\x00\x00\x02\x13\x01\x01\x00",
            b"\x00\x1d\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01",
            b"\x04\x00\x00\x01\x07\x00\x00\x00\x0c\x00\x00\x00\x08SELECT 1\x84\x00\x00\x01\x08\x00\x00\x00\x04\x00\x00\x00\x01",
            b"\x80\x01\x00\x01\x00\x00\x00\x03add\x00\x00\x00\x00\x08\x00\x01\x00\x00\x00\x01\x0f\x00\x02\x0b\x00\x00\x00\x01\x00\x00\x00\x01x\x00",
            // AMQP: basic.publish, its content header (text/plain, headers table), its body.
            b"\x01\x00\x01\x00\x00\x00\x0b\x00\x3c\x00\x28\x00\x00\x00\x02rk\x00\xce\x02\x00\x01\x00\x00\x00\x24\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\xa0\x00\x0atext/plain\x00\x00\x00\x07\x01kS\x00\x00\x00\x00\xce\x03\x00\x01\x00\x00\x00\x02hi\xce",
            b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x08\x00\x45\x00\x00\x1c\x00\x00\x00\x00\x40\x11\x00\x00\x01\x02\x03\x04\x05\x06\x07\x08\x00\x35\x00\x35\x00\x08\x00\x00",
            b"250-mx\r\n250 AUTH PLAIN\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n354 go\r\nx\r\n.\r\n",
            b"INVITE sip:b@h:5060 SIP/2.0\r\nFrom: \"A\" <sip:a@h>;tag=1\r\nContact: <sip:a@h>\r\nAuthorization: Digest username=\"a\", response=\"x\"\r\nContent-Type: application/sdp\r\nContent-Length: 12\r\n\r\nv=0\r\no=a 1 2\r\n",
            b"\x80\x00\x00\x40\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x02\x00\x01\x86\xa3\x00\x00\x00\x04\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x35\x00\x00\x00\x47",
        ];
        msgs.iter()
            .map(|m| {
                let mut v = Vec::new();
                for (i, c) in m.chunks(9).enumerate() {
                    v.push(((c.len() as u8 - 1) / 16) << 3 | (i as u8 & 1));
                    v.extend_from_slice(c);
                }
                v
            })
            .collect()
    }

    /// Segments in the `tcp` target's format: mostly in sequence, with SYNs, FINs, RSTs,
    /// wild sequence numbers and time going back mixed in.
    #[test]
    fn tcp_stream_survives_random_segments() {
        let mut rng = Rng(0x853c_49e6_748f_ea9b);
        for _ in 0..400 {
            let mut input = Vec::new();
            for _ in 0..(rng.next() % 60) {
                let r = rng.next();
                let len = (r % 32) as u8;
                let flags = [0x10, 0x18, 0x02, 0x12, 0x11, 0x14, 0x04, 0x3f][(r >> 8) as usize % 8];
                let seq: u32 = if r >> 20 & 7 == 0 {
                    (r >> 24) as u32 | 1 << 16
                } else {
                    u32::from(len) * 4 * ((r >> 30) & 1) as u32
                };
                input.push(len << 3 | ((r >> 40) as u8 & 7));
                input.push(flags);
                input.extend_from_slice(&seq.to_be_bytes());
                input.extend_from_slice(&((r >> 44) as u16 % 300).to_be_bytes());
                input.push((r >> 60) as u8 | if r >> 59 & 1 == 0 { 0 } else { 0x80 });
            }
            tcp_stream(&input);
        }
    }

    /// Inputs libFuzzer found crashing, replayed: through the `tcp` target, a MongoDB
    /// OP_QUERY whose document has a string of length 0; through `mongodb`, a document
    /// holding a date after year 9999 (both fixed in `mongodb::bson`).
    #[test]
    fn crashes_found_by_libfuzzer_stay_fixed() {
        let tcp = [
            "07204b0000001600000000000000d4070000000000007465737444422e74657374436f6c6c656374696f6e00",
            "0000000000000000190000000274659393939393939393939393939393939393939393939393939393939393",
            "9393939393939393939393939393939393939393939393939393939393939393939393939393939393939393",
            "939393939393939393939393939393939393939393939393939393939393939393939393939373744b657900",
            "07000000000000760061006c00750065003100000000214e0000007c00000016000000010000000800ffffff",
            "ffffffff03000000000000010000002a000000075f696400554769b19370af252b761fe402746573744b6579",
            "0100010701000100010001760161016c0175016501320100010028510000001700000000000000d407000000",
            "0000007465737444422e24636d640000000000ffffffff290000000169734d617374657200000000000000f0",
            "3f01666f725368656c000000214e0000007c00000016000000010000000800ffffffffffffff030000000000",
            "00010000002a000000075f696400554769b19370af252b761fe402746573744b657901000107010001000100",
            "01760161016c0175016501320100010028510000001700000000000000d40702106d61785772697465426174",
            "636853697a6500e8030000096c6f63616c54696d65009cacf61e4d0100080000000000000000000000000000",
            "00010000009e00001f00000000000000000869736d61737465720001106d617842736f0100",
        ]
        .concat();
        let mongodb = "380000000900000000380000000b0000000b0108000000000000010000000094949494949494949494949494949400889a617465000000000000000000000000000000000000";
        for (target, hex) in [("tcp", tcp.as_str()), ("mongodb", mongodb)] {
            let input: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            run(target, &input);
        }
    }

    #[test]
    fn every_target_survives_mutated_inputs() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let seeds = seeds();
        let protocols = ProtocolConfig::fuzzing().len();
        for target in TARGETS {
            // The protocol targets run every protocol of the registry as often as the
            // other targets run once.
            let rounds = match *target {
                "tcp" | "udp" => 3000 * protocols,
                _ => 3000,
            };
            for round in 0..rounds {
                let mut input = seeds[round % seeds.len()].clone();
                if round % 7 == 0 {
                    // Raw seed without the chunk framing, too.
                    input.retain(|b| *b > 8);
                }
                for _ in 0..(rng.next() % 8) {
                    if input.is_empty() {
                        break;
                    }
                    let i = (rng.next() as usize) % input.len();
                    match rng.next() % 4 {
                        0 => input[i] = rng.next() as u8,
                        1 => input.insert(i, rng.next() as u8),
                        2 => {
                            input.remove(i);
                        }
                        _ => {
                            input[i] =
                                [0, 0xff, b'\r', b'\n', b'*', b'$', 0x7f][(rng.next() % 7) as usize]
                        }
                    }
                }
                if matches!(*target, "tcp" | "udp") {
                    input.insert(0, (round / seeds.len() % protocols) as u8);
                }
                run(target, &input);
            }
        }
    }
}

//! Entry points for fuzzing: each takes arbitrary bytes and must never panic, hang or
//! allocate without bound. `fuzz/` calls them from libFuzzer targets (cargo-fuzz, nightly);
//! the unit tests below run each over a few thousand mutated samples so that a stable
//! `cargo test` exercises them too. Built only for tests and with the `fuzzing` feature
//! (which the fuzz crate turns on): nothing here ships in the agent.
//!
//! The protocol targets take every protocol from the registry (the first input byte picks
//! one), so a new protocol is fuzzed without any change here or in `fuzz/`.

use crate::inspect::decode::{Network, decode_frame, decode_transport, linktype};
use crate::inspect::engine::feed_chunk;
use crate::inspect::proto::{self, Common, Cx, Dir, ProtocolConfig, TcpParser};
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
        }
    }
}

const COMMON: Common = Common {
    max_pending: 16,
    transaction_timeout_us: 1_000_000,
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
}

/// One TCP protocol parser: the input is cut into chunks of both directions (each chunk
/// prefixed by a control byte: direction, gap, FIN, chunk length), fed the way the stream
/// layer does, then the connection times out and closes.
pub fn tcp_protocol(p: &mut dyn TcpParser, data: &[u8]) {
    let mut out = Vec::new();
    let budget = Budget::new(1 << 20);
    let mut bufs: [Vec<u8>; 2] = Default::default();
    let mut skips = [0usize; 2];
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
            out.clear();
        }
    }
    let mut cx = Cx {
        now: now + 2_000_000,
        timeout: 1_000_000,
        out: &mut out,
    };
    p.expire(&mut cx);
    p.close(&mut cx);
}

/// The DNS message parser alone.
pub fn dns(data: &[u8]) {
    let _ = proto::dns::parser::parse(data);
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

/// Every target by name, for the fuzz crate and the tests.
pub const TARGETS: &[&str] = &["decode", "dns", "tcp", "udp", "btf", "stream", "afpacket"];

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

/// Runs one target by name.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "decode" => decode(data),
        "dns" => dns(data),
        "tcp" => tcp(data),
        "udp" => udp(data),
        "btf" => btf(data),
        "stream" => tcp_stream(data),
        "afpacket" => afpacket(data),
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
        let msgs: [&[u8]; 8] = [
            b"GET /a?pass=1 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n%1\r\n+a\r\n*1\r\n:1\r\n",
            b"\x0f\x00\x00\x00\x03SELECT 1 FROM t\x01\x00\x00\x01\x01\x05\x00\x00\x02\xfe\x00\x00\x02\x00",
            b"Q\x00\x00\x00\x0dSELECT 1\x00T\x00\x00\x00\x06\x00\x01D\x00\x00\x00\x04Z\x00\x00\x00\x05I",
            b"\x16\x03\x01\x00\x30\x01\x00\x00\x2c\x03\x03AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\x00\x00\x02\x13\x01\x01\x00",
            b"\x00\x1d\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01",
            b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x08\x00\x45\x00\x00\x1c\x00\x00\x00\x00\x40\x11\x00\x00\x01\x02\x03\x04\x05\x06\x07\x08\x00\x35\x00\x35\x00\x08\x00\x00",
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

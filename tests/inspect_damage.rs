//! Damaged captures made from the good ones in tests/data: starting mid-connection, lost,
//! reordered and cut segments, a truncated file, and random bytes on every configured
//! port. Nothing may crash, the right counters must move, and the good transactions around
//! the damage must still be reported.
//!
//! One test function on purpose: the counters are process-wide, so the scenarios run one
//! after the other and compare counter deltas.

mod inspect_util;

use connbeat::monitor::{METRICS, get};
use inspect_util::*;
use serde_json::Value;
use std::sync::atomic::AtomicU64;

fn delta(c: &AtomicU64, f: impl FnOnce()) -> u64 {
    let before = get(c);
    f();
    get(c) - before
}

fn methods(events: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["method"], e["path"], e["http"]["response"]["code"]
            )
        })
        .collect();
    v.sort();
    v
}

/// Index of the records carrying TCP payload towards `port` (requests) or from it.
fn data_records(p: &Pcap, to_port: Option<u16>) -> Vec<usize> {
    (0..p.records.len())
        .filter(|&i| p.tcp_payload_len(i) > 0 && to_port.is_none_or(|port| p.dst_port(i) == port))
        .collect()
}

/// An Ethernet/IPv4/TCP (or UDP) frame from 10.9.0.1 to 10.9.0.2.
fn frame(udp: bool, sport: u16, dport: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    if udp {
        l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        l4.extend_from_slice(&[0, 0]);
    } else {
        l4.extend_from_slice(&seq.to_be_bytes());
        l4.extend_from_slice(&[0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    }
    l4.extend_from_slice(payload);
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
    f.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[
        0,
        0,
        0,
        0,
        64,
        if udp { 17 } else { 6 },
        0,
        0,
        10,
        9,
        0,
        1,
        10,
        9,
        0,
        2,
    ]);
    f.extend_from_slice(&l4);
    f
}

fn record(ts_sec: u32, data: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    let mut h = vec![0u8; 16];
    h[0..4].copy_from_slice(&ts_sec.to_le_bytes());
    h[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
    h[12..16].copy_from_slice(&(data.len() as u32).to_le_bytes());
    (h, data)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn damaged_captures() {
    let dir = TempDir::new("damage");
    let good = Pcap::read(&data("http.pcap"));
    let (full, _) = inspect(&data("http.pcap"));
    assert!(full.len() >= 8);
    let requests = data_records(&good, Some(18080));
    let responses = data_records(&good, None)
        .into_iter()
        .filter(|&i| good.dst_port(i) != 18080)
        .collect::<Vec<_>>();

    // 1. The agent starts mid-connection: the capture begins after the first request.
    let mut p = good.clone();
    p.records.drain(..=requests[0]);
    let f = dir.0.join("mid.pcap");
    p.write(&f);
    let mut events = Vec::new();
    let unmatched = delta(&METRICS.inspect_unmatched_responses, || {
        events = inspect(&f).0
    });
    assert_eq!(
        unmatched, 1,
        "the response to the unseen request matches nothing"
    );
    assert_eq!(events.len(), full.len() - 1);

    // 2. A lost segment inside the 64 KiB body: a gap, skipped; every transaction survives.
    let start = responses
        .iter()
        .position(|&i| good.tcp_payload_len(i) > 1000)
        .expect("the /big response");
    let big: Vec<usize> = responses[start..start + 3].to_vec();
    let mut p = good.clone();
    p.records.remove(big[1]);
    let f = dir.0.join("lost.pcap");
    p.write(&f);
    let gaps = delta(&METRICS.inspect_tcp_gaps, || events = inspect(&f).0);
    assert!(gaps >= 1);
    assert_eq!(methods(&events), methods(&full));

    // 3. Two segments of the body swapped in sequence order, their times kept in place (as
    //    a lost-and-retransmitted segment looks): reassembled in order, nothing lost.
    let mut p = good.clone();
    p.records.swap(big[1], big[2]);
    let ts1 = p.records[big[1]].0[..8].to_vec();
    let ts2 = p.records[big[2]].0[..8].to_vec();
    p.records[big[1]].0[..8].copy_from_slice(&ts2);
    p.records[big[2]].0[..8].copy_from_slice(&ts1);
    let f = dir.0.join("reordered.pcap");
    p.write(&f);
    let ooo = delta(&METRICS.inspect_tcp_out_of_order, || events = inspect(&f).0);
    assert!(ooo >= 1);
    assert_eq!(methods(&events), methods(&full));
    let by_big = |ev: &[Value]| {
        ev.iter()
            .find(|e| e["path"] == "/big")
            .map(|e| e["bytes_out"].clone())
    };
    assert_eq!(by_big(&events), by_big(&full));

    // 4. Segments cut by the snaplen, and a file cut in the middle of a record.
    let mut p = good.clone();
    let i = big[2];
    p.records[i].1.truncate(100);
    let f = dir.0.join("snaplen.pcap");
    p.write(&f);
    let gaps = delta(&METRICS.inspect_tcp_gaps, || events = inspect(&f).0);
    assert!(gaps >= 1);
    assert_eq!(methods(&events), methods(&full));
    let f = dir.0.join("truncated.pcap");
    good.write(&f);
    let bytes = std::fs::read(&f).unwrap();
    let cut = bytes.len() * 2 / 3;
    std::fs::write(&f, &bytes[..cut]).unwrap();
    let (ev, s) = inspect(&f);
    assert!(
        !ev.is_empty() && ev.len() <= full.len(),
        "{} of {}",
        ev.len(),
        full.len()
    );
    assert!(s.packets < good.records.len() as u64);

    // 5. Random bytes on every configured port, then the good session: no crash, parse
    //    errors counted, the good transactions all there.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut p = Pcap {
        header: good.header.clone(),
        records: Vec::new(),
    };
    let first_ts = u32::from_le_bytes(good.records[0].0[0..4].try_into().unwrap());
    for (k, port) in [18080u16, 15353, 16379, 13306, 15432, 18443]
        .into_iter()
        .enumerate()
    {
        let sport = 40000 + k as u16;
        let mut seq = 1000u32;
        p.records.push(record(
            first_ts - 100,
            frame(false, sport, port, seq - 1, 0x02, b""),
        ));
        for _ in 0..50 {
            let n = 1 + (rng.next() % 1400) as usize;
            p.records.push(record(
                first_ts - 99,
                frame(false, sport, port, seq, 0x18, &rng.bytes(n)),
            ));
            p.records.push(record(
                first_ts - 99,
                frame(false, port, sport, seq, 0x18, &rng.bytes(n)),
            ));
            seq = seq.wrapping_add(n as u32);
        }
        p.records.push(record(
            first_ts - 98,
            frame(true, sport, 15353, 0, 0, &rng.bytes(100)),
        ));
    }
    p.records.extend(good.records.iter().cloned());
    let f = dir.0.join("random.pcap");
    p.write(&f);
    let errors = delta(&METRICS.inspect_parse_errors, || events = inspect(&f).0);
    assert!(errors >= 6, "every protocol rejected the noise ({errors})");
    let http: Vec<Value> = events
        .iter()
        .filter(|e| e["type"] == "http" && e["client_ip"] == "127.0.0.1")
        .cloned()
        .collect();
    assert_eq!(methods(&http), methods(&full));

    // 6. Fully random frames on every link type: decode errors, never a crash.
    let mut p = Pcap {
        header: good.header.clone(),
        records: Vec::new(),
    };
    for _ in 0..2000 {
        let n = (rng.next() % 200) as usize;
        let mut f = frame(false, 1, 18080, 0, 0x18, b"");
        f.truncate(n.min(f.len()));
        f.extend(rng.bytes(n));
        p.records.push(record(first_ts, f));
    }
    let f = dir.0.join("noise.pcap");
    p.write(&f);
    let errs = delta(&METRICS.inspect_decode_errors, || {
        let _ = inspect(&f);
    });
    assert!(errs > 0);

    icmp_dhcp_and_flows(&dir, &mut rng);
}

/// ICMP, DHCPv4 and flows on and the given capture.
fn inspect_icmp_dhcp(path: &std::path::Path) -> Vec<Value> {
    let c = connbeat::config::from_yaml_str(
        "output.console: {enabled: true}\nconnbeat.protocols: [{type: icmp}, {type: dhcpv4, ports: [67, 68]}]\n\
         connbeat.flows: {timeout: 2s, period: -1s, max_flows: 50}\n",
        &[],
        &|_| None,
    )
    .unwrap();
    let mut events = Vec::new();
    let mut sink = |e: connbeat::event::Event| events.push(e.to_value());
    connbeat::inspect::run_offline_with(&c, path, &mut sink, None).expect("offline run");
    events
}

/// 7. Cut and random ICMP messages and DHCP datagrams around good ones, and more flows
///    than `max_flows`: decode and parse errors and dropped flows are counted, the good
///    echo and DHCP exchange are still reported.
fn icmp_dhcp_and_flows(dir: &TempDir, rng: &mut Rng) {
    let suite =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/packetbeat-suite/pcaps");
    let ping = Pcap::read(&suite.join("icmp/icmp4_ping.pcap"));
    let dhcp = Pcap::read(&suite.join("dhcp.pcap"));
    let first_ts = u32::from_le_bytes(ping.records[0].0[0..4].try_into().unwrap());
    let mut p = Pcap {
        header: ping.header.clone(),
        records: Vec::new(),
    };
    // ICMP frames cut inside their 8-byte header, and random ICMP messages.
    let icmp = |body: &[u8]| {
        let mut f = frame(true, 1, 2, 0, 0, b"");
        f.truncate(34);
        f[23] = 1;
        f[16..18].copy_from_slice(&((20 + body.len()) as u16).to_be_bytes());
        f.extend_from_slice(body);
        f
    };
    for n in 0..8 {
        p.records
            .push(record(first_ts - 10, icmp(&[8, 0, 0, 0, 0, 9, 0, 1][..n])));
    }
    for _ in 0..200 {
        let n = (rng.next() % 64) as usize;
        p.records.push(record(first_ts - 9, icmp(&rng.bytes(n))));
    }
    // Random bytes and cut messages on the DHCP ports.
    let offer = dhcp.records[1].1[42..].to_vec();
    for _ in 0..20 {
        p.records.push(record(
            first_ts - 8,
            frame(true, 68, 67, 0, 0, &rng.bytes(300)),
        ));
        let cut = (rng.next() as usize) % offer.len();
        p.records.push(record(
            first_ts - 8,
            frame(true, 67, 68, 0, 0, &offer[..cut]),
        ));
    }
    // 100 more UDP flows than max_flows, each one packet, within one second.
    for port in 0..150u16 {
        p.records.push(record(
            first_ts - 7,
            frame(true, 20000 + port, 9, 0, 0, b"flow"),
        ));
    }
    p.records.extend(ping.records.iter().cloned());
    p.records.extend(dhcp.records.iter().cloned());
    let f = dir.0.join("icmp-dhcp.pcap");
    p.write(&f);
    let events;
    let (decode, parse, dropped) = {
        let d0 = connbeat::monitor::get(&METRICS.inspect_decode_errors);
        let p0 = connbeat::monitor::get(&METRICS.inspect_parse_errors);
        let f0 = connbeat::monitor::get(&METRICS.inspect_flows_dropped);
        events = inspect_icmp_dhcp(&f);
        (
            connbeat::monitor::get(&METRICS.inspect_decode_errors) - d0,
            connbeat::monitor::get(&METRICS.inspect_parse_errors) - p0,
            connbeat::monitor::get(&METRICS.inspect_flows_dropped) - f0,
        )
    };
    assert!(
        decode >= 8,
        "the cut ICMP headers are decode errors ({decode})"
    );
    assert!(
        parse >= 20,
        "the random DHCP datagrams are parse errors ({parse})"
    );
    assert!(
        dropped >= 100,
        "flows beyond max_flows are counted ({dropped})"
    );
    let echo: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "icmp" && e["client_ip"] == "10.0.0.1")
        .collect();
    assert_eq!(echo.len(), 1, "{echo:#?}");
    assert_eq!(echo[0]["icmp"]["response"]["message"], "EchoReply");
    assert_eq!(echo[0]["status"], "OK");
    // Classic events: one per exchange. The cut offers that end at an option boundary are
    // whole messages, but they answer no request seen (they come before the discover).
    let dhcp: Vec<[&Value; 3]> = events
        .iter()
        .filter(|e| e["type"] == "dhcpv4")
        .map(|e| {
            let d = &e["dhcpv4"];
            [
                &e["method"],
                &d["request"]["option"]["message_type"],
                &d["response"]["option"]["message_type"],
            ]
        })
        .collect();
    assert_eq!(
        dhcp,
        [
            ["DISCOVER", "discover", "offer"],
            ["REQUEST", "request", "ack"]
        ]
    );
    // 150 one-packet UDP flows, the ICMP and two DHCP-port flows of the damage, and the
    // echo and two DHCP flows of the good captures: each is published or was dropped.
    let flows = events.iter().filter(|e| e["type"] == "flow").count() as u64;
    assert_eq!(
        flows + dropped,
        156,
        "{flows} flows published, {dropped} dropped"
    );
}

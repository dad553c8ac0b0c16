//! Damaged memcache and MongoDB captures made from the recorded ones in tests/data:
//! starting mid-connection, a lost segment, reordered segments, a cut file, and random
//! bytes on both protocols' ports (TCP and UDP). Nothing may crash, the right counters
//! must move, and the good transactions around the damage must still be reported.
//!
//! One test function: the counters are process-wide, so the scenarios run in turn.

mod inspect_util;

use connbeat::monitor::{METRICS, get};
use inspect_util::synth::{ACK, PSH, Rng, SYN, tcp_frame};
use inspect_util::*;
use serde_json::Value;
use std::net::SocketAddrV4;
use std::sync::atomic::AtomicU64;

fn delta(c: &AtomicU64, f: impl FnOnce()) -> u64 {
    let before = get(c);
    f();
    get(c) - before
}

/// What identifies a transaction: its method (MongoDB) or command (memcache), status.
fn ops(events: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = events
        .iter()
        .map(|e| {
            let m = e["method"]
                .as_str()
                .or(e["memcache"]["request"]["command"].as_str())
                .unwrap_or("?");
            format!("{} {m} {}", e["type"], e["status"])
        })
        .collect();
    v.sort();
    v
}

fn data_records(p: &Pcap, to_port: u16) -> Vec<usize> {
    (0..p.records.len())
        .filter(|&i| p.tcp_payload_len(i) > 0 && p.dst_port(i) == to_port)
        .collect()
}

fn udp_frame(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let mut f = tcp_frame(src, dst, 0, 0, 0, b"");
    f.truncate(14 + 20);
    f[23] = 17;
    f[16..18].copy_from_slice(&((28 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&src.port().to_be_bytes());
    f.extend_from_slice(&dst.port().to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

fn record(ts: &[u8], data: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    let mut h = vec![0u8; 16];
    h[..8].copy_from_slice(ts);
    (h, data)
}

#[test]
fn damaged_memcache_and_mongodb_captures() {
    let dir = TempDir::new("damage-cache-db");
    for (file, port) in [("mongodb-plain.pcap", 27117u16), ("memcache.pcap", 11311)] {
        let good = Pcap::read(&data(file));
        let (full, _) = inspect(&data(file));
        assert!(full.len() >= 8, "{file}");
        let requests = data_records(&good, port);

        // 1. The capture begins after the first request. MongoDB pairs by id: only that
        //    transaction is lost, its response counted as unmatched. Memcache pairs text
        //    commands in order, so only the count can be held.
        let mut p = good.clone();
        p.records.remove(requests[0]);
        let f = dir.0.join(format!("mid-{file}"));
        p.write(&f);
        let mut events = Vec::new();
        let unmatched = delta(&METRICS.inspect_unmatched_responses, || {
            events = inspect(&f).0
        });
        if port == 27117 {
            assert_eq!(unmatched, 1, "{file}");
            assert_eq!(events.len(), full.len() - 1, "{file}");
        } else {
            assert!(events.len() <= full.len(), "{file}");
        }

        // 2. A lost request segment in the middle: a gap; the transactions before it are
        //    all reported, and nothing crashes.
        let mut p = good.clone();
        let mid = requests[requests.len() / 2];
        p.records.remove(mid);
        let f = dir.0.join(format!("lost-{file}"));
        p.write(&f);
        let gaps = delta(&METRICS.inspect_tcp_gaps, || events = inspect(&f).0);
        assert!(gaps >= 1, "{file}");
        assert!(events.len() >= full.len() / 3, "{file}: {}", events.len());

        // 3. Two requests of one connection swapped in sequence order, times kept in
        //    place: reassembled in order, the same transactions.
        let pair = requests
            .windows(2)
            .find(|w| {
                let same_conn = good.records[w[0]].1[34..36] == good.records[w[1]].1[34..36];
                same_conn && w[1] == w[0] + 2
            })
            .expect("two requests of one connection");
        let mut p = good.clone();
        p.records.swap(pair[0], pair[1]);
        let t0 = p.records[pair[0]].0[..8].to_vec();
        let t1 = p.records[pair[1]].0[..8].to_vec();
        p.records[pair[0]].0[..8].copy_from_slice(&t1);
        p.records[pair[1]].0[..8].copy_from_slice(&t0);
        let f = dir.0.join(format!("reordered-{file}"));
        p.write(&f);
        events = inspect(&f).0;
        assert_eq!(ops(&events), ops(&full), "{file}");

        // 4. The file cut in the middle of a record.
        let f = dir.0.join(format!("cut-{file}"));
        good.write(&f);
        let bytes = std::fs::read(&f).unwrap();
        std::fs::write(&f, &bytes[..bytes.len() * 2 / 3]).unwrap();
        let (ev, _) = inspect(&f);
        assert!(!ev.is_empty() && ev.len() <= full.len(), "{file}");

        // 5. Random bytes both ways on the port (TCP, and UDP for memcache), then the good
        //    capture: parse errors counted, the good transactions all there.
        let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ u64::from(port));
        let ts = good.records[0].0[..8].to_vec();
        let cli: SocketAddrV4 = "10.9.0.1:40001".parse().unwrap();
        let srv = SocketAddrV4::new("10.9.0.2".parse().unwrap(), port);
        let mut p = Pcap {
            header: good.header.clone(),
            records: vec![record(&ts, tcp_frame(cli, srv, 999, 0, SYN, b""))],
        };
        let (mut c, mut s) = (1000u32, 5000u32);
        for _ in 0..50 {
            let n = 1 + (rng.next() % 1400) as usize;
            let a: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            let b: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            p.records
                .push(record(&ts, tcp_frame(cli, srv, c, s, PSH | ACK, &a)));
            p.records
                .push(record(&ts, tcp_frame(srv, cli, s, c, PSH | ACK, &b)));
            c = c.wrapping_add(n as u32);
            s = s.wrapping_add(n as u32);
            p.records.push(record(&ts, udp_frame(cli, srv, &a)));
            p.records.push(record(&ts, udp_frame(srv, cli, &b)));
        }
        p.records.extend(good.records.iter().cloned());
        let f = dir.0.join(format!("random-{file}"));
        p.write(&f);
        let errors = delta(&METRICS.inspect_parse_errors, || events = inspect(&f).0);
        assert!(errors >= 1, "{file}: the noise was rejected");
        let good_ones: Vec<Value> = events
            .into_iter()
            .filter(|e| e["client_ip"] != "10.9.0.1")
            .collect();
        assert_eq!(ops(&good_ones), ops(&full), "{file}");
    }
}

//! Damaged captures of SMTP (tests/data/smtp.pcap), SIP and NFS (Packetbeat's captures in
//! tests/data/packetbeat-suite): starting mid-session, lost and cut segments, truncated
//! datagrams, and random bytes on the protocols' ports. Nothing may crash, the right
//! counters must move, and the good transactions around the damage must still be there.
//!
//! One test function on purpose: the counters are process-wide, so the scenarios run one
//! after the other and compare counter deltas.

mod inspect_util;

use connbeat::config::from_yaml_str;
use connbeat::monitor::{METRICS, get};
use inspect_util::*;
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::AtomicU64;

const YAML: &str = r#"
output.console: {enabled: true}
connbeat.protocols:
  - {type: smtp, ports: [10025]}
  - {type: sip, ports: [5060]}
  - {type: nfs, ports: [2049]}
"#;

fn run(path: &Path) -> Vec<Value> {
    let config = from_yaml_str(YAML, &[], &|_| None).unwrap();
    let mut events = Vec::new();
    let mut sink = |e: connbeat::event::Event| events.push(e.to_value());
    connbeat::inspect::run_offline_with(&config, path, &mut sink, None).expect("offline run");
    events
}

fn delta(c: &AtomicU64, f: impl FnOnce()) -> u64 {
    let before = get(c);
    f();
    get(c) - before
}

fn suite(name: &str) -> std::path::PathBuf {
    data("packetbeat-suite/pcaps").join(name)
}

/// `type smtp.command smtp.from smtp.to status` of each event, sorted.
fn summary(events: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = events
        .iter()
        .map(|e| {
            let p = &e[e["type"].as_str().unwrap()];
            format!(
                "{} {} {} {} {}",
                e["type"], p["command"], p["from"], p["to"], e["status"]
            )
        })
        .collect();
    v.sort();
    v
}

/// Records carrying UDP payload to or from port 5060 (Ethernet / IPv4).
fn udp_records(p: &Pcap) -> Vec<usize> {
    (0..p.records.len())
        .filter(|&i| {
            let d = &p.records[i].1;
            d.len() > 42 && d[12..14] == [8, 0] && d[23] == 17
        })
        .collect()
}

#[test]
fn damaged_captures() {
    let dir = TempDir::new("damage-nss");

    // SMTP. The whole capture: 8 transactions (see tests/inspect_offline.rs).
    let good = Pcap::read(&data("smtp.pcap"));
    let full = run(&data("smtp.pcap"));
    assert_eq!(full.len(), 8, "{full:#?}");
    let data_recs: Vec<usize> = (0..good.records.len())
        .filter(|&i| good.tcp_payload_len(i) > 0)
        .collect();
    let payload = |i: usize| {
        let off = good.tcp_payload_offset(i);
        String::from_utf8_lossy(&good.records[i].1[off..]).into_owned()
    };
    // 1. The capture starts after the first session's EHLO reply: its messages are
    //    still seen (the replies pair with the commands that follow).
    let after_ehlo = data_recs
        .iter()
        .position(|&i| payload(i).starts_with("250-mx.test"))
        .expect("the EHLO reply");
    let mut p = good.clone();
    p.records.drain(..=data_recs[after_ehlo]);
    let f = dir.0.join("smtp-mid.pcap");
    p.write(&f);
    let events = run(&f);
    assert_eq!(summary(&events), summary(&full));

    // 2. The first message's body segment lost, never retransmitted: its reply ends the
    //    body, so that message is still reported. The stream layer holds the client's
    //    later bytes until it gives the hole up, while the server's replies go on: the
    //    rest of that session pairs badly (counted as unmatched replies), the other
    //    sessions are untouched.
    let body = data_recs
        .iter()
        .copied()
        .find(|&i| payload(i).starts_with("Subject: one"))
        .expect("the first body");
    let mut p = good.clone();
    p.records.remove(body);
    let f = dir.0.join("smtp-lost.pcap");
    p.write(&f);
    let mut events = Vec::new();
    let gaps = delta(&METRICS.inspect_tcp_gaps, || events = run(&f));
    assert!(gaps >= 1);
    let have = summary(&events);
    for want in [
        r#""smtp" "DATA" "a@x.test" ["b@x.test"] "OK""#,
        r#""smtp" "DATA" "s@x.test" ["v@x.test","w@x.test"] "OK""#,
        r#""smtp" "STARTTLS" null null "OK""#,
    ] {
        assert!(have.iter().any(|h| h == want), "{want} not in {have:#?}");
    }

    // 3. A reply lost, never retransmitted: that session pairs badly after it (as in 2),
    //    nothing crashes, the other sessions are untouched.
    let refused = data_recs
        .iter()
        .copied()
        .find(|&i| payload(i).starts_with("550"))
        .expect("a 550 reply");
    let mut p = good.clone();
    p.records.remove(refused);
    let f = dir.0.join("smtp-lost-reply.pcap");
    p.write(&f);
    let events = run(&f);
    let swaks = |ev: &[Value]| {
        ev.iter()
            .filter(|e| e["smtp"]["from"] == "s@x.test")
            .count()
    };
    assert_eq!(swaks(&events), 1, "the other sessions are untouched");
    assert!(events.iter().any(|e| e["smtp"]["command"] == "STARTTLS"));

    // 4. SIP over UDP: a datagram whose body is shorter than its Content-Length (123
    //    made 923) is a parse error. The capture is two calls, six exchanges (INVITE with
    //    100 and 200, ACK, BYE with 200, each call); with the first INVITE lost, its 100
    //    and 200 answer nothing seen (counted), the five other exchanges are events.
    let sip = Pcap::read(&suite("sip.pcap"));
    let udp = udp_records(&sip);
    assert_eq!(udp.len(), 12);
    let mut p = sip.clone();
    let frame = &mut p.records[udp[0]].1;
    let at = frame
        .windows(21)
        .position(|w| w == b"Content-Length:   123")
        .expect("the INVITE's Content-Length");
    frame[at + 18] = b'9';
    let f = dir.0.join("sip-cut.pcap");
    p.write(&f);
    let mut events = Vec::new();
    let mut errors = 0;
    let unmatched = delta(&METRICS.inspect_unmatched_responses, || {
        errors = delta(&METRICS.inspect_parse_errors, || events = run(&f))
    });
    assert_eq!(errors, 1);
    assert_eq!(unmatched, 2, "the lost INVITE's 100 and 200");
    let methods: Vec<&str> = events.iter().filter_map(|e| e["method"].as_str()).collect();
    assert_eq!(
        methods,
        ["ACK", "BYE", "INVITE", "ACK", "BYE"],
        "{events:#?}"
    );
    assert!(events.iter().all(|e| e["status"] == "OK"));
    assert_eq!(events[2]["sip"]["provisional"], serde_json::json!([100]));
    assert_eq!(events[2]["sip"]["response"]["code"], 200);

    // 5. SIP over TCP with a segment lost: the messages before and after the hole that
    //    start a segment are still read and paired.
    let tcp = Pcap::read(&suite("sip_tcp.pcap"));
    let segs: Vec<usize> = (0..tcp.records.len())
        .filter(|&i| tcp.tcp_payload_len(i) > 0)
        .collect();
    let mut p = tcp.clone();
    p.records.remove(segs[2]);
    let f = dir.0.join("sip-tcp-lost.pcap");
    p.write(&f);
    let mut events = Vec::new();
    let mut gaps = 0;
    let unmatched = delta(&METRICS.inspect_unmatched_responses, || {
        gaps = delta(&METRICS.inspect_tcp_gaps, || events = run(&f))
    });
    assert!(gaps >= 1);
    // 7 messages, the third lost (the 180). The server's later bytes are held until the
    // hole is given up, while the client's go on: the ACK is published first, the INVITE
    // still gets its 200, but the BYE's 200 comes out of the held bytes before the BYE
    // itself (counted as unmatched), so the BYE is published unanswered.
    let methods: Vec<&str> = events.iter().filter_map(|e| e["method"].as_str()).collect();
    assert_eq!(methods, ["ACK", "INVITE", "BYE"], "{events:#?}");
    assert_eq!(events[1]["status"], "OK");
    assert_eq!(events[1]["sip"]["provisional"], serde_json::json!([100]));
    assert_eq!(events[1]["sip"]["response"]["code"], 200);
    assert_eq!(events[2]["status"], "Error");
    assert_eq!(unmatched, 1);

    // 6. NFS: the reply lost: the call is published as failed when the connection ends.
    let nfs = Pcap::read(&suite("nfs_v4.pcap"));
    let nfs_full = run(&suite("nfs_v4.pcap"));
    assert_eq!(nfs_full.len(), 1);
    let replies: Vec<usize> = (0..nfs.records.len())
        .filter(|&i| nfs.tcp_payload_len(i) > 0 && nfs.dst_port(i) != 2049)
        .collect();
    let mut p = nfs.clone();
    for &i in replies.iter().rev() {
        p.records.remove(i);
    }
    let f = dir.0.join("nfs-no-reply.pcap");
    p.write(&f);
    let events = run(&f);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["status"], "Error");
    assert_eq!(events[0]["nfs"]["opcode"], "READDIR");

    // 7. Random bytes on every port, then the good captures: parse errors counted, the
    //    good transactions all there.
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut noise = synth::Capture::default();
    let t0 = 1_000_000_000u64;
    for (k, port) in [10025u16, 5060, 2049].into_iter().enumerate() {
        let c: std::net::SocketAddrV4 = format!("10.9.0.1:{}", 40000 + k).parse().unwrap();
        let s: std::net::SocketAddrV4 = format!("10.9.0.2:{port}").parse().unwrap();
        let mut seq = [1000u32, 9000u32];
        noise
            .records
            .push((t0, synth::tcp_frame(c, s, seq[0] - 1, 0, synth::SYN, b"")));
        for _ in 0..40 {
            for (d, (a, b)) in [(0, (c, s)), (1, (s, c))] {
                let n = 1 + (next() % 1000) as usize;
                let bytes: Vec<u8> = (0..n).map(|_| next() as u8).collect();
                let f = synth::tcp_frame(a, b, seq[d], seq[1 - d], synth::ACK | synth::PSH, &bytes);
                noise.records.push((t0 + 1, f));
                seq[d] = seq[d].wrapping_add(n as u32);
            }
        }
    }
    let f = dir.0.join("noise.pcap");
    noise.write(&f);
    let errors = delta(&METRICS.inspect_parse_errors, || {
        let _ = run(&f);
    });
    assert!(errors >= 3, "every protocol rejected the noise ({errors})");
    assert_eq!(summary(&run(&data("smtp.pcap"))), summary(&full));
}

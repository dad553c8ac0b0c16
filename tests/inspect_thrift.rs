//! Thrift offline: the recorded captures of Packetbeat's suite (binary, socket and framed)
//! compared with tshark's dissection of the same files, then damaged (cut, reordered,
//! noise on the port): never a crash, errors counted, the undamaged calls all there.

mod inspect_util;

use connbeat::config::from_yaml_str;
use connbeat::monitor::METRICS;
use inspect_util::synth::{Capture, Conn, Rng};
use inspect_util::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

fn suite(name: &str) -> PathBuf {
    data("packetbeat-suite/pcaps").join(name)
}

fn events_of(path: &Path, transport: &str) -> Vec<Value> {
    let yaml = format!(
        "output.console: {{enabled: true}}\nconnbeat.protocols:\n  - {{type: thrift, ports: [9090], transport_type: {transport}}}\n"
    );
    let config = from_yaml_str(&yaml, &[], &|_| None).unwrap();
    let mut events = Vec::new();
    let mut sink = |e: connbeat::event::Event| events.push(e.to_value());
    connbeat::inspect::run_offline_with(&config, path, &mut sink, None).expect("offline run");
    events.retain(|e| e["type"] == "thrift");
    events
}

fn methods(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["method"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// tshark's calls (CALL and ONEWAY messages) in capture order.
fn tshark_calls(path: &Path) -> Vec<String> {
    let mut cmd = std::process::Command::new("tshark");
    cmd.arg("-r").arg(path).args([
        "-n",
        "-d",
        "tcp.port==9090,thrift",
        "-Y",
        "thrift.mtype == 1 || thrift.mtype == 4",
        "-T",
        "fields",
        "-e",
        "thrift.method",
    ]);
    let out = cmd.output().expect("tshark");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .flat_map(|l| l.split(',').map(str::to_string).collect::<Vec<_>>())
        .collect()
}

#[test]
fn calls_match_tshark() {
    if !have_tshark("calls_match_tshark") {
        return;
    }
    for (pcap, transport) in [
        ("thrift_tutorial.pcap", "socket"),
        ("thrift_integration.pcap", "socket"),
        ("ipv6_thrift.pcap", "framed"),
    ] {
        let path = suite(pcap);
        let ours = events_of(&path, transport);
        let theirs = tshark_calls(&path);
        assert!(theirs.len() >= 17, "{pcap}: {theirs:?}");
        assert_eq!(methods(&ours), theirs, "{pcap}");
        // The transport is recognised from the bytes whatever transport_type says.
        let other = if transport == "socket" {
            "framed"
        } else {
            "socket"
        };
        assert_eq!(
            methods(&events_of(&path, other)),
            theirs,
            "{pcap} as {other}"
        );
    }
}

#[test]
fn damaged_thrift_captures() {
    let dir = TempDir::new("thrift-damage");
    let good = Pcap::read(&suite("thrift_integration.pcap"));
    let full = events_of(&suite("thrift_integration.pcap"), "socket");
    assert_eq!(full.len(), 26);
    let f = dir.0.join("d.pcap");

    // Cut two thirds in: fewer calls, the first ones intact.
    good.write(&f);
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let cut = events_of(&f, "socket");
    assert!(!cut.is_empty() && cut.len() < full.len());
    assert_eq!(methods(&cut)[..5], methods(&full)[..5]);

    // A reply segment lost: that call is published with the gap noted, the others paired
    // (in another order: the stream layer holds the replies after the hole a while).
    let replies: Vec<usize> = (0..good.records.len())
        .filter(|&i| {
            null_link_tcp(&good.records[i].1).is_some_and(|(dport, len)| dport != 9090 && len > 0)
        })
        .collect();
    let mut lost = good.clone();
    lost.records.remove(replies[3]);
    lost.write(&f);
    let ev = events_of(&f, "socket");
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(sorted(methods(&ev)), sorted(methods(&full)));
    assert_eq!(
        ev.iter().filter(|e| e["status"] == "Error").count(),
        1 + errors(&full)
    );

    // Noise on the port before the real conversation.
    let mut noise = Capture::default();
    let mut rng = Rng(0xfeed_f00d_1234_5678);
    let mut c = Conn::new(
        "10.1.0.1:5000".parse().unwrap(),
        "10.1.0.2:9090".parse().unwrap(),
        7,
        9,
    );
    for i in 0..200u64 {
        let b: Vec<u8> = (0..(1 + rng.next() % 600))
            .map(|_| rng.next() as u8)
            .collect();
        c.data(&mut noise, 1_000_000_000_000 + i, i % 2 == 0, &b);
    }
    noise.write(&f);
    let before = METRICS.inspect_parse_errors.load(Ordering::Relaxed);
    let ev = events_of(&f, "socket");
    assert!(METRICS.inspect_parse_errors.load(Ordering::Relaxed) > before);
    assert!(ev.len() < 5, "noise is not calls: {ev:?}");
}

/// Destination port and payload length of a TCP/IPv4 record on the null (BSD loopback)
/// link type of these captures.
fn null_link_tcp(d: &[u8]) -> Option<(u16, usize)> {
    let ip = d.get(4..)?;
    if ip.len() < 40 || ip[0] >> 4 != 4 || ip[9] != 6 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let tcp = ip.get(ihl..)?;
    let off = usize::from(tcp[12] >> 4) * 4;
    Some((
        u16::from_be_bytes([tcp[2], tcp[3]]),
        total.saturating_sub(ihl + off),
    ))
}

fn errors(events: &[Value]) -> usize {
    events.iter().filter(|e| e["status"] == "Error").count()
}

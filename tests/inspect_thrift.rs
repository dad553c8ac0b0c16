//! Thrift offline: the recorded captures of Packetbeat's suite (binary protocol over the
//! socket and framed transports) compared with tshark's dissection of the same files. Then
//! three captures are damaged: the recorded binary one over the socket transport, the
//! recorded binary one over the framed transport, and a generated compact-protocol one over
//! the socket transport. Each is cut two thirds in, loses a reply segment, has two segments
//! of one direction swapped (within the sort window, and delayed beyond it so that the
//! stream's sequence order must repair them), and gets noise on the port before the good
//! conversation. Never a crash; what was lost or out of order counted (gaps, parse errors,
//! out-of-order and unsorted segments); the undamaged calls all there, paired as before.

mod inspect_util;

use connbeat::config::from_yaml_str;
use connbeat::inspect::OfflineSummary;
use connbeat::monitor::{METRICS, get};
use inspect_util::synth::{Capture, Conn, Rng};
use inspect_util::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// The counters are process-wide: every test of this file holds this lock while it runs
/// captures, so that the damage test's counter deltas are its own.
static COUNTERS: Mutex<()> = Mutex::new(());

fn counters() -> MutexGuard<'static, ()> {
    COUNTERS.lock().unwrap_or_else(|e| e.into_inner())
}

fn suite(name: &str) -> PathBuf {
    data("packetbeat-suite/pcaps").join(name)
}

fn config(transport: &str, protocol: &str) -> connbeat::config::Config {
    let yaml = format!(
        "output.console: {{enabled: true}}\nconnbeat.protocols:\n  - {{type: thrift, ports: [9090], transport_type: {transport}, protocol_type: {protocol}}}\n"
    );
    from_yaml_str(&yaml, &[], &|_| None).unwrap()
}

/// The Thrift transactions of a capture, and the run's summary.
fn run(path: &Path, transport: &str, protocol: &str) -> (Vec<Value>, OfflineSummary) {
    let mut events = Vec::new();
    let mut sink = |e: connbeat::event::Event| events.push(e.to_value());
    let s =
        connbeat::inspect::run_offline_with(&config(transport, protocol), path, &mut sink, None)
            .expect("offline run");
    events.retain(|e| e["type"] == "thrift");
    (events, s)
}

fn events_of(path: &Path, transport: &str) -> Vec<Value> {
    run(path, transport, "binary").0
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
    let _counters = counters();
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

/// What a transaction says of its call: method, status, result or exception, and notes.
fn calls(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {} {}",
                e["method"],
                e["status"],
                e["thrift"]["return_value"],
                e["thrift"]["exceptions"],
                e["notes"]
            )
        })
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn errors(events: &[Value]) -> usize {
    events.iter().filter(|e| e["status"] == "Error").count()
}

/// Source port, destination port and payload length of a TCP record: IPv4 on the null
/// (BSD loopback) link, or IPv4 or IPv6 (no extension headers) on Ethernet.
fn tcp_of(p: &Pcap, i: usize) -> Option<(u16, u16, usize)> {
    let link = u32::from_le_bytes(p.header[20..24].try_into().unwrap());
    let d = &p.records[i].1;
    let ip = match link {
        0 => d.get(4..)?,
        1 => d.get(14..)?,
        _ => return None,
    };
    let (tcp, len) = match ip.first()? >> 4 {
        4 if ip.get(9) == Some(&6) => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            (ip.get(ihl..)?, total.checked_sub(ihl)?)
        }
        6 if ip.get(6) == Some(&6) => (
            ip.get(40..)?,
            usize::from(u16::from_be_bytes([ip[4], ip[5]])),
        ),
        _ => return None,
    };
    let off = usize::from(tcp.get(12)? >> 4) * 4;
    Some((
        u16::from_be_bytes([tcp[0], tcp[1]]),
        u16::from_be_bytes([tcp[2], tcp[3]]),
        len.checked_sub(off)?,
    ))
}

/// The records carrying Thrift messages: (index, client port, towards the server).
fn messages(p: &Pcap) -> Vec<(usize, u16, bool)> {
    (0..p.records.len())
        .filter_map(|i| match tcp_of(p, i)? {
            (sport, 9090, len) if len > 0 => Some((i, sport, true)),
            (9090, dport, len) if len > 0 => Some((i, dport, false)),
            _ => None,
        })
        .collect()
}

/// True when record `i` holds the name `method` (a message's header does).
fn carries(p: &Pcap, i: usize, method: &str) -> bool {
    p.records[i]
        .1
        .windows(method.len())
        .any(|w| w == method.as_bytes())
}

/// Capture time of a record, in microseconds.
fn ts(p: &Pcap, i: usize) -> u64 {
    let h = &p.records[i].0;
    let sec = u32::from_le_bytes(h[0..4].try_into().unwrap());
    let usec = u32::from_le_bytes(h[4..8].try_into().unwrap());
    u64::from(sec) * 1_000_000 + u64::from(usec)
}

fn set_ts(p: &mut Pcap, i: usize, us: u64) {
    let h = &mut p.records[i].0;
    h[0..4].copy_from_slice(&((us / 1_000_000) as u32).to_le_bytes());
    h[4..8].copy_from_slice(&((us % 1_000_000) as u32).to_le_bytes());
}

/// Generated frames (Ethernet, IPv4) as records of `p`'s link type.
fn records_like(p: &Pcap, cap: &Capture) -> Vec<(Vec<u8>, Vec<u8>)> {
    let null_link = p.header[20..24] == [0, 0, 0, 0];
    cap.records
        .iter()
        .map(|(t, frame)| {
            let d = if null_link {
                // AF_INET in the loopback header, in the little-endian host's order.
                [&[2u8, 0, 0, 0][..], &frame[14..]].concat()
            } else {
                frame.clone()
            };
            let mut h = vec![0u8; 16];
            h[0..4].copy_from_slice(&((t / 1_000_000) as u32).to_le_bytes());
            h[4..8].copy_from_slice(&((t % 1_000_000) as u32).to_le_bytes());
            h[12..16].copy_from_slice(&(d.len() as u32).to_le_bytes());
            (h, d)
        })
        .collect()
}

/// A compact-protocol message: header, the struct's field bytes, STOP.
fn compact(mtype: u8, method: &str, seqid: u8, fields: &[u8]) -> Vec<u8> {
    let mut m = vec![0x82, (mtype << 5) | 1, seqid, method.len() as u8];
    m.extend_from_slice(method.as_bytes());
    m.extend_from_slice(fields);
    m.push(0);
    m
}

/// The Calc service's conversation (tests/data/thrift/calc.thrift, the calls of
/// tests/services/thrift-client.py) in the compact protocol over the socket transport, one
/// message per segment: the oneway `note` and the `add` after it go back to back. The
/// messages are byte for byte what Apache Thrift's TCompactProtocol writes for them.
fn compact_capture(path: &Path) -> Pcap {
    const CALL: u8 = 1;
    const REPLY: u8 = 2;
    const ONEWAY: u8 = 4;
    // Compact field headers: delta 1 and type i32 (0x15), binary (0x18), struct (0x1c);
    // field 0 (the result) is written long form: type, then its zigzag id 0.
    let why = b"division by zero";
    let mut oops = vec![0x1c, 0x15, 14, 0x18, why.len() as u8];
    oops.extend_from_slice(why);
    oops.push(0);
    let conversation: Vec<(Vec<u8>, Option<Vec<u8>>)> = vec![
        (
            compact(CALL, "ping", 1, &[]),
            Some(compact(REPLY, "ping", 1, &[])),
        ),
        (
            compact(CALL, "add", 2, &[0x15, 4, 0x15, 6]),
            Some(compact(REPLY, "add", 2, &[0x05, 0, 10])),
        ),
        (
            compact(CALL, "echo", 3, b"\x18\x06h\xc3\xa9llo"),
            Some(compact(REPLY, "echo", 3, b"\x08\x00\x06h\xc3\xa9llo")),
        ),
        (
            compact(CALL, "points", 4, &[0x15, 4]),
            Some(compact(
                REPLY,
                "points",
                4,
                &[0x09, 0, 0x2c, 0x15, 2, 0x15, 4, 0, 0x15, 6, 0x15, 8, 0],
            )),
        ),
        (
            compact(CALL, "divide", 5, &[0x15, 2, 0x15, 0]),
            Some(compact(REPLY, "divide", 5, &oops)),
        ),
        (compact(ONEWAY, "note", 6, b"\x18\x03bye"), None),
        (
            compact(CALL, "add", 7, &[0x15, 80, 0x15, 4]),
            Some(compact(REPLY, "add", 7, &[0x05, 0, 84])),
        ),
    ];
    let mut cap = Capture::default();
    let mut c = Conn::new(
        "10.0.0.1:41000".parse().unwrap(),
        "10.0.0.2:9090".parse().unwrap(),
        1000,
        5000,
    );
    let mut t = 1_700_000_000_000_000u64;
    c.syn(&mut cap, t, b"");
    c.syn_ack(&mut cap, t + 50, 0);
    c.ack(&mut cap, t + 100, true);
    for (call, reply) in &conversation {
        t += 1000;
        c.data(&mut cap, t, true, call);
        if let Some(reply) = reply {
            c.data(&mut cap, t + 300, false, reply);
        }
    }
    c.fin(&mut cap, t + 1000, true);
    c.fin(&mut cap, t + 1100, false);
    c.ack(&mut cap, t + 1200, true);
    cap.write(path);
    Pcap::read(path)
}

/// One capture to damage, and what its undamaged form gives.
struct Case {
    name: &'static str,
    good: Pcap,
    transport: &'static str,
    protocol: &'static str,
    /// Its transactions, as "method status" in the order published.
    expected: Vec<&'static str>,
    /// The call answered by the fourth reply segment.
    fourth_reply: &'static str,
    /// The calls sent back to back (no reply between) whose segments are swapped.
    pair: [&'static str; 2],
}

fn status_line(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["method"].as_str().unwrap_or("?"),
                e["status"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

fn damage(case: &Case, dir: &Path, window_us: u64) {
    let name = case.name;
    let f = dir.join(format!("{name}.pcap"));
    let go = |p: &Pcap| {
        p.write(&f);
        run(&f, case.transport, case.protocol)
    };
    let (full, _) = go(&case.good);
    assert_eq!(status_line(&full), case.expected, "{name}");
    let msgs = messages(&case.good);
    let replies: Vec<usize> = msgs.iter().filter(|m| !m.2).map(|m| m.0).collect();

    // Cut two thirds in: fewer calls, the ones answered before the cut as in the whole.
    case.good.write(&f);
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let (cut, s) = run(&f, case.transport, case.protocol);
    assert!(s.packets < case.good.records.len() as u64, "{name}");
    assert!(
        !cut.is_empty() && cut.len() < full.len(),
        "{name}: {}",
        cut.len()
    );
    let answered = cut.len() - 1;
    assert_eq!(calls(&cut)[..answered], calls(&full)[..answered], "{name}");
    // The next call's reply is past the cut: it ends the file unanswered.
    let last = &cut[answered];
    assert_eq!(last["method"], full[answered]["method"], "{name}");
    assert_eq!(last["status"], "OK", "{name}");
    assert!(last["thrift"]["return_value"].is_null(), "{name}: {last}");

    // The fourth reply segment lost: its call is published with the gap noted, the
    // others paired as before (in another order: the stream layer holds the replies after
    // the hole until it gives up on it).
    let mut lost = case.good.clone();
    lost.records.remove(replies[3]);
    let (ev, s) = go(&lost);
    assert!(s.tcp_gaps >= 1, "{name}");
    let failed: Vec<&str> = ev
        .iter()
        .filter(|e| e["notes"][0] == "response lost in a gap of the capture")
        .map(|e| e["method"].as_str().unwrap())
        .collect();
    assert_eq!(failed, [case.fourth_reply], "{name}");
    assert_eq!(errors(&ev), 1 + errors(&full), "{name}");
    assert_eq!(
        sorted(methods(&ev)),
        sorted(methods(&full)),
        "{name}: the calls"
    );
    let others = |ev: &[Value]| {
        sorted(calls(
            &ev.iter()
                .filter(|e| e["method"] != case.fourth_reply)
                .cloned()
                .collect::<Vec<_>>(),
        ))
    };
    assert_eq!(others(&ev), others(&full), "{name}: the other calls");

    // Two calls sent back to back, their segments swapped in the file, each keeping its
    // own time, less than the sort window apart: put back in time order before the
    // stream sees them; nothing out of order, the same transactions.
    let (a, b) = msgs
        .windows(2)
        .find(|w| w[0].2 && w[1].2 && w[0].1 == w[1].1)
        .map(|w| (w[0].0, w[1].0))
        .expect("two calls back to back");
    assert!(carries(&case.good, a, case.pair[0]), "{name}");
    assert!(carries(&case.good, b, case.pair[1]), "{name}");
    assert!(ts(&case.good, b) - ts(&case.good, a) < window_us, "{name}");
    let mut swapped = case.good.clone();
    swapped.records.swap(a, b);
    let (ooo, unsorted) = (
        get(&METRICS.inspect_tcp_out_of_order),
        get(&METRICS.inspect_tcp_unsorted),
    );
    let (ev, _) = go(&swapped);
    assert_eq!(get(&METRICS.inspect_tcp_out_of_order), ooo, "{name}");
    assert_eq!(get(&METRICS.inspect_tcp_unsorted), unsorted, "{name}");
    assert_eq!(calls(&ev), calls(&full), "{name}");

    // The first of them delayed beyond the sort window: it arrives just after the reply
    // to the second, and that reply comes more than the window after the second (where the
    // server answered sooner, the times from that reply on are moved later). The second
    // call is decoded first and held ahead of the hole (counted out of order, and the late
    // one unsorted); the late one fills the hole; every call is paired as before.
    let reply = msgs
        .iter()
        .find(|m| m.0 > b && !m.2 && m.1 == msgs.iter().find(|m| m.0 == b).unwrap().1)
        .map(|m| m.0)
        .expect("the reply to the second call");
    let mut late = case.good.clone();
    let pause = (window_us + 100_000).saturating_sub(ts(&late, reply) - ts(&late, b));
    for i in reply..late.records.len() {
        let t = ts(&late, i);
        set_ts(&mut late, i, t + pause);
    }
    let first = late.records.remove(a);
    late.records.insert(reply, first);
    let (ooo, unsorted) = (
        get(&METRICS.inspect_tcp_out_of_order),
        get(&METRICS.inspect_tcp_unsorted),
    );
    let (ev, s) = go(&late);
    assert!(get(&METRICS.inspect_tcp_out_of_order) > ooo, "{name}");
    assert!(get(&METRICS.inspect_tcp_unsorted) > unsorted, "{name}");
    assert_eq!(s.tcp_gaps, 0, "{name}");
    assert_eq!(calls(&ev), calls(&full), "{name}");

    // Noise both ways on the port from another client, then the good conversation: the
    // noise is parse errors, not calls; the good calls all there.
    let mut noise = Capture::default();
    let mut rng = Rng(0xfeed_f00d_1234_5678);
    let mut c = Conn::new(
        "10.1.0.1:5000".parse().unwrap(),
        "10.1.0.2:9090".parse().unwrap(),
        7,
        9,
    );
    let start = ts(&case.good, 0) - 1_000_000;
    for i in 0..200u64 {
        let b: Vec<u8> = (0..(1 + rng.next() % 600))
            .map(|_| rng.next() as u8)
            .collect();
        c.data(&mut noise, start + i, i % 2 == 0, &b);
    }
    let mut noisy = case.good.clone();
    noisy.records = records_like(&case.good, &noise);
    noisy.records.extend(case.good.records.iter().cloned());
    let (ev, s) = go(&noisy);
    assert!(s.parse_errors >= 1, "{name}");
    let (from_noise, good): (Vec<Value>, Vec<Value>) =
        ev.into_iter().partition(|e| e["client_ip"] == "10.1.0.1");
    assert!(
        from_noise.is_empty(),
        "{name}: noise is not calls: {from_noise:?}"
    );
    assert_eq!(calls(&good), calls(&full), "{name}");
}

#[test]
fn damaged_thrift_captures() {
    let _counters = counters();
    let dir = TempDir::new("thrift-damage");
    let window_us = config("socket", "binary")
        .connbeat
        .interfaces
        .sort_window
        .get()
        .as_micros() as u64;
    let compact_path = dir.0.join("compact-good.pcap");
    let compact = compact_capture(&compact_path);
    let (ev, _) = run(&compact_path, "socket", "compact");
    assert_eq!(ev[1]["thrift"]["params"], "(1: 2, 2: 3)");
    assert_eq!(ev[1]["thrift"]["return_value"], "5");
    assert_eq!(ev[2]["thrift"]["return_value"], "\"héllo\"");
    assert_eq!(
        ev[3]["thrift"]["return_value"],
        "[(1: 1, 2: 2), (1: 3, 2: 4)]"
    );
    assert_eq!(
        ev[4]["thrift"]["exceptions"],
        "(1: (1: 7, 2: \"division by zero\"))"
    );
    assert_eq!(ev[5]["thrift"]["params"], "(1: \"bye\")");
    assert_eq!(ev[6]["thrift"]["return_value"], "42");
    let cases = [
        Case {
            name: "binary-socket",
            good: Pcap::read(&suite("thrift_integration.pcap")),
            transport: "socket",
            protocol: "binary",
            expected: vec![
                "testByte OK",
                "testByte OK",
                "testDouble OK",
                "testDouble OK",
                "testDouble OK",
                "testEnum OK",
                "testException OK",
                "testException Error",
                "testException OK",
                "testI32 OK",
                "testI32 OK",
                "testI64 OK",
                "testI64 OK",
                "testList OK",
                "testMap OK",
                "testMulti OK",
                "testNest OK",
                "testOneway OK",
                "testOneway OK",
                "testString OK",
                "testSet OK",
                "testString OK",
                "testString OK",
                "testStruct OK",
                "testTypedef OK",
                "testVoid OK",
            ],
            fourth_reply: "testDouble",
            pair: ["testOneway", "testString"],
        },
        Case {
            name: "binary-framed",
            good: Pcap::read(&suite("ipv6_thrift.pcap")),
            transport: "framed",
            protocol: "binary",
            expected: vec![
                "ping OK",
                "add OK",
                "add16 OK",
                "add64 OK",
                "add_doubles OK",
                "echo_bool OK",
                "echo_string OK",
                "echo_binary OK",
                "echo_list OK",
                "echo_set OK",
                "echo_map OK",
                "calculate Error",
                "calculate OK",
                "getStruct OK",
                "zip OK",
                "zip OK",
                "ping OK",
            ],
            fourth_reply: "add64",
            pair: ["zip", "zip"],
        },
        Case {
            name: "compact-socket",
            good: compact,
            transport: "socket",
            protocol: "compact",
            expected: vec![
                "ping OK",
                "add OK",
                "echo OK",
                "points OK",
                "divide Error",
                "note OK",
                "add OK",
            ],
            fourth_reply: "points",
            pair: ["note", "add"],
        },
    ];
    for case in &cases {
        damage(case, &dir.0, window_us);
    }
}

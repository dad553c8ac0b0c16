//! Cassandra (CQL v3 to v5) from frames built by a real protocol implementation: the
//! conversation of tests/data/cassandra/conversation.py (cassandra-driver's own message
//! classes, compressors and v5 segment codec) written into a capture with real TCP
//! framing, decoded by connbeat, and checked against the driver's own reading of the same
//! bytes on every version, and for v3 and v4 against tshark's dissection of the file too
//! (tshark does not know v5). Then the same captures damaged: cut, reordered, noise.

mod inspect_util;

use connbeat::config::from_yaml_str;
use connbeat::monitor::METRICS;
use inspect_util::synth::{Capture, Conn};
use inspect_util::*;
use serde_json::Value;
use std::net::SocketAddrV4;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;

const YAML: &str =
    "output.console: {enabled: true}\nconnbeat.protocols:\n  - {type: cassandra, ports: [9042]}\n";

/// Every version and compression the conversation is written in (snappy is not a v5
/// compressor).
const EVERY_VARIANT: [(u8, &str); 8] = [
    (3, "none"),
    (3, "snappy"),
    (3, "lz4"),
    (4, "none"),
    (4, "snappy"),
    (4, "lz4"),
    (5, "none"),
    (5, "lz4"),
];

/// What conversation.py printed: the sends, and with `--decoded` the driver's reading of
/// them (its `decoded ...` lines).
struct Script {
    sends: Vec<(bool, Vec<u8>)>,
    decoded: Vec<String>,
}

/// Runs conversation.py; None (said why) without python3, the driver or a compressor.
fn run_script(
    test: &str,
    version: u8,
    compression: &str,
    repeat: usize,
    decoded: bool,
) -> Option<Script> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cassandra/conversation.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .args([&version.to_string(), compression, &repeat.to_string()]);
    if decoded {
        cmd.arg("--decoded");
    }
    let skip = |why: &str| {
        eprintln!(
            "SKIPPED {test}: the CQL conversation needs python3 with cassandra-driver, lz4, \
             python-snappy (scripts/install-deps.sh test): {why}"
        );
    };
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) => {
            skip(&e.to_string());
            return None;
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Status 3: the driver or a compression library is missing.
    if out.status.code() == Some(3) {
        skip(stderr.lines().last().unwrap_or_default());
        return None;
    }
    assert!(
        out.status.success(),
        "conversation.py v{version} {compression}: {stderr}"
    );
    let mut sends = Vec::new();
    let mut lines = Vec::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let (side, rest) = l.split_once(' ').expect("side hex");
        if side == "decoded" {
            lines.push(rest.to_string());
            continue;
        }
        let b = (0..rest.len() / 2)
            .map(|i| u8::from_str_radix(&rest[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        sends.push((side == "c", b));
    }
    Some(Script {
        sends,
        decoded: lines,
    })
}

/// The conversation's sends, or None (said why) without the driver.
fn conversation(
    test: &str,
    version: u8,
    compression: &str,
    repeat: usize,
) -> Option<Vec<(bool, Vec<u8>)>> {
    run_script(test, version, compression, repeat, false).map(|s| s.sends)
}

/// The sends as one TCP connection to port 9042, each send cut into 1400-byte segments.
fn capture(sends: &[(bool, Vec<u8>)], path: &Path) -> Capture {
    let client: SocketAddrV4 = "10.0.0.1:40000".parse().unwrap();
    let server: SocketAddrV4 = "10.0.0.2:9042".parse().unwrap();
    let mut cap = Capture::default();
    let mut c = Conn::new(client, server, 1000, 5000);
    let mut t = 1_700_000_000_000_000u64;
    c.syn(&mut cap, t, b"");
    c.syn_ack(&mut cap, t + 10, 0);
    for (to_server, b) in sends {
        for seg in b.chunks(1400) {
            t += 100;
            c.data(&mut cap, t, *to_server, seg);
        }
    }
    c.fin(&mut cap, t + 100, true);
    c.fin(&mut cap, t + 200, false);
    cap.write(path);
    cap
}

fn events_of(path: &Path) -> Vec<Value> {
    let config = from_yaml_str(YAML, &[], &|_| None).unwrap();
    let mut events = Vec::new();
    let mut sink = |e: connbeat::event::Event| events.push(e.to_value());
    connbeat::inspect::run_offline_with(&config, path, &mut sink, None).expect("offline run");
    events.retain(|e| e["type"] == "cassandra");
    events
}

fn op(e: &Value, side: &str) -> String {
    e["cassandra"][side]["headers"]["op"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// What every run of the conversation must give, whatever the version and compression.
fn check(events: &[Value], version: u8, repeat: usize) {
    let v = version.to_string();
    let pairs: Vec<(String, String)> = events
        .iter()
        .map(|e| (op(e, "request"), op(e, "response")))
        .collect();
    let mut want = vec![
        ("OPTIONS", "SUPPORTED"),
        ("STARTUP", "AUTHENTICATE"),
        ("AUTH_RESPONSE", "AUTH_SUCCESS"),
        ("REGISTER", "READY"),
        ("QUERY", "RESULT"),
    ];
    for _ in 0..repeat {
        // The PREPARE (stream 5) is answered before the SELECT (stream 4).
        want.extend([
            ("PREPARE", "RESULT"),
            ("QUERY", "RESULT"),
            ("EXECUTE", "RESULT"),
            ("BATCH", "RESULT"),
            ("QUERY", "ERROR"),
        ]);
    }
    want.push(("", "EVENT"));
    let want: Vec<(String, String)> = want
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(pairs, want, "v{version}");
    for e in events {
        assert_eq!(e["cassandra"]["response"]["headers"]["version"], v);
        let text = e.to_string();
        assert!(
            !text.contains("s3cret") && !text.contains("cassandra\\u0000"),
            "{text}"
        );
    }
    let c = |i: usize| &events[i]["cassandra"];
    assert_eq!(c(0)["response"]["supported"]["COMPRESSION"][1], "lz4");
    assert_eq!(
        c(1)["response"]["authentication"]["class"],
        "org.apache.cassandra.auth.PasswordAuthenticator"
    );
    assert_eq!(c(4)["request"]["query"], "USE ks");
    assert_eq!(c(4)["response"]["result"]["type"], "set_keyspace");
    assert_eq!(c(4)["response"]["result"]["keyspace"], "ks");
    let prep = &c(5)["response"]["result"];
    assert_eq!(
        c(5)["request"]["query"],
        "INSERT INTO t (a, b) VALUES (?, ?)"
    );
    assert_eq!(prep["type"], "prepared");
    assert_eq!(
        prep["prepared"]["prepared_id"],
        "00010203-0405-0607-0809-0a0b0c0d0e0f"
    );
    assert_eq!(prep["prepared"]["req_meta"]["table"], "t");
    let rows = &c(6)["response"]["result"]["rows"];
    assert_eq!(c(6)["request"]["query"], "SELECT a, b FROM t");
    assert_eq!(c(6)["request"]["headers"]["stream"], 4);
    assert_eq!(rows["num_rows"], 2);
    assert_eq!(rows["meta"]["col_count"], 2);
    assert_eq!(rows["meta"]["keyspace"], "ks");
    assert_eq!(c(7)["response"]["result"]["type"], "void");
    assert_eq!(
        c(7)["request"]["query"],
        "INSERT INTO t (a, b) VALUES (?, ?)",
        "an EXECUTE is reported with its prepared query"
    );
    assert_eq!(events[9]["status"], "Error");
    assert_eq!(c(9)["response"]["error"]["code"], 0x2300);
    assert_eq!(c(9)["response"]["error"]["type"], "errConfig");
    assert_eq!(
        c(9)["response"]["error"]["msg"],
        "Cannot drop non existing keyspace 'nope'."
    );
    let last = events.last().unwrap();
    assert_eq!(last["cassandra"]["no_request"], true);
    let sc = &last["cassandra"]["response"]["event"]["schema_change"];
    assert_eq!(
        (sc["target"].as_str(), sc["object"].as_str()),
        (Some("TABLE"), Some("t2"))
    );
}

#[test]
fn driver_frames_every_version_and_compression() {
    let dir = TempDir::new("cql");
    for (version, compression) in EVERY_VARIANT {
        let Some(sends) = conversation(
            "driver_frames_every_version_and_compression",
            version,
            compression,
            1,
        ) else {
            return;
        };
        let f = dir.0.join(format!("cql-v{version}-{compression}.pcap"));
        capture(&sends, &f);
        let events = events_of(&f);
        eprintln!("v{version} {compression}: {} transactions", events.len());
        check(&events, version, 1);
        if compression == "none" {
            // The SELECT: header, [long string], consistency, flags (a byte; an int in v5).
            let flags = if version >= 5 { 4 } else { 1 };
            assert_eq!(events[6]["bytes_in"], 9 + 4 + 18 + 2 + flags);
        }
    }
}

/// tshark pairs CQL responses with requests by stream id (`cql.response_to`): the same
/// pairs, opcodes, row counts and error codes as connbeat's, on v3 and v4, plain and
/// compressed (its dissector decompresses what it can; frames it cannot are compared by
/// header).
#[test]
fn v3_and_v4_match_tshark() {
    if !have_tshark("v3_and_v4_match_tshark") {
        return;
    }
    let dir = TempDir::new("cql-tshark");
    for (version, compression) in [(3, "none"), (4, "none"), (4, "lz4"), (3, "snappy")] {
        let Some(sends) = conversation("v3_and_v4_match_tshark", version, compression, 2) else {
            return;
        };
        let f = dir.0.join(format!("cql-v{version}-{compression}.pcap"));
        capture(&sends, &f);
        let ours = events_of(&f);
        check(&ours, version, 2);
        same_as_tshark(
            &f,
            &ours,
            &format!("v{version} {compression}"),
            compression == "none",
        );
    }
}

/// Packetbeat's `cassandra_compressed.pcap` (tests/data/packetbeat-suite): one segment
/// carries two snappy-compressed QUERYs, `system.local` on stream 0 and `system.peers` on
/// stream 64, and the server answers stream 64 first. tshark decompresses them and pairs by
/// stream id as connbeat does: the `system.peers` answer (0 rows) goes with the
/// `system.peers` query, the `system.local` answer (1 row) with its own. Packetbeat pairs
/// in arrival order, which is why the suite's run of this capture is amended
/// (tests/packetbeat_suite.rs, `AMENDED`).
#[test]
fn the_suites_compressed_capture_pairs_as_tshark_does() {
    let f = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/packetbeat-suite/pcaps/cassandra/v4/cassandra_compressed.pcap");
    let ours = events_of(&f);
    let query = |q: &str| {
        ours.iter()
            .find(|e| e["cassandra"]["request"]["query"] == q)
            .unwrap_or_else(|| panic!("no transaction of {q}"))
    };
    let peers = query("SELECT * FROM system.peers");
    assert_eq!(peers["cassandra"]["response"]["headers"]["stream"], 64);
    assert_eq!(
        peers["cassandra"]["response"]["result"]["rows"]["num_rows"],
        0
    );
    assert_eq!(
        peers["cassandra"]["response"]["result"]["rows"]["meta"]["table"],
        "peers"
    );
    let local = query("SELECT * FROM system.local WHERE key='local'");
    assert_eq!(local["cassandra"]["response"]["headers"]["stream"], 0);
    assert_eq!(
        local["cassandra"]["response"]["result"]["rows"]["num_rows"],
        1
    );
    assert_eq!(
        local["cassandra"]["response"]["result"]["rows"]["meta"]["table"],
        "local"
    );
    if have_tshark("the_suites_compressed_capture_pairs_as_tshark_does") {
        same_as_tshark(&f, &ours, "cassandra_compressed.pcap", false);
    }
}

/// A transaction as the oracles are compared on: request opcode ("" for a server push),
/// stream, response opcode, the row count of a RESULT of rows, the code of an ERROR.
#[derive(Debug, PartialEq, Eq)]
struct Txn {
    request: String,
    stream: i64,
    response: String,
    rows: Option<i64>,
    error: Option<i64>,
}

/// connbeat's transactions, in the order it reported them.
fn transactions(events: &[Value]) -> Vec<Txn> {
    events
        .iter()
        .map(|e| {
            let c = &e["cassandra"];
            Txn {
                request: op(e, "request"),
                stream: c["request"]["headers"]["stream"]
                    .as_i64()
                    .or(c["response"]["headers"]["stream"].as_i64())
                    .expect("a stream"),
                response: op(e, "response"),
                rows: c["response"]["result"]["rows"]["num_rows"].as_i64(),
                error: c["response"]["error"]["code"].as_i64(),
            }
        })
        .collect()
}

/// The driver's reading of the conversation (the `decoded SIDE STREAM OPCODE [rows=N]
/// [error=N]` lines, in wire order) paired as the driver pairs: a response answers the
/// pending request of its stream; a negative stream is a server push.
fn driver_transactions(lines: &[String]) -> Vec<Txn> {
    let mut pending = std::collections::HashMap::new();
    let mut txns = Vec::new();
    for l in lines {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (side, stream, opcode) = (f[0], f[1].parse::<i64>().unwrap(), f[2].to_string());
        if side == "c" {
            let reused = pending.insert(stream, opcode);
            assert!(
                reused.is_none(),
                "stream {stream} reused while pending: {l}"
            );
            continue;
        }
        let field = |key: &str| {
            f[3..]
                .iter()
                .find_map(|x| x.strip_prefix(key))
                .map(|n| n.parse().unwrap())
        };
        let request = if stream < 0 {
            String::new()
        } else {
            pending
                .remove(&stream)
                .unwrap_or_else(|| panic!("no request for {l}"))
        };
        txns.push(Txn {
            request,
            stream,
            response: opcode,
            rows: field("rows="),
            error: field("error="),
        });
    }
    assert!(pending.is_empty(), "unanswered: {pending:?}");
    txns
}

fn opcode(name: &str) -> u8 {
    match name {
        "ERROR" => 0x00,
        "STARTUP" => 0x01,
        "READY" => 0x02,
        "AUTHENTICATE" => 0x03,
        "OPTIONS" => 0x05,
        "SUPPORTED" => 0x06,
        "QUERY" => 0x07,
        "RESULT" => 0x08,
        "PREPARE" => 0x09,
        "EXECUTE" => 0x0A,
        "REGISTER" => 0x0B,
        "EVENT" => 0x0C,
        "BATCH" => 0x0D,
        "AUTH_RESPONSE" => 0x0F,
        "AUTH_SUCCESS" => 0x10,
        other => panic!("{other}"),
    }
}

/// Compares connbeat's transactions of a capture with tshark's dissection of it: the
/// (request opcode, stream, response opcode) pairs, and the row counts and error codes
/// where tshark could read them (`complete`: it must read them all).
fn same_as_tshark(f: &Path, ours: &[Value], label: &str, complete: bool) {
    let rows = tshark(
        f,
        "cql",
        &[
            "frame.number",
            "cql.opcode",
            "cql.stream",
            "cql.response_to",
            "cql.result.rows.row_count",
            "cql.error_code",
        ],
    );
    // Frame number → (opcodes, streams) of its CQL messages.
    let mut by_frame = std::collections::HashMap::new();
    for r in &rows {
        by_frame.insert(r[0].clone(), (r[1].clone(), r[2].clone()));
    }
    let mut theirs = Vec::new();
    for r in &rows {
        let (ops, streams, to) = (
            r[1].split('|').collect::<Vec<_>>(),
            r[2].split('|').collect::<Vec<_>>(),
            r[3].split('|').collect::<Vec<_>>(),
        );
        for (i, o) in ops.iter().enumerate() {
            let stream: i64 = streams.get(i).and_then(|s| s.parse().ok()).unwrap_or(0);
            if stream < 0 {
                continue;
            }
            let Some(req_frame) = to.get(i).filter(|s| !s.is_empty()) else {
                continue;
            };
            let (rops, rstreams) = &by_frame[*req_frame];
            let j = rstreams.split('|').position(|s| s == stream.to_string());
            let rop = j.and_then(|j| rops.split('|').nth(j)).unwrap_or_default();
            theirs.push((
                rop.parse::<u8>().unwrap_or(255),
                stream,
                o.parse::<u8>().unwrap(),
            ));
        }
    }
    let txns = transactions(ours);
    let mut mine: Vec<(u8, i64, u8)> = txns
        .iter()
        .filter(|t| !t.request.is_empty())
        .map(|t| (opcode(&t.request), t.stream, opcode(&t.response)))
        .collect();
    mine.sort();
    theirs.sort();
    assert_eq!(mine, theirs, "{label}: pairs by stream");
    let column = |i: usize| -> Vec<String> {
        rows.iter()
            .flat_map(|r| r[i].split('|').filter(|s| !s.is_empty()).map(String::from))
            .collect()
    };
    let (their_rows, their_errors) = (column(4), column(5));
    if complete || !their_rows.is_empty() {
        let our_rows: Vec<String> = txns
            .iter()
            .filter_map(|t| t.rows.map(|n| n.to_string()))
            .collect();
        assert_eq!(our_rows, their_rows, "{label}: row counts");
    }
    if complete || !their_errors.is_empty() {
        let our_errors: Vec<String> = txns
            .iter()
            .filter_map(|t| t.error.map(|n| n.to_string()))
            .collect();
        assert_eq!(our_errors, their_errors, "{label}: error codes");
    }
}

/// cassandra-driver as the oracle on every version and compression, v5 included: its own
/// receive path (Connection.process_io_buffer: v5 segments, frames; process_msg and
/// ProtocolHandler.decode_message for the responses) reads back the bytes it wrote, and
/// the transactions it sees (request and response opcodes, stream, row count, error
/// code) are connbeat's, in the same order.
#[test]
fn every_version_matches_the_drivers_decoding() {
    let dir = TempDir::new("cql-driver");
    for (version, compression) in EVERY_VARIANT {
        let Some(script) = run_script(
            "every_version_matches_the_drivers_decoding",
            version,
            compression,
            2,
            true,
        ) else {
            return;
        };
        let f = dir.0.join(format!("cql-v{version}-{compression}.pcap"));
        capture(&script.sends, &f);
        let theirs = driver_transactions(&script.decoded);
        assert_eq!(theirs.len(), 5 + 5 * 2 + 1, "v{version} {compression}");
        assert_eq!(
            transactions(&events_of(&f)),
            theirs,
            "v{version} {compression}"
        );
    }
}

/// Cut, reordered and noisy captures of the conversation: never a crash, the parse errors
/// and unmatched responses counted, the undamaged transactions all there.
#[test]
fn damaged_cql_captures() {
    let dir = TempDir::new("cql-damage");
    let Some(sends) = conversation("damaged_cql_captures", 4, "lz4", 3) else {
        return;
    };
    let f = dir.0.join("good.pcap");
    let good = capture(&sends, &f);
    let full = events_of(&f);
    assert_eq!(full.len(), 5 + 15 + 1);

    // The capture starts mid-connection, after the STARTUP exchange and the first SELECT:
    // its answer matches nothing (counted); the compressed frames after it, read without
    // the STARTUP that named lz4, are paired by their headers and noted undecoded.
    let mut late = good.clone();
    late.records.drain(..13);
    late.write(&f);
    let before = METRICS.inspect_unmatched_responses.load(Ordering::Relaxed);
    let ev = events_of(&f);
    assert!(METRICS.inspect_unmatched_responses.load(Ordering::Relaxed) > before);
    let ops: Vec<_> = ev
        .iter()
        .map(|e| (op(e, "request"), op(e, "response")))
        .collect();
    assert_eq!(ev.len(), 14 + 1, "{ops:?}");
    assert_eq!(ev[0]["cassandra"]["request"]["headers"]["op"], "PREPARE");
    assert!(ev[0]["cassandra"]["request"]["query"].is_null());
    assert!(
        ev[0]["notes"][0]
            .as_str()
            .unwrap()
            .contains("no compressor"),
        "{}",
        ev[0]
    );

    // Reordered: two data segments swapped in the file, each keeping its time (a
    // multi-core capture); the sort window puts them back.
    let mut swapped = good.clone();
    swapped.swap_next(8);
    swapped.write(&f);
    assert_eq!(events_of(&f).len(), full.len());

    // Noise before the good conversation on the same port, and a cut file.
    let mut rng = synth::Rng(0x1234_5678_9abc_def1);
    let mut noisy = Capture::default();
    let mut c = Conn::new(
        "10.0.0.9:40001".parse().unwrap(),
        "10.0.0.2:9042".parse().unwrap(),
        1,
        1,
    );
    for i in 0..200u64 {
        let b: Vec<u8> = (0..(rng.next() % 700)).map(|_| rng.next() as u8).collect();
        c.data(&mut noisy, 1_600_000_000_000_000 + i, i % 2 == 0, &b);
    }
    noisy.records.extend(good.records.iter().cloned());
    noisy.write(&f);
    let errors = METRICS.inspect_parse_errors.load(Ordering::Relaxed);
    assert_eq!(events_of(&f).len(), full.len());
    assert!(METRICS.inspect_parse_errors.load(Ordering::Relaxed) > errors);
    good.write(&f);
    let whole = std::fs::read(&f).unwrap();
    std::fs::write(&f, &whole[..whole.len() * 2 / 3]).unwrap();
    assert!(events_of(&f).len() < full.len());
}

//! AMQP from a recorded capture (tests/data/amqp.pcap: tests/services/amqp-session.py, a
//! pika client, against RabbitMQ; re-record with `tests/data/record.sh amqp`): the
//! transactions are the client's operations, their fields agree with tshark's dissection
//! of the same bytes, and damaged copies of the capture (started mid-connection, a lost
//! segment, reordered segments, a segment cut by the snaplen, a truncated file, random
//! bytes on the port) never crash the parser, move the right counters and keep the good
//! transactions.
//!
//! One test function on purpose: the counters are process-wide, so the scenarios run one
//! after the other and compare counter deltas.

mod inspect_util;

use connbeat::config::from_yaml_str;
use connbeat::monitor::{METRICS, get};
use inspect_util::{Pcap, TempDir, data, have_tshark};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicU64;

const PORT: u16 = 15672;

/// What the recorded session did, in order (amqp-session.py's `op` lines).
const OPS: &[&str] = &[
    "exchange.declare",
    "queue.declare",
    "queue.bind",
    "basic.publish",
    "basic.publish",
    "basic.get",
    "basic.ack",
    "basic.consume",
    "basic.deliver",
    "basic.ack",
    "basic.cancel",
    "basic.get-empty",
    "tx.select",
    "basic.publish",
    "tx.commit",
    "queue.delete",
    "channel.close",
];

fn inspect_with(path: &Path, extra: &str) -> Vec<Value> {
    let yaml = format!(
        "output.console: {{enabled: true}}\n{extra}\nconnbeat.protocols:\n  - {{type: amqp, ports: [{PORT}], send_request: true, send_response: true}}\n"
    );
    let config = from_yaml_str(&yaml, &[], &|_| None).expect("test config");
    let mut events = Vec::new();
    let mut sink = |e: connbeat::event::Event| events.push(e.to_value());
    connbeat::inspect::run_offline_with(&config, path, &mut sink, None).expect("offline run");
    events.retain(|e| e["type"] == "amqp");
    events
}

fn inspect(path: &Path) -> Vec<Value> {
    inspect_with(path, "")
}

fn methods(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["method"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn delta(c: &AtomicU64, f: impl FnOnce()) -> u64 {
    let before = get(c);
    f();
    get(c) - before
}

/// tshark's dissection: per AMQP frame, (source port, class, method, queue, routing key,
/// body size, reply code).
fn tshark_frames(path: &Path) -> Vec<[String; 7]> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(path)
        .args(["-n", "-d", &format!("tcp.port=={PORT},amqp"), "-Y", "amqp"])
        .args(["-T", "fields", "-E", "occurrence=a", "-E", "aggregator=|"])
        .args([
            "-e",
            "tcp.srcport",
            "-e",
            "amqp.method.class",
            "-e",
            "amqp.method.method",
        ])
        .args([
            "-e",
            "amqp.method.arguments.queue",
            "-e",
            "amqp.method.arguments.routing_key",
        ])
        .args([
            "-e",
            "amqp.header.body-size",
            "-e",
            "amqp.method.arguments.reply_code",
        ])
        .output()
        .expect("running tshark");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let mut f = l.split('\t').map(str::to_string);
            std::array::from_fn(|_| f.next().unwrap_or_default())
        })
        .collect()
}

#[test]
fn recorded_session_and_damaged_copies() {
    let good_path = data("amqp.pcap");
    let full = inspect(&good_path);
    assert_eq!(methods(&full), OPS, "{full:#?}");
    let status: Vec<&str> = full.iter().map(|e| e["status"].as_str().unwrap()).collect();
    assert_eq!(status.iter().filter(|s| **s == "Error").count(), 1);
    assert_eq!(full[16]["status"], "Error");
    assert_eq!(full[16]["amqp"]["reply-code"], 404);
    // The server's close (7 + 4 + 2 + 1 + 46 + 4 + 1 bytes), the client's close-ok (12).
    assert_eq!(
        (full[16]["bytes_in"].clone(), full[16]["bytes_out"].clone()),
        (12.into(), 65.into())
    );
    assert_eq!(
        full[16]["amqp"]["reply-text"],
        "NOT_FOUND - no queue 'cb.missing' in vhost '/'"
    );
    assert_eq!(full[3]["request"], "hello 1");
    assert_eq!(full[3]["amqp"]["headers"]["k"], "v");
    assert_eq!(full[3]["amqp"]["delivery-mode"], "persistent");
    assert_eq!(full[3]["amqp"]["exchange"], "cb.ex");
    assert_eq!(full[1]["amqp"]["arguments"]["x-max-length"], 100);
    assert_eq!(full[5]["response"], "hello 1");
    assert_eq!(full[5]["amqp"]["queue"], "cb.q");
    assert_eq!(full[8]["response"], "hello 2");
    assert_eq!(
        full[13]["request"], "0 1 2",
        "a binary body as decimal bytes"
    );
    for e in &full {
        assert_eq!(e["port"], PORT);
        assert!(
            !e.to_string().contains("guest\\u0000"),
            "credentials leaked: {e}"
        );
    }

    if have_tshark("recorded_session_and_damaged_copies (tshark part)") {
        let frames = tshark_frames(&good_path);
        let client = |f: &[String; 7]| f[0] != PORT.to_string();
        // Every queue a client method names (basic.get aside: its event also carries the
        // get-ok) is the queue of the transaction of that method.
        let queues: Vec<&str> = frames
            .iter()
            .filter(|f| client(f) && !f[3].is_empty() && f[3] != "cb.missing")
            .filter(|f| !(f[1] == "60" && f[2] == "70"))
            .map(|f| f[3].as_str())
            .collect();
        let ours: Vec<&str> = full
            .iter()
            .filter(|e| e["method"] != "basic.get-empty" && e["method"] != "basic.get")
            .filter_map(|e| e["amqp"]["queue"].as_str())
            .collect();
        assert_eq!(ours.len(), 4, "declare, bind, consume, delete: {ours:?}");
        assert_eq!(ours, queues);
        // Message sizes: every content header's body size, in order, is a message's bytes.
        let sizes: Vec<u64> = frames
            .iter()
            .flat_map(|f| f[5].split('|').map(str::to_string).collect::<Vec<_>>())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        let ours: Vec<u64> = full
            .iter()
            .filter(|e| {
                matches!(
                    e["method"].as_str(),
                    Some("basic.publish" | "basic.deliver")
                ) || (e["method"] == "basic.get" && e["amqp"]["delivery-tag"].is_u64())
            })
            .map(|e| {
                if e["method"] == "basic.publish" {
                    e["bytes_in"].as_u64().unwrap()
                } else {
                    e["bytes_out"].as_u64().unwrap()
                }
            })
            .collect();
        assert_eq!(ours, sizes);
        // The close's reply code and the routing keys of the publishes.
        assert!(frames.iter().any(|f| f[6] == "404"));
        let rks: Vec<&str> = frames
            .iter()
            .filter(|f| client(f) && f[1] == "60" && f[2] == "40")
            .map(|f| f[4].as_str())
            .collect();
        let ours: Vec<&str> = full
            .iter()
            .filter(|e| e["method"] == "basic.publish")
            .map(|e| e["amqp"]["routing-key"].as_str().unwrap())
            .collect();
        assert_eq!(ours, rks);
    }

    // ECS: event.action, and the same amqp object.
    let ecs = inspect_with(&good_path, "connbeat.event_format: ecs");
    assert_eq!(ecs.len(), full.len());
    assert_eq!(ecs[1]["event"]["action"], "amqp.queue.declare");
    assert_eq!(ecs[1]["amqp"], full[1]["amqp"]);
    assert_eq!(ecs[16]["event"]["type"][2], "error");

    let dir = TempDir::new("amqp-damage");
    let good = Pcap::read(&good_path);
    let payload = |p: &Pcap, i: usize| {
        let o = p.tcp_payload_offset(i);
        p.records[i].1[o..o + p.tcp_payload_len(i)].to_vec()
    };
    // Records with AMQP data, and the one carrying a given method frame start.
    let find = |to_server: bool, class: u16, method: u16| {
        (0..good.records.len())
            .find(|&i| {
                good.tcp_payload_len(i) >= 11
                    && (good.dst_port(i) == PORT) == to_server
                    && payload(&good, i)[0] == 1
                    && payload(&good, i)[7..11]
                        == [
                            (class >> 8) as u8,
                            class as u8,
                            (method >> 8) as u8,
                            method as u8,
                        ]
            })
            .unwrap_or_else(|| panic!("no frame {class}.{method}"))
    };

    // 1. Capture starts after the queue.declare request: its declare-ok matches nothing,
    //    everything after is there.
    let declare = find(true, 50, 10);
    let mut p = good.clone();
    p.records.drain(..=declare);
    let f = dir.0.join("mid.pcap");
    p.write(&f);
    let mut events = Vec::new();
    let unmatched = delta(&METRICS.inspect_unmatched_responses, || {
        events = inspect(&f)
    });
    assert_eq!(unmatched, 1);
    assert_eq!(methods(&events), OPS[2..]);

    // 2. The segment with the second publish's content header is lost: a gap, that message
    //    is dropped and counted, the frames after it are found again. (The stream layer
    //    declares a hole when its out-of-order store is full or the connection ends; with
    //    no store, as on a host out of reassembly memory, at the next segment. Declared at
    //    the end, every later request would come after its response.)
    let publishes: Vec<usize> = (0..good.records.len())
        .filter(|&i| {
            good.dst_port(i) == PORT && good.tcp_payload_len(i) > 0 && payload(&good, i)[0] == 2
        })
        .collect();
    let mut p = good.clone();
    p.records.remove(publishes[1]);
    let f = dir.0.join("lost.pcap");
    p.write(&f);
    let dropped = delta(&METRICS.inspect_amqp_content_dropped, || {
        let gaps = delta(&METRICS.inspect_tcp_gaps, || {
            events = inspect_with(&f, "connbeat.interfaces: {max_out_of_order_kb: 0}")
        });
        assert!(gaps >= 1);
    });
    assert!(dropped >= 1);
    let mut want: Vec<&str> = OPS.to_vec();
    want.remove(4);
    assert_eq!(methods(&events), want);

    // 3. A publish's method and content header segments swapped, their times kept in
    //    place: reassembled in order, nothing lost.
    let a = find(true, 60, 40);
    let b = (a + 1..good.records.len())
        .find(|&i| good.tcp_payload_len(i) > 0)
        .unwrap();
    assert_eq!(
        good.dst_port(b),
        PORT,
        "the publish's content header follows it"
    );
    let mut p = good.clone();
    p.records.swap(a, b);
    let (ta, tb) = (p.records[a].0[..8].to_vec(), p.records[b].0[..8].to_vec());
    p.records[a].0[..8].copy_from_slice(&tb);
    p.records[b].0[..8].copy_from_slice(&ta);
    let f = dir.0.join("reordered.pcap");
    p.write(&f);
    let ooo = delta(&METRICS.inspect_tcp_out_of_order, || {
        // Decoded in capture order (no sort window), so the later segment comes first.
        events = inspect_with(&f, "connbeat.interfaces: {sort_window: 0}")
    });
    assert!(ooo >= 1);
    assert_eq!(methods(&events), OPS);

    // 4. The segment with consume-ok and the delivery cut by the snaplen: the consume
    //    fails (its -ok lost in the gap), the delivery is dropped, the rest is decoded.
    let consume_ok = find(false, 60, 21);
    let mut p = good.clone();
    let cut = p.tcp_payload_offset(consume_ok) + 20;
    p.records[consume_ok].1.truncate(cut);
    let f = dir.0.join("snaplen.pcap");
    p.write(&f);
    events = inspect(&f);
    let consume = events
        .iter()
        .find(|e| e["method"] == "basic.consume")
        .unwrap();
    assert_eq!(consume["status"], "Error");
    assert!(!events.iter().any(|e| e["method"] == "basic.deliver"));
    assert_eq!(events.len(), OPS.len() - 1);

    // 5. The file cut in the middle of a record.
    let f = dir.0.join("truncated.pcap");
    good.write(&f);
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() * 2 / 3]).unwrap();
    events = inspect(&f);
    assert!(
        !events.is_empty() && events.len() < OPS.len(),
        "{}",
        events.len()
    );
    assert_eq!(methods(&events), OPS[..events.len()]);

    // 6. Random bytes in both directions of another connection to the port, with random
    //    AMQP-looking frames among them, then the good session: parse errors counted,
    //    nothing crashes, the good transactions all there.
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let template = good.records[declare].clone();
    let mut p = Pcap {
        header: good.header.clone(),
        records: Vec::new(),
    };
    let mut seq = [1000u32, 5000u32];
    for k in 0..60 {
        let mut r = template.clone();
        let o = good.tcp_payload_offset(declare);
        r.1.truncate(o);
        let n = 8 + (next() % 600) as usize;
        let mut bytes: Vec<u8> = (0..n).map(|_| next() as u8).collect();
        if k % 3 == 0 {
            // A frame head of a plausible type and size, then noise.
            bytes[0] = [1, 2, 3, 8][(next() % 4) as usize];
            bytes[3..7].copy_from_slice(&((next() % 300) as u32).to_be_bytes());
        }
        r.1.extend_from_slice(&bytes);
        let d = k % 2;
        let ihl = usize::from(r.1[14] & 0x0f) * 4;
        let tcp = 14 + ihl;
        let total = (r.1.len() - 14) as u16;
        r.1[16..18].copy_from_slice(&total.to_be_bytes());
        // Client port 40000 for this connection; the direction flips the ports.
        let (sp, dp) = if d == 0 { (40000, PORT) } else { (PORT, 40000) };
        r.1[tcp..tcp + 2].copy_from_slice(&sp.to_be_bytes());
        r.1[tcp + 2..tcp + 4].copy_from_slice(&dp.to_be_bytes());
        r.1[tcp + 4..tcp + 8].copy_from_slice(&seq[d].to_be_bytes());
        seq[d] = seq[d].wrapping_add(n as u32);
        r.0[8..12].copy_from_slice(&(r.1.len() as u32).to_le_bytes());
        r.0[12..16].copy_from_slice(&(r.1.len() as u32).to_le_bytes());
        p.records.push(r);
    }
    p.records.extend(good.records.iter().cloned());
    let f = dir.0.join("random.pcap");
    p.write(&f);
    let errors = delta(&METRICS.inspect_parse_errors, || events = inspect(&f));
    assert!(errors >= 1, "the noise was rejected ({errors})");
    let good_events: Vec<Value> = events
        .into_iter()
        .filter(|e| e["client_port"] != 40000)
        .collect();
    assert_eq!(methods(&good_events), OPS);
}

//! Shipping benchmark: pushes N synthetic connection events through the real pipeline and
//! output (Kafka or HTTP) and reports events/s and CPU per 100k events of this process
//! (pipeline thread, output, librdkafka's threads; events are built before the clock
//! starts). Driven by `perf/ship.sh`, which also runs the reference producer.
//!
//! ```text
//! ship_bench kafka BOOTSTRAP TOPIC EVENTS BATCH [COMPRESSION] [DISK_DIR]
//! ship_bench http URL EVENTS BATCH [DISK_DIR]
//! ship_bench redis HOST:PORT EVENTS BATCH [DISK_DIR]
//! ship_bench logstash HOST:PORT EVENTS BATCH [DISK_DIR]
//! ship_bench file DIR EVENTS BATCH
//! ship_bench collector PORT        a minimal HTTP sink (run it in another process)
//! ship_bench beats-sink PORT       a minimal Beats-protocol sink that acknowledges every window
//! ship_bench payloads EVENTS       the same events as NDJSON, for the reference producer
//! ```
//!
//! With `RATE=n` in the environment the events are queued at n per second (steady state,
//! as an agent's sources would), else all at once (burst).

use connbeat::event::{CommonFields, Event};
use connbeat::publish::{self, PipelineSettings};
use std::io::{BufRead, BufReader, Read, Write};
use std::time::{Duration, Instant};

/// The fields of a connection event shaped like the poller's (built before the clock
/// starts; serializing them into an [`Event`] is the source's work, inside the window).
fn fields(i: u64) -> serde_json::Value {
    serde_json::json!({
            "action": "open", "direction": "outgoing", "transport": "tcp", "family": "ipv4",
            "local_ip": "10.0.0.5", "local_port": 40000 + (i % 20000), "remote_ip": "10.0.0.9",
            "remote_port": 5432,
            "local_process": {"pid": 812, "binary": "psql", "exe": "/usr/bin/psql",
                              "cmdline": "psql -h 10.0.0.9 -U app orders", "user": "app", "ppid": 1},
            "attribution": "procfs",
            "tcp": {"state": "ESTABLISHED", "rtt_us": 210, "rttvar_us": 40, "retransmits": 0,
                    "total_retrans": 0, "bytes_acked": 1520, "bytes_received": 8211,
                    "segs_in": 12, "segs_out": 10, "cwnd": 10},
            "cookie": (8_000_000 + i).to_string(), "netns": 4026531840u64,
            "beat": {"local_ips": ["10.0.0.5"]}
    })
}

fn common() -> CommonFields {
    CommonFields {
        agent_type: "connbeat",
        name: "bench".into(),
        hostname: "bench".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        tags: vec![],
        fields: Default::default(),
        fields_under_root: false,
        shape: Default::default(),
    }
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn run(yaml: &str, events: u64, label: &str) {
    let c = connbeat::config::from_yaml_str(yaml, &[], &|_| None).unwrap_or_else(|e| panic!("{e}"));
    let out = connbeat::output::from_config(&c).unwrap_or_else(|e| panic!("{e}"));
    let all: Vec<serde_json::Value> = (0..events).map(fields).collect();
    let (p, pipe) = publish::start(PipelineSettings::from_config(&c), out, common()).unwrap();
    // RATE=events/s paces the source like an agent's pollers would (steady state);
    // without it every event is queued at once (burst).
    let rate: Option<f64> = std::env::var("RATE").ok().and_then(|r| r.parse().ok());
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    for (i, e) in all.into_iter().enumerate() {
        if let Some(r) = rate
            && i % 500 == 0
        {
            let due = t0 + Duration::from_secs_f64(i as f64 / r);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        p.publish(Event::new(std::time::SystemTime::now(), "connbeat", e));
    }
    drop(p);
    assert!(pipe.finish(Duration::from_secs(600)), "not drained");
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let acked = connbeat::monitor::get(&connbeat::monitor::METRICS.output_events_acked);
    assert_eq!(acked, events, "acked {acked} of {events}");
    let label = match rate {
        Some(r) => format!("{label} rate={r}"),
        None => label.to_string(),
    };
    println!(
        "{label}\tevents={events}\twall_s={wall:.2}\tevents_per_s={:.0}\tcpu_s={cpu:.2}\tcpu_s_per_100k={:.3}",
        events as f64 / wall,
        cpu / events as f64 * 100_000.0
    );
}

fn disk_yaml(dir: Option<&String>) -> String {
    dir.map(|d| {
        let _ = std::fs::remove_dir_all(d);
        format!("queue.disk: {{path: {d}, max_size: 2GiB}}\n")
    })
    .unwrap_or_default()
}

fn collector(port: u16) {
    let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    for s in l.incoming().flatten() {
        std::thread::spawn(move || {
            let mut r = BufReader::new(s);
            loop {
                let mut len = 0usize;
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let l = line.trim_end();
                    if l.is_empty() {
                        break;
                    }
                    if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                if r.read_exact(&mut body).is_err() {
                    return;
                }
                let w = r.get_mut();
                if w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .is_err()
                {
                    return;
                }
            }
        });
    }
}

/// Reads Beats-protocol windows (plain or zlib-compressed JSON frames) and acknowledges
/// each one whole; nothing is kept.
fn beats_sink(port: u16) {
    fn u32_at(b: &[u8]) -> u32 {
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
    /// Counts the JSON frames in `frames`.
    fn count(frames: &[u8]) -> u32 {
        let (mut n, mut at) = (0, 0);
        while at + 10 <= frames.len() {
            at += 10 + u32_at(&frames[at + 6..]) as usize;
            n += 1;
        }
        n
    }
    let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    for s in l.incoming().flatten() {
        std::thread::spawn(move || {
            let mut r = BufReader::with_capacity(1 << 20, s);
            let (mut window, mut got) = (0u32, 0u32);
            loop {
                let mut head = [0u8; 2];
                if r.read_exact(&mut head).is_err() {
                    return;
                }
                let mut n4 = [0u8; 4];
                r.read_exact(&mut n4).unwrap();
                match head[1] {
                    b'W' => {
                        window = u32::from_be_bytes(n4);
                        got = 0;
                    }
                    b'J' => {
                        r.read_exact(&mut n4).unwrap();
                        let mut p = vec![0u8; u32::from_be_bytes(n4) as usize];
                        r.read_exact(&mut p).unwrap();
                        got += 1;
                    }
                    b'C' => {
                        let mut data = vec![0u8; u32::from_be_bytes(n4) as usize];
                        r.read_exact(&mut data).unwrap();
                        let mut inner = Vec::new();
                        flate2::read::ZlibDecoder::new(&data[..])
                            .read_to_end(&mut inner)
                            .unwrap();
                        got += count(&inner);
                    }
                    other => panic!("frame type {other}"),
                }
                if window > 0 && got == window {
                    let mut ack = vec![b'2', b'A'];
                    ack.extend_from_slice(&window.to_be_bytes());
                    if r.get_mut().write_all(&ack).is_err() {
                        return;
                    }
                    window = 0;
                }
            }
        });
    }
}

/// A network output's run: `output.<name>` with `hosts` and `bulk_max_size`.
fn run_output(name: &str, host: &str, a: &[String]) {
    let events: u64 = a[2].parse().unwrap();
    let batch: usize = a[3].parse().unwrap();
    let disk = a.get(4);
    let yaml = format!(
        "output.{name}: {{hosts: [\"{host}\"], bulk_max_size: {batch}}}\n\
         queue.mem: {{events: {}, flush.min_events: {batch}, flush.timeout: 10ms}}\n{}",
        (batch * 4).max(4096),
        disk_yaml(disk)
    );
    let label = format!(
        "connbeat->{name} batch={batch} {}",
        if disk.is_some() { "disk" } else { "mem" }
    );
    run(&yaml, events, &label);
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    match a.first().map(String::as_str) {
        Some("kafka") => {
            let (bootstrap, topic) = (&a[1], &a[2]);
            let events: u64 = a[3].parse().unwrap();
            let batch: usize = a[4].parse().unwrap();
            let compression = a.get(5).map_or("lz4", String::as_str);
            let disk = a.get(6);
            let yaml = format!(
                "output.kafka: {{hosts: [\"{bootstrap}\"], topic: {topic}, compression: {compression}, bulk_max_size: {batch}}}\n\
                 queue.mem: {{events: {}, flush.min_events: {batch}, flush.timeout: 10ms}}\n{}",
                (batch * 4).max(4096),
                disk_yaml(disk)
            );
            let label = format!(
                "connbeat->kafka batch={batch} {compression} {}",
                if disk.is_some() { "disk" } else { "mem" }
            );
            run(&yaml, events, &label);
        }
        Some("http") => {
            let url = &a[1];
            let events: u64 = a[2].parse().unwrap();
            let batch: usize = a[3].parse().unwrap();
            let disk = a.get(4);
            let yaml = format!(
                "output.http: {{hosts: [\"{url}\"], bulk_max_size: {batch}}}\n\
                 queue.mem: {{events: {}, flush.min_events: {batch}, flush.timeout: 10ms}}\n{}",
                (batch * 4).max(4096),
                disk_yaml(disk)
            );
            let label = format!(
                "connbeat->http batch={batch} {}",
                if disk.is_some() { "disk" } else { "mem" }
            );
            run(&yaml, events, &label);
        }
        Some(name @ ("redis" | "logstash")) => run_output(name, &a[1], &a),
        Some("file") => {
            let (dir, events, batch) = (&a[1], a[2].parse().unwrap(), &a[3]);
            let _ = std::fs::remove_dir_all(dir);
            let yaml = format!(
                "output.file: {{path: {dir}, filename: bench, rotate_every_kb: 1048576}}\n\
                 queue.mem: {{events: 8192, flush.min_events: {batch}, flush.timeout: 10ms}}\n"
            );
            run(&yaml, events, &format!("connbeat->file batch={batch} mem"));
            let _ = std::fs::remove_dir_all(dir);
        }
        Some("collector") => collector(a[1].parse().unwrap()),
        Some("beats-sink") => beats_sink(a[1].parse().unwrap()),
        Some("payloads") => {
            let c = common().finisher();
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for i in 0..a[1].parse::<u64>().unwrap() {
                let e = Event::new(std::time::SystemTime::now(), "connbeat", fields(i));
                out.write_all(c.finish(e).as_bytes()).unwrap();
                out.write_all(b"\n").unwrap();
            }
        }
        _ => {
            eprintln!("usage: see the comment at the top of perf/ship_bench.rs");
            std::process::exit(2);
        }
    }
}

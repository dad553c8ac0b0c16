//! `connbeat.interfaces.type: af_packet` with two workers against `pcap`, capturing the
//! same real traffic on the loopback device at the same time: Redis and HTTP
//! conversations with real servers (tests/services), over many connections so that the
//! fanout spreads them over both workers. Both must yield exactly the same transactions.
//! Needs root (capture) and the servers the scripts install; without them it says
//! SKIPPED loudly and returns.

mod common;

use common::{Collect, Service};
use connbeat::config::from_yaml_str;
use connbeat::event::CommonFields;
use connbeat::publish::{self, PipelineSettings};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// A loopback port free right now (the service scripts take a port number).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A capture of `yaml` whose transactions land in the returned list.
struct Run {
    events: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
    pipeline: publish::Pipeline,
}

fn start(yaml: &str) -> anyhow::Result<Run> {
    let config = from_yaml_str(yaml, &[], &|_| None).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let (publisher, pipeline) = publish::start(
        PipelineSettings::from_config(&config),
        Box::new(Collect(events.clone())),
        CommonFields::from_config(&config),
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let thread = connbeat::inspect::spawn_live(&config, publisher, None, stop.clone())?;
    Ok(Run {
        events,
        stop,
        thread,
        pipeline,
    })
}

impl Run {
    fn finish(self) -> Vec<Value> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        assert!(self.pipeline.finish(Duration::from_secs(10)));
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}

/// What identifies a transaction and what it found, as one comparable line.
fn line(e: &Value) -> String {
    format!(
        "{} {} {} {} client_port={} status={} code={} return={}",
        e["type"],
        e["method"],
        e["path"],
        e["resource"],
        e["client_port"],
        e["status"],
        e["http"]["response"]["code"],
        e["redis"]["return_value"],
    )
}

const CONNECTIONS: usize = 40;

#[test]
fn af_packet_with_two_workers_yields_what_pcap_yields() {
    if !is_root() {
        eprintln!(
            "SKIPPED af_packet_with_two_workers_yields_what_pcap_yields: needs root to capture on lo"
        );
        return;
    }
    let (redis_port, web_port, tls_port) = (free_port(), free_port(), free_port());
    let Some(redis) = Service::start("start-redis.sh", &[&redis_port.to_string()]) else {
        eprintln!(
            "SKIPPED af_packet_with_two_workers_yields_what_pcap_yields: redis-server unavailable"
        );
        return;
    };
    let Some(web) = Service::start(
        "start-nginx.sh",
        &[&web_port.to_string(), &tls_port.to_string()],
    ) else {
        eprintln!("SKIPPED af_packet_with_two_workers_yields_what_pcap_yields: nginx unavailable");
        return;
    };
    let common = format!(
        "connbeat.transaction_timeout: 5s\n\
         queue.mem: {{events: 4096, flush.min_events: 1, flush.timeout: 100ms}}\n\
         output.console: {{enabled: true}}\n\
         connbeat.protocols:\n  - {{type: http, ports: [{web_port}]}}\n  - {{type: redis, ports: [{redis_port}]}}\n"
    );
    let pcap = match start(&format!(
        "connbeat.interfaces: {{device: lo, type: pcap}}\n{common}"
    )) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "SKIPPED af_packet_with_two_workers_yields_what_pcap_yields: cannot capture: {e:#}"
            );
            return;
        }
    };
    let af = start(&format!(
        "connbeat.interfaces: {{device: lo, type: af_packet, workers: 2, buffer_size_mb: 8}}\n{common}"
    ))
    .expect("af_packet opens where pcap does");

    // Both captures are open: the traffic from now on is seen by both.
    let mut sent = 0;
    for i in 0..CONNECTIONS {
        let mut s = TcpStream::connect(("127.0.0.1", redis_port)).unwrap();
        let (k, v) = (format!("key{i}"), format!("value{i}"));
        let cmd = format!(
            "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n*2\r\n$3\r\nGET\r\n${}\r\n{k}\r\n",
            k.len(),
            v.len(),
            k.len()
        );
        s.write_all(cmd.as_bytes()).unwrap();
        let want = format!("+OK\r\n${}\r\n{v}\r\n", v.len());
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while got.len() < want.len() {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "redis closed early");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(String::from_utf8_lossy(&got), want);
        sent += 2;

        let mut h = TcpStream::connect(("127.0.0.1", web_port)).unwrap();
        let path = if i % 4 == 3 {
            "/missing".to_string()
        } else {
            format!("/index.html?n={i}")
        };
        h.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let mut body = Vec::new();
        h.read_to_end(&mut body).unwrap();
        assert!(body.starts_with(b"HTTP/1.1 "));
        sent += 1;
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    let count = |r: &Run| r.events.lock().unwrap().len();
    while (count(&pcap) < sent || count(&af) < sent) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut a: Vec<String> = pcap.finish().iter().map(line).collect();
    let mut b: Vec<String> = af.finish().iter().map(line).collect();
    a.sort();
    b.sort();
    assert_eq!(a.len(), sent, "pcap: {a:#?}");
    assert_eq!(b, a, "af_packet (2 workers) and pcap differ");
    assert!(a.iter().any(|l| l.contains("code=404")));
    assert!(a.iter().any(|l| l.contains("return=\"value7\"")));
    drop((redis, web));
}

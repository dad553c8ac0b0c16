//! The topology benchmark's helper (`perf/topology.sh` drives it):
//!
//!   topology_bench fill BOOTSTRAP TOPIC EVENTS   writes a fleet's events to the topic
//!   topology_bench plain BOOTSTRAP TOPIC EVENTS  the reference: a plain librdkafka consumer
//!                                                that reads EVENTS messages and nothing else
//!   topology_bench file EVENTS                   the same events as NDJSON on stdout
//!
//! The fleet: 100 hosts, each with clients calling services on other hosts; every
//! connection reported by both ends' agents (open and closed), every connection to nginx
//! (one in five) carrying an HTTP transaction reported by both ends too, as classic events
//! of the size agents write.

use rdkafka::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use std::io::Write;
use std::time::Duration;

const HOSTS: u32 = 100;
const SERVICES: [(&str, u16); 5] = [
    ("nginx", 80),
    ("postgres", 5432),
    ("redis-server", 6379),
    ("java", 8080),
    ("mariadbd", 3306),
];
const CLIENTS: [&str; 5] = ["python3", "java", "node", "curl", "php-fpm"];

fn ip(h: u32) -> String {
    format!("10.{}.{}.{}", 20 + h / 65536, (h / 256) % 256, h % 256 + 1)
}

fn conn(i: u64, side: u8, action: &str) -> String {
    let ch = (i % HOSTS as u64) as u32;
    let sh = ((i * 7 + 3) % HOSTS as u64) as u32;
    let (sbin, sport) = SERVICES[(i % 5) as usize];
    let cbin = CLIENTS[((i / 5) % 5) as usize];
    let cport = 20000 + (i % 40000);
    let (host, bin, dir, lip, lport, rip, rport) = if side == 0 {
        (
            ch,
            cbin,
            "outgoing",
            ip(ch),
            cport,
            ip(sh),
            u64::from(sport),
        )
    } else {
        (
            sh,
            sbin,
            "incoming",
            ip(sh),
            u64::from(sport),
            ip(ch),
            cport,
        )
    };
    let ms = (i / 4) % 60_000;
    format!(
        r#"{{"@timestamp":"2026-12-01T10:{:02}:{:02}.{:03}Z","type":"connbeat","action":"{action}","direction":"{dir}","transport":"tcp","family":"ipv4","local_ip":"{lip}","local_port":{lport},"remote_ip":"{rip}","remote_port":{rport},"local_process":{{"pid":{},"binary":"{bin}","exe":"/usr/bin/{bin}","cmdline":"/usr/bin/{bin} --config /etc/{bin}/{bin}.conf","user":"app","ppid":1}},"attribution":"procfs","tcp":{{"state":"ESTABLISHED","rtt_us":{},"rttvar_us":40,"retransmits":0,"total_retrans":{},"bytes_acked":{},"bytes_received":{},"segs_in":12,"segs_out":14,"cwnd":10}},"cookie":"{}","netns":4026531833,"beat":{{"local_ips":["{}"],"name":"host{host}","hostname":"host{host}","version":"0.1.0"}}}}"#,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000,
        1000 + i % 30000,
        100 + i % 900,
        i % 3,
        1000 + i % 5000,
        2000 + i % 9000,
        i * 2 + u64::from(side),
        ip(host),
    )
}

fn txn(i: u64, side: u8) -> String {
    let ch = (i % HOSTS as u64) as u32;
    let sh = ((i * 7 + 3) % HOSTS as u64) as u32;
    let host = if side == 0 { ch } else { sh };
    let proc_field = if side == 0 {
        format!(
            r#""client_process":{{"pid":7,"binary":"{}"}}"#,
            CLIENTS[((i / 5) % 5) as usize]
        )
    } else {
        r#""server_process":{"pid":8,"binary":"nginx"}"#.to_string()
    };
    let ms = (i / 4) % 60_000;
    format!(
        r#"{{"@timestamp":"2026-12-01T10:{:02}:{:02}.{:03}Z","type":"http","status":"OK","method":"GET","path":"/api/items","responsetime":{},"bytes_in":120,"bytes_out":900,"transport":"tcp","client_ip":"{}","client_port":{},"ip":"{}","port":80,{proc_field},"direction":"in","http":{{"request":{{"headers":{{"user-agent":"bench"}}}},"response":{{"code":200,"phrase":"OK"}}}},"beat":{{"name":"host{host}","hostname":"host{host}","version":"0.1.0"}}}}"#,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000,
        1 + i % 50,
        ip(ch),
        20000 + (i % 40000),
        ip(sh),
    )
}

/// The Kafka message key of connection `i`'s events: its address pair, which is what its
/// `community_id` hashes, so that (as with agents keyed by `community_id`) both ends of a
/// connection, and later connections that reuse its address pair, share one partition and
/// keep their order.
fn tuple_key(i: u64) -> String {
    let ch = (i % HOSTS as u64) as u32;
    let sh = ((i * 7 + 3) % HOSTS as u64) as u32;
    let sport = SERVICES[(i % 5) as usize].1;
    format!("{}:{}-{}:{sport}", ip(ch), 20000 + (i % 40000), ip(sh))
}

/// The stream, with each event's message key: each connection's four events, and for
/// nginx's its transaction from both ends.
fn events(total: u64) -> impl Iterator<Item = (String, String)> {
    let mut i = 0u64;
    std::iter::from_fn(move || {
        let mut v = vec![
            conn(i, 0, "open"),
            conn(i, 1, "open"),
            conn(i, 1, "closed"),
            conn(i, 0, "closed"),
        ];
        if i.is_multiple_of(5) {
            v.push(txn(i, 0));
            v.push(txn(i, 1));
        }
        let key = tuple_key(i);
        i += 1;
        Some(v.into_iter().map(move |e| (key.clone(), e)))
    })
    .flatten()
    .take(total as usize)
}

fn fill(bootstrap: &str, topic: &str, n: u64) {
    let p: ThreadedProducer<_> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("compression.codec", "lz4")
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    for (key, e) in events(n) {
        loop {
            match p.send(BaseRecord::to(topic).payload(&e).key(&key)) {
                Ok(()) => break,
                Err((_, _)) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }
    p.flush(Duration::from_secs(120)).unwrap();
}

fn plain(bootstrap: &str, topic: &str, n: u64) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "plain-bench")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut got = 0u64;
    let mut bytes = 0usize;
    while got < n {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            bytes += m.payload().map_or(0, <[u8]>::len);
            got += 1;
        }
    }
    eprintln!("plain: {got} messages, {bytes} bytes");
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    match a.get(1).map(String::as_str) {
        Some("fill") => fill(&a[2], &a[3], a[4].parse().unwrap()),
        Some("plain") => plain(&a[2], &a[3], a[4].parse().unwrap()),
        Some("file") => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for (_, e) in events(a[2].parse().unwrap()) {
                writeln!(out, "{e}").unwrap();
            }
        }
        _ => {
            eprintln!("usage: topology_bench fill|plain BOOTSTRAP TOPIC EVENTS | file EVENTS");
            std::process::exit(2);
        }
    }
}

//! `output.kafka` against Tansu, a real Kafka-protocol broker (tests/services/tansu.sh),
//! read back with an rdkafka consumer. Skipped, loudly, when the Tansu binary is absent.
#![cfg(feature = "kafka")]

mod shipkit;

use connbeat::event::Event;
use shipkit::kafka::{Broker, Reader, Record};
use shipkit::*;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

fn kafka_config(broker: &Broker, topic: &str, extra: &str) -> connbeat::config::Config {
    config(&format!(
        "output.kafka:\n  hosts: [\"{}\"]\n  topic: \"{topic}\"\n{extra}",
        broker.bootstrap()
    ))
}

/// The identities (cookie + action + @timestamp) of events 0..n.
fn expected_ids(n: u64) -> HashSet<String> {
    (0..n)
        .map(|i| {
            let mut v = conn_event(i).to_value();
            v["@timestamp"] = connbeat::event::format_timestamp(conn_event(i).timestamp).into();
            identity(&v)
        })
        .collect()
}

/// Every event 0..n exactly once (by cookie + action + @timestamp).
fn assert_exactly_once(records: &[Record], n: u64) {
    let ids: Vec<String> = records.iter().map(|r| identity(&r.value)).collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "{} duplicates",
        ids.len() - unique.len()
    );
    let expected = expected_ids(n);
    let got: HashSet<String> = ids.into_iter().collect();
    let missing = expected.difference(&got).count();
    assert_eq!(missing, 0, "{missing} of {n} events missing");
    assert_eq!(got.len() as u64, n);
}

/// Every event 0..n at least once, with at most `max_duplicates` sent twice: a broker
/// killed mid-stream may have written part of the batch in flight without acknowledging
/// it, and that batch is sent again (at-least-once, as the contract says: nothing lost).
/// Returns the records without their repeats, first occurrences in order.
fn assert_nothing_lost(records: &[Record], n: u64, max_duplicates: usize) -> Vec<&Record> {
    let mut seen = HashSet::new();
    let firsts: Vec<&Record> = records
        .iter()
        .filter(|r| seen.insert(identity(&r.value)))
        .collect();
    let duplicates = records.len() - firsts.len();
    eprintln!("{duplicates} events delivered twice (the batch in flight when the broker died)");
    assert!(
        duplicates <= max_duplicates,
        "{duplicates} duplicates, more than one batch ({max_duplicates})"
    );
    let expected = expected_ids(n);
    let missing = expected.iter().filter(|id| !seen.contains(*id)).count();
    assert_eq!(missing, 0, "{missing} of {n} events missing");
    assert_eq!(firsts.len() as u64, n);
    firsts
}

#[test]
fn a_hundred_thousand_events_arrive_exactly_once_round_robin_over_partitions() {
    require_tansu!();
    let _g = serial();
    let dir = TempDir::new("kafka-100k");
    let broker = Broker::start(dir.path());
    broker.create_topic("connbeat-100k", 3);
    let c = kafka_config(
        &broker,
        "connbeat-100k",
        // reachable_only: false, so that the split is exact whatever the broker's metadata
        // says of its leaders meanwhile (skipping is unit-tested in src/output/kafka.rs).
        "  partition.round_robin: {reachable_only: false}\n  compression: lz4\n  bulk_max_size: 2048\n\
         queue.mem: {events: 8192, flush.min_events: 2048, flush.timeout: 100ms}\n",
    );
    let n = 100_000u64;
    let (p, pipe) = pipeline(&c);
    for i in 0..n {
        assert!(p.publish(conn_event(i)));
    }
    drop(p);
    assert!(pipe.finish(Duration::from_secs(120)));
    let reader = Reader::new(&broker.bootstrap(), "connbeat-100k", 3);
    let mut got = Vec::new();
    reader.read_into(&mut got, n as usize, Duration::from_secs(120));
    reader.drain(&mut got, Duration::from_secs(2));
    assert_exactly_once(&got, n);
    let mut per_partition: HashMap<i32, usize> = HashMap::new();
    for r in &got {
        *per_partition.entry(r.partition).or_default() += 1;
    }
    assert_eq!(per_partition.len(), 3, "{per_partition:?}");
    for (p, count) in &per_partition {
        // Round-robin: each partition gets a third, give or take rounding.
        assert!(
            count.abs_diff(n as usize / 3) <= 2,
            "partition {p}: {count}"
        );
    }
}

#[test]
fn topic_and_key_come_from_the_event_and_hashing_keeps_a_key_on_one_partition() {
    require_tansu!();
    let _g = serial();
    let dir = TempDir::new("kafka-fmt");
    let broker = Broker::start(dir.path());
    broker.create_topic("cb-connbeat", 4);
    let c = kafka_config(
        &broker,
        "cb-%{[type]}",
        "  key: \"%{[local_process.binary]}-%{[remote_port]}\"\n  partition.hash: {}\n  compression: gzip\n",
    );
    let (p, pipe) = pipeline(&c);
    for i in 0..400 {
        let e = conn_event(i);
        let mut v = e.to_value();
        v["remote_port"] = (5000 + i % 4).into();
        assert!(p.publish(Event::new(e.timestamp, "connbeat", v)));
    }
    drop(p);
    assert!(pipe.finish(Duration::from_secs(60)));
    let reader = Reader::new(&broker.bootstrap(), "cb-connbeat", 4);
    let mut got = Vec::new();
    reader.read_into(&mut got, 400, Duration::from_secs(60));
    assert_eq!(got.len(), 400);
    let mut partition_of: HashMap<Vec<u8>, HashSet<i32>> = HashMap::new();
    for r in &got {
        assert_eq!(r.topic, "cb-connbeat");
        let key = r.key.clone().expect("a key");
        assert_eq!(
            String::from_utf8_lossy(&key),
            format!("psql-{}", r.value["remote_port"])
        );
        partition_of.entry(key).or_default().insert(r.partition);
    }
    assert_eq!(partition_of.len(), 4);
    assert!(
        partition_of.values().all(|p| p.len() == 1),
        "{partition_of:?}"
    );
}

#[test]
fn a_message_over_max_message_bytes_is_dropped_counted_and_logged_never_retried() {
    require_tansu!();
    let _g = serial();
    let _logs = logs();
    let dir = TempDir::new("kafka-big");
    let broker = Broker::start(dir.path());
    broker.create_topic("connbeat-big", 1);
    let c = kafka_config(
        &broker,
        "connbeat-big",
        "  max_message_bytes: 4000\n  backoff: {init: 60s, max: 60s}\n",
    );
    let rejected = counter("output.events.rejected");
    let (p, pipe) = pipeline(&c);
    for i in 0..10 {
        let mut e = conn_event(i);
        if i == 3 {
            e.push_field("pad", &"x".repeat(10_000));
        }
        assert!(p.publish(e));
    }
    drop(p);
    // A retry would wait 60 s: finishing in time shows none happened.
    assert!(pipe.finish(Duration::from_secs(30)));
    assert_eq!(counter("output.events.rejected") - rejected, 1);
    assert!(log_text().contains("over output.kafka.max_message_bytes (4000)"));
    let reader = Reader::new(&broker.bootstrap(), "connbeat-big", 1);
    let mut got = Vec::new();
    reader.read_into(&mut got, 9, Duration::from_secs(30));
    reader.drain(&mut got, Duration::from_secs(1));
    let cookies: Vec<&str> = got
        .iter()
        .map(|r| r.value["cookie"].as_str().unwrap())
        .collect();
    assert_eq!(cookies, ["0", "1", "2", "4", "5", "6", "7", "8", "9"]);
}

/// The counters of an in-process monitoring endpoint, as `/stats` serves them.
fn stats(addr: std::net::SocketAddr) -> serde_json::Value {
    let (status, body) = http_get(addr, "/stats").expect("/stats answers");
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

fn monitor() -> connbeat::monitor::http::MonitorServer {
    connbeat::monitor::http::start(
        "127.0.0.1",
        0,
        connbeat::monitor::http::BeatInfo {
            name: "test".into(),
            hostname: "test".into(),
            version: "0".into(),
            commit: "test".into(),
            features: "kafka".into(),
            output: "kafka".into(),
        },
    )
    .unwrap()
}

/// Kills the broker once everything published so far is acknowledged and read back (its
/// memory:// storage forgets what it holds), keeps the stream going during a 10 s outage,
/// restarts it, and checks that every event arrives exactly once. With `disk`, the pipeline
/// itself is also stopped and started again while the broker is down.
fn kill_and_restart_the_broker(tag: &str, disk: bool) {
    let _g = serial();
    let dir = TempDir::new(tag);
    let mut broker = Broker::start(dir.path());
    let topic = format!("connbeat-{tag}");
    broker.create_topic(&topic, 1);
    let mon = monitor();
    let disk_yaml = if disk {
        format!(
            "queue.disk: {{path: {}, max_size: 64MiB}}\n",
            dir.path().join("spool").display()
        )
    } else {
        String::new()
    };
    let c = kafka_config(
        &broker,
        &topic,
        &format!(
            "  timeout: 3s\n  backoff: {{init: 200ms, max: 2s}}\n  bulk_max_size: 1000\n\
             queue.mem: {{events: 4096, flush.min_events: 1000, flush.timeout: 50ms}}\n{disk_yaml}"
        ),
    );
    let (n, half) = (40_000u64, 20_000u64);
    let (p, pipe) = pipeline(&c);
    for i in 0..half {
        assert!(p.publish(conn_event(i)));
    }
    let mut got = Vec::new();
    {
        let reader = Reader::new(&broker.bootstrap(), &topic, 1);
        reader.read_into(&mut got, half as usize, Duration::from_secs(120));
    }
    assert_eq!(
        got.len() as u64,
        half,
        "the first half did not arrive before the kill"
    );
    let retries_before = stats(mon.local_addr())["output"]["retries"]
        .as_u64()
        .unwrap();

    broker.kill();
    let feeder = std::thread::spawn(move || {
        for i in half..n {
            assert!(p.publish(conn_event(i)));
        }
        p
    });
    let pipe = if disk {
        // The agent stops while the broker is down; its queue goes to disk...
        let p = feeder.join().unwrap();
        drop(p);
        assert!(!pipe.finish(Duration::from_secs(2)));
        assert!(counter("queue.disk.events") > 0);
        None
    } else {
        Some((pipe, feeder))
    };
    std::thread::sleep(Duration::from_secs(10)); // the outage the scenario asks for
    let retries_during = stats(mon.local_addr())["output"]["retries"]
        .as_u64()
        .unwrap();
    assert!(
        retries_during > retries_before,
        "no retry in /stats during the outage"
    );
    broker.restart();
    broker.create_topic(&topic, 1);
    match pipe {
        Some((pipe, feeder)) => {
            drop(feeder.join().unwrap());
            assert!(pipe.finish(Duration::from_secs(120)));
        }
        None => {
            // ...and starts again with the same disk queue.
            let (p, pipe) = pipeline(&c);
            drop(p);
            assert!(pipe.finish(Duration::from_secs(120)));
        }
    }
    let reader = Reader::new(&broker.bootstrap(), &topic, 1);
    reader.read_into(&mut got, n as usize, Duration::from_secs(120));
    reader.drain(&mut got, Duration::from_secs(2));
    // bulk_max_size above: one batch.
    let firsts = assert_nothing_lost(&got, n, 1000);
    if !disk {
        // In order, too: one partition, one batch in flight at a time.
        let cookies: Vec<u64> = firsts
            .iter()
            .map(|r| r.value["cookie"].as_str().unwrap().parse().unwrap())
            .collect();
        assert_eq!(cookies, (0..n).collect::<Vec<_>>());
    }
    let s = stats(mon.local_addr());
    eprintln!(
        "after the outage: output.retries={} output.events.failed={} output.events.acked={}",
        s["output"]["retries"], s["output"]["events"]["failed"], s["output"]["events"]["acked"]
    );
}

#[test]
fn the_broker_killed_mid_stream_and_restarted_10s_later_loses_nothing() {
    require_tansu!();
    kill_and_restart_the_broker("kill", false);
}

#[test]
fn with_the_disk_queue_the_agent_can_also_restart_while_the_broker_is_down() {
    require_tansu!();
    kill_and_restart_the_broker("kill-disk", true);
}

#[test]
fn a_real_agent_run_ships_its_connection_events_and_test_output_sees_the_topic() {
    require_tansu!();
    let dir = TempDir::new("kafka-agent");
    let broker = Broker::start(dir.path());
    broker.create_topic("connbeat-agent", 2);
    let yaml = format!(
        "output.kafka: {{hosts: [\"{}\"], topic: connbeat-agent, compression: zstd}}\n",
        broker.bootstrap()
    );
    let (ok, text) = test_output(dir.path(), &yaml);
    assert!(ok, "{text}");
    assert!(
        text.contains("topic connbeat-agent... OK (2 partition(s))"),
        "{text}"
    );

    let cfg = write_config(dir.path(), &yaml);
    let mut agent = Agent::start(dir.path(), &cfg, &["--once"]);
    assert_eq!(
        agent.wait(Duration::from_secs(120)),
        Some(0),
        "{}",
        agent.stderr()
    );
    let stderr = agent.stderr();
    let acked: usize = stderr
        .lines()
        .find(|l| l.contains("Total metrics:"))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|kv| kv.strip_prefix("output.events.acked="))
        })
        .unwrap_or_else(|| panic!("no acked total in {stderr}"))
        .parse()
        .unwrap();
    assert!(acked > 0);
    let reader = Reader::new(&broker.bootstrap(), "connbeat-agent", 2);
    let mut got = Vec::new();
    reader.read_into(&mut got, acked, Duration::from_secs(60));
    reader.drain(&mut got, Duration::from_secs(1));
    assert_eq!(got.len(), acked);
    for r in &got {
        assert_eq!(r.value["type"], "connbeat");
        assert!(r.value["local_ip"].is_string() && r.value["action"].is_string());
        assert!(r.value["beat"]["hostname"].is_string());
    }
}

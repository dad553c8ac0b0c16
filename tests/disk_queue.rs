//! `queue.disk`: events spool to disk while the output is down, survive an agent restart,
//! and drain in order when the output comes back.

mod shipkit;

use serde_json::Value;
use shipkit::server::{Reply, Server};
use shipkit::*;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// `name=value` from the agent's "Total metrics:" line.
fn total(stderr: &str, name: &str) -> u64 {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("Total metrics:"))
        .unwrap_or_else(|| panic!("no totals in:\n{stderr}"));
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .map_or(0, |v| v.parse().unwrap())
}

#[test]
fn events_written_while_the_collector_is_down_survive_an_agent_restart() {
    let dir = TempDir::new("disk-restart");
    let collector_port = free_port();
    let monitor_port = free_port();
    let spool = dir.path().join("spool");
    let cfg = write_config(
        dir.path(),
        &format!(
            "connbeat.poll_interval: 200ms\n\
             output.http: {{hosts: [\"127.0.0.1:{collector_port}\"], backoff: {{init: 100ms, max: 500ms}}}}\n\
             queue.disk: {{path: {}, max_size: 16MiB}}\n\
             queue.mem.flush.timeout: 100ms\n\
             shutdown_timeout: 2s\n\
             http: {{enabled: true, host: 127.0.0.1, port: {monitor_port}}}\n",
            spool.display()
        ),
    );
    let stats_addr: SocketAddr = format!("127.0.0.1:{monitor_port}").parse().unwrap();

    // Run 1: nothing listens on the collector's port.
    let mut first = Agent::start(dir.path(), &cfg, &[]);
    wait_for(
        Duration::from_secs(60),
        "events on disk and retries",
        || {
            let (_, body) = http_get(stats_addr, "/stats")?;
            let v: Value = serde_json::from_str(&body).ok()?;
            (v["queue"]["disk"]["events"].as_u64()? > 0 && v["output"]["retries"].as_u64()? > 0)
                .then_some(())
        },
    );
    assert_eq!(
        first.stop(Duration::from_secs(30)),
        Some(0),
        "{}",
        first.stderr()
    );
    let stderr1 = first.stderr();
    let spooled = total(&stderr1, "queue.disk.written");
    assert!(spooled > 0, "{stderr1}");
    assert_eq!(total(&stderr1, "output.events.acked"), 0);
    assert!(
        stderr1.contains("stay in the disk queue for the next start"),
        "{stderr1}"
    );
    let restart_at = connbeat::event::format_timestamp(std::time::SystemTime::now());

    // Run 2: the collector is up; the spooled events go first.
    let server = Server::start(collector_port, None, Arc::new(|_| Reply::status(200)));
    std::fs::remove_file(dir.path().join("stderr")).unwrap();
    let mut second = Agent::start(dir.path(), &cfg, &[]);
    let received = || -> Vec<Value> {
        server
            .requests()
            .iter()
            .flat_map(|r| {
                r.text()
                    .lines()
                    .map(|l| serde_json::from_str::<Value>(l).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    wait_for(
        Duration::from_secs(60),
        "the spooled events at the collector",
        || {
            let n = received()
                .iter()
                .filter(|e| e["@timestamp"].as_str().unwrap() < restart_at.as_str())
                .count() as u64;
            (n >= spooled).then_some(())
        },
    );
    assert_eq!(
        second.stop(Duration::from_secs(30)),
        Some(0),
        "{}",
        second.stderr()
    );
    let events = received();
    let ids: Vec<String> = events.iter().map(identity).collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "duplicates");
    let old: Vec<&Value> = events
        .iter()
        .filter(|e| e["@timestamp"].as_str().unwrap() < restart_at.as_str())
        .collect();
    assert_eq!(
        old.len() as u64,
        spooled,
        "events of the first run lost or duplicated"
    );
    // In order: every event of the first run before any of the second.
    let first_new = events
        .iter()
        .position(|e| e["@timestamp"].as_str().unwrap() >= restart_at.as_str())
        .unwrap_or(events.len());
    assert_eq!(
        first_new as u64, spooled,
        "first-run events arrived after new ones"
    );
    let stderr2 = second.stderr();
    assert!(
        stderr2.contains(&format!("{spooled} events from a previous run")),
        "{stderr2}"
    );
}

#[test]
fn the_pipeline_drains_the_spool_in_order_after_a_shutdown_with_the_output_down() {
    let _g = serial();
    let dir = TempDir::new("disk-lib");
    let port = free_port();
    let yaml = format!(
        "output.http: {{hosts: [\"127.0.0.1:{port}\"], bulk_max_size: 200, backoff: {{init: 50ms, max: 200ms}}}}\n\
         queue.disk: {{path: {}, max_size: 8MiB}}\n\
         queue.mem: {{events: 500, flush.min_events: 200, flush.timeout: 50ms}}\n",
        dir.path().join("spool").display()
    );
    let c = config(&yaml);
    let dropped = counter("output.events.dropped");
    let (p, pipe) = pipeline(&c);
    for i in 0..3000 {
        assert!(p.publish(conn_event(i)));
    }
    drop(p);
    assert!(
        !pipe.finish(Duration::from_millis(500)),
        "nothing can have been sent"
    );
    assert_eq!(counter("output.events.dropped"), dropped);

    let server = Server::start(port, None, Arc::new(|_| Reply::status(200)));
    let (p, pipe) = pipeline(&c);
    for i in 3000..4000 {
        assert!(p.publish(conn_event(i)));
    }
    drop(p);
    assert!(pipe.finish(Duration::from_secs(60)));
    let cookies: Vec<u64> = server
        .requests()
        .iter()
        .flat_map(|r| {
            r.text()
                .lines()
                .map(|l| {
                    serde_json::from_str::<Value>(l).unwrap()["cookie"]
                        .as_str()
                        .unwrap()
                        .parse()
                        .unwrap()
                })
                .collect::<Vec<u64>>()
        })
        .collect();
    assert_eq!(cookies, (0..4000).collect::<Vec<_>>());
}

#[test]
fn a_full_spool_with_the_output_down_does_not_hang_shutdown_and_counts_what_it_drops() {
    let _g = serial();
    let dir = TempDir::new("disk-full");
    let port = free_port();
    let c = config(&format!(
        "output.http: {{hosts: [\"127.0.0.1:{port}\"], backoff: {{init: 50ms, max: 200ms}}}}\n\
         queue.disk: {{path: {}, max_size: 64KiB}}\n\
         queue.mem: {{events: 100}}\n",
        dir.path().join("spool").display()
    ));
    let dropped = counter("output.events.shutdown");
    let (p, pipe) = pipeline(&c);
    // Fill the spool and then the memory queue, without blocking.
    let mut i = 0;
    wait_for(Duration::from_secs(60), "a full queue", || {
        loop {
            match p.try_publish(conn_event(i)) {
                Ok(()) => i += 1,
                Err(connbeat::publish::TryPublishError::Full(_)) => {
                    return (counter("queue.disk.full") > 0).then_some(());
                }
                Err(e) => panic!("{e:?}"),
            }
        }
    });
    assert!(p.is_full());
    drop(p);
    assert!(!pipe.finish(Duration::from_millis(300)));
    assert!(counter("output.events.shutdown") > dropped);
}

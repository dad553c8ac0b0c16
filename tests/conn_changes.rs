//! Polls that follow state changes (`connbeat.follow_state_changes`): between full dumps a
//! poll looks up only the sockets the kernel saw become ESTABLISHED or LISTEN. Every
//! connection that opens and closes meanwhile must still be reported (open and closed,
//! with its process), and the full dump once per `aggregation` must repair a change the
//! lookups missed.

mod common;

use common::*;
use connbeat::config::from_yaml_str;
use connbeat::conn::source::ConnSource;
use connbeat::event::CommonFields;
use connbeat::monitor::{self, METRICS};
use connbeat::publish::{self, PipelineSettings};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Every connection of a churn of 5 rounds of 10 gets open and closed events on both
/// ends, from polls that only looked up what changed.
#[test]
fn every_churned_connection_is_reported_by_change_polls() {
    if !root_or_skip("conn_changes") {
        return;
    }
    let dir = TempDir::new("changes");
    // No full dump after the first within the test: aggregation far away.
    let cfg = console_config(
        &dir,
        "connbeat.poll_interval: 200ms\nconnbeat.aggregation: 600s\nlogging.metrics.enabled: false",
    );
    let mut agent = Agent::start(&cfg, &["-d", "conn"]);
    let first = poll_until(Duration::from_secs(60), || {
        agent
            .stderr()
            .iter()
            .find(|l| l.contains("poll done"))
            .cloned()
    })
    .expect("a first poll");
    let started = agent
        .stderr()
        .iter()
        .any(|l| l.contains("sockets that changed state"));
    if !started {
        eprintln!(
            "SKIPPED every_churned_connection_is_reported_by_change_polls: the agent does not \
             follow state changes here (the connect-time recorder did not load); startup: {:?}",
            agent.stderr().iter().find(|l| l.contains("started with"))
        );
        return;
    }
    eprintln!("first poll: {first}");
    let me = std::process::id() as u64;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap();
    let mut all: Vec<(SocketAddr, SocketAddr)> = Vec::new();
    for round in 0..5 {
        let mut held = Vec::new();
        for _ in 0..10 {
            let c = TcpStream::connect(server).unwrap();
            let (s, _) = listener.accept().unwrap();
            let pair = (c.local_addr().unwrap(), s.local_addr().unwrap());
            all.push(pair);
            held.push((c, s));
        }
        let ports: Vec<u16> = held
            .iter()
            .map(|(c, _)| c.local_addr().unwrap().port())
            .collect();
        agent.wait_events(
            &format!("open events of round {round}"),
            Duration::from_secs(60),
            |ev| {
                ports.iter().all(|&p| {
                    let client = ev.iter().any(|e| {
                        e["action"] == "open"
                            && e["local_port"] == p
                            && e["direction"] == "outgoing"
                            && e["local_process"]["pid"] == me
                    });
                    let server_side = ev.iter().any(|e| {
                        e["action"] == "open"
                            && e["remote_port"] == p
                            && e["local_port"] == server.port()
                            && e["direction"] == "incoming"
                            && e["local_process"]["pid"] == me
                    });
                    client && server_side
                })
            },
        );
        drop(held);
    }
    agent.wait_events(
        "closed events of every connection",
        Duration::from_secs(60),
        |ev| {
            all.iter().all(|(client, _)| {
                let closed = |local: u16, remote: u16| {
                    ev.iter().any(|e| {
                        e["action"] == "closed"
                            && e["local_port"] == local
                            && e["remote_port"] == remote
                    })
                };
                closed(client.port(), server.port()) && closed(server.port(), client.port())
            })
        },
    );
    // Exactly one open and one closed event per socket: nothing reported twice.
    let ev = agent.events();
    for (client, _) in &all {
        for (local, remote) in [
            (client.port(), server.port()),
            (server.port(), client.port()),
        ] {
            for action in ["open", "closed"] {
                let n = ev
                    .iter()
                    .filter(|e| {
                        e["action"] == action
                            && e["local_port"] == local
                            && e["remote_port"] == remote
                    })
                    .count();
                assert_eq!(n, 1, "{action} events of {local} -> {remote}");
            }
        }
    }
    let (status, stderr) = agent.terminate(Duration::from_secs(20));
    assert!(status.success());
    // Every poll after the first looked up only what changed (or found nothing changed).
    let polls: Vec<&String> = stderr.iter().filter(|l| l.contains("poll done")).collect();
    assert!(polls.len() > 5, "{polls:?}");
    for l in &polls[1..] {
        assert!(
            l.contains(" changes=") || l.contains(" unchanged=true"),
            "a poll dumped: {l}"
        );
    }
    assert!(
        polls
            .iter()
            .any(|l| l.contains(" changes=") && !l.contains(" changes=0")),
        "no poll looked anything up"
    );
    let totals = total_metrics(&stderr).expect("Total metrics line");
    assert!(
        totals.get("conn.changes.looked_up").copied().unwrap_or(0) >= 100,
        "{totals:?}"
    );
}

/// A connection whose change is lost (thrown away before a poll could look it up) is
/// not seen by the polls that follow changes, and is reported by the full dump once the
/// `aggregation` window has passed.
#[test]
fn the_full_dump_repairs_a_missed_change() {
    if !root_or_skip("conn_changes") {
        return;
    }
    let yaml = "connbeat.aggregation: 5s\nconnbeat.poll_interval: 200ms\noutput.console.enabled: true\n\
                queue.mem: {events: 65536, flush.min_events: 1, flush.timeout: 50ms}";
    let config = from_yaml_str(yaml, &[], &|_| None).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let (publisher, pipeline) = publish::start(
        PipelineSettings::from_config(&config),
        Box::new(Collect(events.clone())),
        CommonFields::from_config(&config),
    )
    .unwrap();
    let mut source = ConnSource::new(&config.connbeat, publisher, true).unwrap();
    if !source.follows_changes() {
        eprintln!(
            "SKIPPED the_full_dump_repairs_a_missed_change: state changes are not followed here \
             (connect-time recorder: {})",
            source.connect_mode()
        );
        return;
    }
    source.poll().unwrap(); // the first poll dumps everything
    let me = std::process::id() as u64;
    let open_of = |port: u16| {
        events
            .lock()
            .unwrap()
            .iter()
            .find(|e| e["action"] == "open" && e["local_port"] == port)
            .cloned()
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let lost = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (_s1, _) = listener.accept().unwrap();
    let lost_port = lost.local_addr().unwrap().port();
    source.forget_changes();
    // A second connection whose change is not lost: once its open event is out, every
    // event of the polls before it is too (one queue, in order).
    let kept = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (_s2, _) = listener.accept().unwrap();
    let kept_port = kept.local_addr().unwrap().port();
    let changes_before = monitor::get(&METRICS.conn_polls_changes);
    source.poll().unwrap();
    assert_eq!(
        monitor::get(&METRICS.conn_polls_changes),
        changes_before + 1,
        "the poll within the window follows changes"
    );
    let e = poll_until(Duration::from_secs(10), || open_of(kept_port))
        .expect("the connection whose change was recorded is reported by the change poll");
    assert_eq!(e["local_process"]["pid"], me);
    assert!(
        open_of(lost_port).is_none(),
        "the connection whose change was lost is not seen by lookups"
    );
    // Polls until the full dump of the next window reports it.
    let mut dumps = 0;
    let found = poll_until(Duration::from_secs(30), || {
        let count = || {
            monitor::get(&METRICS.conn_polls_changes) + monitor::get(&METRICS.conn_polls_unchanged)
        };
        let before = count();
        source.poll().unwrap();
        if count() == before {
            dumps += 1;
        }
        open_of(lost_port)
    })
    .expect("the connection whose change was lost is reported within 30 s");
    assert!(dumps > 0, "reported without a full dump");
    assert_eq!(found["local_process"]["pid"], me);
    assert_eq!(found["direction"], "outgoing");
    drop(source);
    assert!(pipeline.finish(Duration::from_secs(5)));
}

//! The self-monitoring endpoint of a real agent run: `/` and `/stats` are JSON, and
//! `/metrics` parses as Prometheus text with a real parser (the `prometheus-parse` crate).

mod shipkit;

use shipkit::*;
use std::net::SocketAddr;
use std::time::Duration;

/// A counter in /stats: a number, or under "value" when its name is also a prefix of
/// others (`conn.polls` and `conn.polls.unchanged`).
fn num(v: &serde_json::Value) -> Option<u64> {
    v.as_u64().or_else(|| v["value"].as_u64())
}

#[test]
fn a_running_agent_serves_info_stats_and_prometheus_metrics() {
    let dir = TempDir::new("monitor");
    let port = free_port();
    let out = dir.path().join("out");
    let cfg = write_config(
        dir.path(),
        &format!(
            "connbeat.poll_interval: 200ms\n\
             output.file: {{path: {}, filename: events}}\n\
             http.enabled: true\nhttp.host: 127.0.0.1\nhttp.port: {port}\n\
             logging.metrics.enabled: false\n",
            out.display()
        ),
    );
    let mut agent = Agent::start(dir.path(), &cfg, &[]);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    // Wait until the agent has polled at least twice and published something.
    let stats: serde_json::Value = wait_for(Duration::from_secs(30), "two polls in /stats", || {
        let (status, body) = http_get(addr, "/stats")?;
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("/stats is JSON");
        (num(&v["conn"]["polls"])? >= 2 && v["output"]["events"]["acked"].as_u64()? > 0)
            .then_some(v)
    });
    assert!(stats["queue"]["published"].as_u64().unwrap() > 0, "{stats}");

    let (status, body) = http_get(addr, "/").unwrap();
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["beat"], "connbeat");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["output"], "file");

    let (status, text) = http_get(addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape =
        prometheus_parse::Scrape::parse(lines).expect("/metrics parses as Prometheus text");
    let find = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
    };
    match find("connbeat_conn_polls").value {
        prometheus_parse::Value::Counter(v) => assert!(v >= 2.0),
        ref other => panic!("conn.polls should be a counter, got {other:?}"),
    }
    match find("connbeat_queue_events").value {
        prometheus_parse::Value::Gauge(_) => {}
        ref other => panic!("queue.events should be a gauge, got {other:?}"),
    }
    assert!(scrape.docs.contains_key("connbeat_output_events_acked"));
    // Every counter the agent keeps is exported, once.
    assert_eq!(scrape.samples.len(), connbeat::monitor::COUNTERS.len());

    let (status, _) = http_get(addr, "/nope").unwrap();
    assert_eq!(status, 404);
    assert_eq!(
        agent.stop(Duration::from_secs(20)),
        Some(0),
        "{}",
        agent.stderr()
    );
}

#[test]
fn a_port_in_use_is_a_configuration_error_naming_http_port() {
    let dir = TempDir::new("monitor-busy");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let cfg = write_config(
        dir.path(),
        &format!(
            "output.file: {{path: {}}}\nhttp.enabled: true\nhttp.host: 127.0.0.1\nhttp.port: {port}\n",
            dir.path().join("out").display()
        ),
    );
    let mut agent = Agent::start(dir.path(), &cfg, &[]);
    assert_eq!(
        agent.wait(Duration::from_secs(20)),
        Some(1),
        "{}",
        agent.stderr()
    );
    assert!(agent.stderr().contains("http.port"), "{}", agent.stderr());
}

/// The periodic log line lists the counters that moved in its window, and only those.
#[test]
fn the_periodic_metrics_line_shows_only_what_moved() {
    let dir = TempDir::new("metrics-line");
    let out = dir.path().join("out");
    let cfg = write_config(
        dir.path(),
        &format!(
            "connbeat.poll_interval: 200ms\n\
             output.file: {{path: {}, filename: events}}\n\
             logging.metrics.period: 1s\n",
            out.display()
        ),
    );
    let mut agent = Agent::start(dir.path(), &cfg, &[]);
    let windows = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.split("Non-zero metrics in the last 1s: ").nth(1))
            .map(str::to_string)
            .collect()
    };
    // Three windows: the first has the startup's events, the later ones only polls.
    let lines = wait_for(Duration::from_secs(30), "three metrics lines", || {
        let w = windows(&agent.stderr());
        (w.len() >= 3).then_some(w)
    });
    let counters = |line: &str| -> Vec<(String, u64)> {
        line.split_whitespace()
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.to_string(), v.trim_end_matches(',').parse().ok()?))
            })
            .collect()
    };
    for line in &lines {
        let c = counters(line);
        assert!(!c.is_empty(), "{line}");
        assert!(c.iter().all(|(_, v)| *v > 0), "a zero in {line}");
        let polls = c.iter().find(|(k, _)| k == "conn.polls").map(|(_, v)| *v);
        assert!(
            polls.is_some_and(|p| (1..=10).contains(&p)),
            "polls in every window (about five a second): {line}"
        );
    }
    // The listening sockets were published once, at the first poll: a later window that
    // saw no new socket does not list them.
    let first = counters(&lines[0]);
    assert!(
        first.iter().any(|(k, _)| k == "conn.events.listening"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1..].iter().any(|l| !counters(l)
            .iter()
            .any(|(k, _)| k == "conn.events.listening")),
        "every window lists conn.events.listening: {lines:#?}"
    );
    assert_eq!(agent.stop(Duration::from_secs(20)), Some(0));
}

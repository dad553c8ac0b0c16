//! `export template` against the events a real agent run produces: every field path of
//! every event must be mapped, with a type that accepts the value.

mod inspect_util;
mod shipkit;

use serde_json::Value;
use shipkit::*;
use std::process::Command;
use std::time::Duration;

/// Walks `event`, checking each leaf against the mapping `props`.
fn check(path: &str, v: &Value, props: &Value, problems: &mut Vec<String>) {
    let Value::Object(m) = v else { return };
    for (k, child) in m {
        let p = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        let Some(mapping) = props.get(k) else {
            problems.push(format!("{p} is not in the template"));
            continue;
        };
        let ty = mapping["type"].as_str().unwrap_or("object");
        if ty == "object" && mapping.get("dynamic") == Some(&Value::Bool(true)) {
            continue;
        }
        match (ty, child) {
            ("object", Value::Object(_)) => check(&p, child, &mapping["properties"], problems),
            _ if connbeat::output::template::compatible(ty, child) => {}
            _ => problems.push(format!("{p} is mapped as {ty} but the event has {child}")),
        }
    }
}

#[test]
fn the_template_maps_every_field_of_real_events_with_a_compatible_type() {
    let dir = TempDir::new("template");
    // Connection events of a real poll, with some traffic of our own, so there are listening and connected sockets with owners.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let _s = l.accept().unwrap();
    let out = dir.path().join("out");
    let cfg = write_config(
        dir.path(),
        &format!(
            "tags: [t1]\nfields: {{env: test}}\noutput.file: {{path: {}, filename: events}}\n",
            out.display()
        ),
    );
    let mut agent = Agent::start(dir.path(), &cfg, &["--once"]);
    assert_eq!(
        agent.wait(Duration::from_secs(60)),
        Some(0),
        "{}",
        agent.stderr()
    );
    let text = std::fs::read_to_string(out.join("events")).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.len() > 2, "{} events", events.len());

    let t = Command::new(env!("CARGO_BIN_EXE_connbeat"))
        .args(["-c"])
        .arg(&cfg)
        .args(["export", "template"])
        .output()
        .unwrap();
    assert!(t.status.success(), "{}", String::from_utf8_lossy(&t.stderr));
    let template: Value = serde_json::from_slice(&t.stdout).expect("the template is JSON");
    assert_eq!(template["index_patterns"][0], "connbeat-*");
    let props = &template["template"]["mappings"]["properties"];
    let mut problems = Vec::new();
    for e in &events {
        check("", e, props, &mut problems);
    }
    problems.sort();
    problems.dedup();
    assert!(problems.is_empty(), "{problems:#?}");
}

/// The events of one agent run with `cfg` and `args`, written to `out/events`.
fn events_of_run(dir: &std::path::Path, cfg: &std::path::Path, args: &[&str]) -> Vec<Value> {
    let mut agent = Agent::start(dir, cfg, args);
    assert_eq!(
        agent.wait(Duration::from_secs(60)),
        Some(0),
        "{}",
        agent.stderr()
    );
    let text = std::fs::read_to_string(dir.join("out/events")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_ecs_template_maps_every_field_of_real_ecs_events() {
    let dir = TempDir::new("template-ecs");
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let _s = l.accept().unwrap();
    let out = dir.path().join("out");
    let cfg = write_config(
        dir.path(),
        &format!(
            "tags: [t1]\nfields: {{env: test}}\nconnbeat.event_format: ecs\n\
             output.file: {{path: {}, filename: events}}\n{}",
            out.display(),
            inspect_util::PROTOCOLS_YAML.replace("output.console: {enabled: true}", "")
        ),
    );
    let mut events = events_of_run(dir.path(), &cfg, &["--once"]);
    let connections = events.len();
    assert!(connections > 2, "{connections} connection events");
    assert!(
        events
            .iter()
            .all(|e| e["event"]["dataset"] == "connbeat.connection"),
        "connection events in the ECS shape"
    );
    std::fs::remove_dir_all(&out).unwrap();
    // Transactions of every protocol, from the recorded captures.
    for pcap in [
        "http.pcap",
        "dns.pcap",
        "redis.pcap",
        "mysql.pcap",
        "pgsql.pcap",
        "tls.pcap",
    ] {
        let path = inspect_util::data(pcap);
        if !path.exists() {
            continue;
        }
        let _ = std::fs::remove_dir_all(&out);
        let got = events_of_run(dir.path(), &cfg, &["-I", path.to_str().unwrap()]);
        assert!(!got.is_empty(), "{pcap}: no transactions");
        events.extend(got);
    }
    let transactions = events.len() - connections;
    assert!(
        events[connections..]
            .iter()
            .all(|e| e["event"]["duration"].is_u64() || e["status"] == "Error"),
        "transactions in the ECS shape"
    );

    let t = Command::new(env!("CARGO_BIN_EXE_connbeat"))
        .args(["-c"])
        .arg(&cfg)
        .args(["export", "template"])
        .output()
        .unwrap();
    assert!(t.status.success(), "{}", String::from_utf8_lossy(&t.stderr));
    let template: Value = serde_json::from_slice(&t.stdout).expect("the template is JSON");
    let props = &template["template"]["mappings"]["properties"];
    assert!(
        props.get("beat").is_none(),
        "the ECS template has no classic fields"
    );
    let mut problems = Vec::new();
    for e in &events {
        check("", e, props, &mut problems);
    }
    problems.sort();
    problems.dedup();
    assert!(
        problems.is_empty(),
        "{connections} connection events, {transactions} transactions: {problems:#?}"
    );
}

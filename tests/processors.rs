//! Beats processors end to end: a chain drops, trims and adds fields on live connection
//! events (`--once` on real sockets) and on offline transactions (`-I` capture), per
//! protocol before top level; a typo in a processor's name is a configuration error that
//! exits 1 naming the key; Packetbeat 8's stock `packetbeat.yml` loads.

mod common;

use common::*;
use connbeat::config::LoadOptions;
use connbeat::event::{CommonFields, Event};
use connbeat::processors::Processing;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn keys(e: &Value) -> BTreeSet<String> {
    e.as_object().unwrap().keys().cloned().collect()
}

/// Connection events of real sockets: the chain keeps only those of one port, trims them
/// to a few fields and adds one; what it drops is counted.
#[test]
fn live_connection_events_are_dropped_trimmed_and_extended() {
    if !root_or_skip("live_connection_events_are_dropped_trimmed_and_extended") {
        return;
    }
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let _c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let _s = l.accept().unwrap();
    let dir = TempDir::new("proc-live");
    let cfg = console_config(
        &dir,
        &format!(
            r#"
processors:
  - drop_event:
      when.not.or:
        - equals.local_port: {port}
        - equals.remote_port: {port}
  - include_fields:
      fields: [action, direction, local_port, remote_port, community_id, beat.name]
  - add_fields: {{target: "", fields: {{site: lab}}}}
  - add_tags:
      tags: [seen]
      when.has_fields: ["@timestamp", beat.name]
"#
        ),
    );
    let once = run_once(&cfg, &[]);
    once.assert_ok();
    assert_eq!(
        once.events.len(),
        3,
        "listener and both ends: {:?}",
        once.events
    );
    for e in &once.events {
        let lp = u(e, "/local_port").unwrap();
        let rp = u(e, "/remote_port");
        assert!(lp == u64::from(port) || rp == Some(port.into()), "{e}");
        assert_eq!(e["site"], "lab", "{e}");
        assert_eq!(e["tags"], json!(["seen"]), "{e}");
        assert_eq!(
            keys(&e["beat"]),
            BTreeSet::from(["name".to_string()]),
            "{e}"
        );
        let mut want: BTreeSet<String> = [
            "@timestamp",
            "type",
            "action",
            "direction",
            "local_port",
            "beat",
            "site",
            "tags",
        ]
        .map(String::from)
        .into();
        if s(e, "/direction") != "listening" {
            want.extend(["remote_port", "community_id"].map(String::from));
        }
        assert_eq!(keys(e), want, "{e}");
    }
    let totals = total_metrics(&once.stderr.lines().map(String::from).collect::<Vec<_>>())
        .expect("Total metrics line");
    assert!(
        totals.get("processors.dropped").copied().unwrap_or(0) > 0,
        "{totals:?}"
    );
}

/// Offline HTTP transactions (tests/data/http.pcap: 9, two of them 404s): the protocol's
/// chain runs first (its rename is what the top-level condition reads), the top-level one
/// sees the finished event (`beat`, `tags`, `fields`).
#[test]
fn offline_transactions_per_protocol_then_top_level() {
    let dir = TempDir::new("proc-offline");
    let cfg = console_config(
        &dir,
        r#"
fields: {env: test}
connbeat.protocols:
  - type: http
    ports: [18080]
    processors:
      - rename: {fields: [{from: status, to: outcome}]}
processors:
  - drop_event.when.equals.outcome: "Client Error"
  - drop_fields: {fields: [query, beat.hostname, http.request], ignore_missing: true}
  - add_fields: {target: project, fields: {name: connbeat}}
  - add_tags:
      tags: [staging]
      when.equals.fields.env: test
"#,
    );
    let out = Command::new(CONNBEAT)
        .args(["-c", cfg.to_str().unwrap(), "-I"])
        .arg(data("http.pcap"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 7, "9 transactions, the two 404s dropped");
    for e in &events {
        assert_eq!(e["type"], "http");
        assert!(e.get("status").is_none() && e["outcome"].is_string(), "{e}");
        assert_ne!(e["outcome"], "Client Error");
        assert!(e.get("query").is_none(), "{e}");
        assert!(e["beat"].get("hostname").is_none(), "{e}");
        assert!(e["http"].get("request").is_none(), "{e}");
        assert!(e["http"]["response"]["code"].is_u64(), "{e}");
        assert_eq!(e["project"], json!({"name": "connbeat"}));
        assert_eq!(e["tags"], json!(["staging"]));
        assert_eq!(e["fields"]["env"], "test");
        assert!(e["community_id"].as_str().unwrap().starts_with("1:"));
    }
    let totals = total_metrics(&stderr.lines().map(String::from).collect::<Vec<_>>()).unwrap();
    assert_eq!(totals.get("processors.dropped"), Some(&2), "{totals:?}");
    assert_eq!(
        totals.get("queue.published"),
        Some(&7),
        "dropped events never reach the queue: {totals:?}"
    );
}

/// A misspelt processor, option or condition stops the agent before it starts: exit 1,
/// the key named (with the likely intended one), from `test config` and from `run`.
#[test]
fn typos_exit_1_naming_the_key() {
    let dir = TempDir::new("proc-typo");
    let cases = [
        (
            "processors:\n  - add_tags: {tags: [a]}\n  - drop_fieldz: {fields: [a]}\n",
            "`processors.1.drop_fieldz`; did you mean `processors.1.drop_fields`?",
        ),
        (
            "processors:\n  - drop_fields: {fields: [a], ignore_mising: true}\n",
            "processors.0.drop_fields.ignore_mising",
        ),
        (
            "processors:\n  - drop_event.when.equal.status: OK\n",
            "`processors.0.drop_event.when.equal`; did you mean `processors.0.drop_event.when.equals`?",
        ),
        (
            "connbeat.protocols:\n  - type: http\n    ports: [80]\n    processors: [{add_tag: {tags: [x]}}]\n",
            "connbeat.protocols.0.processors.0.add_tag",
        ),
    ];
    for (yaml, needle) in cases {
        let cfg = console_config(&dir, yaml);
        for args in [&["test", "config"][..], &["--once"][..]] {
            let out = Command::new(CONNBEAT)
                .arg("-c")
                .arg(&cfg)
                .args(args)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?} {yaml}: {stderr}");
            assert!(
                stderr.contains(needle),
                "{args:?}: {needle:?} not in {stderr}"
            );
        }
    }
}

/// The file Packetbeat 8 installs loads: what has no meaning here is accepted with one
/// warning per key, and its processors run (host metadata unless tagged `forwarded`, MIME
/// types of bodies).
#[test]
fn packetbeat_stock_file_loads() {
    let stock_path = data("packetbeat/packetbeat.yml");
    let load = |path: PathBuf| {
        connbeat::config::load(&LoadOptions {
            path: Some(path),
            overrides: vec![],
            strict_perms: false,
        })
    };
    // Settings connbeat has no use for are accepted with a warning: the file loads.
    let l = load(stock_path).unwrap_or_else(|e| panic!("the stock packetbeat.yml: {e}"));
    check_stock(&l.config, &l.notes);
}

fn check_stock(c: &connbeat::config::Config, w: &[String]) {
    for key in [
        "setup.template.settings",
        "setup.kibana",
        "output.elasticsearch.preset",
        "processors.1.add_cloud_metadata",
        "processors.2.add_docker_metadata",
    ] {
        let n = w
            .iter()
            .filter(|l| l.starts_with(&format!("{key}:")))
            .count();
        assert_eq!(n, 1, "one warning for {key}: {w:#?}");
    }
    // Every protocol of the stock file is decoded, and enabled.
    let enabled: Vec<&str> = c
        .connbeat
        .protocols
        .iter()
        .filter(|p| p.common().enabled)
        .map(|p| p.name())
        .collect();
    assert_eq!(
        enabled,
        [
            "icmp",
            "amqp",
            "cassandra",
            "dhcpv4",
            "dns",
            "http",
            "memcache",
            "mysql",
            "pgsql",
            "redis",
            "thrift",
            "mongodb",
            "nfs",
            "tls",
            "sip"
        ]
    );
    let common = CommonFields::from_config(c);
    let p = Processing::from_config(c, &common)
        .unwrap()
        .expect("processors");
    let t = std::time::SystemTime::now();
    let e = Event::new(
        t,
        "http",
        json!({"http": {"response": {"body": {"content": "{\"a\": 1}"}}}}),
    );
    let v = common.finish(p.apply(e).unwrap()).value();
    assert_eq!(
        v["http"]["response"]["mime_type"], "application/json",
        "{v}"
    );
    assert_eq!(v["host"]["os"]["type"], "linux", "{v}");
    let mut tagged = c.clone();
    tagged.tags = vec!["forwarded".into()];
    let common = CommonFields::from_config(&tagged);
    let p = Processing::from_config(&tagged, &common).unwrap().unwrap();
    let v = common
        .finish(p.apply(Event::new(t, "dns", json!({}))).unwrap())
        .value();
    assert!(v.get("host").is_none(), "{v}");
    assert_eq!(v["tags"], json!(["forwarded"]));
}

/// `add_cloud_metadata` is accepted and does nothing: the agent opens no IP connection at
/// all (a metadata service is 169.254.169.254 or a name resolving to it), seen by strace.
#[test]
fn add_cloud_metadata_never_connects() {
    if !root_or_skip("add_cloud_metadata_never_connects") {
        return;
    }
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("skipped: add_cloud_metadata_never_connects needs strace");
        return;
    }
    let dir = TempDir::new("proc-cloud");
    let cfg = console_config(
        &dir,
        "processors: [{add_cloud_metadata: ~}, {add_docker_metadata: ~}]\nconnbeat.docker_socket: \"\"",
    );
    let trace = dir.path().join("trace");
    let out = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=connect,sendto", "-o"])
        .arg(&trace)
        .arg(CONNBEAT)
        .arg("-c")
        .arg(&cfg)
        .args(["--once", "-N"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("processors.0.add_cloud_metadata: accepted and ignored"),
        "{stderr}"
    );
    let trace = std::fs::read_to_string(&trace).unwrap();
    let ip: Vec<&str> = trace
        .lines()
        .filter(|l| l.contains("AF_INET") || l.contains("169.254.169.254"))
        .collect();
    assert!(ip.is_empty(), "IP connections: {ip:#?}");
    assert!(
        trace.contains("AF_NETLINK") || trace.contains("sendto"),
        "traced: {trace}"
    );
}

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

/// A capture with transactions of each protocol of the registry, and the ports it uses
/// there: Packetbeat's system-test captures (tests/data/packetbeat-suite), and connbeat's
/// own SMTP session.
const CAPTURES: &[(&str, &str, &str)] = &[
    ("http", "[80]", "packetbeat-suite/pcaps/http_minitwit.pcap"),
    ("dns", "[53]", "packetbeat-suite/pcaps/dns_not_found.pcap"),
    (
        "redis",
        "[6380]",
        "packetbeat-suite/pcaps/redis_one_transaction.pcap",
    ),
    (
        "mysql",
        "[3306]",
        "packetbeat-suite/pcaps/mysql_with_whitespaces.pcap",
    ),
    (
        "pgsql",
        "[5432]",
        "packetbeat-suite/pcaps/pgsql_insert_error.pcap",
    ),
    ("tls", "[443]", "packetbeat-suite/pcaps/http2-16-ssl.pcap"),
    ("icmp", "[]", "packetbeat-suite/pcaps/icmp/icmp4_ping.pcap"),
    ("dhcpv4", "[67, 68]", "packetbeat-suite/pcaps/dhcp.pcap"),
    (
        "memcache",
        "[11211]",
        "packetbeat-suite/pcaps/memcache/memcache_bin_tcp_single_load_store.pcap",
    ),
    (
        "mongodb",
        "[27017]",
        "packetbeat-suite/pcaps/mongodb_create_collection.pcap",
    ),
    (
        "cassandra",
        "[9042]",
        "packetbeat-suite/pcaps/cassandra/v4/cassandra_compressed.pcap",
    ),
    (
        "thrift",
        "[9090]",
        "packetbeat-suite/pcaps/thrift_tutorial.pcap",
    ),
    (
        "amqp",
        "[5672]",
        "packetbeat-suite/pcaps/amqp_channel_error.pcap",
    ),
    ("nfs", "[2049]", "packetbeat-suite/pcaps/nfs_v4.pcap"),
    ("sip", "[5060]", "packetbeat-suite/pcaps/sip.pcap"),
    ("smtp", "[10025]", "smtp.pcap"),
];

/// A configuration writing events in `format` to `out/events`, every protocol on its
/// capture's ports.
fn config_for(dir: &std::path::Path, format: &str) -> std::path::PathBuf {
    let mut yaml = format!(
        "tags: [t1]\nfields: {{env: test}}\nconnbeat.event_format: {format}\n\
         output.file: {{path: {}, filename: events}}\nconnbeat.protocols:\n",
        dir.join("out").display()
    );
    for (name, ports, _) in CAPTURES {
        yaml.push_str(&format!("  - {{type: {name}, ports: {ports}}}\n"));
    }
    write_config(dir, &yaml)
}

/// The events of one agent run with `cfg` and `args`, written to `out/events`.
fn events_of_run(dir: &std::path::Path, cfg: &std::path::Path, args: &[&str]) -> Vec<Value> {
    let _ = std::fs::remove_dir_all(dir.join("out"));
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

/// Connection events of a real poll (with a connection of our own, so there are
/// listening and connected sockets with owners), then the transactions of every
/// protocol's capture; how many of the events are connection events.
fn real_events(dir: &std::path::Path, cfg: &std::path::Path) -> (Vec<Value>, usize) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let _s = l.accept().unwrap();
    let mut events = events_of_run(dir, cfg, &["--once"]);
    let connections = events.len();
    assert!(connections > 2, "{connections} connection events");
    let mut missing: Vec<&str> = connbeat::inspect::proto::NAMES.to_vec();
    for (name, _, capture) in CAPTURES {
        let path = inspect_util::data(capture);
        let got = events_of_run(dir, cfg, &["-I", path.to_str().unwrap()]);
        assert!(
            got.iter().any(|e| e["type"] == *name),
            "{capture}: no {name} transaction"
        );
        missing.retain(|m| m != name);
        events.extend(got);
    }
    assert!(
        missing.is_empty(),
        "no capture for {missing:?}: add one to CAPTURES"
    );
    (events, connections)
}

/// The template `export template` prints for `cfg`.
fn template_of(cfg: &std::path::Path) -> Value {
    let t = Command::new(env!("CARGO_BIN_EXE_connbeat"))
        .args(["-c"])
        .arg(cfg)
        .args(["export", "template"])
        .output()
        .unwrap();
    assert!(t.status.success(), "{}", String::from_utf8_lossy(&t.stderr));
    serde_json::from_slice(&t.stdout).expect("the template is JSON")
}

/// Every event checked against the template's mappings.
fn assert_mapped(events: &[Value], connections: usize, template: &Value) {
    let props = &template["template"]["mappings"]["properties"];
    let mut problems = Vec::new();
    for e in events {
        check("", e, props, &mut problems);
    }
    problems.sort();
    problems.dedup();
    assert!(
        problems.is_empty(),
        "{connections} connection events, {} transactions: {problems:#?}",
        events.len() - connections
    );
}

#[test]
fn the_template_maps_every_field_of_real_events_with_a_compatible_type() {
    let dir = TempDir::new("template");
    let cfg = config_for(dir.path(), "classic");
    let (events, connections) = real_events(dir.path(), &cfg);
    assert!(
        events[..connections]
            .iter()
            .all(|e| e["type"] == "connbeat"),
        "connection events first"
    );
    let template = template_of(&cfg);
    assert_eq!(template["index_patterns"][0], "connbeat-*");
    assert!(
        template["template"]["mappings"]["properties"]
            .get("beat")
            .is_some(),
        "the classic template has the classic fields"
    );
    assert_mapped(&events, connections, &template);
}

#[test]
fn the_ecs_template_maps_every_field_of_real_ecs_events() {
    let dir = TempDir::new("template-ecs");
    let cfg = config_for(dir.path(), "ecs");
    let (events, connections) = real_events(dir.path(), &cfg);
    assert!(
        events[..connections]
            .iter()
            .all(|e| e["event"]["dataset"] == "connbeat.connection"),
        "connection events in the ECS shape"
    );
    let not_ecs: Vec<&Value> = events[connections..]
        .iter()
        .filter(|e| e["event"]["kind"] != "event" || e["event"]["dataset"] != e["type"])
        .collect();
    assert!(
        not_ecs.is_empty(),
        "transactions in the ECS shape: {not_ecs:#?}"
    );
    let template = template_of(&cfg);
    assert!(
        template["template"]["mappings"]["properties"]
            .get("beat")
            .is_none(),
        "the ECS template has no classic fields"
    );
    assert_mapped(&events, connections, &template);
}

//! The ECS shape of connection events (`connbeat.event_format: ecs`).
//!
//! Transactions have Packetbeat 8's shape (written by `inspect::proto::txn`); connection
//! events have none in Packetbeat, so this is our own, documented in the README: the
//! classic fields of a connection event renamed into ECS (`source`/`destination` by
//! direction, `process.*`, `network.*`, `container.*`), the `tcp` object kept as is, and
//! what ECS has no name for under `connbeat.*`. It is a rewrite of the classic object,
//! done once per connection event when the event is finished: connection events are few
//! next to packets, and the classic writer stays the one source of their fields.

use crate::inspect::proto::txn::EcsSettings;
use serde_json::{Map, Value, json};
use std::net::IpAddr;

/// The `type` of connection events.
pub const CONNECTION_TYPE: &str = "connbeat";

/// The ECS fields of a connection event from its classic fields (without the common ones).
pub fn connection(mut c: Map<String, Value>, s: &EcsSettings) -> Map<String, Value> {
    let mut take = |k: &str| c.remove(k);
    let action = take("action");
    let direction = take("direction");
    let local = end(take("local_ip"), take("local_port"));
    let remote = end(take("remote_ip"), take("remote_port"));
    // Who initiated: the remote end for incoming connections, else the local one.
    let incoming = direction.as_ref().and_then(Value::as_str) == Some("incoming");
    let (source, destination) = if incoming {
        (remote, local)
    } else {
        (local, remote)
    };
    let mut out = Map::new();
    let event_type = match action.as_ref().and_then(Value::as_str) {
        Some("open") => "start",
        Some("closed") => "end",
        _ => "info",
    };
    out.insert(
        "event".into(),
        json!({
            "kind": "event",
            "category": ["network"],
            "type": ["connection", event_type],
            "dataset": "connbeat.connection",
            "action": action,
        }),
    );
    let ip_of = |e: &Option<Value>| {
        e.as_ref()
            .and_then(|e| e["ip"].as_str())
            .and_then(|ip| ip.parse::<IpAddr>().ok())
    };
    let mut network = json!({
        "transport": take("transport"),
        "type": take("family"),
    });
    if let Some(id) = take("community_id") {
        network["community_id"] = id;
    }
    if let (Some(a), Some(b)) = (ip_of(&source), ip_of(&destination)) {
        network["direction"] = json!(s.direction(a, b));
    }
    let mut related: Vec<Value> = Vec::new();
    for e in [&source, &destination].into_iter().flatten() {
        if !related.contains(&e["ip"]) {
            related.push(e["ip"].clone());
        }
    }
    if let Some(src) = source {
        out.insert("source".into(), src);
    }
    if let Some(dst) = destination {
        out.insert("destination".into(), dst);
    }
    out.insert("network".into(), network);
    if !related.is_empty() {
        out.insert("related".into(), json!({ "ip": related }));
    }
    let mut extra = Map::new();
    if let Some(Value::Object(p)) = take("local_process") {
        let (process, rest) = process(p);
        out.insert("process".into(), process);
        if !rest.is_empty() {
            extra.insert("process".into(), Value::Object(rest));
        }
    }
    if let Some(Value::Object(mut ct)) = take("container") {
        if let Some(image) = ct.remove("image") {
            ct.insert("image".into(), json!({ "name": image }));
        }
        out.insert("container".into(), Value::Object(ct));
    }
    if let Some(tcp) = take("tcp") {
        out.insert("tcp".into(), tcp);
    }
    if let Some(d) = direction {
        extra.insert("direction".into(), d);
    }
    // What ECS has no name for, and anything a later version adds.
    for (k, v) in std::mem::take(&mut c) {
        extra.insert(k, v);
    }
    if !extra.is_empty() {
        out.insert("connbeat".into(), Value::Object(extra));
    }
    out
}

fn end(ip: Option<Value>, port: Option<Value>) -> Option<Value> {
    let ip = ip?;
    let mut e = json!({ "ip": ip });
    if let Some(p) = port {
        e["port"] = p;
    }
    Some(e)
}

/// ECS `process.*` from the classic process object; the rest has no ECS name.
fn process(mut p: Map<String, Value>) -> (Value, Map<String, Value>) {
    let mut out = Map::new();
    if let Some(pid) = p.remove("pid") {
        out.insert("pid".into(), pid);
    }
    if let Some(name) = p.remove("binary") {
        out.insert("name".into(), name);
    }
    if let Some(exe) = p.remove("exe") {
        out.insert("executable".into(), exe);
    }
    if let Some(Value::String(cmd)) = p.remove("cmdline") {
        let args: Vec<&str> = cmd.split_whitespace().collect();
        out.insert("args".into(), json!(args));
        out.insert("command_line".into(), Value::String(cmd));
    }
    if let Some(ppid) = p.remove("ppid") {
        out.insert("parent".into(), json!({ "pid": ppid }));
    }
    if let Some(user) = p.remove("user") {
        out.insert("user".into(), json!({ "name": user }));
    }
    (Value::Object(out), p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> EcsSettings {
        let mut c = crate::config::Config::default();
        c.connbeat.event_format = crate::config::EventFormat::Ecs;
        EcsSettings::from_config(&c).unwrap().unwrap()
    }

    #[test]
    fn an_incoming_connection_has_the_remote_end_as_source() {
        let classic = json!({
            "action": "open", "direction": "incoming", "transport": "tcp", "family": "ipv4",
            "local_ip": "10.0.0.2", "local_port": 80, "remote_ip": "203.0.113.9",
            "remote_port": 5555, "community_id": "1:x",
            "local_process": {"pid": 7, "binary": "nginx", "exe": "/usr/sbin/nginx",
                "cmdline": "nginx -g daemon", "user": "www", "ppid": 1, "ns_pid": 3},
            "tcp": {"state": "ESTABLISHED"}, "cookie": "12", "netns": 4026531833u64,
            "attribution": "procfs", "duration_ms": 5,
            "container": {"id": "abc", "name": "web", "image": "nginx:1"}
        });
        let Value::Object(m) = classic else { panic!() };
        let e = Value::Object(connection(m, &settings()));
        assert_eq!(e["source"], json!({"ip": "203.0.113.9", "port": 5555}));
        assert_eq!(e["destination"], json!({"ip": "10.0.0.2", "port": 80}));
        assert_eq!(e["network"]["direction"], "inbound");
        assert_eq!(e["network"]["community_id"], "1:x");
        assert_eq!(e["event"]["action"], "open");
        assert_eq!(e["event"]["dataset"], "connbeat.connection");
        assert_eq!(e["event"]["type"], json!(["connection", "start"]));
        assert_eq!(e["process"]["parent"]["pid"], 1);
        assert_eq!(e["process"]["user"]["name"], "www");
        assert_eq!(e["process"]["args"], json!(["nginx", "-g", "daemon"]));
        assert_eq!(e["container"]["image"]["name"], "nginx:1");
        assert_eq!(e["tcp"]["state"], "ESTABLISHED");
        assert_eq!(e["related"]["ip"], json!(["203.0.113.9", "10.0.0.2"]));
        assert_eq!(
            e["connbeat"],
            json!({"cookie": "12", "netns": 4026531833u64, "attribution": "procfs",
                "duration_ms": 5, "direction": "incoming", "process": {"ns_pid": 3}})
        );
    }

    #[test]
    fn a_listening_socket_is_a_source_only() {
        let Value::Object(m) = json!({"action": "listening", "direction": "listening",
            "transport": "tcp", "family": "ipv6", "local_ip": "::", "local_port": 22})
        else {
            panic!()
        };
        let e = Value::Object(connection(m, &settings()));
        assert_eq!(e["source"], json!({"ip": "::", "port": 22}));
        assert!(e.get("destination").is_none());
        assert!(e["network"].get("direction").is_none());
        assert_eq!(e["event"]["type"], json!(["connection", "info"]));
    }
}

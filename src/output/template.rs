//! `export template`: the Elasticsearch index template for the events connbeat produces.
//!
//! The mappings are written from the event structs (`conn::table::ConnEvent`,
//! `conn::procs::ProcessInfo`, `event::CommonFields`) and the transaction fields of the
//! SPEC, and a test generates real events and checks that every field path they carry is
//! mapped with a compatible type — the Go connbeat's template contradicted its own events.
//! Fields not listed (a protocol object, `fields`) are mapped dynamically, strings as
//! keywords.

use serde_json::{Value, json};

fn kw() -> Value {
    json!({"type": "keyword", "ignore_above": 1024})
}
fn long() -> Value {
    json!({"type": "long"})
}
fn ip() -> Value {
    json!({"type": "ip"})
}
fn port() -> Value {
    json!({"type": "integer"})
}
fn text_kw() -> Value {
    json!({"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 1024}}})
}
fn obj(props: Value) -> Value {
    json!({"type": "object", "properties": props})
}
fn process() -> Value {
    obj(json!({
        "pid": long(), "ppid": long(), "ns_pid": long(), "binary": kw(), "exe": kw(),
        "cmdline": text_kw(), "environ": kw(), "user": kw()
    }))
}

/// The `properties` of the mapping.
pub fn properties() -> Value {
    let dynamic = || json!({"type": "object", "dynamic": true});
    let mut p = serde_json::Map::new();
    let mut add = |k: &str, v: Value| {
        p.insert(k.to_string(), v);
    };
    // common to every event
    add("@timestamp", json!({"type": "date"}));
    add("type", kw());
    add("tags", kw());
    add("fields", dynamic());
    add(
        "beat",
        obj(json!({"name": kw(), "hostname": kw(), "version": kw(), "local_ips": ip()})),
    );
    // connection events
    for k in [
        "action",
        "direction",
        "transport",
        "family",
        "attribution",
        "cookie",
        // connection and transaction events
        "community_id",
    ] {
        add(k, kw());
    }
    for k in ["local_ip", "remote_ip"] {
        add(k, ip());
    }
    for k in ["local_port", "remote_port"] {
        add(k, port());
    }
    add("local_process", process());
    add(
        "tcp",
        obj(json!({
            "state": kw(), "rtt_us": long(), "rttvar_us": long(), "retransmits": long(),
            "total_retrans": long(), "bytes_acked": long(), "bytes_received": long(),
            "segs_in": long(), "segs_out": long(), "cwnd": long()
        })),
    );
    add("duration_ms", long());
    add("netns", long());
    add(
        "container",
        obj(json!({"id": kw(), "name": kw(), "image": kw(), "labels": dynamic()})),
    );
    // transaction events
    for k in ["status", "method", "path", "query", "resource", "real_ip"] {
        add(k, kw());
    }
    // The agents owning the two ends (output.redis.save_topology), as Packetbeat 1.x.
    for k in ["server", "client_server"] {
        add(k, kw());
    }
    for k in ["responsetime", "bytes_in", "bytes_out"] {
        add(k, long());
    }
    for k in ["client_ip", "ip"] {
        add(k, ip());
    }
    for k in ["client_port", "port"] {
        add(k, port());
    }
    add("notes", text_kw());
    // What `send_request` / `send_response` write.
    for k in ["request", "response"] {
        add(k, text_kw());
    }
    add("client_process", process());
    add("server_process", process());
    // flow events (connbeat.flows), Packetbeat 6's shape
    for k in ["start_time", "last_time"] {
        add(k, json!({"type": "date"}));
    }
    add("flow_id", kw());
    add("final", json!({"type": "boolean"}));
    for k in ["vlan", "outer_vlan"] {
        add(k, long());
    }
    let flow_end = || {
        obj(json!({
            "mac": kw(), "ip": ip(), "ipv6": ip(), "port": port(),
            "stats": obj(json!({"net_packets_total": long(), "net_bytes_total": long()}))
        }))
    };
    add("source", flow_end());
    add("dest", flow_end());
    for k in crate::inspect::proto::NAMES {
        add(k, dynamic());
    }
    // NFS's calls carry the ONC RPC header beside `nfs`, as Packetbeat writes them.
    add("rpc", dynamic());
    Value::Object(p)
}

/// The `properties` of the ECS mapping (`connbeat.event_format: ecs`): transactions in
/// Packetbeat 8's names, connection events in the shape of `crate::ecs`.
pub fn ecs_properties() -> Value {
    let dynamic = || json!({"type": "object", "dynamic": true});
    let date = || json!({"type": "date"});
    let end = || {
        obj(json!({
            "ip": ip(), "port": port(), "bytes": long(), "domain": kw(), "mac": kw(),
            "packets": long(), "process": obj(json!({"pid": long(), "name": kw()}))
        }))
    };
    let mut p = serde_json::Map::new();
    let mut add = |k: &str, v: Value| {
        p.insert(k.to_string(), v);
    };
    add("@timestamp", date());
    add("type", kw());
    add("tags", kw());
    add("fields", dynamic());
    add(
        "agent",
        obj(json!({"type": kw(), "name": kw(), "version": kw()})),
    );
    add("ecs", obj(json!({"version": kw()})));
    add("host", obj(json!({"name": kw()})));
    add(
        "event",
        obj(json!({
            "kind": kw(), "category": kw(), "type": kw(), "dataset": kw(), "action": kw(),
            "start": date(), "end": date(), "duration": long(),
            // SIP's: the CSeq number, the whole message, its outcome and reason phrase.
            "sequence": long(), "original": json!({"type": "keyword", "index": false, "doc_values": false}),
            "outcome": kw(), "reason": kw()
        })),
    );
    for k in ["source", "destination", "client", "server"] {
        add(k, end());
    }
    add(
        "network",
        obj(json!({
            "type": kw(), "transport": kw(), "protocol": kw(), "direction": kw(),
            "community_id": kw(), "bytes": long(), "forwarded_ip": ip(), "packets": long(),
            "application": kw(), "iana_number": kw()
        })),
    );
    // flow events (connbeat.flows)
    add(
        "flow",
        obj(json!({"id": kw(), "final": {"type": "boolean"}, "vlan": long()})),
    );
    add(
        "related",
        obj(json!({"ip": ip(), "hosts": kw(), "user": kw()})),
    );
    add(
        "process",
        obj(json!({
            "pid": long(), "name": kw(), "executable": kw(), "args": kw(),
            "command_line": text_kw(), "parent": obj(json!({"pid": long()})),
            "user": obj(json!({"name": kw()}))
        })),
    );
    add(
        "container",
        obj(
            json!({"id": kw(), "name": kw(), "image": obj(json!({"name": kw()})), "labels": dynamic()}),
        ),
    );
    add("error", obj(json!({"message": text_kw()})));
    // `params`: the parameters of an executed MySQL prepared statement (a list).
    for k in ["status", "method", "path", "query", "resource", "params"] {
        add(k, kw());
    }
    for k in ["request", "response"] {
        add(k, text_kw());
    }
    add(
        "tcp",
        obj(json!({
            "state": kw(), "rtt_us": long(), "rttvar_us": long(), "retransmits": long(),
            "total_retrans": long(), "bytes_acked": long(), "bytes_received": long(),
            "segs_in": long(), "segs_out": long(), "cwnd": long()
        })),
    );
    add(
        "connbeat",
        obj(json!({
            "direction": kw(), "attribution": kw(), "cookie": kw(), "netns": long(),
            "duration_ms": long(), "server_agent": kw(), "client_agent": kw(),
            "process": obj(json!({"ns_pid": long(), "environ": kw()})),
            "beat": obj(json!({"local_ips": ip()}))
        })),
    );
    add(
        "url",
        obj(json!({
            "scheme": kw(), "domain": kw(), "port": port(), "path": kw(), "query": kw(),
            "full": kw()
        })),
    );
    add("user_agent", obj(json!({"original": kw()})));
    // The user a transaction names (HTTP Basic, SIP, AMQP).
    add("user", obj(json!({"name": kw(), "id": kw()})));
    // The group of an NFS call's credentials.
    add("group", obj(json!({"id": kw()})));
    for k in crate::inspect::proto::NAMES {
        add(k, dynamic());
    }
    add("rpc", dynamic());
    // The addresses a DNS answer resolves to, so that they can be searched as addresses;
    // the rest of `dns` stays dynamic.
    add(
        "dns",
        json!({"type": "object", "dynamic": true, "properties": {"resolved_ip": ip()}}),
    );
    Value::Object(p)
}

/// The composable index template (`PUT _index_template/connbeat`) for indices named by
/// the `index` setting: placeholders become `*` in the pattern. Its priority comes from
/// the configuration ([`configured_template`]).
fn index_template(index: &str) -> Value {
    template_with(index, properties())
}

/// [`index_template`] for the configured `connbeat.event_format`.
fn index_template_for(index: &str, format: crate::config::EventFormat) -> Value {
    match format {
        crate::config::EventFormat::Classic => index_template(index),
        crate::config::EventFormat::Ecs => template_with(index, ecs_properties()),
    }
}

fn template_with(index: &str, properties: Value) -> Value {
    let mut pattern = String::new();
    let mut rest = index;
    while let Some(at) = rest.find("%{") {
        pattern.push_str(&rest[..at]);
        pattern.push('*');
        rest = rest[at..].find('}').map_or("", |end| &rest[at + end + 1..]);
    }
    pattern.push_str(rest);
    while pattern.contains("**") {
        pattern = pattern.replace("**", "*");
    }
    json!({
        "index_patterns": [pattern],
        "template": {
            "settings": {"index": {"refresh_interval": "5s"}},
            "mappings": {
                "dynamic_templates": [{
                    "strings_as_keyword": {
                        "match_mapping_type": "string",
                        "mapping": {"type": "keyword", "ignore_above": 1024}
                    }
                }],
                "properties": properties
            }
        },
        "_meta": {"beat": "connbeat", "version": env!("CARGO_PKG_VERSION")}
    })
}

/// The template the Elasticsearch output loads for `index`: the format's mappings, with
/// `setup.template.pattern` (when set) and `setup.template.priority`.
pub fn configured_template(index: &str, c: &crate::config::Config) -> Value {
    let mut t = index_template_for(index, c.connbeat.event_format);
    let setup = &c.setup.template;
    if !setup.pattern.is_empty() {
        t["index_patterns"] = json!([setup.pattern]);
    }
    t["priority"] = json!(setup.priority);
    t
}

/// `export template`: the template for the configured (or default) index name, as pretty
/// JSON.
pub fn for_config(c: &crate::config::Config) -> String {
    let index = c
        .output
        .elasticsearch
        .as_ref()
        .map(|e| e.index.clone())
        .unwrap_or_else(|| crate::config::ElasticsearchOutputConfig::default().index);
    let t = configured_template(&index, c);
    let mut s = serde_json::to_string_pretty(&t).expect("json serializes");
    s.push('\n');
    s
}

/// Whether a JSON value of an event fits a mapped type.
pub fn compatible(mapping_type: &str, v: &Value) -> bool {
    match (mapping_type, v) {
        (_, Value::Null) => true,
        (t, Value::Array(items)) => items.iter().all(|i| compatible(t, i)),
        ("keyword" | "text", Value::String(_)) => true,
        // Elasticsearch indexes a number or a boolean sent to a keyword field as its text
        // (an NFS uid in `user.id`).
        ("keyword", Value::Number(_) | Value::Bool(_)) => true,
        ("long" | "integer", Value::Number(n)) => n.is_i64() || n.is_u64(),
        ("ip", Value::String(s)) => s.parse::<std::net::IpAddr>().is_ok(),
        ("date", Value::String(s)) => humantime::parse_rfc3339(s).is_ok(),
        ("object", Value::Object(_)) => true,
        ("boolean", Value::Bool(_)) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    /// `setup.template.pattern` and `setup.template.priority` reach the template.
    #[test]
    fn the_setup_keys_shape_the_loaded_template() {
        let c = |yaml: &str| crate::config::from_yaml_str(yaml, &[], &|_| None).unwrap();
        let t = super::configured_template("packetbeat-%{+yyyy.MM.dd}", &c("output.console: {}"));
        assert_eq!(t["index_patterns"][0], "packetbeat-*");
        assert_eq!(t["priority"], 150);
        let t = super::configured_template(
            "x",
            &c("output.console: {}\nsetup.template: {pattern: \"pb-*\", priority: 151}"),
        );
        assert_eq!(t["index_patterns"][0], "pb-*");
        assert_eq!(t["priority"], 151);
    }

    #[test]
    fn the_pattern_replaces_placeholders() {
        let t = super::index_template("connbeat-%{[type]}-%{+yyyy.MM.dd}");
        assert_eq!(t["index_patterns"][0], "connbeat-*-*");
        let t = super::index_template("connbeat-%{+yyyy.MM.dd}");
        assert_eq!(t["index_patterns"][0], "connbeat-*");
    }
}

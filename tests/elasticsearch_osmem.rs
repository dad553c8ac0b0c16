//! `output.elasticsearch` against a real server: osmem-server (PyPI), an in-memory
//! OpenSearch-compatible server with `_bulk`, `_index_template`, `_mapping` and `_search`
//! (tests/services/start-osmem.sh). Events indexed once even when a batch is sent again,
//! `setup.template` loaded at startup (name, pattern, overwrite), the template of
//! `export template` accepted and shaping the mappings, `test output`. Skipped, loudly,
//! when osmem-server is not installed.

mod shipkit;

use serde_json::Value;
use shipkit::osmem::Osmem;
use shipkit::*;
use std::time::Duration;

fn send(yaml: &str, range: std::ops::Range<u64>) {
    let (p, pipe) = pipeline(&config(yaml));
    for i in range {
        assert!(p.publish(conn_event(i)));
    }
    drop(p);
    assert!(
        pipe.finish(Duration::from_secs(120)),
        "not all acknowledged"
    );
}

/// The mapped type of a dotted field in an index's mapping.
fn mapped(m: &Value, index: &str, field: &str) -> String {
    let mut v = &m[index]["mappings"];
    for p in field.split('.') {
        v = &v["properties"][p];
    }
    v["type"].as_str().unwrap_or("?").to_string()
}

#[test]
fn events_are_indexed_once_even_when_sent_twice_into_the_template_s_mappings() {
    let _g = serial();
    let Some(os) = Osmem::start() else { return };
    let yaml = format!(
        "output.elasticsearch:\n  hosts: [\"{}\"]\n  bulk_max_size: 500\n",
        os.url()
    );
    let acked = counter("output.events.acked");
    send(&yaml, 0..3000);
    assert_eq!(os.count("connbeat-*"), 3000);
    // The same events again (a batch whose answer was lost is sent so): same _id, 409 on
    // create, acknowledged, nothing indexed twice.
    send(&yaml, 0..3000);
    assert_eq!(os.count("connbeat-*"), 3000);
    assert_eq!(counter("output.events.acked") - acked, 6000);
    // setup.template's defaults: `connbeat`, for the pattern of the index setting.
    let (status, t) = os.call("GET", "/_index_template/connbeat", None);
    assert_eq!(status, 200, "{t}");
    assert_eq!(
        t["index_templates"][0]["index_template"]["index_patterns"][0],
        "connbeat-*"
    );
    let (status, m) = os.call("GET", "/connbeat-2026.11.18/_mapping", None);
    assert_eq!(status, 200, "{m}");
    for (field, ty) in [
        ("local_ip", "ip"),
        ("local_port", "integer"),
        ("cookie", "keyword"),
        ("tcp.rtt_us", "long"),
        ("@timestamp", "date"),
        ("local_process.cmdline", "text"),
    ] {
        assert_eq!(mapped(&m, "connbeat-2026.11.18", field), ty, "{field}");
    }
}

#[test]
fn setup_template_name_pattern_and_overwrite() {
    let _g = serial();
    let Some(os) = Osmem::start() else { return };
    let (status, _) = os.call(
        "PUT",
        "/_index_template/mine",
        Some(r#"{"index_patterns": ["other-*"], "template": {"mappings": {"properties": {}}}}"#),
    );
    assert_eq!(status, 200);
    let yaml = |overwrite: bool| {
        format!(
            "output.elasticsearch:\n  hosts: [\"{}\"]\n  index: \"cb-%{{+yyyy.MM.dd}}\"\n\
             setup.template: {{name: mine, pattern: \"cb-*\", overwrite: {overwrite}}}\n",
            os.url()
        )
    };
    let pattern = || {
        let (_, t) = os.call("GET", "/_index_template/mine", None);
        t["index_templates"][0]["index_template"]["index_patterns"][0].clone()
    };
    send(&yaml(false), 0..10);
    assert_eq!(pattern(), "other-*", "overwrite: false keeps what is there");
    send(&yaml(true), 10..20);
    assert_eq!(pattern(), "cb-*");
    assert_eq!(os.count("cb-*"), 20);
    send(
        &format!(
            "output.elasticsearch:\n  hosts: [\"{}\"]\n  index: \"off-%{{+yyyy.MM.dd}}\"\n\
             setup.template: {{enabled: false, name: unused}}\n",
            os.url()
        ),
        0..5,
    );
    assert_eq!(os.call("GET", "/_index_template/unused", None).0, 404);
    assert_eq!(os.count("off-*"), 5);
}

#[test]
fn the_exported_template_is_accepted_and_shapes_both_event_formats() {
    let _g = serial();
    let Some(os) = Osmem::start() else { return };
    let dir = TempDir::new("osmem-export");
    for (format, index, checks) in [
        (
            "classic",
            "exported",
            &[("remote_ip", "ip"), ("tcp.bytes_acked", "long")][..],
        ),
        (
            "ecs",
            "exportedecs",
            &[("source.ip", "ip"), ("connbeat.netns", "long")][..],
        ),
    ] {
        let cfg = write_config(
            dir.path(),
            &format!(
                "connbeat.event_format: {format}\noutput.elasticsearch:\n  index: \"{index}-%{{+yyyy.MM.dd}}\"\n"
            ),
        );
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_connbeat"))
            .arg("-c")
            .arg(&cfg)
            .args(["export", "template"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let body = String::from_utf8(out.stdout).unwrap();
        let (status, v) = os.call("PUT", &format!("/_index_template/{index}"), Some(&body));
        assert_eq!(
            (status, &v["acknowledged"]),
            (200, &Value::Bool(true)),
            "{v}"
        );
        // An index of that pattern takes the template's mappings.
        let (status, v) = os.call("PUT", &format!("/{index}-2026.11.18"), Some("{}"));
        assert_eq!(status, 200, "{v}");
        let (_, m) = os.call("GET", &format!("/{index}-2026.11.18/_mapping"), None);
        for (field, ty) in checks {
            assert_eq!(
                mapped(&m, &format!("{index}-2026.11.18"), field),
                *ty,
                "{format} {field}: {m}"
            );
        }
    }
}

#[test]
fn test_output_reaches_the_server() {
    let Some(os) = Osmem::start() else { return };
    let dir = TempDir::new("osmem-test");
    let cfg = write_config(
        dir.path(),
        &format!("output.elasticsearch:\n  hosts: [\"{}\"]\n", os.url()),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_connbeat"))
        .arg("-c")
        .arg(&cfg)
        .args(["test", "output"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("authentication (GET /)... OK (Elasticsearch 3.8.0)"),
        "{text}"
    );
}

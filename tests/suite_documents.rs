//! What Packetbeat's memcache and MongoDB runs show beyond the suite's worded checks (its
//! `note` entries, which tests/packetbeat_suite.rs reads): the marker that ends a document
//! list cut by `max_docs`, the one that ends a document cut by `max_doc_length`, and the
//! number of stats entries.

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

fn events(pcap: &str, protocol: &str) -> Vec<Value> {
    static RUN: AtomicUsize = AtomicUsize::new(0);
    let n = RUN.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("connbeat-notes-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("c.yml");
    std::fs::write(
        &cfg,
        format!(
            "output.console: {{enabled: true}}\nlogging.level: warning\n\
             connbeat.event_format: ecs\nconnbeat.protocols:\n  - {protocol}\n"
        ),
    )
    .unwrap();
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/packetbeat-suite/pcaps");
    let out = Command::new(env!("CARGO_BIN_EXE_connbeat"))
        .arg("-c")
        .arg(&cfg)
        .arg("--strict.perms=false")
        .arg("-I")
        .arg(suite.join(pcap))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn response_lines(options: &str) -> Vec<String> {
    let e = events(
        "mongodb_more_rows.pcap",
        &format!(
            "{{type: mongodb, ports: [27017], send_request: true, send_response: true, {options}}}"
        ),
    );
    assert_eq!(e.len(), 1);
    e[0]["response"]
        .as_str()
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn mongodb_max_docs_and_max_doc_length() {
    // 101 documents in the reply: all of them with max_docs 0.
    assert_eq!(response_lines("max_docs: 0").len(), 101);
    // Ten, then "[...]".
    let l = response_lines("max_docs: 10");
    assert_eq!(l.len(), 11);
    assert_eq!(l[10], "[...]");
    // Each document cut at 10 characters, marked " ...".
    let l = response_lines("max_doc_length: 10");
    assert!(l.iter().all(|d| d.chars().count() < 15), "{l:?}");
    assert!(l[0].ends_with(" ..."), "{}", l[0]);
}

#[test]
fn memcache_stats_have_names_and_values() {
    for pcap in [
        "memcache/memcache_bin_tcp_stats.pcap",
        "memcache/memcache_text_tcp_stats.pcap",
    ] {
        let e = events(pcap, "{type: memcache, ports: [11211]}");
        let stats = e
            .iter()
            .find(|e| e["memcache"]["request"]["type"] == "Stats")
            .unwrap_or_else(|| panic!("{pcap}: no stats transaction"));
        let items = stats["memcache"]["response"]["stats"].as_array().unwrap();
        assert!(items.len() > 10, "{pcap}");
        for i in items {
            assert!(!i["name"].as_str().unwrap().is_empty(), "{pcap}: {i}");
            assert!(!i["value"].as_str().unwrap().is_empty(), "{pcap}: {i}");
        }
    }
}

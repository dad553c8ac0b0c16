//! A real busy host, at small scale: tests/data/record_busy.sh records 3,000 curl requests
//! (each on its own connection, client ports reused about three times each from a narrowed
//! range in a network namespace of its own) and 1,000 redis-cli commands. connbeat must
//! find every HTTP transaction with the status tshark reads in the same file, every Redis
//! command, and no gap. perf/busy_bench.sh runs the same with 20,000+ requests.

mod inspect_util;

use connbeat::monitor::{METRICS, get};
use inspect_util::{TempDir, have_tshark, inspect, tshark};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

#[test]
fn busy_host_matches_tshark() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED busy_host_matches_tshark: needs root (network namespace, tcpdump)");
        return;
    }
    if !have_tshark("busy_host_matches_tshark") {
        return;
    }
    let dir = TempDir::new("busy");
    let pcap = dir.0.join("busy.pcap");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/record_busy.sh");
    let out = Command::new(&script)
        .arg(&pcap)
        .args(["3000", "1000"])
        .output()
        .expect("running record_busy.sh");
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.code() == Some(3) {
            eprintln!("SKIPPED busy_host_matches_tshark: {err}");
            return;
        }
        panic!("record_busy.sh failed: {err}");
    }
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "http=3000 redis=1000"
    );

    let gaps = get(&METRICS.inspect_tcp_gaps);
    let unmatched = get(&METRICS.inspect_unmatched_responses);
    let (events, summary) = inspect(&pcap);
    assert_eq!(summary.tcp_gaps, 0);
    assert_eq!(get(&METRICS.inspect_tcp_gaps) - gaps, 0, "gaps");
    assert_eq!(
        get(&METRICS.inspect_unmatched_responses) - unmatched,
        0,
        "unmatched responses"
    );

    let mut ours: BTreeMap<String, usize> = BTreeMap::new();
    for e in events.iter().filter(|e| e["type"] == "http") {
        let code = e["http"]["response"]["code"].to_string();
        *ours.entry(code).or_default() += 1;
    }
    let mut theirs: BTreeMap<String, usize> = BTreeMap::new();
    for row in tshark(&pcap, "http.response", &["http.response.code"]) {
        *theirs.entry(row[0].clone()).or_default() += 1;
    }
    // Every request answered: 2,400 pages and 600 misses, as curl asked for them.
    assert_eq!(theirs.values().sum::<usize>(), 3000, "tshark: {theirs:?}");
    assert_eq!(ours, theirs);
    assert_eq!(ours.get("404"), Some(&600));

    let redis = events.iter().filter(|e| e["type"] == "redis").count();
    assert_eq!(redis, 1000);
}

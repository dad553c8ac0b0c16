//! Namespaces that come and go are picked up and released: over 1,000 namespace
//! create/destroy cycles the agent's count of open file descriptors stays flat.
//!
//! Namespaces are made in batches of 10 and the test waits (from the agent's `-d conn`
//! log) until the agent watches all of them before deleting them and waiting until it has
//! released them, so every one of the 1,000 is really entered and let go.

mod common;
mod netns_support;

use common::*;
use std::time::Duration;

/// The number of namespaces watched, from the agent's latest `poll done` line.
fn watched(stderr: &[String]) -> Option<u64> {
    stderr
        .iter()
        .rev()
        .find(|l| l.contains("poll done"))
        .and_then(|l| kv(l, "namespaces"))
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn a_thousand_namespaces_come_and_go_without_leaking_fds() {
    if let Err(why) = netns_support::available() {
        eprintln!("skipped: network namespaces unavailable ({why})");
        return;
    }
    let dir = TempDir::new("netns-churn");
    let cfg = console_config(
        &dir,
        "connbeat.namespaces: all\nconnbeat.poll_interval: 100ms\nlogging.metrics.enabled: false",
    );
    let mut agent = Agent::start(&cfg, &["-d", "conn"]);
    let base_watched =
        poll_until(Duration::from_secs(30), || watched(&agent.stderr())).expect("agent polls");
    let fds_before = fd_count(agent.proc.pid);
    let id = std::process::id() % 100_000;
    const BATCH: usize = 10;
    for round in 0..100 {
        let batch: Vec<netns_support::Netns> = (0..BATCH)
            .map(|i| netns_support::Netns::new(&format!("cbch{id}x{i}")))
            .collect();
        let want = base_watched + BATCH as u64;
        poll_until(Duration::from_secs(30), || {
            (watched(&agent.stderr()) == Some(want)).then_some(())
        })
        .unwrap_or_else(|| panic!("round {round}: agent never watched {want} namespaces"));
        drop(batch);
        poll_until(Duration::from_secs(30), || {
            (watched(&agent.stderr()) == Some(base_watched)).then_some(())
        })
        .unwrap_or_else(|| panic!("round {round}: agent did not release the namespaces"));
    }
    let fds_after = fd_count(agent.proc.pid);
    let (status, _) = agent.terminate(Duration::from_secs(20));
    assert!(status.success());
    assert_eq!(
        fds_after, fds_before,
        "open fds went from {fds_before} to {fds_after} over 1,000 namespaces"
    );
}

//! A socket that takes the place of a closed file leaves its process's number of open
//! files unchanged, which is what the process index watches between full rescans. Every
//! such connection must still be attributed at the first poll that sees it:
//!
//! - a file closed, then a connection opened on the same fd number;
//! - a connection moved onto an open file's fd with dup2;
//! - a connection received over a Unix socket (SCM_RIGHTS) from another process, in the
//!   fd of a file just closed;
//! - a thread with a file table of its own (unshare(CLONE_FILES)) doing the first.
//!
//! The helpers start before the agent, so its first poll knows them and their fd counts.
//! It runs twice: with the connect-time recorder off (the process index alone), and on,
//! where the process holding the socket must still be named (`procfs`), not the one that
//! connected (the sender of the passed socket). In a network namespace of its own, with a
//! 1 s poll and the default 60 s full rescan.

mod common;

use common::*;
use std::collections::HashMap;
use std::time::Duration;

#[test]
fn sockets_in_reused_fds_are_attributed_at_once() {
    if !root_or_skip("sockets_in_reused_fds_are_attributed_at_once") {
        return;
    }
    for recorder in ["off", "auto"] {
        if !run(recorder) {
            return;
        }
    }
}

/// One run with `connbeat.connect_recorder: RECORDER`; false when skipped.
fn run(recorder: &str) -> bool {
    let Some(ns) = NetNs::new("fdreuse") else {
        return false;
    };
    let dir = TempDir::new("fdreuse");
    let exe = named_helper(&dir, "cb-reuse");
    let cases = [
        "close", "close", "close", "dup2", "dup2", "recv", "recv", "thread",
    ];
    let srv = ns.spawn(&exe, &["listen", "127.0.0.1:0", &cases.len().to_string()]);
    let port = srv.ready_port();
    let target = format!("127.0.0.1:{port}");
    let mut helpers: Vec<(&str, String, Proc)> = Vec::new();
    for (i, how) in cases.iter().enumerate() {
        let file = dir.write(&format!("file{i}"), "x").display().to_string();
        let p = ns.spawn(&exe, &["reuse-fd", how, &target, &file]);
        p.wait_line("READY", Duration::from_secs(30));
        helpers.push((how, file, p));
    }

    let cfg = console_config(
        &dir,
        &format!("connbeat.poll_interval: 1s\nconnbeat.connect_recorder: {recorder}"),
    );
    let agent = Agent::start_in(Some(&ns), &cfg, &[]);
    agent.wait_events("listening event", Duration::from_secs(60), |evs| {
        evs.iter()
            .any(|e| s(e, "/action") == "listening" && u(e, "/local_port") == Some(port as u64))
    });
    let started = agent.stderr();
    let line = started
        .iter()
        .find(|l| l.contains("started with"))
        .expect("startup line");
    if !line.contains("socket fds by BPF iterator") {
        eprintln!("skipped: the BPF iterator did not load, the walk is not used: {line}");
        return false;
    }

    // Swap files for sockets, all at once.
    let mut senders = Vec::new();
    for (how, file, p) in &mut helpers {
        p.send_line("go");
        if *how == "recv" {
            let sock = format!("{file}.sock");
            senders.push(ns.spawn(&exe, &["send-fd", &target, &sock]));
        }
    }
    let mut owner_of: HashMap<Tuple, (u32, &str)> = HashMap::new();
    for (how, _, p) in &helpers {
        p.wait_line("SOCK", Duration::from_secs(30));
        let t = p.socks()[0];
        owner_of.insert(t, (p.pid, how));
    }

    agent.wait_events(
        "an open event for every swapped socket",
        Duration::from_secs(30),
        |evs| {
            owner_of.keys().all(|t| {
                evs.iter()
                    .any(|e| tuple(e) == Some(*t) && s(e, "/direction") == "outgoing")
            })
        },
    );
    let events = agent.events();
    for (t, (pid, how)) in &owner_of {
        let first = events
            .iter()
            .find(|e| tuple(e) == Some(*t))
            .expect("an event");
        check_event_invariants(first);
        assert_eq!(
            s(first, "/action"),
            "open",
            "recorder {recorder}, {how}: {first}"
        );
        assert_eq!(
            s(first, "/attribution"),
            "procfs",
            "recorder {recorder}, {how}: {first}"
        );
        assert_eq!(
            u(first, "/local_process/pid"),
            Some(*pid as u64),
            "recorder {recorder}, {how}: {first}"
        );
        assert_eq!(
            s(first, "/local_process/binary"),
            "cb-reuse",
            "recorder {recorder}, {how}: {first}"
        );
    }
    drop(senders);
    true
}

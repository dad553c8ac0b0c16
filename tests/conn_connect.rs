//! Short-lived client processes: 300 separate processes each connect to a local server,
//! exchange a byte and exit within milliseconds, under a 30 s poll interval, so no poll
//! ever sees one alive. Every outgoing `closed` event must still carry the pid and binary
//! of the process that opened it (`attribution: connect`), checked against the pids this
//! test spawned; a cmdline, when present, is that process's. It runs in a network
//! namespace of its own.
//!
//! Where the connect-time recorder cannot load, the test says so and stops (skipped).

mod common;

use common::*;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

const CLIENTS: usize = 300;
const AT_ONCE: usize = 10;

#[test]
fn every_short_lived_client_is_named() {
    if !root_or_skip("every_short_lived_client_is_named") {
        return;
    }
    let Some(ns) = NetNs::new("connect") else {
        return;
    };
    let dir = TempDir::new("connect");
    let srv_exe = named_helper(&dir, "cb-cosrv");
    let cli_exe = named_helper(&dir, "cb-cocli");
    let srv = ns.spawn(&srv_exe, &["delay-server", "127.0.0.1:0", "0"]);
    let port = srv.ready_port();

    let cfg = console_config(&dir, "connbeat.poll_interval: 30s");
    let agent = Agent::start_in(Some(&ns), &cfg, &[]);
    agent.wait_events("listening event", Duration::from_secs(60), |evs| {
        evs.iter()
            .any(|e| s(e, "/action") == "listening" && u(e, "/local_port") == Some(port as u64))
    });
    match connect_recorder_loaded(&agent) {
        Some(true) => {}
        Some(false) => {
            eprintln!(
                "skipped: the connect-time recorder did not load here: {:?}",
                agent.stderr()
            );
            return;
        }
        None => panic!("no startup line: {:?}", agent.stderr()),
    }

    // Clients, AT_ONCE at a time; each reports its socket and exits.
    let target = format!("127.0.0.1:{port}");
    let mut pid_of_port: HashMap<u16, u32> = HashMap::new();
    let mut spawned = 0;
    while spawned < CLIENTS {
        let batch: Vec<Proc> = (0..AT_ONCE.min(CLIENTS - spawned))
            .map(|_| ns.spawn(&cli_exe, &["connect-once", &target]))
            .collect();
        spawned += batch.len();
        for mut c in batch {
            let status = c.wait_exit(Duration::from_secs(30));
            assert!(status.success(), "client {} failed: {status}", c.pid);
            let socks = c.socks();
            assert_eq!(socks.len(), 1, "client {}: {:?}", c.pid, c.lines());
            pid_of_port.insert(socks[0].local.port(), c.pid);
        }
    }
    assert_eq!(pid_of_port.len(), CLIENTS, "one port per client");

    let outgoing = |evs: &[Value]| -> Vec<Value> {
        evs.iter()
            .filter(|e| {
                s(e, "/action") == "closed"
                    && s(e, "/direction") == "outgoing"
                    && u(e, "/remote_port") == Some(port as u64)
            })
            .cloned()
            .collect()
    };
    agent.wait_events(
        "an outgoing closed event per client",
        Duration::from_secs(60),
        |evs| outgoing(evs).len() >= CLIENTS,
    );
    let events = outgoing(&agent.events());
    assert_eq!(events.len(), CLIENTS);
    let mut with_cmdline = 0;
    for e in &events {
        check_event_invariants(e);
        let lport = u(e, "/local_port").unwrap() as u16;
        let pid = pid_of_port
            .get(&lport)
            .unwrap_or_else(|| panic!("a port no client of ours used: {e}"));
        assert_eq!(s(e, "/attribution"), "connect", "{e}");
        assert_eq!(u(e, "/local_process/pid"), Some(*pid as u64), "{e}");
        assert_eq!(s(e, "/local_process/binary"), "cb-cocli", "{e}");
        if let Some(cmdline) = e.pointer("/local_process/cmdline").and_then(Value::as_str) {
            with_cmdline += 1;
            assert!(
                cmdline.ends_with(&format!("cb-cocli connect-once {target}")),
                "{e}"
            );
        }
    }
    eprintln!("{with_cmdline} of {CLIENTS} events carry the client's cmdline");
}

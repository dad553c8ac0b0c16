//! Short-lived connections: 500 loopback connections, each opened and closed well inside
//! one 5 s poll interval, each give a `closed` event from the kernel's destroy
//! notifications, on both sides, with the right ports, the server's pid on the accepted
//! side (`attribution: listener`), a plausible `duration_ms`, final tcp counters, and no
//! lost notifications. It runs in a network namespace of its own.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

const CONNS: usize = 500;
const DELAY_MS: u64 = 50;
const JIFFY_MS: u64 = 10;
const POLL_MS: u64 = 5_000;

fn polls_done(agent: &Agent) -> usize {
    agent
        .stderr()
        .iter()
        .filter(|l| l.contains("poll done:"))
        .count()
}

fn closed_on(events: &[Value], port: u16, direction: &str) -> Vec<Value> {
    let key = if direction == "incoming" {
        "/local_port"
    } else {
        "/remote_port"
    };
    events
        .iter()
        .filter(|e| {
            s(e, "/type") == "connbeat"
                && s(e, "/action") == "closed"
                && s(e, "/direction") == direction
                && u(e, key) == Some(port as u64)
        })
        .cloned()
        .collect()
}

#[test]
fn every_short_connection_gives_a_closed_event() {
    if !root_or_skip("every_short_connection_gives_a_closed_event") {
        return;
    }
    // A namespace of our own: thousands of sockets closing elsewhere on the machine at
    // the same moment would otherwise share the agent's notification buffer.
    let Some(ns) = NetNs::new("short") else {
        return;
    };
    let dir = TempDir::new("short");
    let srv_exe = named_helper(&dir, "cb-slsrv");
    let cli_exe = named_helper(&dir, "cb-slcli");
    let srv = ns.spawn(
        &srv_exe,
        &["delay-server", "127.0.0.1:0", &DELAY_MS.to_string()],
    );
    let port = srv.ready_port();

    let cfg = console_config(&dir, &format!("connbeat.poll_interval: {POLL_MS}ms"));
    let mut agent = Agent::start_in(Some(&ns), &cfg, &["-d", "conn"]);
    // The first poll has run once the server's listening socket is reported.
    agent.wait_events("listening event", Duration::from_secs(60), |evs| {
        evs.iter()
            .any(|e| s(e, "/action") == "listening" && u(e, "/local_port") == Some(port as u64))
    });

    // Start right after a poll so that the whole burst fits between two polls.
    let before = polls_done(&agent);
    poll_until(Duration::from_secs(2 * POLL_MS / 1000 + 5), || {
        (polls_done(&agent) > before).then_some(())
    })
    .expect("a `poll done` line (-d conn) every poll interval");
    let polls_at_start = polls_done(&agent);
    let target = format!("127.0.0.1:{port}");
    let cli = ns.spawn(&cli_exe, &["burst", &target, &CONNS.to_string(), "10"]);
    cli.wait_line("DONE", Duration::from_secs(120));
    let polls_during = polls_done(&agent) - polls_at_start;
    let client_ports = sorted(cli.socks().iter().map(|t| t.local.port()).collect());
    assert_eq!(client_ports.len(), CONNS);

    agent.wait_events(
        "500 incoming closed events",
        Duration::from_secs(60),
        |evs| closed_on(evs, port, "incoming").len() >= CONNS,
    );
    agent.wait_events(
        "500 outgoing closed events",
        Duration::from_secs(60),
        |evs| closed_on(evs, port, "outgoing").len() >= CONNS,
    );
    // One more poll must not add a second closed event for any of them.
    let n = polls_done(&agent);
    poll_until(Duration::from_secs(2 * POLL_MS / 1000 + 5), || {
        (polls_done(&agent) > n).then_some(())
    })
    .expect("another poll");
    let events = agent.events();
    let incoming = closed_on(&events, port, "incoming");
    let outgoing = closed_on(&events, port, "outgoing");
    assert_eq!(incoming.len(), CONNS, "incoming closed events");
    assert_eq!(outgoing.len(), CONNS, "outgoing closed events");

    // A connection a poll happened to see may legitimately carry the owner remembered
    // from that poll instead of the listener's.
    let seen_by_poll_ok = polls_during > 0;
    if seen_by_poll_ok {
        eprintln!(
            "note: {polls_during} poll(s) ran during the burst; cache/procfs attribution accepted"
        );
    }
    let max_ms = POLL_MS + 1_000;
    for e in incoming.iter().chain(&outgoing) {
        check_event_invariants(e);
        assert_eq!(s(e, "/local_ip"), "127.0.0.1", "{e}");
        assert_eq!(s(e, "/remote_ip"), "127.0.0.1", "{e}");
        // Each side exchanged data at least DELAY_MS before it closed. The kernel's
        // idle timers (tcpi_last_data_recv, ...) tick in jiffies, so an estimate from
        // them may fall one tick short: allow 10 ms (one jiffy at HZ=100).
        let d = u(e, "/duration_ms").unwrap_or_else(|| panic!("no duration_ms: {e}"));
        let min_ms = DELAY_MS - JIFFY_MS;
        assert!(
            (min_ms..=max_ms).contains(&d),
            "duration_ms {d} outside [{min_ms}, {max_ms}]: {e}"
        );
        // One byte each way, plus the peer's FIN, which tcpi_bytes_received counts: the
        // final tcp_info comes with the close.
        let got = u(e, "/tcp/bytes_received").unwrap_or(0);
        assert!(
            (1..=2).contains(&got),
            "final tcp.bytes_received {got}: {e}"
        );
        assert!(
            u(e, "/tcp/segs_in").unwrap_or(0) >= 2,
            "final tcp.segs_in: {e}"
        );
    }
    for e in &incoming {
        let a = s(e, "/attribution");
        let ok = a == "listener" || (seen_by_poll_ok && (a == "cache" || a == "procfs"));
        assert!(ok, "attribution {a}: {e}");
        assert_eq!(u(e, "/local_process/pid"), Some(srv.pid as u64), "{e}");
        assert_eq!(s(e, "/local_process/binary"), "cb-slsrv", "{e}");
    }
    // Nothing listens on the client's port: its owner is known from its recorded connect,
    // or, without the recorder, only if a poll saw it.
    let recorded = connect_recorder_loaded(&agent) == Some(true);
    for e in &outgoing {
        if recorded {
            assert_ne!(s(e, "/attribution"), "none", "{e}");
        }
        if s(e, "/attribution") != "none" {
            assert_eq!(u(e, "/local_process/pid"), Some(cli.pid as u64), "{e}");
        }
    }
    let remote_ports = sorted(
        incoming
            .iter()
            .map(|e| u(e, "/remote_port").unwrap() as u16)
            .collect(),
    );
    assert_eq!(
        remote_ports, client_ports,
        "incoming remote ports = client's ports"
    );
    let local_ports = sorted(
        outgoing
            .iter()
            .map(|e| u(e, "/local_port").unwrap() as u16)
            .collect(),
    );
    assert_eq!(
        local_ports, client_ports,
        "outgoing local ports = client's ports"
    );
    let mut cookies: Vec<&str> = incoming
        .iter()
        .chain(&outgoing)
        .map(|e| s(e, "/cookie"))
        .collect();
    cookies.sort();
    cookies.dedup();
    assert_eq!(cookies.len(), 2 * CONNS, "one cookie per socket");

    let (status, stderr) = agent.terminate(Duration::from_secs(30));
    assert!(status.success(), "exit after SIGTERM: {status}");
    let m = total_metrics(&stderr).unwrap_or_else(|| {
        panic!(
            "no `Total metrics` line; stderr tail: {:?}",
            &stderr[stderr.len().saturating_sub(10)..]
        )
    });
    // A line that lists only non-zero counters leaves `lost` out: that is zero too.
    assert_eq!(
        m.get("conn.close_events.lost").copied().unwrap_or(0),
        0,
        "{m:?}"
    );
    assert!(
        m.get("conn.close_events.received").copied().unwrap_or(0) >= 2 * CONNS as u64,
        "{m:?}"
    );
    assert!(
        m.get("conn.events.closed").copied().unwrap_or(0) >= 2 * CONNS as u64,
        "{m:?}"
    );
    assert!(
        agent.bad_lines().is_empty(),
        "non-JSON stdout: {:?}",
        agent.bad_lines()
    );
}

fn sorted(mut v: Vec<u16>) -> Vec<u16> {
    v.sort_unstable();
    v
}

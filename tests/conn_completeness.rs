//! Completeness: 10,000 loopback connections (20,000 ESTABLISHED sockets) held by helper
//! processes of at most 2,500 fds each; one `--once` poll reports exactly the 4-tuples
//! `ss -tan` reports for the test's ports, and attributes every socket to the process
//! that holds it.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const PAIRS: usize = 4;
const PER_PAIR: usize = 2_500;

#[test]
fn once_reports_every_established_socket_with_its_pid() {
    if !root_or_skip("once_reports_every_established_socket_with_its_pid") {
        return;
    }
    let dir = TempDir::new("complete");
    let (srv_exe, cli_exe) = (named_helper(&dir, "cb-csrv"), named_helper(&dir, "cb-ccli"));
    let n = PER_PAIR.to_string();
    let mut helpers = Vec::new();
    let mut ports = Vec::new();
    for i in 0..PAIRS {
        // The last pair is IPv6.
        let ip = if i == PAIRS - 1 { "::1" } else { "127.0.0.1" };
        let bind = std::net::SocketAddr::new(ip.parse().unwrap(), 0).to_string();
        let srv = Proc::spawn(&srv_exe, &["listen", &bind, &n]);
        let port = srv.ready_port();
        let target = std::net::SocketAddr::new(ip.parse().unwrap(), port).to_string();
        let cli = Proc::spawn(&cli_exe, &["connect", &target, &n]);
        ports.push(port);
        helpers.push(srv);
        helpers.push(cli);
    }
    // Who holds what, as the helpers themselves report it.
    let mut owner: BTreeMap<Tuple, u32> = BTreeMap::new();
    for h in &helpers {
        h.wait_line("HELD", Duration::from_secs(300));
        for t in h.socks() {
            assert!(owner.insert(t, h.pid).is_none(), "{t} reported twice");
        }
    }
    assert_eq!(owner.len(), 2 * PAIRS * PER_PAIR);

    let ss_before = ss_on_ports(&ports);
    let expected: BTreeSet<Tuple> = owner.keys().copied().collect();
    assert_eq!(
        ss_before, expected,
        "ss and the helpers disagree (test setup problem)"
    );

    let dir_cfg = TempDir::new("complete-cfg");
    let once = run_once(&console_config(&dir_cfg, ""), &[]);
    once.assert_ok();
    let ss_after = ss_on_ports(&ports);
    assert_eq!(ss_before, ss_after, "sockets changed during the poll");

    let evs: Vec<_> = on_ports(&once.events, &ports)
        .into_iter()
        .filter(|e| s(e, "/action") != "listening")
        .collect();
    let reported: BTreeSet<Tuple> = evs.iter().filter_map(|e| tuple(e)).collect();
    assert_eq!(
        evs.len(),
        reported.len(),
        "duplicate or endpoint-less events among {} connection events",
        evs.len()
    );
    let missing: Vec<_> = ss_before.difference(&reported).take(20).collect();
    let extra: Vec<_> = reported.difference(&ss_before).take(20).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "agent reported {} tuples, ss {}; {} missing, e.g. {missing:?}; {} extra, e.g. {extra:?}",
        reported.len(),
        ss_before.len(),
        ss_before.difference(&reported).count(),
        reported.difference(&ss_before).count(),
    );

    let mut wrong = Vec::new();
    for e in &evs {
        check_event_invariants(e);
        let t = tuple(e).unwrap();
        let want = owner[&t];
        let got = u(e, "/local_process/pid");
        if got != Some(want as u64)
            || s(e, "/tcp/state") != "ESTABLISHED"
            || s(e, "/action") != "open"
        {
            wrong.push(format!(
                "{t}: pid {got:?} (want {want}), attribution {}, state {}, action {}",
                s(e, "/attribution"),
                s(e, "/tcp/state"),
                s(e, "/action")
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} sockets wrongly reported, e.g.:\n{}",
        wrong.len(),
        evs.len(),
        wrong[..wrong.len().min(20)].join("\n")
    );
}

/// `ss`'s ESTABLISHED tuples whose local or remote port is one of `ports`.
fn ss_on_ports(ports: &[u16]) -> BTreeSet<Tuple> {
    ss_established()
        .into_iter()
        .filter(|t| ports.contains(&t.local.port()) || ports.contains(&t.remote.port()))
        .collect()
}

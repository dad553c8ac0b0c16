//! `connbeat --once` on a real server process and a real client process (two pids) on
//! loopback, IPv4 and IPv6: the listening socket (with its local_ip), the outgoing side
//! and the incoming side, each with the right process, direction and tcp state; and UDP
//! sockets, reported only with `connbeat.udp: true`.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

#[test]
fn once_reports_listener_and_both_sides_ipv4() {
    once_reports_listener_and_both_sides("127.0.0.1", "ipv4", "4");
}

#[test]
fn once_reports_listener_and_both_sides_ipv6() {
    once_reports_listener_and_both_sides("::1", "ipv6", "6");
}

fn once_reports_listener_and_both_sides(ip: &str, family: &str, tag: &str) {
    if !root_or_skip("once_reports_listener_and_both_sides") {
        return;
    }
    let dir = TempDir::new("once");
    let (srv_exe, cli_exe) = (
        named_helper(&dir, &format!("cb-srv{tag}")),
        named_helper(&dir, &format!("cb-cli{tag}")),
    );
    let bind = std::net::SocketAddr::new(ip.parse().unwrap(), 0).to_string();
    let srv = Proc::spawn(&srv_exe, &["listen", &bind, "1"]);
    let port = srv.ready_port();
    let target = std::net::SocketAddr::new(ip.parse().unwrap(), port).to_string();
    let cli = Proc::spawn(&cli_exe, &["connect", &target, "1"]);
    cli.wait_line("HELD", Duration::from_secs(30));
    srv.wait_line("HELD", Duration::from_secs(30));
    let out_tuple = cli.socks()[0];
    let in_tuple = srv.socks()[0];
    assert_eq!(out_tuple.local, in_tuple.remote, "helpers disagree");

    let cfg = console_config(&dir, "");
    // Both ways of finding socket owners must give the same answer.
    for scan in ["proc", "bpf"] {
        let once = run_once(&cfg, &["-E", &format!("connbeat.fd_scan={scan}")]);
        if scan == "bpf" && once.stderr.contains("cannot load the BPF iterator") {
            eprintln!("SKIP (fd_scan=bpf part): {}", once.stderr.trim());
            continue;
        }
        check_both_sides(
            &once, port, ip, family, &srv, &cli, &srv_exe, &cli_exe, out_tuple, in_tuple,
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn check_both_sides(
    once: &Once,
    port: u16,
    ip: &str,
    family: &str,
    srv: &Proc,
    cli: &Proc,
    srv_exe: &std::path::Path,
    cli_exe: &std::path::Path,
    out_tuple: Tuple,
    in_tuple: Tuple,
) {
    once.assert_ok();
    let evs = on_ports(&once.events, &[port]);
    for e in &evs {
        check_event_invariants(e);
        assert_eq!(s(e, "/transport"), "tcp", "{e}");
        assert_eq!(s(e, "/family"), family, "{e}");
    }

    // The listening socket.
    let listening: Vec<&&Value> = evs
        .iter()
        .filter(|e| s(e, "/action") == "listening" && u(e, "/local_port") == Some(port as u64))
        .collect();
    assert_eq!(
        listening.len(),
        1,
        "one listening event for port {port}: {evs:#?}"
    );
    let l = listening[0];
    assert_eq!(s(l, "/direction"), "listening", "{l}");
    assert_eq!(s(l, "/local_ip"), ip, "listening socket's local_ip: {l}");
    assert_eq!(s(l, "/tcp/state"), "LISTEN", "{l}");
    assert!(l.get("remote_ip").is_none(), "listening has no remote: {l}");
    assert!(
        l.get("remote_port").is_none(),
        "listening has no remote: {l}"
    );
    check_process(l, srv, srv_exe);

    // The client's socket: outgoing.
    let out = only(&evs, out_tuple);
    assert_eq!(s(out, "/action"), "open", "{out}");
    assert_eq!(s(out, "/direction"), "outgoing", "{out}");
    assert_eq!(s(out, "/tcp/state"), "ESTABLISHED", "{out}");
    check_process(out, cli, cli_exe);

    // The server's accepted socket: incoming.
    let inc = only(&evs, in_tuple);
    assert_eq!(s(inc, "/action"), "open", "{inc}");
    assert_eq!(s(inc, "/direction"), "incoming", "{inc}");
    assert_eq!(s(inc, "/tcp/state"), "ESTABLISHED", "{inc}");
    check_process(inc, srv, srv_exe);

    // The two sides are two sockets: two cookies; tcp_info shows the handshake.
    assert_ne!(s(out, "/cookie"), s(inc, "/cookie"));
    // The client sent SYN and ACK; the accepted socket received them (its SYN-ACK was
    // sent by the request socket, so its own segs_out may be 0).
    assert!(u(out, "/tcp/segs_out").unwrap_or(0) >= 2, "segs_out: {out}");
    assert!(u(inc, "/tcp/segs_in").unwrap_or(0) >= 1, "segs_in: {inc}");
    for e in [out, inc] {
        assert!(
            e.pointer("/tcp/rtt_us").is_some_and(Value::is_u64),
            "rtt_us: {e}"
        );
        assert!(u(e, "/netns").unwrap_or(0) > 0, "netns: {e}");
        assert!(!s(e, "/beat/hostname").is_empty(), "beat.hostname: {e}");
        assert!(!s(e, "/@timestamp").is_empty(), "@timestamp: {e}");
    }
}

fn only<'a>(evs: &[&'a Value], t: Tuple) -> &'a Value {
    let m: Vec<&&Value> = evs.iter().filter(|e| tuple(e) == Some(t)).collect();
    assert_eq!(m.len(), 1, "one event for {t}, got {m:#?}");
    m[0]
}

fn check_process(e: &Value, p: &Proc, exe: &std::path::Path) {
    assert_eq!(s(e, "/attribution"), "procfs", "{e}");
    assert_eq!(u(e, "/local_process/pid"), Some(p.pid as u64), "pid: {e}");
    let name = exe.file_name().unwrap().to_str().unwrap();
    assert_eq!(s(e, "/local_process/binary"), name, "binary: {e}");
    assert_eq!(
        s(e, "/local_process/exe"),
        exe.to_str().unwrap(),
        "exe: {e}"
    );
    assert_eq!(s(e, "/local_process/cmdline"), p.cmdline(), "cmdline: {e}");
    assert_eq!(
        u(e, "/local_process/ppid"),
        Some(std::process::id() as u64),
        "ppid: {e}"
    );
    assert_eq!(s(e, "/local_process/user"), "root", "user: {e}");
}

#[test]
fn udp_sockets_are_reported_only_when_asked_ipv4() {
    udp_sockets_are_reported_only_when_asked("127.0.0.1", "ipv4", "4");
}

#[test]
fn udp_sockets_are_reported_only_when_asked_ipv6() {
    udp_sockets_are_reported_only_when_asked("::1", "ipv6", "6");
}

/// `connbeat.udp: true`: a bound UDP socket is `listening`, a connected one `outgoing`,
/// each with its process and without `tcp`; with the default (`false`) neither appears.
fn udp_sockets_are_reported_only_when_asked(ip: &str, family: &str, tag: &str) {
    if !root_or_skip("udp_sockets_are_reported_only_when_asked") {
        return;
    }
    let dir = TempDir::new("once-udp");
    let (srv_exe, cli_exe) = (
        named_helper(&dir, &format!("cb-usrv{tag}")),
        named_helper(&dir, &format!("cb-ucli{tag}")),
    );
    let bind = std::net::SocketAddr::new(ip.parse().unwrap(), 0).to_string();
    let srv = Proc::spawn(&srv_exe, &["udp-bind", &bind]);
    let port = srv.ready_port();
    let target = std::net::SocketAddr::new(ip.parse().unwrap(), port).to_string();
    let cli = Proc::spawn(&cli_exe, &["udp-connect", &target]);
    cli.wait_line("SOCK", Duration::from_secs(30));
    // The server got the datagram: both sockets exist and have been used.
    srv.wait_line("SOCK", Duration::from_secs(30));
    let out_tuple = cli.socks()[0];

    let cfg = console_config(&dir, "");
    // Other tests' TCP sockets may use the same port number: only UDP events count here.
    let udp_on = |events: &[Value]| -> Vec<Value> {
        on_ports(events, &[port])
            .into_iter()
            .filter(|e| s(e, "/transport") == "udp")
            .cloned()
            .collect()
    };
    let without = run_once(&cfg, &[]);
    without.assert_ok();
    assert!(
        udp_on(&without.events).is_empty(),
        "UDP reported with connbeat.udp off: {:#?}",
        udp_on(&without.events)
    );

    let with = run_once(&cfg, &["-E", "connbeat.udp=true"]);
    with.assert_ok();
    let evs = udp_on(&with.events);
    let evs: Vec<&Value> = evs.iter().collect();
    for e in &evs {
        check_event_invariants(e);
        assert_eq!(s(e, "/family"), family, "{e}");
        assert!(e.get("tcp").is_none(), "tcp fields on a UDP socket: {e}");
    }
    let bound: Vec<&&Value> = evs
        .iter()
        .filter(|e| s(e, "/action") == "listening")
        .collect();
    assert_eq!(bound.len(), 1, "one bound socket on {port}: {evs:#?}");
    assert_eq!(s(bound[0], "/direction"), "listening", "{}", bound[0]);
    assert_eq!(s(bound[0], "/local_ip"), ip, "{}", bound[0]);
    assert_eq!(u(bound[0], "/local_port"), Some(port as u64));
    check_process(bound[0], &srv, &srv_exe);
    let out = only(&evs, out_tuple);
    assert_eq!(s(out, "/action"), "open", "{out}");
    assert_eq!(s(out, "/direction"), "outgoing", "{out}");
    check_process(out, &cli, &cli_exe);
    assert_eq!(evs.len(), 2, "nothing else on {port}: {evs:#?}");
}

/// `-N`: every event is built and counted, none reaches the output.
#[test]
fn dry_run_builds_every_event_and_publishes_none() {
    if !root_or_skip("dry_run_builds_every_event_and_publishes_none") {
        return;
    }
    let dir = TempDir::new("once-dry");
    let srv_exe = named_helper(&dir, "cb-dsrv");
    let cli_exe = named_helper(&dir, "cb-dcli");
    let srv = Proc::spawn(&srv_exe, &["listen", "127.0.0.1:0", "1"]);
    let port = srv.ready_port();
    let cli = Proc::spawn(&cli_exe, &["connect", &format!("127.0.0.1:{port}"), "1"]);
    cli.wait_line("HELD", Duration::from_secs(30));
    srv.wait_line("HELD", Duration::from_secs(30));
    let cfg = console_config(&dir, "");

    let dry = run_once(&cfg, &["-N"]);
    dry.assert_ok();
    assert!(
        dry.events.is_empty(),
        "-N printed events: {:?}",
        &dry.events[..dry.events.len().min(3)]
    );
    let lines: Vec<String> = dry.stderr.lines().map(str::to_string).collect();
    let totals = total_metrics(&lines).expect("the totals line");
    let built = totals.get("output.events.dry_run").copied().unwrap_or(0);
    // At least the listener and both sides of the held connection.
    assert!(built >= 3, "events built: {built}; totals: {totals:?}");
    assert_eq!(totals.get("queue.published").copied(), Some(built));
    assert_eq!(totals.get("output.write.bytes"), None, "{totals:?}");
}

/// `connbeat --once | head -1`: once the reader of standard output is gone, the console
/// drops the rest (counted, one warning) and the run ends instead of retrying forever.
#[test]
fn once_ends_when_standard_output_is_closed() {
    if !root_or_skip("once_ends_when_standard_output_is_closed") {
        return;
    }
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};
    let dir = TempDir::new("once-pipe");
    let srv_exe = named_helper(&dir, "cb-psrv");
    let cli_exe = named_helper(&dir, "cb-pcli");
    // 300 connections: 600 events, several times what a pipe buffers.
    let srv = Proc::spawn(&srv_exe, &["listen", "127.0.0.1:0", "300"]);
    let port = srv.ready_port();
    let cli = Proc::spawn(&cli_exe, &["connect", &format!("127.0.0.1:{port}"), "300"]);
    cli.wait_line("HELD", Duration::from_secs(30));
    srv.wait_line("HELD", Duration::from_secs(30));
    let cfg = console_config(&dir, "");

    let mut agent = Command::new(CONNBEAT)
        .arg("-c")
        .arg(&cfg)
        .arg("--once")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start connbeat --once");
    let mut first = String::new();
    BufReader::new(agent.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("read one event");
    assert!(first.starts_with('{'), "first line: {first:?}");
    // The reader is dropped here: standard output is now a broken pipe.
    let exited = poll_until(Duration::from_secs(60), || agent.try_wait().ok().flatten());
    if exited.is_none() {
        let _ = agent.kill();
        let _ = agent.wait();
        panic!("connbeat --once still running 60 s after its standard output closed");
    }
    let mut stderr = String::new();
    agent
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert!(
        stderr.contains("standard output is closed (broken pipe)"),
        "{stderr}"
    );
    let lines: Vec<String> = stderr.lines().map(str::to_string).collect();
    let totals = total_metrics(&lines).expect("the totals line");
    let dropped = totals.get("output.events.dropped").copied().unwrap_or(0);
    assert!(dropped > 0, "{totals:?}");
}

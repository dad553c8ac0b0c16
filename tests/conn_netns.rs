//! `connbeat.namespaces: all`: connections inside network namespaces the test makes with
//! `ip netns` and veth pairs. Namespace A runs a server; B and C connect to it over veth;
//! each namespace also has a loopback server and client on the same port numbers, so
//! only the `netns` field can tell them apart. Every connection must appear once per side,
//! in its namespace, with its real pid; closes inside the namespaces must arrive; and
//! `namespaces: host` must see none of it.

mod common;
mod netns_support;

use common::*;
use netns_support::{Netns, link};
use serde_json::Value;
use std::time::Duration;

const VETH_PORT: u16 = 7100;
const LO_PORT: u16 = 7200;

/// A helper started inside a namespace.
fn spawn_in(ns: &Netns, exe: &std::path::Path, args: &[&str]) -> Proc {
    let (cmd, argv) = ns.wrap(&exe.display().to_string(), args);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    Proc::spawn(std::path::Path::new(&format!("/usr/bin/{cmd}")), &argv)
}

struct Scene {
    a: Netns,
    b: Netns,
    c: Netns,
    /// (namespace inode, helper) for every process holding test sockets.
    procs: Vec<(u64, Proc)>,
    _dir: TempDir,
}

fn scene(tag: &str) -> Scene {
    let dir = TempDir::new(tag);
    let id = std::process::id() % 100_000;
    let a = Netns::new(&format!("cb{id}{tag}a"));
    let b = Netns::new(&format!("cb{id}{tag}b"));
    let c = Netns::new(&format!("cb{id}{tag}c"));
    link(&a, "veth-ab", "198.18.1.1", &b, "veth-ba", "198.18.1.2");
    link(&a, "veth-ac", "198.18.2.1", &c, "veth-ca", "198.18.2.2");
    let srv = named_helper(&dir, "cb-nssrv");
    let cli = named_helper(&dir, "cb-nscli");
    let mut procs = Vec::new();
    let server = spawn_in(&a, &srv, &["listen", &format!("0.0.0.0:{VETH_PORT}"), "2"]);
    server.ready_port();
    for (ns, ip) in [(&b, "198.18.1.1"), (&c, "198.18.2.1")] {
        let client = spawn_in(ns, &cli, &["connect", &format!("{ip}:{VETH_PORT}"), "1"]);
        client.wait_line("HELD", Duration::from_secs(30));
        procs.push((ns.inode(), client));
    }
    server.wait_line("HELD", Duration::from_secs(30));
    procs.push((a.inode(), server));
    for ns in [&a, &b, &c] {
        let s = spawn_in(ns, &srv, &["listen", &format!("127.0.0.1:{LO_PORT}"), "1"]);
        s.ready_port();
        let cl = spawn_in(ns, &cli, &["connect", &format!("127.0.0.1:{LO_PORT}"), "1"]);
        cl.wait_line("HELD", Duration::from_secs(30));
        s.wait_line("HELD", Duration::from_secs(30));
        procs.push((ns.inode(), s));
        procs.push((ns.inode(), cl));
    }
    Scene {
        a,
        b,
        c,
        procs,
        _dir: dir,
    }
}

fn events_in(events: &[Value], netns: &[u64]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["netns"].as_u64().is_some_and(|n| netns.contains(&n)))
        .cloned()
        .collect()
}

fn skip() -> bool {
    if let Err(why) = netns_support::available() {
        eprintln!("skipped: network namespaces unavailable ({why})");
        return true;
    }
    false
}

#[test]
fn every_connection_in_every_namespace_appears_once_per_side_with_its_pid() {
    if skip() {
        return;
    }
    let s = scene("o");
    let inodes = [s.a.inode(), s.b.inode(), s.c.inode()];
    let dir = TempDir::new("netns-once");
    let cfg = console_config(&dir, "connbeat.namespaces: all");
    let once = run_once(&cfg, &[]);
    once.assert_ok();
    let seen = events_in(&once.events, &inodes);
    let mut expected = 0;
    for (ns, p) in &s.procs {
        for t in p.socks() {
            expected += 1;
            let matching: Vec<&Value> = seen
                .iter()
                .filter(|e| tuple(e) == Some(t) && e["netns"].as_u64() == Some(*ns))
                .collect();
            assert_eq!(matching.len(), 1, "{t} in netns {ns}: {matching:?}");
            let e = matching[0];
            assert_eq!(e["action"], "open");
            assert_eq!(
                e["local_process"]["pid"].as_u64(),
                Some(p.pid as u64),
                "{e}"
            );
            let want_dir = if [VETH_PORT, LO_PORT].contains(&t.local.port()) {
                "incoming"
            } else {
                "outgoing"
            };
            assert_eq!(e["direction"], want_dir, "{e}");
        }
    }
    // 2 veth connections and 3 loopback ones, both sides each.
    assert_eq!(expected, 10);
    let listening = seen.iter().filter(|e| e["action"] == "listening").count();
    assert_eq!(
        listening, 4,
        "one veth listener in A and a loopback one in each"
    );
    // The agent's own view with namespaces: host holds none of these namespaces.
    let cfg = console_config(&dir, "connbeat.namespaces: host");
    let host = run_once(&cfg, &[]);
    host.assert_ok();
    assert!(
        events_in(&host.events, &inodes).is_empty(),
        "namespaces: host reported sockets of other namespaces"
    );
}

#[test]
fn closes_inside_namespaces_arrive_with_their_netns() {
    if skip() {
        return;
    }
    let mut s = scene("c");
    let (b_inode, a_inode) = (s.b.inode(), s.a.inode());
    let dir = TempDir::new("netns-close");
    let cfg = console_config(&dir, "connbeat.namespaces: all\nconnbeat.poll_interval: 1s");
    let mut agent = Agent::start(&cfg, &[]);
    let client_b = s
        .procs
        .iter()
        .position(|(ns, p)| {
            *ns == b_inode && p.socks().iter().any(|t| t.remote.port() == VETH_PORT)
        })
        .expect("client in B");
    let tuple_b = s.procs[client_b].1.socks()[0];
    agent.wait_events("open of B's client", Duration::from_secs(30), |ev| {
        ev.iter()
            .any(|e| tuple(e) == Some(tuple_b) && e["action"] == "open")
    });
    let (_, mut client) = s.procs.remove(client_b);
    let client_pid = client.pid as u64;
    let reversed = Tuple {
        local: tuple_b.remote,
        remote: tuple_b.local,
    };
    client
        .finish(Duration::from_secs(10))
        .expect("client exits");
    let closed_in = |ev: &[Value], t: Tuple, ns: u64| {
        ev.iter().any(|e| {
            tuple(e) == Some(t) && e["action"] == "closed" && e["netns"].as_u64() == Some(ns)
        })
    };
    agent.wait_events(
        "closed event of B's client",
        Duration::from_secs(30),
        |ev| closed_in(ev, tuple_b, b_inode),
    );
    // The server's side stays in CLOSE_WAIT until the server closes it too.
    let server = s
        .procs
        .iter()
        .position(|(ns, p)| *ns == a_inode && p.socks().iter().any(|t| t.local.port() == VETH_PORT))
        .expect("server in A");
    let (_, mut server) = s.procs.remove(server);
    server
        .finish(Duration::from_secs(10))
        .expect("server exits");
    agent.wait_events(
        "closed event of A's server side",
        Duration::from_secs(30),
        |ev| closed_in(ev, reversed, a_inode),
    );
    let (status, stderr) = agent.terminate(Duration::from_secs(20));
    assert!(status.success());
    let events = agent.events();
    let closed_b = events
        .iter()
        .find(|e| tuple(e) == Some(tuple_b) && e["action"] == "closed")
        .unwrap();
    assert_eq!(closed_b["attribution"], "cache", "{closed_b}");
    assert_eq!(closed_b["local_process"]["pid"].as_u64(), Some(client_pid));
    let totals = total_metrics(&stderr).expect("Total metrics line");
    assert!(
        totals
            .get("conn.close_events.received")
            .copied()
            .unwrap_or(0)
            >= 2,
        "{totals:?}"
    );
}

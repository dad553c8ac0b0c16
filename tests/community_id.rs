//! Community ID: connbeat's values equal those of the specification's reference
//! implementation (the `communityid` package on PyPI, `scripts/install-deps.sh test`
//! installs it), over many flows of every kind; and on a real loopback connection the two
//! connection events (one per end) and the transaction share one value.

mod common;

use common::*;
use connbeat::community_id::CommunityId;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

/// One flow as the oracle script reads it.
struct Flow {
    proto: &'static str,
    src: IpAddr,
    dst: IpAddr,
    a: u16,
    b: u16,
}

/// Reads `proto src dst a b` lines, prints the reference implementation's value of each.
const ORACLE: &str = r#"
import sys
try:
    import communityid
except ImportError:
    print("MISSING")
    sys.exit(0)
c = communityid.CommunityID()
make = {"tcp": communityid.FlowTuple.make_tcp, "udp": communityid.FlowTuple.make_udp,
        "sctp": communityid.FlowTuple.make_sctp, "icmp": communityid.FlowTuple.make_icmp,
        "icmp6": communityid.FlowTuple.make_icmp6}
for line in sys.stdin:
    p, s, d, a, b = line.split()
    print(c.calc(make[p](s, d, int(a), int(b))))
"#;

/// The oracle's values, or None (after a loud skip line) when it is not installed.
fn oracle(flows: &[Flow]) -> Option<Vec<String>> {
    let mut child = match Command::new("python3")
        .args(["-c", ORACLE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("SKIPPED community_id: python3 is not available ({e})");
            return None;
        }
    };
    let mut input = String::new();
    for f in flows {
        input.push_str(&format!(
            "{} {} {} {} {}\n",
            f.proto, f.src, f.dst, f.a, f.b
        ));
    }
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "oracle failed");
    let text = String::from_utf8(out.stdout).unwrap();
    if text.starts_with("MISSING") {
        eprintln!(
            "SKIPPED community_id: the communityid Python package is not installed \
             (scripts/install-deps.sh test installs it)"
        );
        return None;
    }
    Some(text.lines().map(str::to_string).collect())
}

fn ours(f: &Flow) -> Option<CommunityId> {
    match f.proto {
        "icmp" | "icmp6" => CommunityId::of_icmp(f.src, f.dst, f.a as u8, f.b as u8),
        t => CommunityId::of_ports(t, SocketAddr::new(f.src, f.a), SocketAddr::new(f.dst, f.b)),
    }
}

/// Flows of every kind: random addresses and ports, equal addresses (ordering by port),
/// every ICMP type with and without a counterpart, both families.
fn flows() -> Vec<Flow> {
    let mut rng = fastrand::Rng::with_seed(9);
    let v4 = |rng: &mut fastrand::Rng| IpAddr::V4(Ipv4Addr::from(rng.u32(..)));
    let v6 = |rng: &mut fastrand::Rng| IpAddr::V6(Ipv6Addr::from(rng.u128(..)));
    let mut out = Vec::new();
    for i in 0..400 {
        let v6flow = i % 2 == 1;
        let (src, mut dst) = if v6flow {
            (v6(&mut rng), v6(&mut rng))
        } else {
            (v4(&mut rng), v4(&mut rng))
        };
        if i % 10 == 0 {
            dst = src;
        }
        let proto = ["tcp", "udp", "sctp"][i % 3];
        out.push(Flow {
            proto,
            src,
            dst,
            a: rng.u16(..),
            b: rng.u16(..),
        });
    }
    for t in 0..=255u8 {
        for (proto, src, dst) in [
            ("icmp", v4(&mut rng), v4(&mut rng)),
            ("icmp6", v6(&mut rng), v6(&mut rng)),
        ] {
            out.push(Flow {
                proto,
                src,
                dst,
                a: t.into(),
                b: rng.u8(..4).into(),
            });
        }
    }
    // The loopback and documentation addresses the other tests use.
    for (s, d) in [
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "::1"),
        ("10.0.0.2", "10.0.0.1"),
    ] {
        out.push(Flow {
            proto: "tcp",
            src: s.parse().unwrap(),
            dst: d.parse().unwrap(),
            a: 80,
            b: 40000,
        });
    }
    out
}

#[test]
fn equals_the_reference_implementation() {
    let flows = flows();
    let Some(want) = oracle(&flows) else { return };
    assert_eq!(want.len(), flows.len());
    let (mut icmp, mut icmp6, mut v6) = (0, 0, 0);
    for (f, want) in flows.iter().zip(&want) {
        let got = ours(f).expect("a value");
        assert_eq!(
            got.as_str(),
            want,
            "{} {} -> {} ({}, {})",
            f.proto,
            f.src,
            f.dst,
            f.a,
            f.b
        );
        icmp += usize::from(f.proto == "icmp");
        icmp6 += usize::from(f.proto == "icmp6");
        v6 += usize::from(f.src.is_ipv6());
    }
    assert_eq!((icmp, icmp6), (256, 256));
    assert!(v6 > 400, "{v6}");
}

/// A tiny HTTP server: answers every request on one connection with 200.
fn serve_http(l: TcpListener) {
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        got.drain(..end + 4);
                        let _ = s.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok",
                        );
                    }
                }
            });
        }
    });
}

/// One HTTP exchange on a real loopback connection, with the agent (events in `format`)
/// polling sockets and capturing `lo`: the agent's events once both connection ends and
/// the transaction are there, and the exchange's client and server addresses.
fn loopback_exchange(test: &str, format: &str) -> Option<(Vec<Value>, SocketAddr, SocketAddr)> {
    if !root_or_skip(test) {
        return None;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    serve_http(listener);
    let dir = TempDir::new("cid");
    let cfg = console_config(
        &dir,
        &format!(
            "connbeat.event_format: {format}\n\
             connbeat.poll_interval: 100ms\nconnbeat.interfaces.device: lo\n\
             connbeat.protocols: [{{type: http, ports: [{port}]}}]\n\
             queue.mem: {{events: 256, flush.min_events: 1, flush.timeout: 50ms}}"
        ),
    );
    let agent = Agent::start(&cfg, &[]);
    if poll_until(Duration::from_secs(20), || {
        agent
            .stderr()
            .iter()
            .any(|l| l.contains("started with"))
            .then_some(())
    })
    .is_none()
    {
        panic!("agent did not start: {:?}", agent.stderr());
    }
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let client = c.local_addr().unwrap();
    let server = c.peer_addr().unwrap();
    c.write_all(b"GET /cid HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 256];
    let mut got = Vec::new();
    while !got.ends_with(b"ok") {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "server closed early");
        got.extend_from_slice(&buf[..n]);
    }
    let ends = |e: &Value| {
        let t = if format == "ecs" {
            ecs_tuple(e)
        } else {
            tuple(e)
        };
        t == Some(Tuple {
            local: client,
            remote: server,
        }) || t
            == Some(Tuple {
                local: server,
                remote: client,
            })
    };
    let is_txn = |e: &Value| {
        s(e, "/type") == "http" && (s(e, "/path") == "/cid" || s(e, "/url/path") == "/cid")
    };
    agent.wait_events(
        "both ends and the transaction",
        Duration::from_secs(30),
        |evs| evs.iter().filter(|e| ends(e)).count() >= 2 && evs.iter().any(is_txn),
    );
    let evs = agent.events();
    drop(c);
    Some((evs, client, server))
}

/// The (local, remote) ends of an ECS connection event: `source` and `destination` by
/// direction (the remote end is the source of an incoming connection).
fn ecs_tuple(e: &Value) -> Option<Tuple> {
    if s(e, "/event/dataset") != "connbeat.connection" {
        return None;
    }
    let end = |k: &str| -> Option<SocketAddr> {
        Some(SocketAddr::new(
            e[k]["ip"].as_str()?.parse().ok()?,
            e[k]["port"].as_u64()? as u16,
        ))
    };
    let (src, dst) = (end("source")?, end("destination")?);
    Some(if s(e, "/connbeat/direction") == "incoming" {
        Tuple {
            local: dst,
            remote: src,
        }
    } else {
        Tuple {
            local: src,
            remote: dst,
        }
    })
}

/// A real loopback connection: its two connection events (client end, server end) and
/// its HTTP transaction carry one value, the one computed from the tuple.
#[test]
fn both_ends_and_the_transaction_share_one_value() {
    let Some((evs, client, server)) =
        loopback_exchange("both_ends_and_the_transaction_share_one_value", "classic")
    else {
        return;
    };
    let port = server.port();
    let is_end = |e: &Value, local: SocketAddr, remote: SocketAddr| {
        s(e, "/type") == "connbeat" && tuple(e) == Some(Tuple { local, remote })
    };
    let want = CommunityId::of_ports("tcp", client, server).unwrap();
    let cli = evs.iter().find(|e| is_end(e, client, server)).unwrap();
    let srv = evs.iter().find(|e| is_end(e, server, client)).unwrap();
    let txn = evs
        .iter()
        .find(|e| s(e, "/type") == "http" && s(e, "/path") == "/cid")
        .unwrap();
    assert_eq!(s(cli, "/community_id"), want.as_str(), "{cli}");
    assert_eq!(s(srv, "/community_id"), want.as_str(), "{srv}");
    assert_eq!(s(txn, "/community_id"), want.as_str(), "{txn}");
    // Listening sockets have one endpoint, hence no flow.
    let listening = evs
        .iter()
        .find(|e| s(e, "/action") == "listening" && u(e, "/local_port") == Some(port.into()))
        .expect("the listener's event");
    assert!(listening.get("community_id").is_none(), "{listening}");
    if let Some(o) = oracle(&[Flow {
        proto: "tcp",
        src: client.ip(),
        dst: server.ip(),
        a: client.port(),
        b: server.port(),
    }]) {
        assert_eq!(o[0], want.as_str());
    }
}

/// The same exchange in ECS: `network.community_id` on both connection events and the
/// transaction, and the transaction's `process` is this test's own process, which owns
/// the server's socket.
#[test]
fn ecs_events_carry_it_as_network_community_id() {
    let Some((evs, client, server)) =
        loopback_exchange("ecs_events_carry_it_as_network_community_id", "ecs")
    else {
        return;
    };
    let want = CommunityId::of_ports("tcp", client, server).unwrap();
    let cli = evs
        .iter()
        .find(|e| {
            ecs_tuple(e)
                == Some(Tuple {
                    local: client,
                    remote: server,
                })
        })
        .unwrap();
    let srv = evs
        .iter()
        .find(|e| {
            ecs_tuple(e)
                == Some(Tuple {
                    local: server,
                    remote: client,
                })
        })
        .unwrap();
    let txn = evs
        .iter()
        .find(|e| s(e, "/type") == "http" && s(e, "/url/path") == "/cid")
        .unwrap();
    for e in [cli, srv, txn] {
        assert_eq!(s(e, "/network/community_id"), want.as_str(), "{e}");
        assert!(e.get("community_id").is_none(), "{e}");
    }
    assert_eq!(s(txn, "/client/ip"), "127.0.0.1");
    assert_eq!(u(txn, "/client/port"), Some(client.port().into()));
    assert_eq!(u(txn, "/server/port"), Some(server.port().into()));
    assert_eq!(
        u(txn, "/process/pid"),
        Some(std::process::id().into()),
        "{txn}"
    );
    assert_eq!(
        u(cli, "/process/pid"),
        Some(std::process::id().into()),
        "{cli}"
    );
}

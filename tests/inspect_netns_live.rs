//! ICMP, DHCPv4 and flows on real traffic between network namespaces the test makes: the
//! agent (the real binary) captures on a veth inside one namespace while `ping`, busybox
//! `udhcpc` against dnsmasq, and a small UDP exchange run across the links. Every event is
//! checked against what the test caused: ICMP transactions and errors, DHCP messages in
//! order, flow counters equal to the packets and bytes sent.
//!
//! Needs root (namespaces, capture) and iputils-ping, dnsmasq-base, busybox-static
//! (scripts/install-deps.sh test); without them each test says SKIPPED loudly and returns.

mod netns_support;

use netns_support::{Netns, ip, link};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CONNBEAT: &str = env!("CARGO_BIN_EXE_connbeat");

fn skip(why: &str) {
    eprintln!("\n*** SKIPPED: {why} ***\n");
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the test can run here; says why not.
fn ready(tools: &[&str]) -> bool {
    if let Err(why) = netns_support::available() {
        skip(&format!("network namespaces unavailable: {why}"));
        return false;
    }
    for t in tools {
        if !have(t) {
            skip(&format!(
                "{t} is not installed (scripts/install-deps.sh test)"
            ));
            return false;
        }
    }
    true
}

/// Runs a command inside a namespace, panicking with its output on failure.
fn run_in(ns: &Netns, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .args(args)
        .output()
        .expect("ip netns exec");
    assert!(
        out.status.success(),
        "{}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `f` until it is true or `secs` pass.
fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The agent, capturing on `device` inside a namespace, its events collected from stdout.
struct Agent {
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    dir: std::path::PathBuf,
}

impl Agent {
    fn start(ns: &Netns, device: &str, settings: &str) -> Agent {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "connbeat-netns-live-{}-{}-{n}",
            std::process::id(),
            ns.name
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("connbeat.yml");
        std::fs::write(
            &cfg,
            format!(
                "output.console: {{enabled: true}}\nlogging.level: info\n\
                 connbeat.interfaces.device: {device}\nconnbeat.interfaces.internal_networks: [private]\n{settings}\n"
            ),
        )
        .unwrap();
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", ns.path().display()))
            .arg(CONNBEAT)
            .arg("-c")
            .arg(&cfg)
            .arg("--strict.perms=false")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the agent");
        let events = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let sink = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        // The startup line is logged once the capture is open.
        let err = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("agent: {line}");
                if line.contains("started with")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("the agent did not start within 60s");
        Agent { child, events, dir }
    }

    /// Events of these types so far.
    fn of(&self, types: &[&str]) -> Vec<Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["type"].as_str().is_some_and(|t| types.contains(&t)))
            .cloned()
            .collect()
    }

    /// Stops the agent (SIGTERM: it flushes) and returns every event.
    fn stop(mut self) -> Vec<Value> {
        let pid = self.child.id() as i32;
        // SAFETY: a signal to the child this test started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if self.child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(Instant::now() < end, "the agent did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
        // The reader thread sees EOF right after the exit; give it the time to drain.
        std::thread::sleep(Duration::from_millis(200));
        let _ = std::fs::remove_dir_all(&self.dir);
        self.events.lock().unwrap().clone()
    }
}

/// A test that fails midway still ends its agents (they would go on capturing).
impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ping(ns: &Netns, args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", &ns.name, "ping"])
        .args(args)
        .output()
        .expect("ping")
}

/// Three namespaces: `a` (the agent's) — `b` (a router) — `c`, in 198.18.1.0/24,
/// 198.18.2.0/24 and fd00:1::/64.
struct Net {
    a: Netns,
    b: Netns,
    c: Netns,
}

fn three_namespaces(tag: &str) -> Net {
    let p = std::process::id() % 10_000;
    let a = Netns::new(&format!("cb{tag}a{p}"));
    let b = Netns::new(&format!("cb{tag}b{p}"));
    let c = Netns::new(&format!("cb{tag}c{p}"));
    for ns in [&a, &b, &c] {
        for k in [
            "net.ipv6.conf.all.accept_dad",
            "net.ipv6.conf.default.accept_dad",
        ] {
            run_in(ns, &["sysctl", "-q", &format!("{k}=0")]);
        }
    }
    link(&a, "ia0", "198.18.1.1", &b, "ib0", "198.18.1.2");
    link(&b, "ib1", "198.18.2.1", &c, "ic0", "198.18.2.2");
    ip(&[
        "-n",
        &a.name,
        "-6",
        "addr",
        "add",
        "fd00:1::1/64",
        "dev",
        "ia0",
        "nodad",
    ]);
    ip(&[
        "-n",
        &b.name,
        "-6",
        "addr",
        "add",
        "fd00:1::2/64",
        "dev",
        "ib0",
        "nodad",
    ]);
    ip(&[
        "-n",
        &a.name,
        "route",
        "add",
        "198.18.2.0/24",
        "via",
        "198.18.1.2",
    ]);
    ip(&[
        "-n",
        &c.name,
        "route",
        "add",
        "198.18.1.0/24",
        "via",
        "198.18.2.1",
    ]);
    run_in(&b, &["sysctl", "-q", "net.ipv4.ip_forward=1"]);
    // Neighbours known in advance: no ARP delay, no neighbour solicitations of our own.
    let mac = |ns: &Netns, dev: &str| {
        let out = run_in(ns, &["cat", &format!("/sys/class/net/{dev}/address")]);
        out.trim().to_string()
    };
    let (ma, mb) = (mac(&a, "ia0"), mac(&b, "ib0"));
    for (ns, dev, addr, lladdr) in [
        (&a, "ia0", "198.18.1.2", &mb),
        (&a, "ia0", "fd00:1::2", &mb),
        (&b, "ib0", "198.18.1.1", &ma),
        (&b, "ib0", "fd00:1::1", &ma),
    ] {
        ip(&[
            "-n",
            &ns.name,
            "neigh",
            "replace",
            addr,
            "lladdr",
            lladdr,
            "dev",
            dev,
            "nud",
            "permanent",
        ]);
    }
    Net { a, b, c }
}

/// ICMP types the interfaces send on their own (neighbour discovery, MLD, router
/// solicitations): not caused by the test's commands.
fn background(e: &Value) -> bool {
    let t = e["icmp"]["request"]["type"]
        .as_u64()
        .or(e["icmp"]["response"]["type"].as_u64());
    e["icmp"]["version"] == 6 && matches!(t, Some(130..=137 | 143))
}

#[test]
fn icmp_echo_unreachable_and_ttl_expiry_between_namespaces() {
    if !ready(&["ping", "nsenter"]) {
        return;
    }
    let net = three_namespaces("i");
    let agent = Agent::start(
        &net.a,
        "ia0",
        "connbeat.event_format: ecs\nconnbeat.protocols: [{type: icmp, transaction_timeout: 3s}]",
    );
    let ok = ping(&net.a, &["-c", "1", "-W", "5", "198.18.1.2"]);
    assert!(ok.status.success(), "{ok:?}");
    let ok6 = ping(&net.a, &["-6", "-c", "1", "-W", "5", "fd00:1::2"]);
    assert!(ok6.status.success(), "{ok6:?}");
    // No host at 198.18.2.99: the router's ARP fails and it answers Host Unreachable.
    let unreach = ping(&net.a, &["-c", "1", "-W", "8", "198.18.2.99"]);
    assert!(!unreach.status.success());
    // TTL 1 through the router: Time Exceeded from it.
    let ttl = ping(&net.a, &["-c", "1", "-t", "1", "-W", "5", "198.18.2.2"]);
    assert!(!ttl.status.success());
    // The two unanswered echo requests time out (3s) and are published too.
    wait_until(30, "six ICMP events", || {
        agent
            .of(&["icmp"])
            .iter()
            .filter(|e| !background(e))
            .count()
            >= 6
    });
    let events: Vec<Value> = agent
        .stop()
        .into_iter()
        .filter(|e| e["type"] == "icmp")
        .collect();
    let (caused, other): (Vec<Value>, Vec<Value>) =
        events.into_iter().partition(|e| !background(e));
    for e in &other {
        eprintln!(
            "background ICMPv6 (neighbour discovery, MLD): {}",
            e["icmp"]
        );
    }
    let summary: Vec<String> = caused
        .iter()
        .map(|e| {
            format!(
                "{} {} -> {} {} / {} {}",
                e["icmp"]["version"],
                e["client"]["ip"].as_str().unwrap_or("?"),
                e["server"]["ip"].as_str().unwrap_or("?"),
                e["icmp"]["request"]["message"].as_str().unwrap_or("-"),
                e["icmp"]["response"]["message"].as_str().unwrap_or("-"),
                e["status"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    let mut sorted = summary.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "4 198.18.1.1 -> 198.18.1.2 EchoRequest / EchoReply OK",
            "4 198.18.1.1 -> 198.18.2.2 EchoRequest / - Error",
            "4 198.18.1.1 -> 198.18.2.99 EchoRequest / - Error",
            "4 198.18.1.2 -> 198.18.1.1 DestinationUnreachable(Host) / - Error",
            "4 198.18.1.2 -> 198.18.1.1 TimeExceeded(TTLExceeded) / - Error",
            "6 fd00:1::1 -> fd00:1::2 EchoRequest / EchoReply OK",
        ],
        "{caused:#?}"
    );
    for e in &caused {
        assert_eq!(e["event"]["type"], serde_json::json!(["connection"]), "{e}");
        assert!(e["server"].get("port").is_none(), "{e}");
        assert!(
            e["network"]["community_id"]
                .as_str()
                .is_some_and(|c| c.starts_with("1:")),
            "{e}"
        );
        let v6 = e["icmp"]["version"] == 6;
        assert_eq!(
            e["network"]["transport"],
            if v6 { "ipv6-icmp" } else { "icmp" }
        );
    }
    let echo = caused
        .iter()
        .find(|e| e["server"]["ip"] == "198.18.1.2" && e["client"]["ip"] == "198.18.1.1")
        .unwrap();
    // ping's default: 56 bytes after the 8-byte header, each way.
    assert_eq!(echo["source"]["bytes"], 56);
    assert_eq!(echo["destination"]["bytes"], 56);
    assert_eq!(echo["path"], "198.18.1.2");
    assert!(echo["event"]["duration"].as_u64().is_some());
    let lost = caused
        .iter()
        .find(|e| e["server"]["ip"] == "198.18.2.99")
        .unwrap();
    assert_eq!(
        lost["error"]["message"],
        "Request was received without an associated response."
    );
}

#[test]
fn dhcp_lease_renewal_and_release_between_namespaces() {
    if !ready(&["dnsmasq", "busybox", "nsenter"]) {
        return;
    }
    let p = std::process::id() % 10_000;
    let s = Netns::new(&format!("cbds{p}"));
    let c = Netns::new(&format!("cbdc{p}"));
    ip(&[
        "link", "add", "ds0", "netns", &s.name, "type", "veth", "peer", "name", "dc0", "netns",
        &c.name,
    ]);
    ip(&["-n", &s.name, "addr", "add", "198.18.5.1/24", "dev", "ds0"]);
    ip(&["-n", &s.name, "link", "set", "ds0", "up"]);
    ip(&["-n", &c.name, "link", "set", "dc0", "up"]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/services/start-dhcp.sh");
    let started = Command::new(&script)
        .args([&s.name, "ds0", "198.18.5.50", "198.18.5.60"])
        .output()
        .expect("start-dhcp.sh");
    if !started.status.success() {
        skip(&format!(
            "dnsmasq did not start: {}",
            String::from_utf8_lossy(&started.stderr)
        ));
        return;
    }
    let line = String::from_utf8_lossy(&started.stdout).into_owned();
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .unwrap_or_default()
            .to_string()
    };
    let (dns_pid, dns_dir) = (field("pid"), field("dir"));
    struct Stop(String, String);
    impl Drop for Stop {
        fn drop(&mut self) {
            if let Ok(pid) = self.0.parse::<i32>() {
                // SAFETY: a signal to the dnsmasq this test started.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let _ = std::fs::remove_dir_all(&self.1);
        }
    }
    let _stop = Stop(dns_pid, dns_dir.clone());
    // Two agents on the same traffic: ECS events (one per message, as Packetbeat 8) and
    // classic ones (one per exchange).
    let agent = Agent::start(
        &s,
        "ds0",
        "connbeat.event_format: ecs\nconnbeat.protocols: [{type: dhcpv4, ports: [67, 68]}]",
    );
    let classic = Agent::start(
        &s,
        "ds0",
        "connbeat.protocols: [{type: dhcpv4, ports: [67, 68]}]",
    );
    // And af_packet with four decoding threads: a request and its reply have different
    // addresses (0.0.0.0 and broadcast, then the server's and the lease's), so a flow
    // hash would give them to different threads; the exchanges must still pair.
    let fanned = Agent::start(
        &s,
        "ds0",
        "connbeat.interfaces.type: af_packet\nconnbeat.interfaces.workers: 4\n\
         connbeat.protocols: [{type: dhcpv4, ports: [67, 68]}]",
    );
    // udhcpc configures the address through its script, in the foreground.
    let hook = Path::new(&dns_dir).join("udhcpc.sh");
    std::fs::write(
        &hook,
        "#!/bin/sh\ncase \"$1\" in\n  bound|renew) ip addr flush dev \"$interface\"; \
         ip addr add \"$ip/$subnet\" dev \"$interface\";;\n  deconfig) ip addr flush dev \"$interface\";;\nesac\n",
    )
    .unwrap();
    Command::new("chmod").arg("+x").arg(&hook).status().unwrap();
    let mut client = Command::new("ip")
        .args([
            "netns", "exec", &c.name, "busybox", "udhcpc", "-f", "-i", "dc0", "-s",
        ])
        .arg(&hook)
        .args(["-t", "10", "-T", "2", "-x", "hostname:connbeat-test"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("udhcpc");
    let kind = |e: &Value| {
        e["dhcpv4"]["option"]["message_type"]
            .as_str()
            .map(String::from)
    };
    let count = |agent: &Agent, t: &str| {
        agent
            .of(&["dhcpv4"])
            .iter()
            .filter(|e| kind(e).as_deref() == Some(t))
            .count()
    };
    wait_until(60, "the lease (ack)", || count(&agent, "ack") >= 1);
    let pid = client.id() as i32;
    // SIGUSR1: renew; SIGUSR2: release (busybox udhcpc).
    unsafe { libc::kill(pid, libc::SIGUSR1) };
    wait_until(60, "the renewal's ack", || count(&agent, "ack") >= 2);
    unsafe { libc::kill(pid, libc::SIGUSR2) };
    wait_until(60, "the release", || count(&agent, "release") >= 1);
    wait_until(60, "the release exchange", || {
        classic
            .of(&["dhcpv4"])
            .iter()
            .any(|e| e["method"] == "RELEASE")
    });
    wait_until(60, "the release exchange with af_packet", || {
        fanned
            .of(&["dhcpv4"])
            .iter()
            .any(|e| e["method"] == "RELEASE")
    });
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let _ = client.wait();
    let exchanges = classic.stop();
    let fanned: Vec<Value> = fanned
        .stop()
        .into_iter()
        .filter(|e| e["type"] == "dhcpv4")
        .collect();
    let pairs = |events: &[Value]| -> Vec<(String, String, String)> {
        events
            .iter()
            .filter(|e| e["type"] == "dhcpv4")
            .map(|e| {
                let t = |v: &Value| v.as_str().unwrap_or("-").to_string();
                (
                    t(&e["method"]),
                    t(&e["status"]),
                    t(&e["dhcpv4"]["response"]["option"]["message_type"]),
                )
            })
            .collect()
    };
    assert_eq!(
        pairs(&fanned),
        pairs(&exchanges),
        "af_packet with 4 workers: {fanned:#?}"
    );
    let events: Vec<Value> = agent
        .stop()
        .into_iter()
        .filter(|e| e["type"] == "dhcpv4")
        .collect();
    let kinds: Vec<String> = events.iter().filter_map(kind).collect();
    assert_eq!(
        kinds,
        [
            "discover", "offer", "request", "ack", "request", "ack", "release"
        ],
        "{events:#?}"
    );
    let xid = |i: usize| events[i]["dhcpv4"]["transaction_id"].clone();
    assert_eq!(xid(0), xid(1), "discover and offer share a transaction id");
    assert_eq!(xid(2), xid(3));
    assert_eq!(xid(4), xid(5));
    let leased = events[3]["dhcpv4"]["assigned_ip"]
        .as_str()
        .unwrap()
        .to_string();
    let n: u8 = leased.rsplit('.').next().unwrap().parse().unwrap();
    assert!((50..=60).contains(&n), "{leased}");
    let mac = run_in(&c, &["cat", "/sys/class/net/dc0/address"])
        .trim()
        .to_uppercase()
        .replace(':', "-");
    for e in &events {
        assert_eq!(e["dhcpv4"]["client_mac"], mac.as_str(), "{e}");
        assert_eq!(e["client"]["port"], 68, "{e}");
        assert_eq!(e["server"]["port"], 67, "{e}");
        assert_eq!(e["network"]["transport"], "udp");
        assert_eq!(e["status"], "OK");
    }
    for i in [1, 3, 5] {
        let e = &events[i];
        assert_eq!(e["dhcpv4"]["op_code"], "bootreply");
        assert_eq!(
            e["source"]["ip"], "198.18.5.1",
            "a reply comes from the server"
        );
        assert_eq!(e["server"]["ip"], "198.18.5.1");
        assert_eq!(e["dhcpv4"]["option"]["server_identifier"], "198.18.5.1");
        assert_eq!(e["dhcpv4"]["option"]["subnet_mask"], "255.255.255.0");
        assert_eq!(e["dhcpv4"]["option"]["ip_address_lease_time_sec"], 120);
    }
    assert_eq!(events[0]["dhcpv4"]["option"]["hostname"], "connbeat-test");
    assert_eq!(
        events[4]["dhcpv4"]["client_ip"],
        leased.as_str(),
        "renewal from the lease"
    );
    assert_eq!(events[6]["dhcpv4"]["client_ip"], leased.as_str());

    // Classic events: the lease is two exchanges, the renewal one, the release one.
    let exchanges: Vec<&Value> = exchanges.iter().filter(|e| e["type"] == "dhcpv4").collect();
    let methods: Vec<&str> = exchanges
        .iter()
        .filter_map(|e| e["method"].as_str())
        .collect();
    assert_eq!(
        methods,
        ["DISCOVER", "REQUEST", "REQUEST", "RELEASE"],
        "{exchanges:#?}"
    );
    let answers = ["offer", "ack", "ack"];
    for (i, e) in exchanges.iter().enumerate() {
        let d = &e["dhcpv4"];
        assert_eq!(e["status"], "OK", "{e}");
        assert_eq!(e["transport"], "udp");
        assert_eq!(d["client_mac"], mac.as_str(), "{e}");
        assert_eq!(d["request"]["client_mac"], mac.as_str(), "{e}");
        assert_eq!(d["transaction_id"], xid([0, 2, 4, 6][i]), "{e}");
        assert_eq!(
            (e["client_port"].clone(), e["port"].clone()),
            (68.into(), 67.into())
        );
        assert!(d.get("retransmissions").is_none(), "{e}");
        // The messages' sizes, as the ECS events counted them.
        assert_eq!(
            e["bytes_in"],
            events[[0, 2, 4, 6][i]]["client"]["bytes"],
            "{e}"
        );
        if i == 3 {
            // A release expects no reply.
            assert!(d.get("response").is_none(), "{e}");
            assert!(e.get("responsetime").is_none(), "{e}");
            assert_eq!(e["ip"], "198.18.5.1");
            assert_eq!(e["client_ip"], leased.as_str());
            assert_eq!(d["request"]["client_ip"], leased.as_str());
            continue;
        }
        assert!(e["responsetime"].is_u64(), "{e}");
        assert_eq!(e["ip"], "198.18.5.1", "the server that answered: {e}");
        let r = &d["response"];
        assert_eq!(r["option"]["message_type"], answers[i], "{e}");
        assert_eq!(r["op_code"], "bootreply");
        assert_eq!(r["assigned_ip"], leased.as_str(), "{e}");
        assert_eq!(r["option"]["server_identifier"], "198.18.5.1");
        assert_eq!(r["option"]["ip_address_lease_time_sec"], 120);
        assert_eq!(
            e["bytes_out"],
            events[[1, 3, 5][i]]["server"]["bytes"],
            "{e}"
        );
    }
    let (lease, request, renewal) = (exchanges[0], exchanges[1], exchanges[2]);
    assert_eq!(lease["client_ip"], "0.0.0.0", "no address before the lease");
    assert_eq!(
        lease["dhcpv4"]["request"]["option"]["message_type"],
        "discover"
    );
    assert_eq!(
        lease["dhcpv4"]["request"]["option"]["hostname"],
        "connbeat-test"
    );
    assert_eq!(request["client_ip"], "0.0.0.0");
    assert_eq!(
        request["dhcpv4"]["request"]["option"]["requested_ip_address"],
        leased.as_str()
    );
    assert_eq!(
        renewal["client_ip"],
        leased.as_str(),
        "renewal from the lease"
    );
    assert_eq!(renewal["dhcpv4"]["request"]["client_ip"], leased.as_str());
}

#[test]
fn flow_counters_equal_what_was_sent() {
    if !ready(&["ping", "nsenter", "python3"]) {
        return;
    }
    let net = three_namespaces("f");
    let _ = &net.c;
    let agent = Agent::start(
        &net.a,
        "ia0",
        "connbeat.event_format: ecs\nconnbeat.udp: true\nconnbeat.poll_interval: 1s\n\
         connbeat.flows: {timeout: 2s, period: 1s}",
    );
    // A UDP echo server in b and a client in a: 5 datagrams of 100 bytes each way.
    let server = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
                  s.bind(('198.18.1.2',9999))\nfor _ in range(5):\n d,a=s.recvfrom(2048)\n s.sendto(d,a)\n";
    let mut srv = Command::new("ip")
        .args(["netns", "exec", &net.b.name, "python3", "-c", server])
        .spawn()
        .expect("python3 server");
    wait_until(30, "the UDP server", || {
        run_in(&net.b, &["ss", "-Hlun", "sport = :9999"]).contains("9999")
    });
    let client = "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
                  s.bind(('198.18.1.1',0))\nprint(s.getsockname()[1],flush=True)\ntime.sleep(2.5)\n\
                  for _ in range(5):\n s.sendto(b'x'*100,('198.18.1.2',9999)); s.recvfrom(2048)\n\
                  time.sleep(2.5)\n";
    let out = Command::new("ip")
        .args(["netns", "exec", &net.a.name, "python3", "-c", client])
        .output()
        .expect("python3 client");
    assert!(out.status.success(), "{out:?}");
    let port: u16 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let _ = srv.wait();
    let ok = ping(&net.a, &["-c", "4", "-i", "0.5", "198.18.1.2"]);
    assert!(ok.status.success(), "{ok:?}");
    let is_udp = |e: &Value| e["source"]["port"] == port && e["destination"]["port"] == 9999;
    let is_ping =
        |e: &Value| e["network"]["transport"] == "icmp" && e["destination"]["ip"] == "198.18.1.2";
    wait_until(30, "the final flow events", || {
        let f = agent.of(&["flow"]);
        f.iter().any(|e| is_udp(e) && e["flow"]["final"] == true)
            && f.iter().any(|e| is_ping(e) && e["flow"]["final"] == true)
    });
    let flows: Vec<Value> = agent
        .stop()
        .into_iter()
        .filter(|e| e["type"] == "flow")
        .collect();
    let finals: Vec<&Value> = flows
        .iter()
        .filter(|e| e["flow"]["final"] == true && (is_udp(e) || is_ping(e)))
        .collect();
    assert_eq!(finals.len(), 2, "one final event per flow: {finals:#?}");
    let udp = finals.iter().find(|e| is_udp(e)).unwrap();
    // Ethernet 14 + IPv4 20 + UDP 8 + 100 bytes, five times each way.
    assert_eq!(udp["source"]["ip"], "198.18.1.1");
    assert_eq!(udp["source"]["packets"], 5, "{udp}");
    assert_eq!(udp["source"]["bytes"], 5 * 142, "{udp}");
    assert_eq!(udp["destination"]["packets"], 5, "{udp}");
    assert_eq!(udp["destination"]["bytes"], 5 * 142, "{udp}");
    assert_eq!(udp["network"]["packets"], 10);
    assert_eq!(udp["network"]["transport"], "udp");
    assert_eq!(
        udp["event"]["type"],
        serde_json::json!(["connection", "end"])
    );
    // The client socket lives in the agent's namespace: its process is known.
    assert_eq!(udp["source"]["process"]["name"], "python3", "{udp}");
    let pinged = finals.iter().find(|e| is_ping(e)).unwrap();
    // Ethernet 14 + IPv4 20 + ICMP 8 + 56 bytes, four times each way.
    assert_eq!(pinged["source"]["packets"], 4, "{pinged}");
    assert_eq!(pinged["source"]["bytes"], 4 * 98);
    assert_eq!(pinged["destination"]["packets"], 4);
    assert_eq!(pinged["destination"]["bytes"], 4 * 98);
    assert!(pinged.get("process").is_none());
    // Periodic reports came while the UDP flow was active, not final, never over the end.
    let periodic: Vec<&Value> = flows
        .iter()
        .filter(|e| is_udp(e) && e["flow"]["final"] == false)
        .collect();
    assert!(
        !periodic.is_empty(),
        "a period (1s) passed while the UDP flow was active"
    );
    for e in periodic {
        assert!(e["network"]["packets"].as_u64().unwrap() <= 10);
        assert_eq!(e["flow"]["id"], udp["flow"]["id"]);
    }
}

//! Live deep inspection on the loopback device against real servers started by
//! tests/services/start-*.sh and driven by their real clients. Needs root (capture) and the
//! Debian packages the scripts install; without them it says SKIPPED loudly and returns.
//!
//! `client_process` / `server_process` come through a [`ProcessLookup`]; in the agent that
//! is the connection table, here a small /proc-based one ([`ProcLookup`]).

use connbeat::config::from_yaml_str;
use connbeat::event::CommonFields;
use connbeat::inspect::{ProcessLookup, ProcessRef};
use connbeat::output::{Outcome, Output, OutputError};
use connbeat::publish::{self, PipelineSettings};
use serde_json::Value;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Collects published events.
struct Collect(Arc<Mutex<Vec<Value>>>);

impl Output for Collect {
    fn name(&self) -> &'static str {
        "collect"
    }
    fn publish(&mut self, batch: &[connbeat::event::Record]) -> Result<Outcome, OutputError> {
        self.0
            .lock()
            .unwrap()
            .extend(batch.iter().map(connbeat::event::Record::value));
        Ok(Outcome::Acked)
    }
}

/// Socket owners from /proc/net/{tcp,tcp6,udp,udp6} and /proc/*/fd.
struct ProcLookup;

fn hex_addr(a: SocketAddr) -> String {
    match a {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(v6) => {
            let o = v6.ip().octets();
            let words: String = o
                .chunks(4)
                .map(|c| format!("{:08X}", u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect();
            format!("{words}:{:04X}", v6.port())
        }
    }
}

impl ProcessLookup for ProcLookup {
    fn lookup(&self, local: SocketAddr, remote: SocketAddr) -> Option<ProcessRef> {
        let (l, r) = (hex_addr(local), hex_addr(remote));
        let any_remote = if local.is_ipv4() {
            "00000000:0000".to_string()
        } else {
            format!("{}:0000", "0".repeat(32))
        };
        let mut inode = None;
        for table in ["tcp", "tcp6", "udp", "udp6"] {
            let text = std::fs::read_to_string(format!("/proc/net/{table}")).unwrap_or_default();
            for line in text.lines().skip(1) {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() > 9
                    && f[1] == l
                    && (f[2] == r || (table.starts_with("udp") && f[2] == any_remote))
                    && f[9] != "0"
                {
                    inode = Some(f[9].to_string());
                }
            }
        }
        let want = format!("socket:[{}]", inode?);
        for p in std::fs::read_dir("/proc").ok()?.flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
                continue;
            };
            for fd in fds.flatten() {
                if std::fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy() == want) {
                    let binary = std::fs::read_to_string(p.path().join("comm"))
                        .ok()?
                        .trim()
                        .to_string();
                    return Some(ProcessRef { pid, binary });
                }
            }
        }
        None
    }
}

/// A server started by a tests/services script, stopped (by PID) on drop.
struct Service {
    pid: u32,
    dir: String,
    line: String,
}

impl Service {
    fn start(script: &str, args: &[&str]) -> Option<Service> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/services")
            .join(script);
        let out = Command::new("bash").arg(path).args(args).output().ok()?;
        if !out.status.success() {
            eprintln!(
                "SKIPPED part: {script} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .map(str::to_string)
        };
        eprintln!("started: {line}");
        Some(Service {
            pid: field("pid=")?.parse().ok()?,
            dir: field("dir=")?,
            line,
        })
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.pid.to_string()).status();
        // Wait (bounded) for the server to go before removing its directory.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{}", self.pid)).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = &self.line;
    }
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    eprintln!("{cmd} {args:?}: exit {:?}", out.status.code());
}

fn wait_for(events: &Mutex<Vec<Value>>, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(e) = events.lock().unwrap().iter().find(|e| pred(e)) {
            return e.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {what} event within 30 s; got {:#?}",
            events.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn live_transactions_with_processes() {
    if !nix_is_root() {
        eprintln!("SKIPPED live_transactions_with_processes: needs root to capture on lo");
        return;
    }
    let Some(redis) = Service::start("start-redis.sh", &["26379"]) else {
        eprintln!("SKIPPED live_transactions_with_processes: redis-server unavailable");
        return;
    };
    let web = Service::start("start-nginx.sh", &["28080", "28443"]);
    let dns = Service::start("start-dnsmasq.sh", &["25353"]);
    let my = Service::start("start-mariadb.sh", &["23306"]);
    let pg = Service::start("start-postgresql.sh", &["25432"]);

    let yaml = r#"
connbeat.interfaces: {device: lo}
connbeat.transaction_timeout: 5s
output.console: {enabled: true}
queue.mem: {events: 64, flush.min_events: 1, flush.timeout: 100ms}
connbeat.protocols:
  - {type: http, ports: [28080]}
  - {type: tls, ports: [28443]}
  - {type: dns, ports: [25353]}
  - {type: redis, ports: [26379]}
  - {type: mysql, ports: [23306]}
  - {type: pgsql, ports: [25432]}
"#;
    let config = from_yaml_str(yaml, &[], &|_| None).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let (publisher, pipeline) = publish::start(
        PipelineSettings::from_config(&config),
        Box::new(Collect(events.clone())),
        CommonFields::from_config(&config),
    )
    .expect("pipeline starts");
    let stop = Arc::new(AtomicBool::new(false));
    let lookup: Arc<dyn ProcessLookup> = Arc::new(ProcLookup);
    let capture =
        match connbeat::inspect::spawn_live(&config, publisher, Some(lookup), stop.clone()) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("SKIPPED live_transactions_with_processes: cannot capture: {e:#}");
                return;
            }
        };
    // The capture is open before spawn_live returns: traffic from now on is seen.

    // Redis from this test process: client_process is us, server_process is redis-server.
    {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect("127.0.0.1:26379").unwrap();
        s.write_all(
            b"*3\r\n$3\r\nSET\r\n$4\r\nlive\r\n$5\r\nhello\r\n*2\r\n$3\r\nGET\r\n$4\r\nlive\r\n",
        )
        .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while !got.ends_with(b"hello\r\n") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        let e = wait_for(&events, "redis GET", |e| {
            e["type"] == "redis" && e["method"] == "GET"
        });
        assert_eq!(e["redis"]["return_value"], "hello");
        assert_eq!(e["server_process"]["pid"], redis.pid);
        assert_eq!(e["server_process"]["binary"], "redis-server");
        assert_eq!(e["client_process"]["pid"], std::process::id());
    }
    run(
        "redis-cli",
        &["-h", "127.0.0.1", "-p", "26379", "INCR", "n"],
    );
    let e = wait_for(&events, "redis INCR", |e| {
        e["type"] == "redis" && e["method"] == "INCR"
    });
    assert_eq!(e["redis"]["return_value"], "1");

    if web.is_some() {
        run(
            "curl",
            &["-s", "-o", "/dev/null", "http://127.0.0.1:28080/index.html"],
        );
        run(
            "curl",
            &["-s", "-o", "/dev/null", "http://127.0.0.1:28080/missing"],
        );
        let e = wait_for(&events, "http 200", |e| {
            e["type"] == "http" && e["path"] == "/index.html"
        });
        assert_eq!(e["method"], "GET");
        assert_eq!(e["http"]["response"]["code"], 200);
        server_is(&e, "nginx");
        let e = wait_for(&events, "http 404", |e| {
            e["type"] == "http" && e["path"] == "/missing"
        });
        assert_eq!(e["status"], "Client Error");
        run(
            "curl",
            &[
                "-sk",
                "-o",
                "/dev/null",
                "--http1.1",
                "https://localhost:28443/index.html",
            ],
        );
        let e = wait_for(&events, "tls", |e| e["type"] == "tls");
        assert_eq!(e["tls"]["server_name"], "localhost");
        assert_eq!(e["status"], "OK");
    } else {
        eprintln!("SKIPPED http/tls part: nginx unavailable");
    }
    if dns.is_some() {
        run(
            "dig",
            &[
                "@127.0.0.1",
                "-p",
                "25353",
                "+tries=1",
                "www.example.test",
                "A",
            ],
        );
        let e = wait_for(&events, "dns", |e| {
            e["type"] == "dns" && e["resource"] == "www.example.test"
        });
        assert_eq!(e["dns"]["answers"][0]["data"], "192.0.2.10");
        assert_eq!(e["dns"]["response_code"], "NOERROR");
        server_is(&e, "dnsmasq");
    } else {
        eprintln!("SKIPPED dns part: dnsmasq unavailable");
    }
    if my.is_some() {
        run(
            "mariadb",
            &[
                "-h",
                "127.0.0.1",
                "-P",
                "23306",
                "-u",
                "root",
                "--skip-ssl",
                "-e",
                "CREATE DATABASE l; CREATE TABLE l.t (a INT); INSERT INTO l.t VALUES (1),(2),(3); SELECT * FROM l.t WHERE a > 1",
            ],
        );
        let e = wait_for(&events, "mysql select", |e| {
            e["type"] == "mysql" && e["query"] == "SELECT * FROM l.t WHERE a > 1"
        });
        assert_eq!(e["mysql"]["num_rows"], 2);
        let e = wait_for(&events, "mysql insert", |e| {
            e["type"] == "mysql" && e["method"] == "INSERT"
        });
        assert_eq!(e["mysql"]["affected_rows"], 3);
        server_is(&e, "mariadbd");
    } else {
        eprintln!("SKIPPED mysql part: mariadb unavailable");
    }
    if pg.is_some() {
        run(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                "25432",
                "-U",
                "postgres",
                "-X",
                "-q",
                "-c",
                "SELECT generate_series(1, 4)",
                "-c",
                "SELECT nope",
            ],
        );
        let e = wait_for(&events, "pgsql select", |e| {
            e["type"] == "pgsql" && e["query"] == "SELECT generate_series(1, 4)"
        });
        assert_eq!(e["pgsql"]["num_rows"], 4);
        let e = wait_for(&events, "pgsql error", |e| {
            e["type"] == "pgsql" && e["query"] == "SELECT nope"
        });
        assert_eq!(e["status"], "Error");
        assert_eq!(e["pgsql"]["error_code"], "42703");
        server_is(&e, "postgres");
    } else {
        eprintln!("SKIPPED pgsql part: postgresql unavailable");
    }

    stop.store(true, Ordering::Relaxed);
    capture.join().unwrap();
    assert!(pipeline.finish(Duration::from_secs(5)));
    assert!(connbeat::monitor::get(&connbeat::monitor::METRICS.inspect_pcap_received) > 0);
    drop((redis, web, dns, my, pg));
}

/// A running live capture into a collecting pipeline.
struct Live {
    events: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
    capture: std::thread::JoinHandle<()>,
    pipeline: publish::Pipeline,
}

impl Live {
    /// Starts capturing on lo with the configuration `yaml`; None (said why) when it cannot.
    fn start(yaml: &str, test: &str) -> Option<Live> {
        let config = from_yaml_str(yaml, &[], &|_| None).unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let (publisher, pipeline) = publish::start(
            PipelineSettings::from_config(&config),
            Box::new(Collect(events.clone())),
            CommonFields::from_config(&config),
        )
        .expect("pipeline starts");
        let stop = Arc::new(AtomicBool::new(false));
        let lookup: Arc<dyn ProcessLookup> = Arc::new(ProcLookup);
        match connbeat::inspect::spawn_live(&config, publisher, Some(lookup), stop.clone()) {
            Ok(capture) => Some(Live {
                events,
                stop,
                capture,
                pipeline,
            }),
            Err(e) => {
                eprintln!("SKIPPED {test}: cannot capture: {e:#}");
                None
            }
        }
    }

    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.capture.join().unwrap();
        assert!(self.pipeline.finish(Duration::from_secs(5)));
    }
}

/// Thrift: the Calc service (tests/data/thrift/calc.thrift) in each protocol and transport,
/// called by its own generated client in another process. The transactions are the
/// client's calls, in order, with the parameters named from the IDL, the exception, the
/// oneway call, and the processes at both ends.
#[test]
fn live_thrift_transactions_are_the_clients_calls() {
    const TEST: &str = "live_thrift_transactions_are_the_clients_calls";
    if !nix_is_root() {
        eprintln!("SKIPPED {TEST}: needs root to capture on lo");
        return;
    }
    let combos = [
        ("binary", "socket"),
        ("binary", "framed"),
        ("compact", "socket"),
        ("compact", "framed"),
    ];
    let mut servers = Vec::new();
    for (p, t) in combos {
        match Service::start("start-thrift.sh", &[p, t]) {
            Some(s) => servers.push(s),
            None => {
                eprintln!(
                    "SKIPPED {TEST}: the Thrift service does not start (thrift-compiler, python thrift)"
                );
                return;
            }
        }
    }
    let port = |s: &Service| -> u16 {
        s.line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("port="))
            .and_then(|p| p.parse().ok())
            .expect("port=")
    };
    let idl = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/thrift/calc.thrift");
    let mut yaml = String::from(
        "connbeat.interfaces: {device: lo}\noutput.console: {enabled: true}\n\
         queue.mem: {events: 64, flush.min_events: 1, flush.timeout: 100ms}\nconnbeat.protocols:\n",
    );
    for ((p, t), s) in combos.iter().zip(&servers) {
        yaml.push_str(&format!(
            "  - {{type: thrift, ports: [{}], protocol_type: {p}, transport_type: {t}, \
             idl_files: [{:?}], send_request: true, send_response: true}}\n",
            port(s),
            idl.display().to_string()
        ));
    }
    let Some(live) = Live::start(&yaml, TEST) else {
        return;
    };
    let client_py = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/services/thrift-client.py");
    for ((p, t), s) in combos.iter().zip(&servers) {
        use std::io::{BufRead, BufReader, Write};
        let port = port(s);
        let mut client = Command::new("python3")
            .arg(&client_py)
            .args([s.dir.as_str(), &port.to_string(), p, t])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs the client");
        let mut line = String::new();
        BufReader::new(client.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let called: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(called.len(), 7, "{p}/{t} client: {line:?}");
        let of_port = |ev: &[Value]| -> Vec<Value> {
            ev.iter()
                .filter(|e| e["type"] == "thrift" && e["port"] == port)
                .cloned()
                .collect()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let got = loop {
            let got = of_port(&live.events.lock().unwrap());
            if got.len() >= called.len() || Instant::now() > deadline {
                break got;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let methods: Vec<&str> = got.iter().filter_map(|e| e["method"].as_str()).collect();
        assert_eq!(methods, called, "{p}/{t}: {got:#?}");
        let by = |i: usize| &got[i];
        assert_eq!(by(1)["query"], "add(a: 2, b: 3)", "{p}/{t}");
        assert_eq!(by(1)["thrift"]["return_value"], "5");
        assert_eq!(by(1)["response"], "5");
        assert_eq!(by(1)["path"], "Calc");
        assert_eq!(by(2)["thrift"]["params"], "(s: \"héllo\")");
        assert_eq!(
            by(3)["thrift"]["return_value"],
            "[(1: 0, 2: 0), (1: 1, 2: -1)]"
        );
        assert_eq!(by(4)["status"], "Error");
        assert_eq!(
            by(4)["thrift"]["exceptions"],
            "(oops: (1: 1, 2: \"divide by zero\"))"
        );
        assert!(
            by(5)["thrift"]["return_value"].is_null(),
            "oneway: no reply"
        );
        assert_eq!(by(6)["thrift"]["return_value"], "42");
        for e in &got {
            assert_eq!(e["server_process"]["pid"], s.pid, "{p}/{t}: {e}");
            assert_eq!(e["server_process"]["binary"], "python3");
            assert_eq!(e["client_process"]["pid"], client.id(), "{p}/{t}: {e}");
        }
        client.stdin.take().unwrap().write_all(b"").unwrap();
        assert!(client.wait().unwrap().success());
    }
    live.finish();
    drop(servers);
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// The short-lived clients here close before the capture thread sees the response, and a
/// /proc lookup cannot see closed sockets (the agent's connection table remembers them):
/// when an owner is reported it must be the right one.
fn server_is(e: &Value, binary: &str) {
    if e["server_process"].is_null() {
        eprintln!(
            "note: {} transaction without server_process (socket already closed)",
            e["type"]
        );
    } else {
        assert_eq!(e["server_process"]["binary"], binary, "{e}");
    }
}

//! Live deep inspection on the loopback device against real servers started by
//! tests/services/start-*.sh and driven by their real clients. Needs root (capture) and the
//! Debian packages the scripts install; without them it says SKIPPED loudly and returns.
//!
//! `client_process` / `server_process` come through a [`ProcessLookup`]; in the agent that
//! is the connection table, here a small /proc-based one ([`ProcLookup`]).

mod common;

use common::{Collect, ProcLookup, Service};
use connbeat::config::from_yaml_str;
use connbeat::event::CommonFields;
use connbeat::inspect::ProcessLookup;
use connbeat::publish::{self, PipelineSettings};
use serde_json::Value;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// A live capture on lo with `yaml`'s protocols into a collecting pipeline (process
/// owners from [`ProcLookup`]); `None` (said loudly) when capturing is not possible.
struct Live {
    events: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
    capture: std::thread::JoinHandle<()>,
    pipeline: connbeat::publish::Pipeline,
}

impl Live {
    fn start(test: &str, yaml: &str) -> Option<Live> {
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
            // The capture is open before spawn_live returns: traffic from now on is seen.
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

    /// Stops the capture and flushes the pipeline.
    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.capture.join().unwrap();
        assert!(self.pipeline.finish(Duration::from_secs(5)));
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
    let Some(live) = Live::start("live_transactions_with_processes", yaml) else {
        return;
    };
    let events = live.events.clone();

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

    live.finish();
    assert!(connbeat::monitor::get(&connbeat::monitor::METRICS.inspect_pcap_received) > 0);
    drop((redis, web, dns, my, pg));
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
    let Some(live) = Live::start(TEST, &yaml) else {
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

// ---- memcache and MongoDB against real servers (issue 10) ----

/// A test client from tests/services, run with python3: the operations it reports doing
/// (`{"command", "status"}` lines until "done"), and the running process, which keeps its
/// connection open until its standard input closes.
struct Client {
    child: std::process::Child,
    ops: Vec<(String, String)>,
}

impl Client {
    fn run(script: &str, args: &[String]) -> Client {
        use std::io::BufRead;
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/services")
            .join(script);
        let mut child = Command::new("python3")
            .arg(path)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut ops = Vec::new();
        let mut done = false;
        for line in out.lines().map_while(Result::ok) {
            if line == "done" {
                done = true;
                break;
            }
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                eprintln!("{script}: not an operation: {line}");
                break;
            };
            ops.push((
                v["command"].as_str().unwrap_or_default().to_string(),
                v["status"].as_str().unwrap_or_default().to_string(),
            ));
        }
        if done {
            return Client { child, ops };
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("{script} {args:?} ended before \"done\" (see its error above)");
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn finish(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Starts memccp (`servers`, `args`) copying `file` and then `fifo`: it does
/// `file`'s operation, then waits in open() on the FIFO, its connection still open, until
/// something is written to the FIFO (stored too, under the FIFO's name).
fn held_memccp(servers: &str, args: &[&str], file: &Path, fifo: &Path) -> std::process::Child {
    let _ = std::fs::remove_file(fifo);
    nix::unistd::mkfifo(fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    Command::new("memccp")
        .arg(servers)
        .args(args)
        .arg(file)
        .arg(fifo)
        .spawn()
        .expect("memccp runs")
}

/// Waits until `pred` holds for `n` events (or 30 s pass), then returns those events.
fn wait_n(events: &Mutex<Vec<Value>>, n: usize, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: Vec<Value> = events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| pred(e))
            .cloned()
            .collect();
        if got.len() >= n || Instant::now() >= deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sorted (command, status) pairs.
fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
    v.sort();
    v
}

/// Starts a live capture with these protocol entries; None (SKIPPED said) when it cannot.
#[allow(clippy::type_complexity)]
fn live(
    test: &str,
    protocols: &str,
) -> Option<(
    Arc<Mutex<Vec<Value>>>,
    Arc<AtomicBool>,
    std::thread::JoinHandle<()>,
    publish::Pipeline,
)> {
    let yaml = format!(
        "connbeat.interfaces: {{device: lo}}\nconnbeat.transaction_timeout: 10s\n\
         output.console: {{enabled: true}}\n\
         queue.mem: {{events: 64, flush.min_events: 1, flush.timeout: 100ms}}\n\
         connbeat.protocols:\n{protocols}"
    );
    let config = from_yaml_str(&yaml, &[], &|_| None).unwrap();
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
        Ok(t) => Some((events, stop, t, pipeline)),
        Err(e) => {
            eprintln!("SKIPPED {test}: cannot capture: {e:#}");
            None
        }
    }
}

fn python_has(modules: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn live_memcache_text_binary_udp() {
    if !nix_is_root() {
        eprintln!("SKIPPED live_memcache_text_binary_udp: needs root to capture on lo");
        return;
    }
    if !python_has("pymemcache") {
        eprintln!(
            "SKIPPED live_memcache_text_binary_udp: pymemcache missing (scripts/install-deps.sh test)"
        );
        return;
    }
    let Some(mc) = Service::start("start-memcached.sh", &[]) else {
        eprintln!("SKIPPED live_memcache_text_binary_udp: memcached unavailable");
        return;
    };
    let port = mc.port();
    let Some((events, stop, capture, pipeline)) = live(
        "live_memcache_text_binary_udp",
        &format!("  - {{type: memcache, ports: [{port}]}}\n"),
    ) else {
        return;
    };
    let of = |proto: &'static str, transport: &'static str| {
        move |e: &Value| {
            e["type"] == "memcache"
                && e["memcache"]["protocol_type"] == proto
                && e["transport"] == transport
        }
    };
    let pair = |e: &Value| {
        (
            e["memcache"]["request"]["command"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            e["status"].as_str().unwrap_or_default().to_string(),
        )
    };

    // Text protocol, pymemcache: one transaction per command, both processes named.
    let client = Client::run("memcache-client.py", &["text".into(), port.to_string()]);
    let got = wait_n(&events, client.ops.len(), of("text", "tcp"));
    assert_eq!(
        sorted(got.iter().map(pair).collect()),
        sorted(client.ops.clone()),
        "{got:#?}"
    );
    for e in &got {
        assert_eq!(e["server_process"]["pid"], mc.pid, "{e}");
        assert_eq!(e["server_process"]["binary"], "memcached", "{e}");
        assert_eq!(e["client_process"]["pid"], client.pid(), "{e}");
    }
    let multi = got
        .iter()
        .find(|e| {
            e["memcache"]["request"]["keys"]
                .as_array()
                .is_some_and(|k| k.len() == 3)
        })
        .expect("the get of three keys");
    assert_eq!(
        multi["memcache"]["response"]["keys"],
        serde_json::json!(["k1", "k2"])
    );
    assert_eq!(multi["memcache"]["response"]["count_values"], 2);
    assert_eq!(multi["memcache"]["response"]["bytes"], 120);
    let incr = got.iter().find(|e| pair(e).0 == "incr").unwrap();
    assert_eq!(incr["memcache"]["response"]["value"], 8);
    let stats = got.iter().find(|e| pair(e).0 == "stats").unwrap();
    assert!(
        stats["memcache"]["response"]["stats"]
            .as_array()
            .unwrap()
            .len()
            > 20
    );
    client.finish();

    // Binary protocol, libmemcached's tools: set, get, delete, each connection closed by
    // a Quit. The agent decodes a segment once the sort window has held it, by which time
    // a tool left to itself has usually exited and its socket is gone: nothing names it.
    // Two are kept alive instead: memccp, copying a file and then a FIFO, waits in open()
    // on the FIFO with its connection open; memccat, reading a value larger than a pipe
    // holds, blocks writing it to a stdout nobody reads yet. Each is let go only once the
    // agent reported its first transaction, and the owner found then is the connection's,
    // so every transaction of theirs names them. memcrm runs to its end unheld: the /proc
    // lookup here cannot see its closed socket, so it may be unnamed, never misnamed. That
    // lookup finds memcached by the port it also listens on for UDP, so every transaction
    // names the server, its connection closed or not.
    let tmp = std::env::temp_dir();
    let name = format!("mc-bin-{}", std::process::id());
    let file = tmp.join(&name);
    let value: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    std::fs::write(&file, &value).unwrap();
    let fifo = tmp.join(format!("mc-fifo-{}", std::process::id()));
    let servers = format!("--servers=127.0.0.1:{port}");
    let is_binary = of("binary", "tcp");
    let opcode = |e: &Value| {
        e["memcache"]["request"]["opcode"]
            .as_str()
            .map(str::to_string)
    };
    let named = |e: &Value, pid: u32, binary: &str| {
        assert_eq!(e["client_process"]["pid"], pid, "{e}");
        assert_eq!(e["client_process"]["binary"], binary, "{e}");
    };

    let mut memccp = held_memccp(&servers, &["--binary"], &file, &fifo);
    let set = wait_for(&events, "memccp's first Set", |e| {
        is_binary(e) && opcode(e).as_deref() == Some("Set")
    });
    named(&set, memccp.id(), "memccp");
    std::fs::write(&fifo, "later").unwrap();
    assert!(memccp.wait().unwrap().success(), "memccp");

    let mut memccat = Command::new("memccat")
        .current_dir(&tmp)
        .args([servers.as_str(), "--binary", &name])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("memccat runs");
    let getk = wait_for(&events, "memccat's GetK", |e| {
        is_binary(e) && opcode(e).as_deref() == Some("GetK")
    });
    named(&getk, memccat.id(), "memccat");
    let mut printed = Vec::new();
    std::io::Read::read_to_end(&mut memccat.stdout.take().unwrap(), &mut printed).unwrap();
    assert!(memccat.wait().unwrap().success(), "memccat");
    assert_eq!(printed, [&value[..], b"\n"].concat());

    let mut memcrm = Command::new("memcrm")
        .args([servers.as_str(), "--binary", &name])
        .spawn()
        .expect("memcrm runs");
    let memcrm_pid = memcrm.id();
    assert!(memcrm.wait().unwrap().success(), "memcrm");

    let got = wait_n(&events, 7, is_binary);
    let mut ops: Vec<String> = got
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["memcache"]["request"]["opcode"], e["memcache"]["response"]["status"]
            )
        })
        .collect();
    ops.sort();
    assert_eq!(
        ops,
        [
            "\"Delete\" \"Success\"",
            "\"GetK\" \"Success\"",
            "\"Quit\" \"Success\"",
            "\"Quit\" \"Success\"",
            "\"Quit\" \"Success\"",
            "\"Set\" \"Success\"",
            "\"Set\" \"Success\""
        ]
    );
    assert!(got.iter().all(|e| e["status"] == "OK"));
    let get = got
        .iter()
        .find(|e| opcode(e).as_deref() == Some("GetK"))
        .unwrap();
    assert_eq!(get["memcache"]["response"]["bytes"], value.len());
    // Each connection by its client port: the tool whose operation it carried.
    let port_of = |op: &str| {
        let e = got.iter().find(|e| opcode(e).as_deref() == Some(op));
        e.map(|e| e["client_port"].clone()).unwrap()
    };
    let (memccp_port, memccat_port, memcrm_port) =
        (port_of("Set"), port_of("GetK"), port_of("Delete"));
    for e in &got {
        assert_eq!(e["server_process"]["pid"], mc.pid, "{e}");
        assert_eq!(e["server_process"]["binary"], "memcached", "{e}");
        let port = &e["client_port"];
        if *port == memccp_port {
            named(e, memccp.id(), "memccp");
        } else if *port == memccat_port {
            named(e, memccat.id(), "memccat");
        } else {
            assert_eq!(*port, memcrm_port, "{e}");
            if !e["client_process"].is_null() {
                named(e, memcrm_pid, "memcrm");
            }
        }
    }
    let _ = std::fs::remove_file(&file);

    // UDP: a text set (noreply) and a binary SetQ from memccp, each run held on the FIFO
    // after its first datagram as above; a get whose reply spans several datagrams, from
    // raw frames of the Python client. memccp's second datagram (the FIFO's content, sent
    // as it exits) may be attributed once memccp is gone: unnamed then, never misnamed.
    let udp_file = tmp.join(format!("mc-udp-{}", std::process::id()));
    std::fs::write(&udp_file, "over udp").unwrap();
    let is_udp = |e: &Value| e["type"] == "memcache" && e["transport"] == "udp";
    let mut memccp_pids = Vec::new();
    for (extra, first) in [(None, "set"), (Some("--binary"), "SetQ")] {
        let mut args = vec!["--udp"];
        args.extend(extra);
        let mut memccp = held_memccp(&servers, &args, &udp_file, &fifo);
        let e = wait_for(&events, &format!("memccp's UDP {first}"), |e| {
            is_udp(e)
                && e["memcache"]["request"]["opcode"]
                    .as_str()
                    .or(e["memcache"]["request"]["command"].as_str())
                    == Some(first)
        });
        named(&e, memccp.id(), "memccp");
        std::fs::write(&fifo, "later").unwrap();
        assert!(memccp.wait().unwrap().success(), "memccp {args:?}");
        memccp_pids.push(memccp.id());
    }
    let _ = std::fs::remove_file(&udp_file);
    let _ = std::fs::remove_file(&fifo);
    let client = Client::run("memcache-client.py", &["udp".into(), port.to_string()]);
    let udp = wait_n(&events, 5, is_udp);
    assert_eq!(udp.len(), 5, "{udp:#?}");
    let text_sets: Vec<&Value> = udp
        .iter()
        .filter(|e| e["memcache"]["protocol_type"] == "text" && pair(e).0 == "set")
        .collect();
    assert_eq!(text_sets.len(), 2, "memccp's text sets: {udp:#?}");
    assert!(
        text_sets
            .iter()
            .all(|e| e["memcache"]["request"]["noreply"] == true)
    );
    let setqs: Vec<&Value> = udp
        .iter()
        .filter(|e| e["memcache"]["request"]["opcode"] == "SetQ")
        .collect();
    assert_eq!(setqs.len(), 2, "memccp's binary SetQs: {udp:#?}");
    assert!(setqs.iter().all(|e| e["status"] == "OK"));
    let get = udp
        .iter()
        .find(|e| pair(e).0 == "get")
        .expect("the UDP get");
    assert_eq!(get["memcache"]["response"]["bytes"], 3000);
    assert_eq!(get["memcache"]["response"]["count_values"], 1);
    assert_eq!(get["status"], "OK");
    named(get, client.pid(), "python3");
    for e in &udp {
        assert_eq!(e["server_process"]["pid"], mc.pid, "{e}");
        assert_eq!(e["server_process"]["binary"], "memcached", "{e}");
        if pair(e).0 != "get" && !e["client_process"].is_null() {
            assert_eq!(e["client_process"]["binary"], "memccp", "{e}");
            let pid = e["client_process"]["pid"].as_u64().unwrap();
            assert!(memccp_pids.iter().any(|&p| u64::from(p) == pid), "{e}");
        }
    }
    client.finish();

    stop.store(true, Ordering::Relaxed);
    capture.join().unwrap();
    assert!(pipeline.finish(Duration::from_secs(5)));
    drop(mc);
}

#[test]
fn live_mongodb_plain_and_compressed() {
    if !nix_is_root() {
        eprintln!("SKIPPED live_mongodb_plain_and_compressed: needs root to capture on lo");
        return;
    }
    if !python_has("mockupdb, pymongo, snappy, backports.zstd") {
        eprintln!(
            "SKIPPED live_mongodb_plain_and_compressed: mockupdb, pymongo, python-snappy or \
             backports.zstd missing (scripts/install-deps.sh test)"
        );
        return;
    }
    for compressor in ["", "zlib", "snappy", "zstd"] {
        let args: Vec<&str> = [compressor].into_iter().filter(|c| !c.is_empty()).collect();
        let Some(server) = Service::start("start-mongodb.sh", &args) else {
            panic!("the MongoDB test server did not start ({compressor})");
        };
        let port = server.port();
        let Some((events, stop, capture, pipeline)) = live(
            "live_mongodb_plain_and_compressed",
            &format!("  - {{type: mongodb, ports: [{port}]}}\n"),
        ) else {
            return;
        };
        let compressed_before =
            connbeat::monitor::get(&connbeat::monitor::METRICS.inspect_mongodb_compressed);
        let mut cargs = vec![port.to_string()];
        cargs.extend(args.iter().map(|s| s.to_string()));
        let client = Client::run("mongodb-client.py", &cargs);
        // The driver's own handshakes and monitoring (hello) are real transactions too;
        // the operations are the rest.
        let handshake = |e: &Value| {
            ["hello", "isMaster", "ismaster", "endSessions"]
                .contains(&e["method"].as_str().unwrap_or_default())
        };
        let got = wait_n(&events, client.ops.len(), |e| {
            e["type"] == "mongodb" && !handshake(e)
        });
        let pairs = got
            .iter()
            .map(|e| {
                (
                    e["method"].as_str().unwrap_or_default().to_string(),
                    e["status"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        assert_eq!(
            sorted(pairs),
            sorted(client.ops.clone()),
            "{compressor}: {got:#?}"
        );
        for e in &got {
            assert_eq!(e["server_process"]["pid"], server.pid, "{e}");
            assert_eq!(e["client_process"]["pid"], client.pid(), "{e}");
            let resource = if e["method"] == "boom" {
                "shop"
            } else {
                "shop.items"
            };
            assert_eq!(e["resource"], resource, "{e}");
        }
        let boom = got.iter().find(|e| e["method"] == "boom").unwrap();
        assert_eq!(boom["mongodb"]["error"], "boom failed");
        let find = got.iter().find(|e| e["method"] == "find").unwrap();
        assert!(
            find["query"]
                .as_str()
                .unwrap()
                .starts_with("shop.items.find("),
            "{find}"
        );
        let decoded =
            connbeat::monitor::get(&connbeat::monitor::METRICS.inspect_mongodb_compressed)
                - compressed_before;
        if compressor.is_empty() {
            eprintln!("mongodb plain: {} operations", got.len());
        } else {
            // Every operation and its reply went compressed.
            assert!(
                decoded >= 2 * client.ops.len() as u64,
                "{compressor}: {decoded} decompressed"
            );
        }
        client.finish();
        stop.store(true, Ordering::Relaxed);
        capture.join().unwrap();
        assert!(pipeline.finish(Duration::from_secs(5)));
        drop(server);
    }
}

/// AMQP against a RabbitMQ node of its own (tests/services/start-rabbitmq.sh, a free port
/// read back from its line) driven by pika (tests/services/amqp-session.py): one
/// transaction per operation the client performed, with the method it names, the error
/// of the passive declare of a missing queue, and the processes at both ends.
#[test]
fn live_amqp_with_rabbitmq() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    if !nix_is_root() {
        eprintln!("SKIPPED live_amqp_with_rabbitmq: needs root to capture on lo");
        return;
    }
    let pika = Command::new("python3").args(["-c", "import pika"]).status();
    if !pika.is_ok_and(|s| s.success()) {
        eprintln!(
            "SKIPPED live_amqp_with_rabbitmq: python3 has no pika (scripts/install-deps.sh test)"
        );
        return;
    }
    let Some(rabbit) = Service::start("start-rabbitmq.sh", &[]) else {
        eprintln!("SKIPPED live_amqp_with_rabbitmq: rabbitmq-server unavailable");
        return;
    };
    let port: u16 = rabbit
        .line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("port="))
        .and_then(|p| p.parse().ok())
        .expect("port= in the start line");
    let yaml = format!(
        r#"
connbeat.interfaces: {{device: lo}}
connbeat.transaction_timeout: 10s
output.console: {{enabled: true}}
queue.mem: {{events: 64, flush.min_events: 1, flush.timeout: 100ms}}
connbeat.protocols:
  - {{type: amqp, ports: [{port}], send_request: true}}
"#
    );
    let Some(live) = Live::start("live_amqp_with_rabbitmq", &yaml) else {
        return;
    };
    let events = live.events.clone();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/services/amqp-session.py");
    let mut client = Command::new("python3")
        .arg(script)
        .args([&port.to_string(), "--hold"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let client_pid = client.id();
    let mut out = BufReader::new(client.stdout.take().unwrap());
    let mut ops = Vec::new();
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 && line.trim() != "holding" {
        ops.push(
            line.trim()
                .strip_prefix("op ")
                .expect("an op line")
                .to_string(),
        );
        line.clear();
    }
    assert_eq!(ops.len(), 17, "the session ran to its end: {ops:?}");
    let amqp = |events: &Mutex<Vec<Value>>| -> Vec<Value> {
        let v = events.lock().unwrap();
        v.iter().filter(|e| e["type"] == "amqp").cloned().collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while amqp(&events).len() < ops.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = amqp(&events);
    let mut methods: Vec<String> = got
        .iter()
        .map(|e| e["method"].as_str().unwrap_or("?").to_string())
        .collect();
    methods.sort();
    ops.sort();
    assert_eq!(methods, ops, "{got:#?}");
    for e in &got {
        let want = if e["method"] == "channel.close" {
            "Error"
        } else {
            "OK"
        };
        assert_eq!(e["status"], want, "{e}");
        assert_eq!(e["client_process"]["pid"], client_pid, "{e}");
        assert_eq!(e["server_process"]["binary"], "beam.smp", "{e}");
    }
    let close = got.iter().find(|e| e["method"] == "channel.close").unwrap();
    assert_eq!(close["amqp"]["reply-code"], 404);
    assert_eq!(close["amqp"]["class-id"], 50);
    assert_eq!(close["amqp"]["method-id"], 10);
    let publish = got
        .iter()
        .find(|e| e["method"] == "basic.publish" && e["request"] == "hello 1")
        .expect("the first publish, its body as request");
    assert_eq!(publish["amqp"]["routing-key"], "rk");
    assert_eq!(publish["bytes_in"], 7);

    client.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(rest.trim(), "done");
    assert!(client.wait().unwrap().success());
    live.finish();
    drop(rabbit);
}

/// Runs `python3 -c code`; panics when it fails.
fn python(code: &str) {
    let out = Command::new("python3")
        .args(["-c", code])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// SMTP against aiosmtpd (smtplib and swaks as clients: two messages on one session, a
/// refused recipient, AUTH refused then accepted, STARTTLS) and SIP calls between two sipp
/// processes over UDP and TCP (each call three exchanges): exactly the transactions the
/// clients caused, credentials nowhere in them.
#[test]
fn live_smtp_and_sip() {
    if !nix_is_root() {
        eprintln!("SKIPPED live_smtp_and_sip: needs root to capture on lo");
        return;
    }
    let smtp = Service::start("start-smtpd.sh", &[]);
    let sip_udp = Service::start("start-sipp.sh", &["u1"]);
    let sip_tcp = Service::start("start-sipp.sh", &["t1"]);
    if smtp.is_none() && sip_udp.is_none() {
        eprintln!("SKIPPED live_smtp_and_sip: neither aiosmtpd nor sipp is available");
        return;
    }
    let port_of = |s: &Option<Service>| {
        s.as_ref().map_or(0, |s| {
            s.line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("port="))
                .and_then(|p| p.parse::<u16>().ok())
                .expect("port= in the start line")
        })
    };
    let (smtp_port, udp_port, tcp_port) = (port_of(&smtp), port_of(&sip_udp), port_of(&sip_tcp));
    let mut sip_ports: Vec<u16> = [udp_port, tcp_port]
        .into_iter()
        .filter(|p| *p != 0)
        .collect();
    if sip_ports.is_empty() {
        sip_ports.push(1);
    }
    let yaml = format!(
        r#"
connbeat.interfaces: {{device: lo}}
connbeat.transaction_timeout: 5s
output.console: {{enabled: true}}
queue.mem: {{events: 64, flush.min_events: 1, flush.timeout: 100ms}}
connbeat.protocols:
  - {{type: smtp, ports: [{}]}}
  - {{type: sip, ports: {sip_ports:?}}}
"#,
        if smtp_port == 0 { 1 } else { smtp_port }
    );
    let config = from_yaml_str(&yaml, &[], &|_| None).unwrap();
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
                eprintln!("SKIPPED live_smtp_and_sip: cannot capture: {e:#}");
                return;
            }
        };

    let mut want_smtp = 0;
    if let Some(server) = &smtp {
        python(&format!(
            r#"
import smtplib
s = smtplib.SMTP("127.0.0.1", {smtp_port})
s.ehlo("client.test")
try:
    s.login("user", "wrong")
except smtplib.SMTPAuthenticationError:
    pass
s.login("user", "secret")
s.sendmail("a@x.test", ["b@x.test", "nobody@x.test"], "Subject: one\r\n\r\nhello\r\n")
s.sendmail("a@x.test", ["c@x.test", "d@x.test"], "Subject: two\r\n\r\n.dot\r\nbye\r\n")
s.quit()
"#
        ));
        let port = smtp_port.to_string();
        let server_arg = format!("127.0.0.1:{port}");
        run(
            "swaks",
            &[
                "--server",
                &server_arg,
                "--from",
                "t@x.test",
                "--to",
                "u@x.test",
                "--tls",
            ],
        );
        run(
            "swaks",
            &[
                "--server",
                &server_arg,
                "--helo",
                "swaks.test",
                "--from",
                "s@x.test",
                "--to",
                "v@x.test,w@x.test",
            ],
        );
        want_smtp = 7;
        let got = wait_n(&events, want_smtp, |e| e["type"] == "smtp");
        let all = serde_json::to_string(&got).unwrap();
        for secret in ["secret", "wrong", "c2VjcmV0", "d3Jvbmc", "AHVzZXIA"] {
            assert!(!all.contains(secret), "a credential in {all}");
        }
        let auth: Vec<&Value> = got
            .iter()
            .filter(|e| e["smtp"]["command"] == "AUTH")
            .collect();
        assert_eq!(auth.len(), 2, "{got:#?}");
        for (e, mech) in auth.iter().zip(["PLAIN", "LOGIN"]) {
            assert_eq!(e["smtp"]["auth_mechanism"], mech);
            assert_eq!(e["smtp"]["reply_code"], 535);
            assert_eq!(e["status"], "Error");
        }
        let rcpt: Vec<&Value> = got
            .iter()
            .filter(|e| e["smtp"]["command"] == "RCPT")
            .collect();
        assert_eq!(rcpt.len(), 1, "{got:#?}");
        assert_eq!(rcpt[0]["smtp"]["to"], serde_json::json!(["nobody@x.test"]));
        assert_eq!(rcpt[0]["smtp"]["reply_code"], 550);
        let msgs: Vec<&Value> = got
            .iter()
            .filter(|e| e["smtp"]["command"] == "DATA")
            .collect();
        assert_eq!(msgs.len(), 3, "{got:#?}");
        let one = msgs
            .iter()
            .find(|e| e["smtp"]["to"][0] == "b@x.test")
            .expect("message one");
        assert_eq!(one["smtp"]["to"], serde_json::json!(["b@x.test"]));
        assert_eq!(one["smtp"]["from"], "a@x.test");
        assert_eq!(one["smtp"]["size"], 23);
        assert_eq!(one["smtp"]["helo"], "client.test");
        assert_eq!(one["smtp"]["auth_mechanism"], "PLAIN");
        assert_eq!(one["smtp"]["reply_code"], 250);
        assert_eq!(one["smtp"]["reply_text"], "2.0.0 queued");
        assert_eq!(one["status"], "OK");
        assert!(
            one["smtp"]["extensions"]
                .as_array()
                .unwrap()
                .contains(&Value::from("STARTTLS"))
        );
        server_is(one, "python3");
        if one["server_process"].is_object() {
            assert_eq!(one["server_process"]["pid"], server.pid);
        }
        let two = msgs
            .iter()
            .find(|e| e["smtp"]["to"][0] == "c@x.test")
            .expect("message two");
        assert_eq!(
            two["smtp"]["to"],
            serde_json::json!(["c@x.test", "d@x.test"])
        );
        // smtplib doubles the leading dot of ".dot" on the wire.
        assert_eq!(
            two["smtp"]["size"],
            "Subject: two\r\n\r\n..dot\r\nbye\r\n".len()
        );
        let three = msgs
            .iter()
            .find(|e| e["smtp"]["from"] == "s@x.test")
            .expect("swaks message");
        assert_eq!(
            three["smtp"]["to"],
            serde_json::json!(["v@x.test", "w@x.test"])
        );
        assert_eq!(three["smtp"]["helo"], "swaks.test");
        assert!(three["smtp"]["size"].as_u64().unwrap() > 100);
        let tls: Vec<&Value> = got
            .iter()
            .filter(|e| e["smtp"]["command"] == "STARTTLS")
            .collect();
        assert_eq!(tls.len(), 1, "{got:#?}");
        assert_eq!(tls[0]["smtp"]["encrypted"], true);
        assert_eq!(tls[0]["smtp"]["reply_code"], 220);
    } else {
        eprintln!("SKIPPED smtp part: aiosmtpd unavailable");
    }

    let mut want_sip = 0;
    for (svc, transport, port) in [(&sip_udp, "u1", udp_port), (&sip_tcp, "t1", tcp_port)] {
        let Some(uas) = svc else {
            eprintln!("SKIPPED sip part over {transport}: sipp unavailable");
            continue;
        };
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/services/sipp-call.sh");
        let ok = Command::new("bash")
            .arg(&script)
            .args([&port.to_string(), transport])
            .status()
            .expect("sipp-call.sh runs")
            .success();
        assert!(ok, "the sipp call over {transport} failed");
        // Classic events pair each request with its final response: the call is three
        // exchanges, INVITE (180 on the way, then 200), ACK (no response), BYE (200).
        want_sip += 3;
        let net = if transport == "u1" { "udp" } else { "tcp" };
        let got = wait_n(&events, 3, |e| e["type"] == "sip" && e["transport"] == net);
        let mut methods: Vec<&str> = got.iter().filter_map(|e| e["method"].as_str()).collect();
        methods.sort();
        assert_eq!(methods, ["ACK", "BYE", "INVITE"], "{got:#?}");
        let call_id = &got[0]["sip"]["call_id"];
        assert!(call_id.is_string(), "{got:#?}");
        for e in &got {
            assert_eq!(&e["sip"]["call_id"], call_id, "one call");
            assert_eq!(e["status"], "OK", "{e}");
            assert_eq!(e["sip"]["cseq"]["method"], e["method"], "{e}");
            assert_eq!(e["sip"]["request"]["method"], e["method"], "{e}");
            assert_eq!(e["port"], port, "sipp's UAS serves each exchange: {e}");
            server_is(e, "sipp");
            if e["server_process"].is_object() {
                assert_eq!(e["server_process"]["pid"], uas.pid);
            }
        }
        let by = |m: &str| got.iter().find(|e| e["method"] == m).unwrap();
        let invite = by("INVITE");
        assert_eq!(invite["sip"]["provisional"], serde_json::json!([180]));
        assert_eq!(invite["sip"]["response"]["code"], 200);
        assert_eq!(invite["sip"]["response"]["status"], "OK");
        assert_eq!(invite["sip"]["response"]["cseq"]["method"], "INVITE");
        assert!(invite["responsetime"].is_u64(), "{invite}");
        assert_eq!(invite["sip"]["request"]["to"]["uri"]["port"], port);
        assert_eq!(invite["sip"]["request"]["content_type"], "application/sdp");
        assert_eq!(invite["sip"]["request"]["sdp"]["version"], "0");
        assert!(
            invite["request"]
                .as_str()
                .unwrap()
                .starts_with("INVITE sip:")
        );
        assert!(
            invite["response"]
                .as_str()
                .unwrap()
                .starts_with("SIP/2.0 200 OK")
        );
        let ack = by("ACK");
        assert!(ack["sip"].get("response").is_none(), "{ack}");
        assert!(ack.get("response").is_none(), "{ack}");
        let bye = by("BYE");
        assert_eq!(bye["sip"]["response"]["code"], 200);
        assert_eq!(
            bye["sip"]["cseq"]["code"],
            invite["sip"]["cseq"]["code"].as_u64().unwrap() + 1
        );
        assert!(bye["bytes_in"].as_u64().unwrap() > 0 && bye["bytes_out"].as_u64().unwrap() > 0);
    }

    stop.store(true, Ordering::Relaxed);
    capture.join().unwrap();
    assert!(pipeline.finish(Duration::from_secs(5)));
    let all = events.lock().unwrap();
    let count = |t: &str| all.iter().filter(|e| e["type"] == t).count();
    assert_eq!(
        count("smtp"),
        want_smtp,
        "exactly the SMTP transactions caused"
    );
    assert_eq!(count("sip"), want_sip, "exactly the SIP exchanges caused");
    drop((smtp, sip_udp, sip_tcp));
}

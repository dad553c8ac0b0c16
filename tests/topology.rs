//! `connbeat topology` on real events: three network namespaces as three hosts, each with
//! its own agent, a real scene between them (nginx proxying to a Python app that calls
//! redis and MariaDB, a short-lived curl client calling the proxy every second), the
//! agents shipping to one topic of Tansu (or, without Tansu, to their files), and the
//! graph read back as JSON and as a page opened in headless Chromium. Also the files and
//! standard input, with garbage and unknown event types among the events.

mod netns_support;
mod shipkit;

use netns_support::{Netns, link};
use serde_json::Value;
use shipkit::{Agent, TempDir, wait_for, write_config};
use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn skip(why: &str) {
    let _ = writeln!(std::io::stderr(), "skipped: {why}");
}

fn services() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/services")
}

/// `connbeat topology ARGS` with `stdin`, in a directory without a connbeat.yml;
/// (exit code, stdout, stderr).
fn topology(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let cwd = TempDir::new("topology-cwd");
    let mut c = Command::new(env!("CARGO_BIN_EXE_connbeat"))
        .current_dir(cwd.path())
        .arg("topology")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = c.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn edge_set(g: &Value) -> BTreeSet<(String, String)> {
    g["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["source"].as_str().unwrap().to_string(),
                e["target"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn edge<'a>(g: &'a Value, source: &str, target: &str) -> &'a Value {
    g["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["source"] == source && e["target"] == target)
        .unwrap_or_else(|| panic!("no edge {source} -> {target} in {g:#}"))
}

/// A classic connection event as an agent writes it.
fn conn(
    host: &str,
    ip: &str,
    dir: &str,
    action: &str,
    local: &str,
    remote: &str,
    bin: &str,
) -> String {
    let (lip, lport) = local.rsplit_once(':').unwrap();
    let (rip, rport) = remote.rsplit_once(':').unwrap();
    // What one end sent and acknowledged, the other received.
    let (acked, received) = if dir == "incoming" {
        (300, 100)
    } else {
        (100, 300)
    };
    format!(
        r#"{{"@timestamp":"2026-12-01T10:00:00.000Z","type":"connbeat","action":"{action}","direction":"{dir}","transport":"tcp","family":"ipv4","local_ip":"{lip}","local_port":{lport},"remote_ip":"{rip}","remote_port":{rport},"local_process":{{"pid":7,"binary":"{bin}"}},"attribution":"procfs","tcp":{{"state":"ESTABLISHED","rtt_us":50,"total_retrans":0,"bytes_acked":{acked},"bytes_received":{received}}},"cookie":"1","netns":1,"beat":{{"name":"{host}","hostname":"{host}","version":"0.1.0","local_ips":["{ip}"]}}}}"#
    )
}

#[test]
fn files_and_stdin_skip_garbage_and_unknown_types_and_join_ends_without_community_id() {
    let dir = TempDir::new("topology-files");
    let a = "10.1.0.1";
    let b = "10.1.0.2";
    let rotated = [
        conn(
            "a",
            a,
            "outgoing",
            "open",
            "10.1.0.1:40000",
            "10.1.0.2:5432",
            "psql",
        ),
        "this is not json".to_string(),
        r#"{"@timestamp":"2026-12-01T10:00:00.000Z","type":"weather","beat":{"name":"a"}}"#
            .to_string(),
        conn(
            "b",
            b,
            "incoming",
            "open",
            "10.1.0.2:5432",
            "10.1.0.1:40000",
            "postgres",
        ),
    ]
    .join("\n");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(rotated.as_bytes()).unwrap();
    std::fs::write(dir.path().join("connbeat.1.gz"), gz.finish().unwrap()).unwrap();
    let current = [
        conn(
            "a",
            a,
            "outgoing",
            "closed",
            "10.1.0.1:40000",
            "10.1.0.2:5432",
            "psql",
        ),
        "{\"truncated\": ".to_string(),
        conn(
            "b",
            b,
            "incoming",
            "closed",
            "10.1.0.2:5432",
            "10.1.0.1:40000",
            "postgres",
        ),
        r#"{"@timestamp":"2026-12-01T10:00:00.000Z","type":"flow","beat":{"name":"a"}}"#
            .to_string(),
    ]
    .join("\n");
    std::fs::write(dir.path().join("connbeat"), current + "\n").unwrap();
    let file = dir.path().join("connbeat");
    let (code, out, err) = topology(&["--format", "json", file.to_str().unwrap()], b"");
    assert_eq!(code, 0, "{err}");
    let g: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        edge_set(&g),
        BTreeSet::from([(
            "client:a/psql".to_string(),
            "service:b/postgres:5432".to_string()
        )])
    );
    let e = edge(&g, "client:a/psql", "service:b/postgres:5432");
    assert_eq!(
        (e["connections"].as_u64(), e["closed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        (e["bytes_out"].as_u64(), e["bytes_in"].as_u64()),
        (Some(100), Some(300))
    );
    let ev = &g["events"];
    assert_eq!(ev["read"], 8);
    assert_eq!(ev["used"], 4);
    assert_eq!(ev["skipped"], 4);
    assert_eq!(ev["malformed"], 2);
    assert_eq!(ev["unknown_type"], 2);
    assert!(err.contains("4 of 8 events skipped"), "{err}");

    // The same events on standard input, as dot.
    let stdin_text = std::fs::read_to_string(&file).unwrap();
    let (code, out, err) = topology(&["--format", "dot", "-"], stdin_text.as_bytes());
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(r#""client:a/psql" -> "service:b/postgres:5432" [label="1 conn"];"#),
        "{out}"
    );

    // Bounds from -E, without a config file: the edge is left out, and said so.
    let (code, out, err) = topology(&["-E", "topology.max_nodes=1", file.to_str().unwrap()], b"");
    assert_eq!(code, 0, "{err}");
    let g: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(g["edges"].as_array().unwrap().len(), 0);
    assert_eq!(g["limits"]["connections_beyond_max_nodes"], 1);
    assert!(
        err.contains("1 connections left out beyond topology.max_nodes (1)"),
        "{err}"
    );
    let (code, _, err) = topology(&["-E", "topology.max_nodes=0", file.to_str().unwrap()], b"");
    assert_eq!(code, 1);
    assert!(err.contains("topology.max_nodes"), "{err}");

    // A long read says how far it is on stderr.
    let many = format!(
        "{}\n",
        conn(
            "a",
            a,
            "outgoing",
            "open",
            "10.1.0.1:40000",
            "10.1.0.2:5432",
            "psql"
        )
    )
    .repeat(20_000);
    let (code, _, err) = topology(
        &["-E", "topology.progress_interval=1ms", "-"],
        many.as_bytes(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("events read (") && err.contains("used, 0 skipped; graph: 2 nodes, 1 edges"),
        "{err}"
    );

    // --kafka with a config file that names no topic: a configuration error.
    let cfg = write_config(dir.path(), "output.console: {}\n");
    let (code, _, err) = topology(&["-c", cfg.to_str().unwrap(), "--kafka"], b"");
    assert_eq!(code, 1);
    assert!(err.contains("set output.kafka"), "{err}");

    // No input named: a usage error.
    let (code, _, err) = topology(&[], b"");
    assert_eq!(code, 1);
    assert!(err.contains("--kafka, FILE..., or -"), "{err}");
}

/// The address a `--serve 127.0.0.1:0` server bound, from its startup line (a port chosen
/// by the kernel cannot be taken by another test in between).
fn serving_at(server: &mut Agent) -> std::net::SocketAddr {
    const LINE: &str = "serving the live graph on http://";
    wait_for(Duration::from_secs(60), "the serving line", || {
        if let Ok(Some(st)) = server.child.try_wait() {
            panic!("topology --serve exited ({st}): {}", server.stderr());
        }
        let err = server.stderr();
        let at = err.find(LINE)? + LINE.len();
        let end = at + err[at..].find('/')?;
        err[at..end].parse().ok()
    })
}

#[test]
fn serve_answers_the_page_and_the_graph_and_stops_on_sigterm() {
    let dir = TempDir::new("topology-serve");
    let file = dir.path().join("events");
    let lines = [
        conn(
            "a",
            "10.1.0.1",
            "outgoing",
            "open",
            "10.1.0.1:40000",
            "10.1.0.2:5432",
            "psql",
        ),
        conn(
            "b",
            "10.1.0.2",
            "incoming",
            "open",
            "10.1.0.2:5432",
            "10.1.0.1:40000",
            "postgres",
        ),
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();
    let stderr_path = dir.path().join("stderr");
    let child = Command::new(env!("CARGO_BIN_EXE_connbeat"))
        .args(["topology", "--serve", "127.0.0.1:0"])
        // The window of a live graph ends now: these events are older than its 15 minutes.
        .args(["--since", "2026-12-01T00:00:00Z"])
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let mut server = Agent { child, stderr_path };
    let addr = serving_at(&mut server);
    let graph = wait_for(Duration::from_secs(20), "GET /graph", || {
        shipkit::http_get(addr, "/graph").filter(|(code, _)| *code == 200)
    });
    let g: Value = serde_json::from_str(&graph.1).unwrap();
    assert_eq!(
        edge_set(&g),
        BTreeSet::from([(
            "client:a/psql".to_string(),
            "service:b/postgres:5432".to_string()
        )])
    );
    assert_eq!(g["window"]["start"], "2026-12-01T00:00:00.000Z");
    let (code, page) = shipkit::http_get(addr, "/").unwrap();
    assert_eq!(code, 200);
    assert!(page.contains("<title>connbeat topology</title>"));
    assert!(page.contains("\"source\": \"client:a/psql\""), "{page}");
    assert!(!page.contains("__GRAPH_JSON__"));
    assert_eq!(shipkit::http_get(addr, "/nothing").unwrap().0, 404);
    assert_eq!(
        server.stop(Duration::from_secs(10)),
        Some(0),
        "{}",
        server.stderr()
    );
}

/// Processes this test started: servers started by their scripts (by pid) and children
/// (relays, the app, the cron loop, each in its own process group), stopped with SIGTERM on
/// drop so that servers take their workers with them.
#[derive(Default)]
struct Group {
    pids: Vec<i32>,
    children: Vec<Child>,
    /// The servers' directories, removed once they stopped.
    dirs: Vec<PathBuf>,
}

impl Group {
    /// Keeps a child; returns its pid (also its process group's id).
    fn adopt(&mut self, c: Child) -> i32 {
        let pid = c.id() as i32;
        self.children.push(c);
        pid
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        for pid in &self.pids {
            // SAFETY: kill(2) on pids this test started.
            unsafe { libc::kill(*pid, libc::SIGTERM) };
        }
        for c in &mut self.children {
            // SAFETY: kill(2) on the process group of a child this test started.
            unsafe { libc::kill(-(c.id() as i32), libc::SIGTERM) };
            let _ = c.wait();
        }
        for pid in &self.pids {
            let gone = || !Path::new(&format!("/proc/{pid}")).exists();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !gone() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Runs a start-*.sh script inside `ns`; the server's pid and directory go to `group`.
fn start_service(group: &mut Group, ns: &Netns, script: &str, args: &[&str], env: &[(&str, &str)]) {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "bash"])
        .arg(services().join(script))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{script}: {text}");
    let field = |k: &str| text.split_whitespace().find_map(|w| w.strip_prefix(k));
    group.pids.push(
        field("pid=")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{script}: no pid in {text}")),
    );
    group.dirs.extend(field("dir=").map(PathBuf::from));
}

fn spawn_in(ns: &Netns, argv: &[&str]) -> Child {
    Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap()
}

/// How the agents ship.
enum Ship<'a> {
    /// To this broker (through a relay into each namespace).
    Kafka(&'a shipkit::kafka::Broker),
    Files,
}

struct Scene {
    graph: Value,
    curl_runs: u64,
    dir: TempDir,
    page: PathBuf,
}

fn run_scene(tag: &str, ship: Ship) -> Scene {
    let dir = TempDir::new(tag);
    let id = std::process::id() % 10000;
    let web = Netns::new(&format!("cbtw{id}"));
    let app = Netns::new(&format!("cbta{id}"));
    let db = Netns::new(&format!("cbtd{id}"));
    link(
        &web,
        &format!("tw{id}a"),
        "198.18.1.1",
        &app,
        &format!("ta{id}w"),
        "198.18.1.2",
    );
    link(
        &app,
        &format!("ta{id}d"),
        "198.18.2.2",
        &db,
        &format!("td{id}a"),
        "198.18.2.3",
    );
    let mut procs = Group::default();
    let any = [("BIND", "0.0.0.0")];
    start_service(&mut procs, &db, "start-redis.sh", &["6379"], &any);
    start_service(&mut procs, &db, "start-mariadb.sh", &["3306"], &any);
    procs.adopt(spawn_in(
        &app,
        &[
            "/usr/bin/python3",
            services().join("scene-app.py").to_str().unwrap(),
            "8000",
            "198.18.2.3:6379",
            "198.18.2.3:3306",
        ],
    ));
    start_service(
        &mut procs,
        &web,
        "start-nginx.sh",
        &["8080", "8443"],
        &[("BIND", "0.0.0.0"), ("PROXY_TO", "198.18.1.2:8000/")],
    );

    // The agents: one per namespace, each under its own name.
    let mut agents = Vec::new();
    for (ns, name) in [(&web, "web"), (&app, "app"), (&db, "db")] {
        let adir = dir.path().join(name);
        std::fs::create_dir_all(&adir).unwrap();
        let output = match &ship {
            Ship::Kafka(b) => {
                // The broker listens on the host's loopback; a relay through a unix socket
                // gives each namespace the same address.
                let sock = adir.join("kafka.sock");
                procs.adopt(
                    Command::new("socat")
                        .arg(format!("UNIX-LISTEN:{},fork", sock.display()))
                        .arg(format!("TCP:127.0.0.1:{}", b.port))
                        .process_group(0)
                        .spawn()
                        .unwrap(),
                );
                wait_for(Duration::from_secs(5), "relay socket", || {
                    sock.exists().then_some(())
                });
                procs.adopt(spawn_in(
                    ns,
                    &[
                        "socat",
                        &format!("TCP-LISTEN:{},bind=127.0.0.1,fork,reuseaddr", b.port),
                        &format!("UNIX-CONNECT:{}", sock.display()),
                    ],
                ));
                format!(
                    "output.kafka:\n  hosts: [\"{}\"]\n  topic: scene\n",
                    b.bootstrap()
                )
            }
            Ship::Files => format!(
                "output.file:\n  path: {}\n  filename: connbeat\n",
                adir.display()
            ),
        };
        // Loopback traffic (the agent's own shipping, the relay) is left out.
        let cfg = write_config(
            &adir,
            &format!(
                "name: {name}\nconnbeat.poll_interval: 200ms\nconnbeat.local_connections: false\n\
                 connbeat.process_rescan_interval: 200ms\n\
                 connbeat.interfaces.device: any\n\
                 connbeat.protocols: [{{type: http, ports: [8080, 8000]}}, {{type: redis, ports: [6379]}}]\n\
                 queue.mem: {{events: 4096, flush.min_events: 1, flush.timeout: 100ms}}\n{output}"
            ),
        );
        let stderr_path = adir.join("stderr");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                env!("CARGO_BIN_EXE_connbeat"),
                "-c",
            ])
            .arg(&cfg)
            .arg("-e")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        agents.push(Agent { child, stderr_path });
    }
    for a in &agents {
        wait_for(Duration::from_secs(20), "the agents to start", || {
            a.stderr().contains("started with").then_some(())
        });
    }

    // The cron-like client: curl through the proxy every second, counting its successes.
    let runs = dir.path().join("curl-runs");
    let cron = procs.adopt(spawn_in(
        &app,
        &[
            "bash",
            "-c",
            &format!(
                "while true; do curl -sf -o /dev/null http://198.18.1.1:8080/app/ && echo ok >> {}; sleep 1; done",
                runs.display()
            ),
        ],
    ));
    let count = || {
        std::fs::read_to_string(&runs)
            .map(|s| s.lines().count() as u64)
            .unwrap_or(0)
    };
    wait_for(
        Duration::from_secs(30),
        "five calls through the proxy",
        || (count() >= 5).then_some(()),
    );
    // Stop the cron between two calls: the loop's group, then its last curl is done.
    // SAFETY: kill(2) on the process group this test started.
    unsafe { libc::kill(-cron, libc::SIGKILL) };
    let curl_runs = count();
    // Let the agents see the last closes, then stop them (they flush on SIGTERM).
    std::thread::sleep(Duration::from_millis(1500));
    for a in &mut agents {
        assert_eq!(a.stop(Duration::from_secs(20)), Some(0), "{}", a.stderr());
    }
    drop(procs);

    let mut args: Vec<String> = vec!["--format".into(), "json".into()];
    let config = dir.path().join("web/connbeat.yml");
    match ship {
        Ship::Kafka(_) => {
            args = [
                vec![
                    "-c".into(),
                    config.to_str().unwrap().into(),
                    "--kafka".into(),
                ],
                args,
            ]
            .concat()
        }
        Ship::Files => {
            for n in ["web", "app", "db"] {
                args.push(dir.path().join(n).join("connbeat").to_str().unwrap().into());
            }
        }
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = topology(&argv, b"");
    if let Some(keep) = std::env::var_os("TOPOLOGY_KEEP") {
        let _ = Command::new("cp")
            .arg("-r")
            .arg(dir.path())
            .arg(keep)
            .status();
    }
    assert_eq!(code, 0, "{err}");
    let graph: Value = serde_json::from_str(&out).unwrap();
    let page = dir.path().join("topology.html");
    let html_args: Vec<&str> = argv
        .iter()
        .map(|a| if *a == "json" { "html" } else { a })
        .chain(["--output", page.to_str().unwrap()])
        .collect();
    let (code, _, err) = topology(&html_args, b"");
    assert_eq!(code, 0, "{err}");
    Scene {
        graph,
        curl_runs,
        dir,
        page,
    }
}

fn check_scene(s: &Scene) {
    let g = &s.graph;
    let expected = BTreeSet::from([
        (
            "client:app/curl".to_string(),
            "service:web/nginx:8080".to_string(),
        ),
        (
            "client:web/nginx".to_string(),
            "service:app/python3:8000".to_string(),
        ),
        (
            "client:app/python3".to_string(),
            "service:db/redis-server:6379".to_string(),
        ),
        (
            "client:app/python3".to_string(),
            "service:db/mariadbd:3306".to_string(),
        ),
    ]);
    assert_eq!(edge_set(g), expected, "{g:#}");
    // Every call is one connection, though both its agents reported it.
    let proxy = edge(g, "client:app/curl", "service:web/nginx:8080");
    assert_eq!(
        proxy["connections"].as_u64(),
        Some(s.curl_runs),
        "{proxy:#}"
    );
    assert_eq!(proxy["closed"].as_u64(), Some(s.curl_runs), "{proxy:#}");
    assert!(proxy["bytes_out"].as_u64().unwrap() > 0 && proxy["bytes_in"].as_u64().unwrap() > 0);
    let upstream = edge(g, "client:web/nginx", "service:app/python3:8000");
    assert_eq!(
        upstream["connections"].as_u64(),
        Some(s.curl_runs),
        "{upstream:#}"
    );
    // Each call is one HTTP request on both hops, though two agents captured each.
    for e in [proxy, upstream] {
        let http = &e["protocols"]["http"];
        assert_eq!(http["requests"].as_u64(), Some(s.curl_runs), "{e:#}");
        assert_eq!(http["errors"], 0, "{e:#}");
        // The app holds every request 600 ms.
        assert!(http["p50_ms"].as_f64().unwrap() >= 550.0, "{e:#}");
    }
    let redis = edge(g, "client:app/python3", "service:db/redis-server:6379");
    assert_eq!(
        redis["protocols"]["redis"]["requests"].as_u64(),
        Some(s.curl_runs),
        "{redis:#}"
    );
    for n in g["nodes"].as_array().unwrap() {
        assert_ne!(n["kind"], "external", "{n:#}");
    }
    assert_eq!(g["events"]["malformed"], 0);
}

/// Opens the page (with `#fragment`) in headless Chromium; returns the document after its
/// layout ran, and takes a screenshot when asked.
fn chromium_dom(page: &Path, fragment: &str, screenshot: Option<&Path>) -> Option<String> {
    let bin = ["chromium", "chromium-browser"].into_iter().find(|b| {
        Command::new("which")
            .arg(b)
            .output()
            .is_ok_and(|o| o.status.success())
    })?;
    let url = format!("file://{}#{fragment}", page.display());
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--virtual-time-budget=5000",
        "--window-size=1400,900",
    ];
    let dom = Command::new(bin)
        .args(common)
        .arg("--dump-dom")
        .arg(&url)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    if let Some(path) = screenshot {
        let shot = Command::new(bin)
            .args(common)
            .arg(format!("--screenshot={}", path.display()))
            .arg(&url)
            .stderr(Stdio::null())
            .output()
            .unwrap();
        assert!(shot.status.success());
    }
    Some(String::from_utf8_lossy(&dom.stdout).into_owned())
}

fn check_page(s: &Scene) {
    let shot = s.dir.path().join("topology.png");
    // Opened with a node selected, as a click on it does.
    let Some(dom) = chromium_dom(&s.page, "node=service:web/nginx:8080", Some(&shot)) else {
        skip("no chromium (scripts/install-deps.sh test installs it)");
        return;
    };
    assert!(
        dom.contains("data-layout=\"done\""),
        "the layout did not run:\n{dom}"
    );
    // The selected node's edge, with its figures, in the side panel.
    assert!(dom.contains("<h3>service: nginx @web:8080</h3>"), "{dom}");
    assert!(dom.contains("<td>connections</td>"), "{dom}");
    for n in s.graph["nodes"].as_array().unwrap() {
        let id = n["id"].as_str().unwrap();
        assert!(
            dom.contains(&format!("data-id=\"{id}\"")),
            "node {id} missing from the page"
        );
    }
    let edges = s.graph["edges"].as_array().unwrap();
    assert_eq!(dom.matches("<line class=\"edge").count(), edges.len());
    for e in edges {
        let pair = format!(
            "data-source=\"{}\" data-target=\"{}\"",
            e["source"].as_str().unwrap(),
            e["target"].as_str().unwrap()
        );
        assert!(dom.contains(&pair), "edge {pair} missing from the page");
    }
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    // Filtered by host: only db's edges (redis and MariaDB) stay visible.
    let dom = chromium_dom(&s.page, "host=db", None).unwrap();
    assert_eq!(dom.matches("<line class=\"edge\"").count(), 2, "{dom}");
    assert_eq!(
        dom.matches("<line class=\"edge hidden\"").count(),
        2,
        "{dom}"
    );
    // By protocol: the two HTTP hops.
    let dom = chromium_dom(&s.page, "proto=http", None).unwrap();
    let visible: Vec<&str> = dom
        .split("<line class=\"edge\" ")
        .skip(1)
        .map(|l| l.split(" x1=").next().unwrap())
        .collect();
    assert_eq!(
        visible,
        [
            "data-source=\"client:app/curl\" data-target=\"service:web/nginx:8080\"",
            "data-source=\"client:web/nginx\" data-target=\"service:app/python3:8000\""
        ],
        "{dom}"
    );
    // Kept for the README's picture.
    if let Some(to) = std::env::var_os("TOPOLOGY_SCREENSHOT") {
        std::fs::copy(&shot, to).unwrap();
    }
}

fn scene_skip() -> bool {
    if let Err(e) = netns_support::available() {
        skip(&format!("network namespaces: {e}"));
        return true;
    }
    for b in ["nginx", "redis-server", "mariadbd", "curl", "socat"] {
        if !Command::new("which")
            .arg(b)
            .output()
            .is_ok_and(|o| o.status.success())
        {
            skip(&format!("no {b} (scripts/install-deps.sh test)"));
            return true;
        }
    }
    false
}

static SCENES: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn three_hosts_through_their_files() {
    if scene_skip() {
        return;
    }
    let _g = SCENES.lock().unwrap_or_else(|p| p.into_inner());
    let s = run_scene("topology-scene-files", Ship::Files);
    check_scene(&s);
    check_page(&s);
}

#[cfg(feature = "kafka")]
#[test]
fn three_hosts_through_one_kafka_topic() {
    if scene_skip() {
        return;
    }
    require_tansu!();
    let _g = SCENES.lock().unwrap_or_else(|p| p.into_inner());
    let dir = TempDir::new("topology-broker");
    let broker = shipkit::kafka::Broker::start(dir.path());
    broker.create_topic("scene", 3);
    let s = run_scene("topology-scene-kafka", Ship::Kafka(&broker));
    check_scene(&s);
    check_page(&s);
    // A one-shot run commits nothing: a second run reads the same events.
    let config = s.dir.path().join("web/connbeat.yml");
    let (code, out, err) = topology(&["-c", config.to_str().unwrap(), "--kafka"], b"");
    assert_eq!(code, 0, "{err}");
    let again: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(again["events"], s.graph["events"]);
    assert_eq!(edge_set(&again), edge_set(&s.graph));

    // Served: it keeps consuming (its own group, which it commits) and answers the graph.
    let mut server = serve_group(s.dir.path(), "serve", &config, "live");
    let addr = serving_at(&mut server);
    let live = wait_for(
        Duration::from_secs(60),
        "the live graph to hold the scene",
        || {
            let (_, body) = shipkit::http_get(addr, "/graph").filter(|(c, _)| *c == 200)?;
            let g: Value = serde_json::from_str(&body).ok()?;
            (edge_set(&g) == edge_set(&s.graph) && g["events"]["read"] == s.graph["events"]["read"])
                .then_some(g)
        },
    );
    assert_eq!(live["events"]["read"], s.graph["events"]["read"]);
    assert_eq!(
        server.stop(Duration::from_secs(10)),
        Some(0),
        "{}",
        server.stderr()
    );
    // What the served instance read, its group committed when it stopped: a run of that
    // group starts after it and finds nothing new.
    let (code, out, err) = topology(
        &[
            "-c",
            config.to_str().unwrap(),
            "-E",
            "topology.group_id=live",
            "--kafka",
        ],
        b"",
    );
    assert_eq!(code, 0, "{err}");
    let after: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(after["events"]["read"], 0, "{err}");
}

/// `connbeat topology --kafka --serve` in group `group`, on the topic of `config`.
fn serve_group(dir: &Path, name: &str, config: &Path, group: &str) -> Agent {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let group = format!("topology.group_id={group}");
    Agent::start(
        &dir,
        config,
        &[
            "-E",
            &group,
            "topology",
            "--kafka",
            "--serve",
            "127.0.0.1:0",
        ],
    )
}

/// Writes one connection's two ends (opened), from client host `host`, to `partition`.
fn produce(p: &rdkafka::producer::BaseProducer, topic: &str, partition: i32, host: &str, n: u32) {
    use rdkafka::producer::{BaseRecord, Producer};
    let ip = format!("10.9.{partition}.{}", n % 200 + 1);
    let client = format!("{ip}:{}", 30000 + n);
    for e in [
        conn(
            host,
            &ip,
            "outgoing",
            "open",
            &client,
            "10.9.9.9:80",
            "curl",
        ),
        conn(
            "web",
            "10.9.9.9",
            "incoming",
            "open",
            "10.9.9.9:80",
            &client,
            "nginx",
        ),
    ] {
        // Now: a served graph's window ends at the present.
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let e = e.replace("2026-12-01T10:00:00.000Z", &now);
        p.send(
            BaseRecord::<(), _>::to(topic)
                .partition(partition)
                .payload(&e),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    }
    p.flush(Duration::from_secs(10)).unwrap();
}

fn clients(g: &Value) -> BTreeSet<String> {
    g["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == "client")
        .map(|n| n["host"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn two_instances_of_a_group_split_the_partitions_and_one_reads_them_all_again_alone() {
    require_tansu!();
    let dir = TempDir::new("topology-group");
    let broker = shipkit::kafka::Broker::start(dir.path());
    broker.create_topic("group", 2);
    let config = write_config(
        dir.path(),
        &format!(
            "topology.kafka: {{hosts: [\"{}\"], topic: group}}\n",
            broker.bootstrap()
        ),
    );
    let producer: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    let graph = |server: &mut Agent| -> Value {
        let addr = serving_at(server);
        let (_, body) = shipkit::http_get(addr, "/graph").expect("GET /graph");
        serde_json::from_str(&body).unwrap()
    };
    let mut a = serve_group(dir.path(), "a", &config, "g");
    produce(&producer, "group", 0, "first-p0", 1);
    produce(&producer, "group", 1, "first-p1", 2);
    wait_for(
        Duration::from_secs(60),
        "instance a to read both partitions",
        || {
            (clients(&graph(&mut a)) == BTreeSet::from(["first-p0".into(), "first-p1".into()]))
                .then_some(())
        },
    );
    // A second instance of the group: the partitions are dealt again. Events keep coming
    // on both until it has read some (it then holds a partition), then one marker each.
    let mut b = serve_group(dir.path(), "b", &config, "g");
    let mut n = 10;
    wait_for(
        Duration::from_secs(90),
        "instance b to be given a partition",
        || {
            n += 1;
            if n % 10 == 0 {
                produce(&producer, "group", 0, "joining", n);
                produce(&producer, "group", 1, "joining", n + 1);
            }
            (!clients(&graph(&mut b)).is_empty()).then_some(())
        },
    );
    produce(&producer, "group", 0, "split-p0", 3);
    produce(&producer, "group", 1, "split-p1", 4);
    let markers = ["split-p0".to_string(), "split-p1".to_string()];
    let (ga, gb) = wait_for(Duration::from_secs(60), "both markers to be read", || {
        let (ga, gb) = (clients(&graph(&mut a)), clients(&graph(&mut b)));
        markers
            .iter()
            .all(|m| ga.contains(m) || gb.contains(m))
            .then_some((ga, gb))
    });
    for m in &markers {
        assert!(
            ga.contains(m) != gb.contains(m),
            "{m} read by exactly one instance: a {ga:?}, b {gb:?}"
        );
    }
    assert!(
        markers.iter().any(|m| ga.contains(m)) && markers.iter().any(|m| gb.contains(m)),
        "one partition each: a {ga:?}, b {gb:?}"
    );
    // The second one leaves: the first gets both partitions back (revoked and assigned
    // again) and reads what comes next on each.
    assert_eq!(b.stop(Duration::from_secs(10)), Some(0), "{}", b.stderr());
    produce(&producer, "group", 0, "third-p0", 5);
    produce(&producer, "group", 1, "third-p1", 6);
    wait_for(
        Duration::from_secs(90),
        "instance a to read both partitions again",
        || {
            let c = clients(&graph(&mut a));
            (c.contains("third-p0") && c.contains("third-p1")).then_some(())
        },
    );
    assert_eq!(a.stop(Duration::from_secs(10)), Some(0), "{}", a.stderr());
}

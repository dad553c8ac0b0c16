//! `output.redis.save_topology`: two agents in two network namespaces, both shipping to one
//! redis-server (in the second namespace), each writing its name and addresses into the
//! topology database and reading the other's. An HTTP transaction from the first host to
//! a server on the second then names both agents: `server` and `client_server` in the
//! classic shape (agent `alpha`), `connbeat.server_agent` and `connbeat.client_agent` in
//! ECS (agent `beta`).

mod netns_support;
mod shipkit;

use netns_support::{Netns, link};
use serde_json::Value;
use shipkit::{Agent, TempDir, wait_for, write_config};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn skip(why: &str) {
    let _ = writeln!(std::io::stderr(), "skipped: {why}");
}

/// A process started in a namespace, in its own process group; the group is killed on
/// drop.
struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group of a child this test started.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

fn spawn_in(ns: &Netns, argv: &[&str]) -> Spawned {
    Spawned(
        Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap(),
    )
}

/// `redis-cli` inside `ns`, its output lines.
fn redis_cli(ns: &Netns, args: &[&str]) -> Vec<String> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "redis-cli",
            "--raw",
            "-p",
            "6379",
        ])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The HTTP transactions shipped under `key`.
fn http_events(ns: &Netns, key: &str) -> Vec<Value> {
    redis_cli(ns, &["LRANGE", key, "0", "-1"])
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "http")
        .collect()
}

fn start_agent(dir: &Path, ns: &Netns, name: &str, redis: &str, extra: &str) -> Agent {
    let adir = dir.join(name);
    std::fs::create_dir_all(&adir).unwrap();
    let cfg = write_config(
        &adir,
        &format!(
            "name: {name}\nconnbeat.poll_interval: 200ms\nconnbeat.local_connections: false\n\
             connbeat.interfaces.device: any\n\
             connbeat.protocols: [{{type: http, ports: [8000]}}]\n{extra}\
             queue.mem: {{events: 4096, flush.min_events: 1, flush.timeout: 100ms}}\n\
             output.redis:\n  hosts: [\"{redis}\"]\n  key: {name}\n  save_topology: true\n  expiration: 3s\n"
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
    Agent { child, stderr_path }
}

#[test]
fn two_agents_name_each_other_in_their_transactions() {
    if let Err(why) = netns_support::available() {
        return skip(&format!("network namespaces: {why}"));
    }
    if !shipkit::redis::available() {
        return skip("redis-server is not installed (scripts/install-deps.sh test)");
    }
    let dir = TempDir::new("redis-topo");
    let id = std::process::id() % 10000;
    let a = Netns::new(&format!("cbra{id}"));
    let b = Netns::new(&format!("cbrb{id}"));
    link(
        &a,
        &format!("ra{id}"),
        "198.18.7.1",
        &b,
        &format!("rb{id}"),
        "198.18.7.2",
    );
    let redis_dir = dir.path().join("redis");
    let out = Command::new("ip")
        .args(["netns", "exec", &b.name, "bash"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/services/start-redis.sh"))
        .arg("6379")
        .env("BIND", "0.0.0.0")
        .env("REDIS_DIR", &redis_dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "start-redis.sh: {text}");
    let redis_pid: i32 = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .unwrap();
    struct Kill(i32);
    impl Drop for Kill {
        fn drop(&mut self) {
            // SAFETY: kill(2) on the redis-server this test started.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
    let _redis = Kill(redis_pid);
    let _web = spawn_in(
        &b,
        &[
            "/usr/bin/python3",
            "-m",
            "http.server",
            "--bind",
            "0.0.0.0",
            "8000",
        ],
    );
    let mut agents = [
        start_agent(dir.path(), &a, "alpha", "198.18.7.2:6379", ""),
        start_agent(
            dir.path(),
            &b,
            "beta",
            "198.18.7.2:6379",
            "connbeat.event_format: ecs\n",
        ),
    ];
    // Both entries in the topology database (db 1), with their addresses.
    wait_for(
        Duration::from_secs(60),
        "both agents' topology entries",
        || {
            let alpha = redis_cli(&b, &["-n", "1", "HGET", "alpha", "ipaddrs"]);
            let beta = redis_cli(&b, &["-n", "1", "HGET", "beta", "ipaddrs"]);
            (alpha.first().is_some_and(|x| x.contains("198.18.7.1"))
                && beta.first().is_some_and(|x| x.contains("198.18.7.2")))
            .then_some(())
        },
    );
    let ttl: i64 = redis_cli(&b, &["-n", "1", "TTL", "alpha"])[0]
        .parse()
        .unwrap();
    assert!((1..=3).contains(&ttl), "expiration 3s, TTL {ttl}");
    // Requests until each agent has shipped a transaction naming both ends (each agent
    // reads the other's entry at its next refresh, within a second).
    let _client = spawn_in(
        &a,
        &[
            "bash",
            "-c",
            "while true; do curl -sf -o /dev/null http://198.18.7.2:8000/; sleep 0.3; done",
        ],
    );
    let classic = wait_for(
        Duration::from_secs(60),
        "a classic transaction naming both agents",
        || {
            http_events(&b, "alpha")
                .into_iter()
                .find(|e| e["server"] == "beta" && e["client_server"] == "alpha")
        },
    );
    assert_eq!(classic["client_ip"], "198.18.7.1");
    assert_eq!(classic["ip"], "198.18.7.2");
    let ecs = wait_for(
        Duration::from_secs(60),
        "an ECS transaction naming both agents",
        || {
            http_events(&b, "beta").into_iter().find(|e| {
                e["connbeat"]["server_agent"] == "beta" && e["connbeat"]["client_agent"] == "alpha"
            })
        },
    );
    assert_eq!(ecs["client"]["ip"], "198.18.7.1");
    for ag in &mut agents {
        assert_eq!(ag.stop(Duration::from_secs(20)), Some(0), "{}", ag.stderr());
    }
}

//! What works without full root, and what a user is told when a capability is missing.
//! Each test runs the agent under `setpriv` with capabilities removed from its bounding
//! set (so the exec'd agent does not get them) and checks the message and the behaviour.

mod common;
mod netns_support;

use common::*;
use std::process::Command;
use std::time::Duration;

const SETPRIV: &str = "/usr/bin/setpriv";

fn setpriv_or_skip(test: &str) -> bool {
    if !root_or_skip(test) {
        return false;
    }
    if !std::path::Path::new(SETPRIV).exists() {
        eprintln!("skipped: {test} needs setpriv (util-linux)");
        return false;
    }
    true
}

/// Runs `setpriv --bounding-set=DROP connbeat -c CFG ARGS` to completion (`--once`).
fn once_without(drop: &str, cfg: &std::path::Path, args: &[&str]) -> (String, String) {
    let out = Command::new(SETPRIV)
        .arg(format!("--bounding-set={drop}"))
        .arg(CONNBEAT)
        .arg("-c")
        .arg(cfg)
        .args(args)
        .output()
        .expect("run setpriv");
    assert!(
        out.status.success(),
        "agent failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn without_net_admin_closes_come_from_polls_and_the_startup_line_says_why() {
    if !setpriv_or_skip("capabilities") {
        return;
    }
    let dir = TempDir::new("cap-netadmin");
    let cfg = console_config(&dir, "connbeat.poll_interval: 500ms");
    let mut agent = Proc::spawn(
        std::path::Path::new(SETPRIV),
        &[
            "--bounding-set=-net_admin",
            common::CONNBEAT,
            "-c",
            &cfg.display().to_string(),
        ],
    );
    let started = poll_until(Duration::from_secs(30), || {
        agent
            .stderr_lines()
            .into_iter()
            .find(|l| l.contains("started with"))
    })
    .expect("startup line");
    assert!(
        started.contains("close events: poll differences only (CAP_NET_ADMIN is missing"),
        "{started}"
    );
    let warning = agent
        .stderr_lines()
        .into_iter()
        .find(|l| l.contains("WARN") && l.contains("close notifications unavailable"))
        .expect("a warning about close notifications");
    assert!(warning.contains("comparing polls"), "{warning}");
    agent.signal(libc::SIGTERM);
    agent.finish(Duration::from_secs(20));
}

/// Starts the continuous agent under `setpriv --bounding-set=DROP` and returns it with its
/// startup line.
fn start_without(drop: &str, cfg: &std::path::Path, args: &[&str]) -> (Proc, String) {
    let bounding = format!("--bounding-set={drop}");
    let cfg = cfg.display().to_string();
    let mut argv = vec![bounding.as_str(), common::CONNBEAT, "-c", cfg.as_str()];
    argv.extend_from_slice(args);
    let agent = Proc::spawn(std::path::Path::new(SETPRIV), &argv);
    let started = poll_until(Duration::from_secs(30), || {
        agent
            .stderr_lines()
            .into_iter()
            .find(|l| l.contains("started with"))
    })
    .unwrap_or_else(|| panic!("no startup line: {:?}", agent.stderr_lines()));
    (agent, started)
}

#[test]
fn the_connect_recorder_needs_bpf_and_the_startup_line_says_which_path() {
    if !setpriv_or_skip("capabilities") {
        return;
    }
    let dir = TempDir::new("cap-connect");
    let cfg = console_config(&dir, "connbeat.poll_interval: 30s");
    let (mut agent, started) = start_without("-net_raw", &cfg, &[]);
    let loaded = started.contains("outgoing connections recorded at connect (BPF)");
    agent.signal(libc::SIGTERM);
    agent.finish(Duration::from_secs(20));
    if !loaded {
        eprintln!("skipped: the connect-time recorder does not load here even as root: {started}");
        return;
    }
    // Without the capabilities BPF needs: the agent runs as before, and says so.
    let drop = "-bpf,-perfmon,-sys_admin";
    let server = Proc::spawn(
        &named_helper(&dir, "cb-capsrv"),
        &["listen", "127.0.0.1:0", "1"],
    );
    let port = server.ready_port();
    let (mut agent, started) = start_without(drop, &cfg, &[]);
    assert!(
        started.contains("outgoing connections by polls only (recorder unavailable: "),
        "{started}"
    );
    let listening = poll_until(Duration::from_secs(30), || {
        agent.lines().into_iter().find(|l| {
            l.contains("\"action\":\"listening\"") && l.contains(&format!("\"local_port\":{port},"))
        })
    });
    assert!(listening.is_some(), "the agent polls without the recorder");
    agent.signal(libc::SIGTERM);
    agent.finish(Duration::from_secs(20));
    // Asked for by name, it is required: the agent does not start, and says which setting.
    let out = Command::new(SETPRIV)
        .arg(format!("--bounding-set={drop}"))
        .arg(CONNBEAT)
        .args([
            "-c",
            &cfg.display().to_string(),
            "-E",
            "connbeat.connect_recorder=bpf",
        ])
        .output()
        .expect("run setpriv");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("connbeat.connect_recorder: bpf: cannot load the connect-time recorder"),
        "{stderr}"
    );
}

#[test]
fn without_ptrace_fd_links_cannot_attribute_other_users_sockets_the_bpf_walk_can() {
    if !setpriv_or_skip("capabilities") {
        return;
    }
    let dir = TempDir::new("cap-ptrace");
    // A server and a client running as nobody.
    let helper = named_helper(&dir, "cb-nobody");
    let as_nobody = |args: &[&str]| {
        let mut argv = vec!["--reuid=65534", "--regid=65534", "--clear-groups", "--"];
        let h = helper.display().to_string();
        let mut v: Vec<String> = argv.drain(..).map(String::from).collect();
        v.push(h);
        v.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = v.iter().map(String::as_str).collect();
        Proc::spawn(std::path::Path::new(SETPRIV), &refs)
    };
    let server = as_nobody(&["listen", "127.0.0.1:0", "1"]);
    let port = server.ready_port();
    let cfg = console_config(&dir, "");
    // With every capability: attributed to the nobody-owned process.
    let full = run_once(&cfg, &[]);
    full.assert_ok();
    let listen = full
        .events
        .iter()
        .find(|e| e["local_port"] == port && e["action"] == "listening")
        .expect("listening event");
    assert_eq!(
        listen["local_process"]["pid"].as_u64(),
        Some(server.pid as u64)
    );
    assert_eq!(listen["local_process"]["user"], "nobody");
    // Without the capabilities to read another user's /proc/PID/fd, reading fd links:
    // none, and a warning.
    let (stdout, stderr) = once_without(
        "-sys_ptrace,-dac_read_search,-dac_override",
        &cfg,
        &["--once", "-E", "connbeat.fd_scan=proc"],
    );
    let listening = |stdout: &str| -> serde_json::Value {
        stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| e["local_port"] == port && e["action"] == "listening")
            .expect("the listening socket is still reported")
    };
    let event = listening(&stdout);
    assert_eq!(event["attribution"], "none", "{event}");
    assert!(event.get("local_process").is_none());
    assert!(
        stderr.contains("needs CAP_SYS_PTRACE"),
        "no warning naming CAP_SYS_PTRACE in:\n{stderr}"
    );
    // The BPF iterator walks file tables in the kernel, which needs no ptrace access: the
    // socket is attributed all the same (the executable's path stays unreadable).
    let (stdout, stderr) = once_without(
        "-sys_ptrace,-dac_read_search,-dac_override",
        &cfg,
        &["--once"],
    );
    if !stderr.contains("procs.fds.walks=") {
        eprintln!("SKIP (BPF part): the iterator did not load:\n{stderr}");
        return;
    }
    let event = listening(&stdout);
    assert_eq!(event["attribution"], "procfs", "{event}");
    assert_eq!(
        event["local_process"]["pid"].as_u64(),
        Some(server.pid as u64),
        "{event}"
    );
    assert_eq!(event["local_process"]["user"], "nobody", "{event}");
    assert_eq!(event["local_process"]["exe"], "", "{event}");
}

#[test]
fn without_sys_admin_other_namespaces_are_skipped_counted_and_explained() {
    if !setpriv_or_skip("capabilities") {
        return;
    }
    if let Err(why) = netns_support::available() {
        eprintln!("skipped: network namespaces unavailable ({why})");
        return;
    }
    let ns = netns_support::Netns::new(&format!("cbcap{}", std::process::id() % 100_000));
    let dir = TempDir::new("cap-sysadmin");
    let cfg = console_config(&dir, "connbeat.namespaces: all");
    let (stdout, stderr) = once_without("-sys_admin", &cfg, &["--once"]);
    assert!(
        stderr.contains("needs CAP_SYS_ADMIN"),
        "no warning naming CAP_SYS_ADMIN in:\n{stderr}"
    );
    let totals =
        total_metrics(&stderr.lines().map(String::from).collect::<Vec<_>>()).expect("totals");
    assert!(
        totals.get("conn.netns.errors").copied().unwrap_or(0) >= 1,
        "{totals:?}"
    );
    assert!(
        !stdout.contains(&format!("\"netns\":{}", ns.inode())),
        "events from a namespace that could not be entered"
    );
}

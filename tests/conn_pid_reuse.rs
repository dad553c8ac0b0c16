//! A pid the agent listed can exit while the agent scans, and its number be taken at once
//! by a new *thread* of another process: /proc/TID is not listed, but /proc/TID/fd opens
//! and shows that process's fds. The agent must not report the thread id as the owner of
//! that process's sockets.
//!
//! The race is forced with /proc/sys/kernel/ns_last_pid (the next pid is its value + 1):
//! the holder H (a listening socket, threads on demand) gets a high pid; two helpers with
//! 4,000 fds each and a victim process get low pids P-2, P-1, P, so that the agent, which
//! scans in pid order, spends a while on the helpers before it reaches P. Once the agent
//! holds a helper's /proc/PID/fd open (it has listed the victim and is scanning), the
//! victim is killed and H starts a thread whose id is P. If the agent's scan order
//! changes, the race is hit less often and the test says so. ns_last_pid is restored.
//!
//! A second test reuses the pid of a short-lived client at once, with another client
//! binary: the connect-time recorder must name each connection's own process, never the
//! details of the other one that had the same pid.

mod common;

use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

const NS_LAST_PID: &str = "/proc/sys/kernel/ns_last_pid";

/// The tests of this file move the pid counter: one at a time.
static PID_COUNTER: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn counter_lock() -> std::sync::MutexGuard<'static, ()> {
    PID_COUNTER.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether ns_last_pid can be read and written here; the value to restore.
fn last_pid_or_skip() -> Option<u32> {
    let Ok(last) = std::fs::read_to_string(NS_LAST_PID) else {
        eprintln!("skipped: cannot read {NS_LAST_PID}");
        return None;
    };
    if std::fs::OpenOptions::new()
        .write(true)
        .open(NS_LAST_PID)
        .is_err()
    {
        eprintln!("skipped: {NS_LAST_PID} is not writable (needs CAP_CHECKPOINT_RESTORE)");
        return None;
    }
    last.trim().parse().ok()
}
const ROUNDS: u32 = 10;

fn set_last_pid(p: u32) {
    std::fs::write(NS_LAST_PID, p.to_string()).expect("write ns_last_pid");
}

fn free(p: u32) -> bool {
    !Path::new(&format!("/proc/{p}")).exists()
}

/// Puts the pid counter back where it was, so the rest of the machine carries on as before.
struct RestoreLastPid(u32);

impl Drop for RestoreLastPid {
    fn drop(&mut self) {
        set_last_pid(self.0);
    }
}

/// Checks `f` every 200 µs (the window is short) until it holds or `timeout` passes.
fn poll_fast(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    false
}

/// Whether process `pid` has one of `paths` open.
fn holds_open(pid: u32, paths: &[String]) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|l| paths.iter().any(|p| l.as_os_str() == p.as_str()))
    })
}

#[test]
fn a_thread_reusing_a_listed_pid_is_not_reported_as_owner() {
    if !root_or_skip("a_thread_reusing_a_listed_pid_is_not_reported_as_owner") {
        return;
    }
    let _one = counter_lock();
    let Some(last) = last_pid_or_skip() else {
        return;
    };
    let _restore = RestoreLastPid(last);
    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // A low range with 600 free pids for the helpers and the victims.
    let Some(base) = (1000..pid_max / 2)
        .step_by(700)
        .find(|&l| (l + 1..=l + 600).all(free))
    else {
        eprintln!("skipped: no range of 600 free pids");
        return;
    };

    let dir = TempDir::new("pidreuse");
    set_last_pid(pid_max - 2000);
    let mut holder = Proc::spawn(
        &named_helper(&dir, "cb-prhold"),
        &["threads", "127.0.0.1:0"],
    );
    let port = holder.ready_port();
    assert!(
        holder.pid > base + 600,
        "setup: holder pid {} not above the range",
        holder.pid
    );

    set_last_pid(base);
    let srv = Proc::spawn(
        &named_helper(&dir, "cb-prsrv"),
        &["listen", "127.0.0.1:0", "4000"],
    );
    let target = format!("127.0.0.1:{}", srv.ready_port());
    let cli = Proc::spawn(
        &named_helper(&dir, "cb-prcli"),
        &["connect", &target, "4000"],
    );
    cli.wait_line("HELD", Duration::from_secs(120));
    srv.wait_line("HELD", Duration::from_secs(120));
    let cfg = console_config(&dir, "");
    let cfg = cfg.to_str().unwrap();
    // The agent is scanning a helper while it holds /proc/<helper>/fd open.
    let scanning = [
        format!("/proc/{}/fd", srv.pid),
        format!("/proc/{}/fd", cli.pid),
    ];

    let (mut forced, mut wrong) = (0, Vec::new());
    for round in 0..ROUNDS {
        set_last_pid(base + 500 + round);
        let mut victim = Proc::spawn(Path::new("/bin/sleep"), &["60"]);
        let p = victim.pid;
        let mut agent = Proc::spawn(Path::new(CONNBEAT), &["-c", cfg, "--once"]);
        let caught = poll_fast(Duration::from_secs(60), || {
            holds_open(agent.pid, &scanning) || agent.child.try_wait().ok().flatten().is_some()
        });
        let _ = victim.child.kill();
        let _ = victim.child.wait();
        set_last_pid(p - 1);
        holder.send_line("thread");
        let tid = poll_until(Duration::from_secs(30), || {
            let tids: Vec<u32> = holder
                .lines()
                .iter()
                .filter_map(|l| l.strip_prefix("TID ")?.parse().ok())
                .collect();
            (tids.len() == round as usize + 1).then(|| tids[round as usize])
        })
        .expect("the holder's new thread id");
        let status = agent.wait_exit(Duration::from_secs(120));
        assert!(
            status.success(),
            "agent: {status}; {:?}",
            agent.stderr_lines()
        );
        if !caught || tid != p {
            continue; // the scan was missed, or another process took the pid first
        }
        forced += 1;
        let events: Vec<serde_json::Value> = agent
            .lines()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let mine = on_ports(&events, &[port]);
        assert_eq!(mine.len(), 1, "round {round}: {mine:?}");
        let e = mine[0];
        if u(e, "/local_process/pid") != Some(holder.pid as u64) {
            wrong.push(format!(
                "round {round}: pid {p} listed, exited, reused by a thread of {}: {e}",
                holder.pid
            ));
        }
    }
    eprintln!("{forced} of {ROUNDS} rounds reused a listed pid as a thread id during the scan");
    assert!(
        wrong.is_empty(),
        "{} of {forced} rounds attributed the holder's listening socket to one of its thread \
         ids (check Tgid == pid before trusting /proc/PID/fd):\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    if forced < ROUNDS / 2 {
        eprintln!("skipped: only {forced} rounds forced the reuse; the check above is weak");
    }
}

#[test]
fn a_quickly_reused_pid_never_names_another_client() {
    if !root_or_skip("a_quickly_reused_pid_never_names_another_client") {
        return;
    }
    let _one = counter_lock();
    let Some(last) = last_pid_or_skip() else {
        return;
    };
    let _restore = RestoreLastPid(last);
    let Some(ns) = NetNs::new("pidreuse") else {
        return;
    };
    let dir = TempDir::new("pidreuse-connect");
    let srv = ns.spawn(
        &named_helper(&dir, "cb-prsrv"),
        &["delay-server", "127.0.0.1:0", "0"],
    );
    let port = srv.ready_port();
    let target = format!("127.0.0.1:{port}");
    let cfg = console_config(&dir, "connbeat.poll_interval: 30s");
    let agent = Agent::start_in(Some(&ns), &cfg, &[]);
    agent.wait_events("listening event", Duration::from_secs(60), |evs| {
        evs.iter()
            .any(|e| s(e, "/action") == "listening" && u(e, "/local_port") == Some(port as u64))
    });
    if connect_recorder_loaded(&agent) != Some(true) {
        eprintln!("skipped: the connect-time recorder did not load here");
        return;
    }
    let (first, second) = (
        named_helper(&dir, "cb-first"),
        named_helper(&dir, "cb-second"),
    );
    let client = |exe: &Path| {
        let mut c = ns.spawn(exe, &["connect-once", &target]);
        assert!(c.wait_exit(Duration::from_secs(30)).success());
        (c.pid, c.socks()[0].local.port())
    };
    // local port → (pid, binary) of the client that used it.
    let mut expected = std::collections::HashMap::new();
    let mut reused = 0;
    for _ in 0..ROUNDS * 2 {
        let (pid, a) = client(&first);
        set_last_pid(pid - 1);
        let (pid2, b) = client(&second);
        expected.insert(a, (pid, "cb-first"));
        expected.insert(b, (pid2, "cb-second"));
        reused += u32::from(pid2 == pid);
    }
    let closed = |evs: &[serde_json::Value]| -> Vec<serde_json::Value> {
        evs.iter()
            .filter(|e| {
                s(e, "/action") == "closed"
                    && s(e, "/direction") == "outgoing"
                    && u(e, "/remote_port") == Some(port as u64)
            })
            .cloned()
            .collect()
    };
    agent.wait_events(
        "every client's closed event",
        Duration::from_secs(60),
        |evs| closed(evs).len() >= expected.len(),
    );
    for e in closed(&agent.events()) {
        let (pid, binary) = expected[&(u(&e, "/local_port").unwrap() as u16)];
        assert_eq!(s(&e, "/attribution"), "connect", "{e}");
        assert_eq!(u(&e, "/local_process/pid"), Some(pid as u64), "{e}");
        assert_eq!(s(&e, "/local_process/binary"), binary, "{e}");
        if let Some(cmdline) = e.pointer("/local_process/cmdline").and_then(|c| c.as_str()) {
            assert!(cmdline.contains(binary), "{e}");
        }
    }
    eprintln!(
        "{reused} of {} second clients took the first one's pid",
        ROUNDS * 2
    );
    if reused < ROUNDS {
        eprintln!("skipped: only {reused} pids were reused; the check above is weak");
    }
}

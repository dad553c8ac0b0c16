//! A poll never fails on what /proc and the socket table really contain: processes that
//! exit while they are scanned, processes without a command line, sockets nobody owns.
//! Each case: exit 0, the sockets are still reported, and a process is named only when
//! it was really found (`attribution: none` otherwise, never a made-up name).

mod common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// `cmdline` absent, or nothing but separators (what all-NUL argv bytes join to).
fn no_cmdline(e: &Value) -> bool {
    match e.pointer("/local_process/cmdline") {
        None | Some(Value::Null) => true,
        Some(Value::String(c)) => c.trim().is_empty(),
        Some(_) => false,
    }
}

/// Many short-lived processes, each with a socket, start and exit while `--once` polls
/// run back to back: /proc/PID vanishes between listing and reading.
#[test]
fn processes_exiting_mid_scan_never_fail_a_poll() {
    if !root_or_skip("processes_exiting_mid_scan_never_fail_a_poll") {
        return;
    }
    let dir = TempDir::new("churn");
    let sink = Proc::spawn(
        &named_helper(&dir, "cb-sink"),
        &["delay-server", "127.0.0.1:0", "0"],
    );
    let port = sink.ready_port();
    let target = format!("127.0.0.1:{port}");
    let churn = Proc::spawn(
        &named_helper(&dir, "cb-churn"),
        &["churn", &target, "20000"],
    );
    churn.wait_line("READY", Duration::from_secs(30));
    // A stable connection beside the churn: it must be attributed right every time.
    let stable = Proc::spawn(&named_helper(&dir, "cb-stable"), &["connect", &target, "1"]);
    stable.wait_line("HELD", Duration::from_secs(30));
    let stable_tuple = stable.socks()[0];

    let cfg = console_config(&dir, "");
    let start = Instant::now();
    let (mut polls, mut churn_seen) = (0, 0);
    while start.elapsed() < Duration::from_secs(15) || polls < 3 {
        let once = run_once(&cfg, &[]);
        once.assert_ok();
        polls += 1;
        let evs = on_ports(&once.events, &[port]);
        for e in &evs {
            check_event_invariants(e);
            if s(e, "/attribution") == "none" {
                continue;
            }
            let (pid, bin) = (
                u(e, "/local_process/pid").unwrap(),
                s(e, "/local_process/binary"),
            );
            match bin {
                "cb-sink" => assert_pid(e, pid, sink.pid),
                "cb-stable" => assert_pid(e, pid, stable.pid),
                "cb-churn" => churn_seen += 1,
                other => panic!("socket on the test port attributed to {other:?}: {e}"),
            }
        }
        let mine: Vec<_> = evs
            .iter()
            .filter(|e| tuple(e) == Some(stable_tuple))
            .collect();
        assert_eq!(mine.len(), 1, "the stable connection, poll {polls}");
        assert_eq!(
            u(mine[0], "/local_process/pid"),
            Some(stable.pid as u64),
            "{}",
            mine[0]
        );
    }
    let done = churn.wait_line("DONE", Duration::from_secs(60));
    eprintln!(
        "{polls} polls while churning ({done}); {churn_seen} sockets of dying processes attributed"
    );
    assert!(
        kv(&done, "n").unwrap_or(0) > 100,
        "churn too slow to test anything: {done}"
    );
}

/// A process whose argument area is all NUL bytes (as daemons that hide their arguments
/// leave it), and a process whose main thread has exited while another thread holds the
/// socket (the leader is a zombie: its /proc/PID/cmdline and /proc/PID/fd are empty).
/// Kernel threads have no cmdline either, but own no fds, so nothing is attributed to them.
#[test]
fn processes_without_cmdline_never_fail_a_poll() {
    if !root_or_skip("processes_without_cmdline_never_fail_a_poll") {
        return;
    }
    let dir = TempDir::new("nocmd");
    let srv = Proc::spawn(
        &named_helper(&dir, "cb-nsrv"),
        &["listen", "127.0.0.1:0", "2"],
    );
    let target = format!("127.0.0.1:{}", srv.ready_port());
    let nocmd_exe = named_helper(&dir, "cb-nocmd");
    let nocmd = Proc::spawn(&nocmd_exe, &["no-cmdline", &target]);
    let leaderless = Proc::spawn(&named_helper(&dir, "cb-noldr"), &["leaderless", &target]);
    nocmd.wait_line("READY", Duration::from_secs(30));
    leaderless.wait_line("READY", Duration::from_secs(30));
    srv.wait_line("HELD", Duration::from_secs(30));
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", nocmd.pid)).unwrap();
    assert!(cmdline.iter().all(|b| *b == 0), "setup: argv not cleared");
    let leader_cmdline = std::fs::read(format!("/proc/{}/cmdline", leaderless.pid)).unwrap();
    assert!(
        leader_cmdline.is_empty(),
        "setup: leader cmdline {leader_cmdline:?}"
    );
    let kthreads = kernel_threads();
    assert!(!kthreads.is_empty(), "setup: no kernel threads found");

    let once = run_once(&console_config(&dir, ""), &[]);
    once.assert_ok();
    for e in once.events.iter() {
        check_event_invariants(e);
        if let Some(pid) = u(e, "/local_process/pid") {
            assert!(
                !kthreads.contains(&(pid as u32)),
                "kernel thread named: {e}"
            );
        }
    }

    let e = only(&once.events, nocmd.socks()[0]);
    assert_eq!(s(e, "/attribution"), "procfs", "{e}");
    assert_eq!(u(e, "/local_process/pid"), Some(nocmd.pid as u64), "{e}");
    assert_eq!(s(e, "/local_process/binary"), "cb-nocmd", "{e}");
    assert_eq!(
        s(e, "/local_process/exe"),
        nocmd_exe.to_str().unwrap(),
        "{e}"
    );
    assert!(no_cmdline(e), "cmdline made up from NUL bytes: {e}");

    let e = only(&once.events, leaderless.socks()[0]);
    assert_eq!(s(e, "/tcp/state"), "ESTABLISHED", "{e}");
    match s(e, "/attribution") {
        // Found through /proc/PID/task/*/fd: then it must be the right process.
        "procfs" => {
            assert_eq!(
                u(e, "/local_process/pid"),
                Some(leaderless.pid as u64),
                "{e}"
            );
            assert_eq!(s(e, "/local_process/binary"), "cb-noldr", "{e}");
            assert!(no_cmdline(e), "{e}");
        }
        "none" => eprintln!("note: the leaderless process's socket is reported unattributed"),
        other => panic!("attribution {other}: {e}"),
    }
}

/// Sockets no process can be found for: every process hidden (`connbeat.proc_root` is an
/// empty directory), and an orphaned socket (closed by its process, still in FIN_WAIT2).
#[test]
fn sockets_without_owner_are_reported_unattributed() {
    if !root_or_skip("sockets_without_owner_are_reported_unattributed") {
        return;
    }
    let dir = TempDir::new("noowner");
    let srv = Proc::spawn(
        &named_helper(&dir, "cb-osrv"),
        &["listen", "127.0.0.1:0", "2"],
    );
    let port = srv.ready_port();
    let target = format!("127.0.0.1:{port}");
    let held = Proc::spawn(&named_helper(&dir, "cb-ocli"), &["connect", &target, "1"]);
    held.wait_line("HELD", Duration::from_secs(30));
    let half = Proc::spawn(&named_helper(&dir, "cb-ohalf"), &["half-close", &target]);
    half.wait_line("DONE", Duration::from_secs(30));
    srv.wait_line("HELD", Duration::from_secs(30));
    let orphan = half.socks()[0];
    poll_until(Duration::from_secs(10), || {
        let out = std::process::Command::new("ss")
            .args([
                "-tanH",
                "state",
                "fin-wait-2",
                &format!("sport = :{}", orphan.local.port()),
            ])
            .output()
            .unwrap();
        (!out.stdout.is_empty()).then_some(())
    })
    .expect("setup: the closed client socket in FIN_WAIT2");

    // Nothing hidden: the orphan has no owner, its peer (CLOSE_WAIT) has the server.
    let cfg = console_config(&dir, "");
    let once = run_once(&cfg, &[]);
    once.assert_ok();
    let e = only(&once.events, orphan);
    check_event_invariants(e);
    assert_eq!(s(e, "/tcp/state"), "FIN_WAIT2", "{e}");
    assert_eq!(s(e, "/attribution"), "none", "{e}");
    let peer = Tuple {
        local: orphan.remote,
        remote: orphan.local,
    };
    let e = only(&once.events, peer);
    assert_eq!(s(e, "/tcp/state"), "CLOSE_WAIT", "{e}");
    assert_eq!(u(e, "/local_process/pid"), Some(srv.pid as u64), "{e}");

    // Every process hidden: all sockets still reported, none attributed.
    let empty = dir.path().join("empty-proc");
    std::fs::create_dir(&empty).unwrap();
    let proc_root = format!("connbeat.proc_root={}", empty.display());
    let once = run_once(&cfg, &["-E", &proc_root]);
    once.assert_ok();
    assert!(!once.events.is_empty());
    for e in &once.events {
        check_event_invariants(e);
        assert_eq!(s(e, "/attribution"), "none", "{e}");
    }
    let mine = on_ports(&once.events, &[port]);
    // listening + held pair + orphan pair
    assert_eq!(mine.len(), 5, "{mine:#?}");
}

/// The event names process `want`; when it names another pid, say whether that pid is
/// one of `want`'s threads (a tid is not listed in /proc but /proc/TID/fd still opens).
fn assert_pid(e: &Value, got: u64, want: u32) {
    if got != want as u64 {
        let thread = std::path::Path::new(&format!("/proc/{want}/task/{got}")).exists();
        panic!(
            "attributed to pid {got}, not {want}{}: {e}",
            if thread {
                format!(" ({got} is a thread of {want}: a tid was taken for a process)")
            } else {
                String::new()
            }
        );
    }
}

/// The one event for this 4-tuple (exactly one).
fn only(events: &[Value], t: Tuple) -> &Value {
    let m: Vec<&Value> = events.iter().filter(|e| tuple(e) == Some(t)).collect();
    assert_eq!(m.len(), 1, "one event for {t}: {m:#?}");
    m[0]
}

/// Pids of kernel threads: kthreadd (2) and its children.
fn kernel_threads() -> Vec<u32> {
    let mut v = Vec::new();
    for d in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = d.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(d.path().join("stat")) else {
            continue;
        };
        let ppid: u32 = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if pid == 2 || ppid == 2 {
            v.push(pid);
        }
    }
    v
}

//! Shared pieces of the integration tests: the agent binary, the `sockhold` helper
//! processes (`examples/sockhold.rs`), temp dirs and configs, event parsing, `ss`.
//!
//! Every process a test starts is wrapped in a guard whose `Drop` kills it by pid and
//! reaps it, so a failing assertion never leaves helpers or agents behind. Helpers also
//! exit by themselves when their stdin closes (the test process is gone) or after a ttl.

#![allow(dead_code)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const CONNBEAT: &str = env!("CARGO_BIN_EXE_connbeat");

/// True when running as root; otherwise prints a loud skip line. sock_diag of other
/// users' sockets, /proc/PID/fd of other processes and the destroy groups need it.
pub fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!(
        "skipped: {test} needs root (CAP_NET_ADMIN for sock_diag destroy groups, /proc/PID/fd of every process)"
    );
    false
}

/// Polls `f` every 20 ms until it returns `Some`, or gives up at `timeout`.
pub fn poll_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// Temp dirs and configs

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("cbtest-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    /// Writes a file with mode 0600 and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A config file with console output on plus `extra` YAML lines.
pub fn console_config(dir: &TempDir, extra: &str) -> PathBuf {
    dir.write(
        "connbeat.yml",
        &format!("output.console.enabled: true\n{extra}\n"),
    )
}

// ---------------------------------------------------------------------------------------
// The sockhold helper

/// Path of the built `sockhold` example. `cargo test` builds examples; a focused
/// `cargo test --test NAME` does not, so build it here when it is missing or older than
/// its source.
pub fn sockhold() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let exe = Path::new(CONNBEAT)
            .parent()
            .unwrap()
            .join("examples/sockhold");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sockhold.rs");
        let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        if mtime(&exe).is_none() || mtime(&exe) < mtime(&src) {
            let profile = if cfg!(debug_assertions) {
                vec![]
            } else {
                vec!["--release"]
            };
            let st = Command::new(env!("CARGO"))
                .args(["build", "--example", "sockhold"])
                .args(profile)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("run cargo build --example sockhold");
            assert!(st.success(), "cargo build --example sockhold failed");
        }
        exe
    })
    .clone()
}

/// Copies the helper to `dir/name` so the process's `comm`, exe and argv[0] are `name`.
/// Keep `name` under 16 bytes (the kernel truncates `comm`).
pub fn named_helper(dir: &TempDir, name: &str) -> PathBuf {
    assert!(name.len() < 16, "comm is at most 15 bytes");
    let dst = dir.path().join(name);
    std::fs::copy(sockhold(), &dst).unwrap();
    dst
}

/// One socket a helper holds, as it reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tuple {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl std::fmt::Display for Tuple {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} -> {}", self.local, self.remote)
    }
}

/// A running helper process (or any child with line-based stdout): killed and reaped on drop.
pub struct Proc {
    pub child: Child,
    pub pid: u32,
    pub argv: Vec<String>,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<String>>>,
    out_eof: Arc<AtomicBool>,
    err_lines: Arc<Mutex<Vec<String>>>,
}

/// Lines read so far, and whether the reader reached end of file.
type Lines = (Arc<Mutex<Vec<String>>>, Arc<AtomicBool>);

fn collect_lines(r: impl Read + Send + 'static) -> Lines {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let eof = Arc::new(AtomicBool::new(false));
    let (l2, e2) = (lines.clone(), eof.clone());
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            l2.lock().unwrap().push(line);
        }
        e2.store(true, Ordering::SeqCst);
    });
    (lines, eof)
}

impl Proc {
    /// Starts `exe args...` with stdin, stdout and stderr piped.
    pub fn spawn(exe: &Path, args: &[&str]) -> Proc {
        // A freshly copied executable can be "busy" for a moment: another test thread
        // that forks inherits the copy's write fd until its exec. Retry until it is not.
        let mut child = poll_until(Duration::from_secs(10), || {
            match Command::new(exe)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
            {
                Ok(c) => Some(c),
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => None,
                Err(e) => panic!("spawn {}: {e}", exe.display()),
            }
        })
        .unwrap_or_else(|| panic!("spawn {}: text file busy for 10 s", exe.display()));
        let (lines, out_eof) = collect_lines(child.stdout.take().unwrap());
        let (err_lines, _) = collect_lines(child.stderr.take().unwrap());
        let mut argv = vec![exe.display().to_string()];
        argv.extend(args.iter().map(|s| s.to_string()));
        Proc {
            pid: child.id(),
            stdin: child.stdin.take(),
            child,
            argv,
            lines,
            out_eof,
            err_lines,
        }
    }

    /// Writes one line to the process's stdin.
    pub fn send_line(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to helper stdin");
        stdin.flush().expect("flush helper stdin");
    }

    /// Waits for the process to exit and its stdout to be read to the end.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let st = poll_until(timeout, || self.child.try_wait().ok().flatten())
            .unwrap_or_else(|| panic!("{} did not exit within {timeout:?}", self.argv[0]));
        poll_until(timeout, || {
            self.out_eof.load(Ordering::SeqCst).then_some(())
        })
        .expect("stdout read to the end");
        st
    }

    /// The command line as /proc/PID/cmdline joined by spaces.
    pub fn cmdline(&self) -> String {
        self.argv.join(" ")
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.err_lines.lock().unwrap().clone()
    }

    /// Waits for a stdout line starting with `prefix`; panics with the output so far.
    pub fn wait_line(&self, prefix: &str, timeout: Duration) -> String {
        poll_until(timeout, || {
            self.lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.starts_with(prefix))
                .cloned()
        })
        .unwrap_or_else(|| {
            panic!(
                "{} (pid {}) did not print {prefix:?} within {timeout:?}; stdout tail: {:?}; stderr: {:?}",
                self.argv[0],
                self.pid,
                tail(&self.lines(), 5),
                tail(&self.stderr_lines(), 20)
            )
        })
    }

    /// Waits for `READY pid=P port=X` and returns X.
    pub fn ready_port(&self) -> u16 {
        let l = self.wait_line("READY", Duration::from_secs(60));
        let port = kv(&l, "port").expect("READY line has port=");
        assert_eq!(kv(&l, "pid"), Some(self.pid as u64), "READY pid: {l}");
        port as u16
    }

    /// The sockets this helper reported (`SOCK l=.. r=..` lines).
    pub fn socks(&self) -> Vec<Tuple> {
        self.lines()
            .iter()
            .filter_map(|l| l.strip_prefix("SOCK l="))
            .map(|rest| {
                let (l, r) = rest.split_once(" r=").expect("SOCK l=.. r=..");
                let r = r.split(' ').next().unwrap_or(r);
                Tuple {
                    local: l.parse().unwrap(),
                    remote: r.parse().unwrap(),
                }
            })
            .collect()
    }

    /// Closes stdin (the helper's signal to exit) and waits up to `timeout` for the exit.
    pub fn finish(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.stdin.take();
        poll_until(timeout, || self.child.try_wait().ok().flatten())
    }

    /// Sends a signal to this child, by pid (unless it was already reaped).
    pub fn signal(&mut self, sig: i32) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: kill(2) on our own, not yet reaped, child.
            unsafe { libc::kill(self.pid as i32, sig) };
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stdin.take();
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn tail(v: &[String], n: usize) -> Vec<String> {
    v[v.len().saturating_sub(n)..].to_vec()
}

/// `key=NUMBER` from a `WORD key=value ...` line.
pub fn kv(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

// ---------------------------------------------------------------------------------------
// The agent

/// Output of `connbeat ... --once`, with stdout parsed as NDJSON events.
pub struct Once {
    pub status: std::process::ExitStatus,
    pub events: Vec<Value>,
    pub stderr: String,
}

/// Runs `connbeat -c CONFIG --once ARGS` and parses its stdout; every stdout line must be
/// a JSON object (logs belong on stderr).
pub fn run_once(config: &Path, args: &[&str]) -> Once {
    let out = Command::new(CONNBEAT)
        .arg("-c")
        .arg(config)
        .arg("--once")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run connbeat --once");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let events = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap_or_else(|e| {
                panic!("stdout line is not JSON ({e}): {l:?}\nstderr:\n{stderr}")
            })
        })
        .collect();
    Once {
        status: out.status,
        events,
        stderr,
    }
}

impl Once {
    /// Asserts exit 0, printing stderr otherwise.
    pub fn assert_ok(&self) -> &Self {
        assert!(
            self.status.success(),
            "connbeat --once failed: {}\nstderr:\n{}",
            self.status,
            self.stderr
        );
        self
    }
}

/// A running agent (`connbeat -c CONFIG ARGS`): stdout parsed as events, stderr kept.
/// Killed by pid and reaped on drop.
pub struct Agent {
    pub proc: Proc,
    events: Arc<Mutex<Vec<Value>>>,
    bad_lines: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    pub fn start(config: &Path, args: &[&str]) -> Agent {
        Agent::start_in(None, config, args)
    }

    /// Starts the agent inside a network namespace (`ip netns exec`), or in this one.
    pub fn start_in(netns: Option<&NetNs>, config: &Path, args: &[&str]) -> Agent {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns.0, CONNBEAT]);
                c
            }
            None => Command::new(CONNBEAT),
        };
        let mut child = cmd
            .arg("-c")
            .arg(config)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start connbeat");
        let stdout = child.stdout.take().unwrap();
        let (err_lines, _) = collect_lines(child.stderr.take().unwrap());
        let events = Arc::new(Mutex::new(Vec::new()));
        let bad_lines = Arc::new(Mutex::new(Vec::new()));
        let (e2, b2) = (events.clone(), bad_lines.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => e2.lock().unwrap().push(v),
                    Err(_) => b2.lock().unwrap().push(line),
                }
            }
        });
        let mut argv = vec![CONNBEAT.to_string()];
        argv.extend(args.iter().map(|s| s.to_string()));
        Agent {
            proc: Proc {
                pid: child.id(),
                child,
                argv,
                stdin: None,
                lines: Arc::new(Mutex::new(Vec::new())),
                out_eof: Arc::new(AtomicBool::new(true)),
                err_lines,
            },
            events,
            bad_lines,
        }
    }

    pub fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// Stdout lines that were not JSON (should be none).
    pub fn bad_lines(&self) -> Vec<String> {
        self.bad_lines.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> Vec<String> {
        self.proc.stderr_lines()
    }

    /// Waits until `pred` holds for the events so far; panics with stderr otherwise.
    pub fn wait_events(&self, what: &str, timeout: Duration, pred: impl Fn(&[Value]) -> bool) {
        // Stops early when the agent has exited (one last look at its output first).
        let mut exited_at: Option<Instant> = None;
        let ok = poll_until(timeout, || {
            if pred(&self.events.lock().unwrap()) {
                return Some(true);
            }
            match exited_at {
                Some(t) if t.elapsed() > Duration::from_millis(500) => Some(false),
                Some(_) => None,
                None => {
                    exited_at = self.exited().then(Instant::now);
                    None
                }
            }
        });
        if ok != Some(true) {
            panic!(
                "agent: no {what} within {timeout:?}; {} events; exited: {:?}; stderr tail:\n{}",
                self.events.lock().unwrap().len(),
                self.exited(),
                tail(&self.stderr(), 30).join("\n")
            );
        }
    }

    /// Whether the agent has exited (is a zombie or gone), without reaping it.
    fn exited(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.proc.pid))
            .map(|st| {
                st.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true)
    }

    /// SIGTERM, then waits for the exit; returns the status and the whole stderr.
    pub fn terminate(&mut self, timeout: Duration) -> (std::process::ExitStatus, Vec<String>) {
        self.proc.signal(libc::SIGTERM);
        let st = poll_until(timeout, || self.proc.child.try_wait().ok().flatten())
            .unwrap_or_else(|| panic!("agent did not exit within {timeout:?} of SIGTERM"));
        // Let the reader threads drain the pipes.
        let n = self.stderr().len();
        poll_until(Duration::from_secs(2), || {
            let m = self.stderr().len();
            (m == n).then_some(())
        });
        std::thread::sleep(Duration::from_millis(100));
        (st, self.stderr())
    }
}

/// A network namespace of its own, with loopback up, deleted on drop: a test that counts
/// kernel events (destroy notifications) runs there so that other activity on the machine
/// cannot disturb it.
pub struct NetNs(pub String);

impl NetNs {
    /// `None` (after a loud skip line) when `ip netns` is not available.
    pub fn new(tag: &str) -> Option<NetNs> {
        let name = format!("cbtest-{tag}-{}", std::process::id());
        let ok = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        if !ok(&["netns", "add", &name]) {
            eprintln!("skipped: cannot create a network namespace with `ip netns add`");
            return None;
        }
        let ns = NetNs(name);
        assert!(
            ok(&["-n", &ns.0, "link", "set", "lo", "up"]),
            "lo up in {}",
            ns.0
        );
        Some(ns)
    }

    /// Starts `exe args...` inside the namespace (`ip netns exec` execs it: same pid).
    pub fn spawn(&self, exe: &Path, args: &[&str]) -> Proc {
        let exe = exe.to_str().unwrap();
        let mut all = vec!["netns", "exec", &self.0, exe];
        all.extend_from_slice(args);
        Proc::spawn(Path::new("ip"), &all)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The counters of the `Total metrics: name=value ...` line.
pub fn total_metrics(stderr: &[String]) -> Option<BTreeMap<String, u64>> {
    let line = stderr.iter().rev().find(|l| l.contains("Total metrics"))?;
    let rest = &line[line.find("Total metrics").unwrap() + "Total metrics".len()..];
    Some(
        rest.split_whitespace()
            .filter_map(|w| {
                let (k, v) = w.split_once('=')?;
                Some((k.to_string(), v.trim_end_matches(',').parse().ok()?))
            })
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------
// Events

pub fn s<'a>(e: &'a Value, key: &str) -> &'a str {
    e.pointer(key).and_then(Value::as_str).unwrap_or("")
}

pub fn u(e: &Value, key: &str) -> Option<u64> {
    e.pointer(key).and_then(Value::as_u64)
}

/// The event's local endpoint.
pub fn local(e: &Value) -> Option<SocketAddr> {
    let ip: IpAddr = e.get("local_ip")?.as_str()?.parse().ok()?;
    Some(SocketAddr::new(ip, u(e, "/local_port")? as u16))
}

/// The event's remote endpoint (none on listening sockets).
pub fn remote(e: &Value) -> Option<SocketAddr> {
    let ip: IpAddr = e.get("remote_ip")?.as_str()?.parse().ok()?;
    Some(SocketAddr::new(ip, u(e, "/remote_port")? as u16))
}

pub fn tuple(e: &Value) -> Option<Tuple> {
    Some(Tuple {
        local: local(e)?,
        remote: remote(e)?,
    })
}

/// The connection events (type connbeat) whose local or remote port is in `ports`.
pub fn on_ports<'a>(events: &'a [Value], ports: &[u16]) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| s(e, "/type") == "connbeat")
        .filter(|e| {
            let lp = u(e, "/local_port").unwrap_or(0) as u16;
            let rp = u(e, "/remote_port").unwrap_or(0) as u16;
            ports.contains(&lp) || ports.contains(&rp)
        })
        .collect()
}

/// Whether the agent's startup line says the connect-time recorder loaded; `None` before
/// that line.
pub fn connect_recorder_loaded(agent: &Agent) -> Option<bool> {
    let stderr = agent.stderr();
    let line = stderr.iter().find(|l| l.contains("started with"))?;
    Some(line.contains("outgoing connections recorded at connect (BPF)"))
}

/// Checks what the contract says about every connection event regardless of the
/// scenario: a known attribution; `none` carries no process; a process has a pid and a
/// non-empty binary (never a made-up one: the pid's comm when the process is alive).
pub fn check_event_invariants(e: &Value) {
    assert_eq!(s(e, "/type"), "connbeat", "{e}");
    let attribution = s(e, "/attribution");
    assert!(
        ["procfs", "connect", "cache", "listener", "none"].contains(&attribution),
        "attribution {attribution:?}: {e}"
    );
    let p = e.get("local_process");
    if attribution == "none" {
        assert!(
            p.is_none() || p == Some(&Value::Null),
            "attribution none with a process: {e}"
        );
    } else {
        let pid = u(e, "/local_process/pid").unwrap_or(0);
        assert!(pid > 0, "attributed without a pid: {e}");
        assert!(
            !s(e, "/local_process/binary").is_empty(),
            "empty binary: {e}"
        );
    }
    assert!(["ipv4", "ipv6"].contains(&s(e, "/family")), "family: {e}");
    assert!(!s(e, "/cookie").is_empty(), "cookie: {e}");
}

// ---------------------------------------------------------------------------------------
// ss

/// The ESTABLISHED TCP 4-tuples `ss -tanH state established` reports.
pub fn ss_established() -> Vec<Tuple> {
    let out = Command::new("ss")
        .args(["-tanH", "state", "established"])
        .output()
        .expect("run ss");
    assert!(out.status.success(), "ss failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            // Recv-Q Send-Q Local Peer [Process]
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(Tuple {
                local: parse_ss_addr(f.get(2)?)?,
                remote: parse_ss_addr(f.get(3)?)?,
            })
        })
        .collect()
}

/// `127.0.0.1:80`, `[::1]:80`, `[::ffff:127.0.0.1]:80` (shown as IPv4, like the agent).
pub fn parse_ss_addr(a: &str) -> Option<SocketAddr> {
    let a: SocketAddr = a.parse().ok()?;
    Some(match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        v4 => v4,
    })
}

/// An output that collects the published events, for pipelines a test starts in its
/// own process.
pub struct Collect(pub Arc<Mutex<Vec<Value>>>);

impl connbeat::output::Output for Collect {
    fn name(&self) -> &'static str {
        "collect"
    }
    fn publish(
        &mut self,
        batch: &[connbeat::event::Record],
    ) -> Result<connbeat::output::Outcome, connbeat::output::OutputError> {
        self.0
            .lock()
            .unwrap()
            .extend(batch.iter().map(connbeat::event::Record::value));
        Ok(connbeat::output::Outcome::Acked)
    }
}

/// Socket owners from /proc/net/{tcp,tcp6,udp,udp6} and /proc/*/fd.
pub struct ProcLookup;

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

impl connbeat::inspect::ProcessLookup for ProcLookup {
    fn lookup(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Option<connbeat::inspect::ProcessRef> {
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
                    return Some(connbeat::inspect::ProcessRef { pid, binary });
                }
            }
        }
        None
    }
}

/// A server started by a tests/services script, stopped (by PID) on drop.
pub struct Service {
    pub pid: u32,
    pub dir: String,
    pub line: String,
}

impl Service {
    pub fn start(script: &str, args: &[&str]) -> Option<Service> {
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

impl Service {
    /// The port the script printed (`port=`).
    pub fn port(&self) -> u16 {
        self.line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("port="))
            .and_then(|p| p.parse().ok())
            .expect("port= in the service line")
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
    }
}

//! Helpers shared by the shipping tests (pipeline, outputs, monitoring): temporary
//! directories, an agent process that is always killed, a tiny HTTP/1.1 GET client, and
//! polling with deadlines instead of sleeps.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("connbeat-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a config file the agent accepts under --strict.perms (0600).
pub fn write_config(dir: &Path, yaml: &str) -> PathBuf {
    let p = dir.join("connbeat.yml");
    std::fs::write(&p, yaml).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// `connbeat -c CONFIG test output` with this configuration: whether it passed, and what
/// it printed (standard output, then standard error).
pub fn test_output(dir: &Path, yaml: &str) -> (bool, String) {
    let cfg = write_config(dir, yaml);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_connbeat"))
        .arg("-c")
        .arg(&cfg)
        .args(["test", "output"])
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` until it returns Some, or panics with `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The agent binary running as a child; killed (SIGKILL) on drop if still alive.
pub struct Agent {
    pub child: Child,
    pub stderr_path: PathBuf,
}

impl Agent {
    /// Starts `connbeat -c <config> -e <args>`, stdout to `<dir>/stdout`, stderr to
    /// `<dir>/stderr`.
    pub fn start(dir: &Path, config: &Path, args: &[&str]) -> Agent {
        let stderr_path = dir.join("stderr");
        let child = Command::new(env!("CARGO_BIN_EXE_connbeat"))
            .arg("-c")
            .arg(config)
            .arg("-e")
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("start connbeat");
        Agent { child, stderr_path }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// SIGTERM, then waits (bounded) for a clean exit; returns the exit code.
    pub fn stop(&mut self, timeout: Duration) -> Option<i32> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.wait(timeout)
    }

    /// Waits (bounded) for the process to exit by itself.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, like a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `GET path` over HTTP/1.1 with `Connection: close`; (status, body). None when the
/// connection fails.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    http_request(addr, "GET", path, None)
}

/// `METHOD path` (with a JSON body) over HTTP/1.1 with `Connection: close`; (status, body).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

pub mod bulk;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod lumberjack;
pub mod osmem;
pub mod redis;
pub mod server;
pub mod socks;

use connbeat::event::{CommonFields, Event};
use connbeat::publish::{self, Pipeline, PipelineSettings, Publisher};
use std::sync::{Arc, Mutex, OnceLock};

/// A configuration from YAML text, as the loader reads a file (validated).
pub fn config(yaml: &str) -> connbeat::config::Config {
    connbeat::config::from_yaml_str(yaml, &[], &|_| None).unwrap_or_else(|e| panic!("{e}"))
}

/// The pipeline and output `run` would build from this configuration.
pub fn pipeline(c: &connbeat::config::Config) -> (Publisher, Pipeline) {
    let out = connbeat::output::from_config(c).unwrap_or_else(|e| panic!("{e}"));
    let common = CommonFields {
        agent_type: "connbeat",
        name: "test".into(),
        hostname: "test".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        tags: vec![],
        fields: Default::default(),
        fields_under_root: false,
        shape: Default::default(),
    };
    publish::start(PipelineSettings::from_config(c), out, common).unwrap_or_else(|e| panic!("{e}"))
}

/// A connection event shaped like the connection source's, numbered `i` (its cookie).
pub fn conn_event(i: u64) -> Event {
    let ts = std::time::UNIX_EPOCH + Duration::from_millis(1_795_000_000_000 + i);
    Event::new(
        ts,
        "connbeat",
        serde_json::json!({
            "action": "open", "direction": "outgoing", "transport": "tcp", "family": "ipv4",
            "local_ip": "10.0.0.5", "local_port": 40000 + (i % 20000), "remote_ip": "10.0.0.9",
            "remote_port": 5432,
            "local_process": {"pid": 812, "binary": "psql", "exe": "/usr/bin/psql",
                              "cmdline": "psql -h 10.0.0.9", "user": "app", "ppid": 1},
            "attribution": "procfs",
            "tcp": {"state": "ESTABLISHED", "rtt_us": 210, "retransmits": 0,
                    "bytes_acked": 1520, "bytes_received": 8211},
            "cookie": i.to_string(), "netns": 4026531840u64,
            "beat": {"local_ips": ["10.0.0.5"]}
        }),
    )
}

/// The identity the tests compare events by: cookie + action + @timestamp.
pub fn identity(v: &serde_json::Value) -> String {
    format!(
        "{}/{}/{}",
        v["cookie"].as_str().unwrap_or("?"),
        v["action"].as_str().unwrap_or("?"),
        v["@timestamp"].as_str().unwrap_or("?")
    )
}

/// Everything the library logs in this test process, captured (installed once).
pub fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let b = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || LogWriter(b.clone()))
            .try_init();
        buf
    })
    .clone()
}

pub fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).to_string()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        std::io::stderr().write_all(b)?;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Tests of one binary that read the process-wide counters take this lock, so that their
/// counter deltas are their own.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A counter's current value, by dotted name.
pub fn counter(name: &str) -> u64 {
    connbeat::monitor::METRICS
        .snapshot()
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no counter {name}"))
        .1
}

//! redis-server for the Redis output tests, started through
//! `tests/services/start-redis.sh` on a loopback port (optionally with the append-only
//! file fsync'd on every write, optionally TLS beside the plain port), SIGKILLed and
//! restarted on demand; and a small RESP client that reads back what arrived.
#![allow(dead_code)]

use connbeat::output::resp::{self, Reply};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Skips the calling test, loudly, when redis-server is not installed.
#[macro_export]
macro_rules! require_redis {
    () => {
        if !shipkit::redis::available() {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "skipped: redis-server is not installed (scripts/install-deps.sh test)"
            );
            return;
        }
    };
}

pub fn available() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A running redis-server; SIGKILLed on drop.
pub struct RedisServer {
    /// The plain port.
    pub port: u16,
    pid: Option<i32>,
    dir: PathBuf,
    appendonly: bool,
    extra: Vec<String>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/services/start-redis.sh")
}

impl RedisServer {
    /// Starts a server whose data lives in `dir`; `extra` goes to redis-server.
    pub fn start(dir: &Path, appendonly: bool, extra: &[String]) -> RedisServer {
        let mut r = RedisServer {
            port: super::free_port(),
            pid: None,
            dir: dir.join("redis"),
            appendonly,
            extra: extra.to_vec(),
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let out = Command::new(script())
            .arg(self.port.to_string())
            .args(&self.extra)
            .env("REDIS_DIR", &self.dir)
            .env("APPENDONLY", if self.appendonly { "yes" } else { "no" })
            .output()
            .expect("run start-redis.sh");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "start-redis.sh failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pid = text
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("pid="))
            .and_then(|p| p.parse().ok())
            .expect("pid= in the script's output");
        self.pid = Some(pid);
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL, like a crash; returns once the port refuses connections.
    pub fn kill(&mut self) {
        if let Some(pid) = self.pid.take() {
            // SAFETY: kill(2) on the pid of the server this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            super::wait_for(Duration::from_secs(30), "redis to die", || {
                TcpStream::connect(self.addr()).is_err().then_some(())
            });
        }
    }

    /// Starts it again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.addr())
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            // SAFETY: as in kill.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// A plain RESP client.
pub struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: &str) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        Client { s, buf: Vec::new() }
    }

    pub fn call(&mut self, args: &[&str]) -> Reply {
        let mut out = Vec::new();
        let a: Vec<&[u8]> = args.iter().map(|x| x.as_bytes()).collect();
        resp::command(&mut out, &a);
        self.s.write_all(&out).unwrap();
        self.next()
    }

    /// The next reply (a message of a subscription, too).
    pub fn next(&mut self) -> Reply {
        loop {
            if let Some((r, n)) = resp::parse(&self.buf, resp::LIMITS).unwrap() {
                self.buf.drain(..n);
                return r;
            }
            let mut chunk = [0u8; 65536];
            let n = self.s.read(&mut chunk).unwrap();
            assert!(n > 0, "redis closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub fn int(&mut self, args: &[&str]) -> i64 {
        match self.call(args) {
            Reply::Integer(n) => n,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    /// Every element of a list, parsed as JSON, read in slices (once the server has
    /// loaded its data).
    pub fn list(&mut self, key: &str) -> Vec<serde_json::Value> {
        let len = super::wait_for(
            Duration::from_secs(60),
            "redis to load its data",
            || match self.call(&["LLEN", key]) {
                Reply::Integer(n) => Some(n),
                _ => None,
            },
        );
        let mut out = Vec::with_capacity(len as usize);
        let mut at = 0i64;
        while at < len {
            let end = (at + 9999).min(len - 1);
            match self.call(&["LRANGE", key, &at.to_string(), &end.to_string()]) {
                Reply::Array(Some(items)) => {
                    for i in items {
                        match i {
                            Reply::Bulk(Some(b)) => out.push(serde_json::from_slice(&b).unwrap()),
                            other => panic!("LRANGE item {other:?}"),
                        }
                    }
                }
                other => panic!("LRANGE: {other:?}"),
            }
            at = end + 1;
        }
        out
    }
}

//! osmem-server (PyPI: an in-memory OpenSearch-compatible server) for the Elasticsearch
//! output tests, started through `tests/services/start-osmem.sh` on a port it picks,
//! killed on drop; and plain HTTP calls to it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Osmem {
    pub port: u16,
    pid: i32,
    dir: PathBuf,
}

impl Osmem {
    /// Starts a server; None (after saying why on stderr) when it is not installed.
    pub fn start() -> Option<Osmem> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/services/start-osmem.sh");
        let out = Command::new(script).output().expect("run start-osmem.sh");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if !out.status.success() {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "skipped: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        let field = |k: &str| {
            text.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .unwrap_or_else(|| panic!("no {k} in {text}"))
                .to_string()
        };
        Some(Osmem {
            port: field("port=").parse().unwrap(),
            pid: field("pid=").parse().unwrap(),
            dir: PathBuf::from(field("dir=")),
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `METHOD path` with a JSON body; (status, parsed answer).
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        let addr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let (status, text) = super::http_request(addr, method, path, body)
            .unwrap_or_else(|| panic!("{method} {path}: no answer"));
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    /// How many documents the indices matching `pattern` hold.
    pub fn count(&self, pattern: &str) -> u64 {
        let (status, v) = self.call(
            "POST",
            &format!("/{pattern}/_search"),
            Some(r#"{"size": 0, "track_total_hits": true}"#),
        );
        assert_eq!(status, 200, "{v}");
        v["hits"]["total"]["value"].as_u64().unwrap()
    }
}

impl Drop for Osmem {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the server this test started.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

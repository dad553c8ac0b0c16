//! Test network namespaces: made with `ip netns` and veth pairs, removed on drop.
//! Addresses come from 198.18.0.0/15 (the benchmarking range), inside namespaces the
//! test itself creates.

#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;

/// Runs `ip ARGS`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether `ip netns` can be used here (root, iproute2).
pub fn available() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not root".into());
    }
    let probe = format!("cbprobe{}", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &probe])
        .status()
        .map_err(|e| format!("ip: {e}"))?;
    if !ok.success() {
        return Err("ip netns add failed".into());
    }
    let _ = Command::new("ip").args(["netns", "del", &probe]).status();
    Ok(())
}

/// A named network namespace with loopback up; deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Netns {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(std::process::Stdio::null())
            .status();
        ip(&["netns", "add", name]);
        ip(&["-n", name, "link", "set", "lo", "up"]);
        Netns {
            name: name.to_string(),
        }
    }

    /// The namespace's inode, as events report it in `netns`.
    pub fn inode(&self) -> u64 {
        std::fs::metadata(self.path()).unwrap().ino()
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// `nsenter --net=... EXE ARGS` as argv: the process execs in the namespace, keeping
    /// its pid.
    pub fn wrap(&self, exe: &str, args: &[&str]) -> (String, Vec<String>) {
        let mut argv = vec![format!("--net={}", self.path().display()), exe.to_string()];
        argv.extend(args.iter().map(|s| s.to_string()));
        ("nsenter".to_string(), argv)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Links two namespaces with a veth pair and gives each end an address (`a_ip/24`,
/// `b_ip/24`).
pub fn link(a: &Netns, a_if: &str, a_ip: &str, b: &Netns, b_if: &str, b_ip: &str) {
    ip(&[
        "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ]);
    ip(&[
        "-n",
        &a.name,
        "addr",
        "add",
        &format!("{a_ip}/24"),
        "dev",
        a_if,
    ]);
    ip(&[
        "-n",
        &b.name,
        "addr",
        "add",
        &format!("{b_ip}/24"),
        "dev",
        b_if,
    ]);
    ip(&["-n", &a.name, "link", "set", a_if, "up"]);
    ip(&["-n", &b.name, "link", "set", b_if, "up"]);
}

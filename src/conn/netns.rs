//! Network namespaces: finding them, and opening sock_diag sockets inside them.
//!
//! A netlink socket belongs to the namespace it was created in, for its whole life. So
//! entering a namespace is needed only for a moment: a short-lived thread `setns`es into
//! it, creates the dump and close-notification sockets, and hands them back. The one
//! connection thread then polls every namespace with no further switching. Holding those
//! sockets keeps the namespace alive, so a namespace that no process and no bind mount
//! refers to any more is released by closing them.

use super::diag::{CloseListener, DiagSocket};
use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Directories where tools bind-mount namespaces that may have no process (yet).
pub const BIND_MOUNT_DIRS: [&str; 2] = ["/run/netns", "/var/run/docker/netns"];

/// What a discovery found.
#[derive(Debug, Default)]
pub struct Discovered {
    /// Every network namespace reachable now: inode → a path that opens it.
    pub namespaces: BTreeMap<u64, PathBuf>,
    /// Processes whose namespace could not be looked at (permission denied).
    pub denied: usize,
}

/// Finds every network namespace of the machine: those of processes and bind mounts.
pub fn discover(proc_root: &Path) -> Discovered {
    let mut found = BTreeMap::new();
    let mut denied = 0;
    for dir in BIND_MOUNT_DIRS {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let p = e.path();
                if is_nsfs(&p)
                    && let Ok(m) = std::fs::metadata(&p)
                {
                    found.entry(m.ino()).or_insert(p);
                }
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(proc_root) {
        for e in entries.flatten() {
            let name = e.file_name();
            if !name.as_encoded_bytes().iter().all(u8::is_ascii_digit) {
                continue;
            }
            let p = e.path().join("ns/net");
            // The process may be gone (skipped quietly) or not ours to inspect (counted).
            match std::fs::metadata(&p) {
                Ok(m) => {
                    found.entry(m.ino()).or_insert(p);
                }
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => denied += 1,
                Err(_) => {}
            }
        }
    }
    Discovered {
        namespaces: found,
        denied,
    }
}

/// A bind-mounted namespace file lives on nsfs; a stale mount point is a plain empty file.
fn is_nsfs(path: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == NSFS_MAGIC)
}

/// The inode of the namespace the calling thread is in.
pub fn current(proc_root: &Path) -> io::Result<u64> {
    Ok(std::fs::metadata(proc_root.join("thread-self/ns/net"))
        .or_else(|_| std::fs::metadata(proc_root.join("self/ns/net")))?
        .ino())
}

/// The sockets of one namespace.
pub struct NsSockets {
    pub diag: DiagSocket,
    pub closes: Option<io::Result<CloseListener>>,
}

/// Opens the dump socket (and the close listener, when asked) inside the namespace at
/// `path`. Needs CAP_SYS_ADMIN for `setns`.
pub fn open_in(
    path: &Path,
    with_closes: Option<(bool, usize)>,
    wait: Duration,
) -> io::Result<NsSockets> {
    let ns = File::open(path)?;
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(io::Error::from)?;
            let diag = DiagSocket::open()?;
            let closes = with_closes.map(|(udp, buf)| CloseListener::open(udp, buf, wait));
            Ok(NsSockets { diag, closes })
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_own_namespace() {
        let own = current(Path::new("/proc")).unwrap();
        let all = discover(Path::new("/proc")).namespaces;
        assert!(all.contains_key(&own), "{own} not in {all:?}");
    }

    #[test]
    fn opening_the_own_namespace_by_path_works() {
        let own = current(Path::new("/proc")).unwrap();
        let s = open_in(
            Path::new("/proc/self/ns/net"),
            None,
            Duration::from_millis(10),
        );
        match s {
            Ok(mut s) => {
                let mut n = 0;
                s.diag
                    .dump(
                        super::super::diag::Family::V4,
                        super::super::diag::Transport::Tcp,
                        false,
                        |_| n += 1,
                    )
                    .unwrap();
                assert!(own > 0);
            }
            Err(e) => eprintln!("skipped: setns not permitted here: {e}"),
        }
    }
}

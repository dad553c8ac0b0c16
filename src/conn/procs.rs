//! Process attribution: socket inode → owning process, and each process's details.
//!
//! # Why this module exists
//!
//! `sock_diag` tells us every socket and its inode, but not which process holds it. The
//! only place the kernel says that is `/proc/PID/fd/N`, a symlink reading `socket:[INODE]`.
//! Reading those links is the expensive part of attribution (a few µs per fd; a busy host
//! has tens of thousands of fds), and the Go connbeat rescanned all of `/proc` whenever a
//! single inode was unknown, which dominated its CPU. This index reads as little as it can.
//!
//! # How a refresh works
//!
//! [`ProcIndex::refresh`] is told which inodes the caller wants (the sockets of one poll):
//!
//! 1. **Nothing missing → no I/O.** When every wanted inode is indexed (or was given up on,
//!    below), it returns without touching `/proc`. Once per `rescan_interval` a *sweep*
//!    lists `<proc_root>` (one directory read, no fds) to forget exited processes.
//! 2. Otherwise it lists `<proc_root>` and forgets processes that exited, with their
//!    inodes. Then, stopping as soon as every wanted inode is found:
//!    - **new pids first**: pids never seen, whose fds are all unknown;
//!    - then every known pid gets one `stat()` of `/proc/PID/fd`. Its `st_ino` is the
//!      identity of the `/proc` inode: a reused pid gets a new one (so does a process whose
//!      `/proc` inode the kernel evicted), and then the start time (field 22 of
//!      `/proc/PID/stat`) decides: different → the pid was **reused**, the old process is
//!      forgotten and the new one scanned like a new pid; same → its fds are rescanned.
//!      Its `st_size` is the number of open fds (Linux 6.2 and later; checked on 6.18);
//!      **pids whose fd count changed** since their last scan are rescanned after the
//!      new and reused ones. On kernels where `st_size` is 0 this signal is simply absent
//!      (see [`ScanStats::fd_count_from_stat`]) and only new pids and full scans find
//!      sockets.
//!    - a **full scan** of every pid happens on the first refresh and afterwards at most
//!      once per `rescan_interval`, only when the cheaper steps left something missing.
//!    - between two full scans, with the BPF iterator, inodes still missing are **placed
//!      by one walk**: a socket that took the fd of a file just closed (or was moved onto
//!      one with `dup2`, received over a Unix socket, opened by a thread with a file table
//!      of its own) leaves the fd count as it was, yet is found at the poll that sees it.
//!      The processes the walk shows holding them are scanned from it.
//!      Inodes a full scan or that walk did not find are *given up* until
//!      `rescan_interval` passes (an orphaned socket, a kernel socket, or one held by no
//!      process we can see): they cost nothing in between, not even a walk per poll. With
//!      fd links alone there is no such walk: those sockets wait for the full scan. The
//!      caller falls back to the connect record, the listener's process or
//!      `attribution: none`.
//!
//! A process's details ([`ProcessInfo`]) are read once, when a scan first finds it holding
//! a socket (or a connect record names it: [`ProcIndex::connector`], which checks the
//! start time), and kept until it exits (re-read if its `comm` changed, i.e. after `exec`).
//! Processes without sockets cost one small entry (start time, fd count, `/proc` inode).
//! `max_processes` bounds the entries; beyond it the least useful (no sockets, scanned
//! longest ago) are evicted and counted in `procs.evicted`.
//!
//! A socket held by several processes (a listener shared by forked workers) is attributed
//! to the lowest pid among the holders found (usually the parent); when that one exits, the
//! next holder takes over without a rescan. A forked child holds copies of its parent's
//! sockets until it execs: a partial scan that meets it in that window may attribute them
//! to the child (same comm as the parent) until the child is rescanned.
//!
//! An inode stays indexed until its process is rescanned or exits, so the inode of a
//! socket closed since can linger in a process that nothing made us rescan. That is
//! harmless: the caller only asks about sockets the kernel just listed, and sockfs inode
//! numbers (32 bits) come back only after 2^32 sockets.
//!
//! fd links are read with `std::fs::read_dir` plus `readlinkat(2)` on the directory's fd
//! into a stack buffer: no path is built and no link target allocated per fd (std's
//! directory iterator still allocates each entry's short name). Measured here in a release
//! build: ~3.1–3.5 µs per fd, against ~3.8–4.4 µs with `std::fs::read_link` on the full
//! path (NOTES: ~6.5 µs with procfs's fd iterator, which also silently skips fds it cannot
//! read). A whole full scan, details included, is ~5 µs per fd in a debug build.
//! `stat` and `status` are parsed by hand: we need three fields of the one and two lines
//! of the other, read into a reused buffer, while procfs's parsers allocate a full struct
//! (and a map of every `status` line) per call.

use super::connects::Connect;
use super::fd_iter::{FdIter, SocketFd};
use crate::event::JsonCache;
use crate::fast_hash::{FxMap, FxSet};
use crate::monitor::{self, METRICS};
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Details of one process, read once and shared by every socket it owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessInfo {
    pub pid: u32,
    /// Short name (the kernel's `comm`), never empty for a known process.
    pub binary: String,
    /// Path of the executable (`/proc/PID/exe`), empty when unreadable.
    pub exe: String,
    /// Arguments joined by spaces; absent when hidden by configuration or for kernel threads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// `NAME=value` entries, only when `expose_environ` is on (and in the allow-list if set).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub environ: Vec<String>,
    /// User name of the real uid (the number when it has no name).
    pub user: String,
    pub ppid: u32,
    /// The pid inside the process's own pid namespace, when it differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<u32>,
    /// This object's JSON, written once for every event of the process.
    #[serde(skip)]
    pub json: JsonCache,
}

impl ProcessInfo {
    /// These details as JSON, rendered on first use.
    pub fn json(&self) -> &RawValue {
        self.json.get_or_render(self)
    }
}

/// `serialize_with` for an event's process: its cached JSON.
pub fn serialize_cached<S: serde::Serializer>(
    p: &Option<Arc<ProcessInfo>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match p {
        Some(p) => p.json().serialize(s),
        None => s.serialize_none(),
    }
}

/// What the index reads and how much it may keep.
#[derive(Debug, Clone)]
pub struct ProcOptions {
    pub proc_root: PathBuf,
    pub expose_cmdline: bool,
    pub expose_environ: bool,
    pub environ_allowlist: Vec<String>,
    /// Bound on the processes tracked (with or without sockets); 0 = no bound.
    pub max_processes: usize,
    /// At most one full scan per interval; also the period of the exit sweep and of
    /// retrying given-up inodes.
    pub rescan_interval: Duration,
}

impl Default for ProcOptions {
    fn default() -> Self {
        ProcOptions {
            proc_root: PathBuf::from("/proc"),
            expose_cmdline: true,
            expose_environ: false,
            environ_allowlist: Vec::new(),
            max_processes: 65_536,
            rescan_interval: Duration::from_secs(30),
        }
    }
}

/// What the index did since it was created (counters) and holds now (gauges).
///
/// The same events also go to the global `procs.*` counters; these are per index, so
/// tests and benchmarks can check them without interference.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Calls to [`ProcIndex::refresh`].
    pub refreshes: u64,
    /// Refreshes that found every wanted inode indexed and touched nothing in /proc.
    pub quiet_refreshes: u64,
    /// Listings of `proc_root`.
    pub listings: u64,
    /// Refreshes that read fds without a full scan.
    pub partial_scans: u64,
    /// Refreshes that scanned every process's fds.
    pub full_scans: u64,
    /// Processes whose sockets were looked for (fd directories read, or looked up in a
    /// walk).
    pub processes_scanned: u64,
    /// fd links read.
    pub fds_read: u64,
    /// Walks of every process's file table by the BPF iterator (instead of fd links).
    pub fd_walks: u64,
    /// /proc entries that could not be read (process gone, permission, vanished fd).
    pub read_errors: u64,
    /// Pids seen for the first time.
    pub new_processes: u64,
    /// Pids found reused by another process (start time changed).
    pub reused_pids: u64,
    /// Processes forgotten because they exited.
    pub exited: u64,
    /// Processes forgotten because `max_processes` was reached.
    pub evicted: u64,
    /// Times a process's details were read.
    pub details_read: u64,
    /// Wanted inodes that a full scan did not find.
    pub given_up: u64,
    /// Gauge: processes tracked.
    pub processes: u64,
    /// Gauge: processes whose details are cached.
    pub cached: u64,
    /// Gauge: socket inodes indexed.
    pub inodes: u64,
    /// Whether `stat(/proc/PID/fd).st_size` counts fds on this kernel (None: not known yet;
    /// learnt from fd links read, so never with the walk).
    pub fd_count_from_stat: Option<bool>,
}

/// One tracked process.
#[derive(Debug)]
struct Proc {
    /// Field 22 of /proc/PID/stat: with the pid, the identity of the process.
    start_time: u64,
    /// `st_ino` of /proc/PID/fd when last checked; changes when the pid is reused.
    fd_dir_ino: u64,
    /// `st_size` of /proc/PID/fd at the last fd scan.
    fd_count: u64,
    /// `st_size` of /proc/PID/fd at the last check (becomes `fd_count` when scanned).
    fd_count_now: u64,
    /// Socket inodes found by the last fd scan, sorted.
    inodes: Vec<u64>,
    info: Option<Arc<ProcessInfo>>,
    /// Generation of the last listing that showed this pid.
    seen: u64,
    /// Generation of the last fd-dir check.
    checked: u64,
    /// Generation of the last fd scan (0: never).
    scanned: u64,
}

/// Fields of /proc/PID/stat that we use.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stat {
    comm: String,
    ppid: u32,
    start_time: u64,
}

/// What one `stat()` of a known process's fd directory says.
enum Check {
    Gone,
    Reused,
    Rescan,
    Same,
}

/// Socket inode → owning pid(s). Nearly every socket has one holder, so the extra holders
/// of shared sockets live in a side map and cost nothing otherwise.
#[derive(Debug, Default)]
struct InodeMap {
    first: FxMap<u64, u32>,
    more: FxMap<u64, Vec<u32>>,
}

impl InodeMap {
    fn get(&self, inode: u64) -> Option<u32> {
        self.first.get(&inode).copied()
    }

    fn contains(&self, inode: u64) -> bool {
        self.first.contains_key(&inode)
    }

    fn len(&self) -> usize {
        self.first.len()
    }

    /// Adds a holder. The lowest pid is the one reported: usually the parent of the
    /// others (forked workers sharing a listener), whatever order the scans went in.
    fn add(&mut self, inode: u64, pid: u32) {
        let first = self.first.entry(inode).or_insert(pid);
        if *first == pid {
            return;
        }
        let other = if pid < *first {
            std::mem::replace(first, pid)
        } else {
            pid
        };
        let more = self.more.entry(inode).or_default();
        if !more.contains(&other) {
            more.push(other);
        }
    }

    fn remove(&mut self, inode: u64, pid: u32) {
        if self.first.get(&inode) == Some(&pid) {
            match self.more.get_mut(&inode) {
                Some(more) => {
                    let lowest = (0..more.len()).min_by_key(|&i| more[i]).unwrap_or(0);
                    let next = more.swap_remove(lowest);
                    if more.is_empty() {
                        self.more.remove(&inode);
                    }
                    self.first.insert(inode, next);
                }
                None => {
                    self.first.remove(&inode);
                }
            }
        } else if let Some(more) = self.more.get_mut(&inode) {
            more.retain(|&p| p != pid);
            if more.is_empty() {
                self.more.remove(&inode);
            }
        }
    }
}

/// Builds `<proc_root>/<pid>/<leaf>` in one reused buffer.
#[derive(Debug)]
struct Paths {
    buf: Vec<u8>,
    root_len: usize,
}

impl Paths {
    fn new(root: &Path) -> Paths {
        let mut buf = root.as_os_str().as_bytes().to_vec();
        while buf.len() > 1 && buf.ends_with(b"/") {
            buf.pop();
        }
        let root_len = buf.len();
        Paths { buf, root_len }
    }

    fn root(&mut self) -> &Path {
        self.buf.truncate(self.root_len);
        Path::new(OsStr::from_bytes(&self.buf))
    }

    fn get(&mut self, pid: u32, leaf: &str) -> &Path {
        self.buf.truncate(self.root_len);
        self.buf.push(b'/');
        push_u32(&mut self.buf, pid);
        if !leaf.is_empty() {
            self.buf.push(b'/');
            self.buf.extend_from_slice(leaf.as_bytes());
        }
        Path::new(OsStr::from_bytes(&self.buf))
    }
}

fn push_u32(buf: &mut Vec<u8>, mut n: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

/// The inode → process index. See the module documentation for how it refreshes.
pub struct ProcIndex {
    opts: ProcOptions,
    procs: FxMap<u32, Proc>,
    inodes: InodeMap,
    /// Real uid → user name.
    users: HashMap<u32, String>,
    /// Inodes a full scan did not find, and when.
    given_up: HashMap<u64, Instant>,
    last_full: Option<Instant>,
    last_listing: Option<Instant>,
    generation: u64,
    stats: ScanStats,
    warned_listing: bool,
    warned_evicting: bool,
    warned_denied: bool,
    /// The BPF iterator, when it loaded: fd scans then read its walk, not /proc links.
    fd_iter: Option<FdIter>,
    /// Socket fds of every process from the iterator's walk of this generation, by pid.
    walk: Vec<SocketFd>,
    walk_generation: u64,
    /// An fd count or start time was recorded after the last walk: the walk may predate
    /// what that count says, so the next scan walks again. (With fd links, the links are
    /// always read after the count.)
    stat_since_walk: bool,
    /// With the walk: new processes registered in this phase of a refresh, scanned once
    /// every check of the phase is done, so that one walk serves them all.
    pending: Vec<u32>,
    /// Whether the scans of the current phase read the walk (see [`ProcIndex::walk_pays`]).
    use_walk: bool,
    // Reused buffers.
    paths: Paths,
    buf: Vec<u8>,
    pids: Vec<u32>,
    new_pids: Vec<u32>,
    changed: Vec<u32>,
    found: Vec<u64>,
    missing: FxSet<u64>,
    /// Nanoseconds per clock tick (the unit of start times in /proc/PID/stat).
    ns_per_tick: u64,
}

impl ProcIndex {
    pub fn new(opts: ProcOptions) -> ProcIndex {
        let paths = Paths::new(&opts.proc_root);
        ProcIndex {
            opts,
            procs: FxMap::default(),
            inodes: InodeMap::default(),
            users: HashMap::new(),
            given_up: HashMap::new(),
            last_full: None,
            last_listing: None,
            generation: 0,
            stats: ScanStats::default(),
            warned_listing: false,
            warned_evicting: false,
            warned_denied: false,
            fd_iter: None,
            walk: Vec::new(),
            walk_generation: 0,
            stat_since_walk: false,
            pending: Vec::new(),
            use_walk: false,
            paths,
            buf: Vec::with_capacity(4096),
            pids: Vec::new(),
            new_pids: Vec::new(),
            changed: Vec::new(),
            found: Vec::new(),
            missing: FxSet::default(),
            ns_per_tick: ns_per_tick(),
        }
    }

    /// Finds sockets with the BPF iterator instead of /proc fd links. The caller checks
    /// [`FdIter::usable_for`] the index's `proc_root` first.
    pub fn with_fd_iter(mut self, fd_iter: FdIter) -> ProcIndex {
        self.fd_iter = Some(fd_iter);
        self
    }

    /// Whether fd scans read the BPF iterator's walk.
    pub fn uses_fd_iter(&self) -> bool {
        self.fd_iter.is_some()
    }

    /// Makes sure the inodes in `wanted` that belong to live processes are indexed,
    /// reading as little of /proc as it can. Never fails: what cannot be read is counted
    /// and stays unknown. Inode 0 (TIME_WAIT and orphaned sockets) is ignored.
    pub fn refresh(&mut self, wanted: &[u64]) {
        let started = Instant::now();
        let interval = self.opts.rescan_interval;
        self.stats.refreshes += 1;

        if !self.given_up.is_empty() {
            self.given_up
                .retain(|_, at| started.duration_since(*at) < interval);
        }
        self.missing.clear();
        for &inode in wanted {
            if inode != 0 && !self.inodes.contains(inode) && !self.given_up.contains_key(&inode) {
                self.missing.insert(inode);
            }
        }
        let first = self.last_full.is_none();
        let sweep_due = self
            .last_listing
            .is_none_or(|t| started.duration_since(t) >= interval);
        if self.missing.is_empty() && !first && !sweep_due {
            self.stats.quiet_refreshes += 1;
            return;
        }

        self.generation += 1;
        if !self.list_pids() {
            return;
        }
        self.last_listing = Some(started);
        let before = self.stats;
        self.forget_exited();

        let wanted_missing = self.missing.len();
        let mut full = false;
        if first || !self.missing.is_empty() {
            // New pids first: every fd they hold is unknown.
            let new_pids = std::mem::take(&mut self.new_pids);
            for &pid in &new_pids {
                if !first && self.missing.is_empty() {
                    break;
                }
                self.scan_new(pid, None);
            }
            self.new_pids = new_pids;
            self.use_walk = self.walk_pays(&self.pending.clone());
            self.flush_pending();

            // Known pids: reused ones are scanned now, changed ones after.
            if first {
                full = true;
            } else if !self.missing.is_empty() {
                self.scan_known();
            }

            let full_due = self
                .last_full
                .is_none_or(|t| started.duration_since(t) >= interval);
            if !self.missing.is_empty() && !full && full_due {
                full = true;
                self.scan_rest();
            } else if !self.missing.is_empty() && !full && self.fd_iter.is_some() {
                // A socket that took the fd of a closed file leaves the fd count as it
                // was: one walk places every socket still missing, and what it cannot
                // place (kernel sockets, nobody's) waits for the rescan interval.
                self.place_by_walk();
                for &inode in &self.missing {
                    self.given_up.insert(inode, started);
                }
                self.stats.given_up += self.missing.len() as u64;
            }
            if full {
                self.last_full = Some(started);
                self.stats.full_scans += 1;
                monitor::inc(&METRICS.procs_full_scans);
                for &inode in &self.missing {
                    self.given_up.insert(inode, started);
                }
                self.stats.given_up += self.missing.len() as u64;
            } else if self.stats.processes_scanned != before.processes_scanned {
                self.stats.partial_scans += 1;
                monitor::inc(&METRICS.procs_scans);
            }
        }

        self.enforce_limit();
        self.update_gauges();
        self.walk.clear();
        let s = &self.stats;
        tracing::debug!(
            target: "procs",
            kind = if full { "full" } else if s.processes_scanned != before.processes_scanned { "partial" } else { "sweep" },
            listed = self.pids.len(),
            new = s.new_processes - before.new_processes,
            reused = s.reused_pids - before.reused_pids,
            exited = s.exited - before.exited,
            scanned = s.processes_scanned - before.processes_scanned,
            fds = s.fds_read - before.fds_read,
            errors = s.read_errors - before.read_errors,
            missing = wanted_missing,
            unresolved = self.missing.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "process scan"
        );
    }

    /// The process owning the socket inode, if known. (The attribution counters are the
    /// connection table's: it decides which attribution an event gets.)
    pub fn owner(&self, inode: u64) -> Option<Arc<ProcessInfo>> {
        let pid = self.inodes.get(inode)?;
        self.procs.get(&pid)?.info.clone()
    }

    /// The cached details of a process, if it holds a socket we indexed (no I/O).
    pub fn process(&self, pid: u32) -> Option<Arc<ProcessInfo>> {
        self.procs.get(&pid)?.info.clone()
    }

    /// The details of a live process, read now (and cached) when not cached yet; `None`
    /// when it does not exist (or exited).
    pub fn load_process(&mut self, pid: u32) -> Option<Arc<ProcessInfo>> {
        if let Some(info) = self.process(pid) {
            return Some(info);
        }
        let stat = self.read_stat(pid)?;
        let info = Arc::new(self.read_details(pid, &stat));
        self.cache_details(pid, &stat, &info);
        Some(info)
    }

    /// The details of the process a connect record names: read now when that process
    /// still runs (same pid, same start time), else what the kernel recorded (comm, uid,
    /// parent), never another process's that took the pid since.
    pub fn connector(&mut self, c: &Connect) -> Arc<ProcessInfo> {
        let ticks = c.start_ns / self.ns_per_tick;
        if let Some(p) = self.procs.get(&c.tgid)
            && p.start_time == ticks
            && let Some(info) = &p.info
        {
            return info.clone();
        }
        let stat = read_file(self.paths.get(c.tgid, "stat"), &mut self.buf)
            .ok()
            .and_then(|()| parse_stat(&self.buf));
        if let Some(stat) = stat
            && stat.start_time == ticks
        {
            let info = Arc::new(self.read_details(c.tgid, &stat));
            self.cache_details(c.tgid, &stat, &info);
            return info;
        }
        let binary = if c.comm.is_empty() {
            c.tgid.to_string()
        } else {
            c.comm.clone()
        };
        Arc::new(ProcessInfo {
            pid: c.tgid,
            binary,
            exe: String::new(),
            cmdline: None,
            environ: Vec::new(),
            user: self.user_name(c.uid),
            ppid: c.ppid,
            ns_pid: None,
            json: JsonCache::default(),
        })
    }

    /// Keeps details read outside a scan, for the process with `stat`'s start time (a
    /// tracked process of another start time is a previous holder of the pid: forgotten).
    fn cache_details(&mut self, pid: u32, stat: &Stat, info: &Arc<ProcessInfo>) {
        if self
            .procs
            .get(&pid)
            .is_some_and(|p| p.start_time != stat.start_time)
        {
            self.stats.reused_pids += 1;
            self.forget(pid);
        }
        let cur = self.generation;
        let entry = self.procs.entry(pid).or_insert_with(|| Proc {
            start_time: stat.start_time,
            // Never checked: the next refresh that looks at known pids rescans it.
            fd_dir_ino: 0,
            fd_count: 0,
            fd_count_now: 0,
            inodes: Vec::new(),
            info: None,
            seen: cur,
            checked: 0,
            scanned: 0,
        });
        entry.info = Some(info.clone());
        self.enforce_limit();
        self.update_gauges();
    }

    /// Counters and gauges of this index.
    pub fn stats(&self) -> ScanStats {
        self.stats
    }

    /// Lists the numeric entries of `proc_root` into `self.pids` (sorted) and marks the
    /// known ones seen; the unknown ones go to `self.new_pids`.
    fn list_pids(&mut self) -> bool {
        self.pids.clear();
        self.new_pids.clear();
        let dir = match fs::read_dir(self.paths.root()) {
            Ok(dir) => dir,
            Err(e) => {
                self.count_error();
                if !self.warned_listing {
                    self.warned_listing = true;
                    tracing::warn!(target: "procs", "cannot list {}: {e}; processes stay unknown", self.opts.proc_root.display());
                }
                return false;
            }
        };
        for entry in dir {
            let Ok(entry) = entry else {
                self.count_error();
                continue;
            };
            if let Some(pid) = parse_u64(entry.file_name().as_bytes())
                && let Ok(pid) = u32::try_from(pid)
            {
                self.pids.push(pid);
            }
        }
        self.warned_listing = false;
        self.stats.listings += 1;
        self.pids.sort_unstable();
        let cur = self.generation;
        for &pid in &self.pids {
            match self.procs.get_mut(&pid) {
                Some(p) => p.seen = cur,
                None => self.new_pids.push(pid),
            }
        }
        true
    }

    /// Forgets the processes the last listing did not show.
    fn forget_exited(&mut self) {
        let cur = self.generation;
        let inodes = &mut self.inodes;
        let mut exited = 0;
        self.procs.retain(|&pid, p| {
            if p.seen == cur {
                return true;
            }
            for &inode in &p.inodes {
                inodes.remove(inode, pid);
            }
            exited += 1;
            false
        });
        self.stats.exited += exited;
    }

    /// Forgets one process and its inodes.
    fn forget(&mut self, pid: u32) {
        if let Some(p) = self.procs.remove(&pid) {
            for &inode in &p.inodes {
                self.inodes.remove(inode, pid);
            }
        }
    }

    /// Checks every known pid not checked yet in this generation: reused pids are scanned
    /// at once, then the ones whose fd count changed.
    fn scan_known(&mut self) {
        let cur = self.generation;
        self.changed.clear();
        let pids = std::mem::take(&mut self.pids);
        for &pid in &pids {
            if self.missing.is_empty() {
                break;
            }
            if self.procs.get(&pid).is_none_or(|p| p.checked == cur) {
                continue;
            }
            match self.check(pid) {
                Check::Gone => {
                    self.stats.exited += 1;
                    self.forget(pid);
                }
                Check::Reused => {
                    self.stats.reused_pids += 1;
                    self.forget(pid);
                    self.scan_new(pid, None);
                }
                Check::Rescan => self.changed.push(pid),
                Check::Same => {}
            }
        }
        self.pids = pids;
        let changed = std::mem::take(&mut self.changed);
        let phase: Vec<u32> = self.pending.iter().chain(&changed).copied().collect();
        self.use_walk = self.walk_pays(&phase);
        self.flush_pending();
        for &pid in &changed {
            if self.missing.is_empty() {
                break;
            }
            self.scan_fds(pid);
        }
        self.changed = changed;
    }

    /// The full scan: every listed pid not scanned in this generation. Every check comes
    /// first, then the scans (with the walk, one walk after all the counts it must cover).
    fn scan_rest(&mut self) {
        let cur = self.generation;
        let pids = std::mem::take(&mut self.pids);
        self.changed.clear();
        for &pid in &pids {
            let Some(p) = self.procs.get(&pid) else {
                // Listed but not tracked: gone during this refresh, or evicted.
                continue;
            };
            if p.scanned == cur {
                continue;
            }
            let check = if p.checked == cur {
                Check::Same
            } else {
                self.check(pid)
            };
            match check {
                Check::Gone => {
                    self.stats.exited += 1;
                    self.forget(pid);
                }
                Check::Reused => {
                    self.stats.reused_pids += 1;
                    self.forget(pid);
                    self.scan_new(pid, None);
                }
                Check::Rescan | Check::Same => self.changed.push(pid),
            }
        }
        self.pids = pids;
        self.use_walk = self.fd_iter.is_some();
        self.flush_pending();
        let todo = std::mem::take(&mut self.changed);
        for &pid in &todo {
            if self.procs.get(&pid).is_some_and(|p| p.scanned != cur) {
                self.scan_fds(pid);
            }
        }
        self.changed = todo;
    }

    /// One `stat()` of a known process's fd directory (see the module documentation).
    fn check(&mut self, pid: u32) -> Check {
        let cur = self.generation;
        let (ino, size) = match fs::metadata(self.paths.get(pid, "fd")) {
            Ok(m) => (m.ino(), m.size()),
            Err(e) => {
                self.count_error();
                return if gone(&e) { Check::Gone } else { Check::Same };
            }
        };
        let Some(p) = self.procs.get_mut(&pid) else {
            return Check::Gone;
        };
        p.checked = cur;
        p.fd_count_now = size;
        self.stat_since_walk = true;
        if p.fd_dir_ino != ino {
            let old_start = p.start_time;
            let Some(stat) = self.read_stat(pid) else {
                return Check::Gone;
            };
            if stat.start_time != old_start {
                return Check::Reused;
            }
            if let Some(p) = self.procs.get_mut(&pid) {
                p.fd_dir_ino = ino;
            }
            Check::Rescan
        } else if size != p.fd_count {
            Check::Rescan
        } else {
            Check::Same
        }
    }

    /// Starts tracking a pid not tracked yet and scans its fds (with the walk, at the end
    /// of the phase: [`ProcIndex::flush_pending`]).
    fn scan_new(&mut self, pid: u32, stat: Option<Stat>) {
        let stat = match stat {
            Some(s) => s,
            None => match self.read_stat(pid) {
                Some(s) => s,
                None => return,
            },
        };
        let (ino, size) = match fs::metadata(self.paths.get(pid, "fd")) {
            Ok(m) => (m.ino(), m.size()),
            Err(_) => {
                self.count_error();
                return;
            }
        };
        let cur = self.generation;
        self.stats.new_processes += 1;
        self.procs.insert(
            pid,
            Proc {
                start_time: stat.start_time,
                fd_dir_ino: ino,
                fd_count: 0,
                fd_count_now: size,
                inodes: Vec::new(),
                info: None,
                seen: cur,
                checked: cur,
                scanned: 0,
            },
        );
        self.stat_since_walk = true;
        if self.fd_iter.is_some() {
            self.pending.push(pid);
        } else {
            self.scan_fds_with(pid, Some(stat));
        }
    }

    /// Whether one walk is cheaper than reading the fd links of `pids`: a walk costs
    /// ~0.65 µs per socket on the host, a link ~2.5-5 µs (measured here), so links win
    /// while the processes to scan hold fewer fds than a quarter of the indexed sockets
    /// (a new short-lived process among thousands of sockets). The first refresh, with
    /// nothing indexed, always walks.
    fn walk_pays(&self, pids: &[u32]) -> bool {
        if self.fd_iter.is_none() {
            return false;
        }
        let mut fds = 0u64;
        for p in pids.iter().filter_map(|pid| self.procs.get(pid)) {
            if p.fd_count_now == 0 {
                // Before Linux 6.2, stat() of /proc/PID/fd gives no count: unknown, maybe
                // many.
                return true;
            }
            fds += p.fd_count_now;
        }
        fds.saturating_mul(4) >= self.inodes.len() as u64
    }

    /// Scans the new processes registered since the last call (see `pending`), the way
    /// `use_walk` (set by the caller for the whole phase) says. Reading links, it stops
    /// once nothing is missing, as scanning at once would have: the others, never scanned,
    /// are looked at again when something is missing. Their `stat` is read again after
    /// their sockets are found, so that a pid reused meanwhile is noticed.
    fn flush_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for pid in pending {
            if !self.use_walk && self.missing.is_empty() {
                break;
            }
            if self.procs.contains_key(&pid) {
                self.scan_fds_with(pid, None);
            }
        }
    }

    fn scan_fds(&mut self, pid: u32) {
        self.scan_fds_with(pid, None);
    }

    /// Finds the sockets of a tracked process (from the walk, or by reading its fd links),
    /// replaces its inode set, and reads its details if it holds sockets and they are not
    /// cached (or it exec'd since).
    fn scan_fds_with(&mut self, pid: u32, stat: Option<Stat>) {
        let cur = self.generation;
        self.found.clear();
        let links_read = if self.use_walk && self.walk_socket_fds(pid) {
            0
        } else {
            match self.read_fd_links(pid) {
                Some(fds) => fds,
                None => return,
            }
        };

        // A listed pid that exited can be reused by a thread of another process before we
        // get here, and /proc/TID/fd answers too, with that process's files: only a
        // thread-group leader may own what it shows.
        if !self.found.is_empty() && !self.is_group_leader(pid) {
            self.found.clear();
            self.forget(pid);
            return;
        }
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        p.scanned = cur;
        p.fd_count = p.fd_count_now;
        if self.stats.fd_count_from_stat.is_none() && links_read > 3 {
            let works = p.fd_count_now != 0;
            self.stats.fd_count_from_stat = Some(works);
            if !works {
                tracing::debug!(target: "procs", "stat() of /proc/PID/fd gives no fd count on this kernel: only new pids and full scans find new sockets");
            }
        }
        self.found.sort_unstable();
        self.found.dedup();
        std::mem::swap(&mut self.found, &mut p.inodes);
        // Now `found` holds the previous set: drop what is gone, add what is new.
        let (old, new) = (&self.found, &p.inodes);
        let (mut i, mut j) = (0, 0);
        while i < old.len() || j < new.len() {
            if j == new.len() || (i < old.len() && old[i] < new[j]) {
                self.inodes.remove(old[i], pid);
                i += 1;
            } else if i == old.len() || new[j] < old[i] {
                self.inodes.add(new[j], pid);
                self.missing.remove(&new[j]);
                j += 1;
            } else {
                i += 1;
                j += 1;
            }
        }
        if p.inodes.is_empty() {
            return;
        }
        let cached = p.info.clone();
        let stat = match stat {
            Some(s) => s,
            None => match self.read_stat(pid) {
                Some(s) => s,
                None => {
                    self.forget(pid);
                    return;
                }
            },
        };
        let fresh = match &cached {
            None => true,
            // exec changes comm; a pid reused between our listing and now changes the start.
            Some(info) => info.binary != stat.comm && !stat.comm.is_empty(),
        };
        let Some(p) = self.procs.get(&pid) else {
            return;
        };
        if p.start_time != stat.start_time {
            // Reused under our feet: the fds we just read may belong to either process.
            self.stats.reused_pids += 1;
            self.forget(pid);
            return;
        }
        if fresh {
            let info = Arc::new(self.read_details(pid, &stat));
            if let Some(p) = self.procs.get_mut(&pid) {
                p.info = Some(info);
            }
        }
    }

    /// Scans the processes that the walk shows holding a missing inode, whatever their fd
    /// count did.
    fn place_by_walk(&mut self) {
        if !self.ensure_walk() {
            return;
        }
        self.use_walk = true;
        let mut holders: Vec<u32> = self
            .walk
            .iter()
            .filter(|s| self.missing.contains(&s.inode))
            .map(|s| s.pid)
            .collect();
        holders.dedup();
        for pid in holders {
            if self.procs.contains_key(&pid) {
                self.scan_fds(pid);
            } else {
                self.scan_new(pid, None);
            }
        }
        self.flush_pending();
    }

    /// The socket inodes of `pid` from the BPF iterator's walk into `self.found`: one walk
    /// per refresh, taken on first use, and again if a count was recorded since. False when the walk failed: the iterator is then
    /// dropped for good, with a warning, and fd links are read instead.
    fn walk_socket_fds(&mut self, pid: u32) -> bool {
        if !self.ensure_walk() {
            return false;
        }
        let from = self.walk.partition_point(|s| s.pid < pid);
        let to = from + self.walk[from..].partition_point(|s| s.pid == pid);
        self.found
            .extend(self.walk[from..to].iter().map(|s| s.inode));
        self.stats.processes_scanned += 1;
        true
    }

    /// Takes the walk of this refresh unless it is taken and still current (see
    /// `stat_since_walk`); false when the iterator failed (it is then dropped).
    fn ensure_walk(&mut self) -> bool {
        if self.walk_generation != self.generation || self.stat_since_walk {
            let Some(it) = self.fd_iter.as_mut() else {
                return false;
            };
            if let Err(e) = it.read_all(&mut self.walk) {
                self.count_error();
                tracing::warn!(target: "procs", "the BPF iterator failed ({e}): socket owners are read from {}/PID/fd from now on", self.opts.proc_root.display());
                self.fd_iter = None;
                self.walk.clear();
                return false;
            }
            // Tasks come in thread-id order: a thread with a file table of its own
            // (unshare(CLONE_FILES)) is reported under its process's id, out of order.
            if !self.walk.is_sorted_by_key(|s| s.pid) {
                self.walk.sort_unstable_by_key(|s| s.pid);
            }
            self.walk_generation = self.generation;
            self.stat_since_walk = false;
            self.stats.fd_walks += 1;
            monitor::inc(&METRICS.procs_fd_walks);
        }
        true
    }

    /// Reads the fd links of `pid` into `self.found`; the number of fds, or `None` when
    /// the directory could not be read (the process is forgotten if it is gone).
    fn read_fd_links(&mut self, pid: u32) -> Option<u64> {
        let cur = self.generation;
        let path = self.paths.get(pid, "fd");
        let opened = File::open(path).and_then(|f| Ok((fs::read_dir(path)?, f)));
        let (dir, dir_fd) = match opened {
            Ok(d) => d,
            Err(e) => {
                self.count_error();
                if gone(&e) {
                    self.forget(pid);
                } else {
                    self.warn_denied(pid, &e);
                }
                if let Some(p) = self.procs.get_mut(&pid) {
                    // Unreadable (EACCES): do not retry until its fd count changes.
                    p.scanned = cur;
                    p.fd_count = p.fd_count_now;
                }
                return None;
            }
        };
        self.stats.processes_scanned += 1;
        let mut fds = 0u64;
        let mut errors = 0u64;
        let mut link = [0u8; 64];
        let mut denied = None;
        for entry in dir {
            let entry = match entry {
                Ok(entry) => entry,
                Err(_) => {
                    // The process exited while we read its directory.
                    errors += 1;
                    break;
                }
            };
            fds += 1;
            match readlinkat(&dir_fd, entry.file_name().as_bytes(), &mut link) {
                Ok(target) => {
                    if let Some(inode) = socket_inode(target) {
                        self.found.push(inode);
                    }
                }
                // Links of a process we may not inspect: one error for the process, not
                // one per fd.
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    errors += 1;
                    denied = Some(e);
                    break;
                }
                // The fd was closed between the listing and the read.
                Err(_) => errors += 1,
            }
        }
        if let Some(e) = denied {
            self.warn_denied(pid, &e);
        }
        self.stats.fds_read += fds;
        monitor::add(&METRICS.procs_fds_read, fds);
        if errors > 0 {
            self.stats.read_errors += errors;
            monitor::add(&METRICS.procs_read_errors, errors);
        }
        Some(fds)
    }

    /// Reads and parses /proc/PID/stat; `None` (counted) when unreadable.
    fn read_stat(&mut self, pid: u32) -> Option<Stat> {
        if read_file(self.paths.get(pid, "stat"), &mut self.buf).is_err() {
            self.count_error();
            return None;
        }
        let stat = parse_stat(&self.buf);
        if stat.is_none() {
            self.count_error();
        }
        stat
    }

    /// Whether `pid` is a process (thread-group leader), not a thread of another one.
    fn is_group_leader(&mut self, pid: u32) -> bool {
        if read_file(self.paths.get(pid, "status"), &mut self.buf).is_err() {
            return false;
        }
        let tgid = self.buf.split(|&c| c == b'\n').find_map(|l| {
            let rest = l.strip_prefix(b"Tgid:")?;
            let digits: Vec<u8> = rest.iter().copied().filter(u8::is_ascii_digit).collect();
            parse_u64(&digits)
        });
        tgid == Some(u64::from(pid))
    }

    /// Reads what [`ProcessInfo`] needs beyond `stat`. Never fails: what cannot be read
    /// is left empty (and counted).
    fn read_details(&mut self, pid: u32, stat: &Stat) -> ProcessInfo {
        self.stats.details_read += 1;
        let (uid, ns_pid) = match read_file(self.paths.get(pid, "status"), &mut self.buf) {
            Ok(()) => parse_status(&self.buf),
            Err(_) => {
                self.count_error();
                (None, None)
            }
        };
        let user = match uid {
            Some(uid) => self.user_name(uid),
            None => String::new(),
        };
        let exe = match fs::read_link(self.paths.get(pid, "exe")) {
            Ok(p) => p.to_string_lossy().into_owned(),
            // Kernel threads have no exe; other processes' need ptrace rights.
            Err(_) => String::new(),
        };
        let cmdline = if self.opts.expose_cmdline {
            match read_file(self.paths.get(pid, "cmdline"), &mut self.buf) {
                Ok(()) => join_cmdline(&self.buf),
                Err(_) => {
                    self.count_error();
                    None
                }
            }
        } else {
            None
        };
        let environ = if self.opts.expose_environ {
            match read_file(self.paths.get(pid, "environ"), &mut self.buf) {
                Ok(()) => filter_environ(&self.buf, &self.opts.environ_allowlist),
                Err(_) => {
                    self.count_error();
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
        let binary = if !stat.comm.is_empty() {
            stat.comm.clone()
        } else {
            // comm can be emptied with prctl(PR_SET_NAME); never report an empty name.
            match exe.rsplit('/').next() {
                Some(base) if !base.is_empty() => base.to_string(),
                _ => pid.to_string(),
            }
        };
        ProcessInfo {
            pid,
            binary,
            exe,
            cmdline,
            environ,
            user,
            ppid: stat.ppid,
            ns_pid: ns_pid.filter(|&n| n != pid),
            json: JsonCache::default(),
        }
    }

    fn user_name(&mut self, uid: u32) -> String {
        self.users
            .entry(uid)
            .or_insert_with(
                || match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
                    Ok(Some(user)) => user.name,
                    _ => uid.to_string(),
                },
            )
            .clone()
    }

    /// Evicts processes beyond `max_processes`: the ones without sockets first, then the
    /// ones scanned longest ago.
    fn enforce_limit(&mut self) {
        let max = self.opts.max_processes;
        if max == 0 || self.procs.len() <= max {
            return;
        }
        let excess = self.procs.len() - max;
        let mut order: Vec<(bool, u64, u32)> = self
            .procs
            .iter()
            .map(|(&pid, p)| (!p.inodes.is_empty(), p.scanned, pid))
            .collect();
        order.select_nth_unstable(excess - 1);
        for &(_, _, pid) in &order[..excess] {
            self.forget(pid);
        }
        self.stats.evicted += excess as u64;
        monitor::add(&METRICS.procs_evicted, excess as u64);
        if !self.warned_evicting {
            self.warned_evicting = true;
            tracing::warn!(target: "procs", "more than {max} processes: evicted {excess} from the process cache (counted in procs.evicted); evicted processes are rescanned when seen again");
        } else {
            tracing::debug!(target: "procs", "evicted {excess} processes");
        }
    }

    fn update_gauges(&mut self) {
        let cached = self.procs.values().filter(|p| p.info.is_some()).count() as u64;
        self.stats.processes = self.procs.len() as u64;
        self.stats.cached = cached;
        self.stats.inodes = self.inodes.len() as u64;
        monitor::set(&METRICS.procs_cached, cached);
    }

    /// Says once, as a warning, that some processes' open files cannot be read and what
    /// that needs; later cases are counted in `procs.read_errors`.
    fn warn_denied(&mut self, pid: u32, e: &io::Error) {
        if e.kind() != io::ErrorKind::PermissionDenied {
            return;
        }
        if !self.warned_denied {
            self.warned_denied = true;
            const CAP_SYS_PTRACE: u32 = 19;
            let why = if super::diag::has_capability(CAP_SYS_PTRACE) {
                "the process is protected from inspection even with CAP_SYS_PTRACE \
                 (a security module, or a process of another user namespace)"
            } else {
                "reading other processes' /proc/PID/fd needs CAP_SYS_PTRACE \
                 (and CAP_DAC_READ_SEARCH for other users)"
            };
            tracing::warn!(target: "procs",
                "cannot read the open files of process {pid} ({e}): its sockets get attribution none; \
                 {why}. Further cases are counted in procs.read_errors");
        } else {
            tracing::debug!(target: "procs", "cannot read the open files of process {pid}: {e}");
        }
    }

    fn count_error(&mut self) {
        self.stats.read_errors += 1;
        monitor::inc(&METRICS.procs_read_errors);
    }
}

/// Nanoseconds per `USER_HZ` clock tick.
fn ns_per_tick() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1_000_000_000 / u64::try_from(hz).ok().filter(|&h| h > 0).unwrap_or(100)
}

/// Whether a /proc read failed because the process is gone.
fn gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ESRCH))
}

/// Reads a whole (small) file into `buf`.
fn read_file(path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    File::open(path)?.read_to_end(buf)?;
    Ok(())
}

/// `readlinkat(dir, name)` into `buf`, without allocating. A target longer than `buf` is
/// cut, which is fine: socket targets (`socket:[N]`) are at most 29 bytes.
fn readlinkat<'b>(dir: &File, name: &[u8], buf: &'b mut [u8]) -> io::Result<&'b [u8]> {
    // fd names are decimal numbers; anything else is not an fd.
    let mut cname = [0u8; 24];
    if name.is_empty() || name.len() >= cname.len() || name.contains(&0) {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    cname[..name.len()].copy_from_slice(name);
    // SAFETY: `cname` is NUL-terminated (zeroed past `name`), `buf` is valid for writes of
    // `buf.len()` bytes, and `dir` is an open directory for the whole call.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            cname.as_ptr().cast(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(&buf[..n as usize])
}

/// Decimal digits only, no sign, no overflow.
fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(n)
}

/// `socket:[12345]` → 12345.
fn socket_inode(link: &[u8]) -> Option<u64> {
    parse_u64(link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?)
}

/// comm, ppid (field 4) and start time (field 22) of /proc/PID/stat. comm is between the
/// first `(` and the last `)`: it may itself contain spaces and parentheses.
fn parse_stat(b: &[u8]) -> Option<Stat> {
    let open = b.iter().position(|&c| c == b'(')?;
    let close = b.iter().rposition(|&c| c == b')')?;
    if close < open {
        return None;
    }
    let comm = String::from_utf8_lossy(&b[open + 1..close]).into_owned();
    let mut fields = b[close + 1..]
        .split(|c| c.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    let _state = fields.next()?; // field 3
    let ppid = u32::try_from(parse_u64(fields.next()?)?).ok()?; // field 4
    let start_time = parse_u64(fields.nth(17)?)?; // field 22
    Some(Stat {
        comm,
        ppid,
        start_time,
    })
}

/// Real uid (first value of `Uid:`) and innermost pid (last value of `NSpid:`).
fn parse_status(b: &[u8]) -> (Option<u32>, Option<u32>) {
    let mut uid = None;
    let mut ns_pid = None;
    for line in b.split(|&c| c == b'\n') {
        let values = |prefix: &[u8]| {
            line.strip_prefix(prefix).map(|rest| {
                rest.split(|c| c.is_ascii_whitespace())
                    .filter(|f| !f.is_empty())
                    .filter_map(|f| parse_u64(f).and_then(|n| u32::try_from(n).ok()))
            })
        };
        if let Some(mut v) = values(b"Uid:") {
            uid = v.next();
        } else if let Some(mut v) = values(b"NSpid:") {
            ns_pid = v.next_back();
        }
    }
    (uid, ns_pid)
}

/// NUL-separated arguments joined by spaces; `None` when empty (kernel threads, zombies).
fn join_cmdline(b: &[u8]) -> Option<String> {
    // Processes that rewrite their title may pad with NULs.
    let end = b.iter().rposition(|&c| c != 0)? + 1;
    let joined: Vec<u8> = b[..end]
        .iter()
        .map(|&c| if c == 0 { b' ' } else { c })
        .collect();
    Some(match String::from_utf8(joined) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// `NAME=value` entries, only the allowed names when the allow-list is not empty.
fn filter_environ(b: &[u8], allow: &[String]) -> Vec<String> {
    b.split(|&c| c == 0)
        .filter(|e| !e.is_empty())
        .filter(|e| {
            if allow.is_empty() {
                return true;
            }
            let name = e.split(|&c| c == b'=').next().unwrap_or(e);
            allow.iter().any(|a| a.as_bytes() == name)
        })
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::os::fd::OwnedFd;
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// An inode no socket has.
    const NO_SUCH_INODE: u64 = u64::MAX - 7;

    fn opts() -> ProcOptions {
        ProcOptions {
            rescan_interval: Duration::from_secs(3600),
            ..ProcOptions::default()
        }
    }

    /// Kills and reaps the child when the test ends, passed or not.
    struct Kid(Child);

    impl Kid {
        fn pid(&self) -> u32 {
            self.0.id()
        }
        fn stop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    impl Drop for Kid {
        fn drop(&mut self) {
            self.stop();
        }
    }

    fn inode_of(fd: &impl AsRawFd) -> u64 {
        fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .unwrap()
            .ino()
    }

    /// A listening socket and its inode.
    fn socket() -> (TcpListener, u64) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let ino = inode_of(&l);
        (l, ino)
    }

    /// Serializes the spawns of these tests: a child forked by one test holds copies of
    /// every fd of the test process until it execs, sockets another test is passing to
    /// its own child included.
    static SPAWN: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn spawn_lock() -> std::sync::MutexGuard<'static, ()> {
        SPAWN.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spawn(cmd: &mut Command) -> Kid {
        let _g = spawn_lock();
        Kid(cmd.spawn().unwrap())
    }

    /// `spawn()` can return before the kernel finished `exec` (glibc's posix_spawn resumes
    /// the parent when the new memory map is in place, before comm and the arguments are):
    /// wait until the child shows its arguments.
    fn wait_exec(pid: u32) {
        let start = Instant::now();
        while fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.is_empty())
            && start.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// `sleep 60` holding a socket as its stdin (and nobody else holding it); returns the
    /// child and the socket's inode.
    fn sleeper(cmd: &mut Command) -> (Kid, u64) {
        let _g = spawn_lock();
        let (l, ino) = socket();
        let child = cmd
            .stdin(Stdio::from(OwnedFd::from(l)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The command keeps its stdin until dropped or replaced: the child must be the
        // only holder.
        cmd.stdin(Stdio::null());
        wait_exec(child.id());
        (Kid(child), ino)
    }

    fn sleep_cmd() -> Command {
        let mut c = Command::new("sleep");
        c.arg("60");
        c
    }

    fn python() -> &'static str {
        if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        }
    }

    fn my_comm() -> String {
        fs::read_to_string("/proc/self/comm")
            .unwrap()
            .trim_end()
            .to_string()
    }

    #[test]
    fn own_socket_maps_to_this_process() {
        let (_l, ino) = socket();
        let mut idx = ProcIndex::new(opts());
        idx.refresh(&[ino]);
        let info = idx.owner(ino).expect("own socket attributed");
        assert_eq!(info.pid, std::process::id());
        assert_eq!(info.binary, my_comm());
        assert!(!info.exe.is_empty());
        let s = idx.stats();
        assert_eq!(s.full_scans, 1);
        assert!(s.fds_read > 0 && s.processes_scanned > 0);
        assert!(s.cached >= 1 && s.inodes >= 1);
        // This kernel reports the fd count in st_size (checked on 6.18).
        assert_eq!(s.fd_count_from_stat, Some(true));
    }

    #[test]
    fn child_socket_maps_to_child_pid_and_details() {
        let (kid, ino) = sleeper(&mut sleep_cmd());
        let mut idx = ProcIndex::new(opts());
        idx.refresh(&[ino]);
        let info = idx.owner(ino).expect("child socket attributed");
        assert_eq!(info.pid, kid.pid());
        assert_eq!(info.binary, "sleep");
        assert!(info.exe.ends_with("sleep"), "exe {}", info.exe);
        assert_eq!(info.cmdline.as_deref(), Some("sleep 60"));
        assert_eq!(info.ppid, std::process::id());
        assert!(info.environ.is_empty(), "environ is off by default");
        assert_eq!(info.ns_pid, None);
        let uid = nix::unistd::getuid();
        let name = nix::unistd::User::from_uid(uid)
            .unwrap()
            .map_or(uid.to_string(), |u| u.name);
        assert_eq!(info.user, name);
        assert_eq!(idx.process(kid.pid()), Some(info.clone()));
        // Serialized with the field names of the event contract.
        let json = serde_json::to_value(&*info).unwrap();
        assert_eq!(json["binary"], "sleep");
        assert!(json.get("ns_pid").is_none() && json.get("environ").is_none());
    }

    /// With the BPF iterator, fd scans read its walk instead of fd links: same owners,
    /// no link read, one walk per refresh that needs one.
    #[test]
    fn walk_of_the_bpf_iterator_finds_the_same_owner() {
        if !FdIter::usable_for(Path::new("/proc")) {
            eprintln!("SKIP: not in the host's pid namespace");
            return;
        }
        let it = match FdIter::load() {
            Ok(it) => it,
            Err(e) => {
                eprintln!("SKIP: BPF iterator unavailable: {e}");
                return;
            }
        };
        let (kid, ino) = sleeper(&mut sleep_cmd());
        let mut idx = ProcIndex::new(opts()).with_fd_iter(it);
        assert!(idx.uses_fd_iter());
        idx.refresh(&[ino]);
        let info = idx.owner(ino).expect("child socket attributed");
        assert_eq!(info.pid, kid.pid());
        assert_eq!(info.binary, "sleep");
        assert_eq!(info.cmdline.as_deref(), Some("sleep 60"));
        let st = idx.stats();
        assert_eq!(
            (st.fds_read, st.fd_walks, st.full_scans),
            (0, 1, 1),
            "{st:?}"
        );

        // A second child: found by the next refresh (by its few fd links or by a walk,
        // whichever is cheaper with the sockets the host has now), the first one still
        // known.
        let (kid2, ino2) = sleeper(&mut sleep_cmd());
        idx.refresh(&[ino, ino2]);
        assert_eq!(idx.owner(ino2).map(|i| i.pid), Some(kid2.pid()));
        assert_eq!(idx.owner(ino).map(|i| i.pid), Some(kid.pid()));
        let st = idx.stats();
        assert!(st.fd_walks == 2 || st.fds_read > 0, "{st:?}");
        // Nothing missing: nothing read at all.
        idx.refresh(&[ino, ino2]);
        assert_eq!(
            idx.stats(),
            ScanStats {
                refreshes: st.refreshes + 1,
                quiet_refreshes: st.quiet_refreshes + 1,
                ..st
            }
        );
    }

    /// Links for a few fds, one walk for many: the walk costs per socket on the host.
    #[test]
    fn walk_is_used_when_it_is_cheaper_than_the_links() {
        let Some(it) = loaded_fd_iter() else {
            eprintln!("SKIP: BPF iterator unavailable");
            return;
        };
        let mut idx = ProcIndex::new(opts()).with_fd_iter(it);
        let proc_with = |fds: u64| Proc {
            start_time: 1,
            fd_dir_ino: 1,
            fd_count: 0,
            fd_count_now: fds,
            inodes: Vec::new(),
            info: None,
            seen: 0,
            checked: 0,
            scanned: 0,
        };
        idx.procs.insert(10, proc_with(3));
        idx.procs.insert(11, proc_with(5_000));
        assert!(
            idx.walk_pays(&[10]),
            "nothing indexed yet: the first refresh walks"
        );
        for inode in 1..=20_000 {
            idx.inodes.add(inode, 11);
        }
        assert!(
            !idx.walk_pays(&[10]),
            "3 links against a walk of 20,000 sockets"
        );
        assert!(
            idx.walk_pays(&[10, 11]),
            "5,003 links against a walk of 20,000"
        );
        idx.procs.insert(12, proc_with(0));
        assert!(
            idx.walk_pays(&[10, 12]),
            "a count unknown (Linux < 6.2) may be many"
        );
        let plain = ProcIndex::new(opts());
        assert!(!plain.walk_pays(&[]), "no iterator, no walk");
    }

    /// A thread with a file table of its own comes out of the walk at its thread id's
    /// place, under this process's id: out of pid order. Its sockets are still found.
    #[test]
    fn walk_out_of_pid_order_still_finds_every_socket() {
        let Some(it) = loaded_fd_iter() else {
            eprintln!("SKIP: BPF iterator unavailable");
            return;
        };
        // A child so that a pid above ours has sockets too.
        let (kid, kid_ino) = sleeper(&mut sleep_cmd());
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // SAFETY: unshare(CLONE_FILES) gives this thread a private copy of the fd table.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_FILES) }, 0);
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            // /proc/self/fd is the process's table, not this thread's.
            let path = format!("/proc/thread-self/fd/{}", l.as_raw_fd());
            tx.send(fs::metadata(path).unwrap().ino()).unwrap();
            let _ = stop_rx.recv();
            drop(l);
        });
        let thread_ino = rx.recv().unwrap();
        let mut raw = Vec::new();
        FdIter::load().unwrap().read_all(&mut raw).unwrap();
        assert!(
            !raw.is_sorted_by_key(|s| s.pid),
            "the walk was expected out of pid order here"
        );
        let mut idx = ProcIndex::new(opts()).with_fd_iter(it);
        idx.refresh(&[kid_ino, thread_ino]);
        assert_eq!(idx.owner(kid_ino).map(|i| i.pid), Some(kid.pid()));
        assert_eq!(
            idx.owner(thread_ino).map(|i| i.pid),
            Some(std::process::id())
        );
        stop_tx.send(()).unwrap();
        thread.join().unwrap();
    }

    #[test]
    fn known_inodes_need_no_proc_io() {
        let (kid, ino) = sleeper(&mut sleep_cmd());
        let (_l, own) = socket();
        let mut idx = ProcIndex::new(opts());
        idx.refresh(&[ino, own, 0]);
        assert!(idx.owner(ino).is_some() && idx.owner(own).is_some());
        let before = idx.stats();
        for _ in 0..5 {
            idx.refresh(&[ino, own, 0]);
        }
        let after = idx.stats();
        assert_eq!(after.fds_read, before.fds_read);
        assert_eq!(after.processes_scanned, before.processes_scanned);
        assert_eq!(after.listings, before.listings);
        assert_eq!(after.read_errors, before.read_errors);
        assert_eq!(after.quiet_refreshes, before.quiet_refreshes + 5);
        assert_eq!(idx.owner(ino).unwrap().pid, kid.pid());
    }

    #[test]
    fn new_socket_in_existing_process_found_without_full_scan() {
        new_socket_in_existing_process(None);
    }

    #[test]
    fn new_socket_in_existing_process_found_by_the_next_walk() {
        match loaded_fd_iter() {
            Some(it) => new_socket_in_existing_process(Some(it)),
            None => eprintln!("SKIP: BPF iterator unavailable"),
        }
    }

    fn loaded_fd_iter() -> Option<FdIter> {
        if !FdIter::usable_for(Path::new("/proc")) {
            return None;
        }
        FdIter::load().ok()
    }

    fn new_socket_in_existing_process(walk: Option<FdIter>) {
        // A child that opens one listening socket per line on stdin and prints its inode.
        let script = "import os,socket,sys\n\
                      keep=[]\n\
                      def new():\n  s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); keep.append(s)\n  print(os.fstat(s.fileno()).st_ino, flush=True)\n\
                      new()\n\
                      for _ in sys.stdin: new()\n";
        let mut kid = spawn(
            Command::new(python())
                .args(["-c", script])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped()),
        );
        let mut stdin = kid.0.stdin.take().unwrap();
        let mut lines = BufReader::new(kid.0.stdout.take().unwrap()).lines();
        let mut next_inode = || -> u64 { lines.next().unwrap().unwrap().trim().parse().unwrap() };

        let a = next_inode();
        let mut idx = ProcIndex::new(opts());
        if let Some(it) = walk {
            idx = idx.with_fd_iter(it);
        }
        idx.refresh(&[a]);
        assert_eq!(idx.owner(a).unwrap().pid, kid.pid());
        assert_eq!(idx.stats().full_scans, 1);

        writeln!(stdin, "open").unwrap();
        let b = next_inode();
        let before = idx.stats();
        idx.refresh(&[a, b]);
        let after = idx.stats();
        let owner = idx.owner(b).expect("new socket of a known process found");
        assert_eq!(owner.pid, kid.pid());
        assert_eq!(after.full_scans, 1, "no full scan for one new inode");
        assert_eq!(after.partial_scans, before.partial_scans + 1);
        // Found by its fd count change: details were not read again.
        assert!(Arc::ptr_eq(&owner, &idx.owner(a).unwrap()));
        drop(stdin);
    }

    #[test]
    fn exited_process_is_dropped_with_its_inodes() {
        let (mut kid, ino) = sleeper(&mut sleep_cmd());
        let pid = kid.pid();
        let mut idx = ProcIndex::new(opts());
        idx.refresh(&[ino]);
        assert_eq!(idx.owner(ino).unwrap().pid, pid);
        kid.stop();
        // Any unknown inode makes the next refresh list /proc and notice the exit.
        idx.refresh(&[NO_SUCH_INODE]);
        assert!(idx.owner(ino).is_none());
        let s = idx.stats();
        assert!(s.exited + s.reused_pids >= 1);
        if !Path::new(&format!("/proc/{pid}")).exists() {
            assert!(idx.process(pid).is_none());
        }
    }

    #[test]
    fn unknown_inode_costs_one_full_scan_per_interval() {
        let mut idx = ProcIndex::new(opts());
        idx.refresh(&[NO_SUCH_INODE]);
        let first = idx.stats();
        assert_eq!(first.full_scans, 1);
        assert_eq!(first.given_up, 1);
        for _ in 0..5 {
            idx.refresh(&[NO_SUCH_INODE]);
        }
        let s = idx.stats();
        assert_eq!(s.full_scans, 1);
        assert_eq!(s.fds_read, first.fds_read, "given up: no more reads");
        assert_eq!(s.quiet_refreshes, 5);

        // With a short interval, the retry comes back, but at most once per interval.
        let mut idx = ProcIndex::new(ProcOptions {
            rescan_interval: Duration::from_millis(300),
            ..opts()
        });
        let start = Instant::now();
        idx.refresh(&[NO_SUCH_INODE]);
        while start.elapsed() < Duration::from_millis(700) {
            idx.refresh(&[NO_SUCH_INODE]);
            std::thread::sleep(Duration::from_millis(20));
        }
        let full = idx.stats().full_scans;
        assert!((2..=3).contains(&full), "full scans: {full}");
    }

    #[test]
    fn shared_socket_passes_to_the_next_holder() {
        let guard = spawn_lock();
        let (l, ino) = socket();
        let holder = |fd: OwnedFd| {
            Kid(sleep_cmd()
                .stdin(Stdio::from(fd))
                .stdout(Stdio::null())
                .spawn()
                .unwrap())
        };
        let a = holder(OwnedFd::from(l.try_clone().unwrap()));
        let b = holder(OwnedFd::from(l));
        drop(guard);
        wait_exec(a.pid());
        wait_exec(b.pid());
        let mut idx = ProcIndex::new(opts());
        idx.refresh(&[ino]);
        let first = idx.owner(ino).unwrap().pid;
        assert_eq!(first, a.pid().min(b.pid()), "the lowest pid is reported");
        let (mut holder, other) = if first == a.pid() { (a, b) } else { (b, a) };
        holder.stop();
        let before = idx.stats();
        idx.refresh(&[ino, NO_SUCH_INODE]);
        // The other holder takes over; its fds were not read again for it.
        assert_eq!(idx.owner(ino).unwrap().pid, other.pid());
        assert!(idx.stats().exited > before.exited);
    }

    #[test]
    fn pid_reuse_is_detected() {
        // Needs root in the host pid namespace: ns_last_pid picks the next pid.
        const LAST_PID: &str = "/proc/sys/kernel/ns_last_pid";
        let mut idx = ProcIndex::new(opts());
        for _ in 0..20 {
            let (mut old, old_ino) = sleeper(&mut sleep_cmd());
            let pid = old.pid();
            idx.refresh(&[old_ino]);
            assert_eq!(idx.owner(old_ino).unwrap().pid, pid);
            old.stop();
            // A different start time (clock ticks) for the new process.
            std::thread::sleep(Duration::from_millis(30));
            if fs::write(LAST_PID, (pid - 1).to_string()).is_err() {
                eprintln!("cannot write {LAST_PID}: pid reuse not tested");
                return;
            }
            let mut cmd = sleep_cmd();
            cmd.arg("61");
            let (new, new_ino) = sleeper(&mut cmd);
            if new.pid() != pid {
                continue; // another process took the pid first; try again
            }
            let before = idx.stats();
            idx.refresh(&[new_ino]);
            let info = idx.owner(new_ino).expect("socket of the reused pid found");
            assert_eq!(info.pid, pid);
            assert_eq!(
                info.cmdline.as_deref(),
                Some("sleep 60 61"),
                "{info:?} {:?}",
                idx.stats()
            );
            assert!(idx.owner(old_ino).is_none());
            assert!(idx.stats().reused_pids > before.reused_pids);
            return;
        }
        panic!("could not get a pid reused in 20 tries");
    }

    #[test]
    fn connector_details_only_from_the_process_that_connected() {
        let (kid, _ino) = sleeper(&mut sleep_cmd());
        let pid = kid.pid();
        let mut idx = ProcIndex::new(opts());
        let stat = parse_stat(&fs::read(format!("/proc/{pid}/stat")).unwrap()).unwrap();
        let connect = |start_ticks: u64| Connect {
            netns: 1,
            local: "127.0.0.1:1".parse().unwrap(),
            remote: "127.0.0.1:2".parse().unwrap(),
            tgid: pid,
            uid: 0,
            ppid: 4242,
            start_ns: start_ticks * ns_per_tick() + 3,
            comm: "kernel-comm".into(),
        };
        // The live process with this pid started later: it is not the one that
        // connected. Only what the kernel recorded is reported.
        let other = idx.connector(&connect(stat.start_time - 1));
        assert_eq!(other.pid, pid);
        assert_eq!(other.binary, "kernel-comm");
        assert_eq!((other.exe.as_str(), other.cmdline.as_deref()), ("", None));
        assert_eq!((other.ppid, other.user.as_str()), (4242, "root"));
        // The one that connected: its details, read now, and cached.
        let same = idx.connector(&connect(stat.start_time));
        assert_eq!(same.binary, "sleep");
        assert_eq!(same.cmdline.as_deref(), Some("sleep 60"));
        assert_eq!(same.ppid, std::process::id());
        let reads = idx.stats().details_read;
        let again = idx.connector(&connect(stat.start_time));
        assert!(Arc::ptr_eq(&same, &again));
        assert_eq!(idx.stats().details_read, reads, "cached");
        // A cached process is not lent to a later process with the same pid either.
        assert_eq!(
            idx.connector(&connect(stat.start_time + 1)).binary,
            "kernel-comm"
        );
        // Gone: the kernel's record.
        let mut kid = kid;
        kid.stop();
        let gone = Connect {
            tgid: u32::MAX - 1,
            ..connect(stat.start_time)
        };
        assert_eq!(idx.connector(&gone).binary, "kernel-comm");
    }

    /// A fake proc root in a temp directory, removed at the end.
    struct FakeProc(PathBuf);

    impl FakeProc {
        fn new() -> FakeProc {
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "connbeat-procs-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&dir).unwrap();
            FakeProc(dir)
        }
        fn file(&self, rel: &str, content: &[u8]) {
            let p = self.0.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, content).unwrap();
        }
        fn link(&self, rel: &str, target: &str) {
            let p = self.0.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, p).unwrap();
        }
    }

    impl Drop for FakeProc {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn fake_stat(pid: u32, comm: &str, ppid: u32, start: u64) -> Vec<u8> {
        format!(
            "{pid} ({comm}) S {ppid} 1 1 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 {start} 1000 10 \
             18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
        )
        .into_bytes()
    }

    #[test]
    fn broken_proc_entries_do_not_fail_the_refresh() {
        let fake = FakeProc::new();
        // A complete process with a socket, a pipe and odd links.
        fake.file("1000/stat", &fake_stat(1000, "my (odd) proc", 1, 4242));
        fake.file(
            "1000/status",
            b"Name:\tx\nTgid:\t1000\nPPid:\t1\nUid:\t0\t1\t2\t3\nGid:\t0\t0\t0\t0\nNSpid:\t1000\t7\n",
        );
        fake.file("1000/cmdline", b"/bin/my\0--flag\0two words\0\0\0");
        fake.file("1000/environ", b"A=1\0B=2\0");
        fake.link("1000/exe", "/usr/bin/my");
        fake.link("1000/fd/0", "/dev/null");
        fake.link("1000/fd/3", "socket:[999]");
        fake.link("1000/fd/4", "pipe:[5]");
        fake.link("1000/fd/5", "socket:[junk]");
        fake.link("1000/fd/6", "socket:[999]");
        // Vanished: an empty directory, fds without stat, stat without fds, a plain file.
        fs::create_dir_all(fake.0.join("1001")).unwrap();
        fake.link("1002/fd/3", "socket:[1002]");
        fake.file("1003/stat", &fake_stat(1003, "nofd", 1, 1));
        fake.file("1004", b"not a directory");
        fake.file("1005/stat", b"garbage");
        fake.file("1005/fd/.keep", b"");
        fake.link("self", "1000");
        fake.file("uptime", b"1 1\n");

        let mut idx = ProcIndex::new(ProcOptions {
            proc_root: fake.0.clone(),
            ..opts()
        });
        idx.refresh(&[999, 1002]);
        let info = idx.owner(999).expect("fake socket attributed");
        assert_eq!(
            *info,
            ProcessInfo {
                pid: 1000,
                binary: "my (odd) proc".into(),
                exe: "/usr/bin/my".into(),
                cmdline: Some("/bin/my --flag two words".into()),
                environ: vec![],
                user: "root".into(),
                ppid: 1,
                ns_pid: Some(7),
                json: Default::default(),
            }
        );
        assert!(idx.owner(1002).is_none());
        let s = idx.stats();
        assert!(s.read_errors >= 3, "errors counted: {s:?}");
        assert_eq!(s.inodes, 1);

        // The process vanishes entirely: dropped at the next listing, no error.
        fs::remove_dir_all(fake.0.join("1000")).unwrap();
        idx.refresh(&[NO_SUCH_INODE]);
        assert!(idx.owner(999).is_none());
        assert_eq!(idx.stats().inodes, 0);
    }

    #[test]
    fn short_lived_processes_do_not_fail_the_refresh() {
        let (_l, own) = socket();
        let mut idx = ProcIndex::new(ProcOptions {
            rescan_interval: Duration::ZERO,
            ..opts()
        });
        for round in 0..10 {
            let kids: Vec<Kid> = (0..10).map(|_| spawn(&mut Command::new("true"))).collect();
            idx.refresh(&[own, NO_SUCH_INODE - round]);
            drop(kids);
        }
        assert_eq!(idx.owner(own).unwrap().pid, std::process::id());
        assert!(idx.stats().full_scans >= 10);
    }

    #[test]
    fn kernel_thread_has_no_cmdline() {
        let mut idx = ProcIndex::new(opts());
        let Some(info) = idx.load_process(2) else {
            eprintln!("no pid 2 here (not the host pid namespace?)");
            return;
        };
        assert_eq!(info.cmdline, None);
        assert!(!info.binary.is_empty());
        if fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd") {
            assert_eq!(info.binary, "kthreadd");
            assert_eq!(info.exe, "");
            assert_eq!(info.ppid, 0);
        }
        assert_eq!(idx.process(2), Some(info));
        assert!(idx.load_process(u32::MAX - 1).is_none());
    }

    #[test]
    fn environ_is_exposed_only_when_asked_and_filtered() {
        let mut cmd = sleep_cmd();
        cmd.env_clear()
            .env("CONNBEAT_A", "1")
            .env("CONNBEAT_B", "two=2")
            .env("OTHER", "3");
        let (kid, ino) = sleeper(&mut cmd);
        let info_with = |o: ProcOptions| {
            let mut idx = ProcIndex::new(o);
            idx.refresh(&[ino]);
            let info = idx.owner(ino).unwrap();
            assert_eq!(info.pid, kid.pid());
            info
        };
        let mut all = info_with(ProcOptions {
            expose_environ: true,
            ..opts()
        })
        .environ
        .clone();
        all.sort();
        assert_eq!(all, ["CONNBEAT_A=1", "CONNBEAT_B=two=2", "OTHER=3"]);

        let mut some = info_with(ProcOptions {
            expose_environ: true,
            environ_allowlist: vec!["CONNBEAT_B".into(), "OTHER".into(), "MISSING".into()],
            ..opts()
        })
        .environ
        .clone();
        some.sort();
        assert_eq!(some, ["CONNBEAT_B=two=2", "OTHER=3"]);

        let hidden = info_with(ProcOptions {
            expose_environ: false,
            expose_cmdline: false,
            environ_allowlist: vec!["OTHER".into()],
            ..opts()
        });
        assert!(hidden.environ.is_empty());
        assert_eq!(hidden.cmdline, None);
    }

    #[test]
    fn max_processes_bounds_the_cache() {
        let fake = FakeProc::new();
        for pid in 10..15 {
            fake.file(&format!("{pid}/stat"), &fake_stat(pid, "p", 1, 5));
            fake.file(
                &format!("{pid}/status"),
                format!("Tgid:\t{pid}\n").as_bytes(),
            );
            fake.link(&format!("{pid}/fd/0"), "/dev/null");
        }
        fake.link("12/fd/3", "socket:[555]");
        let mut idx = ProcIndex::new(ProcOptions {
            proc_root: fake.0.clone(),
            max_processes: 2,
            ..opts()
        });
        idx.refresh(&[555]);
        let s = idx.stats();
        assert_eq!((s.processes, s.evicted), (2, 3), "{s:?}");
        // Processes holding sockets are kept over the ones without.
        assert_eq!(idx.owner(555).unwrap().pid, 12);
        idx.refresh(&[555, NO_SUCH_INODE]);
        assert_eq!(idx.stats().processes, 2);
        assert_eq!(idx.owner(555).unwrap().pid, 12);
    }

    #[test]
    fn index_can_move_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<ProcIndex>();
        send_sync::<Arc<ProcessInfo>>();
    }

    #[test]
    fn parsers() {
        assert_eq!(socket_inode(b"socket:[123]"), Some(123));
        assert_eq!(socket_inode(b"socket:[]"), None);
        assert_eq!(socket_inode(b"socket:[12a]"), None);
        assert_eq!(socket_inode(b"pipe:[123]"), None);
        assert_eq!(socket_inode(b"socket:[99999999999999999999999]"), None);
        assert_eq!(
            parse_stat(&fake_stat(5, "a) b (c", 4, 77)),
            Some(Stat {
                comm: "a) b (c".into(),
                ppid: 4,
                start_time: 77
            })
        );
        assert_eq!(parse_stat(b"5 (x) S 1 2"), None);
        assert_eq!(parse_stat(b""), None);
        assert_eq!(
            parse_status(b"Uid:\t1000\t0\t0\t0\nNSpid:\t4\t3\t1\n"),
            (Some(1000), Some(1))
        );
        assert_eq!(parse_status(b"Name:\tx\n"), (None, None));
        assert_eq!(join_cmdline(b""), None);
        assert_eq!(join_cmdline(b"\0\0"), None);
        assert_eq!(
            join_cmdline(b"nginx: worker\0\0"),
            Some("nginx: worker".into())
        );
        assert_eq!(join_cmdline(b"a\0\0b\0"), Some("a  b".into()));
        assert_eq!(
            filter_environ(b"A=1\0B\0C=3=4\0", &[]),
            ["A=1", "B", "C=3=4"]
        );
        assert_eq!(
            filter_environ(b"A=1\0B\0C=3\0", &["B".into(), "C".into()]),
            ["B", "C=3"]
        );
        let mut p = Paths::new(Path::new("/proc/"));
        assert_eq!(p.get(42, "fd"), Path::new("/proc/42/fd"));
        assert_eq!(p.get(7, ""), Path::new("/proc/7"));
        assert_eq!(p.root(), Path::new("/proc"));
    }

    /// The cost of an fd scan here: `cargo test --release --lib conn::procs::tests::measure -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn measure_fd_scan_cost() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let held: Vec<_> = (0..4000)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        drop(l);
        for _ in 0..5 {
            let mut idx = ProcIndex::new(opts());
            let t = Instant::now();
            idx.refresh(&[]);
            let e = t.elapsed();
            let s = idx.stats();
            println!(
                "full scan: {} processes, {} fds, {:?}: {:.2} µs per fd",
                s.processes_scanned,
                s.fds_read,
                e,
                e.as_secs_f64() * 1e6 / s.fds_read as f64
            );
        }
        let wanted: Vec<u64> = held.iter().map(inode_of).collect();
        let mut idx = ProcIndex::new(opts());
        idx.refresh(&wanted);
        let t = Instant::now();
        for _ in 0..100 {
            idx.refresh(&wanted);
        }
        println!(
            "quiet refresh of {} known inodes: {:?}",
            wanted.len(),
            t.elapsed() / 100
        );
        let s0 = idx.stats();
        let t = Instant::now();
        for i in 0..100 {
            // Unknown and not given up (never seen by a full scan): the cheap steps run.
            idx.refresh(&[NO_SUCH_INODE - 100 - i]);
        }
        let s = idx.stats();
        println!(
            "refresh with one unresolvable inode, no full scan due: {:?} ({} listings, {} fds read)",
            t.elapsed() / 100,
            s.listings - s0.listings,
            s.fds_read - s0.fds_read
        );
        drop(held);
    }
}

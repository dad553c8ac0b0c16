//! The connection source's loop: poll, attribute, diff, and listen for closes.
//!
//! One thread does it all, so the table needs no lock: between polls it waits on the
//! close-notification sockets; at each poll it dumps every socket of every watched
//! namespace, drains the notifications that arrived meanwhile (the kernel queues a
//! socket's notification before the socket can be missing from a dump, so draining after
//! the dump is enough to tell a notified close from a silent one), lets the process index
//! look for the owners it does not know yet, and applies the poll to the table. The
//! connect-time recorder's ring buffer is waited on with the notifications and drained
//! before them (a connection's connect precedes its close), its processes' details read
//! at once, while they most likely still run.
//!
//! Following state changes (`connbeat.follow_state_changes`): when the recorder loaded
//! and every watched namespace has close notifications, a poll between two full dumps
//! looks up, with exact sock_diag requests, only the TCP sockets the recorder saw become
//! `ESTABLISHED` or `LISTEN` since the last poll (and UDP is dumped, which the recorder
//! does not follow); closes come from the notifications as always. One poll per
//! `aggregation` dumps everything, which repairs whatever was missed, and so does the
//! poll after a lost notification or change, a new namespace, or when `active` events
//! are due.

use super::connects::{self, ConnectRecorder, Recorded};
use super::container::{ContainerInfo, Containers};
use super::diag::{CloseBatch, CloseListener, DiagSocket, Family, SockRecord, Transport};
use super::fd_iter::FdIter;
use super::netns;
use super::owners::{OwnersBuilder, SharedOwners};
use super::procs::{ProcIndex, ProcOptions, ProcessInfo};
use super::table::{ConnEvent, ConnTable, OwnerLookup, TableSettings};
use crate::config::{ConnbeatConfig, ConnectRecorderMode, FdScan, Namespaces};
use crate::event::Event;
use crate::monitor::{self, METRICS};
use crate::publish::Publisher;
use anyhow::Context;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// How close events are obtained, for the startup summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseMode {
    /// Kernel destroy notifications.
    Notifications,
    /// Only by noticing, at the next poll, that a socket is gone.
    PollDiff(String),
    /// `connbeat.close_events: false`.
    Off,
}

/// What one poll did.
#[derive(Debug, Clone, Copy, Default)]
pub struct PollStats {
    pub sockets: usize,
    pub events: usize,
    pub namespaces: usize,
    pub wall: Duration,
    pub cpu: Duration,
}

/// One watched network namespace and its sockets.
struct Watched {
    inode: u64,
    diag: DiagSocket,
    closes: Option<CloseListener>,
    /// The agent's own namespace is never released.
    own: bool,
    /// A `/proc/PID` of a process in this namespace, whose `net/sockstat*` tell how many
    /// sockets the namespace has (none for a namespace known only by a bind mount).
    counts_from: Option<PathBuf>,
    /// Those counts at the last dump.
    counts: Option<SocketCounts>,
}

/// Sockets in use in one namespace, per protocol, from `/proc/PID/net/sockstat` and
/// `sockstat6`: a socket that opens changes them; one that closes also sends a
/// notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct SocketCounts {
    tcp: u64,
    tcp6: u64,
    udp: u64,
    udp6: u64,
}

impl SocketCounts {
    fn read(proc_pid: &Path) -> Option<SocketCounts> {
        let v4 = std::fs::read_to_string(proc_pid.join("net/sockstat")).ok()?;
        let v6 = std::fs::read_to_string(proc_pid.join("net/sockstat6")).unwrap_or_default();
        let inuse = |text: &str, proto: &str| -> Option<u64> {
            let line = text.lines().find(|l| l.starts_with(proto))?;
            let mut words = line.split_whitespace();
            words.find(|w| *w == "inuse")?;
            words.next()?.parse().ok()
        };
        Some(SocketCounts {
            tcp: inuse(&v4, "TCP:")?,
            tcp6: inuse(&v6, "TCP6:").unwrap_or(0),
            udp: inuse(&v4, "UDP:").unwrap_or(0),
            udp6: inuse(&v6, "UDP6:").unwrap_or(0),
        })
    }
}

/// The connection source.
pub struct ConnSource {
    settings: ConnbeatConfig,
    proc_root: PathBuf,
    with_closes: bool,
    namespaces: Vec<Watched>,
    close_mode: CloseMode,
    procs: ProcIndex,
    table: ConnTable,
    publisher: Publisher,
    records: Vec<SockRecord>,
    wanted: Vec<u64>,
    /// `"local_ips":[…]` of the `beat` object, rendered once per dump for all its events.
    beat_members: Arc<str>,
    /// Where each event's fields are written.
    text: String,
    containers: Containers,
    /// Containers by the namespace their processes were seen in (not the agent's own),
    /// for connections whose process is unknown.
    netns_containers: HashMap<u64, Arc<ContainerInfo>>,
    warned_netns: bool,
    warned_netns_look: bool,
    /// Owners shared with deep inspection, refreshed after each poll when set.
    shared_owners: Option<Arc<SharedOwners>>,
    first_poll: bool,
    /// Close notifications received, ever, and since the last dump.
    closes_seen: u64,
    /// Times the kernel dropped close notifications (what `conn.close_events.lost` counts).
    closes_lost: u64,
    closes_since_dump: u64,
    last_dump: Option<Instant>,
    /// The connect-time recorder, when it loaded.
    connects: Option<ConnectRecorder>,
    /// How outgoing connections are attributed, for the startup line.
    connect_mode: String,
    /// Owners of the connects drained from the recorder, by 4-tuple.
    recorded: Recorded,
    /// Whether polls between full dumps look up only the sockets that changed.
    follow: bool,
    /// The recorder's lost changes and the lost close notifications at the last full dump.
    changes_lost_at_dump: u64,
    closes_lost_at_dump: u64,
    /// The next poll must dump everything (a namespace was added).
    force_dump: bool,
    /// Sockets looked up before their process accepted them (no inode yet): looked up
    /// again at the next poll, once.
    retry: Vec<SockRecord>,
}

struct IndexOwners<'a> {
    procs: &'a ProcIndex,
    recorded: &'a Recorded,
}

impl OwnerLookup for IndexOwners<'_> {
    fn owner(&self, inode: u64) -> Option<Arc<ProcessInfo>> {
        if inode == 0 {
            return None;
        }
        self.procs.owner(inode)
    }

    fn connector(&self, r: &SockRecord) -> Option<Arc<ProcessInfo>> {
        if r.transport != Transport::Tcp {
            return None;
        }
        self.recorded
            .get(&connects::key_of(r.netns, r.local, r.remote))
            .cloned()
    }
}

/// The connect-time recorder as `connbeat.connect_recorder` asks (never for a single
/// poll), and the startup line's words for it.
fn connect_recorder(
    settings: &ConnbeatConfig,
    continuous: bool,
) -> anyhow::Result<(Option<ConnectRecorder>, String)> {
    let required = match settings.connect_recorder {
        ConnectRecorderMode::Off => return Ok((None, "off".into())),
        _ if !continuous => return Ok((None, "off (single poll)".into())),
        ConnectRecorderMode::Auto => false,
        ConnectRecorderMode::Bpf => true,
    };
    // The kernel names processes by their pid in the host's pid namespace.
    let loaded = if FdIter::usable_for(Path::new(&settings.proc_root)) {
        let entries = u32::try_from(settings.connect_recorder_entries).unwrap_or(u32::MAX);
        ConnectRecorder::load(entries).map_err(|e| e.to_string())
    } else {
        Err(
            "it reports host pids: it needs the host's pid namespace and connbeat.proc_root \
             pointing at its /proc"
                .to_string(),
        )
    };
    match loaded {
        Ok(r) => Ok((Some(r), "recorded at connect (BPF)".into())),
        Err(e) if required => Err(anyhow::anyhow!(
            "connbeat.connect_recorder: bpf: cannot load the connect-time recorder: {e} \
             (set connbeat.connect_recorder: auto to run without it)"
        )),
        Err(e) => {
            tracing::info!(target: "procs",
                "connect-time recorder unavailable ({e}): outgoing connections are attributed by polls only");
            Ok((None, format!("by polls only (recorder unavailable: {e})")))
        }
    }
}

const CLOSE_WAIT: Duration = Duration::from_millis(200);

/// The process index, with the BPF iterator as `connbeat.fd_scan` asks.
fn proc_index(settings: &ConnbeatConfig, proc_root: PathBuf) -> anyhow::Result<ProcIndex> {
    let usable = FdIter::usable_for(&proc_root);
    let index = ProcIndex::new(ProcOptions {
        proc_root,
        expose_cmdline: settings.expose_cmdline,
        expose_environ: settings.expose_environ,
        environ_allowlist: settings.environ_allowlist.clone(),
        max_processes: settings.max_processes,
        rescan_interval: settings.process_rescan_interval.get(),
    });
    let required = match settings.fd_scan {
        FdScan::Proc => return Ok(index),
        FdScan::Auto => false,
        FdScan::Bpf => true,
    };
    if !usable {
        let why = "the BPF iterator reports host pids: it needs the host's pid namespace and connbeat.proc_root pointing at its /proc";
        if required {
            anyhow::bail!("connbeat.fd_scan: bpf: {why}");
        }
        tracing::debug!(target: "procs", "{why}; reading fd links");
        return Ok(index);
    }
    match FdIter::load() {
        Ok(it) => Ok(index.with_fd_iter(it)),
        Err(e) if required => Err(anyhow::anyhow!(
            "connbeat.fd_scan: bpf: cannot load the BPF iterator: {e} (set connbeat.fd_scan: proc to read /proc instead)"
        )),
        Err(e) => {
            tracing::info!(target: "procs", "BPF iterator unavailable ({e}): socket owners are read from /proc fd links");
            Ok(index)
        }
    }
}

impl ConnSource {
    /// Opens the netlink sockets. `with_closes` subscribes to destroy notifications
    /// (not needed for a single poll).
    pub fn new(
        settings: &ConnbeatConfig,
        publisher: Publisher,
        with_closes: bool,
    ) -> anyhow::Result<ConnSource> {
        let proc_root = PathBuf::from(&settings.proc_root);
        let diag = DiagSocket::open().context(
            "cannot open a netlink sock_diag socket (is this Linux with NETLINK_SOCK_DIAG?)",
        )?;
        let own_inode = netns::current(Path::new("/proc")).unwrap_or(0);
        let with_closes = with_closes && settings.close_events;
        let (closes, close_mode) = if !settings.close_events {
            (None, CloseMode::Off)
        } else if !with_closes {
            (None, CloseMode::PollDiff("single poll".into()))
        } else {
            match CloseListener::open(settings.udp, close_buffer(settings), CLOSE_WAIT) {
                Ok(l) => (Some(l), CloseMode::Notifications),
                Err(e) => {
                    let why = format!("{e}");
                    tracing::warn!(target: "conn",
                        "kernel close notifications unavailable ({why}): \
                         closes are found by comparing polls, and connections that open and close between two polls are not seen");
                    (None, CloseMode::PollDiff(why))
                }
            }
        };
        let (connects, connect_mode) = connect_recorder(settings, with_closes)?;
        let follow = settings.follow_state_changes && connects.is_some();
        let mut source = ConnSource {
            settings: settings.clone(),
            proc_root: proc_root.clone(),
            with_closes,
            namespaces: vec![Watched {
                inode: own_inode,
                diag,
                closes,
                own: true,
                counts_from: Some(PathBuf::from("/proc/self")),
                counts: None,
            }],
            close_mode,
            procs: proc_index(settings, proc_root)?,
            table: ConnTable::new(TableSettings {
                aggregation: settings.aggregation.get(),
                max_connections: settings.max_connections,
                local_connections: settings.local_connections,
                expose_process_info: settings.expose_process_info,
                tcp_info: settings.tcp_info,
                closed_memory: (settings.poll_interval.get() * 3).max(Duration::from_secs(10)),
            }),
            publisher,
            records: Vec::new(),
            wanted: Vec::new(),
            text: String::with_capacity(4096),
            beat_members: crate::event::beat_members(&[(
                "local_ips",
                &serde_json::value::to_raw_value(&[] as &[String])?,
            )]),
            containers: Containers::new(
                Path::new(&settings.proc_root),
                Path::new(&settings.docker_socket),
            ),
            netns_containers: HashMap::new(),
            warned_netns: false,
            warned_netns_look: false,
            shared_owners: None,
            first_poll: true,
            closes_seen: 0,
            closes_lost: 0,
            closes_since_dump: 0,
            last_dump: None,
            connects,
            connect_mode,
            recorded: Recorded::new(settings.connect_recorder_entries),
            follow,
            changes_lost_at_dump: 0,
            closes_lost_at_dump: 0,
            force_dump: false,
            retry: Vec::new(),
        };
        source.refresh_namespaces();
        Ok(source)
    }

    pub fn close_mode(&self) -> &CloseMode {
        &self.close_mode
    }

    /// How outgoing connections get their process: at connect (BPF), or by polls only,
    /// and why.
    pub fn connect_mode(&self) -> &str {
        &self.connect_mode
    }

    /// Resolves every connect the recorder delivered since the last call, while their
    /// processes most likely still run.
    fn drain_connects(&mut self) {
        let Some(rec) = self.connects.as_mut() else {
            return;
        };
        let (procs, recorded) = (&mut self.procs, &mut self.recorded);
        let (shared, own) = (self.shared_owners.as_deref(), self.namespaces[0].inode);
        let watched = &self.namespaces;
        let n = rec.drain(|c| {
            // Connections in namespaces not watched are never reported: no /proc reads.
            if !watched.iter().any(|w| w.inode == u64::from(c.netns)) {
                return;
            }
            let owner = procs.connector(&c);
            if let Some(shared) = shared
                && u64::from(c.netns) == own
            {
                let r = crate::owner::ProcessRef {
                    pid: owner.pid,
                    binary: owner.binary.clone(),
                };
                shared.connect(c.local, c.remote, r);
            }
            recorded.insert(
                connects::key_of(u64::from(c.netns), c.local, c.remote),
                owner,
            );
        });
        monitor::add(&METRICS.procs_connects, n as u64);
    }

    /// For a TCP connection not tracked yet whose connect was not drained (the ring
    /// buffer was full), the recorder's map may still know it.
    fn recall_connect(&mut self, r: &SockRecord) {
        let Some(rec) = self.connects.as_ref() else {
            return;
        };
        if r.transport != Transport::Tcp {
            return;
        }
        let key = connects::key_of(r.netns, r.local, r.remote);
        if self.recorded.get(&key).is_some() {
            return;
        }
        if let Some(c) = rec.lookup(&key) {
            monitor::inc(&METRICS.procs_connects_late);
            let owner = self.procs.connector(&c);
            self.recorded.insert(key, owner);
        }
    }

    /// Whether polls between full dumps look up only the sockets that changed state.
    pub fn follows_changes(&self) -> bool {
        self.follow
    }

    /// Throws away the state changes recorded so far, as if the recorder had missed them
    /// without knowing: what the next full dump has to repair (for tests).
    #[doc(hidden)]
    pub fn forget_changes(&mut self) {
        if let Some(rec) = self.connects.as_mut() {
            rec.drain_changes(|_| {});
        }
        self.retry.clear();
    }

    /// Whether socket owners are found by the BPF iterator (else by /proc fd links).
    pub fn uses_fd_iter(&self) -> bool {
        self.procs.uses_fd_iter()
    }

    /// The agent's own network namespace.
    pub fn netns(&self) -> u64 {
        self.namespaces[0].inode
    }

    /// Keeps `owners` up to date with this source's view of the agent's own namespace,
    /// for deep inspection's client_process / server_process.
    pub fn share_owners(&mut self, owners: Arc<SharedOwners>) {
        self.shared_owners = Some(owners);
    }

    fn refresh_shared_owners(&self) {
        let Some(shared) = &self.shared_owners else {
            return;
        };
        let mut b = OwnersBuilder::default();
        for (local, remote, p) in self.table.owners_in(self.netns()) {
            let r = crate::owner::ProcessRef {
                pid: p.pid,
                binary: p.binary.clone(),
            };
            match remote {
                Some(remote) => b.connection(local, remote, r),
                None => b.listener(local, r),
            }
        }
        shared.install(b);
    }

    /// Whether container names come from a Docker engine.
    pub fn docker_connected(&self) -> bool {
        self.containers.engine_connected()
    }

    /// How many namespaces are watched.
    pub fn namespace_count(&self) -> usize {
        self.namespaces.len()
    }

    /// With `namespaces: all`, starts watching new namespaces and releases those that no
    /// process or bind mount refers to any more.
    fn refresh_namespaces(&mut self) {
        if self.settings.namespaces != Namespaces::All {
            return;
        }
        let netns::Discovered {
            namespaces: found,
            denied,
        } = netns::discover(&self.proc_root);
        if denied > 0 && !self.warned_netns_look {
            self.warned_netns_look = true;
            tracing::warn!(target: "conn",
                "cannot look at the network namespace of {denied} processes (permission denied): \
                 connections in namespaces only they use are not seen. connbeat.namespaces: all needs \
                 CAP_SYS_PTRACE to find namespaces and CAP_SYS_ADMIN to enter them");
        }
        let before = self.namespaces.len();
        self.namespaces
            .retain(|w| w.own || found.contains_key(&w.inode));
        let released = before - self.namespaces.len();
        let with_closes = self
            .with_closes
            .then(|| (self.settings.udp, close_buffer(&self.settings)));
        let mut added = 0;
        for (inode, path) in found {
            if self.namespaces.iter().any(|w| w.inode == inode) {
                continue;
            }
            match netns::open_in(&path, with_closes, CLOSE_WAIT) {
                Ok(s) => {
                    let closes = match s.closes {
                        Some(Ok(l)) => Some(l),
                        Some(Err(e)) => {
                            tracing::warn!(target: "conn",
                                "namespace {inode}: close notifications unavailable ({e}); closes come from polls there");
                            None
                        }
                        None => None,
                    };
                    // /proc/PID/ns/net → /proc/PID; a bind mount has no process to ask.
                    let counts_from = path
                        .strip_prefix(&self.proc_root)
                        .ok()
                        .filter(|rest| rest.ends_with("ns/net"))
                        .and_then(|_| path.parent()?.parent().map(Path::to_path_buf));
                    self.namespaces.push(Watched {
                        inode,
                        diag: s.diag,
                        closes,
                        own: false,
                        counts_from,
                        counts: None,
                    });
                    added += 1;
                }
                Err(e) => {
                    monitor::inc(&METRICS.conn_netns_errors);
                    if self.warned_netns {
                        tracing::debug!(target: "conn",
                            "cannot enter network namespace {inode} via {}: {e}", path.display());
                    } else {
                        self.warned_netns = true;
                        tracing::warn!(target: "conn",
                            "cannot enter network namespace {inode} via {} ({e}): its connections are not seen. \
                             connbeat.namespaces: all needs CAP_SYS_ADMIN (setns); further cases are counted in conn.netns.errors",
                            path.display());
                    }
                }
            }
        }
        if added > 0 {
            self.force_dump = true;
        }
        if added + released > 0 {
            tracing::debug!(target: "conn", "namespaces: {added} new, {released} released, {} watched",
                self.namespaces.len());
        }
        monitor::set(&METRICS.conn_netns_watched, self.namespaces.len() as u64);
    }

    /// One complete poll: dump, drain closes, attribute, diff, publish.
    pub fn poll(&mut self) -> anyhow::Result<PollStats> {
        let started = Instant::now();
        let dump_started = SystemTime::now();
        let cpu_start = thread_cpu_time();
        self.refresh_namespaces();
        let closes_before = self.closes_seen;
        let mut events = self.drain_closes();
        if self.changes_suffice() {
            let (note, metric) = match self.poll_changes(dump_started)? {
                Some(n) => {
                    events += n;
                    (
                        format!(" changes={}", self.records.len()),
                        &METRICS.conn_polls_changes,
                    )
                }
                None => (" unchanged=true".to_string(), &METRICS.conn_polls_unchanged),
            };
            monitor::inc(metric);
            return Ok(self.poll_done(started, cpu_start, events, &note));
        }
        if self.nothing_changed(closes_before) {
            monitor::inc(&METRICS.conn_polls_unchanged);
            let stats = self.poll_done(started, cpu_start, events, " unchanged=true");
            return Ok(stats);
        }
        // The dump sees every change recorded until now.
        self.forget_changes();
        self.force_dump = false;
        self.closes_lost_at_dump = self.closes_lost;
        if let Some(rec) = &self.connects {
            self.changes_lost_at_dump = rec.lost_changes();
        }
        self.last_dump = Some(Instant::now());
        let ips = serde_json::value::to_raw_value(&local_ips())?;
        self.beat_members = crate::event::beat_members(&[("local_ips", &ips)]);
        self.records.clear();
        let udp = self.settings.udp;
        // tcp_info costs the kernel more than the rest of a dump: ask for it in the dump
        // only when every socket may need it (first poll, `active` events due); otherwise
        // look it up afterwards for the few new sockets alone.
        let full_info =
            self.settings.tcp_info && (self.first_poll || self.table.active_due(SystemTime::now()));
        self.first_poll = false;
        for ns in &mut self.namespaces {
            let records = &mut self.records;
            let inode = ns.inode;
            let mut push = |mut r: SockRecord| {
                r.netns = inode;
                records.push(r)
            };
            let mut result = ns.diag.dump_tcp(full_info, &mut push).map(|_| ());
            if udp && result.is_ok() {
                for f in [Family::V4, Family::V6] {
                    result = result.and_then(|_| {
                        ns.diag
                            .dump(f, Transport::Udp, false, &mut push)
                            .map(|_| ())
                    });
                }
            }
            if let Err(e) = result {
                if ns.own {
                    return Err(e).context("sock_diag dump");
                }
                monitor::inc(&METRICS.conn_netns_errors);
                tracing::debug!(target: "conn", "dump in namespace {inode} failed: {e}");
            }
        }
        if self.settings.tcp_info && !full_info {
            self.fill_new_tcp_info();
        }
        events += self.drain_closes();
        events += self.attribute_and_apply(dump_started, true)?;
        let stats = self.poll_done(started, cpu_start, events, "");
        Ok(stats)
    }

    /// Whether this poll may look up only the sockets that changed: changes are followed,
    /// every namespace has close notifications, nothing was lost since the last full dump,
    /// which is less than `aggregation` old, and no `active` event is due.
    fn changes_suffice(&mut self) -> bool {
        match self.why_dump() {
            None => true,
            Some(why) => {
                if self.follow {
                    tracing::debug!(target: "conn", "full dump: {why}");
                }
                false
            }
        }
    }

    /// Why this poll cannot look up only the sockets that changed (`None`: it can).
    fn why_dump(&mut self) -> Option<&'static str> {
        if self.connects.is_none() || !self.follow {
            return Some("state changes not followed");
        }
        let now = SystemTime::now();
        let due = self.table.active_due_now(now);
        let rec = self.connects.as_ref()?;
        // `active` events due before the next poll: the window's dump waits for them, so
        // that one dump serves both (it is at most one poll late).
        let active_soon = self
            .table
            .next_due()
            .is_some_and(|due| due > now && due <= now + self.settings.poll_interval.get());
        [
            (self.first_poll, "first poll"),
            (self.force_dump, "new namespace"),
            (
                self.close_mode != CloseMode::Notifications
                    || self.namespaces.iter().any(|w| w.closes.is_none()),
                "no close notifications",
            ),
            (
                self.closes_lost != self.closes_lost_at_dump,
                "close notifications lost",
            ),
            (
                rec.lost_changes() != self.changes_lost_at_dump,
                "state changes lost",
            ),
            (due, "active events due"),
            (
                self.last_dump
                    .is_none_or(|t| t.elapsed() >= self.settings.aggregation.get())
                    && !active_soon,
                "aggregation window over",
            ),
        ]
        .into_iter()
        .find_map(|(yes, why)| yes.then_some(why))
    }

    /// A poll of the sockets that changed state since the last one (see the module
    /// documentation): exact lookups of those, a dump of UDP when it is reported, then
    /// attribution and the table as for a full dump. Returns the events published, or
    /// `None` when nothing changed (no socket to look up, no UDP to dump).
    fn poll_changes(&mut self, started: SystemTime) -> anyhow::Result<Option<usize>> {
        self.records.clear();
        let retried = std::mem::take(&mut self.retry);
        let mut keys = retried.clone();
        if let Some(rec) = self.connects.as_mut() {
            let watched = &self.namespaces;
            rec.drain_changes(|c| {
                if watched.iter().any(|w| w.inode == u64::from(c.netns)) {
                    keys.push(change_key(&c));
                }
            });
        }
        keys.sort_unstable_by_key(|k| (k.netns, k.local, k.remote));
        keys.dedup_by_key(|k| (k.netns, k.local, k.remote));
        if keys.is_empty() && !self.settings.udp {
            return Ok(None);
        }
        monitor::add(&METRICS.conn_changes_looked_up, keys.len() as u64);
        let udp = self.settings.udp;
        let with_info = self.settings.tcp_info;
        for ns in &mut self.namespaces {
            let inode = ns.inode;
            let records = &mut self.records;
            let mut push = |mut r: SockRecord| {
                r.netns = inode;
                records.push(r)
            };
            let (from, to) = (
                keys.partition_point(|k| k.netns < inode),
                keys.partition_point(|k| k.netns <= inode),
            );
            let mut result = Ok(());
            if from < to {
                result = ns.diag.lookup_tcp(&keys[from..to], with_info, &mut push);
            }
            if udp && result.is_ok() {
                for f in [Family::V4, Family::V6] {
                    result = result.and_then(|_| {
                        ns.diag
                            .dump(f, Transport::Udp, false, &mut push)
                            .map(|_| ())
                    });
                }
            }
            if let Err(e) = result {
                if ns.own {
                    return Err(e).context("sock_diag lookups");
                }
                monitor::inc(&METRICS.conn_netns_errors);
                tracing::debug!(target: "conn", "lookups in namespace {inode} failed: {e}");
            }
        }
        if self.records.is_empty() {
            return Ok(Some(0));
        }
        // Sockets not accepted yet have no inode: once more at the next poll, not again.
        let same = |a: &SockRecord, b: &SockRecord| {
            (a.netns, a.local, a.remote) == (b.netns, b.local, b.remote)
        };
        for r in &self.records {
            if r.transport == Transport::Tcp
                && r.inode == 0
                && r.state == super::diag::state::ESTABLISHED
                && !retried.iter().any(|k| same(k, r))
            {
                self.retry.push(SockRecord {
                    cookie: super::diag::ANY_COOKIE,
                    tcp_info: None,
                    ..*r
                });
            }
        }
        self.attribute_and_apply(started, false).map(Some)
    }

    /// Finds the owners of the sockets in `self.records` the table does not know yet,
    /// applies the records to the table (a complete poll, or only changes) and publishes.
    fn attribute_and_apply(
        &mut self,
        started: SystemTime,
        complete: bool,
    ) -> anyhow::Result<usize> {
        self.table.unknown_inodes(&self.records, &mut self.wanted);
        if !self.wanted.is_empty() {
            self.procs.refresh(&self.wanted);
            let procs = &self.procs;
            self.containers
                .retain_pids(|pid| procs.process(pid).is_some());
        }
        if self.connects.is_some() {
            let records = std::mem::take(&mut self.records);
            for r in &records {
                if r.state != super::diag::state::LISTEN
                    && self.table.is_new(r)
                    && self.procs.owner(r.inode).is_none()
                {
                    self.recall_connect(r);
                }
            }
            self.records = records;
        }
        let live: std::collections::HashSet<u64> =
            self.namespaces.iter().map(|w| w.inode).collect();
        self.netns_containers.retain(|ns, _| live.contains(ns));
        let now = SystemTime::now();
        let mut out: Vec<ConnEvent> = Vec::new();
        let owners = IndexOwners {
            procs: &self.procs,
            recorded: &self.recorded,
        };
        if complete {
            self.table
                .apply_poll(&self.records, started, now, &owners, &mut |e| out.push(e));
        } else {
            self.table
                .apply_changes(&self.records, started, now, &owners, &mut |e| out.push(e));
        }
        let events = out.len();
        for e in out {
            self.publish(e);
        }
        self.refresh_shared_owners();
        Ok(events)
    }

    /// Counts and logs one finished poll.
    fn poll_done(
        &self,
        started: Instant,
        cpu_start: Duration,
        events: usize,
        note: &str,
    ) -> PollStats {
        let stats = PollStats {
            sockets: self.records.len(),
            events,
            namespaces: self.namespaces.len(),
            wall: started.elapsed(),
            cpu: thread_cpu_time().saturating_sub(cpu_start),
        };
        monitor::inc(&METRICS.conn_polls);
        monitor::set(&METRICS.conn_sockets_seen, stats.sockets as u64);
        monitor::set(
            &METRICS.conn_poll_duration_us,
            stats.wall.as_micros() as u64,
        );
        tracing::debug!(target: "conn",
            "poll done: sockets={} events={} wall_us={} cpu_us={} tracked={} namespaces={}{note}",
            stats.sockets, stats.events, stats.wall.as_micros(), stats.cpu.as_micros(),
            self.table.len(), stats.namespaces);
        stats
    }

    /// Whether a poll can be answered without a dump: no socket closed since the last dump
    /// (no notification arrived, none was lost), none opened (every namespace's count of
    /// sockets in use is what it was at that dump, and their notifications are trusted),
    /// and no `active` event is due. A dump happens at least once per `aggregation`.
    fn nothing_changed(&mut self, closes_before: u64) -> bool {
        // (A full dump follows when this says false; it sets `last_dump`.)
        let trusted = self.settings.skip_unchanged_polls
            && self.close_mode == CloseMode::Notifications
            && !self.first_poll
            && self.closes_seen == closes_before
            && self.closes_since_dump == 0
            && !self.table.active_due(SystemTime::now())
            && self
                .last_dump
                .is_some_and(|t| t.elapsed() < self.settings.aggregation.get());
        let mut unchanged = trusted;
        for ns in &mut self.namespaces {
            let now = ns.counts_from.as_deref().and_then(|p| {
                // The process may be gone and its pid reused elsewhere: check the namespace.
                let same = ns.own
                    || std::fs::metadata(p.join("ns/net")).is_ok_and(|m| {
                        use std::os::unix::fs::MetadataExt;
                        m.ino() == ns.inode
                    });
                same.then(|| SocketCounts::read(p)).flatten()
            });
            if ns.closes.is_none() || now.is_none() || now != ns.counts {
                unchanged = false;
            }
            ns.counts = now;
        }
        if !unchanged {
            self.closes_since_dump = 0;
        }
        unchanged
    }

    /// Looks up `tcp_info` for the sockets this poll sees for the first time, in the
    /// namespace each lives in.
    fn fill_new_tcp_info(&mut self) {
        let mut fresh: Vec<usize> = Vec::new();
        for (i, r) in self.records.iter().enumerate() {
            if r.transport == Transport::Tcp
                && r.state != super::diag::state::LISTEN
                && self.table.is_new(r)
            {
                fresh.push(i);
            }
        }
        if fresh.is_empty() {
            return;
        }
        for ns in &mut self.namespaces {
            let mut batch: Vec<SockRecord> = fresh
                .iter()
                .map(|&i| self.records[i])
                .filter(|r| r.netns == ns.inode)
                .collect();
            if batch.is_empty() {
                continue;
            }
            if let Err(e) = ns.diag.query_tcp_info(&mut batch) {
                tracing::debug!(target: "conn", "tcp_info lookups in namespace {} failed: {e}", ns.inode);
                continue;
            }
            let by_cookie: HashMap<u64, SockRecord> =
                batch.into_iter().map(|r| (r.cookie, r)).collect();
            for &i in &fresh {
                if let Some(r) = by_cookie.get(&self.records[i].cookie) {
                    self.records[i].tcp_info = r.tcp_info;
                }
            }
        }
    }

    /// Applies every close notification already queued, in every namespace. Returns the
    /// events published.
    fn drain_closes(&mut self) -> usize {
        // A connection's connect precedes its close: resolve the connects first.
        self.drain_connects();
        let mut n = 0;
        for i in 0..self.namespaces.len() {
            n += self.drain_namespace(i);
        }
        n
    }

    fn drain_namespace(&mut self, i: usize) -> usize {
        let mut n = 0;
        loop {
            let ns = &mut self.namespaces[i];
            let inode = ns.inode;
            let Some(l) = ns.closes.as_mut() else {
                return n;
            };
            match l.try_next() {
                Ok(CloseBatch::Idle) => return n,
                Ok(batch) => n += self.apply_closes(batch, inode),
                Err(e) => {
                    tracing::error!(target: "conn",
                        "close notifications in namespace {inode} failed: {e}; closes come from polls there");
                    self.namespaces[i].closes = None;
                    if self.namespaces[i].own {
                        self.close_mode = CloseMode::PollDiff(e.to_string());
                    }
                    return n;
                }
            }
        }
    }

    fn apply_closes(&mut self, batch: CloseBatch, netns: u64) -> usize {
        match batch {
            CloseBatch::Closed(records) => {
                let now = SystemTime::now();
                monitor::add(&METRICS.conn_closes_received, records.len() as u64);
                self.closes_seen += records.len() as u64;
                self.closes_since_dump += records.len() as u64;
                let mut n = 0;
                for mut r in records {
                    r.netns = netns;
                    if !self.table.knows(r.cookie) {
                        self.recall_connect(&r);
                    }
                    let owners = IndexOwners {
                        procs: &self.procs,
                        recorded: &self.recorded,
                    };
                    if let Some(e) = self.table.apply_close(&r, now, &owners) {
                        self.publish(e);
                        n += 1;
                    }
                }
                n
            }
            CloseBatch::Overrun => {
                monitor::inc(&METRICS.conn_closes_lost);
                self.closes_lost += 1;
                self.closes_seen += 1;
                self.closes_since_dump += 1;
                tracing::warn!(target: "conn",
                    "the kernel dropped close notifications (receive buffer full); the next poll resynchronises. \
                     Raise connbeat.close_events_buffer_kb (now {}) if this repeats", self.settings.close_events_buffer_kb);
                0
            }
            CloseBatch::Idle => 0,
        }
    }

    fn publish(&mut self, e: ConnEvent) {
        let ts = e.timestamp;
        let own = self.namespaces[0].inode;
        let container = match &e.local_process {
            Some(p) => {
                let c = self.containers.of_pid(p.pid);
                if let Some(c) = &c
                    && e.netns != own
                {
                    self.netns_containers.insert(e.netns, c.clone());
                }
                c
            }
            None => self.netns_containers.get(&e.netns).cloned(),
        };
        // Written into a reused buffer, then copied to a string of its exact size: small
        // enough for glibc's per-thread cache, where a 1 KiB block each took the arena's
        // lock, against the publisher thread freeing the previous ones.
        self.text.clear();
        e.write_json(&mut self.text);
        let mut ev = Event::from_object_text(ts, "connbeat", self.text.as_str().into());
        if let Some(c) = container {
            ev.push_field("container", &c.json());
        }
        ev.set_beat_members(&self.beat_members);
        self.publisher.publish(ev);
    }

    /// Waits up to `timeout` for any close listener to have data; true when one has.
    fn wait_for_closes(&self, timeout: Duration) -> bool {
        let mut fds: Vec<libc::pollfd> = self
            .namespaces
            .iter()
            .filter_map(|w| w.closes.as_ref())
            .map(|l| libc::pollfd {
                fd: l.raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .chain(self.connects.as_ref().map(|c| libc::pollfd {
                fd: c.raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }))
            .collect();
        if fds.is_empty() {
            std::thread::sleep(timeout);
            return false;
        }
        // SAFETY: fds is a valid array of fds.len() pollfd structs for the whole call.
        let n = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                timeout.as_millis().min(i32::MAX as u128) as libc::c_int,
            )
        };
        n > 0
    }

    /// Polls every `poll_interval` and applies close notifications in between, until
    /// `stop` is set.
    pub fn run(mut self, stop: &AtomicBool) {
        let interval = self.settings.poll_interval.get();
        let mut next_poll = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if Instant::now() >= next_poll {
                if self.publisher.is_full() {
                    // The output is behind: a poll now would only wait on the queue. Skip
                    // it; the next one sees whatever changed meanwhile.
                    monitor::inc(&METRICS.conn_poll_skipped);
                    tracing::debug!(target: "conn", "poll skipped: the queue is full");
                } else if let Err(e) = self.poll() {
                    monitor::inc(&METRICS.conn_poll_errors);
                    tracing::error!(target: "conn", "poll failed: {e:#}; retrying at the next interval");
                }
                next_poll += interval;
                let now = Instant::now();
                if next_poll <= now {
                    monitor::inc(&METRICS.conn_poll_skipped);
                    next_poll = now + interval;
                }
            }
            let wait = next_poll
                .saturating_duration_since(Instant::now())
                .min(CLOSE_WAIT);
            if self.wait_for_closes(wait) {
                let lost_before = self.closes_lost;
                self.drain_closes();
                if self.closes_lost != lost_before {
                    // Resynchronise at once rather than at the next interval.
                    next_poll = Instant::now();
                }
            }
        }
    }
}

fn close_buffer(c: &ConnbeatConfig) -> usize {
    c.close_events_buffer_kb.saturating_mul(1024)
}

/// The lookup key of a socket that changed state.
fn change_key(c: &connects::Change) -> SockRecord {
    SockRecord {
        family: if c.local.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        },
        transport: Transport::Tcp,
        state: c.new_state,
        local: c.local,
        remote: c.remote,
        inode: 0,
        uid: 0,
        cookie: super::diag::ANY_COOKIE,
        tcp_info: None,
        netns: u64::from(c.netns),
    }
}

/// This host's non-loopback addresses (`beat.local_ips`).
pub(crate) fn local_ips() -> Vec<String> {
    let mut ips: Vec<String> = match nix::ifaddrs::getifaddrs() {
        Ok(addrs) => addrs
            .filter_map(|a| a.address)
            .filter_map(|s| {
                if let Some(v4) = s.as_sockaddr_in() {
                    Some(std::net::IpAddr::V4(v4.ip()))
                } else {
                    s.as_sockaddr_in6().map(|v6| std::net::IpAddr::V6(v6.ip()))
                }
            })
            .filter(|ip| !ip.is_loopback())
            .map(|ip| ip.to_string())
            .collect(),
        Err(_) => Vec::new(),
    };
    ips.sort();
    ips.dedup();
    ips
}

/// CPU time consumed by the calling thread.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec the call writes into.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

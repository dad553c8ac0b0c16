//! The connection table: what the previous polls saw, keyed by the kernel socket cookie.
//!
//! Pure state, no I/O: a poll's records and the kernel's close notifications go in,
//! connection events come out. This is where `listening` / `open` / `active` / `closed`,
//! `direction` and the fall-back attributions (`listener`, `cache`) are decided, so all of it
//! is tested with synthetic records.

use super::diag::{SockRecord, Transport, state};
use super::procs::ProcessInfo;
use super::tcp_info::TcpInfo;
use crate::community_id::CommunityId;
use crate::fast_hash::{FxMap, FxSet};
use crate::monitor::{self, METRICS};
use serde::Serialize;
use serde::ser::{SerializeStruct, Serializer};
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Finds the process owning a socket inode (the process index, or a stand-in in tests).
pub trait OwnerLookup {
    fn owner(&self, inode: u64) -> Option<Arc<ProcessInfo>>;

    /// The process that opened the outgoing connection `r`, as recorded when it
    /// connected (the connect-time recorder), if known.
    fn connector(&self, _r: &SockRecord) -> Option<Arc<ProcessInfo>> {
        None
    }
}

/// Settings of the table, from `connbeat.*`.
#[derive(Debug, Clone)]
pub struct TableSettings {
    pub aggregation: Duration,
    pub max_connections: usize,
    pub local_connections: bool,
    pub expose_process_info: bool,
    pub tcp_info: bool,
    /// How long a closed cookie is remembered, so that a poll that raced with the close
    /// does not bring the connection back.
    pub closed_memory: Duration,
}

/// Which way a connection goes, seen from this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Listening,
    Incoming,
    Outgoing,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Listening => "listening",
            Direction::Incoming => "incoming",
            Direction::Outgoing => "outgoing",
        }
    }
}

/// How `local_process` was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Attribution {
    Procfs,
    Connect,
    Cache,
    Listener,
    None,
}

impl Attribution {
    pub fn name(self) -> &'static str {
        match self {
            Attribution::Procfs => "procfs",
            Attribution::Connect => "connect",
            Attribution::Cache => "cache",
            Attribution::Listener => "listener",
            Attribution::None => "none",
        }
    }
}

/// The lifecycle step an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Listening,
    Open,
    Active,
    Closed,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Listening => "listening",
            Action::Open => "open",
            Action::Active => "active",
            Action::Closed => "closed",
        }
    }
}

/// The `tcp` object of an event: `state`, then the `tcp_info` fields when known, in one
/// object. (Written by hand rather than with `#[serde(flatten)]`, which goes through a map
/// serializer and cost a sixth of a first poll.)
#[derive(Debug, Clone, PartialEq)]
pub struct TcpFields {
    pub state: &'static str,
    pub info: Option<TcpInfoFields>,
}

impl Serialize for TcpFields {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("TcpFields", if self.info.is_some() { 10 } else { 1 })?;
        m.serialize_field("state", self.state)?;
        if let Some(i) = &self.info {
            m.serialize_field("rtt_us", &i.rtt_us)?;
            m.serialize_field("rttvar_us", &i.rttvar_us)?;
            m.serialize_field("retransmits", &i.retransmits)?;
            m.serialize_field("total_retrans", &i.total_retrans)?;
            m.serialize_field("bytes_acked", &i.bytes_acked)?;
            m.serialize_field("bytes_received", &i.bytes_received)?;
            m.serialize_field("segs_in", &i.segs_in)?;
            m.serialize_field("segs_out", &i.segs_out)?;
            m.serialize_field("cwnd", &i.cwnd)?;
        }
        m.end()
    }
}

/// The `tcp_info` fields an event carries.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpInfoFields {
    pub rtt_us: u32,
    pub rttvar_us: u32,
    pub retransmits: u8,
    pub total_retrans: u32,
    pub bytes_acked: u64,
    pub bytes_received: u64,
    pub segs_in: u32,
    pub segs_out: u32,
    pub cwnd: u32,
}

impl From<&TcpInfo> for TcpInfoFields {
    fn from(t: &TcpInfo) -> Self {
        TcpInfoFields {
            rtt_us: t.rtt_us,
            rttvar_us: t.rttvar_us,
            retransmits: t.retransmits,
            total_retrans: t.total_retrans,
            bytes_acked: t.bytes_acked,
            bytes_received: t.bytes_received,
            segs_in: t.segs_in,
            segs_out: t.segs_out,
            cwnd: t.snd_cwnd,
        }
    }
}

/// One connection event, before the common fields are added.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnEvent {
    #[serde(skip)]
    pub timestamp: SystemTime,
    pub action: Action,
    pub direction: Direction,
    pub transport: &'static str,
    pub family: &'static str,
    pub local_ip: IpAddr,
    pub local_port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_ip: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_port: Option<u16>,
    /// The Community ID of the flow (connections with two endpoints).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub community_id: Option<CommunityId>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "super::procs::serialize_cached"
    )]
    pub local_process: Option<Arc<ProcessInfo>>,
    pub attribution: Attribution,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpFields>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The kernel's socket cookie, written as a string (JSON readers lose u64 precision).
    #[serde(serialize_with = "decimal_string")]
    pub cookie: u64,
    pub netns: u64,
}

fn decimal_string<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(itoa::Buffer::new().format(*v))
}

impl ConnEvent {
    /// The event's fields as a JSON object, the text `Serialize` gives (a test holds the
    /// two equal), written directly: these are the events of every socket on the host, and
    /// going through serde cost ~6,700 instructions per event, most of it escaping keys and
    /// values that never need it (names fixed here, addresses, numbers). The process is
    /// its cached JSON.
    pub fn write_json(&self, out: &mut String) {
        let mut n = itoa::Buffer::new();
        out.push_str("{\"action\":\"");
        out.push_str(self.action.name());
        out.push_str("\",\"direction\":\"");
        out.push_str(self.direction.name());
        out.push_str("\",\"transport\":\"");
        out.push_str(self.transport);
        out.push_str("\",\"family\":\"");
        out.push_str(self.family);
        out.push_str("\",\"local_ip\":\"");
        crate::event::push_ip(out, self.local_ip);
        out.push_str("\",\"local_port\":");
        out.push_str(n.format(self.local_port));
        if let Some(ip) = self.remote_ip {
            out.push_str(",\"remote_ip\":\"");
            crate::event::push_ip(out, ip);
            out.push('"');
        }
        if let Some(port) = self.remote_port {
            out.push_str(",\"remote_port\":");
            out.push_str(n.format(port));
        }
        if let Some(id) = &self.community_id {
            out.push_str(",\"community_id\":\"");
            out.push_str(id.as_str());
            out.push('"');
        }
        if let Some(p) = &self.local_process {
            out.push_str(",\"local_process\":");
            out.push_str(p.json().get());
        }
        out.push_str(",\"attribution\":\"");
        out.push_str(self.attribution.name());
        out.push('"');
        if let Some(tcp) = &self.tcp {
            out.push_str(",\"tcp\":{\"state\":\"");
            out.push_str(tcp.state);
            out.push('"');
            if let Some(i) = &tcp.info {
                let fields: [(&str, u64); 9] = [
                    ("rtt_us", i.rtt_us.into()),
                    ("rttvar_us", i.rttvar_us.into()),
                    ("retransmits", i.retransmits.into()),
                    ("total_retrans", i.total_retrans.into()),
                    ("bytes_acked", i.bytes_acked),
                    ("bytes_received", i.bytes_received),
                    ("segs_in", i.segs_in.into()),
                    ("segs_out", i.segs_out.into()),
                    ("cwnd", i.cwnd.into()),
                ];
                for (key, v) in fields {
                    out.push_str(",\"");
                    out.push_str(key);
                    out.push_str("\":");
                    out.push_str(n.format(v));
                }
            }
            out.push('}');
        }
        if let Some(ms) = self.duration_ms {
            out.push_str(",\"duration_ms\":");
            out.push_str(n.format(ms));
        }
        out.push_str(",\"cookie\":\"");
        out.push_str(n.format(self.cookie));
        out.push_str("\",\"netns\":");
        out.push_str(n.format(self.netns));
        out.push('}');
    }
}

/// Listeners are per namespace, transport and port.
type ListenerKey = (u64, Transport, u16);

/// A listening socket's address and owner.
type BoundListener = (IpAddr, Option<Arc<ProcessInfo>>);

/// What the table remembers of a connection.
#[derive(Debug, Clone)]
struct Conn {
    record: SockRecord,
    first_seen: SystemTime,
    last_published: SystemTime,
    owner: Option<Arc<ProcessInfo>>,
    attribution: Attribution,
    direction: Direction,
    epoch: u64,
    /// Computed once: the addresses of a cookie never change.
    community_id: Option<CommunityId>,
}

impl Conn {
    fn new(
        r: &SockRecord,
        now: SystemTime,
        owner: Option<Arc<ProcessInfo>>,
        attribution: Attribution,
        direction: Direction,
        epoch: u64,
    ) -> Conn {
        let community_id = if direction == Direction::Listening {
            None
        } else {
            CommunityId::of_ports(r.transport.name(), r.local, r.remote)
        };
        Conn {
            record: *r,
            first_seen: now,
            last_published: now,
            owner,
            attribution,
            direction,
            epoch,
            community_id,
        }
    }
}

/// The owners a destroyed socket can still have: it has no inode any more, but its
/// connect may have been recorded.
struct Closed<'a>(&'a dyn OwnerLookup);

impl OwnerLookup for Closed<'_> {
    fn owner(&self, _inode: u64) -> Option<Arc<ProcessInfo>> {
        None
    }

    fn connector(&self, r: &SockRecord) -> Option<Arc<ProcessInfo>> {
        self.0.connector(r)
    }
}

/// The table itself.
pub struct ConnTable {
    settings: TableSettings,
    conns: FxMap<u64, Conn>,
    /// Listening sockets by (transport, port): the addresses they are bound to and owners.
    listeners: FxMap<ListenerKey, Vec<BoundListener>>,
    recently_closed: FxSet<u64>,
    closed_order: VecDeque<(SystemTime, u64)>,
    epoch: u64,
    last_poll: Option<SystemTime>,
    /// When the earliest tracked connection is due for an `active` event.
    next_due: Option<SystemTime>,
}

impl ConnTable {
    pub fn new(settings: TableSettings) -> ConnTable {
        ConnTable {
            settings,
            conns: FxMap::default(),
            listeners: FxMap::default(),
            recently_closed: FxSet::default(),
            closed_order: VecDeque::new(),
            epoch: 0,
            last_poll: None,
            next_due: None,
        }
    }

    /// Every tracked connection of namespace `netns` with a known owner, and every
    /// listener with one: (local, remote or None for a listener, owner).
    pub fn owners_in(
        &self,
        netns: u64,
    ) -> impl Iterator<
        Item = (
            std::net::SocketAddr,
            Option<std::net::SocketAddr>,
            &Arc<ProcessInfo>,
        ),
    > {
        self.conns
            .values()
            .filter(move |c| c.record.netns == netns)
            .filter_map(|c| {
                let owner = c.owner.as_ref()?;
                let remote = (c.direction != Direction::Listening).then_some(c.record.remote);
                Some((c.record.local, remote, owner))
            })
    }

    /// Connections currently tracked.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// When the earliest tracked connection is due to be published again (`active`).
    pub fn next_due(&self) -> Option<SystemTime> {
        self.next_due
    }

    /// [`ConnTable::active_due`], the due time first recomputed from the connections
    /// still tracked when the remembered one has passed (the connection it was for may
    /// have closed since): so that a poll that follows changes dumps for `active` events
    /// only when one is really due.
    pub fn active_due_now(&mut self, now: SystemTime) -> bool {
        if !self.active_due(now) {
            return false;
        }
        self.next_due = self
            .conns
            .values()
            .map(|c| c.last_published)
            .min()
            .map(|e| e + self.settings.aggregation);
        self.active_due(now)
    }

    /// Whether some tracked connection is due to be published again (`active`) at `now`,
    /// which is when a poll needs every socket's `tcp_info`.
    pub fn active_due(&self, now: SystemTime) -> bool {
        self.next_due.is_some_and(|due| now >= due)
    }

    /// Whether a record of a poll is a connection the table has not seen yet (it will get
    /// an `open` or `listening` event).
    pub fn is_new(&self, r: &SockRecord) -> bool {
        !self.conns.contains_key(&r.cookie)
            && !self.recently_closed.contains(&r.cookie)
            && (r.transport != Transport::Tcp
                || !matches!(
                    r.state,
                    state::TIME_WAIT | state::SYN_RECV | state::NEW_SYN_RECV
                ))
            && (self.settings.local_connections || !is_local(r))
    }

    /// Whether the connection with this cookie is tracked, or was closed recently.
    pub fn knows(&self, cookie: u64) -> bool {
        self.conns.contains_key(&cookie) || self.recently_closed.contains(&cookie)
    }

    /// Inodes of the records whose owner the table does not know yet: what the process
    /// index should look for.
    pub fn unknown_inodes(&self, records: &[SockRecord], out: &mut Vec<u64>) {
        out.clear();
        out.extend(
            records
                .iter()
                .filter(|r| r.inode != 0)
                .filter(|r| {
                    self.conns
                        .get(&r.cookie)
                        .is_none_or(|c| c.attribution != Attribution::Procfs)
                })
                .map(|r| r.inode),
        );
    }

    /// Applies one complete poll, whose dump started at `started`. `emit` receives the
    /// events in order.
    pub fn apply_poll(
        &mut self,
        records: &[SockRecord],
        started: SystemTime,
        now: SystemTime,
        owners: &dyn OwnerLookup,
        emit: &mut dyn FnMut(ConnEvent),
    ) {
        self.apply(records, started, now, owners, emit, true);
    }

    /// Applies the sockets a poll looked up because their state changed (the others are
    /// as they were; closes come as notifications): new ones are opened, tracked ones
    /// updated, nothing is closed for not being there.
    pub fn apply_changes(
        &mut self,
        records: &[SockRecord],
        started: SystemTime,
        now: SystemTime,
        owners: &dyn OwnerLookup,
        emit: &mut dyn FnMut(ConnEvent),
    ) {
        self.apply(records, started, now, owners, emit, false);
    }

    fn apply(
        &mut self,
        records: &[SockRecord],
        started: SystemTime,
        now: SystemTime,
        owners: &dyn OwnerLookup,
        emit: &mut dyn FnMut(ConnEvent),
        complete: bool,
    ) {
        self.epoch += 1;
        self.forget_old_closes(now);
        if complete {
            self.rebuild_listeners(records, owners);
        } else {
            self.add_listeners(records, owners);
        }
        let mut not_tracked = 0u64;
        let mut seen_tracked = 0usize;
        let mut earliest: Option<SystemTime> = None;
        for r in records {
            if !self.reportable(r) || self.recently_closed.contains(&r.cookie) {
                continue;
            }
            let epoch = self.epoch;
            if let Some(c) = self.conns.get_mut(&r.cookie) {
                seen_tracked += 1;
                c.epoch = epoch;
                c.record = *r;
                if c.attribution != Attribution::Procfs
                    && let Some(p) = owners.owner(r.inode)
                {
                    c.owner = Some(p);
                    c.attribution = Attribution::Procfs;
                } else if c.attribution == Attribution::None
                    && c.direction == Direction::Outgoing
                    && let Some(p) = owners.connector(r)
                {
                    c.owner = Some(p);
                    c.attribution = Attribution::Connect;
                }
                let due = now
                    .duration_since(c.last_published)
                    .is_ok_and(|d| d >= self.settings.aggregation);
                if due {
                    c.last_published = now;
                }
                earliest = Some(earliest.map_or(c.last_published, |e| e.min(c.last_published)));
                if due {
                    let c = c.clone();
                    emit(self.event(&c, Action::Active, now, None));
                }
                continue;
            }
            if self.conns.len() >= self.settings.max_connections {
                not_tracked += 1;
                continue;
            }
            let direction = self.direction_of(r);
            let (owner, attribution) = self.attribute(r, direction, owners);
            let conn = Conn::new(r, now, owner, attribution, direction, epoch);
            let action = if direction == Direction::Listening {
                Action::Listening
            } else {
                Action::Open
            };
            emit(self.event(&conn, action, now, None));
            self.conns.insert(r.cookie, conn);
            seen_tracked += 1;
            earliest = Some(earliest.map_or(now, |e| e.min(now)));
        }
        if not_tracked > 0 {
            monitor::add(&METRICS.conn_table_evicted, not_tracked);
            tracing::warn!(target: "conn",
                "{not_tracked} connections not tracked: connbeat.max_connections ({}) reached",
                self.settings.max_connections);
        }
        // Whatever the poll did not see is gone, and no notification said so. In steady
        // state (closes arrive as notifications) the poll saw every tracked connection and
        // there is nothing to look for.
        let gone: Vec<u64> = if !complete || seen_tracked == self.conns.len() {
            Vec::new()
        } else {
            self.conns
                .iter()
                .filter(|(_, c)| c.epoch != self.epoch)
                .map(|(k, _)| *k)
                .collect()
        };
        for cookie in gone {
            if let Some(c) = self.conns.remove(&cookie) {
                monitor::inc(&METRICS.conn_closes_by_poll);
                self.remember_closed(cookie, now);
                let duration = now.duration_since(c.first_seen).unwrap_or_default();
                emit(self.event(&c, Action::Closed, now, Some(duration)));
            }
        }
        let due = earliest.map(|e| e + self.settings.aggregation);
        self.next_due = if complete {
            due
        } else {
            match (self.next_due, due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        // A connection this poll did not see may have opened while it ran: the poll's
        // start, not its end, bounds the age of what it missed.
        self.last_poll = Some(started);
        monitor::set(&METRICS.conn_sockets_tracked, self.conns.len() as u64);
    }

    /// Applies one kernel close notification; `None` when it adds nothing (already closed,
    /// or not reportable). `owners` names the process of a connection no poll saw by its
    /// recorded connect.
    pub fn apply_close(
        &mut self,
        r: &SockRecord,
        now: SystemTime,
        owners: &dyn OwnerLookup,
    ) -> Option<ConnEvent> {
        if self.recently_closed.contains(&r.cookie) {
            return None;
        }
        if let Some(mut c) = self.conns.remove(&r.cookie) {
            self.remember_closed(r.cookie, now);
            if c.direction == Direction::Listening {
                self.remove_listener(&c.record);
            }
            // The notification has the final counters; keep the addresses we knew.
            if r.tcp_info.is_some() {
                c.record.tcp_info = r.tcp_info;
            }
            c.record.state = r.state;
            if c.owner.is_some() {
                c.attribution = Attribution::Cache;
                monitor::inc(&METRICS.procs_cache);
            }
            let duration = now.duration_since(c.first_seen).unwrap_or_default();
            monitor::set(&METRICS.conn_sockets_tracked, self.conns.len() as u64);
            return Some(self.event(&c, Action::Closed, now, Some(duration)));
        }
        if !self.reportable_close(r) {
            return None;
        }
        // Never seen by a poll: opened and closed in between.
        self.remember_closed(r.cookie, now);
        // A closing listener is already in state CLOSE; its unset peer still tells.
        let direction = if r.remote.port() == 0 && r.remote.ip().is_unspecified() {
            Direction::Listening
        } else {
            self.direction_of(r)
        };
        // Its inode is gone with it: only its recorded connect or the listener can tell
        // the owner.
        let (owner, attribution) = self.attribute(r, direction, &Closed(owners));
        let conn = Conn::new(r, now, owner, attribution, direction, self.epoch);
        let age = self.estimated_age(r, now);
        Some(self.event(&conn, Action::Closed, now, Some(age)))
    }

    /// Age of a connection no poll saw: the tcp_info idle timers prove a lower bound, the
    /// previous poll (which did not see it) an upper one.
    fn estimated_age(&self, r: &SockRecord, now: SystemTime) -> Duration {
        let lower = Duration::from_millis(r.tcp_info.map_or(0, |t| u64::from(t.min_age_ms())));
        match self.last_poll.and_then(|p| now.duration_since(p).ok()) {
            Some(upper) => lower.min(upper),
            None => lower,
        }
    }

    fn reportable(&self, r: &SockRecord) -> bool {
        if r.transport == Transport::Tcp {
            match r.state {
                state::TIME_WAIT => {
                    monitor::inc(&METRICS.conn_timewait_skipped);
                    return false;
                }
                // Half-open request sockets become a new socket (and cookie) once accepted.
                state::SYN_RECV | state::NEW_SYN_RECV => return false,
                _ => {}
            }
        }
        self.settings.local_connections || !is_local(r)
    }

    fn reportable_close(&self, r: &SockRecord) -> bool {
        self.settings.local_connections || !is_local(r)
    }

    fn rebuild_listeners(&mut self, records: &[SockRecord], owners: &dyn OwnerLookup) {
        self.listeners.clear();
        for r in records.iter().filter(|r| is_listening(r)) {
            let owner = owners
                .owner(r.inode)
                .or_else(|| self.conns.get(&r.cookie).and_then(|c| c.owner.clone()));
            self.listeners
                .entry((r.netns, r.transport, r.local.port()))
                .or_default()
                .push((r.local.ip(), owner));
        }
    }

    /// Adds the listening sockets among `records` to the listeners already known.
    fn add_listeners(&mut self, records: &[SockRecord], owners: &dyn OwnerLookup) {
        for r in records.iter().filter(|r| is_listening(r)) {
            let owner = owners
                .owner(r.inode)
                .or_else(|| self.conns.get(&r.cookie).and_then(|c| c.owner.clone()));
            let bound = self
                .listeners
                .entry((r.netns, r.transport, r.local.port()))
                .or_default();
            match bound.iter_mut().find(|(ip, _)| *ip == r.local.ip()) {
                Some(b) => b.1 = owner.or(b.1.take()),
                None => bound.push((r.local.ip(), owner)),
            }
        }
    }

    /// Forgets a listening socket that closed (until the next complete poll rebuilds them).
    fn remove_listener(&mut self, r: &SockRecord) {
        let key = (r.netns, r.transport, r.local.port());
        if let Some(bound) = self.listeners.get_mut(&key) {
            bound.retain(|(ip, _)| *ip != r.local.ip());
            if bound.is_empty() {
                self.listeners.remove(&key);
            }
        }
    }

    fn direction_of(&self, r: &SockRecord) -> Direction {
        if is_listening(r) {
            return Direction::Listening;
        }
        match self.listeners.get(&(r.netns, r.transport, r.local.port())) {
            Some(bound)
                if bound
                    .iter()
                    .any(|(ip, _)| ip.is_unspecified() || *ip == r.local.ip()) =>
            {
                Direction::Incoming
            }
            _ => Direction::Outgoing,
        }
    }

    fn listener_owner(&self, r: &SockRecord) -> Option<Arc<ProcessInfo>> {
        let bound = self
            .listeners
            .get(&(r.netns, r.transport, r.local.port()))?;
        bound
            .iter()
            .find(|(ip, _)| *ip == r.local.ip())
            .or_else(|| bound.iter().find(|(ip, _)| ip.is_unspecified()))
            .and_then(|(_, p)| p.clone())
    }

    fn attribute(
        &self,
        r: &SockRecord,
        direction: Direction,
        owners: &dyn OwnerLookup,
    ) -> (Option<Arc<ProcessInfo>>, Attribution) {
        if let Some(p) = owners.owner(r.inode) {
            monitor::inc(&METRICS.procs_hits);
            return (Some(p), Attribution::Procfs);
        }
        if direction == Direction::Outgoing
            && let Some(p) = owners.connector(r)
        {
            monitor::inc(&METRICS.procs_connect);
            return (Some(p), Attribution::Connect);
        }
        if direction == Direction::Incoming
            && let Some(p) = self.listener_owner(r)
        {
            monitor::inc(&METRICS.procs_listener);
            return (Some(p), Attribution::Listener);
        }
        monitor::inc(&METRICS.procs_misses);
        (None, Attribution::None)
    }

    fn remember_closed(&mut self, cookie: u64, now: SystemTime) {
        if self.recently_closed.insert(cookie) {
            self.closed_order.push_back((now, cookie));
        }
        // Bounded: the memory only needs to cover a poll or two.
        while self.closed_order.len() > self.settings.max_connections {
            if let Some((_, c)) = self.closed_order.pop_front() {
                self.recently_closed.remove(&c);
            }
        }
    }

    fn forget_old_closes(&mut self, now: SystemTime) {
        while let Some((t, c)) = self.closed_order.front().copied() {
            if now.duration_since(t).unwrap_or_default() <= self.settings.closed_memory {
                break;
            }
            self.closed_order.pop_front();
            self.recently_closed.remove(&c);
        }
    }

    fn event(
        &self,
        c: &Conn,
        action: Action,
        now: SystemTime,
        duration: Option<Duration>,
    ) -> ConnEvent {
        let r = &c.record;
        match action {
            Action::Listening => monitor::inc(&METRICS.conn_events_listening),
            Action::Open => monitor::inc(&METRICS.conn_events_open),
            Action::Active => monitor::inc(&METRICS.conn_events_active),
            Action::Closed => monitor::inc(&METRICS.conn_events_closed),
        }
        let listening = c.direction == Direction::Listening;
        let tcp = (r.transport == Transport::Tcp).then(|| TcpFields {
            state: state::name(r.state),
            info: if self.settings.tcp_info {
                r.tcp_info.as_ref().map(TcpInfoFields::from)
            } else {
                None
            },
        });
        ConnEvent {
            timestamp: now,
            action,
            direction: c.direction,
            transport: r.transport.name(),
            family: r.family.name(),
            local_ip: r.local.ip(),
            local_port: r.local.port(),
            remote_ip: (!listening).then(|| r.remote.ip()),
            remote_port: (!listening).then(|| r.remote.port()),
            community_id: c.community_id,
            local_process: if self.settings.expose_process_info {
                c.owner.clone()
            } else {
                None
            },
            attribution: c.attribution,
            tcp,
            duration_ms: duration.map(|d| d.as_millis() as u64),
            cookie: r.cookie,
            netns: r.netns,
        }
    }
}

fn is_listening(r: &SockRecord) -> bool {
    match r.transport {
        Transport::Tcp => r.state == state::LISTEN,
        // An unconnected UDP socket receives from anyone: it is the UDP "listener".
        Transport::Udp => r.remote.port() == 0 && r.remote.ip().is_unspecified(),
    }
}

fn is_local(r: &SockRecord) -> bool {
    r.local.ip().is_loopback() && (r.remote.ip().is_loopback() || r.remote.ip().is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::diag::Family;
    use std::collections::HashMap;
    use std::net::SocketAddr;

    struct Owners(HashMap<u64, Arc<ProcessInfo>>);
    impl OwnerLookup for Owners {
        fn owner(&self, inode: u64) -> Option<Arc<ProcessInfo>> {
            self.0.get(&inode).cloned()
        }
    }

    fn proc_info(pid: u32, name: &str) -> Arc<ProcessInfo> {
        Arc::new(ProcessInfo {
            pid,
            binary: name.into(),
            exe: format!("/usr/bin/{name}"),
            cmdline: Some(name.into()),
            environ: vec![],
            user: "root".into(),
            ppid: 1,
            ns_pid: None,
            json: Default::default(),
        })
    }

    fn rec(cookie: u64, st: u8, local: &str, remote: &str, inode: u64) -> SockRecord {
        SockRecord {
            family: Family::V4,
            transport: Transport::Tcp,
            state: st,
            local: local.parse::<SocketAddr>().unwrap(),
            remote: remote.parse::<SocketAddr>().unwrap(),
            inode,
            uid: 0,
            cookie,
            tcp_info: None,
            netns: 1,
        }
    }

    fn settings() -> TableSettings {
        TableSettings {
            aggregation: Duration::from_secs(30),
            max_connections: 100,
            local_connections: true,
            expose_process_info: true,
            tcp_info: true,
            closed_memory: Duration::from_secs(10),
        }
    }

    fn poll(t: &mut ConnTable, recs: &[SockRecord], now: SystemTime, o: &Owners) -> Vec<ConnEvent> {
        let mut out = Vec::new();
        t.apply_poll(recs, now, now, o, &mut |e| out.push(e));
        out
    }

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    #[test]
    fn first_sight_gives_listening_and_open_with_direction() {
        let owners = Owners(HashMap::from([
            (10, proc_info(100, "nginx")),
            (11, proc_info(100, "nginx")),
            (12, proc_info(200, "curl")),
        ]));
        let mut t = ConnTable::new(settings());
        let recs = [
            rec(1, state::LISTEN, "0.0.0.0:80", "0.0.0.0:0", 10),
            rec(2, state::ESTABLISHED, "127.0.0.1:80", "127.0.0.1:40000", 11),
            rec(3, state::ESTABLISHED, "127.0.0.1:40000", "127.0.0.1:80", 12),
        ];
        let ev = poll(&mut t, &recs, at(0), &owners);
        assert_eq!(ev.len(), 3);
        assert_eq!(
            (ev[0].action, ev[0].direction),
            (Action::Listening, Direction::Listening)
        );
        assert_eq!(ev[0].remote_ip, None);
        assert_eq!(
            (ev[1].action, ev[1].direction),
            (Action::Open, Direction::Incoming)
        );
        assert_eq!(ev[1].local_process.as_ref().unwrap().pid, 100);
        assert_eq!(
            (ev[2].action, ev[2].direction),
            (Action::Open, Direction::Outgoing)
        );
        assert_eq!(ev[2].local_process.as_ref().unwrap().binary, "curl");
        assert_eq!(ev[2].attribution, Attribution::Procfs);
        // Nothing new on the next poll, inside the aggregation window.
        assert!(poll(&mut t, &recs, at(5), &owners).is_empty());
        // After the window, each open socket is re-published once.
        let ev = poll(&mut t, &recs, at(31), &owners);
        assert_eq!(ev.len(), 3);
        assert!(ev.iter().all(|e| e.action == Action::Active));
    }

    /// Owners by inode, and connect records by local port.
    struct WithConnects(Owners, HashMap<u16, Arc<ProcessInfo>>);
    impl OwnerLookup for WithConnects {
        fn owner(&self, inode: u64) -> Option<Arc<ProcessInfo>> {
            self.0.owner(inode)
        }
        fn connector(&self, r: &SockRecord) -> Option<Arc<ProcessInfo>> {
            self.1.get(&r.local.port()).cloned()
        }
    }

    #[test]
    fn connect_records_name_outgoing_connections_the_index_cannot() {
        let o = WithConnects(
            Owners(HashMap::from([
                (10, proc_info(100, "server")),
                (12, proc_info(300, "holder")),
            ])),
            HashMap::from([
                (40000, proc_info(200, "curl")),
                (40001, proc_info(201, "wget")),
                (40002, proc_info(202, "opener")),
                (80, proc_info(999, "never")),
            ]),
        );
        let mut t = ConnTable::new(settings());
        let listen = rec(1, state::LISTEN, "0.0.0.0:80", "0.0.0.0:0", 10);
        let mut out = Vec::new();
        t.apply_poll(
            &[
                listen,
                // Outgoing, inode unknown: the connect record.
                rec(2, state::ESTABLISHED, "10.0.0.1:40000", "10.0.0.2:443", 0),
                // Outgoing, held by a process the index knows: the holder wins.
                rec(3, state::ESTABLISHED, "10.0.0.1:40002", "10.0.0.2:443", 12),
                // Incoming, unknown inode: the listener, never a connect record.
                rec(4, state::ESTABLISHED, "10.0.0.1:80", "10.0.0.3:5000", 0),
            ],
            at(0),
            at(0),
            &o,
            &mut |e| out.push(e),
        );
        let by_cookie = |c: u64| out.iter().find(|e| e.cookie == c).unwrap();
        assert_eq!(by_cookie(2).attribution, Attribution::Connect);
        assert_eq!(by_cookie(2).local_process.as_ref().unwrap().binary, "curl");
        assert_eq!(by_cookie(3).attribution, Attribution::Procfs);
        assert_eq!(by_cookie(3).local_process.as_ref().unwrap().pid, 300);
        assert_eq!(by_cookie(4).attribution, Attribution::Listener);
        // A connection no poll saw: its close names the connecting process.
        let closed = rec(5, state::CLOSE, "10.0.0.1:40001", "10.0.0.2:443", 0);
        let e = t.apply_close(&closed, at(1), &o).unwrap();
        assert_eq!(
            (e.action, e.direction),
            (Action::Closed, Direction::Outgoing)
        );
        assert_eq!(e.attribution, Attribution::Connect);
        assert_eq!(e.local_process.as_ref().unwrap().pid, 201);
        let mut text = String::new();
        e.write_json(&mut text);
        assert!(text.contains("\"attribution\":\"connect\""), "{text}");
        // Without a record: none.
        let e = t
            .apply_close(
                &rec(6, state::CLOSE, "10.0.0.1:40009", "10.0.0.2:443", 0),
                at(1),
                &o,
            )
            .unwrap();
        assert_eq!(e.attribution, Attribution::None);
    }

    /// The exact text of an event's own fields: names and order of the event contract,
    /// `tcp_info` inside `tcp`, the cookie as a string, the process as its cached JSON.
    #[test]
    fn event_fields_serialize_as_the_contract_says() {
        let owners = Owners(HashMap::from([(12, proc_info(200, "curl"))]));
        let mut t = ConnTable::new(settings());
        let mut r = rec(
            18_446_744_073_709_551_615,
            state::ESTABLISHED,
            "10.0.0.1:40000",
            "10.0.0.2:80",
            12,
        );
        r.tcp_info = Some(TcpInfo {
            state: state::ESTABLISHED,
            retransmits: 1,
            last_data_sent_ms: 0,
            last_data_recv_ms: 0,
            last_ack_recv_ms: 0,
            rtt_us: 250,
            rttvar_us: 50,
            snd_cwnd: 10,
            total_retrans: 2,
            bytes_acked: 1_000,
            bytes_received: 2_000,
            segs_out: 30,
            segs_in: 40,
        });
        let ev = poll(&mut t, &[r], at(0), &owners);
        let json = serde_json::to_string(&ev[0]).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"action":"open","direction":"outgoing","transport":"tcp","family":"ipv4","#,
                r#""local_ip":"10.0.0.1","local_port":40000,"remote_ip":"10.0.0.2","remote_port":80,"#,
                r#""community_id":"1:3k1SoWXs/FltHw2aBCgUTgbDQF4=","#,
                r#""local_process":{"pid":200,"binary":"curl","exe":"/usr/bin/curl","cmdline":"curl","user":"root","ppid":1},"#,
                r#""attribution":"procfs","tcp":{"state":"ESTABLISHED","rtt_us":250,"rttvar_us":50,"#,
                r#""retransmits":1,"total_retrans":2,"bytes_acked":1000,"bytes_received":2000,"segs_in":40,"#,
                r#""segs_out":30,"cwnd":10},"cookie":"18446744073709551615","netns":1}"#
            )
        );
        let mut written = String::new();
        ev[0].write_json(&mut written);
        assert_eq!(written, json, "the hand-written text is serde's");
        // Without tcp_info, `tcp` holds the state alone.
        let mut t = ConnTable::new(TableSettings {
            tcp_info: false,
            ..settings()
        });
        let ev = poll(&mut t, &[r], at(0), &owners);
        let v = serde_json::to_value(&ev[0]).unwrap();
        assert_eq!(v["tcp"], serde_json::json!({"state": "ESTABLISHED"}));
    }

    /// `write_json` gives exactly what serde gives, over every shape of event: listening
    /// or connected, both families, with and without process, tcp_info and duration, a
    /// process whose details need escaping.
    #[test]
    fn hand_written_event_text_equals_serde() {
        let odd = Arc::new(ProcessInfo {
            cmdline: Some("sh -c \"echo \\ é\t\u{1}\"".into()),
            environ: vec!["A=\"b\"".into()],
            ns_pid: Some(3),
            ..(*proc_info(7, "we\"ird")).clone()
        });
        let info = TcpInfoFields {
            rtt_us: u32::MAX,
            rttvar_us: 0,
            retransmits: u8::MAX,
            total_retrans: 1,
            bytes_acked: u64::MAX,
            bytes_received: 0,
            segs_in: 2,
            segs_out: 3,
            cwnd: 10,
        };
        let mut n = 0;
        for listening in [false, true] {
            for ip in ["10.1.2.3", "::1", "fe80::1:2", "0.0.0.0", "255.255.255.255"] {
                for process in [None, Some(proc_info(1, "nginx")), Some(odd.clone())] {
                    for tcp in [
                        None,
                        Some(TcpFields {
                            state: "LISTEN",
                            info: None,
                        }),
                        Some(TcpFields {
                            state: "ESTABLISHED",
                            info: Some(info.clone()),
                        }),
                    ] {
                        for duration_ms in [None, Some(0), Some(123_456)] {
                            let ip: IpAddr = ip.parse().unwrap();
                            let e = ConnEvent {
                                timestamp: at(0),
                                action: if listening {
                                    Action::Listening
                                } else {
                                    Action::Closed
                                },
                                direction: if listening {
                                    Direction::Listening
                                } else {
                                    Direction::Incoming
                                },
                                transport: "tcp",
                                family: if ip.is_ipv4() { "ipv4" } else { "ipv6" },
                                local_ip: ip,
                                local_port: 65535,
                                remote_ip: (!listening).then_some(ip),
                                remote_port: (!listening).then_some(1),
                                community_id: (!listening)
                                    .then(|| {
                                        CommunityId::of_ports(
                                            "tcp",
                                            (ip, 65535).into(),
                                            (ip, 1).into(),
                                        )
                                    })
                                    .flatten(),
                                local_process: process.clone(),
                                attribution: if process.is_some() {
                                    Attribution::Listener
                                } else {
                                    Attribution::None
                                },
                                tcp: tcp.clone(),
                                duration_ms,
                                cookie: u64::MAX - n,
                                netns: 4_026_531_833,
                            };
                            let mut written = String::new();
                            e.write_json(&mut written);
                            assert_eq!(written, serde_json::to_string(&e).unwrap());
                            n += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(n, 270);
    }

    /// Polls of changes open what they list, close nothing for not listing it, learn
    /// listeners as they come (and forget one that closes), and upgrade an owner found
    /// later.
    #[test]
    fn changes_open_and_update_but_never_close_by_absence() {
        let owners = Owners(HashMap::from([
            (12, proc_info(200, "pg")),
            (13, proc_info(201, "pg-worker")),
        ]));
        let mut t = ConnTable::new(settings());
        let old = rec(1, state::ESTABLISHED, "10.0.0.5:40000", "10.0.0.9:443", 11);
        poll(&mut t, std::slice::from_ref(&old), at(0), &owners);
        let changes = |t: &mut ConnTable, recs: &[SockRecord], s: u64, o: &Owners| {
            let mut out = Vec::new();
            t.apply_changes(recs, at(s), at(s), o, &mut |e| out.push(e));
            out
        };
        // A new listener, then a connection to it not accepted yet (no inode).
        let listener = rec(2, state::LISTEN, "0.0.0.0:5432", "0.0.0.0:0", 12);
        let e = changes(&mut t, std::slice::from_ref(&listener), 1, &owners);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].action, Action::Listening);
        let incoming = rec(3, state::ESTABLISHED, "10.0.0.5:5432", "10.0.0.7:50000", 0);
        let e = changes(&mut t, std::slice::from_ref(&incoming), 2, &owners);
        assert_eq!(e.len(), 1);
        assert_eq!(
            (e[0].action, e[0].direction),
            (Action::Open, Direction::Incoming)
        );
        assert_eq!(e[0].attribution, Attribution::Listener);
        assert_eq!(
            t.len(),
            3,
            "the connection the changes did not list is still tracked"
        );
        // Looked up again once accepted: no second event, the owner from its own fd.
        let accepted = SockRecord {
            inode: 13,
            ..incoming
        };
        assert!(changes(&mut t, std::slice::from_ref(&accepted), 3, &owners).is_empty());
        let mut closing = accepted;
        closing.inode = 0;
        closing.state = state::CLOSE;
        let e = t
            .apply_close(&closing, at(4), &Owners(HashMap::new()))
            .unwrap();
        assert_eq!(e.attribution, Attribution::Cache);
        assert_eq!(
            e.local_process.unwrap().pid,
            201,
            "the accepting process, not the listener's"
        );
        // The listener closes: a later connection on its port is outgoing.
        let mut gone = listener;
        gone.state = state::CLOSE;
        assert!(
            t.apply_close(&gone, at(5), &Owners(HashMap::new()))
                .is_some()
        );
        let out = rec(4, state::ESTABLISHED, "10.0.0.5:5432", "10.0.0.8:80", 0);
        let e = changes(&mut t, std::slice::from_ref(&out), 6, &owners);
        assert_eq!(e[0].direction, Direction::Outgoing);
        // A complete poll still closes what it does not see.
        let e = poll(&mut t, &[], at(7), &owners);
        assert_eq!(e.len(), 2);
        assert!(e.iter().all(|e| e.action == Action::Closed));
    }

    /// A due time left by a connection that closed is not an `active` event due.
    #[test]
    fn due_time_of_a_closed_connection_is_recomputed() {
        let owners = Owners(HashMap::new());
        let mut t = ConnTable::new(settings());
        let a = rec(1, state::ESTABLISHED, "10.0.0.5:40000", "10.0.0.9:443", 0);
        let b = rec(2, state::ESTABLISHED, "10.0.0.5:40001", "10.0.0.9:443", 0);
        poll(&mut t, std::slice::from_ref(&a), at(0), &owners);
        let mut out = Vec::new();
        t.apply_changes(
            std::slice::from_ref(&b),
            at(10),
            at(10),
            &owners,
            &mut |e| out.push(e),
        );
        assert!(
            t.apply_close(
                &SockRecord {
                    state: state::CLOSE,
                    ..a
                },
                at(20),
                &owners
            )
            .is_some()
        );
        assert!(t.active_due(at(31)), "the remembered due time is a's");
        assert!(!t.active_due_now(at(31)), "a closed; b is due at 40");
        assert_eq!(t.next_due(), Some(at(40)));
        assert!(t.active_due_now(at(40)));
    }

    #[test]
    fn close_notification_then_poll_gives_one_closed_event() {
        let owners = Owners(HashMap::from([(12, proc_info(200, "curl"))]));
        let mut t = ConnTable::new(settings());
        let r = rec(3, state::ESTABLISHED, "10.0.0.5:40000", "10.0.0.9:5432", 12);
        poll(&mut t, std::slice::from_ref(&r), at(0), &owners);
        let mut closing = r;
        closing.inode = 0;
        closing.state = state::CLOSE;
        let e = t
            .apply_close(&closing, at(4), &Owners(HashMap::new()))
            .unwrap();
        assert_eq!(e.action, Action::Closed);
        assert_eq!(e.attribution, Attribution::Cache);
        assert_eq!(e.local_process.unwrap().pid, 200);
        assert_eq!(e.duration_ms, Some(4000));
        // A poll that raced with the close still lists it: no resurrection, no second close.
        assert!(poll(&mut t, std::slice::from_ref(&r), at(4), &owners).is_empty());
        assert!(poll(&mut t, &[], at(5), &owners).is_empty());
        assert!(
            t.apply_close(&closing, at(5), &Owners(HashMap::new()))
                .is_none()
        );
    }

    #[test]
    fn poll_diff_closes_what_disappeared_without_notification() {
        let owners = Owners(HashMap::new());
        let mut t = ConnTable::new(settings());
        let r = rec(3, state::ESTABLISHED, "10.0.0.5:40000", "10.0.0.9:5432", 12);
        poll(&mut t, &[r], at(0), &owners);
        let ev = poll(&mut t, &[], at(2), &owners);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].action, Action::Closed);
        assert_eq!(ev[0].attribution, Attribution::None);
        assert!(ev[0].local_process.is_none());
        assert_eq!(ev[0].duration_ms, Some(2000));
    }

    #[test]
    fn short_lived_incoming_connection_gets_the_listener_and_an_estimated_age() {
        let owners = Owners(HashMap::from([(10, proc_info(100, "server"))]));
        let mut t = ConnTable::new(settings());
        poll(
            &mut t,
            &[rec(1, state::LISTEN, "127.0.0.1:9000", "0.0.0.0:0", 10)],
            at(0),
            &owners,
        );
        let mut r = rec(50, state::CLOSE, "127.0.0.1:9000", "127.0.0.1:45000", 0);
        r.tcp_info = Some(TcpInfo {
            last_data_recv_ms: 40,
            ..Default::default()
        });
        let e = t.apply_close(&r, at(1), &Owners(HashMap::new())).unwrap();
        assert_eq!(e.direction, Direction::Incoming);
        assert_eq!(e.attribution, Attribution::Listener);
        assert_eq!(e.local_process.unwrap().pid, 100);
        assert_eq!(e.duration_ms, Some(40));
        assert_eq!(e.remote_port, Some(45000));
        // The client side of the same connection: outgoing, owner unknown.
        let c = rec(51, state::CLOSE, "127.0.0.1:45000", "127.0.0.1:9000", 0);
        let e = t.apply_close(&c, at(1), &Owners(HashMap::new())).unwrap();
        assert_eq!(
            (e.direction, e.attribution),
            (Direction::Outgoing, Attribution::None)
        );
    }

    #[test]
    fn skips_time_wait_and_bounds_the_table() {
        let owners = Owners(HashMap::new());
        let mut s = settings();
        s.max_connections = 2;
        let mut t = ConnTable::new(s);
        let recs: Vec<SockRecord> = (0..5)
            .map(|i| {
                rec(
                    i,
                    state::ESTABLISHED,
                    &format!("10.0.0.5:{}", 40000 + i),
                    "10.0.0.9:80",
                    0,
                )
            })
            .chain([rec(9, state::TIME_WAIT, "10.0.0.5:1", "10.0.0.9:80", 0)])
            .collect();
        let ev = poll(&mut t, &recs, at(0), &owners);
        assert_eq!(ev.len(), 2);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn local_connections_can_be_left_out() {
        let owners = Owners(HashMap::new());
        let mut s = settings();
        s.local_connections = false;
        let mut t = ConnTable::new(s);
        let recs = [
            rec(1, state::ESTABLISHED, "127.0.0.1:1000", "127.0.0.1:2000", 0),
            rec(2, state::ESTABLISHED, "10.0.0.5:1000", "10.0.0.9:2000", 0),
        ];
        let ev = poll(&mut t, &recs, at(0), &owners);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].cookie, 2);
    }
}

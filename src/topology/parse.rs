//! One shipped line to one [`Observation`]: pure, no state, no I/O.
//!
//! Agents write classic events (connbeat's names, Packetbeat's classic transaction names)
//! or ECS ones (`source`/`destination`, `network.*`, `process.name`, `agent.name`), and
//! older agents write no `community_id`. Both shapes reduce here to the few facts the
//! graph needs: who reported, which end it owns, the two addresses, and the figures.
//! What cannot be read is a [`Skip`] with its reason, never an error that stops a read.

use super::fields::{Bad, Cursor, Ips, Shapes};
use crate::known_keys;
use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

/// Why a line gave nothing to the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Not JSON, or JSON of the wrong shape.
    Malformed,
    /// An event type the graph does not use (flows, UDP-less stats, unknown types).
    UnknownType,
    /// A known type missing a field the graph needs (an address, a port, a timestamp).
    Incomplete,
}

/// The agent that shipped an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Reporter<'a> {
    /// `beat.name` / `agent.name`, else the hostname.
    pub host: Cow<'a, str>,
    pub container: Option<Cow<'a, str>>,
    /// The agent's own non-loopback addresses (`beat.local_ips` / `host.ip`).
    pub local_ips: Ips,
}

/// What happened to a connection in this event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Open,
    Closed,
}

/// `tcp_info` figures, as the reporting end counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tcp {
    pub rtt_us: u64,
    pub retransmits: u64,
    /// Bytes this end sent that the other acknowledged.
    pub bytes_acked: u64,
    pub bytes_received: u64,
}

/// One end of a connection, as its agent reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnObs<'a> {
    pub at_ms: i64,
    pub reporter: Reporter<'a>,
    pub action: Action,
    /// Whether the reporter owns the client end (it made the connection).
    pub reporter_is_client: bool,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub binary: Option<Cow<'a, str>>,
    pub community_id: Option<Cow<'a, str>>,
    pub tcp: Option<Tcp>,
}

/// A listening socket: a service, even before anyone connects to it.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenObs<'a> {
    pub at_ms: i64,
    pub reporter: Reporter<'a>,
    pub addr: SocketAddr,
    pub binary: Option<Cow<'a, str>>,
}

/// One protocol transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct TxnObs<'a> {
    /// Request time.
    pub at_ms: i64,
    pub reporter: Reporter<'a>,
    pub protocol: Cow<'a, str>,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub client_binary: Option<Cow<'a, str>>,
    pub server_binary: Option<Cow<'a, str>>,
    pub error: bool,
    pub latency_us: Option<u64>,
    pub community_id: Option<Cow<'a, str>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Observation<'a> {
    Conn(ConnObs<'a>),
    Listen(ListenObs<'a>),
    Txn(TxnObs<'a>),
}

/// The fields read from either shape; every other field is stepped over unread.
#[derive(Default)]
struct Raw<'a> {
    timestamp: Option<Cow<'a, str>>,
    kind: Option<Cow<'a, str>>,
    action: Option<Cow<'a, str>>,
    direction: Option<Cow<'a, str>>,
    transport: Option<Cow<'a, str>>,
    local_ip: Option<IpAddr>,
    local_port: Option<u16>,
    remote_ip: Option<IpAddr>,
    remote_port: Option<u16>,
    local_process: Option<Proc<'a>>,
    tcp: Option<RawTcp>,
    community_id: Option<Cow<'a, str>>,
    container: Option<Container<'a>>,
    beat: Option<Beat<'a>>,
    // Classic transactions.
    status: Option<Cow<'a, str>>,
    responsetime: Option<f64>,
    client_ip: Option<IpAddr>,
    client_port: Option<u16>,
    ip: Option<IpAddr>,
    port: Option<u16>,
    client_process: Option<Proc<'a>>,
    server_process: Option<Proc<'a>>,
    // ECS.
    event: Option<EcsEvent<'a>>,
    network: Option<EcsNetwork<'a>>,
    source: Option<EcsEnd<'a>>,
    destination: Option<EcsEnd<'a>>,
    process: Option<Proc<'a>>,
    agent: Option<Beat<'a>>,
    host: Option<EcsHost<'a>>,
    connbeat: Option<EcsConnbeat<'a>>,
}

known_keys! {
    /// The keys of an event's top level, classic and ECS.
    enum EventKey (shape 0) {
        Timestamp = "@timestamp",
        Type = "type",
        Action = "action",
        Direction = "direction",
        Transport = "transport",
        LocalIp = "local_ip",
        LocalPort = "local_port",
        RemoteIp = "remote_ip",
        RemotePort = "remote_port",
        LocalProcess = "local_process",
        Tcp = "tcp",
        CommunityId = "community_id",
        Container = "container",
        Beat = "beat",
        Status = "status",
        Responsetime = "responsetime",
        ClientIp = "client_ip",
        ClientPort = "client_port",
        Ip = "ip",
        Port = "port",
        ClientProcess = "client_process",
        ServerProcess = "server_process",
        Event = "event",
        Network = "network",
        Source = "source",
        Destination = "destination",
        Process = "process",
        Agent = "agent",
        Host = "host",
        Connbeat = "connbeat",
    }
}

impl<'a> Raw<'a> {
    /// Into `r`, which is large: filled in place rather than moved.
    fn read(c: &mut Cursor<'a, '_>, r: &mut Self) -> Result<(), Bad> {
        c.fields(|c, key| r.field(c, key))
    }

    #[inline(always)]
    fn field(&mut self, c: &mut Cursor<'a, '_>, key: EventKey) -> Result<(), Bad> {
        use EventKey as K;
        match key {
            K::Timestamp => self.timestamp = c.opt_str()?,
            K::Type => self.kind = c.opt_str()?,
            K::Action => self.action = c.opt_str()?,
            K::Direction => self.direction = c.opt_str()?,
            K::Transport => self.transport = c.opt_str()?,
            K::LocalIp => self.local_ip = c.opt(Cursor::ip)?,
            K::LocalPort => self.local_port = c.opt(Cursor::u16)?,
            K::RemoteIp => self.remote_ip = c.opt(Cursor::ip)?,
            K::RemotePort => self.remote_port = c.opt(Cursor::u16)?,
            K::LocalProcess => self.local_process = c.opt(Proc::read)?,
            K::Tcp => self.tcp = c.opt(RawTcp::read)?,
            K::CommunityId => self.community_id = c.opt_str()?,
            K::Container => self.container = c.opt(Container::read)?,
            K::Beat => self.beat = c.opt(Beat::read)?,
            K::Status => self.status = c.opt_str()?,
            K::Responsetime => self.responsetime = c.opt(Cursor::f64)?,
            K::ClientIp => self.client_ip = c.opt(Cursor::ip)?,
            K::ClientPort => self.client_port = c.opt(Cursor::u16)?,
            K::Ip => self.ip = c.opt(Cursor::ip)?,
            K::Port => self.port = c.opt(Cursor::u16)?,
            K::ClientProcess => self.client_process = c.opt(Proc::read)?,
            K::ServerProcess => self.server_process = c.opt(Proc::read)?,
            K::Event => self.event = c.opt(EcsEvent::read)?,
            K::Network => self.network = c.opt(EcsNetwork::read)?,
            K::Source => self.source = c.opt(EcsEnd::read)?,
            K::Destination => self.destination = c.opt(EcsEnd::read)?,
            K::Process => self.process = c.opt(Proc::read)?,
            K::Agent => self.agent = c.opt(Beat::read)?,
            K::Host => self.host = c.opt(EcsHost::read)?,
            K::Connbeat => self.connbeat = c.opt(EcsConnbeat::read)?,
        }
        Ok(())
    }
}

#[derive(Default)]
struct Proc<'a> {
    binary: Option<Cow<'a, str>>,
    name: Option<Cow<'a, str>>,
}

known_keys! {
    /// The keys of `local_process`, `client_process`, `server_process` (classic), `process` (ECS).
    enum ProcessKey (shape 1) {
        Binary = "binary",
        Name = "name",
    }
}

impl<'a> Proc<'a> {
    fn read(c: &mut Cursor<'a, '_>) -> Result<Self, Bad> {
        use ProcessKey as K;
        let mut p = Proc::default();
        // Done once it has a binary: what follows it (the command line ...) is not read.
        c.fields_while(|c, key| {
            match key {
                K::Binary => p.binary = c.opt_str()?,
                K::Name => p.name = c.opt_str()?,
            }
            Ok(p.binary.as_deref().is_none_or(str::is_empty))
        })?;
        Ok(p)
    }

    fn binary(self) -> Option<Cow<'a, str>> {
        self.binary.or(self.name).filter(|b| !b.is_empty())
    }
}

#[derive(Default)]
struct RawTcp {
    rtt_us: u64,
    retransmits: u64,
    total_retrans: Option<u64>,
    bytes_acked: u64,
    bytes_received: u64,
}

known_keys! {
    /// The keys of `tcp`.
    enum TcpKey (shape 2) {
        RttUs = "rtt_us",
        Retransmits = "retransmits",
        TotalRetrans = "total_retrans",
        BytesAcked = "bytes_acked",
        BytesReceived = "bytes_received",
    }
}

impl RawTcp {
    fn read(c: &mut Cursor<'_, '_>) -> Result<Self, Bad> {
        use TcpKey as K;
        let mut t = RawTcp::default();
        // Done once it has its five figures (one bit each).
        let mut seen = 0u8;
        c.fields_while(|c, key| {
            match key {
                K::RttUs => (t.rtt_us, seen) = (c.u64()?, seen | 1),
                K::Retransmits => (t.retransmits, seen) = (c.u64()?, seen | 2),
                K::TotalRetrans => (t.total_retrans, seen) = (c.opt(Cursor::u64)?, seen | 4),
                K::BytesAcked => (t.bytes_acked, seen) = (c.u64()?, seen | 8),
                K::BytesReceived => (t.bytes_received, seen) = (c.u64()?, seen | 16),
            }
            Ok(seen != 31)
        })?;
        Ok(t)
    }
}

#[derive(Default)]
struct Container<'a> {
    name: Option<Cow<'a, str>>,
    id: Option<Cow<'a, str>>,
}

known_keys! {
    /// The keys of `container`.
    enum ContainerKey (shape 3) {
        Name = "name",
        Id = "id",
    }
}

impl<'a> Container<'a> {
    fn read(c: &mut Cursor<'a, '_>) -> Result<Self, Bad> {
        use ContainerKey as K;
        let mut k = Container::default();
        c.fields(|c, key| {
            match key {
                K::Name => k.name = c.opt_str()?,
                K::Id => k.id = c.opt_str()?,
            }
            Ok(())
        })?;
        Ok(k)
    }
}

/// `beat` (classic) or `agent` (ECS).
#[derive(Default)]
struct Beat<'a> {
    name: Option<Cow<'a, str>>,
    hostname: Option<Cow<'a, str>>,
    local_ips: Ips,
}

known_keys! {
    /// The keys of `beat` (classic), `agent` (ECS).
    enum BeatKey (shape 4) {
        Name = "name",
        Hostname = "hostname",
        LocalIps = "local_ips",
    }
}

impl<'a> Beat<'a> {
    fn read(c: &mut Cursor<'a, '_>) -> Result<Self, Bad> {
        use BeatKey as K;
        let mut b = Beat::default();
        c.fields(|c, key| {
            match key {
                K::Name => b.name = c.opt_str()?,
                K::Hostname => b.hostname = c.opt_str()?,
                K::LocalIps => b.local_ips = c.ips()?,
            }
            Ok(())
        })?;
        Ok(b)
    }
}

#[derive(Default)]
struct EcsEvent<'a> {
    action: Option<Cow<'a, str>>,
    outcome: Option<Cow<'a, str>>,
    /// Nanoseconds.
    duration: Option<u64>,
    dataset: Option<Cow<'a, str>>,
    start: Option<Cow<'a, str>>,
}

known_keys! {
    /// The keys of ECS `event`.
    enum EcsEventKey (shape 5) {
        Action = "action",
        Outcome = "outcome",
        Duration = "duration",
        Dataset = "dataset",
        Start = "start",
    }
}

impl<'a> EcsEvent<'a> {
    fn read(c: &mut Cursor<'a, '_>) -> Result<Self, Bad> {
        use EcsEventKey as K;
        let mut e = EcsEvent::default();
        c.fields(|c, key| {
            match key {
                K::Action => e.action = c.opt_str()?,
                K::Outcome => e.outcome = c.opt_str()?,
                K::Duration => e.duration = c.opt(Cursor::u64)?,
                K::Dataset => e.dataset = c.opt_str()?,
                K::Start => e.start = c.opt_str()?,
            }
            Ok(())
        })?;
        Ok(e)
    }
}

#[derive(Default)]
struct EcsNetwork<'a> {
    community_id: Option<Cow<'a, str>>,
    direction: Option<Cow<'a, str>>,
    transport: Option<Cow<'a, str>>,
}

known_keys! {
    /// The keys of ECS `network`.
    enum EcsNetworkKey (shape 6) {
        CommunityId = "community_id",
        Direction = "direction",
        Transport = "transport",
    }
}

impl<'a> EcsNetwork<'a> {
    fn read(c: &mut Cursor<'a, '_>) -> Result<Self, Bad> {
        use EcsNetworkKey as K;
        let mut n = EcsNetwork::default();
        c.fields(|c, key| {
            match key {
                K::CommunityId => n.community_id = c.opt_str()?,
                K::Direction => n.direction = c.opt_str()?,
                K::Transport => n.transport = c.opt_str()?,
            }
            Ok(())
        })?;
        Ok(n)
    }
}

/// `source` or `destination`.
#[derive(Default)]
struct EcsEnd<'a> {
    ip: Option<IpAddr>,
    port: Option<u16>,
    /// The process's `name`.
    process: Option<Proc<'a>>,
}

known_keys! {
    /// The keys of ECS `source`, `destination`.
    enum EcsEndKey (shape 7) {
        Ip = "ip",
        Port = "port",
        Process = "process",
    }
}

impl<'a> EcsEnd<'a> {
    fn read(c: &mut Cursor<'a, '_>) -> Result<Self, Bad> {
        use EcsEndKey as K;
        let mut e = EcsEnd::default();
        c.fields(|c, key| {
            match key {
                K::Ip => e.ip = c.opt(Cursor::ip)?,
                K::Port => e.port = c.opt(Cursor::u16)?,
                K::Process => e.process = c.opt(Proc::read)?,
            }
            Ok(())
        })?;
        Ok(e)
    }
}

#[derive(Default)]
struct EcsHost<'a> {
    name: Option<Cow<'a, str>>,
    hostname: Option<Cow<'a, str>>,
    ip: Ips,
}

known_keys! {
    /// The keys of ECS `host`.
    enum EcsHostKey (shape 8) {
        Name = "name",
        Hostname = "hostname",
        Ip = "ip",
    }
}

impl<'a> EcsHost<'a> {
    fn read(c: &mut Cursor<'a, '_>) -> Result<Self, Bad> {
        use EcsHostKey as K;
        let mut h = EcsHost::default();
        c.fields(|c, key| {
            match key {
                K::Name => h.name = c.opt_str()?,
                K::Hostname => h.hostname = c.opt_str()?,
                K::Ip => h.ip = c.ips()?,
            }
            Ok(())
        })?;
        Ok(h)
    }
}

#[derive(Default)]
struct EcsConnbeat<'a> {
    action: Option<Cow<'a, str>>,
    direction: Option<Cow<'a, str>>,
    tcp: Option<RawTcp>,
}

known_keys! {
    /// The keys of ECS `connbeat`.
    enum EcsConnbeatKey (shape 9) {
        Action = "action",
        Direction = "direction",
        Tcp = "tcp",
    }
}

impl<'a> EcsConnbeat<'a> {
    fn read(c: &mut Cursor<'a, '_>) -> Result<Self, Bad> {
        use EcsConnbeatKey as K;
        let mut k = EcsConnbeat::default();
        c.fields(|c, key| {
            match key {
                K::Action => k.action = c.opt_str()?,
                K::Direction => k.direction = c.opt_str()?,
                K::Tcp => k.tcp = c.opt(RawTcp::read)?,
            }
            Ok(())
        })?;
        Ok(k)
    }
}

/// Reads lines as [`parse`] does, remembering the order of their keys ([`Shapes`]) to
/// read the next ones faster.
#[derive(Default)]
pub struct Reader {
    shapes: Box<Shapes>,
}

impl Reader {
    /// One line, as [`parse`] reads it.
    pub fn parse<'a>(&mut self, line: &'a [u8]) -> Result<Observation<'a>, Skip> {
        read(Cursor::learning(line, &mut self.shapes))
    }
}

/// Reads one line (surrounding whitespace ignored).
pub fn parse(line: &[u8]) -> Result<Observation<'_>, Skip> {
    read(Cursor::new(line))
}

fn read<'a>(mut cursor: Cursor<'a, '_>) -> Result<Observation<'a>, Skip> {
    let mut raw = Raw::default();
    Raw::read(&mut cursor, &mut raw).map_err(|_| Skip::Malformed)?;
    cursor.end().map_err(|_| Skip::Malformed)?;
    let ecs = raw.event.is_some() || raw.source.is_some() || raw.network.is_some();
    if ecs {
        from_ecs(&mut raw)
    } else {
        from_classic(&mut raw)
    }
}

/// Milliseconds since the epoch of an RFC 3339 timestamp.
pub fn parse_time_ms(s: &str) -> Option<i64> {
    utc_time_ms(s.as_bytes()).or_else(|| general_time_ms(s))
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, the form agents write, read directly: humantime's
/// general parser was a fortieth of the reading. `None` for anything else (other forms,
/// years before 1970, leap seconds), which [`general_time_ms`] then reads or refuses.
fn utc_time_ms(b: &[u8]) -> Option<i64> {
    if b.len() < 20 || b[b.len() - 1] != b'Z' {
        return None;
    }
    let d: &[u8; 19] = b[..19].try_into().ok()?;
    if d[4] != b'-' || d[7] != b'-' || d[10] != b'T' || d[13] != b':' || d[16] != b':' {
        return None;
    }
    let year = two_digits(d, 0)? * 100 + two_digits(d, 2)?;
    let (month, day) = (two_digits(d, 5)?, two_digits(d, 8)?);
    let hour = two_digits(d, 11)?;
    let (minute, second) = (two_digits(d, 14)?, two_digits(d, 17)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    if year < 1970 || day == 0 || day > month_days || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut ms = 0;
    let fraction = &b[19..b.len() - 1];
    if let Some(digits) = fraction.strip_prefix(b".") {
        if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        for i in 0..3 {
            ms = ms * 10 + digits.get(i).map_or(0, |d| i64::from(d - b'0'));
        }
    } else if !fraction.is_empty() {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (years counted from March, so
    // that the leap day ends a year).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + ms)
}

#[inline(always)]
fn two_digits(d: &[u8; 19], i: usize) -> Option<i64> {
    let (h, l) = (d[i].wrapping_sub(b'0'), d[i + 1].wrapping_sub(b'0'));
    (h <= 9 && l <= 9).then_some(i64::from(h) * 10 + i64::from(l))
}

fn general_time_ms(s: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(s).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_millis()).ok()
}

fn time_of(raw: &Raw) -> Result<i64, Skip> {
    raw.timestamp
        .as_deref()
        .and_then(parse_time_ms)
        .ok_or(Skip::Incomplete)
}

fn reporter<'a>(
    beat: Option<Beat<'a>>,
    host: Option<EcsHost<'a>>,
    container: Option<Container<'a>>,
) -> Result<Reporter<'a>, Skip> {
    let (mut name, mut ips) = match beat {
        Some(b) => (b.name.filter(|n| !n.is_empty()).or(b.hostname), b.local_ips),
        None => (None, Ips::new()),
    };
    if let Some(h) = host {
        if name.as_deref().is_none_or(str::is_empty) {
            name = h.name.or(h.hostname);
        }
        if ips.is_empty() {
            ips = h.ip;
        }
    }
    let host = name.filter(|n| !n.is_empty()).ok_or(Skip::Incomplete)?;
    ips.retain(|ip| !ip.is_loopback());
    Ok(Reporter {
        host,
        container: container
            .and_then(|c| c.name.or(c.id))
            .filter(|c| !c.is_empty()),
        local_ips: ips,
    })
}

fn tcp_of(t: Option<RawTcp>) -> Option<Tcp> {
    t.map(|t| Tcp {
        rtt_us: t.rtt_us,
        retransmits: t.total_retrans.unwrap_or(t.retransmits),
        bytes_acked: t.bytes_acked,
        bytes_received: t.bytes_received,
    })
}

fn action_of(a: &str) -> Option<Action> {
    match a {
        "open" | "active" | "connection-opened" | "connection-active" => Some(Action::Open),
        "closed" | "connection-closed" => Some(Action::Closed),
        _ => None,
    }
}

fn is_tcp(t: Option<&str>) -> bool {
    t.is_none_or(|t| t.eq_ignore_ascii_case("tcp"))
}

fn from_classic<'a>(raw: &mut Raw<'a>) -> Result<Observation<'a>, Skip> {
    let kind = raw.kind.as_deref().ok_or(Skip::Malformed)?;
    match kind {
        "connbeat" => {}
        "flow" | "" => return Err(Skip::UnknownType),
        _ => return classic_txn(raw),
    }
    if !is_tcp(raw.transport.as_deref()) {
        return Err(Skip::UnknownType);
    }
    let at_ms = time_of(raw)?;
    let direction = raw.direction.as_deref().unwrap_or("");
    let local = SocketAddr::new(
        raw.local_ip.ok_or(Skip::Incomplete)?,
        raw.local_port.ok_or(Skip::Incomplete)?,
    );
    let binary = raw.local_process.take().and_then(Proc::binary);
    let reporter = reporter(raw.beat.take(), None, raw.container.take())?;
    if direction == "listening" || raw.action.as_deref() == Some("listening") {
        return Ok(Observation::Listen(ListenObs {
            at_ms,
            reporter,
            addr: local,
            binary,
        }));
    }
    let remote = SocketAddr::new(
        raw.remote_ip.ok_or(Skip::Incomplete)?,
        raw.remote_port.ok_or(Skip::Incomplete)?,
    );
    let action = raw
        .action
        .as_deref()
        .and_then(action_of)
        .ok_or(Skip::UnknownType)?;
    let (reporter_is_client, client, server) = match direction {
        "outgoing" => (true, local, remote),
        "incoming" => (false, remote, local),
        _ => return Err(Skip::Incomplete),
    };
    Ok(Observation::Conn(ConnObs {
        at_ms,
        reporter,
        action,
        reporter_is_client,
        client,
        server,
        binary,
        community_id: raw.community_id.take(),
        tcp: tcp_of(raw.tcp.take()),
    }))
}

fn classic_txn<'a>(raw: &mut Raw<'a>) -> Result<Observation<'a>, Skip> {
    let at_ms = time_of(raw)?;
    let client = SocketAddr::new(
        raw.client_ip.ok_or(Skip::UnknownType)?,
        raw.client_port.ok_or(Skip::Incomplete)?,
    );
    let server = SocketAddr::new(
        raw.ip.ok_or(Skip::Incomplete)?,
        raw.port.ok_or(Skip::Incomplete)?,
    );
    if !is_tcp(raw.transport.as_deref()) {
        return Err(Skip::UnknownType);
    }
    let error = raw.status.as_deref().is_some_and(|s| s != "OK");
    Ok(Observation::Txn(TxnObs {
        at_ms,
        reporter: reporter(raw.beat.take(), None, raw.container.take())?,
        protocol: raw.kind.take().ok_or(Skip::Malformed)?,
        client,
        server,
        client_binary: raw.client_process.take().and_then(Proc::binary),
        server_binary: raw.server_process.take().and_then(Proc::binary),
        error,
        latency_us: raw.responsetime.map(|ms| (ms * 1000.0) as u64),
        community_id: raw.community_id.take(),
    }))
}

fn end(e: Option<&EcsEnd>) -> Option<SocketAddr> {
    let e = e?;
    Some(SocketAddr::new(e.ip?, e.port?))
}

fn from_ecs<'a>(raw: &mut Raw<'a>) -> Result<Observation<'a>, Skip> {
    let at_ms = time_of(raw)?;
    let network = raw.network.take().unwrap_or_default();
    let event = raw.event.take().unwrap_or_default();
    let cb = raw.connbeat.take().unwrap_or_default();
    if !is_tcp(network.transport.as_deref()) {
        return Err(Skip::UnknownType);
    }
    let kind = raw.kind.as_deref().unwrap_or("");
    let dataset = event.dataset.as_deref().unwrap_or("");
    let conn_event = kind == "connbeat" || dataset.starts_with("connbeat") || cb.action.is_some();
    let reporter = reporter(
        raw.agent.take().or(raw.beat.take()),
        raw.host.take(),
        raw.container.take(),
    )?;
    let mut source = raw.source.take();
    let mut destination = raw.destination.take();
    if conn_event {
        let action_name = cb
            .action
            .as_deref()
            .or(event.action.as_deref())
            .unwrap_or("");
        let direction = cb
            .direction
            .as_deref()
            .or(network.direction.as_deref())
            .unwrap_or("");
        let binary = raw.process.take().and_then(Proc::binary);
        if action_name == "listening" || direction == "listening" {
            let addr = end(destination.as_ref())
                .or(end(source.as_ref()))
                .ok_or(Skip::Incomplete)?;
            return Ok(Observation::Listen(ListenObs {
                at_ms,
                reporter,
                addr,
                binary,
            }));
        }
        let action = action_of(action_name).ok_or(Skip::UnknownType)?;
        let reporter_is_client = match direction {
            "outgoing" | "egress" | "outbound" => true,
            "incoming" | "ingress" | "inbound" => false,
            _ => return Err(Skip::Incomplete),
        };
        return Ok(Observation::Conn(ConnObs {
            at_ms,
            reporter,
            action,
            reporter_is_client,
            client: end(source.as_ref()).ok_or(Skip::Incomplete)?,
            server: end(destination.as_ref()).ok_or(Skip::Incomplete)?,
            binary,
            community_id: network.community_id,
            tcp: tcp_of(cb.tcp),
        }));
    }
    if kind.is_empty() || kind == "flow" {
        return Err(Skip::UnknownType);
    }
    let at_ms = event
        .start
        .as_deref()
        .and_then(parse_time_ms)
        .unwrap_or(at_ms);
    let error = event.outcome.as_deref() == Some("failure")
        || raw.status.as_deref().is_some_and(|s| s != "OK");
    let proc_name = |e: &mut Option<EcsEnd<'a>>| e.as_mut()?.process.take()?.name;
    let client_binary = raw
        .client_process
        .take()
        .and_then(Proc::binary)
        .or_else(|| proc_name(&mut source));
    let server_binary = raw
        .server_process
        .take()
        .and_then(Proc::binary)
        .or_else(|| proc_name(&mut destination));
    Ok(Observation::Txn(TxnObs {
        at_ms,
        reporter,
        protocol: raw.kind.take().ok_or(Skip::Malformed)?,
        client: end(source.as_ref()).ok_or(Skip::Incomplete)?,
        server: end(destination.as_ref()).ok_or(Skip::Incomplete)?,
        client_binary,
        server_binary,
        error,
        latency_us: event.duration.map(|ns| ns / 1000),
        community_id: network.community_id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = r#"{"@timestamp":"2026-11-23T17:30:59.225Z","type":"connbeat","action":"open","direction":"outgoing","transport":"tcp","family":"ipv4","local_ip":"10.0.0.5","local_port":43736,"remote_ip":"10.0.0.9","remote_port":6380,"local_process":{"pid":31979,"binary":"socat","cmdline":"socat - TCP:10.0.0.9:6380"},"attribution":"procfs","tcp":{"state":"ESTABLISHED","rtt_us":26,"retransmits":0,"total_retrans":2,"bytes_acked":6,"bytes_received":9},"cookie":"185602","netns":4026531833,"beat":{"local_ips":["10.0.0.5","127.0.0.1"],"name":"web1","hostname":"vm","version":"0.1.0"}}"#;

    #[test]
    fn a_classic_outgoing_connection() {
        let Observation::Conn(c) = parse(OUT.as_bytes()).unwrap() else {
            panic!("not a connection")
        };
        assert_eq!(c.at_ms, 1_795_455_059_225);
        assert_eq!(c.reporter.host, "web1");
        assert_eq!(
            c.reporter.local_ips.as_slice(),
            ["10.0.0.5".parse::<IpAddr>().unwrap()]
        );
        assert!(c.reporter_is_client);
        assert_eq!(c.client, "10.0.0.5:43736".parse().unwrap());
        assert_eq!(c.server, "10.0.0.9:6380".parse().unwrap());
        assert_eq!(c.binary.as_deref(), Some("socat"));
        assert_eq!(c.action, Action::Open);
        assert_eq!(c.community_id, None);
        // Read in place: no copy of the line's strings.
        assert!(matches!(c.reporter.host, Cow::Borrowed(_)));
        assert!(matches!(c.binary, Some(Cow::Borrowed(_))));
        let t = c.tcp.unwrap();
        assert_eq!(
            (t.rtt_us, t.retransmits, t.bytes_acked, t.bytes_received),
            (26, 2, 6, 9)
        );
    }

    #[test]
    fn an_incoming_connection_puts_the_remote_end_on_the_client_side() {
        let line = OUT
            .replace("\"outgoing\"", "\"incoming\"")
            .replace("\"action\":\"open\"", "\"action\":\"closed\"")
            .replace(
                "\"type\":\"connbeat\",",
                "\"type\":\"connbeat\",\"community_id\":\"1:abc\",",
            );
        let Observation::Conn(c) = parse(line.as_bytes()).unwrap() else {
            panic!()
        };
        assert!(!c.reporter_is_client);
        assert_eq!(c.server, "10.0.0.5:43736".parse().unwrap());
        assert_eq!(c.client, "10.0.0.9:6380".parse().unwrap());
        assert_eq!(c.action, Action::Closed);
        assert_eq!(c.community_id.as_deref(), Some("1:abc"));
    }

    #[test]
    fn a_listening_socket() {
        let line = r#"{"@timestamp":"2026-11-23T17:30:59.225Z","type":"connbeat","action":"listening","direction":"listening","transport":"tcp","local_ip":"0.0.0.0","local_port":80,"local_process":{"binary":"nginx"},"container":{"id":"abc","name":"web"},"beat":{"name":"h1"}}"#;
        let Observation::Listen(l) = parse(line.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(l.addr, "0.0.0.0:80".parse().unwrap());
        assert_eq!(l.binary.as_deref(), Some("nginx"));
        assert_eq!(l.reporter.container.as_deref(), Some("web"));
    }

    #[test]
    fn a_classic_transaction() {
        let line = r#"{"@timestamp":"2026-11-23T17:31:00.000Z","type":"http","status":"Server Error","method":"GET","responsetime":12,"bytes_in":10,"bytes_out":20,"transport":"tcp","client_ip":"10.0.0.5","client_port":5000,"ip":"10.0.0.9","port":80,"server_process":{"pid":3,"binary":"nginx"},"direction":"in","beat":{"name":"h2"},"http":{"response":{"code":500}}}"#;
        let Observation::Txn(t) = parse(line.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(t.protocol, "http");
        assert!(t.error);
        assert_eq!(t.latency_us, Some(12_000));
        assert_eq!(t.server_binary.as_deref(), Some("nginx"));
        assert_eq!(t.client_binary, None);
        assert_eq!(t.client, "10.0.0.5:5000".parse().unwrap());
    }

    #[test]
    fn ecs_connection_and_transaction() {
        let conn = r#"{"@timestamp":"2026-11-23T17:31:00.000Z","event":{"kind":"event","dataset":"connbeat.connection","action":"open"},"network":{"transport":"tcp","direction":"egress","community_id":"1:xyz"},"source":{"ip":"10.0.0.5","port":5000},"destination":{"ip":"10.0.0.9","port":80},"process":{"pid":4,"name":"curl"},"agent":{"name":"h3"},"host":{"ip":["10.0.0.5"]},"connbeat":{"action":"open","direction":"outgoing","tcp":{"rtt_us":40,"bytes_acked":1,"bytes_received":2}}}"#;
        let Observation::Conn(c) = parse(conn.as_bytes()).unwrap() else {
            panic!()
        };
        assert!(c.reporter_is_client);
        assert_eq!(c.reporter.host, "h3");
        assert_eq!(c.binary.as_deref(), Some("curl"));
        assert_eq!(c.community_id.as_deref(), Some("1:xyz"));
        assert_eq!(c.tcp.unwrap().rtt_us, 40);
        let txn = r#"{"@timestamp":"2026-11-23T17:31:00.000Z","type":"redis","event":{"kind":"event","duration":3000000,"outcome":"success","start":"2026-11-23T17:31:00.500Z"},"network":{"transport":"tcp","community_id":"1:xyz"},"source":{"ip":"10.0.0.5","port":5000},"destination":{"ip":"10.0.0.9","port":6379,"process":{"name":"redis-server"}},"agent":{"name":"h3"}}"#;
        let Observation::Txn(t) = parse(txn.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(t.at_ms % 1000, 500);
        assert_eq!(t.latency_us, Some(3000));
        assert!(!t.error);
        assert_eq!(t.server_binary.as_deref(), Some("redis-server"));
    }

    #[test]
    fn agents_timestamps_read_as_the_general_parser_reads_them() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut fast = 0;
        for _ in 0..200_000 {
            let s = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{}Z",
                1960 + next(450),
                next(14),
                next(33),
                next(26),
                next(62),
                next(62),
                match next(5) {
                    0 => String::new(),
                    1 => format!(".{:03}", next(1000)),
                    2 => format!(".{:06}", next(1_000_000)),
                    3 => format!(".{}", next(10)),
                    _ => format!(".{:09}", next(1_000_000_000)),
                }
            );
            fast += usize::from(utc_time_ms(s.as_bytes()).is_some());
            assert_eq!(parse_time_ms(&s), general_time_ms(&s), "{s}");
        }
        // Most of them valid dates, taken by the direct reader.
        assert!(fast > 100_000, "{fast}");
        for s in [
            "2026-12-01T10:00:00.1234567890Z",
            "2026-12-01T10:00:00.Z",
            "2026-12-01T10:00:00+01:00",
            "2026-12-01 10:00:00Z",
            "2024-02-29T23:59:59.999Z",
            "2023-02-29T00:00:00Z",
            "2026-12-01T10:00:60Z",
            "1969-12-31T23:59:59Z",
            "2026-12-01T10:00:00.5ZZ",
        ] {
            assert_eq!(parse_time_ms(s), general_time_ms(s), "{s}");
        }
        assert_eq!(
            parse_time_ms("2026-12-01T10:00:00.250Z"),
            Some(1_796_119_200_250)
        );
    }

    #[test]
    fn garbage_and_unknown_types_are_skipped_with_their_reason() {
        assert_eq!(parse(b"not json"), Err(Skip::Malformed));
        // A byte that is not UTF-8 inside the host's name.
        let mut bad_utf8 = OUT.as_bytes().to_vec();
        let at = OUT.find("web1").unwrap();
        bad_utf8[at + 3] = 0xff;
        assert_eq!(parse(&bad_utf8), Err(Skip::Malformed));
        assert_eq!(parse(b"[1,2]"), Err(Skip::Malformed));
        assert_eq!(parse(b"{\"a\":1}"), Err(Skip::Malformed));
        assert_eq!(
            parse(br#"{"type":"flow","@timestamp":"2026-11-23T17:31:00Z"}"#),
            Err(Skip::UnknownType)
        );
        assert_eq!(
            parse(br#"{"type":"weather","@timestamp":"2026-11-23T17:31:00Z","beat":{"name":"x"}}"#),
            Err(Skip::UnknownType)
        );
        let no_time = OUT.replace("\"@timestamp\":\"2026-11-23T17:30:59.225Z\",", "");
        assert_eq!(parse(no_time.as_bytes()), Err(Skip::Incomplete));
        let udp = OUT.replace("\"transport\":\"tcp\"", "\"transport\":\"udp\"");
        assert_eq!(parse(udp.as_bytes()), Err(Skip::UnknownType));
    }

    /// A reader that has learned the order of keys from earlier lines reads every line as
    /// a reader that learned nothing: on agents' lines in both shapes, on lines whose keys
    /// come in another order, with spaces, escapes, nulls, duplicate keys or an empty
    /// binary, and on thousands of mutations of them, all through one reader.
    #[test]
    fn a_reader_that_learned_reads_what_a_fresh_one_reads() {
        let ecs_conn = r#"{"@timestamp":"2026-11-23T17:31:00.000Z","event":{"kind":"event","dataset":"connbeat.connection","action":"open"},"network":{"transport":"tcp","direction":"egress","community_id":"1:xyz"},"source":{"ip":"10.0.0.5","port":5000},"destination":{"ip":"10.0.0.9","port":80},"process":{"pid":4,"name":"curl"},"agent":{"name":"h3"},"host":{"ip":["10.0.0.5"]},"connbeat":{"action":"open","direction":"outgoing","tcp":{"rtt_us":40,"bytes_acked":1,"bytes_received":2}}}"#;
        let txn = r#"{"@timestamp":"2026-12-01T10:00:01.000Z","type":"http","status":"OK","responsetime":3,"client_ip":"10.0.0.1","client_port":5000,"ip":"10.0.0.2","port":80,"client_process":{"pid":7,"binary":"curl"},"server_process":{"pid":8,"binary":"nginx"},"beat":{"name":"b"}}"#;
        let mut lines: Vec<String> = vec![
            OUT.into(),
            ecs_conn.into(),
            txn.into(),
            OUT.replace(
                "\"binary\":\"socat\"",
                "\"binary\":\"\",\"name\":\"socat-name\"",
            ),
            OUT.replace(",\"", " , \"").replace("\":", "\" :"),
            OUT.replace("\"local_port\"", "\"local\\u005fport\""),
            OUT.replace("\"remote_port\":6380", "\"remote_port\":null"),
            OUT.replace("\"cookie\"", "\"remote_port\":1,\"cookie\""),
            OUT.replace("\"tcp\":{", "\"tcp\":{\"bytes_received\":1,"),
            OUT.replace("10.0.0.5\",\"local_port", "fe80::1\",\"local_port"),
            OUT.replace("\"beat\"", "\"container\":{\"id\":\"c1\"},\"beat\""),
            OUT[..OUT.len() / 2].into(),
            // A key too long to remember, then one without its comma that starts as the
            // first key did: no guess may take it for the first key.
            r#"{  "type":"connbeat","a_key_longer_than_thirty_two_bytes":1  "type":"x","more":"0123456789abcdef"}"#.into(),
        ];
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let base = lines.clone();
        for i in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut d = base[i % base.len()].clone().into_bytes();
            // Most lines as agents write them (so that predictions hit), some mutated.
            if i % 3 == 0 {
                let at = (x as usize) % d.len();
                d[at] = (x >> 40) as u8;
            }
            lines.push(String::from_utf8_lossy(&d).into_owned());
        }
        let mut reader = Reader::default();
        for line in &lines {
            assert_eq!(
                reader.parse(line.as_bytes()),
                parse(line.as_bytes()),
                "{line}"
            );
        }
    }

    /// Each reader learns in a shape of its own: two sharing one would take each other's
    /// key slots for their own.
    #[test]
    fn every_reader_has_its_own_shape() {
        use crate::topology::fields::{KnownKeys, SHAPES};
        let shapes = [
            EventKey::SHAPE,
            ProcessKey::SHAPE,
            TcpKey::SHAPE,
            ContainerKey::SHAPE,
            BeatKey::SHAPE,
            EcsEventKey::SHAPE,
            EcsNetworkKey::SHAPE,
            EcsEndKey::SHAPE,
            EcsHostKey::SHAPE,
            EcsConnbeatKey::SHAPE,
        ];
        let distinct: std::collections::BTreeSet<_> = shapes.iter().collect();
        assert_eq!(distinct.len(), shapes.len());
        assert!(shapes.iter().all(|s| *s < SHAPES));
    }
}

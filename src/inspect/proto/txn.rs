//! Transactions and the request/response pairing every protocol shares.
//!
//! A protocol fills a [`Txn`] from a request, parks it in a [`Pairing`] until the response
//! completes it, and the engine turns finished ones into events (see
//! [`Txn::into_event`]). Timeouts, unmatched responses, the bound on pending requests and
//! their counters are handled here once, not per protocol.
//!
//! A transaction carries the fields every protocol has and its protocol's own typed object
//! (`F`, e.g. the HTTP request and response). Each protocol object says how it is written
//! into an event through [`TxnObject`]: the classic shape today; an ECS writer is one more
//! method of that trait, implemented per protocol.

use crate::community_id::CommunityId;
use crate::config::{EventFormat, Precision};
use crate::event::Event;
use crate::monitor::{self, METRICS};
use crate::owner::ProcessRef;
use crate::processors::Net;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use super::Cx;

/// Packetbeat's `status` values.
pub mod status {
    pub const OK: &str = "OK";
    pub const ERROR: &str = "Error";
    pub const CLIENT_ERROR: &str = "Client Error";
    pub const SERVER_ERROR: &str = "Server Error";
}

/// A protocol's own part of a transaction, written into its event.
pub trait TxnObject: std::fmt::Debug + Send + 'static {
    /// Writes the protocol object of a classic event, under `name` (`http`, `dns`, ...).
    fn write_classic(&self, name: &'static str, e: &mut Event);

    /// Writes the protocol's own fields of an ECS event (Packetbeat 8's names). By default
    /// the classic object, whose names Packetbeat 8 kept for most protocols.
    fn write_ecs(&self, name: &'static str, e: &mut Event, _at: &EcsAt<'_>) {
        self.write_classic(name, e);
    }

    /// Packetbeat 8's `event.action` of an ECS event (`amqp.queue.declare`,
    /// `nfs.READDIR`), for the protocols that write one.
    fn ecs_action(&self, _name: &'static str, _method: Option<&str>) -> Option<String> {
        None
    }

    /// True for a one-message transaction that the server sent (a DHCP reply): `source`
    /// is then the server and `destination` the client.
    fn sent_by_server(&self) -> bool {
        false
    }

    /// True when the flow's ends are the wrong way round for this transaction: its client
    /// is the end the engine took for the server (a DHCP reply that opened its own flow).
    fn swap_ends(&self) -> bool {
        false
    }

    /// The transaction's own client and server, when they are not its flow's: a protocol
    /// whose UDP flows are keyed by ports alone (DHCP) knows each exchange's addresses.
    fn ends(&self) -> Option<(SocketAddr, SocketAddr)> {
        None
    }

    /// `network.protocol` of its ECS event when that is not the protocol's name (NFS says
    /// `nfsv3` or `nfsv4`).
    fn ecs_network_protocol(&self) -> Option<&'static str> {
        None
    }

    /// The whole ECS event, for a protocol whose events do not have the transaction shape
    /// (SIP: one event per message, its sender as source and client). `None`: the
    /// transaction shape, with [`TxnObject::write_ecs`] for the protocol's own fields.
    fn ecs_event(&self, _head: &EcsHead<'_>) -> Option<Event> {
        None
    }

    /// How the protocol's ECS event departs from the request/response shape (`None`: it
    /// does not).
    fn ecs_frame(&self) -> Option<EcsFrame<'_>> {
        None
    }

    /// Whether the transaction is an event of that shape (Packetbeat 8 reports some
    /// exchanges the classic shape does not, and the other way round).
    fn reported_in(&self, _shape: EventFormat) -> bool {
        true
    }

    /// True when the ECS event carries the request path as `url.path` only: Packetbeat 8
    /// writes no `path` nor `resource` for HTTP.
    fn ecs_path_in_url(&self) -> bool {
        false
    }

    /// What the protocol read that belongs to the common ECS fields: the server's name,
    /// and more addresses, hosts and users for `related.*` (Packetbeat 8's `AddIP`,
    /// `AddHost`, `AddUser`).
    fn ecs_links(&self) -> EcsLinks<'_> {
        EcsLinks::default()
    }
}

/// A protocol's additions to the common fields of its ECS event (see
/// [`TxnObject::ecs_links`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EcsLinks<'a> {
    /// `destination.domain` and `server.domain` (the HTTP `Host`).
    pub server_domain: Option<&'a str>,
    /// Appended to `related.ip` after the two ends (DNS answers' addresses).
    pub ips: Vec<IpAddr>,
    /// `related.hosts`.
    pub hosts: Vec<&'a str>,
    /// `user.name` and `related.user`.
    pub user: Option<&'a str>,
}

/// What a protocol writing its whole ECS event gets (see [`TxnObject::ecs_event`]).
pub struct EcsHead<'a> {
    pub proto: &'static str,
    /// µs since the epoch.
    pub start: u64,
    pub end: Option<u64>,
    pub status: &'static str,
    pub ep: &'a Endpoints,
    pub settings: &'a EcsSettings,
}

impl EcsHead<'_> {
    /// A timestamp in the configured precision.
    pub fn timestamp(&self, us: u64) -> String {
        crate::event::format_timestamp_with(
            UNIX_EPOCH + Duration::from_micros(us),
            self.settings.precision,
        )
    }
}

/// The common ECS fields of a protocol that reports a whole exchange rather than a
/// request and its response, as Packetbeat does for TLS: its own span and status, the
/// server's name (`destination.domain`, `server.domain`), and no byte counts, `resource`
/// nor `error.message` (Packetbeat writes none for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EcsFrame<'a> {
    /// `event.start` and `@timestamp`, µs since the epoch.
    pub start: u64,
    /// `event.end`, when the exchange completed.
    pub end: Option<u64>,
    pub status: &'static str,
    pub server_domain: Option<&'a str>,
}

/// What a protocol's ECS writer may need besides its own object.
pub struct EcsAt<'a> {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub settings: &'a EcsSettings,
}

/// The settings of the ECS shape (`connbeat.event_format: ecs`); the default has no
/// internal networks and millisecond timestamps.
#[derive(Debug, Clone, Default)]
pub struct EcsSettings {
    /// `connbeat.interfaces.internal_networks`, for `network.direction`.
    pub internal_networks: Vec<Net>,
    /// `timestamp.precision`, for `event.start` and `event.end`.
    pub precision: Precision,
}

impl EcsSettings {
    /// The ECS settings of a configuration, when it writes ECS events.
    pub fn from_config(c: &crate::config::Config) -> Result<Option<EcsSettings>, String> {
        if c.connbeat.event_format != EventFormat::Ecs {
            return Ok(None);
        }
        let internal_networks = c
            .connbeat
            .interfaces
            .internal_networks
            .iter()
            .map(|n| {
                crate::processors::parse_net(n).ok_or_else(|| {
                    format!(
                        "connbeat.interfaces.internal_networks: {n:?} is neither a CIDR block, \
                         an address nor a named range (private, loopback, unicast, ...)"
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(EcsSettings {
            internal_networks,
            precision: c.timestamp.precision,
        }))
    }

    fn internal(&self, ip: IpAddr) -> bool {
        self.internal_networks.iter().any(|n| n.contains(ip))
    }

    /// Packetbeat's `network.direction` of a flow from `src` to `dst`.
    pub fn direction(&self, src: IpAddr, dst: IpAddr) -> &'static str {
        match (self.internal(src), self.internal(dst)) {
            (true, true) => "internal",
            (true, false) => "outbound",
            (false, true) => "inbound",
            (false, false) => "external",
        }
    }
}

/// A free-form JSON object (tests, and a protocol being written).
impl TxnObject for Map<String, Value> {
    fn write_classic(&self, name: &'static str, e: &mut Event) {
        e.push_field(name, self);
    }
}

impl TxnObject for Box<dyn TxnObject> {
    fn write_classic(&self, name: &'static str, e: &mut Event) {
        (**self).write_classic(name, e);
    }

    fn write_ecs(&self, name: &'static str, e: &mut Event, at: &EcsAt<'_>) {
        (**self).write_ecs(name, e, at);
    }

    fn ecs_action(&self, name: &'static str, method: Option<&str>) -> Option<String> {
        (**self).ecs_action(name, method)
    }

    fn sent_by_server(&self) -> bool {
        (**self).sent_by_server()
    }

    fn swap_ends(&self) -> bool {
        (**self).swap_ends()
    }

    fn ends(&self) -> Option<(SocketAddr, SocketAddr)> {
        (**self).ends()
    }

    fn ecs_network_protocol(&self) -> Option<&'static str> {
        (**self).ecs_network_protocol()
    }

    fn ecs_event(&self, head: &EcsHead<'_>) -> Option<Event> {
        (**self).ecs_event(head)
    }

    fn ecs_frame(&self) -> Option<EcsFrame<'_>> {
        (**self).ecs_frame()
    }

    fn reported_in(&self, shape: EventFormat) -> bool {
        (**self).reported_in(shape)
    }

    fn ecs_path_in_url(&self) -> bool {
        (**self).ecs_path_in_url()
    }

    fn ecs_links(&self) -> EcsLinks<'_> {
        (**self).ecs_links()
    }
}

/// A finished transaction, whatever its protocol.
pub type Done = Txn<Box<dyn TxnObject>>;

/// One request/response exchange, as the protocol knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Txn<F = Map<String, Value>> {
    /// Request start, µs since the epoch (`@timestamp`).
    pub start: u64,
    /// Response end, when there was a response.
    pub end: Option<u64>,
    pub status: &'static str,
    pub method: Option<String>,
    pub path: Option<String>,
    pub query: Option<String>,
    pub resource: Option<String>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub real_ip: Option<String>,
    pub notes: Vec<String>,
    /// The request and the response as text (`send_request`, `send_response`).
    pub request: Option<String>,
    pub response: Option<String>,
    /// The protocol object (`http`, `dns`, ...).
    pub fields: F,
}

impl<F: Default> Txn<F> {
    /// A transaction whose request started at `start` and took `bytes_in` bytes.
    pub fn new(start: u64, bytes_in: u64) -> Txn<F> {
        Txn::with_fields(start, bytes_in, F::default())
    }
}

impl<F> Txn<F> {
    /// [`Txn::new`] with a protocol object that has no default.
    pub fn with_fields(start: u64, bytes_in: u64, fields: F) -> Txn<F> {
        Txn {
            start,
            end: None,
            status: status::OK,
            method: None,
            path: None,
            query: None,
            resource: None,
            bytes_in,
            bytes_out: 0,
            real_ip: None,
            notes: Vec::new(),
            request: None,
            response: None,
            fields,
        }
    }
}

impl Txn<Map<String, Value>> {
    /// Sets a field of a free-form protocol object.
    pub fn set(&mut self, key: &str, v: impl Into<Value>) {
        self.fields.insert(key.into(), v.into());
    }
}

impl<F: TxnObject> Txn<F> {
    /// The same transaction with its protocol object boxed, as the engine collects them.
    pub fn boxed(self) -> Done {
        Txn {
            start: self.start,
            end: self.end,
            status: self.status,
            method: self.method,
            path: self.path,
            query: self.query,
            resource: self.resource,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            real_ip: self.real_ip,
            notes: self.notes,
            request: self.request,
            response: self.response,
            fields: Box::new(self.fields),
        }
    }

    /// The event for this transaction between these endpoints, serialized straight from
    /// the transaction (no intermediate JSON tree but the protocol object's own).
    pub fn into_event(self, proto: &'static str, ep: &Endpoints) -> Event {
        let swapped;
        let ep = if self.fields.swap_ends() {
            swapped = ep.swapped();
            &swapped
        } else {
            ep
        };
        let no_ports = ep.icmp.is_some();
        let direction = if ep.server_process.is_some() {
            Some("in")
        } else if ep.client_process.is_some() {
            Some("out")
        } else {
            None
        };
        let (client_agent, server_agent) = agents(ep.client.ip(), ep.server.ip());
        let common = TxnFields {
            status: self.status,
            method: self.method.as_deref(),
            path: self.path.as_deref(),
            query: self.query.as_deref(),
            resource: self.resource.as_deref(),
            real_ip: self.real_ip.as_deref(),
            responsetime: self.end.map(|end| end.saturating_sub(self.start) / 1000),
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            transport: ep.transport,
            client_ip: ep.client.ip(),
            client_port: (!no_ports).then_some(ep.client.port()),
            client_server: client_agent.as_deref().unwrap_or(""),
            ip: ep.server.ip(),
            port: (!no_ports).then_some(ep.server.port()),
            server: server_agent.as_deref().unwrap_or(""),
            community_id: ep.community_id(),
            client_process: ep.client_process.as_ref(),
            server_process: ep.server_process.as_ref(),
            direction,
            notes: &self.notes,
            request: self.request.as_deref(),
            response: self.response.as_deref(),
        };
        let mut e = Event::from_fields(
            UNIX_EPOCH + Duration::from_micros(self.start),
            proto,
            &common,
        );
        self.fields.write_classic(proto, &mut e);
        e
    }
}

impl<F: TxnObject> Txn<F> {
    /// The event for this transaction in the ECS shape, as Packetbeat 8 writes it.
    pub fn into_ecs_event(self, proto: &'static str, ep: &Endpoints, s: &EcsSettings) -> Event {
        let head = EcsHead {
            proto,
            start: self.start,
            end: self.end,
            status: self.status,
            ep,
            settings: s,
        };
        if let Some(e) = self.fields.ecs_event(&head) {
            return e;
        }
        let ts = |us: u64| {
            crate::event::format_timestamp_with(UNIX_EPOCH + Duration::from_micros(us), s.precision)
        };
        let by_server = self.fields.sent_by_server();
        let swapped;
        let ep = if self.fields.swap_ends() {
            swapped = ep.swapped();
            &swapped
        } else {
            ep
        };
        let icmp = ep.icmp.is_some();
        let frame = self.fields.ecs_frame();
        // Packetbeat 8 says `Error` for what the classic shape calls client or server errors.
        let (start, end, status) = match frame {
            Some(f) => (f.start, f.end, f.status),
            None => (
                self.start,
                self.end,
                match self.status {
                    status::CLIENT_ERROR | status::SERVER_ERROR => status::ERROR,
                    s => s,
                },
            ),
        };
        let counted = frame.is_none();
        let links = self.fields.ecs_links();
        let in_url = self.fields.ecs_path_in_url();
        let (cip, sip) = (ep.client.ip(), ep.server.ip());
        let (client_agent, server_agent) = agents(cip, sip);
        let client = EcsEnd {
            ip: cip,
            port: (!icmp).then_some(ep.client.port()),
            bytes: counted.then_some(self.bytes_in),
            domain: None,
        };
        let server = EcsEnd {
            ip: sip,
            port: (!icmp).then_some(ep.server.port()),
            bytes: counted.then_some(self.bytes_out),
            domain: frame.and_then(|f| f.server_domain).or(links.server_domain),
        };
        let (source, destination) = if by_server {
            (&server, &client)
        } else {
            (&client, &server)
        };
        let mut related = vec![cip];
        for ip in std::iter::once(sip).chain(links.ips.iter().copied()) {
            if !related.contains(&ip) {
                related.push(ip);
            }
        }
        let process = ep
            .server_process
            .as_ref()
            .or(ep.client_process.as_ref())
            .map(EcsProcess::of);
        // Packetbeat's ICMP events are connections only, with no application protocol.
        let mut event_type: Vec<&str> = if icmp {
            vec!["connection"]
        } else {
            vec!["connection", "protocol"]
        };
        // (Packetbeat's ICMP events say `connection` whatever their status.)
        if status != status::OK && !icmp {
            event_type.push("error");
        }
        let notes = if counted {
            self.notes
                .iter()
                .map(|n| packetbeat_note(n))
                .collect::<Vec<_>>()
                .join("; ")
        } else {
            String::new()
        };
        let f = EcsTxnFields {
            status,
            method: self.method.as_deref(),
            path: self.path.as_deref().filter(|_| !in_url),
            query: self.query.as_deref(),
            resource: self.resource.as_deref().filter(|_| counted && !in_url),
            request: self.request.as_deref(),
            response: self.response.as_deref(),
            event: EcsEventFields {
                kind: "event",
                action: self.fields.ecs_action(proto, self.method.as_deref()),
                category: ["network"],
                r#type: event_type,
                dataset: proto,
                start: ts(start),
                end: end.map(ts),
                duration: end.map(|e| e.saturating_sub(start) * 1000),
            },
            source,
            client: &client,
            destination,
            server: &server,
            network: EcsNetwork {
                r#type: if cip.is_ipv4() { "ipv4" } else { "ipv6" },
                transport: ep.transport,
                protocol: (!icmp).then(|| self.fields.ecs_network_protocol().unwrap_or(proto)),
                direction: if by_server {
                    s.direction(sip, cip)
                } else {
                    s.direction(cip, sip)
                },
                community_id: ep.community_id(),
                bytes: counted.then_some(self.bytes_in + self.bytes_out),
                forwarded_ip: self.real_ip.as_deref(),
            },
            related: EcsRelated {
                ip: related,
                hosts: &links.hosts,
                user: links.user.as_slice(),
            },
            user: links.user.map(|name| EcsUser { name }),
            process,
            connbeat: (client_agent.is_some() || server_agent.is_some()).then_some(EcsAgents {
                server_agent: server_agent.as_deref(),
                client_agent: client_agent.as_deref(),
            }),
            error: (!notes.is_empty()).then_some(EcsError { message: &notes }),
        };
        let mut text = String::with_capacity(1024);
        f.write_json(&mut text);
        let mut e = Event::from_object_text(UNIX_EPOCH + Duration::from_micros(start), proto, text);
        let at = EcsAt {
            client: ep.client,
            server: ep.server,
            settings: s,
        };
        self.fields.write_ecs(proto, &mut e, &at);
        e
    }
}

/// The fields every ECS transaction event has (Packetbeat 8's names).
#[derive(Serialize)]
struct EcsTxnFields<'a> {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<&'a str>,
    event: EcsEventFields,
    source: &'a EcsEnd<'a>,
    client: &'a EcsEnd<'a>,
    destination: &'a EcsEnd<'a>,
    server: &'a EcsEnd<'a>,
    network: EcsNetwork<'a>,
    related: EcsRelated<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<EcsUser<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    process: Option<EcsProcess<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<EcsError<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connbeat: Option<EcsAgents<'a>>,
}

#[derive(Serialize)]
struct EcsEventFields {
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<String>,
    category: [&'static str; 1],
    r#type: Vec<&'static str>,
    dataset: &'static str,
    start: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    end: Option<String>,
    /// Nanoseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<u64>,
}

/// `source`, `destination`, `client`, `server`.
#[derive(Serialize)]
pub struct EcsEnd<'a> {
    pub ip: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<&'a str>,
}

impl EcsTxnFields<'_> {
    /// The JSON object `Serialize` writes (a test holds the two equal), written directly:
    /// every transaction event has these fields, and serde spent most of its time escaping
    /// keys fixed here and values that never need it (addresses, numbers, timestamps).
    fn write_json(&self, out: &mut String) {
        out.push_str("{\"status\":");
        push_str(out, self.status);
        for (key, v) in [
            ("method", self.method),
            ("path", self.path),
            ("query", self.query),
            ("resource", self.resource),
            ("request", self.request),
            ("response", self.response),
        ] {
            if let Some(v) = v {
                out.push_str(",\"");
                out.push_str(key);
                out.push_str("\":");
                push_str(out, v);
            }
        }
        let ev = &self.event;
        out.push_str(",\"event\":{\"kind\":");
        push_str(out, ev.kind);
        if let Some(a) = &ev.action {
            out.push_str(",\"action\":");
            push_str(out, a);
        }
        out.push_str(",\"category\":");
        push_strs(out, &ev.category);
        out.push_str(",\"type\":");
        push_strs(out, &ev.r#type);
        out.push_str(",\"dataset\":");
        push_str(out, ev.dataset);
        out.push_str(",\"start\":");
        push_str(out, &ev.start);
        if let Some(end) = &ev.end {
            out.push_str(",\"end\":");
            push_str(out, end);
        }
        let mut n = itoa::Buffer::new();
        if let Some(d) = ev.duration {
            out.push_str(",\"duration\":");
            out.push_str(n.format(d));
        }
        out.push('}');
        for (key, end) in [
            ("source", self.source),
            ("client", self.client),
            ("destination", self.destination),
            ("server", self.server),
        ] {
            out.push_str(",\"");
            out.push_str(key);
            out.push_str("\":{\"ip\":\"");
            crate::event::push_ip(out, end.ip);
            out.push('"');
            if let Some(p) = end.port {
                out.push_str(",\"port\":");
                out.push_str(n.format(p));
            }
            if let Some(b) = end.bytes {
                out.push_str(",\"bytes\":");
                out.push_str(n.format(b));
            }
            if let Some(d) = end.domain {
                out.push_str(",\"domain\":");
                push_str(out, d);
            }
            out.push('}');
        }
        let net = &self.network;
        out.push_str(",\"network\":{\"type\":");
        push_str(out, net.r#type);
        out.push_str(",\"transport\":");
        push_str(out, net.transport);
        if let Some(p) = net.protocol {
            out.push_str(",\"protocol\":");
            push_str(out, p);
        }
        out.push_str(",\"direction\":");
        push_str(out, net.direction);
        if let Some(c) = &net.community_id {
            out.push_str(",\"community_id\":");
            push_str(out, c.as_str());
        }
        if let Some(b) = net.bytes {
            out.push_str(",\"bytes\":");
            out.push_str(n.format(b));
        }
        if let Some(f) = net.forwarded_ip {
            out.push_str(",\"forwarded_ip\":");
            push_str(out, f);
        }
        out.push_str("},\"related\":{\"ip\":[");
        for (i, ip) in self.related.ip.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('"');
            crate::event::push_ip(out, *ip);
            out.push('"');
        }
        out.push(']');
        for (key, list) in [("hosts", self.related.hosts), ("user", self.related.user)] {
            if !list.is_empty() {
                out.push_str(",\"");
                out.push_str(key);
                out.push_str("\":");
                push_strs(out, list);
            }
        }
        out.push('}');
        if let Some(u) = &self.user {
            out.push_str(",\"user\":{\"name\":");
            push_str(out, u.name);
            out.push('}');
        }
        if let Some(p) = &self.process {
            out.push_str(",\"process\":{\"pid\":");
            out.push_str(n.format(p.pid));
            out.push_str(",\"name\":");
            push_str(out, p.name);
            out.push('}');
        }
        if let Some(e) = &self.error {
            out.push_str(",\"error\":{\"message\":");
            push_str(out, e.message);
            out.push('}');
        }
        if let Some(a) = &self.connbeat {
            out.push_str(",\"connbeat\":{");
            let mut first = true;
            for (key, v) in [
                ("server_agent", a.server_agent),
                ("client_agent", a.client_agent),
            ] {
                if let Some(v) = v {
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    out.push('"');
                    out.push_str(key);
                    out.push_str("\":");
                    push_str(out, v);
                }
            }
            out.push('}');
        }
        out.push('}');
    }
}

fn push_str(out: &mut String, s: &str) {
    crate::event::push_json_str(out, s);
}

fn push_strs(out: &mut String, list: &[&str]) {
    out.push('[');
    for (i, s) in list.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str(out, s);
    }
    out.push(']');
}

#[derive(Serialize)]
struct EcsNetwork<'a> {
    r#type: &'static str,
    transport: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    protocol: Option<&'static str>,
    direction: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    community_id: Option<CommunityId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    forwarded_ip: Option<&'a str>,
}

/// ECS `related` (transactions and flow events).
#[derive(Serialize)]
pub(crate) struct EcsRelated<'a> {
    pub(crate) ip: Vec<IpAddr>,
    #[serde(skip_serializing_if = "<[&str]>::is_empty")]
    pub(crate) hosts: &'a [&'a str],
    #[serde(skip_serializing_if = "<[&str]>::is_empty")]
    pub(crate) user: &'a [&'a str],
}

#[derive(Serialize)]
struct EcsUser<'a> {
    name: &'a str,
}

/// ECS `process`: the pid and binary of a process at one end (transactions and flow
/// events).
#[derive(Serialize)]
pub(crate) struct EcsProcess<'a> {
    pid: u32,
    name: &'a str,
}

impl<'a> EcsProcess<'a> {
    pub(crate) fn of(p: &'a ProcessRef) -> EcsProcess<'a> {
        EcsProcess {
            pid: p.pid,
            name: &p.binary,
        }
    }
}

#[derive(Serialize)]
struct EcsError<'a> {
    message: &'a str,
}

#[cfg(test)]
impl Done {
    /// The protocol object as JSON (tests look into it).
    pub fn object(&self) -> Value {
        let mut e = Event::from_fields(UNIX_EPOCH, "t", &Map::new());
        self.fields.write_classic("o", &mut e);
        e.to_value()["o"].clone()
    }
}

/// The names of the agents that own the client and server addresses, when
/// `output.redis.save_topology` has learnt them.
fn agents(client: IpAddr, server: IpAddr) -> (Option<Arc<str>>, Option<Arc<str>>) {
    crate::output::redis::topology::agents(client, server)
}

/// `connbeat.server_agent` and `connbeat.client_agent` of an ECS transaction.
#[derive(Serialize)]
struct EcsAgents<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    server_agent: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_agent: Option<&'a str>,
}

/// The fields every transaction event has, in Packetbeat's names.
#[derive(Serialize)]
struct TxnFields<'a> {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    real_ip: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    responsetime: Option<u64>,
    bytes_in: u64,
    bytes_out: u64,
    transport: &'static str,
    client_ip: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_port: Option<u16>,
    /// The agent that owns the client address (`output.redis.save_topology`), else "".
    client_server: &'a str,
    ip: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    /// The agent that owns the server address, else "".
    server: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    community_id: Option<CommunityId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_process: Option<&'a ProcessRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_process: Option<&'a ProcessRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    direction: Option<&'static str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    notes: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<&'a str>,
}

/// The two ends of a connection, and who owns them when known.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub transport: &'static str,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub client_process: Option<ProcessRef>,
    pub server_process: Option<ProcessRef>,
    /// ICMP (type, code) of the exchange's first message: the ends have no ports, and the
    /// Community ID is ICMP's.
    pub icmp: Option<(u8, u8)>,
}

impl Endpoints {
    /// Two ends of `transport` with no process known and no ICMP type.
    pub fn new(transport: &'static str, client: SocketAddr, server: SocketAddr) -> Endpoints {
        Endpoints {
            transport,
            client,
            server,
            client_process: None,
            server_process: None,
            icmp: None,
        }
    }

    /// The Community ID of the connection (the same value its connection events carry).
    pub fn community_id(&self) -> Option<CommunityId> {
        match self.icmp {
            Some((t, c)) => CommunityId::of_icmp(self.client.ip(), self.server.ip(), t, c),
            None => CommunityId::of_ports(self.transport, self.client, self.server),
        }
    }

    /// The same ends, client and server exchanged.
    pub fn swapped(&self) -> Endpoints {
        Endpoints {
            transport: self.transport,
            client: self.server,
            server: self.client,
            client_process: self.server_process.clone(),
            server_process: self.client_process.clone(),
            icmp: self.icmp,
        }
    }
}

/// A request waiting for its response, with what the protocol needs to read the response.
#[derive(Debug)]
pub struct Pending<X, F = Map<String, Value>> {
    pub txn: Txn<F>,
    pub extra: X,
}

/// Requests waiting for responses, in order; bounded.
#[derive(Debug)]
pub struct Pairing<X, F = Map<String, Value>> {
    q: VecDeque<Pending<X, F>>,
    max: usize,
}

/// Note on a request that never got an answer.
pub const NOTE_TIMEOUT: &str = "no response within transaction_timeout";
/// Note on a request still waiting when its connection ended.
pub const NOTE_CLOSED: &str = "connection closed before the response";
/// Note on a request whose response fell into a hole of the capture.
pub const NOTE_GAP: &str = "response lost in a gap of the capture";
/// Note on a response published with bytes missing in a hole of the capture.
pub const NOTE_LOSS: &str = "bytes of the response lost in a gap of the capture";
/// Note on a response whose connection ended before the end its head declared.
pub const NOTE_CUT: &str = "connection ended before the end of the response";
/// The same for a request.
pub const NOTE_LOSS_REQUEST: &str = "bytes of the request lost in a gap of the capture";
/// Note on a response that answers no request seen.
pub const NOTE_UNMATCHED: &str = "response to no request seen";

/// A note in Packetbeat 8's words, for `error.message` of ECS events.
fn packetbeat_note(note: &str) -> &str {
    match note {
        NOTE_TIMEOUT | NOTE_CLOSED => "Unmatched request",
        NOTE_GAP => "Packet loss while capturing the response",
        NOTE_UNMATCHED => "Unmatched response",
        NOTE_LOSS => "Packet loss while capturing the response",
        NOTE_LOSS_REQUEST => "Packet loss while capturing the request",
        other => other,
    }
}

impl<X, F: TxnObject> Pairing<X, F> {
    pub fn new(max: usize) -> Pairing<X, F> {
        Pairing {
            q: VecDeque::new(),
            max: max.max(1),
        }
    }

    /// Parks a request. When the bound is reached, the oldest one fails.
    pub fn push(&mut self, txn: Txn<F>, extra: X, cx: &mut Cx<'_>) {
        if self.q.len() >= self.max
            && let Some(old) = self.q.pop_front()
        {
            fail(old.txn, "too many requests waiting for a response", cx);
        }
        self.q.push_back(Pending { txn, extra });
    }

    pub fn front(&self) -> Option<&Pending<X, F>> {
        self.q.front()
    }

    pub fn front_mut(&mut self) -> Option<&mut Pending<X, F>> {
        self.q.front_mut()
    }

    pub fn len(&self) -> usize {
        self.q.len()
    }

    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// Takes the oldest request.
    pub fn pop(&mut self) -> Option<Pending<X, F>> {
        self.q.pop_front()
    }

    /// Where the oldest request matching `pred` waits (0: the front).
    pub fn position(&self, pred: impl Fn(&X) -> bool) -> Option<usize> {
        self.q.iter().position(|p| pred(&p.extra))
    }

    /// The oldest request matching `pred`, to update in place (a retransmission of it).
    pub fn find_mut(&mut self, pred: impl Fn(&X) -> bool) -> Option<&mut Pending<X, F>> {
        self.q.iter_mut().find(|p| pred(&p.extra))
    }

    /// Takes the oldest request matching `pred` (DNS pairs by id).
    pub fn take(&mut self, pred: impl Fn(&X) -> bool) -> Option<Pending<X, F>> {
        let i = self.q.iter().position(|p| pred(&p.extra))?;
        self.q.remove(i)
    }

    /// Fails requests older than the transaction timeout.
    pub fn expire(&mut self, cx: &mut Cx<'_>) {
        while let Some(p) = self.q.front() {
            if cx.now.saturating_sub(p.txn.start) < cx.timeout {
                break;
            }
            if let Some(p) = self.q.pop_front() {
                fail(p.txn, NOTE_TIMEOUT, cx);
            }
        }
    }

    /// Fails every pending request with `note`.
    pub fn drain(&mut self, note: &str, cx: &mut Cx<'_>) {
        while let Some(p) = self.q.pop_front() {
            fail(p.txn, note, cx);
        }
    }
}

/// Publishes a completed transaction.
pub fn complete<F: TxnObject>(mut txn: Txn<F>, end: u64, bytes_out: u64, cx: &mut Cx<'_>) {
    txn.end = Some(end);
    txn.bytes_out = bytes_out;
    cx.out.push(txn.boxed());
}

/// Publishes a request that got no response.
pub fn fail<F: TxnObject>(mut txn: Txn<F>, note: &str, cx: &mut Cx<'_>) {
    txn.status = status::ERROR;
    txn.notes.push(note.into());
    monitor::inc(&METRICS.inspect_txn_no_response);
    cx.out.push(txn.boxed());
}

/// Counts a response that matched no request.
pub fn unmatched_response() {
    monitor::inc(&METRICS.inspect_unmatched_responses);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairing_expires_bounds_and_takes_by_key() {
        let mut out = Vec::new();
        let mut cx = Cx {
            now: 0,
            timeout: 1000,
            out: &mut out,
        };
        let mut p: Pairing<u16> = Pairing::new(2);
        p.push(Txn::new(0, 1), 1, &mut cx);
        p.push(Txn::new(10, 1), 2, &mut cx);
        p.push(Txn::new(20, 1), 3, &mut cx);
        assert_eq!(cx.out.len(), 1, "oldest failed when the bound was reached");
        assert_eq!(p.take(|x| *x == 3).map(|x| x.extra), Some(3));
        cx.now = 5000;
        p.expire(&mut cx);
        assert!(p.is_empty());
        assert_eq!(out.len(), 2);
        assert!(
            out.iter()
                .all(|t| t.status == status::ERROR && !t.notes.is_empty())
        );
    }

    #[test]
    fn event_has_packetbeat_fields() {
        let mut t = Txn::new(1_000_000, 10);
        t.method = Some("GET".into());
        t.set("x", 1);
        t.end = Some(1_250_000);
        let ep = Endpoints {
            transport: "tcp",
            client: "10.0.0.1:5000".parse().unwrap(),
            server: "10.0.0.2:80".parse().unwrap(),
            client_process: None,
            server_process: Some(ProcessRef {
                pid: 7,
                binary: "nginx".into(),
            }),
            icmp: None,
        };
        let e = t.into_event("http", &ep).to_value();
        assert_eq!(e["type"], "http");
        assert_eq!(e["responsetime"], 250);
        assert_eq!(e["ip"], "10.0.0.2");
        assert_eq!(e["client_port"], 5000);
        assert_eq!(e["server_process"]["binary"], "nginx");
        assert_eq!(e["direction"], "in");
        assert_eq!(e["http"]["x"], 1);
        assert_eq!(e["community_id"], "1:zZcrZw6iHYAz2U0wgSDHZWBCrMg=");
    }
}

#[cfg(test)]
mod ecs_json_tests {
    use super::*;

    /// The hand-written JSON of the ECS fields is the text serde writes, with every
    /// optional part present and absent, IPv4 and IPv6, and strings that need escaping.
    #[test]
    fn ecs_fields_written_by_hand_equal_serde() {
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let v6: IpAddr = "fe80::1:2".parse().unwrap();
        let odd = "a\"b\\c\nd\u{1}é";
        for full in [false, true] {
            for ip in [v4, v6] {
                let end = EcsEnd {
                    ip,
                    port: full.then_some(80),
                    bytes: full.then_some(12),
                    domain: full.then_some(odd),
                };
                let bare = EcsEnd {
                    ip: v4,
                    port: None,
                    bytes: None,
                    domain: None,
                };
                let f = EcsTxnFields {
                    status: "OK",
                    method: full.then_some("GET"),
                    path: full.then_some(odd),
                    query: full.then_some("q=1"),
                    resource: full.then_some("r"),
                    request: full.then_some(odd),
                    response: full.then_some("ok"),
                    event: EcsEventFields {
                        kind: "event",
                        action: full.then(|| "amqp.basic.publish".to_string()),
                        category: ["network"],
                        r#type: vec!["connection", "protocol"],
                        dataset: "http",
                        start: "2026-01-01T00:00:00.001Z".into(),
                        end: full.then(|| "2026-01-01T00:00:00.002Z".into()),
                        duration: full.then_some(1000),
                    },
                    source: &end,
                    client: &bare,
                    destination: &end,
                    server: &bare,
                    network: EcsNetwork {
                        r#type: "ipv4",
                        transport: "tcp",
                        protocol: full.then_some("http"),
                        direction: "internal",
                        community_id: CommunityId::of_ports(
                            "tcp",
                            SocketAddr::new(ip, 1),
                            SocketAddr::new(ip, 2),
                        )
                        .filter(|_| full),
                        bytes: full.then_some(3),
                        forwarded_ip: full.then_some(odd),
                    },
                    related: EcsRelated {
                        ip: if full { vec![ip, v4] } else { vec![] },
                        hosts: if full { &["example.com", odd] } else { &[] },
                        user: if full { &[odd] } else { &[] },
                    },
                    user: full.then_some(EcsUser { name: odd }),
                    process: full.then_some(EcsProcess { pid: 7, name: odd }),
                    error: full.then_some(EcsError { message: odd }),
                    connbeat: full.then_some(EcsAgents {
                        server_agent: Some(odd),
                        client_agent: (ip == v4).then_some("b"),
                    }),
                };
                let mut hand = String::new();
                f.write_json(&mut hand);
                assert_eq!(hand, serde_json::to_string(&f).unwrap());
            }
        }
        let only_client = EcsAgents {
            server_agent: None,
            client_agent: Some("c"),
        };
        let mut out = String::new();
        let mut f_text = |a: EcsAgents<'_>| {
            out.clear();
            let e = EcsEnd {
                ip: v4,
                port: None,
                bytes: None,
                domain: None,
            };
            let f = EcsTxnFields {
                status: "Error",
                method: None,
                path: None,
                query: None,
                resource: None,
                request: None,
                response: None,
                event: EcsEventFields {
                    kind: "event",
                    action: None,
                    category: ["network"],
                    r#type: vec![],
                    dataset: "d",
                    start: String::new(),
                    end: None,
                    duration: None,
                },
                source: &e,
                client: &e,
                destination: &e,
                server: &e,
                network: EcsNetwork {
                    r#type: "ipv6",
                    transport: "udp",
                    protocol: None,
                    direction: "external",
                    community_id: None,
                    bytes: None,
                    forwarded_ip: None,
                },
                related: EcsRelated {
                    ip: vec![v6],
                    hosts: &[],
                    user: &[],
                },
                user: None,
                process: None,
                error: None,
                connbeat: Some(a),
            };
            f.write_json(&mut out);
            assert_eq!(out, serde_json::to_string(&f).unwrap());
        };
        f_text(only_client);
    }
}

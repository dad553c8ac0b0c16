//! SIP over UDP and TCP. Over TCP, messages are framed by `Content-Length`.
//!
//! `events: exchange` (the default of classic events) pairs a request with its final
//! response by Call-ID and CSeq (number and method): provisional 1xx responses are noted
//! in the transaction and do not end it, the final response does (status Error for 4xx to
//! 6xx); an ACK, which gets no response, is a transaction alone; a retransmitted request
//! joins the one waiting, and a request unanswered within `transaction_timeout` fails.
//! `events: message` (the default of ECS events) publishes every message as Packetbeat 8
//! does (a request has any number of responses; `sip.call_id` and `sip.cseq` tie them).
//!
//! The `sip` object of a message is Packetbeat 8's: the start line, the headers it names
//! (From, To, Contact, Via, CSeq, ...), the Authorization header's scheme, realm, user and
//! URI with `parse_authorization` (never its response or nonces), the SDP session lines
//! with `parse_body`, and the message's text with `keep_original` (an Authorization header
//! in it redacted). An exchange's `sip` has the Call-ID and CSeq it was paired by and each
//! message's object under `request` and `response`.

pub mod parser;

use super::txn::{EcsHead, Endpoints, NOTE_CLOSED, NOTE_TIMEOUT, complete, unmatched_response};
use super::{
    Common, Cx, Dir, Entry, Events, GapAction, Pairing, ParseError, Parsers, TcpFactory, TcpParser,
    Txn, TxnObject, UdpFactory, UdpParser, status,
};
use crate::event::Event;
use parser::{Auth, Message, NameAddr, Sdp, Start, Uri};
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// The registry's handle on SIP.
pub struct Proto;

/// Which transports an entry decodes SIP on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transports {
    Udp,
    Tcp,
    #[default]
    Both,
}

/// SIP's own keys (Packetbeat's names and defaults).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Options {
    /// Authorization's scheme, realm, user name and URI into `sip.auth.*` and `user.name`.
    pub parse_authorization: bool,
    /// An SDP body's session lines into `sip.sdp.*`.
    pub parse_body: bool,
    /// The message's text in `event.original` (ECS) or `request` / `response` (classic).
    pub keep_original: bool,
    /// `udp`, `tcp` or `both`.
    pub transport_protocol: Transports,
    /// `exchange` or `message`; left out, it follows `connbeat.event_format`.
    pub events: Option<Events>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            parse_authorization: true,
            parse_body: true,
            keep_original: true,
            transport_protocol: Transports::Both,
            events: None,
        }
    }
}

impl super::Protocol for Proto {
    const NAME: &'static str = "sip";
    type Options = Options;
    fn parsers(e: &Entry<Options>, common: &Common) -> Parsers {
        let o = Arc::new(e.options.clone());
        let t = e.options.transport_protocol;
        let (events, max) = (
            Events::resolve(e.options.events, common),
            common.max_pending,
        );
        let tcp_o = o.clone();
        let tcp: TcpFactory =
            Arc::new(move || Box::new(Sip::new(tcp_o.clone(), events, max)) as Box<dyn TcpParser>);
        let udp: UdpFactory =
            Arc::new(move || Box::new(Sip::new(o.clone(), events, max)) as Box<dyn UdpParser>);
        Parsers {
            tcp: (t != Transports::Udp).then_some(tcp),
            udp: (t != Transports::Tcp).then_some(udp),
        }
    }
    fn fuzz_options() -> Options {
        Options {
            events: Some(Events::Exchange),
            ..Options::default()
        }
    }
}

/// A SIP URI's parts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UriFields {
    pub original: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub scheme: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub username: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub host: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub port: u16,
}

fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// From / To / Contact.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Party {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub display_info: String,
    pub uri: UriFields,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub q: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Original {
    pub original: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct OriginalList {
    pub original: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Cseq {
    pub code: i64,
    pub method: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PrivateUri {
    pub uri: UriFields,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AuthFields {
    pub scheme: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<UriFields>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SdpOwner {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    pub session_id: String,
    pub version: String,
    pub ip: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SdpSession {
    pub name: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SdpConnection {
    pub info: String,
    pub address: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SdpFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<SdpOwner>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<SdpSession>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<SdpConnection>,
    pub body: Original,
}

/// The `sip` object (Packetbeat 8's fields).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SipFields {
    pub r#type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<UriFields>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub call_id: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub content_length: usize,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub content_type: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub max_forwards: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub supported: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<Original>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private: Option<PrivateUri>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cseq: Option<Cseq>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<OriginalList>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<Party>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Party>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact: Option<Party>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthFields>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sdp: Option<SdpFields>,
}

/// One message: its `sip` object and what its ECS event needs besides.
#[derive(Debug, Default)]
pub struct SipTxn {
    pub sip: SipFields,
    /// The Contact object as Packetbeat 8 writes it: filled from the To header whenever
    /// a Contact header is present. The ECS event keeps that for compatibility; the
    /// classic `sip.contact` is the real Contact header.
    ecs_contact: Option<Party>,
    /// Sent by the side the connection calls its server.
    from_server: bool,
    original: Option<String>,
    user_name: Option<String>,
    hosts: Vec<String>,
    users: Vec<String>,
    /// Addresses besides the two ends (the SDP owner's).
    ips: Vec<String>,
    action: String,
    authorization: bool,
}

impl TxnObject for SipTxn {
    fn write_classic(&self, name: &'static str, e: &mut Event) {
        e.push_field(name, &self.sip);
    }

    fn ecs_event(&self, h: &EcsHead<'_>) -> Option<Event> {
        Some(ecs_event(self, h))
    }
}

#[derive(Serialize)]
struct EcsEnd {
    ip: IpAddr,
    port: u16,
}

#[derive(Serialize)]
struct EcsEventFields<'a> {
    kind: &'static str,
    category: Vec<&'static str>,
    r#type: [&'static str; 2],
    action: &'a str,
    dataset: &'static str,
    #[serde(skip_serializing_if = "is_zero")]
    sequence: i64,
    start: String,
    end: String,
    duration: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    original: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

#[derive(Serialize)]
struct EcsNetwork {
    r#type: &'static str,
    transport: &'static str,
    protocol: &'static str,
    application: &'static str,
    iana_number: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    community_id: Option<crate::community_id::CommunityId>,
    direction: &'static str,
}

#[derive(Serialize)]
struct EcsRelated<'a> {
    ip: Vec<String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    hosts: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    user: &'a [String],
}

#[derive(Serialize)]
struct EcsUser<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct EcsSipEvent<'a> {
    status: &'static str,
    event: EcsEventFields<'a>,
    source: &'a EcsEnd,
    client: &'a EcsEnd,
    destination: &'a EcsEnd,
    server: &'a EcsEnd,
    network: EcsNetwork,
    related: EcsRelated<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<EcsUser<'a>>,
    sip: &'a SipFields,
}

/// Packetbeat 8's SIP event: the sender is source and client, the receiver destination
/// and server; no byte counts.
fn ecs_event(t: &SipTxn, h: &EcsHead<'_>) -> Event {
    let ep: &Endpoints = h.ep;
    let (src, dst): (SocketAddr, SocketAddr) = if t.from_server {
        (ep.server, ep.client)
    } else {
        (ep.client, ep.server)
    };
    let source = EcsEnd {
        ip: src.ip(),
        port: src.port(),
    };
    let destination = EcsEnd {
        ip: dst.ip(),
        port: dst.port(),
    };
    let mut ips = vec![src.ip().to_string()];
    for ip in std::iter::once(dst.ip().to_string()).chain(t.ips.iter().cloned()) {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    let mut category = vec!["network"];
    if t.authorization {
        category.push("authentication");
    }
    let code = t.sip.code.unwrap_or(0);
    let mut sip = None;
    if t.sip.contact.is_some() {
        let mut s = t.sip.clone();
        s.contact = t.ecs_contact.clone();
        sip = Some(s);
    }
    let ts = h.timestamp(h.start);
    let f = EcsSipEvent {
        status: h.status,
        event: EcsEventFields {
            kind: "event",
            category,
            r#type: ["info", "protocol"],
            action: &t.action,
            dataset: "sip",
            sequence: t.sip.cseq.as_ref().map_or(0, |c| c.code),
            start: ts.clone(),
            end: ts,
            duration: 0,
            original: t.original.as_deref(),
            outcome: match code {
                0..=199 => None,
                200..=299 => Some("success"),
                _ => Some("failure"),
            },
            reason: t.sip.status.as_deref().filter(|s| !s.is_empty()),
        },
        source: &source,
        client: &source,
        destination: &destination,
        server: &destination,
        network: EcsNetwork {
            r#type: if src.is_ipv4() { "ipv4" } else { "ipv6" },
            transport: ep.transport,
            protocol: "sip",
            application: "sip",
            // Packetbeat 8 writes UDP's number whatever the transport; kept as it does.
            iana_number: "17",
            community_id: ep.community_id(),
            direction: h.settings.direction(src.ip(), dst.ip()),
        },
        related: EcsRelated {
            ip: ips,
            hosts: &t.hosts,
            user: &t.users,
        },
        user: t.user_name.as_deref().map(|name| EcsUser { name }),
        sip: sip.as_ref().unwrap_or(&t.sip),
    };
    Event::from_fields(UNIX_EPOCH + Duration::from_micros(h.start), h.proto, &f)
}

fn uri_fields(u: &Uri<'_>) -> UriFields {
    UriFields {
        original: u.original.to_string(),
        scheme: u.scheme.to_string(),
        username: user_of(u).unwrap_or_default().to_string(),
        host: u.host.to_string(),
        port: u.port,
    }
}

/// A URI's user name, unless none or `-`.
fn user_of<'a>(u: &Uri<'a>) -> Option<&'a str> {
    Some(u.username.trim()).filter(|n| !n.is_empty() && *n != "-")
}

fn push_unique(v: &mut Vec<String>, s: &str) {
    if !s.is_empty() && !v.iter().any(|x| x == s) {
        v.push(s.to_string());
    }
}

fn list(v: Option<&str>, lower: bool) -> Vec<String> {
    v.map(|v| {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                if lower {
                    s.to_ascii_lowercase()
                } else {
                    s.to_string()
                }
            })
            .collect()
    })
    .unwrap_or_default()
}

/// The transaction of one message.
fn transaction(m: &Message<'_>, o: &Options, dir: Dir, now: u64) -> Txn<SipTxn> {
    let mut t: Txn<SipTxn> = Txn::new(now, 0);
    t.end = Some(now);
    let len = m.raw.len() as u64;
    let x = &mut t.fields;
    x.from_server = dir == Dir::ToClient;
    if x.from_server {
        t.bytes_out = len;
    } else {
        t.bytes_in = len;
    }
    let s = &mut x.sip;
    match m.start {
        Start::Request {
            method,
            uri,
            version,
        } => {
            s.r#type = "request";
            s.method = Some(method.to_ascii_uppercase());
            let u = Uri::parse(uri);
            if let Some(n) = user_of(&u) {
                push_unique(&mut x.users, n);
            }
            push_unique(&mut x.hosts, u.host);
            s.uri = Some(uri_fields(&u));
            s.version = version.to_string();
            t.method = s.method.clone();
        }
        Start::Response {
            version,
            code,
            phrase,
        } => {
            s.r#type = "response";
            s.code = Some(code);
            s.status = Some(phrase.to_string());
            s.version = version.to_string();
            if code >= 400 {
                t.status = status::ERROR;
            }
        }
    }
    s.allow = list(m.header("allow"), true);
    s.call_id = m.header("call-id").unwrap_or_default().to_string();
    s.content_length = m.content_length.unwrap_or(0);
    s.content_type = m
        .header("content-type")
        .unwrap_or_default()
        .to_ascii_lowercase();
    s.max_forwards = m
        .header("max-forwards")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    s.supported = list(m.header("supported"), false);
    s.user_agent = m.header("user-agent").map(|v| Original {
        original: v.to_string(),
    });
    let vias: Vec<String> = m.all("via").map(str::to_string).collect();
    if !vias.is_empty() {
        s.via = Some(OriginalList { original: vias });
    }
    if let Some(p) = m.header("p-associated-uri") {
        let u = Uri::parse(p);
        if let Some(n) = user_of(&u) {
            push_unique(&mut x.users, n);
        }
        push_unique(&mut x.hosts, u.host);
        s.private = Some(PrivateUri {
            uri: uri_fields(&u),
        });
    }
    s.accept = m.header("accept").map(str::to_ascii_lowercase);
    if let Some(c) = m.header("cseq") {
        let parts: Vec<&str> = c.split(' ').collect();
        if let [code, method] = parts[..] {
            s.cseq = Some(Cseq {
                code: code.parse().unwrap_or(0),
                method: method.to_ascii_uppercase(),
            });
        }
    }
    let party = |v: &str, users: &mut Vec<String>, hosts: &mut Vec<String>| {
        let a = NameAddr::parse(v);
        let u = Uri::parse(a.uri);
        if let Some(n) = user_of(&u) {
            push_unique(users, n);
        }
        push_unique(hosts, u.host);
        Party {
            display_info: a.display.to_string(),
            uri: uri_fields(&u),
            tag: a.param("tag").map(str::to_string),
            expires: a.param("expires").and_then(|e| e.parse().ok()),
            q: a.param("q").and_then(|q| q.parse().ok()),
            line: u.param("line").map(str::to_string),
            transport: u.param("transport").map(str::to_ascii_lowercase),
        }
    };
    if let Some(v) = m.header("from") {
        s.from = Some(party(v, &mut x.users, &mut x.hosts));
    }
    if let Some(v) = m.header("to") {
        s.to = Some(party(v, &mut x.users, &mut x.hosts));
    }
    if let Some(v) = m.header("contact") {
        let mut none = Vec::new();
        s.contact = Some(party(v, &mut none, &mut Vec::new()));
        if let Some(to) = m.header("to") {
            let mut c = party(to, &mut x.users, &mut x.hosts);
            c.tag = None;
            x.ecs_contact = Some(c);
        }
    }
    let auth = m.header("authorization");
    x.authorization = auth.is_some();
    if o.parse_authorization
        && let Some(a) = auth.and_then(Auth::parse)
    {
        if let Some(n) = a.username.filter(|n| !n.is_empty() && *n != "-") {
            x.user_name = Some(n.to_string());
            push_unique(&mut x.users, n);
        }
        s.auth = Some(AuthFields {
            scheme: a.scheme.to_string(),
            realm: a.realm.map(str::to_string),
            uri: a.uri.map(|u| {
                let mut f = uri_fields(&Uri::parse(u));
                f.username.clear();
                f
            }),
        });
    }
    let sdp_type = m
        .header("content-type")
        .is_some_and(|c| c.eq_ignore_ascii_case("application/sdp"));
    if o.parse_body
        && m.content_length.is_some()
        && sdp_type
        && m.header("content-encoding").is_none()
    {
        let body = String::from_utf8_lossy(m.body);
        let p = Sdp::parse(&body);
        if let Some(u) = p.owner_username {
            push_unique(&mut x.users, u);
        }
        if let Some(ip) = p.owner_ip {
            push_unique(&mut x.ips, ip);
        }
        if let Some(a) = p.connection_address {
            push_unique(&mut x.hosts, a);
        }
        s.sdp = Some(SdpFields {
            version: p.version.map(str::to_string),
            owner: p.owner_session_id.map(|id| SdpOwner {
                username: p.owner_username.map(str::to_string),
                session_id: id.to_string(),
                version: p.owner_version.unwrap_or_default().to_string(),
                ip: p.owner_ip.unwrap_or_default().to_string(),
            }),
            session: p.session_name.map(|n| SdpSession {
                name: n.to_string(),
            }),
            connection: p.connection_info.map(|i| SdpConnection {
                info: i.to_string(),
                address: p.connection_address.unwrap_or_default().to_string(),
            }),
            body: Original {
                original: body.into_owned(),
            },
        });
    }
    let method = match (&s.method, &s.cseq) {
        (Some(m), _) => m.to_ascii_lowercase(),
        (None, Some(c)) => c.method.to_ascii_lowercase(),
        (None, None) => String::new(),
    };
    x.action = format!("sip-{method}");
    if o.keep_original {
        let text = if x.authorization || m.header("proxy-authorization").is_some() {
            String::from_utf8_lossy(&parser::redact_authorization(m.raw)).into_owned()
        } else {
            String::from_utf8_lossy(m.raw).into_owned()
        };
        if x.from_server {
            t.response = Some(text.clone());
        } else {
            t.request = Some(text.clone());
        }
        t.fields.original = Some(text);
    }
    t
}

/// The `sip` object of an exchange: what it was paired by, then each message's object.
#[derive(Debug, Default, Serialize)]
pub struct SipExchange {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub call_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cseq: Option<Cseq>,
    pub request: SipFields,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<SipFields>,
    /// The codes of the provisional responses (1xx) before the final one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub provisional: Vec<u16>,
    /// Copies of the request sent again while it waited.
    #[serde(skip_serializing_if = "is_zero")]
    pub retransmissions: u32,
    /// The request went from the end the connection calls its server (a BYE of the
    /// called side).
    #[serde(skip)]
    swap: bool,
}

impl TxnObject for SipExchange {
    fn write_classic(&self, name: &'static str, e: &mut Event) {
        e.push_field(name, self);
    }

    fn swap_ends(&self) -> bool {
        self.swap
    }
}

/// Provisional responses noted per exchange, at most.
const MAX_PROVISIONAL: usize = 16;

/// What a waiting request is found by: its Call-ID and CSeq (number and method), which
/// its responses repeat.
#[derive(Debug, PartialEq)]
struct Waiting {
    call_id: String,
    cseq: i64,
    method: String,
}

impl Waiting {
    fn of(s: &SipFields) -> Waiting {
        let (cseq, method) = s
            .cseq
            .as_ref()
            .map_or((0, String::new()), |c| (c.code, c.method.clone()));
        Waiting {
            call_id: s.call_id.clone(),
            cseq,
            method,
        }
    }
}

/// The per-flow state: the requests waiting for their final response (`exchange`).
pub struct Sip {
    o: Arc<Options>,
    events: Events,
    pending: Pairing<Waiting, SipExchange>,
}

impl Sip {
    fn new(o: Arc<Options>, events: Events, max_pending: usize) -> Sip {
        Sip {
            o,
            events,
            pending: Pairing::new(max_pending),
        }
    }

    fn publish(&mut self, m: &Message<'_>, dir: Dir, cx: &mut Cx<'_>) {
        let t = transaction(m, &self.o, dir, cx.now);
        match self.events {
            Events::Message => cx.out.push(t.boxed()),
            Events::Exchange if t.fields.sip.r#type == "request" => self.request(t, cx),
            Events::Exchange => self.response(t, cx),
        }
    }

    /// A request waits for its final response, joins the same request waiting, or (ACK)
    /// is published at once.
    fn request(&mut self, t: Txn<SipTxn>, cx: &mut Cx<'_>) {
        let key = Waiting::of(&t.fields.sip);
        if let Some(p) = self.pending.find_mut(|w| *w == key) {
            p.txn.fields.retransmissions += 1;
            return;
        }
        let mut x: Txn<SipExchange> = Txn::new(t.start, t.bytes_in + t.bytes_out);
        x.method = t.method;
        x.request = t.fields.original;
        x.fields = SipExchange {
            call_id: t.fields.sip.call_id.clone(),
            cseq: t.fields.sip.cseq.clone(),
            swap: t.fields.from_server,
            request: t.fields.sip,
            ..SipExchange::default()
        };
        if key.method == "ACK" {
            cx.out.push(x.boxed());
        } else {
            self.pending.push(x, key, cx);
        }
    }

    /// A provisional response is noted in its exchange, a final one completes it; one that
    /// answers no request seen (or a final response sent again) is counted.
    fn response(&mut self, t: Txn<SipTxn>, cx: &mut Cx<'_>) {
        let key = Waiting::of(&t.fields.sip);
        let code = t.fields.sip.code.unwrap_or(0);
        if code < 200 {
            match self.pending.find_mut(|w| *w == key) {
                Some(p) if p.txn.fields.provisional.len() < MAX_PROVISIONAL => {
                    p.txn.fields.provisional.push(code)
                }
                Some(_) => {}
                None => unmatched_response(),
            }
            return;
        }
        let Some(p) = self.pending.take(|w| *w == key) else {
            unmatched_response();
            return;
        };
        let mut x = p.txn;
        if code >= 400 {
            x.status = status::ERROR;
        }
        x.response = t.fields.original;
        x.fields.response = Some(t.fields.sip);
        complete(x, cx.now, t.bytes_in + t.bytes_out, cx);
    }
}

impl UdpParser for Sip {
    fn datagram(&mut self, dir: Dir, data: &[u8], cx: &mut Cx<'_>) -> Result<(), ParseError> {
        // A datagram of blank lines is a keep-alive.
        if parser::keepalive(data) == data.len() {
            return Ok(());
        }
        let Some((_, m)) = parser::message(data, false)? else {
            return Err(ParseError("sip: incomplete datagram"));
        };
        self.publish(&m, dir, cx);
        Ok(())
    }

    fn expire(&mut self, cx: &mut Cx<'_>) {
        self.pending.expire(cx);
    }

    fn close(&mut self, cx: &mut Cx<'_>) {
        self.pending.drain(NOTE_TIMEOUT, cx);
    }

    fn pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

impl TcpParser for Sip {
    fn parse(&mut self, dir: Dir, data: &[u8], cx: &mut Cx<'_>) -> Result<usize, ParseError> {
        let k = parser::keepalive(data);
        if k > 0 {
            return Ok(k);
        }
        let Some((len, m)) = parser::message(data, true)? else {
            return Ok(0);
        };
        self.publish(&m, dir, cx);
        Ok(len)
    }

    fn gap(&mut self, _dir: Dir, _len: usize, _cx: &mut Cx<'_>) -> GapAction {
        GapAction::Reset
    }

    fn expire(&mut self, cx: &mut Cx<'_>) {
        self.pending.expire(cx);
    }

    fn close(&mut self, cx: &mut Cx<'_>) {
        self.pending.drain(NOTE_CLOSED, cx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::proto::testutil::{common, drive};

    const REGISTER: &[u8] = b"REGISTER sip:example.test SIP/2.0\r\n\
Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK1\r\n\
From: <sip:alice@example.test>;tag=1\r\n\
To: <sip:alice@example.test>\r\n\
Call-ID: r1@192.0.2.1\r\n\
CSeq: 2 REGISTER\r\n\
Contact: <sip:alice@192.0.2.1:5060;transport=tcp>;expires=3600\r\n\
Authorization: Digest username=\"alice\", realm=\"example.test\", nonce=\"abc\", uri=\"sip:example.test\", response=\"0123456789abcdef\"\r\n\
Content-Length: 0\r\n\r\n";

    fn run(o: Options, msgs: &[(Dir, &[u8])]) -> Vec<crate::inspect::proto::Done> {
        let e = Entry {
            options: o,
            ..Entry::default()
        };
        let f = <Proto as super::super::Protocol>::parsers(&e, &common())
            .tcp
            .unwrap();
        drive(f().as_mut(), msgs, 7)
    }

    #[test]
    fn messages_over_tcp_one_event_each_credentials_never_kept() {
        let ok = b"\r\n\r\nSIP/2.0 401 Unauthorized\r\nCSeq: 2 REGISTER\r\nCall-ID: r1@192.0.2.1\r\nContent-Length: 0\r\n\r\n";
        let per_message = Options {
            events: Some(Events::Message),
            ..Options::default()
        };
        let out = run(
            per_message,
            &[(Dir::ToServer, REGISTER), (Dir::ToClient, ok)],
        );
        assert_eq!(out.len(), 2);
        let r = out[0].object();
        assert_eq!(r["type"], "request");
        assert_eq!(r["method"], "REGISTER");
        assert_eq!(r["contact"]["uri"]["host"], "192.0.2.1");
        assert_eq!(r["contact"]["expires"], 3600);
        assert_eq!(r["contact"]["transport"], "tcp");
        assert_eq!(r["auth"]["scheme"], "Digest");
        assert_eq!(r["auth"]["realm"], "example.test");
        assert_eq!(r["cseq"]["code"], 2);
        let text = format!("{:?}", out[0]);
        assert!(!text.contains("0123456789abcdef"), "{text}");
        assert!(!text.contains("nonce=\"abc\""), "{text}");
        assert_eq!(out[1].status, status::ERROR);
        assert_eq!(out[1].object()["code"], 401);
        assert_eq!(out[1].object()["status"], "Unauthorized");

        let quiet = Options {
            parse_authorization: false,
            keep_original: false,
            events: Some(Events::Message),
            ..Options::default()
        };
        let out = run(quiet, &[(Dir::ToServer, REGISTER)]);
        assert!(out[0].object().get("auth").is_none());
        assert!(out[0].request.is_none());
    }

    /// A message of call `call` with CSeq `cseq`: a request (`start` is its method and URI)
    /// or a response (`start` is `SIP/2.0 <code> <phrase>`).
    fn msg(start: &str, cseq: &str) -> Vec<u8> {
        format!(
            "{start}\r\nVia: SIP/2.0/UDP 192.0.2.1:5061;branch=z9hG4bK7\r\n\
             From: <sip:alice@example.test>;tag=a\r\nTo: <sip:bob@example.test>\r\n\
             Call-ID: c7@192.0.2.1\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    /// Feeds datagrams at the given µs to one UDP parser, then lets `expire_at` pass.
    fn udp(msgs: &[(u64, Dir, Vec<u8>)], expire_at: u64) -> Vec<crate::inspect::proto::Done> {
        let mut p = Sip::new(Arc::new(Options::default()), Events::Exchange, 8);
        let mut out = Vec::new();
        for (at, dir, m) in msgs {
            let mut cx = Cx {
                now: *at,
                timeout: 10_000_000,
                out: &mut out,
            };
            p.datagram(*dir, m, &mut cx).unwrap();
        }
        let mut cx = Cx {
            now: expire_at,
            timeout: 10_000_000,
            out: &mut out,
        };
        UdpParser::expire(&mut p, &mut cx);
        out
    }

    #[test]
    fn a_call_is_three_exchanges_provisional_responses_do_not_end_one() {
        let invite = msg("INVITE sip:bob@example.test SIP/2.0", "1 INVITE");
        let out = udp(
            &[
                (1_000_000, Dir::ToServer, invite.clone()),
                (1_500_000, Dir::ToServer, invite.clone()),
                (
                    1_501_000,
                    Dir::ToClient,
                    msg("SIP/2.0 100 Trying", "1 INVITE"),
                ),
                (
                    1_502_000,
                    Dir::ToClient,
                    msg("SIP/2.0 180 Ringing", "1 INVITE"),
                ),
                (1_600_000, Dir::ToClient, msg("SIP/2.0 200 OK", "1 INVITE")),
                // The UAS sends its 200 again until the ACK: counted, not an exchange.
                (1_650_000, Dir::ToClient, msg("SIP/2.0 200 OK", "1 INVITE")),
                (
                    1_700_000,
                    Dir::ToServer,
                    msg("ACK sip:bob@example.test SIP/2.0", "1 ACK"),
                ),
                // The called side hangs up: its BYE goes the other way.
                (
                    5_000_000,
                    Dir::ToClient,
                    msg("BYE sip:alice@example.test SIP/2.0", "2 BYE"),
                ),
                (5_002_000, Dir::ToServer, msg("SIP/2.0 200 OK", "2 BYE")),
            ],
            30_000_000,
        );
        assert_eq!(out.len(), 3, "{out:#?}");
        let (invite_t, ack, bye) = (&out[0], &out[1], &out[2]);
        assert_eq!(invite_t.method.as_deref(), Some("INVITE"));
        assert_eq!(invite_t.status, status::OK);
        assert_eq!(invite_t.end, Some(1_600_000));
        assert_eq!(invite_t.bytes_in, invite.len() as u64);
        let o = invite_t.object();
        assert_eq!(o["call_id"], "c7@192.0.2.1");
        assert_eq!(o["cseq"]["code"], 1);
        assert_eq!(o["cseq"]["method"], "INVITE");
        assert_eq!(o["request"]["method"], "INVITE");
        assert_eq!(o["response"]["code"], 200);
        assert_eq!(o["provisional"], serde_json::json!([100, 180]));
        assert_eq!(o["retransmissions"], 1);
        assert!(
            invite_t
                .request
                .as_deref()
                .unwrap()
                .starts_with("INVITE sip:")
        );
        assert!(
            invite_t
                .response
                .as_deref()
                .unwrap()
                .starts_with("SIP/2.0 200 OK")
        );
        assert_eq!(ack.method.as_deref(), Some("ACK"));
        assert!(ack.object().get("response").is_none());
        assert_eq!(ack.end, None, "no response expected");
        assert_eq!(ack.status, status::OK);
        assert_eq!(bye.method.as_deref(), Some("BYE"));
        assert!(
            bye.fields.swap_ends(),
            "the BYE's client is the flow's server"
        );
        assert_eq!(bye.end, Some(5_002_000));
    }

    #[test]
    fn a_failure_response_is_an_error_and_an_unanswered_request_fails_at_the_timeout() {
        let out = udp(
            &[
                (
                    1_000_000,
                    Dir::ToServer,
                    msg("INVITE sip:bob@example.test SIP/2.0", "1 INVITE"),
                ),
                (
                    1_100_000,
                    Dir::ToServer,
                    msg("OPTIONS sip:bob@example.test SIP/2.0", "2 OPTIONS"),
                ),
                // A response for another CSeq method does not end the INVITE.
                (
                    1_200_000,
                    Dir::ToClient,
                    msg("SIP/2.0 486 Busy Here", "1 CANCEL"),
                ),
                (
                    1_300_000,
                    Dir::ToClient,
                    msg("SIP/2.0 486 Busy Here", "1 INVITE"),
                ),
            ],
            5_000_000,
        );
        assert_eq!(out.len(), 1, "{out:#?}");
        assert_eq!(out[0].status, status::ERROR);
        assert_eq!(out[0].object()["response"]["code"], 486);
        let out = udp(
            &[(
                1_000_000,
                Dir::ToServer,
                msg("OPTIONS sip:bob@example.test SIP/2.0", "2 OPTIONS"),
            )],
            11_000_000,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].status, status::ERROR);
        assert_eq!(out[0].notes, [NOTE_TIMEOUT]);
        assert_eq!(out[0].end, None);
    }
}

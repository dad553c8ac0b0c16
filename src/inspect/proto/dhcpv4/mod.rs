//! DHCPv4, with the `dhcpv4.*` fields of Packetbeat 8 (op code, transaction id, client
//! MAC and IP, assigned IP, the decoded options) for every message.
//!
//! `events: exchange` (the default of classic events) pairs a request with its reply by
//! transaction id and client MAC: DISCOVER/OFFER, REQUEST/ACK or NAK, INFORM/ACK, a BOOTP
//! request and its reply are one transaction each (`dhcpv4.request`, `dhcpv4.response`,
//! status Error on a NAK or when no reply came within `transaction_timeout`); RELEASE and
//! DECLINE, which expect none, are published at once; a retransmitted request joins the
//! one waiting. `events: message` (the default of ECS events) publishes every message as
//! Packetbeat 8 does, a reply's `source` being the server and its `client` the end it is
//! sent to.
//!
//! A client broadcasts from 0.0.0.0, is answered at the address it is offered and renews
//! from it, so the engine hands one parser every datagram between the DHCP ports
//! ([`super::Protocol::UDP_BY_PORTS`]) and each transaction names its own ends.

pub mod parser;

use super::txn::{Pairing, Txn, TxnObject, complete, unmatched_response};
use super::{Common, Cx, Dir, Entry, Events, ParseError, Parsers, UdpFactory, UdpParser, status};
use crate::event::Event;
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::net::SocketAddr;
use std::sync::Arc;

/// The registry's handle on DHCPv4.
pub struct Proto;

/// DHCPv4's own key.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Options {
    /// `exchange` or `message`; left out, it follows `connbeat.event_format`.
    pub events: Option<Events>,
}

impl super::Protocol for Proto {
    const NAME: &'static str = "dhcpv4";
    const UDP_BY_PORTS: bool = true;
    type Options = Options;
    fn parsers(e: &Entry<Options>, common: &Common) -> Parsers {
        let events = Events::resolve(e.options.events, common);
        let max = common.max_pending;
        let udp: UdpFactory =
            Arc::new(move || Box::new(Dhcpv4::new(events, max)) as Box<dyn UdpParser>);
        Parsers {
            tcp: None,
            udp: Some(udp),
        }
    }
    fn fuzz_options() -> Options {
        Options {
            events: Some(Events::Exchange),
        }
    }
}

/// The `dhcpv4` object of a transaction.
#[derive(Debug)]
pub struct DhcpTxn {
    shape: Shape,
    /// The transaction's client and server.
    ends: (SocketAddr, SocketAddr),
}

#[derive(Debug)]
enum Shape {
    /// One message, written as Packetbeat writes it.
    Message(parser::Message),
    /// A request and its reply.
    Exchange {
        request: parser::Message,
        response: Option<Box<parser::Message>>,
        /// Copies of the request sent again while it waited.
        retransmissions: u32,
    },
}

/// `00-0B-82-01-FC-42`.
fn mac(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02X}"))
        .collect::<Vec<_>>()
        .join("-")
}

fn ips(v: &[std::net::Ipv4Addr]) -> Value {
    json!(v.iter().map(|i| i.to_string()).collect::<Vec<_>>())
}

/// One message's object, as Packetbeat writes `dhcpv4`.
fn message_object(m: &parser::Message) -> Map<String, Value> {
    let mut d = Map::new();
    d.insert(
        "op_code".into(),
        json!(if m.op == 1 {
            "bootrequest"
        } else {
            "bootreply"
        }),
    );
    d.insert(
        "hardware_type".into(),
        json!(parser::hardware_type_name(m.htype)),
    );
    d.insert("hops".into(), json!(m.hops));
    d.insert("transaction_id".into(), json!(format!("0x{:08x}", m.xid)));
    d.insert("seconds".into(), json!(m.secs));
    d.insert(
        "flags".into(),
        json!(if m.broadcast { "broadcast" } else { "unicast" }),
    );
    d.insert("client_mac".into(), json!(mac(&m.chaddr)));
    for (k, a) in [
        ("client_ip", m.ciaddr),
        ("assigned_ip", m.yiaddr),
        ("relay_ip", m.giaddr),
    ] {
        if !a.is_unspecified() {
            d.insert(k.into(), json!(a.to_string()));
        }
    }
    if !m.sname.is_empty() {
        d.insert("server_name".into(), json!(m.sname));
    }
    if !m.file.is_empty() {
        d.insert("boot_file_name".into(), json!(m.file));
    }
    let o = options(&m.options);
    if !o.is_empty() {
        d.insert("option".into(), Value::Object(o));
    }
    d
}

fn options(o: &parser::Options) -> Map<String, Value> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.into(), v);
    };
    if let Some(t) = o.message_type {
        put("message_type", json!(parser::message_type_name(t)));
    }
    if let Some(l) = &o.parameter_request_list {
        put(
            "parameter_request_list",
            json!(
                l.iter()
                    .map(|c| parser::option_name(*c))
                    .collect::<Vec<_>>()
            ),
        );
    }
    let ip = |a: &std::net::Ipv4Addr| json!(a.to_string());
    if let Some(a) = &o.requested_ip_address {
        put("requested_ip_address", ip(a));
    }
    if let Some(a) = &o.server_identifier {
        put("server_identifier", ip(a));
    }
    if let Some(a) = &o.broadcast_address {
        put("broadcast_address", ip(a));
    }
    if let Some(n) = o.max_dhcp_message_size {
        put("max_dhcp_message_size", json!(n));
    }
    if let Some(s) = &o.class_identifier {
        put("class_identifier", json!(s));
    }
    if let Some(s) = &o.domain_name {
        put("domain_name", json!(s));
    }
    if let Some(v) = &o.dns_servers {
        put("dns_servers", ips(v));
    }
    if let Some(v) = &o.vendor_identifying_options {
        put(
            "vendor_identifying_options",
            json!(
                v.iter()
                    .map(|c| json!({"id": c.enterprise, "data": hex(&c.data)}))
                    .collect::<Vec<_>>()
            ),
        );
    }
    if let Some(a) = &o.subnet_mask {
        put("subnet_mask", ip(a));
    }
    if let Some(n) = o.utc_time_offset_sec {
        put("utc_time_offset_sec", json!(n));
    }
    if let Some(v) = &o.router {
        put("router", ips(v));
    }
    if let Some(v) = &o.time_servers {
        put("time_servers", ips(v));
    }
    if let Some(v) = &o.ntp_servers {
        put("ntp_servers", ips(v));
    }
    if let Some(s) = &o.hostname {
        put("hostname", json!(s));
    }
    if let Some(n) = o.ip_address_lease_time_sec {
        put("ip_address_lease_time_sec", json!(n));
    }
    if let Some(s) = &o.message {
        put("message", json!(s));
    }
    if let Some(n) = o.renewal_time_sec {
        put("renewal_time_sec", json!(n));
    }
    if let Some(n) = o.rebinding_time_sec {
        put("rebinding_time_sec", json!(n));
    }
    if let Some(s) = &o.boot_file_name {
        put("boot_file_name", json!(s));
    }
    m
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl DhcpTxn {
    fn object(&self) -> Map<String, Value> {
        match &self.shape {
            Shape::Message(m) => message_object(m),
            Shape::Exchange {
                request,
                response,
                retransmissions,
            } => {
                let mut d = Map::new();
                d.insert(
                    "transaction_id".into(),
                    json!(format!("0x{:08x}", request.xid)),
                );
                d.insert("client_mac".into(), json!(mac(&request.chaddr)));
                d.insert("request".into(), Value::Object(message_object(request)));
                if let Some(r) = response {
                    d.insert("response".into(), Value::Object(message_object(r)));
                }
                if *retransmissions > 0 {
                    d.insert("retransmissions".into(), json!(retransmissions));
                }
                d
            }
        }
    }
}

impl Serialize for DhcpTxn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.object().serialize(s)
    }
}

impl TxnObject for DhcpTxn {
    fn write_classic(&self, name: &'static str, e: &mut Event) {
        e.push_field(name, self);
    }

    fn sent_by_server(&self) -> bool {
        matches!(&self.shape, Shape::Message(m) if m.op == 2)
    }

    fn ends(&self) -> Option<(SocketAddr, SocketAddr)> {
        Some(self.ends)
    }
}

/// What a waiting request is found by: a reply carries the request's transaction id and
/// client hardware address.
#[derive(Debug)]
struct Waiting {
    xid: u32,
    mac: Vec<u8>,
    /// The request's message type (none: BOOTP).
    kind: Option<u8>,
}

const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const ACK: u8 = 5;
const NAK: u8 = 6;
const INFORM: u8 = 8;

/// Whether a request of this type waits for a reply (RELEASE and DECLINE do not).
fn expects_reply(kind: Option<u8>) -> bool {
    matches!(kind, None | Some(DISCOVER | REQUEST | INFORM))
}

/// Whether a reply of type `reply` answers a request of type `request`.
fn answers(reply: Option<u8>, request: Option<u8>) -> bool {
    match reply {
        None => request.is_none(),
        Some(OFFER) => request == Some(DISCOVER),
        Some(ACK | NAK) => matches!(request, Some(REQUEST | INFORM)),
        Some(_) => false,
    }
}

/// The parser of every DHCP datagram between two ports.
pub struct Dhcpv4 {
    events: Events,
    pending: Pairing<Waiting, DhcpTxn>,
}

impl Dhcpv4 {
    pub fn new(events: Events, max_pending: usize) -> Dhcpv4 {
        Dhcpv4 {
            events,
            pending: Pairing::new(max_pending),
        }
    }

    /// Publishes one message as an event of its own.
    fn message(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        msg: parser::Message,
        len: u64,
        cx: &mut Cx<'_>,
    ) {
        let reply = msg.op == 2;
        let ends = if reply { (dst, src) } else { (src, dst) };
        let mut t = Txn::with_fields(
            cx.now,
            0,
            DhcpTxn {
                shape: Shape::Message(msg),
                ends,
            },
        );
        if reply {
            t.bytes_out = len;
        } else {
            t.bytes_in = len;
        }
        cx.out.push(t.boxed());
    }

    /// A request: waits for its reply, joins the same request waiting, or (RELEASE,
    /// DECLINE) is published at once.
    fn request(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        msg: parser::Message,
        len: u64,
        cx: &mut Cx<'_>,
    ) {
        let kind = msg.options.message_type;
        let same = |w: &Waiting| w.xid == msg.xid && w.mac == msg.chaddr && w.kind == kind;
        if let Some(p) = self.pending.find_mut(same) {
            if let Shape::Exchange {
                retransmissions, ..
            } = &mut p.txn.fields.shape
            {
                *retransmissions += 1;
            }
            return;
        }
        let waiting = Waiting {
            xid: msg.xid,
            mac: msg.chaddr.clone(),
            kind,
        };
        let mut t = Txn::with_fields(
            cx.now,
            len,
            DhcpTxn {
                shape: Shape::Exchange {
                    request: msg,
                    response: None,
                    retransmissions: 0,
                },
                ends: (src, dst),
            },
        );
        t.method = Some(kind.map_or("BOOTREQUEST".into(), |k| {
            parser::message_type_name(k).to_ascii_uppercase()
        }));
        if expects_reply(kind) {
            self.pending.push(t, waiting, cx);
        } else {
            cx.out.push(t.boxed());
        }
    }

    /// A reply: completes the request it answers (a NAK as an error); one that answers
    /// no request seen is counted.
    fn reply(&mut self, src: SocketAddr, msg: parser::Message, len: u64, cx: &mut Cx<'_>) {
        let kind = msg.options.message_type;
        let Some(p) = self
            .pending
            .take(|w| w.xid == msg.xid && w.mac == msg.chaddr && answers(kind, w.kind))
        else {
            unmatched_response();
            return;
        };
        let mut t = p.txn;
        if kind == Some(NAK) {
            t.status = status::ERROR;
        }
        t.fields.ends.1 = src;
        if let Shape::Exchange { response, .. } = &mut t.fields.shape {
            *response = Some(Box::new(msg));
        }
        complete(t, cx.now, len, cx);
    }
}

impl UdpParser for Dhcpv4 {
    fn datagram(&mut self, dir: Dir, data: &[u8], cx: &mut Cx<'_>) -> Result<(), ParseError> {
        // Without addresses (fuzzing): the client's and the server's ports.
        let (client, server): (SocketAddr, SocketAddr) =
            (([0, 0, 0, 0], 68).into(), ([0, 0, 0, 0], 67).into());
        let (src, dst) = match dir {
            Dir::ToServer => (client, server),
            Dir::ToClient => (server, client),
        };
        self.datagram_between(src, dst, dir, data, cx)
    }

    fn datagram_between(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        _dir: Dir,
        data: &[u8],
        cx: &mut Cx<'_>,
    ) -> Result<(), ParseError> {
        let msg = parser::parse(data).map_err(|e| {
            ParseError(match e {
                parser::Error::Short => "dhcpv4: shorter than the BOOTP header",
                parser::Error::NoMagic => "dhcpv4: no magic cookie",
                parser::Error::OpCode(_) => "dhcpv4: unknown op code",
                parser::Error::Option(_) => "dhcpv4: an option runs past the end",
            })
        })?;
        let len = data.len() as u64;
        match (self.events, msg.op) {
            (Events::Message, _) => self.message(src, dst, msg, len, cx),
            (Events::Exchange, 2) => self.reply(src, msg, len, cx),
            (Events::Exchange, _) => self.request(src, dst, msg, len, cx),
        }
        Ok(())
    }

    fn expire(&mut self, cx: &mut Cx<'_>) {
        self.pending.expire(cx);
    }

    fn close(&mut self, cx: &mut Cx<'_>) {
        self.pending.drain(super::txn::NOTE_TIMEOUT, cx);
    }

    fn pending(&self) -> bool {
        !self.pending.is_empty()
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::proto::Done;
    use crate::inspect::proto::txn::{EcsSettings, Endpoints};

    const MAC: [u8; 6] = [0, 0x0b, 0x82, 1, 0xfc, 0x42];
    const SERVER: &str = "192.168.0.1:67";
    const LEASED: &str = "192.168.0.10:68";
    const ANY: &str = "0.0.0.0:68";
    const BROADCAST: &str = "255.255.255.255:67";

    fn msg(op: u8, xid: u32, kind: u8) -> Vec<u8> {
        let yiaddr = if op == 2 { [192, 168, 0, 10] } else { [0; 4] };
        parser::tests::message(op, xid, MAC, yiaddr, &[53, 1, kind, 54, 4, 192, 168, 0, 1])
    }

    /// Feeds (µs, from, to, datagram) to one parser, then lets `expire_at` pass.
    fn run(events: Events, msgs: &[(u64, &str, &str, Vec<u8>)], expire_at: u64) -> Vec<Done> {
        let mut p = Dhcpv4::new(events, 16);
        let mut out = Vec::new();
        for (at, from, to, data) in msgs {
            let mut cx = Cx {
                now: *at,
                timeout: 10_000_000,
                out: &mut out,
            };
            p.datagram_between(
                from.parse().unwrap(),
                to.parse().unwrap(),
                Dir::ToServer,
                data,
                &mut cx,
            )
            .unwrap();
        }
        let mut cx = Cx {
            now: expire_at,
            timeout: 10_000_000,
            out: &mut out,
        };
        p.expire(&mut cx);
        out
    }

    fn flow() -> Endpoints {
        // What the engine gives a flow keyed by ports: no addresses of its own.
        Endpoints::new(
            "udp",
            "[::]:68".parse().unwrap(),
            "[::]:67".parse().unwrap(),
        )
    }

    fn event(t: Done) -> Value {
        let (c, s) = t.fields.ends().unwrap();
        let ep = Endpoints {
            client: c,
            server: s,
            ..flow()
        };
        t.into_event("dhcpv4", &ep).to_value()
    }

    #[test]
    fn a_lease_is_two_exchanges_a_release_one() {
        let out = run(
            Events::Exchange,
            &[
                (1_000_000, ANY, BROADCAST, msg(1, 7, DISCOVER)),
                (1_004_000, SERVER, LEASED, msg(2, 7, OFFER)),
                (1_010_000, ANY, BROADCAST, msg(1, 7, REQUEST)),
                (1_013_000, SERVER, LEASED, msg(2, 7, ACK)),
                (9_000_000, LEASED, SERVER, msg(1, 8, 7)),
            ],
            30_000_000,
        );
        let v: Vec<Value> = out.into_iter().map(event).collect();
        assert_eq!(v.len(), 3, "{v:#?}");
        assert_eq!(v[0]["method"], "DISCOVER");
        assert_eq!(v[0]["status"], "OK");
        assert_eq!(v[0]["responsetime"], 4);
        assert_eq!(v[0]["client_ip"], "0.0.0.0");
        assert_eq!(v[0]["ip"], "192.168.0.1", "the server that answered");
        assert_eq!(v[0]["port"], 67);
        assert_eq!(v[0]["dhcpv4"]["transaction_id"], "0x00000007");
        assert_eq!(v[0]["dhcpv4"]["client_mac"], "00-0B-82-01-FC-42");
        assert_eq!(
            v[0]["dhcpv4"]["request"]["option"]["message_type"],
            "discover"
        );
        assert_eq!(
            v[0]["dhcpv4"]["response"]["option"]["message_type"],
            "offer"
        );
        assert_eq!(v[0]["dhcpv4"]["response"]["assigned_ip"], "192.168.0.10");
        assert_eq!(v[0]["bytes_in"], msg(1, 7, DISCOVER).len());
        assert_eq!(v[0]["bytes_out"], msg(2, 7, OFFER).len());
        assert_eq!(v[1]["method"], "REQUEST");
        assert_eq!(v[1]["responsetime"], 3);
        assert_eq!(v[1]["dhcpv4"]["response"]["option"]["message_type"], "ack");
        assert_eq!(v[2]["method"], "RELEASE");
        assert_eq!(v[2]["status"], "OK");
        assert_eq!(v[2]["client_ip"], "192.168.0.10");
        assert!(v[2]["dhcpv4"].get("response").is_none());
        assert!(v[2].get("responsetime").is_none(), "no reply expected");
    }

    #[test]
    fn retransmissions_join_the_waiting_request_and_a_nak_is_an_error() {
        let out = run(
            Events::Exchange,
            &[
                (1_000_000, ANY, BROADCAST, msg(1, 9, REQUEST)),
                (2_000_000, ANY, BROADCAST, msg(1, 9, REQUEST)),
                (4_000_000, ANY, BROADCAST, msg(1, 9, REQUEST)),
                (4_001_000, SERVER, "255.255.255.255:68", msg(2, 9, NAK)),
                // A second NAK answers nothing left: counted, not published.
                (4_002_000, SERVER, "255.255.255.255:68", msg(2, 9, NAK)),
            ],
            30_000_000,
        );
        let v: Vec<Value> = out.into_iter().map(event).collect();
        assert_eq!(v.len(), 1, "{v:#?}");
        assert_eq!(v[0]["status"], "Error");
        assert_eq!(v[0]["dhcpv4"]["retransmissions"], 2);
        assert_eq!(v[0]["responsetime"], 3001, "from the first copy");
        assert_eq!(v[0]["dhcpv4"]["response"]["option"]["message_type"], "nak");
    }

    #[test]
    fn an_unanswered_request_fails_at_the_timeout_and_replies_pair_by_type() {
        let out = run(
            Events::Exchange,
            &[
                (1_000_000, ANY, BROADCAST, msg(1, 5, DISCOVER)),
                // An ACK does not answer a DISCOVER; an OFFER of another client neither.
                (1_001_000, SERVER, LEASED, msg(2, 5, ACK)),
                (1_002_000, SERVER, LEASED, {
                    let mut m = msg(2, 5, OFFER);
                    m[28] = 9;
                    m
                }),
            ],
            5_000_000,
        );
        assert!(out.is_empty(), "still within the timeout: {out:?}");
        let out = run(
            Events::Exchange,
            &[(1_000_000, ANY, BROADCAST, msg(1, 5, DISCOVER))],
            11_000_000,
        );
        let v: Vec<Value> = out.into_iter().map(event).collect();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0]["status"], "Error");
        assert_eq!(v[0]["notes"][0], "no response within transaction_timeout");
        assert_eq!(v[0]["ip"], "255.255.255.255", "no server answered");
        assert!(v[0].get("responsetime").is_none());
    }

    #[test]
    fn messages_one_event_each_a_reply_sent_by_the_server_to_the_client() {
        let offer = msg(2, 0x3d1d, OFFER);
        let out = run(
            Events::Message,
            &[
                (1_000_000, ANY, BROADCAST, msg(1, 0x3d1d, DISCOVER)),
                (1_001_000, SERVER, LEASED, offer.clone()),
            ],
            30_000_000,
        );
        assert_eq!(out.len(), 2);
        let s = EcsSettings::default();
        let reply = out.into_iter().nth(1).unwrap();
        let (c, srv) = reply.fields.ends().unwrap();
        let ep = Endpoints {
            client: c,
            server: srv,
            ..flow()
        };
        let v = reply.into_ecs_event("dhcpv4", &ep, &s).to_value();
        assert_eq!(v["client"]["ip"], "192.168.0.10");
        assert_eq!(v["client"]["port"], 68);
        assert_eq!(v["server"]["ip"], "192.168.0.1");
        assert_eq!(v["source"]["ip"], "192.168.0.1");
        assert_eq!(v["destination"]["ip"], "192.168.0.10");
        assert_eq!(v["server"]["bytes"], offer.len());
        assert_eq!(v["dhcpv4"]["client_mac"], "00-0B-82-01-FC-42");
        assert_eq!(v["dhcpv4"]["option"]["message_type"], "offer");
        assert_eq!(v["dhcpv4"]["transaction_id"], "0x00003d1d");
        assert!(v["event"].get("end").is_none());
    }

    #[test]
    fn the_default_follows_the_event_format() {
        let mut c = crate::inspect::proto::testutil::common();
        assert_eq!(Events::resolve(None, &c), Events::Exchange);
        c.event_format = crate::config::EventFormat::Ecs;
        assert_eq!(Events::resolve(None, &c), Events::Message);
        assert_eq!(
            Events::resolve(Some(Events::Exchange), &c),
            Events::Exchange
        );
    }
}

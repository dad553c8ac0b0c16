//! DHCPv4: every message (DISCOVER, OFFER, REQUEST, ACK, NAK, INFORM, RELEASE, ...) is an
//! event of its own, as Packetbeat 8 reports them, with the `dhcpv4.*` fields: op code,
//! transaction id, client MAC and IP, assigned IP, and the decoded options. A reply's
//! `source` is the server, and its `client` the end it is sent to.

pub mod parser;

use super::txn::{Txn, TxnObject};
use super::{Common, Cx, Dir, Entry, ParseError, Parsers, UdpFactory, UdpParser};
use crate::event::Event;
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// The registry's handle on DHCPv4.
pub struct Proto;

/// DHCPv4 has no options of its own.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Options {}

impl super::Protocol for Proto {
    const NAME: &'static str = "dhcpv4";
    type Options = Options;
    fn parsers(_: &Entry<Options>, _: &Common) -> Parsers {
        let udp: UdpFactory = Arc::new(|| Box::new(Dhcpv4) as Box<dyn UdpParser>);
        Parsers {
            tcp: None,
            udp: Some(udp),
        }
    }
}

/// The `dhcpv4` object: the message as Packetbeat writes it.
#[derive(Debug)]
pub struct DhcpTxn {
    msg: parser::Message,
    /// The datagram went from the end the engine took for the server.
    swap: bool,
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

impl DhcpTxn {
    fn object(&self) -> Map<String, Value> {
        let m = &self.msg;
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
        self.msg.op == 2
    }

    fn swap_ends(&self) -> bool {
        self.swap
    }
}

/// The parser of one UDP flow: each datagram is a message and an event.
pub struct Dhcpv4;

impl UdpParser for Dhcpv4 {
    fn datagram(&mut self, dir: Dir, data: &[u8], cx: &mut Cx<'_>) -> Result<(), ParseError> {
        let msg = parser::parse(data).map_err(|e| {
            ParseError(match e {
                parser::Error::Short => "dhcpv4: shorter than the BOOTP header",
                parser::Error::NoMagic => "dhcpv4: no magic cookie",
                parser::Error::OpCode(_) => "dhcpv4: unknown op code",
                parser::Error::Option(_) => "dhcpv4: an option runs past the end",
            })
        })?;
        let reply = msg.op == 2;
        // The sender is the flow's client when the datagram goes to the server.
        let sender_is_flow_client = dir == Dir::ToServer;
        let len = data.len() as u64;
        let txn: Txn<DhcpTxn> = Txn {
            start: cx.now,
            end: None,
            status: super::status::OK,
            method: None,
            path: None,
            query: None,
            resource: None,
            bytes_in: if reply { 0 } else { len },
            bytes_out: if reply { len } else { 0 },
            real_ip: None,
            notes: Vec::new(),
            request: None,
            response: None,
            fields: DhcpTxn {
                swap: reply == sender_is_flow_client,
                msg,
            },
        };
        cx.out.push(txn.boxed());
        Ok(())
    }

    fn expire(&mut self, _cx: &mut Cx<'_>) {}

    fn close(&mut self, _cx: &mut Cx<'_>) {}

    fn pending(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::proto::txn::Endpoints;

    fn run(dir: Dir, data: &[u8]) -> crate::inspect::proto::Done {
        let mut out = Vec::new();
        let mut cx = Cx {
            now: 1_000_000,
            timeout: 1,
            out: &mut out,
        };
        Dhcpv4.datagram(dir, data, &mut cx).unwrap();
        out.pop().unwrap()
    }

    #[test]
    fn a_reply_is_sent_by_the_server_to_the_client() {
        let offer = parser::tests::message(
            2,
            0x3d1d,
            [0, 0x0b, 0x82, 1, 0xfc, 0x42],
            [192, 168, 0, 10],
            &[53, 1, 2, 54, 4, 192, 168, 0, 1],
        );
        // Both ports configured: the engine took the sender (the server) for the client.
        let ep = Endpoints {
            transport: "udp",
            client: "192.168.0.1:67".parse().unwrap(),
            server: "192.168.0.10:68".parse().unwrap(),
            client_process: None,
            server_process: None,
            icmp: None,
        };
        let s = crate::inspect::proto::txn::EcsSettings {
            internal_networks: vec![],
            precision: crate::config::Precision::Millisecond,
        };
        let v = run(Dir::ToServer, &offer)
            .into_ecs_event("dhcpv4", &ep, &s)
            .to_value();
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
        // Only port 67 configured: the engine put the client right; nothing to swap.
        let ep = ep.swapped();
        let v = run(Dir::ToClient, &offer)
            .into_event("dhcpv4", &ep)
            .to_value();
        assert_eq!(v["client_ip"], "192.168.0.10");
        assert_eq!(v["ip"], "192.168.0.1");
        assert_eq!(v["bytes_out"], offer.len());
    }
}

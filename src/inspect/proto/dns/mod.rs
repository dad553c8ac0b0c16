//! DNS transactions over UDP and TCP: queries paired with responses by message id.
//!
//! One state type serves both transports; TCP only adds the two-byte length prefix.

pub mod ecs;
pub mod parser;

use super::TxnObject;
use super::txn::{Pairing, complete, unmatched_response};
use super::{
    Common, Cx, Dir, Entry, GapAction, ParseError, Parsers, TcpFactory, TcpParser, Txn, UdpFactory,
    UdpParser, status,
};
use crate::event::Event;
use serde::Serialize;
use std::sync::Arc;

/// The registry's handle on DNS.
pub struct Proto;

/// The DNS keys of a `connbeat.protocols` entry (Packetbeat's names and meanings).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Options {
    /// The authority section's records go into `dns.authorities`.
    pub include_authorities: bool,
    /// The additional section's records (EDNS OPT aside) go into `dns.additionals`.
    pub include_additionals: bool,
}

impl super::Protocol for Proto {
    const NAME: &'static str = "dns";
    const TEXT_MESSAGES: bool = true;
    type Options = Options;
    fn fuzz_options() -> Options {
        Options {
            include_authorities: true,
            include_additionals: true,
        }
    }
    fn parsers(e: &Entry<Options>, common: &Common) -> Parsers {
        let send = [e.common.send_request, e.common.send_response];
        Parsers {
            tcp: Some(tcp_factory(&e.options, send, common)),
            udp: Some(udp_factory(&e.options, send, common)),
        }
    }
}

fn tcp_factory(o: &Options, send: [bool; 2], common: &Common) -> TcpFactory {
    let (max, o) = (common.max_pending, o.clone());
    Arc::new(move || Box::new(Dns::with(max, &o, send)) as Box<dyn TcpParser>)
}

fn udp_factory(o: &Options, send: [bool; 2], common: &Common) -> UdpFactory {
    let (max, o) = (common.max_pending, o.clone());
    Arc::new(move || Box::new(Dns::with(max, &o, send)) as Box<dyn UdpParser>)
}

/// The `dns` object of a transaction.
#[derive(Debug, Default, Serialize)]
pub struct DnsTxn {
    pub id: u16,
    pub op_code: String,
    /// The query's flags, then the response's.
    pub flags: Flags,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub question: Option<Question>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answers_count: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorities_count: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub additionals_count: Option<u16>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<Answer>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub authorities: Vec<Answer>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub additionals: Vec<Answer>,
}

/// Header flags; the last four only in a response.
#[derive(Debug, Default, Serialize)]
pub struct Flags {
    /// The header's flag word as the message had it, the query's included (ECS
    /// `dns.header_flags` names every bit set, as Packetbeat does, also for a query
    /// that was never answered).
    #[serde(skip)]
    pub word: u16,
    pub recursion_desired: bool,
    pub checking_disabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authoritative: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated_response: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recursion_available: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentic_data: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct Question {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub class: String,
}

#[derive(Debug, Serialize)]
pub struct Answer {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub class: String,
    pub ttl: u32,
    pub data: String,
}

impl TxnObject for DnsTxn {
    fn write_classic(&self, name: &'static str, e: &mut Event) {
        e.push_field(name, self);
    }

    fn write_ecs(&self, name: &'static str, e: &mut Event, _at: &super::txn::EcsAt<'_>) {
        let resolved = ecs::resolved_ips(self);
        e.push_field(name, &ecs::EcsDns::of(self, &resolved));
    }

    /// The resolved addresses join `related.ip`, as in Packetbeat 8.
    fn ecs_links(&self) -> super::txn::EcsLinks<'_> {
        super::txn::EcsLinks {
            ips: ecs::resolved_ips(self),
            ..Default::default()
        }
    }
}

/// Queries waiting for answers on one flow or connection.
pub struct Dns {
    pending: Pairing<u16, DnsTxn>,
    authorities: bool,
    additionals: bool,
    /// `send_request`, `send_response`: the message as text (dig's presentation format).
    send: [bool; 2],
}

impl Dns {
    pub fn new(max_pending: usize) -> Dns {
        Dns::with(max_pending, &Options::default(), [false; 2])
    }

    fn with(max_pending: usize, o: &Options, send: [bool; 2]) -> Dns {
        Dns {
            pending: Pairing::new(max_pending),
            authorities: o.include_authorities,
            additionals: o.include_additionals,
            send,
        }
    }

    /// One whole DNS message of `wire_len` bytes (with the TCP length prefix, if any).
    fn message(&mut self, data: &[u8], wire_len: usize, cx: &mut Cx<'_>) -> Result<(), ParseError> {
        let all = self.authorities || self.additionals || self.send[1];
        let m = parser::parse_sections(data, all)?;
        let text = self.send[usize::from(m.response)].then(|| message_text(&m));
        if !m.response {
            let mut t: Txn<DnsTxn> = Txn::new(cx.now, wire_len as u64);
            t.method = Some(parser::opcode_name(m.opcode));
            t.fields.id = m.id;
            t.fields.op_code = parser::opcode_name(m.opcode);
            t.fields.flags = flags(m.flags, false);
            if let Some(q) = &m.question {
                let (ty, class) = (parser::type_name(q.qtype), parser::class_name(q.qclass));
                t.query = Some(format!("class {class}, type {ty}, {}", q.name));
                t.resource = Some(q.name.clone());
                t.fields.question = Some(Question {
                    name: q.name.clone(),
                    kind: ty,
                    class,
                });
            }
            t.request = text;
            self.pending.push(t, m.id, cx);
            return Ok(());
        }
        let Some(p) = self.pending.take(|id| *id == m.id) else {
            unmatched_response();
            return Ok(());
        };
        let mut t = p.txn;
        t.response = text;
        let rcode = parser::rcode_name(m.rcode);
        if m.rcode != 0 {
            t.status = status::ERROR;
        }
        let f = &mut t.fields;
        f.flags = flags(m.flags, true);
        f.response_code = Some(rcode);
        f.answers_count = Some(m.answers_count);
        f.authorities_count = Some(m.authorities_count);
        f.additionals_count = Some(m.additionals_count);
        let records = |rs: Vec<parser::Record>| -> Vec<Answer> {
            rs.into_iter()
                .map(|r| Answer {
                    name: r.name,
                    kind: parser::type_name(r.rtype),
                    class: parser::class_name(r.class),
                    ttl: r.ttl,
                    data: r.data,
                })
                .collect()
        };
        f.answers = records(m.answers);
        if self.authorities {
            f.authorities = records(m.authorities);
        }
        if self.additionals {
            f.additionals = records(m.additionals);
        }
        complete(t, cx.now, wire_len as u64, cx);
        Ok(())
    }
}

/// A message in dig's presentation format, as Packetbeat writes `request`/`response`.
fn message_text(m: &parser::Message) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        ";; opcode: {}, status: {}, id: {}",
        parser::opcode_name(m.opcode),
        parser::rcode_name(m.rcode),
        m.id
    );
    let _ = writeln!(
        s,
        ";; QUERY: {}, ANSWER: {}, AUTHORITY: {}, ADDITIONAL: {}",
        u8::from(m.question.is_some()),
        m.answers_count,
        m.authorities_count,
        m.additionals_count
    );
    if let Some(q) = &m.question {
        let _ = write!(
            s,
            "\n;; QUESTION SECTION:\n;{}.\t{}\t{}\n",
            q.name,
            parser::class_name(q.qclass),
            parser::type_name(q.qtype)
        );
    }
    for (title, records) in [
        ("ANSWER", &m.answers),
        ("AUTHORITY", &m.authorities),
        ("ADDITIONAL", &m.additionals),
    ] {
        if records.is_empty() {
            continue;
        }
        let _ = write!(s, "\n;; {title} SECTION:\n");
        for r in records.iter() {
            let _ = writeln!(
                s,
                "{}.\t{}\t{}\t{}\t{}",
                r.name,
                r.ttl,
                parser::class_name(r.class),
                parser::type_name(r.rtype),
                r.data
            );
        }
    }
    s
}

fn flags(f: u16, response: bool) -> Flags {
    let bit = |mask: u16| response.then_some(f & mask != 0);
    Flags {
        word: f,
        recursion_desired: f & 0x0100 != 0,
        checking_disabled: f & 0x0010 != 0,
        authoritative: bit(0x0400),
        truncated_response: bit(0x0200),
        recursion_available: bit(0x0080),
        authentic_data: bit(0x0020),
    }
}

impl UdpParser for Dns {
    fn datagram(&mut self, _dir: Dir, data: &[u8], cx: &mut Cx<'_>) -> Result<(), ParseError> {
        self.message(data, data.len(), cx)
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

impl TcpParser for Dns {
    fn parse(&mut self, _dir: Dir, data: &[u8], cx: &mut Cx<'_>) -> Result<usize, ParseError> {
        if data.len() < 2 {
            return Ok(0);
        }
        let len = usize::from(u16::from_be_bytes([data[0], data[1]]));
        if len < 12 {
            return Err(ParseError("dns: tcp message shorter than a header"));
        }
        if data.len() < 2 + len {
            return Ok(0);
        }
        self.message(&data[2..2 + len], 2 + len, cx)?;
        Ok(2 + len)
    }

    fn gap(&mut self, _dir: Dir, _len: usize, _cx: &mut Cx<'_>) -> GapAction {
        GapAction::Reset
    }

    fn expire(&mut self, cx: &mut Cx<'_>) {
        self.pending.expire(cx);
    }

    fn close(&mut self, cx: &mut Cx<'_>) {
        self.pending.drain(super::txn::NOTE_CLOSED, cx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::proto::testutil::drive;

    #[test]
    fn pairs_by_id_over_udp_and_tcp() {
        let mut d = Dns::new(8);
        let mut out = Vec::new();
        let mut cx = Cx {
            now: 10,
            timeout: 1000,
            out: &mut out,
        };
        d.datagram(Dir::ToServer, &parser::tests::sample_query(1), &mut cx)
            .unwrap();
        d.datagram(Dir::ToServer, &parser::tests::sample_query(2), &mut cx)
            .unwrap();
        cx.now = 500;
        d.datagram(Dir::ToClient, &parser::tests::sample_response(2), &mut cx)
            .unwrap();
        assert_eq!(cx.out.len(), 1);
        assert_eq!(cx.out[0].object()["id"], 2);
        assert_eq!(cx.out[0].object()["answers"][0]["data"], "93.184.216.34");
        assert_eq!(
            cx.out[0].query.as_deref(),
            Some("class IN, type A, example.com")
        );

        let mut t = Dns::new(8);
        let mut q = vec![0, 29];
        q.extend(parser::tests::sample_query(5));
        let mut r = vec![0, 45];
        r.extend(parser::tests::sample_response(5));
        let out = drive(&mut t, &[(Dir::ToServer, &q), (Dir::ToClient, &r)], 3);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].status, status::OK);
        assert_eq!(out[0].bytes_out, 47);
    }

    #[test]
    fn authorities_and_additionals_only_when_asked_for() {
        // The sample response with one NS authority and one A additional (and an EDNS OPT,
        // which is left out).
        let mut r = parser::tests::sample_response(9);
        r[8..12].copy_from_slice(&[0, 1, 0, 2]);
        r.extend_from_slice(&[
            0xc0, 12, 0, 2, 0, 1, 0, 0, 0, 60, 0, 5, 2, b'n', b's', 0xc0, 12,
        ]);
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 1]);
        r.extend_from_slice(&[0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0]);
        let run = |o: Options| {
            let mut d = Dns::with(8, &o, [false; 2]);
            let mut out = Vec::new();
            let mut cx = Cx {
                now: 10,
                timeout: 1000,
                out: &mut out,
            };
            d.datagram(Dir::ToServer, &parser::tests::sample_query(9), &mut cx)
                .unwrap();
            d.datagram(Dir::ToClient, &r, &mut cx).unwrap();
            out.pop().unwrap().object()
        };
        let plain = run(Options::default());
        assert!(plain.get("authorities").is_none() && plain.get("additionals").is_none());
        assert_eq!(plain["authorities_count"], 1);
        let full = run(Options {
            include_authorities: true,
            include_additionals: true,
        });
        assert_eq!(full["authorities"][0]["type"], "NS");
        assert_eq!(full["authorities"][0]["data"], "ns.example.com");
        assert_eq!(full["additionals"].as_array().unwrap().len(), 1);
        assert_eq!(full["additionals"][0]["data"], "10.0.0.1");
    }

    #[test]
    fn send_request_and_response_write_the_messages_as_text() {
        let mut d = Dns::with(8, &Options::default(), [true, true]);
        let mut out = Vec::new();
        let mut cx = Cx {
            now: 10,
            timeout: 1000,
            out: &mut out,
        };
        d.datagram(Dir::ToServer, &parser::tests::sample_query(9), &mut cx)
            .unwrap();
        d.datagram(Dir::ToClient, &parser::tests::sample_response(9), &mut cx)
            .unwrap();
        let t = out.pop().unwrap();
        let (req, resp) = (t.request.unwrap(), t.response.unwrap());
        assert!(
            req.starts_with(";; opcode: QUERY, status: NOERROR, id: 9\n"),
            "{req}"
        );
        assert!(
            req.contains(";; QUESTION SECTION:\n;example.com.\tIN\tA\n"),
            "{req}"
        );
        assert!(!req.contains("ANSWER SECTION"), "{req}");
        assert!(
            resp.contains(";; ANSWER SECTION:\nexample.com.\t"),
            "{resp}"
        );
    }
}

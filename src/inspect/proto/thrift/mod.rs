//! Thrift-RPC transactions: a call paired with the reply of the same method and sequence
//! id; calls with no reply (`oneway`, or old clients that send oneway calls as CALL
//! messages) are published without one, as Packetbeat does: at once for ONEWAY messages,
//! and otherwise when a later call is answered or the connection ends.
//!
//! Binary and compact protocols, socket and framed transports: `protocol_type` and
//! `transport_type` give the defaults, and a message that starts with a protocol's magic
//! number, or a frame length before one, is read as such whatever they say. Parameter
//! names and services come from `idl_files`, read when the configuration is loaded.

pub mod idl;
pub mod parser;

use super::TxnObject;
use super::txn::{self, Pairing, complete, unmatched_response};
use super::{
    Common, Cx, Dir, Entry, GapAction, ParseError, Parsers, TcpFactory, TcpParser, Txn, status,
};
use crate::event::Event;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The registry's handle on Thrift.
pub struct Proto;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportType {
    #[default]
    Socket,
    Framed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolType {
    #[default]
    Binary,
    Compact,
}

/// `idl_files`: the paths, and what they say (read when the configuration is loaded, so
/// a missing or broken file is a configuration error naming the key).
#[derive(Debug, Clone, Default)]
pub struct IdlFiles {
    pub paths: Vec<String>,
    pub idl: Arc<idl::Idl>,
}

impl PartialEq for IdlFiles {
    fn eq(&self, o: &Self) -> bool {
        self.paths == o.paths
    }
}

impl Serialize for IdlFiles {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.paths.serialize(s)
    }
}

impl<'de> Deserialize<'de> for IdlFiles {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let paths = Vec::<String>::deserialize(d)?;
        let idl = idl::Idl::read(&paths).map_err(serde::de::Error::custom)?;
        Ok(IdlFiles {
            paths,
            idl: Arc::new(idl),
        })
    }
}

/// The Thrift keys of a `connbeat.protocols` entry (Packetbeat's names and defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Options {
    /// Longest string written (bytes), then `...`.
    pub string_max_size: usize,
    /// Elements of a list, set or map (and fields of a struct) written, then `...`.
    pub collection_max_size: usize,
    /// A struct with more fields is taken for garbage and the message dropped.
    pub drop_after_n_struct_fields: usize,
    /// Strings written as `"*"`.
    pub obfuscate_strings: bool,
    /// Replies are decoded (otherwise only paired).
    pub capture_reply: bool,
    pub transport_type: TransportType,
    pub protocol_type: ProtocolType,
    /// IDL files naming parameters and exceptions, and giving methods their service.
    pub idl_files: IdlFiles,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            string_max_size: 200,
            collection_max_size: 15,
            drop_after_n_struct_fields: 500,
            obfuscate_strings: false,
            capture_reply: true,
            transport_type: TransportType::Socket,
            protocol_type: ProtocolType::Binary,
            idl_files: IdlFiles::default(),
        }
    }
}

impl super::Protocol for Proto {
    const NAME: &'static str = "thrift";
    const TEXT_MESSAGES: bool = true;
    type Options = Options;
    fn parsers(e: &Entry<Options>, common: &Common) -> Parsers {
        let o = &e.options;
        let s = Arc::new(Settings {
            render: parser::Render {
                string_max_size: o.string_max_size,
                collection_max_size: o.collection_max_size,
                drop_after_n_struct_fields: o.drop_after_n_struct_fields.max(1),
                obfuscate_strings: o.obfuscate_strings,
            },
            capture_reply: o.capture_reply,
            framed: o.transport_type == TransportType::Framed,
            proto: match o.protocol_type {
                ProtocolType::Binary => parser::Protocol::Binary,
                ProtocolType::Compact => parser::Protocol::Compact,
            },
            idl: o.idl_files.idl.clone(),
            send: [e.common.send_request, e.common.send_response],
        });
        let max = common.max_pending;
        let tcp: TcpFactory = Arc::new(move || {
            Box::new(Thrift {
                s: s.clone(),
                pending: Pairing::new(max),
                serial: 0,
            }) as _
        });
        Parsers {
            tcp: Some(tcp),
            udp: None,
        }
    }
    fn fuzz_options() -> Options {
        Options {
            string_max_size: 8,
            collection_max_size: 2,
            drop_after_n_struct_fields: 50,
            ..Options::default()
        }
    }
}

#[derive(Debug)]
struct Settings {
    render: parser::Render,
    capture_reply: bool,
    framed: bool,
    proto: parser::Protocol,
    idl: Arc<idl::Idl>,
    send: [bool; 2],
}

/// The `thrift` object of a transaction (Packetbeat's fields).
#[derive(Debug, Default, Serialize)]
pub struct ThriftTxn {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exceptions: Option<String>,
}

impl TxnObject for ThriftTxn {
    fn write_classic(&self, name: &'static str, e: &mut Event) {
        e.push_field(name, self);
    }
}

/// A call waiting for its reply.
#[derive(Debug)]
struct Call {
    method: String,
    seqid: i32,
    /// Order of arrival on the connection.
    serial: u64,
}

pub struct Thrift {
    s: Arc<Settings>,
    pending: Pairing<Call, ThriftTxn>,
    serial: u64,
}

/// Publishes a call that had no reply (oneway), as Packetbeat does: status OK.
fn without_reply(t: Txn<ThriftTxn>, cx: &mut Cx<'_>) {
    cx.out.push(t.boxed());
}

impl Thrift {
    /// Whether the bytes at `data` are framed: a magic number first says no, a frame
    /// length before one says yes, otherwise `transport_type`. `None`: too few bytes.
    fn framed(&self, data: &[u8]) -> Option<bool> {
        let magic = |b: u8| b == 0x80 || b == 0x82;
        match data {
            [b, ..] if magic(*b) => Some(false),
            [0, _, _, _, b, ..] if magic(*b) => Some(true),
            [_, _, _, _, _, ..] => Some(self.s.framed),
            _ => None,
        }
    }

    fn call(&mut self, m: parser::Message, cx: &mut Cx<'_>) {
        let mut t: Txn<ThriftTxn> = Txn::new(cx.now, m.len as u64);
        let method = self.s.idl.methods.get(&m.method);
        let names = method.map(|x| move |id: i16| x.params.get(&id).cloned());
        let params = parser::format_struct(
            &m.fields,
            names.as_ref().map(|f| f as &dyn Fn(i16) -> Option<String>),
            self.s.render.collection_max_size,
        );
        let query = format!("{}{params}", m.method);
        t.fields.service = method.map(|x| x.service.clone());
        t.path = t.fields.service.clone();
        t.fields.params = Some(params);
        if self.s.send[0] {
            t.request = Some(query.clone());
        }
        t.query = Some(query);
        t.method = Some(m.method.clone());
        if m.mtype == parser::ONEWAY {
            without_reply(t, cx);
            return;
        }
        self.serial += 1;
        let call = Call {
            method: m.method,
            seqid: m.seqid,
            serial: self.serial,
        };
        self.pending.push(t, call, cx);
    }

    fn reply(&mut self, m: parser::Message, cx: &mut Cx<'_>) {
        let Some(p) = self
            .pending
            .take(|c| c.method == m.method && c.seqid == m.seqid)
        else {
            unmatched_response();
            return;
        };
        // Calls before this one got no reply: they were oneway.
        while self
            .pending
            .front()
            .is_some_and(|f| f.extra.serial < p.extra.serial)
        {
            if let Some(o) = self.pending.pop() {
                without_reply(o.txn, cx);
            }
        }
        let mut t = p.txn;
        let (value, exceptions) = match m.fields.first() {
            _ if !self.s.capture_reply => (String::new(), None),
            Some(f) if f.id == 0 => (f.value.clone(), None),
            Some(_) => {
                let method = self.s.idl.methods.get(&m.method);
                let names = method.map(|x| move |id: i16| x.exceptions.get(&id).cloned());
                let e = parser::format_struct(
                    &m.fields,
                    names.as_ref().map(|f| f as &dyn Fn(i16) -> Option<String>),
                    self.s.render.collection_max_size,
                );
                (String::new(), Some(e))
            }
            None => (String::new(), None),
        };
        if self.s.send[1] {
            t.response = Some(match &exceptions {
                Some(e) => format!("Exceptions: {e}"),
                None => value.clone(),
            });
        }
        if exceptions.is_some() {
            t.status = status::ERROR;
        }
        t.fields.return_value = Some(value);
        t.fields.exceptions = exceptions;
        complete(t, cx.now, m.len as u64, cx);
    }
}

impl TcpParser for Thrift {
    fn parse(&mut self, dir: Dir, data: &[u8], cx: &mut Cx<'_>) -> Result<usize, ParseError> {
        let Some(framed) = self.framed(data) else {
            return Ok(0);
        };
        let fields = dir == Dir::ToServer || self.s.capture_reply;
        let Some(m) = parser::message(data, framed, self.s.proto, &self.s.render, fields)? else {
            return Ok(0);
        };
        let used = m.wire_len;
        match (dir, m.mtype) {
            (Dir::ToServer, parser::CALL | parser::ONEWAY) => self.call(m, cx),
            (Dir::ToClient, parser::REPLY | parser::EXCEPTION) => self.reply(m, cx),
            _ => return Err(ParseError("thrift: message in the wrong direction")),
        }
        Ok(used)
    }

    fn gap(&mut self, dir: Dir, _len: usize, cx: &mut Cx<'_>) -> GapAction {
        if dir == Dir::ToClient
            && let Some(p) = self.pending.pop()
        {
            txn::fail(p.txn, txn::NOTE_GAP, cx);
        }
        GapAction::Reset
    }

    fn expire(&mut self, cx: &mut Cx<'_>) {
        self.pending.expire(cx);
    }

    fn close(&mut self, cx: &mut Cx<'_>) {
        // As Packetbeat: a call still waiting when the connection ends was oneway.
        while let Some(p) = self.pending.pop() {
            without_reply(p.txn, cx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::proto::testutil::{common, drive};

    fn msg(mtype: u8, name: &str, body: &[u8]) -> Vec<u8> {
        let mut m = (0x8001_0000u32 | u32::from(mtype)).to_be_bytes().to_vec();
        m.extend_from_slice(&(name.len() as u32).to_be_bytes());
        m.extend_from_slice(name.as_bytes());
        m.extend_from_slice(&0u32.to_be_bytes());
        m.extend_from_slice(body);
        m.push(0);
        m
    }

    fn parser(o: Options, send: bool) -> Box<dyn TcpParser> {
        let mut e = Entry::<Options> {
            options: o,
            ..Entry::default()
        };
        e.common.send_request = send;
        e.common.send_response = send;
        <Proto as super::super::Protocol>::parsers(&e, &common())
            .tcp
            .unwrap()()
    }

    #[test]
    fn calls_replies_exceptions_and_calls_without_reply() {
        let mut p = parser(Options::default(), true);
        let mut req = msg(
            parser::CALL,
            "add",
            &[8, 0, 1, 0, 0, 0, 1, 8, 0, 2, 0, 0, 0, 1],
        );
        req.extend(msg(parser::CALL, "zip", &[]));
        req.extend(msg(parser::CALL, "calc", &[]));
        req.extend(msg(parser::ONEWAY, "log", &[11, 0, 1, 0, 0, 0, 1, b'x']));
        let mut resp = msg(parser::REPLY, "add", &[8, 0, 0, 0, 0, 0, 2]);
        resp.extend(msg(
            parser::REPLY,
            "calc",
            &[12, 0, 1, 8, 0, 1, 0, 0, 0, 4, 0],
        ));
        let out = drive(
            p.as_mut(),
            &[(Dir::ToServer, &req[..]), (Dir::ToClient, &resp[..])],
            6,
        );
        let methods: Vec<_> = out.iter().map(|t| t.method.clone().unwrap()).collect();
        assert_eq!(methods, ["log", "add", "zip", "calc"]);
        assert_eq!(out[0].object()["params"], "(1: \"x\")");
        assert!(out[0].end.is_none());
        assert_eq!(out[1].query.as_deref(), Some("add(1: 1, 2: 1)"));
        assert_eq!(out[1].object()["return_value"], "2");
        assert_eq!(out[1].response.as_deref(), Some("2"));
        assert_eq!(out[2].status, status::OK);
        assert!(out[2].object().get("return_value").is_none());
        assert_eq!(out[3].status, status::ERROR);
        assert_eq!(out[3].object()["exceptions"], "(1: (1: 4))");
        assert_eq!(out[3].response.as_deref(), Some("Exceptions: (1: (1: 4))"));
    }

    #[test]
    fn idl_names_params_and_service() {
        let mut idl = idl::Idl::default();
        idl.add("service Calc { i32 add(1: i32 num1, 2: i32 num2) throws (1: Oops ouch) }")
            .unwrap();
        let o = Options {
            idl_files: IdlFiles {
                paths: vec!["x.thrift".into()],
                idl: Arc::new(idl),
            },
            ..Options::default()
        };
        let mut p = parser(o, false);
        let req = msg(
            parser::CALL,
            "add",
            &[8, 0, 1, 0, 0, 0, 1, 8, 0, 2, 0, 0, 0, 1],
        );
        let resp = msg(parser::REPLY, "add", &[12, 0, 1, 0]);
        let out = drive(
            p.as_mut(),
            &[(Dir::ToServer, &req[..]), (Dir::ToClient, &resp[..])],
            100,
        );
        assert_eq!(out[0].object()["params"], "(num1: 1, num2: 1)");
        assert_eq!(out[0].object()["service"], "Calc");
        assert_eq!(out[0].path.as_deref(), Some("Calc"));
        assert_eq!(out[0].object()["exceptions"], "(ouch: ())");
        assert!(out[0].request.is_none());
    }

    #[test]
    fn a_missing_idl_file_is_a_configuration_error_naming_it() {
        let e = crate::config::from_yaml_str(
            "output.console: {}\nconnbeat.protocols:\n  - {type: thrift, ports: [9090], idl_files: [/nonexistent/x.thrift]}",
            &[],
            &|_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("idl_files") && e.contains("/nonexistent/x.thrift"),
            "{e}"
        );
    }

    /// A Thrift connection of a `connbeat.protocols` entry with these keys (each written
    /// `, key: value`), read by name from the configuration.
    fn configured(keys: &str) -> Box<dyn TcpParser> {
        let c = crate::config::from_yaml_str(
            &format!(
                "output.console: {{}}\nconnbeat.protocols:\n  \
                 - {{type: thrift, ports: [9090]{keys}}}"
            ),
            &[],
            &|_| None,
        )
        .unwrap();
        c.connbeat.protocols[0].parsers(&common()).tcp.unwrap()()
    }

    /// A binary string field: type 11, id, length, bytes.
    fn string_field(id: u8, s: &[u8]) -> Vec<u8> {
        let mut f = vec![11, 0, id];
        f.extend_from_slice(&(s.len() as u32).to_be_bytes());
        f.extend_from_slice(s);
        f
    }

    #[test]
    fn obfuscate_strings_read_by_name_hides_every_string() {
        // echo(1: "hello", 2: "", 3: i32 7, 4: list<string> ["a"]) returning "world".
        let mut args = string_field(1, b"hello");
        args.extend(string_field(2, b""));
        args.extend_from_slice(&[8, 0, 3, 0, 0, 0, 7]);
        args.extend_from_slice(&[15, 0, 4, 11, 0, 0, 0, 1, 0, 0, 0, 1, b'a']);
        let req = msg(parser::CALL, "echo", &args);
        let resp = msg(parser::REPLY, "echo", &string_field(0, b"world"));
        let run = |mut p: Box<dyn TcpParser>| {
            let out = drive(
                p.as_mut(),
                &[(Dir::ToServer, &req[..]), (Dir::ToClient, &resp[..])],
                9,
            );
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].status, status::OK);
            out[0].object()
        };
        // As Packetbeat: a non-empty string is "*", an empty one stays "".
        let o = run(configured(", obfuscate_strings: true"));
        assert_eq!(o["params"], r#"(1: "*", 2: "", 3: 7, 4: ["*"])"#);
        assert_eq!(o["return_value"], r#""*""#);
        let o = run(configured(""));
        assert_eq!(o["params"], r#"(1: "hello", 2: "", 3: 7, 4: ["a"])"#);
        assert_eq!(o["return_value"], r#""world""#);
    }

    #[test]
    fn capture_reply_false_read_by_name_pairs_without_reading_the_reply() {
        let add = msg(
            parser::CALL,
            "add",
            &[8, 0, 1, 0, 0, 0, 1, 8, 0, 2, 0, 0, 0, 1],
        );
        let two = msg(parser::REPLY, "add", &[8, 0, 0, 0, 0, 0, 2]);
        let exchange = [
            (Dir::ToServer, &add[..]),
            (Dir::ToClient, &two[..]),
            (Dir::ToServer, &add[..]),
            (Dir::ToClient, &two[..]),
        ];
        let mut p = configured(", capture_reply: false");
        let out = drive(p.as_mut(), &exchange, 5);
        // Both exchanges, one after the other in the same stream, complete.
        assert_eq!(out.len(), 2);
        for t in &out {
            let o = t.object();
            assert_eq!(t.method.as_deref(), Some("add"));
            assert_eq!(o["params"], "(1: 1, 2: 1)");
            assert_eq!(o["return_value"], "", "{o}");
            assert!(o.get("exceptions").is_none());
            assert_eq!(t.status, status::OK);
            assert!(t.end.is_some());
            assert_eq!(t.bytes_out, two.len() as u64);
        }
        let mut p = configured("");
        let out = drive(p.as_mut(), &exchange, 5);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].object()["return_value"], "2");
    }

    #[test]
    fn size_limits_read_by_name_cut_strings_collections_and_drop_wide_structs() {
        // f(1: "hello", 2: list<i32> [1, 2, 3], 3: i32 9) returning
        // map<string, string> {"k1": "vvvv", "k2": "x", "k3": "y"}.
        let mut args = string_field(1, b"hello");
        args.extend_from_slice(&[15, 0, 2, 8, 0, 0, 0, 3]);
        for i in 1..=3u32 {
            args.extend_from_slice(&i.to_be_bytes());
        }
        args.extend_from_slice(&[8, 0, 3, 0, 0, 0, 9]);
        let call = msg(parser::CALL, "f", &args);
        let mut map = vec![13, 0, 0, 11, 11, 0, 0, 0, 3];
        for (k, v) in [(b"k1", &b"vvvv"[..]), (b"k2", b"x"), (b"k3", b"y")] {
            for s in [&k[..], v] {
                map.extend_from_slice(&(s.len() as u32).to_be_bytes());
                map.extend_from_slice(s);
            }
        }
        let reply = msg(parser::REPLY, "f", &map);
        // g(...) with four fields: more than a struct may have below.
        let mut wide = Vec::new();
        for id in 1..=4 {
            wide.extend_from_slice(&[3, 0, id, 0]);
        }
        let g = msg(parser::CALL, "g", &wide);
        let g_reply = msg(parser::REPLY, "g", &[]);
        let stream = [
            (Dir::ToServer, &call[..]),
            (Dir::ToClient, &reply[..]),
            (Dir::ToServer, &g[..]),
            (Dir::ToClient, &g_reply[..]),
        ];
        let keys = ", string_max_size: 3, collection_max_size: 2, drop_after_n_struct_fields: 4";
        let mut p = configured(keys);
        let out = drive(p.as_mut(), &stream, 11);
        assert_eq!(out.len(), 1, "g, with four fields, is dropped");
        let o = out[0].object();
        assert_eq!(o["params"], r#"(1: "hel...", 2: [1, 2, ...], ...)"#);
        assert_eq!(o["return_value"], r#"{"k1": "vvv...", "k2": "x", ...}"#);
        assert_eq!(out[0].method.as_deref(), Some("f"));

        let mut p = configured("");
        let out = drive(p.as_mut(), &stream, 11);
        assert_eq!(out.len(), 2);
        let o = out[0].object();
        assert_eq!(o["params"], r#"(1: "hello", 2: [1, 2, 3], 3: 9)"#);
        assert_eq!(o["return_value"], r#"{"k1": "vvvv", "k2": "x", "k3": "y"}"#);
        assert_eq!(out[1].object()["params"], "(1: 0, 2: 0, 3: 0, 4: 0)");
    }
}

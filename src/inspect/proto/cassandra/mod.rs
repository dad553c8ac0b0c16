//! Cassandra (CQL native protocol v3 to v5) transactions: each request paired with the
//! response on its stream id (a connection multiplexes up to 32k streams, answered in any
//! order); server-pushed EVENT frames (stream -1) are transactions of their own.
//!
//! Compression is learnt from the STARTUP message (`COMPRESSION: snappy | lz4`), or taken
//! from `compressor` when the capture starts after it. In v5, after the STARTUP exchange,
//! frames travel inside checksummed segments (lz4-compressed when negotiated): each
//! direction then reassembles frames from segment payloads. A frame larger than
//! [`PREFIX`] is read from its first bytes (a result's metadata and row count come first)
//! and the rest skipped unseen, so memory stays bounded whatever a result's size.
//! AUTH_RESPONSE bodies (credentials) are never read.

pub mod parser;

use super::TxnObject;
use super::txn::{self, Pairing, complete, unmatched_response};
use super::{
    Common, Cx, Dir, Entry, GapAction, ParseError, Parsers, TcpFactory, TcpParser, Txn, status,
};
use crate::event::Event;
use parser::{Compression, HEADER_LEN, Header, op};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// Body bytes read from a frame too long to hold whole.
pub const PREFIX: usize = 64 * 1024;

/// The registry's handle on Cassandra.
pub struct Proto;

/// An opcode named in `ignored_ops` (checked when the configuration is read).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct OpName(pub String);

impl<'de> Deserialize<'de> for OpName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match parser::op_of(&s) {
            Some(_) => Ok(OpName(s)),
            None => Err(serde::de::Error::custom(format!(
                "unknown frame op {s:?}; known: {}",
                (0u8..=0x10)
                    .filter(|&o| o != 4)
                    .map(|o| parser::op_name(o).into_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }
}

/// The Cassandra keys of a `connbeat.protocols` entry (Packetbeat's names and defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Options {
    /// Frame header in `cassandra.request.headers` (with `send_request`).
    pub send_request_header: bool,
    /// Frame header in `cassandra.response.headers` (with `send_response`).
    pub send_response_header: bool,
    /// The compression of connections whose STARTUP was not captured.
    pub compressor: Option<Compression>,
    /// Opcodes whose transactions are not published.
    pub ignored_ops: Vec<OpName>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            send_request_header: true,
            send_response_header: true,
            compressor: None,
            ignored_ops: Vec::new(),
        }
    }
}

impl super::Protocol for Proto {
    const NAME: &'static str = "cassandra";
    const TEXT_MESSAGES: bool = true;
    const SEND_BY_DEFAULT: bool = true;
    type Options = Options;
    fn parsers(e: &Entry<Options>, common: &Common) -> Parsers {
        let s = Arc::new(Settings {
            send: [e.common.send_request, e.common.send_response],
            headers: [
                e.options.send_request_header,
                e.options.send_response_header,
            ],
            ignored: e
                .options
                .ignored_ops
                .iter()
                .filter_map(|o| parser::op_of(&o.0))
                .fold(0u32, |m, o| m | 1 << o),
            compressor: e.options.compressor.unwrap_or_default(),
            max_frame: e.common.max_message_size.max(HEADER_LEN),
        });
        let max = common.max_pending;
        let tcp: TcpFactory = Arc::new(move || Box::new(Cassandra::new(s.clone(), max)) as _);
        Parsers {
            tcp: Some(tcp),
            udp: None,
        }
    }
    fn fuzz_options() -> Options {
        Options {
            compressor: Some(Compression::Snappy),
            ignored_ops: vec![OpName("OPTIONS".into())],
            ..Options::default()
        }
    }
}

/// What a connection's parser needs from the configuration.
#[derive(Debug)]
struct Settings {
    /// `send_request`, `send_response`.
    send: [bool; 2],
    /// `send_request_header`, `send_response_header`.
    headers: [bool; 2],
    /// Bit per opcode of `ignored_ops`.
    ignored: u32,
    compressor: Compression,
    /// `max_message_size`: the longest frame held whole.
    max_frame: usize,
}

/// A frame header as Packetbeat writes it.
#[derive(Debug, Serialize)]
pub struct Headers {
    pub version: String,
    pub flags: Cow<'static, str>,
    /// A signed [short]: server pushes (EVENT) come on -1.
    pub stream: i16,
    pub op: Cow<'static, str>,
    pub length: u32,
}

impl Headers {
    fn of(h: &Header) -> Headers {
        Headers {
            version: h.version.to_string(),
            flags: parser::flags_name(h.flags),
            stream: h.stream,
            op: parser::op_name(h.op),
            length: h.length,
        }
    }
}

/// `cassandra.request`.
#[derive(Debug, Serialize)]
pub struct RequestObj {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

/// `cassandra.response`.
#[derive(Debug, Serialize)]
pub struct ResponseObj {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
    #[serde(flatten)]
    pub body: parser::Response,
}

/// The `cassandra` object of a transaction.
#[derive(Debug, Default, Serialize)]
pub struct CassandraTxn {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestObj>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<ResponseObj>,
    /// A server-pushed EVENT.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_request: bool,
}

impl TxnObject for CassandraTxn {
    /// As Packetbeat: no `cassandra` object when there is nothing in it.
    fn write_classic(&self, name: &'static str, e: &mut Event) {
        if self.request.is_some() || self.response.is_some() || self.no_request {
            e.push_field(name, self);
        }
    }
}

/// A request waiting on its stream.
#[derive(Debug)]
struct Waiting {
    stream: i16,
    op: u8,
    /// Its transaction is not published (`ignored_ops`).
    ignored: bool,
    /// A PREPARE's query, remembered with the id its answer gives.
    prepared: Option<String>,
}

pub struct Cassandra {
    s: Arc<Settings>,
    pending: Pairing<Waiting, CassandraTxn>,
    compression: Compression,
    /// A v5 STARTUP waits for its answer: segments follow a READY or AUTHENTICATE.
    startup_v5: bool,
    /// Per direction: v5 segment framing in force.
    modern: [bool; 2],
    /// Per direction: bytes of frames taken out of segments, not parsed yet.
    inner: [Vec<u8>; 2],
    /// Per direction: bytes of a long frame inside segments still to skip.
    inner_skip: [usize; 2],
    /// Queries of the statements prepared on this connection, by prepared id (an EXECUTE
    /// is reported with its query), at most [`MAX_PREPARED`].
    prepared: HashMap<String, String>,
}

/// Prepared statements remembered per connection.
const MAX_PREPARED: usize = 1024;

fn idx(dir: Dir) -> usize {
    usize::from(dir == Dir::ToClient)
}

impl Cassandra {
    fn new(s: Arc<Settings>, max_pending: usize) -> Cassandra {
        Cassandra {
            compression: s.compressor,
            s,
            pending: Pairing::new(max_pending),
            startup_v5: false,
            modern: [false; 2],
            inner: Default::default(),
            inner_skip: [0; 2],
            prepared: HashMap::new(),
        }
    }

    /// Reads the frames at the start of `data` (legacy framing): how many bytes were used.
    fn legacy(&mut self, dir: Dir, data: &[u8], cx: &mut Cx<'_>) -> Result<usize, ParseError> {
        let Some(h) = parser::header(data)? else {
            return Ok(0);
        };
        let total = HEADER_LEN + h.length as usize;
        if data.len() >= total {
            self.frame(dir, &h, &data[HEADER_LEN..total], cx)?;
            return Ok(total);
        }
        if h.flags & parser::FLAG_COMPRESS == 0
            && (total > self.s.max_frame || h.length as usize > PREFIX)
            && data.len() >= HEADER_LEN + PREFIX
        {
            self.frame(dir, &h, &data[HEADER_LEN..HEADER_LEN + PREFIX], cx)?;
            return Ok(total);
        }
        Ok(0)
    }

    /// Reads one v5 segment and the frames it completes.
    fn modern(&mut self, dir: Dir, data: &[u8], cx: &mut Cx<'_>) -> Result<usize, ParseError> {
        let d = idx(dir);
        let Some(seg) = parser::segment(data, self.compression == Compression::Lz4)? else {
            return Ok(0);
        };
        let mut payload = &seg.payload[..];
        if self.inner_skip[d] > 0 {
            let n = self.inner_skip[d].min(payload.len());
            payload = &payload[n..];
            self.inner_skip[d] -= n;
        }
        if self.inner[d].len() + payload.len() > self.s.max_frame.max(PREFIX + HEADER_LEN) {
            self.inner[d].clear();
            return Err(ParseError("cassandra: v5 frame beyond max_message_size"));
        }
        self.inner[d].extend_from_slice(payload);
        let mut inner = std::mem::take(&mut self.inner[d]);
        let r = self.inner_frames(dir, &mut inner, cx);
        self.inner[d] = inner;
        r.map(|()| seg.wire_len)
    }

    fn inner_frames(
        &mut self,
        dir: Dir,
        inner: &mut Vec<u8>,
        cx: &mut Cx<'_>,
    ) -> Result<(), ParseError> {
        let d = idx(dir);
        let mut at = 0;
        while let Some(h) = parser::header(&inner[at..])? {
            let total = HEADER_LEN + h.length as usize;
            let have = inner.len() - at;
            if have >= total {
                self.frame(dir, &h, &inner[at + HEADER_LEN..at + total], cx)?;
                at += total;
            } else if h.length as usize > PREFIX && have >= HEADER_LEN + PREFIX {
                self.frame(
                    dir,
                    &h,
                    &inner[at + HEADER_LEN..at + HEADER_LEN + PREFIX],
                    cx,
                )?;
                self.inner_skip[d] = total - have;
                at = inner.len();
            } else {
                break;
            }
        }
        inner.drain(..at);
        Ok(())
    }

    /// One whole frame (or the first [`PREFIX`] bytes of a long one).
    fn frame(
        &mut self,
        dir: Dir,
        h: &Header,
        body: &[u8],
        cx: &mut Cx<'_>,
    ) -> Result<(), ParseError> {
        if h.response != (dir == Dir::ToClient) {
            return Err(ParseError("cassandra: frame in the wrong direction"));
        }
        let wire = (HEADER_LEN + h.length as usize) as u64;
        let plain;
        let mut note = None;
        let body = if h.flags & parser::FLAG_COMPRESS != 0 && h.version < 5 {
            match parser::decompress(self.compression, body, self.s.max_frame) {
                Ok(b) => {
                    plain = b;
                    &plain[..]
                }
                Err(e) => {
                    note = Some(e.0);
                    &[][..]
                }
            }
        } else {
            body
        };
        match dir {
            Dir::ToServer => self.request(h, body, wire, note, cx),
            Dir::ToClient => self.response(h, body, wire, note, cx),
        }
        Ok(())
    }

    fn request(&mut self, h: &Header, body: &[u8], wire: u64, note: Option<&str>, cx: &mut Cx<'_>) {
        let mut q = match h.op {
            op::AUTH_RESPONSE => parser::Request::default(),
            _ => parser::request(h, body).unwrap_or_default(),
        };
        if let Some(id) = &q.prepared_id {
            q.query = self.prepared.get(id).cloned();
        }
        if h.op == op::STARTUP {
            if let Some(c) = q.compression {
                self.compression = c;
            }
            self.startup_v5 = h.version >= 5;
        }
        let prepared = (h.op == op::PREPARE).then(|| q.query.clone()).flatten();
        let mut t: Txn<CassandraTxn> = Txn::new(cx.now, wire);
        t.notes.extend(note.map(String::from));
        if self.s.send[0] {
            let o = RequestObj {
                headers: self.s.headers[0].then(|| Headers::of(h)),
                query: q.query,
            };
            if o.headers.is_some() || o.query.is_some() {
                t.fields.request = Some(o);
            }
        }
        let w = Waiting {
            stream: h.stream,
            op: h.op,
            ignored: self.s.ignored & 1 << h.op != 0,
            prepared,
        };
        self.pending.push(t, w, cx);
    }

    fn response(
        &mut self,
        h: &Header,
        body: &[u8],
        wire: u64,
        note: Option<&str>,
        cx: &mut Cx<'_>,
    ) {
        let (mut t, waiting) = if h.stream < 0 {
            let mut t: Txn<CassandraTxn> = Txn::new(cx.now, 0);
            t.fields.no_request = true;
            (t, None)
        } else {
            match self.pending.take(|w| w.stream == h.stream) {
                Some(p) => (p.txn, Some(p.extra)),
                None => {
                    unmatched_response();
                    return;
                }
            }
        };
        if let Some(w) = &waiting
            && w.op == op::STARTUP
            && self.startup_v5
            && matches!(h.op, op::READY | op::AUTHENTICATE)
        {
            self.modern = [true; 2];
        }
        let ignored =
            waiting.as_ref().is_some_and(|w| w.ignored) || self.s.ignored & 1 << h.op != 0;
        let prepared_query = waiting.and_then(|w| w.prepared);
        if ignored {
            return;
        }
        t.notes.extend(note.map(String::from));
        let body = match parser::response(h, body) {
            Ok(b) => b,
            Err(e) => {
                t.notes.push(e.0.into());
                parser::Response::default()
            }
        };
        if let (Some(p), Some(q)) = (
            body.result.as_ref().and_then(|r| r.prepared.as_ref()),
            prepared_query,
        ) && self.prepared.len() < MAX_PREPARED
        {
            self.prepared.insert(p.prepared_id.clone(), q);
        }
        if h.op == op::ERROR {
            t.status = status::ERROR;
        }
        if self.s.send[1] {
            let o = ResponseObj {
                headers: self.s.headers[1].then(|| Headers::of(h)),
                body,
            };
            if o.headers.is_some() || o.body != parser::Response::default() {
                t.fields.response = Some(o);
            }
        }
        complete(t, cx.now, wire, cx);
    }
}

impl TcpParser for Cassandra {
    fn parse(&mut self, dir: Dir, data: &[u8], cx: &mut Cx<'_>) -> Result<usize, ParseError> {
        if self.modern[idx(dir)] {
            self.modern(dir, data, cx)
        } else {
            self.legacy(dir, data, cx)
        }
    }

    fn gap(&mut self, dir: Dir, _len: usize, _cx: &mut Cx<'_>) -> GapAction {
        // The requests whose answers fell into the hole expire with a note; the others
        // still pair by stream id.
        let d = idx(dir);
        self.inner[d].clear();
        self.inner_skip[d] = 0;
        GapAction::Reset
    }

    fn expire(&mut self, cx: &mut Cx<'_>) {
        self.pending.expire(cx);
    }

    fn close(&mut self, cx: &mut Cx<'_>) {
        // Requests of ignored opcodes are dropped, not published as failures.
        while let Some(p) = self.pending.pop() {
            if !p.extra.ignored {
                txn::fail(p.txn, txn::NOTE_CLOSED, cx);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::proto::testutil::{common, drive};

    fn frame(version: u8, flags: u8, stream: i16, op: u8, body: &[u8]) -> Vec<u8> {
        let mut f = vec![version, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.push(op);
        f.extend_from_slice(&(body.len() as u32).to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    fn long_string(s: &str) -> Vec<u8> {
        let mut b = (s.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(s.as_bytes());
        b
    }

    fn parser_with(o: Options) -> Box<dyn TcpParser> {
        let mut e = Entry::<Options> {
            options: o,
            ..Entry::default()
        };
        e.common.send_request = true;
        e.common.send_response = true;
        <Proto as super::super::Protocol>::parsers(&e, &common())
            .tcp
            .unwrap()()
    }

    #[test]
    fn responses_pair_by_stream_not_by_order() {
        let mut p = parser_with(Options::default());
        let mut req = frame(4, 0, 1, op::QUERY, &long_string("SELECT a FROM t"));
        req.extend(frame(4, 0, 2, op::QUERY, &long_string("USE ks")));
        let mut resp = frame(0x84, 0, 2, op::RESULT, b"\0\0\0\x03\0\x02ks");
        resp.extend(frame(0x84, 0, 1, op::RESULT, b"\0\0\0\x01"));
        let out = drive(
            p.as_mut(),
            &[(Dir::ToServer, &req[..]), (Dir::ToClient, &resp[..])],
            5,
        );
        assert_eq!(out.len(), 2);
        let o = out[0].object();
        assert_eq!(o["request"]["query"], "USE ks");
        assert_eq!(o["response"]["result"]["type"], "set_keyspace");
        assert_eq!(o["response"]["result"]["keyspace"], "ks");
        assert_eq!(o["request"]["headers"]["stream"], 2);
        let o = out[1].object();
        assert_eq!(o["request"]["query"], "SELECT a FROM t");
        assert_eq!(o["response"]["result"]["type"], "void");
        assert_eq!(out[1].bytes_in, 9 + 19);
    }

    #[test]
    fn errors_events_ignored_ops_and_credentials() {
        let mut p = parser_with(Options {
            ignored_ops: vec![OpName("options".into())],
            ..Options::default()
        });
        let mut req = frame(4, 0, 0, op::OPTIONS, b"");
        req.extend(frame(
            4,
            0,
            1,
            op::AUTH_RESPONSE,
            b"\0\0\0\x0c\0user\0s3cret!",
        ));
        req.extend(frame(4, 0, 2, op::QUERY, &long_string("DROP KEYSPACE k")));
        let mut resp = frame(0x84, 0, 0, op::SUPPORTED, b"\0\0");
        resp.extend(frame(0x84, 0, 1, op::AUTH_SUCCESS, b"\xff\xff\xff\xff"));
        let mut err = 0x2300i32.to_be_bytes().to_vec();
        err.extend_from_slice(b"\0\x04nope");
        resp.extend(frame(0x84, 0, 2, op::ERROR, &err));
        let mut ev = b"\0\x0dSTATUS_CHANGE\0\x02UP\x04\x0a\0\0\x01".to_vec();
        ev.extend_from_slice(&9042i32.to_be_bytes());
        resp.extend(frame(0x84, 0, -1, op::EVENT, &ev));
        let out = drive(
            p.as_mut(),
            &[(Dir::ToServer, &req[..]), (Dir::ToClient, &resp[..])],
            3,
        );
        assert_eq!(out.len(), 3, "OPTIONS is ignored");
        let auth = serde_json::to_string(&out[0].object()).unwrap();
        assert!(!auth.contains("s3cret") && !auth.contains("user"), "{auth}");
        assert_eq!(out[0].object()["request"]["headers"]["op"], "AUTH_RESPONSE");
        assert_eq!(out[1].status, status::ERROR);
        let e = &out[1].object()["response"]["error"];
        assert_eq!(e["code"], 0x2300);
        assert_eq!(e["type"], "errConfig");
        assert_eq!(e["msg"], "nope");
        let o = out[2].object();
        assert_eq!(o["no_request"], true);
        assert_eq!(o["response"]["event"]["host"], "10.0.0.1");
        assert_eq!(o["response"]["event"]["port"], 9042);
        assert_eq!(o["response"]["headers"]["stream"], -1);
    }

    #[test]
    fn compressed_bodies_follow_the_startup() {
        let mut p = parser_with(Options::default());
        let startup = b"\0\x02\0\x0bCQL_VERSION\0\x053.0.0\0\x0bCOMPRESSION\0\x03lz4";
        let q = long_string("SELECT * FROM t");
        let mut lz = (q.len() as u32).to_be_bytes().to_vec();
        lz.extend(lz4_flex::block::compress(&q));
        let mut req = frame(4, 0, 0, op::STARTUP, startup);
        req.extend(frame(4, 1, 1, op::QUERY, &lz));
        let mut resp = frame(0x84, 0, 0, op::READY, b"");
        let body = [0u8, 0, 0, 1];
        let mut lz = 4u32.to_be_bytes().to_vec();
        lz.extend(lz4_flex::block::compress(&body));
        resp.extend(frame(0x84, 1, 1, op::RESULT, &lz));
        let out = drive(
            p.as_mut(),
            &[(Dir::ToServer, &req[..]), (Dir::ToClient, &resp[..])],
            4,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].object()["request"]["query"], "SELECT * FROM t");
        assert_eq!(out[1].object()["response"]["result"]["type"], "void");
        assert_eq!(out[1].object()["response"]["headers"]["flags"], "Compress");
    }

    #[test]
    fn v5_frames_inside_segments_after_startup() {
        let mut p = parser_with(Options::default());
        let seg = |frames: &[u8]| {
            let mut s = parser::segment_header(frames.len(), true).to_vec();
            s.extend_from_slice(frames);
            s.extend_from_slice(&[0; 4]);
            s
        };
        let startup = frame(5, 0, 0, op::STARTUP, b"\0\x01\0\x0bCQL_VERSION\0\x053.0.0");
        let mut two = frame(5, 0, 1, op::QUERY, &long_string("SELECT 1"));
        two.extend(frame(5, 0, 2, op::PREPARE, &long_string("SELECT ?")));
        let ready = frame(0x85, 0, 0, op::READY, b"");
        let mut r = frame(0x85, 0, 2, op::RESULT, b"\0\0\0\x01");
        r.extend(frame(0x85, 0, 1, op::RESULT, b"\0\0\0\x01"));
        // The second answer's frame is split over two segments.
        let cut = r.len() - 6;
        let mut resp = seg(&r[..cut]);
        resp.extend(seg(&r[cut..]));
        let out = drive(
            p.as_mut(),
            &[
                (Dir::ToServer, &startup[..]),
                (Dir::ToClient, &ready[..]),
                (Dir::ToServer, &seg(&two)[..]),
                (Dir::ToClient, &resp[..]),
            ],
            7,
        );
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].object()["request"]["headers"]["op"], "STARTUP");
        assert_eq!(out[1].object()["request"]["query"], "SELECT ?");
        assert_eq!(out[2].object()["request"]["query"], "SELECT 1");
        assert_eq!(out[2].object()["request"]["headers"]["version"], "5");
        assert_eq!(out[1].object()["request"]["headers"]["op"], "PREPARE");
    }

    #[test]
    fn a_long_result_is_read_from_its_start_and_skipped() {
        let mut p = parser_with(Options::default());
        let mut body = vec![0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 0];
        body.extend_from_slice(&1000i32.to_be_bytes());
        body.resize(300_000, 7);
        let req = frame(4, 0, 3, op::QUERY, &long_string("SELECT * FROM big"));
        let resp = frame(0x84, 0, 3, op::RESULT, &body);
        let out = drive(
            p.as_mut(),
            &[(Dir::ToServer, &req[..]), (Dir::ToClient, &resp[..])],
            1400,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].bytes_out, 300_009);
        assert_eq!(
            out[0].object()["response"]["result"]["rows"]["num_rows"],
            1000
        );
        assert_eq!(
            out[0].object()["response"]["result"]["rows"]["meta"]["flags"],
            "NoMetaData"
        );
    }
}

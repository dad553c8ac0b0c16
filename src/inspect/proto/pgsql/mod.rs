//! PostgreSQL transactions: a simple Query, or an extended-protocol batch (Parse / Bind /
//! Describe / Execute up to Sync), paired with everything the server sends up to
//! ReadyForQuery: row descriptions, data rows (counted), CommandComplete, ErrorResponse.
//!
//! The startup phase (StartupMessage, SSLRequest and the one-byte answer, authentication)
//! produces no transaction. When the server accepts TLS, the rest of the connection is
//! encrypted and skipped.

pub mod parser;

use super::TxnObject;
use super::txn::{self, Pairing, complete, unmatched_response};
use super::{
    Common, Cx, Dir, Entry, GapAction, ParseError, Parsers, TcpFactory, TcpParser, Txn, status,
};
use crate::event::Event;
use std::collections::HashMap;
use std::sync::Arc;

/// The registry's handle on PostgreSQL.
pub struct Proto;

/// The PostgreSQL keys of a `connbeat.protocols` entry: the row limits SQL protocols share.
pub type Options = super::RowOptions;

impl super::Protocol for Proto {
    const NAME: &'static str = "pgsql";
    const TEXT_MESSAGES: bool = true;
    type Options = Options;
    fn parsers(e: &Entry<Options>, common: &Common) -> Parsers {
        let (max, o) = (common.max_pending, e.options.clone());
        let send = [e.common.send_request, e.common.send_response];
        let tcp: TcpFactory = Arc::new(move || {
            let mut p = Pgsql::new(max);
            p.send = send;
            p.rows_limits = (o.max_rows, o.max_row_length);
            Box::new(p) as Box<dyn TcpParser>
        });
        Parsers {
            tcp: Some(tcp),
            udp: None,
        }
    }
}

/// The `pgsql` object of a transaction.
#[derive(Debug, Default, serde::Serialize)]
pub struct PgsqlTxn {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_severity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_fields: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affected_rows: Option<u64>,
    /// An extended query whose Parse is a `SET `: Packetbeat does not report those (a
    /// driver's session setup); classic events still do.
    #[serde(skip)]
    pub set_statement: bool,
}

impl TxnObject for PgsqlTxn {
    fn write_classic(&self, name: &'static str, e: &mut Event) {
        e.push_field(name, self);
    }

    fn reported_in(&self, shape: crate::config::EventFormat) -> bool {
        !self.set_statement || shape == crate::config::EventFormat::Classic
    }
}

const MAX_STATEMENTS: usize = 1024;
const MAX_QUERY: usize = 4096;

#[cfg(test)]
fn factory(_o: &Options, common: &Common) -> TcpFactory {
    let e = Entry::<Options>::default();
    <Proto as super::Protocol>::parsers(&e, common)
        .tcp
        .expect("pgsql runs over TCP")
}

/// What the server has said so far about the oldest request.
#[derive(Default)]
struct Response {
    started: bool,
    start: u64,
    bytes: u64,
    rows: u64,
    fields: u64,
    tags: Vec<String>,
    error: Vec<(u8, String)>,
    /// The rows as text (`send_response`).
    text: super::RowsText,
}

pub struct Pgsql {
    pending: Pairing<(), PgsqlTxn>,
    client_typed: bool,
    ssl_answer_due: bool,
    encrypted: bool,
    statements: HashMap<String, String>,
    /// The extended-protocol batch being built until Sync.
    batch: Option<Txn<PgsqlTxn>>,
    resp: Response,
    /// `send_request`, `send_response`.
    send: [bool; 2],
    /// `max_rows`, `max_row_length`.
    rows_limits: (usize, usize),
}

fn method_of(q: &str) -> String {
    q.split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase()
}

impl Pgsql {
    fn new(max: usize) -> Pgsql {
        Pgsql {
            pending: Pairing::new(max),
            client_typed: false,
            ssl_answer_due: false,
            encrypted: false,
            statements: HashMap::new(),
            batch: None,
            resp: Response::default(),
            send: [false; 2],
            rows_limits: (0, 0),
        }
    }

    fn batch(&mut self, now: u64) -> &mut Txn<PgsqlTxn> {
        self.batch.get_or_insert_with(|| Txn::new(now, 0))
    }

    fn client(&mut self, data: &[u8], cx: &mut Cx<'_>) -> Result<usize, ParseError> {
        if !self.client_typed && data.first() == Some(&0) {
            let Some((code, len)) = parser::startup(data)? else {
                return Ok(0);
            };
            match code {
                parser::SSL_REQUEST | parser::GSSENC_REQUEST => self.ssl_answer_due = true,
                parser::CANCEL_REQUEST => {}
                _ => self.client_typed = true,
            }
            return Ok(len);
        }
        self.client_typed = true;
        let Some((t, body, len)) = parser::message(data)? else {
            return Ok(0);
        };
        let n = len as u64;
        match t {
            b'Q' => {
                let q = parser::cstr(body, 0).map(|(q, _)| q).unwrap_or_default();
                let mut txn = Txn::new(cx.now, n);
                txn.method = Some(method_of(&q));
                txn.query = Some(truncate(q));
                if self.send[0] {
                    txn.request = txn.query.clone();
                }
                self.pending.push(txn, (), cx);
            }
            b'P' => {
                let (name, at) = parser::cstr(body, 0).unwrap_or_default();
                let q = parser::cstr(body, at).map(|(q, _)| q).unwrap_or_default();
                if self.statements.len() < MAX_STATEMENTS || self.statements.contains_key(&name) {
                    self.statements.insert(name, q.clone());
                }
                let b = self.batch(cx.now);
                b.bytes_in += n;
                if b.query.is_none() {
                    b.fields.set_statement = q.starts_with("SET ");
                    b.method = Some(method_of(&q));
                    b.query = Some(truncate(q));
                }
            }
            b'B' => {
                let stmt = parser::cstr(body, 0)
                    .and_then(|(_, at)| parser::cstr(body, at))
                    .map(|(s, _)| s)
                    .unwrap_or_default();
                let known = self.statements.get(&stmt).cloned();
                let b = self.batch(cx.now);
                b.bytes_in += n;
                if b.query.is_none()
                    && let Some(q) = known
                {
                    b.method = Some(method_of(&q));
                    b.query = Some(truncate(q));
                }
            }
            b'S' => {
                let mut b = self.batch.take().unwrap_or_else(|| Txn::new(cx.now, 0));
                b.bytes_in += n;
                if b.method.is_none() {
                    b.method = Some("SYNC".into());
                }
                if self.send[0] {
                    b.request = b.query.clone();
                }
                self.pending.push(b, (), cx);
            }
            b'D' | b'E' | b'C' | b'H' => self.batch(cx.now).bytes_in += n,
            b'F' => {
                let mut txn = Txn::new(cx.now, n);
                txn.method = Some("FUNCTION CALL".into());
                self.pending.push(txn, (), cx);
            }
            _ => {} // Terminate, password, copy data
        }
        Ok(len)
    }

    fn server(&mut self, data: &[u8], cx: &mut Cx<'_>) -> Result<usize, ParseError> {
        if self.ssl_answer_due {
            self.ssl_answer_due = false;
            match data.first() {
                Some(b'S') | Some(b'G') => self.encrypted = true,
                Some(b'N') => {}
                _ => return Err(ParseError("pgsql: bad answer to SSLRequest")),
            }
            return Ok(1);
        }
        let Some((t, body, len)) = parser::message(data)? else {
            return Ok(0);
        };
        if self.pending.is_empty() {
            // Authentication and startup parameters: nothing is waiting for them.
            if t == b'Z' && self.resp.started {
                unmatched_response();
                self.resp = Response::default();
            }
            return Ok(len);
        }
        let r = &mut self.resp;
        if !r.started {
            r.started = true;
            r.start = cx.now;
        }
        // The response's size as Packetbeat counts it: from its first message, or from
        // the RowDescription that follows an extended query's ParseComplete and
        // BindComplete, to its end, ReadyForQuery excluded.
        match t {
            b'T' => r.bytes = len as u64,
            b'Z' => {}
            _ => r.bytes += len as u64,
        }
        match t {
            b'T' => {
                r.fields = u64::from(u16::from_be_bytes([
                    *body.first().unwrap_or(&0),
                    *body.get(1).unwrap_or(&0),
                ]));
                if self.send[1] {
                    r.text.names(&parser::row_names(body));
                }
            }
            b'D' => {
                r.rows += 1;
                if self.send[1] {
                    let (max_rows, max_len) = self.rows_limits;
                    let values = parser::row_values(body);
                    r.text.row(values.into_iter(), b"", max_rows, max_len);
                }
            }
            b'C' => r
                .tags
                .push(parser::cstr(body, 0).map(|(s, _)| s).unwrap_or_default()),
            b'E' => r.error = parser::fields(body),
            b'Z' => self.finish(cx),
            _ => {}
        }
        Ok(len)
    }

    fn finish(&mut self, cx: &mut Cx<'_>) {
        let mut r = std::mem::take(&mut self.resp);
        let Some(p) = self.pending.pop() else { return };
        let mut t = p.txn;
        t.response = r.text.take();
        if !r.error.is_empty() {
            t.status = status::ERROR;
            let field = |code: u8| {
                r.error
                    .iter()
                    .find(|(c, _)| *c == code)
                    .map(|(_, v)| v.clone())
            };
            t.fields.error_code = field(b'C');
            t.fields.error_message = field(b'M');
            t.fields.error_severity = field(b'S');
        }
        let affected: u64 = r
            .tags
            .iter()
            .filter(|tag| !tag.starts_with("SELECT"))
            .filter_map(|tag| parser::tag_rows(tag))
            .sum();
        t.fields.num_rows = Some(if r.fields > 0 || r.rows > 0 {
            r.rows
        } else {
            affected
        });
        t.fields.num_fields = Some(r.fields);
        t.fields.command_tag = r.tags.last().cloned();
        t.fields.affected_rows = (affected > 0).then_some(affected);
        complete(t, r.start, r.bytes, cx);
    }
}

fn truncate(mut q: String) -> String {
    if q.len() > MAX_QUERY {
        let mut cut = MAX_QUERY;
        while !q.is_char_boundary(cut) {
            cut -= 1;
        }
        q.truncate(cut);
    }
    q
}

impl TcpParser for Pgsql {
    fn parse(&mut self, dir: Dir, data: &[u8], cx: &mut Cx<'_>) -> Result<usize, ParseError> {
        if self.encrypted {
            return Ok(data.len());
        }
        match dir {
            Dir::ToServer => self.client(data, cx),
            Dir::ToClient => self.server(data, cx),
        }
    }

    fn gap(&mut self, dir: Dir, _len: usize, cx: &mut Cx<'_>) -> GapAction {
        match dir {
            Dir::ToServer => self.batch = None,
            Dir::ToClient => {
                if self.resp.started {
                    self.resp = Response::default();
                    if let Some(p) = self.pending.pop() {
                        txn::fail(p.txn, txn::NOTE_GAP, cx);
                    }
                }
            }
        }
        GapAction::Reset
    }

    fn expire(&mut self, cx: &mut Cx<'_>) {
        self.pending.expire(cx);
    }

    fn close(&mut self, cx: &mut Cx<'_>) {
        self.pending.drain(txn::NOTE_CLOSED, cx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::proto::testutil::drive;

    fn msg(t: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![t];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn extended_set_is_classic_only_and_sizes_count_from_the_row_description() {
        use crate::config::EventFormat;
        let mut p = factory(&Options::default(), &super::super::testutil::common())();
        let mut set = msg(b'P', b"\0SET extra_float_digits = 3\0\0\0");
        set.extend(msg(b'B', b"\0\0\0\0\0\0\0\0"));
        set.extend(msg(b'E', b"\0\0\0\0\0"));
        set.extend(msg(b'S', b""));
        let mut set_ok = msg(b'1', b"");
        set_ok.extend(msg(b'2', b""));
        set_ok.extend(msg(b'C', b"SET\0"));
        set_ok.extend(msg(b'Z', b"I"));
        let mut sel = msg(b'P', b"\0SELECT 1\0\0\0");
        sel.extend(msg(b'S', b""));
        let mut rows = msg(b'1', b"");
        rows.extend(msg(b'2', b""));
        let result = [
            msg(b'T', b"\0\x01rest"),
            msg(b'D', b"row"),
            msg(b'C', b"SELECT 1\0"),
        ]
        .concat();
        rows.extend(&result);
        rows.extend(msg(b'Z', b"I"));
        let out = drive(
            p.as_mut(),
            &[
                (Dir::ToServer, &set[..]),
                (Dir::ToClient, &set_ok[..]),
                (Dir::ToServer, &sel[..]),
                (Dir::ToClient, &rows[..]),
            ],
            7,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].method.as_deref(), Some("SET"));
        assert!(out[0].fields.reported_in(EventFormat::Classic));
        assert!(!out[0].fields.reported_in(EventFormat::Ecs));
        assert!(out[1].fields.reported_in(EventFormat::Ecs));
        assert_eq!(out[1].bytes_in, sel.len() as u64);
        assert_eq!(out[1].bytes_out, result.len() as u64);
    }

    #[test]
    fn simple_and_extended_queries() {
        let mut p = factory(&Options::default(), &super::super::testutil::common())();
        let mut c = b"\x00\x00\x00\x08\x04\xd2\x16\x2f".to_vec();
        c.extend(b"\x00\x00\x00\x09\x00\x03\x00\x00\x00");
        let mut c2 = msg(b'Q', b"SELECT * FROM kv\0");
        c2.extend(msg(b'P', b"s1\0SELECT v FROM kv WHERE k = $1\0\0\0"));
        c2.extend(msg(b'B', b"\0s1\0\0\0\0\0\0\0"));
        c2.extend(msg(b'E', b"\0\0\0\0\0"));
        c2.extend(msg(b'S', b""));
        c2.extend(msg(b'Q', b"SELECT nope\0"));
        let mut s = b"N".to_vec();
        s.extend(msg(b'R', b"\0\0\0\0"));
        s.extend(msg(b'Z', b"I"));
        let mut s2 = msg(b'T', b"\0\x02rest");
        s2.extend(msg(b'D', b"row1"));
        s2.extend(msg(b'D', b"row2"));
        s2.extend(msg(b'C', b"SELECT 2\0"));
        s2.extend(msg(b'Z', b"I"));
        s2.extend(msg(b'1', b""));
        s2.extend(msg(b'2', b""));
        s2.extend(msg(b'D', b"row"));
        s2.extend(msg(b'C', b"SELECT 1\0"));
        s2.extend(msg(b'Z', b"I"));
        s2.extend(msg(
            b'E',
            b"SERROR\0C42703\0Mcolumn \"nope\" does not exist\0\0",
        ));
        s2.extend(msg(b'Z', b"I"));
        let out = drive(
            p.as_mut(),
            &[
                (Dir::ToServer, &c[..]),
                (Dir::ToClient, &s[..]),
                (Dir::ToServer, &c2[..]),
                (Dir::ToClient, &s2[..]),
            ],
            6,
        );
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].object()["num_rows"], 2);
        assert_eq!(
            out[1].query.as_deref(),
            Some("SELECT v FROM kv WHERE k = $1")
        );
        assert_eq!(out[1].object()["num_rows"], 1);
        assert_eq!(out[2].status, status::ERROR);
        assert_eq!(out[2].object()["error_code"], "42703");
    }

    #[test]
    fn send_request_and_response_write_the_query_and_rows_as_csv() {
        let mut e = Entry::<Options>::default();
        e.common.send_request = true;
        e.common.send_response = true;
        e.options.max_rows = 2;
        e.options.max_row_length = 6;
        let common = crate::inspect::proto::testutil::common();
        let f = <Proto as crate::inspect::proto::Protocol>::parsers(&e, &common)
            .tcp
            .unwrap();
        let mut desc = vec![0, 2];
        for name in [&b"k"[..], b"v"] {
            desc.extend_from_slice(name);
            desc.push(0);
            desc.extend_from_slice(&[0; 18]);
        }
        let row = |k: &[u8], v: Option<&[u8]>| {
            let mut b = vec![0, 2];
            b.extend_from_slice(&(k.len() as i32).to_be_bytes());
            b.extend_from_slice(k);
            match v {
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            }
            b
        };
        let mut s = msg(b'T', &desc);
        s.extend(msg(b'D', &row(b"a,b", None)));
        s.extend(msg(b'D', &row(b"long", Some(b"value"))));
        s.extend(msg(b'D', &row(b"c", Some(b"d"))));
        s.extend(msg(b'C', b"SELECT 3\0"));
        s.extend(msg(b'Z', b"I"));
        let out = drive(
            f().as_mut(),
            &[
                (Dir::ToServer, &msg(b'Q', b"SELECT k, v FROM kv\0")[..]),
                (Dir::ToClient, &s[..]),
            ],
            7,
        );
        assert_eq!(out[0].request.as_deref(), Some("SELECT k, v FROM kv"));
        assert_eq!(out[0].response.as_deref(), Some("k,v\n\"a,b\",\nlong,va\n"));
        assert_eq!(out[0].object()["num_rows"], 3);
    }
}

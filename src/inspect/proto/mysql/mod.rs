//! MySQL / MariaDB transactions: COM_QUERY and prepared statements (COM_STMT_PREPARE,
//! COM_STMT_EXECUTE), each paired with its OK, ERR or result set; rows are counted, not kept.
//!
//! The connection phase (greeting, login, auth switch) produces no transaction: server
//! packets with no request waiting are read only for their capability flags, which say
//! whether result sets end with EOF packets or with OK packets (CLIENT_DEPRECATE_EOF).

pub mod parser;

use super::TxnObject;
use super::txn::{self, Pairing, complete, unmatched_response};
use super::{
    Common, Cx, Dir, Entry, GapAction, ParseError, Parsers, TcpFactory, TcpParser, Txn, status,
};
use crate::event::Event;
use std::collections::HashMap;
use std::sync::Arc;

/// The registry's handle on MySQL.
pub struct Proto;

/// The MySQL keys of a `connbeat.protocols` entry: the row limits SQL protocols share.
pub type Options = super::RowOptions;

impl super::Protocol for Proto {
    const NAME: &'static str = "mysql";
    const TEXT_MESSAGES: bool = true;
    type Options = Options;
    fn parsers(e: &Entry<Options>, common: &Common) -> Parsers {
        let (max, o) = (common.max_pending, e.options.clone());
        let send = [e.common.send_request, e.common.send_response];
        let tcp: TcpFactory = Arc::new(move || {
            let mut p = Mysql::new(max);
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

/// The `mysql` object of a transaction.
#[derive(Debug, Default, serde::Serialize)]
pub struct MysqlTxn {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqlstate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affected_rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insert_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_fields: Option<u64>,
    /// A command Packetbeat reports (a query or a prepared statement's PREPARE or
    /// EXECUTE); the others (PING, INIT_DB, ...) are classic events only.
    #[serde(skip)]
    pub reported: bool,
    /// The parameters of an executed prepared statement (ECS `params`, as Packetbeat).
    #[serde(skip)]
    pub params: Option<Vec<String>>,
}

impl TxnObject for MysqlTxn {
    fn write_classic(&self, name: &'static str, e: &mut Event) {
        e.push_field(name, self);
    }

    /// Packetbeat 8's `mysql` object: the error message leads with its SQL state
    /// (`3D000: No database selected`), which has no field of its own.
    fn write_ecs(&self, name: &'static str, e: &mut Event, _at: &super::txn::EcsAt<'_>) {
        let error_message = match (&self.sqlstate, &self.error_message) {
            (Some(state), Some(m)) => Some(format!("{state}: {m}")),
            (_, m) => m.clone(),
        };
        let o = MysqlTxn {
            statement_id: self.statement_id,
            error_code: self.error_code,
            error_message,
            sqlstate: None,
            affected_rows: self.affected_rows,
            insert_id: self.insert_id,
            num_rows: self.num_rows,
            num_fields: self.num_fields,
            reported: true,
            params: None,
        };
        e.push_field(name, &o);
        if let Some(p) = &self.params {
            e.push_field("params", p);
        }
    }

    fn reported_in(&self, shape: crate::config::EventFormat) -> bool {
        self.reported || shape == crate::config::EventFormat::Classic
    }
}

/// Prepared statements remembered per connection.
const MAX_STATEMENTS: usize = 1024;
/// Longest query text kept.
const MAX_QUERY: usize = 4096;

#[cfg(test)]
fn factory(_o: &Options, common: &Common) -> TcpFactory {
    let e = Entry::<Options>::default();
    <Proto as super::Protocol>::parsers(&e, common)
        .tcp
        .expect("mysql runs over TCP")
}

/// A prepared statement: its text, its number of parameters, and the parameter types the
/// last COM_STMT_EXECUTE bound (later ones may not repeat them).
#[derive(Debug)]
struct Statement {
    query: String,
    params: usize,
    types: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Query,
    /// COM_STMT_EXECUTE: its rows are binary (not written as text).
    Execute,
    Prepare,
    Other,
}

/// Where the response of the oldest request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resp {
    /// Its first packet.
    First,
    /// Column definitions still to come.
    Columns(u64),
    /// The EOF after column definitions.
    ColumnsEof,
    /// Rows until EOF/OK or ERR.
    Rows,
    /// Packets of a finished response still to skip (prepare's parameter and column defs).
    Skip(u64),
}

pub struct Mysql {
    pending: Pairing<Cmd, MysqlTxn>,
    resp: Resp,
    resp_start: u64,
    resp_bytes: u64,
    rows: u64,
    fields: u64,
    client_caps: Option<u32>,
    server_caps: Option<u32>,
    statements: HashMap<u32, Statement>,
    /// `send_request`, `send_response`.
    send: [bool; 2],
    /// `max_rows`, `max_row_length`.
    rows_limits: (usize, usize),
    /// Column names and rows of the result being read (`send_response`).
    names: Vec<String>,
    text: super::RowsText,
}

fn method_of(query: &str) -> String {
    query
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_start_matches('(')
        .to_ascii_uppercase()
}

impl Mysql {
    fn new(max: usize) -> Mysql {
        Mysql {
            pending: Pairing::new(max),
            resp: Resp::First,
            resp_start: 0,
            resp_bytes: 0,
            rows: 0,
            fields: 0,
            client_caps: None,
            server_caps: None,
            statements: HashMap::new(),
            send: [false; 2],
            rows_limits: (0, 0),
            names: Vec::new(),
            text: super::RowsText::default(),
        }
    }

    fn deprecate_eof(&self) -> bool {
        let c = self.client_caps.unwrap_or(0) & self.server_caps.unwrap_or(u32::MAX);
        c & parser::DEPRECATE_EOF != 0
    }

    fn request(&mut self, p: parser::Packet<'_>, cx: &mut Cx<'_>) {
        if p.seq != 0 {
            // Login and auth-switch packets: the login response carries the client's flags.
            if p.seq == 1 && self.pending.is_empty() && p.payload.len() >= 4 {
                self.client_caps = Some(u32::from_le_bytes([
                    p.payload[0],
                    p.payload[1],
                    p.payload[2],
                    p.payload[3],
                ]));
            }
            return;
        }
        let Some(&c) = p.payload.first() else { return };
        let body = &p.payload[1..];
        let text = |b: &[u8]| super::text(b, MAX_QUERY);
        let mut t: Txn<MysqlTxn> = Txn::new(cx.now, p.len as u64);
        let cmd = match c {
            0x01 | 0x18 | 0x19 => return, // QUIT, SEND_LONG_DATA, STMT_CLOSE: no response
            0x03 => {
                let q = text(body);
                t.method = Some(method_of(&q));
                t.query = Some(q);
                Cmd::Query
            }
            0x16 => {
                let q = text(body);
                t.method = Some("PREPARE".into());
                t.query = Some(q);
                Cmd::Prepare
            }
            0x17 => {
                let id = body
                    .get(..4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                let st = id.and_then(|id| self.statements.get_mut(&id));
                let q = st.as_ref().map(|s| s.query.clone());
                t.fields.params =
                    st.and_then(|s| parser::execute_params(p.payload, s.params, &mut s.types));
                t.method = Some(q.as_deref().map_or("EXECUTE".into(), method_of));
                t.query = q;
                t.fields.statement_id = id;
                Cmd::Execute
            }
            other => {
                t.method = Some(parser::command_name(other).into());
                if other == 0x02 {
                    t.query = Some(format!("USE {}", text(body)));
                }
                Cmd::Other
            }
        };
        if self.send[0] {
            t.request = t.query.clone();
        }
        t.fields.reported = cmd != Cmd::Other;
        self.pending.push(t, cmd, cx);
    }

    /// One row of the result: counted, and written as text when asked for.
    fn row(&mut self, front: Cmd, b: &[u8]) {
        self.rows += 1;
        if self.send[1] && front == Cmd::Query {
            let (max_rows, max_len) = self.rows_limits;
            self.text
                .row(parser::text_row(b).into_iter(), b"NULL", max_rows, max_len);
        }
    }

    fn finish(&mut self, payload: Option<&[u8]>, cx: &mut Cx<'_>) {
        self.resp = Resp::First;
        let Some(p) = self.pending.pop() else { return };
        let mut t = p.txn;
        t.response = self.text.take();
        self.names.clear();
        match payload.and_then(|b| (b.first() == Some(&0xff)).then(|| parser::err(b)).flatten()) {
            Some((code, state, msg)) => {
                t.status = status::ERROR;
                t.fields.error_code = Some(code);
                t.fields.error_message = Some(msg);
                t.fields.sqlstate = state;
            }
            None => {
                if let Some((affected, insert_id)) = payload
                    .filter(|b| b.first() == Some(&0))
                    .and_then(parser::ok)
                {
                    t.fields.affected_rows = Some(affected);
                    t.fields.insert_id = Some(insert_id);
                }
            }
        }
        if self.fields > 0 {
            t.fields.num_rows = Some(self.rows);
            t.fields.num_fields = Some(self.fields);
        }
        let bytes = self.resp_bytes;
        let start = self.resp_start;
        self.rows = 0;
        self.fields = 0;
        complete(t, start, bytes, cx);
    }

    fn response(&mut self, p: parser::Packet<'_>, cx: &mut Cx<'_>) {
        let b = p.payload;
        if let Resp::Skip(n) = self.resp {
            self.resp = if n <= 1 {
                Resp::First
            } else {
                Resp::Skip(n - 1)
            };
            return;
        }
        let Some(front) = self.pending.front().map(|p| p.extra) else {
            if let Some(c) = parser::greeting_caps(b) {
                self.server_caps = Some(c);
            } else if p.seq == 0 && b.first() != Some(&10) {
                unmatched_response();
            }
            return;
        };
        if self.resp == Resp::First {
            self.resp_start = cx.now;
            self.resp_bytes = 0;
        }
        self.resp_bytes += p.len as u64;
        let first = b.first().copied().unwrap_or(0);
        match self.resp {
            Resp::First => match first {
                0xff => self.finish(Some(b), cx),
                0x00 if front == Cmd::Prepare => {
                    let (id, cols, params) = parser::prepare_ok(b).unwrap_or((0, 0, 0));
                    if self.statements.len() < MAX_STATEMENTS
                        && let Some(q) = self.pending.front().and_then(|p| p.txn.query.clone())
                    {
                        self.statements.insert(
                            id,
                            Statement {
                                query: q,
                                params: usize::from(params),
                                types: Vec::new(),
                            },
                        );
                    }
                    let eof = u64::from(!self.deprecate_eof());
                    let skip = u64::from(params)
                        + u64::from(cols)
                        + if params > 0 { eof } else { 0 }
                        + if cols > 0 { eof } else { 0 };
                    if let Some(p) = self.pending.front_mut() {
                        p.txn.fields.statement_id = Some(id);
                    }
                    self.finish(None, cx);
                    if skip > 0 {
                        self.resp = Resp::Skip(skip);
                    }
                }
                0x00 | 0xfe if b.len() < 0xff_ffff => self.finish(Some(b), cx),
                0xfb => self.finish(None, cx),
                _ => {
                    let n = parser::lenenc(b, 0).map_or(0, |(n, _)| n);
                    self.fields = n;
                    self.rows = 0;
                    self.resp = if n == 0 {
                        Resp::First
                    } else {
                        Resp::Columns(n)
                    };
                }
            },
            Resp::Columns(n) => {
                // The tables the columns come from: Packetbeat's `path`.
                if let (Some(table), Some(p)) = (parser::column_table(b), self.pending.front_mut())
                {
                    match &mut p.txn.path {
                        None => p.txn.path = Some(table),
                        Some(path) if !path.contains(&table) => {
                            path.push_str(", ");
                            path.push_str(&table);
                        }
                        Some(_) => {}
                    }
                }
                if self.send[1] && front == Cmd::Query {
                    self.names.push(parser::column_name(b).unwrap_or_default());
                    if n == 1 {
                        self.text.names(&self.names);
                    }
                }
                self.resp = if n > 1 {
                    Resp::Columns(n - 1)
                } else if self.deprecate_eof() {
                    Resp::Rows
                } else {
                    Resp::ColumnsEof
                };
            }
            Resp::ColumnsEof => {
                self.resp = Resp::Rows;
                if !parser::is_eof(b) {
                    self.row(front, b);
                }
            }
            Resp::Rows => {
                if first == 0xff {
                    self.finish(Some(b), cx);
                } else if parser::is_eof(b) {
                    self.finish(None, cx);
                } else {
                    self.row(front, b);
                }
            }
            Resp::Skip(_) => {}
        }
    }
}

impl TcpParser for Mysql {
    fn parse(&mut self, dir: Dir, data: &[u8], cx: &mut Cx<'_>) -> Result<usize, ParseError> {
        let Some(p) = parser::packet(data) else {
            // Rows bigger than the buffer bound are skipped by the stream layer after an overflow.
            return Ok(0);
        };
        match dir {
            Dir::ToServer => self.request(p, cx),
            Dir::ToClient => self.response(p, cx),
        }
        Ok(p.len)
    }

    fn gap(&mut self, dir: Dir, _len: usize, cx: &mut Cx<'_>) -> GapAction {
        match (dir, self.resp) {
            (Dir::ToServer, _) | (_, Resp::First) => {}
            // Inside a result: what was counted so far is published, with a note (as
            // Packetbeat).
            (_, Resp::Columns(_) | Resp::ColumnsEof | Resp::Rows) => {
                if let Some(p) = self.pending.front_mut() {
                    p.txn.notes.push(txn::NOTE_LOSS.into());
                }
                self.finish(None, cx);
            }
            // The definitions after a PREPARE's answer (already published).
            (_, Resp::Skip(_)) => self.resp = Resp::First,
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

    fn pkt(seq: u8, payload: &[u8]) -> Vec<u8> {
        let n = payload.len();
        let mut v = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, seq];
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn query_result_set_ok_and_error() {
        let mut p = factory(&Options::default(), &super::super::testutil::common())();
        let mut req = pkt(0, b"\x03SELECT * FROM t");
        req.extend(pkt(0, b"\x03UPDATE t SET a=1"));
        req.extend(pkt(0, b"\x03SELEC oops"));
        let mut resp = pkt(1, b"\x02");
        resp.extend(pkt(2, b"coldef1"));
        resp.extend(pkt(3, b"coldef2"));
        resp.extend(pkt(4, b"\xfe\x00\x00\x02\x00"));
        resp.extend(pkt(5, b"\x01a\x01b"));
        resp.extend(pkt(6, b"\x01c\x01d"));
        resp.extend(pkt(7, b"\xfe\x00\x00\x02\x00"));
        resp.extend(pkt(1, b"\x00\x03\x00\x02\x00\x00\x00"));
        resp.extend(pkt(1, b"\xff\x28\x04#42000You have an error"));
        let out = drive(
            p.as_mut(),
            &[(Dir::ToServer, &req[..]), (Dir::ToClient, &resp[..])],
            7,
        );
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].method.as_deref(), Some("SELECT"));
        assert_eq!(out[0].object()["num_rows"], 2);
        assert_eq!(out[1].object()["affected_rows"], 3);
        assert_eq!(out[2].status, status::ERROR);
        assert_eq!(out[2].object()["error_code"], 1064);
    }

    #[test]
    fn send_request_and_response_write_the_query_and_rows_as_csv() {
        let mut e = Entry::<Options>::default();
        e.common.send_request = true;
        e.common.send_response = true;
        e.options.max_rows = 2;
        let common = crate::inspect::proto::testutil::common();
        let f = <Proto as crate::inspect::proto::Protocol>::parsers(&e, &common)
            .tcp
            .unwrap();
        let coldef = |name: &str| {
            let mut c = Vec::new();
            for s in ["def", "db", "t", "t", name, name] {
                c.push(s.len() as u8);
                c.extend_from_slice(s.as_bytes());
            }
            c.extend_from_slice(&[0x0c, 0x21, 0, 0, 0, 0, 0xfd, 0, 0, 0, 0, 0]);
            c
        };
        let mut resp = pkt(1, b"\x02");
        resp.extend(pkt(2, &coldef("id")));
        resp.extend(pkt(3, &coldef("name")));
        resp.extend(pkt(4, b"\xfe\x00\x00\x02\x00"));
        resp.extend(pkt(5, b"\x011\x03a,b"));
        resp.extend(pkt(6, b"\x012\xfb"));
        resp.extend(pkt(7, b"\x013\x01c"));
        resp.extend(pkt(8, b"\xfe\x00\x00\x02\x00"));
        let out = drive(
            f().as_mut(),
            &[
                (Dir::ToServer, &pkt(0, b"\x03SELECT id, name FROM t")[..]),
                (Dir::ToClient, &resp[..]),
            ],
            5,
        );
        assert_eq!(out[0].request.as_deref(), Some("SELECT id, name FROM t"));
        assert_eq!(
            out[0].response.as_deref(),
            Some("id,name\n1,\"a,b\"\n2,NULL\n")
        );
        assert_eq!(out[0].object()["num_rows"], 3);
    }
}

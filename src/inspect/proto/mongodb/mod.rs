//! MongoDB transactions: a request paired with the reply whose `responseTo` is its
//! `requestID`. Requests that get no reply (legacy writes, `OP_KILL_CURSORS`, an `OP_MSG`
//! with `moreToCome`) are published alone. `OP_COMPRESSED` messages are decompressed and
//! read as the message they carry.
//!
//! The method is the command's name (the first key of the command document: `find`,
//! `insert`, `saslStart`...), `find` for a legacy query, or the legacy opcode's name. A reply
//! with `ok: 0`, `$err`, `writeErrors` or the query-failure flag makes the transaction an
//! error. Credentials never reach the event: the values of `payload` (SASL conversations),
//! `pwd` and `password`, and `authenticate`'s `key` and `nonce`, are written as `xxxxx`.

pub mod bson;
pub mod parser;

use super::txn::{self, Pairing, unmatched_response};
use super::{
    Common, Cx, Dir, Entry, GapAction, ParseError, Parsers, TcpFactory, TcpParser, Txn, TxnObject,
    status,
};
use crate::event::Event;
use crate::monitor::{self, METRICS};
use bson::{Doc, Json, Value};
use parser::{Body, Header};
use serde::Serialize;
use std::sync::Arc;

/// The registry's handle on MongoDB.
pub struct Proto;

/// The MongoDB keys of a `connbeat.protocols` entry (Packetbeat's names and meanings).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Options {
    /// Documents of a reply written into `response` (with `send_response`); 0: all.
    pub max_docs: usize,
    /// Characters of each such document; 0: all.
    pub max_doc_length: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_docs: 10,
            max_doc_length: 5000,
        }
    }
}

impl super::Protocol for Proto {
    const NAME: &'static str = "mongodb";
    const TEXT_MESSAGES: bool = true;
    type Options = Options;
    fn fuzz_options() -> Options {
        Options {
            max_docs: 3,
            max_doc_length: 64,
        }
    }
    fn parsers(e: &Entry<Options>, common: &Common) -> Parsers {
        let cfg = Arc::new(Config {
            send: [e.common.send_request, e.common.send_response],
            max_docs: e.options.max_docs,
            max_doc_length: e.options.max_doc_length,
            max_message: e.common.max_message_size,
        });
        let max = common.max_pending;
        let tcp: TcpFactory = Arc::new(move || {
            Box::new(Mongo {
                pending: Pairing::new(max),
                cfg: cfg.clone(),
                warned: false,
            }) as Box<dyn TcpParser>
        });
        Parsers {
            tcp: Some(tcp),
            udp: None,
        }
    }
}

struct Config {
    send: [bool; 2],
    max_docs: usize,
    max_doc_length: usize,
    /// Bound on a decompressed message (`max_message_size`).
    max_message: usize,
}

/// The `mongodb` object of a transaction (Packetbeat's names).
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MongoTxn {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_collection_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number_to_skip: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number_to_return: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_fields_selector: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starting_from: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number_returned: Option<i32>,
    /// An `OP_MSG` document sequence's identifier, or a legacy `OP_MSG`'s text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl TxnObject for MongoTxn {
    fn write_classic(&self, name: &'static str, e: &mut Event) {
        e.push_field(name, self);
    }
}

/// Keys whose values are credentials, everywhere.
const SECRETS: &[&str] = &["payload", "pwd", "password"];
/// The same, plus `authenticate`'s proof.
const AUTH_SECRETS: &[&str] = &["payload", "pwd", "password", "key", "nonce"];
/// Fields drivers add to every `OP_MSG` command, left out of `query` and `request`.
const DRIVER_FIELDS: &[&str] = &[
    "$db",
    "lsid",
    "$clusterTime",
    "$readPreference",
    "txnNumber",
];
/// Longest text of one document in `query` / `request` when no `max_doc_length` bounds it.
const MAX_TEXT: usize = 64 * 1024;

/// One MongoDB connection.
pub struct Mongo {
    pending: Pairing<i32, MongoTxn>,
    cfg: Arc<Config>,
    /// An unknown opcode was logged on this connection already.
    warned: bool,
}

/// What a request says about itself.
struct Request {
    method: String,
    resource: String,
    /// Query parameters, `query` form (bulk data left out) and `request` form (all).
    params: Option<String>,
    full: Option<String>,
    skip: i32,
    limit: i32,
    expects_reply: bool,
}

impl Mongo {
    fn json(&self, method: &str) -> Json<'static> {
        Json {
            hide: if method == "authenticate" {
                AUTH_SECRETS
            } else {
                SECRETS
            },
            max: match self.cfg.max_doc_length {
                0 => MAX_TEXT,
                n => n.min(MAX_TEXT),
            },
        }
    }

    /// Writes `d` (less `skip`) as JSON; `None` when nothing is left.
    fn text(&self, method: &str, d: &Doc<'_>, skip: &[&str]) -> Option<String> {
        let mut s = String::new();
        if self.json(method).write(d, skip, &mut s) {
            s.push_str(" ...");
        }
        (s != "{}").then_some(s)
    }

    /// The command of a command document: its first key, and the collection it names (its
    /// value, or its `collection` field: `getMore`, `killCursors`).
    fn command(d: &Doc<'_>) -> (String, Option<String>) {
        match d.first() {
            Some(("$query", Value::Doc(inner))) => Self::command(&inner),
            Some((k, v)) => {
                let coll = v
                    .as_str()
                    .or_else(|| d.get("collection").and_then(|c| c.as_str()));
                (k.to_string(), coll.map(str::to_string))
            }
            None => ("otherCommand".into(), None),
        }
    }

    /// Query parameters as Packetbeat writes them in `query`: only the commands that
    /// carry data, without the data.
    fn short_params(&self, method: &str, d: &Doc<'_>, skip: &[&str]) -> Option<String> {
        let bulk = match method {
            "insert" => "documents",
            "update" => "updates",
            "findandmodify" | "findAndModify" => "update",
            _ => return None,
        };
        let mut all = skip.to_vec();
        all.push(bulk);
        self.text(method, d, &all)
    }

    fn request(&self, body: &Body<'_>, f: &mut MongoTxn) -> Option<Request> {
        let mut r = Request {
            method: String::new(),
            resource: String::new(),
            params: None,
            full: None,
            skip: 0,
            limit: 0,
            expects_reply: false,
        };
        match body {
            Body::Query {
                collection,
                skip,
                limit,
                query,
                fields,
            } => {
                f.full_collection_name = Some(collection.to_string());
                f.number_to_skip = Some(*skip);
                f.number_to_return = Some(*limit);
                (r.skip, r.limit) = (*skip, *limit);
                r.expects_reply = true;
                r.resource = collection.to_string();
                if let Some(db) = collection.strip_suffix(".$cmd") {
                    let (cmd, coll) = Self::command(query);
                    if let Some(c) = coll {
                        r.resource = format!("{db}.{c}");
                    }
                    let skip = [cmd.as_str()];
                    r.params = self.short_params(&cmd, query, &skip);
                    r.full = self.text(&cmd, query, &skip);
                    r.method = cmd;
                } else {
                    r.method = "find".into();
                    r.full = self.text("find", query, &[]);
                }
                if let Some(fs) = fields {
                    f.return_fields_selector = self.text(&r.method, fs, &[]);
                }
            }
            Body::Msg {
                flags,
                body: Some(cmd),
                sequences,
            } => {
                let (name, coll) = Self::command(cmd);
                let db = cmd.get("$db").and_then(|v| v.as_str().map(str::to_string));
                r.resource = match (db, coll) {
                    (Some(db), Some(c)) => format!("{db}.{c}"),
                    (Some(db), None) => db,
                    (None, c) => c.unwrap_or_default(),
                };
                let mut skip = DRIVER_FIELDS.to_vec();
                skip.push(name.as_str());
                r.params = self.short_params(&name, cmd, &skip);
                r.full = self.text(&name, cmd, &skip);
                if let Some((id, _)) = sequences.first() {
                    f.message = Some(id.to_string());
                }
                r.expects_reply = flags & parser::MORE_TO_COME == 0;
                r.method = name;
            }
            Body::Msg { body: None, .. } => return None,
            Body::GetMore {
                collection,
                limit,
                cursor_id,
            } => {
                f.full_collection_name = Some(collection.to_string());
                f.number_to_return = Some(*limit);
                f.cursor_id = Some(*cursor_id);
                r.method = "getMore".into();
                r.resource = collection.to_string();
                r.expects_reply = true;
            }
            Body::Insert { collection, .. } => {
                f.full_collection_name = Some(collection.to_string());
                r.method = "insert".into();
                r.resource = collection.to_string();
            }
            Body::Update {
                collection,
                selector,
                update,
            } => {
                f.full_collection_name = Some(collection.to_string());
                f.selector = self.text("update", selector, &[]);
                f.update = self.text("update", update, &[]);
                r.method = "update".into();
                r.resource = collection.to_string();
            }
            Body::Delete {
                collection,
                selector,
            } => {
                f.full_collection_name = Some(collection.to_string());
                f.selector = self.text("delete", selector, &[]);
                r.method = "delete".into();
                r.resource = collection.to_string();
            }
            Body::KillCursors { .. } => r.method = "killCursors".into(),
            Body::LegacyMsg { message } => {
                f.message = Some(message.to_string());
                r.method = "msg".into();
            }
            Body::Reply { .. } => return None,
        }
        Some(r)
    }

    /// `resource.method(params).skip(n).limit(n)`, as Packetbeat writes `query`.
    fn query(r: &Request, params: Option<&str>) -> String {
        let mut q = format!("{}.{}({})", r.resource, r.method, params.unwrap_or(""));
        if r.skip > 0 {
            q.push_str(&format!(".skip({})", r.skip));
        }
        if r.limit > 0 && r.limit < i32::MAX {
            q.push_str(&format!(".limit({})", r.limit));
        }
        q
    }

    fn on_request(&mut self, h: &Header, body: &Body<'_>, len: usize, cx: &mut Cx<'_>) {
        let mut t: Txn<MongoTxn> = Txn::new(cx.now, len as u64);
        let Some(r) = self.request(body, &mut t.fields) else {
            return;
        };
        t.query = Some(Self::query(&r, r.params.as_deref()));
        if self.cfg.send[0] {
            t.request = Some(Self::query(&r, r.full.as_deref()));
        }
        t.method = Some(r.method);
        t.resource = Some(r.resource);
        if r.expects_reply {
            self.pending.push(t, h.request_id, cx);
        } else {
            cx.out.push(t.boxed());
        }
    }

    fn on_response(&mut self, h: &Header, body: &Body<'_>, len: usize, cx: &mut Cx<'_>) {
        let Some(p) = self.pending.take(|id| *id == h.response_to) else {
            unmatched_response();
            return;
        };
        let mut t = p.txn;
        let method = t.method.clone().unwrap_or_default();
        let (docs, error): (Vec<Doc<'_>>, Option<String>) = match body {
            Body::Reply {
                flags,
                cursor_id,
                starting_from,
                number_returned,
                docs,
            } => {
                t.fields.cursor_id = Some(*cursor_id);
                t.fields.starting_from = Some(*starting_from);
                t.fields.number_returned = Some(*number_returned);
                let mut error = docs.first().and_then(|d| self.error_of(&method, d, false));
                if error.is_none() && flags & 2 != 0 {
                    error = Some("query failure".into());
                }
                (docs.clone(), error)
            }
            Body::Msg {
                body: Some(d),
                sequences,
                ..
            } => {
                let mut all = vec![*d];
                all.extend(sequences.iter().flat_map(|(_, ds)| ds.iter().copied()));
                (all, self.error_of(&method, d, true))
            }
            _ => (Vec::new(), None),
        };
        if let Some(e) = error {
            t.status = status::ERROR;
            t.fields.error = Some(e);
        }
        if self.cfg.send[1] && !docs.is_empty() {
            let mut lines = Vec::new();
            for (i, d) in docs.iter().enumerate() {
                if self.cfg.max_docs > 0 && i >= self.cfg.max_docs {
                    lines.push("[...]".to_string());
                    break;
                }
                lines.push(self.text(&method, d, &[]).unwrap_or_else(|| "{}".into()));
            }
            t.response = Some(lines.join("\n"));
        }
        txn::complete(t, cx.now, len as u64, cx);
    }

    /// The error a reply document reports: `$err`, `writeErrors`, or `ok: 0` (commands).
    fn error_of(&self, method: &str, d: &Doc<'_>, command: bool) -> Option<String> {
        if let Some(v) = d.get("$err") {
            return Some(v.as_str().unwrap_or("$err").to_string());
        }
        if let Some(Value::Array(a)) = d.get("writeErrors") {
            let mut s = String::new();
            self.json(method).doc_array(&a, &mut s);
            return Some(s);
        }
        let failed = d.get("ok").and_then(|v| v.as_f64()) == Some(0.0);
        if failed && (command || d.get("errmsg").is_some()) {
            let msg = d.get("errmsg").and_then(|v| v.as_str().map(str::to_string));
            return Some(msg.unwrap_or_else(|| "ok: 0".into()));
        }
        None
    }

    fn message(
        &mut self,
        dir: Dir,
        h: &Header,
        opcode: i32,
        body: &[u8],
        cx: &mut Cx<'_>,
    ) -> Result<(), ParseError> {
        let b = parser::body(opcode, body)?;
        let response = dir == Dir::ToClient || opcode == parser::OP_REPLY;
        if response {
            self.on_response(h, &b, h.len, cx);
        } else {
            self.on_request(h, &b, h.len, cx);
        }
        Ok(())
    }
}

impl Json<'_> {
    /// An array document as a JSON array.
    fn doc_array(&self, a: &Doc<'_>, out: &mut String) {
        // An array is a document whose keys are "0", "1", ...: write its values only.
        out.push('[');
        for (i, (_, v)) in a.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            if let Value::Doc(d) = v {
                self.write(&d, &[], out);
            }
        }
        out.push(']');
    }
}

impl TcpParser for Mongo {
    fn parse(&mut self, dir: Dir, data: &[u8], cx: &mut Cx<'_>) -> Result<usize, ParseError> {
        let Some(h) = parser::header(data)? else {
            return Ok(0);
        };
        if data.len() < h.len {
            return Ok(0);
        }
        let body = &data[parser::HEADER..h.len];
        if !parser::known(h.opcode) {
            monitor::inc(&METRICS.inspect_mongodb_unknown_opcodes);
            if !self.warned {
                self.warned = true;
                tracing::warn!(target: "inspect", "mongodb: unknown opcode {} (messages with unknown opcodes are skipped and counted in inspect.mongodb.unknown_opcodes; said once per connection)", h.opcode);
            }
            return Ok(h.len);
        }
        if h.opcode == parser::OP_COMPRESSED {
            let (op, size, id, data) = parser::compressed(body)?;
            match parser::decompress(id, data, size, self.cfg.max_message) {
                Ok(plain) if parser::known(op) && op != parser::OP_COMPRESSED => {
                    monitor::inc(&METRICS.inspect_mongodb_compressed);
                    self.message(dir, &h, op, &plain, cx)?;
                }
                Ok(_) | Err(parser::Undecoded::Bad) => {
                    monitor::inc(&METRICS.inspect_mongodb_compressed_undecoded);
                    return Err(ParseError("mongodb: corrupt compressed message"));
                }
                Err(parser::Undecoded::Compressor(c)) => {
                    monitor::inc(&METRICS.inspect_mongodb_compressed_undecoded);
                    tracing::debug!(target: "inspect", "mongodb: compressor {c} not supported");
                }
            }
            return Ok(h.len);
        }
        self.message(dir, &h, h.opcode, body, cx)?;
        Ok(h.len)
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
        self.pending.drain(txn::NOTE_CLOSED, cx);
    }
}

#[cfg(test)]
mod tests {
    use super::bson::build::{B, doc};
    use super::parser::build::{self as wire, op_msg};
    use super::*;
    use crate::inspect::proto::testutil::{common, drive, rises_by};
    use crate::inspect::proto::txn::{EcsSettings, Endpoints};
    use std::sync::{Arc, Mutex};

    fn mongo(send: bool) -> Box<dyn TcpParser> {
        let mut e = Entry::<Options>::default();
        e.common.send_request = send;
        e.common.send_response = send;
        (<Proto as super::super::Protocol>::parsers(&e, &common())
            .tcp
            .unwrap())()
    }

    /// Every event (classic and ECS) of one connection carrying `msgs`, as JSON text.
    fn events(msgs: &[(Dir, &[u8])]) -> String {
        let ep = Endpoints::new(
            "tcp",
            "10.0.0.1:50000".parse().unwrap(),
            "10.0.0.2:27017".parse().unwrap(),
        );
        let mut all = String::new();
        for t in drive(mongo(true).as_mut(), msgs, 7) {
            all.push_str(&t.into_event("mongodb", &ep).to_value().to_string());
        }
        for t in drive(mongo(true).as_mut(), msgs, 7) {
            let e = t.into_ecs_event("mongodb", &ep, &EcsSettings::default());
            all.push_str(&e.to_value().to_string());
        }
        all
    }

    fn base64(b: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    /// What `tracing` writes while `f` runs on this thread.
    fn logs(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(sub, || {
            // A call site first reached by another test thread, before this subscriber
            // existed, may have cached "nobody listens": ask again.
            tracing::callsite::rebuild_interest_cache();
            f()
        });
        let out = buf.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn sasl_payloads_never_reach_the_event() {
        let req = doc(&[
            ("saslStart", B::I(1)),
            ("mechanism", B::S("SCRAM-SHA-256")),
            ("payload", B::Bin(b"n,,n=alice,r=SECRETNONCE")),
            ("$db", B::S("admin")),
        ]);
        let resp = doc(&[
            ("conversationId", B::I(1)),
            ("payload", B::Bin(b"r=SECRETNONCEserver,s=SALT,i=4096")),
            ("ok", B::F(1.0)),
        ]);
        let out = drive(
            mongo(true).as_mut(),
            &[
                (Dir::ToServer, &op_msg(5, 0, &req)),
                (Dir::ToClient, &op_msg(6, 5, &resp)),
            ],
            7,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].method.as_deref(), Some("saslStart"));
        assert_eq!(out[0].resource.as_deref(), Some("admin"));
        let all = format!(
            "{:?} {:?} {:?}",
            out[0].request,
            out[0].response,
            out[0].object()
        );
        assert!(all.contains("SCRAM-SHA-256"), "{all}");
        assert!(all.contains("xxxxx"), "{all}");
        for secret in ["SECRETNONCE", "alice", "SALT", "U0VDUkVU"] {
            assert!(!all.contains(secret), "{secret} in {all}");
        }
    }

    #[test]
    fn ok_zero_is_an_error_and_compressed_messages_are_read() {
        let req = doc(&[("find", B::S("items")), ("$db", B::S("shop"))]);
        let bad = doc(&[("ok", B::F(0.0)), ("errmsg", B::S("not allowed"))]);
        let plain = op_msg(1, 0, &req);
        // The same request, zlib-compressed.
        let z = {
            use std::io::Write;
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&plain[16..]).unwrap();
            e.finish().unwrap()
        };
        let comp = wire::compressed(2, 0, &plain, 2, &z);
        let unknown = wire::message(0, 0, 2269, &[0; 4]);
        let mut reqs = plain.clone();
        reqs.extend(&unknown);
        reqs.extend(&comp);
        let mut resps = op_msg(10, 1, &bad);
        resps.extend(op_msg(11, 2, &doc(&[("ok", B::I(1))])));
        let out = drive(
            mongo(false).as_mut(),
            &[(Dir::ToServer, &reqs), (Dir::ToClient, &resps)],
            5,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].status, status::ERROR);
        assert_eq!(out[0].object()["error"], "not allowed");
        assert_eq!(out[0].query.as_deref(), Some("shop.items.find()"));
        assert_eq!(out[1].status, status::OK);
        assert_eq!(out[1].method.as_deref(), Some("find"));
        assert_eq!(out[1].bytes_in, comp.len() as u64);
    }

    /// The legacy writes (OP_INSERT, OP_UPDATE, OP_DELETE) and OP_KILL_CURSORS get no
    /// reply: each is a transaction of its own. OP_GET_MORE is answered by the OP_REPLY
    /// whose responseTo is its requestID.
    #[test]
    fn legacy_opcodes_make_transactions() {
        let pen = doc(&[("_id", B::I(1)), ("name", B::S("pen"))]);
        let ink = doc(&[("_id", B::I(2)), ("name", B::S("ink"))]);
        let sel = doc(&[("_id", B::I(1))]);
        let upd = doc(&[("$set", B::D(doc(&[("qty", B::I(5))])))]);
        let insert = wire::insert(1, 0, "shop.items", &[&pen, &ink]);
        let mut reqs = insert.clone();
        reqs.extend(wire::update(2, "shop.items", 1, &sel, &upd));
        reqs.extend(wire::delete(3, "shop.items", 0, &sel));
        reqs.extend(wire::get_more(4, "shop.items", 10, 77));
        reqs.extend(wire::kill_cursors(5, &[77]));
        // The last batch (cursor 0) for the OP_GET_MORE, then a reply answering the
        // OP_INSERT, which no server sends: it matches nothing.
        let reply = wire::reply(100, 4, 0, 0, 2, &[&ink]);
        let mut resps = reply.clone();
        resps.extend(wire::reply(101, 1, 0, 0, 0, &[&pen]));
        let out = drive(
            mongo(true).as_mut(),
            &[(Dir::ToServer, &reqs), (Dir::ToClient, &resps)],
            5,
        );
        let methods: Vec<_> = out.iter().map(|t| t.method.as_deref().unwrap()).collect();
        assert_eq!(
            methods,
            ["insert", "update", "delete", "killCursors", "getMore"]
        );
        for t in &out[..4] {
            assert_eq!(t.status, status::OK);
            assert_eq!((t.end, t.bytes_out, &t.response), (None, 0, &None));
        }
        let [ins, upd, del, kill, more] = &out[..] else {
            unreachable!()
        };
        assert_eq!(ins.resource.as_deref(), Some("shop.items"));
        assert_eq!(ins.query.as_deref(), Some("shop.items.insert()"));
        assert_eq!(ins.bytes_in, insert.len() as u64);
        assert_eq!(
            ins.object(),
            serde_json::json!({"fullCollectionName": "shop.items"})
        );
        assert_eq!(upd.query.as_deref(), Some("shop.items.update()"));
        assert_eq!(
            upd.object(),
            serde_json::json!({
                "fullCollectionName": "shop.items",
                "selector": r#"{"_id":1}"#,
                "update": r#"{"$set":{"qty":5}}"#,
            })
        );
        assert_eq!(del.query.as_deref(), Some("shop.items.delete()"));
        assert_eq!(
            del.object(),
            serde_json::json!({"fullCollectionName": "shop.items", "selector": r#"{"_id":1}"#})
        );
        assert_eq!(kill.query.as_deref(), Some(".killCursors()"));
        assert_eq!(kill.object(), serde_json::json!({}));
        assert_eq!(more.status, status::OK);
        assert_eq!(more.resource.as_deref(), Some("shop.items"));
        assert_eq!(more.query.as_deref(), Some("shop.items.getMore()"));
        assert!(more.end.is_some());
        assert_eq!(more.bytes_out, reply.len() as u64);
        assert_eq!(more.response.as_deref(), Some(r#"{"_id":2,"name":"ink"}"#));
        assert_eq!(
            more.object(),
            serde_json::json!({
                "fullCollectionName": "shop.items",
                "numberToReturn": 10,
                "cursorId": 0,
                "startingFrom": 2,
                "numberReturned": 1,
            })
        );
    }

    /// An OP_REPLY whose first document has `$err`, or that sets QueryFailure (flag bit
    /// 1), makes the query an error; so does a command's `ok: 0` with its `errmsg`.
    #[test]
    fn op_reply_err_and_query_failure_are_errors() {
        let q = doc(&[("qty", B::I(5))]);
        let err = doc(&[
            ("$err", B::S("not authorized for query on shop.items")),
            ("code", B::I(13)),
        ]);
        let found = doc(&[("_id", B::I(1)), ("qty", B::I(5))]);
        let count = doc(&[("count", B::S("items"))]);
        let failed = doc(&[("ok", B::F(0.0)), ("errmsg", B::S("ns does not exist"))]);
        let mut reqs = Vec::new();
        for id in 1..=4 {
            reqs.extend(wire::query(id, "shop.items", 0, 0, &q));
        }
        reqs.extend(wire::query(5, "shop.$cmd", 0, -1, &count));
        let mut resps = wire::reply(11, 1, 2, 0, 0, &[&err]); // QueryFailure and $err
        resps.extend(wire::reply(12, 2, 0, 0, 0, &[&err])); // $err alone
        resps.extend(wire::reply(13, 3, 2, 0, 0, &[])); // QueryFailure alone
        resps.extend(wire::reply(14, 4, 0, 0, 0, &[&found]));
        resps.extend(wire::reply(15, 5, 0, 0, 0, &[&failed]));
        let out = drive(
            mongo(false).as_mut(),
            &[(Dir::ToServer, &reqs), (Dir::ToClient, &resps)],
            6,
        );
        assert_eq!(out.len(), 5);
        let errors: Vec<_> = out
            .iter()
            .map(|t| (t.status, t.object().get("error").cloned()))
            .collect();
        let e = |s: &str| (status::ERROR, Some(serde_json::Value::from(s)));
        assert_eq!(
            errors,
            [
                e("not authorized for query on shop.items"),
                e("not authorized for query on shop.items"),
                e("query failure"),
                (status::OK, None),
                e("ns does not exist"),
            ]
        );
        for t in &out[..4] {
            assert_eq!(t.method.as_deref(), Some("find"));
            assert_eq!(t.query.as_deref(), Some("shop.items.find()"));
        }
        assert_eq!(out[2].object()["numberReturned"], 0);
        assert_eq!(out[4].method.as_deref(), Some("count"));
        assert_eq!(out[4].resource.as_deref(), Some("shop.items"));
    }

    /// Messages whose opcode connbeat does not know are skipped whole and counted one by
    /// one, in both directions; the connection logs the first only, and decodes the
    /// messages after them.
    #[test]
    fn unknown_opcodes_are_counted_logged_once_and_skipped() {
        let find = |id| {
            op_msg(
                id,
                0,
                &doc(&[("find", B::S("items")), ("$db", B::S("shop"))]),
            )
        };
        let ok = |id, to| op_msg(id, to, &doc(&[("ok", B::I(1))]));
        let mut reqs = wire::message(1, 0, 2269, &[0; 4]);
        reqs.extend(find(2));
        reqs.extend(wire::message(3, 0, 0, &[])); // opcode 0, a header alone
        reqs.extend(wire::message(4, 0, 9999, &[0xab; 40]));
        reqs.extend(find(5));
        let mut resps = wire::message(20, 2, -1, &[0xcd; 100]);
        resps.extend(ok(21, 2));
        resps.extend(ok(22, 5));
        let conn = || {
            let mut out = Vec::new();
            let log = logs(|| {
                out = drive(
                    mongo(false).as_mut(),
                    &[(Dir::ToServer, &reqs), (Dir::ToClient, &resps)],
                    3,
                );
            });
            (out, log)
        };
        // Two connections, four unknown messages each.
        rises_by(&METRICS.inspect_mongodb_unknown_opcodes, 8, || {
            for _ in 0..2 {
                let (out, log) = conn();
                let warnings: Vec<_> = log
                    .lines()
                    .filter(|l| l.contains("mongodb: unknown opcode"))
                    .collect();
                assert_eq!(warnings.len(), 1, "{log}");
                assert!(warnings[0].contains("WARN"), "{log}");
                assert!(warnings[0].contains("unknown opcode 2269 "), "{log}");
                assert_eq!(out.len(), 2);
                for (t, to) in out.iter().zip([2, 5]) {
                    assert_eq!(t.status, status::OK);
                    assert_eq!(t.method.as_deref(), Some("find"));
                    assert_eq!(t.query.as_deref(), Some("shop.items.find()"));
                    assert_eq!(t.bytes_out, ok(0, to).len() as u64);
                }
            }
        });
    }

    /// An OP_COMPRESSED message whose compressor connbeat does not know (ids other than
    /// 0 noop, 1 snappy, 2 zlib, 3 zstd) is counted in `compressed_undecoded` and skipped;
    /// the connection goes on.
    #[test]
    fn unknown_compressor_is_counted_and_skipped() {
        let find = |id| {
            op_msg(
                id,
                0,
                &doc(&[("find", B::S("items")), ("$db", B::S("shop"))]),
            )
        };
        let ok = |id, to| op_msg(id, to, &doc(&[("ok", B::I(1))]));
        let mut reqs = wire::compressed(1, 0, &find(1), 9, b"bytes of compressor 9");
        reqs.extend(find(2));
        let mut resps = wire::compressed(10, 1, &ok(0, 1), 200, b"bytes of compressor 200");
        resps.extend(ok(11, 2));
        let mut out = Vec::new();
        rises_by(&METRICS.inspect_mongodb_compressed_undecoded, 2, || {
            out = drive(
                mongo(false).as_mut(),
                &[(Dir::ToServer, &reqs), (Dir::ToClient, &resps)],
                4,
            );
        });
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].status, status::OK);
        assert_eq!(out[0].query.as_deref(), Some("shop.items.find()"));
        assert_eq!(out[0].bytes_in, find(2).len() as u64);
        assert_eq!(out[0].bytes_out, ok(11, 2).len() as u64);
    }

    /// SCRAM's later steps: the `saslContinue` payloads (the client's proof, the server's
    /// signature) are written as `xxxxx`, in OP_MSG and in a legacy OP_QUERY / OP_REPLY.
    #[test]
    fn sasl_continue_payloads_never_reach_the_event() {
        let client: &[u8] = b"c=biws,r=CLIENTNONCEsrv,p=CLIENTPROOFdGhlIHByb29m";
        let server: &[u8] = b"v=SERVERSIGNATUREc2lnbmF0dXJl";
        let cmd = |db: bool| {
            let mut f = vec![
                ("saslContinue", B::I(1)),
                ("conversationId", B::I(1)),
                ("payload", B::Bin(client)),
            ];
            if db {
                f.push(("$db", B::S("admin")));
            }
            doc(&f)
        };
        let resp = doc(&[
            ("conversationId", B::I(1)),
            ("done", B::T(true)),
            ("payload", B::Bin(server)),
            ("ok", B::F(1.0)),
        ]);
        let mut reqs = op_msg(1, 0, &cmd(true));
        reqs.extend(wire::query(2, "admin.$cmd", 0, -1, &cmd(false)));
        let mut resps = op_msg(11, 1, &resp);
        resps.extend(wire::reply(12, 2, 0, 0, 0, &[&resp]));
        let msgs = [(Dir::ToServer, &reqs[..]), (Dir::ToClient, &resps[..])];
        let out = drive(mongo(true).as_mut(), &msgs, 7);
        assert_eq!(out.len(), 2);
        for t in &out {
            assert_eq!(t.method.as_deref(), Some("saslContinue"));
            assert_eq!(t.status, status::OK);
        }
        let all = events(&msgs);
        assert!(all.contains("conversationId"), "{all}");
        // Each of 2 transactions, in each of 2 event shapes, hides its request's payload
        // and its response's.
        assert_eq!(all.matches("xxxxx").count(), 8, "{all}");
        for secret in [
            "CLIENTNONCE",
            "CLIENTPROOF",
            "SERVERSIGNATURE",
            &base64(client)[..12],
            &base64(server)[..12],
        ] {
            assert!(!all.contains(secret), "{secret} in {all}");
        }
    }

    /// MONGODB-CR's `authenticate` carries the client's `nonce` and its `key` (a digest of
    /// the password): both are written as `xxxxx`, the user name stays.
    #[test]
    fn authenticate_key_and_nonce_never_reach_the_event() {
        let nonce = "2375531c32080ae8";
        let key = "21742f26431831d5cfca035a08c5bdf6";
        let auth = |db: bool| {
            let mut f = vec![
                ("authenticate", B::I(1)),
                ("user", B::S("alice")),
                ("nonce", B::S(nonce)),
                ("key", B::S(key)),
            ];
            if db {
                f.push(("$db", B::S("admin")));
            }
            doc(&f)
        };
        // The same command wrapped in `$query`, as drivers send it with a read preference.
        let wrapped = doc(&[
            ("$query", B::D(auth(false))),
            ("$readPreference", B::D(doc(&[("mode", B::S("primary"))]))),
        ]);
        let ok = doc(&[
            ("dbname", B::S("admin")),
            ("user", B::S("alice")),
            ("ok", B::F(1.0)),
        ]);
        let mut reqs = wire::query(1, "admin.$cmd", 0, -1, &auth(false));
        reqs.extend(wire::query(2, "admin.$cmd", 0, -1, &wrapped));
        reqs.extend(op_msg(3, 0, &auth(true)));
        let mut resps = wire::reply(11, 1, 0, 0, 0, &[&ok]);
        resps.extend(wire::reply(12, 2, 0, 0, 0, &[&ok]));
        resps.extend(op_msg(13, 3, &ok));
        let msgs = [(Dir::ToServer, &reqs[..]), (Dir::ToClient, &resps[..])];
        let out = drive(mongo(true).as_mut(), &msgs, 7);
        assert_eq!(out.len(), 3);
        for t in &out {
            assert_eq!(t.method.as_deref(), Some("authenticate"));
            assert_eq!(t.status, status::OK);
        }
        let all = events(&msgs);
        assert!(all.contains("alice"), "{all}");
        // `nonce` and `key` of each of 3 requests, in each of 2 event shapes.
        assert_eq!(all.matches("xxxxx").count(), 12, "{all}");
        for secret in [nonce, key] {
            assert!(!all.contains(secret), "{secret} in {all}");
        }
    }
}

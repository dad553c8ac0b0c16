//! HTTP/1.x transactions: per-direction message state (head, then a body delimited by
//! length, chunks or close), pipelined requests paired in order with their responses.
//!
//! Bodies are never buffered whole: a body nobody asked for is skipped (the stream layer
//! drops those bytes unseen), and a kept body (`include_body_for`, or URL-encoded form
//! parameters) is copied up to `max_message_size`.

pub mod parser;

use super::TxnObject;
use super::txn::{self, Pairing, complete, unmatched_response};
use super::{
    Common, Cx, Dir, Entry, GapAction, ParseError, Parsers, TcpFactory, TcpParser, Txn, status,
};
use crate::event::Event;
use parser::{Framing, Head};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;

/// The `http` object of a transaction.
#[derive(Debug, Default, Serialize)]
pub struct HttpTxn {
    pub request: Request,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<Response>,
    /// What only the ECS shape writes (`url.*`, `user_agent.*`, sizes).
    #[serde(skip)]
    pub ecs: EcsExtra,
    /// A response to no request seen: an ECS event (as Packetbeat reports it), only a
    /// counter in the classic shape.
    #[serde(skip)]
    pub unmatched: bool,
}

/// Request details the ECS shape writes besides the classic object.
#[derive(Debug, Default)]
pub struct EcsExtra {
    pub method: String,
    /// The request target as sent (`/path?query`).
    pub target: String,
    pub host: Option<String>,
    pub user_agent: Option<String>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// Query and form parameters, keywords hidden (`url.query`).
    pub params: Option<String>,
    /// `content-length` (the body's size when there is no header) and `content-type` of
    /// the request and the response: Packetbeat 8 always writes them among the headers.
    pub lengths: [u64; 2],
    pub types: [Option<String>; 2],
    /// The minor version of HTTP/1.x, the request's (the response's when there is none).
    pub minor_version: Option<u8>,
    /// The user of a Basic `Authorization` (`user.name`), whatever `redact_authorization`
    /// says: it hides the credentials, and the user name is none of them.
    pub user: Option<String>,
}

/// Headers of an ECS event: the selected ones, with `content-length` (a number) and
/// `content-type` always there, as Packetbeat 8 writes them.
fn ecs_headers(sent: &Map<String, Value>, len: u64, ctype: &Option<String>) -> Value {
    let mut m = sent.clone();
    m.insert("content-length".into(), Value::from(len));
    if let Some(t) = ctype {
        m.insert("content-type".into(), Value::String(t.clone()));
    }
    Value::Object(m)
}

/// `a=1&b=2` with its pairs sorted by name, as Go's `url.Values.Encode` writes them.
fn sorted_query(q: &str) -> String {
    let mut pairs: Vec<&str> = q.split('&').filter(|p| !p.is_empty()).collect();
    pairs.sort_by_key(|p| p.split('=').next().unwrap_or_default());
    pairs.join("&")
}

#[derive(Debug, Default, Serialize)]
pub struct Request {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The headers sent (`send_headers`, `send_all_headers`), by lower-cased name.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub headers: Map<String, Value>,
    /// Query and form parameters, keywords hidden.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Response {
    pub code: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phrase: Option<String>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub headers: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl TxnObject for HttpTxn {
    fn write_classic(&self, name: &'static str, e: &mut Event) {
        e.push_field(name, self);
    }

    fn reported_in(&self, shape: crate::config::EventFormat) -> bool {
        !self.unmatched || shape == crate::config::EventFormat::Ecs
    }

    fn write_ecs(&self, _name: &'static str, e: &mut Event, at: &super::txn::EcsAt<'_>) {
        use serde_json::json;
        let x = &self.ecs;
        let mut http = json!({});
        // An unmatched response has no request.
        if !x.method.is_empty() {
            let mut request = json!({
                "method": x.method,
                "bytes": x.request_bytes,
                "headers": ecs_headers(&self.request.headers, x.lengths[0], &x.types[0]),
            });
            if x.lengths[0] > 0 {
                request["body"] = json!({"bytes": x.lengths[0]});
            }
            if let Some(b) = &self.request.body {
                request["body"]["content"] = json!(b);
            }
            http["request"] = request;
        }
        if let Some(r) = &self.response {
            let mut response = json!({
                "status_code": r.code,
                "bytes": x.response_bytes,
                "headers": ecs_headers(&r.headers, x.lengths[1], &x.types[1]),
            });
            if let Some(p) = &r.phrase {
                response["status_phrase"] = json!(p.to_ascii_lowercase());
            }
            if x.lengths[1] > 0 {
                response["body"] = json!({"bytes": x.lengths[1]});
            }
            if let Some(b) = &r.body {
                response["body"]["content"] = json!(b);
            }
            http["response"] = response;
        }
        if let Some(v) = x.minor_version {
            http["version"] = json!(format!("1.{v}"));
        }
        e.push_field("http", &http);
        if x.method.is_empty() {
            return;
        }
        let (path, query) = match x.target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (x.target.as_str(), None),
        };
        let (domain, port) = match x.host.as_deref().map(split_host) {
            Some((d, p)) => (d.to_string(), p.unwrap_or(at.server.port())),
            None => (at.server.ip().to_string(), at.server.port()),
        };
        let host_part = if port == 80 {
            domain.clone()
        } else {
            format!("{domain}:{port}")
        };
        let mut url = json!({
            "scheme": "http",
            "domain": domain,
            "path": path,
            "full": format!("http://{host_part}{}", x.target),
        });
        if port != 80 {
            url["port"] = json!(port);
        }
        if let Some(q) = x.params.as_deref().or(query) {
            url["query"] = json!(sorted_query(q));
        }
        e.push_field("url", &url);
        if let Some(ua) = &x.user_agent {
            e.push_field("user_agent", &json!({"original": ua}));
        }
    }

    fn ecs_path_in_url(&self) -> bool {
        true
    }

    /// The `Host` as the server's name (an address in it goes to `related.ip`), and the
    /// Basic user, as Packetbeat 8 writes them.
    fn ecs_links(&self) -> super::txn::EcsLinks<'_> {
        let mut links = super::txn::EcsLinks {
            user: self.ecs.user.as_deref(),
            ..Default::default()
        };
        let host = self.ecs.host.as_deref().map(|h| split_host(h.trim()).0);
        if let Some(h) = host.filter(|h| !h.is_empty()) {
            match h.parse() {
                Ok(ip) => links.ips.push(ip),
                Err(_) => {
                    links.server_domain = Some(h);
                    links.hosts.push(h);
                }
            }
        }
        links
    }
}

/// The body's size: its `Content-Length`, else what was counted after the head.
fn body_length(msg: &Msg) -> u64 {
    msg.head
        .content_length
        .unwrap_or_else(|| msg.bytes.saturating_sub(msg.head.len as u64))
}

/// A `Host` header's name and port (`example.com:8080`, `[::1]:80`, `example.com`).
fn split_host(h: &str) -> (&str, Option<u16>) {
    let (name, port) = match h.rsplit_once(':') {
        Some((n, p)) if !n.is_empty() && (n.ends_with(']') || !n.contains(':')) => {
            (n, p.parse().ok())
        }
        _ => (h, None),
    };
    (name.trim_start_matches('[').trim_end_matches(']'), port)
}

/// The registry's handle on HTTP.
pub struct Proto;

/// The HTTP keys of a `connbeat.protocols` entry (Packetbeat's names and meanings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Options {
    /// Every header of both messages goes into the event.
    pub send_all_headers: bool,
    /// The headers that go into the event (case-insensitive).
    pub send_headers: Vec<String>,
    /// The `cookie` and `set-cookie` headers, when sent, become objects of their pairs.
    pub split_cookie: bool,
    /// The header whose first address becomes `real_ip`.
    pub real_ip_header: String,
    /// Content types (substrings) whose bodies are kept, both directions.
    pub include_body_for: Vec<String>,
    /// Content types whose request bodies are kept.
    pub include_request_body_for: Vec<String>,
    /// Content types whose response bodies are kept.
    pub include_response_body_for: Vec<String>,
    /// Kept bodies sent gzip- or deflate-encoded are decoded (up to `max_message_size`).
    pub decode_body: bool,
    /// Headers whose values are replaced by `*` when sent.
    pub redact_headers: Vec<String>,
    /// `Authorization` and `Proxy-Authorization` values are replaced by `*` (off by
    /// default, as in Packetbeat: only headers the configuration sends are written).
    pub redact_authorization: bool,
    /// Query and form parameters whose values are replaced by `xxxxx`.
    pub hide_keywords: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            send_all_headers: false,
            send_headers: Vec::new(),
            split_cookie: false,
            real_ip_header: String::new(),
            include_body_for: Vec::new(),
            include_request_body_for: Vec::new(),
            include_response_body_for: Vec::new(),
            decode_body: true,
            redact_headers: Vec::new(),
            redact_authorization: false,
            hide_keywords: Vec::new(),
        }
    }
}

impl super::Protocol for Proto {
    const NAME: &'static str = "http";
    const TEXT_MESSAGES: bool = true;
    type Options = Options;
    fn parsers(e: &Entry<Options>, common: &Common) -> Parsers {
        let send = [e.common.send_request, e.common.send_response];
        Parsers {
            tcp: Some(factory(&e.options, e.common.max_message_size, send, common)),
            udp: None,
        }
    }
    fn fuzz_options() -> Options {
        Options {
            send_all_headers: true,
            split_cookie: true,
            include_body_for: vec!["text".into()],
            redact_headers: vec!["cookie".into()],
            hide_keywords: vec!["pass".into()],
            real_ip_header: "x-forwarded-for".into(),
            ..Options::default()
        }
    }
}

/// The HTTP settings of one entry, prepared once (names lower-cased).
#[derive(Debug)]
struct Prepared {
    send_all_headers: bool,
    send_headers: Vec<String>,
    split_cookie: bool,
    real_ip_header: String,
    /// Content types whose bodies are kept, per direction.
    body_for: [Vec<String>; 2],
    decode_body: bool,
    redact_headers: Vec<String>,
    redact_authorization: bool,
    hide_keywords: Vec<String>,
    max_body: usize,
    max_pending: usize,
    /// `send_request`, `send_response`: the message's text goes into the event.
    send: [bool; 2],
}

impl Prepared {
    fn keep(&self, lower: &str) -> bool {
        self.send_all_headers
            || self.send_headers.iter().any(|h| h == lower)
            || (!self.real_ip_header.is_empty() && self.real_ip_header == lower)
            || lower == "host"
            || lower == "user-agent"
    }

    fn include_body(&self, dir: Dir, content_type: Option<&str>) -> bool {
        let Some(ct) = content_type else { return false };
        let ct = ct.to_ascii_lowercase();
        self.body_for[idx(dir)]
            .iter()
            .any(|b| ct.contains(b.as_str()))
    }

    /// A message head as text for `request`/`response`, the values of redacted headers
    /// replaced by stars (`Authorization:*****`, as Packetbeat writes them).
    fn redact_raw(&self, head: &str) -> String {
        let mut out = String::with_capacity(head.len());
        for line in head.split_inclusive('\n') {
            match line.split_once(':') {
                Some((name, value)) if self.redacted(&name.trim().to_ascii_lowercase()) => {
                    let body = value.trim_end_matches(['\r', '\n']);
                    out.push_str(name);
                    out.push(':');
                    out.extend(std::iter::repeat_n('*', body.len()));
                    out.push_str(&value[body.len()..]);
                }
                _ => out.push_str(line),
            }
        }
        out
    }

    fn redacted(&self, lower: &str) -> bool {
        (self.redact_authorization && (lower == "authorization" || lower == "proxy-authorization"))
            || self.redact_headers.iter().any(|h| h == lower)
    }
}

fn factory(o: &Options, max_message_size: usize, send: [bool; 2], common: &Common) -> TcpFactory {
    let lower = super::lower_all;
    let both = lower(&o.include_body_for);
    let mut req = both.clone();
    req.extend(lower(&o.include_request_body_for));
    let mut resp = both;
    resp.extend(lower(&o.include_response_body_for));
    let p = Arc::new(Prepared {
        send_all_headers: o.send_all_headers,
        send_headers: lower(&o.send_headers),
        split_cookie: o.split_cookie,
        real_ip_header: o.real_ip_header.to_ascii_lowercase(),
        body_for: [req, resp],
        decode_body: o.decode_body,
        redact_headers: lower(&o.redact_headers),
        redact_authorization: o.redact_authorization,
        hide_keywords: lower(&o.hide_keywords),
        max_body: max_message_size,
        max_pending: common.max_pending,
        send,
    });
    Arc::new(move || Box::new(Http::new(p.clone())) as Box<dyn TcpParser>)
}

/// Where a direction is in its current message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers,
    UntilClose,
    /// A response body not kept, skipped unseen by the stream layer: the response is
    /// complete when the stream layer says the skip is over.
    Skipping,
}

/// The message being read in one direction.
#[derive(Debug)]
struct Msg {
    start: u64,
    bytes: u64,
    head: Head,
    body: Option<Vec<u8>>,
    truncated: bool,
    /// Some of its bytes fell into a hole of the capture.
    lost: bool,
    /// The connection ended before its declared end.
    cut: bool,
    /// The head as text, when the message is sent whole (`send_request`/`send_response`).
    raw: Option<String>,
}

impl Msg {
    /// The message as text: its head, and its body when kept.
    fn text(&self) -> Option<String> {
        let mut raw = self.raw.clone()?;
        if let Some(b) = &self.body {
            raw.push_str(&String::from_utf8_lossy(b));
        }
        Some(raw)
    }
}

struct Side {
    state: State,
    msg: Option<Msg>,
}

impl Side {
    fn new() -> Side {
        Side {
            state: State::Head,
            msg: None,
        }
    }
}

/// What a parked request needs for reading its response.
#[derive(Debug)]
struct ReqInfo {
    method: String,
}

/// One HTTP connection.
pub struct Http {
    o: Arc<Prepared>,
    sides: [Side; 2],
    /// The direction has ended (FIN).
    ended: [bool; 2],
    pending: Pairing<ReqInfo, HttpTxn>,
    /// The request a response being skipped answers, taken when its head was read (`None`
    /// inside: it answers none).
    held: Option<Option<Txn<HttpTxn>>>,
}

fn idx(d: Dir) -> usize {
    match d {
        Dir::ToServer => 0,
        Dir::ToClient => 1,
    }
}

impl Http {
    fn new(o: Arc<Prepared>) -> Http {
        let max = o.max_pending;
        Http {
            o,
            sides: [Side::new(), Side::new()],
            ended: [false; 2],
            pending: Pairing::new(max),
            held: None,
        }
    }

    fn start_body(&mut self, dir: Dir, framing: Framing) {
        let s = &mut self.sides[idx(dir)];
        s.state = match framing {
            Framing::None => State::Head,
            Framing::Length(n) => State::Body(n),
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
    }

    /// The current message of `dir` is complete.
    fn finish(&mut self, dir: Dir, cx: &mut Cx<'_>) {
        let s = &mut self.sides[idx(dir)];
        s.state = State::Head;
        let Some(msg) = s.msg.take() else { return };
        match dir {
            Dir::ToServer => self.request_done(msg, cx),
            Dir::ToClient => self.response_done(msg, cx),
        }
    }

    fn headers_object(&self, headers: &[(String, String)]) -> Map<String, Value> {
        let mut m = Map::new();
        for (k, v) in headers {
            if !self.o.send_all_headers && !self.o.send_headers.iter().any(|h| h == k) {
                continue;
            }
            let v = if self.o.redacted(k) {
                Value::String("*".into())
            } else if self.o.split_cookie && (k == "cookie" || k == "set-cookie") {
                Value::Object(parser::split_cookie(v))
            } else {
                Value::String(v.clone())
            };
            m.insert(k.clone(), v);
        }
        m
    }

    /// A kept body, decoded when `decode_body` and its encoding say so.
    fn decoded<'b>(&self, head: &Head, body: &'b [u8]) -> std::borrow::Cow<'b, [u8]> {
        match head.content_encoding.as_deref() {
            Some(enc) if self.o.decode_body => parser::decode_body(enc, body, self.o.max_body)
                .map_or(std::borrow::Cow::Borrowed(body), std::borrow::Cow::Owned),
            _ => std::borrow::Cow::Borrowed(body),
        }
    }

    fn request_done(&mut self, msg: Msg, cx: &mut Cx<'_>) {
        let head = &msg.head;
        let method = head.method.clone().unwrap_or_default();
        let target = head.target.clone().unwrap_or_default();
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (target.clone(), None),
        };
        let mut t: Txn<HttpTxn> = Txn::new(msg.start, msg.bytes);
        t.request = msg.text();
        let mut params: Vec<String> = Vec::new();
        if let Some(q) = query.as_deref().filter(|q| !q.is_empty()) {
            params.push(parser::hide_params(q, &self.o.hide_keywords));
        }
        let form = head.content_type.as_deref().is_some_and(|c| {
            c.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
        let request = &mut t.fields.request;
        if let Some(body) = &msg.body {
            let body = self.decoded(&msg.head, body);
            let text = String::from_utf8_lossy(&body);
            let text = if form {
                let hidden = parser::hide_params(&text, &self.o.hide_keywords);
                params.push(hidden.clone());
                hidden
            } else {
                text.into_owned()
            };
            if self
                .o
                .include_body(Dir::ToServer, head.content_type.as_deref())
            {
                request.body = Some(text);
            }
        }
        request.headers = self.headers_object(&head.headers);
        if !params.is_empty() {
            request.params = Some(params.join("&"));
        }
        if !self.o.real_ip_header.is_empty()
            && let Some((_, v)) = head
                .headers
                .iter()
                .find(|(k, _)| *k == self.o.real_ip_header)
        {
            t.real_ip = v.split(',').next().map(|s| s.trim().to_string());
        }
        if msg.lost {
            t.notes.push(txn::NOTE_LOSS_REQUEST.into());
        } else if msg.truncated {
            t.notes
                .push("request body truncated to max_message_size or lost".into());
        }
        let header = |name: &str| {
            head.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        t.fields.ecs = EcsExtra {
            method: method.clone(),
            target: target.clone(),
            host: header("host"),
            user_agent: header("user-agent"),
            request_bytes: msg.bytes,
            response_bytes: 0,
            params: t.fields.request.params.clone(),
            lengths: [body_length(&msg), 0],
            types: [head.content_type.clone(), None],
            minor_version: head.minor_version,
            user: head.basic_user.clone(),
        };
        t.query = Some(format!("{method} {path}"));
        t.resource = Some(path.clone());
        t.path = Some(path);
        t.method = Some(method.clone());
        self.pending.push(t, ReqInfo { method }, cx);
    }

    fn response_done(&mut self, msg: Msg, cx: &mut Cx<'_>) {
        let request = match self.held.take() {
            Some(r) => r,
            None => self.pending.pop().map(|p| p.txn),
        };
        let Some(request) = request else {
            unmatched_response();
            let mut t: Txn<HttpTxn> = Txn::new(msg.start, 0);
            t.fields.unmatched = true;
            t.notes.push(txn::NOTE_UNMATCHED.into());
            self.complete_response(t, msg, cx);
            return;
        };
        self.complete_response(request, msg, cx);
    }

    /// Completes `t` with its response (an unmatched one stays an error).
    fn complete_response(&mut self, mut t: Txn<HttpTxn>, msg: Msg, cx: &mut Cx<'_>) {
        t.response = msg.text();
        let code = msg.head.code.unwrap_or(0);
        t.status = match code {
            _ if t.fields.unmatched => status::ERROR,
            500.. => status::SERVER_ERROR,
            400..500 => status::CLIENT_ERROR,
            _ => status::OK,
        };
        t.fields.response = Some(Response {
            code,
            phrase: msg.head.phrase.clone(),
            headers: self.headers_object(&msg.head.headers),
            body: msg
                .body
                .as_ref()
                .map(|b| String::from_utf8_lossy(&self.decoded(&msg.head, b)).into_owned()),
        });
        t.fields.ecs.response_bytes = msg.bytes;
        t.fields.ecs.lengths[1] = body_length(&msg);
        t.fields.ecs.types[1] = msg.head.content_type.clone();
        let v = &mut t.fields.ecs.minor_version;
        *v = v.or(msg.head.minor_version);
        if msg.cut {
            t.notes.push(txn::NOTE_CUT.into());
        } else if msg.lost {
            t.notes.push(txn::NOTE_LOSS.into());
        } else if msg.truncated {
            t.notes
                .push("response body truncated to max_message_size or lost".into());
        }
        complete(t, msg.start, msg.bytes, cx);
    }

    /// Body bytes of the current message: counted, kept if wanted.
    fn body_bytes(&mut self, dir: Dir, data: &[u8]) {
        let max = self.o.max_body;
        if let Some(m) = self.sides[idx(dir)].msg.as_mut() {
            m.bytes += data.len() as u64;
            if let Some(b) = m.body.as_mut() {
                let room = max.saturating_sub(b.len());
                if data.len() > room {
                    m.truncated = true;
                }
                b.extend_from_slice(&data[..data.len().min(room)]);
            }
        }
    }

    fn wants_body(&self, dir: Dir) -> bool {
        self.sides[idx(dir)]
            .msg
            .as_ref()
            .is_some_and(|m| m.body.is_some())
    }

    fn head(&mut self, dir: Dir, data: &[u8], cx: &mut Cx<'_>) -> Result<usize, ParseError> {
        let o = self.o.clone();
        let keep = |n: &str| o.keep(n);
        let head = match dir {
            Dir::ToServer => parser::parse_request(data, &keep)?,
            Dir::ToClient => parser::parse_response(data, &keep)?,
        };
        let Some(head) = head else { return Ok(0) };
        let len = head.len;
        let framing = match dir {
            Dir::ToServer => parser::request_framing(&head),
            Dir::ToClient => {
                let m = self.pending.front().map(|p| p.extra.method.as_str());
                parser::response_framing(&head, m)
            }
        };
        // Interim responses (100 Continue) answer nothing yet.
        if dir == Dir::ToClient
            && head.code.is_some_and(|c| (100..200).contains(&c))
            && head.code != Some(101)
        {
            return Ok(len);
        }
        let is_form = head.content_type.as_deref().is_some_and(|c| {
            c.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
        let keep_body = self.o.include_body(dir, head.content_type.as_deref())
            || (dir == Dir::ToServer && is_form);
        self.sides[idx(dir)].msg = Some(Msg {
            start: cx.now,
            bytes: len as u64,
            head,
            body: keep_body.then(Vec::new),
            truncated: false,
            lost: false,
            cut: false,
            raw: self.o.send[idx(dir)]
                .then(|| self.o.redact_raw(&String::from_utf8_lossy(&data[..len]))),
        });
        self.start_body(dir, framing);
        if framing == Framing::None {
            self.finish(dir, cx);
        } else if let Framing::Length(n) = framing
            && !keep_body
        {
            // Nothing to keep: count the body and skip it unseen. A response whose body
            // is not all here yet is complete once the skip is over (so that bytes lost
            // in the capture on the way are noted); the rest is complete now.
            if let Some(m) = self.sides[idx(dir)].msg.as_mut() {
                m.bytes += n;
            }
            let total = len.saturating_add(usize::try_from(n).unwrap_or(usize::MAX));
            if dir == Dir::ToClient && total > data.len() {
                self.sides[idx(dir)].state = State::Skipping;
                // Paired now, as a response whose body is here is.
                self.held = Some(self.pending.pop().map(|p| p.txn));
            } else {
                self.finish(dir, cx);
            }
            return Ok(total);
        }
        Ok(len)
    }
}

impl TcpParser for Http {
    fn parse(&mut self, dir: Dir, data: &[u8], cx: &mut Cx<'_>) -> Result<usize, ParseError> {
        if self.ended[idx(dir)] {
            // Nothing follows a FIN: these are copies of bytes already seen.
            return Ok(data.len());
        }
        let state = self.sides[idx(dir)].state;
        match state {
            State::Head => self.head(dir, data, cx),
            // Data while a skip was pending: the stream layer dropped it (a reset).
            State::Skipping => {
                self.finish(dir, cx);
                self.head(dir, data, cx)
            }
            State::Body(left) => {
                let n = (data.len() as u64).min(left) as usize;
                self.body_bytes(dir, &data[..n]);
                let left = left - n as u64;
                self.sides[idx(dir)].state = State::Body(left);
                if left == 0 {
                    self.finish(dir, cx);
                }
                Ok(n)
            }
            State::UntilClose => {
                self.body_bytes(dir, data);
                Ok(data.len())
            }
            State::ChunkSize => {
                let Some((l, used)) = parser::line(data)? else {
                    return Ok(0);
                };
                let size = parser::chunk_size(l)?;
                self.body_bytes_count(dir, used);
                self.sides[idx(dir)].state = if size == 0 {
                    State::Trailers
                } else {
                    State::ChunkData(size)
                };
                Ok(used)
            }
            State::ChunkData(left) => {
                let n = (data.len() as u64).min(left) as usize;
                if self.wants_body(dir) {
                    self.body_bytes(dir, &data[..n]);
                } else {
                    self.body_bytes_count(dir, n);
                }
                let left = left - n as u64;
                self.sides[idx(dir)].state = if left == 0 {
                    State::ChunkEnd
                } else {
                    State::ChunkData(left)
                };
                Ok(n)
            }
            State::ChunkEnd => {
                if data.len() < 2 {
                    return Ok(0);
                }
                if &data[..2] != b"\r\n" {
                    return Err(ParseError("http: chunk not followed by CRLF"));
                }
                self.body_bytes_count(dir, 2);
                self.sides[idx(dir)].state = State::ChunkSize;
                Ok(2)
            }
            State::Trailers => {
                let Some((l, used)) = parser::line(data)? else {
                    return Ok(0);
                };
                self.body_bytes_count(dir, used);
                if l.is_empty() {
                    self.finish(dir, cx);
                }
                Ok(used)
            }
        }
    }

    fn gap(&mut self, dir: Dir, len: usize, cx: &mut Cx<'_>) -> GapAction {
        let s = &mut self.sides[idx(dir)];
        if let State::Body(left) = s.state
            && left >= len as u64
            && len > 0
        {
            s.state = State::Body(left - len as u64);
            if let Some(m) = s.msg.as_mut() {
                m.bytes += len as u64;
                m.lost = true;
            }
            if left == len as u64 {
                self.finish(dir, cx);
            }
            return GapAction::Continue;
        }
        if s.state == State::UntilClose {
            if let Some(m) = s.msg.as_mut() {
                m.bytes += len as u64;
                m.lost = true;
            }
            return GapAction::Continue;
        }
        let lost_response = dir == Dir::ToClient && s.msg.is_some();
        *s = Side::new();
        if lost_response && let Some(p) = self.pending.pop() {
            txn::fail(p.txn, txn::NOTE_GAP, cx);
        }
        GapAction::Reset
    }

    fn fin(&mut self, dir: Dir, cx: &mut Cx<'_>) {
        if self.sides[idx(dir)].state == State::UntilClose {
            self.finish(dir, cx);
        }
        self.sides[idx(dir)] = Side::new();
        self.ended[idx(dir)] = true;
    }

    fn expire(&mut self, cx: &mut Cx<'_>) {
        self.pending.expire(cx);
    }

    fn skipped(&mut self, dir: Dir, lost: usize, cx: &mut Cx<'_>) {
        let s = &mut self.sides[idx(dir)];
        if s.state == State::Skipping {
            if let Some(m) = s.msg.as_mut() {
                m.lost |= lost > 0;
            }
            self.finish(dir, cx);
        }
    }

    fn close(&mut self, cx: &mut Cx<'_>) {
        match self.sides[1].state {
            State::UntilClose => self.finish(Dir::ToClient, cx),
            // The connection ended (RST) before the body's declared end.
            State::Skipping => {
                if let Some(m) = self.sides[1].msg.as_mut() {
                    m.cut = true;
                }
                self.finish(Dir::ToClient, cx);
            }
            _ => {}
        }
        if let Some(Some(t)) = self.held.take() {
            txn::fail(t, txn::NOTE_CLOSED, cx);
        }
        self.pending.drain(txn::NOTE_CLOSED, cx);
    }
}

impl Http {
    fn body_bytes_count(&mut self, dir: Dir, n: usize) {
        if let Some(m) = self.sides[idx(dir)].msg.as_mut() {
            m.bytes += n as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::proto::testutil::drive;

    fn http(cfg: Options) -> Box<dyn TcpParser> {
        http_max(cfg, 10 * 1024 * 1024)
    }

    fn http_max(cfg: Options, max_message_size: usize) -> Box<dyn TcpParser> {
        factory(
            &cfg,
            max_message_size,
            [false; 2],
            &crate::inspect::proto::testutil::common(),
        )()
    }

    #[test]
    fn pipelined_chunked_and_length_bodies() {
        let mut p = http(Options {
            send_headers: vec!["User-Agent".into()],
            hide_keywords: vec!["pass".into()],
            real_ip_header: "X-Forwarded-For".into(),
            include_body_for: vec!["text/plain".into()],
            ..Default::default()
        });
        let req = b"GET /a?x=1&pass=2 HTTP/1.1\r\nUser-Agent: t\r\nAuthorization: Basic xx\r\nX-Forwarded-For: 9.9.9.9, 1.1.1.1\r\n\r\n\
POST /b HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 14\r\n\r\nuser=u&pass=pw";
        let resp = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n\
HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nnop";
        let out = drive(
            p.as_mut(),
            &[(Dir::ToServer, &req[..]), (Dir::ToClient, &resp[..])],
            7,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].method.as_deref(), Some("GET"));
        assert_eq!(out[0].path.as_deref(), Some("/a"));
        assert_eq!(out[0].real_ip.as_deref(), Some("9.9.9.9"));
        assert_eq!(out[0].object()["request"]["params"], "x=1&pass=xxxxx");
        assert_eq!(out[0].object()["request"]["headers"]["user-agent"], "t");
        assert_eq!(out[0].object()["response"]["body"], "abcde");
        assert_eq!(out[0].status, status::OK);
        assert_eq!(out[1].object()["request"]["params"], "user=u&pass=xxxxx");
        assert_eq!(out[1].status, status::CLIENT_ERROR);
        assert_eq!(out[1].object()["response"]["code"], 404);
        assert_eq!(out[1].bytes_out, 48);
    }

    #[test]
    fn a_skipped_body_notes_bytes_lost_in_the_capture_or_cut_by_the_connection_end() {
        use crate::inspect::proto::testutil::drive_chunks;
        use crate::inspect::tcp::Chunk;
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123";
        let req: &[u8] = b"GET / HTTP/1.1\r\n\r\n";
        // Whole: no note, published when the last byte went by.
        let mut p = http(Options::default());
        let out = drive_chunks(
            p.as_mut(),
            &[
                (Dir::ToServer, Chunk::Data(req)),
                (Dir::ToClient, Chunk::Data(head)),
                (Dir::ToClient, Chunk::Data(b"456789")),
            ],
            false,
        );
        assert_eq!(out.len(), 1);
        assert!(out[0].notes.is_empty(), "{:?}", out[0].notes);
        assert_eq!(out[0].bytes_out, 49);
        // Four body bytes in a hole: the response is complete, with the loss noted.
        let mut p = http(Options::default());
        let out = drive_chunks(
            p.as_mut(),
            &[
                (Dir::ToServer, Chunk::Data(req)),
                (Dir::ToClient, Chunk::Data(head)),
                (Dir::ToClient, Chunk::Gap(4)),
                (Dir::ToClient, Chunk::Data(b"89")),
            ],
            false,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].status, out[0].notes.clone()),
            (status::OK, vec![txn::NOTE_LOSS.to_string()])
        );
        // The connection ends (RST) before the declared end: said so, not a clean 200.
        let mut p = http(Options::default());
        let out = drive_chunks(
            p.as_mut(),
            &[
                (Dir::ToServer, Chunk::Data(req)),
                (Dir::ToClient, Chunk::Data(head)),
            ],
            true,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].notes, vec![txn::NOTE_CUT.to_string()]);
        assert_eq!(out[0].object()["response"]["code"], 200);
    }

    #[test]
    fn a_body_over_max_message_size_is_cut_and_noted_and_the_transaction_kept() {
        let mut p = http_max(
            Options {
                include_body_for: vec!["text/plain".into()],
                ..Default::default()
            },
            4,
        );
        let out = drive(
            p.as_mut(),
            &[
                (Dir::ToServer, b"GET /big HTTP/1.1\r\n\r\n"),
                (
                    Dir::ToClient,
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\n0123456789",
                ),
            ],
            1,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].object()["response"]["body"], "0123");
        assert_eq!(
            out[0].notes,
            vec!["response body truncated to max_message_size or lost".to_string()]
        );
        assert_eq!(out[0].status, status::OK);
        // Every byte is counted, also the ones not kept.
        assert_eq!(out[0].bytes_out, 75);
    }

    #[test]
    fn ecs_events_name_the_host_and_the_basic_user_and_classic_ones_do_not() {
        use crate::inspect::proto::txn::{EcsSettings, Endpoints};
        let ep = Endpoints::new(
            "tcp",
            "10.0.0.1:5000".parse().unwrap(),
            "10.0.0.2:8080".parse().unwrap(),
        );
        let s = EcsSettings::default();
        let exchange = |host: &str| {
            let req = format!(
                "GET /a?b=1 HTTP/1.0\r\nHost: {host}\r\nAuthorization: Basic dXNlcjpwdw==\r\n\r\n"
            );
            let mut p = http(Options {
                redact_authorization: true,
                ..Default::default()
            });
            drive(
                p.as_mut(),
                &[
                    (Dir::ToServer, req.as_bytes()),
                    (
                        Dir::ToClient,
                        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
                    ),
                ],
                1,
            )
            .remove(0)
        };
        let e = exchange("www.example.com:8080")
            .into_ecs_event("http", &ep, &s)
            .to_value();
        assert_eq!(e["http"]["version"], "1.0");
        assert_eq!(e["destination"]["domain"], "www.example.com");
        assert_eq!(e["server"]["domain"], "www.example.com");
        assert_eq!(
            e["related"]["hosts"],
            serde_json::json!(["www.example.com"])
        );
        assert_eq!(
            e["related"]["ip"],
            serde_json::json!(["10.0.0.1", "10.0.0.2"])
        );
        assert_eq!(e["user"]["name"], "user");
        assert_eq!(e["related"]["user"], serde_json::json!(["user"]));
        assert_eq!(e["url"]["path"], "/a");
        assert!(
            e.get("path").is_none() && e.get("resource").is_none(),
            "{e}"
        );
        // An address as the Host is no domain: it joins related.ip.
        let e = exchange("192.0.2.7")
            .into_ecs_event("http", &ep, &s)
            .to_value();
        assert!(e["destination"].get("domain").is_none(), "{e}");
        assert!(e["related"].get("hosts").is_none(), "{e}");
        assert_eq!(
            e["related"]["ip"],
            serde_json::json!(["10.0.0.1", "10.0.0.2", "192.0.2.7"])
        );
        // The classic event is as it was.
        let e = exchange("www.example.com")
            .into_event("http", &ep)
            .to_value();
        assert_eq!(e["path"], "/a");
        for absent in ["user", "related", "url", "destination"] {
            assert!(e.get(absent).is_none(), "{absent} in {e}");
        }
        assert!(e["http"].get("version").is_none(), "{e}");
    }

    #[test]
    fn send_all_headers_redacts_authorization_when_asked() {
        let exchange: &[(Dir, &[u8])] = &[
            (
                Dir::ToServer,
                b"GET / HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n",
            ),
            (
                Dir::ToClient,
                b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
            ),
        ];
        let mut p = http(Options {
            send_all_headers: true,
            redact_authorization: true,
            ..Default::default()
        });
        let out = drive(p.as_mut(), exchange, 1);
        assert_eq!(out[0].object()["request"]["headers"]["authorization"], "*");
        assert_eq!(out[0].status, status::SERVER_ERROR);
        // Packetbeat's default: the header as sent.
        let mut p = http(Options {
            send_all_headers: true,
            ..Default::default()
        });
        let out = drive(p.as_mut(), exchange, 1);
        assert_eq!(
            out[0].object()["request"]["headers"]["authorization"],
            "Bearer s3cret"
        );
    }

    #[test]
    fn cookies_split_headers_redacted_and_gzip_bodies_decoded() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"hello, decoded").unwrap();
        let gz = gz.finish().unwrap();
        let mut resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Encoding: gzip\r\n\
             Set-Cookie: sid=42; Path=/\r\nContent-Length: {}\r\n\r\n",
            gz.len()
        )
        .into_bytes();
        resp.extend_from_slice(&gz);
        let req: &[u8] = b"GET / HTTP/1.1\r\nCookie: a=1; b=two\r\nX-Secret: s\r\n\r\n";
        let run = |o: Options| {
            let mut p = http(o);
            drive(
                p.as_mut(),
                &[(Dir::ToServer, req), (Dir::ToClient, &resp)],
                5,
            )
            .pop()
            .unwrap()
            .object()
        };
        let o = run(Options {
            send_headers: vec!["cookie".into(), "set-cookie".into(), "x-secret".into()],
            split_cookie: true,
            redact_headers: vec!["X-Secret".into()],
            include_response_body_for: vec!["text/plain".into()],
            ..Default::default()
        });
        assert_eq!(o["request"]["headers"]["cookie"]["b"], "two");
        assert_eq!(o["request"]["headers"]["x-secret"], "*");
        assert_eq!(o["response"]["headers"]["set-cookie"]["sid"], "42");
        assert_eq!(o["response"]["headers"]["set-cookie"]["path"], "/");
        assert_eq!(o["response"]["body"], "hello, decoded");
        let raw = run(Options {
            include_request_body_for: vec!["text/plain".into()],
            decode_body: false,
            include_response_body_for: vec!["text/plain".into()],
            ..Default::default()
        });
        assert_ne!(raw["response"]["body"], "hello, decoded");
        let none = run(Options {
            include_request_body_for: vec!["text/plain".into()],
            ..Default::default()
        });
        assert!(none["response"].get("body").is_none(), "{none}");
    }
}

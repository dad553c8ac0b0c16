//! AMQP 0-9-1 transactions, as Packetbeat makes them: a synchronous method paired with
//! its `-ok` on the same channel; acknowledgements and `no-wait` methods alone; a message
//! (`basic.publish`, `basic.deliver`, `basic.return`, `basic.get-ok`) once its content
//! header and body frames are in, frames of other channels interleaved. A channel or
//! connection close with a reply code of 300 or more is an error.
//!
//! Bodies are streamed, never buffered whole: the first `max_body_length` bytes are kept
//! for `send_request` / `send_response`, the rest skipped unseen. Frames are found again
//! after a hole or a damaged frame by scanning for a frame that checks out (known type,
//! end octet, known method). `connection.start-ok`'s SASL response (the credentials) is
//! skipped by the parser and never reaches an event.

pub mod fields;
pub mod parser;

pub use fields::AmqpTxn;

use super::txn::{self, Pairing, complete, unmatched_response};
use super::{
    Common, Cx, Dir, Entry, GapAction, ParseError, Parsers, TcpFactory, TcpParser, Txn, TxnObject,
    status,
};
use crate::event::Event;
use crate::monitor::{self, METRICS};
use parser::{BODY, FRAME_END, HEAD, HEADER, HEARTBEAT, METHOD, Role};
use std::sync::Arc;

/// The registry's handle on AMQP.
pub struct Proto;

/// The AMQP keys of a `connbeat.protocols` entry (Packetbeat's names and defaults).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Options {
    /// Bytes of a message body kept for `request` / `response` (`send_request`,
    /// `send_response`); a longer body is cut and marked ` [...]`.
    pub max_body_length: usize,
    /// Message properties (content type, headers, delivery mode, ...) in the event.
    pub parse_headers: bool,
    /// The optional `arguments` tables of declare, bind and consume methods.
    pub parse_arguments: bool,
    /// No events for connection and channel setup (`connection.start`, `tune`, `open`,
    /// `channel.open`, `channel.flow`, `basic.qos`) nor for closes without an error.
    pub hide_connection_information: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_body_length: 1000,
            parse_headers: true,
            parse_arguments: true,
            hide_connection_information: true,
        }
    }
}

impl super::Protocol for Proto {
    const NAME: &'static str = "amqp";
    const TEXT_MESSAGES: bool = true;
    type Options = Options;
    fn parsers(e: &Entry<Options>, common: &Common) -> Parsers {
        let s = Arc::new(Settings {
            o: e.options.clone(),
            send: [e.common.send_request, e.common.send_response],
            max_pending: common.max_pending.max(1),
        });
        let tcp: TcpFactory =
            Arc::new(move || Box::new(Amqp::new(s.clone())) as Box<dyn TcpParser>);
        Parsers {
            tcp: Some(tcp),
            udp: None,
        }
    }

    fn fuzz_options() -> Options {
        Options {
            max_body_length: 64,
            hide_connection_information: false,
            ..Options::default()
        }
    }
}

impl TxnObject for AmqpTxn {
    fn write_classic(&self, name: &'static str, e: &mut Event) {
        e.push_field(name, self);
    }

    /// Packetbeat 8 also writes the message's `user-id` property as `user.id`.
    fn write_ecs(&self, name: &'static str, e: &mut Event, _at: &super::txn::EcsAt<'_>) {
        e.push_field(name, self);
        if let Some(id) = &self.user_id {
            e.push_field("user", &serde_json::json!({ "id": id }));
        }
    }

    fn ecs_action(&self, name: &'static str, method: Option<&str>) -> Option<String> {
        method.map(|m| format!("{name}.{m}"))
    }
}

/// A candidate frame found while looking for the frame boundaries again is refused when
/// it is longer than this (RabbitMQ's default `frame_max`).
const RESYNC_MAX_FRAME: u32 = 128 * 1024;

/// Settings shared by the connections of one entry.
#[derive(Debug)]
struct Settings {
    o: Options,
    /// `send_request`, `send_response`.
    send: [bool; 2],
    /// Requests waiting per connection, and messages in progress per direction.
    max_pending: usize,
}

/// Where a direction is in its frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// At a frame boundary.
    Frame,
    /// Inside a body frame of `channel`, `left` payload bytes to go.
    Body { channel: u16, left: u64 },
    /// Before the end octet of a body frame.
    End { channel: u16 },
}

/// A message being assembled from its method, content header and body frames.
#[derive(Debug)]
struct Content {
    channel: u16,
    method: &'static str,
    txn: Txn<AmqpTxn>,
    /// The body size the content header announced (`None`: header not seen yet).
    size: Option<u64>,
    /// Body bytes seen so far.
    got: u64,
    /// The first `max_body_length` of them.
    body: Vec<u8>,
    /// Part of the body fell into a hole of the capture.
    lost: bool,
}

/// One direction of a connection.
#[derive(Debug)]
struct Side {
    read: Read,
    /// Frame boundaries lost (after a gap or a damaged frame): scanning for the next frame.
    resync: bool,
    /// Messages in progress, at most one per channel.
    contents: Vec<Content>,
}

impl Side {
    fn new() -> Side {
        Side {
            read: Read::Frame,
            resync: false,
            contents: Vec::new(),
        }
    }

    /// Drops the messages in progress on `channel` (on every channel: `None`), counted.
    fn drop_contents(&mut self, channel: Option<u16>) {
        let before = self.contents.len();
        self.contents
            .retain(|c| channel.is_some_and(|ch| c.channel != ch));
        let n = before - self.contents.len();
        monitor::add(&METRICS.inspect_amqp_content_dropped, n as u64);
    }
}

/// Which request a pending transaction is, for its response.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    channel: u16,
    /// The direction the request came from (its response comes the other way).
    from: Dir,
}

/// The per-connection state.
pub struct Amqp {
    s: Arc<Settings>,
    pending: Pairing<Waiting, AmqpTxn>,
    sides: [Side; 2],
}

const NOTE_BAD_ARGUMENTS: &str = "Failed to parse additional arguments";
const NOTE_BAD_HEADERS: &str = "Failed to parse message headers";
const NOTE_BODY_GAP: &str = "part of the message body lost in a gap of the capture";

fn side(dir: Dir) -> usize {
    usize::from(dir == Dir::ToClient)
}

/// Packetbeat's error methods: a returned or rejected message, a close with an error code.
fn status_of(method: &str, f: &AmqpTxn) -> &'static str {
    let close = method == "channel.close" || method == "connection.close";
    if method == "basic.return"
        || method == "basic.reject"
        || (close && f.reply_code.unwrap_or(0) >= 300)
    {
        status::ERROR
    } else {
        status::OK
    }
}

impl Amqp {
    fn new(s: Arc<Settings>) -> Amqp {
        Amqp {
            pending: Pairing::new(s.max_pending),
            s,
            sides: [Side::new(), Side::new()],
        }
    }

    /// A body frame's payload bytes at the start of `data`; returns how many are used
    /// (more than `data.len()` when the rest is skipped unseen).
    fn body(&mut self, d: usize, channel: u16, left: u64, data: &[u8]) -> usize {
        let max = self.s.o.max_body_length;
        let side = &mut self.sides[d];
        let n = (left as usize).min(data.len());
        let content = side
            .contents
            .iter_mut()
            .find(|c| c.channel == channel && c.size.is_some());
        let wants_more = match content {
            Some(c) => {
                let take = max.saturating_sub(c.body.len()).min(n);
                c.body.extend_from_slice(&data[..take]);
                if c.body.len() < max {
                    c.got += n as u64;
                    true
                } else {
                    c.got += left;
                    false
                }
            }
            None => false,
        };
        if wants_more && (n as u64) < left {
            side.read = Read::Body {
                channel,
                left: left - n as u64,
            };
            n
        } else {
            side.read = Read::End { channel };
            left as usize
        }
    }

    /// The end of a body frame: the message is published once its body is all there.
    fn body_done(&mut self, d: usize, channel: u16, cx: &mut Cx<'_>) {
        let side = &mut self.sides[d];
        if let Some(i) = side
            .contents
            .iter()
            .position(|c| c.channel == channel && c.size.is_some_and(|s| c.got >= s))
        {
            let c = side.contents.remove(i);
            self.publish_content(c, cx);
        }
    }

    fn on_method(&mut self, dir: Dir, channel: u16, payload: &[u8], len: u64, cx: &mut Cx<'_>) {
        let m = match parser::method(payload, self.s.o.parse_arguments) {
            Ok(Some(m)) => m,
            Ok(None) => {
                monitor::inc(&METRICS.inspect_amqp_unknown_methods);
                return;
            }
            Err(e) => {
                // The frame itself was whole: skip it, the next one is in step.
                monitor::inc(&METRICS.inspect_parse_errors);
                tracing::debug!("amqp: {e}");
                return;
            }
        };
        let hide = self.s.o.hide_connection_information;
        if hide && m.connection_info {
            return;
        }
        let close = m.name == "channel.close" || m.name == "connection.close";
        if close {
            // Messages in progress on a closing channel (or connection) never finish.
            let on = (m.name == "channel.close").then_some(channel);
            for s in &mut self.sides {
                s.drop_contents(on);
            }
        }
        let mut t: Txn<AmqpTxn> = Txn::new(cx.now, len);
        if dir == Dir::ToClient {
            // Sent by the server (a close, connection.start, an ack of a confirm):
            // `bytes_in` stays the client's bytes.
            t.bytes_in = 0;
            t.bytes_out = len;
        }
        t.method = Some(m.name.to_string());
        t.status = status_of(m.name, &m.fields);
        if m.bad_arguments {
            t.notes.push(NOTE_BAD_ARGUMENTS.into());
        }
        if self.s.send[0] && m.role != Role::Content {
            t.request = Some(match &m.arg {
                Some(a) => format!("{} {a}", m.name),
                None => m.name.to_string(),
            });
        }
        t.fields = m.fields;
        match m.role {
            Role::Content => {
                t.bytes_in = 0;
                let side = &mut self.sides[side(dir)];
                side.drop_contents(Some(channel));
                if side.contents.len() >= self.s.max_pending {
                    side.contents.remove(0);
                    monitor::inc(&METRICS.inspect_amqp_content_dropped);
                }
                side.contents.push(Content {
                    channel,
                    method: m.name,
                    txn: t,
                    size: None,
                    got: 0,
                    body: Vec::new(),
                    lost: false,
                });
            }
            Role::Async => cx.out.push(t.boxed()),
            Role::Request => {
                // A normal close is connection housekeeping (and its close-ok with it).
                if hide && close && t.status == status::OK {
                    return;
                }
                if t.fields.no_wait == Some(true) {
                    cx.out.push(t.boxed());
                    return;
                }
                if self.pending.take(|w| w.channel == channel).is_some() {
                    monitor::inc(&METRICS.inspect_amqp_requests_replaced);
                }
                self.pending.push(t, Waiting { channel, from: dir }, cx);
            }
            Role::Response => {
                // The answer to the request waiting on its channel from the other side.
                let Some(p) = self.pending.take(|w| w.channel == channel && w.from != dir) else {
                    let housekeeping = m.name.ends_with(".close-ok") && hide;
                    if !housekeeping {
                        unmatched_response();
                    }
                    return;
                };
                let mut r = p.txn;
                r.fields.merge(t.fields);
                if m.name == "basic.get-empty" {
                    r.method = Some(m.name.to_string());
                }
                if self.s.send[1] {
                    r.response = Some(status::OK.to_string());
                }
                let out = if p.extra.from == Dir::ToClient {
                    r.bytes_in = len;
                    r.bytes_out
                } else {
                    len
                };
                complete(r, cx.now, out, cx);
            }
        }
    }

    fn on_header(&mut self, dir: Dir, channel: u16, payload: &[u8], cx: &mut Cx<'_>) {
        let side = &mut self.sides[side(dir)];
        let Some(i) = side
            .contents
            .iter()
            .position(|c| c.channel == channel && c.size.is_none())
        else {
            // A content header without its method: that message is lost.
            monitor::inc(&METRICS.inspect_amqp_content_dropped);
            return;
        };
        match parser::content_header(payload, self.s.o.parse_headers) {
            Ok(h) => {
                let c = &mut side.contents[i];
                c.size = Some(h.body_size);
                c.txn.fields.merge(h.properties);
                if h.bad_headers {
                    c.txn.notes.push(NOTE_BAD_HEADERS.into());
                }
                if h.body_size == 0 {
                    let c = side.contents.remove(i);
                    self.publish_content(c, cx);
                }
            }
            Err(e) => {
                side.contents.remove(i);
                monitor::inc(&METRICS.inspect_amqp_content_dropped);
                monitor::inc(&METRICS.inspect_parse_errors);
                tracing::debug!("amqp: {e}");
            }
        }
    }

    /// Publishes a whole message: the body's size is its bytes; `basic.get-ok` completes
    /// the `basic.get` waiting on its channel.
    fn publish_content(&mut self, c: Content, cx: &mut Cx<'_>) {
        let size = c.size.unwrap_or(0);
        let mut t = c.txn;
        if c.lost {
            t.notes.push(NOTE_BODY_GAP.into());
        }
        let text = || {
            let f = &t.fields;
            let stringable = f.content_encoding.as_deref().is_none_or(str::is_empty)
                && f.content_type
                    .as_deref()
                    .is_some_and(|ct| ct.contains("text") || ct.contains("json"));
            let mut s = if stringable {
                String::from_utf8_lossy(&c.body).into_owned()
            } else {
                fields::body_numbers(&c.body)
            };
            if (c.body.len() as u64) < size {
                s.push_str(" [...]");
            }
            s
        };
        if c.method == "basic.publish" {
            t.bytes_in = size;
            if self.s.send[0] {
                t.request = Some(text());
            }
            cx.out.push(t.boxed());
            return;
        }
        let response = self.s.send[1].then(text);
        if c.method == "basic.get-ok" {
            let get = self.pending.take(|w| w.channel == c.channel);
            if let Some(mut g) = get.map(|p| p.txn) {
                g.fields.merge(t.fields);
                g.notes.extend(t.notes);
                g.response = response;
                complete(g, cx.now, size, cx);
                return;
            }
            t.method = Some("basic.get".into());
        }
        t.bytes_out = size;
        t.response = response;
        cx.out.push(t.boxed());
    }

    /// While frame boundaries are lost: how many bytes of `data` to skip before a frame
    /// that checks out (0 with `resync` still set: wait for more bytes).
    fn resync(&mut self, d: usize, data: &[u8]) -> usize {
        for i in 0..data.len() {
            match self.candidate(&data[i..]) {
                Candidate::No => continue,
                Candidate::Wait => {
                    monitor::add(&METRICS.inspect_amqp_resync_bytes, i as u64);
                    return i;
                }
                Candidate::Yes => {
                    monitor::add(&METRICS.inspect_amqp_resync_bytes, i as u64);
                    self.sides[d].resync = false;
                    return i;
                }
            }
        }
        monitor::add(&METRICS.inspect_amqp_resync_bytes, data.len() as u64);
        data.len()
    }

    /// Whether a frame (or the protocol header) starts at `data[0]`. Body frames are
    /// refused: the messages they belonged to were dropped with the boundaries.
    fn candidate(&self, data: &[u8]) -> Candidate {
        match parser::is_protocol_header(data) {
            Some(true) => return Candidate::Yes,
            None => return Candidate::Wait,
            Some(false) => {}
        }
        if !matches!(data[0], METHOD | HEADER | HEARTBEAT) {
            return Candidate::No;
        }
        let Some(h) = parser::frame_head(data) else {
            return Candidate::Wait;
        };
        if h.size > RESYNC_MAX_FRAME || (h.kind == HEARTBEAT && (h.size != 0 || h.channel != 0)) {
            return Candidate::No;
        }
        let total = HEAD + h.size as usize + 1;
        if data.len() < total {
            return Candidate::Wait;
        }
        if data[total - 1] != FRAME_END {
            return Candidate::No;
        }
        let p = &data[HEAD..total - 1];
        let ok = match h.kind {
            METHOD => {
                p.len() >= 4
                    && parser::known(
                        u16::from_be_bytes([p[0], p[1]]),
                        u16::from_be_bytes([p[2], p[3]]),
                    )
            }
            HEADER => p.len() >= 14 && p[..4] == [0, 60, 0, 0],
            _ => true,
        };
        if ok { Candidate::Yes } else { Candidate::No }
    }
}

enum Candidate {
    No,
    Wait,
    Yes,
}

impl TcpParser for Amqp {
    fn parse(&mut self, dir: Dir, data: &[u8], cx: &mut Cx<'_>) -> Result<usize, ParseError> {
        let d = side(dir);
        match self.sides[d].read {
            Read::Body { channel, left } => return Ok(self.body(d, channel, left, data)),
            Read::End { channel } => {
                if data[0] != FRAME_END {
                    return Err(ParseError("AMQP body frame without its end octet"));
                }
                self.sides[d].read = Read::Frame;
                self.body_done(d, channel, cx);
                return Ok(1);
            }
            Read::Frame => {}
        }
        if self.sides[d].resync {
            let skip = self.resync(d, data);
            if skip > 0 || self.sides[d].resync {
                return Ok(skip);
            }
        }
        match parser::is_protocol_header(data) {
            None => return Ok(0),
            Some(true) => return Ok(parser::PROTOCOL_HEADER),
            Some(false) => {}
        }
        let Some(h) = parser::frame_head(data) else {
            return Ok(0);
        };
        match h.kind {
            BODY => {
                let side = &mut self.sides[d];
                if !side
                    .contents
                    .iter()
                    .any(|c| c.channel == h.channel && c.size.is_some())
                {
                    // A body frame of a message whose method or header was not seen.
                    monitor::inc(&METRICS.inspect_amqp_content_dropped);
                }
                side.read = if h.size == 0 {
                    Read::End { channel: h.channel }
                } else {
                    Read::Body {
                        channel: h.channel,
                        left: u64::from(h.size),
                    }
                };
                Ok(HEAD)
            }
            METHOD | HEADER | HEARTBEAT => {
                let total = HEAD + h.size as usize + 1;
                if data.len() < total {
                    return Ok(0);
                }
                if data[total - 1] != FRAME_END {
                    return Err(ParseError("AMQP frame without its end octet"));
                }
                let payload = &data[HEAD..total - 1];
                match h.kind {
                    METHOD => self.on_method(dir, h.channel, payload, total as u64, cx),
                    HEADER => self.on_header(dir, h.channel, payload, cx),
                    _ => {}
                }
                Ok(total)
            }
            _ => Err(ParseError("not an AMQP frame type")),
        }
    }

    fn gap(&mut self, dir: Dir, len: usize, cx: &mut Cx<'_>) -> GapAction {
        let d = side(dir);
        let s = &mut self.sides[d];
        // A hole inside a body: skip it there, the frames after it are still in step.
        if let Read::Body { channel, left } = s.read
            && len > 0
            && len as u64 <= left
        {
            if let Some(c) = s.contents.iter_mut().find(|c| c.channel == channel) {
                c.lost = true;
                c.got += len as u64;
            }
            let left = left - len as u64;
            s.read = if left == 0 {
                Read::End { channel }
            } else {
                Read::Body { channel, left }
            };
            return GapAction::Continue;
        }
        s.read = Read::Frame;
        s.resync = true;
        s.drop_contents(None);
        // Responses travelling this way may have been lost with the hole.
        while let Some(p) = self.pending.take(|w| w.from != dir) {
            txn::fail(p.txn, txn::NOTE_GAP, cx);
        }
        GapAction::Reset
    }

    fn expire(&mut self, cx: &mut Cx<'_>) {
        self.pending.expire(cx);
    }

    fn close(&mut self, cx: &mut Cx<'_>) {
        self.pending.drain(txn::NOTE_CLOSED, cx);
        for s in &mut self.sides {
            s.drop_contents(None);
        }
    }
}

#[cfg(test)]
mod tests;

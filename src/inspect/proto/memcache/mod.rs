//! Memcache transactions, text and binary protocols, over TCP and UDP.
//!
//! One [`Matcher`] pairs requests with responses for both transports: text commands in
//! order, binary ones by opaque and opcode (a quiet request answered by nothing is
//! published as it stands, `OK`, once a later request's answer shows it got none). Replies
//! in several messages (`VALUE`... `END`, `STAT`... `END`, binary stats up to the empty key)
//! are merged into one response first. Over UDP, each request id of a flow has its own
//! matcher, and a reply spread over several datagrams is put back together by sequence
//! number before it is parsed.
//!
//! SASL requests are reported without their value (the credentials), see the parser.

pub mod parser;

use super::txn::{self, Pairing, unmatched_response};
use super::{
    Common, Cx, Dir, Entry, GapAction, ParseError, Parsers, TcpFactory, TcpParser, Txn, TxnObject,
    UdpFactory, UdpParser, status,
};
use crate::config::Duration;
use crate::event::Event;
use crate::monitor::{self, METRICS};
use parser::{Limits, McMsg, Message, Outcome, Part};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The registry's handle on Memcache.
pub struct Proto;

/// The memcache keys of a `connbeat.protocols` entry (Packetbeat's names and meanings).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Options {
    /// Report text commands it does not know (`command: UNKNOWN`, the `line`) instead of
    /// counting a parse error.
    pub parseunknown: bool,
    /// Values kept per message in `values` (base64): 0 none, a negative number all.
    pub maxvalues: i64,
    /// Bytes kept of each such value (0: all).
    pub maxbytespervalue: usize,
    /// Timeout of a UDP transaction; the protocol's `transaction_timeout` when not set.
    pub udptransactiontimeout: Option<Duration>,
    /// Timeout of a TCP transaction; the protocol's `transaction_timeout` when not set.
    pub tcptransactiontimeout: Option<Duration>,
}

/// Stats entries kept in one response.
const MAX_STATS: usize = 4096;

impl super::Protocol for Proto {
    const NAME: &'static str = "memcache";
    type Options = Options;
    fn fuzz_options() -> Options {
        Options {
            parseunknown: true,
            maxvalues: 3,
            maxbytespervalue: 16,
            ..Options::default()
        }
    }
    fn parsers(e: &Entry<Options>, common: &Common) -> Parsers {
        let o = &e.options;
        let limits = Limits {
            max_values: o.maxvalues,
            max_bytes_per_value: o.maxbytespervalue,
            parse_unknown: o.parseunknown,
        };
        let us = |d: Option<Duration>| d.map(|d| d.get().as_micros() as u64);
        let (tcp_to, udp_to) = (us(o.tcptransactiontimeout), us(o.udptransactiontimeout));
        let max = common.max_pending;
        let max_bytes = e.common.max_message_size;
        let tcp: TcpFactory = Arc::new(move || {
            Box::new(Memcache {
                m: Matcher::new(limits, max),
                timeout: tcp_to,
            }) as Box<dyn TcpParser>
        });
        let udp: UdpFactory = Arc::new(move || {
            Box::new(MemcacheUdp {
                txns: HashMap::new(),
                limits,
                max,
                max_bytes,
                held: 0,
                timeout: udp_to,
            }) as Box<dyn UdpParser>
        });
        Parsers {
            tcp: Some(tcp),
            udp: Some(udp),
        }
    }
}

/// The `memcache` object of a transaction.
#[derive(Debug, Default, Serialize)]
pub struct McTxn {
    pub protocol_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<McMsg>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<McMsg>,
}

impl McTxn {
    /// The JSON object `Serialize` writes (a test holds the two equal), written directly:
    /// serde spent more on this object than the parser on the messages.
    pub fn write_json(&self, out: &mut String) {
        out.push_str("{\"protocol_type\":");
        crate::event::push_json_str(out, self.protocol_type);
        if let Some(m) = &self.request {
            out.push_str(",\"request\":");
            m.write_json(out);
        }
        if let Some(m) = &self.response {
            out.push_str(",\"response\":");
            m.write_json(out);
        }
        out.push('}');
    }
}

impl TxnObject for McTxn {
    fn write_classic(&self, name: &'static str, e: &mut Event) {
        e.push_field_with(name, |out| self.write_json(out));
    }
}

/// What pairing needs to know of a waiting request.
#[derive(Debug)]
struct Req {
    binary: bool,
    silent: bool,
    opaque: u32,
    opcode: u8,
}

/// Note on a binary request whose answer never came while a later one's did.
const NOTE_SKIPPED: &str = "no response, though a later request was answered";

/// Requests waiting for responses, and a response being merged, of one connection (or one
/// UDP request id).
struct Matcher {
    pending: Pairing<Req, McTxn>,
    partial: Option<Message>,
    limits: Limits,
}

fn with_timeout<'a>(cx: &'a mut Cx<'_>, t: Option<u64>) -> Cx<'a> {
    Cx {
        now: cx.now,
        timeout: t.unwrap_or(cx.timeout),
        out: cx.out,
    }
}

/// Publishes a request that gets (or got) no response and needs none.
fn alone(t: Txn<McTxn>, cx: &mut Cx<'_>) {
    cx.out.push(t.boxed());
}

impl Matcher {
    fn new(limits: Limits, max: usize) -> Matcher {
        Matcher {
            pending: Pairing::new(max),
            partial: None,
            limits,
        }
    }

    fn idle(&self) -> bool {
        self.pending.is_empty() && self.partial.is_none()
    }

    fn on(&mut self, m: Message, cx: &mut Cx<'_>) {
        if m.values_dropped > 0 {
            monitor::add(
                &METRICS.inspect_memcache_values_dropped,
                u64::from(m.values_dropped),
            );
        }
        if m.request {
            self.request(m, cx);
        } else {
            self.response(m, cx);
        }
    }

    fn request(&mut self, m: Message, cx: &mut Cx<'_>) {
        let mut t: Txn<McTxn> = Txn::new(cx.now, m.len as u64);
        t.fields.protocol_type = if m.binary { "binary" } else { "text" };
        let req = Req {
            binary: m.binary,
            silent: m.silent,
            opaque: m.opaque,
            opcode: m.opcode,
        };
        t.fields.request = Some(m.fields);
        if m.quit || (!m.binary && m.silent) {
            alone(t, cx);
        } else {
            self.pending.push(t, req, cx);
        }
    }

    fn response(&mut self, m: Message, cx: &mut Cx<'_>) {
        let m = match self.partial.take() {
            Some(mut prev) if mergeable(&prev, &m) => {
                self.merge(&mut prev, m);
                prev
            }
            Some(prev) => {
                self.correlate(prev, cx);
                m
            }
            None => m,
        };
        if matches!(m.part, Part::Value | Part::Stat) {
            self.partial = Some(m);
        } else {
            self.correlate(m, cx);
        }
    }

    fn merge(&self, prev: &mut Message, m: Message) {
        prev.len += m.len;
        let (p, f) = (&mut prev.fields, m.fields);
        if let Some(b) = f.bytes {
            *p.bytes.get_or_insert(0) += b;
        }
        if let Some(n) = f.count_values {
            *p.count_values.get_or_insert(0) += n;
        }
        p.keys.extend(f.keys);
        let room = if self.limits.max_values < 0 {
            usize::MAX
        } else {
            (self.limits.max_values as usize).saturating_sub(p.values.len())
        };
        let extra = f.values.len().saturating_sub(room);
        p.values.extend(f.values.into_iter().take(room));
        let room = MAX_STATS.saturating_sub(p.stats.len());
        let extra = extra + f.stats.len().saturating_sub(room);
        p.stats.extend(f.stats.into_iter().take(room));
        if extra > 0 {
            monitor::add(&METRICS.inspect_memcache_values_dropped, extra as u64);
        }
        // `END` or the binary stat with no key ends the list.
        if matches!(m.part, Part::End | Part::Whole) {
            prev.part = Part::Whole;
        }
    }

    /// Pairs a whole response with its request.
    fn correlate(&mut self, resp: Message, cx: &mut Cx<'_>) {
        if resp.binary {
            let Some(i) = self
                .pending
                .position(|r| r.binary && r.opaque == resp.opaque && r.opcode == resp.opcode)
            else {
                unmatched_response();
                return;
            };
            // Earlier requests got no answer: quiet ones need none.
            for _ in 0..i {
                if let Some(p) = self.pending.pop() {
                    if p.extra.silent {
                        alone(p.txn, cx);
                    } else {
                        txn::fail(p.txn, NOTE_SKIPPED, cx);
                    }
                }
            }
        }
        let Some(p) = self.pending.pop() else {
            unmatched_response();
            return;
        };
        let mut t = p.txn;
        t.status = if resp.binary {
            match resp.status {
                0 => status::OK,
                s if s > 0x80 => status::SERVER_ERROR,
                _ => status::ERROR,
            }
        } else {
            match resp.outcome {
                Outcome::Ok => status::OK,
                Outcome::Fail => status::ERROR,
                Outcome::ClientError => status::CLIENT_ERROR,
                Outcome::ServerError => status::SERVER_ERROR,
            }
        };
        t.fields.response = Some(resp.fields);
        txn::complete(t, cx.now, resp.len as u64, cx);
    }

    /// Requests older than the timeout: published as they stand (quiet ones) or failed.
    fn expire(&mut self, cx: &mut Cx<'_>) {
        while let Some(p) = self.pending.front() {
            if cx.now.saturating_sub(p.txn.start) < cx.timeout {
                break;
            }
            if let Some(p) = self.pending.pop() {
                if p.extra.silent {
                    alone(p.txn, cx);
                } else {
                    txn::fail(p.txn, txn::NOTE_TIMEOUT, cx);
                }
            }
        }
    }

    fn close(&mut self, cx: &mut Cx<'_>) {
        if let Some(m) = self.partial.take() {
            self.correlate(m, cx);
        }
        while let Some(p) = self.pending.pop() {
            if p.extra.silent {
                alone(p.txn, cx);
            } else {
                txn::fail(p.txn, txn::NOTE_CLOSED, cx);
            }
        }
    }
}

fn mergeable(prev: &Message, m: &Message) -> bool {
    if prev.binary != m.binary {
        return false;
    }
    if prev.binary {
        return prev.opcode == 0x10 && m.opcode == 0x10 && prev.opaque == m.opaque;
    }
    matches!(
        (prev.part, m.part),
        (Part::Value, Part::Value | Part::End) | (Part::Stat, Part::Stat | Part::End)
    )
}

/// One memcache TCP connection.
pub struct Memcache {
    m: Matcher,
    /// `tcptransactiontimeout`, µs.
    timeout: Option<u64>,
}

impl TcpParser for Memcache {
    fn parse(&mut self, dir: Dir, data: &[u8], cx: &mut Cx<'_>) -> Result<usize, ParseError> {
        let Some(msg) = parser::message(data, dir == Dir::ToServer, &self.m.limits)? else {
            return Ok(0);
        };
        let len = msg.len;
        self.m.on(msg, cx);
        Ok(len)
    }

    fn gap(&mut self, dir: Dir, _len: usize, cx: &mut Cx<'_>) -> GapAction {
        if dir == Dir::ToClient {
            self.m.partial = None;
            if let Some(p) = self.m.pending.pop() {
                txn::fail(p.txn, txn::NOTE_GAP, cx);
            }
        }
        GapAction::Reset
    }

    fn expire(&mut self, cx: &mut Cx<'_>) {
        self.m.expire(&mut with_timeout(cx, self.timeout));
    }

    fn close(&mut self, cx: &mut Cx<'_>) {
        self.m.close(cx);
    }
}

/// A message of several datagrams being put back together.
struct Assembly {
    /// The number of datagrams its frame headers announce.
    total: u16,
    /// Datagrams received, by sequence number (memory only for what arrived).
    parts: BTreeMap<u16, Vec<u8>>,
    bytes: usize,
}

/// One request id of a UDP flow.
struct UdpTxn {
    m: Matcher,
    /// Multi-datagram messages of each direction.
    parts: [Option<Assembly>; 2],
    last: u64,
}

/// One memcache UDP flow (client port ↔ server port).
pub struct MemcacheUdp {
    txns: HashMap<u16, UdpTxn>,
    limits: Limits,
    max: usize,
    /// Bound on the datagram bytes held for reassembly in this flow (`max_message_size`).
    max_bytes: usize,
    /// Those bytes now.
    held: usize,
    /// `udptransactiontimeout`, µs.
    timeout: Option<u64>,
}

fn udp_dropped() {
    monitor::inc(&METRICS.inspect_memcache_udp_dropped);
}

impl MemcacheUdp {
    /// The messages of one whole UDP payload (one or several datagrams).
    fn payload(
        &mut self,
        id: u16,
        dir: Dir,
        data: &[u8],
        cx: &mut Cx<'_>,
    ) -> Result<(), ParseError> {
        let Some(t) = self.txns.get_mut(&id) else {
            return Ok(());
        };
        let mut at = 0;
        while at < data.len() {
            match parser::message(&data[at..], dir == Dir::ToServer, &self.limits)? {
                Some(msg) if at + msg.len <= data.len() => {
                    at += msg.len;
                    t.m.on(msg, cx);
                }
                _ => return Err(ParseError("memcache: datagram ends inside a message")),
            }
        }
        Ok(())
    }

    fn forget_idle(&mut self, id: u16) {
        if self
            .txns
            .get(&id)
            .is_some_and(|t| t.m.idle() && t.parts.iter().all(Option::is_none))
        {
            self.txns.remove(&id);
        }
    }
}

impl UdpParser for MemcacheUdp {
    fn datagram(&mut self, dir: Dir, data: &[u8], cx: &mut Cx<'_>) -> Result<(), ParseError> {
        let Some((id, seq, total)) = parser::udp_header(data) else {
            return Err(ParseError(
                "memcache: datagram shorter than its frame header",
            ));
        };
        let body = &data[parser::UDP_HEADER..];
        if total == 0 || seq >= total {
            return Err(ParseError("memcache: bad frame header"));
        }
        if !self.txns.contains_key(&id) && self.txns.len() >= self.max {
            udp_dropped();
            return Ok(());
        }
        let (limits, max) = (self.limits, self.max);
        let t = self.txns.entry(id).or_insert_with(|| UdpTxn {
            m: Matcher::new(limits, max),
            parts: [None, None],
            last: cx.now,
        });
        t.last = cx.now;
        let result = if total == 1 {
            self.payload(id, dir, body, cx)
        } else {
            let d = usize::from(dir == Dir::ToClient);
            let a = t.parts[d].get_or_insert_with(|| Assembly {
                total,
                parts: BTreeMap::new(),
                bytes: 0,
            });
            let fits = self.held + body.len() <= self.max_bytes;
            if a.total != total || a.parts.contains_key(&seq) || !fits {
                // One of another message, a repeated datagram, or too many bytes held.
                udp_dropped();
                self.held -= a.bytes;
                t.parts[d] = None;
                self.forget_idle(id);
                return Ok(());
            }
            a.parts.insert(seq, body.to_vec());
            a.bytes += body.len();
            self.held += body.len();
            if a.parts.len() == usize::from(a.total) {
                let whole: Vec<u8> = a.parts.values().flatten().copied().collect();
                self.held -= a.bytes;
                t.parts[d] = None;
                self.payload(id, dir, &whole, cx)
            } else {
                Ok(())
            }
        };
        self.forget_idle(id);
        result
    }

    fn expire(&mut self, cx: &mut Cx<'_>) {
        let mut cx = with_timeout(cx, self.timeout);
        let now = cx.now;
        let timeout = cx.timeout;
        let held = &mut self.held;
        self.txns.retain(|_, t| {
            t.m.expire(&mut cx);
            if now.saturating_sub(t.last) >= timeout {
                for a in t.parts.iter_mut().filter_map(Option::take) {
                    udp_dropped();
                    *held -= a.bytes;
                }
                if let Some(m) = t.m.partial.take() {
                    t.m.correlate(m, &mut cx);
                }
            }
            !(t.m.idle() && t.parts.iter().all(Option::is_none))
        });
    }

    fn close(&mut self, cx: &mut Cx<'_>) {
        self.held = 0;
        for (_, mut t) in self.txns.drain() {
            t.m.close(cx);
        }
    }

    fn pending(&self) -> bool {
        !self.txns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::proto::Done;
    use crate::inspect::proto::testutil::{common, drive, drive_chunks, rises_by};
    use crate::inspect::tcp::Chunk;
    use parser::tests::bin_with;
    use serde_json::json;

    fn tcp(o: Options) -> Box<dyn TcpParser> {
        let e = Entry {
            options: o,
            ..Entry::default()
        };
        (<Proto as super::super::Protocol>::parsers(&e, &common())
            .tcp
            .unwrap())()
    }

    #[test]
    fn text_get_of_several_keys_merges_values_until_end() {
        let mut p = tcp(Options::default());
        let out = drive(
            p.as_mut(),
            &[
                (
                    Dir::ToServer,
                    b"set k1 0 0 2\r\nab\r\nget x k1 y\r\ndelete k9\r\n",
                ),
                (
                    Dir::ToClient,
                    b"STORED\r\nVALUE k1 0 2\r\nab\r\nEND\r\nNOT_FOUND\r\n",
                ),
            ],
            3,
        );
        assert_eq!(out.len(), 3);
        let get = out[1].object();
        assert_eq!(get["protocol_type"], "text");
        assert_eq!(get["request"]["keys"], serde_json::json!(["x", "k1", "y"]));
        assert_eq!(get["response"]["keys"], serde_json::json!(["k1"]));
        assert_eq!(get["response"]["bytes"], 2);
        assert_eq!(get["response"]["count_values"], 1);
        assert_eq!(get["response"]["command"], "VALUE");
        assert_eq!(out[1].status, status::OK);
        assert_eq!(out[2].status, status::ERROR);
        assert_eq!(out[2].object()["response"]["command"], "NOT_FOUND");
    }

    #[test]
    fn noreply_and_quit_need_no_response() {
        let mut p = tcp(Options::default());
        let out = drive(
            p.as_mut(),
            &[
                (Dir::ToServer, b"incr c 2 noreply\r\nversion\r\nquit\r\n"),
                (Dir::ToClient, b"VERSION 1.6.18\r\n"),
            ],
            1000,
        );
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|t| t.status == status::OK));
        assert_eq!(out[0].object()["request"]["noreply"], true);
        assert_eq!(out[0].object()["request"]["delta"], 2);
        assert_eq!(out[2].object()["response"]["version"], "1.6.18");
    }

    fn frame(id: u16, seq: u16, total: u16, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [id, seq, total, 0] {
            v.extend(x.to_be_bytes());
        }
        v.extend(body);
        v
    }

    #[test]
    fn udp_replies_of_several_datagrams_out_of_order() {
        let e = Entry::<Options>::default();
        let f = <Proto as super::super::Protocol>::parsers(&e, &common())
            .udp
            .unwrap();
        let mut p = f();
        let mut out = Vec::new();
        let mut cx = Cx {
            now: 1,
            timeout: 1_000_000,
            out: &mut out,
        };
        let reply = b"VALUE big 0 10\r\n0123456789\r\nEND\r\n";
        let (a, b) = reply.split_at(20);
        p.datagram(Dir::ToServer, &frame(3, 0, 1, b"get big\r\n"), &mut cx)
            .unwrap();
        assert!(p.pending());
        p.datagram(Dir::ToClient, &frame(3, 1, 2, b), &mut cx)
            .unwrap();
        assert!(cx.out.is_empty());
        p.datagram(Dir::ToClient, &frame(3, 0, 2, a), &mut cx)
            .unwrap();
        assert_eq!(out.len(), 1);
        let o = out[0].object();
        assert_eq!(o["response"]["bytes"], 10);
        assert_eq!(o["response"]["keys"], serde_json::json!(["big"]));
        assert_eq!(out[0].status, status::OK);
        assert!(!p.pending(), "nothing left once answered");
        // A datagram repeated, or announcing another count, drops the message (counted).
        let dropped = monitor::get(&METRICS.inspect_memcache_udp_dropped);
        let mut cx = Cx {
            now: 2,
            timeout: 1_000_000,
            out: &mut out,
        };
        p.datagram(Dir::ToServer, &frame(4, 0, 1, b"get big\r\n"), &mut cx)
            .unwrap();
        p.datagram(Dir::ToClient, &frame(4, 0, 2, a), &mut cx)
            .unwrap();
        p.datagram(Dir::ToClient, &frame(4, 0, 2, a), &mut cx)
            .unwrap();
        p.datagram(Dir::ToClient, &frame(4, 1, 3, b), &mut cx)
            .unwrap();
        p.close(&mut cx);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].status, status::ERROR, "the get never got its reply");
        assert!(monitor::get(&METRICS.inspect_memcache_udp_dropped) > dropped);
    }

    /// The parsers of a memcache entry of `connbeat.protocols` with these keys (each
    /// written `, key: value`), read by name from the configuration.
    fn configured(keys: &str) -> Parsers {
        let c = crate::config::from_yaml_str(
            &format!(
                "output.console: {{}}\nconnbeat.protocols:\n  \
                 - {{type: memcache, ports: [11211]{keys}}}"
            ),
            &[],
            &|_| None,
        )
        .unwrap();
        c.connbeat.protocols[0].parsers(&common())
    }

    /// One datagram, captured at `now`.
    fn datagram(p: &mut dyn UdpParser, dir: Dir, d: &[u8], now: u64, out: &mut Vec<Done>) {
        let mut cx = Cx {
            now,
            timeout: 10_000_000,
            out,
        };
        p.datagram(dir, d, &mut cx).unwrap();
    }

    fn expire_udp(p: &mut dyn UdpParser, now: u64, out: &mut Vec<Done>) {
        let mut cx = Cx {
            now,
            timeout: 10_000_000,
            out,
        };
        p.expire(&mut cx);
    }

    #[test]
    fn values_beyond_maxvalues_and_stats_beyond_the_bound_are_counted() {
        // Two of the three values are not kept.
        rises_by(&METRICS.inspect_memcache_values_dropped, 2, || {
            let mut p = configured(", maxvalues: 1").tcp.unwrap()();
            let out = drive(
                p.as_mut(),
                &[
                    (Dir::ToServer, b"get a b c\r\n"),
                    (
                        Dir::ToClient,
                        b"VALUE a 0 2\r\nxa\r\nVALUE b 0 2\r\nxb\r\nVALUE c 0 2\r\nxc\r\nEND\r\n",
                    ),
                ],
                1000,
            );
            assert_eq!(out.len(), 1);
            let r = &out[0].object()["response"];
            assert_eq!(r["keys"], json!(["a", "b", "c"]));
            assert_eq!(r["count_values"], 3);
            assert_eq!(r["bytes"], 6);
            assert_eq!(r["values"], json!(["eGE="]), "the first value only, base64");
        });

        // One stats response holds at most MAX_STATS entries: four more are dropped.
        let mut reply = String::new();
        for i in 0..MAX_STATS + 4 {
            reply.push_str(&format!("STAT s{i} {i}\r\n"));
        }
        reply.push_str("END\r\n");
        rises_by(&METRICS.inspect_memcache_values_dropped, 4, || {
            let mut p = configured("").tcp.unwrap()();
            let out = drive(
                p.as_mut(),
                &[
                    (Dir::ToServer, b"stats\r\n"),
                    (Dir::ToClient, reply.as_bytes()),
                ],
                1 << 16,
            );
            assert_eq!(out.len(), 1);
            let stats = &out[0].object()["response"]["stats"];
            assert_eq!(stats.as_array().map(Vec::len), Some(MAX_STATS));
            assert_eq!(stats[MAX_STATS - 1]["name"], format!("s{}", MAX_STATS - 1));
        });
    }

    #[test]
    fn udp_datagrams_over_the_bounds_are_dropped_and_counted() {
        let dropped = || monitor::get(&METRICS.inspect_memcache_udp_dropped);
        // A reply of two datagrams (20 and 13 bytes): held until whole when
        // max_message_size allows its 33 bytes, dropped when it does not.
        let reply = b"VALUE big 0 10\r\n0123456789\r\nEND\r\n";
        let (a, b) = reply.split_at(20);
        for (bound, whole) in [(33, true), (32, false)] {
            let before = dropped();
            let keys = format!(", max_message_size: {bound}");
            let mut p = configured(&keys).udp.unwrap()();
            let mut out = Vec::new();
            let get = frame(1, 0, 1, b"get big\r\n");
            datagram(p.as_mut(), Dir::ToServer, &get, 1, &mut out);
            datagram(p.as_mut(), Dir::ToClient, &frame(1, 0, 2, a), 2, &mut out);
            datagram(p.as_mut(), Dir::ToClient, &frame(1, 1, 2, b), 3, &mut out);
            if whole {
                assert_eq!(out.len(), 1);
                assert_eq!(out[0].status, status::OK);
                assert_eq!(out[0].object()["response"]["bytes"], 10);
                continue;
            }
            assert!(out.is_empty(), "the reply was dropped, the get still waits");
            assert!(dropped() > before);
            let mut cx = Cx {
                now: 4,
                timeout: 10_000_000,
                out: &mut out,
            };
            p.close(&mut cx);
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].status, status::ERROR);
            assert!(out[0].object().get("response").is_none());
        }

        // More request ids waiting than max_pending (8): the ninth (id 200) is dropped,
        // and counted once.
        let nine_gets = |p: &mut dyn UdpParser, out: &mut Vec<Done>| {
            for id in (100..108u16).chain([200]) {
                datagram(p, Dir::ToServer, &frame(id, 0, 1, b"get k\r\n"), 1, out);
            }
        };
        rises_by(&METRICS.inspect_memcache_udp_dropped, 1, || {
            nine_gets(configured("").udp.unwrap()().as_mut(), &mut Vec::new());
        });
        let mut p = configured("").udp.unwrap()();
        let mut out = Vec::new();
        nine_gets(p.as_mut(), &mut out);
        // Its reply pairs with nothing; the eight others fail when the flow ends.
        datagram(
            p.as_mut(),
            Dir::ToClient,
            &frame(200, 0, 1, b"END\r\n"),
            2,
            &mut out,
        );
        assert!(out.is_empty());
        let mut cx = Cx {
            now: 3,
            timeout: 10_000_000,
            out: &mut out,
        };
        p.close(&mut cx);
        assert_eq!(out.len(), 8);
        assert!(out.iter().all(|t| t.status == status::ERROR));
    }

    #[test]
    fn udptransactiontimeout_read_by_name_expires_requests_and_unfinished_replies() {
        let dropped = || monitor::get(&METRICS.inspect_memcache_udp_dropped);
        let before = dropped();
        let mut p = configured(", udptransactiontimeout: 1s").udp.unwrap()();
        let mut out = Vec::new();
        let reply = b"VALUE big 0 10\r\n0123456789\r\nEND\r\n";
        datagram(
            p.as_mut(),
            Dir::ToServer,
            &frame(7, 0, 1, b"get big\r\n"),
            10,
            &mut out,
        );
        // The first of two datagrams; the second never comes.
        datagram(
            p.as_mut(),
            Dir::ToClient,
            &frame(7, 0, 2, &reply[..20]),
            10,
            &mut out,
        );
        expire_udp(p.as_mut(), 10 + 999_999, &mut out);
        assert!(out.is_empty());
        assert!(p.pending());
        expire_udp(p.as_mut(), 10 + 1_000_000, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].status, status::ERROR);
        assert_eq!(out[0].notes, vec![txn::NOTE_TIMEOUT.to_string()]);
        assert_eq!(out[0].object()["request"]["keys"], json!(["big"]));
        assert!(!p.pending());
        assert!(dropped() > before, "the unfinished reply is counted");

        // Without the key, the protocol's timeout (10 s here) applies.
        let mut p = configured("").udp.unwrap()();
        let mut out = Vec::new();
        datagram(
            p.as_mut(),
            Dir::ToServer,
            &frame(7, 0, 1, b"get big\r\n"),
            10,
            &mut out,
        );
        expire_udp(p.as_mut(), 10 + 1_000_000, &mut out);
        assert!(out.is_empty());
        expire_udp(p.as_mut(), 10 + 10_000_000, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn tcptransactiontimeout_read_by_name_expires_an_unanswered_request() {
        let expire = |p: &mut dyn TcpParser, now: u64, out: &mut Vec<Done>| {
            let mut cx = Cx {
                now,
                timeout: 10_000_000,
                out,
            };
            p.expire(&mut cx);
        };
        let get: &[u8] = b"get k\r\n";
        let mut p = configured(", tcptransactiontimeout: 2s").tcp.unwrap()();
        let mut out = drive_chunks(p.as_mut(), &[(Dir::ToServer, Chunk::Data(get))], false);
        assert!(out.is_empty());
        // drive_chunks captures its first chunk at 1_001_000 µs.
        let start = 1_001_000;
        expire(p.as_mut(), start + 1_999_999, &mut out);
        assert!(out.is_empty());
        expire(p.as_mut(), start + 2_000_000, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].start, start);
        assert_eq!(out[0].status, status::ERROR);
        assert_eq!(out[0].notes, vec![txn::NOTE_TIMEOUT.to_string()]);
        assert_eq!(out[0].object()["request"]["keys"], json!(["k"]));

        let mut p = configured("").tcp.unwrap()();
        let mut out = drive_chunks(p.as_mut(), &[(Dir::ToServer, Chunk::Data(get))], false);
        expire(p.as_mut(), start + 2_000_000, &mut out);
        assert!(out.is_empty(), "the protocol's timeout (10 s here) applies");
        expire(p.as_mut(), start + 10_000_000, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn options_read_by_name_keep_and_cut_values_and_report_unknown_commands() {
        let req: &[u8] = b"get a b\r\nfrobnicate x\r\n";
        let resp: &[u8] = b"VALUE a 0 5\r\nhello\r\nVALUE b 0 5\r\nworld\r\nEND\r\nERROR\r\n";
        let keys = ", parseunknown: true, maxvalues: 1, maxbytespervalue: 3";
        let mut p = configured(keys).tcp.unwrap()();
        let out = drive(
            p.as_mut(),
            &[(Dir::ToServer, req), (Dir::ToClient, resp)],
            1000,
        );
        assert_eq!(out.len(), 2);
        let get = out[0].object();
        assert_eq!(
            get["response"]["values"],
            json!(["aGVs"]),
            "\"hel\" in base64"
        );
        assert_eq!(get["response"]["count_values"], 2);
        assert_eq!(get["response"]["bytes"], 10);
        assert_eq!(out[0].status, status::OK);
        let unknown = out[1].object();
        assert_eq!(unknown["request"]["command"], "UNKNOWN");
        assert_eq!(unknown["request"]["type"], "UNKNOWN");
        assert_eq!(unknown["request"]["line"], "frobnicate x");
        assert_eq!(unknown["response"]["command"], "ERROR");
        assert_eq!(out[1].status, status::ERROR);

        // Packetbeat's defaults: no values kept, an unknown command is a parse error.
        let mut p = configured("").tcp.unwrap()();
        let out = drive(
            p.as_mut(),
            &[(Dir::ToServer, req), (Dir::ToClient, resp)],
            1000,
        );
        assert_eq!(out.len(), 1);
        let get = out[0].object();
        assert!(get["response"].get("values").is_none());
        assert_eq!(get["response"]["count_values"], 2);
        // All values, each whole, with a negative maxvalues and no maxbytespervalue.
        let mut p = configured(", maxvalues: -1").tcp.unwrap()();
        let out = drive(
            p.as_mut(),
            &[(Dir::ToServer, req), (Dir::ToClient, resp)],
            1000,
        );
        assert_eq!(
            out[0].object()["response"]["values"],
            json!(["aGVsbG8=", "d29ybGQ="])
        );
    }

    #[test]
    fn binary_quiet_multiget_pairs_hits_and_publishes_misses_alone() {
        // The client asks for a, b and c with GetKQ (opaques 1 to 3), then a No-op (4),
        // then a plain GetK of d (5). The server answers the hit b, the No-op, and the
        // miss of d (a GetK miss carries the key and status 1, Key not found).
        let flags = 5u32.to_be_bytes();
        let mut req = Vec::new();
        for (opaque, key) in [(1, b"a"), (2, b"b"), (3, b"c")] {
            req.extend(bin_with(0x80, 0x0d, opaque, &[], key, b"", 0));
        }
        req.extend(bin_with(0x80, 0x0a, 4, &[], b"", b"", 0));
        req.extend(bin_with(0x80, 0x0c, 5, &[], b"d", b"", 0));
        let mut resp = bin_with(0x81, 0x0d, 2, &flags, b"b", b"vb", 0);
        resp.extend(bin_with(0x81, 0x0a, 4, &[], b"", b"", 0));
        resp.extend(bin_with(0x81, 0x0c, 5, &[], b"d", b"", 1));
        let mut p = tcp(Options::default());
        let out = drive(
            p.as_mut(),
            &[(Dir::ToServer, &req[..]), (Dir::ToClient, &resp[..])],
            7,
        );
        assert_eq!(out.len(), 5);
        let objs: Vec<_> = out.iter().map(|t| t.object()).collect();
        let keys: Vec<_> = objs.iter().map(|o| o["request"]["keys"].clone()).collect();
        assert_eq!(
            keys,
            [
                json!(["a"]),
                json!(["b"]),
                json!(["c"]),
                json!(null),
                json!(["d"])
            ]
        );
        let opcodes: Vec<_> = objs
            .iter()
            .map(|o| o["request"]["opcode"].clone())
            .collect();
        assert_eq!(opcodes, ["GetKQ", "GetKQ", "GetKQ", "No-op", "GetK"]);
        let statuses: Vec<_> = out.iter().map(|t| t.status).collect();
        assert_eq!(
            statuses,
            [
                status::OK,
                status::OK,
                status::OK,
                status::OK,
                status::ERROR
            ]
        );
        // The misses a and c: quiet, no response, published as they stand.
        for i in [0, 2] {
            assert_eq!(objs[i]["request"]["quiet"], true);
            assert!(objs[i].get("response").is_none(), "{}", objs[i]);
            assert!(out[i].end.is_none());
            assert!(out[i].notes.is_empty());
        }
        // The hit b.
        let hit = &objs[1]["response"];
        assert_eq!(hit["keys"], json!(["b"]));
        assert_eq!(hit["opaque"], 2);
        assert_eq!(hit["status"], "Success");
        assert_eq!(hit["flags"], 5);
        assert_eq!(hit["bytes"], 2);
        assert_eq!(hit["count_values"], 1);
        assert!(out[1].end.is_some());
        assert_eq!(objs[3]["response"]["opcode"], "No-op");
        assert_eq!(objs[3]["protocol_type"], "binary");
        let miss = &objs[4]["response"];
        assert_eq!(miss["status"], "Key not found");
        assert_eq!(miss["status_code"], 1);
    }

    #[test]
    fn binary_touch_request_and_response() {
        // Touch: extras are the new expiration; the response has no extras, key or value
        // on success, and the status (and its text as the value) on a miss.
        let mut req = bin_with(0x80, 0x1c, 9, &300u32.to_be_bytes(), b"k", b"", 0);
        req.extend(bin_with(
            0x80,
            0x1c,
            10,
            &60u32.to_be_bytes(),
            b"gone",
            b"",
            0,
        ));
        let mut resp = bin_with(0x81, 0x1c, 9, &[], b"", b"", 0);
        resp.extend(bin_with(0x81, 0x1c, 10, &[], b"", b"Not found", 1));
        let mut p = tcp(Options::default());
        let out = drive(
            p.as_mut(),
            &[(Dir::ToServer, &req[..]), (Dir::ToClient, &resp[..])],
            5,
        );
        assert_eq!(out.len(), 2);
        let touch = out[0].object();
        let r = &touch["request"];
        assert_eq!(r["command"], "touch");
        assert_eq!(r["type"], "Store");
        assert_eq!(r["opcode"], "Touch");
        assert_eq!(r["opcode_value"], 0x1c);
        assert_eq!(r["quiet"], false);
        assert_eq!(r["keys"], json!(["k"]));
        assert_eq!(r["exptime"], 300);
        assert_eq!(touch["response"]["status"], "Success");
        assert_eq!(touch["response"]["opcode"], "Touch");
        assert_eq!(out[0].status, status::OK);
        assert_eq!((out[0].bytes_in, out[0].bytes_out), (24 + 4 + 1, 24));
        let miss = out[1].object();
        assert_eq!(miss["request"]["keys"], json!(["gone"]));
        assert_eq!(miss["request"]["exptime"], 60);
        assert_eq!(miss["response"]["status"], "Key not found");
        assert_eq!(out[1].status, status::ERROR);
    }
}

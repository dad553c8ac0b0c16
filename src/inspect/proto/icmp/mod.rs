//! ICMP v4 and v6: an echo (or timestamp, information, address mask) request and its reply
//! make one transaction; every other message (unreachable, time exceeded, router and
//! neighbour messages) is an event of its own. Error reports have `status: Error`, as has
//! a request that got no answer within the transaction timeout.
//!
//! ICMP is not carried on ports: the engine hands every ICMP message of the capture to the
//! [`Tracker`] when a `type: icmp` entry is enabled (its `ports` are not used).

pub mod message;

use super::txn::{Txn, TxnObject, status};
use super::{Common, Entry, Parsers};
use crate::event::Event;
use crate::fast_hash::Fx;
use crate::inspect::decode::IcmpHeader;
use crate::monitor::{self, METRICS};
use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;

/// The registry's handle on ICMP.
pub struct Proto;

/// The options of `type: icmp`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Options {
    /// Bound on requests waiting for their reply, all hosts together; beyond it the
    /// oldest is published unanswered.
    pub max_pending: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_pending: 10_000,
        }
    }
}

impl super::Protocol for Proto {
    const NAME: &'static str = "icmp";
    const USES_PORTS: bool = false;
    type Options = Options;
    /// No TCP or UDP parser: the engine feeds ICMP to a [`Tracker`] itself.
    fn parsers(_: &Entry<Options>, _: &Common) -> Parsers {
        Parsers::default()
    }
}

/// Packetbeat's notes.
pub const NOTE_DUPLICATE: &str = "Another request with the same Id and Seq was received so this request was closed without receiving a response.";
pub const NOTE_ORPHAN_REQUEST: &str = "Request was received without an associated response.";
pub const NOTE_ORPHAN_RESPONSE: &str = "Response was received without an associated request.";

/// One message of a transaction.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Message {
    pub message: Cow<'static, str>,
    #[serde(rename = "type")]
    pub icmp_type: u8,
    pub code: u8,
}

/// The `icmp` object.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct IcmpTxn {
    pub version: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<Message>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<Message>,
}

impl IcmpTxn {
    /// The type and code the event's Community ID is computed from: the request's, else
    /// the response's.
    pub fn type_code(&self) -> (u8, u8) {
        self.request
            .as_ref()
            .or(self.response.as_ref())
            .map_or((0, 0), |m| (m.icmp_type, m.code))
    }

    fn has_error(&self) -> bool {
        let v = self.version;
        match (&self.request, &self.response) {
            (None, _) => true,
            (Some(q), r) => {
                message::is_error_type(v, q.icmp_type)
                    || r.as_ref()
                        .is_some_and(|r| message::is_error_type(v, r.icmp_type))
                    || (r.is_none() && message::is_pair_type(v, q.icmp_type))
            }
        }
    }
}

impl TxnObject for IcmpTxn {
    fn write_classic(&self, name: &'static str, e: &mut Event) {
        e.push_field(name, self);
    }
}

/// A finished ICMP transaction and the addresses of its request (or of the request its
/// lone response answers): `src` asked, `dst` was asked.
pub struct Finished {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub txn: Txn<IcmpTxn>,
}

/// A request waiting for its reply: (version, src, dst, id, seq).
type Key = (u8, IpAddr, IpAddr, u16, u16);

/// Pairs requests with replies, bounded, and times out requests never answered.
pub struct Tracker {
    pending: HashMap<Key, Txn<IcmpTxn>, Fx>,
    max: usize,
    timeout_us: u64,
    pub out: Vec<Finished>,
}

fn msg(h: &IcmpHeader) -> Message {
    Message {
        message: message::name(h.version, h.icmp_type, h.code),
        icmp_type: h.icmp_type,
        code: h.code,
    }
}

impl Tracker {
    pub fn new(max: usize, timeout_us: u64) -> Tracker {
        Tracker {
            pending: HashMap::default(),
            max: max.max(1),
            timeout_us,
            out: Vec::new(),
        }
    }

    fn finish(&mut self, k: &Key, mut txn: Txn<IcmpTxn>) {
        txn.status = if txn.fields.has_error() {
            status::ERROR
        } else {
            status::OK
        };
        self.out.push(Finished {
            src: k.1,
            dst: k.2,
            txn,
        });
    }

    /// One message from `src` to `dst` at `now` (µs).
    pub fn message(&mut self, src: IpAddr, dst: IpAddr, h: &IcmpHeader, now: u64) {
        let v = h.version;
        let (id, seq) = if message::is_pair_type(v, h.icmp_type) {
            (h.id, h.seq)
        } else {
            (0, 0)
        };
        if message::is_request(v, h.icmp_type) {
            let k = (v, src, dst, id, seq);
            if let Some(mut old) = self.pending.remove(&k) {
                old.notes.push(NOTE_DUPLICATE.into());
                monitor::inc(&METRICS.inspect_txn_no_response);
                self.finish(&k, old);
            }
            let mut txn: Txn<IcmpTxn> = Txn::new(now, h.payload_len as u64);
            txn.path = Some(dst.to_string());
            txn.fields.version = v;
            txn.fields.request = Some(msg(h));
            if !message::is_pair_type(v, h.icmp_type) {
                self.finish(&k, txn);
                return;
            }
            if self.pending.len() >= self.max {
                self.evict_oldest();
            }
            self.pending.insert(k, txn);
        } else {
            let k = (v, dst, src, id, seq);
            let mut txn = match self.pending.remove(&k) {
                Some(t) => t,
                None => {
                    monitor::inc(&METRICS.inspect_unmatched_responses);
                    let mut t: Txn<IcmpTxn> = Txn::new(now, 0);
                    t.path = Some(src.to_string());
                    t.fields.version = v;
                    t.notes.push(NOTE_ORPHAN_RESPONSE.into());
                    t
                }
            };
            txn.end = Some(now);
            txn.bytes_out = h.payload_len as u64;
            txn.fields.response = Some(msg(h));
            self.finish(&k, txn);
        }
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .pending
            .iter()
            .min_by_key(|(_, t)| t.start)
            .map(|(k, _)| *k);
        if let Some(k) = oldest
            && let Some(t) = self.pending.remove(&k)
        {
            monitor::inc(&METRICS.inspect_icmp_pending_evicted);
            self.unanswered(&k, t);
        }
    }

    fn unanswered(&mut self, k: &Key, mut t: Txn<IcmpTxn>) {
        t.notes.push(NOTE_ORPHAN_REQUEST.into());
        monitor::inc(&METRICS.inspect_txn_no_response);
        self.finish(k, t);
    }

    /// Requests older than the timeout are published unanswered.
    pub fn expire(&mut self, now: u64) {
        let timeout = self.timeout_us;
        let old: Vec<Key> = self
            .pending
            .iter()
            .filter(|(_, t)| now.saturating_sub(t.start) >= timeout)
            .map(|(k, _)| *k)
            .collect();
        let mut old: Vec<(Key, Txn<IcmpTxn>)> = old
            .into_iter()
            .filter_map(|k| self.pending.remove(&k).map(|t| (k, t)))
            .collect();
        old.sort_by_key(|(_, t)| t.start);
        for (k, t) in old {
            self.unanswered(&k, t);
        }
    }

    /// End of input: every waiting request is published unanswered.
    pub fn close(&mut self) {
        self.expire(u64::MAX);
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(version: u8, t: u8, code: u8, id: u16, seq: u16, len: usize) -> IcmpHeader {
        IcmpHeader {
            version,
            icmp_type: t,
            code,
            id,
            seq,
            payload_len: len,
        }
    }

    #[test]
    fn echo_pairs_and_errors_stand_alone() {
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let mut t = Tracker::new(8, 1_000_000);
        t.message(a, b, &h(4, 8, 0, 5, 1, 4), 10);
        assert!(t.out.is_empty());
        t.message(b, a, &h(4, 0, 0, 5, 1, 4), 30);
        t.message(b, a, &h(4, 3, 1, 0, 0, 28), 40);
        t.message(a, b, &h(4, 8, 0, 5, 2, 4), 50);
        t.expire(2_000_000);
        let out: Vec<_> = t.out.drain(..).collect();
        assert_eq!(out.len(), 3);
        let echo = &out[0];
        assert_eq!((echo.src, echo.dst, echo.txn.status), (a, b, status::OK));
        assert_eq!((echo.txn.start, echo.txn.end), (10, Some(30)));
        assert_eq!((echo.txn.bytes_in, echo.txn.bytes_out), (4, 4));
        assert_eq!(
            echo.txn.fields.response.as_ref().unwrap().message,
            "EchoReply"
        );
        let unreach = &out[1];
        assert_eq!(
            (unreach.src, unreach.dst, unreach.txn.status),
            (b, a, status::ERROR)
        );
        assert!(unreach.txn.fields.response.is_none());
        let lost = &out[2];
        assert_eq!(lost.txn.status, status::ERROR);
        assert_eq!(lost.txn.notes, vec![NOTE_ORPHAN_REQUEST.to_string()]);
    }

    #[test]
    fn icmp_takes_no_ports() {
        let load = |y: &str| {
            crate::config::from_yaml_str(&format!("output.console: {{}}\n{y}"), &[], &|_| None)
        };
        let c = load("connbeat.protocols: [{type: icmp}]").unwrap();
        assert!(crate::inspect::enabled(&c));
        let e = load("connbeat.protocols: [{type: icmp, ports: [7]}]")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("connbeat.protocols.0.ports") && e.contains("takes no ports"),
            "{e}"
        );
    }

    #[test]
    fn orphan_replies_duplicates_and_the_bound() {
        let (a, b): (IpAddr, IpAddr) = ("::1".parse().unwrap(), "::2".parse().unwrap());
        let mut t = Tracker::new(2, 1_000_000);
        t.message(b, a, &h(6, 129, 0, 1, 1, 0), 5);
        assert_eq!(t.out[0].txn.notes, vec![NOTE_ORPHAN_RESPONSE.to_string()]);
        assert_eq!((t.out[0].src, t.out[0].dst), (a, b));
        t.message(a, b, &h(6, 128, 0, 1, 1, 0), 10);
        t.message(a, b, &h(6, 128, 0, 1, 1, 0), 11);
        assert_eq!(t.out[1].txn.notes, vec![NOTE_DUPLICATE.to_string()]);
        t.message(a, b, &h(6, 128, 0, 1, 2, 0), 12);
        t.message(a, b, &h(6, 128, 0, 1, 3, 0), 13);
        assert_eq!(t.pending(), 2, "the oldest went when the bound was reached");
        assert_eq!(t.out.len(), 3);
        t.message(a, b, &h(6, 135, 0, 0, 0, 24), 14);
        assert_eq!(
            t.out[3].txn.status,
            status::OK,
            "a neighbour solicitation is no error"
        );
        t.close();
        assert_eq!(t.out.len(), 6);
    }
}

//! The sort window: puts each TCP connection's segments back in time order before they are
//! decoded.
//!
//! A capture on a multi-core host is a little out of time order: the two directions of a
//! connection go through different CPUs, so a response's first segment can be read before
//! the request it answers. Decoding in capture order would then pair nothing. Every segment
//! is held for `connbeat.interfaces.sort_window` of capture time after it arrived, in its
//! connection's queue, ordered by timestamp; when its time is up it is decoded with every
//! earlier-stamped segment of the connection. Ordering is per connection and time is
//! counted from arrival, so two capture sources merged with skewed clocks still decode
//! each connection as if sorted. On top of time, one causal rule: a data segment goes
//! before any held segment of the other direction that acknowledges it (equal or skewed
//! timestamps cannot put an answer before its question).
//!
//! This is not the sequence-space reordering of [`super::tcp`] (`reorder_window_kb`), which
//! fixes the order of bytes within one direction.

use super::decode::TcpSegment;
use super::decode::tcpflags::{ACK, SYN};
use crate::fast_hash::Fx;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::SocketAddr;

/// One segment waiting in the window, with an owned copy of its payload.
pub struct Held {
    /// Capture timestamp.
    pub ts: u64,
    /// Capture clock (the latest timestamp of all packets) when it arrived.
    pub arrival: u64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    seq: u32,
    ack: u32,
    flags: u8,
    missing: usize,
    pub payload: Vec<u8>,
}

impl Held {
    /// The segment as the decoder gave it.
    pub fn segment(&self) -> TcpSegment<'_> {
        TcpSegment {
            src_port: self.src.port(),
            dst_port: self.dst.port(),
            seq: self.seq,
            ack: self.ack,
            flags: self.flags,
            payload: &self.payload,
            missing: self.missing,
        }
    }

    /// True when this segment acknowledges bytes of `other` (the opposite direction): its
    /// ACK lies past the start of `other`, by at most `other`'s length and a 64 KiB window
    /// (further is another connection's number).
    fn acknowledges(&self, other: &Held) -> bool {
        let past = u64::from(self.ack.wrapping_sub(other.seq));
        self.flags & ACK != 0
            && self.src == other.dst
            && past > 0
            && past <= (other.payload.len() + other.missing) as u64 + 65535
    }
}

/// Queues of held segments, one per connection, and the order in which they fall due.
pub struct SortWindow<K> {
    window: u64,
    queues: HashMap<K, VecDeque<Held>, Fx>,
    /// (arrival, connection) of every held segment, oldest first.
    due: VecDeque<(u64, K)>,
    /// Payload buffers of decoded segments, and queues of forgotten connections, reused.
    pool: Vec<Vec<u8>>,
    spare: Vec<VecDeque<Held>>,
    batch: Vec<Held>,
}

const POOL: usize = 4096;
/// How many held segments back a question may move before its answers.
const CAUSAL_SCAN: usize = 16;

impl<K: Hash + Eq + Copy> SortWindow<K> {
    /// A window of `window_us` microseconds; 0 disables holding.
    pub fn new(window_us: u64) -> Self {
        SortWindow {
            window: window_us,
            queues: HashMap::default(),
            due: VecDeque::new(),
            pool: Vec::new(),
            spare: Vec::new(),
            batch: Vec::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.window > 0
    }

    /// Holds a copy of `t` (captured at `ts`, arriving when the capture clock reads
    /// `arrival`) in the queue of connection `k`.
    pub fn hold(
        &mut self,
        k: K,
        ts: u64,
        arrival: u64,
        src: SocketAddr,
        dst: SocketAddr,
        t: &TcpSegment<'_>,
    ) {
        let mut payload = self.pool.pop().unwrap_or_default();
        payload.extend_from_slice(t.payload);
        let h = Held {
            ts,
            arrival,
            src,
            dst,
            seq: t.seq,
            ack: t.ack,
            flags: t.flags,
            missing: t.missing,
            payload,
        };
        let spare = &mut self.spare;
        let q = self
            .queues
            .entry(k)
            .or_insert_with(|| spare.pop().unwrap_or_default());
        // After every segment stamped earlier or at the same time...
        let mut at = q.iter().rposition(|o| o.ts <= h.ts).map_or(0, |i| i + 1);
        // ...but before any answer to its own bytes (looking no further back than the
        // connection's SYN: an earlier connection on the same ports is another story).
        // Acknowledgements only grow, so the scan stops at the first segment of the other
        // direction that does not acknowledge it (and after a few steps in any case).
        if !h.payload.is_empty() {
            for i in (at.saturating_sub(CAUSAL_SCAN)..at).rev() {
                let o = &q[i];
                if o.flags & SYN != 0 {
                    break;
                }
                if o.src != h.src {
                    if !o.acknowledges(&h) {
                        break;
                    }
                    at = i;
                }
            }
        }
        q.insert(at, h);
        self.due.push_back((arrival, k));
    }

    /// The next connection with a segment whose time is up at `now`, and the arrival time
    /// up to which its segments go.
    pub fn due(&mut self, now: u64) -> Option<(K, u64)> {
        let &(arrival, k) = self.due.front()?;
        if arrival.saturating_add(self.window) > now {
            return None;
        }
        self.due.pop_front();
        Some((k, arrival))
    }

    /// Takes, in order, the segments of `k` up to the last one that arrived at or before
    /// `upto` (everything stamped earlier goes with it). Hand the batch back with
    /// [`SortWindow::give_back`].
    pub fn take(&mut self, k: &K, upto: u64) -> Vec<Held> {
        let mut batch = std::mem::take(&mut self.batch);
        if let Some(q) = self.queues.get_mut(k) {
            if q.len() == 1 {
                // The usual case: one segment, in order.
                if q[0].arrival <= upto {
                    batch.extend(q.pop_front());
                }
            } else if let Some(last) = q.iter().rposition(|h| h.arrival <= upto) {
                batch.extend(q.drain(..=last));
            }
            // An empty queue is forgotten, its allocation kept for the next connection.
            if q.is_empty()
                && let Some(q) = self.queues.remove(k)
                && self.spare.len() < POOL
            {
                self.spare.push(q);
            }
        }
        batch
    }

    /// Returns a decoded segment's buffer to the pool.
    pub fn recycle(&mut self, mut h: Held) {
        if self.pool.len() < POOL {
            h.payload.clear();
            self.pool.push(h.payload);
        }
    }

    /// Returns the (emptied) batch vector of [`SortWindow::take`].
    pub fn give_back(&mut self, mut batch: Vec<Held>) {
        batch.clear();
        self.batch = batch;
    }

    /// Segments held now.
    pub fn len(&self) -> usize {
        self.queues.values().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const PSH: u8 = 0x08;

    fn seg(seq: u32, ack: u32, flags: u8, payload: &[u8]) -> TcpSegment<'_> {
        TcpSegment {
            src_port: 0,
            dst_port: 0,
            seq,
            ack,
            flags,
            payload,
            missing: 0,
        }
    }

    const C: &str = "10.0.0.1:40000";
    const S: &str = "10.0.0.2:80";

    fn order(w: &mut SortWindow<u8>, now: u64) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        while let Some((k, upto)) = w.due(now) {
            let mut b = w.take(&k, upto);
            out.extend(b.drain(..).map(|h| (h.ts, h.seq)));
            w.give_back(b);
        }
        out
    }

    #[test]
    fn holds_for_the_window_and_releases_in_time_order() {
        let (c, s) = (C.parse().unwrap(), S.parse().unwrap());
        let mut w = SortWindow::new(100);
        w.hold(1, 50, 50, c, s, &seg(1, 0, ACK, b"a"));
        w.hold(1, 40, 60, s, c, &seg(7, 0, ACK, b"b"));
        w.hold(2, 10, 60, c, s, &seg(9, 0, ACK, b"c"));
        assert_eq!(order(&mut w, 149), vec![]);
        // Arrived at 50: due at 150, and the earlier-stamped one goes with it.
        assert_eq!(order(&mut w, 150), vec![(40, 7), (50, 1)]);
        assert_eq!(w.len(), 1);
        assert_eq!(order(&mut w, 160), vec![(10, 9)]);
        assert!(w.is_empty());
    }

    #[test]
    fn a_question_goes_before_the_answer_that_acknowledges_it() {
        let (c, s) = (C.parse().unwrap(), S.parse().unwrap());
        let mut w = SortWindow::new(100);
        // The response (acknowledging request bytes 1000..1010) stamped before the request.
        w.hold(
            1,
            20,
            20,
            s,
            c,
            &seg(5000, 1010, ACK | PSH, b"HTTP/1.1 200"),
        );
        w.hold(1, 21, 21, c, s, &seg(1000, 5000, ACK | PSH, b"GET / HTTP"));
        // An ACK stamped earlier than the request, acknowledging nothing new: stays first.
        w.hold(1, 10, 22, s, c, &seg(5000, 1000, ACK, b""));
        assert_eq!(
            order(&mut w, 1000),
            vec![(10, 5000), (21, 1000), (20, 5000)]
        );
    }
}

//! Per-direction TCP reassembly: turns segments as captured into the byte stream the
//! application wrote, with holes reported instead of hidden.
//!
//! Hand-written because no maintained Rust crate reassembles passively observed TCP (the
//! stacks, smoltcp included, reassemble only their own connections and would ACK, retransmit
//! and refuse what a passive observer must simply note). The rules:
//! - the first segment seen sets the expected sequence number (a SYN sets it to ISN+1), so a
//!   capture that starts mid-connection simply starts there; a new connection on the same
//!   addresses and ports (a SYN at another ISN) is the engine's business: it starts a new
//!   [`HalfStream`] rather than feeding this one;
//! - sequence numbers are compared with wrap-around (RFC 1982 serial arithmetic);
//! - data already delivered (retransmissions, overlaps) is trimmed, not delivered twice;
//! - a segment ahead of the expected one is kept, copied, inside a window of `window` bytes
//!   and `max_ooo_bytes` of stored data per direction and the shared [`Budget`]; when a bound
//!   is hit, or the connection closes, the hole before the earliest stored segment is
//!   declared a [`Chunk::Gap`] and delivery continues after it;
//! - a segment further ahead than the window is a gap only when the peer acknowledged bytes
//!   that far (so they really were sent); otherwise it belongs to no byte of this stream (a
//!   stale packet of an earlier connection on the same ports) and is ignored and counted;
//! - bytes the capture cut off (snaplen, a truncated file) are a gap too;
//! - FIN is delivered once every byte before it has been; a FIN outside the window is
//!   ignored like any other stranger.

/// What the reassembler hands upwards, in stream order.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk<'a> {
    Data(&'a [u8]),
    /// This many bytes of the stream were never seen.
    Gap(usize),
    Fin,
}

/// Bounds on one direction's out-of-order storage.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How far ahead of the expected sequence number a segment may be and still be kept.
    pub window: u32,
    /// Stored out-of-order bytes per direction.
    pub max_ooo_bytes: usize,
}

/// Memory shared by every stream (out-of-order segments and unparsed bytes). A `Cell`, so
/// the reassembler and the parser feeding it can both account without fighting borrows.
#[derive(Debug, Default)]
pub struct Budget {
    used: std::cell::Cell<usize>,
    max: usize,
}

impl Budget {
    pub fn new(max: usize) -> Budget {
        Budget {
            used: std::cell::Cell::new(0),
            max,
        }
    }
    pub fn try_take(&self, n: usize) -> bool {
        let used = self.used.get();
        if used + n > self.max {
            return false;
        }
        self.used.set(used + n);
        true
    }
    pub fn give(&self, n: usize) {
        self.used.set(self.used.get().saturating_sub(n));
    }
    pub fn used(&self) -> usize {
        self.used.get()
    }
}

/// What happened to a segment, for the counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SegmentStats {
    pub retransmitted: bool,
    pub out_of_order: bool,
    pub gaps: u32,
    pub gap_bytes: u64,
    /// Far outside the window and never acknowledged: not a byte of this stream.
    pub out_of_window: bool,
}

struct Stored {
    seq: u32,
    data: Vec<u8>,
    missing: usize,
}

/// One direction of a connection.
#[derive(Default)]
pub struct HalfStream {
    next: Option<u32>,
    /// The furthest sequence number the peer acknowledged (bytes before it were sent).
    acked: Option<u32>,
    ooo: Vec<Stored>,
    ooo_bytes: usize,
    fin_seq: Option<u32>,
    finished: bool,
}

/// `a - b` in sequence space.
fn seq_diff(a: u32, b: u32) -> i64 {
    i64::from(a.wrapping_sub(b) as i32)
}

/// One segment's sequence-space view.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    pub seq: u32,
    pub syn: bool,
    pub fin: bool,
    pub payload: &'a [u8],
    /// Payload bytes that were on the wire but not in the capture.
    pub missing: usize,
}

impl HalfStream {
    /// True once any segment of this direction was taken.
    pub fn started(&self) -> bool {
        self.next.is_some()
    }

    /// The peer acknowledged every byte before `ack`. Only a point ahead of the delivered
    /// data by less than half the sequence space is plausible; others are ignored.
    pub fn ack(&mut self, ack: u32) {
        let Some(next) = self.next else { return };
        let ahead = seq_diff(ack, next);
        if ahead > 0 && self.acked.is_none_or(|a| ahead > seq_diff(a, next)) {
            self.acked = Some(ack);
        }
    }

    /// True when `seq` is within the window of this direction's expected sequence number
    /// on either side (or nothing is known yet).
    pub fn in_window(&self, seq: u32, limits: Limits) -> bool {
        self.next
            .is_none_or(|n| seq_diff(seq, n).unsigned_abs() <= u64::from(limits.window))
    }

    /// True once FIN was delivered.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Bytes of stored out-of-order data.
    pub fn stored(&self) -> usize {
        self.ooo_bytes
    }

    /// Takes one segment and delivers whatever became contiguous.
    pub fn segment(
        &mut self,
        s: Segment<'_>,
        limits: Limits,
        budget: &Budget,
        emit: &mut dyn FnMut(Chunk<'_>),
    ) -> SegmentStats {
        let mut st = SegmentStats::default();
        if self.finished {
            st.retransmitted = !s.payload.is_empty();
            return st;
        }
        let mut seq = s.seq;
        if s.syn {
            seq = seq.wrapping_add(1);
            if self.next.is_none() {
                self.next = Some(seq);
            }
        }
        let next = *self.next.get_or_insert(seq);
        let len = s.payload.len() + s.missing;
        let d = seq_diff(seq, next);
        let end = d + len as i64;
        if d > i64::from(limits.window) && self.acked.is_none_or(|a| seq_diff(a, seq) < 0) {
            // Nothing of this stream was ever said to reach that far.
            st.out_of_window = true;
            return st;
        }
        if s.fin && self.fin_seq.is_none() && end >= 0 {
            self.fin_seq = Some(seq.wrapping_add(len as u32));
        }
        if d <= 0 {
            if (-d) as usize >= len {
                st.retransmitted = len > 0;
            } else {
                st.retransmitted = d < 0;
                self.deliver(seq, s.payload, s.missing, &mut st, emit);
            }
        } else if len > 0 {
            st.out_of_order = true;
            let fits = d as u64 <= u64::from(limits.window)
                && self.ooo_bytes + s.payload.len() <= limits.max_ooo_bytes
                && budget.try_take(s.payload.len());
            if fits {
                self.store(seq, s.payload, s.missing);
            } else {
                // No room to wait: give up on the hole before the earliest data we have.
                let first = self.ooo.first().map_or(seq, |o| o.seq);
                let target = if seq_diff(first, seq) < 0 { first } else { seq };
                self.gap_to(target, &mut st, emit);
                self.drain(budget, &mut st, emit);
                let next = self.next.unwrap_or(seq);
                if seq_diff(seq, next) > 0 {
                    let room = self.ooo_bytes + s.payload.len() <= limits.max_ooo_bytes
                        && seq_diff(seq, next) as u64 <= u64::from(limits.window);
                    if room && budget.try_take(s.payload.len()) {
                        self.store(seq, s.payload, s.missing);
                    } else {
                        self.gap_to(seq, &mut st, emit);
                        self.deliver(seq, s.payload, s.missing, &mut st, emit);
                    }
                } else if seq_diff(seq.wrapping_add(len as u32), next) > 0 {
                    self.deliver(seq, s.payload, s.missing, &mut st, emit);
                }
            }
        }
        self.drain(budget, &mut st, emit);
        self.check_fin(emit);
        st
    }

    /// Declares every hole closed (connection end): stored data is delivered after gaps.
    pub fn flush(&mut self, budget: &Budget, emit: &mut dyn FnMut(Chunk<'_>)) -> SegmentStats {
        let mut st = SegmentStats::default();
        while let Some(first) = self.ooo.first().map(|o| o.seq) {
            self.gap_to(first, &mut st, emit);
            self.drain(budget, &mut st, emit);
        }
        self.check_fin(emit);
        st
    }

    /// Returns the memory this direction holds to the budget.
    pub fn release(&mut self, budget: &Budget) {
        budget.give(self.ooo_bytes);
        self.ooo.clear();
        self.ooo_bytes = 0;
    }

    fn store(&mut self, seq: u32, payload: &[u8], missing: usize) {
        let next = self.next.unwrap_or(seq);
        let rel = seq_diff(seq, next);
        let at = self
            .ooo
            .iter()
            .position(|o| seq_diff(o.seq, next) > rel)
            .unwrap_or(self.ooo.len());
        self.ooo_bytes += payload.len();
        self.ooo.insert(
            at,
            Stored {
                seq,
                data: payload.to_vec(),
                missing,
            },
        );
    }

    fn gap_to(&mut self, target: u32, st: &mut SegmentStats, emit: &mut dyn FnMut(Chunk<'_>)) {
        let Some(next) = self.next else { return };
        let d = seq_diff(target, next);
        if d > 0 {
            emit(Chunk::Gap(d as usize));
            st.gaps += 1;
            st.gap_bytes += d as u64;
            self.next = Some(target);
        }
    }

    /// Delivers the part of a segment at or after `next`, then the cut-off bytes as a gap.
    fn deliver(
        &mut self,
        seq: u32,
        payload: &[u8],
        missing: usize,
        st: &mut SegmentStats,
        emit: &mut dyn FnMut(Chunk<'_>),
    ) {
        let next = self.next.unwrap_or(seq);
        let skip = seq_diff(next, seq).max(0) as usize;
        if skip < payload.len() {
            emit(Chunk::Data(&payload[skip..]));
        }
        let len = payload.len() + missing;
        let missing_left = len - skip.max(payload.len());
        if missing_left > 0 {
            emit(Chunk::Gap(missing_left));
            st.gaps += 1;
            st.gap_bytes += missing_left as u64;
        }
        self.next = Some(seq.wrapping_add(len as u32));
    }

    fn drain(&mut self, budget: &Budget, st: &mut SegmentStats, emit: &mut dyn FnMut(Chunk<'_>)) {
        while let Some(first) = self.ooo.first() {
            let next = self.next.unwrap_or(first.seq);
            if seq_diff(first.seq, next) > 0 {
                break;
            }
            let o = self.ooo.remove(0);
            self.ooo_bytes -= o.data.len();
            budget.give(o.data.len());
            let len = o.data.len() + o.missing;
            if seq_diff(o.seq.wrapping_add(len as u32), next) > 0 {
                self.deliver(o.seq, &o.data, o.missing, st, emit);
            }
        }
    }

    fn check_fin(&mut self, emit: &mut dyn FnMut(Chunk<'_>)) {
        if let (Some(f), Some(n)) = (self.fin_seq, self.next)
            && seq_diff(n, f) >= 0
            && !self.finished
        {
            self.finished = true;
            emit(Chunk::Fin);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        h: &mut HalfStream,
        segs: &[(u32, &[u8], bool)],
        limits: Limits,
        budget: &Budget,
    ) -> (Vec<u8>, Vec<usize>, bool) {
        let mut data = Vec::new();
        let mut gaps = Vec::new();
        let mut fin = false;
        for &(seq, p, f) in segs {
            h.segment(
                Segment {
                    seq,
                    syn: false,
                    fin: f,
                    payload: p,
                    missing: 0,
                },
                limits,
                budget,
                &mut |c| match c {
                    Chunk::Data(d) => data.extend_from_slice(d),
                    Chunk::Gap(n) => gaps.push(n),
                    Chunk::Fin => fin = true,
                },
            );
        }
        (data, gaps, fin)
    }

    const L: Limits = Limits {
        window: 1 << 20,
        max_ooo_bytes: 1 << 20,
    };

    #[test]
    fn reorders_trims_retransmissions_and_fins_in_order() {
        let b = Budget::new(1 << 20);
        let mut h = HalfStream::default();
        let (d, g, fin) = run(
            &mut h,
            &[
                (100, b"abc", false),
                (106, b"ghi", true),
                (103, b"def", false),
                (101, b"bcdefg", false),
            ],
            L,
            &b,
        );
        assert_eq!(d, b"abcdefghi");
        assert!(g.is_empty());
        assert!(fin);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn beyond_the_window_only_an_acknowledged_segment_makes_a_gap() {
        let b = Budget::new(1 << 20);
        let mut h = HalfStream::default();
        let lim = Limits {
            window: 10,
            max_ooo_bytes: 4,
        };
        let (d, g, _) = run(
            &mut h,
            &[(0, b"ab", false), (5, b"xyz", false), (100, b"late", false)],
            lim,
            &b,
        );
        // 100 is far beyond the window and nobody acknowledged it: a stranger, ignored.
        assert_eq!(d, b"ab");
        assert!(g.is_empty());
        // An ACK from an implausible point (half the sequence space away) changes nothing.
        h.ack(0x9000_0000);
        let (d, g, _) = run(&mut h, &[(100, b"late", false)], lim, &b);
        assert!(d.is_empty() && g.is_empty());
        // The peer acknowledged up to 104: the bytes were sent, the hole is a real gap.
        h.ack(104);
        let (d, g, _) = run(&mut h, &[(100, b"late", false)], lim, &b);
        assert_eq!(d, b"xyzlate");
        assert_eq!(g, vec![3, 92]);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn a_fin_before_the_delivered_data_is_ignored() {
        let b = Budget::new(1 << 20);
        let mut h = HalfStream::default();
        let (d, _, fin) = run(&mut h, &[(1000, b"abc", false), (10, b"", true)], L, &b);
        assert_eq!(d, b"abc");
        assert!(!fin && !h.finished());
        let (_, _, fin) = run(&mut h, &[(1003, b"d", true)], L, &b);
        assert!(fin);
    }

    #[test]
    fn flush_delivers_after_gap_and_wraps_sequence() {
        let b = Budget::new(1 << 20);
        let mut h = HalfStream::default();
        let start = u32::MAX - 1;
        let (d, _, _) = run(&mut h, &[(start, b"ab", false), (2, b"cd", false)], L, &b);
        assert_eq!(d, b"ab");
        let mut out = Vec::new();
        h.flush(&b, &mut |c| {
            if let Chunk::Gap(n) = c {
                out.push(n)
            }
        });
        assert_eq!(out, vec![2]);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn budget_exhausted_never_stores() {
        let b = Budget::new(0);
        let mut h = HalfStream::default();
        let (d, g, _) = run(
            &mut h,
            &[(0, b"a", false), (5, b"bb", false), (3, b"x", false)],
            L,
            &b,
        );
        assert_eq!(d, b"abb");
        assert_eq!(g, vec![4]);
    }
}

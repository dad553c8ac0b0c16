//! Drives a TCP parser the way the engine does (buffering, skipping), for unit tests.

use super::{Common, Cx, Dir, Done, TcpParser};
use crate::inspect::engine::{Skip, feed_chunk};
use crate::inspect::tcp::{Budget, Chunk};

/// Feeds each (direction, bytes) in pieces of `split` bytes; returns the transactions,
/// including those published when the connection closes.
pub fn drive(p: &mut dyn TcpParser, msgs: &[(Dir, &[u8])], split: usize) -> Vec<Done> {
    let mut out = Vec::new();
    let budget = Budget::new(1 << 30);
    let mut bufs: [Vec<u8>; 2] = Default::default();
    let mut skips: [Skip; 2] = Default::default();
    let mut now = 1_000_000u64;
    for (dir, data) in msgs {
        let d = usize::from(*dir == Dir::ToClient);
        for piece in data.chunks(split.max(1)) {
            now += 1000;
            let mut cx = Cx {
                now,
                timeout: 10_000_000,
                out: &mut out,
            };
            feed_chunk(
                p,
                *dir,
                Chunk::Data(piece),
                &mut bufs[d],
                &mut skips[d],
                &budget,
                1 << 20,
                &mut cx,
            );
        }
    }
    let mut cx = Cx {
        now,
        timeout: 10_000_000,
        out: &mut out,
    };
    p.close(&mut cx);
    out
}

/// Feeds whole chunks (data, holes, FIN) as the stream layer delivers them, then closes
/// the connection unless `close` is false; returns the transactions.
pub fn drive_chunks(p: &mut dyn TcpParser, chunks: &[(Dir, Chunk<'_>)], close: bool) -> Vec<Done> {
    let mut out = Vec::new();
    let budget = Budget::new(1 << 30);
    let mut bufs: [Vec<u8>; 2] = Default::default();
    let mut skips: [Skip; 2] = Default::default();
    let mut now = 1_000_000u64;
    for (dir, c) in chunks {
        let d = usize::from(*dir == Dir::ToClient);
        now += 1000;
        let mut cx = Cx {
            now,
            timeout: 10_000_000,
            out: &mut out,
        };
        let c = match c {
            Chunk::Data(b) => Chunk::Data(b),
            Chunk::Gap(n) => Chunk::Gap(*n),
            Chunk::Fin => Chunk::Fin,
        };
        feed_chunk(
            p,
            *dir,
            c,
            &mut bufs[d],
            &mut skips[d],
            &budget,
            1 << 20,
            &mut cx,
        );
    }
    if close {
        let mut cx = Cx {
            now,
            timeout: 10_000_000,
            out: &mut out,
        };
        p.close(&mut cx);
    }
    out
}

/// The settings every protocol gets, as unit tests use them.
pub fn common() -> Common {
    Common {
        max_pending: 8,
        transaction_timeout_us: 10_000_000,
        event_format: crate::config::EventFormat::Classic,
    }
}

/// Runs `scenario` and asserts that `counter` rose by exactly `n`. The counter is
/// process-wide and other tests add to it concurrently (never subtract): every run must
/// add at least `n`, and some run, not disturbed by another test, exactly `n`.
pub fn rises_by(counter: &std::sync::atomic::AtomicU64, n: u64, mut scenario: impl FnMut()) {
    let mut seen = Vec::new();
    for _ in 0..200 {
        let before = crate::monitor::get(counter);
        scenario();
        let rise = crate::monitor::get(counter) - before;
        assert!(rise >= n, "rose by {rise}, not {n}");
        if rise == n {
            return;
        }
        seen.push(rise);
    }
    panic!("never rose by exactly {n}: {seen:?}");
}

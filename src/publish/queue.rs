//! The bounded in-memory queue between the sources and the pipeline thread.
//!
//! Why not `std::sync::mpsc::sync_channel`: when it is full, every receive wakes the
//! waiting sender, and every send wakes the waiting receiver, so a source and the pipeline
//! ping-pong through the scheduler once per event (measured: most of the pipeline's CPU).
//! Here the consumer takes up to a whole batch per lock, says how many events it waits
//! for (so producers wake it once per batch, not per event), and blocked producers are
//! woken only once there is room for a batch again.

use crate::event::Event;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

struct Inner {
    items: VecDeque<Event>,
    /// Live producer handles; 0 means no more events will come.
    producers: usize,
    /// The consumer is gone: pushes fail.
    closed: bool,
    /// The consumer sleeps until this many events are queued (0: not waiting).
    want: usize,
    /// Producers sleeping for room.
    blocked: usize,
}

/// Shared by every producer handle and the one consumer.
pub struct Queue {
    inner: Mutex<Inner>,
    not_empty: Condvar,
    not_full: Condvar,
    capacity: usize,
    /// Mirror of the length, for lock-free `len` (back-pressure checks).
    len: AtomicUsize,
}

/// Why a push did not queue the event; the event is handed back.
#[derive(Debug)]
pub enum PushError {
    Full(Event),
    Closed(Event),
}

impl Queue {
    pub fn new(capacity: usize) -> Queue {
        Queue {
            inner: Mutex::new(Inner {
                items: VecDeque::with_capacity(capacity.min(1 << 16)),
                producers: 1,
                closed: false,
                want: 0,
                blocked: 0,
            }),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            capacity: capacity.max(1),
            len: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Events queued now.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Queues `e`; with `wait`, sleeps while the queue is full.
    pub fn push(&self, e: Event, wait: bool) -> Result<(), PushError> {
        let mut g = self.lock();
        loop {
            if g.closed {
                return Err(PushError::Closed(e));
            }
            if g.items.len() < self.capacity {
                break;
            }
            if !wait {
                return Err(PushError::Full(e));
            }
            g.blocked += 1;
            g = self.not_full.wait(g).unwrap_or_else(|p| p.into_inner());
            g.blocked -= 1;
        }
        g.items.push_back(e);
        self.len.store(g.items.len(), Ordering::Relaxed);
        if g.want > 0 && g.items.len() >= g.want {
            g.want = 0;
            self.not_empty.notify_one();
        }
        Ok(())
    }

    /// A new producer handle exists.
    pub fn add_producer(&self) {
        self.lock().producers += 1;
    }

    /// A producer handle is gone; the last one ends the stream.
    pub fn remove_producer(&self) {
        let mut g = self.lock();
        g.producers = g.producers.saturating_sub(1);
        if g.producers == 0 {
            self.not_empty.notify_one();
        }
    }

    /// The consumer is gone: producers stop waiting and their pushes fail.
    pub fn close(&self) {
        let mut g = self.lock();
        g.closed = true;
        self.not_full.notify_all();
    }

    /// Moves up to `max` events into `out`, waiting until `min` are queued, `timeout`
    /// passes or the producers are gone. False when the producers are gone and the queue
    /// is empty: the stream is over.
    pub fn pop(&self, out: &mut Vec<Event>, min: usize, max: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut g = self.lock();
        loop {
            if g.items.len() >= min.max(1) || g.producers == 0 {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            g.want = min.max(1);
            g = self
                .not_empty
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        g.want = 0;
        let n = g.items.len().min(max);
        out.extend(g.items.drain(..n));
        self.len.store(g.items.len(), Ordering::Relaxed);
        if g.blocked > 0 && n > 0 {
            self.not_full.notify_all();
        }
        !(g.producers == 0 && g.items.is_empty() && n == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn ev(n: i64) -> Event {
        Event::new(std::time::SystemTime::now(), "t", json!({"n": n}))
    }

    #[test]
    fn batches_come_out_in_order_and_the_end_is_seen() {
        let q = Arc::new(Queue::new(8));
        let q2 = q.clone();
        let t = std::thread::spawn(move || {
            for n in 0..100 {
                q2.push(ev(n), true).unwrap();
            }
            q2.remove_producer();
        });
        let mut all = Vec::new();
        let mut batch = Vec::new();
        while q.pop(&mut batch, 4, 5, Duration::from_millis(20)) {
            assert!(batch.len() <= 5);
            all.extend(batch.drain(..).map(|e| e.to_value()["n"].as_i64().unwrap()));
        }
        t.join().unwrap();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn a_full_queue_refuses_without_waiting_and_a_closed_one_always() {
        let q = Queue::new(2);
        q.push(ev(0), false).unwrap();
        q.push(ev(1), false).unwrap();
        assert!(matches!(q.push(ev(2), false), Err(PushError::Full(_))));
        assert_eq!(q.len(), 2);
        q.close();
        assert!(matches!(q.push(ev(3), true), Err(PushError::Closed(_))));
    }
}

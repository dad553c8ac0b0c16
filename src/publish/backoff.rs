//! Exponential backoff with jitter between two attempts to deliver a batch.
//!
//! The wait doubles after every failure, from `backoff.init` up to `backoff.max`, and is
//! drawn uniformly from the upper half of that window ("equal jitter"), so that many
//! agents that lost the same collector do not come back in lockstep. A success resets it.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    init: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(init: Duration, max: Duration) -> Backoff {
        let init = init.max(Duration::from_millis(1));
        let max = max.max(init);
        Backoff {
            init,
            max,
            current: init,
        }
    }

    /// The wait before the next attempt; each call doubles the window (up to the max).
    pub fn next_wait(&mut self) -> Duration {
        let window = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = window / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// After a success: the next failure waits about `init` again.
    pub fn reset(&mut self) {
        self.current = self.init;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_max_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let windows = [100u64, 200, 400, 800, 1000, 1000];
        for w in windows {
            let d = b.next_wait();
            assert!(
                d >= Duration::from_millis(w / 2) && d <= Duration::from_millis(w),
                "{d:?} not in [{}, {w}] ms",
                w / 2
            );
        }
        b.reset();
        assert!(b.next_wait() <= Duration::from_millis(100));
    }
}

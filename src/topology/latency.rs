//! Latency percentiles in bounded memory: a sparse log-linear histogram (8 sub-buckets per
//! power of two, so a percentile is within about 6% of the true value), mergeable, and
//! as small as the number of distinct buckets it saw.

/// Values below this many microseconds get a bucket each.
const LINEAR: u64 = 16;
const SUB_BITS: u32 = 3;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// (bucket, count), sorted by bucket.
    buckets: Vec<(u16, u32)>,
    count: u64,
}

fn bucket_of(us: u64) -> u16 {
    if us < LINEAR {
        return us as u16;
    }
    let exp = 63 - us.leading_zeros(); // >= 4
    let sub = (us >> (exp - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    (LINEAR + u64::from(exp - 4) * (1 << SUB_BITS) + sub) as u16
}

/// The middle of a bucket, in microseconds.
fn value_of(b: u16) -> f64 {
    let b = u64::from(b);
    if b < LINEAR {
        return b as f64;
    }
    let exp = (b - LINEAR) / (1 << SUB_BITS) + 4;
    let sub = (b - LINEAR) % (1 << SUB_BITS);
    let width = 1u64 << (exp - u64::from(SUB_BITS));
    let low = (1u64 << exp) + sub * width;
    low as f64 + width as f64 / 2.0
}

impl Histogram {
    pub fn record(&mut self, us: u64) {
        self.add(bucket_of(us), 1);
    }

    fn add(&mut self, b: u16, n: u32) {
        match self.buckets.binary_search_by_key(&b, |&(k, _)| k) {
            Ok(i) => self.buckets[i].1 = self.buckets[i].1.saturating_add(n),
            Err(i) => self.buckets.insert(i, (b, n)),
        }
        self.count += u64::from(n);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for &(b, n) in &other.buckets {
            self.add(b, n);
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q` quantile (0..=1) in milliseconds; None when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0u64;
        for &(b, n) in &self.buckets {
            seen += u64::from(n);
            if seen >= rank {
                return Some((value_of(b) / 1000.0 * 100.0).round() / 100.0);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_within_the_bucket_precision() {
        let mut h = Histogram::default();
        for ms in 1..=100u64 {
            h.record(ms * 1000);
        }
        let p50 = h.quantile_ms(0.5).unwrap();
        let p99 = h.quantile_ms(0.99).unwrap();
        assert!((p50 - 50.0).abs() <= 50.0 * 0.07, "p50 {p50}");
        assert!((p99 - 99.0).abs() <= 99.0 * 0.07, "p99 {p99}");
        assert_eq!(h.count(), 100);
        assert_eq!(Histogram::default().quantile_ms(0.5), None);
    }

    #[test]
    fn merging_is_adding_and_buckets_are_few() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        for _ in 0..1000 {
            a.record(3);
            b.record(2_000_000);
        }
        a.merge(&b);
        assert_eq!(a.count(), 2000);
        assert_eq!(a.buckets.len(), 2);
        assert_eq!(a.quantile_ms(0.25), Some(0.0));
        let p99 = a.quantile_ms(0.99).unwrap();
        assert!((p99 - 2000.0).abs() < 2000.0 * 0.07, "{p99}");
        // Every value maps to a bucket whose middle is close to it.
        for us in [0u64, 15, 16, 17, 100, 1_000, 123_456, u64::MAX / 2] {
            let v = value_of(bucket_of(us));
            assert!(
                (v - us as f64).abs() <= (us as f64) * 0.07 + 0.5,
                "{us} -> {v}"
            );
        }
    }
}

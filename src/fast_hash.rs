//! Hash maps for the hot paths: keys issued by the kernel (socket cookies, inodes, pids,
//! ports) and the endpoints of captured connections.
//!
//! Those keys are not chosen by whoever could attack the table's hashing (cookies and
//! inodes are kernel counters; a capture's endpoints are bounded per table by
//! `max_streams`), so SipHash's resistance to collision attacks buys little and costs on
//! every lookup of every poll and every packet; one multiplication per word (FxHash)
//! spreads them over the table.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// FxHash: mixes each word (bytes eight at a time) with one multiplication.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl FxHasher {
    #[inline]
    fn mix(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(b));
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.mix(u64::from(n));
    }
    fn write_u16(&mut self, n: u16) {
        self.mix(u64::from(n));
    }
    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }
    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }
    fn write_isize(&mut self, n: isize) {
        self.mix(n as u64);
    }
}

/// The hasher's builder, for maps declared with `HashMap<K, V, Fx>`.
pub type Fx = BuildHasherDefault<FxHasher>;
/// A map on a hot path.
pub type FxMap<K, V> = HashMap<K, V, Fx>;
/// A set on a hot path.
pub type FxSet<K> = HashSet<K, Fx>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_keys_spread_and_tuples_differ_by_every_part() {
        let h = |f: &dyn Fn(&mut FxHasher)| {
            let mut s = FxHasher::default();
            f(&mut s);
            s.finish()
        };
        let a = h(&|s| s.write_u64(1));
        let b = h(&|s| s.write_u64(2));
        assert_ne!(a >> 57, b >> 57, "the top bits (hashbrown's tag) differ");
        let t1 = h(&|s| {
            s.write_u64(7);
            s.write_u16(80)
        });
        let t2 = h(&|s| {
            s.write_u64(7);
            s.write_u16(81)
        });
        assert_ne!(t1, t2);
        let mut m: FxMap<(u64, u16), u32> = FxMap::default();
        for i in 0..10_000u64 {
            m.insert((i, (i % 7) as u16), i as u32);
        }
        assert_eq!(m.len(), 10_000);
        assert_eq!(m[&(9_999, (9_999 % 7) as u16)], 9_999);
    }
}

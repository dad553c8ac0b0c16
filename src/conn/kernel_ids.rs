//! Hash maps keyed by kernel-issued numbers: socket cookies, inodes, pids, ports.
//!
//! Those keys are already unique and not chosen by an attacker, so SipHash's resistance
//! to collision attacks buys nothing and costs on every lookup of every poll; one
//! multiplication per word spreads them over the table.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Mixes whole integers with one multiplication each; bytes (rare here) FNV-style.
#[derive(Default, Clone, Copy)]
pub struct KernelIdHasher(u64);

const MUL: u64 = 0x9E37_79B9_7F4A_7C15;

impl KernelIdHasher {
    fn mix(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(23) ^ n).wrapping_mul(MUL);
    }
}

impl Hasher for KernelIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
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

/// A map keyed by kernel-issued numbers.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<KernelIdHasher>>;
/// A set of kernel-issued numbers.
pub type IdSet<K> = HashSet<K, BuildHasherDefault<KernelIdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_keys_spread_and_tuples_differ_by_every_part() {
        let h = |f: &dyn Fn(&mut KernelIdHasher)| {
            let mut s = KernelIdHasher::default();
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
        let mut m: IdMap<(u64, u16), u32> = IdMap::default();
        for i in 0..10_000u64 {
            m.insert((i, (i % 7) as u16), i as u32);
        }
        assert_eq!(m.len(), 10_000);
        assert_eq!(m[&(9_999, (9_999 % 7) as u16)], 9_999);
    }
}

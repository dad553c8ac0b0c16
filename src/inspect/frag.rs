//! Bounded IPv4 fragment reassembly.
//!
//! DNS answers over UDP and jumbo segments on some links arrive fragmented; the transport
//! header is only in the first fragment, so the datagram must be put back together before it
//! can be decoded. The table holds at most `max_datagrams` datagrams of at most 64 KiB, and
//! forgets a datagram whose fragments stop coming after `timeout`; everything dropped is
//! counted in `inspect.ip.fragments.dropped`.

use super::decode::Fragment;
use crate::monitor::{self, METRICS};
use std::collections::HashMap;
use std::net::Ipv4Addr;

type Key = (Ipv4Addr, Ipv4Addr, u16, u8);

struct Partial {
    data: Vec<u8>,
    /// Received byte ranges, sorted and merged.
    have: Vec<(usize, usize)>,
    /// Total length, known once the last fragment arrived.
    total: Option<usize>,
    first_seen: u64,
    fragments: u64,
}

/// IPv4 datagrams in reassembly.
pub struct Defrag {
    table: HashMap<Key, Partial>,
    max_datagrams: usize,
    timeout_us: u64,
}

/// Largest IPv4 datagram.
const MAX_DATAGRAM: usize = 65535;
/// Bound on the distinct ranges of one datagram (a flood of tiny overlapping fragments).
const MAX_RANGES: usize = 64;

impl Defrag {
    pub fn new(max_datagrams: usize, timeout_us: u64) -> Defrag {
        Defrag {
            table: HashMap::new(),
            max_datagrams,
            timeout_us,
        }
    }

    /// Adds one fragment; returns the whole transport payload when the datagram is complete.
    pub fn add(&mut self, f: &Fragment<'_>, now: u64) -> Option<Vec<u8>> {
        let key = (f.src, f.dst, f.id, f.protocol);
        let end = f.offset + f.data.len();
        if end > MAX_DATAGRAM || (f.more && !f.data.len().is_multiple_of(8)) {
            monitor::inc(&METRICS.inspect_frag_dropped);
            return None;
        }
        if !self.table.contains_key(&key) && self.table.len() >= self.max_datagrams {
            self.expire(now);
            if self.table.len() >= self.max_datagrams {
                monitor::inc(&METRICS.inspect_frag_dropped);
                return None;
            }
        }
        let p = self.table.entry(key).or_insert_with(|| Partial {
            data: Vec::new(),
            have: Vec::new(),
            total: None,
            first_seen: now,
            fragments: 0,
        });
        p.fragments += 1;
        if p.data.len() < end {
            p.data.resize(end, 0);
        }
        p.data[f.offset..end].copy_from_slice(f.data);
        if !f.more {
            p.total = Some(end);
        }
        insert_range(&mut p.have, (f.offset, end));
        if p.have.len() > MAX_RANGES {
            let n = p.fragments;
            self.table.remove(&key);
            monitor::add(&METRICS.inspect_frag_dropped, n);
            return None;
        }
        let complete = matches!((p.total, p.have.as_slice()), (Some(t), [(0, e)]) if *e >= t);
        if complete {
            let mut p = self.table.remove(&key)?;
            p.data.truncate(p.total.unwrap_or(0));
            monitor::inc(&METRICS.inspect_frag_reassembled);
            return Some(p.data);
        }
        None
    }

    /// Forgets datagrams older than the timeout.
    pub fn expire(&mut self, now: u64) {
        let timeout = self.timeout_us;
        let mut dropped = 0;
        self.table.retain(|_, p| {
            let keep = now.saturating_sub(p.first_seen) < timeout;
            if !keep {
                dropped += p.fragments;
            }
            keep
        });
        monitor::add(&METRICS.inspect_frag_dropped, dropped);
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

fn insert_range(have: &mut Vec<(usize, usize)>, r: (usize, usize)) {
    have.push(r);
    have.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(have.len());
    for &(s, e) in have.iter() {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    *have = merged;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag(offset: usize, more: bool, data: &[u8]) -> Fragment<'_> {
        Fragment {
            src: Ipv4Addr::new(1, 1, 1, 1),
            dst: Ipv4Addr::new(2, 2, 2, 2),
            id: 9,
            protocol: 17,
            offset,
            more,
            data,
        }
    }

    #[test]
    fn reassembles_out_of_order_and_bounds_table() {
        let mut d = Defrag::new(1, 1_000_000);
        let a = [1u8; 16];
        let b = [2u8; 5];
        assert!(d.add(&frag(16, false, &b), 0).is_none());
        let whole = d.add(&frag(0, true, &a), 1).unwrap();
        assert_eq!(whole.len(), 21);
        assert_eq!(&whole[16..], &b);
        assert!(d.is_empty());
        // Table full: a second datagram is dropped until the first expires.
        d.add(&frag(0, true, &a), 10);
        let mut other = frag(0, true, &a);
        other.id = 10;
        assert!(d.add(&other, 20).is_none());
        assert_eq!(d.len(), 1);
        d.add(&other, 2_000_000);
        assert_eq!(d.len(), 1);
    }
}

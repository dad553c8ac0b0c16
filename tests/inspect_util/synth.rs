//! Generated TCP captures: a pcap writer and a client/server conversation builder that keeps
//! the sequence numbers, for the cases the recorded captures cannot show on demand (ports
//! reused thousands of times, clocks skewed, SYNs retransmitted, Fast Open).

use std::net::SocketAddrV4;
use std::path::Path;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// Ethernet + IPv4 + TCP (20-byte header, no options).
pub fn tcp_frame(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = vec![0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1, 0x08, 0x00];
    let total = (40 + payload.len()) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&src.ip().octets());
    f.extend_from_slice(&dst.ip().octets());
    f.extend_from_slice(&src.port().to_be_bytes());
    f.extend_from_slice(&dst.port().to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&ack.to_be_bytes());
    f.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// Frames with their capture time (µs), written in the order of `records`.
#[derive(Default, Clone)]
pub struct Capture {
    pub records: Vec<(u64, Vec<u8>)>,
}

impl Capture {
    pub fn write(&self, path: &Path) {
        let mut out = Vec::new();
        out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        out.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&65535u32.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        for (ts, d) in &self.records {
            out.extend_from_slice(&((ts / 1_000_000) as u32).to_le_bytes());
            out.extend_from_slice(&((ts % 1_000_000) as u32).to_le_bytes());
            out.extend_from_slice(&(d.len() as u32).to_le_bytes());
            out.extend_from_slice(&(d.len() as u32).to_le_bytes());
            out.extend_from_slice(d);
        }
        std::fs::write(path, out).expect("write pcap");
    }

    /// Interleaves two captures record by record (two capture sources merged as read).
    pub fn interleave(a: &Capture, b: &Capture) -> Capture {
        let mut records = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < a.records.len() || j < b.records.len() {
            if i < a.records.len() {
                records.push(a.records[i].clone());
                i += 1;
            }
            if j < b.records.len() {
                records.push(b.records[j].clone());
                j += 1;
            }
        }
        Capture { records }
    }

    /// Moves time by `us` microseconds (a skewed clock).
    pub fn shift(&mut self, us: i64) {
        for r in &mut self.records {
            r.0 = r.0.saturating_add_signed(us);
        }
    }

    /// Swaps records `i` and `i + 1` in the file, each keeping its own time: the file is
    /// then out of time order, as a capture of a multi-core host is.
    pub fn swap_next(&mut self, i: usize) {
        self.records.swap(i, i + 1);
    }
}

/// One TCP connection between a client and a server; each call appends its segment to
/// `cap` at time `t` (µs) and advances the sequence numbers.
pub struct Conn {
    pub client: SocketAddrV4,
    pub server: SocketAddrV4,
    pub c: u32,
    pub s: u32,
}

impl Conn {
    pub fn new(
        client: SocketAddrV4,
        server: SocketAddrV4,
        client_isn: u32,
        server_isn: u32,
    ) -> Conn {
        Conn {
            client,
            server,
            c: client_isn,
            s: server_isn,
        }
    }

    /// A segment from one end at its current sequence number, acknowledging the other's.
    fn put(&self, cap: &mut Capture, t: u64, from_client: bool, flags: u8, p: &[u8]) {
        let (a, b, seq, ack) = if from_client {
            (self.client, self.server, self.c, self.s)
        } else {
            (self.server, self.client, self.s, self.c)
        };
        cap.records.push((t, tcp_frame(a, b, seq, ack, flags, p)));
    }

    /// The client's SYN (with Fast Open data when `data` is not empty); a retransmission
    /// is the same call again before [`Conn::syn_ack`].
    pub fn syn(&self, cap: &mut Capture, t: u64, data: &[u8]) {
        self.put(cap, t, true, SYN, data);
    }

    /// The server's SYN/ACK, acknowledging `syn_data` bytes of Fast Open data; moves both
    /// ends past their SYN.
    pub fn syn_ack(&mut self, cap: &mut Capture, t: u64, syn_data: usize) {
        self.c = self.c.wrapping_add(1 + syn_data as u32);
        self.put(cap, t, false, SYN | ACK, b"");
        self.s = self.s.wrapping_add(1);
    }

    /// Data from the client (`to_server`) or the server.
    pub fn data(&mut self, cap: &mut Capture, t: u64, to_server: bool, p: &[u8]) {
        if to_server {
            self.put(cap, t, true, PSH | ACK, p);
            self.c = self.c.wrapping_add(p.len() as u32);
        } else {
            self.put(cap, t, false, PSH | ACK, p);
            self.s = self.s.wrapping_add(p.len() as u32);
        }
    }

    /// A pure ACK from one end.
    pub fn ack(&self, cap: &mut Capture, t: u64, from_client: bool) {
        if from_client {
            self.put(cap, t, true, ACK, b"");
        } else {
            self.put(cap, t, false, ACK, b"");
        }
    }

    /// FIN from one end.
    pub fn fin(&mut self, cap: &mut Capture, t: u64, from_client: bool) {
        if from_client {
            self.put(cap, t, true, FIN | ACK, b"");
            self.c = self.c.wrapping_add(1);
        } else {
            self.put(cap, t, false, FIN | ACK, b"");
            self.s = self.s.wrapping_add(1);
        }
    }

    /// RST from one end.
    pub fn rst(&self, cap: &mut Capture, t: u64, from_client: bool) {
        if from_client {
            self.put(cap, t, true, RST | ACK, b"");
        } else {
            self.put(cap, t, false, RST | ACK, b"");
        }
    }
}

/// A small xorshift generator: reproducible "random" ISNs and choices.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

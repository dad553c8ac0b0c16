//! `connbeat.interfaces.type: af_packet`: live capture from a TPACKET_V3 ring the kernel
//! fills and connbeat reads in place, with several decoding threads in a fanout group.
//!
//! # Why this module exists
//!
//! libpcap copies every packet out of its ring and decodes on one thread: under load the
//! kernel fills the ring faster than that thread empties it and drops packets, with them
//! transactions. Here each worker thread owns a socket with its own memory-mapped ring of
//! blocks (TPACKET_V3: the kernel hands over whole blocks of packets, one wake-up per
//! block), and the sockets form a `PACKET_FANOUT_HASH` group: the kernel spreads packets
//! by a symmetric flow hash, so both directions of a connection reach the same worker and
//! each worker's engine sees whole conversations (DHCPv4, whose request and reply have
//! different addresses, gets a socket of its own outside the group: `capture::open_rings`).
//!
//! Sockets are `SOCK_DGRAM`: the kernel strips the link header, every packet is an IP
//! packet (`LINKTYPE_RAW` for the engine) whatever the interface, `any` included. The
//! BPF filter is compiled by libpcap for raw IP and attached as a classic socket filter.
//! Loopback packets pass a packet socket twice (sent, then received); the sent copy is
//! skipped, as libpcap does.
//!
//! Kernel drops come from `PACKET_STATISTICS` (which resets on read) and are added to
//! `inspect.capture.dropped`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

// Kernel ABI (linux/if_packet.h, linux/if_ether.h), written out: the libc crate does not
// export the TPACKET_V3 structures on every target.
const ETH_P_ALL: u16 = 0x0003;
const SOL_PACKET: libc::c_int = 263;
const PACKET_RX_RING: libc::c_int = 5;
const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_VERSION: libc::c_int = 10;
const PACKET_FANOUT: libc::c_int = 18;
const TPACKET_V3: libc::c_int = 2;
const PACKET_FANOUT_HASH: u32 = 0;
const PACKET_FANOUT_FLAG_DEFRAG: u32 = 0x8000;
const PACKET_OUTGOING: u8 = 4;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;

/// Offsets in a block descriptor (`struct tpacket_block_desc`, `tpacket_hdr_v1`).
const BLOCK_STATUS: usize = 8;
const BLOCK_NUM_PKTS: usize = 12;
const BLOCK_FIRST_PKT: usize = 16;
/// Size of `struct tpacket3_hdr`, after which (aligned to 16) comes a `sockaddr_ll`.
const PKT_HDR: usize = 48;
const SLL_IFINDEX: usize = PKT_HDR + 4;
const SLL_PKTTYPE: usize = PKT_HDR + 10;
/// A packet needs at least its header and the `sockaddr_ll` fields read here.
const PKT_MIN: usize = PKT_HDR + 12;

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// Compiles `filter` for raw IP packets (what a `SOCK_DGRAM` packet socket's filter
/// sees), with `snaplen` as the length a matching packet keeps.
pub fn compile_filter(filter: &str, snaplen: u32) -> Result<Vec<SockFilter>, String> {
    // DLT_RAW is 12 on Linux.
    let dead = pcap::Capture::dead(pcap::Linktype(12)).map_err(|e| e.to_string())?;
    let prog = dead.compile(filter, true).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for ins in prog.get_instructions() {
        // The only public view of an instruction is its text: "code jt jf k".
        let text = ins.to_string();
        let f: Vec<u32> = text
            .split_whitespace()
            .map(|w| {
                w.parse()
                    .map_err(|_| format!("bad BPF instruction {text:?}"))
            })
            .collect::<Result<_, _>>()?;
        let [code, jt, jf, k] = f[..] else {
            return Err(format!("bad BPF instruction {text:?}"));
        };
        let mut ins = SockFilter {
            code: code as u16,
            jt: jt as u8,
            jf: jf as u8,
            k,
        };
        // BPF_RET|BPF_K with a non-zero length: keep at most snaplen bytes.
        if ins.code == 0x06 && ins.k != 0 {
            ins.k = snaplen.max(1);
        }
        out.push(ins);
    }
    Ok(out)
}

/// The geometry of one ring: `blocks` blocks of `block_size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub block_size: usize,
    pub blocks: usize,
}

impl Geometry {
    /// About `bytes` of ring in blocks of 128 KiB (room for the largest loopback
    /// packet), at least 4. Small blocks because the kernel hands a block over when it
    /// is full or after 8 ms: on a quiet link each block carries a few packets, and a
    /// reader held up for a while still has many blocks to fill (libpcap does the same).
    pub fn for_bytes(bytes: usize) -> Geometry {
        const BLOCK: usize = 128 << 10;
        Geometry {
            block_size: BLOCK,
            blocks: (bytes / BLOCK).max(4),
        }
    }
}

/// A packet socket with its mapped TPACKET_V3 ring.
pub struct Ring {
    fd: OwnedFd,
    map: *mut u8,
    geometry: Geometry,
    next: usize,
    lo_ifindex: i32,
}

// SAFETY: the mapping belongs to this Ring alone; it is only read through &mut self.
unsafe impl Send for Ring {}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn setsockopt<T>(fd: &OwnedFd, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: v points to a valid T for the whole call, its size given.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            SOL_PACKET,
            name,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
}

/// The index of interface `name`; 0 (every interface) for `any`.
pub fn ifindex(name: &str) -> io::Result<i32> {
    if name == "any" || name.is_empty() {
        return Ok(0);
    }
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in device name"))?;
    // SAFETY: c is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(i as i32)
}

impl Ring {
    /// Opens a packet socket on `device` with a ring of `geometry`, the filter attached
    /// before any packet is taken, and joins fanout group `fanout` when given.
    pub fn open(
        device: &str,
        geometry: Geometry,
        filter: &[SockFilter],
        fanout: Option<u16>,
    ) -> io::Result<Ring> {
        let index = ifindex(device)?;
        // Protocol 0: nothing is received until bind names ETH_P_ALL, after the filter
        // and the ring are in place.
        // SAFETY: plain socket(2).
        let raw =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        check(raw)?;
        // SAFETY: raw is a new descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        setsockopt(&fd, PACKET_VERSION, &TPACKET_V3)?;
        if !filter.is_empty() {
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            // SAFETY: prog points to filter.len() instructions laid out as sock_filter.
            check(unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_ATTACH_FILTER,
                    (&prog as *const libc::sock_fprog).cast(),
                    std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
                )
            })?;
        }
        const FRAME: usize = 2048;
        // struct tpacket_req3.
        let req: [u32; 7] = [
            geometry.block_size as u32,
            geometry.blocks as u32,
            FRAME as u32,
            (geometry.block_size / FRAME * geometry.blocks) as u32,
            8, // tp_retire_blk_tov: a partly filled block is handed over after 8 ms
            0, // tp_sizeof_priv
            0, // tp_feature_req_word
        ];
        setsockopt(&fd, PACKET_RX_RING, &req)?;
        let len = geometry.block_size * geometry.blocks;
        // SAFETY: maps the ring the kernel just allocated for this socket.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ring = Ring {
            fd,
            map: map.cast(),
            geometry,
            next: 0,
            lo_ifindex: ifindex("lo").unwrap_or(-1),
        };
        // SAFETY: a zeroed sockaddr_ll is valid; the fields set are its own.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = index;
        // SAFETY: sll is a valid sockaddr_ll of the given size.
        check(unsafe {
            libc::bind(
                ring.fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        if let Some(group) = fanout {
            let arg: u32 =
                u32::from(group) | ((PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG) << 16);
            setsockopt(&ring.fd, PACKET_FANOUT, &arg)?;
        }
        Ok(ring)
    }

    /// Waits up to `timeout_ms` for the next block, hands each of its packets (time in
    /// µs since the epoch, IP packet) to `f` and gives the block back to the kernel.
    /// Returns how many packets were handed over (0: nothing came).
    pub fn next_block(
        &mut self,
        timeout_ms: i32,
        mut f: impl FnMut(u64, &[u8]),
    ) -> io::Result<usize> {
        let bs = self.geometry.block_size;
        // SAFETY: next < blocks, so the block lies inside the mapping.
        let block: *mut u8 = unsafe { self.map.add(self.next * bs) };
        // SAFETY: the status word is 4-aligned inside the block; the kernel writes it
        // atomically, so it is read as an atomic.
        let status = unsafe { &*(block.add(BLOCK_STATUS) as *const AtomicU32) };
        if status.load(Ordering::Acquire) & TP_STATUS_USER == 0 {
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN | libc::POLLERR,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
            if status.load(Ordering::Acquire) & TP_STATUS_USER == 0 {
                return Ok(0);
            }
        }
        // SAFETY: the kernel handed the block over (TP_STATUS_USER): it does not write
        // it until the status goes back to TP_STATUS_KERNEL below.
        let data: &[u8] = unsafe { std::slice::from_raw_parts(block, bs) };
        let n = walk_block(data, self.lo_ifindex, &mut f);
        status.store(TP_STATUS_KERNEL, Ordering::Release);
        self.next = (self.next + 1) % self.geometry.blocks;
        Ok(n)
    }

    /// Packets the kernel dropped since the last call (the ring was full).
    pub fn drops(&self) -> io::Result<u64> {
        // struct tpacket_stats_v3: tp_packets, tp_drops, tp_freeze_q_cnt.
        let mut st = [0u32; 3];
        let mut len = std::mem::size_of_val(&st) as libc::socklen_t;
        // SAFETY: st is writable for len bytes.
        check(unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                SOL_PACKET,
                PACKET_STATISTICS,
                st.as_mut_ptr().cast(),
                &mut len,
            )
        })?;
        Ok(u64::from(st[1]))
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: the mapping made in open, of this length, unmapped once.
        unsafe {
            libc::munmap(
                self.map.cast(),
                self.geometry.block_size * self.geometry.blocks,
            )
        };
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// The packets of one block handed over by the kernel, each checked to lie inside the
/// block; the loopback's sent copies (`lo_ifindex`) are skipped. Pure, so a test can
/// build blocks by hand. Returns how many packets went to `f`.
pub fn walk_block(block: &[u8], lo_ifindex: i32, f: &mut impl FnMut(u64, &[u8])) -> usize {
    let (Some(num), Some(first)) = (
        u32_at(block, BLOCK_NUM_PKTS),
        u32_at(block, BLOCK_FIRST_PKT),
    ) else {
        return 0;
    };
    let mut at = first as usize;
    let mut n = 0;
    for _ in 0..num {
        let Some(hdr) = block.get(at..).filter(|h| h.len() >= PKT_MIN) else {
            break;
        };
        let next = u32_at(hdr, 0).unwrap_or(0) as usize;
        let sec = u64::from(u32_at(hdr, 4).unwrap_or(0));
        let nsec = u64::from(u32_at(hdr, 8).unwrap_or(0));
        let snaplen = u32_at(hdr, 12).unwrap_or(0) as usize;
        let mac = usize::from(u16_at(hdr, 24).unwrap_or(0));
        let ifindex = u32_at(hdr, SLL_IFINDEX).unwrap_or(0) as i32;
        let outgoing = hdr[SLL_PKTTYPE] == PACKET_OUTGOING;
        if let Some(pkt) = hdr.get(mac..mac.saturating_add(snaplen))
            && !(outgoing && ifindex == lo_ifindex)
        {
            f(sec * 1_000_000 + nsec / 1000, pkt);
            n += 1;
        }
        if next == 0 {
            break;
        }
        at += next;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_is_many_small_blocks() {
        let g = |mb: usize| Geometry::for_bytes(mb << 20);
        assert_eq!(
            g(32),
            Geometry {
                block_size: 128 << 10,
                blocks: 256
            }
        );
        assert_eq!(g(100).blocks, 800);
        assert_eq!(Geometry::for_bytes(100 << 10).blocks, 4);
    }

    /// A block as the kernel lays it out, with packets (ifindex, pkttype, bytes).
    fn block(pkts: &[(i32, u8, &[u8])]) -> Vec<u8> {
        let mut b = vec![0u8; 48];
        b[BLOCK_NUM_PKTS..BLOCK_NUM_PKTS + 4].copy_from_slice(&(pkts.len() as u32).to_ne_bytes());
        b[BLOCK_FIRST_PKT..BLOCK_FIRST_PKT + 4].copy_from_slice(&48u32.to_ne_bytes());
        for (i, (ifindex, pkttype, data)) in pkts.iter().enumerate() {
            let start = b.len();
            let mac = 80usize;
            let len = (mac + data.len()).next_multiple_of(16);
            b.resize(start + len, 0);
            let h = &mut b[start..];
            let next = if i + 1 == pkts.len() { 0 } else { len as u32 };
            h[0..4].copy_from_slice(&next.to_ne_bytes());
            h[4..8].copy_from_slice(&(1000 + i as u32).to_ne_bytes());
            h[8..12].copy_from_slice(&5_000_000u32.to_ne_bytes());
            h[12..16].copy_from_slice(&(data.len() as u32).to_ne_bytes());
            h[24..26].copy_from_slice(&(mac as u16).to_ne_bytes());
            h[SLL_IFINDEX..SLL_IFINDEX + 4].copy_from_slice(&ifindex.to_ne_bytes());
            h[SLL_PKTTYPE] = *pkttype;
            h[mac..mac + data.len()].copy_from_slice(data);
        }
        b
    }

    #[test]
    fn block_walk_hands_over_packets_and_skips_loopback_sent_copies() {
        let b = block(&[
            (1, 0, b"first"),
            (1, PACKET_OUTGOING, b"dup"),
            (2, PACKET_OUTGOING, b"out"),
        ]);
        let mut got = Vec::new();
        let n = walk_block(&b, 1, &mut |ts, p| got.push((ts, p.to_vec())));
        assert_eq!(n, 2);
        assert_eq!(
            got,
            vec![
                (1000 * 1_000_000 + 5000, b"first".to_vec()),
                (1002 * 1_000_000 + 5000, b"out".to_vec())
            ]
        );
    }

    #[test]
    fn damaged_blocks_never_read_outside() {
        let b = block(&[(1, 0, b"abc"), (1, 0, b"def")]);
        // Truncated anywhere, with the counts and offsets lying: no panic, fewer packets.
        for cut in 0..b.len() {
            let mut n = 0;
            walk_block(&b[..cut], 7, &mut |_, _| n += 1);
            assert!(n <= 2);
        }
        let mut lying = b.clone();
        lying[BLOCK_NUM_PKTS..BLOCK_NUM_PKTS + 4].copy_from_slice(&u32::MAX.to_ne_bytes());
        lying[48 + 12..48 + 16].copy_from_slice(&u32::MAX.to_ne_bytes());
        let mut n = 0;
        walk_block(&lying, 7, &mut |_, _| n += 1);
        assert_eq!(n, 1, "the packet whose length lies is skipped");
    }

    #[test]
    fn filters_compile_for_raw_ip_with_the_snaplen() {
        let f = compile_filter("tcp port 80", 1500).unwrap();
        assert!(f.len() > 4);
        // Accepting returns the snaplen, rejecting 0.
        assert!(f.iter().any(|i| i.code == 0x06 && i.k == 1500));
        assert!(f.iter().any(|i| i.code == 0x06 && i.k == 0));
        assert!(compile_filter("tcp port", 1500).is_err());
    }
}

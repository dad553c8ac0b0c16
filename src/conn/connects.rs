//! The connect-time recorder: which process opened each outgoing TCP connection, told by
//! the kernel at the moment it connects.
//!
//! # Why this module exists
//!
//! [`super::procs`] finds a socket's owner among the processes alive at a poll. A client
//! that connects, exchanges a few bytes and exits between two polls (a cron job, a health
//! check, a CLI tool) is gone by then: its close notification carries the 4-tuple, not the
//! process. The kernel knows the process when it connects, so a small BPF program records
//! it there, and the agent learns it within milliseconds, while the process usually still
//! runs.
//!
//! The program is attached to the `inet_sock_set_state` tracepoint as a raw tracepoint
//! (`args = (sk, oldstate, newstate)`), which needs neither tracefs (often not mounted, in
//! containers in particular) nor a cgroup. It is assembled with [`super::bpf`] (which says
//! why) from the kernel's field offsets in its BTF:
//!
//! - on the transition to `SYN_SENT`, which runs in the connecting process but before the
//!   kernel picks the source port, it stores the process (tgid, uid, the group leader's
//!   start time, comm and parent's tgid) and the time in a map keyed by the socket's
//!   address (`pending`);
//! - on the transition out of `SYN_SENT` (to `ESTABLISHED`, or `CLOSE` on failure) the
//!   4-tuple is complete: it reads the namespace and the addresses from the socket, and
//!   sends (4-tuple, process) through a ring buffer the agent drains, and into an LRU map
//!   keyed by the 4-tuple (`owners`), where the agent looks up what it did not drain in
//!   time (a full ring buffer).
//!
//! - on every transition to `ESTABLISHED` (an outgoing connection completing, or an
//!   incoming one leaving `SYN_RECV`) or to `LISTEN`, it sends the 4-tuple and the two
//!   states through a second ring buffer (`changes`), which the agent reads at each poll
//!   to look up only the sockets that appeared ([`super::source`] says how); a record
//!   that does not fit is counted in an array map (`lost`), which makes the next poll a
//!   full dump.
//!
//! Both maps hold at most `connbeat.connect_recorder_entries` entries; the ring buffer
//! holds at most 2,048 records (256 KiB) between two drains, the map keeps the rest. Reusing the address of a socket that never left
//! `SYN_SENT`'s entry simply overwrites it.
//!
//! Loading needs what the fd iterator needs (`CAP_BPF` and `CAP_PERFMON`, or
//! `CAP_SYS_ADMIN`; kernel BTF) and Linux 5.8+ (ring buffers); where it fails the caller
//! runs without it.

use super::bpf::{self, Asm, BpfError, RingBuf, op};
use super::btf::Btf;
use super::procs::ProcessInfo;
use crate::fast_hash::FxMap;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

/// Size of a 4-tuple key: netns u32, source port u16 (host order), destination port
/// u16 (network order), source and destination addresses (16 bytes each, IPv4 mapped).
pub const KEY: usize = 40;
/// Size of a value: tgid u32, uid u32, start time u64 (ns since boot), comm [16],
/// ppid u32, pad u32, connect time u64 (ns since boot).
pub const VALUE: usize = 48;
/// A ring buffer record: key then value.
pub const RECORD: usize = KEY + VALUE;

/// A state change record: key, old state u8, new state u8, 6 bytes of padding.
pub const CHANGE: usize = KEY + 8;

/// The 4-tuple key of a connection as the program writes it.
pub type Key = [u8; KEY];

/// A TCP socket that entered `ESTABLISHED` or `LISTEN`, as the kernel saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub netns: u32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub old_state: u8,
    pub new_state: u8,
}

/// A record of the change ring buffer, parsed; `None` when it is not one.
pub fn parse_change(rec: &[u8]) -> Option<Change> {
    let rec = rec.get(..CHANGE)?;
    let key = &rec[..KEY];
    Some(Change {
        netns: u32::from_le_bytes(key[0..4].try_into().ok()?),
        local: SocketAddr::new(ip(&key[8..24]), u16::from_le_bytes([key[4], key[5]])),
        remote: SocketAddr::new(ip(&key[24..40]), u16::from_be_bytes([key[6], key[7]])),
        old_state: rec[KEY],
        new_state: rec[KEY + 1],
    })
}

/// One connect, as the kernel saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub netns: u32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The connecting process (thread-group id, in the initial pid namespace).
    pub tgid: u32,
    pub uid: u32,
    pub ppid: u32,
    /// When the process started, in ns since boot (what `/proc/PID/stat`'s start time
    /// counts in clock ticks): tells it from a later process with the same pid.
    pub start_ns: u64,
    /// The kernel's `comm` of the process (its group leader).
    pub comm: String,
}

/// The key of a connection in `netns` from `local` to `remote`.
pub fn key_of(netns: u64, local: SocketAddr, remote: SocketAddr) -> Key {
    let mut k = [0u8; KEY];
    k[0..4].copy_from_slice(&(netns as u32).to_le_bytes());
    k[4..6].copy_from_slice(&local.port().to_le_bytes());
    k[6..8].copy_from_slice(&remote.port().to_be_bytes());
    k[8..24].copy_from_slice(&v6(local.ip()).octets());
    k[24..40].copy_from_slice(&v6(remote.ip()).octets());
    k
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn ip(b: &[u8]) -> IpAddr {
    let a: [u8; 16] = b.try_into().unwrap_or([0; 16]);
    let v6 = Ipv6Addr::from(a);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// A record of the ring buffer (or a key and its value from the map), parsed; `None` when
/// it is not one.
pub fn parse(key: &[u8], value: &[u8]) -> Option<Connect> {
    if key.len() != KEY || value.len() != VALUE {
        return None;
    }
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let comm = &value[16..32];
    let end = comm.iter().position(|&c| c == 0).unwrap_or(comm.len());
    Some(Connect {
        netns: u32_at(key, 0),
        local: SocketAddr::new(ip(&key[8..24]), u16::from_le_bytes([key[4], key[5]])),
        remote: SocketAddr::new(ip(&key[24..40]), u16::from_be_bytes([key[6], key[7]])),
        tgid: u32_at(value, 0),
        uid: u32_at(value, 4),
        start_ns: u64_at(value, 8),
        comm: String::from_utf8_lossy(&comm[..end]).into_owned(),
        ppid: u32_at(value, 32),
    })
}

/// Kernel field offsets the program reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    task_group_leader: i16,
    task_real_parent: i16,
    task_tgid: i16,
    task_start: i16,
    task_comm: i16,
    sk_family: i16,
    sk_num: i16,
    sk_dport: i16,
    sk_saddr: i16,
    sk_daddr: i16,
    sk_v6_saddr: i16,
    sk_v6_daddr: i16,
    sk_net: i16,
    net_inum: i16,
}

impl Layout {
    fn from_btf(btf: &Btf) -> Result<Layout, BpfError> {
        let f = |s, m, size| bpf::field(btf, s, m, size);
        Ok(Layout {
            task_group_leader: f("task_struct", "group_leader", 8)?,
            task_real_parent: f("task_struct", "real_parent", 8)?,
            task_tgid: f("task_struct", "tgid", 4)?,
            task_start: f("task_struct", "start_boottime", 8)?,
            task_comm: f("task_struct", "comm", 0)?,
            sk_family: f("sock_common", "skc_family", 2)?,
            sk_num: f("sock_common", "skc_num", 2)?,
            sk_dport: f("sock_common", "skc_dport", 2)?,
            sk_saddr: f("sock_common", "skc_rcv_saddr", 4)?,
            sk_daddr: f("sock_common", "skc_daddr", 4)?,
            sk_v6_saddr: f("sock_common", "skc_v6_rcv_saddr", 16)?,
            sk_v6_daddr: f("sock_common", "skc_v6_daddr", 16)?,
            sk_net: f("sock_common", "skc_net", 8)?,
            net_inum: f("net", "ns", 0)?
                .checked_add(f("ns_common", "inum", 4)?)
                .ok_or_else(|| BpfError::Missing("net.ns.inum".into()))?,
        })
    }
}

const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_LISTEN: i32 = 10;
const AF_INET6: i32 = 10;

// Stack layout (offsets from the frame pointer r10).
const SKADDR: i32 = -8;
const TMP: i32 = -16;
const REC: i32 = -16 - RECORD as i32;
const K: i32 = REC;
const V: i32 = REC + KEY as i32;

/// The maps the program writes.
struct Maps<'a> {
    pending: &'a OwnedFd,
    owners: &'a OwnedFd,
    ring: &'a OwnedFd,
    changes: &'a OwnedFd,
    lost: &'a OwnedFd,
}

/// The program of the module documentation, with this kernel's offsets and these maps.
fn program(l: &Layout, m: &Maps<'_>) -> Vec<bpf::Insn> {
    use op::*;
    let mut a = Asm::default();
    let st = |off: i32| off as i16;
    a.i(MOV64_REG, 6, 1, 0, 0)
        .i(LDX_DW, 7, 6, 0, 0) // sk
        .i(STX_DW, 10, 7, st(SKADDR), 0)
        .i(LDX_DW, 2, 6, 16, 0) // newstate
        .jump(JNE_IMM, 2, TCP_SYN_SENT, "complete");
    // Entering SYN_SENT, in the connecting process: who it is.
    a.i(CALL, 0, 0, 0, FUNC_GET_CURRENT_PID_TGID)
        .i(RSH64_IMM, 0, 0, 0, 32)
        .i(STX_W, 10, 0, st(V), 0)
        .i(CALL, 0, 0, 0, FUNC_GET_CURRENT_UID_GID)
        .i(STX_W, 10, 0, st(V + 4), 0)
        .i(CALL, 0, 0, 0, FUNC_GET_CURRENT_TASK)
        .probe_read(TMP, 8, 0, l.task_group_leader)
        .i(LDX_DW, 8, 10, st(TMP), 0)
        .probe_read(V + 8, 8, 8, l.task_start)
        .probe_read(V + 16, 16, 8, l.task_comm)
        .probe_read(TMP, 8, 8, l.task_real_parent)
        .i(LDX_DW, 8, 10, st(TMP), 0)
        .probe_read(V + 32, 4, 8, l.task_tgid)
        .i(ST_W, 10, 0, st(V + 36), 0)
        .i(CALL, 0, 0, 0, FUNC_KTIME_GET_BOOT_NS)
        .i(STX_DW, 10, 0, st(V + 40), 0)
        .all(&bpf::ld_map_fd(1, m.pending))
        .i(MOV64_REG, 2, 10, 0, 0)
        .i(ADD64_IMM, 2, 0, 0, SKADDR)
        .i(MOV64_REG, 3, 10, 0, 0)
        .i(ADD64_IMM, 3, 0, 0, V)
        .i(MOV64_IMM, 4, 0, 0, 0)
        .i(CALL, 0, 0, 0, FUNC_MAP_UPDATE)
        .jump(JA, 0, 0, "exit");
    // Any other transition: only leaving SYN_SENT, entering ESTABLISHED or LISTEN matter.
    a.label("complete")
        .i(LDX_DW, 2, 6, 8, 0) // oldstate
        .jump(JEQ_IMM, 2, TCP_SYN_SENT, "key")
        .i(LDX_DW, 2, 6, 16, 0) // newstate
        .jump(JEQ_IMM, 2, TCP_ESTABLISHED, "key")
        .jump(JNE_IMM, 2, TCP_LISTEN, "exit");
    // The 4-tuple.
    a.label("key")
        .probe_read(TMP, 8, 7, l.sk_net)
        .i(LDX_DW, 8, 10, st(TMP), 0)
        .probe_read(K, 4, 8, l.net_inum)
        .probe_read(K + 4, 2, 7, l.sk_num)
        .probe_read(K + 6, 2, 7, l.sk_dport)
        .probe_read(TMP, 2, 7, l.sk_family)
        .i(LDX_H, 1, 10, st(TMP), 0)
        .jump(JEQ_IMM, 1, AF_INET6, "v6");
    for i in 0..4 {
        a.i(ST_DW, 10, 0, st(K + 8 + 8 * i), 0);
    }
    a.i(ST_H, 10, 0, st(K + 18), 0xffff)
        .i(ST_H, 10, 0, st(K + 34), 0xffff)
        .probe_read(K + 20, 4, 7, l.sk_saddr)
        .probe_read(K + 36, 4, 7, l.sk_daddr)
        .jump(JA, 0, 0, "connect")
        .label("v6")
        .probe_read(K + 8, 16, 7, l.sk_v6_saddr)
        .probe_read(K + 24, 16, 7, l.sk_v6_daddr);
    // Leaving SYN_SENT with a recorded connect: the connect is complete.
    a.label("connect")
        .i(LDX_DW, 2, 6, 8, 0) // oldstate
        .jump(JNE_IMM, 2, TCP_SYN_SENT, "change")
        .all(&bpf::ld_map_fd(1, m.pending))
        .i(MOV64_REG, 2, 10, 0, 0)
        .i(ADD64_IMM, 2, 0, 0, SKADDR)
        .i(CALL, 0, 0, 0, FUNC_MAP_LOOKUP)
        .jump(JEQ_IMM, 0, 0, "change");
    for i in 0..(VALUE as i32 / 8) {
        a.i(LDX_DW, 1, 0, st(8 * i), 0)
            .i(STX_DW, 10, 1, st(V + 8 * i), 0);
    }
    a.all(&bpf::ld_map_fd(1, m.owners))
        .i(MOV64_REG, 2, 10, 0, 0)
        .i(ADD64_IMM, 2, 0, 0, K)
        .i(MOV64_REG, 3, 10, 0, 0)
        .i(ADD64_IMM, 3, 0, 0, V)
        .i(MOV64_IMM, 4, 0, 0, 0)
        .i(CALL, 0, 0, 0, FUNC_MAP_UPDATE)
        .all(&bpf::ld_map_fd(1, m.ring))
        .i(MOV64_REG, 2, 10, 0, 0)
        .i(ADD64_IMM, 2, 0, 0, REC)
        .i(MOV64_IMM, 3, 0, 0, RECORD as i32)
        .i(MOV64_IMM, 4, 0, 0, 0)
        .i(CALL, 0, 0, 0, FUNC_RINGBUF_OUTPUT)
        .all(&bpf::ld_map_fd(1, m.pending))
        .i(MOV64_REG, 2, 10, 0, 0)
        .i(ADD64_IMM, 2, 0, 0, SKADDR)
        .i(CALL, 0, 0, 0, FUNC_MAP_DELETE);
    // The change record (a failed connect, SYN_SENT to CLOSE, is none).
    a.label("change")
        .i(LDX_DW, 2, 6, 16, 0) // newstate
        .jump(JEQ_IMM, 2, TCP_ESTABLISHED, "emit")
        .jump(JNE_IMM, 2, TCP_LISTEN, "exit")
        .label("emit")
        .i(ST_DW, 10, 0, st(K + KEY as i32), 0)
        .i(STX_B, 10, 2, st(K + KEY as i32 + 1), 0)
        .i(LDX_DW, 2, 6, 8, 0) // oldstate
        .i(STX_B, 10, 2, st(K + KEY as i32), 0)
        .all(&bpf::ld_map_fd(1, m.changes))
        .i(MOV64_REG, 2, 10, 0, 0)
        .i(ADD64_IMM, 2, 0, 0, K)
        .i(MOV64_IMM, 3, 0, 0, CHANGE as i32)
        .i(MOV64_IMM, 4, 0, 0, 0)
        .i(CALL, 0, 0, 0, FUNC_RINGBUF_OUTPUT)
        .jump(JEQ_IMM, 0, 0, "exit")
        // No room: count it, so that the agent knows to dump.
        .i(ST_W, 10, 0, st(TMP), 0)
        .all(&bpf::ld_map_fd(1, m.lost))
        .i(MOV64_REG, 2, 10, 0, 0)
        .i(ADD64_IMM, 2, 0, 0, TMP)
        .i(CALL, 0, 0, 0, FUNC_MAP_LOOKUP)
        .jump(JEQ_IMM, 0, 0, "exit")
        .i(MOV64_IMM, 1, 0, 0, 1)
        .i(ATOMIC_DW, 0, 1, 0, ATOMIC_ADD)
        .label("exit")
        .i(MOV64_IMM, 0, 0, 0, 0)
        .i(EXIT, 0, 0, 0, 0);
    a.finish()
}

/// Size of the change ring buffer: the changes of one poll interval on a busy host
/// (9,000 records); when it overflows, the next poll dumps.
const CHANGE_RING: u32 = 512 << 10;

/// Records the ring buffer holds at most between two drains. The agent drains it as soon
/// as it has data; what does not fit waits in the LRU map. Kept small because the kernel
/// maps all of it into the agent at once, twice (it counts in the agent's RSS).
const RING_RECORDS: u32 = 2048;

/// The ring buffer's size for `entries` connects: room for `RING_RECORDS` of them at
/// most, a power of two of at least 64 KiB.
fn ring_size(entries: u32) -> u32 {
    let want = u64::from(entries.clamp(1, RING_RECORDS)) * (RECORD as u64 + 8);
    want.next_power_of_two().max(64 << 10) as u32
}

/// The loaded, attached recorder.
#[derive(Debug)]
pub struct ConnectRecorder {
    _link: OwnedFd,
    _prog: OwnedFd,
    _pending: OwnedFd,
    owners: OwnedFd,
    ring: RingBuf,
    changes: RingBuf,
    lost: OwnedFd,
    /// Records that were not connects (never expected: counted, not parsed).
    pub bad_records: u64,
}

impl ConnectRecorder {
    /// Loads and attaches the program, with maps of `entries` entries.
    pub fn load(entries: u32) -> Result<ConnectRecorder, BpfError> {
        let layout = bpf::with_kernel_btf(Layout::from_btf)?;
        let entries = entries.max(1);
        let pending = bpf::create_map(
            "connbeat_syn",
            bpf::BPF_MAP_TYPE_LRU_HASH,
            8,
            VALUE as u32,
            entries,
        )?;
        let owners = bpf::create_map(
            "connbeat_conn",
            bpf::BPF_MAP_TYPE_LRU_HASH,
            KEY as u32,
            VALUE as u32,
            entries,
        )?;
        let ring = RingBuf::create("connbeat_ring", ring_size(entries))?;
        let changes = RingBuf::create("connbeat_chg", CHANGE_RING)?;
        let lost = bpf::create_map("connbeat_lost", bpf::BPF_MAP_TYPE_ARRAY, 4, 8, 1)?;
        let insns = program(
            &layout,
            &Maps {
                pending: &pending,
                owners: &owners,
                ring: ring.map(),
                changes: changes.map(),
                lost: &lost,
            },
        );
        let prog = bpf::load_program(
            "connbeat_conn",
            bpf::BPF_PROG_TYPE_RAW_TRACEPOINT,
            0,
            0,
            &insns,
        )?;
        let link = bpf::attach_raw_tracepoint("inet_sock_set_state", &prog)?;
        Ok(ConnectRecorder {
            _link: link,
            _prog: prog,
            _pending: pending,
            owners,
            ring,
            changes,
            lost,
            bad_records: 0,
        })
    }

    /// The fd that becomes readable when connects are waiting (for `poll(2)`).
    pub fn raw_fd(&self) -> RawFd {
        self.ring.map().as_raw_fd()
    }

    /// Hands every connect recorded since the last call to `f`, in order; how many.
    pub fn drain(&mut self, mut f: impl FnMut(Connect)) -> usize {
        let mut bad = 0;
        let n = self.ring.drain(|rec| {
            match rec.get(..RECORD).and_then(|r| parse(&r[..KEY], &r[KEY..])) {
                Some(c) => f(c),
                None => bad += 1,
            }
        });
        self.bad_records += bad;
        n
    }

    /// Hands every state change recorded since the last call to `f`, in order; how many.
    pub fn drain_changes(&mut self, mut f: impl FnMut(Change)) -> usize {
        let mut bad = 0;
        let n = self.changes.drain(|rec| match parse_change(rec) {
            Some(c) => f(c),
            None => bad += 1,
        });
        self.bad_records += bad;
        n
    }

    /// State changes that did not fit in the change ring buffer, ever.
    pub fn lost_changes(&self) -> u64 {
        let mut value = [0u8; 8];
        if bpf::map_lookup(&self.lost, &0u32.to_ne_bytes(), &mut value) {
            u64::from_ne_bytes(value)
        } else {
            0
        }
    }

    /// The connect of a connection the ring buffer did not deliver, from the LRU map.
    pub fn lookup(&self, key: &Key) -> Option<Connect> {
        let mut value = [0u8; VALUE];
        bpf::map_lookup(&self.owners, key, &mut value)
            .then(|| parse(key, &value))
            .flatten()
    }
}

/// The owners of recorded connects, by 4-tuple (of the kernel's [`Key`], or any other),
/// as the agent resolved them when it drained them: at most `max` entries, the oldest
/// dropped first. A 4-tuple connected again (by whichever process) replaces the earlier
/// entry.
#[derive(Debug)]
pub struct Recorded<K = Key, V = Arc<ProcessInfo>> {
    max: usize,
    by_key: FxMap<K, (u64, V)>,
    order: VecDeque<(u64, K)>,
    seq: u64,
}

impl<K: std::hash::Hash + Eq + Copy, V> Recorded<K, V> {
    pub fn new(max: usize) -> Recorded<K, V> {
        Recorded {
            max: max.max(1),
            by_key: FxMap::default(),
            order: VecDeque::new(),
            seq: 0,
        }
    }

    pub fn insert(&mut self, key: K, owner: V) {
        self.seq += 1;
        self.by_key.insert(key, (self.seq, owner));
        self.order.push_back((self.seq, key));
        while self.order.len() > self.max {
            let Some((seq, old)) = self.order.pop_front() else {
                break;
            };
            if self.by_key.get(&old).is_some_and(|(s, _)| *s == seq) {
                self.by_key.remove(&old);
            }
        }
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.by_key.get(key).map(|(_, p)| p)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    #[test]
    fn keys_and_records_round_trip() {
        let local: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let remote: SocketAddr = "10.1.2.3:443".parse().unwrap();
        let k = key_of(4026531840, local, remote);
        assert_eq!(&k[4..8], &[0x40, 0x9c, 0x01, 0xbb]);
        assert_eq!(
            &k[8..24],
            &Ipv6Addr::from(*b"\0\0\0\0\0\0\0\0\0\0\xff\xff\x7f\0\0\x01").octets()
        );
        let mut v = [0u8; VALUE];
        v[0..4].copy_from_slice(&1234u32.to_le_bytes());
        v[4..8].copy_from_slice(&1000u32.to_le_bytes());
        v[8..16].copy_from_slice(&5_000_000_000u64.to_le_bytes());
        v[16..21].copy_from_slice(b"curl\0");
        v[32..36].copy_from_slice(&77u32.to_le_bytes());
        let c = parse(&k, &v).unwrap();
        assert_eq!(
            c,
            Connect {
                netns: 4026531840,
                local,
                remote,
                tgid: 1234,
                uid: 1000,
                ppid: 77,
                start_ns: 5_000_000_000,
                comm: "curl".into(),
            }
        );
        let v6: SocketAddr = "[2001:db8::1]:80".parse().unwrap();
        let c = parse(&key_of(1, v6, v6), &v).unwrap();
        assert_eq!((c.local, c.remote), (v6, v6));
        assert!(parse(&k[..39], &v).is_none());
        assert!(parse(&k, &v[..47]).is_none());
        // A full comm has no NUL.
        v[16..32].copy_from_slice(b"0123456789abcdef");
        assert_eq!(parse(&k, &v).unwrap().comm, "0123456789abcdef");
    }

    #[test]
    fn recorded_owners_are_bounded_and_the_latest_connect_wins() {
        let p = |pid| {
            Arc::new(ProcessInfo {
                pid,
                binary: "x".into(),
                exe: String::new(),
                cmdline: None,
                environ: vec![],
                user: String::new(),
                ppid: 0,
                ns_pid: None,
                json: Default::default(),
            })
        };
        let key = |port: u16| {
            key_of(
                1,
                SocketAddr::from(([127, 0, 0, 1], port)),
                "127.0.0.1:80".parse().unwrap(),
            )
        };
        let mut r: Recorded = Recorded::new(3);
        r.insert(key(1), p(10));
        r.insert(key(2), p(20));
        r.insert(key(1), p(11)); // the same 4-tuple, connected again
        assert_eq!(r.get(&key(1)).unwrap().pid, 11);
        r.insert(key(3), p(30)); // drops the first entry of key 1, not its latest
        assert_eq!(r.get(&key(1)).unwrap().pid, 11);
        assert_eq!(r.len(), 3);
        r.insert(key(4), p(40));
        assert!(r.get(&key(2)).is_none(), "the oldest goes first");
        assert_eq!(r.len(), 3);
        assert_eq!(r.get(&key(4)).unwrap().pid, 40);
    }

    #[test]
    fn ring_is_a_small_power_of_two() {
        assert_eq!(ring_size(1), 64 << 10);
        assert_eq!(ring_size(1024), 128 << 10);
        assert_eq!(ring_size(65_536), 256 << 10);
        assert_eq!(ring_size(u32::MAX), 256 << 10);
    }

    #[test]
    fn program_jumps_resolve() {
        let l = Layout {
            task_group_leader: 1,
            task_real_parent: 2,
            task_tgid: 3,
            task_start: 4,
            task_comm: 5,
            sk_family: 6,
            sk_num: 7,
            sk_dport: 8,
            sk_saddr: 9,
            sk_daddr: 10,
            sk_v6_saddr: 11,
            sk_v6_daddr: 12,
            sk_net: 13,
            net_inum: 14,
        };
        let fd = || OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let (a, b, c, d, e) = (fd(), fd(), fd(), fd(), fd());
        let p = program(
            &l,
            &Maps {
                pending: &a,
                owners: &b,
                ring: &c,
                changes: &d,
                lost: &e,
            },
        );
        // Every jump lands inside the program, the last two are `r0 = 0; exit`.
        for (i, ins) in p.iter().enumerate() {
            if [op::JEQ_IMM, op::JNE_IMM, op::JA].contains(&ins[0]) {
                let off = i16::from_le_bytes([ins[2], ins[3]]) as i64;
                let to = i as i64 + 1 + off;
                assert!(to > i as i64 && to < p.len() as i64, "jump at {i}");
            }
        }
        assert_eq!(p[p.len() - 1][0], op::EXIT);
    }

    /// Loads the real program and sees this process's own connect.
    #[test]
    fn records_this_process_connect() {
        let mut rec = match ConnectRecorder::load(1024) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("skipped: the connect recorder does not load here: {e}");
                return;
            }
        };
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (local, remote) = (s.local_addr().unwrap(), s.peer_addr().unwrap());
        let mut found = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        while found.is_none() && Instant::now() < deadline {
            rec.drain(|c| {
                if c.local == local && c.remote == remote {
                    found = Some(c);
                }
            });
            std::thread::sleep(Duration::from_millis(5));
        }
        let c = found.expect("our connect in the ring buffer");
        assert_eq!(c.tgid, std::process::id());
        assert_eq!(c.uid, nix::unistd::getuid().as_raw());
        assert_eq!(c.ppid, std::os::unix::process::parent_id());
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(c.comm, comm.trim_end());
        let own_ns = super::super::netns::current(std::path::Path::new("/proc")).unwrap();
        assert_eq!(u64::from(c.netns), own_ns);
        // The same from the LRU map.
        let again = rec
            .lookup(&key_of(own_ns, local, remote))
            .expect("in the map");
        assert_eq!(again, c);
        assert!(rec.lookup(&key_of(own_ns, remote, local)).is_none());
    }
}

//! BPF programs without a BPF toolchain: an instruction assembler (with labels), the
//! `bpf(2)` calls an iterator and a raw tracepoint program need (load, link, maps, a ring
//! buffer reader), and the kernel's BTF.
//!
//! # Why this module exists
//!
//! [`super::fd_iter`] lists every process's socket fds with a BPF iterator, in the kernel,
//! instead of one `readlink` per fd. Its program is a couple of dozen instructions,
//! assembled here rather than compiled from C: compiling would need clang at build time,
//! and the BPF loader libraries (aya, libbpf) parse the whole kernel BTF to relocate a
//! handful of field offsets, which costs more than the work the program saves (measured
//! with aya: ~100 ms and ~35 MB per start). The offsets come from [`super::btf`], a reader
//! made for these few lookups. [`super::connects`] assembles its connect-time recorder the
//! same way.
//!
//! Loading needs `CAP_BPF` and `CAP_PERFMON` (or `CAP_SYS_ADMIN`) and a kernel with BTF
//! (Linux 5.8+ for iterators); where it fails, the error says why and the callers use
//! their `/proc` or netlink paths instead.

use super::btf::{Btf, BtfError, Kind};
use std::ffi::c_void;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use thiserror::Error;

/// Where the kernel describes its types.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, Error)]
pub enum BpfError {
    #[error("cannot read {VMLINUX_BTF}: {0}")]
    NoBtf(io::Error),
    #[error("kernel BTF: {0}")]
    Btf(#[from] BtfError),
    #[error("kernel BTF has no {0}")]
    Missing(String),
    #[error("{what}: {source}")]
    Syscall {
        what: &'static str,
        source: io::Error,
    },
    #[error("the verifier refused the program: {source}: {log}")]
    Refused { source: io::Error, log: String },
}

/// Runs `f` on the running kernel's BTF. The file is mapped where the kernel allows it
/// (6.16+): those pages are the kernel's own and cost none of our memory. It is read and
/// freed at once otherwise.
pub fn with_kernel_btf<T>(f: impl FnOnce(&Btf) -> Result<T, BpfError>) -> Result<T, BpfError> {
    let file = File::open(VMLINUX_BTF).map_err(BpfError::NoBtf)?;
    // SAFETY: the kernel's BTF is read-only and never changes while it runs.
    match unsafe { memmap2::Mmap::map(&file) } {
        Ok(map) => f(&Btf::parse(&map)?),
        Err(_) => {
            let mut data = Vec::new();
            (&file).read_to_end(&mut data).map_err(BpfError::NoBtf)?;
            f(&Btf::parse(&data)?)
        }
    }
}

/// Offset of a member of a struct as a load offset, checking the member's size (0: any): a member
/// of another size would need another load.
pub fn field(btf: &Btf, strukt: &str, member: &str, size: u32) -> Result<i16, BpfError> {
    let missing = || BpfError::Missing(format!("{strukt}.{member} ({size} bytes)"));
    let id = btf
        .find(Kind::Struct, strukt)
        .ok_or_else(|| BpfError::Missing(format!("struct {strukt}")))?;
    let m = btf
        .member(id, member)
        .filter(|m| size == 0 || m.size == size)
        .ok_or_else(missing)?;
    i16::try_from(m.offset).map_err(|_| missing())
}

/// The id of the kernel function an iterator of this kind attaches to.
pub fn iter_target(btf: &Btf, kind: &str) -> Result<u32, BpfError> {
    let name = format!("bpf_iter_{kind}");
    btf.find(Kind::Func, &name)
        .ok_or(BpfError::Missing(format!("{name} (Linux 5.8+)")))
}

/// One BPF instruction (`struct bpf_insn`).
pub type Insn = [u8; 8];

pub fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    let mut i = [0u8; 8];
    i[0] = code;
    i[1] = (src << 4) | dst;
    i[2..4].copy_from_slice(&off.to_le_bytes());
    i[4..8].copy_from_slice(&imm.to_le_bytes());
    i
}

/// Opcodes (BPF_CLASS | BPF_OP or BPF_MODE | BPF_SRC or BPF_SIZE) and helper ids.
pub mod op {
    pub const MOV64_REG: u8 = 0xbf;
    pub const MOV64_IMM: u8 = 0xb7;
    pub const ADD64_IMM: u8 = 0x07;
    pub const AND64_IMM: u8 = 0x57;
    pub const LDX_DW: u8 = 0x79;
    pub const LDX_W: u8 = 0x61;
    pub const LDX_H: u8 = 0x69;
    pub const STX_DW: u8 = 0x7b;
    pub const STX_W: u8 = 0x63;
    pub const JEQ_IMM: u8 = 0x15;
    pub const JNE_IMM: u8 = 0x55;
    pub const CALL: u8 = 0x85;
    pub const EXIT: u8 = 0x95;
    pub const JA: u8 = 0x05;
    pub const RSH64_IMM: u8 = 0x77;
    pub const LDX_B: u8 = 0x71;
    pub const STX_H: u8 = 0x6b;
    pub const STX_B: u8 = 0x73;
    pub const ST_DW: u8 = 0x7a;
    pub const ST_W: u8 = 0x62;
    pub const ST_H: u8 = 0x6a;
    /// `BPF_STX | BPF_ATOMIC | BPF_DW`, with `imm` the operation.
    pub const ATOMIC_DW: u8 = 0xdb;
    pub const ATOMIC_ADD: i32 = 0;
    /// `BPF_LD | BPF_IMM | BPF_DW`: a 64-bit immediate over two instructions.
    pub const LD_IMM64: u8 = 0x18;
    /// `src` of [`LD_IMM64`] when its immediate is a map fd.
    pub const PSEUDO_MAP_FD: u8 = 1;
    pub const FUNC_MAP_LOOKUP: i32 = 1;
    pub const FUNC_MAP_UPDATE: i32 = 2;
    pub const FUNC_MAP_DELETE: i32 = 3;
    pub const FUNC_GET_CURRENT_PID_TGID: i32 = 14;
    pub const FUNC_GET_CURRENT_UID_GID: i32 = 15;
    pub const FUNC_GET_CURRENT_TASK: i32 = 35;
    pub const FUNC_PROBE_READ_KERNEL: i32 = 113;
    pub const FUNC_KTIME_GET_BOOT_NS: i32 = 125;
    pub const FUNC_SEQ_WRITE: i32 = 127;
    pub const FUNC_RINGBUF_OUTPUT: i32 = 130;
}

/// The two instructions loading a map's fd into `dst`.
pub fn ld_map_fd(dst: u8, map: &OwnedFd) -> [Insn; 2] {
    [
        insn(op::LD_IMM64, dst, op::PSEUDO_MAP_FD, 0, map.as_raw_fd()),
        insn(0, 0, 0, 0, 0),
    ]
}

/// Builds a program with named jump targets: jumps are written with a label, resolved by
/// [`Asm::finish`].
#[derive(Default)]
pub struct Asm {
    insns: Vec<Insn>,
    labels: Vec<(&'static str, usize)>,
    jumps: Vec<(usize, &'static str)>,
}

impl Asm {
    pub fn i(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) -> &mut Asm {
        self.insns.push(insn(code, dst, src, off, imm));
        self
    }

    pub fn all(&mut self, insns: &[Insn]) -> &mut Asm {
        self.insns.extend_from_slice(insns);
        self
    }

    /// A jump (`code` with immediate `imm` compared to `dst`) to `label`.
    pub fn jump(&mut self, code: u8, dst: u8, imm: i32, label: &'static str) -> &mut Asm {
        self.jumps.push((self.insns.len(), label));
        self.i(code, dst, 0, 0, imm)
    }

    pub fn label(&mut self, name: &'static str) -> &mut Asm {
        self.labels.push((name, self.insns.len()));
        self
    }

    /// `call helper(r1 = fp + at, r2 = len, r3 = base + off)`: a kernel read into the stack.
    pub fn probe_read(&mut self, at: i32, len: i32, base: u8, off: i16) -> &mut Asm {
        self.i(op::MOV64_REG, 1, 10, 0, 0)
            .i(op::ADD64_IMM, 1, 0, 0, at)
            .i(op::MOV64_IMM, 2, 0, 0, len)
            .i(op::MOV64_REG, 3, base, 0, 0)
            .i(op::ADD64_IMM, 3, 0, 0, i32::from(off))
            .i(op::CALL, 0, 0, 0, op::FUNC_PROBE_READ_KERNEL)
    }

    /// The program; panics on a jump to a label never placed (a bug in the program).
    pub fn finish(mut self) -> Vec<Insn> {
        for &(at, name) in &self.jumps {
            let target = self
                .labels
                .iter()
                .find(|(n, _)| *n == name)
                .map(|&(_, t)| t)
                .unwrap_or_else(|| panic!("BPF program: no label {name}"));
            let off = (target as i64 - at as i64 - 1) as i16;
            self.insns[at][2..4].copy_from_slice(&off.to_le_bytes());
        }
        self.insns
    }
}

/// Every conditional jump of `prog` must land on its last two instructions (`r0 = 0;
/// exit`); used by the programs' tests.
pub fn jumps_land_on_exit(prog: &[Insn]) -> bool {
    prog.iter().enumerate().all(|(i, ins)| {
        if ins[0] != op::JEQ_IMM && ins[0] != op::JNE_IMM {
            return true;
        }
        let off = i16::from_le_bytes([ins[2], ins[3]]);
        i as i64 + 1 + i64::from(off) == prog.len() as i64 - 2
    })
}

// bpf(2) commands and the parts of `union bpf_attr` they use (uapi/linux/bpf.h).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_ITER_CREATE: libc::c_long = 33;
const BPF_PROG_TYPE_TRACING: u32 = 26;
const BPF_TRACE_ITER: u32 = 28;

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
    attach_btf_obj_fd: u32,
    _rest: [u32; 7],
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    iter_info: u64,
    iter_info_len: u32,
    _rest: [u32; 29],
}

#[repr(C)]
#[derive(Default)]
struct IterCreateAttr {
    link_fd: u32,
    flags: u32,
    _rest: [u64; 17],
}

/// bpf(2): returns the new fd.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a live, properly laid out `bpf_attr` variant of the given size;
    // the kernel reads it (and for PROG_LOAD writes the log into the buffer it points to,
    // which outlives the call).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a successful bpf(2) call of these commands returns a new fd that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
pub const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
pub const BPF_MAP_TYPE_ARRAY: u32 = 2;
pub const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
pub const BPF_MAP_TYPE_RINGBUF: u32 = 27;

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
    _rest: [u32; 16],
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct RawTracepointAttr {
    name: u64,
    prog_fd: u32,
    _pad: u32,
    cookie: u64,
}

/// Creates a map; its fd.
pub fn create_map(
    name: &str,
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
) -> Result<OwnedFd, BpfError> {
    let mut map_name = [0u8; 16];
    let n = name.len().min(15);
    map_name[..n].copy_from_slice(&name.as_bytes()[..n]);
    let mut attr = MapCreateAttr {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_name,
        ..Default::default()
    };
    bpf(BPF_MAP_CREATE, &mut attr).map_err(|source| BpfError::Syscall {
        what: "creating a BPF map",
        source,
    })
}

/// Looks `key` up in a map into `value` (its value size); false when absent.
pub fn map_lookup(map: &OwnedFd, key: &[u8], value: &mut [u8]) -> bool {
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        value: value.as_mut_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: `attr` points to `key` and `value`, both live for the call and of the
    // map's key and value sizes (the callers' contract); the kernel writes `value` only.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_ELEM,
            &mut attr as *mut MapElemAttr as *mut c_void,
            std::mem::size_of::<MapElemAttr>() as libc::c_uint,
        )
    };
    r == 0
}

/// Attaches a raw tracepoint program to the tracepoint `name`: the attachment lives as
/// long as the returned fd.
pub fn attach_raw_tracepoint(name: &str, prog: &OwnedFd) -> Result<OwnedFd, BpfError> {
    let cname = std::ffi::CString::new(name).map_err(|_| BpfError::Missing(name.into()))?;
    let mut attr = RawTracepointAttr {
        name: cname.as_ptr() as u64,
        prog_fd: prog.as_raw_fd() as u32,
        ..Default::default()
    };
    bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr).map_err(|source| BpfError::Syscall {
        what: "attaching to the raw tracepoint",
        source,
    })
}

/// A BPF ring buffer map, mapped for reading (`BPF_MAP_TYPE_RINGBUF`, Linux 5.8+): the
/// kernel writes records after `producer_pos`, we read up to it and move `consumer_pos`.
pub struct RingBuf {
    map: OwnedFd,
    /// The consumer page (read-write).
    consumer: *mut u8,
    /// The producer page, then the data pages mapped twice (a record that wraps around
    /// reads as one piece).
    producer: *const u8,
    page: usize,
    size: usize,
}

// SAFETY: the mappings belong to this value alone; the kernel synchronises with us
// through the atomic positions.
unsafe impl Send for RingBuf {}
unsafe impl Sync for RingBuf {}

impl std::fmt::Debug for RingBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingBuf").field("size", &self.size).finish()
    }
}

const RINGBUF_BUSY: u32 = 1 << 31;
const RINGBUF_DISCARD: u32 = 1 << 30;
const RINGBUF_HEADER: usize = 8;

impl RingBuf {
    /// Creates a ring buffer of `size` bytes (a power of two, at least a page).
    pub fn create(name: &str, size: u32) -> Result<RingBuf, BpfError> {
        let map = create_map(name, BPF_MAP_TYPE_RINGBUF, 0, 0, size)?;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let size = size as usize;
        let fd = map.as_raw_fd();
        let mapping = |len: usize, prot: i32, off: usize| {
            // SAFETY: a new shared mapping of the map's fd, at offsets the kernel defines
            // for ring buffers; the result is checked.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    prot,
                    libc::MAP_SHARED,
                    fd,
                    off as libc::off_t,
                )
            };
            if p == libc::MAP_FAILED {
                Err(BpfError::Syscall {
                    what: "mapping the ring buffer",
                    source: io::Error::last_os_error(),
                })
            } else {
                Ok(p as *mut u8)
            }
        };
        let consumer = mapping(page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer = match mapping(page + 2 * size, libc::PROT_READ, page) {
            Ok(p) => p,
            Err(e) => {
                // SAFETY: mapped just above, with this length.
                unsafe { libc::munmap(consumer.cast(), page) };
                return Err(e);
            }
        };
        Ok(RingBuf {
            map,
            consumer,
            producer,
            page,
            size,
        })
    }

    pub fn map(&self) -> &OwnedFd {
        &self.map
    }

    /// Calls `f` on every record written since the last call, in order, and frees them.
    pub fn drain(&mut self, mut f: impl FnMut(&[u8])) -> usize {
        use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
        // SAFETY: both positions are 8-byte aligned u64s at the start of their pages,
        // which stay mapped as long as `self`; the kernel updates them atomically.
        let (cons_pos, prod_pos) = unsafe {
            (
                &*(self.consumer as *const AtomicU64),
                &*(self.producer as *const AtomicU64),
            )
        };
        let data = self.producer.wrapping_add(self.page);
        let mask = self.size as u64 - 1;
        let mut cons = cons_pos.load(Ordering::Acquire);
        let mut n = 0;
        loop {
            let prod = prod_pos.load(Ordering::Acquire);
            if cons >= prod {
                return n;
            }
            while cons < prod {
                let at = (cons & mask) as usize;
                // SAFETY: `at` is inside the data area (masked) and 8-byte aligned (records
                // are); the header is written atomically by the kernel.
                let hdr = unsafe { &*(data.add(at) as *const AtomicU32) }.load(Ordering::Acquire);
                if hdr & RINGBUF_BUSY != 0 {
                    return n;
                }
                let len = (hdr & !(RINGBUF_BUSY | RINGBUF_DISCARD)) as usize;
                if len > self.size {
                    // Not a record the kernel wrote: stop here rather than read beyond.
                    return n;
                }
                if hdr & RINGBUF_DISCARD == 0 {
                    // SAFETY: the data area is mapped twice in a row, so `len` bytes from
                    // any offset inside the first copy are mapped.
                    let rec =
                        unsafe { std::slice::from_raw_parts(data.add(at + RINGBUF_HEADER), len) };
                    f(rec);
                    n += 1;
                }
                cons += ((RINGBUF_HEADER + len + 7) & !7) as u64;
                cons_pos.store(cons, Ordering::Release);
            }
        }
    }
}

impl Drop for RingBuf {
    fn drop(&mut self) {
        // SAFETY: both mappings were made in `create` with these lengths and are not
        // used after this.
        unsafe {
            libc::munmap(self.consumer.cast(), self.page);
            libc::munmap(self.producer as *mut c_void, self.page + 2 * self.size);
        }
    }
}

/// A loaded iterator program, attached: each [`IterLink::read`] runs one walk.
pub struct IterLink {
    link: OwnedFd,
    _prog: OwnedFd,
    buf: Vec<u8>,
}

impl std::fmt::Debug for IterLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IterLink")
            .field("link", &self.link.as_raw_fd())
            .finish()
    }
}

/// Loads a program: its fd, or the verifier's reason (the last lines of its log).
pub fn load_program(
    name: &str,
    prog_type: u32,
    expected_attach_type: u32,
    attach_btf_id: u32,
    insns: &[Insn],
) -> Result<OwnedFd, BpfError> {
    let license = b"GPL\0";
    let mut prog_name = [0u8; 16];
    let n = name.len().min(15);
    prog_name[..n].copy_from_slice(&name.as_bytes()[..n]);
    let load = |log: &mut [u8]| {
        let mut attr = ProgLoadAttr {
            prog_type,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name,
            expected_attach_type,
            attach_btf_id,
            ..Default::default()
        };
        if !log.is_empty() {
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
        }
        bpf(BPF_PROG_LOAD, &mut attr)
    };
    match load(&mut []) {
        Ok(fd) => Ok(fd),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EINVAL)) => {
            // Load again with the verifier's log, for a message that says why.
            let mut log = vec![0u8; 256 * 1024];
            let _ = load(&mut log);
            let end = log.iter().position(|&c| c == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let mut last: Vec<&str> = text.lines().rev().take(3).collect();
            last.reverse();
            Err(BpfError::Refused {
                source: e,
                log: last.join(" | "),
            })
        }
        Err(e) => Err(BpfError::Syscall {
            what: "loading the BPF program",
            source: e,
        }),
    }
}

impl IterLink {
    /// Loads `insns` as an iterator attached to the kernel function `attach_btf_id`.
    pub fn load(name: &str, attach_btf_id: u32, insns: &[Insn]) -> Result<IterLink, BpfError> {
        let prog = load_program(
            name,
            BPF_PROG_TYPE_TRACING,
            BPF_TRACE_ITER,
            attach_btf_id,
            insns,
        )?;
        let mut attr = LinkCreateAttr {
            prog_fd: prog.as_raw_fd() as u32,
            attach_type: BPF_TRACE_ITER,
            ..Default::default()
        };
        let link = bpf(BPF_LINK_CREATE, &mut attr).map_err(|source| BpfError::Syscall {
            what: "creating the iterator link",
            source,
        })?;
        Ok(IterLink {
            link,
            _prog: prog,
            buf: Vec::new(),
        })
    }

    /// Runs one walk of the iterator (in the calling thread's namespaces) and returns
    /// everything the program wrote.
    pub fn read(&mut self) -> io::Result<&[u8]> {
        let mut attr = IterCreateAttr {
            link_fd: self.link.as_raw_fd() as u32,
            ..Default::default()
        };
        let mut file = File::from(bpf(BPF_ITER_CREATE, &mut attr)?);
        // A large buffer is kept only while it is needed (one walk of a big host).
        if self.buf.capacity() > 16 << 20 {
            self.buf = Vec::new();
        }
        self.buf.clear();
        // The kernel gives up a read() with EAGAIN after a million objects without
        // output (a million files that are not sockets, in a row): read on.
        let mut pauses = 0;
        loop {
            match file.read_to_end(&mut self.buf) {
                Ok(_) => return Ok(&self.buf),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && pauses < 10_000 => pauses += 1,
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_encode_registers_offset_and_immediate() {
        let i = insn(op::LDX_W, 3, 7, -16, 0x1234_5678);
        assert_eq!(i, [0x61, 0x73, 0xf0, 0xff, 0x78, 0x56, 0x34, 0x12]);
        assert!(jumps_land_on_exit(&[
            insn(op::JEQ_IMM, 1, 0, 1, 0),
            insn(op::MOV64_IMM, 0, 0, 0, 0),
            insn(op::MOV64_IMM, 0, 0, 0, 0),
            insn(op::EXIT, 0, 0, 0, 0),
        ]));
        assert!(!jumps_land_on_exit(&[
            insn(op::JEQ_IMM, 1, 0, 1, 0),
            insn(op::MOV64_IMM, 0, 0, 0, 0),
            insn(op::EXIT, 0, 0, 0, 0),
        ]));
    }
}

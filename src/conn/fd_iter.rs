//! Every socket fd of every process in one read: a BPF `task_file` iterator.
//!
//! # Why this module exists
//!
//! The kernel tells which process holds a socket only through `/proc/PID/fd/N`, one
//! `readlinkat` per fd, ~2.5 µs each: with 20,000 sockets that is most of a first poll.
//! Since Linux 5.8 a BPF iterator can walk every task's file table inside the kernel and
//! hand back just the socket fds: one `read` returns `(pid, fd, inode)` for all of them,
//! at a small fraction of the cost. [`super::procs::ProcIndex`] uses it, when it loads,
//! in place of reading fd links; everything else about attribution stays the same.
//!
//! The program is 23 instructions, assembled here rather than compiled from C: compiling
//! would need clang and a BPF object loader at build time, and the loaders (aya, libbpf)
//! parse the whole kernel BTF to relocate four field offsets, which costs more than the
//! scan it replaces. The offsets come from [`super::btf`], the instructions are the ones
//! clang emits for the equivalent C:
//!
//! ```c
//! int socket_fds(struct bpf_iter__task_file *ctx) {
//!     struct task_struct *task = ctx->task;
//!     struct file *file = ctx->file;
//!     if (!task || !file) return 0;
//!     struct inode *inode = file->f_inode;
//!     if ((inode->i_mode & S_IFMT) != S_IFSOCK) return 0;
//!     struct { u32 tgid, fd; u64 ino; } r = { task->tgid, ctx->fd, inode->i_ino };
//!     bpf_seq_write(ctx->meta->seq, &r, sizeof r);
//!     return 0;
//! }
//! ```
//!
//! The `task_file` iterator visits each thread group's file table once (threads sharing
//! it are skipped) and reports the *global* tgid, so it is used only when the agent sees
//! the initial pid namespace's `/proc` (see [`FdIter::usable_for`]).
//!
//! Loading needs `CAP_BPF` and `CAP_PERFMON` (or `CAP_SYS_ADMIN`) and a kernel with BTF;
//! where it fails, the reason is returned and the caller reads `/proc` instead.

use super::btf::{Btf, Kind};
use std::ffi::c_void;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use thiserror::Error;

/// Where the kernel describes its types.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, Error)]
pub enum FdIterError {
    #[error("cannot read {VMLINUX_BTF}: {0}")]
    NoBtf(io::Error),
    #[error("kernel BTF: {0}")]
    Btf(#[from] super::btf::BtfError),
    #[error("kernel BTF has no {0}")]
    Missing(&'static str),
    #[error("{what}: {source}")]
    Syscall {
        what: &'static str,
        source: io::Error,
    },
    #[error("the verifier refused the program: {source}: {log}")]
    Refused { source: io::Error, log: String },
}

/// One socket fd of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SocketFd {
    /// Thread-group id (the process id) in the initial pid namespace.
    pub pid: u32,
    pub fd: u32,
    pub inode: u64,
}

const RECORD: usize = 16;

/// A loaded iterator: each [`FdIter::read_all`] walks every process's file table once.
pub struct FdIter {
    link: OwnedFd,
    // Kept open with the link (the link holds the program too; this is for clarity).
    _prog: OwnedFd,
    buf: Vec<u8>,
}

impl std::fmt::Debug for FdIter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FdIter")
            .field("link", &self.link.as_raw_fd())
            .finish()
    }
}

/// Field offsets the program needs, from the kernel's BTF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    attach_btf_id: u32,
    ctx_meta: i16,
    ctx_task: i16,
    ctx_fd: i16,
    ctx_file: i16,
    meta_seq: i16,
    task_tgid: i16,
    file_inode: i16,
    inode_mode: i16,
    inode_ino: i16,
}

impl Layout {
    fn from_btf(btf: &Btf) -> Result<Layout, FdIterError> {
        let strukt = |name: &'static str| {
            btf.find(Kind::Struct, name)
                .ok_or(FdIterError::Missing(name))
        };
        // (struct, member, required size): a member of another size would need other loads.
        let field = |id: u32, what: &'static str, member: &str, size: u32| {
            let m = btf
                .member(id, member)
                .filter(|m| m.size == size)
                .ok_or(FdIterError::Missing(what))?;
            i16::try_from(m.offset).map_err(|_| FdIterError::Missing(what))
        };
        let ctx = strukt("bpf_iter__task_file")?;
        let meta = strukt("bpf_iter_meta")?;
        let task = strukt("task_struct")?;
        let file = strukt("file")?;
        let inode = strukt("inode")?;
        Ok(Layout {
            attach_btf_id: btf
                .find(Kind::Func, "bpf_iter_task_file")
                .ok_or(FdIterError::Missing("bpf_iter_task_file (Linux 5.8+)"))?,
            ctx_meta: field(ctx, "bpf_iter__task_file.meta", "meta", 8)?,
            ctx_task: field(ctx, "bpf_iter__task_file.task", "task", 8)?,
            ctx_fd: field(ctx, "bpf_iter__task_file.fd", "fd", 4)?,
            ctx_file: field(ctx, "bpf_iter__task_file.file", "file", 8)?,
            meta_seq: field(meta, "bpf_iter_meta.seq", "seq", 8)?,
            task_tgid: field(task, "task_struct.tgid", "tgid", 4)?,
            file_inode: field(file, "file.f_inode", "f_inode", 8)?,
            inode_mode: field(inode, "inode.i_mode", "i_mode", 2)?,
            inode_ino: field(inode, "inode.i_ino", "i_ino", 8)?,
        })
    }
}

/// One BPF instruction (`struct bpf_insn`).
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut i = [0u8; 8];
    i[0] = code;
    i[1] = (src << 4) | dst;
    i[2..4].copy_from_slice(&off.to_le_bytes());
    i[4..8].copy_from_slice(&imm.to_le_bytes());
    i
}

// Opcodes (BPF_CLASS | BPF_OP/BPF_MODE | BPF_SRC/BPF_SIZE).
const MOV64_REG: u8 = 0xbf;
const MOV64_IMM: u8 = 0xb7;
const ADD64_IMM: u8 = 0x07;
const AND64_IMM: u8 = 0x57;
const LDX_DW: u8 = 0x79;
const LDX_W: u8 = 0x61;
const LDX_H: u8 = 0x69;
const STX_DW: u8 = 0x7b;
const STX_W: u8 = 0x63;
const JEQ_IMM: u8 = 0x15;
const JNE_IMM: u8 = 0x55;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
const BPF_FUNC_SEQ_WRITE: i32 = 127;
const S_IFMT: i32 = 0o170000;
const S_IFSOCK: i32 = 0o140000;

/// The program of the module documentation, with this kernel's offsets.
fn program(l: &Layout) -> Vec<[u8; 8]> {
    let (ctx, seq, task, file, inode, mode) = (2, 1, 3, 4, 4, 5);
    let mut p = vec![
        insn(MOV64_REG, ctx, 1, 0, 0),
        insn(LDX_DW, seq, ctx, l.ctx_meta, 0),
        insn(LDX_DW, file, ctx, l.ctx_file, 0),
        insn(LDX_DW, seq, seq, l.meta_seq, 0),
        insn(LDX_DW, task, ctx, l.ctx_task, 0),
        insn(JEQ_IMM, task, 0, 15, 0), // → exit
        insn(JEQ_IMM, file, 0, 14, 0),
        insn(LDX_DW, inode, file, l.file_inode, 0),
        insn(LDX_H, mode, inode, l.inode_mode, 0),
        insn(AND64_IMM, mode, 0, 0, S_IFMT),
        insn(JNE_IMM, mode, 0, 10, S_IFSOCK),
        insn(LDX_W, task, task, l.task_tgid, 0),
        insn(STX_W, 10, task, -16, 0),
        insn(LDX_W, 2, ctx, l.ctx_fd, 0),
        insn(STX_W, 10, 2, -12, 0),
        insn(LDX_DW, 2, inode, l.inode_ino, 0),
        insn(STX_DW, 10, 2, -8, 0),
        insn(MOV64_REG, 2, 10, 0, 0),
        insn(ADD64_IMM, 2, 0, 0, -16),
        insn(MOV64_IMM, 3, 0, 0, RECORD as i32),
        insn(CALL, 0, 0, 0, BPF_FUNC_SEQ_WRITE),
    ];
    p.push(insn(MOV64_IMM, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
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
    // the kernel reads (and for PROG_LOAD writes the log into the buffer it points to,
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

impl FdIter {
    /// Loads the iterator, reading the kernel's BTF from [`VMLINUX_BTF`].
    pub fn load() -> Result<FdIter, FdIterError> {
        let file = File::open(VMLINUX_BTF).map_err(FdIterError::NoBtf)?;
        // Mapped where the kernel allows it (6.16+): the pages are the kernel's own, so the
        // 5+ MB cost no memory of ours. Read otherwise, and freed at once.
        // SAFETY: the kernel's BTF is read-only and never changes while it runs.
        let layout = match unsafe { memmap2::Mmap::map(&file) } {
            Ok(map) => Layout::from_btf(&Btf::parse(&map)?)?,
            Err(_) => {
                let mut data = Vec::new();
                (&file).read_to_end(&mut data).map_err(FdIterError::NoBtf)?;
                Layout::from_btf(&Btf::parse(&data)?)?
            }
        };
        FdIter::load_with(&layout)
    }

    fn load_with(layout: &Layout) -> Result<FdIter, FdIterError> {
        let insns = program(layout);
        let license = b"GPL\0";
        let mut name = [0u8; 16];
        name[..14].copy_from_slice(b"connbeat_socks");
        let load = |log: &mut [u8]| {
            let mut attr = ProgLoadAttr {
                prog_type: BPF_PROG_TYPE_TRACING,
                insn_cnt: insns.len() as u32,
                insns: insns.as_ptr() as u64,
                license: license.as_ptr() as u64,
                prog_name: name,
                expected_attach_type: BPF_TRACE_ITER,
                attach_btf_id: layout.attach_btf_id,
                ..Default::default()
            };
            if !log.is_empty() {
                attr.log_level = 1;
                attr.log_size = log.len() as u32;
                attr.log_buf = log.as_mut_ptr() as u64;
            }
            bpf(BPF_PROG_LOAD, &mut attr)
        };
        let prog = match load(&mut []) {
            Ok(fd) => fd,
            Err(e)
                if e.raw_os_error() == Some(libc::EACCES)
                    || e.raw_os_error() == Some(libc::EINVAL) =>
            {
                // Load again with the verifier's log, for a message that says why.
                let mut log = vec![0u8; 64 * 1024];
                let _ = load(&mut log);
                let end = log.iter().position(|&c| c == 0).unwrap_or(log.len());
                let text = String::from_utf8_lossy(&log[..end]);
                let last: Vec<&str> = text.lines().rev().take(3).collect();
                return Err(FdIterError::Refused {
                    source: e,
                    log: last.into_iter().rev().collect::<Vec<_>>().join(" | "),
                });
            }
            Err(e) => {
                return Err(FdIterError::Syscall {
                    what: "loading the BPF program",
                    source: e,
                });
            }
        };
        let mut attr = LinkCreateAttr {
            prog_fd: prog.as_raw_fd() as u32,
            attach_type: BPF_TRACE_ITER,
            ..Default::default()
        };
        let link = bpf(BPF_LINK_CREATE, &mut attr).map_err(|source| FdIterError::Syscall {
            what: "creating the iterator link",
            source,
        })?;
        Ok(FdIter {
            link,
            _prog: prog,
            buf: Vec::new(),
        })
    }

    /// Whether the pids this iterator reports are the ones `proc_root` lists: only the
    /// initial pid namespace's /proc, seen from inside that namespace.
    pub fn usable_for(proc_root: &Path) -> bool {
        if proc_root != Path::new("/proc") {
            return false;
        }
        // One pid on the NSpid line: we are in the pid namespace of this /proc, and it has
        // no parent (`/proc/self` of a nested namespace lists one pid per level).
        let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
            return false;
        };
        let nspid = status.lines().find_map(|l| l.strip_prefix("NSpid:"));
        let init_ns = match nspid {
            Some(pids) => pids.split_whitespace().count() == 1,
            None => false,
        };
        // The global pid of this process, as the iterator reports it, must be our pid.
        init_ns
            && std::fs::read_link("/proc/self")
                .ok()
                .and_then(|p| p.to_str()?.parse::<u32>().ok())
                == Some(std::process::id())
    }

    /// Walks every process's file table; `out` receives its socket fds (cleared first),
    /// in the kernel's order (by pid, then fd).
    pub fn read_all(&mut self, out: &mut Vec<SocketFd>) -> io::Result<()> {
        out.clear();
        let mut attr = IterCreateAttr {
            link_fd: self.link.as_raw_fd() as u32,
            ..Default::default()
        };
        let mut file = File::from(bpf(BPF_ITER_CREATE, &mut attr)?);
        self.buf.clear();
        file.read_to_end(&mut self.buf)?;
        out.reserve(self.buf.len() / RECORD);
        for r in self.buf.chunks_exact(RECORD) {
            out.push(SocketFd {
                pid: u32::from_le_bytes(r[0..4].try_into().unwrap_or_default()),
                fd: u32::from_le_bytes(r[4..8].try_into().unwrap_or_default()),
                inode: u64::from_le_bytes(r[8..16].try_into().unwrap_or_default()),
            });
        }
        // A large buffer is kept only while it is needed (one poll of a big host).
        if self.buf.capacity() > 4 << 20 {
            self.buf = Vec::new();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn program_has_the_offsets_and_jumps_to_its_exit() {
        let l = Layout {
            attach_btf_id: 1,
            ctx_meta: 0,
            ctx_task: 8,
            ctx_fd: 16,
            ctx_file: 24,
            meta_seq: 0,
            task_tgid: 2500,
            file_inode: 32,
            inode_mode: 0,
            inode_ino: 64,
        };
        let p = program(&l);
        assert_eq!(p.len(), 23);
        // Every conditional jump lands on `r0 = 0; exit`.
        for (i, ins) in p.iter().enumerate() {
            if ins[0] == JEQ_IMM || ins[0] == JNE_IMM {
                let off = i16::from_le_bytes([ins[2], ins[3]]);
                assert_eq!(
                    i as i64 + 1 + i64::from(off),
                    p.len() as i64 - 2,
                    "insn {i}"
                );
            }
        }
        assert!(
            p.iter()
                .any(|i| i[0] == LDX_W && i16::from_le_bytes([i[2], i[3]]) == 2500)
        );
        assert_eq!(p[p.len() - 1][0], EXIT);
    }

    #[test]
    fn reports_this_process_socket() {
        let mut it = match FdIter::load() {
            Ok(it) => it,
            Err(e) => {
                eprintln!("SKIP: BPF iterator unavailable here: {e}");
                return;
            }
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let path = format!("/proc/self/fd/{}", listener.as_raw_fd());
        let inode = std::fs::metadata(path).unwrap().ino();
        let mut out = Vec::new();
        it.read_all(&mut out).unwrap();
        let ours = out.iter().find(|s| s.inode == inode).expect("our socket");
        if FdIter::usable_for(Path::new("/proc")) {
            assert_eq!(ours.pid, std::process::id());
        }
        assert_eq!(ours.fd, listener.as_raw_fd() as u32);
        // Only sockets: stdin/stdout and the like are not reported.
        assert!(out.iter().filter(|s| s.pid == ours.pid).all(|s| {
            std::fs::read_link(format!("/proc/self/fd/{}", s.fd))
                .map(|t| t.to_string_lossy().starts_with("socket:["))
                .unwrap_or(true)
        }));
        // A second walk works on the same link.
        it.read_all(&mut out).unwrap();
        assert!(out.iter().any(|s| s.inode == inode));
    }
}

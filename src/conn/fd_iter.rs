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
//! The program is 23 instructions, assembled with [`super::bpf`] (which says why) from the
//! kernel's field offsets; they are the ones clang emits for the equivalent C:
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
//! The `task_file` iterator visits tasks in thread-id order and skips the threads that share
//! their group leader's file table, so each process comes once, in pid order; a thread
//! with a table of its own (`unshare(CLONE_FILES)`) comes at its own id's place, under its
//! process's id. It reports the *global* tgid, so it is used only when the agent sees the
//! initial pid namespace's `/proc` (see [`FdIter::usable_for`]).
//!
//! Where it does not load, the reason is returned and the caller reads `/proc` instead.

use super::bpf::{self, BpfError, Insn, IterLink, insn, op};
use std::io;
use std::path::Path;

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
#[derive(Debug)]
pub struct FdIter {
    link: IterLink,
}

/// Field offsets the program needs, from the kernel's BTF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
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
    fn from_btf(btf: &super::btf::Btf) -> Result<Layout, BpfError> {
        let f = |s, m, size| bpf::field(btf, s, m, size);
        Ok(Layout {
            ctx_meta: f("bpf_iter__task_file", "meta", 8)?,
            ctx_task: f("bpf_iter__task_file", "task", 8)?,
            ctx_fd: f("bpf_iter__task_file", "fd", 4)?,
            ctx_file: f("bpf_iter__task_file", "file", 8)?,
            meta_seq: f("bpf_iter_meta", "seq", 8)?,
            task_tgid: f("task_struct", "tgid", 4)?,
            file_inode: f("file", "f_inode", 8)?,
            inode_mode: f("inode", "i_mode", 2)?,
            inode_ino: f("inode", "i_ino", 8)?,
        })
    }
}

const S_IFMT: i32 = 0o170000;
const S_IFSOCK: i32 = 0o140000;

/// The program of the module documentation, with this kernel's offsets.
fn program(l: &Layout) -> Vec<Insn> {
    use op::*;
    let (ctx, seq, task, file, inode, mode) = (2, 1, 3, 4, 4, 5);
    vec![
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
        insn(CALL, 0, 0, 0, FUNC_SEQ_WRITE),
        insn(MOV64_IMM, 0, 0, 0, 0),
        insn(EXIT, 0, 0, 0, 0),
    ]
}

impl FdIter {
    /// Loads the iterator with the running kernel's offsets.
    pub fn load() -> Result<FdIter, BpfError> {
        let (layout, target) = bpf::with_kernel_btf(|btf| {
            Ok((Layout::from_btf(btf)?, bpf::iter_target(btf, "task_file")?))
        })?;
        Ok(FdIter {
            link: IterLink::load("connbeat_socks", target, &program(&layout))?,
        })
    }

    /// Whether the pids this iterator reports are the ones `proc_root` lists: a /proc of
    /// the initial pid namespace (`/proc` on the host, or the host's /proc mounted into a
    /// container that shares the host's pid namespace), seen from inside that namespace.
    pub fn usable_for(proc_root: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        /// The inode number of the initial pid namespace (`PROC_PID_INIT_INO`, fixed).
        const INIT_PID_NS: u64 = 0xEFFF_FFFC;
        // We run in the initial pid namespace (a container with its own has another
        // inode, even though its /proc shows it one pid deep) ...
        let init_ns =
            std::fs::metadata(proc_root.join("self/ns/pid")).is_ok_and(|m| m.ino() == INIT_PID_NS);
        // ... and this /proc belongs to it: it names us by our own pid.
        init_ns
            && std::fs::read_link(proc_root.join("self"))
                .ok()
                .and_then(|p| p.to_str()?.parse::<u32>().ok())
                == Some(std::process::id())
    }

    /// Walks every process's file table; `out` receives its socket fds (cleared first),
    /// in the kernel's order: by thread id, then fd (nearly always by pid: see the module
    /// documentation).
    pub fn read_all(&mut self, out: &mut Vec<SocketFd>) -> io::Result<()> {
        out.clear();
        let data = self.link.read()?;
        out.reserve(data.len() / RECORD);
        for r in data.chunks_exact(RECORD) {
            let word = |at: usize| u32::from_le_bytes([r[at], r[at + 1], r[at + 2], r[at + 3]]);
            out.push(SocketFd {
                pid: word(0),
                fd: word(4),
                inode: u64::from(word(8)) | (u64::from(word(12)) << 32),
            });
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
    use std::path::Path;

    #[test]
    fn program_has_the_offsets_and_jumps_to_its_exit() {
        let l = Layout {
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
        assert!(bpf::jumps_land_on_exit(&p));
        assert!(
            p.iter()
                .any(|i| i[0] == op::LDX_W && i16::from_le_bytes([i[2], i[3]]) == 2500)
        );
    }

    #[test]
    fn usable_only_with_a_proc_of_the_host_pid_namespace() {
        let dir = std::env::temp_dir().join(format!("cb-fake-proc-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("self")).unwrap();
        assert!(!FdIter::usable_for(&dir), "a directory that is no /proc");
        std::fs::remove_dir_all(&dir).unwrap();
        use std::os::unix::fs::MetadataExt;
        let host =
            std::fs::metadata("/proc/self/ns/pid").map(|m| m.ino()).ok() == Some(0xEFFF_FFFC);
        assert_eq!(FdIter::usable_for(Path::new("/proc")), host);
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

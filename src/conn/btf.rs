//! Just enough of a BTF reader to find where a few kernel struct members are.
//!
//! # Why this module exists
//!
//! The BPF iterator of [`super::fd_iter`] reads four fields of kernel structs
//! (`task_struct.tgid`, `file.f_inode`, `inode.i_mode`, `inode.i_ino`), and the recorder of
//! [`super::connects`] a dozen more (`task_struct`, `sock_common`, `net`), whose offsets
//! change with every kernel build; the kernel describes its own types in `/sys/kernel/btf/vmlinux`.
//! A general BTF library (aya's, libbpf's) parses all ~150,000 types into trees: measured
//! here, aya's loader spends ~100 ms and ~35 MB on it, more than the whole first poll it is
//! meant to speed up. This reader indexes the type section in one pass (4 bytes per type),
//! answers name and member lookups, and is dropped once the program is loaded.
//!
//! Format: `Documentation/bpf/btf.rst` of the kernel tree (header, type section, string
//! section; every type is a 12-byte `btf_type` followed by kind-specific data).

use thiserror::Error;

#[derive(Debug, Error)]
pub enum BtfError {
    #[error("not BTF data (bad magic)")]
    BadMagic,
    #[error("truncated BTF data")]
    Truncated,
    #[error("BTF type kind {0} is not known")]
    UnknownKind(u32),
    #[error("no memory for the BTF index: {0}")]
    Memory(std::io::Error),
}

/// Calls `f(index, byte offset)` for each type of a type section; the number of types.
fn walk_types(types: &[u8], mut f: impl FnMut(usize, usize)) -> Result<usize, BtfError> {
    let mut at = 0usize;
    let mut n = 0usize;
    while at < types.len() {
        let info = u32_at(types, at + 4).ok_or(BtfError::Truncated)?;
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let extra = match kind {
            2 | 7..=12 | 16 | 18 => 0, // ptr, fwd, typedef, qualifiers, func, float, type tag
            1 | 14 | 17 => 4,          // int, var, decl tag
            3 => 12,                   // array
            4 | 5 | 15 | 19 => 12 * vlen, // struct, union, datasec, enum64
            6 | 13 => 8 * vlen,        // enum, func proto
            k => return Err(BtfError::UnknownKind(k)),
        };
        f(n, at);
        n += 1;
        at += 12 + extra;
    }
    if at != types.len() {
        return Err(BtfError::Truncated);
    }
    Ok(n)
}

/// The kinds looked up by name (`BTF_KIND_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Struct = 4,
    Func = 12,
}

/// One member of a struct, resolved through anonymous structs and unions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Byte offset from the start of the outer struct.
    pub offset: u32,
    /// Size in bytes of the member's type (0 when it has none, e.g. an array of unknown
    /// type or a bitfield).
    pub size: u32,
}

const HEADER_MIN: usize = 24;
const MAGIC: u16 = 0xeb9f;
/// Bound on the nesting of anonymous members and typedef chains we follow.
const MAX_DEPTH: usize = 16;

/// A parsed view of BTF data: the type section indexed by type id.
pub struct Btf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// Byte offset in `types` of type id `i + 1`, as little-endian u32s. Mapped memory,
    /// not the heap: freeing a heap block this large (~600 KB for a kernel) would raise
    /// glibc's mmap threshold for good and keep later buffers resident.
    index: memmap2::MmapMut,
    count: usize,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl<'a> Btf<'a> {
    /// Indexes raw BTF (as in `/sys/kernel/btf/vmlinux`). Little-endian only, like the
    /// machines this agent runs on.
    pub fn parse(data: &'a [u8]) -> Result<Btf<'a>, BtfError> {
        if data.len() < HEADER_MIN {
            return Err(BtfError::Truncated);
        }
        if u16::from_le_bytes([data[0], data[1]]) != MAGIC {
            return Err(BtfError::BadMagic);
        }
        let field = |at| u32_at(data, at).ok_or(BtfError::Truncated);
        let hdr_len = field(4)? as usize;
        let (type_off, type_len) = (field(8)? as usize, field(12)? as usize);
        let (str_off, str_len) = (field(16)? as usize, field(20)? as usize);
        let section = |off: usize, len: usize| {
            let start = hdr_len.checked_add(off).ok_or(BtfError::Truncated)?;
            let end = start.checked_add(len).ok_or(BtfError::Truncated)?;
            data.get(start..end).ok_or(BtfError::Truncated)
        };
        let types = section(type_off, type_len)?;
        let strings = section(str_off, str_len)?;

        // Two passes: count the types, then record where each starts.
        let count = walk_types(types, |_, _| ())?;
        let mut index = memmap2::MmapMut::map_anon(4 * count.max(1)).map_err(BtfError::Memory)?;
        walk_types(types, |id, at| {
            index[4 * id..4 * id + 4].copy_from_slice(&(at as u32).to_le_bytes());
        })?;
        Ok(Btf {
            types,
            strings,
            index,
            count,
        })
    }

    /// Number of types (ids run from 1 to this).
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Byte offset in the type section of a type id.
    fn offset(&self, id: u32) -> Option<usize> {
        let i = (id as usize).checked_sub(1).filter(|&i| i < self.count)?;
        u32_at(&self.index, 4 * i).map(|o| o as usize)
    }

    /// (name_off, info, size_or_type) of a type id.
    fn header(&self, id: u32) -> Option<(u32, u32, u32)> {
        let at = self.offset(id)?;
        Some((
            u32_at(self.types, at)?,
            u32_at(self.types, at + 4)?,
            u32_at(self.types, at + 8)?,
        ))
    }

    fn name(&self, off: u32) -> &'a [u8] {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    /// The id of the first type of this kind and name. Structs are looked for with
    /// members (a forward declaration of the same name is not them).
    pub fn find(&self, kind: Kind, name: &str) -> Option<u32> {
        (1..=self.count as u32).find(|&id| {
            self.header(id).is_some_and(|(name_off, info, _)| {
                (info >> 24) & 0x1f == kind as u32
                    && (kind != Kind::Struct || info & 0xffff > 0)
                    && self.name(name_off) == name.as_bytes()
            })
        })
    }

    /// A named member of a struct or union, found also inside its anonymous members.
    pub fn member(&self, id: u32, name: &str) -> Option<Member> {
        self.member_in(id, name.as_bytes(), 0)
    }

    fn member_in(&self, id: u32, name: &[u8], depth: usize) -> Option<Member> {
        if depth > MAX_DEPTH {
            return None;
        }
        let (_, info, _) = self.header(id)?;
        let kind = (info >> 24) & 0x1f;
        if kind != 4 && kind != 5 {
            return None;
        }
        let bitfields = info >> 31 == 1;
        let at = self.offset(id)? + 12;
        for i in 0..(info & 0xffff) as usize {
            let m = at + 12 * i;
            let (m_name, m_type, m_off) = (
                u32_at(self.types, m)?,
                u32_at(self.types, m + 4)?,
                u32_at(self.types, m + 8)?,
            );
            let (bit_off, bit_size) = if bitfields {
                (m_off & 0xff_ffff, m_off >> 24)
            } else {
                (m_off, 0)
            };
            let byte_off = bit_off / 8;
            let m_name = self.name(m_name);
            if m_name == name {
                let size = if bit_size > 0 || bit_off % 8 != 0 {
                    0
                } else {
                    self.size_of(m_type, 0).unwrap_or(0)
                };
                return Some(Member {
                    offset: byte_off,
                    size,
                });
            }
            if m_name.is_empty() {
                let Some(inner) = self.strip(m_type, 0) else {
                    continue;
                };
                if let Some(found) = self.member_in(inner, name, depth + 1) {
                    return Some(Member {
                        offset: byte_off.checked_add(found.offset)?,
                        ..found
                    });
                }
            }
        }
        None
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn strip(&self, id: u32, depth: usize) -> Option<u32> {
        if depth > MAX_DEPTH {
            return None;
        }
        let (_, info, next) = self.header(id)?;
        match (info >> 24) & 0x1f {
            8..=11 | 18 => self.strip(next, depth + 1),
            _ => Some(id),
        }
    }

    /// Size in bytes of a type: ints, pointers, enums, structs and unions (through
    /// typedefs and qualifiers).
    fn size_of(&self, id: u32, depth: usize) -> Option<u32> {
        let id = self.strip(id, depth)?;
        let (_, info, size) = self.header(id)?;
        match (info >> 24) & 0x1f {
            2 => Some(8),
            1 | 4 | 5 | 6 | 19 => Some(size),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds BTF bytes from (name, info, size_or_type, extra words) entries.
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
    }

    impl Builder {
        fn new() -> Builder {
            Builder {
                types: Vec::new(),
                strings: vec![0],
            }
        }
        fn name(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }
        fn add(&mut self, name: &str, kind: u32, vlen: u32, flag: bool, size: u32, extra: &[u32]) {
            let n = self.name(name);
            let info = (kind << 24) | vlen | if flag { 1 << 31 } else { 0 };
            for w in [n, info, size].iter().chain(extra) {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
        }
        fn finish(self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&MAGIC.to_le_bytes());
            out.extend_from_slice(&[1, 0]);
            for w in [
                24u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ] {
                out.extend_from_slice(&w.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// id 1: int (4 bytes); 2: typedef pid_t → 1; 3: ptr → 1; 4: fwd task;
    /// 5: union { ptr p; } (anonymous); 6: struct task { int a; pid_t tgid; union {p} at 16;
    /// bitfield flags }; 7: func "target".
    fn sample() -> Vec<u8> {
        let mut b = Builder::new();
        b.add("int", 1, 0, false, 4, &[32]);
        b.add("pid_t", 8, 0, false, 1, &[]);
        b.add("", 2, 0, false, 1, &[]);
        b.add("task", 7, 0, false, 0, &[]);
        let p = b.name("p");
        b.add("", 5, 1, false, 8, &[p, 3, 0]);
        let (a, tgid, flags) = (b.name("a"), b.name("tgid"), b.name("flags"));
        b.add(
            "task",
            4,
            4,
            true,
            32,
            &[a, 1, 0, tgid, 2, 32, 0, 5, 128, flags, 1, (3 << 24) | 192],
        );
        b.add("target", 12, 0, false, 0, &[]);
        b.finish()
    }

    #[test]
    fn finds_structs_members_and_funcs() {
        let data = sample();
        let btf = Btf::parse(&data).unwrap();
        assert_eq!(btf.len(), 7);
        let task = btf.find(Kind::Struct, "task").unwrap();
        assert_eq!(task, 6, "the struct, not the forward declaration");
        assert_eq!(btf.find(Kind::Func, "target"), Some(7));
        assert_eq!(btf.find(Kind::Func, "task"), None);
        assert_eq!(
            btf.member(task, "tgid"),
            Some(Member { offset: 4, size: 4 })
        );
        assert_eq!(
            btf.member(task, "p"),
            Some(Member {
                offset: 16,
                size: 8
            }),
            "found through the anonymous union"
        );
        assert_eq!(
            btf.member(task, "flags"),
            Some(Member {
                offset: 24,
                size: 0
            }),
            "a bitfield has no loadable size"
        );
        assert_eq!(btf.member(task, "missing"), None);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let data = sample();
        assert!(matches!(Btf::parse(&data[..10]), Err(BtfError::Truncated)));
        let mut bad = data.clone();
        bad[0] = 0;
        assert!(matches!(Btf::parse(&bad), Err(BtfError::BadMagic)));
        for cut in 24..data.len() {
            let _ = Btf::parse(&data[..cut]);
        }
        let mut unknown = data.clone();
        unknown[24 + 7] = 31; // kind 31 in the first type's info
        assert!(matches!(
            Btf::parse(&unknown),
            Err(BtfError::UnknownKind(31))
        ));
    }

    #[test]
    fn reads_the_running_kernel() {
        let Ok(data) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            eprintln!("SKIP: /sys/kernel/btf/vmlinux is not readable");
            return;
        };
        let btf = Btf::parse(&data).unwrap();
        assert!(btf.len() > 10_000, "{} types", btf.len());
        let inode = btf.find(Kind::Struct, "inode").unwrap();
        assert_eq!(btf.member(inode, "i_mode").unwrap().size, 2);
        assert_eq!(btf.member(inode, "i_ino").unwrap().size, 8);
        let task = btf.find(Kind::Struct, "task_struct").unwrap();
        assert_eq!(btf.member(task, "tgid").unwrap().size, 4);
        assert!(btf.find(Kind::Func, "bpf_iter_task_file").is_some());
    }
}

//! ONC RPC (RFC 5531) over TCP and the NFS parts Packetbeat reports, pure: record
//! marking, the call and reply headers with AUTH_UNIX credentials, the NFSv3 procedure
//! (RFC 1813), the NFSv4 COMPOUND's tag, minor version and main operation (RFC 7530,
//! 8881, 7862), and the NFS status of a reply.

use crate::inspect::proto::ParseError;
use std::borrow::Cow;

/// The NFS program number.
pub const NFS_PROGRAM: u32 = 100_003;
/// Most fragments joined into one record.
pub const MAX_FRAGMENTS: usize = 64;
/// Most group ids kept from an AUTH_UNIX credential (the RFC allows 16).
pub const MAX_GIDS: usize = 16;

/// A record's length on the wire and its body.
pub type Record<'a> = (usize, Cow<'a, [u8]>);

/// A complete record at the start of `data`: its length on the wire (markers included)
/// and its body (fragments joined). `None`: more bytes needed. A record longer than
/// `max` is an error (it could never be held).
pub fn record(data: &[u8], max: usize) -> Result<Option<Record<'_>>, ParseError> {
    // The common case, one fragment, is borrowed.
    if let Some(n) = single_fragment_len(data) {
        if n - 4 > max {
            return Err(ParseError("nfs: RPC record longer than max_message_size"));
        }
        return Ok(data.get(4..n).map(|b| (n, Cow::Borrowed(b))));
    }
    let mut at = 0;
    let mut body = Vec::new();
    for _ in 0..MAX_FRAGMENTS {
        let Some(mark) = data.get(at..at + 4) else {
            return Ok(None);
        };
        let mark = u32::from_be_bytes([mark[0], mark[1], mark[2], mark[3]]);
        let len = (mark & 0x7fff_ffff) as usize;
        if body.len() + len > max {
            return Err(ParseError("nfs: RPC record longer than max_message_size"));
        }
        at += 4;
        let Some(frag) = data.get(at..at + len) else {
            return Ok(None);
        };
        body.extend_from_slice(frag);
        at += len;
        if mark & 0x8000_0000 != 0 {
            return Ok(Some((at, Cow::Owned(body))));
        }
    }
    Err(ParseError("nfs: too many fragments in one RPC record"))
}

/// The bytes a record will take, from its first fragment's marker, when that fragment is
/// the last one (for skipping a large record without holding it).
pub fn single_fragment_len(data: &[u8]) -> Option<usize> {
    let mark = u32::from_be_bytes(data.get(..4)?.try_into().ok()?);
    (mark & 0x8000_0000 != 0).then_some(4 + (mark & 0x7fff_ffff) as usize)
}

/// An XDR reader: big-endian 4-byte units, opaque data padded to 4.
pub struct Xdr<'a> {
    data: &'a [u8],
    at: usize,
}

const SHORT: ParseError = ParseError("nfs: XDR data ends early");

impl<'a> Xdr<'a> {
    pub fn new(data: &'a [u8]) -> Xdr<'a> {
        Xdr { data, at: 0 }
    }

    pub fn u32(&mut self) -> Result<u32, ParseError> {
        let b = self.data.get(self.at..self.at + 4).ok_or(SHORT)?;
        self.at += 4;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Result<u64, ParseError> {
        Ok(u64::from(self.u32()?) << 32 | u64::from(self.u32()?))
    }

    /// Fixed-length opaque data.
    pub fn fixed(&mut self, len: usize) -> Result<&'a [u8], ParseError> {
        let padded = len.checked_add(3).ok_or(SHORT)? & !3;
        let b = self.data.get(self.at..self.at + len).ok_or(SHORT)?;
        if self.data.len() < self.at + padded {
            return Err(SHORT);
        }
        self.at += padded;
        Ok(b)
    }

    /// Variable-length opaque data.
    pub fn opaque(&mut self) -> Result<&'a [u8], ParseError> {
        let len = self.u32()? as usize;
        self.fixed(len)
    }

    /// A list of u32 (at most `max` kept, all read).
    pub fn u32s(&mut self, max: usize) -> Result<Vec<u32>, ParseError> {
        let n = self.u32()? as usize;
        if n > self.data.len() / 4 {
            return Err(SHORT);
        }
        let mut v = Vec::with_capacity(n.min(max));
        for _ in 0..n {
            let x = self.u32()?;
            if v.len() < max {
                v.push(x);
            }
        }
        Ok(v)
    }
}

/// An AUTH_UNIX credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixCred {
    pub stamp: u32,
    pub machinename: String,
    pub uid: u32,
    pub gid: u32,
    pub gids: Vec<u32>,
}

/// The credential of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cred {
    None,
    Unix(UnixCred),
    RpcsecGss,
    Other(u32),
}

impl Cred {
    /// Packetbeat's `rpc.auth_flavor`.
    pub fn flavor(&self) -> String {
        match self {
            Cred::None => "none".into(),
            Cred::Unix(_) => "unix".into(),
            Cred::RpcsecGss => "rpcsec_gss".into(),
            Cred::Other(n) => format!("unknown ({n})"),
        }
    }
}

/// What an NFS call asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub xid: u32,
    pub version: u32,
    pub proc_: u32,
    pub cred: Cred,
    /// NFSv4 COMPOUND only.
    pub tag: Option<String>,
    pub minor_version: Option<u32>,
    pub opcode: String,
}

/// An RPC reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply<'a> {
    pub xid: u32,
    /// `None`: the call was denied (RPC_MISMATCH or AUTH_ERROR).
    pub accept: Option<u32>,
    /// The results, after the accept status.
    pub results: &'a [u8],
}

/// An RPC message: a call to NFS, a reply, or a call to another program (not reported).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rpc<'a> {
    Call(Call),
    OtherProgram,
    Reply(Reply<'a>),
}

/// Reads one RPC message (a record's body).
pub fn rpc(body: &[u8]) -> Result<Rpc<'_>, ParseError> {
    let mut x = Xdr::new(body);
    let xid = x.u32()?;
    match x.u32()? {
        0 => {
            if x.u32()? != 2 {
                return Err(ParseError("nfs: RPC version is not 2"));
            }
            if x.u32()? != NFS_PROGRAM {
                return Ok(Rpc::OtherProgram);
            }
            let version = x.u32()?;
            let proc_ = x.u32()?;
            let flavor = x.u32()?;
            let body = x.opaque()?;
            let cred = match flavor {
                0 => Cred::None,
                1 => {
                    let mut c = Xdr::new(body);
                    let stamp = c.u32()?;
                    let machine = c.opaque()?;
                    Cred::Unix(UnixCred {
                        stamp,
                        machinename: String::from_utf8_lossy(machine).into_owned(),
                        uid: c.u32()?,
                        gid: c.u32()?,
                        gids: c.u32s(MAX_GIDS)?,
                    })
                }
                6 => Cred::RpcsecGss,
                n => Cred::Other(n),
            };
            // The verifier.
            x.u32()?;
            x.opaque()?;
            let (mut tag, mut minor_version) = (None, None);
            let opcode = match (version, proc_) {
                (3, p) => V3_PROCS
                    .get(p as usize)
                    .copied()
                    .unwrap_or("ILLEGAL")
                    .to_string(),
                (4, 0) => "NULL".to_string(),
                (4, 1) => {
                    tag = Some(String::from_utf8_lossy(x.opaque()?).into_owned());
                    minor_version = Some(x.u32()?);
                    main_op(&mut x)
                }
                _ => String::new(),
            };
            Ok(Rpc::Call(Call {
                xid,
                version,
                proc_,
                cred,
                tag,
                minor_version,
                opcode,
            }))
        }
        1 => {
            let accept = match x.u32()? {
                0 => {
                    x.u32()?;
                    x.opaque()?;
                    Some(x.u32()?)
                }
                1 => None,
                _ => return Err(ParseError("nfs: bad reply status")),
            };
            Ok(Rpc::Reply(Reply {
                xid,
                accept,
                results: &body[x.at.min(body.len())..],
            }))
        }
        _ => Err(ParseError("nfs: neither a call nor a reply")),
    }
}

/// NFSv3 procedure names, as Packetbeat writes them.
const V3_PROCS: [&str; 22] = [
    "NULL",
    "GETATTR",
    "SETATTR",
    "LOOKUP",
    "ACCESS",
    "READLINK",
    "READ",
    "WRITE",
    "CREATE",
    "MKDIR",
    "SYM_LINK",
    "MKNODE",
    "REMOVE",
    "RMDIR",
    "RENAME",
    "LINK",
    "READDIR",
    "READDIRPLUS",
    "FSSTAT",
    "FSINFO",
    "PATHINFO",
    "COMMIT",
];

/// NFSv4 operation names by number (3 to 71).
const V4_OPS: [&str; 69] = [
    "ACCESS",
    "CLOSE",
    "COMMIT",
    "CREATE",
    "DELEGPURGE",
    "DELEGRETURN",
    "GETATTR",
    "GETFH",
    "LINK",
    "LOCK",
    "LOCKT",
    "LOCKU",
    "LOOKUP",
    "LOOKUPP",
    "NVERIFY",
    "OPEN",
    "OPENATTR",
    "OPEN_CONFIRM",
    "OPEN_DOWNGRADE",
    "PUTFH",
    "PUTPUBFH",
    "PUTROOTFH",
    "READ",
    "READDIR",
    "READLINK",
    "REMOVE",
    "RENAME",
    "RENEW",
    "RESTOREFH",
    "SAVEFH",
    "SECINFO",
    "SETATTR",
    "SETCLIENTID",
    "SETCLIENTID_CONFIRM",
    "VERIFY",
    "WRITE",
    "RELEASE_LOCKOWNER",
    "BACKCHANNEL_CTL",
    "BIND_CONN_TO_SESSION",
    "EXCHANGE_ID",
    "CREATE_SESSION",
    "DESTROY_SESSION",
    "FREE_STATEID",
    "GET_DIR_DELEGATION",
    "GETDEVICEINFO",
    "GETDEVICELIST",
    "LAYOUTCOMMIT",
    "LAYOUTGET",
    "LAYOUTRETURN",
    "SECINFO_NO_NAME",
    "SEQUENCE",
    "SET_SSV",
    "TEST_STATEID",
    "WANT_DELEGATION",
    "DESTROY_CLIENTID",
    "RECLAIM_COMPLETE",
    "ALLOCATE",
    "COPY",
    "COPY_NOTIFY",
    "DEALLOCATE",
    "IO_ADVISE",
    "LAYOUTERROR",
    "LAYOUTSTATS",
    "OFFLOAD_CANCEL",
    "OFFLOAD_STATUS",
    "READ_PLUS",
    "SEEK",
    "WRITE_SAME",
    "CLONE",
];

fn v4_op(op: u32) -> Option<&'static str> {
    match op {
        10044 => Some("ILLEGAL"),
        3..=71 => Some(V4_OPS[op as usize - 3]),
        _ => None,
    }
}

/// The operations that only set up the real one (file handles, attributes, the session's
/// sequence): skipped when looking for the main operation of a compound.
fn setup_op(op: u32) -> bool {
    matches!(
        op,
        9 | 10 | 15 | 16 | 17 | 22 | 23 | 24 | 30 | 31 | 32 | 33 | 37 | 53 | 10044
    )
}

/// The main operation of a COMPOUND (Packetbeat's reading): the first operation that is
/// not a setup one, else the last; the arguments of setup operations are skipped to reach
/// the next. `ILLEGAL` for an unknown operation or arguments that end early.
fn main_op(x: &mut Xdr<'_>) -> String {
    let Ok(n) = x.u32() else {
        return "ILLEGAL".into();
    };
    let mut name = "ILLEGAL";
    for _ in 0..n.min(1024) {
        let Ok(op) = x.u32() else {
            break;
        };
        let Some(op_name) = v4_op(op) else {
            return "ILLEGAL".into();
        };
        name = op_name;
        if !setup_op(op) {
            break;
        }
        if skip_args(op, x).is_err() {
            break;
        }
    }
    name.to_string()
}

fn skip_args(op: u32, x: &mut Xdr<'_>) -> Result<(), ParseError> {
    match op {
        // GETATTR: a bitmap.
        9 => {
            x.u32s(0)?;
        }
        // LOOKUP, PUTFH, SECINFO: one opaque.
        15 | 22 | 33 => {
            x.opaque()?;
        }
        // NVERIFY, VERIFY: a bitmap and attribute values.
        17 | 37 => {
            x.u32s(0)?;
            x.opaque()?;
        }
        // RENEW: a client id.
        30 => {
            x.u64()?;
        }
        // SEQUENCE: session id, sequence, slot, highest slot, cache this.
        53 => {
            x.fixed(16)?;
            for _ in 0..4 {
                x.u32()?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The NFS status of a successful RPC reply to procedure `proc_` (NULL has none).
pub fn nfs_status(proc_: u32, results: &[u8]) -> Option<u32> {
    if proc_ == 0 {
        return Some(0);
    }
    Xdr::new(results).u32().ok()
}

/// Packetbeat's `rpc.status` of an accept status.
pub fn accept_status(s: u32) -> &'static str {
    match s {
        0 => "success",
        1 => "prog_unavail",
        2 => "prog_mismatch",
        3 => "proc_unavail",
        4 => "garbage_args",
        5 => "system_err",
        _ => "unknown",
    }
}

/// The name of an NFS status (NFSv3 and v4 share the numbers), as Packetbeat writes it.
pub fn status_name(s: u32) -> Option<&'static str> {
    Some(match s {
        0 => "NFS_OK",
        1 => "NFSERR_PERM",
        2 => "NFSERR_NOENT",
        5 => "NFSERR_IO",
        6 => "NFSERR_NXIO",
        13 => "NFSERR_ACCESS",
        17 => "NFSERR_EXIST",
        18 => "NFSERR_XDEV",
        19 => "NFSERR_NODEV",
        20 => "NFSERR_NOTDIR",
        21 => "NFSERR_ISDIR",
        22 => "NFSERR_INVAL",
        27 => "NFSERR_FBIG",
        28 => "NFSERR_NOSPC",
        30 => "NFSERR_ROFS",
        31 => "NFSERR_MLINK",
        63 => "NFSERR_NAMETOOLONG",
        66 => "NFSERR_NOTEMPTY",
        69 => "NFSERR_DQUOT",
        70 => "NFSERR_STALE",
        71 => "NFSERR_REMOTE",
        99 => "NFSERR_WFLUSH",
        10001..=10086 => V4_STATUS[(s - 10001) as usize],
        _ => return None,
    })
}

const V4_STATUS: [&str; 86] = [
    "NFSERR_BADHANDLE",
    "NFSERR_NOT_SYNC",
    "NFSERR_BAD_COOKIE",
    "NFSERR_NOTSUPP",
    "NFSERR_TOOSMALL",
    "NFSERR_SERVERFAULT",
    "NFSERR_BADTYPE",
    "NFSERR_DELAY",
    "NFSERR_SAME",
    "NFSERR_DENIED",
    "NFSERR_EXPIRED",
    "NFSERR_LOCKED",
    "NFSERR_GRACE",
    "NFSERR_FHEXPIRED",
    "NFSERR_SHARE_DENIED",
    "NFSERR_WRONGSEC",
    "NFSERR_CLID_INUSE",
    "NFSERR_RESOURCE",
    "NFSERR_MOVED",
    "NFSERR_NOFILEHANDLE",
    "NFSERR_MINOR_VERS_MISMATCH",
    "NFSERR_STALE_CLIENTID",
    "NFSERR_STALE_STATEID",
    "NFSERR_OLD_STATEID",
    "NFSERR_BAD_STATEID",
    "NFSERR_BAD_SEQID",
    "NFSERR_NOT_SAME",
    "NFSERR_LOCK_RANGE",
    "NFSERR_SYMLINK",
    "NFSERR_RESTOREFH",
    "NFSERR_LEASE_MOVED",
    "NFSERR_ATTRNOTSUPP",
    "NFSERR_NO_GRACE",
    "NFSERR_RECLAIM_BAD",
    "NFSERR_RECLAIM_CONFLICT",
    "NFSERR_BADXDR",
    "NFSERR_LOCKS_HELD",
    "NFSERR_OPENMODE",
    "NFSERR_BADOWNER",
    "NFSERR_BADCHAR",
    "NFSERR_BADNAME",
    "NFSERR_BAD_RANGE",
    "NFSERR_LOCK_NOTSUPP",
    "NFSERR_OP_ILLEGAL",
    "NFSERR_DEADLOCK",
    "NFSERR_FILE_OPEN",
    "NFSERR_ADMIN_REVOKED",
    "NFSERR_CB_PATH_DOWN",
    "NFSERR_BADIOMODE",
    "NFSERR_BADLAYOUT",
    "NFSERR_BAD_SESSION_DIGEST",
    "NFSERR_BADSESSION",
    "NFSERR_BADSLOT",
    "NFSERR_COMPLETE_ALREADY",
    "NFSERR_CONN_NOT_BOUND_TO_SESSION",
    "NFSERR_DELEG_ALREADY_WANTED",
    "NFSERR_BACK_CHAN_BUSY",
    "NFSERR_LAYOUTTRYLATER",
    "NFSERR_LAYOUTUNAVAILABLE",
    "NFSERR_NOMATCHING_LAYOUT",
    "NFSERR_RECALLCONFLICT",
    "NFSERR_UNKNOWN_LAYOUTTYPE",
    "NFSERR_SEQ_MISORDERED",
    "NFSERR_SEQUENCE_POS",
    "NFSERR_REQ_TOO_BIG",
    "NFSERR_REP_TOO_BIG",
    "NFSERR_REP_TOO_BIG_TO_CACHE",
    "NFSERR_RETRY_UNCACHED_REP",
    "NFSERR_UNSAFE_COMPOUND",
    "NFSERR_TOO_MANY_OPS",
    "NFSERR_OP_NOT_IN_SESSION",
    "NFSERR_HASH_ALG_UNSUPP",
    "NFSERR_CONN_BINDING_NOT_ENFORCED",
    "NFSERR_CLIENTID_BUSY",
    "NFSERR_PNFS_IO_HOLE",
    "NFSERR_SEQ_FALSE_RETRY",
    "NFSERR_BAD_HIGH_SLOT",
    "NFSERR_DEADSESSION",
    "NFSERR_ENCR_ALG_UNSUPP",
    "NFSERR_PNFS_NO_LAYOUT",
    "NFSERR_NOT_ONLY_OP",
    "NFSERR_WRONG_CRED",
    "NFSERR_WRONG_TYPE",
    "NFSERR_DIRDELEG_UNAVAIL",
    "NFSERR_REJECT_DELEG",
    "NFSERR_RETURNCONFLICT",
];

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An NFSv4.1 COMPOUND call (SEQUENCE, PUTFH, READDIR, GETATTR) with AUTH_UNIX, as one
    /// record.
    pub fn v4_call(xid: u32) -> Vec<u8> {
        let mut b = Vec::new();
        let w = |b: &mut Vec<u8>, v: u32| b.extend_from_slice(&v.to_be_bytes());
        for v in [xid, 0, 2, NFS_PROGRAM, 4, 1, 1] {
            w(&mut b, v);
        }
        let mut cred = Vec::new();
        for v in [7, 4] {
            w(&mut cred, v);
        }
        cred.extend_from_slice(b"host");
        for v in [1000, 100, 2, 100, 27] {
            w(&mut cred, v);
        }
        w(&mut b, cred.len() as u32);
        b.extend_from_slice(&cred);
        for v in [0, 0] {
            w(&mut b, v);
        }
        w(&mut b, 7);
        b.extend_from_slice(b"readdir\0");
        for v in [1, 4, 53] {
            w(&mut b, v);
        }
        b.extend_from_slice(&[9; 16]);
        for v in [1, 0, 0, 0, 22, 4, 0xaabbccdd, 26, 0, 0] {
            w(&mut b, v);
        }
        let mut rec = (0x8000_0000u32 | b.len() as u32).to_be_bytes().to_vec();
        rec.extend_from_slice(&b);
        rec
    }

    /// An accepted reply with NFS status `status`.
    pub fn reply(xid: u32, status: u32) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [xid, 1, 0, 0, 0, 0, status, 0] {
            b.extend_from_slice(&u32::to_be_bytes(v));
        }
        let mut rec = (0x8000_0000u32 | b.len() as u32).to_be_bytes().to_vec();
        rec.extend_from_slice(&b);
        rec
    }

    #[test]
    fn a_v4_compound_and_its_reply() {
        let call = v4_call(0x1234);
        for cut in 0..call.len() {
            assert_eq!(record(&call[..cut], 1 << 20).unwrap(), None);
        }
        let (n, body) = record(&call, 1 << 20).unwrap().unwrap();
        assert_eq!(n, call.len());
        let Rpc::Call(c) = rpc(&body).unwrap() else {
            panic!()
        };
        assert_eq!(c.xid, 0x1234);
        assert_eq!(c.tag.as_deref(), Some("readdir"));
        assert_eq!(c.minor_version, Some(1));
        assert_eq!(c.opcode, "READDIR");
        let Cred::Unix(u) = &c.cred else { panic!() };
        assert_eq!((u.uid, u.gid, &u.gids[..]), (1000, 100, &[100, 27][..]));
        assert_eq!(u.machinename, "host");
        let rep = reply(0x1234, 10004);
        let (_, body) = record(&rep, 1 << 20).unwrap().unwrap();
        let Rpc::Reply(r) = rpc(&body).unwrap() else {
            panic!()
        };
        assert_eq!((r.xid, r.accept), (0x1234, Some(0)));
        assert_eq!(
            nfs_status(1, r.results).and_then(status_name),
            Some("NFSERR_NOTSUPP")
        );
        assert!(record(&call, 10).is_err());
    }

    #[test]
    fn fragments_are_joined() {
        let mut data = 3u32.to_be_bytes().to_vec();
        data.extend_from_slice(b"abc");
        data.extend_from_slice(&(0x8000_0002u32).to_be_bytes());
        data.extend_from_slice(b"de");
        let (n, body) = record(&data, 100).unwrap().unwrap();
        assert_eq!((n, &body[..]), (13, &b"abcde"[..]));
        assert_eq!(status_name(10086), Some("NFSERR_RETURNCONFLICT"));
        assert_eq!(v4_op(71), Some("CLONE"));
        assert_eq!(v4_op(3), Some("ACCESS"));
    }
}

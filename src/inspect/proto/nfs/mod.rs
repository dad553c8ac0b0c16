//! NFS over ONC RPC on TCP: each call paired with its reply by XID (replies may come in
//! any order), the `rpc` object (XID, credential flavor and AUTH_UNIX identity, accept
//! status) and the `nfs` object (version, NFSv3 procedure or NFSv4 COMPOUND tag, minor
//! version and main operation, NFS status), as Packetbeat writes them.
//!
//! A record whose single fragment is large (READ replies, WRITE calls) is read from its
//! first bytes and the rest skipped unseen: a file's data is never buffered.

pub mod parser;

use super::txn::{self, EcsAt, Pairing, complete};
use super::{
    Common, Cx, Dir, Entry, GapAction, ParseError, Parsers, TcpFactory, TcpParser, Txn, TxnObject,
    status,
};
use crate::event::Event;
use parser::{Cred, Rpc};
use serde::Serialize;
use std::sync::Arc;

/// The registry's handle on NFS.
pub struct Proto;

/// NFS has no options of its own.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Options {}

impl super::Protocol for Proto {
    const NAME: &'static str = "nfs";
    type Options = Options;
    fn parsers(e: &Entry<Options>, common: &Common) -> Parsers {
        let max_pending = common.max_pending;
        let max_record = e.common.max_message_size;
        let tcp: TcpFactory = Arc::new(move || {
            Box::new(Nfs {
                pending: Pairing::new(max_pending),
                max_record,
            }) as Box<dyn TcpParser>
        });
        Parsers {
            tcp: Some(tcp),
            udp: None,
        }
    }
}

/// Bytes of a large record read before the rest is skipped: enough for any RPC header
/// and a COMPOUND's first operations.
const PEEK: usize = 4096;

/// `rpc.cred` (AUTH_UNIX).
#[derive(Debug, Serialize)]
pub struct CredFields {
    pub stamp: u32,
    pub machinename: String,
    pub uid: u32,
    pub gid: u32,
    pub gids: Vec<u32>,
}

/// The `rpc` object.
#[derive(Debug, Default, Serialize)]
pub struct RpcFields {
    pub xid: String,
    pub auth_flavor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cred: Option<CredFields>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
}

/// The `nfs` object.
#[derive(Debug, Default, Serialize)]
pub struct NfsFields {
    pub version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minor_version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub opcode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
}

/// One call and its reply: `rpc` and `nfs` go side by side into the event.
#[derive(Debug, Default)]
pub struct NfsTxn {
    pub rpc: RpcFields,
    pub nfs: NfsFields,
}

#[derive(Serialize)]
struct Id {
    id: u32,
}

impl TxnObject for NfsTxn {
    fn write_classic(&self, name: &'static str, e: &mut Event) {
        e.push_field("rpc", &self.rpc);
        e.push_field(name, &self.nfs);
    }

    fn write_ecs(&self, name: &'static str, e: &mut Event, _at: &EcsAt<'_>) {
        self.write_classic(name, e);
        if let Some(c) = &self.rpc.cred {
            e.push_field("user", &Id { id: c.uid });
            e.push_field("group", &Id { id: c.gid });
        }
    }

    fn ecs_network_protocol(&self) -> Option<&'static str> {
        Some(match self.nfs.version {
            3 => "nfsv3",
            4 => "nfsv4",
            _ => "nfs",
        })
    }

    fn ecs_action(&self, _name: &'static str, _method: Option<&str>) -> Option<String> {
        (!self.nfs.opcode.is_empty()).then(|| format!("nfs.{}", self.nfs.opcode))
    }
}

pub struct Nfs {
    /// Calls waiting for their reply, with their XID and procedure.
    pending: Pairing<(u32, u32), NfsTxn>,
    max_record: usize,
}

impl Nfs {
    fn call(&mut self, c: parser::Call, len: usize, cx: &mut Cx<'_>) {
        let mut t: Txn<NfsTxn> = Txn::new(cx.now, len as u64);
        let rpc = &mut t.fields.rpc;
        rpc.xid = format!("{:08x}", c.xid);
        rpc.auth_flavor = c.cred.flavor();
        if let Cred::Unix(u) = c.cred {
            rpc.cred = Some(CredFields {
                stamp: u.stamp,
                machinename: u.machinename,
                uid: u.uid,
                gid: u.gid,
                gids: u.gids,
            });
        }
        t.method = (!c.opcode.is_empty()).then(|| c.opcode.clone());
        t.fields.nfs = NfsFields {
            version: c.version,
            minor_version: c.minor_version,
            tag: c.tag,
            opcode: c.opcode,
            status: None,
        };
        self.pending.push(t, (c.xid, c.proc_), cx);
    }

    fn reply(&mut self, r: parser::Reply<'_>, len: usize, cx: &mut Cx<'_>) {
        let Some(p) = self.pending.take(|(xid, _)| *xid == r.xid) else {
            txn::unmatched_response();
            return;
        };
        let (_, proc_) = p.extra;
        let mut t = p.txn;
        match r.accept {
            Some(0) => {
                let s = parser::nfs_status(proc_, r.results);
                t.fields.rpc.status = Some("success");
                t.fields.nfs.status = s.and_then(parser::status_name);
                if s.is_some_and(|s| s != 0) {
                    t.status = status::ERROR;
                }
            }
            Some(a) => {
                t.fields.rpc.status = Some(parser::accept_status(a));
                t.status = status::ERROR;
            }
            None => {
                t.fields.rpc.status = Some("denied");
                t.status = status::ERROR;
            }
        }
        complete(t, cx.now, len as u64, cx);
    }

    fn message(&mut self, body: &[u8], len: usize, cx: &mut Cx<'_>) -> Result<(), ParseError> {
        match parser::rpc(body)? {
            Rpc::Call(c) => self.call(c, len, cx),
            Rpc::Reply(r) => self.reply(r, len, cx),
            Rpc::OtherProgram => {}
        }
        Ok(())
    }
}

impl TcpParser for Nfs {
    fn parse(&mut self, _dir: Dir, data: &[u8], cx: &mut Cx<'_>) -> Result<usize, ParseError> {
        if let Some((len, body)) = parser::record(data, self.max_record)? {
            self.message(&body, len, cx)?;
            return Ok(len);
        }
        // A large single fragment: its head is enough, the rest is skipped unseen.
        if data.len() >= PEEK
            && let Some(total) = parser::single_fragment_len(data)
        {
            self.message(&data[4..], total, cx)?;
            return Ok(total);
        }
        Ok(0)
    }

    fn gap(&mut self, dir: Dir, _len: usize, cx: &mut Cx<'_>) -> GapAction {
        // Record marks are lost with the bytes: nothing can be found again in this
        // direction. Calls still waiting lose their replies.
        if dir == Dir::ToClient {
            self.pending.drain(txn::NOTE_GAP, cx);
        }
        GapAction::Reset
    }

    fn expire(&mut self, cx: &mut Cx<'_>) {
        self.pending.expire(cx);
    }

    fn close(&mut self, cx: &mut Cx<'_>) {
        self.pending.drain(txn::NOTE_CLOSED, cx);
    }
}

#[cfg(test)]
mod tests {
    use super::parser::tests::{reply, v4_call};
    use super::*;
    use crate::inspect::proto::testutil::{common, drive};

    fn nfs() -> Box<dyn TcpParser> {
        let e = Entry::<Options>::default();
        <Proto as super::super::Protocol>::parsers(&e, &common())
            .tcp
            .unwrap()()
    }

    #[test]
    fn calls_pair_with_replies_by_xid_in_any_order() {
        let calls = [v4_call(1), v4_call(2)].concat();
        let replies = [reply(2, 10004), reply(1, 0), reply(9, 0)].concat();
        let out = drive(
            nfs().as_mut(),
            &[(Dir::ToServer, &calls), (Dir::ToClient, &replies)],
            5,
        );
        assert_eq!(out.len(), 2);
        let ep = crate::inspect::proto::txn::Endpoints::new(
            "tcp",
            "10.0.0.1:800".parse().unwrap(),
            "10.0.0.2:2049".parse().unwrap(),
        );
        let ev: Vec<serde_json::Value> = out
            .into_iter()
            .map(|t| t.into_event("nfs", &ep).to_value())
            .collect();
        assert_eq!(ev[0]["rpc"]["xid"], "00000002");
        assert_eq!(ev[0]["nfs"]["status"], "NFSERR_NOTSUPP");
        assert_eq!(ev[0]["status"], "Error");
        assert_eq!(ev[1]["rpc"]["xid"], "00000001");
        assert_eq!(ev[1]["rpc"]["auth_flavor"], "unix");
        assert_eq!(ev[1]["rpc"]["cred"]["uid"], 1000);
        assert_eq!(ev[1]["rpc"]["status"], "success");
        assert_eq!(ev[1]["nfs"]["opcode"], "READDIR");
        assert_eq!(ev[1]["nfs"]["tag"], "readdir");
        assert_eq!(ev[1]["nfs"]["minor_version"], 1);
        assert_eq!(ev[1]["nfs"]["status"], "NFS_OK");
        assert_eq!(ev[1]["status"], "OK");
        assert_eq!(ev[1]["method"], "READDIR");
    }

    #[test]
    fn a_large_record_is_read_from_its_head_and_skipped() {
        let mut call = v4_call(5);
        let body_len = call.len() - 4 + 100_000;
        call[..4].copy_from_slice(&(0x8000_0000u32 | body_len as u32).to_be_bytes());
        call.resize(4 + body_len, 0xee);
        let out = drive(
            nfs().as_mut(),
            &[(Dir::ToServer, &call), (Dir::ToClient, &reply(5, 0))],
            1460,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].status, status::OK);
        assert_eq!(out[0].bytes_in, call.len() as u64);
    }
}

//! TLS handshakes: one transaction per connection, from the ClientHello (version offered,
//! SNI, ALPN, JA3) to the ServerHello (version and cipher chosen) or an alert.
//!
//! Handshake messages are reassembled across records and segments (a modern ClientHello
//! is ~1.8 KB and often spans two segments) up to a bound; after the handshake the
//! encrypted records are skipped by length, never buffered.

pub mod parser;

use super::TxnObject;
use super::txn::{self, Pairing, complete};
use super::{
    Common, Cx, Dir, Entry, GapAction, ParseError, Parsers, TcpFactory, TcpParser, Txn, status,
};
use crate::event::Event;
use md5::{Digest, Md5};
use serde::Serialize;
use std::sync::Arc;

/// The registry's handle on TLS.
pub struct Proto;

/// TLS has no options of its own yet.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Options {}

impl super::Protocol for Proto {
    const NAME: &'static str = "tls";
    type Options = Options;
    fn parsers(e: &Entry<Options>, common: &Common) -> Parsers {
        Parsers {
            tcp: Some(factory(&e.options, common)),
            udp: None,
        }
    }
}

/// The `tls` object of a transaction.
#[derive(Debug, Default, Serialize)]
pub struct TlsTxn {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientSide>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ja3: Option<String>,
    /// What the ServerHello chose.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cipher: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub established: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<Alert>,
}

/// What the ClientHello offered.
#[derive(Debug, Serialize)]
pub struct ClientSide {
    pub version: String,
    pub server_name: Option<String>,
    pub alpn: Vec<String>,
    pub ja3: String,
    pub ja3_string: String,
}

#[derive(Debug, Serialize)]
pub struct Alert {
    pub level: u8,
    pub description: u8,
}

impl TxnObject for TlsTxn {
    fn write_classic(&self, name: &'static str, e: &mut Event) {
        e.push_field(name, self);
    }
}

/// Bound on one handshake message being reassembled.
const MAX_HANDSHAKE: usize = 64 * 1024;

fn factory(_o: &Options, common: &Common) -> TcpFactory {
    let max = common.max_pending;
    Arc::new(move || Box::new(Tls::new(max)) as Box<dyn TcpParser>)
}

pub struct Tls {
    pending: Pairing<(), TlsTxn>,
    /// Handshake bytes per direction, taken out of handshake records.
    hs: [Vec<u8>; 2],
    /// The hello of that direction was seen: the rest is skipped.
    done: [bool; 2],
}

impl Tls {
    fn new(max: usize) -> Tls {
        Tls {
            pending: Pairing::new(max),
            hs: [Vec::new(), Vec::new()],
            done: [false, false],
        }
    }

    fn hello(&mut self, dir: Dir, msg: &[u8], cx: &mut Cx<'_>) -> Result<(), ParseError> {
        match (dir, msg.first()) {
            (Dir::ToServer, Some(1)) => {
                let ch = parser::client_hello(msg)?;
                let mut t: Txn<TlsTxn> = Txn::new(cx.now, msg.len() as u64);
                let ja3 = hex(&Md5::digest(ch.ja3.as_bytes()));
                let offered = ch
                    .supported_versions
                    .iter()
                    .copied()
                    .max()
                    .unwrap_or(ch.version);
                t.resource = ch.server_name.clone();
                t.fields.server_name = ch.server_name.clone();
                t.fields.client = Some(ClientSide {
                    version: parser::version_name(offered),
                    server_name: ch.server_name,
                    alpn: ch.alpn,
                    ja3: ja3.clone(),
                    ja3_string: ch.ja3,
                });
                t.fields.ja3 = Some(ja3);
                self.pending.push(t, (), cx);
            }
            (Dir::ToClient, Some(2)) => {
                let sh = parser::server_hello(msg)?;
                let Some(p) = self.pending.pop() else {
                    txn::unmatched_response();
                    return Ok(());
                };
                let mut t = p.txn;
                t.fields.version = Some(parser::version_name(sh.version));
                t.fields.cipher = Some(parser::cipher_name(sh.cipher));
                t.fields.alpn = sh.alpn;
                t.fields.established = Some(true);
                complete(t, cx.now, msg.len() as u64, cx);
            }
            _ => return Ok(()),
        }
        self.done[idx(dir)] = true;
        Ok(())
    }

    fn alert(&mut self, dir: Dir, body: &[u8], cx: &mut Cx<'_>) {
        if dir != Dir::ToClient || self.done[1] {
            return;
        }
        if let Some(p) = self.pending.pop() {
            let mut t = p.txn;
            t.status = status::ERROR;
            t.fields.established = Some(false);
            if let [level, description, ..] = *body {
                t.fields.alert = Some(Alert { level, description });
            }
            t.notes.push("handshake ended in an alert".into());
            complete(t, cx.now, body.len() as u64, cx);
            self.done[1] = true;
        }
    }
}

fn idx(d: Dir) -> usize {
    match d {
        Dir::ToServer => 0,
        Dir::ToClient => 1,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl TcpParser for Tls {
    fn parse(&mut self, dir: Dir, data: &[u8], cx: &mut Cx<'_>) -> Result<usize, ParseError> {
        let i = idx(dir);
        if data.len() >= 5 && self.done[i] {
            // After the hello: skip records by their length, unseen (alerts still matter).
            if data[0] == 21 && !self.done[1] {
                if let Some((_, body, len)) = parser::record(data)? {
                    self.alert(dir, body, cx);
                    return Ok(len);
                }
                return Ok(0);
            }
            let len = 5 + usize::from(u16::from_be_bytes([data[3], data[4]]));
            return Ok(len);
        }
        let Some((t, body, len)) = parser::record(data)? else {
            return Ok(0);
        };
        match t {
            22 if !self.done[i] => {
                if self.hs[i].len() + body.len() > MAX_HANDSHAKE {
                    self.hs[i].clear();
                    return Err(ParseError("tls: handshake message too long"));
                }
                self.hs[i].extend_from_slice(body);
                while let Some(n) = parser::handshake_len(&self.hs[i]) {
                    let msg: Vec<u8> = self.hs[i].drain(..n).collect();
                    self.hello(dir, &msg, cx)?;
                    if self.done[i] {
                        self.hs[i].clear();
                        break;
                    }
                }
            }
            21 => self.alert(dir, body, cx),
            _ => {}
        }
        Ok(len)
    }

    fn gap(&mut self, dir: Dir, _len: usize, _cx: &mut Cx<'_>) -> GapAction {
        self.hs[idx(dir)].clear();
        GapAction::Reset
    }

    fn expire(&mut self, cx: &mut Cx<'_>) {
        self.pending.expire(cx);
    }

    fn close(&mut self, cx: &mut Cx<'_>) {
        self.pending.drain(txn::NOTE_CLOSED, cx);
    }
}

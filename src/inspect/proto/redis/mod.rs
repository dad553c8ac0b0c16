//! Redis transactions: each command paired in order with its reply (pipelining is just a
//! longer queue); RESP3 pushes are not replies and are skipped.

pub mod parser;

use super::TxnObject;
use super::txn::{self, Pairing, complete, unmatched_response};
use super::{
    Common, Cx, Dir, Entry, GapAction, ParseError, Parsers, TcpFactory, TcpParser, Txn, status,
};
use crate::event::Event;
use std::sync::Arc;

/// The registry's handle on Redis.
pub struct Proto;

/// Redis has no options of its own.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Options {}

impl super::Protocol for Proto {
    const NAME: &'static str = "redis";
    const TEXT_MESSAGES: bool = true;
    type Options = Options;
    fn parsers(e: &Entry<Options>, common: &Common) -> Parsers {
        let send = [e.common.send_request, e.common.send_response];
        let max = common.max_pending;
        let tcp: TcpFactory = Arc::new(move || {
            Box::new(Redis {
                pending: Pairing::new(max),
                send,
            }) as Box<dyn TcpParser>
        });
        Parsers {
            tcp: Some(tcp),
            udp: None,
        }
    }
}

/// The `redis` object of a transaction.
#[derive(Debug, Default, serde::Serialize)]
pub struct RedisTxn {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl TxnObject for RedisTxn {
    fn write_classic(&self, name: &'static str, e: &mut Event) {
        e.push_field(name, self);
    }
}

/// Longest `return_value` / `query` rendered.
const MAX_TEXT: usize = 1024;

#[cfg(test)]
fn factory(_o: &Options, common: &Common) -> TcpFactory {
    let e = Entry::<Options>::default();
    <Proto as super::Protocol>::parsers(&e, common)
        .tcp
        .expect("redis runs over TCP")
}

pub struct Redis {
    pending: Pairing<(), RedisTxn>,
    /// `send_request`, `send_response`: the raw RESP text goes into the event.
    send: [bool; 2],
}

impl TcpParser for Redis {
    fn parse(&mut self, dir: Dir, data: &[u8], cx: &mut Cx<'_>) -> Result<usize, ParseError> {
        match dir {
            Dir::ToServer => {
                let Some(c) = parser::command(data)? else {
                    return Ok(0);
                };
                if c.args.is_empty() {
                    return Ok(c.len);
                }
                let mut t = Txn::new(cx.now, c.len as u64);
                let method = c
                    .args
                    .first()
                    .map(|m| m.to_ascii_uppercase())
                    .unwrap_or_default();
                let mut query = c.args.join(" ");
                if query.len() > MAX_TEXT {
                    let mut cut = MAX_TEXT;
                    while !query.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    query.truncate(cut);
                }
                t.resource = c.args.get(1).cloned();
                t.method = Some(method);
                t.query = Some(query);
                if self.send[0] {
                    t.request = Some(super::text(&data[..c.len], usize::MAX));
                }
                self.pending.push(t, (), cx);
                Ok(c.len)
            }
            Dir::ToClient => {
                let mut text = String::new();
                let Some((len, kind)) = parser::value(data, 0, 0, &mut text, MAX_TEXT)? else {
                    return Ok(0);
                };
                if kind == parser::Kind::Push {
                    return Ok(len);
                }
                let Some(p) = self.pending.pop() else {
                    unmatched_response();
                    return Ok(len);
                };
                let mut t = p.txn;
                if self.send[1] {
                    t.response = Some(super::text(&data[..len], usize::MAX));
                }
                if kind == parser::Kind::Error {
                    t.status = status::ERROR;
                    t.fields.error = Some(text);
                } else {
                    t.fields.return_value = Some(text);
                }
                complete(t, cx.now, len as u64, cx);
                Ok(len)
            }
        }
    }

    fn gap(&mut self, dir: Dir, _len: usize, cx: &mut Cx<'_>) -> GapAction {
        if dir == Dir::ToClient
            && let Some(p) = self.pending.pop()
        {
            txn::fail(p.txn, "reply lost in a gap of the capture", cx);
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
    use super::*;
    use crate::inspect::proto::testutil::drive;

    #[test]
    fn pipelined_commands_pair_in_order() {
        let mut p = factory(&Options::default(), &super::super::testutil::common())();
        let req = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nNOPE\r\n";
        let resp = b"+OK\r\n$1\r\nv\r\n>2\r\n+message\r\n+x\r\n-ERR unknown command 'NOPE'\r\n";
        let out = drive(
            p.as_mut(),
            &[(Dir::ToServer, &req[..]), (Dir::ToClient, &resp[..])],
            5,
        );
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].method.as_deref(), Some("SET"));
        assert_eq!(out[0].resource.as_deref(), Some("k"));
        assert_eq!(out[0].object()["return_value"], "OK");
        assert_eq!(out[1].object()["return_value"], "v");
        assert_eq!(out[2].status, status::ERROR);
        assert_eq!(out[2].object()["error"], "ERR unknown command 'NOPE'");
    }
}

#[cfg(test)]
mod send_tests {
    use super::*;
    use crate::inspect::proto::testutil::{common, drive};

    #[test]
    fn send_request_and_response_put_the_resp_text_in_the_event() {
        let mut e = Entry::<Options>::default();
        e.common.send_request = true;
        e.common.send_response = true;
        let f = <Proto as super::super::Protocol>::parsers(&e, &common())
            .tcp
            .unwrap();
        let out = drive(
            f().as_mut(),
            &[
                (Dir::ToServer, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"),
                (Dir::ToClient, b"$1\r\nv\r\n"),
            ],
            3,
        );
        assert_eq!(
            out[0].request.as_deref(),
            Some("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
        );
        assert_eq!(out[0].response.as_deref(), Some("$1\r\nv\r\n"));
        let ep = crate::inspect::proto::txn::Endpoints::new(
            "tcp",
            "10.0.0.1:5000".parse().unwrap(),
            "10.0.0.2:6379".parse().unwrap(),
        );
        let v = out
            .into_iter()
            .next()
            .unwrap()
            .into_event("redis", &ep)
            .to_value();
        assert_eq!(v["request"], "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        assert_eq!(v["response"], "$1\r\nv\r\n");
    }
}

#[cfg(test)]
mod split_tests {
    use super::*;
    use crate::inspect::proto::testutil::drive;

    #[test]
    fn command_split_before_final_crlf() {
        let mut p = factory(&Options::default(), &super::super::testutil::common())();
        let a = b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nINCR\r\n$7\r\ncounter";
        let b = b"\r\n\r\n*2\r\n$4\r\nECHO\r\n$2\r\nab\r\n";
        let out = drive(
            p.as_mut(),
            &[(Dir::ToServer, &a[..]), (Dir::ToServer, &b[..])],
            1000,
        );
        let m: Vec<_> = out.iter().map(|t| t.method.clone().unwrap()).collect();
        assert_eq!(m, vec!["PING", "INCR", "ECHO"]);
    }
}

//! SMTP sessions: one transaction per message handed over (`MAIL FROM`, the accepted
//! `RCPT TO` list, the size of the `DATA` or `BDAT` body, the final reply) and one per
//! command that fails. `EHLO` names the client and lists the server's extensions (both go
//! into the session's later transactions); `STARTTLS` accepted makes one transaction and
//! leaves the rest of the (encrypted) session alone; `AUTH` keeps its mechanism only: the
//! credentials in its argument and in the client's answers to the server's challenges are
//! skipped, never read into an event.
//!
//! Commands may be pipelined (RFC 2920): they wait in order for their replies, bounded by
//! `max_pending`. A body is scanned for its end as it passes, never buffered.

pub mod parser;

use super::txn::{self, NOTE_CLOSED, NOTE_GAP, NOTE_TIMEOUT};
use super::{
    Common, Cx, Dir, Entry, GapAction, ParseError, Parsers, TcpFactory, TcpParser, Txn, TxnObject,
    status,
};
use crate::event::Event;
use parser::{BodyEnd, Reply};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Arc;

/// The registry's handle on SMTP.
pub struct Proto;

/// SMTP's own keys.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Options {
    /// Recipients listed in `smtp.to` per message; more are counted in `smtp.rcpt_count`
    /// but not listed.
    pub max_recipients: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_recipients: 100,
        }
    }
}

impl super::Protocol for Proto {
    const NAME: &'static str = "smtp";
    /// Relay and submission.
    const DEFAULT_PORTS: &'static [u16] = &[25, 587];
    type Options = Options;
    fn parsers(e: &Entry<Options>, common: &Common) -> Parsers {
        let max_pending = common.max_pending.max(1);
        let max_recipients = e.options.max_recipients;
        let tcp: TcpFactory = Arc::new(move || {
            Box::new(Smtp::new(max_pending, max_recipients)) as Box<dyn TcpParser>
        });
        Parsers {
            tcp: Some(tcp),
            udp: None,
        }
    }

    fn fuzz_options() -> Options {
        Options { max_recipients: 2 }
    }
}

/// The `smtp` object of a transaction.
#[derive(Debug, Default, Clone, Serialize)]
pub struct SmtpTxn {
    /// The command whose reply ended the transaction (`DATA` for a message handed over).
    pub command: String,
    /// The name the client gave in `EHLO` / `HELO`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub helo: Option<String>,
    /// The extensions the server announced in its `EHLO` reply.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<String>,
    /// The mechanism of an `AUTH` (never its credentials).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_mechanism: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    /// Recipients accepted, when more than `to` lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rcpt_count: Option<usize>,
    /// Bytes of the message (`DATA` body without its final `.` line, or `BDAT` chunks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    pub reply_code: u16,
    pub reply_text: String,
    /// `STARTTLS` was accepted: the rest of the session is encrypted.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
}

impl TxnObject for SmtpTxn {
    fn write_classic(&self, name: &'static str, e: &mut Event) {
        e.push_field(name, self);
    }
}

/// What a command waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Hello {
        name: String,
    },
    Mail {
        from: String,
    },
    Rcpt {
        to: String,
    },
    Data,
    /// The end of a DATA body (its reply is the final one).
    BodyEnd,
    Bdat {
        last: bool,
    },
    StartTls,
    Auth {
        mechanism: String,
    },
    Rset,
    /// Any other command: only a failure is reported.
    Other,
}

#[derive(Debug)]
struct Cmd {
    verb: String,
    kind: Kind,
    start: u64,
    bytes: u64,
}

/// What the client's next bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    Commands,
    /// A DATA body, up to its `.` line.
    Body(BodyEnd),
    /// One answer to an AUTH challenge (skipped unread).
    AuthAnswer,
}

pub struct Smtp {
    pending: VecDeque<Cmd>,
    max_pending: usize,
    max_recipients: usize,
    client: Client,
    /// STARTTLS accepted: nothing more is parsed.
    encrypted: bool,
    /// The server's greeting was seen (or skipped).
    greeted: bool,
    helo: Option<String>,
    extensions: Vec<String>,
    auth: Option<String>,
    /// The message being handed over, from its accepted `MAIL FROM`.
    message: Option<Message>,
}

#[derive(Debug)]
struct Message {
    txn: Txn<SmtpTxn>,
    accepted: usize,
    /// The body has started (DATA accepted or a BDAT sent).
    body: bool,
    size: u64,
}

impl Smtp {
    fn new(max_pending: usize, max_recipients: usize) -> Smtp {
        Smtp {
            pending: VecDeque::new(),
            max_pending,
            max_recipients,
            client: Client::Commands,
            encrypted: false,
            greeted: false,
            helo: None,
            extensions: Vec::new(),
            auth: None,
            message: None,
        }
    }

    /// A transaction of this session for `cmd`, its reply not yet known.
    fn txn(&self, cmd: &Cmd) -> Txn<SmtpTxn> {
        let mut t = Txn::new(cmd.start, cmd.bytes);
        t.method = Some(cmd.verb.clone());
        t.fields = SmtpTxn {
            command: cmd.verb.clone(),
            helo: self.helo.clone(),
            extensions: self.extensions.clone(),
            auth_mechanism: self.auth.clone(),
            ..SmtpTxn::default()
        };
        t
    }

    fn push(&mut self, cmd: Cmd, cx: &mut Cx<'_>) {
        if self.pending.len() >= self.max_pending {
            // The server answers nothing: the oldest command is given up.
            if let Some(old) = self.pending.pop_front() {
                let t = self.txn(&old);
                txn::fail(t, "too many commands waiting for a reply", cx);
            }
        }
        self.pending.push_back(cmd);
    }

    fn client(&mut self, data: &[u8], cx: &mut Cx<'_>) -> Result<usize, ParseError> {
        match self.client {
            Client::Body(mut end) => {
                let s = end.scan(data);
                self.client = Client::Body(end);
                if let Some(m) = &mut self.message {
                    // The `.` line may have begun in an earlier piece.
                    m.size = (m.size + s.used as u64).saturating_sub(s.marker as u64);
                    m.txn.bytes_in += s.used as u64;
                }
                if s.done {
                    self.client = Client::Commands;
                    self.push(
                        Cmd {
                            verb: "DATA".into(),
                            kind: Kind::BodyEnd,
                            start: cx.now,
                            bytes: 0,
                        },
                        cx,
                    );
                }
                Ok(s.used)
            }
            Client::AuthAnswer => {
                let Some(len) = parser::skip_line(data)? else {
                    return Ok(0);
                };
                self.client = Client::Commands;
                Ok(len)
            }
            Client::Commands => {
                let Some((len, c)) = parser::command(data)? else {
                    return Ok(0);
                };
                let word = |a: &[u8]| {
                    let w = a.split(|&b| b == b' ').next().unwrap_or_default();
                    String::from_utf8_lossy(w).into_owned()
                };
                let mut skip = 0;
                let kind = match c.verb.as_str() {
                    "EHLO" | "HELO" => Kind::Hello { name: word(c.arg) },
                    "MAIL" => Kind::Mail {
                        from: parser::mailbox(c.arg, "FROM:").unwrap_or_default(),
                    },
                    "RCPT" => Kind::Rcpt {
                        to: parser::mailbox(c.arg, "TO:").unwrap_or_default(),
                    },
                    "DATA" => Kind::Data,
                    "BDAT" => {
                        let mut words = c.arg.split(|&b| b == b' ').filter(|w| !w.is_empty());
                        let n: u64 = words
                            .next()
                            .and_then(|w| std::str::from_utf8(w).ok()?.parse().ok())
                            .ok_or(ParseError("smtp: BDAT without a size"))?;
                        let last = words
                            .next()
                            .is_some_and(|w| w.eq_ignore_ascii_case(b"LAST"));
                        if let Some(m) = &mut self.message {
                            m.body = true;
                            m.size += n;
                            m.txn.bytes_in += n;
                        }
                        skip = usize::try_from(n).map_err(|_| ParseError("smtp: BDAT size"))?;
                        Kind::Bdat { last }
                    }
                    "STARTTLS" => Kind::StartTls,
                    // The mechanism only: an initial response after it is a credential.
                    "AUTH" => Kind::Auth {
                        mechanism: word(c.arg).to_ascii_uppercase(),
                    },
                    "RSET" => Kind::Rset,
                    _ => Kind::Other,
                };
                if let Some(m) = &mut self.message
                    && matches!(kind, Kind::Rcpt { .. } | Kind::Data | Kind::Bdat { .. })
                {
                    m.txn.bytes_in += len as u64;
                }
                let cmd = Cmd {
                    verb: c.verb,
                    kind,
                    start: cx.now,
                    bytes: len as u64,
                };
                self.push(cmd, cx);
                Ok(len.saturating_add(skip))
            }
        }
    }

    fn server(&mut self, data: &[u8], cx: &mut Cx<'_>) -> Result<usize, ParseError> {
        let Some((len, r)) = parser::reply(data)? else {
            return Ok(0);
        };
        let bytes = len as u64;
        // An AUTH challenge: the client answers with a line that is no command.
        if r.code == 334
            && matches!(
                self.pending.front(),
                Some(Cmd {
                    kind: Kind::Auth { .. },
                    ..
                })
            )
        {
            self.client = Client::AuthAnswer;
            return Ok(len);
        }
        if matches!(self.client, Client::Body(_)) && self.pending.is_empty() {
            // The end of the body was not seen (lost in a gap of the capture): the reply
            // can only come after it, and is the body's.
            self.client = Client::Commands;
            self.pending.push_back(Cmd {
                verb: "DATA".into(),
                kind: Kind::BodyEnd,
                start: cx.now,
                bytes: 0,
            });
        }
        let Some(cmd) = self.pending.pop_front() else {
            if !self.greeted {
                self.greeted = true;
            } else if r.code != 421 {
                txn::unmatched_response();
            }
            return Ok(len);
        };
        self.greeted = true;
        let failed = r.code >= 400;
        match cmd.kind.clone() {
            Kind::Hello { name } if !failed => {
                self.helo = Some(name);
                self.extensions = if cmd.verb == "EHLO" {
                    r.lines.iter().skip(1).cloned().collect()
                } else {
                    Vec::new()
                };
                // A new EHLO resets the session (RFC 5321 4.1.4).
                self.message = None;
            }
            Kind::Mail { from } if !failed => {
                let mut t = self.txn(&cmd);
                t.fields.from = Some(from);
                self.message = Some(Message {
                    txn: t,
                    accepted: 0,
                    body: false,
                    size: 0,
                });
                self.reply_to_message(bytes);
            }
            Kind::Rcpt { to } if !failed => {
                let max = self.max_recipients;
                if let Some(m) = &mut self.message {
                    m.accepted += 1;
                    if m.txn.fields.to.len() < max {
                        m.txn.fields.to.push(to);
                    } else {
                        m.txn.fields.rcpt_count = Some(m.accepted);
                    }
                }
                self.reply_to_message(bytes);
            }
            Kind::Data if r.code == 354 => {
                self.client = Client::Body(BodyEnd::start());
                if let Some(m) = &mut self.message {
                    m.body = true;
                }
                self.reply_to_message(bytes);
            }
            Kind::Bdat { last: false } if !failed => self.reply_to_message(bytes),
            Kind::StartTls if r.code == 220 => {
                let mut t = self.txn(&cmd);
                t.fields.encrypted = true;
                self.finish(t, &r, bytes, cx);
                self.encrypted = true;
                self.pending.clear();
                self.message = None;
            }
            Kind::Auth { mechanism } => {
                if failed {
                    let mut t = self.txn(&cmd);
                    t.fields.auth_mechanism = Some(mechanism);
                    self.finish(t, &r, bytes, cx);
                } else {
                    self.auth = Some(mechanism);
                }
                self.client = Client::Commands;
            }
            Kind::Rset if !failed => self.message = None,
            // The reply that ends a message attempt: the body's, the last chunk's, or a
            // refused DATA or chunk.
            Kind::BodyEnd | Kind::Bdat { .. } | Kind::Data if self.message.is_some() => {
                if let Some(m) = self.message.take() {
                    let mut t = m.txn;
                    if m.body {
                        t.fields.size = Some(m.size);
                    }
                    t.fields.command = cmd.verb.clone();
                    t.method = Some(cmd.verb);
                    self.finish(t, &r, bytes, cx);
                }
            }
            _ if failed => {
                let mut t = self.txn(&cmd);
                match cmd.kind {
                    Kind::Mail { from } => t.fields.from = Some(from),
                    Kind::Rcpt { to } => {
                        t.fields.from = self
                            .message
                            .as_ref()
                            .and_then(|m| m.txn.fields.from.clone());
                        t.fields.to = vec![to];
                    }
                    _ => {}
                }
                self.finish(t, &r, bytes, cx);
            }
            _ => {}
        }
        Ok(len)
    }

    /// Counts a reply to the message being handed over.
    fn reply_to_message(&mut self, bytes: u64) {
        if let Some(m) = &mut self.message {
            m.txn.bytes_out += bytes;
        }
    }

    /// Publishes `t` ended by reply `r`.
    fn finish(&mut self, mut t: Txn<SmtpTxn>, r: &Reply, bytes: u64, cx: &mut Cx<'_>) {
        t.fields.reply_code = r.code;
        t.fields.reply_text = r.lines.join("\n");
        if r.code >= 400 {
            t.status = status::ERROR;
        }
        let out = t.bytes_out + bytes;
        txn::complete(t, cx.now, out, cx);
    }

    /// The message in flight fails with `note` (its body had started: it was being handed
    /// over); a message that never reached its body was not, and is forgotten.
    fn fail_message(&mut self, note: &str, cx: &mut Cx<'_>) {
        if let Some(m) = self.message.take()
            && m.body
        {
            let mut t = m.txn;
            t.fields.size = Some(m.size);
            txn::fail(t, note, cx);
        }
    }
}

impl TcpParser for Smtp {
    fn parse(&mut self, dir: Dir, data: &[u8], cx: &mut Cx<'_>) -> Result<usize, ParseError> {
        if self.encrypted {
            return Ok(data.len());
        }
        match dir {
            Dir::ToServer => self.client(data, cx),
            Dir::ToClient => self.server(data, cx),
        }
    }

    fn gap(&mut self, dir: Dir, len: usize, cx: &mut Cx<'_>) -> GapAction {
        if self.encrypted {
            return GapAction::Continue;
        }
        match (dir, self.client) {
            // Inside a body: its size is known all the same, its end is still ahead.
            (Dir::ToServer, Client::Body(_)) => {
                if let Some(m) = &mut self.message {
                    m.size += len as u64;
                    m.txn.bytes_in += len as u64;
                }
                self.client = Client::Body(BodyEnd::default());
                GapAction::Continue
            }
            (Dir::ToServer, _) => {
                self.client = Client::Commands;
                GapAction::Reset
            }
            (Dir::ToClient, _) => {
                self.pending.clear();
                self.fail_message(NOTE_GAP, cx);
                GapAction::Reset
            }
        }
    }

    fn expire(&mut self, cx: &mut Cx<'_>) {
        if self
            .pending
            .front()
            .is_some_and(|c| cx.now.saturating_sub(c.start) >= cx.timeout)
        {
            self.pending.clear();
            self.fail_message(NOTE_TIMEOUT, cx);
        }
    }

    fn close(&mut self, cx: &mut Cx<'_>) {
        self.pending.clear();
        self.fail_message(NOTE_CLOSED, cx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::proto::testutil::{common, drive};

    fn smtp() -> Box<dyn TcpParser> {
        let e = Entry::<Options>::default();
        <Proto as super::super::Protocol>::parsers(&e, &common())
            .tcp
            .unwrap()()
    }

    fn session(msgs: &[(Dir, &[u8])], split: usize) -> Vec<serde_json::Value> {
        let mut p = smtp();
        drive(p.as_mut(), msgs, split)
            .iter()
            .map(|t| {
                let mut o = t.object();
                o["status"] = t.status.into();
                o["bytes_in"] = t.bytes_in.into();
                o["bytes_out"] = t.bytes_out.into();
                o
            })
            .collect()
    }

    const S: Dir = Dir::ToClient;
    const C: Dir = Dir::ToServer;

    #[test]
    fn two_messages_a_refused_recipient_and_a_refused_command() {
        let msgs: Vec<(Dir, &[u8])> = vec![
            (S, b"220 mx.test ESMTP\r\n"),
            (C, b"EHLO client.test\r\n"),
            (S, b"250-mx.test\r\n250-SIZE 33554432\r\n250 8BITMIME\r\n"),
            (C, b"MAIL FROM:<a@x.test>\r\n"),
            (S, b"250 OK\r\n"),
            (C, b"RCPT TO:<b@x.test>\r\n"),
            (S, b"250 OK\r\n"),
            (C, b"RCPT TO:<nobody@x.test>\r\n"),
            (S, b"550 5.1.1 no such user\r\n"),
            (C, b"DATA\r\n"),
            (S, b"354 go ahead\r\n"),
            (C, b"Subject: one\r\n\r\nhello\r\n.\r\n"),
            (S, b"250 2.0.0 queued as 1\r\n"),
            // Pipelined: MAIL, RCPT and DATA in one go.
            (C, b"MAIL FROM:<>\r\nRCPT TO:<c@x.test>\r\nDATA\r\n"),
            (S, b"250 OK\r\n250 OK\r\n354 go\r\n"),
            (C, b"x\r\n..\r\n.\r\n"),
            (S, b"452 4.3.1 full\r\n"),
            (C, b"VRFY someone\r\n"),
            (S, b"502 5.5.1 no\r\n"),
            (C, b"QUIT\r\n"),
            (S, b"221 bye\r\n"),
        ];
        for split in [1, 3, 1000] {
            let out = session(&msgs, split);
            assert_eq!(out.len(), 4, "split {split}: {out:#?}");
            assert_eq!(out[0]["command"], "RCPT");
            assert_eq!(out[0]["to"], serde_json::json!(["nobody@x.test"]));
            assert_eq!(out[0]["from"], "a@x.test");
            assert_eq!(out[0]["reply_code"], 550);
            assert_eq!(out[0]["status"], "Error");
            let m = &out[1];
            assert_eq!(m["command"], "DATA");
            assert_eq!(m["from"], "a@x.test");
            assert_eq!(m["to"], serde_json::json!(["b@x.test"]));
            assert_eq!(m["size"], 23);
            assert_eq!(m["helo"], "client.test");
            assert_eq!(
                m["extensions"],
                serde_json::json!(["SIZE 33554432", "8BITMIME"])
            );
            assert_eq!(m["reply_code"], 250);
            assert_eq!(m["reply_text"], "2.0.0 queued as 1");
            assert_eq!(m["status"], "OK");
            assert_eq!(m["bytes_in"], 22 + 20 + 25 + 6 + 26);
            let m = &out[2];
            assert_eq!(
                (m["from"].as_str(), m["size"].as_u64()),
                (Some(""), Some(7))
            );
            assert_eq!(m["status"], "Error");
            assert_eq!(m["reply_code"], 452);
            assert_eq!(out[3]["command"], "VRFY");
            assert_eq!(out[3]["status"], "Error");
        }
    }

    #[test]
    fn auth_keeps_the_mechanism_never_the_credentials() {
        let msgs: Vec<(Dir, &[u8])> = vec![
            (S, b"220 mx\r\n"),
            (C, b"EHLO c\r\n"),
            (S, b"250-mx\r\n250 AUTH PLAIN LOGIN\r\n"),
            (C, b"AUTH PLAIN AHVzZXIAc2VjcmV0\r\n"),
            (S, b"535 5.7.8 bad credentials\r\n"),
            (C, b"AUTH LOGIN\r\n"),
            (S, b"334 VXNlcm5hbWU6\r\n"),
            (C, b"dXNlcg==\r\n"),
            (S, b"334 UGFzc3dvcmQ6\r\n"),
            (C, b"c2VjcmV0\r\n"),
            (S, b"235 2.7.0 ok\r\n"),
            (C, b"MAIL FROM:<u@x>\r\nRCPT TO:<v@x>\r\nDATA\r\n"),
            (S, b"250 ok\r\n250 ok\r\n354 go\r\n"),
            (C, b"hi\r\n.\r\n"),
            (S, b"250 ok\r\n"),
        ];
        let out = session(&msgs, 2);
        assert_eq!(out.len(), 2, "{out:#?}");
        assert_eq!(out[0]["command"], "AUTH");
        assert_eq!(out[0]["auth_mechanism"], "PLAIN");
        assert_eq!(out[0]["status"], "Error");
        assert_eq!(out[1]["auth_mechanism"], "LOGIN");
        assert_eq!(out[1]["size"], 4);
        let text = format!("{out:?}");
        for secret in ["AHVzZXIAc2VjcmV0", "dXNlcg", "c2VjcmV0"] {
            assert!(!text.contains(secret), "{text}");
        }
    }

    #[test]
    fn starttls_marks_the_session_and_leaves_it_alone() {
        let msgs: Vec<(Dir, &[u8])> = vec![
            (S, b"220 mx\r\n"),
            (C, b"EHLO c\r\n"),
            (S, b"250-mx\r\n250 STARTTLS\r\n"),
            (C, b"STARTTLS\r\n"),
            (S, b"220 2.0.0 ready\r\n"),
            (C, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
            (S, b"\x16\x03\x03\x00\x7a\x02\x00"),
        ];
        let out = session(&msgs, 1000);
        assert_eq!(out.len(), 1, "{out:#?}");
        assert_eq!(out[0]["command"], "STARTTLS");
        assert_eq!(out[0]["encrypted"], true);
        assert_eq!(out[0]["status"], "OK");
    }

    #[test]
    fn bdat_chunks_are_skipped_and_counted() {
        let msgs: Vec<(Dir, &[u8])> = vec![
            (S, b"220 mx\r\n"),
            (C, b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\n"),
            (S, b"250 ok\r\n250 ok\r\n"),
            (C, b"BDAT 5\r\nab\r\ncBDAT 3 LAST\r\nxyz"),
            (S, b"250 5 octets\r\n250 done\r\n"),
        ];
        let out = session(&msgs, 4);
        assert_eq!(out.len(), 1, "{out:#?}");
        assert_eq!(out[0]["command"], "BDAT");
        assert_eq!(out[0]["size"], 8);
        assert_eq!(out[0]["reply_text"], "done");
    }

    #[test]
    fn a_session_cut_in_the_body_fails_the_message() {
        let msgs: Vec<(Dir, &[u8])> = vec![
            (C, b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n"),
            (S, b"250 ok\r\n250 ok\r\n354 go\r\n"),
            (C, b"half a message"),
        ];
        let out = session(&msgs, 1000);
        assert_eq!(out.len(), 1, "{out:#?}");
        assert_eq!(out[0]["status"], "Error");
        assert_eq!(out[0]["size"], 14);
    }
}

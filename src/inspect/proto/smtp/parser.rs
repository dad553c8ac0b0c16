//! SMTP's wire format, pure: command lines, (multi-line) replies, the end of a `DATA`
//! body, and the mailbox of `MAIL FROM` / `RCPT TO` (RFC 5321).

use crate::inspect::proto::ParseError;

/// Longest command or reply line accepted (RFC 5321 asks for 512 and 1000 bytes; the
/// slack is for extensions that make lines longer).
pub const MAX_LINE: usize = 8 * 1024;
/// Most lines in one reply (an EHLO reply lists one extension per line).
pub const MAX_REPLY_LINES: usize = 64;

/// One line ending in LF (CRLF or a bare LF), without its end; `None` when incomplete.
fn line(data: &[u8]) -> Result<Option<(usize, &[u8])>, ParseError> {
    match memchr::memchr(b'\n', data) {
        Some(i) if i > MAX_LINE => Err(ParseError("smtp: line too long")),
        Some(i) => {
            let l = &data[..i];
            Ok(Some((i + 1, l.strip_suffix(b"\r").unwrap_or(l))))
        }
        None if data.len() > MAX_LINE => Err(ParseError("smtp: line too long")),
        None => Ok(None),
    }
}

/// A client command line: its verb (upper-cased) and the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command<'a> {
    pub verb: String,
    pub arg: &'a [u8],
}

/// The command at the start of `data` and its length.
pub fn command(data: &[u8]) -> Result<Option<(usize, Command<'_>)>, ParseError> {
    let Some((len, l)) = line(data)? else {
        return Ok(None);
    };
    let end = l.iter().position(|&b| b == b' ').unwrap_or(l.len());
    let verb = &l[..end];
    if verb.is_empty() || verb.len() > 16 || !verb.iter().all(u8::is_ascii_alphanumeric) {
        return Err(ParseError("smtp: not a command"));
    }
    let arg = l.get(end + 1..).unwrap_or_default();
    Ok(Some((
        len,
        Command {
            verb: String::from_utf8_lossy(verb).to_ascii_uppercase(),
            arg,
        },
    )))
}

/// A line the client sends that is not a command: an answer to an AUTH challenge. Only
/// its length matters (credentials are never read).
pub fn skip_line(data: &[u8]) -> Result<Option<usize>, ParseError> {
    Ok(line(data)?.map(|(len, _)| len))
}

/// A server reply: its code and the text of each line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// The text of the last line (the one that ends the reply).
    pub fn text(&self) -> &str {
        self.lines.last().map(String::as_str).unwrap_or_default()
    }
}

/// The reply at the start of `data` (every line of a multi-line reply) and its length.
pub fn reply(data: &[u8]) -> Result<Option<(usize, Reply)>, ParseError> {
    let mut at = 0;
    let mut code = None;
    let mut lines = Vec::new();
    loop {
        let Some((len, l)) = line(&data[at..])? else {
            return Ok(None);
        };
        at += len;
        if l.len() < 3 || !l[..3].iter().all(u8::is_ascii_digit) {
            return Err(ParseError("smtp: not a reply"));
        }
        let c = u16::from(l[0] - b'0') * 100 + u16::from(l[1] - b'0') * 10 + u16::from(l[2] - b'0');
        if !(100..600).contains(&c) {
            return Err(ParseError("smtp: reply code out of range"));
        }
        if code.is_some_and(|prev| prev != c) {
            return Err(ParseError("smtp: reply lines with different codes"));
        }
        code = Some(c);
        if lines.len() < MAX_REPLY_LINES {
            let text = l.get(4..).unwrap_or_default();
            lines.push(String::from_utf8_lossy(text).into_owned());
        }
        match l.get(3) {
            Some(b'-') => continue,
            None | Some(b' ') => {
                return Ok(Some((at, Reply { code: c, lines })));
            }
            Some(_) => return Err(ParseError("smtp: bad reply separator")),
        }
    }
}

/// The mailbox of a `MAIL FROM:<a@b> SIZE=1` / `RCPT TO:<c@d>` argument (`prefix` is
/// `FROM:` or `TO:`, matched without regard to case); `<>` is the empty mailbox.
pub fn mailbox(arg: &[u8], prefix: &str) -> Option<String> {
    let p = prefix.as_bytes();
    if arg.len() < p.len() || !arg[..p.len()].eq_ignore_ascii_case(p) {
        return None;
    }
    let rest = arg[p.len()..].trim_ascii_start();
    let path = match rest.strip_prefix(b"<") {
        Some(r) => &r[..memchr::memchr(b'>', r)?],
        None => rest.split(|&b| b == b' ').next().unwrap_or_default(),
    };
    Some(String::from_utf8_lossy(path).into_owned())
}

/// Where the end of a DATA body is being looked for (`CRLF . CRLF`, the first CRLF being
/// the end of the last line or the 354 reply before the body).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BodyEnd {
    /// 0: inside a line; 1: at a line start; 2: after `.` at a line start; 3: after `.\r`.
    state: u8,
}

impl BodyEnd {
    /// At the start of a body (just after the 354 reply).
    pub fn start() -> BodyEnd {
        BodyEnd { state: 1 }
    }

    /// Scans `data`: the bytes taken (all of them, or up to the end of the `.` line), and
    /// whether that line was found. The message is every byte taken since [`BodyEnd::start`]
    /// but the `.` line (`marker` bytes).
    pub fn scan(&mut self, data: &[u8]) -> BodyScan {
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            self.state = match (self.state, b) {
                (1, b'.') => 2,
                (2, b'\n') | (3, b'\n') => {
                    let marker = if self.state == 3 { 3 } else { 2 };
                    return BodyScan {
                        used: i + 1,
                        marker,
                        done: true,
                    };
                }
                (2, b'\r') => 3,
                (_, b'\n') => 1,
                _ => {
                    // Jump to the next line end: most of a body is inside lines.
                    match memchr::memchr(b'\n', &data[i..]) {
                        Some(n) if n > 0 => {
                            self.state = 0;
                            i += n;
                            continue;
                        }
                        Some(_) => 1,
                        None => {
                            self.state = 0;
                            return BodyScan {
                                used: data.len(),
                                marker: 0,
                                done: false,
                            };
                        }
                    }
                }
            };
            i += 1;
        }
        BodyScan {
            used: data.len(),
            marker: 0,
            done: false,
        }
    }
}

/// What [`BodyEnd::scan`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyScan {
    pub used: usize,
    /// When done: the length of the `.` line (`.\r\n` or `.\n`), which is not message.
    pub marker: usize,
    pub done: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_replies() {
        let (n, c) = command(b"mail FROM:<a@b.c> SIZE=10\r\nRCPT")
            .unwrap()
            .unwrap();
        assert_eq!((n, c.verb.as_str()), (27, "MAIL"));
        assert_eq!(mailbox(c.arg, "FROM:").as_deref(), Some("a@b.c"));
        assert_eq!(mailbox(b"to: <x@y>", "TO:").as_deref(), Some("x@y"));
        assert_eq!(mailbox(b"FROM:<>", "FROM:").as_deref(), Some(""));
        assert_eq!(mailbox(b"TO:<x@y>", "FROM:"), None);
        assert_eq!(command(b"QUIT").unwrap(), None);
        assert!(command(b"\x00\x01 x\r\n").is_err());
        let r = b"250-mx.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n";
        let (n, r) = reply(r).unwrap().unwrap();
        assert_eq!(n, 43);
        assert_eq!(r.code, 250);
        assert_eq!(r.lines, vec!["mx.test", "PIPELINING", "STARTTLS"]);
        assert_eq!(reply(b"250-a\r\n250 b").unwrap(), None);
        assert!(reply(b"250-a\r\n251 b\r\n").is_err());
        assert!(reply(b"hello\r\n").is_err());
        let (_, r) = reply(b"354\r\n").unwrap().unwrap();
        assert_eq!((r.code, r.text()), (354, ""));
    }

    #[test]
    fn the_end_of_a_body_is_found_across_pieces() {
        let message = b"Subject: x\r\n\r\n..dot\r\n.x\r\nend\r\n";
        let body = [&message[..], b".\r\nQUIT\r\n"].concat();
        for split in 1..body.len() {
            let mut e = BodyEnd::start();
            let (a, b) = body.split_at(split);
            let s = e.scan(a);
            let (marker, used) = if s.done {
                (s.marker, s.used)
            } else {
                let t = e.scan(b);
                assert!(t.done, "split at {split}");
                (t.marker, s.used + t.used)
            };
            assert_eq!(used - marker, message.len(), "split at {split}");
            assert_eq!(used, message.len() + 3, "split at {split}");
        }
        let mut e = BodyEnd::start();
        let s = e.scan(b".\r\n");
        assert_eq!((s.used, s.marker, s.done), (3, 3, true));
    }
}

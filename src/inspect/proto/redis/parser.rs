//! RESP2 and RESP3 framing: finds where one value ends and renders it as short text.
//!
//! Hand-written rather than `redis-protocol`: connbeat needs only "how long is this value,
//! is it an error, what does it look like in at most N characters", without decoding whole
//! replies into owned trees, and with hard bounds (nesting depth, line length, bulk size)
//! against hostile input. Lengths are only ever compared with the bytes present; nothing is
//! allocated from a length read off the wire.

use crate::inspect::proto::ParseError;

/// Deepest nesting of aggregates accepted.
const MAX_DEPTH: usize = 32;
/// Longest simple line (`+OK`, `-ERR ...`, `:1`, size lines).
const MAX_LINE: usize = 64 * 1024;
/// Largest bulk string Redis itself accepts.
const MAX_BULK: i64 = 512 * 1024 * 1024;

/// What kind of top-level value was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Normal,
    /// `-ERR ...` or a RESP3 bulk error.
    Error,
    /// A RESP3 out-of-band push (`>`), not a reply to a command.
    Push,
}

fn line(data: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, ParseError> {
    let rest = data.get(at..).unwrap_or(&[]);
    match memchr_crlf(rest) {
        Some(i) => Ok(Some((&rest[..i], at + i + 2))),
        None if rest.len() > MAX_LINE => Err(ParseError("redis: line too long")),
        None => Ok(None),
    }
}

fn memchr_crlf(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + 1 < b.len() {
        match b[i + 1..].iter().position(|&c| c == b'\n') {
            Some(p) => {
                let nl = i + 1 + p;
                if b[nl - 1] == b'\r' {
                    return Some(nl - 1);
                }
                i = nl;
            }
            None => return None,
        }
    }
    None
}

fn int(l: &[u8]) -> Result<i64, ParseError> {
    std::str::from_utf8(l)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ParseError("redis: bad length or integer"))
}

/// Appends to `out` without going past `max` characters.
fn put(out: &mut String, s: &str, max: usize) {
    if out.len() >= max {
        return;
    }
    let room = max - out.len();
    if s.len() <= room {
        out.push_str(s);
    } else {
        let mut cut = room;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push_str(&s[..cut]);
    }
}

/// Reads one value at `at`. Returns the position after it, or `None` when incomplete.
/// The value is rendered into `out` (bounded by `max`).
pub fn value(
    data: &[u8],
    at: usize,
    depth: usize,
    out: &mut String,
    max: usize,
) -> Result<Option<(usize, Kind)>, ParseError> {
    if depth > MAX_DEPTH {
        return Err(ParseError("redis: nesting too deep"));
    }
    let Some(&t) = data.get(at) else {
        return Ok(None);
    };
    let Some((l, next)) = line(data, at + 1)? else {
        return Ok(None);
    };
    let text = |l: &[u8]| String::from_utf8_lossy(l).into_owned();
    match t {
        b'+' | b':' | b',' | b'(' => {
            put(out, &text(l), max);
            Ok(Some((next, Kind::Normal)))
        }
        b'-' => {
            put(out, &text(l), max);
            Ok(Some((next, Kind::Error)))
        }
        b'#' => {
            put(out, if l == b"t" { "true" } else { "false" }, max);
            Ok(Some((next, Kind::Normal)))
        }
        b'_' => {
            put(out, "nil", max);
            Ok(Some((next, Kind::Normal)))
        }
        b'$' | b'!' | b'=' => {
            let n = int(l)?;
            if n < 0 {
                put(out, "nil", max);
                return Ok(Some((next, Kind::Normal)));
            }
            if n > MAX_BULK {
                return Err(ParseError("redis: bulk string too large"));
            }
            let end = next + n as usize;
            if data.len() < end + 2 {
                return Ok(None);
            }
            if &data[end..end + 2] != b"\r\n" {
                return Err(ParseError("redis: bulk string not terminated"));
            }
            let mut body = &data[next..end];
            if t == b'=' && body.len() >= 4 {
                body = &body[4..]; // "txt:" format prefix
            }
            put(
                out,
                &String::from_utf8_lossy(&body[..body.len().min(max)]),
                max,
            );
            Ok(Some((
                end + 2,
                if t == b'!' { Kind::Error } else { Kind::Normal },
            )))
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = int(l)?;
            if n < 0 {
                put(out, "nil", max);
                return Ok(Some((next, Kind::Normal)));
            }
            let items = if t == b'%' || t == b'|' {
                n.saturating_mul(2)
            } else {
                n
            };
            let mut pos = next;
            put(out, "[", max);
            for i in 0..items {
                if pos >= data.len() {
                    return Ok(None);
                }
                if i > 0 {
                    put(out, ", ", max);
                }
                match value(data, pos, depth + 1, out, max)? {
                    Some((p, _)) => pos = p,
                    None => return Ok(None),
                }
            }
            put(out, "]", max);
            if t == b'|' {
                // An attribute precedes the real reply: read that too.
                out.clear();
                return value(data, pos, depth + 1, out, max);
            }
            Ok(Some((
                pos,
                if t == b'>' { Kind::Push } else { Kind::Normal },
            )))
        }
        _ => Err(ParseError("redis: unknown type byte")),
    }
}

/// A command: its arguments and its length on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub args: Vec<String>,
    pub len: usize,
}

/// Most arguments rendered per command.
const MAX_ARGS: usize = 64;
/// Longest argument rendered.
const MAX_ARG: usize = 1024;

/// Reads one command: an array of bulk strings, or an inline command line (an empty line
/// gives a command without arguments, which the caller skips).
pub fn command(data: &[u8]) -> Result<Option<Command>, ParseError> {
    let Some(&first) = data.first() else {
        return Ok(None);
    };
    if first != b'*' {
        let Some((l, next)) = line(data, 0)? else {
            return Ok(None);
        };
        let args: Vec<String> = l
            .split(|b| *b == b' ')
            .filter(|a| !a.is_empty())
            .take(MAX_ARGS)
            .map(|a| String::from_utf8_lossy(&a[..a.len().min(MAX_ARG)]).into_owned())
            .collect();
        if args.is_empty() {
            // Redis ignores empty inline lines (redis-cli --pipe sends one).
            return Ok(Some(Command { args, len: next }));
        }
        if !args[0]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            return Err(ParseError("redis: not a command"));
        }
        return Ok(Some(Command { args, len: next }));
    }
    let Some((l, mut pos)) = line(data, 1)? else {
        return Ok(None);
    };
    let n = int(l)?;
    if n <= 0 {
        return Err(ParseError("redis: empty command"));
    }
    let mut args = Vec::new();
    for _ in 0..n {
        if data.get(pos) != Some(&b'$') {
            if pos >= data.len() {
                return Ok(None);
            }
            return Err(ParseError("redis: command argument is not a bulk string"));
        }
        let mut s = String::new();
        match value(data, pos, 1, &mut s, MAX_ARG)? {
            Some((p, _)) => pos = p,
            None => return Ok(None),
        }
        if args.len() < MAX_ARGS {
            args.push(s);
        }
    }
    Ok(Some(Command { args, len: pos }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(d: &[u8]) -> Option<(usize, Kind, String)> {
        let mut s = String::new();
        value(d, 0, 0, &mut s, 100).unwrap().map(|(n, k)| (n, k, s))
    }

    #[test]
    fn resp2_and_resp3_values() {
        assert_eq!(render(b"+OK\r\n"), Some((5, Kind::Normal, "OK".into())));
        assert_eq!(render(b"-ERR x\r\n").unwrap().1, Kind::Error);
        assert_eq!(render(b"$3\r\nabc\r\n").unwrap().2, "abc");
        assert_eq!(render(b"$-1\r\n").unwrap().2, "nil");
        assert_eq!(render(b"*2\r\n:1\r\n$1\r\nx\r\n").unwrap().2, "[1, x]");
        assert_eq!(render(b"%1\r\n+a\r\n#t\r\n").unwrap().2, "[a, true]");
        assert_eq!(render(b">2\r\n+a\r\n+b\r\n").unwrap().1, Kind::Push);
        assert_eq!(render(b"$3\r\nab"), None);
        assert_eq!(render(b"*1000000\r\n:1\r\n"), None);
        let mut s = String::new();
        let deep = b"*1\r\n".repeat(40);
        assert!(value(&deep, 0, 0, &mut s, 10).is_err());
    }

    #[test]
    fn commands() {
        let c = command(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(c.args, vec!["SET", "k", "v"]);
        assert_eq!(command(b"PING\r\n").unwrap().unwrap().args, vec!["PING"]);
        assert!(command(b"*2\r\n$3\r\nGET\r\n").unwrap().is_none());
        assert!(command(b"*1\r\n:1\r\n").is_err());
    }
}

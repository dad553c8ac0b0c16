//! RESP2, the Redis protocol, as the Redis output needs it: commands encoded as arrays of
//! bulk strings, and replies parsed from bytes (pure, bounded, no I/O).
//!
//! Written here rather than taken from a Redis client crate because the output must count
//! the replies of a pipeline one by one (an error reply is one event's failure, not the
//! batch's), speak over the stream it already has (TLS from the shared `ssl` block,
//! `proxy_url`), and the reply parser is small enough to fuzz on its own.

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`: the whole line, code first (`WRONGTYPE Operation against ...`).
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$n` (None: `$-1`, the null bulk string).
    Bulk(Option<Vec<u8>>),
    /// `*n` (None: `*-1`).
    Array(Option<Vec<Reply>>),
}

/// Why bytes are not a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not a RESP reply: type byte {0:#04x}")]
    BadType(u8),
    #[error("not a RESP reply: bad length or number {0:?}")]
    BadNumber(String),
    #[error("a reply over {limit} bytes")]
    TooLarge { limit: usize },
    #[error("replies nested deeper than {0}")]
    TooDeep(usize),
    #[error("a bulk string not ended by CRLF")]
    BadTerminator,
}

/// Bounds on what [`parse`] accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest bulk string, and most elements of an array.
    pub max_len: usize,
    /// Deepest nesting of arrays.
    pub max_depth: usize,
}

/// The replies to the commands the output sends are short; `KEYS *` of the topology
/// database is the largest.
pub const LIMITS: Limits = Limits {
    max_len: 64 << 20,
    max_depth: 4,
};

/// Parses one reply from the start of `buf`: `Ok(None)` when more bytes are needed, else
/// the reply and how many bytes it took.
pub fn parse(buf: &[u8], limits: Limits) -> Result<Option<(Reply, usize)>, ParseError> {
    parse_at(buf, 0, limits, 0)
}

fn parse_at(
    buf: &[u8],
    at: usize,
    limits: Limits,
    depth: usize,
) -> Result<Option<(Reply, usize)>, ParseError> {
    if depth > limits.max_depth {
        return Err(ParseError::TooDeep(limits.max_depth));
    }
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some(end) = line_end(buf, at + 1, limits)? else {
        return Ok(None);
    };
    let line = &buf[at + 1..end];
    let next = end + 2;
    let text = || String::from_utf8_lossy(line).into_owned();
    Ok(Some(match kind {
        b'+' => (Reply::Simple(text()), next),
        b'-' => (Reply::Error(text()), next),
        b':' => (Reply::Integer(number(line)?), next),
        b'$' => {
            let n = number(line)?;
            if n < 0 {
                return Ok(Some((Reply::Bulk(None), next)));
            }
            let n = n as usize;
            if n > limits.max_len {
                return Err(ParseError::TooLarge {
                    limit: limits.max_len,
                });
            }
            if buf.len() < next + n + 2 {
                return Ok(None);
            }
            if &buf[next + n..next + n + 2] != b"\r\n" {
                return Err(ParseError::BadTerminator);
            }
            (
                Reply::Bulk(Some(buf[next..next + n].to_vec())),
                next + n + 2,
            )
        }
        b'*' => {
            let n = number(line)?;
            if n < 0 {
                return Ok(Some((Reply::Array(None), next)));
            }
            let n = n as usize;
            if n > limits.max_len {
                return Err(ParseError::TooLarge {
                    limit: limits.max_len,
                });
            }
            let mut items = Vec::with_capacity(n.min(1024));
            let mut pos = next;
            for _ in 0..n {
                match parse_at(buf, pos, limits, depth + 1)? {
                    Some((r, p)) => {
                        items.push(r);
                        pos = p;
                    }
                    None => return Ok(None),
                }
            }
            (Reply::Array(Some(items)), pos)
        }
        other => return Err(ParseError::BadType(other)),
    }))
}

/// Where the CRLF of the line starting at `from` is; None when it has not arrived.
fn line_end(buf: &[u8], from: usize, limits: Limits) -> Result<Option<usize>, ParseError> {
    let rest = buf.get(from..).unwrap_or_default();
    match memchr::memmem::find(rest, b"\r\n") {
        Some(i) => Ok(Some(from + i)),
        None if rest.len() > limits.max_len => Err(ParseError::TooLarge {
            limit: limits.max_len,
        }),
        None => Ok(None),
    }
}

fn number(line: &[u8]) -> Result<i64, ParseError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ParseError::BadNumber(String::from_utf8_lossy(line).into_owned()))
}

/// Appends one command (an array of bulk strings) to `out`.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let mut n = itoa::Buffer::new();
    out.push(b'*');
    out.extend_from_slice(n.format(args.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        out.extend_from_slice(n.format(a.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(b: &[u8]) -> Reply {
        let (r, n) = parse(b, LIMITS).unwrap().unwrap();
        assert_eq!(n, b.len());
        r
    }

    #[test]
    fn every_reply_type() {
        assert_eq!(one(b"+OK\r\n"), Reply::Simple("OK".into()));
        assert_eq!(
            one(b"-WRONGTYPE Operation against a key\r\n"),
            Reply::Error("WRONGTYPE Operation against a key".into())
        );
        assert_eq!(one(b":-12\r\n"), Reply::Integer(-12));
        assert_eq!(
            one(b"$3\r\na\r\n\r\n"),
            Reply::Bulk(Some(b"a\r\n".to_vec()))
        );
        assert_eq!(one(b"$-1\r\n"), Reply::Bulk(None));
        assert_eq!(one(b"*-1\r\n"), Reply::Array(None));
        assert_eq!(
            one(b"*2\r\n$1\r\nx\r\n*1\r\n:1\r\n"),
            Reply::Array(Some(vec![
                Reply::Bulk(Some(b"x".to_vec())),
                Reply::Array(Some(vec![Reply::Integer(1)]))
            ]))
        );
    }

    #[test]
    fn a_reply_cut_anywhere_asks_for_more_and_pipelined_replies_come_one_by_one() {
        let all = b"*2\r\n$1\r\nx\r\n:7\r\n+OK\r\n";
        for cut in 0..15 {
            assert_eq!(parse(&all[..cut], LIMITS), Ok(None), "cut at {cut}");
        }
        let (r, n) = parse(all, LIMITS).unwrap().unwrap();
        assert_eq!(n, 15);
        assert!(matches!(r, Reply::Array(Some(_))));
        assert_eq!(
            parse(&all[n..], LIMITS).unwrap(),
            Some((Reply::Simple("OK".into()), 5))
        );
    }

    #[test]
    fn bad_input_is_an_error_within_the_limits() {
        assert_eq!(parse(b"?x\r\n", LIMITS), Err(ParseError::BadType(b'?')));
        assert!(matches!(
            parse(b":x\r\n", LIMITS),
            Err(ParseError::BadNumber(_))
        ));
        assert_eq!(parse(b"$1\r\nxyz", LIMITS), Err(ParseError::BadTerminator));
        let small = Limits {
            max_len: 8,
            max_depth: 1,
        };
        assert!(matches!(
            parse(b"$9\r\n", small),
            Err(ParseError::TooLarge { .. })
        ));
        assert!(matches!(
            parse(b"+0123456789", small),
            Err(ParseError::TooLarge { .. })
        ));
        assert_eq!(
            parse(b"*1\r\n*1\r\n*1\r\n:1\r\n", small),
            Err(ParseError::TooDeep(1))
        );
    }

    #[test]
    fn random_bytes_and_mutated_replies_never_panic() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let seed = b"*3\r\n$2\r\nab\r\n:-5\r\n*1\r\n-ERR x\r\n+OK\r\n";
        let small = Limits {
            max_len: 16,
            max_depth: 2,
        };
        for _ in 0..20_000 {
            let mut b = seed.to_vec();
            for _ in 0..(next() % 4) {
                let i = (next() as usize) % b.len();
                b[i] = b"*$:+-\r\n0123456789x"[(next() as usize) % 17];
            }
            let mut at = 0;
            while let Ok(Some((_, n))) = parse(&b[at..], small) {
                assert!(n > 0 && at + n <= b.len());
                at += n;
            }
        }
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        command(&mut out, &[b"RPUSH", b"k", b"{\"a\":1}"]);
        assert_eq!(out, b"*3\r\n$5\r\nRPUSH\r\n$1\r\nk\r\n$7\r\n{\"a\":1}\r\n");
    }
}

//! PostgreSQL frontend/backend protocol v3 framing: the untyped startup packets, typed
//! messages, and the few message bodies connbeat reads. Pure functions over bytes.

use crate::inspect::proto::ParseError;

/// Largest message accepted (the server's own limit for most messages is 1 GB).
const MAX_MESSAGE: usize = 1 << 30;

pub const SSL_REQUEST: u32 = 80_877_103;
pub const GSSENC_REQUEST: u32 = 80_877_104;
pub const CANCEL_REQUEST: u32 = 80_877_102;

/// An untyped startup-phase packet (StartupMessage, SSLRequest, CancelRequest).
pub fn startup(data: &[u8]) -> Result<Option<(u32, usize)>, ParseError> {
    if data.len() < 8 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
    if !(8..=10_000).contains(&len) {
        return Err(ParseError("pgsql: bad startup packet length"));
    }
    if data.len() < len {
        return Ok(None);
    }
    Ok(Some((
        u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
        len,
    )))
}

/// A typed message: (type byte, body, total length).
pub type Message<'a> = (u8, &'a [u8], usize);

/// The typed message at the start of `data`, `None` until it is complete.
pub fn message(data: &[u8]) -> Result<Option<Message<'_>>, ParseError> {
    if data.len() < 5 {
        return Ok(None);
    }
    let t = data[0];
    if !t.is_ascii_alphanumeric() {
        return Err(ParseError("pgsql: bad message type"));
    }
    let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    if !(4..=MAX_MESSAGE).contains(&len) {
        return Err(ParseError("pgsql: bad message length"));
    }
    let total = 1 + len;
    if data.len() < total {
        return Ok(None);
    }
    Ok(Some((t, &data[5..total], total)))
}

/// Length announced by the typed message at the start of `data`.
pub fn announced_len(data: &[u8]) -> Option<usize> {
    (data.len() >= 5).then(|| 1 + u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize)
}

/// The NUL-terminated string at `at`: (text, position after the NUL).
/// RowDescription: the column names.
pub fn row_names(body: &[u8]) -> Vec<String> {
    let n = u16::from_be_bytes([*body.first().unwrap_or(&0), *body.get(1).unwrap_or(&0)]);
    let mut at = 2;
    let mut names = Vec::new();
    for _ in 0..n {
        let Some((name, next)) = cstr(body, at) else {
            break;
        };
        names.push(name);
        at = next + 18;
    }
    names
}

/// DataRow: each column's value (`None`: NULL), as far as the message is well formed.
pub fn row_values(body: &[u8]) -> Vec<Option<&[u8]>> {
    let n = u16::from_be_bytes([*body.first().unwrap_or(&0), *body.get(1).unwrap_or(&0)]);
    let mut at = 2;
    let mut values = Vec::new();
    for _ in 0..n {
        let Some(l) = body.get(at..at + 4) else { break };
        let len = i32::from_be_bytes([l[0], l[1], l[2], l[3]]);
        at += 4;
        if len < 0 {
            values.push(None);
            continue;
        }
        let Some(v) = body.get(at..at + len as usize) else {
            break;
        };
        values.push(Some(v));
        at += len as usize;
    }
    values
}

pub fn cstr(b: &[u8], at: usize) -> Option<(String, usize)> {
    let rest = b.get(at..)?;
    let n = rest.iter().position(|&c| c == 0)?;
    Some((String::from_utf8_lossy(&rest[..n]).into_owned(), at + n + 1))
}

/// ErrorResponse / NoticeResponse fields: (code byte, value) pairs.
pub fn fields(body: &[u8]) -> Vec<(u8, String)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(&code) = body.get(at) {
        if code == 0 {
            break;
        }
        let Some((v, next)) = cstr(body, at + 1) else {
            break;
        };
        out.push((code, v));
        at = next;
    }
    out
}

/// Rows a CommandComplete tag reports (`INSERT 0 3`, `UPDATE 2`, `SELECT 5`).
pub fn tag_rows(tag: &str) -> Option<u64> {
    let mut words = tag.split_whitespace();
    let verb = words.next()?;
    match verb {
        "INSERT" | "UPDATE" | "DELETE" | "SELECT" | "MOVE" | "FETCH" | "COPY" | "MERGE" => {
            tag.split_whitespace().last()?.parse().ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing() {
        assert_eq!(
            startup(b"\x00\x00\x00\x08\x04\xd2\x16\x2f").unwrap(),
            Some((SSL_REQUEST, 8))
        );
        let m = b"C\x00\x00\x00\x0dSELECT 3\x00";
        let (t, body, n) = message(m).unwrap().unwrap();
        assert_eq!((t, n), (b'C', 14));
        assert_eq!(tag_rows(&cstr(body, 0).unwrap().0), Some(3));
        assert_eq!(tag_rows("INSERT 0 7"), Some(7));
        assert!(message(b"\x01\x00\x00\x00\x05").is_err());
        assert_eq!(
            fields(b"SERROR\x00C42703\x00Mno such column\x00\x00")[1],
            (b'C', "42703".into())
        );
    }
}

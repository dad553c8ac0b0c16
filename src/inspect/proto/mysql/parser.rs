//! MySQL/MariaDB client/server protocol framing: packets, length-encoded integers, and
//! the OK, ERR, handshake and COM_STMT_PREPARE_OK payloads. Pure functions over bytes.

/// One protocol packet at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    pub seq: u8,
    pub payload: &'a [u8],
    /// Header plus payload.
    pub len: usize,
}

/// The packet at the start of `data`, `None` until it is all there.
pub fn packet(data: &[u8]) -> Option<Packet<'_>> {
    if data.len() < 4 {
        return None;
    }
    let n = usize::from(data[0]) | usize::from(data[1]) << 8 | usize::from(data[2]) << 16;
    let payload = data.get(4..4 + n)?;
    Some(Packet {
        seq: data[3],
        payload,
        len: 4 + n,
    })
}

/// Length of the packet announced at the start of `data` (header included), if readable.
pub fn announced_len(data: &[u8]) -> Option<usize> {
    (data.len() >= 4).then(|| {
        4 + (usize::from(data[0]) | usize::from(data[1]) << 8 | usize::from(data[2]) << 16)
    })
}

/// A length-encoded integer at `at`: (value, position after it).
pub fn lenenc(b: &[u8], at: usize) -> Option<(u64, usize)> {
    let first = *b.get(at)?;
    let le = |n: usize| -> Option<u64> {
        let s = b.get(at + 1..at + 1 + n)?;
        Some(s.iter().rev().fold(0u64, |acc, &x| acc << 8 | u64::from(x)))
    };
    match first {
        0..=0xfa => Some((u64::from(first), at + 1)),
        0xfc => Some((le(2)?, at + 3)),
        0xfd => Some((le(3)?, at + 4)),
        0xfe => Some((le(8)?, at + 9)),
        _ => None,
    }
}

/// A length-encoded string at `at`, and the position after it.
pub fn lenenc_str(b: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let (n, at) = lenenc(b, at)?;
    let end = at.checked_add(usize::try_from(n).ok()?)?;
    Some((b.get(at..end)?, end))
}

/// A column definition's name (its fifth string, after catalog, schema, table, org_table).
pub fn column_name(payload: &[u8]) -> Option<String> {
    let mut at = 0;
    for _ in 0..4 {
        at = lenenc_str(payload, at)?.1;
    }
    lenenc_str(payload, at).map(|(n, _)| String::from_utf8_lossy(n).into_owned())
}

/// A column definition's `schema.table` (its second and third strings), as Packetbeat's
/// `path`.
pub fn column_table(payload: &[u8]) -> Option<String> {
    let (_, at) = lenenc_str(payload, 0)?;
    let (schema, at) = lenenc_str(payload, at)?;
    let (table, _) = lenenc_str(payload, at)?;
    Some(format!(
        "{}.{}",
        String::from_utf8_lossy(schema),
        String::from_utf8_lossy(table)
    ))
}

/// A text-protocol row's values (`None`: NULL), as far as the packet is well formed.
pub fn text_row(payload: &[u8]) -> Vec<Option<&[u8]>> {
    let mut values = Vec::new();
    let mut at = 0;
    while at < payload.len() {
        if payload[at] == 0xfb {
            values.push(None);
            at += 1;
            continue;
        }
        let Some((v, next)) = lenenc_str(payload, at) else {
            break;
        };
        values.push(Some(v));
        at = next;
    }
    values
}

/// OK packet: affected rows and last insert id.
pub fn ok(payload: &[u8]) -> Option<(u64, u64)> {
    let (affected, at) = lenenc(payload, 1)?;
    let (insert_id, _) = lenenc(payload, at)?;
    Some((affected, insert_id))
}

/// ERR packet: code, SQL state (when sent) and message.
pub fn err(payload: &[u8]) -> Option<(u16, Option<String>, String)> {
    let code = u16::from_le_bytes([*payload.get(1)?, *payload.get(2)?]);
    let rest = payload.get(3..)?;
    if rest.first() == Some(&b'#') && rest.len() >= 6 {
        let state = String::from_utf8_lossy(&rest[1..6]).into_owned();
        return Some((
            code,
            Some(state),
            String::from_utf8_lossy(&rest[6..]).into_owned(),
        ));
    }
    Some((code, None, String::from_utf8_lossy(rest).into_owned()))
}

/// True for an EOF packet, or the OK packet that replaces it (CLIENT_DEPRECATE_EOF):
/// header 0xfe in a packet too short to be a row starting with an 8-byte length.
pub fn is_eof(payload: &[u8]) -> bool {
    payload.first() == Some(&0xfe) && payload.len() < 0xff_ffff
}

/// COM_STMT_PREPARE_OK: statement id, number of columns, number of parameters.
pub fn prepare_ok(payload: &[u8]) -> Option<(u32, u16, u16)> {
    if payload.first() != Some(&0) || payload.len() < 9 {
        return None;
    }
    let id = u32::from_le_bytes(payload[1..5].try_into().ok()?);
    let cols = u16::from_le_bytes([payload[5], payload[6]]);
    let params = u16::from_le_bytes([payload[7], payload[8]]);
    Some((id, cols, params))
}

/// Capability flags of a server greeting (protocol 10).
pub fn greeting_caps(payload: &[u8]) -> Option<u32> {
    if payload.first() != Some(&10) {
        return None;
    }
    let nul = payload.iter().skip(1).position(|&b| b == 0)? + 1;
    // version NUL, thread id (4), auth data (8), filler (1), caps low (2), charset (1), status (2), caps high (2)
    let at = nul + 1 + 4 + 8 + 1;
    let lo = u16::from_le_bytes([*payload.get(at)?, *payload.get(at + 1)?]);
    let hi = u16::from_le_bytes([*payload.get(at + 5)?, *payload.get(at + 6)?]);
    Some(u32::from(lo) | u32::from(hi) << 16)
}

/// CLIENT_DEPRECATE_EOF.
pub const DEPRECATE_EOF: u32 = 1 << 24;

/// Name of a command byte, as Packetbeat-style `method` for non-query commands.
pub fn command_name(c: u8) -> &'static str {
    match c {
        0x01 => "QUIT",
        0x02 => "INIT_DB",
        0x03 => "QUERY",
        0x04 => "FIELD_LIST",
        0x09 => "STATISTICS",
        0x0e => "PING",
        0x11 => "CHANGE_USER",
        0x16 => "STMT_PREPARE",
        0x17 => "STMT_EXECUTE",
        0x18 => "STMT_SEND_LONG_DATA",
        0x19 => "STMT_CLOSE",
        0x1a => "STMT_RESET",
        0x1f => "RESET_CONNECTION",
        _ => "UNKNOWN",
    }
}

/// The parameters of a COM_STMT_EXECUTE payload (command byte included) of a statement
/// with `n` parameters, as Packetbeat writes them: numbers in decimal, strings as they
/// are, dates `Y/M/D h:m:s`, NULL as `NULL`, and `TYPE_FLOAT`, `TYPE_DOUBLE`, `TYPE_TIME`,
/// `TYPE_NULL` for the types it does not spell out. `types` holds the types the last
/// execute bound (2 bytes each) and is updated when this one binds new ones. `None` when
/// the payload is too short or holds a type Packetbeat does not read.
pub fn execute_params(payload: &[u8], n: usize, types: &mut Vec<u8>) -> Option<Vec<String>> {
    if n == 0 {
        return None;
    }
    // command, statement id, flags, iteration count
    let mut at = 1 + 4 + 1 + 4;
    let nulls = payload.get(at..at + n.div_ceil(8))?;
    at += n.div_ceil(8);
    if *payload.get(at)? == 1 {
        *types = payload.get(at + 1..at + 1 + 2 * n)?.to_vec();
        at += 2 * n;
    }
    at += 1;
    if types.len() != 2 * n {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    for (i, t) in types.chunks_exact(2).enumerate() {
        if nulls[i / 8] & (1 << (i % 8)) != 0 {
            out.push("NULL".to_string());
            continue;
        }
        let unsigned = t[1] & 0x80 != 0;
        let fixed = |at: usize, k: usize| -> Option<u64> {
            let s = payload.get(at..at + k)?;
            Some(s.iter().rev().fold(0u64, |acc, &x| acc << 8 | u64::from(x)))
        };
        let (text, used) = match t[0] {
            0x01 => (fixed(at, 1)?.to_string(), 1),
            0x02 => (fixed(at, 2)?.to_string(), 2),
            0x03 => (fixed(at, 4)?.to_string(), 4),
            0x08 => {
                let v = fixed(at, 8)?;
                let text = if unsigned {
                    v.to_string()
                } else {
                    (v as i64).to_string()
                };
                (text, 8)
            }
            0x04 => ("TYPE_FLOAT".to_string(), 4),
            0x05 => ("TYPE_DOUBLE".to_string(), 8),
            0x06 => ("TYPE_NULL".to_string(), 0),
            0x07 | 0x0a | 0x0c => {
                let len = usize::from(*payload.get(at)?);
                let d = payload.get(at + 1..at + 1 + len)?;
                let part = |i: usize| d.get(i).map_or(String::new(), |v| v.to_string());
                let year = d.get(..2).map_or(String::new(), |y| {
                    u16::from_le_bytes([y[0], y[1]]).to_string()
                });
                let (month, day) = if len >= 4 {
                    (part(2), part(3))
                } else {
                    Default::default()
                };
                let (h, m, s) = if len >= 7 {
                    (part(4), part(5), part(6))
                } else {
                    Default::default()
                };
                (format!("{year}/{month}/{day} {h}:{m}:{s}"), 1 + len)
            }
            0x0b => {
                let len = usize::from(*payload.get(at)?);
                payload.get(at + 1..at + 1 + len)?;
                ("TYPE_TIME".to_string(), 1 + len)
            }
            0xf6 | 0xfc | 0xfd | 0xfe => {
                let (len, from) = lenenc(payload, at)?;
                let len = usize::try_from(len).ok()?;
                let v = payload.get(from..from + len)?;
                (String::from_utf8_lossy(v).into_owned(), from + len - at)
            }
            _ => return None,
        };
        out.push(text);
        at += used;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execute_parameters_with_their_bound_types() {
        // Statement 1, 3 parameters: a string, a LONG, a NULL (bitmap bit 2).
        let mut p = vec![0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0b100, 1];
        p.extend([0xfe, 0, 0x03, 0, 0x03, 0]);
        p.extend([8]);
        p.extend(b"A1224638");
        p.extend(7u32.to_le_bytes());
        let mut types = Vec::new();
        assert_eq!(
            execute_params(&p, 3, &mut types),
            Some(vec!["A1224638".into(), "7".into(), "NULL".into()])
        );
        assert_eq!(types, [0xfe, 0, 0x03, 0, 0x03, 0]);
        // A later execute that does not bind types again reuses them.
        let mut q = vec![0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1];
        q.push(b'x');
        q.extend(9u32.to_le_bytes());
        q.extend(1u32.to_le_bytes());
        assert_eq!(
            execute_params(&q, 3, &mut types),
            Some(vec!["x".into(), "9".into(), "1".into()])
        );
        // A date, a signed LONGLONG; then a type Packetbeat does not read; then truncated.
        let mut d = vec![0x17, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0x0a, 0, 0x08, 0];
        d.extend([4, 0xe8, 0x07, 12, 7]);
        d.extend((-5i64).to_le_bytes());
        let mut types = Vec::new();
        assert_eq!(
            execute_params(&d, 2, &mut types),
            Some(vec!["2024/12/7 ::".into(), "-5".into()])
        );
        let mut types = Vec::new();
        assert_eq!(
            execute_params(
                &[0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0x09, 0, 1],
                1,
                &mut types
            ),
            None
        );
        assert_eq!(execute_params(&p[..20], 3, &mut Vec::new()), None);
    }

    #[test]
    fn column_definition_names() {
        let def = b"\x03def\x04test\x01t\x01t\x01a\x01a\x0c";
        assert_eq!(column_table(def).as_deref(), Some("test.t"));
        assert_eq!(column_name(def).as_deref(), Some("a"));
        assert_eq!(column_table(b"\x03def\x04te"), None);
    }

    #[test]
    fn framing_and_payloads() {
        let p = packet(b"\x05\x00\x00\x01\x00\x02\x00\x02\x00rest").unwrap();
        assert_eq!((p.seq, p.len), (1, 9));
        assert_eq!(ok(p.payload), Some((2, 0)));
        assert!(packet(b"\x05\x00\x00\x01\x00").is_none());
        assert_eq!(lenenc(b"\xfc\x10\x27", 0), Some((10000, 3)));
        assert_eq!(lenenc(b"\xfe\x01", 0), None);
        let e = err(b"\xff\x48\x04#42S22Unknown column").unwrap();
        assert_eq!(
            (e.0, e.1.as_deref(), e.2.as_str()),
            (1096, Some("42S22"), "Unknown column")
        );
        assert!(is_eof(b"\xfe\x00\x00\x02\x00"));
    }
}

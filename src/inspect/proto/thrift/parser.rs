//! Thrift messages in the binary and compact protocols, over the socket (unframed) and
//! framed transports, rendered as Packetbeat writes them: a struct is `(1: 1, 2: "a")`, a
//! list `[1, 2]`, a set `{1, 2}`, a map `{k: v}`, a string quoted (hex when not UTF-8).
//!
//! Pure: bytes in, a message out. Every length read off the wire is compared with the
//! bytes present before use; nesting, struct fields, strings and collections are bounded
//! by the settings, and nothing is allocated from a length.

use crate::inspect::proto::ParseError;
use std::fmt::Write;

/// Deepest nesting of structs and collections read.
const MAX_DEPTH: usize = 64;

/// Message types.
pub const CALL: u8 = 1;
pub const REPLY: u8 = 2;
pub const EXCEPTION: u8 = 3;
pub const ONEWAY: u8 = 4;

/// How values are written (Packetbeat's option names).
#[derive(Debug, Clone)]
pub struct Render {
    pub string_max_size: usize,
    pub collection_max_size: usize,
    pub drop_after_n_struct_fields: usize,
    pub obfuscate_strings: bool,
}

/// The wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Binary,
    Compact,
}

/// A message's top-level field, its value rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub id: i16,
    pub value: String,
}

/// One message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub mtype: u8,
    pub method: String,
    pub seqid: i32,
    /// The fields of its argument or result struct (not read when `fields` was false).
    pub fields: Vec<Field>,
    /// Bytes of the message (for framed transport: the frame without its length).
    pub len: usize,
    /// Bytes it took on the wire (with the frame length).
    pub wire_len: usize,
}

const INCOMPLETE: ParseError = ParseError("thrift: incomplete");
const BAD: ParseError = ParseError("thrift: malformed message");

/// Reads one message at the start of `data`: `Ok(None)` when more bytes are needed.
/// `framed` reads a 4-byte frame length first; `fields` false skips rendering the
/// struct (its end is still found).
pub fn message(
    data: &[u8],
    framed: bool,
    proto: Protocol,
    r: &Render,
    fields: bool,
) -> Result<Option<Message>, ParseError> {
    let (body, off) = if framed {
        let Some(n) = data.get(..4) else {
            return Ok(None);
        };
        let n = u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize;
        if n > i32::MAX as usize || n < 2 {
            return Err(ParseError("thrift: bad frame length"));
        }
        match data.get(4..4 + n) {
            Some(b) => (b, 4),
            None => return Ok(None),
        }
    } else {
        (data, 0)
    };
    // A magic number says which protocol a message speaks, whatever is configured.
    let proto = match body.first() {
        Some(0x82) => Protocol::Compact,
        Some(0x80) => Protocol::Binary,
        Some(_) => proto,
        None => return Ok(None),
    };
    let mut c = Cursor {
        b: body,
        at: 0,
        r,
        proto,
    };
    let res = (|| {
        let (mtype, method, seqid) = c.begin()?;
        let mut out = Vec::new();
        c.fields(0, fields.then_some(&mut out))?;
        Ok((mtype, method, seqid, out))
    })();
    match res {
        Ok((mtype, method, seqid, out)) => {
            if framed && c.at != body.len() {
                return Err(ParseError("thrift: frame longer than its message"));
            }
            Ok(Some(Message {
                mtype,
                method,
                seqid,
                fields: out,
                len: c.at,
                wire_len: off + c.at,
            }))
        }
        Err(e) if e == INCOMPLETE && !framed => Ok(None),
        Err(e) if e == INCOMPLETE => Err(ParseError("thrift: frame shorter than its message")),
        Err(e) => Err(e),
    }
}

struct Cursor<'a, 'r> {
    b: &'a [u8],
    at: usize,
    r: &'r Render,
    proto: Protocol,
}

/// Binary-protocol type ids.
mod t {
    pub const STOP: u8 = 0;
    pub const BOOL: u8 = 2;
    pub const BYTE: u8 = 3;
    pub const DOUBLE: u8 = 4;
    pub const I16: u8 = 6;
    pub const I32: u8 = 8;
    pub const I64: u8 = 10;
    pub const STRING: u8 = 11;
    pub const STRUCT: u8 = 12;
    pub const MAP: u8 = 13;
    pub const SET: u8 = 14;
    pub const LIST: u8 = 15;
    pub const UUID: u8 = 16;
}

impl<'a> Cursor<'a, '_> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ParseError> {
        let end = self.at.checked_add(n).ok_or(BAD)?;
        let s = self.b.get(self.at..end).ok_or(INCOMPLETE)?;
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, ParseError> {
        Ok(self.take(1)?[0])
    }

    fn be<const N: usize>(&mut self) -> Result<[u8; N], ParseError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn varint(&mut self) -> Result<u64, ParseError> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.u8()?;
            if shift == 63 && b > 1 {
                return Err(BAD);
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(BAD)
    }

    fn zigzag(&mut self) -> Result<i64, ParseError> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    /// A length (of a string or a collection), checked against the bytes left: every
    /// element takes at least one byte (`min` bytes each).
    fn len(&mut self, n: i64, min: usize) -> Result<usize, ParseError> {
        let n = usize::try_from(n).map_err(|_| BAD)?;
        if n.saturating_mul(min) > self.b.len() - self.at {
            // More elements than bytes left: incomplete when the bytes may still come.
            return if n > i32::MAX as usize {
                Err(BAD)
            } else {
                Err(INCOMPLETE)
            };
        }
        Ok(n)
    }

    /// The message header: type, method name, sequence id.
    fn begin(&mut self) -> Result<(u8, String, i32), ParseError> {
        match self.proto {
            Protocol::Binary => {
                let w = i32::from_be_bytes(self.be()?);
                if w < 0 {
                    if (w as u32) & 0xffff_0000 != 0x8001_0000 {
                        return Err(ParseError("thrift: unknown binary protocol version"));
                    }
                    let mtype = (w & 0xff) as u8;
                    let name = self.name()?;
                    let seq = i32::from_be_bytes(self.be()?);
                    check_type(mtype)?;
                    Ok((mtype, name, seq))
                } else {
                    // Old (non-strict) form: the name's length comes first.
                    self.at = 0;
                    let name = self.name()?;
                    let mtype = self.u8()?;
                    let seq = i32::from_be_bytes(self.be()?);
                    check_type(mtype)?;
                    Ok((mtype, name, seq))
                }
            }
            Protocol::Compact => {
                if self.u8()? != 0x82 {
                    return Err(ParseError("thrift: not a compact protocol message"));
                }
                let vt = self.u8()?;
                if vt & 0x1f != 1 {
                    return Err(ParseError("thrift: unknown compact protocol version"));
                }
                let mtype = vt >> 5;
                check_type(mtype)?;
                let seq = self.varint()? as i32;
                let name = self.name()?;
                Ok((mtype, name, seq))
            }
        }
    }

    /// A method name: at most 256 bytes of text.
    fn name(&mut self) -> Result<String, ParseError> {
        let n = self.str_len()?;
        if n > 256 {
            return Err(ParseError("thrift: method name too long"));
        }
        let b = self.take(n)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| ParseError("thrift: method name not UTF-8"))
    }

    fn str_len(&mut self) -> Result<usize, ParseError> {
        let n = match self.proto {
            Protocol::Binary => i64::from(i32::from_be_bytes(self.be()?)),
            Protocol::Compact => self.varint()? as i64,
        };
        self.len(n, 1)
    }

    /// Reads a struct's fields up to STOP; renders them into `out` when given.
    fn fields(&mut self, depth: usize, mut out: Option<&mut Vec<Field>>) -> Result<(), ParseError> {
        if depth > MAX_DEPTH {
            return Err(ParseError("thrift: nested too deep"));
        }
        let mut last = 0i16;
        for i in 0.. {
            if i >= self.r.drop_after_n_struct_fields {
                return Err(ParseError(
                    "thrift: more struct fields than drop_after_n_struct_fields",
                ));
            }
            let (ty, id) = match self.proto {
                Protocol::Binary => {
                    let ty = self.u8()?;
                    if ty == t::STOP {
                        return Ok(());
                    }
                    (ty, i16::from_be_bytes(self.be()?))
                }
                Protocol::Compact => {
                    let b = self.u8()?;
                    if b == 0 {
                        return Ok(());
                    }
                    let delta = b >> 4;
                    let id = if delta == 0 {
                        i16::try_from(self.zigzag()?).map_err(|_| BAD)?
                    } else {
                        last.wrapping_add(i16::from(delta))
                    };
                    last = id;
                    match b & 0x0f {
                        // A bool field carries its value in its type.
                        1 | 2 => {
                            if let Some(o) = out.as_deref_mut() {
                                let v = if b & 0x0f == 1 { "true" } else { "false" };
                                o.push(Field {
                                    id,
                                    value: v.into(),
                                });
                            }
                            continue;
                        }
                        ct => (compact_to_binary(ct)?, id),
                    }
                }
            };
            let mut s = out.as_ref().map(|_| String::new());
            self.value(ty, depth + 1, s.as_mut())?;
            if let (Some(o), Some(value)) = (out.as_deref_mut(), s) {
                o.push(Field { id, value });
            }
        }
        Ok(())
    }

    /// Reads one value of binary-protocol type `ty`, rendering it into `out` when given.
    fn value(&mut self, ty: u8, depth: usize, out: Option<&mut String>) -> Result<(), ParseError> {
        if depth > MAX_DEPTH {
            return Err(ParseError("thrift: nested too deep"));
        }
        let compact = self.proto == Protocol::Compact;
        match ty {
            t::BOOL => {
                let v = self.u8()?;
                if let Some(o) = out {
                    let on = if compact { v == 1 } else { v != 0 };
                    o.push_str(if on { "true" } else { "false" });
                }
            }
            t::BYTE => {
                let v = self.u8()? as i8;
                if let Some(o) = out {
                    let _ = write!(o, "{v}");
                }
            }
            t::I16 | t::I32 | t::I64 => {
                let v = if compact {
                    self.zigzag()?
                } else {
                    match ty {
                        t::I16 => i64::from(i16::from_be_bytes(self.be()?)),
                        t::I32 => i64::from(i32::from_be_bytes(self.be()?)),
                        _ => i64::from_be_bytes(self.be()?),
                    }
                };
                if let Some(o) = out {
                    let _ = write!(o, "{v}");
                }
            }
            t::DOUBLE => {
                let b: [u8; 8] = self.be()?;
                let v = if compact {
                    f64::from_le_bytes(b)
                } else {
                    f64::from_be_bytes(b)
                };
                if let Some(o) = out {
                    o.push_str(&double(v));
                }
            }
            t::UUID => {
                let b = self.take(16)?;
                if let Some(o) = out {
                    for x in b {
                        let _ = write!(o, "{x:02x}");
                    }
                }
            }
            t::STRING => {
                let n = self.str_len()?;
                let b = self.take(n)?;
                if let Some(o) = out {
                    self.string(b, o);
                }
            }
            t::STRUCT => match out {
                Some(o) => {
                    let mut f = Vec::new();
                    self.fields(depth, Some(&mut f))?;
                    o.push_str(&format_struct(&f, None, self.r.collection_max_size));
                }
                None => self.fields(depth, None)?,
            },
            t::LIST | t::SET => {
                let (ety, n) = self.collection_header()?;
                let mut items = out.as_ref().map(|_| Vec::new());
                self.items(n, depth, items.as_mut(), |c, d, o| c.value(ety, d, o))?;
                if let (Some(o), Some(items)) = (out, items) {
                    let inner = items.join(", ");
                    if !inner.is_empty() {
                        let (a, b) = if ty == t::LIST {
                            ('[', ']')
                        } else {
                            ('{', '}')
                        };
                        o.push(a);
                        o.push_str(&inner);
                        o.push(b);
                    }
                }
            }
            t::MAP => {
                let (kty, vty, n) = self.map_header()?;
                let mut items = out.as_ref().map(|_| Vec::new());
                self.items(n, depth, items.as_mut(), |c, d, o| match o {
                    Some(o) => {
                        let mut k = String::new();
                        c.value(kty, d, Some(&mut k))?;
                        let mut v = String::new();
                        c.value(vty, d, Some(&mut v))?;
                        o.push_str(&k);
                        o.push_str(": ");
                        o.push_str(&v);
                        Ok(())
                    }
                    None => {
                        c.value(kty, d, None)?;
                        c.value(vty, d, None)
                    }
                })?;
                if let (Some(o), Some(items)) = (out, items) {
                    o.push('{');
                    o.push_str(&items.join(", "));
                    o.push('}');
                }
            }
            _ => return Err(ParseError("thrift: unknown field type")),
        }
        Ok(())
    }

    /// Reads `n` elements with `read`, keeping the first `collection_max_size` rendered
    /// and a `...` for the rest.
    fn items(
        &mut self,
        n: usize,
        depth: usize,
        mut out: Option<&mut Vec<String>>,
        read: impl Fn(&mut Self, usize, Option<&mut String>) -> Result<(), ParseError>,
    ) -> Result<(), ParseError> {
        let max = self.r.collection_max_size;
        for i in 0..n {
            match out.as_deref_mut() {
                Some(o) if i < max => {
                    let mut s = String::new();
                    read(self, depth + 1, Some(&mut s))?;
                    o.push(s);
                }
                Some(o) => {
                    if i == max {
                        o.push("...".into());
                    }
                    read(self, depth + 1, None)?;
                }
                None => read(self, depth + 1, None)?,
            }
        }
        Ok(())
    }

    /// A list or set header: element type (binary ids) and count.
    fn collection_header(&mut self) -> Result<(u8, usize), ParseError> {
        match self.proto {
            Protocol::Binary => {
                let ety = self.u8()?;
                let n = i64::from(i32::from_be_bytes(self.be()?));
                Ok((ety, self.len(n, 1)?))
            }
            Protocol::Compact => {
                let b = self.u8()?;
                let n = match b >> 4 {
                    15 => self.varint()? as i64,
                    n => i64::from(n),
                };
                Ok((compact_elem(b & 0x0f)?, self.len(n, 1)?))
            }
        }
    }

    fn map_header(&mut self) -> Result<(u8, u8, usize), ParseError> {
        match self.proto {
            Protocol::Binary => {
                let k = self.u8()?;
                let v = self.u8()?;
                let n = i64::from(i32::from_be_bytes(self.be()?));
                Ok((k, v, self.len(n, 2)?))
            }
            Protocol::Compact => {
                let n = self.varint()? as i64;
                if n == 0 {
                    return Ok((t::BYTE, t::BYTE, 0));
                }
                let kv = self.u8()?;
                let n = self.len(n, 2)?;
                Ok((compact_elem(kv >> 4)?, compact_elem(kv & 0x0f)?, n))
            }
        }
    }

    /// A string as Packetbeat writes it: cut to `string_max_size` bytes (then `...`),
    /// quoted when UTF-8, hex otherwise; `"*"` with `obfuscate_strings`.
    fn string(&self, b: &[u8], o: &mut String) {
        if b.is_empty() {
            o.push_str("\"\"");
            return;
        }
        if self.r.obfuscate_strings {
            o.push_str("\"*\"");
            return;
        }
        let cut = b.len() > self.r.string_max_size;
        let b = &b[..b.len().min(self.r.string_max_size)];
        match std::str::from_utf8(b) {
            Ok(s) => {
                o.push('"');
                quote_into(s, o);
                if cut {
                    o.push_str("...");
                }
                o.push('"');
            }
            Err(_) => {
                for x in b {
                    let _ = write!(o, "{x:02x}");
                }
                if cut {
                    o.push_str("2e2e2e");
                }
            }
        }
    }
}

fn check_type(mtype: u8) -> Result<(), ParseError> {
    if (CALL..=ONEWAY).contains(&mtype) {
        Ok(())
    } else {
        Err(ParseError("thrift: unknown message type"))
    }
}

/// A compact field type as its binary-protocol id.
fn compact_to_binary(ct: u8) -> Result<u8, ParseError> {
    Ok(match ct {
        3 => t::BYTE,
        4 => t::I16,
        5 => t::I32,
        6 => t::I64,
        7 => t::DOUBLE,
        8 => t::STRING,
        9 => t::LIST,
        10 => t::SET,
        11 => t::MAP,
        12 => t::STRUCT,
        13 => t::UUID,
        _ => return Err(ParseError("thrift: unknown compact type")),
    })
}

/// A compact collection element type (bools are one byte each there).
fn compact_elem(ct: u8) -> Result<u8, ParseError> {
    match ct {
        1 | 2 => Ok(t::BOOL),
        ct => compact_to_binary(ct),
    }
}

/// A double as Go's `strconv.FormatFloat(v, 'f', -1, 64)` writes it.
fn double(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    format!("{v}")
}

/// Escapes like Go's `strconv.Quote` (without the quotes).
fn quote_into(s: &str, o: &mut String) {
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            '\x07' => o.push_str("\\a"),
            '\x08' => o.push_str("\\b"),
            '\x0c' => o.push_str("\\f"),
            '\x0b' => o.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(o, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
}

/// A struct's fields as `(1: a, 2: b)`, named from `names` where it knows the id; at
/// most `max` fields, then `...`.
pub fn format_struct(
    fields: &[Field],
    names: Option<&dyn Fn(i16) -> Option<String>>,
    max: usize,
) -> String {
    let mut s = String::from("(");
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        if i == max {
            s.push_str("...");
            break;
        }
        match names.and_then(|n| n(f.id)) {
            Some(n) => s.push_str(&n),
            None => {
                let _ = write!(s, "{}", f.id);
            }
        }
        s.push_str(": ");
        s.push_str(&f.value);
    }
    s.push(')');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render() -> Render {
        Render {
            string_max_size: 200,
            collection_max_size: 15,
            drop_after_n_struct_fields: 500,
            obfuscate_strings: false,
        }
    }

    fn binary_call(name: &str, args: &[u8]) -> Vec<u8> {
        let mut m = 0x8001_0001u32.to_be_bytes().to_vec();
        m.extend_from_slice(&(name.len() as u32).to_be_bytes());
        m.extend_from_slice(name.as_bytes());
        m.extend_from_slice(&0u32.to_be_bytes());
        m.extend_from_slice(args);
        m.push(0);
        m
    }

    #[test]
    fn binary_values_render_as_packetbeat() {
        // 1: i32 1, 2: string "hé\"", 3: list<i16> [1, 2], 4: map<string, bool>, 5: set empty,
        // 6: struct (1: double 2.5), 7: byte -1
        let mut a = vec![8, 0, 1, 0, 0, 0, 1];
        a.extend_from_slice(&[11, 0, 2, 0, 0, 0, 4, b'h', 0xc3, 0xa9, b'"']);
        a.extend_from_slice(&[15, 0, 3, 6, 0, 0, 0, 2, 0, 1, 0, 2]);
        a.extend_from_slice(&[13, 0, 4, 11, 2, 0, 0, 0, 1, 0, 0, 0, 1, b'k', 1]);
        a.extend_from_slice(&[14, 0, 5, 8, 0, 0, 0, 0]);
        a.extend_from_slice(&[12, 0, 6, 4, 0, 1]);
        a.extend_from_slice(&2.5f64.to_be_bytes());
        a.push(0);
        a.extend_from_slice(&[3, 0, 7, 0xff]);
        let m = binary_call("f", &a);
        let got = message(&m, false, Protocol::Binary, &render(), true)
            .unwrap()
            .unwrap();
        assert_eq!(got.len, m.len());
        assert_eq!(
            format_struct(&got.fields, None, 15),
            r#"(1: 1, 2: "hé\"", 3: [1, 2], 4: {"k": true}, 5: , 6: (1: 2.5), 7: -1)"#
        );
        for cut in 0..m.len() {
            assert_eq!(
                message(&m[..cut], false, Protocol::Binary, &render(), true),
                Ok(None),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn compact_and_framed() {
        // Compact CALL "add" seq 5: 1: i32 1 (zigzag 2), 2: i32 -1 (zigzag 1), 3: bool true.
        let mut m = vec![0x82, 0x21, 5, 3, b'a', b'd', b'd'];
        m.extend_from_slice(&[0x15, 2, 0x15, 1, 0x11, 0]);
        let mut f = (m.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&m);
        let got = message(&f, true, Protocol::Binary, &render(), true)
            .unwrap()
            .unwrap();
        assert_eq!(
            (got.mtype, got.seqid, got.method.as_str()),
            (CALL, 5, "add")
        );
        assert_eq!(
            format_struct(&got.fields, None, 15),
            "(1: 1, 2: -1, 3: true)"
        );
        assert_eq!((got.len, got.wire_len), (m.len(), m.len() + 4));
        assert_eq!(
            message(&f[..f.len() - 1], true, Protocol::Binary, &render(), true),
            Ok(None)
        );
    }

    #[test]
    fn limits_and_garbage() {
        let r = Render {
            string_max_size: 3,
            collection_max_size: 2,
            drop_after_n_struct_fields: 3,
            obfuscate_strings: false,
        };
        let mut a = vec![11, 0, 1, 0, 0, 0, 5];
        a.extend_from_slice(b"abcde");
        a.extend_from_slice(&[15, 0, 2, 3, 0, 0, 0, 3, 1, 2, 3]);
        let m = binary_call("f", &a);
        let got = message(&m, false, Protocol::Binary, &r, true)
            .unwrap()
            .unwrap();
        assert_eq!(
            format_struct(&got.fields, None, 15),
            r#"(1: "abc...", 2: [1, 2, ...])"#
        );
        let mut many = Vec::new();
        for i in 1..=4u8 {
            many.extend_from_slice(&[3, 0, i, 0]);
        }
        assert!(message(&binary_call("f", &many), false, Protocol::Binary, &r, true).is_err());
        assert!(message(b"\x80\x02\0\x01\0\0\0\0", false, Protocol::Binary, &r, true).is_err());
        let huge = [0x80, 1, 0, 1, 0x7f, 0xff, 0xff, 0xff];
        assert!(message(&huge, false, Protocol::Binary, &r, true).is_ok_and(|m| m.is_none()));
    }
}

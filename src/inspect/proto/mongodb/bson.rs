//! A read-only view of BSON documents: walk the elements of a document in place, look a
//! top-level key up, and write a document as JSON text (what `send_request` /
//! `send_response` and the `query` show).
//!
//! Hand-written rather than the `bson` crate: connbeat only walks documents it already has
//! in a buffer and writes bounded text; decoding them into owned trees first would cost an
//! allocation per element and bring a large dependency. Every length is checked against
//! the bytes present, nesting is bounded, and the JSON written stops at a given length.

use std::fmt::Write;

/// Deepest nesting rendered (MongoDB itself allows 100).
const MAX_DEPTH: usize = 100;

/// A value inside a document.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Double(f64),
    Str(&'a [u8]),
    Doc(Doc<'a>),
    Array(Doc<'a>),
    Binary(&'a [u8]),
    ObjectId(&'a [u8]),
    Bool(bool),
    DateTime(i64),
    Null,
    Regex(&'a [u8], &'a [u8]),
    Int32(i32),
    Timestamp(u64),
    Int64(i64),
    Decimal128(&'a [u8]),
    MinKey,
    MaxKey,
    /// JavaScript code, symbols, DB pointers, undefined: written as a string.
    Other(&'a [u8]),
}

impl<'a> Value<'a> {
    /// A number or boolean as f64 (`ok: 1`, `ok: 1.0`, `ok: true`).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Double(d) => Some(d),
            Value::Int32(i) => Some(f64::from(i)),
            Value::Int64(i) => Some(i as f64),
            Value::Bool(b) => Some(if b { 1.0 } else { 0.0 }),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&'a str> {
        match *self {
            Value::Str(s) => std::str::from_utf8(s).ok(),
            _ => None,
        }
    }
}

/// One document: its bytes, length prefix and terminating zero included.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Doc<'a>(&'a [u8]);

fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn cstr(b: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = b.get(at..)?;
    let n = rest.iter().position(|&c| c == 0)?;
    Some((&rest[..n], at + n + 1))
}

impl<'a> Doc<'a> {
    /// The document at the start of `b`, when its length fits in `b`.
    pub fn read(b: &'a [u8]) -> Option<Doc<'a>> {
        let n = usize::try_from(i32_at(b, 0)?).ok()?;
        if n < 5 || n > b.len() || b[n - 1] != 0 {
            return None;
        }
        Some(Doc(&b[..n]))
    }

    /// Its length on the wire.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.len() <= 5
    }

    /// Its elements, in order; iteration stops at the first malformed one (see
    /// [`Doc::valid`]).
    pub fn iter(&self) -> Elements<'a> {
        Elements {
            b: &self.0[..self.0.len() - 1],
            at: 4,
            bad: false,
        }
    }

    /// Whether every element is well formed (nested documents included).
    pub fn valid(&self) -> bool {
        self.valid_at(0)
    }

    fn valid_at(&self, depth: usize) -> bool {
        if depth > MAX_DEPTH {
            return false;
        }
        let mut it = self.iter();
        for (_, v) in it.by_ref() {
            if let Value::Doc(d) | Value::Array(d) = v
                && !d.valid_at(depth + 1)
            {
                return false;
            }
        }
        !it.bad
    }

    /// The first element (a command document's command).
    pub fn first(&self) -> Option<(&'a str, Value<'a>)> {
        self.iter().next()
    }

    /// The value of a top-level key.
    pub fn get(&self, key: &str) -> Option<Value<'a>> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

/// The elements of a document.
pub struct Elements<'a> {
    b: &'a [u8],
    at: usize,
    /// A malformed element ended the walk.
    pub bad: bool,
}

impl<'a> Elements<'a> {
    fn element(&mut self) -> Option<(&'a str, Value<'a>)> {
        let b = self.b;
        let ty = *b.get(self.at)?;
        let (name, at) = cstr(b, self.at + 1)?;
        let name = std::str::from_utf8(name).unwrap_or("?");
        let fixed = |n: usize| b.get(at..at + n).map(|s| (s, at + n));
        let string = || -> Option<(&'a [u8], usize)> {
            let n = usize::try_from(i32_at(b, at)?).ok()?;
            let s = b.get(at + 4..at + 4 + n)?;
            // `then`, not `then_some`: the value is only built (and `n - 1` taken) for a
            // string that has its terminating zero.
            (n >= 1 && s[n - 1] == 0).then(|| (&s[..n - 1], at + 4 + n))
        };
        let (v, next) = match ty {
            0x01 => {
                let (s, n) = fixed(8)?;
                (Value::Double(f64::from_le_bytes(s.try_into().ok()?)), n)
            }
            0x02 => string().map(|(s, n)| (Value::Str(s), n))?,
            0x0D | 0x0E => string().map(|(s, n)| (Value::Other(s), n))?,
            0x03 | 0x04 => {
                let d = Doc::read(b.get(at..)?)?;
                let v = if ty == 0x03 {
                    Value::Doc(d)
                } else {
                    Value::Array(d)
                };
                (v, at + d.len())
            }
            0x05 => {
                let n = usize::try_from(i32_at(b, at)?).ok()?;
                let s = b.get(at + 5..at + 5 + n)?;
                (Value::Binary(s), at + 5 + n)
            }
            0x06 => (Value::Other(b"undefined"), at),
            0x07 => fixed(12).map(|(s, n)| (Value::ObjectId(s), n))?,
            0x08 => fixed(1).map(|(s, n)| (Value::Bool(s[0] != 0), n))?,
            0x09 => {
                let (s, n) = fixed(8)?;
                (Value::DateTime(i64::from_le_bytes(s.try_into().ok()?)), n)
            }
            0x0A => (Value::Null, at),
            0x0B => {
                let (p, at2) = cstr(b, at)?;
                let (f, at3) = cstr(b, at2)?;
                (Value::Regex(p, f), at3)
            }
            0x0C => {
                let (s, n) = string()?;
                b.get(n..n + 12)?;
                (Value::Other(s), n + 12)
            }
            0x0F => {
                let n = usize::try_from(i32_at(b, at)?).ok()?;
                let s = b.get(at..at + n)?;
                (Value::Other(s.get(8..).unwrap_or_default()), at + n.max(4))
            }
            0x10 => {
                let (s, n) = fixed(4)?;
                (Value::Int32(i32::from_le_bytes(s.try_into().ok()?)), n)
            }
            0x11 => {
                let (s, n) = fixed(8)?;
                (Value::Timestamp(u64::from_le_bytes(s.try_into().ok()?)), n)
            }
            0x12 => {
                let (s, n) = fixed(8)?;
                (Value::Int64(i64::from_le_bytes(s.try_into().ok()?)), n)
            }
            0x13 => fixed(16).map(|(s, n)| (Value::Decimal128(s), n))?,
            0xFF => (Value::MinKey, at),
            0x7F => (Value::MaxKey, at),
            _ => return None,
        };
        self.at = next;
        Some((name, v))
    }
}

impl<'a> Iterator for Elements<'a> {
    type Item = (&'a str, Value<'a>);
    fn next(&mut self) -> Option<Self::Item> {
        if self.bad || self.at >= self.b.len() {
            return None;
        }
        let e = self.element();
        if e.is_none() {
            self.bad = true;
        }
        e
    }
}

/// 9999-12-31T23:59:59.999Z, the last BSON date written as a timestamp.
const MAX_DATE_MS: u64 = 253_402_300_799_999;

/// Writes documents as JSON, bounded, with some keys' values hidden.
pub struct Json<'r> {
    /// Keys whose values are written as `"xxxxx"` (credentials).
    pub hide: &'r [&'r str],
    /// Longest text written; a longer one is cut (the caller marks it).
    pub max: usize,
}

fn hex(out: &mut String, b: &[u8]) {
    for x in b {
        let _ = write!(out, "{x:02x}");
    }
}

fn quoted(out: &mut String, s: &[u8]) {
    let s = String::from_utf8_lossy(s);
    match serde_json::to_string(&*s) {
        Ok(q) => out.push_str(&q),
        Err(_) => out.push_str("\"\""),
    }
}

impl Json<'_> {
    /// The document as JSON text; `skip` names top-level keys left out. True when the text
    /// was cut at `max`.
    pub fn write(&self, d: &Doc<'_>, skip: &[&str], out: &mut String) -> bool {
        let start = out.len();
        self.doc(d, false, skip, out, 0, start);
        if out.len() - start > self.max {
            let mut cut = start + self.max;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            return true;
        }
        false
    }

    fn full(&self, out: &str, start: usize) -> bool {
        out.len() - start > self.max
    }

    fn doc(
        &self,
        d: &Doc<'_>,
        array: bool,
        skip: &[&str],
        out: &mut String,
        depth: usize,
        start: usize,
    ) {
        out.push(if array { '[' } else { '{' });
        let mut first = true;
        for (k, v) in d.iter() {
            if self.full(out, start) {
                break;
            }
            if skip.contains(&k) {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            if !array {
                quoted(out, k.as_bytes());
                out.push(':');
            }
            if self.hide.contains(&k) {
                out.push_str("\"xxxxx\"");
                continue;
            }
            self.value(&v, out, depth + 1, start);
        }
        out.push(if array { ']' } else { '}' });
    }

    fn value(&self, v: &Value<'_>, out: &mut String, depth: usize, start: usize) {
        match *v {
            Value::Double(d) if d.is_finite() => {
                let _ = write!(out, "{d}");
            }
            Value::Double(d) => quoted(out, d.to_string().as_bytes()),
            Value::Str(s) | Value::Other(s) => quoted(out, s),
            Value::Doc(d) | Value::Array(d) if depth > MAX_DEPTH => {
                let _ = d;
                out.push_str("null");
            }
            Value::Doc(d) => self.doc(&d, false, &[], out, depth, start),
            Value::Array(d) => self.doc(&d, true, &[], out, depth, start),
            Value::Binary(b) => {
                use base64::Engine;
                out.push('"');
                out.push_str(&base64::engine::general_purpose::STANDARD.encode(b));
                out.push('"');
            }
            Value::ObjectId(b) | Value::Decimal128(b) => {
                out.push('"');
                hex(out, b);
                out.push('"');
            }
            Value::Bool(b) => out.push_str(if b { "true" } else { "false" }),
            // RFC 3339 ends with year 9999: a date outside 1970-9999 is written as its
            // number of milliseconds.
            Value::DateTime(ms) => match u64::try_from(ms).ok().filter(|&ms| ms <= MAX_DATE_MS) {
                Some(ms) => {
                    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
                    out.push('"');
                    out.push_str(&crate::event::format_timestamp(t));
                    out.push('"');
                }
                None => {
                    let _ = write!(out, "{ms}");
                }
            },
            Value::Null => out.push_str("null"),
            Value::Regex(p, f) => {
                let mut s = b"/".to_vec();
                s.extend_from_slice(p);
                s.push(b'/');
                s.extend_from_slice(f);
                quoted(out, &s);
            }
            Value::Int32(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Int64(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Timestamp(t) => {
                let _ = write!(out, "{t}");
            }
            Value::MinKey => out.push_str("\"$minKey\""),
            Value::MaxKey => out.push_str("\"$maxKey\""),
        }
    }
}

#[cfg(test)]
pub(crate) mod build {
    //! Builds BSON for tests.

    pub enum B<'a> {
        S(&'a str),
        I(i32),
        L(i64),
        F(f64),
        D(Vec<u8>),
        Bin(&'a [u8]),
        T(bool),
    }

    pub fn doc(fields: &[(&str, B<'_>)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (k, v) in fields {
            let (ty, bytes) = match v {
                B::S(s) => {
                    let mut b = ((s.len() + 1) as i32).to_le_bytes().to_vec();
                    b.extend(s.as_bytes());
                    b.push(0);
                    (2u8, b)
                }
                B::I(i) => (0x10, i.to_le_bytes().to_vec()),
                B::L(i) => (0x12, i.to_le_bytes().to_vec()),
                B::F(f) => (0x01, f.to_le_bytes().to_vec()),
                B::D(d) => (0x03, d.clone()),
                B::Bin(b) => {
                    let mut v = (b.len() as i32).to_le_bytes().to_vec();
                    v.push(0);
                    v.extend(*b);
                    (0x05, v)
                }
                B::T(b) => (0x08, vec![u8::from(*b)]),
            };
            body.push(ty);
            body.extend(k.as_bytes());
            body.push(0);
            body.extend(bytes);
        }
        let mut d = ((body.len() + 5) as i32).to_le_bytes().to_vec();
        d.extend(body);
        d.push(0);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::build::{B, doc};
    use super::*;

    /// Found by the `mongodb` fuzz target: a date after year 9999 panicked while being
    /// written as a timestamp; it is written as its number of milliseconds.
    #[test]
    fn date_after_year_9999_is_written_as_a_number() {
        let json = Json {
            hide: &[],
            max: 4096,
        };
        for (ms, want) in [
            (MAX_DATE_MS as i64, "{\"d\":\"9999-12-31T23:59:59.999Z\"}"),
            (MAX_DATE_MS as i64 + 1, "{\"d\":253402300800000}"),
            (i64::MAX, "{\"d\":9223372036854775807}"),
            (-1, "{\"d\":-1}"),
        ] {
            let mut b = vec![0u8; 4];
            b.extend_from_slice(b"\x09d\x00");
            b.extend_from_slice(&ms.to_le_bytes());
            b.push(0);
            let n = b.len() as i32;
            b[..4].copy_from_slice(&n.to_le_bytes());
            let mut out = String::new();
            json.write(&Doc::read(&b).unwrap(), &[], &mut out);
            assert_eq!(out, want);
        }
    }

    /// Found by the `mongodb` fuzz target: an OP_QUERY read as a document, whose first
    /// element is a symbol (a string type) of length 0, panicked taking `0 - 1`.
    #[test]
    fn string_of_length_zero_is_malformed_not_a_panic() {
        let input: &[u8] = b"\x3e\x00\x00\x00\x0e\x00\x00\x00\x00\x00\x00\x00\xd4\x07\x00\x00\
            \x00\x00\x00\x00admin.$cmd\x00\x00\x00\x00\x00\xff\xff\xff\xff\x17\x00\x00\x00\x01\
            isMaster\x00\x00\x00\x00\x00\x00\x00\xf0?\x00";
        let d = Doc::read(input).expect("its length and final zero make a document");
        assert!(!d.valid());
        assert_eq!(d.iter().count(), 0);
        // The same with a string (0x02) element.
        let d = [12, 0, 0, 0, 2, b'k', 0, 0, 0, 0, 0, 0];
        assert!(!Doc::read(&d).unwrap().valid());
    }

    #[test]
    fn walks_and_writes_json() {
        let inner = doc(&[("a", B::I(1)), ("b", B::S("x\"y"))]);
        let d = doc(&[
            ("find", B::S("users")),
            ("filter", B::D(inner)),
            ("limit", B::L(5)),
            ("ok", B::F(1.0)),
            ("payload", B::Bin(b"secret")),
        ]);
        let d = Doc::read(&d).unwrap();
        assert!(d.valid());
        assert_eq!(d.first().unwrap().0, "find");
        assert_eq!(d.get("ok").unwrap().as_f64(), Some(1.0));
        let j = Json {
            hide: &["payload"],
            max: 1000,
        };
        let mut s = String::new();
        assert!(!j.write(&d, &["find"], &mut s));
        assert_eq!(
            s,
            r#"{"filter":{"a":1,"b":"x\"y"},"limit":5,"ok":1,"payload":"xxxxx"}"#
        );
        let short = Json { hide: &[], max: 10 };
        let mut s = String::new();
        assert!(short.write(&d, &[], &mut s));
        assert_eq!(s.len(), 10);
    }

    #[test]
    fn damaged_documents_stop_the_walk() {
        let mut d = doc(&[("a", B::S("hello")), ("b", B::I(2))]);
        d[7] = 0x7f; // the string's length
        let doc = Doc::read(&d).unwrap();
        assert!(!doc.valid());
        assert!(Doc::read(&d[..6]).is_none());
        let mut bad = d.clone();
        bad[0] = 0xff;
        assert!(Doc::read(&bad).is_none());
    }
}

//! A JSON cursor that reads the few fields the graph uses and steps over the rest.
//!
//! An agent's event is some 700 bytes, of which the graph reads about a dozen fields.
//! Deserialising it with serde_json tokenises every key and every value; the topology
//! reader spent most of its time there. This cursor compares keys in place and steps
//! over a value it does not need by its quotes and brackets (`memchr` for the strings),
//! without looking inside. So:
//!
//! - a value that is read is checked as strictly as serde_json checks it (types, escapes,
//!   control characters, numbers out of range);
//! - a value that is skipped is not validated: a line whose unread parts are not JSON
//!   (`[1,,2]`, `{"c" 1}`, a `]` closing a `{`) may still be read;
//! - a key given twice keeps its last value.
//!
//! It works on a `str` (the line's UTF-8 is checked once by the caller), never reads
//! beyond it, never recurses on the input's nesting (skipping counts brackets), and
//! returns [`Bad`] for anything it cannot read; the `topology` fuzz target drives it.

use memchr::memchr2;
use std::borrow::Cow;
use std::net::IpAddr;

/// Bytes that end a run of plain string content: the quote, the backslash, and the
/// control characters JSON allows only escaped.
static STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// The line is not JSON of the shape the reader expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bad;

type Result<T> = std::result::Result<T, Bad>;

/// A position in one JSON text.
pub struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(text: &'a str) -> Self {
        Cursor { text, at: 0 }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn skip_ws(&mut self) {
        let b = self.bytes();
        while self.at < b.len() && matches!(b[self.at], b' ' | b'\n' | b'\r' | b'\t') {
            self.at += 1;
        }
    }

    /// The next byte that is not whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.bytes().get(self.at).copied()
    }

    fn expect(&mut self, c: u8) -> Result<()> {
        if self.peek() == Some(c) {
            self.at += 1;
            Ok(())
        } else {
            Err(Bad)
        }
    }

    /// Only whitespace is left.
    pub fn end(&mut self) -> Result<()> {
        self.skip_ws();
        if self.at == self.text.len() {
            Ok(())
        } else {
            Err(Bad)
        }
    }

    /// Calls `field` with each key of the object at the cursor; `field` reads or skips
    /// the key's value.
    pub fn object(&mut self, mut field: impl FnMut(&mut Self, &str) -> Result<()>) -> Result<()> {
        self.expect(b'{')?;
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(());
        }
        loop {
            let key = self.string()?;
            self.expect(b':')?;
            field(self, &key)?;
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(Bad),
            }
        }
    }

    /// `null` at the cursor, consumed.
    fn null(&mut self) -> bool {
        self.skip_ws();
        if self.bytes()[self.at..].starts_with(b"null") {
            self.at += 4;
            true
        } else {
            false
        }
    }

    /// `None` for `null`, else what `read` makes of the value.
    pub fn opt<T>(&mut self, read: impl FnOnce(&mut Self) -> Result<T>) -> Result<Option<T>> {
        if self.null() {
            Ok(None)
        } else {
            read(self).map(Some)
        }
    }

    /// A string, borrowed from the text unless it holds escapes.
    pub fn string(&mut self) -> Result<Cow<'a, str>> {
        self.expect(b'"')?;
        let b = self.bytes();
        let start = self.at;
        // Keys and values are short: a byte loop beats a vectorised search here.
        let end = b[start..]
            .iter()
            .position(|&c| STOP[usize::from(c)])
            .map_or(b.len(), |n| start + n);
        match b.get(end) {
            Some(b'"') => {
                self.at = end + 1;
                Ok(Cow::Borrowed(&self.text[start..end]))
            }
            Some(b'\\') => {
                let mut out = String::with_capacity(end - start + 8);
                out.push_str(&self.text[start..end]);
                self.at = end;
                self.unescape_rest(&mut out)?;
                Ok(Cow::Owned(out))
            }
            // A control character, or the end of the text.
            _ => Err(Bad),
        }
    }

    /// From a backslash to the closing quote, appending the unescaped text.
    fn unescape_rest(&mut self, out: &mut String) -> Result<()> {
        let b = self.bytes();
        loop {
            match b.get(self.at) {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    let esc = *b.get(self.at + 1).ok_or(Bad)?;
                    self.at += 2;
                    match esc {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => out.push(self.unicode_escape()?),
                        _ => return Err(Bad),
                    }
                }
                Some(_) => {
                    let run = memchr2(b'"', b'\\', &b[self.at..]).ok_or(Bad)?;
                    let chunk = &self.text[self.at..self.at + run];
                    if chunk.bytes().any(|c| c < 0x20) {
                        return Err(Bad);
                    }
                    out.push_str(chunk);
                    self.at += run;
                }
                None => return Err(Bad),
            }
        }
    }

    /// The character of a `\uXXXX` escape (the `\u` read), surrogate pairs joined.
    fn unicode_escape(&mut self) -> Result<char> {
        let hi = self.hex4()?;
        let code = match hi {
            0xD800..=0xDBFF => {
                if !self.bytes()[self.at..].starts_with(b"\\u") {
                    return Err(Bad);
                }
                self.at += 2;
                let lo = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&lo) {
                    return Err(Bad);
                }
                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(Bad),
            _ => hi,
        };
        char::from_u32(code).ok_or(Bad)
    }

    fn hex4(&mut self) -> Result<u32> {
        let digits = self.text.get(self.at..self.at + 4).ok_or(Bad)?;
        if !digits.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(Bad);
        }
        self.at += 4;
        u32::from_str_radix(digits, 16).map_err(|_| Bad)
    }

    /// An optional string (`null` is `None`).
    pub fn opt_str(&mut self) -> Result<Option<Cow<'a, str>>> {
        self.opt(Self::string)
    }

    /// The text of a number at the cursor (its syntax checked by whoever parses it).
    fn number_text(&mut self) -> &'a str {
        self.skip_ws();
        let b = self.bytes();
        let start = self.at;
        while self.at < b.len()
            && matches!(b[self.at], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
        {
            self.at += 1;
        }
        &self.text[start..self.at]
    }

    /// A non-negative integer (no fraction, no exponent), as serde_json reads a `u64`.
    pub fn u64(&mut self) -> Result<u64> {
        let t = self.number_text();
        let bytes = t.as_bytes();
        if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
            return Err(Bad);
        }
        if bytes.len() > 1 && bytes[0] == b'0' {
            return Err(Bad);
        }
        bytes.iter().try_fold(0u64, |n, &d| {
            n.checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(d - b'0')))
                .ok_or(Bad)
        })
    }

    pub fn u16(&mut self) -> Result<u16> {
        u16::try_from(self.u64()?).map_err(|_| Bad)
    }

    /// Any JSON number.
    pub fn f64(&mut self) -> Result<f64> {
        let t = self.number_text();
        let b = t.as_bytes();
        // JSON has no leading '+', no bare '.5', no 'inf'.
        let digits = b.strip_prefix(b"-").unwrap_or(b);
        if !digits.first().is_some_and(u8::is_ascii_digit) {
            return Err(Bad);
        }
        t.parse().map_err(|_| Bad)
    }

    /// An address written as a string.
    pub fn ip(&mut self) -> Result<IpAddr> {
        self.string()?.parse().map_err(|_| Bad)
    }

    /// An array of addresses; `null` is none.
    pub fn ips(&mut self) -> Result<Vec<IpAddr>> {
        let mut out = Vec::new();
        if self.null() {
            return Ok(out);
        }
        self.expect(b'[')?;
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(out);
        }
        loop {
            out.push(self.ip()?);
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(out);
                }
                _ => return Err(Bad),
            }
        }
    }

    /// Steps over one value without reading it.
    pub fn skip(&mut self) -> Result<()> {
        match self.peek().ok_or(Bad)? {
            b'"' => {
                self.at += 1;
                self.skip_string_body()
            }
            b'{' | b'[' => self.skip_nested(),
            _ => {
                // A number, true, false or null: up to the next delimiter.
                let b = self.bytes();
                let start = self.at;
                while self.at < b.len()
                    && !matches!(
                        b[self.at],
                        b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t'
                    )
                {
                    self.at += 1;
                }
                if self.at == start { Err(Bad) } else { Ok(()) }
            }
        }
    }

    /// After an opening quote: to just past the closing one.
    fn skip_string_body(&mut self) -> Result<()> {
        let b = self.bytes();
        loop {
            let at = self.at + memchr2(b'"', b'\\', &b[self.at..]).ok_or(Bad)?;
            if b[at] == b'"' {
                self.at = at + 1;
                return Ok(());
            }
            // A backslash and the byte it escapes.
            self.at = at + 2;
            if self.at > b.len() {
                return Err(Bad);
            }
        }
    }

    /// An object or array, by counting brackets (strings stepped over whole).
    fn skip_nested(&mut self) -> Result<()> {
        let b = self.bytes();
        let mut depth = 0usize;
        while self.at < b.len() {
            let c = b[self.at];
            self.at += 1;
            match c {
                b'"' => self.skip_string_body()?,
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
        Err(Bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `{"k": <value>}` with `read` for the value of `k`.
    fn value<'a, T>(json: &'a str, read: impl Fn(&mut Cursor<'a>) -> Result<T>) -> Result<T> {
        let mut c = Cursor::new(json);
        let mut got = None;
        c.object(|c, key| {
            if key == "k" {
                got = Some(read(c)?);
                Ok(())
            } else {
                c.skip()
            }
        })?;
        c.end()?;
        got.ok_or(Bad)
    }

    #[test]
    fn strings_borrowed_or_unescaped() {
        let s = value(r#"{"k":"nginx"}"#, Cursor::string).unwrap();
        assert!(matches!(s, Cow::Borrowed("nginx")));
        let s = value(r#"{"k":"a\"b\\c\/d\n\u00e9\ud83d\ude00"}"#, Cursor::string).unwrap();
        assert_eq!(s, "a\"b\\c/d\né😀");
        for bad in [
            r#"{"k":"a\x"}"#,
            r#"{"k":"\ud83d"}"#,
            r#"{"k":"\ude00"}"#,
            r#"{"k":"\u12"}"#,
            "{\"k\":\"tab\there\"}",
            r#"{"k":"open"#,
            r#"{"k":"ends with \"#,
        ] {
            assert_eq!(value(bad, Cursor::string), Err(Bad), "{bad}");
        }
    }

    #[test]
    fn numbers_as_serde_json_reads_them() {
        assert_eq!(value(r#"{"k": 443 }"#, Cursor::u16), Ok(443));
        assert_eq!(value(r#"{"k":65536}"#, Cursor::u16), Err(Bad));
        assert_eq!(
            value(r#"{"k":18446744073709551615}"#, Cursor::u64),
            Ok(u64::MAX)
        );
        assert_eq!(
            value(r#"{"k":18446744073709551616}"#, Cursor::u64),
            Err(Bad)
        );
        for bad in [
            r#"{"k":-1}"#,
            r#"{"k":1.5}"#,
            r#"{"k":1e3}"#,
            r#"{"k":"1"}"#,
            r#"{"k":01}"#,
        ] {
            assert_eq!(value(bad, Cursor::u64), Err(Bad), "{bad}");
        }
        assert_eq!(value(r#"{"k":12}"#, Cursor::f64), Ok(12.0));
        assert_eq!(value(r#"{"k":-0.25e1}"#, Cursor::f64), Ok(-2.5));
        assert_eq!(value(r#"{"k":.5}"#, Cursor::f64), Err(Bad));
        assert_eq!(value(r#"{"k":"NaN"}"#, Cursor::f64), Err(Bad));
    }

    #[test]
    fn addresses_and_nulls() {
        let ips = value(r#"{"k":["10.0.0.5", "::1"]}"#, Cursor::ips).unwrap();
        assert_eq!(
            ips,
            vec![
                "10.0.0.5".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        assert_eq!(value(r#"{"k":[]}"#, Cursor::ips), Ok(vec![]));
        assert_eq!(value(r#"{"k":null}"#, Cursor::ips), Ok(vec![]));
        assert_eq!(value(r#"{"k":["10.0.0.300"]}"#, Cursor::ips), Err(Bad));
        assert_eq!(value(r#"{"k":null}"#, Cursor::opt_str), Ok(None));
        assert_eq!(value(r#"{"k":1}"#, Cursor::opt_str), Err(Bad));
    }

    #[test]
    fn unread_values_are_stepped_over_whatever_they_hold() {
        let line = r#" { "a" : {"x":"}]{[\"","y":[1,{"z":"\\"}],"w":{}}, "b":true ,"c":null,"d":-1.5e3,"e":[],
            "k" : "found" } "#;
        assert_eq!(value(line, Cursor::string).unwrap(), "found");
        // Not validated: the skipped value's brackets are only counted.
        assert_eq!(
            value(r#"{"a":[1,,2],"b":{"c" 1},"k":"x"}"#, Cursor::string).unwrap(),
            "x"
        );
    }

    #[test]
    fn broken_text_is_bad_never_a_panic() {
        for bad in [
            "",
            "{",
            "{\"k\"",
            "{\"k\":",
            "{\"k\":\"x\"",
            "{\"k\":\"x\",}",
            "{\"a\":[1,2",
            "{\"a\":\"\\",
            "{\"a\":{\"b\":\"}",
            "[]",
            "{\"k\":\"x\"} trailing",
            "{\"a\" \"k\":\"x\"}",
            "{\"a\":}",
        ] {
            assert_eq!(value(bad, Cursor::string), Err(Bad), "{bad:?}");
        }
    }
}

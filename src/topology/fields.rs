//! A JSON cursor that reads the few fields the graph uses and steps over the rest.
//!
//! An agent's event is some 700 bytes, of which the graph reads about a dozen fields.
//! Deserialising it with serde_json tokenises every key and every value; the topology
//! reader spent most of its time there. This cursor steps over a value it does not need
//! by its quotes and brackets, without looking inside, sixteen bytes at a time ([`scan`]);
//! a key is packed into an integer ([`Key`]), so that matching it against the keys a
//! reader knows is an integer comparison, not a string comparison; and a reader that keeps
//! [`Shapes`] first compares the text with the key that followed the previous key last
//! time, which agents, writing their keys in one order, make right almost always. So:
//!
//! - a value that is read is checked as strictly as serde_json checks it (types, escapes,
//!   control characters, numbers out of range);
//! - a value that is skipped is not validated: a line whose unread parts are not JSON
//!   (`[1,,2]`, `{"c" 1}`, a `]` closing a `{`) may still be read;
//! - a key given twice keeps its last value.
//!
//! - what a learning cursor reads is what a cursor that learned nothing reads (the
//!   `topology` fuzz target and a test hold the two equal).
//!
//! It works on the line's bytes and checks the UTF-8 of the strings it returns only (a
//! whole-line check cost a twentieth of the reading), never reads beyond them, never
//! recurses on the input's nesting (skipping counts brackets), and returns [`Bad`] for
//! anything it cannot read; the `topology` fuzz target drives it.

use super::scan;
use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr};

/// An object's key, its bytes packed into an integer (little-endian, zero-padded), so
/// that a reader matches it against the keys it knows (`const`s made with [`Key::of`])
/// with integer comparisons. A JSON key holds no NUL unless escaped, so packing loses
/// nothing for the keys of up to 16 bytes the readers know; every other key (longer, or
/// holding an escaped NUL) is [`Key::OTHER`], which matches none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key(u128);

impl Key {
    /// What no reader asks for.
    pub const OTHER: Key = Key(0);

    /// The key with this name (1 to 16 bytes, no NUL).
    pub const fn of(name: &str) -> Key {
        let b = name.as_bytes();
        assert!(
            !b.is_empty() && b.len() <= 16,
            "a known key has 1 to 16 bytes"
        );
        let mut v = 0u128;
        let mut i = 0;
        while i < b.len() {
            assert!(b[i] != 0, "a known key holds no NUL");
            v |= (b[i] as u128) << (8 * i);
            i += 1;
        }
        Key(v)
    }

    /// The key of a name without NUL bytes.
    fn packed(name: &[u8]) -> Key {
        if name.is_empty() || name.len() > 16 {
            return Key::OTHER;
        }
        let mut w = [0u8; 16];
        w[..name.len()].copy_from_slice(name);
        Key(u128::from_le_bytes(w))
    }

    /// The key of an unescaped name.
    fn unescaped(name: &str) -> Key {
        if name.bytes().any(|c| c == 0) {
            Key::OTHER
        } else {
            Key::packed(name.as_bytes())
        }
    }
}

/// `FIRST_BYTES[n]`: the lowest `n` bytes of a [`scan::Word`] set (none for 0, so that
/// the empty key is [`Key::OTHER`]).
const FIRST_BYTES: [u128; 16] = {
    let mut t = [0u128; 16];
    let mut n = 1;
    while n < 16 {
        t[n] = (1u128 << (8 * n)) - 1;
        n += 1;
    }
    t
};

/// The keys one object reader reads: an enum with a variant per key, declared with
/// [`known_keys!`](crate::known_keys). The reader receives a variant rather than a
/// [`Key`], so that its `match` is a jump, not a search; other keys it never sees.
pub trait KnownKeys: Copy + 'static {
    /// The reader's own entry in [`Shapes`]; no two readers share one.
    const SHAPE: usize;
    /// The keys, in the order of the variants.
    const KEYS: &'static [Key];
    /// The variants, in the same order.
    const ALL: &'static [Self];
}

/// Declares a [`KnownKeys`] enum: `known_keys! { enum ProcKey (shape 1) { Binary =
/// "binary", Name = "name" } }`.
#[macro_export]
macro_rules! known_keys {
    ($(#[$meta:meta])* $vis:vis enum $name:ident (shape $shape:literal) {
        $($variant:ident = $key:literal),+ $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name { $($variant,)+ }
        impl $crate::topology::fields::KnownKeys for $name {
            const SHAPE: usize = $shape;
            const KEYS: &'static [$crate::topology::fields::Key] =
                &[$($crate::topology::fields::Key::of($key)),+];
            const ALL: &'static [Self] = &[$($name::$variant,)+];
        }
    };
}

/// Readers with their own [`Shape`], at most.
pub const SHAPES: usize = 16;
/// Distinct key texts one shape remembers, at most (one less than a power of two, so
/// that a node's index, or [`START`], masked by it is in bounds).
const NODES: usize = 63;
/// No node.
const NONE: u8 = u8::MAX;
/// Before an object's first key (the successors of this "node" are the first keys).
const START: u8 = NODES as u8;

/// What a reader learned of the objects it read, one [`Shape`] per reader
/// ([`KnownKeys::SHAPE`]). Agents write an event's keys in one order, always, so that the
/// key after `"pid":1` is, as a rule, the one that came after it last time: comparing
/// the text with that key's text (comma, quotes and colon included) is one sixteen-byte
/// comparison, where reading the key and looking it up takes a scan and a search. A
/// wrong guess costs only the comparison, and what is read is the same either way: the
/// same bytes are the same key.
pub struct Shapes([Shape; SHAPES]);

impl Default for Shapes {
    fn default() -> Self {
        Shapes(std::array::from_fn(|_| Shape::default()))
    }
}

/// The key texts one reader met (each a node), and which (up to two) followed each.
struct Shape {
    /// `count` of them in use (the last never is).
    nodes: [Node; NODES + 1],
    /// Nodes in use.
    count: usize,
    /// The nodes that followed each node, the latest first; at [`START`], the first keys.
    next: [[u8; 2]; NODES + 1],
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            nodes: [Node::default(); NODES + 1],
            count: 0,
            next: [[NONE; 2]; NODES + 1],
        }
    }
}

/// One key's text, from the comma before it (if any) to its colon, at most 32 bytes:
/// the first sixteen as `w0` (the bytes beyond the text masked off by `m0`), the rest as
/// `w1`/`m1`.
#[derive(Clone, Copy, Default)]
struct Node {
    w0: u128,
    m0: u128,
    w1: u128,
    m1: u128,
    len: u8,
    /// The key's index in its reader's [`KnownKeys::KEYS`] (their number for other keys).
    slot: u8,
}

impl Shape {
    /// The node of the key text `text` (made if new and there is room, else [`NONE`]),
    /// made the latest successor of `after`.
    fn learn(&mut self, text: &[u8], slot: u8, after: u8) -> u8 {
        let node = self.node_of(text, slot);
        if node != NONE
            && let Some(next) = self.next.get_mut(usize::from(after))
            && next[0] != node
        {
            *next = [node, next[0]];
        }
        node
    }

    fn node_of(&mut self, text: &[u8], slot: u8) -> u8 {
        if text.is_empty() || text.len() > 32 {
            return NONE;
        }
        let word = |part: &[u8]| {
            let mut w = [0u8; 16];
            w[..part.len()].copy_from_slice(part);
            let mut m = [0u8; 16];
            m[..part.len()].fill(0xff);
            (u128::from_le_bytes(w), u128::from_le_bytes(m))
        };
        let (head, tail) = text.split_at(text.len().min(16));
        let ((w0, m0), (w1, m1)) = (word(head), word(tail));
        let len = text.len() as u8;
        let known = &self.nodes[..self.count];
        if let Some(i) = known
            .iter()
            .position(|n| (n.w0, n.w1, n.len) == (w0, w1, len))
        {
            return i as u8;
        }
        if self.count == NODES {
            return NONE;
        }
        self.nodes[self.count] = Node {
            w0,
            m0,
            w1,
            m1,
            len,
            slot,
        };
        self.count += 1;
        (self.count - 1) as u8
    }
}

/// An agent's addresses: one or two as a rule, kept inline rather than allocated per event.
pub type Ips = smallvec::SmallVec<[IpAddr; 2]>;

/// The line is not JSON of the shape the reader expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bad;

type Result<T> = std::result::Result<T, Bad>;

/// A position in one JSON text.
pub struct Cursor<'a, 's> {
    text: &'a [u8],
    at: usize,
    /// What earlier texts taught about the order of keys, if the reader keeps it.
    shapes: Option<&'s mut Shapes>,
}

/// Bytes the cursor has delimited as text: UTF-8, or the line is refused.
#[inline(always)]
fn text(b: &[u8]) -> Result<&str> {
    if b.is_ascii() {
        // SAFETY: ASCII is UTF-8.
        Ok(unsafe { std::str::from_utf8_unchecked(b) })
    } else {
        std::str::from_utf8(b).map_err(|_| Bad)
    }
}

impl<'a, 's> Cursor<'a, 's> {
    /// A cursor that learns nothing: every key is read and looked up.
    pub fn new(text: &'a [u8]) -> Self {
        Cursor {
            text,
            at: 0,
            shapes: None,
        }
    }

    /// A cursor that predicts each key from the keys of earlier texts, and teaches
    /// `shapes` what it finds.
    pub fn learning(text: &'a [u8], shapes: &'s mut Shapes) -> Self {
        Cursor {
            text,
            at: 0,
            shapes: Some(shapes),
        }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text
    }

    fn skip_ws(&mut self) {
        let b = self.bytes();
        while self.at < b.len() && matches!(b[self.at], b' ' | b'\n' | b'\r' | b'\t') {
            self.at += 1;
        }
    }

    /// The next byte that is not whitespace, not consumed.
    #[inline(always)]
    fn peek(&mut self) -> Option<u8> {
        // Agents write no whitespace between tokens: every byte above a space is not one.
        match self.bytes().get(self.at) {
            Some(&c) if c > b' ' => Some(c),
            _ => {
                self.skip_ws();
                self.bytes().get(self.at).copied()
            }
        }
    }

    #[inline(always)]
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

    /// Calls `field` with each key of the object at the cursor that is one of the reader's
    /// (the enum `F`); `field` reads the key's value. The value of any other key is
    /// stepped over without calling `field`. Each key is first looked for where the keys of
    /// earlier texts say it should be ([`Shapes`]).
    #[inline(always)]
    pub fn fields<F: KnownKeys>(
        &mut self,
        mut field: impl FnMut(&mut Self, F) -> Result<()>,
    ) -> Result<()> {
        self.fields_while(|c, key| field(c, key).map(|()| true))
    }

    /// As [`fields`](Self::fields), but `field` says whether it still wants keys: once it
    /// says no, the rest of the object is stepped over unread, as a skipped value is. A
    /// reader that has what it needs from `{"pid":1,"binary":"curl","cmdline":"..."}` is
    /// spared the keys after it (a key given again after that point is not seen).
    pub fn fields_while<F: KnownKeys>(
        &mut self,
        mut field: impl FnMut(&mut Self, F) -> Result<bool>,
    ) -> Result<()> {
        self.expect(b'{')?;
        let mut after = START;
        loop {
            let (slot, node) = match self.predicted(F::SHAPE, after) {
                Some(hit) => hit,
                None => match self.learn::<F>(after)? {
                    Some(read) => read,
                    None => return Ok(()),
                },
            };
            let Some(&key) = F::ALL.get(usize::from(slot)) else {
                self.skip()?;
                after = node;
                continue;
            };
            if !field(self, key)? {
                return match self.peek() {
                    Some(b',') => {
                        self.at += 1;
                        self.skip_to_close(1)
                    }
                    Some(b'}') => {
                        self.at += 1;
                        Ok(())
                    }
                    _ => Err(Bad),
                };
            }
            after = node;
        }
    }

    /// The slot of the key at the cursor and its node, when the text there is one of the
    /// (at most two) key texts that followed node `after` before: compared with theirs
    /// and stepped over, the comma before the key included.
    #[inline(always)]
    fn predicted(&mut self, shape: usize, after: u8) -> Option<(u8, u8)> {
        let shape = &self.shapes.as_deref()?.0[shape];
        // No node ([`NONE`]: a text too long, or the shape full): no guess.
        let next = *shape.next.get(usize::from(after))?;
        let w0 = scan::word(self.text, self.at)?;
        for n in next {
            if usize::from(n) >= shape.count {
                break;
            }
            let l = &shape.nodes[usize::from(n) & NODES];
            if (w0 ^ l.w0) & l.m0 == 0 && (l.len <= 16 || self.tail_matches(l)) {
                self.at += usize::from(l.len);
                return Some((l.slot, n));
            }
        }
        None
    }

    /// The seventeenth to 32nd bytes of a key text longer than sixteen.
    #[cold]
    #[inline(never)]
    fn tail_matches(&self, l: &Node) -> bool {
        scan::word(self.text, self.at + 16).is_some_and(|w1| (w1 ^ l.w1) & l.m1 == 0)
    }

    /// What [`predicted`](Self::predicted) did not know: the comma (after the first key)
    /// and the key read, the key looked up in `F`'s keys, and its text (from the comma
    /// on) made a node of `F`'s shape if new and there is room, and the latest successor
    /// of node `after`. `None` at the end of the object.
    #[cold]
    fn learn<F: KnownKeys>(&mut self, after: u8) -> Result<Option<(u8, u8)>> {
        let start = self.at;
        match self.peek() {
            Some(b'}') => {
                self.at += 1;
                return Ok(None);
            }
            Some(b',') if after != START => self.at += 1,
            _ if after != START => return Err(Bad),
            _ => {}
        }
        let key = self.key()?;
        let slot = F::KEYS
            .iter()
            .position(|k| *k == key)
            .unwrap_or(F::KEYS.len());
        let slot = u8::try_from(slot).map_err(|_| Bad)?;
        let Some(shapes) = self.shapes.as_deref_mut() else {
            return Ok(Some((slot, NONE)));
        };
        let node = shapes.0[F::SHAPE].learn(&self.text[start..self.at], slot, after);
        Ok(Some((slot, node)))
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
    #[inline(always)]
    pub fn opt<T>(&mut self, read: impl FnOnce(&mut Self) -> Result<T>) -> Result<Option<T>> {
        if self.peek() == Some(b'n') && self.null() {
            Ok(None)
        } else {
            read(self).map(Some)
        }
    }

    /// An object's key, packed, and the colon after it.
    #[inline(always)]
    fn key(&mut self) -> Result<Key> {
        self.expect(b'"')?;
        let b = self.bytes();
        let start = self.at;
        // Most keys end within the next sixteen bytes: one look finds the end, and the
        // same bytes, those past the key masked off, are the key; agents write the colon
        // right after it.
        if let Some(w) = scan::word(b, start) {
            let n = scan::string_end_in(w);
            if n < 15 && b[start + n] == b'"' && b[start + n + 1] == b':' {
                self.at = start + n + 2;
                return Ok(Key(w & FIRST_BYTES[n]));
            }
        }
        let end = scan::string_end(b, start);
        let key = if b.get(end) == Some(&b'"') {
            self.at = end + 1;
            Key::packed(&b[start..end])
        } else {
            // Escapes (or a control character, or the end, which `string` refuses).
            self.at = start - 1;
            Key::unescaped(&self.string()?)
        };
        self.expect(b':')?;
        Ok(key)
    }

    /// A string, borrowed from the text unless it holds escapes.
    #[inline]
    pub fn string(&mut self) -> Result<Cow<'a, str>> {
        self.expect(b'"')?;
        let b = self.bytes();
        let start = self.at;
        // As a rule plain ASCII: one scan finds its end and shows it is UTF-8.
        let end = scan::ascii_string_end(b, start);
        if b.get(end) == Some(&b'"') {
            self.at = end + 1;
            // SAFETY: every byte before `end` is ASCII.
            return Ok(Cow::Borrowed(unsafe {
                std::str::from_utf8_unchecked(&b[start..end])
            }));
        }
        let end = scan::string_end(b, end);
        match b.get(end) {
            Some(b'"') => {
                self.at = end + 1;
                Ok(Cow::Borrowed(text(&b[start..end])?))
            }
            Some(b'\\') => {
                let mut out = String::with_capacity(end - start + 8);
                out.push_str(text(&b[start..end])?);
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
                    let run = scan::string_end(b, self.at);
                    if !matches!(b.get(run), Some(b'"' | b'\\')) {
                        // A control character, or the end of the text.
                        return Err(Bad);
                    }
                    out.push_str(text(&b[self.at..run])?);
                    self.at = run;
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
        if !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(Bad);
        }
        let digits = text(digits)?;
        self.at += 4;
        u32::from_str_radix(digits, 16).map_err(|_| Bad)
    }

    /// An optional string (`null` is `None`).
    #[inline]
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
        // Only ASCII was taken.
        text(&self.text[start..self.at]).unwrap_or("")
    }

    /// A non-negative integer (no fraction, no exponent), as serde_json reads a `u64`.
    pub fn u64(&mut self) -> Result<u64> {
        self.skip_ws();
        let b = self.bytes();
        let start = self.at;
        // As a rule fewer than eight digits: found and added eight bytes at a time.
        if let Some((value, digits)) = b
            .get(start..start + 8)
            .and_then(|w| short_number(u64::from_le_bytes(w.try_into().expect("eight"))))
        {
            let end = start + digits;
            if (digits > 1 && b[start] == b'0')
                || matches!(b.get(end), Some(b'-' | b'+' | b'.' | b'e' | b'E'))
            {
                return Err(Bad);
            }
            self.at = end;
            return Ok(value);
        }
        self.u64_slowly()
    }

    /// [`u64`](Self::u64) a digit at a time.
    fn u64_slowly(&mut self) -> Result<u64> {
        let b = self.bytes();
        let start = self.at;
        let mut n = 0u64;
        let mut i = start;
        // Numbers are short: a byte loop beats finding their end sixteen bytes at a time.
        while let Some(d) = b.get(i).map(|c| c.wrapping_sub(b'0')).filter(|d| *d <= 9) {
            // Nineteen digits cannot overflow; checked beyond.
            n = if i - start < 19 {
                n * 10 + u64::from(d)
            } else {
                n.checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(d)))
                    .ok_or(Bad)?
            };
            i += 1;
        }
        let digits = i - start;
        // No digits (a sign, a string ...), a leading zero, a fraction or an exponent.
        if digits == 0
            || (digits > 1 && b[start] == b'0')
            || matches!(b.get(i), Some(b'-' | b'+' | b'.' | b'e' | b'E'))
        {
            return Err(Bad);
        }
        self.at = i;
        Ok(n)
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
        // As a rule a dotted IPv4 address: read from the bytes up to the closing quote
        // (an address holds no escape, and [`ipv4`] takes digits and dots only).
        if self.peek() == Some(b'"') {
            let start = self.at + 1;
            if let Some((v4, len)) = scan::word(self.text, start).and_then(ipv4_in_word) {
                self.at = start + len + 1;
                return Ok(IpAddr::V4(v4));
            }
        }
        let s = self.string()?;
        match ipv4(s.as_bytes()) {
            Some(v4) => Ok(IpAddr::V4(v4)),
            None => s.parse().map_err(|_| Bad),
        }
    }

    /// An array of addresses; `null` is none.
    pub fn ips(&mut self) -> Result<Ips> {
        let mut out = Ips::new();
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
                let start = self.at;
                self.at = scan::scalar_end(self.bytes(), start);
                if self.at == start { Err(Bad) } else { Ok(()) }
            }
        }
    }

    /// After an opening quote: to just past the closing one.
    fn skip_string_body(&mut self) -> Result<()> {
        let b = self.bytes();
        loop {
            let at = scan::quote_or_backslash(b, self.at);
            if at == b.len() {
                return Err(Bad);
            }
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
        self.skip_to_close(0)
    }

    /// To just past the bracket that closes the `depth` open ones the cursor is inside.
    ///
    /// Sixteen bytes at a time while they hold no backslash: which quotes open and which
    /// close strings then follows from the quotes alone ([`scan::inside_strings`]), and
    /// only the brackets outside strings count. From a backslash on, and for the last
    /// bytes, string by string ([`skip_to_close_slowly`](Self::skip_to_close_slowly)).
    fn skip_to_close(&mut self, mut depth: usize) -> Result<()> {
        let b = self.bytes();
        let mut inside = false;
        let mut i = self.at;
        while let Some(w) = scan::word(b, i) {
            let m = scan::brackets(w);
            if m.backslash != 0 {
                break;
            }
            let strings = scan::inside_strings(m.quote, inside);
            let mut brackets = (m.open | m.close) & !strings;
            while brackets != 0 {
                let at = brackets.trailing_zeros();
                if m.close & (1 << at) != 0 {
                    depth = depth.checked_sub(1).ok_or(Bad)?;
                    if depth == 0 {
                        self.at = i + at as usize + 1;
                        return Ok(());
                    }
                } else {
                    depth += 1;
                }
                brackets &= brackets - 1;
            }
            inside = strings & 0x8000 != 0;
            i += 16;
        }
        self.at = i;
        if inside {
            self.skip_string_body()?;
        }
        self.skip_to_close_slowly(depth)
    }

    /// [`skip_to_close`](Self::skip_to_close) one string or bracket at a time.
    fn skip_to_close_slowly(&mut self, mut depth: usize) -> Result<()> {
        let b = self.bytes();
        loop {
            self.at = scan::structural(b, self.at);
            let Some(&c) = b.get(self.at) else {
                return Err(Bad);
            };
            self.at += 1;
            match c {
                b'"' => self.skip_string_body()?,
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth = depth.checked_sub(1).ok_or(Bad)?;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
    }
}

/// The value and number of the decimal digits that start the eight bytes `w` (the
/// first in the lowest bits), when there are one to seven of them.
#[inline(always)]
fn short_number(w: u64) -> Option<(u64, usize)> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    // A byte is a digit when its high nibble is 3 and its low one at most 9 (adding 6
    // to a low nibble cannot carry beyond its byte): digits leave zero bytes.
    let high = (w & (0xf0 * ONES)) ^ (0x30 * ONES);
    let low = ((w & (0x0f * ONES)) + 6 * ONES) & (0xf0 * ONES);
    let digits = ((high | low).trailing_zeros() / 8) as usize;
    if digits == 0 || digits == 8 {
        return None;
    }
    // The digits moved to the top bytes (zeros before them change nothing), then added
    // in pairs, fours and eights.
    let v = (w & (0x0f * ONES)) << (8 * (8 - digits));
    let v = (v * 10 + (v >> 8)) & 0x00ff_00ff_00ff_00ff;
    let v = (v * 100 + (v >> 16)) & 0x0000_ffff_0000_ffff;
    let v = (v * 10_000 + (v >> 32)) & 0xffff_ffff;
    Some((v, digits))
}

/// A dotted IPv4 address, and its length, at the start of the sixteen bytes `w` and
/// ended by a quote, read as [`ipv4`] reads one: its dots and digits found at once
/// ([`scan::dots_and_digits`]), the octets read between the dots. `None` for anything
/// else, which the general path then reads.
#[inline]
fn ipv4_in_word(w: scan::Word) -> Option<(Ipv4Addr, usize)> {
    let b = w.to_le_bytes();
    let (dots, digits) = scan::dots_and_digits(w);
    // The address ends where its dots and digits end, at a quote.
    let len = (!(dots | digits)).trailing_zeros() as usize;
    if !(7..=15).contains(&len) || b[len] != b'"' {
        return None;
    }
    // Only the address's own dots: those after its quote are another value's.
    let dots = dots & ((1 << len) - 1);
    if dots.count_ones() != 3 {
        return None;
    }
    let mut out = [0u8; 4];
    let (mut from, mut rest) = (0, dots | (1 << len));
    for octet in &mut out {
        let to = rest.trailing_zeros() as usize;
        rest &= rest - 1;
        let d = |i: usize| u32::from(b[i] - b'0');
        let v = match to - from {
            1 => d(from),
            2 if b[from] != b'0' => d(from) * 10 + d(from + 1),
            3 if b[from] != b'0' => d(from) * 100 + d(from + 1) * 10 + d(from + 2),
            _ => return None,
        };
        *octet = u8::try_from(v).ok()?;
        from = to + 1;
    }
    Some((Ipv4Addr::from(out), len))
}

/// A dotted IPv4 address as `Ipv4Addr`'s parser reads one (four numbers of one to three
/// digits up to 255, no leading zero), without its general machinery; `None` for
/// anything else, which that parser then reads (or refuses) as before.
fn ipv4(s: &[u8]) -> Option<Ipv4Addr> {
    let mut out = [0u8; 4];
    let (mut k, mut octet, mut digits) = (0, 0u32, 0);
    for &c in s {
        if c == b'.' {
            if digits == 0 || k == 3 {
                return None;
            }
            out[k] = octet as u8;
            (k, octet, digits) = (k + 1, 0, 0);
        } else {
            let d = c.wrapping_sub(b'0');
            // Not a digit, a digit after a leading zero, or above 255.
            if d > 9 || (digits == 1 && octet == 0) {
                return None;
            }
            octet = octet * 10 + u32::from(d);
            digits += 1;
            if octet > 255 {
                return None;
            }
        }
    }
    if digits == 0 || k != 3 {
        return None;
    }
    out[3] = octet as u8;
    Some(Ipv4Addr::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::known_keys! {
        enum OneKey (shape 15) {
            K = "k",
        }
    }

    /// Reads `{"k": <value>}` with `read` for the value of `k`.
    fn value<'a, T>(json: &'a str, read: impl Fn(&mut Cursor<'a, 'a>) -> Result<T>) -> Result<T> {
        let mut c = Cursor::new(json.as_bytes());
        let mut got = None;
        c.fields(|c, OneKey::K| {
            got = Some(read(c)?);
            Ok(())
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
    fn a_reader_done_early_steps_over_the_rest_of_its_object() {
        // The first key is all the reader wants; what follows, brackets and quotes in
        // strings included, is stepped over, and reading goes on after the object.
        let text = br#"{"a":{"want":7,"rest":"x}\"{","deep":[{"b":"]"}],"n":1},"after":2}"#;
        crate::known_keys! {
            enum Outer (shape 13) {
                A = "a",
                After = "after",
            }
        }
        crate::known_keys! {
            enum Inner (shape 14) {
                Want = "want",
                Rest = "rest",
                Deep = "deep",
                N = "n",
            }
        }
        let mut c = Cursor::new(text);
        let (mut want, mut after, mut seen) = (0, 0, Vec::new());
        c.fields(|c, key| match key {
            Outer::A => c.fields_while(|c, key: Inner| {
                seen.push(key);
                want = c.u64()?;
                Ok(false)
            }),
            Outer::After => {
                after = c.u64()?;
                Ok(())
            }
        })
        .unwrap();
        c.end().unwrap();
        assert_eq!((want, after), (7, 2));
        assert_eq!(seen, [Inner::Want]);
        // An object whose rest never closes is refused.
        let mut c = Cursor::new(br#"{"want":7,"rest":[1,2"#);
        assert_eq!(
            c.fields_while(|c, _: Inner| c.u64().map(|_| false)),
            Err(Bad)
        );
    }

    /// Skipping sixteen bytes at a time ends where skipping string by string ends, on
    /// texts of brackets, quotes, backslashes and letters of every length up to 70.
    #[test]
    fn skipping_by_words_ends_where_skipping_by_strings_ends() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let alphabet = b"{}[]\"\\ab,:";
        for len in 0..70 {
            for _ in 0..300 {
                let mut text = vec![b'{'];
                text.extend((0..len).map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    alphabet[(x >> 11) as usize % alphabet.len()]
                }));
                for depth in [0, 1] {
                    let start = depth;
                    let mut fast = Cursor::new(&text);
                    fast.at = start;
                    let mut slow = Cursor::new(&text);
                    slow.at = start;
                    let got = fast.skip_to_close(depth);
                    let want = slow.skip_to_close_slowly(depth);
                    assert_eq!(
                        got,
                        want,
                        "{:?} depth {depth}",
                        String::from_utf8_lossy(&text)
                    );
                    if got.is_ok() {
                        assert_eq!(fast.at, slow.at, "{:?}", String::from_utf8_lossy(&text));
                    }
                }
            }
        }
    }

    /// Eight bytes at a time reads what a digit at a time reads, for numbers of every
    /// length followed by every kind of byte.
    #[test]
    fn short_numbers_read_as_long_ones() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for len in 0..24 {
            for _ in 0..400 {
                let mut text = String::from("{\"k\":");
                for _ in 0..len {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    text.push(char::from(b'0' + (x % 10) as u8));
                }
                let after = [",1}", "}", ".5}", "e3}", "-}", ":}", "/}", "\u{7f}}", "é}"];
                text.push_str(after[(x >> 20) as usize % after.len()]);
                let slow = value(&text, |c| c.u64_slowly());
                assert_eq!(value(&text, Cursor::u64), slow, "{text}");
            }
        }
        for n in [0, 9, 10, 99, 1_000_000, 9_999_999, 12_345_678, u64::MAX] {
            assert_eq!(
                value(&format!("{{\"k\":{n},\"padding\":1}}"), Cursor::u64),
                Ok(n)
            );
        }
    }

    #[test]
    fn addresses_and_nulls() {
        let ips = value(r#"{"k":["10.0.0.5", "::1"]}"#, Cursor::ips).unwrap();
        assert_eq!(
            ips.as_slice(),
            [
                "10.0.0.5".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        assert_eq!(value(r#"{"k":[]}"#, Cursor::ips), Ok(Ips::new()));
        assert_eq!(value(r#"{"k":null}"#, Cursor::ips), Ok(Ips::new()));
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
    fn keys_match_as_written_or_escaped_and_long_ones_match_nothing() {
        assert_eq!(value(r#"{"k":"a"}"#, Cursor::string).unwrap(), "a");
        assert_eq!(value(r#"{"\u006b":"b"}"#, Cursor::string).unwrap(), "b");
        // Not "k": a longer key, an escaped NUL after it, a key of 17 bytes.
        for other in [
            r#"{"kk":"x"}"#,
            r#"{"k\u0000":"x"}"#,
            r#"{"kaaaaaaaaaaaaaaaa":"x"}"#,
            r#"{"":"x"}"#,
        ] {
            assert_eq!(value(other, Cursor::string), Err(Bad), "{other}");
        }
        // Keys of 16 and 17 bytes, at the end of the text (packed without a 16-byte load)
        // and before more of it: the first is the reader's, the second none of its keys
        // (its first sixteen bytes are the first's).
        crate::known_keys! {
            enum Long (shape 12) {
                K16 = "abcdefghijklmnop",
            }
        }
        for text in [
            r#"{"abcdefghijklmnop":1}"#,
            r#"{"abcdefghijklmnop":1,"padding":"0123456789abcdef"}"#,
        ] {
            let mut c = Cursor::new(text.as_bytes());
            let mut keys = Vec::new();
            c.fields(|c, k: Long| {
                keys.push(k);
                c.skip()
            })
            .unwrap();
            assert_eq!(keys, [Long::K16]);
        }
        assert_eq!(Key::packed(b"abcdefghijklmnopq"), Key::OTHER);
        let mut c = Cursor::new(br#"{"abcdefghijklmnopq":1}"#);
        let mut keys = Vec::new();
        c.fields(|c, k: Long| {
            keys.push(k);
            c.skip()
        })
        .unwrap();
        assert_eq!(keys, []);
    }

    #[test]
    fn dotted_addresses_as_the_standard_parser_reads_them() {
        for s in [
            "10.0.0.5",
            "0.0.0.0",
            "255.255.255.255",
            "256.0.0.1",
            "01.2.3.4",
            "1.2.3.04",
            "1.2.3",
            "1.2.3.4.",
            "1.2.3.4.5",
            "1..2.3",
            "1234.1.1.1",
            "1.2.3.1000",
            ".1.2.3",
            "1.2.3.-4",
            "1.2.3.4 ",
            "1.2.255",
            "1.2",
            "",
            "::1",
            "::ffff:1.2.3.4",
            "fe80::1",
        ] {
            let want = s.parse::<IpAddr>().ok();
            let json = format!("{{\"k\":\"{s}\"}}");
            assert_eq!(value(&json, Cursor::ip).ok(), want, "{s}");
            if let Some(v4) = ipv4(s.as_bytes()) {
                assert_eq!(Some(IpAddr::V4(v4)), want, "{s}");
            }
            // Followed by other text, dots in it too.
            for after in [
                "0123456789abcdef",
                ".1.2.3.4.5.6.7.8",
                ",\"a.b\":\"1.2.3.4\"",
            ] {
                let quoted = format!("{s}\"{after}");
                let w = scan::word(quoted.as_bytes(), 0).expect("sixteen bytes");
                assert_eq!(
                    ipv4_in_word(w).map(|(v4, len)| (IpAddr::V4(v4), len)),
                    want.filter(IpAddr::is_ipv4).map(|ip| (ip, s.len())),
                    "{quoted}"
                );
            }
        }
        // Every octet value, and each with a leading zero.
        for n in 0..300u32 {
            for s in [
                format!("1.{n}.2.3"),
                format!("1.0{n}.2.3"),
                format!("{n}.0.0.1"),
            ] {
                assert_eq!(
                    ipv4(s.as_bytes()).map(IpAddr::V4),
                    s.parse::<IpAddr>().ok(),
                    "{s}"
                );
            }
        }
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

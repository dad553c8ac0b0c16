//! Finding the next byte of interest in JSON text, sixteen bytes at a time.
//!
//! The topology reader spends its time finding where keys and strings end (a quote, a
//! backslash, or a control character, which JSON allows only escaped) and where a
//! skipped object or array ends. Most keys and values of an event are shorter than
//! sixteen bytes, so one look at sixteen bytes usually finds the end: with SSE2 (every
//! x86-64 has it) a dozen instructions where a byte loop takes seven a byte and
//! `memchr`'s set-up costs more than that; elsewhere the same test on the 128-bit word
//! in plain integer arithmetic (each matching byte leaves its high bit set).
//!
//! A *set* is a test of sixteen bytes at once ([`Word`] to the index of the first byte
//! in the set, 16 when none is), applied by [`find`] along the text.

/// Sixteen bytes of text, the first in the lowest bits.
pub type Word = u128;

/// The sixteen bytes at `b[i..]`, if there are sixteen.
#[inline(always)]
pub fn word(b: &[u8], i: usize) -> Option<Word> {
    // `i + 16` cannot overflow: a slice is at most `isize::MAX` bytes, and `i` is an
    // index into one or one past it.
    let w = b.get(i..i.wrapping_add(16))?;
    Some(u128::from_le_bytes(w.try_into().expect("sixteen bytes")))
}

// SAFETY (every `unsafe` below): SSE2 is part of the x86-64 baseline, so these
// intrinsics are always available, and none of them touches memory.
#[cfg(target_arch = "x86_64")]
mod sets {
    use super::Word;
    use std::arch::x86_64::*;

    #[inline(always)]
    fn v(w: Word) -> __m128i {
        unsafe { _mm_set_epi64x((w >> 64) as i64, w as i64) }
    }

    #[inline(always)]
    fn eq(v: __m128i, c: u8) -> __m128i {
        unsafe { _mm_cmpeq_epi8(v, _mm_set1_epi8(c as i8)) }
    }

    #[inline(always)]
    fn or(a: __m128i, b: __m128i) -> __m128i {
        unsafe { _mm_or_si128(a, b) }
    }

    /// The index of the first byte marked in `m`, 16 when none is.
    #[inline(always)]
    fn first(m: __m128i) -> usize {
        let bits = unsafe { _mm_movemask_epi8(m) } as u32;
        (bits | 0x1_0000).trailing_zeros() as usize
    }

    /// The bytes that end plain string content: `"`, `\` or a control character (a byte
    /// whose maximum with 0x1f is 0x1f).
    #[inline(always)]
    fn string_ends(v: __m128i) -> __m128i {
        let control = unsafe {
            let low = _mm_set1_epi8(0x1f);
            _mm_cmpeq_epi8(_mm_max_epu8(v, low), low)
        };
        or(or(eq(v, b'"'), eq(v, b'\\')), control)
    }

    /// `"`, `\` or a control character.
    #[inline(always)]
    pub fn string_end(w: Word) -> usize {
        first(string_ends(v(w)))
    }

    /// As [`string_end`], or a byte above 0x7f (its high bit is the mask's).
    #[inline(always)]
    pub fn ascii_string_end(w: Word) -> usize {
        let v = v(w);
        first(or(string_ends(v), v))
    }

    /// `"` or `\`.
    #[inline(always)]
    pub fn quote_or_backslash(w: Word) -> usize {
        let v = v(w);
        first(or(eq(v, b'"'), eq(v, b'\\')))
    }

    /// `"`, `{`, `}`, `[` or `]` (the brackets differ from the braces only in bit 5).
    #[inline(always)]
    pub fn structural(w: Word) -> usize {
        let v = v(w);
        let f = or(v, unsafe { _mm_set1_epi8(0x20) });
        first(or(eq(v, b'"'), or(eq(f, b'{'), eq(f, b'}'))))
    }

    /// Bit `i` set for byte `i` in each class: `"`, `\`, `{` or `[`, `}` or `]`.
    #[inline(always)]
    pub fn brackets(w: Word) -> super::Brackets {
        let v = v(w);
        let f = or(v, unsafe { _mm_set1_epi8(0x20) });
        let bits = |m: __m128i| unsafe { _mm_movemask_epi8(m) } as u32;
        super::Brackets {
            quote: bits(eq(v, b'"')),
            backslash: bits(eq(v, b'\\')),
            open: bits(eq(f, b'{')),
            close: bits(eq(f, b'}')),
        }
    }

    /// Bit `i` set for byte `i` when it is a `.`, and when it is a decimal digit.
    #[inline(always)]
    pub fn dots_and_digits(w: Word) -> (u32, u32) {
        let v = v(w);
        let bits = |m: __m128i| unsafe { _mm_movemask_epi8(m) } as u32;
        // A digit: at most 9 once '0' is taken away (unsigned, so below '0' wraps high).
        let d = unsafe { _mm_sub_epi8(v, _mm_set1_epi8(b'0' as i8)) };
        let nine = unsafe { _mm_set1_epi8(9) };
        let digit = unsafe { _mm_cmpeq_epi8(_mm_min_epu8(d, nine), d) };
        (bits(eq(v, b'.')), bits(digit))
    }

    /// What ends a number, `true`, `false` or `null`: `,`, `}`, `]` or whitespace.
    #[inline(always)]
    pub fn scalar_end(w: Word) -> usize {
        let v = v(w);
        let ws = or(
            or(eq(v, b' '), eq(v, b'\n')),
            or(eq(v, b'\r'), eq(v, b'\t')),
        );
        first(or(ws, or(eq(v, b','), or(eq(v, b'}'), eq(v, b']')))))
    }
}

/// The same sets in integer arithmetic, for other machines (and tested on every one).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
mod swar {
    use super::Word;

    const LO: Word = Word::from_le_bytes([1; 16]);
    const HI: Word = Word::from_le_bytes([0x80; 16]);

    /// The high bit of each byte equal to `c`. The lowest one is exact; a byte above a
    /// match may be marked too, which finding the first match never sees.
    #[inline(always)]
    fn eq(w: Word, c: u8) -> Word {
        let x = w ^ (LO * Word::from(c));
        x.wrapping_sub(LO) & !x & HI
    }

    /// The high bit of each byte below 0x20 (the lowest one exact, as for [`eq`]).
    #[inline(always)]
    fn control(w: Word) -> Word {
        w.wrapping_sub(LO * 0x20) & !w & HI
    }

    #[inline(always)]
    fn first(m: Word) -> usize {
        (m.trailing_zeros() / 8) as usize
    }

    #[inline(always)]
    pub fn string_end(w: Word) -> usize {
        first(eq(w, b'"') | eq(w, b'\\') | control(w))
    }

    #[inline(always)]
    pub fn ascii_string_end(w: Word) -> usize {
        first(eq(w, b'"') | eq(w, b'\\') | control(w) | (w & HI))
    }

    #[inline(always)]
    pub fn quote_or_backslash(w: Word) -> usize {
        first(eq(w, b'"') | eq(w, b'\\'))
    }

    #[inline(always)]
    pub fn structural(w: Word) -> usize {
        let f = w | (LO * 0x20);
        first(eq(w, b'"') | eq(f, b'{') | eq(f, b'}'))
    }

    /// Every byte of each class, not only the first: a byte above a match may be
    /// marked in error by [`eq`], so each byte is tested on its own bits.
    pub fn brackets(w: Word) -> super::Brackets {
        let b = w.to_le_bytes();
        let mut m = super::Brackets::default();
        for (i, c) in b.iter().enumerate() {
            let bit = 1u32 << i;
            match c {
                b'"' => m.quote |= bit,
                b'\\' => m.backslash |= bit,
                b'{' | b'[' => m.open |= bit,
                b'}' | b']' => m.close |= bit,
                _ => {}
            }
        }
        m
    }

    pub fn dots_and_digits(w: Word) -> (u32, u32) {
        let (mut dots, mut digits) = (0, 0);
        for (i, c) in w.to_le_bytes().iter().enumerate() {
            dots |= u32::from(*c == b'.') << i;
            digits |= u32::from(c.is_ascii_digit()) << i;
        }
        (dots, digits)
    }

    #[inline(always)]
    pub fn scalar_end(w: Word) -> usize {
        first(
            eq(w, b',')
                | eq(w, b'}')
                | eq(w, b']')
                | eq(w, b' ')
                | eq(w, b'\n')
                | eq(w, b'\r')
                | eq(w, b'\t'),
        )
    }
}

/// Where the bytes of one class are in sixteen bytes, bit `i` for byte `i`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Brackets {
    pub quote: u32,
    pub backslash: u32,
    /// `{` or `[`.
    pub open: u32,
    /// `}` or `]`.
    pub close: u32,
}

/// The classes of the sixteen bytes `w`.
#[inline(always)]
pub fn brackets(w: Word) -> Brackets {
    best::brackets(w)
}

/// Bit `i` set for byte `i` of `w` when it is a `.`, and when it is a decimal digit.
#[inline(always)]
pub fn dots_and_digits(w: Word) -> (u32, u32) {
    best::dots_and_digits(w)
}

/// Bit `i` set when byte `i` is inside a string, given the quotes (bit `i` for byte
/// `i`) and whether the sixteen bytes start inside one: each quote flips the state, so
/// this is the running XOR of the quote bits (an opening quote counts as inside, a
/// closing one as outside). Without backslashes every quote is a real one.
#[inline(always)]
pub fn inside_strings(quote: u32, starts_inside: bool) -> u32 {
    let mut x = quote;
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    (x ^ if starts_inside { 0xffff } else { 0 }) & 0xffff
}

#[cfg(target_arch = "x86_64")]
use sets as best;
#[cfg(not(target_arch = "x86_64"))]
use swar as best;

/// The first index at or after `i` whose byte is in the set (`set` on sixteen bytes,
/// `hit` on one, for the last fewer than sixteen), else `b.len()`.
#[inline(always)]
fn find(b: &[u8], mut i: usize, set: impl Fn(Word) -> usize, hit: impl Fn(u8) -> bool) -> usize {
    while let Some(w) = word(b, i) {
        let n = set(w);
        if n < 16 {
            return i + n;
        }
        i += 16;
    }
    while i < b.len() && !hit(b[i]) {
        i += 1;
    }
    i
}

fn is_string_end(c: u8) -> bool {
    c == b'"' || c == b'\\' || c < 0x20
}

fn is_structural(c: u8) -> bool {
    matches!(c, b'"' | b'{' | b'}' | b'[' | b']')
}

fn is_scalar_end(c: u8) -> bool {
    matches!(c, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t')
}

/// In sixteen bytes, the index of the first `"`, `\` or control character, else 16.
#[inline(always)]
pub fn string_end_in(w: Word) -> usize {
    best::string_end(w)
}

/// The first `"`, `\` or control character at or after `i` (where plain string content
/// ends), else `b.len()`.
#[inline]
pub fn string_end(b: &[u8], i: usize) -> usize {
    find(b, i, best::string_end, is_string_end)
}

fn is_ascii_string_end(c: u8) -> bool {
    is_string_end(c) || c > 0x7f
}

/// The first `"`, `\`, control character or byte above 0x7f at or after `i` (where
/// plain ASCII string content ends), else `b.len()`.
#[inline]
pub fn ascii_string_end(b: &[u8], i: usize) -> usize {
    find(b, i, best::ascii_string_end, is_ascii_string_end)
}

/// The first `"` or `\` at or after `i`, else `b.len()`.
#[inline]
pub fn quote_or_backslash(b: &[u8], i: usize) -> usize {
    find(b, i, best::quote_or_backslash, |c| c == b'"' || c == b'\\')
}

/// The first `"`, `{`, `}`, `[` or `]` at or after `i`, else `b.len()`.
#[inline]
pub fn structural(b: &[u8], i: usize) -> usize {
    find(b, i, best::structural, is_structural)
}

/// The first `,`, `}`, `]` or whitespace at or after `i` (where a number, `true`,
/// `false` or `null` ends), else `b.len()`.
#[inline]
pub fn scalar_end(b: &[u8], i: usize) -> usize {
    find(b, i, best::scalar_end, is_scalar_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots_and_digits_with_sse2_and_without() {
        let mut x: u64 = 0x1234_5678_9abc_def1;
        for _ in 0..20_000 {
            let mut b = [0u8; 16];
            for c in &mut b {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *c = match x % 4 {
                    0 => b'.',
                    1 => b'0' + (x >> 8) as u8 % 10,
                    _ => (x >> 16) as u8,
                };
            }
            let w = Word::from_le_bytes(b);
            assert_eq!(best::dots_and_digits(w), swar::dots_and_digits(w), "{b:?}");
        }
    }

    fn naive(b: &[u8], i: usize, hit: impl Fn(u8) -> bool) -> usize {
        (i..b.len()).find(|&j| hit(b[j])).unwrap_or(b.len())
    }

    /// Every start in texts of every length up to 50, of bytes from each set, near each
    /// set (a byte one off, or with the high bit flipped), right after one another (where
    /// a borrow could mark the wrong byte) and plain; with SSE2 and without.
    #[test]
    fn finds_what_a_byte_loop_finds() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let alphabet = [
            b'a',
            b'"',
            b'\\',
            0x00,
            0x01,
            0x1f,
            0x20,
            0x21,
            0x22 ^ 0x80,
            b'{',
            b'}',
            b'[',
            b']',
            0x5c ^ 0x80,
            0x02,
            0xff,
            0x7f,
            0xa0,
            0x3b,
            0x3d,
            0x7b ^ 0x80,
            0x9f,
            b'0',
            b'9',
            b'/',
            b':',
            b'5',
            0xb0,
            0xb9,
            b',',
            b'\t',
            b'\n',
            b'\r',
            0x0b,
            0x2c ^ 0x80,
        ];
        type Set = (fn(Word) -> usize, fn(u8) -> bool);
        let sets: [Set; 10] = [
            (best::string_end, is_string_end),
            (swar::string_end, is_string_end),
            (best::ascii_string_end, is_ascii_string_end),
            (swar::ascii_string_end, is_ascii_string_end),
            (best::quote_or_backslash, |c| c == b'"' || c == b'\\'),
            (swar::quote_or_backslash, |c| c == b'"' || c == b'\\'),
            (best::structural, is_structural),
            (swar::structural, is_structural),
            (best::scalar_end, is_scalar_end),
            (swar::scalar_end, is_scalar_end),
        ];
        for len in 0..50 {
            for _ in 0..200 {
                let b: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        if x.is_multiple_of(4) {
                            alphabet[(x >> 8) as usize % alphabet.len()]
                        } else {
                            b'a' + (x >> 16) as u8 % 26
                        }
                    })
                    .collect();
                for i in 0..=len {
                    for (k, (set, hit)) in sets.iter().enumerate() {
                        assert_eq!(
                            find(&b, i, set, hit),
                            naive(&b, i, hit),
                            "set {k}: {b:?} from {i}"
                        );
                    }
                }
                assert_eq!(string_end(&b, 0), naive(&b, 0, is_string_end));
            }
        }
    }
}

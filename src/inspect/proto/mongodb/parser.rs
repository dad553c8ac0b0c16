//! MongoDB wire messages: the 16-byte header, the body of each opcode as views over the
//! buffer, and `OP_COMPRESSED` payloads decompressed (zlib, snappy, zstd).
//!
//! Hand-written: the MongoDB driver crate hides its wire layer, and a capture needs every
//! opcode of every server era, legacy ones included. Pure: bytes in, a message out.
//! Lengths are checked against the bytes present; a decompressed payload is bounded by
//! the size its header announces and by the caller's limit.

use super::bson::Doc;
use crate::inspect::proto::ParseError;
use std::io::Read;

pub const OP_REPLY: i32 = 1;
pub const OP_MSG_LEGACY: i32 = 1000;
pub const OP_UPDATE: i32 = 2001;
pub const OP_INSERT: i32 = 2002;
pub const OP_QUERY: i32 = 2004;
pub const OP_GET_MORE: i32 = 2005;
pub const OP_DELETE: i32 = 2006;
pub const OP_KILL_CURSORS: i32 = 2007;
pub const OP_COMPRESSED: i32 = 2012;
pub const OP_MSG: i32 = 2013;

/// Size of the standard header.
pub const HEADER: usize = 16;
/// Largest message a server accepts (48 MB).
pub const MAX_MESSAGE: usize = 48_000_000;

/// OP_MSG flag bits.
pub const CHECKSUM_PRESENT: u32 = 1;
pub const MORE_TO_COME: u32 = 2;

/// The standard header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The whole message's length, header included.
    pub len: usize,
    pub request_id: i32,
    pub response_to: i32,
    pub opcode: i32,
}

fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn i64_at(b: &[u8], at: usize) -> Option<i64> {
    Some(i64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

const SHORT: ParseError = ParseError("mongodb: message body shorter than its fields");

/// The header at the start of `data`; `None` until 16 bytes are there.
pub fn header(data: &[u8]) -> Result<Option<Header>, ParseError> {
    if data.len() < HEADER {
        return Ok(None);
    }
    let len = i32_at(data, 0).unwrap_or(0);
    let len = usize::try_from(len).map_err(|_| ParseError("mongodb: negative length"))?;
    if !(HEADER..=MAX_MESSAGE).contains(&len) {
        return Err(ParseError("mongodb: message length out of range"));
    }
    Ok(Some(Header {
        len,
        request_id: i32_at(data, 4).unwrap_or(0),
        response_to: i32_at(data, 8).unwrap_or(0),
        opcode: i32_at(data, 12).unwrap_or(0),
    }))
}

/// Whether connbeat decodes this opcode.
pub fn known(opcode: i32) -> bool {
    matches!(
        opcode,
        OP_REPLY
            | OP_MSG_LEGACY
            | OP_UPDATE
            | OP_INSERT
            | OP_QUERY
            | OP_GET_MORE
            | OP_DELETE
            | OP_KILL_CURSORS
            | OP_COMPRESSED
            | OP_MSG
    )
}

/// A message's body, by opcode.
#[derive(Debug, Clone, PartialEq)]
pub enum Body<'a> {
    Reply {
        flags: i32,
        cursor_id: i64,
        starting_from: i32,
        number_returned: i32,
        docs: Vec<Doc<'a>>,
    },
    Query {
        collection: &'a str,
        skip: i32,
        limit: i32,
        query: Doc<'a>,
        fields: Option<Doc<'a>>,
    },
    GetMore {
        collection: &'a str,
        limit: i32,
        cursor_id: i64,
    },
    Insert {
        collection: &'a str,
        docs: Vec<Doc<'a>>,
    },
    Update {
        collection: &'a str,
        selector: Doc<'a>,
        update: Doc<'a>,
    },
    Delete {
        collection: &'a str,
        selector: Doc<'a>,
    },
    KillCursors {
        count: i32,
    },
    Msg {
        flags: u32,
        /// The kind-0 section.
        body: Option<Doc<'a>>,
        /// Kind-1 sections: identifier and documents.
        sequences: Vec<(&'a str, Vec<Doc<'a>>)>,
    },
    LegacyMsg {
        message: &'a str,
    },
}

fn cstr(b: &[u8], at: usize) -> Result<(&str, usize), ParseError> {
    let rest = b.get(at..).ok_or(SHORT)?;
    let n = rest
        .iter()
        .position(|&c| c == 0)
        .ok_or(ParseError("mongodb: unterminated string"))?;
    let s = std::str::from_utf8(&rest[..n]).map_err(|_| ParseError("mongodb: name not UTF-8"))?;
    Ok((s, at + n + 1))
}

fn doc(b: &[u8], at: usize) -> Result<(Doc<'_>, usize), ParseError> {
    let d = Doc::read(b.get(at..).ok_or(SHORT)?).ok_or(ParseError("mongodb: bad document"))?;
    Ok((d, at + d.len()))
}

fn docs(b: &[u8], mut at: usize, end: usize) -> Result<Vec<Doc<'_>>, ParseError> {
    let b = b.get(..end).ok_or(SHORT)?;
    let mut v = Vec::new();
    while at < b.len() {
        let (d, next) = doc(b, at)?;
        v.push(d);
        at = next;
    }
    Ok(v)
}

/// Parses the body (the bytes after the header) of a message of `opcode`.
pub fn body(opcode: i32, b: &[u8]) -> Result<Body<'_>, ParseError> {
    let int = |at| i32_at(b, at).ok_or(SHORT);
    Ok(match opcode {
        OP_REPLY => {
            let number_returned = int(16)?;
            Body::Reply {
                flags: int(0)?,
                cursor_id: i64_at(b, 4).ok_or(SHORT)?,
                starting_from: int(12)?,
                number_returned,
                docs: docs(b, 20, b.len())?,
            }
        }
        OP_QUERY => {
            let (collection, at) = cstr(b, 4)?;
            let (skip, limit) = (int(at)?, int(at + 4)?);
            let (query, at) = doc(b, at + 8)?;
            let fields = if at < b.len() {
                Some(doc(b, at)?.0)
            } else {
                None
            };
            Body::Query {
                collection,
                skip,
                limit,
                query,
                fields,
            }
        }
        OP_GET_MORE => {
            let (collection, at) = cstr(b, 4)?;
            Body::GetMore {
                collection,
                limit: int(at)?,
                cursor_id: i64_at(b, at + 4).ok_or(SHORT)?,
            }
        }
        OP_INSERT => {
            let (collection, at) = cstr(b, 4)?;
            Body::Insert {
                collection,
                docs: docs(b, at, b.len())?,
            }
        }
        OP_UPDATE => {
            let (collection, at) = cstr(b, 4)?;
            let (selector, at) = doc(b, at + 4)?;
            let (update, _) = doc(b, at)?;
            Body::Update {
                collection,
                selector,
                update,
            }
        }
        OP_DELETE => {
            let (collection, at) = cstr(b, 4)?;
            let (selector, _) = doc(b, at + 4)?;
            Body::Delete {
                collection,
                selector,
            }
        }
        OP_KILL_CURSORS => {
            // numberOfCursorIDs, then that many int64 cursor IDs.
            let count = int(4)?;
            let end = usize::try_from(count)
                .ok()
                .and_then(|n| n.checked_mul(8)?.checked_add(8));
            if end.is_none_or(|end| end > b.len()) {
                return Err(ParseError("mongodb: fewer cursor IDs than announced"));
            }
            Body::KillCursors { count }
        }
        OP_MSG => msg(b)?,
        OP_MSG_LEGACY => Body::LegacyMsg {
            message: cstr(b, 0)?.0,
        },
        _ => return Err(ParseError("mongodb: unknown opcode")),
    })
}

fn msg(b: &[u8]) -> Result<Body<'_>, ParseError> {
    let flags = i32_at(b, 0).ok_or(SHORT)? as u32;
    let end = if flags & CHECKSUM_PRESENT != 0 {
        b.len().checked_sub(4).ok_or(SHORT)?
    } else {
        b.len()
    };
    let b = &b[..end];
    let mut at = 4;
    let mut body = None;
    let mut sequences = Vec::new();
    while at < b.len() {
        match b[at] {
            0 => {
                let (d, next) = doc(b, at + 1)?;
                body = Some(d);
                at = next;
            }
            1 => {
                let size = i32_at(b, at + 1).ok_or(SHORT)?;
                let size = usize::try_from(size).map_err(|_| SHORT)?;
                let end = at + 1 + size;
                if size < 4 || end > b.len() {
                    return Err(SHORT);
                }
                let (id, first) = cstr(&b[..end], at + 5)?;
                sequences.push((id, docs(b, first, end)?));
                at = end;
            }
            _ => return Err(ParseError("mongodb: unknown OP_MSG section kind")),
        }
    }
    Ok(Body::Msg {
        flags,
        body,
        sequences,
    })
}

/// An `OP_COMPRESSED` body: the original opcode, its announced size, the compressor id
/// and the compressed bytes.
pub fn compressed(b: &[u8]) -> Result<(i32, usize, u8, &[u8]), ParseError> {
    let op = i32_at(b, 0).ok_or(SHORT)?;
    let size = i32_at(b, 4).ok_or(SHORT)?;
    let size = usize::try_from(size).map_err(|_| ParseError("mongodb: negative size"))?;
    let id = *b.get(8).ok_or(SHORT)?;
    Ok((op, size, id, &b[9..]))
}

/// Why a compressed message was not decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undecoded {
    /// A compressor connbeat does not know.
    Compressor(u8),
    /// Larger than the limit, or not the size announced, or corrupt.
    Bad,
}

/// Decompresses an `OP_COMPRESSED` payload (0 noop, 1 snappy, 2 zlib, 3 zstd) to exactly
/// `size` bytes, refusing more than `max`.
pub fn decompress(id: u8, data: &[u8], size: usize, max: usize) -> Result<Vec<u8>, Undecoded> {
    if size > max {
        return Err(Undecoded::Bad);
    }
    let out = match id {
        0 => data.to_vec(),
        1 => {
            let n = snap::raw::decompress_len(data).map_err(|_| Undecoded::Bad)?;
            if n != size {
                return Err(Undecoded::Bad);
            }
            snap::raw::Decoder::new()
                .decompress_vec(data)
                .map_err(|_| Undecoded::Bad)?
        }
        2 => read_bounded(flate2::read::ZlibDecoder::new(data), size)?,
        3 => read_bounded(
            ruzstd::decoding::StreamingDecoder::new(data).map_err(|_| Undecoded::Bad)?,
            size,
        )?,
        other => return Err(Undecoded::Compressor(other)),
    };
    if out.len() != size {
        return Err(Undecoded::Bad);
    }
    Ok(out)
}

fn read_bounded(r: impl Read, size: usize) -> Result<Vec<u8>, Undecoded> {
    let mut out = Vec::with_capacity(size.min(1 << 20));
    r.take(size as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| Undecoded::Bad)?;
    Ok(out)
}

#[cfg(test)]
pub(crate) mod build {
    //! Builds wire messages for tests: the standard header (messageLength, requestID,
    //! responseTo, opCode, each a little-endian int32) followed by the opcode's body.

    use super::*;

    /// A message of `op` carrying `body`.
    pub fn message(id: i32, to: i32, op: i32, body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + HEADER) as i32).to_le_bytes().to_vec();
        v.extend(id.to_le_bytes());
        v.extend(to.to_le_bytes());
        v.extend(op.to_le_bytes());
        v.extend(body);
        v
    }

    fn cstring(v: &mut Vec<u8>, s: &str) {
        v.extend(s.as_bytes());
        v.push(0);
    }

    /// `OP_MSG`: flagBits 0 and one kind-0 section holding `doc`.
    pub fn op_msg(id: i32, to: i32, doc: &[u8]) -> Vec<u8> {
        let mut b = 0u32.to_le_bytes().to_vec();
        b.push(0);
        b.extend(doc);
        message(id, to, OP_MSG, &b)
    }

    /// `OP_QUERY`: flags, fullCollectionName, numberToSkip, numberToReturn, query.
    pub fn query(id: i32, collection: &str, skip: i32, limit: i32, query: &[u8]) -> Vec<u8> {
        let mut b = 0i32.to_le_bytes().to_vec();
        cstring(&mut b, collection);
        b.extend(skip.to_le_bytes());
        b.extend(limit.to_le_bytes());
        b.extend(query);
        message(id, 0, OP_QUERY, &b)
    }

    /// `OP_REPLY`: responseFlags, cursorID, startingFrom, numberReturned, documents.
    pub fn reply(id: i32, to: i32, flags: i32, cursor: i64, from: i32, docs: &[&[u8]]) -> Vec<u8> {
        let mut b = flags.to_le_bytes().to_vec();
        b.extend(cursor.to_le_bytes());
        b.extend(from.to_le_bytes());
        b.extend((docs.len() as i32).to_le_bytes());
        docs.iter().for_each(|d| b.extend(*d));
        message(id, to, OP_REPLY, &b)
    }

    /// `OP_INSERT`: flags, fullCollectionName, documents.
    pub fn insert(id: i32, flags: i32, collection: &str, docs: &[&[u8]]) -> Vec<u8> {
        let mut b = flags.to_le_bytes().to_vec();
        cstring(&mut b, collection);
        docs.iter().for_each(|d| b.extend(*d));
        message(id, 0, OP_INSERT, &b)
    }

    /// `OP_UPDATE`: ZERO, fullCollectionName, flags, selector, update.
    pub fn update(
        id: i32,
        collection: &str,
        flags: i32,
        selector: &[u8],
        update: &[u8],
    ) -> Vec<u8> {
        let mut b = 0i32.to_le_bytes().to_vec();
        cstring(&mut b, collection);
        b.extend(flags.to_le_bytes());
        b.extend(selector);
        b.extend(update);
        message(id, 0, OP_UPDATE, &b)
    }

    /// `OP_DELETE`: ZERO, fullCollectionName, flags, selector.
    pub fn delete(id: i32, collection: &str, flags: i32, selector: &[u8]) -> Vec<u8> {
        let mut b = 0i32.to_le_bytes().to_vec();
        cstring(&mut b, collection);
        b.extend(flags.to_le_bytes());
        b.extend(selector);
        message(id, 0, OP_DELETE, &b)
    }

    /// `OP_GET_MORE`: ZERO, fullCollectionName, numberToReturn, cursorID.
    pub fn get_more(id: i32, collection: &str, limit: i32, cursor: i64) -> Vec<u8> {
        let mut b = 0i32.to_le_bytes().to_vec();
        cstring(&mut b, collection);
        b.extend(limit.to_le_bytes());
        b.extend(cursor.to_le_bytes());
        message(id, 0, OP_GET_MORE, &b)
    }

    /// `OP_KILL_CURSORS`: ZERO, numberOfCursorIDs, cursorIDs.
    pub fn kill_cursors(id: i32, cursors: &[i64]) -> Vec<u8> {
        let mut b = 0i32.to_le_bytes().to_vec();
        b.extend((cursors.len() as i32).to_le_bytes());
        cursors.iter().for_each(|c| b.extend(c.to_le_bytes()));
        message(id, 0, OP_KILL_CURSORS, &b)
    }

    /// `OP_COMPRESSED` carrying `original` (a whole message, whose header gives the
    /// originalOpcode and whose body length is the uncompressedSize), its body compressed
    /// by `compressor` into `payload`.
    pub fn compressed(
        id: i32,
        to: i32,
        original: &[u8],
        compressor: u8,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut b = original[12..16].to_vec();
        b.extend(((original.len() - HEADER) as i32).to_le_bytes());
        b.push(compressor);
        b.extend(payload);
        message(id, to, OP_COMPRESSED, &b)
    }
}

#[cfg(test)]
mod tests {
    use super::super::bson::build::{B, doc as bdoc};
    use super::build::{self, message};
    use super::*;

    #[test]
    fn op_msg_sections_and_checksum() {
        let cmd = bdoc(&[("insert", B::S("c")), ("$db", B::S("test"))]);
        let d1 = bdoc(&[("a", B::I(1))]);
        let mut b = 1u32.to_le_bytes().to_vec(); // checksum present
        b.push(0);
        b.extend(&cmd);
        b.push(1);
        let mut seq = b"documents\0".to_vec();
        seq.extend(&d1);
        seq.extend(&d1);
        b.extend(((seq.len() + 4) as i32).to_le_bytes());
        b.extend(seq);
        b.extend([0xde, 0xad, 0xbe, 0xef]);
        let m = message(7, 0, OP_MSG, &b);
        let h = header(&m).unwrap().unwrap();
        assert_eq!((h.len, h.request_id, h.opcode), (m.len(), 7, OP_MSG));
        let Body::Msg {
            body, sequences, ..
        } = body(h.opcode, &m[HEADER..]).unwrap()
        else {
            panic!()
        };
        assert_eq!(body.unwrap().first().unwrap().0, "insert");
        assert_eq!(sequences[0].0, "documents");
        assert_eq!(sequences[0].1.len(), 2);
    }

    #[test]
    fn compressors() {
        let plain = b"hello hello hello hello".to_vec();
        let z = {
            use std::io::Write;
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&plain).unwrap();
            e.finish().unwrap()
        };
        assert_eq!(decompress(2, &z, plain.len(), 1000).unwrap(), plain);
        let s = snap::raw::Encoder::new().compress_vec(&plain).unwrap();
        assert_eq!(decompress(1, &s, plain.len(), 1000).unwrap(), plain);
        assert_eq!(decompress(2, &z, plain.len(), 10), Err(Undecoded::Bad));
        assert_eq!(
            decompress(2, &z, plain.len() - 1, 1000),
            Err(Undecoded::Bad)
        );
        assert_eq!(
            decompress(9, &z, plain.len(), 1000),
            Err(Undecoded::Compressor(9))
        );
        assert_eq!(decompress(3, b"junk", 4, 1000), Err(Undecoded::Bad));
    }

    fn parse(m: &[u8]) -> (Header, Body<'_>) {
        let h = header(m).unwrap().unwrap();
        assert_eq!(h.len, m.len());
        (h, body(h.opcode, &m[HEADER..]).unwrap())
    }

    /// The legacy opcodes' bodies, laid out as the wire protocol reference gives them.
    #[test]
    fn legacy_opcodes() {
        let pen = bdoc(&[("_id", B::I(1)), ("name", B::S("pen"))]);
        let ink = bdoc(&[("_id", B::I(2)), ("name", B::S("ink"))]);
        let sel = bdoc(&[("_id", B::I(1))]);
        let upd = bdoc(&[("$set", B::D(bdoc(&[("qty", B::I(5))])))]);

        // OP_INSERT with ContinueOnError (flag bit 0) and two documents.
        let m = build::insert(11, 1, "shop.items", &[&pen, &ink]);
        let (h, b) = parse(&m);
        assert_eq!((h.request_id, h.response_to, h.opcode), (11, 0, OP_INSERT));
        let Body::Insert { collection, docs } = b else {
            panic!("{b:?}")
        };
        assert_eq!(collection, "shop.items");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0], Doc::read(&pen).unwrap());
        assert_eq!(docs[1].get("name").unwrap().as_str(), Some("ink"));

        // OP_UPDATE with Upsert (flag bit 0).
        let m = build::update(12, "shop.items", 1, &sel, &upd);
        let (h, b) = parse(&m);
        assert_eq!(h.opcode, OP_UPDATE);
        assert_eq!(
            b,
            Body::Update {
                collection: "shop.items",
                selector: Doc::read(&sel).unwrap(),
                update: Doc::read(&upd).unwrap(),
            }
        );

        // OP_DELETE with SingleRemove (flag bit 0).
        let m = build::delete(13, "shop.items", 1, &sel);
        let (h, b) = parse(&m);
        assert_eq!(h.opcode, OP_DELETE);
        assert_eq!(
            b,
            Body::Delete {
                collection: "shop.items",
                selector: Doc::read(&sel).unwrap(),
            }
        );

        let m = build::get_more(14, "shop.items", 10, 0x0102_0304_0506_0708);
        let (h, b) = parse(&m);
        assert_eq!(h.opcode, OP_GET_MORE);
        assert_eq!(
            b,
            Body::GetMore {
                collection: "shop.items",
                limit: 10,
                cursor_id: 0x0102_0304_0506_0708,
            }
        );

        let m = build::kill_cursors(15, &[77, 78]);
        let (h, b) = parse(&m);
        assert_eq!(h.opcode, OP_KILL_CURSORS);
        assert_eq!(b, Body::KillCursors { count: 2 });

        // OP_REPLY with AwaitCapable (flag bit 3), answering request 14.
        let m = build::reply(16, 14, 8, 77, 1, &[&pen, &ink]);
        let (h, b) = parse(&m);
        assert_eq!((h.request_id, h.response_to, h.opcode), (16, 14, OP_REPLY));
        assert_eq!(
            b,
            Body::Reply {
                flags: 8,
                cursor_id: 77,
                starting_from: 1,
                number_returned: 2,
                docs: vec![Doc::read(&pen).unwrap(), Doc::read(&ink).unwrap()],
            }
        );
    }

    /// A legacy message one byte short of its last field is an error, not a message.
    #[test]
    fn truncated_legacy_bodies_are_errors() {
        let sel = bdoc(&[("_id", B::I(1))]);
        for m in [
            build::insert(1, 0, "shop.items", &[&sel]),
            build::update(1, "shop.items", 0, &sel, &sel),
            build::delete(1, "shop.items", 0, &sel),
            build::get_more(1, "shop.items", 0, 77),
            build::kill_cursors(1, &[77, 78]),
            build::reply(1, 0, 0, 0, 0, &[&sel]),
            build::query(1, "shop.items", 0, 0, &sel),
        ] {
            let op = header(&m).unwrap().unwrap().opcode;
            assert!(body(op, &m[HEADER..]).is_ok(), "opcode {op}");
            let short = &m[HEADER..m.len() - 1];
            assert!(
                body(op, short).is_err(),
                "opcode {op}: {:?}",
                body(op, short)
            );
        }
        // A negative numberOfCursorIDs.
        let mut m = build::kill_cursors(1, &[77]);
        m[HEADER + 4..HEADER + 8].copy_from_slice(&(-1i32).to_le_bytes());
        assert!(body(OP_KILL_CURSORS, &m[HEADER..]).is_err());
    }

    #[test]
    fn bad_lengths_are_errors() {
        let mut m = message(1, 0, OP_QUERY, &[0; 4]);
        assert!(body(OP_QUERY, &m[HEADER..]).is_err());
        m[0..4].copy_from_slice(&(-5i32).to_le_bytes());
        assert!(header(&m).is_err());
        assert_eq!(header(&m[..10]).unwrap(), None);
    }
}

//! The CQL native protocol, v3 to v5: frame headers, v5's segments, decompression, and the
//! bodies of the messages connbeat reports.
//!
//! Pure functions over bytes. Bodies are read through [`Reader`], which never trusts a
//! length read off the wire: every read is checked against the bytes present, nesting of
//! column types is bounded, and decompression is bounded by the caller's limit.
//! Written by hand: the crates that speak CQL are client drivers that decode whole result
//! sets into owned rows; connbeat needs a frame's header, its request text and the shape of
//! its result, from as little as a body's first bytes.

use crate::inspect::proto::ParseError;
use serde::Serialize;
use std::collections::BTreeMap;

/// Bytes of a frame header (v3 and later).
pub const HEADER_LEN: usize = 9;
/// Largest body the protocol allows (256 MiB).
pub const MAX_BODY: u32 = 256 * 1024 * 1024;
/// Deepest nesting of column types read.
const MAX_TYPE_DEPTH: usize = 16;
/// Most columns, list elements or map entries read from one body.
const MAX_ITEMS: usize = 4096;
/// Longest string kept from a body (queries, messages).
pub const MAX_TEXT: usize = 16 * 1024;

pub const FLAG_COMPRESS: u8 = 0x01;
pub const FLAG_TRACING: u8 = 0x02;
pub const FLAG_CUSTOM_PAYLOAD: u8 = 0x04;
pub const FLAG_WARNING: u8 = 0x08;

pub mod op {
    pub const ERROR: u8 = 0x00;
    pub const STARTUP: u8 = 0x01;
    pub const READY: u8 = 0x02;
    pub const AUTHENTICATE: u8 = 0x03;
    pub const OPTIONS: u8 = 0x05;
    pub const SUPPORTED: u8 = 0x06;
    pub const QUERY: u8 = 0x07;
    pub const RESULT: u8 = 0x08;
    pub const PREPARE: u8 = 0x09;
    pub const EXECUTE: u8 = 0x0A;
    pub const REGISTER: u8 = 0x0B;
    pub const EVENT: u8 = 0x0C;
    pub const BATCH: u8 = 0x0D;
    pub const AUTH_CHALLENGE: u8 = 0x0E;
    pub const AUTH_RESPONSE: u8 = 0x0F;
    pub const AUTH_SUCCESS: u8 = 0x10;
}

/// The name of an opcode, as Packetbeat writes it.
pub fn op_name(o: u8) -> std::borrow::Cow<'static, str> {
    let s = match o {
        op::ERROR => "ERROR",
        op::STARTUP => "STARTUP",
        op::READY => "READY",
        op::AUTHENTICATE => "AUTHENTICATE",
        op::OPTIONS => "OPTIONS",
        op::SUPPORTED => "SUPPORTED",
        op::QUERY => "QUERY",
        op::RESULT => "RESULT",
        op::PREPARE => "PREPARE",
        op::EXECUTE => "EXECUTE",
        op::REGISTER => "REGISTER",
        op::EVENT => "EVENT",
        op::BATCH => "BATCH",
        op::AUTH_CHALLENGE => "AUTH_CHALLENGE",
        op::AUTH_RESPONSE => "AUTH_RESPONSE",
        op::AUTH_SUCCESS => "AUTH_SUCCESS",
        other => return format!("UNKNOWN_OP_{other}").into(),
    };
    s.into()
}

/// The opcode of a name (`ignored_ops`), case-insensitive.
pub fn op_of(name: &str) -> Option<u8> {
    let n = name.trim().to_ascii_uppercase();
    (0u8..=0x10).find(|&o| op_name(o) == n.as_str() && o != 0x04)
}

/// The header flags as Packetbeat names them (one flag; a combination is `UnknownFlag_N`).
pub fn flags_name(f: u8) -> std::borrow::Cow<'static, str> {
    match f {
        0 => "Default".into(),
        FLAG_COMPRESS => "Compress".into(),
        FLAG_TRACING => "Tracing".into(),
        FLAG_CUSTOM_PAYLOAD => "CustomPayload".into(),
        FLAG_WARNING => "Warning".into(),
        other => format!("UnknownFlag_{other}").into(),
    }
}

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The protocol version (3 to 5).
    pub version: u8,
    /// Sent by the server.
    pub response: bool,
    pub flags: u8,
    pub stream: i16,
    pub op: u8,
    /// Body bytes after the header.
    pub length: u32,
}

/// Reads a frame header at the start of `data`; `None` when fewer than 9 bytes are there.
pub fn header(data: &[u8]) -> Result<Option<Header>, ParseError> {
    if data.len() < HEADER_LEN {
        return Ok(None);
    }
    let version = data[0] & 0x7f;
    if !(3..=5).contains(&version) {
        return Err(ParseError("cassandra: not a CQL v3-v5 frame"));
    }
    let op = data[4];
    if op > op::AUTH_SUCCESS || op == 0x04 {
        return Err(ParseError("cassandra: unknown opcode"));
    }
    let length = u32::from_be_bytes([data[5], data[6], data[7], data[8]]);
    if length > MAX_BODY {
        return Err(ParseError("cassandra: frame longer than 256 MiB"));
    }
    Ok(Some(Header {
        version,
        response: data[0] & 0x80 != 0,
        flags: data[1],
        stream: i16::from_be_bytes([data[2], data[3]]),
        op,
        length,
    }))
}

/// How bodies (v3, v4) or segments (v5) are compressed on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Snappy,
    Lz4,
}

impl Compression {
    /// The `COMPRESSION` value of a STARTUP.
    pub fn from_startup(v: &str) -> Compression {
        match v.to_ascii_lowercase().as_str() {
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            _ => Compression::None,
        }
    }
}

/// Decompresses a v3/v4 body (snappy: raw block; lz4: 4-byte big-endian length, then the
/// block), refusing output larger than `max`.
pub fn decompress(c: Compression, body: &[u8], max: usize) -> Result<Vec<u8>, ParseError> {
    match c {
        Compression::None => Err(ParseError(
            "cassandra: compressed frame, no compressor known",
        )),
        Compression::Snappy => {
            let n = snap::raw::decompress_len(body)
                .map_err(|_| ParseError("cassandra: bad snappy body"))?;
            if n > max {
                return Err(ParseError("cassandra: decompressed body too large"));
            }
            snap::raw::Decoder::new()
                .decompress_vec(body)
                .map_err(|_| ParseError("cassandra: bad snappy body"))
        }
        Compression::Lz4 => {
            let (len, block) = body
                .split_first_chunk::<4>()
                .ok_or(ParseError("cassandra: short lz4 body"))?;
            lz4_block(block, u32::from_be_bytes(*len) as usize, max)
        }
    }
}

fn lz4_block(block: &[u8], n: usize, max: usize) -> Result<Vec<u8>, ParseError> {
    if n > max {
        return Err(ParseError("cassandra: decompressed body too large"));
    }
    lz4_flex::block::decompress(block, n).map_err(|_| ParseError("cassandra: bad lz4 block"))
}

/// A v5 segment (the framing after the STARTUP exchange).
#[derive(Debug, PartialEq, Eq)]
pub struct Segment {
    /// Bytes on the wire: header, payload and its CRC32.
    pub wire_len: usize,
    /// Its payload, decompressed: whole frames when self-contained, else a part of one.
    pub payload: Vec<u8>,
    pub self_contained: bool,
}

/// Reads one v5 segment; `None` when incomplete. With `lz4`, segments carry the 8-byte
/// compressed header. Header CRC24s are checked (a mismatch means the stream is not where
/// connbeat thinks); payload CRC32s are not.
pub fn segment(data: &[u8], lz4: bool) -> Result<Option<Segment>, ParseError> {
    let hlen = if lz4 { 5 } else { 3 };
    if data.len() < hlen + 3 {
        return Ok(None);
    }
    let mut h = 0u64;
    for (i, b) in data[..hlen].iter().enumerate() {
        h |= u64::from(*b) << (8 * i);
    }
    let crc =
        u32::from(data[hlen]) | u32::from(data[hlen + 1]) << 8 | u32::from(data[hlen + 2]) << 16;
    if crc24(&data[..hlen]) != crc {
        return Err(ParseError("cassandra: bad v5 segment header"));
    }
    let len = (h & 0x1ffff) as usize;
    let (raw, self_contained) = if lz4 {
        ((h >> 17) & 0x1ffff, h & (1 << 34) != 0)
    } else {
        (0, h & (1 << 17) != 0)
    };
    let wire_len = hlen + 3 + len + 4;
    if data.len() < wire_len {
        return Ok(None);
    }
    let body = &data[hlen + 3..hlen + 3 + len];
    let payload = if raw == 0 {
        body.to_vec()
    } else {
        lz4_block(body, raw as usize, 128 * 1024)?
    };
    Ok(Some(Segment {
        wire_len,
        payload,
        self_contained,
    }))
}

/// CRC24 of a v5 segment header (polynomial 0x1974F0B, initial value 0x875060).
fn crc24(bytes: &[u8]) -> u32 {
    let mut crc: u32 = 0x0087_5060;
    for &b in bytes {
        crc ^= u32::from(b) << 16;
        for _ in 0..8 {
            crc <<= 1;
            if crc & 0x0100_0000 != 0 {
                crc ^= 0x0197_4F0B;
            }
        }
    }
    crc & 0x00ff_ffff
}

/// Builds a v5 segment header (tests and generators).
pub fn segment_header(payload_len: usize, self_contained: bool) -> [u8; 6] {
    let h = (payload_len as u32 & 0x1ffff) | u32::from(self_contained) << 17;
    let b = [h as u8, (h >> 8) as u8, (h >> 16) as u8];
    let c = crc24(&b);
    [b[0], b[1], b[2], c as u8, (c >> 8) as u8, (c >> 16) as u8]
}

/// Reads the notations of the protocol from a body; every read is bounded by the bytes
/// present.
pub struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

const SHORT: ParseError = ParseError("cassandra: body shorter than its contents");

impl<'a> Reader<'a> {
    pub fn new(b: &'a [u8]) -> Reader<'a> {
        Reader { b, at: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ParseError> {
        let end = self.at.checked_add(n).ok_or(SHORT)?;
        let s = self.b.get(self.at..end).ok_or(SHORT)?;
        self.at = end;
        Ok(s)
    }

    pub fn byte(&mut self) -> Result<u8, ParseError> {
        Ok(self.take(1)?[0])
    }

    pub fn short(&mut self) -> Result<u16, ParseError> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }

    pub fn int(&mut self) -> Result<i32, ParseError> {
        let s = self.take(4)?;
        Ok(i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }

    pub fn string(&mut self) -> Result<String, ParseError> {
        let n = self.short()?;
        Ok(text(self.take(usize::from(n))?))
    }

    pub fn long_string(&mut self) -> Result<String, ParseError> {
        let n = self.int()?;
        let n = usize::try_from(n).map_err(|_| ParseError("cassandra: negative length"))?;
        Ok(text(self.take(n)?))
    }

    /// `[bytes]`: `None` for a negative length (null).
    pub fn bytes(&mut self) -> Result<Option<&'a [u8]>, ParseError> {
        let n = self.int()?;
        match usize::try_from(n) {
            Ok(n) => Ok(Some(self.take(n)?)),
            Err(_) => Ok(None),
        }
    }

    pub fn short_bytes(&mut self) -> Result<&'a [u8], ParseError> {
        let n = self.short()?;
        self.take(usize::from(n))
    }

    pub fn string_list(&mut self) -> Result<Vec<String>, ParseError> {
        let n = usize::from(self.short()?);
        let mut v = Vec::with_capacity(n.min(64));
        for _ in 0..n.min(MAX_ITEMS) {
            v.push(self.string()?);
        }
        Ok(v)
    }

    pub fn string_map(&mut self) -> Result<Vec<(String, String)>, ParseError> {
        let n = usize::from(self.short()?);
        let mut v = Vec::with_capacity(n.min(64));
        for _ in 0..n.min(MAX_ITEMS) {
            v.push((self.string()?, self.string()?));
        }
        Ok(v)
    }

    pub fn string_multimap(&mut self) -> Result<BTreeMap<String, Vec<String>>, ParseError> {
        let n = usize::from(self.short()?);
        let mut m = BTreeMap::new();
        for _ in 0..n.min(MAX_ITEMS) {
            let k = self.string()?;
            m.insert(k, self.string_list()?);
        }
        Ok(m)
    }

    fn bytes_map(&mut self) -> Result<(), ParseError> {
        let n = usize::from(self.short()?);
        for _ in 0..n {
            self.string()?;
            self.bytes()?;
        }
        Ok(())
    }

    /// `[inet]`: the address as text and the port.
    fn inet(&mut self) -> Result<(String, i32), ParseError> {
        let n = self.byte()?;
        let a = self.take(usize::from(n))?;
        let ip = match a.len() {
            4 => std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string(),
            16 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(a);
                std::net::Ipv6Addr::from(o).to_string()
            }
            _ => return Err(ParseError("cassandra: bad inet")),
        };
        Ok((ip, self.int()?))
    }

    /// Skips an `[option]` (a column type), however nested.
    fn option(&mut self, depth: usize) -> Result<(), ParseError> {
        if depth > MAX_TYPE_DEPTH {
            return Err(ParseError("cassandra: column type nested too deep"));
        }
        match self.short()? {
            0x0000 => {
                self.string()?;
            }
            0x0020 | 0x0022 => self.option(depth + 1)?,
            0x0021 => {
                self.option(depth + 1)?;
                self.option(depth + 1)?;
            }
            0x0030 => {
                self.string()?;
                self.string()?;
                for _ in 0..self.short()? {
                    self.string()?;
                    self.option(depth + 1)?;
                }
            }
            0x0031 => {
                for _ in 0..self.short()? {
                    self.option(depth + 1)?;
                }
            }
            0x0001..=0x0015 => {}
            _ => return Err(ParseError("cassandra: unknown column type")),
        }
        Ok(())
    }
}

/// Bytes as text (lossy), at most [`MAX_TEXT`] bytes.
fn text(b: &[u8]) -> String {
    crate::inspect::proto::text(b, MAX_TEXT)
}

/// The part of a body before the message: what the header flags put there.
pub struct Prelude {
    pub warnings: Option<Vec<String>>,
}

/// Reads the tracing id (responses), warnings and custom payload the flags announce.
pub fn prelude(h: &Header, r: &mut Reader<'_>) -> Result<Prelude, ParseError> {
    let mut p = Prelude { warnings: None };
    if h.response && h.flags & FLAG_TRACING != 0 {
        r.take(16)?;
    }
    if h.response && h.flags & FLAG_WARNING != 0 {
        p.warnings = Some(r.string_list()?);
    }
    if h.flags & FLAG_CUSTOM_PAYLOAD != 0 {
        r.bytes_map()?;
    }
    Ok(p)
}

/// What a request body says (only what is reported; AUTH_RESPONSE's token is never read).
#[derive(Debug, Default, PartialEq)]
pub struct Request {
    /// QUERY and PREPARE.
    pub query: Option<String>,
    /// STARTUP's COMPRESSION.
    pub compression: Option<Compression>,
    /// EXECUTE's prepared statement id, as `prepared_id` is written.
    pub prepared_id: Option<String>,
}

/// Reads the body of a request with opcode `op`.
pub fn request(h: &Header, body: &[u8]) -> Result<Request, ParseError> {
    let mut r = Reader::new(body);
    prelude(h, &mut r)?;
    let mut q = Request::default();
    match h.op {
        op::QUERY | op::PREPARE => q.query = Some(r.long_string()?),
        op::EXECUTE => q.prepared_id = Some(uuid_or_hex(r.short_bytes()?)),
        op::STARTUP => {
            let opts = r.string_map()?;
            let c = opts
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("COMPRESSION"))
                .map_or(Compression::None, |(_, v)| Compression::from_startup(v));
            q.compression = Some(c);
        }
        _ => {}
    }
    Ok(q)
}

/// `cassandra.response.*` of a response body, in Packetbeat's names.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Response {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<ResultData>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorData>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supported: Option<BTreeMap<String, Vec<String>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication: Option<Authentication>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<EventData>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<String>>,
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct ResultData {
    pub r#type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<Rows>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyspace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepared: Option<Prepared>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_change: Option<SchemaChange>,
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Rows {
    pub meta: Meta,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_rows: Option<i32>,
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Meta {
    pub flags: String,
    pub col_count: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pkey_columns: Option<Vec<u16>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paging_state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyspace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Prepared {
    pub prepared_id: String,
    pub req_meta: Meta,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resp_meta: Option<Meta>,
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct SchemaChange {
    pub change: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyspace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct ErrorData {
    pub code: i32,
    pub msg: String,
    pub r#type: &'static str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<&'static str, serde_json::Value>,
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Authentication {
    pub class: String,
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct EventData {
    pub r#type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_change: Option<SchemaChange>,
}

/// Packetbeat's name of an error code.
pub fn error_type(code: i32) -> &'static str {
    match code {
        0x0000 => "errServer",
        0x000A => "errProtocol",
        0x0100 => "errCredentials",
        0x1000 => "errUnavailable",
        0x1001 => "errOverloaded",
        0x1002 => "errBootstrapping",
        0x1003 => "errTruncate",
        0x1100 => "errWriteTimeout",
        0x1200 => "errReadTimeout",
        0x1300 => "errReadFailure",
        0x1400 => "errFunctionFailure",
        0x1500 => "errWriteFailure",
        0x2000 => "errSyntax",
        0x2100 => "errUnauthorized",
        0x2200 => "errInvalid",
        0x2300 => "errConfig",
        0x2400 => "errAlreadyExists",
        0x2500 => "errUnprepared",
        _ => "ErrUnknown",
    }
}

fn consistency(c: u16) -> String {
    match c {
        0x00 => "ANY".into(),
        0x01 => "ONE".into(),
        0x02 => "TWO".into(),
        0x03 => "THREE".into(),
        0x04 => "QUORUM".into(),
        0x05 => "ALL".into(),
        0x06 => "LOCAL_QUORUM".into(),
        0x07 => "EACH_QUORUM".into(),
        0x08 => "SERIAL".into(),
        0x09 => "LOCAL_SERIAL".into(),
        0x0A => "LOCAL_ONE".into(),
        other => format!("UNKNOWN_CONS_0x{other:x}"),
    }
}

fn row_flags(f: i32) -> String {
    match f {
        1 => "GlobalTableSpec".into(),
        2 => "HasMorePages".into(),
        4 => "NoMetaData".into(),
        other => format!("FLAG_{other}"),
    }
}

fn uuid_or_hex(b: &[u8]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    if b.len() == 16 {
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    } else {
        h
    }
}

/// Reads result metadata; `prepared` for the bind-variable metadata of a PREPARED result
/// (primary-key indexes, no paging state).
fn metadata(r: &mut Reader<'_>, version: u8, prepared: bool) -> Result<Meta, ParseError> {
    let flags = r.int()?;
    let cols = r.int()?;
    let mut m = Meta {
        flags: row_flags(flags),
        col_count: cols,
        ..Meta::default()
    };
    if prepared && version >= 4 {
        let n = usize::try_from(r.int()?).map_err(|_| SHORT)?;
        let mut pk = Vec::with_capacity(n.min(64));
        for _ in 0..n.min(MAX_ITEMS) {
            pk.push(r.short()?);
        }
        m.pkey_columns = Some(pk);
    }
    if !prepared && flags & 0x02 != 0 {
        m.paging_state = r
            .bytes()?
            .map(|b| b.iter().map(|x| format!("{x:02X}")).collect());
    }
    if version >= 5 && flags & 0x08 != 0 {
        r.short_bytes()?; // new_metadata_id
    }
    if flags & 0x04 != 0 {
        return Ok(m);
    }
    let global = flags & 0x01 != 0;
    if global {
        m.keyspace = Some(r.string()?);
        m.table = Some(r.string()?);
    }
    let cols = usize::try_from(cols).map_err(|_| ParseError("cassandra: negative column count"))?;
    if cols > MAX_ITEMS {
        return Err(ParseError("cassandra: too many columns"));
    }
    for _ in 0..cols {
        if !global {
            r.string()?;
            r.string()?;
        }
        r.string()?;
        r.option(0)?;
    }
    Ok(m)
}

fn schema_change(r: &mut Reader<'_>) -> Result<SchemaChange, ParseError> {
    let change = r.string()?;
    let target = r.string()?;
    let mut s = SchemaChange {
        change,
        ..SchemaChange::default()
    };
    match target.as_str() {
        "KEYSPACE" => s.keyspace = Some(r.string()?),
        "TABLE" | "TYPE" => {
            s.keyspace = Some(r.string()?);
            s.object = Some(r.string()?);
        }
        "FUNCTION" | "AGGREGATE" => {
            s.keyspace = Some(r.string()?);
            s.name = Some(r.string()?);
            s.args = Some(r.string_list()?);
        }
        _ => {}
    }
    s.target = Some(target);
    Ok(s)
}

fn error(r: &mut Reader<'_>) -> Result<ErrorData, ParseError> {
    let code = r.int()?;
    let msg = r.string()?;
    let mut d: BTreeMap<&'static str, serde_json::Value> = BTreeMap::new();
    // The details are read as far as they go: an error is reported even when they are cut.
    let _ = (|| -> Result<(), ParseError> {
        match code {
            0x1000 => {
                d.insert("read_consistency", consistency(r.short()?).into());
                d.insert("required", r.int()?.into());
                d.insert("alive", r.int()?.into());
            }
            0x1100 => {
                d.insert("read_consistency", consistency(r.short()?).into());
                d.insert("received", r.int()?.into());
                d.insert("blockfor", r.int()?.into());
                d.insert("write_type", r.string()?.into());
            }
            0x1200 => {
                d.insert("read_consistency", consistency(r.short()?).into());
                d.insert("received", r.int()?.into());
                d.insert("blockfor", r.int()?.into());
                d.insert("data_present", (r.byte()? != 0).into());
            }
            0x1300 => {
                d.insert("read_consistency", consistency(r.short()?).into());
                d.insert("received", r.int()?.into());
                d.insert("blockfor", r.int()?.into());
                d.insert("num_failures", r.int()?.into());
                d.insert("data_present", (r.byte()? != 0).into());
            }
            0x1500 => {
                d.insert("read_consistency", consistency(r.short()?).into());
                d.insert("received", r.int()?.into());
                d.insert("blockfor", r.int()?.into());
                d.insert("num_failures", r.int()?.into());
                d.insert("write_type", r.string()?.into());
            }
            0x1400 => {
                d.insert("keyspace", r.string()?.into());
                d.insert("function", r.string()?.into());
                d.insert("arg_types", r.string_list()?.into());
            }
            0x2400 => {
                d.insert("keyspace", r.string()?.into());
                d.insert("table", r.string()?.into());
            }
            0x2500 => {
                d.insert("stmt_id", uuid_or_hex(r.short_bytes()?).into());
            }
            _ => {}
        }
        Ok(())
    })();
    Ok(ErrorData {
        code,
        msg,
        r#type: error_type(code),
        details: d,
    })
}

/// Reads a response body. A RESULT of rows is read up to its row count: `body` may be only
/// the start of a long frame.
pub fn response(h: &Header, body: &[u8]) -> Result<Response, ParseError> {
    let mut r = Reader::new(body);
    let p = prelude(h, &mut r)?;
    let mut out = Response {
        warnings: p.warnings,
        ..Response::default()
    };
    match h.op {
        op::ERROR => out.error = Some(error(&mut r)?),
        op::RESULT => {
            let kind = r.int()?;
            let mut res = ResultData::default();
            match kind {
                1 => res.r#type = "void",
                2 => {
                    res.r#type = "rows";
                    let meta = metadata(&mut r, h.version, false)?;
                    res.rows = Some(Rows {
                        meta,
                        num_rows: Some(r.int()?),
                    });
                }
                3 => {
                    res.r#type = "set_keyspace";
                    res.keyspace = Some(r.string()?);
                }
                4 => {
                    res.r#type = "prepared";
                    let id = uuid_or_hex(r.short_bytes()?);
                    if h.version >= 5 {
                        r.short_bytes()?; // result_metadata_id
                    }
                    let req_meta = metadata(&mut r, h.version, true)?;
                    let resp_meta = Some(metadata(&mut r, h.version, false)?);
                    res.prepared = Some(Prepared {
                        prepared_id: id,
                        req_meta,
                        resp_meta,
                    });
                }
                5 => {
                    res.r#type = "schemaChanged";
                    res.schema_change = Some(schema_change(&mut r)?);
                }
                _ => return Err(ParseError("cassandra: unknown result kind")),
            }
            out.result = Some(res);
        }
        op::SUPPORTED => out.supported = Some(r.string_multimap()?),
        op::AUTHENTICATE => {
            out.authentication = Some(Authentication { class: r.string()? });
        }
        op::EVENT => {
            let t = r.string()?;
            let mut e = EventData::default();
            match t.as_str() {
                "TOPOLOGY_CHANGE" | "STATUS_CHANGE" => {
                    e.change = Some(r.string()?);
                    let (host, port) = r.inet()?;
                    e.host = Some(host);
                    e.port = Some(port);
                }
                "SCHEMA_CHANGE" => e.schema_change = Some(schema_change(&mut r)?),
                _ => {}
            }
            e.r#type = t;
            out.event = Some(e);
        }
        _ => {}
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(version: u8, flags: u8, stream: i16, op: u8, body: &[u8]) -> Vec<u8> {
        let mut f = vec![version, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.push(op);
        f.extend_from_slice(&(body.len() as u32).to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn headers_of_v3_to_v5_and_garbage() {
        let f = frame(0x84, 0, 7, op::RESULT, b"\0\0\0\x01");
        let h = header(&f).unwrap().unwrap();
        assert_eq!((h.version, h.response, h.stream, h.length), (4, true, 7, 4));
        assert!(header(&f[..8]).unwrap().is_none());
        assert!(header(b"GET / HTTP/1.1\r\n").is_err());
        assert!(
            header(&frame(0x02, 0, 0, op::QUERY, b"")).is_err(),
            "v2 is not read"
        );
        assert_eq!(op_of("register"), Some(op::REGISTER));
        assert_eq!(op_of("nope"), None);
    }

    #[test]
    fn rows_metadata_is_read_through_the_column_specs() {
        // flags GlobalTableSpec, 2 columns: (a int), (m map<text, list<int>>), then 3 rows.
        let mut b = vec![0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2];
        for s in ["ks", "t", "a"] {
            b.extend_from_slice(&(s.len() as u16).to_be_bytes());
            b.extend_from_slice(s.as_bytes());
        }
        b.extend_from_slice(&[0, 9, 0, 1, b'm', 0, 0x21, 0, 0x0d, 0, 0x20, 0, 9]);
        b.extend_from_slice(&3i32.to_be_bytes());
        let h = header(&frame(0x84, 0, 1, op::RESULT, &b)).unwrap().unwrap();
        let r = response(&h, &b).unwrap();
        let res = r.result.unwrap();
        assert_eq!(res.r#type, "rows");
        let rows = res.rows.unwrap();
        assert_eq!(rows.num_rows, Some(3));
        assert_eq!(rows.meta.keyspace.as_deref(), Some("ks"));
        assert_eq!(rows.meta.flags, "GlobalTableSpec");
        assert!(response(&h, &b[..b.len() - 2]).is_err());
    }

    #[test]
    fn segments_round_trip_and_bad_headers_are_refused() {
        let f = frame(0x05, 0, 1, op::OPTIONS, b"");
        let mut s = segment_header(f.len(), true).to_vec();
        s.extend_from_slice(&f);
        s.extend_from_slice(&[0; 4]);
        let seg = segment(&s, false).unwrap().unwrap();
        assert_eq!(seg.payload, f);
        assert!(seg.self_contained);
        assert_eq!(seg.wire_len, s.len());
        assert!(segment(&s[..s.len() - 1], false).unwrap().is_none());
        s[3] ^= 1;
        assert!(segment(&s, false).is_err());
    }
}

//! Memcache wire messages, text and binary: one message at the start of a buffer, read
//! into the `memcache.request` / `memcache.response` object Packetbeat writes.
//!
//! Hand-written: no crate parses both memcache protocols from captured bytes (client
//! crates read only their own replies). Pure: bytes in, a message out, nothing kept. A
//! value's bytes are copied only when `maxvalues` asks for them, and never for SASL
//! requests (credentials); a value not kept may lie beyond the buffer, and the message's
//! `len` then says how far to skip.

use crate::inspect::proto::ParseError;
use base64::Engine;
use serde::Serialize;

/// Longest text command line accepted.
pub const MAX_LINE: usize = 64 * 1024;
/// Size of the binary protocol's header.
const HEADER: usize = 24;
/// Size of the UDP frame header.
pub const UDP_HEADER: usize = 8;

/// What the parser keeps of values (Packetbeat's `maxvalues`, `maxbytespervalue`,
/// `parseunknown`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Values kept per message: 0 none, negative all.
    pub max_values: i64,
    /// Bytes kept of one value (0: all).
    pub max_bytes_per_value: usize,
    /// An unknown text command is reported (`UNKNOWN`) instead of a parse error.
    pub parse_unknown: bool,
}

impl Limits {
    fn keeps(&self, already: usize) -> bool {
        self.max_values < 0 || (already as i64) < self.max_values
    }
}

/// One `{name, value}` of a stats response.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stat {
    pub name: String,
    pub value: String,
}

/// The `memcache.request` or `memcache.response` object (Packetbeat's names).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct McMsg {
    pub command: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opcode: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opcode_value: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opaque: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vbucket: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quiet: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flags: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exptime: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count_values: Option<u32>,
    /// Kept values, base64 (as Packetbeat writes them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cas_unique: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noreply: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial: Option<u64>,
    /// A counter's new value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verbosity: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_args: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_msg: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stats: Vec<Stat>,
    /// The line of an unknown command (`parseunknown`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
}

impl McMsg {
    /// The JSON object `Serialize` writes, written directly (see `McTxn::write_json`).
    pub fn write_json(&self, out: &mut String) {
        use crate::event::push_json_str as string;
        let mut n = itoa::Buffer::new();
        let key = |out: &mut String, k: &str| {
            out.push_str(",\"");
            out.push_str(k);
            out.push_str("\":");
        };
        out.push_str("{\"command\":");
        string(out, self.command);
        out.push_str(",\"type\":");
        string(out, self.kind);
        if let Some(v) = self.opcode {
            key(out, "opcode");
            string(out, v);
        }
        let ints = [
            ("opcode_value", self.opcode_value.map(u64::from)),
            ("opaque", self.opaque.map(u64::from)),
            ("vbucket", self.vbucket.map(u64::from)),
        ];
        for (k, v) in ints {
            if let Some(v) = v {
                key(out, k);
                out.push_str(n.format(v));
            }
        }
        if let Some(v) = self.quiet {
            key(out, "quiet");
            out.push_str(if v { "true" } else { "false" });
        }
        if let Some(v) = self.status {
            key(out, "status");
            string(out, v);
        }
        if let Some(v) = self.status_code {
            key(out, "status_code");
            out.push_str(n.format(v));
        }
        let list = |out: &mut String, items: &[String]| {
            out.push('[');
            for (i, s) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                string(out, s);
            }
            out.push(']');
        };
        if !self.keys.is_empty() {
            key(out, "keys");
            list(out, &self.keys);
        }
        let ints = [
            ("flags", self.flags.map(u64::from)),
            ("exptime", self.exptime.map(u64::from)),
            ("bytes", self.bytes),
            ("count_values", self.count_values.map(u64::from)),
        ];
        for (k, v) in ints {
            if let Some(v) = v {
                key(out, k);
                out.push_str(n.format(v));
            }
        }
        if !self.values.is_empty() {
            key(out, "values");
            list(out, &self.values);
        }
        if let Some(v) = self.cas_unique {
            key(out, "cas_unique");
            out.push_str(n.format(v));
        }
        if let Some(v) = self.noreply {
            key(out, "noreply");
            out.push_str(if v { "true" } else { "false" });
        }
        let ints = [
            ("delta", self.delta),
            ("initial", self.initial),
            ("value", self.value),
            ("verbosity", self.verbosity),
        ];
        for (k, v) in ints {
            if let Some(v) = v {
                key(out, k);
                out.push_str(n.format(v));
            }
        }
        let texts = [
            ("version", &self.version),
            ("raw_args", &self.raw_args),
            ("error_msg", &self.error_msg),
        ];
        for (k, v) in texts {
            if let Some(v) = v {
                key(out, k);
                string(out, v);
            }
        }
        if !self.stats.is_empty() {
            key(out, "stats");
            out.push('[');
            for (i, s) in self.stats.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"name\":");
                string(out, &s.name);
                out.push_str(",\"value\":");
                string(out, &s.value);
                out.push('}');
            }
            out.push(']');
        }
        if let Some(v) = &self.line {
            key(out, "line");
            string(out, v);
        }
        out.push('}');
    }
}

/// What a text response says about its request's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// `ERROR`, `NOT_FOUND`, `NOT_STORED`.
    Fail,
    /// `CLIENT_ERROR`, `SAME`.
    ClientError,
    /// `SERVER_ERROR`, `BUSY`, ...
    ServerError,
}

/// How a response continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The whole response.
    Whole,
    /// `VALUE`: more values or `END` follow.
    Value,
    /// `STAT` (text), or a binary stat with a key: more follow until `END` / an empty key.
    Stat,
    /// `END`, closing a text list.
    End,
}

/// One parsed message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Bytes it takes on the wire (may exceed the buffer when a value is skipped).
    pub len: usize,
    pub binary: bool,
    pub request: bool,
    /// Binary: opcode, opaque, status; used for pairing and status.
    pub opcode: u8,
    pub opaque: u32,
    pub status: u16,
    /// Binary quiet opcode, or text `noreply`: the server may not answer.
    pub silent: bool,
    /// Text `quit` or binary `QuitQ`: no answer ever.
    pub quit: bool,
    pub outcome: Outcome,
    pub part: Part,
    /// Value bytes counted for `count_values`/`bytes` but not kept.
    pub values_dropped: u32,
    pub fields: McMsg,
}

/// Whether the buffer starts with a binary message (by its magic byte).
pub fn is_binary(data: &[u8]) -> bool {
    matches!(data.first(), Some(0x80 | 0x81))
}

/// Parses one message at the start of `data`. `request` says which side sent it. `Ok(None)`:
/// more bytes are needed.
pub fn message(data: &[u8], request: bool, l: &Limits) -> Result<Option<Message>, ParseError> {
    if is_binary(data) {
        binary(data, request, l)
    } else {
        text(data, request, l)
    }
}

/// The UDP frame header: request id, sequence number, number of datagrams.
pub fn udp_header(d: &[u8]) -> Option<(u16, u16, u16)> {
    if d.len() < UDP_HEADER {
        return None;
    }
    let u = |i: usize| u16::from_be_bytes([d[i], d[i + 1]]);
    Some((u(0), u(2), u(4)))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn keep_value(m: &mut McMsg, dropped: &mut u32, v: Option<&[u8]>, l: &Limits) {
    *m.count_values.get_or_insert(0) += 1;
    match v {
        Some(v) if l.keeps(m.values.len()) => {
            let cut = if l.max_bytes_per_value == 0 {
                v.len()
            } else {
                v.len().min(l.max_bytes_per_value)
            };
            m.values
                .push(base64::engine::general_purpose::STANDARD.encode(&v[..cut]));
        }
        _ if l.max_values != 0 => *dropped += 1,
        _ => {}
    }
}

// ---- text protocol ----

fn find_line(data: &[u8]) -> Result<Option<(&[u8], usize)>, ParseError> {
    match memchr_nl(data) {
        Some(i) => {
            let line = &data[..i];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            Ok(Some((line, i + 1)))
        }
        None if data.len() > MAX_LINE => Err(ParseError("memcache: line too long")),
        None => Ok(None),
    }
}

fn memchr_nl(d: &[u8]) -> Option<usize> {
    d.iter().position(|&b| b == b'\n')
}

fn num<T: std::str::FromStr>(tok: Option<&[u8]>) -> Result<T, ParseError> {
    tok.and_then(|t| std::str::from_utf8(t).ok())
        .and_then(|s| s.parse().ok())
        .ok_or(ParseError("memcache: bad number"))
}

/// The text commands a client sends: name, Packetbeat's `command` and `type`.
const REQUESTS: &[(&str, &str)] = &[
    ("get", "Load"),
    ("gets", "Load"),
    ("set", "Store"),
    ("add", "Store"),
    ("replace", "Store"),
    ("append", "Store"),
    ("prepend", "Store"),
    ("cas", "Store"),
    ("incr", "Counter"),
    ("decr", "Counter"),
    ("touch", "Store"),
    ("delete", "Delete"),
    ("flush_all", "Delete"),
    ("stats", "Stats"),
    ("verbosity", "Info"),
    ("version", "Info"),
    ("quit", "Info"),
    ("slabs", "SlabCtrl"),
    ("lru_crawler", "LRUCrawler"),
];

/// The text responses: name, `type`, outcome.
const RESPONSES: &[(&str, &str, Outcome)] = &[
    ("VALUE", "Load", Outcome::Ok),
    ("END", "Load", Outcome::Ok),
    ("STORED", "Success", Outcome::Ok),
    ("NOT_STORED", "Fail", Outcome::Fail),
    ("EXISTS", "Success", Outcome::Ok),
    ("NOT_FOUND", "Fail", Outcome::Fail),
    ("TOUCHED", "Success", Outcome::Ok),
    ("DELETED", "Success", Outcome::Ok),
    ("OK", "Success", Outcome::Ok),
    ("ERROR", "Fail", Outcome::Fail),
    ("CLIENT_ERROR", "Fail", Outcome::ClientError),
    ("SERVER_ERROR", "Fail", Outcome::ServerError),
    ("BUSY", "Fail", Outcome::ServerError),
    ("BADCLASS", "Fail", Outcome::ServerError),
    ("NOSPARE", "Fail", Outcome::ServerError),
    ("NOTFULL", "Fail", Outcome::ServerError),
    ("UNSAFE", "Fail", Outcome::ServerError),
    ("SAME", "Fail", Outcome::ClientError),
    ("STAT", "Stats", Outcome::Ok),
    ("VERSION", "Info", Outcome::Ok),
];

fn text(data: &[u8], request: bool, l: &Limits) -> Result<Option<Message>, ParseError> {
    let Some((line, line_len)) = find_line(data)? else {
        return Ok(None);
    };
    let mut toks = line
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|t| !t.is_empty());
    let Some(cmd) = toks.next() else {
        return Err(ParseError("memcache: empty line"));
    };
    let args: Vec<&[u8]> = toks.collect();
    let rest = line
        .get(cmd.len()..)
        .map(|r| r.trim_ascii_start())
        .unwrap_or_default();
    let mut msg = Message {
        len: line_len,
        binary: false,
        request,
        opcode: 0,
        opaque: 0,
        status: 0,
        silent: false,
        quit: false,
        outcome: Outcome::Ok,
        part: Part::Whole,
        values_dropped: 0,
        fields: McMsg::default(),
    };
    let found = if request {
        REQUESTS
            .iter()
            .find(|(n, _)| n.as_bytes() == cmd)
            .map(|&(n, t)| (n, t))
    } else if cmd.first().is_some_and(u8::is_ascii_digit) {
        Some(("<counter_op_res>", "Counter"))
    } else {
        RESPONSES
            .iter()
            .find(|(n, ..)| n.as_bytes() == cmd)
            .map(|&(n, t, o)| {
                msg.outcome = o;
                (n, t)
            })
    };
    let Some((name, kind)) = found else {
        if !l.parse_unknown {
            return Err(ParseError("memcache: unknown command"));
        }
        msg.fields.command = "UNKNOWN";
        msg.fields.kind = "UNKNOWN";
        msg.fields.line = Some(lossy(line));
        return Ok(Some(msg));
    };
    let f = &mut msg.fields;
    f.command = name;
    f.kind = kind;
    let noreply = request && args.last().is_some_and(|a| *a == b"noreply");
    if noreply {
        f.noreply = Some(true);
        msg.silent = true;
    }
    let arg = |i: usize| args.get(i).copied();
    let mut data_len: Option<usize> = None;
    match name {
        "get" | "gets" => {
            if args.is_empty() {
                return Err(ParseError("memcache: get without keys"));
            }
            f.keys = args.iter().map(|k| lossy(k)).collect();
        }
        "set" | "add" | "replace" | "append" | "prepend" | "cas" => {
            f.keys = vec![lossy(arg(0).ok_or(ParseError("memcache: no key"))?)];
            f.flags = Some(num(arg(1))?);
            f.exptime = Some(num(arg(2))?);
            let n: u32 = num(arg(3))?;
            f.bytes = Some(u64::from(n));
            if name == "cas" {
                f.cas_unique = Some(num(arg(4))?);
            }
            data_len = Some(n as usize);
        }
        "incr" | "decr" => {
            f.keys = vec![lossy(arg(0).ok_or(ParseError("memcache: no key"))?)];
            f.delta = Some(num(arg(1))?);
        }
        "touch" => {
            f.keys = vec![lossy(arg(0).ok_or(ParseError("memcache: no key"))?)];
            f.exptime = Some(num(arg(1))?);
        }
        "delete" => {
            f.keys = vec![lossy(arg(0).ok_or(ParseError("memcache: no key"))?)];
        }
        "flush_all" => {
            if let Some(t) = arg(0).filter(|a| *a != b"noreply") {
                f.exptime = Some(num(Some(t))?);
            }
        }
        "verbosity" => f.verbosity = Some(num(arg(0))?),
        "quit" => msg.quit = true,
        "stats" | "slabs" | "lru_crawler" => f.raw_args = Some(lossy(rest)),
        "VALUE" => {
            f.keys = vec![lossy(arg(0).ok_or(ParseError("memcache: no key"))?)];
            f.flags = Some(num(arg(1))?);
            let n: u32 = num(arg(2))?;
            f.bytes = Some(u64::from(n));
            if arg(3).is_some() {
                f.cas_unique = Some(num(arg(3))?);
            }
            data_len = Some(n as usize);
            msg.part = Part::Value;
        }
        "END" => msg.part = Part::End,
        "STAT" => {
            f.stats.push(Stat {
                name: lossy(arg(0).unwrap_or_default()),
                value: lossy(arg(1).unwrap_or_default()),
            });
            msg.part = Part::Stat;
        }
        "VERSION" => f.version = Some(lossy(rest)),
        "<counter_op_res>" => f.value = Some(num(Some(cmd))?),
        "CLIENT_ERROR" | "SERVER_ERROR" | "BUSY" | "BADCLASS" | "NOSPARE" | "NOTFULL"
        | "UNSAFE" | "SAME" => f.error_msg = Some(lossy(rest)),
        _ => {}
    }
    if let Some(n) = data_len {
        let total = line_len
            .checked_add(n)
            .and_then(|t| t.checked_add(2))
            .ok_or(ParseError("memcache: value too large"))?;
        let wanted = l.max_values != 0 && l.keeps(0);
        if data.len() >= total {
            if &data[total - 2..total] != b"\r\n" {
                return Err(ParseError("memcache: value not ended by CRLF"));
            }
            let v = &data[line_len..line_len + n];
            keep_value(&mut msg.fields, &mut msg.values_dropped, Some(v), l);
        } else if wanted {
            return Ok(None);
        } else {
            keep_value(&mut msg.fields, &mut msg.values_dropped, None, l);
        }
        msg.len = total;
    }
    Ok(Some(msg))
}

// ---- binary protocol ----

/// Packetbeat's name of a binary opcode.
pub fn opcode_name(op: u8) -> &'static str {
    match op {
        0x00 => "Get",
        0x01 => "Set",
        0x02 => "Add",
        0x03 => "Replace",
        0x04 => "Delete",
        0x05 => "Increment",
        0x06 => "Decrement",
        0x07 => "Quit",
        0x08 => "Flush",
        0x09 => "GetQ",
        0x0a => "No-op",
        0x0b => "Version",
        0x0c => "GetK",
        0x0d => "GetKQ",
        0x0e => "Append",
        0x0f => "Prepend",
        0x10 => "Stat",
        0x11 => "SetQ",
        0x12 => "AddQ",
        0x13 => "ReplaceQ",
        0x14 => "DeleteQ",
        0x15 => "IncrementQ",
        0x16 => "DecrementQ",
        0x17 => "QuitQ",
        0x18 => "FlushQ",
        0x19 => "AppendQ",
        0x1a => "PrependQ",
        0x1b => "Verbosity",
        0x1c => "Touch",
        0x1d => "GAT",
        0x1e => "GATQ",
        0x20 => "SASL list mechs",
        0x21 => "SASL Auth",
        0x22 => "SASL Step",
        0x23 => "GatK",
        0x24 => "GatKQ",
        _ => "UNKNOWN",
    }
}

fn quiet(op: u8) -> bool {
    matches!(op, 0x09 | 0x0d | 0x11..=0x1a | 0x1e | 0x24)
}

/// Packetbeat's `command` and `type` of a binary opcode.
fn binary_command(op: u8) -> (&'static str, &'static str) {
    match op {
        0x00 | 0x09 | 0x0c | 0x0d => ("get", "Load"),
        0x1d | 0x1e | 0x23 | 0x24 => ("touch", "Load"),
        0x01 | 0x11 => ("set", "Store"),
        0x02 | 0x12 => ("add", "Store"),
        0x03 | 0x13 => ("replace", "Store"),
        0x0e | 0x19 => ("append", "Store"),
        0x0f | 0x1a => ("prepend", "Store"),
        0x1c => ("touch", "Store"),
        0x04 | 0x14 | 0x08 | 0x18 => ("delete", "Delete"),
        0x05 | 0x15 => ("incr", "Counter"),
        0x06 | 0x16 => ("decr", "Counter"),
        0x07 | 0x17 => ("quit", "Info"),
        0x0a => ("noop", "Info"),
        0x0b => ("version", "Info"),
        0x1b => ("verbosity", "Info"),
        0x10 => ("stats", "Stats"),
        0x20 => ("sasl_list", "Auth"),
        0x21 => ("sasl_auth", "Auth"),
        0x22 => ("sasl_step", "Auth"),
        _ => ("UNKNOWN", "UNKNOWN"),
    }
}

/// Packetbeat's name of a binary response status.
pub fn status_name(s: u16) -> &'static str {
    match s {
        0x00 => "Success",
        0x01 => "Key not found",
        0x02 => "Key exists",
        0x03 => "Value too large",
        0x04 => "Invalid arguments",
        0x05 => "Item not stored",
        0x06 => "Incr/Decr on non-numeric value.",
        0x07 => "The vbucket belongs to another server",
        0x20 => "Authentication error",
        0x21 => "Authentication continue",
        0x81 => "Unknown command",
        0x82 => "Out of memory",
        0x83 => "Not supported",
        0x84 => "Internal error",
        0x85 => "Busy",
        0x86 => "Temporary failure",
        _ => "UNKNOWN",
    }
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn binary(data: &[u8], request: bool, l: &Limits) -> Result<Option<Message>, ParseError> {
    if data.len() < HEADER {
        return Ok(None);
    }
    let magic_request = data[0] == 0x80;
    if magic_request != request {
        return Err(ParseError("memcache: binary magic of the other direction"));
    }
    let op = data[1];
    let key_len = usize::from(u16::from_be_bytes([data[2], data[3]]));
    let extras_len = usize::from(data[4]);
    let vb_or_status = u16::from_be_bytes([data[6], data[7]]);
    let body = be32(data, 8).unwrap_or(0) as usize;
    let opaque = be32(data, 12).unwrap_or(0);
    let cas = be64(data, 16).unwrap_or(0);
    let value_len = body
        .checked_sub(extras_len + key_len)
        .ok_or(ParseError("memcache: binary lengths disagree"))?;
    let head = HEADER + extras_len + key_len;
    if data.len() < head {
        return Ok(None);
    }
    let total = HEADER + body;
    let (command, kind) = binary_command(op);
    let extras = &data[HEADER..HEADER + extras_len];
    let key = &data[HEADER + extras_len..head];
    let mut msg = Message {
        len: total,
        binary: true,
        request,
        opcode: op,
        opaque,
        status: if request { 0 } else { vb_or_status },
        silent: request && quiet(op),
        quit: request && op == 0x17,
        outcome: Outcome::Ok,
        part: Part::Whole,
        values_dropped: 0,
        fields: McMsg {
            command,
            kind,
            opcode: Some(opcode_name(op)),
            opcode_value: Some(op),
            opaque: Some(opaque),
            ..McMsg::default()
        },
    };
    let f = &mut msg.fields;
    if request {
        f.quiet = Some(quiet(op));
        f.vbucket = Some(vb_or_status);
    } else {
        f.status = Some(status_name(vb_or_status));
        f.status_code = Some(vb_or_status);
    }
    if cas != 0 {
        f.cas_unique = Some(cas);
    }
    if !key.is_empty() {
        f.keys = vec![lossy(key)];
    }
    // Extras, by opcode and direction.
    match (request, op) {
        (true, 0x01..=0x03 | 0x11..=0x13) => {
            f.flags = be32(extras, 0);
            f.exptime = be32(extras, 4);
        }
        (true, 0x05 | 0x06 | 0x15 | 0x16) => {
            f.delta = be64(extras, 0);
            f.initial = be64(extras, 8);
            f.exptime = be32(extras, 16);
        }
        (true, 0x08 | 0x18 | 0x1c | 0x1d | 0x1e | 0x23 | 0x24) => f.exptime = be32(extras, 0),
        (true, 0x1b) => f.verbosity = be32(extras, 0).map(u64::from),
        (false, 0x00 | 0x09 | 0x0c | 0x0d | 0x1d | 0x1e | 0x23 | 0x24) => f.flags = be32(extras, 0),
        _ => {}
    }
    // The value: some responses are read whole (small); SASL values are never kept.
    let whole = !request && matches!(op, 0x05 | 0x06 | 0x15 | 0x16 | 0x0b | 0x10);
    let secret = matches!(op, 0x21 | 0x22);
    if value_len > 0 {
        if whole {
            if data.len() < total {
                return Ok(None);
            }
            let v = &data[head..total];
            match op {
                0x0b => f.version = Some(lossy(v)),
                0x10 => {
                    f.stats.push(Stat {
                        name: f.keys.first().cloned().unwrap_or_default(),
                        value: lossy(v),
                    });
                }
                _ => f.value = be64(v, 0),
            }
        } else {
            f.bytes = Some(value_len as u64);
            let wanted = !secret && l.max_values != 0;
            if data.len() >= total && !secret {
                keep_value(f, &mut msg.values_dropped, Some(&data[head..total]), l);
            } else if wanted {
                return Ok(None);
            } else {
                *f.count_values.get_or_insert(0) += 1;
            }
        }
    }
    if !request && op == 0x10 && key_len > 0 {
        msg.part = Part::Stat;
    }
    Ok(Some(msg))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The hand-written JSON is serde's text, for an empty message and one with every
    /// field (strings that need escaping among them).
    #[test]
    fn json_written_by_hand_equals_serde() {
        let odd = || "k\"\\\n\u{7}é".to_string();
        let full = McMsg {
            command: "get",
            kind: "Load",
            opcode: Some("GetK"),
            opcode_value: Some(12),
            opaque: Some(u32::MAX),
            vbucket: Some(3),
            quiet: Some(false),
            status: Some("Success"),
            status_code: Some(0),
            keys: vec![odd(), "b".into()],
            flags: Some(1),
            exptime: Some(2),
            bytes: Some(u64::MAX),
            count_values: Some(4),
            values: vec!["YQ==".into()],
            cas_unique: Some(5),
            noreply: Some(true),
            delta: Some(6),
            initial: Some(7),
            value: Some(8),
            verbosity: Some(9),
            version: Some(odd()),
            raw_args: Some("items".into()),
            error_msg: Some(odd()),
            stats: vec![
                Stat {
                    name: "pid".into(),
                    value: odd(),
                },
                Stat {
                    name: "uptime".into(),
                    value: "1".into(),
                },
            ],
            line: Some(odd()),
        };
        for m in [McMsg::default(), full] {
            let mut hand = String::new();
            m.write_json(&mut hand);
            assert_eq!(hand, serde_json::to_string(&m).unwrap());
            let t = super::super::McTxn {
                protocol_type: "binary",
                request: Some(m.clone()),
                response: (m.keys.is_empty()).then(|| m.clone()),
            };
            hand.clear();
            t.write_json(&mut hand);
            assert_eq!(hand, serde_json::to_string(&t).unwrap());
        }
    }

    const L: Limits = Limits {
        max_values: -1,
        max_bytes_per_value: 0,
        parse_unknown: false,
    };

    #[test]
    fn text_store_with_its_value() {
        let m = message(b"set k 5 0 3 noreply\r\nabc\r\nget k\r\n", true, &L)
            .unwrap()
            .unwrap();
        assert_eq!(m.len, 26);
        assert!(m.silent);
        assert_eq!(m.fields.command, "set");
        assert_eq!(m.fields.kind, "Store");
        assert_eq!(m.fields.keys, vec!["k"]);
        assert_eq!(m.fields.flags, Some(5));
        assert_eq!(m.fields.bytes, Some(3));
        assert_eq!(m.fields.count_values, Some(1));
        assert_eq!(m.fields.values, vec!["YWJj"]);
    }

    #[test]
    fn a_value_not_kept_is_skipped_unseen() {
        let l = Limits { max_values: 0, ..L };
        let m = message(b"VALUE k 0 1000\r\nabc", false, &l)
            .unwrap()
            .unwrap();
        assert_eq!(m.len, 16 + 1002);
        assert_eq!(m.part, Part::Value);
        assert!(m.fields.values.is_empty());
        // Kept values wait for their bytes.
        assert_eq!(message(b"VALUE k 0 1000\r\nabc", false, &L).unwrap(), None);
    }

    #[test]
    fn text_errors_and_unknown_commands() {
        let m = message(b"CLIENT_ERROR bad data chunk\r\n", false, &L)
            .unwrap()
            .unwrap();
        assert_eq!(m.outcome, Outcome::ClientError);
        assert_eq!(m.fields.error_msg.as_deref(), Some("bad data chunk"));
        assert!(message(b"frobnicate x\r\n", true, &L).is_err());
        let l = Limits {
            parse_unknown: true,
            ..L
        };
        let m = message(b"frobnicate x\r\n", true, &l).unwrap().unwrap();
        assert_eq!(m.fields.command, "UNKNOWN");
        assert_eq!(m.fields.line.as_deref(), Some("frobnicate x"));
        assert_eq!(message(b"get a", true, &L).unwrap(), None);
    }

    /// A binary message: the 24-byte header (magic, opcode, key length, extras length,
    /// data type 0, vbucket or status, body length, opaque, CAS 0), then extras, key, value.
    pub(crate) fn bin_with(
        magic: u8,
        op: u8,
        opaque: u32,
        extras: &[u8],
        key: &[u8],
        value: &[u8],
        status: u16,
    ) -> Vec<u8> {
        let mut v = vec![magic, op];
        v.extend((key.len() as u16).to_be_bytes());
        v.push(extras.len() as u8);
        v.push(0);
        v.extend(status.to_be_bytes());
        v.extend(((extras.len() + key.len() + value.len()) as u32).to_be_bytes());
        v.extend(opaque.to_be_bytes());
        v.extend(0u64.to_be_bytes());
        v.extend(extras);
        v.extend(key);
        v.extend(value);
        assert_eq!(v.len(), HEADER + extras.len() + key.len() + value.len());
        v
    }

    /// [`bin_with`] with opaque 7 and CAS 9.
    fn bin(magic: u8, op: u8, extras: &[u8], key: &[u8], value: &[u8], status: u16) -> Vec<u8> {
        let mut v = bin_with(magic, op, 7, extras, key, value, status);
        v[16..24].copy_from_slice(&9u64.to_be_bytes());
        v
    }

    #[test]
    fn binary_counter_and_sasl() {
        let mut ex = 2u64.to_be_bytes().to_vec();
        ex.extend(0u64.to_be_bytes());
        ex.extend(0u32.to_be_bytes());
        let m = message(&bin(0x80, 0x05, &ex, b"cnt", b"", 0), true, &L)
            .unwrap()
            .unwrap();
        assert_eq!(m.fields.opcode, Some("Increment"));
        assert_eq!((m.fields.delta, m.fields.initial), (Some(2), Some(0)));
        assert_eq!(m.opaque, 7);
        let r = message(
            &bin(0x81, 0x05, &[], b"", &5u64.to_be_bytes(), 0),
            false,
            &L,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.fields.value, Some(5));
        assert_eq!(r.fields.status, Some("Success"));
        let auth = bin(0x80, 0x21, &[], b"PLAIN", b"\0user\0secret", 0);
        let m = message(&auth, true, &L).unwrap().unwrap();
        assert_eq!(m.fields.command, "sasl_auth");
        assert_eq!(m.fields.keys, vec!["PLAIN"]);
        assert!(m.fields.values.is_empty(), "credentials are never kept");
        assert_eq!(m.fields.bytes, Some(12));
        assert!(!format!("{:?}", m).contains("secret"));
    }

    #[test]
    fn binary_damage_is_an_error_not_a_panic() {
        let mut b = bin(0x80, 0x01, &[0; 8], b"k", b"v", 0);
        b[4] = 200; // extras longer than the body
        assert!(message(&b, true, &L).is_err());
        assert!(message(&bin(0x81, 0x01, &[], b"", b"", 0), true, &L).is_err());
    }

    #[test]
    fn udp_frame_header() {
        assert_eq!(udp_header(&[0, 1, 0, 2, 0, 3, 0, 0]), Some((1, 2, 3)));
        assert_eq!(udp_header(&[0, 1]), None);
    }
}

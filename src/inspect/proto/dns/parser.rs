//! DNS message parsing (RFC 1035): header, the first question, and answer records rendered
//! as text. Hand-written rather than `simple-dns` so that hostile messages stay cheap: name
//! compression pointers are followed at most [`MAX_JUMPS`] times, names are cut at 255
//! bytes, and at most [`MAX_RECORDS`] answers are rendered whatever the counts claim.

use crate::inspect::proto::ParseError;
use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr};

const MAX_JUMPS: usize = 32;
const MAX_NAME: usize = 255;
/// Answers rendered per message; the count field still says how many there were.
pub const MAX_RECORDS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub rtype: u16,
    pub class: u16,
    pub ttl: u32,
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: u16,
    pub response: bool,
    pub opcode: u8,
    pub rcode: u8,
    pub flags: u16,
    pub question: Option<Question>,
    pub answers: Vec<Record>,
    /// Authority and additional records (EDNS OPT left out), read only when asked for
    /// and as far as they are well formed.
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
    pub answers_count: u16,
    pub authorities_count: u16,
    pub additionals_count: u16,
}

const E: ParseError = ParseError("dns: truncated or malformed message");

fn u16_at(b: &[u8], at: usize) -> Result<u16, ParseError> {
    Ok(u16::from_be_bytes([
        *b.get(at).ok_or(E)?,
        *b.get(at + 1).ok_or(E)?,
    ]))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, ParseError> {
    Ok(u32::from_be_bytes(
        b.get(at..at + 4).ok_or(E)?.try_into().map_err(|_| E)?,
    ))
}

/// Reads a possibly compressed name at `at`; returns it and the position after it.
pub fn read_name(msg: &[u8], mut at: usize) -> Result<(String, usize), ParseError> {
    let mut name = String::new();
    let mut after = None;
    let mut jumps = 0;
    loop {
        let len = *msg.get(at).ok_or(E)?;
        match len & 0xc0 {
            0x00 => {
                if len == 0 {
                    let end = after.unwrap_or(at + 1);
                    return Ok((name, end));
                }
                let label = msg.get(at + 1..at + 1 + usize::from(len)).ok_or(E)?;
                if name.len() + label.len() + 1 > MAX_NAME {
                    return Err(ParseError("dns: name too long"));
                }
                if !name.is_empty() {
                    name.push('.');
                }
                for &c in label {
                    if c.is_ascii_graphic() && c != b'.' {
                        name.push(c as char);
                    } else {
                        let _ = write!(name, "\\{c:03}");
                    }
                }
                at += 1 + usize::from(len);
            }
            0xc0 => {
                let ptr = usize::from(u16_at(msg, at)? & 0x3fff);
                jumps += 1;
                if jumps > MAX_JUMPS {
                    return Err(ParseError("dns: compression loop"));
                }
                after.get_or_insert(at + 2);
                at = ptr;
            }
            _ => return Err(ParseError("dns: unknown label type")),
        }
    }
}

/// Parses a DNS message: header, question and answers.
pub fn parse(msg: &[u8]) -> Result<Message, ParseError> {
    parse_sections(msg, false)
}

/// [`parse`], and with `all` also the authority and additional sections.
pub fn parse_sections(msg: &[u8], all: bool) -> Result<Message, ParseError> {
    if msg.len() < 12 {
        return Err(E);
    }
    let flags = u16_at(msg, 2)?;
    let qd = u16_at(msg, 4)?;
    let an = u16_at(msg, 6)?;
    let mut m = Message {
        id: u16_at(msg, 0)?,
        response: flags & 0x8000 != 0,
        opcode: ((flags >> 11) & 0x0f) as u8,
        rcode: (flags & 0x0f) as u8,
        flags,
        question: None,
        answers: Vec::new(),
        authorities: Vec::new(),
        additionals: Vec::new(),
        answers_count: an,
        authorities_count: u16_at(msg, 8)?,
        additionals_count: u16_at(msg, 10)?,
    };
    let mut at = 12;
    for i in 0..qd {
        let (name, next) = read_name(msg, at)?;
        let q = Question {
            name,
            qtype: u16_at(msg, next)?,
            qclass: u16_at(msg, next + 2)?,
        };
        at = next + 4;
        if i == 0 {
            m.question = Some(q);
        }
    }
    for _ in 0..an {
        let (r, next) = record(msg, at)?;
        at = next;
        if m.answers.len() < MAX_RECORDS {
            m.answers.push(r);
        }
    }
    if all {
        let sections = [
            (m.authorities_count, &mut m.authorities),
            (m.additionals_count, &mut m.additionals),
        ];
        'sections: for (count, into) in sections {
            for _ in 0..count {
                let Ok((r, next)) = record(msg, at) else {
                    break 'sections;
                };
                at = next;
                if r.rtype != 41 && into.len() < MAX_RECORDS {
                    into.push(r);
                }
            }
        }
    }
    Ok(m)
}

/// One resource record at `at`, and the position after it.
fn record(msg: &[u8], at: usize) -> Result<(Record, usize), ParseError> {
    let (name, next) = read_name(msg, at)?;
    let rtype = u16_at(msg, next)?;
    let class = u16_at(msg, next + 2)?;
    let ttl = u32_at(msg, next + 4)?;
    let rdlen = usize::from(u16_at(msg, next + 8)?);
    let rd_at = next + 10;
    let rdata = msg.get(rd_at..rd_at + rdlen).ok_or(E)?;
    let r = Record {
        name,
        rtype,
        class,
        ttl,
        data: render(msg, rtype, rd_at, rdata),
    };
    Ok((r, rd_at + rdlen))
}

/// Record data as text: addresses, names, MX and SRV targets, TXT strings; hex otherwise.
fn render(msg: &[u8], rtype: u16, rd_at: usize, rdata: &[u8]) -> String {
    let name_at = |off: usize| {
        read_name(msg, rd_at + off)
            .map(|(n, _)| n)
            .unwrap_or_default()
    };
    match rtype {
        1 if rdata.len() == 4 => Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]).to_string(),
        28 if rdata.len() == 16 => {
            let b: [u8; 16] = rdata.try_into().unwrap_or([0; 16]);
            Ipv6Addr::from(b).to_string()
        }
        2 | 5 | 12 => name_at(0),
        15 if rdata.len() > 2 => format!(
            "{} {}",
            u16::from_be_bytes([rdata[0], rdata[1]]),
            name_at(2)
        ),
        33 if rdata.len() > 6 => format!(
            "{} {} {} {}",
            u16::from_be_bytes([rdata[0], rdata[1]]),
            u16::from_be_bytes([rdata[2], rdata[3]]),
            u16::from_be_bytes([rdata[4], rdata[5]]),
            name_at(6)
        ),
        16 => {
            let mut parts = Vec::new();
            let mut i = 0;
            while i < rdata.len() {
                let l = usize::from(rdata[i]);
                let s = rdata
                    .get(i + 1..(i + 1 + l).min(rdata.len()))
                    .unwrap_or(&[]);
                parts.push(String::from_utf8_lossy(s).into_owned());
                i += 1 + l;
            }
            parts.join(" ")
        }
        6 => {
            let (mname, next) = read_name(msg, rd_at).unwrap_or_default();
            let rname = read_name(msg, next).map(|(n, _)| n).unwrap_or_default();
            format!("{mname} {rname}")
        }
        _ => rdata
            .iter()
            .fold(String::with_capacity(rdata.len() * 2), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            }),
    }
}

/// Mnemonic of a record type.
pub fn type_name(t: u16) -> String {
    let s = match t {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        13 => "HINFO",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        35 => "NAPTR",
        41 => "OPT",
        43 => "DS",
        46 => "RRSIG",
        47 => "NSEC",
        48 => "DNSKEY",
        64 => "SVCB",
        65 => "HTTPS",
        251 => "IXFR",
        252 => "AXFR",
        255 => "ANY",
        257 => "CAA",
        _ => return format!("TYPE{t}"),
    };
    s.to_string()
}

/// Mnemonic of a class.
pub fn class_name(c: u16) -> String {
    match c {
        1 => "IN".into(),
        3 => "CH".into(),
        4 => "HS".into(),
        255 => "ANY".into(),
        _ => format!("CLASS{c}"),
    }
}

/// Mnemonic of a response code.
pub fn rcode_name(r: u8) -> String {
    let s = match r {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        _ => return format!("RCODE{r}"),
    };
    s.to_string()
}

/// Mnemonic of an opcode.
pub fn opcode_name(o: u8) -> String {
    match o {
        0 => "QUERY".into(),
        1 => "IQUERY".into(),
        2 => "STATUS".into(),
        4 => "NOTIFY".into(),
        5 => "UPDATE".into(),
        _ => format!("OPCODE{o}"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A response for `example.com A` with one answer using a compression pointer.
    pub fn sample_response(id: u16) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
        m.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
        m.extend_from_slice(&[
            0xc0, 12, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4, 93, 184, 216, 34,
        ]);
        m
    }

    pub fn sample_query(id: u16) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        m.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
        m
    }

    #[test]
    fn parses_compressed_answer() {
        let m = parse(&sample_response(7)).unwrap();
        assert!(m.response);
        assert_eq!(m.question.unwrap().name, "example.com");
        assert_eq!(m.answers[0].data, "93.184.216.34");
        assert_eq!(m.answers[0].name, "example.com");
    }

    #[test]
    fn pointer_loop_is_an_error() {
        let mut m = sample_query(1);
        m.truncate(12);
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(parse(&m).is_err());
        for n in 0..sample_response(1).len() {
            let _ = parse(&sample_response(1)[..n]);
        }
    }
}

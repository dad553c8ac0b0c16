//! TLS record framing and hello parsing: `tls-parser` reads ClientHello / ServerHello; the
//! extension list is walked here because JA3 needs every extension id in wire order
//! (GREASE included, to be dropped) and tls-parser gives typed extensions only.

use crate::inspect::proto::ParseError;
use std::fmt::Write;
use tls_parser::{TlsMessage, TlsMessageHandshake};

/// Largest record body (2^14 plus the expansion TLS allows).
const MAX_RECORD: usize = (1 << 14) + 2048;

/// A record header at the start of `data`: (content type, body, total length).
/// (content type, body, total length) of one record.
pub type Record<'a> = (u8, &'a [u8], usize);

pub fn record(data: &[u8]) -> Result<Option<Record<'_>>, ParseError> {
    if data.len() < 5 {
        return Ok(None);
    }
    let t = data[0];
    if !(20..=24).contains(&t) || data[1] != 3 {
        return Err(ParseError("tls: not a TLS record"));
    }
    let len = usize::from(u16::from_be_bytes([data[3], data[4]]));
    if len > MAX_RECORD {
        return Err(ParseError("tls: record too long"));
    }
    if data.len() < 5 + len {
        return Ok(None);
    }
    Ok(Some((t, &data[5..5 + len], 5 + len)))
}

/// A complete handshake message at the start of the handshake byte stream, with its length.
pub fn handshake_len(hs: &[u8]) -> Option<usize> {
    if hs.len() < 4 {
        return None;
    }
    let n = usize::from(hs[1]) << 16 | usize::from(hs[2]) << 8 | usize::from(hs[3]);
    (hs.len() >= 4 + n).then_some(4 + n)
}

/// What a ClientHello offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    pub version: u16,
    pub server_name: Option<String>,
    pub alpn: Vec<String>,
    pub supported_versions: Vec<u16>,
    /// The JA3 string (`version,ciphers,extensions,groups,point formats`).
    pub ja3: String,
}

/// What a ServerHello chose.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerHello {
    pub version: u16,
    pub cipher: u16,
    pub alpn: Option<String>,
}

fn grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

fn u16s(b: &[u8]) -> impl Iterator<Item = u16> + '_ {
    b.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]]))
}

/// (type, data) of each extension, in order.
fn extensions(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let t = u16::from_be_bytes([b[0], b[1]]);
        let n = usize::from(u16::from_be_bytes([b[2], b[3]]));
        let Some(d) = b.get(4..4 + n) else { break };
        out.push((t, d));
        b = &b[4 + n..];
    }
    out
}

fn alpn_list(d: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = 2;
    while let Some(&n) = d.get(at) {
        let Some(p) = d.get(at + 1..at + 1 + usize::from(n)) else {
            break;
        };
        out.push(String::from_utf8_lossy(p).into_owned());
        at += 1 + usize::from(n);
    }
    out
}

fn join(v: impl Iterator<Item = u16>) -> String {
    let mut s = String::new();
    for (i, x) in v.enumerate() {
        if i > 0 {
            s.push('-');
        }
        let _ = write!(s, "{x}");
    }
    s
}

/// Parses a complete ClientHello handshake message.
pub fn client_hello(msg: &[u8]) -> Result<ClientHello, ParseError> {
    let Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ClientHello(ch)))) =
        tls_parser::parse_tls_message_handshake(msg)
    else {
        return Err(ParseError("tls: malformed ClientHello"));
    };
    let mut out = ClientHello {
        version: ch.version.0,
        ..Default::default()
    };
    let exts = extensions(ch.ext.unwrap_or(&[]));
    let mut groups = String::new();
    let mut formats = String::new();
    for (t, d) in &exts {
        match t {
            // server_name list: len(2) type(1) len(2) name
            0 if d.len() > 5 && d[2] == 0 => {
                let n = usize::from(u16::from_be_bytes([d[3], d[4]]));
                if let Some(name) = d.get(5..5 + n) {
                    out.server_name = Some(String::from_utf8_lossy(name).into_owned());
                }
            }
            10 if d.len() >= 2 => groups = join(u16s(&d[2..]).filter(|g| !grease(*g))),
            11 if !d.is_empty() => {
                formats = d[1..]
                    .iter()
                    .map(|f| f.to_string())
                    .collect::<Vec<_>>()
                    .join("-");
            }
            16 => out.alpn = alpn_list(d),
            43 if !d.is_empty() => {
                out.supported_versions = u16s(&d[1..]).filter(|v| !grease(*v)).collect()
            }
            _ => {}
        }
    }
    out.ja3 = format!(
        "{},{},{},{},{}",
        ch.version.0,
        join(ch.ciphers.iter().map(|c| c.0).filter(|c| !grease(*c))),
        join(exts.iter().map(|(t, _)| *t).filter(|t| !grease(*t))),
        groups,
        formats
    );
    Ok(out)
}

/// Parses a complete ServerHello handshake message.
pub fn server_hello(msg: &[u8]) -> Result<ServerHello, ParseError> {
    let sh = match tls_parser::parse_tls_message_handshake(msg) {
        Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ServerHello(sh)))) => sh,
        _ => return Err(ParseError("tls: malformed ServerHello")),
    };
    let mut out = ServerHello {
        version: sh.version.0,
        cipher: sh.cipher.0,
        alpn: None,
    };
    for (t, d) in extensions(sh.ext.unwrap_or(&[])) {
        match t {
            16 => out.alpn = alpn_list(d).into_iter().next(),
            43 if d.len() == 2 => out.version = u16::from_be_bytes([d[0], d[1]]),
            _ => {}
        }
    }
    Ok(out)
}

/// "TLS 1.2" and friends.
pub fn version_name(v: u16) -> String {
    match v {
        0x0300 => "SSL 3.0".into(),
        0x0301 => "TLS 1.0".into(),
        0x0302 => "TLS 1.1".into(),
        0x0303 => "TLS 1.2".into(),
        0x0304 => "TLS 1.3".into(),
        _ => format!("0x{v:04x}"),
    }
}

/// IANA name of a cipher suite.
pub fn cipher_name(id: u16) -> String {
    tls_parser::TlsCipherSuite::from_id(id)
        .map_or_else(|| format!("0x{id:04x}"), |c| c.name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grease_and_records() {
        assert!(grease(0x0a0a) && grease(0xfafa) && !grease(0x0a0b));
        assert!(record(b"\x16\x03\x01\x00\x02ab").unwrap().is_some());
        assert!(record(b"GET / HTTP/1.1").is_err());
        assert!(client_hello(b"\x01\x00\x00\x02\x03\x03").is_err());
    }
}

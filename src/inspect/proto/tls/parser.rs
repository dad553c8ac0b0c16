//! TLS record framing and the plaintext handshake messages, read field by field: the events
//! need every field of the hellos in wire order (random, session id, each extension's raw
//! bytes for JA3 and Packetbeat's extension names), which typed parsers do not keep.
//! Pure: bytes in, values out.

use crate::inspect::proto::ParseError;
use std::fmt::Write;

/// Largest record body (2^14 plus the expansion TLS allows).
const MAX_RECORD: usize = (1 << 14) + 2048;

/// Record content types.
pub const CHANGE_CIPHER_SPEC: u8 = 20;
pub const ALERT: u8 = 21;
pub const HANDSHAKE: u8 = 22;

/// Handshake message types the events read.
pub mod hs {
    pub const CLIENT_HELLO: u8 = 1;
    pub const SERVER_HELLO: u8 = 2;
    pub const CERTIFICATE: u8 = 11;
    pub const SERVER_KEY_EXCHANGE: u8 = 12;
    pub const CERTIFICATE_REQUEST: u8 = 13;
    pub const CLIENT_KEY_EXCHANGE: u8 = 16;
    pub const CERTIFICATE_STATUS: u8 = 22;
}

/// (content type, body, total length) of one record.
pub type Record<'a> = (u8, &'a [u8], usize);

/// The record at the start of `data`, `None` until it is complete.
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

/// The length of the complete handshake message at the start of the handshake byte stream.
pub fn handshake_len(hs: &[u8]) -> Option<usize> {
    if hs.len() < 4 {
        return None;
    }
    let n = usize::from(hs[1]) << 16 | usize::from(hs[2]) << 8 | usize::from(hs[3]);
    (hs.len() >= 4 + n).then_some(4 + n)
}

/// The declared length of the handshake message starting `hs` (its header complete).
pub fn declared_len(hs: &[u8]) -> Option<usize> {
    (hs.len() >= 4).then(|| usize::from(hs[1]) << 16 | usize::from(hs[2]) << 8 | usize::from(hs[3]))
}

/// A ClientHello or ServerHello.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hello {
    /// The hello's own version field (`legacy_version` in TLS 1.3).
    pub version: u16,
    /// The 32 random bytes (the first 4 were once a timestamp).
    pub random: Vec<u8>,
    pub session_id: Vec<u8>,
    /// Offered suites (client, GREASE dropped), or the chosen one (server).
    pub ciphers: Vec<u16>,
    /// Offered compression methods (client), or the chosen one (server).
    pub compression: Vec<u8>,
    /// Extensions in wire order, GREASE dropped; `None` when there is no (readable) list.
    pub extensions: Option<Vec<(u16, Vec<u8>)>>,
    pub client: bool,
}

impl Hello {
    /// The raw data of extension `id`.
    pub fn ext(&self, id: u16) -> Option<&[u8]> {
        self.extensions
            .as_deref()?
            .iter()
            .find(|(t, _)| *t == id)
            .map(|(_, d)| d.as_slice())
    }

    /// The version a ServerHello chose (`supported_versions` over the legacy field).
    pub fn chosen_version(&self) -> u16 {
        match self.ext(43) {
            Some(&[a, b]) => u16::from_be_bytes([a, b]),
            _ => self.version,
        }
    }

    /// The versions a ClientHello offers (`supported_versions`, GREASE dropped).
    pub fn offered_versions(&self) -> Vec<u16> {
        match self.ext(43) {
            Some([n, rest @ ..]) => u16s(rest.get(..usize::from(*n)).unwrap_or(rest))
                .filter(|v| !grease(*v))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The SNI host names.
    pub fn server_names(&self) -> Option<Vec<String>> {
        sni(self.ext(0)?)
    }

    /// The ALPN protocol names.
    pub fn alpn(&self) -> Option<Vec<String>> {
        alpn(self.ext(16)?)
    }

    /// The JA3 string (`version,ciphers,extensions,groups,point formats`).
    pub fn ja3(&self) -> String {
        let exts = self.extensions.as_deref().unwrap_or_default();
        let groups = match self.ext(10) {
            Some(d) if d.len() >= 2 => join(u16s(&d[2..]).filter(|g| !grease(*g))),
            _ => String::new(),
        };
        let formats = match self.ext(11) {
            Some([_, rest @ ..]) => rest
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join("-"),
            _ => String::new(),
        };
        format!(
            "{},{},{},{},{}",
            self.version,
            join(self.ciphers.iter().copied()),
            join(exts.iter().map(|(t, _)| *t)),
            groups,
            formats
        )
    }
}

/// GREASE values (RFC 8701): `0x?a?a` with both bytes equal.
pub fn grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

pub fn u16s(b: &[u8]) -> impl Iterator<Item = u16> + '_ {
    b.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]]))
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

/// A cursor over a message body.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ParseError> {
        let s = self
            .b
            .get(self.at..self.at + n)
            .ok_or(ParseError("tls: truncated hello"))?;
        self.at += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, ParseError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, ParseError> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }

    fn rest(&self) -> &'a [u8] {
        self.b.get(self.at..).unwrap_or_default()
    }
}

/// Parses a complete ClientHello (`client`) or ServerHello handshake message, header
/// included.
pub fn hello(msg: &[u8], client: bool) -> Result<Hello, ParseError> {
    let mut r = Reader {
        b: msg.get(4..).unwrap_or_default(),
        at: 0,
    };
    let version = r.u16()?;
    if version >> 8 != 3 {
        return Err(ParseError("tls: not a TLS hello"));
    }
    let random = r.take(32)?.to_vec();
    let sid_len = usize::from(r.u8()?);
    if sid_len > 32 {
        return Err(ParseError("tls: session id too long"));
    }
    let session_id = r.take(sid_len)?.to_vec();
    let (ciphers, compression) = if client {
        let n = usize::from(r.u16()?);
        let ciphers = u16s(r.take(n)?).filter(|c| !grease(*c)).collect();
        let n = usize::from(r.u8()?);
        (ciphers, r.take(n)?.to_vec())
    } else {
        (vec![r.u16()?], vec![r.u8()?])
    };
    Ok(Hello {
        version,
        random,
        session_id,
        ciphers,
        compression,
        extensions: extensions(r.rest()),
        client,
    })
}

/// The extension list (its 2-byte length first): `None` when absent, empty or unreadable.
fn extensions(b: &[u8]) -> Option<Vec<(u16, Vec<u8>)>> {
    let [a, c, rest @ ..] = b else { return None };
    let total = usize::from(u16::from_be_bytes([*a, *c]));
    if total == 0 {
        return None;
    }
    let mut r = Reader { b: rest, at: 0 };
    let mut out = Vec::new();
    while r.at < total {
        let t = r.u16().ok()?;
        let n = usize::from(r.u16().ok()?);
        // A length past the end gives what is there.
        let end = (r.at + n).min(rest.len());
        let d = rest.get(r.at..end).unwrap_or_default();
        r.at += n;
        if !grease(t) {
            out.push((t, d.to_vec()));
        }
    }
    Some(out)
}

/// The host names of a `server_name` extension; `None` when its list length is missing.
pub fn sni(d: &[u8]) -> Option<Vec<String>> {
    let [a, b, rest @ ..] = d else { return None };
    let limit = usize::from(u16::from_be_bytes([*a, *b])).min(rest.len());
    let list = &rest[..limit];
    let mut out = Vec::new();
    let mut at = 0;
    while at + 3 <= list.len() {
        let n = usize::from(u16::from_be_bytes([list[at + 1], list[at + 2]]));
        let Some(name) = list.get(at + 3..at + 3 + n) else {
            break;
        };
        if list[at] == 0 {
            out.push(String::from_utf8_lossy(name).into_owned());
        }
        at += 3 + n;
    }
    Some(out)
}

/// The protocol names of an ALPN extension; `None` when malformed.
pub fn alpn(d: &[u8]) -> Option<Vec<String>> {
    let [a, b, rest @ ..] = d else { return None };
    if usize::from(u16::from_be_bytes([*a, *b])) != rest.len() {
        return None;
    }
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(&n) = rest.get(at) {
        let p = rest.get(at + 1..at + 1 + usize::from(n))?;
        out.push(String::from_utf8_lossy(p).into_owned());
        at += 1 + usize::from(n);
    }
    Some(out)
}

/// The DER certificates of a Certificate message body (header excluded); `None` when the
/// lengths disagree.
pub fn certificates(body: &[u8]) -> Option<Vec<&[u8]>> {
    let u24 = |b: &[u8], at: usize| -> Option<usize> {
        let s = b.get(at..at + 3)?;
        Some(usize::from(s[0]) << 16 | usize::from(s[1]) << 8 | usize::from(s[2]))
    };
    if u24(body, 0)? + 3 != body.len() {
        return None;
    }
    let mut out = Vec::new();
    let mut at = 3;
    while at + 3 <= body.len() {
        let n = u24(body, at)?;
        out.push(body.get(at + 3..at + 3 + n)?);
        at += 3 + n;
    }
    Some(out)
}

/// The top-level status of an OCSP response in a CertificateStatus body.
pub fn ocsp_status(body: &[u8]) -> Option<u8> {
    // status_type (1 = ocsp), a 3-byte length, then the response's SEQUENCE header (4
    // bytes) and the ENUMERATED status's tag and length.
    (body.first() == Some(&1)).then(|| body.get(10).copied())?
}

/// An OCSP response status's name (RFC 6960 4.2.1).
pub fn ocsp_name(s: u8) -> String {
    match s {
        0 => "successful".into(),
        1 => "malformedRequest".into(),
        2 => "internalError".into(),
        3 => "tryLater".into(),
        5 => "sigRequired".into(),
        6 => "unauthorized".into(),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello: version 3.3, random 0..32, a 2-byte session id, suites GREASE,
    /// 0xc02f, 0x1301, NULL compression, extensions SNI "a.b", GREASE, groups [x25519,
    /// GREASE], point formats [0], ALPN [h2], supported_versions [1.3, 1.2].
    fn client_hello() -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend(0u8..32);
        body.extend([2, 0xaa, 0xbb]);
        body.extend([0, 6, 0x3a, 0x3a, 0xc0, 0x2f, 0x13, 0x01]);
        body.extend([1, 0]);
        let mut ext = Vec::new();
        ext.extend([0, 0, 0, 8, 0, 6, 0, 0, 3, b'a', b'.', b'b']);
        ext.extend([0x1a, 0x1a, 0, 0]);
        ext.extend([0, 10, 0, 6, 0, 4, 0, 29, 0x2a, 0x2a]);
        ext.extend([0, 11, 0, 2, 1, 0]);
        ext.extend([0, 16, 0, 5, 0, 3, 2, b'h', b'2']);
        ext.extend([0, 43, 0, 5, 4, 3, 4, 3, 3]);
        body.extend((ext.len() as u16).to_be_bytes());
        body.extend(ext);
        let mut msg = vec![1, 0, 0, body.len() as u8];
        msg.extend(body);
        msg
    }

    #[test]
    fn client_hello_fields() {
        let h = hello(&client_hello(), true).unwrap();
        assert_eq!(h.version, 0x0303);
        assert_eq!(h.random, (0u8..32).collect::<Vec<_>>());
        assert_eq!(h.session_id, [0xaa, 0xbb]);
        assert_eq!(h.ciphers, [0xc02f, 0x1301]);
        assert_eq!(h.compression, [0]);
        let ids: Vec<u16> = h.extensions.as_ref().unwrap().iter().map(|e| e.0).collect();
        assert_eq!(ids, [0, 10, 11, 16, 43]);
        assert_eq!(h.server_names(), Some(vec!["a.b".to_string()]));
        assert_eq!(h.alpn(), Some(vec!["h2".to_string()]));
        assert_eq!(h.offered_versions(), [0x0304, 0x0303]);
        assert_eq!(h.ja3(), "771,49199-4865,0-10-11-16-43,29,0");
    }

    #[test]
    fn server_hello_and_bad_input() {
        let mut body = vec![3, 3];
        body.extend([7u8; 32]);
        body.extend([0, 0x13, 0x01, 0, 0, 6, 0, 43, 0, 2, 3, 4]);
        let mut msg = vec![2, 0, 0, body.len() as u8];
        msg.extend(body);
        let h = hello(&msg, false).unwrap();
        assert_eq!((h.ciphers[0], h.compression[0]), (0x1301, 0));
        assert_eq!(h.chosen_version(), 0x0304);
        assert!(hello(&msg[..20], false).is_err());
        assert!(hello(b"\x01\x00\x00\x02\x02\x00", true).is_err());
        assert!(grease(0x0a0a) && grease(0xfafa) && !grease(0x0a0b));
        assert!(record(b"\x16\x03\x01\x00\x02ab").unwrap().is_some());
        assert!(record(b"GET / HTTP/1.1").is_err());
    }

    #[test]
    fn certificate_list_and_ocsp() {
        let body = [0, 0, 8, 0, 0, 2, 0xa, 0xb, 0, 0, 0];
        assert_eq!(certificates(&body), Some(vec![&[0xa, 0xb][..], &[][..]]));
        assert_eq!(certificates(&body[..6]), None);
        assert_eq!(
            ocsp_status(&[1, 0, 0, 9, 0x30, 0x82, 0, 5, 0x0a, 1, 3]),
            Some(3)
        );
        assert_eq!(ocsp_name(3), "tryLater");
    }
}

//! SIP's wire format, pure (RFC 3261): a message's start line, its headers (compact names
//! expanded, folded lines joined) and its body; the name-addr of From / To / Contact, a
//! SIP URI, an Authorization header's parameters and an SDP body's session lines (RFC
//! 4566), read the way Packetbeat reads them.

use crate::inspect::proto::ParseError;

/// Most headers kept from one message (more are ignored).
pub const MAX_HEADERS: usize = 128;

/// The first line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start<'a> {
    Request {
        method: &'a str,
        uri: &'a str,
        version: &'a str,
    },
    Response {
        version: &'a str,
        code: u16,
        phrase: &'a str,
    },
}

/// One SIP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    pub start: Start<'a>,
    /// Lower-cased full names (compact forms expanded), values trimmed, in order.
    pub headers: Vec<(String, String)>,
    pub body: &'a [u8],
    /// The whole message, start line to the end of the body.
    pub raw: &'a [u8],
    pub content_length: Option<usize>,
}

impl Message<'_> {
    /// The first value of header `name` (lower-case full name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`.
    pub fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// RFC 3261 7.3.3 compact header names.
fn full_name(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let full = match lower.as_str() {
        "i" => "call-id",
        "m" => "contact",
        "e" => "content-encoding",
        "l" => "content-length",
        "c" => "content-type",
        "f" => "from",
        "s" => "subject",
        "k" => "supported",
        "t" => "to",
        "v" => "via",
        "a" => "accept-contact",
        "o" => "event",
        "r" => "refer-to",
        "u" => "allow-events",
        _ => return lower,
    };
    full.to_string()
}

fn text(b: &[u8]) -> Result<&str, ParseError> {
    std::str::from_utf8(b).map_err(|_| ParseError("sip: start line is not UTF-8"))
}

fn start_line(l: &[u8]) -> Result<Start<'_>, ParseError> {
    let l = text(l)?;
    let mut parts = l.splitn(3, ' ');
    let (a, b, c) = match (parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), Some(c)) => (a, b, c),
        _ => return Err(ParseError("sip: bad start line")),
    };
    if let Some(version) = a.strip_prefix("SIP/") {
        let code: u16 = b
            .parse()
            .ok()
            .filter(|c| (100..700).contains(c))
            .ok_or(ParseError("sip: bad status code"))?;
        return Ok(Start::Response {
            version,
            code,
            phrase: c.trim(),
        });
    }
    let version = c
        .trim()
        .strip_prefix("SIP/")
        .ok_or(ParseError("sip: not a SIP message"))?;
    if a.is_empty() || !a.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(ParseError("sip: bad method"));
    }
    Ok(Start::Request {
        method: a,
        uri: b,
        version,
    })
}

/// Parses the message at the start of `data`. Over a stream (`framed`), the body is
/// `Content-Length` bytes (none when absent) and `None` means "need more"; in a datagram,
/// the body is the rest when `Content-Length` is absent. Returns the bytes the message
/// took (leading blank lines, keep-alives, included).
pub fn message(data: &[u8], framed: bool) -> Result<Option<(usize, Message<'_>)>, ParseError> {
    let lead = keepalive(data);
    let data = &data[lead..];
    if data.is_empty() {
        return if framed {
            Ok(None)
        } else {
            Err(ParseError("sip: empty datagram"))
        };
    }
    let Some(head_end) = memchr::memmem::find(data, b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| memchr::memmem::find(data, b"\n\n").map(|i| (i, i + 2)))
    else {
        if framed {
            // Reject garbage early rather than buffering it.
            if let Some(i) = memchr::memchr(b'\n', data) {
                start_line(trim_cr(&data[..i]))?;
            }
            return Ok(None);
        }
        return Err(ParseError("sip: no end of headers"));
    };
    let (head, body_at) = head_end;
    let head = &data[..head];
    let mut lines = head.split(|&b| b == b'\n').map(trim_cr);
    let start = start_line(lines.next().unwrap_or_default())?;
    let mut headers: Vec<(String, String)> = Vec::new();
    for l in lines {
        if l.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            // A folded line continues the previous header.
            if let Some((_, v)) = headers.last_mut() {
                v.push(' ');
                v.push_str(String::from_utf8_lossy(l).trim());
            }
            continue;
        }
        let Some(colon) = memchr::memchr(b':', l) else {
            return Err(ParseError("sip: header without a colon"));
        };
        if headers.len() >= MAX_HEADERS {
            continue;
        }
        let name = String::from_utf8_lossy(&l[..colon]);
        let value = String::from_utf8_lossy(&l[colon + 1..]);
        headers.push((full_name(name.trim()), value.trim().to_string()));
    }
    let content_length = match headers.iter().find(|(n, _)| n == "content-length") {
        Some((_, v)) => Some(
            v.parse::<usize>()
                .map_err(|_| ParseError("sip: bad Content-Length"))?,
        ),
        None => None,
    };
    let rest = &data[body_at..];
    let body_len = match (content_length, framed) {
        (Some(n), _) => n,
        (None, true) => 0,
        (None, false) => rest.len(),
    };
    if rest.len() < body_len {
        if framed {
            return Ok(None);
        }
        return Err(ParseError("sip: datagram shorter than its Content-Length"));
    }
    let end = body_at + body_len;
    let used = lead + end;
    Ok(Some((
        used,
        Message {
            start,
            headers,
            body: &data[body_at..end],
            raw: &data[..end],
            content_length,
        },
    )))
}

fn trim_cr(l: &[u8]) -> &[u8] {
    l.strip_suffix(b"\r").unwrap_or(l)
}

/// Blank lines (CRLF keep-alives) at the start of a stream: how many bytes to drop.
pub fn keepalive(data: &[u8]) -> usize {
    data.iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(data.len())
}

/// The parts of a SIP URI (Packetbeat's reading: `scheme:user@host:port;params`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Uri<'a> {
    pub original: &'a str,
    pub scheme: &'a str,
    pub username: &'a str,
    pub host: &'a str,
    pub port: u16,
    /// URI parameters (`;transport=tcp`), names lower-cased.
    pub params: Vec<(String, &'a str)>,
}

impl<'a> Uri<'a> {
    pub fn parse(uri: &'a str) -> Uri<'a> {
        let original = uri.trim();
        let mut u = Uri {
            original,
            ..Uri::default()
        };
        let Some(colon) = original.find(':') else {
            return u;
        };
        u.scheme = &original[..colon];
        let rest = &original[colon + 1..];
        let (addr, params) = match rest.find(';') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let hostport = match addr.rfind('@') {
            Some(i) => {
                u.username = &addr[..i];
                &addr[i + 1..]
            }
            None => addr,
        };
        // `[v6]:port`, `host:port` or `host`.
        let (host, port) = match hostport.rfind(':') {
            Some(i) if !hostport[i..].contains(']') => (&hostport[..i], Some(&hostport[i + 1..])),
            _ => (hostport, None),
        };
        u.host = host.trim();
        u.port = port.and_then(|p| p.trim().parse().ok()).unwrap_or(0);
        if let Some(params) = params {
            for p in params.split(';') {
                if let Some((k, v)) = p.split_once('=') {
                    u.params.push((k.trim().to_ascii_lowercase(), v));
                }
            }
        }
        u
    }

    pub fn param(&self, name: &str) -> Option<&'a str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }
}

/// A From / To / Contact value: display name, URI, header parameters (`tag`, `expires`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameAddr<'a> {
    pub display: &'a str,
    pub uri: &'a str,
    pub params: Vec<(String, &'a str)>,
}

impl<'a> NameAddr<'a> {
    pub fn parse(v: &'a str) -> NameAddr<'a> {
        let v = v.trim();
        let (display, uri, rest) = match (v.find('<'), v.find('>')) {
            (Some(a), Some(b)) if a < b => (&v[..a], &v[a + 1..b], &v[b + 1..]),
            _ => match v.find(';') {
                Some(i) => ("", &v[..i], &v[i..]),
                None => ("", v, ""),
            },
        };
        let mut params = Vec::new();
        for p in rest.split(';') {
            if let Some((k, val)) = p.split_once('=') {
                params.push((k.trim().to_ascii_lowercase(), val.trim()));
            }
        }
        NameAddr {
            display: display.trim_matches(|c| matches!(c, '\'' | '"' | ' ' | '\t')),
            uri,
            params,
        }
    }

    pub fn param(&self, name: &str) -> Option<&'a str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }
}

/// The parameters of an Authorization header that are not secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Auth<'a> {
    pub scheme: &'a str,
    pub realm: Option<&'a str>,
    pub username: Option<&'a str>,
    pub uri: Option<&'a str>,
}

impl<'a> Auth<'a> {
    /// Reads scheme, realm, username and uri; the response, nonces and anything else are
    /// never read.
    pub fn parse(v: &'a str) -> Option<Auth<'a>> {
        let v = v.trim();
        let (scheme, rest) = v.split_once(' ')?;
        let mut a = Auth {
            scheme,
            ..Auth::default()
        };
        for p in rest.split(',') {
            let Some((k, val)) = p.split_once('=') else {
                continue;
            };
            let val = val.trim_matches(|c| matches!(c, '\'' | '"' | ' ' | '\t'));
            match k.trim().to_ascii_lowercase().as_str() {
                "realm" => a.realm = Some(val),
                "username" => a.username = Some(val),
                "uri" => a.uri = Some(val),
                _ => {}
            }
        }
        Some(a)
    }
}

/// An authorization header's value with its credentials (`response`, `cnonce`, the token
/// of any other scheme) replaced, for the original text of a message.
pub fn redact_authorization(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    for line in raw.split_inclusive(|&b| b == b'\n') {
        let name_end = memchr::memchr(b':', line).unwrap_or(0);
        let name = String::from_utf8_lossy(&line[..name_end])
            .trim()
            .to_ascii_lowercase();
        if name == "authorization" || name == "proxy-authorization" {
            out.extend_from_slice(&line[..=name_end]);
            let value = String::from_utf8_lossy(&line[name_end + 1..]);
            let keep = Auth::parse(&value).map(|a| {
                let mut s = format!(" {}", a.scheme);
                let mut sep = " ";
                for (k, v) in [("username", a.username), ("realm", a.realm), ("uri", a.uri)] {
                    if let Some(v) = v {
                        s.push_str(&format!("{sep}{k}=\"{v}\""));
                        sep = ", ";
                    }
                }
                s.push_str(&format!("{sep}response=\"xxxxx\""));
                s
            });
            out.extend_from_slice(keep.unwrap_or_else(|| " xxxxx".into()).as_bytes());
            out.extend_from_slice(if line.ends_with(b"\r\n") {
                b"\r\n"
            } else {
                b"\n"
            });
        } else {
            out.extend_from_slice(line);
        }
    }
    out
}

/// The session-level lines of an SDP body Packetbeat reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sdp<'a> {
    pub version: Option<&'a str>,
    pub owner_username: Option<&'a str>,
    pub owner_session_id: Option<&'a str>,
    pub owner_version: Option<&'a str>,
    pub owner_ip: Option<&'a str>,
    pub session_name: Option<&'a str>,
    pub connection_info: Option<&'a str>,
    pub connection_address: Option<&'a str>,
}

impl<'a> Sdp<'a> {
    pub fn parse(body: &'a str) -> Sdp<'a> {
        let mut s = Sdp::default();
        let mut in_media = false;
        for line in body.split("\r\n").flat_map(|l| l.split('\n')) {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim();
            match k.trim() {
                "v" => s.version = Some(v),
                "o" => {
                    let parts: Vec<&str> = v.splitn(4, ' ').collect();
                    if let [user, id, version, addr] = parts[..] {
                        s.owner_username = (user != "-").then_some(user);
                        s.owner_session_id = Some(id);
                        s.owner_version = Some(version);
                        s.owner_ip = addr.rsplit(' ').next();
                    }
                }
                "s" if v != "-" => s.session_name = Some(v),
                "c" if !in_media => {
                    s.connection_info = Some(v);
                    s.connection_address = v.rsplit(' ').next();
                }
                "m" => in_media = true,
                _ => {}
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:bob@example.test:5070;transport=udp SIP/2.0\r\n\
v: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n\
Via: SIP/2.0/UDP 192.0.2.9\r\n\
f: \"Alice A\" <sip:alice@example.test>;tag=88\r\n\
To: <sip:bob@example.test>\r\n\
i: abc@192.0.2.1\r\n\
CSeq: 7 INVITE\r\n\
Subject: a long\r\n  folded subject\r\n\
Content-Type: application/sdp\r\n\
l: 10\r\n\r\n0123456789";

    #[test]
    fn a_request_with_compact_and_folded_headers() {
        let mut data = INVITE.to_vec();
        data.extend_from_slice(b"SIP/2.0 100 Trying\r\n\r\n");
        let (n, m) = message(&data, true).unwrap().unwrap();
        assert_eq!(n, INVITE.len());
        assert_eq!(
            m.start,
            Start::Request {
                method: "INVITE",
                uri: "sip:bob@example.test:5070;transport=udp",
                version: "2.0"
            }
        );
        assert_eq!(m.header("call-id"), Some("abc@192.0.2.1"));
        assert_eq!(m.all("via").count(), 2);
        assert_eq!(m.header("subject"), Some("a long folded subject"));
        assert_eq!(m.body, b"0123456789");
        for cut in 1..INVITE.len() {
            assert_eq!(message(&INVITE[..cut], true).unwrap(), None, "cut {cut}");
        }
        assert!(message(&INVITE[..50], false).is_err());
        let (n, m) = message(&data[INVITE.len()..], true).unwrap().unwrap();
        assert_eq!(n, 22);
        assert!(matches!(m.start, Start::Response { code: 100, .. }));
        assert!(message(b"\x16\x03\x01 garbage\r\n", true).is_err());
        assert_eq!(keepalive(b"\r\n\r\nINVITE"), 4);
    }

    #[test]
    fn uris_name_addrs_auth_and_sdp() {
        let u = Uri::parse("sip:bob@example.test:5070;transport=TCP;lr");
        assert_eq!(
            (u.scheme, u.username, u.host, u.port),
            ("sip", "bob", "example.test", 5070)
        );
        assert_eq!(u.param("transport"), Some("TCP"));
        let u = Uri::parse("sip:[2001:db8::1]:5060");
        assert_eq!((u.host, u.port), ("[2001:db8::1]", 5060));
        let u = Uri::parse("sip:201@10.33.6.101;user=phone");
        assert_eq!((u.username, u.host, u.port), ("201", "10.33.6.101", 0));
        let a = NameAddr::parse("\"Alice A\" <sip:alice@example.test>;tag=88");
        assert_eq!((a.display, a.uri), ("Alice A", "sip:alice@example.test"));
        assert_eq!(a.param("tag"), Some("88"));
        let a = NameAddr::parse("sip:x@y;expires=60");
        assert_eq!((a.uri, a.param("expires")), ("sip:x@y", Some("60")));
        let auth = Auth::parse(
            "Digest username=\"alice\", realm=\"example.test\", nonce=\"n\", uri=\"sip:example.test\", response=\"deadbeef\"",
        )
        .unwrap();
        assert_eq!(auth.scheme, "Digest");
        assert_eq!(auth.username, Some("alice"));
        assert_eq!(auth.uri, Some("sip:example.test"));
        let red = redact_authorization(
            b"REGISTER sip:x SIP/2.0\r\nAuthorization: Digest username=\"alice\", response=\"deadbeef\"\r\n\r\n",
        );
        let red = String::from_utf8(red).unwrap();
        assert!(
            !red.contains("deadbeef") && red.contains("username=\"alice\""),
            "{red}"
        );
        let s = Sdp::parse(
            "v=0\r\no=- 42 43 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.2\r\nm=audio 1 RTP/AVP 0\r\nc=IN IP4 192.0.2.3\r\n",
        );
        assert_eq!(s.owner_username, None);
        assert_eq!(s.owner_ip, Some("192.0.2.1"));
        assert_eq!(s.session_name, None);
        assert_eq!(s.connection_address, Some("192.0.2.2"));
    }
}

//! HTTP/1.x wire parsing: message heads (through `httparse`), body framing, chunk size
//! lines, and keyword hiding in URL-encoded parameters. Pure functions over bytes.

use crate::inspect::proto::ParseError;

/// Most headers one message may have; more is treated as malformed.
pub const MAX_HEADERS: usize = 96;

/// The parts of a message head that connbeat uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    /// Request: method and target.
    pub method: Option<String>,
    pub target: Option<String>,
    /// Response: status code and reason phrase.
    pub code: Option<u16>,
    pub phrase: Option<String>,
    /// Headers selected by the `keep` predicate, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub content_length: Option<u64>,
    pub chunked: bool,
    pub content_type: Option<String>,
    /// `Content-Encoding`, lower-cased.
    pub content_encoding: Option<String>,
    /// Length of the head in bytes, including the blank line.
    pub len: usize,
    /// The minor version of HTTP/1.x (`HTTP/1.1`: 1).
    pub minor_version: Option<u8>,
    /// The user name of a `Basic` `Authorization` header (never its password).
    pub basic_user: Option<String>,
}

/// How the body of a message is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    /// A response without length: the body ends when the server closes.
    UntilClose,
}

/// A kept body decoded per its `Content-Encoding` (gzip, x-gzip, deflate), at most `max`
/// bytes of it; `None` when the encoding is another one or the data does not decode.
pub fn decode_body(encoding: &str, body: &[u8], max: usize) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX);
    let read = match encoding {
        "gzip" | "x-gzip" => flate2::read::MultiGzDecoder::new(body)
            .take(limit)
            .read_to_end(&mut out),
        "deflate" => {
            // Servers send zlib-wrapped or raw deflate under this name: try both.
            let zlib = flate2::read::ZlibDecoder::new(body)
                .take(limit)
                .read_to_end(&mut out);
            if zlib.is_err() {
                out.clear();
                flate2::read::DeflateDecoder::new(body)
                    .take(limit)
                    .read_to_end(&mut out)
            } else {
                zlib
            }
        }
        _ => return None,
    };
    read.ok().map(|_| out)
}

/// A `Cookie` or `Set-Cookie` value as its `name=value` pairs (Packetbeat's
/// `split_cookie`; names lower-cased, a pair without `=` has an empty value).
pub fn split_cookie(v: &str) -> serde_json::Map<String, serde_json::Value> {
    v.split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.trim().to_ascii_lowercase(), v.trim().to_string().into())
        })
        .collect()
}

fn head_common(
    headers: &[httparse::Header<'_>],
    keep: &dyn Fn(&str) -> bool,
    head: &mut Head,
) -> Result<(), ParseError> {
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let v =
                std::str::from_utf8(h.value).map_err(|_| ParseError("http: bad content-length"))?;
            let n: u64 = v
                .trim()
                .parse()
                .map_err(|_| ParseError("http: bad content-length"))?;
            head.content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = h
                .value
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case("content-type") {
            head.content_type = Some(String::from_utf8_lossy(h.value).into_owned());
        } else if name.eq_ignore_ascii_case("content-encoding") {
            head.content_encoding =
                Some(String::from_utf8_lossy(h.value).trim().to_ascii_lowercase());
        } else if name.eq_ignore_ascii_case("authorization") {
            head.basic_user = basic_user(h.value);
        }
        let lower = name.to_ascii_lowercase();
        if keep(&lower) {
            head.headers
                .push((lower, String::from_utf8_lossy(h.value).into_owned()));
        }
    }
    Ok(())
}

/// The user of `Basic <base64 of user:password>` (RFC 7617), when there is one.
pub fn basic_user(value: &[u8]) -> Option<String> {
    use base64::Engine as _;
    let v = value.trim_ascii();
    let (scheme, token) = v.split_at(v.iter().position(|b| *b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim_ascii())
        .ok()?;
    let user = decoded.split(|b| *b == b':').next()?;
    (!user.is_empty()).then(|| String::from_utf8_lossy(user).into_owned())
}

/// Parses a request head at the start of `data`; `None` until it is complete.
pub fn parse_request(data: &[u8], keep: &dyn Fn(&str) -> bool) -> Result<Option<Head>, ParseError> {
    let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut hs);
    match req.parse(data) {
        Ok(httparse::Status::Complete(len)) => {
            let mut head = Head {
                method: req.method.map(str::to_string),
                target: req.path.map(str::to_string),
                len,
                minor_version: req.version,
                ..Head::default()
            };
            head_common(req.headers, keep, &mut head)?;
            Ok(Some(head))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(ParseError("http: malformed request head")),
    }
}

/// Parses a response head at the start of `data`; `None` until it is complete.
pub fn parse_response(
    data: &[u8],
    keep: &dyn Fn(&str) -> bool,
) -> Result<Option<Head>, ParseError> {
    let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut hs);
    match resp.parse(data) {
        Ok(httparse::Status::Complete(len)) => {
            let mut head = Head {
                code: resp.code,
                phrase: resp.reason.map(str::to_string),
                len,
                minor_version: resp.version,
                ..Head::default()
            };
            head_common(resp.headers, keep, &mut head)?;
            Ok(Some(head))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(ParseError("http: malformed response head")),
    }
}

/// Body framing of a request (RFC 9112 §6.3: no length means no body).
pub fn request_framing(h: &Head) -> Framing {
    if h.chunked {
        Framing::Chunked
    } else {
        match h.content_length {
            Some(0) | None => Framing::None,
            Some(n) => Framing::Length(n),
        }
    }
}

/// Body framing of a response to a request with method `req_method`.
pub fn response_framing(h: &Head, req_method: Option<&str>) -> Framing {
    let code = h.code.unwrap_or(0);
    if req_method == Some("HEAD") || (100..200).contains(&code) || code == 204 || code == 304 {
        return Framing::None;
    }
    if req_method == Some("CONNECT") && (200..300).contains(&code) {
        return Framing::UntilClose;
    }
    if h.chunked {
        Framing::Chunked
    } else {
        match h.content_length {
            Some(0) => Framing::None,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    }
}

/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;

/// Finds a CRLF-terminated line at the start of `data`: (line without CRLF, bytes used).
pub fn line(data: &[u8]) -> Result<Option<(&[u8], usize)>, ParseError> {
    match data.windows(2).position(|w| w == b"\r\n") {
        Some(i) => Ok(Some((&data[..i], i + 2))),
        None if data.len() > MAX_LINE => Err(ParseError("http: line too long")),
        None => Ok(None),
    }
}

/// Parses a chunk-size line (`1a;ext=1`).
pub fn chunk_size(line: &[u8]) -> Result<u64, ParseError> {
    let hex = line
        .split(|b| *b == b';')
        .next()
        .unwrap_or(b"")
        .trim_ascii();
    if hex.is_empty() || hex.len() > 15 {
        return Err(ParseError("http: bad chunk size"));
    }
    let s = std::str::from_utf8(hex).map_err(|_| ParseError("http: bad chunk size"))?;
    u64::from_str_radix(s, 16).map_err(|_| ParseError("http: bad chunk size"))
}

/// Replaces the values of URL-encoded parameters whose (lower-cased) names are in `hide`.
pub fn hide_params(params: &str, hide: &[String]) -> String {
    if hide.is_empty() {
        return params.to_string();
    }
    params
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if hide.iter().any(|h| k.eq_ignore_ascii_case(h)) => format!("{k}=xxxxx"),
            _ => kv.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_head_and_framing() {
        let data = b"POST /login?user=a&pass=b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-Forwarded-For: 1.2.3.4\r\n\r\nhello";
        let h = parse_request(data, &|n| n == "x-forwarded-for")
            .unwrap()
            .unwrap();
        assert_eq!(h.method.as_deref(), Some("POST"));
        assert_eq!(h.len, data.len() - 5);
        assert_eq!(request_framing(&h), Framing::Length(5));
        assert_eq!(
            h.headers,
            vec![("x-forwarded-for".into(), "1.2.3.4".into())]
        );
        assert_eq!(h.minor_version, Some(1));
        assert_eq!(h.basic_user, None);
        assert!(parse_request(&data[..20], &|_| false).unwrap().is_none());
        assert!(parse_request(b"\x00\x01garbage\r\n\r\n", &|_| false).is_err());
    }

    #[test]
    fn the_user_of_basic_authorization_and_nothing_else() {
        // "simplesimon:abcd123+", as curl sends it.
        assert_eq!(
            basic_user(b"Basic c2ltcGxlc2ltb246YWJjZDEyMys=").as_deref(),
            Some("simplesimon")
        );
        assert_eq!(basic_user(b" basic dXNlcjpwdw== ").as_deref(), Some("user"));
        for not in [
            &b"Bearer c2ltcGxlc2ltb246YWJjZDEyMys="[..],
            b"Basic",
            b"Basic !!!",
            b"Basic OnB3", // ":pw": no user
            b"",
        ] {
            assert_eq!(basic_user(not), None, "{}", String::from_utf8_lossy(not));
        }
        let h = parse_request(
            b"GET / HTTP/1.0\r\nAuthorization: Basic dXNlcjpwdw==\r\n\r\n",
            &|_| false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.basic_user.as_deref(), Some("user"));
        assert_eq!(h.minor_version, Some(0));
        assert!(h.headers.is_empty());
    }

    #[test]
    fn response_framing_rules() {
        let h = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            &|_| false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(response_framing(&h, Some("GET")), Framing::Chunked);
        assert_eq!(response_framing(&h, Some("HEAD")), Framing::None);
        let h = parse_response(b"HTTP/1.0 200 OK\r\n\r\n", &|_| false)
            .unwrap()
            .unwrap();
        assert_eq!(response_framing(&h, Some("GET")), Framing::UntilClose);
    }

    #[test]
    fn chunks_and_params() {
        assert_eq!(chunk_size(b"1A;x=y").unwrap(), 26);
        assert!(chunk_size(b"zz").is_err());
        assert!(chunk_size(b"ffffffffffffffffff").is_err());
        assert_eq!(
            hide_params("a=1&Password=s&b", &["password".into()]),
            "a=1&Password=xxxxx&b"
        );
    }
}

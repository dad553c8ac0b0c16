//! The HTTP client shared by the HTTP and Elasticsearch outputs: hyper 1 over rustls,
//! round-robin over `hosts`, basic auth or an API key, custom headers, and a timeout on
//! every request (hyper-util's client has none of its own).
//!
//! The outputs' `publish` is synchronous (it runs on the pipeline thread), so the client
//! owns a one-thread tokio runtime and blocks on each request. It only sends and reports;
//! whether a status means "retry" or "drop" is the output's decision.

use super::OutputError;
use crate::config::SslConfig;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// How the client authenticates.
#[derive(Clone, Default)]
pub enum Auth {
    #[default]
    None,
    Basic {
        username: String,
        password: String,
    },
    /// Elasticsearch API key: `id:key` (encoded here) or already base64-encoded.
    ApiKey(String),
}

/// Everything the client needs, taken from an output section.
pub struct ClientSettings<'a> {
    /// The output section, for error messages: `output.http`.
    pub key: &'static str,
    /// The output's name, for error messages: `http`.
    pub output: &'static str,
    pub hosts: &'a [String],
    pub ssl: Option<&'a SslConfig>,
    pub timeout: Duration,
    pub auth: Auth,
    pub headers: &'a std::collections::BTreeMap<String, String>,
}

/// A response, body read in full.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// The body's start, as text, for log lines.
    pub fn excerpt(&self) -> String {
        excerpt(&self.body)
    }

    /// `Retry-After` in seconds, when the server sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        self.headers
            .get(hyper::header::RETRY_AFTER)?
            .to_str()
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
    }
}

/// The first 200 characters of a body, on one line.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(400)]);
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    one_line.trim().to_string()
}

/// One base URL of `hosts`: scheme, authority and an optional path prefix.
#[derive(Debug, Clone)]
pub struct Host {
    pub url: String,
    pub https: bool,
}

/// Parses `hosts`: `http://a:9200`, `https://b`, or `c:8080` (http assumed).
pub fn parse_hosts(hosts: &[String], key: &str) -> Result<Vec<Host>, OutputError> {
    if hosts.is_empty() {
        return Err(OutputError::Config(format!(
            "{key}.hosts: no host configured"
        )));
    }
    hosts
        .iter()
        .map(|h| {
            let url = if h.contains("://") {
                h.trim_end_matches('/').to_string()
            } else {
                format!("http://{}", h.trim_end_matches('/'))
            };
            let uri: Uri = url.parse().map_err(|e| {
                OutputError::Config(format!("{key}.hosts: {h:?} is not a URL: {e}"))
            })?;
            let https = match uri.scheme_str() {
                Some("https") => true,
                Some("http") => false,
                other => {
                    return Err(OutputError::Config(format!(
                        "{key}.hosts: {h:?}: scheme {other:?} is not http or https"
                    )));
                }
            };
            if uri.host().is_none() {
                return Err(OutputError::Config(format!(
                    "{key}.hosts: {h:?} has no host"
                )));
            }
            Ok(Host { url, https })
        })
        .collect()
}

/// The client: one per output.
pub struct HttpClient {
    rt: tokio::runtime::Runtime,
    client: Client<Connector, Full<Bytes>>,
    pub hosts: Vec<Host>,
    next: usize,
    timeout: Duration,
    headers: HeaderMap,
    output: &'static str,
}

impl HttpClient {
    pub fn new(s: ClientSettings<'_>) -> Result<HttpClient, OutputError> {
        let key = s.key;
        let hosts = parse_hosts(s.hosts, key)?;
        let ssl_key = format!("{key}.ssl");
        if s.ssl.is_some_and(|x| !x.enabled) && hosts.iter().any(|h| h.https) {
            return Err(OutputError::Config(format!(
                "{ssl_key}.enabled is false but {key}.hosts has an https:// URL"
            )));
        }
        let tls = super::ssl::client_config(s.ssl, &ssl_key)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(s.timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                OutputError::Config(format!("{key}: cannot start the HTTP client: {e}"))
            })?;
        let client = {
            let _guard = rt.enter();
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(https)
        };
        let mut headers = HeaderMap::new();
        for (k, v) in s.headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                OutputError::Config(format!("{key}.headers: {k:?} is not a valid header name"))
            })?;
            let mut value = HeaderValue::from_str(v).map_err(|_| {
                OutputError::Config(format!("{key}.headers.{k}: not a valid header value"))
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        if let Some(v) = auth_header(&s.auth) {
            headers.insert(AUTHORIZATION, v);
        }
        Ok(HttpClient {
            rt,
            client,
            hosts,
            next: 0,
            timeout: s.timeout,
            headers,
            output: s.output,
        })
    }

    /// The host the next request goes to (round-robin).
    pub fn next_host(&mut self) -> usize {
        let i = self.next % self.hosts.len();
        self.next = self.next.wrapping_add(1);
        i
    }

    /// Sends one request to `hosts[host]` + `path` and reads the whole response. A failure
    /// to get any response (DNS, connect, TLS, timeout) is `OutputError::Unavailable`.
    pub fn send(
        &mut self,
        method: Method,
        host: usize,
        path: &str,
        content_type: Option<&'static str>,
        gzip: bool,
        body: Bytes,
    ) -> Result<Response, OutputError> {
        let url = format!("{}{path}", self.hosts[host].url);
        let mut req = Request::builder().method(method).uri(&url);
        let h = req.headers_mut().expect("builder is fresh");
        h.extend(self.headers.clone());
        if let Some(ct) = content_type {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        if gzip {
            h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        let req = req.body(Full::new(body)).map_err(|e| {
            OutputError::Config(format!(
                "{} output: cannot build a request to {url}: {e}",
                self.output
            ))
        })?;
        let client = &self.client;
        let timeout = self.timeout;
        let result = self.rt.block_on(async {
            tokio::time::timeout(timeout, async {
                let resp = client.request(req).await.map_err(|e| error_chain(&e))?;
                let (parts, body) = resp.into_parts();
                let body = body
                    .collect()
                    .await
                    .map_err(|e| format!("reading the response: {}", error_chain(&e)))?
                    .to_bytes();
                Ok::<_, String>(Response {
                    status: parts.status,
                    headers: parts.headers,
                    body,
                })
            })
            .await
        });
        match result {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(msg)) => Err(OutputError::Unavailable {
                output: self.output,
                message: format!("{url}: {msg}"),
                retry_after: None,
            }),
            Err(_) => Err(OutputError::Unavailable {
                output: self.output,
                message: format!(
                    "{url}: no response within {} (timeout)",
                    humantime::format_duration(timeout)
                ),
                retry_after: None,
            }),
        }
    }

    /// The host URL at `i`, for log lines.
    pub fn host_url(&self, i: usize) -> &str {
        &self.hosts[i].url
    }
}

fn auth_header(a: &Auth) -> Option<HeaderValue> {
    let text = match a {
        Auth::None => return None,
        Auth::Basic { username, password } if username.is_empty() && password.is_empty() => {
            return None;
        }
        Auth::Basic { username, password } => format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
        ),
        Auth::ApiKey(k) if k.is_empty() => return None,
        Auth::ApiKey(k) if k.contains(':') => format!(
            "ApiKey {}",
            base64::engine::general_purpose::STANDARD.encode(k)
        ),
        Auth::ApiKey(k) => format!("ApiKey {k}"),
    };
    let mut v = HeaderValue::from_str(&text).ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// An error and its sources on one line, without repeating a message already included.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let m = err.to_string();
        if !parts.iter().any(|p| p.contains(&m)) {
            parts.push(m);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// Gzips `data` at `level` (1-9).
pub fn gzip(data: &[u8], level: u32) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::new(level),
    );
    enc.write_all(data).expect("writing to a Vec");
    enc.finish().expect("writing to a Vec")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_get_a_scheme_and_bad_ones_name_the_setting() {
        let h = parse_hosts(
            &["localhost:9200".into(), "https://es:9243/".into()],
            "output.elasticsearch",
        )
        .unwrap();
        assert_eq!(h[0].url, "http://localhost:9200");
        assert!(!h[0].https);
        assert_eq!(h[1].url, "https://es:9243");
        assert!(h[1].https);
        let e = parse_hosts(&["ftp://x".into()], "output.http").unwrap_err();
        assert!(e.to_string().starts_with("output.http.hosts"), "{e}");
    }

    #[test]
    fn api_keys_are_encoded_like_beats_and_secrets_are_sensitive() {
        let v = auth_header(&Auth::ApiKey("id:key".into())).unwrap();
        assert_eq!(v.to_str().unwrap(), "ApiKey aWQ6a2V5");
        assert!(v.is_sensitive());
        let v = auth_header(&Auth::Basic {
            username: "u".into(),
            password: "p".into(),
        })
        .unwrap();
        assert_eq!(v.to_str().unwrap(), "Basic dTpw");
    }
}

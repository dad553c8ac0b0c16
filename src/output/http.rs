//! `output.http`: POSTs each batch to a collector, as `json_lines` (NDJSON) or `json_array`,
//! optionally gzipped.
//!
//! The status decides what becomes of the batch: 2xx acknowledges it; 429, 5xx (and 408)
//! mean "come back later" (retried with backoff, after `Retry-After` when given); any other
//! 4xx means the collector will never take it, so the batch is dropped and the status and
//! the body's start are logged. Connection errors and timeouts are retried.

use super::check::{CheckFailed, Steps, build_client, check_http_hosts, fail};
use super::http_client::Response;
use super::http_client::{Auth, ClientSettings, HttpClient, gzip};
use super::network::{Batching, Defaults, NetworkSettings};
use super::{Outcome, Output, OutputError, encode_into};
use crate::config::ConfigError;
use crate::event::Record;
use crate::monitor::{self, METRICS};
use bytes::Bytes;
use hyper::Method;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How a batch is written in the request body (`format`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// One JSON object per line.
    JsonLines,
    /// One JSON array of the batch's events.
    JsonArray,
}

/// `output.http`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct HttpOutputConfig {
    pub enabled: bool,
    #[serde(flatten)]
    pub network: NetworkSettings<Http>,
    pub path: String,
    pub format: Format,
    pub compression_level: u32,
    pub headers: BTreeMap<String, String>,
    pub username: String,
    pub password: String,
}

impl Default for HttpOutputConfig {
    fn default() -> Self {
        HttpOutputConfig {
            enabled: true,
            network: NetworkSettings::default(),
            path: "/events".into(),
            format: Format::JsonLines,
            compression_level: 0,
            headers: BTreeMap::new(),
            username: String::new(),
            password: String::new(),
        }
    }
}

/// The registry's handle on the HTTP output.
#[derive(Debug)]
pub struct Http;

impl Defaults for Http {
    const HOSTS: &'static [&'static str] = &["http://localhost:8080"];
    const BULK_MAX_SIZE: usize = 500;
}

impl super::Kind for Http {
    const NAME: &'static str = "http";
    type Config = HttpOutputConfig;
    fn enabled(c: &HttpOutputConfig) -> bool {
        c.enabled
    }
    fn validate(h: &HttpOutputConfig) -> Result<(), ConfigError> {
        h.network.validate("http")?;
        if h.compression_level > 9 {
            return Err(ConfigError::invalid(
                "output.http.compression_level",
                format!("{} is not between 0 (off) and 9", h.compression_level),
            ));
        }
        Ok(())
    }
    fn batching(c: &HttpOutputConfig) -> Option<Batching> {
        Some(c.network.batching())
    }
    fn build(c: &HttpOutputConfig) -> Result<Box<dyn Output>, OutputError> {
        Ok(Box::new(HttpOutput::new(c)?))
    }
    fn test(h: &HttpOutputConfig, s: &mut Steps<'_>) -> Result<(), CheckFailed> {
        s.line("http output");
        s.indent = 2;
        let client = build_client(
            s,
            ClientSettings {
                key: "output.http",
                output: "http",
                hosts: &h.network.hosts,
                ssl: h.network.ssl.as_ref(),
                timeout: h.network.timeout.get(),
                auth: Auth::Basic {
                    username: h.username.clone(),
                    password: h.password.clone(),
                },
                headers: &h.headers,
            },
        )?;
        check_http_hosts(
            s,
            "output.http",
            &h.network.hosts,
            h.network.ssl.as_ref(),
            client,
            |s, client, i| {
                let body = if h.format == Format::JsonArray {
                    "[]"
                } else {
                    ""
                };
                let path = if h.path.starts_with('/') {
                    h.path.clone()
                } else {
                    format!("/{}", h.path)
                };
                s.step(&format!("POST an empty batch to {path}"), || {
                let r = client
                    .send(Method::POST, i, &path, Some("application/json"), false, Bytes::from(body))
                    .map_err(|e| fail("output.http.hosts", e.to_string()))?;
                match r.status.as_u16() {
                    200..=299 => Ok(((), r.status.to_string())),
                    401 | 403 => Err(fail(
                        "output.http.password",
                        format!(
                            "{} refused the credentials of user {:?} ({}); check output.http.username and output.http.password",
                            client.host_url(i), h.username, r.status
                        ),
                    )),
                    _ => Ok(((), format!("answered {} to an empty batch", r.status))),
                }
            })
            },
        )
    }
    fn populated() -> HttpOutputConfig {
        let mut c = HttpOutputConfig::default();
        c.network.ssl = Some(Default::default());
        c
    }
}

pub struct HttpOutput {
    client: HttpClient,
    path: String,
    array: bool,
    level: u32,
    buf: Vec<u8>,
}

impl HttpOutput {
    pub fn new(c: &HttpOutputConfig) -> Result<HttpOutput, OutputError> {
        let client = HttpClient::new(ClientSettings {
            key: "output.http",
            output: "http",
            hosts: &c.network.hosts,
            ssl: c.network.ssl.as_ref(),
            timeout: c.network.timeout.get(),
            auth: Auth::Basic {
                username: c.username.clone(),
                password: c.password.clone(),
            },
            headers: &c.headers,
        })?;
        let path = if c.path.is_empty() || c.path.starts_with('/') {
            c.path.clone()
        } else {
            format!("/{}", c.path)
        };
        Ok(HttpOutput {
            client,
            path,
            array: c.format == Format::JsonArray,
            level: c.compression_level,
            buf: Vec::with_capacity(256 * 1024),
        })
    }

    fn encode(&mut self, batch: &[Record]) {
        self.buf.clear();
        if self.array {
            self.buf.push(b'[');
            for (i, e) in batch.iter().enumerate() {
                if i > 0 {
                    self.buf.push(b',');
                }
                self.buf.extend_from_slice(e.as_bytes());
            }
            self.buf.extend_from_slice(b"]\n");
        } else {
            for e in batch {
                encode_into(&mut self.buf, e, false);
            }
        }
    }
}

impl Output for HttpOutput {
    fn name(&self) -> &'static str {
        "http"
    }

    fn publish(&mut self, batch: &[Record]) -> Result<Outcome, OutputError> {
        self.encode(batch);
        let body = if self.level > 0 {
            Bytes::from(gzip(&self.buf, self.level))
        } else {
            Bytes::copy_from_slice(&self.buf)
        };
        let len = body.len() as u64;
        let content_type = if self.array {
            "application/json"
        } else {
            "application/x-ndjson"
        };
        let host = self.client.next_host();
        let resp = self.client.send(
            Method::POST,
            host,
            &self.path,
            Some(content_type),
            self.level > 0,
            body,
        )?;
        let url = format!("{}{}", self.client.host_url(host), self.path);
        let status = resp.status.as_u16();
        match status {
            200..=299 => {
                monitor::add(&METRICS.output_write_bytes, len);
                Ok(Outcome::Acked)
            }
            408 | 429 | 500..=599 => Err(OutputError::Unavailable {
                output: "http",
                message: format!("{url} answered {}{}", resp.status, with_body(&resp)),
                retry_after: resp.retry_after(),
            }),
            400..=499 => Ok(Outcome::all_dropped(
                batch.len(),
                format!(
                    "{url} refused the batch with {} (not retried){}",
                    resp.status,
                    with_body(&resp)
                ),
            )),
            _ => Err(OutputError::Unavailable {
                output: "http",
                message: format!("{url} answered an unexpected {}", resp.status),
                retry_after: None,
            }),
        }
    }
}

/// `: <body excerpt>` when the response has a body.
fn with_body(r: &Response) -> String {
    let e = r.excerpt();
    if e.is_empty() {
        String::new()
    } else {
        format!(": {e}")
    }
}

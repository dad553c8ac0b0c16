//! `output.http`: POSTs each batch to a collector, as `json_lines` (NDJSON) or `json_array`,
//! optionally gzipped.
//!
//! The status decides what becomes of the batch: 2xx acknowledges it; 429, 5xx (and 408)
//! mean "come back later" (retried with backoff, after `Retry-After` when given); any other
//! 4xx means the collector will never take it, so the batch is dropped and the status and
//! the body's start are logged. Connection errors and timeouts are retried.

use super::http_client::Response;
use super::http_client::{Auth, ClientSettings, HttpClient, gzip};
use super::{Outcome, Output, OutputError, encode_into};
use crate::config::HttpOutputConfig;
use crate::event::Record;
use crate::monitor::{self, METRICS};
use bytes::Bytes;
use hyper::Method;

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
            hosts: &c.hosts,
            ssl: c.ssl.as_ref(),
            timeout: c.timeout.get(),
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
            array: c.format == "json_array",
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

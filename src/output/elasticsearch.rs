//! `output.elasticsearch`: the `_bulk` API over the shared HTTP client, round-robin over
//! `hosts`, one `create` action per event into the index named by `index`
//! (`connbeat-%{+yyyy.MM.dd}`).
//!
//! `_bulk` answers 200 even when items fail, so every response's `errors` and `items` are
//! read: an item created (2xx), or already there (409 on `create`: a retried bulk request),
//! is acknowledged; an item refused with 429 or 5xx is retried; any other 4xx item is
//! dropped with the error type and reason logged. Each document's `_id` is a hash of the
//! event's JSON (which includes `@timestamp` and the connection cookie), the same on every
//! attempt and after a restart, so a bulk request sent twice cannot index an event twice.

use super::check::{CheckFailed, Steps, build_client, check_http_hosts, fail};
use super::format::{RecordFields, Template};
use super::http_client::{Auth, ClientSettings, HttpClient, Response};
use super::network::{Batching, Defaults, NetworkSettings};
use super::{EventStatus, Outcome, Output, OutputError};
use crate::config::ConfigError;
use crate::event::Record;
use crate::monitor::{self, METRICS};
use base64::Engine;
use bytes::Bytes;
use hyper::Method;
use serde_json::Value;
use std::collections::BTreeMap;

/// `output.elasticsearch`
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(default)]
pub struct ElasticsearchOutputConfig {
    pub enabled: bool,
    #[serde(flatten)]
    pub network: NetworkSettings<Elasticsearch>,
    pub index: String,
    pub username: String,
    pub password: String,
    pub api_key: String,
}

impl Default for ElasticsearchOutputConfig {
    fn default() -> Self {
        ElasticsearchOutputConfig {
            enabled: true,
            network: NetworkSettings::default(),
            index: "connbeat-%{+yyyy.MM.dd}".into(),
            username: String::new(),
            password: String::new(),
            api_key: String::new(),
        }
    }
}

/// The registry's handle on the Elasticsearch output.
#[derive(Debug)]
pub struct Elasticsearch;

impl Defaults for Elasticsearch {
    const HOSTS: &'static [&'static str] = &["http://localhost:9200"];
    const BULK_MAX_SIZE: usize = 1600;
}

impl super::Kind for Elasticsearch {
    const NAME: &'static str = "elasticsearch";
    type Config = ElasticsearchOutputConfig;
    fn enabled(c: &ElasticsearchOutputConfig) -> bool {
        c.enabled
    }
    fn validate(c: &ElasticsearchOutputConfig) -> Result<(), ConfigError> {
        c.network.validate("elasticsearch")
    }
    fn batching(c: &ElasticsearchOutputConfig) -> Option<Batching> {
        Some(c.network.batching())
    }
    fn build(c: &ElasticsearchOutputConfig) -> Result<Box<dyn Output>, OutputError> {
        Ok(Box::new(ElasticsearchOutput::new(c)?))
    }
    fn build_for(
        c: &ElasticsearchOutputConfig,
        whole: &crate::config::Config,
    ) -> Result<Box<dyn Output>, OutputError> {
        let mut o = ElasticsearchOutput::new(c)?;
        let t = &whole.setup.template;
        if t.enabled {
            if t.name.is_empty() {
                return Err(OutputError::Config(
                    "setup.template.name: must not be empty (or set setup.template.enabled: false)"
                        .into(),
                ));
            }
            let body = super::template::configured_template(&c.index, whole);
            o.template = Some(TemplateLoad {
                name: t.name.clone(),
                body: Bytes::from(serde_json::to_vec(&body).expect("json serializes")),
                overwrite: t.overwrite,
                loaded: vec![false; c.network.hosts.len()],
            });
        }
        Ok(Box::new(o))
    }
    fn test(e: &ElasticsearchOutputConfig, s: &mut Steps<'_>) -> Result<(), CheckFailed> {
        s.line("elasticsearch output");
        s.indent = 2;
        let auth = if e.api_key.is_empty() {
            Auth::Basic {
                username: e.username.clone(),
                password: e.password.clone(),
            }
        } else {
            Auth::ApiKey(e.api_key.clone())
        };
        let client = build_client(
            s,
            ClientSettings {
                key: "output.elasticsearch",
                output: "elasticsearch",
                hosts: &e.network.hosts,
                ssl: e.network.ssl.as_ref(),
                timeout: e.network.timeout.get(),
                auth,
                headers: &Default::default(),
            },
        )?;
        let index = super::format::Template::parse(&e.index)
            .map_err(|m| fail("output.elasticsearch.index", m))?;
        let now = serde_json::json!({"@timestamp": crate::event::format_timestamp(std::time::SystemTime::now())});
        check_http_hosts(
            s,
            "output.elasticsearch",
            &e.network.hosts,
            e.network.ssl.as_ref(),
            client,
            |s, client, i| {
                let auth_setting = if e.api_key.is_empty() {
                    "output.elasticsearch.password"
                } else {
                    "output.elasticsearch.api_key"
                };
                s.step("authentication (GET /)", || {
                    let r = client
                        .send(Method::GET, i, "/", None, false, Bytes::new())
                        .map_err(|x| fail("output.elasticsearch.hosts", x.to_string()))?;
                    match r.status.as_u16() {
                        200..=299 => {
                            let v: serde_json::Value =
                                serde_json::from_slice(&r.body).unwrap_or_default();
                            let version = v["version"]["number"].as_str().unwrap_or("unknown");
                            Ok(((), format!("Elasticsearch {version}")))
                        }
                        401 | 403 => Err(fail(
                            auth_setting,
                            if e.api_key.is_empty() {
                                format!(
                                    "{} refused the credentials of user {:?} ({}); check output.elasticsearch.username and output.elasticsearch.password",
                                    client.host_url(i), e.username, r.status
                                )
                            } else {
                                format!("{} refused the API key ({})", client.host_url(i), r.status)
                            },
                        )),
                        _ => Err(fail(
                            "output.elasticsearch.hosts",
                            format!(
                                "{} answered {} to GET /: is it Elasticsearch? {}",
                                client.host_url(i),
                                r.status,
                                r.excerpt()
                            ),
                        )),
                    }
                })?;
                let name = index
                    .render(&now)
                    .map_err(|m| fail("output.elasticsearch.index", m))?;
                s.step(&format!("index {name}"), || {
                    let r = client
                        .send(
                            Method::HEAD,
                            i,
                            &format!("/{name}"),
                            None,
                            false,
                            Bytes::new(),
                        )
                        .map_err(|x| fail("output.elasticsearch.hosts", x.to_string()))?;
                    Ok((
                        (),
                        if r.status.is_success() {
                            "exists".into()
                        } else {
                            "does not exist yet; created by the first write".into()
                        },
                    ))
                })
            },
        )
    }
    fn populated() -> ElasticsearchOutputConfig {
        let mut c = ElasticsearchOutputConfig::default();
        c.network.ssl = Some(Default::default());
        c
    }
}

pub struct ElasticsearchOutput {
    client: HttpClient,
    index: Template,
    body: Vec<u8>,
    index_buf: String,
    /// `setup.template`, when the agent loads it.
    template: Option<TemplateLoad>,
}

/// The index template to load on each host before its first batch (Beats' setup): kept
/// when one of that name is there, unless `overwrite`.
struct TemplateLoad {
    name: String,
    body: Bytes,
    overwrite: bool,
    /// Per host: loaded (or found) already.
    loaded: Vec<bool>,
}

impl TemplateLoad {
    /// Makes sure host `i` has the template; an error keeps the batch waiting.
    fn ensure(&mut self, client: &mut HttpClient, i: usize) -> Result<(), OutputError> {
        if self.loaded[i] {
            return Ok(());
        }
        let path = format!("/_index_template/{}", self.name);
        let url = format!("{}{path}", client.host_url(i));
        if !self.overwrite {
            let r = client.send(Method::GET, i, &path, None, false, Bytes::new())?;
            if r.status.is_success() {
                tracing::info!(target: "elasticsearch",
                    "index template {} is already on {}; kept (setup.template.overwrite: false)",
                    self.name, client.host_url(i));
                self.loaded[i] = true;
                return Ok(());
            }
        }
        let r = client.send(
            Method::PUT,
            i,
            &path,
            Some("application/json"),
            false,
            self.body.clone(),
        )?;
        if r.status.is_success() {
            tracing::info!(target: "elasticsearch", "loaded index template {} into {}", self.name, client.host_url(i));
            self.loaded[i] = true;
            return Ok(());
        }
        Err(OutputError::Unavailable {
            output: "elasticsearch",
            message: format!(
                "setup.template: PUT {url} answered {}: {}; events wait until the template is loaded \
                 (or set setup.template.enabled: false)",
                r.status,
                r.excerpt()
            ),
            retry_after: r.retry_after(),
        })
    }
}

/// The document id of an event: 128 bits of the SHA-256 of its JSON, base64url.
pub fn document_id(doc_json: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, doc_json);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&d.as_ref()[..16])
}

/// The action line before each document of a `_bulk` body: `{"create":{"_index":…,"_id":…}}`.
#[derive(serde::Serialize)]
struct BulkAction<'a> {
    create: BulkTarget<'a>,
}

#[derive(serde::Serialize)]
struct BulkTarget<'a> {
    #[serde(rename = "_index")]
    index: &'a str,
    #[serde(rename = "_id")]
    id: &'a str,
}

impl ElasticsearchOutput {
    pub fn new(c: &ElasticsearchOutputConfig) -> Result<ElasticsearchOutput, OutputError> {
        let index = Template::parse(&c.index)
            .map_err(|e| OutputError::Config(format!("output.elasticsearch.index: {e}")))?;
        if !c.api_key.is_empty() && !c.username.is_empty() {
            return Err(OutputError::Config(
                "output.elasticsearch.api_key: set either api_key or username/password, not both"
                    .into(),
            ));
        }
        let auth = if c.api_key.is_empty() {
            Auth::Basic {
                username: c.username.clone(),
                password: c.password.clone(),
            }
        } else {
            Auth::ApiKey(c.api_key.clone())
        };
        let client = HttpClient::new(ClientSettings {
            key: "output.elasticsearch",
            output: "elasticsearch",
            hosts: &c.network.hosts,
            ssl: c.network.ssl.as_ref(),
            timeout: c.network.timeout.get(),
            auth,
            headers: &BTreeMap::new(),
        })?;
        Ok(ElasticsearchOutput {
            client,
            index,
            body: Vec::with_capacity(1 << 20),
            index_buf: String::new(),
            template: None,
        })
    }

    /// Reads a 200 answer's items into `statuses` (for the events in `sent`, in order).
    fn settle(
        &self,
        url: &str,
        resp: &Response,
        sent: &[usize],
        statuses: &mut [EventStatus],
    ) -> Result<(), OutputError> {
        let v: Value =
            serde_json::from_slice(&resp.body).map_err(|e| OutputError::Unavailable {
                output: "elasticsearch",
                message: format!(
                    "{url}: the _bulk answer is not JSON ({e}): {}",
                    resp.excerpt()
                ),
                retry_after: None,
            })?;
        if v.get("errors") == Some(&Value::Bool(false)) {
            for &i in sent {
                statuses[i] = EventStatus::Acked;
            }
            return Ok(());
        }
        let items = v
            .get("items")
            .and_then(Value::as_array)
            .filter(|items| items.len() == sent.len())
            .ok_or_else(|| OutputError::Unavailable {
                output: "elasticsearch",
                message: format!(
                    "{url}: the _bulk answer has errors but not one item per document ({} sent): {}",
                    sent.len(),
                    resp.excerpt()
                ),
                retry_after: None,
            })?;
        for (item, &i) in items.iter().zip(sent) {
            // {"create": {"status": 201, "error": {"type": ..., "reason": ...}}}
            let r = item
                .as_object()
                .and_then(|o| o.values().next())
                .unwrap_or(&Value::Null);
            let status = r.get("status").and_then(Value::as_u64).unwrap_or(0);
            statuses[i] = match status {
                200..=299 | 409 => EventStatus::Acked,
                429 | 500..=599 | 0 => EventStatus::Retry,
                _ => {
                    let err = r.get("error").unwrap_or(&Value::Null);
                    let kind = err.get("type").and_then(Value::as_str).unwrap_or("error");
                    let reason = err.get("reason").and_then(Value::as_str).unwrap_or("");
                    let index = r.get("_index").and_then(Value::as_str).unwrap_or("?");
                    EventStatus::Dropped(format!(
                        "Elasticsearch refused the document (status {status}, index {index}): {kind}: {reason}"
                    ))
                }
            };
        }
        Ok(())
    }
}

impl Output for ElasticsearchOutput {
    fn name(&self) -> &'static str {
        "elasticsearch"
    }

    fn publish(&mut self, batch: &[Record]) -> Result<Outcome, OutputError> {
        let mut statuses = vec![EventStatus::Retry; batch.len()];
        let mut sent = Vec::with_capacity(batch.len());
        self.body.clear();
        for (i, e) in batch.iter().enumerate() {
            if let Err(m) = self
                .index
                .render_into(&RecordFields::new(e), &mut self.index_buf)
            {
                statuses[i] = EventStatus::Dropped(format!("output.elasticsearch.index: {m}"));
                continue;
            }
            let id = document_id(e.as_bytes());
            let action = BulkAction {
                create: BulkTarget {
                    index: &self.index_buf,
                    id: &id,
                },
            };
            serde_json::to_writer(&mut self.body, &action).expect("bulk actions serialize");
            self.body.push(b'\n');
            self.body.extend_from_slice(e.as_bytes());
            self.body.push(b'\n');
            sent.push(i);
        }
        if sent.is_empty() {
            return Ok(Outcome::PerEvent(statuses));
        }
        let len = self.body.len() as u64;
        let host = self.client.next_host();
        if let Some(t) = &mut self.template {
            t.ensure(&mut self.client, host)?;
        }
        let url = format!("{}/_bulk", self.client.host_url(host));
        let resp = self.client.send(
            Method::POST,
            host,
            "/_bulk",
            Some("application/x-ndjson"),
            false,
            Bytes::copy_from_slice(&self.body),
        )?;
        match resp.status.as_u16() {
            200..=299 => {
                monitor::add(&METRICS.output_write_bytes, len);
                self.settle(&url, &resp, &sent, &mut statuses)?;
            }
            // Throttled, overloaded, or credentials refused: nothing was indexed; retry
            // (a credential fix must not lose the events queued meanwhile).
            401 | 403 | 408 | 429 | 500..=599 => {
                let hint = if matches!(resp.status.as_u16(), 401 | 403) {
                    " (check output.elasticsearch.username/password or api_key)"
                } else {
                    ""
                };
                return Err(OutputError::Unavailable {
                    output: "elasticsearch",
                    message: format!("{url} answered {}{hint}: {}", resp.status, resp.excerpt()),
                    retry_after: resp.retry_after(),
                });
            }
            _ => {
                let why = format!(
                    "{url} refused the whole bulk request with {} (not retried): {}",
                    resp.status,
                    resp.excerpt()
                );
                for &i in &sent {
                    statuses[i] = EventStatus::Dropped(why.clone());
                }
            }
        }
        if statuses.iter().all(|s| *s == EventStatus::Acked) {
            Ok(Outcome::Acked)
        } else {
            Ok(Outcome::PerEvent(statuses))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn document_ids_are_stable_and_differ_by_content() {
        let a = super::document_id(br#"{"cookie":"1","action":"open"}"#);
        assert_eq!(a, super::document_id(br#"{"cookie":"1","action":"open"}"#));
        assert_ne!(
            a,
            super::document_id(br#"{"cookie":"1","action":"closed"}"#)
        );
        assert_eq!(a.len(), 22);
    }
}

//! Outputs: where finished events go. One trait, one implementation per destination.
//!
//! An output only writes batches; batching, counting and shutdown belong to
//! [`crate::publish`]. A network output implements the same trait, so the pipeline treats
//! every destination alike.

pub mod check;
mod console;
pub mod elasticsearch;
mod file;
pub mod format;
pub mod http;
pub mod http_client;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod ssl;
pub mod template;

pub use console::ConsoleOutput;
pub use file::FileOutput;
pub use http::HttpOutput;

use crate::config::Config;
use crate::event::Record;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum OutputError {
    /// Writing failed; the whole batch can be retried.
    #[error("{output} output: {message}")]
    Write {
        output: &'static str,
        message: String,
        #[source]
        source: Option<std::io::Error>,
    },
    /// The destination is unreachable or asked to come back later (connection refused,
    /// timeout, HTTP 5xx or 429); the whole batch is retried, after `retry_after` when the
    /// destination said how long to wait.
    #[error("{output} output: {message}")]
    Unavailable {
        output: &'static str,
        message: String,
        retry_after: Option<Duration>,
    },
    /// A setting is wrong; the message names it.
    #[error("{0}")]
    Config(String),
}

impl OutputError {
    /// How long the destination asked us to wait before the next attempt, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            OutputError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// What became of one event of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventStatus {
    /// Written and confirmed: the event leaves the queue.
    Acked,
    /// Not written this time (e.g. an Elasticsearch item rejected with 429): send it again.
    Retry,
    /// Refused for good (HTTP 4xx, a Kafka message over the size limit): the event is
    /// dropped, counted, and the reason logged by the pipeline. Never retried.
    Dropped(String),
}

/// The result of publishing one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every event of the batch was confirmed.
    Acked,
    /// One status per event, in batch order (same length as the batch).
    PerEvent(Vec<EventStatus>),
}

impl Outcome {
    /// Every event of a batch of `n` refused for the same reason.
    pub fn all_dropped(n: usize, reason: impl Into<String>) -> Outcome {
        Outcome::PerEvent(vec![EventStatus::Dropped(reason.into()); n])
    }
}

/// A destination for events.
///
/// The pipeline calls [`Output::publish`] with a batch and keeps every event until the
/// output says what became of it: `Ok(Outcome::Acked)` confirms all of them,
/// `Ok(Outcome::PerEvent(..))` confirms, retries or drops each one, and `Err(..)` means
/// nothing can be assumed written, so the whole batch is retried with backoff (or dropped
/// after `max_retries`). An output never sleeps or retries by itself.
pub trait Output: Send {
    /// Short name, as in `output.<name>`.
    fn name(&self) -> &'static str;
    /// Writes the batch, in order, and reports what became of each event.
    fn publish(&mut self, batch: &[Record]) -> Result<Outcome, OutputError>;
    /// Makes everything written so far durable or visible.
    fn flush(&mut self) -> Result<(), OutputError> {
        Ok(())
    }
}

/// An output that writes nothing (`-N`): events are built and counted only.
pub struct DryRunOutput;

impl Output for DryRunOutput {
    fn name(&self) -> &'static str {
        "dry-run"
    }
    fn publish(&mut self, batch: &[Record]) -> Result<Outcome, OutputError> {
        crate::monitor::add(
            &crate::monitor::METRICS.output_events_dry_run,
            batch.len() as u64,
        );
        Ok(Outcome::Acked)
    }
}

/// Builds the one enabled output of the configuration.
pub fn from_config(c: &Config) -> Result<Box<dyn Output>, OutputError> {
    if let Some(o) = c.output.console.as_ref().filter(|o| o.enabled) {
        return Ok(Box::new(ConsoleOutput::stdout(o.pretty)));
    }
    if let Some(o) = c.output.file.as_ref().filter(|o| o.enabled) {
        return Ok(Box::new(FileOutput::new(o)?));
    }
    if let Some(o) = c.output.http.as_ref().filter(|o| o.enabled) {
        return Ok(Box::new(HttpOutput::new(o)?));
    }
    if let Some(o) = c.output.elasticsearch.as_ref().filter(|o| o.enabled) {
        return Ok(Box::new(elasticsearch::ElasticsearchOutput::new(o)?));
    }
    #[cfg(feature = "kafka")]
    if let Some(o) = c.output.kafka.as_ref().filter(|o| o.enabled) {
        return Ok(Box::new(kafka::KafkaOutput::new(o)?));
    }
    let name = crate::config::enabled_outputs(c)
        .first()
        .copied()
        .unwrap_or("none");
    Err(OutputError::Config(format!(
        "output.{name} is not available in this build (built without the `{name}` feature)"
    )))
}

/// Appends one event as a line of JSON (or as pretty JSON, which costs a parse) to `buf`.
pub fn encode_into(buf: &mut Vec<u8>, event: &Record, pretty: bool) {
    let parsed = pretty
        .then(|| serde_json::from_str::<serde_json::Value>(event.as_str()).ok())
        .flatten();
    match parsed {
        Some(v) => {
            serde_json::to_writer_pretty(&mut *buf, &v).expect("a JSON value always serializes")
        }
        // Compact (or, never seen, not JSON: shown as it is rather than as `null`).
        None => buf.extend_from_slice(event.as_bytes()),
    }
    buf.push(b'\n');
}

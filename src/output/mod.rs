//! Outputs: where finished events go. One trait, one implementation per destination.
//!
//! An output only writes batches; batching, counting and shutdown belong to
//! [`crate::publish`]. A network output implements the same trait, so the pipeline treats
//! every destination alike.
//!
//! An output is its module (its config struct, its [`Kind`]: validation, construction,
//! `test output`) plus one line of the registry below, which declares its `output.<name>`
//! section. Validation, construction, the pipeline's batching and `test output` read the
//! registry.

pub mod check;
mod console;
pub mod elasticsearch;
mod file;
pub mod format;
pub mod http;
pub mod http_client;
pub mod kafka;
pub mod logstash;
pub mod network;
pub mod redis;
pub mod resp;
pub mod selector;
pub mod ssl;
pub mod stream;
pub mod template;

pub use console::{ConsoleOutput, ConsoleOutputConfig};
pub use elasticsearch::ElasticsearchOutputConfig;
pub use file::{FileOutput, FileOutputConfig};
pub use http::{HttpOutput, HttpOutputConfig};

use crate::config::{Config, ConfigError};
use crate::event::Record;
use check::{CheckFailed, Steps};
use network::Batching;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use thiserror::Error;

/// What an output's module gives the registry.
pub trait Kind {
    /// `output.<NAME>`.
    const NAME: &'static str;
    /// Its section of the configuration.
    type Config: Serialize + DeserializeOwned + Default + Clone + std::fmt::Debug + PartialEq;
    fn enabled(c: &Self::Config) -> bool;
    /// Checks beyond types, each failure naming its key.
    fn validate(_c: &Self::Config) -> Result<(), ConfigError> {
        Ok(())
    }
    /// Batch size, retries and backoff of a network output (local outputs: the defaults).
    fn batching(_c: &Self::Config) -> Option<Batching> {
        None
    }
    fn build(c: &Self::Config) -> Result<Box<dyn Output>, OutputError>;
    /// Builds it for the agent, which may read settings outside the section
    /// (`setup.template` for Elasticsearch).
    fn build_for(c: &Self::Config, _whole: &Config) -> Result<Box<dyn Output>, OutputError> {
        Self::build(c)
    }
    /// `test output`: connects the way the agent would, printing each step.
    fn test(c: &Self::Config, s: &mut Steps<'_>) -> Result<(), CheckFailed>;
    /// The section with every optional part present (the known keys come from it).
    fn populated() -> Self::Config {
        Self::Config::default()
    }
}

/// One present `output.<name>` section, whatever its kind.
pub trait Section {
    fn name(&self) -> &'static str;
    fn enabled(&self) -> bool;
    fn validate(&self) -> Result<(), ConfigError>;
    fn batching(&self) -> Option<Batching>;
    fn build(&self) -> Result<Box<dyn Output>, OutputError>;
    fn build_for(&self, whole: &Config) -> Result<Box<dyn Output>, OutputError>;
    fn test(&self, s: &mut Steps<'_>) -> Result<(), CheckFailed>;
}

struct Of<'a, K: Kind>(&'a K::Config);

impl<K: Kind> Section for Of<'_, K> {
    fn name(&self) -> &'static str {
        K::NAME
    }
    fn enabled(&self) -> bool {
        K::enabled(self.0)
    }
    fn validate(&self) -> Result<(), ConfigError> {
        K::validate(self.0)
    }
    fn batching(&self) -> Option<Batching> {
        K::batching(self.0)
    }
    fn build(&self) -> Result<Box<dyn Output>, OutputError> {
        K::build(self.0)
    }
    fn build_for(&self, whole: &Config) -> Result<Box<dyn Output>, OutputError> {
        K::build_for(self.0, whole)
    }
    fn test(&self, s: &mut Steps<'_>) -> Result<(), CheckFailed> {
        K::test(self.0, s)
    }
}

/// Declares `output.*` from the registry lines.
macro_rules! outputs {
    ($( $field:ident => $kind:ty ),* $(,)?) => {
        /// `output.*`: a section that is present is enabled unless it says `enabled: false`.
        #[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
        #[serde(default)]
        pub struct OutputsConfig {
            $(
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $field: Option<<$kind as Kind>::Config>,
            )*
        }

        /// Every output's name, in registry order.
        pub const NAMES: &[&str] = &[ $( <$kind as Kind>::NAME, )* ];

        impl OutputsConfig {
            /// The sections present in the file, in registry order.
            pub fn sections(&self) -> Vec<Box<dyn Section + '_>> {
                let mut v: Vec<Box<dyn Section + '_>> = Vec::new();
                $(
                    if let Some(c) = &self.$field {
                        v.push(Box::new(Of::<$kind>(c)));
                    }
                )*
                v
            }

            /// Every section, every optional part present.
            pub fn populated() -> OutputsConfig {
                OutputsConfig {
                    $( $field: Some(<$kind as Kind>::populated()), )*
                }
            }
        }
    };
}

// Every output. Adding one is its module and one line here.
outputs! {
    console => console::Console,
    file => file::File,
    kafka => kafka::Kafka,
    elasticsearch => elasticsearch::Elasticsearch,
    http => http::Http,
    redis => redis::Redis,
    logstash => logstash::Logstash,
}

impl OutputsConfig {
    /// The enabled sections.
    pub fn enabled(&self) -> Vec<Box<dyn Section + '_>> {
        self.sections()
            .into_iter()
            .filter(|s| s.enabled())
            .collect()
    }
}

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
    match c.output.enabled().first() {
        Some(s) => s.build_for(c),
        None => Err(OutputError::Config("no output is enabled".into())),
    }
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

#[cfg(test)]
mod tests {
    use super::Kind;

    /// Every key of these outputs' sections appears in connbeat.yml's commented section.
    #[test]
    fn connbeat_yml_documents_every_key_of_the_redis_and_logstash_outputs() {
        let yml = include_str!("../../connbeat.yml");
        let sections = [
            (
                "redis",
                serde_json::to_value(super::redis::Redis::populated()).unwrap(),
            ),
            (
                "logstash",
                serde_json::to_value(super::logstash::Logstash::populated()).unwrap(),
            ),
        ];
        for (name, v) in sections {
            let start = yml
                .find(&format!("#output.{name}:"))
                .unwrap_or_else(|| panic!("connbeat.yml has no output.{name} section"));
            let section = &yml[start..];
            let section = &section[..section.find("\n\n").unwrap_or(section.len())];
            for key in v.as_object().unwrap().keys() {
                assert!(
                    section.contains(&format!("#  {key}:")),
                    "connbeat.yml does not document output.{name}.{key}"
                );
            }
        }
    }
}

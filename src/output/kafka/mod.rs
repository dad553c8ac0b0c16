//! `output.kafka`: its settings, and the registry's handle on it. The producer itself (in
//! `client`) needs the `kafka` feature; without it, an enabled `output.kafka` is refused
//! when the agent starts.

#[cfg(feature = "kafka")]
mod client;

#[cfg(feature = "kafka")]
pub use client::{KafkaOutput, check, librdkafka_settings};

use super::check::{CheckFailed, Steps};
use super::network::{Batching, Defaults, NetworkSettings};
use super::{Output, OutputError};
use crate::config::ConfigError;
use serde::{Deserialize, Serialize};

/// `compression`: the codec of message batches.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// librdkafka's name of the codec.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct KafkaPartitionConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub round_robin: Option<RoundRobinConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<HashPartitionConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct RoundRobinConfig {
    pub reachable_only: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct HashPartitionConfig {
    pub hash: Vec<String>,
    pub random: bool,
}

/// `sasl.mechanism` (Beats accepts any case).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub enum SaslMechanism {
    #[default]
    #[serde(rename = "PLAIN", alias = "plain")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256", alias = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512", alias = "scram-sha-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// librdkafka's name of the mechanism.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct SaslConfig {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

/// `output.kafka`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct KafkaOutputConfig {
    pub enabled: bool,
    #[serde(flatten)]
    pub network: NetworkSettings<Kafka>,
    pub topic: String,
    pub key: String,
    pub partition: KafkaPartitionConfig,
    pub required_acks: i32,
    pub compression: Compression,
    pub max_message_bytes: usize,
    pub version: String,
    pub client_id: String,
    pub username: String,
    pub password: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sasl: Option<SaslConfig>,
}

impl Default for KafkaOutputConfig {
    fn default() -> Self {
        KafkaOutputConfig {
            enabled: true,
            network: NetworkSettings::default(),
            topic: "connbeat".into(),
            key: String::new(),
            partition: KafkaPartitionConfig::default(),
            required_acks: 1,
            compression: Compression::Gzip,
            max_message_bytes: 1_000_000,
            version: String::new(),
            client_id: "connbeat".into(),
            username: String::new(),
            password: String::new(),
            sasl: None,
        }
    }
}

/// The registry's handle on the Kafka output.
#[derive(Debug)]
pub struct Kafka;

impl Defaults for Kafka {
    const HOSTS: &'static [&'static str] = &["localhost:9092"];
    const BULK_MAX_SIZE: usize = 2048;
}

impl super::Kind for Kafka {
    const NAME: &'static str = "kafka";
    type Config = KafkaOutputConfig;
    fn enabled(c: &KafkaOutputConfig) -> bool {
        c.enabled
    }
    fn validate(k: &KafkaOutputConfig) -> Result<(), ConfigError> {
        k.network.validate("kafka")?;
        if ![-1, 0, 1].contains(&k.required_acks) {
            return Err(ConfigError::invalid(
                "output.kafka.required_acks",
                format!(
                    "{} is not one of -1 (all), 0 (none), 1 (leader)",
                    k.required_acks
                ),
            ));
        }
        if k.topic.is_empty() {
            return Err(ConfigError::invalid(
                "output.kafka.topic",
                "must not be zero or empty",
            ));
        }
        Ok(())
    }
    fn batching(c: &KafkaOutputConfig) -> Option<Batching> {
        Some(c.network.batching())
    }
    fn build(_c: &KafkaOutputConfig) -> Result<Box<dyn Output>, OutputError> {
        #[cfg(feature = "kafka")]
        return Ok(Box::new(KafkaOutput::new(_c)?));
        #[cfg(not(feature = "kafka"))]
        Err(unavailable())
    }
    fn test(_c: &KafkaOutputConfig, _s: &mut Steps<'_>) -> Result<(), CheckFailed> {
        #[cfg(feature = "kafka")]
        return check(_s, _c);
        #[cfg(not(feature = "kafka"))]
        Err(super::check::fail(
            "output.kafka",
            unavailable().to_string(),
        ))
    }
    fn populated() -> KafkaOutputConfig {
        let mut c = KafkaOutputConfig {
            sasl: Some(SaslConfig::default()),
            ..Default::default()
        };
        c.network.ssl = Some(Default::default());
        c.partition.round_robin = Some(RoundRobinConfig::default());
        c.partition.hash = Some(HashPartitionConfig::default());
        c
    }
}

#[cfg(not(feature = "kafka"))]
fn unavailable() -> OutputError {
    OutputError::Config(
        "output.kafka is not available in this build (built without the `kafka` feature)".into(),
    )
}

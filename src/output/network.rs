//! The settings every network output shares (`hosts`, `ssl`, `bulk_max_size`,
//! `max_retries`, `backoff`, `timeout`): one struct, flattened into each output's own
//! config, with the output's defaults given by a marker type.

use crate::config::{ConfigError, Duration};
use serde::{Deserialize, Serialize};
use std::marker::PhantomData;

/// The defaults of one network output.
pub trait Defaults {
    /// `hosts` when not set.
    const HOSTS: &'static [&'static str];
    /// `bulk_max_size` when not set.
    const BULK_MAX_SIZE: usize;
    /// `timeout` when not set, in seconds.
    const TIMEOUT_SECS: u64 = 30;
}

/// `hosts`, `ssl`, `bulk_max_size`, `max_retries`, `backoff`, `timeout` of an output whose
/// defaults are `D`'s.
#[derive(Serialize, Deserialize)]
#[serde(default, bound(serialize = "", deserialize = "D: Defaults"))]
pub struct NetworkSettings<D> {
    pub hosts: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl: Option<SslConfig>,
    /// Most events per batch.
    pub bulk_max_size: usize,
    /// Failed attempts after which a batch is dropped; -1: retry forever.
    pub max_retries: i64,
    pub backoff: BackoffConfig,
    pub timeout: Duration,
    #[serde(skip)]
    defaults: PhantomData<fn() -> D>,
}

/// The first shared network setting of an output's `section` that does not type, as its
/// dotted path inside the section, and why. serde loses the path of an error inside a
/// `flatten`ed struct, so the configuration loader asks here to name the key at fault.
pub fn first_invalid_setting(section: &serde_json::Value) -> Option<(String, String)> {
    struct AnyOutput;
    impl Defaults for AnyOutput {
        const HOSTS: &'static [&'static str] = &[];
        const BULK_MAX_SIZE: usize = 0;
    }
    serde_path_to_error::deserialize::<_, NetworkSettings<AnyOutput>>(section)
        .err()
        .map(|e| (e.path().to_string(), e.into_inner().to_string()))
}

impl<D: Defaults> Default for NetworkSettings<D> {
    fn default() -> Self {
        NetworkSettings {
            hosts: D::HOSTS.iter().map(|h| h.to_string()).collect(),
            ssl: None,
            bulk_max_size: D::BULK_MAX_SIZE,
            max_retries: -1,
            backoff: BackoffConfig::default(),
            timeout: Duration::from_secs(D::TIMEOUT_SECS),
            defaults: PhantomData,
        }
    }
}

impl<D> Clone for NetworkSettings<D> {
    fn clone(&self) -> Self {
        NetworkSettings {
            hosts: self.hosts.clone(),
            ssl: self.ssl.clone(),
            bulk_max_size: self.bulk_max_size,
            max_retries: self.max_retries,
            backoff: self.backoff.clone(),
            timeout: self.timeout,
            defaults: PhantomData,
        }
    }
}

impl<D> PartialEq for NetworkSettings<D> {
    fn eq(&self, o: &Self) -> bool {
        (
            &self.hosts,
            &self.ssl,
            self.bulk_max_size,
            self.max_retries,
            &self.backoff,
            self.timeout,
        ) == (
            &o.hosts,
            &o.ssl,
            o.bulk_max_size,
            o.max_retries,
            &o.backoff,
            o.timeout,
        )
    }
}

impl<D> std::fmt::Debug for NetworkSettings<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkSettings")
            .field("hosts", &self.hosts)
            .field("ssl", &self.ssl)
            .field("bulk_max_size", &self.bulk_max_size)
            .field("max_retries", &self.max_retries)
            .field("backoff", &self.backoff)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl<D> NetworkSettings<D> {
    /// The checks every network output needs, keys named under `output.<name>`.
    pub fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("output.{name}.{k}");
        if self.hosts.is_empty() {
            return Err(ConfigError::invalid(
                &key("hosts"),
                "must not be zero or empty",
            ));
        }
        if self.backoff.init.get().is_zero() {
            return Err(ConfigError::invalid(
                &key("backoff.init"),
                "must not be zero or empty",
            ));
        }
        if self.backoff.max < self.backoff.init {
            return Err(ConfigError::invalid(
                &key("backoff.max"),
                format!(
                    "{} is shorter than {} ({})",
                    self.backoff.max,
                    key("backoff.init"),
                    self.backoff.init
                ),
            ));
        }
        Ok(())
    }

    /// The pipeline's view: batch size, retries, backoff.
    pub fn batching(&self) -> Batching {
        Batching {
            bulk_max_size: self.bulk_max_size,
            max_retries: self.max_retries,
            backoff: self.backoff.clone(),
        }
    }
}

/// How the pipeline batches and retries for an output.
#[derive(Debug, Clone)]
pub struct Batching {
    pub bulk_max_size: usize,
    pub max_retries: i64,
    pub backoff: BackoffConfig,
}

/// How a server certificate is checked (`ssl.verification_mode`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VerificationMode {
    /// Chain and host name.
    Full,
    /// Like `full` (Beats' name for the same check).
    Strict,
    /// Chain only, any host name.
    Certificate,
    /// Nothing: any certificate is accepted.
    None,
}

/// A TLS version of `ssl.supported_protocols`, by Beats' name. The versions before 1.2 are
/// known so that choosing one is refused as insecure rather than as a typo.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum TlsVersion {
    #[serde(rename = "SSLv3")]
    Ssl3,
    #[serde(rename = "TLSv1.0")]
    Tls10,
    #[serde(rename = "TLSv1.1")]
    Tls11,
    #[serde(rename = "TLSv1.2")]
    Tls12,
    #[serde(rename = "TLSv1.3")]
    Tls13,
}

impl TlsVersion {
    /// Beats' name of the version.
    pub fn name(self) -> &'static str {
        match self {
            TlsVersion::Ssl3 => "SSLv3",
            TlsVersion::Tls10 => "TLSv1.0",
            TlsVersion::Tls11 => "TLSv1.1",
            TlsVersion::Tls12 => "TLSv1.2",
            TlsVersion::Tls13 => "TLSv1.3",
        }
    }
}

/// The `ssl` block shared by every network output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SslConfig {
    pub enabled: bool,
    pub certificate_authorities: Vec<String>,
    pub certificate: String,
    pub key: String,
    /// The passphrase of an encrypted `key` (PKCS#8 `ENCRYPTED PRIVATE KEY`).
    pub key_passphrase: String,
    pub verification_mode: VerificationMode,
    /// TLS versions offered: `TLSv1.2`, `TLSv1.3` (empty: both).
    pub supported_protocols: Vec<TlsVersion>,
    /// Cipher suites offered, by Beats' names (`ECDHE-RSA-AES-128-GCM-SHA256`; empty: all
    /// the safe ones).
    pub cipher_suites: Vec<String>,
}

impl Default for SslConfig {
    fn default() -> Self {
        SslConfig {
            enabled: true,
            certificate_authorities: Vec::new(),
            certificate: String::new(),
            key: String::new(),
            key_passphrase: String::new(),
            verification_mode: VerificationMode::Full,
            supported_protocols: Vec::new(),
            cipher_suites: Vec::new(),
        }
    }
}

/// Retry backoff shared by every network output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct BackoffConfig {
    pub init: Duration,
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            init: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

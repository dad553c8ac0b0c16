//! The typed shape of `connbeat.yml`.
//!
//! Every key a user can write is a field here, with its default in one place (the `Default`
//! impls), so that `export config` prints exactly what the agent runs with and the loader can
//! tell a misspelt key from a real one by comparing against this model.

use super::types::{ByteSize, Duration};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    /// `beat.name`; empty means the hostname.
    pub name: String,
    pub tags: Vec<String>,
    pub fields: BTreeMap<String, serde_json::Value>,
    pub fields_under_root: bool,
    pub connbeat: ConnbeatConfig,
    pub queue: QueueConfig,
    pub output: OutputsConfig,
    pub http: MonitorHttpConfig,
    pub logging: LoggingConfig,
    pub shutdown_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: String::new(),
            tags: Vec::new(),
            fields: BTreeMap::new(),
            fields_under_root: false,
            connbeat: ConnbeatConfig::default(),
            queue: QueueConfig::default(),
            output: OutputsConfig::default(),
            http: MonitorHttpConfig::default(),
            logging: LoggingConfig::default(),
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

/// Which network namespaces the connection source looks into.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Namespaces {
    /// Only the namespace the agent runs in.
    Host,
    /// Every network namespace on the machine.
    All,
}

/// How the owners of sockets are found (`connbeat.fd_scan`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FdScan {
    /// The BPF iterator where it loads, else /proc.
    Auto,
    /// The BPF iterator, or the agent does not start.
    Bpf,
    /// `/proc/PID/fd` links only.
    Proc,
}

/// `connbeat.*`: the connection metadata source (and the deep-inspection settings, which
/// Beats users expect under the same prefix).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ConnbeatConfig {
    pub poll_interval: Duration,
    pub aggregation: Duration,
    pub expose_process_info: bool,
    pub expose_cmdline: bool,
    pub expose_environ: bool,
    pub environ_allowlist: Vec<String>,
    pub tcp_info: bool,
    pub close_events: bool,
    pub udp: bool,
    pub namespaces: Namespaces,
    pub local_connections: bool,
    pub max_connections: usize,
    /// Where the host's /proc is mounted (a container mounts it elsewhere).
    pub proc_root: String,
    /// The Docker Engine API socket, for container names, images and labels ("" = never ask).
    pub docker_socket: String,
    /// Bound on the number of processes whose details are cached.
    pub max_processes: usize,
    /// A full rescan of every process's fds happens at most this often; between two, only
    /// new or changed processes are looked at.
    pub process_rescan_interval: Duration,
    /// How socket fds are found in processes: one BPF iterator walk, or /proc fd links.
    pub fd_scan: FdScan,
    /// Receive buffer of the close-notification socket; overruns are counted as lost closes.
    pub close_events_buffer_kb: usize,
    /// Answer a poll without dumping when no socket opened or closed since the last dump.
    pub skip_unchanged_polls: bool,
    pub interfaces: InterfacesConfig,
    pub protocols: Vec<ProtocolConfig>,
    pub transaction_timeout: Duration,
}

impl Default for ConnbeatConfig {
    fn default() -> Self {
        ConnbeatConfig {
            poll_interval: Duration::from_secs(2),
            aggregation: Duration::from_secs(30),
            expose_process_info: true,
            expose_cmdline: true,
            expose_environ: false,
            environ_allowlist: Vec::new(),
            tcp_info: true,
            close_events: true,
            udp: false,
            namespaces: Namespaces::Host,
            local_connections: true,
            max_connections: 1_000_000,
            proc_root: "/proc".into(),
            docker_socket: "/var/run/docker.sock".into(),
            max_processes: 65_536,
            process_rescan_interval: Duration::from_secs(60),
            fd_scan: FdScan::Auto,
            close_events_buffer_kb: 8192,
            skip_unchanged_polls: true,
            interfaces: InterfacesConfig::default(),
            protocols: Vec::new(),
            transaction_timeout: Duration::from_secs(10),
        }
    }
}

/// `connbeat.interfaces`: where deep inspection captures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct InterfacesConfig {
    pub device: String,
    pub snaplen: u32,
    pub buffer_size_mb: u32,
    pub bpf_filter: String,
    /// Bound on TCP connections (and, separately, UDP flows) tracked at once; new ones
    /// beyond it are not inspected and are counted.
    pub max_streams: usize,
    /// A TCP connection with no packet for this long is forgotten (pending requests fail).
    pub stream_idle_timeout: Duration,
    /// How far ahead of the expected sequence number an out-of-order segment is kept.
    pub reorder_window_kb: usize,
    /// How long each TCP segment is held so that the segments of its connection are
    /// decoded in time order (captures of multi-core hosts are a little out of order).
    pub sort_window: Duration,
    /// Out-of-order bytes stored per connection direction before a gap is declared.
    pub max_out_of_order_kb: usize,
    /// Bound on all bytes held for reassembly and unparsed messages, every stream together.
    pub reassembly_memory_mb: usize,
    /// IPv4 datagrams in fragment reassembly at once.
    pub max_fragment_datagrams: usize,
    /// A datagram whose fragments stop coming is dropped after this long.
    pub fragment_timeout: Duration,
    /// Requests waiting for a response, per connection; beyond it the oldest fails.
    pub max_pending_requests: usize,
}

impl Default for InterfacesConfig {
    fn default() -> Self {
        InterfacesConfig {
            device: "any".into(),
            snaplen: 65535,
            buffer_size_mb: 32,
            bpf_filter: String::new(),
            max_streams: 65_536,
            stream_idle_timeout: Duration::from_secs(60),
            reorder_window_kb: 1024,
            sort_window: Duration::from_millis(100),
            max_out_of_order_kb: 256,
            reassembly_memory_mb: 256,
            max_fragment_datagrams: 1024,
            fragment_timeout: Duration::from_secs(30),
            max_pending_requests: 1024,
        }
    }
}

/// One entry of `connbeat.protocols`. Keys that only some protocols use are accepted for
/// all of them; the protocol ignores what it does not need.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ProtocolConfig {
    #[serde(rename = "type")]
    pub kind: String,
    pub enabled: bool,
    pub ports: Vec<u16>,
    pub send_headers: Vec<String>,
    pub send_all_headers: bool,
    pub real_ip_header: String,
    pub include_body_for: Vec<String>,
    pub redact_authorization: bool,
    pub hide_keywords: Vec<String>,
    pub max_message_size: usize,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        ProtocolConfig {
            kind: String::new(),
            enabled: true,
            ports: Vec::new(),
            send_headers: Vec::new(),
            send_all_headers: false,
            real_ip_header: String::new(),
            include_body_for: Vec::new(),
            redact_authorization: true,
            hide_keywords: Vec::new(),
            max_message_size: 10 * 1024 * 1024,
        }
    }
}

/// `queue.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct QueueConfig {
    pub mem: MemQueueConfig,
    pub disk: DiskQueueConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct MemQueueConfig {
    pub events: usize,
    pub flush: FlushConfig,
}

impl Default for MemQueueConfig {
    fn default() -> Self {
        MemQueueConfig {
            events: 4096,
            flush: FlushConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct FlushConfig {
    pub min_events: usize,
    pub timeout: Duration,
}

impl Default for FlushConfig {
    fn default() -> Self {
        FlushConfig {
            min_events: 512,
            timeout: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct DiskQueueConfig {
    pub path: String,
    pub max_size: ByteSize,
}

impl Default for DiskQueueConfig {
    fn default() -> Self {
        DiskQueueConfig {
            path: String::new(),
            max_size: ByteSize(1 << 30),
        }
    }
}

/// `output.*`: a section that is present is enabled unless it says `enabled: false`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct OutputsConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console: Option<ConsoleOutputConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<FileOutputConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaOutputConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elasticsearch: Option<ElasticsearchOutputConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpOutputConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ConsoleOutputConfig {
    pub enabled: bool,
    pub pretty: bool,
}

impl Default for ConsoleOutputConfig {
    fn default() -> Self {
        ConsoleOutputConfig {
            enabled: true,
            pretty: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct FileOutputConfig {
    pub enabled: bool,
    pub path: String,
    pub filename: String,
    pub rotate_every_kb: u64,
    pub number_of_files: usize,
    /// Octal permission bits of the files written, as a string ("0600").
    pub permissions: String,
}

impl Default for FileOutputConfig {
    fn default() -> Self {
        FileOutputConfig {
            enabled: true,
            path: "/var/lib/connbeat".into(),
            filename: "connbeat".into(),
            rotate_every_kb: 10240,
            number_of_files: 7,
            permissions: "0600".into(),
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
    pub verification_mode: String,
}

impl Default for SslConfig {
    fn default() -> Self {
        SslConfig {
            enabled: true,
            certificate_authorities: Vec::new(),
            certificate: String::new(),
            key: String::new(),
            verification_mode: "full".into(),
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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct SaslConfig {
    pub mechanism: String,
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct KafkaOutputConfig {
    pub enabled: bool,
    pub hosts: Vec<String>,
    pub topic: String,
    pub key: String,
    pub partition: KafkaPartitionConfig,
    pub required_acks: i32,
    pub compression: String,
    pub max_message_bytes: usize,
    pub version: String,
    pub client_id: String,
    pub username: String,
    pub password: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl: Option<SslConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sasl: Option<SaslConfig>,
    pub bulk_max_size: usize,
    pub max_retries: i64,
    pub backoff: BackoffConfig,
    pub timeout: Duration,
}

impl Default for KafkaOutputConfig {
    fn default() -> Self {
        KafkaOutputConfig {
            enabled: true,
            hosts: vec!["localhost:9092".into()],
            topic: "connbeat".into(),
            key: String::new(),
            partition: KafkaPartitionConfig::default(),
            required_acks: 1,
            compression: "gzip".into(),
            max_message_bytes: 1_000_000,
            version: String::new(),
            client_id: "connbeat".into(),
            username: String::new(),
            password: String::new(),
            ssl: None,
            sasl: None,
            bulk_max_size: 2048,
            max_retries: -1,
            backoff: BackoffConfig::default(),
            timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ElasticsearchOutputConfig {
    pub enabled: bool,
    pub hosts: Vec<String>,
    pub index: String,
    pub username: String,
    pub password: String,
    pub api_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl: Option<SslConfig>,
    pub bulk_max_size: usize,
    pub max_retries: i64,
    pub backoff: BackoffConfig,
    pub timeout: Duration,
}

impl Default for ElasticsearchOutputConfig {
    fn default() -> Self {
        ElasticsearchOutputConfig {
            enabled: true,
            hosts: vec!["http://localhost:9200".into()],
            index: "connbeat-%{+yyyy.MM.dd}".into(),
            username: String::new(),
            password: String::new(),
            api_key: String::new(),
            ssl: None,
            bulk_max_size: 1600,
            max_retries: -1,
            backoff: BackoffConfig::default(),
            timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct HttpOutputConfig {
    pub enabled: bool,
    pub hosts: Vec<String>,
    pub path: String,
    pub format: String,
    pub compression_level: u32,
    pub headers: BTreeMap<String, String>,
    pub username: String,
    pub password: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl: Option<SslConfig>,
    pub bulk_max_size: usize,
    pub max_retries: i64,
    pub backoff: BackoffConfig,
    pub timeout: Duration,
}

impl Default for HttpOutputConfig {
    fn default() -> Self {
        HttpOutputConfig {
            enabled: true,
            hosts: vec!["http://localhost:8080".into()],
            path: "/events".into(),
            format: "json_lines".into(),
            compression_level: 0,
            headers: BTreeMap::new(),
            username: String::new(),
            password: String::new(),
            ssl: None,
            bulk_max_size: 500,
            max_retries: -1,
            backoff: BackoffConfig::default(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// `http.*`: the self-monitoring endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct MonitorHttpConfig {
    pub enabled: bool,
    pub host: String,
    pub port: u16,
}

impl Default for MonitorHttpConfig {
    fn default() -> Self {
        MonitorHttpConfig {
            enabled: false,
            host: "localhost".into(),
            port: 5066,
        }
    }
}

/// `logging.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct LoggingConfig {
    pub level: String,
    pub selectors: Vec<String>,
    pub to_stderr: bool,
    pub metrics: LoggingMetricsConfig,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: "info".into(),
            selectors: Vec::new(),
            to_stderr: true,
            metrics: LoggingMetricsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct LoggingMetricsConfig {
    pub enabled: bool,
    pub period: Duration,
}

impl Default for LoggingMetricsConfig {
    fn default() -> Self {
        LoggingMetricsConfig {
            enabled: true,
            period: Duration::from_secs(30),
        }
    }
}

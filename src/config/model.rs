//! The typed shape of `connbeat.yml`.
//!
//! Every key a user can write is a field here, with its default in one place (the `Default`
//! impls), so that `export config` prints exactly what the agent runs with and the loader can
//! tell a misspelt key from a real one by comparing against this model.

use super::types::{ByteSize, Duration};
pub use crate::inspect::proto::ProtocolConfig;
pub use crate::output::kafka::{
    HashPartitionConfig, KafkaOutputConfig, KafkaPartitionConfig, RoundRobinConfig, SaslConfig,
};
pub use crate::output::network::{BackoffConfig, SslConfig, VerificationMode};
pub use crate::output::{
    ConsoleOutputConfig, ElasticsearchOutputConfig, FileOutputConfig, HttpOutputConfig,
    OutputsConfig,
};
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
    /// Beats processors run on every event before it is queued (see `processors`).
    pub processors: Vec<serde_json::Value>,
    /// `timestamp.precision` of `@timestamp` (and of `event.start`/`event.end` in ECS).
    pub timestamp: TimestampConfig,
    /// `topology.*`: the `connbeat topology` command (the agent ignores it).
    pub topology: TopologyConfig,
    /// `setup.template.*`: the index template the Elasticsearch output loads at startup.
    pub setup: SetupConfig,
}

/// `setup.*` (only `setup.template`'s four keys are read; see `config::beats`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct SetupConfig {
    pub template: TemplateSetupConfig,
}

/// `setup.template`: loaded by the Elasticsearch output before its first batch, on each
/// host, as Beats does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TemplateSetupConfig {
    pub enabled: bool,
    /// `PUT _index_template/<name>`.
    pub name: String,
    /// `index_patterns`; empty: from `output.elasticsearch.index` (placeholders as `*`).
    pub pattern: String,
    /// Replace a template of that name that is already there.
    pub overwrite: bool,
    /// The template's priority among the templates whose patterns match the same indices
    /// (Beats' default, 150; Elasticsearch refuses two overlapping ones of equal priority).
    pub priority: u32,
}

impl Default for TemplateSetupConfig {
    fn default() -> Self {
        TemplateSetupConfig {
            enabled: true,
            name: "connbeat".into(),
            pattern: String::new(),
            overwrite: false,
            priority: 150,
        }
    }
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
            processors: Vec::new(),
            timestamp: TimestampConfig::default(),
            topology: TopologyConfig::default(),
            setup: SetupConfig::default(),
        }
    }
}

/// `topology.*`: what `connbeat topology` reads and how large its graph may grow.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TopologyConfig {
    /// The topic to read with `--kafka`, in `output.kafka`'s keys; absent = `output.kafka`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaOutputConfig>,
    /// The consumer group: instances with the same group split the topic's partitions.
    pub group_id: String,
    /// Bound on the graph's nodes; connections that would add more are counted, not drawn.
    pub max_nodes: usize,
    /// Bound on the graph's edges; connections that would add more are counted, not drawn.
    pub max_edges: usize,
    /// Bound on the connections held to join their two ends; the oldest is folded into
    /// its edge when it is reached.
    pub max_flows: usize,
    /// Default of `--window`: how much event time the graph covers.
    pub window: Duration,
    /// How often a progress line goes to stderr on long reads.
    pub progress_interval: Duration,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        TopologyConfig {
            kafka: None,
            group_id: "connbeat-topology".into(),
            max_nodes: 10_000,
            max_edges: 100_000,
            max_flows: 200_000,
            window: Duration::from_secs(15 * 60),
            progress_interval: Duration::from_secs(5),
        }
    }
}

/// `timestamp.*`
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(default)]
pub struct TimestampConfig {
    pub precision: Precision,
}

/// `timestamp.precision`: how many fractional digits timestamps keep.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Millisecond,
    Microsecond,
    Nanosecond,
}

/// `connbeat.event_format`: the field names events are written with.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum EventFormat {
    /// connbeat's own names (Packetbeat 5/6 style for transactions).
    #[default]
    Classic,
    /// Elastic Common Schema, as Packetbeat 8 writes transactions.
    Ecs,
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

/// Whether outgoing connections are attributed when they connect
/// (`connbeat.connect_recorder`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ConnectRecorderMode {
    /// The BPF connect-time recorder where it loads, else without it.
    Auto,
    /// The recorder, or the agent does not start.
    Bpf,
    /// Never: outgoing connections are attributed only by polls.
    Off,
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
    /// Record the process of each outgoing TCP connection when it connects (BPF).
    pub connect_recorder: ConnectRecorderMode,
    /// Bound on the connects the recorder keeps (kernel maps and the agent's own).
    pub connect_recorder_entries: usize,
    /// Receive buffer of the close-notification socket; overruns are counted as lost closes.
    pub close_events_buffer_kb: usize,
    /// Answer a poll without dumping when no socket opened or closed since the last dump.
    pub skip_unchanged_polls: bool,
    /// Between full dumps (one per `aggregation`), look up only the TCP sockets the
    /// connect-time recorder saw change state.
    pub follow_state_changes: bool,
    pub interfaces: InterfacesConfig,
    pub protocols: Vec<ProtocolConfig>,
    pub transaction_timeout: Duration,
    /// Field names of every event: `classic` or `ecs`.
    pub event_format: EventFormat,
    /// Per-flow traffic counters (Packetbeat's flows); absent = off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flows: Option<FlowsConfig>,
}

/// `connbeat.flows`: a `type: flow` event per flow of the captured traffic every `period`
/// while it is active, and a final one once it has been idle for `timeout`. A section that
/// is present is on unless it says `enabled: false` (as in Packetbeat).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct FlowsConfig {
    pub enabled: bool,
    /// A flow with no packet for this long ends: its final event is published.
    pub timeout: Duration,
    /// How often active flows are published; `-1s`: final events only.
    pub period: FlowPeriod,
    /// Bound on flows tracked at once; packets of new flows beyond it are counted
    /// (`inspect.flows.dropped`), not lost silently.
    pub max_flows: usize,
}

impl Default for FlowsConfig {
    fn default() -> Self {
        FlowsConfig {
            enabled: true,
            timeout: Duration::from_secs(30),
            period: FlowPeriod(Some(Duration::from_secs(10))),
            max_flows: 100_000,
        }
    }
}

impl FlowsConfig {
    /// The flows section when it is on.
    pub fn active(c: &ConnbeatConfig) -> Option<&FlowsConfig> {
        c.flows.as_ref().filter(|f| f.enabled)
    }
}

/// `connbeat.flows.period`: a duration, or a negative one (`-1s`) for none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowPeriod(pub Option<Duration>);

impl Serialize for FlowPeriod {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(d) => d.serialize(s),
            None => s.serialize_str("-1s"),
        }
    }
}

impl<'de> Deserialize<'de> for FlowPeriod {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let negative = match &v {
            serde_json::Value::Number(n) => n.as_f64().is_some_and(|x| x < 0.0),
            serde_json::Value::String(t) => t.trim().starts_with('-'),
            _ => false,
        };
        if negative {
            return Ok(FlowPeriod(None));
        }
        Duration::deserialize(v)
            .map(|d| FlowPeriod(Some(d)))
            .map_err(serde::de::Error::custom)
    }
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
            connect_recorder: ConnectRecorderMode::Auto,
            connect_recorder_entries: 16_384,
            close_events_buffer_kb: 8192,
            skip_unchanged_polls: true,
            follow_state_changes: true,
            interfaces: InterfacesConfig::default(),
            protocols: Vec::new(),
            transaction_timeout: Duration::from_secs(10),
            event_format: EventFormat::Classic,
            flows: None,
        }
    }
}

/// How deep inspection reads live packets (`connbeat.interfaces.type`, Packetbeat's key).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CaptureType {
    /// libpcap, one decoding thread.
    Pcap,
    /// TPACKET_V3 rings read in place, `workers` decoding threads in a fanout group.
    AfPacket,
}

/// `connbeat.interfaces`: where deep inspection captures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct InterfacesConfig {
    #[serde(rename = "type")]
    pub capture_type: CaptureType,
    /// Decoding threads of an `af_packet` capture (flows hashed so each stays on one).
    pub workers: usize,
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
    /// Networks that count as internal for `network.direction` (ECS): CIDRs or the
    /// Beats names `private`, `loopback`, `unicast`, `multicast`, ...
    pub internal_networks: Vec<String>,
}

impl Default for InterfacesConfig {
    fn default() -> Self {
        InterfacesConfig {
            capture_type: CaptureType::Pcap,
            workers: 1,
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
            internal_networks: vec!["private".into()],
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

/// `logging.level`
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    /// Beats' name; the same as `warn`.
    Warning,
    Warn,
    Info,
    Debug,
}

impl LogLevel {
    /// The `tracing` level name.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warning | LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        }
    }
}

/// `logging.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct LoggingConfig {
    pub level: LogLevel,
    pub selectors: Vec<String>,
    pub to_stderr: bool,
    pub metrics: LoggingMetricsConfig,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: LogLevel::Info,
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

//! Protocol plugins: the two traits every parser implements, the transaction they build,
//! the request/response pairing they share, the registry of protocols (one `registry!`
//! line each: the `connbeat.protocols` config enum, the names, the dispatch), and the
//! configured protocols keyed by port.
//!
//! Packetbeat's `TcpProtocolPlugin` (Parse / GapInStream / ReceivedFin / ConnectionTimeout),
//! made type-safe: the stream layer owns buffering (a parser says how many bytes it used,
//! and may ask to skip bytes it has not seen yet, e.g. a body it does not keep), pairing
//! and event building live here once, and a protocol is one folder with a pure `parser.rs`
//! and a `mod.rs` holding its per-connection state, its options and its transaction
//! object, plus its line in the registry.

pub mod amqp;
pub mod cassandra;
pub mod dhcpv4;
pub mod dns;
pub mod http;
pub mod icmp;
pub mod memcache;
pub mod mongodb;
pub mod mysql;
pub mod nfs;
pub mod options;
pub mod pgsql;
pub mod redis;
pub mod sip;
pub mod smtp;
#[cfg(test)]
pub(crate) mod testutil;
pub mod thrift;
pub mod tls;
pub mod txn;

pub use options::{CommonOptions, Entry, Events};
pub use txn::{Done, Pairing, Pending, Txn, TxnObject, status};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;

/// Which way data flows in a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// From the client to the server (requests).
    ToServer,
    /// From the server to the client (responses).
    ToClient,
}

/// A message that could not be parsed; the stream layer discards the bytes it holds for
/// that direction, counts the error, and lets the parser resynchronise on later data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub &'static str);

/// What a parser call can see and produce besides the bytes.
pub struct Cx<'a> {
    /// Timestamp of the packet being processed (or the sweep time), µs since the epoch.
    pub now: u64,
    /// The protocol's transaction timeout, µs.
    pub timeout: u64,
    /// Finished transactions, taken by the engine after each call.
    pub out: &'a mut Vec<Done>,
}

/// What a TCP parser wants after a hole in one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapAction {
    /// The parser skipped the hole itself (e.g. inside a body): keep its state.
    Continue,
    /// Drop the bytes buffered for this direction; the parser reset its state for it.
    Reset,
}

/// A parser of one TCP connection (both directions).
pub trait TcpParser: Send {
    /// Parses the start of `data` (in-order bytes of one direction). Returns how many bytes
    /// it used: 0 means "need more", more than `data.len()` means "also skip the next
    /// `n - data.len()` bytes unseen". Called again with the rest while it makes progress.
    fn parse(&mut self, dir: Dir, data: &[u8], cx: &mut Cx<'_>) -> Result<usize, ParseError>;
    /// `len` bytes of the direction are lost.
    fn gap(&mut self, dir: Dir, len: usize, cx: &mut Cx<'_>) -> GapAction;
    /// The bytes `parse` asked to skip unseen have all gone by (or the direction ended
    /// first); `lost` of them were never captured (holes, or missing at the end).
    fn skipped(&mut self, _dir: Dir, _lost: usize, _cx: &mut Cx<'_>) {}
    /// The direction ended (FIN, after every earlier byte was delivered).
    fn fin(&mut self, _dir: Dir, _cx: &mut Cx<'_>) {}
    /// Periodic: requests older than `cx.timeout` become failed transactions.
    fn expire(&mut self, cx: &mut Cx<'_>);
    /// The connection is gone: publish whatever is pending.
    fn close(&mut self, cx: &mut Cx<'_>);
}

/// A parser of one UDP flow (client port ↔ server port).
pub trait UdpParser: Send {
    fn datagram(&mut self, dir: Dir, data: &[u8], cx: &mut Cx<'_>) -> Result<(), ParseError>;
    /// A datagram with the addresses it went between, which the engine gives every parser;
    /// only a protocol whose flows are keyed by ports alone ([`Protocol::UDP_BY_PORTS`])
    /// needs them, to write each exchange's own ends.
    fn datagram_between(
        &mut self,
        _src: std::net::SocketAddr,
        _dst: std::net::SocketAddr,
        dir: Dir,
        data: &[u8],
        cx: &mut Cx<'_>,
    ) -> Result<(), ParseError> {
        self.datagram(dir, data, cx)
    }
    fn expire(&mut self, cx: &mut Cx<'_>);
    fn close(&mut self, cx: &mut Cx<'_>);
    /// True while requests wait for answers (the flow must not be forgotten yet).
    fn pending(&self) -> bool;
}

/// Settings every protocol gets besides its own `connbeat.protocols` entry.
#[derive(Debug, Clone)]
pub struct Common {
    /// Bound on requests waiting for a response, per connection.
    pub max_pending: usize,
    /// `connbeat.transaction_timeout`, µs: the timeout of a protocol that sets none.
    pub transaction_timeout_us: u64,
    /// `connbeat.event_format`: the default of [`Events`].
    pub event_format: crate::config::EventFormat,
}

pub type TcpFactory = Arc<dyn Fn() -> Box<dyn TcpParser> + Send + Sync>;
pub type UdpFactory = Arc<dyn Fn() -> Box<dyn UdpParser> + Send + Sync>;

/// The parser makers of one configured protocol, one per transport it runs over.
#[derive(Default)]
pub struct Parsers {
    pub tcp: Option<TcpFactory>,
    pub udp: Option<UdpFactory>,
}

/// What a protocol's folder gives the registry: its name, its options, its parsers.
pub trait Protocol {
    /// Its `type` in `connbeat.protocols`.
    const NAME: &'static str;
    /// Its own keys (besides [`CommonOptions`]); unknown keys are refused.
    type Options: Serialize
        + DeserializeOwned
        + Default
        + Clone
        + std::fmt::Debug
        + PartialEq
        + Send
        + Sync
        + 'static;
    /// Its ports when an entry names none (`ports` absent or null); none by default, so
    /// that such an entry is refused. For protocols whose ports are standard and that
    /// Packetbeat configurations do not list (SMTP).
    const DEFAULT_PORTS: &'static [u16] = &[];
    /// Whether its messages have a text form for `send_request` / `send_response`; when
    /// not, those keys are refused for it.
    const TEXT_MESSAGES: bool = false;
    /// Whether it is found by port (false: ICMP, which the engine hands every message of).
    const USES_PORTS: bool = true;
    /// Whether one UDP parser takes every datagram between the same two ports, whatever
    /// the addresses: the messages of one exchange travel between different addresses (a
    /// DHCP client broadcasts from 0.0.0.0, is answered at its new address, renews from
    /// it). Its transactions then name their own ends ([`TxnObject::ends`]).
    const UDP_BY_PORTS: bool = false;
    /// The default of `send_request` and `send_response` (Packetbeat's Cassandra has both
    /// on).
    const SEND_BY_DEFAULT: bool = false;
    /// Parser makers for a configured entry.
    fn parsers(entry: &Entry<Self::Options>, common: &Common) -> Parsers;
    /// Options that reach the most code, for fuzzing.
    fn fuzz_options() -> Self::Options {
        Self::Options::default()
    }
}

/// Declares the registry: the config enum tagged by `type`, the list of names, and the
/// dispatch from an entry to its protocol. Everything else reads these.
macro_rules! registry {
    ($( $variant:ident => $proto:ty ),* $(,)?) => {
        /// One entry of `connbeat.protocols`: a protocol's options, chosen by its `type`.
        #[derive(Debug, Clone, PartialEq)]
        pub enum ProtocolConfig {
            $( $variant(Entry<<$proto as Protocol>::Options>), )*
        }

        /// Every protocol's `type`, in registry order.
        pub const NAMES: &[&str] = &[ $( <$proto as Protocol>::NAME, )* ];

        impl ProtocolConfig {
            /// The protocol's `type`.
            pub fn name(&self) -> &'static str {
                match self { $( Self::$variant(_) => <$proto as Protocol>::NAME, )* }
            }

            /// Whether the protocol is found by port (`ports` is required) or not (ICMP).
            pub fn uses_ports(&self) -> bool {
                match self { $( Self::$variant(_) => <$proto as Protocol>::USES_PORTS, )* }
            }

            /// Whether its UDP flows are keyed by ports alone ([`Protocol::UDP_BY_PORTS`]).
            pub fn udp_by_ports(&self) -> bool {
                match self { $( Self::$variant(_) => <$proto as Protocol>::UDP_BY_PORTS, )* }
            }

            /// The keys every protocol has.
            pub fn common(&self) -> &CommonOptions {
                match self { $( Self::$variant(e) => &e.common, )* }
            }

            pub fn common_mut(&mut self) -> &mut CommonOptions {
                match self { $( Self::$variant(e) => &mut e.common, )* }
            }

            /// The parser makers of this entry.
            pub fn parsers(&self, common: &Common) -> Parsers {
                match self { $( Self::$variant(e) => <$proto as Protocol>::parsers(e, common), )* }
            }

            /// The entry of protocol `name`, read from its keys.
            pub fn from_map(name: &str, map: Map<String, Value>) -> Result<Self, String> {
                $( if name == <$proto as Protocol>::NAME {
                    let no_ports = matches!(map.get("ports"), None | Some(Value::Null));
                    let unset = [!map.contains_key("send_request"), !map.contains_key("send_response")];
                    let mut e: Entry<<$proto as Protocol>::Options> = Entry::from_map(name, map)?;
                    if no_ports {
                        e.common.ports = <$proto as Protocol>::DEFAULT_PORTS.to_vec();
                    }
                    let by_default = <$proto as Protocol>::SEND_BY_DEFAULT;
                    e.common.send_request |= unset[0] && by_default;
                    e.common.send_response |= unset[1] && by_default;
                    if !<$proto as Protocol>::TEXT_MESSAGES
                        && (e.common.send_request || e.common.send_response)
                    {
                        return Err(format!(
                            "`send_request` and `send_response` are not options of {name}: \
                             its messages have no text form here"
                        ));
                    }
                    return Ok(Self::$variant(e));
                } )*
                Err(format!("unknown protocol {name:?}; known: {}", NAMES.join(", ")))
            }

            fn to_map(&self) -> Map<String, Value> {
                match self { $( Self::$variant(e) => e.to_map(), )* }
            }

            /// Every protocol with its default options (known keys, docs).
            pub fn defaults() -> Vec<ProtocolConfig> {
                vec![ $( Self::$variant(Entry {
                    common: CommonOptions {
                        send_request: <$proto as Protocol>::SEND_BY_DEFAULT,
                        send_response: <$proto as Protocol>::SEND_BY_DEFAULT,
                        ..CommonOptions::default()
                    },
                    options: Default::default(),
                }), )* ]
            }

            /// Every protocol with the options that reach the most code (fuzzing).
            pub fn fuzzing() -> Vec<ProtocolConfig> {
                vec![ $( Self::$variant(Entry {
                    common: CommonOptions {
                        max_message_size: 64 * 1024,
                        send_request: <$proto as Protocol>::TEXT_MESSAGES,
                        send_response: <$proto as Protocol>::TEXT_MESSAGES,
                        ..CommonOptions::default()
                    },
                    options: <$proto as Protocol>::fuzz_options(),
                }), )* ]
            }
        }
    };
}

// Every protocol connbeat can inspect. Adding one is its folder and one line here.
registry! {
    Http => http::Proto,
    Dns => dns::Proto,
    Redis => redis::Proto,
    Mysql => mysql::Proto,
    Pgsql => pgsql::Proto,
    Tls => tls::Proto,
    Memcache => memcache::Proto,
    Mongodb => mongodb::Proto,
    Amqp => amqp::Proto,
    Icmp => icmp::Proto,
    Dhcpv4 => dhcpv4::Proto,
    Smtp => smtp::Proto,
    Sip => sip::Proto,
    Nfs => nfs::Proto,
    Cassandra => cassandra::Proto,
    Thrift => thrift::Proto,
}

impl Serialize for ProtocolConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = Map::new();
        m.insert("type".into(), Value::String(self.name().into()));
        m.extend(self.to_map());
        m.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ProtocolConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut map = Map::<String, Value>::deserialize(d)?;
        match map.remove("type") {
            Some(Value::String(name)) => {
                ProtocolConfig::from_map(&name, map).map_err(D::Error::custom)
            }
            _ => Err(D::Error::custom(format!(
                "`type` must name the protocol, one of {}",
                NAMES.join(", ")
            ))),
        }
    }
}

/// A configured protocol, ready to make parsers.
pub struct Configured {
    pub name: &'static str,
    pub tcp: Option<TcpFactory>,
    pub udp: Option<UdpFactory>,
    /// The `max_message_size` of its configuration: bound on unparsed bytes per direction.
    pub max_message_size: usize,
    /// Its transaction timeout, µs (its own, or `connbeat.transaction_timeout`).
    pub timeout_us: u64,
    /// Its UDP flows are keyed by ports alone ([`Protocol::UDP_BY_PORTS`]).
    pub udp_by_ports: bool,
}

/// Configured protocols keyed by port.
pub struct Registry {
    protocols: Vec<Configured>,
    /// Port → index + 1 into `protocols` (0: none).
    by_port: Box<[u8]>,
}

impl Registry {
    /// Builds the registry from the enabled `connbeat.protocols` entries. A port claimed
    /// twice is an error naming the setting.
    pub fn new(configs: &[ProtocolConfig], common: &Common) -> Result<Registry, String> {
        let mut protocols = Vec::new();
        let mut by_port = vec![0u8; 65536].into_boxed_slice();
        for (i, c) in configs
            .iter()
            .enumerate()
            .filter(|(_, c)| c.common().enabled)
        {
            if protocols.len() >= 250 {
                return Err("connbeat.protocols: too many entries".into());
            }
            let parsers = c.parsers(common);
            let o = c.common();
            protocols.push(Configured {
                name: c.name(),
                tcp: parsers.tcp,
                udp: parsers.udp,
                udp_by_ports: c.udp_by_ports(),
                max_message_size: o.max_message_size.max(1),
                timeout_us: o
                    .transaction_timeout
                    .map_or(common.transaction_timeout_us, |t| {
                        t.get().as_micros() as u64
                    }),
            });
            let idx = protocols.len() as u8;
            for &p in &o.ports {
                let slot = &mut by_port[usize::from(p)];
                if *slot != 0 && *slot != idx {
                    return Err(format!(
                        "connbeat.protocols.{i}.ports: port {p} is already used by {}",
                        protocols[usize::from(*slot) - 1].name
                    ));
                }
                *slot = idx;
            }
        }
        Ok(Registry { protocols, by_port })
    }

    /// The protocol configured on `port`, as an index for [`Registry::get`].
    #[inline]
    pub fn on_port(&self, port: u16) -> Option<usize> {
        match self.by_port[usize::from(port)] {
            0 => None,
            i => Some(usize::from(i) - 1),
        }
    }

    pub fn get(&self, i: usize) -> &Configured {
        &self.protocols[i]
    }

    pub fn is_empty(&self) -> bool {
        self.protocols.is_empty()
    }
}

/// Lower-cased `hide_keywords`, etc.: helpers several protocols use.
pub fn lower_all(v: &[String]) -> Vec<String> {
    v.iter().map(|s| s.to_ascii_lowercase()).collect()
}

/// The keys of the SQL protocols (`mysql`, `pgsql`) that bound the rows `send_response`
/// writes (Packetbeat's names and meanings).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RowOptions {
    /// Rows of a result written into `response` (with `send_response`).
    pub max_rows: usize,
    /// Bytes of the values of one such row (separators and quotes not counted).
    pub max_row_length: usize,
}

impl Default for RowOptions {
    fn default() -> Self {
        RowOptions {
            max_rows: 10,
            max_row_length: 1024,
        }
    }
}

/// Rows of a SQL response as `send_response` writes them (Packetbeat's form): CSV, the
/// column names first, at most `max_rows` rows. `max_row_length` bounds the bytes of a
/// row's values, separators and quotes not counted: values are kept until it is reached,
/// the last one cut to fit.
#[derive(Debug, Default)]
pub struct RowsText {
    text: String,
    rows: usize,
}

impl RowsText {
    /// The header line.
    pub fn names(&mut self, names: &[String]) {
        self.text.clear();
        self.rows = 0;
        self.line(names.iter().map(|n| n.as_bytes()), usize::MAX, false);
    }

    /// One row, unless `max_rows` are there. A `None` value (SQL NULL) is written as
    /// `null`, the protocol's own text for it (MySQL's `NULL`, PostgreSQL's nothing).
    pub fn row<'a>(
        &mut self,
        values: impl Iterator<Item = Option<&'a [u8]>>,
        null: &'a [u8],
        max_rows: usize,
        max_len: usize,
    ) {
        if self.rows < max_rows {
            self.rows += 1;
            self.line(values.map(|v| v.unwrap_or(null)), max_len, true);
        }
    }

    /// One CSV line, as Packetbeat writes it: line breaks inside a value written `\n` (and,
    /// in a row, `\r`), then quoted as Go's CSV writer quotes.
    fn line<'a>(&mut self, values: impl Iterator<Item = &'a [u8]>, max_len: usize, row: bool) {
        let mut kept = 0;
        for (i, v) in values.enumerate() {
            if kept >= max_len {
                break;
            }
            let v = &v[..v.len().min(max_len - kept)];
            kept += v.len();
            if i > 0 {
                self.text.push(',');
            }
            let mut v = String::from_utf8_lossy(v).replace('\n', "\\n");
            if row {
                v = v.replace('\r', "\\r");
            }
            let quoted =
                v.contains([',', '"', '\r']) || v.starts_with(char::is_whitespace) || v == "\\.";
            if quoted {
                self.text.push('"');
                self.text.push_str(&v.replace('"', "\"\""));
                self.text.push('"');
            } else {
                self.text.push_str(&v);
            }
        }
        self.text.push('\n');
    }

    /// The text, when there was a header.
    pub fn take(&mut self) -> Option<String> {
        self.rows = 0;
        (!self.text.is_empty()).then(|| std::mem::take(&mut self.text))
    }
}

/// Bytes as text for an event, lossy and bounded.
pub fn text(b: &[u8], max: usize) -> String {
    let b = &b[..b.len().min(max)];
    String::from_utf8_lossy(b).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `max_row_length` counts the values' bytes only, as Packetbeat does: values are kept
    /// until the bound, the last one cut; NULL is the protocol's text; a value with a
    /// separator or a leading space is quoted.
    #[test]
    fn rows_are_bounded_by_the_bytes_of_their_values() {
        let mut t = RowsText::default();
        t.names(&["a".into(), "b".into(), "c".into()]);
        let row = [Some(&b"abc"[..]), Some(b"defg"), Some(b"h")];
        t.row(row.into_iter(), b"NULL", 10, 5);
        t.row(
            [None, Some(&b" x"[..]), Some(b"1,2")].into_iter(),
            b"NULL",
            10,
            100,
        );
        t.row(row.into_iter(), b"NULL", 10, 3);
        t.row(row.into_iter(), b"NULL", 3, 100);
        assert_eq!(
            t.take().as_deref(),
            Some("a,b,c\nabc,de\nNULL,\" x\",\"1,2\"\nabc\n")
        );
        // Line breaks inside values are written as `\n` and `\r` (names: `\n` only); a
        // value cut inside a character ends in U+FFFD, as Go's JSON writes the cut bytes;
        // Go quotes `\.`.
        t.names(&["x\ny".into(), "r\rs".into()]);
        let row = [Some(&b"1\r\n2"[..]), Some("\u{e9}t\u{e9}".as_bytes())];
        t.row(row.into_iter(), b"", 9, 5);
        t.row([Some(&b"\\."[..])].into_iter(), b"", 9, 100);
        assert_eq!(
            t.take().as_deref(),
            Some("x\\ny,\"r\rs\"\n1\\r\\n2,\u{fffd}\n\"\\.\"\n")
        );
    }

    #[test]
    fn a_protocol_timeout_overrides_the_global_one() {
        let c = crate::config::from_yaml_str(
            "output.console: {}\nconnbeat.transaction_timeout: 10s\nconnbeat.protocols:\n  \
             - {type: http, ports: [80], transaction_timeout: 2s}\n  - {type: redis, ports: [6379]}",
            &[],
            &|_| None,
        )
        .unwrap();
        let common = crate::inspect::engine::Settings::from_config(&c).common;
        let r = Registry::new(&c.connbeat.protocols, &common).unwrap();
        let http = r.get(r.on_port(80).unwrap());
        let redis = r.get(r.on_port(6379).unwrap());
        assert_eq!((http.name, http.timeout_us), ("http", 2_000_000));
        assert_eq!((redis.name, redis.timeout_us), ("redis", 10_000_000));
    }

    #[test]
    fn the_registry_names_every_protocol_once() {
        let defaults = ProtocolConfig::defaults();
        let names: Vec<&str> = defaults.iter().map(ProtocolConfig::name).collect();
        assert_eq!(names, NAMES);
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
    }

    #[test]
    fn the_reference_config_documents_every_protocol_and_option() {
        let yml = include_str!("../../../connbeat.yml");
        for p in ProtocolConfig::defaults() {
            let name = p.name();
            assert!(
                yml.contains(&format!("type: {name}")),
                "connbeat.yml: {name}"
            );
            for key in p.to_map().keys() {
                assert!(
                    yml.contains(&format!("#    {key}:")) || yml.contains(&format!("#   {key}:")),
                    "connbeat.yml does not document {name}'s `{key}`"
                );
            }
        }
    }
}

//! Protocol plugins: the two traits every parser implements, the transaction they build,
//! the request/response pairing they share, and the registry keyed by configured ports.
//!
//! Packetbeat's `TcpProtocolPlugin` (Parse / GapInStream / ReceivedFin / ConnectionTimeout),
//! made type-safe: the stream layer owns buffering (a parser says how many bytes it used,
//! and may ask to skip bytes it has not seen yet, e.g. a body it does not keep), pairing
//! and event building live here once, and a protocol is one folder with a pure `parser.rs`
//! and a `mod.rs` holding its per-connection state.

pub mod dns;
pub mod http;
pub mod mysql;
pub mod pgsql;
pub mod redis;
#[cfg(test)]
pub(crate) mod testutil;
pub mod tls;
pub mod txn;

pub use txn::{Pairing, Pending, Txn, status};

use crate::config::ProtocolConfig;
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
    /// `connbeat.transaction_timeout`, µs.
    pub timeout: u64,
    /// Finished transactions, taken by the engine after each call.
    pub out: &'a mut Vec<Txn>,
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
}

pub type TcpFactory = Arc<dyn Fn() -> Box<dyn TcpParser> + Send + Sync>;
pub type UdpFactory = Arc<dyn Fn() -> Box<dyn UdpParser> + Send + Sync>;

/// One protocol as the registry knows it.
pub struct Def {
    pub name: &'static str,
    pub tcp: Option<fn(&ProtocolConfig, &Common) -> TcpFactory>,
    pub udp: Option<fn(&ProtocolConfig, &Common) -> UdpFactory>,
}

/// Every protocol connbeat can inspect. Adding one is one folder and one line here.
pub const ALL: &[Def] = &[
    http::DEF,
    dns::DEF,
    redis::DEF,
    mysql::DEF,
    pgsql::DEF,
    tls::DEF,
];

/// A configured protocol, ready to make parsers.
pub struct Protocol {
    pub name: &'static str,
    pub tcp: Option<TcpFactory>,
    pub udp: Option<UdpFactory>,
    /// The `max_message_size` of its configuration: bound on unparsed bytes per direction.
    pub max_message_size: usize,
}

/// Configured protocols keyed by port.
pub struct Registry {
    protocols: Vec<Protocol>,
    /// Port → index + 1 into `protocols` (0: none).
    by_port: Box<[u8]>,
}

impl Registry {
    /// Builds the registry from the enabled `connbeat.protocols` entries. An unknown type
    /// or a port claimed twice is an error naming the setting.
    pub fn new(configs: &[ProtocolConfig], common: &Common) -> Result<Registry, String> {
        let mut protocols = Vec::new();
        let mut by_port = vec![0u8; 65536].into_boxed_slice();
        for (i, c) in configs.iter().enumerate().filter(|(_, c)| c.enabled) {
            let def = ALL.iter().find(|d| d.name == c.kind).ok_or_else(|| {
                format!("connbeat.protocols.{i}.type: unknown protocol {:?}", c.kind)
            })?;
            if protocols.len() >= 250 {
                return Err("connbeat.protocols: too many entries".into());
            }
            protocols.push(Protocol {
                name: def.name,
                tcp: def.tcp.map(|f| f(c, common)),
                udp: def.udp.map(|f| f(c, common)),
                max_message_size: c.max_message_size.max(1),
            });
            let idx = protocols.len() as u8;
            for &p in &c.ports {
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

    pub fn get(&self, i: usize) -> &Protocol {
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

/// Bytes as text for an event, lossy and bounded.
pub fn text(b: &[u8], max: usize) -> String {
    let b = &b[..b.len().min(max)];
    String::from_utf8_lossy(b).into_owned()
}

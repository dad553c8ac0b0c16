//! Deep inspection: captured traffic on the configured ports becomes protocol transactions.
//!
//! ```text
//! capture (pcap: device or file) ─► engine: decode ─► frag ─► sort window ─► tcp reassembly / udp flows
//!                                    ─► proto parsers (one per connection) ─► Txn ─► Event
//! ```
//! [`capture`] is the only part that touches libpcap; [`engine`] and everything below it
//! are pure state machines driven by (timestamp, frame) pairs, which is how tests and fuzz
//! targets drive them too. The processes behind both ends come from a [`ProcessLookup`]
//! (the connection table in live mode), never from extra /proc scans here.

pub mod afpacket;
pub mod capture;
pub mod decode;
pub mod engine;
pub mod flows;
pub mod frag;
pub mod proto;
pub mod sort;
pub mod tcp;

use crate::config::Config;
use crate::publish::Publisher;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

pub use engine::{Engine, Summary as OfflineSummary};

pub use crate::owner::{ProcessLookup, ProcessRef};

/// True when at least one protocol (or flows) is enabled, i.e. deep inspection is on.
pub fn enabled(config: &Config) -> bool {
    crate::config::FlowsConfig::active(&config.connbeat).is_some()
        || config.connbeat.protocols.iter().any(|p| {
            let c = p.common();
            c.enabled && (!c.ports.is_empty() || !p.uses_ports())
        })
}

/// Reads a whole capture file (pcap or pcapng) as fast as possible, publishes every
/// transaction, and flushes what is still pending at the end of the file (time is the
/// packets' own timestamps). Returns the counts of the run.
pub fn run_offline(
    config: &Config,
    path: &Path,
    publisher: &Publisher,
    lookup: Option<&dyn ProcessLookup>,
) -> anyhow::Result<OfflineSummary> {
    let mut sink = |e: crate::event::Event| {
        publisher.publish(e);
    };
    run_offline_with(config, path, &mut sink, lookup)
}

/// [`run_offline`] with any event sink (tests, benchmarks).
pub fn run_offline_with(
    config: &Config,
    path: &Path,
    sink: &mut dyn FnMut(crate::event::Event),
    lookup: Option<&dyn ProcessLookup>,
) -> anyhow::Result<OfflineSummary> {
    capture::read_file(config, path, sink, lookup)
}

/// Starts live capture on `connbeat.interfaces.device` on a dedicated thread, which stops
/// (flushing pending transactions) once `stop` is set.
pub fn spawn_live(
    config: &Config,
    publisher: Publisher,
    lookup: Option<Arc<dyn ProcessLookup>>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    capture::spawn_live(config, publisher, lookup, stop)
}

//! libpcap: the only place deep inspection touches the outside world.
//!
//! Offline, a pcap or pcapng file is read as fast as libpcap gives packets. Live, the
//! device is opened non-blocking with the configured snaplen, buffer and BPF filter, on a
//! thread of its own that polls the capture descriptor with a short timeout: a blocking
//! read with a timeout never returned while the link was idle (NOTES.md), and the poll is
//! what lets `stop` and transaction timeouts be honoured on a quiet link. With
//! `connbeat.interfaces.type: af_packet` the packets come from [`super::afpacket`]'s rings
//! instead, one engine per worker thread.

use super::afpacket::{self, Geometry, Ring};
use super::engine::{Engine, Summary};
use super::{ProcessLookup, decode::linktype};
use crate::config::{CaptureType, Config};
use crate::event::Event;
use crate::monitor::{self, METRICS};
use crate::publish::Publisher;
use anyhow::Context;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The BPF filter for the configured protocols, or the user's own `bpf_filter`. Flows see
/// every TCP, UDP and ICMP packet; an `icmp` entry sees ICMP and ICMPv6.
pub fn bpf_filter(config: &Config) -> String {
    let user = config.connbeat.interfaces.bpf_filter.trim();
    if !user.is_empty() {
        return user.to_string();
    }
    if crate::config::FlowsConfig::active(&config.connbeat).is_some() {
        return "tcp or udp or icmp or icmp6 or (ip[6:2] & 0x3fff != 0)".into();
    }
    let mut parts = Vec::new();
    if config
        .connbeat
        .protocols
        .iter()
        .any(|p| p.common().enabled && !p.uses_ports())
    {
        parts.push("icmp or icmp6".to_string());
    }
    let common = super::engine::Settings::from_config(config).common;
    for p in config
        .connbeat
        .protocols
        .iter()
        .filter(|p| p.common().enabled)
    {
        let def = p.parsers(&common);
        for port in &p.common().ports {
            if def.tcp.is_some() {
                parts.push(format!("tcp port {port}"));
            }
            if def.udp.is_some() {
                parts.push(format!("udp port {port}"));
            }
        }
    }
    parts.sort();
    parts.dedup();
    if parts.is_empty() {
        return String::new();
    }
    // Non-first IPv4 fragments carry no ports: let every fragment through to the reassembler.
    format!("{} or (ip[6:2] & 0x3fff != 0)", parts.join(" or "))
}

fn micros(ts: &libc::timeval) -> u64 {
    (ts.tv_sec.max(0) as u64) * 1_000_000 + (ts.tv_usec.max(0) as u64)
}

/// Reads a capture file through the engine.
pub fn read_file(
    config: &Config,
    path: &Path,
    sink: &mut dyn FnMut(Event),
    lookup: Option<&dyn ProcessLookup>,
) -> anyhow::Result<Summary> {
    let mut cap = pcap::Capture::from_file(path)
        .with_context(|| format!("opening capture file {}", path.display()))?;
    let link = cap.get_datalink().0;
    let mut engine = Engine::new(config, sink, lookup)
        .map_err(anyhow::Error::msg)?
        .with_flows(config, false);
    loop {
        match cap.next_packet() {
            Ok(p) => {
                monitor::inc(&METRICS.inspect_pcap_received);
                monitor::add(&METRICS.inspect_pcap_bytes, u64::from(p.header.caplen));
                let len = p.header.len as usize;
                engine.packet_len(link, micros(&p.header.ts), p.data, len);
            }
            Err(pcap::Error::NoMorePackets) => break,
            Err(e) => {
                // A truncated file ends with an error: what was read still counts.
                tracing::warn!(target: "inspect", "{}: stopped reading: {e}", path.display());
                monitor::inc(&METRICS.inspect_decode_errors);
                break;
            }
        }
    }
    engine.finish();
    Ok(engine.summary)
}

/// Opens the configured device for live capture.
fn open_live(config: &Config) -> anyhow::Result<pcap::Capture<pcap::Active>> {
    let i = &config.connbeat.interfaces;
    let device = device(config);
    let inactive = pcap::Capture::from_device(device)
        .with_context(|| format!("connbeat.interfaces.device: {device}"))?
        .snaplen(i.snaplen.min(i32::MAX as u32) as i32)
        .buffer_size(
            i.buffer_size_mb
                .saturating_mul(1 << 20)
                .min(i32::MAX as u32) as i32,
        )
        .immediate_mode(true)
        .timeout(100);
    let mut cap = inactive.open().with_context(|| {
        format!("opening capture device {device:?} (needs root or CAP_NET_RAW)")
    })?;
    if device == "any" {
        // Cooked v2 carries the interface index; v1 is the fallback libpcap picks by itself.
        let _ = cap.set_datalink(pcap::Linktype(linktype::LINUX_SLL2));
    }
    let filter = bpf_filter(config);
    if !filter.is_empty() {
        cap.filter(&filter, true).with_context(|| {
            format!("connbeat.interfaces.bpf_filter: cannot compile {filter:?}")
        })?;
    }
    Ok(cap)
}

/// The configured device, `any` when none is.
fn device(config: &Config) -> &str {
    let d = config.connbeat.interfaces.device.as_str();
    if d.is_empty() { "any" } else { d }
}

/// Starts the live capture thread (with `af_packet`, the thread of the first worker,
/// which runs the others beside it).
pub fn spawn_live(
    config: &Config,
    publisher: Publisher,
    lookup: Option<Arc<dyn ProcessLookup>>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let config = config.clone();
    // Registry errors surface here, before the thread starts.
    super::proto::Registry::new(
        &config.connbeat.protocols,
        &super::engine::Settings::from_config(&config).common,
    )
    .map_err(anyhow::Error::msg)?;
    let spawn = |f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name("inspect".into())
            .spawn(f)
            .context("spawning the capture thread")
    };
    match config.connbeat.interfaces.capture_type {
        CaptureType::Pcap => {
            let cap = open_live(&config)?
                .setnonblock()
                .context("setting the capture non-blocking")?;
            spawn(Box::new(move || {
                live_loop(cap, &config, publisher, lookup, &stop)
            }))
        }
        CaptureType::AfPacket => {
            let rings = open_rings(&config)?;
            spawn(Box::new(move || {
                std::thread::scope(|s| {
                    let mut rings = rings.into_iter();
                    let first = rings.next();
                    for (k, ring) in rings.enumerate() {
                        let (config, publisher, lookup, stop) =
                            (&config, publisher.clone(), lookup.clone(), &stop);
                        let t = std::thread::Builder::new()
                            .name(format!("inspect-{}", k + 1))
                            .spawn_scoped(s, move || {
                                ring_loop(ring, config, publisher, lookup, stop)
                            });
                        if let Err(e) = t {
                            tracing::error!(target: "inspect", "cannot start capture worker {}: {e}", k + 1);
                        }
                    }
                    if let Some(ring) = first {
                        ring_loop(ring, &config, publisher, lookup, &stop);
                    }
                })
            }))
        }
    }
}

/// Fanout group ids: unique per capture of this process (a group is per network
/// namespace, and joining one of another type fails).
static FANOUT_GROUP: AtomicU16 = AtomicU16::new(0);

/// The `af_packet` rings of every worker, open and filtered before any thread starts:
/// traffic from the return on is captured.
fn open_rings(config: &Config) -> anyhow::Result<Vec<Ring>> {
    let i = &config.connbeat.interfaces;
    let device = device(config);
    let workers = i.workers.max(1);
    let (text, by_ports_text) = split_by_ports(&bpf_filter(config), config, workers);
    let compile = |text: &str| {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        afpacket::compile_filter(text, i.snaplen).map_err(|e| {
            anyhow::anyhow!("connbeat.interfaces.bpf_filter: cannot compile {text:?}: {e}")
        })
    };
    let filter = compile(&text)?;
    let geometry =
        Geometry::for_bytes((i.buffer_size_mb as usize).saturating_mul(1 << 20) / workers);
    let new_group = || {
        (std::process::id() as u16)
            .wrapping_mul(31)
            .wrapping_add(FANOUT_GROUP.fetch_add(1, Ordering::Relaxed))
    };
    let fanout = (workers > 1).then(new_group);
    let mut rings = (0..workers)
        .map(|_| Ring::open(device, geometry, &filter, fanout))
        .collect::<std::io::Result<Vec<Ring>>>()
        .with_context(|| {
            format!(
                "connbeat.interfaces.type: af_packet: opening {workers} packet socket(s) on {device:?} \
                 with rings of {} x {} KiB (needs root or CAP_NET_RAW)",
                geometry.blocks,
                geometry.block_size >> 10
            )
        })?;
    tracing::info!(target: "inspect",
        "af_packet capture on {device}: {workers} worker(s), ring of {} x {} KiB each",
        geometry.blocks, geometry.block_size >> 10);
    if let Some(text) = by_ports_text {
        // A group of its own, with this one member: the kernel reassembles fragmented
        // datagrams for it as it does for the others.
        let small = Geometry::for_bytes(0);
        let ring =
            Ring::open(device, small, &compile(&text)?, Some(new_group())).with_context(|| {
                format!(
                    "connbeat.interfaces.type: af_packet: opening the packet socket for {text:?}"
                )
            })?;
        tracing::info!(target: "inspect",
            "af_packet capture on {device}: one more worker, outside the fanout group, for {text}");
        rings.push(ring);
    }
    Ok(rings)
}

/// With several `af_packet` workers, the capture filter of the fanout group and, when some
/// protocol pairs its UDP messages by ports alone ([`Protocol::UDP_BY_PORTS`], DHCPv4),
/// the filter of one more socket outside the group that takes those ports. The group's
/// flow hash deals packets by their addresses, and such a protocol's request and reply have
/// different ones (a DHCP client asks from 0.0.0.0 to the broadcast address and is answered
/// from the server to its lease): in the group, the two would often reach different
/// threads and never pair.
///
/// [`Protocol::UDP_BY_PORTS`]: super::proto::Protocol::UDP_BY_PORTS
fn split_by_ports(text: &str, config: &Config, workers: usize) -> (String, Option<String>) {
    let mut ports: Vec<u16> = config
        .connbeat
        .protocols
        .iter()
        .filter(|p| p.common().enabled && p.udp_by_ports())
        .flat_map(|p| p.common().ports.iter().copied())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    if workers < 2 || ports.is_empty() {
        return (text.to_string(), None);
    }
    let list: Vec<String> = ports.iter().map(|p| format!("port {p}")).collect();
    let by_ports = format!("udp and ({})", list.join(" or "));
    if text.is_empty() {
        (format!("not ({by_ports})"), Some(by_ports))
    } else {
        (
            format!("({text}) and not ({by_ports})"),
            Some(format!("({text}) and ({by_ports})")),
        )
    }
}

/// One `af_packet` worker: its ring through its own engine until `stop`.
fn ring_loop(
    mut ring: Ring,
    config: &Config,
    publisher: Publisher,
    lookup: Option<Arc<dyn ProcessLookup>>,
    stop: &AtomicBool,
) {
    let mut sink = |e: Event| {
        publisher.publish(e);
    };
    let mut engine = match Engine::new(config, &mut sink, lookup.as_deref()) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(target: "inspect", "{e}");
            return;
        }
    };
    let mut packets = 0u64;
    let mut last_stats = 0u64;
    let count_drops = |ring: &Ring| {
        if let Ok(d) = ring.drops() {
            monitor::add(&METRICS.inspect_capture_dropped, d);
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let got = ring.next_block(100, |ts, p| {
            monitor::inc(&METRICS.inspect_pcap_received);
            monitor::add(&METRICS.inspect_pcap_bytes, p.len() as u64);
            engine.packet(linktype::RAW, ts, p);
        });
        match got {
            Ok(n) => packets += n as u64,
            Err(e) => {
                tracing::error!(target: "inspect", "capture failed: {e}; this worker stops");
                break;
            }
        }
        let now = now_micros();
        engine.tick(now);
        if now.saturating_sub(last_stats) >= 1_000_000 {
            last_stats = now;
            count_drops(&ring);
        }
    }
    count_drops(&ring);
    engine.finish();
    tracing::debug!(target: "inspect", "af_packet worker done: {packets} packets");
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn live_loop(
    mut cap: pcap::Capture<pcap::Active>,
    config: &Config,
    publisher: Publisher,
    lookup: Option<Arc<dyn ProcessLookup>>,
    stop: &AtomicBool,
) {
    let link = cap.get_datalink().0;
    let mut sink = |e: Event| {
        publisher.publish(e);
    };
    let lookup = lookup.as_deref();
    let mut engine = match Engine::new(config, &mut sink, lookup) {
        Ok(e) => e.with_flows(config, true),
        Err(e) => {
            tracing::error!(target: "inspect", "{e}");
            return;
        }
    };
    let fd = cap.as_raw_fd();
    let mut last_stats = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match cap.next_packet() {
            Ok(p) => {
                monitor::inc(&METRICS.inspect_pcap_received);
                monitor::add(&METRICS.inspect_pcap_bytes, u64::from(p.header.caplen));
                let ts = micros(&p.header.ts);
                engine.packet_len(link, ts, p.data, p.header.len as usize);
            }
            Err(pcap::Error::TimeoutExpired) | Err(pcap::Error::NoMorePackets) => {
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd, for the duration of the call.
                unsafe { libc::poll(&mut pfd, 1, 100) };
            }
            Err(e) => {
                tracing::error!(target: "inspect", "capture failed: {e}; deep inspection stops");
                break;
            }
        }
        let now = now_micros();
        engine.tick(now);
        if now.saturating_sub(last_stats) >= 1_000_000 {
            last_stats = now;
            if let Ok(s) = cap.stats() {
                monitor::set(&METRICS.inspect_capture_dropped, u64::from(s.dropped));
                monitor::set(&METRICS.inspect_pcap_if_dropped, u64::from(s.if_dropped));
            }
        }
    }
    if let Ok(s) = cap.stats() {
        monitor::set(&METRICS.inspect_capture_dropped, u64::from(s.dropped));
        monitor::set(&METRICS.inspect_pcap_if_dropped, u64::from(s.if_dropped));
    }
    engine.finish();
}

#[cfg(test)]
mod tests {
    use super::{bpf_filter, split_by_ports};

    fn filter(yaml: &str) -> String {
        let c =
            crate::config::from_yaml_str(&format!("output.console: {{}}\n{yaml}"), &[], &|_| None)
                .unwrap();
        bpf_filter(&c)
    }

    #[test]
    fn icmp_adds_icmp_and_flows_widen_to_every_port() {
        let f = filter("connbeat.protocols: [{type: icmp}, {type: dns, ports: [53]}]");
        assert!(f.starts_with("icmp or icmp6 or "), "{f}");
        assert!(
            f.contains("udp port 53") && !f.contains("tcp or udp"),
            "{f}"
        );
        let f = filter("connbeat.protocols: [{type: dns, ports: [53]}]\nconnbeat.flows: {}");
        assert_eq!(f, "tcp or udp or icmp or icmp6 or (ip[6:2] & 0x3fff != 0)");
        let f = filter(
            "connbeat.protocols: [{type: dns, ports: [53]}]\nconnbeat.flows: {enabled: false}",
        );
        assert_eq!(f, "tcp port 53 or udp port 53 or (ip[6:2] & 0x3fff != 0)");
    }

    #[test]
    fn several_af_packet_workers_leave_ports_paired_by_ports_to_one_more_socket() {
        let yaml =
            "connbeat.protocols: [{type: dns, ports: [53]}, {type: dhcpv4, ports: [68, 67]}]";
        let c =
            crate::config::from_yaml_str(&format!("output.console: {{}}\n{yaml}"), &[], &|_| None)
                .unwrap();
        let text = bpf_filter(&c);
        assert_eq!(split_by_ports(&text, &c, 1), (text.clone(), None));
        let (group, alone) = split_by_ports(&text, &c, 4);
        assert_eq!(
            group,
            format!("({text}) and not (udp and (port 67 or port 68))")
        );
        assert_eq!(
            alone.as_deref(),
            Some(format!("({text}) and (udp and (port 67 or port 68))").as_str())
        );
        // A user's empty filter (everything) still splits.
        assert_eq!(
            split_by_ports("", &c, 2),
            (
                "not (udp and (port 67 or port 68))".to_string(),
                Some("udp and (port 67 or port 68)".to_string())
            )
        );
        // No such protocol: nothing to split.
        let c = crate::config::from_yaml_str(
            "output.console: {}\nconnbeat.protocols: [{type: dns, ports: [53]}]",
            &[],
            &|_| None,
        )
        .unwrap();
        assert_eq!(
            split_by_ports("udp port 53", &c, 4),
            ("udp port 53".into(), None)
        );
    }
}

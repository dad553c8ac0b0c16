//! Flows (`connbeat.flows`): packet and byte counters per flow of the captured traffic,
//! whatever its port, published as `type: flow` events, as Packetbeat does.
//!
//! A flow is keyed like Packetbeat's: the Ethernet addresses, the VLAN tags, the IP
//! addresses, the transport and its ports (ICMP flows have no ports and, as in Packetbeat
//! 8, no ICMP identifier either). Its source is the sender of its first packet. Bytes are
//! the captured frames' wire lengths, link header included.
//!
//! Live, the table is swept with the engine's clock: every `period` each flow is published
//! (`flow.final: false`), and a flow idle for `timeout` is published final and forgotten.
//! Reading a file (`-I`) goes as fast as the disk allows, as Packetbeat's does, so no
//! period passes: every flow is published once, final, at the end of the file; only when
//! `max_flows` is reached are flows idle for `timeout` in the capture's own time ended
//! early to make room. Whatever the mode, at most `max_flows` flows are held: packets of
//! new flows beyond that are counted (`inspect.flows.dropped`).

use super::decode::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, LinkInfo};
use super::proto::txn::{EcsProcess, EcsRelated, EcsSettings};
use crate::community_id::CommunityId;
use crate::config::{Config, FlowsConfig};
use crate::event::Event;
use crate::fast_hash::Fx;
use crate::monitor::{self, METRICS};
use crate::owner::{ProcessLookup, ProcessRef};
use base64::Engine as _;
use serde::Serialize;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, UNIX_EPOCH};

/// The flow settings, in µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowSettings {
    pub timeout_us: u64,
    /// None: final events only (`period: -1s`).
    pub period_us: Option<u64>,
    pub max_flows: usize,
    /// Live capture (periodic and timeout reports) or a file (final reports at its end).
    pub live: bool,
}

impl FlowSettings {
    /// The settings of `connbeat.flows` when flows are on.
    pub fn from_config(c: &Config, live: bool) -> Option<FlowSettings> {
        FlowsConfig::active(&c.connbeat).map(|f| FlowSettings {
            timeout_us: f.timeout.get().as_micros() as u64,
            period_us: f.period.0.map(|p| p.get().as_micros() as u64),
            max_flows: f.max_flows.max(1),
            live,
        })
    }
}

/// One end of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct End {
    mac: [u8; 6],
    ip: IpAddr,
    port: u16,
}

/// A flow's identity, its two ends in canonical order (`a` < `b`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    vlans: [u16; 2],
    vlan_count: u8,
    has_mac: bool,
    proto: u8,
    a: End,
    b: End,
}

impl Key {
    /// `flow.id`: the key's bytes in base64 (opaque, stable for the flow's life).
    fn id(&self) -> String {
        let mut b = Vec::with_capacity(64);
        b.push(self.proto);
        b.push(self.vlan_count);
        for v in &self.vlans[..usize::from(self.vlan_count)] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        for e in [&self.a, &self.b] {
            if self.has_mac {
                b.extend_from_slice(&e.mac);
            }
            match e.ip {
                IpAddr::V4(a) => b.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => b.extend_from_slice(&a.octets()),
            }
            b.extend_from_slice(&e.port.to_be_bytes());
        }
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(b)
    }
}

/// What one packet tells a flow.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    pub link: &'a LinkInfo,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    /// TCP and UDP ports.
    pub ports: Option<(u16, u16)>,
    /// ICMP type and code.
    pub icmp: Option<(u8, u8)>,
    /// The frame's length on the wire.
    pub wire_len: u64,
    pub ts: u64,
}

/// Counters of one flow; index 0 is its source's direction.
#[derive(Debug, Clone, Default)]
struct Flow {
    /// The source (first sender) is the key's `a` end.
    src_is_a: bool,
    /// Creation order: reports come out in it.
    seq: u64,
    start: u64,
    last: u64,
    packets: [u64; 2],
    bytes: [u64; 2],
    /// The latest ICMP type and code sent in each direction.
    icmp: [Option<(u8, u8)>; 2],
    /// Owners of the source and destination sockets, once found (live mode).
    owners: [Option<ProcessRef>; 2],
}

/// A flow as it is published.
pub struct Report {
    key: Key,
    flow: Flow,
    /// When it is published, µs (`@timestamp`).
    at: u64,
    final_: bool,
}

/// The flow table.
pub struct Flows {
    s: FlowSettings,
    table: HashMap<Key, Flow, Fx>,
    seq: u64,
    next_report: u64,
    /// Under pressure (table full, reading a file), idle flows are looked for at most once
    /// per second of capture time.
    next_pressure_scan: u64,
    pub out: Vec<Report>,
}

impl Flows {
    pub fn new(s: FlowSettings) -> Flows {
        Flows {
            s,
            table: HashMap::default(),
            seq: 0,
            next_report: 0,
            next_pressure_scan: 0,
            out: Vec::new(),
        }
    }

    /// Flows held now.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Counts one packet. Final reports made to free room are left in `out`.
    pub fn packet(&mut self, p: &Packet<'_>) {
        let (sport, dport) = p.ports.unwrap_or((0, 0));
        let (smac, dmac) = p.link.macs.unwrap_or_default();
        let src = End {
            mac: smac,
            ip: p.src,
            port: sport,
        };
        let dst = End {
            mac: dmac,
            ip: p.dst,
            port: dport,
        };
        let src_is_a = src <= dst;
        let (a, b) = if src_is_a { (src, dst) } else { (dst, src) };
        let key = Key {
            vlans: p.link.vlans,
            vlan_count: p.link.vlan_count,
            has_mac: p.link.macs.is_some(),
            proto: p.proto,
            a,
            b,
        };
        if !self.table.contains_key(&key) {
            if self.table.len() >= self.s.max_flows {
                self.make_room(p.ts);
                if self.table.len() >= self.s.max_flows {
                    monitor::inc(&METRICS.inspect_flows_dropped);
                    return;
                }
            }
            self.seq += 1;
            self.table.insert(
                key,
                Flow {
                    src_is_a,
                    seq: self.seq,
                    start: p.ts,
                    last: p.ts,
                    ..Flow::default()
                },
            );
            monitor::inc(&METRICS.inspect_flows_opened);
            monitor::set(&METRICS.inspect_flows, self.table.len() as u64);
        }
        let Some(f) = self.table.get_mut(&key) else {
            return;
        };
        let d = usize::from(src_is_a != f.src_is_a);
        f.packets[d] += 1;
        f.bytes[d] += p.wire_len;
        f.last = f.last.max(p.ts);
        f.start = f.start.min(p.ts);
        if p.icmp.is_some() {
            f.icmp[d] = p.icmp;
        }
    }

    /// The table is full: flows idle for `timeout` end now (final), if there are any.
    fn make_room(&mut self, now: u64) {
        if now < self.next_pressure_scan {
            return;
        }
        self.next_pressure_scan = now.saturating_add(1_000_000);
        self.expire(now, None);
    }

    /// Flows idle for `timeout` at `now` are reported final and forgotten.
    fn expire(&mut self, now: u64, lookup: Option<&dyn ProcessLookup>) {
        let timeout = self.s.timeout_us;
        let idle: Vec<Key> = self
            .table
            .iter()
            .filter(|(_, f)| now.saturating_sub(f.last) >= timeout)
            .map(|(k, _)| *k)
            .collect();
        let mut ended: Vec<Report> = idle
            .into_iter()
            .filter_map(|k| {
                let mut flow = self.table.remove(&k)?;
                find_owners(&k, &mut flow, lookup);
                Some(Report {
                    key: k,
                    flow,
                    at: now,
                    final_: true,
                })
            })
            .collect();
        ended.sort_by_key(|r| r.flow.seq);
        self.out.extend(ended);
        monitor::set(&METRICS.inspect_flows, self.table.len() as u64);
    }

    /// Live mode, called about every second: ends idle flows, and every `period` reports
    /// the others.
    pub fn sweep(&mut self, now: u64, lookup: Option<&dyn ProcessLookup>) {
        if !self.s.live {
            return;
        }
        self.expire(now, lookup);
        let Some(period) = self.s.period_us else {
            return;
        };
        if self.next_report == 0 {
            self.next_report = now.saturating_add(period);
            return;
        }
        if now < self.next_report {
            return;
        }
        self.next_report = now.saturating_add(period);
        self.report_all(now, false, lookup);
    }

    fn report_all(&mut self, now: u64, final_: bool, lookup: Option<&dyn ProcessLookup>) {
        let mut all: Vec<Report> = if final_ {
            // Taken whole, so that the table's memory is freed (`drain` would keep it).
            std::mem::take(&mut self.table)
                .into_iter()
                .map(|(key, flow)| Report {
                    key,
                    flow,
                    at: now,
                    final_,
                })
                .collect()
        } else {
            self.table
                .iter_mut()
                .map(|(k, f)| {
                    find_owners(k, f, lookup);
                    Report {
                        key: *k,
                        flow: f.clone(),
                        at: now,
                        final_,
                    }
                })
                .collect()
        };
        if final_ {
            for r in &mut all {
                find_owners(&r.key, &mut r.flow, lookup);
            }
        }
        all.sort_by_key(|r| r.flow.seq);
        if self.out.is_empty() {
            // No second copy of every report.
            self.out = all;
        } else {
            self.out.extend(all);
        }
        monitor::set(&METRICS.inspect_flows, self.table.len() as u64);
    }

    /// End of input: every flow is reported final.
    pub fn finish(&mut self, now: u64, lookup: Option<&dyn ProcessLookup>) {
        self.report_all(now, true, lookup);
    }
}

/// The source's and destination's socket addresses (TCP and UDP).
fn sockets(k: &Key, f: &Flow) -> Option<(SocketAddr, SocketAddr)> {
    if k.proto != IPPROTO_TCP && k.proto != IPPROTO_UDP {
        return None;
    }
    let (s, d) = if f.src_is_a { (k.a, k.b) } else { (k.b, k.a) };
    Some((SocketAddr::new(s.ip, s.port), SocketAddr::new(d.ip, d.port)))
}

fn find_owners(k: &Key, f: &mut Flow, lookup: Option<&dyn ProcessLookup>) {
    let (Some(l), Some((s, d))) = (lookup, sockets(k, f)) else {
        return;
    };
    if f.owners[0].is_none() {
        f.owners[0] = l.lookup(s, d);
    }
    if f.owners[1].is_none() {
        f.owners[1] = l.lookup(d, s);
    }
}

/// `00-1A-2B-3C-4D-5E`, as ECS writes MAC addresses.
fn ecs_mac(m: &[u8; 6]) -> String {
    let mut s = String::with_capacity(17);
    for (i, b) in m.iter().enumerate() {
        if i > 0 {
            s.push('-');
        }
        s.push_str(&format!("{b:02X}"));
    }
    s
}

/// `00:1a:2b:3c:4d:5e`, as Packetbeat's classic events write them.
fn classic_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn transport(proto: u8) -> &'static str {
    match proto {
        IPPROTO_TCP => "tcp",
        IPPROTO_UDP => "udp",
        IPPROTO_ICMP => "icmp",
        IPPROTO_ICMPV6 => "ipv6-icmp",
        _ => "unknown",
    }
}

impl Report {
    fn ends(&self) -> (End, End) {
        if self.flow.src_is_a {
            (self.key.a, self.key.b)
        } else {
            (self.key.b, self.key.a)
        }
    }

    fn community_id(&self) -> Option<CommunityId> {
        let (s, d) = self.ends();
        match self.key.proto {
            IPPROTO_ICMP | IPPROTO_ICMPV6 => {
                let (t, c) = self.flow.icmp[0].or(self.flow.icmp[1])?;
                CommunityId::of_icmp(s.ip, d.ip, t, c)
            }
            p => CommunityId::of_ports(
                transport(p),
                SocketAddr::new(s.ip, s.port),
                SocketAddr::new(d.ip, d.port),
            ),
        }
    }

    fn has_ports(&self) -> bool {
        matches!(self.key.proto, IPPROTO_TCP | IPPROTO_UDP)
    }

    /// The event, in Packetbeat 8's ECS shape (`ecs`) or the classic one, serialized
    /// straight from the flow (no intermediate JSON tree: a million flows are a million
    /// events).
    pub fn into_event(self, ecs: Option<&EcsSettings>) -> Event {
        let at = UNIX_EPOCH + Duration::from_micros(self.at);
        monitor::inc(&METRICS.inspect_flows_published);
        match ecs {
            Some(s) => Event::from_fields(at, "flow", &self.ecs_fields(s)),
            None => Event::from_fields(at, "flow", &self.classic_fields()),
        }
    }

    fn ecs_fields(&self, s: &EcsSettings) -> EcsFlow<'_> {
        let ts = |us: u64| {
            crate::event::format_timestamp_with(UNIX_EPOCH + Duration::from_micros(us), s.precision)
        };
        let f = &self.flow;
        let (src, dst) = self.ends();
        let end = |e: &End, d: usize| EcsFlowEnd {
            mac: self.key.has_mac.then(|| ecs_mac(&e.mac)),
            ip: e.ip,
            port: self.has_ports().then_some(e.port),
            bytes: (f.packets[d] > 0).then_some(f.bytes[d]),
            packets: (f.packets[d] > 0).then_some(f.packets[d]),
            process: f.owners[d].as_ref().map(EcsProcess::of),
        };
        let mut related = vec![src.ip];
        if dst.ip != src.ip {
            related.push(dst.ip);
        }
        EcsFlow {
            event: EcsFlowEvent {
                kind: "event",
                category: ["network"],
                r#type: if self.final_ {
                    &["connection", "end"]
                } else {
                    &["connection"]
                },
                action: "network_flow",
                dataset: "flow",
                start: ts(f.start),
                end: ts(f.last),
                duration: f.last.saturating_sub(f.start) * 1000,
            },
            flow: EcsFlowId {
                id: self.key.id(),
                r#final: self.final_,
                vlan: match self.key.vlans() {
                    [] => None,
                    [v] => Some(Vlan::One(*v)),
                    all => Some(Vlan::Stacked(all)),
                },
            },
            source: end(&src, 0),
            destination: end(&dst, 1),
            network: EcsFlowNetwork {
                r#type: if src.ip.is_ipv4() { "ipv4" } else { "ipv6" },
                transport: transport(self.key.proto),
                bytes: f.bytes[0] + f.bytes[1],
                packets: f.packets[0] + f.packets[1],
                community_id: self.community_id(),
            },
            related: EcsRelated {
                ip: related,
                hosts: &[],
                user: &[],
            },
            process: f.owners[1]
                .as_ref()
                .or(f.owners[0].as_ref())
                .map(EcsProcess::of),
        }
    }

    fn classic_fields(&self) -> ClassicFlow<'_> {
        let f = &self.flow;
        let (src, dst) = self.ends();
        let rfc = |us: u64| crate::event::format_timestamp(UNIX_EPOCH + Duration::from_micros(us));
        let end = |e: &End, d: usize| ClassicEnd {
            mac: self.key.has_mac.then(|| classic_mac(&e.mac)),
            ip: e.ip.is_ipv4().then_some(e.ip),
            ipv6: e.ip.is_ipv6().then_some(e.ip),
            port: self.has_ports().then_some(e.port),
            stats: (f.packets[d] > 0).then_some(Stats {
                net_packets_total: f.packets[d],
                net_bytes_total: f.bytes[d],
            }),
        };
        let (outer_vlan, vlan) = match self.key.vlans() {
            [] => (None, None),
            [v] => (None, Some(*v)),
            [outer, inner, ..] => (Some(*outer), Some(*inner)),
        };
        ClassicFlow {
            start_time: rfc(f.start),
            last_time: rfc(f.last),
            flow_id: self.key.id(),
            r#final: self.final_,
            outer_vlan,
            vlan,
            transport: transport(self.key.proto),
            source: end(&src, 0),
            dest: end(&dst, 1),
            community_id: self.community_id(),
            client_process: f.owners[0].as_ref(),
            server_process: f.owners[1].as_ref(),
        }
    }
}

/// A flow event's fields in Packetbeat 8's ECS shape.
#[derive(Serialize)]
struct EcsFlow<'a> {
    event: EcsFlowEvent,
    flow: EcsFlowId<'a>,
    source: EcsFlowEnd<'a>,
    destination: EcsFlowEnd<'a>,
    network: EcsFlowNetwork,
    related: EcsRelated<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    process: Option<EcsProcess<'a>>,
}

#[derive(Serialize)]
struct EcsFlowEvent {
    kind: &'static str,
    category: [&'static str; 1],
    r#type: &'static [&'static str],
    action: &'static str,
    dataset: &'static str,
    start: String,
    end: String,
    /// Nanoseconds.
    duration: u64,
}

#[derive(Serialize)]
struct EcsFlowId<'a> {
    id: String,
    r#final: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    vlan: Option<Vlan<'a>>,
}

/// `flow.vlan`: the tag, or the list of stacked tags.
#[derive(Serialize)]
#[serde(untagged)]
enum Vlan<'a> {
    One(u16),
    Stacked(&'a [u16]),
}

#[derive(Serialize)]
struct EcsFlowEnd<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    mac: Option<String>,
    ip: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    packets: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    process: Option<EcsProcess<'a>>,
}

#[derive(Serialize)]
struct EcsFlowNetwork {
    r#type: &'static str,
    transport: &'static str,
    bytes: u64,
    packets: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    community_id: Option<CommunityId>,
}

/// A flow event's fields in the classic shape (Packetbeat 6's).
#[derive(Serialize)]
struct ClassicFlow<'a> {
    start_time: String,
    last_time: String,
    flow_id: String,
    r#final: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    outer_vlan: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vlan: Option<u16>,
    transport: &'static str,
    source: ClassicEnd,
    dest: ClassicEnd,
    #[serde(skip_serializing_if = "Option::is_none")]
    community_id: Option<CommunityId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_process: Option<&'a ProcessRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_process: Option<&'a ProcessRef>,
}

#[derive(Serialize)]
struct ClassicEnd {
    #[serde(skip_serializing_if = "Option::is_none")]
    mac: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipv6: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stats: Option<Stats>,
}

#[derive(Serialize)]
struct Stats {
    net_packets_total: u64,
    net_bytes_total: u64,
}

impl Key {
    fn vlans(&self) -> &[u16] {
        &self.vlans[..usize::from(self.vlan_count)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(live: bool, max: usize) -> FlowSettings {
        FlowSettings {
            timeout_us: 2_000_000,
            period_us: Some(10_000_000),
            max_flows: max,
            live,
        }
    }

    fn pkt<'a>(link: &'a LinkInfo, src: &str, dst: &str, ports: (u16, u16), ts: u64) -> Packet<'a> {
        Packet {
            link,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto: IPPROTO_UDP,
            ports: Some(ports),
            icmp: None,
            wire_len: 100,
            ts,
        }
    }

    #[test]
    fn both_directions_count_in_one_flow_whose_source_spoke_first() {
        let link = LinkInfo {
            macs: Some(([9; 6], [1; 6])),
            vlans: [7, 0],
            vlan_count: 1,
        };
        let back = LinkInfo {
            macs: Some(([1; 6], [9; 6])),
            ..link
        };
        let mut t = Flows::new(settings(false, 10));
        t.packet(&pkt(&link, "10.0.0.9", "10.0.0.1", (5000, 53), 1_000_000));
        t.packet(&pkt(&back, "10.0.0.1", "10.0.0.9", (53, 5000), 1_500_000));
        t.packet(&pkt(&link, "10.0.0.9", "10.0.0.1", (5000, 53), 1_700_000));
        assert_eq!(t.len(), 1);
        t.finish(5_000_000, None);
        let r = t.out.pop().unwrap();
        let e = r.into_event(Some(&EcsSettings::default()));
        let v = e.to_value();
        assert_eq!(v["source"]["ip"], "10.0.0.9");
        assert_eq!(v["source"]["mac"], "09-09-09-09-09-09");
        assert_eq!(
            (v["source"]["packets"].clone(), v["source"]["bytes"].clone()),
            (json!(2), json!(200))
        );
        assert_eq!(v["destination"]["port"], 53);
        assert_eq!(v["destination"]["packets"], 1);
        assert_eq!(v["network"]["packets"], 3);
        assert_eq!(v["network"]["transport"], "udp");
        assert_eq!(v["flow"]["vlan"], 7);
        assert_eq!(v["flow"]["final"], true);
        assert_eq!(v["event"]["duration"], 700_000_000u64);
    }

    #[test]
    fn the_bound_counts_and_a_file_read_frees_idle_flows() {
        let link = LinkInfo::default();
        let mut t = Flows::new(settings(false, 2));
        t.packet(&pkt(&link, "10.0.0.1", "10.0.0.2", (1, 2), 0));
        t.packet(&pkt(&link, "10.0.0.1", "10.0.0.2", (1, 3), 0));
        let before = crate::monitor::get(&METRICS.inspect_flows_dropped);
        t.packet(&pkt(&link, "10.0.0.1", "10.0.0.2", (1, 4), 1_000_000));
        assert!(crate::monitor::get(&METRICS.inspect_flows_dropped) > before);
        assert_eq!(t.len(), 2);
        assert!(t.out.is_empty());
        // Three seconds later the first two are idle for more than the timeout.
        t.packet(&pkt(&link, "10.0.0.1", "10.0.0.2", (1, 5), 3_000_000));
        assert_eq!(t.out.len(), 2);
        assert!(t.out.iter().all(|r| r.final_));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn the_flows_section_as_packetbeat_reads_it() {
        let load = |y: &str| {
            crate::config::from_yaml_str(&format!("output.console: {{}}\n{y}"), &[], &|_| None)
        };
        let c = load("packetbeat.flows: {timeout: 30s, period: -1s}").unwrap();
        let s = FlowSettings::from_config(&c, true).unwrap();
        assert_eq!(
            (s.timeout_us, s.period_us, s.max_flows),
            (30_000_000, None, 100_000)
        );
        let c = load("connbeat.flows: {period: 5s}").unwrap();
        assert_eq!(
            FlowSettings::from_config(&c, true).unwrap().period_us,
            Some(5_000_000)
        );
        let c = load("connbeat.flows: {enabled: false}").unwrap();
        assert!(FlowSettings::from_config(&c, true).is_none());
        assert!(FlowSettings::from_config(&load("").unwrap(), true).is_none());
        let e = load("connbeat.flows: {timeout: 500ms}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("connbeat.flows.timeout"), "{e}");
        let e = load("connbeat.flows: {period: 100ms}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("connbeat.flows.period"), "{e}");
        let e = load("connbeat.flows: {max_flows: 0}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("connbeat.flows.max_flows"), "{e}");
    }

    #[test]
    fn live_sweeps_report_periodically_and_end_idle_flows() {
        let link = LinkInfo::default();
        let mut t = Flows::new(settings(true, 10));
        t.packet(&pkt(&link, "10.0.0.1", "10.0.0.2", (1, 2), 1_000_000));
        t.sweep(1_000_000, None);
        assert!(t.out.is_empty());
        t.packet(&pkt(&link, "10.0.0.1", "10.0.0.3", (1, 2), 1_500_000));
        t.sweep(3_200_000, None);
        assert_eq!(t.out.len(), 1, "the first flow ended");
        assert!(t.out[0].final_);
        t.out.clear();
        for s in 4..=11 {
            t.packet(&pkt(&link, "10.0.0.1", "10.0.0.3", (1, 2), s * 1_000_000));
            t.sweep(s * 1_000_000, None);
        }
        assert_eq!(t.out.len(), 1, "one periodic report");
        assert!(!t.out[0].final_);
    }
}

//! The packet pipeline after capture: decode, defragment, find the connection, reassemble,
//! feed the protocol parser, turn its transactions into events.
//!
//! The engine has no I/O and no clock of its own: the caller gives each frame with its
//! capture timestamp, and time only moves with those timestamps (or [`Engine::tick`] in
//! live mode while the link is idle). That is what makes an offline run reproducible and
//! lets tests drive it with synthetic frames.
//!
//! A connection's life is read from its own packets: a SYN (or a SYN/ACK) at a new initial
//! sequence number on addresses and ports still held ends the old stream (its transactions
//! flushed as they stand) and starts a new one; FIN from both ends, or RST, ends it. Ports
//! are reused within seconds on a busy host, so stray packets of an ended connection are
//! remembered for a while and ignored, and a packet without payload never opens a stream.
//! TCP segments first wait in the [`sort`] window so that each connection is decoded in
//! time order.

use super::decode::{
    self, DecodeError, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, LinkInfo, Network,
    TcpSegment, Transport, UdpDatagram, tcpflags,
};
use super::flows::{FlowSettings, Flows};
use super::frag::Defrag;
use super::proto::icmp;
use super::proto::txn::{EcsSettings, Endpoints};
use super::proto::{Common, Cx, Dir, Done, Protocol as _, Registry, TcpParser, UdpParser};
use super::sort::SortWindow;
use super::tcp::{Budget, Chunk, HalfStream, Limits, Segment, SegmentStats};
use crate::config::{Config, EventFormat};
use crate::event::Event;
use crate::fast_hash::Fx;
use crate::monitor::{self, METRICS};
use crate::owner::{ProcessLookup, ProcessRef};
use std::collections::HashMap;
use std::net::SocketAddr;

/// Bounds and timeouts of the engine, from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub idle_timeout_us: u64,
    pub max_streams: usize,
    pub limits: Limits,
    pub sort_window_us: u64,
    pub memory: usize,
    pub max_fragment_datagrams: usize,
    pub fragment_timeout_us: u64,
    pub common: Common,
}

impl Settings {
    pub fn from_config(c: &Config) -> Settings {
        let i = &c.connbeat.interfaces;
        Settings {
            idle_timeout_us: i.stream_idle_timeout.get().as_micros() as u64,
            max_streams: i.max_streams.max(1),
            limits: Limits {
                window: u32::try_from(i.reorder_window_kb.saturating_mul(1024))
                    .unwrap_or(u32::MAX / 2),
                max_ooo_bytes: i.max_out_of_order_kb.saturating_mul(1024),
            },
            sort_window_us: i.sort_window.get().as_micros() as u64,
            memory: i.reassembly_memory_mb.saturating_mul(1 << 20),
            max_fragment_datagrams: i.max_fragment_datagrams,
            fragment_timeout_us: i.fragment_timeout.get().as_micros() as u64,
            common: Common {
                max_pending: i.max_pending_requests.max(1),
                transaction_timeout_us: c.connbeat.transaction_timeout.get().as_micros() as u64,
                event_format: c.connbeat.event_format,
            },
        }
    }
}

/// Counts of one run, returned by an offline read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub packets: u64,
    pub bytes: u64,
    pub decode_errors: u64,
    pub transactions: u64,
    pub tcp_streams: u64,
    pub tcp_gaps: u64,
    pub parse_errors: u64,
}

/// A connection's key: its two endpoints, smaller first.
type Key = (SocketAddr, SocketAddr);

fn key(a: SocketAddr, b: SocketAddr) -> Key {
    if a <= b { (a, b) } else { (b, a) }
}

/// A port with no address (`[::]:port`, which no real datagram comes from).
fn unaddressed(port: u16) -> SocketAddr {
    SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), port)
}

/// The key of a UDP flow keyed by its ports alone ([`Protocol::UDP_BY_PORTS`]).
///
/// [`Protocol::UDP_BY_PORTS`]: super::proto::Protocol::UDP_BY_PORTS
fn ports_key(a: SocketAddr, b: SocketAddr) -> Key {
    key(unaddressed(a.port()), unaddressed(b.port()))
}

/// Owners of both ends, found once per connection.
#[derive(Default)]
struct Owners {
    client: Option<ProcessRef>,
    server: Option<ProcessRef>,
}

struct TcpConn {
    proto: usize,
    client: SocketAddr,
    server: SocketAddr,
    half: [HalfStream; 2],
    /// Initial sequence number of each direction, once its SYN was seen.
    isn: [Option<u32>; 2],
    buf: [Vec<u8>; 2],
    skip: [Skip; 2],
    parser: Box<dyn TcpParser>,
    last_seen: u64,
    /// Latest capture timestamp among the segments decoded so far.
    last_ts: u64,
    owners: Owners,
}

struct UdpFlow {
    proto: usize,
    client: SocketAddr,
    server: SocketAddr,
    /// Keyed by ports alone: `client` and `server` are ports with no address.
    by_ports: bool,
    parser: Box<dyn UdpParser>,
    last_seen: u64,
    owners: Owners,
}

const SWEEP_EVERY_US: u64 = 1_000_000;
/// The TCP PSH flag (meaningless to a passive observer).
const PSH: u8 = 0x08;

/// Where finished events go.
pub type Sink<'a> = dyn FnMut(Event) + 'a;

/// The per-packet state machine.
pub struct Engine<'a> {
    reg: Registry,
    s: Settings,
    tcp: HashMap<Key, TcpConn, Fx>,
    /// Connections ended by FIN or RST, and when: their late packets are ignored until a
    /// SYN opens the addresses again or `stream_idle_timeout` passes.
    ended: HashMap<Key, u64, Fx>,
    sort: SortWindow<Key>,
    udp: HashMap<Key, UdpFlow, Fx>,
    defrag: Defrag,
    budget: Budget,
    now: u64,
    /// Timestamp of the packet being decoded (`now` is the latest of all).
    packet_ts: u64,
    next_sweep: u64,
    out: Vec<Done>,
    /// `connbeat.event_format: ecs`: transactions are written in the ECS shape.
    ecs: Option<EcsSettings>,
    /// ICMP transactions, when a `type: icmp` entry is enabled.
    icmp: Option<icmp::Tracker>,
    /// `connbeat.flows`, when on.
    flows: Option<Flows>,
    sink: &'a mut Sink<'a>,
    lookup: Option<&'a dyn ProcessLookup>,
    pub summary: Summary,
}

fn dir_index(d: Dir) -> usize {
    match d {
        Dir::ToServer => 0,
        Dir::ToClient => 1,
    }
}

const DIRS: [Dir; 2] = [Dir::ToServer, Dir::ToClient];

impl<'a> Engine<'a> {
    pub fn new(
        config: &Config,
        sink: &'a mut Sink<'a>,
        lookup: Option<&'a dyn ProcessLookup>,
    ) -> Result<Engine<'a>, String> {
        let s = Settings::from_config(config);
        let reg = Registry::new(&config.connbeat.protocols, &s.common)?;
        let ecs = EcsSettings::from_config(config)?;
        let icmp = config.connbeat.protocols.iter().find_map(|p| match p {
            super::proto::ProtocolConfig::Icmp(e) if e.common.enabled => {
                let timeout = e
                    .common
                    .transaction_timeout
                    .map_or(s.common.transaction_timeout_us, |t| {
                        t.get().as_micros() as u64
                    });
                Some(icmp::Tracker::new(e.options.max_pending, timeout))
            }
            _ => None,
        });
        Ok(Engine {
            ecs,
            icmp,
            flows: None,
            reg,
            tcp: HashMap::default(),
            ended: HashMap::default(),
            sort: SortWindow::new(s.sort_window_us),
            udp: HashMap::default(),
            defrag: Defrag::new(s.max_fragment_datagrams, s.fragment_timeout_us),
            budget: Budget::new(s.memory),
            now: 0,
            packet_ts: 0,
            next_sweep: 0,
            out: Vec::new(),
            sink,
            lookup,
            summary: Summary::default(),
            s,
        })
    }

    /// Turns flows (`connbeat.flows`) on or off: `live` says whether they are reported
    /// periodically or once, at the end of a file.
    pub fn with_flows(mut self, config: &Config, live: bool) -> Self {
        self.flows = FlowSettings::from_config(config, live).map(Flows::new);
        self
    }

    /// One captured frame of link type `link`, captured at `ts` (µs since the epoch).
    pub fn packet(&mut self, link: i32, ts: u64, frame: &[u8]) {
        self.packet_len(link, ts, frame, frame.len());
    }

    /// [`Engine::packet`] of a frame that was `wire_len` bytes long on the wire (flows
    /// count those, as Packetbeat does, even when the capture kept fewer).
    pub fn packet_len(&mut self, link: i32, ts: u64, frame: &[u8], wire_len: usize) {
        self.summary.packets += 1;
        self.summary.bytes += frame.len() as u64;
        self.packet_ts = ts;
        if ts > self.now {
            self.now = ts;
        }
        self.release_due();
        if self.now >= self.next_sweep {
            self.sweep();
        }
        let wire_len = wire_len.max(frame.len()) as u64;
        match decode::decode_frame_link(link, frame) {
            Ok((info, Network::Ip(p))) => self.ip(&info, wire_len, &p),
            Ok((info, Network::Fragment(f))) => {
                if let Some(whole) = self.defrag.add(&f, self.now) {
                    let p = decode::IpPayload {
                        src: f.src.into(),
                        dst: f.dst.into(),
                        protocol: f.protocol,
                        data: &whole,
                        missing: 0,
                    };
                    self.ip(&info, wire_len, &p);
                }
            }
            Err(e) => self.decode_error(e),
        }
    }

    fn decode_error(&mut self, e: DecodeError) {
        if matches!(e, DecodeError::Unsupported(_)) {
            monitor::inc(&METRICS.inspect_decode_unsupported);
        } else {
            self.summary.decode_errors += 1;
            monitor::inc(&METRICS.inspect_decode_errors);
            tracing::debug!(target: "inspect", "decode error: {e}");
        }
    }

    fn ip(&mut self, link: &LinkInfo, wire_len: u64, p: &decode::IpPayload<'_>) {
        if matches!(p.protocol, IPPROTO_ICMP | IPPROTO_ICMPV6) {
            match decode::decode_icmp(p) {
                Ok(h) => {
                    self.flow_packet(link, wire_len, p, None, Some((h.icmp_type, h.code)));
                    if let Some(t) = &mut self.icmp {
                        t.message(p.src, p.dst, &h, self.packet_ts);
                        self.emit_icmp();
                    }
                }
                Err(e) => self.decode_error(e),
            }
            return;
        }
        let transport = decode::decode_transport(p);
        match &transport {
            Ok(Transport::Tcp(t)) => {
                self.flow_packet(link, wire_len, p, Some((t.src_port, t.dst_port)), None)
            }
            Ok(Transport::Udp(u)) => {
                self.flow_packet(link, wire_len, p, Some((u.src_port, u.dst_port)), None)
            }
            Err(_) => {}
        }
        match transport {
            Ok(Transport::Tcp(t)) => self.tcp_arrived(
                SocketAddr::new(p.src, t.src_port),
                SocketAddr::new(p.dst, t.dst_port),
                &t,
            ),
            Ok(Transport::Udp(u)) => self.udp_datagram(
                SocketAddr::new(p.src, u.src_port),
                SocketAddr::new(p.dst, u.dst_port),
                &u,
            ),
            Err(e) => self.decode_error(e),
        }
    }

    /// Counts a packet in its flow (`connbeat.flows`).
    fn flow_packet(
        &mut self,
        link: &LinkInfo,
        wire_len: u64,
        p: &decode::IpPayload<'_>,
        ports: Option<(u16, u16)>,
        icmp: Option<(u8, u8)>,
    ) {
        let Some(flows) = &mut self.flows else {
            return;
        };
        debug_assert!(matches!(
            p.protocol,
            IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMP | IPPROTO_ICMPV6
        ));
        flows.packet(&super::flows::Packet {
            link,
            src: p.src,
            dst: p.dst,
            proto: p.protocol,
            ports,
            icmp,
            wire_len,
            ts: self.packet_ts,
        });
        if !flows.out.is_empty() {
            self.emit_flows();
        }
    }

    /// Publishes the flow reports waiting.
    fn emit_flows(&mut self) {
        let Some(flows) = &mut self.flows else {
            return;
        };
        // Taken whole, so that the reports' memory is not kept as the vector's capacity.
        for r in std::mem::take(&mut flows.out) {
            (self.sink)(r.into_event(self.ecs.as_ref()));
        }
    }

    /// Publishes the finished ICMP transactions.
    fn emit_icmp(&mut self) {
        let Some(t) = &mut self.icmp else {
            return;
        };
        for f in t.out.drain(..) {
            let v6 = f.src.is_ipv6();
            let ep = Endpoints {
                transport: if v6 { "ipv6-icmp" } else { "icmp" },
                client: SocketAddr::new(f.src, 0),
                server: SocketAddr::new(f.dst, 0),
                client_process: None,
                server_process: None,
                icmp: Some(f.txn.fields.type_code()),
            };
            self.summary.transactions += 1;
            monitor::inc(&METRICS.inspect_transactions);
            let name = icmp::Proto::NAME;
            let e = match &self.ecs {
                Some(ecs) => f.txn.into_ecs_event(name, &ep, ecs),
                None => f.txn.into_event(name, &ep),
            };
            (self.sink)(e);
        }
    }

    /// Which end serves, and with which protocol, for a new flow.
    fn classify(
        &self,
        src: SocketAddr,
        dst: SocketAddr,
        client_first: Option<bool>,
    ) -> Option<(usize, bool)> {
        match (self.reg.on_port(dst.port()), self.reg.on_port(src.port())) {
            (Some(p), None) => Some((p, true)),
            (None, Some(p)) => Some((p, false)),
            (Some(p), Some(q)) => match client_first {
                Some(false) => Some((q, false)),
                _ => Some((p, true)),
            },
            (None, None) => None,
        }
    }

    /// A TCP segment as captured (at `self.now`): through the sort window, or straight on.
    fn tcp_arrived(&mut self, src: SocketAddr, dst: SocketAddr, t: &TcpSegment<'_>) {
        let k = key(src, dst);
        if self.reg.on_port(src.port()).is_none()
            && self.reg.on_port(dst.port()).is_none()
            && !self.tcp.contains_key(&k)
        {
            return;
        }
        let ts = self.packet_ts;
        if t.flags & !(tcpflags::ACK | PSH) == 0 && t.payload.is_empty() && t.missing == 0 {
            // A pure ACK has no place in the byte streams, so its order does not matter
            // and it need not wait: it only tells how far the peer got.
            if t.has(tcpflags::ACK)
                && let Some(c) = self.tcp.get_mut(&k)
            {
                c.last_seen = self.now;
                let d = usize::from(src != c.client);
                c.half[1 - d].ack(t.ack);
            }
            return;
        }
        if self.sort.enabled() {
            if self.budget.try_take(t.payload.len()) {
                self.sort.hold(k, ts, self.now, src, dst, t);
                return;
            }
            // No memory to wait: what is held of the connection goes first, then this one.
            monitor::inc(&METRICS.inspect_tcp_unsorted);
            self.release_key(k, u64::MAX);
        }
        self.tcp_segment(ts, src, dst, t);
    }

    /// Decodes the held segments whose time in the window is over.
    fn release_due(&mut self) {
        while let Some((k, upto)) = self.sort.due(self.now) {
            self.release_key(k, upto);
        }
    }

    /// Decodes, in time order, the held segments of `k` up to the last one that arrived
    /// at or before `upto`.
    fn release_key(&mut self, k: Key, upto: u64) {
        let mut batch = self.sort.take(&k, upto);
        for h in batch.drain(..) {
            self.budget.give(h.payload.len());
            let t = h.segment();
            self.tcp_segment(h.ts, h.src, h.dst, &t);
            self.sort.recycle(h);
        }
        self.sort.give_back(batch);
    }

    /// One segment, in the order the sort window decided; `ts` is its own capture time.
    fn tcp_segment(&mut self, ts: u64, src: SocketAddr, dst: SocketAddr, t: &TcpSegment<'_>) {
        let k = key(src, dst);
        let syn = t.has(tcpflags::SYN);
        let ack = t.has(tcpflags::ACK);
        let rst = t.has(tcpflags::RST);
        let now = ts.min(self.now);
        let mut exists = false;
        if let Some(c) = self.tcp.get(&k) {
            exists = true;
            if ts < c.last_ts {
                monitor::inc(&METRICS.inspect_tcp_unsorted);
            }
            // A SYN at another ISN than the one known (or on a direction already under
            // way without one) is a new connection on the same addresses and ports.
            let d = usize::from(src != c.client);
            if syn && c.isn[d].map_or(c.half[d].started(), |isn| isn != t.seq) {
                monitor::inc(&METRICS.inspect_tcp_streams_reused);
                self.close_tcp(&k, now);
                self.ended.remove(&k);
                exists = false;
            }
        } else if let Some(&at) = self.ended.get(&k) {
            if !syn && now.saturating_sub(at) < self.s.idle_timeout_us {
                // A late packet of a connection that ended (FIN or RST).
                if !t.payload.is_empty() {
                    monitor::inc(&METRICS.inspect_tcp_retransmitted);
                }
                return;
            }
            self.ended.remove(&k);
        }
        if !exists {
            // Only a SYN or data opens a stream: a lone ACK, FIN or RST has nothing to
            // parse, and is most often the tail of a connection already gone.
            if rst || (!syn && t.payload.is_empty() && t.missing == 0) {
                return;
            }
            let client_first = if syn { Some(!ack) } else { None };
            let Some((proto, server_is_dst)) = self.classify(src, dst, client_first) else {
                return;
            };
            let Some(factory) = self.reg.get(proto).tcp.clone() else {
                return;
            };
            if self.tcp.len() >= self.s.max_streams {
                monitor::inc(&METRICS.inspect_tcp_streams_dropped);
                return;
            }
            let (client, server) = if server_is_dst {
                (src, dst)
            } else {
                (dst, src)
            };
            self.tcp.insert(
                k,
                TcpConn {
                    proto,
                    client,
                    server,
                    half: Default::default(),
                    isn: [None, None],
                    buf: Default::default(),
                    skip: Default::default(),
                    parser: factory(),
                    last_seen: self.now,
                    last_ts: ts,
                    owners: Owners::default(),
                },
            );
            self.summary.tcp_streams += 1;
            monitor::inc(&METRICS.inspect_tcp_streams_opened);
            monitor::set(&METRICS.inspect_tcp_streams, self.tcp.len() as u64);
        }
        let Some(conn) = self.tcp.get_mut(&k) else {
            return;
        };
        conn.last_seen = self.now;
        conn.last_ts = conn.last_ts.max(ts);
        let dir = if src == conn.client {
            Dir::ToServer
        } else {
            Dir::ToClient
        };
        let d = dir_index(dir);
        if syn && conn.isn[d].is_none() {
            conn.isn[d] = Some(t.seq);
        }
        if ack {
            conn.half[1 - d].ack(t.ack);
        }
        if rst {
            // Only a RST inside the stream's sequence space ends it (RFC 5961's check,
            // loosely): a stray one of an earlier connection does not.
            if conn.half[d].in_window(t.seq, self.s.limits) {
                self.close_tcp(&k, now);
                self.ended.insert(k, now);
                self.bound_ended();
            }
            return;
        }
        let proto = self.reg.get(conn.proto);
        let (max_msg, timeout) = (proto.max_message_size, proto.timeout_us);
        let seg = Segment {
            seq: t.seq,
            syn,
            fin: t.has(tcpflags::FIN),
            payload: t.payload,
            missing: t.missing,
        };
        let mut cx = Cx {
            now,
            timeout,
            out: &mut self.out,
        };
        let budget = &self.budget;
        let TcpConn {
            half,
            buf,
            skip,
            parser,
            ..
        } = conn;
        let mut errors = 0;
        let st = half[d].segment(seg, self.s.limits, budget, &mut |c| {
            errors += feed_chunk(
                parser.as_mut(),
                dir,
                c,
                &mut buf[d],
                &mut skip[d],
                budget,
                max_msg,
                &mut cx,
            )
        });
        self.summary.parse_errors += errors;
        let done = conn.half[0].finished() && conn.half[1].finished();
        self.count(st);
        if done {
            self.close_tcp(&k, now);
            self.ended.insert(k, now);
            self.bound_ended();
        } else if !self.out.is_empty() {
            self.emit_tcp(&k);
        }
    }

    fn count(&mut self, st: SegmentStats) {
        if st.retransmitted {
            monitor::inc(&METRICS.inspect_tcp_retransmitted);
        }
        if st.out_of_order {
            monitor::inc(&METRICS.inspect_tcp_out_of_order);
        }
        if st.out_of_window {
            monitor::inc(&METRICS.inspect_tcp_out_of_window);
        }
        if st.gaps > 0 {
            self.summary.tcp_gaps += u64::from(st.gaps);
            monitor::add(&METRICS.inspect_tcp_gaps, u64::from(st.gaps));
            monitor::add(&METRICS.inspect_tcp_gap_bytes, st.gap_bytes);
        }
    }

    /// Keeps the table of ended connections within `max_streams`: when full, the oldest
    /// half goes (their stray packets would only open streams that find nothing to parse).
    fn bound_ended(&mut self) {
        if self.ended.len() > self.s.max_streams {
            let mut at: Vec<u64> = self.ended.values().copied().collect();
            let mid = at.len() / 2;
            let (_, &mut cut, _) = at.select_nth_unstable(mid);
            self.ended.retain(|_, t| *t > cut);
        }
    }

    /// Flushes both directions of a connection, publishes what is pending, forgets it.
    fn close_tcp(&mut self, k: &Key, now: u64) {
        let Some(mut conn) = self.tcp.remove(k) else {
            return;
        };
        let proto = self.reg.get(conn.proto);
        let (max_msg, timeout) = (proto.max_message_size, proto.timeout_us);
        let mut cx = Cx {
            now,
            timeout,
            out: &mut self.out,
        };
        let budget = &self.budget;
        let mut total = SegmentStats::default();
        let mut errors = 0;
        {
            let TcpConn {
                half,
                buf,
                skip,
                parser,
                ..
            } = &mut conn;
            for dir in DIRS {
                let d = dir_index(dir);
                let st = half[d].flush(budget, &mut |c| {
                    errors += feed_chunk(
                        parser.as_mut(),
                        dir,
                        c,
                        &mut buf[d],
                        &mut skip[d],
                        budget,
                        max_msg,
                        &mut cx,
                    )
                });
                total.gaps += st.gaps;
                total.gap_bytes += st.gap_bytes;
                half[d].release(budget);
                budget.give(buf[d].len());
                buf[d] = Vec::new();
            }
            parser.close(&mut cx);
        }
        self.count(total);
        self.summary.parse_errors += errors;
        monitor::set(&METRICS.inspect_tcp_streams, self.tcp.len() as u64);
        if !self.out.is_empty() {
            let proto = self.reg.get(conn.proto).name;
            let ep = endpoints(
                self.lookup,
                "tcp",
                conn.client,
                conn.server,
                &mut conn.owners,
            );
            self.publish(proto, &ep);
        }
    }

    fn emit_tcp(&mut self, k: &Key) {
        let Some(conn) = self.tcp.get_mut(k) else {
            return;
        };
        let proto = self.reg.get(conn.proto).name;
        let ep = endpoints(
            self.lookup,
            "tcp",
            conn.client,
            conn.server,
            &mut conn.owners,
        );
        self.publish(proto, &ep);
    }

    fn publish(&mut self, proto: &'static str, ep: &Endpoints) {
        let shape = match self.ecs {
            Some(_) => EventFormat::Ecs,
            None => EventFormat::Classic,
        };
        for txn in self.out.drain(..) {
            if !txn.fields.reported_in(shape) {
                continue;
            }
            self.summary.transactions += 1;
            monitor::inc(&METRICS.inspect_transactions);
            let own;
            let ep = match txn.fields.ends() {
                Some((client, server)) => {
                    let mut owners = Owners::default();
                    own = endpoints(self.lookup, ep.transport, client, server, &mut owners);
                    &own
                }
                None => ep,
            };
            let e = match &self.ecs {
                Some(ecs) => txn.into_ecs_event(proto, ep, ecs),
                None => txn.into_event(proto, ep),
            };
            (self.sink)(e);
        }
    }

    fn udp_datagram(&mut self, src: SocketAddr, dst: SocketAddr, u: &UdpDatagram<'_>) {
        let mut k = key(src, dst);
        if !self.udp.contains_key(&k) {
            let Some((proto, server_is_dst)) = self.classify(src, dst, None) else {
                return;
            };
            let by_ports = self.reg.get(proto).udp_by_ports;
            if by_ports {
                k = ports_key(src, dst);
            }
            if !self.udp.contains_key(&k) {
                self.new_udp_flow(k, proto, server_is_dst, src, dst, by_ports);
            }
        }
        let Some(flow) = self.udp.get_mut(&k) else {
            return;
        };
        flow.last_seen = self.now;
        let dir = if src.port() == flow.client.port() && (flow.by_ports || src == flow.client) {
            Dir::ToServer
        } else {
            Dir::ToClient
        };
        let mut cx = Cx {
            now: self.now,
            timeout: self.reg.get(flow.proto).timeout_us,
            out: &mut self.out,
        };
        if let Err(e) = flow
            .parser
            .datagram_between(src, dst, dir, u.payload, &mut cx)
        {
            self.summary.parse_errors += 1;
            parse_error(self.reg.get(flow.proto).name, &e);
        }
        let idle = !flow.parser.pending();
        if !self.out.is_empty() {
            let proto = self.reg.get(flow.proto).name;
            let ep = endpoints(
                self.lookup,
                "udp",
                flow.client,
                flow.server,
                &mut flow.owners,
            );
            self.publish(proto, &ep);
        }
        // Nothing waits for an answer: the flow costs nothing to forget (DNS clients use a
        // new port per query, so keeping answered flows would only fill the table).
        if idle {
            self.udp.remove(&k);
            monitor::set(&METRICS.inspect_udp_flows, self.udp.len() as u64);
        }
    }

    /// Opens the UDP flow `k` of protocol `proto` for a datagram from `src` to `dst`
    /// (unless the table is full, counted).
    fn new_udp_flow(
        &mut self,
        k: Key,
        proto: usize,
        server_is_dst: bool,
        src: SocketAddr,
        dst: SocketAddr,
        by_ports: bool,
    ) {
        let Some(factory) = self.reg.get(proto).udp.clone() else {
            return;
        };
        if self.udp.len() >= self.s.max_streams {
            monitor::inc(&METRICS.inspect_udp_flows_dropped);
            return;
        }
        let (client, server) = if server_is_dst {
            (src, dst)
        } else {
            (dst, src)
        };
        // A flow keyed by ports has no addresses of its own: its ends are the ports.
        let (client, server) = if by_ports {
            (unaddressed(client.port()), unaddressed(server.port()))
        } else {
            (client, server)
        };
        self.udp.insert(
            k,
            UdpFlow {
                proto,
                client,
                server,
                by_ports,
                parser: factory(),
                last_seen: self.now,
                owners: Owners::default(),
            },
        );
        monitor::set(&METRICS.inspect_udp_flows, self.udp.len() as u64);
    }

    /// Live mode: lets time pass while no packet arrives.
    pub fn tick(&mut self, now: u64) {
        if now > self.now {
            self.now = now;
        }
        self.release_due();
        if self.now >= self.next_sweep {
            self.sweep();
        }
    }

    /// Expires transactions, idle connections and stale fragments.
    fn sweep(&mut self) {
        self.next_sweep = self.now + SWEEP_EVERY_US;
        self.defrag.expire(self.now);
        if let Some(t) = &mut self.icmp {
            t.expire(self.now);
            self.emit_icmp();
        }
        if let Some(f) = &mut self.flows {
            f.sweep(self.now, self.lookup);
            self.emit_flows();
        }
        let idle = self.s.idle_timeout_us;
        let now = self.now;
        let mut stale = Vec::new();
        let keys: Vec<Key> = self.tcp.keys().copied().collect();
        for k in keys {
            let Some(conn) = self.tcp.get_mut(&k) else {
                continue;
            };
            if now.saturating_sub(conn.last_seen) >= idle {
                stale.push(k);
                continue;
            }
            let mut cx = Cx {
                now,
                timeout: self.reg.get(conn.proto).timeout_us,
                out: &mut self.out,
            };
            conn.parser.expire(&mut cx);
            if !self.out.is_empty() {
                self.emit_tcp(&k);
            }
        }
        for k in stale {
            monitor::inc(&METRICS.inspect_tcp_streams_expired);
            self.close_tcp(&k, now);
        }
        self.ended.retain(|_, at| now.saturating_sub(*at) < idle);
        let keys: Vec<Key> = self.udp.keys().copied().collect();
        for k in keys {
            let Some(flow) = self.udp.get_mut(&k) else {
                continue;
            };
            let timeout = self.reg.get(flow.proto).timeout_us;
            let mut cx = Cx {
                now,
                timeout,
                out: &mut self.out,
            };
            flow.parser.expire(&mut cx);
            let forget = !flow.parser.pending() && now.saturating_sub(flow.last_seen) >= timeout;
            if !self.out.is_empty() {
                let proto = self.reg.get(flow.proto).name;
                let ep = endpoints(
                    self.lookup,
                    "udp",
                    flow.client,
                    flow.server,
                    &mut flow.owners,
                );
                self.publish(proto, &ep);
            }
            if forget {
                self.udp.remove(&k);
            }
        }
        monitor::set(&METRICS.inspect_udp_flows, self.udp.len() as u64);
    }

    /// End of input: every connection is closed and every pending request published.
    pub fn finish(&mut self) {
        while let Some((k, _)) = self.sort.due(u64::MAX) {
            self.release_key(k, u64::MAX);
        }
        let keys: Vec<Key> = self.tcp.keys().copied().collect();
        for k in keys {
            self.close_tcp(&k, self.now);
        }
        let flows: Vec<Key> = self.udp.keys().copied().collect();
        for k in flows {
            let Some(mut flow) = self.udp.remove(&k) else {
                continue;
            };
            let mut cx = Cx {
                now: self.now,
                timeout: self.reg.get(flow.proto).timeout_us,
                out: &mut self.out,
            };
            flow.parser.close(&mut cx);
            if !self.out.is_empty() {
                let proto = self.reg.get(flow.proto).name;
                let ep = endpoints(
                    self.lookup,
                    "udp",
                    flow.client,
                    flow.server,
                    &mut flow.owners,
                );
                self.publish(proto, &ep);
            }
        }
        if let Some(t) = &mut self.icmp {
            t.close();
            self.emit_icmp();
        }
        if let Some(f) = &mut self.flows {
            f.finish(self.now, self.lookup);
            self.emit_flows();
        }
        monitor::set(&METRICS.inspect_udp_flows, 0);
        monitor::set(&METRICS.inspect_tcp_streams, 0);
    }

    /// Bytes held for reassembly and unparsed data right now.
    pub fn memory_used(&self) -> usize {
        self.budget.used()
    }
}

fn parse_error(proto: &str, e: &super::proto::ParseError) {
    monitor::inc(&METRICS.inspect_parse_errors);
    tracing::debug!(target: "inspect", "{proto}: parse error: {e}");
}

fn endpoints(
    lookup: Option<&dyn ProcessLookup>,
    transport: &'static str,
    client: SocketAddr,
    server: SocketAddr,
    owners: &mut Owners,
) -> Endpoints {
    if let Some(l) = lookup {
        if owners.client.is_none() {
            owners.client = l.lookup(client, server);
        }
        if owners.server.is_none() {
            owners.server = l.lookup(server, client);
        }
    }
    Endpoints {
        transport,
        client,
        server,
        client_process: owners.client.clone(),
        server_process: owners.server.clone(),
        icmp: None,
    }
}

/// Bytes of a direction a parser asked to skip unseen: how many are still to come, and how
/// many of those that went by fell into holes of the capture.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Skip {
    left: usize,
    lost: usize,
}

impl Skip {
    /// `n` more bytes went by (`lost`: in a hole); tells the parser when the skip is over.
    fn pass(
        &mut self,
        n: usize,
        lost: bool,
        parser: &mut dyn TcpParser,
        dir: Dir,
        cx: &mut Cx<'_>,
    ) {
        self.left -= n;
        if lost {
            self.lost += n;
        }
        if self.left == 0 {
            parser.skipped(dir, std::mem::take(&mut self.lost), cx);
        }
    }
}

/// Hands one reassembled chunk to the parser, buffering what it cannot use yet. Returns
/// the parse errors (0 or 1).
#[allow(clippy::too_many_arguments)]
pub(crate) fn feed_chunk(
    parser: &mut dyn TcpParser,
    dir: Dir,
    chunk: Chunk<'_>,
    buf: &mut Vec<u8>,
    skip: &mut Skip,
    budget: &Budget,
    max_msg: usize,
    cx: &mut Cx<'_>,
) -> u64 {
    match chunk {
        Chunk::Data(mut data) => {
            if skip.left > 0 {
                let n = skip.left.min(data.len());
                data = &data[n..];
                skip.pass(n, false, parser, dir, cx);
            }
            if data.is_empty() {
                return 0;
            }
            if buf.is_empty() {
                match run(parser, dir, data, skip, cx) {
                    Ok(used) if used < data.len() => {
                        let rest = &data[used..];
                        if rest.len() > max_msg || !budget.try_take(rest.len()) {
                            overflow(parser, dir, rest.len(), cx);
                        } else {
                            buf.extend_from_slice(rest);
                        }
                    }
                    Ok(_) => {}
                    Err(()) => return 1,
                }
            } else {
                if buf.len() + data.len() > max_msg || !budget.try_take(data.len()) {
                    let n = buf.len() + data.len();
                    budget.give(buf.len());
                    buf.clear();
                    overflow(parser, dir, n, cx);
                    return 0;
                }
                buf.extend_from_slice(data);
                let r = run(parser, dir, buf, skip, cx);
                let (used, errors) = match r {
                    Ok(u) => (u, 0),
                    Err(()) => (buf.len(), 1),
                };
                budget.give(used);
                buf.drain(..used);
                if buf.capacity() > 64 * 1024 && buf.len() < 16 * 1024 {
                    buf.shrink_to(16 * 1024);
                }
                return errors;
            }
            0
        }
        Chunk::Gap(n) => {
            if skip.left >= n {
                skip.pass(n, true, parser, dir, cx);
                return 0;
            }
            let n = n - skip.left;
            if skip.left > 0 {
                skip.pass(skip.left, true, parser, dir, cx);
            }
            budget.give(buf.len());
            buf.clear();
            parser.gap(dir, n, cx);
            0
        }
        Chunk::Fin => {
            budget.give(buf.len());
            buf.clear();
            // The rest of what was to be skipped never came.
            if skip.left > 0 {
                skip.pass(skip.left, true, parser, dir, cx);
            }
            parser.fin(dir, cx);
            0
        }
    }
}

/// Calls the parser while it makes progress. Err(()) after a parse error (already counted;
/// the parser was told to reset that direction).
fn run(
    parser: &mut dyn TcpParser,
    dir: Dir,
    data: &[u8],
    skip: &mut Skip,
    cx: &mut Cx<'_>,
) -> Result<usize, ()> {
    let mut off = 0;
    while off < data.len() {
        match parser.parse(dir, &data[off..], cx) {
            Ok(0) => break,
            Ok(n) if n > data.len() - off => {
                skip.left += n - (data.len() - off);
                off = data.len();
            }
            Ok(n) => off += n,
            Err(e) => {
                parse_error("tcp", &e);
                parser.gap(dir, 0, cx);
                return Err(());
            }
        }
    }
    Ok(off)
}

fn overflow(parser: &mut dyn TcpParser, dir: Dir, n: usize, cx: &mut Cx<'_>) {
    monitor::inc(&METRICS.inspect_tcp_buffer_overflows);
    parser.gap(dir, n, cx);
}

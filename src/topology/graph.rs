//! The graph model: observations in, nodes and edges out, in memory that grows with the
//! graph and a bounded join buffer, not with the events.
//!
//! Each connection is a *flow* while its ends are being joined: found by `community_id`
//! when the event has one, else by its client and server address and port (scoped to the
//! reporting host when an address is loopback, since every host has its own). The flow
//! holds what each end's agent said (host, container, binary, `tcp` figures) and the
//! transactions seen on it, de-duplicated across the two agents. At most `max_flows`
//! flows are held; the oldest is then *folded*: its ends resolved to nodes and its
//! figures added to its edge. A snapshot folds a copy of the live flows the same way.
//!
//! Resolving an end: the agent that reported it names it; an end no agent reported is
//! looked up among the listening sockets and the addresses agents report as their own
//! (`beat.local_ips`); an address no agent owns is an external endpoint.

use super::latency::Histogram;
use super::parse::{Action, ConnObs, ListenObs, Observation, Tcp, TxnObs};
use crate::fast_hash::{Fx, FxMap, FxSet};
use hashbrown::hash_table::{self, HashTable};
use serde::Serialize;
use slab::Slab;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

pub type Sym = Arc<str>;

/// Bounds of the graph (`topology.max_*`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_nodes: usize,
    pub max_edges: usize,
    pub max_flows: usize,
}

/// Transactions of the two agents closer than this are one.
const SAME_TXN_MS: i64 = 1000;
/// Transactions remembered per flow for that de-duplication.
const RECENT_TXNS: usize = 32;
/// An end that opens this long after it closed is a new connection on the same address
/// pair; closer than that it is the same connection seen twice (an agent may report a
/// short-lived socket of the pair closed before it reports the accepted one open).
const REUSE_AFTER_MS: i64 = 5000;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeKey {
    Service {
        host: Sym,
        container: Option<Sym>,
        binary: Option<Sym>,
        port: u16,
    },
    Client {
        host: Sym,
        container: Option<Sym>,
        binary: Option<Sym>,
    },
    External {
        ip: IpAddr,
        port: Option<u16>,
    },
}

impl NodeKey {
    pub fn id(&self) -> String {
        fn place(host: &str, container: &Option<Sym>, binary: &Option<Sym>) -> String {
            let c = container
                .as_deref()
                .map(|c| format!("/{c}"))
                .unwrap_or_default();
            format!("{host}{c}/{}", binary.as_deref().unwrap_or("?"))
        }
        match self {
            NodeKey::Service {
                host,
                container,
                binary,
                port,
            } => format!("service:{}:{port}", place(host, container, binary)),
            NodeKey::Client {
                host,
                container,
                binary,
            } => format!("client:{}", place(host, container, binary)),
            NodeKey::External { ip, port: Some(p) } => {
                format!("external:{}", SocketAddr::new(*ip, *p))
            }
            NodeKey::External { ip, port: None } => format!("external:{ip}"),
        }
    }
}

/// What the agent at one end said about it.
#[derive(Debug, Clone, PartialEq)]
struct Side {
    host: Sym,
    container: Option<Sym>,
    binary: Option<Sym>,
}

#[derive(Debug, Clone, Default)]
pub struct ProtoStats {
    pub requests: u64,
    pub errors: u64,
    pub latency: Histogram,
}

impl ProtoStats {
    fn merge(&mut self, o: &ProtoStats) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.latency.merge(&o.latency);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TupleKey {
    client: SocketAddr,
    server: SocketAddr,
    scope: Option<Sym>,
}

type CidKey = (u64, Option<Sym>);

#[derive(Debug, Clone)]
struct Flow {
    /// The order it began in among all flows.
    serial: u64,
    tuple: TupleKey,
    cid: Option<CidKey>,
    client: Option<Side>,
    server: Option<Side>,
    seen_conn: bool,
    closed_client: bool,
    closed_server: bool,
    tcp_client: Option<Tcp>,
    tcp_server: Option<Tcp>,
    last_ms: i64,
    protos: Vec<(Sym, ProtoStats)>,
    recent: VecDeque<(i64, Sym, Sym)>,
}

/// An edge's figures.
#[derive(Debug, Clone, Default)]
pub struct EdgeStats {
    pub connections: u64,
    pub closed: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    rtt_sum: u64,
    rtt_n: u64,
    pub retransmits: u64,
    pub last_ms: i64,
    pub protocols: BTreeMap<Sym, ProtoStats>,
}

impl EdgeStats {
    /// Mean smoothed round-trip time of its connections.
    pub fn rtt_us(&self) -> u64 {
        self.rtt_sum.checked_div(self.rtt_n).unwrap_or(0)
    }
}

/// Nodes and edges, bounded.
#[derive(Debug, Clone, Default)]
pub struct Aggregate {
    pub nodes: FxSet<NodeKey>,
    pub edges: FxMap<(NodeKey, NodeKey), EdgeStats>,
    /// Connections (or transactions) left out because the graph had `max_nodes` nodes.
    pub beyond_nodes: u64,
    /// ... or `max_edges` edges.
    pub beyond_edges: u64,
}

impl Aggregate {
    fn edge(&mut self, src: NodeKey, dst: NodeKey, limits: &Limits) -> Option<&mut EdgeStats> {
        let edges = self.edges.len();
        match self.edges.entry((src, dst)) {
            Entry::Occupied(e) => Some(e.into_mut()),
            Entry::Vacant(e) => {
                let (a, b) = e.key();
                let new_nodes = usize::from(!self.nodes.contains(a))
                    + usize::from(a != b && !self.nodes.contains(b));
                if self.nodes.len() + new_nodes > limits.max_nodes {
                    self.beyond_nodes += 1;
                    return None;
                }
                if edges >= limits.max_edges {
                    self.beyond_edges += 1;
                    return None;
                }
                self.nodes.insert(a.clone());
                self.nodes.insert(b.clone());
                Some(e.insert(EdgeStats::default()))
            }
        }
    }

    /// Keeps the edges seen at or after `start_ms`, and their nodes.
    fn retain_since(&mut self, start_ms: i64) {
        self.edges.retain(|_, e| e.last_ms >= start_ms);
        let used: HashSet<&NodeKey> = self.edges.keys().flat_map(|(a, b)| [a, b]).collect();
        let keep: FxSet<NodeKey> = self
            .nodes
            .iter()
            .filter(|n| used.contains(n))
            .cloned()
            .collect();
        self.nodes = keep;
    }
}

/// What became of an observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    Used,
    /// A transaction the agent at the other end already reported.
    Duplicate,
}

/// Counters of the joining itself.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct JoinCounters {
    /// Flows folded into their edge before their end because `max_flows` was reached.
    pub flows_folded_early: u64,
    /// Flows dropped because their last event was already outside the window.
    pub flows_expired: u64,
    /// Listening sockets not remembered (more than `max_nodes`).
    pub listeners_dropped: u64,
    /// Addresses of agents not remembered (more than `max_nodes`).
    pub addresses_dropped: u64,
    /// Transactions counted once though both agents reported them.
    pub transactions_deduplicated: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ListenKey {
    Addr(SocketAddr),
    Host(Sym, u16),
}

/// The tables are keyed by what agents report (bounded by the limits), hashed with FxHash
/// as the agent's own hot tables are (see [`crate::fast_hash`]).
pub struct Graph {
    limits: Limits,
    interned: FxSet<Sym>,
    /// The flows held, each at a key of its own while held (a key is reused after).
    flows: Slab<Flow>,
    /// The flows in the order they began, with their serial numbers (a key whose flow
    /// is gone may hold a newer one).
    order: VecDeque<(usize, u64)>,
    next_serial: u64,
    /// The flows by address pair: their keys only, found by the pair's hash and checked
    /// against the flow's own pair, so that a bucket is a word (the flow is read next
    /// anyway) rather than the pair again.
    by_tuple: HashTable<usize>,
    by_cid: FxMap<CidKey, usize>,
    listeners: FxMap<ListenKey, Side>,
    ip_hosts: FxMap<IpAddr, Sym>,
    folded: Aggregate,
    /// Flows whose last event is before this are dropped rather than folded.
    pub horizon_ms: i64,
    pub counters: JoinCounters,
}

/// FxHash of a key (a community ID, an address pair), as the graph's tables hash.
fn fx_hash(v: &(impl Hash + ?Sized)) -> u64 {
    Fx::default().hash_one(v)
}

impl Graph {
    pub fn new(limits: Limits) -> Graph {
        Graph {
            limits,
            interned: FxSet::default(),
            flows: Slab::new(),
            order: VecDeque::new(),
            next_serial: 0,
            by_tuple: HashTable::new(),
            by_cid: FxMap::default(),
            listeners: FxMap::default(),
            ip_hosts: FxMap::default(),
            folded: Aggregate::default(),
            horizon_ms: i64::MIN,
            counters: JoinCounters::default(),
        }
    }

    pub fn flows(&self) -> usize {
        self.flows.len()
    }

    /// Whether the flow at `id` is still the one that began `serial`-th.
    fn holds(&self, id: usize, serial: u64) -> bool {
        self.flows.get(id).is_some_and(|f| f.serial == serial)
    }

    fn flow_of_tuple(&self, tuple: &TupleKey) -> Option<usize> {
        self.by_tuple
            .find(fx_hash(tuple), |&k| self.flows[k].tuple == *tuple)
            .copied()
    }

    fn sym(&mut self, s: &str) -> Sym {
        if let Some(x) = self.interned.get(s) {
            return x.clone();
        }
        let x: Sym = Arc::from(s);
        self.interned.insert(x.clone());
        x
    }

    /// The side of a host already interned.
    fn side(&mut self, host: &Sym, container: Option<&str>, binary: Option<&str>) -> Side {
        Side {
            host: host.clone(),
            container: container.map(|c| self.sym(c)),
            binary: binary.map(|b| self.sym(b)),
        }
    }

    fn learn_addresses(&mut self, host: &Sym, ips: &[IpAddr]) {
        for ip in ips {
            // Interned: the same host is the same allocation.
            if self.ip_hosts.get(ip).is_some_and(|h| Arc::ptr_eq(h, host)) {
                continue;
            }
            if self.ip_hosts.len() >= self.limits.max_nodes && !self.ip_hosts.contains_key(ip) {
                self.counters.addresses_dropped += 1;
                continue;
            }
            self.ip_hosts.insert(*ip, host.clone());
        }
    }

    pub fn observe(&mut self, o: &Observation) -> Use {
        match o {
            Observation::Conn(c) => self.conn(c),
            Observation::Listen(l) => self.listen(l),
            Observation::Txn(t) => self.txn(t),
        }
    }

    fn listen(&mut self, l: &ListenObs) -> Use {
        let host = self.sym(&l.reporter.host);
        let side = self.side(&host, l.reporter.container.as_deref(), l.binary.as_deref());
        self.learn_addresses(&side.host, &l.reporter.local_ips);
        let key = if l.addr.ip().is_unspecified() || l.addr.ip().is_loopback() {
            ListenKey::Host(side.host.clone(), l.addr.port())
        } else {
            ListenKey::Addr(l.addr)
        };
        if self.listeners.len() >= self.limits.max_nodes && !self.listeners.contains_key(&key) {
            self.counters.listeners_dropped += 1;
        } else {
            self.listeners.insert(key, side);
        }
        Use::Used
    }

    /// The flow of this connection; a new one when none is held, or when the end that
    /// reports an opening had closed a while before (the address pair was reused).
    /// `reopening`: Some(whether the client end) opens, at this time.
    fn flow_for(
        &mut self,
        client: SocketAddr,
        server: SocketAddr,
        cid: Option<&str>,
        reporter: &Sym,
        reopening: Option<(bool, i64)>,
    ) -> usize {
        let scope =
            (client.ip().is_loopback() || server.ip().is_loopback()).then(|| reporter.clone());
        let cid_key = cid.map(|c| (fx_hash(c), scope.clone()));
        let tuple = TupleKey {
            client,
            server,
            scope,
        };
        let found = cid_key
            .as_ref()
            .and_then(|k| self.by_cid.get(k))
            .copied()
            .or_else(|| self.flow_of_tuple(&tuple));
        if let Some(id) = found {
            let f = &self.flows[id];
            let reused = match reopening {
                Some((true, at)) => f.closed_client && at - f.last_ms >= REUSE_AFTER_MS,
                Some((false, at)) => f.closed_server && at - f.last_ms >= REUSE_AFTER_MS,
                None => false,
            };
            if !reused {
                if f.cid.is_none()
                    && let Some(k) = cid_key
                {
                    self.by_cid.insert(k.clone(), id);
                    self.flows[id].cid = Some(k);
                }
                return id;
            }
            self.retire(id);
        }
        while self.flows.len() >= self.limits.max_flows {
            let Some((old, serial)) = self.order.pop_front() else {
                break;
            };
            if self.holds(old, serial) {
                self.counters.flows_folded_early += 1;
                self.retire(old);
            }
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        let id = self.flows.vacant_key();
        if let Some(k) = &cid_key {
            self.by_cid.insert(k.clone(), id);
        }
        let flows = &self.flows;
        match self.by_tuple.entry(
            fx_hash(&tuple),
            |&k| flows[k].tuple == tuple,
            |&k| fx_hash(&flows[k].tuple),
        ) {
            hash_table::Entry::Occupied(mut e) => *e.get_mut() = id,
            hash_table::Entry::Vacant(e) => {
                e.insert(id);
            }
        }
        self.order.push_back((id, serial));
        self.flows.insert(Flow {
            serial,
            tuple,
            cid: cid_key,
            client: None,
            server: None,
            seen_conn: false,
            closed_client: false,
            closed_server: false,
            tcp_client: None,
            tcp_server: None,
            last_ms: i64::MIN,
            protos: Vec::new(),
            recent: VecDeque::new(),
        });
        id
    }

    /// Removes a flow and folds it into the graph (or drops it when outside the window).
    fn retire(&mut self, id: usize) {
        let Some(f) = self.flows.try_remove(id) else {
            return;
        };
        if let Ok(e) = self.by_tuple.find_entry(fx_hash(&f.tuple), |&k| k == id) {
            e.remove();
        }
        if let Some(k) = &f.cid
            && self.by_cid.get(k) == Some(&id)
        {
            self.by_cid.remove(k);
        }
        if f.last_ms < self.horizon_ms {
            self.counters.flows_expired += 1;
            return;
        }
        let mut agg = std::mem::take(&mut self.folded);
        self.fold(&f, &mut agg);
        self.folded = agg;
    }

    fn conn(&mut self, c: &ConnObs) -> Use {
        let host = self.sym(&c.reporter.host);
        self.learn_addresses(&host, &c.reporter.local_ips);
        let reopening = (c.action == Action::Open).then_some((c.reporter_is_client, c.at_ms));
        let id = self.flow_for(
            c.client,
            c.server,
            c.community_id.as_deref(),
            &host,
            reopening,
        );
        let f = &self.flows[id];
        let end = if c.reporter_is_client {
            &f.client
        } else {
            &f.server
        };
        // The first end with a binary stays.
        let side = end
            .as_ref()
            .is_none_or(|e| e.binary.is_none())
            .then(|| self.side(&host, c.reporter.container.as_deref(), c.binary.as_deref()));
        let f = &mut self.flows[id];
        f.seen_conn = true;
        f.last_ms = f.last_ms.max(c.at_ms);
        let (end, tcp, closed) = if c.reporter_is_client {
            (&mut f.client, &mut f.tcp_client, &mut f.closed_client)
        } else {
            (&mut f.server, &mut f.tcp_server, &mut f.closed_server)
        };
        if side.is_some() {
            *end = side;
        }
        if let Some(t) = c.tcp {
            *tcp = Some(match *tcp {
                // Counters only grow; rtt is the latest.
                Some(old) => Tcp {
                    rtt_us: if t.rtt_us > 0 { t.rtt_us } else { old.rtt_us },
                    retransmits: old.retransmits.max(t.retransmits),
                    bytes_acked: old.bytes_acked.max(t.bytes_acked),
                    bytes_received: old.bytes_received.max(t.bytes_received),
                },
                None => t,
            });
        }
        if c.action == Action::Closed {
            *closed = true;
        }
        Use::Used
    }

    fn txn(&mut self, t: &TxnObs) -> Use {
        let host = self.sym(&t.reporter.host);
        self.learn_addresses(&host, &t.reporter.local_ips);
        let proto = self.sym(&t.protocol);
        let client = t
            .client_binary
            .as_deref()
            .map(|b| self.side(&host, t.reporter.container.as_deref(), Some(b)));
        let server = t
            .server_binary
            .as_deref()
            .map(|b| self.side(&host, t.reporter.container.as_deref(), Some(b)));
        let id = self.flow_for(t.client, t.server, t.community_id.as_deref(), &host, None);
        let f = &mut self.flows[id];
        f.last_ms = f.last_ms.max(t.at_ms);
        if client.is_some() && f.client.as_ref().is_none_or(|e| e.binary.is_none()) {
            f.client = client;
        }
        if server.is_some() && f.server.as_ref().is_none_or(|e| e.binary.is_none()) {
            f.server = server;
        }
        if let Some(i) = f.recent.iter().position(|(at, agent, p)| {
            *agent != host && *p == proto && (at - t.at_ms).abs() <= SAME_TXN_MS
        }) {
            f.recent.remove(i);
            self.counters.transactions_deduplicated += 1;
            return Use::Duplicate;
        }
        if f.recent.len() >= RECENT_TXNS {
            f.recent.pop_front();
        }
        f.recent.push_back((t.at_ms, host, proto.clone()));
        let stats = match f.protos.iter().position(|(p, _)| *p == proto) {
            Some(i) => &mut f.protos[i].1,
            None => {
                f.protos.push((proto, ProtoStats::default()));
                &mut f.protos.last_mut().expect("pushed").1
            }
        };
        stats.requests += 1;
        stats.errors += u64::from(t.error);
        if let Some(us) = t.latency_us {
            stats.latency.record(us);
        }
        Use::Used
    }

    fn host_of(&self, ip: IpAddr, scope: &Option<Sym>) -> Option<Sym> {
        if ip.is_loopback() {
            return scope.clone();
        }
        self.ip_hosts.get(&ip).cloned()
    }

    fn resolve(&self, f: &Flow) -> (NodeKey, NodeKey) {
        let server = f.tuple.server;
        let listener = || {
            self.listeners
                .get(&ListenKey::Addr(server))
                .or_else(|| {
                    let host = self.host_of(server.ip(), &f.tuple.scope)?;
                    self.listeners.get(&ListenKey::Host(host, server.port()))
                })
                .cloned()
        };
        let service = |s: Side| NodeKey::Service {
            host: s.host,
            container: s.container,
            binary: s.binary,
            port: server.port(),
        };
        let dst = match f.server.clone() {
            Some(mut s) => {
                if s.binary.is_none()
                    && let Some(l) = listener().filter(|l| l.host == s.host)
                {
                    s.binary = l.binary;
                }
                service(s)
            }
            None => match listener() {
                Some(l) => service(l),
                None => match self.host_of(server.ip(), &f.tuple.scope) {
                    Some(host) => service(Side {
                        host,
                        container: None,
                        binary: None,
                    }),
                    None => NodeKey::External {
                        ip: server.ip(),
                        port: Some(server.port()),
                    },
                },
            },
        };
        let client = f.tuple.client;
        let src = match f.client.clone() {
            Some(s) => NodeKey::Client {
                host: s.host,
                container: s.container,
                binary: s.binary,
            },
            None => match self.host_of(client.ip(), &f.tuple.scope) {
                Some(host) => NodeKey::Client {
                    host,
                    container: None,
                    binary: None,
                },
                None => NodeKey::External {
                    ip: client.ip(),
                    port: None,
                },
            },
        };
        (src, dst)
    }

    fn fold(&self, f: &Flow, into: &mut Aggregate) {
        if !f.seen_conn && f.protos.is_empty() {
            return;
        }
        let (src, dst) = self.resolve(f);
        let Some(e) = into.edge(src, dst, &self.limits) else {
            return;
        };
        e.last_ms = e.last_ms.max(f.last_ms);
        if f.seen_conn {
            e.connections += 1;
            e.closed += u64::from(f.closed_client || f.closed_server);
        }
        let c = f.tcp_client.unwrap_or_default();
        let s = f.tcp_server.unwrap_or_default();
        e.bytes_out += c.bytes_acked.max(s.bytes_received);
        e.bytes_in += c.bytes_received.max(s.bytes_acked);
        e.retransmits += c.retransmits + s.retransmits;
        let rtt = if c.rtt_us > 0 { c.rtt_us } else { s.rtt_us };
        if rtt > 0 {
            e.rtt_sum += rtt;
            e.rtt_n += 1;
        }
        for (p, st) in &f.protos {
            e.protocols.entry(p.clone()).or_default().merge(st);
        }
    }

    /// The graph of what was seen from `start_ms` to `end_ms`.
    pub fn snapshot(&self, start_ms: i64, end_ms: i64) -> Aggregate {
        let mut agg = self.folded.clone();
        for (_, f) in &self.flows {
            if f.last_ms >= start_ms && f.last_ms <= end_ms {
                self.fold(f, &mut agg);
            }
        }
        agg.retain_since(start_ms);
        agg
    }

    /// Forgets what was last seen before `start_ms` (a live graph's window moving on).
    pub fn forget_before(&mut self, start_ms: i64) {
        self.horizon_ms = start_ms;
        let old: Vec<usize> = self
            .flows
            .iter()
            .filter(|(_, f)| f.last_ms < start_ms)
            .map(|(id, _)| id)
            .collect();
        for id in old {
            self.retire(id);
        }
        let mut order = std::mem::take(&mut self.order);
        order.retain(|&(id, serial)| self.holds(id, serial));
        self.order = order;
        self.folded.retain_since(start_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::parse::parse;

    fn limits() -> Limits {
        Limits {
            max_nodes: 100,
            max_edges: 100,
            max_flows: 100,
        }
    }

    /// A classic connection event line.
    fn conn(
        (host, ips): (&str, &str),
        dir: &str,
        action: &str,
        l: &str,
        r: &str,
        bin: &str,
        extra: &str,
    ) -> String {
        let (lip, lport) = l.rsplit_once(':').unwrap();
        let (rip, rport) = r.rsplit_once(':').unwrap();
        format!(
            r#"{{"@timestamp":"2026-12-01T10:00:00.000Z","type":"connbeat","action":"{action}","direction":"{dir}","transport":"tcp","local_ip":"{lip}","local_port":{lport},"remote_ip":"{rip}","remote_port":{rport},"local_process":{{"binary":"{bin}"}},"tcp":{{"rtt_us":100,"total_retrans":1,"bytes_acked":10,"bytes_received":20}}{extra},"beat":{{"name":"{host}","local_ips":[{ips}]}}}}"#
        )
    }

    fn feed(g: &mut Graph, lines: &[String]) {
        for l in lines {
            g.observe(&parse(l.as_bytes()).unwrap());
        }
    }

    fn edges(g: &Graph) -> Vec<(String, String, u64, u64)> {
        let a = g.snapshot(i64::MIN, i64::MAX);
        let mut v: Vec<_> = a
            .edges
            .iter()
            .map(|((s, d), e)| (s.id(), d.id(), e.connections, e.closed))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn two_agents_ends_are_one_edge_by_address_and_port() {
        let mut g = Graph::new(limits());
        feed(
            &mut g,
            &[
                conn(
                    ("a", r#""10.0.0.1""#),
                    "outgoing",
                    "open",
                    "10.0.0.1:5000",
                    "10.0.0.2:80",
                    "curl",
                    "",
                ),
                conn(
                    ("b", r#""10.0.0.2""#),
                    "incoming",
                    "open",
                    "10.0.0.2:80",
                    "10.0.0.1:5000",
                    "nginx",
                    "",
                ),
                conn(
                    ("b", r#""10.0.0.2""#),
                    "incoming",
                    "closed",
                    "10.0.0.2:80",
                    "10.0.0.1:5000",
                    "nginx",
                    "",
                ),
                conn(
                    ("a", r#""10.0.0.1""#),
                    "outgoing",
                    "closed",
                    "10.0.0.1:5000",
                    "10.0.0.2:80",
                    "curl",
                    "",
                ),
            ],
        );
        assert_eq!(
            edges(&g),
            vec![("client:a/curl".into(), "service:b/nginx:80".into(), 1, 1)]
        );
        let a = g.snapshot(i64::MIN, i64::MAX);
        let e = a.edges.values().next().unwrap();
        // Client's acked bytes went out; each end's retransmits add up.
        assert_eq!(
            (e.bytes_out, e.bytes_in, e.retransmits, e.rtt_us()),
            (20, 20, 2, 100)
        );
    }

    #[test]
    fn community_id_joins_and_a_missing_end_is_resolved_or_external() {
        let mut g = Graph::new(limits());
        let cid = r#","community_id":"1:x""#;
        feed(
            &mut g,
            &[
                conn(("a", r#""10.0.0.1""#), "outgoing", "open", "10.0.0.1:5000", "10.0.0.2:80", "curl", cid),
                conn(("b", r#""10.0.0.2""#), "incoming", "open", "10.0.0.2:80", "10.0.0.1:5000", "nginx", cid),
                // Only the client reported: the server is a listening socket of agent b.
                r#"{"@timestamp":"2026-12-01T10:00:00.000Z","type":"connbeat","action":"listening","direction":"listening","transport":"tcp","local_ip":"0.0.0.0","local_port":6379,"local_process":{"binary":"redis-server"},"beat":{"name":"b","local_ips":["10.0.0.2"]}}"#.into(),
                conn(("a", r#""10.0.0.1""#), "outgoing", "open", "10.0.0.1:5001", "10.0.0.2:6379", "curl", ""),
                // Nobody owns 192.0.2.7.
                conn(("a", r#""10.0.0.1""#), "outgoing", "open", "10.0.0.1:5002", "192.0.2.7:443", "curl", ""),
                // An unknown client of b.
                conn(("b", r#""10.0.0.2""#), "incoming", "open", "10.0.0.2:80", "198.51.100.1:7000", "nginx", ""),
            ],
        );
        assert_eq!(
            edges(&g),
            vec![
                (
                    "client:a/curl".into(),
                    "external:192.0.2.7:443".into(),
                    1,
                    0
                ),
                ("client:a/curl".into(), "service:b/nginx:80".into(), 1, 0),
                (
                    "client:a/curl".into(),
                    "service:b/redis-server:6379".into(),
                    1,
                    0
                ),
                (
                    "external:198.51.100.1".into(),
                    "service:b/nginx:80".into(),
                    1,
                    0
                ),
            ]
        );
    }

    #[test]
    fn an_end_with_community_id_meets_one_without_from_an_older_agent() {
        let cid = r#","community_id":"1:y""#;
        for (first, second) in [(cid, ""), ("", cid)] {
            let mut g = Graph::new(limits());
            feed(
                &mut g,
                &[
                    conn(
                        ("a", r#""10.0.0.1""#),
                        "outgoing",
                        "open",
                        "10.0.0.1:5000",
                        "10.0.0.2:80",
                        "curl",
                        first,
                    ),
                    conn(
                        ("b", r#""10.0.0.2""#),
                        "incoming",
                        "open",
                        "10.0.0.2:80",
                        "10.0.0.1:5000",
                        "nginx",
                        second,
                    ),
                    conn(
                        ("a", r#""10.0.0.1""#),
                        "outgoing",
                        "closed",
                        "10.0.0.1:5000",
                        "10.0.0.2:80",
                        "curl",
                        cid,
                    ),
                ],
            );
            assert_eq!(
                edges(&g),
                vec![("client:a/curl".into(), "service:b/nginx:80".into(), 1, 1)]
            );
        }
    }

    #[test]
    fn loopback_connections_of_two_hosts_are_not_joined() {
        let mut g = Graph::new(limits());
        feed(
            &mut g,
            &[
                conn(
                    ("a", ""),
                    "outgoing",
                    "open",
                    "127.0.0.1:5000",
                    "127.0.0.1:80",
                    "curl",
                    "",
                ),
                conn(
                    ("b", ""),
                    "outgoing",
                    "open",
                    "127.0.0.1:5000",
                    "127.0.0.1:80",
                    "wget",
                    "",
                ),
                conn(
                    ("b", ""),
                    "incoming",
                    "open",
                    "127.0.0.1:80",
                    "127.0.0.1:5000",
                    "nginx",
                    "",
                ),
            ],
        );
        assert_eq!(
            edges(&g),
            vec![
                ("client:a/curl".into(), "service:a/?:80".into(), 1, 0),
                ("client:b/wget".into(), "service:b/nginx:80".into(), 1, 0),
            ]
        );
    }

    #[test]
    fn a_reused_address_pair_is_a_second_connection() {
        let mut g = Graph::new(limits());
        let open = conn(
            ("a", r#""10.0.0.1""#),
            "outgoing",
            "open",
            "10.0.0.1:5000",
            "10.0.0.2:80",
            "curl",
            "",
        );
        let close = conn(
            ("a", r#""10.0.0.1""#),
            "outgoing",
            "closed",
            "10.0.0.1:5000",
            "10.0.0.2:80",
            "curl",
            "",
        );
        let later = |l: &str| l.replace("10:00:00.000", "10:00:30.000");
        // Seen closed then open again within moments: one connection, reported twice.
        feed(
            &mut g,
            &[open.clone(), close.clone(), open.clone(), close.clone()],
        );
        // Open again half a minute later: a second connection.
        feed(&mut g, &[later(&open), later(&close)]);
        assert_eq!(
            edges(&g),
            vec![("client:a/curl".into(), "external:10.0.0.2:80".into(), 2, 2)]
        );
    }

    fn txn(host: &str, at: &str, status: &str, ms: u32, server_bin: Option<&str>) -> String {
        let sp = server_bin
            .map(|b| format!(r#","server_process":{{"binary":"{b}"}}"#))
            .unwrap_or_default();
        format!(
            r#"{{"@timestamp":"2026-12-01T10:00:{at}Z","type":"http","status":"{status}","responsetime":{ms},"transport":"tcp","client_ip":"10.0.0.1","client_port":5000,"ip":"10.0.0.2","port":80,"community_id":"1:x"{sp},"beat":{{"name":"{host}"}}}}"#
        )
    }

    #[test]
    fn a_transaction_seen_at_both_ends_counts_once() {
        let mut g = Graph::new(limits());
        let lines = [
            txn("a", "00.000", "OK", 10, None),
            txn("b", "00.300", "OK", 9, Some("nginx")),
            txn("a", "05.000", "Server Error", 100, None),
            txn("b", "05.200", "Server Error", 99, Some("nginx")),
            // The same agent twice within a second: two requests.
            txn("a", "05.500", "OK", 20, None),
        ];
        let uses: Vec<Use> = lines
            .iter()
            .map(|l| g.observe(&parse(l.as_bytes()).unwrap()))
            .collect();
        assert_eq!(
            uses,
            [
                Use::Used,
                Use::Duplicate,
                Use::Used,
                Use::Duplicate,
                Use::Used
            ]
        );
        let a = g.snapshot(i64::MIN, i64::MAX);
        let ((src, dst), e) = a.edges.iter().next().unwrap();
        assert_eq!(src.id(), "external:10.0.0.1");
        assert_eq!(dst.id(), "service:b/nginx:80");
        let http = &e.protocols["http"];
        assert_eq!((http.requests, http.errors), (3, 1));
        assert_eq!(e.connections, 0);
        assert_eq!(g.counters.transactions_deduplicated, 2);
    }

    #[test]
    fn bounds_count_what_is_left_out_and_flows_fold_early() {
        let mut g = Graph::new(Limits {
            max_nodes: 3,
            max_edges: 2,
            max_flows: 2,
        });
        let lines: Vec<String> = (0..5)
            .map(|i| {
                conn(
                    ("a", r#""10.0.0.1""#),
                    "outgoing",
                    "open",
                    &format!("10.0.0.1:{}", 5000 + i),
                    &format!("192.0.2.{i}:80"),
                    "curl",
                    "",
                )
            })
            .collect();
        feed(&mut g, &lines);
        assert_eq!(g.flows(), 2);
        assert_eq!(g.counters.flows_folded_early, 3);
        let a = g.snapshot(i64::MIN, i64::MAX);
        assert_eq!(a.nodes.len(), 3);
        assert_eq!(a.edges.len(), 2);
        assert_eq!(a.beyond_nodes, 3);
    }

    #[test]
    fn the_window_keeps_recent_edges() {
        let mut g = Graph::new(limits());
        let old = conn(
            ("a", r#""10.0.0.1""#),
            "outgoing",
            "open",
            "10.0.0.1:5000",
            "10.0.0.2:80",
            "curl",
            "",
        )
        .replace("10:00:00.000", "09:00:00.000");
        let new = conn(
            ("a", r#""10.0.0.1""#),
            "outgoing",
            "open",
            "10.0.0.1:5001",
            "10.0.0.3:80",
            "curl",
            "",
        );
        feed(&mut g, &[old, new]);
        let ten = super::super::parse::parse_time_ms("2026-12-01T10:00:00Z").unwrap();
        let a = g.snapshot(ten - 60_000, ten);
        assert_eq!(a.edges.len(), 1);
        assert_eq!(a.nodes.len(), 2);
        g.forget_before(ten - 60_000);
        assert_eq!(g.flows(), 1);
        assert_eq!(g.counters.flows_expired, 1);
    }
}

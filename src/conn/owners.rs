//! The connection table's owners, shared with deep inspection.
//!
//! Deep inspection sees packets, not sockets; to name the processes at both ends of a
//! transaction it asks this map, which the connection source refreshes after each poll of
//! the agent's own namespace (same host, same namespace: no extra /proc scans). A
//! connection the last poll has not seen yet is looked up among the recorded connects (a
//! short-lived client, named when it connected: the table's `connect` attribution), then
//! falls back to the listening socket on its local address, like the table's `listener`
//! attribution.

use super::connects::Recorded;
use crate::owner::{ProcessLookup, ProcessRef};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::RwLock;

/// Owners by connection and by listening address.
pub struct SharedOwners {
    inner: RwLock<Maps>,
    /// Owners of outgoing connections as they connected, by (local, remote): kept across
    /// polls, bounded.
    connects: RwLock<Recorded<(SocketAddr, SocketAddr), ProcessRef>>,
}

impl Default for SharedOwners {
    fn default() -> Self {
        SharedOwners::new(16_384)
    }
}

#[derive(Default)]
struct Maps {
    connections: HashMap<(SocketAddr, SocketAddr), ProcessRef>,
    /// (address, port) of listeners; the unspecified address stands for every address.
    listeners: HashMap<(IpAddr, u16), ProcessRef>,
}

/// What the source collects during a poll, then installs at once.
#[derive(Default)]
pub struct OwnersBuilder {
    maps: Maps,
}

impl OwnersBuilder {
    pub fn connection(&mut self, local: SocketAddr, remote: SocketAddr, owner: ProcessRef) {
        self.maps.connections.insert((local, remote), owner);
    }

    pub fn listener(&mut self, local: SocketAddr, owner: ProcessRef) {
        self.maps
            .listeners
            .insert((local.ip(), local.port()), owner);
    }
}

impl SharedOwners {
    /// Keeps at most `max_connects` recorded connects.
    pub fn new(max_connects: usize) -> SharedOwners {
        SharedOwners {
            inner: RwLock::default(),
            connects: RwLock::new(Recorded::new(max_connects)),
        }
    }

    /// The process that opened the outgoing connection `local` → `remote`, as recorded
    /// when it connected.
    pub fn connect(&self, local: SocketAddr, remote: SocketAddr, owner: ProcessRef) {
        self.connects
            .write()
            .expect("owners lock")
            .insert((local, remote), owner);
    }

    /// Replaces the maps with what a poll collected.
    pub fn install(&self, b: OwnersBuilder) {
        *self.inner.write().expect("owners lock") = b.maps;
    }

    pub fn len(&self) -> usize {
        self.inner.read().expect("owners lock").connections.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ProcessLookup for SharedOwners {
    fn lookup(&self, local: SocketAddr, remote: SocketAddr) -> Option<ProcessRef> {
        let m = self.inner.read().expect("owners lock");
        if let Some(p) = m.connections.get(&(local, remote)) {
            return Some(p.clone());
        }
        if let Some(p) = self
            .connects
            .read()
            .expect("owners lock")
            .get(&(local, remote))
        {
            return Some(p.clone());
        }
        let unspecified = match local.ip() {
            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        };
        m.listeners
            .get(&(local.ip(), local.port()))
            .or_else(|| m.listeners.get(&(unspecified, local.port())))
            // A dual-stack listener on [::] also accepts IPv4.
            .or_else(|| {
                m.listeners
                    .get(&(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), local.port()))
            })
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: u32, b: &str) -> ProcessRef {
        ProcessRef {
            pid,
            binary: b.into(),
        }
    }

    #[test]
    fn exact_connection_then_listener_fallback() {
        let o = SharedOwners::default();
        let mut b = OwnersBuilder::default();
        let srv: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let cli: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        b.connection(cli, srv, p(2, "curl"));
        b.listener("0.0.0.0:80".parse().unwrap(), p(1, "nginx"));
        o.install(b);
        assert_eq!(o.lookup(cli, srv), Some(p(2, "curl")));
        // The accepted side was not polled yet: the listener answers.
        assert_eq!(o.lookup(srv, cli), Some(p(1, "nginx")));
        assert_eq!(o.lookup("127.0.0.1:81".parse().unwrap(), cli), None);
        // A client gone before any poll saw it: named by its recorded connect, and kept
        // when the next poll installs its maps.
        let gone: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        assert_eq!(o.lookup(gone, srv), None);
        o.connect(gone, srv, p(3, "wget"));
        o.install(OwnersBuilder::default());
        assert_eq!(o.lookup(gone, srv), Some(p(3, "wget")));
        // Its peer, the accepted side, is still the listener's... once a poll installs it.
        assert_eq!(o.lookup(srv, gone), None);
    }
}

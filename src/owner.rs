//! Who owns a socket: the one type both sources share.
//!
//! The connection source knows which process owns each socket; deep inspection sees only
//! packets and asks. Both depend on this module and neither on the other, so the
//! dependency runs one way: `conn` implements [`ProcessLookup`], `inspect` calls it.

use std::net::SocketAddr;

/// The owner of one end of a connection, as transaction events show it
/// (`client_process` / `server_process`).
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct ProcessRef {
    pub pid: u32,
    pub binary: String,
}

/// Finds the owner of a local socket. Implemented by the connection table's shared owners.
pub trait ProcessLookup: Send + Sync {
    fn lookup(&self, local: SocketAddr, remote: SocketAddr) -> Option<ProcessRef>;
}

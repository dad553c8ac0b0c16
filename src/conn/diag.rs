//! netlink `sock_diag`: socket dumps and close (destroy) notifications.
//!
//! Requests are built with netlink-packet-sock-diag. Responses are read until `NLMSG_DONE`,
//! across as many `recv` calls as the kernel needs (the dump of a busy host is many
//! buffers; stopping at the first one silently loses most sockets). The `tcp_info`
//! attribute is decoded by [`super::tcp_info`].

use super::tcp_info::TcpInfo;
use crate::monitor::{self, METRICS};
use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer, NetlinkHeader,
    NetlinkMessage, NlasIterator, Parseable,
};
use netlink_packet_sock_diag::{
    SOCK_DIAG_BY_FAMILY, SockDiagMessage,
    constants::*,
    inet::{ExtensionFlags, InetRequest, InetResponseHeader, SocketId, StateFlags},
};
use netlink_sys::{Socket, SocketAddr as NlAddr, protocols::NETLINK_SOCK_DIAG};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

/// Address family of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
    fn af(self) -> u8 {
        match self {
            Family::V4 => AF_INET,
            Family::V6 => AF_INET6,
        }
    }
}

/// Transport protocol of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
    fn proto(self) -> u8 {
        match self {
            Transport::Tcp => IPPROTO_TCP,
            Transport::Udp => IPPROTO_UDP,
        }
    }
}

/// TCP states as the kernel numbers them.
pub mod state {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT1: u8 = 4;
    pub const FIN_WAIT2: u8 = 5;
    pub const TIME_WAIT: u8 = 6;
    pub const CLOSE: u8 = 7;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LAST_ACK: u8 = 9;
    pub const LISTEN: u8 = 10;
    pub const CLOSING: u8 = 11;
    pub const NEW_SYN_RECV: u8 = 12;

    /// The name `ss` and the events use.
    pub fn name(s: u8) -> &'static str {
        match s {
            ESTABLISHED => "ESTABLISHED",
            SYN_SENT => "SYN_SENT",
            SYN_RECV => "SYN_RECV",
            FIN_WAIT1 => "FIN_WAIT1",
            FIN_WAIT2 => "FIN_WAIT2",
            TIME_WAIT => "TIME_WAIT",
            CLOSE => "CLOSE",
            CLOSE_WAIT => "CLOSE_WAIT",
            LAST_ACK => "LAST_ACK",
            LISTEN => "LISTEN",
            CLOSING => "CLOSING",
            NEW_SYN_RECV => "NEW_SYN_RECV",
            _ => "UNKNOWN",
        }
    }
}

/// One socket as the kernel describes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SockRecord {
    pub family: Family,
    pub transport: Transport,
    pub state: u8,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub inode: u64,
    pub uid: u32,
    pub cookie: u64,
    pub tcp_info: Option<TcpInfo>,
    /// Inode of the network namespace the socket lives in (set by the caller, which knows
    /// which namespace it asked).
    pub netns: u64,
}

/// Length of `struct inet_diag_msg`, the fixed part of every reply.
const INET_DIAG_MSG_LEN: usize = 72;

impl SockRecord {
    /// Decodes one `inet_diag_msg` and its attributes, without allocating. The transport
    /// is the one asked for, or (for close notifications, which mix them) the one the
    /// `INET_DIAG_PROTOCOL` attribute names.
    fn parse(payload: &[u8], asked: Option<Transport>) -> Option<SockRecord> {
        let h = InetResponseHeader::parse(payload.get(..INET_DIAG_MSG_LEN)?).ok()?;
        let mut tcp_info = None;
        let mut protocol = None;
        for nla in NlasIterator::new(&payload[INET_DIAG_MSG_LEN..]) {
            let Ok(nla) = nla else { break };
            match nla.kind() {
                INET_DIAG_INFO => tcp_info = Some(TcpInfo::parse(nla.value())),
                INET_DIAG_PROTOCOL => protocol = nla.value().first().copied(),
                _ => {}
            }
        }
        let transport = asked.unwrap_or(if protocol == Some(IPPROTO_UDP) {
            Transport::Udp
        } else {
            Transport::Tcp
        });
        let id = &h.socket_id;
        let local_ip = unmap(id.source_address);
        // A dual-stack socket talking to an IPv4 peer is reported as the IPv4 it carries.
        let family = if h.family == AF_INET6 && local_ip.is_ipv6() {
            Family::V6
        } else {
            Family::V4
        };
        Some(SockRecord {
            family,
            transport,
            state: h.state,
            local: SocketAddr::new(local_ip, id.source_port),
            remote: SocketAddr::new(unmap(id.destination_address), id.destination_port),
            inode: u64::from(h.inode),
            uid: h.uid,
            cookie: u64::from_ne_bytes(id.cookie),
            tcp_info: if transport == Transport::Tcp {
                tcp_info
            } else {
                None
            },
            netns: 0,
        })
    }
}

/// An address as the IPv6 form a dual-stack socket uses.
fn to_v6(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
        v6 => v6,
    }
}

/// The kernel reports IPv4 peers of dual-stack sockets as `::ffff:a.b.c.d`; events show
/// them as the IPv4 addresses they are.
fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

const RECV_BUF: usize = 256 * 1024;

/// The cookie of an exact lookup that matches any socket (`INET_DIAG_NOCOOKIE`).
pub const ANY_COOKIE: u64 = u64::MAX;

/// A netlink socket for dump requests.
pub struct DiagSocket {
    sock: Socket,
    buf: Vec<u8>,
    seq: u32,
    /// Whether the one-walk TCP dump works here (see [`DiagSocket::dump_tcp`]).
    compat_ok: bool,
}

impl DiagSocket {
    /// Opens a sock_diag socket in the current network namespace.
    pub fn open() -> io::Result<DiagSocket> {
        let mut sock = Socket::new(NETLINK_SOCK_DIAG)?;
        sock.bind_auto()?;
        sock.connect(&NlAddr::new(0, 0))?;
        Ok(DiagSocket {
            sock,
            buf: vec![0; RECV_BUF],
            seq: 0,
            compat_ok: true,
        })
    }

    /// Dumps every TCP socket, IPv4 and IPv6, in one walk of the kernel's tables, using
    /// the original `TCPDIAG_GETSOCK` request with an unspecified family. The request is
    /// built by hand: netlink-packet-sock-diag models only the per-family request, whose
    /// dump walks the whole table once per family. Falls back to per-family dumps when
    /// the kernel refuses it.
    pub fn dump_tcp(
        &mut self,
        with_tcp_info: bool,
        mut each: impl FnMut(SockRecord),
    ) -> io::Result<usize> {
        if self.compat_ok {
            match self.dump_compat(with_tcp_info, &mut each) {
                Ok(n) => return Ok(n),
                Err(e)
                    if e.raw_os_error() == Some(libc::EINVAL)
                        || e.raw_os_error() == Some(libc::ENOENT)
                        || e.raw_os_error() == Some(libc::EOPNOTSUPP) =>
                {
                    tracing::debug!(target: "conn", "one-walk TCP dump refused ({e}); dumping per family");
                    self.compat_ok = false;
                }
                Err(e) => return Err(e),
            }
        }
        let mut n = self.dump(Family::V4, Transport::Tcp, with_tcp_info, &mut each)?;
        n += self.dump(Family::V6, Transport::Tcp, with_tcp_info, &mut each)?;
        Ok(n)
    }

    fn dump_compat(
        &mut self,
        with_tcp_info: bool,
        each: &mut dyn FnMut(SockRecord),
    ) -> io::Result<usize> {
        self.seq = self.seq.wrapping_add(1);
        // struct nlmsghdr (16 bytes) + struct inet_diag_req (60 bytes).
        let mut req = [0u8; 76];
        req[0..4].copy_from_slice(&76u32.to_ne_bytes());
        req[4..6].copy_from_slice(&TCPDIAG_GETSOCK.to_ne_bytes());
        req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        // idiag_family (AF_UNSPEC = every family), src_len, dst_len, idiag_ext.
        req[16] = 0;
        req[19] = if with_tcp_info {
            1 << (INET_DIAG_INFO - 1)
        } else {
            0
        };
        // idiag_id: 48 bytes of zeros (any socket); then idiag_states and idiag_dbs.
        req[68..72].copy_from_slice(&reported_states(Transport::Tcp).bits().to_ne_bytes());
        self.sock.send(&req, 0)?;
        self.receive_dump(Transport::Tcp, each)
    }

    /// Fills in `tcp_info` for the given TCP sockets with one exact lookup each (by
    /// addresses, ports and cookie), many per `send`: far cheaper than a dump with
    /// `tcp_info` when only a few sockets need it. A socket gone meanwhile keeps `None`.
    pub fn query_tcp_info(&mut self, records: &mut [SockRecord]) -> io::Result<()> {
        let mut info: std::collections::HashMap<u64, TcpInfo> = std::collections::HashMap::new();
        self.lookup_tcp(records, true, |r| {
            if let Some(t) = r.tcp_info {
                info.insert(r.cookie, t);
            }
        })?;
        for r in records.iter_mut() {
            if let Some(t) = info.get(&r.cookie) {
                r.tcp_info = Some(*t);
            }
        }
        Ok(())
    }

    /// Looks up the TCP sockets with the addresses and ports of `keys` (and their cookie,
    /// unless it is [`ANY_COOKIE`]), one exact lookup each, many per `send`, and hands
    /// each socket found to `each`; a socket that is gone is skipped. Listening sockets
    /// are found by their local address and port with an unspecified remote.
    pub fn lookup_tcp(
        &mut self,
        keys: &[SockRecord],
        with_tcp_info: bool,
        mut each: impl FnMut(SockRecord),
    ) -> io::Result<()> {
        const PER_SEND: usize = 128;
        let mut req = Vec::with_capacity(PER_SEND * 128);
        for chunk in keys.chunks(PER_SEND) {
            req.clear();
            for r in chunk {
                self.seq = self.seq.wrapping_add(1);
                let mut hdr = NetlinkHeader::default();
                hdr.flags = NLM_F_REQUEST;
                hdr.sequence_number = self.seq;
                let (family, local, remote) = match (r.local.ip(), r.remote.ip()) {
                    (IpAddr::V4(_), IpAddr::V4(_)) => (AF_INET, r.local.ip(), r.remote.ip()),
                    _ => (AF_INET6, to_v6(r.local.ip()), to_v6(r.remote.ip())),
                };
                let mut msg = NetlinkMessage::new(
                    hdr,
                    SockDiagMessage::InetRequest(InetRequest {
                        family,
                        protocol: IPPROTO_TCP,
                        extensions: if with_tcp_info {
                            ExtensionFlags::INFO
                        } else {
                            ExtensionFlags::empty()
                        },
                        states: StateFlags::all(),
                        socket_id: SocketId {
                            source_port: r.local.port(),
                            destination_port: r.remote.port(),
                            source_address: local,
                            destination_address: remote,
                            interface_id: 0,
                            cookie: r.cookie.to_ne_bytes(),
                        },
                    })
                    .into(),
                );
                msg.finalize();
                let start = req.len();
                req.resize(start + msg.buffer_len(), 0);
                msg.serialize(&mut req[start..]);
            }
            self.sock.send(&req, 0)?;
            // One reply per request: the socket, or an error (ENOENT when it is gone).
            let mut replies = 0;
            while replies < chunk.len() {
                let n = recv(&self.sock, &mut self.buf)?;
                for_each_message(&self.buf[..n], |m| {
                    replies += 1;
                    if let Message::Socket(payload) = m {
                        match SockRecord::parse(payload, Some(Transport::Tcp)) {
                            Some(r) => each(r),
                            None => monitor::inc(&METRICS.conn_decode_errors),
                        }
                    }
                    true
                });
            }
        }
        Ok(())
    }

    /// Dumps every socket of one family and transport, calling `each` for each of them.
    /// Returns how many were seen.
    pub fn dump(
        &mut self,
        family: Family,
        transport: Transport,
        with_tcp_info: bool,
        mut each: impl FnMut(SockRecord),
    ) -> io::Result<usize> {
        self.seq = self.seq.wrapping_add(1);
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_REQUEST | NLM_F_DUMP;
        hdr.sequence_number = self.seq;
        let socket_id = match family {
            Family::V4 => SocketId::new_v4(),
            Family::V6 => SocketId::new_v6(),
        };
        let extensions = if with_tcp_info && transport == Transport::Tcp {
            ExtensionFlags::INFO
        } else {
            ExtensionFlags::empty()
        };
        let mut msg = NetlinkMessage::new(
            hdr,
            SockDiagMessage::InetRequest(InetRequest {
                family: family.af(),
                protocol: transport.proto(),
                extensions,
                states: reported_states(transport),
                socket_id,
            })
            .into(),
        );
        msg.finalize();
        let mut req = vec![0; msg.buffer_len()];
        msg.serialize(&mut req);
        self.sock.send(&req, 0)?;
        self.receive_dump(transport, &mut each)
    }

    /// Reads a dump's replies until `NLMSG_DONE`, however many buffers that takes.
    fn receive_dump(
        &mut self,
        transport: Transport,
        each: &mut dyn FnMut(SockRecord),
    ) -> io::Result<usize> {
        let mut count = 0;
        loop {
            let n = recv(&self.sock, &mut self.buf)?;
            let mut end = None;
            for_each_message(&self.buf[..n], |m| match m {
                Message::Socket(payload) => {
                    match SockRecord::parse(payload, Some(transport)) {
                        Some(r) => {
                            count += 1;
                            each(r);
                        }
                        None => monitor::inc(&METRICS.conn_decode_errors),
                    }
                    true
                }
                Message::Done => {
                    end = Some(Ok(count));
                    false
                }
                Message::Error(e) => {
                    end = Some(Err(e));
                    false
                }
            });
            if let Some(result) = end {
                return result;
            }
        }
    }
}

/// The original inet_diag request type, which dumps TCP sockets of every family in one
/// walk of the kernel's socket tables (the per-family `SOCK_DIAG_BY_FAMILY` request walks
/// them once per family).
const TCPDIAG_GETSOCK: u16 = 18;

/// The states a dump asks for. TIME_WAIT and half-open request sockets are left to the
/// kernel: they are never reported (the first is an already closed connection, the second
/// becomes a new socket once accepted), and on a busy host they are most of the sockets.
fn reported_states(transport: Transport) -> StateFlags {
    match transport {
        Transport::Tcp => {
            // Leaving SYN_RECV out also leaves out NEW_SYN_RECV request sockets.
            StateFlags::all() - StateFlags::TIME_WAIT - StateFlags::SYN_RECV
        }
        Transport::Udp => StateFlags::all(),
    }
}

/// One netlink message of a sock_diag reply, as far as connbeat cares.
enum Message<'a> {
    /// An `inet_diag_msg` with its attributes.
    Socket(&'a [u8]),
    Done,
    Error(io::Error),
}

/// Walks the netlink messages of one received buffer, handing each to `f` until `f`
/// returns false. Nothing is allocated; malformed messages are counted and skipped.
fn for_each_message(buf: &[u8], mut f: impl FnMut(Message<'_>) -> bool) {
    let mut off = 0;
    while off < buf.len() {
        let Ok(msg) = NetlinkBuffer::new_checked(&buf[off..]) else {
            monitor::inc(&METRICS.conn_decode_errors);
            return;
        };
        let len = msg.length() as usize;
        let message = match msg.message_type() {
            SOCK_DIAG_BY_FAMILY | TCPDIAG_GETSOCK => Message::Socket(msg.payload()),
            NLMSG_DONE => Message::Done,
            NLMSG_ERROR => {
                let code = msg
                    .payload()
                    .get(..4)
                    .map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes")))
                    .unwrap_or(-libc::EIO);
                if code == 0 {
                    off += align4(len);
                    continue;
                }
                Message::Error(io::Error::from_raw_os_error(-code))
            }
            _ => {
                off += align4(len);
                continue;
            }
        };
        off += align4(len);
        if !f(message) {
            return;
        }
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn recv(sock: &Socket, buf: &mut [u8]) -> io::Result<usize> {
    recv_flags(sock, buf, 0)
}

fn recv_flags(sock: &Socket, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    loop {
        // SAFETY: buf is a valid, writable buffer of buf.len() bytes for the whole call.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The sock_diag destroy multicast groups (`SKNLGRP_INET*_DESTROY`).
pub mod groups {
    pub const TCP4_DESTROY: u32 = 1;
    pub const UDP4_DESTROY: u32 = 2;
    pub const TCP6_DESTROY: u32 = 3;
    pub const UDP6_DESTROY: u32 = 4;
}

/// What one wait for close notifications produced.
#[derive(Debug)]
pub enum CloseBatch {
    /// Sockets the kernel destroyed.
    Closed(Vec<SockRecord>),
    /// The kernel dropped notifications (receive buffer overrun).
    Overrun,
    /// Nothing arrived within the timeout.
    Idle,
}

impl CloseListener {
    /// The socket's descriptor, for waiting on several listeners at once.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.sock.as_raw_fd()
    }
}

/// A netlink socket subscribed to the destroy groups: one message per destroyed socket,
/// with its final state and `tcp_info` (inode and uid are zero by then).
pub struct CloseListener {
    sock: Socket,
    buf: Vec<u8>,
}

impl CloseListener {
    /// Joins the destroy groups for TCP (and UDP when asked). Needs CAP_NET_ADMIN: without
    /// it the kernel accepts the membership but delivers nothing, so the capability is
    /// checked first rather than waiting for notifications that never come.
    pub fn open(udp: bool, rcvbuf_bytes: usize, timeout: std::time::Duration) -> io::Result<Self> {
        const CAP_NET_ADMIN: u32 = 12;
        if !has_capability(CAP_NET_ADMIN) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "CAP_NET_ADMIN is missing, and without it the kernel delivers no destroy notifications",
            ));
        }
        let mut sock = Socket::new(NETLINK_SOCK_DIAG)?;
        sock.bind_auto()?;
        let mut groups = vec![groups::TCP4_DESTROY, groups::TCP6_DESTROY];
        if udp {
            groups.extend([groups::UDP4_DESTROY, groups::UDP6_DESTROY]);
        }
        for g in groups {
            sock.add_membership(g)?;
        }
        set_rcvbuf(&sock, rcvbuf_bytes);
        set_timeout(&sock, timeout)?;
        Ok(CloseListener {
            sock,
            buf: vec![0; RECV_BUF],
        })
    }

    /// Waits up to the timeout for notifications and returns what one `recv` brought.
    pub fn wait(&mut self) -> io::Result<CloseBatch> {
        self.receive(0)
    }

    /// Returns what is already queued, without waiting (`Idle` when nothing is).
    pub fn try_next(&mut self) -> io::Result<CloseBatch> {
        self.receive(libc::MSG_DONTWAIT)
    }

    fn receive(&mut self, flags: libc::c_int) -> io::Result<CloseBatch> {
        let n = match recv_flags(&self.sock, &mut self.buf, flags) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(CloseBatch::Overrun),
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                return Ok(CloseBatch::Idle);
            }
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for_each_message(&self.buf[..n], |m| {
            if let Message::Socket(payload) = m {
                match SockRecord::parse(payload, None) {
                    Some(r) => out.push(r),
                    None => monitor::inc(&METRICS.conn_decode_errors),
                }
            }
            true
        });
        Ok(CloseBatch::Closed(out))
    }
}

/// Whether the calling thread has `cap` in its effective capability set.
pub fn has_capability(cap: u32) -> bool {
    std::fs::read_to_string("/proc/thread-self/status")
        .or_else(|_| std::fs::read_to_string("/proc/self/status"))
        .ok()
        .and_then(|s| {
            let hex = s
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))?
                .trim()
                .to_string();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|bits| bits & (1u64 << cap) != 0)
}

/// Raises the receive buffer, beyond `rmem_max` when privileged (SO_RCVBUFFORCE).
fn set_rcvbuf(sock: &Socket, bytes: usize) {
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: v is a valid c_int that outlives the call.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            return;
        }
    }
}

fn set_timeout(sock: &Socket, t: std::time::Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: t.as_secs() as libc::time_t,
        tv_usec: t.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: tv is a valid timeval that outlives the call.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

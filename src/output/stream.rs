//! A byte stream to one server, for the outputs that speak their own protocol over TCP
//! (Redis, Logstash): `host[:port]` parsed with the output's default port, TCP with a
//! timeout, through a SOCKS5 proxy when `proxy_url` is set, then TLS from the shared `ssl`
//! block. Every failure is explained in terms of the settings (the same words as
//! `test output`, see [`super::check`]), so that the agent's log says what to fix.

use super::OutputError;
use super::check::{self, CheckFailed, Steps, fail};
use crate::config::SslConfig;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

/// A connected stream, plain or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.sock,
        }
    }
    /// Read and write timeouts of the socket (`None`: block).
    pub fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.tcp().set_read_timeout(t)?;
        self.tcp().set_write_timeout(t)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(t) => t.flush(),
        }
    }
}

/// `proxy_url: socks5://[user:password@]host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    pub host: String,
    pub port: u16,
    pub auth: Option<(String, String)>,
}

impl Proxy {
    /// Parses `proxy_url` (empty: no proxy); the error names `<key>.proxy_url`.
    pub fn parse(url: &str, key: &str) -> Result<Option<Proxy>, OutputError> {
        if url.is_empty() {
            return Ok(None);
        }
        let bad = |why: &str| OutputError::Config(format!("{key}.proxy_url: {url:?} {why}"));
        let rest = url
            .strip_prefix("socks5://")
            .or_else(|| url.strip_prefix("socks5h://"))
            .ok_or_else(|| bad("is not a socks5:// URL (the only proxy these outputs use)"))?;
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((a, h)) => {
                let (u, p) = a.split_once(':').unwrap_or((a, ""));
                (Some((u.to_string(), p.to_string())), h)
            }
            None => (None, rest),
        };
        let hostport = hostport.trim_end_matches('/');
        let (host, port) =
            split_host(hostport, 1080).map_err(|e| bad(&format!("has a bad address: {e}")))?;
        Ok(Some(Proxy { host, port, auth }))
    }
}

/// How an output reaches its servers.
#[derive(Clone)]
pub struct Dialer {
    /// The output's section, for messages: `output.redis`.
    pub key: &'static str,
    pub default_port: u16,
    pub timeout: Duration,
    pub proxy: Option<Proxy>,
    /// The TLS client configuration, when `ssl` is enabled.
    pub tls: Option<Arc<ClientConfig>>,
}

impl Dialer {
    /// From the output's `ssl` and `proxy_url`; errors name the setting.
    pub fn new(
        key: &'static str,
        default_port: u16,
        timeout: Duration,
        ssl: Option<&SslConfig>,
        proxy_url: &str,
    ) -> Result<Dialer, OutputError> {
        let tls = match ssl.filter(|s| s.enabled) {
            Some(s) => Some(Arc::new(super::ssl::client_config(
                Some(s),
                &format!("{key}.ssl"),
            )?)),
            None => None,
        };
        Ok(Dialer {
            key,
            default_port,
            timeout,
            proxy: Proxy::parse(proxy_url, key)?,
            tls,
        })
    }

    /// Connects to `host` (`name`, `name:port`, `[v6]:port`), TLS handshake included.
    pub fn connect(&self, host: &str) -> Result<Stream, OutputError> {
        let unavailable = |message: String| OutputError::Unavailable {
            output: self.output(),
            message,
            retry_after: None,
        };
        let (name, port) = split_host(host, self.default_port)
            .map_err(|e| OutputError::Config(format!("{}.hosts: {e}", self.key)))?;
        let tcp = self
            .tcp(&name, port)
            .map_err(|f| unavailable(f.to_string()))?;
        let _ = tcp.set_nodelay(true);
        tcp.set_read_timeout(Some(self.timeout))
            .and_then(|_| tcp.set_write_timeout(Some(self.timeout)))
            .map_err(|e| unavailable(e.to_string()))?;
        match &self.tls {
            None => Ok(Stream::Plain(tcp)),
            Some(cfg) => self
                .handshake(cfg.clone(), &name, tcp)
                .map(|t| Stream::Tls(Box::new(t)))
                .map_err(|f| unavailable(f.to_string())),
        }
    }

    fn output(&self) -> &'static str {
        self.key.strip_prefix("output.").unwrap_or(self.key)
    }

    /// TCP to the server, or to the proxy and through it.
    fn tcp(&self, host: &str, port: u16) -> Result<TcpStream, CheckFailed> {
        let (h, p) = match &self.proxy {
            Some(px) => (px.host.as_str(), px.port),
            None => (host, port),
        };
        let setting = self.setting_of_address();
        let addrs: Vec<SocketAddr> = (h, p)
            .to_socket_addrs()
            .map_err(|e| fail(&setting, format!("cannot resolve {h:?}: {e}")))?
            .collect();
        let mut last = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, self.timeout) {
                Ok(s) => {
                    if let Some(px) = &self.proxy {
                        let _ = s.set_read_timeout(Some(self.timeout));
                        let _ = s.set_write_timeout(Some(self.timeout));
                        return socks5_connect(s, px, host, port).map_err(|e| {
                            fail(
                                format!("{}.proxy_url", self.key),
                                format!("the SOCKS5 proxy {a} could not reach {host}:{port}: {e}"),
                            )
                        });
                    }
                    return Ok(s);
                }
                Err(e) => last = Some((*a, e)),
            }
        }
        Err(match last {
            Some((a, e)) => fail(setting, format!("cannot connect to {a}: {e}")),
            None => fail(setting, format!("{h:?} has no address")),
        })
    }

    fn setting_of_address(&self) -> String {
        if self.proxy.is_some() {
            format!("{}.proxy_url", self.key)
        } else {
            format!("{}.hosts", self.key)
        }
    }

    fn handshake(
        &self,
        cfg: Arc<ClientConfig>,
        host: &str,
        mut tcp: TcpStream,
    ) -> Result<StreamOwned<ClientConnection, TcpStream>, CheckFailed> {
        let server = ServerName::try_from(host.to_string())
            .map_err(|e| fail(format!("{}.hosts", self.key), format!("{host:?}: {e}")))?;
        let mut conn = ClientConnection::new(cfg, server)
            .map_err(|e| fail(format!("{}.ssl", self.key), e.to_string()))?;
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut tcp) {
                return Err(check::tls_failure(self.key, host, &e, true));
            }
        }
        Ok(StreamOwned::new(conn, tcp))
    }

    /// `test output`: the DNS, TCP (and proxy) and TLS steps for one host, printed; the
    /// stream for the output's own steps.
    pub fn check(&self, s: &mut Steps<'_>, host: &str) -> Result<Stream, CheckFailed> {
        let (name, port) = split_host(host, self.default_port)
            .map_err(|e| fail(format!("{}.hosts", self.key), e))?;
        let tcp = match &self.proxy {
            None => {
                let addrs = check::dns(s, self.key, &name, port)?;
                check::tcp(s, self.key, &addrs, self.timeout)?
            }
            Some(px) => s.step(
                &format!("connect through the SOCKS5 proxy {}:{}", px.host, px.port),
                || Ok((self.tcp(&name, port)?, String::new())),
            )?,
        };
        let _ = tcp.set_read_timeout(Some(self.timeout));
        let _ = tcp.set_write_timeout(Some(self.timeout));
        match &self.tls {
            None => Ok(Stream::Plain(tcp)),
            Some(cfg) => s.step("tls handshake", || {
                let t = self.handshake(cfg.clone(), &name, tcp)?;
                let detail = format!(
                    "{:?}, {:?}",
                    t.conn
                        .protocol_version()
                        .unwrap_or(rustls::ProtocolVersion::Unknown(0)),
                    t.conn
                        .negotiated_cipher_suite()
                        .map(|c| c.suite())
                        .unwrap_or(rustls::CipherSuite::Unknown(0))
                );
                Ok((Stream::Tls(Box::new(t)), detail))
            }),
        }
    }

    /// An I/O error on an established stream, explained: a TLS alert after the handshake
    /// (a server that wanted a client certificate says so only then with TLS 1.3) in
    /// terms of the `ssl` settings, anything else as it is.
    pub fn explain(&self, host: &str, e: &io::Error) -> String {
        let is_tls = e
            .get_ref()
            .is_some_and(|x| x.downcast_ref::<rustls::Error>().is_some());
        if is_tls {
            let name = split_host(host, self.default_port)
                .map(|(n, _)| n)
                .unwrap_or_else(|_| host.to_string());
            check::tls_failure(self.key, &name, e, false).to_string()
        } else {
            format!("{host}: {e}")
        }
    }
}

/// `host`, `host:port`, `[v6]:port` or a bare IPv6 address; the port defaults.
pub fn split_host(host: &str, default_port: u16) -> Result<(String, u16), String> {
    let h = host.trim();
    let h = h.split_once("://").map(|(_, r)| r).unwrap_or(h);
    if h.is_empty() {
        return Err("an empty host".into());
    }
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("{host:?}: {p:?} is not a port"))
    };
    if let Some(rest) = h.strip_prefix('[') {
        let (addr, tail) = rest
            .split_once(']')
            .ok_or_else(|| format!("{host:?}: no closing ]"))?;
        return match tail.strip_prefix(':') {
            Some(p) => Ok((addr.to_string(), port(p)?)),
            None => Ok((addr.to_string(), default_port)),
        };
    }
    if h.matches(':').count() > 1 {
        return Ok((h.to_string(), default_port)); // a bare IPv6 address
    }
    match h.rsplit_once(':') {
        Some((a, p)) => Ok((a.to_string(), port(p)?)),
        None => Ok((h.to_string(), default_port)),
    }
}

/// The SOCKS5 CONNECT exchange (RFC 1928, with RFC 1929 user/password when given); the
/// proxy resolves names, as Beats does by default.
fn socks5_connect(mut s: TcpStream, px: &Proxy, host: &str, port: u16) -> io::Result<TcpStream> {
    let method = if px.auth.is_some() { 2u8 } else { 0u8 };
    s.write_all(&[5, 1, method])?;
    let mut r = [0u8; 2];
    s.read_exact(&mut r)?;
    if r[0] != 5 || r[1] != method {
        return Err(io::Error::other(if r[1] == 0xff {
            "it accepts none of our authentication methods (set or remove the user in proxy_url)"
                .to_string()
        } else {
            format!("not a SOCKS5 answer: {r:?}")
        }));
    }
    if let Some((u, p)) = &px.auth {
        let mut m = vec![1u8, u.len().min(255) as u8];
        m.extend_from_slice(&u.as_bytes()[..u.len().min(255)]);
        m.push(p.len().min(255) as u8);
        m.extend_from_slice(&p.as_bytes()[..p.len().min(255)]);
        s.write_all(&m)?;
        s.read_exact(&mut r)?;
        if r[1] != 0 {
            return Err(io::Error::other(
                "it refused the user and password of proxy_url",
            ));
        }
    }
    let mut req = vec![5u8, 1, 0];
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => {
            req.push(1);
            req.extend_from_slice(&a.octets());
        }
        Ok(std::net::IpAddr::V6(a)) => {
            req.push(4);
            req.extend_from_slice(&a.octets());
        }
        Err(_) => {
            let n = &host.as_bytes()[..host.len().min(255)];
            req.push(3);
            req.push(n.len() as u8);
            req.extend_from_slice(n);
        }
    }
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req)?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head)?;
    if head[1] != 0 {
        let why = match head[1] {
            1 => "general failure",
            2 => "not allowed by its rules",
            3 => "network unreachable",
            4 => "host unreachable",
            5 => "connection refused",
            6 => "TTL expired",
            _ => "refused",
        };
        return Err(io::Error::other(format!(
            "{why} (SOCKS5 reply {})",
            head[1]
        )));
    }
    let skip = match head[3] {
        1 => 4,
        4 => 16,
        3 => {
            let mut l = [0u8; 1];
            s.read_exact(&mut l)?;
            l[0] as usize
        }
        t => {
            return Err(io::Error::other(format!(
                "bad address type {t} in its reply"
            )));
        }
    };
    let mut rest = vec![0u8; skip + 2];
    s.read_exact(&mut rest)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_take_the_default_port() {
        assert_eq!(split_host("r1", 6379), Ok(("r1".into(), 6379)));
        assert_eq!(split_host("r1:7000", 6379), Ok(("r1".into(), 7000)));
        assert_eq!(split_host("[::1]:7000", 1), Ok(("::1".into(), 7000)));
        assert_eq!(split_host("::1", 5044), Ok(("::1".into(), 5044)));
        assert_eq!(split_host("redis://r:1", 2), Ok(("r".into(), 1)));
        assert!(split_host("r:x", 1).is_err());
    }

    #[test]
    fn proxy_urls() {
        assert_eq!(Proxy::parse("", "output.redis").unwrap(), None);
        assert_eq!(
            Proxy::parse("socks5://u:p@127.0.0.1:1081", "output.redis").unwrap(),
            Some(Proxy {
                host: "127.0.0.1".into(),
                port: 1081,
                auth: Some(("u".into(), "p".into()))
            })
        );
        let e = Proxy::parse("http://p:3128", "output.logstash").unwrap_err();
        assert!(
            e.to_string().starts_with("output.logstash.proxy_url:"),
            "{e}"
        );
    }
}

/// The connections of an output to its `hosts`, `worker` of them per host: one slot per
/// connection, used in turn per batch with `loadbalance`, else one slot until it fails
/// (then the next: failover). A slot connects when first used and after a failure.
/// An output that sends parts of a batch at once takes several slots with
/// [`Pool::next_slots`]: every host's with `loadbalance`, else the current host's
/// `worker` connections.
pub struct Pool<C> {
    hosts: Vec<String>,
    worker: usize,
    conns: Vec<Option<C>>,
    current: usize,
    loadbalance: bool,
}

impl<C> Pool<C> {
    pub fn new(hosts: &[String], worker: usize, loadbalance: bool) -> Pool<C> {
        let worker = worker.max(1);
        Pool {
            hosts: hosts.to_vec(),
            worker,
            conns: (0..hosts.len() * worker).map(|_| None).collect(),
            current: 0,
            loadbalance,
        }
    }

    /// The slot for the next batch.
    pub fn next_slot(&mut self) -> usize {
        let i = self.current;
        if self.loadbalance {
            self.current = (i + 1) % self.conns.len();
        }
        i
    }

    /// How many connections one batch can use at once: every slot with `loadbalance`,
    /// else the `worker` connections of the current host.
    pub fn width(&self) -> usize {
        if self.loadbalance {
            self.conns.len()
        } else {
            self.worker
        }
    }

    /// The slots for the next batch sent in `parts` (at most [`Pool::width`]) at once:
    /// with `loadbalance` the next ones in turn, else the current host's first ones.
    pub fn next_slots(&mut self, parts: usize) -> Vec<usize> {
        let parts = parts.clamp(1, self.width());
        if self.loadbalance {
            (0..parts).map(|_| self.next_slot()).collect()
        } else {
            (self.current..self.current + parts).collect()
        }
    }

    /// The host of slot `i`.
    pub fn host(&self, i: usize) -> &str {
        &self.hosts[i / self.worker]
    }

    /// Slot `i`'s connection, opened with `open(host)` when it has none.
    pub fn get(
        &mut self,
        i: usize,
        open: impl FnOnce(&str) -> Result<C, OutputError>,
    ) -> Result<&mut C, OutputError> {
        if self.conns[i].is_none() {
            let c = open(&self.hosts[i / self.worker])?;
            self.conns[i] = Some(c);
        }
        Ok(self.conns[i].as_mut().expect("just opened"))
    }

    /// Closes slot `i`'s connection (it broke).
    pub fn close(&mut self, i: usize) {
        self.conns[i] = None;
    }

    /// Closes slot `i`'s connection when `old` says so (its `ttl` is over).
    pub fn close_if(&mut self, i: usize, old: impl FnOnce(&C) -> bool) {
        if self.conns[i].as_ref().is_some_and(old) {
            self.conns[i] = None;
        }
    }

    /// Takes slot `i`'s connection out while it is used; [`Pool::put`] gives it back.
    pub fn take(&mut self, i: usize) -> Option<C> {
        self.conns[i].take()
    }

    pub fn put(&mut self, i: usize, c: C) {
        self.conns[i] = Some(c);
    }

    /// Slot `i` failed: closed, and without `loadbalance` the next batch fails over to
    /// the next host.
    pub fn failed(&mut self, i: usize) {
        self.close(i);
        if !self.loadbalance {
            self.current = (i / self.worker + 1) % self.hosts.len() * self.worker;
        }
    }
}

#[cfg(test)]
mod pool_tests {
    use super::Pool;

    #[test]
    fn loadbalance_takes_turns_failover_sticks_until_failure() {
        let hosts = vec!["a".to_string(), "b".to_string()];
        let mut lb: Pool<()> = Pool::new(&hosts, 2, true);
        let turns: Vec<usize> = (0..5).map(|_| lb.next_slot()).collect();
        assert_eq!(turns, [0, 1, 2, 3, 0]);
        assert_eq!((lb.host(1), lb.host(2)), ("a", "b"));
        let mut fo: Pool<()> = Pool::new(&hosts, 1, false);
        assert_eq!((fo.next_slot(), fo.next_slot()), (0, 0));
        fo.failed(0);
        let i = fo.next_slot();
        assert_eq!(fo.host(i), "b");
        fo.failed(1);
        let i = fo.next_slot();
        assert_eq!(fo.host(i), "a");
    }

    #[test]
    fn a_batch_in_parts_takes_several_connections() {
        let hosts = vec!["a".to_string(), "b".to_string()];
        let mut lb: Pool<()> = Pool::new(&hosts, 2, true);
        assert_eq!(lb.width(), 4);
        assert_eq!(lb.next_slots(3), [0, 1, 2]);
        assert_eq!(lb.next_slots(9), [3, 0, 1, 2]);
        let mut fo: Pool<()> = Pool::new(&hosts, 2, false);
        assert_eq!(fo.width(), 2);
        assert_eq!(fo.next_slots(2), [0, 1]);
        // Both connections of host a fail: the batch after goes to b's, once.
        fo.failed(0);
        fo.failed(1);
        assert_eq!(fo.next_slots(5), [2, 3]);
        assert_eq!(fo.host(3), "b");
    }
}

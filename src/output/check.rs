//! `test output`: connects to the enabled output the way the agent would and reports each
//! step (DNS, TCP, TLS handshake, authentication, topic or index), stopping at the first
//! that fails with an error naming the setting at fault.
//!
//! Steps are printed as they run (like Beats' `test output`), so that a hanging step is
//! visible; the final error is returned for `main` to print.

use super::OutputError;
use super::http_client::{ClientSettings, HttpClient, parse_hosts};
use crate::config::{Config, SslConfig};
use hyper::Uri;
use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

/// A failed step: the setting at fault and what happened.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct CheckFailed {
    pub setting: String,
    pub message: String,
}

pub fn fail(setting: impl Into<String>, message: impl Into<String>) -> CheckFailed {
    CheckFailed {
        setting: setting.into(),
        message: message.into(),
    }
}

/// An output's error as a failed step: its message starts with the setting at fault
/// (`output.redis.ssl.certificate: ...`), else the section is blamed.
pub fn from_output_error(section: &str, e: &OutputError) -> CheckFailed {
    let text = e.to_string();
    match text.split_once(": ") {
        Some((k, m)) if k.starts_with(section) && !k.contains(' ') => fail(k, m),
        _ => fail(section, text),
    }
}

/// Prints a step's outcome as `  <step>... OK (<detail>)`.
pub struct Steps<'a> {
    out: &'a mut dyn Write,
    /// Spaces before each line.
    pub indent: usize,
}

impl Steps<'_> {
    pub fn step<T>(
        &mut self,
        name: &str,
        f: impl FnOnce() -> Result<(T, String), CheckFailed>,
    ) -> Result<T, CheckFailed> {
        let pad = " ".repeat(self.indent);
        let _ = write!(self.out, "{pad}{name}... ");
        let _ = self.out.flush();
        match f() {
            Ok((v, detail)) => {
                if detail.is_empty() {
                    let _ = writeln!(self.out, "OK");
                } else {
                    let _ = writeln!(self.out, "OK ({detail})");
                }
                Ok(v)
            }
            Err(e) => {
                let _ = writeln!(self.out, "ERROR");
                Err(e)
            }
        }
    }
    pub fn line(&mut self, text: &str) {
        let _ = writeln!(self.out, "{}{text}", " ".repeat(self.indent));
    }
}

/// Runs the checks of the enabled output, printing the steps to `out`.
pub fn run(c: &Config, out: &mut dyn Write) -> Result<(), CheckFailed> {
    let mut s = Steps { out, indent: 0 };
    let o = &c.output;
    match o.enabled().first() {
        Some(section) => section.test(&mut s),
        None => Err(fail("output", "no output is enabled")),
    }
}

pub(super) fn build_client(
    s: &mut Steps<'_>,
    settings: ClientSettings<'_>,
) -> Result<HttpClient, CheckFailed> {
    let key = settings.key;
    s.step("settings (URLs, TLS files, headers)", || {
        HttpClient::new(settings)
            .map(|c| (c, String::new()))
            .map_err(|e| match e {
                OutputError::Config(m) => match m.split_once(": ") {
                    Some((k, rest)) if k.starts_with(key) => fail(k, rest),
                    _ => fail(key, m),
                },
                other => fail(key, other.to_string()),
            })
    })
}

/// DNS, TCP and TLS for each host, then `then` (auth and the rest) for each.
pub(super) fn check_http_hosts(
    s: &mut Steps<'_>,
    key: &str,
    hosts: &[String],
    ssl: Option<&SslConfig>,
    mut client: HttpClient,
    mut then: impl FnMut(&mut Steps<'_>, &mut HttpClient, usize) -> Result<(), CheckFailed>,
) -> Result<(), CheckFailed> {
    let parsed =
        parse_hosts(hosts, key).map_err(|e| fail(format!("{key}.hosts"), e.to_string()))?;
    for (i, h) in parsed.iter().enumerate() {
        s.line(&format!("{}:", h.url));
        s.indent += 2;
        let uri: Uri = h.url.parse().expect("parse_hosts checked it");
        let host = uri
            .host()
            .expect("parse_hosts checked it")
            .trim_matches(['[', ']']);
        let port = uri.port_u16().unwrap_or(if h.https { 443 } else { 80 });
        let addrs = dns(s, key, host, port)?;
        let stream = tcp(s, key, &addrs, Duration::from_secs(10))?;
        if h.https {
            tls(s, key, ssl, host, stream)?;
        }
        then(s, &mut client, i)?;
        s.indent -= 2;
    }
    Ok(())
}

pub(super) fn dns(
    s: &mut Steps<'_>,
    key: &str,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, CheckFailed> {
    s.step(&format!("dns lookup of {host}"), || {
        let addrs: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .map_err(|e| {
                fail(
                    format!("{key}.hosts"),
                    format!("cannot resolve {host:?}: {e}"),
                )
            })?
            .collect();
        if addrs.is_empty() {
            return Err(fail(
                format!("{key}.hosts"),
                format!("{host:?} has no address"),
            ));
        }
        let shown: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
        Ok((addrs, shown.join(", ")))
    })
}

pub(super) fn tcp(
    s: &mut Steps<'_>,
    key: &str,
    addrs: &[SocketAddr],
    timeout: Duration,
) -> Result<TcpStream, CheckFailed> {
    s.step("tcp connect", || {
        let mut last = None;
        for a in addrs {
            match TcpStream::connect_timeout(a, timeout) {
                Ok(st) => return Ok((st, a.to_string())),
                Err(e) => last = Some((a, e)),
            }
        }
        let (a, e) = last.expect("at least one address");
        let why = match e.kind() {
            std::io::ErrorKind::ConnectionRefused => {
                "connection refused, nothing listens on that port".to_string()
            }
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => format!(
                "no answer within {} (a firewall, or the wrong host)",
                humantime::format_duration(timeout)
            ),
            _ => e.to_string(),
        };
        Err(fail(
            format!("{key}.hosts"),
            format!("cannot connect to {a}: {why}"),
        ))
    })
}

pub(super) fn tls(
    s: &mut Steps<'_>,
    key: &str,
    ssl: Option<&SslConfig>,
    host: &str,
    mut stream: TcpStream,
) -> Result<(), CheckFailed> {
    let ssl_key = format!("{key}.ssl");
    s.step("tls handshake", || {
        let cfg =
            super::ssl::client_config(ssl, &ssl_key).map_err(|e| fail(&ssl_key, e.to_string()))?;
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| fail(format!("{key}.hosts"), format!("{host:?}: {e}")))?;
        let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name)
            .map_err(|e| fail(&ssl_key, e.to_string()))?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut stream) {
                return Err(tls_failure(key, host, &e, true));
            }
        }
        // A server that wants a client certificate may only say so after the handshake.
        let _ = conn.complete_io(&mut stream);
        let version = conn
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default();
        let suite = conn
            .negotiated_cipher_suite()
            .map(|c| format!("{:?}", c.suite()))
            .unwrap_or_default();
        Ok(((), format!("{version}, {suite}")))
    })
}

/// A TLS failure explained in terms of the settings. `handshaking`: the error came
/// before the handshake finished (a connection closed then is the server's refusal).
pub(super) fn tls_failure(
    key: &str,
    host: &str,
    e: &std::io::Error,
    handshaking: bool,
) -> CheckFailed {
    use rustls::{AlertDescription, CertificateError, Error as T};
    let inner = e.get_ref().and_then(|x| x.downcast_ref::<T>());
    let wants_client_cert = || {
        fail(
            format!("{key}.ssl.certificate"),
            format!(
                "{host} refused the TLS handshake ({e}); it may want a client certificate: \
                 set {key}.ssl.certificate and {key}.ssl.key"
            ),
        )
    };
    match inner {
        Some(T::InvalidCertificate(CertificateError::UnknownIssuer)) => fail(
            format!("{key}.ssl.certificate_authorities"),
            format!(
                "the certificate of {host} is not signed by a trusted CA (unknown issuer); \
                 add its CA to {key}.ssl.certificate_authorities"
            ),
        ),
        Some(T::InvalidCertificate(CertificateError::NotValidForNameContext {
            presented, ..
        })) => fail(
            format!("{key}.ssl.verification_mode"),
            format!(
                "the certificate of {host} is valid for {}, not {host}: set \
                 {key}.ssl.verification_mode or use the right certificate",
                if presented.is_empty() {
                    "no name".to_string()
                } else {
                    presented
                        .iter()
                        .map(|p| name_of(p))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        ),
        Some(T::InvalidCertificate(CertificateError::NotValidForName)) => fail(
            format!("{key}.ssl.verification_mode"),
            format!(
                "the certificate of {host} is not valid for {host}: set \
                 {key}.ssl.verification_mode or use the right certificate"
            ),
        ),
        Some(T::InvalidCertificate(CertificateError::Expired))
        | Some(T::InvalidCertificate(CertificateError::ExpiredContext { .. })) => fail(
            format!("{key}.hosts"),
            format!("the certificate of {host} has expired"),
        ),
        Some(T::AlertReceived(AlertDescription::CertificateRequired))
        | Some(T::AlertReceived(AlertDescription::HandshakeFailure))
        | Some(T::AlertReceived(AlertDescription::BadCertificate)) => wants_client_cert(),
        Some(T::InvalidMessage(_)) => fail(
            format!("{key}.hosts"),
            format!("{host} does not speak TLS on that port ({e}); use http:// or the TLS port"),
        ),
        None if handshaking
            && matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
            ) =>
        {
            wants_client_cert()
        }
        _ => fail(
            format!("{key}.ssl"),
            format!("TLS handshake with {host} failed: {e}"),
        ),
    }
}

/// `DnsName("a.example")` or `IpAddress(192.0.2.1)`, as webpki shows a certificate's
/// names, as the name alone.
fn name_of(presented: &str) -> &str {
    let inner = presented
        .split_once('(')
        .and_then(|(_, r)| r.strip_suffix(')'))
        .unwrap_or(presented);
    inner.trim_matches('"')
}

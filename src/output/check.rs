//! `test output`: connects to the enabled output the way the agent would and reports each
//! step (DNS, TCP, TLS handshake, authentication, topic or index), stopping at the first
//! that fails with an error naming the setting at fault.
//!
//! Steps are printed as they run (like Beats' `test output`), so that a hanging step is
//! visible; the final error is returned for `main` to print.

use super::OutputError;
use super::http_client::{Auth, ClientSettings, HttpClient, parse_hosts};
use crate::config::{Config, SslConfig};
use bytes::Bytes;
use hyper::{Method, Uri};
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

fn fail(setting: impl Into<String>, message: impl Into<String>) -> CheckFailed {
    CheckFailed {
        setting: setting.into(),
        message: message.into(),
    }
}

/// Prints a step's outcome as `  <step>... OK (<detail>)`.
struct Steps<'a> {
    out: &'a mut dyn Write,
    indent: usize,
}

impl Steps<'_> {
    fn step<T>(
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
    fn line(&mut self, text: &str) {
        let _ = writeln!(self.out, "{}{text}", " ".repeat(self.indent));
    }
}

/// Runs the checks of the enabled output, printing the steps to `out`.
pub fn run(c: &Config, out: &mut dyn Write) -> Result<(), CheckFailed> {
    let mut s = Steps { out, indent: 0 };
    let o = &c.output;
    if let Some(h) = o.http.as_ref().filter(|x| x.enabled) {
        s.line("http output");
        s.indent = 2;
        let client = build_client(
            &mut s,
            ClientSettings {
                key: "output.http",
                output: "http",
                hosts: &h.hosts,
                ssl: h.ssl.as_ref(),
                timeout: h.timeout.get(),
                auth: Auth::Basic {
                    username: h.username.clone(),
                    password: h.password.clone(),
                },
                headers: &h.headers,
            },
        )?;
        return check_http_hosts(
            &mut s,
            "output.http",
            &h.hosts,
            h.ssl.as_ref(),
            client,
            |s, client, i| {
                let body = if h.format == "json_array" { "[]" } else { "" };
                let path = if h.path.starts_with('/') {
                    h.path.clone()
                } else {
                    format!("/{}", h.path)
                };
                s.step(&format!("POST an empty batch to {path}"), || {
                let r = client
                    .send(Method::POST, i, &path, Some("application/json"), false, Bytes::from(body))
                    .map_err(|e| fail("output.http.hosts", e.to_string()))?;
                match r.status.as_u16() {
                    200..=299 => Ok(((), r.status.to_string())),
                    401 | 403 => Err(fail(
                        "output.http.password",
                        format!(
                            "{} refused the credentials of user {:?} ({}); check output.http.username and output.http.password",
                            client.host_url(i), h.username, r.status
                        ),
                    )),
                    _ => Ok(((), format!("answered {} to an empty batch", r.status))),
                }
            })
            },
        );
    }
    if let Some(e) = o.elasticsearch.as_ref().filter(|x| x.enabled) {
        s.line("elasticsearch output");
        s.indent = 2;
        let auth = if e.api_key.is_empty() {
            Auth::Basic {
                username: e.username.clone(),
                password: e.password.clone(),
            }
        } else {
            Auth::ApiKey(e.api_key.clone())
        };
        let client = build_client(
            &mut s,
            ClientSettings {
                key: "output.elasticsearch",
                output: "elasticsearch",
                hosts: &e.hosts,
                ssl: e.ssl.as_ref(),
                timeout: e.timeout.get(),
                auth,
                headers: &Default::default(),
            },
        )?;
        let index = super::format::Template::parse(&e.index)
            .map_err(|m| fail("output.elasticsearch.index", m))?;
        let now = serde_json::json!({"@timestamp": crate::event::format_timestamp(std::time::SystemTime::now())});
        return check_http_hosts(
            &mut s,
            "output.elasticsearch",
            &e.hosts,
            e.ssl.as_ref(),
            client,
            |s, client, i| {
                let auth_setting = if e.api_key.is_empty() {
                    "output.elasticsearch.password"
                } else {
                    "output.elasticsearch.api_key"
                };
                s.step("authentication (GET /)", || {
                    let r = client
                        .send(Method::GET, i, "/", None, false, Bytes::new())
                        .map_err(|x| fail("output.elasticsearch.hosts", x.to_string()))?;
                    match r.status.as_u16() {
                        200..=299 => {
                            let v: serde_json::Value =
                                serde_json::from_slice(&r.body).unwrap_or_default();
                            let version = v["version"]["number"].as_str().unwrap_or("unknown");
                            Ok(((), format!("Elasticsearch {version}")))
                        }
                        401 | 403 => Err(fail(
                            auth_setting,
                            if e.api_key.is_empty() {
                                format!(
                                    "{} refused the credentials of user {:?} ({}); check output.elasticsearch.username and output.elasticsearch.password",
                                    client.host_url(i), e.username, r.status
                                )
                            } else {
                                format!("{} refused the API key ({})", client.host_url(i), r.status)
                            },
                        )),
                        _ => Err(fail(
                            "output.elasticsearch.hosts",
                            format!(
                                "{} answered {} to GET /: is it Elasticsearch? {}",
                                client.host_url(i),
                                r.status,
                                r.excerpt()
                            ),
                        )),
                    }
                })?;
                let name = index
                    .render(&now)
                    .map_err(|m| fail("output.elasticsearch.index", m))?;
                s.step(&format!("index {name}"), || {
                    let r = client
                        .send(
                            Method::HEAD,
                            i,
                            &format!("/{name}"),
                            None,
                            false,
                            Bytes::new(),
                        )
                        .map_err(|x| fail("output.elasticsearch.hosts", x.to_string()))?;
                    Ok((
                        (),
                        if r.status.is_success() {
                            "exists".into()
                        } else {
                            "does not exist yet; created by the first write".into()
                        },
                    ))
                })
            },
        );
    }
    #[cfg(feature = "kafka")]
    if let Some(k) = o.kafka.as_ref().filter(|x| x.enabled) {
        return check_kafka(&mut s, k);
    }
    if let Some(f) = o.file.as_ref().filter(|x| x.enabled) {
        s.line("file output");
        s.indent = 2;
        s.step(&format!("write to {}", f.path), || {
            super::FileOutput::new(f)
                .map(|_| ((), String::new()))
                .map_err(|e| fail("output.file.path", e.to_string()))
        })?;
        return Ok(());
    }
    if o.console.as_ref().is_some_and(|x| x.enabled) {
        s.line("console output... OK");
        return Ok(());
    }
    Err(fail("output", "no output is enabled"))
}

fn build_client(
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
fn check_http_hosts(
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

fn dns(
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

fn tcp(
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

fn tls(
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
                return Err(tls_failure(key, host, &e));
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

/// A TLS failure explained in terms of the settings.
fn tls_failure(key: &str, host: &str, e: &std::io::Error) -> CheckFailed {
    use rustls::{AlertDescription, CertificateError, Error as T};
    let inner = e.get_ref().and_then(|x| x.downcast_ref::<T>());
    match inner {
        Some(T::InvalidCertificate(CertificateError::UnknownIssuer)) => fail(
            format!("{key}.ssl.certificate_authorities"),
            format!(
                "the certificate of {host} is not signed by a trusted CA (unknown issuer); \
                 add its CA to {key}.ssl.certificate_authorities"
            ),
        ),
        Some(T::InvalidCertificate(CertificateError::NotValidForName))
        | Some(T::InvalidCertificate(CertificateError::NotValidForNameContext { .. })) => fail(
            format!("{key}.hosts"),
            format!(
                "the certificate of {host} is not valid for that name; connect by a name it \
                 lists, or set {key}.ssl.verification_mode: certificate"
            ),
        ),
        Some(T::InvalidCertificate(CertificateError::Expired))
        | Some(T::InvalidCertificate(CertificateError::ExpiredContext { .. })) => fail(
            format!("{key}.hosts"),
            format!("the certificate of {host} has expired"),
        ),
        Some(T::AlertReceived(AlertDescription::CertificateRequired))
        | Some(T::AlertReceived(AlertDescription::HandshakeFailure))
        | Some(T::AlertReceived(AlertDescription::BadCertificate)) => fail(
            format!("{key}.ssl.certificate"),
            format!(
                "{host} refused the TLS handshake ({e}); it may want a client certificate: \
                 set {key}.ssl.certificate and {key}.ssl.key"
            ),
        ),
        Some(T::InvalidMessage(_)) => fail(
            format!("{key}.hosts"),
            format!("{host} does not speak TLS on that port ({e}); use http:// or the TLS port"),
        ),
        _ => fail(
            format!("{key}.ssl"),
            format!("TLS handshake with {host} failed: {e}"),
        ),
    }
}

#[cfg(feature = "kafka")]
fn check_kafka(s: &mut Steps<'_>, k: &crate::config::KafkaOutputConfig) -> Result<(), CheckFailed> {
    use rdkafka::ClientContext;
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
    use std::sync::Mutex;

    /// Keeps librdkafka's last error, which explains a failed metadata request.
    struct Last(Mutex<Option<String>>);
    impl ClientContext for Last {
        fn log(&self, _: rdkafka::config::RDKafkaLogLevel, _: &str, msg: &str) {
            self.0.lock().expect("lock").replace(msg.to_string());
        }
        fn error(&self, e: rdkafka::error::KafkaError, reason: &str) {
            self.0
                .lock()
                .expect("lock")
                .replace(format!("{e}: {reason}"));
        }
    }
    impl ConsumerContext for Last {}

    s.line("kafka output");
    s.indent = 2;
    let tls_on = k.ssl.as_ref().is_some_and(|x| x.enabled);
    for h in &k.hosts {
        s.line(&format!("{h}:"));
        s.indent += 2;
        let (host, port) = h
            .rsplit_once(':')
            .and_then(|(a, p)| Some((a.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .ok_or_else(|| fail("output.kafka.hosts", format!("{h:?} is not host:port")))?;
        let addrs = dns(s, "output.kafka", host, port)?;
        let stream = tcp(s, "output.kafka", &addrs, Duration::from_secs(10))?;
        if tls_on {
            tls(s, "output.kafka", k.ssl.as_ref(), host, stream)?;
        }
        s.indent -= 2;
    }
    let settings =
        super::kafka::librdkafka_settings(k).map_err(|e| fail("output.kafka", e.to_string()))?;
    let mut cfg = ClientConfig::new();
    for (key, v) in settings {
        // Producer-only settings are not accepted by a consumer handle.
        if !matches!(
            key.as_str(),
            "acks"
                | "compression.codec"
                | "message.timeout.ms"
                | "linger.ms"
                | "queue.buffering.max.messages"
                | "partitioner"
                | "sticky.partitioning.linger.ms"
        ) {
            cfg.set(key, v);
        }
    }
    let ctx = Last(Mutex::new(None));
    let client: BaseConsumer<Last> = cfg
        .create_with_context(ctx)
        .map_err(|e| fail("output.kafka", e.to_string()))?;
    let sasl = !k.username.is_empty() || k.sasl.as_ref().is_some_and(|x| !x.username.is_empty());
    let topic =
        super::format::Template::parse(&k.topic).map_err(|m| fail("output.kafka.topic", m))?;
    let md = s.step(
        if sasl {
            "authentication and metadata"
        } else {
            "metadata"
        },
        || match client.fetch_metadata(None, Duration::from_secs(10)) {
            Ok(md) => {
                let brokers = md.brokers().len();
                Ok((md, format!("{brokers} broker(s)")))
            }
            Err(e) => {
                let last = client
                    .context()
                    .0
                    .lock()
                    .expect("lock")
                    .clone()
                    .unwrap_or_default();
                let setting = if last.to_ascii_lowercase().contains("sasl")
                    || last.to_ascii_lowercase().contains("authentication")
                {
                    "output.kafka.sasl.password"
                } else {
                    "output.kafka.hosts"
                };
                Err(fail(
                    setting,
                    format!("the brokers did not answer a metadata request: {e}; {last}"),
                ))
            }
        },
    )?;
    match topic.as_static() {
        Some(t) => {
            s.step(&format!("topic {t}"), || {
                match md.topics().iter().find(|x| x.name() == t) {
                    Some(x) if x.error().is_none() => Ok(((), format!("{} partition(s)", x.partitions().len()))),
                    _ => Ok(((), "does not exist yet; the broker creates it on first write if auto-creation is on".into())),
                }
            })?;
        }
        None => s.line(&format!(
            "topic {}: depends on each event, not checked",
            k.topic
        )),
    }
    Ok(())
}

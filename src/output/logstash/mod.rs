//! `output.logstash`: the Beats protocol (lumberjack v2) to Logstash's `beats` input, or
//! any server of that protocol, as Beats sends it: each event's JSON with
//! `@metadata.beat` (= `index`), `.type` and `.version`, in windows of events, zlib
//! compressed at `compression_level`, over TLS when `ssl` is set.
//!
//! A batch from the pipeline is sent as windows of at most `window` events (that starts
//! at 10 and doubles up to `bulk_max_size` with `slow_start`, halving after a failure),
//! with up to `pipelining` windows in flight. The server acknowledges a window with the
//! sequence number of its last event, and may send partial ACKs on the way (sequence
//! numbers restart at 1 in every window): every event up to an ACK's number is
//! acknowledged to the pipeline; when the connection fails, times out (`timeout` between
//! two ACKs) or is closed by the server, exactly the events not acknowledged are sent
//! again, so at most the windows in flight are sent twice.

mod frame;

pub use frame::ack as parse_ack;

use super::check::{CheckFailed, Steps, fail};
use super::network::{Batching, Defaults, NetworkSettings};
use super::stream::{Dialer, Pool, Stream};
use super::{EventStatus, Outcome, Output, OutputError};
use crate::config::{ConfigError, Duration};
use crate::event::Record;
use crate::monitor::{self, METRICS};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::time::Instant;

/// `output.logstash`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct LogstashOutputConfig {
    pub enabled: bool,
    #[serde(flatten)]
    pub network: NetworkSettings<Logstash>,
    pub loadbalance: bool,
    /// Connections per host.
    pub worker: usize,
    /// Windows in flight before waiting for an ACK (0: one at a time).
    pub pipelining: usize,
    /// zlib level of the windows, 0 (none) to 9.
    pub compression_level: u32,
    pub slow_start: bool,
    /// Reconnect after a connection has been open this long (0: never).
    pub ttl: Duration,
    /// `@metadata.beat` of every event (Logstash's `%{[@metadata][beat]}`).
    pub index: String,
    pub proxy_url: String,
    /// Escape `<`, `>` and `&` in strings (`\u003c`...), as Go's HTML-safe encoder.
    pub escape_html: bool,
}

impl Default for LogstashOutputConfig {
    fn default() -> Self {
        LogstashOutputConfig {
            enabled: true,
            network: NetworkSettings::default(),
            loadbalance: false,
            worker: 1,
            pipelining: 2,
            compression_level: 3,
            slow_start: false,
            ttl: Duration::from_secs(0),
            index: "connbeat".into(),
            proxy_url: String::new(),
            escape_html: false,
        }
    }
}

impl LogstashOutputConfig {
    fn dialer(&self) -> Result<Dialer, OutputError> {
        Dialer::new(
            "output.logstash",
            5044,
            self.network.timeout.get(),
            self.network.ssl.as_ref(),
            &self.proxy_url,
        )
    }
}

/// The registry's handle on the Logstash output.
#[derive(Debug)]
pub struct Logstash;

impl Defaults for Logstash {
    const HOSTS: &'static [&'static str] = &["localhost:5044"];
    const BULK_MAX_SIZE: usize = 2048;
}

impl super::Kind for Logstash {
    const NAME: &'static str = "logstash";
    type Config = LogstashOutputConfig;
    fn enabled(c: &LogstashOutputConfig) -> bool {
        c.enabled
    }
    fn validate(c: &LogstashOutputConfig) -> Result<(), ConfigError> {
        c.network.validate("logstash")?;
        if c.compression_level > 9 {
            return Err(ConfigError::invalid(
                "output.logstash.compression_level",
                format!("{} is not between 0 (off) and 9", c.compression_level),
            ));
        }
        if c.worker == 0 {
            return Err(ConfigError::invalid(
                "output.logstash.worker",
                "must be at least 1",
            ));
        }
        if c.index.is_empty() {
            return Err(ConfigError::invalid(
                "output.logstash.index",
                "must not be zero or empty",
            ));
        }
        c.dialer()
            .map(|_| ())
            .map_err(|e| super::redis::config_error(&e))
    }
    fn batching(c: &LogstashOutputConfig) -> Option<Batching> {
        Some(c.network.batching())
    }
    fn build(c: &LogstashOutputConfig) -> Result<Box<dyn Output>, OutputError> {
        Ok(Box::new(LogstashOutput::new(c)?))
    }
    fn test(c: &LogstashOutputConfig, s: &mut Steps<'_>) -> Result<(), CheckFailed> {
        check(c, s)
    }
    fn populated() -> LogstashOutputConfig {
        let mut c = LogstashOutputConfig::default();
        c.network.ssl = Some(Default::default());
        c
    }
}

struct Conn {
    stream: Stream,
    opened: Instant,
}

/// A window in flight: events `start..start + len` of the batch, `acked` of them
/// acknowledged so far.
struct Window {
    start: usize,
    len: usize,
    acked: usize,
}

pub struct LogstashOutput {
    dialer: Dialer,
    pool: Pool<Conn>,
    pipelining: usize,
    level: u32,
    /// Events per window now.
    window: usize,
    bulk_max_size: usize,
    ttl: Option<std::time::Duration>,
    /// `{"@metadata":{...},` put before each event's own members.
    metadata: String,
    escape_html: bool,
    /// Each event of the batch, encoded.
    payloads: Vec<Vec<u8>>,
    frames: Vec<u8>,
    wire: Vec<u8>,
}

impl LogstashOutput {
    pub fn new(c: &LogstashOutputConfig) -> Result<LogstashOutput, OutputError> {
        let bulk = c.network.bulk_max_size.max(1);
        let meta = serde_json::json!({
            "beat": c.index,
            "type": "_doc",
            "version": env!("CARGO_PKG_VERSION"),
        });
        Ok(LogstashOutput {
            dialer: c.dialer()?,
            pool: Pool::new(&c.network.hosts, c.worker, c.loadbalance),
            pipelining: c.pipelining.max(1),
            level: c.compression_level,
            window: if c.slow_start { bulk.min(10) } else { bulk },
            bulk_max_size: bulk,
            ttl: (!c.ttl.get().is_zero()).then(|| c.ttl.get()),
            metadata: format!("{{\"@metadata\":{meta}"),
            escape_html: c.escape_html,
            payloads: Vec::new(),
            frames: Vec::new(),
            wire: Vec::new(),
        })
    }

    /// The event as sent: `@metadata` first, then its own members.
    fn encode(&self, e: &Record, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(self.metadata.as_bytes());
        let body = e.as_bytes();
        let inner = body.strip_prefix(b"{").unwrap_or(body);
        if !inner.trim_ascii_start().starts_with(b"}") {
            out.push(b',');
        }
        if self.escape_html {
            // In JSON text these bytes can only be inside strings.
            for &b in inner {
                match b {
                    b'<' => out.extend_from_slice(b"\\u003c"),
                    b'>' => out.extend_from_slice(b"\\u003e"),
                    b'&' => out.extend_from_slice(b"\\u0026"),
                    _ => out.push(b),
                }
            }
        } else {
            out.extend_from_slice(inner);
        }
    }

    /// Writes the window of events `start..start + len`.
    fn send_window(
        &mut self,
        stream: &mut Stream,
        start: usize,
        len: usize,
    ) -> std::io::Result<()> {
        self.wire.clear();
        frame::window(&mut self.wire, len as u32);
        self.frames.clear();
        for (k, p) in self.payloads[start..start + len].iter().enumerate() {
            frame::json(&mut self.frames, k as u32 + 1, p);
        }
        if self.level > 0 {
            frame::compressed(&mut self.wire, &self.frames, self.level);
        } else {
            self.wire.extend_from_slice(&self.frames);
        }
        stream.write_all(&self.wire)?;
        stream.flush()?;
        monitor::add(&METRICS.output_write_bytes, self.wire.len() as u64);
        Ok(())
    }

    /// Sends the batch on slot `i`, marking what the server acknowledges. `Err` only
    /// when nothing at all was acknowledged.
    fn exchange(&mut self, i: usize, statuses: &mut [EventStatus]) -> Result<(), OutputError> {
        let host = self.pool.host(i).to_string();
        if let Some(ttl) = self.ttl {
            self.pool.close_if(i, |c| c.opened.elapsed() >= ttl);
        }
        let dialer = &self.dialer;
        self.pool.get(i, |h| {
            dialer.connect(h).map(|stream| Conn {
                stream,
                opened: Instant::now(),
            })
        })?;
        let mut conn = self.pool.take(i).expect("just opened");
        match self.windows(&mut conn.stream, &host, statuses) {
            Ok(()) => {
                self.pool.put(i, conn);
                Ok(())
            }
            Err(why) => {
                self.pool.failed(i);
                self.window = (self.window / 2).max(1);
                if acked_count(statuses) > 0 {
                    tracing::warn!(target: "logstash", "{why}; the events not acknowledged are sent again");
                    Ok(())
                } else {
                    Err(OutputError::Unavailable {
                        output: "logstash",
                        message: why,
                        retry_after: None,
                    })
                }
            }
        }
    }

    /// The batch as windows, `pipelining` of them in flight, until every event is
    /// acknowledged or the connection fails (the reason).
    fn windows(
        &mut self,
        stream: &mut Stream,
        host: &str,
        statuses: &mut [EventStatus],
    ) -> Result<(), String> {
        let n = statuses.len();
        let mut inflight: VecDeque<Window> = VecDeque::new();
        let mut next = 0usize;
        loop {
            while inflight.len() < self.pipelining && next < n {
                let len = self.window.min(n - next);
                self.send_window(stream, next, len)
                    .map_err(|e| format!("sending a window: {}", self.dialer.explain(host, &e)))?;
                inflight.push_back(Window {
                    start: next,
                    len,
                    acked: 0,
                });
                next += len;
            }
            let Some(w) = inflight.front_mut() else {
                return Ok(());
            };
            let mut a = [0u8; frame::ACK_LEN];
            if let Err(e) = stream.read_exact(&mut a) {
                use std::io::ErrorKind::{TimedOut, UnexpectedEof, WouldBlock};
                return Err(if matches!(e.kind(), WouldBlock | TimedOut) {
                    format!(
                        "{host} acknowledged nothing within output.logstash.timeout ({})",
                        humantime::format_duration(self.dialer.timeout)
                    )
                } else if e.kind() == UnexpectedEof {
                    format!(
                        "{host} closed the connection before acknowledging {} events",
                        n - acked_count(statuses)
                    )
                } else {
                    self.dialer.explain(host, &e)
                });
            }
            let seq = frame::ack(&a).map_err(|e| format!("{host}: {e}"))? as usize;
            if seq > w.len {
                return Err(format!(
                    "{host} acknowledged event {seq} of a window of {}",
                    w.len
                ));
            }
            // A smaller or repeated number is a keep-alive (or a late partial ACK).
            if seq > w.acked {
                for s in &mut statuses[w.start + w.acked..w.start + seq] {
                    *s = EventStatus::Acked;
                }
                w.acked = seq;
            }
            if w.acked == w.len {
                inflight.pop_front();
                self.window = (self.window * 2).min(self.bulk_max_size);
            }
        }
    }
}

fn acked_count(s: &[EventStatus]) -> usize {
    s.iter().filter(|x| **x == EventStatus::Acked).count()
}

impl Output for LogstashOutput {
    fn name(&self) -> &'static str {
        "logstash"
    }

    fn publish(&mut self, batch: &[Record]) -> Result<Outcome, OutputError> {
        let mut payloads = std::mem::take(&mut self.payloads);
        payloads.resize_with(batch.len(), Vec::new);
        for (e, p) in batch.iter().zip(payloads.iter_mut()) {
            self.encode(e, p);
        }
        self.payloads = payloads;
        let i = self.pool.next_slot();
        let mut statuses = vec![EventStatus::Retry; batch.len()];
        self.exchange(i, &mut statuses)?;
        if acked_count(&statuses) == batch.len() {
            Ok(Outcome::Acked)
        } else {
            Ok(Outcome::PerEvent(statuses))
        }
    }
}

/// `test output`: per host, DNS, TCP (or the proxy), TLS, then a moment of listening:
/// with TLS 1.3 a server that wants a client certificate says so only after the
/// handshake.
fn check(c: &LogstashOutputConfig, s: &mut Steps<'_>) -> Result<(), CheckFailed> {
    s.line("logstash output");
    s.indent = 2;
    let dialer = c
        .dialer()
        .map_err(|e| super::check::from_output_error("output.logstash", &e))?;
    for h in &c.network.hosts {
        s.line(&format!("{h}:"));
        s.indent += 2;
        let mut stream = dialer.check(s, h)?;
        if matches!(stream, Stream::Tls(_)) {
            s.step("server accepts the TLS session", || {
                let _ = stream.set_timeout(Some(std::time::Duration::from_millis(500)));
                let mut b = [0u8; 1];
                match stream.read(&mut b) {
                    Ok(0) => Err(fail(
                        "output.logstash.ssl.certificate",
                        format!("{h} closed the connection right after the TLS handshake; it may want a client certificate: set output.logstash.ssl.certificate and output.logstash.ssl.key"),
                    )),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        Ok(((), String::new()))
                    }
                    Err(e) => {
                        let text = dialer.explain(h, &e);
                        let (k, m) = text.split_once(": ").unwrap_or(("output.logstash.ssl", &text));
                        Err(fail(k, m))
                    }
                    Ok(_) => Ok(((), String::new())),
                }
            })?;
        }
        s.indent -= 2;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(c: LogstashOutputConfig) -> LogstashOutput {
        LogstashOutput::new(&c).unwrap()
    }

    #[test]
    fn events_carry_metadata_first_and_html_escaping_is_optional() {
        let o = out(LogstashOutputConfig::default());
        let mut b = Vec::new();
        o.encode(&Record::from_json(r#"{"a":"<x&y>"}"#), &mut b);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["@metadata"]["beat"], "connbeat");
        assert_eq!(v["@metadata"]["type"], "_doc");
        assert_eq!(v["a"], "<x&y>");
        assert!(String::from_utf8_lossy(&b).starts_with(r#"{"@metadata":{"beat":"connbeat""#));
        o.encode(&Record::from_json("{}"), &mut b);
        assert!(serde_json::from_slice::<serde_json::Value>(&b).is_ok());
        let o = out(LogstashOutputConfig {
            escape_html: true,
            index: "idx".into(),
            ..Default::default()
        });
        o.encode(&Record::from_json(r#"{"a":"<x&y>"}"#), &mut b);
        let text = String::from_utf8_lossy(&b);
        assert!(text.contains(r#""a":"\u003cx\u0026y\u003e""#), "{text}");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["a"], "<x&y>");
        assert_eq!(v["@metadata"]["beat"], "idx");
    }
}

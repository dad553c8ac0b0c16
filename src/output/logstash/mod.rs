//! `output.logstash`: the Beats protocol (lumberjack v2) to Logstash's `beats` input, or
//! any server of that protocol, as Beats sends it: each event's JSON with
//! `@metadata.beat` (= `index`), `.type` and `.version`, in windows of events, zlib
//! compressed at `compression_level`, over TLS when `ssl` is set.
//!
//! A batch from the pipeline is sent as windows of at most `window` events (that starts
//! at 10 and doubles up to `bulk_max_size` with `slow_start`, halving after a failure),
//! with up to `pipelining` windows in flight. A window's events go in compressed frames
//! of about 128 KiB each, written as each is ready, so that the server inflates one
//! while the next is compressed. With `worker` above 1 (or `loadbalance` over several
//! hosts) the batch is cut into contiguous parts sent at once, each on its own connection
//! from its own thread, as Beats' workers each send a batch. The server acknowledges a
//! window with the sequence number of its last event, and may send partial ACKs on the
//! way (sequence numbers restart at 1 in every window): every event up to an ACK's
//! number is acknowledged to the pipeline; when a connection fails, times out (`timeout`
//! between two ACKs) or is closed by the server, exactly the events of its part not
//! acknowledged are sent again, so at most the windows in flight are sent twice.

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

/// A window in flight: events `start..start + len` of the part, `acked` of them
/// acknowledged so far.
struct Window {
    start: usize,
    len: usize,
    acked: usize,
}

/// Uncompressed bytes of events put in one compressed frame: a window is sent as frames
/// of about this size, each written as soon as it is compressed, so that the server
/// inflates one while the next is being compressed.
const FRAME_BYTES: usize = 128 * 1024;

/// What every connection's exchange reads.
struct Settings {
    dialer: Dialer,
    pipelining: usize,
    level: u32,
    bulk_max_size: usize,
    /// `{"@metadata":{...}` put before each event's own members.
    metadata: String,
    escape_html: bool,
}

/// One connection's own state: its window size (slow start and halving after a failure
/// are per connection, as in Beats) and the buffers and compressor it reuses.
struct Lane {
    window: usize,
    frames: Vec<u8>,
    wire: Vec<u8>,
    z: Option<frame::Compressor>,
}

pub struct LogstashOutput {
    s: Settings,
    pool: Pool<Conn>,
    ttl: Option<std::time::Duration>,
    /// One per slot of the pool.
    lanes: Vec<Lane>,
}

impl LogstashOutput {
    pub fn new(c: &LogstashOutputConfig) -> Result<LogstashOutput, OutputError> {
        let bulk = c.network.bulk_max_size.max(1);
        let meta = serde_json::json!({
            "beat": c.index,
            "type": "_doc",
            "version": env!("CARGO_PKG_VERSION"),
        });
        let pool = Pool::new(&c.network.hosts, c.worker, c.loadbalance);
        let slots = c.network.hosts.len() * c.worker.max(1);
        Ok(LogstashOutput {
            s: Settings {
                dialer: c.dialer()?,
                pipelining: c.pipelining.max(1),
                level: c.compression_level,
                bulk_max_size: bulk,
                metadata: format!("{{\"@metadata\":{meta}"),
                escape_html: c.escape_html,
            },
            pool,
            ttl: (!c.ttl.get().is_zero()).then(|| c.ttl.get()),
            lanes: (0..slots)
                .map(|_| Lane {
                    window: if c.slow_start { bulk.min(10) } else { bulk },
                    frames: Vec::new(),
                    wire: Vec::new(),
                    z: None,
                })
                .collect(),
        })
    }
}

impl Settings {
    /// Appends the event as sent: `@metadata` first, then its own members.
    fn encode(&self, e: &Record, out: &mut Vec<u8>) {
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

    /// Writes `events` as one window: the window frame, then the events' frames in
    /// compressed frames of about [`FRAME_BYTES`], each written when it is ready.
    fn send_window(
        &self,
        lane: &mut Lane,
        stream: &mut Stream,
        events: &[Record],
    ) -> std::io::Result<()> {
        lane.wire.clear();
        lane.frames.clear();
        frame::window(&mut lane.wire, events.len() as u32);
        let mut written = 0u64;
        for (k, e) in events.iter().enumerate() {
            frame::json(&mut lane.frames, k as u32 + 1, |o| self.encode(e, o));
            if lane.frames.len() < FRAME_BYTES && k + 1 < events.len() {
                continue;
            }
            if self.level > 0 {
                let z = lane
                    .z
                    .get_or_insert_with(|| frame::Compressor::new(self.level));
                z.frame(&mut lane.wire, &lane.frames);
            } else {
                lane.wire.extend_from_slice(&lane.frames);
            }
            stream.write_all(&lane.wire)?;
            written += lane.wire.len() as u64;
            lane.wire.clear();
            lane.frames.clear();
        }
        stream.flush()?;
        monitor::add(&METRICS.output_write_bytes, written);
        Ok(())
    }

    /// `events` as windows on `conn`, `pipelining` of them in flight, until every event
    /// is acknowledged (marked in `statuses`) or the connection fails (the reason).
    fn windows(
        &self,
        lane: &mut Lane,
        stream: &mut Stream,
        host: &str,
        events: &[Record],
        statuses: &mut [EventStatus],
    ) -> Result<(), String> {
        let n = events.len();
        let mut inflight: VecDeque<Window> = VecDeque::new();
        let mut next = 0usize;
        loop {
            while inflight.len() < self.pipelining && next < n {
                let len = lane.window.min(n - next);
                self.send_window(lane, stream, &events[next..next + len])
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
                lane.window = (lane.window * 2).min(self.bulk_max_size);
            }
        }
    }

    /// One connection's part of a batch: connects when `conn` is `None`, sends, and
    /// gives the connection back while it is good. `Err` only when nothing at all of the
    /// part was acknowledged.
    fn exchange(
        &self,
        host: &str,
        conn: Option<Conn>,
        lane: &mut Lane,
        events: &[Record],
        statuses: &mut [EventStatus],
    ) -> (Option<Conn>, Result<(), OutputError>) {
        let mut conn = match conn {
            Some(c) => c,
            None => match self.dialer.connect(host) {
                Ok(stream) => Conn {
                    stream,
                    opened: Instant::now(),
                },
                Err(e) => return (None, Err(e)),
            },
        };
        match self.windows(lane, &mut conn.stream, host, events, statuses) {
            Ok(()) => (Some(conn), Ok(())),
            Err(why) => {
                lane.window = (lane.window / 2).max(1);
                if acked_count(statuses) > 0 {
                    tracing::warn!(target: "logstash", "{why}; the events not acknowledged are sent again");
                    (None, Ok(()))
                } else {
                    let e = OutputError::Unavailable {
                        output: "logstash",
                        message: why,
                        retry_after: None,
                    };
                    (None, Err(e))
                }
            }
        }
    }
}

fn acked_count(s: &[EventStatus]) -> usize {
    s.iter().filter(|x| **x == EventStatus::Acked).count()
}

/// The fewest events worth a connection of their own when a batch is split.
const MIN_PART: usize = 32;

impl Output for LogstashOutput {
    fn name(&self) -> &'static str {
        "logstash"
    }

    /// The batch in contiguous parts, one per connection ([`Pool::next_slots`]), sent at
    /// once (as Beats' `worker` clients each send their own batch); each part is
    /// acknowledged or retried event by event on its own connection.
    fn publish(&mut self, batch: &[Record]) -> Result<Outcome, OutputError> {
        let n = batch.len();
        let parts = self.pool.width().min(n.div_ceil(MIN_PART)).max(1);
        let slots = self.pool.next_slots(parts);
        let mut statuses = vec![EventStatus::Retry; n];
        // Part k: events bounds[k]..bounds[k + 1].
        let bounds: Vec<usize> = (0..=slots.len()).map(|k| k * n / slots.len()).collect();
        let mut jobs = Vec::with_capacity(slots.len());
        let mut rest_st = &mut statuses[..];
        let mut lanes: Vec<Option<&mut Lane>> = self.lanes.iter_mut().map(Some).collect();
        for (k, &i) in slots.iter().enumerate() {
            if let Some(ttl) = self.ttl {
                self.pool.close_if(i, |c| c.opened.elapsed() >= ttl);
            }
            let (st, rest) = rest_st.split_at_mut(bounds[k + 1] - bounds[k]);
            rest_st = rest;
            let lane = lanes[i].take().expect("distinct slots");
            let host = self.pool.host(i).to_string();
            jobs.push((
                i,
                host,
                self.pool.take(i),
                lane,
                &batch[bounds[k]..bounds[k + 1]],
                st,
            ));
        }
        let s = &self.s;
        let results: Vec<(usize, Option<Conn>, Result<(), OutputError>)> =
            std::thread::scope(|scope| {
                let mut jobs = jobs.into_iter();
                let first = jobs.next().expect("at least one part");
                let others: Vec<_> = jobs
                    .map(|(i, host, conn, lane, events, st)| {
                        scope.spawn(move || {
                            let (c, r) = s.exchange(&host, conn, lane, events, st);
                            (i, c, r)
                        })
                    })
                    .collect();
                let (i, host, conn, lane, events, st) = first;
                let (c, r) = s.exchange(&host, conn, lane, events, st);
                let mut all = vec![(i, c, r)];
                all.extend(
                    others
                        .into_iter()
                        .map(|h| h.join().expect("a part's thread")),
                );
                all
            });
        let mut first_error = None;
        for (i, conn, r) in results {
            match conn {
                Some(c) => self.pool.put(i, c),
                None => self.pool.failed(i),
            }
            if let Err(e) = r {
                first_error.get_or_insert(e);
            }
        }
        let acked = acked_count(&statuses);
        match first_error {
            Some(e) if acked == 0 => Err(e),
            _ if acked == n => Ok(Outcome::Acked),
            _ => Ok(Outcome::PerEvent(statuses)),
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
        let o = &out(LogstashOutputConfig::default()).s;
        let mut b = Vec::new();
        o.encode(&Record::from_json(r#"{"a":"<x&y>"}"#), &mut b);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["@metadata"]["beat"], "connbeat");
        assert_eq!(v["@metadata"]["type"], "_doc");
        assert_eq!(v["a"], "<x&y>");
        assert!(String::from_utf8_lossy(&b).starts_with(r#"{"@metadata":{"beat":"connbeat""#));
        b.clear();
        o.encode(&Record::from_json("{}"), &mut b);
        assert!(serde_json::from_slice::<serde_json::Value>(&b).is_ok());
        let o = &out(LogstashOutputConfig {
            escape_html: true,
            index: "idx".into(),
            ..Default::default()
        })
        .s;
        b.clear();
        o.encode(&Record::from_json(r#"{"a":"<x&y>"}"#), &mut b);
        let text = String::from_utf8_lossy(&b);
        assert!(text.contains(r#""a":"\u003cx\u0026y\u003e""#), "{text}");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["a"], "<x&y>");
        assert_eq!(v["@metadata"]["beat"], "idx");
    }
}

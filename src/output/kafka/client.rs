//! `output.kafka`: one Kafka message per event through librdkafka (the `rdkafka` crate's
//! bundled build), with delivery reports deciding what the pipeline acknowledges.
//!
//! A batch is handed to librdkafka message by message (topic and key rendered from the
//! event with [`super::format`]), then the call sleeps until every message of the batch
//! has its delivery report (served by the producer's polling thread; rdkafka's own
//! `poll` with a timeout under a millisecond busy-spins, which cost most of the CPU): delivered messages are acknowledged, a message the
//! broker (or librdkafka) refuses as too large is dropped with its reason, and every other
//! failure (broker down, `timeout` reached) sends the message back to the pipeline, which
//! retries with backoff. librdkafka reports every message within `message.timeout.ms`
//! (set from `timeout`), so a batch never waits forever.
//!
//! `partition.round_robin` is a custom partitioner (librdkafka has none), optionally
//! skipping partitions without a reachable leader; `partition.hash` (the default) is
//! librdkafka's Java-compatible `murmur2_random`: by key, random without a key.

use super::KafkaOutputConfig;
use crate::event::Record;
use crate::monitor::{self, METRICS};
use crate::output::check::{self, CheckFailed, Steps, fail};
use crate::output::format::{RecordFields, Template};
use crate::output::network::VerificationMode;
use crate::output::{EventStatus, Outcome, Output, OutputError};
use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Partitioner, Producer, ProducerContext, PurgeConfig,
    ThreadedProducer,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// The librdkafka settings for `output.kafka` (secrets included: never log these values).
pub fn librdkafka_settings(c: &KafkaOutputConfig) -> Result<Vec<(String, String)>, OutputError> {
    let mut s: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: String| s.push((k.to_string(), v));
    set("bootstrap.servers", c.network.hosts.join(","));
    set("client.id", c.client_id.clone());
    set(
        "acks",
        match c.required_acks {
            -1 => "all".to_string(),
            n => n.to_string(),
        },
    );
    set("compression.codec", c.compression.as_str().into());
    // librdkafka's own limit covers the whole request; the per-message limit is checked
    // here, so a too-large event is dropped before it is sent.
    set(
        "message.max.bytes",
        c.max_message_bytes.clamp(1000, 1_000_000_000).to_string(),
    );
    let timeout_ms = c
        .network
        .timeout
        .get()
        .as_millis()
        .clamp(1, i32::MAX as u128);
    set("message.timeout.ms", timeout_ms.to_string());
    set("request.timeout.ms", timeout_ms.to_string());
    set("linger.ms", "2".into());
    set("queue.buffering.max.messages", "1000000".into());
    set("socket.keepalive.enable", "true".into());
    // Small produce requests must not wait for delayed ACKs (Nagle): each batch waits for
    // its delivery reports.
    set("socket.nagle.disable", "true".into());
    // Round-robin is a custom partitioner, which librdkafka only consults for keyless
    // messages when sticky partitioning is off.
    if c.partition.round_robin.is_some() {
        set("sticky.partitioning.linger.ms", "0".into());
    } else {
        set("partitioner", "murmur2_random".into());
    }
    let ssl = c.network.ssl.as_ref().filter(|s| s.enabled);
    let sasl_user = c
        .sasl
        .as_ref()
        .map(|s| s.username.as_str())
        .filter(|u| !u.is_empty())
        .unwrap_or(&c.username);
    let sasl_password = c
        .sasl
        .as_ref()
        .map(|s| s.password.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or(&c.password);
    let sasl = !sasl_user.is_empty();
    set(
        "security.protocol",
        match (ssl.is_some(), sasl) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        }
        .into(),
    );
    if sasl {
        let mechanism = c.sasl.as_ref().map(|s| s.mechanism).unwrap_or_default();
        set("sasl.mechanism", mechanism.as_str().into());
        set("sasl.username", sasl_user.to_string());
        set("sasl.password", sasl_password.to_string());
    }
    if let Some(t) = ssl {
        if t.certificate_authorities.is_empty() {
            set("ssl.ca.location", "probe".into());
        } else {
            let mut pem = String::new();
            for ca in &t.certificate_authorities {
                pem.push_str(&read_pem(ca, "output.kafka.ssl.certificate_authorities")?);
                pem.push('\n');
            }
            set("ssl.ca.pem", pem);
        }
        if !t.certificate.is_empty() || !t.key.is_empty() {
            set(
                "ssl.certificate.pem",
                read_pem(&t.certificate, "output.kafka.ssl.certificate")?,
            );
            set("ssl.key.pem", read_pem(&t.key, "output.kafka.ssl.key")?);
            if !t.key_passphrase.is_empty() {
                set("ssl.key.password", t.key_passphrase.clone());
            }
        }
        match t.verification_mode {
            VerificationMode::None => {
                set("enable.ssl.certificate.verification", "false".into());
                set("ssl.endpoint.identification.algorithm", "none".into());
            }
            VerificationMode::Certificate => {
                set("ssl.endpoint.identification.algorithm", "none".into())
            }
            VerificationMode::Full | VerificationMode::Strict => {
                set("ssl.endpoint.identification.algorithm", "https".into())
            }
        }
    }
    Ok(s)
}

fn read_pem(source: &str, key: &str) -> Result<String, OutputError> {
    if source.trim_start().starts_with("-----BEGIN") {
        return Ok(source.to_string());
    }
    if source.is_empty() {
        return Err(OutputError::Config(format!("{key}: a file name is needed")));
    }
    std::fs::read_to_string(source)
        .map_err(|e| OutputError::Config(format!("{key}: cannot read {source}: {e}")))
}

/// `partition.round_robin`: each message to the next partition, skipping the ones without
/// a reachable leader when `reachable_only`.
pub struct RoundRobin {
    next: AtomicUsize,
    reachable_only: bool,
}

impl Partitioner for RoundRobin {
    fn partition(
        &self,
        _topic: &str,
        _key: Option<&[u8]>,
        partition_cnt: i32,
        is_partition_available: impl Fn(i32) -> bool,
    ) -> i32 {
        let n = partition_cnt.max(1) as usize;
        for _ in 0..n {
            let p = (self.next.fetch_add(1, Ordering::Relaxed) % n) as i32;
            if !self.reachable_only || is_partition_available(p) {
                return p;
            }
        }
        // No partition has a leader: any will do, librdkafka queues until one is back.
        (self.next.fetch_add(1, Ordering::Relaxed) % n) as i32
    }
}

/// Collects delivery reports for the batch in flight; routes librdkafka's logs to tracing.
pub struct Context {
    reports: Mutex<Vec<(usize, Result<(), KafkaError>)>>,
    /// Signalled on every delivery report.
    reported: Condvar,
    round_robin: Option<RoundRobin>,
    last_warning: Mutex<Option<(String, Instant)>>,
}

impl Context {
    /// Logs a warning unless the same one was logged in the last 30 s: librdkafka repeats
    /// "broker down" on every reconnect attempt, through both callbacks.
    fn warn_once(&self, msg: String) {
        let mut last = self.last_warning.lock().expect("lock");
        if let Some((m, at)) = last.as_ref()
            && *m == msg
            && at.elapsed() < Duration::from_secs(30)
        {
            return;
        }
        tracing::warn!(target: "kafka", "{msg}");
        *last = Some((msg, Instant::now()));
    }
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => self.warn_once(format!("librdkafka {fac}: {msg}")),
            _ => tracing::debug!(target: "kafka", "librdkafka {fac}: {msg}"),
        }
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.warn_once(format!("{error}: {reason}"));
    }
}

impl ProducerContext<RoundRobin> for Context {
    type DeliveryOpaque = usize;
    fn delivery(&self, r: &DeliveryResult<'_>, opaque: usize) {
        let res = match r {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.clone()),
        };
        self.reports.lock().expect("lock").push((opaque, res));
        self.reported.notify_all();
    }
    fn get_custom_partitioner(&self) -> Option<&RoundRobin> {
        self.round_robin.as_ref()
    }
}

/// The output.
pub struct KafkaOutput {
    /// librdkafka's delivery reports are served by the producer's own polling thread; the
    /// publish call sleeps on [`Context::reported`] until its batch is reported.
    producer: ThreadedProducer<Context, RoundRobin>,
    topic: Template,
    key: Option<Template>,
    hash_fields: Vec<Template>,
    max_message_bytes: usize,
    message_timeout: Duration,
    hosts: String,
    /// Distinguishes the reports of this batch from late ones of an earlier batch.
    generation: usize,
    topic_buf: String,
    key_buf: String,
}

/// Events per batch are numbered in the low 32 bits of the delivery opaque.
const INDEX_BITS: u32 = 32;

impl KafkaOutput {
    pub fn new(c: &KafkaOutputConfig) -> Result<KafkaOutput, OutputError> {
        let topic = Template::parse(&c.topic)
            .map_err(|e| OutputError::Config(format!("output.kafka.topic: {e}")))?;
        let key = if c.key.is_empty() {
            None
        } else {
            Some(
                Template::parse(&c.key)
                    .map_err(|e| OutputError::Config(format!("output.kafka.key: {e}")))?,
            )
        };
        let hash_fields = match (&c.partition.hash, &key) {
            (Some(h), None) => h
                .hash
                .iter()
                .map(|f| {
                    Template::parse(&format!("%{{[{f}]:}}")).map_err(|e| {
                        OutputError::Config(format!("output.kafka.partition.hash.hash: {e}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => Vec::new(),
        };
        let mut cfg = ClientConfig::new();
        for (k, v) in librdkafka_settings(c)? {
            cfg.set(k, v);
        }
        cfg.set_log_level(RDKafkaLogLevel::Warning);
        let ctx = Context {
            reports: Mutex::new(Vec::new()),
            reported: Condvar::new(),
            last_warning: Mutex::new(None),
            round_robin: c.partition.round_robin.as_ref().map(|r| RoundRobin {
                next: AtomicUsize::new(0),
                reachable_only: r.reachable_only,
            }),
        };
        let producer: ThreadedProducer<Context, RoundRobin> = cfg
            .create_with_context(ctx)
            .map_err(|e| OutputError::Config(format!("output.kafka: {e}")))?;
        Ok(KafkaOutput {
            producer,
            topic,
            key,
            hash_fields,
            max_message_bytes: c.max_message_bytes,
            message_timeout: c.network.timeout.get(),
            hosts: c.network.hosts.join(","),
            generation: 0,
            topic_buf: String::new(),
            key_buf: String::new(),
        })
    }

    /// Renders topic and key of `e` into the buffers; the reason when it cannot.
    fn render(&mut self, e: &RecordFields<'_>) -> Result<bool, String> {
        self.topic
            .render_into(e, &mut self.topic_buf)
            .map_err(|m| format!("output.kafka.topic: {m}"))?;
        if self.topic_buf.is_empty() {
            return Err("output.kafka.topic renders to an empty topic name".into());
        }
        if let Some(k) = &self.key {
            k.render_into(e, &mut self.key_buf)
                .map_err(|m| format!("output.kafka.key: {m}"))?;
            return Ok(true);
        }
        if !self.hash_fields.is_empty() {
            self.key_buf.clear();
            let mut part = String::new();
            for f in &self.hash_fields {
                f.render_into(e, &mut part)
                    .map_err(|m| format!("output.kafka.partition.hash: {m}"))?;
                self.key_buf.push_str(&part);
                self.key_buf.push('\u{1f}');
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// Sleeps until a delivery report comes in or `until`.
    fn wait_reports(&self, until: Instant) {
        let ctx = self.producer.context();
        let reports = ctx.reports.lock().expect("lock");
        if reports.is_empty() {
            let left = until.saturating_duration_since(Instant::now());
            let _ = ctx.reported.wait_timeout(reports, left).expect("lock");
        }
    }

    /// Takes the delivery reports collected so far into `statuses`; returns how many.
    fn collect(
        &self,
        statuses: &mut [EventStatus],
        sizes: &[usize],
        acked_bytes: &mut u64,
    ) -> usize {
        let reports = std::mem::take(&mut *self.producer.context().reports.lock().expect("lock"));
        let mut n = 0;
        for (opaque, res) in reports {
            if opaque >> INDEX_BITS != self.generation {
                continue; // a late report of an earlier batch, already settled as Retry
            }
            let i = opaque & ((1 << INDEX_BITS) - 1);
            n += 1;
            statuses[i] = match res {
                Ok(()) => {
                    *acked_bytes += sizes[i] as u64;
                    EventStatus::Acked
                }
                Err(e) if too_large(&e) => EventStatus::Dropped(format!(
                    "the broker refused a message of {} bytes as too large ({e}); \
                     check output.kafka.max_message_bytes against the topic's max.message.bytes",
                    sizes[i]
                )),
                Err(e) => {
                    tracing::debug!(target: "kafka", "delivery failed: {e}");
                    EventStatus::Retry
                }
            };
        }
        n
    }
}

fn too_large(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge)
            | Some(RDKafkaErrorCode::InvalidMessageSize)
            | Some(RDKafkaErrorCode::MessageBatchTooLarge)
    )
}

impl Output for KafkaOutput {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn publish(&mut self, batch: &[Record]) -> Result<Outcome, OutputError> {
        self.generation = (self.generation + 1) & 0xffff_ffff;
        let mut statuses = vec![EventStatus::Retry; batch.len()];
        let mut sizes = vec![0usize; batch.len()];
        let mut sent = 0usize;
        let mut reported = 0usize;
        let mut acked_bytes = 0u64;
        let mut last_error: Option<String> = None;
        // Enqueueing waits for room in librdkafka's queue at most this long in total.
        let deadline = Instant::now() + self.message_timeout + Duration::from_secs(5);
        for (i, e) in batch.iter().enumerate() {
            let keyed = match self.render(&RecordFields::new(e)) {
                Ok(k) => k,
                Err(why) => {
                    statuses[i] = EventStatus::Dropped(why);
                    continue;
                }
            };
            let payload = e.as_bytes();
            sizes[i] = payload.len();
            if payload.len() > self.max_message_bytes {
                statuses[i] = EventStatus::Dropped(format!(
                    "a message of {} bytes is over output.kafka.max_message_bytes ({})",
                    payload.len(),
                    self.max_message_bytes
                ));
                continue;
            }
            let opaque = (self.generation << INDEX_BITS) | i;
            loop {
                let mut rec = BaseRecord::with_opaque_to(&self.topic_buf, opaque).payload(payload);
                if keyed {
                    rec = rec.key(self.key_buf.as_bytes());
                }
                match self.producer.send::<[u8], [u8]>(rec) {
                    Ok(()) => {
                        sent += 1;
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                        if Instant::now() < deadline =>
                    {
                        self.wait_reports(Instant::now() + Duration::from_millis(5));
                        reported += self.collect(&mut statuses, &sizes, &mut acked_bytes);
                    }
                    Err((e, _)) if too_large(&e) => {
                        statuses[i] = EventStatus::Dropped(format!(
                            "librdkafka refused a message of {} bytes as too large: {e}",
                            sizes[i]
                        ));
                        break;
                    }
                    Err((e, _)) => {
                        last_error = Some(e.to_string());
                        break; // stays Retry
                    }
                }
            }
            if i % 1024 == 1023 {
                reported += self.collect(&mut statuses, &sizes, &mut acked_bytes);
            }
        }
        // librdkafka reports every message within message.timeout.ms (+ a margin).
        let wait_until = Instant::now() + self.message_timeout + Duration::from_secs(5);
        while reported < sent && Instant::now() < wait_until {
            self.wait_reports(wait_until);
            reported += self.collect(&mut statuses, &sizes, &mut acked_bytes);
        }
        if reported < sent {
            // Should not happen; make sure nothing of this batch is still sent later.
            self.producer
                .purge(PurgeConfig::default().queue().inflight());
            self.wait_reports(Instant::now() + Duration::from_millis(100));
            let _ = self.collect(&mut statuses, &sizes, &mut acked_bytes);
            tracing::warn!(target: "kafka", "{} delivery reports missing after the timeout; those events are retried", sent - reported);
        }
        monitor::add(&METRICS.output_write_bytes, acked_bytes);
        let acked = statuses
            .iter()
            .filter(|s| **s == EventStatus::Acked)
            .count();
        if acked == batch.len() {
            return Ok(Outcome::Acked);
        }
        let retry = statuses
            .iter()
            .filter(|s| **s == EventStatus::Retry)
            .count();
        if acked == 0 && retry == batch.len() {
            return Err(OutputError::Unavailable {
                output: "kafka",
                message: format!(
                    "no message of the batch was delivered to {}{}",
                    self.hosts,
                    last_error.map(|e| format!(": {e}")).unwrap_or_else(|| {
                        format!(
                            " within output.kafka.timeout ({})",
                            humantime::format_duration(self.message_timeout)
                        )
                    })
                ),
                retry_after: None,
            });
        }
        Ok(Outcome::PerEvent(statuses))
    }

    fn flush(&mut self) -> Result<(), OutputError> {
        self.producer
            .flush(self.message_timeout)
            .map_err(|e| OutputError::Unavailable {
                output: "kafka",
                message: format!("flush: {e}"),
                retry_after: None,
            })
    }
}

impl Drop for KafkaOutput {
    fn drop(&mut self) {
        // Queued messages are lost when a producer is dropped without a flush.
        let _ = self.producer.flush(Duration::from_secs(5));
    }
}

/// `test output` for Kafka: each broker's DNS, TCP and TLS, then librdkafka's metadata.
pub fn check(s: &mut Steps<'_>, k: &KafkaOutputConfig) -> Result<(), CheckFailed> {
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
    let tls_on = k.network.ssl.as_ref().is_some_and(|x| x.enabled);
    for h in &k.network.hosts {
        s.line(&format!("{h}:"));
        s.indent += 2;
        let (host, port) = h
            .rsplit_once(':')
            .and_then(|(a, p)| Some((a.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .ok_or_else(|| fail("output.kafka.hosts", format!("{h:?} is not host:port")))?;
        let addrs = check::dns(s, "output.kafka", host, port)?;
        let stream = check::tcp(s, "output.kafka", &addrs, Duration::from_secs(10))?;
        if tls_on {
            check::tls(s, "output.kafka", k.network.ssl.as_ref(), host, stream)?;
        }
        s.indent -= 2;
    }
    let settings = librdkafka_settings(k).map_err(|e| fail("output.kafka", e.to_string()))?;
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
    let topic = crate::output::format::Template::parse(&k.topic)
        .map_err(|m| fail("output.kafka.topic", m))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SaslConfig, SslConfig, VerificationMode};
    use crate::output::kafka::Compression;

    fn get<'a>(s: &'a [(String, String)], k: &str) -> Option<&'a str> {
        s.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn every_key_maps_to_librdkafka() {
        let mut c = KafkaOutputConfig {
            required_acks: -1,
            compression: Compression::Zstd,
            client_id: "me".into(),
            sasl: Some(SaslConfig {
                mechanism: crate::output::kafka::SaslMechanism::ScramSha512,
                username: "u".into(),
                password: "p".into(),
            }),
            ..Default::default()
        };
        c.network.hosts = vec!["a:9092".into(), "b:9092".into()];
        c.network.ssl = Some(SslConfig {
            verification_mode: VerificationMode::Certificate,
            ..Default::default()
        });
        let s = librdkafka_settings(&c).unwrap();
        assert_eq!(get(&s, "bootstrap.servers"), Some("a:9092,b:9092"));
        assert_eq!(get(&s, "acks"), Some("all"));
        assert_eq!(get(&s, "compression.codec"), Some("zstd"));
        assert_eq!(get(&s, "client.id"), Some("me"));
        assert_eq!(get(&s, "security.protocol"), Some("sasl_ssl"));
        assert_eq!(get(&s, "sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(
            get(&s, "ssl.endpoint.identification.algorithm"),
            Some("none")
        );
        assert_eq!(get(&s, "message.timeout.ms"), Some("30000"));
        assert_eq!(get(&s, "partitioner"), Some("murmur2_random"));
        let plain = librdkafka_settings(&KafkaOutputConfig::default()).unwrap();
        assert_eq!(get(&plain, "security.protocol"), Some("plaintext"));
        assert_eq!(get(&plain, "acks"), Some("1"));
    }

    #[test]
    fn round_robin_takes_turns_and_skips_leaderless_partitions_when_reachable_only() {
        let pick = |rr: &RoundRobin, down: i32, n: usize| -> Vec<i32> {
            (0..n)
                .map(|_| rr.partition("t", None, 3, |p| p != down))
                .collect()
        };
        let all = RoundRobin {
            next: AtomicUsize::new(0),
            reachable_only: false,
        };
        assert_eq!(pick(&all, 1, 6), vec![0, 1, 2, 0, 1, 2]);
        let reachable = RoundRobin {
            next: AtomicUsize::new(0),
            reachable_only: true,
        };
        assert_eq!(pick(&reachable, 1, 6), vec![0, 2, 0, 2, 0, 2]);
        // No partition has a leader: still one of them (librdkafka queues the message).
        let none = reachable.partition("t", None, 3, |_| false);
        assert!((0..3).contains(&none));
    }
}

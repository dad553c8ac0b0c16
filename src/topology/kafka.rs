//! Reading the agents' topic with a consumer group, so that several `connbeat topology`
//! instances split its partitions (the agents key messages by `community_id`, so both
//! ends of a connection land on one partition, hence in one instance).
//!
//! Once (`follow` off) it reads each assigned partition up to the end offset it had when
//! the partition was assigned, commits nothing, and returns: running it twice reads the
//! same events. Following, it reads until `stop` is set and lets the group commit.

use crate::config::KafkaOutputConfig;
use crate::fast_hash::FxMap;
use crate::output::kafka::librdkafka_settings;
use anyhow::{Context, bail};
use rdkafka::bindings as rd;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::time::{Duration, Instant};

/// Where a partition starts when the group has no committed offset for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    Earliest,
    Latest,
}

/// The librdkafka settings of the producer that also mean something to a consumer
/// (brokers, client id, TLS, SASL, sockets).
fn consumer_settings(c: &KafkaOutputConfig) -> anyhow::Result<Vec<(String, String)>> {
    let keep = [
        "bootstrap.servers",
        "client.id",
        "security.protocol",
        "socket.",
    ];
    Ok(librdkafka_settings(c)?
        .into_iter()
        .filter(|(k, _)| {
            keep.iter().any(|p| k.starts_with(p))
                || k.starts_with("sasl.")
                || k.starts_with("ssl.")
                || k.starts_with("enable.ssl")
        })
        .collect())
}

/// The topic's fetched messages, taken from librdkafka a batch at a time.
///
/// rdkafka's `poll` hands out one message per call, each with a lock, a clock read and an
/// allocation of its own: about a fifth of the reader's CPU on a million events. Here the
/// fetch queue of every partition assigned to this instance is forwarded to one queue of
/// ours ([`Forwarding`]), read with `rd_kafka_consume_batch_queue`. The consumer's own queue
/// keeps the group's rebalance and error events, which `poll` still serves. rdkafka offers
/// no safe batch API, hence the FFI.
struct Batches {
    queue: *mut rd::rd_kafka_queue_t,
    buf: Vec<*mut rd::rd_kafka_message_t>,
}

impl Batches {
    /// Makes the queue and hands it to the consumer's [`Forwarding`] context.
    fn new(consumer: &BaseConsumer<Forwarding>) -> Option<Batches> {
        // SAFETY: the consumer handle is live; the queue made here is destroyed in `drop`,
        // which runs before the consumer's (it is declared after it).
        let queue = unsafe { rd::rd_kafka_queue_new(consumer.client().native_ptr()) };
        if queue.is_null() {
            return None;
        }
        consumer.context().queue.store(queue, Ordering::Release);
        Some(Batches {
            queue,
            buf: vec![std::ptr::null_mut(); 1024],
        })
    }

    /// Calls `each` with every message (partition, offset, payload) of one batch and
    /// returns how many there were; a fetch error is logged. librdkafka returns a batch when
    /// it is full (1,024) or when `wait` has passed: with no wait, whatever is there.
    fn next(&mut self, wait: Duration, key: &str, each: &mut dyn FnMut(i32, i64, &[u8])) -> usize {
        let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: the buffer has room for `len` pointers; each returned message is read
        // while alive and destroyed once.
        let n = unsafe {
            rd::rd_kafka_consume_batch_queue(self.queue, ms, self.buf.as_mut_ptr(), self.buf.len())
        };
        let n = usize::try_from(n).unwrap_or(0);
        for &m in &self.buf[..n] {
            // SAFETY: `m` is a message librdkafka returned and has not been destroyed.
            unsafe {
                let msg = &*m;
                if msg.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                    if msg.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__PARTITION_EOF {
                        tracing::warn!("{key}: {}", KafkaError::MessageConsumption(msg.err.into()));
                    }
                } else {
                    let payload = if msg.payload.is_null() {
                        &[][..]
                    } else {
                        std::slice::from_raw_parts(msg.payload as *const u8, msg.len)
                    };
                    each(msg.partition, msg.offset, payload);
                }
                rd::rd_kafka_message_destroy(m);
            }
        }
        n
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        // SAFETY: made by `rd_kafka_queue_new`, destroyed once. Partitions still forwarded
        // to it keep the queue itself alive (librdkafka counts references) until closing.
        unsafe { rd::rd_kafka_queue_destroy(self.queue) }
    }
}

/// The consumer's context: forwards each partition of the topic to the [`Batches`] queue
/// as it is assigned, before librdkafka starts fetching it (it then leaves an application's
/// forward in place). librdkafka drops the forward when the partition is revoked, so it is
/// set again at every assignment: a partition given back after a rebalance is read again.
struct Forwarding {
    topic: String,
    queue: AtomicPtr<rd::rd_kafka_queue_t>,
}

impl ClientContext for Forwarding {}

impl ConsumerContext for Forwarding {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let queue = self.queue.load(Ordering::Acquire);
        let Rebalance::Assign(tpl) = rebalance else {
            return;
        };
        let Ok(name) = CString::new(self.topic.as_str()) else {
            return;
        };
        if queue.is_null() {
            return;
        }
        let rk = consumer.client().native_ptr();
        for e in tpl.elements_for_topic(&self.topic) {
            // SAFETY: `rk` is the live consumer handle and `queue` the live batch queue
            // (rebalances are served by `poll`, on the thread that owns both); the
            // partition's queue handle is released once forwarded.
            unsafe {
                let part = rd::rd_kafka_queue_get_partition(rk, name.as_ptr(), e.partition());
                if !part.is_null() {
                    rd::rd_kafka_queue_forward(part, queue);
                    rd::rd_kafka_queue_destroy(part);
                }
            }
        }
    }
}

pub struct Options<'a> {
    pub kafka: &'a KafkaOutputConfig,
    /// The key the settings came from, for messages (`output.kafka` or `topology.kafka`).
    pub key: &'a str,
    pub group_id: &'a str,
    pub from: From,
    pub follow: bool,
}

/// Calls `sink` with each message's value, and `tick` when idle or every 256 messages.
pub fn consume(
    o: &Options,
    stop: &AtomicBool,
    sink: &mut dyn FnMut(&[u8]),
    tick: &mut dyn FnMut(),
) -> anyhow::Result<()> {
    let mut cfg = ClientConfig::new();
    for (k, v) in consumer_settings(o.kafka)? {
        cfg.set(k, v);
    }
    cfg.set("group.id", o.group_id)
        .set(
            "enable.auto.commit",
            if o.follow { "true" } else { "false" },
        )
        .set(
            "auto.offset.reset",
            match o.from {
                From::Earliest => "earliest",
                From::Latest => "latest",
            },
        )
        .set("enable.partition.eof", "false")
        // Offsets are stored only to be committed, which a one-shot run never does.
        .set(
            "enable.auto.offset.store",
            if o.follow { "true" } else { "false" },
        );
    let topic = o.kafka.topic.as_str();
    if topic.contains("%{") {
        bail!(
            "{}.topic: {topic:?} is a format string; name the topic to read in topology.kafka.topic",
            o.key
        );
    }
    let context = Forwarding {
        topic: topic.to_string(),
        queue: AtomicPtr::new(std::ptr::null_mut()),
    };
    let consumer: BaseConsumer<Forwarding> = cfg
        .create_with_context(context)
        .with_context(|| format!("{}: cannot create a Kafka consumer", o.key))?;
    let timeout = o.kafka.network.timeout.get().max(Duration::from_secs(1));
    // Without the batch queue (librdkafka could not make one), `poll` reads every message.
    let mut batches = Batches::new(&consumer);
    consumer
        .subscribe(&[topic])
        .with_context(|| format!("{}.topic: cannot subscribe to {topic:?}", o.key))?;
    let started = Instant::now();
    // Partition -> end offset when it was assigned, and the next offset to read (updated
    // per message: hashed with FxHash, not SipHash).
    let mut ends: FxMap<i32, i64> = FxMap::default();
    let mut next: FxMap<i32, i64> = FxMap::default();
    let mut assigned_once = false;
    let mut checked = Instant::now();
    let mut since_tick = 0usize;
    let mut last = FxMap::default();
    while !stop.load(Ordering::Relaxed) {
        // The group's events, and the messages when there is no batch queue.
        let wait = if batches.is_some() {
            Duration::ZERO
        } else {
            Duration::from_millis(100)
        };
        let mut idle = match consumer.poll(wait) {
            Some(Ok(m)) => {
                next.insert(m.partition(), m.offset() + 1);
                if let Some(v) = m.payload() {
                    sink(v);
                }
                since_tick += 1;
                false
            }
            Some(Err(KafkaError::PartitionEOF(_))) => true,
            Some(Err(e)) => {
                tracing::warn!("{}: {e}", o.key);
                true
            }
            None => true,
        };
        if let Some(b) = batches.as_mut() {
            // The last offset read per partition is kept per batch, not per message.
            last.clear();
            let mut record = |p, off, v: &[u8]| {
                last.insert(p, off);
                sink(v);
            };
            // librdkafka returns a batch once it is full (1,024) or once the wait has
            // passed: 10 ms lets a batch fill while events stream in (taking what is there
            // at once made batches small and the reading slower), and is the most a message
            // waits once they trickle.
            let n = b.next(Duration::from_millis(10), o.key, &mut record);
            for (&p, &off) in &last {
                next.insert(p, off + 1);
            }
            since_tick += n;
            idle = idle && n == 0;
        }
        // The clock (progress, the check below) is read when idle or every 256 messages:
        // per message it was a visible share of the CPU.
        if !idle && since_tick < 256 {
            continue;
        }
        since_tick = 0;
        tick();
        // Whether every assigned partition is read to its end: looked at when idle and
        // every 100 ms, not per message (each look is several librdkafka calls).
        if o.follow || (!idle && checked.elapsed() < Duration::from_millis(100)) {
            continue;
        }
        checked = Instant::now();
        let assignment = consumer.assignment().context("reading the assignment")?;
        let parts: Vec<i32> = assignment
            .elements_for_topic(topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        let new: Vec<i32> = parts
            .iter()
            .copied()
            .filter(|p| !ends.contains_key(p))
            .collect();
        if !new.is_empty() {
            let committed = consumer.committed(timeout).with_context(|| {
                format!("{}: committed offsets of group {:?}", o.key, o.group_id)
            })?;
            for p in new {
                let (low, high) = consumer
                    .fetch_watermarks(topic, p, timeout)
                    .with_context(|| format!("{}: end offset of {topic}/{p}", o.key))?;
                let start = match committed.find_partition(topic, p).map(|e| e.offset()) {
                    Some(rdkafka::Offset::Offset(n)) => n.clamp(low, high),
                    _ if o.from == From::Latest => high,
                    _ => low,
                };
                tracing::debug!("{}: {topic}/{p}: reading offsets {start}..{high}", o.key);
                ends.insert(p, high);
                next.entry(p).or_insert(start);
            }
        }
        if parts.is_empty() {
            if !assigned_once && started.elapsed() > timeout {
                bail!(
                    "{}: no partition of topic {topic:?} was assigned within {timeout:?} \
                     (is the broker at {} reachable, does the topic exist, do more instances \
                     of group {:?} run than it has partitions?)",
                    o.key,
                    o.kafka.network.hosts.join(","),
                    o.group_id
                );
            }
            continue;
        }
        assigned_once = true;
        if parts.iter().all(|p| next[p] >= ends[p]) {
            break;
        }
    }
    Ok(())
}

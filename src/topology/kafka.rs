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
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use std::sync::atomic::{AtomicBool, Ordering};
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
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = cfg
        .create()
        .with_context(|| format!("{}: cannot create a Kafka consumer", o.key))?;
    let topic = o.kafka.topic.as_str();
    if topic.contains("%{") {
        bail!(
            "{}.topic: {topic:?} is a format string; name the topic to read in topology.kafka.topic",
            o.key
        );
    }
    consumer
        .subscribe(&[topic])
        .with_context(|| format!("{}.topic: cannot subscribe to {topic:?}", o.key))?;
    let timeout = o.kafka.network.timeout.get().max(Duration::from_secs(1));
    let started = Instant::now();
    // Partition -> end offset when it was assigned, and the next offset to read (updated
    // per message: hashed with FxHash, not SipHash).
    let mut ends: FxMap<i32, i64> = FxMap::default();
    let mut next: FxMap<i32, i64> = FxMap::default();
    let mut assigned_once = false;
    let mut checked = Instant::now();
    let mut polled = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let idle = match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                next.insert(m.partition(), m.offset() + 1);
                if let Some(v) = m.payload() {
                    sink(v);
                }
                false
            }
            Some(Err(KafkaError::PartitionEOF(_))) => true,
            Some(Err(e)) => {
                tracing::warn!("{}: {e}", o.key);
                true
            }
            None => true,
        };
        // The clock (progress, the check below) is read when idle or every 256 messages:
        // per message it was a visible share of the CPU.
        polled = polled.wrapping_add(1);
        if !idle && !polled.is_multiple_of(256) {
            continue;
        }
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

//! Reading the agents' topic with a consumer group, so that several `connbeat topology`
//! instances split its partitions (the agents key messages by `community_id`, so both
//! ends of a connection land on one partition, hence in one instance).
//!
//! Once (`follow` off) it reads each assigned partition up to the end offset it had when
//! the partition was assigned, commits nothing, and returns: running it twice reads the
//! same events. Following, it reads until `stop` is set and lets the group commit.

use crate::config::KafkaOutputConfig;
use crate::output::kafka::librdkafka_settings;
use anyhow::{Context, bail};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use std::collections::HashMap;
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

/// Calls `sink` with each message's value and `tick` about ten times a second.
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
    let timeout = o.kafka.timeout.get().max(Duration::from_secs(1));
    let started = Instant::now();
    // Partition -> end offset when it was assigned, and the next offset to read.
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut assigned_once = false;
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                next.insert(m.partition(), m.offset() + 1);
                if let Some(v) = m.payload() {
                    sink(v);
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => tracing::warn!("{}: {e}", o.key),
            None => {}
        }
        tick();
        if o.follow {
            continue;
        }
        let assignment = consumer.assignment().context("reading the assignment")?;
        let parts: Vec<i32> = assignment
            .elements_for_topic(topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        for p in &parts {
            if !ends.contains_key(p) {
                let (low, high) = consumer
                    .fetch_watermarks(topic, *p, timeout)
                    .with_context(|| format!("{}: end offset of {topic}/{p}", o.key))?;
                ends.insert(*p, high);
                if o.from == From::Latest {
                    next.entry(*p).or_insert(high);
                }
                next.entry(*p).or_insert(low);
            }
        }
        if parts.is_empty() {
            if !assigned_once && started.elapsed() > timeout {
                bail!(
                    "{}: no partition of topic {topic:?} was assigned within {timeout:?} \
                     (is the broker at {} reachable, does the topic exist, do more instances \
                     of group {:?} run than it has partitions?)",
                    o.key,
                    o.kafka.hosts.join(","),
                    o.group_id
                );
            }
            continue;
        }
        assigned_once = true;
        // The fetch position counts too: a group may start past what is left to read.
        let position = consumer.position().context("reading the positions")?;
        let at = |p: i32| {
            let fetched = match position.find_partition(topic, p).map(|e| e.offset()) {
                Some(rdkafka::Offset::Offset(n)) => n,
                _ => 0,
            };
            fetched.max(next.get(&p).copied().unwrap_or(0))
        };
        if parts.iter().all(|p| at(*p) >= ends[p]) {
            break;
        }
    }
    Ok(())
}

//! The bridge between sources and the output: a bounded queue, batching, acknowledgements
//! and retries.
//!
//! Sources hold a [`Publisher`] and know nothing about outputs; the output knows nothing
//! about sources. One thread (`publish`) takes events off the queue into batches of up to
//! `bulk_max_size` (sent once `flush.min_events` are there, or after `flush.timeout` with
//! whatever is there), adds the common fields, and hands each batch to the output. An
//! event leaves the queue only when the output has acknowledged or definitively refused
//! it: failed events are sent again after an exponential backoff with jitter, until
//! `max_retries` is exhausted (-1: forever). Every drop is counted and logged with its
//! reason.
//!
//! Back-pressure: the queue holds `queue.mem.events`. [`Publisher::publish`] waits while it
//! is full; a source that would rather skip work than wait (the poller skips a poll, the
//! sniffer drops packets) checks [`Publisher::is_full`] or uses [`Publisher::try_publish`].

mod backoff;
mod queue;
pub mod spool;

pub use backoff::Backoff;
use queue::{PushError, Queue};

use crate::config::Config;
use crate::event::{CommonFields, Event, Finisher, Record};
use crate::monitor::{self, METRICS};
use crate::output::{EventStatus, Outcome, Output};
use crate::processors::Processing;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The sources' handle on the queue. Cheap to clone; the pipeline ends when every clone is
/// dropped and the queue is drained.
pub struct Publisher {
    queue: Arc<Queue>,
    /// The configured processors, run on the source's thread before an event is queued.
    processing: Option<Arc<Processing>>,
}

impl Clone for Publisher {
    fn clone(&self) -> Publisher {
        self.queue.add_producer();
        Publisher {
            queue: self.queue.clone(),
            processing: self.processing.clone(),
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.queue.remove_producer();
    }
}

/// Why [`Publisher::try_publish`] did not take an event; the event is handed back.
#[derive(Debug)]
pub enum TryPublishError {
    /// The queue is full: the output is slower than the sources, or down.
    Full(Event),
    /// The pipeline has stopped.
    Closed(Event),
}

impl Publisher {
    /// This publisher, running `processing` on every event before it is queued (an event
    /// a processor drops never reaches the queue).
    pub fn with_processing(mut self, processing: Option<Arc<Processing>>) -> Publisher {
        self.processing = processing;
        self
    }

    fn process(&self, e: Event) -> Option<Event> {
        match &self.processing {
            None => Some(e),
            Some(p) => p.apply(e),
        }
    }

    /// Queues one event, waiting while the queue is full. False when the pipeline is gone.
    /// An event a processor drops counts as published.
    pub fn publish(&self, e: Event) -> bool {
        let Some(e) = self.process(e) else {
            return true;
        };
        match self.queue.push(e, true) {
            Ok(()) => {
                monitor::inc(&METRICS.queue_events);
                monitor::inc(&METRICS.queue_published);
                true
            }
            Err(_) => false,
        }
    }

    /// Queues one event if there is room, without waiting. A full queue is counted in
    /// `queue.full`; the caller decides what to do with the event it gets back.
    pub fn try_publish(&self, e: Event) -> Result<(), TryPublishError> {
        let Some(e) = self.process(e) else {
            return Ok(());
        };
        match self.queue.push(e, false) {
            Ok(()) => {
                monitor::inc(&METRICS.queue_events);
                monitor::inc(&METRICS.queue_published);
                Ok(())
            }
            Err(PushError::Full(e)) => {
                monitor::inc(&METRICS.queue_full);
                Err(TryPublishError::Full(e))
            }
            Err(PushError::Closed(e)) => Err(TryPublishError::Closed(e)),
        }
    }

    /// True when the queue has no room left: the next [`Publisher::publish`] would wait.
    /// A poller consults this before polling and skips the poll when it is set.
    pub fn is_full(&self) -> bool {
        self.free() == 0
    }

    /// How many more events the queue takes right now without waiting.
    pub fn free(&self) -> usize {
        self.queue.capacity().saturating_sub(self.queue.len())
    }
}

/// Batching, retry and timing settings of the pipeline.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// `queue.mem.events`
    pub queue_events: usize,
    /// `queue.mem.flush.min_events` (at most `bulk_max`)
    pub min_events: usize,
    /// The enabled output's `bulk_max_size`.
    pub bulk_max: usize,
    /// `queue.mem.flush.timeout`
    pub flush_timeout: Duration,
    pub backoff_init: Duration,
    pub backoff_max: Duration,
    /// Failed attempts after which a batch is dropped; negative: retry forever.
    pub max_retries: i64,
    /// `queue.disk`, when `path` is set.
    pub disk: Option<DiskSettings>,
}

/// `queue.disk`
#[derive(Debug, Clone)]
pub struct DiskSettings {
    pub path: std::path::PathBuf,
    pub max_size: u64,
}

impl PipelineSettings {
    pub fn from_config(c: &Config) -> PipelineSettings {
        let q = &c.queue.mem;
        let network = c.output.enabled().first().and_then(|s| s.batching());
        let (bulk_max, max_retries, backoff) = match network {
            Some(b) => (b.bulk_max_size, b.max_retries, b.backoff),
            // console and file: local writes, retried forever.
            None => (q.flush.min_events.max(512), -1, Default::default()),
        };
        let bulk_max = bulk_max.max(1);
        PipelineSettings {
            queue_events: q.events,
            min_events: q.flush.min_events.clamp(1, bulk_max),
            bulk_max,
            flush_timeout: q.flush.timeout.get(),
            backoff_init: backoff.init.get(),
            backoff_max: backoff.max.get(),
            max_retries,
            disk: (!c.queue.disk.path.is_empty()).then(|| DiskSettings {
                path: c.queue.disk.path.clone().into(),
                max_size: c.queue.disk.max_size.0,
            }),
        }
    }
}

/// The running pipeline: its threads and what is needed to stop them.
pub struct Pipeline {
    thread: Option<JoinHandle<()>>,
    /// With `queue.disk`: the thread that writes the memory queue to disk.
    intake: Option<JoinHandle<()>>,
    giving_up: Arc<AtomicBool>,
    done: Arc<Mutex<Option<mpsc::Receiver<()>>>>,
}

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
    #[error("cannot start the {0} thread: {1}")]
    Thread(&'static str, std::io::Error),
}

/// Starts the pipeline: with `settings.disk`, events go through the disk spool.
pub fn start(
    settings: PipelineSettings,
    output: Box<dyn Output>,
    common: CommonFields,
) -> Result<(Publisher, Pipeline), PublishError> {
    let queue = Arc::new(Queue::new(settings.queue_events));
    let (done_tx, done_rx) = mpsc::channel();
    let giving_up = Arc::new(AtomicBool::new(false));
    monitor::set(&METRICS.queue_max_events, settings.queue_events as u64);
    let mut sender = Sender::new(output, &settings, giving_up.clone());
    let mut intake = None;
    let mut feed = match &settings.disk {
        None => Feed::Memory(MemFeed {
            queue: queue.clone(),
            finisher: common.finisher(),
            events: Vec::with_capacity(settings.bulk_max),
        }),
        Some(d) => {
            let (mut writer, reader) = spool::open(&d.path, d.max_size)?;
            writer.set_stop(giving_up.clone());
            let q = queue.clone();
            let g = giving_up.clone();
            intake = Some(
                std::thread::Builder::new()
                    .name("publish-disk".into())
                    .spawn(move || intake_to_disk(&q, &common.finisher(), writer, &g))
                    .map_err(|e| PublishError::Thread("disk queue", e))?,
            );
            sender.keep_on_interrupt = true;
            Feed::Disk(reader)
        }
    };
    let q = queue.clone();
    let thread = std::thread::Builder::new()
        .name("publish".into())
        .spawn(move || {
            run(&mut feed, &mut sender, &settings);
            q.close();
            let _ = done_tx.send(());
        })
        .map_err(|e| PublishError::Thread("publish", e))?;
    Ok((
        Publisher {
            queue,
            processing: None,
        },
        Pipeline {
            thread: Some(thread),
            intake,
            giving_up,
            done: Arc::new(Mutex::new(Some(done_rx))),
        },
    ))
}

impl Pipeline {
    /// Waits up to `timeout` for the queue to drain (every [`Publisher`] must be dropped
    /// first). Returns true when everything was written. With the disk queue, what could
    /// not be sent in time stays on disk for the next start.
    pub fn finish(mut self, timeout: Duration) -> bool {
        let done = self.done.lock().expect("lock").take();
        let drained = done.is_some_and(|d| d.recv_timeout(timeout).is_ok());
        if !drained {
            self.giving_up.store(true, Ordering::Relaxed);
            if let Some(intake) = self.intake.take() {
                // The sources are gone: the intake only has the memory queue left to write.
                let _ = intake.join();
                tracing::warn!(target: "publish",
                    "shutdown_timeout of {} reached: {} events stay in the disk queue for the next start",
                    humantime::format_duration(timeout), monitor::get(&METRICS.queue_disk_events));
            } else {
                let left = monitor::get(&METRICS.queue_events);
                tracing::warn!(target: "publish",
                    "shutdown_timeout of {} reached with {left} events not yet acknowledged; they are dropped",
                    humantime::format_duration(timeout));
            }
            // Give the pipeline a moment to count what it drops; it never blocks long.
            if let Some(t) = self.thread.take() {
                let deadline = Instant::now() + Duration::from_secs(1);
                while !t.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            return false;
        }
        if let Some(t) = self.intake.take() {
            let _ = t.join();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        true
    }
}

/// Where batches come from.
enum Feed {
    Memory(MemFeed),
    Disk(spool::SpoolReader),
}

impl Feed {
    fn next_batch(
        &mut self,
        batch: &mut Vec<Record>,
        min: usize,
        max: usize,
        timeout: Duration,
    ) -> bool {
        match self {
            Feed::Memory(m) => m.next_batch(batch, min, max, timeout),
            Feed::Disk(d) => d.next_batch(batch, min, max, timeout),
        }
    }

    /// The batch just delivered (or dropped) leaves the queue.
    fn settled(&mut self, n: usize) {
        match self {
            Feed::Memory(_) => {
                METRICS.queue_events.fetch_sub(n as u64, Ordering::Relaxed);
            }
            Feed::Disk(d) => {
                if let Err(e) = d.commit() {
                    monitor::inc(&METRICS.queue_disk_errors);
                    tracing::error!(target: "publish",
                        "disk queue: cannot record the acknowledgement: {e}; those events may be sent again after a restart");
                }
            }
        }
    }
}

/// The in-memory queue.
struct MemFeed {
    queue: Arc<Queue>,
    finisher: Finisher,
    events: Vec<Event>,
}

impl MemFeed {
    /// Fills `batch` with up to `max` events: returns once `min` are there, `timeout` has
    /// passed, or the sources are gone. False when the sources are gone and nothing is left.
    fn next_batch(
        &mut self,
        batch: &mut Vec<Record>,
        min: usize,
        max: usize,
        timeout: Duration,
    ) -> bool {
        let open = self
            .queue
            .pop(&mut self.events, min, max - batch.len(), timeout);
        batch.extend(self.events.drain(..).map(|e| self.finisher.finish(e)));
        open || !batch.is_empty()
    }
}

/// Events the disk intake takes off the memory queue at once.
const INTAKE_GROUP: usize = 1024;

/// With `queue.disk`: moves events from the memory queue to the spool, fsyncing in groups,
/// until every source is gone.
fn intake_to_disk(
    queue: &Queue,
    finisher: &Finisher,
    mut writer: spool::SpoolWriter,
    giving_up: &AtomicBool,
) {
    let sync = |w: &mut spool::SpoolWriter| {
        if let Err(e) = w.sync() {
            monitor::inc(&METRICS.queue_disk_errors);
            tracing::error!(target: "publish", "disk queue: fsync failed: {e}");
        }
    };
    let mut lost_at_shutdown = 0u64;
    let mut events = Vec::with_capacity(INTAKE_GROUP);
    // Half the memory queue at most, so that sources keep queueing while a group forms.
    let group = (queue.capacity() / 2).clamp(1, INTAKE_GROUP);
    loop {
        // Events become readable only once fsync'd: once one waits for the next group sync,
        // waiting for more (up to that sync) costs no latency, and wakes this thread once
        // per group rather than once per event. The first one is taken as it comes.
        let (min, wait) = match writer.sync_due() {
            Some(t) => (group, t.saturating_duration_since(Instant::now())),
            None => (1, Duration::from_secs(1)),
        };
        let open = queue.pop(&mut events, min, INTAKE_GROUP, wait);
        for e in events.drain(..) {
            let v = finisher.finish(e);
            let mut failures = 0u32;
            while let Err(e) = writer.append(&v) {
                if giving_up.load(Ordering::Relaxed) {
                    monitor::inc(&METRICS.output_events_dropped);
                    monitor::inc(&METRICS.output_events_shutdown);
                    lost_at_shutdown += 1;
                    if lost_at_shutdown == 1 {
                        tracing::error!(target: "publish", "disk queue: {e}; the events still in memory are dropped");
                    }
                    break;
                }
                monitor::inc(&METRICS.queue_disk_errors);
                failures += 1;
                if failures == 1 {
                    tracing::error!(target: "publish",
                        "disk queue: cannot write: {e}; retrying every second (sources wait meanwhile)");
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            METRICS.queue_events.fetch_sub(1, Ordering::Relaxed);
        }
        if writer.sync_due().is_some_and(|t| Instant::now() >= t) {
            sync(&mut writer);
        }
        if !open {
            break;
        }
    }
    queue.close();
    if lost_at_shutdown > 0 {
        tracing::error!(target: "publish",
            "disk queue: {lost_at_shutdown} events dropped at shutdown (disk queue full, output down)");
    }
    if let Err(e) = writer.close() {
        monitor::inc(&METRICS.queue_disk_errors);
        tracing::error!(target: "publish", "disk queue: final fsync failed: {e}");
    }
}

fn run(feed: &mut Feed, sender: &mut Sender, s: &PipelineSettings) {
    let mut batch: Vec<Record> = Vec::with_capacity(s.bulk_max);
    while feed.next_batch(&mut batch, s.min_events, s.bulk_max, s.flush_timeout) {
        if batch.is_empty() {
            continue;
        }
        let n = batch.len();
        if sender.deliver(&mut batch) == Delivery::Interrupted && sender.keep_on_interrupt {
            // Not acknowledged: it stays on disk for the next start.
            break;
        }
        // Delivered or dropped (and counted): either way these events left the queue.
        feed.settled(n);
        batch.clear();
    }
    if let Err(e) = sender.output.flush() {
        tracing::error!(target: "publish", "final flush failed: {e}");
    }
    if let Feed::Disk(d) = feed
        && let Err(e) = d.close()
    {
        monitor::inc(&METRICS.queue_disk_errors);
        tracing::error!(target: "publish",
            "disk queue: cannot record the acknowledgement: {e}; those events may be sent again after a restart");
    }
}

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// Every event was acknowledged or dropped for a reason.
    Done,
    /// Shutdown interrupted the retries; the events left in the batch were not delivered.
    Interrupted,
}

/// Hands batches to the output until each event is acknowledged or dropped.
struct Sender {
    output: Box<dyn Output>,
    backoff: Backoff,
    max_retries: i64,
    giving_up: Arc<AtomicBool>,
    /// With the disk queue, events interrupted by shutdown are kept, not dropped.
    keep_on_interrupt: bool,
}

impl Sender {
    fn new(output: Box<dyn Output>, s: &PipelineSettings, giving_up: Arc<AtomicBool>) -> Sender {
        Sender {
            output,
            backoff: Backoff::new(s.backoff_init, s.backoff_max),
            max_retries: s.max_retries,
            giving_up,
            keep_on_interrupt: false,
        }
    }

    /// Sends `batch` until nothing is left to retry. On return the batch holds only the
    /// events that were interrupted by shutdown (empty on [`Delivery::Done`]); with the
    /// memory queue they are counted as dropped.
    fn deliver(&mut self, batch: &mut Vec<Record>) -> Delivery {
        let mut failures: i64 = 0;
        loop {
            monitor::inc(&METRICS.output_batches);
            let wait = match self.output.publish(batch) {
                Ok(Outcome::Acked) => {
                    monitor::add(&METRICS.output_events_acked, batch.len() as u64);
                    batch.clear();
                    self.backoff.reset();
                    return Delivery::Done;
                }
                Ok(Outcome::PerEvent(statuses)) => {
                    let retry = self.settle(batch, statuses);
                    if retry == 0 {
                        self.backoff.reset();
                        return Delivery::Done;
                    }
                    monitor::add(&METRICS.output_events_failed, retry as u64);
                    tracing::warn!(target: "publish",
                        "{} output: {retry} events not accepted this time; they are sent again",
                        self.output.name());
                    None
                }
                Err(e) => {
                    monitor::add(&METRICS.output_events_failed, batch.len() as u64);
                    monitor::inc(&METRICS.output_write_errors);
                    tracing::error!(target: "publish", "{e}; {} events wait for the next attempt", batch.len());
                    e.retry_after()
                }
            };
            failures += 1;
            if self.max_retries >= 0 && failures > self.max_retries {
                let n = batch.len() as u64;
                monitor::add(&METRICS.output_events_dropped, n);
                monitor::add(&METRICS.output_events_retry_limit, n);
                tracing::error!(target: "publish",
                    "{} output: dropping {n} events after {failures} failed attempts (max_retries: {})",
                    self.output.name(), self.max_retries);
                batch.clear();
                return Delivery::Done;
            }
            let wait = wait.map_or_else(
                || self.backoff.next_wait(),
                |w| w.min(Duration::from_secs(600)),
            );
            tracing::info!(target: "publish", "{} output: next attempt for {} events in {}",
                self.output.name(), batch.len(), humantime::format_duration(round_ms(wait)));
            monitor::inc(&METRICS.output_retries);
            if !self.sleep(wait) {
                return self.interrupted(batch);
            }
        }
    }

    /// Applies per-event statuses: acked and dropped events leave `batch`, the ones to
    /// retry stay, in order. Returns how many stay.
    fn settle(&mut self, batch: &mut Vec<Record>, statuses: Vec<EventStatus>) -> usize {
        if statuses.len() != batch.len() {
            // An output bug must not lose events: treat it as "retry everything".
            tracing::error!(target: "publish",
                "{} output reported {} statuses for {} events; retrying the batch",
                self.output.name(), statuses.len(), batch.len());
            return batch.len();
        }
        let mut acked = 0u64;
        let mut reasons: Vec<(String, u64)> = Vec::new();
        let mut st = statuses.iter();
        batch.retain(|_| {
            let s = st.next().expect("same length");
            match s {
                EventStatus::Acked => {
                    acked += 1;
                    false
                }
                EventStatus::Retry => true,
                EventStatus::Dropped(why) => {
                    match reasons.iter_mut().find(|(r, _)| r == why) {
                        Some((_, n)) => *n += 1,
                        None => reasons.push((why.clone(), 1)),
                    }
                    false
                }
            }
        });
        monitor::add(&METRICS.output_events_acked, acked);
        for (why, n) in &reasons {
            monitor::add(&METRICS.output_events_dropped, *n);
            monitor::add(&METRICS.output_events_rejected, *n);
            tracing::error!(target: "publish", "{} output: dropped {n} events: {why}", self.output.name());
        }
        batch.len()
    }

    /// Sleeps `d` unless shutdown gives up first; false when it did.
    fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        loop {
            if self.giving_up.load(Ordering::Relaxed) {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }

    fn interrupted(&mut self, batch: &mut Vec<Record>) -> Delivery {
        if self.keep_on_interrupt {
            return Delivery::Interrupted;
        }
        let n = batch.len() as u64;
        monitor::add(&METRICS.output_events_dropped, n);
        monitor::add(&METRICS.output_events_shutdown, n);
        tracing::error!(target: "publish",
            "{} output: dropping {n} undelivered events at shutdown", self.output.name());
        batch.clear();
        Delivery::Interrupted
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

#[cfg(test)]
mod tests;

//! `queue.disk`: the on-disk spool that keeps events while the output is down, across
//! agent restarts.
//!
//! When `queue.disk.path` is set, every event goes through the spool: the intake side
//! appends it as a record to the current segment file, the sending side reads records back
//! in order and advances an acknowledgement position once the output has settled them. So
//! the order is the order of arrival, and whatever was not acknowledged when the agent
//! stopped (or crashed) is sent after the next start.
//!
//! Layout of `<path>/`: `segment-<seq>.log` files of records `[len: u32 LE][crc32: u32 LE]
//! [JSON]`, and `ack` (`<seq> <offset>`: where the first unacknowledged record starts),
//! replaced atomically. Records are fsync'd in groups (every [`SYNC_EVERY`] records or
//! [`SYNC_INTERVAL`], whichever first) and only synced records are read back, so an event
//! is sent only once it is on disk. The acknowledgement position is written (and fsync'd)
//! at most every [`ACK_INTERVAL`], before a segment is deleted, and when the reader closes:
//! after a crash, up to that much acknowledged work is sent again (delivery is at least
//! once, and a file written per batch cost more than the batch). The spool never grows beyond `max_size`: when it is
//! full the intake waits, the memory queue fills up, and the sources are told. A record
//! whose checksum does not match (a torn write at a crash) ends its segment; it is counted
//! in `queue.disk.corrupt` and logged.

use crate::event::Record;
use crate::monitor::{self, METRICS};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Records appended between two fsyncs at most.
pub const SYNC_EVERY: usize = 4096;
/// Time between an append and its fsync at most.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// Time between two writes of the acknowledgement position at most.
pub const ACK_INTERVAL: Duration = Duration::from_millis(100);
const HEADER: u64 = 8;

/// A place in the spool: segment number and byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub seq: u64,
    pub off: u64,
}

#[derive(Debug)]
struct State {
    /// End of what is on disk and synced: the reader never goes past it.
    durable: Pos,
    /// Segments present, oldest first, with their sizes.
    segments: VecDeque<(u64, u64)>,
    used: u64,
    writer_done: bool,
    /// Events written and not yet acknowledged.
    events: u64,
    /// The latest events, by record position (start, end offset), so that a reader that
    /// keeps up does not read them back from disk.
    cache: VecDeque<(Pos, u64, Record)>,
}

/// Events kept in memory for a reader that keeps up.
const CACHE_MAX: usize = 8192;

struct Shared {
    dir: PathBuf,
    max_size: u64,
    state: Mutex<State>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn gauges(&self, s: &State) {
        monitor::set(&METRICS.queue_disk_events, s.events);
        monitor::set(&METRICS.queue_disk_bytes, s.used);
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("segment-{seq:020}.log"))
}

/// Errors opening the spool; they name `queue.disk.path`.
#[derive(Debug, thiserror::Error)]
#[error("queue.disk.path: {what} {path}: {source}")]
pub struct SpoolError {
    what: &'static str,
    path: PathBuf,
    source: io::Error,
}

fn err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SpoolError + 'a {
    move |source| SpoolError {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Opens (or creates) the spool in `dir`, recovering what a previous run left.
pub fn open(dir: &Path, max_size: u64) -> Result<(SpoolWriter, SpoolReader), SpoolError> {
    std::fs::create_dir_all(dir).map_err(err("cannot create", dir))?;
    let ack = read_ack(dir);
    let mut seqs: Vec<u64> = std::fs::read_dir(dir)
        .map_err(err("cannot list", dir))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix("segment-")?
                .strip_suffix(".log")?
                .parse()
                .ok()
        })
        .collect();
    seqs.sort_unstable();
    let ack = ack.unwrap_or(Pos {
        seq: seqs.first().copied().unwrap_or(0),
        off: 0,
    });
    let mut segments = VecDeque::new();
    let mut events = 0u64;
    let mut used = 0u64;
    for (i, &seq) in seqs.iter().enumerate() {
        let path = segment_path(dir, seq);
        if seq < ack.seq {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let last = i + 1 == seqs.len();
        let start = if seq == ack.seq { ack.off } else { 0 };
        let (count, valid_end, len) = scan(&path, start).map_err(err("cannot read", &path))?;
        if valid_end < len {
            monitor::inc(&METRICS.queue_disk_corrupt);
            tracing::warn!(target: "publish",
                "disk queue: {} has {} bytes after its last valid record (interrupted write?); they are skipped",
                path.display(), len - valid_end);
            if last {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(err("cannot open", &path))?;
                f.set_len(valid_end)
                    .map_err(err("cannot truncate", &path))?;
            }
        }
        events += count;
        let size = if last { valid_end } else { len };
        used += size;
        segments.push_back((seq, size));
    }
    // Where reading starts, and where writing continues.
    let (start, seq, off) = match (segments.front(), segments.back()) {
        (Some(&(first, _)), Some(&(last, size))) => {
            let start = if first == ack.seq {
                ack
            } else {
                Pos { seq: first, off: 0 }
            };
            (start, last, size)
        }
        _ => {
            // Nothing left: a fresh segment after anything seen before.
            let seq = seqs.last().map_or(ack.seq, |l| (l + 1).max(ack.seq));
            segments.push_back((seq, 0));
            (Pos { seq, off: 0 }, seq, 0)
        }
    };
    let path = segment_path(dir, seq);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(err("cannot open", &path))?;
    let segment_size = (max_size / 4).clamp(4096, 64 << 20);
    let shared = Arc::new(Shared {
        dir: dir.to_path_buf(),
        max_size,
        state: Mutex::new(State {
            durable: Pos { seq, off },
            segments,
            used,
            writer_done: false,
            events,
            cache: VecDeque::new(),
        }),
        cv: Condvar::new(),
    });
    shared.gauges(&shared.lock());
    if events > 0 {
        tracing::info!(target: "publish",
            "disk queue {}: {events} events from a previous run are sent first", dir.display());
    }
    Ok((
        SpoolWriter {
            shared: shared.clone(),
            file: BufWriter::with_capacity(256 * 1024, file),
            seq,
            off,
            segment_size,
            unsynced: 0,
            first_unsynced: None,
            record: Vec::with_capacity(4096),
            stop: None,
        },
        SpoolReader {
            shared,
            cursor: start,
            acked: start,
            persisted: start,
            persisted_at: Instant::now(),
            file: None,
            file_off: 0,
            pending: 0,
        },
    ))
}

/// Counts the valid records of a segment from `start`: (records, end of the last valid
/// one, file length).
fn scan(path: &Path, start: u64) -> io::Result<(u64, u64, u64)> {
    let f = File::open(path)?;
    let len = f.metadata()?.len();
    let mut r = BufReader::with_capacity(256 * 1024, f);
    r.seek(SeekFrom::Start(start.min(len)))?;
    let mut pos = start.min(len);
    let mut count = 0;
    let mut buf = Vec::new();
    loop {
        match read_record(&mut r, &mut buf, len - pos) {
            Ok(Some(n)) => {
                pos += n;
                count += 1;
            }
            Ok(None) | Err(_) => return Ok((count, pos, len)),
        }
    }
}

/// Reads one record into `buf`; Some(bytes consumed), None at a clean end. An error means a
/// truncated or corrupt record. `left` is what remains of the valid part of the file.
fn read_record(r: &mut impl Read, buf: &mut Vec<u8>, left: u64) -> io::Result<Option<u64>> {
    if left == 0 {
        return Ok(None);
    }
    if left < HEADER {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "truncated header",
        ));
    }
    let mut h = [0u8; 8];
    r.read_exact(&mut h)?;
    let len = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes")) as u64;
    let crc = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"));
    if len > left - HEADER {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "truncated record",
        ));
    }
    buf.resize(len as usize, 0);
    r.read_exact(buf)?;
    if crc32fast::hash(buf) != crc {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "checksum mismatch",
        ));
    }
    Ok(Some(HEADER + len))
}

fn read_ack(dir: &Path) -> Option<Pos> {
    let text = std::fs::read_to_string(dir.join("ack")).ok()?;
    let mut it = text.split_whitespace();
    Some(Pos {
        seq: it.next()?.parse().ok()?,
        off: it.next()?.parse().ok()?,
    })
}

/// The intake side: appends events.
pub struct SpoolWriter {
    shared: Arc<Shared>,
    file: BufWriter<File>,
    seq: u64,
    off: u64,
    segment_size: u64,
    unsynced: usize,
    first_unsynced: Option<Instant>,
    record: Vec<u8>,
    /// Set at shutdown: stop waiting for room.
    stop: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl SpoolWriter {
    /// When `stop` is set, an append that waits for room fails instead (at shutdown, with
    /// the output down and the spool full, nothing else can make room).
    pub fn set_stop(&mut self, stop: Arc<std::sync::atomic::AtomicBool>) {
        self.stop = Some(stop);
    }

    /// Appends one event, waiting while the spool is full. Returns false when the event
    /// alone is larger than the whole spool (it is then dropped, counted and logged).
    pub fn append(&mut self, event: &Record) -> io::Result<bool> {
        self.record.clear();
        self.record.extend_from_slice(&[0; 8]);
        self.record.extend_from_slice(event.as_bytes());
        let len = (self.record.len() as u64) - HEADER;
        let crc = crc32fast::hash(&self.record[8..]);
        self.record[0..4].copy_from_slice(&(len as u32).to_le_bytes());
        self.record[4..8].copy_from_slice(&crc.to_le_bytes());
        let size = self.record.len() as u64;
        if size > self.shared.max_size / 2 {
            monitor::inc(&METRICS.output_events_dropped);
            monitor::inc(&METRICS.queue_disk_too_large);
            tracing::error!(target: "publish",
                "disk queue: dropping an event of {size} bytes, more than half of queue.disk.max_size ({})",
                self.shared.max_size);
            return Ok(false);
        }
        if self.off > 0 && self.off + size > self.segment_size {
            self.rotate()?;
        }
        self.wait_for_room(size)?;
        self.file.write_all(&self.record)?;
        let pos = Pos {
            seq: self.seq,
            off: self.off,
        };
        self.off += size;
        {
            let mut s = self.shared.lock();
            s.used += size;
            s.events += 1;
            if let Some(last) = s.segments.back_mut() {
                last.1 = self.off;
            }
            // A reader that keeps up takes it from memory; when it falls behind, the cache
            // fills and it reads from disk.
            if s.cache.len() < CACHE_MAX {
                s.cache.push_back((pos, self.off, event.clone()));
            }
            self.shared.gauges(&s);
        }
        monitor::inc(&METRICS.queue_disk_written);
        self.unsynced += 1;
        self.first_unsynced.get_or_insert_with(Instant::now);
        // The record is written: a failed fsync is retried with the next group, not by
        // appending the event again.
        if self.unsynced >= SYNC_EVERY
            && let Err(e) = self.sync()
        {
            monitor::inc(&METRICS.queue_disk_errors);
            tracing::error!(target: "publish", "disk queue: fsync failed: {e}; retried with the next group");
        }
        Ok(true)
    }

    /// Forgets the cached copy of the last record, as if the cache had been full.
    #[cfg(test)]
    fn uncache_last(&mut self) {
        self.shared.lock().cache.pop_back();
    }

    /// When the next group fsync is due (None: nothing to sync).
    pub fn sync_due(&self) -> Option<Instant> {
        self.first_unsynced.map(|t| t + SYNC_INTERVAL)
    }

    /// Writes out and fsyncs what was appended; readers may then read it.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.unsynced == 0 {
            return Ok(());
        }
        self.file.flush()?;
        self.file.get_ref().sync_data()?;
        monitor::inc(&METRICS.queue_disk_syncs);
        self.unsynced = 0;
        self.first_unsynced = None;
        let mut s = self.shared.lock();
        s.durable = Pos {
            seq: self.seq,
            off: self.off,
        };
        self.shared.cv.notify_all();
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.sync()?;
        let seq = self.seq + 1;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(&self.shared.dir, seq))?;
        File::open(&self.shared.dir)?.sync_all()?;
        self.file = BufWriter::with_capacity(256 * 1024, file);
        self.seq = seq;
        self.off = 0;
        let mut s = self.shared.lock();
        s.segments.push_back((seq, 0));
        s.durable = Pos { seq, off: 0 };
        self.shared.cv.notify_all();
        Ok(())
    }

    fn wait_for_room(&mut self, size: u64) -> io::Result<()> {
        let mut logged = false;
        loop {
            {
                let s = self.shared.lock();
                if s.used + size <= self.shared.max_size {
                    return Ok(());
                }
            }
            if self
                .stop
                .as_ref()
                .is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed))
            {
                return Err(io::Error::other(
                    "the disk queue is full (queue.disk.max_size) and the agent is stopping",
                ));
            }
            // Let the reader see everything, so that it can acknowledge and free segments.
            self.sync()?;
            if !logged {
                logged = true;
                monitor::inc(&METRICS.queue_disk_full);
                tracing::warn!(target: "publish",
                    "disk queue full (queue.disk.max_size {} bytes): waiting for the output", self.shared.max_size);
            }
            let s = self.shared.lock();
            let _ = self
                .shared
                .cv
                .wait_timeout(s, Duration::from_millis(200))
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Syncs and tells the reader that nothing more comes.
    pub fn close(mut self) -> io::Result<()> {
        let r = self.sync();
        let mut s = self.shared.lock();
        s.writer_done = true;
        self.shared.cv.notify_all();
        r
    }
}

/// The sending side: reads records in order, acknowledges them.
pub struct SpoolReader {
    shared: Arc<Shared>,
    cursor: Pos,
    acked: Pos,
    /// The acknowledgement position on disk, and when it was written.
    persisted: Pos,
    persisted_at: Instant,
    file: Option<(u64, BufReader<File>)>,
    /// Where the open file's reader is.
    file_off: u64,
    /// Records read since the last commit.
    pending: u64,
}

impl SpoolReader {
    /// Fills `batch` with up to `max` events: returns once `min` are there or `timeout`
    /// passed. False when the writer is closed and everything was read.
    pub fn next_batch(
        &mut self,
        batch: &mut Vec<Record>,
        min: usize,
        max: usize,
        timeout: Duration,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let mut buf = Vec::new();
        loop {
            let (durable, done) = {
                let s = self.shared.lock();
                (s.durable, s.writer_done)
            };
            while batch.len() < max && self.cursor < durable {
                if self.take_cached(durable, batch, max) > 0 {
                    continue;
                }
                match self.read_one(durable, &mut buf) {
                    Ok(Some(v)) => batch.push(v),
                    Ok(None) => {}
                    Err(e) => {
                        monitor::inc(&METRICS.queue_disk_corrupt);
                        tracing::error!(target: "publish",
                            "disk queue: {} at segment {} offset {}: the rest of the segment is skipped",
                            e, self.cursor.seq, self.cursor.off);
                        self.skip_segment(durable);
                    }
                }
            }
            if batch.len() >= min || batch.len() >= max {
                return true;
            }
            if done && self.cursor >= durable {
                return !batch.is_empty();
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            // Idle: the acknowledgements of the last batches must not wait for the next one.
            if self.acked != self.persisted
                && self.persisted_at.elapsed() >= ACK_INTERVAL
                && let Err(e) = self.persist()
            {
                monitor::inc(&METRICS.queue_disk_errors);
                tracing::error!(target: "publish",
                    "disk queue: cannot record the acknowledgement: {e}; those events may be sent again after a restart");
            }
            let s = self.shared.lock();
            if s.durable == durable && !s.writer_done {
                let _ = self
                    .shared
                    .cv
                    .wait_timeout(s, (deadline - now).min(Duration::from_millis(100)))
                    .unwrap_or_else(|p| p.into_inner());
            }
        }
    }

    /// Moves the synced records at the cursor that the cache holds into `batch` (up to
    /// `max` in all), in one lock; how many it moved.
    fn take_cached(&mut self, durable: Pos, batch: &mut Vec<Record>, max: usize) -> usize {
        let mut s = self.shared.lock();
        let mut n = 0;
        while batch.len() < max
            && let Some((pos, end, _)) = s.cache.front()
        {
            if *pos < self.cursor {
                s.cache.pop_front();
                continue;
            }
            let end_pos = Pos {
                seq: pos.seq,
                off: *end,
            };
            if *pos != self.cursor || end_pos > durable {
                break;
            }
            let (pos, end, v) = s.cache.pop_front().expect("checked");
            self.cursor = Pos {
                seq: pos.seq,
                off: end,
            };
            batch.push(v);
            n += 1;
        }
        self.pending += n as u64;
        n
    }

    /// Reads the record at the cursor. None when the cursor moved to the next segment.
    fn read_one(&mut self, durable: Pos, buf: &mut Vec<u8>) -> io::Result<Option<Record>> {
        if self
            .file
            .as_ref()
            .is_none_or(|(seq, _)| *seq != self.cursor.seq)
        {
            let f = File::open(segment_path(&self.shared.dir, self.cursor.seq))?;
            let r = BufReader::with_capacity(256 * 1024, f);
            self.file = Some((self.cursor.seq, r));
            self.file_off = u64::MAX;
        }
        let (_, r) = self.file.as_mut().expect("opened above");
        if self.file_off != self.cursor.off {
            // Opened just now, or the cache served the records in between.
            r.seek(SeekFrom::Start(self.cursor.off))?;
            self.file_off = self.cursor.off;
        }
        let end = if durable.seq == self.cursor.seq {
            durable.off
        } else {
            r.get_ref().metadata()?.len()
        };
        match read_record(r, buf, end.saturating_sub(self.cursor.off))? {
            Some(n) => {
                self.cursor.off += n;
                self.file_off = self.cursor.off;
                self.pending += 1;
                let text = std::str::from_utf8(buf)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                Ok(Some(Record::from_json(text)))
            }
            None => {
                // End of a finished segment: on to the next one.
                self.cursor = Pos {
                    seq: self.cursor.seq + 1,
                    off: 0,
                };
                self.file = None;
                Ok(None)
            }
        }
    }

    fn skip_segment(&mut self, durable: Pos) {
        self.file = None;
        self.cursor = if durable.seq > self.cursor.seq {
            Pos {
                seq: self.cursor.seq + 1,
                off: 0,
            }
        } else {
            durable
        };
    }

    /// Everything read so far is settled (acknowledged or dropped). The position is written
    /// to disk (and the segments left behind deleted) when [`ACK_INTERVAL`] has passed
    /// since the last write or a segment can be deleted; a reader waiting for records
    /// writes a lagging one, and [`SpoolReader::close`] the last one.
    pub fn commit(&mut self) -> io::Result<()> {
        if self.cursor == self.acked {
            return Ok(());
        }
        self.acked = self.cursor;
        let frees_a_segment = {
            let mut s = self.shared.lock();
            s.events = s.events.saturating_sub(self.pending);
            self.pending = 0;
            self.shared.gauges(&s);
            s.segments
                .front()
                .is_some_and(|&(seq, _)| seq < self.acked.seq)
        };
        if frees_a_segment || self.persisted_at.elapsed() >= ACK_INTERVAL {
            self.persist()?;
        }
        Ok(())
    }

    /// Writes the acknowledged position, then deletes the segments wholly behind it.
    fn persist(&mut self) -> io::Result<()> {
        if self.persisted == self.acked {
            return Ok(());
        }
        let dir = &self.shared.dir;
        let tmp = dir.join("ack.tmp");
        {
            let mut f = File::create(&tmp)?;
            writeln!(f, "{} {}", self.acked.seq, self.acked.off)?;
            f.sync_data()?;
        }
        std::fs::rename(&tmp, dir.join("ack"))?;
        self.persisted = self.acked;
        self.persisted_at = Instant::now();
        let mut s = self.shared.lock();
        while let Some(&(seq, size)) = s.segments.front() {
            if seq >= self.persisted.seq {
                break;
            }
            let _ = std::fs::remove_file(segment_path(dir, seq));
            s.used = s.used.saturating_sub(size);
            s.segments.pop_front();
        }
        self.shared.gauges(&s);
        self.shared.cv.notify_all();
        Ok(())
    }

    /// Writes the acknowledged position if it moved since it was last written.
    pub fn close(&mut self) -> io::Result<()> {
        self.persist()
    }

    /// Events on disk not yet acknowledged.
    pub fn backlog(&self) -> u64 {
        self.shared.lock().events
    }
}

impl Drop for SpoolReader {
    fn drop(&mut self) {
        let _ = self.persist();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(v: serde_json::Value) -> Record {
        Record::from_value(&v)
    }

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("connbeat-spool-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn read_all(r: &mut SpoolReader) -> Vec<i64> {
        let mut out = Vec::new();
        let mut batch = Vec::new();
        while r.next_batch(&mut batch, 1, 100, Duration::from_millis(10)) {
            if batch.is_empty() {
                break;
            }
            out.extend(batch.drain(..).map(|v| v.value()["n"].as_i64().unwrap()));
        }
        out
    }

    #[test]
    fn events_survive_a_restart_in_order_and_acknowledged_ones_do_not_come_back() {
        let d = dir("restart");
        {
            let (mut w, mut r) = open(&d, 1 << 20).unwrap();
            for n in 0..1000 {
                assert!(
                    w.append(&rec(json!({"n": n, "pad": "x".repeat(100)})))
                        .unwrap()
                );
            }
            w.sync().unwrap();
            let mut batch = Vec::new();
            assert!(r.next_batch(&mut batch, 300, 300, Duration::from_secs(1)));
            assert_eq!(batch.len(), 300);
            r.commit().unwrap();
            // 300 more read but not acknowledged: they must come back.
            batch.clear();
            r.next_batch(&mut batch, 300, 300, Duration::from_secs(1));
        }
        let (w, mut r) = open(&d, 1 << 20).unwrap();
        assert_eq!(r.backlog(), 700);
        w.close().unwrap();
        assert_eq!(read_all(&mut r), (300..1000).collect::<Vec<_>>());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn cached_and_uncached_records_come_back_in_order() {
        let d = dir("cache");
        let (mut w, mut r) = open(&d, 1 << 20).unwrap();
        for n in 0..50 {
            let v = rec(json!({"n": n}));
            w.append(&v).unwrap();
            // Some records only on disk (as when the cache is full).
            if n % 3 == 0 {
                w.uncache_last();
            }
        }
        w.close().unwrap();
        assert_eq!(read_all(&mut r), (0..50).collect::<Vec<_>>());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_acknowledgement_is_written_in_groups_and_when_the_reader_closes() {
        let d = dir("ackgroup");
        let (mut w, mut r) = open(&d, 1 << 20).unwrap();
        for n in 0..10 {
            w.append(&rec(json!({"n": n}))).unwrap();
        }
        w.sync().unwrap();
        let mut batch = Vec::new();
        assert!(r.next_batch(&mut batch, 5, 5, Duration::from_secs(1)));
        r.persisted_at = Instant::now();
        r.commit().unwrap();
        // Acknowledged (the backlog says so) but not yet written: within ACK_INTERVAL.
        assert_eq!(r.backlog(), 5);
        assert_eq!(read_ack(&d), None);
        std::thread::sleep(ACK_INTERVAL);
        batch.clear();
        assert!(r.next_batch(&mut batch, 2, 2, Duration::from_secs(1)));
        r.commit().unwrap();
        let seven = r.cursor;
        assert_eq!(read_ack(&d), Some(seven));
        batch.clear();
        assert!(r.next_batch(&mut batch, 1, 1, Duration::from_secs(1)));
        r.commit().unwrap();
        assert_eq!(read_ack(&d), Some(seven));
        r.close().unwrap();
        assert_eq!(read_ack(&d), Some(r.cursor));
        drop((w, r));
        let (_w, mut r) = open(&d, 1 << 20).unwrap();
        assert_eq!(r.backlog(), 2);
        batch.clear();
        assert!(r.next_batch(&mut batch, 2, 2, Duration::from_secs(1)));
        assert_eq!(batch[0].value()["n"], 8);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn an_idle_reader_writes_the_acknowledgement_that_lags() {
        let d = dir("ackidle");
        let (mut w, mut r) = open(&d, 1 << 20).unwrap();
        for n in 0..3 {
            w.append(&rec(json!({"n": n}))).unwrap();
        }
        w.sync().unwrap();
        let mut batch = Vec::new();
        assert!(r.next_batch(&mut batch, 3, 3, Duration::from_secs(1)));
        r.persisted_at = Instant::now();
        r.commit().unwrap();
        assert_eq!(read_ack(&d), None);
        // Nothing more to read: waiting for records writes the lagging position.
        batch.clear();
        r.next_batch(&mut batch, 1, 1, ACK_INTERVAL * 3);
        assert!(batch.is_empty());
        assert_eq!(read_ack(&d), Some(r.cursor));
        drop((w, r));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_torn_record_at_the_end_is_cut_off_and_counted() {
        let d = dir("torn");
        {
            let (mut w, _r) = open(&d, 1 << 20).unwrap();
            for n in 0..10 {
                w.append(&rec(json!({"n": n}))).unwrap();
            }
            w.sync().unwrap();
        }
        // A crash in the middle of a write: half a record at the end.
        let seg = segment_path(&d, 0);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, b'{']).unwrap();
        let before = monitor::get(&METRICS.queue_disk_corrupt);
        let (mut w, mut r) = open(&d, 1 << 20).unwrap();
        assert!(monitor::get(&METRICS.queue_disk_corrupt) > before);
        w.append(&rec(json!({"n": 10}))).unwrap();
        w.close().unwrap();
        assert_eq!(read_all(&mut r), (0..11).collect::<Vec<_>>());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_spool_never_exceeds_max_size_and_frees_acknowledged_segments() {
        let d = dir("full");
        let max = 256 * 1024;
        let (mut w, mut r) = open(&d, max).unwrap();
        let writer = std::thread::spawn(move || {
            for n in 0..20_000 {
                w.append(&rec(json!({"n": n, "pad": "y".repeat(50)})))
                    .unwrap();
            }
            w.close().unwrap();
        });
        let mut got = Vec::new();
        let mut batch = Vec::new();
        while r.next_batch(&mut batch, 500, 500, Duration::from_millis(50)) {
            got.extend(batch.drain(..).map(|v| v.value()["n"].as_i64().unwrap()));
            let used: u64 = std::fs::read_dir(&d)
                .unwrap()
                .map(|e| e.unwrap().metadata().unwrap().len())
                .sum();
            assert!(used <= max + 64, "spool uses {used} bytes");
            r.commit().unwrap();
        }
        writer.join().unwrap();
        assert_eq!(got, (0..20_000).collect::<Vec<_>>());
        std::fs::remove_dir_all(&d).unwrap();
    }
}

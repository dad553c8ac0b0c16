//! `output.redis`: each event `RPUSH`ed onto a list or `PUBLISH`ed on a channel (the
//! `datatype`), the key chosen per event (`key`, `keys` with `when`), as Beats does; the
//! set-up that Logstash's `redis` input reads.
//!
//! A batch is one pipeline: every command written, then every reply read and counted, so
//! that each event is acknowledged only by the reply to its command. With `datatype:
//! list`, consecutive events for the same key go in one `RPUSH key event...` (as Beats
//! sends a batch; cut every [`RUN_BYTES`]): Redis runs a command whole or not at all, and one command per run of
//! events costs the server far less than one per event. An error reply is that event's
//! failure: a transient one (`LOADING` while a restarted server reads its append-only
//! file, `OOM`, `READONLY`, ...) is retried, any other (`WRONGTYPE`: the key holds another
//! type) drops the event with the reply logged. A connection lost mid-pipeline
//! acknowledges the replies read and retries the rest. `hosts` are used one at a time
//! (the next one on failure), or in turn per batch with `loadbalance`.
//!
//! With `save_topology`, the agent also publishes its name and addresses (see
//! [`topology`]).

mod conn;
pub mod topology;

pub use conn::RedisConn;

use super::check::{CheckFailed, Steps, fail};
use super::format::RecordFields;
use super::network::{Batching, Defaults, NetworkSettings};
use super::resp::{self, Reply};
use super::selector::{Rule, Selector};
use super::stream::{Dialer, Pool};
use super::{EventStatus, Outcome, Output, OutputError};
use crate::config::{ConfigError, Duration};
use crate::event::Record;
use crate::monitor::{self, METRICS};
use serde::{Deserialize, Serialize};

/// `datatype`: how an event is written.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Datatype {
    /// `RPUSH key event`
    List,
    /// `PUBLISH key event`
    Channel,
}

/// `output.redis`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RedisOutputConfig {
    pub enabled: bool,
    #[serde(flatten)]
    pub network: NetworkSettings<Redis>,
    /// Used for a host given without a port.
    pub port: u16,
    pub password: String,
    pub db: u32,
    pub key: String,
    pub keys: Vec<Rule>,
    pub datatype: Datatype,
    pub loadbalance: bool,
    pub proxy_url: String,
    pub save_topology: bool,
    pub db_topology: u32,
    pub expiration: Duration,
}

impl Default for RedisOutputConfig {
    fn default() -> Self {
        RedisOutputConfig {
            enabled: true,
            network: NetworkSettings::default(),
            port: 6379,
            password: String::new(),
            db: 0,
            key: "connbeat".into(),
            keys: Vec::new(),
            datatype: Datatype::List,
            loadbalance: true,
            proxy_url: String::new(),
            save_topology: false,
            db_topology: 1,
            expiration: Duration::from_secs(15),
        }
    }
}

impl RedisOutputConfig {
    pub(crate) fn dialer(&self) -> Result<Dialer, OutputError> {
        Dialer::new(
            "output.redis",
            self.port,
            self.network.timeout.get(),
            self.network.ssl.as_ref(),
            &self.proxy_url,
        )
    }

    fn selector(&self) -> Result<Selector, OutputError> {
        Selector::new("output.redis", "key", &self.key, "keys", &self.keys)
    }
}

/// The registry's handle on the Redis output.
#[derive(Debug)]
pub struct Redis;

impl Defaults for Redis {
    const HOSTS: &'static [&'static str] = &["localhost:6379"];
    const BULK_MAX_SIZE: usize = 2048;
    const TIMEOUT_SECS: u64 = 5;
}

impl super::Kind for Redis {
    const NAME: &'static str = "redis";
    type Config = RedisOutputConfig;
    fn enabled(c: &RedisOutputConfig) -> bool {
        c.enabled
    }
    fn validate(c: &RedisOutputConfig) -> Result<(), ConfigError> {
        c.network.validate("redis")?;
        if c.key.is_empty() {
            return Err(ConfigError::invalid(
                "output.redis.key",
                "must not be zero or empty",
            ));
        }
        if c.save_topology && c.expiration.get().as_secs() < 1 {
            return Err(ConfigError::invalid(
                "output.redis.expiration",
                "must be at least 1s (Redis expires keys by the second)",
            ));
        }
        c.selector()
            .and_then(|_| c.dialer())
            .map(|_| ())
            .map_err(|e| config_error(&e))
    }
    fn batching(c: &RedisOutputConfig) -> Option<Batching> {
        Some(c.network.batching())
    }
    fn build(c: &RedisOutputConfig) -> Result<Box<dyn Output>, OutputError> {
        Ok(Box::new(RedisOutput::new(c)?))
    }
    fn test(c: &RedisOutputConfig, s: &mut Steps<'_>) -> Result<(), CheckFailed> {
        check(c, s)
    }
    fn populated() -> RedisOutputConfig {
        let mut c = RedisOutputConfig {
            keys: vec![Rule {
                key: String::new(),
                when: Some(serde_json::json!({})),
            }],
            ..Default::default()
        };
        c.network.ssl = Some(Default::default());
        c
    }
}

/// An output error about a setting, as the configuration's error for that key.
pub(crate) fn config_error(e: &OutputError) -> ConfigError {
    let text = e.to_string();
    match text.split_once(": ") {
        Some((k, m)) if k.starts_with("output.") && !k.contains(' ') => ConfigError::invalid(k, m),
        _ => ConfigError::invalid("output", text),
    }
}

/// Error replies that say "later", not "never".
fn transient(message: &str) -> bool {
    const CODES: [&str; 9] = [
        "LOADING",
        "BUSY",
        "TRYAGAIN",
        "MASTERDOWN",
        "READONLY",
        "OOM",
        "MISCONF",
        "NOREPLICAS",
        "CLUSTERDOWN",
    ];
    let code = message.split_whitespace().next().unwrap_or("");
    CODES.contains(&code)
}

pub struct RedisOutput {
    dialer: Dialer,
    password: String,
    db: u32,
    command: &'static [u8],
    selector: Selector,
    pool: Pool<RedisConn>,
    buf: Vec<u8>,
    key_buf: String,
    /// The batch's index of each event sent, in order.
    sent: Vec<usize>,
    /// How many of `sent` each command carries, in order.
    commands: Vec<usize>,
}

impl RedisOutput {
    pub fn new(c: &RedisOutputConfig) -> Result<RedisOutput, OutputError> {
        Ok(RedisOutput {
            dialer: c.dialer()?,
            password: c.password.clone(),
            db: c.db,
            command: match c.datatype {
                Datatype::List => b"RPUSH",
                Datatype::Channel => b"PUBLISH",
            },
            selector: c.selector()?,
            pool: Pool::new(&c.network.hosts, 1, c.loadbalance),
            buf: Vec::with_capacity(1 << 20),
            key_buf: String::new(),
            sent: Vec::new(),
            commands: Vec::new(),
        })
    }

    /// Writes the commands in `buf` to host `i` and reads one reply per command sent.
    /// `Ok(false)`: the connection was lost after some replies, which stand.
    fn exchange(&mut self, i: usize, statuses: &mut [EventStatus]) -> Result<bool, OutputError> {
        let host = self.pool.host(i).to_string();
        let buf = std::mem::take(&mut self.buf);
        let sent = std::mem::take(&mut self.sent);
        let commands = std::mem::take(&mut self.commands);
        let (dialer, password, db) = (&self.dialer, &self.password, self.db);
        let r = (|| {
            let conn = self
                .pool
                .get(i, |h| RedisConn::open(dialer, h, password, db))?;
            if let Err(e) = conn.send(&buf) {
                return Err(conn.unavailable(&format!("writing the batch: {}", conn.explain(&e))));
            }
            let mut members = sent.iter();
            for (n, &k) in commands.iter().enumerate() {
                let status = match conn.reply() {
                    Ok(Reply::Error(m)) if transient(&m) => {
                        tracing::debug!(target: "redis", "{host}: {m}; the events are retried");
                        EventStatus::Retry
                    }
                    Ok(Reply::Error(m)) => {
                        EventStatus::Dropped(format!("{host} refused the event: {m}"))
                    }
                    Ok(_) => EventStatus::Acked,
                    Err(e) if n == 0 => {
                        return Err(conn
                            .unavailable(&format!("no reply to the batch: {}", conn.explain(&e))));
                    }
                    Err(e) => {
                        tracing::warn!(target: "redis",
                            "{host}: connection lost after {n} of {} replies ({}); the rest is sent again",
                            commands.len(), conn.explain(&e));
                        return Ok(false);
                    }
                };
                for &at in members.by_ref().take(k) {
                    statuses[at] = status.clone();
                }
            }
            Ok(true)
        })();
        self.buf = buf;
        self.sent = sent;
        self.commands = commands;
        r
    }
}

impl Output for RedisOutput {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn publish(&mut self, batch: &[Record]) -> Result<Outcome, OutputError> {
        let i = self.pool.next_slot();
        let mut statuses = vec![EventStatus::Retry; batch.len()];
        self.buf.clear();
        self.sent.clear();
        self.commands.clear();
        let mut bytes = 0u64;
        let bulk = self.command == b"RPUSH";
        // The run of events for `run_key` not yet encoded: `sent[run_start..]`, holding
        // `run_bytes` of events.
        let (mut run_key, mut run_start, mut run_bytes) = (String::new(), 0usize, 0usize);
        for (n, e) in batch.iter().enumerate() {
            let fields = RecordFields::new(e);
            if let Err(why) = self.selector.select_into(&fields, &mut self.key_buf) {
                statuses[n] = EventStatus::Dropped(why);
                continue;
            }
            let run_ends = self.sent.len() > run_start
                && (self.key_buf != run_key || run_bytes + e.len() > RUN_BYTES);
            if !bulk || run_ends {
                encode_run(
                    &mut self.buf,
                    self.command,
                    &run_key,
                    &self.sent[run_start..],
                    batch,
                    &mut self.commands,
                );
                run_start = self.sent.len();
                run_bytes = 0;
            }
            if self.sent.len() == run_start {
                run_key.clone_from(&self.key_buf);
            }
            bytes += e.len() as u64;
            run_bytes += e.len();
            self.sent.push(n);
        }
        encode_run(
            &mut self.buf,
            self.command,
            &run_key,
            &self.sent[run_start..],
            batch,
            &mut self.commands,
        );
        if self.sent.is_empty() {
            return Ok(Outcome::PerEvent(statuses));
        }
        match self.exchange(i, &mut statuses) {
            Ok(true) => {}
            // Lost mid-pipeline: what was answered stands, the rest is retried.
            Ok(false) => self.pool.close(i),
            Err(e) => {
                self.pool.failed(i);
                return Err(e);
            }
        }
        let acked = statuses
            .iter()
            .filter(|s| **s == EventStatus::Acked)
            .count();
        monitor::add(
            &METRICS.output_write_bytes,
            bytes * acked as u64 / self.sent.len().max(1) as u64,
        );
        if acked == batch.len() {
            Ok(Outcome::Acked)
        } else {
            Ok(Outcome::PerEvent(statuses))
        }
    }
}

/// The most event bytes one `RPUSH` carries. A longer run for one key is cut into
/// several commands of about this size, pipelined, so that the server stores the first
/// while the next is still on its way instead of reading a whole large batch before
/// starting; order within the key holds, since the commands run in turn.
const RUN_BYTES: usize = 128 * 1024;

/// Appends `command key event...` for the events of `batch` at `members` (nothing when
/// there are none), counting them in `commands`.
fn encode_run(
    buf: &mut Vec<u8>,
    command: &[u8],
    key: &str,
    members: &[usize],
    batch: &[Record],
    commands: &mut Vec<usize>,
) {
    match members {
        [] => return,
        [one] => resp::command(buf, &[command, key.as_bytes(), batch[*one].as_bytes()]),
        _ => {
            let mut args = Vec::with_capacity(members.len() + 2);
            args.extend([command, key.as_bytes()]);
            args.extend(members.iter().map(|&i| batch[i].as_bytes()));
            resp::command(buf, &args);
        }
    }
    commands.push(members.len());
}

/// `test output`: per host, DNS, TCP (or the proxy), TLS, then AUTH, SELECT and the type
/// of the key (a list key that holds a string would refuse every RPUSH).
fn check(c: &RedisOutputConfig, s: &mut Steps<'_>) -> Result<(), CheckFailed> {
    s.line("redis output");
    s.indent = 2;
    let dialer = c
        .dialer()
        .map_err(|e| super::check::from_output_error("output.redis", &e))?;
    let selector = c
        .selector()
        .map_err(|e| super::check::from_output_error("output.redis", &e))?;
    for h in &c.network.hosts {
        s.line(&format!("{h}:"));
        s.indent += 2;
        let stream = dialer.check(s, h)?;
        let mut conn = RedisConn::new(stream, h.clone(), dialer.clone());
        if c.password.is_empty() {
            s.step("PING", || match conn.call(&[b"PING"]) {
                Ok(Reply::Error(m)) if m.starts_with("NOAUTH") => Err(fail(
                    "output.redis.password",
                    format!("{h} wants a password: {m}"),
                )),
                Ok(r) => Ok(((), reply_text(&r))),
                Err(e) => Err(fail("output.redis.hosts", e.to_string())),
            })?;
        } else {
            s.step("AUTH", || {
                match conn.call(&[b"AUTH", c.password.as_bytes()]) {
                    Ok(Reply::Error(m)) => Err(fail(
                        "output.redis.password",
                        format!("{h} refused the password: {m}"),
                    )),
                    Ok(r) => Ok(((), reply_text(&r))),
                    Err(e) => Err(fail("output.redis.hosts", e.to_string())),
                }
            })?;
        }
        if c.db != 0 {
            let db = c.db.to_string();
            s.step(&format!("SELECT {db}"), || {
                match conn.call(&[b"SELECT", db.as_bytes()]) {
                    Ok(Reply::Error(m)) => Err(fail(
                        "output.redis.db",
                        format!("{h} refused database {db}: {m}"),
                    )),
                    Ok(r) => Ok(((), reply_text(&r))),
                    Err(e) => Err(fail("output.redis.hosts", e.to_string())),
                }
            })?;
        }
        match (c.datatype, selector.as_static()) {
            (Datatype::List, Some(key)) => {
                s.step(&format!("type of key {key}"), || {
                    match conn.call(&[b"TYPE", key.as_bytes()]) {
                        Ok(Reply::Simple(t)) if t == "list" || t == "none" => Ok((
                            (),
                            if t == "none" {
                                "not there yet, RPUSH creates it".to_string()
                            } else {
                                "list".to_string()
                            },
                        )),
                        Ok(Reply::Simple(t)) => Err(fail(
                            "output.redis.key",
                            format!(
                                "{key} holds a {t}, not a list: RPUSH would fail for every \
                                 event; choose another output.redis.key or delete that key"
                            ),
                        )),
                        Ok(r) => Err(fail("output.redis.hosts", reply_text(&r))),
                        Err(e) => Err(fail("output.redis.hosts", e.to_string())),
                    }
                })?;
            }
            (Datatype::List, None) => s.line(&format!(
                "key {}: depends on each event, not checked",
                c.key
            )),
            (Datatype::Channel, _) => s.line("datatype channel: PUBLISH needs no key check"),
        }
        s.indent -= 2;
    }
    Ok(())
}

fn reply_text(r: &Reply) -> String {
    match r {
        Reply::Simple(t) | Reply::Error(t) => t.clone(),
        Reply::Integer(n) => n.to_string(),
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
        Reply::Bulk(None) | Reply::Array(None) => "(nil)".into(),
        Reply::Array(Some(v)) => format!("{} elements", v.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_are_retried_others_are_not() {
        assert!(transient("LOADING Redis is loading the dataset in memory"));
        assert!(transient("OOM command not allowed"));
        assert!(!transient(
            "WRONGTYPE Operation against a key holding the wrong kind of value"
        ));
        assert!(!transient("ERR unknown command"));
    }

    #[test]
    fn defaults_are_beats() {
        let c = RedisOutputConfig::default();
        assert_eq!(c.key, "connbeat");
        assert_eq!(c.port, 6379);
        assert_eq!(c.db_topology, 1);
        assert_eq!(c.expiration, Duration::from_secs(15));
        assert_eq!(c.network.timeout, Duration::from_secs(5));
        assert_eq!(c.network.bulk_max_size, 2048);
    }
}

//! Packetbeat 1.x's `save_topology`: every agent shipping to Redis writes its name and
//! local addresses into the topology database (`db_topology`), as a hash `<name>` with
//! the field `ipaddrs` = `a,b,c` (Packetbeat's layout) that expires after `expiration`,
//! rewritten well before that; and reads every other agent's, so that a transaction can
//! name the agent that owns its server address (`server`) and its client address
//! (`client_server`).
//!
//! The address map is process-wide, as in Packetbeat (its publisher answered
//! `GetServerName`): one writer (the thread started here), many readers (the protocol
//! engines building transaction events).

use super::{RedisConn, RedisOutputConfig};
use crate::output::OutputError;
use crate::output::resp::Reply;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Address → agent name, from the topology database; None when `save_topology` is off.
static NAMES: RwLock<Option<HashMap<IpAddr, Arc<str>>>> = RwLock::new(None);

/// The name of the agent that owns `ip`, when the topology knows it.
pub fn name_of(ip: IpAddr) -> Option<Arc<str>> {
    NAMES.read().ok()?.as_ref()?.get(&ip).cloned()
}

/// The agents owning a transaction's client and server addresses, with one look.
pub fn agents(client: IpAddr, server: IpAddr) -> (Option<Arc<str>>, Option<Arc<str>>) {
    match NAMES.read() {
        Ok(n) => match n.as_ref() {
            Some(m) => (m.get(&client).cloned(), m.get(&server).cloned()),
            None => (None, None),
        },
        Err(_) => (None, None),
    }
}

/// Whether transactions should look their ends up (save_topology is on).
pub fn enabled() -> bool {
    NAMES.read().map(|n| n.is_some()).unwrap_or(false)
}

/// Replaces the whole map (tests, and the refresh thread).
pub fn install(map: HashMap<IpAddr, Arc<str>>) {
    if let Ok(mut n) = NAMES.write() {
        *n = Some(map);
    }
}

/// The thread that keeps this agent's entry fresh and the map current; stops when
/// dropped.
pub struct Topology {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts publishing `name` with `ips` and reading the others', every third of
/// `expiration` (at least every second).
pub fn start(c: &RedisOutputConfig, name: &str, ips: Vec<String>) -> Result<Topology, OutputError> {
    let dialer = c.dialer()?;
    install(HashMap::new());
    let stop = Arc::new(AtomicBool::new(false));
    let (stop2, name, hosts, password, db) = (
        stop.clone(),
        name.to_string(),
        c.network.hosts.clone(),
        c.password.clone(),
        c.db_topology,
    );
    let expiration = c.expiration.get();
    let period = (expiration / 3).max(Duration::from_secs(1));
    let thread = std::thread::Builder::new()
        .name("topology".into())
        .spawn(move || {
            let mut conn: Option<RedisConn> = None;
            let mut host = 0usize;
            let mut last_error = String::new();
            while !stop2.load(Ordering::Relaxed) {
                if conn.is_none() {
                    match RedisConn::open(&dialer, &hosts[host], &password, db) {
                        Ok(c) => conn = Some(c),
                        Err(e) => {
                            host = (host + 1) % hosts.len();
                            let text = e.to_string();
                            if text != last_error {
                                tracing::warn!(target: "redis", "topology: {text}");
                                last_error = text;
                            }
                        }
                    }
                }
                if let Some(c) = conn.as_mut() {
                    match refresh(c, &name, &ips, expiration) {
                        Ok(map) => {
                            tracing::debug!(target: "redis", "topology: {} addresses of other agents", map.len());
                            install(map);
                            last_error.clear();
                        }
                        Err(e) => {
                            tracing::warn!(target: "redis", "topology: {e}");
                            conn = None;
                        }
                    }
                }
                let until = Instant::now() + period;
                while Instant::now() < until && !stop2.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
        .map_err(|e| OutputError::Config(format!("output.redis.save_topology: {e}")))?;
    Ok(Topology {
        stop,
        thread: Some(thread),
    })
}

/// Writes this agent's entry, reads everyone's.
fn refresh(
    c: &mut RedisConn,
    name: &str,
    ips: &[String],
    expiration: Duration,
) -> Result<HashMap<IpAddr, Arc<str>>, OutputError> {
    let joined = ips.join(",");
    let secs = expiration.as_secs().max(1).to_string();
    for cmd in [
        &[&b"HSET"[..], name.as_bytes(), b"ipaddrs", joined.as_bytes()][..],
        &[b"EXPIRE", name.as_bytes(), secs.as_bytes()],
    ] {
        if let Reply::Error(m) = c.call(cmd)? {
            return Err(c.unavailable(&format!("writing the topology entry {name}: {m}")));
        }
    }
    let names = match c.call(&[b"KEYS", b"*"])? {
        Reply::Array(Some(v)) => v,
        other => {
            return Err(c.unavailable(&format!("KEYS * answered {other:?}")));
        }
    };
    let mut map = HashMap::new();
    for n in names {
        let Reply::Bulk(Some(agent)) = n else {
            continue;
        };
        let Reply::Bulk(Some(addrs)) = c.call(&[b"HGET", &agent, b"ipaddrs"])? else {
            continue; // expired meanwhile, or not an agent's entry
        };
        let agent: Arc<str> = String::from_utf8_lossy(&agent).into();
        for a in String::from_utf8_lossy(&addrs).split(',') {
            if let Ok(ip) = a.trim().parse::<IpAddr>() {
                map.insert(ip, agent.clone());
            }
        }
    }
    Ok(map)
}

//! Checks that need more than a type: ranges, one-of choices, and the Beats rule that
//! exactly one output is enabled. Each failure names the key.

use super::error::ConfigError;
use super::model::{Config, SslConfig};

/// The protocols deep inspection knows.
pub const PROTOCOLS: [&str; 6] = ["http", "dns", "redis", "mysql", "pgsql", "tls"];

/// The names of the outputs that are present and enabled.
pub fn enabled_outputs(c: &Config) -> Vec<&'static str> {
    let o = &c.output;
    let mut names = Vec::new();
    if o.console.as_ref().is_some_and(|x| x.enabled) {
        names.push("console");
    }
    if o.file.as_ref().is_some_and(|x| x.enabled) {
        names.push("file");
    }
    if o.kafka.as_ref().is_some_and(|x| x.enabled) {
        names.push("kafka");
    }
    if o.elasticsearch.as_ref().is_some_and(|x| x.enabled) {
        names.push("elasticsearch");
    }
    if o.http.as_ref().is_some_and(|x| x.enabled) {
        names.push("http");
    }
    names
}

pub fn validate(c: &Config) -> Result<(), ConfigError> {
    let outputs = enabled_outputs(c);
    match outputs.as_slice() {
        [] => {
            return Err(ConfigError::invalid(
                "output",
                "no output is enabled; enable exactly one of output.console, output.file, \
                 output.kafka, output.elasticsearch, output.http",
            ));
        }
        [_] => {}
        many => {
            let list: Vec<String> = many.iter().map(|n| format!("output.{n}")).collect();
            return Err(ConfigError::invalid(
                "output",
                format!(
                    "only one output can be enabled at a time, but {} are; set enabled: false on all but one",
                    list.join(" and ")
                ),
            ));
        }
    }
    let cb = &c.connbeat;
    positive("connbeat.poll_interval", cb.poll_interval.get().is_zero())?;
    positive("connbeat.max_connections", cb.max_connections == 0)?;
    positive("connbeat.max_processes", cb.max_processes == 0)?;
    positive("queue.mem.events", c.queue.mem.events == 0)?;
    positive("shutdown_timeout", c.shutdown_timeout.get().is_zero())?;
    if cb.interfaces.sort_window >= cb.transaction_timeout {
        return Err(ConfigError::invalid(
            "connbeat.interfaces.sort_window",
            format!(
                "{} must be shorter than connbeat.transaction_timeout ({}); 100ms is plenty",
                cb.interfaces.sort_window, cb.transaction_timeout
            ),
        ));
    }
    if !c.queue.disk.path.is_empty() && c.queue.disk.max_size.0 < 64 * 1024 {
        return Err(ConfigError::invalid(
            "queue.disk.max_size",
            format!(
                "{} is too small for a disk queue; use at least 64KiB",
                c.queue.disk.max_size
            ),
        ));
    }
    for (key, b) in [
        (
            "output.kafka.backoff",
            c.output.kafka.as_ref().map(|o| &o.backoff),
        ),
        (
            "output.elasticsearch.backoff",
            c.output.elasticsearch.as_ref().map(|o| &o.backoff),
        ),
        (
            "output.http.backoff",
            c.output.http.as_ref().map(|o| &o.backoff),
        ),
    ] {
        if let Some(b) = b {
            positive(&format!("{key}.init"), b.init.get().is_zero())?;
            if b.max < b.init {
                return Err(ConfigError::invalid(
                    &format!("{key}.max"),
                    format!("{} is shorter than {key}.init ({})", b.max, b.init),
                ));
            }
        }
    }
    one_of(
        "logging.level",
        &c.logging.level,
        &["error", "warning", "warn", "info", "debug"],
    )?;
    for (i, p) in cb.protocols.iter().enumerate() {
        let key = format!("connbeat.protocols.{i}");
        one_of(&format!("{key}.type"), &p.kind, &PROTOCOLS)?;
        if p.ports.is_empty() {
            return Err(ConfigError::invalid(
                &format!("{key}.ports"),
                format!("protocol {} needs at least one port", p.kind),
            ));
        }
    }
    if let Some(f) = &c.output.file {
        file_permissions(&f.permissions)
            .map_err(|m| ConfigError::invalid("output.file.permissions", m))?;
        positive("output.file.number_of_files", f.number_of_files == 0)?;
        positive("output.file.rotate_every_kb", f.rotate_every_kb == 0)?;
        if f.filename.is_empty() || f.filename.contains('/') {
            return Err(ConfigError::invalid(
                "output.file.filename",
                "must be a plain file name (the directory goes in output.file.path)",
            ));
        }
    }
    if let Some(k) = &c.output.kafka {
        one_of(
            "output.kafka.compression",
            &k.compression,
            &["none", "gzip", "snappy", "lz4", "zstd"],
        )?;
        if ![-1, 0, 1].contains(&k.required_acks) {
            return Err(ConfigError::invalid(
                "output.kafka.required_acks",
                format!(
                    "{} is not one of -1 (all), 0 (none), 1 (leader)",
                    k.required_acks
                ),
            ));
        }
        positive("output.kafka.hosts", k.hosts.is_empty())?;
        positive("output.kafka.topic", k.topic.is_empty())?;
        ssl("output.kafka.ssl", k.ssl.as_ref())?;
    }
    if let Some(e) = &c.output.elasticsearch {
        positive("output.elasticsearch.hosts", e.hosts.is_empty())?;
        ssl("output.elasticsearch.ssl", e.ssl.as_ref())?;
    }
    if let Some(h) = &c.output.http {
        positive("output.http.hosts", h.hosts.is_empty())?;
        one_of(
            "output.http.format",
            &h.format,
            &["json_lines", "json_array"],
        )?;
        if h.compression_level > 9 {
            return Err(ConfigError::invalid(
                "output.http.compression_level",
                format!("{} is not between 0 (off) and 9", h.compression_level),
            ));
        }
        ssl("output.http.ssl", h.ssl.as_ref())?;
    }
    Ok(())
}

/// Parses an octal permission string such as "0600".
pub fn file_permissions(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{text:?} is not an octal file mode such as \"0600\""))
}

fn positive(key: &str, bad: bool) -> Result<(), ConfigError> {
    if bad {
        Err(ConfigError::invalid(key, "must not be zero or empty"))
    } else {
        Ok(())
    }
}

fn one_of(key: &str, value: &str, allowed: &[&str]) -> Result<(), ConfigError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("{value:?} is not one of {}", allowed.join(", ")),
        ))
    }
}

fn ssl(key: &str, s: Option<&SslConfig>) -> Result<(), ConfigError> {
    if let Some(s) = s {
        one_of(
            &format!("{key}.verification_mode"),
            &s.verification_mode,
            &["full", "strict", "certificate", "none"],
        )?;
    }
    Ok(())
}

//! The periodic "Non-zero metrics in the last 30s" log line: only the counters that moved.

use super::{METRICS, is_gauge};
use std::collections::HashMap;
use std::time::Duration;

/// Remembers the last snapshot and formats the difference.
#[derive(Default)]
pub struct Reporter {
    last: HashMap<&'static str, u64>,
}

impl Reporter {
    /// `name=delta` for every counter that changed since the last call, gauges by value.
    pub fn line(&mut self) -> String {
        let mut parts = Vec::new();
        for (name, value) in METRICS.snapshot() {
            let prev = self.last.insert(name, value).unwrap_or(0);
            if is_gauge(name) {
                if value != 0 && value != prev {
                    parts.push(format!("{name}={value}"));
                }
            } else if value != prev {
                parts.push(format!("{name}={}", value.saturating_sub(prev)));
            }
        }
        parts.join(" ")
    }
}

/// Logs the line every `period` until `stop` is set.
pub fn spawn(period: Duration, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    std::thread::Builder::new()
        .name("metrics-log".into())
        .spawn(move || {
            let mut r = Reporter::default();
            let step = Duration::from_millis(200);
            let mut waited = Duration::ZERO;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(step);
                waited += step;
                if waited >= period {
                    waited = Duration::ZERO;
                    let line = r.line();
                    if line.is_empty() {
                        tracing::info!(target: "monitoring", "No non-zero metrics in the last {}", humantime::format_duration(period));
                    } else {
                        tracing::info!(target: "monitoring", "Non-zero metrics in the last {}: {line}", humantime::format_duration(period));
                    }
                }
            }
        })
        .expect("spawn metrics thread");
}

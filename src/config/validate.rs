//! Checks that need more than a type: ranges, and the Beats rule that
//! exactly one output is enabled. Each failure names the key.

use super::error::ConfigError;
use super::model::Config;

/// The names of the outputs that are present and enabled.
pub fn enabled_outputs(c: &Config) -> Vec<&'static str> {
    c.output.enabled().iter().map(|s| s.name()).collect()
}

pub fn validate(c: &Config) -> Result<(), ConfigError> {
    let outputs = enabled_outputs(c);
    match outputs.as_slice() {
        // A file for `connbeat topology` alone names its topic under topology.kafka.
        [] if c.topology.kafka.is_some() => {}
        [] => {
            return Err(ConfigError::invalid(
                "output",
                format!(
                    "no output is enabled; enable exactly one of {}",
                    crate::output::NAMES
                        .iter()
                        .map(|n| format!("output.{n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
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
    if !(1..=1 << 22).contains(&cb.connect_recorder_entries) {
        return Err(ConfigError::invalid(
            "connbeat.connect_recorder_entries",
            format!(
                "{} is out of range; use 1 to 4194304",
                cb.connect_recorder_entries
            ),
        ));
    }
    positive("queue.mem.events", c.queue.mem.events == 0)?;
    positive("shutdown_timeout", c.shutdown_timeout.get().is_zero())?;
    if !(1..=64).contains(&cb.interfaces.workers) {
        return Err(ConfigError::invalid(
            "connbeat.interfaces.workers",
            format!("{} is out of range; use 1 to 64", cb.interfaces.workers),
        ));
    }
    if cb.interfaces.workers > 1 && cb.interfaces.capture_type == super::CaptureType::Pcap {
        return Err(ConfigError::invalid(
            "connbeat.interfaces.workers",
            format!(
                "{} workers need connbeat.interfaces.type: af_packet (pcap decodes on one thread)",
                cb.interfaces.workers
            ),
        ));
    }
    positive(
        "connbeat.interfaces.buffer_size_mb",
        cb.interfaces.buffer_size_mb == 0,
    )?;
    if cb.interfaces.sort_window >= cb.transaction_timeout {
        return Err(ConfigError::invalid(
            "connbeat.interfaces.sort_window",
            format!(
                "{} must be shorter than connbeat.transaction_timeout ({}); 100ms is plenty",
                cb.interfaces.sort_window, cb.transaction_timeout
            ),
        ));
    }
    if let Some(f) = &cb.flows {
        positive("connbeat.flows.max_flows", f.max_flows == 0)?;
        if f.timeout.get() < std::time::Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "connbeat.flows.timeout",
                format!("{} is too short; use 1s or more", f.timeout),
            ));
        }
        if let Some(p) = f.period.0
            && p.get() < std::time::Duration::from_secs(1)
        {
            return Err(ConfigError::invalid(
                "connbeat.flows.period",
                format!("{p} is too short; use 1s or more, or -1s for final events only"),
            ));
        }
    }
    let t = &c.topology;
    positive("topology.max_nodes", t.max_nodes == 0)?;
    positive("topology.max_edges", t.max_edges == 0)?;
    positive("topology.max_flows", t.max_flows == 0)?;
    positive("topology.window", t.window.get().is_zero())?;
    positive(
        "topology.progress_interval",
        t.progress_interval.get().is_zero(),
    )?;
    if !c.queue.disk.path.is_empty() && c.queue.disk.max_size.0 < 64 * 1024 {
        return Err(ConfigError::invalid(
            "queue.disk.max_size",
            format!(
                "{} is too small for a disk queue; use at least 64KiB",
                c.queue.disk.max_size
            ),
        ));
    }
    for section in c.output.sections() {
        section.validate()?;
    }
    for (i, p) in cb.protocols.iter().enumerate() {
        let key = format!("connbeat.protocols.{i}");
        if p.uses_ports() && p.common().ports.is_empty() {
            return Err(ConfigError::invalid(
                &format!("{key}.ports"),
                format!("protocol {} needs at least one port", p.name()),
            ));
        }
        if !p.uses_ports() && !p.common().ports.is_empty() {
            return Err(ConfigError::invalid(
                &format!("{key}.ports"),
                format!(
                    "protocol {} takes no ports: every one of its messages is inspected",
                    p.name()
                ),
            ));
        }
    }
    for (i, n) in cb.interfaces.internal_networks.iter().enumerate() {
        if crate::processors::parse_net(n).is_none() {
            return Err(ConfigError::invalid(
                &format!("connbeat.interfaces.internal_networks.{i}"),
                format!(
                    "{n:?} is neither a CIDR block, an address nor a named range \
                     (private, loopback, unicast, ...)"
                ),
            ));
        }
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
#[cfg(test)]
mod tests {
    use crate::config::{ConnectRecorderMode, from_yaml_str};

    #[test]
    fn connect_recorder_settings_are_read_and_bounded() {
        let load = |yaml: &str| from_yaml_str(yaml, &[], &|_| None);
        let c = load("output.console.enabled: true\n").unwrap();
        assert_eq!(c.connbeat.connect_recorder, ConnectRecorderMode::Auto);
        assert_eq!(c.connbeat.connect_recorder_entries, 16_384);
        let c = load(
            "output.console.enabled: true\nconnbeat.connect_recorder: off\n\
             connbeat.connect_recorder_entries: 100\n",
        )
        .unwrap();
        assert_eq!(c.connbeat.connect_recorder, ConnectRecorderMode::Off);
        assert_eq!(c.connbeat.connect_recorder_entries, 100);
        for bad in ["0", "4194305"] {
            let e = load(&format!(
                "output.console.enabled: true\nconnbeat.connect_recorder_entries: {bad}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(e.contains("connbeat.connect_recorder_entries"), "{e}");
        }
    }
}

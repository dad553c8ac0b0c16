//! Packetbeat's own key names in a `connbeat.yml`: a Packetbeat 8 file's
//! `packetbeat.interfaces`, `packetbeat.protocols`, `packetbeat.flows` and
//! `packetbeat.procs.enabled` are read as the `connbeat.*` keys they stand for (with a note
//! for the startup log), and a Packetbeat 1.x file is refused with the current name of each
//! key it uses, rather than with a list of unknown keys.

use super::error::ConfigError;
use serde_json::{Map, Value};

/// `packetbeat.X` read as `connbeat.X`.
const SYNONYMS: [&str; 3] = ["interfaces", "protocols", "flows"];

/// Rewrites Packetbeat 8 keys to connbeat's, returning the notes to log at startup. A key
/// set under both names is an error naming both.
pub fn rename(tree: &mut Value, notes: &mut Vec<String>) -> Result<(), ConfigError> {
    let Some(root) = tree.as_object_mut() else {
        return Ok(());
    };
    let Some(Value::Object(mut pb)) = root.remove("packetbeat") else {
        if let Some(other) = root.get("packetbeat") {
            return Err(ConfigError::invalid(
                "packetbeat",
                format!("expected a mapping of settings, got {other}"),
            ));
        }
        return Ok(());
    };
    let connbeat = root
        .entry("connbeat")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(connbeat) = connbeat.as_object_mut() else {
        return Ok(()); // typing reports `connbeat` itself
    };
    let mut read = Vec::new();
    for key in SYNONYMS {
        if let Some(v) = pb.remove(key) {
            move_key(connbeat, &format!("packetbeat.{key}"), key, v)?;
            read.push(format!("packetbeat.{key} as connbeat.{key}"));
        }
    }
    if let Some(procs) = pb.remove("procs") {
        let mut procs = match procs {
            Value::Object(m) => m,
            other => {
                return Err(ConfigError::invalid(
                    "packetbeat.procs",
                    format!("expected a mapping such as {{enabled: true}}, got {other}"),
                ));
            }
        };
        if let Some(v) = procs.remove("enabled") {
            move_key(
                connbeat,
                "packetbeat.procs.enabled",
                "expose_process_info",
                v,
            )?;
            read.push("packetbeat.procs.enabled as connbeat.expose_process_info".into());
        }
        if procs.remove("monitored").is_some() {
            notes.push(
                "packetbeat.procs.monitored is ignored: connbeat finds the process of every \
                 connection by itself, without a list of processes to watch"
                    .into(),
            );
        }
        if let Some(k) = procs.keys().next() {
            return Err(ConfigError::UnknownKey {
                key: format!("packetbeat.procs.{k}"),
                suggestion: None,
            });
        }
    }
    if let Some(k) = pb.keys().next() {
        return Err(ConfigError::UnknownKey {
            key: format!("packetbeat.{k}"),
            suggestion: Some(format!("connbeat.{k}")).filter(|c| {
                super::known_keys::all()
                    .iter()
                    .any(|known| known == c || known.starts_with(&format!("{c}.")))
            }),
        });
    }
    if !read.is_empty() {
        notes.push(format!("Packetbeat keys: reading {}", read.join(", ")));
    }
    Ok(())
}

fn move_key(
    connbeat: &mut Map<String, Value>,
    from: &str,
    to: &str,
    v: Value,
) -> Result<(), ConfigError> {
    if connbeat.contains_key(to) {
        return Err(ConfigError::invalid(
            from,
            format!("both {from} and connbeat.{to} are set; keep one of them"),
        ));
    }
    connbeat.insert(to.into(), v);
    Ok(())
}

/// Refuses a Packetbeat 1.x file: one line per 1.x key, naming what replaced it.
pub fn refuse_1x(tree: &Value) -> Result<(), ConfigError> {
    let mut lines = Vec::new();
    let get = |path: &[&str]| {
        path.iter()
            .try_fold(tree, |v, k| v.as_object().and_then(|m| m.get(*k)))
    };
    if get(&["shipper"]).is_some() {
        lines.push(
            "`shipper` is Packetbeat 1.x: its `name`, `tags` and `refresh_topology_freq` are \
             the top-level `name` and `tags` now (topology needs no refresh)",
        );
    }
    if get(&["interfaces"]).is_some() {
        lines.push(
            "`interfaces` is Packetbeat 1.x: write `connbeat.interfaces` (or \
             `packetbeat.interfaces`)",
        );
    }
    if get(&["protocols"]).is_some_and(Value::is_object) {
        lines.push(
            "`protocols` as a map is Packetbeat 1.x: write a list under `connbeat.protocols` \
             (or `packetbeat.protocols`), one entry per protocol named by `type`, e.g. \
             `- {type: http, ports: [80]}`",
        );
    }
    if get(&["procs"]).is_some() {
        lines.push(
            "`procs` is Packetbeat 1.x: write `connbeat.expose_process_info` (or \
             `packetbeat.procs.enabled`); processes need no `monitored` list",
        );
    }
    if get(&["output", "elasticsearch", "host"]).is_some() {
        lines.push(
            "`output.elasticsearch.host` is Packetbeat 1.x: write `output.elasticsearch.hosts`, \
             a list of URLs such as [\"http://localhost:9200\"]",
        );
    }
    if lines.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Legacy(
            lines.into_iter().map(String::from).collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigError, loader::parse};

    fn load(text: &str) -> Result<(crate::config::Config, Vec<String>), ConfigError> {
        parse(&format!("output.console: {{}}\n{text}"), &[], &|_| None)
    }

    #[test]
    fn packetbeat_keys_are_read_as_connbeat_keys_with_one_note() {
        let (c, notes) = load(
            "packetbeat.interfaces.device: lo\npacketbeat.protocols:\n  - {type: dns, ports: [53]}\n\
             packetbeat.procs: {enabled: false, monitored: [{process: mysqld, cmdline_grep: mysqld}]}",
        )
        .unwrap();
        assert_eq!(c.connbeat.interfaces.device, "lo");
        assert_eq!(c.connbeat.protocols[0].name(), "dns");
        assert!(!c.connbeat.expose_process_info);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[0].contains("packetbeat.procs.monitored is ignored"),
            "{notes:?}"
        );
        assert_eq!(
            notes[1],
            "Packetbeat keys: reading packetbeat.interfaces as connbeat.interfaces, \
             packetbeat.protocols as connbeat.protocols, packetbeat.procs.enabled as \
             connbeat.expose_process_info"
        );
    }

    #[test]
    fn both_names_set_is_an_error_naming_both() {
        let e = load("packetbeat.interfaces.device: lo\nconnbeat.interfaces.device: eth0")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("packetbeat.interfaces") && e.contains("connbeat.interfaces"),
            "{e}"
        );
        let e = load("packetbeat.procs.enabled: true\nconnbeat.expose_process_info: false")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("packetbeat.procs.enabled") && e.contains("connbeat.expose_process_info"),
            "{e}"
        );
        let e = load("packetbeat.interfaces.devise: lo")
            .unwrap_err()
            .to_string();
        assert!(e.contains("connbeat.interfaces.devise"), "{e}");
    }

    #[test]
    fn a_packetbeat_1_file_is_refused_key_by_key() {
        let text = "shipper: {name: edge}\ninterfaces: {device: any}\nprotocols:\n  http: {ports: [80]}\n\
                    output:\n  elasticsearch: {host: 'localhost:9200'}\n";
        let e = crate::config::from_yaml_str(text, &[], &|_| None)
            .unwrap_err()
            .to_string();
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 5, "{e}");
        for key in [
            "`shipper`",
            "`interfaces`",
            "`protocols` as a map",
            "`output.elasticsearch.host`",
        ] {
            assert!(lines.iter().any(|l| l.contains(key)), "{key}: {e}");
        }
        assert!(e.contains("connbeat.protocols"), "{e}");
        assert!(e.contains("output.elasticsearch.hosts"), "{e}");
    }
}

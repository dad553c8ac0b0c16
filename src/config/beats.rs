//! Settings of Beats (and protocols of Packetbeat) that mean nothing to connbeat, accepted
//! so that a Beats or Packetbeat file loads: each is taken out of the tree before typing,
//! with one warning line for the startup log (and `test config`).

use super::error::ConfigError;
use serde_json::Value;

/// (dotted key, depth at which each key gets its own warning, why it has no effect).
const BEATS_ONLY: [(&str, usize, &str); 7] = [
    (
        "setup.template",
        3,
        "connbeat's template is its own (`connbeat export template`); only enabled, name, \
         pattern and overwrite are read",
    ),
    (
        "setup",
        2,
        "connbeat sets up no Kibana, dashboards or index lifecycle",
    ),
    (
        "cloud",
        2,
        "Elastic Cloud ids are not read; set output.elasticsearch.hosts",
    ),
    ("monitoring", 1, "self-monitoring is the http.* endpoint"),
    ("instrumentation", 1, "connbeat has no APM instrumentation"),
    ("migration", 1, "there is nothing to migrate"),
    (
        "output.elasticsearch.preset",
        3,
        "set bulk_max_size and the queue yourself",
    ),
];

/// Packetbeat settings (after `packetbeat.*` became `connbeat.*`) that this build does not
/// implement yet: set aside while the configuration model does not know them, read as
/// soon as it does.
const NOT_YET: [(&str, &str); 0] = [];

/// Packetbeat 8's protocols: an entry of one that connbeat does not decode is set aside
/// (with a warning) rather than refused.
const PACKETBEAT_PROTOCOLS: [&str; 15] = [
    "amqp",
    "cassandra",
    "dhcpv4",
    "dns",
    "http",
    "icmp",
    "memcache",
    "mongodb",
    "mysql",
    "nfs",
    "pgsql",
    "redis",
    "sip",
    "thrift",
    "tls",
];

/// What was set aside: the warnings, and the indices of the `connbeat.protocols` entries
/// taken out (so that errors about later entries still name their place in the file).
#[derive(Debug, Default)]
pub struct SetAside {
    pub warnings: Vec<String>,
    removed_protocols: Vec<usize>,
}

/// The keys of `setup.template` that the model reads.
const TEMPLATE_KEYS: [&str; 4] = ["enabled", "name", "pattern", "overwrite"];

/// The value at a dotted `path`, if it is there.
fn path_ref<'a>(tree: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(tree, |v, p| v.get(p))
}

/// Removes the value at a dotted `path` of the tree and returns it, if it is there.
fn take_path(tree: &mut Value, path: &str) -> Option<Value> {
    let (parents, last) = path.rsplit_once('.').unwrap_or(("", path));
    let mut cur = tree.as_object_mut();
    for p in parents.split('.').filter(|p| !p.is_empty()) {
        cur = cur
            .and_then(|m| m.get_mut(p))
            .and_then(Value::as_object_mut);
    }
    cur.and_then(|m| m.remove(last))
}

/// Takes the Beats-only settings and the entries of protocols connbeat does not decode out
/// of the tree (after `packetbeat.*` became `connbeat.*`).
pub fn set_aside(tree: &mut Value) -> SetAside {
    let mut out = SetAside::default();
    // The four keys of setup.template that connbeat reads survive the Beats-only sweep.
    let mut template = serde_json::Map::new();
    for k in TEMPLATE_KEYS {
        if let Some(v) = take_path(tree, &format!("setup.template.{k}")) {
            template.insert(k.to_string(), v);
        }
    }
    // An emptied setup.template (or setup) is no warning.
    for p in ["setup.template", "setup"] {
        if let Some(Value::Object(m)) = path_ref(tree, p)
            && m.is_empty()
        {
            take_path(tree, p);
        }
    }
    for (path, depth, why) in BEATS_ONLY {
        let Some(removed) = take_path(tree, path) else {
            continue;
        };
        let mut keys = Vec::new();
        keys_to_depth(&removed, path, depth - path.split('.').count(), &mut keys);
        for k in keys {
            out.warnings
                .push(format!("{k}: accepted and ignored: {why}"));
        }
    }
    if !template.is_empty()
        && let Some(root) = tree.as_object_mut()
    {
        root.insert(
            "setup".into(),
            serde_json::json!({"template": Value::Object(template)}),
        );
    }
    for (path, why) in NOT_YET {
        let is_known = super::known_keys::all()
            .iter()
            .any(|k| k == path || k.starts_with(&format!("{path}.")));
        if is_known {
            continue;
        }
        if take_path(tree, path).is_some() {
            out.warnings
                .push(format!("{path}: accepted and ignored: {why}"));
        }
    }
    let known = crate::inspect::proto::NAMES;
    if let Some(Value::Array(list)) = tree
        .get_mut("connbeat")
        .and_then(|c| c.get_mut("protocols"))
    {
        let mut i = 0;
        list.retain(|entry| {
            let kind = entry.get("type").and_then(Value::as_str).unwrap_or("");
            let drop = PACKETBEAT_PROTOCOLS.contains(&kind) && !known.contains(&kind);
            if drop {
                out.warnings.push(format!(
                    "connbeat.protocols.{i}: accepted and ignored: connbeat does not decode {kind} (a Packetbeat protocol)"
                ));
                out.removed_protocols.push(i);
            }
            i += 1;
            !drop
        });
    }
    out
}

impl SetAside {
    /// An error about `connbeat.protocols.N…` of the typed tree, renamed to the entry's
    /// index in the file.
    pub fn restore_index(&self, e: ConfigError) -> ConfigError {
        if self.removed_protocols.is_empty() {
            return e;
        }
        // `connbeat.protocols.N…` (validation) or `connbeat.protocols[N]…` (typing).
        let fix = |key: String| -> String {
            let Some(rest) = key.strip_prefix("connbeat.protocols") else {
                return key;
            };
            let (open, close) = if rest.starts_with('[') {
                ("[", "]")
            } else {
                (".", "")
            };
            let Some(rest) = rest.strip_prefix(open) else {
                return key;
            };
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let Ok(n) = rest[..end].parse::<usize>() else {
                return key;
            };
            // The n-th entry kept is the one after n kept ones in the file.
            let orig = (0..)
                .filter(|i| !self.removed_protocols.contains(i))
                .nth(n)
                .unwrap_or(n);
            format!(
                "connbeat.protocols{open}{orig}{close}{}",
                &rest[end + close.len()..]
            )
        };
        match e {
            ConfigError::UnknownKey { key, suggestion } => ConfigError::UnknownKey {
                key: fix(key),
                suggestion: suggestion.map(fix),
            },
            ConfigError::Invalid { key, message } => ConfigError::Invalid {
                key: fix(key),
                message,
            },
            other => other,
        }
    }
}

fn keys_to_depth(v: &Value, at: &str, depth: usize, out: &mut Vec<String>) {
    match v {
        Value::Object(m) if depth > 0 && !m.is_empty() => {
            for (k, child) in m {
                keys_to_depth(child, &format!("{at}.{k}"), depth - 1, out);
            }
        }
        _ => out.push(at.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::from_yaml_str;

    #[test]
    fn errors_after_a_set_aside_entry_name_its_place_in_the_file() {
        let e = from_yaml_str(
            "output.console: {}\nconnbeat.protocols:\n  - {type: icmp}\n  - {type: amqp, ports: [5672]}\n  - {type: http}\n",
            &[],
            &|_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("connbeat.protocols.2.ports"), "{e}");
        let e = from_yaml_str(
            "output.console: {}\nsetup.kibana: {host: x}\nconnbeat.protocols:\n  - {type: sip, ports: [5060]}\n  - {type: redis, ports: [1], send_headers: [a]}\n",
            &[],
            &|_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("connbeat.protocols[1]"), "{e}");
    }

    #[test]
    fn setup_template_keeps_its_four_keys_and_sets_the_rest_aside() {
        let mut tree = serde_json::json!({
            "setup": {
                "template": {"enabled": false, "name": "x", "pattern": "x-*", "overwrite": true,
                             "settings": {"index": {"number_of_shards": 1}}},
                "kibana": {"host": "k"}
            }
        });
        let aside = super::set_aside(&mut tree);
        assert_eq!(
            tree,
            serde_json::json!({"setup": {"template": {
                "enabled": false, "name": "x", "pattern": "x-*", "overwrite": true}}})
        );
        assert_eq!(aside.warnings.len(), 2, "{:?}", aside.warnings);
        assert!(aside.warnings[0].starts_with("setup.template.settings: accepted and ignored"));
        assert!(aside.warnings[1].starts_with("setup.kibana: accepted and ignored"));
        let c = from_yaml_str(
            "output.console: {}\nsetup.template.name: mine\n",
            &[],
            &|_| None,
        )
        .unwrap();
        assert_eq!(c.setup.template.name, "mine");
        assert!(c.setup.template.enabled);
    }
}

//! The set of keys the model knows, derived from the model itself (a fully populated
//! default serialized to JSON), so suggestions for misspelt keys never drift from the code.

use super::model::{Config, OutputsConfig, ProtocolConfig};
use serde_json::Value;
use std::sync::OnceLock;

/// Every known dotted key, array indices left out.
pub fn all() -> &'static [String] {
    static KEYS: OnceLock<Vec<String>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut c = Config {
            output: OutputsConfig::populated(),
            ..Config::default()
        };
        c.connbeat.protocols = ProtocolConfig::defaults();
        c.connbeat.flows = Some(super::model::FlowsConfig::default());
        c.topology.kafka = c.output.kafka.clone();
        let tree = serde_json::to_value(&c).expect("config serializes");
        let mut keys = Vec::new();
        flatten(&tree, "", &mut keys);
        keys
    })
}

fn flatten(v: &Value, at: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, child) in map {
                let p = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                flatten(child, &p, out);
            }
        }
        Value::Array(items) if items.first().is_some_and(Value::is_object) => {
            out.push(at.to_string());
            // Entries of different kinds (protocols) have different keys: all of them.
            for item in items {
                flatten(item, at, out);
            }
            out.sort();
            out.dedup();
        }
        _ => out.push(at.to_string()),
    }
}

/// Leaves out array indices: `connbeat.protocols.0.ports` → `connbeat.protocols.ports`.
fn without_indices(key: &str) -> String {
    key.split('.')
        .filter(|p| p.parse::<usize>().is_err())
        .collect::<Vec<_>>()
        .join(".")
}

/// The known key closest to `key`, when one is close enough to be a likely typo.
pub fn closest(key: &str) -> Option<String> {
    let wanted = without_indices(key);
    all()
        .iter()
        .map(|k| (strsim::jaro_winkler(&wanted, k), k))
        .filter(|(score, _)| *score > 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k.clone())
}

#[cfg(test)]
mod tests {
    #[test]
    fn knows_nested_and_list_keys() {
        let keys = super::all();
        assert!(keys.iter().any(|k| k == "connbeat.poll_interval"));
        assert!(keys.iter().any(|k| k == "output.kafka.sasl.password"));
        assert!(keys.iter().any(|k| k == "connbeat.protocols.send_headers"));
        assert_eq!(
            super::closest("connbeat.protocols.0.sned_headers").as_deref(),
            Some("connbeat.protocols.send_headers")
        );
        assert_eq!(super::closest("completely.unrelated.thing"), None);
    }
}

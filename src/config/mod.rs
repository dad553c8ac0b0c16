//! Configuration: the model of `connbeat.yml`, how it is loaded, and how it is shown back.

mod beats;
mod error;
mod known_keys;
mod loader;
mod model;
mod packetbeat;
mod types;
mod validate;

pub use error::ConfigError;
pub use loader::{LoadOptions, Loaded, check_permissions, expand_dotted, from_yaml_str, load};
pub use model::*;
pub use types::{ByteSize, Duration, parse_byte_size, parse_duration};
pub use validate::{enabled_outputs, file_permissions};

/// Key names whose values are secrets: never logged, masked by `export config`.
const SECRET_KEYS: [&str; 3] = ["password", "api_key", "authorization"];

/// The effective configuration as YAML, secrets replaced by `********`.
pub fn export_yaml(c: &Config) -> String {
    let mut tree = serde_json::to_value(c).expect("config serializes");
    mask_secrets(&mut tree);
    serde_yaml_ng::to_string(&tree).expect("json value serializes to yaml")
}

fn mask_secrets(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                let secret = SECRET_KEYS.contains(&k.to_ascii_lowercase().as_str());
                match child {
                    serde_json::Value::String(s) if secret && !s.is_empty() => {
                        *s = "********".into();
                    }
                    _ => mask_secrets(child),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(mask_secrets),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn export_masks_every_secret() {
        let c = super::from_yaml_str(
            "output.kafka:\n  sasl: {mechanism: PLAIN, username: u, password: hunter2}\n  \
             password: s3cret\n",
            &[],
            &|_| None,
        )
        .unwrap();
        let y = super::export_yaml(&c);
        assert!(!y.contains("hunter2") && !y.contains("s3cret"), "{y}");
        assert!(y.contains("********"));
        assert!(y.contains("username: u"));
    }
}

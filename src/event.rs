//! The unit every source produces and every output consumes.
//!
//! Sources fill in only what they know (the `type` and their own fields); the fields common
//! to every event (`@timestamp`, `beat`, `tags`, `fields`) are added once, by
//! [`CommonFields::finish`], when the event enters the pipeline.

use serde_json::{Map, Value};
use std::time::SystemTime;

/// One event as a source produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub timestamp: SystemTime,
    /// The event's own fields, including `type`.
    pub body: Map<String, Value>,
}

impl Event {
    /// An event of the given `type` with the given fields.
    pub fn new(timestamp: SystemTime, kind: &str, fields: Value) -> Event {
        let mut body = match fields {
            Value::Object(m) => m,
            other => {
                let mut m = Map::new();
                m.insert("value".into(), other);
                m
            }
        };
        body.insert("type".into(), Value::String(kind.into()));
        Event { timestamp, body }
    }

    pub fn kind(&self) -> &str {
        self.body.get("type").and_then(Value::as_str).unwrap_or("")
    }
}

/// RFC 3339 UTC with milliseconds, the `@timestamp` format.
pub fn format_timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// What every event carries besides its own fields.
#[derive(Debug, Clone)]
pub struct CommonFields {
    pub name: String,
    pub hostname: String,
    pub version: String,
    pub tags: Vec<String>,
    pub fields: Map<String, Value>,
    pub fields_under_root: bool,
}

impl CommonFields {
    /// Builds the common fields from the configuration.
    pub fn from_config(c: &crate::config::Config) -> CommonFields {
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        CommonFields {
            name: if c.name.is_empty() {
                hostname.clone()
            } else {
                c.name.clone()
            },
            hostname,
            version: env!("CARGO_PKG_VERSION").into(),
            tags: c.tags.clone(),
            fields: c.fields.clone().into_iter().collect(),
            fields_under_root: c.fields_under_root,
        }
    }

    /// The complete JSON object of an event, ready for an output.
    pub fn finish(&self, event: Event) -> Value {
        let mut out = Map::with_capacity(event.body.len() + 4);
        out.insert(
            "@timestamp".into(),
            Value::String(format_timestamp(event.timestamp)),
        );
        let mut body = event.body;
        if let Some(kind) = body.remove("type") {
            out.insert("type".into(), kind);
        }
        let mut beat = match body.remove("beat") {
            Some(Value::Object(b)) => b,
            _ => Map::new(),
        };
        beat.insert("name".into(), Value::String(self.name.clone()));
        beat.insert("hostname".into(), Value::String(self.hostname.clone()));
        beat.insert("version".into(), Value::String(self.version.clone()));
        out.extend(body);
        out.insert("beat".into(), Value::Object(beat));
        if !self.tags.is_empty() {
            out.insert(
                "tags".into(),
                Value::Array(self.tags.iter().cloned().map(Value::String).collect()),
            );
        }
        if !self.fields.is_empty() {
            if self.fields_under_root {
                for (k, v) in &self.fields {
                    out.insert(k.clone(), v.clone());
                }
            } else {
                out.insert("fields".into(), Value::Object(self.fields.clone()));
            }
        }
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::{Duration, UNIX_EPOCH};

    fn common(under_root: bool) -> CommonFields {
        CommonFields {
            name: "web1".into(),
            hostname: "web1.local".into(),
            version: "0.1.0".into(),
            tags: vec!["prod".into()],
            fields: json!({"env": "eu"}).as_object().unwrap().clone(),
            fields_under_root: under_root,
        }
    }

    #[test]
    fn finish_adds_common_fields_and_keeps_source_beat_fields() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        let e = Event::new(
            t,
            "connbeat",
            json!({"action": "open", "beat": {"local_ips": ["10.0.0.5"]}}),
        );
        let v = common(false).finish(e);
        assert_eq!(v["@timestamp"], "2026-11-18T11:06:40.123Z");
        assert_eq!(v["type"], "connbeat");
        assert_eq!(v["beat"]["name"], "web1");
        assert_eq!(v["beat"]["local_ips"][0], "10.0.0.5");
        assert_eq!(v["tags"][0], "prod");
        assert_eq!(v["fields"]["env"], "eu");
        let v = common(true).finish(Event::new(t, "dns", json!({})));
        assert_eq!(v["env"], "eu");
        assert!(v.get("fields").is_none());
    }
}

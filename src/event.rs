//! The unit every source produces ([`Event`]) and the unit every output consumes
//! ([`Record`]).
//!
//! Sources fill in only what they know (their own fields) and serialize them once, on their
//! own thread. The fields common to every event (`@timestamp`, `type`, `beat`, `tags`,
//! `fields`) are added by [`Finisher::finish`] when the event enters the pipeline, by
//! writing them around the source's bytes; no JSON tree is built or walked on the way. The
//! queue, the disk spool and the outputs then carry the finished JSON text as it is; the
//! rare output setting that needs a field's value (a `%{[field]}` placeholder) parses it
//! with [`Record::value`]. Configured processors need the finished event before it is
//! queued: they finish it themselves ([`Event::finished`]), and the pipeline then passes
//! its text through.

use crate::config::{EventFormat, Precision};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

/// One event as a source produced it: its own fields, already serialized.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub timestamp: SystemTime,
    kind: &'static str,
    /// The event's own fields: a JSON object's text, `{"a":1,"b":"x"}`.
    fields: ObjectText,
    /// Members the source adds to the `beat` object (connbeat's `local_ips`), likewise;
    /// shared text, as they are the same for many events.
    beat_members: Arc<str>,
    /// `fields` is the whole finished event already (processors ran on it).
    finished: bool,
}

impl Event {
    /// An event of the given `type` with the fields of a JSON object (another value becomes
    /// a field named `value`). A `beat` object among them is merged into the common `beat`.
    pub fn new(timestamp: SystemTime, kind: &'static str, fields: Value) -> Event {
        let mut body = match fields {
            Value::Object(m) => m,
            other => Map::from_iter([("value".to_string(), other)]),
        };
        // The pipeline writes these itself.
        for k in RESERVED {
            body.remove(k);
        }
        let beat_members = match body.remove("beat") {
            Some(Value::Object(b)) => ObjectText::of(&b).members().into(),
            _ => "".into(),
        };
        Event {
            timestamp,
            kind,
            fields: ObjectText::of(&body),
            beat_members,
            finished: false,
        }
    }

    /// An event of the given `type` whose fields are those of `fields`, a struct (or map)
    /// that serializes as a JSON object: serialized straight to text, without a tree.
    pub fn from_fields(
        timestamp: SystemTime,
        kind: &'static str,
        fields: &impl Serialize,
    ) -> Event {
        Event {
            timestamp,
            kind,
            fields: ObjectText::of(fields),
            beat_members: "".into(),
            finished: false,
        }
    }

    /// An event whose fields are already written as a JSON object's text (`{...}`), by a
    /// source that writes its own (see `ConnEvent::write_json`).
    pub fn from_object_text(timestamp: SystemTime, kind: &'static str, text: String) -> Event {
        debug_assert!(text.starts_with('{') && text.ends_with('}'), "{text}");
        Event {
            timestamp,
            kind,
            fields: ObjectText(text),
            beat_members: "".into(),
            finished: false,
        }
    }

    /// An event already finished (the whole JSON object, common fields included), as
    /// processors leave it: [`Finisher::finish`] passes its text through as it is.
    pub fn finished(timestamp: SystemTime, kind: &'static str, text: String) -> Event {
        Event {
            timestamp,
            kind,
            fields: ObjectText(text),
            beat_members: "".into(),
            finished: true,
        }
    }

    /// Whether the event is finished already (see [`Event::finished`]).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Adds one more field (`key` must not be among the fields already there, nor one the
    /// pipeline writes itself).
    pub fn push_field(&mut self, key: &str, value: &impl Serialize) {
        debug_assert!(
            !RESERVED.contains(&key) && key != "beat",
            "{key} is written by the pipeline"
        );
        self.fields.push(key, value);
    }

    /// Adds one more field whose JSON value `write` appends to the text it is given (for
    /// objects that write their own JSON rather than go through serde).
    pub fn push_field_with(&mut self, key: &str, write: impl FnOnce(&mut String)) {
        debug_assert!(
            !RESERVED.contains(&key) && key != "beat",
            "{key} is written by the pipeline"
        );
        let o = &mut self.fields.0;
        o.pop();
        if o.len() > 1 {
            o.push(',');
        }
        push_json_str(o, key);
        o.push(':');
        write(o);
        o.push('}');
    }

    /// Adds one field to the event's `beat` object.
    pub fn push_beat_field(&mut self, key: &str, value: &impl Serialize) {
        let mut members = self.beat_members.to_string();
        push_member(&mut members, key, value);
        self.beat_members = members.into();
    }

    /// Sets the members the source adds to the `beat` object, already written
    /// (`"local_ips":[…]`, see [`beat_members`]) and shared by many events.
    pub fn set_beat_members(&mut self, members: &Arc<str>) {
        debug_assert!(self.beat_members.is_empty());
        self.beat_members = members.clone();
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The event's own fields as a JSON object, `type` included (parses the text: for
    /// tests and diagnostics, not for the hot path).
    pub fn to_value(&self) -> Value {
        let mut m: Map<String, Value> =
            serde_json::from_str(&self.fields.0).expect("fields are a JSON object");
        m.insert("type".into(), Value::String(self.kind.into()));
        if !self.beat_members.is_empty() {
            let b: Value = serde_json::from_str(&format!("{{{}}}", self.beat_members))
                .expect("members are JSON");
            m.insert("beat".into(), b);
        }
        Value::Object(m)
    }
}

/// Keys the pipeline writes around a source's fields (`beat` is merged, not replaced).
const RESERVED: [&str; 4] = ["@timestamp", "type", "tags", "fields"];

/// A JSON object's text, `{…}`, that fields can be added to in place.
#[derive(Debug, Clone, PartialEq)]
struct ObjectText(String);

impl ObjectText {
    /// The text of a value that serializes as a JSON object (any other value becomes a
    /// field named `value`).
    fn of(fields: &impl Serialize) -> ObjectText {
        // Room for a typical event up front: growing the buffer step by step cost more
        // than writing the JSON.
        let mut buf = Vec::with_capacity(1024);
        serde_json::to_writer(&mut buf, fields).expect("event fields serialize");
        let text = String::from_utf8(buf).expect("serde_json writes UTF-8");
        if text.len() >= 2 && text.starts_with('{') && text.ends_with('}') {
            return ObjectText(text);
        }
        let mut o = ObjectText("{}".into());
        o.push("value", &serde_json::from_str::<Value>(&text).ok());
        o
    }

    /// Adds a field before the closing brace.
    fn push(&mut self, key: &str, value: &impl Serialize) {
        self.0.pop();
        if self.0.len() > 1 {
            self.0.push(',');
        }
        push_json(&mut self.0, key);
        self.0.push(':');
        push_json(&mut self.0, value);
        self.0.push('}');
    }

    /// The fields, without the braces (`"a":1,"b":"x"`; empty for `{}`).
    fn members(&self) -> &str {
        &self.0[1..self.0.len() - 1]
    }
}

/// A value's JSON, rendered on first use and reused: for what many events share (a
/// process's details, a container's), serialized once rather than once per event. It is a
/// cache, not part of the value: it compares equal to any other.
#[derive(Default)]
pub struct JsonCache(OnceLock<Box<RawValue>>);

/// A clone starts empty: the cloned value may be changed before it is serialized.
impl Clone for JsonCache {
    fn clone(&self) -> JsonCache {
        JsonCache::default()
    }
}

impl JsonCache {
    /// The JSON of `value`, which must be the value this cache belongs to.
    pub fn get_or_render(&self, value: &impl Serialize) -> &RawValue {
        self.0.get_or_init(|| {
            serde_json::value::to_raw_value(value).expect("cached values serialize")
        })
    }
}

impl PartialEq for JsonCache {
    fn eq(&self, _: &JsonCache) -> bool {
        true
    }
}

impl Eq for JsonCache {}

impl std::fmt::Debug for JsonCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JsonCache")
    }
}

fn push_member(members: &mut String, key: &str, value: &impl Serialize) {
    if !members.is_empty() {
        members.push(',');
    }
    push_json(members, &key);
    members.push(':');
    push_json(members, value);
}

/// A string as its JSON text, quoted: as is when nothing in it needs escaping (the
/// common case: names, addresses, timestamps), through serde_json otherwise.
pub fn push_json_str(out: &mut String, s: &str) {
    if needs_escape(s.as_bytes()) {
        push_json(out, s);
    } else {
        out.reserve(s.len() + 2);
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
}

/// Whether JSON escapes a byte of `b` (a control character, `"` or `\`), eight bytes at a
/// time: a byte below 0x20, or equal to a quote or a backslash, sets its high bit in
/// `(v - n) & !v & 0x80..` (for n <= 0x80; a false hit only takes the slow path).
fn needs_escape(b: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = |v: u64, n: u8| v.wrapping_sub(ONES * u64::from(n)) & !v & HIGH != 0;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let v = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        if below(v, 0x20)
            || below(v ^ (ONES * u64::from(b'"')), 1)
            || below(v ^ (ONES * u64::from(b'\\')), 1)
        {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&c| c < 0x20 || c == b'"' || c == b'\\')
}

/// An address as its text (what `Display` and serde write), IPv4 without the formatter.
pub fn push_ip(out: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut n = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(n.format(octet));
            }
        }
        std::net::IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

fn push_json(out: &mut String, v: &(impl Serialize + ?Sized)) {
    out.push_str(&serde_json::to_string(v).expect("event fields serialize"));
}

/// `beat` members written once for many events: `"key":json,…` from already serialized
/// values (the keys need no escaping).
pub fn beat_members(members: &[(&str, &RawValue)]) -> Arc<str> {
    let mut out = String::new();
    for (key, json) in members {
        debug_assert!(!key.contains(['"', '\\']), "{key}");
        if !out.is_empty() {
            out.push(',');
        }
        out.push('"');
        out.push_str(key);
        out.push_str("\":");
        out.push_str(json.get());
    }
    out.into()
}

/// RFC 3339 UTC with the configured number of fractional digits (`timestamp.precision`).
pub fn format_timestamp_with(t: SystemTime, p: crate::config::Precision) -> String {
    use crate::config::Precision;
    match p {
        Precision::Millisecond => humantime::format_rfc3339_millis(t).to_string(),
        Precision::Microsecond => humantime::format_rfc3339_micros(t).to_string(),
        // Go's RFC3339Nano, which Beats write: trailing zeros of the fraction dropped.
        Precision::Nanosecond => {
            let full = humantime::format_rfc3339_nanos(t).to_string();
            let body = full.trim_end_matches('Z').trim_end_matches('0');
            format!("{}Z", body.trim_end_matches('.'))
        }
    }
}

#[cfg(test)]
mod precision_tests {
    use crate::config::Precision;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn nanoseconds_drop_trailing_zeros_as_go_does() {
        let t = |ns: u64| {
            super::format_timestamp_with(
                UNIX_EPOCH + Duration::from_nanos(ns),
                Precision::Nanosecond,
            )
        };
        assert_eq!(t(1_445_287_763_901_349_000), "2015-10-19T20:49:23.901349Z");
        assert_eq!(t(1_445_287_763_000_000_000), "2015-10-19T20:49:23Z");
        assert_eq!(
            t(1_445_287_763_000_000_001),
            "2015-10-19T20:49:23.000000001Z"
        );
    }
}

/// RFC 3339 UTC with milliseconds, the `@timestamp` format.
pub fn format_timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// A finished event: its whole JSON object, serialized once, `@timestamp` first. Cheap to
/// clone (shared text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    json: Arc<str>,
}

/// How every finished event begins; the timestamp follows.
const TIMESTAMP_PREFIX: &str = "{\"@timestamp\":\"";

impl Record {
    /// A record from JSON text that was produced by [`Finisher::finish`] (or read back from
    /// the disk spool, which stores exactly that text).
    pub fn from_json(json: impl Into<Arc<str>>) -> Record {
        Record { json: json.into() }
    }

    /// A record of an arbitrary JSON value (tests and tools; the pipeline uses
    /// [`Finisher::finish`]).
    pub fn from_value(v: &Value) -> Record {
        Record::from_json(v.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.json
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.json.as_bytes()
    }

    pub fn len(&self) -> usize {
        self.json.len()
    }

    pub fn is_empty(&self) -> bool {
        self.json.is_empty()
    }

    /// The event parsed (for settings that read a field; costs a parse).
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.json).unwrap_or(Value::Null)
    }

    /// The `@timestamp` text (`2026-11-22T10:00:00.000Z`), read off the front of the record
    /// when it is where [`Finisher::finish`] puts it, else parsed out.
    pub fn timestamp(&self) -> Option<std::borrow::Cow<'_, str>> {
        if let Some((ts, _)) = self.front() {
            return Some(std::borrow::Cow::Borrowed(ts));
        }
        self.value()
            .get("@timestamp")
            .and_then(Value::as_str)
            .map(|s| std::borrow::Cow::Owned(s.to_string()))
    }

    /// The `type`, read off the front of the record (right after `@timestamp`, where
    /// [`Finisher::finish`] puts it) when it is a plain string there; None otherwise.
    pub fn kind(&self) -> Option<&str> {
        let (_, rest) = self.front()?;
        let rest = rest.strip_prefix("\",\"type\":\"")?;
        let kind = &rest[..rest.find('"')?];
        (!kind.contains('\\')).then_some(kind)
    }

    /// The `@timestamp` text and what follows its closing quote, when the record starts the
    /// way [`Finisher::finish`] writes it.
    fn front(&self) -> Option<(&str, &str)> {
        let rest = self.json.strip_prefix(TIMESTAMP_PREFIX)?;
        let end = rest.find('"')?;
        Some((&rest[..end], &rest[end..]))
    }
}

/// What every event carries besides its own fields.
#[derive(Debug, Clone)]
pub struct CommonFields {
    pub name: String,
    /// `agent.type` of ECS events: see [`agent_type`].
    pub agent_type: &'static str,
    pub hostname: String,
    pub version: String,
    pub tags: Vec<String>,
    pub fields: Map<String, Value>,
    pub fields_under_root: bool,
    pub shape: Shape,
}

/// The field names and timestamp precision of finished events.
#[derive(Debug, Clone, Default)]
pub struct Shape {
    pub format: crate::config::EventFormat,
    pub precision: crate::config::Precision,
    /// The ECS settings (`network.direction` of connection events), in ECS mode.
    pub ecs: Option<Arc<crate::inspect::proto::txn::EcsSettings>>,
}

/// `agent.type` of ECS events. It follows the Elasticsearch index, as the index template's
/// pattern does: events written to `packetbeat-…` indices say `packetbeat`, so Packetbeat's
/// own Kibana dashboards and saved searches, which select Packetbeat's documents by index
/// and agent type, find them. Everywhere else it is `connbeat`.
pub fn agent_type(c: &crate::config::Config) -> &'static str {
    let packetbeat_index = c.output.elasticsearch.as_ref().is_some_and(|e| {
        e.enabled && (e.index.starts_with("packetbeat-") || e.index == "packetbeat")
    });
    if packetbeat_index {
        "packetbeat"
    } else {
        "connbeat"
    }
}

/// The ECS version the ECS shape follows (Packetbeat 8's).
pub const ECS_VERSION: &str = "8.0.0";

impl CommonFields {
    /// Builds the common fields from the configuration.
    pub fn from_config(c: &crate::config::Config) -> CommonFields {
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        CommonFields {
            agent_type: agent_type(c),
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
            shape: Shape {
                format: c.connbeat.event_format,
                precision: c.timestamp.precision,
                // An invalid setting is reported by the configuration check.
                ecs: crate::inspect::proto::txn::EcsSettings::from_config(c)
                    .ok()
                    .flatten()
                    .map(Arc::new),
            },
        }
    }

    /// The finisher for these fields (their JSON rendered once).
    pub fn finisher(&self) -> Finisher {
        let mut beat_tail = String::new();
        let ecs = self.shape.format == crate::config::EventFormat::Ecs;
        if ecs {
            // `beat_tail` closes the object the source's own members opened.
            push_member(&mut beat_tail, "type", &self.agent_type);
        }
        push_member(&mut beat_tail, "name", &self.name);
        // Beats 8 dropped `agent.hostname` (the host is `host.name`).
        if !ecs {
            push_member(&mut beat_tail, "hostname", &self.hostname);
        }
        push_member(&mut beat_tail, "version", &self.version);
        if ecs {
            beat_tail.push_str("},\"ecs\":{\"version\":");
            push_json(&mut beat_tail, ECS_VERSION);
            beat_tail.push_str("},\"host\":{");
            let mut host = String::new();
            push_member(&mut host, "name", &self.hostname);
            beat_tail.push_str(&host);
        }
        let mut tail = String::new();
        if !self.tags.is_empty() {
            push_member(&mut tail, "tags", &self.tags);
        }
        let mut root_fields = None;
        if !self.fields.is_empty() {
            if self.fields_under_root {
                root_fields = Some(self.fields.clone());
            } else {
                push_member(&mut tail, "fields", &self.fields);
            }
        }
        if !tail.is_empty() {
            tail.insert(0, ',');
        }
        Finisher {
            beat_tail,
            tail,
            root_fields,
            shape: self.shape.clone(),
        }
    }

    /// The finished record of one event (renders the common fields each time: use a
    /// [`Finisher`] for many events).
    pub fn finish(&self, event: Event) -> Record {
        self.finisher().finish(event)
    }
}

/// The ECS fields of a connection event, as a JSON object's text (`{...}`), the members
/// its source added to `beat` under `connbeat.beat`.
fn ecs_connection(event: &Event, ecs: &crate::inspect::proto::txn::EcsSettings) -> String {
    let classic: Map<String, Value> =
        serde_json::from_str(&event.fields.0).expect("fields are a JSON object");
    let mut m = crate::ecs::connection(classic, ecs);
    if !event.beat_members.is_empty()
        && let Ok(Value::Object(b)) = serde_json::from_str(&format!("{{{}}}", event.beat_members))
    {
        let extra = m
            .entry("connbeat")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(x) = extra {
            x.insert("beat".into(), Value::Object(b));
        }
    }
    serde_json::to_string(&m).expect("event fields serialize")
}

/// Turns events into records: writes `@timestamp`, `type` and the common fields around the
/// source's serialized fields.
#[derive(Debug, Clone)]
pub struct Finisher {
    /// `"name":…,"hostname":…,"version":…`
    beat_tail: String,
    /// `,"tags":[…]` and `,"fields":{…}`, as configured.
    tail: String,
    /// `fields` with `fields_under_root: true`: like Beats, they replace any field of the
    /// same name (also `type` or `tags`), so they are merged into the finished object
    /// rather than appended (JSON has no duplicate keys).
    root_fields: Option<Map<String, Value>>,
    shape: Shape,
}

impl Finisher {
    /// The complete JSON object of an event, ready for an output.
    pub fn finish(&self, event: Event) -> Record {
        if event.finished {
            return Record::from_json(event.fields.0);
        }
        let converted;
        let (members, beat_members) = match &self.shape.ecs {
            Some(ecs) if event.kind == crate::ecs::CONNECTION_TYPE => {
                converted = ecs_connection(&event, ecs);
                (&converted[1..converted.len() - 1], "")
            }
            _ => (event.fields.members(), &*event.beat_members),
        };
        let mut s = String::with_capacity(
            members.len() + beat_members.len() + self.beat_tail.len() + self.tail.len() + 80,
        );
        s.push_str(TIMESTAMP_PREFIX);
        match self.shape.precision {
            Precision::Millisecond => {
                let _ = write!(s, "{}", humantime::format_rfc3339_millis(event.timestamp));
            }
            p => s.push_str(&format_timestamp_with(event.timestamp, p)),
        }
        s.push_str("\",\"type\":");
        push_json(&mut s, event.kind);
        if !members.is_empty() {
            s.push(',');
            s.push_str(members);
        }
        if self.shape.format == EventFormat::Ecs {
            // What the source adds to `beat` (a connection's `local_ips`) has no ECS name.
            if !beat_members.is_empty() {
                s.push_str(",\"connbeat\":{\"beat\":{");
                s.push_str(beat_members);
                s.push_str("}}");
            }
            s.push_str(",\"agent\":{");
        } else {
            s.push_str(",\"beat\":{");
            if !beat_members.is_empty() {
                s.push_str(beat_members);
                s.push(',');
            }
        }
        s.push_str(&self.beat_tail);
        s.push('}');
        s.push_str(&self.tail);
        s.push('}');
        match &self.root_fields {
            None => Record::from_json(s),
            Some(root) => {
                let mut m: Map<String, Value> =
                    serde_json::from_str(&s).expect("a finished event is JSON");
                for (k, v) in root {
                    m.insert(k.clone(), v.clone());
                }
                Record::from_value(&Value::Object(m))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::{Duration, UNIX_EPOCH};

    /// The fast path writes exactly serde_json's text, whatever byte sits wherever in the
    /// word-at-a-time scan.
    #[test]
    fn json_strings_written_as_serde_writes_them() {
        let specials = [
            '"', '\\', '\n', '\u{0}', '\u{1f}', ' ', '\u{7f}', 'é', 'a', '~',
        ];
        for len in 0..20 {
            for (i, c) in specials.iter().enumerate() {
                for at in 0..len.max(1) {
                    let mut s: String = "abcdefghijklmnopqrstu"[..len].into();
                    if len > 0 {
                        s.replace_range(at..=at, &c.to_string());
                    }
                    let mut out = String::from("x");
                    push_json_str(&mut out, &s);
                    let want = format!("x{}", serde_json::to_string(&s).unwrap());
                    assert_eq!(out, want, "special {i} at {at} of {len}");
                }
            }
        }
        let mut out = String::new();
        push_ip(&mut out, "10.0.255.1".parse().unwrap());
        push_ip(&mut out, "::ffff:1.2.3.4".parse().unwrap());
        assert_eq!(out, "10.0.255.1::ffff:1.2.3.4");
    }

    fn common(under_root: bool) -> CommonFields {
        CommonFields {
            agent_type: "connbeat",
            name: "web1".into(),
            hostname: "web1.local".into(),
            version: "0.1.0".into(),
            tags: vec!["prod".into()],
            fields: json!({"env": "eu", "action": "mine"})
                .as_object()
                .unwrap()
                .clone(),
            fields_under_root: under_root,
            shape: Shape::default(),
        }
    }

    /// Shared `beat` members and a source's own object text end up where the contract puts
    /// them, around the common fields.
    #[test]
    fn object_text_and_shared_beat_members() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        let ips = serde_json::value::to_raw_value(&["10.0.0.1", "fd00::1"]).unwrap();
        let members = beat_members(&[("local_ips", &ips)]);
        assert_eq!(&*members, r#""local_ips":["10.0.0.1","fd00::1"]"#);
        let mut e = Event::from_object_text(t, "connbeat", r#"{"action":"open"}"#.into());
        e.set_beat_members(&members);
        let r = common(false).finish(e);
        assert_eq!(
            r.as_str(),
            concat!(
                r#"{"@timestamp":"2023-11-14T22:13:20.123Z","type":"connbeat","action":"open","#,
                r#""beat":{"local_ips":["10.0.0.1","fd00::1"],"name":"web1","hostname":"web1.local","version":"0.1.0"},"#,
                r#""tags":["prod"],"fields":{"env":"eu","action":"mine"}}"#
            )
        );
    }

    #[test]
    fn finish_adds_common_fields_and_keeps_source_beat_fields() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        let e = Event::new(
            t,
            "connbeat",
            json!({"action": "open", "beat": {"local_ips": ["10.0.0.5"]}}),
        );
        let r = common(false).finish(e);
        assert!(
            r.as_str()
                .starts_with(r#"{"@timestamp":"2026-11-18T11:06:40.123Z","type":"connbeat","action":"open","beat":{"local_ips":["10.0.0.5"],"name":"web1""#),
            "{}",
            r.as_str()
        );
        assert_eq!(r.timestamp().unwrap(), "2026-11-18T11:06:40.123Z");
        assert_eq!(r.kind(), Some("connbeat"));
        assert_eq!(Record::from_json(r#"{"type":"x"}"#).kind(), None);
        let v = r.value();
        assert_eq!(v["beat"]["name"], "web1");
        assert_eq!(v["beat"]["hostname"], "web1.local");
        assert_eq!(v["beat"]["version"], "0.1.0");
        assert_eq!(v["tags"][0], "prod");
        assert_eq!(v["fields"]["env"], "eu");
        assert_eq!(v["action"], "open");
        let v = common(true)
            .finish(Event::new(t, "dns", json!({"action": "x", "n": 1})))
            .value();
        assert_eq!(v["env"], "eu");
        assert_eq!(v["action"], "mine", "a root field replaces the source's");
        assert_eq!(v["n"], 1);
        assert_eq!(v["type"], "dns");
        assert!(v.get("fields").is_none());
        // As in Beats, a root field replaces any other of its name, and new ones come last.
        let mut c = common(true);
        c.fields = json!({"type": "web", "tags": "x", "zone": "b"})
            .as_object()
            .unwrap()
            .clone();
        let r = c.finish(Event::new(t, "dns", json!({"@timestamp": "no", "n": 1})));
        let text = r.as_str();
        assert_eq!(text.matches("\"tags\"").count(), 1, "{text}");
        assert_eq!(text.matches("\"type\"").count(), 1, "{text}");
        assert!(text.ends_with(r#""zone":"b"}"#), "{text}");
        let v = r.value();
        assert_eq!(v["type"], "web");
        assert_eq!(v["tags"], "x");
        assert_eq!(v["@timestamp"], "2026-11-18T11:06:40.123Z");
    }

    /// `agent.type` follows the Elasticsearch index, as the template's pattern does.
    #[test]
    fn agent_type_follows_a_packetbeat_index() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_000_000_000);
        let agent_type = |yaml: &str| {
            let c = crate::config::from_yaml_str(
                &format!("connbeat.event_format: ecs\n{yaml}"),
                &[],
                &|_| None,
            )
            .unwrap();
            let v = CommonFields::from_config(&c)
                .finish(Event::new(t, "http", json!({"status": "OK"})))
                .value();
            assert!(v.get("beat").is_none(), "{v}");
            v["agent"]["type"].clone()
        };
        let packetbeat = "output.elasticsearch: {hosts: [\"http://127.0.0.1:9200\"], \
                          index: \"packetbeat-%{+yyyy.MM.dd}\"}";
        assert_eq!(agent_type(packetbeat), "packetbeat");
        assert_eq!(
            agent_type("output.elasticsearch: {hosts: [\"http://127.0.0.1:9200\"]}"),
            "connbeat"
        );
        assert_eq!(agent_type("output.console: {}"), "connbeat");
        let off = format!(
            "{}, enabled: false}}\noutput.console: {{}}",
            &packetbeat[..packetbeat.len() - 1]
        );
        assert_eq!(agent_type(&off), "connbeat");
        let c = crate::config::from_yaml_str(
            &format!("connbeat.event_format: ecs\n{packetbeat}"),
            &[],
            &|_| None,
        )
        .unwrap();
        let template: serde_json::Value =
            serde_json::from_str(&crate::output::template::for_config(&c)).unwrap();
        assert_eq!(template["index_patterns"][0], "packetbeat-*");
    }

    #[test]
    fn struct_fields_serialize_straight_to_members() {
        #[derive(Serialize)]
        struct F {
            a: u32,
            b: &'static str,
        }
        let t = UNIX_EPOCH + Duration::from_millis(1_795_000_000_000);
        let mut e = Event::from_fields(t, "connbeat", &F { a: 1, b: "x\"y" });
        e.push_field("c", &json!({"d": [1, 2]}));
        e.push_beat_field("local_ips", &["::1"]);
        assert_eq!(
            e.to_value(),
            json!({"a": 1, "b": "x\"y", "c": {"d": [1, 2]}, "type": "connbeat", "beat": {"local_ips": ["::1"]}})
        );
        let c = CommonFields {
            agent_type: "connbeat",
            name: "n".into(),
            hostname: "h".into(),
            version: "v".into(),
            tags: vec![],
            fields: Map::new(),
            fields_under_root: false,
            shape: Shape::default(),
        };
        assert_eq!(
            c.finish(e).as_str(),
            r#"{"@timestamp":"2026-11-18T11:06:40.000Z","type":"connbeat","a":1,"b":"x\"y","c":{"d":[1,2]},"beat":{"local_ips":["::1"],"name":"n","hostname":"h","version":"v"}}"#
        );
        let empty = c.finish(Event::new(t, "t", json!({})));
        assert_eq!(
            empty.value(),
            json!({"@timestamp": "2026-11-18T11:06:40.000Z", "type": "t", "beat": {"name": "n", "hostname": "h", "version": "v"}})
        );
    }
}

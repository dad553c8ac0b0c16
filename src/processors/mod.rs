//! Beats processors: the `processors:` lists of the configuration (top level, and under
//! each entry of `connbeat.protocols`), compiled once and run on every finished event
//! before it is queued.
//!
//! Events are JSON text written once (see [`crate::event`]); a processor needs fields, so
//! an event that some chain applies to is finished (`@timestamp`, `type`, `beat`, `tags`,
//! `fields`), parsed, run through its protocol's chain then the top-level one, and written
//! again. An event no chain applies to is not touched, so an agent without processors
//! pays nothing. A dropped event stops here: the queue, the spool and the output never see
//! it (`processors.dropped` counts it).
//!
//! Names, options and semantics are those of Beats (`drop_event`, `drop_fields`,
//! `include_fields`, `add_fields`, `add_tags`, `rename`, `detect_mime_type`,
//! `add_host_metadata`, `if`/`then`/`else`, each with an optional `when`). An unknown
//! processor, option or condition is a configuration error naming its key. Processors of
//! Beats that mean nothing here are accepted with one warning each, and do nothing.

pub mod condition;
pub use condition::{Net, parse_net};
mod fields;
mod host;
pub mod mime;

pub use condition::Condition;

use crate::config::{Config, ConfigError};
use crate::event::{CommonFields, Event, Finisher};
use crate::monitor::{self, METRICS};
use serde_json::{Map, Value};

/// Processors of Beats accepted and ignored, with the reason given in their warning.
const IGNORED: [(&str, &str); 3] = [
    (
        "add_cloud_metadata",
        "connbeat never contacts a cloud metadata service",
    ),
    (
        "add_docker_metadata",
        "connection events carry `container` already (connbeat.docker_socket)",
    ),
    (
        "add_kubernetes_metadata",
        "connbeat has no Kubernetes enrichment",
    ),
];

/// The processors connbeat runs.
pub const NAMES: [&str; 8] = [
    "drop_event",
    "drop_fields",
    "include_fields",
    "add_fields",
    "add_tags",
    "rename",
    "detect_mime_type",
    "add_host_metadata",
];

/// A compiled `processors:` list.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    steps: Vec<Step>,
}

#[derive(Debug, Clone)]
struct Step {
    when: Option<Condition>,
    action: Action,
}

#[derive(Debug, Clone)]
enum Action {
    DropEvent,
    DropFields {
        fields: Vec<FieldSel>,
        ignore_missing: bool,
    },
    IncludeFields(Vec<String>),
    AddFields {
        target: String,
        fields: Value,
    },
    AddTags {
        tags: Vec<String>,
        target: String,
    },
    Rename {
        fields: Vec<(String, String)>,
        ignore_missing: bool,
        fail_on_error: bool,
    },
    If {
        cond: Condition,
        then: Chain,
        otherwise: Chain,
    },
    DetectMimeType {
        field: String,
        target: String,
    },
    AddHostMetadata {
        host: Value,
        replace: bool,
    },
    Ignored,
}

/// A `drop_fields` entry: a dotted name, or `/regex/` over every field's dotted name.
#[derive(Debug, Clone)]
enum FieldSel {
    Path(String),
    Regex(regex::Regex),
}

/// Fields no processor removes (Beats keeps them too).
const KEPT: [&str; 2] = ["@timestamp", "type"];

impl Chain {
    /// Compiles the list written at `key`; `warnings` receives one line per processor
    /// accepted without effect.
    pub fn compile(
        list: &[Value],
        key: &str,
        warnings: &mut Vec<String>,
    ) -> Result<Chain, ConfigError> {
        let steps = list
            .iter()
            .enumerate()
            .map(|(i, v)| step(v, &format!("{key}.{i}"), warnings))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Chain { steps })
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Runs the chain on an event; false when a processor dropped it.
    pub fn run(&self, e: &mut Map<String, Value>) -> bool {
        for s in &self.steps {
            if s.when.as_ref().is_some_and(|w| !w.eval(e)) {
                continue;
            }
            if !s.action.run(e) {
                return false;
            }
        }
        true
    }
}

/// The closest of `names` to `word`, when close enough to be a typo.
fn closest<'a>(word: &str, names: &[&'a str]) -> Option<&'a str> {
    names
        .iter()
        .map(|n| (strsim::jaro_winkler(word, n), *n))
        .filter(|(s, _)| *s > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, n)| n)
}

fn step(v: &Value, key: &str, warnings: &mut Vec<String>) -> Result<Step, ConfigError> {
    let m = v.as_object().ok_or_else(|| {
        ConfigError::invalid(
            key,
            "a processor is a mapping such as `- drop_event: {when: …}`",
        )
    })?;
    if m.contains_key("if") {
        for k in m.keys() {
            if !["if", "then", "else"].contains(&k.as_str()) {
                return Err(ConfigError::UnknownKey {
                    key: format!("{key}.{k}"),
                    suggestion: closest(k, &["then", "else"]).map(|n| format!("{key}.{n}")),
                });
            }
        }
        let cond = Condition::compile(&m["if"], &format!("{key}.if"))?;
        let list = |k: &str| -> Result<Chain, ConfigError> {
            let at = format!("{key}.{k}");
            match m.get(k) {
                None | Some(Value::Null) => Ok(Chain::default()),
                Some(Value::Array(a)) => Chain::compile(a, &at, &mut Vec::new()),
                Some(one @ Value::Object(_)) => {
                    Chain::compile(std::slice::from_ref(one), &at, &mut Vec::new())
                }
                Some(_) => Err(ConfigError::invalid(&at, "a list of processors")),
            }
        };
        if !m.contains_key("then") {
            return Err(ConfigError::invalid(key, "`if` needs a `then` list"));
        }
        // Compile again to collect the branches' warnings (compiling is cheap).
        for k in ["then", "else"] {
            if let Some(Value::Array(a)) = m.get(k) {
                Chain::compile(a, &format!("{key}.{k}"), warnings)?;
            }
        }
        return Ok(Step {
            when: None,
            action: Action::If {
                cond,
                then: list("then")?,
                otherwise: list("else")?,
            },
        });
    }
    let mut it = m.iter();
    let (name, opts) = match (it.next(), it.next()) {
        (Some(one), None) => one,
        _ => {
            return Err(ConfigError::invalid(
                key,
                "a processor is a mapping with one processor name",
            ));
        }
    };
    let at = format!("{key}.{name}");
    if let Some((_, why)) = IGNORED.iter().find(|(n, _)| n == name) {
        warnings.push(format!("{at}: accepted and ignored: {why}"));
        return Ok(Step {
            when: None,
            action: Action::Ignored,
        });
    }
    let empty = Map::new();
    let opts = match opts {
        Value::Null => &empty,
        Value::Object(o) => o,
        _ => {
            return Err(ConfigError::invalid(
                &at,
                "the options of a processor are a mapping",
            ));
        }
    };
    let mut o = Opts {
        m: opts,
        key: at.clone(),
        known: vec!["when"],
    };
    let when = opts
        .get("when")
        .map(|w| Condition::compile(w, &format!("{at}.when")))
        .transpose()?;
    let action = match name.as_str() {
        "drop_event" => Action::DropEvent,
        "drop_fields" => Action::DropFields {
            fields: o
                .strings("fields", true)?
                .into_iter()
                .map(|f| field_sel(f, &format!("{at}.fields")))
                .collect::<Result<_, _>>()?,
            ignore_missing: o.bool("ignore_missing", false)?,
        },
        "include_fields" => Action::IncludeFields(o.strings("fields", true)?),
        "add_fields" => Action::AddFields {
            target: o.string("target", Some("fields"))?,
            fields: match o.get("fields") {
                Some(v @ Value::Object(m)) if !m.is_empty() => v.clone(),
                _ => {
                    return Err(ConfigError::invalid(
                        &format!("{at}.fields"),
                        "a mapping of the fields to add",
                    ));
                }
            },
        },
        "add_tags" => Action::AddTags {
            tags: o.strings("tags", true)?,
            target: o.string("target", Some("tags"))?,
        },
        "rename" => {
            let list = o
                .get("fields")
                .and_then(Value::as_array)
                .filter(|a| !a.is_empty())
                .ok_or_else(|| {
                    ConfigError::invalid(&format!("{at}.fields"), "a list of {from, to}")
                })?;
            let mut pairs = Vec::new();
            for (i, p) in list.iter().enumerate() {
                let k = format!("{at}.fields.{i}");
                let mut po = Opts {
                    m: p.as_object()
                        .ok_or_else(|| ConfigError::invalid(&k, "{from, to}"))?,
                    key: k,
                    known: vec![],
                };
                pairs.push((po.string("from", None)?, po.string("to", None)?));
                po.finish()?;
            }
            Action::Rename {
                fields: pairs,
                ignore_missing: o.bool("ignore_missing", false)?,
                fail_on_error: o.bool("fail_on_error", true)?,
            }
        }
        "detect_mime_type" => Action::DetectMimeType {
            field: o.string("field", None)?,
            target: o.string("target", None)?,
        },
        "add_host_metadata" => {
            let netinfo = match o.get("netinfo") {
                Some(Value::Object(n)) => n.get("enabled").and_then(Value::as_bool).unwrap_or(true),
                _ => true,
            };
            let _ = o.get("cache");
            let _ = o.get("geo");
            Action::AddHostMetadata {
                host: host::metadata(netinfo),
                replace: o.bool("replace_fields", true)?,
            }
        }
        other => {
            return Err(ConfigError::UnknownKey {
                key: at.clone(),
                suggestion: closest(other, &NAMES)
                    .or_else(|| closest(other, &IGNORED.map(|(n, _)| n)))
                    .map(|n| format!("{key}.{n}")),
            });
        }
    };
    o.finish()?;
    Ok(Step { when, action })
}

fn field_sel(f: String, key: &str) -> Result<FieldSel, ConfigError> {
    if f.len() > 2 && f.starts_with('/') && f.ends_with('/') {
        let re = regex::Regex::new(&f[1..f.len() - 1])
            .map_err(|e| ConfigError::invalid(key, format!("{f}: {e}")))?;
        return Ok(FieldSel::Regex(re));
    }
    Ok(FieldSel::Path(f))
}

/// A processor's options, each read once; what is left unread is an unknown option.
struct Opts<'a> {
    m: &'a Map<String, Value>,
    key: String,
    known: Vec<&'static str>,
}

impl<'a> Opts<'a> {
    fn get(&mut self, k: &'static str) -> Option<&'a Value> {
        self.known.push(k);
        self.m.get(k)
    }

    fn bool(&mut self, k: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(k) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(ConfigError::invalid(
                &format!("{}.{k}", self.key),
                "true or false",
            )),
        }
    }

    fn string(&mut self, k: &'static str, default: Option<&str>) -> Result<String, ConfigError> {
        match (self.get(k), default) {
            (Some(Value::String(s)), _) => Ok(s.clone()),
            (None, Some(d)) => Ok(d.to_string()),
            (None, None) => Err(ConfigError::invalid(
                &format!("{}.{k}", self.key),
                "is required",
            )),
            (Some(_), _) => Err(ConfigError::invalid(
                &format!("{}.{k}", self.key),
                "a string",
            )),
        }
    }

    /// A list of strings (one string counts as a list of one).
    fn strings(&mut self, k: &'static str, required: bool) -> Result<Vec<String>, ConfigError> {
        let key = format!("{}.{k}", self.key);
        // Beats accepts an empty list (`fields: []`): only a missing key is an error.
        let absent = matches!(self.get(k), None | Some(Value::Null));
        let v: Vec<String> = match self.get(k) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| ConfigError::invalid(&key, "a list of strings"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(ConfigError::invalid(&key, "a list of strings")),
        };
        if required && absent {
            return Err(ConfigError::invalid(
                &key,
                "is required (a list of strings)",
            ));
        }
        Ok(v)
    }

    fn finish(self) -> Result<(), ConfigError> {
        match self.m.keys().find(|k| !self.known.contains(&k.as_str())) {
            None => Ok(()),
            Some(k) => Err(ConfigError::UnknownKey {
                key: format!("{}.{k}", self.key),
                suggestion: closest(k, &self.known).map(|n| format!("{}.{n}", self.key)),
            }),
        }
    }
}

/// A processor's failure on one event: logged (debug) and counted; the event goes on.
fn failed(what: &str) {
    monitor::inc(&METRICS.processors_errors);
    tracing::debug!(target: "processors", "{what}");
}

impl Action {
    /// Applies the action; false drops the event.
    fn run(&self, e: &mut Map<String, Value>) -> bool {
        match self {
            Action::DropEvent => return false,
            Action::DropFields {
                fields: sel,
                ignore_missing,
            } => {
                for f in sel {
                    match f {
                        FieldSel::Path(p) if KEPT.contains(&p.as_str()) => {}
                        FieldSel::Path(p) => {
                            if fields::remove(e, p).is_none() && !ignore_missing {
                                failed(&format!("drop_fields: no field {p}"));
                            }
                        }
                        FieldSel::Regex(re) => {
                            let mut all = Vec::new();
                            fields::paths(e, "", &mut all);
                            for p in all.iter().filter(|p| re.is_match(p)) {
                                if !KEPT.contains(&p.as_str()) {
                                    fields::remove(e, p);
                                }
                            }
                        }
                    }
                }
            }
            Action::IncludeFields(keep) => {
                let mut out = Map::new();
                for k in KEPT {
                    if let Some(v) = e.get(k) {
                        out.insert(k.to_string(), v.clone());
                    }
                }
                for p in keep {
                    if let Some(v) = fields::get(e, p) {
                        fields::insert(&mut out, p, v.clone());
                    }
                }
                *e = out;
            }
            Action::AddFields { target, fields: f } => fields::merge(e, target, f.clone()),
            Action::AddTags { tags, target } => {
                let slot = fields::get_mut(e, target);
                match slot {
                    Some(Value::Array(a)) => {
                        for t in tags {
                            if !a.iter().any(|x| x.as_str() == Some(t)) {
                                a.push(Value::String(t.clone()));
                            }
                        }
                    }
                    Some(other) => {
                        let mut a = vec![other.take()];
                        a.extend(tags.iter().map(|t| Value::String(t.clone())));
                        *other = Value::Array(a);
                    }
                    None => fields::insert(e, target, tags.clone().into()),
                }
            }
            Action::Rename {
                fields: pairs,
                ignore_missing,
                fail_on_error,
            } => {
                let backup = fail_on_error.then(|| e.clone());
                for (from, to) in pairs {
                    let problem = if fields::get(e, to).is_some() {
                        Some(format!("rename: target field {to} already exists"))
                    } else {
                        match fields::remove(e, from) {
                            Some(v) => {
                                fields::insert(e, to, v);
                                None
                            }
                            None if *ignore_missing => None,
                            None => Some(format!("rename: no field {from}")),
                        }
                    };
                    if let Some(p) = problem {
                        failed(&p);
                        if let Some(b) = backup {
                            *e = b;
                            fields::insert(e, "error.message", Value::String(p));
                            return true;
                        }
                    }
                }
            }
            Action::If {
                cond,
                then,
                otherwise,
            } => {
                return if cond.eval(e) {
                    then.run(e)
                } else {
                    otherwise.run(e)
                };
            }
            Action::DetectMimeType { field, target } => {
                if let Some(Value::String(s)) = fields::get(e, field)
                    && fields::get(e, target).is_none()
                {
                    let t = mime::detect(s.as_bytes());
                    fields::insert(e, target, Value::String(t.into()));
                }
            }
            Action::AddHostMetadata { host, replace } => {
                if *replace || !e.contains_key("host") {
                    e.insert("host".into(), host.clone());
                }
            }
            Action::Ignored => {}
        }
        true
    }
}

/// Every chain of a configuration, ready for the pipeline.
#[derive(Debug, Clone)]
pub struct Processing {
    finisher: Finisher,
    top: Chain,
    /// Per protocol (`type`), from its `connbeat.protocols` entry.
    by_type: ByType,
}

/// Chains by protocol type.
type ByType = Vec<(String, Chain)>;

/// Compiles every `processors` list of `c`: the top-level chain and one per protocol
/// type. Returns the chains and the warnings for processors accepted without effect.
fn chains(c: &Config) -> Result<(Chain, ByType, Vec<String>), ConfigError> {
    let mut warnings = Vec::new();
    let top = Chain::compile(&c.processors, "processors", &mut warnings)?;
    let mut by_type: ByType = Vec::new();
    for (i, p) in c.connbeat.protocols.iter().enumerate() {
        let key = format!("connbeat.protocols.{i}.processors");
        let chain = Chain::compile(&p.common().processors, &key, &mut warnings)?;
        if chain.is_empty() || !p.common().enabled {
            continue;
        }
        if by_type.iter().any(|(t, _)| *t == p.name()) {
            return Err(ConfigError::invalid(
                &key,
                format!(
                    "another enabled {} entry has processors already; give them to one entry",
                    p.name()
                ),
            ));
        }
        by_type.push((p.name().to_string(), chain));
    }
    Ok((top, by_type, warnings))
}

/// Checks every processor of `c`; the warnings of those accepted without effect.
pub fn check(c: &Config) -> Result<Vec<String>, ConfigError> {
    chains(c).map(|(_, _, w)| w)
}

impl Processing {
    /// The processing of `c`, or None when it has no processor at all.
    pub fn from_config(
        c: &Config,
        common: &CommonFields,
    ) -> Result<Option<Processing>, ConfigError> {
        let (top, by_type, _) = chains(c)?;
        if top.is_empty() && by_type.is_empty() {
            return Ok(None);
        }
        Ok(Some(Processing {
            finisher: common.finisher(),
            top,
            by_type,
        }))
    }

    /// Runs the event's chains (its protocol's, then the top-level one): the finished
    /// event, None when dropped, or the event untouched when no chain applies to it.
    pub fn apply(&self, e: Event) -> Option<Event> {
        if e.is_finished() {
            return Some(e);
        }
        let own = self
            .by_type
            .iter()
            .find(|(t, _)| t == e.kind())
            .map(|(_, c)| c);
        if own.is_none() && self.top.is_empty() {
            return Some(e);
        }
        let (timestamp, kind) = (e.timestamp, e.kind());
        let record = self.finisher.finish(e);
        let Ok(mut m) = serde_json::from_str::<Map<String, Value>>(record.as_str()) else {
            return Some(Event::finished(timestamp, kind, record.as_str().into()));
        };
        let keep = own.is_none_or(|c| c.run(&mut m)) && self.top.run(&mut m);
        if !keep {
            monitor::inc(&METRICS.processors_dropped);
            return None;
        }
        let text = serde_json::to_string(&m).expect("an event serializes");
        Some(Event::finished(timestamp, kind, text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(v: Value) -> Chain {
        let v = crate::config::expand_dotted(v);
        Chain::compile(v.as_array().unwrap(), "processors", &mut Vec::new()).unwrap()
    }

    fn ev() -> Map<String, Value> {
        json!({
            "@timestamp": "2026-12-07T00:00:00.000Z",
            "type": "http",
            "status": "OK",
            "http": {"request": {"headers": {"a": 1}}, "response": {"code": 200, "body": "<html><body>x"}},
            "tags": ["prod"],
        })
        .as_object()
        .unwrap()
        .clone()
    }

    #[test]
    fn drop_event_when() {
        let c = chain(json!([{"drop_event": {"when": {"equals": {"http.response.code": 200}}}}]));
        assert!(!c.run(&mut ev()));
        let c = chain(json!([{"drop_event": {"when.equals.http.response.code": 404}}]));
        assert!(c.run(&mut ev()));
    }

    #[test]
    fn drop_include_add_fields_and_tags() {
        let mut e = ev();
        chain(json!([
            {"drop_fields": {"fields": ["http.request", "type", "nope"], "ignore_missing": true}},
            {"add_fields": {"target": "project", "fields": {"name": "p", "id": 7}}},
            {"add_fields": {"target": "", "fields": {"env": "eu"}}},
            {"add_tags": {"tags": ["web", "prod"]}},
            {"add_tags": {"tags": "x", "target": "labels.t"}},
        ]))
        .run(&mut e);
        assert!(e["http"].get("request").is_none());
        assert_eq!(e["type"], "http", "type is never dropped");
        assert_eq!(e["project"], json!({"name": "p", "id": 7}));
        assert_eq!(e["env"], "eu");
        assert_eq!(e["tags"], json!(["prod", "web"]));
        assert_eq!(e["labels"]["t"], json!(["x"]));
        let mut e = ev();
        chain(json!([{"include_fields": {"fields": ["http.response.code"]}}])).run(&mut e);
        assert_eq!(
            Value::Object(e),
            json!({"@timestamp": "2026-12-07T00:00:00.000Z", "type": "http", "http": {"response": {"code": 200}}})
        );
        let mut e = ev();
        chain(json!([{"drop_fields": {"fields": ["/^http\\.res/"]}}])).run(&mut e);
        assert_eq!(e["http"], json!({"request": {"headers": {"a": 1}}}));
    }

    #[test]
    fn rename_reverts_on_error_unless_told_otherwise() {
        let mut e = ev();
        chain(json!([{"rename": {"fields": [{"from": "status", "to": "event.outcome"}]}}]))
            .run(&mut e);
        assert_eq!(e["event"]["outcome"], "OK");
        assert!(e.get("status").is_none());
        let mut e = ev();
        chain(json!([{"rename": {"fields": [
            {"from": "status", "to": "s2"}, {"from": "missing", "to": "m"}]}}]))
        .run(&mut e);
        assert_eq!(e["status"], "OK", "reverted");
        assert!(e.get("s2").is_none());
        assert_eq!(e["error"]["message"], "rename: no field missing");
        let mut e = ev();
        chain(
            json!([{"rename": {"ignore_missing": true, "fail_on_error": false, "fields": [
            {"from": "missing", "to": "m"}, {"from": "status", "to": "s2"}]}}]),
        )
        .run(&mut e);
        assert_eq!(e["s2"], "OK");
    }

    #[test]
    fn if_then_else_mime_and_host() {
        let c = chain(json!([
            {"if.contains.tags": "forwarded", "then": [{"drop_fields": {"fields": ["host"]}}],
             "else": [{"add_host_metadata": null}]},
            {"detect_mime_type": {"field": "http.response.body", "target": "http.response.mime_type"}},
        ]));
        let mut e = ev();
        assert!(c.run(&mut e));
        assert_eq!(e["host"]["os"]["type"], "linux");
        assert_eq!(
            e["http"]["response"]["mime_type"],
            "text/html; charset=utf-8"
        );
        let mut e = ev();
        e.insert("tags".into(), json!(["forwarded"]));
        e.insert("host".into(), json!({"name": "tap"}));
        assert!(c.run(&mut e));
        assert!(e.get("host").is_none());
    }

    fn compile_err(v: Value) -> String {
        let v = crate::config::expand_dotted(v);
        Chain::compile(v.as_array().unwrap(), "processors", &mut Vec::new())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn unknown_names_and_options_are_errors_naming_the_key() {
        let e = compile_err(json!([{"drop_event": {}}, {"drop_fieldz": {"fields": ["a"]}}]));
        assert!(e.contains("`processors.1.drop_fieldz`"), "{e}");
        assert!(e.contains("processors.1.drop_fields"), "{e}");
        let e = compile_err(json!([{"drop_fields": {"fields": ["a"], "ignore_mising": true}}]));
        assert!(e.contains("processors.0.drop_fields.ignore_mising"), "{e}");
        let e = compile_err(json!([{"drop_fields": {}}]));
        assert!(e.contains("processors.0.drop_fields.fields"), "{e}");
        let e = compile_err(json!([{"drop_event": {"when": {"equal": {"a": 1}}}}]));
        assert!(e.contains("processors.0.drop_event.when.equal"), "{e}");
        let e = compile_err(json!([{"if": {"has_fields": ["a"]}, "then": [{"nope": {}}]}]));
        assert!(e.contains("processors.0.then.0.nope"), "{e}");
        let mut w = Vec::new();
        Chain::compile(
            &[
                json!({"add_cloud_metadata": null}),
                json!({"add_docker_metadata": {"host": "x"}}),
            ],
            "processors",
            &mut w,
        )
        .unwrap();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("processors.0.add_cloud_metadata: accepted and ignored"),
            "{w:?}"
        );
    }
}

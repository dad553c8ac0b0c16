//! Beats-style format strings for names that depend on the event: the Kafka `topic` and
//! `key` (`connbeat-%{[type]}`, `%{[local_process.binary]}`) and the Elasticsearch `index`
//! (`connbeat-%{+yyyy.MM.dd}`).
//!
//! `%{[a.b]}` (or `%{[a][b]}`) is the value of a field, `%{[a.b]:fallback}` gives a fallback
//! when the field is missing, and `%{+pattern}` formats the event's `@timestamp` (UTC) with
//! the Joda letters Beats users write: `yyyy`, `yy`, `MM`, `dd`, `HH`, `mm`, `ss`. A string is
//! parsed once, when the output is built; rendering allocates nothing beyond the result, and
//! a finished event ([`Record`]) is parsed only when a template reads one of its fields.

use crate::event::Record;
use serde_json::Value;
use std::borrow::Cow;
use std::cell::OnceCell;
use std::fmt::Write;

/// What a template reads from an event: its `@timestamp` and its fields.
pub trait Fields {
    fn timestamp(&self) -> Option<Cow<'_, str>>;
    fn field(&self, path: &[String]) -> Option<&Value>;
}

impl Fields for Value {
    fn timestamp(&self) -> Option<Cow<'_, str>> {
        self.get("@timestamp")
            .and_then(Value::as_str)
            .map(Cow::Borrowed)
    }
    fn field(&self, path: &[String]) -> Option<&Value> {
        lookup(self, path)
    }
}

/// A finished event as templates see it: `@timestamp` and `type` (`connbeat-%{[type]}`
/// is the usual topic or index) are read off its text, other fields are parsed once, on
/// the first template that asks for one.
pub struct RecordFields<'a> {
    record: &'a Record,
    kind: OnceCell<Option<Value>>,
    parsed: OnceCell<Value>,
}

impl<'a> RecordFields<'a> {
    pub fn new(record: &'a Record) -> RecordFields<'a> {
        RecordFields {
            record,
            kind: OnceCell::new(),
            parsed: OnceCell::new(),
        }
    }
}

impl RecordFields<'_> {
    /// The whole event, parsed (once).
    pub fn parsed(&self) -> &Value {
        self.parsed.get_or_init(|| self.record.value())
    }
}

impl Fields for RecordFields<'_> {
    fn timestamp(&self) -> Option<Cow<'_, str>> {
        self.record.timestamp()
    }
    fn field(&self, path: &[String]) -> Option<&Value> {
        if let [only] = path
            && only == "type"
            && let Some(kind) = self
                .kind
                .get_or_init(|| self.record.kind().map(|k| Value::String(k.into())))
        {
            return Some(kind);
        }
        lookup(self.parsed.get_or_init(|| self.record.value()), path)
    }
}

/// A parsed format string.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(String),
    Field {
        path: Vec<String>,
        fallback: Option<String>,
    },
    Date(Vec<DatePart>),
}

#[derive(Debug, Clone, PartialEq)]
enum DatePart {
    Literal(String),
    /// A byte range of the RFC 3339 `@timestamp` (`2026-11-22T10:00:00.000Z`).
    Slice(usize, usize),
}

impl Template {
    /// Parses `text`; the error says what is wrong with it (the caller adds the setting).
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(at) = rest.find("%{") {
            lit.push_str(&rest[..at]);
            let after = &rest[at + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("{text:?}: `%{{` at byte {at} is never closed with `}}`"))?;
            let inner = &after[..end];
            if !lit.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut lit)));
            }
            parts.push(parse_placeholder(inner).map_err(|e| format!("{text:?}: {e}"))?);
            rest = &after[end + 1..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Literal(lit));
        }
        Ok(Template { parts })
    }

    /// The text when the template has no placeholder.
    pub fn as_static(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Literal(s)] => Some(s),
            _ => None,
        }
    }

    /// Renders the template for `event` into `out` (cleared first). Fails, naming the field,
    /// when a field is missing and has no fallback, or when `@timestamp` is not usable.
    pub fn render_into<F: Fields + ?Sized>(
        &self,
        event: &F,
        out: &mut String,
    ) -> Result<(), String> {
        out.clear();
        for p in &self.parts {
            match p {
                Part::Literal(s) => out.push_str(s),
                Part::Field { path, fallback } => match event.field(path) {
                    Some(Value::String(s)) => out.push_str(s),
                    Some(Value::Null) | None => match fallback {
                        Some(f) => out.push_str(f),
                        None => {
                            return Err(format!(
                                "the event has no field [{}] and no fallback is given",
                                path.join(".")
                            ));
                        }
                    },
                    Some(other) => {
                        let _ = write!(out, "{other}");
                    }
                },
                Part::Date(d) => {
                    let ts = event
                        .timestamp()
                        .filter(|t| t.len() >= 19 && t.is_char_boundary(19))
                        .ok_or("the event has no usable @timestamp for %{+...}")?;
                    for dp in d {
                        match dp {
                            DatePart::Literal(s) => out.push_str(s),
                            DatePart::Slice(a, b) => out.push_str(&ts[*a..*b]),
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Renders into a new string.
    pub fn render<F: Fields + ?Sized>(&self, event: &F) -> Result<String, String> {
        let mut s = String::new();
        self.render_into(event, &mut s)?;
        Ok(s)
    }
}

fn parse_placeholder(inner: &str) -> Result<Part, String> {
    if let Some(pattern) = inner.strip_prefix('+') {
        return Ok(Part::Date(parse_date(pattern)));
    }
    if !inner.starts_with('[') {
        return Err(format!(
            "`%{{{inner}}}` is neither a field (`%{{[name]}}`) nor a date (`%{{+yyyy.MM.dd}}`)"
        ));
    }
    // `[a][b.c]:fallback`
    let (fields, fallback) = match inner.rfind(']') {
        Some(close) => {
            let tail = &inner[close + 1..];
            let fallback = match tail.strip_prefix(':') {
                Some(f) => Some(f.to_string()),
                None if tail.is_empty() => None,
                None => return Err(format!("unexpected {tail:?} after the field name")),
            };
            (&inner[..=close], fallback)
        }
        None => return Err(format!("`%{{{inner}}}`: missing `]`")),
    };
    let mut path = Vec::new();
    for seg in fields.split(']') {
        if seg.is_empty() {
            continue;
        }
        let name = seg.strip_prefix('[').ok_or_else(|| {
            format!("`%{{{inner}}}`: field names go in brackets, like [a][b] or [a.b]")
        })?;
        path.extend(name.split('.').filter(|p| !p.is_empty()).map(String::from));
    }
    if path.is_empty() {
        return Err(format!("`%{{{inner}}}`: empty field name"));
    }
    Ok(Part::Field { path, fallback })
}

fn parse_date(pattern: &str) -> Vec<DatePart> {
    const TOKENS: [(&str, usize, usize); 8] = [
        ("yyyy", 0, 4),
        ("YYYY", 0, 4),
        ("yy", 2, 4),
        ("MM", 5, 7),
        ("dd", 8, 10),
        ("HH", 11, 13),
        ("mm", 14, 16),
        ("ss", 17, 19),
    ];
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut rest = pattern;
    'outer: while !rest.is_empty() {
        for (tok, a, b) in TOKENS {
            if let Some(r) = rest.strip_prefix(tok) {
                if !lit.is_empty() {
                    out.push(DatePart::Literal(std::mem::take(&mut lit)));
                }
                out.push(DatePart::Slice(a, b));
                rest = r;
                continue 'outer;
            }
        }
        let c = rest.chars().next().expect("not empty");
        lit.push(c);
        rest = &rest[c.len_utf8()..];
    }
    if !lit.is_empty() {
        out.push(DatePart::Literal(lit));
    }
    out
}

fn lookup<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    // A dotted name may also be a literal key at the top level (`fields_under_root`).
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev() -> Value {
        json!({"@timestamp": "2026-11-22T10:05:09.123Z", "type": "connbeat",
               "local_process": {"binary": "psql", "pid": 812}, "local_port": 40074})
    }

    #[test]
    fn renders_fields_dates_and_fallbacks() {
        let t = Template::parse("connbeat-%{[type]}-%{+yyyy.MM.dd}").unwrap();
        assert_eq!(t.render(&ev()).unwrap(), "connbeat-connbeat-2026.11.22");
        let t =
            Template::parse("%{[local_process.binary]}/%{[local_process][pid]}:%{[local_port]}")
                .unwrap();
        assert_eq!(t.render(&ev()).unwrap(), "psql/812:40074");
        let t = Template::parse("x-%{+yy-MM-dd'T'HH:mm:ss}").unwrap();
        assert_eq!(t.render(&ev()).unwrap(), "x-26-11-22'T'10:05:09");
        let t = Template::parse("%{[container.name]:none}").unwrap();
        assert_eq!(t.render(&ev()).unwrap(), "none");
        assert_eq!(Template::parse("plain").unwrap().as_static(), Some("plain"));
    }

    #[test]
    fn a_record_renders_like_its_value() {
        let r = Record::from_json(
            r#"{"@timestamp":"2026-11-22T10:05:09.123Z","type":"connbeat","local_process":{"binary":"psql"}}"#,
        );
        let t = Template::parse("%{[local_process.binary]}-%{+yyyy.MM.dd}").unwrap();
        assert_eq!(t.render(&RecordFields::new(&r)).unwrap(), "psql-2026.11.22");
        assert_eq!(t.render(&r.value()).unwrap(), "psql-2026.11.22");
        let t = Template::parse("cb-%{[type]}").unwrap();
        let fields = RecordFields::new(&r);
        assert_eq!(t.render(&fields).unwrap(), "cb-connbeat");
        assert!(fields.parsed.get().is_none(), "type needs no parse");
        // Not where the pipeline puts it: parsed.
        let odd = Record::from_json(r#"{"type":"dns","@timestamp":"2026-11-22T10:05:09.123Z"}"#);
        assert_eq!(t.render(&RecordFields::new(&odd)).unwrap(), "cb-dns");
    }

    #[test]
    fn a_missing_field_or_a_bad_string_is_an_error_naming_it() {
        let t = Template::parse("%{[container.name]}").unwrap();
        assert!(t.render(&ev()).unwrap_err().contains("[container.name]"));
        assert!(
            Template::parse("a-%{[type]")
                .unwrap_err()
                .contains("never closed")
        );
        assert!(
            Template::parse("%{type}")
                .unwrap_err()
                .contains("neither a field")
        );
    }
}

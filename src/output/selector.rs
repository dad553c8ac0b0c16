//! Beats' "selector": a name (a Redis key, a topic, an index) chosen per event from a
//! list of rules (`keys: [{key: ..., when: ...}]`), the first whose `when` condition
//! matches, else the default template (`key: ...`). Each name may hold `%{[field]}`
//! placeholders. Shared by the outputs that name a destination per event.

use super::OutputError;
use super::format::{RecordFields, Template};
use crate::processors::condition::Condition;
use serde::{Deserialize, Serialize};

/// One rule of the list (`keys`, `topics`, `indices`), as written in the configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct Rule {
    /// The name, with `%{[field]}` placeholders. Written under the list's own word
    /// (`key`, `topic`, `index`): see [`Rule`]'s aliases.
    #[serde(alias = "topic", alias = "index")]
    pub key: String,
    /// A processors-style condition; absent: the rule always matches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<serde_json::Value>,
}

/// The compiled selector.
#[derive(Debug, Clone)]
pub struct Selector {
    default: Template,
    rules: Vec<(Option<Condition>, Template)>,
    /// `output.redis.key`, for messages.
    default_key: String,
}

impl Selector {
    /// From `<section>.<name>` and `<section>.<list>`; errors name the setting.
    pub fn new(
        section: &str,
        name: &str,
        default: &str,
        list: &str,
        rules: &[Rule],
    ) -> Result<Selector, OutputError> {
        let bad = |k: String, e: String| OutputError::Config(format!("{k}: {e}"));
        let default_key = format!("{section}.{name}");
        let d = Template::parse(default).map_err(|e| bad(default_key.clone(), e))?;
        let compiled = rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let at = format!("{section}.{list}.{i}");
                let t = Template::parse(&r.key).map_err(|e| bad(format!("{at}.{name}"), e))?;
                let c = r
                    .when
                    .as_ref()
                    .map(|w| {
                        Condition::compile(
                            &crate::config::expand_dotted(w.clone()),
                            &format!("{at}.when"),
                        )
                    })
                    .transpose()
                    .map_err(|e| OutputError::Config(e.to_string()))?;
                Ok((c, t))
            })
            .collect::<Result<Vec<_>, OutputError>>()?;
        Ok(Selector {
            default: d,
            rules: compiled,
            default_key,
        })
    }

    /// The name when it is the same for every event (no rule, no placeholder).
    pub fn as_static(&self) -> Option<&str> {
        if self.rules.is_empty() {
            self.default.as_static()
        } else {
            None
        }
    }

    /// The name for `e` into `out`; the reason when it cannot be rendered or is empty.
    pub fn select_into(&self, e: &RecordFields<'_>, out: &mut String) -> Result<(), String> {
        for (when, t) in &self.rules {
            let matches = match when {
                None => true,
                Some(c) => e.parsed().as_object().is_some_and(|m| c.eval(m)),
            };
            if matches && t.render_into(e, out).is_ok() && !out.is_empty() {
                return Ok(());
            }
        }
        self.default
            .render_into(e, out)
            .map_err(|m| format!("{}: {m}", self.default_key))?;
        if out.is_empty() {
            return Err(format!("{} renders to an empty name", self.default_key));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Record;
    use serde_json::json;

    #[test]
    fn the_first_matching_rule_wins_else_the_default() {
        let rules: Vec<Rule> = serde_json::from_value(json!([
            {"key": "http-%{[status]}", "when": {"equals": {"type": "http"}}},
            {"key": "dns", "when": {"contains": {"type": "dn"}}},
        ]))
        .unwrap();
        let s = Selector::new("output.redis", "key", "%{[type]}", "keys", &rules).unwrap();
        let pick = |v: serde_json::Value| {
            let r = Record::from_value(&v);
            let mut out = String::new();
            s.select_into(&RecordFields::new(&r), &mut out).map(|_| out)
        };
        assert_eq!(
            pick(json!({"type": "http", "status": "OK"})).unwrap(),
            "http-OK"
        );
        assert_eq!(pick(json!({"type": "dns"})).unwrap(), "dns");
        assert_eq!(pick(json!({"type": "flow"})).unwrap(), "flow");
        // A matching rule that cannot render falls through to the next and the default.
        assert_eq!(pick(json!({"type": "http"})).unwrap(), "http");
        let e = pick(json!({"x": 1})).unwrap_err();
        assert!(e.starts_with("output.redis.key: "), "{e}");
        assert_eq!(s.as_static(), None);
    }

    #[test]
    fn a_bad_condition_names_its_rule() {
        let rules: Vec<Rule> =
            serde_json::from_value(json!([{"key": "a", "when": {"equal": {"a": 1}}}])).unwrap();
        let e = Selector::new("output.redis", "key", "k", "keys", &rules).unwrap_err();
        assert!(e.to_string().contains("output.redis.keys.0.when"), "{e}");
    }
}

//! The `when` conditions of Beats processors: `equals`, `contains`, `regexp`, `range`,
//! `network`, `has_fields`, `or`, `and`, `not`, compiled once from the configuration and
//! evaluated on an event's JSON object.
//!
//! As in Beats, a field named with dots (`equals.http.response.code: 200`) is a path into
//! the event (the configuration loader has already nested it: it is flattened back here),
//! a field the event lacks makes its test false, and several fields under one condition
//! must all match.

use super::fields;
use crate::config::ConfigError;
use serde_json::{Map, Value};
use std::net::{IpAddr, Ipv4Addr};

/// A compiled condition.
#[derive(Debug, Clone)]
pub enum Condition {
    Equals(Vec<(String, Value)>),
    Contains(Vec<(String, String)>),
    Regexp(Vec<(String, regex::Regex)>),
    Range(Vec<(String, Bounds)>),
    Network(Vec<(String, Vec<Net>)>),
    HasFields(Vec<String>),
    Or(Vec<Condition>),
    And(Vec<Condition>),
    Not(Box<Condition>),
}

/// The bounds of one `range` field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bounds {
    pub gt: Option<f64>,
    pub gte: Option<f64>,
    pub lt: Option<f64>,
    pub lte: Option<f64>,
}

/// One `network` value: a CIDR block or a named range.
#[derive(Debug, Clone, PartialEq)]
pub enum Net {
    Cidr(IpAddr, u8),
    Named(Named),
}

/// The named ranges Beats knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    Loopback,
    GlobalUnicast,
    Unicast,
    LinkLocalUnicast,
    InterfaceLocalMulticast,
    LinkLocalMulticast,
    Multicast,
    Unspecified,
    Private,
    Public,
}

const NAMED: [(&str, Named); 10] = [
    ("loopback", Named::Loopback),
    ("global_unicast", Named::GlobalUnicast),
    ("unicast", Named::Unicast),
    ("link_local_unicast", Named::LinkLocalUnicast),
    ("interface_local_multicast", Named::InterfaceLocalMulticast),
    ("link_local_multicast", Named::LinkLocalMulticast),
    ("multicast", Named::Multicast),
    ("unspecified", Named::Unspecified),
    ("private", Named::Private),
    ("public", Named::Public),
];

/// The condition names, for suggestions.
pub const NAMES: [&str; 9] = [
    "equals",
    "contains",
    "regexp",
    "range",
    "network",
    "has_fields",
    "or",
    "and",
    "not",
];

impl Condition {
    /// Compiles the condition written at `key` (a mapping with one condition name).
    pub fn compile(v: &Value, key: &str) -> Result<Condition, ConfigError> {
        let m = v.as_object().ok_or_else(|| {
            ConfigError::invalid(
                key,
                "a condition is a mapping such as {equals: {field: value}}",
            )
        })?;
        let mut found = m.iter();
        let (name, body) = match (found.next(), found.next()) {
            (Some(one), None) => one,
            (None, _) => return Err(ConfigError::invalid(key, "an empty condition")),
            (Some((a, _)), Some((b, _))) => {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "one condition per mapping, found {a} and {b}; combine them with and/or"
                    ),
                ));
            }
        };
        let at = format!("{key}.{name}");
        Ok(match name.as_str() {
            "equals" => Condition::Equals(
                leaves(body, &at)?
                    .into_iter()
                    .map(|(f, v)| match v {
                        Value::String(_) | Value::Number(_) | Value::Bool(_) => Ok((f, v)),
                        _ => Err(ConfigError::invalid(
                            &format!("{at}.{f}"),
                            "equals takes a string, a number or a boolean",
                        )),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            "contains" => Condition::Contains(
                leaves(body, &at)?
                    .into_iter()
                    .map(|(f, v)| Ok((f.clone(), scalar_text(&v, &format!("{at}.{f}"))?)))
                    .collect::<Result<_, ConfigError>>()?,
            ),
            "regexp" => Condition::Regexp(
                leaves(body, &at)?
                    .into_iter()
                    .map(|(f, v)| {
                        let k = format!("{at}.{f}");
                        let text = scalar_text(&v, &k)?;
                        let re = regex::Regex::new(&text).map_err(|e| {
                            ConfigError::invalid(&k, format!("not a regular expression: {e}"))
                        })?;
                        Ok((f, re))
                    })
                    .collect::<Result<_, ConfigError>>()?,
            ),
            "range" => Condition::Range(range(body, &at)?),
            "network" => Condition::Network(
                leaves(body, &at)?
                    .into_iter()
                    .map(|(f, v)| {
                        let k = format!("{at}.{f}");
                        let items = match &v {
                            Value::Array(a) => a.clone(),
                            other => vec![other.clone()],
                        };
                        let nets = items
                            .iter()
                            .map(|i| net(i, &k))
                            .collect::<Result<Vec<_>, _>>()?;
                        Ok((f, nets))
                    })
                    .collect::<Result<_, ConfigError>>()?,
            ),
            "has_fields" => Condition::HasFields(
                body.as_array()
                    .filter(|a| !a.is_empty())
                    .ok_or_else(|| ConfigError::invalid(&at, "a list of field names"))?
                    .iter()
                    .map(|f| scalar_text(f, &at))
                    .collect::<Result<_, _>>()?,
            ),
            "or" | "and" => {
                let list = body
                    .as_array()
                    .filter(|a| !a.is_empty())
                    .ok_or_else(|| ConfigError::invalid(&at, "a list of conditions"))?;
                let cs = list
                    .iter()
                    .enumerate()
                    .map(|(i, c)| Condition::compile(c, &format!("{at}.{i}")))
                    .collect::<Result<Vec<_>, _>>()?;
                if name == "or" {
                    Condition::Or(cs)
                } else {
                    Condition::And(cs)
                }
            }
            "not" => Condition::Not(Box::new(Condition::compile(body, &at)?)),
            other => {
                return Err(ConfigError::UnknownKey {
                    key: at.clone(),
                    suggestion: super::closest(other, &NAMES).map(|n| format!("{key}.{n}")),
                });
            }
        })
    }

    /// Whether the event matches.
    pub fn eval(&self, e: &Map<String, Value>) -> bool {
        match self {
            Condition::Equals(fs) => fs.iter().all(|(f, want)| {
                fields::get(e, f).is_some_and(|got| match (got, want) {
                    (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
                    (a, b) => a == b,
                })
            }),
            Condition::Contains(fs) => fs
                .iter()
                .all(|(f, want)| strings(fields::get(e, f)).any(|s| s.contains(want.as_str()))),
            Condition::Regexp(fs) => fs
                .iter()
                .all(|(f, re)| strings(fields::get(e, f)).any(|s| re.is_match(s))),
            Condition::Range(fs) => fs.iter().all(|(f, b)| {
                fields::get(e, f)
                    .and_then(Value::as_f64)
                    .is_some_and(|x| b.contains(x))
            }),
            Condition::Network(fs) => fs.iter().all(|(f, nets)| {
                strings(fields::get(e, f))
                    .filter_map(|s| s.parse::<IpAddr>().ok())
                    .any(|ip| nets.iter().any(|n| n.contains(ip)))
            }),
            Condition::HasFields(fs) => fs.iter().all(|f| fields::get(e, f).is_some()),
            Condition::Or(cs) => cs.iter().any(|c| c.eval(e)),
            Condition::And(cs) => cs.iter().all(|c| c.eval(e)),
            Condition::Not(c) => !c.eval(e),
        }
    }
}

impl Bounds {
    pub fn contains(&self, x: f64) -> bool {
        self.gt.is_none_or(|b| x > b)
            && self.gte.is_none_or(|b| x >= b)
            && self.lt.is_none_or(|b| x < b)
            && self.lte.is_none_or(|b| x <= b)
    }
}

impl Net {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match *self {
            Net::Cidr(net, bits) => in_cidr(ip, net, bits),
            Net::Named(n) => named(n, ip),
        }
    }
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

fn cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (a, b) = s.split_once('/')?;
    let ip: IpAddr = a.parse().ok()?;
    let bits: u8 = b.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((ip, bits))
}

fn private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xfe00 == 0xfc00,
    }
}

fn named(n: Named, ip: IpAddr) -> bool {
    let link_local_unicast = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    };
    let link_local_multicast = match ip {
        IpAddr::V4(v4) => in_cidr(IpAddr::V4(v4), IpAddr::V4(Ipv4Addr::new(224, 0, 0, 0)), 24),
        IpAddr::V6(v6) => v6.segments()[0] & 0xff0f == 0xff02,
    };
    let interface_local_multicast = match ip {
        IpAddr::V4(_) => false,
        IpAddr::V6(v6) => v6.segments()[0] & 0xff0f == 0xff01,
    };
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    let global_unicast = !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || link_local_unicast
        || broadcast);
    match n {
        Named::Loopback => ip.is_loopback(),
        Named::GlobalUnicast | Named::Unicast => global_unicast,
        Named::LinkLocalUnicast => link_local_unicast,
        Named::InterfaceLocalMulticast => interface_local_multicast,
        Named::LinkLocalMulticast => link_local_multicast,
        Named::Multicast => ip.is_multicast(),
        Named::Unspecified => ip.is_unspecified(),
        Named::Private => private(ip),
        Named::Public => {
            !(ip.is_loopback()
                || ip.is_unspecified()
                || ip.is_multicast()
                || link_local_unicast
                || broadcast
                || private(ip))
        }
    }
}

/// A CIDR block, an address or a named range (`private`, `loopback`, ...), as Beats'
/// `network` condition reads them.
pub fn parse_net(s: &str) -> Option<Net> {
    net(&Value::String(s.into()), "").ok()
}

fn net(v: &Value, key: &str) -> Result<Net, ConfigError> {
    let s = scalar_text(v, key)?;
    if let Some((_, n)) = NAMED.iter().find(|(name, _)| *name == s) {
        return Ok(Net::Named(*n));
    }
    if let Some((ip, bits)) = cidr(&s) {
        return Ok(Net::Cidr(ip, bits));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(Net::Cidr(ip, if ip.is_ipv4() { 32 } else { 128 }));
    }
    let names: Vec<&str> = NAMED.iter().map(|(n, _)| *n).collect();
    Err(ConfigError::invalid(
        key,
        format!(
            "{s:?} is neither a CIDR block, an address nor one of {}",
            names.join(", ")
        ),
    ))
}

fn range(body: &Value, at: &str) -> Result<Vec<(String, Bounds)>, ConfigError> {
    let mut out: Vec<(String, Bounds)> = Vec::new();
    for (path, v) in leaves(body, at)? {
        let k = format!("{at}.{path}");
        let (field, op) = path.rsplit_once('.').ok_or_else(|| {
            ConfigError::invalid(&k, "write range.FIELD.gte (or gt, lt, lte): VALUE")
        })?;
        let x = v
            .as_f64()
            .ok_or_else(|| ConfigError::invalid(&k, "a range bound is a number"))?;
        let i = match out.iter().position(|(f, _)| f == field) {
            Some(i) => i,
            None => {
                out.push((field.to_string(), Bounds::default()));
                out.len() - 1
            }
        };
        let b = &mut out[i].1;
        match op {
            "gt" => b.gt = Some(x),
            "gte" => b.gte = Some(x),
            "lt" => b.lt = Some(x),
            "lte" => b.lte = Some(x),
            _ => {
                return Err(ConfigError::invalid(
                    &k,
                    format!("{op:?} is not one of gt, gte, lt, lte"),
                ));
            }
        }
    }
    Ok(out)
}

/// The (dotted field, value) pairs of a condition body; nested mappings are the dotted
/// keys the loader expanded.
fn leaves(body: &Value, at: &str) -> Result<Vec<(String, Value)>, ConfigError> {
    let m = body
        .as_object()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ConfigError::invalid(at, "a mapping of field: value"))?;
    let mut out = Vec::new();
    collect(m, "", &mut out);
    Ok(out)
}

fn collect(m: &Map<String, Value>, at: &str, out: &mut Vec<(String, Value)>) {
    for (k, v) in m {
        let p = if at.is_empty() {
            k.clone()
        } else {
            format!("{at}.{k}")
        };
        match v {
            Value::Object(o) if !o.is_empty() => collect(o, &p, out),
            _ => out.push((p, v.clone())),
        }
    }
}

fn scalar_text(v: &Value, key: &str) -> Result<String, ConfigError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(ConfigError::invalid(key, "a string")),
    }
}

/// The strings of a field: itself, or the strings of an array.
fn strings(v: Option<&Value>) -> impl Iterator<Item = &str> {
    let (one, many) = match v {
        Some(Value::String(s)) => (Some(s.as_str()), None),
        Some(Value::Array(a)) => (None, Some(a.iter().filter_map(Value::as_str))),
        _ => (None, None),
    };
    one.into_iter().chain(many.into_iter().flatten())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cond(v: Value) -> Condition {
        Condition::compile(&crate::config::expand_dotted(v), "when").unwrap()
    }

    fn event() -> Map<String, Value> {
        json!({
            "type": "http",
            "status": "OK",
            "tags": ["prod", "forwarded"],
            "http": {"response": {"code": 404, "phrase": "Not Found"}},
            "client_ip": "10.1.2.3",
            "ip": "8.8.8.8",
            "v6": "fd00::1",
            "ll": "fe80::1",
            "mc": "ff02::1",
            "responsetime": 12.5,
        })
        .as_object()
        .unwrap()
        .clone()
    }

    #[test]
    fn equals_compares_strings_numbers_and_dotted_paths() {
        let e = event();
        assert!(cond(json!({"equals": {"http.response.code": 404}})).eval(&e));
        assert!(cond(json!({"equals": {"http.response.code": 404.0}})).eval(&e));
        assert!(!cond(json!({"equals": {"http.response.code": "404"}})).eval(&e));
        assert!(cond(json!({"equals": {"status": "OK", "type": "http"}})).eval(&e));
        assert!(!cond(json!({"equals": {"status": "OK", "type": "dns"}})).eval(&e));
        assert!(!cond(json!({"equals": {"missing": 1}})).eval(&e));
    }

    #[test]
    fn contains_and_regexp_read_strings_and_string_arrays() {
        let e = event();
        assert!(cond(json!({"contains": {"tags": "forwarded"}})).eval(&e));
        assert!(cond(json!({"contains": {"http.response.phrase": "Found"}})).eval(&e));
        assert!(!cond(json!({"contains": {"tags": "dev"}})).eval(&e));
        assert!(cond(json!({"regexp": {"http.response.phrase": "^Not F"}})).eval(&e));
        assert!(cond(json!({"regexp": {"tags": "^fwd|^forw"}})).eval(&e));
        assert!(!cond(json!({"regexp": {"status": "^ok$"}})).eval(&e));
        let err = Condition::compile(&json!({"regexp": {"x": "("}}), "p.when").unwrap_err();
        assert!(err.to_string().contains("p.when.regexp.x"), "{err}");
    }

    #[test]
    fn range_bounds() {
        let e = event();
        assert!(cond(json!({"range": {"http.response.code": {"gte": 400, "lt": 500}}})).eval(&e));
        assert!(cond(json!({"range.http.response.code.gte": 404})).eval(&e));
        assert!(!cond(json!({"range.http.response.code.gt": 404})).eval(&e));
        assert!(cond(json!({"range.responsetime.lte": 12.5})).eval(&e));
        assert!(!cond(json!({"range.responsetime.lt": 12.5})).eval(&e));
        assert!(
            !cond(json!({"range.status.lt": 1})).eval(&e),
            "not a number"
        );
        let err = Condition::compile(&json!({"range": {"x": {"above": 1}}}), "w").unwrap_err();
        assert!(err.to_string().contains("w.range.x.above"), "{err}");
    }

    #[test]
    fn network_cidrs_and_named_ranges() {
        let e = event();
        let t = |field: &str, net: Value| cond(json!({"network": {field: net}})).eval(&e);
        assert!(t("client_ip", json!("private")));
        assert!(t("client_ip", json!("10.0.0.0/8")));
        assert!(!t("client_ip", json!("10.2.0.0/16")));
        assert!(t("client_ip", json!(["192.168.0.0/16", "10.1.2.3"])));
        assert!(t("ip", json!("public")));
        assert!(t("ip", json!("unicast")));
        assert!(!t("ip", json!("private")));
        assert!(t("v6", json!("private")));
        assert!(t("ll", json!("link_local_unicast")));
        assert!(!t("ll", json!("public")));
        assert!(t("mc", json!("multicast")));
        assert!(t("mc", json!("link_local_multicast")));
        assert!(!t("mc", json!("unicast")));
        assert!(!t("status", json!("private")), "not an address");
        let l = json!({"a": "127.0.0.1", "b": "::", "c": "::ffff:10.0.0.1"});
        let l = l.as_object().unwrap();
        assert!(cond(json!({"network.a": "loopback"})).eval(l));
        assert!(cond(json!({"network.b": "unspecified"})).eval(l));
        assert!(cond(json!({"network.c": "private"})).eval(l), "mapped IPv4");
        let err = Condition::compile(&json!({"network": {"a": "privat"}}), "w").unwrap_err();
        assert!(err.to_string().contains("w.network.a"), "{err}");
    }

    #[test]
    fn has_fields_and_boolean_combinations() {
        let e = event();
        assert!(cond(json!({"has_fields": ["http.response.code", "ip"]})).eval(&e));
        assert!(!cond(json!({"has_fields": ["http.request"]})).eval(&e));
        let or = json!({"or": [{"equals.status": "Error"}, {"equals.type": "http"}]});
        assert!(cond(or).eval(&e));
        let and = json!({"and": [{"equals.status": "Error"}, {"equals.type": "http"}]});
        assert!(!cond(and.clone()).eval(&e));
        assert!(cond(json!({"not": and})).eval(&e));
    }

    #[test]
    fn unknown_conditions_are_errors_naming_the_key() {
        let err = Condition::compile(&json!({"equal": {"a": 1}}), "processors.0.drop_event.when")
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("processors.0.drop_event.when.equal"), "{msg}");
        assert!(msg.contains("processors.0.drop_event.when.equals"), "{msg}");
        let err = Condition::compile(&json!({"equals": {"a": 1}, "contains": {"b": "c"}}), "w")
            .unwrap_err();
        assert!(
            err.to_string().contains("one condition per mapping"),
            "{err}"
        );
    }
}

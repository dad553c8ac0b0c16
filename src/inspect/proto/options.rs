//! The options of one `connbeat.protocols` entry: the settings every protocol shares
//! ([`CommonOptions`]) and the protocol's own typed struct, both read from the same mapping.
//!
//! serde's `deny_unknown_fields` does not work together with `flatten`, so an entry is read
//! here: each of the two structs takes the keys it knows, and a key that neither knows is
//! an error naming it and the protocol (a `redis` entry with `send_headers` is refused).

use crate::config::Duration;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Keys every protocol takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CommonOptions {
    pub enabled: bool,
    /// `ports: null` (a key left empty in YAML) is no ports, as in Beats.
    #[serde(deserialize_with = "null_is_empty")]
    pub ports: Vec<u16>,
    /// The request's text goes into the event's `request` (protocols with a text form).
    pub send_request: bool,
    /// The response's text goes into the event's `response`.
    pub send_response: bool,
    /// The protocol's own timeout; `connbeat.transaction_timeout` when not set.
    pub transaction_timeout: Option<Duration>,
    /// Bound on the unparsed bytes held per direction of a connection (and on a kept body).
    pub max_message_size: usize,
    /// Processors run on this protocol's transactions before the top-level ones.
    pub processors: Vec<serde_json::Value>,
}

impl Default for CommonOptions {
    fn default() -> Self {
        CommonOptions {
            enabled: true,
            ports: Vec::new(),
            send_request: false,
            send_response: false,
            transaction_timeout: None,
            max_message_size: 10 * 1024 * 1024,
            processors: Vec::new(),
        }
    }
}

/// `events` of the protocols whose Packetbeat 8 events are one per message (DHCPv4, SIP):
/// one event per request/reply exchange, or one per message as Packetbeat 8 writes them.
/// Left out, it follows `connbeat.event_format`: exchanges in classic events, Packetbeat
/// 8's messages in ECS events (what its users and dashboards expect).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Events {
    /// A request and its final reply make one transaction (status and response time from
    /// the reply); a request that expects none is one alone, an unanswered one fails at
    /// `transaction_timeout`.
    Exchange,
    /// Every message is an event of its own.
    Message,
}

impl Events {
    /// The entry's choice, or the default of the configured event format.
    pub fn resolve(choice: Option<Events>, common: &super::Common) -> Events {
        choice.unwrap_or(match common.event_format {
            crate::config::EventFormat::Classic => Events::Exchange,
            crate::config::EventFormat::Ecs => Events::Message,
        })
    }
}

fn null_is_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u16>, D::Error> {
    Ok(Option::<Vec<u16>>::deserialize(d)?.unwrap_or_default())
}

/// One protocol's entry: the common keys and its own options.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Entry<O> {
    pub common: CommonOptions,
    pub options: O,
}

impl<O: Serialize + DeserializeOwned + Default> Entry<O> {
    /// Reads the entry of protocol `name` from its keys (`type` already taken out).
    pub fn from_map(name: &str, map: Map<String, Value>) -> Result<Entry<O>, String> {
        let tree = Value::Object(map);
        let (common, mut ignored) = read::<CommonOptions>(&tree)?;
        let (options, ignored_too) = read::<O>(&tree)?;
        let common_keys = keys_of(&CommonOptions::default());
        let own_keys = keys_of(&O::default());
        ignored.extend(ignored_too);
        let first = |p: &String| p.split('.').next().unwrap_or_default().to_string();
        let unknown = ignored.iter().find(|p| {
            let k = first(p);
            // Neither struct knows the key, or the struct that knows it did not know a
            // key inside it.
            let top = !common_keys.contains(&k) && !own_keys.contains(&k);
            top || p.contains('.')
        });
        if let Some(key) = unknown {
            let mut all: Vec<String> = common_keys.into_iter().chain(own_keys).collect();
            all.sort();
            let hint = all
                .iter()
                .map(|k| (strsim::jaro_winkler(&first(key), k), k))
                .filter(|(score, _)| *score > 0.85)
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, k)| format!("; did you mean `{k}`?"))
                .unwrap_or_else(|| format!(" (its options: type, {})", all.join(", ")));
            return Err(format!("`{key}` is not an option of {name}{hint}"));
        }
        Ok(Entry { common, options })
    }
}

impl<O: Serialize> Entry<O> {
    /// The entry's keys as one mapping (common keys first).
    pub fn to_map(&self) -> Map<String, Value> {
        let mut m = object(&self.common);
        m.extend(object(&self.options));
        m
    }
}

fn read<T: DeserializeOwned>(tree: &Value) -> Result<(T, Vec<String>), String> {
    let mut ignored = Vec::new();
    let mut record = |p: serde_ignored::Path<'_>| ignored.push(p.to_string());
    let de = serde_ignored::Deserializer::new(tree, &mut record);
    let t = serde_path_to_error::deserialize(de).map_err(|e| {
        let at = e.path().to_string();
        format!("`{at}`: {}", e.into_inner())
    })?;
    Ok((t, ignored))
}

fn object(v: &impl Serialize) -> Map<String, Value> {
    match serde_json::to_value(v) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// The top-level keys a struct serializes (its options).
fn keys_of(v: &impl Serialize) -> Vec<String> {
    object(v).into_iter().map(|(k, _)| k).collect()
}

#[cfg(test)]
mod tests {
    use crate::config::{Duration, from_yaml_str};
    use crate::inspect::proto::ProtocolConfig;

    fn load(protocols: &str) -> Result<crate::config::Config, String> {
        from_yaml_str(
            &format!("output.console: {{}}\nconnbeat.protocols:\n{protocols}"),
            &[],
            &|_| None,
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn an_option_of_another_protocol_is_refused_by_name() {
        let e = load("  - {type: redis, ports: [6379], send_headers: [a]}").unwrap_err();
        assert!(
            e.contains("`send_headers` is not an option of redis"),
            "{e}"
        );
        assert!(e.contains("connbeat.protocols"), "{e}");
        let e = load("  - {type: http, ports: [80], sned_headers: [a]}").unwrap_err();
        assert!(e.contains("`sned_headers`"), "{e}");
        assert!(e.contains("did you mean `send_headers`"), "{e}");
        let e = load("  - {type: tls, ports: [443], send_request: true}").unwrap_err();
        assert!(
            e.contains("`send_request` and `send_response` are not options of tls"),
            "{e}"
        );
        load("  - {type: http, ports: [80], send_request: true, send_response: true}").unwrap();
        let e = load("  - {type: gopher, ports: [70]}").unwrap_err();
        assert!(e.contains("unknown protocol \"gopher\""), "{e}");
        assert!(e.contains("http, dns, redis"), "{e}");
    }

    #[test]
    fn common_and_own_keys_are_typed() {
        let c = load(
            "  - {type: http, ports: [80, 8080], send_headers: [User-Agent], transaction_timeout: 3s}\n  \
             - {type: dns, ports: [53], enabled: false}",
        )
        .unwrap();
        let [ProtocolConfig::Http(h), ProtocolConfig::Dns(d)] = &c.connbeat.protocols[..] else {
            panic!("{:?}", c.connbeat.protocols);
        };
        assert_eq!(h.common.ports, vec![80, 8080]);
        assert_eq!(h.common.transaction_timeout, Some(Duration::from_secs(3)));
        assert_eq!(h.options.send_headers, vec!["User-Agent"]);
        assert!(
            !h.options.redact_authorization,
            "Packetbeat's default kept: off"
        );
        assert!(!d.common.enabled);
        let e = load("  - {type: http, ports: [eighty]}").unwrap_err();
        assert!(e.contains("ports"), "{e}");
    }

    #[test]
    fn export_writes_type_common_and_own_keys_and_reads_back() {
        let c = load("  - {type: http, ports: [80], split_cookie: true}").unwrap();
        let y = crate::config::export_yaml(&c);
        assert!(y.contains("type: http"), "{y}");
        assert!(y.contains("split_cookie: true"), "{y}");
        let again = from_yaml_str(&y, &[], &|_| None).unwrap();
        assert_eq!(again.connbeat.protocols, c.connbeat.protocols);
    }
}

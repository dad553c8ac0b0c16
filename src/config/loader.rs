//! Turns a `connbeat.yml` file plus `-E` overrides into a validated [`Config`].
//!
//! The file is read into a generic JSON tree first so that the Beats conventions can be
//! applied uniformly before typing: dotted keys are nested, `${VAR}` / `${VAR:default}` are
//! expanded, `-E key=value` overrides are merged. Only then is the tree deserialized, with
//! every key the model does not know collected and reported with the closest known key.

use super::error::ConfigError;
use super::model::Config;
use serde_json::{Map, Value};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where the loader looks when `-c` is not given, in order.
pub const DEFAULT_PATHS: [&str; 2] = ["connbeat.yml", "/etc/connbeat/connbeat.yml"];

/// How to load: which file, which overrides, whether to check permissions.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub path: Option<PathBuf>,
    pub overrides: Vec<String>,
    pub strict_perms: bool,
}

/// A loaded configuration and the file it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub path: PathBuf,
    /// Lines for the startup log about how the file was read (Packetbeat keys).
    pub notes: Vec<String>,
}

/// Loads, expands, overrides, types and validates the configuration.
pub fn load(opts: &LoadOptions) -> Result<Loaded, ConfigError> {
    let path = locate(opts.path.as_deref())?;
    if opts.strict_perms {
        check_permissions(&path)?;
    }
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let (config, notes) =
        parse(&text, &opts.overrides, &|k| std::env::var(k).ok()).map_err(|e| e.in_file(&path))?;
    Ok(Loaded {
        config,
        path,
        notes,
    })
}

/// The same pipeline from a string (tests and `-E`-only use).
pub fn from_yaml_str(
    text: &str,
    overrides: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    parse(text, overrides, env).map(|(c, _)| c)
}

/// The pipeline, with the notes for the startup log.
pub(super) fn parse(
    text: &str,
    overrides: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Config, Vec<String>), ConfigError> {
    let mut tree: Value = if text.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?
    };
    if tree.is_null() {
        tree = Value::Object(Map::new());
    }
    if !tree.is_object() {
        return Err(ConfigError::Syntax(
            "the top level must be a mapping of settings".into(),
        ));
    }
    let mut tree = expand_dotted(tree);
    expand_env(&mut tree, "", env)?;
    for o in overrides {
        apply_override(&mut tree, o)?;
    }
    super::packetbeat::refuse_1x(&tree)?;
    let mut notes = Vec::new();
    super::packetbeat::rename(&mut tree, &mut notes)?;
    let aside = super::beats::set_aside(&mut tree);
    let config = typed(tree)?;
    super::validate::validate(&config)?;
    notes.extend(aside.warnings);
    notes.extend(crate::processors::check(&config)?);
    Ok((config, notes))
}

fn locate(explicit: Option<&Path>) -> Result<PathBuf, ConfigError> {
    if let Some(p) = explicit {
        if !p.exists() {
            return Err(ConfigError::NotFound(vec![p.to_path_buf()]));
        }
        return Ok(p.to_path_buf());
    }
    let tried: Vec<PathBuf> = DEFAULT_PATHS.iter().map(PathBuf::from).collect();
    tried
        .iter()
        .find(|p| p.exists())
        .cloned()
        .ok_or(ConfigError::NotFound(tried))
}

/// The Beats rule: the config may be written only by its owner, and the owner must be root
/// or the user running the agent.
pub fn check_permissions(path: &Path) -> Result<(), ConfigError> {
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(ConfigError::Permissions(format!(
            "config file {:?} must be owned by the user identifier (uid={euid}) or root \
             (it is owned by uid={}); fix it with 'chown {euid} {}' or run with --strict.perms=false",
            path.display().to_string(),
            meta.uid(),
            path.display()
        )));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(ConfigError::Permissions(format!(
            "config file {:?} can only be writable by the owner but the permissions are {:04o} \
             (to fix the permissions use: 'chmod go-w {}', or run with --strict.perms=false)",
            path.display().to_string(),
            mode,
            path.display()
        )));
    }
    Ok(())
}

/// `a.b: 1` becomes `a: {b: 1}`, merging with what is already there, recursively.
/// Keys of free-form header maps are left alone (a header name may contain a dot).
pub fn expand_dotted(v: Value) -> Value {
    expand_dotted_in(v, false)
}

fn expand_dotted_in(v: Value, literal_keys: bool) -> Value {
    match v {
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, child) in map {
                let child_literal = k == "headers";
                let child = expand_dotted_in(child, child_literal);
                if literal_keys {
                    out.insert(k, child);
                } else {
                    let parts: Vec<&str> = k.split('.').collect();
                    insert_path(&mut out, &parts, child);
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|i| expand_dotted_in(i, false))
                .collect(),
        ),
        other => other,
    }
}

fn insert_path(map: &mut Map<String, Value>, parts: &[&str], value: Value) {
    let (first, rest) = parts.split_first().expect("at least one key part");
    if rest.is_empty() {
        match (map.get_mut(*first), value) {
            (Some(Value::Object(existing)), Value::Object(new)) => {
                for (k, v) in new {
                    insert_path(existing, &[k.as_str()], v);
                }
            }
            (_, value) => {
                map.insert((*first).to_string(), value);
            }
        }
        return;
    }
    let entry = map
        .entry((*first).to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    insert_path(entry.as_object_mut().expect("object"), rest, value);
}

/// Expands `${VAR}` and `${VAR:default}` in every string. A string that is exactly one
/// reference is re-read as a YAML scalar, so `port: ${PORT}` gives a number.
fn expand_env(
    v: &mut Value,
    at: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                expand_env(child, &join(at, k), env)?;
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                expand_env(child, &join(at, &i.to_string()), env)?;
            }
        }
        Value::String(s) if s.contains("${") => {
            let whole = s.starts_with("${") && s.ends_with('}') && s.matches("${").count() == 1;
            let expanded = expand_str(s, at, env)?;
            *v = if whole {
                serde_yaml_ng::from_str::<Value>(&expanded)
                    .ok()
                    .filter(|x| !x.is_object() && !x.is_array() && !x.is_null())
                    .unwrap_or(Value::String(expanded))
            } else {
                Value::String(expanded)
            };
        }
        _ => {}
    }
    Ok(())
}

fn expand_str(
    s: &str,
    at: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| ConfigError::Invalid {
            key: at.to_string(),
            message: format!("unterminated ${{...}} reference in {s:?}"),
        })?;
        let inner = &after[..end];
        let (name, default) = match inner.split_once(':') {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        match (env(name), default) {
            (Some(val), _) => out.push_str(&val),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(ConfigError::Invalid {
                    key: at.to_string(),
                    message: format!(
                        "environment variable {name} is not set and has no default \
                         (write ${{{name}:default}})"
                    ),
                });
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Applies one `-E key=value` override; the value is read as YAML.
fn apply_override(tree: &mut Value, spec: &str) -> Result<(), ConfigError> {
    let (key, raw) = spec
        .split_once('=')
        .ok_or_else(|| ConfigError::Override(spec.to_string()))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(ConfigError::Override(spec.to_string()));
    }
    let value: Value = if raw.trim().is_empty() {
        Value::String(String::new())
    } else {
        serde_yaml_ng::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
    };
    let value = expand_dotted(value);
    let parts: Vec<&str> = key.split('.').collect();
    insert_path(tree.as_object_mut().expect("object"), &parts, value);
    Ok(())
}

fn join(at: &str, k: &str) -> String {
    if at.is_empty() {
        k.to_string()
    } else {
        format!("{at}.{k}")
    }
}

/// Deserializes the tree, reporting unknown keys (with a suggestion) and type errors (with
/// the dotted key at fault).
fn typed(tree: Value) -> Result<Config, ConfigError> {
    let mut unknown: Vec<String> = unknown_output_key(&tree).into_iter().collect();
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let de = serde_ignored::Deserializer::new(&tree, &mut record);
    let result: Result<Config, _> = serde_path_to_error::deserialize(de);
    if let Some(first) = unknown.first() {
        return Err(ConfigError::UnknownKey {
            key: first.clone(),
            suggestion: super::known_keys::closest(first),
        });
    }
    result.map_err(|e| {
        let key = e.path().to_string();
        // An error inside the network settings an output flattens into its section names
        // only the section: find the key in it.
        let inner = key
            .strip_prefix("output.")
            .filter(|name| !name.contains('.'))
            .and_then(|name| tree.get("output")?.get(name))
            .and_then(crate::output::network::first_invalid_setting);
        match inner {
            Some((path, message)) => ConfigError::Invalid {
                key: format!("{key}.{path}"),
                message,
            },
            None => ConfigError::Invalid {
                key,
                message: e.into_inner().to_string(),
            },
        }
    })
}

/// The first key under `output` that no output has. Network outputs flatten their shared
/// settings into their section, which hides unknown keys there from `serde_ignored`; the
/// known keys (derived from the model) still list every one.
fn unknown_output_key(tree: &Value) -> Option<String> {
    let known = super::known_keys::all();
    let mut stack = vec![("output".to_string(), tree.get("output")?)];
    while let Some((at, v)) = stack.pop() {
        let Value::Object(m) = v else { continue };
        for (k, child) in m {
            let path = format!("{at}.{k}");
            let below = format!("{path}.");
            if known.iter().any(|x| x.starts_with(&below)) {
                // A section: look inside.
                stack.push((path, child));
            } else if !known.contains(&path) {
                return Some(path);
            } // else a value, or a free-form map (`headers`)
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::types::Duration;

    fn env(_: &str) -> Option<String> {
        None
    }

    /// A bad value among the settings network outputs share names its own key, not only
    /// the output's section.
    #[test]
    fn a_bad_shared_network_setting_names_its_key() {
        let err = |yaml: &str| from_yaml_str(yaml, &[], &env).unwrap_err().to_string();
        let e =
            err("output.logstash: {hosts: [\"h:5044\"], ssl: {supported_protocols: [TLSv1.4]}}");
        assert!(
            e.contains("`output.logstash.ssl.supported_protocols[0]`"),
            "{e}"
        );
        assert!(e.contains("unknown variant `TLSv1.4`"), "{e}");
        let e = err("output.elasticsearch: {ssl.verification_mode: fulll}");
        assert!(
            e.contains("`output.elasticsearch.ssl.verification_mode`"),
            "{e}"
        );
        let e = err("output.kafka: {hosts: [\"h:9092\"], topic: t, bulk_max_size: x}");
        assert!(e.contains("`output.kafka.bulk_max_size`"), "{e}");
        // An output's own setting keeps its own path.
        let e = err("output.elasticsearch: {index: [1]}");
        assert!(e.contains("`output.elasticsearch.index`"), "{e}");
    }

    #[test]
    fn dotted_keys_equal_nesting() {
        let a = from_yaml_str(
            "connbeat.poll_interval: 5s\noutput.console.enabled: true",
            &[],
            &env,
        )
        .unwrap();
        let b = from_yaml_str(
            "connbeat:\n  poll_interval: 5s\noutput:\n  console:\n    enabled: true",
            &[],
            &env,
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.connbeat.poll_interval, Duration::from_secs(5));
    }

    #[test]
    fn env_references_expand_with_defaults() {
        let envf = |k: &str| (k == "PORT").then(|| "6000".to_string());
        let c = from_yaml_str(
            "http.port: ${PORT}\nname: ${NAME:edge-1}\noutput.console: {}",
            &[],
            &envf,
        )
        .unwrap();
        assert_eq!(c.http.port, 6000);
        assert_eq!(c.name, "edge-1");
        let err = from_yaml_str("name: ${MISSING}\noutput.console: {}", &[], &env).unwrap_err();
        assert!(err.to_string().contains("MISSING"), "{err}");
        assert!(err.to_string().contains("name"), "{err}");
    }

    #[test]
    fn overrides_win_over_the_file() {
        let c = from_yaml_str(
            "connbeat.poll_interval: 5s\noutput.console: {}",
            &["connbeat.poll_interval=250ms".into(), "tags=[a, b]".into()],
            &env,
        )
        .unwrap();
        assert_eq!(c.connbeat.poll_interval, Duration::from_millis(250));
        assert_eq!(c.tags, vec!["a", "b"]);
        assert!(matches!(
            from_yaml_str("output.console: {}", &["nokey".into()], &env),
            Err(ConfigError::Override(_))
        ));
    }

    #[test]
    fn unknown_keys_name_the_closest_known_key() {
        let err =
            from_yaml_str("connbeat.pol_interval: 5s\noutput.console: {}", &[], &env).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("connbeat.pol_interval"), "{msg}");
        assert!(msg.contains("connbeat.poll_interval"), "{msg}");
    }

    #[test]
    fn unknown_keys_of_every_output_are_named() {
        for (text, key, close) in [
            (
                "output.kafka.hostz: [a]",
                "output.kafka.hostz",
                "output.kafka.hosts",
            ),
            (
                "output.http.bulk_max_sise: 5",
                "output.http.bulk_max_sise",
                "output.http.bulk_max_size",
            ),
            (
                "output.elasticsearch.ssl.verificaton_mode: none",
                "output.elasticsearch.ssl.verificaton_mode",
                "output.elasticsearch.ssl.verification_mode",
            ),
            (
                "output.console.prety: true",
                "output.console.prety",
                "output.console.pretty",
            ),
        ] {
            let msg = from_yaml_str(text, &[], &env).unwrap_err().to_string();
            assert!(msg.contains(&format!("`{key}`")), "{msg}");
            assert!(msg.contains(&format!("`{close}`")), "{msg}");
        }
        let c = from_yaml_str(
            "output.http: {hosts: ['http://h:1'], headers: {X-Api.Key: k}, bulk_max_size: 7}",
            &[],
            &env,
        )
        .unwrap();
        let h = c.output.http.unwrap();
        assert_eq!(h.network.bulk_max_size, 7);
        assert_eq!(h.network.max_retries, -1, "the output's default");
        assert_eq!(h.headers["X-Api.Key"], "k");
        let k = from_yaml_str("output.kafka: {}", &[], &env)
            .unwrap()
            .output
            .kafka
            .unwrap();
        assert_eq!(k.network.bulk_max_size, 2048, "kafka's own default");
        assert_eq!(k.network.hosts, vec!["localhost:9092"]);
    }

    #[test]
    fn type_errors_name_the_key() {
        let err = from_yaml_str(
            "connbeat.poll_interval: soon\noutput.console: {}",
            &[],
            &env,
        )
        .unwrap_err();
        assert!(err.to_string().contains("connbeat.poll_interval"), "{err}");
        let err = from_yaml_str("http.port: seventy\noutput.console: {}", &[], &env).unwrap_err();
        assert!(err.to_string().contains("http.port"), "{err}");
    }
}

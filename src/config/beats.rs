//! Settings of Beats that mean nothing to connbeat, accepted so that a Beats or Packetbeat
//! file loads: each is taken out of the tree before typing, with one warning line for the
//! startup log (and `test config`).

use serde_json::Value;

/// (dotted key, depth at which each key gets its own warning, why it has no effect).
const BEATS_ONLY: [(&str, usize, &str); 7] = [
    (
        "setup.template",
        3,
        "connbeat's template is its own (`connbeat export template`); only enabled, name, \
         pattern, overwrite and priority are read",
    ),
    (
        "setup",
        2,
        "connbeat sets up no Kibana, dashboards or index lifecycle",
    ),
    (
        "cloud",
        2,
        "Elastic Cloud ids are not read; set output.elasticsearch.hosts",
    ),
    ("monitoring", 1, "self-monitoring is the http.* endpoint"),
    ("instrumentation", 1, "connbeat has no APM instrumentation"),
    ("migration", 1, "there is nothing to migrate"),
    (
        "output.elasticsearch.preset",
        3,
        "set bulk_max_size and the queue yourself",
    ),
];

/// What was set aside: one warning per key.
#[derive(Debug, Default)]
pub struct SetAside {
    pub warnings: Vec<String>,
}

/// The keys of `setup.template` that the model reads.
const TEMPLATE_KEYS: [&str; 5] = ["enabled", "name", "pattern", "overwrite", "priority"];

/// The value at a dotted `path`, if it is there.
fn path_ref<'a>(tree: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(tree, |v, p| v.get(p))
}

/// Removes the value at a dotted `path` of the tree and returns it, if it is there.
fn take_path(tree: &mut Value, path: &str) -> Option<Value> {
    let (parents, last) = path.rsplit_once('.').unwrap_or(("", path));
    let mut cur = tree.as_object_mut();
    for p in parents.split('.').filter(|p| !p.is_empty()) {
        cur = cur
            .and_then(|m| m.get_mut(p))
            .and_then(Value::as_object_mut);
    }
    cur.and_then(|m| m.remove(last))
}

/// Takes the Beats-only settings out of the tree (after `packetbeat.*` became
/// `connbeat.*`).
pub fn set_aside(tree: &mut Value) -> SetAside {
    let mut out = SetAside::default();
    // The keys of setup.template that connbeat reads survive the Beats-only sweep.
    let mut template = serde_json::Map::new();
    for k in TEMPLATE_KEYS {
        if let Some(v) = take_path(tree, &format!("setup.template.{k}")) {
            template.insert(k.to_string(), v);
        }
    }
    // An emptied setup.template (or setup) is no warning.
    for p in ["setup.template", "setup"] {
        if let Some(Value::Object(m)) = path_ref(tree, p)
            && m.is_empty()
        {
            take_path(tree, p);
        }
    }
    for (path, depth, why) in BEATS_ONLY {
        let Some(removed) = take_path(tree, path) else {
            continue;
        };
        let mut keys = Vec::new();
        keys_to_depth(&removed, path, depth - path.split('.').count(), &mut keys);
        for k in keys {
            out.warnings
                .push(format!("{k}: accepted and ignored: {why}"));
        }
    }
    if !template.is_empty()
        && let Some(root) = tree.as_object_mut()
    {
        root.insert(
            "setup".into(),
            serde_json::json!({"template": Value::Object(template)}),
        );
    }
    out
}

fn keys_to_depth(v: &Value, at: &str, depth: usize, out: &mut Vec<String>) {
    match v {
        Value::Object(m) if depth > 0 && !m.is_empty() => {
            for (k, child) in m {
                keys_to_depth(child, &format!("{at}.{k}"), depth - 1, out);
            }
        }
        _ => out.push(at.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::from_yaml_str;

    #[test]
    fn setup_template_keeps_the_keys_read_and_sets_the_rest_aside() {
        let mut tree = serde_json::json!({
            "setup": {
                "template": {"enabled": false, "name": "x", "pattern": "x-*", "overwrite": true,
                             "priority": 200, "settings": {"index": {"number_of_shards": 1}}},
                "kibana": {"host": "k"},
                "ilm": {"enabled": false}
            }
        });
        let aside = super::set_aside(&mut tree);
        assert_eq!(
            tree,
            serde_json::json!({"setup": {"template": {
                "enabled": false, "name": "x", "pattern": "x-*", "overwrite": true,
                "priority": 200}}})
        );
        assert_eq!(aside.warnings.len(), 3, "{:?}", aside.warnings);
        for key in ["setup.template.settings", "setup.kibana", "setup.ilm"] {
            let line = format!("{key}: accepted and ignored");
            assert!(
                aside.warnings.iter().any(|w| w.starts_with(&line)),
                "{key}: {:?}",
                aside.warnings
            );
        }
        let c = from_yaml_str(
            "output.console: {}\nsetup.template.name: mine\n",
            &[],
            &|_| None,
        )
        .unwrap();
        assert_eq!(c.setup.template.name, "mine");
        assert!(c.setup.template.enabled);
    }
}

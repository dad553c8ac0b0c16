//! Dotted field paths over a JSON event, the way Beats reads them: `http.response.code`
//! walks nested objects.

use serde_json::{Map, Value};

/// The value at `path`, when every step but the last is an object.
pub fn get<'a>(m: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let (parents, last) = split(path);
    let mut cur = m;
    for p in parents {
        cur = cur.get(p)?.as_object()?;
    }
    cur.get(last)
}

/// Removes and returns the value at `path`.
pub fn remove(m: &mut Map<String, Value>, path: &str) -> Option<Value> {
    let (parents, last) = split(path);
    let mut cur = m;
    for p in parents {
        cur = cur.get_mut(p)?.as_object_mut()?;
    }
    cur.shift_remove(last)
}

/// Sets the value at `path`, creating (or replacing non-object) parents.
pub fn insert(m: &mut Map<String, Value>, path: &str, v: Value) {
    let (parents, last) = split(path);
    let mut cur = m;
    for p in parents {
        let slot = cur
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        cur = slot.as_object_mut().expect("an object");
    }
    cur.insert(last.to_string(), v);
}

/// Merges `v` into the value at `path`: objects member by member (recursively), anything
/// else replaced.
pub fn merge(m: &mut Map<String, Value>, path: &str, v: Value) {
    match (path.is_empty(), v) {
        (true, Value::Object(new)) => merge_maps(m, new),
        (_, v) => match get_mut(m, path) {
            Some(Value::Object(old)) if v.is_object() => {
                if let Value::Object(new) = v {
                    merge_maps(old, new);
                }
            }
            _ => insert(m, path, v),
        },
    }
}

fn merge_maps(old: &mut Map<String, Value>, new: Map<String, Value>) {
    for (k, v) in new {
        match (old.get_mut(&k), v) {
            (Some(Value::Object(o)), Value::Object(n)) => merge_maps(o, n),
            (_, v) => {
                old.insert(k, v);
            }
        }
    }
}

pub fn get_mut<'a>(m: &'a mut Map<String, Value>, path: &str) -> Option<&'a mut Value> {
    let (parents, last) = split(path);
    let mut cur = m;
    for p in parents {
        cur = cur.get_mut(p)?.as_object_mut()?;
    }
    cur.get_mut(last)
}

/// Every field's dotted path, parents before their members (arrays are not walked).
pub fn paths(m: &Map<String, Value>, at: &str, out: &mut Vec<String>) {
    for (k, v) in m {
        let p = if at.is_empty() {
            k.clone()
        } else {
            format!("{at}.{k}")
        };
        out.push(p.clone());
        if let Value::Object(o) = v {
            paths(o, &p, out);
        }
    }
}

fn split(path: &str) -> (impl Iterator<Item = &str>, &str) {
    let (parents, last) = match path.rsplit_once('.') {
        Some((p, l)) => (Some(p), l),
        None => (None, path),
    };
    (parents.into_iter().flat_map(|p| p.split('.')), last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dotted_paths_walk_objects() {
        let mut m = json!({"http": {"response": {"code": 200}}, "a": 1})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(get(&m, "http.response.code"), Some(&json!(200)));
        assert_eq!(get(&m, "a.b"), None);
        insert(&mut m, "a.b", json!(2));
        assert_eq!(m["a"], json!({"b": 2}));
        merge(&mut m, "http", json!({"request": {"x": 1}}));
        assert_eq!(m["http"]["response"]["code"], 200);
        assert_eq!(m["http"]["request"]["x"], 1);
        assert_eq!(remove(&mut m, "http.response"), Some(json!({"code": 200})));
        let mut all = Vec::new();
        paths(&m, "", &mut all);
        assert_eq!(all, ["http", "http.request", "http.request.x", "a", "a.b"]);
    }
}

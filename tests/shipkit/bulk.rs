//! An Elasticsearch `_bulk` endpoint for the tests (no Elasticsearch can be installed here),
//! following the API's contract: NDJSON action/source pairs, `create` refused with 409
//! when the `_id` exists, one item per action with its status, `errors: true` when any item
//! failed, HTTP 200 even then; and throttling (429 for the whole request or for an item)
//! and item rejections (400 mapper_parsing_exception) on demand.
#![allow(dead_code)]

use super::server::{Reply, Req, Server};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

/// What the fake cluster stores and how it misbehaves.
#[derive(Default)]
pub struct Cluster {
    /// index -> _id -> document
    pub docs: BTreeMap<String, BTreeMap<String, Value>>,
    /// Every _id of every create action received, duplicates included.
    pub creates: Vec<String>,
    /// Answer the next N bulk requests with a whole-request 429 (Retry-After: 0).
    pub throttle_requests: usize,
    /// Documents (by cookie) whose first create gets an item-level 429.
    pub throttle_items_once: HashSet<String>,
    /// Documents (by cookie) refused with an item-level 400 every time.
    pub reject_items: HashSet<String>,
    /// Index the next N bulk requests, then answer 502 (the answer "gets lost").
    pub lose_answers: usize,
    /// Required Authorization header value, if any.
    pub authorization: Option<String>,
    /// Index templates by name (`PUT`/`GET _index_template/<name>`).
    pub templates: BTreeMap<String, Value>,
}

impl Cluster {
    pub fn doc_count(&self) -> usize {
        self.docs.values().map(|d| d.len()).sum()
    }
    pub fn all_docs(&self) -> Vec<Value> {
        self.docs
            .values()
            .flat_map(|d| d.values().cloned())
            .collect()
    }
}

/// Starts a `_bulk` server sharing `cluster`.
pub fn start(cluster: Arc<Mutex<Cluster>>) -> Server {
    Server::start(0, None, Arc::new(move |r: &Req| handle(&cluster, r)))
}

fn error_item(op: &str, index: &str, id: &str, status: u16, kind: &str, reason: &str) -> Value {
    json!({op: {"_index": index, "_id": id, "status": status,
                "error": {"type": kind, "reason": reason}}})
}

fn handle(cluster: &Mutex<Cluster>, r: &Req) -> Reply {
    let mut c = cluster.lock().unwrap();
    if let Some(name) = r.path.strip_prefix("/_index_template/") {
        return match (r.method.as_str(), c.templates.get(name)) {
            ("PUT", _) => match serde_json::from_slice::<Value>(&r.body) {
                Ok(t) => {
                    c.templates.insert(name.to_string(), t);
                    Reply::json(200, &json!({"acknowledged": true}))
                }
                Err(e) => Reply::json(400, &json!({"error": e.to_string(), "status": 400})),
            },
            ("GET", Some(t)) => Reply::json(
                200,
                &json!({"index_templates": [{"name": name, "index_template": t}]}),
            ),
            _ => Reply::json(404, &json!({"error": "no such template", "status": 404})),
        };
    }
    if r.method != "POST" || !r.path.ends_with("/_bulk") {
        return Reply::json(404, &json!({"error": "no handler", "status": 404}));
    }
    if let Some(want) = &c.authorization
        && r.header("authorization") != Some(want.as_str())
    {
        return Reply::json(
            401,
            &json!({"error": {"type": "security_exception", "reason": "unable to authenticate"}, "status": 401}),
        );
    }
    let ct = r.header("content-type").unwrap_or("");
    if !(ct.starts_with("application/x-ndjson") || ct.starts_with("application/json")) {
        return Reply::json(
            406,
            &json!({"error": format!("Content-Type header [{ct}] is not supported"), "status": 406}),
        );
    }
    if c.throttle_requests > 0 {
        c.throttle_requests -= 1;
        return Reply::json(
            429,
            &json!({"error": {"type": "es_rejected_execution_exception", "reason": "rejected execution"}, "status": 429}),
        )
        .with_header("retry-after", "0");
    }
    let text = r.text();
    if !text.ends_with('\n') {
        return Reply::json(
            400,
            &json!({"error": {"type": "illegal_argument_exception", "reason": "The bulk request must be terminated by a newline [\\n]"}, "status": 400}),
        );
    }
    let mut lines = text.lines();
    let mut items = Vec::new();
    let mut errors = false;
    while let Some(action_line) = lines.next() {
        let action: Value = match serde_json::from_str(action_line) {
            Ok(v) => v,
            Err(e) => {
                return Reply::json(
                    400,
                    &json!({"error": {"type": "x_content_parse_exception", "reason": e.to_string()}, "status": 400}),
                );
            }
        };
        let (op, meta) = action.as_object().unwrap().iter().next().unwrap();
        let index = meta["_index"].as_str().unwrap_or("").to_string();
        let id = meta["_id"].as_str().unwrap_or("").to_string();
        let source: Value = match lines.next().map(serde_json::from_str) {
            Some(Ok(v)) => v,
            _ => {
                return Reply::json(
                    400,
                    &json!({"error": {"type": "illegal_argument_exception", "reason": "source missing"}, "status": 400}),
                );
            }
        };
        assert_eq!(op, "create", "connbeat sends create actions");
        c.creates.push(id.clone());
        let cookie = source["cookie"].as_str().unwrap_or("").to_string();
        if c.reject_items.contains(&cookie) {
            errors = true;
            items.push(error_item(
                op,
                &index,
                &id,
                400,
                "mapper_parsing_exception",
                &format!("failed to parse field [cookie] of document {cookie}"),
            ));
            continue;
        }
        if c.throttle_items_once.remove(&cookie) {
            errors = true;
            items.push(error_item(
                op,
                &index,
                &id,
                429,
                "es_rejected_execution_exception",
                "rejected execution of coordinating operation",
            ));
            continue;
        }
        let docs = c.docs.entry(index.clone()).or_default();
        if docs.contains_key(&id) {
            errors = true;
            items.push(error_item(
                op,
                &index,
                &id,
                409,
                "version_conflict_engine_exception",
                &format!("[{id}]: version conflict, document already exists (current version [1])"),
            ));
            continue;
        }
        docs.insert(id.clone(), source);
        items.push(
            json!({op: {"_index": index, "_id": id, "_version": 1, "result": "created",
                               "status": 201, "_seq_no": 0, "_primary_term": 1}}),
        );
    }
    if c.lose_answers > 0 {
        c.lose_answers -= 1;
        return Reply::json(502, &json!({"error": "bad gateway"}));
    }
    Reply::json(200, &json!({"took": 3, "errors": errors, "items": items}))
}

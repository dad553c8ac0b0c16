//! `output.elasticsearch` against a `_bulk` endpoint that follows Elasticsearch's contract
//! (tests/shipkit/bulk.rs; no Elasticsearch can be installed here): per-item results,
//! throttling, rejections, lost answers, round-robin hosts, auth, and the index template.

mod shipkit;

use serde_json::Value;
use shipkit::bulk::{self, Cluster};
use shipkit::*;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn send(c: &connbeat::config::Config, range: std::ops::Range<u64>) {
    let (p, pipe) = pipeline(c);
    for i in range {
        assert!(p.publish(conn_event(i)));
    }
    drop(p);
    assert!(
        pipe.finish(Duration::from_secs(120)),
        "pipeline did not drain"
    );
}

fn cookies(docs: &[Value]) -> Vec<u64> {
    let mut v: Vec<u64> = docs
        .iter()
        .map(|d| d["cookie"].as_str().unwrap().parse().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn throttling_is_retried_a_rejected_item_is_dropped_and_logged_and_nothing_is_duplicated() {
    let _g = serial();
    let _logs = logs();
    let cluster = Arc::new(Mutex::new(Cluster {
        throttle_requests: 2,
        throttle_items_once: ["5".to_string(), "1500".to_string()].into(),
        reject_items: ["7".to_string()].into(),
        lose_answers: 1,
        ..Default::default()
    }));
    let a = bulk::start(cluster.clone());
    let b = bulk::start(cluster.clone());
    let dropped = counter("output.events.dropped");
    let rejected = counter("output.events.rejected");
    let c = config(&format!(
        "output.elasticsearch:\n  hosts: [\"{}\", \"{}\"]\n  index: \"connbeat-%{{+yyyy.MM.dd}}\"\n  \
         bulk_max_size: 500\n  backoff: {{init: 10ms, max: 100ms}}\n\
         queue.mem: {{events: 2000, flush.min_events: 500, flush.timeout: 50ms}}\n",
        a.url(false),
        b.url(false)
    ));
    send(&c, 0..3000);
    let cl = cluster.lock().unwrap();
    // Every event but the rejected one, once, in the index of its day.
    let mut expect: Vec<u64> = (0..3000).collect();
    expect.retain(|i| *i != 7);
    assert_eq!(cookies(&cl.all_docs()), expect);
    assert_eq!(cl.docs.keys().collect::<Vec<_>>(), ["connbeat-2026.11.18"]);
    // The lost answer made the pipeline send a bulk again: those creates hit existing ids
    // (409, acknowledged), so the retry duplicated nothing.
    let ids: HashSet<&String> = cl.creates.iter().collect();
    assert!(
        cl.creates.len() > ids.len(),
        "no bulk request was sent twice"
    );
    assert_eq!(counter("output.events.dropped") - dropped, 1);
    assert_eq!(counter("output.events.rejected") - rejected, 1);
    let logs = log_text();
    assert!(
        logs.contains("mapper_parsing_exception: failed to parse field [cookie] of document 7"),
        "{logs}"
    );
    // Both hosts were used.
    assert!(!a.requests().is_empty() && !b.requests().is_empty());
    for r in a.requests().iter().chain(b.requests().iter()) {
        if r.path.ends_with("/_bulk") {
            assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
        }
    }
    // setup.template (on by default) was loaded into each host before its first batch.
    let first = |s: &shipkit::server::Server| {
        let r = &s.requests()[0];
        (r.method.clone(), r.path.clone())
    };
    for s in [&a, &b] {
        assert_eq!(first(s), ("GET".into(), "/_index_template/connbeat".into()));
    }
    assert!(cl.templates.contains_key("connbeat"));
}

#[test]
fn api_key_and_basic_auth_are_sent_and_a_refused_credential_is_retried_not_dropped() {
    let _g = serial();
    let cluster = Arc::new(Mutex::new(Cluster {
        // base64("id:secret")
        authorization: Some("ApiKey aWQ6c2VjcmV0".into()),
        ..Default::default()
    }));
    let s = bulk::start(cluster.clone());
    let c = config(&format!(
        "output.elasticsearch: {{hosts: [\"{}\"], api_key: \"id:secret\"}}\n",
        s.url(false)
    ));
    send(&c, 0..10);
    assert_eq!(cluster.lock().unwrap().doc_count(), 10);

    cluster.lock().unwrap().authorization = Some("Basic ZWxhc3RpYzpjaGFuZ2VtZQ==".into());
    let c = config(&format!(
        "output.elasticsearch: {{hosts: [\"{}\"], username: elastic, password: wrong, \
         max_retries: 2, backoff: {{init: 10ms, max: 10ms}}}}\n",
        s.url(false)
    ));
    let limit = counter("output.events.retry_limit");
    send(&c, 100..110);
    // 401 was retried (then given up by max_retries), never dropped as "rejected".
    assert_eq!(counter("output.events.retry_limit") - limit, 10);
    let c = config(&format!(
        "output.elasticsearch: {{hosts: [\"{}\"], username: elastic, password: changeme}}\n",
        s.url(false)
    ));
    send(&c, 200..210);
    assert_eq!(cluster.lock().unwrap().doc_count(), 20);
}

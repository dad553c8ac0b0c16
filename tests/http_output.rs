//! `output.http` against a real HTTP/1.1 collector on loopback (tests/shipkit/server.rs):
//! formats, gzip, headers, basic auth, TLS with a generated CA and a client certificate,
//! retries on 500 and 429 (Retry-After), drops on other 4xx.

mod shipkit;

use serde_json::Value;
use shipkit::server::{Pki, Reply, Req, Server};
use shipkit::*;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The events of every request the collector acknowledged (2xx).
fn accepted_events(server: &Server, ok: impl Fn(&Req) -> bool) -> Vec<Value> {
    let mut out = Vec::new();
    for r in server.requests().iter().filter(|r| ok(r)) {
        let text = r.text();
        if text.trim_start().starts_with('[') {
            let v: Vec<Value> = serde_json::from_str(&text).unwrap();
            out.extend(v);
        } else {
            out.extend(
                text.lines()
                    .map(|l| serde_json::from_str::<Value>(l).unwrap()),
            );
        }
    }
    out
}

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

fn assert_exactly(events: &[Value], range: std::ops::Range<u64>) {
    let ids: Vec<String> = events.iter().map(identity).collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "duplicates among {} events",
        ids.len()
    );
    let cookies: Vec<u64> = events
        .iter()
        .map(|e| e["cookie"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        cookies,
        range.collect::<Vec<_>>(),
        "missing or out of order"
    );
}

#[test]
fn tls_with_client_certificate_gzip_headers_and_basic_auth() {
    let _g = serial();
    let dir = TempDir::new("http-tls");
    let pki = Pki::generate(dir.path(), "a");
    let server = Server::start(
        0,
        Some(pki.server_config(true)),
        Arc::new(|_| Reply::status(200)),
    );
    let c = config(&format!(
        "output.http:\n  hosts: [\"{}\"]\n  path: /ingest\n  compression_level: 5\n  \
         username: shipper\n  password: s3cret\n  headers: {{X-Team: net}}\n  bulk_max_size: 100\n  \
         ssl:\n    certificate_authorities: [{}]\n    certificate: {}\n    key: {}\n",
        server.url(true),
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    ));
    send(&c, 0..1000);
    let reqs = server.requests();
    assert!(reqs.len() >= 10, "{} requests", reqs.len());
    for r in &reqs {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/ingest");
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
        assert_eq!(r.header("x-team"), Some("net"));
        // base64("shipper:s3cret")
        assert_eq!(
            r.header("authorization"),
            Some("Basic c2hpcHBlcjpzM2NyZXQ=")
        );
        assert!(r.wire_len < r.body.len(), "the body was not compressed");
    }
    assert_exactly(&accepted_events(&server, |_| true), 0..1000);
}

#[test]
fn json_array_format_is_one_array_per_batch() {
    let _g = serial();
    let server = Server::start(0, None, Arc::new(|_| Reply::status(204)));
    let c = config(&format!(
        "output.http: {{hosts: [\"{}\"], format: json_array, bulk_max_size: 50}}\n\
         queue.mem.flush.min_events: 50\n",
        server.addr
    ));
    send(&c, 0..200);
    for r in server.requests() {
        assert_eq!(r.header("content-type"), Some("application/json"));
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert!(v.as_array().is_some_and(|a| !a.is_empty() && a.len() <= 50));
    }
    assert_exactly(&accepted_events(&server, |_| true), 0..200);
}

#[test]
fn a_collector_answering_500_for_10s_loses_nothing() {
    let _g = serial();
    let retries_before = counter("output.retries");
    let started = Instant::now();
    let server = Server::start(
        0,
        None,
        Arc::new(move |_| {
            if started.elapsed() < Duration::from_secs(10) {
                Reply::status(500).with_body("{\"error\":\"warming up\"}")
            } else {
                Reply::status(200)
            }
        }),
    );
    let c = config(&format!(
        "output.http:\n  hosts: [\"{}\"]\n  bulk_max_size: 500\n  backoff: {{init: 100ms, max: 1s}}\n\
         queue.mem: {{events: 2000, flush.min_events: 500, flush.timeout: 50ms}}\n",
        server.addr
    ));
    let (p, pipe) = pipeline(&c);
    // The sources keep producing during the outage; the queue holds what the output cannot
    // take, and the sources wait when it is full.
    for i in 0..20_000 {
        assert!(p.publish(conn_event(i)));
    }
    drop(p);
    assert!(pipe.finish(Duration::from_secs(120)));
    let reqs = server.requests();
    assert!(
        reqs.iter().any(|r| r.answered == 500),
        "the outage was not seen"
    );
    assert_exactly(&accepted_events(&server, |r| r.answered == 200), 0..20_000);
    assert!(
        counter("output.retries") > retries_before,
        "no retry was counted"
    );
}

#[test]
fn retry_after_is_honoured_on_429_and_413_drops_the_batch_with_a_logged_reason() {
    let _g = serial();
    let _logs = logs();
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let server = Server::start(
        0,
        None,
        Arc::new(move |r: &Req| {
            let n = c2.fetch_add(1, Ordering::SeqCst);
            let first: Value = serde_json::from_str(r.text().lines().next().unwrap()).unwrap();
            if first["cookie"] == "0" && n == 0 {
                Reply::status(429).with_header("retry-after", "1")
            } else if first["cookie"] == "100" {
                Reply::status(413).with_body("{\"error\":\"batch too big for us\"}")
            } else {
                Reply::status(200)
            }
        }),
    );
    let dropped_before = counter("output.events.dropped");
    let rejected_before = counter("output.events.rejected");
    // A 60 s backoff: if Retry-After were ignored the delivery would not finish in time.
    let c = config(&format!(
        "output.http:\n  hosts: [\"{}\"]\n  bulk_max_size: 100\n  backoff: {{init: 60s, max: 60s}}\n\
         queue.mem: {{events: 1000, flush.min_events: 100, flush.timeout: 5s}}\n",
        server.addr
    ));
    send(&c, 0..300);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 4, "429, its retry, 413, and the last batch");
    assert_eq!(counter("output.events.dropped") - dropped_before, 100);
    assert_eq!(counter("output.events.rejected") - rejected_before, 100);
    let logs = log_text();
    assert!(
        logs.contains("413 Payload Too Large") && logs.contains("batch too big for us"),
        "the drop reason was not logged:\n{logs}"
    );
    // What was accepted: the first and the last batch (requests 2 and 4).
    let accepted: Vec<Value> = [&reqs[1], &reqs[3]]
        .iter()
        .flat_map(|r| {
            r.text()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut expect: Vec<u64> = (0..100).collect();
    expect.extend(200..300);
    let got: Vec<u64> = accepted
        .iter()
        .map(|e| e["cookie"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(got, expect);
}

#[test]
fn an_untrusted_server_certificate_is_retried_not_dropped() {
    let _g = serial();
    let _logs = logs();
    let dir = TempDir::new("http-badca");
    let real = Pki::generate(dir.path(), "real");
    let other = Pki::generate(dir.path(), "other");
    let server = Server::start(
        0,
        Some(real.server_config(false)),
        Arc::new(|_| Reply::status(200)),
    );
    let c = config(&format!(
        "output.http:\n  hosts: [\"{}\"]\n  max_retries: 1\n  backoff: {{init: 10ms, max: 10ms}}\n  \
         ssl.certificate_authorities: [{}]\n",
        server.url(true),
        other.ca.display()
    ));
    let limit_before = counter("output.events.retry_limit");
    send(&c, 0..10);
    assert!(server.requests().is_empty());
    assert_eq!(counter("output.events.retry_limit") - limit_before, 10);
    let logs = log_text();
    assert!(
        logs.contains("UnknownIssuer") || logs.contains("unknown issuer"),
        "{logs}"
    );
}

//! `connbeat test output`: step by step, and the first failure names the setting at fault.
//! A wrong port, a wrong CA and a wrong password give three different, precise messages.

mod shipkit;

use shipkit::server::{Pki, Reply, Req, Server};
use shipkit::*;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

/// An HTTPS "Elasticsearch" that knows one user.
fn es(pki: &Pki) -> Server {
    Server::start(
        0,
        Some(pki.server_config(false)),
        Arc::new(|r: &Req| {
            // base64("elastic:changeme")
            if r.header("authorization") != Some("Basic ZWxhc3RpYzpjaGFuZ2VtZQ==") {
                return Reply::json(401, &serde_json::json!({"error": "unable to authenticate"}));
            }
            match (r.method.as_str(), r.path.as_str()) {
                ("GET", "/") => {
                    Reply::json(200, &serde_json::json!({"version": {"number": "8.15.0"}}))
                }
                _ => Reply::status(404),
            }
        }),
    )
}

fn test_output(dir: &Path, yaml: &str) -> (i32, String, String) {
    let cfg = write_config(dir, yaml);
    let out = Command::new(env!("CARGO_BIN_EXE_connbeat"))
        .arg("-c")
        .arg(cfg)
        .args(["test", "output"])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn es_yaml(url: &str, ca: &Path, password: &str) -> String {
    format!(
        "output.elasticsearch:\n  hosts: [\"{url}\"]\n  username: elastic\n  password: {password}\n  \
         ssl.certificate_authorities: [{}]\n",
        ca.display()
    )
}

#[test]
fn every_step_is_reported_when_all_is_well() {
    let dir = TempDir::new("testout-ok");
    let pki = Pki::generate(dir.path(), "ok");
    let server = es(&pki);
    let (code, out, err) =
        test_output(dir.path(), &es_yaml(&server.url(true), &pki.ca, "changeme"));
    assert_eq!(code, 0, "{out}{err}");
    for step in [
        "dns lookup of 127.0.0.1... OK",
        "tcp connect... OK",
        "tls handshake... OK (TLSv1_3",
        "authentication (GET /)... OK (Elasticsearch 8.15.0)",
        "does not exist yet",
    ] {
        assert!(out.contains(step), "{step:?} missing from:\n{out}");
    }
}

#[test]
fn wrong_port_wrong_ca_and_wrong_password_give_three_precise_messages() {
    let dir = TempDir::new("testout-bad");
    let pki = Pki::generate(dir.path(), "good");
    let other = Pki::generate(dir.path(), "other");
    let server = es(&pki);

    let closed = format!("https://127.0.0.1:{}", free_port());
    let (code, out, err) = test_output(dir.path(), &es_yaml(&closed, &pki.ca, "changeme"));
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("tcp connect... ERROR"), "{out}");
    assert!(
        err.starts_with("Error: output.elasticsearch.hosts: cannot connect to 127.0.0.1:")
            && err.contains("connection refused, nothing listens on that port"),
        "{err}"
    );

    let (code, out, err) = test_output(
        dir.path(),
        &es_yaml(&server.url(true), &other.ca, "changeme"),
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("tcp connect... OK") && out.contains("tls handshake... ERROR"),
        "{out}"
    );
    assert!(
        err.starts_with("Error: output.elasticsearch.ssl.certificate_authorities: the certificate of 127.0.0.1 is not signed by a trusted CA"),
        "{err}"
    );

    let (code, out, err) = test_output(dir.path(), &es_yaml(&server.url(true), &pki.ca, "hunter2"));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("tls handshake... OK") && out.contains("authentication (GET /)... ERROR"),
        "{out}"
    );
    assert!(
        err.starts_with("Error: output.elasticsearch.password:")
            && err.contains("refused the credentials of user \"elastic\" (401 Unauthorized)"),
        "{err}"
    );
    assert!(
        !out.contains("hunter2") && !err.contains("hunter2"),
        "the password was printed"
    );
}

#[test]
fn the_http_output_checks_credentials_with_an_empty_batch() {
    let dir = TempDir::new("testout-http");
    let server = Server::start(
        0,
        None,
        Arc::new(|r: &Req| {
            if r.header("authorization").is_some() {
                Reply::status(200)
            } else {
                Reply::status(401)
            }
        }),
    );
    let (code, out, err) = test_output(
        dir.path(),
        &format!("output.http: {{hosts: [\"{}\"]}}\n", server.addr),
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.starts_with("Error: output.http.password:"), "{err}");
    let (code, out, err) = test_output(
        dir.path(),
        &format!(
            "output.http: {{hosts: [\"{}\"], username: u, password: p}}\n",
            server.addr
        ),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("POST an empty batch to /events... OK (200 OK)"),
        "{out}"
    );
}

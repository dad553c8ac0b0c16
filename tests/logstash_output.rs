//! `output.logstash` against a Beats-protocol receiver (tests/shipkit/lumberjack.rs) that
//! acknowledges, delays, acknowledges part of a window or closes mid-window on command:
//! nothing is lost and nothing acknowledged is sent again; windows grow with
//! `slow_start`; the receiver killed and restarted twice during 100,000 events; TLS, and
//! the three TLS mistakes users make, each explained in `test output` and in the agent's
//! log with the setting to fix.

mod shipkit;

use shipkit::lumberjack::{Act, Receiver};
use shipkit::server::Pki;
use shipkit::*;
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

fn ls_yaml(r: &Receiver, extra: &str) -> String {
    format!("output.logstash:\n  hosts: [\"{}\"]\n{extra}", r.addr)
}

fn cookies(v: &[serde_json::Value]) -> Vec<u64> {
    v.iter()
        .map(|e| e["cookie"].as_str().unwrap().parse().unwrap())
        .collect()
}

fn publish_all(yaml: &str, range: std::ops::Range<u64>) {
    let (p, pipe) = pipeline(&config(yaml));
    for i in range {
        assert!(p.publish(conn_event(i)));
    }
    drop(p);
    assert!(pipe.finish(Duration::from_secs(60)), "not all acknowledged");
}

/// The agent's log of one `--once` run with this configuration (2 s to ship).
fn agent_log(dir: &Path, yaml: &str) -> String {
    let cfg = write_config(dir, &format!("{yaml}shutdown_timeout: 2s\n"));
    let mut agent = Agent::start(dir, &cfg, &["--once"]);
    agent.wait(Duration::from_secs(60));
    agent.stderr()
}

#[test]
fn events_arrive_with_their_metadata_and_in_order() {
    let _g = serial();
    let r = Receiver::start(None);
    let acked = counter("output.events.acked");
    publish_all(&ls_yaml(&r, "  index: myidx\n"), 0..500);
    let got = r.events();
    assert_eq!(cookies(&got), (0..500).collect::<Vec<_>>());
    assert_eq!(got[0]["@metadata"]["beat"], "myidx");
    assert_eq!(got[0]["@metadata"]["type"], "_doc");
    assert_eq!(got[0]["type"], "connbeat");
    assert_eq!(counter("output.events.acked") - acked, 500);
}

#[test]
fn partial_acks_and_mid_window_closes_resend_exactly_what_was_not_acknowledged() {
    let _g = serial();
    let _logs = logs();
    let r = Receiver::start(None);
    r.script([
        Act::AckEvery(10),
        Act::PartialThenClose(30),
        Act::CloseAfter(5),
        Act::Delay(Duration::from_millis(300)),
    ]);
    let yaml = ls_yaml(
        &r,
        "  bulk_max_size: 100\n  pipelining: 0\n  compression_level: 0\n  backoff: {init: 50ms, max: 100ms}\n\
         queue.mem: {events: 4096, flush.min_events: 100, flush.timeout: 1s}\n",
    );
    publish_all(&yaml, 0..200);
    // Exactly once each, in order: what was acknowledged was never sent again.
    assert_eq!(cookies(&r.events()), (0..200).collect::<Vec<_>>());
    // 100 in full (partial ACKs on the way); 100 of which 30 acknowledged before the
    // close; the 70 left: a window of 50 (halved) cut after 5 events, then 25.
    assert_eq!(r.windows()[..4], [100, 100, 50, 25], "{:?}", r.windows());
    assert!(r.connections() >= 3);
    assert!(
        log_text().contains("closed the connection before acknowledging 70 events"),
        "{}",
        log_text()
    );
}

#[test]
fn slow_start_grows_the_window_from_ten() {
    let _g = serial();
    let r = Receiver::start(None);
    publish_all(
        &ls_yaml(
            &r,
            "  bulk_max_size: 100\n  slow_start: true\n\
             queue.mem: {events: 4096, flush.min_events: 100, flush.timeout: 1s}\n",
        ),
        0..200,
    );
    assert_eq!(cookies(&r.events()), (0..200).collect::<Vec<_>>());
    // Two windows in flight (pipelining: 2): 10 and 10, then each ACK doubles the next.
    assert_eq!(r.windows()[..5], [10, 10, 20, 40, 20], "{:?}", r.windows());
}

/// 100,000 events while the receiver is killed and restarted twice, with `extra`
/// settings: every event arrives, at most the windows in flight are sent twice per kill,
/// and `output.events.acked` counts each event once. Returns the events in the order
/// they first arrived.
fn survive_two_receiver_kills(extra: &str) -> Vec<u64> {
    let mut r = Receiver::start(None);
    let yaml = ls_yaml(
        &r,
        &format!(
            "  bulk_max_size: 1000\n  pipelining: 2\n  timeout: 3s\n  backoff: {{init: 100ms, max: 1s}}\n{extra}\
             queue.mem: {{events: 4096, flush.min_events: 1000, flush.timeout: 50ms}}\n"
        ),
    );
    let acked = counter("output.events.acked");
    let n = 100_000u64;
    let (p, pipe) = pipeline(&config(&yaml));
    let feeder = std::thread::spawn(move || {
        for i in 0..n {
            assert!(p.publish(conn_event(i)));
        }
        p
    });
    for at in [30_000, 65_000] {
        wait_for(Duration::from_secs(120), "events to arrive", || {
            (r.event_count() >= at).then_some(())
        });
        let retries = counter("output.retries");
        r.kill();
        wait_for(Duration::from_secs(60), "a retry while it is down", || {
            (counter("output.retries") > retries).then_some(())
        });
        r.restart();
    }
    drop(feeder.join().unwrap());
    assert!(pipe.finish(Duration::from_secs(120)));
    let got = cookies(&r.events());
    let mut seen = HashSet::new();
    let firsts: Vec<u64> = got.iter().copied().filter(|c| seen.insert(*c)).collect();
    let duplicates = got.len() - firsts.len();
    eprintln!("{} events received, {duplicates} twice", got.len());
    // At most the windows in flight (pipelining: 2 of at most 1000 events per batch,
    // whatever the connections it is cut over) per kill.
    assert!(duplicates <= 2 * 2 * 1000, "{duplicates}");
    let mut all = firsts.clone();
    all.sort_unstable();
    assert_eq!(all, (0..n).collect::<Vec<_>>());
    assert_eq!(counter("output.events.acked") - acked, n);
    firsts
}

#[test]
fn a_hundred_thousand_events_survive_two_receiver_kills() {
    let _g = serial();
    let firsts = survive_two_receiver_kills("");
    assert_eq!(firsts, (0..100_000).collect::<Vec<_>>(), "in order");
}

#[test]
fn a_hundred_thousand_events_on_two_worker_connections_survive_two_receiver_kills() {
    let _g = serial();
    // Each batch goes out as two parts at once: all of them arrive, interleaved.
    survive_two_receiver_kills("  worker: 2\n");
}

/// Every receiver holds its ACK until both windows are there: only a client that sends
/// the halves of the batch at once, on two connections, gets through.
#[test]
fn worker_connections_send_parts_of_a_batch_at_once() {
    let _g = serial();
    let r = Receiver::start(None);
    r.script([Act::AckWhenWindows(2), Act::AckWhenWindows(2)]);
    let acked = counter("output.events.acked");
    publish_all(
        &ls_yaml(
            &r,
            "  worker: 2\n  bulk_max_size: 1000\n  backoff: {init: 50ms, max: 100ms}\n\
             queue.mem: {events: 4096, flush.min_events: 1000, flush.timeout: 1s}\n",
        ),
        0..1000,
    );
    assert_eq!(r.windows(), [500, 500]);
    assert_eq!(r.connections(), 2);
    let got = cookies(&r.events());
    // Each half in order, on its own connection.
    let (first, second): (Vec<u64>, Vec<u64>) = got.iter().copied().partition(|c| *c < 500);
    assert_eq!(first, (0..500).collect::<Vec<_>>());
    assert_eq!(second, (500..1000).collect::<Vec<_>>());
    let mut got = got;
    got.sort_unstable();
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
    assert_eq!(counter("output.events.acked") - acked, 1000);
}

/// With `loadbalance`, a batch is cut over every host's connections.
#[test]
fn loadbalance_sends_a_part_of_each_batch_to_every_host() {
    let _g = serial();
    let (a, b) = (Receiver::start(None), Receiver::start(None));
    let yaml = format!(
        "output.logstash:\n  hosts: [\"{}\", \"{}\"]\n  loadbalance: true\n  bulk_max_size: 400\n\
         queue.mem: {{events: 4096, flush.min_events: 400, flush.timeout: 1s}}\n",
        a.addr, b.addr
    );
    publish_all(&yaml, 0..800);
    assert_eq!(a.windows(), [200, 200]);
    assert_eq!(b.windows(), [200, 200]);
    let (ga, gb) = (cookies(&a.events()), cookies(&b.events()));
    assert_eq!(ga, (0..200).chain(400..600).collect::<Vec<_>>());
    assert_eq!(gb, (200..400).chain(600..800).collect::<Vec<_>>());
}

#[test]
fn tls_with_the_test_ca_and_a_client_certificate() {
    let _g = serial();
    let dir = TempDir::new("ls-tls");
    let pki = Pki::generate(dir.path(), "ls");
    let r = Receiver::start(Some(pki.server_config(true)));
    let yaml = ls_yaml(
        &r,
        &format!(
            "  ssl:\n    certificate_authorities: [\"{}\"]\n    certificate: \"{}\"\n    key: \"{}\"\n    supported_protocols: [TLSv1.3]\n",
            pki.ca.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        ),
    );
    let (ok, text) = test_output(dir.path(), &yaml);
    assert!(ok, "{text}");
    assert!(text.contains("tls handshake... OK (TLSv1_3"), "{text}");
    publish_all(&yaml, 0..100);
    assert_eq!(cookies(&r.events()), (0..100).collect::<Vec<_>>());
}

#[test]
fn a_certificate_for_another_host_names_both_and_the_setting() {
    let _g = serial();
    let dir = TempDir::new("ls-name");
    let pki = Pki::generate_for(dir.path(), "other", &["192.168.1.57"]);
    let r = Receiver::start(Some(pki.server_config(false)));
    let yaml = ls_yaml(
        &r,
        &format!(
            "  ssl.certificate_authorities: [\"{}\"]\n",
            pki.ca.display()
        ),
    );
    let want = "output.logstash.ssl.verification_mode: the certificate of 127.0.0.1 is valid for \
                192.168.1.57, not 127.0.0.1: set output.logstash.ssl.verification_mode or use the right certificate";
    let (ok, text) = test_output(dir.path(), &yaml);
    assert!(!ok);
    assert!(text.contains(want), "{text}");
    let log = agent_log(dir.path(), &yaml);
    assert!(log.contains(want), "{log}");
    // verification_mode: certificate accepts it (chain checked, name not).
    publish_all(
        &format!("{yaml}  ssl.verification_mode: certificate\n"),
        0..10,
    );
    assert_eq!(r.event_count(), 10);
}

#[test]
fn a_private_key_given_as_the_certificate_is_named() {
    let _g = serial();
    let dir = TempDir::new("ls-key");
    let pki = Pki::generate(dir.path(), "ls");
    let r = Receiver::start(Some(pki.server_config(true)));
    // The classic mistake: `ssl.certificate` written twice, the second one the key.
    let yaml = ls_yaml(
        &r,
        &format!(
            "  ssl.certificate_authorities: [\"{}\"]\n  ssl.certificate: \"{}\"\n",
            pki.ca.display(),
            pki.client_key.display()
        ),
    );
    // Refused when the configuration is read, by `test output` and the agent alike.
    let want = "output.logstash.ssl.certificate";
    let (ok, text) = test_output(dir.path(), &yaml);
    assert!(!ok);
    assert!(
        text.contains(want) && text.contains("holds a private key, not a certificate"),
        "{text}"
    );
    let log = agent_log(dir.path(), &yaml);
    assert!(
        log.contains(want) && log.contains("the key belongs under output.logstash.ssl.key"),
        "{log}"
    );
}

#[test]
fn a_server_that_wants_a_client_certificate_is_explained() {
    let _g = serial();
    let dir = TempDir::new("ls-client");
    let pki = Pki::generate(dir.path(), "ls");
    let r = Receiver::start(Some(pki.server_config(true)));
    let yaml = ls_yaml(
        &r,
        &format!(
            "  ssl.certificate_authorities: [\"{}\"]\n",
            pki.ca.display()
        ),
    );
    let want = "it may want a client certificate: set output.logstash.ssl.certificate and output.logstash.ssl.key";
    let (ok, text) = test_output(dir.path(), &yaml);
    assert!(!ok);
    assert!(
        text.contains("output.logstash.ssl.certificate: ") && text.contains(want),
        "{text}"
    );
    let log = agent_log(dir.path(), &yaml);
    assert!(log.contains(want), "{log}");
    // TLS 1.2: the server refuses during the handshake itself.
    let (ok, text) = test_output(
        dir.path(),
        &format!("{yaml}  ssl.supported_protocols: [TLSv1.2]\n"),
    );
    assert!(!ok);
    assert!(text.contains(want), "{text}");
    assert_eq!(r.event_count(), 0);
}

#[test]
fn an_encrypted_client_key_is_read_with_key_passphrase() {
    let _g = serial();
    let dir = TempDir::new("ls-enc");
    let pki = Pki::generate(dir.path(), "ls");
    let enc = dir.path().join("client-enc.key");
    let st = std::process::Command::new("openssl")
        .args([
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-passout",
            "pass:s3cret",
            "-in",
        ])
        .arg(&pki.client_key)
        .arg("-out")
        .arg(&enc)
        .status();
    if !st.is_ok_and(|s| s.success()) {
        return eprintln!("skipped: openssl cannot encrypt the key (scripts/install-deps.sh test)");
    }
    let r = Receiver::start(Some(pki.server_config(true)));
    let yaml = |pass: &str| {
        ls_yaml(
            &r,
            &format!(
                "  ssl:\n    certificate_authorities: [\"{}\"]\n    certificate: \"{}\"\n    key: \"{}\"\n    key_passphrase: \"{pass}\"\n",
                pki.ca.display(),
                pki.client_cert.display(),
                enc.display()
            ),
        )
    };
    let (ok, text) = test_output(dir.path(), &yaml("s3cret"));
    assert!(ok, "{text}");
    publish_all(&yaml("s3cret"), 0..10);
    assert_eq!(r.event_count(), 10);
    let (ok, text) = test_output(dir.path(), &yaml("wrong"));
    assert!(!ok);
    assert!(
        text.contains("output.logstash.ssl.key_passphrase") && text.contains("right passphrase"),
        "{text}"
    );
    let (ok, text) = test_output(dir.path(), &yaml(""));
    assert!(!ok);
    assert!(
        text.contains("is encrypted: set output.logstash.ssl.key_passphrase"),
        "{text}"
    );
}

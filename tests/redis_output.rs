//! `output.redis` against a real redis-server (tests/services/start-redis.sh): lists and
//! channels, `keys` with `when`, AUTH and `db`, TLS, a Redis error reply as one event's
//! failure, `test output`, and the server SIGKILLed and restarted twice in the middle of
//! 100,000 events. Skipped, loudly, when redis-server is not installed.

mod shipkit;

use connbeat::output::resp::Reply;
use shipkit::redis::{Client, RedisServer};
use shipkit::server::Pki;
use shipkit::*;
use std::collections::HashSet;
use std::time::Duration;

fn redis_config(hosts: &str, extra: &str) -> connbeat::config::Config {
    config(&format!("output.redis:\n  hosts: [{hosts}]\n{extra}"))
}

fn cookies(v: &[serde_json::Value]) -> Vec<u64> {
    v.iter()
        .map(|e| e["cookie"].as_str().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn a_hundred_thousand_events_survive_two_kills_of_redis_in_order_and_acked_once() {
    require_redis!();
    let _g = serial();
    let dir = TempDir::new("redis-kill");
    let mut redis = RedisServer::start(dir.path(), true, &[]);
    let c = redis_config(
        &format!("\"{}\"", redis.addr()),
        "  key: nl\n  timeout: 3s\n  backoff: {init: 100ms, max: 1s}\n  bulk_max_size: 1000\n\
         queue.mem: {events: 4096, flush.min_events: 1000, flush.timeout: 50ms}\n",
    );
    let acked_before = counter("output.events.acked");
    let n = 100_000u64;
    let (p, pipe) = pipeline(&c);
    let feeder = std::thread::spawn(move || {
        for i in 0..n {
            assert!(p.publish(conn_event(i)));
        }
        p
    });
    for at in [30_000, 65_000] {
        let mut reader = redis.client();
        wait_for(
            Duration::from_secs(120),
            &format!("{at} events in the list"),
            // A restarted server answers LOADING while it reads its append-only file.
            || matches!(reader.call(&["LLEN", "nl"]), Reply::Integer(n) if n >= at).then_some(()),
        );
        let retries = counter("output.retries");
        redis.kill();
        // The output notices: the pipeline retries while the server is down.
        wait_for(
            Duration::from_secs(60),
            "a retry while redis is down",
            || (counter("output.retries") > retries).then_some(()),
        );
        redis.restart();
    }
    drop(feeder.join().unwrap());
    assert!(
        pipe.finish(Duration::from_secs(180)),
        "not all acknowledged"
    );
    let got = redis.client().list("nl");
    let mut seen = HashSet::new();
    let firsts: Vec<u64> = cookies(&got)
        .into_iter()
        .filter(|c| seen.insert(*c))
        .collect();
    let duplicates = got.len() - firsts.len();
    eprintln!(
        "{} events in the list, {duplicates} of them twice",
        got.len()
    );
    // One batch in flight at a time: at most one batch sent twice per kill.
    assert!(duplicates <= 2 * 1000, "{duplicates} duplicates");
    // Every event, and in order (one key, one batch at a time).
    let first_out_of_order = firsts.iter().enumerate().find(|(i, c)| **c != *i as u64);
    assert_eq!(
        (firsts.len() as u64, first_out_of_order),
        (n, None),
        "events in first-seen order: {:?}",
        first_out_of_order.map(|(i, _)| &firsts[i.saturating_sub(3)..(i + 5).min(firsts.len())])
    );
    assert_eq!(counter("output.events.acked") - acked_before, n);
    assert_eq!(
        got.iter().map(identity).collect::<HashSet<_>>().len() as u64,
        n
    );
}

#[test]
fn keys_with_when_pick_the_list_and_a_wrongtype_reply_fails_only_its_event() {
    require_redis!();
    let _g = serial();
    let _logs = logs();
    let dir = TempDir::new("redis-keys");
    let redis = RedisServer::start(dir.path(), false, &[]);
    let mut cli = redis.client();
    assert_eq!(
        cli.call(&["SET", "taken", "a string"]),
        Reply::Simple("OK".into())
    );
    let c = redis_config(
        &format!("\"{}\"", redis.addr()),
        "  key: \"cb-%{[type]}\"\n  keys:\n    - key: \"even-%{[type]}\"\n      when.regexp.cookie: \"[02468]$\"\n    \
         - key: taken\n      when.equals.cookie: \"7\"\n  backoff: {init: 60s, max: 60s}\n",
    );
    let rejected = counter("output.events.rejected");
    let (p, pipe) = pipeline(&c);
    for i in 0..10 {
        assert!(p.publish(conn_event(i)));
    }
    drop(p);
    // A retry would wait 60 s: finishing in time shows the refused event was not retried.
    assert!(pipe.finish(Duration::from_secs(30)));
    assert_eq!(cookies(&cli.list("even-connbeat")), [0, 2, 4, 6, 8]);
    assert_eq!(cookies(&cli.list("cb-connbeat")), [1, 3, 5, 9]);
    assert_eq!(counter("output.events.rejected") - rejected, 1);
    let log = log_text();
    assert!(
        log.contains("dropped 1 events") && log.contains("WRONGTYPE"),
        "{log}"
    );
}

/// A batch's events for one key go in RPUSH commands of at most 128 KiB of events each
/// (one command when the batch is smaller), as Beats sends a batch in one command: two
/// batches of 500 events of about 500 bytes, so at least two commands each, every event
/// in order.
#[test]
fn a_batch_for_one_key_is_one_rpush_per_128_kib() {
    require_redis!();
    let _g = serial();
    let dir = TempDir::new("redis-bulk");
    let redis = RedisServer::start(dir.path(), false, &[]);
    let mut cli = redis.client();
    let c = redis_config(
        &format!("\"{}\"", redis.addr()),
        "  key: bulk\n  bulk_max_size: 500\n\
         queue.mem: {events: 4096, flush.min_events: 500, flush.timeout: 1s}\n",
    );
    let acked = counter("output.events.acked");
    let (p, pipe) = pipeline(&c);
    for i in 0..1000 {
        assert!(p.publish(conn_event(i)));
    }
    drop(p);
    assert!(pipe.finish(Duration::from_secs(30)));
    assert_eq!(cookies(&cli.list("bulk")), (0..1000).collect::<Vec<_>>());
    assert_eq!(counter("output.events.acked") - acked, 1000);
    // The commands the cut makes, from the stored events' own sizes: a batch of 500 is
    // cut where the next event would take a command past 128 KiB.
    let Reply::Array(Some(items)) = cli.call(&["LRANGE", "bulk", "0", "-1"]) else {
        panic!("LRANGE")
    };
    let sizes: Vec<usize> = items
        .iter()
        .map(|r| match r {
            Reply::Bulk(Some(b)) => b.len(),
            other => panic!("{other:?}"),
        })
        .collect();
    let mut expected = 0;
    for batch in sizes.chunks(500) {
        let mut run = 0;
        for (n, &len) in batch.iter().enumerate() {
            if n == 0 || run + len > 128 * 1024 {
                expected += 1;
                run = 0;
            }
            run += len;
        }
    }
    assert!(expected >= 4, "500 events of {} bytes", sizes[0]);
    let Reply::Bulk(Some(stats)) = cli.call(&["INFO", "commandstats"]) else {
        panic!("INFO")
    };
    let stats = String::from_utf8_lossy(&stats);
    assert!(
        stats.contains(&format!("cmdstat_rpush:calls={expected},")),
        "{stats}"
    );
}

#[test]
fn password_and_db_are_used_and_test_output_names_the_setting_at_fault() {
    require_redis!();
    let _g = serial();
    let dir = TempDir::new("redis-auth");
    let redis = RedisServer::start(
        dir.path(),
        false,
        &["--requirepass".into(), "s3cret".into()],
    );
    let mut cli = redis.client();
    assert_eq!(cli.call(&["AUTH", "s3cret"]), Reply::Simple("OK".into()));
    assert_eq!(cli.call(&["SELECT", "3"]), Reply::Simple("OK".into()));
    assert_eq!(cli.call(&["SET", "str", "x"]), Reply::Simple("OK".into()));
    let base = format!(
        "output.redis:\n  hosts: [\"{}\"]\n  db: 3\n  timeout: 5s\n",
        redis.addr()
    );
    let (ok, text) = test_output(
        dir.path(),
        &format!("{base}  password: s3cret\n  key: ev\n"),
    );
    assert!(ok, "{text}");
    for step in [
        "tcp connect... OK",
        "AUTH... OK (OK)",
        "SELECT 3... OK (OK)",
        "type of key ev... OK (not there yet, RPUSH creates it)",
    ] {
        assert!(text.contains(step), "{step:?} not in {text}");
    }
    let (ok, text) = test_output(dir.path(), &format!("{base}  password: wrong\n"));
    assert!(!ok);
    assert!(text.contains("output.redis.password:"), "{text}");
    let (ok, text) = test_output(dir.path(), &base);
    assert!(!ok);
    assert!(
        text.contains("output.redis.password:") && text.contains("NOAUTH"),
        "{text}"
    );
    let (ok, text) = test_output(
        dir.path(),
        &format!("{base}  password: s3cret\n  key: str\n"),
    );
    assert!(!ok);
    assert!(
        text.contains("output.redis.key: str holds a string, not a list"),
        "{text}"
    );

    let c = redis_config(
        &format!("\"{}\"", redis.addr()),
        "  password: s3cret\n  db: 3\n  key: ev\n",
    );
    let (p, pipe) = pipeline(&c);
    for i in 0..5 {
        assert!(p.publish(conn_event(i)));
    }
    drop(p);
    assert!(pipe.finish(Duration::from_secs(30)));
    assert_eq!(cookies(&cli.list("ev")), [0, 1, 2, 3, 4]);
    assert_eq!(cli.call(&["SELECT", "0"]), Reply::Simple("OK".into()));
    assert_eq!(cli.int(&["EXISTS", "ev"]), 0, "written to db 0");
}

#[test]
fn datatype_channel_publishes_to_a_subscriber() {
    require_redis!();
    let _g = serial();
    let dir = TempDir::new("redis-chan");
    let redis = RedisServer::start(dir.path(), false, &[]);
    let mut sub = redis.client();
    let Reply::Array(Some(confirm)) = sub.call(&["SUBSCRIBE", "events"]) else {
        panic!("no subscription")
    };
    assert_eq!(confirm[0], Reply::Bulk(Some(b"subscribe".to_vec())));
    let c = redis_config(
        &format!("\"{}\"", redis.addr()),
        "  key: events\n  datatype: channel\n",
    );
    let (p, pipe) = pipeline(&c);
    for i in 0..50 {
        assert!(p.publish(conn_event(i)));
    }
    drop(p);
    assert!(pipe.finish(Duration::from_secs(30)));
    let mut got = Vec::new();
    for _ in 0..50 {
        match sub.next() {
            Reply::Array(Some(m)) => match &m[2] {
                Reply::Bulk(Some(b)) => got.push(serde_json::from_slice(b).unwrap()),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(cookies(&got), (0..50).collect::<Vec<_>>());
}

#[test]
fn tls_to_redis_with_the_test_ca() {
    require_redis!();
    let _g = serial();
    let dir = TempDir::new("redis-tls");
    let pki = Pki::generate(dir.path(), "redis");
    let tls_port = free_port();
    let redis = RedisServer::start(
        dir.path(),
        false,
        &[
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            pki.server_cert.display().to_string(),
            "--tls-key-file".into(),
            pki.server_key.display().to_string(),
            "--tls-ca-cert-file".into(),
            pki.ca.display().to_string(),
            "--tls-auth-clients".into(),
            "no".into(),
        ],
    );
    wait_for(Duration::from_secs(30), "the TLS port", || {
        std::net::TcpStream::connect(("127.0.0.1", tls_port)).ok()
    });
    let yaml = format!(
        "output.redis:\n  hosts: [\"127.0.0.1:{tls_port}\"]\n  key: tls\n  ssl:\n    certificate_authorities: [\"{}\"]\n",
        pki.ca.display()
    );
    let (ok, text) = test_output(dir.path(), &yaml);
    assert!(ok, "{text}");
    assert!(text.contains("tls handshake... OK (TLSv1_3"), "{text}");
    let (p, pipe) = pipeline(&config(&yaml));
    for i in 0..20 {
        assert!(p.publish(conn_event(i)));
    }
    drop(p);
    assert!(pipe.finish(Duration::from_secs(30)));
    assert_eq!(
        cookies(&Client::connect(&redis.addr()).list("tls")),
        (0..20).collect::<Vec<_>>()
    );
    // Without the CA, the handshake fails and says which setting to fix.
    let no_ca =
        format!("output.redis:\n  hosts: [\"127.0.0.1:{tls_port}\"]\n  ssl: {{enabled: true}}\n");
    let (ok, text) = test_output(dir.path(), &no_ca);
    assert!(!ok);
    assert!(
        text.contains("output.redis.ssl.certificate_authorities:"),
        "{text}"
    );
}

#[test]
fn through_a_socks5_proxy_which_resolves_the_name() {
    require_redis!();
    let _g = serial();
    let dir = TempDir::new("redis-socks");
    let redis = RedisServer::start(dir.path(), false, &[]);
    let proxy = shipkit::socks::Socks5::start(Some(("u", "pw")));
    let yaml = |url: &str| {
        format!(
            "output.redis:\n  hosts: [\"localhost:{}\"]\n  key: px\n  proxy_url: \"{url}\"\n",
            redis.port
        )
    };
    let good = yaml(&proxy.url(Some(("u", "pw"))));
    let (ok, text) = test_output(dir.path(), &good);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!(
            "connect through the SOCKS5 proxy 127.0.0.1:{}... OK",
            proxy.addr.port()
        )),
        "{text}"
    );
    let (p, pipe) = pipeline(&config(&good));
    for i in 0..10 {
        assert!(p.publish(conn_event(i)));
    }
    drop(p);
    assert!(pipe.finish(Duration::from_secs(30)));
    assert_eq!(
        cookies(&redis.client().list("px")),
        (0..10).collect::<Vec<_>>()
    );
    // The name went to the proxy, which resolved it.
    assert!(
        proxy
            .targets
            .lock()
            .unwrap()
            .iter()
            .all(|t| *t == format!("localhost:{}", redis.port))
    );
    let (ok, text) = test_output(dir.path(), &yaml(&proxy.url(Some(("u", "wrong")))));
    assert!(!ok);
    assert!(
        text.contains("output.redis.proxy_url:") && text.contains("refused the user and password"),
        "{text}"
    );
}

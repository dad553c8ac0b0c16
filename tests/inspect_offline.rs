//! Offline deep inspection of the recorded captures in tests/data, compared field by field
//! with what tshark decodes from the same file (computed here, not hard-coded).

mod inspect_util;

use inspect_util::*;
use serde_json::Value;
use std::collections::BTreeMap;

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

#[test]
fn http_matches_tshark() {
    if !have_tshark("http_matches_tshark") {
        return;
    }
    let path = data("http.pcap");
    let (events, _) = inspect(&path);
    let http = of_type(&events, "http");
    let requests = tshark(
        &path,
        "http.request",
        &["http.request.method", "http.request.uri"],
    );
    let codes = tshark(&path, "http.response", &["http.response.code"]);
    assert!(!requests.is_empty());
    assert_eq!(
        http.len(),
        requests.len(),
        "one transaction per request tshark sees"
    );
    let ours: Vec<(String, String)> = http
        .iter()
        .map(|e| {
            (
                e["method"].as_str().unwrap().to_string(),
                e["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let theirs: Vec<(String, String)> = requests
        .iter()
        .map(|r| (r[0].clone(), r[1].split('?').next().unwrap().to_string()))
        .collect();
    assert_eq!(sorted(ours), sorted(theirs));
    let our_codes: Vec<String> = http
        .iter()
        .map(|e| e["http"]["response"]["code"].to_string())
        .collect();
    let their_codes: Vec<String> = codes.iter().map(|c| c[0].clone()).collect();
    assert_eq!(sorted(our_codes), sorted(their_codes));
    for e in &http {
        let code = e["http"]["response"]["code"].as_u64().unwrap();
        let want = match code {
            500.. => "Server Error",
            400.. => "Client Error",
            _ => "OK",
        };
        assert_eq!(e["status"], want, "{e}");
    }
    // Settings visible in the events.
    let q = http
        .iter()
        .find(|e| e["http"]["request"]["params"].is_string())
        .expect("a request with params");
    assert_eq!(q["http"]["request"]["params"], "user=alice&password=xxxxx");
    assert_eq!(q["real_ip"], "203.0.113.7");
    let form = http.iter().find(|e| e["path"] == "/login").unwrap();
    assert_eq!(form["http"]["request"]["params"], "user=bob&pass=xxxxx");
    assert!(
        http.iter()
            .any(|e| e["http"]["request"]["headers"]["user-agent"] == "connbeat-test")
    );
    let auth = http
        .iter()
        .find(|e| e["path"] == "/missing" && e["bytes_in"].as_u64() > Some(100));
    assert!(auth.is_some());
    assert!(
        !serde_json::to_string(&events)
            .unwrap()
            .contains("dXNlcjpwdw"),
        "Authorization leaked"
    );
}

#[test]
fn dns_matches_tshark() {
    if !have_tshark("dns_matches_tshark") {
        return;
    }
    let path = data("dns.pcap");
    let (events, _) = inspect(&path);
    let dns = of_type(&events, "dns");
    let resp = tshark(
        &path,
        "dns.flags.response == 1",
        &["dns.id", "dns.qry.name", "dns.flags.rcode", "dns.a"],
    );
    assert!(!resp.is_empty());
    assert_eq!(dns.len(), resp.len());
    let rcode = |s: &str| match s {
        "NOERROR" => "0",
        "NXDOMAIN" => "3",
        "SERVFAIL" => "2",
        other => panic!("unexpected {other}"),
    };
    let ours: Vec<(String, String, String, String)> = dns
        .iter()
        .map(|e| {
            let d = &e["dns"];
            let a: Vec<String> = d["answers"]
                .as_array()
                .map(|v| {
                    v.iter()
                        .filter(|r| r["type"] == "A")
                        .map(|r| r["data"].as_str().unwrap().to_string())
                        .collect()
                })
                .unwrap_or_default();
            (
                d["id"].to_string(),
                d["question"]["name"].as_str().unwrap().to_string(),
                rcode(d["response_code"].as_str().unwrap()).to_string(),
                a.join("|"),
            )
        })
        .collect();
    let theirs: Vec<(String, String, String, String)> = resp
        .iter()
        .map(|r| {
            let id = u16::from_str_radix(r[0].trim_start_matches("0x"), 16)
                .unwrap()
                .to_string();
            (id, r[1].clone(), r[2].clone(), r[3].clone())
        })
        .collect();
    assert_eq!(sorted(ours), sorted(theirs));
    assert!(
        dns.iter().any(|e| e["transport"] == "tcp"),
        "the dig +tcp query"
    );
    assert!(
        dns.iter()
            .any(|e| e["status"] == "Error" && e["dns"]["response_code"] == "NXDOMAIN")
    );
}

/// Splits tshark's per-packet RESP fields into commands: each top-level array of a client
/// packet takes `length` bulk strings.
fn tshark_redis_commands(rows: &[Vec<String>]) -> Vec<String> {
    let mut methods = Vec::new();
    for r in rows {
        let lens: Vec<usize> = r[0].split('|').filter_map(|s| s.parse().ok()).collect();
        let bulks: Vec<&str> = r[1].split('|').collect();
        let mut at = 0;
        for n in lens {
            if let Some(m) = bulks.get(at) {
                methods.push(unhex(m).to_uppercase());
            }
            at += n;
        }
    }
    methods
}

#[test]
fn redis_matches_tshark() {
    if !have_tshark("redis_matches_tshark") {
        return;
    }
    let path = data("redis.pcapng");
    let (events, _) = inspect(&path);
    let redis = of_type(&events, "redis");
    let rows = tshark(
        &path,
        "tcp.dstport == 16379 && resp",
        &["resp.array.length", "resp.bulk_string.value"],
    );
    let theirs = tshark_redis_commands(&rows);
    assert!(!theirs.is_empty());
    let ours: Vec<String> = redis
        .iter()
        .map(|e| e["method"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(sorted(ours), sorted(theirs));
    let errors = tshark(&path, "tcp.srcport == 16379 && resp.error", &["resp.error"]);
    let our_errors: Vec<String> = redis
        .iter()
        .filter_map(|e| e["redis"]["error"].as_str().map(String::from))
        .collect();
    assert_eq!(our_errors.len(), errors.len());
    for e in &redis {
        assert_eq!(e["status"] == "Error", e["redis"]["error"].is_string());
    }
    let by_method: BTreeMap<&str, &Value> = redis
        .iter()
        .map(|e| (e["query"].as_str().unwrap(), *e))
        .collect();
    assert_eq!(by_method["GET greeting"]["redis"]["return_value"], "hello");
    assert_eq!(
        by_method["LRANGE list 0 -1"]["redis"]["return_value"],
        "[a, b, c]"
    );
    assert_eq!(
        by_method["HGETALL h"]["redis"]["return_value"], "[f, v]",
        "RESP3 map"
    );
}

#[test]
fn cli_reads_a_capture_and_prints_events() {
    let dir = TempDir::new("cli");
    let cfg = dir.0.join("connbeat.yml");
    std::fs::write(&cfg, PROTOCOLS_YAML).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_connbeat"))
        .args(["-c", cfg.to_str().unwrap(), "--strict.perms=false", "-I"])
        .arg(data("redis.pcapng"))
        .output()
        .expect("run connbeat");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON"))
        .collect();
    let (lib, _) = inspect(&data("redis.pcapng"));
    assert_eq!(events.len(), lib.len());
    assert!(
        events
            .iter()
            .all(|e| e["type"] == "redis" && e["@timestamp"].is_string())
    );
}

#[test]
fn mysql_matches_tshark() {
    if !have_tshark("mysql_matches_tshark") {
        return;
    }
    let path = data("mysql.pcap");
    let (events, _) = inspect(&path);
    let my = of_type(&events, "mysql");
    // Commands that get a response (QUIT, STMT_CLOSE and SEND_LONG_DATA get none).
    let cmds = tshark(
        &path,
        "mysql.command && mysql.command != 1 && mysql.command != 24 && mysql.command != 25",
        &["mysql.command", "mysql.query"],
    );
    assert_eq!(my.len(), cmds.len());
    let theirs: Vec<String> = cmds
        .iter()
        .filter(|c| c[0] == "3" || c[0] == "22")
        .map(|c| c[1].clone())
        .collect();
    let ours: Vec<String> = my
        .iter()
        .filter(|e| e["method"] != "SELECT" || e["mysql"]["statement_id"].is_null())
        .filter_map(|e| e["query"].as_str().map(String::from))
        .collect();
    assert_eq!(sorted(ours), sorted(theirs));
    let errs = tshark(&path, "mysql.error_code", &["mysql.error_code"]);
    let our_errs: Vec<String> = my
        .iter()
        .filter_map(|e| e["mysql"]["error_code"].as_u64().map(|c| c.to_string()))
        .collect();
    assert_eq!(
        sorted(our_errs),
        sorted(errs.iter().map(|e| e[0].clone()).collect())
    );
    let affected = tshark(&path, "mysql.affected_rows > 0", &["mysql.affected_rows"]);
    let our_aff: Vec<String> = my
        .iter()
        .filter_map(|e| {
            e["mysql"]["affected_rows"]
                .as_u64()
                .filter(|n| *n > 0)
                .map(|n| n.to_string())
        })
        .collect();
    assert_eq!(
        sorted(our_aff),
        sorted(affected.iter().map(|e| e[0].clone()).collect())
    );
    let select = my
        .iter()
        .find(|e| e["query"] == "SELECT * FROM t.kv WHERE k >= 2")
        .unwrap();
    assert_eq!(select["mysql"]["num_rows"], 2);
    let executes = my
        .iter()
        .filter(|e| e["mysql"]["statement_id"].is_u64() && e["method"] == "SELECT")
        .count();
    assert_eq!(
        executes,
        tshark(&path, "mysql.command == 23", &["mysql.command"]).len()
    );
}

#[test]
fn pgsql_matches_tshark() {
    if !have_tshark("pgsql_matches_tshark") {
        return;
    }
    let path = data("pgsql.pcap");
    let (events, _) = inspect(&path);
    let pg = of_type(&events, "pgsql");
    let queries = tshark(
        &path,
        "pgsql.frontend == 1 && (pgsql.type == \"Simple query\" || pgsql.type == \"Parse\")",
        &["pgsql.query"],
    );
    let theirs: Vec<String> = queries
        .iter()
        .flat_map(|q| q[0].split('|').map(String::from).collect::<Vec<_>>())
        .collect();
    let ours: Vec<String> = pg
        .iter()
        .map(|e| e["query"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(sorted(ours), sorted(theirs));
    let tags = tshark(&path, "pgsql.tag", &["pgsql.tag"]);
    let their_tags: Vec<String> = tags
        .iter()
        .flat_map(|t| t[0].split('|').map(String::from).collect::<Vec<_>>())
        .collect();
    let our_tags: Vec<String> = pg
        .iter()
        .filter_map(|e| e["pgsql"]["command_tag"].as_str().map(String::from))
        .collect();
    assert_eq!(sorted(our_tags), sorted(their_tags));
    let codes = tshark(&path, "pgsql.code", &["pgsql.code"]);
    let our_codes: Vec<String> = pg
        .iter()
        .filter_map(|e| e["pgsql"]["error_code"].as_str().map(String::from))
        .collect();
    assert_eq!(
        sorted(our_codes),
        sorted(codes.iter().map(|c| c[0].clone()).collect())
    );
    assert!(
        pg.iter()
            .all(|e| (e["status"] == "Error") == e["pgsql"]["error_code"].is_string())
    );
    let sel = pg
        .iter()
        .find(|e| e["query"] == "SELECT * FROM kv WHERE k >= 2")
        .unwrap();
    assert_eq!(sel["pgsql"]["num_rows"], 2);
}

#[test]
fn tls_matches_tshark() {
    if !have_tshark("tls_matches_tshark") {
        return;
    }
    let path = data("tls.pcap");
    let (events, _) = inspect(&path);
    let tls = of_type(&events, "tls");
    let hellos = tshark(
        &path,
        "tls.handshake.type == 1",
        &["tls.handshake.extensions_server_name", "tls.handshake.ja3"],
    );
    assert_eq!(tls.len(), hellos.len());
    let ours: Vec<(String, String)> = tls
        .iter()
        .map(|e| {
            (
                e["tls"]["server_name"].as_str().unwrap_or("").to_string(),
                e["tls"]["ja3"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let theirs: Vec<(String, String)> = hellos
        .iter()
        .map(|h| (h[0].clone(), h[1].clone()))
        .collect();
    assert_eq!(sorted(ours), sorted(theirs));
    let servers = tshark(
        &path,
        "tls.handshake.type == 2",
        &["tls.handshake.ciphersuite"],
    );
    let established: Vec<&&Value> = tls
        .iter()
        .filter(|e| e["tls"]["established"] == true)
        .collect();
    assert_eq!(established.len(), servers.len());
    assert!(
        established
            .iter()
            .all(|e| e["tls"]["cipher"].as_str().unwrap().starts_with("TLS_"))
    );
    // Plaintext alerts (encrypted ones after the handshake have no readable description).
    let alerts = tshark(&path, "tls.alert_message.desc", &["tls.alert_message.desc"]);
    assert_eq!(
        tls.iter().filter(|e| e["status"] == "Error").count(),
        alerts.len()
    );
    let alpn: Vec<&str> = tls
        .iter()
        .filter_map(|e| e["tls"]["alpn"].as_str())
        .collect();
    assert!(
        alpn.contains(&"h2") && alpn.contains(&"http/1.1"),
        "{alpn:?}"
    );
}

#[test]
fn memcache_matches_tshark() {
    if !have_tshark("memcache_matches_tshark") {
        return;
    }
    let path = data("memcache.pcap");
    let (events, _) = inspect(&path);
    let mc = of_type(&events, "memcache");
    // TCP requests: tshark names text commands, and binary ones by opcode.
    let rows = tshark(
        &path,
        "memcache && tcp.dstport == 11311",
        &["memcache.command", "memcache.opcode"],
    );
    let name = |cmd: &str, op: &str| match (cmd, op) {
        ("", "") => "?".to_string(),
        ("", op) => format!("op{op}"),
        (cmd, _) => cmd.to_string(),
    };
    let theirs: Vec<String> = rows
        .iter()
        .map(|r| name(&r[0], r.get(1).map_or("", |s| s)))
        .collect();
    let tcp: Vec<&&Value> = mc.iter().filter(|e| e["transport"] == "tcp").collect();
    let ours: Vec<String> = tcp
        .iter()
        .map(|e| {
            let r = &e["memcache"]["request"];
            match r["opcode_value"].as_u64() {
                Some(op) => format!("op{op}"),
                None => r["command"].as_str().unwrap().to_string(),
            }
        })
        .collect();
    // tshark does not know `touch`: it decodes that request without a command.
    let ours_named: Vec<String> = ours.iter().filter(|c| *c != "touch").cloned().collect();
    let theirs_named: Vec<String> = theirs.iter().filter(|c| *c != "?").cloned().collect();
    assert_eq!(sorted(ours_named), sorted(theirs_named));
    assert_eq!(
        ours.iter().filter(|c| *c == "touch").count(),
        theirs.iter().filter(|c| *c == "?").count()
    );
    // The key and flags tshark reads in each text `set`.
    let sets = tshark(
        &path,
        "memcache.command == \"set\" && tcp.dstport == 11311",
        &["memcache.key", "memcache.flags"],
    );
    for row in &sets {
        let e = tcp
            .iter()
            .find(|e| {
                e["memcache"]["request"]["command"] == "set"
                    && e["memcache"]["request"]["keys"][0] == row[0].as_str()
            })
            .unwrap_or_else(|| panic!("no set of {}", row[0]));
        assert_eq!(e["memcache"]["request"]["flags"].to_string(), row[1]);
    }
    // UDP: one text set (noreply) and one get, whose reply came in several datagrams.
    let udp: Vec<&&Value> = mc.iter().filter(|e| e["transport"] == "udp").collect();
    assert_eq!(udp.len(), 2);
    let get = udp
        .iter()
        .find(|e| e["memcache"]["request"]["command"] == "get")
        .unwrap();
    let datagrams = tshark(&path, "udp.srcport == 11311", &["frame.number"]);
    assert!(datagrams.len() > 1);
    assert_eq!(get["memcache"]["response"]["bytes"], 3000);
    let failed: Vec<&&Value> = mc.iter().filter(|e| e["status"] != "OK").collect();
    assert_eq!(failed.len(), 1, "the second delete of k2");
    assert_eq!(failed[0]["memcache"]["response"]["command"], "NOT_FOUND");
}

#[test]
fn mongodb_matches_tshark() {
    if !have_tshark("mongodb_matches_tshark") {
        return;
    }
    for file in ["mongodb-plain.pcap", "mongodb-zlib.pcap"] {
        let path = data(file);
        let (events, _) = inspect(&path);
        let mongo = of_type(&events, "mongodb");
        // tshark's first element name of each request (zlib ones decompressed) is the command.
        let rows = tshark(
            &path,
            "mongo && tcp.dstport == 27117",
            &["mongo.element.name"],
        );
        let theirs: Vec<String> = rows
            .iter()
            .map(|r| r[0].split('|').next().unwrap().to_string())
            .collect();
        let ours: Vec<String> = mongo
            .iter()
            .map(|e| e["method"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(sorted(ours), sorted(theirs), "{file}");
        let errors = tshark(
            &path,
            "mongo && tcp.srcport == 27117 && mongo.element.name == \"errmsg\"",
            &["frame.number"],
        );
        let ours_err: Vec<&&Value> = mongo.iter().filter(|e| e["status"] == "Error").collect();
        assert_eq!(ours_err.len(), errors.len(), "{file}");
        assert_eq!(ours_err[0]["mongodb"]["error"], "boom failed");
    }
}

/// tests/data/smtp.pcap: smtplib (AUTH refused twice then accepted, two messages, a
/// refused recipient, a message whose only recipient is refused), swaks (a message to two
/// recipients, and a STARTTLS session), against aiosmtpd.
#[test]
fn smtp_matches_tshark() {
    if !have_tshark("smtp_matches_tshark") {
        return;
    }
    let path = data("smtp.pcap");
    let (events, _) = inspect(&path);
    let smtp = of_type(&events, "smtp");
    let of = |cmd: &str| -> Vec<&Value> {
        smtp.iter()
            .copied()
            .filter(|e| e["smtp"]["command"] == cmd)
            .collect()
    };
    // Every DATA that got 354 handed a message over (250 after the body here).
    let go_aheads = tshark(&path, "smtp.response.code == 354", &["smtp.response.code"]);
    assert_eq!(of("DATA").len(), go_aheads.len());
    let refused = tshark(&path, "smtp.response.code == 550", &["smtp.response.code"]);
    assert_eq!(of("RCPT").len(), refused.len());
    let auth_refused = tshark(&path, "smtp.response.code == 535", &["smtp.response.code"]);
    assert_eq!(of("AUTH").len(), auth_refused.len());
    assert_eq!(of("STARTTLS").len(), 1);
    assert_eq!(
        smtp.len(),
        go_aheads.len() + refused.len() + auth_refused.len() + 1
    );
    let mut rcpts: Vec<String> = tshark(
        &path,
        "smtp.req.command matches \"(?i)^rcpt$\"",
        &["smtp.req.parameter"],
    )
    .into_iter()
    .map(|r| {
        let p = &r[0];
        p[p.find('<').unwrap() + 1..p.find('>').unwrap()].to_string()
    })
    .filter(|r| !r.starts_with("nobody@"))
    .collect();
    // The STARTTLS session's recipient is encrypted: neither side sees it.
    rcpts.retain(|r| r != "u@x.test");
    let ours: Vec<String> = of("DATA")
        .iter()
        .flat_map(|e| e["smtp"]["to"].as_array().unwrap().clone())
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(sorted(ours), sorted(rcpts));
    for e in of("DATA") {
        assert_eq!(e["status"], "OK");
        assert_eq!(e["smtp"]["reply_code"], 250);
    }
    let text = serde_json::to_string(&smtp).unwrap();
    assert!(
        !text.contains("c2VjcmV0") && !text.contains("secret"),
        "{text}"
    );
}

/// The ECS transactions of Packetbeat's `http_minitwit.pcap` (a browser at 192.168.1.104
/// asks 192.168.1.110:80, which asks a local app on 127.0.0.1:5000) under `settings`:
/// (client ip, network.direction, @timestamp) of each.
fn minitwit_ecs(settings: &str) -> Vec<(String, String, String)> {
    let yaml = format!(
        "output.console: {{enabled: true}}\nconnbeat.event_format: ecs\n{settings}\n\
         connbeat.protocols:\n  - {{type: http, ports: [80, 5000]}}\n"
    );
    let config = connbeat::config::from_yaml_str(&yaml, &[], &|_| None).unwrap();
    let mut events = Vec::new();
    let mut sink = |e: connbeat::event::Event| events.push(e);
    let path = data("packetbeat-suite/pcaps/http_minitwit.pcap");
    connbeat::inspect::run_offline_with(&config, &path, &mut sink, None).expect("offline run");
    let common = connbeat::event::CommonFields::from_config(&config);
    events
        .into_iter()
        .map(|e| {
            let v = common.finish(e).value();
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (
                s(&v["client"]["ip"]),
                s(&v["network"]["direction"]),
                s(&v["@timestamp"]),
            )
        })
        .collect()
}

/// `network.direction` follows `connbeat.interfaces.internal_networks` (Packetbeat's key
/// and default, `private`), from client to server; `timestamp.precision: microsecond`
/// keeps the capture's microseconds.
#[test]
fn ecs_direction_follows_internal_networks_and_precision_is_honoured() {
    let directions = |settings: &str| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = minitwit_ecs(settings)
            .into_iter()
            .map(|(client, direction, _)| (client, direction))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
    // Default: 192.168/16 is private, loopback is not.
    assert_eq!(
        directions(""),
        [
            pair("127.0.0.1", "external"),
            pair("192.168.1.104", "internal")
        ]
    );
    // Only the browser's address inside: it goes out.
    assert_eq!(
        directions("connbeat.interfaces.internal_networks: [192.168.1.104/32]"),
        [
            pair("127.0.0.1", "external"),
            pair("192.168.1.104", "outbound")
        ]
    );
    // Only the server inside: the browser comes in.
    assert_eq!(
        directions("connbeat.interfaces.internal_networks: [192.168.1.110]"),
        [
            pair("127.0.0.1", "external"),
            pair("192.168.1.104", "inbound")
        ]
    );
    assert_eq!(
        directions("connbeat.interfaces.internal_networks: [loopback]"),
        [
            pair("127.0.0.1", "internal"),
            pair("192.168.1.104", "external")
        ]
    );
    // Precision: the first request, at 16:29:39.645787 in the capture.
    let first = |settings: &str| {
        minitwit_ecs(settings)
            .into_iter()
            .map(|(_, _, at)| at)
            .min()
            .unwrap()
    };
    assert_eq!(first(""), "2013-07-22T16:29:39.645Z");
    assert_eq!(
        first("timestamp.precision: microsecond"),
        "2013-07-22T16:29:39.645787Z"
    );
    assert_eq!(
        first("timestamp.precision: nanosecond"),
        "2013-07-22T16:29:39.645787Z",
        "a capture has microseconds; Go drops trailing zeros"
    );
}

//! The configuration from the command line: every error path exits 1 with a message that
//! names the key or the file; dotted keys, `${VAR}` / `${VAR:default}` and `-E` take effect
//! (seen in `export config` and in what the agent does).

mod common;

use common::*;
use serde_yaml_ng::Value as Yaml;
use std::path::Path;
use std::process::{Command, Output};

fn connbeat(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(CONNBEAT);
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run connbeat")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Exit code 1, nothing on stdout that says OK, and every `needles` in stderr.
fn assert_config_error(out: &Output, needles: &[&str]) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit code; stdout: {stdout}; stderr: {stderr}"
    );
    assert!(!stdout.contains("Config OK"), "stdout: {stdout}");
    for n in needles {
        assert!(stderr.contains(n), "stderr should contain {n:?}: {stderr}");
    }
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn test_config_ok() {
    let dir = TempDir::new("cfg");
    let f = console_config(&dir, "connbeat.poll_interval: 5s");
    let out = connbeat(&["-c", p(&f), "test", "config"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "Config OK");
}

/// Each bad file: its YAML, and what the message must name besides the file.
#[test]
fn file_errors_name_the_key_and_the_file() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "unknown_key",
            "output.console.enabled: true\nconnbeat.pol_interval: 3s\n",
            &["unknown setting `connbeat.pol_interval`; did you mean `connbeat.poll_interval`?"],
        ),
        (
            "unknown_nested_key",
            "output.console.enabled: true\nconnbeat:\n  tcp_inf: false\n",
            &["`connbeat.tcp_inf`", "`connbeat.tcp_info`"],
        ),
        (
            "yaml_syntax",
            "output.console.enabled: true\nname: [unclosed\n",
            &["YAML", "line"],
        ),
        (
            "bad_duration",
            "output.console.enabled: true\nconnbeat.poll_interval: soon\n",
            &["connbeat.poll_interval", "soon"],
        ),
        (
            "bad_enum",
            "output.console.enabled: true\nconnbeat.namespaces: some\n",
            &["connbeat.namespaces", "some"],
        ),
        (
            "two_outputs",
            "output.console.enabled: true\noutput.file.enabled: true\n",
            &["output.console", "output.file"],
        ),
        ("no_output", "name: x\n", &["output"]),
        (
            "env_unset",
            "output.console.enabled: true\nname: ${CBTEST_SURELY_UNSET_VAR}\n",
            &["CBTEST_SURELY_UNSET_VAR", "`name`"],
        ),
    ];
    let dir = TempDir::new("cfg");
    for (name, yaml, needles) in cases {
        let f = dir.write(&format!("{name}.yml"), yaml);
        eprintln!("case {name}");
        let out = connbeat(&["-c", p(&f), "test", "config"], &[]);
        let mut all = needles.to_vec();
        all.push(p(&f));
        assert_config_error(&out, &all);
        // `run` refuses the same file the same way.
        let out = connbeat(&["-c", p(&f), "--once"], &[]);
        assert_config_error(&out, &all);
    }
}

#[test]
fn missing_and_unreadable_files_are_named() {
    let dir = TempDir::new("cfg");
    let missing = dir.path().join("nope.yml");
    let out = connbeat(&["-c", p(&missing), "test", "config"], &[]);
    assert_config_error(&out, &[p(&missing)]);

    // Root reads any file whatever its mode, so "unreadable" is a directory here.
    let d = dir.path().join("a-directory.yml");
    std::fs::create_dir(&d).unwrap();
    let out = connbeat(&["-c", p(&d), "test", "config"], &[]);
    assert_config_error(&out, &[p(&d), "cannot read"]);
}

#[test]
fn strict_perms_refuses_writable_or_foreign_files() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("cfg");
    for mode in [0o664, 0o646] {
        let f = console_config(&dir, "");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = connbeat(&["-c", p(&f), "test", "config"], &[]);
        assert_config_error(&out, &[p(&f), "chmod go-w"]);
        let out = connbeat(
            &["--strict.perms=false", "-c", p(&f), "test", "config"],
            &[],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), "Config OK");
    }
    if nix::unistd::geteuid().is_root() {
        let f = console_config(&dir, "");
        std::os::unix::fs::chown(&f, Some(65534), None).unwrap();
        let out = connbeat(&["-c", p(&f), "test", "config"], &[]);
        assert_config_error(&out, &[p(&f), "chown"]);
    } else {
        eprintln!("skipped: foreign-owner case needs root to chown the file");
    }
}

#[test]
fn bad_overrides_are_named() {
    let dir = TempDir::new("cfg");
    let f = console_config(&dir, "");
    let cases: &[(&str, &[&str])] = &[
        ("foo", &["-E", "KEY=VALUE", "foo"]),
        (
            "connbeat.pol_interval=3s",
            &["unknown setting `connbeat.pol_interval`; did you mean `connbeat.poll_interval`?"],
        ),
        (
            "connbeat.poll_interval=soon",
            &["connbeat.poll_interval", "soon"],
        ),
        (
            "output.file.enabled=true",
            &["output.console", "output.file"],
        ),
    ];
    for (o, needles) in cases {
        eprintln!("case -E {o}");
        let out = connbeat(&["-c", p(&f), "-E", o, "test", "config"], &[]);
        assert_config_error(&out, needles);
    }
}

fn export(file: &Path, extra: &[&str], env: &[(&str, &str)]) -> (String, Yaml) {
    let mut args = vec!["-c", p(file)];
    args.extend_from_slice(extra);
    args.extend(["export", "config"]);
    let out = connbeat(&args, env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let y = text(&out.stdout);
    let v: Yaml = serde_yaml_ng::from_str(&y).unwrap_or_else(|e| panic!("{e}: {y}"));
    (y, v)
}

fn get<'a>(v: &'a Yaml, dotted: &str) -> &'a Yaml {
    dotted
        .split('.')
        .fold(v, |v, k| v.get(k).unwrap_or_else(|| panic!("no {dotted}")))
}

#[test]
fn export_shows_dotted_env_and_overrides() {
    let dir = TempDir::new("cfg");
    let dotted = dir.write(
        "dotted.yml",
        "output.console.enabled: true\nconnbeat.poll_interval: 7s\nconnbeat.tcp_info: false\n\
         name: ${CBTEST_NAME}\ntags: [\"${CBTEST_UNSET_TAG:fallback}\"]\n",
    );
    let nested = dir.write(
        "nested.yml",
        "output:\n  console:\n    enabled: true\nconnbeat:\n  poll_interval: 7s\n  tcp_info: false\n\
         name: ${CBTEST_NAME}\ntags: [\"${CBTEST_UNSET_TAG:fallback}\"]\n",
    );
    let env = [("CBTEST_NAME", "from-env")];
    let (a, va) = export(&dotted, &[], &env);
    let (b, _) = export(&nested, &[], &env);
    assert_eq!(a, b, "dotted keys and nesting give the same config");
    assert_eq!(get(&va, "connbeat.poll_interval").as_str(), Some("7s"));
    assert_eq!(get(&va, "connbeat.tcp_info").as_bool(), Some(false));
    assert_eq!(get(&va, "name").as_str(), Some("from-env"));
    assert_eq!(get(&va, "tags")[0].as_str(), Some("fallback"));
    // Defaults are applied.
    assert_eq!(get(&va, "connbeat.aggregation").as_str(), Some("30s"));
    assert_eq!(get(&va, "connbeat.proc_root").as_str(), Some("/proc"));

    // -E wins over the file, and may add keys.
    let (_, vo) = export(
        &dotted,
        &["-E", "connbeat.poll_interval=9s", "-E", "fields.team=blue"],
        &env,
    );
    assert_eq!(get(&vo, "connbeat.poll_interval").as_str(), Some("9s"));
    assert_eq!(get(&vo, "fields.team").as_str(), Some("blue"));
}

#[test]
fn export_masks_secrets() {
    let dir = TempDir::new("cfg");
    let f = dir.write(
        "secrets.yml",
        "output.kafka:\n  enabled: true\n  sasl: {mechanism: PLAIN, username: bob, password: hunter2kafka}\n\
         output.elasticsearch: {enabled: false, password: hunter2es, api_key: hunter2key}\n\
         output.http: {enabled: false, password: hunter2http}\n",
    );
    let (y, v) = export(&f, &[], &[]);
    for secret in ["hunter2kafka", "hunter2es", "hunter2key", "hunter2http"] {
        assert!(!y.contains(secret), "{secret} leaked: {y}");
    }
    assert_eq!(
        get(&v, "output.kafka.sasl.password").as_str(),
        Some("********")
    );
    assert_eq!(get(&v, "output.kafka.sasl.username").as_str(), Some("bob"));
    assert_eq!(
        get(&v, "output.elasticsearch.api_key").as_str(),
        Some("********")
    );
}

/// The same conventions change what the agent does, not only what it prints.
#[test]
fn dotted_env_and_overrides_change_behaviour() {
    if !root_or_skip("dotted_env_and_overrides_change_behaviour") {
        return;
    }
    let dir = TempDir::new("cfgrun");
    let srv = Proc::spawn(
        &named_helper(&dir, "cb-cfgsrv"),
        &["listen", "127.0.0.1:0", "0"],
    );
    let port = srv.ready_port();
    let empty_proc = dir.path().join("empty-proc");
    std::fs::create_dir(&empty_proc).unwrap();
    let f = dir.write(
        "run.yml",
        "output.console.enabled: true\nname: ${CBTEST_UNSET_NAME:fallback-name}\n\
         fields.team: ${CBTEST_TEAM}\n",
    );
    let out_dir = dir.path().join("out");
    let out = Command::new(CONNBEAT)
        .args(["-c", p(&f), "--once"])
        .args([
            "-E",
            "output.console.enabled=false",
            "-E",
            "output.file.enabled=true",
        ])
        .args(["-E", &format!("output.file.path={}", out_dir.display())])
        .args(["-E", "output.file.filename=cbtest", "-E", "tags=[cbtest]"])
        .args([
            "-E",
            &format!("connbeat.proc_root={}", empty_proc.display()),
        ])
        .env("CBTEST_TEAM", "red")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        out.stdout.is_empty(),
        "console disabled by -E, yet stdout: {}",
        text(&out.stdout)
    );
    let mut lines = String::new();
    for f in std::fs::read_dir(&out_dir).expect("output.file.path created") {
        let f = f.unwrap().path();
        assert!(
            f.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("cbtest"),
            "{f:?}"
        );
        lines.push_str(&std::fs::read_to_string(&f).unwrap());
    }
    let events: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mine = on_ports(&events, &[port]);
    assert_eq!(mine.len(), 1, "the helper's listening socket: {mine:?}");
    let e = mine[0];
    assert_eq!(s(e, "/beat/name"), "fallback-name", "{e}");
    assert_eq!(s(e, "/fields/team"), "red", "{e}");
    assert_eq!(e["tags"], serde_json::json!(["cbtest"]), "{e}");
    // proc_root points at an empty directory: no process can be known.
    assert_eq!(s(e, "/attribution"), "none", "{e}");
    assert!(e.get("local_process").is_none(), "{e}");
}

#[test]
fn version_names_the_version_commit_and_features() {
    let out = connbeat(&["version"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line = text(&out.stdout);
    assert!(
        line.starts_with(&format!(
            "connbeat version {} (commit ",
            env!("CARGO_PKG_VERSION")
        )),
        "{line}"
    );
    let commit = line
        .split("commit ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap();
    assert!(
        commit == "unknown" || (commit.len() >= 7 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "commit {commit:?} in {line}"
    );
    #[cfg(feature = "kafka")]
    assert!(
        line.contains("features: ") && line.contains("kafka"),
        "{line}"
    );
}

#[test]
fn a_bad_internal_network_is_a_config_error_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("connbeat-internal-nets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("c.yml");
    std::fs::write(
        &cfg,
        "output.console: {}\nconnbeat.event_format: ecs\nconnbeat.interfaces.internal_networks: [private, 10.0.0.0/33]\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_connbeat"))
        .arg("-c")
        .arg(&cfg)
        .args(["--strict.perms=false", "test", "config"])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("connbeat.interfaces.internal_networks.1") && err.contains("10.0.0.0/33"),
        "{err}"
    );
}

/// A Packetbeat 8 file loads with one startup line naming the keys read as connbeat's; a
/// Packetbeat 1.x file exits 1 with one line per 1.x key; a protocol option of another
/// protocol exits 1 naming it.
#[test]
fn packetbeat_files_and_protocol_options() {
    let dir = TempDir::new("cfg");
    let pb8 = dir.write(
        "pb8.yml",
        "packetbeat.interfaces.device: lo\npacketbeat.protocols:\n  - {type: dns, ports: [53]}\n\
         packetbeat.procs.enabled: true\noutput.console: {}\n",
    );
    let out = connbeat(&["-c", p(&pb8), "test", "config"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let notes: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("Packetbeat keys"))
        .collect();
    assert_eq!(notes.len(), 1, "{stderr}");
    assert!(
        notes[0].contains(
            "reading packetbeat.interfaces as connbeat.interfaces, packetbeat.protocols as \
             connbeat.protocols, packetbeat.procs.enabled as connbeat.expose_process_info"
        ),
        "{stderr}"
    );
    let both = connbeat(
        &[
            "-c",
            p(&pb8),
            "-E",
            "connbeat.interfaces.device=eth0",
            "test",
            "config",
        ],
        &[],
    );
    assert_config_error(&both, &["packetbeat.interfaces", "connbeat.interfaces"]);

    let pb1 = dir.write(
        "pb1.yml",
        "shipper: {name: edge}\ninterfaces: {device: any}\nprotocols:\n  http: {ports: [80]}\n\
         output:\n  elasticsearch: {host: 'localhost:9200'}\n",
    );
    let out = connbeat(&["-c", p(&pb1), "test", "config"], &[]);
    assert_config_error(
        &out,
        &[
            "`shipper` is Packetbeat 1.x",
            "`interfaces` is Packetbeat 1.x: write `connbeat.interfaces`",
            "`protocols` as a map is Packetbeat 1.x",
            "`output.elasticsearch.host` is Packetbeat 1.x: write `output.elasticsearch.hosts`",
        ],
    );
    assert_eq!(
        text(&out.stderr).lines().count(),
        5,
        "{}",
        text(&out.stderr)
    );

    let redis = console_config(
        &dir,
        "connbeat.protocols:\n  - {type: redis, ports: [6379], send_headers: [User-Agent]}\n",
    );
    let out = connbeat(&["-c", p(&redis), "test", "config"], &[]);
    assert_config_error(&out, &["`send_headers` is not an option of redis"]);
}

//! connbeat in real Docker containers: as a sidecar of an application container, and in
//! host mode. No registry is reachable, so the test builds every image itself: a base from
//! this machine's own libraries (the agent's `ldd` closure plus a static busybox), the
//! agent's image from `docker/Dockerfile` on that base, and application containers that
//! run busybox's `httpd` and `nc` on it.
//!
//! Runs when a Docker engine answers; says "skipped: no Docker engine" otherwise.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// Only the capabilities the agent needs (docker/README.md).
const AGENT_CAPS: [&str; 8] = [
    "--cap-drop",
    "ALL",
    "--cap-add",
    "NET_ADMIN",
    "--cap-add",
    "SYS_PTRACE",
    "--cap-add",
    "DAC_READ_SEARCH",
];

/// Host mode: the host's network, processes and /proc, the Docker socket, and setns.
const HOST_MODE: [&str; 8] = [
    "--net=host",
    "--pid=host",
    "-v",
    "/proc:/host/proc:ro",
    "-v",
    "/var/run/docker.sock:/var/run/docker.sock:ro",
    "--cap-add",
    "SYS_ADMIN",
];

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .expect("run docker")
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn engine_or_skip() -> bool {
    let up = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !up {
        eprintln!("skipped: no Docker engine");
    }
    up
}

/// Removes the containers and images a test made, by name.
struct Cleanup {
    containers: Vec<String>,
    images: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", c]);
        }
        for i in &self.images {
            let _ = docker(&["rmi", "-f", i]);
        }
    }
}

/// The shared libraries `exe` links, as absolute paths.
fn ldd(exe: &Path) -> Vec<String> {
    let out = Command::new("ldd").arg(exe).output().expect("ldd");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')))
        .map(str::to_string)
        .collect()
}

/// A base image with busybox and the libraries the agent and the helper link.
fn build_base(dir: &TempDir, tag: &str) {
    let root = dir.path().join("rootfs");
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox (Debian busybox-static) is installed by scripts/install-deps.sh test");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    for applet in ["sh", "httpd", "nc", "sleep", "cat", "mkdir", "echo"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    let mut libs = ldd(Path::new(CONNBEAT));
    libs.extend(ldd(&sockhold()));
    libs.sort();
    libs.dedup();
    for lib in libs {
        let dst = root.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&lib, &dst).unwrap();
    }
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
    std::fs::create_dir_all(root.join("www")).unwrap();
    std::fs::write(root.join("www/index.html"), "hello from the app\n").unwrap();
    let tarball = dir.path().join("rootfs.tar");
    let st = Command::new("tar")
        .args([
            "-C",
            &root.display().to_string(),
            "-cf",
            &tarball.display().to_string(),
            ".",
        ])
        .status()
        .unwrap();
    assert!(st.success(), "tar of the base rootfs");
    let out = Command::new("docker")
        .args(["import", &tarball.display().to_string(), tag])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The agent's image, from the repository's Dockerfile, on `base`.
fn build_agent_image(dir: &TempDir, base: &str, tag: &str) {
    let ctx = dir.path().join("context");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(ctx.join("target/release")).unwrap();
    std::fs::create_dir_all(ctx.join("docker")).unwrap();
    std::fs::copy(CONNBEAT, ctx.join("target/release/connbeat")).unwrap();
    std::fs::copy(
        repo.join("docker/connbeat.yml"),
        ctx.join("docker/connbeat.yml"),
    )
    .unwrap();
    std::fs::copy(repo.join("docker/Dockerfile"), ctx.join("Dockerfile")).unwrap();
    docker_ok(&[
        "build",
        "-q",
        "--build-arg",
        &format!("BASE={base}"),
        "-t",
        tag,
        &ctx.display().to_string(),
    ]);
}

fn events(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

struct Scene {
    app: String,
    app_id: String,
    agent_image: String,
    cleanup: Cleanup,
    _dir: TempDir,
}

/// An app container serving HTTP (busybox httpd on 8080) and a client container in its
/// network namespace holding a connection to it.
fn scene(tag: &str) -> Scene {
    let dir = TempDir::new(tag);
    let id = std::process::id();
    let base = format!("connbeat-test/base:{id}{tag}");
    let agent_image = format!("connbeat-test/agent:{id}{tag}");
    let app = format!("cbt-app-{id}{tag}");
    let client = format!("cbt-client-{id}{tag}");
    let cleanup = Cleanup {
        containers: vec![client.clone(), app.clone()],
        images: vec![agent_image.clone(), base.clone()],
    };
    build_base(&dir, &base);
    build_agent_image(&dir, &base, &agent_image);
    let app_id = docker_ok(&[
        "run",
        "-d",
        "--name",
        &app,
        "--label",
        "team=edge",
        &base,
        "/bin/httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/www",
    ]);
    docker_ok(&[
        "run",
        "-d",
        "-i",
        "--name",
        &client,
        &format!("--net=container:{app}"),
        &base,
        "/bin/sh",
        "-c",
        "sleep 120 | nc 127.0.0.1 8080",
    ]);
    Scene {
        app,
        app_id,
        agent_image,
        cleanup,
        _dir: dir,
    }
}

/// Runs the agent's image once with `args` and returns its events, retrying until `want`
/// holds (the client may not have connected yet).
fn agent_once(
    docker_args: &[&str],
    image: &str,
    agent_args: &[&str],
    want: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let mut last = Vec::new();
    poll_until(Duration::from_secs(60), || {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(docker_args);
        args.extend_from_slice(&AGENT_CAPS);
        args.push(image);
        args.push("--once");
        args.push("--strict.perms=false");
        args.extend_from_slice(agent_args);
        let out = docker(&args.iter().map(|s| &**s).collect::<Vec<_>>());
        assert!(
            out.status.success(),
            "agent container failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        last = events(&String::from_utf8_lossy(&out.stdout));
        want(&last).then_some(())
    })
    .unwrap_or_else(|| panic!("agent never saw the scene; last events: {last:#?}"));
    last
}

fn on_8080(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["local_port"] == 8080 || e["remote_port"] == 8080)
        .collect()
}

#[test]
fn sidecar_sees_the_apps_listener_and_connection_with_the_apps_process() {
    if !engine_or_skip() {
        return;
    }
    let s = scene("s");
    let net = format!("--net=container:{}", s.app);
    let pid = format!("--pid=container:{}", s.app);
    let events = agent_once(&[&net, &pid], &s.agent_image, &[], |ev| {
        on_8080(ev).iter().any(|e| e["direction"] == "incoming")
    });
    let ours = on_8080(&events);
    let listening = ours
        .iter()
        .find(|e| e["action"] == "listening")
        .expect("the app's listening socket");
    assert_eq!(listening["local_process"]["binary"], "httpd", "{listening}");
    let incoming = ours
        .iter()
        .find(|e| e["direction"] == "incoming")
        .expect("the client's connection, server side");
    assert_eq!(incoming["local_process"]["binary"], "httpd", "{incoming}");
    assert_eq!(incoming["attribution"], "procfs");
    let outgoing = ours
        .iter()
        .find(|e| e["direction"] == "outgoing")
        .expect("the client's connection, client side");
    // The client runs in its own container: the app's pid namespace does not show it,
    // so the sidecar says it does not know, rather than guessing.
    assert_eq!(outgoing["attribution"], "none", "{outgoing}");
    assert!(outgoing.get("local_process").is_none());
    assert_eq!(outgoing["remote_port"], 8080);
    // Only the app's namespace: nothing of the host's own sockets.
    let host_ns = std::fs::metadata("/proc/self/ns/net").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.ino()
    });
    assert!(
        events
            .iter()
            .all(|e| e["netns"].as_u64() != host_ns.as_ref().ok().copied())
    );
    drop(s.cleanup);
}

#[test]
fn host_mode_events_carry_the_container_id_and_name() {
    if !engine_or_skip() {
        return;
    }
    let s = scene("h");
    // A host-mode agent sees every container on the machine, also the scenes of the other
    // tests running beside this one: pick this scene's connection by its namespace.
    let host_pid: u64 = docker_ok(&["inspect", "-f", "{{.State.Pid}}", &s.app])
        .parse()
        .unwrap();
    let app_netns = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/proc/{host_pid}/ns/net"))
            .expect("the app's network namespace")
            .ino()
    };
    let ours = |e: &&Value| {
        e["local_port"] == 8080 && e["direction"] == "incoming" && e["netns"] == app_netns
    };
    let events = agent_once(
        &HOST_MODE,
        &s.agent_image,
        &[
            "-E",
            "connbeat.namespaces=all",
            "-E",
            "connbeat.proc_root=/host/proc",
        ],
        |ev| {
            ev.iter()
                .filter(ours)
                .any(|e| e["container"]["name"].is_string())
        },
    );
    let incoming = events.iter().find(ours).unwrap();
    assert_eq!(incoming["container"]["id"], s.app_id.as_str(), "{incoming}");
    assert_eq!(incoming["container"]["name"], s.app.as_str());
    assert_eq!(incoming["container"]["labels"]["team"], "edge");
    assert_eq!(incoming["local_process"]["binary"], "httpd");
    // Host pids, with the pid inside the container beside them.
    // busybox httpd serves each connection from a forked child of the container's pid 1.
    let p = &incoming["local_process"];
    let (pid, ppid) = (p["pid"].as_u64().unwrap(), p["ppid"].as_u64().unwrap());
    assert!(
        pid == host_pid || ppid == host_pid,
        "{p} vs container pid {host_pid}"
    );
    assert!(p["ns_pid"].as_u64().is_some_and(|n| n != pid), "{p}");
    drop(s.cleanup);
}

#[test]
fn a_renamed_container_is_reported_under_its_new_name_by_a_running_agent() {
    if !engine_or_skip() {
        return;
    }
    let mut s = scene("r");
    let agent = format!("cbt-agent-{}r", std::process::id());
    s.cleanup.containers.push(agent.clone());
    let run: Vec<&str> = ["run", "-d", "--name", agent.as_str()]
        .into_iter()
        .chain(HOST_MODE)
        .chain(AGENT_CAPS)
        .chain([
            s.agent_image.as_str(),
            "--strict.perms=false",
            "-E",
            "connbeat.namespaces=all",
            "-E",
            "connbeat.proc_root=/host/proc",
            "-E",
            "connbeat.poll_interval=500ms",
        ])
        .collect();
    docker_ok(&run);
    let agent_events = || events(&docker_ok(&["logs", &agent]));
    let named = |ev: &[Value], name: &str| {
        ev.iter().any(|e| {
            e["local_port"] == 8080
                && e["direction"] == "incoming"
                && e["container"]["name"] == name
        })
    };
    poll_until(Duration::from_secs(60), || {
        named(&agent_events(), &s.app).then_some(())
    })
    .expect("the running agent reports the app under its first name");
    // The agent has cached the container; only the engine's event stream can tell it the
    // new name.
    let renamed = format!("{}-renamed", s.app);
    s.cleanup.containers.push(renamed.clone());
    docker_ok(&["rename", &s.app, &renamed]);
    let second_client = format!("cbt-client2-{}r", std::process::id());
    s.cleanup.containers.push(second_client.clone());
    docker_ok(&[
        "run",
        "-d",
        "-i",
        "--name",
        &second_client,
        &format!("--net=container:{renamed}"),
        &format!("connbeat-test/base:{}r", std::process::id()),
        "/bin/sh",
        "-c",
        "sleep 120 | nc 127.0.0.1 8080",
    ]);
    poll_until(Duration::from_secs(60), || {
        named(&agent_events(), &renamed).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "no event under the new name {renamed}; last events: {:#?}",
            on_8080(&agent_events())
        )
    });
}

//! Container identity: which container a process (and so a connection) belongs to.
//!
//! The id comes from the process's cgroup path, which every runtime names after the
//! container (Docker, containerd/Kubernetes, Podman, CRI-O; cgroup v1 and v2). Name, image
//! and labels come from the Docker Engine API over its unix socket when it is reachable:
//! asked once per container and cached; a thread following the engine's event stream
//! forgets containers that are destroyed and picks up renames, so nothing is asked per poll.
//! The small HTTP/1.0 exchange over the unix socket is written by hand (std `UnixStream`
//! plus `httparse`): two GET requests do not justify an async HTTP stack here.

use crate::event::JsonCache;
use crate::fast_hash::FxMap;
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The `container` object of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerInfo {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Which runtime's naming the cgroup path followed.
    pub runtime: &'static str,
    /// This object's JSON, written once for every event of the container.
    #[serde(skip)]
    pub json: JsonCache,
}

impl ContainerInfo {
    /// This object as JSON, rendered on first use.
    pub fn json(&self) -> &RawValue {
        self.json.get_or_render(self)
    }
}

/// The container id and runtime named by a `/proc/PID/cgroup` file, if any.
pub fn id_from_cgroup(text: &str) -> Option<(String, &'static str)> {
    const PREFIXES: [(&str, &str); 5] = [
        ("docker-", "docker"),
        ("cri-containerd-", "containerd"),
        ("crio-", "cri-o"),
        ("libpod-", "podman"),
        ("", ""),
    ];
    for line in text.lines() {
        // hierarchy-id:controllers:path
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        for (i, part) in parts.iter().enumerate().rev() {
            let part = part.strip_suffix(".scope").unwrap_or(part);
            for (prefix, runtime) in PREFIXES {
                let Some(id) = part.strip_prefix(prefix) else {
                    continue;
                };
                if !is_container_id(id) {
                    continue;
                }
                let runtime = if !runtime.is_empty() {
                    runtime
                } else {
                    // A bare id: the parent directory tells the runtime.
                    match parts.get(i.wrapping_sub(1)).copied().unwrap_or("") {
                        "docker" => "docker",
                        "libpod_parent" => "podman",
                        p if p.starts_with("pod") || p.starts_with("kubepods") => "kubernetes",
                        _ => "containerd",
                    }
                };
                return Some((id.to_string(), runtime));
            }
        }
    }
    None
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Resolves and caches container identities.
pub struct Containers {
    proc_root: PathBuf,
    docker: Option<Docker>,
    /// pid → its container, read once per process.
    by_pid: FxMap<u32, Option<Arc<ContainerInfo>>>,
    by_id: Arc<Mutex<HashMap<String, Arc<ContainerInfo>>>>,
}

impl Containers {
    /// `docker_socket`: the Engine API socket, used when it answers.
    pub fn new(proc_root: &Path, docker_socket: &Path) -> Containers {
        let by_id = Arc::new(Mutex::new(HashMap::new()));
        let docker = Docker::connect(docker_socket);
        if let Some(d) = &docker {
            d.follow_events(by_id.clone());
        }
        Containers {
            proc_root: proc_root.to_path_buf(),
            docker,
            by_pid: FxMap::default(),
            by_id,
        }
    }

    /// Whether names, images and labels come from a Docker engine.
    pub fn engine_connected(&self) -> bool {
        self.docker.is_some()
    }

    /// The container of a process, read once per pid (`forget` it when the process ends).
    pub fn of_pid(&mut self, pid: u32) -> Option<Arc<ContainerInfo>> {
        if let Some(c) = self.by_pid.get(&pid) {
            return c.clone();
        }
        let text = std::fs::read_to_string(self.proc_root.join(format!("{pid}/cgroup")))
            .unwrap_or_default();
        let found = id_from_cgroup(&text).map(|(id, runtime)| self.describe(id, runtime));
        self.by_pid.insert(pid, found.clone());
        found
    }

    /// Drops cached pids that are not in `live`.
    pub fn retain_pids(&mut self, live: impl Fn(u32) -> bool) {
        self.by_pid.retain(|pid, _| live(*pid));
    }

    fn describe(&self, id: String, runtime: &'static str) -> Arc<ContainerInfo> {
        if let Some(c) = self.by_id.lock().expect("lock").get(&id) {
            return c.clone();
        }
        let info = self
            .docker
            .as_ref()
            .filter(|_| runtime == "docker")
            .and_then(|d| d.inspect(&id))
            .unwrap_or(ContainerInfo {
                id: id.clone(),
                name: None,
                image: None,
                labels: BTreeMap::new(),
                runtime,
                json: JsonCache::default(),
            });
        let info = Arc::new(info);
        self.by_id.lock().expect("lock").insert(id, info.clone());
        info
    }
}

/// A minimal Docker Engine API client over the unix socket.
struct Docker {
    socket: PathBuf,
}

impl Docker {
    fn connect(socket: &Path) -> Option<Docker> {
        let d = Docker {
            socket: socket.to_path_buf(),
        };
        match d.get("/_ping") {
            Some((200, _)) => Some(d),
            _ => None,
        }
    }

    fn request(&self, path: &str) -> std::io::Result<UnixStream> {
        let mut s = UnixStream::connect(&self.socket)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n")?;
        Ok(s)
    }

    /// One GET: status and body.
    fn get(&self, path: &str) -> Option<(u16, Vec<u8>)> {
        let s = self.request(path).ok()?;
        let mut raw = Vec::new();
        s.take(4 << 20).read_to_end(&mut raw).ok()?;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(n) = resp.parse(&raw).ok()? else {
            return None;
        };
        Some((resp.code?, raw[n..].to_vec()))
    }

    fn inspect(&self, id: &str) -> Option<ContainerInfo> {
        let (code, body) = self.get(&format!("/containers/{id}/json"))?;
        if code != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        Some(ContainerInfo {
            id: id.to_string(),
            name: v["Name"]
                .as_str()
                .map(|n| n.trim_start_matches('/').to_string()),
            image: v["Config"]["Image"].as_str().map(str::to_string),
            labels: v["Config"]["Labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default(),
            runtime: "docker",
            json: JsonCache::default(),
        })
    }

    /// Follows `/events` on a thread: destroyed containers are forgotten, renamed ones
    /// updated, so the cache stays true without asking per poll.
    fn follow_events(&self, cache: Arc<Mutex<HashMap<String, Arc<ContainerInfo>>>>) {
        let socket = self.socket.clone();
        let _ = std::thread::Builder::new()
            .name("docker-events".into())
            .spawn(move || {
                let d = Docker { socket };
                loop {
                    if let Ok(s) = d.request("/events?filters=%7B%22type%22%3A%5B%22container%22%5D%7D") {
                        let _ = s.set_read_timeout(None);
                        let mut r = BufReader::new(s);
                        // Skip the response head.
                        let mut line = String::new();
                        while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                            if line == "\r\n" {
                                break;
                            }
                            line.clear();
                        }
                        let stream = serde_json::Deserializer::from_reader(r)
                            .into_iter::<serde_json::Value>();
                        for ev in stream.map_while(Result::ok) {
                            let id = ev["id"].as_str().unwrap_or_default().to_string();
                            match ev["Action"].as_str().unwrap_or_default() {
                                "destroy" => {
                                    cache.lock().expect("lock").remove(&id);
                                }
                                "rename" => {
                                    let fresh = d.inspect(&id);
                                    let mut c = cache.lock().expect("lock");
                                    match fresh {
                                        Some(info) => {
                                            c.insert(id, Arc::new(info));
                                        }
                                        None => {
                                            c.remove(&id);
                                        }
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                    tracing::debug!(target: "conn", "docker event stream ended; reconnecting in 5s");
                    std::thread::sleep(Duration::from_secs(5));
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";

    /// The cached JSON is the object's own serialization, labels included.
    #[test]
    fn cached_json_is_the_object() {
        let c = ContainerInfo {
            id: "abc".into(),
            name: Some("web".into()),
            image: None,
            labels: BTreeMap::from([("tier".to_string(), "front \"end\"".to_string())]),
            runtime: "docker",
            json: JsonCache::default(),
        };
        assert_eq!(
            c.json().get(),
            r#"{"id":"abc","name":"web","labels":{"tier":"front \"end\""},"runtime":"docker"}"#
        );
        assert_eq!(c.json().get(), serde_json::to_string(&c).unwrap());
    }

    #[test]
    fn ids_from_every_runtime_layout() {
        let cases = [
            (format!("0::/system.slice/docker-{ID}.scope"), "docker"),
            (
                format!("12:memory:/docker/{ID}\n11:cpu:/docker/{ID}"),
                "docker",
            ),
            (
                format!(
                    "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234.slice/cri-containerd-{ID}.scope"
                ),
                "containerd",
            ),
            (
                format!("4:pids:/kubepods/besteffort/pod5b7f/{ID}"),
                "kubernetes",
            ),
            (
                format!("0::/machine.slice/libpod-{ID}.scope/container"),
                "podman",
            ),
            (
                format!("0::/kubepods.slice/kubepods-pod1.slice/crio-{ID}.scope"),
                "cri-o",
            ),
            (format!("0::/default/{ID}"), "containerd"),
        ];
        for (text, runtime) in cases {
            assert_eq!(
                id_from_cgroup(&text),
                Some((ID.to_string(), runtime)),
                "{text}"
            );
        }
        assert_eq!(id_from_cgroup("0::/\n"), None);
        assert_eq!(
            id_from_cgroup("0::/user.slice/user-1000.slice/session-2.scope"),
            None
        );
        assert_eq!(id_from_cgroup("garbage"), None);
    }
}

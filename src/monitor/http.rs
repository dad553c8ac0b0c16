//! The self-monitoring endpoint: `GET /` (who is running), `GET /stats` (every counter as
//! nested JSON) and `GET /metrics` (Prometheus text format), on `http.host:http.port`.
//!
//! It runs on its own thread with a one-thread tokio runtime so that a slow scraper can
//! never stall a source or the pipeline; the counters it reads are the lock-free atomics of
//! [`super::METRICS`]. The listener is bound before the thread starts, so a port in use is
//! reported to `run` as a configuration error naming `http.port`.

use super::{COUNTERS, METRICS, is_gauge};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Map, Value, json};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

/// What `GET /` says about the running agent.
#[derive(Debug, Clone)]
pub struct BeatInfo {
    pub name: String,
    pub hostname: String,
    pub version: String,
    pub commit: String,
    pub features: String,
    pub output: String,
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("http.host: cannot resolve {host:?}: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("http.port: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("http: cannot start the monitoring thread: {0}")]
    Thread(std::io::Error),
}

/// The running endpoint; dropping it stops the server.
pub struct MonitorServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MonitorServer {
    /// The address actually bound (useful with `http.port: 0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MonitorServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Binds `host:port` and serves the endpoint on a dedicated thread.
pub fn start(host: &str, port: u16, info: BeatInfo) -> Result<MonitorServer, MonitorError> {
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|source| MonitorError::Resolve {
            host: host.to_string(),
            source,
        })?
        .next()
        .ok_or_else(|| MonitorError::Resolve {
            host: host.to_string(),
            source: std::io::Error::other("no address"),
        })?;
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| MonitorError::Bind { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| MonitorError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| MonitorError::Bind { addr, source })?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let info = Arc::new((info, Instant::now()));
    let thread = std::thread::Builder::new()
        .name("monitor-http".into())
        .spawn(move || serve(listener, info, stop_rx))
        .map_err(MonitorError::Thread)?;
    tracing::info!(target: "monitoring", "monitoring endpoint on http://{addr}/ (/stats, /metrics)");
    Ok(MonitorServer {
        addr,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

fn serve(
    listener: std::net::TcpListener,
    info: Arc<(BeatInfo, Instant)>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(target: "monitoring", "monitoring endpoint not started: {e}");
            return;
        }
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(target: "monitoring", "monitoring endpoint not started: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = &mut stop => break,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let info = info.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let info = info.clone();
                            async move { Ok::<_, std::convert::Infallible>(route(&req, &info.0, info.1)) }
                        });
                        let io = hyper_util::rt::TokioIo::new(stream);
                        if let Err(e) = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .await
                        {
                            tracing::debug!(target: "monitoring", "monitoring connection: {e}");
                        }
                    });
                }
            }
        }
    });
}

fn route(req: &Request<Incoming>, info: &BeatInfo, started: Instant) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        );
    }
    let pretty = req.uri().query().is_some_and(|q| q.contains("pretty"));
    match req.uri().path() {
        "/" => json_reply(&beat_info(info, started), pretty),
        "/stats" => json_reply(&stats_json(&METRICS.snapshot()), pretty),
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            prometheus_text(&METRICS.snapshot()),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /, /stats or /metrics\n".into(),
        ),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json_reply(v: &Value, pretty: bool) -> Response<Full<Bytes>> {
    let mut body = if pretty {
        serde_json::to_string_pretty(v)
    } else {
        serde_json::to_string(v)
    }
    .expect("json values serialize");
    body.push('\n');
    reply(StatusCode::OK, "application/json", body)
}

fn beat_info(info: &BeatInfo, started: Instant) -> Value {
    json!({
        "beat": "connbeat",
        "name": info.name,
        "hostname": info.hostname,
        "version": info.version,
        "build_commit": info.commit,
        "features": info.features,
        "output": info.output,
        "pid": std::process::id(),
        "uptime": {"ms": started.elapsed().as_millis() as u64},
    })
}

/// The counters as nested JSON: `output.events.acked` becomes
/// `{"output": {"events": {"acked": n}}}`. Should a name be both a counter and the prefix
/// of another, the counter's value goes under `"value"` in that object.
pub fn stats_json(snapshot: &[(&'static str, u64)]) -> Value {
    let mut root = Map::new();
    for (name, value) in snapshot {
        let parts: Vec<&str> = name.split('.').collect();
        let mut node = &mut root;
        for part in &parts[..parts.len() - 1] {
            let entry = node
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                let leaf = entry.take();
                *entry = json!({ "value": leaf });
            }
            node = entry.as_object_mut().expect("made an object above");
        }
        let last = parts[parts.len() - 1].to_string();
        match node.get_mut(&last) {
            Some(Value::Object(m)) => {
                m.insert("value".into(), json!(value));
            }
            _ => {
                node.insert(last, json!(value));
            }
        }
    }
    Value::Object(root)
}

/// The Prometheus metric name of a dotted counter name: `connbeat_output_events_acked`.
pub fn prometheus_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 9);
    out.push_str("connbeat_");
    out.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    out
}

/// The counters in the Prometheus text exposition format (version 0.0.4), each with its
/// HELP and TYPE line.
pub fn prometheus_text(snapshot: &[(&'static str, u64)]) -> String {
    let mut out = String::with_capacity(snapshot.len() * 128);
    for (name, value) in snapshot {
        let metric = prometheus_name(name);
        let help = COUNTERS
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, h)| *h)
            .unwrap_or("");
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let kind = if is_gauge(name) { "gauge" } else { "counter" };
        out.push_str(&format!(
            "# HELP {metric} {help}\n# TYPE {metric} {kind}\n{metric} {value}\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_nest_by_dotted_name_and_keep_a_leaf_that_is_also_a_prefix() {
        let v = stats_json(&[("a.b", 1), ("a.c.d", 2), ("a.c", 3), ("x", 4)]);
        assert_eq!(v, json!({"a": {"b": 1, "c": {"d": 2, "value": 3}}, "x": 4}));
        let v = stats_json(&[("a.c", 3), ("a.c.d", 2)]);
        assert_eq!(v, json!({"a": {"c": {"value": 3, "d": 2}}}));
    }

    #[test]
    fn prometheus_lines_have_help_type_and_value() {
        let t = prometheus_text(&[("queue.events", 7), ("output.events.acked", 9)]);
        assert!(t.contains("# TYPE connbeat_queue_events gauge\nconnbeat_queue_events 7\n"));
        assert!(t.contains(
            "# TYPE connbeat_output_events_acked counter\nconnbeat_output_events_acked 9\n"
        ));
        assert!(t.contains("# HELP connbeat_output_events_acked events the output confirmed\n"));
    }
}

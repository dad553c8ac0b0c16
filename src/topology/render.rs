//! The graph as users read it: the JSON document (also what `GET /graph` answers), and
//! Graphviz `dot`. The HTML page is [`super::html`], which embeds the JSON.

use super::graph::{Aggregate, JoinCounters, NodeKey};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Debug, Serialize)]
pub struct Node {
    pub id: String,
    pub kind: &'static str,
    pub host: Option<String>,
    pub container: Option<String>,
    pub binary: Option<String>,
    pub ip: Option<String>,
    pub port: Option<u16>,
}

#[derive(Debug, Serialize)]
pub struct Protocol {
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Edge {
    pub source: String,
    pub target: String,
    pub connections: u64,
    pub closed: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub rtt_us: u64,
    pub retransmits: u64,
    pub protocols: BTreeMap<String, Protocol>,
}

/// Event time the graph covers, RFC 3339.
#[derive(Debug, Serialize)]
pub struct Window {
    pub start: String,
    pub end: String,
    pub seconds: u64,
}

/// What was read, used and skipped (with why).
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Events {
    pub read: u64,
    pub used: u64,
    pub skipped: u64,
    pub malformed: u64,
    pub unknown_type: u64,
    pub incomplete: u64,
    pub outside_window: u64,
    pub duplicate_transactions: u64,
}

/// The bounds and what went beyond them.
#[derive(Debug, Serialize)]
pub struct Limits {
    pub max_nodes: usize,
    pub max_edges: usize,
    pub max_flows: usize,
    pub connections_beyond_max_nodes: u64,
    pub connections_beyond_max_edges: u64,
    #[serde(flatten)]
    pub join: JoinCounters,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    pub window: Window,
    pub events: Events,
    pub limits: Limits,
}

fn node(k: &NodeKey) -> Node {
    let s = |x: &Option<std::sync::Arc<str>>| x.as_deref().map(str::to_string);
    match k {
        NodeKey::Service {
            host,
            container,
            binary,
            port,
        } => Node {
            id: k.id(),
            kind: "service",
            host: Some(host.to_string()),
            container: s(container),
            binary: s(binary),
            ip: None,
            port: Some(*port),
        },
        NodeKey::Client {
            host,
            container,
            binary,
        } => Node {
            id: k.id(),
            kind: "client",
            host: Some(host.to_string()),
            container: s(container),
            binary: s(binary),
            ip: None,
            port: None,
        },
        NodeKey::External { ip, port } => Node {
            id: k.id(),
            kind: "external",
            host: None,
            container: None,
            binary: None,
            ip: Some(ip.to_string()),
            port: *port,
        },
    }
}

/// Nodes and edges sorted by id, so equal graphs give equal documents.
pub fn nodes_and_edges(a: &Aggregate) -> (Vec<Node>, Vec<Edge>) {
    let mut nodes: Vec<Node> = a.nodes.iter().map(node).collect();
    nodes.sort_by(|x, y| x.id.cmp(&y.id));
    let mut edges: Vec<Edge> = a
        .edges
        .iter()
        .map(|((s, d), e)| Edge {
            source: s.id(),
            target: d.id(),
            connections: e.connections,
            closed: e.closed,
            bytes_out: e.bytes_out,
            bytes_in: e.bytes_in,
            rtt_us: e.rtt_us(),
            retransmits: e.retransmits,
            protocols: e
                .protocols
                .iter()
                .map(|(p, st)| {
                    (
                        p.to_string(),
                        Protocol {
                            requests: st.requests,
                            errors: st.errors,
                            p50_ms: st.latency.quantile_ms(0.5),
                            p99_ms: st.latency.quantile_ms(0.99),
                        },
                    )
                })
                .collect(),
        })
        .collect();
    edges.sort_by(|x, y| (&x.source, &x.target).cmp(&(&y.source, &y.target)));
    (nodes, edges)
}

pub fn json(r: &Report) -> String {
    let mut s = serde_json::to_string_pretty(r).expect("report serializes");
    s.push('\n');
    s
}

fn dot_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn label(n: &Node) -> String {
    match n.kind {
        "external" => match n.port {
            Some(p) => format!("{}:{p}", n.ip.as_deref().unwrap_or("?")),
            None => n.ip.clone().unwrap_or_default(),
        },
        _ => {
            let mut l = format!(
                "{}\\n{}",
                n.binary.as_deref().unwrap_or("?"),
                n.host.as_deref().unwrap_or("?")
            );
            if let Some(c) = &n.container {
                let _ = write!(l, "/{c}");
            }
            if let Some(p) = n.port {
                let _ = write!(l, ":{p}");
            }
            l
        }
    }
}

/// Graphviz: services are boxes, clients ellipses, external endpoints dashed; an edge is
/// labelled with its connections and its protocols' requests.
pub fn dot(r: &Report) -> String {
    let mut s =
        String::from("digraph connbeat {\n  rankdir=LR;\n  node [fontname=\"sans-serif\"];\n");
    for n in &r.nodes {
        let shape = match n.kind {
            "service" => "box",
            "client" => "ellipse",
            _ => "box, style=dashed",
        };
        let _ = writeln!(
            s,
            "  {} [label={}, shape={shape}];",
            dot_quote(&n.id),
            dot_quote(&label(n)).replace("\\\\n", "\\n")
        );
    }
    for e in &r.edges {
        let mut l = format!("{} conn", e.connections);
        for (p, st) in &e.protocols {
            let _ = write!(l, "\\n{p} {} req", st.requests);
        }
        let _ = writeln!(
            s,
            "  {} -> {} [label={}];",
            dot_quote(&e.source),
            dot_quote(&e.target),
            dot_quote(&l).replace("\\\\n", "\\n")
        );
    }
    s.push_str("}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::graph::{Graph, Limits as GLimits};
    use crate::topology::parse::parse;

    fn report() -> Report {
        let mut g = Graph::new(GLimits {
            max_nodes: 10,
            max_edges: 10,
            max_flows: 10,
        });
        let line = r#"{"@timestamp":"2026-12-01T10:00:00.000Z","type":"connbeat","action":"open","direction":"outgoing","transport":"tcp","local_ip":"10.0.0.1","local_port":5000,"remote_ip":"192.0.2.9","remote_port":443,"local_process":{"binary":"cu\"rl"},"beat":{"name":"a"}}"#;
        g.observe(&parse(line.as_bytes()).unwrap());
        let (nodes, edges) = nodes_and_edges(&g.snapshot(i64::MIN, i64::MAX));
        Report {
            nodes,
            edges,
            window: Window {
                start: "s".into(),
                end: "e".into(),
                seconds: 1,
            },
            events: Events::default(),
            limits: Limits {
                max_nodes: 10,
                max_edges: 10,
                max_flows: 10,
                connections_beyond_max_nodes: 0,
                connections_beyond_max_edges: 0,
                join: JoinCounters::default(),
            },
        }
    }

    #[test]
    fn json_has_the_documented_fields() {
        let v: serde_json::Value = serde_json::from_str(&json(&report())).unwrap();
        let n = &v["nodes"][0];
        for k in ["id", "kind", "host", "container", "binary", "ip", "port"] {
            assert!(n.get(k).is_some(), "node field {k}");
        }
        let e = &v["edges"][0];
        for k in [
            "source",
            "target",
            "connections",
            "closed",
            "bytes_out",
            "bytes_in",
            "rtt_us",
            "retransmits",
            "protocols",
        ] {
            assert!(e.get(k).is_some(), "edge field {k}");
        }
        assert_eq!(e["source"], "client:a/cu\"rl");
        assert_eq!(e["target"], "external:192.0.2.9:443");
        assert_eq!(v["nodes"][1]["kind"], "external");
        assert!(v["events"]["read"].is_u64() && v["window"]["seconds"] == 1);
    }

    #[test]
    fn dot_quotes_names() {
        let d = dot(&report());
        assert!(d.starts_with("digraph connbeat {"));
        assert!(
            d.contains(r#""client:a/cu\"rl" -> "external:192.0.2.9:443" [label="1 conn"];"#),
            "{d}"
        );
        assert!(d.contains(r#"[label="cu\"rl\na", shape=ellipse]"#), "{d}");
    }
}

//! `connbeat topology`: turns what every agent ships into the graph of who talks to whom.
//!
//! Lines come from the agents' Kafka topic, the file output's files or standard input
//! ([`input`], [`kafka`]); each is read into an observation ([`parse`]), which the
//! [`graph`] joins with the other end's; the graph is written as JSON, Graphviz or a
//! self-contained page ([`render`], [`html`]), once, or served live ([`serve`]).

pub mod fields;
pub mod graph;
pub mod html;
pub mod input;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod latency;
pub mod parse;
pub mod render;
pub mod scan;
pub mod serve;

use crate::config::Config;
use anyhow::{Context, bail};
use graph::{Graph, Limits, Use};
use parse::Skip;
use render::{Events, Report};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Dot,
    Html,
}

/// Where the events come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The agents' topic (`topology.kafka`, else `output.kafka`).
    Kafka,
    /// Files (with their rotated files); `-` is standard input.
    Files(Vec<PathBuf>),
}

#[derive(Debug, Clone)]
pub struct Options {
    pub input: Input,
    pub format: Format,
    pub output: Option<PathBuf>,
    pub serve: Option<String>,
    /// `--window`; None = `topology.window`.
    pub window: Option<Duration>,
    /// `--since` / `--until`, ms since the epoch.
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// `--from latest` (else earliest).
    pub from_latest: bool,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn rfc3339(ms: i64) -> String {
    crate::event::format_timestamp(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
}

/// The graph and what was counted on the way; shared with the server when serving.
struct State {
    reader: parse::Reader,
    graph: Graph,
    limits: Limits,
    events: Events,
    newest_ms: Option<i64>,
    window_ms: i64,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    /// Serving: the window ends now, not at the newest event.
    live: bool,
}

impl State {
    /// The window's start and end.
    fn bounds(&self) -> (i64, i64) {
        let end = self.until_ms.unwrap_or(if self.live {
            now_ms()
        } else {
            self.newest_ms.unwrap_or(0)
        });
        let start = self.since_ms.unwrap_or(end.saturating_sub(self.window_ms));
        (start, end)
    }

    fn feed(&mut self, line: &[u8]) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        self.events.read += 1;
        let obs = match self.reader.parse(line) {
            Ok(o) => o,
            Err(s) => {
                self.events.skipped += 1;
                match s {
                    Skip::Malformed => self.events.malformed += 1,
                    Skip::UnknownType => self.events.unknown_type += 1,
                    Skip::Incomplete => self.events.incomplete += 1,
                }
                return;
            }
        };
        let at = match &obs {
            parse::Observation::Conn(c) => c.at_ms,
            parse::Observation::Listen(l) => l.at_ms,
            parse::Observation::Txn(t) => t.at_ms,
        };
        let before = self.since_ms.is_some_and(|s| at < s);
        let after = self.until_ms.is_some_and(|u| at > u);
        let stale = self.since_ms.is_none() && {
            let reference = if self.live {
                now_ms()
            } else {
                self.newest_ms.unwrap_or(at)
            };
            at < reference.saturating_sub(self.window_ms)
        };
        if before || after || stale {
            self.events.skipped += 1;
            self.events.outside_window += 1;
            return;
        }
        if !self.live && self.newest_ms.is_none_or(|n| at > n) {
            self.newest_ms = Some(at);
            if self.since_ms.is_none() {
                self.graph.horizon_ms = at.saturating_sub(self.window_ms);
            }
        }
        match self.graph.observe(&obs) {
            Use::Used => self.events.used += 1,
            Use::Duplicate => {
                self.events.skipped += 1;
                self.events.duplicate_transactions += 1;
            }
        }
    }

    fn too_long(&mut self) {
        self.events.read += 1;
        self.events.skipped += 1;
        self.events.malformed += 1;
    }

    fn report(&self) -> Report {
        let (start, end) = self.bounds();
        let agg = self.graph.snapshot(start, end);
        let (nodes, edges) = render::nodes_and_edges(&agg);
        Report {
            nodes,
            edges,
            window: render::Window {
                start: rfc3339(start),
                end: rfc3339(end),
                seconds: (end.saturating_sub(start).max(0) / 1000) as u64,
            },
            events: self.events,
            limits: render::Limits {
                max_nodes: self.limits.max_nodes,
                max_edges: self.limits.max_edges,
                max_flows: self.limits.max_flows,
                connections_beyond_max_nodes: agg.beyond_nodes,
                connections_beyond_max_edges: agg.beyond_edges,
                join: self.graph.counters,
            },
        }
    }

    fn progress_line(&self, rate: f64) -> String {
        let (start, end) = self.bounds();
        let agg = self.graph.snapshot(start, end);
        format!(
            "topology: {} events read ({rate:.0}/s), {} used, {} skipped; graph: {} nodes, {} edges, {} connections being joined",
            self.events.read,
            self.events.used,
            self.events.skipped,
            agg.nodes.len(),
            agg.edges.len(),
            self.graph.flows()
        )
    }
}

/// Renders a report in the chosen format.
pub fn render(r: &Report, f: Format) -> String {
    match f {
        Format::Json => render::json(r),
        Format::Dot => render::dot(r),
        Format::Html => html::page(r),
    }
}

/// A progress line on stderr every `every`, with the rate since the previous one.
struct Progress {
    every: Duration,
    last: Instant,
    last_read: u64,
}

impl Progress {
    fn tick(&mut self, state: &State) {
        let el = self.last.elapsed();
        if el < self.every {
            return;
        }
        let rate = (state.events.read - self.last_read) as f64 / el.as_secs_f64();
        tracing::info!("{}", state.progress_line(rate));
        self.last = Instant::now();
        self.last_read = state.events.read;
    }
}

/// Runs the command: exit 0 once the graph is written (or, serving, on SIGINT/SIGTERM).
pub fn run(o: &Options, c: &Config) -> anyhow::Result<()> {
    let t = &c.topology;
    let limits = Limits {
        max_nodes: t.max_nodes,
        max_edges: t.max_edges,
        max_flows: t.max_flows,
    };
    let window = o.window.unwrap_or(t.window.get());
    if window.is_zero() {
        bail!("--window: must not be zero");
    }
    if let (Some(s), Some(u)) = (o.since_ms, o.until_ms)
        && s > u
    {
        bail!("--since is after --until");
    }
    let live = o.serve.is_some();
    let state = Arc::new(Mutex::new(State {
        reader: parse::Reader::default(),
        graph: Graph::new(limits),
        limits,
        events: Events::default(),
        newest_ms: None,
        window_ms: window.as_millis().min(i64::MAX as u128) as i64,
        since_ms: o.since_ms,
        until_ms: o.until_ms,
        live,
    }));
    let stop = Arc::new(AtomicBool::new(false));
    if live {
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
        }
        let st = state.clone();
        let answer: serve::Answer = Arc::new(move |path| {
            let r = st.lock().expect("state").report();
            match path {
                "/" | "/index.html" => Some(("text/html; charset=utf-8", html::page(&r))),
                "/graph" => Some(("application/json", render::json(&r))),
                _ => None,
            }
        });
        let addr = o.serve.as_deref().expect("live");
        let bound = serve::start(addr, answer).with_context(|| format!("--serve {addr}"))?;
        tracing::info!("topology: serving the live graph on http://{bound}/ (JSON at /graph)");
    }
    let mut progress = Progress {
        every: t.progress_interval.get(),
        last: Instant::now(),
        last_read: 0,
    };
    let mut last_prune = Instant::now();
    let mut tick = |s: &mut State| {
        progress.tick(s);
        if live && last_prune.elapsed() >= Duration::from_secs(1) {
            let (start, _) = s.bounds();
            s.graph.forget_before(start);
            last_prune = Instant::now();
        }
    };
    match &o.input {
        Input::Files(paths) => {
            let files = input::with_rotated(paths).context("listing the input files")?;
            for f in files {
                let mut st = state.lock().expect("state");
                let mut n = 0u32;
                let mut sink = |l: input::Line| {
                    match l {
                        input::Line::Text(t) => st.feed(t),
                        input::Line::TooLong => st.too_long(),
                    }
                    n += 1;
                    if n.is_multiple_of(4096) {
                        tick(&mut st);
                    }
                };
                if f.as_os_str() == "-" {
                    input::for_each_line(std::io::stdin().lock(), &mut sink)
                        .context("reading standard input")?;
                } else {
                    input::read_file(&f, &mut sink)
                        .with_context(|| format!("reading {}", f.display()))?;
                }
            }
        }
        Input::Kafka => consume_kafka(o, c, &state, &stop, &mut tick)?,
    }
    if live {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
            tick(&mut state.lock().expect("state"));
        }
        return Ok(());
    }
    let st = state.lock().expect("state");
    let r = st.report();
    if r.limits.connections_beyond_max_nodes + r.limits.connections_beyond_max_edges > 0 {
        tracing::warn!(
            "topology: {} connections left out beyond topology.max_nodes ({}) and {} beyond topology.max_edges ({})",
            r.limits.connections_beyond_max_nodes,
            r.limits.max_nodes,
            r.limits.connections_beyond_max_edges,
            r.limits.max_edges
        );
    }
    if r.events.skipped > 0 {
        tracing::info!(
            "topology: {} of {} events skipped ({} malformed, {} of unknown types, {} incomplete, {} outside the window, {} duplicate transactions)",
            r.events.skipped,
            r.events.read,
            r.events.malformed,
            r.events.unknown_type,
            r.events.incomplete,
            r.events.outside_window,
            r.events.duplicate_transactions
        );
    }
    let text = render(&r, o.format);
    match &o.output {
        Some(p) => std::fs::write(p, text).with_context(|| format!("--output {}", p.display()))?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|_| out.flush())
                .context("writing the graph to standard output")?;
        }
    }
    Ok(())
}

#[cfg(feature = "kafka")]
fn consume_kafka(
    o: &Options,
    c: &Config,
    state: &Arc<Mutex<State>>,
    stop: &AtomicBool,
    tick: &mut dyn FnMut(&mut State),
) -> anyhow::Result<()> {
    let (kafka, key) = match (&c.topology.kafka, &c.output.kafka) {
        (Some(k), _) => (k, "topology.kafka"),
        (None, Some(k)) => (k, "output.kafka"),
        (None, None) => bail!(
            "--kafka: no topic to read; set output.kafka (the agents' settings) or topology.kafka in the config file"
        ),
    };
    let opts = kafka::Options {
        kafka,
        key,
        group_id: &c.topology.group_id,
        from: if o.from_latest {
            kafka::From::Latest
        } else {
            kafka::From::Earliest
        },
        follow: o.serve.is_some(),
    };
    // The lock is taken per message: the server thread reads the graph in between.
    kafka::consume(
        &opts,
        stop,
        &mut |v| state.lock().expect("state").feed(v),
        &mut || tick(&mut state.lock().expect("state")),
    )
}

#[cfg(not(feature = "kafka"))]
fn consume_kafka(
    _: &Options,
    _: &Config,
    _: &Arc<Mutex<State>>,
    _: &AtomicBool,
    _: &mut dyn FnMut(&mut State),
) -> anyhow::Result<()> {
    bail!("--kafka: this connbeat was built without the kafka feature")
}

/// The fuzz target `topology` (fuzz/): any bytes, as lines, through parsing, joining and
/// every renderer, with small bounds so that the bounds are reached too. Built for tests
/// and the fuzz crate only (feature `fuzzing`), like `connbeat::fuzzing`.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz(data: &[u8]) {
    let limits = Limits {
        max_nodes: 8,
        max_edges: 8,
        max_flows: 4,
    };
    let mut st = State {
        reader: parse::Reader::default(),
        graph: Graph::new(limits),
        limits,
        events: Events::default(),
        newest_ms: None,
        window_ms: 60_000,
        since_ms: None,
        until_ms: None,
        live: false,
    };
    let _ = input::for_each_line(data, &mut |l| match l {
        input::Line::Text(t) => {
            // What the reader learned from earlier lines changes how fast it reads a
            // line, never what it reads.
            let learned = st.reader.parse(t);
            assert_eq!(learned, parse::parse(t), "{}", String::from_utf8_lossy(t));
            st.feed(t)
        }
        input::Line::TooLong => st.too_long(),
    });
    let r = st.report();
    for f in [Format::Json, Format::Dot, Format::Html] {
        let _ = render(&r, f);
    }
}

#[cfg(test)]
mod tests {
    /// The fuzz target on mutations of real lines: nothing panics.
    #[test]
    fn the_fuzz_target_survives_mutated_events() {
        let seed = concat!(
            r#"{"@timestamp":"2026-12-01T10:00:00.000Z","type":"connbeat","action":"open","direction":"outgoing","transport":"tcp","local_ip":"10.0.0.1","local_port":5000,"remote_ip":"10.0.0.2","remote_port":80,"local_process":{"binary":"curl"},"tcp":{"rtt_us":5,"bytes_acked":1},"beat":{"name":"a","local_ips":["10.0.0.1"]}}"#,
            "\n",
            r#"{"@timestamp":"2026-12-01T10:00:01.000Z","type":"http","status":"OK","responsetime":3,"client_ip":"10.0.0.1","client_port":5000,"ip":"10.0.0.2","port":80,"server_process":{"binary":"nginx"},"beat":{"name":"b"}}"#,
            "\n"
        )
        .as_bytes();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..3000 {
            let mut d = seed.to_vec();
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x as usize) % d.len();
                d[i] = (x >> 32) as u8;
            }
            super::fuzz(&d);
        }
        super::fuzz(seed);
    }
}

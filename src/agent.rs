//! Wires sources, pipeline and output together for `run`, and implements `test output`.

use crate::config::{Config, Loaded, Namespaces};
use crate::conn::source::{CloseMode, ConnSource};
use crate::event::CommonFields;
use crate::monitor::METRICS;
use crate::output::{self, DryRunOutput, Output};
use crate::processors::Processing;
use crate::publish::{self, PipelineSettings};
use anyhow::Context;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Options of `run` that come from the command line rather than the file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub once: bool,
    pub read_pcap: Option<PathBuf>,
    pub dry_run: bool,
}

/// A failure of `run`, with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Runtime(#[from] anyhow::Error),
}

impl RunError {
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Config(_) => 1,
            RunError::Runtime(_) => 2,
        }
    }
}

/// Runs the agent until a signal (or, with `--once`, one poll) and flushes the output.
pub fn run(loaded: Loaded, opts: RunOptions) -> Result<(), RunError> {
    let config = loaded.config;
    let output: Box<dyn Output> = if opts.dry_run {
        Box::new(DryRunOutput)
    } else {
        output::from_config(&config).map_err(|e| RunError::Config(e.to_string()))?
    };
    if let Some(path) = &opts.read_pcap {
        return read_pcap(&config, path, output);
    }
    let output_name = output.name();
    let _topology = start_topology(&config, opts.dry_run)?;
    let _monitor = start_monitoring(&config, output_name)?;
    let (publisher, pipeline) = start_pipeline(&config, output)?;
    let shutdown_timeout = config.shutdown_timeout.get();

    if opts.once {
        let mut source = ConnSource::new(&config.connbeat, publisher, false)?;
        let stats = source.poll()?;
        tracing::info!(target: "conn", "one poll: {} sockets, {} events", stats.sockets, stats.events);
        drop(source);
        pipeline.finish(shutdown_timeout);
        log_totals();
        return Ok(());
    }

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing the signal handlers")?;
    }
    let mut source = ConnSource::new(&config.connbeat, publisher.clone(), true)?;
    let inspect = if crate::inspect::enabled(&config) {
        let owners = Arc::new(crate::conn::owners::SharedOwners::new(
            config.connbeat.connect_recorder_entries,
        ));
        source.share_owners(owners.clone());
        let lookup: Arc<dyn crate::owner::ProcessLookup> = owners;
        Some(
            crate::inspect::spawn_live(&config, publisher, Some(lookup), stop.clone())
                .map_err(|e| RunError::Config(format!("connbeat.interfaces: {e:#}")))?,
        )
    } else {
        drop(publisher);
        None
    };
    startup_summary(&config, &loaded.path, &source, output_name, opts.dry_run);
    if config.logging.metrics.enabled {
        crate::monitor::periodic::spawn(config.logging.metrics.period.get(), stop.clone());
    }
    let conn_stop = stop.clone();
    let conn = std::thread::Builder::new()
        .name("conn".into())
        .spawn(move || source.run(&conn_stop))
        .context("starting the connection source thread")?;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    tracing::info!(
        "stopping: flushing the queue (shutdown_timeout {})",
        humantime::format_duration(shutdown_timeout)
    );
    let _ = conn.join();
    if let Some(t) = inspect {
        let _ = t.join();
    }
    pipeline.finish(shutdown_timeout);
    log_totals();
    Ok(())
}

/// Starts the publishing pipeline, with the configured processors in front of its queue.
fn start_pipeline(
    config: &Config,
    output: Box<dyn Output>,
) -> Result<(publish::Publisher, publish::Pipeline), RunError> {
    let common = CommonFields::from_config(config);
    let processing = Processing::from_config(config, &common)
        .map_err(|e| RunError::Config(e.to_string()))?
        .map(Arc::new);
    let (publisher, pipeline) =
        publish::start(PipelineSettings::from_config(config), output, common)
            .map_err(|e| RunError::Config(e.to_string()))?;
    Ok((publisher.with_processing(processing), pipeline))
}

/// With `output.redis.save_topology`, publishes this agent's name and addresses and
/// learns the other agents' (transactions then name both ends); stops when dropped.
fn start_topology(
    c: &Config,
    dry_run: bool,
) -> Result<Option<crate::output::redis::topology::Topology>, RunError> {
    match &c.output.redis {
        Some(r) if r.enabled && r.save_topology && !dry_run => {
            let name = CommonFields::from_config(c).name;
            crate::output::redis::topology::start(r, &name, crate::conn::source::local_ips())
                .map(Some)
                .map_err(|e| RunError::Config(e.to_string()))
        }
        _ => Ok(None),
    }
}

/// Starts the self-monitoring endpoint when `http.enabled`; it stops when dropped.
fn start_monitoring(
    c: &Config,
    output: &str,
) -> Result<Option<crate::monitor::http::MonitorServer>, RunError> {
    if !c.http.enabled {
        return Ok(None);
    }
    let common = CommonFields::from_config(c);
    let info = crate::monitor::http::BeatInfo {
        name: common.name,
        hostname: common.hostname,
        version: common.version,
        commit: env!("CONNBEAT_GIT_COMMIT").into(),
        features: env!("CONNBEAT_FEATURES").into(),
        output: output.into(),
    };
    crate::monitor::http::start(&c.http.host, c.http.port, info)
        .map(Some)
        .map_err(|e| RunError::Config(e.to_string()))
}

/// `-I FILE`: deep inspection of a capture file, then flush and exit.
fn read_pcap(
    config: &Config,
    path: &std::path::Path,
    output: Box<dyn Output>,
) -> Result<(), RunError> {
    if !crate::inspect::enabled(config) {
        return Err(RunError::Config(
            "-I/--read-pcap: no protocol is enabled under connbeat.protocols, and connbeat.flows is off".into(),
        ));
    }
    let (publisher, pipeline) = start_pipeline(config, output)?;
    let summary = crate::inspect::run_offline(config, path, &publisher, None)
        .map_err(|e| RunError::Config(format!("-I {}: {e:#}", path.display())))?;
    drop(publisher);
    tracing::info!(target: "inspect",
        "{}: {} packets, {} transactions, {} decode errors, {} TCP gaps, {} parse errors",
        path.display(), summary.packets, summary.transactions, summary.decode_errors,
        summary.tcp_gaps, summary.parse_errors);
    pipeline.finish(config.shutdown_timeout.get());
    log_totals();
    Ok(())
}

fn startup_summary(
    c: &Config,
    path: &std::path::Path,
    source: &ConnSource,
    output: &str,
    dry_run: bool,
) {
    let cb = &c.connbeat;
    let transports = if cb.udp { "TCP and UDP" } else { "TCP" };
    let scope = match cb.namespaces {
        Namespaces::Host => format!("the host network namespace (netns {})", source.netns()),
        Namespaces::All => format!(
            "every network namespace ({} now, the agent's own is {})",
            source.namespace_count(),
            source.netns()
        ),
    };
    let closes = match source.close_mode() {
        CloseMode::Notifications => "kernel destroy notifications".to_string(),
        CloseMode::PollDiff(why) => format!("poll differences only ({why})"),
        CloseMode::Off => "off".to_string(),
    };
    tracing::info!(
        "connbeat {} started with {}: {transports} sockets (IPv4 and IPv6) in {scope}, \
         poll every {}{}, re-publish after {}; close events: {closes}; processes from {} (socket fds {}, outgoing connections {}, cmdline {}, environ {}); \
         deep inspection: {}; output: {}{}",
        env!("CARGO_PKG_VERSION"),
        path.display(),
        cb.poll_interval,
        if source.follows_changes() {
            " (sockets that changed state, all of them once per re-publish window)"
        } else {
            ""
        },
        cb.aggregation,
        cb.proc_root,
        if source.uses_fd_iter() {
            "by BPF iterator"
        } else {
            "by fd links"
        },
        source.connect_mode(),
        on_off(cb.expose_cmdline),
        on_off(cb.expose_environ),
        inspect_summary(c),
        output,
        if dry_run {
            " (dry run: nothing is published)"
        } else {
            ""
        },
    );
}

fn inspect_summary(c: &Config) -> String {
    if !crate::inspect::enabled(c) {
        return "off".into();
    }
    let protos: Vec<String> = c
        .connbeat
        .protocols
        .iter()
        .filter(|p| p.common().enabled)
        .map(|p| {
            let ports: Vec<String> = p.common().ports.iter().map(u16::to_string).collect();
            format!("{} ({})", p.name(), ports.join(", "))
        })
        .collect();
    let flows = match crate::config::FlowsConfig::active(&c.connbeat) {
        Some(f) => format!(
            "{}flows (timeout {}, period {})",
            if protos.is_empty() { "" } else { ", " },
            f.timeout,
            f.period.0.map_or("none".to_string(), |p| p.to_string())
        ),
        None => String::new(),
    };
    let i = &c.connbeat.interfaces;
    let how = match i.capture_type {
        crate::config::CaptureType::Pcap => "pcap".to_string(),
        crate::config::CaptureType::AfPacket => format!("af_packet, {} worker(s)", i.workers),
    };
    format!(
        "{}{flows} on device {} ({how})",
        protos.join(", "),
        i.device
    )
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// Logs every non-zero counter once, at exit.
fn log_totals() {
    let line: Vec<String> = METRICS
        .snapshot()
        .into_iter()
        .filter(|(_, v)| *v != 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    tracing::info!(target: "monitoring", "Total metrics: {}", line.join(" "));
}

/// `test output`: connects to the enabled output step by step (printed as they run, on
/// standard output) and fails with the first step that does not work, naming the setting.
pub fn test_output(c: &Config) -> anyhow::Result<String> {
    let mut out = std::io::stdout();
    crate::output::check::run(c, &mut out).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(String::new())
}

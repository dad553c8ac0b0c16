//! The `connbeat` command line: parses arguments, loads the configuration, and runs the
//! chosen command. Exit codes: 0 ok, 1 configuration or usage error, 2 runtime failure.

use clap::{ArgAction, Args, Parser, Subcommand};
use connbeat::agent::{self, RunOptions};
use connbeat::config::{self, LoadOptions};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "connbeat",
    version = version_line(),
    about = "Tells which process talks to which: every TCP connection with its process, and protocol transactions"
)]
struct Cli {
    /// Configuration file [default: ./connbeat.yml, then /etc/connbeat/connbeat.yml]
    #[arg(short = 'c', long = "config", global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Override one setting (dotted key, YAML value); repeatable
    #[arg(short = 'E', value_name = "KEY=VALUE", global = true)]
    overrides: Vec<String>,
    /// Log to stderr (logs always go to stderr; accepted for Beats compatibility)
    #[arg(short = 'e', global = true)]
    log_stderr: bool,
    /// Debug logging for comma-separated selectors ("*" = all), e.g. conn,procs,publish
    #[arg(short = 'd', value_name = "SELECTORS", global = true)]
    debug: Option<String>,
    /// Refuse a config file writable by group/others or owned by another non-root user
    #[arg(long = "strict.perms", global = true, default_value_t = true, action = ArgAction::Set, value_name = "BOOL")]
    strict_perms: bool,
    #[command(flatten)]
    run: RunArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args, Debug, Clone, Default)]
struct RunArgs {
    /// One poll: emit every current socket, flush the output, exit
    #[arg(long, global = true)]
    once: bool,
    /// Deep inspection from a capture file instead of a live device
    #[arg(short = 'I', long = "read-pcap", value_name = "FILE", global = true)]
    read_pcap: Option<PathBuf>,
    /// Build events but publish none (they are counted in the stats)
    #[arg(short = 'N', long = "dry-run", global = true)]
    dry_run: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the agent (the default command)
    Run,
    /// Check the configuration or the output
    Test {
        #[command(subcommand)]
        what: TestWhat,
    },
    /// Print the effective configuration or the Elasticsearch index template
    Export {
        #[command(subcommand)]
        what: ExportWhat,
    },
    /// Print version, git commit and build features
    Version,
    /// The graph of who talks to whom, from what the agents ship
    Topology(TopologyArgs),
}

#[derive(Args, Debug)]
struct TopologyArgs {
    /// Read the agents' Kafka topic (topology.kafka, else output.kafka of the config file)
    #[arg(long)]
    kafka: bool,
    /// NDJSON files of the file output (rotated and gzip files included); - for stdin
    #[arg(value_name = "FILE", conflicts_with = "kafka")]
    files: Vec<PathBuf>,
    /// Output format
    #[arg(long, value_enum, default_value = "json")]
    format: TopologyFormat,
    /// Write the graph to FILE instead of standard output
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Keep reading, and serve the live page and its GET /graph JSON on ADDR (host:port)
    #[arg(long, value_name = "ADDR")]
    serve: Option<String>,
    /// Event time covered, back from the newest event (or from now with --serve) [default: topology.window, 15m]
    #[arg(long, value_name = "DURATION")]
    window: Option<String>,
    /// Only events at or after T (RFC 3339, or a duration ago such as 1h)
    #[arg(long, value_name = "T")]
    since: Option<String>,
    /// Only events at or before T (RFC 3339, or a duration ago)
    #[arg(long, value_name = "T")]
    until: Option<String>,
    /// Where a partition without a committed offset starts
    #[arg(long, value_enum, default_value = "earliest")]
    from: TopologyFrom,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum TopologyFormat {
    Json,
    Dot,
    Html,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
enum TopologyFrom {
    Earliest,
    Latest,
}

/// `--since`/`--until`: an RFC 3339 time, or a duration before now.
fn topology_time(flag: &str, v: &str) -> Result<i64, String> {
    if let Some(ms) = connbeat::topology::parse::parse_time_ms(v) {
        return Ok(ms);
    }
    let d = humantime::parse_duration(v).map_err(|_| {
        format!("{flag}: {v:?} is neither an RFC 3339 time nor a duration such as 1h")
    })?;
    let now = std::time::SystemTime::now() - d;
    Ok(now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0))
}

fn topology_options(a: &TopologyArgs) -> Result<connbeat::topology::Options, String> {
    use connbeat::topology::{Format, Input, Options};
    let input = match (a.kafka, a.files.is_empty()) {
        (true, _) => Input::Kafka,
        (false, false) => Input::Files(a.files.clone()),
        (false, true) => {
            return Err(
                "topology: name the input: --kafka, FILE..., or - for standard input".into(),
            );
        }
    };
    let window = a
        .window
        .as_deref()
        .map(|w| humantime::parse_duration(w).map_err(|e| format!("--window: {w:?}: {e}")))
        .transpose()?;
    Ok(Options {
        input,
        format: match a.format {
            TopologyFormat::Json => Format::Json,
            TopologyFormat::Dot => Format::Dot,
            TopologyFormat::Html => Format::Html,
        },
        output: a.output.clone(),
        serve: a.serve.clone(),
        window,
        since_ms: a
            .since
            .as_deref()
            .map(|v| topology_time("--since", v))
            .transpose()?,
        until_ms: a
            .until
            .as_deref()
            .map(|v| topology_time("--until", v))
            .transpose()?,
        from_latest: a.from == TopologyFrom::Latest,
    })
}

#[derive(Subcommand, Debug)]
enum TestWhat {
    /// Load and validate the configuration
    Config,
    /// Connect to the enabled output and report what was checked
    Output,
}

#[derive(Subcommand, Debug)]
enum ExportWhat {
    /// The effective configuration, defaults applied, secrets masked
    Config,
    /// The Elasticsearch index template for the event fields
    Template,
}

const fn version_line() -> &'static str {
    concat!(
        env!("CARGO_PKG_VERSION"),
        " (commit ",
        env!("CONNBEAT_GIT_COMMIT"),
        ", features: ",
        env!("CONNBEAT_FEATURES"),
        ")"
    )
}

/// Keeps glibc's threshold for serving large blocks by `mmap` fixed. By default each free of
/// such a block raises it to that block's size, for good: after the first poll frees its
/// buffers (a 20,000-socket poll's events are ~7 MB), later ones of that size come from the
/// heap and stay resident. Measured with 10,000 connections, after the first poll: 34.3 MB
/// resident without this, 25.1 MB with it.
///
/// Only the agent does this. `connbeat topology` reads Kafka, whose consumer inflates every
/// compressed message set into a buffer of about 1.5 MB grown by `realloc`: with the threshold
/// fixed each of them was mapped, grown by `mremap`, faulted in and unmapped again, 0.4 s of
/// system time per million events (`perf/topology.sh`).
fn fix_mmap_threshold() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes a malloc tunable; called before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// Lets `connbeat topology` keep the memory it frees. Its Kafka consumer inflates each
/// compressed message set into a fresh buffer of about 1.5 MB, and its tables grow by
/// doubling; with glibc's defaults the heap's top was given back to the kernel and taken
/// again over and over, each page faulted in and cleared anew: 80,000-130,000 page faults
/// and 0.25-0.3 s of system time per million events, against 29,000 and 0.1 s with large
/// blocks from the heap (below 32 MiB), the heap grown 64 MiB at a time and given back only
/// beyond 256 MiB free (`perf/topology.sh`; resident memory 124 MB -> 128 MB).
fn keep_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes malloc tunables; called before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Some(Command::Topology(_))) {
        keep_freed_memory();
    } else {
        fix_mmap_threshold();
    }
    let selectors: Vec<String> = cli
        .debug
        .as_deref()
        .map(|d| d.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default();

    if matches!(cli.command, Some(Command::Version)) {
        println!("connbeat version {}", version_line());
        return ExitCode::SUCCESS;
    }

    let loaded = match config::load(&LoadOptions {
        path: cli.config.clone(),
        overrides: cli.overrides.clone(),
        strict_perms: cli.strict_perms,
    }) {
        Ok(l) => l,
        // The topology command reading files needs no configuration file: the defaults,
        // with the -E overrides. (An empty topology.kafka section stands for an output,
        // which such a file has none of; --kafka is not in use here.)
        Err(config::ConfigError::NotFound(_))
            if cli.config.is_none()
                && matches!(&cli.command, Some(Command::Topology(a)) if !a.kafka) =>
        {
            match config::from_yaml_str("topology.kafka: {}", &cli.overrides, &|k| {
                std::env::var(k).ok()
            }) {
                Ok(config) => config::Loaded {
                    config,
                    path: PathBuf::new(),
                    notes: Vec::new(),
                },
                Err(e) => {
                    eprintln!("Error: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::from(1);
        }
    };
    let mut all_selectors = loaded.config.logging.selectors.clone();
    all_selectors.extend(selectors);
    connbeat::logging::init(loaded.config.logging.level.as_str(), &all_selectors);
    for note in &loaded.notes {
        tracing::warn!("{note}");
    }

    match cli.command {
        Some(Command::Test {
            what: TestWhat::Config,
        }) => {
            println!("Config OK");
            ExitCode::SUCCESS
        }
        Some(Command::Test {
            what: TestWhat::Output,
        }) => match agent::test_output(&loaded.config) {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("Error: {e:#}");
                ExitCode::from(1)
            }
        },
        Some(Command::Export {
            what: ExportWhat::Config,
        }) => {
            print!("{}", config::export_yaml(&loaded.config));
            ExitCode::SUCCESS
        }
        Some(Command::Export {
            what: ExportWhat::Template,
        }) => {
            print!("{}", connbeat::output::template::for_config(&loaded.config));
            ExitCode::SUCCESS
        }
        Some(Command::Version) => unreachable!("handled above"),
        Some(Command::Topology(a)) => {
            let opts = match topology_options(&a) {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("Error: {e}");
                    return ExitCode::from(1);
                }
            };
            let c = &loaded.config;
            if a.kafka && c.topology.kafka.is_none() && c.output.kafka.is_none() {
                eprintln!(
                    "Error: --kafka: no topic to read in {}; set output.kafka (the agents' settings) or topology.kafka",
                    loaded.path.display()
                );
                return ExitCode::from(1);
            }
            match connbeat::topology::run(&opts, c) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("Error: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Some(Command::Run) | None => {
            let opts = RunOptions {
                once: cli.run.once,
                read_pcap: cli.run.read_pcap,
                dry_run: cli.run.dry_run,
            };
            match agent::run(loaded, opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("Error: {e:#}");
                    ExitCode::from(e.exit_code())
                }
            }
        }
    }
}

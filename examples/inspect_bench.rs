//! Deep inspection of a capture file with events dropped as they are built: measures the
//! capture → decode → reassembly → parse → event path on one core, without the output.
//!     cargo run --release --example inspect_bench -- CONFIG.yml CAPTURE.pcap

use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 3,
        "usage: inspect_bench CONFIG.yml CAPTURE.pcap"
    );
    let text = std::fs::read_to_string(&args[1])?;
    let config = connbeat::config::from_yaml_str(&text, &[], &|_| None)?;
    let mut by_type = std::collections::BTreeMap::<String, u64>::new();
    let mut sink =
        |e: connbeat::event::Event| *by_type.entry(e.kind().to_string()).or_default() += 1;
    let t = Instant::now();
    let s = connbeat::inspect::run_offline_with(
        &config,
        std::path::Path::new(&args[2]),
        &mut sink,
        None,
    )?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{} packets, {} transactions in {secs:.3} s: {:.0} packets/s, {:.0} transactions/s; by type {by_type:?}",
        s.packets,
        s.transactions,
        s.packets as f64 / secs,
        s.transactions as f64 / secs
    );
    Ok(())
}

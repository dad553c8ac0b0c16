//! `output.console`: NDJSON (or pretty JSON) on standard output.

use super::check::{CheckFailed, Steps};
use super::{Outcome, Output, OutputError, encode_into};
use crate::event::Record;
use serde::{Deserialize, Serialize};
use std::io::Write;

/// `output.console`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ConsoleOutputConfig {
    pub enabled: bool,
    pub pretty: bool,
}

impl Default for ConsoleOutputConfig {
    fn default() -> Self {
        ConsoleOutputConfig {
            enabled: true,
            pretty: false,
        }
    }
}

/// The registry's handle on the console output.
pub struct Console;

impl super::Kind for Console {
    const NAME: &'static str = "console";
    type Config = ConsoleOutputConfig;
    fn enabled(c: &ConsoleOutputConfig) -> bool {
        c.enabled
    }
    fn build(c: &ConsoleOutputConfig) -> Result<Box<dyn Output>, OutputError> {
        Ok(Box::new(ConsoleOutput::stdout(c.pretty)))
    }
    fn test(_c: &ConsoleOutputConfig, s: &mut Steps<'_>) -> Result<(), CheckFailed> {
        s.line("console output... OK");
        Ok(())
    }
}

pub struct ConsoleOutput {
    out: Box<dyn Write + Send>,
    pretty: bool,
    buf: Vec<u8>,
    /// Standard output's reader went away (`connbeat | head`): nothing can be written any
    /// more, so events are dropped (and counted) instead of retried forever.
    closed: bool,
}

impl ConsoleOutput {
    pub fn stdout(pretty: bool) -> ConsoleOutput {
        ConsoleOutput::new(Box::new(std::io::stdout()), pretty)
    }

    pub fn new(out: Box<dyn Write + Send>, pretty: bool) -> ConsoleOutput {
        ConsoleOutput {
            out,
            pretty,
            buf: Vec::with_capacity(64 * 1024),
            closed: false,
        }
    }
}

impl Output for ConsoleOutput {
    fn name(&self) -> &'static str {
        "console"
    }

    fn publish(&mut self, batch: &[Record]) -> Result<Outcome, OutputError> {
        const CLOSED: &str = "standard output is closed (broken pipe)";
        if self.closed {
            return Ok(Outcome::all_dropped(batch.len(), CLOSED));
        }
        self.buf.clear();
        for e in batch {
            encode_into(&mut self.buf, e, self.pretty);
        }
        let written = self.out.write_all(&self.buf).and_then(|_| self.out.flush());
        if let Err(e) = &written
            && e.kind() == std::io::ErrorKind::BrokenPipe
        {
            self.closed = true;
            tracing::warn!(target: "output", "console: {CLOSED}: events are dropped from now on");
            return Ok(Outcome::all_dropped(batch.len(), CLOSED));
        }
        written.map_err(|e| OutputError::Write {
            output: "console",
            message: format!("writing to standard output: {e}"),
            source: Some(e),
        })?;
        crate::monitor::add(
            &crate::monitor::METRICS.output_write_bytes,
            self.buf.len() as u64,
        );
        Ok(Outcome::Acked)
    }
}

//! `output.console`: NDJSON (or pretty JSON) on standard output.

use super::{Outcome, Output, OutputError, encode_into};
use crate::event::Record;
use std::io::Write;

pub struct ConsoleOutput {
    out: Box<dyn Write + Send>,
    pretty: bool,
    buf: Vec<u8>,
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
        }
    }
}

impl Output for ConsoleOutput {
    fn name(&self) -> &'static str {
        "console"
    }

    fn publish(&mut self, batch: &[Record]) -> Result<Outcome, OutputError> {
        self.buf.clear();
        for e in batch {
            encode_into(&mut self.buf, e, self.pretty);
        }
        self.out
            .write_all(&self.buf)
            .and_then(|_| self.out.flush())
            .map_err(|e| OutputError::Write {
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

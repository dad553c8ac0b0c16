//! `output.file`: NDJSON files rotated by size, keeping `number_of_files`.
//!
//! The current file is `<path>/<filename>`; when it would grow past `rotate_every_kb`, it
//! becomes `<filename>.1`, the older ones shift up, and the oldest beyond the limit is
//! removed (the Beats naming users' log shippers already know).

use super::check::{CheckFailed, Steps, fail};
use super::{Outcome, Output, OutputError, encode_into};
use crate::config::ConfigError;
use crate::event::Record;
use serde::{Deserialize, Serialize};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

/// `output.file`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct FileOutputConfig {
    pub enabled: bool,
    pub path: String,
    pub filename: String,
    pub rotate_every_kb: u64,
    pub number_of_files: usize,
    /// Octal permission bits of the files written, as a string ("0600").
    pub permissions: String,
}

impl Default for FileOutputConfig {
    fn default() -> Self {
        FileOutputConfig {
            enabled: true,
            path: "/var/lib/connbeat".into(),
            filename: "connbeat".into(),
            rotate_every_kb: 10240,
            number_of_files: 7,
            permissions: "0600".into(),
        }
    }
}

/// The registry's handle on the file output.
pub struct File;

impl super::Kind for File {
    const NAME: &'static str = "file";
    type Config = FileOutputConfig;
    fn enabled(c: &FileOutputConfig) -> bool {
        c.enabled
    }
    fn validate(f: &FileOutputConfig) -> Result<(), ConfigError> {
        crate::config::file_permissions(&f.permissions)
            .map_err(|m| ConfigError::invalid("output.file.permissions", m))?;
        for (key, zero) in [
            ("output.file.number_of_files", f.number_of_files == 0),
            ("output.file.rotate_every_kb", f.rotate_every_kb == 0),
        ] {
            if zero {
                return Err(ConfigError::invalid(key, "must not be zero or empty"));
            }
        }
        if f.filename.is_empty() || f.filename.contains('/') {
            return Err(ConfigError::invalid(
                "output.file.filename",
                "must be a plain file name (the directory goes in output.file.path)",
            ));
        }
        Ok(())
    }
    fn build(c: &FileOutputConfig) -> Result<Box<dyn Output>, OutputError> {
        Ok(Box::new(FileOutput::new(c)?))
    }
    fn test(f: &FileOutputConfig, s: &mut Steps<'_>) -> Result<(), CheckFailed> {
        s.line("file output");
        s.indent = 2;
        s.step(&format!("write to {}", f.path), || {
            FileOutput::new(f)
                .map(|_| ((), String::new()))
                .map_err(|e| fail("output.file.path", e.to_string()))
        })?;
        Ok(())
    }
}

pub struct FileOutput {
    dir: PathBuf,
    filename: String,
    max_bytes: u64,
    keep: usize,
    mode: u32,
    file: std::fs::File,
    size: u64,
    buf: Vec<u8>,
}

impl FileOutput {
    pub fn new(c: &FileOutputConfig) -> Result<FileOutput, OutputError> {
        let mode = crate::config::file_permissions(&c.permissions)
            .map_err(|m| OutputError::Config(format!("output.file.permissions: {m}")))?;
        let dir = PathBuf::from(&c.path);
        std::fs::create_dir_all(&dir).map_err(|e| {
            OutputError::Config(format!(
                "output.file.path: cannot create directory {}: {e}",
                dir.display()
            ))
        })?;
        let (file, size) = open(&dir.join(&c.filename), mode)?;
        Ok(FileOutput {
            dir,
            filename: c.filename.clone(),
            max_bytes: c.rotate_every_kb.saturating_mul(1024),
            keep: c.number_of_files,
            mode,
            file,
            size,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    fn path(&self, n: usize) -> PathBuf {
        if n == 0 {
            self.dir.join(&self.filename)
        } else {
            self.dir.join(format!("{}.{n}", self.filename))
        }
    }

    fn rotate(&mut self) -> Result<(), OutputError> {
        self.file.sync_all().map_err(|e| err("syncing", e))?;
        // The oldest kept file is <filename>.(keep-1); anything beyond goes.
        let _ = std::fs::remove_file(self.path(self.keep.saturating_sub(1)));
        for n in (0..self.keep.saturating_sub(1)).rev() {
            let from = self.path(n);
            if from.exists() {
                std::fs::rename(&from, self.path(n + 1)).map_err(|e| err("rotating", e))?;
            }
        }
        let (file, size) = open(&self.path(0), self.mode)?;
        self.file = file;
        self.size = size;
        Ok(())
    }

    fn write_buf(&mut self) -> Result<(), OutputError> {
        self.file
            .write_all(&self.buf)
            .map_err(|e| err("writing", e))?;
        self.size += self.buf.len() as u64;
        crate::monitor::add(
            &crate::monitor::METRICS.output_write_bytes,
            self.buf.len() as u64,
        );
        self.buf.clear();
        Ok(())
    }
}

fn open(path: &std::path::Path, mode: u32) -> Result<(std::fs::File, u64), OutputError> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            OutputError::Config(format!("output.file: cannot open {}: {e}", path.display()))
        })?;
    // `mode` applies only on creation; an existing file is brought to the setting too.
    let _ = file.set_permissions(std::fs::Permissions::from_mode(mode));
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((file, size))
}

fn err(what: &str, e: std::io::Error) -> OutputError {
    OutputError::Write {
        output: "file",
        message: format!("{what}: {e}"),
        source: Some(e),
    }
}

impl Output for FileOutput {
    fn name(&self) -> &'static str {
        "file"
    }

    fn publish(&mut self, batch: &[Record]) -> Result<Outcome, OutputError> {
        for e in batch {
            let line = e.len() + 1;
            if self.size + (self.buf.len() + line) as u64 > self.max_bytes
                && self.size + self.buf.len() as u64 > 0
            {
                self.write_buf()?;
                self.rotate()?;
            }
            encode_into(&mut self.buf, e, false);
        }
        self.write_buf()?;
        Ok(Outcome::Acked)
    }

    fn flush(&mut self) -> Result<(), OutputError> {
        self.file.sync_data().map_err(|e| err("syncing", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rotates_by_size_and_keeps_the_configured_number_of_files() {
        let dir = std::env::temp_dir().join(format!("connbeat-file-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let c = FileOutputConfig {
            path: dir.display().to_string(),
            filename: "events".into(),
            rotate_every_kb: 1,
            number_of_files: 3,
            permissions: "0640".into(),
            ..Default::default()
        };
        let mut out = FileOutput::new(&c).unwrap();
        let batch: Vec<Record> = (0..100)
            .map(|i| Record::from_value(&json!({"n": i, "pad": "x".repeat(80)})))
            .collect();
        out.publish(&batch).unwrap();
        out.flush().unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec!["events", "events.1", "events.2"]);
        for n in &names {
            let p = dir.join(n);
            let meta = std::fs::metadata(&p).unwrap();
            assert!(meta.len() <= 1024, "{n} is {} bytes", meta.len());
            assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        }
        // The newest events are in the current file, the last one last.
        let current = std::fs::read_to_string(dir.join("events")).unwrap();
        let last: serde_json::Value =
            serde_json::from_str(current.lines().last().unwrap()).unwrap();
        assert_eq!(last["n"], 99);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

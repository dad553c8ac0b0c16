//! Configuration errors. Each one names the file or the dotted key at fault, because that
//! is what a user needs to fix it.

use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("no configuration file found (tried {}); pass one with -c FILE", list(.0))]
    NotFound(Vec<PathBuf>),
    #[error("cannot read configuration file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Permissions(String),
    #[error("invalid YAML: {0}")]
    Syntax(String),
    #[error("-E expects KEY=VALUE (for example -E connbeat.poll_interval=5s), got {0:?}")]
    Override(String),
    #[error("unknown setting `{key}`{}", suggest(.suggestion))]
    UnknownKey {
        key: String,
        suggestion: Option<String>,
    },
    #[error(
        "this is a Packetbeat 1.x configuration; connbeat reads Packetbeat 8 names:\n{}",
        .0.join("\n")
    )]
    Legacy(Vec<String>),
    #[error("invalid value for `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("{}: {inner}", .path.display())]
    InFile {
        path: PathBuf,
        #[source]
        inner: Box<ConfigError>,
    },
}

impl ConfigError {
    /// Adds the file name to an error found in its contents.
    pub fn in_file(self, path: &std::path::Path) -> ConfigError {
        ConfigError::InFile {
            path: path.to_path_buf(),
            inner: Box::new(self),
        }
    }

    pub fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.to_string(),
            message: message.into(),
        }
    }
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn suggest(s: &Option<String>) -> String {
    match s {
        Some(k) => format!("; did you mean `{k}`?"),
        None => String::new(),
    }
}

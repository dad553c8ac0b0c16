//! Log set-up: `logging.level`, and debug for the selectors given by `-d` or
//! `logging.selectors` (each selector is a `tracing` target: conn, procs, publish, ...).

use tracing_subscriber::EnvFilter;

/// The filter directive for a level and a list of debug selectors.
pub fn directive(level: &str, selectors: &[String]) -> String {
    let level = match level {
        "warning" => "warn",
        other => other,
    };
    if selectors.iter().any(|s| s == "*") {
        return "debug".into();
    }
    let mut d = level.to_string();
    for s in selectors.iter().filter(|s| !s.is_empty()) {
        d.push_str(&format!(",{s}=debug"));
    }
    d
}

/// Installs the global subscriber, logging to standard error (standard output is the
/// console output's).
pub fn init(level: &str, selectors: &[String]) {
    let filter =
        EnvFilter::try_new(directive(level, selectors)).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    #[test]
    fn selectors_become_debug_targets() {
        assert_eq!(
            super::directive("info", &["conn".into(), "procs".into()]),
            "info,conn=debug,procs=debug"
        );
        assert_eq!(super::directive("warning", &[]), "warn");
        assert_eq!(super::directive("info", &["*".into()]), "debug");
    }
}

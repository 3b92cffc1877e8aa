//! Logging setup: JSON lines when `LOG_FORMAT=json`, human-readable text otherwise, filtered by
//! `RUST_LOG` (default `info`).

use crate::config::Env;
use tracing_subscriber::EnvFilter;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

/// Logging settings read from `LOG_FORMAT` and `RUST_LOG`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// A `tracing` filter directive such as `info,datastorage=debug`.
    pub filter: String,
}

impl LogConfig {
    /// Reads `LOG_FORMAT` (`json`|`text`) and `RUST_LOG` (checked for syntax).
    pub fn read(env: &mut Env<'_>) -> Self {
        let format = match env.one_of("LOG_FORMAT", "text", &["json", "text"]).as_str() {
            "json" => LogFormat::Json,
            _ => LogFormat::Text,
        };
        let filter = env.string("RUST_LOG", "info");
        if let Err(e) = EnvFilter::try_new(&filter) {
            env.error(
                "RUST_LOG",
                format!("RUST_LOG={filter:?} is not a valid filter ({e}); expected e.g. info or info,datastorage=debug"),
            );
        }
        LogConfig { format, filter }
    }
}

/// Installs the global subscriber. A second call (tests) is a no-op.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_new(&config.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
    // An error here means a subscriber is already installed (tests): keep that one.
    let _ = result;
}

/// Installs a text subscriber for tests, honouring `RUST_LOG` (default `warn`).
pub fn init_for_tests() {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_string());
    init(&LogConfig {
        format: LogFormat::Text,
        filter,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_text_and_info() {
        let c = Env::from_pairs(&[]).load(LogConfig::read).unwrap();
        assert_eq!(c.format, LogFormat::Text);
        assert_eq!(c.filter, "info");
    }

    #[test]
    fn json_and_a_bad_filter() {
        let c = Env::from_pairs(&[("LOG_FORMAT", "json"), ("RUST_LOG", "debug")])
            .load(LogConfig::read)
            .unwrap();
        assert_eq!(c.format, LogFormat::Json);
        let err = Env::from_pairs(&[("LOG_FORMAT", "xml"), ("RUST_LOG", "info,datastorage=loud")])
            .load(LogConfig::read)
            .unwrap_err();
        assert_eq!(err.variables(), vec!["LOG_FORMAT", "RUST_LOG"]);
    }
}

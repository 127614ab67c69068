//! Logging: `tracing` events to stderr, as JSON lines (one object per event, with the RPC span's
//! fields) or human-readable text, filtered by `RUST_LOG` (default `info`).
//!
//! JSON is the default when stderr is not a terminal, i.e. in containers, where a log pipeline parses
//! it; text when a person is watching. Nothing secret is ever a field: credentials types redact
//! themselves in `Debug`, and the SDK does not log keys or session tokens even at `trace` (a test
//! proves it).

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// JSON when stderr is not a terminal, text otherwise.
    #[default]
    Auto,
    Json,
    Text,
}

/// Installs the process-wide subscriber; a second call (tests) is a no-op.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let terminal = std::io::stderr().is_terminal();
    let json = match format {
        LogFormat::Auto => !terminal,
        LogFormat::Json => true,
        LogFormat::Text => false,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.with_ansi(terminal).try_init()
    };
}

//! Logs and traces.
//!
//! Logs: `tracing` events to stderr, as JSON lines (one object per event, with the RPC span's fields)
//! or human-readable text, filtered by `RUST_LOG` (default `info`), or by `--log-filter`, which a
//! reload changes live ([`set_log_filter`]). JSON is the default when stderr
//! is not a terminal, i.e. in containers, where a log pipeline parses it; text when a person is
//! watching. Nothing secret is ever a field: credentials types redact themselves in `Debug`, and the
//! SDK does not log keys or session tokens even at `trace` (a test proves it).
//!
//! Traces: the same spans, exported over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, and not at all otherwise. The exporter reads the
//! standard `OTEL_*` variables itself (headers, timeout, batch delay, sampler); `OTEL_SERVICE_NAME`
//! names the service, `connect-facade` by default. A W3C `traceparent` in a call's metadata is
//! continued by the RPC's span ([`continue_trace`]).

use std::{
    io::IsTerminal,
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
    },
};

use clap::ValueEnum;
use opentelemetry::{
    propagation::{Extractor, TextMapPropagator},
    trace::{TraceContextExt, TracerProvider},
};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tonic::metadata::{KeyRef, MetadataMap};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer, Registry,
    filter::{FilterExt, filter_fn},
    fmt::MakeWriter,
    layer::SubscriberExt,
    reload,
    util::SubscriberInitExt,
};

/// The service name spans carry unless `OTEL_SERVICE_NAME` says otherwise.
pub const SERVICE_NAME: &str = "connect-facade";

/// The span each AWS attempt runs in. It exists for traces only: the log formatter leaves it out
/// (an attempt's log line shows the call's span), so without an exporter no layer wants it and
/// creating it costs nothing.
pub const ATTEMPT_SPAN: &str = "upstream_attempt";

/// Whether spans are exported; set once by [`init`].
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The log lines' filter, once [`init`] installed it.
static LOG_FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Why a log filter was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid log filter `{directives}`: {reason}")]
pub struct LogFilterError {
    directives: String,
    reason: String,
}

/// Checks `RUST_LOG`-style directives (`info`, `connect_facade=debug,info`…) without applying them.
pub fn parse_log_filter(directives: &str) -> Result<EnvFilter, LogFilterError> {
    EnvFilter::try_new(directives).map_err(|error| LogFilterError {
        directives: directives.to_owned(),
        reason: error.to_string(),
    })
}

/// The log lines' filter in force, as directives (`None` before [`init`]).
pub fn log_filter() -> Option<String> {
    LOG_FILTER
        .get()
        .and_then(|handle| handle.with_current(ToString::to_string).ok())
}

/// Filters the log lines by `directives` from now on, or by `RUST_LOG` (default `info`) when
/// `None`; the span exporter's filter is left as it started. Nothing to change when [`init`]
/// installed nothing (in tests).
pub fn set_log_filter(directives: Option<&str>) -> Result<(), LogFilterError> {
    let filter = match directives {
        Some(directives) => parse_log_filter(directives)?,
        None => env_filter(),
    };
    if let Some(handle) = LOG_FILTER.get() {
        handle.reload(filter).map_err(|error| LogFilterError {
            directives: directives.unwrap_or_default().to_owned(),
            reason: error.to_string(),
        })?;
    }
    Ok(())
}

/// Whether an exporter is running, so attributes only traces need can be skipped otherwise.
pub(crate) fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// JSON when stderr is not a terminal, text otherwise.
    #[default]
    Auto,
    Json,
    Text,
}

/// What [`init`] installed that needs an orderly end: the span exporter, whose last batch is sent
/// by [`Telemetry::shutdown`].
#[must_use = "call shutdown() before exiting, or the last spans are lost"]
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes and stops the span exporter. It blocks (on the exporter's own thread), so async
    /// callers run it with `spawn_blocking`.
    pub fn shutdown(self) {
        if let Some(provider) = self.tracer_provider
            && let Err(err) = provider.shutdown()
        {
            eprintln!("connect-facade: exporting the last spans failed: {err}");
        }
    }
}

/// Installs the process-wide subscriber; a second call (tests) installs nothing. Must run inside
/// the Tokio runtime: the OTLP exporter's gRPC channel lives there.
pub fn init(format: LogFormat) -> Telemetry {
    let terminal = std::io::stderr().is_terminal();
    let json = match format {
        LogFormat::Auto => !terminal,
        LogFormat::Json => true,
        LogFormat::Text => false,
    };
    let (tracer_provider, exporter_error) = match otlp_tracer_provider() {
        Ok(provider) => (provider, None),
        Err(err) => (None, Some(err)),
    };
    let (layers, log_filter) = layers(json, terminal, std::io::stderr, tracer_provider.as_ref());
    let installed = tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .is_ok();
    if installed {
        let _ = LOG_FILTER.set(log_filter);
    }
    if let Some(err) = exporter_error {
        tracing::error!(error = %err, "OTLP trace export is configured but cannot start; spans are not exported");
    }
    if !installed {
        return Telemetry {
            tracer_provider: None,
        };
    }
    if tracer_provider.is_some() {
        EXPORTING.store(true, Ordering::Relaxed);
        tracing::info!("exporting spans over OTLP/gRPC");
    }
    Telemetry { tracer_provider }
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// The log formatter, and the span exporter when there is one, each with its own filter (rather
/// than one global filter, or an absent layer that, as an `Option`, would enable every span): a
/// span every present layer refuses, such as an attempt span without an exporter, is then never
/// created at all. The log formatter's filter can be replaced while running: its handle.
fn layers<W>(
    json: bool,
    ansi: bool,
    writer: W,
    tracer_provider: Option<&SdkTracerProvider>,
) -> (Vec<BoxedLayer>, reload::Handle<EnvFilter, Registry>)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let (log_filter, handle) = reload::Layer::new(env_filter());
    let mut layers = vec![log_layer(json, ansi, writer, log_filter)];
    if let Some(provider) = tracer_provider {
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(env!("CARGO_PKG_NAME")))
                .with_filter(env_filter())
                .boxed(),
        );
    }
    (layers, handle)
}

/// `RUST_LOG`, `info` by default.
fn env_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// The log formatter: JSON lines showing the innermost span's fields, or text (coloured for a
/// terminal), without the trace-only attempt spans.
fn log_layer<W>(
    json: bool,
    ansi: bool,
    writer: W,
    filter: reload::Layer<EnvFilter, Registry>,
) -> BoxedLayer
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    // json-subscriber writes the same lines as tracing-subscriber's JSON formatter, but keeps each
    // span's fields serialised once instead of re-parsing them for every event and record.
    let fmt = if json {
        json_subscriber::fmt::layer()
            .with_writer(writer)
            .with_current_span(true)
            .with_span_list(false)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(ansi)
            .boxed()
    };
    fmt.with_filter(filter.and(filter_fn(|metadata| {
        !(metadata.is_span() && metadata.name() == ATTEMPT_SPAN)
    })))
    .boxed()
}

/// The OTLP exporter when the standard environment asks for one.
fn otlp_tracer_provider()
-> Result<Option<SdkTracerProvider>, opentelemetry_otlp::ExporterBuildError> {
    let configured = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()));
    if !configured {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(SERVICE_NAME);
    }
    let resource = resource
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    ))
}

/// Makes `span` a child of the caller's trace when the call carries a valid W3C `traceparent`
/// (and `tracestate`), and records its trace id so log lines can be joined to the trace.
pub(crate) fn continue_trace(span: &Span, metadata: &MetadataMap) {
    if metadata.get("traceparent").is_none() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&MetadataExtractor(metadata));
    let remote = parent.span().span_context().clone();
    if !remote.is_valid() {
        return;
    }
    span.record("trace_id", tracing::field::display(remote.trace_id()));
    // Without an exporter there is no OpenTelemetry layer to take the parent: nothing to do.
    let _ = span.set_parent(parent);
}

/// gRPC metadata as the propagator reads it: ASCII entries only (trace context is ASCII).
struct MetadataExtractor<'a>(&'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|key| match key {
                KeyRef::Ascii(key) => Some(key.as_str()),
                KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(entries: &[(&'static str, &str)]) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        for (key, value) in entries {
            metadata.insert(*key, value.parse().unwrap());
        }
        metadata
    }

    #[test]
    fn attempt_spans_exist_only_for_an_exporter() {
        let provider = SdkTracerProvider::builder().build();
        for json in [true, false] {
            for exporting in [false, true] {
                let (layers, _) =
                    layers(json, false, std::io::sink, exporting.then_some(&provider));
                let subscriber = tracing_subscriber::registry().with(layers);
                tracing::subscriber::with_default(subscriber, || {
                    let attempt = tracing::info_span!(ATTEMPT_SPAN);
                    assert_eq!(attempt.is_disabled(), !exporting, "json {json}");
                    assert!(!tracing::info_span!("rpc").is_disabled());
                });
            }
        }
    }

    #[test]
    fn reads_a_w3c_traceparent_from_metadata() {
        let metadata = metadata(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )]);
        let parent = TraceContextPropagator::new().extract(&MetadataExtractor(&metadata));
        let context = parent.span().span_context().clone();
        assert!(context.is_valid() && context.is_remote() && context.is_sampled());
        assert_eq!(
            context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(context.span_id().to_string(), "00f067aa0ba902b7");
    }

    #[test]
    fn ignores_a_malformed_traceparent() {
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            let metadata = metadata(&[("traceparent", bad)]);
            let parent = TraceContextPropagator::new().extract(&MetadataExtractor(&metadata));
            assert!(!parent.span().span_context().is_valid(), "{bad:?}");
        }
    }
}

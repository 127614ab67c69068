//! The connections' metrics, by listener (`grpc`, `metrics`): open now, closed by the facade before
//! they were served and why, failed accepts, and the request bytes held for unanswered calls.
//! Registered by the app; recorded by the accept loop, the HTTP/2 server's connection bounds and
//! [`crate::serving::request_buffers`].

use std::sync::atomic::AtomicI64;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
};

use crate::metrics::{MetricsRegistry, gauge_value};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

/// Why the facade closed a connection: `connect_facade_connections_closed_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// `--max-connections` were open: reset at once.
    Cap,
    HandshakeFailed,
    /// No handshake and first bytes within `--handshake-timeout`.
    HandshakeTimeout,
    /// Its unfinished requests held more than `--max-connection-buffer`: reset.
    Buffer,
    /// It held the most of `--max-open-requests` when another peer needed one: reset.
    OpenRequests,
    /// GOAWAY at `--max-connection-age`.
    MaxAge,
    /// GOAWAY after `--idle-timeout` with no call.
    Idle,
    /// GOAWAY to the connection idle the longest, to admit a new one past `--max-connections`.
    Evicted,
    /// GOAWAY as the server drains (not counted: every connection gets it).
    Shutdown,
}

impl CloseReason {
    pub fn label(self) -> &'static str {
        match self {
            Self::Cap => "cap",
            Self::HandshakeFailed => "handshake_failed",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::Buffer => "buffer",
            Self::OpenRequests => "open_requests",
            Self::MaxAge => "max_age",
            Self::Idle => "idle",
            Self::Evicted => "evicted_idle",
            Self::Shutdown => "shutdown",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClosedLabels {
    listener: &'static str,
    reason: &'static str,
}

/// The connections' families; a clone records into the same series.
#[derive(Clone, Debug)]
pub struct ConnectionMetrics {
    open: Family<ListenerLabels, Gauge<i64, AtomicI64>>,
    closed: Family<ClosedLabels, Counter>,
    accept_errors: Family<ClosedLabels, Counter>,
    request_buffer_bytes: Gauge<i64, AtomicI64>,
}

impl ConnectionMetrics {
    pub fn register(registry: &mut MetricsRegistry) -> Self {
        let metrics = Self {
            open: Family::default(),
            closed: Family::default(),
            accept_errors: Family::default(),
            request_buffer_bytes: Gauge::default(),
        };
        registry.register(
            "request_buffer_bytes",
            "Request body bytes held for calls not yet answered, over every connection",
            metrics.request_buffer_bytes.clone(),
        );
        registry.register(
            "open_connections",
            "Connections open now, handshakes included, by listener (grpc, metrics)",
            metrics.open.clone(),
        );
        registry.register(
            "connections_closed",
            "Connections closed by the facade before they were served, by listener and reason (cap: over --max-connections; handshake_timeout; handshake_failed)",
            metrics.closed.clone(),
        );
        registry.register(
            "accept_errors",
            "Failed accepts, by listener and reason (descriptors: out of file descriptors or socket memory; connection: the peer's own failure)",
            metrics.accept_errors.clone(),
        );
        metrics
    }

    pub fn set_open(&self, listener: &'static str, open: usize) {
        self.open
            .get_or_create(&ListenerLabels { listener })
            .set(gauge_value(open));
    }

    pub fn closed(&self, listener: &'static str, reason: CloseReason) {
        self.closed
            .get_or_create(&ClosedLabels {
                listener,
                reason: reason.label(),
            })
            .inc();
    }

    pub fn accept_error(&self, listener: &'static str, reason: &'static str) {
        self.accept_errors
            .get_or_create(&ClosedLabels { listener, reason })
            .inc();
    }

    pub fn set_request_buffer_bytes(&self, bytes: usize) {
        self.request_buffer_bytes.set(gauge_value(bytes));
    }
}

//! The request data a peer makes the facade hold, bounded: every byte of a request body is counted
//! from the moment it is read until its call is answered, per connection (`--max-connection-buffer`)
//! and for the process (`--max-buffered-requests`); a connection past either is reset
//! (`reason="buffer"`). HTTP/2 flow control is a credit, not a bound, hence this count.
//!
//! The requests open at once are bounded too (`--max-open-requests`): when full, the connection
//! holding the most open requests is reset for a newcomer (`reason="open_requests"`), as Envoy's
//! overload manager does; otherwise the request is marked [`OpenRequestsFull`] for the edge to
//! refuse in its protocol's words. Why and what was measured: the book's "Designs" chapter.

use std::{
    pin::Pin,
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

use parking_lot::Mutex;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tower::BoxError;

use crate::serving::listener::{CloseReason, ConnectionMetrics};

/// What every connection's calls hold, together.
#[derive(Debug)]
pub struct ProcessBuffers {
    held: AtomicUsize,
    limit: usize,
    metrics: ConnectionMetrics,
    open: AtomicUsize,
    max_open: usize,
    /// Every connection, to find the one holding the most open requests when the bound is full.
    connections: Mutex<Vec<Weak<ConnectionBuffers>>>,
}

/// A request let in past a full `--max-open-requests` bound for no other connection's cost: the edge
/// refuses it (RESOURCE_EXHAUSTED) before reading its body.
#[derive(Clone, Copy, Debug)]
pub struct OpenRequestsFull;

/// Why a connection was reset.
const RESET_BUFFER: u8 = 1;
const RESET_OPEN_REQUESTS: u8 = 2;

impl ProcessBuffers {
    pub fn new(limit: usize, max_open: usize, metrics: ConnectionMetrics) -> Arc<Self> {
        metrics.set_request_buffer_bytes(0);
        Arc::new(Self {
            held: AtomicUsize::new(0),
            limit,
            metrics,
            open: AtomicUsize::new(0),
            max_open,
            connections: Mutex::new(Vec::new()),
        })
    }

    /// A connection's buffers, bounded by `limit`.
    pub fn connection(self: &Arc<Self>, limit: usize) -> Arc<ConnectionBuffers> {
        let connection = Arc::new(ConnectionBuffers {
            process: self.clone(),
            held: AtomicUsize::new(0),
            limit,
            exceeded: AtomicBool::new(false),
            reason: AtomicU8::new(0),
            open: AtomicUsize::new(0),
            notify: Notify::new(),
        });
        let mut connections = self.connections.lock();
        // Closed connections leave their entries until the list has doubled since the last sweep.
        if connections.len() >= 64 && connections.len().is_power_of_two() {
            connections.retain(|entry| entry.strong_count() > 0);
        }
        connections.push(Arc::downgrade(&connection));
        connection
    }

    /// The open connection holding the most open requests, if it holds more than `than`.
    fn busiest(&self, than: usize) -> Option<Arc<ConnectionBuffers>> {
        self.connections
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|connection| !connection.exceeded.load(Ordering::Acquire))
            .max_by_key(|connection| connection.open.load(Ordering::Acquire))
            .filter(|connection| connection.open.load(Ordering::Acquire) > than)
    }
}

/// What one connection's calls hold.
#[derive(Debug)]
pub struct ConnectionBuffers {
    process: Arc<ProcessBuffers>,
    held: AtomicUsize,
    limit: usize,
    exceeded: AtomicBool,
    /// Why it was reset ([`RESET_BUFFER`], [`RESET_OPEN_REQUESTS`]).
    reason: AtomicU8,
    open: AtomicUsize,
    notify: Notify,
}

/// A request open on a connection, from its headers until it is answered or dropped.
#[derive(Debug)]
pub struct OpenRequest(Arc<ConnectionBuffers>);

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.process.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnectionBuffers {
    /// Lets a new request in, within `--max-open-requests`: at once while there is room; when full,
    /// by resetting the connection that holds the most (more than one beyond this one's); else
    /// `None`, and the edge refuses it.
    pub fn open_request(self: &Arc<Self>) -> Option<OpenRequest> {
        let process = &self.process;
        let admitted = process
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < process.max_open).then_some(open + 1)
            })
            .is_ok();
        if !admitted {
            let ours = self.open.load(Ordering::Acquire);
            let victim = process.busiest(ours + 1)?;
            victim.reset(RESET_OPEN_REQUESTS);
            // Past the bound for as long as the victim's tasks take to drop its streams.
            process.open.fetch_add(1, Ordering::AcqRel);
        }
        self.open.fetch_add(1, Ordering::AcqRel);
        Some(OpenRequest(self.clone()))
    }

    /// Why this connection was reset, if it was.
    fn was_reset(&self) -> Option<CloseReason> {
        self.exceeded
            .load(Ordering::Acquire)
            .then(|| self.reset_reason())
    }

    /// Why this connection was reset, as its metric's reason.
    pub fn reset_reason(&self) -> CloseReason {
        match self.reason.load(Ordering::Acquire) {
            RESET_OPEN_REQUESTS => CloseReason::OpenRequests,
            _ => CloseReason::Buffer,
        }
    }

    fn reset(&self, reason: u8) {
        let _ = self
            .reason
            .compare_exchange(0, reason, Ordering::AcqRel, Ordering::Acquire);
        self.exceeded.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }
    /// One call's share of its connection's buffers: what its body read is released when it is dropped.
    pub fn call(self: &Arc<Self>) -> Arc<CallBuffer> {
        Arc::new(CallBuffer {
            connection: self.clone(),
            held: AtomicUsize::new(0),
        })
    }

    /// Resolves once this connection, or the process, held more than its bound.
    pub async fn exceeded(&self) {
        loop {
            let notified = self.notify.notified();
            if self.exceeded.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// Counts this connection among those the facade closed, for `reason` (`buffer`, `idle`,
    /// `max_age`).
    pub fn count_closed(&self, reason: CloseReason) {
        self.process.metrics.closed("grpc", reason);
    }

    fn add(&self, bytes: usize) {
        let connection = self.held.fetch_add(bytes, Ordering::AcqRel) + bytes;
        let process = self.process.held.fetch_add(bytes, Ordering::AcqRel) + bytes;
        self.process.metrics.set_request_buffer_bytes(process);
        if connection > self.limit || process > self.process.limit {
            self.reset(RESET_BUFFER);
        }
    }

    fn release(&self, bytes: usize) {
        self.held.fetch_sub(bytes, Ordering::AcqRel);
        let process = self.process.held.fetch_sub(bytes, Ordering::AcqRel) - bytes;
        self.process.metrics.set_request_buffer_bytes(process);
    }
}

/// What one call's body has delivered so far.
#[derive(Debug)]
pub struct CallBuffer {
    connection: Arc<ConnectionBuffers>,
    held: AtomicUsize,
}

impl Drop for CallBuffer {
    fn drop(&mut self) {
        self.connection.release(self.held.load(Ordering::Acquire));
    }
}

/// A body cut because the facade reset its connection: the call's log line says so (its reason
/// `CONNECTION_RESET`), rather than blaming the bytes that never came.
#[derive(Debug, thiserror::Error)]
#[error("the facade reset the connection: {}", match .0 {
    CloseReason::OpenRequests => "it held the most of --max-open-requests when another peer needed one",
    _ => "its unfinished requests held more data than --max-connection-buffer (or the process more than --max-buffered-requests) allows",
})]
pub struct ConnectionReset(pub CloseReason);

/// A request body whose bytes are counted against its call's share of the buffers.
pub struct Counted<B> {
    inner: B,
    call: Arc<CallBuffer>,
}

impl<B> Counted<B> {
    pub fn new(inner: B, call: Arc<CallBuffer>) -> Self {
        Self { inner, call }
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.call.held.fetch_add(data.len(), Ordering::AcqRel);
            self.call.connection.add(data.len());
        }
        polled.map(|frame| {
            frame.map(|read| {
                read.map_err(|error| match self.call.connection.was_reset() {
                    Some(reason) => Box::new(ConnectionReset(reason)) as BoxError,
                    None => error.into(),
                })
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_count_until_the_call_ends_and_a_bound_passed_is_reported() {
        let process = ProcessBuffers::new(
            1_000,
            10,
            ConnectionMetrics::register(&mut crate::metrics::MetricsRegistry::new()),
        );
        let connection = process.connection(100);
        let first = connection.call();
        first.held.fetch_add(60, Ordering::AcqRel);
        connection.add(60);
        let second = connection.call();
        second.held.fetch_add(30, Ordering::AcqRel);
        connection.add(30);
        assert!(!connection.exceeded.load(Ordering::Acquire));
        drop(first);
        assert_eq!(connection.held.load(Ordering::Acquire), 30);
        assert_eq!(process.held.load(Ordering::Acquire), 30);
        second.held.fetch_add(80, Ordering::AcqRel);
        connection.add(80);
        tokio::time::timeout(std::time::Duration::from_secs(1), connection.exceeded())
            .await
            .expect("110 bytes are past the connection's 100");
        drop(second);
        assert_eq!(process.held.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn a_full_bound_resets_the_busiest_connection_for_a_newcomer_and_refuses_a_peer_like_it()
    {
        let process = ProcessBuffers::new(
            1_000,
            4,
            ConnectionMetrics::register(&mut crate::metrics::MetricsRegistry::new()),
        );
        let attacker = process.connection(100);
        let held: Vec<_> = (0..3).map(|_| attacker.open_request().unwrap()).collect();
        let spread = process.connection(100);
        let one = spread.open_request().unwrap();
        // Full. A connection with none gets in by resetting the attacker's (3 > 0 + 1).
        let newcomer = process.connection(100);
        let admitted = newcomer.open_request();
        assert!(admitted.is_some());
        assert_eq!(attacker.reset_reason(), CloseReason::OpenRequests);
        attacker.exceeded().await;
        // A second request of a connection holding one, with only peers of one left: refused.
        assert!(spread.open_request().is_none());
        drop((held, one, admitted));
        assert_eq!(process.open.load(Ordering::Acquire), 0);
    }
}

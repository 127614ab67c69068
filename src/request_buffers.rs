//! The request data a peer makes the facade hold, bounded. HTTP/2 flow control is a credit, not a
//! bound: each byte a call's handler reads from its stream is granted again, so a peer that opens
//! 256 streams and sends each 65,000 bytes of a 65,536-byte message (never the rest) had the facade
//! hold 31-37 MiB per connection in tonic's decode buffers, with no call in flight to show it.
//!
//! So every byte of a request body is counted from the moment the facade reads it until its call
//! is answered (or dropped): per connection, bounded by `--max-connection-buffer`, and for the
//! process, bounded by `--max-buffered-requests`. A connection whose data passes either bound is
//! closed at once (its streams are reset), and counted in
//! `connect_facade_connections_closed_total{reason="buffer"}`; what the process holds shows in
//! `connect_facade_request_buffer_bytes`. A valid request is under 2 KiB, so the bounds only ever
//! meet a peer that does not finish its requests.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::Notify;

use crate::metrics::Metrics;

/// What every connection's calls hold, together.
#[derive(Debug)]
pub struct ProcessBuffers {
    held: AtomicUsize,
    limit: usize,
    metrics: Arc<Metrics>,
}

impl ProcessBuffers {
    pub fn new(limit: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        metrics.set_request_buffer_bytes(0);
        Arc::new(Self {
            held: AtomicUsize::new(0),
            limit,
            metrics,
        })
    }

    /// A connection's account, bounded by `limit`.
    pub fn connection(self: &Arc<Self>, limit: usize) -> Arc<ConnectionBuffers> {
        Arc::new(ConnectionBuffers {
            process: self.clone(),
            held: AtomicUsize::new(0),
            limit,
            exceeded: AtomicBool::new(false),
            notify: Notify::new(),
        })
    }
}

/// What one connection's calls hold.
#[derive(Debug)]
pub struct ConnectionBuffers {
    process: Arc<ProcessBuffers>,
    held: AtomicUsize,
    limit: usize,
    exceeded: AtomicBool,
    notify: Notify,
}

impl ConnectionBuffers {
    /// An account for one call's body: what it read is released when the account is dropped.
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
    pub fn count_closed(&self, reason: &'static str) {
        self.process.metrics.connection_closed("grpc", reason);
    }

    fn add(&self, bytes: usize) {
        let connection = self.held.fetch_add(bytes, Ordering::AcqRel) + bytes;
        let process = self.process.held.fetch_add(bytes, Ordering::AcqRel) + bytes;
        self.process.metrics.set_request_buffer_bytes(process);
        if connection > self.limit || process > self.process.limit {
            self.exceeded.store(true, Ordering::Release);
            self.notify.notify_waiters();
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

/// A request body whose bytes are counted against its call's account.
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
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.call.held.fetch_add(data.len(), Ordering::AcqRel);
            self.call.connection.add(data.len());
        }
        polled
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
        let process = ProcessBuffers::new(1_000, Arc::new(Metrics::new()));
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
}

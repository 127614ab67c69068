//! Serving each admitted connection: HTTP/1.1 and HTTP/2 with hyper-util's auto builder, under
//! bounds that hold whatever the peer sends: the HTTP/1.1 head bounded like HTTP/2's
//! (`--max-header-list-size`), GOAWAY after `--idle-timeout` with no call and at
//! `--max-connection-age`, a reset past the request buffers ([`crate::serving::request_buffers`]),
//! and GOAWAY to every connection at shutdown (the server returns when all are closed).
//!
//! tonic's own server has no idle timeout or HTTP/1.1 bound, and closes an aged connection at age +
//! grace without its GOAWAY, hence this loop; the peer's address and certificates reach each request
//! as tonic's `Connected` reports them. The reasoning: the book's "Designs" chapter.

use std::{fmt::Display, pin::pin, sync::Arc, time::Duration};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::watch,
    time::Instant,
};
use tokio_stream::{Stream, StreamExt};
use tonic::{body::Body, transport::server::Connected};
use tower::{BoxError, Service, ServiceExt};

use crate::serving::activity::{Activity, Connections, Listed};
use crate::serving::listener::CloseReason;
use crate::serving::request_buffers::{
    ConnectionBuffers, Counted, OpenRequestsFull, ProcessBuffers,
};

/// hyper's smallest HTTP/1.1 read buffer (it refuses a smaller one).
const HTTP1_MIN_BUFFER: usize = 8 * 1024;

/// How each connection is served.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConnectionSettings {
    pub max_header_list_size: u32,
    pub max_concurrent_streams: u32,
    pub connection_window: u32,
    pub stream_window: u32,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    pub max_connection_age: Duration,
    /// How long calls in flight may run after a GOAWAY (age or shutdown) before the connection is
    /// closed.
    pub grace: Duration,
    pub idle_timeout: Duration,
    /// Request bytes one connection's unanswered calls may hold.
    pub max_connection_buffer: usize,
}

impl ConnectionSettings {
    fn builder(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .max_buf_size((self.max_header_list_size as usize).max(HTTP1_MIN_BUFFER));
        builder
            .http2()
            .timer(TokioTimer::new())
            .initial_connection_window_size(self.connection_window)
            .initial_stream_window_size(self.stream_window)
            .max_concurrent_streams(self.max_concurrent_streams)
            .max_header_list_size(self.max_header_list_size)
            .keep_alive_interval(self.keepalive_interval)
            .keep_alive_timeout(self.keepalive_timeout);
        builder
    }
}

/// Serves every connection `incoming` yields with `service` until `stop` resolves; then each
/// connection gets GOAWAY, and this returns once they are all closed. Each is listed in
/// `connections`, for the accept loop to close the one idle the longest when the cap is reached.
pub async fn serve<I, IO, E, S, B>(
    incoming: I,
    service: S,
    mut settings: watch::Receiver<ConnectionSettings>,
    (buffers, connections): (Arc<ProcessBuffers>, Connections),
    stop: impl Future<Output = ()>,
) where
    I: Stream<Item = Result<IO, E>>,
    E: Display,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IO::ConnectInfo: Clone + Send + Sync + 'static,
    S: Service<http::Request<Body>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut current = *settings.borrow_and_update();
    let mut builder = current.builder();
    let (goaway, goaway_sent) = watch::channel(false);
    {
        let mut incoming = pin!(incoming);
        let mut stop = pin!(stop);
        loop {
            let io = tokio::select! {
                () = &mut stop => break,
                io = incoming.next() => io,
            };
            // A reload may have changed the settings: new connections get them, open ones keep
            // theirs.
            if settings.has_changed().unwrap_or(false) {
                current = *settings.borrow_and_update();
                builder = current.builder();
            }
            match io {
                Some(Ok(io)) => spawn_connection(
                    io,
                    service.clone(),
                    builder.clone(),
                    current,
                    (
                        buffers.connection(current.max_connection_buffer),
                        connections.register(),
                    ),
                    goaway_sent.clone(),
                ),
                Some(Err(error)) => tracing::debug!(%error, "connection not admitted"),
                None => break,
            }
        }
    }
    let _ = goaway.send(true);
    drop(goaway_sent);
    // Every connection task holds a receiver until it ends.
    goaway.closed().await;
}

fn spawn_connection<IO, S, B>(
    io: IO,
    service: S,
    builder: auto::Builder<TokioExecutor>,
    settings: ConnectionSettings,
    (buffers, (activity, listed)): (Arc<ConnectionBuffers>, (Arc<Activity>, Listed)),
    goaway_sent: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IO::ConnectInfo: Clone + Send + Sync + 'static,
    S: Service<http::Request<Body>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let info = io.connect_info();
    let peer = {
        // The address as a request sees it (plain TCP or TLS), for the connection's own log lines.
        let mut extensions = http::Extensions::new();
        extensions.insert(info.clone());
        crate::auth::peer_address(&extensions)
    };
    let calls = {
        let (activity, buffers) = (activity.clone(), buffers.clone());
        tower::service_fn(move |request: http::Request<Incoming>| {
            let held = buffers.call();
            let mut request = request.map(|body| Body::new(Counted::new(body, held.clone())));
            request.extensions_mut().insert(info.clone());
            let admitted = buffers.open_request();
            if admitted.is_none() {
                request.extensions_mut().insert(OpenRequestsFull);
            }
            let open = activity.open();
            let call = service.clone().oneshot(request);
            async move {
                // A concrete body and error: hyper's connection future is then plainly Send.
                let answered: Result<http::Response<Body>, BoxError> = call
                    .await
                    .map(|response| response.map(Body::new))
                    .map_err(|error| error.into());
                drop((open, held, admitted));
                answered
            }
        })
    };
    drive(
        TokioIo::new(io),
        TowerToHyperService::new(calls),
        builder,
        settings,
        (activity, listed, buffers),
        (peer, goaway_sent),
    );
}

/// Serves one connection in a task of its own until it ends, closing it gracefully at its age,
/// when idle or at shutdown. Generic over the service, as tonic's own is, to get around
/// rust-lang/rust#102211 (a spawned hyper connection over a closure's future is not provably Send).
fn drive<IO, H, E>(
    io: IO,
    service: H,
    builder: auto::Builder<E>,
    settings: ConnectionSettings,
    (activity, listed, buffers): (Arc<Activity>, Listed, Arc<ConnectionBuffers>),
    (peer, mut goaway_sent): (Option<std::net::SocketAddr>, watch::Receiver<bool>),
) where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    H: hyper::service::Service<http::Request<Incoming>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    H::Future: Send + 'static,
    H::Error: Into<BoxError> + Send,
    E: hyper_util::server::conn::auto::HttpServerConnExec<H::Future, Body> + Send + Sync + 'static,
{
    tokio::spawn(async move {
        // Listed while the task runs: the accept loop may pick it to close when the cap is reached.
        let _listed = listed;
        let mut connection = pin!(builder.serve_connection(io, service));
        let aged = tokio::time::sleep(settings.max_connection_age);
        let mut aged = pin!(aged);
        let idle = activity.idle_for(settings.idle_timeout);
        let mut idle = pin!(idle);
        // Once the connection has its GOAWAY, no other reason to close it counts; at its age or
        // when idle, the calls in flight have the grace period, then it is closed. At shutdown the
        // app itself answers the calls left after the grace period (UNAVAILABLE), so the
        // connection is not cut under them.
        let mut closing = false;
        let mut force_at: Option<Instant> = None;
        loop {
            let reason = tokio::select! {
                served = connection.as_mut() => {
                    if let Err(error) = served {
                        tracing::debug!(error = %error, "connection ended");
                    }
                    return;
                }
                () = buffers.exceeded() => {
                    // Reset, not closed gracefully: its calls would hold their data a while longer.
                    let reason = buffers.reset_reason();
                    buffers.count_closed(reason);
                    let peer = peer.map(tracing::field::display);
                    if reason == CloseReason::Buffer {
                        tracing::warn!(peer, "connection reset: its unfinished requests held more data than --max-connection-buffer (or every connection's more than --max-buffered-requests)");
                    } else {
                        tracing::warn!(peer, "connection reset: it held the most of --max-open-requests when another peer needed one");
                    }
                    return;
                }
                () = &mut aged, if !closing => CloseReason::MaxAge,
                () = &mut idle, if !closing => CloseReason::Idle,
                () = activity.evicted(), if !closing => CloseReason::Evicted,
                _ = goaway_sent.changed(), if !closing => CloseReason::Shutdown,
                () = tokio::time::sleep_until(force_at.unwrap_or_else(Instant::now)),
                    if force_at.is_some() => {
                    tracing::debug!("calls still in flight past the grace period: connection closed");
                    return;
                }
            };
            tracing::debug!(reason = reason.label(), "closing the connection gracefully");
            if reason != CloseReason::Shutdown {
                buffers.count_closed(reason);
            }
            connection.as_mut().graceful_shutdown();
            closing = true;
            if reason != CloseReason::Shutdown {
                force_at = Some(Instant::now() + settings.grace);
            }
        }
    });
}

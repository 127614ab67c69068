//! The facade's plain HTTP/1.1 side listeners (the metrics endpoint, the admin API): the gRPC
//! listener's connection admission ([`super::listener`]: a cap, and a deadline for the request's
//! headers, hyper's own), each connection a task of the lifecycle, ended when the process stops.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::{body::Incoming, service::Service};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;

use super::listener::{self, AdmissionLimits, ConnectionMetrics};
use crate::lifecycle::Tasks;

/// Serves `service` on `listener` (named `name` in the connection metrics) until the process
/// stops: the task, to spawn when serving starts.
pub fn serve<S>(
    listener: TcpListener,
    name: &'static str,
    limits: AdmissionLimits,
    connection_metrics: ConnectionMetrics,
    tasks: Tasks,
    service: S,
) -> impl Future<Output = ()> + Send + 'static
where
    S: Service<Request<Incoming>, Response = Response<Full<Bytes>>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut connections = listener::admit(
        listener,
        name,
        (limits.fixed(), None),
        connection_metrics,
        |stream| std::future::ready(Ok(stream)),
    );
    let stop = tasks.stopped();
    async move {
        while let Some(Some(Ok(connection))) = stop.run_until_cancelled(connections.next()).await {
            let service = service.clone();
            tasks.spawn_until_stopped(async move {
                // A client that sends no request within the handshake deadline is closed too.
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.handshake_timeout)
                    .serve_connection(TokioIo::new(connection), service)
                    .await;
            });
        }
    }
}

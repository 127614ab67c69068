//! The metrics endpoint: `GET /metrics` in the OpenMetrics text format over plain HTTP/1.1, on its own
//! listener (`--metrics-listen`), behind the same connection admission as the gRPC listener
//! ([`crate::serving::listener`]): a cap, and a deadline for the request's headers (hyper's own).

use std::{convert::Infallible, sync::Arc};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use tokio::net::TcpListener;

use crate::{
    lifecycle::Tasks,
    metrics::Exposition,
    serving::{
        listener::{AdmissionLimits, ConnectionMetrics},
        side_listener,
    },
};

/// Serves `GET /metrics` on `listener` until the process stops: the task, to spawn when serving
/// starts. Each scraper's connection is a task of its own, ended when the process stops.
pub fn serve(
    listener: TcpListener,
    metrics: Arc<Exposition>,
    connection_metrics: ConnectionMetrics,
    limits: AdmissionLimits,
    tasks: Tasks,
) -> impl Future<Output = ()> + Send + 'static {
    let service = service_fn(move |request| {
        let metrics = metrics.clone();
        async move { Ok::<_, Infallible>(answer(&metrics, &request)) }
    });
    side_listener::serve(
        listener,
        "metrics",
        limits,
        connection_metrics,
        tasks,
        service,
    )
}

fn answer(metrics: &Exposition, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) =
        if request.method() == Method::GET && request.uri().path() == "/metrics" {
            (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                metrics.render(),
            )
        } else {
            (
                StatusCode::NOT_FOUND,
                "text/plain",
                "try /metrics\n".to_owned(),
            )
        };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

//! The admin API (`--admin-listen`): a replica's own answers to an operator's daily questions, as
//! JSON, on a listener of its own, modelled on Envoy's admin interface.
//!
//! - `GET /status`: version, uptime, the configuration's hash, the routes (rate in force, burst,
//!   attempts waiting, breaker), the quota store, the callers and the last refusals
//!   ([`status::Status`]);
//! - `GET /config`: the effective configuration, as `config print` gives it (secrets redacted);
//! - `GET /logging`, `POST /logging` (the body: RUST_LOG-style directives): the log filter, read
//!   and changed live (a later reload of a file that sets `log-filter` sets it again);
//! - `GET /`: the status page (`page.html`, in the binary), which draws `/status` every second.
//!
//! Bound to a loopback address it is open (reach it with `kubectl port-forward`); bound to any other
//! address it requires `authorization: Bearer <token>` with the token of `--admin-token-file`, or
//! the facade refuses to start. It never shows a secret: the store URL's password is redacted,
//! callers show their names, never their tokens' hashes.

pub mod status;
pub mod terminal;

use std::{net::SocketAddr, path::Path, sync::Arc, time::Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{body::Incoming, service::service_fn};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::LiveCallers,
    call::recent::RecentRefusals,
    lifecycle::Tasks,
    reload::InForce,
    routes::router::Router,
    serving::{
        listener::{AdmissionLimits, ConnectionMetrics},
        side_listener,
    },
    store::SharedStore,
    telemetry,
};

/// Connections the admin listener holds at once: a few operators and their pages.
const MAX_CONNECTIONS: usize = 64;
/// The largest request body (a log filter).
const MAX_BODY_BYTES: usize = 4096;

/// Why the admin API cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "--admin-listen {0} is not a loopback address: the admin API shows the fleet's state and \
         changes the log filter, so it needs --admin-token-file there (or bind it to 127.0.0.1)"
    )]
    TokenRequired(SocketAddr),
    #[error("cannot read the admin token file {path}: {source}")]
    TokenFile {
        path: String,
        source: std::io::Error,
    },
    #[error("the admin token file {0} is empty")]
    EmptyToken(String),
}

/// The bearer token `--admin-token-file` holds, checked at startup against `listen`.
pub fn token(listen: SocketAddr, file: Option<&Path>) -> Result<Option<String>, AdminError> {
    let Some(path) = file else {
        return if listen.ip().is_loopback() {
            Ok(None)
        } else {
            Err(AdminError::TokenRequired(listen))
        };
    };
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| AdminError::TokenFile {
        path: shown.clone(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(AdminError::EmptyToken(shown));
    }
    Ok(Some(token.to_owned()))
}

/// What the admin API reads: the parts themselves, shared with the app.
pub struct AdminState {
    pub started: Instant,
    pub router: Arc<Router>,
    pub store: Option<SharedStore>,
    pub callers: Option<LiveCallers>,
    pub refusals: Arc<RecentRefusals>,
    pub in_force: Arc<ArcSwap<InForce>>,
    /// Cancelled when the replica starts draining.
    pub draining: CancellationToken,
    pub token: Option<String>,
}

/// Serves the admin API on `listener` until the process stops: the task, to spawn when serving
/// starts.
pub fn serve(
    listener: TcpListener,
    state: AdminState,
    connection_metrics: ConnectionMetrics,
    handshake_timeout: std::time::Duration,
    tasks: Tasks,
) -> impl Future<Output = ()> + Send + 'static {
    let limits = AdmissionLimits {
        max_connections: MAX_CONNECTIONS,
        handshake_timeout,
        await_first_bytes: false,
        evict_idle_after: None,
    };
    let state = Arc::new(state);
    let service = service_fn(move |request| {
        let state = state.clone();
        async move { Ok::<_, std::convert::Infallible>(answer(&state, request).await) }
    });
    side_listener::serve(
        listener,
        "admin",
        limits,
        connection_metrics,
        tasks,
        service,
    )
}

async fn answer(state: &AdminState, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if !authorized(state, &request) {
        return reply(
            StatusCode::UNAUTHORIZED,
            "application/json",
            r#"{"error":"this admin API needs authorization: Bearer <the --admin-token-file token>"}"#
                .to_owned(),
        );
    }
    let json =
        |value: serde_json::Value| reply(StatusCode::OK, "application/json", value.to_string());
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/") => page(),
        (&Method::GET, "/status") => match serde_json::to_value(status::Status::of(state).await) {
            Ok(value) => json(value),
            Err(error) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                error.to_string(),
            ),
        },
        (&Method::GET, "/config") => reply(
            StatusCode::OK,
            "application/yaml",
            state.in_force.load().effective.clone(),
        ),
        (&Method::GET, "/logging") => {
            json(serde_json::json!({ "filter": telemetry::log_filter() }))
        }
        (&Method::POST, "/logging") => {
            let body = Limited::new(request.into_body(), MAX_BODY_BYTES)
                .collect()
                .await;
            let Ok(body) = body.map(|b| b.to_bytes()) else {
                return reply(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "text/plain",
                    format!("a log filter is at most {MAX_BODY_BYTES} bytes\n"),
                );
            };
            let directives = String::from_utf8_lossy(&body).trim().to_owned();
            match telemetry::set_log_filter(Some(&directives)) {
                Ok(()) => {
                    tracing::warn!(filter = %directives, "log filter changed through the admin API");
                    json(serde_json::json!({ "filter": telemetry::log_filter() }))
                }
                Err(error) => reply(
                    StatusCode::BAD_REQUEST,
                    "application/json",
                    serde_json::json!({ "error": error.to_string() }).to_string(),
                ),
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try GET / (the status page), GET /status, GET /config, GET or POST /logging\n"
                .to_owned(),
        ),
    }
}

/// The status page, from the binary: it asks `/status` every second and draws it.
const PAGE: &str = include_str!("page.html");

fn page() -> Response<Full<Bytes>> {
    let mut response = reply(StatusCode::OK, "text/html; charset=utf-8", PAGE.to_owned());
    // Nothing but the page itself and this replica's /status: no script, style or image from
    // anywhere else, even if one were injected.
    if let Ok(policy) = http::HeaderValue::from_str(
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
         connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'",
    ) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    response
}

/// Whether the request carries the token, when one is required (compared in constant time).
fn authorized<B>(state: &AdminState, request: &Request<B>) -> bool {
    let Some(expected) = &state.token else {
        return true;
    };
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|presented| bool::from(presented.trim().as_bytes().ct_eq(expected.as_bytes())))
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_required_off_loopback() {
        let loopback: SocketAddr = "127.0.0.1:9901".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:9901".parse().unwrap();
        assert_eq!(token(loopback, None).unwrap(), None);
        assert!(matches!(
            token(any, None),
            Err(AdminError::TokenRequired(_))
        ));
        let file = std::env::temp_dir().join(format!("admin-token-{}", std::process::id()));
        std::fs::write(&file, "s3cret\n").unwrap();
        assert_eq!(token(any, Some(&file)).unwrap().as_deref(), Some("s3cret"));
        std::fs::write(&file, "\n").unwrap();
        assert!(matches!(
            token(any, Some(&file)),
            Err(AdminError::EmptyToken(_))
        ));
        let _ = std::fs::remove_file(&file);
    }
}

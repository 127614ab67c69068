//! CORS for browser tools calling over the Connect protocol or gRPC-Web (`--cors-allow-origin`):
//! tower-http's layer, with the headers those protocols send and those a caller reads
//! (connectrpc.com's CORS guidance). It sits outside the admission step, so a browser's preflight is
//! answered before anything else.

use std::time::Duration;

use http::{HeaderValue, Method};

/// CORS for browsers on `origins` (`*`: any), with the headers the Connect protocol and gRPC-Web
/// send and those a caller reads (connectrpc.com's CORS guidance); `None` without origins.
pub fn cors(origins: &[String]) -> Result<Option<tower_http::cors::CorsLayer>, String> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return Ok(None);
    }
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let parsed = origins
            .iter()
            .map(|origin| {
                origin
                    .trim()
                    .parse::<HeaderValue>()
                    .map_err(|_| format!("--cors-allow-origin {origin:?} is not a header value"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(parsed)
    };
    let names = |names: &[&'static str]| {
        names
            .iter()
            .map(|name| http::HeaderName::from_static(name))
            .collect::<Vec<_>>()
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::POST])
            .allow_headers(names(&[
                "content-type",
                "content-encoding",
                "connect-protocol-version",
                "connect-timeout-ms",
                "connect-accept-encoding",
                "connect-content-encoding",
                "x-grpc-web",
                "x-user-agent",
                "grpc-timeout",
                "authorization",
                "traceparent",
                "tracestate",
            ]))
            .expose_headers(names(&[
                "grpc-status",
                "grpc-message",
                "grpc-status-details-bin",
                "x-facade-attempts",
                "x-facade-replayed",
                "x-facade-coalesced",
                "x-amzn-requestid",
            ]))
            .max_age(Duration::from_secs(7200)),
    ))
}

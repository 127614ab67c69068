//! Which protocol a request speaks, read once from its content type by the admission step and kept
//! as a request extension that every later step reads.

use http::{HeaderMap, header};

pub(crate) const JSON: &str = "application/json";
pub(crate) const PROTO: &str = "application/proto";

/// How a request is encoded, from its content type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    GrpcWeb,
    ConnectJson,
    ConnectProto,
    /// Anything else (a form, text…), or no content type.
    Other,
}

impl Protocol {
    pub fn of(headers: &HeaderMap) -> Self {
        let Some(content_type) = headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
        else {
            return Protocol::Other;
        };
        // Compared in place, case-insensitively: every gRPC call passes here.
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        let starts = |prefix: &str| {
            essence
                .get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
        };
        if starts("application/grpc-web") {
            Protocol::GrpcWeb
        } else if starts("application/grpc") {
            Protocol::Grpc
        } else if essence.eq_ignore_ascii_case(JSON) {
            Protocol::ConnectJson
        } else if essence.eq_ignore_ascii_case(PROTO) {
            Protocol::ConnectProto
        } else {
            Protocol::Other
        }
    }

    /// The protocol the admission step found for `request` (a request that skipped it is read now).
    pub fn of_request<B>(request: &http::Request<B>) -> Self {
        request
            .extensions()
            .get::<Protocol>()
            .copied()
            .unwrap_or_else(|| Protocol::of(request.headers()))
    }

    /// gRPC or gRPC-Web: tonic answers it.
    pub fn is_grpc(self) -> bool {
        matches!(self, Protocol::Grpc | Protocol::GrpcWeb)
    }

    /// The Connect protocol's unary call, JSON or binary.
    pub fn is_connect(self) -> bool {
        matches!(self, Protocol::ConnectJson | Protocol::ConnectProto)
    }

    /// Its slot among the metrics' per-protocol series.
    pub(crate) fn slot(self) -> usize {
        self as usize
    }

    /// The `protocol` label of `connect_facade_calls_by_protocol_total`.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::GrpcWeb => "grpc-web",
            Protocol::ConnectJson => "connect-json",
            Protocol::ConnectProto => "connect-proto",
            Protocol::Other => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_pick_the_protocol() {
        let of = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
            Protocol::of(&headers)
        };
        assert_eq!(of("application/grpc"), Protocol::Grpc);
        assert_eq!(of("application/grpc+proto"), Protocol::Grpc);
        assert_eq!(of("application/grpc-web-text+proto"), Protocol::GrpcWeb);
        assert_eq!(of("application/json; charset=utf-8"), Protocol::ConnectJson);
        assert_eq!(of("Application/Proto"), Protocol::ConnectProto);
        assert_eq!(of("text/plain"), Protocol::Other);
        assert_eq!(Protocol::of(&HeaderMap::new()), Protocol::Other);
        // Every protocol has a series slot of its own.
        assert_eq!(
            Protocol::Other.slot() + 1,
            crate::call::metrics::PROTOCOL_SLOTS
        );
    }
}

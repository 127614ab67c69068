//! A Connect request's body read into the [`Call`] the call service takes: its encoding (gzip or
//! identity), protocol version and timeout header checked, the body read within
//! `--max-message-size` (a small gzip body must not inflate past it either), then decoded as the
//! request message in JSON or protobuf.

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Limited};
use prost::Message;
use tonic::body::Body;

use crate::{
    api::protocol::Protocol,
    call::{
        Call, Wire,
        deadline::{CallerTimeout, Deadline},
    },
    clip,
    error::EdgeRefusal,
    proto::CreatePersistentContactAssociationRequest,
    serving::request_buffers::ConnectionReset,
};

/// The call as the service takes it, or why the request cannot be one (with the request's
/// extensions, for the refusal's log line).
pub(super) async fn call(
    request: Request<Body>,
    protocol: Protocol,
    max_message_size: usize,
) -> Result<Call, (EdgeRefusal, http::Extensions)> {
    let (mut parts, body) = request.into_parts();
    match message(&parts, body, protocol, max_message_size).await {
        Ok(message) => Ok(Call {
            message,
            metadata: tonic::metadata::MetadataMap::from_headers(std::mem::take(
                &mut parts.headers,
            )),
            extensions: std::mem::take(&mut parts.extensions),
            wire: Wire::Connect,
        }),
        Err(refusal) => Err((refusal, parts.extensions)),
    }
}

async fn message(
    parts: &http::request::Parts,
    body: Body,
    protocol: Protocol,
    max_message_size: usize,
) -> Result<CreatePersistentContactAssociationRequest, EdgeRefusal> {
    // gzip is what Connect clients send (connect-python compresses by default); the spec answers
    // any other encoding `unimplemented`.
    let gzipped = match parts.headers.get(header::CONTENT_ENCODING) {
        None => false,
        Some(encoding) if encoding == "identity" => false,
        Some(encoding) if encoding == "gzip" => true,
        Some(encoding) => {
            return Err(EdgeRefusal::UnsupportedEncoding {
                encoding: clip::echo(&String::from_utf8_lossy(encoding.as_bytes())),
            });
        }
    };
    if let Some(version) = parts.headers.get("connect-protocol-version")
        && version != "1"
    {
        return Err(EdgeRefusal::ProtocolVersion);
    }
    if parts
        .extensions
        .get::<Deadline>()
        .is_some_and(|deadline| deadline.asked == CallerTimeout::Malformed)
    {
        return Err(EdgeRefusal::Timeout);
    }
    let bytes = match Limited::new(body, max_message_size).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            return Err(EdgeRefusal::TooLarge {
                limit: max_message_size,
                inflated: false,
            });
        }
        Err(error) => {
            // Through tonic's body, the reset is the source of a Status.
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error.as_ref());
            while let Some(error) = cause {
                if let Some(reset) = error.downcast_ref::<ConnectionReset>() {
                    return Err(EdgeRefusal::ConnectionReset(reset.to_string()));
                }
                cause = error.source();
            }
            return Err(EdgeRefusal::Malformed(format!(
                "cannot read the request body: {error}"
            )));
        }
    };
    let bytes = if gzipped {
        gunzip(&bytes, max_message_size)?
    } else {
        bytes
    };
    match protocol {
        Protocol::ConnectProto => {
            CreatePersistentContactAssociationRequest::decode(bytes).map_err(|error| {
                EdgeRefusal::Malformed(format!(
                    "the request body is not the protobuf message: {error}"
                ))
            })
        }
        _ => serde_json::from_slice(&bytes).map_err(|error| {
            // serde quotes unknown values (an enum's variant), which the caller sized.
            EdgeRefusal::Malformed(format!(
                "the request body is not valid JSON for the request: {}",
                clip::echo(&error.to_string())
            ))
        }),
    }
}

/// `compressed`, inflated, within `limit` bytes (a small body must not inflate past the limit).
fn gunzip(compressed: &[u8], limit: usize) -> Result<Bytes, EdgeRefusal> {
    use std::io::Read;
    let mut inflated = Vec::new();
    flate2::read::GzDecoder::new(compressed)
        .take(limit as u64 + 1)
        .read_to_end(&mut inflated)
        .map_err(|error| EdgeRefusal::Malformed(format!("the gzip body is corrupt: {error}")))?;
    if inflated.len() > limit {
        return Err(EdgeRefusal::TooLarge {
            limit,
            inflated: true,
        });
    }
    Ok(Bytes::from(inflated))
}

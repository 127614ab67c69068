//! Hostile input: oversized and malformed messages and junk metadata are answered with the codes gRPC
//! specifies, and the server keeps serving.

use bytes::{BufMut, BytesMut};
use http_body_util::{BodyExt, Full};
use tonic::{Code, metadata::MetadataValue};
use tower::{Service, ServiceExt};

use crate::support::{TestApp, channel, entire_session, spawn};

const PATH: &str = "/amazonconnect.v1.ContactService/CreatePersistentContactAssociation";

/// Sends `message` as a raw gRPC frame; returns the grpc-status the server answered.
async fn raw_call(app: &TestApp, message: &[u8]) -> i32 {
    raw_answer(app, message).await.0
}

/// Sends `message` as a raw gRPC frame; returns the grpc-status and grpc-message answered.
async fn raw_answer(app: &TestApp, message: &[u8]) -> (i32, String) {
    let mut frame = BytesMut::new();
    frame.put_u8(0);
    frame.put_u32(message.len() as u32);
    frame.put_slice(message);
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{}{PATH}", app.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(Full::new(frame.freeze())))
        .unwrap();
    let mut channel = channel(app.addr).await;
    let response = channel
        .ready()
        .await
        .unwrap()
        .call(request)
        .await
        .expect("an HTTP answer");
    let status_in = |headers: &http::HeaderMap| {
        let code = headers
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().parse::<i32>().unwrap())?;
        let message = headers
            .get("grpc-message")
            .map(|v| percent_decode(v.to_str().unwrap()))
            .unwrap_or_default();
        Some((code, message))
    };
    if let Some(answer) = status_in(response.headers()) {
        return answer;
    }
    let collected = response.into_body().collect().await.expect("a body");
    status_in(collected.trailers().expect("trailers")).expect("grpc-status")
}

fn percent_decode(value: &str) -> String {
    percent_encoding::percent_decode_str(value)
        .decode_utf8_lossy()
        .into_owned()
}

/// A little deterministic noise (xorshift), so failures reproduce.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

async fn still_serving(app: &TestApp) {
    let response = app.call(entire_session()).await.expect("still serving");
    assert_eq!(response.get_ref().continued_from_contact_id, "C3");
}

#[tokio::test]
async fn an_oversized_message_is_resource_exhausted() {
    let app = spawn().await;
    let mut request = entire_session();
    request.instance_id = "x".repeat(100 * 1024);
    let status = app.call(request).await.expect_err("too large");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(app.simulator.requests().is_empty());
    still_serving(&app).await;
}

/// A body that is not the message is the answer gRPC servers give an unparsable request (grpc-go:
/// INTERNAL, "error unmarshalling request"), saying why, and never reaches AWS.
#[tokio::test]
async fn malformed_protobuf_is_internal_naming_the_decode_error() {
    let app = spawn().await;
    // Field 1 with wire type 7, which does not exist.
    let (code, message) = raw_answer(&app, &[0x0f, 0x01, 0x02]).await;
    assert_eq!(code, Code::Internal as i32, "{message}");
    assert!(
        message.to_lowercase().contains("decod") && message.contains("wire type"),
        "the message says what could not be read: {message:?}"
    );
    assert!(app.simulator.requests().is_empty(), "AWS was not called");
    still_serving(&app).await;
}

/// Each random body gets the answer its bytes deserve: one that is not the message is INTERNAL
/// (above); one that decodes is validated like any call, and only a valid one reaches AWS.
#[tokio::test]
async fn random_bodies_get_the_answer_their_bytes_deserve() {
    use prost::Message;
    let app = spawn().await;
    let mut decoded = 0;
    for seed in 1..=64 {
        let body = noise(seed, (seed as usize * 37) % 700);
        let status = raw_call(&app, &body).await;
        match connect_facade::proto::CreatePersistentContactAssociationRequest::decode(&body[..]) {
            Err(_) => assert_eq!(status, Code::Internal as i32, "seed {seed}"),
            Ok(request) => {
                decoded += 1;
                // Random bytes never make the four required ids and a known type at once.
                let complete = !request.instance_id.is_empty()
                    && !request.initial_contact_id.is_empty()
                    && !request.source_contact_id.is_empty()
                    && request.rehydration_type > 0;
                assert!(!complete, "seed {seed} made a whole request: pick another");
                assert_eq!(
                    status,
                    Code::InvalidArgument as i32,
                    "seed {seed}: {request:?}"
                );
            }
        }
    }
    assert!(
        decoded > 0,
        "some of the noise decodes, so validation is exercised too"
    );
    assert!(
        app.simulator.requests().is_empty(),
        "no invalid request reached AWS"
    );
    still_serving(&app).await;
}

#[tokio::test]
async fn junk_metadata_never_breaks_the_server() {
    let app = spawn().await;
    for seed in 1..=32 {
        let mut request = tonic::Request::new(Default::default());
        let metadata = request.metadata_mut();
        metadata.insert_bin("x-junk-bin", MetadataValue::from_bytes(&noise(seed, 200)));
        let printable: String = noise(seed + 100, 60)
            .into_iter()
            .map(|b| char::from(b' ' + b % 94))
            .collect();
        if let Ok(value) = printable.parse() {
            metadata.insert("grpc-timeout", value);
        }
        let status = app
            .client
            .clone()
            .create_persistent_contact_association(request)
            .await
            .expect_err("an empty request is invalid");
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "seed {seed}: {status:?}"
        );
    }
    still_serving(&app).await;
}

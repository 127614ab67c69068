//! Hostile input: oversized and malformed messages and junk metadata are answered with the codes gRPC
//! specifies, and the server keeps serving.

use bytes::{BufMut, BytesMut};
use http_body_util::{BodyExt, Full};
use tonic::{Code, metadata::MetadataValue};
use tower::{Service, ServiceExt};

use crate::helpers::{TestApp, channel, entire_session, spawn};

const PATH: &str = "/amazonconnect.v1.ContactService/CreatePersistentContactAssociation";

/// Sends `message` as a raw gRPC frame; returns the grpc-status the server answered.
async fn raw_call(app: &TestApp, message: &[u8]) -> i32 {
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
        headers
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().parse::<i32>().unwrap())
    };
    if let Some(status) = status_in(response.headers()) {
        return status;
    }
    let collected = response.into_body().collect().await.expect("a body");
    status_in(collected.trailers().expect("trailers")).expect("grpc-status")
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

#[tokio::test]
async fn malformed_protobuf_is_internal() {
    let app = spawn().await;
    // Field 1 with wire type 7, which does not exist.
    assert_eq!(
        raw_call(&app, &[0x0f, 0x01, 0x02]).await,
        Code::Internal as i32
    );
    still_serving(&app).await;
}

#[tokio::test]
async fn random_bodies_never_break_the_server() {
    let app = spawn().await;
    for seed in 1..=64 {
        let status = raw_call(&app, &noise(seed, (seed as usize * 37) % 700)).await;
        assert!(
            [
                Code::Internal,
                Code::InvalidArgument,
                Code::NotFound,
                Code::FailedPrecondition
            ]
            .map(|c| c as i32)
            .contains(&status),
            "seed {seed}: grpc-status {status}"
        );
    }
    assert!(app.simulator.requests().len() <= 64);
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

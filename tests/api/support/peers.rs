//! Raw peers below the gRPC client: HTTP/1.1 heads and h2 streams written by hand, to send what a
//! well-behaved client never would (a body that never comes, half a gRPC message).

use crate::support::{TestApp, channel};
use bytes::Bytes;
use connect_facade::proto::RPC_PATH;
use http_body_util::StreamBody;
use std::time::Duration;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
    time::Instant,
};
use tower::{Service, ServiceExt};

/// The HTTP/1.1 answer to `head` (a request whose body never comes), and when it came.
pub async fn http1_answer(app: &TestApp, head: &str) -> (String, Duration) {
    http1_answer_at(app.addr, head).await
}

/// [`http1_answer`] from a facade at `addr`.
pub async fn http1_answer_at(addr: std::net::SocketAddr, head: &str) -> (String, Duration) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let n = stream.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&answer).contains("\"code\"") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "answered within 5 s");
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

pub fn connect_head(extra: &str) -> String {
    format!(
        "POST {RPC_PATH} HTTP/1.1\r\nhost: facade\r\ncontent-type: application/json\r\n\
         content-length: 100\r\n{extra}\r\n{{\"instanceId\""
    )
}

/// Sends `content_type` with `first` as the whole body so far over h2c, and never the rest:
/// the answer's status, grpc-status (in the headers: trailers-only) and when it came.
pub async fn h2_answer(
    addr: std::net::SocketAddr,
    content_type: &str,
    headers: &[(&str, &str)],
    first: Bytes,
) -> (http::StatusCode, Option<String>, Duration) {
    let (sender, receiver) = mpsc::channel::<Result<hyper::body::Frame<Bytes>, tonic::Status>>(1);
    sender
        .send(Ok(hyper::body::Frame::data(first)))
        .await
        .unwrap();
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(receiver));
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{RPC_PATH}"))
        .header("content-type", content_type)
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(tonic::body::Body::new(body)).unwrap();
    let mut channel = channel(addr).await;
    let started = Instant::now();
    let response = tokio::time::timeout(
        Duration::from_secs(5),
        channel.ready().await.unwrap().call(request),
    )
    .await
    .expect("answered within 5 s")
    .expect("an HTTP answer");
    let took = started.elapsed();
    drop(sender);
    let grpc_status = response
        .headers()
        .get("grpc-status")
        .map(|value| value.to_str().unwrap().to_owned());
    (response.status(), grpc_status, took)
}

/// Five bytes of gRPC framing announcing a 100-byte message, and 10 of them.
pub fn half_a_grpc_message() -> Bytes {
    let mut frame = vec![0, 0, 0, 0, 100];
    frame.extend_from_slice(&[0x0a; 10]);
    Bytes::from(frame)
}

//! Callers without gRPC, on the gRPC port: the Connect protocol (JSON and binary, HTTP/1.1 and h2c)
//! and gRPC-Web, each answering as the gRPC call does. The official Connect clients (Node, Python)
//! run in scripts/conformance.sh; here a plain HTTP client speaks the protocol as curl would.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use connect_facade::{
    proto::{CreatePersistentContactAssociationRequest, RehydrationType},
    simulator::faults::FaultEffect,
};
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use prost::Message;
use serde_json::{Value, json};
use tonic::Code;
use tonic_types::pb;

use crate::support::{INSTANCE, TestApp, entire_session, fault, series_value, spawn, spawn_with};

const PATH: &str = "/amazonconnect.v1.ContactService/CreatePersistentContactAssociation";

/// An HTTP answer: status, headers and body.
struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Sends one HTTP request to the app, over HTTP/2 (prior knowledge) or HTTP/1.1.
async fn send(
    app: &TestApp,
    http2: bool,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    send_to(app.addr, http2, method, path, headers, body).await
}

/// Sends one HTTP request to the facade at `addr`.
async fn send_to(
    addr: std::net::SocketAddr,
    http2: bool,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build_http::<Full<Bytes>>();
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Full::new(body.into())).unwrap())
        .await
        .expect("the facade answers");
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

async fn post_json(app: &TestApp, http2: bool, body: Value) -> Answer {
    send(
        app,
        http2,
        Method::POST,
        PATH,
        &[("content-type", "application/json")],
        body.to_string(),
    )
    .await
}

fn session_json() -> Value {
    json!({
        "instanceId": INSTANCE,
        "initialContactId": "new-chat-1",
        "rehydrationType": "REHYDRATION_TYPE_ENTIRE_PAST_SESSION",
        "sourceContactId": "C1",
    })
}

/// The ErrorInfo reason of a Connect error.
fn reason(answer: &Answer) -> String {
    detail::<pb::ErrorInfo>(&answer.json(), "google.rpc.ErrorInfo").reason
}

/// The details of a Connect error, decoded from their base64 values.
fn detail<M: Message + Default>(error: &Value, name: &str) -> M {
    let detail = error["details"]
        .as_array()
        .expect("details")
        .iter()
        .find(|d| d["type"] == name)
        .unwrap_or_else(|| panic!("no {name} in {error}"));
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(detail["value"].as_str().unwrap())
        .expect("unpadded base64");
    M::decode(bytes.as_slice()).expect("the message")
}

#[tokio::test]
async fn connect_json_succeeds_over_http1_and_http2_with_the_grpc_metadata_as_headers() {
    let app = spawn().await;
    for http2 in [false, true] {
        let mut body = session_json();
        body["initialContactId"] = json!(if http2 { "new-chat-2" } else { "new-chat-1" });
        let answer = post_json(&app, http2, body).await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        assert_eq!(answer.headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(answer.headers["x-facade-attempts"], "1");
        assert!(answer.headers.contains_key("x-amzn-requestid"));
        let json = answer.json();
        assert_eq!(json["continuedFromContactId"], "C3");
        assert!(uuid::Uuid::parse_str(json["clientToken"].as_str().unwrap()).is_ok());
    }
}

#[tokio::test]
async fn proto_field_names_and_enum_numbers_are_accepted_as_proto3_json_requires() {
    let app = spawn().await;
    let answer = post_json(
        &app,
        false,
        json!({
            "instance_id": INSTANCE,
            "initial_contact_id": "new-chat-1",
            "rehydration_type": 2,
            "source_contact_id": "C2",
            "client_token": "json-token",
            // A field from a newer contract is ignored, as the binary encoding ignores it.
            "someFutureField": {"nested": true},
        }),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.json()["continuedFromContactId"], "C2");
    assert_eq!(answer.json()["clientToken"], "json-token");
}

#[tokio::test]
async fn connect_binary_succeeds() {
    let app = spawn().await;
    let request = entire_session();
    let answer = send(
        &app,
        true,
        Method::POST,
        PATH,
        &[("content-type", "application/proto")],
        request.encode_to_vec(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers[header::CONTENT_TYPE], "application/proto");
    let response =
        connect_facade::proto::CreatePersistentContactAssociationResponse::decode(answer.body)
            .unwrap();
    assert_eq!(response.continued_from_contact_id, "C3");
}

#[tokio::test]
async fn a_validation_error_is_the_protocols_json_error_with_the_grpc_details() {
    let app = spawn().await;
    let mut body = session_json();
    body["instanceId"] = json!("");
    body["sourceContactId"] = json!("");
    let answer = post_json(&app, false, body).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.headers["x-facade-attempts"], "0");
    let error = answer.json();
    assert_eq!(error["code"], "invalid_argument");
    let bad: pb::BadRequest = detail(&error, "google.rpc.BadRequest");
    let fields: Vec<&str> = bad
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(fields, ["instance_id", "source_contact_id"]);
    let info: pb::ErrorInfo = detail(&error, "google.rpc.ErrorInfo");
    assert_eq!(info.reason, "INVALID_FIELDS");
    // curl users read the same in `debug`.
    let debug = error["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["type"] == "google.rpc.ErrorInfo")
        .unwrap()["debug"]
        .clone();
    assert_eq!(debug["reason"], "INVALID_FIELDS");
    assert!(app.simulator.requests().is_empty(), "AWS never saw it");
}

#[tokio::test]
async fn throttling_is_429_with_a_retry_info() {
    let app = spawn().await;
    app.simulator
        .add_fault(crate::support::always_error("ThrottlingException"));
    let answer = post_json(&app, true, session_json()).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    let error = answer.json();
    assert_eq!(error["code"], "resource_exhausted");
    let retry: pb::RetryInfo = detail(&error, "google.rpc.RetryInfo");
    assert!(retry.retry_delay.is_some());
    let info: pb::ErrorInfo = detail(&error, "google.rpc.ErrorInfo");
    assert_eq!(info.reason, "THROTTLED");
    assert!(info.metadata.contains_key("clientToken"));
}

#[tokio::test]
async fn what_is_not_a_call_is_refused_before_aws_with_its_reason_and_counted_as_a_call() {
    let app = spawn_with(connect_facade::simulator::fixtures::Fixtures::demo(), |c| {
        c.telemetry.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let plain = send(
        &app,
        false,
        Method::POST,
        PATH,
        &[("content-type", "text/plain")],
        "hi",
    )
    .await;
    assert_eq!(plain.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(plain.headers.contains_key("accept-post"));
    assert_eq!(reason(&plain), "UNSUPPORTED_CONTENT_TYPE");
    for content_type in [&[("content-type", "application/json")][..], &[]] {
        let get = send(&app, false, Method::GET, PATH, content_type, "").await;
        assert_eq!(
            get.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{content_type:?}"
        );
        assert_eq!(get.headers[header::ALLOW], "POST");
        assert_eq!(reason(&get), "METHOD_NOT_ALLOWED");
    }
    let elsewhere = send(
        &app,
        false,
        Method::POST,
        "/amazonconnect.v1.ContactService/Other",
        &[("content-type", "application/json")],
        "{}",
    )
    .await;
    assert_eq!(elsewhere.status, StatusCode::NOT_FOUND);
    assert_eq!(elsewhere.json()["code"], "unimplemented");
    assert_eq!(reason(&elsewhere), "NO_SUCH_PROCEDURE");

    let malformed = send(
        &app,
        false,
        Method::POST,
        PATH,
        &[("content-type", "application/json")],
        "{\"instanceId\": 12,",
    )
    .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    let error = malformed.json();
    assert_eq!(error["code"], "invalid_argument");
    assert!(
        error["message"].as_str().unwrap().contains("line 1 column"),
        "{error}"
    );
    assert_eq!(reason(&malformed), "MALFORMED_MESSAGE");
    let bad_timeout = send(
        &app,
        false,
        Method::POST,
        PATH,
        &[
            ("content-type", "application/json"),
            ("connect-timeout-ms", "soon"),
        ],
        session_json().to_string(),
    )
    .await;
    assert_eq!(bad_timeout.status, StatusCode::BAD_REQUEST);
    assert_eq!(reason(&bad_timeout), "INVALID_TIMEOUT");

    let huge = json!({"instanceId": "x".repeat(70_000)});
    let oversized = post_json(&app, false, huge).await;
    assert_eq!(oversized.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(oversized.json()["code"], "resource_exhausted");
    assert_eq!(reason(&oversized), "MESSAGE_TOO_LARGE");
    assert!(app.simulator.requests().is_empty());

    // Every refusal on the RPC's path is one of its calls in the gRPC metrics; the other path is not.
    let metrics = app.scrape().await;
    let handled = |code: &str| {
        series_value(
            &metrics,
            &format!(
                "grpc_server_handled_total{{grpc_type=\"unary\",grpc_service=\"amazonconnect.v1.ContactService\",grpc_method=\"CreatePersistentContactAssociation\",grpc_code=\"{code}\"}}"
            ),
        )
    };
    assert_eq!(handled("InvalidArgument"), Some(3.0), "{metrics}");
    assert_eq!(handled("Unimplemented"), Some(2.0), "{metrics}");
    assert_eq!(handled("ResourceExhausted"), Some(1.0), "{metrics}");
}

/// A request the edge cannot read gets the same `rpc finished` line as a failed call, with the
/// reason its answer carries.
#[tokio::test]
async fn an_edge_refusal_is_logged_as_a_call_with_its_reason() {
    use crate::support::{facade, serving};
    let serving = serving(facade(&["serve", "--simulator", "--listen", "127.0.0.1:0"])).await;
    let answer = send_to(
        serving.addr,
        false,
        Method::POST,
        PATH,
        &[("content-type", "application/json")],
        "not json",
    )
    .await;
    assert_eq!(reason(&answer), "MALFORMED_MESSAGE");
    let line = serving.line_with_reason("MALFORMED_MESSAGE").await;
    assert_eq!(line["fields"]["message"], "rpc finished");
    assert_eq!(line["fields"]["grpc_code"], "InvalidArgument");
    assert!(line["span"]["peer"].as_str().is_some(), "{line}");
}

#[tokio::test]
async fn connect_timeout_ms_is_the_calls_deadline() {
    let app = spawn().await;
    app.simulator
        .add_fault(fault(FaultEffect::Latency { millis: 2_000 }));
    let started = std::time::Instant::now();
    let answer = send(
        &app,
        false,
        Method::POST,
        PATH,
        &[
            ("content-type", "application/json"),
            ("connect-timeout-ms", "300"),
            ("connect-protocol-version", "1"),
        ],
        session_json().to_string(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(answer.json()["code"], "deadline_exceeded");
    assert!(started.elapsed() < Duration::from_millis(1_000));
}

#[tokio::test]
async fn grpc_web_answers_as_grpc_does() {
    let app = spawn_with(connect_facade::simulator::fixtures::Fixtures::demo(), |c| {
        c.telemetry.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let frame = |message: &CreatePersistentContactAssociationRequest| {
        let body = message.encode_to_vec();
        let mut framed = vec![0];
        framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
        framed.extend_from_slice(&body);
        framed
    };
    let answer = send(
        &app,
        false,
        Method::POST,
        PATH,
        &[
            ("content-type", "application/grpc-web+proto"),
            ("x-grpc-web", "1"),
        ],
        frame(&entire_session()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let length = u32::from_be_bytes(answer.body[1..5].try_into().unwrap()) as usize;
    let response = connect_facade::proto::CreatePersistentContactAssociationResponse::decode(
        &answer.body[5..5 + length],
    )
    .unwrap();
    assert_eq!(response.continued_from_contact_id, "C3");
    let trailers = String::from_utf8_lossy(&answer.body[5 + length + 5..]).to_string();
    assert!(trailers.contains("grpc-status:0"), "{trailers}");

    // An error, with its details in the trailers as gRPC sends them.
    let mut invalid = entire_session();
    invalid.rehydration_type = RehydrationType::Unspecified.into();
    let answer = send(
        &app,
        false,
        Method::POST,
        PATH,
        &[("content-type", "application/grpc-web+proto")],
        frame(&invalid),
    )
    .await;
    let text = String::from_utf8_lossy(&answer.body).to_string();
    let status = answer
        .headers
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .or_else(|| {
            text.split("grpc-status:").nth(1).map(|rest| {
                rest.trim()
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect()
            })
        })
        .expect("a grpc-status");
    assert_eq!(status, (Code::InvalidArgument as i32).to_string());

    let metrics = app.scrape().await;
    assert_eq!(
        series_value(
            &metrics,
            r#"connect_facade_calls_by_protocol_total{protocol="grpc-web"}"#
        ),
        Some(2.0)
    );
}

#[tokio::test]
async fn a_gzipped_body_is_inflated_and_an_unknown_encoding_refused() {
    use std::io::Write;
    let app = spawn().await;
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(session_json().to_string().as_bytes())
        .unwrap();
    let answer = send(
        &app,
        false,
        Method::POST,
        PATH,
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        gzip.finish().unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.json()["continuedFromContactId"], "C3");

    let brotli = send(
        &app,
        false,
        Method::POST,
        PATH,
        &[
            ("content-type", "application/json"),
            ("content-encoding", "br"),
        ],
        "irrelevant",
    )
    .await;
    assert_eq!(brotli.status, StatusCode::NOT_IMPLEMENTED);
    assert_eq!(brotli.json()["code"], "unimplemented");
}

/// gRPC and gRPC-Web clients may compress their requests (the Python Connect client's gRPC-Web
/// transport gzips by default): the facade inflates them; its answers stay uncompressed.
#[tokio::test]
async fn a_grpc_request_compressed_with_gzip_is_understood() {
    let app = spawn().await;
    let mut client = app
        .client
        .clone()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let response = client
        .create_persistent_contact_association(entire_session())
        .await
        .expect("a gzipped request is answered");
    assert_eq!(response.get_ref().continued_from_contact_id, "C3");
    assert_eq!(app.simulator.requests().len(), 1);
}

/// What a call answered, whatever the protocol: the code, the ErrorInfo reason and the BadRequest
/// fields of an error, or the answer (the token only when the caller chose it: a generated one
/// differs from call to call).
#[derive(Debug, PartialEq)]
enum Outcome {
    Answered {
        continued_from: String,
        token: Option<String>,
    },
    Failed {
        code: Code,
        reason: String,
        fields: Vec<String>,
    },
}

fn failed_from_details(code: Code, details: &[u8]) -> Outcome {
    let status = tonic_types::Status::decode(details).unwrap_or_default();
    failed(
        code,
        status.details.into_iter().map(|any| {
            let name = any
                .type_url
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            (name, any.value)
        }),
    )
}

/// A failure from its code and its details, as (type name, message bytes).
fn failed(code: Code, details: impl Iterator<Item = (String, Vec<u8>)>) -> Outcome {
    let mut reason = String::new();
    let mut fields = Vec::new();
    for (name, bytes) in details {
        match name.as_str() {
            "google.rpc.ErrorInfo" => {
                reason = pb::ErrorInfo::decode(bytes.as_slice()).unwrap().reason;
            }
            "google.rpc.BadRequest" => {
                fields = pb::BadRequest::decode(bytes.as_slice())
                    .unwrap()
                    .field_violations
                    .into_iter()
                    .map(|v| v.field)
                    .collect();
            }
            _ => {}
        }
    }
    Outcome::Failed {
        code,
        reason,
        fields,
    }
}

fn answered(
    request: &CreatePersistentContactAssociationRequest,
    response: connect_facade::proto::CreatePersistentContactAssociationResponse,
) -> Outcome {
    Outcome::Answered {
        continued_from: response.continued_from_contact_id,
        token: (!request.client_token.is_empty()).then_some(response.client_token),
    }
}

async fn over_grpc(app: &TestApp, request: &CreatePersistentContactAssociationRequest) -> Outcome {
    match app.call(request.clone()).await {
        Ok(response) => answered(request, response.into_inner()),
        Err(status) => failed_from_details(status.code(), status.details()),
    }
}

async fn over_connect(
    app: &TestApp,
    request: &CreatePersistentContactAssociationRequest,
    binary: bool,
) -> Outcome {
    let (content_type, body) = if binary {
        ("application/proto", request.encode_to_vec())
    } else {
        // An enum number the contract does not name is written as its number, as proto3 JSON says.
        let known = CreatePersistentContactAssociationRequest {
            rehydration_type: 0,
            ..request.clone()
        };
        let mut json = serde_json::to_value(&known).unwrap();
        if request.rehydration_type != 0 {
            json["rehydrationType"] = match RehydrationType::try_from(request.rehydration_type) {
                Ok(named) => json!(named.as_str_name()),
                Err(_) => json!(request.rehydration_type),
            };
        }
        ("application/json", serde_json::to_vec(&json).unwrap())
    };
    let answer = send(
        app,
        true,
        Method::POST,
        PATH,
        &[("content-type", content_type)],
        body,
    )
    .await;
    if answer.status == StatusCode::OK {
        let response = if binary {
            Message::decode(answer.body).unwrap()
        } else {
            serde_json::from_slice(&answer.body).unwrap()
        };
        return answered(request, response);
    }
    let error = answer.json();
    let code = (0..17)
        .map(Code::from_i32)
        .find(|code| {
            connect_facade::api::error_writer::code_name(*code) == error["code"].as_str().unwrap()
        })
        .expect("a known code");
    failed(
        code,
        error["details"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|detail| {
                let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(detail["value"].as_str().unwrap())
                    .unwrap();
                (detail["type"].as_str().unwrap().to_owned(), bytes)
            }),
    )
}

async fn over_grpc_web(
    app: &TestApp,
    request: &CreatePersistentContactAssociationRequest,
) -> Outcome {
    let body = request.encode_to_vec();
    let mut framed = vec![0];
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend_from_slice(&body);
    let answer = send(
        app,
        false,
        Method::POST,
        PATH,
        &[("content-type", "application/grpc-web+proto")],
        framed,
    )
    .await;
    // Frames: 0x00 the message, 0x80 the trailers (as header lines); or trailers-only, in headers.
    let mut trailers = answer.headers.clone();
    let mut message = None;
    let mut rest = &answer.body[..];
    while rest.len() >= 5 {
        let length = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        let (frame, next) = rest[5..].split_at(length);
        if rest[0] & 0x80 == 0 {
            message = Some(frame.to_vec());
        } else {
            for line in String::from_utf8_lossy(frame).split("\r\n") {
                if let Some((name, value)) = line.split_once(':') {
                    trailers.insert(
                        http::HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
                        value.trim().parse().unwrap(),
                    );
                }
            }
        }
        rest = next;
    }
    let code = Code::from_i32(trailers["grpc-status"].to_str().unwrap().parse().unwrap());
    if code == Code::Ok {
        return answered(
            request,
            Message::decode(message.unwrap().as_slice()).unwrap(),
        );
    }
    let details = trailers
        .get("grpc-status-details-bin")
        .map(|value| {
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(value.to_str().unwrap().trim_end_matches('='))
                .unwrap()
        })
        .unwrap_or_default();
    failed_from_details(code, &details)
}

#[test]
fn any_protobuf_request_gets_the_same_answer_over_every_protocol() {
    use proptest::{prelude::*, test_runner::TestRunner};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Open chats: a valid call succeeds every time, so four protocols can make the same one.
    let app = runtime.block_on(spawn_with(
        crate::support::open_chats_with_quota(1_000_000.0, 1_000_000),
        |_| {},
    ));
    let id = prop::sample::select(vec![
        String::new(),
        INSTANCE.to_owned(),
        "bench-chat".to_owned(),
        "C1".to_owned(),
        "C2".to_owned(),
        "unknown".to_owned(),
        "ünïcödé/會話 ?&".to_owned(),
        "x".repeat(101),
        "x".repeat(257),
    ]);
    let token = prop::sample::select(vec![String::new(), "tok".to_owned(), "t".repeat(501)]);
    let strategy = (id.clone(), id.clone(), 0..4i32, id, token);
    let mut runner = TestRunner::new(proptest::test_runner::Config {
        cases: 64,
        ..Default::default()
    });
    let cases = std::sync::atomic::AtomicU32::new(0);
    runner
        .run(
            &strategy,
            |(instance, initial, rehydration, source, token)| {
                let case = cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // A token of its own per case: the same token with other fields is refused, by design.
                let token = if token == "tok" {
                    format!("tok-{case}")
                } else {
                    token
                };
                let request = CreatePersistentContactAssociationRequest {
                    instance_id: instance,
                    initial_contact_id: initial,
                    rehydration_type: rehydration,
                    source_contact_id: source,
                    client_token: token,
                };
                let outcomes = runtime.block_on(async {
                    [
                        over_grpc(&app, &request).await,
                        over_connect(&app, &request, false).await,
                        over_connect(&app, &request, true).await,
                        over_grpc_web(&app, &request).await,
                    ]
                });
                for (protocol, outcome) in ["connect-json", "connect-proto", "grpc-web"]
                    .iter()
                    .zip(&outcomes[1..])
                {
                    prop_assert_eq!(&outcomes[0], outcome, "{} for {:?}", protocol, request);
                }
                Ok(())
            },
        )
        .unwrap();
}

#[tokio::test]
async fn browsers_on_an_allowed_origin_pass_cors_and_others_do_not() {
    let app = spawn_with(connect_facade::simulator::fixtures::Fixtures::demo(), |c| {
        c.listening.cors_allow_origins = vec!["https://agent-tools.example.com".into()];
    })
    .await;
    let preflight = send(
        &app,
        false,
        Method::OPTIONS,
        PATH,
        &[
            ("origin", "https://agent-tools.example.com"),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "content-type,connect-protocol-version",
            ),
        ],
        "",
    )
    .await;
    assert!(preflight.status.is_success(), "{:?}", preflight.status);
    assert_eq!(
        preflight.headers["access-control-allow-origin"],
        "https://agent-tools.example.com"
    );
    let call = send(
        &app,
        false,
        Method::POST,
        PATH,
        &[
            ("content-type", "application/json"),
            ("origin", "https://agent-tools.example.com"),
        ],
        session_json().to_string(),
    )
    .await;
    assert_eq!(call.status, StatusCode::OK);
    let exposed = call.headers["access-control-expose-headers"]
        .to_str()
        .unwrap();
    assert!(exposed.contains("x-facade-attempts"), "{exposed}");

    let stranger = send(
        &app,
        false,
        Method::OPTIONS,
        PATH,
        &[
            ("origin", "https://evil.example.com"),
            ("access-control-request-method", "POST"),
        ],
        "",
    )
    .await;
    assert!(!stranger.headers.contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn every_refusal_with_a_retry_info_says_when_to_come_back_in_its_protocols_words() {
    use tonic_types::StatusExt;
    let app = spawn_with(crate::support::open_chats_with_quota(100.0, 100), |c| {
        c.quota.rate_limit = 1.0;
        c.quota.rate_burst = 1;
        c.quota.max_queue_wait = Duration::ZERO;
        c.retries.max_attempts = 1;
    })
    .await;
    let fresh = || {
        let request = crate::support::fresh_session();
        let mut body = session_json();
        body["initialContactId"] = json!(request.initial_contact_id);
        (request, body)
    };
    app.call(fresh().0).await.expect("the burst's one slot");
    // gRPC: the pushback trailer (gRFC A6) beside the RetryInfo, and the IETF RateLimit fields.
    let limited = app.call(fresh().0).await.expect_err("rate limited");
    assert_eq!(limited.code(), Code::ResourceExhausted);
    let delay = limited
        .get_error_details()
        .retry_info()
        .and_then(|info| info.retry_delay)
        .expect("a RetryInfo");
    let pushback: u128 = limited
        .metadata()
        .get("grpc-retry-pushback-ms")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(pushback, delay.as_millis());
    assert_eq!(
        limited.metadata().get("ratelimit-policy").unwrap(),
        "\"account\";q=1;w=1"
    );
    assert_eq!(
        limited.metadata().get("ratelimit").unwrap(),
        "\"account\";r=0;t=1"
    );
    // Connect: 429 with Retry-After, in whole seconds, and the same RateLimit headers.
    let answer = post_json(&app, false, fresh().1).await;
    assert_eq!(
        answer.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        answer.body
    );
    assert_eq!(answer.headers[header::RETRY_AFTER], "1");
    assert_eq!(answer.headers["ratelimit-policy"], "\"account\";q=1;w=1");
    // A transient AWS failure: UNAVAILABLE with its pushback; over Connect, 503 with Retry-After.
    // A fixed sleep: the account's bucket (1 call/s, burst 1) refills, so the next refusal is AWS's.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    app.simulator
        .add_fault(crate::support::always_error("InternalServiceException"));
    let unavailable = app.call(fresh().0).await.expect_err("unavailable");
    assert_eq!(unavailable.code(), Code::Unavailable);
    assert_eq!(
        unavailable
            .metadata()
            .get("grpc-retry-pushback-ms")
            .unwrap(),
        "200"
    );
    // A fixed sleep: the bucket refills again before the Connect call.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let answer = post_json(&app, false, fresh().1).await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        answer.body
    );
    assert_eq!(answer.headers[header::RETRY_AFTER], "1");
    // Answers with no RetryInfo carry neither.
    let invalid = app
        .call(CreatePersistentContactAssociationRequest::default())
        .await
        .expect_err("invalid");
    assert!(invalid.metadata().get("grpc-retry-pushback-ms").is_none());
}

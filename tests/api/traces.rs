//! Traces over OTLP, from the real binary to an OTLP/gRPC collector running in the test: a caller's
//! W3C `traceparent` is continued, each AWS attempt is a child span, and the last spans are sent
//! before the process exits.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use connect_facade::proto::{
    CreatePersistentContactAssociationRequest, contact_service_client::ContactServiceClient,
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
    trace::v1::{Span, span::SpanKind},
};
use tonic::{Request, Response, Status};

use crate::{
    support::{Serving, exits_zero, facade, fixtures_with_faults, serving, sigterm},
    support::{channel, entire_session, loopback},
};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

/// An OTLP trace collector that keeps every span with its resource's `service.name`.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|resource| string_attribute(&resource.attributes, "service.name"))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans.into_iter().map(|span| (service.clone(), span)));
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn start_collector() -> (SocketAddr, Collector) {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = TraceServiceServer::new(collector.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (addr, collector)
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|AnyValue { value }| value.as_ref())
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attribute(attributes, key)? {
        Value::StringValue(value) => Some(value.clone()),
        _ => None,
    }
}

fn int_attribute(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attribute(attributes, key)? {
        Value::IntValue(value) => Some(*value),
        _ => None,
    }
}

#[tokio::test]
async fn a_callers_trace_is_continued_and_exported_over_otlp_before_exit() {
    let (collector_addr, collector) = start_collector().await;
    // One InternalServiceException, so the call takes two attempts.
    let fixtures =
        fixtures_with_faults("  - { kind: error, code: InternalServiceException, times: 1 }\n");
    let mut command = facade(&[
        "serve",
        "--simulator",
        "--simulator-fixtures",
        fixtures.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    command
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{collector_addr}"),
        )
        .env("OTEL_SERVICE_NAME", "facade-under-test");
    let Serving {
        addr,
        mut child,
        logs,
    } = serving(command).await;
    let _ = std::fs::remove_file(&fixtures);

    let mut client = ContactServiceClient::new(channel(addr).await);
    let mut traced = Request::new(entire_session());
    traced.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01")
            .parse()
            .unwrap(),
    );
    let response = client
        .create_persistent_contact_association(traced)
        .await
        .expect("the traced call succeeds after one retry");
    assert_eq!(
        response.metadata().get("x-facade-attempts").unwrap(),
        "2",
        "the fault makes two attempts"
    );
    client
        .create_persistent_contact_association(CreatePersistentContactAssociationRequest {
            initial_contact_id: "new-chat-2".into(),
            ..entire_session()
        })
        .await
        .expect("the untraced call succeeds");

    // The batch exporter's default delay is 5 s: the spans arrive because shutdown flushes them.
    sigterm(&child);
    exits_zero(&mut child).await;
    let spans = collector.spans.lock().unwrap().clone();

    let rpcs: Vec<&Span> = spans
        .iter()
        .filter(|(_, span)| {
            span.name == "amazonconnect.v1.ContactService/CreatePersistentContactAssociation"
        })
        .map(|(_, span)| span)
        .collect();
    assert_eq!(rpcs.len(), 2, "one server span per call: {spans:#?}");
    assert!(
        spans
            .iter()
            .all(|(service, _)| service == "facade-under-test"),
        "OTEL_SERVICE_NAME names the service"
    );
    let traced = rpcs
        .iter()
        .find(|span| hex::encode(&span.trace_id) == TRACE_ID)
        .expect("the traced call's span continues the caller's trace");
    assert_eq!(hex::encode(&traced.parent_span_id), PARENT_SPAN_ID);
    assert_eq!(traced.kind, SpanKind::Server as i32);
    assert_eq!(
        string_attribute(&traced.attributes, "rpc.system").as_deref(),
        Some("grpc")
    );
    assert_eq!(
        int_attribute(&traced.attributes, "rpc.grpc.status_code"),
        Some(0)
    );
    assert_eq!(
        string_attribute(&traced.attributes, "instance_id").as_deref(),
        Some(crate::support::INSTANCE)
    );
    assert_eq!(int_attribute(&traced.attributes, "attempts"), Some(2));
    assert_eq!(
        string_attribute(&traced.attributes, "client_token").as_deref(),
        Some(response.get_ref().client_token.as_str())
    );

    let untraced = rpcs
        .iter()
        .find(|span| hex::encode(&span.trace_id) != TRACE_ID)
        .expect("the untraced call's span");
    assert!(
        untraced.parent_span_id.is_empty(),
        "without traceparent the RPC's span is a root"
    );

    let attempts: Vec<&Span> = spans
        .iter()
        .map(|(_, span)| span)
        .filter(|span| span.parent_span_id == traced.span_id)
        .collect();
    assert_eq!(attempts.len(), 2, "one client span per AWS attempt");
    for (number, attempt) in attempts.iter().enumerate() {
        assert_eq!(attempt.kind, SpanKind::Client as i32);
        assert_eq!(attempt.name, "Connect/CreatePersistentContactAssociation");
        assert_eq!(hex::encode(&attempt.trace_id), TRACE_ID);
        let number = i64::try_from(number).unwrap() + 1;
        assert!(
            attempts
                .iter()
                .any(|span| int_attribute(&span.attributes, "attempt") == Some(number)),
            "attempt {number} has a span: {attempts:#?}"
        );
    }

    // The retry has its line, naming the failed attempt's error, in the call's span (attempt
    // spans are for traces only), with the trace id, to join logs and traces.
    let logs = logs.lock().unwrap();
    let retry_lines: Vec<serde_json::Value> = logs
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["fields"]["message"] == "retrying")
        .collect();
    assert_eq!(retry_lines.len(), 1, "{logs:#?}");
    let failed = &retry_lines[0];
    assert_eq!(failed["fields"]["attempts"], 1);
    assert_eq!(
        failed["fields"]["aws_error_code"],
        "InternalServiceException"
    );
    assert_eq!(
        failed["fields"]["client_token"],
        response.get_ref().client_token.as_str()
    );
    assert_eq!(failed["span"]["name"], "rpc");
    assert_eq!(failed["span"]["trace_id"], TRACE_ID);
}

#[tokio::test]
async fn without_an_otlp_endpoint_nothing_is_exported() {
    let Serving {
        addr,
        mut child,
        logs,
    } = serving(facade(&["serve", "--simulator", "--listen", "127.0.0.1:0"])).await;
    let mut client = ContactServiceClient::new(channel(addr).await);
    client
        .create_persistent_contact_association(entire_session())
        .await
        .expect("the call succeeds");
    let unknown = client
        .create_persistent_contact_association(CreatePersistentContactAssociationRequest {
            initial_contact_id: "no-such-chat".into(),
            ..entire_session()
        })
        .await
        .expect_err("an unknown chat is not found");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    sigterm(&child);
    exits_zero(&mut child).await;
    let logs = logs.lock().unwrap();
    assert!(
        !logs.iter().any(|line| line.contains("OTLP")),
        "no exporter is started: {logs:#?}"
    );
    // At the default level a successful call writes no line (metrics and traces count it), a
    // failed one exactly one, with its outcome.
    let call_lines: Vec<serde_json::Value> = logs
        .iter()
        .filter(|line| line.contains(crate::support::INSTANCE))
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    assert_eq!(call_lines.len(), 1, "{call_lines:#?}");
    let failed = &call_lines[0];
    assert_eq!(failed["fields"]["message"], "rpc finished");
    assert_eq!(failed["fields"]["grpc_code"], "NotFound");
    // The ErrorInfo reason and the route, as the runbook's questions need them.
    assert_eq!(failed["fields"]["reason"], "RESOURCE_NOT_FOUND");
    assert_eq!(failed["fields"]["route"], "default");
    assert_eq!(failed["fields"]["attempts"], 1);
    assert_eq!(failed["target"], "connect_facade::calls");
    assert_eq!(failed["level"], "INFO");
}

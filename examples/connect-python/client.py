"""Calling connect-facade from Python with the official Connect client, connectrpc.

    pip install -r requirements.txt
    python client.py localhost:50051 [connect-json|connect-binary|grpc-web]

No gRPC stack and no code generation: the message classes come from the contract's published
descriptor image (proto/published.binpb), and connectrpc's google.protobuf codecs carry them over
the Connect protocol (JSON or binary) or gRPC-Web, over HTTP/1.1 or HTTP/2.

Shows a successful call; reading a RESOURCE_EXHAUSTED (or UNAVAILABLE) answer's google.rpc details
(RetryInfo: how long to wait; ErrorInfo: the client_token the facade used); retrying with that token,
so a retry can never apply the association twice; and a validation error's BadRequest.
"""

import os
import sys
import time

from connectrpc.client import ConnectClientSync, ResponseMetadata
from connectrpc.code import Code
from connectrpc.compat import google_protobuf_binary_codec, google_protobuf_json_codec
from connectrpc.errors import ConnectError
from connectrpc.method import IdempotencyLevel, MethodInfo, StreamType
from connectrpc.protocol import ProtocolType
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.rpc import error_details_pb2

HERE = os.path.dirname(os.path.abspath(__file__))
IMAGE = os.path.join(HERE, "..", "..", "proto", "published.binpb")
INSTANCE = "11111111-2222-3333-4444-555555555555"
SERVICE = "amazonconnect.v1.ContactService"
VERBOSE = os.environ.get("VERBOSE") == "1"


def load_contract():
    """The request and response classes, from the published image (a FileDescriptorSet)."""
    with open(IMAGE, "rb") as image:
        files = descriptor_pb2.FileDescriptorSet.FromString(image.read())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    method = pool.FindServiceByName(SERVICE).FindMethodByName("CreatePersistentContactAssociation")
    return message_factory.GetMessageClass(method.input_type), message_factory.GetMessageClass(method.output_type)


Request, Response = load_contract()
ASSOCIATE = MethodInfo(
    name="CreatePersistentContactAssociation",
    service_name=SERVICE,
    input=Request,
    output=Response,
    idempotency_level=IdempotencyLevel.UNKNOWN,
    stream_type=StreamType.UNARY,
)
DETAIL_TYPES = {
    kind.DESCRIPTOR.full_name: kind
    for kind in (error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo, error_details_pb2.BadRequest)
}
RETRYABLE = {Code.RESOURCE_EXHAUSTED, Code.UNAVAILABLE}


def details(error):
    """The google.rpc details of a failed call, by type name (ErrorInfo, RetryInfo, BadRequest)."""
    found = {}
    for detail in error.details:
        kind = DETAIL_TYPES.get(detail.type_name)
        if kind:
            found[kind.DESCRIPTOR.name] = kind.FromString(detail.message_bytes)
    return found


def associate(client, request, attempts=5):
    for attempt in range(1, attempts + 1):
        try:
            # What gRPC metadata carries (x-amzn-requestid, x-facade-attempts…) arrives as headers.
            with ResponseMetadata() as answer:
                response = client.execute_unary(request=request, method=ASSOCIATE, timeout_ms=10_000)
            print(
                f"call {attempt}: OK continued_from_contact_id={response.continued_from_contact_id} "
                f"client_token={response.client_token}"
                + (f" (AWS request {answer.headers['x-amzn-requestid']})" if VERBOSE else "")
            )
            return response
        except ConnectError as error:
            if error.code not in RETRYABLE:
                raise
            found = details(error)
            delay = found["RetryInfo"].retry_delay.ToTimedelta().total_seconds() if "RetryInfo" in found else 1.0
            info = found.get("ErrorInfo")
            token = info.metadata.get("clientToken", "") if info else ""
            print(
                f"call {attempt}: {error.code.name} ({info.reason if info else '?'}): "
                f"retry in {delay:.3f}s with client_token={token}"
            )
            time.sleep(delay)
            # The same token: if the failed attempt reached AWS after all, this one replays its answer.
            request.client_token = token
    raise RuntimeError("gave up")


def client_for(target, transport):
    address = f"http://{target}"
    if transport == "connect-json":
        return ConnectClientSync(address, codec=google_protobuf_json_codec())
    if transport == "connect-binary":
        return ConnectClientSync(address, codec=google_protobuf_binary_codec())
    if transport == "grpc-web":
        return ConnectClientSync(address, codec=google_protobuf_binary_codec(), protocol=ProtocolType.GRPC_WEB)
    sys.exit(f"unknown transport {transport}: connect-json, connect-binary or grpc-web")


def main():
    target = sys.argv[1] if len(sys.argv) > 1 else "localhost:50051"
    with client_for(target, sys.argv[2] if len(sys.argv) > 2 else "connect-json") as client:
        associate(
            client,
            Request(
                instance_id=INSTANCE,
                initial_contact_id="new-chat-1",
                rehydration_type="REHYDRATION_TYPE_ENTIRE_PAST_SESSION",
                source_contact_id="C1",
            ),
        )
        try:
            client.execute_unary(request=Request(instance_id=INSTANCE), method=ASSOCIATE)
        except ConnectError as error:
            fields = ",".join(v.field for v in details(error)["BadRequest"].field_violations)
            print(f"invalid: {error.code.name} fields={fields}")


if __name__ == "__main__":
    main()

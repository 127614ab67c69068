"""Calling connect-facade from Python with grpcio.

    pip install -r requirements.txt
    python client.py localhost:50051

Stubs are generated from the facade's proto/ at start (grpc_tools.protoc), so they always match the
contract. The example shows the three things every caller needs:
  1. a successful call;
  2. reading a RESOURCE_EXHAUSTED (or UNAVAILABLE) answer's google.rpc details: RetryInfo says how
     long to wait, ErrorInfo carries the client_token the facade used;
  3. retrying with that client_token, so the retry can never apply the association twice;
and how a validation error names the bad fields (google.rpc.BadRequest). Last, the same with no code
at all: gRPC's built-in retry (the service config's retryPolicy, RETRY_POLICY below) retries
RESOURCE_EXHAUSTED and UNAVAILABLE, waiting as the facade's grpc-retry-pushback-ms trailer says (gRFC
A6). It needs no client_token: the facade remembers each association by its contact, so a retry of
one that was made after all is answered OK.

With CONNECT_FACADE_TOKEN_FILE set (a facade with an auth file), each call carries that file's token as
`authorization: Bearer …`, read afresh at every call: inside Kubernetes it is the pod's projected
service account token, which the kubelet rotates before it expires.
"""

import json

import os
import sys
import tempfile
import time

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.join(HERE, "..", "..", "proto")
INSTANCE = "11111111-2222-3333-4444-555555555555"
# e.g. /var/run/secrets/connect-facade/token, a projected volume with `audience: connect-facade`.
TOKEN_FILE = os.environ.get("CONNECT_FACADE_TOKEN_FILE")

# gRPC's own retry, as a service config: the facade's pushback trailer sets each wait.
RETRY_POLICY = {
    "methodConfig": [{
        "name": [{"service": "amazonconnect.v1.ContactService"}],
        "retryPolicy": {
            "maxAttempts": 4,
            "initialBackoff": "0.2s",
            "maxBackoff": "2s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["RESOURCE_EXHAUSTED", "UNAVAILABLE"],
        },
    }],
}


def load_stubs():
    out = tempfile.mkdtemp(prefix="connect-facade-stubs-")
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    source = os.path.join(PROTO, "amazonconnect", "v1", "contact_service.proto")
    if protoc.main(["protoc", f"-I{PROTO}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}", source]):
        sys.exit(f"cannot generate stubs from {source}")
    sys.path.insert(0, out)
    from amazonconnect.v1 import contact_service_pb2, contact_service_pb2_grpc

    return contact_service_pb2, contact_service_pb2_grpc


pb2, pb2_grpc = load_stubs()


def details(error):
    """The google.rpc details of a failed call, by type."""
    status = rpc_status.from_call(error)
    found = {}
    for detail in status.details if status else []:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo, error_details_pb2.BadRequest):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                found[kind.__name__] = message
    return found


def credentials():
    """The call's metadata: the token file's current content. Read at each call, never cached for
    the process's life: a projected token lasts an hour and the kubelet replaces the file well before."""
    if not TOKEN_FILE:
        return ()
    with open(TOKEN_FILE) as file:
        return (("authorization", f"Bearer {file.read().strip()}"),)


def associate(stub, request, attempts=5):
    """Calls until success or a non-retryable error, waiting as RetryInfo says and reusing the token."""
    for attempt in range(1, attempts + 1):
        try:
            response = stub.CreatePersistentContactAssociation(request, timeout=10, metadata=credentials())
            print(f"call {attempt}: OK continued_from_contact_id={response.continued_from_contact_id} "
                  f"client_token={response.client_token}")
            return response
        except grpc.RpcError as error:
            found = details(error)
            info = found.get("ErrorInfo")
            if error.code() not in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE):
                raise
            delay = found["RetryInfo"].retry_delay.ToTimedelta().total_seconds() if "RetryInfo" in found else 1.0
            token = info.metadata.get("clientToken", "") if info else ""
            print(f"call {attempt}: {error.code().name} ({info.reason if info else '?'}): "
                  f"retry in {delay:.3f}s with client_token={token}")
            time.sleep(delay)
            # The same token: if the failed attempt reached AWS after all, this one replays its answer.
            request.client_token = token
    raise RuntimeError("gave up")


def main():
    target = sys.argv[1] if len(sys.argv) > 1 else "localhost:50051"
    with grpc.insecure_channel(target) as channel:
        stub = pb2_grpc.ContactServiceStub(channel)

        associate(stub, pb2.CreatePersistentContactAssociationRequest(
            instance_id=INSTANCE,
            initial_contact_id="new-chat-1",
            rehydration_type=pb2.REHYDRATION_TYPE_ENTIRE_PAST_SESSION,
            source_contact_id="C1",
        ))

        try:
            stub.CreatePersistentContactAssociation(
                pb2.CreatePersistentContactAssociationRequest(instance_id=INSTANCE), timeout=10,
                metadata=credentials())
        except grpc.RpcError as error:
            fields = [v.field for v in details(error)["BadRequest"].field_violations]
            print(f"invalid: {error.code().name} fields={','.join(fields)}")

    options = [("grpc.service_config", json.dumps(RETRY_POLICY)), ("grpc.enable_retries", 1)]
    with grpc.insecure_channel(target, options=options) as channel:
        response = pb2_grpc.ContactServiceStub(channel).CreatePersistentContactAssociation(
            pb2.CreatePersistentContactAssociationRequest(
                instance_id=INSTANCE,
                initial_contact_id="new-chat-2",
                rehydration_type=pb2.REHYDRATION_TYPE_FROM_SEGMENT,
                source_contact_id="C2",
            ), timeout=10, metadata=credentials())
        print(f"built-in retry: OK continued_from_contact_id={response.continued_from_contact_id}")


if __name__ == "__main__":
    main()

"""The obvious alternative to the facade, for scripts/bench.sh: a Python grpcio server of the same
contract (proto/) whose handler calls boto3. It has none of the facade's middleware; it validates
nothing and maps only the AWS error code to a gRPC status, so what it costs is the floor of this
design, not a strawman.

    python bench/python/server.py --endpoint-url http://127.0.0.1:8787 [--listen 127.0.0.1:0]

Prints the bound address on stdout. Stubs are generated from proto/ into a temporary directory.
"""

import argparse
import os
import sys
import tempfile
import uuid
from concurrent import futures

import boto3
import botocore.config
import grpc
from grpc_tools import protoc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO = os.path.join(ROOT, "proto")

CODES = {
    "InvalidRequestException": grpc.StatusCode.FAILED_PRECONDITION,
    "InvalidParameterException": grpc.StatusCode.INVALID_ARGUMENT,
    "ResourceNotFoundException": grpc.StatusCode.NOT_FOUND,
    "AccessDeniedException": grpc.StatusCode.PERMISSION_DENIED,
    "ThrottlingException": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "InternalServiceException": grpc.StatusCode.UNAVAILABLE,
}


def generate_stubs():
    out = tempfile.mkdtemp(prefix="connect-facade-py-")
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    source = os.path.join(PROTO, "amazonconnect", "v1", "contact_service.proto")
    status = protoc.main(
        ["protoc", f"-I{PROTO}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}", source]
    )
    if status != 0:
        sys.exit(f"protoc failed on {source}")
    sys.path.insert(0, out)
    from amazonconnect.v1 import contact_service_pb2, contact_service_pb2_grpc

    return contact_service_pb2, contact_service_pb2_grpc


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--endpoint-url", required=True)
    parser.add_argument("--workers", type=int, default=64)
    args = parser.parse_args()

    pb2, pb2_grpc = generate_stubs()
    rehydration = {
        pb2.REHYDRATION_TYPE_ENTIRE_PAST_SESSION: "ENTIRE_PAST_SESSION",
        pb2.REHYDRATION_TYPE_FROM_SEGMENT: "FROM_SEGMENT",
    }
    # One client for the process (boto3 clients are thread-safe), with a pool as large as the workers.
    client = boto3.client(
        "connect",
        region_name="us-east-1",
        endpoint_url=args.endpoint_url,
        aws_access_key_id="AKIDBENCH",
        aws_secret_access_key="bench-secret",
        config=botocore.config.Config(max_pool_connections=args.workers),
    )

    class ContactService(pb2_grpc.ContactServiceServicer):
        def CreatePersistentContactAssociation(self, request, context):
            token = request.client_token or str(uuid.uuid4())
            try:
                answer = client.create_persistent_contact_association(
                    InstanceId=request.instance_id,
                    InitialContactId=request.initial_contact_id,
                    RehydrationType=rehydration.get(request.rehydration_type, "UNSPECIFIED"),
                    SourceContactId=request.source_contact_id,
                    ClientToken=token,
                )
            except client.exceptions.ClientError as err:
                code = err.response.get("Error", {}).get("Code", "")
                context.abort(CODES.get(code, grpc.StatusCode.INTERNAL), str(err))
            return pb2.CreatePersistentContactAssociationResponse(
                continued_from_contact_id=answer["ContinuedFromContactId"], client_token=token
            )

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers))
    pb2_grpc.add_ContactServiceServicer_to_server(ContactService(), server)
    port = server.add_insecure_port(args.listen)
    server.start()
    host = args.listen.rsplit(":", 1)[0]
    print(f"{host}:{port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Proves the Connect simulator speaks the real wire format, with a client nobody here wrote: boto3.

Starts `connect-facade simulate` (the binary given as the first argument) on a free port, with fault
rules for three instances, then calls CreatePersistentContactAssociation through boto3 for a success and
for each of the six errors the API model lists, checking boto3's own exception class, HTTP status,
error code and request id for each.
"""

import socket
import subprocess
import sys

import boto3
from botocore.config import Config

INSTANCE = "11111111-2222-3333-4444-555555555555"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(binary):
    port = free_port()
    faults = [
        "kind=error,code=AccessDeniedException,instance_id=denied-instance",
        "kind=error,code=ThrottlingException,instance_id=throttled-instance",
        "kind=error,code=InternalServiceException,instance_id=broken-instance",
    ]
    args = [binary, "simulate", "--listen", f"127.0.0.1:{port}"]
    for fault in faults:
        args += ["--fault", fault]
    sim = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        url = sim.stdout.readline().split()[-1]
        client = boto3.client(
            "connect",
            region_name="us-east-1",
            endpoint_url=url,
            aws_access_key_id="AKIDBOTO3CHECK",
            aws_secret_access_key="boto3-check-secret",
            config=Config(retries={"total_max_attempts": 1}),
        )
        return run_checks(client)
    finally:
        sim.terminate()
        sim.wait(timeout=10)


def run_checks(client):
    failures = []

    def call(**overrides):
        params = dict(
            InstanceId=INSTANCE,
            InitialContactId="new-chat-1",
            RehydrationType="ENTIRE_PAST_SESSION",
            SourceContactId="C1",
            ClientToken="boto3-check-token",
        )
        params.update(overrides)
        return client.create_persistent_contact_association(**params)

    answer = call()
    if answer.get("ContinuedFromContactId") != "C3" or not answer["ResponseMetadata"].get("RequestId"):
        failures.append(f"success: unexpected answer {answer}")
    else:
        print("ok   success: ContinuedFromContactId=C3, RequestId", answer["ResponseMetadata"]["RequestId"])

    cases = [
        ("InvalidRequestException", 400, dict(ClientToken="another-token")),
        ("InvalidParameterException", 400, dict(InitialContactId="new-chat-2", RehydrationType="SOMETIMES")),
        ("ResourceNotFoundException", 404, dict(InstanceId="no-such-instance")),
        ("AccessDeniedException", 403, dict(InstanceId="denied-instance")),
        ("ThrottlingException", 429, dict(InstanceId="throttled-instance")),
        ("InternalServiceException", 500, dict(InstanceId="broken-instance")),
    ]
    for code, http_status, overrides in cases:
        exception_class = getattr(client.exceptions, code)
        try:
            call(**overrides)
            failures.append(f"{code}: the call succeeded")
        except exception_class as err:
            got_status = err.response["ResponseMetadata"]["HTTPStatusCode"]
            request_id = err.response["ResponseMetadata"].get("RequestId")
            message = err.response["Error"].get("Message")
            if err.response["Error"]["Code"] != code or got_status != http_status or not request_id or not message:
                failures.append(f"{code}: unexpected error response {err.response}")
            else:
                print(f"ok   {code}: HTTP {got_status}, boto3 raised {type(err).__name__}: {message}")
        except Exception as err:  # noqa: BLE001 - any other exception is the failure being reported
            failures.append(f"{code}: boto3 raised {type(err).__name__} instead: {err}")

    for failure in failures:
        print("FAIL", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "target/debug/connect-facade"))

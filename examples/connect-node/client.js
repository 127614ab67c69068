// Calling connect-facade from Node with the official Connect client: @connectrpc/connect with the
// Connect protocol (JSON or binary) or gRPC-Web, over HTTP/1.1. No gRPC stack, no code generation:
// the contract comes from the published descriptor image, proto/published.binpb.
//
//   npm install && node client.js localhost:50051 [connect-json|connect-binary|grpc-web]
//
// Shows a successful call; reading a RESOURCE_EXHAUSTED (or UNAVAILABLE) answer's google.rpc details
// (RetryInfo: how long to wait; ErrorInfo: the client_token the facade used); retrying with that
// token, so a retry can never apply the association twice; and a validation error's BadRequest.
'use strict';

const fs = require('fs');
const path = require('path');
const { createClient, ConnectError, Code } = require('@connectrpc/connect');
const { createConnectTransport, createGrpcWebTransport } = require('@connectrpc/connect-node');
const { createFileRegistry, fromBinary } = require('@bufbuild/protobuf');
const { FileDescriptorSetSchema } = require('@bufbuild/protobuf/wkt');
const protobuf = require('protobufjs');
const googleProtos = require('google-proto-files');

const INSTANCE = '11111111-2222-3333-4444-555555555555';

// The service, from the contract's published image (a FileDescriptorSet).
const image = fs.readFileSync(path.join(__dirname, '..', '..', 'proto', 'published.binpb'));
const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, image));
const ContactService = registry.getService('amazonconnect.v1.ContactService');

// The google.rpc detail messages, to decode the error details the facade sends.
const rpcTypes = new protobuf.Root();
rpcTypes.resolvePath = (_origin, target) => path.join(googleProtos.getProtoPath(), '..', target);
rpcTypes.loadSync(['google/rpc/error_details.proto'], { keepCase: true });

function details(error) {
  const found = {};
  for (const detail of error.details) {
    // Details the client has no schema for arrive as { type, value } (the message's bytes).
    const type = rpcTypes.lookupType(detail.desc ? detail.desc.typeName : detail.type);
    found[type.name] = type.toObject(type.decode(detail.value), { defaults: true, longs: Number });
  }
  return found;
}

// Connect's code names are camel case (ResourceExhausted); gRPC's are upper snake case.
function codeName(code) {
  return Code[code].replace(/([a-z])([A-Z])/g, '$1_$2').toUpperCase();
}

const RETRYABLE = new Set([Code.ResourceExhausted, Code.Unavailable]);

async function associate(client, request, attempts = 5) {
  for (let attempt = 1; attempt <= attempts; attempt++) {
    try {
      const response = await client.createPersistentContactAssociation(request, { timeoutMs: 10_000 });
      console.log(`call ${attempt}: OK continued_from_contact_id=${response.continuedFromContactId} ` +
        `client_token=${response.clientToken}`);
      return response;
    } catch (caught) {
      const error = ConnectError.from(caught);
      if (!RETRYABLE.has(error.code)) throw error;
      const found = details(error);
      const delay = found.RetryInfo
        ? Number(found.RetryInfo.retry_delay.seconds) + found.RetryInfo.retry_delay.nanos / 1e9 : 1;
      const token = (found.ErrorInfo && found.ErrorInfo.metadata.clientToken) || '';
      console.log(`call ${attempt}: ${codeName(error.code)} (${found.ErrorInfo ? found.ErrorInfo.reason : '?'}): ` +
        `retry in ${delay.toFixed(3)}s with client_token=${token}`);
      await new Promise((resume) => setTimeout(resume, delay * 1000));
      // The same token: if the failed attempt reached AWS after all, this one replays its answer.
      request = { ...request, clientToken: token };
    }
  }
  throw new Error('gave up');
}

function transport(target, kind) {
  const baseUrl = `http://${target}`;
  switch (kind) {
    case 'connect-json': return createConnectTransport({ baseUrl, httpVersion: '1.1' });
    case 'connect-binary': return createConnectTransport({ baseUrl, httpVersion: '1.1', useBinaryFormat: true });
    case 'grpc-web': return createGrpcWebTransport({ baseUrl, httpVersion: '1.1' });
    default: throw new Error(`unknown transport ${kind}: connect-json, connect-binary or grpc-web`);
  }
}

async function main() {
  const target = process.argv[2] || 'localhost:50051';
  const client = createClient(ContactService, transport(target, process.argv[3] || 'connect-json'));
  await associate(client, {
    instanceId: INSTANCE,
    initialContactId: 'new-chat-1',
    rehydrationType: 1, // REHYDRATION_TYPE_ENTIRE_PAST_SESSION
    sourceContactId: 'C1',
  });
  try {
    await client.createPersistentContactAssociation({ instanceId: INSTANCE });
  } catch (caught) {
    const error = ConnectError.from(caught);
    const fields = details(error).BadRequest.field_violations.map((v) => v.field);
    console.log(`invalid: ${codeName(error.code)} fields=${fields.join(',')}`);
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});

// Calling connect-facade from Node with @grpc/grpc-js, the contract loaded from proto/ at start.
//
//   npm install && node client.js localhost:50051
//
// Shows a successful call; reading a RESOURCE_EXHAUSTED (or UNAVAILABLE) answer's google.rpc details
// (RetryInfo: how long to wait; ErrorInfo: the client_token the facade used); retrying with that
// token, so a retry can never apply the association twice; and a validation error's BadRequest.
// Last, the same with no code at all: gRPC's built-in retry (the service config's retryPolicy,
// RETRY_POLICY below) retries RESOURCE_EXHAUSTED and UNAVAILABLE, waiting as the facade's
// grpc-retry-pushback-ms trailer says (gRFC A6). It needs no client_token: the facade remembers each
// association by its contact, so a retry of one that was made after all is answered OK.
//
// With CONNECT_FACADE_TOKEN_FILE set (a facade with an auth file), each call carries that file's
// token as `authorization: Bearer …`, read afresh at every call: inside Kubernetes it is the pod's
// projected service account token, which the kubelet rotates before it expires.
'use strict';

const fs = require('fs');

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');
const googleProtos = require('google-proto-files');

const PROTO_ROOT = path.join(__dirname, '..', '..', 'proto');
const INSTANCE = '11111111-2222-3333-4444-555555555555';

// gRPC's own retry, as a service config: the facade's pushback trailer sets each wait.
const RETRY_POLICY = {
  methodConfig: [{
    name: [{ service: 'amazonconnect.v1.ContactService' }],
    retryPolicy: {
      maxAttempts: 4,
      initialBackoff: '0.2s',
      maxBackoff: '2s',
      backoffMultiplier: 2,
      retryableStatusCodes: ['RESOURCE_EXHAUSTED', 'UNAVAILABLE'],
    },
  }],
};

const definition = protoLoader.loadSync('amazonconnect/v1/contact_service.proto', {
  includeDirs: [PROTO_ROOT],
  keepCase: true,
  enums: String,
  defaults: true,
});
const { ContactService } = grpc.loadPackageDefinition(definition).amazonconnect.v1;

// google.rpc.Status and its detail messages, to decode the grpc-status-details-bin trailer.
const rpcTypes = new protobuf.Root();
rpcTypes.resolvePath = (_origin, target) => path.join(googleProtos.getProtoPath(), '..', target);
rpcTypes.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto'], { keepCase: true });

function details(error) {
  const found = {};
  const [bin] = error.metadata ? error.metadata.get('grpc-status-details-bin') : [];
  if (!bin) return found;
  const status = rpcTypes.lookupType('google.rpc.Status').decode(bin);
  for (const any of status.details) {
    const name = any.type_url.split('/').pop();
    found[name.split('.').pop()] = rpcTypes.lookupType(name).toObject(
      rpcTypes.lookupType(name).decode(any.value), { defaults: true, longs: Number });
  }
  return found;
}

// e.g. /var/run/secrets/connect-facade/token, a projected volume with `audience: connect-facade`.
const TOKEN_FILE = process.env.CONNECT_FACADE_TOKEN_FILE;

// The call's metadata: the token file's current content. Read at each call, never cached for the
// process's life: a projected token lasts an hour and the kubelet replaces the file well before.
function credentials() {
  const metadata = new grpc.Metadata();
  if (TOKEN_FILE) {
    metadata.set('authorization', `Bearer ${fs.readFileSync(TOKEN_FILE, 'utf8').trim()}`);
  }
  return metadata;
}

function call(client, request) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + 10_000);
    client.CreatePersistentContactAssociation(request, credentials(), { deadline }, (error, response) =>
      error ? reject(error) : resolve(response));
  });
}

const RETRYABLE = new Set([grpc.status.RESOURCE_EXHAUSTED, grpc.status.UNAVAILABLE]);

async function associate(client, request, attempts = 5) {
  for (let attempt = 1; attempt <= attempts; attempt++) {
    try {
      const response = await call(client, request);
      console.log(`call ${attempt}: OK continued_from_contact_id=${response.continued_from_contact_id} ` +
        `client_token=${response.client_token}`);
      return response;
    } catch (error) {
      if (!RETRYABLE.has(error.code)) throw error;
      const found = details(error);
      const delay = found.RetryInfo
        ? Number(found.RetryInfo.retry_delay.seconds) + found.RetryInfo.retry_delay.nanos / 1e9 : 1;
      const token = (found.ErrorInfo && found.ErrorInfo.metadata.clientToken) || '';
      console.log(`call ${attempt}: ${grpc.status[error.code]} (${found.ErrorInfo ? found.ErrorInfo.reason : '?'}): ` +
        `retry in ${delay.toFixed(3)}s with client_token=${token}`);
      await new Promise((resume) => setTimeout(resume, delay * 1000));
      // The same token: if the failed attempt reached AWS after all, this one replays its answer.
      request = { ...request, client_token: token };
    }
  }
  throw new Error('gave up');
}

async function main() {
  const target = process.argv[2] || 'localhost:50051';
  const client = new ContactService(target, grpc.credentials.createInsecure());
  await associate(client, {
    instance_id: INSTANCE,
    initial_contact_id: 'new-chat-1',
    rehydration_type: 'REHYDRATION_TYPE_ENTIRE_PAST_SESSION',
    source_contact_id: 'C1',
  });
  try {
    await call(client, { instance_id: INSTANCE });
  } catch (error) {
    const fields = details(error).BadRequest.field_violations.map((v) => v.field);
    console.log(`invalid: ${grpc.status[error.code]} fields=${fields.join(',')}`);
  }
  client.close();
  const retrying = new ContactService(target, grpc.credentials.createInsecure(), {
    'grpc.service_config': JSON.stringify(RETRY_POLICY),
  });
  const response = await call(retrying, {
    instance_id: INSTANCE,
    initial_contact_id: 'new-chat-2',
    rehydration_type: 'REHYDRATION_TYPE_FROM_SEGMENT',
    source_contact_id: 'C2',
  });
  console.log(`built-in retry: OK continued_from_contact_id=${response.continued_from_contact_id}`);
  retrying.close();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});

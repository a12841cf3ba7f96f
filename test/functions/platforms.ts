/**
 * Test functions that behave like the function platforms fngate's serverless plugins call:
 *
 *   aws        an AWS endpoint that checks SigV4 (Function URL / API Gateway with IAM auth). Every request with an
 *              `Authorization: AWS4-HMAC-SHA256 ...` header is verified with the official `@smithy/signature-v4`
 *              (an implementation independent of the gateway's aws4fetch) and `x-amz-content-sha256` against the
 *              body it received. Answers 200 JSON {verified, reason, method, path, query, signedHeaders, headers,
 *              bodySha256, bodyLength}; `verified` is null without a SigV4 header. Credentials: {@link AWS_KEYS}.
 *   lambda     answers what a Lambda function answers through the Invoke API (proxy-integration JSON), by the
 *              last path segment: `ok`, `multi`, `base64`, `no-status`, `malformed`, `huge-headers`,
 *              `bad-base64`, `bad-status`, `fn-error` (X-Amz-Function-Error), `not-object`.
 *   openwhisk  OpenWhisk's `POST /api/v1/namespaces/<ns>/actions/[<pkg>/]<action>?blocking=true&result=..`
 *              endpoint with Basic auth ({@link OPENWHISK_TOKEN}) and the actions of APISIX's openwhisk.t
 *              (`test-params`, `pkg/testpkg`, `test-statuscode`, `test-headers`, `test-body`) plus `echo` (the
 *              request it got, as `body`), `no-result` (202 with only an activationId, as a blocking call that
 *              ran past OpenWhisk's wait), `not-json`, `huge-headers`, `null-statuscode`.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Sha256 } from '@aws-crypto/sha256-js';
import { SignatureV4 } from '@smithy/signature-v4';

/** Access key → secret key the `aws` function accepts (APISIX aws-lambda.t TEST 9 uses KEY1/KeySecret). */
export const AWS_KEYS: Record<string, string> = {
  KEY1: 'KeySecret',
  AKIDEXAMPLE: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY',
  AKIALEAKCHECK0000001: 'leak-check-secret-0fd2c9a7',
};

/** The service token of APISIX's openwhisk.t (OpenWhisk's guest key). */
export const OPENWHISK_TOKEN =
  '23bc46b1-71f6-4ed5-8c54-816aa4f8c502:123zO3xZCLrMN6v2BKK1dXYFpXlPkccOFqm12CdAsMgRU4VrNZ9lyGVCGuMDGIwP';

async function readAll(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function json(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
  const body = Buffer.from(JSON.stringify(value));
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': body.length, ...headers });
  res.end(body);
}

const AUTH = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$/;

/** The raw query as the oracle wants it: decoded names → decoded value(s); a valueless arg is `''`. */
function parseQuery(raw: string): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const part of raw.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const k = decodeURIComponent(eq < 0 ? part : part.slice(0, eq));
    const val = decodeURIComponent(eq < 0 ? '' : part.slice(eq + 1));
    const prev = out[k];
    out[k] = prev === undefined ? val : Array.isArray(prev) ? [...prev, val] : [prev, val];
  }
  return out;
}

/** Verifies a SigV4-signed request with @smithy/signature-v4; the reason it fails, or undefined. */
export async function verifySigV4(
  req: { method?: string; url?: string; headers: Record<string, string | string[] | undefined> },
  body: Buffer,
): Promise<string | undefined> {
  const auth = String(req.headers.authorization ?? '');
  const m = AUTH.exec(auth);
  if (!m) return `malformed Authorization: ${auth}`;
  const [, key, date, region, service, signedList, signature] = m as unknown as string[];
  const secret = AWS_KEYS[key!];
  if (!secret) return `unknown access key ${key}`;
  const amzDate = req.headers['x-amz-date'];
  if (typeof amzDate !== 'string' || !amzDate.startsWith(date!)) return 'x-amz-date missing or not of the scope date';
  const bodyHash = createHash('sha256').update(body).digest('hex');
  const claimed = req.headers['x-amz-content-sha256'];
  if (claimed !== undefined && claimed !== bodyHash) return `x-amz-content-sha256 ${claimed} is not the hash of the body received (${bodyHash})`;
  const signed = signedList!.split(';');
  if (!signed.includes('host')) return 'host is not signed';
  const headers: Record<string, string> = {};
  for (const name of signed) {
    const value = req.headers[name];
    if (value === undefined) return `signed header ${name} was not received`;
    headers[name] = Array.isArray(value) ? value.join(',') : value;
  }
  const rawUrl = req.url ?? '/';
  const q = rawUrl.indexOf('?');
  const path = q < 0 ? rawUrl : rawUrl.slice(0, q);
  const query = q < 0 ? {} : parseQuery(rawUrl.slice(q + 1));
  const signer = new SignatureV4({
    credentials: { accessKeyId: key!, secretAccessKey: secret },
    region: region!,
    service: service!,
    sha256: Sha256,
  });
  const when = new Date(
    Date.UTC(+amzDate.slice(0, 4), +amzDate.slice(4, 6) - 1, +amzDate.slice(6, 8), +amzDate.slice(9, 11), +amzDate.slice(11, 13), +amzDate.slice(13, 15)),
  );
  const out = await signer.sign(
    {
      method: req.method ?? 'GET',
      protocol: 'http:',
      hostname: String(headers.host ?? ''),
      path,
      query,
      headers: { ...headers, 'x-amz-content-sha256': claimed ?? bodyHash },
      body,
    },
    { signingDate: when, signableHeaders: new Set(signed) },
  );
  const expected = /Signature=([0-9a-f]{64})/.exec(String(out.headers.authorization))?.[1];
  const expectedSigned = /SignedHeaders=([^,]+)/.exec(String(out.headers.authorization))?.[1];
  if (expectedSigned !== signedList) return `the oracle signed ${expectedSigned}, the request ${signedList}`;
  return expected === signature ? undefined : `signature mismatch (oracle ${expected})`;
}

export async function aws(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const body = await readAll(req);
  const rawUrl = req.url ?? '/';
  const q = rawUrl.indexOf('?');
  const hasSig = (req.headers.authorization ?? '').startsWith('AWS4-HMAC-SHA256');
  const reason = hasSig ? await verifySigV4(req, body) : undefined;
  json(res, 200, {
    verified: hasSig ? reason === undefined : null,
    reason: reason ?? null,
    method: req.method,
    path: q < 0 ? rawUrl : rawUrl.slice(0, q),
    query: q < 0 ? '' : rawUrl.slice(q + 1),
    signedHeaders: /SignedHeaders=([^,]+)/.exec(req.headers.authorization ?? '')?.[1] ?? null,
    headers: req.headers,
    bodySha256: createHash('sha256').update(body).digest('hex'),
    bodyLength: body.length,
  });
}

export async function lambda(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
  await readAll(req);
  const what = url.pathname.split('/').filter(Boolean).at(-1) ?? '';
  switch (what) {
    case 'ok':
      return json(res, 200, { statusCode: 201, headers: { 'content-type': 'text/plain', 'x-fn': 'one' }, body: 'created', isBase64Encoded: false });
    case 'multi':
      return json(res, 200, {
        statusCode: 200,
        headers: { 'x-single': 's' },
        multiValueHeaders: { 'x-multi': ['a', 'b'] },
        cookies: ['a=1; Path=/', 'b=2'],
        body: '{"ok":true}',
      });
    case 'base64':
      return json(res, 200, { statusCode: 200, headers: { 'content-type': 'application/octet-stream' }, body: Buffer.from([0, 1, 2, 255]).toString('base64'), isBase64Encoded: true });
    case 'no-status':
      return json(res, 200, { hello: 'world' });
    case 'malformed': {
      const b = Buffer.from('{"statusCode": 200, "body": "cut');
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': b.length });
      return void res.end(b);
    }
    case 'huge-headers': {
      const headers: Record<string, string> = {};
      for (let i = 0; i < 100_000; i++) headers[`x-h${i}`] = 'v';
      return json(res, 200, { statusCode: 200, headers, body: 'x' });
    }
    case 'bad-base64':
      return json(res, 200, { statusCode: 200, body: 'this is *not* base64!', isBase64Encoded: true });
    case 'bad-status':
      return json(res, 200, { statusCode: 'two hundred', body: 'x' });
    case 'not-object':
      return json(res, 200, [1, 2, 3]);
    case 'fn-error':
      return json(res, 200, { errorMessage: 'boom', errorType: 'Error' }, { 'x-amz-function-error': 'Unhandled' });
    default:
      return json(res, 404, { message: `no such case ${what}` });
  }
}

const OW_PATH = /^\/api\/v1\/namespaces\/([^/]+)\/actions\/(?:([^/]+)\/)?([^/]+)$/;

export async function openwhisk(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
  const raw = await readAll(req);
  const m = OW_PATH.exec(url.pathname);
  if (req.method !== 'POST' || !m) return json(res, 404, { error: 'The requested resource does not exist.', code: 'x' });
  if (req.headers.authorization !== `Basic ${Buffer.from(OPENWHISK_TOKEN).toString('base64')}`) {
    return json(res, 401, { error: 'The supplied authentication is invalid', code: 'x' });
  }
  let params: Record<string, unknown> = {};
  if (raw.length > 0) {
    try {
      const p = JSON.parse(raw.toString('utf8'));
      if (typeof p !== 'object' || p === null || Array.isArray(p)) throw new Error('not an object');
      params = p;
    } catch (e) {
      return json(res, 400, { error: `The request content was malformed:\n${(e as Error).message}`, code: 'x' });
    }
  }
  const [, ns, pkg, action] = m.map((s) => (s === undefined ? s : decodeURIComponent(s)));
  const name = pkg === undefined ? action! : `${pkg}/${action}`;
  const result = url.searchParams.get('result') === 'true';
  const answer = (value: Record<string, unknown>) =>
    result
      ? json(res, 200, value)
      : json(res, 200, { activationId: 'a1b2c3', namespace: ns, name: action, response: { result: value, status: 'success', success: true } });
  switch (name) {
    case 'test-params':
    case 'pkg/testpkg':
      return answer({ hello: (params.name as string | undefined) ?? 'test' });
    case 'test-statuscode':
      return answer({ statusCode: 407 });
    case 'test-headers':
      return answer({ headers: { test: 'header' } });
    case 'test-body':
      return answer({ body: { test: 'body' } });
    case 'echo':
      return answer({
        body: { method: req.method, namespace: ns, package: pkg ?? null, action, query: url.search.slice(1), headers: req.headers, params },
      });
    case 'no-result':
      return json(res, 202, { activationId: '5f0e6b1b4b7a4d2a8e6b1b4b7a4d2a8e' });
    case 'not-json': {
      res.writeHead(200, { 'content-type': 'text/plain' });
      return void res.end('this is not json');
    }
    case 'huge-headers': {
      const headers: Record<string, string> = {};
      for (let i = 0; i < 100_000; i++) headers[`x-h${i}`] = 'v';
      return answer({ headers, body: 'x' });
    }
    case 'null-statuscode':
      return answer({ statusCode: 'teapot', body: 'x' });
    default:
      return json(res, 404, { error: 'The requested resource does not exist.', code: 'x' });
  }
}

/**
 * The function platforms through real HTTP, on every runtime: aws-lambda (API key, SigV4 checked by
 * @smithy/signature-v4 in the `aws` test function, the Lambda proxy-integration mapping), azure-functions (keys
 * and plugin_metadata master keys), openwhisk (APISIX's t/plugin/openwhisk.t against an OpenWhisk-like endpoint),
 * and the bad answers a function may give (502, a log line, no crash, no credentials in logs or error bodies).
 * The gateway runs with DATA_ENCRYPTION_KEY, so every credential below is stored encrypted and must reach the
 * function decrypted (route fields and azure-functions' plugin_metadata `master_apikey`).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { describe, test } from 'node:test';
import type { FunctionServers } from '../functions/functions.ts';
import { OPENWHISK_TOKEN } from '../functions/platforms.ts';
import { type GatewayUnderTest, gatewayPerFile, RUNTIME } from './harness.ts';

let gw: GatewayUnderTest;
let fn: FunctionServers;
gatewayPerFile(
  (g, f) => {
    gw = g;
    fn = f;
  },
  { env: { DATA_ENCRYPTION_KEY: 'fngate-fn-key-16' } },
);

const IAM = { accesskey: 'KEY1', secretkey: 'KeySecret' };

// biome-ignore lint/suspicious/noExplicitAny: test convenience for JSON bodies
async function json(path: string, init?: RequestInit): Promise<{ status: number; headers: Headers; body: any }> {
  const res = await gw.fetch(path, init);
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {}
  return { status: res.status, headers: res.headers, body };
}

/** Waits (up to 10 s) for the gateway's output to show `re`: workerd's log reaches us a little later. */
async function logShows(re: RegExp): Promise<void> {
  const until = Date.now() + 10_000;
  while (!re.test(gw.proc.stdout() + gw.proc.stderr())) {
    if (Date.now() > until) assert.fail(`no log line ${re} in:\n${gw.proc.stdout()}${gw.proc.stderr()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A chunked upload (no Content-Length) sent in pieces, with a pause between them. */
function chunkedPost(path: string, parts: Buffer[]): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(path, gw.proxyUrl);
    const req = httpRequest(u, { method: 'POST', headers: { 'transfer-encoding': 'chunked', 'content-type': 'application/octet-stream' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    let i = 0;
    const next = () => {
      if (i === parts.length) return req.end();
      req.write(parts[i++]);
      setTimeout(next, 20);
    };
    next();
  });
}

describe('aws-lambda (t/plugin/aws-lambda.t)', () => {
  test('schema: iam needs accesskey and secretkey; defaults are filled', async () => {
    const bad = await gw.admin('PUT', '/routes/aws', {
      uri: '/aws',
      plugins: { 'aws-lambda': { function_uri: `${fn.urls.aws}/generic`, authorization: { iam: { accesskey: 'k' } } } },
    });
    assert.equal(bad.status, 400);
    assert.match(bad.text, /secretkey/);
    const missing = await gw.admin('PUT', '/routes/aws', { uri: '/aws', plugins: { 'aws-lambda': { timeout: 3000 } } });
    assert.equal(missing.status, 400);
    assert.match(missing.json.error_msg, /property "function_uri" is required/);
  });

  test('a plain invocation passes through; apikey becomes x-api-key unless the client sent one', async () => {
    await gw.putRoute('aws', { uri: '/aws', plugins: { 'aws-lambda': { function_uri: `${fn.urls.aws}/generic` } } });
    let r = await json('/aws?x=1');
    assert.equal(r.status, 200);
    assert.equal(r.body.verified, null);
    assert.equal(r.body.path, '/generic');
    assert.equal(r.body.query, 'x=1');
    await gw.putRoute('aws', {
      uri: '/aws',
      plugins: { 'aws-lambda': { function_uri: `${fn.urls.aws}/generic`, authorization: { apikey: 'testkey', iam: IAM } } },
    });
    r = await json('/aws');
    assert.equal(r.body.headers['x-api-key'], 'testkey');
    // The API key decided: no signature on top (APISIX).
    assert.equal(r.body.verified, null);
    r = await json('/aws', { headers: { 'x-api-key': 'client-key' } });
    assert.equal(r.body.headers['x-api-key'], 'client-key');
    // The client's own x-api-key: SigV4 next.
    assert.equal(r.body.verified, true, r.body.reason);
  });

  test('SigV4: the query APISIX sends (TEST 9) and a signature the independent oracle accepts', async () => {
    await gw.putRoute('aws', { uri: '/aws', plugins: { 'aws-lambda': { function_uri: `${fn.urls.aws}/generic`, authorization: { iam: IAM } } } });
    const r = await json('/aws?with%20space=a%2Fb%20c&multi=m2&multi=m1&flag&a=*&a-=x');
    assert.equal(r.status, 200);
    assert.equal(r.body.query, 'a=%2A&a-=x&flag=&multi=m1&multi=m2&with%20space=a%2Fb%20c');
    assert.equal(r.body.verified, true, r.body.reason);
    assert.match(r.body.headers.authorization, /^AWS4-HMAC-SHA256 Credential=KEY1\/\d{8}\/us-east-1\/execute-api\/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=[0-9a-f]{64}$/);
    assert.match(r.body.headers['x-amz-date'], /^\d{8}T\d{6}Z$/);
  });

  test('SigV4 over awkward paths and queries (spaces, %2F, repeated and valueless args, unicode), region and service', async () => {
    await gw.putRoute('aws', {
      uri: '/aws/*',
      plugins: {
        'aws-lambda': {
          function_uri: `${fn.urls.aws}/base%20dir/`,
          authorization: { iam: { ...IAM, aws_region: 'eu-west-1', service: 'lambda' } },
        },
      },
    });
    const paths = [
      '/aws/plain',
      '/aws/with%20space/and%2Fslash',
      '/aws/%C3%A9t%C3%A9/%E2%9C%93',
      "/aws/it's(a)*!~test",
      '/aws/x?b=2&a=1&a=0&empty=&flag&%C3%A9=%E2%9C%93&plus=a+b&enc=%2F%3F%26%3D',
      '/aws/q?=novalue&&x=%25',
    ];
    for (const p of paths) {
      const r = await json(p);
      assert.equal(r.status, 200, p);
      assert.equal(r.body.verified, true, `${p}: ${r.body.reason}`);
      assert.match(r.body.headers.authorization, /\/eu-west-1\/lambda\/aws4_request/);
    }
    const q = await json('/aws/x?b=2&a=1&a=0&flag');
    assert.equal(q.body.query, 'a=0&a=1&b=2&flag=');
  });

  test('SigV4 covers the body: a POST and a streamed (chunked) upload carry its SHA-256', async () => {
    await gw.putRoute('aws', { uri: '/aws', plugins: { 'aws-lambda': { function_uri: `${fn.urls.aws}/generic`, authorization: { iam: IAM } } } });
    const body = 'hello lambda ✓';
    const r = await json('/aws', { method: 'POST', body });
    assert.equal(r.body.verified, true, r.body.reason);
    assert.equal(r.body.headers['x-amz-content-sha256'], createHash('sha256').update(body).digest('hex'));
    const parts = [Buffer.alloc(70_000, 1), Buffer.from('middle'), Buffer.alloc(1000, 2)];
    const up = await chunkedPost('/aws', parts);
    assert.equal(up.status, 200, up.text);
    const got = JSON.parse(up.text);
    assert.equal(got.verified, true, got.reason);
    assert.equal(got.bodyLength, 71_006);
    assert.equal(got.bodySha256, createHash('sha256').update(Buffer.concat(parts)).digest('hex'));
    assert.equal(got.headers['transfer-encoding'] === undefined || got.headers['content-length'] === undefined, true);
  });

  test('SigV4: an upload over max_req_body_size is refused with 413 before anything is signed', async () => {
    await gw.putRoute('aws', {
      uri: '/aws',
      plugins: { 'aws-lambda': { function_uri: `${fn.urls.aws}/generic`, max_req_body_size: 1000, authorization: { iam: IAM } } },
    });
    const up = await chunkedPost('/aws', [Buffer.alloc(800), Buffer.alloc(800)]);
    assert.equal(up.status, 413);
  });

  test('SigV4 signs the method a plugin rewrote (proxy-rewrite method)', async () => {
    await gw.putRoute('aws', {
      uri: '/aws',
      plugins: {
        'proxy-rewrite': { method: 'PUT' },
        'aws-lambda': { function_uri: `${fn.urls.aws}/generic`, authorization: { iam: IAM } },
      },
    });
    const r = await json('/aws?a=1', { method: 'POST', body: 'payload' });
    assert.equal(r.status, 200);
    assert.equal(r.body.method, 'PUT');
    assert.equal(r.body.verified, true, r.body.reason);
  });

  test('SigV4 signs the Host that is sent: the one a plugin set (proxy-rewrite host); on Workers the URL\'s', async () => {
    await gw.putRoute('aws', {
      uri: '/aws',
      plugins: {
        'proxy-rewrite': { host: 'fn.example.internal' },
        'aws-lambda': { function_uri: `${fn.urls.aws}/generic`, authorization: { iam: IAM } },
      },
    });
    const r = await json('/aws?a=1');
    assert.equal(r.status, 200);
    // A Worker's fetch sends the URL's authority whatever Host a plugin set (README runtime table).
    assert.equal(r.body.headers.host, RUNTIME === 'workerd' ? new URL(fn.urls.aws).host : 'fn.example.internal');
    assert.equal(r.body.verified, true, r.body.reason);
  });

  test("a client's own Authorization is not replaced by a signature", async () => {
    await gw.putRoute('aws', { uri: '/aws', plugins: { 'aws-lambda': { function_uri: `${fn.urls.aws}/generic`, authorization: { iam: IAM } } } });
    const r = await json('/aws', { headers: { authorization: 'Bearer mine' } });
    assert.equal(r.body.verified, null);
    assert.equal(r.body.headers.authorization, 'Bearer mine');
    assert.equal(r.body.headers['x-amz-date'], undefined);
  });

  test('proxy_integration_response maps statusCode, headers, multiValueHeaders, cookies, body, isBase64Encoded', async () => {
    await gw.putRoute('lambda', { uri: '/lambda/*', plugins: { 'aws-lambda': { function_uri: fn.urls.lambda, proxy_integration_response: true } } });
    let res = await gw.fetch('/lambda/ok');
    assert.equal(res.status, 201);
    assert.equal(res.headers.get('x-fn'), 'one');
    assert.equal(res.headers.get('content-type'), 'text/plain');
    assert.equal(await res.text(), 'created');
    res = await gw.fetch('/lambda/multi');
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-single'), 's');
    assert.equal(res.headers.get('x-multi'), 'a, b');
    assert.deepEqual(res.headers.getSetCookie(), ['a=1; Path=/', 'b=2']);
    assert.equal(await res.text(), '{"ok":true}');
    res = await gw.fetch('/lambda/base64');
    assert.deepEqual([...new Uint8Array(await res.arrayBuffer())], [0, 1, 2, 255]);
    res = await gw.fetch('/lambda/no-status');
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { hello: 'world' });
    // Without the opt-in the answer passes through as the function sent it.
    await gw.putRoute('lambda', { uri: '/lambda/*', plugins: { 'aws-lambda': { function_uri: fn.urls.lambda } } });
    res = await gw.fetch('/lambda/ok');
    assert.equal(res.status, 200);
    assert.equal((await res.json()).statusCode, 201);
  });
});

describe('bad answers: 502 with a clear body and a log line, never a crash', () => {
  const cases: [string, RegExp][] = [
    ['malformed', /not valid JSON/],
    ['huge-headers', /more than 200 headers/],
    ['bad-base64', /not base64 although "isBase64Encoded" is true/],
    ['bad-status', /"statusCode" is not an integer/],
    ['not-object', /not a JSON object/],
    ['fn-error', /the function failed: Unhandled/],
  ];
  test('Lambda proxy-integration answers that cannot be mapped', async () => {
    await gw.putRoute('lambda', { uri: '/lambda/*', plugins: { 'aws-lambda': { function_uri: fn.urls.lambda, proxy_integration_response: true } } });
    for (const [what, msg] of cases) {
      const r = await json(`/lambda/${what}`);
      assert.equal(r.status, 502, `${what}: ${JSON.stringify(r.body).slice(0, 300)}`);
      assert.match(r.body.error_msg, msg, what);
    }
    await logShows(/aws-lambda: the function's answer cannot be used: not valid JSON/);
    await logShows(/aws-lambda: the function failed/);
    // Still serving.
    assert.equal((await gw.fetch('/lambda/ok')).status, 201);
  });

  test('OpenWhisk: an activation with no result, a bad statusCode, a huge headers object (502); not JSON (503)', async () => {
    const ow = (action: string) => ({
      uri: '/ow',
      plugins: { openwhisk: { api_host: fn.urls.openwhisk, service_token: OPENWHISK_TOKEN, namespace: 'guest', action } },
    });
    await gw.putRoute('ow', ow('no-result'));
    let r = await json('/ow');
    assert.equal(r.status, 502);
    assert.match(r.body.error_msg, /activation has no result \(activation 5f0e6b1b4b7a4d2a8e6b1b4b7a4d2a8e\)/);
    await logShows(/openwhisk: the function's answer cannot be used: the OpenWhisk activation has no result/);
    await gw.putRoute('ow', ow('null-statuscode'));
    r = await json('/ow');
    assert.equal(r.status, 502);
    await gw.putRoute('ow', ow('huge-headers'));
    r = await json('/ow');
    assert.equal(r.status, 502);
    assert.match(r.body.error_msg, /more than 200 headers/);
    await gw.putRoute('ow', ow('not-json'));
    r = await json('/ow');
    assert.equal(r.status, 503);
    await logShows(/failed to process openwhisk action, err:/);
  });

  test('credentials appear neither in the gateway log nor in error bodies', async () => {
    const secret = 'leak-check-secret-0fd2c9a7';
    const access = 'AKIALEAKCHECK0000001';
    const apikey = 'apikey-leak-check-77aa';
    const iam = { accesskey: access, secretkey: secret };
    // Signed calls that fail every way: bad answer, refused connection, timeout.
    await gw.putRoute('leak1', { uri: '/leak1/*', plugins: { 'aws-lambda': { function_uri: fn.urls.lambda, proxy_integration_response: true, authorization: { iam } } } });
    await gw.putRoute('leak2', { uri: '/leak2', plugins: { 'aws-lambda': { function_uri: 'http://127.0.0.1:1/x', authorization: { iam } } } });
    await gw.putRoute('leak3', { uri: '/leak3', plugins: { 'azure-functions': { function_uri: 'http://127.0.0.1:1/x', authorization: { apikey } } } });
    await gw.putRoute('leak4', { uri: '/leak4', plugins: { 'aws-lambda': { function_uri: 'http://127.0.0.1:1/x', authorization: { apikey } } } });
    await gw.putRoute('leak5', {
      uri: '/leak5',
      plugins: { openwhisk: { api_host: 'http://127.0.0.1:1', service_token: OPENWHISK_TOKEN, namespace: 'guest', action: 'a' } },
    });
    const bodies: string[] = [];
    for (const p of ['/leak1/malformed', '/leak1/fn-error', '/leak2', '/leak3', '/leak4', '/leak5']) {
      const res = await gw.fetch(p);
      assert.ok(res.status >= 500, `${p} ${res.status}`);
      bodies.push(await res.text());
    }
    await logShows(/aws-lambda: the function failed/);
    await new Promise((r) => setTimeout(r, 300));
    const [, owKey] = OPENWHISK_TOKEN.split(':');
    const log = gw.proc.stdout() + gw.proc.stderr();
    for (const s of [secret, access, apikey, owKey!, Buffer.from(OPENWHISK_TOKEN).toString('base64')]) {
      assert.ok(!log.includes(s), `the log holds ${s}`);
      for (const b of bodies) assert.ok(!b.includes(s), `an error body holds ${s}: ${b}`);
    }
    // The Admin API shows the secrets only to the admin; with encryption off they are stored as given.
    const got = await gw.admin('GET', '/routes/leak1');
    assert.equal(got.status, 200);
  });
});

describe('azure-functions (t/plugin/azure-functions.t)', () => {
  test('TEST 1-2: schema', async () => {
    const missing = await gw.admin('PUT', '/routes/az', { uri: '/azure', plugins: { 'azure-functions': {} } });
    assert.equal(missing.status, 400);
    assert.match(missing.json.error_msg, /property "function_uri" is required/);
  });

  test('TEST 3-4: the call reaches the function; its headers come back', async () => {
    await gw.putRoute('az', { uri: '/azure', plugins: { 'azure-functions': { function_uri: `${fn.urls.echo}/httptrigger?set-header=x-extra-header:MUST` } } });
    const res = await gw.fetch('/azure');
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-extra-header'), 'MUST');
    assert.equal((await res.json()).url, '/httptrigger?set-header=x-extra-header:MUST');
  });

  test('TEST 7-8: authorization.apikey/clientid become x-functions-key/-clientid unless the client sent one', async () => {
    await gw.putRoute('az', {
      uri: '/azure',
      plugins: { 'azure-functions': { function_uri: `${fn.urls.echo}/httptrigger`, authorization: { apikey: 'test_key', clientid: 'test_client' } } },
    });
    let body = await (await gw.fetch('/azure')).json();
    assert.equal(body.headers['x-functions-key'], 'test_key');
    assert.equal(body.headers['x-functions-clientid'], 'test_client');
    body = await (await gw.fetch('/azure', { headers: { 'x-functions-key': 'must_not_be_overrided' } })).json();
    assert.equal(body.headers['x-functions-key'], 'must_not_be_overrided');
    assert.equal(body.headers['x-functions-clientid'], undefined);
    body = await (await gw.fetch('/azure', { headers: { 'x-functions-clientid': 'client-own' } })).json();
    assert.equal(body.headers['x-functions-key'], undefined);
    assert.equal(body.headers['x-functions-clientid'], 'client-own');
  });

  test('TEST 9: plugin_metadata master keys when the route has no authorization; the route conf wins over them', async () => {
    const md = await gw.admin('PUT', '/plugin_metadata/azure-functions', { master_apikey: 'metadata_key', master_clientid: 'metadata_client' });
    assert.ok(md.status === 200 || md.status === 201, md.text);
    // Stored (and answered by the PUT, as APISIX) encrypted; a GET shows it decrypted.
    assert.notEqual(md.json.value.master_apikey, 'metadata_key');
    assert.equal(md.json.value.master_clientid, 'metadata_client');
    assert.equal((await gw.admin('GET', '/plugin_metadata/azure-functions')).json.value.master_apikey, 'metadata_key');
    await gw.putRoute('az', { uri: '/azure', plugins: { 'azure-functions': { function_uri: `${fn.urls.echo}/httptrigger` } } });
    let body = await (await gw.fetch('/azure')).json();
    assert.equal(body.headers['x-functions-key'], 'metadata_key');
    assert.equal(body.headers['x-functions-clientid'], 'metadata_client');
    body = await (await gw.fetch('/azure', { headers: { 'x-functions-key': 'own' } })).json();
    assert.equal(body.headers['x-functions-key'], 'own');
    assert.equal(body.headers['x-functions-clientid'], undefined);
    await gw.putRoute('az', {
      uri: '/azure',
      plugins: { 'azure-functions': { function_uri: `${fn.urls.echo}/httptrigger`, authorization: { apikey: 'route_key' } } },
    });
    body = await (await gw.fetch('/azure')).json();
    assert.equal(body.headers['x-functions-key'], 'route_key');
    assert.equal(body.headers['x-functions-clientid'], undefined);
    // Only a master key: no empty clientid header is sent.
    await gw.admin('PUT', '/plugin_metadata/azure-functions', { master_apikey: 'only_key' });
    await gw.putRoute('az', { uri: '/azure', plugins: { 'azure-functions': { function_uri: `${fn.urls.echo}/httptrigger` } } });
    body = await (await gw.fetch('/azure')).json();
    assert.equal(body.headers['x-functions-key'], 'only_key');
    assert.equal(body.headers['x-functions-clientid'], undefined);
    await gw.admin('DELETE', '/plugin_metadata/azure-functions');
    body = await (await gw.fetch('/azure')).json();
    assert.equal(body.headers['x-functions-key'], undefined);
  });

  test('TEST 10-13: a route ending in * forwards the tail', async () => {
    await gw.putRoute('az', { uri: '/azure/*', plugins: { 'azure-functions': { function_uri: `${fn.urls.echo}/api` } } });
    assert.equal((await (await gw.fetch('/azure/httptrigger')).json()).url, '/api/httptrigger');
    assert.equal((await (await gw.fetch('/azure/http/trigger')).json()).url, '/api/http/trigger');
    assert.equal((await (await gw.fetch('/azure/')).json()).url, '/api/');
  });
});

describe('openwhisk (t/plugin/openwhisk.t)', () => {
  const conf = (extra: Record<string, unknown> = {}) => ({
    openwhisk: { api_host: fn.urls.openwhisk, service_token: OPENWHISK_TOKEN, namespace: 'guest', action: 'test-params', ...extra },
  });

  test('TEST 1-3: schema', async () => {
    const missing = await gw.admin('PUT', '/routes/ow', {
      uri: '/hello',
      plugins: { openwhisk: { service_token: OPENWHISK_TOKEN, namespace: 'guest', action: 'a' } },
    });
    assert.equal(missing.status, 400);
    assert.match(missing.json.error_msg, /property "api_host" is required/);
    const wrongType = await gw.admin('PUT', '/routes/ow', { uri: '/hello', plugins: conf({ api_host: 3233 }) });
    assert.equal(wrongType.status, 400);
    assert.match(wrongType.json.error_msg, /wrong type: expected string, got number/);
    const badName = await gw.admin('PUT', '/routes/ow', { uri: '/hello', plugins: conf({ action: '../x' }) });
    assert.equal(badName.status, 400);
    const badTimeout = await gw.admin('PUT', '/routes/ow', { uri: '/hello', plugins: conf({ timeout: 60001 }) });
    assert.equal(badTimeout.status, 400);
  });

  test('TEST 4-9: GET and POST reach the action', async () => {
    await gw.putRoute('ow', { uri: '/hello', plugins: conf() });
    let res = await gw.fetch('/hello');
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { hello: 'test' });
    res = await gw.fetch('/hello', { method: 'POST', body: 'name=world', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    assert.equal(res.status, 400);
    assert.match(await res.text(), /"error":"The request content was malformed/);
    res = await gw.fetch('/hello', { method: 'POST', body: '{"name":"world"}', headers: { 'content-type': 'application/json' } });
    assert.deepEqual(await res.json(), { hello: 'world' });
  });

  test('the request sent: POST, blocking URL, Basic auth, JSON type, none of the client headers or query', async () => {
    await gw.putRoute('ow', { uri: '/hello', plugins: conf({ action: 'echo', timeout: 5000 }) });
    const res = await gw.fetch('/hello?client=q', { headers: { 'x-client': 'c', authorization: 'Bearer client' } });
    const got = await res.json();
    assert.equal(got.method, 'POST');
    assert.equal(got.namespace, 'guest');
    assert.equal(got.action, 'echo');
    assert.equal(got.query, 'blocking=true&result=true&timeout=5000');
    assert.equal(got.headers.authorization, `Basic ${Buffer.from(OPENWHISK_TOKEN).toString('base64')}`);
    assert.equal(got.headers['content-type'], 'application/json');
    assert.equal(got.headers['x-client'], undefined);
    assert.equal(got.headers['x-forwarded-for'], undefined);
  });

  test('TEST 10-13: an unknown action is the 404 of OpenWhisk; a wrong port is 503', async () => {
    await gw.putRoute('ow', { uri: '/hello', plugins: conf({ action: 'non-existent' }) });
    let res = await gw.fetch('/hello');
    assert.equal(res.status, 404);
    assert.match(await res.text(), /"error":"The requested resource does not exist."/);
    await gw.putRoute('ow', { uri: '/hello', plugins: conf({ api_host: 'http://127.0.0.1:1' }) });
    res = await gw.fetch('/hello');
    assert.equal(res.status, 503);
    await res.text();
  });

  test('TEST 14-21: package, statusCode, headers and body of the result', async () => {
    await gw.putRoute('ow', { uri: '/hello', plugins: conf({ package: 'pkg', action: 'testpkg' }) });
    let res = await gw.fetch('/hello', { method: 'POST', body: '{"name":"world"}' });
    assert.deepEqual(await res.json(), { hello: 'world' });
    await gw.putRoute('ow', { uri: '/hello', plugins: conf({ action: 'test-statuscode' }) });
    // fetch() turns a 407 into a network error (Fetch standard): node:http reads it.
    const status = await new Promise<number>((resolve, reject) => {
      httpRequest(new URL('/hello', gw.proxyUrl), (r) => {
        r.resume();
        resolve(r.statusCode ?? 0);
      })
        .on('error', reject)
        .end();
    });
    assert.equal(status, 407);
    await gw.putRoute('ow', { uri: '/hello', plugins: conf({ action: 'test-headers' }) });
    res = await gw.fetch('/hello');
    assert.equal(res.headers.get('test'), 'header');
    await res.text();
    await gw.putRoute('ow', { uri: '/hello', plugins: conf({ action: 'test-body' }) });
    res = await gw.fetch('/hello');
    assert.equal(await res.text(), '{"test":"body"}\n');
  });

  test('result: false returns the activation record as OpenWhisk sent it', async () => {
    await gw.putRoute('ow', { uri: '/hello', plugins: conf({ result: false }) });
    const res = await gw.fetch('/hello');
    assert.equal(res.status, 200);
    const rec = await res.json();
    assert.equal(rec.activationId, 'a1b2c3');
    assert.deepEqual(rec.response.result, { hello: 'test' });
  });
});

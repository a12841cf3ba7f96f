/**
 * The platform pieces of the serverless plugins, in process: SigV4 (aws4fetch) checked against the independent
 * `@smithy/signature-v4` over generated paths and queries, the canonical query, the Lambda proxy-integration mapping,
 * OpenWhisk's URL and result mapping.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { amzDate, canonicalQuery, mapProxyIntegration, SigningKeys, signCall } from '../../src/core/plugins/aws-lambda.ts';
import { actionUrl, mapResult } from '../../src/core/plugins/openwhisk.ts';
import { BadAnswer } from '../../src/core/plugins/serverless.ts';
import type { FunctionCall } from '../../src/core/plugins/serverless.ts';
import { AWS_KEYS, verifySigV4 } from '../functions/platforms.ts';

const IAM = { accesskey: 'AKIDEXAMPLE', secretkey: AWS_KEYS.AKIDEXAMPLE!, aws_region: 'us-east-1', service: 'execute-api' };
const keys = new SigningKeys(IAM);

/** Sign a call and hand what would go on the wire to the oracle. */
async function signAndVerify(url: string, method = 'GET', body = Buffer.alloc(0), host?: string, datetime?: string): Promise<string | undefined> {
  const call: FunctionCall = { url, method, headers: [] };
  await signCall(call, new Uint8Array(body), IAM, keys, host, datetime);
  const u = new URL(call.url);
  const headers: Record<string, string> = { host: host ?? u.host };
  for (const [k, v] of call.headers) headers[k] = v;
  return verifySigV4({ method, url: `${u.pathname}${u.search}`, headers }, body);
}

describe('SigV4 (aws4fetch) against @smithy/signature-v4', () => {
  test('awkward paths and queries verify', async () => {
    const urls = [
      'https://abc.lambda-url.us-east-1.on.aws/',
      'https://h.example/with%20space/and%2Fslash',
      'https://h.example/%C3%A9t%C3%A9/%E2%9C%93/',
      "https://h.example/it's(a)*!~x",
      'https://h.example//double//slash',
      'https://h.example/p?with%20space=a%2Fb%20c&multi=m2&multi=m1&flag&a=*&a-=x',
      'https://h.example/p?%C3%A9=%E2%9C%93&plus=a+b&enc=%2F%3F%26%3D&empty=',
      'http://127.0.0.1:8080/p?x=%25&&=novalue',
    ];
    for (const u of urls) assert.equal(await signAndVerify(u), undefined, u);
    assert.equal(await signAndVerify('https://h.example/p?x=1', 'POST', Buffer.from('body ✓')), undefined);
    assert.equal(await signAndVerify('https://h.example/p', 'PUT', Buffer.alloc(0), 'rewritten.example'), undefined);
    // A Host without a port replaces the URL's host:port whole.
    assert.equal(await signAndVerify('http://127.0.0.1:8080/p', 'GET', Buffer.alloc(0), 'fn.example'), undefined);
    assert.equal(await signAndVerify('http://127.0.0.1:8080/p', 'GET', Buffer.alloc(0), 'fn.example:9000'), undefined);
    // The day's key is derived again when the date changes (and back).
    for (const d of ['20150830T123600Z', '20150831T000000Z', '20150830T235959Z']) {
      assert.equal(await signAndVerify('https://h.example/p', 'GET', Buffer.alloc(0), undefined, d), undefined, d);
    }
  });

  test('generated paths and queries verify (fast-check)', async () => {
    const seg = fc.string({ unit: fc.constantFrom('a', 'Z', '0', ' ', '/', '%', '?', '#', '+', '=', '&', '~', "'", '*', 'é', '✓', '😀', ':', '@'), maxLength: 8 });
    await fc.assert(
      fc.asyncProperty(fc.array(seg, { maxLength: 4 }), fc.array(fc.tuple(seg, fc.option(seg)), { maxLength: 5 }), async (segs, args) => {
        const path = `/${segs.map(encodeURIComponent).join('/')}`;
        const query = args.map(([k, v]) => (v === null ? encodeURIComponent(k) : `${encodeURIComponent(k)}=${encodeURIComponent(v)}`)).join('&');
        const reason = await signAndVerify(`https://h.example${path}${query ? `?${query}` : ''}`);
        assert.equal(reason, undefined, `${path}?${query}`);
      }),
      { numRuns: 300 },
    );
  });

  test('a tampered request fails the oracle (the check can fail)', async () => {
    const call: FunctionCall = { url: 'https://h.example/p?a=1', method: 'GET', headers: [] };
    await signCall(call, new Uint8Array(0), IAM, keys);
    const headers: Record<string, string> = { host: 'h.example' };
    for (const [k, v] of call.headers) headers[k] = v;
    assert.match((await verifySigV4({ method: 'GET', url: '/p?a=2', headers }, Buffer.alloc(0))) ?? '', /signature mismatch/);
    assert.match((await verifySigV4({ method: 'GET', url: '/p?a=1', headers }, Buffer.from('x'))) ?? '', /is not the hash of the body/);
  });

  test('canonical query: decoded, RFC 3986-encoded, valueless as k=, sorted by name then value (APISIX TEST 9)', () => {
    assert.equal(canonicalQuery('with%20space=a%2Fb%20c&multi=m2&multi=m1&flag&a=*&a-=x'), 'a=%2A&a-=x&flag=&multi=m1&multi=m2&with%20space=a%2Fb%20c');
    assert.equal(canonicalQuery(''), '');
    assert.equal(canonicalQuery('a+b=c+d&&=x&bad=%E0%A4%A'), 'a%20b=c%20d&bad=%25E0%25A4%25A');
    assert.match(amzDate(new Date(Date.UTC(2015, 7, 30, 12, 36, 0))), /^20150830T123600Z$/);
  });
});

describe('Lambda proxy-integration mapping', () => {
  test('statusCode, headers, multiValueHeaders, cookies, base64 body', async () => {
    const res = mapProxyIntegration(
      JSON.stringify({
        statusCode: 202,
        headers: { 'x-a': 'a', 'content-length': '999', connection: 'close', num: 5 },
        multiValueHeaders: { 'x-m': ['1', '2'] },
        cookies: ['c=1'],
        body: Buffer.from('hi').toString('base64'),
        isBase64Encoded: true,
      }),
    );
    assert.equal(res.status, 202);
    assert.equal(res.headers.get('x-a'), 'a');
    assert.equal(res.headers.get('num'), '5');
    assert.equal(res.headers.get('x-m'), '1, 2');
    assert.equal(res.headers.get('connection'), null);
    assert.deepEqual(res.headers.getSetCookie(), ['c=1']);
    assert.equal(await res.text(), 'hi');
    const plain = mapProxyIntegration('{"a":1}');
    assert.equal(plain.status, 200);
    assert.equal(await plain.text(), '{"a":1}');
    assert.equal(mapProxyIntegration('{"statusCode":204,"body":"x"}').body, null);
  });

  test('bad input throws BadAnswer with the reason', () => {
    const bad: [string, RegExp][] = [
      ['{"statusCode": 200, "body": "cut', /not valid JSON/],
      ['[1]', /not a JSON object/],
      ['null', /not a JSON object/],
      ['{"statusCode": 99}', /statusCode/],
      ['{"statusCode": 200.5}', /statusCode/],
      ['{"statusCode": 200, "body": {"a":1}}', /"body" is not a string/],
      ['{"statusCode": 200, "body": "%%%", "isBase64Encoded": true}', /not base64/],
      ['{"statusCode": 200, "isBase64Encoded": "yes"}', /isBase64Encoded/],
      ['{"statusCode": 200, "headers": [1]}', /"headers" is not an object/],
      ['{"statusCode": 200, "headers": {"a": {"b": 1}}}', /not a string/],
      ['{"statusCode": 200, "headers": {"bad name": "x"}}', /invalid header/],
      ['{"statusCode": 200, "multiValueHeaders": {"a": "x"}}', /not an array/],
      ['{"statusCode": 200, "cookies": "c=1"}', /"cookies" is not an array/],
      [JSON.stringify({ statusCode: 200, headers: Object.fromEntries(Array.from({ length: 201 }, (_, i) => [`h${i}`, 'v'])) }), /more than 200/],
      [JSON.stringify({ statusCode: 200, headers: { big: 'x'.repeat(70_000) } }), /bytes of headers/],
    ];
    for (const [text, re] of bad) {
      assert.throws(() => mapProxyIntegration(text), (e: unknown) => e instanceof BadAnswer && re.test(e.message), text.slice(0, 80));
    }
  });
});

describe('openwhisk', () => {
  const conf = {
    api_host: 'https://ow.example/',
    service_token: 'u:k',
    namespace: 'guest',
    action: 'hello world',
    result: true,
    timeout: 3000,
    ssl_verify: true,
    keepalive: true,
    keepalive_timeout: 60000,
    keepalive_pool: 5,
    max_req_body_size: 1024,
  };
  test('the action URL', () => {
    assert.equal(actionUrl(conf), 'https://ow.example/api/v1/namespaces/guest/actions/hello%20world?blocking=true&result=true&timeout=3000');
    assert.equal(actionUrl({ ...conf, package: 'pkg', result: false }), 'https://ow.example/api/v1/namespaces/guest/actions/pkg/hello%20world?blocking=true&result=false&timeout=3000');
  });
  test('result mapping', async () => {
    const h = () => new Headers({ 'content-type': 'application/json' });
    let r = mapResult('{"statusCode":201,"headers":{"x":"y"},"body":{"a":1}}', 200, h(), true);
    assert.equal(r.status, 201);
    assert.equal(r.headers.get('x'), 'y');
    assert.equal(await r.text(), '{"a":1}\n');
    r = mapResult('{"hello":"world"}', 200, h(), true);
    assert.equal(await r.text(), '{"hello":"world"}');
    r = mapResult('', 204, h(), true);
    assert.equal(r.status, 204);
    assert.throws(() => mapResult('{"activationId":"abc"}', 202, h(), true), /no result \(activation abc\)/);
    assert.throws(() => mapResult('{"activationId":"abc"}', 200, h(), false), /no result/);
    assert.throws(() => mapResult('{"statusCode":"x"}', 200, h(), true), /statusCode/);
    assert.throws(() => mapResult('not json', 200, h(), true), (e: unknown) => !(e instanceof BadAnswer));
    r = mapResult('{"response":{"result":{"a":1}}}', 200, h(), false);
    assert.equal(await r.text(), '{"response":{"result":{"a":1}}}');
  });
});

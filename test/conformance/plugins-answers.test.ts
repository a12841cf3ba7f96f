// biome-ignore-all lint/suspicious/noTemplateCurlyInString: APISIX templates are written ${name}, as plain strings
/**
 * The plugins that answer for the route: `redirect`, `fault-injection` and `mocking`, through real HTTP, replaying
 * APISIX's t/plugin/redirect.t, redirect2.t, fault-injection.t, fault-injection2.t and mocking.t (APISIX's
 * `hello world` upstream is the `echo` function here). Runs on every runtime.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { describe, test } from 'node:test';
import type { FunctionServers } from '../functions/functions.ts';
import { type GatewayUnderTest, gatewayPerFile, RUNTIME } from './harness.ts';

let gw: GatewayUnderTest;
let fn: FunctionServers;
gatewayPerFile((g, f) => {
  gw = g;
  fn = f;
});

const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

interface Res {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  ms: number;
}

/** One request to the proxy with node:http: the target is sent as given, the Host header can be chosen. */
function req(path: string, opts: { method?: string; host?: string; headers?: Record<string, string> } = {}): Promise<Res> {
  return new Promise((resolve, reject) => {
    const u = new URL(gw.proxyUrl);
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.host !== undefined) headers.host = opts.host;
    const started = performance.now();
    const r = httpRequest({ host: u.hostname, port: u.port, path, method: opts.method ?? 'GET', headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          text: Buffer.concat(chunks).toString('utf8'),
          ms: performance.now() - started,
        }),
      );
    });
    r.on('error', reject);
    r.end();
  });
}

const echoUpstream = () => ({ type: 'roundrobin', nodes: { [`${fn.host}:${fn.ports.echo}`]: 1 } });

/** The echo function answered (APISIX's `hello world` upstream): the request reached the upstream. */
function servedByUpstream(res: Res, path: string): void {
  assert.equal(res.status, 200, res.text);
  assert.equal((JSON.parse(res.text) as { url: string }).url, path);
}

function redirected(res: Res, status: number, location: string): void {
  assert.equal(res.status, status, res.text);
  assert.equal(res.headers.location, location);
}

describe('redirect (t/plugin/redirect.t, redirect2.t)', () => {
  test('TEST 3-4: uri /test/add with ret_code 301; the body is nginx status page', async () => {
    await gw.putRoute('1', { uri: '/hello', plugins: { redirect: { uri: '/test/add', ret_code: 301 } } });
    const res = await req('/hello');
    redirected(res, 301, '/test/add');
    assert.match(String(res.headers['content-type']), /^text\/html/);
    assert.match(res.text, /<title>301 Moved Permanently<\/title>/);
  });

  test('TEST 5-14: uri templates ($uri, ${arg_name}, $$, \\$uri, a missing variable)', async () => {
    const cases: [string, string, string, number][] = [
      ['$uri/test/add', '/hello', '/hello/test/add', 301],
      ['$uri/test/a${arg_name}c', '/hello?name=json', '/hello/test/ajsonc', 302],
      ['/foo$$uri', '/hello?name=json', '/foo$/hello', 302],
      ['\\$uri/foo$uri\\$uri/bar', '/hello', '\\$uri/foo/hello\\$uri/bar', 301],
      ['$uri/$bad_var/bar', '/hello', '/hello//bar', 301],
    ];
    for (const [uri, path, location, ret_code] of cases) {
      await gw.putRoute('1', { uri: '/hello', plugins: { redirect: { uri, ret_code } } });
      redirected(await req(path), ret_code, location);
    }
  });

  test('TEST 15-16: https://$host$request_uri on a route with vars scheme == http', async () => {
    await gw.putRoute('1', {
      uri: '/hello',
      host: 'foo.com',
      vars: [['scheme', '==', 'http']],
      plugins: { redirect: { uri: 'https://$host$request_uri', ret_code: 301 } },
    });
    redirected(await req('/hello', { host: 'foo.com' }), 301, 'https://foo.com/hello');
  });

  test('TEST 17-24: http_to_https is a 301 to https://$host$request_uri whatever ret_code says (no port: fngate has no TLS port)', async () => {
    await gw.putRoute('1', { uri: '/hello', host: 'foo.com', plugins: { redirect: { http_to_https: true, ret_code: 302 } } });
    redirected(await req('/hello', { host: 'foo.com' }), 301, 'https://foo.com/hello');
    redirected(await req('/hello?a=1&b', { host: 'Foo.com:9080' }), 301, 'https://foo.com/hello?a=1&b');
  });

  test('TEST 26-27: http_to_https on a route with an upstream', async () => {
    await gw.putRoute('1', { uri: '/hello', host: 'test.com', plugins: { redirect: { http_to_https: true } }, upstream: echoUpstream() });
    redirected(await req('/hello', { host: 'test.com' }), 301, 'https://test.com/hello');
  });

  test('TEST 30-33: http_to_https answers POST with 308, GET and HEAD with 301', async () => {
    await gw.putRoute('1', {
      methods: ['POST', 'GET', 'HEAD'],
      host: 'test.com',
      uri: '/hello-https',
      plugins: { redirect: { http_to_https: true, ret_code: 307 } },
    });
    redirected(await req('/hello-https', { method: 'POST', host: 'test.com' }), 308, 'https://test.com/hello-https');
    redirected(await req('/hello-https', { host: 'test.com' }), 301, 'https://test.com/hello-https');
    redirected(await req('/hello-https', { method: 'HEAD', host: 'test.com' }), 301, 'https://test.com/hello-https');
  });

  test('TEST 45-47: X-Forwarded-Proto decides the scheme: http or anything else redirects, https does not', async () => {
    await gw.putRoute('1', {
      uri: '/hello',
      host: 'foo.com',
      vars: [['scheme', '==', 'http']],
      plugins: { redirect: { http_to_https: true } },
      upstream: echoUpstream(),
    });
    redirected(await req('/hello', { host: 'foo.com', headers: { 'x-forwarded-proto': 'http' } }), 301, 'https://foo.com/hello');
    redirected(await req('/hello', { host: 'foo.com', headers: { 'x-forwarded-proto': 'any' } }), 301, 'https://foo.com/hello');
    servedByUpstream(await req('/hello', { host: 'foo.com', headers: { 'x-forwarded-proto': 'https' } }), '/hello');
  });

  test('TEST 34-36: regex_uri redirects what matches; what does not is served', async () => {
    await gw.putRoute('1', {
      uris: ['/test/*', '/hello'],
      plugins: { redirect: { regex_uri: ['^/test/(.*)', 'http://test.com/${1}'], ret_code: 301 } },
      upstream: echoUpstream(),
    });
    redirected(await req('/test/1'), 301, 'http://test.com/1');
    servedByUpstream(await req('/hello'), '/hello');
  });

  test('TEST 37-40: encode_uri escapes the decoded $uri (regex_uri and uri)', async () => {
    await gw.putRoute('1', {
      uri: '/test/*',
      plugins: { redirect: { regex_uri: ['^/test/(.*)', 'http://test.com/${1}'], ret_code: 301, encode_uri: true } },
      upstream: echoUpstream(),
    });
    redirected(await req('/test/with%20space'), 301, 'http://test.com/with%20space');
    await gw.putRoute('1', { uri: '/hello*', plugins: { redirect: { uri: '$uri', ret_code: 301, encode_uri: true } } });
    redirected(await req('/hello/with%20space'), 301, '/hello/with%20space');
  });

  test('TEST 41-44: append_query_string adds the query with ? or &', async () => {
    await gw.putRoute('1', { uri: '/hello', plugins: { redirect: { uri: '$uri', ret_code: 302, append_query_string: true } } });
    redirected(await req('/hello?name=json'), 302, '/hello?name=json');
    redirected(await req('/hello'), 302, '/hello');
    await gw.putRoute('1', { uri: '/hello', plugins: { redirect: { uri: '$uri?type=string', ret_code: 302, append_query_string: true } } });
    redirected(await req('/hello?name=json'), 302, '/hello?type=string&name=json');
  });

  test('redirect2.t TEST 1-2: regex_uri with append_query_string', async () => {
    await gw.putRoute('1', {
      uri: '/test/*',
      plugins: { redirect: { regex_uri: ['^/test/(.*)', 'http://test.com/${1}?q=apisix'], append_query_string: true } },
      upstream: echoUpstream(),
    });
    redirected(await req('/test/hello?o=apache'), 302, 'http://test.com/hello?q=apisix&o=apache');
  });

  test('TEST 25, 48: bad configs are refused with APISIX messages', async () => {
    const both = await gw.admin('PUT', '/routes/1', { uri: '/hello', host: 'foo.com', plugins: { redirect: { http_to_https: true, uri: '/hello' } } });
    assert.equal(both.status, 400);
    assert.equal(
      both.json.error_msg,
      'failed to check the configuration of plugin redirect err: value should match only one schema, but matches both schemas 1 and 3',
    );
    const append = await gw.admin('PUT', '/routes/1', {
      uri: '/hello',
      host: 'foo.com',
      plugins: { redirect: { http_to_https: true, append_query_string: true } },
    });
    assert.equal(append.status, 400);
    assert.equal(
      append.json.error_msg,
      'failed to check the configuration of plugin redirect err: only one of `http_to_https` and `append_query_string` can be configured.',
    );
  });
});

const FI_VARS = [[['arg_name', '==', 'jack'], ['arg_age', '!', '<', 18]], [['http_apikey', '==', 'api-key']]];

describe('fault-injection (t/plugin/fault-injection.t, fault-injection2.t)', () => {
  test('TEST 1-5: bad configs are refused', async () => {
    const put = (conf: unknown) => gw.admin('PUT', '/routes/1', { uri: '/hello', plugins: { 'fault-injection': conf } });
    for (const [conf, msg] of [
      [{ abort: { http_status: 100, body: 'Fault Injection!\n' } }, /validation failed/],
      [{ abort: {} }, /property "http_status" is required/],
      [{}, /expect object to have at least 1 properties/],
      [{ delay: {} }, /property "duration" is required/],
      [{ delay: { duration: 'test' } }, /wrong type: expected number, got string/],
    ] as const) {
      const res = await put(conf);
      assert.equal(res.status, 400, JSON.stringify(conf));
      assert.match(res.json.error_msg, msg);
    }
  });

  test('TEST 10-11: delay 1 second, then the upstream answers', async () => {
    await gw.putRoute('1', { uri: '/hello', plugins: { 'fault-injection': { delay: { duration: 1 } } }, upstream: echoUpstream() });
    const res = await req('/hello');
    servedByUpstream(res, '/hello');
    assert.ok(res.ms >= 900, `answered after ${res.ms} ms`);
  });

  test('TEST 12-15: abort with a status and a body', async () => {
    for (const http_status of [200, 405]) {
      await gw.putRoute('1', {
        uri: '/hello',
        plugins: { 'fault-injection': { abort: { http_status, body: 'Fault Injection!\n' } } },
        upstream: echoUpstream(),
      });
      const res = await req('/hello');
      assert.equal(res.status, http_status);
      assert.equal(res.text, 'Fault Injection!\n');
    }
  });

  test('TEST 16-19: abort runs before redirect; with percentage 0 it never fires', async () => {
    const route = (percentage?: number) => ({
      uri: '/hello',
      plugins: {
        'fault-injection': { abort: { http_status: 200, body: 'Fault Injection!\n', percentage } },
        redirect: { uri: '/hello/world', ret_code: 302 },
      },
      upstream: echoUpstream(),
    });
    await gw.putRoute('1', route());
    const res = await req('/hello');
    assert.equal(res.status, 200);
    assert.equal(res.text, 'Fault Injection!\n');
    await gw.putRoute('1', route(0));
    redirected(await req('/hello'), 302, '/hello/world');
  });

  test('TEST 22-25: a body with $remote_addr; without a body, 200 is empty and 403 the status page', async () => {
    await gw.putRoute('1', {
      uri: '/hello',
      plugins: { 'fault-injection': { abort: { http_status: 200, body: 'client addr: $remote_addr\n' } } },
      upstream: echoUpstream(),
    });
    assert.equal((await req('/hello')).text, 'client addr: 127.0.0.1\n');
    await gw.putRoute('1', { uri: '/hello', plugins: { 'fault-injection': { abort: { http_status: 200 } } }, upstream: echoUpstream() });
    const empty = await req('/hello');
    assert.equal(empty.status, 200);
    assert.equal(empty.text, '');
    await gw.putRoute('1', { uri: '/hello', plugins: { 'fault-injection': { abort: { http_status: 403 } } }, upstream: echoUpstream() });
    const page = await req('/hello');
    assert.equal(page.status, 403);
    assert.match(page.text, /<title>403 Forbidden<\/title>/);
  });

  test('TEST 28-33: abort when any of the vars expressions matches', async () => {
    await gw.putRoute('1', {
      uri: '/hello',
      plugins: { 'fault-injection': { abort: { http_status: 403, body: 'Fault Injection!\n', vars: FI_VARS } } },
      upstream: echoUpstream(),
    });
    for (const [path, headers] of [
      ['/hello?name=jack&age=18', { apikey: 'api-key' }],
      ['/hello?name=jack&age=20', {}],
      ['/hello', { apikey: 'api-key' }],
    ] as const) {
      const res = await req(path, { headers });
      assert.equal(res.status, 403, path);
      assert.equal(res.text, 'Fault Injection!\n');
    }
    servedByUpstream(await req('/hello?name=allen'), '/hello?name=allen');
    servedByUpstream(await req('/hello'), '/hello');
  });

  test('TEST 34-39: delay when its vars match; abort and delay with their own vars', async () => {
    await gw.putRoute('1', {
      uri: '/hello',
      plugins: {
        'fault-injection': {
          abort: { http_status: 403, body: 'Fault Injection!\n', vars: [[['arg_name', '==', 'jack'], ['arg_age', '!', '<', 18]]] },
          delay: { duration: 1, vars: [[['http_apikey', '==', 'api-key']]] },
        },
      },
      upstream: echoUpstream(),
    });
    const both = await req('/hello?name=jack&age=18', { headers: { apikey: 'api-key' } });
    assert.equal(both.status, 403);
    assert.equal(both.text, 'Fault Injection!\n');
    assert.ok(both.ms >= 900, `answered after ${both.ms} ms`);
    const delayed = await req('/hello?name=jack&age=16', { headers: { apikey: 'api-key' } });
    servedByUpstream(delayed, '/hello?name=jack&age=16');
    assert.ok(delayed.ms >= 900, `answered after ${delayed.ms} ms`);
    servedByUpstream(await req('/hello'), '/hello');
  });

  test('fault-injection2.t TEST 1-3: a !AND rule', async () => {
    await gw.putRoute('1', {
      uri: '/hello',
      plugins: {
        'fault-injection': {
          abort: { http_status: 403, body: 'Fault Injection!\n', vars: [['!AND', ['arg_name', '==', 'jack'], ['arg_age', '!', '<', 18]]] },
        },
      },
      upstream: echoUpstream(),
    });
    assert.equal((await req('/hello?name=jack&age=17')).status, 403);
    servedByUpstream(await req('/hello?name=jack&age=18'), '/hello?name=jack&age=18');
  });

  test('fault-injection2.t TEST 4-7: headers (numbers, $uri) and a body with a variable before }', async () => {
    await gw.putRoute('1', {
      uri: '/hello',
      plugins: { 'fault-injection': { abort: { http_status: 200, headers: { h1: 'v1', h2: 2, h3: '$uri' } } } },
      upstream: echoUpstream(),
    });
    const res = await req('/hello');
    assert.equal(res.headers.h1, 'v1');
    assert.equal(res.headers.h2, '2');
    assert.equal(res.headers.h3, '/hello');
    await gw.putRoute('1', {
      uri: '/hello',
      plugins: { 'fault-injection': { abort: { http_status: 200, body: '{"count": $arg_count}' } } },
      upstream: echoUpstream(),
    });
    assert.equal((await req('/hello?count=2')).text, '{"count": 2}');
  });

  test(
    'a client that leaves during the delay: the upstream is never called, no error is logged, the route still serves',
    { skip: RUNTIME === 'workerd' && 'workerd does not report a client gone before the answer to the Worker (README runtime table)' },
    async () => {
      await gw.putRoute('1', {
        uri: '/slow',
        plugins: { 'fault-injection': { delay: { duration: 1 } } },
        upstream: { type: 'roundrobin', nodes: { [`${fn.host}:${fn.ports.slow}`]: 1 } },
      });
      const stats = fn.stats('slow');
      const calls = stats.completed + stats.aborted;
      const errors = gw.proc.stderr().length;
      const u = new URL(gw.proxyUrl);
      await new Promise<void>((resolve) => {
        const r = httpRequest({ host: u.hostname, port: u.port, path: '/slow?delay=0', agent: false });
        r.on('error', () => resolve());
        r.on('response', () => assert.fail('answered although the client left'));
        r.end();
        setTimeout(() => {
          r.destroy();
          resolve();
        }, 200);
      });
      // Past the end of the delay: had it gone on, the call would have reached the function by now.
      await new Promise((resolve) => setTimeout(resolve, 1500));
      assert.equal(stats.completed + stats.aborted, calls);
      assert.equal(gw.proc.stderr().slice(errors), '');
      // The route still serves.
      const res = await req('/slow?delay=0');
      assert.equal(res.text, 'slow done');
      assert.equal(stats.completed + stats.aborted, calls + 1);
    },
  );

  test('README example: a function route aborting about 10 % of its calls with 503', async () => {
    await gw.putRoute('1', {
      uri: '/fn',
      plugins: {
        'fault-injection': { abort: { http_status: 503, body: '{"error":"injected"}', percentage: 10 } },
        openfunction: { function_uri: `${fn.urls['function-sample']}/fn` },
      },
    });
    let aborted = 0;
    for (let i = 0; i < 300; i++) {
      const res = await req('/fn');
      if (res.status === 503) {
        assert.equal(res.text, '{"error":"injected"}');
        aborted++;
      } else {
        assert.equal(res.status, 200);
        assert.equal(res.text, 'Hello, fn!');
      }
    }
    // Binomial(300, 0.1): mean 30, sd ≈ 5.2; 5..75 is more than 4.8 sd either way.
    assert.ok(aborted >= 5 && aborted <= 75, `${aborted} of 300 aborted`);
  });
});

describe('mocking (t/plugin/mocking.t)', () => {
  const mock = (conf: Record<string, unknown>) => gw.putRoute('1', { uri: '/hello', plugins: { mocking: conf } });

  test('TEST 1-2: response_example after a delay of 1 second', async () => {
    await mock({ delay: 1, content_type: 'text/plain', response_status: 200, response_example: 'hello world' });
    const res = await req('/hello');
    assert.equal(res.status, 200);
    assert.equal(res.text, 'hello world');
    assert.ok(res.ms >= 900, `answered after ${res.ms} ms`);
  });

  test('TEST 3-12: bodies generated from response_schema', async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ type: 'string', example: 'hello' }, '{"field1":"hello"}'],
      [{ type: 'integer', example: 4 }, '{"field1":4}'],
      [{ type: 'number', example: 5.5 }, '{"field1":5.5}'],
      [{ type: 'boolean', example: true }, '{"field1":true}'],
      [{ type: 'object' }, '{"field1":{}}'],
    ];
    for (const [field1, body] of cases) {
      await mock({ content_type: 'text/plain', response_status: 200, response_schema: { type: 'object', properties: { field1 } } });
      assert.equal((await req('/hello')).text, body);
    }
  });

  test('TEST 13-14: content_type is sent as configured', async () => {
    await mock({ content_type: 'application/json', response_status: 200, response_example: '{"field1":{}}' });
    const res = await req('/hello');
    assert.equal(res.headers['content-type'], 'application/json');
    assert.equal(res.text, '{"field1":{}}');
  });

  test('TEST 15-18: response_example with variables ($remote_addr; a missing one is empty)', async () => {
    await mock({ content_type: 'text/plain', response_example: 'remote_addr:$remote_addr' });
    assert.equal((await req('/hello')).text, 'remote_addr:127.0.0.1');
    await mock({ content_type: 'text/plain', response_example: 'empty_var:$foo' });
    assert.equal((await req('/hello')).text, 'empty_var:');
  });

  test('TEST 19-22: response_headers, with variables', async () => {
    await mock({ response_example: 'hello world', response_headers: { 'X-Apisix': 'is, cool', 'X-Really': 'yes' } });
    const res = await req('/hello');
    assert.equal(res.headers['x-apisix'], 'is, cool');
    assert.equal(res.headers['x-really'], 'yes');
    await mock({ response_example: 'hello world', response_headers: { 'X-Route-Id': '$route_id' } });
    assert.equal((await req('/hello')).headers['x-route-id'], '1');
  });

  test('defaults: status 200, application/json;charset=utf8 and x-mock-by: fngate/<version> (unless with_mock_header is false)', async () => {
    await mock({ response_example: '{"ok":true}' });
    const res = await req('/hello');
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-type'], 'application/json;charset=utf8');
    assert.equal(res.headers['x-mock-by'], `fngate/${VERSION}`);
    await mock({ response_example: '{"ok":true}', with_mock_header: false, response_status: 418 });
    const plain = await req('/hello');
    assert.equal(plain.status, 418);
    assert.equal(plain.headers['x-mock-by'], undefined);
  });

  test('README example: a function route stubbed by mocking never calls the function', async () => {
    await gw.putRoute('1', {
      uri: '/fn',
      plugins: {
        mocking: { response_status: 201, response_example: '{"id":"$arg_id","status":"created"}' },
        // Nothing listens on port 1: a call would answer 503.
        openfunction: { function_uri: 'http://127.0.0.1:1/fn' },
      },
    });
    const res = await req('/fn?id=42', { method: 'POST' });
    assert.equal(res.status, 201);
    assert.equal(res.text, '{"id":"42","status":"created"}');
  });

  test('bad configs are refused with APISIX messages', async () => {
    const none = await gw.admin('PUT', '/routes/1', { uri: '/hello', plugins: { mocking: { delay: 1 } } });
    assert.equal(none.status, 400);
    assert.match(none.json.error_msg, /failed to check the configuration of plugin mocking err: value should match at least one schema/);
    const type = await gw.admin('PUT', '/routes/1', { uri: '/hello', plugins: { mocking: { response_example: 'x', content_type: 'image/png' } } });
    assert.equal(type.status, 400);
    assert.equal(type.json.error_msg, 'failed to check the configuration of plugin mocking err: unsupported content type!');
  });
});

// biome-ignore-all lint/suspicious/noTemplateCurlyInString: APISIX templates are written ${name}, as plain strings
/**
 * The `proxy-rewrite` and `response-rewrite` plugins through real HTTP: the cases of APISIX's
 * t/plugin/proxy-rewrite*.t, response-rewrite*.t and plugin.t listed in apisix-wave2.md §6.1–6.2 and §1.2, on an
 * upstream route and on a function (openfunction) route. The `echo` function answers with the request it got, so
 * each case reads what reached the upstream. Runs on every runtime.
 */
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { before, describe, test } from 'node:test';
import { type FunctionServers, GZIP_TEXT } from '../functions/functions.ts';
import { type GatewayUnderTest, gatewayPerFile, RUNTIME } from './harness.ts';

let gw: GatewayUnderTest;
let fn: FunctionServers;
gatewayPerFile((g, f) => {
  gw = g;
  fn = f;
});

/** An upstream with the given function as its node. */
const upstream = (name: keyof FunctionServers['urls'] = 'echo') => ({
  type: 'roundrobin',
  nodes: { [new URL(fn.urls[name]).host]: 1 },
});

// biome-ignore lint/suspicious/noExplicitAny: the echo function's JSON
async function echoed(path: string, init?: RequestInit): Promise<any> {
  const res = await gw.fetch(path, init);
  const text = await res.text();
  assert.equal(res.status, 200, text);
  return JSON.parse(text);
}

/** One request sent with node:http, so that the request target goes out byte for byte (fetch normalises it). */
function rawGet(path: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(gw.proxyUrl);
    const r = httpRequest({ host: u.hostname, port: u.port, path, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
    });
    r.on('error', reject);
    r.end();
  });
}

describe('proxy-rewrite (t/plugin/proxy-rewrite*.t)', () => {
  test('TEST 5-6: uri and host', async () => {
    await gw.putRoute('pr1', {
      uri: '/hello',
      plugins: { 'proxy-rewrite': { uri: '/plugin_proxy_rewrite', host: 'apisix.iresty.com' } },
      upstream: upstream(),
    });
    const got = await echoed('/hello');
    assert.equal(got.url, '/plugin_proxy_rewrite');
    // Workers: fetch derives Host from the URL (README runtime table: a Host other than the URL's).
    if (RUNTIME !== 'workerd') assert.equal(got.headers.host, 'apisix.iresty.com');
  });

  test('TEST 15-16: the client query is appended to the rewritten uri', async () => {
    await gw.putRoute('pr1', { uri: '/hello', plugins: { 'proxy-rewrite': { uri: '/plugin_proxy_rewrite_args' } }, upstream: upstream() });
    assert.equal((await echoed('/hello?q=apisix&a=iresty')).url, '/plugin_proxy_rewrite_args?q=apisix&a=iresty');
    assert.equal((await echoed('/hello')).url, '/plugin_proxy_rewrite_args');
  });

  test('TEST 33-34 / #12114: a query in uri is kept, the client query follows with &', async () => {
    await gw.putRoute('pr1', { uri: '/hello', plugins: { 'proxy-rewrite': { uri: '/echo?a=1' } }, upstream: upstream() });
    assert.equal((await echoed('/hello?b=2')).url, '/echo?a=1&b=2');
    assert.equal((await echoed('/hello')).url, '/echo?a=1');
  });

  test('TEST 36-41: uri and header templates with variables; a missing variable is empty', async () => {
    await gw.putRoute('pr1', {
      uri: '/hello',
      plugins: { 'proxy-rewrite': { uri: '/v/$arg_name/${http_x_id}', headers: { 'X-Route': '$route_id', 'X-Missing': 'a$arg_none' } } },
      upstream: upstream(),
    });
    const got = await echoed('/hello?name=jack', { headers: { 'x-id': '7' } });
    assert.equal(got.url, '/v/jack/7?name=jack');
    assert.equal(got.headers['x-route'], 'pr1');
    assert.equal(got.headers['x-missing'], 'a');
  });

  test('TEST 19-20: flat headers set, and "" removes', async () => {
    await gw.putRoute('pr1', {
      uri: '/hello',
      plugins: { 'proxy-rewrite': { headers: { 'X-Api-Engine': 'APISIX', 'X-Api-Test': '' } } },
      upstream: upstream(),
    });
    const got = await echoed('/hello', { headers: { 'X-Api-Test': 'foo', 'X-Api-Engine': 'bar' } });
    assert.equal(got.headers['x-api-engine'], 'APISIX');
    assert.equal(got.headers['x-api-test'], undefined);
    assert.equal(got.url, '/hello');
  });

  test('TEST 21-23: regex_uri rewrites the path; no match leaves it', async () => {
    await gw.putRoute('pr1', {
      uri: '/test/*',
      plugins: { 'proxy-rewrite': { regex_uri: ['^/test/(.*)/(.*)/(.*)', '/$1_$2_$3'] } },
      upstream: upstream(),
    });
    assert.equal((await echoed('/test/plugin/proxy/rewrite')).url, '/plugin_proxy_rewrite');
    assert.equal((await echoed('/test/not/found')).url, '/test/not/found');
    assert.equal((await echoed('/test/plugin/proxy/rewrite?x=1')).url, '/plugin_proxy_rewrite?x=1');
  });

  test('proxy-rewrite3.t TEST 37-39: the first matching pair of regex_uri wins', async () => {
    await gw.putRoute('pr1', {
      uri: '/test/*',
      plugins: { 'proxy-rewrite': { regex_uri: ['^/test/a/(.*)', '/one/$1', '^/test/(.*)', '/two/$1'] } },
      upstream: upstream(),
    });
    assert.equal((await echoed('/test/a/b')).url, '/one/b');
    assert.equal((await echoed('/test/b/c')).url, '/two/b/c');
  });

  test('proxy-rewrite3.t TEST 14-18: add, then set, then remove', async () => {
    await gw.putRoute('pr1', {
      uri: '/hello',
      plugins: { 'proxy-rewrite': { headers: { add: { test: '123' }, set: { test2: 2233 }, remove: ['hello'] } } },
      upstream: upstream(),
    });
    const got = await echoed('/hello', { headers: { test: 'sssss', hello: 'world', test2: 'old' } });
    assert.equal(got.headers.test, 'sssss, 123');
    assert.equal(got.headers.test2, '2233');
    assert.equal(got.headers.hello, undefined);
  });

  test('proxy-rewrite3.t TEST 19-20: add and set of the same name: set wins', async () => {
    await gw.putRoute('pr1', {
      uri: '/hello',
      plugins: { 'proxy-rewrite': { headers: { add: { test: 'added' }, set: { test: 'set' } } } },
      upstream: upstream(),
    });
    assert.equal((await echoed('/hello', { headers: { test: 'client' } })).headers.test, 'set');
  });

  test('proxy-rewrite.t TEST 58-61: array values set and add several lines', async () => {
    await gw.putRoute('pr1', {
      uri: '/hello',
      plugins: { 'proxy-rewrite': { headers: { set: { 'x-s': ['a', 'b'] }, add: { 'x-a': ['c', 'd'] } } } },
      upstream: upstream(),
    });
    const got = await echoed('/hello', { headers: { 'x-s': 'client', 'x-a': 'client' } });
    assert.equal(got.headers['x-s'], 'a, b');
    assert.equal(got.headers['x-a'], 'client, c, d');
  });

  test('proxy-rewrite3.t TEST 27-30: regex_uri captures in header values; empty when it did not match', async () => {
    await gw.putRoute('pr1', {
      uri: '/test/*',
      plugins: { 'proxy-rewrite': { regex_uri: ['^/test/(.*)/(.*)/(.*)', '/echo'], headers: { add: { 'X-Request-ID': '$1/$2/$3' } } } },
      upstream: upstream(),
    });
    const got = await echoed('/test/plugin/proxy/rewrite');
    assert.equal(got.url, '/echo');
    assert.equal(got.headers['x-request-id'], 'plugin/proxy/rewrite');
    const miss = await echoed('/test/nope');
    assert.equal(miss.url, '/test/nope');
    assert.equal(miss.headers['x-request-id'], '//');
  });

  test('proxy-rewrite3.t TEST 1-7: method', async () => {
    await gw.putRoute('pr1', {
      uri: '/hello',
      plugins: { 'proxy-rewrite': { uri: '/plugin_proxy_rewrite', method: 'POST', headers: { 'X-Api': 'v2' } } },
      upstream: upstream(),
    });
    const got = await echoed('/hello');
    assert.equal(got.method, 'POST');
    assert.equal(got.headers['x-api'], 'v2');
  });

  test('TEST 66: CR/LF from a variable in the query part is percent-encoded', async () => {
    await gw.putRoute('pr1', { uri: '/crlf', plugins: { 'proxy-rewrite': { uri: '/echo?v=$arg_v' } }, upstream: upstream() });
    assert.equal((await echoed('/crlf?v=a%0D%0Ab')).url, '/echo?v=a%0D%0Ab&v=a%0D%0Ab');
  });

  test('TEST 45-52: use_real_request_uri_unsafe keeps the raw target and its query', async () => {
    await gw.putRoute('pr1', { uri: '/unsafe/*', plugins: { 'proxy-rewrite': { use_real_request_uri_unsafe: true } }, upstream: upstream() });
    const raw = await rawGet('/unsafe/a%20b//c?q=1&x=%2F');
    assert.equal(raw.status, 200, raw.text);
    assert.equal(JSON.parse(raw.text).url, '/unsafe/a%20b//c?q=1&x=%2F');
    // The same route without the flag: the normalised path, re-encoded.
    await gw.putRoute('pr1', { uri: '/unsafe/*', plugins: { 'proxy-rewrite': { headers: { 'x-a': '1' } } }, upstream: upstream() });
    assert.equal(JSON.parse((await rawGet('/unsafe/a%20b//c?q=1')).text).url, '/unsafe/a%20b/c?q=1');
    await gw.putRoute('pr1', {
      uri: '/unsafe/*',
      plugins: { 'proxy-rewrite': { uri: '/plugin_proxy_rewrite_args?z=0', use_real_request_uri_unsafe: true } },
      upstream: upstream(),
    });
    assert.equal((await echoed('/unsafe/x?q=apisix&a=iresty')).url, '/plugin_proxy_rewrite_args?z=0&q=apisix&a=iresty');
  });

  test('plugin.t TEST 12-14: _meta.filter decides per request', async () => {
    await gw.putRoute('pr1', {
      uri: '/hello',
      plugins: {
        'proxy-rewrite': { _meta: { filter: [['arg_version', '==', 'v2']] }, uri: '/echo', headers: { 'X-Api-Version': 'v2' } },
      },
      upstream: upstream(),
    });
    const v2 = await echoed('/hello?version=v2');
    assert.equal(v2.url, '/echo?version=v2');
    assert.equal(v2.headers['x-api-version'], 'v2');
    const v1 = await echoed('/hello?version=v1');
    assert.equal(v1.url, '/hello?version=v1');
    assert.equal(v1.headers['x-api-version'], undefined);
  });

  test('function route: method and headers apply, uri does not change the function URL', async () => {
    await gw.putRoute('pr2', {
      uri: '/fn/*',
      plugins: {
        openfunction: { function_uri: `${fn.urls.echo}/default/echo` },
        'proxy-rewrite': { uri: '/elsewhere', method: 'PUT', headers: { set: { 'x-fn': '$uri_param_ext' }, remove: ['x-drop'] } },
      },
    });
    const got = await echoed('/fn/tail?a=1', { headers: { 'x-drop': 'yes' } });
    assert.equal(got.url, '/default/echo/tail?a=1');
    assert.equal(got.method, 'PUT');
    assert.equal(got.headers['x-drop'], undefined);
    const regex = await gw.putRoute('pr2', {
      uri: '/fn/*',
      plugins: {
        openfunction: { function_uri: `${fn.urls.echo}/default/echo` },
        'proxy-rewrite': { regex_uri: ['^/fn/(.*)', '/other/$1'], headers: { 'x-cap': '$1' } },
      },
    });
    assert.equal(regex.status, 200);
    const got2 = await echoed('/fn/abc');
    assert.equal(got2.url, '/default/echo/abc');
    assert.equal(got2.headers['x-cap'], 'abc');
  });

  test('bad confs are refused with APISIX messages (TEST 26-32)', async () => {
    const put = (conf: unknown) => gw.admin('PUT', '/routes/pr9', { uri: '/x', plugins: { 'proxy-rewrite': conf }, upstream: upstream() });
    const odd = await put({ regex_uri: ['^/a', '/b', '^/c'] });
    assert.equal(odd.status, 400);
    assert.equal(
      odd.json.error_msg,
      'failed to check the configuration of plugin proxy-rewrite err: The length of regex_uri should be an even number',
    );
    const tpl = await put({ regex_uri: ['^/test/(.*)', '/$a'] });
    assert.match(tpl.json.error_msg, /invalid regex_uri\(\^\/test\/\(\.\*\), \/\$a\): invalid capturing variable name found/);
    const uri = await put({ uri: 'home' });
    assert.match(uri.json.error_msg, /property "uri" validation failed: failed to match pattern/);
    const field = await put({ headers: { 'X-Api:Engine': 'v' } });
    assert.match(field.json.error_msg, /invalid field character in header/);
    assert.equal((await gw.admin('GET', '/routes/pr9')).status, 404);
  });
});

describe('response-rewrite (t/plugin/response-rewrite*.t)', () => {
  // The proxy-rewrite cases' routes share these paths.
  before(async () => {
    for (const id of ['pr1', 'pr2']) await gw.admin('DELETE', `/routes/${id}`);
  });

  test('TEST 4-5: body and headers; the headers of the old body go', async () => {
    await gw.putRoute('rr1', {
      uri: '/hello',
      plugins: { 'response-rewrite': { body: 'new body\n', headers: { 'X-Server-id': 3, 'X-Server-status': 'on' } } },
      upstream: upstream(),
    });
    const res = await gw.fetch('/hello?set-header=etag:"abc"&set-header=last-modified:Wed, 21 Oct 2015 07:28:00 GMT');
    assert.equal(res.status, 200);
    assert.equal(await res.text(), 'new body\n');
    assert.equal(res.headers.get('x-server-id'), '3');
    assert.equal(res.headers.get('x-server-status'), 'on');
    assert.equal(res.headers.get('etag'), null);
    assert.equal(res.headers.get('last-modified'), null);
    const len = res.headers.get('content-length');
    assert.ok(len === null || len === '9', `content-length ${len}`);
  });

  test('TEST 6-7: headers only: body and its headers unchanged', async () => {
    await gw.putRoute('rr1', { uri: '/hello', plugins: { 'response-rewrite': { headers: { 'X-A': 'b' } } }, upstream: upstream() });
    const res = await gw.fetch('/hello?set-header=etag:"abc"');
    assert.equal(res.headers.get('etag'), '"abc"');
    assert.equal(res.headers.get('x-a'), 'b');
    assert.equal(JSON.parse(await res.text()).url, '/hello?set-header=etag:%22abc%22');
  });

  test('TEST 8-9: status_code and Location', async () => {
    await gw.putRoute('rr1', {
      uri: '/hello',
      plugins: { 'response-rewrite': { headers: { Location: 'https://www.iresty.com' }, status_code: 302 } },
      upstream: upstream(),
    });
    const res = await gw.fetch('/hello', { redirect: 'manual' });
    assert.equal(res.status, 302);
    assert.equal(res.headers.get('location'), 'https://www.iresty.com');
    await res.body?.cancel();
  });

  test('TEST 12-13: body_base64', async () => {
    await gw.putRoute('rr1', { uri: '/hello', plugins: { 'response-rewrite': { body: 'SGVsbG8K', body_base64: true } }, upstream: upstream() });
    assert.equal(await (await gw.fetch('/hello')).text(), 'Hello\n');
  });

  test('TEST 25-26: an empty body', async () => {
    await gw.putRoute('rr1', { uri: '/hello', plugins: { 'response-rewrite': { body: '' } }, upstream: upstream() });
    const res = await gw.fetch('/hello');
    assert.equal(res.status, 200);
    assert.equal(await res.text(), '');
  });

  test('TEST 18-20: vars against the response status', async () => {
    await gw.putRoute('rr1', {
      uri: '/hello',
      plugins: { 'response-rewrite': { body: 'new body3\n', status_code: 403, vars: [['status', '==', 500]] } },
      upstream: upstream(),
    });
    const err = await gw.fetch('/hello?status=500');
    assert.equal(err.status, 403);
    assert.equal(await err.text(), 'new body3\n');
    const ok = await gw.fetch('/hello');
    assert.equal(ok.status, 200);
    assert.equal(JSON.parse(await ok.text()).url, '/hello');
  });

  test('TEST 23-24: header values with variables', async () => {
    await gw.putRoute('rr1', {
      uri: '/hello',
      plugins: { 'response-rewrite': { headers: { 'X-A': '$remote_addr', 'X-B': 'from $remote_addr to ${route_id}' } } },
      upstream: upstream(),
    });
    const res = await gw.fetch('/hello');
    await res.text();
    assert.equal(res.headers.get('x-a'), '127.0.0.1');
    assert.equal(res.headers.get('x-b'), 'from 127.0.0.1 to rr1');
  });

  test('response-rewrite2.t TEST 20-25: add ("Name: value"), set, remove', async () => {
    await gw.putRoute('rr1', {
      uri: '/hello',
      plugins: {
        'response-rewrite': {
          headers: { add: ['X-Server-id: 3', 'X-Server-id: 4'], set: { 'X-Server-status': 'on', 'X-Up': '' }, remove: ['X-TO-BE-REMOVED'] },
        },
      },
      upstream: upstream(),
    });
    const res = await gw.fetch('/hello?set-header=X-TO-BE-REMOVED:x&set-header=X-Server-id:1&set-header=X-Up:1&set-header=X-Server-status:off');
    await res.text();
    assert.equal(res.headers.get('x-server-id'), '1, 3, 4');
    assert.equal(res.headers.get('x-server-status'), 'on');
    assert.equal(res.headers.get('x-to-be-removed'), null);
    assert.equal(res.headers.get('x-up'), null);
  });

  test('response-rewrite2.t TEST 7-18: filters (once, global, empty replacement, several, no match, vars)', async () => {
    const cases: [unknown[], string][] = [
      [[{ regex: 'l', replace: 'L' }], 'HeLlo, hello!'],
      [[{ regex: 'l', replace: 'L', scope: 'global' }], 'HeLLo, heLLo!'],
      [[{ regex: 'hello', replace: '' }], 'Hello, !'],
      [[{ regex: '(H)(e)', replace: '$2$1', options: 'jo' }], 'eHllo, hello!'],
      [[{ regex: 'HELLO', replace: 'bye', scope: 'global', options: 'i' }], 'bye, bye!'],
      [[{ regex: 'l', replace: 'L', scope: 'global' }, { regex: 'L', replace: 'x' }], 'HexLo, heLLo!'],
      [[{ regex: 'nothing', replace: 'x' }], 'Hello, hello!'],
    ];
    for (const [filters, want] of cases) {
      await gw.putRoute('rr1', { uri: '/hello', plugins: { 'response-rewrite': { filters } }, upstream: upstream('function-sample') });
      const res = await gw.fetch('/hello');
      assert.equal(await res.text(), want, JSON.stringify(filters));
    }
    await gw.putRoute('rr1', {
      uri: '/hello/*',
      plugins: { 'response-rewrite': { vars: [['status', '==', 200]], filters: [{ regex: 'status', replace: 'STATUS' }] } },
      upstream: upstream('status'),
    });
    assert.equal(await (await gw.fetch('/hello/200')).text(), 'STATUS 200');
    assert.equal(await (await gw.fetch('/hello/404')).text(), 'status 404');
  });

  test('TEST 28-29: filters see at most max_resp_body_size bytes; the body is cut there', async () => {
    await gw.putRoute('rr1', {
      uri: '/hello',
      plugins: { 'response-rewrite': { max_resp_body_size: 5, filters: [{ regex: 'l', replace: 'L', scope: 'global' }] } },
      upstream: upstream('function-sample'),
    });
    assert.equal(await (await gw.fetch('/hello')).text(), 'HeLLo');
    // Many chunks: the stream function sends 5 lines of `chunk <i>\n` (8 bytes each); the filters see the first
    // 12 bytes, held back over two chunks, and the rest is dropped.
    await gw.putRoute('rr2', {
      uri: '/stream',
      plugins: { 'response-rewrite': { max_resp_body_size: 12, filters: [{ regex: 'chunk', replace: 'c', scope: 'global' }] } },
      upstream: upstream('stream'),
    });
    assert.equal(await (await gw.fetch('/stream?interval=10')).text(), 'c 0\nchun');
  });

  test('response-rewrite3.t: gzip answers: body and filters answer uncompressed, headers-only keeps the encoding', async () => {
    const gz = { 'accept-encoding': 'gzip' };
    // Local workerd (Miniflare) gzips every text answer for a client that accepts gzip, a plain route's too, so
    // there the encoding on the wire says nothing about the gateway's answer: only the bodies are checked.
    const encoding = (res: Response) => (RUNTIME === 'workerd' ? undefined : res.headers.get('content-encoding'));
    await gw.putRoute('rr1', { uri: '/gz', plugins: { 'response-rewrite': { body: 'plain' } }, upstream: upstream('gzip') });
    const body = await gw.fetch('/gz', { headers: gz });
    assert.equal(encoding(body), RUNTIME === 'workerd' ? undefined : null);
    assert.equal(await body.text(), 'plain');
    await gw.putRoute('rr1', {
      uri: '/gz',
      plugins: { 'response-rewrite': { filters: [{ regex: 'hello gzip', replace: 'bye', scope: 'global' }] } },
      upstream: upstream('gzip'),
    });
    const filtered = await gw.fetch('/gz', { headers: gz });
    assert.equal(encoding(filtered), RUNTIME === 'workerd' ? undefined : null);
    assert.equal(await filtered.text(), GZIP_TEXT.toString().replaceAll('hello gzip', 'bye'));
    await gw.putRoute('rr1', { uri: '/gz', plugins: { 'response-rewrite': { headers: { 'x-a': '1' } } }, upstream: upstream('gzip') });
    // Node's fetch decodes the body; the header says whether it came compressed (Deno's fetch decodes it upstream:
    // README runtime table, gzip row).
    const kept = await gw.fetch('/gz', { headers: gz });
    assert.equal(kept.headers.get('x-a'), '1');
    assert.equal(encoding(kept), RUNTIME === 'workerd' ? undefined : RUNTIME === 'deno' ? null : 'gzip');
    assert.equal(await kept.text(), GZIP_TEXT.toString());
  });

  test('plugin.t TEST 19-21: _meta.filter on upstream_status', async () => {
    await gw.putRoute('rr1', {
      uri: '/*',
      plugins: { 'response-rewrite': { _meta: { filter: [['upstream_status', '~=', 200]] }, headers: { set: { 'test-header': 'error' } } } },
      upstream: upstream(),
    });
    const bad = await gw.fetch('/x?status=502');
    await bad.text();
    assert.equal(bad.status, 502);
    assert.equal(bad.headers.get('test-header'), 'error');
    const ok = await gw.fetch('/x');
    await ok.text();
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get('test-header'), null);
  });

  test("the gateway's own answers are rewritten too (an unreachable upstream's 502)", async () => {
    await gw.putRoute('rr1', {
      uri: '/dead',
      plugins: { 'response-rewrite': { vars: [['status', '==', 502]], status_code: 503, body: '{"error":"down"}', headers: { 'content-type': 'application/json' } } },
      upstream: { type: 'roundrobin', nodes: { '127.0.0.1:1': 1 } },
    });
    const res = await gw.fetch('/dead');
    assert.equal(res.status, 503);
    assert.equal(res.headers.get('content-type'), 'application/json');
    assert.equal(await res.text(), '{"error":"down"}');
  });

  test('function route: status, headers, filters', async () => {
    await gw.putRoute('rr3', {
      uri: '/fn',
      plugins: {
        openfunction: { function_uri: `${fn.urls['function-sample']}/default/world` },
        'response-rewrite': { status_code: 201, headers: { add: ['X-Fn: yes'] }, filters: [{ regex: 'world', replace: 'fngate' }] },
      },
    });
    const res = await gw.fetch('/fn');
    assert.equal(res.status, 201);
    assert.equal(res.headers.get('x-fn'), 'yes');
    assert.equal(await res.text(), 'Hello, fngate!');
  });

  test('bad confs are refused with APISIX messages', async () => {
    const put = (conf: unknown) => gw.admin('PUT', '/routes/rr9', { uri: '/x', plugins: { 'response-rewrite': conf }, upstream: upstream() });
    const code = await put({ status_code: 599 });
    assert.equal(code.status, 400);
    assert.equal(
      code.json.error_msg,
      'failed to check the configuration of plugin response-rewrite err: property "status_code" validation failed: expected 599 to be at most 598',
    );
    assert.match((await put({ body: 'abc%', body_base64: true })).json.error_msg, /invalid base64 content/);
    assert.match((await put({ vars: [['status', '=', 500]] })).json.error_msg, /failed to validate the 'vars' expression/);
    assert.match((await put({ filters: [{ regex: 'hello', replace: 'x', options: 'h' }] })).json.error_msg, /unknown flag "h"/);
    assert.equal((await gw.admin('GET', '/routes/rr9')).status, 404);
  });
});

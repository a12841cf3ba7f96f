/**
 * More black-box conformance, on every runtime: Admin API corners an audit found undocumented or untested
 * (`?ttl=`, the generated `_meta` schema, invalid JSON, other resource types, `?subsystem=`), and forwarding
 * behaviours of issue 2 without a test until then (openfunction's default `timeout`, a `br` answer, an
 * `https` upstream whose certificate does not verify). Differences from APISIX: docs/apisix-compatibility.md.
 */
import assert from 'node:assert/strict';
import { createServer, request as httpRequest, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { brotliCompressSync, brotliDecompressSync, gunzipSync } from 'node:zlib';
import { toJsonSchema } from '@valibot/to-json-schema';
import { metaSchema } from '../../src/core/plugins/check.ts';
import type { FunctionServers } from '../functions/functions.ts';
import { NO_OPENSSL, selfSignedCert } from '../helpers/tls.ts';
import {
  type AdminResult,
  type GatewayUnderTest,
  gatewayPerFile,
  openfunctionPlugins as of,
  RUNTIME,
} from './harness.ts';

let gw: GatewayUnderTest;
let fn: FunctionServers;
gatewayPerFile((g, f) => {
  gw = g;
  fn = f;
});
const echoRoute = (uri: string) => ({ uri, plugins: of(`${fn.urls.echo}/`) });

function assertError(res: AdminResult, status: number, msg: string | RegExp): void {
  assert.equal(res.status, status, res.text);
  assert.deepEqual(Object.keys(res.json ?? {}), ['error_msg'], res.text);
  if (typeof msg === 'string') assert.equal(res.json.error_msg, msg);
  else assert.match(res.json.error_msg, msg);
}

const KEY_NOT_FOUND = { message: 'Key not found', error_msg: 'Key not found' };

/** Listen on an ephemeral loopback port; `close()` also drops open connections. */
async function listen(server: Server): Promise<{ port: number; close(): Promise<void> }> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

// ---------------------------------------------------------------------------------------------------------
describe('?ttl= on Admin API writes (APISIX: an etcd lease; fngate: no expiring keys, so refused)', () => {
  const NOT_A_NUMBER = 'invalid argument ttl: should be a number';
  const UNSUPPORTED = /^invalid argument ttl: fngate does not support expiring keys/;

  test('PUT /routes/t1?ttl=abc → 400 as APISIX, nothing stored', async () => {
    assertError(await gw.admin('PUT', '/routes/t1?ttl=abc', echoRoute('/t1')), 400, NOT_A_NUMBER);
    const got = await gw.admin('GET', '/routes/t1');
    assert.equal(got.status, 404, got.text);
    assert.deepEqual(got.json, KEY_NOT_FOUND);
  });

  test('an empty or repeated ttl is not a number either', async () => {
    assertError(await gw.admin('PUT', '/routes/t1?ttl=', echoRoute('/t1')), 400, NOT_A_NUMBER);
    assertError(await gw.admin('PUT', '/routes/t1?ttl', echoRoute('/t1')), 400, NOT_A_NUMBER);
    assertError(await gw.admin('PUT', '/routes/t1?ttl=1&ttl=2', echoRoute('/t1')), 400, NOT_A_NUMBER);
  });

  test('a numeric ttl on PUT, POST and PATCH (routes and upstreams) → 400 naming the reason, nothing changed', async () => {
    assertError(await gw.admin('PUT', '/routes/t1?ttl=1', echoRoute('/t1')), 400, UNSUPPORTED);
    assert.equal((await gw.admin('GET', '/routes/t1')).status, 404);
    const before = (await gw.admin('GET', '/routes')).json.total;
    assertError(await gw.admin('POST', '/routes?ttl=60', echoRoute('/t2')), 400, UNSUPPORTED);
    assert.equal((await gw.admin('GET', '/routes')).json.total, before, 'POST with ttl stored a route');
    await gw.putRoute('t3', echoRoute('/t3'));
    assertError(await gw.admin('PATCH', '/routes/t3?ttl=5', { desc: 'patched' }), 400, UNSUPPORTED);
    assertError(await gw.admin('PATCH', '/routes/t3/desc?ttl=5', '"patched"'), 400, UNSUPPORTED);
    assert.equal((await gw.admin('GET', '/routes/t3')).json.value.desc, undefined);
    const up = { type: 'roundrobin', nodes: { '127.0.0.1:1980': 1 } };
    assertError(await gw.admin('PUT', '/upstreams/u1?ttl=10', up), 400, UNSUPPORTED);
    assert.equal((await gw.admin('GET', '/upstreams/u1')).status, 404);
  });

  test('reads and deletes: a non-number is refused as APISIX does, a number is ignored as APISIX does', async () => {
    assertError(await gw.admin('GET', '/routes?ttl=abc'), 400, NOT_A_NUMBER);
    assertError(await gw.admin('GET', '/routes/t3?ttl=abc'), 400, NOT_A_NUMBER);
    assert.equal((await gw.admin('GET', '/routes/t3?ttl=5')).status, 200);
    assertError(await gw.admin('DELETE', '/routes/t3?ttl=abc'), 400, NOT_A_NUMBER);
    assert.equal((await gw.admin('DELETE', '/routes/t3?ttl=5')).status, 200);
    assert.equal((await gw.admin('GET', '/routes/t3')).status, 404);
  });

  test('the route of a refused write is not served', async () => {
    await gw.admin('PUT', '/routes/t4?ttl=1', echoRoute('/t4'));
    const res = await gw.fetch('/t4');
    assert.equal(res.status, 404);
    await res.body?.cancel();
  });
});

// ---------------------------------------------------------------------------------------------------------
describe('plugin schemas: `_meta` generated from the one valibot schema', () => {
  // What @valibot/to-json-schema makes of config.ts's metaSchema, the schema that checks `_meta` in a write.
  const { $schema: _, ...generated } = toJsonSchema(metaSchema, { errorMode: 'ignore' });

  test('/schema/plugins/openfunction and /plugins/openfunction carry it as properties._meta', async () => {
    for (const path of ['/schema/plugins/openfunction', '/plugins/openfunction']) {
      const res = await gw.admin('GET', path);
      assert.equal(res.status, 200, res.text);
      assert.deepEqual(res.json.properties._meta, generated, path);
      assert.equal(res.json.$comment, 'this is a mark for our injected plugin schema');
    }
    // The parts fngate honours, nothing else.
    assert.deepEqual(Object.keys(generated.properties ?? {}).sort(), ['disable', 'error_response', 'filter', 'priority']);
    assert.equal(generated.additionalProperties, false);
  });

  test('the schema says what the write check does', async () => {
    const ok = await gw.admin('PUT', '/routes/m1', {
      uri: '/m1',
      plugins: of(`${fn.urls.echo}/`, { _meta: { disable: false, priority: 10, filter: [['arg_a', '==', '1']], error_response: { m: 1 } } }),
    });
    assert.equal(ok.status, 201, ok.text);
    for (const bad of [{ filter: 'x' }, { filter: [['arg_a', '=', '1']] }, { priority: 1.5 }, { disable: 'no' }, { error_response: true }, { pre_function: 'x' }]) {
      const res = await gw.admin('PUT', '/routes/m1', { uri: '/m1', plugins: of(`${fn.urls.echo}/`, { _meta: bad }) });
      assert.equal(res.status, 400, `${JSON.stringify(bad)}: ${res.text}`);
      assert.match(res.json.error_msg, /property "_meta" validation failed/);
    }
  });
});

// ---------------------------------------------------------------------------------------------------------
describe('documented differences of the Admin API', () => {
  test('invalid JSON → 400 "invalid request body: <the parser message>", the body not echoed (no req_body)', async () => {
    const body = '{"uri": "/x", "plugins": {"openfunction": {"authorization": {"service_token": "user:secret"}}';
    const res = await gw.admin('PUT', '/routes/j1', body);
    assert.equal(res.status, 400, res.text);
    assert.match(res.json.error_msg, /^invalid request body: \S/);
    assert.equal(res.json.req_body, undefined);
    assert.ok(!res.text.includes('secret'), `the answer echoes the body: ${res.text}`);
  });

  test('bad ids: APISIX\'s prefix, then what is wrong', async () => {
    const res = await gw.admin('PUT', '/routes/a$b', echoRoute('/badid'));
    assertError(res, 400, /^invalid configuration: property "id" validation failed: failed to match pattern .* with "a\$b"$/);
  });

  // services, consumers, consumer_groups, global_rules, plugin_configs, plugin_metadata: admin-resources.test.ts.
  // `credentials` exists only under consumers/<username>/.
  test('a 65-character id: the same "string too long" message in the path as in the body', async () => {
    const long = 'c'.repeat(65);
    const msg = 'invalid configuration: property "id" validation failed: string too long, expected at most 64, got 65';
    assertError(await gw.admin('PUT', `/routes/${long}`, echoRoute('/longid')), 400, msg);
    assertError(await gw.admin('PUT', '/routes', { ...echoRoute('/longid'), id: long }), 400, msg);
    assertError(await gw.admin('GET', `/routes/${long}`), 400, msg);
    assertError(await gw.admin('PATCH', `/upstreams/${long}`, { desc: 'x' }), 400, msg);
  });

  test('a duration beyond the longest timer (2^31-1 ms) → 400 naming the field; the bound itself is accepted', async () => {
    const fnRoute = (extra: Record<string, unknown>) => ({ uri: '/dur', plugins: of(`${fn.urls.echo}/`, extra) });
    assertError(
      await gw.admin('PUT', '/routes/dur', fnRoute({ timeout: 2147483648 })),
      400,
      /property "timeout" validation failed: expected 2147483648 to be at most 2147483647$/,
    );
    const up = { nodes: { '127.0.0.1:1980': 1 } };
    assertError(
      await gw.admin('PUT', '/upstreams/dur', { ...up, timeout: { connect: 1, send: 1, read: 3000000 } }),
      400,
      /property "read" validation failed: expected 3000000 to be at most 2147483$/,
    );
    assertError(
      await gw.admin('PUT', '/routes/dur', { uri: '/dur', upstream: up, timeout: { connect: 1, send: 1e12, read: 1 } }),
      400,
      /property "send" validation failed/,
    );
    const max = await gw.admin('PUT', '/routes/dur', fnRoute({ timeout: 2147483647, keepalive_timeout: 2147483647 }));
    assert.equal(max.status, 201, max.text);
    assertError(await gw.admin('PATCH', '/routes/dur', { plugins: { openfunction: { timeout: 2 ** 31 } } }), 400, /at most 2147483647/);
    assert.equal((await gw.admin('DELETE', '/routes/dur')).status, 200);
  });

  test('`__proto__` / `constructor` / `prototype` keys in record fields → 400 naming the key, by PUT, POST and PATCH', async () => {
    const up = `{"nodes":{"127.0.0.1:1980":1}}`;
    const bodies: [string, string, string, string][] = [
      ['PUT', '/routes/rk1', `{"uri":"/rk","plugins":{"constructor":{}}}`, 'constructor'],
      ['PUT', '/routes/rk1', `{"uri":"/rk","upstream":{"nodes":{"__proto__":{"a":1}}}}`, '__proto__'],
      ['PUT', '/routes/rk1', `{"uri":"/rk","upstream":${up},"labels":{"prototype":"x"}}`, 'prototype'],
      ['POST', '/routes', `{"uri":"/rk","upstream":${up},"labels":{"a":"b","__proto__":"x"}}`, '__proto__'],
      ['PUT', '/upstreams/rk1', `{"nodes":[{"host":"127.0.0.1","port":1980,"weight":1,"metadata":{"constructor":1}}]}`, 'constructor'],
    ];
    for (const [method, path, body, key] of bodies) {
      assertError(await gw.admin(method, path, body), 400, new RegExp(`the key "${key}" is not allowed`));
    }
    await gw.putRoute('rk2', { uri: '/rk2', upstream: { nodes: { '127.0.0.1:1980': 1 } }, labels: { a: 'b' } });
    const before = await gw.admin('GET', '/routes/rk2');
    assertError(await gw.admin('PATCH', '/routes/rk2', '{"labels":{"__proto__":"x"}}'), 400, /the key "__proto__" is not allowed/);
    assertError(await gw.admin('PATCH', '/routes/rk2/plugins', '{"constructor":{}}'), 400, /the key "constructor" is not allowed/);
    assert.deepEqual((await gw.admin('GET', '/routes/rk2')).json, before.json);
    assert.equal((await gw.admin('GET', '/upstreams/rk1')).status, 404);
  });

  for (const resource of [
    'credentials',
    'protos',
    'secrets',
    'stream_routes',
  ]) {
    test(`/${resource} (not implemented) → 404 Unsupported resource type`, async () => {
      assertError(await gw.admin('GET', `/${resource}`), 404, `Unsupported resource type: ${resource}`);
      assertError(await gw.admin('PUT', `/${resource}/1`, { id: '1' }), 404, `Unsupported resource type: ${resource}`);
    });
  }

  test('/plugins/list?subsystem=: http as the default, stream empty, anything else 400 as APISIX', async () => {
    const plain = await gw.admin('GET', '/plugins/list');
    assert.equal(plain.status, 200);
    const http = await gw.admin('GET', '/plugins/list?subsystem=http');
    assert.deepEqual(http.json, plain.json);
    assert.ok(http.json.includes('openfunction'));
    const stream = await gw.admin('GET', '/plugins/list?subsystem=stream');
    assert.equal(stream.status, 200);
    assert.deepEqual(stream.json, []);
    const bogus = await gw.admin('GET', '/plugins/list?subsystem=bogus');
    assert.equal(bogus.status, 400);
    assert.equal(bogus.text, 'invalid subsystem passed');
  });

  test('/plugins/<name>?subsystem=: bogus → 400 unsupported subsystem, stream → 404', async () => {
    assertError(await gw.admin('GET', '/plugins/openfunction?subsystem=bogus'), 400, 'unsupported subsystem: bogus');
    assertError(await gw.admin('GET', '/plugins/openfunction?subsystem=stream'), 404, 'plugin not found in subsystem stream');
    const http = await gw.admin('GET', '/plugins/openfunction?subsystem=http');
    assert.equal(http.status, 200);
    assert.ok(http.json.required.includes('function_uri'));
  });
});

// ---------------------------------------------------------------------------------------------------------
describe('openfunction: the default timeout', () => {
  test('no `timeout` set: a function slower than 3 s → 504 after about 3 s (APISIX default 3000 ms)', async () => {
    await gw.putRoute('slow3', { uri: '/slow3', plugins: of(`${fn.urls.slow}/?delay=6000`) });
    const t0 = Date.now();
    const res = await gw.fetch('/slow3', { signal: AbortSignal.timeout(10_000) });
    const took = Date.now() - t0;
    assert.equal(res.status, 504, await res.clone().text());
    assert.match(((await res.json()) as { error_msg: string }).error_msg, /timeout|within|3000/i);
    assert.ok(took >= 2900, `answered after ${took} ms: the default is 3000 ms`);
    assert.ok(took < 4500, `answered after ${took} ms: the default is 3000 ms`);
  });

  test('a function that answers within 3 s is served', async () => {
    await gw.putRoute('slow2', { uri: '/slow2', plugins: of(`${fn.urls.slow}/?delay=1500`) });
    const res = await gw.fetch('/slow2', { signal: AbortSignal.timeout(10_000) });
    assert.equal(res.status, 200);
    assert.equal(await res.text(), 'slow done');
  });
});

// ---------------------------------------------------------------------------------------------------------
describe('a br-encoded answer reaches the client decodable', () => {
  const TEXT = 'hello brotli\n'.repeat(200);
  const BR = brotliCompressSync(TEXT);
  let br: { port: number; close(): Promise<void> };

  before(async () => {
    // A function that answers br (with Content-Length) when the request accepts it, as a CDN origin would.
    br = await listen(
      createServer((req, res) => {
        req.resume();
        res.setHeader('content-type', 'text/plain; charset=utf-8');
        res.setHeader('vary', 'Accept-Encoding');
        if (/\bbr\b/.test(String(req.headers['accept-encoding'] ?? ''))) {
          res.setHeader('content-encoding', 'br');
          res.setHeader('content-length', BR.length);
          res.end(BR);
        } else {
          res.setHeader('content-length', Buffer.byteLength(TEXT));
          res.end(TEXT);
        }
      }),
    );
  });
  after(() => br?.close());

  /** Decode what arrived by its Content-Encoding, as a client does. */
  function decode(headers: Record<string, string | string[] | undefined>, body: Buffer): string {
    const coding = String(headers['content-encoding'] ?? 'identity').toLowerCase();
    if (coding === 'br') return brotliDecompressSync(body).toString();
    if (coding === 'gzip') return gunzipSync(body).toString();
    assert.equal(coding, 'identity', `unexpected content-encoding ${coding}`);
    return body.toString();
  }

  test('raw HTTP (nothing decodes for us): the bytes match their Content-Encoding and Content-Length', async () => {
    await gw.putRoute('br', { uri: '/br', plugins: of(`http://127.0.0.1:${br.port}/`) });
    const { status, headers, body } = await rawGet(`${gw.proxyUrl}/br`, { 'accept-encoding': 'br' });
    assert.equal(status, 200);
    assert.equal(decode(headers, body), TEXT);
    if (headers['content-length'] !== undefined) assert.equal(Number(headers['content-length']), body.length);
  });

  test('fetch (which decodes br) reads the text', async () => {
    const res = await gw.fetch('/br', { headers: { 'accept-encoding': 'br' } });
    assert.equal(res.status, 200);
    assert.equal(await res.text(), TEXT);
  });
});

// ---------------------------------------------------------------------------------------------------------
describe('an https upstream whose certificate does not verify', () => {
  // The self-signed certificate is made with the openssl CLI; without it there is no https server to test against.
  const skip = NO_OPENSSL;
  let tls: { port: number; close(): Promise<void> } | undefined;
  let reached = 0;

  before(async () => {
    if (NO_OPENSSL) return;
    tls = await listen(
      createHttpsServer(selfSignedCert(), (req, res) => {
        reached++;
        req.resume();
        res.end('served over tls');
      }),
    );
  });
  after(() => tls?.close());

  const TLS_ERROR = /certificate|tls|ssl|self.signed|handshake|UnknownIssuer/i;

  /** The gateway's error names the TLS failure, except on workerd, whose fetch rejects with an opaque error. */
  function assertTlsError(errorMsg: string): void {
    if (RUNTIME === 'workerd') {
      // workerd's fetch throws `internal error; reference = …` for a certificate it refuses and tells the Worker
      // nothing more, so the gateway cannot say why; the status is still right and nothing was served.
      assert.match(errorMsg, /failed to connect/);
      return;
    }
    assert.match(errorMsg, TLS_ERROR);
  }

  test('upstream `scheme: "https"`, default verification → 502/503 with a TLS error, never the answer', { skip }, async () => {
    await gw.putRoute('tls-up', {
      uri: '/tls-up',
      upstream: { type: 'roundrobin', scheme: 'https', nodes: { [`127.0.0.1:${tls!.port}`]: 1 } },
    });
    const res = await gw.fetch('/tls-up', { signal: AbortSignal.timeout(10_000) });
    const text = await res.text();
    assert.ok(res.status === 502 || res.status === 503, `${res.status} ${text}`);
    assertTlsError(JSON.parse(text).error_msg);
    assert.equal(reached, 0, 'a request reached the server through an unverified connection');
  });

  test('openfunction with an https function_uri, default ssl_verify → the same', { skip }, async () => {
    await gw.putRoute('tls-of', { uri: '/tls-of', plugins: of(`https://127.0.0.1:${tls!.port}/`) });
    const res = await gw.fetch('/tls-of', { signal: AbortSignal.timeout(10_000) });
    const text = await res.text();
    assert.ok(res.status === 502 || res.status === 503, `${res.status} ${text}`);
    assertTlsError(JSON.parse(text).error_msg);
    assert.equal(reached, 0, 'a request reached the server through an unverified connection');
  });
});

function rawGet(
  url: string,
  headers: Record<string, string>,
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

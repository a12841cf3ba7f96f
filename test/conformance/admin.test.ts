/**
 * The Admin API (v3), black box: one gateway process, real HTTP, APISIX's wording and status codes
 * (/work/shared/reference/apisix-facts.md §1, §2, §4). Where fngate deliberately differs from APISIX the
 * test says so in a comment. Runs on every runtime.
 */
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { type FunctionServer, type FunctionServers, startFunction, startFunctions } from '../functions/functions.ts';
import { type AdminResult, type GatewayUnderTest, startGateway } from './harness.ts';

let gw: GatewayUnderTest;
let fn: FunctionServers;
/** A second, independent echo server (to see which node an upstream picked). */
let echo2: FunctionServer;

before(async () => {
  fn = await startFunctions();
  echo2 = await startFunction('echo');
  gw = await startGateway();
});
after(async () => {
  await gw?.stop();
  await fn?.close();
  await echo2?.close();
});

/** A valid route served by the echo function at `<echo>/<tag>`. */
function fnRoute(uri: string, extra: Record<string, unknown> = {}, tag = 'r'): Record<string, unknown> {
  return { uri, plugins: { openfunction: { function_uri: `${fn.urls.echo}/${tag}` } }, ...extra };
}

const nowS = () => Math.floor(Date.now() / 1000);

/** Wait until the wall clock is past second `s` (at most ~1 s), so a later timestamp is distinguishable. */
async function afterSecond(s: number): Promise<void> {
  while (nowS() <= s) await new Promise((r) => setTimeout(r, 20));
}

interface RawRes {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

/** node:http with the request target sent byte for byte (fetch would resolve `..` and `%2e%2e` first). */
function raw(
  base: string,
  path: string,
  opts: { method?: string; headers?: Record<string, string>; body?: string | Buffer } = {},
): Promise<RawRes> {
  return new Promise((resolve, reject) => {
    const u = new URL(base);
    const req = httpRequest(
      { host: u.hostname, port: u.port, path, method: opts.method ?? 'GET', headers: opts.headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

// biome-ignore lint/suspicious/noExplicitAny: the echo function's JSON
async function proxied(path: string): Promise<{ status: number; json: any }> {
  const res = await gw.fetch(path);
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, json };
}

function assertError(res: AdminResult, status: number, msg: string): void {
  assert.equal(res.status, status, res.text);
  assert.deepEqual(res.json, { error_msg: msg });
}

const KEY_NOT_FOUND = { message: 'Key not found', error_msg: 'Key not found' };

// ---------------------------------------------------------------------------------------------------------
describe('auth and headers', () => {
  test('X-API-KEY header is accepted', async () => {
    const res = await fetch(`${gw.adminUrl}/apisix/admin/routes`, { headers: { 'X-API-KEY': gw.key } });
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.equal(typeof body.total, 'number');
    assert.ok(Array.isArray(body.list));
  });

  test('?api_key= query is accepted', async () => {
    const res = await fetch(`${gw.adminUrl}/apisix/admin/routes?api_key=${gw.key}`);
    assert.equal(res.status, 200);
  });

  test('cookie x_api_key is accepted', async () => {
    const res = await fetch(`${gw.adminUrl}/apisix/admin/routes`, {
      headers: { cookie: `a=b; x_api_key=${gw.key}; c=d` },
    });
    assert.equal(res.status, 200);
  });

  test('no key → 401 missing apikey', async () => {
    const res = await fetch(`${gw.adminUrl}/apisix/admin/routes`);
    assert.equal(res.status, 401);
    assert.deepEqual(await res.json(), { error_msg: 'failed to check token', description: 'missing apikey' });
  });

  test('wrong key → 401 wrong apikey (header, query, cookie, empty query)', async () => {
    for (const [url, headers] of [
      [`${gw.adminUrl}/apisix/admin/routes`, { 'x-api-key': 'nope' }],
      [`${gw.adminUrl}/apisix/admin/routes?api_key=nope`, {}],
      [`${gw.adminUrl}/apisix/admin/routes`, { cookie: 'x_api_key=nope' }],
      // An empty ?api_key= counts as present.
      [`${gw.adminUrl}/apisix/admin/routes?api_key=`, {}],
      // The query wins over a correct header (APISIX's lookup order).
      [`${gw.adminUrl}/apisix/admin/routes?api_key=nope`, { 'x-api-key': gw.key }],
    ] as const) {
      const res = await fetch(url, { headers });
      assert.equal(res.status, 401, url);
      assert.deepEqual(await res.json(), { error_msg: 'failed to check token', description: 'wrong apikey' });
    }
  });

  test('a write without a key is refused and stores nothing', async () => {
    const res = await fetch(`${gw.adminUrl}/apisix/admin/routes/noauth`, {
      method: 'PUT',
      body: JSON.stringify(fnRoute('/noauth')),
    });
    assert.equal(res.status, 401);
    assert.deepEqual(await gw.admin('GET', '/routes/noauth').then((r) => r.json), KEY_NOT_FOUND);
  });

  test('HEAD /apisix/admin → 200, no body, with or without a key (health probe)', async () => {
    for (const headers of [{}, { 'x-api-key': gw.key }] as Record<string, string>[]) {
      const res = await fetch(`${gw.adminUrl}/apisix/admin`, { method: 'HEAD', headers });
      assert.equal(res.status, 200, JSON.stringify(headers));
      assert.equal(await res.text(), '');
    }
  });

  test('responses carry X-API-VERSION v3, JSON content type and CORS headers', async () => {
    const res = await gw.admin('GET', '/routes');
    assert.equal(res.headers.get('x-api-version'), 'v3');
    assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
    assert.equal(res.headers.get('access-control-allow-origin'), '*');
    assert.equal(res.headers.get('access-control-allow-credentials'), 'true');
    assert.equal(res.headers.get('access-control-expose-headers'), '*');
    assert.equal(res.headers.get('access-control-max-age'), '3600');
    // Error answers too.
    const miss = await gw.admin('GET', '/routes/does-not-exist');
    assert.equal(miss.headers.get('x-api-version'), 'v3');
    assert.match(miss.headers.get('content-type') ?? '', /^application\/json/);
    // JSON bodies end with a newline, as cjson's do.
    assert.ok(res.text.endsWith('\n'));
  });

  test('CORS preflight OPTIONS → 200 with the allowed methods and headers, no key needed', async () => {
    const res = await fetch(`${gw.adminUrl}/apisix/admin/routes/1`, {
      method: 'OPTIONS',
      headers: { origin: 'http://ui.example', 'access-control-request-method': 'PUT' },
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('access-control-allow-methods'), 'POST, GET, PUT, OPTIONS, DELETE, PATCH');
    assert.equal(res.headers.get('access-control-allow-headers'), '*');
    assert.equal(res.headers.get('access-control-allow-origin'), '*');
    assert.equal(await res.text(), '');
  });
});

// ---------------------------------------------------------------------------------------------------------
describe('PUT / POST / GET', () => {
  test('PUT new → 201 {key, value} with id and timestamps; PUT again → 200, create_time kept, update_time now', async () => {
    const t0 = nowS();
    const created = await gw.admin('PUT', '/routes/put1', fnRoute('/put1', { name: 'first' }));
    const t1 = nowS();
    assert.equal(created.status, 201, created.text);
    assert.deepEqual(Object.keys(created.json).sort(), ['key', 'value']);
    assert.equal(created.json.key, '/apisix/routes/put1');
    const v = created.json.value;
    assert.equal(v.id, 'put1');
    assert.equal(v.uri, '/put1');
    assert.equal(v.name, 'first');
    assert.ok(
      Number.isInteger(v.create_time) && v.create_time >= t0 && v.create_time <= t1,
      `create_time ${v.create_time}`,
    );
    assert.equal(v.update_time, v.create_time);
    // Since APISIX 3.14 schema defaults are not written.
    assert.equal(v.priority, undefined);
    assert.equal(v.status, undefined);

    await afterSecond(v.create_time);
    const replaced = await gw.admin('PUT', '/routes/put1', fnRoute('/put1', { name: 'second' }));
    assert.equal(replaced.status, 200, replaced.text);
    assert.equal(replaced.json.key, '/apisix/routes/put1');
    assert.equal(replaced.json.value.name, 'second');
    assert.equal(replaced.json.value.create_time, v.create_time);
    assert.ok(replaced.json.value.update_time > v.create_time, 'update_time moved on');
    assert.ok(replaced.json.value.update_time <= nowS());
  });

  test('PUT /routes with the id in the body', async () => {
    const res = await gw.admin('PUT', '/routes', fnRoute('/inbody', { id: 'inbody' }));
    assert.equal(res.status, 201, res.text);
    assert.equal(res.json.key, '/apisix/routes/inbody');
    assert.equal(res.json.value.id, 'inbody');
    const got = await gw.admin('GET', '/routes/inbody');
    assert.equal(got.status, 200);
    assert.equal(got.json.value.uri, '/inbody');
  });

  test('PUT /routes with an integer id in the body keeps it an integer (APISIX routes2.t)', async () => {
    const res = await gw.admin('PUT', '/routes', fnRoute('/intid', { id: 987654 }));
    assert.equal(res.status, 201, res.text);
    assert.equal(res.json.key, '/apisix/routes/987654');
    assert.equal(res.json.value.id, 987654);
  });

  test('URL id and body id compared as strings: equal is fine, different → 400 wrong route id', async () => {
    const same = await gw.admin('PUT', '/routes/55', fnRoute('/same', { id: 55 }));
    assert.equal(same.status, 201, same.text);
    assert.equal(same.json.key, '/apisix/routes/55');
    assertError(await gw.admin('PUT', '/routes/56', fnRoute('/diff', { id: '57' })), 400, 'wrong route id');
    assert.equal((await gw.admin('GET', '/routes/56')).status, 404);
    assert.equal((await gw.admin('GET', '/routes/57')).status, 404);
  });

  test('PUT without any id → 400 missing route id', async () => {
    assertError(await gw.admin('PUT', '/routes', fnRoute('/noid')), 400, 'missing route id');
    assertError(await gw.admin('PUT', '/upstreams', { nodes: {} }), 400, 'missing upstream id');
  });

  test('ids outside ^[a-zA-Z0-9-_.]{1,64}$ → 400 naming "id"', async () => {
    for (const [path, body] of [
      ['/routes/a$b', fnRoute('/badid')],
      [`/routes/${'a'.repeat(65)}`, fnRoute('/badid')],
      ['/routes', fnRoute('/badid', { id: 'a b' })],
      ['/routes', fnRoute('/badid', { id: '' })],
      ['/routes', fnRoute('/badid', { id: 0 })],
      ['/routes', fnRoute('/badid', { id: 1.5 })],
      ['/routes', fnRoute('/badid', { id: true })],
    ] as const) {
      const res = await gw.admin('PUT', path, body);
      assert.equal(res.status, 400, `${path} ${JSON.stringify(body)}: ${res.text}`);
      assert.match(res.json.error_msg, /^invalid configuration: property "id" validation failed/, res.text);
    }
    // A 64-character id is fine.
    const ok = await gw.admin('PUT', `/routes/${'b'.repeat(64)}`, fnRoute('/longid'));
    assert.equal(ok.status, 201, ok.text);
  });

  test('POST → 201 with a 20-digit generated id, stored and served', async () => {
    const a = await gw.admin('POST', '/routes', fnRoute('/posted-a'));
    const b = await gw.admin('POST', '/routes', fnRoute('/posted-b'));
    assert.equal(a.status, 201, a.text);
    assert.equal(b.status, 201, b.text);
    for (const r of [a, b]) {
      assert.match(r.json.value.id, /^\d{20}$/);
      assert.equal(r.json.key, `/apisix/routes/${r.json.value.id}`);
      assert.ok(Number.isInteger(r.json.value.create_time));
      assert.equal(r.json.value.update_time, r.json.value.create_time);
    }
    assert.notEqual(a.json.value.id, b.json.value.id);
    assert.ok(BigInt(b.json.value.id) > BigInt(a.json.value.id), 'ids grow');
    const got = await gw.admin('GET', `/routes/${a.json.value.id}`);
    assert.equal(got.status, 200);
    assert.equal(got.json.value.uri, '/posted-a');
  });

  test('POST with an id (URL or body) → 400 wrong route id, do not need it', async () => {
    assertError(await gw.admin('POST', '/routes/p1', fnRoute('/p1')), 400, 'wrong route id, do not need it');
    assertError(await gw.admin('POST', '/routes', fnRoute('/p1', { id: 'p1' })), 400, 'wrong route id, do not need it');
    assertError(await gw.admin('POST', '/upstreams', { id: 'u', nodes: {} }), 400, 'wrong upstream id, do not need it');
    assert.equal((await gw.admin('GET', '/routes/p1')).status, 404);
  });

  test('GET one → {key, value, createdIndex, modifiedIndex}; an update moves modifiedIndex only', async () => {
    await gw.putRoute('get1', fnRoute('/get1'));
    const first = await gw.admin('GET', '/routes/get1');
    assert.equal(first.status, 200);
    assert.deepEqual(Object.keys(first.json).sort(), ['createdIndex', 'key', 'modifiedIndex', 'value']);
    assert.equal(first.json.key, '/apisix/routes/get1');
    assert.equal(first.json.value.id, 'get1');
    assert.ok(Number.isInteger(first.json.createdIndex) && first.json.createdIndex > 0);
    assert.equal(first.json.modifiedIndex, first.json.createdIndex);
    await gw.putRoute('get1', fnRoute('/get1', { desc: 'v2' }));
    const second = await gw.admin('GET', '/routes/get1');
    assert.equal(second.json.createdIndex, first.json.createdIndex);
    assert.ok(second.json.modifiedIndex > first.json.modifiedIndex);
    assert.equal(second.json.value.desc, 'v2');
  });

  test('GET missing → 404 {"message":"Key not found"} (fngate adds error_msg)', async () => {
    const res = await gw.admin('GET', '/routes/nope-nope');
    assert.equal(res.status, 404);
    assert.deepEqual(res.json, KEY_NOT_FOUND);
    const up = await gw.admin('GET', '/upstreams/nope-nope');
    assert.equal(up.status, 404);
    assert.deepEqual(up.json, KEY_NOT_FOUND);
  });

  test('create_time / update_time are forbidden in PUT and POST bodies (also upstream.* and plugins.*)', async () => {
    assertError(
      await gw.admin('PUT', '/routes/ts1', fnRoute('/ts1', { create_time: 1 })),
      400,
      'the property is forbidden:  create_time',
    );
    assertError(
      await gw.admin('PUT', '/routes/ts1', fnRoute('/ts1', { update_time: 1 })),
      400,
      'the property is forbidden:  update_time',
    );
    assertError(
      await gw.admin('POST', '/routes', fnRoute('/ts1', { create_time: 1 })),
      400,
      'the property is forbidden:  create_time',
    );
    assertError(
      await gw.admin('PUT', '/routes/ts1', {
        uri: '/ts1',
        upstream: { nodes: { [`127.0.0.1:${fn.ports.echo}`]: 1 }, create_time: 1 },
      }),
      400,
      'the property is forbidden:  upstream.create_time',
    );
    assertError(
      await gw.admin('PUT', '/routes/ts1', {
        uri: '/ts1',
        plugins: { update_time: 1, openfunction: { function_uri: fn.urls.echo } },
      }),
      400,
      'the property is forbidden:  plugins.update_time',
    );
    assertError(
      await gw.admin('PUT', '/upstreams/ts1', { nodes: {}, create_time: 1 }),
      400,
      'the property is forbidden:  create_time',
    );
    assert.equal((await gw.admin('GET', '/routes/ts1')).status, 404);
  });
});

// ---------------------------------------------------------------------------------------------------------
describe('list', () => {
  test('GET /routes → {total, list} of envelopes; a trailing slash is the same list', async () => {
    await gw.putRoute('list1', fnRoute('/list1', { labels: { lst: 'x' } }));
    const res = await gw.admin('GET', '/routes');
    assert.equal(res.status, 200);
    assert.equal(res.json.total, res.json.list.length);
    const mine = res.json.list.find((i: { key: string }) => i.key === '/apisix/routes/list1');
    assert.ok(mine, 'list holds the route');
    assert.deepEqual(Object.keys(mine).sort(), ['createdIndex', 'key', 'modifiedIndex', 'value']);
    assert.equal(mine.value.uri, '/list1');
    const slash = await gw.admin('GET', '/routes/');
    assert.equal(slash.status, 200);
    assert.equal(slash.json.total, res.json.total);
  });

  test('an empty list is {"list":[],"total":0}', async () => {
    const res = await gw.admin('GET', '/routes?label=no-such-label-anywhere');
    assert.equal(res.status, 200);
    assert.deepEqual(res.json, { list: [], total: 0 });
  });

  test('pagination: both page and page_size numeric; sorted by createdIndex; total before paging', async () => {
    // Ids whose byte order (pg-1, pg-10, pg-11, …) differs from the creation order.
    for (let i = 1; i <= 25; i++) await gw.putRoute(`pg-${i}`, fnRoute(`/pg/${i}`, { labels: { pg: 'yes' } }));
    const ids = (r: AdminResult) => r.json.list.map((i: { value: { id: string } }) => i.value.id);
    const p1 = await gw.admin('GET', '/routes?label=pg&page=1&page_size=10');
    assert.equal(p1.status, 200);
    assert.equal(p1.json.total, 25);
    assert.deepEqual(
      ids(p1),
      Array.from({ length: 10 }, (_, i) => `pg-${i + 1}`),
    );
    const p3 = await gw.admin('GET', '/routes?label=pg&page=3&page_size=10');
    assert.equal(p3.json.total, 25);
    assert.deepEqual(ids(p3), ['pg-21', 'pg-22', 'pg-23', 'pg-24', 'pg-25']);
    const p4 = await gw.admin('GET', '/routes?label=pg&page=4&page_size=10');
    assert.deepEqual(p4.json, { list: [], total: 25 });
    // page < 1 counts as 1.
    const p0 = await gw.admin('GET', '/routes?label=pg&page=0&page_size=10');
    assert.deepEqual(ids(p0), ids(p1));
    // Only one of them, or a non-numeric one: no paging at all (every item, page_size bounds not checked).
    for (const q of ['page=1', 'page_size=10', 'page=x&page_size=10', 'page=1&page_size=x', 'page=1&page_size=abc5']) {
      const all = await gw.admin('GET', `/routes?label=pg&${q}`);
      assert.equal(all.status, 200, q);
      assert.equal(all.json.list.length, 25, q);
    }
    const small = await gw.admin('GET', '/routes?label=pg&page_size=5');
    assert.equal(small.status, 200);
    assert.equal(small.json.list.length, 25);
  });

  test('page_size outside [10, 500] → 400, plain-text body', async () => {
    for (const size of ['9', '501', '0', '-10']) {
      const res = await gw.admin('GET', `/routes?page=1&page_size=${size}`);
      assert.equal(res.status, 400, size);
      assert.equal(res.text, 'page_size must be between 10 and 500');
      assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
    }
    for (const size of ['10', '500']) {
      assert.equal((await gw.admin('GET', `/routes?page=1&page_size=${size}`)).status, 200, size);
    }
  });

  test('filter name: unanchored regular expression on value.name', async () => {
    await gw.putRoute('flt-n1', fnRoute('/flt-n1', { name: 'flt-alpha' }));
    await gw.putRoute('flt-n2', fnRoute('/flt-n2', { name: 'flt-alphabet' }));
    await gw.putRoute('flt-n3', fnRoute('/flt-n3', { name: 'flt-beta' }));
    const ids = (r: AdminResult) => r.json.list.map((i: { value: { id: string } }) => i.value.id).sort();
    const alpha = await gw.admin('GET', '/routes?name=flt-alpha');
    assert.deepEqual(ids(alpha), ['flt-n1', 'flt-n2']);
    assert.equal(alpha.json.total, 2);
    assert.deepEqual(ids(await gw.admin('GET', '/routes?name=^flt-b')), ['flt-n3']);
    assert.deepEqual(ids(await gw.admin('GET', `/routes?name=${encodeURIComponent('flt-alpha$')}`)), ['flt-n1']);
  });

  test('filter label: keeps items whose labels have that key (values ignored)', async () => {
    await gw.putRoute('flt-l1', fnRoute('/flt-l1', { labels: { fltkey: 'one' } }));
    await gw.putRoute('flt-l2', fnRoute('/flt-l2', { labels: { fltkey: 'two', other: 'x' } }));
    await gw.putRoute('flt-l3', fnRoute('/flt-l3', { labels: { notfltkey: 'one' } }));
    const res = await gw.admin('GET', '/routes?label=fltkey');
    assert.deepEqual(res.json.list.map((i: { value: { id: string } }) => i.value.id).sort(), ['flt-l1', 'flt-l2']);
    assert.equal(res.json.total, 2);
  });

  test('filter uri: regular expression on uri or any of uris', async () => {
    await gw.putRoute('flt-u1', fnRoute('/flt-uri/one'));
    await gw.putRoute('flt-u2', {
      uris: ['/elsewhere', '/flt-uri/two'],
      plugins: { openfunction: { function_uri: fn.urls.echo } },
    });
    await gw.putRoute('flt-u3', fnRoute('/not-it/flt-ur'));
    const res = await gw.admin('GET', '/routes?uri=/flt-uri/');
    assert.deepEqual(res.json.list.map((i: { value: { id: string } }) => i.value.id).sort(), ['flt-u1', 'flt-u2']);
    assert.equal(res.json.total, 2);
  });
});

// ---------------------------------------------------------------------------------------------------------
describe('PATCH', () => {
  test('whole-object PATCH: nested objects merge, arrays replace, null deletes, update_time moves', async () => {
    const put = await gw.putRoute(
      'pm1',
      fnRoute('/pm1', { desc: 'to be deleted', methods: ['GET', 'POST'], labels: { a: '1', b: '2' } }),
    );
    const created = put.json.value;
    await afterSecond(created.create_time);
    const res = await gw.admin('PATCH', '/routes/pm1', {
      desc: null,
      methods: ['PUT'],
      labels: { b: '3', c: '4' },
      plugins: { openfunction: { timeout: 5000 } },
    });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(Object.keys(res.json).sort(), ['key', 'value']);
    assert.equal(res.json.key, '/apisix/routes/pm1');
    const v = res.json.value;
    assert.equal('desc' in v, false, 'null deletes');
    assert.deepEqual(v.methods, ['PUT']);
    assert.deepEqual(v.labels, { a: '1', b: '3', c: '4' });
    assert.deepEqual(v.plugins, { openfunction: { function_uri: `${fn.urls.echo}/r`, timeout: 5000 } });
    assert.equal(v.uri, '/pm1');
    assert.equal(v.id, 'pm1');
    assert.equal(v.create_time, created.create_time);
    assert.ok(v.update_time > created.update_time);
    const got = await gw.admin('GET', '/routes/pm1');
    assert.deepEqual(got.json.value, v);
  });

  test('a whole-object PATCH may set create_time / update_time itself; a sub-path PATCH always moves update_time', async () => {
    await gw.putRoute('pts', fnRoute('/pts'));
    const a = await gw.admin('PATCH', '/routes/pts', { update_time: 123, create_time: 100 });
    assert.equal(a.status, 200, a.text);
    assert.equal(a.json.value.update_time, 123);
    assert.equal(a.json.value.create_time, 100);
    const t0 = nowS();
    const b = await gw.admin('PATCH', '/routes/pts/desc', '"x"');
    assert.equal(b.status, 200, b.text);
    assert.ok(b.json.value.update_time >= t0, `update_time ${b.json.value.update_time}`);
    assert.equal(b.json.value.create_time, 100);
  });

  test('concurrent PATCHes of different fields: none is lost (503 value changed before overwritten is allowed)', async () => {
    await gw.putRoute('pcc', fnRoute('/pcc', { labels: { base: '0' } }));
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => gw.admin('PATCH', '/routes/pcc', { labels: { [`k${i}`]: String(i) } })),
    );
    const ok: string[] = [];
    results.forEach((r, i) => {
      assert.ok(r.status === 200 || r.status === 503, `PATCH ${i} → ${r.status} ${r.text}`);
      if (r.status === 200) ok.push(`k${i}`);
      else assert.deepEqual(r.json, { error_msg: 'value changed before overwritten' });
    });
    const labels = (await gw.admin('GET', '/routes/pcc')).json.value.labels;
    for (const k of ok) assert.ok(k in labels, `${k} was acknowledged but is missing: ${JSON.stringify(labels)}`);
    assert.equal(labels.base, '0');
  });

  test('concurrent PUTs to one id all succeed: exactly one 201, the others 200 (APISIX PUT is a plain set)', async () => {
    const n = 30;
    const results = await Promise.all(
      Array.from({ length: n }, (_, i) => gw.admin('PUT', '/routes/pcreate', fnRoute('/pcreate', { desc: String(i) }))),
    );
    const statuses = results.map((r) => r.status).sort();
    assert.deepEqual(statuses, [...Array<number>(n - 1).fill(200), 201], results.find((r) => r.status >= 500)?.text);
    // The stored value is one of the bodies that was acknowledged.
    const got = await gw.admin('GET', '/routes/pcreate');
    assert.ok(Number(got.json.value.desc) >= 0 && Number(got.json.value.desc) < n);
  });

  test('PATCH sub-path /routes/x/methods with an array replaces that field', async () => {
    await gw.putRoute('ps1', fnRoute('/ps1', { methods: ['GET'] }));
    const res = await gw.admin('PATCH', '/routes/ps1/methods', ['POST', 'DELETE']);
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json.value.methods, ['POST', 'DELETE']);
    assert.equal(res.json.value.uri, '/ps1');
    assert.deepEqual((await gw.admin('GET', '/routes/ps1')).json.value.methods, ['POST', 'DELETE']);
  });

  test('PATCH sub-path /routes/x/plugins/openfunction/timeout sets one nested value', async () => {
    await gw.putRoute('ps2', fnRoute('/ps2'));
    const res = await gw.admin('PATCH', '/routes/ps2/plugins/openfunction/timeout', 4321);
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json.value.plugins, { openfunction: { function_uri: `${fn.urls.echo}/r`, timeout: 4321 } });
  });

  test('PATCH sub-path through a non-object → 400 invalid sub-path, route unchanged', async () => {
    await gw.putRoute('ps3', fnRoute('/ps3'));
    const before = await gw.admin('GET', '/routes/ps3');
    assertError(await gw.admin('PATCH', '/routes/ps3/uri/x', '"y"'), 400, 'invalid sub-path: /uri');
    assert.deepEqual((await gw.admin('GET', '/routes/ps3')).json, before.json);
  });

  test('PATCH a missing route → 404 Key not found, nothing created', async () => {
    const res = await gw.admin('PATCH', '/routes/pmissing', { desc: 'x' });
    assert.equal(res.status, 404);
    assert.deepEqual(res.json, KEY_NOT_FOUND);
    const sub = await gw.admin('PATCH', '/routes/pmissing/desc', '"x"');
    assert.equal(sub.status, 404);
    assert.equal((await gw.admin('GET', '/routes/pmissing')).status, 404);
  });

  test('PATCH with a non-object body → 400 invalid configuration; empty → missing new configuration', async () => {
    await gw.putRoute('pn1', fnRoute('/pn1'));
    for (const body of ['[1,2]', '"str"', '42', 'null', 'true']) {
      assertError(await gw.admin('PATCH', '/routes/pn1', body), 400, 'invalid configuration');
    }
    assertError(await gw.admin('PATCH', '/routes/pn1', ''), 400, 'missing new configuration');
    assertError(await gw.admin('PATCH', '/routes', { desc: 'x' }), 400, 'missing route id');
  });

  test('PATCH result is re-validated: an invalid merge → 400 and the route is unchanged', async () => {
    await gw.putRoute('pv1', fnRoute('/pv1'));
    const before = await gw.admin('GET', '/routes/pv1');
    const res = await gw.admin('PATCH', '/routes/pv1', { uri: 5 });
    assertError(
      res,
      400,
      'invalid configuration: property "uri" validation failed: wrong type: expected string, got number',
    );
    const res2 = await gw.admin('PATCH', '/routes/pv1/plugins/openfunction/function_uri', 'null');
    assert.equal(res2.status, 400, res2.text);
    assert.match(res2.json.error_msg, /property "function_uri" is required/);
    assert.deepEqual((await gw.admin('GET', '/routes/pv1')).json, before.json);
  });
});

// ---------------------------------------------------------------------------------------------------------
describe('DELETE and upstreams', () => {
  test('DELETE → 200 {"deleted":"1","key":…}; then GET → 404', async () => {
    await gw.putRoute('del1', fnRoute('/del1'));
    const res = await gw.admin('DELETE', '/routes/del1');
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json, { deleted: '1', key: '/apisix/routes/del1' });
    assert.equal((await gw.admin('GET', '/routes/del1')).status, 404);
  });

  test('DELETE missing → 404 Key not found', async () => {
    const res = await gw.admin('DELETE', '/routes/del-missing');
    assert.equal(res.status, 404);
    assert.deepEqual(res.json, KEY_NOT_FOUND);
  });

  test('DELETE without id → 400 missing route id', async () => {
    assertError(await gw.admin('DELETE', '/routes'), 400, 'missing route id');
    assertError(await gw.admin('DELETE', '/upstreams'), 400, 'missing upstream id');
  });

  test('upstream CRUD: PUT 201, GET, PUT 200, PATCH, DELETE; nodes map and array forms', async () => {
    const nodes = { [`127.0.0.1:${fn.ports.echo}`]: 1 };
    const c = await gw.admin('PUT', '/upstreams/ucrud', { nodes, name: 'u' });
    assert.equal(c.status, 201, c.text);
    assert.equal(c.json.key, '/apisix/upstreams/ucrud');
    assert.deepEqual(c.json.value.nodes, nodes);
    assert.equal(c.json.value.type, undefined, 'defaults are not written');
    assert.ok(Number.isInteger(c.json.value.create_time));
    const g = await gw.admin('GET', '/upstreams/ucrud');
    assert.equal(g.status, 200);
    assert.equal(g.json.value.name, 'u');
    const arrayNodes = [{ host: '127.0.0.1', port: fn.ports.echo, weight: 2 }];
    const r = await gw.admin('PUT', '/upstreams/ucrud', { nodes: arrayNodes, type: 'roundrobin' });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json.value.nodes, arrayNodes);
    const p = await gw.admin('PATCH', '/upstreams/ucrud', { desc: 'patched' });
    assert.equal(p.status, 200, p.text);
    assert.equal(p.json.value.desc, 'patched');
    assert.deepEqual(p.json.value.nodes, arrayNodes);
    const post = await gw.admin('POST', '/upstreams', { nodes: {} });
    assert.equal(post.status, 201, post.text);
    assert.match(post.json.value.id, /^\d{20}$/);
    const list = await gw.admin('GET', '/upstreams');
    assert.ok(list.json.list.some((i: { key: string }) => i.key === '/apisix/upstreams/ucrud'));
    const d = await gw.admin('DELETE', '/upstreams/ucrud');
    assert.deepEqual(d.json, { deleted: '1', key: '/apisix/upstreams/ucrud' });
    assert.equal((await gw.admin('GET', '/upstreams/ucrud')).status, 404);
  });

  test('upstream schema: empty nodes accepted; other balancer types, bare IPv6, rewrite without host refused', async () => {
    assert.equal((await gw.admin('PUT', '/upstreams/uempty', { nodes: {} })).status, 201);
    assert.equal((await gw.admin('PUT', '/upstreams/uempty2', { nodes: [] })).status, 201);
    // fngate differs: APISIX accepts any balancer type string; fngate only implements roundrobin and says so.
    const chash = await gw.admin('PUT', '/upstreams/ubad', { nodes: {}, type: 'chash', key: 'remote_addr' });
    assert.equal(chash.status, 400);
    assert.match(chash.json.error_msg, /not supported by fngate/);
    assertError(
      await gw.admin('PUT', '/upstreams/ubad', { nodes: [{ host: '::1', port: 80, weight: 1 }] }),
      400,
      "invalid configuration: IPv6 address must be enclosed with '[' and ']'",
    );
    const rw = await gw.admin('PUT', '/upstreams/ubad', { nodes: {}, pass_host: 'rewrite' });
    assert.equal(rw.status, 400);
    assert.match(rw.json.error_msg, /`upstream_host` can't be empty when `pass_host` is `rewrite`/);
    const neg = await gw.admin('PUT', '/upstreams/ubad', { nodes: { '127.0.0.1:80': -1 } });
    assert.equal(neg.status, 400);
    assert.equal((await gw.admin('GET', '/upstreams/ubad')).status, 404);
  });

  test('DELETE an upstream a route uses → 400; force=true deletes it; force=yes does not', async () => {
    await gw.admin('PUT', '/upstreams/uused', { nodes: { [`127.0.0.1:${fn.ports.echo}`]: 1 } });
    await gw.putRoute('uses-uused', { uri: '/uses-uused', upstream_id: 'uused' });
    const refused = await gw.admin('DELETE', '/upstreams/uused');
    assertError(refused, 400, 'can not delete this upstream, route [uses-uused] is still using it now');
    assertError(
      await gw.admin('DELETE', '/upstreams/uused?force=yes'),
      400,
      'can not delete this upstream, route [uses-uused] is still using it now',
    );
    assert.equal((await gw.admin('GET', '/upstreams/uused')).status, 200);
    const forced = await gw.admin('DELETE', '/upstreams/uused?force=true');
    assert.equal(forced.status, 200, forced.text);
    assert.deepEqual(forced.json, { deleted: '1', key: '/apisix/upstreams/uused' });
    // The dangling route now answers 502, as APISIX does for a dangling upstream_id.
    const res = await gw.fetch('/uses-uused');
    await res.arrayBuffer();
    assert.equal(res.status, 502);
  });

  test('route with an unknown upstream_id → 400 failed to fetch upstream info', async () => {
    assertError(
      await gw.admin('PUT', '/routes/dangling', { uri: '/dangling', upstream_id: 'no-such-up' }),
      400,
      'failed to fetch upstream info by upstream id [no-such-up], response code: 404',
    );
    assert.equal((await gw.admin('GET', '/routes/dangling')).status, 404);
  });
});

// ---------------------------------------------------------------------------------------------------------
describe('bodies and validation', () => {
  test('invalid JSON → 400 invalid request body: …', async () => {
    for (const body of ['{"uri": ', '{uri: "/x"}', "{'a':1}", '{"a":1}}']) {
      const res = await gw.admin('PUT', '/routes/badjson', body);
      assert.equal(res.status, 400, body);
      assert.match(res.json.error_msg, /^invalid request body: ./, body);
    }
  });

  test('body that is not UTF-8 → 400, not 5xx', async () => {
    const res = await fetch(`${gw.adminUrl}/apisix/admin/routes/badutf8`, {
      method: 'PUT',
      headers: { 'x-api-key': gw.key },
      body: Buffer.from([0x7b, 0x22, 0x75, 0x72, 0x69, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]), // {"uri":"\xff\xfe"}
    });
    const text = await res.text();
    assert.equal(res.status, 400, text);
    assert.match(JSON.parse(text).error_msg, /^invalid request body/);
  });

  test('empty body → 400 missing configurations (PUT and POST)', async () => {
    assertError(await gw.admin('PUT', '/routes/empty'), 400, 'missing configurations');
    assertError(await gw.admin('PUT', '/routes/empty', ''), 400, 'missing configurations');
    assertError(await gw.admin('POST', '/routes', '  \n'), 400, 'missing configurations');
    assertError(await gw.admin('PUT', '/upstreams/empty'), 400, 'missing configurations');
  });

  test('a body that is JSON but not an object → 400', async () => {
    for (const body of ['[]', '"x"', '1', 'null']) {
      const res = await gw.admin('PUT', '/routes/notobj', body);
      assert.equal(res.status, 400, body);
      assert.match(res.json.error_msg, /^invalid configuration/);
    }
  });

  test('body over 1.5 MiB → 413 (fngate differs: APISIX answers 400), Content-Length or chunked', async () => {
    // fngate answers 413 Payload Too Large where APISIX answers 400; the message is APISIX's.
    const big = JSON.stringify(fnRoute('/big', { desc: 'x', labels: { pad: 'y'.repeat(1572864) } }));
    const res = await gw.admin('PUT', '/routes/big', big);
    assert.equal(res.status, 413, res.text.slice(0, 200));
    assert.match(
      res.json.error_msg,
      /^invalid request body: request size \d+ is greater than the maximum size 1572864 allowed$/,
    );
    // Chunked (no Content-Length): counted while reading. (node:http, because undici's fetch reports an early
    // answer to a request whose upload is still going as a socket error.)
    const chunked = await new Promise<RawRes>((resolve, reject) => {
      const u = new URL(gw.adminUrl);
      const req = httpRequest(
        {
          host: u.hostname,
          port: u.port,
          path: '/apisix/admin/routes/big',
          method: 'PUT',
          headers: { 'x-api-key': gw.key },
          agent: false,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString() }),
          );
        },
      );
      req.on('error', reject);
      const chunk = Buffer.alloc(64 * 1024, 'x');
      let n = 0;
      const pump = () => {
        while (n < 32) {
          n++;
          if (!req.write(chunk)) return void req.once('drain', pump);
        }
        req.end();
      };
      pump();
    });
    assert.equal(chunked.status, 413, chunked.text.slice(0, 200));
    assert.match(JSON.parse(chunked.text).error_msg, /greater than the maximum size 1572864 allowed$/);
    assert.equal((await gw.admin('GET', '/routes/big')).status, 404);
    // Exactly at the limit is not "over" (it fails later, as invalid JSON, not as too large).
    const atLimit = await gw.admin('PUT', '/routes/big', 'x'.repeat(1572864));
    assert.equal(atLimit.status, 400);
  });

  test('deeply nested JSON (10,000 and 500,000 levels) → 400, gateway still answers', async () => {
    const depth = (n: number) =>
      `{"uri":"/deep","plugins":{"openfunction":{"function_uri":"${fn.urls.echo}","x":${'['.repeat(n)}${']'.repeat(n)}}}}`;
    for (const body of [
      depth(10_000),
      '['.repeat(10_000) + ']'.repeat(10_000),
      '{"a":'.repeat(10_000) + '1' + '}'.repeat(10_000),
      '['.repeat(500_000) + ']'.repeat(500_000),
    ]) {
      const res = await gw.admin('PUT', '/routes/deep', body);
      assert.equal(res.status, 400, res.text.slice(0, 200));
      const patch = await gw.admin('PATCH', '/routes/deep', body);
      assert.ok(patch.status === 400 || patch.status === 404, `PATCH ${patch.status}`);
    }
    assert.equal((await gw.admin('GET', '/routes')).status, 200);
  });

  test('schema errors name the field (APISIX wording)', async () => {
    const cases: [unknown, string][] = [
      [
        { uri: '/s', plugins: { openfunction: { timeout: 6000 } } },
        'failed to check the configuration of plugin openfunction err: property "function_uri" is required',
      ],
      [
        fnRoute(1 as unknown as string),
        'invalid configuration: property "uri" validation failed: wrong type: expected string, got number',
      ],
      [fnRoute('/s', { foo: 1 }), 'invalid configuration: additional properties forbidden, found foo'],
      [{ uri: '/s', plugins: { 'no-such-plugin': {} } }, 'unknown plugin [no-such-plugin]'],
      [fnRoute('/s', { host: 'a.com', hosts: ['b.com'] }), 'only one of host or hosts is allowed'],
      [
        fnRoute('/s', { remote_addr: '127.0.0.1', remote_addrs: ['127.0.0.1'] }),
        'only one of remote_addr or remote_addrs is allowed',
      ],
      [
        fnRoute('/s', { methods: ['GET', 'FETCH'] }),
        'invalid configuration: property "methods" validation failed: failed to validate item 2: matches none of the enum values',
      ],
      [
        fnRoute('/s', { name: 'n'.repeat(257) }),
        'invalid configuration: property "name" validation failed: string too long, expected at most 256, got 257',
      ],
      [
        { uri: '/s', plugins: { openfunction: { function_uri: 30858 } } },
        'failed to check the configuration of plugin openfunction err: property "function_uri" validation failed: wrong type: expected string, got number',
      ],
      [
        { uri: '/s', plugins: { openfunction: { function_uri: fn.urls.echo, bogus: 1 } } },
        'failed to check the configuration of plugin openfunction err: additional properties forbidden, found bogus',
      ],
      [
        { uri: '/s', upstream: { nodes: { '127.0.0.1:80': 1 }, extra: true } },
        'invalid configuration: property "upstream" validation failed: additional properties forbidden, found extra',
      ],
      // fngate differs: a route with neither uri nor uris gets a clear message instead of APISIX's allOf/oneOf text.
      [
        { plugins: { openfunction: { function_uri: fn.urls.echo } } },
        'invalid configuration: exactly one of "uri" or "uris" is required',
      ],
      [fnRoute('/s', { uris: ['/t'] }), 'invalid configuration: exactly one of "uri" or "uris" is required'],
    ];
    for (const [body, msg] of cases) {
      assertError(await gw.admin('PUT', '/routes/schema1', body), 400, msg);
    }
    assert.equal((await gw.admin('GET', '/routes/schema1')).status, 404);
  });

  test('integer fields given a string say "expected integer" (APISIX jsonschema wording)', async () => {
    assertError(
      await gw.admin('PUT', '/routes/int1', fnRoute('/s', { priority: 'high' })),
      400,
      'invalid configuration: property "priority" validation failed: wrong type: expected integer, got string',
    );
    assertError(
      await gw.admin('PUT', '/routes/int1', fnRoute('/s', { priority: 1.5 })),
      400,
      'invalid configuration: property "priority" validation failed: wrong type: expected integer, got number',
    );
  });

  test('keys named constructor / __proto__ / prototype are additional properties too', async () => {
    for (const key of ['constructor', '__proto__', 'prototype']) {
      const body = `{"uri":"/proto","plugins":{"openfunction":{"function_uri":"${fn.urls.echo}"}},"${key}":{"x":1}}`;
      const res = await gw.admin('PUT', '/routes/proto1', body);
      assertError(res, 400, `invalid configuration: additional properties forbidden, found ${key}`);
      const inPlugin = `{"uri":"/proto","plugins":{"openfunction":{"function_uri":"${fn.urls.echo}","${key}":1}}}`;
      const res2 = await gw.admin('PUT', '/routes/proto1', inPlugin);
      assert.equal(res2.status, 400, `plugin conf with ${key}: ${res2.text}`);
    }
    assert.equal((await gw.admin('GET', '/routes/proto1')).status, 404);
  });

  test('unsupported fields get a clear "not supported by fngate" 400 (fngate differs from APISIX)', async () => {
    // fngate differs: APISIX runs these Lua snippets; fngate refuses them explicitly rather than ignore them.
    for (const [field, value] of [
      ['filter_func', 'function(vars) return true end'],
      ['script', 'local _M = {} return _M'],
    ] as const) {
      const res = await gw.admin('PUT', '/routes/unsup', fnRoute('/unsup', { [field]: value }));
      assert.equal(res.status, 400, field);
      assert.match(res.json.error_msg, /not supported by fngate/, field);
      assert.ok(res.json.error_msg.includes(`"${field}"`), `${field}: ${res.json.error_msg}`);
    }
  });

  test('a route needs plugins, upstream or upstream_id', async () => {
    const res = await gw.admin('PUT', '/routes/bare', { uri: '/bare' });
    assert.equal(res.status, 400);
    assert.match(res.json.error_msg, /^invalid configuration/);
    // `plugins: {}` (empty) satisfies APISIX's anyOf.
    const empty = await gw.admin('PUT', '/routes/bare', { uri: '/bare', plugins: {} });
    assert.equal(empty.status, 201, empty.text);
  });

  test('a rejected write leaves the stored route (and what is served) unchanged', async () => {
    await gw.putRoute('keep1', fnRoute('/keep1', { desc: 'original' }, 'keep-v1'));
    const before = await gw.admin('GET', '/routes/keep1');
    for (const [method, path, body] of [
      ['PUT', '/routes/keep1', fnRoute(7 as unknown as string)],
      ['PUT', '/routes/keep1', { uri: '/keep1', plugins: { 'no-such-plugin': {} } }],
      ['PUT', '/routes/keep1', fnRoute('/keep1', { create_time: 5 })],
      ['PUT', '/routes/keep1', '{"broken'],
      ['PUT', '/routes/keep1', fnRoute('/keep1', { upstream_id: 'missing-up' })],
      ['PATCH', '/routes/keep1', { methods: ['NOPE'] }],
      ['PATCH', '/routes/keep1/uri', '123'],
    ] as const) {
      const res = await gw.admin(method, path, body);
      assert.equal(res.status, 400, `${method} ${path}: ${res.text}`);
    }
    const afterGet = await gw.admin('GET', '/routes/keep1');
    assert.deepEqual(afterGet.json, before.json);
    const served = await proxied('/keep1');
    assert.equal(served.status, 200);
    assert.equal(served.json.url, '/keep-v1');
  });
});

// ---------------------------------------------------------------------------------------------------------
describe('plugins, schema and resources', () => {
  test('/plugins/list → JSON array containing openfunction', async () => {
    const res = await gw.admin('GET', '/plugins/list');
    assert.equal(res.status, 200);
    assert.ok(Array.isArray(res.json));
    assert.ok(res.json.includes('openfunction'));
    assert.equal(new Set(res.json).size, res.json.length);
  });

  test('/plugins/openfunction and /schema/plugins/openfunction → the JSON schema, function_uri required', async () => {
    const a = await gw.admin('GET', '/plugins/openfunction');
    const b = await gw.admin('GET', '/schema/plugins/openfunction');
    for (const res of [a, b]) {
      assert.equal(res.status, 200);
      assert.equal(res.json.type, 'object');
      assert.ok(Array.isArray(res.json.required) && res.json.required.includes('function_uri'), res.text);
      assert.equal(res.json.properties.function_uri.type, 'string');
      // APISIX's integer ms, or fngate's {connect, send, read} object (cold_start's separate timeouts).
      const timeout = res.json.properties.timeout;
      const types = (timeout.anyOf ?? [timeout]).map((t: { type?: string }) => t.type);
      assert.ok(types.includes('integer') && types.includes('object'), JSON.stringify(timeout));
      assert.equal(res.json.$comment, 'this is a mark for our injected plugin schema');
    }
    assert.deepEqual(a.json, b.json);
  });

  test('the published plugin schema admits the injected _meta property', async () => {
    // APISIX injects `_meta` into every plugin schema; fngate accepts `_meta` in a plugin conf, so a client
    // validating against the published schema must not be told it is forbidden.
    const res = await gw.admin('GET', '/plugins/openfunction');
    assert.ok(res.json.properties._meta, 'properties._meta present');
    const put = await gw.admin('PUT', '/routes/meta1', {
      uri: '/meta1',
      plugins: { openfunction: { function_uri: fn.urls.echo, _meta: { disable: false } } },
    });
    assert.equal(put.status, 201, put.text);
  });

  test('unknown plugin → 404 plugin not found in subsystem http', async () => {
    assertError(await gw.admin('GET', '/plugins/no-such-plugin'), 404, 'plugin not found in subsystem http');
    assertError(await gw.admin('GET', '/schema/plugins/no-such-plugin'), 404, 'plugin not found in subsystem http');
  });

  test('/schema/route and /schema/upstream → JSON schemas; unknown schema → 400', async () => {
    const route = await gw.admin('GET', '/schema/route');
    assert.equal(route.status, 200);
    assert.equal(route.json.type, 'object');
    for (const k of ['uri', 'uris', 'methods', 'hosts', 'priority', 'plugins', 'upstream', 'upstream_id', 'status']) {
      assert.ok(k in route.json.properties, `route schema has ${k}`);
    }
    const up = await gw.admin('GET', '/schema/upstream');
    assert.equal(up.status, 200);
    for (const k of ['nodes', 'type', 'pass_host', 'upstream_host', 'retries', 'timeout']) {
      assert.ok(k in up.json.properties, `upstream schema has ${k}`);
    }
    assertError(await gw.admin('GET', '/schema/foo'), 400, 'not found schema: foo');
    // A write verb on /schema is not implemented → 404 not found.
    assertError(await gw.admin('PUT', '/schema/route', {}), 404, 'not found');
  });

  test('unknown resource → 404 Unsupported resource type: foo', async () => {
    assertError(await gw.admin('GET', '/foo'), 404, 'Unsupported resource type: foo');
    assertError(await gw.admin('PUT', '/foo/1', { a: 1 }), 404, 'Unsupported resource type: foo');
  });

  test('ids with %2F, .., %2e%2e, NUL, bad escapes → 400 or 404, never 5xx, nothing stored', async () => {
    const body = JSON.stringify(fnRoute('/weird'));
    const paths = [
      '/apisix/admin/routes/a%2Fb',
      '/apisix/admin/routes/a%2F..%2F..%2Fupstreams%2Fx',
      '/apisix/admin/routes/%2e%2e',
      '/apisix/admin/routes/..',
      '/apisix/admin/routes/../../x',
      '/apisix/admin/routes/..%2f..%2fy',
      '/apisix/admin/routes/a%00b',
      '/apisix/admin/routes/%00',
      '/apisix/admin/routes/%zz',
      '/apisix/admin/routes/%',
      '/apisix/admin/routes/%C0%AE%C0%AE',
      '/apisix/admin/routes/a%5Cb',
    ];
    const before = await gw.admin('GET', '/routes');
    for (const path of paths) {
      for (const method of ['GET', 'PUT', 'PATCH', 'DELETE', 'POST']) {
        const res = await raw(gw.adminUrl, path, {
          method,
          headers: { 'x-api-key': gw.key, 'content-type': 'application/json' },
          body: method === 'GET' || method === 'DELETE' ? undefined : body,
        });
        assert.ok(
          res.status === 400 || res.status === 404,
          `${method} ${path} → ${res.status} ${res.text.slice(0, 200)}`,
        );
      }
    }
    const afterList = await gw.admin('GET', '/routes');
    assert.equal(afterList.json.total, before.json.total, 'no route was created');
    for (const item of afterList.json.list as { key: string }[]) {
      assert.match(item.key, /^\/apisix\/routes\/[a-zA-Z0-9\-_.]+$/);
    }
  });
});

// ---------------------------------------------------------------------------------------------------------
describe('writes are visible to the very next proxied request', () => {
  test('PUT create / replace', async () => {
    await gw.putRoute('vis1', fnRoute('/vis1', {}, 'v1'));
    const a = await proxied('/vis1');
    assert.equal(a.status, 200);
    assert.equal(a.json.url, '/v1');
    await gw.putRoute('vis1', fnRoute('/vis1', {}, 'v2'));
    assert.equal((await proxied('/vis1')).json.url, '/v2');
  });

  test('POST', async () => {
    const res = await gw.admin('POST', '/routes', fnRoute('/vis-post', {}, 'posted'));
    assert.equal(res.status, 201);
    const p = await proxied('/vis-post');
    assert.equal(p.status, 200);
    assert.equal(p.json.url, '/posted');
  });

  test('PATCH (whole object and sub-path)', async () => {
    await gw.putRoute('vis2', fnRoute('/vis2', {}, 'p0'));
    assert.equal((await proxied('/vis2')).status, 200);
    await gw.admin('PATCH', '/routes/vis2', { uri: '/vis2-new' });
    assert.equal((await proxied('/vis2')).status, 404);
    assert.equal((await proxied('/vis2-new')).status, 200);
    const sub = await gw.admin(
      'PATCH',
      '/routes/vis2/plugins/openfunction/function_uri',
      JSON.stringify(`${fn.urls.echo}/p1`),
    );
    assert.equal(sub.status, 200, sub.text);
    assert.equal((await proxied('/vis2-new')).json.url, '/p1');
    await gw.admin('PATCH', '/routes/vis2/status', '0');
    assert.equal((await proxied('/vis2-new')).status, 404);
    await gw.admin('PATCH', '/routes/vis2/status', '1');
    assert.equal((await proxied('/vis2-new')).status, 200);
  });

  test('DELETE', async () => {
    await gw.putRoute('vis3', fnRoute('/vis3'));
    assert.equal((await proxied('/vis3')).status, 200);
    assert.equal((await gw.admin('DELETE', '/routes/vis3')).status, 200);
    const gone = await proxied('/vis3');
    assert.equal(gone.status, 404);
    assert.deepEqual(gone.json, { error_msg: '404 Route Not Found' });
  });

  test('upstream PUT / PATCH reach routes that use it by upstream_id', async () => {
    const one = `127.0.0.1:${fn.ports.echo}`;
    const two = `127.0.0.1:${echo2.port}`;
    assert.equal((await gw.admin('PUT', '/upstreams/vis-up', { nodes: { [one]: 1 }, pass_host: 'node' })).status, 201);
    await gw.putRoute('vis4', { uri: '/vis4', upstream_id: 'vis-up' });
    assert.equal((await proxied('/vis4')).json.headers.host, one);
    assert.equal((await gw.admin('PATCH', '/upstreams/vis-up', { nodes: { [one]: null, [two]: 1 } })).status, 200);
    assert.equal((await proxied('/vis4')).json.headers.host, two);
    assert.equal((await gw.admin('PUT', '/upstreams/vis-up', { nodes: { [one]: 1 }, pass_host: 'node' })).status, 200);
    assert.equal((await proxied('/vis4')).json.headers.host, one);
  });
});

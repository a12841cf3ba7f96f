// Property-based fuzzing of the Admin API (fast-check, fixed seeds, bounded runs: well under 60 s) against a
// real gateway process: every resource and verb, random and near-valid JSON, wrong types, huge strings, deep
// nesting, unicode, ids with `/`, `..`, `%2F`, NUL (in the URL and in the body). Properties: never a 5xx,
// the process stays up, a refused write leaves the stored config (DATA_DIR/config.json) byte for byte as it
// was, everything listed can be fetched by its id, and the gateway's memory stays flat after a warm-up.
// Plus the explicit limits: body 1.5 MiB → 413, JSON depth 64 → 400.
// Run: npm run build && node --import tsx --test test/e2e/fuzz-admin.test.ts
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { type GatewayUnderTest, startGateway } from '../conformance/harness.ts';

const LIMIT = 1572864; // ADMIN_BODY_LIMIT (APISIX's 1.5 MiB)
/** fast-check runs of the random-operation property (after 1000 warm-up runs); ~10 s on a 2-core machine. */
const RUNS = 8000;

let gw: GatewayUnderTest;
let adminPort: number;
const agent = new Agent({ keepAlive: true, maxSockets: 4 });

before(async () => {
  gw = await startGateway();
  adminPort = Number(new URL(gw.adminUrl).port);
  // Something for GET/PATCH/DELETE to find.
  await gw.putRoute('seed', { uri: '/seed', upstream: { type: 'roundrobin', nodes: { '127.0.0.1:1980': 1 } } });
  const up = await gw.admin('PUT', '/upstreams/seed', { type: 'roundrobin', nodes: { '127.0.0.1:1980': 1 } });
  assert.equal(up.status, 201, up.text);
  await gw.putRoute('uses-up', { uri: '/uses', upstream_id: 'seed' });
});

after(async () => {
  agent.destroy();
  await gw?.stop();
});

interface Reply {
  status: number;
  body: string;
}

/** An admin request with the path exactly as given (no URL normalisation), and a raw body. */
function adminRaw(
  method: string,
  path: string,
  body?: string | Buffer,
  opts: { chunked?: boolean; headers?: Record<string, string>; key?: string; keepAlive?: boolean } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { 'x-api-key': opts.key ?? gw.key, ...opts.headers };
    // Explicit framing: Node's client sends a GET/DELETE body without any (garbage to the server) otherwise.
    if (body !== undefined) {
      if (opts.chunked) headers['transfer-encoding'] = 'chunked';
      else headers['content-length'] = Buffer.byteLength(body);
    }
    // Kept-alive connections only in the tight fuzz loop: after an idle pause a reused socket can race the
    // server's keep-alive timeout (a client-side "socket hang up" that would say nothing about the gateway).
    const viaAgent = opts.keepAlive ? agent : false;
    const req = request({ host: '127.0.0.1', port: adminPort, method, path, headers, agent: viaAgent, timeout: 15_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer within 15 s`)));
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

const storeFile = () => join(gw.dataDir, 'config.json');
const stored = () => readFileSync(storeFile(), 'utf8');

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : Number.NaN;
}

// ------------------------------------------------------------------------------------------------
// Arbitraries

const RESOURCES = [
  'routes',
  'upstreams',
  'services',
  'consumers',
  'ssls',
  'plugin_configs',
  'global_rules',
  'plugin_metadata',
  'consumer_groups',
  'stream_routes',
  'protos',
  'secrets',
  'schema',
  'plugins',
  'Routes',
  'unknown',
];
const METHODS = ['GET', 'PUT', 'POST', 'PATCH', 'DELETE'];
const ODD_METHODS = ['OPTIONS', 'HEAD', 'TRACE', 'PROPFIND', 'FOO'];
/** Methods Node's HTTP parser refuses outright (400 and close, possibly while the client is still sending). */
const UNPARSEABLE_METHODS = new Set(['FOO']);

/** Path segments people and attackers type: valid ids, traversal, encoded slashes and NULs, unicode. */
const trickySegment = fc.constantFrom(
  '1',
  'seed',
  'uses-up',
  'a.b-c_d',
  '..',
  '.',
  '%2e%2e',
  '%2F',
  '%2f',
  'a%2Fb',
  '%252F',
  '%00',
  'a%00b',
  '%',
  '%zz',
  '%C3%A9',
  '%F0%9F%98%80',
  '%ED%A0%80', // a UTF-8-encoded lone surrogate
  '%FF',
  '__proto__',
  'constructor',
  'x'.repeat(64),
  'x'.repeat(65),
  '9'.repeat(30),
  '-1',
  '0',
  'list',
  'reload',
  'route',
  'upstream',
  ';',
  '~',
  '%20',
);
const segment = fc.oneof(
  { weight: 3, arbitrary: trickySegment },
  { weight: 1, arbitrary: fc.stringMatching(/^[a-zA-Z0-9._~-]{1,70}$/) },
);

const validRoute = fc.record({
  uri: fc.constantFrom('/fuzz', '/fuzz/*', '/a/b', '*'),
  upstream: fc.constant({ type: 'roundrobin', nodes: { '127.0.0.1:1980': 1 } }),
});
const validFnRoute = fc.record({
  uri: fc.constantFrom('/fn', '/fn/*'),
  plugins: fc.record({
    openfunction: fc.record(
      {
        function_uri: fc.constantFrom('http://127.0.0.1:30583/', 'https://fn.example/x', 'ftp://nope', 'not a url'),
        timeout: fc.oneof(fc.integer({ min: -10, max: 100_000 }), fc.constant('3000')),
        authorization: fc.record({ service_token: fc.oneof(fc.constant('user:pass'), fc.string(), fc.integer()) }, { requiredKeys: [] }),
        max_req_body_size: fc.oneof(fc.integer(), fc.double()),
      },
      { requiredKeys: ['function_uri'] },
    ),
  }),
});
/**
 * Ids a client may put in a body. `.` and `..` match APISIX's id pattern but no URL can address them (dot
 * segments): they must be refused, or the resource could never be read, changed or deleted again. `...` is
 * an ordinary id.
 */
const bodyId = fc.constantFrom('.', '..', '...', '.a', 'a..', 'fz-body', '%2e%2e', 'a/b', 7);

const validUpstream = fc.record({
  type: fc.constantFrom('roundrobin', 'chash', 'unknown'),
  nodes: fc.oneof(
    fc.constant({ '127.0.0.1:1980': 1 }),
    fc.constant([{ host: '127.0.0.1', port: 1980, weight: 1 }]),
    fc.dictionary(fc.string({ maxLength: 30 }), fc.oneof(fc.integer(), fc.string())),
  ),
});

const FIELDS = [
  'uri',
  'uris',
  'methods',
  'host',
  'hosts',
  'remote_addrs',
  'vars',
  'plugins',
  'upstream',
  'upstream_id',
  'service_id',
  'priority',
  'status',
  'timeout',
  'id',
  'name',
  'desc',
  'labels',
  'create_time',
  'update_time',
  'nodes',
  'type',
  'retries',
  '__proto__',
  'constructor',
];
const anyJson = fc.jsonValue({ maxDepth: 4 });
const hugeString = fc.integer({ min: 1, max: 300_000 }).map((n) => 'é'.repeat(n));
const unicodeString = fc.string({ unit: 'grapheme', maxLength: 200 });

/** A near-valid object: a valid one with a few fields changed, removed or added. */
const nearValid = fc
  .tuple(
    fc.oneof(validRoute, validFnRoute, validUpstream),
    fc.array(
      fc.tuple(
        fc.constantFrom(...FIELDS),
        fc.oneof(anyJson, hugeString, unicodeString, bodyId, fc.constant(null), fc.constant(undefined)),
      ),
      { maxLength: 3 },
    ),
  )
  .map(([base, changes]) => {
    const o: Record<string, unknown> = structuredClone(base);
    for (const [k, v] of changes) Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
    return JSON.stringify(o);
  });

function nested(depth: number, leaf: string, arrays: boolean): string {
  return arrays ? `${'['.repeat(depth)}${leaf}${']'.repeat(depth)}` : `${'{"a":'.repeat(depth)}${leaf}${'}'.repeat(depth)}`;
}

const body: fc.Arbitrary<string | Buffer | undefined> = fc.oneof(
  { weight: 2, arbitrary: fc.constant(undefined) },
  { weight: 6, arbitrary: nearValid },
  { weight: 3, arbitrary: anyJson.map((v) => JSON.stringify(v)) },
  { weight: 2, arbitrary: fc.string({ maxLength: 100 }) }, // mostly not JSON
  { weight: 1, arbitrary: fc.tuple(fc.integer({ min: 60, max: 70 }), fc.boolean()).map(([d, a]) => nested(d, '1', a)) },
  { weight: 1, arbitrary: fc.integer({ min: 100, max: 5000 }).map((d) => nested(d, '{}', d % 2 === 0)) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      '{"uri":"\\ud800","upstream":{"nodes":{"127.0.0.1:1":1}}}', // lone surrogate
      '{"uri":"/a","uri":"/b","upstream":{"nodes":{"127.0.0.1:1":1}}}', // duplicate key
      '{"__proto__":{"admin":true},"uri":"/p","upstream":{"nodes":{"127.0.0.1:1":1}}}',
      '{"uri":"/n","priority":1e309,"upstream":{"nodes":{"127.0.0.1:1":1}}}',
      '{"uri":"/n","priority":-0,"upstream":{"nodes":{"127.0.0.1:1":1}}}',
      '{"uri":"/n","priority":123456789012345678901234567890,"upstream":{"nodes":{"127.0.0.1:1":1}}}',
      '{"uri":"/x\\u0000y","upstream":{"nodes":{"127.0.0.1:1":1}}}',
      '[]',
      'null',
      '"string"',
      '{',
      '{}',
      ' ',
      '\uFEFF{}',
    ),
  },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)) }, // not UTF-8, mostly
);

interface Op {
  method: string;
  path: string;
  body: string | Buffer | undefined;
  chunked: boolean;
}

/** A plausible request (valid resource and id, valid or near-valid body): many of these are accepted. */
const wellFormedOp: fc.Arbitrary<Op> = fc
  .record({
    method: fc.constantFrom('PUT', 'PUT', 'PATCH', 'POST', 'GET', 'DELETE'),
    resource: fc.constantFrom('routes', 'upstreams'),
    id: fc.constantFrom('1', '2', 'seed', 'fz-a', 'fz.b'),
    body: fc.oneof(
      validRoute.map((v) => JSON.stringify(v)),
      validFnRoute.map((v) => JSON.stringify(v)),
      validUpstream.map((v) => JSON.stringify(v)),
      nearValid,
    ),
  })
  .map((r) => ({
    method: r.method,
    path: r.method === 'POST' ? `/apisix/admin/${r.resource}` : `/apisix/admin/${r.resource}/${r.id}`,
    body: r.method === 'GET' || r.method === 'DELETE' ? undefined : r.body,
    chunked: false,
  }));

/** `PUT /routes` or `/upstreams` with the id in the body only (APISIX's other way to name what is written). */
const bodyIdOp: fc.Arbitrary<Op> = fc
  .record({
    resource: fc.constantFrom('routes', 'upstreams'),
    id: bodyId,
    body: fc.oneof(validRoute, validUpstream),
  })
  .map((r) => ({
    method: 'PUT',
    path: `/apisix/admin/${r.resource}`,
    body: JSON.stringify({ ...r.body, id: r.id }),
    chunked: false,
  }));

const anyOp: fc.Arbitrary<Op> = fc
  .record({
    method: fc.oneof({ weight: 10, arbitrary: fc.constantFrom(...METHODS) }, { weight: 1, arbitrary: fc.constantFrom(...ODD_METHODS) }),
    resource: fc.oneof(
      { weight: 6, arbitrary: fc.constantFrom('routes', 'upstreams') },
      { weight: 2, arbitrary: fc.constantFrom(...RESOURCES) },
      { weight: 1, arbitrary: trickySegment },
    ),
    id: fc.option(segment, { nil: undefined, freq: 4 }),
    sub: fc.array(segment, { maxLength: 3 }),
    query: fc.option(
      fc.constantFrom(
        '?page=1&page_size=10',
        '?page=-1&page_size=1e3',
        '?page_size=0&page=x',
        '?name=seed',
        '?name=(',
        '?uri=%2F',
        '?label=x',
        '?filter=upstream_id%3Dseed',
        '?force=true',
        '?ttl=abc',
      ),
      { nil: undefined, freq: 5 },
    ),
    body,
    chunked: fc.boolean(),
    trailingSlash: fc.boolean(),
  })
  .map((r) => {
    let path = `/apisix/admin/${r.resource}`;
    if (r.id !== undefined) path += `/${r.id}`;
    if (r.sub.length) path += `/${r.sub.join('/')}`;
    if (r.trailingSlash) path += '/';
    if (r.query) path += r.query;
    return { method: r.method, path, body: r.body, chunked: r.chunked };
  });

const op = fc.oneof({ weight: 2, arbitrary: wellFormedOp }, { weight: 1, arbitrary: bodyIdOp }, { weight: 6, arbitrary: anyOp });

const WRITES = new Set(['PUT', 'POST', 'PATCH', 'DELETE']);
/** Status counts of the run, e.g. `PUT 400` → n (reported as a test diagnostic). */
const tally = new Map<string, number>();

/** One fuzz step: the properties every admin request must keep. */
async function check(o: Op): Promise<void> {
  const before = stored();
  let reply: Reply;
  try {
    reply = await adminRaw(o.method, o.path, o.body, { chunked: o.chunked, keepAlive: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // The parser's 400 for an unknown method can race the client's upload into a reset: that is Node's HTTP
    // layer refusing the request, not the Admin API failing. Everything else at the transport level is.
    if (UNPARSEABLE_METHODS.has(o.method) && (code === 'ECONNRESET' || code === 'EPIPE')) {
      assert.equal((await adminRaw('HEAD', '/apisix/admin')).status, 200);
      assert.equal(stored(), before);
      return;
    }
    throw new Error(`${o.method} ${o.path}: ${(err as Error).message}`, { cause: err });
  }
  assert.ok(reply.status < 500, `${o.method} ${o.path} → ${reply.status} ${reply.body.slice(0, 300)}`);
  const k = `${o.method} ${reply.status}`;
  tally.set(k, (tally.get(k) ?? 0) + 1);
  assert.equal(gw.proc.exited, false, 'the gateway exited');
  if (WRITES.has(o.method) && reply.status >= 400) {
    assert.equal(stored(), before, `${o.method} ${o.path} → ${reply.status} changed the stored config`);
  }
}

// ------------------------------------------------------------------------------------------------

describe('Admin API fuzzing (fast-check)', () => {
  test('every resource × verb × id shape: never a 5xx, refused writes change nothing', async () => {
    for (const resource of RESOURCES) {
      for (const method of [...METHODS, 'OPTIONS', 'HEAD']) {
        for (const id of [undefined, '1', 'seed', '..', '.', '%2e%2e', '%2F', 'a%00b']) {
          const path = `/apisix/admin/${resource}${id === undefined ? '' : `/${id}`}`;
          const body = method === 'GET' || method === 'HEAD' || method === 'DELETE' ? undefined : '{"uri":1}';
          await check({ method, path, body, chunked: false });
        }
      }
    }
  });

  test('"." and ".." are refused as ids in a body (400 naming the id), the URL forms never name a resource', async () => {
    let before = stored();
    const route = { uri: '/dots', upstream: { type: 'roundrobin', nodes: { '127.0.0.1:1980': 1 } } };
    const upstream = { type: 'roundrobin', nodes: { '127.0.0.1:1980': 1 } };
    for (const [resource, value] of [
      ['routes', route],
      ['upstreams', upstream],
    ] as const) {
      for (const id of ['.', '..']) {
        const put = await adminRaw('PUT', `/apisix/admin/${resource}`, JSON.stringify({ ...value, id }));
        assert.equal(put.status, 400, put.body);
        assert.equal(
          JSON.parse(put.body).error_msg,
          'invalid configuration: property "id" validation failed: the ids "." and ".." are not allowed: no URL can address them',
        );
        // A reference to such an id is refused the same way (it could never exist).
        if (resource === 'routes') {
          const ref = await adminRaw('PUT', '/apisix/admin/routes/dots', JSON.stringify({ uri: '/dots', upstream_id: id }));
          assert.equal(ref.status, 400, ref.body);
          assert.match(JSON.parse(ref.body).error_msg, /^invalid configuration: property "upstream_id" validation failed: the ids "\." and "\.\." are not allowed/);
        }
        // In the URL the dot segments are resolved before the Admin API sees them: `/routes/..` is
        // `/apisix/admin/` (404), `/routes/.` is `/routes/` (PUT without an id → 400). Nothing is written.
        for (const seg of id === '.' ? ['.', '%2e'] : ['..', '%2e%2e', '.%2E']) {
          for (const method of ['PUT', 'PATCH']) {
            const res = await adminRaw(method, `/apisix/admin/${resource}/${seg}`, JSON.stringify(value));
            assert.ok(res.status === 400 || res.status === 404, `${method} /${resource}/${seg} → ${res.status} ${res.body}`);
          }
        }
      }
      assert.equal(stored(), before, `a refused ${resource} write changed the stored config`);
      // `...` is not a dot segment: an ordinary id, stored, read and deleted by its URL.
      const put = await adminRaw('PUT', `/apisix/admin/${resource}`, JSON.stringify({ ...value, id: '...' }));
      assert.equal(put.status, 201, put.body);
      assert.equal((await adminRaw('GET', `/apisix/admin/${resource}/...`)).status, 200);
      assert.equal((await adminRaw('DELETE', `/apisix/admin/${resource}/...`)).status, 200);
      before = stored();
    }
  });

  test('random operations: never a 5xx, the process stays up, refused writes leave config.json as it was; memory stays flat', async (t) => {
    // Warm-up with another seed so that lazy allocations, JIT and buffer pools are in place before measuring.
    await fc.assert(fc.asyncProperty(op, check), { seed: 7, numRuns: 1000 });
    const rssBefore = rssKiB(gw.proc.pid);
    tally.clear();
    const started = Date.now();
    await fc.assert(fc.asyncProperty(op, check), { seed: 20261125, numRuns: RUNS / 2 });
    const rssHalf = rssKiB(gw.proc.pid);
    await fc.assert(fc.asyncProperty(op, check), { seed: 20261126, numRuns: RUNS / 2 });
    const ms = Date.now() - started;
    // Let the store's and the GC's background work settle, then measure.
    await new Promise((r) => setTimeout(r, 1000));
    const rssAfter = rssKiB(gw.proc.pid);
    const mib = (k: number) => Math.round(k / 1024);
    t.diagnostic(`${RUNS} runs in ${ms} ms; gateway RSS ${mib(rssBefore)} → ${mib(rssHalf)} → ${mib(rssAfter)} MiB`);
    t.diagnostic(`statuses: ${[...tally].sort().map(([k, n]) => `${k}×${n}`).join(', ')}`);
    // The run must have exercised accepted writes too, not only refusals.
    assert.ok([...tally].some(([k, n]) => /^(PUT|PATCH) 20[01]$/.test(k) && n > 20), 'hardly any write was accepted');
    // Flat: the heap settles after its first growth; the second half of the run must not keep growing it.
    assert.ok(rssAfter - rssBefore < 48 * 1024, `RSS grew from ${rssBefore} kB to ${rssAfter} kB`);
    assert.ok(rssAfter - rssHalf < 16 * 1024, `RSS kept growing: ${rssHalf} kB at half-time, ${rssAfter} kB at the end`);
  });

  test('the stored file is still a valid store and agrees with the Admin API', async () => {
    const doc = JSON.parse(stored());
    assert.equal(doc.fngate_store, 1);
    const routes = doc.items.filter((i: { key: string }) => /^\/apisix\/routes\/[^/]+$/.test(i.key));
    const listed = await gw.admin('GET', '/routes');
    assert.equal(listed.status, 200);
    assert.equal(listed.json.total, routes.length);
    // Whatever the fuzzing stored can be reached again by its id: no resource is stranded under a key that
    // no URL can name (as `.` and `..` once were).
    let fetched = 0;
    for (const resource of ['routes', 'upstreams']) {
      const list = await adminRaw('GET', `/apisix/admin/${resource}`);
      assert.equal(list.status, 200, list.body);
      for (const item of JSON.parse(list.body).list as { key: string; value: { id: unknown } }[]) {
        const id = item.key.slice(`/apisix/${resource}/`.length);
        assert.equal(String(item.value.id), id, `${item.key} holds id ${JSON.stringify(item.value.id)}`);
        const one = await adminRaw('GET', `/apisix/admin/${resource}/${id}`);
        assert.equal(one.status, 200, `${item.key} is listed, but GET /${resource}/${id} → ${one.status} ${one.body}`);
        const got = JSON.parse(one.body);
        assert.equal(got.key, item.key, `${item.key} is listed, but GET /${resource}/${id} answers ${one.body.slice(0, 200)}`);
        assert.deepEqual(got.value, item.value);
        fetched++;
      }
    }
    assert.ok(fetched > 3, `only ${fetched} items were left to fetch`);
    const res = await gw.fetch('/seed');
    assert.ok(res.status < 500 || res.status === 502 || res.status === 503, `proxy answered ${res.status}`);
    await res.text();
    assert.doesNotMatch(gw.proc.stderr(), /unexpected error/);
  });
});

describe('admin request limits', () => {
  const route = (pad: number) => JSON.stringify({ uri: '/big', desc: 'd'.repeat(pad), upstream: { nodes: { '127.0.0.1:1': 1 } } });
  const overhead = route(0).length;

  test(`a body of exactly ${LIMIT} bytes is read (then judged on its content); one byte more → 413`, async () => {
    const before = stored();
    const at = await adminRaw('PUT', '/apisix/admin/routes/big', route(LIMIT - overhead));
    assert.equal(Buffer.byteLength(route(LIMIT - overhead)), LIMIT);
    assert.equal(at.status, 400, at.body.slice(0, 200)); // desc is limited to 256 characters
    assert.match(JSON.parse(at.body).error_msg, /desc/);
    const over = await adminRaw('PUT', '/apisix/admin/routes/big', route(LIMIT - overhead + 1));
    assert.equal(over.status, 413);
    assert.equal(
      JSON.parse(over.body).error_msg,
      `invalid request body: request size ${LIMIT + 1} is greater than the maximum size ${LIMIT} allowed`,
    );
    assert.equal(stored(), before);
  });

  test('over the limit without a Content-Length (chunked): 413 while reading, 10 MiB never buffered', async () => {
    const before = stored();
    const res = await adminRaw('PUT', '/apisix/admin/routes/big', Buffer.alloc(10 * 1024 * 1024, 0x61), { chunked: true });
    assert.equal(res.status, 413);
    assert.equal(stored(), before);
  });

  test('a declared Content-Length over the limit → 413 before the body is read', async () => {
    const res = await new Promise<number>((resolve, reject) => {
      const req = request(
        { host: '127.0.0.1', port: adminPort, method: 'PUT', path: '/apisix/admin/routes/big', headers: { 'x-api-key': gw.key, 'content-length': 1 << 30 } },
        (r) => {
          r.resume();
          resolve(r.statusCode!);
          req.destroy();
        },
      );
      req.on('error', reject);
      req.write('{');
    });
    assert.equal(res, 413);
  });

  test('JSON nesting: 64 levels are parsed (then refused by the schema); 65 → 400 "nested deeper"', async () => {
    const before = stored();
    for (const arrays of [true, false]) {
      const ok = await adminRaw('PUT', '/apisix/admin/routes/deep', `{"uri":"/d","labels":${nested(63, '1', arrays)}}`);
      assert.equal(ok.status, 400);
      assert.doesNotMatch(JSON.parse(ok.body).error_msg, /nested deeper/);
      const deep = await adminRaw('PUT', '/apisix/admin/routes/deep', `{"uri":"/d","labels":${nested(64, '1', arrays)}}`);
      assert.equal(deep.status, 400);
      assert.equal(JSON.parse(deep.body).error_msg, 'invalid request body: JSON nested deeper than 64 levels');
      // Just under the body limit: 500,000 levels of arrays (1 MB), 200,000 levels of objects (1.2 MB).
      const huge = await adminRaw('PUT', '/apisix/admin/routes/deep', nested(arrays ? 500_000 : 200_000, '1', arrays));
      assert.equal(huge.status, 400, huge.body);
    }
    assert.equal(stored(), before);
  });

  test('?name= and ?uri= are regular expressions (as in APISIX) matched in linear time: no ReDoS with a valid key', async () => {
    const evilName = `${'a'.repeat(48)}!`;
    const put = await adminRaw('PUT', '/apisix/admin/routes/redos', JSON.stringify({ name: evilName, uri: `/${'a'.repeat(48)}!`, upstream: { nodes: { '127.0.0.1:1980': 1 } } }));
    assert.equal(put.status, 201, put.body);
    const q = (s: string) => encodeURIComponent(s);
    // With a backtracking engine each of these runs for longer than anyone waits (2^48 paths).
    for (const [param, pattern] of [
      ['name', '(a+)+$'],
      ['name', '^(a|a)*$'],
      ['uri', '(a|aa)+b'],
      ['uri', '^/(\\w+\\w?)*$'],
    ] as const) {
      const started = Date.now();
      const res = await adminRaw('GET', `/apisix/admin/routes?${param}=${q(pattern)}`);
      const ms = Date.now() - started;
      assert.equal(res.status, 200, res.body);
      const keys = JSON.parse(res.body).list.map((i: { key: string }) => i.key);
      assert.ok(!keys.includes('/apisix/routes/redos'), `${param}=${pattern}: ${keys}`);
      assert.ok(ms < 1000, `${param}=${pattern}: ${ms} ms`);
    }
    // The same engine finds what is there.
    const hit = await adminRaw('GET', `/apisix/admin/routes?name=${q('^a+!$')}&uri=${q('^/a{48}!$')}`);
    assert.deepEqual(JSON.parse(hit.body).list.map((i: { key: string }) => i.key), ['/apisix/routes/redos']);
    // Constructs RE2 (linear time) cannot run: 400, saying which.
    for (const [pattern, why] of [
      ['(a)\\1', 'backreferences'],
      ['a(?=b)', 'lookaround assertions'],
      ['a++', 'possessive quantifiers'],
    ] as const) {
      const res = await adminRaw('GET', `/apisix/admin/routes?name=${q(pattern)}`);
      assert.equal(res.status, 400, res.body);
      assert.equal(JSON.parse(res.body).error_msg, `invalid argument name: ${why} are not supported in list filters`);
    }
    // Not a regular expression at all: plain text, as before.
    assert.equal((await adminRaw('GET', `/apisix/admin/routes?name=${q('(')}`)).status, 200);
    assert.equal((await adminRaw('DELETE', '/apisix/admin/routes/redos')).status, 200);
  });

  test('a body that is not UTF-8 → 400 invalid request body', async () => {
    const res = await adminRaw('PUT', '/apisix/admin/routes/u', Buffer.from([0x7b, 0x22, 0x75, 0x72, 0x69, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d]));
    assert.equal(res.status, 400);
    assert.match(JSON.parse(res.body).error_msg, /^invalid request body: /);
  });
});

// The dashboard's logic without a browser: the form generated from a plugin schema, the live JSON-schema errors,
// which field an Admin API message names (src/ui/schema.ts); how /ui/ is served (CSP, cache headers, ADMIN_ALLOW);
// and that the committed src/core/admin/ui-assets.ts is what `npm run build` makes of src/ui.
// The browser side: test/e2e/dashboard.test.ts.
// Run: node --import tsx --test test/unit/dashboard.test.ts
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, test } from 'node:test';
import { DEFAULT_ADMIN_ALLOW } from '../../src/core/admin/guard.ts';
import { UI_ASSETS, UI_INDEX } from '../../src/core/admin/ui-assets.ts';
import { labelText } from '../../src/core/observability/metrics.ts';
import { LATENCY_LABELS, Observability, STATUS_LABELS } from '../../src/core/observability/prometheus.ts';
import { bucketQuantile, defaultMetricsUrl, parseExposition, routeStats } from '../../src/ui/metrics.ts';
import { fieldValue, formFields, namedIn, validate } from '../../src/ui/schema.ts';
import { testAdmin } from '../helpers/admin.ts';

/** request-id's schema as the Admin API serves it (trimmed): flat fields, an enum, an object, the injected _meta. */
const REQUEST_ID = {
  type: 'object',
  properties: {
    header_name: { type: 'string', minLength: 1, pattern: '^[A-Za-z0-9-]+$', default: 'X-Request-Id' },
    include_in_response: { type: 'boolean', default: true },
    algorithm: { enum: ['uuid', 'nanoid'], type: 'string', default: 'uuid' },
    range_id: { type: 'object', properties: { length: { type: 'integer', minimum: 6 } }, additionalProperties: false },
    _meta: { type: 'object', properties: { disable: { type: 'boolean' } } },
  },
  required: [],
  additionalProperties: false,
};

describe('schema → form', () => {
  test('one field per string/number/integer/boolean/enum property; objects and _meta are left to the JSON editor', () => {
    assert.deepEqual(formFields(REQUEST_ID), [
      { name: 'header_name', required: false, default: 'X-Request-Id', kind: 'string' },
      { name: 'include_in_response', required: false, default: true, kind: 'boolean' },
      { name: 'algorithm', required: false, default: 'uuid', kind: 'enum', options: ['uuid', 'nanoid'] },
    ]);
  });
  test('required fields are marked (key-auth consumer schema)', () => {
    const schema = { type: 'object', properties: { key: { type: 'string' } }, required: ['key'], additionalProperties: false };
    assert.deepEqual(formFields(schema), [{ name: 'key', required: true, kind: 'string' }]);
  });
  test('no form for a schema without a flat field, or that is not an object schema', () => {
    assert.equal(formFields({ type: 'object', properties: { nodes: { type: 'array' } } }), undefined);
    assert.equal(formFields({ anyOf: [{ type: 'object' }] }), undefined);
    assert.equal(formFields(undefined), undefined);
  });
  test('input text → value: numbers for number fields (the text kept when it is not one, for the API to refuse)', () => {
    assert.equal(fieldValue({ name: 'n', kind: 'integer', required: false }, '42'), 42);
    assert.equal(fieldValue({ name: 'n', kind: 'number', required: false }, '1.5'), 1.5);
    assert.equal(fieldValue({ name: 'n', kind: 'integer', required: false }, 'abc'), 'abc');
    assert.equal(fieldValue({ name: 'b', kind: 'boolean', required: false }, true), true);
    assert.equal(fieldValue({ name: 'e', kind: 'enum', required: false, options: [1, 'a'] }, '1'), 1);
    assert.equal(fieldValue({ name: 's', kind: 'string', required: false }, '007'), '007');
  });
});

describe('live schema errors', () => {
  test('valid values have none', () => {
    assert.deepEqual(validate(REQUEST_ID, { header_name: 'X-Req', algorithm: 'nanoid', range_id: { length: 8 } }), []);
  });
  test('type, enum, pattern, bounds, unknown properties, with the path of the value', () => {
    assert.deepEqual(validate(REQUEST_ID, { header_name: 12 }), [{ path: 'header_name', message: 'wrong type: expected string, got number' }]);
    assert.deepEqual(validate(REQUEST_ID, { algorithm: 'md5' }), [{ path: 'algorithm', message: 'must be one of "uuid", "nanoid"' }]);
    assert.deepEqual(validate(REQUEST_ID, { header_name: 'a b' }), [{ path: 'header_name', message: 'must match ^[A-Za-z0-9-]+$' }]);
    assert.deepEqual(validate(REQUEST_ID, { range_id: { length: 2 } }), [{ path: 'range_id.length', message: 'must be >= 6' }]);
    assert.deepEqual(validate(REQUEST_ID, { range_id: { length: 6.5 } }), [{ path: 'range_id.length', message: 'wrong type: expected integer, got number' }]);
    assert.deepEqual(validate(REQUEST_ID, { hedaer_name: 'x' }), [{ path: 'hedaer_name', message: 'is not allowed' }]);
  });
  test('required, items, anyOf', () => {
    const schema = {
      type: 'object',
      required: ['nodes'],
      properties: {
        nodes: { type: 'array', minItems: 1, items: { type: 'object', required: ['host'], properties: { host: { type: 'string' } } } },
        timeout: { anyOf: [{ type: 'number' }, { type: 'object' }] },
      },
    };
    assert.deepEqual(validate(schema, {}), [{ path: 'nodes', message: 'is required' }]);
    assert.deepEqual(validate(schema, { nodes: [{ host: 'a' }, {}] }), [{ path: 'nodes[1].host', message: 'is required' }]);
    assert.deepEqual(validate(schema, { nodes: [] }), [{ path: 'nodes', message: 'must have at least 1 items' }]);
    assert.deepEqual(validate(schema, { nodes: [{ host: 'a' }], timeout: 'x' }), [{ path: 'timeout', message: 'does not match any of the allowed forms' }]);
  });
  test('a keyword it does not cover, or a pattern this engine cannot compile, passes (the Admin API decides)', () => {
    assert.deepEqual(validate({ type: 'string', format: 'ipv4' }, 'nope'), []);
    assert.deepEqual(validate({ type: 'string', pattern: '(?<' }, 'x'), []);
  });
});

describe('the field an Admin API message names', () => {
  test('a plugin field, a top-level field, an unknown plugin, none', () => {
    assert.deepEqual(
      namedIn('failed to check the configuration of plugin request-id err: property "header_name" validation failed: wrong type: expected string, got number'),
      { plugin: 'request-id', field: 'header_name' },
    );
    assert.deepEqual(namedIn('invalid configuration: property "uri" validation failed: wrong type: expected string, got number'), { field: 'uri' });
    assert.deepEqual(namedIn('unknown plugin [x-future]'), { plugin: 'x-future' });
    assert.deepEqual(namedIn('failed to check token'), {});
  });
});

describe('/ui/ on the Admin API app', () => {
  const app = testAdmin({ clientIp: (c) => c.req.header('x-test-ip') ?? '', allow: [...DEFAULT_ADMIN_ALLOW] });
  const get = (path: string, ip = '127.0.0.1', method = 'GET') => app.request(`http://admin.test${path}`, { method, headers: { 'x-test-ip': ip } });
  const jsName = Object.keys(UI_ASSETS).find((n) => n.endsWith('.js'))!;

  test('index: no-cache, strict CSP, no inline script or style', async () => {
    const res = await get('/ui/');
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('cache-control'), 'no-cache');
    assert.equal(res.headers.get('content-type'), 'text/html; charset=utf-8');
    const csp = res.headers.get('content-security-policy')!;
    assert.match(csp, /default-src 'none'; script-src 'self'; style-src 'self';/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
    const html = await res.text();
    assert.equal(html, UI_INDEX);
    assert.doesNotMatch(html, /<script>|<style|style=|https?:\/\//, 'no inline code, nothing from elsewhere');
  });
  test('hashed assets are immutable; anything else under /ui/ is 404; /ui redirects', async () => {
    assert.match(jsName, /^app-[0-9a-f]{12}\.js$/);
    const res = await get(`/ui/assets/${jsName}`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('cache-control'), 'public, max-age=31536000, immutable');
    assert.equal(await res.text(), UI_ASSETS[jsName]!.body);
    assert.equal((await get('/ui/assets/constructor')).status, 404);
    assert.equal((await get('/ui/assets/../index.html')).status, 200, 'URL-normalised to /ui/index.html');
    assert.equal((await get('/ui/x')).status, 404);
    const redirect = await get('/ui');
    assert.equal(redirect.status, 301);
    assert.equal(redirect.headers.get('location'), '/ui/');
    assert.equal((await get('/ui/', '127.0.0.1', 'POST')).status, 405);
    const head = await get('/ui/', '127.0.0.1', 'HEAD');
    assert.equal(head.status, 200);
  });
  test('only to clients in ADMIN_ALLOW, pages and assets alike', async () => {
    for (const path of ['/ui/', '/ui', `/ui/assets/${jsName}`]) {
      const res = await get(path, '192.0.2.7');
      assert.equal(res.status, 403, path);
      assert.deepEqual(await res.json(), { error_msg: 'access from 192.0.2.7 is not allowed' });
    }
  });
});

describe('metrics view: exposition reader and per-route summary (src/ui/metrics.ts)', () => {
  test('samples with labels (escapes unread), values incl. +Inf/NaN, timestamps ignored, comments skipped', () => {
    const text = [
      '# HELP x_total a help line with "quotes"',
      '# TYPE x_total counter',
      'x_total{route="a\\\\\\"b\\nc",code="200"} 3',
      'x_total{route="",code="404",} 1.5e1 1700000000000',
      'up 1',
      'h_bucket{le="+Inf"} +Inf',
      'g NaN',
      '',
    ].join('\n');
    const samples = parseExposition(text);
    assert.deepEqual(samples.slice(0, 3), [
      { name: 'x_total', labels: { route: 'a\\"b\nc', code: '200' }, value: 3 },
      { name: 'x_total', labels: { route: '', code: '404' }, value: 15 },
      { name: 'up', labels: {}, value: 1 },
    ]);
    assert.equal(samples[3]!.value, Number.POSITIVE_INFINITY);
    assert.ok(Number.isNaN(samples[4]!.value));
  });
  test('an answer that is not metrics is refused, naming the line', () => {
    assert.throws(() => parseExposition('<!doctype html>\n<p>hi</p>'), /line 1: not a metric sample/);
    assert.throws(() => parseExposition('ok 1\nx{a="1} 2'), /line 2: unterminated label value/);
    assert.throws(() => parseExposition('x{a=1} 2'), /line 1: bad label/);
    assert.throws(() => parseExposition('x abc'), /line 1: bad value "abc"/);
  });
  test('quantiles as PromQL histogram_quantile: linear in the bucket, first from 0, the +Inf bucket gives the last bound', () => {
    const b = (pairs: [number, number][]) => new Map(pairs);
    assert.equal(bucketQuantile(0.5, b([[10, 0], [20, 10], [Number.POSITIVE_INFINITY, 10]])), 15);
    assert.equal(bucketQuantile(0.5, b([[10, 4], [Number.POSITIVE_INFINITY, 4]])), 5);
    assert.equal(bucketQuantile(0.95, b([[10, 1], [20, 1], [Number.POSITIVE_INFINITY, 10]])), 20);
    assert.equal(bucketQuantile(0.5, b([[10, 0], [Number.POSITIVE_INFINITY, 0]])), undefined);
    assert.equal(bucketQuantile(0.5, b([[10, 3]])), undefined, 'no +Inf bucket: not a histogram');
  });
  test('per route from what the gateway\'s own exporter renders: requests, 4xx/5xx, p50/p95 of type="request" only', async () => {
    const obs = new Observability({ refreshIntervalMs: 0 });
    const status = (route: string, code: string, consumer: string, n: number) => {
      obs.http.status.get(labelText(STATUS_LABELS, [code, route, '/x', '', '', consumer, '', '', '', '', 'upstream'])).value += n;
    };
    const latency = (type: string, route: string, consumer: string, values: number[]) => {
      const s = obs.http.latency.get(labelText(LATENCY_LABELS, [type, route, '', consumer, '', '', '', '']));
      for (const v of values) s.observe(v);
    };
    status('r1', '200', '', 6);
    status('r1', '200', 'jack', 1);
    status('r1', '404', '', 2);
    status('r1', '502', '', 1);
    status('', '404', '', 3);
    status('quo"te', '200', '', 1);
    // r1: 10 requests, 8 at 5-10 ms (one consumer's series among them), 2 at 150 ms; upstream latency must not count.
    latency('request', 'r1', '', [6, 7, 8, 9, 6, 7, 8, 150, 150]);
    latency('request', 'r1', 'jack', [9]);
    latency('upstream', 'r1', '', Array(50).fill(40000));
    const rows = routeStats(parseExposition(await obs.metricsText()));
    assert.deepEqual(
      rows.map((r) => [r.route, r.requests, r.status4xx, r.status5xx, r.errorRate]),
      [
        ['r1', 10, 2, 1, 0.3],
        ['', 3, 3, 0, 1],
        ['quo"te', 1, 0, 0, 0],
      ],
    );
    const r1 = rows[0]!;
    // Cumulative buckets: le=5 → 0, le=10 → 8, le=100 → 8, le=200 → 10. p50: rank 5 in (5, 10] = 5 + 5 × 5/8.
    assert.equal(r1.p50, 5 + (5 * 5) / 8);
    // p95: rank 9.5 in (100, 200] = 100 + 100 × 1.5/2.
    assert.equal(r1.p95, 175);
    assert.equal(rows[1]!.p50, undefined);
  });
  test('default metrics URL: this page\'s host, port 9091', () => {
    assert.equal(defaultMetricsUrl({ protocol: 'http:', hostname: '127.0.0.1' }), 'http://127.0.0.1:9091/apisix/prometheus/metrics');
    assert.equal(defaultMetricsUrl({ protocol: 'https:', hostname: '::1' }), 'https://[::1]:9091/apisix/prometheus/metrics');
  });
});

test('src/core/admin/ui-assets.ts is what `npm run build` makes of src/ui (rebuild and commit it)', async () => {
  const script = new URL('../../scripts/build-ui.mjs', import.meta.url).href;
  const { buildUi } = (await import(script)) as { buildUi: () => Promise<{ source: string }> };
  const built = await buildUi();
  const committed = await readFile(new URL('../../src/core/admin/ui-assets.ts', import.meta.url), 'utf8');
  assert.ok(built.source === committed, 'src/core/admin/ui-assets.ts is stale: run `npm run build` and commit it');
});

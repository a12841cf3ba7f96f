/**
 * Observability without a gateway process: the exposition format (escaping, histograms, sliced render), the
 * prometheus plugin's counting through a real in-process gateway (memory store, Node forwarder, a real upstream
 * on 127.0.0.1), the log entry's field names and redaction, and log_format.
 * Run: node --import tsx --test test/unit/observability.test.ts
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, beforeEach, describe, it } from 'node:test';
import * as v from 'valibot';
import { type RequestContext, silentLogger } from '../../src/core/context.ts';
import { createGateway, type Gateway } from '../../src/core/gateway.ts';
import { compileLogFormat, isSecretName } from '../../src/core/observability/log-entry.ts';
import { chunksText, escapeLabelValue, labelText, MetricsRegistry } from '../../src/core/observability/metrics.ts';
import { LATENCY_BUCKETS, Observability } from '../../src/core/observability/prometheus.ts';
import { dashboardOrigins, exportCorsHeaders } from '../../src/core/observability/export-cors.ts';
import fc from 'fast-check';
import { BatchProcessor, type BatchConf } from '../../src/core/observability/batch.ts';
import { fileLogger } from '../../src/core/plugins/file-logger.ts';
import { httpLogger } from '../../src/core/plugins/http-logger.ts';
import { prometheus } from '../../src/core/plugins/prometheus.ts';
import { createNodeForwarder, type NodeForwarder } from '../../src/runtime/node-forwarder.ts';
import { MemoryStore } from '../../src/store/memory.ts';

/**
 * A strict reader of the text exposition format 0.0.4: every line is a comment or `name{labels} value`, label
 * values with only `\\`, `\"` and `\n` escapes. Returns the samples; throws on a line Prometheus would refuse.
 */
export function parseExposition(text: string): { name: string; labels: Record<string, string>; value: number }[] {
  const out: { name: string; labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('# HELP ') || line.startsWith('# TYPE ')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`bad exposition line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    let rest = m[3] ?? '';
    while (rest.length) {
      const lm = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)/.exec(rest);
      if (!lm) throw new Error(`bad labels in: ${JSON.stringify(line)}`);
      labels[lm[1]!] = lm[2]!.replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
      rest = rest.slice(lm[0].length);
    }
    const value = m[4] === '+Inf' ? Number.POSITIVE_INFINITY : Number(m[4]);
    if (Number.isNaN(value) && m[4] !== 'NaN') throw new Error(`bad value in: ${JSON.stringify(line)}`);
    out.push({ name: m[1]!, labels, value });
  }
  return out;
}

describe('exposition format', () => {
  it('escapes backslash, double quote and newline in label values; unicode passes as is', () => {
    assert.equal(escapeLabelValue('a"b\\c\nd'), 'a\\"b\\\\c\\nd');
    assert.equal(escapeLabelValue('härte ✓'), 'härte ✓');
    const hostile = 'r"1\\\n}{x="y", é';
    const samples = parseExposition(`m{${labelText(['route', 'k'], [hostile, ''])}} 1\n`);
    assert.deepEqual(samples[0]!.labels, { route: hostile, k: '' });
  });

  it('renders counters and cumulative histogram buckets with +Inf, _sum and _count', async () => {
    const r = new MetricsRegistry();
    const c = r.counter('t_total', 'help\nwith newline');
    c.get('a="1"').value += 3;
    const h = r.histogram('t_ms', 'latency', [1, 5, 10]);
    const s = h.get('a="1"');
    for (const x of [0.5, 3, 3, 7, 100]) s.observe(x);
    const text = chunksText(await r.render());
    assert.match(text, /^# HELP t_total help\\nwith newline\n# TYPE t_total counter\nt_total\{a="1"\} 3\n/);
    assert.match(text, /# TYPE t_ms histogram\n/);
    assert.match(text, /t_ms_bucket\{a="1",le="1"\} 1\nt_ms_bucket\{a="1",le="5"\} 3\nt_ms_bucket\{a="1",le="10"\} 4\nt_ms_bucket\{a="1",le="\+Inf"\} 5\nt_ms_sum\{a="1"\} 113.5\nt_ms_count\{a="1"\} 5\n/);
    parseExposition(text);
  });

  it('renders in slices, yielding between them (100,000 series: the event loop keeps turning)', async () => {
    const r = new MetricsRegistry();
    const c = r.counter('many', 'x');
    for (let i = 0; i < 100_000; i++) c.get(`route="${i}"`).value = i;
    let pauses = 0;
    const text = chunksText(
      await r.render(async () => {
        pauses++;
        await new Promise((res) => setImmediate(res));
      }),
    );
    assert.ok(pauses >= 40, `paused ${pauses} times`);
    assert.equal(text.split('\n').filter((l) => l.startsWith('many{')).length, 100_000);
  });
});

describe('render as bytes', () => {
  /** The exposition text built the plain way, string by string: the reference the byte writer must match. */
  function reference(families: { name: string; kind: 'counter' | 'histogram'; bounds: number[]; series: [string, number[]][] }[]): string {
    const num = (n: number) => (Number.isNaN(n) ? 'NaN' : n === Infinity ? '+Inf' : n === -Infinity ? '-Inf' : String(n));
    let out = '';
    for (const f of families) {
      if (f.series.length === 0) continue;
      out += `# HELP ${f.name} h\n# TYPE ${f.name} ${f.kind}\n`;
      for (const [labels, values] of f.series) {
        const l = labels ? `{${labels}}` : '';
        if (f.kind === 'counter') out += `${f.name}${l} ${num(values[0]!)}\n`;
        else {
          let acc = 0;
          const counts = f.bounds.map((b) => values.filter((x) => x <= b && !f.bounds.some((c) => c < b && x <= c)).length);
          f.bounds.forEach((b, i) => {
            acc += counts[i]!;
            out += `${f.name}_bucket{${labels}${labels ? ',' : ''}le="${num(b)}"} ${acc}\n`;
          });
          out += `${f.name}_bucket{${labels}${labels ? ',' : ''}le="+Inf"} ${values.length}\n`;
          out += `${f.name}_sum${l} ${num(values.reduce((a, b) => a + b, 0))}\n${f.name}_count${l} ${values.length}\n`;
        }
      }
    }
    return out;
  }

  it('matches the plain string rendering for any labels and values (property)', async () => {
    const label = fc.string({ unit: 'grapheme', maxLength: 12 }).map((v) => `route="${escapeLabelValue(v)}"`);
    const value = fc.oneof(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), fc.double(), fc.integer({ min: -1e6, max: 1e6 }), fc.constant(2 ** 60));
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.oneof(label, fc.constant('')), value), { maxLength: 20 }),
        fc.array(fc.tuple(label, fc.array(fc.double({ min: 0, max: 100, noNaN: true }), { maxLength: 8 })), { maxLength: 10 }),
        async (counters, histos) => {
          const r = new MetricsRegistry();
          const c = r.counter('c_total', 'h');
          const seen = new Map<string, number>();
          for (const [l, x] of counters) {
            c.get(l).value = x;
            seen.set(l, x);
          }
          const h = r.histogram('h_ms', 'h', [1, 5, 50]);
          const hseen = new Map<string, number[]>();
          for (const [l, xs] of histos) {
            const s = h.get(l);
            for (const x of xs) s.observe(x);
            hseen.set(l, [...(hseen.get(l) ?? []), ...xs]);
          }
          const text = chunksText(await r.render(async () => {}, 3));
          const want = reference([
            { name: 'c_total', kind: 'counter', bounds: [], series: [...seen].map(([l, x]) => [l, [x]]) },
            { name: 'h_ms', kind: 'histogram', bounds: [1, 5, 50], series: [...hseen] },
          ]);
          assert.equal(text, want);
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe('scrapes answered from the latest render', () => {
  it('the first scrape waits for a render; later ones get the cached one, refreshed in the background', async () => {
    const obs = new Observability({ refreshIntervalMs: 100 });
    const c = obs.registry.counter('t_total', 'h');
    const s = c.get('a="1"');
    s.value = 1;
    const scrape = async () => {
      const res = await obs.serveMetrics(new Request('http://x/apisix/prometheus/metrics'));
      assert.equal(res.status, 200);
      const text = await res.text();
      assert.equal(res.headers.get('content-length'), String(new TextEncoder().encode(text).byteLength));
      return /t_total\{a="1"\} (\d+)/.exec(text)?.[1];
    };
    try {
      assert.equal(await scrape(), '1');
      s.value = 2;
      // Within the refresh interval: the cached render, read twice (its chunks are not used up by the first read).
      assert.equal(await scrape(), '1');
      assert.equal(await scrape(), '1');
      // After it, the background render has the new value without a scrape asking for it.
      await new Promise((r) => setTimeout(r, 250));
      const t0 = performance.now();
      assert.equal(await scrape(), '2');
      assert.ok(performance.now() - t0 < 1000);
      const head = await obs.serveMetrics(new Request('http://x/apisix/prometheus/metrics', { method: 'HEAD' }));
      assert.equal(head.status, 200);
      assert.equal(head.body, null);
    } finally {
      obs.close();
    }
  });
});

describe('export server CORS: the dashboard\'s origin only (export-cors.ts)', () => {
  it('the origins of ADMIN_HOST:ADMIN_PORT; localhost with a loopback address; the default port left out', () => {
    assert.deepEqual([...dashboardOrigins({ host: '127.0.0.1', port: 9180, tls: false })], ['http://127.0.0.1:9180', 'http://localhost:9180']);
    assert.deepEqual([...dashboardOrigins({ host: '::1', port: 9180, tls: false })], ['http://[::1]:9180', 'http://localhost:9180']);
    assert.deepEqual([...dashboardOrigins({ host: 'Admin.Example', port: 443, tls: true })], ['https://admin.example']);
    assert.deepEqual([...dashboardOrigins({ host: '10.1.2.3', port: 80, tls: false, localNames: ['gw1'] })], ['http://10.1.2.3']);
  });
  it('a wildcard ADMIN_HOST: the loopback names and the names of this machine', () => {
    assert.deepEqual([...dashboardOrigins({ host: '0.0.0.0', port: 9180, tls: false, localNames: ['gw1', '10.1.2.3', 'fe80::1%eth0', ''] })], [
      'http://localhost:9180',
      'http://127.0.0.1:9180',
      'http://[::1]:9180',
      'http://gw1:9180',
      'http://10.1.2.3:9180',
      'http://[fe80::1]:9180',
    ]);
    assert.deepEqual([...dashboardOrigins({ host: '::', port: 9180, tls: true })], ['https://localhost:9180', 'https://127.0.0.1:9180', 'https://[::1]:9180']);
  });
  it('echoes an allowed Origin; any other (port, scheme, host, "null", none) gets no CORS header; always Vary: Origin', () => {
    const allowed = dashboardOrigins({ host: '127.0.0.1', port: 9180, tls: false });
    assert.deepEqual(exportCorsHeaders('http://127.0.0.1:9180', allowed), { 'access-control-allow-origin': 'http://127.0.0.1:9180', vary: 'Origin' });
    assert.deepEqual(exportCorsHeaders('http://LOCALHOST:9180', allowed), { 'access-control-allow-origin': 'http://LOCALHOST:9180', vary: 'Origin' });
    for (const other of ['http://127.0.0.1:9080', 'https://127.0.0.1:9180', 'http://evil.example:9180', 'http://127.0.0.1:9180.evil.example', 'null', null]) {
      assert.deepEqual(exportCorsHeaders(other, allowed), { vary: 'Origin' }, String(other));
    }
  });
  it('serveMetrics sends them: the dashboard reads the metrics, another page does not; no options, no CORS', async () => {
    const obs = new Observability({ refreshIntervalMs: 0, dashboard: () => ({ host: '127.0.0.1', port: 9180, tls: false }) });
    const get = (o: Observability, origin?: string) =>
      o.serveMetrics(new Request('http://127.0.0.1:9091/apisix/prometheus/metrics', { headers: origin ? { origin } : {} }));
    const ok = await get(obs, 'http://127.0.0.1:9180');
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get('access-control-allow-origin'), 'http://127.0.0.1:9180');
    assert.equal(ok.headers.get('vary'), 'Origin');
    const other = await get(obs, 'http://attacker.example');
    assert.equal(other.headers.get('access-control-allow-origin'), null);
    assert.equal((await get(obs)).headers.get('access-control-allow-origin'), null);
    const plain = new Observability({ refreshIntervalMs: 0 });
    assert.equal((await get(plain, 'http://127.0.0.1:9180')).headers.get('access-control-allow-origin'), null);
    await Promise.all([ok.text(), other.text()]);
  });
});

describe('render buffers reused', () => {
  it('a scrape still reading a replaced render gets that render whole; its buffers are reused only after it', async () => {
    const obs = new Observability({ refreshIntervalMs: 50 });
    const c = obs.registry.counter('t_total', 'h');
    // ~1.4 MB of text: several 256 KiB chunks.
    const series = Array.from({ length: 12_000 }, (_, i) => c.get(`route="${'r'.repeat(80)}${i}"`));
    for (const s of series) s.value = 1;
    const scrape = () => obs.serveMetrics(new Request('http://x/apisix/prometheus/metrics'));
    try {
      await (await scrape()).text(); // the first render
      const slow = (await scrape()).body!.getReader();
      const first = await slow.read();
      // Three more renders with other values happen while the slow scrape holds its render.
      for (let v = 2; v <= 4; v++) {
        for (const s of series) s.value = v;
        // A render every 50 ms; on a busy machine one may take longer: wait for one that shows the new value.
        let text = '';
        for (const until = Date.now() + 5000; Date.now() < until && !text.includes(`} ${v}\n`); ) {
          await new Promise((r) => setTimeout(r, 60));
          text = await (await scrape()).text();
        }
        assert.match(text, new RegExp(`} ${v}\n`));
      }
      const parts = [first.value!];
      for (;;) {
        const { done, value } = await slow.read();
        if (done) break;
        parts.push(value);
      }
      const text = chunksText(parts);
      const own = parseExposition(text).filter((x) => x.name === 't_total');
      assert.deepEqual([...new Set(own.map((x) => x.value))], [1], 'the slow scrape saw only its own render');
      assert.equal(own.length, 12_000);
      // Once it finished, the buffers go round again and renders stay right.
      // (A render is made in slices: one under way when the values change shows both; wait for a whole later one.)
      for (const s of series) s.value = 5;
      let seen: number[] = [];
      for (const until = Date.now() + 3000; Date.now() < until; ) {
        await new Promise((r) => setTimeout(r, 60));
        const later = parseExposition(await (await scrape()).text()).filter((x) => x.name === 't_total');
        seen = [...new Set(later.map((x) => x.value))];
        if (seen.length === 1 && seen[0] === 5 && later.length === 12_000) break;
      }
      assert.deepEqual(seen, [5]);
    } finally {
      obs.close();
    }
  });
});

describe('prometheus plugin schema', () => {
  it('has APISIX priority 500, prefer_route, prefer_name default false', () => {
    assert.equal(prometheus.priority, 500);
    assert.equal(prometheus.runPolicy, 'prefer_route');
    assert.deepEqual(v.parse(prometheus.schema, {}), { prefer_name: false });
    assert.equal(v.safeParse(prometheus.schema, { prefer_name: 'yes' }).success, false);
    assert.equal(v.safeParse(prometheus.schema, { nope: 1 }).success, false);
  });
  it('metadata disabled_labels: code and type cannot be disabled', () => {
    const md = prometheus.metadataSchema!;
    assert.equal(v.safeParse(md, { disabled_labels: { http_status: ['consumer', 'node'] } }).success, true);
    assert.equal(v.safeParse(md, { disabled_labels: { http_status: ['code'] } }).success, false);
    assert.equal(v.safeParse(md, { disabled_labels: { http_latency: ['type'] } }).success, false);
  });
});

describe('log entry helpers', () => {
  it('credential names are secret', () => {
    for (const n of ['authorization', 'Proxy-Authorization', 'cookie', 'apikey', 'x-api-key', 'api_key', 'jwt', 'access_token', 'client_secret', 'password']) {
      assert.ok(isSecretName(n), n);
    }
    for (const n of ['host', 'user-agent', 'accept', 'content-type', 'x-request-id']) assert.ok(!isSecretName(n), n);
  });
});

// A real gateway in-process.
let upstreamAddr: string;
const servers: http.Server[] = [];
let store: MemoryStore;
let gateway: Gateway;
let forwarder: NodeForwarder;
const lines: string[] = [];

before(async () => {
  const server = http.createServer((req, res) => {
    res.setHeader('content-type', 'text/plain');
    res.setHeader('set-cookie', 'session=upstream-cookie-secret');
    res.end('hello world\n');
    void req;
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  servers.push(server);
  upstreamAddr = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  store = new MemoryStore();
  forwarder = createNodeForwarder();
  gateway = await createGateway({
    store,
    forwarder,
    logger: silentLogger,
    clientIp: () => '127.0.0.1',
    accessLog: (text) => lines.push(text),
    observability: { hostname: 'unit-host', refreshIntervalMs: 0 },
  });
});

after(async () => {
  await gateway.close();
  await forwarder.close();
  for (const s of servers) s.close();
});

beforeEach(() => {
  lines.length = 0;
});

const upstream = () => ({ type: 'roundrobin', nodes: { [upstreamAddr]: 1 } });
const put = async (key: string, value: Record<string, unknown>) => {
  await store.put(`/apisix/${key}`, { id: key.split('/').pop(), ...value });
  await gateway.refresh();
};
async function get(path: string, headers: Record<string, string> = {}) {
  const res = await gateway.serveProxy(new Request(`http://gw.test${path}`, { headers }));
  const text = await res.text();
  await new Promise((r) => setImmediate(r));
  return { status: res.status, text };
}
async function samples(name: string) {
  return parseExposition(await gateway.obs.metricsText()).filter((s) => s.name === name);
}
const find = (list: Awaited<ReturnType<typeof samples>>, labels: Record<string, string>) =>
  list.find((s) => Object.entries(labels).every(([k, val]) => s.labels[k] === val));

describe('prometheus through a gateway', () => {
  it('counts the route, a 404 (global rule), a plugin exit, with APISIX 3.17+ label sets; route and global count once', async () => {
    await put('global_rules/1', { plugins: { prometheus: {} } });
    await put('routes/1', { uri: '/hello', plugins: { prometheus: {} }, upstream: upstream() });
    await put('routes/2', {
      uri: '/deny',
      plugins: { 'ip-restriction': { blacklist: ['127.0.0.1'] } },
      upstream: upstream(),
    });
    for (let i = 0; i < 3; i++) assert.equal((await get('/hello')).status, 200);
    assert.equal((await get('/nothing-here')).status, 404);
    assert.equal((await get('/deny')).status, 403);
    const status = await samples('apisix_http_status');
    const hello = find(status, { code: '200', route: '1' })!;
    assert.deepEqual(Object.keys(hello.labels), [
      'code', 'route', 'matched_uri', 'matched_host', 'service', 'consumer', 'node',
      'request_type', 'request_llm_model', 'llm_model', 'response_source',
    ]);
    assert.equal(hello.value, 3, 'the route and the global rule both have prometheus: counted once (prefer_route)');
    assert.equal(hello.labels.matched_uri, '/hello');
    assert.equal(hello.labels.node, '127.0.0.1');
    assert.equal(hello.labels.response_source, 'upstream');
    assert.equal(hello.labels.request_type, 'traditional_http');
    const nf = find(status, { code: '404', route: '' })!;
    assert.equal(nf.value, 1);
    assert.equal(nf.labels.response_source, 'apisix');
    assert.equal(nf.labels.node, '');
    const deny = find(status, { code: '403', route: '2' })!;
    assert.equal(deny.value, 1);
    assert.equal(deny.labels.response_source, 'apisix');
    const lat = await samples('apisix_http_latency_count');
    assert.equal(find(lat, { type: 'request', route: '1' })!.value, 3);
    assert.equal(find(lat, { type: 'upstream', route: '1' })!.value, 3);
    assert.equal(find(lat, { type: 'apisix', route: '1' })!.value, 3);
    assert.equal(find(lat, { type: 'upstream', route: '2' }), undefined, 'never proxied: no upstream series');
    const buckets = (await samples('apisix_http_latency_bucket')).filter((s) => s.labels.type === 'request' && s.labels.route === '1');
    assert.deepEqual(buckets.map((b) => b.labels.le), [...LATENCY_BUCKETS.map(String), '+Inf']);
    const egress = find(await samples('apisix_bandwidth'), { type: 'egress', route: '1' })!;
    assert.equal(egress.value, 3 * 'hello world\n'.length);
    const ingress = find(await samples('apisix_bandwidth'), { type: 'ingress', route: '1' })!;
    assert.ok(ingress.value > 3 * 'GET /hello HTTP/1.1\r\n'.length, String(ingress.value));
    assert.ok((await samples('apisix_http_requests_total'))[0]!.value >= 5);
    assert.equal(find(await samples('apisix_node_info'), { hostname: 'unit-host' })!.value, 1);
  });

  it('prefer_name labels route and service by name; hostile names render parseable', async () => {
    await put('services/s1', { name: 'svc "one"\nnext', upstream: upstream() });
    await put('routes/3', { uri: '/named', name: 'né "quoted" \\ route', service_id: 's1', plugins: { prometheus: { prefer_name: true } } });
    assert.equal((await get('/named')).status, 200);
    const s = find(await samples('apisix_http_status'), { route: 'né "quoted" \\ route' })!;
    assert.equal(s.labels.service, 'svc "one"\nnext');
    assert.equal(s.value, 1);
  });

  it('plugin_metadata disabled_labels exports those label values as ""', async () => {
    await put('plugin_metadata/prometheus', { disabled_labels: { http_status: ['node', 'matched_uri'] } });
    await put('routes/4', { uri: '/dis', plugins: { prometheus: {} }, upstream: upstream() });
    await get('/dis');
    await get('/dis');
    const s = find(await samples('apisix_http_status'), { route: '4' })!;
    assert.equal(s.labels.node, '');
    assert.equal(s.labels.matched_uri, '');
    assert.equal(s.value, 2);
    const lat = find(await samples('apisix_http_latency_count'), { type: 'request', route: '4' })!;
    assert.equal(lat.labels.node, '127.0.0.1', 'latency labels are not disabled');
    await store.delete('/apisix/plugin_metadata/prometheus');
    await gateway.refresh();
  });

  it('a client that goes away mid-body is still counted', async () => {
    await put('routes/5', { uri: '/abort', plugins: { prometheus: {} }, upstream: upstream() });
    const res = await gateway.serveProxy(new Request('http://gw.test/abort'));
    await res.body?.cancel();
    await new Promise((r) => setImmediate(r));
    assert.equal(find(await samples('apisix_http_status'), { route: '5' })?.value, 1);
  });

  it('the export endpoint: GET /apisix/prometheus/metrics only; other methods and paths 404 empty', async () => {
    const ok = await gateway.obs.serveMetrics(new Request('http://127.0.0.1:9091/apisix/prometheus/metrics'));
    assert.equal(ok.status, 200);
    assert.match(ok.headers.get('content-type')!, /^text\/plain; version=0\.0\.4/);
    parseExposition(await ok.text());
    const patch = await gateway.obs.serveMetrics(new Request('http://127.0.0.1:9091/apisix/prometheus/metrics', { method: 'PATCH' }));
    assert.equal(patch.status, 404);
    assert.equal(await patch.text(), '');
    assert.equal((await gateway.obs.serveMetrics(new Request('http://127.0.0.1:9091/other'))).status, 404);
  });
});

describe('access log', () => {
  it('one JSON line per request with APISIX field names; credentials never logged', async () => {
    await put('routes/6', { uri: '/log', upstream: upstream() });
    // The gateway hands lines over a few ms after their requests ended: the earlier tests' lines first.
    await new Promise((r) => setTimeout(r, 50));
    lines.length = 0;
    await get('/log?x=1&apikey=query-key-secret&access_token=tok-secret', {
      authorization: 'Basic c2VjcmV0LXVzZXI6c2VjcmV0LXBhc3M=',
      cookie: 'sid=cookie-secret',
      apikey: 'header-key-secret',
      'x-api-key': 'x-key-secret',
    });
    await get('/not-routed', { host: 'gw.test' });
    await new Promise((r) => setTimeout(r, 50));
    const text = lines.join('');
    assert.ok(text.endsWith('}\n'));
    const entries = text.slice(0, -1).split('\n');
    assert.equal(entries.length, 2, 'one line per request');
    for (const secret of ['c2VjcmV0', 'cookie-secret', 'header-key-secret', 'x-key-secret', 'query-key-secret', 'tok-secret', 'upstream-cookie-secret']) {
      assert.ok(!text.includes(secret), `${secret} leaked: ${text}`);
    }
    const e = JSON.parse(entries[0]!);
    assert.deepEqual(Object.keys(e), [
      'request', 'response', 'server', 'upstream', 'service_id', 'route_id', 'client_ip', 'start_time', 'latency', 'upstream_latency', 'apisix_latency',
    ]);
    assert.equal(e.route_id, '6');
    assert.equal(e.service_id, '');
    assert.equal(e.upstream, upstreamAddr);
    assert.equal(e.request.method, 'GET');
    assert.equal(e.request.querystring.x, '1');
    assert.equal(e.request.headers.authorization, '[REDACTED]');
    assert.equal(e.response.status, 200);
    assert.equal(e.response.size, 12);
    assert.equal(e.server.hostname, 'unit-host');
    assert.equal(typeof e.latency, 'number');
    const nf = JSON.parse(entries[1]!);
    assert.equal(nf.response.status, 404);
    assert.equal(nf.route_id, undefined);
    assert.equal(nf.service_id, 'gw.test', 'no route: service_id is $host, as APISIX');
  });
});

describe('access log on close', () => {
  it("hands over the lines still waiting when the gateway closes (shutdown), not later", async () => {
    const texts: string[] = [];
    const gw = await createGateway({
      store: new MemoryStore(),
      forwarder: createNodeForwarder(),
      logger: silentLogger,
      accessLog: (text) => texts.push(text),
      accessLogDelayMs: 60_000,
    });
    const res = await gw.serveProxy(new Request('http://gw.test/closing'));
    assert.equal(res.status, 404);
    await res.text(); // the request ends (and reaches the log phase) once its answer's body is read
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(texts.length, 0, 'still gathering');
    await gw.close();
    assert.equal(texts.length, 1);
    assert.equal(JSON.parse(texts[0]!).request.uri, '/closing');
  });
});

describe('log_format', () => {
  it('resolves $vars, nests, logs unknown variables as null, redacts credential variables, appends route_id/service_id', async () => {
    await put('routes/7', { uri: '/fmt', upstream: upstream() });
    const fmt = compileLogFormat({
      host: '$host',
      client: { ip: '$remote_addr', deep: { method: '$request_method' } },
      unknown: '$no_such_var',
      auth: '$http_authorization',
      uri: '$request_uri',
      fixed: 42,
    });
    let entry: Record<string, unknown> | undefined;
    const spy = { name: 'spy', priority: 1, version: 1, schema: v.object({}), create: () => ({
        log: (ctx: RequestContext) => {
          entry = fmt(ctx);
        },
      }),
    };
    const g2 = await createGateway({ store, forwarder, logger: silentLogger, clientIp: () => '10.0.0.9', plugins: [spy] });
    await store.put('/apisix/routes/8', { id: '8', uri: '/fmt8', plugins: { spy: {} }, upstream: upstream() });
    await g2.refresh();
    const res = await g2.serveProxy(new Request('http://h.test/fmt8?apikey=s3cr3t', { headers: { host: 'h.test', authorization: 'Bearer s3cr3t' } }));
    await res.text();
    await new Promise((r) => setImmediate(r));
    await g2.close();
    assert.deepEqual(entry, {
      host: 'h.test',
      client: { ip: '10.0.0.9', deep: { method: 'GET' } },
      unknown: null,
      auth: '[REDACTED]',
      uri: '/fmt8?apikey=%5BREDACTED%5D',
      fixed: 42,
      route_id: '8',
      service_id: undefined,
    });
  });
});

describe('batch processor (apisix/utils/batch-processor.lua)', () => {
  const conf = (over: Partial<BatchConf> = {}): BatchConf => ({
    name: 'test logger',
    batch_max_size: 1000,
    inactive_timeout: 5,
    buffer_duration: 60,
    max_retry_count: 0,
    retry_delay: 0,
    ...over,
  });
  const recording = () => {
    const logged: string[] = [];
    const logger = {
      info() {},
      warn: (m: string) => logged.push(`warn ${m}`),
      error: (m: string, f?: Record<string, unknown>) => logged.push(`error ${m} ${JSON.stringify(f)}`),
    };
    return { logged, logger };
  };

  it('sends a batch as soon as it reaches batch_max_size; the rest after inactive_timeout', async () => {
    const batches: number[][] = [];
    const { logger } = recording();
    const p = new BatchProcessor<number>(conf({ batch_max_size: 3, inactive_timeout: 1 }), async (e) => void batches.push(e), logger);
    for (let i = 0; i < 4; i++) p.push(i);
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(batches, [[0, 1, 2]]);
    const last = p.push(4);
    await last;
    assert.deepEqual(batches, [[0, 1, 2], [3, 4]]);
    assert.equal(p.stats.sent, 5);
    assert.equal(p.stats.pending, 0);
  });

  it('retries max_retry_count times retry_delay apart, then drops the batch with an error log', async () => {
    let calls = 0;
    const { logged, logger } = recording();
    const p = new BatchProcessor<number>(
      conf({ batch_max_size: 2, max_retry_count: 2, retry_delay: 0 }),
      async () => {
        calls++;
        throw new Error('connection refused');
      },
      logger,
    );
    p.push(1);
    await p.push(2);
    assert.equal(calls, 3);
    assert.equal(p.stats.droppedFailed, 2);
    assert.ok(logged.some((l) => l.includes('batch of 2 log entries dropped: connection refused (exceeded the max_retry_count)')), logged.join('\n'));
  });

  it('an endpoint that is down under load: memory bounded by max_pending_entries, drops counted and logged', async () => {
    const { logged, logger } = recording();
    const hung: (() => void)[] = [];
    // Every send hangs (an endpoint that accepts and never answers) until released.
    const p = new BatchProcessor<{ i: number }>(
      conf({ batch_max_size: 100 }),
      () => new Promise<void>((_, reject) => hung.push(() => reject(new Error('timeout')))),
      logger,
      1000,
    );
    for (let i = 0; i < 50_000; i++) p.push({ i });
    assert.equal(p.stats.pending, 1000);
    assert.equal(p.stats.droppedFull, 49_000);
    const errs = logged.filter((l) => l.includes('backlog of 1000 is full'));
    assert.equal(errs.length, 1, 'reported at most once a second');
    assert.match(errs[0]!, /"dropped":1,"dropped_total":1/);
    for (const release of hung) release();
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(p.stats.pending, 0);
    assert.equal(p.stats.droppedFailed, 1000);
    assert.ok(p.push({ i: -1 }) !== undefined, 'room again once the backlog drained');
  });
});

describe('logger schemas', () => {
  it('http-logger: APISIX defaults; uri required', () => {
    const c = v.parse(httpLogger.schema, { uri: 'http://127.0.0.1:1980/log' });
    assert.equal(c.timeout, 3);
    assert.equal(c.name, 'http logger');
    assert.equal(c.batch_max_size, 1000);
    assert.equal(c.inactive_timeout, 5);
    assert.equal(c.buffer_duration, 60);
    assert.equal(c.max_retry_count, 0);
    assert.equal(c.retry_delay, 1);
    assert.equal(c.concat_method, 'json');
    assert.equal(c.include_req_body, false);
    assert.equal(c.max_req_body_bytes, 524288);
    assert.equal(v.safeParse(httpLogger.schema, {}).success, false);
    assert.equal(v.safeParse(httpLogger.schema, { uri: '127.0.0.1:1980/log' }).success, false);
    assert.equal(v.safeParse(httpLogger.schema, { uri: 'http://x', inactive_timeout: 0 }).success, false);
    assert.deepEqual(httpLogger.secretFields, ['auth_header']);
    assert.equal(httpLogger.priority, 410);
    assert.equal((v.parse(httpLogger.metadataSchema!, {}) as { max_pending_entries: number }).max_pending_entries, 8192);
  });
  it('file-logger: priority 399, match at most 20 rules', () => {
    assert.equal(fileLogger.priority, 399);
    assert.equal(v.safeParse(fileLogger.schema, { path: 'a.log', match: [['arg_x', '==', '1']] }).success, true);
    assert.equal(v.safeParse(fileLogger.schema, { path: 'a.log', match: Array(21).fill(['arg_x', '==', '1']) }).success, false);
  });
});

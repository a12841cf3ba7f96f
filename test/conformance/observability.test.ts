/**
 * Observability through real HTTP, on every runtime: the prometheus plugin and its export server (APISIX's
 * t/plugin/prometheus.t, prometheus2.t cases, apisix-wave2.md §8), scraped by a real Prometheus server when
 * Debian's `prometheus` is installed, and the access log (§9.1). Exposition-format and log-entry details without a
 * gateway process: test/unit/observability.test.ts.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { FunctionServers } from '../functions/functions.ts';
import { rmDir, tmpDir } from '../helpers/process.ts';
import { systemSkip } from '../helpers/system.ts';
import { type GatewayUnderTest, gatewayPerFile, RUNTIME } from './harness.ts';

let gw: GatewayUnderTest;
let fn: FunctionServers;
gatewayPerFile(
  (g, f) => {
    gw = g;
    fn = f;
  },
  { env: { PROMETHEUS_PORT: '0', PROMETHEUS_REFRESH_INTERVAL: '0', ACCESS_LOG: 'on' } },
);

const NO_SCRAPE = RUNTIME === 'workerd' && 'Workers have no scrape target: no export server (README runtime table)';

const echoUpstream = () => ({ type: 'roundrobin', nodes: { [`127.0.0.1:${fn.ports.echo}`]: 1 } });

/** The export server's URL, from the gateway's "fngate prometheus listening on" line. */
async function metricsUrl(): Promise<string> {
  for (let i = 0; i < 100; i++) {
    const m = /fngate prometheus listening on (http:\/\/\S+:\d+)\n/.exec(gw.proc.stdout());
    if (m) return m[1]!;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no "fngate prometheus listening on" line:\n${gw.proc.stdout()}`);
}

async function scrape(): Promise<string> {
  const res = await fetch(`${await metricsUrl()}/apisix/prometheus/metrics`);
  assert.equal(res.status, 200);
  return res.text();
}

/** The value of the sample whose line starts with `prefix` (name and labels), or undefined. */
function value(text: string, prefix: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(prefix));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

const LLM = 'request_type="traditional_http",request_llm_model="",llm_model=""';

describe('prometheus (t/plugin/prometheus.t, prometheus2.t)', { skip: NO_SCRAPE }, () => {
  test('TEST 4-6: route 1 /hello with prometheus, 4 requests → apisix_bandwidth egress and apisix_http_status with APISIX 3.17 labels', async () => {
    await gw.putRoute('1', { uri: '/hello', plugins: { prometheus: {} }, upstream: echoUpstream() });
    for (let i = 0; i < 4; i++) {
      const res = await gw.fetch('/hello');
      assert.equal(res.status, 200);
      await res.text();
    }
    await new Promise((r) => setTimeout(r, 50));
    const text = await scrape();
    const egress = value(text, `apisix_bandwidth{type="egress",route="1",service="",consumer="",node="127.0.0.1",${LLM}}`);
    assert.ok(egress !== undefined && egress > 0, text);
    assert.equal(
      value(text, `apisix_http_status{code="200",route="1",matched_uri="/hello",matched_host="",service="",consumer="",node="127.0.0.1",${LLM},response_source="upstream"}`),
      4,
    );
    assert.equal(value(text, `apisix_http_latency_count{type="request",route="1",service="",consumer="",node="127.0.0.1",${LLM}}`), 4);
    assert.match(text, /^apisix_node_info\{hostname="[^"]*",version="[^"]+"\} 1$/m);
    assert.match(text, /^apisix_http_requests_total \d+$/m);
    assert.match(text, /^process_resident_memory_bytes \d+/m);
    assert.match(text, /^process_cpu_seconds_total [\d.e-]+$/m);
  });

  test('TEST 7: PATCH /apisix/prometheus/metrics → 404; another path → 404', async () => {
    const base = await metricsUrl();
    const patch = await fetch(`${base}/apisix/prometheus/metrics`, { method: 'PATCH' });
    assert.equal(patch.status, 404);
    assert.equal(await patch.text(), '');
    assert.equal((await fetch(`${base}/metrics`)).status, 404);
  });

  test('fngate: CORS for the dashboard only: the Admin API\'s origin (its bound port) is echoed, any other gets none', async () => {
    const url = `${await metricsUrl()}/apisix/prometheus/metrics`;
    const admin = new URL(gw.adminUrl);
    for (const origin of [admin.origin, `http://localhost:${admin.port}`]) {
      const res = await fetch(url, { headers: { origin } });
      assert.equal(res.headers.get('access-control-allow-origin'), origin);
      assert.equal(res.headers.get('vary'), 'Origin');
      await res.text();
    }
    for (const origin of [gw.proxyUrl, 'http://evil.example', `http://evil.example:${admin.port}`, 'null']) {
      const res = await fetch(url, { headers: { origin } });
      assert.equal(res.headers.get('access-control-allow-origin'), null, origin);
      await res.text();
    }
  });

  test('prometheus2.t: as a global rule, an unmatched request is counted with empty route labels; consumer jack via key-auth', async () => {
    assert.equal((await gw.admin('PUT', '/global_rules/prom', { plugins: { prometheus: {} } })).status < 300, true);
    assert.equal((await gw.admin('PUT', '/consumers', { username: 'jack', plugins: { 'key-auth': { key: 'auth-one' } } })).status < 300, true);
    await gw.putRoute('2', { uri: '/auth', plugins: { 'key-auth': {} }, upstream: echoUpstream() });
    const before = value(await scrape(), `apisix_http_status{code="404",route="",matched_uri="",matched_host="",service="",consumer="",node="",${LLM},response_source="apisix"}`) ?? 0;
    assert.equal((await gw.fetch('/not-a-route')).status, 404);
    const ok = await gw.fetch('/auth', { headers: { apikey: 'auth-one' } });
    assert.equal(ok.status, 200);
    await ok.text();
    const denied = await gw.fetch('/auth', { headers: { apikey: 'nope' } });
    assert.equal(denied.status, 401);
    await denied.text();
    await new Promise((r) => setTimeout(r, 50));
    const text = await scrape();
    assert.equal(
      value(text, `apisix_http_status{code="404",route="",matched_uri="",matched_host="",service="",consumer="",node="",${LLM},response_source="apisix"}`),
      before + 1,
    );
    assert.equal(
      value(text, `apisix_http_status{code="200",route="2",matched_uri="/auth",matched_host="",service="",consumer="jack",node="127.0.0.1",${LLM},response_source="upstream"}`),
      1,
    );
    assert.equal(
      value(text, `apisix_http_status{code="401",route="2",matched_uri="/auth",matched_host="",service="",consumer="",node="",${LLM},response_source="apisix"}`),
      1,
    );
    await gw.admin('DELETE', '/global_rules/prom');
  });

  test('a route name with quotes, a newline and unicode keeps the scrape parseable (prefer_name)', async () => {
    await gw.putRoute('3', { uri: '/named', name: 'a "b" \\ ü\nx', plugins: { prometheus: { prefer_name: true } }, upstream: echoUpstream() });
    await (await gw.fetch('/named')).text();
    await new Promise((r) => setTimeout(r, 50));
    const text = await scrape();
    assert.ok(text.includes('route="a \\"b\\" \\\\ ü\\nx"'), text);
    for (const line of text.split('\n')) {
      if (line && !line.startsWith('#')) assert.match(line, /^[a-zA-Z_:][\w:]*(\{.*\})? \S+$/, line);
    }
  });
});

/** A free loopback port (closed again at once; Prometheus binds it itself). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

describe('a real Prometheus server scrapes the gateway', {
  skip: NO_SCRAPE || systemSkip('observability: real Prometheus scrape', ['prometheus'], ['prometheus']),
}, () => {
  test('PromQL sum(apisix_http_status{route="prom"}) over the HTTP API returns the requests sent', async () => {
    await gw.putRoute('prom', { uri: '/scraped', plugins: { prometheus: {} }, upstream: echoUpstream() });
    for (let i = 0; i < 7; i++) await (await gw.fetch('/scraped')).text();
    const target = new URL(await metricsUrl()).host;
    const dir = await tmpDir('fngate-prom-');
    const port = await freePort();
    const config = `global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: fngate\n    metrics_path: /apisix/prometheus/metrics\n    static_configs:\n      - targets: ['${target}']\n`;
    await writeFile(join(dir, 'prometheus.yml'), config);
    const proc = spawn(
      'prometheus',
      [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let log = '';
    proc.stderr.on('data', (d) => {
      log += d;
    });
    try {
      const query = encodeURIComponent('sum(apisix_http_status{route="prom",code="200",job="fngate"})');
      let got: string | undefined;
      for (let i = 0; i < 120 && got === undefined; i++) {
        await new Promise((r) => setTimeout(r, 250));
        try {
          const res = await fetch(`http://127.0.0.1:${port}/api/v1/query?query=${query}`);
          const body = (await res.json()) as { data?: { result?: { value: [number, string] }[] } };
          got = body.data?.result?.[0]?.value[1];
        } catch {
          // not up yet
        }
      }
      assert.equal(got, '7', `Prometheus answered ${got}; its log:\n${log.slice(-2000)}`);
    } finally {
      proc.kill('SIGTERM');
      await new Promise((r) => proc.once('exit', r));
      await rmDir(dir);
    }
  });
});

describe('access log (ACCESS_LOG=on)', () => {
  test('one JSON line per request on stdout with APISIX fields; Authorization, cookies and API keys are never logged', {
    skip: RUNTIME === 'workerd' && "the Worker writes its access log to Workers Logs (console.log); the workerd launcher does not hand that output to the test",
  }, async () => {
    await gw.putRoute('log', { uri: '/logged', upstream: echoUpstream() });
    const res = await gw.fetch('/logged?apikey=query-secret-1&x=1', {
      headers: { authorization: 'Bearer bearer-secret-2', cookie: 'sid=cookie-secret-3', 'x-api-key': 'header-secret-4', apikey: 'header-secret-5' },
    });
    assert.equal(res.status, 200);
    await res.text();
    await (await gw.fetch('/unrouted-for-log')).text();
    // biome-ignore lint/suspicious/noExplicitAny: parsed log lines
    let entries: Record<string, any>[] = [];
    for (let i = 0; i < 50; i++) {
      entries = gw.proc
        .stdout()
        .split('\n')
        .filter((l) => l.startsWith('{"request":'))
        .map((l) => JSON.parse(l));
      if (entries.some((e) => e.request.uri === '/unrouted-for-log')) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const out = gw.proc.stdout() + gw.proc.stderr();
    for (const secret of ['query-secret-1', 'bearer-secret-2', 'cookie-secret-3', 'header-secret-4', 'header-secret-5']) {
      assert.ok(!out.includes(secret), `${secret} reached the gateway's output`);
    }
    const e = entries.find((x) => x.route_id === 'log');
    assert.ok(e, gw.proc.stdout());
    assert.equal(e.request.method, 'GET');
    assert.equal(e.request.querystring.x, '1');
    assert.equal(e.request.headers.authorization, '[REDACTED]');
    assert.equal(e.response.status, 200);
    assert.equal(e.upstream, `127.0.0.1:${fn.ports.echo}`);
    assert.equal(e.client_ip, '127.0.0.1');
    for (const k of ['start_time', 'latency', 'upstream_latency', 'apisix_latency']) assert.equal(typeof e[k], 'number', k);
    const nf = entries.find((x) => x.request.uri === '/unrouted-for-log');
    assert.equal(nf?.response.status, 404);
    assert.equal(nf?.route_id, undefined);
  });
});

/** A log receiver on loopback: records every POST (path, headers, body); `delayMs` makes it slow to answer. */
async function logReceiver(delayMs = 0) {
  const got: { url: string; headers: Record<string, unknown>; body: string }[] = [];
  const server = createHttpServer((req, res) => {
    let body = '';
    req.on('data', (c) => {
      body += c;
    });
    req.on('end', () => {
      got.push({ url: req.url ?? '', headers: req.headers, body });
      setTimeout(() => res.end('ok'), delayMs);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    uri: `http://127.0.0.1:${port}/log`,
    got,
    async waitFor(n: number, ms = 8000) {
      for (let waited = 0; got.length < n && waited < ms; waited += 25) await new Promise((r) => setTimeout(r, 25));
      return got;
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

describe('http-logger (t/plugin/http-logger-json.t)', () => {
  test('TEST 1: batch_max_size 1, include_req_body → one JSON object whose request.body is the body sent', async () => {
    const rx = await logReceiver();
    try {
      await gw.putRoute('hl1', {
        uri: '/hl1',
        plugins: { 'http-logger': { batch_max_size: 1, uri: rx.uri, include_req_body: true } },
        upstream: echoUpstream(),
      });
      const res = await gw.fetch('/hl1', { method: 'POST', body: '{"sample_payload":"hello"}' });
      assert.equal(res.status, 200);
      const echoed = (await res.json()) as { body: string };
      assert.equal(echoed.body, '{"sample_payload":"hello"}', 'the upstream still gets the whole body');
      const [first] = await rx.waitFor(1);
      assert.ok(first, 'nothing was logged');
      assert.equal(first.url, '/log');
      assert.equal(first.headers['content-type'], 'application/json');
      assert.ok(first.body.includes('"body":"{\\"sample_payload\\":\\"hello\\"}"'), first.body);
      const entry = JSON.parse(first.body);
      assert.equal(entry.route_id, 'hl1');
      assert.equal(entry.request.method, 'POST');
    } finally {
      await rx.close();
    }
  });

  test('TEST 2-4: include_resp_body (with include_resp_body_expr) logs the answer body only when the expression holds', async () => {
    const rx = await logReceiver();
    try {
      await gw.putRoute('hl2', {
        uri: '/hl2',
        plugins: {
          'http-logger': { batch_max_size: 1, uri: rx.uri, include_resp_body: true, include_resp_body_expr: [['arg_bar', '==', 'foo']] },
        },
        upstream: echoUpstream(),
      });
      const hit = await gw.fetch('/hl2?bar=foo');
      const hitText = await hit.text();
      await rx.waitFor(1);
      const miss = await gw.fetch('/hl2?bar=nope');
      await miss.text();
      const got = await rx.waitFor(2);
      const entries = got.map((g) => JSON.parse(g.body));
      const withBody = entries.find((e) => e.request.uri === '/hl2?bar=foo');
      const without = entries.find((e) => e.request.uri === '/hl2?bar=nope');
      assert.equal(withBody?.response.body, hitText);
      assert.ok(without, JSON.stringify(entries));
      assert.equal(without.response.body, undefined);
    } finally {
      await rx.close();
    }
  });

  test('batching: batch_max_size 3 → one POST with a JSON array of 3 entries', async () => {
    const rx = await logReceiver();
    try {
      await gw.putRoute('hl3', { uri: '/hl3', plugins: { 'http-logger': { batch_max_size: 3, uri: rx.uri } }, upstream: echoUpstream() });
      for (let i = 0; i < 3; i++) await (await gw.fetch(`/hl3?i=${i}`)).text();
      const [first] = await rx.waitFor(1);
      const arr = JSON.parse(first!.body);
      assert.ok(Array.isArray(arr));
      assert.deepEqual(arr.map((e: { request: { querystring: { i: string } } }) => e.request.querystring.i), ['0', '1', '2']);
    } finally {
      await rx.close();
    }
  });

  test('a log endpoint that answers after 3 s never delays the client (answer well before it)', async () => {
    const rx = await logReceiver(3000);
    try {
      await gw.putRoute('hl4', { uri: '/hl4', plugins: { 'http-logger': { batch_max_size: 1, uri: rx.uri, timeout: 10 } }, upstream: echoUpstream() });
      await (await gw.fetch('/hl4')).text(); // warm
      const started = Date.now();
      const res = await gw.fetch('/hl4');
      await res.text();
      const took = Date.now() - started;
      assert.equal(res.status, 200);
      assert.ok(took < 2000, `the client waited ${took} ms`);
      await rx.waitFor(2);
    } finally {
      await rx.close();
    }
  });

  test('plugin_metadata log_format: custom entry with unknown variables as null, route_id appended', async () => {
    const rx = await logReceiver();
    try {
      assert.ok((await gw.admin('PUT', '/plugin_metadata/http-logger', { log_format: { host: '$host', client_ip: '$remote_addr', nope: '$no_such_variable' } })).status < 300);
      await gw.putRoute('hl5', { uri: '/hl5', plugins: { 'http-logger': { batch_max_size: 1, uri: rx.uri } }, upstream: echoUpstream() });
      await (await gw.fetch('/hl5')).text();
      const [first] = await rx.waitFor(1);
      assert.deepEqual(JSON.parse(first!.body), { host: '127.0.0.1', client_ip: '127.0.0.1', nope: null, route_id: 'hl5' });
    } finally {
      await gw.admin('DELETE', '/plugin_metadata/http-logger');
      await rx.close();
    }
  });
});

describe('file-logger (t/plugin/file-logger.t)', () => {
  test('TEST 2-4: metadata log_format {host, client_ip}; the line decodes to host, client_ip and route_id', {
    skip: RUNTIME === 'workerd' && 'Workers have no file system (README runtime table)',
  }, async () => {
    assert.ok((await gw.admin('PUT', '/plugin_metadata/file-logger', { log_format: { host: '$host', client_ip: '$remote_addr' } })).status < 300);
    // Inside DATA_DIR: the one directory Deno's narrow permission set may write.
    const path = join(gw.dataDir, 'file.log');
    await gw.putRoute('fl1', { uri: '/fl1', plugins: { 'file-logger': { path } }, upstream: echoUpstream() });
    await (await gw.fetch('/fl1')).text();
    let text = '';
    for (let i = 0; i < 100 && !text; i++) {
      text = await readFile(path, 'utf8').catch(() => '');
      if (!text) await new Promise((r) => setTimeout(r, 50));
    }
    const first = JSON.parse(text.split('\n')[0]!);
    assert.equal(first.host, '127.0.0.1');
    assert.equal(first.client_ip, '127.0.0.1');
    assert.equal(first.route_id, 'fl1');
    await gw.admin('DELETE', '/plugin_metadata/file-logger');
  });
});

test('the Admin API lists the new plugins and serves their schemas', async () => {
  const list = await gw.admin('GET', '/plugins/list');
  for (const name of ['prometheus', 'http-logger', 'file-logger']) assert.ok(list.json.includes(name), name);
  const schema = await gw.admin('GET', '/plugins/http-logger');
  assert.equal(schema.status, 200);
  assert.ok(schema.text.includes('uri'));
});

describe('opentelemetry (t/plugin/opentelemetry.t)', () => {
  test('traceparent is continued to the upstream and the sampled span reaches an OTLP/HTTP receiver, decoded', async () => {
    const rx = await logReceiver();
    try {
      const address = new URL(rx.uri).host;
      assert.ok(
        (await gw.admin('PUT', '/plugin_metadata/opentelemetry', { collector: { address }, batch_span_processor: { max_export_batch_size: 1 } })).status < 300,
      );
      await gw.putRoute('ot1', { uri: '/ot1', name: 'traced', plugins: { opentelemetry: { sampler: { name: 'always_on' } } }, upstream: echoUpstream() });
      const trace = '4bf92f3577b34da6a3ce929d0e0e4736';
      const parent = '00f067aa0ba902b7';
      const res = await gw.fetch('/ot1', { headers: { traceparent: `00-${trace}-${parent}-01` } });
      assert.equal(res.status, 200);
      const echoed = (await res.json()) as { headers: Record<string, string> };
      const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/.exec(echoed.headers.traceparent ?? '');
      assert.ok(m, `upstream got traceparent ${echoed.headers.traceparent}`);
      assert.equal(m[1], trace, 'the trace is continued');
      assert.notEqual(m[2], parent, "the gateway's own span is the upstream's parent");
      const [post] = await rx.waitFor(1);
      assert.ok(post, 'no span exported');
      assert.equal(post.url, '/v1/traces');
      assert.equal(post.headers['content-type'], 'application/json');
      const body = JSON.parse(post.body);
      const span = body.resourceSpans[0].scopeSpans[0].spans[0];
      assert.equal(span.traceId, trace);
      assert.equal(span.spanId, m[2]);
      assert.equal(span.parentSpanId, parent);
      assert.equal(span.kind, 2);
      assert.equal(span.name, 'GET /ot1');
      // OTLP/JSON: an int64 may be a decimal string or a JSON number (the SDK's serializer writes numbers).
      const attrs = Object.fromEntries(span.attributes.map((a: { key: string; value: Record<string, unknown> }) => [a.key, String(Object.values(a.value)[0])]));
      const status = span.attributes.find((a: { key: string }) => a.key === 'http.status_code');
      assert.deepEqual(Object.keys(status.value), ['intValue']);
      assert.equal(attrs['http.status_code'], '200');
      assert.equal(attrs['apisix.route_id'], 'ot1');
      assert.equal(attrs['apisix.route_name'], 'traced');
      assert.ok(BigInt(span.endTimeUnixNano) >= BigInt(span.startTimeUnixNano));
    } finally {
      await gw.admin('DELETE', '/plugin_metadata/opentelemetry');
      await rx.close();
    }
  });

  test('sampler always_off (the default): traceparent still sent (flags 00), nothing exported', async () => {
    const rx = await logReceiver();
    try {
      assert.ok((await gw.admin('PUT', '/plugin_metadata/opentelemetry', { collector: { address: new URL(rx.uri).host }, batch_span_processor: { max_export_batch_size: 1 } })).status < 300);
      await gw.putRoute('ot2', { uri: '/ot2', plugins: { opentelemetry: {} }, upstream: echoUpstream() });
      const res = await gw.fetch('/ot2');
      const echoed = (await res.json()) as { headers: Record<string, string> };
      assert.match(echoed.headers.traceparent ?? '', /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(rx.got.length, 0);
    } finally {
      await gw.admin('DELETE', '/plugin_metadata/opentelemetry');
      await rx.close();
    }
  });

  test('trace_id_ratio: fraction 1 exports every trace, 0 none; additional_attributes and header prefixes become span attributes', async () => {
    const rx = await logReceiver();
    try {
      assert.ok((await gw.admin('PUT', '/plugin_metadata/opentelemetry', { collector: { address: new URL(rx.uri).host }, batch_span_processor: { max_export_batch_size: 1 } })).status < 300);
      const extra = { additional_attributes: ['request_uri', 'arg_missing'], additional_header_prefix_attributes: ['X-Tenant-'] };
      await gw.putRoute('ot4', { uri: '/ot4', plugins: { opentelemetry: { sampler: { name: 'trace_id_ratio', options: { fraction: 0 } }, ...extra } }, upstream: echoUpstream() });
      await gw.putRoute('ot5', { uri: '/ot5', plugins: { opentelemetry: { sampler: { name: 'trace_id_ratio', options: { fraction: 1 } }, ...extra } }, upstream: echoUpstream() });
      for (let i = 0; i < 3; i++) await (await gw.fetch('/ot4?n=1')).text();
      const res = await gw.fetch('/ot5?n=1', { headers: { 'x-tenant-id': 'acme', 'x-other': 'no' } });
      const echoed = (await res.json()) as { headers: Record<string, string> };
      assert.match(echoed.headers.traceparent ?? '', /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
      const got = await rx.waitFor(1);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(got.length, 1, 'only the fraction-1 route exported');
      const span = JSON.parse(got[0]!.body).resourceSpans[0].scopeSpans[0].spans[0];
      assert.equal(span.name, 'GET /ot5');
      assert.equal(span.traceId, echoed.headers.traceparent!.slice(3, 35), 'a new trace, the id sent upstream');
      assert.equal(span.parentSpanId ?? '', '');
      const attrs = Object.fromEntries(span.attributes.map((a: { key: string; value: Record<string, unknown> }) => [a.key, String(Object.values(a.value)[0])]));
      assert.equal(attrs.request_uri, '/ot5?n=1');
      assert.equal(attrs['x-tenant-id'], 'acme');
      assert.ok(!('arg_missing' in attrs) && !('x-other' in attrs));
    } finally {
      await gw.admin('DELETE', '/plugin_metadata/opentelemetry');
      await rx.close();
    }
  });

  test('parent_base follows the parent: a sampled parent is exported, an unsampled one is not', async () => {
    const rx = await logReceiver();
    try {
      assert.ok((await gw.admin('PUT', '/plugin_metadata/opentelemetry', { collector: { address: new URL(rx.uri).host }, batch_span_processor: { max_export_batch_size: 1 } })).status < 300);
      await gw.putRoute('ot3', { uri: '/ot3', plugins: { opentelemetry: { sampler: { name: 'parent_base', options: { root: { name: 'always_off' } } } } }, upstream: echoUpstream() });
      const no = await gw.fetch('/ot3', { headers: { traceparent: `00-${'a'.repeat(32)}-${'b'.repeat(16)}-00` } });
      await no.text();
      const yes = await gw.fetch('/ot3', { headers: { traceparent: `00-${'c'.repeat(32)}-${'d'.repeat(16)}-01` } });
      await yes.text();
      const got = await rx.waitFor(1);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(got.length, 1);
      assert.equal(JSON.parse(got[0]!.body).resourceSpans[0].scopeSpans[0].spans[0].traceId, 'c'.repeat(32));
    } finally {
      await gw.admin('DELETE', '/plugin_metadata/opentelemetry');
      await rx.close();
    }
  });
});

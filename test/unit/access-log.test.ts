/**
 * The access log's line is APISIX's log entry written as text (src/core/observability/access-log.ts): whatever the
 * request and the answer hold, it parses back to what `fullLogEntry` builds.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { RequestContext } from '../../src/core/context.ts';
import { scaledText } from '../../src/core/number-text.ts';
import { accessLogLine, jsonString, millis3 } from '../../src/core/observability/access-log.ts';
import { accessLogQueue } from '../../src/core/observability/access-log-queue.ts';
import { fullLogEntry, REDACTED, round3 } from '../../src/core/observability/log-entry.ts';
import { requestLength } from '../../src/core/observability/prometheus.ts';
import { PLAIN_HEADERS } from '../../src/core/upstream/headers.ts';

const env = { hostname: 'gw-1' };
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const UNDER_BUN = 'Bun' in globalThis;

interface Case {
  url: string;
  query: string;
  raw?: string[];
  requestHeaders?: [string, string][];
  responseRecord?: Record<string, string | string[]>;
  responseHeaders?: [string, string][];
  routed: boolean;
  consumer?: string;
  upstreamLatency?: number;
  status: number;
}

function contextOf(c: Case): RequestContext {
  const req = new Request(c.url, { headers: c.requestHeaders });
  const u = new URL(c.url);
  const ctx = new RequestContext({
    request: req,
    method: 'GET',
    path: u.pathname,
    rawPath: u.pathname,
    query: c.query,
    host: u.hostname,
    clientIp: '10.0.0.7',
    scheme: u.protocol === 'https:' ? 'https' : 'http',
    rawHeaders: c.raw,
    clientSignal: () => req.signal,
    // biome-ignore lint/suspicious/noExplicitAny: not called by the log
    forward: undefined as any,
    env: undefined,
    websocket: undefined,
  });
  const res = new Response('x', { headers: c.responseHeaders, status: c.status });
  if (c.responseRecord) (res as unknown as Record<symbol, unknown>)[PLAIN_HEADERS] = c.responseRecord;
  ctx.response = res;
  ctx.status = c.status;
  ctx.bytesSent = 1;
  if (c.routed) {
    ctx.routeId = 'r1';
    ctx.serviceId = 's1';
    // biome-ignore lint/suspicious/noExplicitAny: the log reads only that a route matched
    ctx.route = { id: 'r1' } as any;
  }
  // biome-ignore lint/suspicious/noExplicitAny: the log reads the username
  if (c.consumer !== undefined) ctx.consumer = { username: c.consumer } as any;
  ctx.upstreamLatency = c.upstreamLatency;
  return ctx;
}

/** Both renderings of one request; the timing fields (read at two moments) are compared apart. */
function both(c: Case) {
  const ctx = contextOf(c);
  const line = accessLogLine(ctx, env);
  const entry = fullLogEntry(ctx, env) as Record<string, unknown>;
  assert.ok(line.endsWith('}\n') && !line.slice(0, -1).includes('\n'), 'one line');
  const parsed = JSON.parse(line) as Record<string, unknown>;
  for (const k of ['start_time', 'latency', 'apisix_latency']) {
    assert.equal(typeof parsed[k], 'number', k);
    // Read a moment apart (on a busy machine, possibly much more than a millisecond).
    assert.ok(Math.abs((parsed[k] as number) - (entry[k] as number)) < 10_000, k);
    delete parsed[k];
    delete entry[k];
  }
  assert.ok(Number.isInteger(JSON.parse(line).start_time), 'start_time in whole milliseconds, as APISIX');
  return { parsed, entry, line };
}

// Header names: a few known ones (credentials among them) in any case, and random tokens.
const headerName = fc.oneof(
  fc.constantFrom('Host', 'user-agent', 'Accept', 'Authorization', 'cookie', 'X-API-KEY', 'x-custom', 'X-Custom'),
  fc.stringMatching(/^[a-zA-Z][a-zA-Z0-9-]{0,12}$/),
);
// Values with quotes, backslashes, control characters (a raw list can hold them), unicode and lone surrogates.
const headerValue = fc.oneof(
  fc.string({ maxLength: 20 }),
  fc.string({ unit: 'binary', maxLength: 12 }),
  fc.constantFrom('"quoted"', 'back\\slash', 'tab\there', '\ud800', 'é中🎉', ''),
);
const fetchValue = fc.stringMatching(/^[\x21-\x7e]([\x20-\x7e]{0,15}[\x21-\x7e])?$/);

describe('access log line', () => {
  it('parses back to the log entry (fast-check: raw request headers, plain response records)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(headerName, headerValue), { maxLength: 8 }),
        fc.dictionary(
          fc.stringMatching(/^[a-z][a-z0-9-]{0,10}$/),
          fc.oneof(headerValue, fc.array(headerValue, { minLength: 1, maxLength: 3 })),
          { maxKeys: 6 },
        ),
        fc.constantFrom('', 'a=1', 'apikey=secret&x=%22q%22', 'a=1&a=2&token=t'),
        fc.boolean(),
        fc.option(fc.string({ maxLength: 8 }), { nil: undefined }),
        fc.option(fc.double({ min: 0, max: 1e5, noNaN: true }), { nil: undefined }),
        (pairs, record, query, routed, consumer, upstreamLatency) => {
          const { parsed, entry } = both({
            url: `http://127.0.0.1:9080/p/a${query ? `?${query}` : ''}`,
            query,
            raw: pairs.flat(),
            responseRecord: record,
            routed,
            consumer,
            upstreamLatency,
            status: 200,
          });
          assert.deepStrictEqual(parsed, JSON.parse(JSON.stringify(entry)));
        },
      ),
      { numRuns: 300 },
    );
  });

  // The line keeps the text of fields that repeat from one request to the next (method, client address, upstream
  // node, consumer, host and port, route and service ids): requests that differ, in turn, must each get their own.
  it('gives each request its own fields when consecutive requests differ', () => {
    const variants = [
      { url: 'http://127.0.0.1:9080/p', method: 'GET', ip: '10.0.0.7', node: '10.1.0.1', port: 80, routed: true, id: 'r1', consumer: 'jack' },
      { url: 'https://api.example/p', method: 'POST', ip: '10.0.0.8', node: '10.1.0.2', port: 8080, routed: false, id: 'r2', consumer: undefined },
      { url: 'http://api.example:8080/p', method: 'PUT', ip: '10.0.0.7', node: '10.1.0.1', port: 81, routed: true, id: 'r3', consumer: 'jill' },
      { url: 'http://127.0.0.1:9080/p', method: 'GET', ip: '::1', node: undefined, port: 0, routed: true, id: 7, consumer: 'jack' },
      { url: 'http://api.example/p', method: 'GET', ip: '::1', node: '10.1.0.1', port: 81, routed: false, id: 7, consumer: 'jill' },
      // Another host on the same port; a path that JSON must escape (a raw path is not the URL parser's).
      { url: 'http://127.0.0.2:9080/p', method: 'GET', ip: '::1', node: '10.1.0.1', port: 81, routed: false, id: 7, consumer: 'jill', rawPath: '/a"b\\c' },
    ];
    for (const i of [0, 1, 0, 0, 2, 3, 2, 1, 3, 3, 0, 4, 2, 4, 5, 0, 5]) {
      const v = variants[i]!;
      const ctx = contextOf({ url: v.url, query: '', raw: ['Host', 'h'], routed: v.routed, consumer: v.consumer, status: 200 });
      // biome-ignore lint/suspicious/noExplicitAny: set what a request of another method and address would hold
      const w = ctx as any;
      w.method = v.method;
      w.clientIp = v.ip;
      w.upstreamNode = v.node;
      w.upstreamPort = v.port;
      if ('rawPath' in v) w.rawPath = v.rawPath;
      if (v.routed) {
        w.routeId = v.id;
        w.serviceId = `s-${v.id}`;
        w.route = { id: v.id };
      }
      const line = accessLogLine(ctx, i === 3 ? { hostname: 'gw-2' } : env);
      const entry = fullLogEntry(ctx, i === 3 ? { hostname: 'gw-2' } : env) as Record<string, unknown>;
      const parsed = JSON.parse(line) as Record<string, unknown>;
      for (const k of ['start_time', 'latency', 'apisix_latency']) {
        delete parsed[k];
        delete entry[k];
      }
      assert.deepStrictEqual(parsed, JSON.parse(JSON.stringify(entry)), `request ${i}`);
    }
  });

  it('parses back to the log entry from Headers (the fetch runtimes), set-cookie included', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.stringMatching(/^[a-z][a-z0-9-]{0,10}$/), fetchValue), { maxLength: 6 }),
        fc.array(fc.tuple(fc.constantFrom('set-cookie', 'x-a', 'X-A', 'etag', 'x-api-key'), fetchValue), {
          maxLength: 6,
        }),
        fc.constantFrom('https://h.example/x', 'http://[::1]/y', 'http://[::1]:8080/z', 'https://h.example:8443/'),
        (reqHeaders, resHeaders, url) => {
          const { parsed, entry } = both({
            url,
            query: '',
            requestHeaders: reqHeaders,
            responseHeaders: resHeaders,
            routed: false,
            status: 404,
          });
          assert.deepStrictEqual(parsed, JSON.parse(JSON.stringify(entry)));
        },
      ),
      { numRuns: 200 },
    );
  });

  it('counts the request head as the client sent it (request.size, apisix_bandwidth ingress)', () => {
    const headers: [string, string][] = [
      ['x-a', '1'],
      ['x-long-name', 'a value'],
      ['content-length', '5'],
    ];
    const ctx = contextOf({
      url: 'http://127.0.0.1:9080/p?q=1',
      query: 'q=1',
      requestHeaders: headers,
      routed: false,
      status: 200,
    });
    // "GET /p?q=1 HTTP/1.1\r\n", each "name: value\r\n", the blank line, and the declared body.
    const head = 'GET /p?q=1 HTTP/1.1\r\n'.length + headers.reduce((n, [k, v]) => n + `${k}: ${v}\r\n`.length, 0) + 2;
    assert.equal(requestLength(ctx), head + 5);
    assert.equal(JSON.parse(accessLogLine(ctx, env)).request.size, head + 5);
  });

  // Bun's Headers have a toJSON() the line reads them through (headers.ts headersRecord): the same cases on Bun.
  (UNDER_BUN ? it.skip : it)('gives the same lines on Bun (Headers#toJSON)', () => {
    const out = spawnSync(join(ROOT, 'node_modules/.bin/bun'), ['test', fileURLToPath(import.meta.url)], {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 120_000,
    });
    assert.equal(out.status, 0, `${out.stdout}${out.stderr}`);
    assert.match(out.stderr, / 0 fail/);
  });

  it('redacts credentials and reports the port the client used', () => {
    const { parsed, line } = both({
      url: 'https://api.example/f?apikey=k1',
      query: 'apikey=k1',
      raw: [
        'Authorization',
        'Basic dXNlcjpzZWNyZXQ=',
        'Cookie',
        'sid=abc',
        'X-Api-Key',
        'k1',
        'Accept',
        'a',
        'accept',
        'b',
      ],
      responseRecord: { 'set-cookie': ['a=1', 'b=2'], 'content-type': 'text/plain' },
      routed: true,
      status: 200,
    });
    for (const secret of ['dXNlcjpzZWNyZXQ', 'sid=abc', 'k1', 'a=1']) assert.ok(!line.includes(secret), secret);
    const request = parsed.request as { headers: Record<string, unknown>; url: string };
    assert.equal(request.headers.authorization, REDACTED);
    assert.equal(request.headers.accept, 'a, b');
    assert.equal(request.url, `https://api.example:443/f?apikey=${encodeURIComponent(REDACTED)}`);
    assert.deepEqual((parsed.response as { headers: Record<string, unknown> }).headers['set-cookie'], [
      REDACTED,
      REDACTED,
    ]);
  });

  it('writes milliseconds as the entry rounds them', () => {
    fc.assert(
      fc.property(fc.oneof(fc.double({ min: 0, max: 3e6, noNaN: true }), fc.integer({ min: 0, max: 5000 })), (ms) => {
        assert.equal(millis3(ms), String(round3(ms)));
      }),
      { numRuns: 5000 },
    );
    assert.equal(millis3(1e12), String(round3(1e12)));
  });

  it('writes a scaled integer as String() writes the quotient (limit-count X-RateLimit-Reset: 2 decimals)', () => {
    fc.assert(
      fc.property(fc.integer({ min: -5, max: 2 ** 32 }), fc.integer({ min: 0, max: 4 }), (q, places) => {
        assert.equal(scaledText(q, places), String(q / 10 ** places));
      }),
      { numRuns: 5000 },
    );
    assert.equal(scaledText(Math.floor(59.999 * 100), 2), '59.99');
    assert.equal(scaledText(360000, 2), '3600');
  });

  it('escapes strings as JSON does', () => {
    fc.assert(
      // Any UTF-16 code unit, lone surrogate halves included (JSON.stringify escapes those).
      fc.property(fc.string({ unit: fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)) }), (s) => {
        assert.equal(jsonString(s), JSON.stringify(s));
      }),
      { numRuns: 2000 },
    );
  });
});

describe('access log queue', () => {
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const request = (path: string, status: number) =>
    contextOf({ url: `http://127.0.0.1:9080${path}`, query: '', raw: ['Host', '127.0.0.1:9080'], routed: true, status });
  interface Line {
    request: { uri: string };
    response: { status: number };
    latency: number;
    start_time: number;
  }
  const lines = (text: string) => text.trimEnd().split('\n').map((l) => JSON.parse(l) as Line);

  it('builds the lines of a few ms of requests at once, in order, each with its own fields', async () => {
    const writes: string[] = [];
    const q = accessLogQueue((t) => writes.push(t), env, { delayMs: 30, maxPending: 100 });
    q.log(request('/a', 200));
    q.log(request('/b', 404));
    q.log(request('/c', 502));
    assert.equal(writes.length, 0, 'nothing before the delay');
    await sleep(80);
    assert.equal(writes.length, 1, 'one text for the three');
    const got = lines(writes[0]!);
    assert.deepEqual(
      got.map((l) => [l.request.uri, l.response.status]),
      [['/a', 200], ['/b', 404], ['/c', 502]],
    );
    assert.ok(writes[0]!.endsWith('}\n'));
    await sleep(50);
    assert.equal(writes.length, 1, 'no empty write after');
  });

  it('hands the lot over at once when maxPending are waiting, and the rest on flush', () => {
    const writes: string[] = [];
    const q = accessLogQueue((t) => writes.push(t), env, { delayMs: 60_000, maxPending: 3 });
    for (const p of ['/1', '/2', '/3', '/4']) q.log(request(p, 200));
    assert.equal(writes.length, 1);
    assert.deepEqual(lines(writes[0]!).map((l) => l.request.uri), ['/1', '/2', '/3']);
    q.flush();
    assert.deepEqual(lines(writes[1]!).map((l) => l.request.uri), ['/4']);
    q.flush();
    assert.equal(writes.length, 2, 'flushing nothing writes nothing');
  });

  it('times a request to when it ended, not to when its line was built', async () => {
    const writes: string[] = [];
    const q = accessLogQueue((t) => writes.push(t), env, { delayMs: 60_000 });
    const ctx = request('/slow', 200);
    const wallAtStart = Date.now();
    await sleep(40);
    q.log(ctx);
    await sleep(150);
    q.flush();
    const [line] = lines(writes[0]!);
    assert.ok(line!.latency >= 39 && line!.latency < 150, `latency ${line!.latency} ms: to the log phase, not the flush`);
    assert.ok(Math.abs(line!.start_time - wallAtStart) <= 20, `start_time ${line!.start_time} vs ${wallAtStart}`);
    assert.ok(Number.isInteger(line!.start_time));
  });

  it('writes each line as its request ends with delayMs 0 (Workers)', () => {
    const writes: string[] = [];
    const q = accessLogQueue((t) => writes.push(t), env, { delayMs: 0 });
    q.log(request('/w', 200));
    assert.equal(writes.length, 1);
    assert.equal(lines(writes[0]!)[0]!.request.uri, '/w');
  });
});

/**
 * createNodeForwarder() against real node:http / node:https servers on 127.0.0.1.
 * Run: node --import tsx --test test/unit/node-forwarder.test.ts
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { UpstreamError } from '../../src/core/upstream/types.ts';
import type { HeaderList } from '../../src/core/upstream/headers.ts';
import type { ForwardRequest } from '../../src/core/upstream/types.ts';
import { smallLength } from '../../src/core/upstream/headers.ts';
import { clientSignal, createNodeForwarder } from '../../src/runtime/node-forwarder.ts';
import fc from 'fast-check';
import type { NodeForwarder } from '../../src/runtime/node-forwarder.ts';
import { type BlackHole, startBlackHole } from '../helpers/blackhole.ts';
import { forwardRequest, rejectsWith } from '../helpers/forward-request.ts';
import { refusedPort } from '../helpers/process.ts';
import { NO_OPENSSL, selfSignedCert } from '../helpers/tls.ts';

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

interface TestServer {
  url: string;
  port: number;
  server: http.Server;
  close(): Promise<void>;
}

async function listen(server: http.Server): Promise<TestServer> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const scheme = server instanceof https.Server ? 'https' : 'http';
  return {
    url: `${scheme}://127.0.0.1:${port}`,
    port,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const servers: TestServer[] = [];
async function serve(handler: Handler): Promise<TestServer> {
  const s = await listen(http.createServer(handler));
  servers.push(s);
  return s;
}

const request = forwardRequest;

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves when `p` does, fails the test if that takes longer than `ms`. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const guard = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([p, guard]);
  } finally {
    clearTimeout(timer);
  }
}

function deferred<T = void>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

async function readAll(body: ReadableStream<Uint8Array> | null): Promise<Buffer> {
  if (!body) return Buffer.alloc(0);
  const chunks: Uint8Array[] = [];
  const reader = body.getReader();
  for (let r = await reader.read(); !r.done; r = await reader.read()) chunks.push(r.value);
  return Buffer.concat(chunks);
}

function streamOf(...parts: string[]): ReadableStream<Uint8Array> {
  return new Blob(parts).stream();
}

let fwd: NodeForwarder;
before(() => {
  fwd = createNodeForwarder();
});
after(async () => {
  await fwd.close();
  await Promise.all(servers.map((s) => s.close()));
});

describe('request and response round trip', () => {
  it('forwards method, path, query, headers and body; returns status and headers', async () => {
    const s = await serve((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        res.writeHead(201, { 'content-type': 'application/json', 'x-upstream': 'yes' });
        res.end(
          JSON.stringify({
            method: req.method,
            url: req.url,
            headers: req.headers,
            body: Buffer.concat(chunks).toString(),
          }),
        );
      });
    });
    const headers: HeaderList = [
      ['x-custom', 'one'],
      ['content-type', 'text/plain'],
      ['accept', 'application/json'],
      ['x-multi', 'a'],
      ['x-multi', 'b'],
    ];
    const res = await fwd(
      request(`${s.url}/echo/path?q=1&r=%20x`, { method: 'PUT', headers, body: streamOf('hello ', 'world') }),
    );
    assert.equal(res.status, 201);
    assert.equal(res.headers.get('x-upstream'), 'yes');
    const got = JSON.parse((await readAll(res.body)).toString());
    assert.equal(got.method, 'PUT');
    assert.equal(got.url, '/echo/path?q=1&r=%20x');
    assert.equal(got.body, 'hello world');
    assert.equal(got.headers['x-custom'], 'one');
    assert.equal(got.headers['x-multi'], 'a, b');
    assert.equal(got.headers['content-type'], 'text/plain');
    assert.equal(got.headers.host, `127.0.0.1:${s.port}`, 'Host derived from the URL');
  });

  it('calls that alternate between origins each reach their own (the last origin is remembered, not assumed)', async () => {
    const a = await serve((_req, res) => res.end('a'));
    const b = await serve((_req, res) => res.end('b'));
    // Same length as a's origin and sharing its prefix, differing only in the port's last digits; and a's own
    // origin spelled in capitals (normalised by URL, one pool).
    const urls: Array<[string, string]> = [
      [`${a.url}/x`, 'a'],
      [`${b.url}/x`, 'b'],
      [`${a.url}?q`, 'a'],
      [`${b.url}`, 'b'],
      [`${a.url.toUpperCase()}/y`, 'a'],
      [`${a.url}/z`, 'a'],
      [`${b.url}#frag`, 'b'],
    ];
    for (const [url, want] of urls) {
      const res = await fwd(request(url));
      assert.equal((await readAll(res.body)).toString(), want, url);
    }
  });

  it('sends hostHeader as Host and never forwards hop-by-hop headers undici would reject', async () => {
    const s = await serve((req, res) => res.end(JSON.stringify(req.headers)));
    const headers: HeaderList = [
      ['x-a', '1'],
      ['expect', '100-continue'],
      ['keep-alive', 'timeout=5'],
      ['upgrade', 'h2c'],
    ];
    const res = await fwd(request(`${s.url}/`, { headers, hostHeader: 'fn.example.com:8080' }));
    const got = JSON.parse((await readAll(res.body)).toString());
    assert.equal(got.host, 'fn.example.com:8080');
    assert.equal(got['x-a'], '1');
    assert.equal(got.expect, undefined);
    assert.equal(got.upgrade, undefined);
  });

  it('drops a content-length that comes without a body, so the upstream does not wait for one', async () => {
    const s = await serve((req, res) => {
      req.resume();
      req.on('end', () => res.end(`cl=${req.headers['content-length']}`));
    });
    const headers: HeaderList = [['content-length', '10']];
    const res = await fwd(request(`${s.url}/`, { method: 'POST', headers, timeout: 2_000 }));
    assert.equal((await readAll(res.body)).toString(), 'cl=0');
  });

  it('returns a null body for HEAD, 204, 304 and an empty content-length', async () => {
    const s = await serve((req, res) => {
      if (req.url === '/204') res.writeHead(204).end();
      else if (req.url === '/304') res.writeHead(304, { etag: '"x"' }).end();
      else if (req.url === '/empty') res.writeHead(200, { 'content-length': '0' }).end();
      else
        res
          .writeHead(200, { 'content-length': '5', 'content-type': 'text/plain' })
          .end(req.method === 'HEAD' ? undefined : 'hello');
    });
    const head = await fwd(request(`${s.url}/`, { method: 'HEAD' }));
    assert.equal(head.status, 200);
    assert.equal(head.body, null);
    assert.equal(head.headers.get('content-length'), '5');
    const r204 = await fwd(request(`${s.url}/204`));
    assert.equal(r204.status, 204);
    assert.equal(r204.body, null);
    const r304 = await fwd(request(`${s.url}/304`));
    assert.equal(r304.status, 304);
    assert.equal(r304.body, null);
    assert.equal(r304.headers.get('etag'), '"x"');
    const empty = await fwd(request(`${s.url}/empty`));
    assert.equal(empty.body, null);
    assert.equal(empty.headers.get('content-length'), '0');
  });

  it('keeps multiple set-cookie headers separate and joins other repeated headers', async () => {
    const s = await serve((_req, res) => {
      res.setHeader('set-cookie', ['a=1; Path=/; HttpOnly', 'b=2; Expires=Wed, 21 Oct 2026 07:28:00 GMT', 'c=3']);
      res.setHeader('x-multi', ['1', '2']);
      res.end('ok');
    });
    const res = await fwd(request(`${s.url}/`));
    assert.deepEqual(res.headers.getSetCookie(), [
      'a=1; Path=/; HttpOnly',
      'b=2; Expires=Wed, 21 Oct 2026 07:28:00 GMT',
      'c=3',
    ]);
    assert.equal(res.headers.get('x-multi'), '1, 2');
    assert.equal((await readAll(res.body)).toString(), 'ok');
  });

  it('passes compressed bodies through untouched (small and large)', async () => {
    const small = gzipSync('hello gzip '.repeat(50));
    const large = gzipSync(randomBytes(64 * 1024)); // incompressible: stays above the 16 KiB buffering limit
    assert.ok(large.length > 16 * 1024);
    const s = await serve((req, res) => {
      const body = req.url === '/large' ? large : small;
      res.writeHead(200, { 'content-encoding': 'gzip', 'content-length': body.length, 'content-type': 'text/plain' });
      res.end(body);
    });
    for (const [path, expected] of [
      ['/small', small],
      ['/large', large],
    ] as const) {
      const res = await fwd(request(`${s.url}${path}`, { headers: [['accept-encoding', 'gzip']] }));
      assert.equal(res.headers.get('content-encoding'), 'gzip');
      assert.equal(res.headers.get('content-length'), String(expected.length));
      assert.deepEqual(await readAll(res.body), expected, `${path}: compressed bytes unchanged`);
    }
  });

  it('returns a 302 as is, without following it', async () => {
    let hits = 0;
    const s = await serve((req, res) => {
      hits++;
      if (req.url === '/from') res.writeHead(302, { location: '/to' }).end('moved');
      else res.end('followed!');
    });
    const res = await fwd(request(`${s.url}/from`));
    assert.equal(res.status, 302);
    assert.equal(res.headers.get('location'), '/to');
    assert.equal((await readAll(res.body)).toString(), 'moved');
    assert.equal(hits, 1);
  });

  it('skips 1xx informational responses (103 Early Hints)', async () => {
    const s = await serve((_req, res) => {
      res.writeEarlyHints({ link: '</style.css>; rel=preload; as=style' });
      res.end('final');
    });
    const res = await fwd(request(`${s.url}/`));
    assert.equal(res.status, 200);
    assert.equal((await readAll(res.body)).toString(), 'final');
  });

  it('hands small known-length or already complete bodies over as bytes, and streams the rest', async () => {
    const s = await serve(async (req, res) => {
      if (req.url === '/chunked-slow') {
        res.write('a');
        await delay(50);
        res.end('b');
      } else {
        // 1 MiB cannot arrive in the socket read that carries the headers (Node reads ≤ 64 KiB at a time).
        const n = req.url === '/large' ? 1024 * 1024 : 16 * 1024;
        res.writeHead(200, { 'content-length': n }).end(Buffer.alloc(n, 'z'));
      }
    });
    // A chunked answer written in one go: it reaches the forwarder in the same read as its headers.
    const raw = net.createServer((socket) => {
      socket.once('data', () => {
        socket.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n2\r\nab\r\n0\r\n\r\n');
        socket.end();
      });
    });
    await new Promise<void>((resolve) => raw.listen(0, '127.0.0.1', resolve));
    const rawUrl = `http://127.0.0.1:${(raw.address() as AddressInfo).port}`;

    const bodies: unknown[] = [];
    const Native = globalThis.Response;
    globalThis.Response = class extends Native {
      constructor(body?: BodyInit | null, init?: ResponseInit) {
        super(body, init);
        bodies.push(body);
      }
    };
    const kindOf = async (url: string, size: number) => {
      bodies.length = 0;
      const res = await fwd(request(url));
      assert.equal((await readAll(res.body)).length, size);
      assert.equal(bodies.length, 1);
      return bodies[0] instanceof ReadableStream
        ? 'stream'
        : bodies[0] instanceof Uint8Array
          ? 'bytes'
          : typeof bodies[0];
    };
    try {
      // The first answer under a new Response class also probes it (node-forwarder's responseKeepsRecord).
      await readAll((await fwd(request(`${s.url}/small`))).body);
      assert.equal(await kindOf(`${s.url}/small`, 16 * 1024), 'bytes');
      assert.equal(await kindOf(`${s.url}/large`, 1024 * 1024), 'stream');
      assert.equal(await kindOf(`${s.url}/chunked-slow`, 2), 'stream');
      assert.equal(await kindOf(`${rawUrl}/`, 2), 'bytes');
    } finally {
      globalThis.Response = Native;
      raw.close();
    }
  });
});

describe('streaming', () => {
  it('streams the request body: the upstream sees the first bytes before the body is finished', async () => {
    const firstSeen = deferred();
    const s = await serve((req, res) => {
      let total = '';
      req.on('data', (c: Buffer) => {
        total += c.toString();
        firstSeen.resolve();
      });
      req.on('end', () => res.end(total));
    });
    const body = new ReadableStream<Uint8Array>({
      async start(controller) {
        controller.enqueue(new TextEncoder().encode('first,'));
        // Only finish once the upstream has the first chunk: a buffering client would deadlock here.
        await within(firstSeen.promise, 3_000, 'the upstream to see the first request chunk');
        controller.enqueue(new TextEncoder().encode('last'));
        controller.close();
      },
    });
    const res = await fwd(request(`${s.url}/`, { method: 'POST', body }));
    assert.equal((await readAll(res.body)).toString(), 'first,last');
  });

  it('streams the response body: the first chunk arrives before the last is sent', async () => {
    const firstRead = deferred();
    const s = await serve(async (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('first,');
      await within(firstRead.promise, 3_000, 'the client to read the first chunk').catch(() => {});
      res.end('last');
    });
    const res = await fwd(request(`${s.url}/`));
    const reader = res.body!.getReader();
    const first = await reader.read();
    assert.equal(Buffer.from(first.value!).toString(), 'first,');
    firstRead.resolve();
    let rest = '';
    for (let r = await reader.read(); !r.done; r = await reader.read()) rest += Buffer.from(r.value).toString();
    assert.equal(rest, 'last');
  });

  it('applies backpressure: an unread response does not pull the whole upstream body into memory', async () => {
    const chunk = Buffer.alloc(64 * 1024, 'x');
    const total = 64 * 1024 * 1024;
    let written = 0;
    const s = await serve((_req, res) => {
      res.writeHead(200, { 'content-length': total });
      const pump = () => {
        while (written < total) {
          written += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end();
      };
      pump();
    });
    const res = await fwd(request(`${s.url}/`));
    await delay(500);
    assert.ok(written < total / 2, `upstream wrote ${written} bytes to a reader that read nothing`);
    // Now drain it: resuming works.
    assert.equal((await readAll(res.body)).length, total);
  });
});

describe('errors', () => {
  it('connection refused → connect', async () => {
    await rejectsWith(fwd(request(`http://127.0.0.1:${await refusedPort()}/`)), 'connect');
  });

  it('DNS failure → connect', async () => {
    await rejectsWith(fwd(request('http://does-not-exist.invalid/')), 'connect');
  });

  it('slow response headers → timeout, within the timeout plus slack, and the upstream socket is closed', async () => {
    const closed = deferred();
    const s = await serve((req) => {
      req.socket.on('close', () => closed.resolve()); // never answers
    });
    const t0 = performance.now();
    await rejectsWith(fwd(request(`${s.url}/`, { timeout: 300 })), 'timeout');
    const elapsed = performance.now() - t0;
    assert.ok(elapsed >= 290 && elapsed < 1_500, `timed out after ${elapsed.toFixed(0)} ms`);
    await within(closed.promise, 2_000, 'the upstream socket to close');
  });

  describe('separate connect, send and read timeouts', () => {
    let hole: BlackHole;
    before(async () => {
      hole = await startBlackHole();
    });
    after(() => hole.close());

    it('a connect that never completes → connect-timeout after connectTimeout, not after the read timeout', async () => {
      const t0 = performance.now();
      const err = await rejectsWith(
        fwd(request(`http://${hole.addr}/`, { connectTimeout: 300, sendTimeout: 5_000, timeout: 5_000 })),
        'connect-timeout',
        /while connecting/,
      );
      const took = performance.now() - t0;
      assert.ok(took >= 250 && took < 2_000, `timed out after ${took.toFixed(0)} ms`);
      assert.match(err.message, /300 ms/);
    });

    it('without connectTimeout the (read) timeout bounds the connect too, as before: kind timeout', async () => {
      await rejectsWith(fwd(request(`http://${hole.addr}/`, { timeout: 300 })), 'timeout');
    });

    it('a short connect timeout does not cut a slow answer: the read timeout starts once connected', async () => {
      const s = await serve((_req, res) => {
        setTimeout(() => res.end('late'), 600);
      });
      const res = await fwd(request(`${s.url}/`, { connectTimeout: 200, sendTimeout: 200, timeout: 3_000 }));
      assert.equal(await new Response(res.body).text(), 'late');
    });

    it('the read timeout still applies after a quick connect', async () => {
      const s = await serve(() => {}); // never answers
      const t0 = performance.now();
      await rejectsWith(
        fwd(request(`${s.url}/`, { connectTimeout: 3_000, sendTimeout: 3_000, timeout: 300 })),
        'timeout',
        /no response headers from upstream within 300 ms/,
      );
      assert.ok(performance.now() - t0 < 2_000);
    });

    it('an upload that stalls longer than sendTimeout → timeout naming the send', async () => {
      let got = 0;
      const s = await serve((req) => {
        req.on('data', (c: Buffer) => {
          got += c.length;
        });
      });
      // One chunk, then nothing: the request is never completely sent.
      const body = new ReadableStream<Uint8Array>({
        start(c) {
          c.enqueue(new Uint8Array(10));
        },
      });
      const t0 = performance.now();
      await rejectsWith(
        fwd(request(`${s.url}/`, { method: 'POST', body, connectTimeout: 3_000, sendTimeout: 300, timeout: 10_000 })),
        'timeout',
        /while sending the request/,
      );
      assert.ok(performance.now() - t0 < 3_000);
      assert.equal(got, 10);
    });

    it('the connect timeout is per dispatcher: two values, two pools, each honoured', async () => {
      const t0 = performance.now();
      await Promise.all([
        rejectsWith(fwd(request(`http://${hole.addr}/`, { connectTimeout: 200, timeout: 5_000 })), 'connect-timeout', /200 ?ms/),
        rejectsWith(fwd(request(`http://${hole.addr}/`, { connectTimeout: 700, timeout: 5_000 })), 'connect-timeout', /700 ?ms/),
      ]);
      const took = performance.now() - t0;
      assert.ok(took >= 650 && took < 2_500, `both done after ${took.toFixed(0)} ms`);
    });
  });

  it('the timeout counts waiting for a pooled connection too', async () => {
    let hits = 0;
    const s = await serve(() => {
      hits++; // never answers
    });
    const capped = createNodeForwarder({ defaultConnections: 1 });
    try {
      const first = capped(request(`${s.url}/`, { timeout: 1_500 }));
      await delay(50);
      const t0 = performance.now();
      await rejectsWith(capped(request(`${s.url}/`, { timeout: 300 })), 'timeout');
      assert.ok(performance.now() - t0 < 1_200);
      await rejectsWith(first, 'timeout');
      assert.equal(hits, 1, 'the queued request was never sent');
    } finally {
      await capped.close();
    }
  });

  it('keepalive.maxRequests (keepalive_pool.requests): no connection carries more than that many requests; without it one is reused', async () => {
    const perSocket = new Map<unknown, number>();
    const s = await serve((req, res) => {
      perSocket.set(req.socket, (perSocket.get(req.socket) ?? 0) + 1);
      res.end('ok');
    });
    for (const maxRequests of [1, 2, 3, undefined]) {
      perSocket.clear();
      const keepalive = { enabled: true, idleTimeoutMs: 10_000, poolSize: 8, maxRequests };
      for (let i = 0; i < 12; i++) {
        const res = await fwd(request(`${s.url}/`, { keepalive }));
        assert.equal(await new Response(res.body).text(), 'ok');
      }
      const counts = [...perSocket.values()];
      // Without a limit the pool reuses its connections (undici may open a second one for a request sent while the
      // first is still finishing the previous answer).
      if (maxRequests === undefined) assert.ok(Math.max(...counts) > 3, `requests per connection ${counts.join(', ')}`);
      else {
        // undici closes a connection once it has sent that many (sometimes one request earlier): never more.
        assert.ok(Math.max(...counts) <= maxRequests, `maxRequests ${maxRequests}: requests per connection ${counts.join(', ')}`);
        assert.ok(counts.length >= Math.ceil(12 / maxRequests), `maxRequests ${maxRequests}: ${counts.length} connections`);
      }
    }
  });

  it('keepalive.poolSize (keepalive_pool) does not cap concurrent connections, as in APISIX', async () => {
    const waiting: Array<() => void> = [];
    const s = await serve((_req, res) => {
      waiting.push(() => res.end('ok'));
    });
    const ka = { enabled: true, idleTimeoutMs: 10_000, poolSize: 1 };
    const calls = [0, 1, 2].map(() => fwd(request(`${s.url}/`, { keepalive: ka, timeout: 3_000 })));
    const t0 = performance.now();
    while (waiting.length < 3 && performance.now() - t0 < 2_000) await delay(10);
    assert.equal(waiting.length, 3, 'all three requests reached the upstream at once');
    for (const done of waiting) done();
    for (const res of await Promise.all(calls)) assert.equal(await new Response(res.body).text(), 'ok');
  });

  it('an idle gap in the response body longer than the timeout errors the body stream', async () => {
    const s = await serve((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('partial'); // then stalls
    });
    const res = await fwd(request(`${s.url}/`, { timeout: 300 }));
    const reader = res.body!.getReader();
    assert.equal(Buffer.from((await reader.read()).value!).toString(), 'partial');
    const t0 = performance.now();
    // undici's body timer has a coarse (~0.5–1 s) resolution.
    await within(rejectsWith(reader.read(), 'timeout'), 4_000, 'the body timeout');
    assert.ok(performance.now() - t0 >= 250);
  });

  it('a small (buffered) body that stalls rejects with timeout', async () => {
    const s = await serve((_req, res) => {
      res.writeHead(200, { 'content-length': '100' });
      res.write('only a part');
    });
    await within(rejectsWith(fwd(request(`${s.url}/`, { timeout: 300 })), 'timeout'), 4_000, 'the body timeout');
  });

  it('an upstream reset mid-body errors the body stream (content-length and chunked)', async () => {
    const s = await serve((req, res) => {
      if (req.url === '/length') res.writeHead(200, { 'content-length': 1_000_000 });
      else res.writeHead(200, { 'content-type': 'text/plain' }); // chunked
      res.write(Buffer.alloc(20_000, 'y'), () => setTimeout(() => res.socket?.destroy(), 20));
    });
    for (const path of ['/length', '/chunked']) {
      const res = await fwd(request(`${s.url}${path}`));
      assert.equal(res.status, 200);
      await rejectsWith(readAll(res.body), 'protocol');
    }
  });

  it('an upstream reset mid-body of a small (buffered) body rejects with protocol', async () => {
    const s = await serve((_req, res) => {
      res.writeHead(200, { 'content-length': '1000' });
      res.write('short', () => setTimeout(() => res.socket?.destroy(), 20));
    });
    await rejectsWith(fwd(request(`${s.url}/`)), 'protocol');
  });

  it('an upstream that closes without answering → protocol', async () => {
    const s = await serve((req) => {
      req.socket.destroy();
    });
    await rejectsWith(fwd(request(`${s.url}/`)), 'protocol');
  });

  it('an invalid response status → protocol', async () => {
    const s = await serve((_req, res) => {
      res.writeHead(999).end('odd');
    });
    await rejectsWith(fwd(request(`${s.url}/`)), 'protocol');
  });

  it('an already aborted signal rejects at once, without contacting the upstream', async () => {
    let hits = 0;
    const s = await serve((_req, res) => {
      hits++;
      res.end();
    });
    await rejectsWith(fwd(request(`${s.url}/`, { clientSignal: () => AbortSignal.abort() })), 'aborted');
    assert.equal(hits, 0);
  });

  it('abort while waiting for headers → aborted, and the upstream socket is closed', async () => {
    const closed = deferred();
    const arrived = deferred();
    const s = await serve((req) => {
      req.socket.on('close', () => closed.resolve());
      arrived.resolve();
    });
    const ac = new AbortController();
    const p = fwd(request(`${s.url}/`, { clientSignal: () => ac.signal }));
    await within(arrived.promise, 2_000, 'the request to arrive');
    ac.abort();
    await rejectsWith(p, 'aborted');
    await within(closed.promise, 2_000, 'the upstream socket to close');
  });

  it('abort during the response body → the body stream errors and the upstream socket is closed', async () => {
    const closed = deferred();
    const s = await serve((req, res) => {
      req.socket.on('close', () => closed.resolve());
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('some'); // and more later, never
    });
    const ac = new AbortController();
    const res = await fwd(request(`${s.url}/`, { clientSignal: () => ac.signal }));
    const reader = res.body!.getReader();
    await reader.read();
    ac.abort();
    await rejectsWith(reader.read(), 'aborted');
    await within(closed.promise, 2_000, 'the upstream socket to close');
  });

  it('cancelling the response body closes the upstream socket, without an error surfacing', async () => {
    const closed = deferred();
    const s = await serve((req, res) => {
      req.socket.on('close', () => closed.resolve());
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('some');
    });
    const res = await fwd(request(`${s.url}/`));
    const reader = res.body!.getReader();
    await reader.read();
    await reader.cancel(new Error('client went away'));
    await within(closed.promise, 2_000, 'the upstream socket to close');
  });

  it('a body-too-large error from the request body stream propagates with its kind', async () => {
    const closed = deferred();
    const s = await serve((req, res) => {
      req.socket.on('close', () => closed.resolve());
      req.on('end', () => res.end('should not happen'));
      req.resume();
    });
    const tooLarge = new UpstreamError('body-too-large', 'request body exceeds 10 bytes');
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent++ === 0) controller.enqueue(new TextEncoder().encode('0123456789'));
        else controller.error(tooLarge);
      },
    });
    const err = await rejectsWith(fwd(request(`${s.url}/`, { method: 'POST', body })), 'body-too-large');
    assert.equal(err, tooLarge, 'the same error object');
    await within(closed.promise, 2_000, 'the upstream socket to close');
  });

  it('a closed forwarder rejects with connect', async () => {
    const f = createNodeForwarder();
    await f.close();
    await rejectsWith(f(request('http://127.0.0.1:9/')), 'connect');
  });
});

describe('connection reuse', () => {
  async function portsOf(keepalive: ForwardRequest['keepalive'], pause = 10): Promise<number[]> {
    const ports: number[] = [];
    const s = await serve((req, res) => {
      ports.push(req.socket.remotePort!);
      res.end('ok');
    });
    for (let i = 0; i < 2; i++) {
      // A fresh but equal settings object each time: dispatchers are keyed by value.
      const res = await fwd(request(`${s.url}/`, { keepalive: { ...keepalive } }));
      await readAll(res.body);
      await delay(pause);
    }
    return ports;
  }

  it('reuses the connection when keepalive is enabled', async () => {
    const [a, b] = await portsOf({ enabled: true, idleTimeoutMs: 10_000, poolSize: 4 });
    assert.equal(a, b);
  });

  it('closes a connection idle for longer than idleTimeoutMs', async () => {
    const [a, b] = await portsOf({ enabled: true, idleTimeoutMs: 150, poolSize: 4 }, 500);
    assert.notEqual(a, b);
  });

  it('opens a new connection per request when keepalive is disabled', async () => {
    const [a, b] = await portsOf({ enabled: false, idleTimeoutMs: 10_000, poolSize: 4 });
    assert.notEqual(a, b);
  });
});

describe('TLS', () => {
  // The self-signed certificate is generated with the openssl CLI; without it there is nothing to test against.
  const skip = NO_OPENSSL;
  let s: TestServer | undefined;

  before(async () => {
    if (NO_OPENSSL) return;
    s = await listen(https.createServer(selfSignedCert(), (req, res) => res.end(`tls ${req.headers.host}`)));
  });
  after(() => s?.close());

  it('tlsVerify: false accepts a self-signed certificate', { skip }, async () => {
    const res = await fwd(request(`${s!.url}/`, { tlsVerify: false }));
    assert.equal(res.status, 200);
    assert.equal((await readAll(res.body)).toString(), `tls 127.0.0.1:${s!.port}`);
  });

  it('tlsVerify: true refuses a self-signed certificate → connect', { skip }, async () => {
    const err = await rejectsWith(fwd(request(`${s!.url}/`, { tlsVerify: true })), 'connect');
    assert.match(err.message, /self.signed|certificate/i);
  });
});

describe('clientSignal (the Node entry’s cheap “client went away” signal)', () => {
  /** A server whose handler hands back the signal of each request; answers after `answer()` is called. */
  async function signalServer() {
    const seen: Array<{ signal: AbortSignal; res: http.ServerResponse; events: string[] }> = [];
    const s = await serve((req, res) => {
      const signal = clientSignal(req, res);
      const events: string[] = [];
      signal.addEventListener('abort', (ev) => events.push(`${ev.type}:${signal.aborted}`));
      seen.push({ signal, res, events });
    });
    return { s, seen };
  }

  it('fires abort once when the client disconnects before the response is complete', async () => {
    const { s, seen } = await signalServer();
    const sock = net.connect(s.port, '127.0.0.1');
    sock.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n');
    const t0 = performance.now();
    while (seen.length === 0 && performance.now() - t0 < 2_000) await delay(5);
    const { signal, events } = seen[0]!;
    assert.equal(signal.aborted, false);
    sock.destroy();
    while (events.length === 0 && performance.now() - t0 < 2_000) await delay(5);
    assert.deepEqual(events, ['abort:true']);
    assert.throws(() => signal.throwIfAborted(), { name: 'AbortError' });
  });

  it('does not fire when the response completes, nor for a listener that was removed', async () => {
    const { s, seen } = await signalServer();
    const pending = fetch(`${s.url}/`);
    const t0 = performance.now();
    while (seen.length === 0 && performance.now() - t0 < 2_000) await delay(5);
    const { signal, res, events } = seen[0]!;
    const removed: string[] = [];
    const listener = () => removed.push('fired');
    signal.addEventListener('abort', listener);
    signal.removeEventListener('abort', listener);
    res.end('done');
    assert.equal(await (await pending).text(), 'done');
    await delay(50);
    assert.deepEqual(events, []);
    assert.deepEqual(removed, []);
    assert.equal(signal.aborted, false);
  });

  it('on a kept-alive connection: one close listener for all its requests; only the unfinished one fires', async () => {
    const { s, seen } = await signalServer();
    const sock = net.connect(s.port, '127.0.0.1');
    let received = '';
    sock.on('data', (d) => {
      received += d.toString('latin1');
    });
    const t0 = performance.now();
    const waitSeen = async (n: number) => {
      while (seen.length < n && performance.now() - t0 < 2_000) await delay(5);
      assert.equal(seen.length, n);
    };
    let closeListeners: number | undefined;
    for (let i = 1; i <= 3; i++) {
      sock.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n');
      await waitSeen(i);
      const { res } = seen[i - 1]!;
      // Each request subscribed (signalServer adds a listener), yet the socket's `close` listeners do not grow.
      const count = res.socket!.listenerCount('close');
      closeListeners ??= count;
      assert.equal(count, closeListeners);
      if (i < 3) {
        res.end(`answer ${i}`);
        while (!received.includes(`answer ${i}`) && performance.now() - t0 < 2_000) await delay(5);
      }
    }
    sock.destroy();
    while (seen[2]!.events.length === 0 && performance.now() - t0 < 2_000) await delay(5);
    assert.deepEqual(seen[0]!.events, []);
    assert.deepEqual(seen[1]!.events, []);
    assert.deepEqual(seen[2]!.events, ['abort:true']);
  });

  it('several signals on one connection and listeners removed from the middle: the rest fire, in the order added', async () => {
    const fired: string[] = [];
    let removedAll = false;
    const s = await serve((req, res) => {
      const [s1, s2, s3] = [clientSignal(req, res), clientSignal(req, res), clientSignal(req, res)];
      const on = (name: string) => () => fired.push(name);
      const [a, b, c] = [on('s1'), on('s2:a'), on('s2:b')];
      s1.addEventListener('abort', a);
      s2.addEventListener('abort', b);
      s2.addEventListener('abort', on('s2:c'));
      s2.addEventListener('abort', c);
      s3.addEventListener('abort', on('s3'));
      // The first signal leaves the socket's list (its last listener gone); the second loses a middle listener.
      s1.removeEventListener('abort', a);
      s2.removeEventListener('abort', c);
      s2.addEventListener('abort', c);
      s2.removeEventListener('abort', b);
      removedAll = true;
    });
    const sock = net.connect(s.port, '127.0.0.1');
    sock.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n');
    const t0 = performance.now();
    while (!removedAll && performance.now() - t0 < 2_000) await delay(5);
    sock.destroy();
    while (fired.length < 3 && performance.now() - t0 < 2_000) await delay(5);
    await delay(20);
    assert.deepEqual(fired.sort(), ['s2:b', 's2:c', 's3']);
  });

  it('one signal calls its listeners in the order they were added, after removals', async () => {
    const order: string[] = [];
    let ready = false;
    const s = await serve((req, res) => {
      const signal = clientSignal(req, res);
      const l = (name: string) => () => order.push(name);
      const [a, b, c, d] = [l('a'), l('b'), l('c'), l('d')];
      for (const fn of [a, b, c, d]) signal.addEventListener('abort', fn);
      signal.removeEventListener('abort', b); // middle
      signal.removeEventListener('abort', d); // last
      signal.addEventListener('abort', b); // back, now last
      ready = true;
    });
    const sock = net.connect(s.port, '127.0.0.1');
    sock.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n');
    const t0 = performance.now();
    while (!ready && performance.now() - t0 < 2_000) await delay(5);
    sock.destroy();
    while (order.length < 3 && performance.now() - t0 < 2_000) await delay(5);
    await delay(20);
    assert.deepEqual(order, ['a', 'c', 'b']);
  });

  it('fires for a listener added after the client already went away', async () => {
    const gone: Array<{ signal: AbortSignal; events: string[] }> = [];
    const s = await serve((req, res) => {
      req.socket.once('close', () => {
        const signal = clientSignal(req, res);
        const events: string[] = [];
        signal.addEventListener('abort', () => events.push(`abort:${signal.aborted}`));
        gone.push({ signal, events });
      });
    });
    const sock = net.connect(s.port, '127.0.0.1');
    sock.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n');
    await delay(50);
    sock.destroy();
    const t0 = performance.now();
    while ((gone.length === 0 || gone[0]!.events.length === 0) && performance.now() - t0 < 2_000) await delay(5);
    assert.deepEqual(gone[0]!.events, ['abort:true']);
  });
});

describe('smallLength (is a Content-Length small enough to read whole)', () => {
  const byRegex = (v: string) => (/^\d{1,9}$/.test(v) ? Number(v) : Number.POSITIVE_INFINITY);
  it('answers what /^\\d{1,9}$/ then Number() answered', () => {
    for (const v of ['', '0', '00', '1024', '16384', '999999999', '1000000000', ' 1', '1 ', '+1', '-1', '1e3', '0x10', '١٢', '12a']) {
      assert.equal(smallLength(v), byRegex(v), JSON.stringify(v));
    }
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.stringMatching(/^[0-9]{0,11}$/)), (v) => smallLength(v) === byRegex(v)),
      { numRuns: 2000 },
    );
  });
});

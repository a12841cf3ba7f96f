/**
 * The Node proxy port's own listener (src/runtime/node-serve.ts) on a real node:http server on 127.0.0.1 (with
 * node-http.ts's hardening, as the entry serves it), driven by node:http clients and raw sockets: the light Request
 * the core gets, and how each kind of Response is written.
 * Run: node --import tsx --test test/unit/node-serve.test.ts
 */
import assert from 'node:assert/strict';
import { type IncomingMessage, request as httpRequest, type Server } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { HttpBindings } from '@hono/node-server';
import { createHardenedServer } from '../../src/runtime/node-http.ts';
import { rawExchange as rawSocket } from '../helpers/raw-socket.ts';
import { type ProxyFetch, proxyListener, requestUrl } from '../../src/runtime/node-serve.ts';

let handler: ProxyFetch = () => new Response('unset');
let server: Server;
let port: number;
const errors: unknown[] = [];
const consoleError = console.error;

before(async () => {
  server = createHardenedServer({}, proxyListener((req, env) => handler(req, env), { hostname: '127.0.0.1' }));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
  console.error = (...args: unknown[]) => void errors.push(args[0]);
});

after(async () => {
  console.error = consoleError;
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

interface Answer {
  status: number;
  raw: string[];
  body: string;
}

function call(method: string, path: string, headers: Record<string, string | string[]> = {}, body?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res: IncomingMessage) => {
      let text = '';
      res.setEncoding('latin1');
      res.on('data', (d: string) => {
        text += d;
      });
      res.on('end', () => resolve({ status: res.statusCode!, raw: res.rawHeaders, body: text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Every value of header `name` (case-insensitive) in a raw header list. */
function lines(raw: string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === name) out.push(raw[i + 1]!);
  return out;
}

/** Sends `text` on a raw connection; resolves with everything received until the gateway closed it (or `ms`). */
const rawExchange = (text: string, ms = 3000) => rawSocket(port, '127.0.0.1', text, ms);

describe('the Request the core gets', () => {
  it('has the method, the URL, and headers read from the raw lines (repeats joined as Headers joins them)', async () => {
    let seen: Record<string, unknown> = {};
    handler = (req) => {
      const entries: [string, string][] = [];
      for (const pair of req.headers) entries.push(pair);
      seen = {
        isRequest: req instanceof Request,
        isHeaders: req.headers instanceof Headers,
        method: req.method,
        url: req.url,
        a: req.headers.get('X-A'),
        cookie: req.headers.get('cookie'),
        hasA: req.headers.has('x-a'),
        hasB: req.headers.has('x-b'),
        missing: req.headers.get('x-missing'),
        entries,
        body: req.body,
      };
      return new Response('ok');
    };
    const res = await call('GET', '/p/q?x=1', { 'X-A': ['1', '2'], Cookie: ['a=1', 'b=2'] });
    assert.equal(res.status, 200);
    assert.equal(seen.isRequest, true);
    assert.equal(seen.isHeaders, true);
    assert.equal(seen.method, 'GET');
    assert.equal(seen.url, `http://127.0.0.1:${port}/p/q?x=1`);
    assert.equal(seen.a, '1, 2');
    assert.equal(seen.cookie, 'a=1; b=2');
    assert.equal(seen.hasA, true);
    assert.equal(seen.hasB, false);
    assert.equal(seen.missing, null);
    assert.deepEqual(
      (seen.entries as [string, string][]).filter(([n]) => n === 'x-a' || n === 'cookie'),
      [
        ['cookie', 'a=1; b=2'],
        ['x-a', '1, 2'],
      ],
    );
    assert.equal(seen.body, null);
  });

  it('gives a POST its body, as a stream and through the methods of a real Request', async () => {
    handler = async (req) => {
      if (req.headers.get('x-how') === 'text') return new Response(`text:${await req.text()}`);
      let out = '';
      for await (const chunk of req.body as unknown as AsyncIterable<Uint8Array>) out += Buffer.from(chunk).toString();
      return new Response(`stream:${out}`);
    };
    assert.equal((await call('POST', '/up', { 'x-how': 'text' }, 'hello')).body, 'text:hello');
    assert.equal((await call('POST', '/up', { 'x-how': 'stream' }, 'hello')).body, 'stream:hello');
    const big = 'x'.repeat(300_000);
    assert.equal((await call('PUT', '/up', { 'x-how': 'stream' }, big)).body, `stream:${big}`);
  });

  it('builds the URL as @hono/node-server did: dot segments resolved, a backslash in the path refused, absolute form kept', () => {
    assert.equal(requestUrl('/a/./b/../c?q=1', 'h.example', 'http'), 'http://h.example/a/c?q=1');
    assert.equal(requestUrl('/plain/path', 'h.example:8080', 'https'), 'https://h.example:8080/plain/path');
    assert.equal(requestUrl('/x?a=\\b', 'h.example', 'http'), 'http://h.example/x?a=\\b');
    assert.throws(() => requestUrl('/a\\b', 'h.example', 'http'));
    assert.throws(() => requestUrl('/a', undefined, 'http'));
    assert.equal(requestUrl('http://Abs.example/p', 'abs.example', 'http'), 'http://abs.example/p');
    assert.equal(requestUrl('/p', 'H.Example', 'http'), 'http://h.example/p');
  });

  it('answers 400 to a path with a backslash, and serves HTTP/1.0 without Host on the listening address', async () => {
    handler = (req) => new Response(req.url);
    const bad = await rawExchange('GET /a\\b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    assert.match(bad.answer, /^HTTP\/1\.1 400 /);
    const old = await rawExchange('GET /old HTTP/1.0\r\n\r\n');
    assert.match(old.answer, /^HTTP\/1\.1 200 /);
    assert.ok(old.answer.endsWith(`http://127.0.0.1/old`), old.answer);
  });

  it('aborts req.signal when the client goes away before the answer', { timeout: 10_000 }, async () => {
    let aborted: () => void = () => {};
    const gone = new Promise<void>((resolve) => {
      aborted = resolve;
    });
    handler = (req) =>
      new Promise<Response>((resolve) => {
        req.signal.addEventListener('abort', () => {
          aborted();
          resolve(new Response('late'));
        });
      });
    const sock = connect(port, '127.0.0.1');
    sock.on('error', () => {});
    sock.write('GET /wait HTTP/1.1\r\nHost: x\r\n\r\n');
    setTimeout(() => sock.destroy(), 100);
    await gone;
  });
});

describe('the answer', () => {
  it('writes a plain header record as it is, adds the bytes\' Content-Length without changing the record', async () => {
    const shared = Object.freeze({ 'content-type': 'application/json', 'x-one': '1' });
    handler = () => new Response(new TextEncoder().encode('{"a":1}'), { status: 201, headers: shared });
    const res = await call('GET', '/json');
    assert.equal(res.status, 201);
    assert.deepEqual(lines(res.raw, 'content-type'), ['application/json']);
    assert.deepEqual(lines(res.raw, 'content-length'), ['7']);
    assert.deepEqual(lines(res.raw, 'x-one'), ['1']);
    assert.equal(res.body, '{"a":1}');
    assert.deepEqual(Object.keys(shared), ['content-type', 'x-one']);
  });

  it('adds text/plain to a body without headers or with a Headers lacking a Content-Type, none to a record', async () => {
    handler = (req) => {
      const kind = req.headers.get('x-kind');
      if (kind === 'none') return new Response('hi');
      if (kind === 'headers') return new Response(new TextEncoder().encode('hi'), { headers: new Headers({ 'x-h': '1' }) });
      return new Response(new TextEncoder().encode('hi'), { headers: { 'x-h': '1' } });
    };
    assert.deepEqual(lines((await call('GET', '/', { 'x-kind': 'none' })).raw, 'content-type'), ['text/plain; charset=UTF-8']);
    assert.deepEqual(lines((await call('GET', '/', { 'x-kind': 'headers' })).raw, 'content-type'), ['text/plain; charset=UTF-8']);
    assert.deepEqual(lines((await call('GET', '/', { 'x-kind': 'record' })).raw, 'content-type'), []);
  });

  it('sends each Set-Cookie on its own line, from a record and from a Headers', async () => {
    handler = (req) => {
      if (req.headers.get('x-kind') === 'record') return new Response(null, { headers: { 'set-cookie': ['a=1', 'b=2'] as unknown as string } });
      const h = new Headers();
      h.append('Set-Cookie', 'a=1');
      h.append('Set-Cookie', 'b=2');
      return new Response(null, { headers: h });
    };
    assert.deepEqual(lines((await call('GET', '/', { 'x-kind': 'record' })).raw, 'set-cookie'), ['a=1', 'b=2']);
    assert.deepEqual(lines((await call('GET', '/', { 'x-kind': 'headers' })).raw, 'set-cookie'), ['a=1', 'b=2']);
  });

  it('sends no body to HEAD (the Content-Length kept) nor with a 204 or 304', async () => {
    handler = (req) => {
      const status = Number(req.headers.get('x-status') ?? 200);
      return new Response(status === 200 ? new TextEncoder().encode('12345') : null, { status, headers: { 'content-length': '5' } });
    };
    const head = await rawExchange('HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    assert.match(head.answer, /^HTTP\/1\.1 200 /);
    assert.match(head.answer, /content-length: 5\r\n/i);
    assert.ok(head.answer.endsWith('\r\n\r\n'), JSON.stringify(head.answer));
    for (const status of [204, 304]) {
      const res = await rawExchange(`GET / HTTP/1.1\r\nHost: x\r\nx-status: ${status}\r\nConnection: close\r\n\r\n`);
      assert.match(res.answer, new RegExp(`^HTTP/1\\.1 ${status} `));
      assert.ok(res.answer.endsWith('\r\n\r\n'), JSON.stringify(res.answer));
    }
  });

  it('writes a native Response (not @hono/node-server\'s) through its public API', async () => {
    const NativeResponse = Object.getPrototypeOf(Response) as typeof Response;
    assert.notEqual(NativeResponse, Response, '@hono/node-server replaced the global Response');
    handler = () => new NativeResponse('native', { status: 202, headers: { 'x-native': 'yes' } });
    const res = await call('GET', '/native');
    assert.equal(res.status, 202);
    assert.equal(res.body, 'native');
    assert.deepEqual(lines(res.raw, 'x-native'), ['yes']);
  });

  it('streams a ReadableStream body with backpressure, chunked, in order', async () => {
    const chunk = new Uint8Array(64 * 1024).fill(97);
    let pulls = 0;
    handler = () =>
      new Response(
        new ReadableStream<Uint8Array>({
          pull(c) {
            if (++pulls > 64) c.close();
            else c.enqueue(chunk);
          },
        }),
        { headers: { 'content-type': 'application/octet-stream' } },
      );
    const res = await call('GET', '/stream');
    assert.equal(res.body.length, 64 * chunk.length);
    assert.deepEqual(lines(res.raw, 'transfer-encoding'), ['chunked']);
  });

  it('cancels the body stream when the client goes away mid-answer', { timeout: 10_000 }, async () => {
    let cancelled: (reason: unknown) => void = () => {};
    const wasCancelled = new Promise((resolve) => {
      cancelled = resolve;
    });
    handler = () =>
      new Response(
        new ReadableStream<Uint8Array>({
          start(c) {
            c.enqueue(new TextEncoder().encode('first'));
          },
          cancel: (reason) => cancelled(reason),
        }),
        { headers: {} },
      );
    const sock = connect(port, '127.0.0.1');
    sock.on('error', () => {});
    sock.write('GET /cut HTTP/1.1\r\nHost: x\r\n\r\n');
    sock.once('data', () => sock.destroy());
    await wasCancelled;
  });

  it('closes the connection when the body stream errors mid-answer (no complete-looking answer)', async () => {
    handler = () =>
      new Response(
        new ReadableStream<Uint8Array>({
          start(c) {
            c.enqueue(new TextEncoder().encode('partial'));
            setTimeout(() => c.error(new Error('upstream broke')), 50);
          },
        }),
        { headers: {} },
      );
    const r = await rawExchange('GET /broken HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.ok(r.closed, 'the connection stays open');
    assert.match(r.answer, /^HTTP\/1\.1 200 /);
    assert.ok(r.answer.includes('partial'));
    assert.ok(!r.answer.endsWith('0\r\n\r\n'), 'the chunked answer was ended as if complete');
  });

  it('answers 500 when the handler throws or its promise rejects', async () => {
    handler = (req) => {
      if (req.headers.get('x-kind') === 'sync') throw new Error('sync');
      return Promise.reject(new Error('async'));
    };
    assert.equal((await call('GET', '/', { 'x-kind': 'sync' })).status, 500);
    assert.equal((await call('GET', '/', { 'x-kind': 'async' })).status, 500);
  });

  it('drains an upload nobody read for a bounded time after the answer, then closes the connection', async () => {
    for (const mode of ['sync', 'async']) {
      handler = () => (mode === 'sync' ? new Response('no', { status: 404 }) : Promise.resolve(new Response('no', { status: 404 })));
      const started = Date.now();
      const sock = connect(port, '127.0.0.1');
      const chunk = `${(64 * 1024).toString(16)}\r\n${'x'.repeat(64 * 1024)}\r\n`;
      let answer = '';
      let stop = false;
      const closed = new Promise<void>((resolve) => sock.on('close', () => resolve()));
      sock.on('error', () => {});
      sock.on('data', (d) => {
        answer += d.toString('latin1');
      });
      sock.on('connect', () => {
        sock.write('POST /endless HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n');
        const pump = () => {
          while (!stop && !sock.destroyed) if (!sock.write(chunk)) return void sock.once('drain', pump);
        };
        pump();
      });
      const timeout = setTimeout(() => sock.destroy(), 5000);
      await closed;
      stop = true;
      clearTimeout(timeout);
      assert.match(answer, /^HTTP\/1\.1 404 /, mode);
      assert.ok(Date.now() - started < 4000, `${mode}: closed after ${Date.now() - started} ms`);
    }
  });

  it('passes the env node:http gave (incoming, outgoing) to the handler', async () => {
    let env: HttpBindings | undefined;
    handler = (_req, e) => {
      env = e;
      return new Response('ok');
    };
    await call('GET', '/env');
    assert.equal(typeof env?.incoming.rawHeaders, 'object');
    assert.equal(typeof env?.outgoing.writeHead, 'function');
  });
});

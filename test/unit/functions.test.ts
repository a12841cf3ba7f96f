// Tests of the real function servers (test/functions) and the process harness (test/helpers/process.ts).
// Run: node --import tsx --test test/unit/functions.test.ts
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { Agent, request as httpRequest } from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { GZIP_TEXT, startFunction, startFunctions, streamSha256 } from '../functions/functions.ts';
import type { FunctionServers } from '../functions/functions.ts';
import { DEFAULT_BASE_PORT, parseServeArgs } from '../functions/serve.ts';
import { FREE_PORT_RANGE, freePort, refusedPort, rmDir, startProcess, tmpDir, waitFor } from '../helpers/process.ts';

const REPO = fileURLToPath(new URL('../..', import.meta.url));

interface Res {
  status: number;
  headers: IncomingHttpHeaders;
  rawHeaders: string[];
  raw: Buffer;
  text: string;
}

interface ReqOpts {
  method?: string;
  headers?: Record<string, string | string[]>;
  body?: string | Buffer;
  agent?: Agent | false;
}

/** Plain node:http request (no auto-decompression, no redirects, no connection pool by default). */
function req(url: string, opts: ReqOpts = {}): Promise<Res> {
  return new Promise((resolve, reject) => {
    const r = httpRequest(url, { method: opts.method ?? 'GET', agent: opts.agent ?? false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const raw = Buffer.concat(chunks);
        resolve({
          status: res.statusCode!,
          headers: res.headers,
          rawHeaders: res.rawHeaders,
          raw,
          text: raw.toString('utf8'),
        });
      });
    });
    for (const [k, v] of Object.entries(opts.headers ?? {})) r.setHeader(k, v);
    r.on('error', reject);
    r.end(opts.body);
  });
}

/** Start a request and resolve with the response head (body not consumed). */
function head(url: string, opts: ReqOpts = {}): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const r = httpRequest(url, { method: opts.method ?? 'GET', agent: opts.agent ?? false }, resolve);
    r.on('error', reject);
    r.end(opts.body);
  });
}

async function getStats(base: string): Promise<{ aborted: number; completed: number }> {
  const r = await req(`${base}/__stats`);
  assert.equal(r.status, 200);
  return JSON.parse(r.text);
}

/** Is `pid` a live (non-zombie) process? */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return process.platform !== 'linux';
  }
}

let fns: FunctionServers;
before(async () => {
  fns = await startFunctions();
});
after(async () => {
  await fns.close();
});

describe('function-sample', () => {
  test('greets the last non-empty path segment', async () => {
    const cases: [string, string][] = [
      ['/default/function-sample/test', 'Hello, test!'],
      ['/function-sample', 'Hello, function-sample!'],
      ['/a/b/', 'Hello, b!'],
      ['/x?y=z', 'Hello, x!'],
      ['/', 'Hello, World!'],
    ];
    for (const [path, want] of cases) {
      const r = await req(fns.urls['function-sample'] + path);
      assert.equal(r.status, 200, path);
      assert.equal(r.text, want, path);
      assert.match(r.headers['content-type'] ?? '', /^text\/plain/);
    }
  });
});

describe('test-body (APISIX CI 30585)', () => {
  test('answers Hello, <body>!\\n on any path', async () => {
    let r = await req(`${fns.urls['test-body']}/default/test-body`, { method: 'POST', body: 'APISIX' });
    assert.equal(r.status, 200);
    assert.equal(r.text, 'Hello, APISIX!\n');
    r = await req(`${fns.urls['test-body']}/anything/else`, { method: 'POST', body: 'test' });
    assert.equal(r.text, 'Hello, test!\n');
    r = await req(`${fns.urls['test-body']}/`);
    assert.equal(r.text, 'Hello, !\n');
  });
});

describe('test-header (APISIX CI 30583)', () => {
  test('prints the Authorization values Go-%s style', async () => {
    const u = `${fns.urls['test-header']}/`;
    let r = await req(u, { method: 'POST', headers: { authorization: 'Basic dGVzdDp0ZXN0' } });
    assert.equal(r.status, 200);
    assert.equal(r.text, '[Basic dGVzdDp0ZXN0]');
    r = await req(u, { method: 'POST', headers: { Authorization: 'user-token-xxx' } });
    assert.equal(r.text, '[user-token-xxx]');
    r = await req(`${fns.urls['test-header']}/any/path`);
    assert.equal(r.text, '[]');
    r = await req(u, { headers: { authorization: ['a', 'b c'] } });
    assert.equal(r.text, '[a b c]');
  });
});

describe('test-uri (APISIX CI 30584)', () => {
  test('greets a single path segment', async () => {
    for (const [path, want] of [
      ['/APISIX', 'Hello, APISIX!\n'],
      ['/function-sample', 'Hello, function-sample!\n'],
      ['/openfunction?x=1', 'Hello, openfunction!\n'],
      ['/hello%20world', 'Hello, hello world!\n'],
    ] as const) {
      const r = await req(fns.urls['test-uri'] + path);
      assert.equal(r.status, 200, path);
      assert.equal(r.text, want, path);
    }
  });
  test('404 page not found for empty or multi-segment paths', async () => {
    for (const path of ['/default/non-existent', '/', '/a/', '/a%2Fb', '//a']) {
      const r = await req(fns.urls['test-uri'] + path, {
        method: 'POST',
        body: 'test',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
      });
      assert.equal(r.status, 404, path);
      assert.equal(r.text, '404 page not found\n', path);
    }
  });
});

describe('echo', () => {
  test('reflects method, raw url, headers and body', async () => {
    const r = await req(`${fns.urls.echo}/p/a%20th?x=1&x=2&y`, {
      method: 'PUT',
      headers: { 'X-Custom': 'v1', 'content-type': 'text/plain' },
      body: 'héllo',
    });
    assert.equal(r.status, 200);
    assert.match(r.headers['content-type'] ?? '', /^application\/json/);
    const j = JSON.parse(r.text);
    assert.equal(j.method, 'PUT');
    assert.equal(j.url, '/p/a%20th?x=1&x=2&y');
    assert.equal(j.headers['x-custom'], 'v1');
    assert.ok(j.rawHeaders.includes('X-Custom'));
    assert.equal(j.body, 'héllo');
    assert.equal(j.bodyLength, Buffer.byteLength('héllo'));
    assert.equal(j.headers['content-length'], String(j.bodyLength));
  });
  test('?status and repeatable ?set-header (hop-by-hop included)', async () => {
    const q = new URLSearchParams();
    q.set('status', '418');
    q.append('set-header', 'Connection: x-foo');
    q.append('set-header', 'X-Foo: 1');
    q.append('set-header', 'Keep-Alive: timeout=9');
    q.append('set-header', 'Set-Cookie: a=1');
    q.append('set-header', 'Set-Cookie: b=2');
    const r = await req(`${fns.urls.echo}/?${q}`);
    assert.equal(r.status, 418);
    assert.equal(r.headers.connection, 'x-foo');
    assert.equal(r.headers['x-foo'], '1');
    assert.equal(r.headers['keep-alive'], 'timeout=9');
    assert.deepEqual(r.headers['set-cookie'], ['a=1', 'b=2']);
    assert.equal(JSON.parse(r.text).method, 'GET');
    assert.equal((await req(`${fns.urls.echo}/?status=99`)).status, 400);
  });
});

describe('slow', () => {
  test('waits ?delay ms before answering', async () => {
    const t0 = Date.now();
    const r = await req(`${fns.urls.slow}/?delay=150`);
    assert.ok(Date.now() - t0 >= 140, `took ${Date.now() - t0} ms`);
    assert.equal(r.status, 200);
    assert.equal(r.text, 'slow done');
  });
  test('counts a client that gives up as aborted', async () => {
    const before = await getStats(fns.urls.slow);
    const r = httpRequest(`${fns.urls.slow}/?delay=10000`, { agent: false });
    r.on('error', () => {});
    r.end();
    await new Promise((resolve) => setTimeout(resolve, 100));
    r.destroy();
    await waitFor(async () => (await getStats(fns.urls.slow)).aborted === before.aborted + 1);
  });
  test('close() does not wait for a pending slow response', async () => {
    const slow = await startFunction('slow');
    const arrived = once(slow.server, 'request');
    const pending = req(`${slow.url}/?delay=60000`).then(
      () => 'answered',
      () => 'reset',
    );
    await arrived;
    const t0 = Date.now();
    await slow.close();
    assert.ok(Date.now() - t0 < 1000);
    assert.equal(await pending, 'reset');
    assert.equal(slow.stats.aborted, 1);
  });
});

describe('stream', () => {
  test('first chunk arrives long before the last', async () => {
    const t0 = Date.now();
    const res = await head(`${fns.urls.stream}/?chunks=5&interval=200`);
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['transfer-encoding'], 'chunked');
    const arrivals: number[] = [];
    let body = '';
    res.setEncoding('utf8');
    for await (const chunk of res) {
      arrivals.push(Date.now() - t0);
      body += chunk;
    }
    const total = Date.now() - t0;
    assert.equal(body, 'chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\n');
    assert.ok(total >= 750, `total ${total} ms`);
    assert.ok(arrivals[0]! < total - 500, `first chunk at ${arrivals[0]} ms of ${total} ms`);
    assert.ok(arrivals.length >= 3, `only ${arrivals.length} reads`);
  });
  test('/__stats counts clients that leave mid-stream', async () => {
    const before = await getStats(fns.urls.stream);
    const res = await head(`${fns.urls.stream}/?chunks=100&interval=20`);
    await new Promise((resolve) => res.once('data', resolve));
    res.destroy();
    await waitFor(async () => (await getStats(fns.urls.stream)).aborted === before.aborted + 1);
    const r = await req(`${fns.urls.stream}/?chunks=2&interval=1`);
    assert.equal(r.text, 'chunk 0\nchunk 1\n');
    const s = await waitFor(async () => {
      const now = await getStats(fns.urls.stream);
      return now.completed >= before.completed + 1 ? now : undefined;
    });
    assert.equal(s.aborted, before.aborted + 1);
    assert.deepEqual(fns.stats('stream'), s);
  });
  test('DELETE /__stats resets the counters', async () => {
    await req(`${fns.urls.stream}/?chunks=1`);
    await waitFor(() => fns.stats('stream').completed > 0);
    const r = await req(`${fns.urls.stream}/__stats`, { method: 'DELETE' });
    assert.deepEqual(JSON.parse(r.text), { aborted: 0, completed: 0 });
  });
  test('?size streams exactly that many bytes (chunked and with content-length)', async () => {
    const size = 3 * 1024 * 1024 + 123;
    for (const extra of ['', '&content-length=1']) {
      const r = await req(`${fns.urls.stream}/?size=${size}${extra}`);
      assert.equal(r.raw.length, size);
      assert.equal(createHash('sha256').update(r.raw).digest('hex'), streamSha256(size));
      if (extra) assert.equal(r.headers['content-length'], String(size));
      else assert.equal(r.headers['transfer-encoding'], 'chunked');
    }
  });
  test('?size=100 MiB streams quickly with backpressure', async () => {
    const size = 100 * 1024 * 1024;
    const t0 = Date.now();
    const res = await head(`${fns.urls.stream}/?size=${size}`);
    const hash = createHash('sha256');
    let n = 0;
    for await (const chunk of res) {
      n += (chunk as Buffer).length;
      hash.update(chunk as Buffer);
    }
    assert.equal(n, size);
    assert.equal(hash.digest('hex'), streamSha256(size));
    assert.ok(Date.now() - t0 < 20_000, `took ${Date.now() - t0} ms`);
  });
});

describe('upload', () => {
  function upload(url: string, data: Buffer, chunked: boolean): Promise<Res> {
    return new Promise((resolve, reject) => {
      const r = httpRequest(url, { method: 'POST', agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const raw = Buffer.concat(chunks);
          resolve({
            status: res.statusCode!,
            headers: res.headers,
            rawHeaders: res.rawHeaders,
            raw,
            text: String(raw),
          });
        });
      });
      r.on('error', reject);
      if (!chunked) r.setHeader('content-length', data.length);
      for (let off = 0; off < data.length; off += 64 * 1024) r.write(data.subarray(off, off + 64 * 1024));
      r.end();
    });
  }
  test('counts bytes and sha256 of a multi-MiB body', async () => {
    const data = randomBytes(5 * 1024 * 1024 + 7);
    const want = createHash('sha256').update(data).digest('hex');
    for (const chunked of [true, false]) {
      const r = await upload(`${fns.urls.upload}/any`, data, chunked);
      assert.equal(r.status, 200);
      const j = JSON.parse(r.text);
      assert.equal(j.bytes, data.length);
      assert.equal(j.sha256, want);
      assert.equal(j.transferEncoding, chunked ? 'chunked' : null);
      assert.equal(j.contentLength, chunked ? null : String(data.length));
    }
  });
  test('empty body', async () => {
    const r = await req(`${fns.urls.upload}/`, { method: 'POST' });
    assert.deepEqual(JSON.parse(r.text).bytes, 0);
    assert.equal(JSON.parse(r.text).sha256, createHash('sha256').digest('hex'));
  });
  test('counts an aborted upload', async () => {
    const before = await getStats(fns.urls.upload);
    const r = httpRequest(`${fns.urls.upload}/`, { method: 'POST', agent: false });
    r.on('error', () => {});
    r.setHeader('content-length', 10 * 1024 * 1024);
    r.write(Buffer.alloc(1024 * 1024));
    await new Promise((resolve) => setTimeout(resolve, 100));
    r.destroy();
    await waitFor(async () => (await getStats(fns.urls.upload)).aborted === before.aborted + 1);
  });
});

describe('redirect, gzip, status', () => {
  test('redirect answers 302 Location: /elsewhere', async () => {
    const r = await req(`${fns.urls.redirect}/somewhere`);
    assert.equal(r.status, 302);
    assert.equal(r.headers.location, '/elsewhere');
    assert.equal(r.text, 'moved');
  });
  test('gzip compresses only when accepted', async () => {
    let r = await req(`${fns.urls.gzip}/`, { headers: { 'accept-encoding': 'br, gzip;q=0.8' } });
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-encoding'], 'gzip');
    assert.equal(r.headers['content-length'], String(r.raw.length));
    assert.ok(r.raw.length < GZIP_TEXT.length);
    assert.equal(gunzipSync(r.raw).toString(), 'hello gzip\n'.repeat(100));
    for (const ae of [undefined, 'identity', 'gzip;q=0']) {
      r = await req(`${fns.urls.gzip}/`, { headers: ae ? { 'accept-encoding': ae } : {} });
      assert.equal(r.headers['content-encoding'], undefined, String(ae));
      assert.equal(r.text, GZIP_TEXT);
      assert.equal(r.headers['content-length'], String(GZIP_TEXT.length));
    }
  });
  test('status answers the status in the path', async () => {
    for (const [path, code, body] of [
      ['/503', 503, 'status 503'],
      ['/status/404', 404, 'status 404'],
      ['/201', 201, 'status 201'],
      ['/204', 204, ''],
      ['/abc', 400, undefined],
      ['/99', 400, undefined],
    ] as const) {
      const r = await req(fns.urls.status + path);
      assert.equal(r.status, code, path);
      if (body !== undefined) assert.equal(r.text, body, path);
    }
  });
});

describe('startFunctions / startFunction', () => {
  test('fixed ports are honoured and a busy port rejects without leaking', async () => {
    const port = await freePort();
    const f = await startFunctions({ ports: { echo: port } });
    try {
      assert.equal(f.ports.echo, port);
      assert.equal(f.urls.echo, `http://127.0.0.1:${port}`);
      assert.equal(Object.keys(f.urls).length, 14);
      await assert.rejects(startFunctions({ ports: { echo: port } }), /EADDRINUSE/);
    } finally {
      await f.close();
    }
  });
  test('close() resolves promptly with keep-alive connections and a stream in flight', async () => {
    const f = await startFunctions();
    const agent = new Agent({ keepAlive: true });
    try {
      const r = await req(`${f.urls.echo}/`, { agent });
      assert.equal(r.headers.connection, 'keep-alive');
      const res = await head(`${f.urls.stream}/?chunks=1000&interval=1000`, { agent });
      res.on('error', () => {});
      res.resume();
      const t0 = Date.now();
      await f.close();
      assert.ok(Date.now() - t0 < 1000, `close took ${Date.now() - t0} ms`);
      await waitFor(() => f.stats('stream').aborted === 1);
    } finally {
      agent.destroy();
    }
  });
  test('IPv6 loopback URL is bracketed', async (t) => {
    const s = await startFunction('function-sample', { host: '::1' }).catch(() => undefined);
    if (!s) return t.skip('no IPv6 loopback');
    try {
      assert.match(s.url, /^http:\/\/\[::1\]:\d+$/);
      assert.equal((await req(`${s.url}/x`)).text, 'Hello, x!');
    } finally {
      await s.close();
    }
  });
});

describe('serve.ts', () => {
  test('default layout keeps the APISIX CI ports', () => {
    const plan = parseServeArgs([]);
    assert.ok(plan !== 'help');
    const ports = Object.fromEntries(plan.functions.map((f) => [f.name, f.port]));
    assert.equal(plan.host, '127.0.0.1');
    assert.equal(ports['test-header'], 30583);
    assert.equal(ports['test-uri'], 30584);
    assert.equal(ports['test-body'], 30585);
    assert.equal(ports['function-sample'], 30586);
    assert.equal(plan.functions.length, 14);
    assert.equal(new Set(Object.values(ports)).size, 14);
  });
  test('--walkthrough, --only/--port, --base-port, --help and errors', () => {
    assert.deepEqual(parseServeArgs(['--walkthrough']), {
      host: '127.0.0.1',
      functions: [{ name: 'function-sample', port: DEFAULT_BASE_PORT }],
    });
    assert.deepEqual(parseServeArgs(['--only', 'function-sample', '--port', '30583', '--host', '0.0.0.0']), {
      host: '0.0.0.0',
      functions: [{ name: 'function-sample', port: 30583 }],
    });
    assert.deepEqual(parseServeArgs(['--base-port', '0', '--only', 'echo,slow', '--port', 'slow=5000']), {
      host: '127.0.0.1',
      functions: [
        { name: 'echo', port: 0 },
        { name: 'slow', port: 5000 },
      ],
    });
    assert.equal(parseServeArgs(['--help']), 'help');
    assert.throws(() => parseServeArgs(['--only', 'nope']), /unknown function/);
    assert.throws(() => parseServeArgs(['--port', '1234']), /exactly one --only/);
    assert.throws(() => parseServeArgs(['--base-port', 'x']), /invalid --base-port/);
    assert.throws(() => parseServeArgs(['--walkthrough', '--only', 'echo']), /walkthrough/);
    assert.throws(() => parseServeArgs(['--bogus']));
  });
  test('CLI serves the walk-through function and stops on SIGTERM', async () => {
    const port = await freePort();
    const proc = await startProcess({
      cmd: process.execPath,
      args: ['--import', 'tsx', 'test/functions/serve.ts', '--walkthrough', '--base-port', String(port)],
      cwd: REPO,
      readyLog: /ready \(1\)/,
      timeoutMs: 20_000,
    });
    try {
      assert.match(proc.stdout(), new RegExp(`function-sample\\s+http://127\\.0\\.0\\.1:${port}`));
      const r = await req(`http://127.0.0.1:${port}/default/function-sample/test`);
      assert.equal(r.text, 'Hello, test!');
    } finally {
      const exit = await proc.kill('SIGTERM');
      assert.deepEqual(exit, { code: 0, signal: null });
    }
  });
});

describe('process helpers', () => {
  let dir: string;
  before(async () => {
    dir = await tmpDir('fngate-proc-test-');
    await writeFile(
      join(dir, 'http.mjs'),
      `import http from 'node:http';
       setTimeout(() => http.createServer((q, s) => s.end('up')).listen(Number(process.env.PORT), '127.0.0.1'), 300);`,
    );
    await writeFile(
      join(dir, 'log.mjs'),
      `console.log('pid ' + process.pid);
       setTimeout(() => console.error('listening on ' + process.env.GREETING), 200);
       setInterval(() => {}, 1000);`,
    );
    await writeFile(
      join(dir, 'fail.mjs'),
      `console.log('starting'); console.error('boom: bad config'); process.exit(3);`,
    );
    await writeFile(join(dir, 'hang.mjs'), `console.log('pid ' + process.pid); setInterval(() => {}, 1000);`);
  });
  after(async () => {
    await rmDir(dir);
    assert.equal(existsSync(dir), false);
  });

  test('freePort returns a bindable port from FREE_PORT_RANGE, never the same one twice', async () => {
    const ports = await Promise.all(Array.from({ length: 20 }, () => freePort()));
    assert.equal(new Set(ports).size, ports.length, ports.join(' '));
    for (const p of ports) assert.ok(p >= FREE_PORT_RANGE.from && p < FREE_PORT_RANGE.to, String(p));
    const port = ports[0]!;
    const srv = createServer();
    await new Promise<void>((resolve) => srv.listen(port, '127.0.0.1', resolve));
    await new Promise((resolve) => srv.close(resolve));
  });

  test('refusedPort: a different port per call, below the range port 0 is served from, that refuses', async () => {
    // Hold many port-0 servers open meanwhile: none of them can be given a port refusedPort hands out.
    const held = await Promise.all(
      Array.from({ length: 50 }, async () => {
        const srv = createServer();
        await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
        return srv;
      }),
    );
    try {
      const ports = await Promise.all([refusedPort(), refusedPort(), refusedPort()]);
      assert.equal(new Set(ports).size, 3, ports.join(' '));
      const taken = new Set(held.map((s) => (s.address() as { port: number }).port));
      for (const port of ports) {
        assert.ok(port > 10080 && !taken.has(port), String(port));
        assert.ok(port < Math.min(...taken), `${port} is inside the port-0 range`);
        const err = await new Promise<NodeJS.ErrnoException>((resolve, reject) => {
          const sock = connect({ host: '127.0.0.1', port });
          sock.once('connect', () => reject(new Error(`${port} accepted a connection`)));
          sock.once('error', resolve);
        });
        assert.equal(err.code, 'ECONNREFUSED');
      }
    } finally {
      for (const srv of held) srv.close();
    }
  });

  test('ready by URL', async () => {
    const port = await freePort();
    const t0 = Date.now();
    const proc = await startProcess({
      cmd: process.execPath,
      args: [join(dir, 'http.mjs')],
      env: { PORT: String(port) },
      readyUrl: `http://127.0.0.1:${port}/`,
      timeoutMs: 10_000,
    });
    assert.ok(Date.now() - t0 >= 250);
    assert.ok(proc.pid > 0);
    assert.equal((await req(`http://127.0.0.1:${port}/`)).text, 'up');
    assert.deepEqual(await proc.kill(), { code: null, signal: 'SIGTERM' });
    assert.equal(proc.exited, true);
    assert.deepEqual(await proc.kill(), { code: null, signal: 'SIGTERM' }, 'kill after exit is a no-op');
  });

  test('ready by log (stderr), with env and captured output', async () => {
    const proc = await startProcess({
      cmd: process.execPath,
      args: [join(dir, 'log.mjs')],
      env: { GREETING: 'fngate' },
      readyLog: /listening on fngate/,
      timeoutMs: 10_000,
    });
    assert.match(proc.stdout(), /^pid \d+/);
    assert.match(proc.stderr(), /listening on fngate/);
    const exit = await proc.kill('SIGKILL');
    assert.equal(exit.signal, 'SIGKILL');
  });

  test('early exit rejects with the captured output', async () => {
    await assert.rejects(
      startProcess({ cmd: process.execPath, args: [join(dir, 'fail.mjs')], readyLog: /never/, timeoutMs: 10_000 }),
      (err: Error) => {
        assert.match(err.message, /exited before it was ready \(code 3/);
        assert.match(err.message, /starting/);
        assert.match(err.message, /boom: bad config/);
        return true;
      },
    );
  });

  test('spawn failure rejects', async () => {
    await assert.rejects(
      startProcess({ cmd: join(dir, 'does-not-exist'), readyLog: /x/, timeoutMs: 5000 }),
      /exited before it was ready[\s\S]*ENOENT/,
    );
  });

  test('timeout rejects and kills the process', async () => {
    let pid = 0;
    await assert.rejects(
      startProcess({ cmd: process.execPath, args: [join(dir, 'hang.mjs')], readyLog: /never/, timeoutMs: 500 }),
      (err: Error) => {
        assert.match(err.message, /not ready after 500 ms/);
        assert.match(err.message, /hang\.mjs \(pid \d+\)\n--- stdout ---/);
        pid = Number(/\(pid (\d+)\)/.exec(err.message)?.[1]);
        return true;
      },
    );
    assert.ok(pid > 0);
    assert.equal(alive(pid), false);
  });

  test('kill() takes down the whole process group', async () => {
    const proc = await startProcess({
      cmd: 'sh',
      args: ['-c', `${JSON.stringify(process.execPath)} ${JSON.stringify(join(dir, 'hang.mjs'))} & wait`],
      readyLog: /pid \d+/,
      timeoutMs: 10_000,
    });
    const grandchild = Number(/pid (\d+)/.exec(proc.stdout())?.[1]);
    assert.notEqual(grandchild, proc.pid);
    assert.ok(alive(grandchild));
    await proc.kill();
    await waitFor(() => !alive(grandchild), { message: `grandchild ${grandchild} still alive` });
  });

  test('children are killed when the test process exits or is terminated', async () => {
    const helper = join(REPO, 'test/helpers/process.ts');
    await writeFile(
      join(dir, 'parent.mts'),
      `import { startProcess } from ${JSON.stringify(helper)};
       const p = await startProcess({ cmd: process.execPath, args: [${JSON.stringify(join(dir, 'hang.mjs'))}], readyLog: /pid/ });
       console.log('child ' + p.pid);
       if (process.argv[2] === 'exit') process.exit(0);
       setInterval(() => {}, 1000);`,
    );
    for (const mode of ['exit', 'sigterm'] as const) {
      const parent = await startProcess({
        cmd: process.execPath,
        args: ['--import', 'tsx', join(dir, 'parent.mts'), mode],
        cwd: REPO,
        readyLog: /child \d+/,
        timeoutMs: 20_000,
      });
      if (mode === 'exit') await parent.waitExit();
      const childPid = Number(/child (\d+)/.exec(parent.stdout())?.[1]);
      assert.ok(childPid > 0);
      if (mode === 'sigterm') {
        assert.ok(alive(childPid));
        process.kill(parent.pid, 'SIGTERM'); // the parent only, not its group
      }
      const exit = await parent.waitExit();
      assert.deepEqual(exit, mode === 'exit' ? { code: 0, signal: null } : { code: null, signal: 'SIGTERM' });
      await waitFor(() => !alive(childPid), { message: `child ${childPid} still alive (${mode})` });
    }
  });

  test('waitFor polls until truthy, retries throwing checks, and times out', async () => {
    let n = 0;
    assert.equal(await waitFor(() => (++n >= 3 ? n : 0), { intervalMs: 5 }), 3);
    let m = 0;
    await waitFor(
      () => {
        assert.ok(++m >= 2);
        return true;
      },
      { intervalMs: 5 },
    );
    await assert.rejects(
      waitFor(
        () => {
          throw new Error('still failing');
        },
        { timeoutMs: 60, intervalMs: 10, message: 'gave up' },
      ),
      /gave up after 60 ms: still failing/,
    );
  });
});

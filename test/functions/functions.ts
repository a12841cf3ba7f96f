/**
 * Real HTTP "serverless functions" for fngate's tests and README walk-through.
 *
 * Each function is its own `node:http` server on its own port (like APISIX CI, where every
 * OpenFunction example is a separate Go `net/http` container). No mocks: the gateway under test
 * talks to these over loopback TCP exactly as it would talk to a deployed function.
 *
 * Functions (see `startFunctions`):
 *   function-sample  `Hello, <last non-empty path segment>!` (no trailing newline; `/` → `Hello, World!`)
 *   test-body        APISIX CI (30585): `Hello, <request body>!\n`, any path
 *   test-header      APISIX CI (30583): Go `%s` of r.Header["Authorization"], e.g. `[Basic dGVzdDp0ZXN0]`, none → `[]`
 *   test-uri         APISIX CI (30584): `/<greeting>` → `Hello, <greeting>!\n`; empty or containing `/` → 404
 *                    `404 page not found\n` (decoded path, like gorilla/mux `/{greeting}`)
 *   echo             200 JSON {method, url, httpVersion, headers, rawHeaders, body, bodyLength, connection};
 *                    `connection` numbers the TCP connection the request came on (1, 2, ... per server), so a
 *                    test can tell a reused keep-alive connection from a new one;
 *                    `?status=NNN` (200–599, else 400) sets the status, `?set-header=name:value` (repeatable)
 *                    adds response headers (hop-by-hop ones too, e.g. `Connection: x-foo`), `?delay=<ms>` waits
 *                    that long before answering
 *   slow             waits `?delay=<ms>` (default 5000) before sending anything, then `slow done`;
 *                    with `?partial=<n>` it sends the headers (`content-length: 100`, or `?length=<bytes>`) and n
 *                    bytes at once (at most length - 1), waits `delay`, then resets the connection (a body that
 *                    stalls and never completes)
 *   stream           headers at once, then `?chunks=N` (default 5) × `chunk <i>\n` (i = 0..N-1) every
 *                    `?interval=<ms>` (default 200), chunked; `?size=<bytes>` streams that many bytes of
 *                    `STREAM_BLOCK` (repeated, truncated) as fast as backpressure allows
 *                    (`&content-length=1` sends a Content-Length instead of chunked; see `streamSha256`)
 *   upload           streams the request body (never buffered) → JSON {bytes, sha256, contentLength, transferEncoding};
 *                    its stats also count `bytesReceived`: every body byte it read, uploads cut short included
 *   redirect         302 `Location: /elsewhere`, body `moved`
 *   gzip             `hello gzip\n` × 100, gzip-encoded (with Content-Length) iff Accept-Encoding allows gzip
 *   status           `/<code>` (last path segment) → that status, body `status <code>`; bad code → 400
 *   aws, lambda, openwhisk   function platforms (SigV4-checking AWS endpoint, Lambda proxy-integration answers,
 *                    OpenWhisk's action endpoint): see platforms.ts
 *
 * `slow`, `stream` and `upload` also answer `GET /__stats` → `{aborted, completed}` (responses whose
 * client went away before the response ended / responses that ended normally) and `DELETE /__stats`
 * (reset). The same counters are available in-process via `FunctionServers.stats(name)`.
 *
 * Keep-alive stays on (Node defaults). `close()` clears every pending timer and destroys every
 * connection (`closeAllConnections()`), so tests never hang on a slow or streaming response.
 */
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import * as platforms from './platforms.ts';

export const FUNCTION_NAMES = [
  'function-sample',
  'test-body',
  'test-header',
  'test-uri',
  'echo',
  'slow',
  'stream',
  'upload',
  'redirect',
  'gzip',
  'status',
  'aws',
  'lambda',
  'openwhisk',
] as const;

export type FunctionName = (typeof FUNCTION_NAMES)[number];

/** Functions that count aborted/completed responses and serve `/__stats`. */
export type StatsFunctionName = 'slow' | 'stream' | 'upload';

/** Host ports of the APISIX CI OpenFunction examples (ci/pod/docker-compose.plugin.yml). */
export const APISIX_CI_PORTS = { 'test-header': 30583, 'test-uri': 30584, 'test-body': 30585 } as const;

export interface FunctionStats {
  /** responses whose client closed the connection before the response ended */
  aborted: number;
  /** responses that ended normally */
  completed: number;
  /** `upload` only: request body bytes read, of every upload, also those cut short (reset by DELETE /__stats) */
  bytesReceived?: number;
}

export interface StartFunctionsOptions {
  /** listen address; default 127.0.0.1 */
  host?: string;
  /** fixed ports per function; missing or 0 → ephemeral */
  ports?: Partial<Record<FunctionName, number>>;
}

export interface FunctionServers {
  /** base URL per function, e.g. `http://127.0.0.1:41234` (no trailing slash) */
  urls: Record<FunctionName, string>;
  ports: Record<FunctionName, number>;
  host: string;
  /** live counters of a stats-keeping function (same data as `GET /__stats`) */
  stats(name: StatsFunctionName): FunctionStats;
  close(): Promise<void>;
}

export interface StartFunctionOptions {
  host?: string;
  /** 0 (default) → ephemeral */
  port?: number;
}

export interface FunctionServer {
  name: FunctionName;
  /** base URL without trailing slash */
  url: string;
  port: number;
  host: string;
  server: Server;
  stats: FunctionStats;
  close(): Promise<void>;
}

type Handler = (req: IncomingMessage, res: ServerResponse, ctx: Ctx) => void | Promise<void>;

interface Ctx {
  stats: FunctionStats;
  timers: Set<NodeJS.Timeout>;
  url: URL;
  /** number of the TCP connection the request came on (1, 2, ... per server) */
  connection: number;
}

const TEXT = 'text/plain; charset=utf-8';

/** 64 KiB block that the `stream` function's `?size=` mode repeats (and truncates) as its body. */
export const STREAM_BLOCK: Buffer = (() => {
  const line = 'fngate stream test data 0123456789abcdefghijklmnopqrstuvwxyz!\n'; // 64 bytes
  return Buffer.from(line.repeat(1024), 'latin1');
})();

/** sha256 (hex) of the body `stream?size=<size>` sends, computed without allocating `size` bytes. */
export function streamSha256(size: number): string {
  const hash = createHash('sha256');
  let left = size;
  while (left > 0) {
    const n = Math.min(left, STREAM_BLOCK.length);
    hash.update(n === STREAM_BLOCK.length ? STREAM_BLOCK : STREAM_BLOCK.subarray(0, n));
    left -= n;
  }
  return hash.digest('hex');
}

/** The exact plain body of the `gzip` function (before compression). */
export const GZIP_TEXT = 'hello gzip\n'.repeat(100);
/** The exact gzip-encoded body of the `gzip` function (what it sends to a client that accepts gzip). */
export const GZIP_BODY: Buffer = gzipSync(GZIP_TEXT);

function send(res: ServerResponse, status: number, body: string | Buffer, contentType = TEXT): void {
  const buf = typeof body === 'string' ? Buffer.from(body) : body;
  res.statusCode = status;
  if (!res.hasHeader('content-type')) res.setHeader('content-type', contentType);
  res.setHeader('content-length', buf.length);
  res.end(buf);
}

function sendJson(res: ServerResponse, status: number, value: unknown): void {
  send(res, status, JSON.stringify(value), 'application/json');
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Percent-decoded path (no query); null when the escape sequences are malformed. */
function decodedPath(url: URL): string | null {
  try {
    return decodeURIComponent(url.pathname);
  } catch {
    return null;
  }
}

function intParam(url: URL, name: string, def: number, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const raw = url.searchParams.get(name);
  if (raw === null || raw === '') return def;
  const n = Number(raw);
  if (!Number.isFinite(n)) return def;
  return Math.min(max, Math.max(min, Math.trunc(n)));
}

/** Count the response as aborted/completed when it closes. */
function track(res: ServerResponse, stats: FunctionStats, onClose?: () => void): void {
  res.once('close', () => {
    if (res.writableFinished) stats.completed++;
    else stats.aborted++;
    onClose?.();
  });
}

/** Wait `ms`, or less if the response closes first (client gone / server closing); never leaks the timer. */
function sleep(ctx: Ctx, res: ServerResponse, ms: number): Promise<void> {
  return new Promise((resolve) => {
    if (res.destroyed) return resolve();
    const done = () => {
      clearTimeout(t);
      ctx.timers.delete(t);
      res.off('close', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    ctx.timers.add(t);
    res.on('close', done);
  });
}

/** Resolves on 'drain' or 'close', whichever comes first. */
function drainOrClose(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

const handlers: Record<FunctionName, Handler> = {
  'function-sample'(_req, res, { url }) {
    const path = decodedPath(url) ?? url.pathname;
    const segments = path.split('/').filter((s) => s !== '');
    send(res, 200, `Hello, ${segments.at(-1) ?? 'World'}!`);
  },

  async 'test-body'(req, res) {
    const body = await readBody(req);
    send(res, 200, Buffer.concat([Buffer.from('Hello, '), body, Buffer.from('!\n')]));
  },

  'test-header'(req, res) {
    // Go: fmt.Fprintf(w, "%s", r.Header["Authorization"]) → "[v1 v2]"; nil slice → "[]".
    const values: string[] = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      if (req.rawHeaders[i]!.toLowerCase() === 'authorization') values.push(req.rawHeaders[i + 1]!);
    }
    send(res, 200, `[${values.join(' ')}]`);
  },

  'test-uri'(_req, res, { url }) {
    const path = decodedPath(url);
    if (path === null) return send(res, 400, '400 Bad Request');
    const greeting = path.startsWith('/') ? path.slice(1) : path;
    if (greeting === '' || greeting.includes('/')) {
      res.setHeader('x-content-type-options', 'nosniff');
      return send(res, 404, '404 page not found\n');
    }
    send(res, 200, `Hello, ${greeting}!\n`);
  },

  async echo(req, res, ctx) {
    const { url, connection } = ctx;
    const body = await readBody(req);
    const delay = intParam(url, 'delay', 0, 0, 60_000);
    if (delay > 0) await sleep(ctx, res, delay);
    if (res.destroyed) return;
    const status = intParam(url, 'status', 200);
    if (status < 200 || status > 599) return send(res, 400, `invalid ?status=${url.searchParams.get('status')}`);
    for (const spec of url.searchParams.getAll('set-header')) {
      const i = spec.indexOf(':');
      if (i <= 0) continue;
      res.appendHeader(spec.slice(0, i).trim(), spec.slice(i + 1).trim());
    }
    sendJson(res, status, {
      method: req.method,
      url: req.url,
      httpVersion: req.httpVersion,
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      body: body.toString('utf8'),
      bodyLength: body.length,
      connection,
    });
  },

  async slow(req, res, ctx) {
    track(res, ctx.stats);
    req.resume();
    if (ctx.url.searchParams.has('partial')) {
      const length = Math.max(1, intParam(ctx.url, 'length', 100));
      res.writeHead(200, { 'content-type': TEXT, 'content-length': String(length) });
      res.write('x'.repeat(Math.min(length - 1, intParam(ctx.url, 'partial', 10))));
      await sleep(ctx, res, intParam(ctx.url, 'delay', 5000));
      res.destroy();
      return;
    }
    await sleep(ctx, res, intParam(ctx.url, 'delay', 5000));
    if (res.destroyed) return;
    send(res, 200, 'slow done');
  },

  async stream(req, res, ctx) {
    const { url, stats } = ctx;
    track(res, stats);
    req.resume();
    const size = url.searchParams.has('size') ? intParam(url, 'size', 0) : null;
    res.statusCode = 200;
    if (size !== null) {
      res.setHeader('content-type', 'application/octet-stream');
      if (url.searchParams.get('content-length') === '1') res.setHeader('content-length', size);
      res.flushHeaders();
      let sent = 0;
      while (sent < size) {
        if (res.destroyed) return;
        const n = Math.min(STREAM_BLOCK.length, size - sent);
        const ok = res.write(n === STREAM_BLOCK.length ? STREAM_BLOCK : STREAM_BLOCK.subarray(0, n));
        sent += n;
        if (!ok) await drainOrClose(res);
      }
      if (!res.destroyed) res.end();
      return;
    }
    const chunks = intParam(url, 'chunks', 5);
    const interval = intParam(url, 'interval', 200);
    res.setHeader('content-type', TEXT);
    res.flushHeaders();
    for (let i = 0; i < chunks; i++) {
      if (i > 0) await sleep(ctx, res, interval);
      if (res.destroyed) return;
      res.write(`chunk ${i}\n`);
    }
    if (!res.destroyed) res.end();
  },

  async upload(req, res, { stats }) {
    track(res, stats);
    const hash = createHash('sha256');
    let bytes = 0;
    try {
      for await (const chunk of req) {
        bytes += (chunk as Buffer).length;
        stats.bytesReceived = (stats.bytesReceived ?? 0) + (chunk as Buffer).length;
        hash.update(chunk as Buffer);
      }
    } catch {
      return; // client went away mid-upload; 'close' counts it as aborted
    }
    if (res.destroyed) return;
    sendJson(res, 200, {
      bytes,
      sha256: hash.digest('hex'),
      contentLength: req.headers['content-length'] ?? null,
      transferEncoding: req.headers['transfer-encoding'] ?? null,
    });
  },

  redirect(req, res) {
    req.resume();
    res.setHeader('location', '/elsewhere');
    send(res, 302, 'moved');
  },

  gzip(req, res) {
    req.resume();
    res.setHeader('vary', 'Accept-Encoding');
    if (acceptsGzip(req.headers['accept-encoding'])) {
      res.setHeader('content-encoding', 'gzip');
      return send(res, 200, GZIP_BODY);
    }
    send(res, 200, GZIP_TEXT);
  },

  status(req, res, { url }) {
    req.resume();
    const last =
      url.pathname
        .split('/')
        .filter((s) => s !== '')
        .at(-1) ?? '';
    const code = /^\d{3}$/.test(last) ? Number(last) : Number.NaN;
    if (!(code >= 200 && code <= 599)) return send(res, 400, `invalid status ${JSON.stringify(last)}`);
    send(res, code, `status ${code}`);
  },

  aws: (req, res) => platforms.aws(req, res),
  lambda: (req, res, { url }) => platforms.lambda(req, res, url),
  openwhisk: (req, res, { url }) => platforms.openwhisk(req, res, url),
};

function acceptsGzip(header: string | undefined): boolean {
  if (!header) return false;
  return header.split(',').some((part) => {
    const [coding, ...params] = part.trim().split(';');
    const name = coding!.trim().toLowerCase();
    if (name !== 'gzip' && name !== 'x-gzip' && name !== '*') return false;
    const q = params.map((p) => p.trim()).find((p) => p.toLowerCase().startsWith('q='));
    return q === undefined || Number(q.slice(2)) > 0;
  });
}

const STATS_FUNCTIONS: ReadonlySet<FunctionName> = new Set<FunctionName>(['slow', 'stream', 'upload']);

/** Format `http://host:port` for a listen address (wildcards → loopback, IPv6 bracketed). */
export function baseUrl(host: string, port: number): string {
  let h = host;
  if (h === '0.0.0.0' || h === '') h = '127.0.0.1';
  else if (h === '::') h = '::1';
  if (h.includes(':')) h = `[${h}]`;
  return `http://${h}:${port}`;
}

/** Start one function on its own server. */
export async function startFunction(name: FunctionName, opts: StartFunctionOptions = {}): Promise<FunctionServer> {
  const host = opts.host ?? '127.0.0.1';
  const handler = handlers[name];
  const stats: FunctionStats = name === 'upload' ? { aborted: 0, completed: 0, bytesReceived: 0 } : { aborted: 0, completed: 0 };
  const timers = new Set<NodeJS.Timeout>();
  const connections = new WeakMap<object, number>();
  let connectionCount = 0;

  const server = createServer((req, res) => {
    req.on('error', () => {});
    res.on('error', () => {});
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://function.invalid');
    } catch {
      return send(res, 400, '400 Bad Request');
    }
    if (STATS_FUNCTIONS.has(name) && url.pathname === '/__stats') {
      req.resume();
      if (req.method === 'DELETE') {
        stats.aborted = 0;
        stats.completed = 0;
        if (stats.bytesReceived !== undefined) stats.bytesReceived = 0;
      }
      return sendJson(res, 200, { ...stats });
    }
    const connection = connections.get(req.socket) ?? 0;
    Promise.resolve(handler(req, res, { stats, timers, url, connection })).catch((err: unknown) => {
      if (res.headersSent) res.destroy();
      else send(res, 500, `function ${name} failed: ${err instanceof Error ? err.message : String(err)}`);
    });
  });

  server.on('connection', (socket) => connections.set(socket, ++connectionCount));

  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once('error', onError);
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= new Promise<void>((resolve) => {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      server.close(() => resolve());
      server.closeAllConnections();
    });
    return closing;
  };

  return { name, url: baseUrl(host, port), port, host, server, stats, close };
}

/**
 * Start every function, each on its own server. Ports default to ephemeral (0).
 * If any server fails to listen (e.g. a fixed port in use), the ones already started are closed
 * and the error is rethrown.
 */
export async function startFunctions(opts: StartFunctionsOptions = {}): Promise<FunctionServers> {
  const host = opts.host ?? '127.0.0.1';
  const started: FunctionServer[] = [];
  try {
    for (const name of FUNCTION_NAMES) {
      started.push(await startFunction(name, { host, port: opts.ports?.[name] ?? 0 }));
    }
  } catch (err) {
    await Promise.all(started.map((s) => s.close()));
    throw err;
  }
  const byName = new Map(started.map((s) => [s.name, s]));
  const urls = Object.fromEntries(started.map((s) => [s.name, s.url])) as Record<FunctionName, string>;
  const ports = Object.fromEntries(started.map((s) => [s.name, s.port])) as Record<FunctionName, number>;
  return {
    urls,
    ports,
    host,
    stats: (name) => byName.get(name)!.stats,
    close: async () => {
      await Promise.all(started.map((s) => s.close()));
    },
  };
}

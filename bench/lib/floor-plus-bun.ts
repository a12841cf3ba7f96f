// The Bun floor plus only what a correct gateway must do for the bench route (issue 19: what a correct gateway's
// minimum costs on Bun). `Bun.serve` + Bun's `fetch` as bench/lib/floor-bun.ts, with each of these steps switched on
// by name in FLOOR_PLUS (a comma list; unset: all four; `none`: the floor's own handling), so each can be A/B'd
// against the plain floor (`bench/ab.ts --a floor --b floor-plus --env-b FLOOR_PLUS=timeout`):
// - `timeout`: the call's timeout, as fngate's (FLOOR_PLUS_TIMEOUT_MS, default 3000, the route's default): 504 when
//   no answer head came within it, and a small answer's body (Content-Length ≤ 16 KiB) read whole under a fresh
//   deadline (502 when it broke, 504 when it stalled), then handed on as bytes in a new Response; a larger or
//   unsized body is pumped through JS with the deadline on each gap between chunks. Bun's own fetch `timeout` is
//   a socket idle timer of ~4 s granularity, so the deadline is kept in JS: one `AbortController` per call and one
//   shared 50 ms interval timer over a linked list of the calls in flight (fngate's `sharedClock` on Bun).
// - `abort`: the client going away cancels the upstream call. A call still in flight on the clock's second tick
//   subscribes to the request's `signal` (made only when read: quick calls never make it), as fngate does.
// - `headers`: request header hygiene (fngate's rules, src/core/upstream/headers.ts): the client's headers less the
//   hop-by-hop ones, the names its `Connection` lists, `Host` and the gateway-set ones (X-Forwarded-*, Forwarded,
//   X-Real-IP), plus X-Forwarded-For/-Proto/-Host and the route's Basic `Authorization`; the answer's hop-by-hop
//   headers and the names its `Connection` lists dropped, in place (Bun's fetch headers are mutable). fngate adds no
//   X-Forwarded-Port (it drops the client's; test/e2e/hostile.test.ts), so neither does this.
// - `route`: fngate's router (src/core/router) compiled with the one bench route (`/hello/*`), the path normalised
//   and the Host read for it as fngate does; 404 with APISIX's body when nothing matches; the function URL built
//   from the route's `*` tail. Without it the floor's `UPSTREAM + pathname + search`.
// - `read` (a diagnostic, not a correct step alone; only without `timeout` and `abort`): a small answer read whole and
//   handed on as bytes in a new Response as `timeout` does, without the AbortController, the clock or the deadline:
//   what the body read costs apart from the call's watch.
// Without `headers` the floor's own handling stays (drop Host, Connection and Keep-Alive, add Authorization and
// X-Forwarded-For). Env: PORT, UPSTREAM (http://127.0.0.1:port), AUTHORIZATION, FLOOR_PLUS, FLOOR_PLUS_TIMEOUT_MS.
// Loopback only. Not a gateway: one route, no plugins, no config.

import { compileRouter } from '../../src/core/router/index.ts';
import { hostOf } from '../../src/core/router/host.ts';
import { normalizePath } from '../../src/core/router/path.ts';
import { cleanResponseHeaders, connectionListedNames } from '../../src/core/upstream/headers.ts';
import { encodePath } from '../../src/core/upstream/path.ts';

interface BunServer {
  requestIP(req: Request): { address: string } | null;
}
declare const Bun: {
  env: Record<string, string | undefined>;
  serve(opts: {
    hostname: string;
    port: number;
    fetch(req: Request, server: BunServer): Response | Promise<Response>;
  }): BunServer;
};

const upstream = Bun.env.UPSTREAM!;
const authorization = Bun.env.AUTHORIZATION!;
const ALL = ['timeout', 'abort', 'headers', 'route'];
const DIAGNOSTIC = ['read'];
const steps = new Set((Bun.env.FLOOR_PLUS ?? ALL.join(',')).split(',').map((s) => s.trim()).filter((s) => s && s !== 'none'));
for (const s of steps) if (!ALL.includes(s) && !DIAGNOSTIC.includes(s)) throw new Error(`FLOOR_PLUS: unknown step ${s} (${[...ALL, ...DIAGNOSTIC].join(', ')}, none)`);
const TIMEOUT = steps.has('timeout');
const ABORT = steps.has('abort');
const HEADERS = steps.has('headers');
const ROUTE = steps.has('route');
const READ = steps.has('read');
const TIMEOUT_MS = Number(Bun.env.FLOOR_PLUS_TIMEOUT_MS ?? 3000);

const BUN_FETCH = { decompress: false };
const SMALL_BODY = 16 * 1024;
const TICK_MS = 50;

const JSON_TYPE = { 'content-type': 'application/json' };
const error = (status: number, msg: string) =>
  new Response(`${JSON.stringify({ error_msg: msg })}\n`, { status, headers: JSON_TYPE });

// --- the route ---------------------------------------------------------------------------------------------------
const fn = new URL(`${upstream}/hello`);
const router = compileRouter([{ id: 'bench', paths: ['/hello/*'], priority: 0, data: { origin: fn.origin, base: fn.pathname } }]);

// --- header hygiene ----------------------------------------------------------------------------------------------
const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade'];
const REQUEST_DROP = [...HOP_BY_HOP, 'host', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port', 'forwarded', 'x-real-ip'];

/** Deletes the names a `Connection` value lists (fngate's reading of it). */
function dropListed(h: Headers, conn: string | null): void {
  if (conn !== null) for (const name of connectionListedNames(conn)) h.delete(name);
}

function requestHeaders(req: Request, clientIp: string | undefined, hostHeader: string | null): Headers {
  const h = new Headers(req.headers);
  if (!HEADERS) {
    h.delete('host');
    h.delete('connection');
    h.delete('keep-alive');
    h.set('authorization', authorization);
    if (clientIp) h.set('x-forwarded-for', clientIp);
    return h;
  }
  dropListed(h, h.get('connection'));
  for (const name of REQUEST_DROP) h.delete(name);
  if (clientIp) h.set('x-forwarded-for', clientIp);
  h.set('x-forwarded-proto', 'http');
  if (hostHeader) h.set('x-forwarded-host', hostHeader);
  h.set('authorization', authorization);
  return h;
}

/** The answer's clean-up, in place (Bun's fetch headers are mutable): fngate's own. */
const cleanAnswer = cleanResponseHeaders;

// --- the clock ---------------------------------------------------------------------------------------------------
class Call {
  readonly ac = new AbortController();
  deadline: number;
  waiting = true;
  timedOut = false;
  ended = false;
  ticks = 0;
  signal: AbortSignal | undefined = undefined;
  prev: Call | undefined = undefined;
  next: Call | undefined = undefined;
  constructor(readonly req: Request) {
    this.deadline = TIMEOUT ? Date.now() + TIMEOUT_MS : Number.POSITIVE_INFINITY;
    add(this);
  }
  wait(): void {
    if (TIMEOUT) this.deadline = Date.now() + TIMEOUT_MS;
    this.waiting = true;
  }
  handleEvent(): void {
    this.ac.abort(new Error('client went away'));
  }
  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.waiting = false;
    remove(this);
    this.signal?.removeEventListener('abort', this);
  }
}

let head: Call | undefined;
let timer: ReturnType<typeof setInterval> | undefined;
function tick(): void {
  if (head === undefined) {
    clearInterval(timer);
    timer = undefined;
    return;
  }
  const now = Date.now();
  for (let call: Call | undefined = head; call !== undefined; ) {
    const next: Call | undefined = call.next;
    if (ABORT && ++call.ticks === 2 && !call.ended) {
      const signal = call.req.signal;
      call.signal = signal;
      if (signal.aborted) call.handleEvent();
      else signal.addEventListener('abort', call);
    }
    if (!call.timedOut && call.waiting && now >= call.deadline) {
      call.timedOut = true;
      call.ac.abort(new Error('timeout'));
    }
    call = next;
  }
}
function add(call: Call): void {
  call.next = head;
  if (head !== undefined) head.prev = call;
  head = call;
  if (timer === undefined) {
    timer = setInterval(tick, TICK_MS);
    (timer as { unref?: () => void }).unref?.();
  }
}
function remove(call: Call): void {
  if (call !== head && call.prev === undefined) return;
  const { prev, next } = call;
  if (prev !== undefined) prev.next = next;
  else head = next;
  if (next !== undefined) next.prev = prev;
  call.prev = undefined;
  call.next = undefined;
}

// --- the call ----------------------------------------------------------------------------------------------------
const stalled = () => `the function did not answer within ${TIMEOUT_MS} ms`;

async function watched(req: Request, url: string, init: RequestInit): Promise<Response> {
  const call = new Call(req);
  init.signal = call.ac.signal;
  let res: Response;
  try {
    res = await fetch(url, init);
  } catch (err) {
    call.end();
    if (call.timedOut) return error(504, stalled());
    if (call.ac.signal.aborted) return error(499, 'client closed the request');
    return error(503, `failed to connect to the function: ${(err as Error).message}`);
  }
  const h = res.headers;
  if (HEADERS) cleanAnswer(h);
  if (!TIMEOUT) {
    call.end();
    return res;
  }
  const length = h.get('content-length');
  if (length !== null && h.get('content-encoding') === null && Number(length) <= SMALL_BODY) {
    call.wait();
    let bytes: ArrayBuffer;
    try {
      bytes = await res.arrayBuffer();
    } catch (err) {
      call.end();
      if (call.timedOut) return error(504, `body stalled for more than ${TIMEOUT_MS} ms`);
      return error(502, `bad answer from the function: ${(err as Error).message}`);
    }
    call.end();
    return new Response(bytes.byteLength > 0 ? bytes : null, { status: res.status, statusText: res.statusText, headers: h });
  }
  if (!res.body) {
    call.end();
    return new Response(null, { status: res.status, statusText: res.statusText, headers: h });
  }
  // Streamed: the deadline counts while a read asked for waits on the upstream.
  call.waiting = false;
  const reader = res.body.getReader();
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      call.wait();
      try {
        const { done, value } = await reader.read();
        call.waiting = false;
        if (done) {
          call.end();
          controller.close();
        } else controller.enqueue(value);
      } catch (err) {
        call.end();
        controller.error(err);
      }
    },
    cancel(reason) {
      call.end();
      call.ac.abort(reason);
      return reader.cancel(reason).catch(() => {});
    },
  });
  return new Response(body, { status: res.status, statusText: res.statusText, headers: h });
}

/** The `read` diagnostic: the answer read whole and handed on in a new Response, unwatched. */
async function readWhole(url: string, init: RequestInit): Promise<Response> {
  const res = await fetch(url, init);
  const h = res.headers;
  if (HEADERS) cleanAnswer(h);
  const length = h.get('content-length');
  if (length === null || h.get('content-encoding') !== null || Number(length) > SMALL_BODY) return res;
  const bytes = await res.arrayBuffer();
  return new Response(bytes.byteLength > 0 ? bytes : null, { status: res.status, statusText: res.statusText, headers: h });
}

function handle(req: Request, server: BunServer): Response | Promise<Response> {
  const url = req.url;
  const pathStart = url.indexOf('/', url.indexOf('//') + 2);
  const q = url.indexOf('?', pathStart);
  const rawPath = pathStart < 0 ? '/' : q < 0 ? url.slice(pathStart) : url.slice(pathStart, q);
  if (rawPath === '/__bench_ready') return new Response('ok');
  const search = q < 0 ? '' : url.slice(q);
  let target: string;
  let hostHeader: string | null = null;
  if (ROUTE) {
    const path = normalizePath(rawPath);
    if (path === null) return error(400, 'bad request: the path cannot be normalised');
    hostHeader = req.headers.get('host');
    const m = router.match({ method: req.method, host: hostOf(hostHeader), path });
    if (m === undefined) return error(404, '404 Route Not Found');
    const ext = m.params[':ext'];
    target = `${m.data.origin}${m.data.base}${ext === undefined ? '' : `/${encodePath(ext)}`}${search}`;
  } else {
    target = upstream + rawPath + search;
    if (HEADERS) hostHeader = req.headers.get('host');
  }
  const init: RequestInit = {
    method: req.method,
    headers: requestHeaders(req, server.requestIP(req)?.address, hostHeader),
    body: req.body,
    redirect: 'manual',
  };
  Object.assign(init, BUN_FETCH);
  if (!TIMEOUT && !ABORT) {
    if (READ) return readWhole(target, init);
    if (!HEADERS) return fetch(target, init);
    return fetch(target, init).then((res) => {
      cleanAnswer(res.headers);
      return res;
    });
  }
  return watched(req, target, init);
}

Bun.serve({ hostname: '127.0.0.1', port: Number(Bun.env.PORT), fetch: handle });

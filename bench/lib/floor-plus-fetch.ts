// The floor plus only what a correct gateway must do for the bench's route (issue 19): what fngate's ratio to its
// runtime's floor should be measured against. Shared by the Deno floor-plus (bench/lib/floor-plus-deno.ts) and the
// workerd one (bench/lib/floor-plus-worker.ts, bundled by esbuild at launch). Each step is switched on by its name in
// the FLOOR_PLUS list (env on Deno, a text binding on workerd; default all four), so each can be A/B'd against the
// plain floor (`bench/ab.ts --a floor --b floor-plus --env-b FLOOR_PLUS=timeout --runtime deno`):
// - `timeout`: the upstream call's timeout (TIMEOUT_MS, default 3000, fngate's openfunction default): one timer and
//   AbortController per call (on Deno one shared 50 ms clock for all calls instead of a timer each, as fngate there;
//   CLOCK=timer: a timer per call); no answer headers in time is a 504 with APISIX's error body; a small answer of known
//   length (≤ 16 KiB, not compressed) is read whole under the same deadline and handed on as bytes in a new Response
//   (neither Deno nor workerd can cut a body they pipe natively when the call is aborted: bench/README.md); a
//   larger one is pumped through a JS stream with the deadline re-armed per read (the idle timeout).
// - `abort`: the client going away cancels the upstream call (with `timeout`: the request's signal is listened to
//   only once the call outlives 50 ms, as fngate's clock does; alone: the request's signal is the fetch's signal).
// - `headers` (the answer's clean-up is fngate's own, src/core/upstream/headers.ts): request hygiene (hop-by-hop, Connection-listed names, Host and any client X-Forwarded-* dropped;
//   X-Forwarded-For/-Proto/-Host added, as fngate adds them; the route's Authorization) and response hygiene
//   (hop-by-hop and Connection-listed names dropped from the answer). Without it: the floor's (Host and
//   Connection/Keep-Alive dropped, Authorization and X-Forwarded-For set).
// - `head-timeout`, `body-copy`: the two halves of `timeout`, to split its cost (see STEPS; not correct alone).
// - `route`: fngate's router (src/core/router), one route `/hello/*`, matched per request on method, host and the
//   normalised path; no match is APISIX's 404.
// No plugin runner, no access log, no retries, no config. Loopback only.
import { compileRouter } from '../../src/core/router/index.ts';
import { hostOf } from '../../src/core/router/host.ts';
import { normalizePath } from '../../src/core/router/path.ts';
import {
  cleanedResponsePairs,
  cleanResponseHeaders,
  connectionListedNames,
  isHopByHop,
  smallLength,
} from '../../src/core/upstream/headers.ts';

export interface FloorPlusOptions {
  upstream: string;
  authorization: string;
  /** FLOOR_PLUS: comma-separated step names, or `all` / unset for every step. */
  steps?: string;
  timeoutMs?: number;
  /** Deno's fetch decodes gzip/deflate/br answers: their Content-Encoding and Content-Length must go then. */
  decodes?: boolean;
  /**
   * Build a small answer's new Response with the upstream's answer as its init (`new Response(bytes, res)`, which
   * workerd copies natively) and clean that copy's headers in place, instead of from cleaned pairs: the cheaper way
   * on workerd (bench/README.md: ~7 vs ~12.5 µs per Response), as fngate does there (`copyAnswerHeaders`).
   */
  copyAnswerHeaders?: boolean;
  /** One 50 ms clock for all calls instead of a timer per call (Deno: fngate's `sharedClock`; see ClockWatch). */
  sharedClock?: boolean;
}

export interface ClientInfo {
  ip: string | undefined;
  /** The client's going away (a getter: Deno and workerd make the signal only when it is read). */
  signal: () => AbortSignal | undefined;
}

/** What the gateway sets itself: the client's own values never pass. */
const GATEWAY_SET = new Set(['host', 'authorization', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port', 'forwarded', 'x-real-ip']);
const SMALL_BODY = 16 * 1024;
/**
 * The steps, and two halves of `timeout` to split its cost (diagnostics, not correct alone): `head-timeout`, the
 * timer and AbortController for the answer headers only, the answer then handed on natively (its body unbounded);
 * `body-copy`, a small answer read whole and handed on as bytes in a new Response, with no timer.
 */
const STEPS = ['timeout', 'abort', 'headers', 'route', 'head-timeout', 'body-copy'];

const json = (status: number, message: string) =>
  new Response(`{"error_msg":"${message}"}\n`, { status, headers: { 'content-type': 'application/json' } });

/** Content-Length as fngate's "small enough to read whole" check reads it; none is not small. */
const lengthOf = (v: string | null): number => (v === null ? Number.POSITIVE_INFINITY : smallLength(v));

/** What an answer the runtime's fetch decoded (Deno) must lose besides the hop-by-hop headers: its coding and length. */
const DECODED: ReadonlySet<string> = new Set(['content-encoding', 'content-length']);

export function floorPlus(opts: FloorPlusOptions): (req: Request, client: ClientInfo) => Response | Promise<Response> {
  const all = !opts.steps || opts.steps === 'all';
  // `none`: no step (the floor's work, but the path taken from the URL by indexOf instead of `new URL`).
  const on = new Set(all ? ['timeout', 'abort', 'headers', 'route'] : opts.steps === 'none' ? [] : opts.steps!.split(',').map((s) => s.trim()));
  for (const s of on) if (!STEPS.includes(s)) throw new Error(`FLOOR_PLUS: unknown step ${s}`);
  const headTimeoutOnly = on.has('head-timeout') && !on.has('timeout');
  const timeoutOn = on.has('timeout') || headTimeoutOnly;
  const bodyCopyOnly = on.has('body-copy') && !timeoutOn;
  const abortOn = on.has('abort');
  const headersOn = on.has('headers');
  const routeOn = on.has('route');
  const timeout = opts.timeoutMs ?? 3000;
  const router = compileRouter([{ id: 'bench', paths: ['/hello/*'], priority: 0, data: 'bench' }]);
  const { upstream, authorization } = opts;

  /** The request headers for the upstream. */
  function requestHeaders(req: Request, ip: string | undefined, hostHeader: string | null, scheme: string): HeadersInit {
    if (!headersOn) {
      const headers = new Headers(req.headers);
      headers.delete('host');
      headers.delete('connection');
      headers.delete('keep-alive');
      headers.set('authorization', authorization);
      if (ip) headers.set('x-forwarded-for', ip);
      return headers;
    }
    const conn = req.headers.get('connection');
    const names = conn === null ? undefined : connectionListedNames(conn);
    const out: Record<string, string> = {};
    req.headers.forEach((value, name) => {
      if (isHopByHop(name) || GATEWAY_SET.has(name) || names?.includes(name)) return;
      out[name] = value; // Headers joins a repeated name with ", " already
    });
    if (ip) out['x-forwarded-for'] = ip;
    out['x-forwarded-proto'] = scheme;
    if (hostHeader) out['x-forwarded-host'] = hostHeader;
    out.authorization = authorization;
    return out;
  }

  return (req, client) => {
    const url = req.url;
    const pathStart = url.indexOf('/', url.indexOf('//') + 2);
    const q = url.indexOf('?', pathStart);
    const rawPath = pathStart < 0 ? '/' : q < 0 ? url.slice(pathStart) : url.slice(pathStart, q);
    if (rawPath === '/__bench_ready') return new Response('ok');
    const method = req.method;
    const hostHeader = req.headers.get('host');
    if (routeOn) {
      const path = normalizePath(rawPath);
      if (path === null) return json(400, 'bad request');
      if (!router.match({ method, host: hostOf(hostHeader), path, remoteAddr: client.ip })) return json(404, '404 Route Not Found');
    }
    const target = upstream + (q < 0 ? rawPath : rawPath + url.slice(q));
    const init: RequestInit & { duplex?: string } = {
      method,
      headers: requestHeaders(req, client.ip, hostHeader, url.startsWith('https:') ? 'https' : 'http'),
      body: req.body,
      redirect: 'manual',
    };
    if (init.body) init.duplex = 'half';
    if (!timeoutOn) {
      if (abortOn) init.signal = client.signal();
      const p = fetch(target, init);
      if (bodyCopyOnly) return p.then(copied);
      if (!headersOn) return p;
      return p.then((res) => new Response(res.body, { status: res.status, statusText: res.statusText, headers: cleanedResponsePairs(res.headers) }));
    }
    return timed(target, init, client);
  };

  /** A small answer's bytes as a new Response with the upstream's status and (cleaned) headers. */
  function small(res: Response, bytes: ArrayBuffer, headers: HeadersInit): Response {
    const body = bytes.byteLength ? bytes : null;
    if (!opts.copyAnswerHeaders) return new Response(body, { status: res.status, statusText: res.statusText, headers });
    const out = new Response(body, res);
    if (headersOn) cleanResponseHeaders(out.headers);
    return out;
  }

  /** `body-copy` alone: a small answer read whole and handed on as bytes (no timer). */
  async function copied(res: Response): Promise<Response> {
    const h = res.headers;
    const coding = h.get('content-encoding');
    const big = coding || lengthOf(h.get('content-length')) > SMALL_BODY;
    const headers = headersOn && (big || !opts.copyAnswerHeaders) ? cleanedResponsePairs(h) : h;
    if (big) return new Response(res.body, { status: res.status, statusText: res.statusText, headers });
    return small(res, await res.arrayBuffer(), headers);
  }

  async function timed(target: string, init: RequestInit, client: ClientInfo): Promise<Response> {
    const ac = new AbortController();
    init.signal = ac.signal;
    const w = opts.sharedClock ? new ClockWatch(ac, client, abortOn, timeout) : new TimerWatch(ac, client, abortOn, timeout);
    w.start();
    let res: Response;
    try {
      res = await fetch(target, init);
    } catch (err) {
      w.done();
      if (w.timedOut) return json(504, 'upstream timed out');
      if (ac.signal.aborted) throw err; // the client is gone: nobody reads the answer
      return json(502, 'upstream failed');
    }
    if (headTimeoutOnly) {
      w.done();
      return headersOn ? new Response(res.body, { status: res.status, statusText: res.statusText, headers: cleanedResponsePairs(res.headers) }) : res;
    }
    const h = res.headers;
    const coding = h.get('content-encoding');
    const isSmall = !coding && lengthOf(h.get('content-length')) <= SMALL_BODY;
    const headers: HeadersInit =
      headersOn && !(isSmall && opts.copyAnswerHeaders) ? cleanedResponsePairs(h, coding && opts.decodes ? DECODED : undefined) : h;
    if (isSmall) {
      w.stop();
      w.start(); // the body's deadline
      let bytes: ArrayBuffer;
      try {
        bytes = await res.arrayBuffer();
      } catch (err) {
        if (w.timedOut) return json(504, 'upstream timed out');
        if (ac.signal.aborted) throw err;
        return json(502, 'upstream failed');
      } finally {
        w.done();
      }
      return small(res, bytes, headers);
    }
    if (!res.body) {
      w.done();
      return new Response(null, { status: res.status, statusText: res.statusText, headers });
    }
    // Streamed: the deadline counts while a read waits on the upstream (the idle timeout).
    w.stop();
    const reader = res.body.getReader();
    let ctl: ReadableStreamDefaultController<Uint8Array> | undefined;
    // A stalled read ends here even if the abort does not reach the pending read (seen once on Deno with the shared
    // clock after earlier timeouts, not explained): the client's answer errors and the upstream read is cancelled.
    w.onTimeout = () => {
      w.done();
      ctl?.error(new Error('upstream body idle timeout'));
      reader.cancel().catch(() => {});
    };
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        ctl = controller;
      },
      async pull(controller) {
        w.start();
        try {
          const { done: end, value } = await reader.read();
          w.stop();
          if (end) {
            w.done();
            controller.close();
          } else controller.enqueue(value);
        } catch (err) {
          w.done();
          controller.error(err);
        }
      },
      cancel(reason) {
        w.done();
        ac.abort();
        return reader.cancel(reason).catch(() => {});
      },
    });
    return new Response(body, { status: res.status, statusText: res.statusText, headers });
  }
}

/** The deadline of one call in flight: started (re-armed) while the call waits on the upstream, stopped otherwise. */
interface Watch {
  timedOut: boolean;
  /** Called after the call was aborted for its timeout. */
  onTimeout?: () => void;
  start(): void;
  stop(): void;
  done(): void;
}

/**
 * A timer per call. It first fires after 50 ms (or the timeout if shorter): a call still in flight then starts
 * listening for the client going away (Deno and workerd make the request's signal only when it is read).
 */
class TimerWatch implements Watch {
  timedOut = false;
  onTimeout?: () => void;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private signal: AbortSignal | undefined;
  private readonly onClientGone = () => this.ac.abort();
  constructor(
    private readonly ac: AbortController,
    private readonly client: ClientInfo,
    private readonly abortOn: boolean,
    private readonly timeout: number,
  ) {}
  private arm(ms: number, deadline: number): void {
    this.timer = setTimeout(() => {
      if (this.abortOn && this.signal === undefined) {
        this.signal = this.client.signal();
        if (this.signal?.aborted) return this.ac.abort();
        this.signal?.addEventListener('abort', this.onClientGone);
      }
      const left = deadline - Date.now();
      if (left > 0) return this.arm(left, deadline);
      this.timedOut = true;
      this.ac.abort();
      this.onTimeout?.();
    }, ms);
  }
  start(): void {
    this.arm(this.abortOn ? Math.min(50, this.timeout) : this.timeout, Date.now() + this.timeout);
  }
  stop(): void {
    clearTimeout(this.timer);
  }
  done(): void {
    clearTimeout(this.timer);
    this.signal?.removeEventListener('abort', this.onClientGone);
  }
}

/**
 * One 50 ms interval for every call in flight (the calls a doubly linked list through themselves), as fngate's
 * `sharedClock` on Deno and Bun: no timer per call (not for Workers, where a timer must belong to its request).
 */
class ClockWatch implements Watch {
  static head: ClockWatch | undefined;
  static interval: ReturnType<typeof setInterval> | undefined;
  timedOut = false;
  onTimeout?: () => void;
  prev: ClockWatch | undefined;
  next: ClockWatch | undefined;
  deadline = 0;
  waiting = false;
  ticks = 0;
  private signal: AbortSignal | undefined;
  private readonly onClientGone = () => this.ac.abort();
  constructor(
    private readonly ac: AbortController,
    private readonly client: ClientInfo,
    private readonly abortOn: boolean,
    private readonly timeout: number,
  ) {
    this.next = ClockWatch.head;
    if (ClockWatch.head) ClockWatch.head.prev = this;
    ClockWatch.head = this;
    if (ClockWatch.interval === undefined) ClockWatch.interval = setInterval(ClockWatch.tick, 50);
  }
  static tick(): void {
    if (ClockWatch.head === undefined) {
      clearInterval(ClockWatch.interval);
      ClockWatch.interval = undefined;
      return;
    }
    const now = Date.now();
    for (let w: ClockWatch | undefined = ClockWatch.head; w !== undefined; ) {
      const next: ClockWatch | undefined = w.next;
      if (++w.ticks === 2 && w.abortOn) w.subscribe();
      if (w.waiting && !w.timedOut && now >= w.deadline) {
        w.timedOut = true;
        w.ac.abort();
        w.onTimeout?.();
      }
      w = next;
    }
  }
  private subscribe(): void {
    this.signal = this.client.signal();
    if (this.signal?.aborted) this.ac.abort();
    else this.signal?.addEventListener('abort', this.onClientGone);
  }
  start(): void {
    this.deadline = Date.now() + this.timeout;
    this.waiting = true;
  }
  stop(): void {
    this.waiting = false;
  }
  done(): void {
    this.waiting = false;
    this.signal?.removeEventListener('abort', this.onClientGone);
    if (this !== ClockWatch.head && this.prev === undefined) return; // unlinked already
    if (this.prev) this.prev.next = this.next;
    else ClockWatch.head = this.next;
    if (this.next) this.next.prev = this.prev;
    this.prev = undefined;
    this.next = undefined;
  }
}

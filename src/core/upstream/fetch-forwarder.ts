import { readAll } from '../body.ts';
import {
  CONTENT_LENGTH,
  cleanedResponsePairs,
  cleanResponseHeaders,
  type HeaderList,
  markCleaned,
  removeHeaders,
  smallLength,
} from './headers.ts';
import { type ForwardRequest, type Forwarder, UpstreamError, type UpstreamErrorKind } from './types.ts';

const never = (): boolean => false;

export interface FetchForwarderOptions {
  /**
   * Whether a `fetch` rejection says the connection was refused or could not be made, i.e. the request was surely not
   * written (Deno: a `client error (Connect)`, Bun: `ECONNREFUSED`). Any other rejection before the answer is still a
   * `connect` failure (503), marked `maybeSent`, so a cold-start retry never re-sends it. Default: none is known
   * (workerd reports "Network connection lost." for both).
   */
  refused?: (err: unknown) => boolean;
  /** The runtime's fetch (default: the global one). */
  fetch?: typeof fetch;
  /**
   * What the runtime's fetch does to a compressed answer:
   * - `strip`: it decodes the body, so `content-encoding`/`content-length` must go (Deno, Node's fetch);
   * - `keep`: the body stays as the upstream sent it (Bun with `decompress: false`, Workers, which re-encode
   *   on the way out), so the headers stay too (content-length is dropped when the runtime re-encodes).
   */
  compressed: 'strip' | 'keep';
  /** With `strip`: the codings the runtime's fetch decodes (default gzip, deflate, br); others pass through untouched. */
  decodes?: readonly string[];
  /** Runtime-specific additions to the fetch init (e.g. Bun's `tls`, `decompress`). */
  extraInit?: (req: ForwardRequest) => Record<string, unknown>;
  /** Whether the runtime's fetch honours a `Host` request header (Bun does, Deno with `allowHost`; Workers and undici's fetch do not). */
  honoursHost?: boolean;
  /**
   * Read a request body that is counted against a size limit (`maxBodySize`: a chunked upload to a route with a
   * limit) whole, at most that many bytes, before calling `fetch`. For runtimes whose fetch ends the upload as if
   * complete when the body stream errors (workerd does), which would hand the function a truncated body instead of
   * the client a 413. Every other body streams: one with a `Content-Length` comes without `maxBodySize`.
   */
  bufferLimitedBodies?: boolean;
  /**
   * Watch the calls in flight with one shared interval timer (every {@link TICK_MS} ms while there are any) instead
   * of a timer per call: a timer costs ~1 µs per call on Deno. Timeouts then fire up to one tick late, and a client
   * that went away is noticed within two ticks. With either clock the client's signal is asked for only once a call
   * has been in flight for a tick: Deno, Bun and workerd make the request's `signal` (and its hook) only when read.
   * Not for Workers, where a timer set while serving one request must not act on another request's I/O.
   */
  sharedClock?: boolean;
  /**
   * Clean the upstream answer's own `Headers` in place and hand that object to the new Response, instead of
   * building the Response from cleaned name/value pairs. For runtimes whose fetch answers have mutable, native
   * headers (Bun: the runtime copies them natively, where pairs cross into JS and back one string at a time;
   * paired A/B runs: 0.94× and 0.98× CPU per request, within the ~4 % noise of
   * `bench/ab.ts`; it does less work). Not for Workers (a fetch answer's headers are immutable there) nor Deno
   * (its Headers are JS; pairs measured cheaper, ~1.4 vs ~6 µs).
   */
  editHeadersInPlace?: boolean;
  /**
   * Give the new Response the upstream answer's `Headers` object, which the runtime copies natively, and clean that
   * copy in place, instead of building it from cleaned name/value pairs. For runtimes whose fetch answers have
   * immutable native headers and whose `Headers` are slow to fill from pairs (workerd: 1 KiB answer with five
   * headers, ~7 vs ~12.5 µs per Response in an in-isolate micro-benchmark; bench/README.md).
   */
  copyAnswerHeaders?: boolean;
  /**
   * Hand `fetch` the request headers as a record (a repeated name's values joined with `, `, RFC 9110 §5.3) instead
   * of the pair list. workerd fills a `Headers` from a sequence of pairs through the iteration protocol, one pair at
   * a time (three headers: ~9.7 µs, from a record ~3.5 µs; bench/README.md).
   */
  recordHeaders?: boolean;
  /**
   * Ask the runtime's garbage collector for a young-generation collection after every `everyBytes` of streamed
   * answers pumped through JS (all calls together). Each chunk of a streamed answer passes through a JS stream (for
   * the idle timeout between chunks); its memory outside the JS heap is freed only when a collection finds it
   * unreachable, and a transfer that allocates little else on the heap triggers none: on Deno a 100 MiB download
   * grew the gateway's RSS by ~60 MiB (bench/README.md). For runtimes that expose a collector (Deno with
   * `--v8-flags=--expose-gc`).
   */
  collectGarbage?: { everyBytes: number; collect: () => void };
  /**
   * Give a streamed answer that declared its length (`length` bytes, not re-encoded) a body of that fixed length. For
   * runtimes that send a JS stream's answer chunked and drop its `Content-Length` (workerd): there, when the stream
   * errors (the body's timeout, the upstream's reset) the runtime still ends the chunked answer cleanly, so the client
   * takes a truncated answer for a complete one; with a fixed length (workerd's `FixedLengthStream`) the runtime
   * keeps the `Content-Length` and the client sees the answer end short (test/conformance/openfunction.test.ts).
   */
  fixedLength?: (body: ReadableStream<Uint8Array>, length: number) => ReadableStream<Uint8Array>;
}

/**
 * Request headers the forwarder drops, by (counted body, strips codings): `content-length` with a body counted
 * against a limit (it came without one; read whole, the runtime frames it), `accept-encoding` when the runtime's
 * fetch decodes answers (it asks for its own codings), and `host` always (a `Host` goes only where `hostHeader`
 * says and the fetch honours it). The client's own `content-length` stays with its own body, which the runtime's
 * server framed by it (every runtime's server refuses a request with two lengths or a length and chunked): the
 * function gets the length, as from nginx, where Bun's fetch would otherwise send the stream chunked.
 */
const REQUEST_DROP: readonly ReadonlySet<string>[] = [
  new Set(['host']),
  new Set(['host', 'accept-encoding']),
  new Set(['host', 'content-length']),
  new Set(['host', 'content-length', 'accept-encoding']),
];
const DROP_CODING: ReadonlySet<string> = new Set(['content-encoding', 'content-length']);

/** Answers whose `content-length` is at most this many bytes are read whole before they are returned. */
const SMALL_BODY = 16 * 1024;

/** The shared clock's period (see {@link FetchForwarderOptions.sharedClock}). */
export const TICK_MS = 50;

/**
 * One call in flight: its deadline, its abort controller and its subscription to the client's signal, in one object
 * (rather than a handful of closures per call). The deadline counts only while the call waits on the upstream: for
 * the response headers, for a small body read whole, or for the next chunk the consumer asked for.
 */
class Call {
  readonly ac = new AbortController();
  /** `Date.now()` past which a call that `waiting` has timed out. */
  deadline: number;
  waiting = true;
  headersIn = false;
  timedOut = false;
  /** Ticks of the shared clock this call has seen. */
  ticks = 0;
  /** The timer of the per-call clock. */
  timer: ReturnType<typeof setTimeout> | undefined = undefined;
  private signal: AbortSignal | undefined | null = null; // null: not asked for yet
  ended = false;
  /** The shared clock's list (see {@link sharedClock}): its neighbours while in it. */
  prev: Call | undefined = undefined;
  next: Call | undefined = undefined;
  /**
   * The bound on the wait for the response headers: fetch cannot tell the connect and the sending from the wait for
   * the answer, so their timeouts add up (connect + send + read).
   */
  readonly headTimeout: number;

  constructor(
    readonly req: ForwardRequest,
    private readonly clock: Clock,
  ) {
    this.headTimeout = req.timeout + (req.connectTimeout ?? 0) + (req.sendTimeout ?? 0);
    this.deadline = Date.now() + this.headTimeout;
    clock.add(this);
  }

  /** Wait on the upstream again, for at most `timeout` ms from now. */
  wait(): void {
    this.deadline = Date.now() + this.req.timeout;
    this.waiting = true;
  }

  /** Listen to the client's signal (once); a client already gone aborts the call now. */
  subscribe(): void {
    if (this.signal !== null || this.ended) return;
    const signal = this.req.clientSignal?.();
    this.signal = signal;
    if (signal === undefined) return;
    if (signal.aborted) this.handleEvent();
    else signal.addEventListener('abort', this);
  }

  /** The client's signal fired. */
  handleEvent(): void {
    this.ac.abort(new UpstreamError('aborted', 'client went away'));
  }

  /** The clock's check: time out (once) a call that waited past its deadline. True when it did. */
  check(now: number): boolean {
    if (this.timedOut || !this.waiting || now < this.deadline) return false;
    this.timedOut = true;
    this.ac.abort(new UpstreamError('timeout', this.stalled()));
    return true;
  }

  /**
   * Ends the call after `err` and says why it failed: its own timeout, the client going away (the call was
   * aborted), or else `otherwise`.
   */
  failure(err: unknown, otherwise: UpstreamErrorKind, message: string, maybeSent?: boolean): UpstreamError {
    this.end();
    if (this.timedOut) return new UpstreamError('timeout', this.stalled(), { cause: err });
    if (this.ac.signal.aborted) return new UpstreamError('aborted', 'client went away', { cause: err });
    return new UpstreamError(otherwise, message, { cause: err, maybeSent });
  }

  stalled(): string {
    if (this.headersIn) return `body stalled for more than ${this.req.timeout} ms`;
    return this.headTimeout === this.req.timeout
      ? `no answer within ${this.req.timeout} ms`
      : `no answer within ${this.headTimeout} ms (connect + send + read timeouts: this runtime's fetch cannot time the connect alone)`;
  }

  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.waiting = false;
    this.clock.remove(this);
    this.signal?.removeEventListener('abort', this);
  }
}

interface Clock {
  add(call: Call): void;
  remove(call: Call): void;
}

/**
 * A timer per call, armed for its whole life (re-armed for the time left, never once per body chunk). It first fires
 * after a tick ({@link TICK_MS}): a call still in flight then starts listening for the client going away, so quick
 * calls never make the request's signal (workerd with no signal at all: 111–122 vs 118–129 µs CPU per
 * proxied request in 3 alternating runs).
 */
const timerClock: Clock = {
  add(call) {
    const fire = () => {
      if (call.ended) return;
      call.subscribe();
      const now = Date.now();
      if (call.check(now)) return;
      call.timer = setTimeout(fire, call.waiting ? Math.max(1, call.deadline - now) : call.req.timeout);
    };
    call.timer = setTimeout(fire, Math.min(TICK_MS, call.headTimeout));
  },
  remove(call) {
    clearTimeout(call.timer);
  },
};

/**
 * One interval timer for every call in flight, stopped when a tick finds none. The calls are a doubly linked list
 * through the calls themselves, and a call that ends is unlinked with its own links cleared; not a `Set`. A `Set` with
 * ~50 members and one add and one delete per request is rehashed into a new table every few dozen requests, and V8
 * leaves each old table holding the calls it had plus a link to its successor. Once one such table was promoted to
 * the old generation, every scavenge kept what it reached alive (the calls, their requests, contexts and headers),
 * which then reached the next table: on Deno ~1.7 KB per request promoted that only the next mark-compact found
 * dead (fngate 3.3 KB against 1.6 KB per request with this list; bench/README.md, "Deno's garbage collection").
 */
function sharedClock(): Clock {
  let head: Call | undefined;
  let timer: ReturnType<typeof setInterval> | undefined;
  const tick = () => {
    if (head === undefined) {
      clearInterval(timer);
      timer = undefined;
      return;
    }
    const now = Date.now();
    for (let call: Call | undefined = head; call !== undefined; ) {
      const next: Call | undefined = call.next; // read first: nothing below unlinks synchronously, but be safe
      // A call that lived through a whole tick is not a quick one: from now on it listens for the client going away.
      if (++call.ticks === 2) call.subscribe();
      call.check(now);
      call = next;
    }
  };
  return {
    add(call) {
      call.next = head;
      if (head !== undefined) head.prev = call;
      head = call;
      if (timer === undefined) {
        timer = setInterval(tick, TICK_MS);
        // Never what keeps the process alive (Deno and Bun both have unref on their timers).
        (timer as { unref?: () => void }).unref?.();
      }
    },
    remove(call) {
      // In the list: the head, or a call with a predecessor (an unlinked call has neither).
      if (call !== head && call.prev === undefined) return;
      const { prev, next } = call;
      if (prev !== undefined) prev.next = next;
      else head = next;
      if (next !== undefined) next.prev = prev;
      // A promoted call that ended must not keep its neighbours alive through scavenges (see above).
      call.prev = undefined;
      call.next = undefined;
    },
  };
}

/**
 * A {@link Forwarder} over a WHATWG `fetch`, for runtimes whose native fetch is their best client
 * (Deno, Bun, Workers). Timeouts: `timeout` ms for the response headers, then for each gap between
 * body chunks. The client's abort signal cancels the call at any point.
 */
export function createFetchForwarder(opts: FetchForwarderOptions): Forwarder {
  const doFetch = opts.fetch ?? fetch;
  const refused = opts.refused ?? never;
  const decodes = new Set(opts.decodes ?? ['gzip', 'deflate', 'br']);
  const strip = opts.compressed === 'strip';
  const clock = opts.sharedClock ? sharedClock() : timerClock;
  const gc = opts.collectGarbage;
  let pumped = 0; // streamed answer bytes since the last collection asked for
  return async (req) => {
    const call = new Call(req, clock);
    const ac = call.ac;

    // A counted body (a limit, no declared length) is the only one that can fail on its own, with the gateway's 413;
    // any other body goes to fetch as it came, for the runtime to pipe natively.
    const counted = req.maxBodySize !== undefined ? req.body : null;
    const headers = req.headers; // the forwarder's own (ForwardRequest contract): edited, not copied
    removeHeaders(headers, REQUEST_DROP[(counted ? 2 : 0) + (strip ? 1 : 0)]!);
    if (req.hostHeader !== undefined && opts.honoursHost) headers.push(['host', req.hostHeader]);

    let bodyError: unknown;
    let body: ReadableStream<Uint8Array> | Uint8Array | null = req.body;
    if (counted) {
      body = watchBody(counted, (e) => (bodyError = e));
      if (opts.bufferLimitedBodies) {
        try {
          body = await readAll(body);
        } catch (err) {
          const failure = call.failure(err, 'aborted', 'client went away');
          throw bodyError instanceof UpstreamError ? bodyError : failure;
        }
      }
    }

    let res: Response;
    try {
      const init: Record<string, unknown> = {
        method: req.method,
        headers: opts.recordHeaders ? headerRecord(headers) : headers,
        body,
        redirect: 'manual',
        signal: ac.signal,
      };
      if (body instanceof ReadableStream) init.duplex = 'half';
      if (opts.extraInit) Object.assign(init, opts.extraInit(req));
      res = await doFetch(req.url, init as RequestInit);
    } catch (err) {
      // fetch rejects a refused connect and one that broke after the request went out alike; only what the runtime
      // recognises as refused (`refused`) is a `connect` failure for sure, any other may have reached the upstream.
      const failure = call.failure(err, 'connect', describe(err), !refused(err));
      throw bodyError instanceof UpstreamError ? bodyError : failure;
    }
    const resHeaders = res.headers; // one getter call: on workerd each is a call into the runtime
    const coding = resHeaders.get('content-encoding')?.trim().toLowerCase();
    // A compressed answer loses its length when the runtime re-encodes it (`keep`) or decoded it (`strip`).
    const drop = !coding ? undefined : opts.compressed === 'keep' ? CONTENT_LENGTH : decodes.has(coding) ? DROP_CODING : undefined;
    const copy = opts.copyAnswerHeaders === true;
    /** Cleans a mutable `Headers` (the answer's own, or the new Response's copy of it) in place. */
    const cleanInPlace = (headers: Headers) => {
      cleanResponseHeaders(headers);
      if (drop) for (const name of drop) headers.delete(name);
    };
    let outHeaders: HeadersInit | undefined;
    if (opts.editHeadersInPlace) {
      cleanInPlace(resHeaders);
      outHeaders = resHeaders;
    } else if (!copy) outHeaders = cleanedResponsePairs(resHeaders, drop);
    /**
     * The answer with `body`. With `copyAnswerHeaders` the upstream's answer itself is the init (it has `status`,
     * `statusText` and `headers`): workerd copies those natively from a Response, without a dictionary to convert
     * or the three getters, and the copy of the headers is cleaned here.
     */
    const answer = (body: BodyInit | null): Response => {
      if (copy) {
        const out = new Response(body, res);
        cleanInPlace(out.headers);
        return markCleaned(out);
      }
      return markCleaned(new Response(body, { status: res.status, statusText: res.statusText, headers: outHeaders }));
    };
    // A small body of known length is read whole (the timeout then covers the body too) and handed on as bytes:
    // the runtime writes those natively, where a JS stream wrapper would pump every chunk through JS
    // (Deno, workerd: ~2x the CPU per proxied 1 KiB answer; `npm run bench`). Compressed answers always stream.
    // Checked before `res.body`, which on workerd makes a JS stream object of the native body; an answer without a
    // body (HEAD, 204, 304) reads as no bytes.
    const length = coding ? null : resHeaders.get('content-length');
    if (length !== null && smallLength(length) <= SMALL_BODY) {
      // From here the timeout covers the body.
      call.headersIn = true;
      call.wait();
      let bytes: ArrayBuffer;
      try {
        bytes = await res.arrayBuffer();
      } catch (err) {
        throw call.failure(err, 'protocol', `upstream response body failed: ${describe(err)}`);
      }
      call.end();
      return answer(bytes.byteLength > 0 ? bytes : null);
    }
    if (!res.body) {
      call.end();
      return answer(null);
    }
    // From here the timeout is the longest gap in the body.
    call.headersIn = true;
    call.wait();
    // Streamed: the deadline counts while a read the consumer asked for waits on the upstream.
    call.waiting = false;
    const reader = res.body.getReader();
    const stream = new ReadableStream<Uint8Array>({
      async pull(controller) {
        call.wait();
        try {
          const { done, value } = await reader.read();
          call.waiting = false;
          if (done) {
            call.end();
            controller.close();
          } else {
            controller.enqueue(value);
            if (gc) {
              pumped += value.byteLength;
              if (pumped >= gc.everyBytes) {
                pumped = 0;
                gc.collect();
              }
            }
          }
        } catch (err) {
          call.end();
          controller.error(err);
        }
      },
      cancel(reason) {
        call.end();
        ac.abort(new UpstreamError('aborted', 'client went away'));
        return reader.cancel(reason).catch(() => {});
      },
    });
    if (opts.fixedLength && length !== null && /^\d{1,15}$/.test(length)) {
      return answer(opts.fixedLength(stream, Number(length)));
    }
    return answer(stream);
  };
}

/** The request's header pairs as a record, for `fetch` (see {@link FetchForwarderOptions.recordHeaders}). */
function headerRecord(list: HeaderList): Record<string, string> {
  const out: Record<string, string> = Object.create(null);
  for (const [name, value] of list) {
    const had = out[name];
    out[name] = had === undefined ? value : `${had}, ${value}`;
  }
  return out;
}

/** Remember an error raised by the request body (the gateway's size limit) so it is not reported as a connect failure. */
function watchBody(body: ReadableStream<Uint8Array>, onError: (e: unknown) => void): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { done, value } = await reader.read();
        if (done) controller.close();
        else controller.enqueue(value);
      } catch (err) {
        onError(err);
        controller.error(err);
      }
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
}

function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = (err as { cause?: unknown }).cause;
  return cause instanceof Error ? `${err.message}: ${cause.message}` : err.message;
}

/**
 * The Node forwarding client: an implementation of the core's `Forwarder` contract
 * (src/core/upstream/types.ts) on npm undici 7's `Agent.dispatch()`.
 *
 * Why `dispatch()` with our own handler rather than `fetch`, `request()` or `stream()`:
 * - Node's global fetch costs ~315 µs CPU per request against ~72 µs for `agent.request()`
 *   (shared/reference/perf-baseline.md); the cost is the WHATWG machinery, not the sockets.
 * - `request()` builds a Node `Readable` (BodyReadable) for every response, which we would then have to wrap
 *   again into a WHATWG stream (`Readable.toWeb` crashed Node 20 on client disconnect). `stream()` wants a
 *   Node `Writable`. `dispatch()` is what both are built on: our handler feeds undici's parser callbacks
 *   straight into one pull-based `ReadableStream`, with backpressure (returning `false` from `onData`
 *   pauses the parser and the socket; `pull()` resumes it). One object per request serves as the undici
 *   handler, the stream's underlying source and the abort-signal listener, so hardly any closures are allocated.
 * - The handler uses undici's original callback API (`onConnect`/`onHeaders`/`onData`/`onComplete`/`onError`).
 *   undici 7 wraps a new-style handler (`onRequestStart`…) in an adapter that parses the raw headers into an
 *   object we would throw away; the raw `Buffer[]` headers are filtered straight into the Response's header
 *   object here (see `responseHeaders`).
 *   undici 7 is pinned (undici 8 needs Node ≥ 22.19); revisit if the callback API is ever removed.
 *
 * Error kinds (see `UpstreamErrorKind`):
 * - before undici handed us a connected socket (`onConnect`): `connect` — refused, DNS, unreachable, TLS
 *   handshake/verification failure, and undici's own connect timeout when the request has no `connectTimeout`
 *   (`connectTimeout` option, 10 s default).
 * - `connect-timeout` — the request's `connectTimeout` ran out before the socket was connected (our deadline; undici's
 *   `connect.timeout`, one Agent per connect timeout like the keep-alive settings, is a backstop a second later).
 * - `timeout` — our deadline, nginx's model: with `connectTimeout`/`sendTimeout`, `sendTimeout` ms between two
 *   writes of the request from the connect on, then `timeout` ms from the request's last byte until the response
 *   headers. Without them (the serverless plugins' single `timeout`), `timeout` ms from the call until the
 *   headers (pool queueing, connect, send, first byte), restarted whenever a request-body chunk is written so a
 *   flowing upload is not cut off; when it runs out while still connecting the kind is `timeout` (504), because
 *   the whole `timeout` was consumed. Between body chunks undici's `bodyTimeout` (= `timeout`) applies;
 *   it does not run while the consumer applies backpressure, and has a coarse (~0.5–1 s) resolution.
 * - `protocol` — connected, then the socket broke or the answer was not valid HTTP (also a request undici
 *   refuses to send, e.g. an invalid header).
 * - `aborted` — `signal` fired (or the response body was cancelled).
 * - an `UpstreamError` thrown by the request body stream (the core's size-limit counter) is passed on as is.
 * After the headers, failures error the response body stream (never a silently truncated body).
 */
import { Agent, util as undiciUtil } from 'undici';
import type { Dispatcher } from 'undici';
import {
  BODY_LENGTH,
  connectionListedNames,
  isHopByHop,
  markCleaned,
  PLAIN_HEADERS,
  smallLength,
} from '../core/upstream/headers.ts';
import { UpstreamError } from '../core/upstream/types.ts';
import type { ClientCert, ForwardRequest, Forwarder } from '../core/upstream/types.ts';

/** At most this many Agents that present a client certificate (upstream `tls`), the oldest closed first. */
const MAX_CERT_AGENTS = 64;

export interface NodeForwarderOptions {
  /**
   * Connect (TCP + TLS) timeout of the pooled connections of requests without a `connectTimeout`, ms. Connections
   * are shared, so this is per dispatcher rather than per request; such a request's own `timeout` still bounds its
   * wait. A request with a `connectTimeout` gets a dispatcher of its own per value. Default 10000.
   */
  connectTimeout?: number;
  /** Cap on concurrent connections per origin (requests beyond it queue). Default: unlimited, as APISIX. */
  defaultConnections?: number;
  /** Largest response body accepted, bytes; a larger one errors as `protocol`. Default -1 (no limit). */
  maxResponseSize?: number;
  /** Largest response header block, bytes. Default: undici's (Node's `--max-http-header-size`, 16 KiB). */
  maxHeaderSize?: number;
  /**
   * Responses whose `content-length` is at most this many bytes are read whole and returned with a
   * `Uint8Array` body instead of a stream (see {@link DEFAULT_BUFFER_LIMIT}). 0 disables byte bodies
   * altogether (every body streams). Default 16384.
   */
  bufferLimit?: number;
  /** Bytes the response stream queues ahead of its reader before undici stops reading the socket. Default 65536. */
  highWaterMark?: number;
}

export type NodeForwarder = Forwarder & {
  /** Closes every pooled connection once in-flight requests are done; later calls reject with `connect`. */
  close(): Promise<void>;
};

/**
 * Bodies of known length up to this size are read whole and handed over as a `Uint8Array`; so is any body that
 * already ended in the socket read that carried the headers. Everything else streams at once.
 *
 * Why (bench/forwarder.bench.ts, 1 KiB body, N=20000, c=50, 2 interleaved rounds, Node 20.20, a shared
 * 2-vCPU box under load average ≈5 from other work, so absolute figures are inflated; compare within a run):
 * - through @hono/node-server (the Node runtime's HTTP layer), gateway process CPU per request:
 *   bytes 157 µs / 4,589 req/s vs always streamed 207 µs / 3,809 req/s (−24 % CPU, +20 % req/s; both rounds
 *   agreed: 161/154 vs 220/195 µs). With hono's Response a byte body is written with one `end()`, and
 *   no WHATWG ReadableStream is created (each costs ~10 µs on Node 20: it is made "transferable").
 * - consumed directly through the native Response (which builds a stream from bytes anyway) there is no gain:
 *   101 vs 89 µs. The gain needs the HTTP layer to return the forwarder's Response itself (edit its headers in
 *   place); rebuilding it as `new Response(res.body, …)` turns the bytes back into a stream (measured: no gain).
 */
export const DEFAULT_BUFFER_LIMIT = 16 * 1024;

/** Request headers undici refuses (it throws) or that must not be forwarded; the core should have removed them. */
const DROP_REQUEST_HEADERS = new Set(['host', 'connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'expect']);

const WAITING = 0; // no response headers yet
const BUFFERING = 1; // headers in, body being collected (see onHeaders), promise not resolved yet
const STREAMING = 2; // Response resolved, body flowing into the stream
const DONE = 3; // settled; later undici callbacks are ignored

type Phase = typeof WAITING | typeof BUFFERING | typeof STREAMING | typeof DONE;
type AbortUpstream = (err?: Error) => void;

function byteLength(chunk: Uint8Array): number {
  return chunk.byteLength;
}

function errorStream(controller: ReadableStreamDefaultController<Uint8Array>, err: UpstreamError): void {
  controller.error(err);
}

function onDeadline(ex: Exchange): void {
  ex.abortWith(ex.deadlineError());
}

/** An undici error before the response headers → the contract's kind. */
function classifyBeforeHeaders(err: unknown, connected: boolean, signal: AbortSignal | undefined): UpstreamError {
  if (err instanceof UpstreamError) return err;
  if (signal?.aborted) return new UpstreamError('aborted', 'downstream client went away', { cause: err });
  const code = (err as { code?: unknown } | null)?.code;
  if (code === 'UND_ERR_CONNECT_TIMEOUT') {
    return new UpstreamError('connect-timeout', `upstream timed out while connecting: ${describe(err)}`, { cause: err });
  }
  if (code === 'UND_ERR_HEADERS_TIMEOUT') {
    return new UpstreamError('timeout', 'upstream response headers timed out', { cause: err });
  }
  if (code === 'UND_ERR_INVALID_ARG' || code === 'UND_ERR_NOT_SUPPORTED') {
    return new UpstreamError('protocol', `request cannot be sent upstream: ${(err as Error).message}`, { cause: err });
  }
  if (!connected) {
    return new UpstreamError('connect', `cannot connect to upstream: ${describe(err)}`, { cause: err });
  }
  return new UpstreamError('protocol', `upstream connection failed before the response: ${describe(err)}`, {
    cause: err,
  });
}

/** An undici error after the response headers (body phase) → the error the body stream fails with. */
function classifyInBody(err: unknown, signal: AbortSignal | undefined): UpstreamError {
  if (err instanceof UpstreamError) return err;
  if (signal?.aborted) return new UpstreamError('aborted', 'downstream client went away', { cause: err });
  if ((err as { code?: unknown } | null)?.code === 'UND_ERR_BODY_TIMEOUT') {
    return new UpstreamError('timeout', 'upstream response body timed out', { cause: err });
  }
  return new UpstreamError('protocol', `upstream response body failed: ${describe(err)}`, { cause: err });
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' && !err.message.includes(code) ? `${code} ${err.message}` : err.message;
  }
  return String(err);
}

/**
 * Response headers as a plain object (lower-case names), already cleaned of hop-by-hop headers and of those the
 * upstream's `Connection` header names; or, when a name repeats (or would be unsafe as an object key), a
 * `Headers` that the core cleans as usual.
 *
 * Why not always `Headers`: @hono/node-server writes a Response whose headers are still the plain object it was
 * made with straight into `writeHead()`; a `Headers` costs its construction, the core's has()/delete() passes and
 * node-server's sorted copy back into an object (bench/README.md, "Node hot path"). The Response still has mutable
 * `headers` (node-server's, and the native one, build a `Headers` from the object on first access).
 */
type ResponseHeaders = Record<string, string> | Headers;

function responseHeaders(raw: Buffer[]): ResponseHeaders {
  const out: Record<string, string> = {};
  let connection: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    // undici's own lookup: the interned lower-case string of a well-known name, without decoding it again.
    const name = undiciUtil.headerNameToString(raw[i]!);
    // latin1: one char per byte, so values round-trip byte for byte when written out again.
    const value = raw[i + 1]!.toString('latin1');
    if (name === 'connection') {
      connection = connection === undefined ? value : `${connection}, ${value}`;
      continue;
    }
    if (isHopByHop(name)) continue;
    if (out[name] !== undefined || name === '__proto__') return headersOf(raw); // repeated (Set-Cookie...): rare
    out[name] = value;
  }
  if (connection !== undefined) {
    for (const t of connectionListedNames(connection)) if (Object.hasOwn(out, t)) delete out[t];
  }
  return out;
}

/** Every raw header into a `Headers`, for the core to clean ({@link cleanResponseHeaders}). */
function headersOf(raw: Buffer[]): Headers {
  const headers = new Headers();
  for (let i = 0; i < raw.length; i += 2) headers.append(raw[i]!.toString('latin1'), raw[i + 1]!.toString('latin1'));
  return headers;
}

/** The `Response` class last probed, and whether it keeps a plain header record by reference. */
let probed: typeof Response | undefined;
let keepsRecord = false;

/**
 * Does `new Response(body, { headers: record })` keep `record` itself as its headers until they are read?
 * @hono/node-server's Response (the global one under its server) does; the native one copies the record at once,
 * so edits of the record would be lost there (in-process tests use it). Probed once per `Response` class.
 */
function responseKeepsRecord(): boolean {
  if (probed !== Response) {
    probed = Response;
    const record: Record<string, string> = {};
    const res = new Response(null, { headers: record });
    record['x-probe'] = '1';
    keepsRecord = res.headers.get('x-probe') === '1';
  }
  return keepsRecord;
}

function newResponse(body: BodyInit | null, status: number, headers: ResponseHeaders): Response {
  const res = new Response(body, { status, headers });
  if (headers instanceof Headers) return res;
  // The response phases edit this same record (RecordHeaders), which @hono/node-server then writes as it is.
  if (responseKeepsRecord()) (res as { [PLAIN_HEADERS]?: ResponseHeaders })[PLAIN_HEADERS] = headers;
  const cl = headers['content-length'];
  if (typeof cl === 'string') (res as { [BODY_LENGTH]?: string })[BODY_LENGTH] = cl;
  return markCleaned(res);
}

/**
 * The downstream client's "went away" signal, for the Node entry's `clientSignal` gateway option: fires when the
 * client's connection closes before the response was finished (what @hono/node-server's own abort controller
 * does), without creating an `AbortController` per request (Node 20: ~3 µs, ~5 µs with one listener added and
 * removed; bench/README.md).
 *
 * It listens to the *connection*, once per socket, not to each response: adding and removing a `close` listener
 * on every ServerResponse made V8 keep (pretenure) the whole per-request object graph in the old generation —
 * under a c=50 load, 15 mark-compacts in 6 s instead of 0–1 and ~9 ms of GC per 1,000 requests instead of ~1–2,
 * 44 → 33 µs CPU per request (bench/README.md, "Node hot path"). A socket carries the responses of its requests
 * one after the other (several only with pipelining), so the socket's list of subscribed signals is short.
 *
 * It is not a real `AbortSignal`: it has what the forwarders use (`aborted`, `reason`, `throwIfAborted()`,
 * `addEventListener`/`removeEventListener` of `abort` with a function or a `handleEvent` object). Never hand it to
 * `fetch()` or `AbortSignal.any()`.
 */
export function clientSignal(incoming: ClientGoneRequest, outgoing: ClientGoneResponse): AbortSignal {
  return new ClientGone(incoming, outgoing) as unknown as AbortSignal;
}

/** The parts of the connection a {@link ClientGone} uses. */
interface ClientGoneSocket {
  readonly destroyed: boolean;
  once(event: 'close', fn: () => void): unknown;
  [WATCHERS]?: ClientGone[];
}

interface ClientGoneRequest {
  readonly errored?: unknown;
  readonly socket: ClientGoneSocket | null;
}

interface ClientGoneResponse {
  readonly writableFinished: boolean;
}

type AbortListener = ((ev: { type: string }) => void) | { handleEvent(ev: { type: string }): void };

/** Per socket: the signals of its requests that have listeners (one `close` listener per socket serves them all). */
const WATCHERS: unique symbol = Symbol('fngate.clientGone');

function watchSocket(socket: ClientGoneSocket, signal: ClientGone): void {
  let list = socket[WATCHERS];
  if (list === undefined) {
    list = [];
    socket[WATCHERS] = list;
    socket.once('close', () => {
      const watching = socket[WATCHERS]!;
      socket[WATCHERS] = [];
      for (const s of watching) s.closed();
    });
  }
  list.push(signal);
}

function unwatchSocket(socket: ClientGoneSocket, signal: ClientGone): void {
  const list = socket[WATCHERS];
  if (list === undefined) return;
  removeFrom(list, signal);
}

/**
 * Removes `item` from an unordered list: the last element takes its place (no `splice`, which allocates the array of
 * removed elements: each request unsubscribes once). The order of a socket's watchers does not matter (the requests
 * on one connection are told together).
 */
function removeFrom<T>(list: T[], item: T): void {
  const last = list.length - 1;
  if (last >= 0 && list[last] === item) {
    list.pop();
    return;
  }
  const i = list.indexOf(item);
  if (i !== -1) {
    list[i] = list[last]!;
    list.pop();
  }
}

class ClientGone {
  aborted = false;
  reason: unknown = undefined;
  private listeners: AbortListener[] | null = null;
  private socket: ClientGoneSocket | null = null;

  constructor(
    private readonly incoming: ClientGoneRequest,
    private readonly outgoing: ClientGoneResponse,
  ) {}

  throwIfAborted(): void {
    if (this.aborted) throw this.reason;
  }

  addEventListener(type: string, listener: AbortListener | null | undefined): void {
    if (type !== 'abort' || !listener || this.aborted) return;
    if (this.listeners === null) this.listeners = [listener];
    else if (!this.listeners.includes(listener)) this.listeners.push(listener);
    if (this.socket === null) {
      const socket = this.incoming.socket;
      if (socket === null || socket.destroyed) {
        // Already gone: its `close` has fired (or is about to); report it once the caller finished subscribing.
        queueMicrotask(() => this.closed());
        return;
      }
      this.socket = socket;
      watchSocket(socket, this);
    }
  }

  removeEventListener(type: string, listener: AbortListener | null | undefined): void {
    if (type !== 'abort' || this.listeners === null) return;
    // In order (an AbortSignal calls its listeners in the order they were added); the only one is the usual case.
    const listeners = this.listeners;
    const i = listeners.lastIndexOf(listener as AbortListener);
    if (i === listeners.length - 1) listeners.pop();
    else if (i !== -1) listeners.splice(i, 1);
    if (listeners.length === 0 && this.socket !== null) {
      unwatchSocket(this.socket, this);
      this.socket = null;
    }
  }

  /** The connection closed: abort, unless this request's response had already been sent in full. */
  closed(): void {
    this.socket = null;
    if (this.aborted || (this.outgoing.writableFinished && !this.incoming.errored)) return;
    this.aborted = true;
    this.reason = new DOMException('The client went away before the response was complete', 'AbortError');
    const listeners = this.listeners ?? [];
    this.listeners = null;
    const event = { type: 'abort', target: this };
    for (const l of listeners) {
      if (typeof l === 'function') l.call(this, event);
      else l.handleEvent(event);
    }
  }
}

/** Feeds a WHATWG request body to undici as an async iterable; `release()` lets go of it without cancelling. */
class BodySource implements AsyncIterableIterator<Uint8Array> {
  readonly reader: ReadableStreamDefaultReader<Uint8Array>;
  constructor(stream: ReadableStream<Uint8Array>) {
    this.reader = stream.getReader();
  }
  [Symbol.asyncIterator](): this {
    return this;
  }
  next(): Promise<IteratorResult<Uint8Array>> {
    return this.reader.read() as Promise<IteratorResult<Uint8Array>>;
  }
  return(): Promise<IteratorResult<Uint8Array>> {
    this.release();
    return Promise.resolve({ done: true, value: undefined });
  }
  /**
   * Releasing (not cancelling) leaves the downstream request body to the HTTP layer: cancelling it would
   * make @hono/node-server destroy the client socket before the gateway could answer (e.g. a 502). A pending
   * read rejects, which ends undici's write loop.
   */
  release(): void {
    this.reader.releaseLock();
  }
}

/**
 * One upstream exchange: undici dispatch handler, underlying source of the response body stream and
 * listener of the downstream abort signal at once.
 */
class Exchange implements Dispatcher.DispatchHandler, UnderlyingDefaultSource<Uint8Array> {
  readonly promise: Promise<Response>;
  private resolve!: (res: Response) => void;
  private reject!: (err: UpstreamError) => void;
  private phase: Phase = WAITING;
  private connected = false;
  private abortUpstream: AbortUpstream | null = null;
  private pendingAbort: UpstreamError | null = null;
  timer: ReturnType<typeof setTimeout> | undefined = undefined;
  private status = 0;
  private headers: ResponseHeaders | null = null;
  private chunks: Buffer[] | null = null;
  private controller: ReadableStreamDefaultController<Uint8Array> | null = null;
  private resumeUpstream: (() => void) | null = null;
  private paused = false;
  /** From the connect until the request's last byte is written, when a send timeout applies. */
  private sending = false;
  private armedMs = 0;

  constructor(
    private readonly method: string,
    readonly timeout: number,
    /** The connect and send timeouts, ms; 0 when the request has none. */
    private readonly connectTimeout: number,
    private readonly sendTimeout: number,
    private readonly signal: AbortSignal | undefined,
    private readonly body: BodySource | null,
    private readonly bufferLimit: number,
    private readonly highWaterMark: number,
  ) {
    this.promise = new Promise<Response>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }

  // ---- undici handler (callback API) ----

  onConnect(abort: AbortUpstream): void {
    if (this.pendingAbort) {
      abort(this.pendingAbort);
      return;
    }
    this.abortUpstream = abort;
    this.connected = true;
    // Separate timeouts: from here the gaps between the request's writes are timed, then the wait for the answer.
    if (this.phase === WAITING && (this.connectTimeout > 0 || this.sendTimeout > 0)) {
      this.sending = true;
      this.arm(this.sendTimeout || this.timeout);
    }
  }

  onBodySent(): void {
    // A request body that keeps flowing restarts the deadline (see the module comment).
    if (this.phase === WAITING) this.timer?.refresh();
  }

  onRequestSent(): void {
    if (!this.sending || this.phase !== WAITING) return;
    this.sending = false;
    this.arm(this.timeout);
  }

  /** (Re)starts the deadline: `ms` from now (the same timer refreshed when its duration is unchanged: no allocation). */
  arm(ms: number): void {
    if (ms === this.armedMs && this.timer !== undefined) {
      this.timer.refresh();
      return;
    }
    clearTimeout(this.timer);
    this.armedMs = ms;
    this.timer = ms > 0 ? setTimeout(onDeadline, ms, this) : undefined;
  }

  /** Why the deadline ran out, by the phase the exchange is in. */
  deadlineError(): UpstreamError {
    if (!this.connected && this.connectTimeout > 0) {
      return new UpstreamError('connect-timeout', `upstream timed out while connecting (connect timeout ${this.connectTimeout} ms)`);
    }
    if (this.sending) {
      const ms = this.sendTimeout || this.timeout;
      return new UpstreamError('timeout', `upstream timed out while sending the request (no write for ${ms} ms)`);
    }
    return new UpstreamError('timeout', `no response headers from upstream within ${this.timeout} ms`);
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    if (statusCode < 200) return true; // 1xx informational (103 Early Hints): skip, wait for the final answer
    if (this.phase !== WAITING) return false;
    clearTimeout(this.timer);
    // A WHATWG Response only takes 200–599; throwing makes undici abort and call onError (→ protocol).
    if (statusCode > 599) throw new RangeError(`invalid response status ${statusCode}`);
    const headers = responseHeaders(rawHeaders);
    if (this.method === 'HEAD' || statusCode === 204 || statusCode === 205 || statusCode === 304) {
      this.settle(newResponse(null, statusCode, headers));
      return true;
    }
    this.status = statusCode;
    this.headers = headers;
    this.resumeUpstream = resume;
    this.chunks = [];
    this.phase = BUFFERING;
    if (this.bufferLimit <= 0) {
      this.startStreaming();
      return true;
    }
    const cl = headers instanceof Headers ? headers.get('content-length') : headers['content-length'];
    // Small and of known length: resolve with the bytes once complete (onComplete).
    if (cl != null && smallLength(cl) <= this.bufferLimit) return true;
    // Otherwise decide once undici is done with the socket read that carried the headers (it parses a
    // read synchronously): a body that already ended in it is returned as bytes, anything else streams.
    queueMicrotask(() => this.startStreaming());
    return true;
  }

  onData(chunk: Buffer): boolean {
    if (this.phase === STREAMING) {
      const controller = this.controller!;
      controller.enqueue(chunk);
      if (controller.desiredSize! <= 0) {
        this.paused = true;
        return false; // pauses undici's parser and socket until pull()
      }
    } else if (this.phase === BUFFERING) {
      this.chunks!.push(chunk);
    }
    return true;
  }

  onComplete(): void {
    const phase = this.phase;
    if (phase === STREAMING) {
      this.phase = DONE;
      this.cleanup();
      this.controller!.close();
    } else if (phase === BUFFERING) {
      const chunks = this.chunks!;
      this.chunks = null;
      // undici hands out views of the socket's read buffers, which Node never reuses: safe to keep.
      const body = (chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)) as Uint8Array<ArrayBuffer>;
      this.settle(newResponse(body.byteLength > 0 ? body : null, this.status, this.headers!));
    } else if (phase === WAITING) {
      // Cannot happen (onHeaders comes first); never leave the promise pending.
      this.fail(new UpstreamError('protocol', 'upstream response ended without headers'));
    }
  }

  private startStreaming(): void {
    if (this.phase !== BUFFERING) return; // completed (bytes), failed or aborted meanwhile
    // The stream's constructor calls start() synchronously, which sets this.controller.
    const body = new ReadableStream<Uint8Array>(this, { highWaterMark: this.highWaterMark, size: byteLength });
    const response = newResponse(body, this.status, this.headers!);
    const chunks = this.chunks!;
    this.chunks = null;
    this.headers = null;
    this.phase = STREAMING;
    // At most one socket read (≤ 64 KiB) is queued here; the next onData applies backpressure.
    for (const chunk of chunks) this.controller!.enqueue(chunk);
    this.resolve(response);
  }

  onError(err: Error): void {
    const phase = this.phase;
    if (phase === DONE) return; // we aborted it ourselves, or it is already settled
    this.phase = DONE;
    this.cleanup();
    if (phase === STREAMING) {
      this.controller!.error(classifyInBody(err, this.signal));
    } else if (phase === BUFFERING) {
      this.reject(classifyInBody(err, this.signal));
    } else {
      this.reject(classifyBeforeHeaders(err, this.connected, this.signal));
    }
  }

  // ---- ReadableStream underlying source ----

  start(controller: ReadableStreamDefaultController<Uint8Array>): void {
    this.controller = controller;
  }

  pull(): void {
    if (this.paused) {
      this.paused = false;
      this.resumeUpstream!();
    }
  }

  cancel(reason?: unknown): void {
    if (this.phase !== STREAMING) return;
    this.phase = DONE;
    this.cleanup();
    // Destroys the upstream socket; the onError that follows is ignored (phase is DONE).
    this.abortUpstream!(new UpstreamError('aborted', 'response body cancelled', { cause: reason }));
  }

  // ---- AbortSignal listener ----

  handleEvent(): void {
    this.abortWith(new UpstreamError('aborted', 'downstream client went away', { cause: this.signal?.reason }), true);
  }

  // ---- internals ----

  /** Our own abort (deadline or signal), in any phase before DONE. */
  abortWith(err: UpstreamError, bySignal = false): void {
    const phase = this.phase;
    if (phase === DONE) return;
    this.phase = DONE;
    this.cleanup();
    if (this.abortUpstream) this.abortUpstream(err);
    else this.pendingAbort = err; // not on a socket yet: onConnect aborts it before anything is written
    if (phase !== STREAMING) this.reject(err);
    else if (bySignal) {
      // The client is gone. @hono/node-server cancels the body on the same 'close' event (right after the
      // signal fires) and would console.error an error it sees first; error the stream a macrotask later,
      // so only a consumer that is still reading gets it (a no-op once the stream was cancelled).
      setImmediate(errorStream, this.controller!, err);
    } else this.controller!.error(err);
  }

  private settle(response: Response): void {
    this.phase = DONE;
    this.cleanup();
    this.resolve(response);
  }

  private fail(err: UpstreamError): void {
    this.phase = DONE;
    this.cleanup();
    this.reject(err);
  }

  private cleanup(): void {
    clearTimeout(this.timer);
    this.signal?.removeEventListener('abort', this);
    this.body?.release();
  }
}

/** A finite duration above 0, else 0 (none). */
function positive(ms: number | undefined): number {
  return ms !== undefined && Number.isFinite(ms) && ms > 0 ? ms : 0;
}

/** `scheme://authority` (memoised, normalised through URL) and `path?query` of an absolute URL. */
const originCache = new Map<string, string>();

function splitUrl(url: string): { origin: string; path: string } {
  const authority = url.indexOf('://') + 3;
  if (authority < 3) throw new TypeError(`not an absolute URL: ${url}`);
  let end = url.length;
  for (let i = authority; i < url.length; i++) {
    const c = url.charCodeAt(i);
    if (c === 47 /* / */ || c === 63 /* ? */ || c === 35 /* # */) {
      end = i;
      break;
    }
  }
  const raw = url.slice(0, end);
  let origin = originCache.get(raw);
  if (origin === undefined) {
    const parsed = new URL(raw);
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
      throw new TypeError(`unsupported upstream scheme ${parsed.protocol}`);
    }
    if (parsed.username || parsed.password) throw new TypeError('credentials in the upstream URL are not supported');
    origin = parsed.origin;
    if (originCache.size >= 1024) originCache.clear();
    originCache.set(raw, origin);
  }
  let path = url.slice(end);
  const hash = path.indexOf('#');
  if (hash !== -1) path = path.slice(0, hash);
  if (path === '') path = '/';
  else if (path.charCodeAt(0) === 63 /* ? */) path = `/${path}`;
  return { origin, path };
}

export function createNodeForwarder(options: NodeForwarderOptions = {}): NodeForwarder {
  const connectTimeout = options.connectTimeout ?? 10_000;
  const defaultConnections = options.defaultConnections ?? null;
  const bufferLimit = options.bufferLimit ?? DEFAULT_BUFFER_LIMIT;
  const highWaterMark = options.highWaterMark ?? 64 * 1024;
  /** One Agent (hence one Pool per origin) per distinct TLS-verify × keepalive setting, made on first use. */
  const agents = new Map<string, Agent>();
  let closed = false;

  /**
   * Agents that present a client certificate (upstream `tls`): one per certificate identity × setting, cached, at
   * most {@link MAX_CERT_AGENTS} (the oldest is closed when more are needed: a config that keeps changing its
   * certificates must not keep every old TLS context and pool open).
   */
  const certAgents = new Map<string, Agent>();

  function agentFor(
    tlsVerify: boolean,
    keepalive: ForwardRequest['keepalive'],
    connectMs: number,
    clientCert?: ClientCert,
  ): Agent {
    // `keepalive_pool` is, in APISIX (ngx_http_upstream_keepalive), the number of *idle* connections kept per
    // pool, never a cap on concurrent ones. undici's Pool has no idle-count limit, only `connections` (a hard
    // cap that queues requests beyond it: with APISIX's default of 5 that throttled a c=50 load to 5 upstream
    // connections). So the pool size does not limit anything here; idle connections are closed after
    // `keepalive_timeout` instead (documented in docs/apisix-compatibility.md). Without keepalive the pool
    // numbers are irrelevant: every request gets its own connection (`reset`).
    // The connect timeout is the pool's (undici's `connect.timeout`): one Agent per value, as for keep-alive.
    // `keepalive_pool.requests` (nginx `keepalive_requests`): a connection is closed after that many requests.
    // undici's `maxRequestsPerClient` lets a connection carry one request more than it says (it marks the socket for
    // closing once it has *sent* that many before the current one), so it gets N - 1; N = 1 is `reset` (below).
    const maxRequests = keepalive.enabled && (keepalive.maxRequests ?? 0) > 1 ? keepalive.maxRequests! : 0;
    const base = keepalive.enabled
      ? `${tlsVerify ? 'v' : 'n'}:${keepalive.idleTimeoutMs}${maxRequests > 0 ? `:r${maxRequests}` : ''}`
      : tlsVerify ? 'v' : 'n';
    const key = connectMs > 0 ? `${base}:c${connectMs}` : base;
    if (clientCert !== undefined) {
      const certKey = `${key}\n${clientCert.id}`;
      let agent = certAgents.get(certKey);
      if (agent === undefined) {
        if (certAgents.size >= MAX_CERT_AGENTS) {
          const [oldestKey, oldest] = certAgents.entries().next().value!;
          certAgents.delete(oldestKey);
          void oldest.close();
        }
        agent = makeAgent(tlsVerify, keepalive, connectMs, maxRequests, clientCert);
        certAgents.set(certKey, agent);
      }
      return agent;
    }
    let agent = agents.get(key);
    if (agent === undefined) {
      agent = makeAgent(tlsVerify, keepalive, connectMs, maxRequests, undefined);
      agents.set(key, agent);
    }
    return agent;
  }

  function makeAgent(
    tlsVerify: boolean,
    keepalive: ForwardRequest['keepalive'],
    connectMs: number,
    maxRequests: number,
    clientCert: ClientCert | undefined,
  ): Agent {
    const { idleTimeoutMs } = keepalive;
    // Non-positive or non-finite numbers fall back to undici's idle timeout (4 s).
    const idle = keepalive.enabled && Number.isFinite(idleTimeoutMs) && idleTimeoutMs > 0 ? idleTimeoutMs : undefined;
    // undici times a connect with its coarse "fast timers" (a ~500 ms tick: measured firing a 700 ms timeout at
    // ~580 ms), so the request's own precise deadline is the one that acts; undici's, a second later, only
    // makes sure the socket attempt itself is abandoned.
    const connect = connectMs > 0 ? connectMs + 1000 : connectTimeout;
    return new Agent({
      connections: defaultConnections,
      // The idle timeout; a server's `Keep-Alive: timeout=` hint may shorten it but never lengthen it.
      keepAliveTimeout: idle,
      keepAliveMaxTimeout: idle,
      ...(maxRequests > 0 ? { maxRequestsPerClient: maxRequests - 1 } : {}),
      maxResponseSize: options.maxResponseSize ?? -1,
      ...(options.maxHeaderSize !== undefined ? { maxHeaderSize: options.maxHeaderSize } : {}),
      connect: {
        timeout: connect,
        ...(tlsVerify ? {} : { rejectUnauthorized: false }),
        ...(clientCert ? { cert: clientCert.cert, key: clientCert.key } : {}),
      },
    });
  }

  const forward = (req: ForwardRequest): Promise<Response> => {
    if (closed) return Promise.reject(new UpstreamError('connect', 'the forwarder is closed'));
    const signal = req.clientSignal?.(); // cheap on Node (clientSignal below): asked for at once
    if (signal?.aborted) {
      return Promise.reject(new UpstreamError('aborted', 'downstream client went away', { cause: signal.reason }));
    }
    let target: { origin: string; path: string };
    try {
      target = splitUrl(req.url);
    } catch (err) {
      return Promise.reject(new UpstreamError('connect', `invalid upstream URL: ${req.url}`, { cause: err }));
    }

    const headers: string[] = [];
    const hasBody = req.body !== null;
    for (const [name, value] of req.headers) {
      // Without a body a stray content-length would make the upstream wait for bytes that never come.
      if (!DROP_REQUEST_HEADERS.has(name) && (hasBody || name !== 'content-length')) headers.push(name, value);
    }
    // undici sends a given `host` header verbatim (and derives the TLS SNI from it, as APISIX's
    // proxy_ssl_name $upstream_host does); without one it derives Host from the origin.
    if (req.hostHeader) headers.push('host', req.hostHeader);

    const timeout = positive(req.timeout);
    const connectMs = positive(req.connectTimeout);
    const body = req.body ? new BodySource(req.body) : null;
    const ex = new Exchange(req.method, timeout, connectMs, positive(req.sendTimeout), signal, body, bufferLimit, highWaterMark);
    // Until the socket is connected: the connect timeout when there is one, else the whole `timeout`.
    ex.arm(connectMs || timeout);
    signal?.addEventListener('abort', ex);

    const opts: Dispatcher.DispatchOptions = {
      origin: target.origin,
      path: target.path,
      method: req.method,
      headers,
      // undici writes any (async) iterable body chunk by chunk, chunked unless a content-length was given.
      body: body as unknown as Dispatcher.DispatchOptions['body'],
      headersTimeout: timeout,
      bodyTimeout: timeout,
    };
    // `reset` makes undici send `connection: close` and drop the socket after the response.
    if (!req.keepalive.enabled || req.keepalive.maxRequests === 1) opts.reset = true;
    try {
      // undici reports its errors, even synchronous ones (invalid method or header), through ex.onError.
      agentFor(req.tlsVerify, req.keepalive, connectMs, req.clientCert).dispatch(opts, ex);
    } catch (err) {
      ex.onError(err as Error); // e.g. undici refusing the dispatcher options
    }
    return ex.promise;
  };

  const close = async (): Promise<void> => {
    closed = true;
    const all = [...agents.values(), ...certAgents.values()];
    agents.clear();
    certAgents.clear();
    await Promise.all(all.map((agent) => agent.close()));
  };

  return Object.assign(forward, { close });
}

/**
 * The proxy port's request listener on Node (plain HTTP/1.1; the TLS/HTTP/2 port and the Admin, status and metrics
 * ports stay on @hono/node-server): node:http's request → a light WHATWG `Request` for the core → the core's
 * `Response` written with `writeHead()` + `end()`.
 *
 * Why not @hono/node-server's listener here: per proxied request it builds its lazy Request (`buildUrl`'s regular
 * expressions, a headers view that reads `incoming.headers`), runs an `async` listener and an `async`
 * `responseViaCache` (two promises), and adds a `close` listener to every response that is answered asynchronously,
 * all of which the proxy does not need (bench/README.md, "Node hot path"). What it does for us is kept, rule for
 * rule: the URL as it builds it (a path with dot segments or unusual characters normalised by `URL`, a backslash in
 * the path 400, an absolute-form target as given), Content-Length added to a body of known length, a
 * `text/plain; charset=UTF-8` Content-Type where it adds one, streams written with backpressure and cancelled when the
 * client goes away, an error mid-body destroying the connection, a fetch error 500, and an unread upload drained for
 * at most 500 ms / 64 MiB once the answer is out, then the connection closed.
 *
 * The light Request has `method`, `url` and `headers` (`get`/`has` read the raw header lines; anything else turns
 * them into a real `Headers` once), `body` (a stream over the IncomingMessage, made on first use, none for GET and
 * HEAD: GatewayOptions.getBody forwards a GET's), `signal` (made on first use), and builds a real `Request` for
 * anything else (`clone()`, `text()`, ...). The Response is written from @hono/node-server's own light Response
 * (its status, body and header record as they were given, the record untouched), so a forwarder's plain header
 * record and bytes go to `writeHead()`/`end()` as they are (node-forwarder.ts); any other Response through its
 * public API.
 */
import type { IncomingMessage, OutgoingHttpHeaders, RequestListener, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { getRequestListener, type HttpBindings } from '@hono/node-server';

export type ProxyFetch = (req: Request, env: HttpBindings) => Response | Promise<Response>;

const DEFAULT_CONTENT_TYPE = 'text/plain; charset=UTF-8';
/** An unread upload is drained this long / this far after the answer, then the connection is closed (as @hono/node-server). */
const DRAIN_TIMEOUT_MS = 500;
const MAX_DRAIN_BYTES = 64 * 1024 * 1024;

/**
 * @hono/node-server's light `Response` keeps `[status, body, headers]` under a symbol of its own until something
 * reads `body` or `headers`. Its listener installs that class as the global `Response` (also for the forwarders and
 * the core's error answers); doing it here too makes the proxy port's answers cheap whichever other port starts first.
 * The symbol is found by its description; undefined if a later @hono/node-server has no such field (then every
 * answer goes through the public API, correct but slower).
 */
function honoCacheSymbol(): symbol | undefined {
  getRequestListener(() => new Response(null));
  return Object.getOwnPropertySymbols(new Response(null)).find((s) => s.description === 'cache');
}

// ---- the Request ----

/** RFC 3986 path characters @hono/node-server lets through without a URL round trip, and its dot-segment check. */
const PLAIN_TARGET = /^\/[!#$&-;=?-[\]_a-z~]*$/;
const DOT_SEGMENT = /\/\.\.?(?:[/?#]|$)/;
const PLAIN_HOST = /^[a-z0-9._-]+(?::(?:[1-5]\d{3,4}|[6-9]\d{3}))?$/;

class RequestRefused extends Error {}

function noBackslashInPath(target: string): void {
  const backslash = target.indexOf('\\');
  if (backslash !== -1) {
    const query = target.indexOf('?');
    if (query === -1 || backslash < query) throw new RequestRefused('backslash in the request path');
  }
}

/** The request's URL, as @hono/node-server's `newRequest`/`buildUrl` makes it (throws RequestRefused: 400). */
export function requestUrl(target: string, host: string | undefined, scheme: string): string {
  if (target.charCodeAt(0) !== 47 /* / */ && (target.startsWith('http://') || target.startsWith('https://'))) {
    noBackslashInPath(target);
    try {
      return new URL(target).href;
    } catch {
      throw new RequestRefused('invalid absolute URL');
    }
  }
  if (!host) throw new RequestRefused('missing host');
  const url = `${scheme}://${host}${target}`;
  if (!PLAIN_HOST.test(host)) {
    noBackslashInPath(target);
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new RequestRefused('invalid URL');
    }
    if (
      parsed.hostname.length !== host.length &&
      parsed.hostname !== (host.includes(':') ? host.replace(/:\d+$/, '') : host).toLowerCase()
    ) {
      throw new RequestRefused('invalid host header');
    }
    return parsed.href;
  }
  if (target.length === 0) return `${url}/`;
  if (target.charCodeAt(0) !== 47) throw new RequestRefused('invalid URL');
  if (!PLAIN_TARGET.test(target) || DOT_SEGMENT.test(target)) {
    noBackslashInPath(target);
    try {
      return new URL(url).href;
    } catch {
      throw new RequestRefused('invalid URL');
    }
  }
  return url;
}

/** The first `Host` line of a raw header list (node:http's `headers.host` keeps the first one too). */
function rawHost(raw: readonly string[]): string | undefined {
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 4 && name.toLowerCase() === 'host') return raw[i + 1];
  }
  return undefined;
}

/**
 * The request's headers: `get`/`has` read node:http's raw lines (repeated names joined as `Headers` joins them:
 * `; ` for Cookie, `, ` otherwise); everything else, and any change, works on a real `Headers` made once from them.
 */
class RawRequestHeaders {
  #raw: readonly string[];
  #native: Headers | undefined;

  constructor(raw: readonly string[]) {
    this.#raw = raw;
  }

  get #headers(): Headers {
    if (this.#native === undefined) {
      const h = new Headers();
      const raw = this.#raw;
      for (let i = 0; i + 1 < raw.length; i += 2) h.append(raw[i]!, raw[i + 1]!);
      this.#native = h;
    }
    return this.#native;
  }

  get(name: string): string | null {
    if (this.#native !== undefined) return this.#native.get(name);
    const lower = name.toLowerCase();
    const raw = this.#raw;
    let value: string | null = null;
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const n = raw[i]!;
      if (n.length === lower.length && n.toLowerCase() === lower) {
        value = value === null ? raw[i + 1]! : `${value}${lower === 'cookie' ? '; ' : ', '}${raw[i + 1]!}`;
      }
    }
    return value;
  }

  has(name: string): boolean {
    return this.get(name) !== null;
  }

  set(name: string, value: string): void {
    this.#headers.set(name, value);
  }

  append(name: string, value: string): void {
    this.#headers.append(name, value);
  }

  delete(name: string): void {
    this.#headers.delete(name);
  }

  getSetCookie(): string[] {
    return this.#headers.getSetCookie();
  }

  forEach(fn: (value: string, name: string, parent: Headers) => void, thisArg?: unknown): void {
    this.#headers.forEach((value, name) => {
      fn.call(thisArg, value, name, this as unknown as Headers);
    });
  }

  keys(): HeadersIterator<string> {
    return this.#headers.keys();
  }

  values(): HeadersIterator<string> {
    return this.#headers.values();
  }

  entries(): HeadersIterator<[string, string]> {
    return this.#headers.entries();
  }

  [Symbol.iterator](): HeadersIterator<[string, string]> {
    return this.#headers.entries();
  }
}

/**
 * The request body as a WHATWG stream, its Node side made on the first read only: creating it reads the socket
 * (which sends `100 Continue`, node-http.ts), so a request answered without reading its body (404, 413 on its
 * Content-Length) never asks the client for it.
 */
function bodyOf(incoming: IncomingMessage): ReadableStream<Uint8Array> {
  let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        reader ??= (Readable.toWeb(incoming) as ReadableStream<Uint8Array>).getReader();
        const { done, value } = await reader.read();
        if (done) controller.close();
        else controller.enqueue(value);
      } catch (err) {
        controller.error(err);
      }
    },
    // No cancel(): as @hono/node-server's, a cancelled body leaves the socket to node:http and to the bounded drain
    // after the answer (drainIncoming); destroying the IncomingMessage here left the connection open and unread.
  });
}

const INCOMING: unique symbol = Symbol('fngate.incoming');
const OUTGOING: unique symbol = Symbol('fngate.outgoing');

/** The light `Request` (see the file's comment); `instanceof Request` holds. */
class NodeRequest {
  readonly method: string;
  readonly url: string;
  [INCOMING]: IncomingMessage;
  [OUTGOING]: ServerResponse;
  #headers: RawRequestHeaders | undefined;
  #body: ReadableStream<Uint8Array> | null | undefined;
  #controller: AbortController | undefined;
  #real: Request | undefined;

  constructor(method: string, url: string, incoming: IncomingMessage, outgoing: ServerResponse) {
    this.method = method;
    this.url = url;
    this[INCOMING] = incoming;
    this[OUTGOING] = outgoing;
  }

  get headers(): Headers {
    this.#headers ??= new RawRequestHeaders(this[INCOMING].rawHeaders);
    return this.#headers as unknown as Headers;
  }

  get body(): ReadableStream<Uint8Array> | null {
    if (this.#real !== undefined) return this.#real.body;
    if (this.#body === undefined) {
      const m = this.method;
      this.#body = m === 'GET' || m === 'HEAD' ? null : bodyOf(this[INCOMING]);
    }
    return this.#body;
  }

  get bodyUsed(): boolean {
    return this.#real !== undefined ? this.#real.bodyUsed : this.#body?.locked === true;
  }

  /** Aborted when the client's connection closes before the answer was finished (as @hono/node-server's). */
  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      const controller = new AbortController();
      this.#controller = controller;
      const { [INCOMING]: incoming, [OUTGOING]: outgoing } = this;
      if (outgoing.destroyed && !outgoing.writableFinished) controller.abort(new Error('Client connection prematurely closed.'));
      else {
        outgoing.once('close', () => {
          if (incoming.errored) controller.abort(incoming.errored.toString());
          else if (!outgoing.writableFinished) controller.abort('Client connection prematurely closed.');
        });
      }
    }
    return this.#controller.signal;
  }

  /** A real `Request` with this one's method, URL, headers, body and signal, for what the light one does not do. */
  real(): Request {
    if (this.#real === undefined) {
      const body = this.body;
      // undici's Request refuses TRACE (a forbidden method); @hono/node-server builds it as a GET and says TRACE.
      const trace = this.method === 'TRACE';
      const init: RequestInit & { duplex?: 'half' } = {
        method: trace ? 'GET' : this.method,
        headers: this.headers,
        signal: this.signal,
      };
      if (body !== null && !trace) {
        init.body = body;
        init.duplex = 'half';
      }
      const req = new Request(this.url, init);
      if (trace) Object.defineProperty(req, 'method', { get: () => 'TRACE' });
      this.#real = req;
    }
    return this.#real;
  }
}

for (const key of ['cache', 'credentials', 'destination', 'duplex', 'integrity', 'mode', 'redirect', 'referrer', 'referrerPolicy', 'keepalive']) {
  Object.defineProperty(NodeRequest.prototype, key, {
    get(this: NodeRequest) {
      return (this.real() as unknown as Record<string, unknown>)[key];
    },
  });
}
for (const key of ['clone', 'text', 'json', 'arrayBuffer', 'blob', 'formData', 'bytes']) {
  Object.defineProperty(NodeRequest.prototype, key, {
    value(this: NodeRequest) {
      const real = this.real() as unknown as Record<string, () => unknown>;
      return real[key]!.call(real);
    },
  });
}

// ---- the answer ----

type Body = null | string | Uint8Array | Blob | ReadableStream<Uint8Array>;

/** Blank the Content-Length node:http would compute, as @hono/node-server's `trySetContentLength`. */
interface ServerResponseInternals {
  _contentLength: number | null;
  _hasBody: boolean;
  useChunkedEncodingByDefault: boolean;
  _removedContLen: boolean;
}

/**
 * Tells node:http the body's length without adding it to `headers` (a record the answer may share with others, such
 * as the core's JSON error headers), where node:http would otherwise compute none.
 */
function trySetContentLength(outgoing: ServerResponse, status: number, length: number): boolean {
  const o = outgoing as unknown as ServerResponseInternals;
  if (
    o._contentLength === null &&
    o._hasBody &&
    o.useChunkedEncodingByDefault &&
    !o._removedContLen &&
    status >= 200 &&
    status !== 204 &&
    status !== 304 &&
    !outgoing.hasHeader('content-length') &&
    !outgoing.hasHeader('transfer-encoding') &&
    !outgoing.hasHeader('trailer')
  ) {
    o._contentLength = length;
    return true;
  }
  return false;
}

/** A `Headers` as a record for `writeHead()`: Set-Cookie lines kept apart, a default Content-Type for a body. */
function recordOf(headers: Headers, withBody: boolean): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  headers.forEach((value, name) => {
    if (name !== 'set-cookie') out[name] = value;
  });
  const cookies = headers.getSetCookie();
  if (cookies.length > 0) out['set-cookie'] = cookies;
  if (withBody && out['content-type'] === undefined) out['content-type'] = DEFAULT_CONTENT_TYPE;
  return out;
}

function knownLength(body: Body): number | undefined {
  if (typeof body === 'string') return Buffer.byteLength(body);
  if (body instanceof Uint8Array) return body.byteLength;
  if (body instanceof Blob) return body.size;
  return undefined;
}

/**
 * Writes status, headers and body. `header` is what the Response was made with: a plain record (written as it is,
 * never modified), a `Headers`, a list of pairs, or nothing. Resolves (a stream or Blob body) or returns once done.
 */
function writeParts(
  outgoing: ServerResponse,
  status: number,
  body: Body,
  header: HeadersInit | Headers | undefined,
): Promise<void> | undefined {
  let head: OutgoingHttpHeaders;
  let hasContentLength = false;
  let plain = false;
  let canAutoLength = true;
  if (header === undefined || header === null) {
    head = body === null ? {} : { 'content-type': DEFAULT_CONTENT_TYPE };
  } else if (header instanceof Headers || Array.isArray(header)) {
    const h = header instanceof Headers ? header : new Headers(header);
    hasContentLength = h.has('content-length');
    head = recordOf(h, body !== null);
  } else {
    plain = true;
    head = header as OutgoingHttpHeaders;
    for (const key in head) {
      const n = key.length;
      if (n === 14 && key.toLowerCase() === 'content-length') {
        hasContentLength = true;
        break;
      }
      if ((n === 17 && key.toLowerCase() === 'transfer-encoding') || (n === 7 && key.toLowerCase() === 'trailer')) canAutoLength = false;
    }
  }
  if (!hasContentLength) {
    const length = knownLength(body);
    if (length !== undefined && (!plain || !canAutoLength || !trySetContentLength(outgoing, status, length))) {
      if (plain) head = { ...head };
      head['content-length'] = length;
    }
  }
  outgoing.writeHead(status, head);
  if (body === null) {
    outgoing.end();
    return undefined;
  }
  if (typeof body === 'string' || body instanceof Uint8Array) {
    outgoing.end(body);
    return undefined;
  }
  if (body instanceof Blob) return body.arrayBuffer().then((b) => void outgoing.end(new Uint8Array(b)));
  if (outgoing.writable) outgoing.flushHeaders();
  return pipeBody(body, outgoing);
}

/**
 * A stream body into the response with backpressure. The client gone (`close`) or the response failing cancels the
 * stream (which aborts the function call); a stream that errors destroys the connection, so the client sees a cut
 * answer rather than a complete-looking one.
 */
function pipeBody(body: ReadableStream<Uint8Array>, outgoing: ServerResponse): Promise<void> {
  if (body.locked) return Promise.reject(new TypeError('ReadableStream is locked.'));
  const reader = body.getReader();
  if (outgoing.destroyed) {
    reader.cancel().catch(() => {});
    return Promise.resolve();
  }
  const cancel = (err?: unknown) => void reader.cancel(err).catch(() => {});
  outgoing.on('close', cancel);
  outgoing.on('error', cancel);
  const failed = (err: unknown) => {
    if (err) outgoing.destroy(err as Error);
  };
  const next = (): void => void reader.read().then(flow, failed);
  const flow = ({ done, value }: ReadableStreamReadResult<Uint8Array>): void => {
    try {
      if (done) outgoing.end();
      else if (!outgoing.write(value)) outgoing.once('drain', next);
      else next();
    } catch (err) {
      failed(err);
    }
  };
  next();
  return reader.closed.finally(() => {
    outgoing.off('close', cancel);
    outgoing.off('error', cancel);
  });
}

/** An unexpected failure writing the answer (an invalid header value, a stream that errors): logged, 500 or cut. */
function writeFailed(err: unknown, outgoing: ServerResponse): void {
  const e = err instanceof Error ? err : new Error('unknown error', { cause: err });
  if ((e as { code?: string }).code === 'ERR_STREAM_PREMATURE_CLOSE') return;
  console.error(e);
  if (!outgoing.headersSent) {
    (outgoing as unknown as ServerResponseInternals)._contentLength = null;
    outgoing.writeHead(500, { 'content-type': 'text/plain' });
  }
  outgoing.end(`Error: ${e.message}`);
  outgoing.destroy(e);
}

/** The rest of an upload nobody read, after the answer: read and dropped for a bounded time, then the connection closed. */
function drainIncoming(incoming: IncomingMessage): void {
  const held = incoming as IncomingMessage & { [DRAINING]?: boolean };
  if (incoming.destroyed || held[DRAINING]) return;
  held[DRAINING] = true;
  let bytes = 0;
  const cleanup = () => {
    clearTimeout(timer);
    incoming.off('data', onData);
    incoming.off('end', cleanup);
    incoming.off('error', cleanup);
  };
  const forceClose = () => {
    cleanup();
    const socket = incoming.socket as (IncomingMessage['socket'] & { destroySoon?: () => void }) | null;
    if (socket && !socket.destroyed) {
      if (typeof socket.destroySoon === 'function') socket.destroySoon();
      else socket.destroy();
    }
  };
  const timer = setTimeout(forceClose, DRAIN_TIMEOUT_MS);
  timer.unref();
  const onData = (chunk: Buffer) => {
    bytes += chunk.length;
    if (bytes > MAX_DRAIN_BYTES) forceClose();
  };
  incoming.on('data', onData);
  incoming.on('end', cleanup);
  incoming.on('error', cleanup);
  incoming.resume();
}
const DRAINING: unique symbol = Symbol('fngate.draining');

function drainLater(incoming: IncomingMessage): void {
  if (incoming.readableEnded) return;
  // Two turns later, as @hono/node-server: the core's own bounded drain of a refused upload goes first.
  setTimeout(() => {
    if (!incoming.readableEnded) setTimeout(() => drainIncoming(incoming));
  });
}

export interface ProxyListenerOptions {
  /** The host of the URL when the request has no `Host` (HTTP/1.0): the listening address, as @hono/node-server. */
  hostname?: string;
}

/**
 * The proxy port's listener: `fetch` is the gateway's `serveProxy` (with the entry's own per-request wrapping). Errors
 * of `fetch` answer 500 without a body; a request whose URL cannot be built answers 400 without a body (as before).
 */
export function proxyListener(fetch: ProxyFetch, options: ProxyListenerOptions = {}): RequestListener {
  const CACHE = honoCacheSymbol();
  const defaultHost = options.hostname;

  const writeResponse = (res: Response, outgoing: ServerResponse): Promise<void> | undefined => {
    const cache = CACHE === undefined ? undefined : (res as unknown as Record<symbol, [number, Body, HeadersInit | undefined] | undefined>)[CACHE];
    if (cache !== undefined) return writeParts(outgoing, cache[0], cache[1], cache[2]);
    // Any other Response (a native one): its public API.
    return writeParts(outgoing, res.status, res.body, res.headers);
  };

  const answer = (res: Response, outgoing: ServerResponse): void => {
    try {
      const done = writeResponse(res, outgoing);
      if (done !== undefined) done.catch((err) => writeFailed(err, outgoing));
    } catch (err) {
      writeFailed(err, outgoing);
    }
  };

  const failed = (outgoing: ServerResponse) => () => {
    if (outgoing.headersSent) outgoing.destroy();
    else {
      outgoing.writeHead(500);
      outgoing.end();
    }
  };

  return (incoming, outgoing) => {
    const method = incoming.method ?? 'GET';
    let req: NodeRequest;
    try {
      const scheme = (incoming.socket as { encrypted?: boolean } | null)?.encrypted ? 'https' : 'http';
      const url = requestUrl(incoming.url ?? '', rawHost(incoming.rawHeaders) ?? defaultHost, scheme);
      req = new NodeRequest(method, url, incoming, outgoing);
    } catch {
      outgoing.writeHead(400);
      outgoing.end();
      return;
    }
    const withBody = method !== 'GET' && method !== 'HEAD';
    let res: Response | Promise<Response>;
    try {
      res = fetch(req as unknown as Request, { incoming, outgoing });
    } catch (err) {
      console.error(err);
      failed(outgoing)();
      return;
    }
    if (res instanceof Promise) {
      if (withBody) outgoing.once('close', () => drainLater(incoming));
      res.then((r) => answer(r, outgoing), failed(outgoing));
      return;
    }
    if (withBody && !incoming.readableEnded) {
      outgoing.once('finish', () => {
        if (!incoming.readableEnded) drainIncoming(incoming);
      });
    }
    answer(res, outgoing);
  };
}

Object.setPrototypeOf(NodeRequest.prototype, Request.prototype);
Object.setPrototypeOf(RawRequestHeaders.prototype, Headers.prototype);

/**
 * The Node HTTP server under both ports, with node:http's defaults changed where they answered hostile input
 * wrongly (issue 18). Everything here happens before the core sees a request, because node:http decides it:
 *
 * - Header count: node:http keeps only the first 1,000 header lines (`maxHeadersCount`) and drops the rest
 *   silently, so a second `Host` after them went unnoticed. No count limit here: the total size of the head is
 *   bounded by `maxHeaderSize` (16 KiB, 431 past it), and every header is forwarded. Unless the runtime's fetch
 *   cannot forward them all (Bun's TLS port: `maxHeaderLines`, 431 past it, as its Bun.serve port answers).
 * - Protocol errors (a request the parser refuses, HTTP/1.1 without `Host`, `OPTIONS *`) answer with the JSON
 *   `{"error_msg": …}` body every other error has, not an empty one.
 * - `CONNECT` gets 405 with that body (node:http closed the connection without a word).
 * - `Transfer-Encoding` with a coding before `chunked` (`gzip, chunked`) gets 501 (RFC 9112 §6.1): node:http
 *   accepted it and the gzip coding was lost on the way. One not ending in `chunked` (`xchunked`) gets 400.
 * - An absolute-form request target (`GET http://a.example/x`) whose authority differs from the `Host` header
 *   gets 400: RFC 9112 §3.2.2 says the target's authority wins, and routing on one while forwarding the other
 *   would be a host confusion, as with two `Host` headers. The same authority in both is served as usual.
 * - A request pipelined behind one refused here (in the same bytes) is never served: node:http parses and emits
 *   it before the refusal's answer has closed the connection, and over TLS (src/runtime/node-tls.ts) that window
 *   was wide enough for it to reach the function on Node, Deno and Bun. The refusal's answer closes the connection.
 *   A request whose body has no framing (Transfer-Encoding not ending in chunked) is answered on the socket itself
 *   when it is the connection's current one: Bun's node:http wrote the head of such an answer but not its body.
 * - `Expect: 100-continue`: `100 Continue` is sent only when the gateway starts reading the body, so an upload
 *   refused on its `Content-Length` (413) or one to no route (404) gets its answer without a 100, as from nginx,
 *   and its connection is closed (the client never sent the body).
 */
import {
  createServer,
  type IncomingMessage,
  type RequestListener,
  type Server,
  type ServerOptions,
  type ServerResponse,
  STATUS_CODES,
} from 'node:http';
import { type Duplex, Readable } from 'node:stream';
import { LINGER } from './refused-body.ts';

/** The JSON error body used everywhere else (src/core/errors.ts), for answers written by hand here. */
function errorBody(message: string): string {
  return JSON.stringify({ error_msg: message });
}

/** A whole HTTP/1.1 error answer that closes the connection, as bytes for a socket node:http let go of. */
function rawAnswer(status: number, message: string, extra = ''): string {
  const body = errorBody(message);
  return (
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nContent-Type: application/json\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\n${extra}Connection: close\r\n\r\n${body}`
  );
}

function answer(res: ServerResponse, status: number, message: string): void {
  const body = errorBody(message);
  res.shouldKeepAlive = false;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** What node:http lets through but the gateway refuses, or undefined. */
export function refusal(req: IncomingMessage): [number, string] | undefined {
  const host = req.headers.host;
  if (host === undefined && req.httpVersionMajor === 1 && req.httpVersionMinor >= 1) {
    return [400, 'bad request: an HTTP/1.1 request needs a Host header'];
  }
  const te = req.headers['transfer-encoding'];
  if (te !== undefined) {
    const codings = te.toLowerCase().split(',').map((c) => c.trim());
    // RFC 9112 §6.3: without chunked last the body's length is unknown (400); §6.1: another coding before it is
    // one the gateway does not implement (501): passing the body on as plain chunked would drop that coding.
    if (codings[codings.length - 1] !== 'chunked') return [400, 'bad request: Transfer-Encoding must end with chunked'];
    if (codings.length > 1) return [501, `Transfer-Encoding ${JSON.stringify(te)} is not implemented: only chunked is`];
  }
  const target = req.url ?? '';
  if (target.charCodeAt(0) === 47 /* / */) return undefined;
  if (!/^https?:\/\//i.test(target)) return [400, 'bad request: the request target must be a path (origin-form)'];
  let authority: string;
  try {
    authority = new URL(target).host;
  } catch {
    return [400, 'bad request: invalid absolute request target'];
  }
  if (host !== undefined && !sameAuthority(authority, host, target)) {
    return [400, "bad request: the request target's authority differs from the Host header"];
  }
  return undefined;
}

/** `a.example` = `A.example:80` for an http target (the URL parser already dropped its default port). */
function sameAuthority(fromUrl: string, hostHeader: string, target: string): boolean {
  const defaultPort = target.slice(0, 5).toLowerCase() === 'https' ? ':443' : ':80';
  let h = hostHeader.trim().toLowerCase();
  if (h.endsWith(defaultPort)) h = h.slice(0, -defaultPort.length);
  return h === fromUrl.toLowerCase();
}

/** node:http's own status for a parser error (its default `clientError` answer), with a JSON body. */
function onClientError(err: Error & { code?: string }, socket: Duplex): void {
  // Refused already and lingering: over TLS (a socket read through 'data' events, not by the parser itself) node:http
  // reports the same parse error again for every later chunk of the refused request; destroying the socket then
  // reset the connection while the answer was on its way (the 431 to a 100 KiB request line was lost now and then).
  if (lingering.has(socket)) return;
  const inFlight = (socket as Duplex & { _httpMessage?: ServerResponse | null })._httpMessage;
  if (err.code === 'ECONNRESET' || !socket.writable || inFlight?.headersSent) {
    socket.destroy();
    return;
  }
  let status = 400;
  let message = `bad request: ${err.code === 'HPE_INVALID_METHOD' ? 'unknown method' : 'malformed HTTP request'}`;
  if (err.code === 'HPE_HEADER_OVERFLOW') {
    status = 431;
    message = 'request header fields too large';
  } else if (err.code === 'HPE_CHUNK_EXTENSIONS_OVERFLOW') {
    status = 413;
    message = 'chunk extensions too large';
  } else if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
    status = 408;
    message = 'request timeout';
  }
  socket.end(rawAnswer(status, message));
  lingerAfterRefusal(socket);
}

/** Refused connections in their lingering close: what they still send is read and dropped. */
const lingering = new WeakSet<Duplex>();

/**
 * Drain the rest of a refused request, as nginx's lingering close, for at most the lingering time the Bun and Deno
 * entries give a refused upload (refused-body.ts `LINGER.ms`): closed with unread bytes in its receive buffer, the
 * socket would be reset, and a reset can reach the client before it has read the answer (Deno's node:tls over a
 * 20 KiB request line: the 431 was lost in 3 of 4 runs).
 */
function lingerAfterRefusal(socket: Duplex): void {
  if (socket.destroyed) return;
  lingering.add(socket);
  socket.resume();
  const timer = setTimeout(() => socket.destroy(), LINGER.ms);
  (timer as { unref?: () => void }).unref?.();
  socket.once('close', () => clearTimeout(timer));
}

/** The fngate proxy opens no tunnels. */
function onConnect(_req: IncomingMessage, socket: Duplex): void {
  socket.end(
    rawAnswer(
      405,
      'CONNECT is not supported: fngate does not open tunnels',
      'Allow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE, PURGE\r\n',
    ),
  );
}

/**
 * `Expect: 100-continue`: the 100 goes out when the body is first read (node:http's `_read`), one turn of the
 * event loop later, unless a final answer was written by then; a final answer without a 100 closes the connection.
 */
function continueWhenRead(req: IncomingMessage, res: ServerResponse): void {
  const self = req as IncomingMessage & { _read(n: number): void };
  const read = self._read;
  let continued = false;
  self._read = function (this: IncomingMessage, n: number) {
    if (!continued) {
      continued = true;
      setImmediate(() => {
        if (!res.headersSent && !res.writableEnded) res.writeContinue();
      });
    }
    read.call(this, n);
  };
  const writeHead = res.writeHead;
  res.writeHead = function (this: ServerResponse, ...args: Parameters<ServerResponse['writeHead']>) {
    // The client is still waiting for a 100 and never sent the body: this connection cannot carry another request.
    if (!continued) res.shouldKeepAlive = false;
    return writeHead.apply(this, args);
  } as ServerResponse['writeHead'];
}

const GET_BODY = Symbol('fngate.getBody');

/**
 * The body of a GET request (GatewayOptions.getBody): @hono/node-server's `Request` has none for GET, as WHATWG
 * wants, but node:http reads it and undici sends it, as APISIX does. Null without a body; the same stream on every call.
 */
export function getRequestBody(incoming: IncomingMessage): ReadableStream<Uint8Array> | null {
  const held = incoming as IncomingMessage & { [GET_BODY]?: ReadableStream<Uint8Array> | null };
  let body = held[GET_BODY];
  if (body === undefined) {
    const { 'content-length': length, 'transfer-encoding': coding } = incoming.headers;
    const has = coding !== undefined || (length !== undefined && length !== '0');
    body = has ? (Readable.toWeb(incoming) as ReadableStream<Uint8Array>) : null;
    held[GET_BODY] = body;
  }
  return body;
}

/** What a runtime adds to the checks above. */
export interface HardeningOptions {
  /**
   * At most this many header lines per request, 431 past it: where the runtime's fetch forwards only so many and
   * drops the rest without a word (Bun's: 255 lines with its own), the limit of the runtime's other server.
   */
  maxHeaderLines?: number;
}

/**
 * node:http's `createServer` with the checks above (the proxy port's own listener, node-serve.ts, and @hono/node-server's
 * `serve()` on the TLS port): the listener runs only for requests that pass them.
 */
export function createHardenedServer(
  options: ServerOptions,
  listener: RequestListener,
  hardening: HardeningOptions = {},
): Server {
  const maxRaw = hardening.maxHeaderLines === undefined ? Number.POSITIVE_INFINITY : hardening.maxHeaderLines * 2;
  // Connections whose request was refused: their answer closes them, and nothing after it is served.
  const refusedOn = new WeakSet<object>();
  const guarded: RequestListener = (req, res) => {
    // Left unanswered: the connection closes once the refusal's answer is out.
    if (refusedOn.has(req.socket)) return;
    const refused: [number, string] | undefined =
      req.rawHeaders.length > maxRaw ? [431, 'request header fields too large'] : refusal(req);
    if (refused) {
      refusedOn.add(req.socket);
      const te = req.headers['transfer-encoding'];
      if (te !== undefined && !/(^|,)\s*chunked\s*$/i.test(te) && res.socket === req.socket) {
        req.socket.end(rawAnswer(refused[0], refused[1]));
        lingerAfterRefusal(req.socket);
        return;
      }
      answer(res, refused[0], refused[1]);
      return;
    }
    listener(req, res);
  };
  // requireHostHeader: false, so the missing Host is answered above with a JSON body.
  const server = createServer({ ...options, requireHostHeader: false }, guarded);
  server.maxHeadersCount = 0;
  server.on('clientError', onClientError);
  server.on('connect', onConnect);
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    continueWhenRead(req, res);
    guarded(req, res);
  });
  return server;
}

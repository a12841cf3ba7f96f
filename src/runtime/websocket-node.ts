/**
 * WebSocket proxying on Node: a byte pipe between the client's socket and the upstream's after both said 101.
 *
 * Why a pipe and not a frame relay (a WebSocket server facing the client, a client facing the upstream): node:http
 * hands over the raw sockets of both sides ('upgrade' on the server and on the upstream request), so the gateway
 * never parses, unmasks, re-masks or re-fragments a frame. That is what nginx does for APISIX: frames, pings, close
 * codes and reasons, extensions (permessage-deflate) and subprotocols are the client's and the upstream's own,
 * unchanged; a connection that breaks on one side is closed on the other (the peer sees 1006, as with APISIX);
 * and `stream.pipe` gives backpressure for free: when one side does not read, its socket's write buffer fills,
 * `write()` returns false and the other side is paused until it drains, so memory stays bounded (a few 64 KiB
 * buffers per tunnel) whatever one side sends (bench/websocket-backpressure.ts).
 *
 * The upgrade request itself is served by the gateway's ordinary handler (global rules, the route's plugins, its
 * upstream or function): src/core/websocket.ts. The 'upgrade' listener below builds the WHATWG Request for it.
 */
import { type ClientRequest, type IncomingMessage, request as httpRequest, type Server, STATUS_CODES } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Socket } from 'node:net';
import { Readable } from 'node:stream';
import { upgraded, upgradeOf, type WebSocketConnector } from '../core/websocket.ts';
import { UpstreamError } from '../core/upstream/types.ts';
import { refusal } from './node-http.ts';

interface UpstreamSide {
  socket: Socket;
  head: Buffer;
  /** The tunnel's idle timeout: the route's read timeout (`timeout.read`, 60 s by default), as nginx's for APISIX. */
  idleMs: number;
}

/** The upstream's headers as a Headers, skipping any a WHATWG Headers refuses (a 101's are the upstream's own). */
function headersOf(raw: readonly string[]): Headers {
  const h = new Headers();
  for (let i = 0; i + 1 < raw.length; i += 2) {
    try {
      h.append(raw[i]!, raw[i + 1]!);
    } catch {
      // an invalid header line from the upstream is dropped
    }
  }
  return h;
}

/**
 * Opens the upstream side: an HTTP/1.1 upgrade request (node:http on its own connection, never pooled). 101 gives
 * {@link upgraded}, any other answer is returned as it came (the client sees the upstream's refusal).
 */
export function nodeWebSocketConnector(): WebSocketConnector {
  return (req) =>
    new Promise<Response>((resolve, reject) => {
      const url = new URL(req.url);
      const headers: Record<string, string | string[]> = {};
      for (const [name, value] of req.headers) {
        const had = headers[name];
        headers[name] = had === undefined ? value : Array.isArray(had) ? [...had, value] : [had, value];
      }
      if (req.hostHeader !== undefined) headers.host = req.hostHeader;
      const https = url.protocol === 'https:';
      const send = https ? httpsRequest : httpRequest;
      let settled = false;
      let connected = false;
      const fail = (err: UpstreamError) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        outgoing.destroy();
        reject(err);
      };
      const outgoing: ClientRequest = send({
        host: url.hostname.replace(/^\[|\]$/g, ''),
        port: url.port || (https ? 443 : 80),
        path: `${url.pathname}${url.search}`,
        method: req.method,
        headers,
        agent: false,
        rejectUnauthorized: req.tlsVerify,
        servername: https ? (req.hostHeader ?? url.hostname).replace(/:\d+$/, '') : undefined,
      });
      // One deadline for the handshake: the connect timeout until connected, then the read timeout for the answer.
      const connectMs = req.connectTimeout ?? req.timeout;
      let timer = setTimeout(
        () => fail(new UpstreamError('connect-timeout', `not connected within ${connectMs} ms`)),
        connectMs,
      );
      outgoing.on('socket', (s: Socket) => {
        s.once(https ? 'secureConnect' : 'connect', () => {
          connected = true;
          clearTimeout(timer);
          timer = setTimeout(
            () => fail(new UpstreamError('timeout', `no answer to the upgrade within ${req.timeout} ms`)),
            req.timeout,
          );
        });
      });
      outgoing.on('error', (err: Error & { code?: string }) => {
        fail(new UpstreamError(connected ? 'protocol' : 'connect', err.code ?? err.message, { cause: err }));
      });
      outgoing.on('upgrade', (res: IncomingMessage, socket: Socket, head: Buffer) => {
        if (settled) {
          socket.destroy();
          return;
        }
        settled = true;
        clearTimeout(timer);
        resolve(upgraded(headersOf(res.rawHeaders), { socket, head, idleMs: req.timeout } satisfies UpstreamSide));
      });
      outgoing.on('response', (res: IncomingMessage) => {
        if (settled) {
          res.destroy();
          return;
        }
        settled = true;
        clearTimeout(timer);
        const status = res.statusCode ?? 502;
        const empty = status === 204 || status === 304 || req.method === 'HEAD';
        const body = empty ? null : (Readable.toWeb(res) as ReadableStream<Uint8Array>);
        // The status outside Response's 200-599 (a 1xx other than 101 never ends a handshake): a gateway error.
        if (status < 200 || status > 599) {
          res.destroy();
          reject(new UpstreamError('protocol', `status ${status} to an upgrade`));
          return;
        }
        resolve(new Response(body, { status, statusText: res.statusMessage, headers: headersOf(res.rawHeaders) }));
      });
      outgoing.end();
    });
}

/** The response head as bytes for a raw socket: status line, the headers, then `extra` lines. */
function head(status: number, reason: string, headers: Headers, extra: string): string {
  let out = `HTTP/1.1 ${status} ${reason}\r\n`;
  headers.forEach((value, name) => {
    out += `${name}: ${value}\r\n`;
  });
  return `${out}${extra}\r\n`;
}

/** Writes a gateway or upstream answer to an upgrade request on the raw socket and closes the connection. */
async function writeAnswer(socket: Socket, res: Response, method: string): Promise<void> {
  const headers = new Headers(res.headers);
  headers.delete('connection');
  headers.delete('transfer-encoding');
  headers.delete('keep-alive');
  const reason = res.statusText || STATUS_CODES[res.status] || '';
  socket.write(head(res.status, reason, headers, 'Connection: close\r\n'));
  if (res.body && method !== 'HEAD') {
    // Without a Content-Length the body ends with the connection (close-delimited).
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      if (socket.destroyed) break;
      if (!socket.write(chunk)) await new Promise((r) => socket.once('drain', r));
    }
  }
  socket.end();
}

/**
 * Joins the client's socket and the upstream's both ways, with backpressure. `idleMs` without a byte on a socket
 * (read or written) closes both, without a close frame, as nginx's proxy timeouts do (the client sees 1006).
 */
function tunnel(client: Socket, upstream: UpstreamSide, open: Set<Socket>): void {
  const { socket: up, idleMs } = upstream;
  open.add(client);
  const closeBoth = () => {
    client.destroy();
    up.destroy();
    open.delete(client);
  };
  for (const s of [client, up]) {
    s.setNoDelay(true);
    s.setTimeout(idleMs);
    s.on('timeout', closeBoth);
    s.on('error', closeBoth);
    s.on('close', closeBoth);
  }
  if (upstream.head.length > 0) client.write(upstream.head);
  client.pipe(up);
  up.pipe(client);
}

export interface WebSocketServing {
  /** Closes every WebSocket tunnel (the end of a shutdown's grace period). */
  closeAll(): void;
}

/**
 * Serves upgrade requests on the proxy `server`: each goes through `serve` (the gateway's proxy handler) like any
 * request; an {@link upgraded} answer becomes the 101 and a tunnel, any other answer is written and the connection
 * closed. Without an 'upgrade' listener node:http would hand the request to the ordinary handler, which has no
 * way to take the socket over.
 */
export function serveUpgrades(
  server: Server,
  serve: (req: Request, env: unknown) => Response | Promise<Response>,
): WebSocketServing {
  const open = new Set<Socket>();
  server.on('upgrade', (incoming: IncomingMessage, socket: Socket, clientHead: Buffer) => {
    socket.on('error', () => socket.destroy());
    // What the client sent after its handshake (its first frames) is read again by the pipe.
    if (clientHead.length > 0) socket.unshift(clientHead);
    void answerUpgrade(incoming, socket, serve, open).catch(() => socket.destroy());
  });
  return {
    closeAll() {
      for (const s of open) s.destroy();
    },
  };
}

async function answerUpgrade(
  incoming: IncomingMessage,
  socket: Socket,
  serve: (req: Request, env: unknown) => Response | Promise<Response>,
  open: Set<Socket>,
): Promise<void> {
  const method = incoming.method ?? 'GET';
  const refused = refusal(incoming);
  if (refused) {
    const body = `${JSON.stringify({ error_msg: refused[1] })}`;
    const headers = new Headers({ 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) });
    socket.end(head(refused[0], STATUS_CODES[refused[0]] ?? '', headers, 'Connection: close\r\n') + body);
    return;
  }
  let request: Request;
  try {
    const headers = new Headers();
    const raw = incoming.rawHeaders;
    for (let i = 0; i + 1 < raw.length; i += 2) headers.append(raw[i]!, raw[i + 1]!);
    const target = incoming.url ?? '/';
    const url = target.startsWith('/') ? `http://${incoming.headers.host ?? 'localhost'}${target}` : target;
    request = new Request(url, { method, headers });
  } catch {
    const body = JSON.stringify({ error_msg: 'bad request: malformed HTTP request' });
    const headers = new Headers({ 'content-type': 'application/json', 'content-length': String(body.length) });
    socket.end(head(400, 'Bad Request', headers, 'Connection: close\r\n') + body);
    return;
  }
  // The env the gateway's Node hooks read (client address, raw headers, client-gone signal): there is no
  // ServerResponse for an upgrade, so the signal follows the socket alone.
  const env = { incoming, outgoing: { writableFinished: false } };
  const res = await serve(request, env);
  const upstream = upgradeOf<UpstreamSide>(res);
  if (upstream === undefined) {
    await writeAnswer(socket, res, method);
    return;
  }
  if (socket.destroyed) {
    upstream.socket.destroy();
    return;
  }
  const headers = new Headers(res.headers);
  for (const h of ['connection', 'upgrade', 'transfer-encoding', 'content-length', 'keep-alive']) headers.delete(h);
  socket.write(head(101, 'Switching Protocols', headers, 'Upgrade: websocket\r\nConnection: Upgrade\r\n'));
  tunnel(socket, upstream, open);
}

/**
 * The connector of a runtime whose plain port relays frames (Deno, Bun) but whose TLS port is node:tls + node:http
 * (src/runtime/node-tls.ts): an upgrade that came through node:http (its env has `incoming`) gets Node's raw-socket
 * pipe, the same as on Node; any other gets `plain`.
 */
export function tlsPortWebSocketConnector(plain: WebSocketConnector): WebSocketConnector {
  const pipe = nodeWebSocketConnector();
  return (req, request, env) =>
    (typeof env === 'object' && env !== null && 'incoming' in env ? pipe : plain)(req, request, env);
}

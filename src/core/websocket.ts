/**
 * WebSocket proxying (APISIX `enable_websocket`), the part every runtime shares.
 *
 * A WebSocket upgrade to a route with `enable_websocket: true` (the route's, else its service's) runs the route
 * like any request: the global rules and the route's plugins (rewrite, access: key-auth, limits, ...) first, so
 * an upgrade without a key is refused with the plugin's answer, never forwarded. The call (the upstream node's or
 * the function's) is then made through the runtime's {@link WebSocketConnector} instead of its HTTP forwarder,
 * with the same URL, path rewrites and cleaned headers, plus `Upgrade: websocket` and `Connection: upgrade` (what
 * APISIX's init.lua sets from the client's headers when `enable_websocket` is on). The connector opens the upstream
 * side first: when the upstream refuses the upgrade (any status but 101) its answer goes to the client, and only
 * when it accepts is the client upgraded, with the marker Response {@link upgraded} the runtime entry finishes
 * (Node: writes the 101 and pipes the two sockets; Deno, Bun, Workers: accept the client's WebSocket and relay
 * frames).
 *
 * Without `enable_websocket` the Upgrade and Connection headers are hop-by-hop and are never forwarded, so the
 * request reaches the upstream as a plain HTTP request and its answer goes back, as with APISIX (nginx sends
 * `Upgrade`/`Connection` only from `$upstream_upgrade`, empty unless the route enables WebSocket).
 */
import type { RequestContext } from './context.ts';
import { errorResponse } from './errors.ts';
import type { ForwardRequest } from './upstream/types.ts';

/**
 * Opens the upstream side of a WebSocket for the client request `request` (with the runtime's `env`, as the
 * gateway got them). Resolves with the upstream's answer when it refused the upgrade (a plain Response, e.g. 403),
 * with a gateway error (UpstreamError rejections become 502/503/504 as for any call), or with {@link upgraded}
 * once the upstream accepted. `req.timeout` is the idle timeout of the tunnel (the route's read timeout).
 */
export type WebSocketConnector = (req: ForwardRequest, request: Request, env: unknown) => Promise<Response>;

/**
 * Is this a WebSocket opening handshake (RFC 6455 §4.1): a GET with `Upgrade: websocket` and `Connection: upgrade`
 * (any case, among other tokens)? Anything less is served as a plain request (its Upgrade header dropped), as the
 * runtimes' servers would not upgrade it either (Node's hands it to the ordinary handler).
 */
export function isWebSocketUpgrade(method: string, headers: Headers): boolean {
  if (method !== 'GET') return false;
  const upgrade = headers.get('upgrade');
  if (upgrade === null || !/(^|[\s,])websocket([\s,]|$)/i.test(upgrade)) return false;
  const connection = headers.get('connection');
  return connection !== null && /(^|[\s,])upgrade([\s,]|$)/i.test(connection);
}

/**
 * The pipeline's hook for an `enable_websocket` route, run after the rewrite and access phases: a WebSocket upgrade
 * has its call made through the runtime's connector (or answers 501 on a runtime without one); any other request
 * goes on as usual.
 */
export function websocketCall(ctx: RequestContext): Response | undefined {
  if (!isWebSocketUpgrade(ctx.method, ctx.request.headers)) return undefined;
  const connect = ctx.websocket;
  if (connect === undefined) {
    return errorResponse(501, 'WebSocket proxying is not available on this runtime (the route has enable_websocket: true)');
  }
  const { request, env } = ctx;
  ctx.forward = (req) => {
    req.headers.push(['upgrade', 'websocket'], ['connection', 'upgrade']);
    return connect(req, request, env);
  };
  return undefined;
}

const UPGRADED: unique symbol = Symbol('fngate.websocket');

/**
 * The answer that stands for "the upstream accepted the upgrade": status 101 (a WHATWG Response cannot be made
 * with it, so the status is set on the instance), the upstream's 101 headers (the response phases may edit them),
 * and `finish`, the runtime's handle to complete the upgrade. The runtime entry recognises it with {@link upgradeOf}.
 */
export function upgraded(headers: Headers, finish: unknown): Response {
  const res = new Response(null, { status: 200, headers });
  Object.defineProperty(res, 'status', { value: 101 });
  Object.defineProperty(res, 'statusText', { value: 'Switching Protocols' });
  (res as Response & { [UPGRADED]?: unknown })[UPGRADED] = finish;
  return res;
}

/** The runtime's handle of an {@link upgraded} answer, or undefined for any other Response. */
export function upgradeOf<T>(res: Response): T | undefined {
  return (res as Response & { [UPGRADED]?: T })[UPGRADED];
}

/**
 * The most bytes a frame-relaying runtime (Deno, Bun, Workers) lets wait for a side that does not read before it
 * closes both sides (without a close code: 1009 is not one the WebSocket API may send): those runtimes' WebSocket
 * APIs cannot stop reading the other side.
 */
export const WEBSOCKET_BUFFER_LIMIT = 16 * 1024 * 1024;

/** Headers of a client request that belong to its own handshake, not to the upstream's (frame-relaying runtimes). */
export const HANDSHAKE_HEADERS: ReadonlySet<string> = new Set([
  'upgrade',
  'connection',
  'sec-websocket-key',
  'sec-websocket-version',
  'sec-websocket-extensions',
  'sec-websocket-protocol',
]);

/** A close code one side may pass on to the other with `close(code)`: 1000 or 3000-4999 (WHATWG WebSocket). */
export function relayableCloseCode(code: number): number | undefined {
  return code === 1000 || (code >= 3000 && code <= 4999) ? code : undefined;
}

/**
 * WebSocket proxying on Bun: `Bun.serve` gives no raw socket, so the gateway relays frames (websocket-relay.ts):
 * a `WebSocket` client to the upstream, `server.upgrade()` toward the client once the upstream said 101, and the
 * `websocket` handlers of `Bun.serve` ({@link bunWebSocketHandlers}) passing the client's events to the relay.
 */
import { upgradeOf, WEBSOCKET_BUFFER_LIMIT } from '../core/websocket.ts';
import { type RelayHandle, type RelayUpstream, relay } from './websocket-relay.ts';

export { webSocketClientConnector as bunWebSocketConnector } from './websocket-relay.ts';

/** The part of Bun's ServerWebSocket used here. */
interface BunSocket {
  data: { up: RelayUpstream; handle?: RelayHandle };
  send(data: string | ArrayBuffer | ArrayBufferView): number;
  close(code?: number, reason?: string): void;
  terminate?(): void;
  getBufferedAmount?(): number;
}

interface Upgrader {
  upgrade(req: Request, opts: { data: unknown; headers?: Headers }): boolean;
}

/** The `websocket` option of `Bun.serve`. */
export const bunWebSocketHandlers = {
  // Bun itself closes a client that leaves this much unread (the relay checks the same bound before each send).
  backpressureLimit: WEBSOCKET_BUFFER_LIMIT,
  closeOnBackpressureLimit: true,
  // The relay has its own idle timeout (the route's read timeout); Bun's is at most 960 s.
  idleTimeout: 0,
  perMessageDeflate: false,
  open(ws: BunSocket) {
    ws.data.handle = relay(ws.data.up, {
      send: (data) => void ws.send(data),
      close: (code, reason) => (code === undefined ? (ws.terminate ? ws.terminate() : ws.close()) : ws.close(code, reason)),
      buffered: () => ws.getBufferedAmount?.() ?? 0,
    });
  },
  message(ws: BunSocket, message: string | Uint8Array) {
    ws.data.handle?.fromClient(message);
  },
  close(ws: BunSocket, code: number, reason: string) {
    ws.data.handle?.clientClosed(code, reason);
  },
};

/** Wraps the proxy's handler: an upgraded answer upgrades the client (`server.upgrade`); any other goes as it is. */
export function finishBunUpgrades<E extends Upgrader>(
  handler: (req: Request, env: E) => Response | Promise<Response>,
  original: (req: Request) => Request = (r) => r,
): (req: Request, env: E) => Response | Promise<Response> {
  const finish = (req: Request, server: E, res: Response): Response => {
    const up = upgradeOf<RelayUpstream>(res);
    if (up === undefined) return res;
    if (server.upgrade(original(req), { data: { up }, headers: res.headers })) return undefined as unknown as Response;
    up.ws.close();
    return new Response(`${JSON.stringify({ error_msg: 'the WebSocket upgrade failed' })}\n`, {
      status: 400,
      headers: { 'content-type': 'application/json' },
    });
  };
  return (req, env) => {
    const res = handler(req, env);
    return res instanceof Promise ? res.then((r) => finish(req, env, r)) : finish(req, env, res);
  };
}

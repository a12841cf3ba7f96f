/**
 * WebSocket proxying on Deno: Deno.serve gives no raw socket, so the gateway relays frames (websocket-relay.ts):
 * a `WebSocket` client to the upstream, `Deno.upgradeWebSocket` toward the client once the upstream said 101.
 */
import { upgradeOf } from '../core/websocket.ts';
import { type RelayUpstream, relayToWebSocket } from './websocket-relay.ts';

export { webSocketClientConnector as denoWebSocketConnector } from './websocket-relay.ts';

declare const Deno: {
  upgradeWebSocket(req: Request, opts?: { protocol?: string; idleTimeout?: number }): { socket: WebSocket; response: Response };
};

/** Wraps the proxy's handler: an upgraded answer becomes Deno's 101 and the relay; any other answer goes as it is. */
export function finishDenoUpgrades<E>(
  handler: (req: Request, env: E) => Response | Promise<Response>,
): (req: Request, env: E) => Response | Promise<Response> {
  const finish = (req: Request, res: Response): Response => {
    const up = upgradeOf<RelayUpstream>(res);
    if (up === undefined) return res;
    // idleTimeout 0: no pings of Deno's own; the route's read timeout is the relay's idle timeout.
    // The subprotocol goes in as a header: Deno's own `protocol` check splits the client's list on ", " only, and
    // refuses one a client listed as `a,b` (the `ws` package does) with a 500.
    const { socket, response } = Deno.upgradeWebSocket(req, { idleTimeout: 0 });
    res.headers.forEach((value, name) => {
      try {
        response.headers.set(name, value);
      } catch {}
    });
    socket.addEventListener('open', () => relayToWebSocket(up, socket), { once: true });
    return response;
  };
  return (req, env) => {
    const res = handler(req, env);
    return res instanceof Promise ? res.then((r) => finish(req, r)) : finish(req, res);
  };
}

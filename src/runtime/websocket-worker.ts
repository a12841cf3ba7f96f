/**
 * WebSocket proxying on Cloudflare Workers: the upstream side is a `fetch` with `Upgrade: websocket` (its answer
 * carries `webSocket` when the upstream said 101), the client's a `WebSocketPair`; frames are relayed
 * (websocket-relay.ts). Unlike the `WebSocket` client of Deno and Bun, fetch gives the upstream's refusal whole
 * (status, headers, body), which goes to the client as it is.
 */
import { UpstreamError } from '../core/upstream/types.ts';
import { upgradeOf, upgraded, type WebSocketConnector } from '../core/websocket.ts';
import { offeredProtocols, type RelayUpstream, relayToWebSocket, upstreamHeaders, upstreamSide } from './websocket-relay.ts';

declare const WebSocketPair: new () => { 0: WebSocket; 1: WebSocket };

type WorkerSocket = WebSocket & { accept(): void };

export function workerWebSocketConnector(): WebSocketConnector {
  return async (req) => {
    const headers = upstreamHeaders(req.headers);
    headers.upgrade = 'websocket';
    const protocols = offeredProtocols(req.headers);
    if (protocols.length > 0) headers['sec-websocket-protocol'] = protocols.join(', ');
    const ms = (req.connectTimeout ?? 0) + req.timeout;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let res: Response;
    try {
      res = await Promise.race([
        fetch(req.url, { headers }),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new UpstreamError('timeout', `no WebSocket handshake within ${ms} ms`)), ms);
        }),
      ]);
    } catch (err) {
      if (err instanceof UpstreamError) throw err;
      throw new UpstreamError('connect', err instanceof Error ? err.message : String(err));
    } finally {
      clearTimeout(timer);
    }
    const ws = (res as Response & { webSocket?: WorkerSocket | null }).webSocket;
    if (res.status !== 101 || !ws) return res;
    ws.accept();
    const protocol = res.headers.get('sec-websocket-protocol') ?? '';
    const out = new Headers();
    if (protocol) out.set('sec-websocket-protocol', protocol);
    return upgraded(out, upstreamSide(ws, req.timeout, protocol));
  };
}

/** The Worker's answer for an upgraded one: a WebSocketPair, its server end relayed to the upstream; else `res`. */
export function finishWorkerUpgrade(res: Response): Response {
  const up = upgradeOf<RelayUpstream>(res);
  if (up === undefined) return res;
  const pair = new WebSocketPair();
  const client = pair[0];
  const server = pair[1] as WorkerSocket;
  server.accept();
  relayToWebSocket(up, server);
  return new Response(null, { status: 101, webSocket: client, headers: res.headers } as ResponseInit);
}

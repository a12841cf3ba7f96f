/**
 * WebSocket proxying where the runtime gives no raw sockets (Deno, Bun, Workers): a frame relay. The gateway is a
 * WebSocket client of the upstream (the runtime's `WebSocket`, or a Worker's `fetch` with `Upgrade`) and a
 * WebSocket server to the client (`Deno.upgradeWebSocket`, `server.upgrade` in `Bun.serve`, `WebSocketPair`), and
 * passes each message on with its type, and each close with its code and reason where the WebSocket API lets the
 * code be sent (1000 and 3000-4999; another code, e.g. 1001 or 1011, goes on as a close without a code).
 *
 * Bounded memory: these APIs cannot pause reading one side while the other does not read, so the relay watches
 * the buffered bytes of the side it writes to and closes both sides past {@link WEBSOCKET_BUFFER_LIMIT} (Bun also
 * closes by itself past its `backpressureLimit`: websocket-bun.ts).
 * Idle timeout: no message either way for the route's read timeout closes both sides.
 *
 * No node:* import: this module runs in the Worker too.
 */
import { errorResponse } from '../core/errors.ts';
import { UpstreamError } from '../core/upstream/types.ts';
import {
  HANDSHAKE_HEADERS,
  relayableCloseCode,
  upgraded,
  WEBSOCKET_BUFFER_LIMIT,
  type WebSocketConnector,
} from '../core/websocket.ts';

type Data = string | ArrayBuffer | ArrayBufferView;

/** The upstream side once it accepted: its socket, what it sent before the client was upgraded, the idle timeout. */
export interface RelayUpstream {
  ws: WebSocket;
  /** Messages that arrived before the relay started. */
  early: Data[];
  /** The upstream's close, when it came before the relay started. */
  earlyClose?: { code: number; reason: string };
  /** The subprotocol the upstream chose ('' for none). */
  protocol: string;
  idleMs: number;
  /** Called with the relay's handlers once it starts (the events before are kept in `early`). */
  start?: (onMessage: (data: Data) => void, onClose: (code: number, reason: string) => void) => void;
}

/** The client's side as the relay writes to it. */
export interface Downstream {
  send(data: Data): void;
  /** Close with a close frame; `code` undefined: no code. */
  close(code: number | undefined, reason: string): void;
  /** Bytes queued for the client and not yet sent. */
  buffered(): number;
}

/** What the runtime calls with the client's events. */
export interface RelayHandle {
  fromClient(data: Data): void;
  clientClosed(code: number, reason: string): void;
}

/** The subprotocols the client offered (`Sec-WebSocket-Protocol`), for the upstream handshake. */
export function offeredProtocols(headers: readonly [string, string][]): string[] {
  const out: string[] = [];
  for (const [name, value] of headers) {
    if (name === 'sec-websocket-protocol') for (const p of value.split(',')) if (p.trim()) out.push(p.trim());
  }
  return out;
}

/** The headers to send upstream: the core's, minus those of the client's own handshake. */
export function upstreamHeaders(headers: readonly [string, string][]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of headers) {
    if (HANDSHAKE_HEADERS.has(name) || name === 'host') continue;
    out[name] = out[name] === undefined ? value : `${out[name]}, ${value}`;
  }
  return out;
}

/** The status in a runtime's message for a refused handshake (Deno: `Invalid status code: 403`, Bun: `Expected 101 status code: 403`). */
function refusedStatus(message: string): number | undefined {
  const m = /status code:?\s*(\d{3})/i.exec(message);
  const status = m ? Number(m[1]) : undefined;
  return status !== undefined && status >= 200 && status <= 599 ? status : undefined;
}

/**
 * A connector with the runtime's WHATWG `WebSocket` client (Deno and Bun accept `{ headers, protocols }`). The
 * client API says only the status of a refused handshake (from its error message): the client gets that status
 * with a gateway body, not the upstream's headers and body.
 */
export function webSocketClientConnector(): WebSocketConnector {
  return (req) =>
    new Promise<Response>((resolve, reject) => {
      const url = req.url.replace(/^http/, 'ws');
      const protocols = offeredProtocols(req.headers);
      const Ctor = WebSocket as unknown as new (url: string, opts: unknown) => WebSocket;
      let ws: WebSocket;
      try {
        ws = new Ctor(url, { headers: upstreamHeaders(req.headers), protocols });
      } catch (err) {
        reject(new UpstreamError('connect', (err as Error).message));
        return;
      }
      const side = upstreamSide(ws, req.timeout);
      let settled = false;
      const timer = setTimeout(
        () => {
          if (settled) return;
          settled = true;
          ws.close();
          reject(new UpstreamError('timeout', `no WebSocket handshake within ${(req.connectTimeout ?? 0) + req.timeout} ms`));
        },
        (req.connectTimeout ?? 0) + req.timeout,
      );
      ws.onerror = (e) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        const message = (e as ErrorEvent).message ?? 'WebSocket error';
        const status = refusedStatus(message);
        if (status !== undefined) {
          resolve(errorResponse(status, `the upstream refused the WebSocket upgrade with status ${status}`));
        } else reject(new UpstreamError('connect', message));
      };
      ws.onopen = () => {
        if (settled) {
          ws.close();
          return;
        }
        settled = true;
        clearTimeout(timer);
        side.protocol = ws.protocol;
        const headers = new Headers();
        if (ws.protocol) headers.set('sec-websocket-protocol', ws.protocol);
        resolve(upgraded(headers, side));
      };
    });
}

/**
 * The upstream side of an accepted WebSocket: what it sends or its close before the relay starts is kept for it.
 */
export function upstreamSide(ws: WebSocket, idleMs: number, protocol = ''): RelayUpstream {
  ws.binaryType = 'arraybuffer';
  const side: RelayUpstream = { ws, early: [], protocol, idleMs };
  let onMessage: ((data: Data) => void) | undefined;
  let onClose: ((code: number, reason: string) => void) | undefined;
  side.start = (m, c) => {
    onMessage = m;
    onClose = c;
  };
  ws.addEventListener('message', (e) => {
    const data = (e as MessageEvent).data as Data;
    if (onMessage) onMessage(data);
    else side.early.push(data);
  });
  ws.addEventListener('close', (e) => {
    const { code, reason } = e as CloseEvent;
    if (onClose) onClose(code, reason);
    else side.earlyClose = { code, reason };
  });
  return side;
}

/** The close `code` as one the WebSocket API can send on (else none), the reason cut to the 123 bytes a frame holds. */
function closeArgs(code: number, reason: string): [number | undefined, string] {
  const relayable = relayableCloseCode(code);
  let r = relayable === undefined ? '' : reason;
  while (new TextEncoder().encode(r).byteLength > 123) r = r.slice(0, -1);
  return [relayable, r];
}

function byteLength(data: Data): number {
  return typeof data === 'string' ? data.length * 3 : data.byteLength;
}

/** Starts relaying between the upstream side and the client's; returns the handlers for the client's events. */
export function relay(up: RelayUpstream, down: Downstream): RelayHandle {
  let done = false;
  let last = Date.now();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const finish = () => {
    done = true;
    if (timer !== undefined) clearTimeout(timer);
  };
  const closeBoth = (clientCode: number | undefined, reason: string) => {
    if (done) return;
    finish();
    try {
      down.close(clientCode, reason);
    } catch {}
    try {
      up.ws.close();
    } catch {}
  };
  const idle = () => {
    const left = up.idleMs - (Date.now() - last);
    if (left > 0) timer = setTimeout(idle, left);
    else closeBoth(undefined, '');
  };
  timer = setTimeout(idle, up.idleMs);
  const toClient = (data: Data) => {
    if (done) return;
    last = Date.now();
    if (down.buffered() + byteLength(data) > WEBSOCKET_BUFFER_LIMIT) {
      // The client does not read: close both (1009 would say why, but the API may not send it).
      closeBoth(undefined, '');
      return;
    }
    down.send(data);
  };
  const upClosed = (code: number, reason: string) => {
    if (done) return;
    finish();
    const [c, r] = closeArgs(code, reason);
    try {
      down.close(c, r);
    } catch {}
  };
  for (const m of up.early) toClient(m);
  up.early.length = 0;
  if (up.earlyClose) upClosed(up.earlyClose.code, up.earlyClose.reason);
  else up.start?.(toClient, upClosed);
  return {
    fromClient(data) {
      if (done) return;
      last = Date.now();
      if (up.ws.bufferedAmount + byteLength(data) > WEBSOCKET_BUFFER_LIMIT) {
        closeBoth(undefined, '');
        return;
      }
      up.ws.send(data as string);
    },
    clientClosed(code, reason) {
      if (done) return;
      finish();
      const [c, r] = closeArgs(code, reason);
      try {
        up.ws.close(c, r);
      } catch {
        up.ws.close();
      }
    },
  };
}

/** Relays between the upstream side and a WHATWG server-side WebSocket (Deno's upgradeWebSocket, a Worker's pair). */
export function relayToWebSocket(up: RelayUpstream, client: WebSocket): void {
  client.binaryType = 'arraybuffer';
  const handle = relay(up, {
    send: (data) => client.send(data as string),
    close: (code, reason) => (code === undefined ? client.close() : client.close(code, reason)),
    buffered: () => client.bufferedAmount ?? 0,
  });
  client.addEventListener('message', (e) => handle.fromClient((e as MessageEvent).data));
  client.addEventListener('close', (e) => handle.clientClosed((e as CloseEvent).code, (e as CloseEvent).reason));
  client.addEventListener('error', () => handle.clientClosed(1006, ''));
}

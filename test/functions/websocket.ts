/**
 * A real WebSocket function server (the `ws` package on node:http), on loopback, for the WebSocket suite and the
 * backpressure bench:
 *
 * - `/echo…`: every message back with its type (text stays text, binary stays binary); a text message
 *   `close:<code>:<reason>` makes the server close with that code and reason, `drop` makes it drop the connection
 *   without a close frame; the first message is
 *   `hello <JSON>` with the path, the upgrade request's headers and the subprotocol chosen.
 * - `/deny…`: refuses the upgrade with 403, a header `x-refused: yes` and a body `refused by the function`.
 * - `/flood…`: sends 64 KiB binary messages without end, but only while its own socket's buffer is under 1 MiB
 *   (it respects backpressure itself, so what piles up would be the gateway's).
 * - a plain HTTP request (no upgrade, on any path): 200 JSON `{ "plain": true, "upgrade": <its Upgrade header> }`,
 *   as a WebSocket server answers a request that lost its Upgrade headers on the way.
 * - a message on any connection is counted (`received`), so a test can see the upstream got nothing.
 *
 *   npx tsx test/functions/websocket.ts [port]
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { pathToFileURL } from 'node:url';
import { type WebSocket, WebSocketServer } from 'ws';

export interface WebSocketFunction {
  url: string;
  port: number;
  /** Upgrades accepted so far, and the headers of the last one. */
  accepted: number;
  lastHeaders: IncomingMessage['headers'] | undefined;
  /** Bytes the flood connections handed to their sockets so far. */
  flooded: number;
  /** Close codes the server received from its clients, in order. */
  closes: number[];
  close(): Promise<void>;
}

const FLOOD_CHUNK = Buffer.alloc(64 * 1024, 0x61);

export async function startWebSocketFunction(port = 0, host = '127.0.0.1'): Promise<WebSocketFunction> {
  const wss = new WebSocketServer({ noServer: true, handleProtocols: (protocols) => [...protocols][0] ?? false });
  const sockets = new Set<Socket>();
  const server: Server = createServer((req, res) => {
    const body = JSON.stringify({ plain: true, upgrade: req.headers.upgrade ?? null, url: req.url });
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(body);
  });
  const fn: WebSocketFunction = {
    url: '',
    port: 0,
    accepted: 0,
    lastHeaders: undefined,
    flooded: 0,
    closes: [],
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        for (const c of wss.clients) c.terminate();
        server.close(() => resolve());
      }),
  };
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    const path = req.url ?? '/';
    if (path.startsWith('/deny')) {
      const body = 'refused by the function';
      socket.end(`HTTP/1.1 403 Forbidden\r\nx-refused: yes\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
      fn.accepted++;
      fn.lastHeaders = req.headers;
      ws.on('close', (code) => fn.closes.push(code));
      ws.on('error', () => ws.terminate());
      if (path.startsWith('/flood')) {
        const raw = (ws as unknown as { _socket: Socket })._socket;
        const pump = () => {
          while (ws.readyState === ws.OPEN && ws.bufferedAmount < 1024 * 1024) {
            ws.send(FLOOD_CHUNK);
            fn.flooded += FLOOD_CHUNK.length;
          }
        };
        raw.on('drain', pump);
        const timer = setInterval(pump, 5);
        ws.on('close', () => clearInterval(timer));
        pump();
        return;
      }
      ws.send(`hello ${JSON.stringify({ path, headers: req.headers, protocol: ws.protocol })}`);
      ws.on('message', (data, isBinary) => {
        if (!isBinary) {
          const m = /^close:(\d+):(.*)$/s.exec(data.toString());
          if (m) {
            ws.close(Number(m[1]), m[2]);
            return;
          }
          if (data.toString() === 'drop') {
            ws.terminate();
            return;
          }
        }
        ws.send(data, { binary: isBinary });
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(port, host, resolve));
  fn.port = (server.address() as AddressInfo).port;
  fn.url = `http://${host}:${fn.port}`;
  return fn;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const fn = await startWebSocketFunction(Number(process.argv[2] ?? 0));
  console.log(`websocket function on ${fn.url} (/echo, /deny, /flood)`);
}

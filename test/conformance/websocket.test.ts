/**
 * WebSocket proxying (APISIX `enable_websocket`, issue 19 item 3) on every runtime, against a real WebSocket
 * function server (test/functions/websocket.ts, the `ws` package) and the `ws` client: frames both ways, close
 * codes both ways, the upstream's refusal, routes without `enable_websocket`, an auth plugin before the upgrade,
 * the idle timeout, an unreachable upstream. Every case runs on the plain port (ws://) and on the TLS port
 * (wss:// on PROXY_HTTPS_PORT, SNI `ws.example.com`), where Node, Deno and Bun all serve the upgrade through node:tls +
 * node:http and pipe the two sockets (src/runtime/node-tls.ts, websocket-node.ts).
 */
import assert from 'node:assert/strict';
import { type IncomingMessage, request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { refusedPort } from '../helpers/process.ts';
import { startWebSocketFunction, type WebSocketFunction } from '../functions/websocket.ts';
import { certFor, NO_OPENSSL } from '../helpers/tls.ts';
import { type GatewayUnderTest, RUNTIME, startGateway, tlsPortOf } from './harness.ts';

/** Why the wss:// cases cannot run here, if they cannot. */
const NO_TLS_PORT =
  RUNTIME === 'workerd' ? 'Cloudflare terminates TLS in front of a Worker: there is no TLS port (PROXY_HTTPS_PORT)' : NO_OPENSSL;
const SNI = 'ws.example.com';

// Only the WebSocket function: the suite needs none of the HTTP test functions.
let gw: GatewayUnderTest;
let fn: WebSocketFunction;
/** The gateway's TLS port (wss://), when it has one. */
let tlsPort = 0;
before(async () => {
  [fn, gw] = await Promise.all([
    startWebSocketFunction(),
    startGateway(NO_TLS_PORT ? {} : { env: { PROXY_HTTPS_PORT: '0' } }),
  ]);
  if (NO_TLS_PORT) return;
  const { cert, key } = certFor(SNI);
  await ok('PUT', '/ssls/ws', { cert, key, sni: SNI });
  tlsPort = await tlsPortOf(gw);
});
after(async () => {
  await gw?.stop();
  await fn?.close();
});

const node = () => `127.0.0.1:${fn.port}`;
const upstream = () => ({ type: 'roundrobin', nodes: { [node()]: 1 } });

async function ok(method: string, path: string, body?: unknown) {
  const res = await gw.admin(method, path, body);
  assert.ok(res.status === 200 || res.status === 201, `${method} ${path} → ${res.status} ${res.text}`);
}

interface Opened {
  ws: WebSocket;
  /** Messages received, in order (text as string, binary as Buffer). */
  messages: (string | Buffer)[];
  next(): Promise<string | Buffer>;
  closed: Promise<{ code: number; reason: string }>;
}

interface Refused {
  status: number;
  headers: IncomingMessage['headers'];
  body: string;
}

type Scheme = 'ws' | 'wss';

/** Opens a WebSocket through the gateway; resolves with the open socket, or with the answer that refused it. */
function connect(
  scheme: Scheme,
  path: string,
  opts: { headers?: Record<string, string>; protocols?: string[] } = {},
): Promise<Opened | Refused> {
  const url = scheme === 'wss' ? `wss://127.0.0.1:${tlsPort}${path}` : `${gw.proxyUrl.replace(/^http/, 'ws')}${path}`;
  return new Promise((resolve, reject) => {
    const tls = scheme === 'wss' ? { servername: SNI, rejectUnauthorized: false } : {};
    const ws = new WebSocket(url, opts.protocols ?? [], { headers: opts.headers, ...tls });
    const messages: (string | Buffer)[] = [];
    const waiting: ((m: string | Buffer) => void)[] = [];
    const closed = new Promise<{ code: number; reason: string }>((r) =>
      ws.on('close', (code, reason) => r({ code, reason: reason.toString() })),
    );
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      const m = isBinary ? data : data.toString();
      const w = waiting.shift();
      if (w) w(m);
      else messages.push(m);
    });
    ws.on('unexpected-response', (_req, res: IncomingMessage) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => {
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
        ws.terminate();
      });
      res.on('error', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    ws.on('error', (err) => reject(err));
    ws.on('open', () =>
      resolve({
        ws,
        messages,
        closed,
        next: () => (messages.length > 0 ? Promise.resolve(messages.shift()!) : new Promise((r) => waiting.push(r))),
      }),
    );
  });
}

function opened(x: Opened | Refused): Opened {
  assert.ok('ws' in x, `the upgrade was refused: ${JSON.stringify(x)}`);
  return x;
}

function refused(x: Opened | Refused): Refused {
  if ('ws' in x) {
    x.ws.terminate();
    assert.fail('the upgrade was accepted');
  }
  return x;
}

/** The function's first message: `hello {path, headers, protocol}`. */
async function hello(o: Opened): Promise<{ path: string; headers: Record<string, string>; protocol: string }> {
  const m = await o.next();
  assert.equal(typeof m, 'string');
  assert.match(m as string, /^hello /);
  return JSON.parse((m as string).slice(6));
}

for (const scheme of ['ws', 'wss'] as const) {
// Through the TLS port every runtime joins the two sockets as Node does on its plain port (websocket-node.ts).
const piped = RUNTIME === 'node' || scheme === 'wss';
const connect_ = (path: string, opts?: Parameters<typeof connect>[2]) => connect(scheme, path, opts);
describe(`WebSocket proxying (enable_websocket), ${scheme}://`, { skip: scheme === 'wss' && NO_TLS_PORT }, () => {
  test('text and binary frames both ways through an upstream route; subprotocol and headers reach the function', async () => {
    await ok('PUT', '/routes/ws', { uri: '/echo/*', enable_websocket: true, upstream: upstream() });
    const o = opened(await connect_('/echo/a?x=1', { headers: { 'x-client': 'c1' }, protocols: ['chat.v1', 'chat.v2'] }));
    const h = await hello(o);
    assert.equal(h.path, '/echo/a?x=1');
    assert.equal(h.headers['x-client'], 'c1');
    assert.equal(h.headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(h.protocol, 'chat.v1');
    assert.equal(o.ws.protocol, 'chat.v1');
    o.ws.send('hello there');
    assert.equal(await o.next(), 'hello there');
    const bin = Buffer.from([0, 1, 2, 250, 251, 252, 253, 254, 255]);
    o.ws.send(bin);
    const back = await o.next();
    assert.ok(Buffer.isBuffer(back), 'binary stays binary');
    assert.deepEqual(back, bin);
    // A message larger than one TCP segment and than the runtimes' small buffers.
    const big = 'x'.repeat(300_000);
    o.ws.send(big);
    assert.equal(await o.next(), big);
    o.ws.close(1000);
    assert.equal((await o.closed).code, 1000);
  });

  test('an openfunction route: frames go to the function URL (path tail of a `*` route appended)', async () => {
    await ok('PUT', '/routes/ws-fn', {
      uri: '/fn/*',
      enable_websocket: true,
      plugins: { openfunction: { function_uri: `${fn.url}/echo/fn`, authorization: { service_token: 'u:p' } } },
    });
    const o = opened(await connect_('/fn/tail'));
    const h = await hello(o);
    assert.equal(h.path, '/echo/fn/tail');
    assert.equal(h.headers.authorization, `Basic ${Buffer.from('u:p').toString('base64')}`);
    o.ws.send('via function');
    assert.equal(await o.next(), 'via function');
    o.ws.close();
    await o.closed;
  });

  test('close codes and reasons propagate both ways', async () => {
    await ok('PUT', '/routes/ws', { uri: '/echo/*', enable_websocket: true, upstream: upstream() });
    // The function closes: the client sees its code and reason.
    const a = opened(await connect_('/echo/close'));
    await hello(a);
    a.ws.send('close:4002:done here');
    assert.deepEqual(await a.closed, { code: 4002, reason: 'done here' });
    // The client closes: the function sees its code.
    const b = opened(await connect_('/echo/close2'));
    await hello(b);
    b.ws.close(4001, 'bye');
    assert.equal((await b.closed).code, 4001);
    const deadline = Date.now() + 5000;
    while (!fn.closes.includes(4001) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.ok(fn.closes.includes(4001), `the function saw ${fn.closes.join(', ')}`);
  });

  test("the upstream's connection dropping (no close frame) closes the client's", async () => {
    await ok('PUT', '/routes/ws', { uri: '/echo/*', enable_websocket: true, upstream: upstream() });
    const o = opened(await connect_('/echo/drop'));
    await hello(o);
    o.ws.send('drop');
    const started = Date.now();
    const { code } = await o.closed;
    assert.ok(Date.now() - started < 5000);
    // Node drops the client's connection too (1006, as nginx); the relays cannot, and close without a code (1005),
    // except Bun, which drops it (1006).
    assert.ok(code === 1006 || (!piped && code === 1005), `close code ${code}`);
  });

  test("the upstream's refusal of the upgrade reaches the client with its status", async () => {
    await ok('PUT', '/routes/ws-deny', { uri: '/deny', enable_websocket: true, upstream: upstream() });
    const r = refused(await connect_('/deny'));
    assert.equal(r.status, 403);
    if (piped || RUNTIME === 'workerd') {
      // Node and Workers pass the upstream's answer whole; Deno's and Bun's WebSocket clients give only its status.
      assert.equal(r.headers['x-refused'], 'yes');
      assert.equal(r.body, 'refused by the function');
    }
  });

  test('without enable_websocket the upgrade reaches the upstream as a plain request (no Upgrade header), as APISIX', async () => {
    await ok('PUT', '/routes/ws-off', { uri: '/plain/*', upstream: upstream() });
    const accepted = fn.accepted;
    const r = refused(await connect_('/plain/x'));
    assert.equal(r.status, 200);
    assert.deepEqual(JSON.parse(r.body), { plain: true, upgrade: null, url: '/plain/x' });
    assert.equal(fn.accepted, accepted, 'the function never upgraded');
  });

  test('on an enable_websocket route, Upgrade: websocket without Connection: upgrade is a plain request', async () => {
    await ok('PUT', '/routes/ws', { uri: '/echo/*', enable_websocket: true, upstream: upstream() });
    const u = new URL(gw.proxyUrl);
    const got = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const where =
        scheme === 'wss'
          ? { host: '127.0.0.1', port: tlsPort, servername: SNI, rejectUnauthorized: false }
          : { host: u.hostname, port: u.port };
      const r = (scheme === 'wss' ? httpsRequest : httpRequest)(
        { ...where, path: '/echo/half', headers: { upgrade: 'websocket', connection: 'close' } },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => {
            body += d;
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        },
      );
      r.on('error', reject);
      r.end();
    });
    assert.equal(got.status, 200, got.body);
    assert.deepEqual(JSON.parse(got.body), { plain: true, upgrade: null, url: '/echo/half' });
  });

  test('an auth plugin runs before the upgrade: no key, 401 and nothing forwarded; with the key, frames flow', async () => {
    await ok('PUT', '/consumers', { username: 'wsuser', plugins: { 'key-auth': { key: 'ws-key-1' } } });
    await ok('PUT', '/routes/ws-auth', {
      uri: '/echo/auth',
      enable_websocket: true,
      plugins: { 'key-auth': {} },
      upstream: upstream(),
    });
    const accepted = fn.accepted;
    const r = refused(await connect_('/echo/auth'));
    assert.equal(r.status, 401);
    assert.match(r.body, /Missing API key/);
    assert.equal(fn.accepted, accepted, 'the upgrade was never forwarded');
    const o = opened(await connect_('/echo/auth', { headers: { apikey: 'ws-key-1' } }));
    await hello(o);
    o.ws.send('authorised');
    assert.equal(await o.next(), 'authorised');
    o.ws.close();
    await o.closed;
  });

  test("the route's read timeout closes an idle WebSocket", async () => {
    await ok('PUT', '/routes/ws-idle', {
      uri: '/echo/idle',
      enable_websocket: true,
      timeout: { connect: 1, send: 1, read: 1 },
      upstream: upstream(),
    });
    const o = opened(await connect_('/echo/idle'));
    await hello(o);
    // Traffic keeps it open past the timeout.
    for (let i = 0; i < 3; i++) {
      await new Promise((r) => setTimeout(r, 500));
      o.ws.send(`ping ${i}`);
      assert.equal(await o.next(), `ping ${i}`);
    }
    const started = Date.now();
    const { code } = await o.closed;
    const waited = Date.now() - started;
    assert.ok(waited >= 500 && waited < 6000, `closed after ${waited} ms of silence`);
    // Node closes the connection as nginx does (the client sees 1006).
    if (piped) assert.equal(code, 1006);
    // Deno, Bun, Workers relay frames: Bun drops the connection (1006); Deno's API can only close with a frame, and
    // no code but 1000 and 3000-4999 may be set, so it closes without one (1005).
    else assert.ok(code === 1005 || code === 1006, `close code ${code}`);
  });

  test('an unreachable upstream answers 502 (function: 503), as for a plain request', async () => {
    const port = await refusedPort();
    await ok('PUT', '/routes/ws-down', {
      uri: '/down',
      enable_websocket: true,
      upstream: { type: 'roundrobin', nodes: { [`127.0.0.1:${port}`]: 1 } },
    });
    assert.equal(refused(await connect_('/down')).status, 502);
    await ok('PUT', '/routes/ws-down-fn', {
      uri: '/down-fn',
      enable_websocket: true,
      plugins: { openfunction: { function_uri: `http://127.0.0.1:${port}/x` } },
    });
    assert.equal(refused(await connect_('/down-fn')).status, 503);
  });
});
}

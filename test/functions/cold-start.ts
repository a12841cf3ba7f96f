/**
 * Functions that sleep, for the cold-start tests and bench (test/conformance/cold-start.test.ts,
 * bench/cold-start.ts). Real servers on loopback, no mocks:
 *
 * - {@link startSleepyFunction}: a function that can be put to sleep (its listener closed and every connection
 *   destroyed: connects are refused, as for a function scaled to zero behind a plain Service) and woken on the same
 *   port. It answers `{"n": <request number>, "method", "body"}`; in `die` mode it reads the request and then
 *   destroys the connection without answering (a function that crashed mid-request). It counts every request it saw.
 * - {@link startActivator}: a Knative-activator-like stand-in in front of one: in `hold` mode it holds each request
 *   (body buffered) and retries the function every 10 ms until it answers, then passes the answer on; in `503` mode
 *   it answers 503 at once while the function refuses connections (an activator or ingress that gives up).
 */
import {
  createServer,
  request as httpRequest,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo } from 'node:net';

export interface SleepyFunction {
  readonly url: string;
  readonly port: number;
  /** Requests the function saw (a request counts once its head arrived, whatever happened next). */
  readonly requests: number;
  /** When it last started listening again (performance.now() of this process). */
  readonly wokeAt: number;
  mode: 'answer' | 'die';
  /** Stop listening and drop every connection: connects are refused from now on. */
  sleep(): Promise<void>;
  /** Listen again on the same port. */
  wake(): Promise<void>;
  /** Sleep now and wake after `ms` (resolves once asleep; `woken` resolves once listening again). */
  sleepFor(ms: number): Promise<{ woken: Promise<void> }>;
  close(): Promise<void>;
}

function collect(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

export async function startSleepyFunction(opts: { port?: number } = {}): Promise<SleepyFunction> {
  let server: Server | undefined;
  let port = opts.port ?? 0;
  let requests = 0;
  let wokeAt = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const handler = async (req: IncomingMessage, res: ServerResponse) => {
    const n = ++requests;
    if (fn.mode === 'die') {
      // Read the request (the function "started processing it"), then crash: no answer.
      await collect(req).catch(() => {});
      req.socket.destroy();
      return;
    }
    const body = await collect(req);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ n, method: req.method, body: body.toString() }));
  };
  const listen = () =>
    new Promise<void>((resolve, reject) => {
      const s = createServer((req, res) => void handler(req, res));
      s.once('error', reject);
      s.listen(port, '127.0.0.1', () => {
        port = (s.address() as AddressInfo).port;
        server = s;
        wokeAt = performance.now();
        resolve();
      });
    });
  const stop = () =>
    new Promise<void>((resolve) => {
      const s = server;
      server = undefined;
      if (!s) return resolve();
      s.close(() => resolve());
      s.closeAllConnections();
    });
  await listen();
  const fn: SleepyFunction = {
    get url() {
      return `http://127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    get requests() {
      return requests;
    },
    get wokeAt() {
      return wokeAt;
    },
    mode: 'answer',
    sleep: stop,
    async wake() {
      if (!server) await listen();
    },
    async sleepFor(ms) {
      await stop();
      const woken = new Promise<void>((resolve, reject) => {
        timer = setTimeout(() => fn.wake().then(resolve, reject), ms);
      });
      return { woken };
    },
    async close() {
      clearTimeout(timer);
      await stop();
    },
  };
  return fn;
}

export interface Activator {
  readonly url: string;
  /** Requests the activator received. */
  readonly requests: number;
  close(): Promise<void>;
}

/** A Knative-activator-like stand-in in front of `fn` (see the file comment). */
export async function startActivator(fn: SleepyFunction, mode: 'hold' | '503', holdMs = 10000): Promise<Activator> {
  let requests = 0;
  const timers = new Set<ReturnType<typeof setTimeout>>();
  const call = (req: IncomingMessage, body: Buffer) =>
    new Promise<{ status: number; headers: Record<string, string>; body: Buffer }>((resolve, reject) => {
      const headers = { ...req.headers, host: `127.0.0.1:${fn.port}` };
      delete headers['transfer-encoding'];
      headers['content-length'] = String(body.byteLength);
      const out = httpRequest(
        { host: '127.0.0.1', port: fn.port, path: req.url, method: req.method, headers, agent: false },
        (res) => {
          collect(res).then(
            (b) =>
              resolve({
                status: res.statusCode ?? 502,
                headers: { 'content-type': res.headers['content-type'] ?? 'text/plain' },
                body: b,
              }),
            reject,
          );
        },
      );
      out.on('error', reject);
      out.end(body);
    });
  const server = createServer(async (req, res) => {
    requests++;
    const body = await collect(req);
    const until = Date.now() + holdMs;
    for (;;) {
      try {
        const answer = await call(req, body);
        res.writeHead(answer.status, answer.headers);
        res.end(answer.body);
        return;
      } catch (err) {
        const refused = (err as { code?: string }).code === 'ECONNREFUSED';
        if (!refused || mode === '503' || Date.now() > until) {
          res.writeHead(refused ? 503 : 502, { 'content-type': 'text/plain' });
          res.end(refused ? 'activator: the revision is not ready\n' : 'activator: the revision failed\n');
          return;
        }
        await new Promise<void>((resolve) => {
          const t = setTimeout(() => {
            timers.delete(t);
            resolve();
          }, 10);
          timers.add(t);
        });
      }
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    get requests() {
      return requests;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const t of timers) clearTimeout(t);
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

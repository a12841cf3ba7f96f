/**
 * Forwarding-client benchmark. A node:http upstream answers 1 KiB (content-length known); N requests are
 * sent at concurrency C, bodies consumed, rounds interleaved (order reversed every other round).
 *
 * 1. direct: the forwarder's Response consumed by this process, against the global fetch.
 *    CPU µs/request = this process only (the upstream runs in its own process).
 * 2. through @hono/node-server: a Hono app in its own process forwards with the forwarder and returns its
 *    Response; load comes from this process (undici Pool). CPU µs/request = the gateway process only.
 *    Compares small bodies handed over as bytes (default) with always-streamed bodies.
 *
 * Loopback only. Usage: npx tsx bench/forwarder.bench.ts [N=20000] [C=50] [rounds=2]
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Pool } from 'undici';
import type { ForwardRequest } from '../src/core/upstream/types.ts';
import type { HeaderList } from '../src/core/upstream/headers.ts';
import { createNodeForwarder } from '../src/runtime/node-forwarder.ts';
import type { NodeForwarder } from '../src/runtime/node-forwarder.ts';

const KEEPALIVE = { enabled: true, idleTimeoutMs: 60_000, poolSize: 320 };

/** Child process: the Hono gateway. Prints its port; GET /__cpu/start and /__cpu/stop measure its CPU. */
async function runGateway(upstreamPort: number, bufferLimit: number): Promise<void> {
  const { serve } = await import('@hono/node-server');
  const { Hono } = await import('hono');
  const forward = createNodeForwarder({ bufferLimit });
  const app = new Hono();
  let cpu0 = process.cpuUsage();
  app.get('/__cpu/start', (c) => {
    cpu0 = process.cpuUsage();
    return c.text('ok');
  });
  app.get('/__cpu/stop', (c) => {
    const cpu = process.cpuUsage(cpu0);
    return c.text(String(cpu.user + cpu.system));
  });
  app.all('*', async (c) => {
    const raw = c.req.raw;
    const headers: HeaderList = [];
    raw.headers.forEach((value, name) => {
      if (name !== 'host' && name !== 'connection') headers.push([name, value]);
    });
    const res = await forward({
      url: `http://127.0.0.1:${upstreamPort}${c.req.path}`,
      method: raw.method,
      headers,
      body: raw.method === 'GET' || raw.method === 'HEAD' ? null : raw.body,
      clientSignal: () => raw.signal,
      timeout: 60_000,
      tlsVerify: true,
      keepalive: KEEPALIVE,
    });
    // Edit the headers in place and return the forwarder's own Response: rebuilding it with
    // `new Response(res.body, …)` would turn a byte body back into a stream.
    res.headers.delete('connection');
    res.headers.delete('keep-alive');
    return res;
  });
  const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info) => {
    process.stdout.write(`${info.port}\n`);
  });
  process.on('SIGTERM', () => {
    server.close();
    void forward.close().then(() => process.exit(0));
  });
}

const UPSTREAM = `
const http = require('node:http');
const body = Buffer.alloc(1024, 'x');
const server = http.createServer((req, res) => {
  req.resume();
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
  res.end(body);
});
server.keepAliveTimeout = 60000;
server.listen(0, '127.0.0.1', () => process.stdout.write(server.address().port + '\\n'));
`;

/** Spawns a process that prints its listening port on its first stdout line. */
async function startProcess(args: string[]): Promise<{ port: number; child: ChildProcess }> {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`${args.join(' ')} exited with ${code}`)));
    child.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
  });
  return { port, child };
}

async function stopProcess(child: ChildProcess): Promise<void> {
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await exited;
}

type Call = () => Promise<void>;
interface Figures {
  rps: number;
  cpuUs: number;
}

async function drain(body: ReadableStream<Uint8Array> | null): Promise<number> {
  if (!body) return 0;
  const reader = body.getReader();
  let n = 0;
  for (let r = await reader.read(); !r.done; r = await reader.read()) n += r.value.byteLength;
  return n;
}

async function load(call: Call, n: number, c: number): Promise<void> {
  let started = 0;
  const worker = async () => {
    while (started < n) {
      started++;
      await call();
    }
  };
  await Promise.all(Array.from({ length: c }, worker));
}

/** Warm-up, then N requests; CPU from `cpu` (µs consumed between its start and stop). */
async function measure(call: Call, n: number, c: number, cpu: { start(): Promise<void>; stop(): Promise<number> }) {
  await load(call, Math.min(3_000, n), c);
  await cpu.start();
  const t0 = performance.now();
  await load(call, n, c);
  const ms = performance.now() - t0;
  const us = await cpu.stop();
  return { rps: (n * 1000) / ms, cpuUs: us / n };
}

function selfCpu() {
  let cpu0 = process.cpuUsage();
  return {
    start: async () => {
      cpu0 = process.cpuUsage();
    },
    stop: async () => {
      const cpu = process.cpuUsage(cpu0);
      return cpu.user + cpu.system;
    },
  };
}

function line(label: string, f: Figures): string {
  return `${label.padEnd(52)} ${f.rps.toFixed(0).padStart(7)} req/s  ${f.cpuUs.toFixed(1).padStart(6)} µs CPU/req`;
}

async function rounds(title: string, variants: [string, () => Promise<Figures>][], count: number): Promise<void> {
  console.log(title);
  const all = new Map<string, Figures[]>(variants.map(([name]) => [name, []]));
  for (let round = 0; round < count; round++) {
    for (const [name, run] of round % 2 === 0 ? variants : [...variants].reverse()) {
      const f = await run();
      all.get(name)!.push(f);
      console.log(line(`  round ${round + 1}  ${name}`, f));
    }
  }
  for (const [name, list] of all) {
    const mean = (pick: (f: Figures) => number) => list.reduce((a, f) => a + pick(f), 0) / list.length;
    console.log(line(`  mean     ${name}`, { rps: mean((f) => f.rps), cpuUs: mean((f) => f.cpuUs) }));
  }
}

async function main(n: number, c: number, roundCount: number): Promise<void> {
  console.log(`N=${n} C=${c} rounds=${roundCount}, 1 KiB upstream body, node ${process.version}`);
  const upstream = await startProcess(['-e', UPSTREAM]);
  const url = `http://127.0.0.1:${upstream.port}/hello/bench`;

  // 1. direct
  const forwarderCall =
    (forward: NodeForwarder): Call =>
    async () => {
      const req: ForwardRequest = {
        url,
        method: 'GET',
        headers: [
          ['user-agent', 'bench'],
          ['accept', '*/*'],
        ],
        body: null,
        timeout: 60_000,
        tlsVerify: true,
        keepalive: KEEPALIVE,
      };
      const res = await forward(req);
      if ((await drain(res.body)) !== 1024) throw new Error('short body');
    };
  const bytes = createNodeForwarder();
  const streamed = createNodeForwarder({ bufferLimit: 0 });
  const fetchCall: Call = async () => {
    const res = await fetch(url, { headers: { 'user-agent': 'bench', accept: '*/*' }, redirect: 'manual' });
    if ((await drain(res.body)) !== 1024) throw new Error('short body');
  };
  await rounds(
    'direct (client process CPU):',
    [
      ['forwarder, small body as bytes (default)', () => measure(forwarderCall(bytes), n, c, selfCpu())],
      ['forwarder, always streamed', () => measure(forwarderCall(streamed), n, c, selfCpu())],
      ['global fetch', () => measure(fetchCall, n, c, selfCpu())],
    ],
    roundCount,
  );
  await Promise.all([bytes.close(), streamed.close()]);

  // 2. through @hono/node-server
  const self = fileURLToPath(import.meta.url);
  const viaGateway = async (bufferLimit: number): Promise<Figures> => {
    const gw = await startProcess([...process.execArgv, self, 'gateway', String(upstream.port), String(bufferLimit)]);
    const pool = new Pool(`http://127.0.0.1:${gw.port}`, { connections: c });
    const get = async (path: string) => {
      const res = await pool.request({ path, method: 'GET' });
      const body = await res.body.text();
      if (res.statusCode !== 200) throw new Error(`${path}: ${res.statusCode} ${body}`);
      return body;
    };
    try {
      return await measure(
        async () => {
          if ((await get('/hello/bench')).length !== 1024) throw new Error('short body');
        },
        n,
        c,
        { start: async () => void (await get('/__cpu/start')), stop: async () => Number(await get('/__cpu/stop')) },
      );
    } finally {
      await pool.close();
      await stopProcess(gw.child);
    }
  };
  await rounds(
    'through @hono/node-server (gateway process CPU):',
    [
      ['forwarder, small body as bytes (default)', () => viaGateway(16 * 1024)],
      ['forwarder, always streamed', () => viaGateway(0)],
    ],
    roundCount,
  );

  await stopProcess(upstream.child);
}

if (process.argv[2] === 'gateway') {
  await runGateway(Number(process.argv[3]), Number(process.argv[4]));
} else {
  await main(Number(process.argv[2] ?? 20_000), Number(process.argv[3] ?? 50), Number(process.argv[4] ?? 2));
}

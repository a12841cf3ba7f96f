/**
 * What observability costs (issue 16), printed, never asserted. `npx tsx bench/observability.ts [--pairs 6]
 * [--slice 3] [--runtimes node,bun] [--routes 10000]` (after `npm run build`).
 *
 * 1. prometheus as a global rule: on ONE gateway, paired wrk slices alternate between no global rule (A) and a
 *    global rule `{prometheus: {}}` (B), toggled through the Admin API between slices; each pair gives B ÷ A in CPU
 *    µs per request of the gateway's process, so the machine's drift cancels. Upstream: a node:http server.
 * 2. The access log: two gateways, ACCESS_LOG=off (A) and on (B, stdout to /dev/null), slices alternating between
 *    them, CPU µs per request of each.
 * 3. The scrape: an in-process gateway with `--routes` routes carrying prometheus, two status codes each (≈ 100,000
 *    series with the latency histograms); how long a scrape of `/apisix/prometheus/metrics` takes (answered from the
 *    latest render), how long a background render takes, and the longest the event loop stalled during each (a
 *    1 ms interval timer's worst lateness).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { silentLogger } from '../src/core/context.ts';
import { createGateway } from '../src/core/gateway.ts';
import { chunksText, RENDER_CHUNK } from '../src/core/observability/metrics.ts';
import { serve } from '@hono/node-server';
import { createInterface } from 'node:readline';
import type { AddressInfo } from 'node:net';

import { createNodeForwarder } from '../src/runtime/node-forwarder.ts';
import { MemoryStore } from '../src/store/memory.ts';
import { freePort } from '../test/helpers/process.ts';
import { fixed, markdownTable, median } from './lib/stats.ts';
import { cpuOf, fngateCommand, processTree, ROOT, sleep, which } from './lib/sys.ts';
import { runWrk, writeWrkScript } from './lib/wrk.ts';

const { values: flags } = parseArgs({
  options: {
    pairs: { type: 'string', default: '6' },
    slice: { type: 'string', default: '3' },
    runtimes: { type: 'string', default: 'node,bun' },
    routes: { type: 'string', default: '10000' },
    sections: { type: 'string', default: 'prometheus,accesslog,scrape' },
    /** The global rule's plugins for section 1 (JSON): compare another plugin's cost on the same path. */
    global: { type: 'string', default: '{"prometheus":{}}' },
  },
});
const PAIRS = Number(flags.pairs);
const SLICE = Number(flags.slice);
const KEY = 'bench-admin-key-0123456789abcdef';
const sections = flags.sections!.split(',');

const dir = mkdtempSync(join(tmpdir(), 'fngate-obs-bench-'));
const wrk = which('wrk');
const taskset = which('taskset');
const script = writeWrkScript(dir);

interface Gw {
  proc: ChildProcess;
  url: string;
  admin: string;
}

async function startGateway(runtime: string, env: Record<string, string>): Promise<Gw> {
  const proxyPort = await freePort();
  const adminPort = await freePort();
  const dataDir = mkdtempSync(join(dir, 'data-'));
  const out = openSync('/dev/null', 'w');
  // Bun as `npm run start:bun` runs it (its allocator setting), unless this shell or `env` says otherwise.
  const start = fngateCommand(runtime === 'bun' ? 'bun' : 'node', { env });
  const proc = spawn(taskset!, ['-c', '0', start.cmd, ...start.args], {
    env: {
      ...process.env,
      ...start.env,
      HOST: '127.0.0.1',
      PROXY_PORT: String(proxyPort),
      ADMIN_PORT: String(adminPort),
      ADMIN_KEY: KEY,
      DATA_DIR: dataDir,
      LOG_LEVEL: 'warn',
      // One proxy process, none of `npm start`'s extra ports.
      WORKERS: '1', STATUS_PORT: 'off', PROXY_HTTPS_PORT: 'off',
      PROMETHEUS_PORT: 'off',
      ACCESS_LOG: 'off',
      ...env,
    },
    stdio: ['ignore', out, 'inherit'],
    cwd: ROOT,
  });
  const admin = `http://127.0.0.1:${adminPort}`;
  for (let i = 0; i < 300; i++) {
    try {
      await fetch(`${admin}/apisix/admin/routes`, { headers: { 'x-api-key': KEY } });
      return { proc, url: `http://127.0.0.1:${proxyPort}`, admin };
    } catch {
      await sleep(100);
    }
  }
  throw new Error(`${runtime} gateway did not start`);
}

async function adminCall(gw: Gw, method: string, path: string, body?: unknown) {
  const res = await fetch(`${gw.admin}/apisix/admin${path}`, {
    method,
    headers: { 'x-api-key': KEY },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  await res.text();
  if (res.status >= 300 && !(method === 'DELETE' && res.status === 404)) throw new Error(`${method} ${path}: ${res.status}`);
}

async function stop(gw: Gw) {
  gw.proc.kill('SIGTERM');
  await new Promise((r) => gw.proc.once('exit', r));
}

async function slice(gw: Gw, url: string): Promise<number> {
  const before = cpuOf(processTree(gw.proc.pid!));
  const r = await runWrk({ wrk: wrk!, taskset: taskset!, core: 1, script, url, connections: 16, seconds: SLICE });
  if (r.errors > 0 || r.requests === 0) throw new Error(`wrk ${url}: ${r.requests} requests, ${r.errors} errors`);
  return ((cpuOf(processTree(gw.proc.pid!)) - before) * 1e6) / r.requests;
}

function summary(a: number[], b: number[]) {
  const ratios = a.map((x, i) => b[i]! / x);
  return [fixed(median(a), 1), fixed(median(b), 1), `${fixed(median(ratios), 3)} [${fixed(Math.min(...ratios), 3)}–${fixed(Math.max(...ratios), 3)}]`];
}

async function main() {
  // The upstream: a minimal node:http server on its own core.
  const upstream = spawn(taskset!, ['-c', '1', process.execPath, '-e', `require('node:http').createServer((q, s) => s.end('hello world\\n')).listen(${await freePort().then((p) => (process.env.UPSTREAM_PORT = String(p)))}, '127.0.0.1')`], { stdio: 'ignore' });
  const upstreamAddr = `127.0.0.1:${process.env.UPSTREAM_PORT}`;
  await sleep(500);
  const route = { uri: '/hello', upstream: { type: 'roundrobin', nodes: { [upstreamAddr]: 1 } } };
  const runtimes = flags.runtimes!.split(',');
  try {
    if (sections.includes('prometheus')) {
      const rows: string[][] = [];
      for (const rt of runtimes) {
        const gw = await startGateway(rt, {});
        try {
          await adminCall(gw, 'PUT', '/routes/1', route);
          const url = `${gw.url}/hello`;
          for (let w = 0; w < 2; w++) await runWrk({ wrk: wrk!, taskset: taskset!, core: 1, script, url, connections: 16, seconds: 2 });
          const a: number[] = [];
          const b: number[] = [];
          for (let i = 0; i < PAIRS; i++) {
            const order = i % 2 === 0 ? ['A', 'B'] : ['B', 'A'];
            for (const which of order) {
              if (which === 'B') await adminCall(gw, 'PUT', '/global_rules/prom', { plugins: JSON.parse(flags.global!) });
              else await adminCall(gw, 'DELETE', '/global_rules/prom');
              await sleep(200);
              (which === 'A' ? a : b).push(await slice(gw, url));
            }
          }
          rows.push([rt, ...summary(a, b)]);
        } finally {
          await stop(gw);
        }
      }
      console.log(`\n### ${flags.global} as a global rule, ${PAIRS} paired ${SLICE} s slices on one gateway (16 connections)\n`);
      console.log(markdownTable(['runtime', 'without, CPU µs/req', 'with, CPU µs/req', 'B ÷ A (median [min–max])'], rows));
    }

    if (sections.includes('accesslog')) {
      const rows: string[][] = [];
      for (const rt of runtimes) {
        const off = await startGateway(rt, { ACCESS_LOG: 'off' });
        const on = await startGateway(rt, { ACCESS_LOG: 'on' });
        try {
          for (const gw of [off, on]) await adminCall(gw, 'PUT', '/routes/1', route);
          for (const gw of [off, on]) for (let w = 0; w < 2; w++) await runWrk({ wrk: wrk!, taskset: taskset!, core: 1, script, url: `${gw.url}/hello`, connections: 16, seconds: 2 });
          const a: number[] = [];
          const b: number[] = [];
          for (let i = 0; i < PAIRS; i++) {
            const order = i % 2 === 0 ? [off, on] : [on, off];
            for (const gw of order) (gw === off ? a : b).push(await slice(gw, `${gw.url}/hello`));
          }
          rows.push([rt, ...summary(a, b)]);
        } finally {
          await stop(off);
          await stop(on);
        }
      }
      console.log(`\n### Access log (ACCESS_LOG=on, stdout to /dev/null) vs off, two gateways, ${PAIRS} paired ${SLICE} s slices\n`);
      console.log(markdownTable(['runtime', 'off, CPU µs/req', 'on, CPU µs/req', 'on ÷ off (median [min–max])'], rows));
    }

    if (sections.includes('scrape')) await scrape(Number(flags.routes), upstreamAddr);
  } finally {
    upstream.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
}

async function scrape(routes: number, upstreamAddr: string) {
  const store = new MemoryStore();
  const forwarder = createNodeForwarder();
  const gw = await createGateway({ store, forwarder, logger: silentLogger, clientIp: () => '127.0.0.1', observability: { refreshIntervalMs: 15_000 } });
  // Two upstreams: one answers 200, the other refuses (502): two status series per route.
  const closed = await freePort();
  for (let i = 0; i < routes; i++) {
    await store.put(`/apisix/routes/r${i}`, {
      id: `r${i}`,
      uri: `/r${i}`,
      name: `route "${i}"`,
      plugins: { prometheus: {} },
      upstream: { type: 'roundrobin', nodes: { [i % 2 ? upstreamAddr : `127.0.0.1:${closed}`]: 1 } },
    });
  }
  await gw.refresh();
  const hit = async (path: string) => {
    const res = await gw.serveProxy(new Request(`http://bench${path}`, { headers: { host: 'bench' } }));
    await res.arrayBuffer();
  };
  for (let i = 0; i < routes; i++) {
    await hit(`/r${i}`);
    await hit(`/r${i}?x`);
  }
  // The 404 series and a few consumers' worth of extra series come from unmatched paths.
  await new Promise((r) => setImmediate(r));
  const text0 = chunksText(await gw.obs.registry.render());
  const series = text0.split('\n').filter((l) => l && !l.startsWith('#')).length;
  // The worst lateness of a 1 ms interval timer while `work` runs: how long the proxy could not serve.
  // Also the CPU time the work took, which a busy machine inflates less than the wall time.
  const stalled = async (work: () => Promise<unknown>): Promise<[number, number, number]> => {
    let worst = 0;
    let last = performance.now();
    const probe = setInterval(() => {
      const now = performance.now();
      worst = Math.max(worst, now - last - 1);
      last = now;
    }, 1);
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    await work();
    const took = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    clearInterval(probe);
    worst = Math.max(worst, performance.now() - last - 1);
    return [took, (cpu.user + cpu.system) / 1000, worst];
  };
  // A scrape as Prometheus makes it: the export server's answer, read to its end.
  // A scrape as Prometheus makes it: over HTTP from another process, served by @hono/node-server from the
  // export server's handler, so the gateway writes to a socket as it does on PROMETHEUS_PORT.
  const exportServer = serve({ fetch: gw.obs.serveMetrics, hostname: '127.0.0.1', port: 0 });
  await new Promise<void>((r) => exportServer.once('listening', () => r()));
  const metricsUrl = `http://127.0.0.1:${(exportServer.address() as AddressInfo).port}/apisix/prometheus/metrics`;
  // The scraper: one long-lived process (spawning curl per scrape would fork this big process each time, itself a
  // stall of several ms) that has curl fetch the URL on each line it reads and answers "status bytes".
  const scraper = spawn(
    process.execPath,
    ['-e', `require('node:readline').createInterface({ input: process.stdin }).on('line', (u) => require('node:child_process').execFile('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code} %{size_download}', u], (e, out) => process.stdout.write(out + '\\n')));`],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  const answers = createInterface({ input: scraper.stdout! });
  const scrapeOnce = () =>
    new Promise<void>((resolve, reject) => {
      answers.once('line', (line) => {
        const [status, bytes] = line.split(' ').map(Number);
        if (status !== 200 || bytes! < text0.length / 2) reject(new Error(`scrape: ${line}`));
        else resolve();
      });
      scraper.stdin!.write(`${metricsUrl}\n`);
    });
  const cold = await stalled(scrapeOnce);
  const renders: [number, number, number][] = [];
  const scrapes: [number, number, number][] = [];
  // The background render as the export server runs it: over the buffers of the render before the last one.
  let prev: Uint8Array[] = [];
  for (let k = 0; k < 5; k++) {
    renders.push(
      await stalled(async () => {
        const spare = prev.filter((c) => c.buffer.byteLength === RENDER_CHUNK).map((c) => new Uint8Array(c.buffer));
        prev = await gw.obs.registry.render(undefined, undefined, spare);
      }),
    );
    scrapes.push(await stalled(scrapeOnce));
  }
  exportServer.close();
  scraper.kill();
  const col = (xs: [number, number, number][], i: 0 | 1 | 2) => `${fixed(median(xs.map((x) => x[i])), 1)} / ${fixed(Math.max(...xs.map((x) => x[i])), 1)}`;
  console.log(`\n### /apisix/prometheus/metrics with ${routes} routes (${series} sample lines, ${(text0.length / 1e6).toFixed(1)} MB), Node\n`);
  console.log(
    markdownTable(
      ['', 'wall ms (median / max of 5)', 'CPU ms', 'longest event-loop stall meanwhile, ms'],
      [
        ['a scrape, answered from the latest render', col(scrapes, 0), col(scrapes, 1), col(scrapes, 2)],
        ['a background render (every refresh interval)', col(renders, 0), col(renders, 1), col(renders, 2)],
        ['the first scrape (waits for a render)', fixed(cold[0], 1), fixed(cold[1], 1), fixed(cold[2], 1)],
      ],
    ),
  );
  await gw.close();
  await forwarder.close();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

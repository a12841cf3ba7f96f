/**
 * WORKERS=1 vs WORKERS=2 throughput of the gateway on this machine, and a paper projection to 16 cores.
 *
 *   npm run build && npx tsx bench/workers.ts [--runtime node|deno|bun] [--seconds 10] [--rounds 3] [--connections 64]
 *
 * `--runtime` (default node): Node `dist/runtime/node.js` (node:cluster), Deno `deno task start` (the primary starts
 * its workers itself, Deno.serve reusePort: src/runtime/workers-deno.ts), Bun `bun run src/runtime/bun.ts`
 * (node:cluster, Bun.serve reusePort).
 *
 * Setup, the same in both runs: the upstream (nginx, `/hello`, 1 KiB answers) and the load generator (wrk, one
 * thread, `--connections` kept-alive connections) are pinned together to core 0 with taskset; the gateway (its
 * primary and workers) may run on cores 0 and 1 (`taskset -c 0,1`). So the load generator gets the same pinning in
 * both runs: core 0, which with WORKERS=1 it shares with the upstream (the gateway's one process mostly runs on
 * core 1), and with WORKERS=2 also with one of the workers (the kernel balances them). The script prints the CPU
 * seconds the gateway and the upstream used in each run, so the share each got can be read off (wrk's own is the
 * rest of core 0).
 * The route is the benchmarks' `openfunction` route (bench/lib/route.ts). Rounds alternate the two settings.
 *
 * The 16-core projection is arithmetic on the measured figures, with its assumptions printed next to it.
 * Other processes on the machine (load average printed) disturb the figures; they assert nothing.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { freePort, startProcess } from '../test/helpers/process.ts';
import { startUpstream } from './lib/nginx.ts';
import { functionRoute, LOAD_CORE } from './lib/route.ts';
import { median } from './lib/stats.ts';
import { cpuOf, fngateCommand, loadAverage, type ProcessRuntime, processTree, requireTools, sleep } from './lib/sys.ts';
import { runWrk, writeWrkScript } from './lib/wrk.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '3' },
    connections: { type: 'string', default: '64' },
    runtime: { type: 'string', default: 'node' },
  },
});
const RUNTIMES: readonly ProcessRuntime[] = ['node', 'deno', 'bun'];
const RUNTIME = values.runtime as ProcessRuntime;
if (!RUNTIMES.includes(RUNTIME)) throw new Error(`--runtime ${values.runtime}: one of ${RUNTIMES.join(', ')}`);
const SECONDS = Number(values.seconds);
const ROUNDS = Number(values.rounds);
const CONNECTIONS = Number(values.connections);
const KEY = 'bench-admin-key-0123456789abcdef';
/** APISIX's published figure: 18,000 QPS per core (apisix.apache.org, "Benchmark": 1 worker, no plugins). */
const APISIX_QPS_PER_CORE = 18_000;

const tools = requireTools();
const dir = mkdtempSync(join(tmpdir(), 'fngate-bench-workers-'));
const upstreamPort = await freePort();
const upstream = await startUpstream(tools.nginx, tools.taskset, LOAD_CORE, dir, upstreamPort);
const script = writeWrkScript(dir);

async function gateway(workers: number) {
  const [proxyPort, adminPort, statusPort] = [await freePort(), await freePort(), await freePort()];
  // Bun as `npm run start:bun` runs it (its allocator setting), unless this shell says otherwise.
  const start = fngateCommand(RUNTIME);
  const proc = await startProcess({
    cmd: tools.taskset,
    args: ['-c', '0,1', start.cmd, ...start.args],
    // deno task reads the deno.json of its working directory.
    cwd: start.cwd ?? dir,
    env: {
      ...start.env,
      HOST: '127.0.0.1',
      PROXY_PORT: String(proxyPort),
      ADMIN_PORT: String(adminPort),
      STATUS_PORT: String(statusPort),
      PROMETHEUS_PORT: 'off',
      PROXY_HTTPS_PORT: 'off',
      ACCESS_LOG: 'off',
      LOG_LEVEL: 'warn',
      ADMIN_KEY: KEY,
      DATA_DIR: mkdtempSync(join(dir, 'data-')),
      WORKERS: String(workers),
    },
    readyUrl: `http://127.0.0.1:${statusPort}/status`,
    timeoutMs: 30_000,
  });
  for (;;) {
    const r = await fetch(`http://127.0.0.1:${statusPort}/status/ready`).catch(() => undefined);
    if (r?.status === 200) break;
    await sleep(100);
  }
  const put = await fetch(`http://127.0.0.1:${adminPort}/apisix/admin/routes/bench`, {
    method: 'PUT',
    headers: { 'x-api-key': KEY },
    body: JSON.stringify(functionRoute(upstreamPort, 64)('bench', '/hello/*')),
  });
  if (!put.ok) throw new Error(`PUT route: ${put.status} ${await put.text()}`);
  const url = `http://127.0.0.1:${proxyPort}/hello/world`;
  const check = await fetch(url);
  if (check.status !== 200) throw new Error(`the route answers ${check.status}`);
  await check.text();
  return { proc, url };
}

interface Run {
  workers: number;
  rps: number;
  errors: number;
  gatewayCpuS: number;
  upstreamCpuS: number;
}

async function measure(workers: number): Promise<Run> {
  const gw = await gateway(workers);
  try {
    // Warm-up (JIT, connection pools), not counted.
    await runWrk({ wrk: tools.wrk, taskset: tools.taskset, core: LOAD_CORE, script, url: gw.url, connections: CONNECTIONS, seconds: 2 });
    const gwPids = processTree(gw.proc.pid);
    const upPids = processTree(upstream.proc.pid);
    const gw0 = cpuOf(gwPids);
    const up0 = cpuOf(upPids);
    const r = await runWrk({ wrk: tools.wrk, taskset: tools.taskset, core: LOAD_CORE, script, url: gw.url, connections: CONNECTIONS, seconds: SECONDS });
    const gatewayCpuS = cpuOf(gwPids) - gw0;
    const upstreamCpuS = cpuOf(upPids) - up0;
    return { workers, rps: r.rps, errors: r.errors, gatewayCpuS, upstreamCpuS };
  } finally {
    await gw.proc.kill('SIGTERM', 5000);
  }
}

const runs: Run[] = [];
console.log(`runtime: ${RUNTIME}; load average before: ${loadAverage().join(' ')}`);
for (let round = 0; round < ROUNDS; round++) {
  for (const w of round % 2 === 0 ? [1, 2] : [2, 1]) {
    const r = await measure(w);
    runs.push(r);
    console.log(
      `round ${round + 1} WORKERS=${w}: ${Math.round(r.rps)} req/s, ${r.errors} errors, gateway CPU ${r.gatewayCpuS.toFixed(1)} s (${((r.gatewayCpuS / (r.rps * SECONDS)) * 1e6).toFixed(0)} µs/request), upstream CPU ${r.upstreamCpuS.toFixed(1)} s over ${SECONDS} s`,
    );
  }
}
console.log(`load average after: ${loadAverage().join(' ')}`);

const of = (w: number) => runs.filter((r) => r.workers === w);
const rps1 = median(of(1).map((r) => r.rps));
const rps2 = median(of(2).map((r) => r.rps));
const cpuPerReq1 = median(of(1).map((r) => r.gatewayCpuS / (r.rps * SECONDS)));
const cpuPerReq2 = median(of(2).map((r) => r.gatewayCpuS / (r.rps * SECONDS)));
console.log('\n| WORKERS | req/s (median) | gateway CPU per request |');
console.log('|---|---|---|');
console.log(`| 1 | ${Math.round(rps1)} | ${(cpuPerReq1 * 1e6).toFixed(0)} µs |`);
console.log(`| 2 | ${Math.round(rps2)} | ${(cpuPerReq2 * 1e6).toFixed(0)} µs |`);
console.log(`\nWORKERS=2 / WORKERS=1: ${(rps2 / rps1).toFixed(2)}x throughput on ${2} cores shared with the load generator and upstream.`);

// Projection: one worker per core, each core doing nothing but the gateway's work (load generator and upstream on
// other machines), at the measured CPU cost per request: that of WORKERS=2 (it includes the primary's share and
// the contention of this run) and, as the optimistic bound, that of WORKERS=1.
const project = (cpuPerReq: number, what: string) => {
  const perCore = 1 / cpuPerReq;
  const total = 16 * perCore;
  console.log(
    `  from ${what}: ${Math.round(perCore)} req/s per core x 16 = ${Math.round(total)} req/s (APISIX 16 x ${APISIX_QPS_PER_CORE} = ${16 * APISIX_QPS_PER_CORE}; ratio ${(total / (16 * APISIX_QPS_PER_CORE)).toFixed(2)})`,
  );
};
console.log('\n16-core projection (paper arithmetic, not a measurement): per-core capacity = 1 / gateway CPU per request');
project(cpuPerReq2, `WORKERS=2's ${(cpuPerReq2 * 1e6).toFixed(0)} µs/request`);
project(cpuPerReq1, `WORKERS=1's ${(cpuPerReq1 * 1e6).toFixed(0)} µs/request`);
console.log(`  assumptions: WORKERS=16 on 16 dedicated cores; load generator and functions on other machines; the CPU cost
  per request stays what it is here (with WORKERS=2 it includes the primary's share: on Node accepting connections
  and handing them over, small with kept-alive connections; on Deno and Bun the kernel spreads them (reusePort)); no shared bottleneck (NIC, kernel accept queue, memory
  bandwidth) and no cross-worker state on the request path (none in fngate: each worker has its own snapshot);
  APISIX's 18k QPS/core is its published single-worker figure without plugins, on other hardware; this route has
  the openfunction plugin (service_token) and a 1 KiB answer. A load average above the core count (printed) inflates
  the CPU per request (context switches, cold caches) and makes every figure here pessimistic.`);

await upstream.stop();
rmSync(dir, { recursive: true, force: true });

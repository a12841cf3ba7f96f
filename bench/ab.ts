/**
 * Paired A/B of two fngate checkouts on one runtime: is a change faster, when the difference is smaller than the
 * drift of a shared machine between two `npm run bench` runs?
 *
 *   npx tsx bench/ab.ts --a <other checkout | floor> [--b <checkout, default this one>] [--runtime node|bun|deno|workerd]
 *                       [--pairs 8] [--seconds 2] [--connections 50] [--env-a K=V ...] [--env-b K=V ...]
 *
 * Both gateways run at once, pinned to core 1, serving the same `openfunction` route (`/hello/*` with a
 * `service_token`, as `npm run bench`) from a standalone CONFIG_FILE; the nginx upstream and wrk share core 0.
 * Short wrk slices alternate A, B, B, A, ... and each pair gives a ratio B ÷ A of CPU µs per request (the gateway's
 * process tree); the machine's drift is shared by the two halves of a pair and cancels out. Prints every slice,
 * the median ratio with its range, and how many pairs B won. Each checkout must be built as its runtime needs it
 * (Node: `npm run build` there, for dist/; Bun and Deno run src/ directly; Deno needs the checkout's node_modules;
 * workerd: each checkout's Worker bundle is built with `wrangler deploy --dry-run` there and run under bare
 * `workerd serve`, the routes from STANDALONE_CONFIG, as `npm run bench` runs it).
 * `--a floor` pairs fngate with the runtime's floor instead (bench/lib/gateways.ts: `floor`, `bun-floor`,
 * `deno-floor`, `workerd-floor`), so B ÷ A is fngate ÷ its floor, the issue's ratio, with the drift cancelled.
 * `--a floor-plus` (or `--b floor-plus`) is the runtime's floor plus only what a correct gateway must do (timeout,
 * client abort, header hygiene, one route: `bun-floor-plus`, `deno-floor-plus`, `workerd-floor-plus`; bench/README.md,
 * "Floor-plus"): `--a floor --b floor-plus` costs those steps (FLOOR_PLUS in `--env-b` picks them, default all),
 * `--a floor-plus` is fngate's own overhead beyond them.
 * Bun runs as `npm run start:bun` runs it, with src/runtime/bun-allocator.ts's setting unless a side's environment
 * sets it; the Bun floor runs as Bun ships. `--env-a` / `--env-b` (repeatable) add environment variables to one side only, so A and B may be one checkout
 * run two ways (`--a . --env-a MIMALLOC_PURGE_DELAY=10`: what does Bun's allocator setting, bench/README.md, save?); the floors get them too.
 * Loopback only; no assertions.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { freePort, type Proc, startProcess, tmpDir } from '../test/helpers/process.ts';
import { LAUNCHERS, launchWorkerd } from './lib/gateways.ts';
import { startUpstream } from './lib/nginx.ts';
import { AUTHORIZATION, functionRoute, GATEWAY_CORE, LOAD_CORE } from './lib/route.ts';
import { median } from './lib/stats.ts';
import { cpuOf, docComment, fngateCommand, type ProcessRuntime, processTree, requireTools, ROOT } from './lib/sys.ts';
import { runWrk, writeWrkScript } from './lib/wrk.ts';

const { values: flags } = parseArgs({
  options: {
    a: { type: 'string' },
    b: { type: 'string' },
    runtime: { type: 'string' },
    pairs: { type: 'string' },
    seconds: { type: 'string' },
    connections: { type: 'string' },
    'env-a': { type: 'string', multiple: true },
    'env-b': { type: 'string', multiple: true },
    help: { type: 'boolean', short: 'h' },
  },
});
if (flags.help || !flags.a) {
  console.log(docComment(import.meta.url));
  process.exit(flags.help ? 0 : 2);
}
const runtime = flags.runtime ?? 'node';
if (!['node', 'bun', 'deno', 'workerd'].includes(runtime))
  throw new Error(`--runtime must be node, bun, deno or workerd, not ${runtime}`);
const pairs = Number(flags.pairs ?? 8);
const seconds = Number(flags.seconds ?? 2);
const connections = Number(flags.connections ?? 50);
// `floor` / `floor-plus` (either side): the runtime's floor, or its floor plus what a correct gateway must do
// (bench/lib/floor-plus-fetch.ts; its steps by FLOOR_PLUS in `--env-a`/`--env-b`; Deno and workerd).
const FLOORS = ['floor', 'floor-plus'];
const floorKey = (v: string) => (runtime === 'node' && v === 'floor' ? 'floor' : `${runtime}-${v}`);
const floorA = FLOORS.includes(flags.a);
const trees = { A: floorA ? flags.a : resolve(flags.a), B: flags.b && FLOORS.includes(flags.b) ? flags.b : resolve(flags.b ?? ROOT) };
/** `--env-a`/`--env-b`: K=V pairs for one side's environment. */
function envFlags(list: string[] | undefined, flag: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const kv of list ?? []) {
    const eq = kv.indexOf('=');
    if (eq < 1) throw new Error(`--${flag} takes NAME=value, not ${kv}`);
    env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return env;
}
const sideEnv = { A: envFlags(flags['env-a'], 'env-a'), B: envFlags(flags['env-b'], 'env-b') };

const tools = requireTools();
const dir = await tmpDir('fngate-ab-');
const upstreamPort = await freePort();
const upstream = await startUpstream(tools.nginx, tools.taskset, LOAD_CORE, dir, upstreamPort);
const config = join(dir, 'config.json');
writeFileSync(config, JSON.stringify({ routes: [functionRoute(upstreamPort, 256)('bench', '/hello/*')] }));
const script = writeWrkScript(dir);

interface Gateway {
  name: 'A' | 'B';
  url: string;
  proc: Proc;
}

async function start(name: 'A' | 'B'): Promise<Gateway> {
  const root = trees[name];
  const ctx = {
    taskset: tools.taskset,
    core: GATEWAY_CORE,
    dir,
    upstreamPort,
    config: readFileSync(config, 'utf8'),
    authorization: AUTHORIZATION,
    logLevel: 'warn',
    env: sideEnv[name],
  };
  if (FLOORS.includes(root)) {
    const launch = LAUNCHERS[floorKey(root)];
    if (!launch) throw new Error(`no ${root} for ${runtime} (bench/lib/gateways.ts)`);
    const t = await launch(ctx);
    return { name, url: `${t.url}/hello/world`, proc: t.proc };
  }
  if (runtime === 'workerd') {
    const t = await launchWorkerd(ctx, root);
    return { name, url: `${t.url}/hello/world`, proc: t.proc };
  }
  const proxyPort = await freePort();
  const adminPort = await freePort();
  // Bun as `npm run start:bun` runs it (its allocator setting), unless this side's environment says otherwise.
  const start = fngateCommand(runtime as ProcessRuntime, { root, env: sideEnv[name] });
  const proc = await startProcess({
    cmd: tools.taskset,
    args: ['-c', String(GATEWAY_CORE), start.cmd, ...start.args],
    cwd: root,
    env: {
      HOST: '127.0.0.1',
      PROXY_PORT: String(proxyPort),
      ADMIN_HOST: '127.0.0.1',
      ADMIN_PORT: String(adminPort),
      ADMIN_KEY: 'bench-admin-key-0123456789abcdef',
      LOG_LEVEL: 'warn',
      // One proxy process, none of `npm start`'s extra ports nor its access log (as `npm run bench`).
      ACCESS_LOG: 'off', PROMETHEUS_PORT: 'off',
      WORKERS: '1', STATUS_PORT: 'off', PROXY_HTTPS_PORT: 'off',
      CONFIG_FILE: config,
      DATA_DIR: join(dir, `data-${name}`),
      NO_COLOR: '1',
      ...start.env,
      ...sideEnv[name],
    },
    readyUrl: `http://127.0.0.1:${adminPort}/apisix/admin`,
    timeoutMs: 60_000,
  });
  return { name, url: `http://127.0.0.1:${proxyPort}/hello/world`, proc };
}

/** Requests served in `s` seconds of wrk; any socket error or non-2xx answer fails the run. */
async function wrk(url: string, s: number): Promise<number> {
  const r = await runWrk({ wrk: tools.wrk, taskset: tools.taskset, core: LOAD_CORE, script, url, connections, seconds: s });
  if (r.errors > 0 || r.requests === 0) throw new Error(`wrk against ${url}: ${r.requests} requests, ${r.errors} errors`);
  return r.requests;
}

/** CPU µs per request of one slice. */
async function slice(g: Gateway): Promise<number> {
  const before = cpuOf(processTree(g.proc.pid));
  const requests = await wrk(g.url, seconds);
  return ((cpuOf(processTree(g.proc.pid)) - before) * 1e6) / requests;
}

const gateways = [await start('A'), await start('B')];
try {
  for (const g of gateways) await wrk(g.url, 3); // warm-up (JIT, connection pools)
  const a: number[] = [];
  const b: number[] = [];
  const ratios: number[] = [];
  for (let i = 0; i < pairs; i++) {
    const order = i % 2 === 0 ? gateways : [...gateways].reverse();
    const r: Record<string, number> = {};
    for (const g of order) r[g.name] = await slice(g);
    a.push(r.A!);
    b.push(r.B!);
    ratios.push(r.B! / r.A!);
  }
  const row = (xs: number[]) => xs.map((x) => x.toFixed(1)).join(' ');
  console.log(`${runtime}, ${pairs} pairs of ${seconds} s slices, wrk -c${connections}; CPU µs per request:`);
  const label = (side: 'A' | 'B') =>
    [trees[side], ...Object.entries(sideEnv[side]).map(([k, v]) => `${k}=${v}`)].join(' ');
  console.log(`A ${label('A')}: ${row(a)}  (median ${median(a).toFixed(1)})`);
  console.log(`B ${label('B')}: ${row(b)}  (median ${median(b).toFixed(1)})`);
  console.log(
    `B ÷ A: median ${median(ratios).toFixed(3)} [${Math.min(...ratios).toFixed(3)}–${Math.max(...ratios).toFixed(3)}]; ` +
      `B used less CPU in ${ratios.filter((x) => x < 1).length} of ${pairs} pairs`,
  );
} finally {
  for (const g of gateways) await g.proc.kill('SIGTERM', 3000);
  await upstream.stop();
}

/**
 * `npm run bench`: fngate against nginx on this machine, re-runnable by anyone. Loopback only; installs nothing
 * system-wide (nginx and wrk must be there already: it prints the apt-get command when they are not).
 *
 *   npm run bench -- [--rounds 3] [--duration 10] [--warmup 5] [--c1 5] [--connections 50]
 *                    [--runtimes node,bun,deno,workerd] [--no-fastify] [--floor]
 *                    [--sections main,routes,streaming,plugins,limits] [--routes 10000] [--route-rounds 2]
 *                    [--plugin-pairs 8] [--plugin-runtimes node,bun] [--services 100]
 *                    [--node-entry <dist/runtime/node.js to run as "node">] [--node-entry-b <another one, as "node-b">]
 *                    [--pool <keepalive_pool of the route, default 256>] [--quick] [--out <file.json>]
 *
 * Layout (2 cores): the gateway under test is pinned to core 1 (`taskset -c 1`, all its processes and threads),
 * the upstream (nginx answering 1 KiB) and wrk share core 0. Sections:
 * - main:      direct / nginx reverse proxy / each runtime / fastify + reply-from, through a real `openfunction`
 *              route with a `service_token`, wrk -t1 -c50, interleaved rounds (bench/lib/main-matrix.ts).
 *              `--floor` adds each runtime's floor, the least a proxy does there, not a gateway: `floor` (node:http
 *              + undici Pool.stream) for node, `bun-floor` / `deno-floor` / `workerd-floor` (the runtime's serve +
 *              fetch, the upstream's Response returned as it is) for the others in --runtimes; the goals table
 *              then shows each goal's figure for the runtime's own floor too (bench/lib/gateways.ts), and fngate ÷
 *              floor per round; each floor runs next to fngate on its runtime in every round;
 * - routes:    1 route vs 10,000 routes (the last one requested); matcher and snapshot rebuild times; how soon an
 *              Admin API change is served; requests' latency while the table is rebuilt (bench/lib/routes.ts);
 * - streaming: a 100 MiB response and a 100 MiB upload through a function route, the gateway's RSS growth
 *              (bench/lib/streaming.ts); with `--floor`, each runtime's floor moves the same bytes after it.
 * - plugins:   the plugin runtime's cost: a function route with request-id + cors + proxy-rewrite +
 *              response-rewrite against the same route with openfunction alone (paired slices on one gateway, Node
 *              and Bun), and a service change with 10,000 routes over 100 services (bench/lib/plugins.ts).
 * - limits:    key-auth (1,000 consumers) + limit-count (local) on a function route against the route alone (paired
 *              slices, Node and Bun), and the p50/p99 latency limit-count with Redis adds (local redis-server;
 *              bench/lib/limits.ts).
 * Prints Markdown tables and writes everything to bench/results/<timestamp>.json. No assertions: people judge.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, statSync, writeFileSync, readdirSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { freePort, tmpDir } from '../test/helpers/process.ts';
import { type LaunchContext, launchNode } from './lib/gateways.ts';
import { checkGoals, FLOOR_OF, floorLines, goalsTable, matrixTable, runMatrix } from './lib/main-matrix.ts';
import { helloBody, startNginxProxy, startUpstream } from './lib/nginx.ts';
import { AUTHORIZATION, functionRoute, GATEWAY_CORE, LOAD_CORE } from './lib/route.ts';
import { limitsSection } from './lib/limits.ts';
import { pluginsSection } from './lib/plugins.ts';
import { routesSection } from './lib/routes.ts';
import { streamingSection } from './lib/streaming.ts';
import { BIN, docComment, loadAverage, requireTools, ROOT, versionOf } from './lib/sys.ts';
import { writeWrkScript } from './lib/wrk.ts';

const { values: flags } = parseArgs({
  options: {
    rounds: { type: 'string' },
    duration: { type: 'string' },
    warmup: { type: 'string' },
    c1: { type: 'string' },
    connections: { type: 'string' },
    runtimes: { type: 'string' },
    'no-fastify': { type: 'boolean' },
    floor: { type: 'boolean' },
    sections: { type: 'string' },
    routes: { type: 'string' },
    'route-rounds': { type: 'string' },
    'plugin-pairs': { type: 'string' },
    'plugin-runtimes': { type: 'string' },
    services: { type: 'string' },
    'route-runtimes': { type: 'string' },
    'node-entry': { type: 'string' },
    'node-entry-b': { type: 'string' },
    'node-args': { type: 'string' },
    pool: { type: 'string' },
    quick: { type: 'boolean' },
    out: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
  allowPositionals: false,
});

if (flags.help) {
  console.log(docComment(import.meta.url));
  process.exit(0);
}

const quick = flags.quick ?? false;
const num = (v: string | undefined, dflt: number) => (v === undefined ? dflt : Number(v));
const opts = {
  rounds: num(flags.rounds, quick ? 1 : 3),
  durationS: num(flags.duration, quick ? 4 : 10),
  warmupS: num(flags.warmup, quick ? 2 : 5),
  c1S: num(flags.c1, quick ? 0 : 5),
  connections: num(flags.connections, 50),
  runtimes: (flags.runtimes ?? 'node,bun,deno,workerd').split(',').filter(Boolean),
  fastify: !flags['no-fastify'],
  floor: flags.floor ?? false,
  sections: (flags.sections ?? 'main,routes,streaming').split(',').filter(Boolean),
  routeCount: num(flags.routes, 10_000),
  routeRounds: num(flags['route-rounds'], quick ? 1 : 2),
  routeRuntimes: (flags['route-runtimes'] ?? 'node').split(',').filter(Boolean),
  pluginPairs: num(flags['plugin-pairs'], quick ? 4 : 8),
  pluginRuntimes: (flags['plugin-runtimes'] ?? 'node,bun').split(',').filter(Boolean),
  services: num(flags.services, 100),
  nodeEntry: flags['node-entry'] ? resolve(flags['node-entry']) : undefined,
  nodeEntryB: flags['node-entry-b'] ? resolve(flags['node-entry-b']) : undefined,
  nodeArgs: flags['node-args']?.split(' ').filter(Boolean),
  /**
   * The route's openfunction `keepalive_pool`: 256 by default, the nginx reference proxy's `keepalive 256`, so
   * both keep as many idle upstream connections (APISIX's default of 5 makes a c=50 load reconnect all the time
   * on runtimes that honour it as an idle cap, Deno).
   */
  pool: flags.pool === undefined ? 256 : Number(flags.pool),
};

const tools = requireTools();
const started = new Date();
const stamp = started.toISOString().replace(/[:.]/g, '-');
const command = `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`;
const lines: string[] = [];
const log = (s: string) => {
  console.log(s);
  lines.push(s);
};

/** dist/ must be current (the Node entry runs from it). */
function buildIfStale(): void {
  const newest = (dir: string): number => {
    let t = 0;
    for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
      if (e.isFile()) t = Math.max(t, statSync(join(e.parentPath, e.name)).mtimeMs);
    }
    return t;
  };
  let built = 0;
  try {
    built = statSync(join(ROOT, 'dist/runtime/node.js')).mtimeMs;
  } catch {
    built = 0;
  }
  if (built >= newest(join(ROOT, 'src'))) return;
  log('building dist/ (npm run build) ...');
  const res = spawnSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'inherit' });
  if (res.status !== 0) log('warning: `npm run build` reported errors; running dist/ as emitted');
}

const dir = await tmpDir('fngate-bench-');
let cleaned = false;
const cleanup = () => {
  if (cleaned) return;
  cleaned = true;
  rmSync(dir, { recursive: true, force: true });
};
process.on('exit', cleanup);

const versions = {
  node: process.version,
  bun: versionOf(BIN.bun, ['--version']),
  deno: versionOf(BIN.deno, ['--version']),
  workerd: versionOf(BIN.workerd, ['--version']),
  nginx: versionOf(tools.nginx, ['-v']),
  wrk: versionOf(tools.wrk, ['-v']),
};
const machine = { cpus: cpus().length, cpuModel: cpus()[0]?.model, memGiB: Math.round(totalmem() / 2 ** 30), loadAtStart: loadAverage() };
const gitRev = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).stdout.trim();
const gitDirty = spawnSync('git', ['status', '--porcelain', 'src'], { cwd: ROOT, encoding: 'utf8' }).stdout.trim() !== '';

log(`fngate benchmark, ${started.toISOString()} — ${command}`);
log(`machine: ${machine.cpus} cores (${machine.cpuModel}), ${machine.memGiB} GiB, load ${machine.loadAtStart.join(' ')}; git ${gitRev}${gitDirty ? ' + uncommitted src changes' : ''}`);
log(`versions: node ${versions.node}, bun ${versions.bun}, ${versions.deno}, workerd ${versions.workerd}, ${versions.nginx}, ${versions.wrk}`);
log(`layout: gateway on core ${GATEWAY_CORE}; upstream nginx + wrk on core ${LOAD_CORE}. Temp dir ${dir}`);

buildIfStale();
const script = writeWrkScript(dir);
const upstreamPort = await freePort();
const upstream = await startUpstream(tools.nginx, tools.taskset, LOAD_CORE, dir, upstreamPort);
const proxy = await startNginxProxy(tools.nginx, tools.taskset, GATEWAY_CORE, dir, await freePort(), upstreamPort, AUTHORIZATION);

const route = functionRoute(upstreamPort, opts.pool);
const launch: LaunchContext = {
  taskset: tools.taskset,
  core: GATEWAY_CORE,
  dir,
  upstreamPort,
  config: JSON.stringify({ routes: [route('bench', '/hello/*')] }),
  authorization: AUTHORIZATION,
  nodeArgs: opts.nodeArgs,
  nodeEntry: opts.nodeEntry,
};
const measureOpts = {
  wrk: tools.wrk,
  taskset: tools.taskset,
  loadCore: LOAD_CORE,
  script,
  connections: opts.connections,
  warmupS: opts.warmupS,
  durationS: opts.durationS,
  c1S: opts.c1S,
};

const results: Record<string, unknown> = {
  command,
  started: started.toISOString(),
  machine,
  versions,
  git: { rev: gitRev, dirtySrc: gitDirty },
  options: opts,
  layout: { gatewayCore: GATEWAY_CORE, loadCore: LOAD_CORE, body: '1 KiB', path: '/hello/world' },
};
const notes: string[] = [];

try {
  if (opts.sections.includes('main')) {
    // Each runtime's own floor (`--floor`): the least a proxy does there (bench/lib/gateways.ts), measured right
    // after (or, in the reversed rounds, right before) fngate on it, so that the pair's ratio sees the least drift.
    const variants = ['direct', 'nginx'];
    for (const rt of opts.runtimes) {
      variants.push(rt);
      if (opts.floor && FLOOR_OF[rt]) variants.push(FLOOR_OF[rt]);
    }
    if (opts.nodeEntryB) variants.push('node-b');
    if (opts.fastify) variants.push('fastify');
    else notes.push('fastify row skipped (--no-fastify)');
    for (const n of notes) log(n);
    log(`\n## main matrix: ${opts.rounds} round(s) × [${variants.join(', ')}], wrk -t1 -c${opts.connections} -d${opts.durationS}s after ${opts.warmupS}s warm-up${opts.c1S ? `, then c=1 for ${opts.c1S}s` : ''}`);
    const entryB = opts.nodeEntryB;
    const m = await runMatrix({
      ...measureOpts,
      rounds: opts.rounds,
      variants,
      path: '/hello/world',
      expected: helloBody('world'),
      upstream,
      proxy,
      launch,
      extraLaunchers: entryB ? { 'node-b': (ctx) => launchNode({ ...ctx, nodeEntry: entryB }, 'node-b') } : undefined,
      log,
    });
    const goals = checkGoals(m.summary);
    results.main = { runs: m.runs, summary: m.summary, goals, failures: m.failures };
    log(`\n### Main matrix (median over ${opts.rounds} round(s) [min–max]; ratios per round against the same round's references)\n`);
    log(matrixTable(m.summary));
    log(`\n### Goals (issue)\n`);
    log(goalsTable(goals));
    const floors = floorLines(m.summary, m.runs);
    if (floors.length) {
      log(`\nEach runtime's floor (same run; a goal its floor misses cannot be met by a gateway on that runtime):\n`);
      for (const l of floors) log(l);
    }
    if (m.failures.length) log(`\nfailures:\n${m.failures.join('\n')}`);
  }

  if (opts.sections.includes('routes')) {
    results.routes = await routesSection({
      ...measureOpts,
      launch,
      route,
      count: opts.routeCount,
      rounds: opts.routeRounds,
      runtimes: opts.routeRuntimes,
      expected: helloBody('world'),
      log,
    });
  }

  // The plugin sections share their setup: paired slices on one gateway per runtime.
  const pairedOpts = {
    ...measureOpts,
    launch,
    route,
    expected: helloBody('world'),
    runtimes: opts.pluginRuntimes,
    pairs: opts.pluginPairs,
    sliceS: Math.max(2, Math.round(opts.durationS / 4)),
    routes: opts.routeCount,
    services: opts.services,
    log,
  };
  if (opts.sections.includes('plugins')) results.plugins = await pluginsSection(pairedOpts);
  if (opts.sections.includes('limits')) results.limits = await limitsSection(pairedOpts);

  if (opts.sections.includes('streaming')) {
    results.streaming = await streamingSection({
      launch,
      runtimes: opts.runtimes,
      floors: opts.floor ? FLOOR_OF : undefined,
      log,
    });
  }
} finally {
  await proxy.stop();
  await upstream.stop();
}

results.finished = new Date().toISOString();
results.loadAtEnd = loadAverage();
results.notes = notes;
const outFile = flags.out ? resolve(flags.out) : join(ROOT, 'bench/results', `${stamp}.json`);
mkdirSync(join(outFile, '..'), { recursive: true });
writeFileSync(outFile, `${JSON.stringify({ ...results, log: lines }, null, 2)}\n`);
log(`\nresults: ${outFile}`);
cleanup();
process.exit(0);

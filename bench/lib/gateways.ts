/**
 * Starting each system under test on the gateway's core (`taskset -c <core>`, inherited by every process and
 * thread it starts), bound to 127.0.0.1, and stopping it by its own process group.
 *
 * - node:    `node dist/runtime/node.js` (what `npm start` runs)
 * - bun:     `bun run src/runtime/bun.ts` (`npm run start:bun`)
 * - deno:    `deno task start` (deno.json: computes the narrow permissions, then runs the gateway)
 * - workerd: the Worker bundle `wrangler deploy --dry-run` builds, run by bare `workerd serve` with a generated
 *            capnp config (the routes come from the STANDALONE_CONFIG var; ADMIN_KEY unset, so no Admin API)
 * - fastify: fastify + @fastify/reply-from with their defaults (devDependencies; bench/lib/fastify-proxy.mjs)
 *
 * The floors (`--floor`), the least a proxy can do on each runtime, not gateways (no routing, no header hygiene
 * beyond dropping Host and hop-by-hop headers, no timeouts, no framework): each adds `Authorization` and
 * `X-Forwarded-For` and hands the upstream's answer back as it comes. Env: PORT, UPSTREAM, AUTHORIZATION.
 * - floor:         node:http + undici Pool.stream (bench/lib/floor.mjs)
 * - bun-floor:     `bun run bench/lib/floor-bun.ts`: Bun.serve + Bun's fetch, its Response returned as it is
 * - bun-floor-plus: `bun run bench/lib/floor-plus-bun.ts`: the Bun floor plus a correct gateway's minimum (timeout,
 *                  client abort, header hygiene, one route), each step switchable by FLOOR_PLUS
 * - deno-floor:    `deno run --no-config --allow-net=127.0.0.1 --allow-env=<the three> bench/lib/floor-deno.ts`:
 *                  Deno.serve + Deno's fetch, its Response returned as it is
 * - workerd-floor: bench/lib/floor-worker.js (an ES-module Worker, no imports) under bare `workerd serve`, with
 *                  the same compatibility date/flags as fngate's Worker; UPSTREAM and AUTHORIZATION as text bindings
 * The floor-plus variants (issue 19): the floor plus only what a correct gateway must do for the bench's route (the
 * call's timeout, the client's abort, header hygiene, one route lookup), each step switched by FLOOR_PLUS
 * (bench/lib/floor-plus-fetch.ts; env, or a text binding on workerd):
 * - deno-floor-plus:    bench/lib/floor-plus-deno.ts, as deno-floor plus `--unstable-no-legacy-abort` (as fngate)
 * - workerd-floor-plus: bench/lib/floor-plus-worker.ts bundled by esbuild into one module, as workerd-floor
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, type Proc, startProcess } from '../../test/helpers/process.ts';
import { BIN, fngateCommand, ROOT } from './sys.ts';

export interface Target {
  name: string;
  /** Base URL of the proxy, e.g. http://127.0.0.1:41234 */
  url: string;
  /** Admin API base URL when there is one. */
  adminUrl?: string;
  /** Root of the process tree to account CPU and memory to. */
  pid: number;
  proc: Proc;
  stop(): Promise<void>;
}

export interface LaunchContext {
  taskset: string;
  core: number;
  /** Scratch directory of this run. */
  dir: string;
  /** Port of the upstream function (nginx). */
  upstreamPort: number;
  /** The standalone config (JSON text) to serve; ignored by the peers. */
  config: string;
  /** Serve from a file store in this directory (with the Admin API) instead of the standalone config. */
  dataDir?: string;
  adminKey?: string;
  logLevel?: string;
  /** Extra `node` flags (e.g. --cpu-prof). */
  nodeArgs?: string[];
  /** The Node entry to run (default dist/runtime/node.js). */
  nodeEntry?: string;
  /** Extra environment. */
  env?: Record<string, string>;
  /** Authorization header value the peers add (the route's service_token, encoded). */
  authorization: string;
}

let seq = 0;

function configFile(ctx: LaunchContext): string {
  const file = join(ctx.dir, `config-${process.pid}-${++seq}.json`);
  writeFileSync(file, ctx.config);
  return file;
}

async function gatewayEnv(ctx: LaunchContext): Promise<{ env: Record<string, string>; proxyPort: number; adminPort: number }> {
  const proxyPort = await freePort();
  const adminPort = await freePort();
  const env: Record<string, string> = {
    HOST: '127.0.0.1',
    PROXY_PORT: String(proxyPort),
    ADMIN_HOST: '127.0.0.1',
    ADMIN_PORT: String(adminPort),
    ADMIN_KEY: ctx.adminKey ?? 'bench-admin-key-0123456789abcdef',
    LOG_LEVEL: ctx.logLevel ?? 'warn',
    // One process, and none of `npm start`'s extra ports: the figures are those of one proxy process.
    ACCESS_LOG: 'off',
    PROMETHEUS_PORT: 'off',
    WORKERS: '1', STATUS_PORT: 'off', PROXY_HTTPS_PORT: 'off',
    ...ctx.env,
  };
  if (ctx.dataDir) env.DATA_DIR = ctx.dataDir;
  else {
    env.CONFIG_FILE = configFile(ctx);
    env.DATA_DIR = join(ctx.dir, `data-${++seq}`);
  }
  return { env, proxyPort, adminPort };
}

function target(name: string, proc: Proc, url: string, adminUrl?: string): Target {
  return {
    name,
    url,
    adminUrl,
    pid: proc.pid,
    proc,
    async stop() {
      await proc.kill('SIGTERM', 3000);
    },
  };
}

export async function launchNode(ctx: LaunchContext, name = 'node'): Promise<Target> {
  const { env, proxyPort, adminPort } = await gatewayEnv(ctx);
  const start = fngateCommand('node', { nodeEntry: ctx.nodeEntry, nodeArgs: ctx.nodeArgs });
  const adminUrl = `http://127.0.0.1:${adminPort}`;
  const proc = await startProcess({
    cmd: ctx.taskset,
    args: ['-c', String(ctx.core), start.cmd, ...start.args],
    env,
    cwd: ctx.dir,
    readyUrl: `${adminUrl}/apisix/admin`,
    timeoutMs: 30_000,
  });
  return target(name, proc, `http://127.0.0.1:${proxyPort}`, adminUrl);
}

export async function launchBun(ctx: LaunchContext): Promise<Target> {
  const { env, proxyPort, adminPort } = await gatewayEnv(ctx);
  const start = fngateCommand('bun', { env });
  const adminUrl = `http://127.0.0.1:${adminPort}`;
  const proc = await startProcess({
    cmd: ctx.taskset,
    args: ['-c', String(ctx.core), start.cmd, ...start.args],
    env: { ...start.env, ...env }, // as `npm run start:bun` runs it
    cwd: ROOT,
    readyUrl: `${adminUrl}/apisix/admin`,
    timeoutMs: 30_000,
  });
  return target('bun', proc, `http://127.0.0.1:${proxyPort}`, adminUrl);
}

export async function launchDeno(ctx: LaunchContext): Promise<Target> {
  const { env, proxyPort, adminPort } = await gatewayEnv(ctx);
  const start = fngateCommand('deno');
  const adminUrl = `http://127.0.0.1:${adminPort}`;
  const proc = await startProcess({
    cmd: ctx.taskset,
    args: ['-c', String(ctx.core), start.cmd, ...start.args],
    env: { ...start.env, ...env },
    cwd: ROOT,
    readyUrl: `${adminUrl}/apisix/admin`,
    timeoutMs: 60_000,
  });
  return target('deno', proc, `http://127.0.0.1:${proxyPort}`, adminUrl);
}

/** The Worker bundle of a checkout (default this one), built once per run exactly as `wrangler deploy` would (nothing is published). */
const bundleDirs = new Map<string, string>();
export function bundleWorker(dir: string, root = ROOT): string {
  const built = bundleDirs.get(root);
  if (built) return built;
  const out = join(dir, `worker-bundle-${bundleDirs.size}`);
  const res = spawnSync(process.execPath, [BIN.wrangler, 'deploy', '--dry-run', '--outdir', out], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, WRANGLER_SEND_METRICS: 'false', WRANGLER_LOG_PATH: join(dir, 'wrangler-logs') },
  });
  if (res.status !== 0 || !existsSync(join(out, 'worker.js'))) {
    throw new Error(`wrangler deploy --dry-run failed:\n${res.stdout}\n${res.stderr}`);
  }
  bundleDirs.set(root, out);
  return out;
}

/** compatibility_date / compatibility_flags of wrangler.toml (the only parts the capnp config needs). */
function wranglerCompat(): { date: string; flags: string[] } {
  const toml = readFileSync(join(ROOT, 'wrangler.toml'), 'utf8');
  const date = /^compatibility_date\s*=\s*"([^"]+)"/m.exec(toml)?.[1] ?? '2026-04-20';
  const flagsRaw = /^compatibility_flags\s*=\s*\[([^\]]*)\]/m.exec(toml)?.[1] ?? '';
  const flags = [...flagsRaw.matchAll(/"([^"]+)"/g)].map((m) => m[1]!);
  return { date, flags };
}

/**
 * Runs `worker` (an ES module file) under bare `workerd serve` on the gateway's core, with wrangler.toml's
 * compatibility date and flags, outbound fetches allowed to loopback, and the given text bindings (a value
 * `{ embed: file }` embeds a file of the config directory).
 */
async function serveWorker(
  ctx: LaunchContext,
  name: string,
  worker: string,
  bindings: Record<string, string | { embed: string }>,
  files: Record<string, string> = {},
): Promise<Target> {
  const port = await freePort();
  const cfgDir = join(ctx.dir, `${name}-${++seq}`);
  mkdirSync(cfgDir, { recursive: true });
  // capnp `embed` paths are relative to the config file.
  copyFileSync(worker, join(cfgDir, 'worker.js'));
  for (const [file, text] of Object.entries(files)) writeFileSync(join(cfgDir, file), text);
  const { date, flags } = wranglerCompat();
  const bindingLines = Object.entries(bindings).map(([key, value]) =>
    typeof value === 'string'
      ? `    (name = ${JSON.stringify(key)}, text = ${JSON.stringify(value)}),`
      : `    (name = ${JSON.stringify(key)}, text = embed ${JSON.stringify(value.embed)}),`,
  );
  const capnp = `using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "main", worker = .worker),
    # Outbound fetches may reach loopback ("local"): the function is on 127.0.0.1.
    (name = "internet", network = (allow = ["public", "private", "local"])),
  ],
  sockets = [ (name = "http", address = "127.0.0.1:${port}", http = (), service = "main") ],
);

const worker :Workerd.Worker = (
  modules = [ (name = "worker.js", esModule = embed "worker.js") ],
  compatibilityDate = "${date}",
  compatibilityFlags = [${flags.map((f) => JSON.stringify(f)).join(', ')}],
  bindings = [
${bindingLines.join('\n')}
  ],
  globalOutbound = "internet",
);
`;
  const file = join(cfgDir, 'config.capnp');
  writeFileSync(file, capnp);
  const url = `http://127.0.0.1:${port}`;
  const proc = await startProcess({
    cmd: ctx.taskset,
    args: ['-c', String(ctx.core), BIN.workerd, 'serve', file],
    cwd: cfgDir,
    readyUrl: `${url}/__bench_ready`,
    timeoutMs: 30_000,
  });
  return target(name, proc, url);
}

/**
 * fngate's Worker bundle (of the checkout at `root`, default this one); the routes come from the STANDALONE_CONFIG
 * var (ADMIN_KEY unset: no Admin API).
 */
export function launchWorkerd(ctx: LaunchContext, root = ROOT): Promise<Target> {
  return serveWorker(
    ctx,
    'workerd',
    join(bundleWorker(ctx.dir, root), 'worker.js'),
    {
      STANDALONE_CONFIG: { embed: 'standalone.json' },
      STANDALONE_FORMAT: 'json',
      LOG_LEVEL: ctx.logLevel ?? 'warn',
      // As the other runtimes' bench gateways (gatewayEnv): the figures are those of the proxy, without the access log.
      ACCESS_LOG: 'off',
    },
    { 'standalone.json': ctx.config },
  );
}

/** A proxy script from bench/lib (the peers and floors), with the upstream and the Authorization to add in env. */
async function launchScript(
  ctx: LaunchContext,
  name: string,
  argv: (script: string) => string[],
  script: string,
  env: Record<string, string> = {},
): Promise<Target> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const proc = await startProcess({
    cmd: ctx.taskset,
    args: ['-c', String(ctx.core), ...argv(join(ROOT, 'bench/lib', script))],
    env: {
      PORT: String(port),
      UPSTREAM: `http://127.0.0.1:${ctx.upstreamPort}`,
      AUTHORIZATION: ctx.authorization,
      ...env,
      ...ctx.env,
    },
    cwd: ROOT,
    readyUrl: `${url}/__bench_ready`,
    timeoutMs: 30_000,
  });
  return target(name, proc, url);
}

const nodeArgv = (ctx: LaunchContext) => (file: string) => [process.execPath, ...(ctx.nodeArgs ?? []), file];

export const launchFastify = (ctx: LaunchContext): Promise<Target> =>
  launchScript(ctx, 'fastify', nodeArgv(ctx), 'fastify-proxy.mjs');
export const launchFloor = (ctx: LaunchContext): Promise<Target> =>
  launchScript(ctx, 'floor', nodeArgv(ctx), 'floor.mjs');
export const launchBunFloor = (ctx: LaunchContext): Promise<Target> =>
  launchScript(ctx, 'bun-floor', (file) => [BIN.bun, 'run', file], 'floor-bun.ts');
export const launchBunFloorPlus = (ctx: LaunchContext): Promise<Target> =>
  launchScript(ctx, 'bun-floor-plus', (file) => [BIN.bun, 'run', file], 'floor-plus-bun.ts');
export const launchDenoFloor = (ctx: LaunchContext): Promise<Target> =>
  launchScript(
    ctx,
    'deno-floor',
    (file) => [
      BIN.deno,
      'run',
      '--no-config',
      '--allow-net=127.0.0.1',
      '--allow-env=PORT,UPSTREAM,AUTHORIZATION',
      file,
    ],
    'floor-deno.ts',
    { NO_COLOR: '1', DENO_NO_UPDATE_CHECK: '1' },
  );

/** bench/lib/floor-worker.js under bare `workerd serve`, configured as fngate's Worker is. */
export function launchWorkerdFloor(ctx: LaunchContext): Promise<Target> {
  return serveWorker(ctx, 'workerd-floor', join(ROOT, 'bench/lib/floor-worker.js'), {
    UPSTREAM: `http://127.0.0.1:${ctx.upstreamPort}`,
    AUTHORIZATION: ctx.authorization,
  });
}

/** bench/lib/floor-plus-deno.ts (see the header); FLOOR_PLUS, TIMEOUT_MS and CLOCK come from `ctx.env`. */
export const launchDenoFloorPlus = (ctx: LaunchContext): Promise<Target> =>
  launchScript(
    ctx,
    'deno-floor-plus',
    (file) => [
      BIN.deno,
      'run',
      '--no-config',
      '--unstable-no-legacy-abort',
      '--allow-net=127.0.0.1',
      '--allow-env=PORT,UPSTREAM,AUTHORIZATION,FLOOR_PLUS,TIMEOUT_MS,CLOCK',
      file,
    ],
    'floor-plus-deno.ts',
    { NO_COLOR: '1', DENO_NO_UPDATE_CHECK: '1' },
  );

/** bench/lib/floor-plus-worker.ts bundled into one ES module; `ctx.env` (FLOOR_PLUS, TIMEOUT_MS) become text bindings. */
export function launchWorkerdFloorPlus(ctx: LaunchContext): Promise<Target> {
  const out = join(ctx.dir, `floor-plus-worker-${++seq}.js`);
  const res = spawnSync(
    join(ROOT, 'node_modules/.bin/esbuild'), // wrangler's, a devDependency already
    [join(ROOT, 'bench/lib/floor-plus-worker.ts'), '--bundle', '--format=esm', '--platform=neutral', '--target=es2022', `--outfile=${out}`],
    { encoding: 'utf8' },
  );
  if (res.status !== 0) throw new Error(`esbuild floor-plus-worker.ts failed:\n${res.stderr}`);
  return serveWorker(ctx, 'workerd-floor-plus', out, {
    UPSTREAM: `http://127.0.0.1:${ctx.upstreamPort}`,
    AUTHORIZATION: ctx.authorization,
    ...ctx.env,
  });
}

export type Launcher = (ctx: LaunchContext) => Promise<Target>;

export const LAUNCHERS: Record<string, Launcher> = {
  node: (ctx) => launchNode(ctx),
  bun: launchBun,
  deno: launchDeno,
  workerd: (ctx) => launchWorkerd(ctx),
  fastify: launchFastify,
  floor: launchFloor,
  'bun-floor': launchBunFloor,
  'bun-floor-plus': launchBunFloorPlus,
  'deno-floor': launchDenoFloor,
  'workerd-floor': launchWorkerdFloor,
  'deno-floor-plus': launchDenoFloorPlus,
  'workerd-floor-plus': launchWorkerdFloorPlus,
};

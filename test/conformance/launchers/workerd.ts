/**
 * Workers: the Worker bundle `wrangler deploy --dry-run` builds, executed by the real workerd, one port for proxy
 * and Admin API (`adminUrl = proxyUrl`).
 *
 * Default: Miniflare's Node API in a child process (this same file, run with FNGATE_WORKERD_SERVE set), with the
 * compatibility date, flags, vars, KV binding and Durable Object bindings of wrangler.toml. `FNGATE_WORKERD_VIA=wrangler` runs the real
 * `wrangler dev` instead: it works, but is slower to start, and its proxy layer (a Worker in front of ours, which
 * production does not have) hangs on the next request after one whose body was answered half-read (the Admin
 * API's 413), so it is not the default.
 *
 * Settings become Worker vars; KV is persisted under DATA_DIR; CONFIG_FILE (a standalone config on Node) becomes
 * the STANDALONE_CONFIG var, read once (no reload on change, as in production). A developer's `.dev.vars` never
 * leaks in: the config is a copy of wrangler.toml in a scratch directory. `FNGATE_WORKER_MAIN` bundles another
 * entry instead of src/runtime/worker.ts (e.g. a patched copy under .wrangler/, to try a change of the core).
 *
 * Bundling (`wrangler deploy --dry-run`, ~3 s) and reading wrangler.toml (importing wrangler, ~1 s) happen once per
 * test process, and node:test runs every test file in a process of its own. `npm test` (test/run.mjs) therefore
 * names a directory in FNGATE_WORKERD_CACHE, made fresh for that run: the first file to start a Worker bundles into
 * it and the later files of the run reuse that bundle and those settings (the source does not change during a run).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, extname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { freePort, startProcess } from '../../helpers/process.ts';
import type { LaunchOptions, Launched } from '../harness.ts';

const ROOT = new URL('../../..', import.meta.url).pathname;
const WRANGLER = join(ROOT, 'node_modules/wrangler/bin/wrangler.js');

/** Settings that mean something to the Node entry only (ports, file store, etcd): not passed to the Worker. */
const NODE_ONLY = new Set(['HOST', 'PROXY_PORT', 'ADMIN_HOST', 'ADMIN_PORT', 'DATA_DIR', 'CONFIG_FILE']);

interface Scratch {
  dir: string;
  config: string;
}

let scratch: Scratch | undefined;

/** wrangler.toml copied with an absolute `main`, in a scratch directory removed when the test process exits. */
function scratchConfig(): Scratch {
  if (scratch) return scratch;
  const dir = mkdtempSync(join(tmpdir(), 'fngate-workerd-'));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  const toml = readFileSync(join(ROOT, 'wrangler.toml'), 'utf8');
  const main = JSON.stringify(process.env.FNGATE_WORKER_MAIN ?? join(ROOT, 'src/runtime/worker.ts'));
  const config = join(dir, 'wrangler.toml');
  writeFileSync(config, toml.replace(/^main\s*=.*$/m, `main = ${main}`));
  scratch = { dir, config };
  return scratch;
}

let bundled: string | undefined;

/**
 * FNGATE_WORKERD_CACHE (set by test/run.mjs for one `npm test`): where the bundle and the wrangler.toml settings are
 * kept for the later test files of the run. Not used for a bundle of another entry (FNGATE_WORKER_MAIN).
 */
const CACHE = process.env.FNGATE_WORKER_MAIN ? undefined : process.env.FNGATE_WORKERD_CACHE;

/** Move a finished `from` to `to` in one step, so that a reader of `to` never sees half of it. */
function publish(from: string, to: string): void {
  mkdirSync(dirname(to), { recursive: true });
  try {
    renameSync(from, to);
  } catch (err) {
    // Another test process published it first (run.mjs runs files one at a time, so this is only a safeguard).
    if (!existsSync(to)) throw err;
    rmSync(from, { recursive: true, force: true });
  }
}

/** Bundle the Worker once per test run (or process), exactly as `wrangler deploy` would; returns the output directory. */
function bundle(): string {
  if (bundled) return bundled;
  const cached = CACHE && join(CACHE, 'bundle');
  if (cached && existsSync(join(cached, 'worker.js'))) {
    bundled = cached;
    return cached;
  }
  const { dir, config } = scratchConfig();
  const out = join(dir, 'bundle');
  const res = spawnSync(process.execPath, [WRANGLER, 'deploy', '--dry-run', '--outdir', out, '--config', config], {
    cwd: dir,
    encoding: 'utf8',
    env: { ...process.env, WRANGLER_SEND_METRICS: 'false', WRANGLER_LOG_PATH: join(dir, 'logs') },
  });
  if (res.status !== 0) throw new Error(`wrangler deploy --dry-run failed:\n${res.stdout}\n${res.stderr}`);
  if (cached) {
    publish(out, cached);
    bundled = cached;
  } else {
    bundled = out;
  }
  return bundled;
}

async function workerVars(env: LaunchOptions['env']): Promise<Record<string, string>> {
  const vars: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    if (value === undefined || NODE_ONLY.has(name) || name.startsWith('ETCD_')) continue;
    vars[name] = value;
  }
  if (env.CONFIG_FILE) {
    vars.STANDALONE_CONFIG = await readFile(env.CONFIG_FILE, 'utf8');
    vars.STANDALONE_FORMAT = extname(env.CONFIG_FILE).toLowerCase() === '.json' ? 'json' : 'yaml';
  }
  return vars;
}

/** What Miniflare needs from wrangler.toml (read with wrangler's own reader, once per test process). */
interface TomlOptions {
  compatibilityDate?: string;
  compatibilityFlags: string[];
  kvNamespaces: Record<string, string>;
  /** Durable Object bindings: binding name → class name (in the Worker's own bundle). */
  durableObjects: Record<string, string>;
  vars: Record<string, string>;
}

let tomlOptions: TomlOptions | undefined;

async function readToml(): Promise<TomlOptions> {
  if (tomlOptions) return tomlOptions;
  const cached = CACHE && join(CACHE, 'toml.json');
  if (cached && existsSync(cached)) {
    tomlOptions = JSON.parse(readFileSync(cached, 'utf8')) as TomlOptions;
    return tomlOptions;
  }
  const { unstable_readConfig } = await import('wrangler');
  const config = unstable_readConfig({ config: scratchConfig().config });
  const vars: Record<string, string> = {};
  for (const [k, v] of Object.entries(config.vars ?? {})) vars[k] = typeof v === 'string' ? v : JSON.stringify(v);
  tomlOptions = {
    compatibilityDate: config.compatibility_date,
    compatibilityFlags: config.compatibility_flags ?? [],
    kvNamespaces: Object.fromEntries(
      (config.kv_namespaces ?? []).map((ns: { binding: string; id?: string }) => [ns.binding, ns.id ?? ns.binding]),
    ),
    durableObjects: Object.fromEntries(
      (config.durable_objects?.bindings ?? []).map((b: { name: string; class_name: string }) => [b.name, b.class_name]),
    ),
    vars,
  };
  if (cached) {
    const tmp = `${cached}.${process.pid}`;
    mkdirSync(CACHE, { recursive: true });
    writeFileSync(tmp, JSON.stringify(tomlOptions));
    publish(tmp, cached);
  }
  return tomlOptions;
}

const SERVE_LOG = /fngate \(workerd via Miniflare\) listening on (http:\/\/\S+:\d+)\n/;

interface ServeConfig {
  toml: TomlOptions;
  bundleDir: string;
  vars: Record<string, string>;
  persistDir: string;
}

export async function launch(opts: LaunchOptions): Promise<Launched> {
  const vars = await workerVars(opts.env);
  if (process.env.FNGATE_WORKERD_VIA === 'wrangler') {
    const proxyUrl = `http://127.0.0.1:${await freePort()}`;
    const args = [WRANGLER, 'dev', '--config', scratchConfig().config, '--local', '--ip', '127.0.0.1'];
    args.push('--port', new URL(proxyUrl).port, '--inspector-port', String(await freePort()));
    args.push('--persist-to', join(opts.dataDir, 'wrangler-state'), '--log-level', 'warn');
    args.push('--show-interactive-dev-session=false');
    for (const [name, value] of Object.entries(vars)) args.push('--var', `${name}:${value}`);
    const proc = await startProcess({
      cmd: process.execPath,
      args,
      env: { WRANGLER_SEND_METRICS: 'false', WRANGLER_LOG_PATH: join(opts.dataDir, 'wrangler-logs') },
      cwd: ROOT,
      readyUrl: `${proxyUrl}/apisix/admin`,
      timeoutMs: 60_000,
    });
    return { proc, proxyUrl, adminUrl: proxyUrl };
  }
  const serve: ServeConfig = {
    toml: await readToml(),
    bundleDir: bundle(),
    vars,
    persistDir: join(opts.dataDir, 'workerd-state'),
  };
  // Port 0: Miniflare takes a free port and the child prints it (see the node/deno/bun launchers for why).
  const proc = await startProcess({
    cmd: process.execPath,
    args: ['--import', 'tsx', new URL(import.meta.url).pathname],
    env: { FNGATE_WORKERD_SERVE: JSON.stringify(serve) },
    cwd: ROOT,
    readyLog: SERVE_LOG,
    timeoutMs: 60_000,
  });
  const proxyUrl = SERVE_LOG.exec(proc.stdout())?.[1];
  if (!proxyUrl) throw new Error(`the workerd launcher did not print its URL:\n${proc.stdout()}`);
  return { proc, proxyUrl, adminUrl: proxyUrl };
}

/** The child process: serve the bundle with Miniflare until SIGTERM/SIGINT. */
async function serveMain(serve: ServeConfig): Promise<void> {
  const { Log, LogLevel, Miniflare } = await import('miniflare');
  const { toml } = serve;
  const mf = new Miniflare({
    modules: true,
    scriptPath: join(serve.bundleDir, 'worker.js'),
    modulesRoot: serve.bundleDir,
    compatibilityDate: toml.compatibilityDate,
    compatibilityFlags: toml.compatibilityFlags,
    kvNamespaces: toml.kvNamespaces,
    kvPersist: join(serve.persistDir, 'kv'),
    durableObjects: toml.durableObjects,
    durableObjectsPersist: join(serve.persistDir, 'do'),
    bindings: { ...toml.vars, ...serve.vars },
    host: '127.0.0.1',
    port: 0,
    log: new Log(LogLevel.WARN),
  });
  const url = await mf.ready;
  console.log(`fngate (workerd via Miniflare) listening on ${url.origin}`);
  const stop = () => {
    mf.dispose().finally(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

if (process.env.FNGATE_WORKERD_SERVE && import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  serveMain(JSON.parse(process.env.FNGATE_WORKERD_SERVE) as ServeConfig).catch((err) => {
    console.error(`workerd launcher: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exit(1);
  });
}

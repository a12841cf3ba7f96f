/**
 * The conformance harness: starts fngate on the runtime named by FNGATE_RUNTIME (node by default) as a
 * real process on loopback, and gives the suite small HTTP helpers. Every file of test/conformance runs
 * unchanged against every runtime. Where the runtime table of the README says a runtime behaves differently, the
 * case branches on {@link RUNTIME}; a case that cannot apply to a runtime is skipped with the reason, in the suite:
 * `test(name, { skip: RUNTIME === 'workerd' && 'why it cannot apply there' }, fn)`.
 */
import { randomBytes } from 'node:crypto';
import { after, before } from 'node:test';
import { type FunctionServers, startFunctions } from '../functions/functions.ts';
import { type Proc, rmDir, tmpDir } from '../helpers/process.ts';

export const ROOT = new URL('../..', import.meta.url).pathname;

export type RuntimeName = 'node' | 'deno' | 'bun' | 'workerd';

export const RUNTIME = (process.env.FNGATE_RUNTIME ?? 'node') as RuntimeName;

export interface AdminResult {
  status: number;
  headers: Headers;
  text: string;
  // biome-ignore lint/suspicious/noExplicitAny: test convenience for JSON bodies
  json: any;
}

export interface GatewayUnderTest {
  runtime: RuntimeName;
  proxyUrl: string;
  adminUrl: string;
  key: string;
  dataDir: string;
  proc: Proc;
  /** Call the Admin API; `path` is relative to `/apisix/admin` (e.g. `/routes/1`). */
  admin(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<AdminResult>;
  /** PUT a route and fail loudly unless the gateway accepted it. */
  putRoute(id: string, route: unknown): Promise<AdminResult>;
  /** Request a path on the proxy. */
  fetch(path: string, init?: RequestInit): Promise<Response>;
  stop(): Promise<void>;
}

/** Ready once a gateway started on ports 0 has printed both its "listening on" lines (in either order). */
export const LISTENING_LOG =
  /^(?=[\s\S]*fngate proxy listening on http:\/\/\S+:\d+\n)(?=[\s\S]*fngate admin API listening on https?:\/\/\S+:\d+\n)/;

/** The proxy and Admin API URLs a gateway printed when it started listening. */
export function listeningUrls(proc: Proc): { proxyUrl: string; adminUrl: string } {
  const out = proc.stdout();
  const url = (what: string) => {
    // The Admin API says https with ADMIN_TLS_CERT/KEY (tls.test.ts); `admin()` then needs its own client.
    const m = new RegExp(`fngate ${what} listening on (https?://\\S+:\\d+)\\n`).exec(out);
    if (!m) throw new Error(`the gateway did not print "fngate ${what} listening on ...":\n${out}`);
    return m[1]!;
  };
  return { proxyUrl: url('proxy'), adminUrl: url('admin API') };
}

/** How one runtime starts fngate: `test/conformance/launchers/<runtime>.ts` exports `launch`. */
export interface Launcher {
  launch(opts: LaunchOptions): Promise<Launched>;
}

export interface LaunchOptions {
  /** The settings (ADMIN_KEY, PROXY_PORT, ADMIN_PORT, DATA_DIR, ...) as environment variables. */
  env: Record<string, string | undefined>;
  dataDir: string;
}

export interface Launched {
  proc: Proc;
  proxyUrl: string;
  /** Base URL of the Admin API (the proxy URL itself on single-port runtimes). */
  adminUrl: string;
}

export interface StartOptions {
  env?: Record<string, string | undefined>;
  /** The runtime to start it on (FNGATE_RUNTIME by default): e2e tests that run one case on several runtimes. */
  runtime?: RuntimeName;
  dataDir?: string;
  key?: string;
}

export async function startGateway(opts: StartOptions = {}): Promise<GatewayUnderTest> {
  const dataDir = opts.dataDir ?? (await tmpDir('fngate-conf-'));
  const key = opts.key ?? randomBytes(16).toString('hex');
  // Port 0: the gateway takes a free port itself and says which in its "listening on" lines. A port picked
  // here and handed over could be taken in between (or picked twice), and the start would fail now and then.
  const env: Record<string, string | undefined> = {
    HOST: '127.0.0.1',
    PROXY_PORT: '0',
    ADMIN_HOST: '127.0.0.1',
    ADMIN_PORT: '0',
    ADMIN_KEY: key,
    DATA_DIR: dataDir,
    LOG_LEVEL: 'warn',
    // Off unless a test asks for them (they are on by default for `npm start`).
    ACCESS_LOG: 'off',
    PROMETHEUS_PORT: 'off',
    PROXY_HTTPS_PORT: 'off',
    STATUS_PORT: 'off',
    // One process: `limit-count` `local` counters and the like are per worker (test/e2e/workers.test.ts has WORKERS).
    WORKERS: '1',
    ...opts.env,
  };
  const runtime = opts.runtime ?? RUNTIME;
  const launcher = (await import(`./launchers/${runtime}.ts`)) as Launcher;
  const launched = await launcher.launch({ env, dataDir });
  const { proc } = launched;
  const proxyUrl = launched.proxyUrl;
  const adminUrl = launched.adminUrl;
  const gw: GatewayUnderTest = {
    runtime,
    proxyUrl,
    adminUrl,
    key,
    dataDir,
    proc,
    async admin(method, path, body, headers) {
      const res = await fetch(`${adminUrl}/apisix/admin${path}`, {
        method,
        headers: { 'x-api-key': key, ...headers },
        body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      });
      const text = await res.text();
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
      return { status: res.status, headers: res.headers, text, json };
    },
    async putRoute(id, route) {
      const res = await gw.admin('PUT', `/routes/${id}`, route);
      if (res.status !== 200 && res.status !== 201) throw new Error(`PUT /routes/${id} answered ${res.status}: ${res.text}`);
      return res;
    },
    fetch(path, init) {
      return fetch(`${proxyUrl}${path}`, init);
    },
    async stop() {
      await proc.kill('SIGTERM');
      if (!opts.dataDir) await rmDir(dataDir);
    },
  };
  return gw;
}

/** The port of the proxy's TLS listener (PROXY_HTTPS_PORT) the gateway printed; waits up to 5 s for the line. */
export async function tlsPortOf(gw: GatewayUnderTest): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const m = /fngate proxy \(TLS\) listening on https:\/\/\S+:(\d+)\n/.exec(gw.proc.stdout());
    if (m) return Number(m[1]);
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no TLS listener in the gateway's output:\n${gw.proc.stdout()}`);
}

/**
 * The set-up most files of the suite share: the test functions and one gateway, started before the file's first
 * test and stopped after its last. `started` hands them over once both run (assign them to the file's own `gw`/`fn`).
 */
export function gatewayPerFile(
  started: (gw: GatewayUnderTest, fn: FunctionServers) => void,
  opts: StartOptions = {},
): void {
  let gw: GatewayUnderTest | undefined;
  let fn: FunctionServers | undefined;
  before(async () => {
    fn = await startFunctions();
    gw = await startGateway(opts);
    started(gw, fn);
  });
  after(async () => {
    await gw?.stop();
    await fn?.close();
  });
}

/** The test functions for a whole file (started before its first test, closed after its last), handed to `started`. */
export function functionsPerFile(started: (fn: FunctionServers) => void): void {
  let fn: FunctionServers | undefined;
  before(async () => {
    fn = await startFunctions();
    started(fn);
  });
  after(() => fn?.close());
}

/** A `tmpDir` for a file: each directory it makes is removed after the file's last test. */
export function tmpDirsPerFile(): (prefix: string) => Promise<string> {
  const dirs: string[] = [];
  after(async () => {
    for (const d of dirs) await rmDir(d);
  });
  return async (prefix) => {
    const d = await tmpDir(prefix);
    dirs.push(d);
    return d;
  };
}

/** `plugins` holding only an openfunction plugin for `function_uri` (with `extra` plugin settings). */
export const openfunctionPlugins = (function_uri: string, extra: Record<string, unknown> = {}) => ({
  openfunction: { function_uri, ...extra },
});

/**
 * Send GETs without pause from `clients` concurrent loops until `stop()`; every answer must be a 200 whose body
 * `ok` accepts. `stop()` resolves with how many were sent and the failures.
 */
export function hammer(
  gw: GatewayUnderTest,
  paths: string[],
  ok: (path: string, text: string) => boolean,
  clients = 4,
): { stop(): Promise<{ sent: number; failures: string[] }> } {
  let stopped = false;
  let sent = 0;
  const failures: string[] = [];
  const loops = Array.from({ length: clients }, async (_, c) => {
    for (let n = c; !stopped; n++) {
      const path = paths[n % paths.length]!;
      sent++;
      try {
        const res = await gw.fetch(path);
        const text = await res.text();
        if (res.status !== 200 || !ok(path, text)) failures.push(`${path} → ${res.status} ${text.slice(0, 200)}`);
      } catch (err) {
        failures.push(`${path} → ${(err as Error).message} ${String((err as Error).cause ?? '')}`);
      }
    }
  });
  return {
    async stop() {
      stopped = true;
      await Promise.all(loops);
      return { sent, failures };
    },
  };
}

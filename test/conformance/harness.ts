/**
 * The conformance harness: starts fngate on the runtime named by FNGATE_RUNTIME (node by default) as a
 * real process on loopback, and gives the suite small HTTP helpers. Every file of test/conformance runs
 * unchanged against every runtime. Where the runtime table of the README says a runtime behaves differently, the
 * case branches on {@link RUNTIME}; a case that cannot apply to a runtime is skipped with the reason, in the suite:
 * `test(name, { skip: RUNTIME === 'workerd' && 'why it cannot apply there' }, fn)`.
 */
import { randomBytes } from 'node:crypto';
import { freePort, type Proc, rmDir, tmpDir } from '../helpers/process.ts';

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

/** How one runtime starts fngate: `test/conformance/launchers/<runtime>.ts` exports `launch`. */
export interface Launcher {
  launch(opts: LaunchOptions): Promise<Launched>;
}

export interface LaunchOptions {
  /** The settings (ADMIN_KEY, PROXY_PORT, ADMIN_PORT, DATA_DIR, ...) as environment variables. */
  env: Record<string, string | undefined>;
  proxyPort: number;
  adminPort: number;
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
  dataDir?: string;
  key?: string;
}

export async function startGateway(opts: StartOptions = {}): Promise<GatewayUnderTest> {
  const dataDir = opts.dataDir ?? (await tmpDir('fngate-conf-'));
  const key = opts.key ?? randomBytes(16).toString('hex');
  const proxyPort = await freePort();
  const adminPort = await freePort();
  const env: Record<string, string | undefined> = {
    HOST: '127.0.0.1',
    PROXY_PORT: String(proxyPort),
    ADMIN_HOST: '127.0.0.1',
    ADMIN_PORT: String(adminPort),
    ADMIN_KEY: key,
    DATA_DIR: dataDir,
    LOG_LEVEL: 'warn',
    ...opts.env,
  };
  const launcher = (await import(`./launchers/${RUNTIME}.ts`)) as Launcher;
  const launched = await launcher.launch({ env, proxyPort, adminPort, dataDir });
  const { proc } = launched;
  const proxyUrl = launched.proxyUrl;
  const adminUrl = launched.adminUrl;
  const gw: GatewayUnderTest = {
    runtime: RUNTIME,
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

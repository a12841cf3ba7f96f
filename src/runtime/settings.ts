/**
 * Settings every runtime reads from its environment, with their defaults. Portable: the entry passes
 * its environment as a plain record (process.env, Deno.env.toObject(), a Worker's env bindings).
 */
import { compileAllowList, DEFAULT_ADMIN_ALLOW } from '../core/admin/guard.ts';
import { KeyringError, parseKeyring } from '../core/secrets.ts';

export interface Settings {
  host: string;
  proxyPort: number;
  adminHost: string;
  adminPort: number;
  /** Admin keys from ADMIN_KEY (comma-separated for several); undefined = not set. */
  adminKeys?: string[];
  /** ADMIN_ALLOW: addresses/CIDRs allowed to use the Admin API (APISIX `allow_admin`). */
  adminAllow: string[];
  /** DATA_ENCRYPTION_KEY: keyring for plugin secret fields at rest; undefined = stored in plaintext. */
  dataEncryptionKeys?: string[];
  /** SHUTDOWN_TIMEOUT in ms: how long requests in flight may take to finish after SIGTERM. */
  shutdownTimeoutMs: number;
  dataDir: string;
  configFile?: string;
  etcdHosts?: string[];
  etcdPrefix: string;
  etcdUser?: string;
  etcdPassword?: string;
  logLevel: 'debug' | 'info' | 'warn' | 'error' | 'silent';
  /** PROMETHEUS_HOST:PROMETHEUS_PORT of the metrics export server; port undefined = PROMETHEUS_PORT=off. */
  prometheusHost: string;
  prometheusPort: number | undefined;
  /** PROMETHEUS_REFRESH_INTERVAL in ms: time between two background renders of the metrics. */
  prometheusRefreshMs: number;
  /** ACCESS_LOG: one JSON line per request on stdout. */
  accessLog: boolean;
  /** PROXY_HTTPS_PORT: the proxy's TLS port (certificates from `ssls`); undefined = `off`. */
  proxyHttpsPort: number | undefined;
  /** ADMIN_TLS_CERT / ADMIN_TLS_KEY: PEM files; both set = the Admin API speaks HTTPS only. */
  adminTlsCert?: string;
  adminTlsKey?: string;
  /** TLS_HANDSHAKE_TIMEOUT in ms: a TLS handshake on the proxy's TLS port must finish within this. */
  tlsHandshakeTimeoutMs: number;
  /** WORKERS: proxy processes/threads sharing the proxy port (1 = one process serving everything). */
  workers: number;
  /** STATUS_HOST:STATUS_PORT of the status API (`/status`, `/status/ready`); port undefined = STATUS_PORT=off. */
  statusHost: string;
  statusPort: number | undefined;
}

export interface SettingDoc {
  name: string;
  default: string;
  meaning: string;
}

/**
 * The configuration table, printed by `--help` and copied into the README's: test/e2e/walkthrough.test.ts checks
 * that both list the same variables, defaults and meanings.
 */
export const SETTINGS_DOC: readonly SettingDoc[] = [
  { name: 'HOST', default: '0.0.0.0', meaning: 'address the proxy listens on' },
  { name: 'PROXY_PORT', default: '9080', meaning: 'port of the proxy (routes are served here)' },
  { name: 'ADMIN_HOST', default: '127.0.0.1', meaning: 'address the Admin API listens on (loopback only by default)' },
  { name: 'ADMIN_PORT', default: '9180', meaning: 'port of the Admin API (`/apisix/admin/...`)' },
  {
    name: 'PROXY_HTTPS_PORT',
    default: '9443',
    meaning:
      "TLS port of the proxy (Node, Deno, Bun), HTTP/1.1 and HTTP/2 by ALPN, `wss://` on `enable_websocket` routes; the certificate is chosen by SNI from the `ssls` resources; `off` starts none. A port in use is logged and the gateway runs without it",
  },
  {
    name: 'TLS_HANDSHAKE_TIMEOUT',
    default: '10',
    meaning: 'seconds a TLS handshake on `PROXY_HTTPS_PORT` may take before the connection is closed (slow or stalled handshakes)',
  },
  {
    name: 'ADMIN_TLS_CERT / ADMIN_TLS_KEY',
    default: '(unset)',
    meaning: 'PEM files of a certificate chain and its key: set both and the Admin API speaks HTTPS only (read at start; Node, Deno, Bun)',
  },
  {
    name: 'ADMIN_KEY',
    default: '(generated)',
    meaning:
      'admin key(s) for `X-API-KEY`, comma-separated, at least 16 characters; when unset a random key is generated once and kept in `DATA_DIR/admin_key` (mode 0600)',
  },
  {
    name: 'ADMIN_ALLOW',
    default: '127.0.0.0/24,::1',
    meaning:
      'client addresses/CIDRs allowed to use the Admin API, comma-separated (APISIX `allow_admin`); others get 403. `0.0.0.0/0,::/0` allows everyone',
  },
  {
    name: 'DATA_ENCRYPTION_KEY',
    default: '(unset)',
    meaning:
      'keyring (comma-separated, each key 16 or 32 bytes) encrypting plugin secrets (`service_token`; the consumer secrets `key`, `password`, `secret`, `secret_key`; azure-functions\' metadata `master_apikey`) at rest with AES-CBC as APISIX\'s `data_encryption`; the first key encrypts, every key is tried to decrypt. Unset: stored in plaintext',
  },
  {
    name: 'DATA_DIR',
    default: './data',
    meaning:
      "directory of the embedded store (the file store's `config.json` on Node and Bun, Deno KV's `fngate.kv` on Deno) and the generated admin key; created with mode 0700 (a directory that cannot be created stops the start with a message naming it)",
  },
  {
    name: 'CONFIG_FILE',
    default: '(unset)',
    meaning:
      'standalone mode: serve the routes of this APISIX-style YAML/JSON file, reloaded on change; the Admin API is read-only',
  },
  {
    name: 'ETCD_HOST',
    default: '(unset)',
    meaning: 'etcd endpoints, comma-separated (e.g. `http://127.0.0.1:2379`): use etcd as the store',
  },
  { name: 'ETCD_PREFIX', default: '/apisix', meaning: 'key prefix in etcd' },
  {
    name: 'ETCD_USER / ETCD_PASSWORD',
    default: '(unset)',
    meaning: 'etcd credentials (set both or neither); the store authenticates and renews its token',
  },
  { name: 'LOG_LEVEL', default: 'info', meaning: '`debug`, `info`, `warn`, `error` or `silent`' },
  {
    name: 'SHUTDOWN_TIMEOUT',
    default: '10',
    meaning: 'seconds requests in flight may take to finish after SIGTERM/SIGINT before their connections are closed',
  },
  {
    name: 'PROMETHEUS_HOST',
    default: '127.0.0.1',
    meaning: 'address the Prometheus export server listens on (Node, Deno, Bun; APISIX `export_addr`)',
  },
  {
    name: 'PROMETHEUS_PORT',
    default: '9091',
    meaning:
      'port of the Prometheus export server (`GET /apisix/prometheus/metrics`); `off` starts none. A port in use is logged and the gateway runs without it. Answers CORS for the Admin API\'s origin only (the dashboard\'s metrics view)',
  },
  {
    name: 'PROMETHEUS_REFRESH_INTERVAL',
    default: '15',
    meaning:
      'seconds between two renders of the metrics (APISIX `refresh_interval`): scrapes are answered from the latest render, made in the background while scrapes keep coming; 0 renders on every scrape',
  },
  {
    name: 'WORKERS',
    default: '(cores)',
    meaning:
      'proxy worker processes sharing PROXY_PORT, default the cores available to the process; `1` serves everything from one process. Node: node:cluster; Bun: node:cluster, each worker listening with `reusePort`; Deno (Linux): the primary starts its own script again per worker (`Deno.Command`, `--allow-run` for the deno binary only), each listening with `Deno.serve({ reusePort })`, elsewhere one process. One primary serves the Admin API, status API and metrics and is the only store writer; an Admin API write is answered once every worker serves it',
  },
  {
    name: 'STATUS_HOST',
    default: '127.0.0.1',
    meaning: 'address the status API listens on (Node, Deno, Bun; APISIX `apisix.status.ip`; 0.0.0.0 for Kubernetes probes)',
  },
  {
    name: 'STATUS_PORT',
    default: '7085',
    meaning:
      'port of the status API as APISIX\'s: `/status` (alive) and `/status/ready` (200 once the config is loaded by every worker and the etcd watch is healthy, else 503); `off` starts none. A port in use is logged and the gateway runs without it',
  },
  {
    name: 'ACCESS_LOG',
    default: 'on',
    meaning: 'one JSON line per request on stdout with APISIX\'s log-entry fields (`on` or `off`)',
  },
];

export class SettingsError extends Error {
  override name = 'SettingsError';
}

function port(env: Record<string, string | undefined>, name: string, dflt: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return dflt;
  // Digits only: `0x50` or `4e4` are numbers to JavaScript, not port numbers anyone means.
  const n = /^\d{1,5}$/.test(raw) ? Number(raw) : Number.NaN;
  if (!Number.isInteger(n) || n < 0 || n > 65535)
    throw new SettingsError(`${name}=${raw} is not a port number (0-65535)`);
  return n;
}

const list = (raw: string | undefined) =>
  raw
    ?.split(',')
    .map((s) => s.trim())
    .filter(Boolean);

/**
 * `cores`: what WORKERS defaults to (the entry passes `os.availableParallelism()`; 1 where the runtime has no
 * workers).
 */
export function readSettings(env: Record<string, string | undefined>, cores = 1): Settings {
  const logLevel = (env.LOG_LEVEL || 'info') as Settings['logLevel'];
  if (!['debug', 'info', 'warn', 'error', 'silent'].includes(logLevel)) {
    throw new SettingsError(`LOG_LEVEL=${logLevel} is not one of debug, info, warn, error, silent`);
  }
  const adminKeys = list(env.ADMIN_KEY);
  if (adminKeys?.some((k) => k.length < 16)) throw new SettingsError('ADMIN_KEY must be at least 16 characters long');
  const adminAllow = list(env.ADMIN_ALLOW)?.length ? list(env.ADMIN_ALLOW)! : [...DEFAULT_ADMIN_ALLOW];
  try {
    compileAllowList(adminAllow);
  } catch (err) {
    throw new SettingsError(
      `ADMIN_ALLOW: ${(err as Error).message} (expected IPv4/IPv6 addresses or CIDRs, comma-separated)`,
    );
  }
  let dataEncryptionKeys: string[] | undefined;
  if (env.DATA_ENCRYPTION_KEY) {
    try {
      dataEncryptionKeys = parseKeyring(env.DATA_ENCRYPTION_KEY);
    } catch (err) {
      if (err instanceof KeyringError) throw new SettingsError(err.message);
      throw err;
    }
  }
  const etcdUser = env.ETCD_USER || undefined;
  const etcdPassword = env.ETCD_PASSWORD || undefined;
  // One without the other is a mistake, never "no auth": a password alone would be silently dropped.
  if (etcdUser === undefined && etcdPassword !== undefined) {
    throw new SettingsError('ETCD_PASSWORD is set but ETCD_USER is not: set both for etcd authentication, or neither');
  }
  if (etcdUser !== undefined && etcdPassword === undefined) {
    throw new SettingsError('ETCD_USER is set but ETCD_PASSWORD is not: set both for etcd authentication, or neither');
  }
  const shutdownRaw = env.SHUTDOWN_TIMEOUT;
  const shutdown = shutdownRaw === undefined || shutdownRaw === '' ? 10 : Number(shutdownRaw);
  if (!Number.isFinite(shutdown) || shutdown < 0 || shutdown > 3600) {
    throw new SettingsError(`SHUTDOWN_TIMEOUT=${shutdownRaw} is not a number of seconds (0-3600)`);
  }
  const promPortRaw = env.PROMETHEUS_PORT;
  const prometheusPort = promPortRaw === 'off' ? undefined : port(env, 'PROMETHEUS_PORT', 9091);
  const refreshRaw = env.PROMETHEUS_REFRESH_INTERVAL;
  const refresh = refreshRaw === undefined || refreshRaw === '' ? 15 : Number(refreshRaw);
  if (!Number.isFinite(refresh) || refresh < 0 || refresh > 3600) {
    throw new SettingsError(`PROMETHEUS_REFRESH_INTERVAL=${refreshRaw} is not a number of seconds (0-3600)`);
  }
  const httpsRaw = env.PROXY_HTTPS_PORT;
  const proxyHttpsPort = httpsRaw === 'off' ? undefined : port(env, 'PROXY_HTTPS_PORT', 9443);
  const adminTlsCert = env.ADMIN_TLS_CERT || undefined;
  const adminTlsKey = env.ADMIN_TLS_KEY || undefined;
  if ((adminTlsCert === undefined) !== (adminTlsKey === undefined)) {
    throw new SettingsError('ADMIN_TLS_CERT and ADMIN_TLS_KEY go together: set both for an HTTPS Admin API, or neither');
  }
  const handshakeRaw = env.TLS_HANDSHAKE_TIMEOUT;
  const handshake = handshakeRaw === undefined || handshakeRaw === '' ? 10 : Number(handshakeRaw);
  if (!Number.isFinite(handshake) || handshake <= 0 || handshake > 3600) {
    throw new SettingsError(`TLS_HANDSHAKE_TIMEOUT=${handshakeRaw} is not a number of seconds (above 0, at most 3600)`);
  }
  const accessLogRaw = (env.ACCESS_LOG || 'on').toLowerCase();
  if (!['on', 'off', 'true', 'false', '1', '0'].includes(accessLogRaw)) {
    throw new SettingsError(`ACCESS_LOG=${env.ACCESS_LOG} is not on or off`);
  }
  const workersRaw = env.WORKERS;
  const workers = workersRaw === undefined || workersRaw === '' ? Math.max(1, Math.floor(cores)) : Number(workersRaw);
  if (!/^\d{1,4}$/.test(workersRaw || '1') || !Number.isInteger(workers) || workers < 1 || workers > 1024) {
    throw new SettingsError(`WORKERS=${workersRaw} is not a number of workers (1-1024)`);
  }
  const statusPort = env.STATUS_PORT === 'off' ? undefined : port(env, 'STATUS_PORT', 7085);
  return {
    proxyHttpsPort,
    adminTlsCert,
    adminTlsKey,
    tlsHandshakeTimeoutMs: Math.round(handshake * 1000),
    workers,
    statusHost: env.STATUS_HOST || '127.0.0.1',
    statusPort,
    prometheusHost: env.PROMETHEUS_HOST || '127.0.0.1',
    prometheusPort,
    prometheusRefreshMs: Math.round(refresh * 1000),
    accessLog: ['on', 'true', '1'].includes(accessLogRaw),
    host: env.HOST || '0.0.0.0',
    proxyPort: port(env, 'PROXY_PORT', 9080),
    adminHost: env.ADMIN_HOST || '127.0.0.1',
    adminPort: port(env, 'ADMIN_PORT', 9180),
    adminKeys: adminKeys?.length ? adminKeys : undefined,
    adminAllow,
    dataEncryptionKeys: dataEncryptionKeys?.length ? dataEncryptionKeys : undefined,
    shutdownTimeoutMs: Math.round(shutdown * 1000),
    dataDir: env.DATA_DIR || './data',
    configFile: env.CONFIG_FILE || undefined,
    etcdHosts: list(env.ETCD_HOST)?.length ? list(env.ETCD_HOST) : undefined,
    etcdPrefix: env.ETCD_PREFIX || '/apisix',
    etcdUser,
    etcdPassword,
    logLevel,
  };
}

/**
 * The command line: fngate takes its settings from the environment, so the only arguments are `-h`/`--help`
 * and the entry's own `extra` flags (Deno's `--permission-flags`). Anything else (`--port 31999`, `--config x`)
 * is an error, never silently ignored: the entry prints {@link usageError} and exits 2.
 */
export function parseCommandLine(
  args: readonly string[],
  extra: readonly string[] = [],
): { ok: true; help: boolean; flags: ReadonlySet<string> } | { ok: false; message: string } {
  const flags = new Set<string>();
  let help = false;
  for (const arg of args) {
    if (arg === '-h' || arg === '--help') help = true;
    else if (extra.includes(arg)) flags.add(arg);
    else {
      const what = arg.startsWith('-') ? 'unknown option' : 'unexpected argument';
      return { ok: false, message: `${what} ${JSON.stringify(arg)}: fngate takes its settings from environment variables` };
    }
  }
  return { ok: true, help, flags };
}

/** What an entry prints on stderr for a bad command line, before it exits with status 2. */
export function usageError(message: string, command: string): string {
  return `fngate: ${message}\n\n${helpText(command)}`;
}

export function helpText(command: string): string {
  const width = Math.max(...SETTINGS_DOC.map((s) => s.name.length));
  const rows = SETTINGS_DOC.map((s) => `  ${s.name.padEnd(width)}  ${s.meaning} (default: ${s.default})`).join('\n');
  return `fngate - an APISIX-compatible API gateway for serverless functions

Usage: ${command} [-h | --help]

Configuration comes from environment variables (there are no other command-line options):
${rows}

Store: CONFIG_FILE (read-only standalone file), else ETCD_HOST (etcd), else the embedded store in DATA_DIR
(the file store config.json on Node and Bun, Deno KV fngate.kv on Deno).
Docs: README.md
`;
}

/**
 * A logger honouring LOG_LEVEL. Nothing may pass it a credential: admin keys, DATA_ENCRYPTION_KEY and plugin
 * secret fields (`secretFields`, e.g. `service_token`) are never logged (test/e2e/faults.test.ts checks).
 */
export function levelLogger(level: Settings['logLevel']) {
  const order = { debug: 0, info: 1, warn: 2, error: 3, silent: 4 };
  const at = order[level];
  const fmt = (msg: string, fields?: Record<string, unknown>) => (fields ? `${msg} ${JSON.stringify(fields)}` : msg);
  return {
    info: (msg: string, fields?: Record<string, unknown>) => {
      if (at <= 1) console.log(fmt(msg, fields));
    },
    warn: (msg: string, fields?: Record<string, unknown>) => {
      if (at <= 2) console.warn(fmt(msg, fields));
    },
    error: (msg: string, fields?: Record<string, unknown>) => {
      if (at <= 3) console.error(fmt(msg, fields));
    },
  };
}

/** What an entry prints when it cannot start. */
export function startupError(err: unknown): string {
  if (err instanceof SettingsError) return `fngate: ${err.message}\n\nRun with --help for the settings.`;
  return `fngate: cannot start: ${err instanceof Error ? err.message : String(err)}`;
}

/**
 * The end of a graceful shutdown, the same on every runtime: once the servers stopped (`stopped`), close
 * each part in order (gateway, store, forwarder), then exit 0, or 1 when something failed to close.
 */
export function finishShutdown(
  stopped: Promise<unknown>,
  parts: readonly ({ close(): unknown } | undefined)[],
  logger: { error(msg: string): void },
  exit: (code: number) => void,
): void {
  parts
    .reduce<Promise<unknown>>((chain, part) => chain.then(() => part?.close()), stopped)
    .then(
      () => exit(0),
      (err) => {
        logger.error(`shutdown: ${(err as Error).message}`);
        exit(1);
      },
    );
}

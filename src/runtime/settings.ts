/**
 * Settings every runtime reads from its environment, with their defaults. Portable: the entry passes
 * its environment as a plain record (process.env, Deno.env.toObject(), a Worker's env bindings).
 */

export interface Settings {
  host: string;
  proxyPort: number;
  adminHost: string;
  adminPort: number;
  /** Admin keys from ADMIN_KEY (comma-separated for several); undefined = not set. */
  adminKeys?: string[];
  dataDir: string;
  configFile?: string;
  etcdHosts?: string[];
  etcdPrefix: string;
  etcdUser?: string;
  etcdPassword?: string;
  logLevel: 'debug' | 'info' | 'warn' | 'error' | 'silent';
}

export interface SettingDoc {
  name: string;
  default: string;
  meaning: string;
}

/** The configuration table, printed by `--help` and copied into the README. */
export const SETTINGS_DOC: readonly SettingDoc[] = [
  { name: 'HOST', default: '0.0.0.0', meaning: 'address the proxy listens on' },
  { name: 'PROXY_PORT', default: '9080', meaning: 'port of the proxy (routes are served here)' },
  { name: 'ADMIN_HOST', default: '127.0.0.1', meaning: 'address the Admin API listens on (loopback only by default)' },
  { name: 'ADMIN_PORT', default: '9180', meaning: 'port of the Admin API (`/apisix/admin/...`)' },
  {
    name: 'ADMIN_KEY',
    default: '(generated)',
    meaning: 'admin key(s) for `X-API-KEY`, comma-separated; when unset a random key is generated once and kept in `DATA_DIR/admin_key` (mode 0600)',
  },
  { name: 'DATA_DIR', default: './data', meaning: 'directory of the embedded file store (`config.json`) and the generated admin key' },
  {
    name: 'CONFIG_FILE',
    default: '(unset)',
    meaning: 'standalone mode: serve the routes of this APISIX-style YAML/JSON file (reloaded on change); the Admin API is read-only',
  },
  { name: 'ETCD_HOST', default: '(unset)', meaning: 'etcd endpoints, comma-separated (e.g. `http://127.0.0.1:2379`): use etcd as the store' },
  { name: 'ETCD_PREFIX', default: '/apisix', meaning: 'key prefix in etcd' },
  { name: 'ETCD_USER / ETCD_PASSWORD', default: '(unset)', meaning: 'etcd credentials' },
  { name: 'LOG_LEVEL', default: 'info', meaning: '`debug`, `info`, `warn`, `error` or `silent`' },
];

export class SettingsError extends Error {
  override name = 'SettingsError';
}

function port(env: Record<string, string | undefined>, name: string, dflt: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new SettingsError(`${name}=${raw} is not a port number (0-65535)`);
  return n;
}

const list = (raw: string | undefined) =>
  raw
    ?.split(',')
    .map((s) => s.trim())
    .filter(Boolean);

export function readSettings(env: Record<string, string | undefined>): Settings {
  const logLevel = (env.LOG_LEVEL || 'info') as Settings['logLevel'];
  if (!['debug', 'info', 'warn', 'error', 'silent'].includes(logLevel)) {
    throw new SettingsError(`LOG_LEVEL=${logLevel} is not one of debug, info, warn, error, silent`);
  }
  const adminKeys = list(env.ADMIN_KEY);
  if (adminKeys?.some((k) => k.length < 16)) throw new SettingsError('ADMIN_KEY must be at least 16 characters long');
  return {
    host: env.HOST || '0.0.0.0',
    proxyPort: port(env, 'PROXY_PORT', 9080),
    adminHost: env.ADMIN_HOST || '127.0.0.1',
    adminPort: port(env, 'ADMIN_PORT', 9180),
    adminKeys: adminKeys?.length ? adminKeys : undefined,
    dataDir: env.DATA_DIR || './data',
    configFile: env.CONFIG_FILE || undefined,
    etcdHosts: list(env.ETCD_HOST)?.length ? list(env.ETCD_HOST) : undefined,
    etcdPrefix: env.ETCD_PREFIX || '/apisix',
    etcdUser: env.ETCD_USER || undefined,
    etcdPassword: env.ETCD_PASSWORD || undefined,
    logLevel,
  };
}

export function helpText(command: string): string {
  const width = Math.max(...SETTINGS_DOC.map((s) => s.name.length));
  const rows = SETTINGS_DOC.map((s) => `  ${s.name.padEnd(width)}  ${s.meaning} (default: ${s.default})`).join('\n');
  return `fngate - an APISIX-compatible API gateway for serverless functions

Usage: ${command}

Configuration comes from environment variables:
${rows}

Store: CONFIG_FILE (read-only standalone file), else ETCD_HOST (etcd), else the file store in DATA_DIR.
Docs: README.md
`;
}

/** A logger honouring LOG_LEVEL; fields holding credentials must never be passed to it. */
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

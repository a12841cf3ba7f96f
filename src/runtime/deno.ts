/**
 * fngate on Deno: `deno task start` (deno.json). Proxy on HOST:PROXY_PORT, Admin API on ADMIN_HOST:ADMIN_PORT,
 * the same settings as on Node (src/runtime/settings.ts). Deno only: type-check with `deno task check`
 * (tsconfig.json excludes this file from Node's tsc). `hono`, `valibot`, `yaml`... come from ./node_modules
 * (`"nodeModulesDir": "manual"`): nothing is downloaded, `npm install` is all Deno needs.
 *
 * Store: CONFIG_FILE (read-only, src/store/standalone-deno.ts), else ETCD_HOST (src/store/etcd.ts), else Deno KV
 * in `DATA_DIR/fngate.kv` (src/store/deno-kv.ts). The generated admin key lives in `DATA_DIR/admin_key` (0600),
 * as on Node. A DATA_DIR used by Node/Bun (`config.json`) and by Deno (`fngate.kv`) holds two separate configs.
 *
 * Permissions: `deno task start` runs this file twice. First with `--permission-flags` (read access, and the
 * variables DATA_DIR, CONFIG_FILE, ETCD_HOST, ADMIN_KEY), which prints the narrowest flags for the current settings
 * (src/runtime/deno-permissions.ts); then the gateway with those flags: `--allow-net` (any host: the functions),
 * `--allow-env=<the settings and the ${{VAR}}s of CONFIG_FILE>`, `--allow-read` limited to DATA_DIR and CONFIG_FILE,
 * `--allow-write` limited to DATA_DIR and only when something is written there (the Deno KV store, or a generated
 * admin key: none with CONFIG_FILE or etcd and ADMIN_KEY set), `--no-prompt`; with WORKERS > 1 on Linux also
 * `--allow-run=<the deno binary>`, with which the primary starts its proxy workers (src/runtime/workers-deno.ts).
 * `--v8-flags=--expose-gc`: lets the forwarder ask for a scavenge while answers stream (`exposedGc` below).
 * `--unstable-no-legacy-abort`: without it Deno 2.9 also fires `request.signal` when a response completed normally
 * (and warns about it); with it the signal means "the client went away", as on Node and Bun.
 *
 * TLS port (PROXY_HTTPS_PORT): Node's (src/runtime/node-tls.ts) on Deno's node:tls, node:http and node:http2, since
 * Deno.serve takes one certificate and no SNI callback; WebSocket upgrades there are Node's socket pipe
 * (websocket-node.ts). See docs/runtime-notes.md. The Admin API over TLS (ADMIN_TLS_CERT/KEY) is Deno.serve's `cert`/`key`.
 *
 * Forwarding: Deno's fetch through `Deno.createHttpClient` clients, one per keep-alive setting:
 * - `Host` (`pass_host: pass|rewrite`) is honoured (`allowHost: true`); the client's own Host never is (the core
 *   drops it);
 * - keep-alive is honoured as on Node: `keepalive: false` -> `poolMaxIdlePerHost: 0`; `keepalive_pool` (plugin) /
 *   `keepalive_pool.size` (upstream) -> `poolMaxIdlePerHost`; `keepalive_timeout` / `keepalive_pool.idle_timeout`
 *   -> `poolIdleTimeout` (0 = no idle limit);
 * - compressed answers: Deno sends its own `Accept-Encoding: gzip,br` and decodes, and it also decodes when a
 *   client's `Accept-Encoding: gzip` is passed on explicitly (measured on 2.9.6), so the forwarder runs in `strip`
 *   mode: the client gets the body decoded, without `content-encoding`;
 * - a client certificate (upstream `tls`) is `Deno.createHttpClient({ cert, key })`: one client per certificate
 *   and keep-alive setting, cached (at most 64);
 * - `ssl_verify: false` cannot be honoured: Deno has no per-request (or per-client) switch to skip certificate
 *   verification, only the process-wide `--unsafely-ignore-certificate-errors`. The gateway is told so through
 *   `capabilities` (the Admin API refuses such a route with 400 and the snapshot skips one that is already
 *   stored, with a logged reason), and the forwarder refuses such a request with a 502 as a last line of defence:
 *   never a silent change of the TLS policy.
 */
import { join, resolve } from 'node:path';
import type { Logger } from '../core/context.ts';
import { errorResponse } from '../core/errors.ts';
import { createGateway } from '../core/gateway.ts';
import { denoWebSocketConnector, finishDenoUpgrades } from './websocket-deno.ts';
import { tlsPortWebSocketConnector } from './websocket-node.ts';
import { redisConnector } from './redis.ts';
import { createFetchForwarder } from '../core/upstream/fetch-forwarder.ts';
import { type ClientCert, type ForwardRequest, type Forwarder, UpstreamError } from '../core/upstream/types.ts';
import { StoreError } from '../store/types.ts';
import type { ConfigStore } from '../store/types.ts';
import { permissionFlags } from './deno-permissions.ts';
import { processCollector } from './process-metrics.ts';
import { localNames } from './local-names.ts';
import { framingError } from './framing.ts';
import { nodeTlsValidator } from './tls-check.ts';
import type { HttpBindings } from '@hono/node-server';
import { openTlsPort, type TlsPort } from './node-tls.ts';
import { closeAfterRefusal } from './refused-body.ts';
import { statusHandler, storeReadiness } from './status.ts';
import { denoCluster, WORKER_ARG } from './workers-deno.ts';
import {
  helpText,
  levelLogger,
  parseCommandLine,
  readSettings,
  SETTINGS_DOC,
  type Settings,
  startupError,
  usageError,
} from './settings.ts';
import { installShutdown } from './shutdown.ts';

/** Every setting, plus the variables the `yaml` package (LOG_TOKENS, LOG_STREAM) and node-redis read. */
export const ENV_NAMES: readonly string[] = [
  ...SETTINGS_DOC.flatMap((s) => s.name.split('/').map((n) => n.trim())),
  'LOG_TOKENS',
  'LOG_STREAM',
  // Read by node-redis (the rate limits' Redis client) when it connects; without the permission it cannot.
  'REDIS_DEBUG_MAINTENANCE',
  'REDIS_EMIT_DIAGNOSTICS',
  // Read by the OpenTelemetry SDK (the opentelemetry plugin) when it builds an exporter and its spans: without the
  // permission Deno throws NotCapable instead of answering undefined.
  ...[
    'EXPORTER_OTLP_TRACES_TIMEOUT',
    'EXPORTER_OTLP_TIMEOUT',
    'EXPORTER_OTLP_TRACES_COMPRESSION',
    'EXPORTER_OTLP_COMPRESSION',
    'EXPORTER_OTLP_TRACES_ENDPOINT',
    'EXPORTER_OTLP_ENDPOINT',
    'EXPORTER_OTLP_TRACES_HEADERS',
    'EXPORTER_OTLP_HEADERS',
    'EXPORTER_OTLP_TRACES_CERTIFICATE',
    'EXPORTER_OTLP_CERTIFICATE',
    'EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE',
    'EXPORTER_OTLP_CLIENT_CERTIFICATE',
    'EXPORTER_OTLP_TRACES_CLIENT_KEY',
    'EXPORTER_OTLP_CLIENT_KEY',
    'BSP_EXPORT_TIMEOUT',
    'BSP_SCHEDULE_DELAY',
    'BSP_MAX_QUEUE_SIZE',
    'BSP_MAX_EXPORT_BATCH_SIZE',
    'TRACES_SAMPLER',
    'TRACES_SAMPLER_ARG',
    'ATTRIBUTE_VALUE_LENGTH_LIMIT',
    'ATTRIBUTE_COUNT_LIMIT',
    'SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT',
    'SPAN_ATTRIBUTE_COUNT_LIMIT',
    'SPAN_LINK_COUNT_LIMIT',
    'SPAN_EVENT_COUNT_LIMIT',
    'SPAN_ATTRIBUTE_PER_EVENT_COUNT_LIMIT',
    'SPAN_ATTRIBUTE_PER_LINK_COUNT_LIMIT',
  ].map((n) => `OTEL_${n}`),
];

/**
 * The settings from the environment, read one name at a time: `Deno.env.toObject()` needs access to the whole
 * environment, while `--allow-env=<names>` is enough for this.
 */
function readEnv(names: readonly string[]): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = {};
  for (const name of names) env[name] = Deno.env.get(name);
  return env;
}

/**
 * The environment for `${{VAR}}` in CONFIG_FILE: read lazily, so only the variables the file names need access;
 * one Deno may not read fails the (re)load with a message that says how to grant it.
 */
function configFileEnv(): Record<string, string | undefined> {
  return new Proxy({} as Record<string, string | undefined>, {
    get(_target, name) {
      if (typeof name !== 'string') return undefined;
      try {
        return Deno.env.get(name);
      } catch (err) {
        throw new Error(
          `the config names the environment variable ${name}, which this Deno process may not read ` +
            `(${(err as Error).name}); restart it: \`deno task start\` grants every \${{VAR}} the file names at start, ` +
            `or add ${name} to --allow-env`,
        );
      }
    },
  });
}

/**
 * The `deno run` flags for the current settings, printed for `deno task start` (the rule: src/runtime/deno-permissions.ts).
 * This first run has `--allow-read` and `--allow-env` for the settings that decide the flags only.
 */
async function printPermissionFlags(): Promise<void> {
  const dataDir = resolve(Deno.env.get('DATA_DIR') || './data');
  const configFile = Deno.env.get('CONFIG_FILE') ? resolve(Deno.env.get('CONFIG_FILE') as string) : undefined;
  let configText: string | undefined;
  if (configFile) {
    try {
      configText = await Deno.readTextFile(configFile);
    } catch {
      // Unreadable now: the gateway itself reports it clearly at start.
    }
  }
  const adminKeyFile = await Deno.stat(join(dataDir, 'admin_key')).then(
    () => true,
    () => false,
  );
  const { flags, warning } = permissionFlags({
    dataDir,
    configFile,
    configText,
    etcd: Boolean(Deno.env.get('ETCD_HOST')?.trim()),
    // As readSettings: ADMIN_KEY holding only commas and blanks is unset (a key is generated).
    adminKey: (Deno.env.get('ADMIN_KEY') ?? '').split(',').some((k) => k.trim() !== ''),
    adminKeyFile,
    envNames: ENV_NAMES,
    spawnWorkers: startsWorkers(Deno.env.get('WORKERS')) ? Deno.execPath() : undefined,
    // ADMIN_TLS_CERT/KEY: read at start.
    readFiles: ['ADMIN_TLS_CERT', 'ADMIN_TLS_KEY'].flatMap((n) => (Deno.env.get(n) ? [resolve(Deno.env.get(n) as string)] : [])),
  });
  if (warning) console.error(warning);
  console.log(flags.join(' '));
}

const hex = (bytes: Uint8Array) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');

/**
 * The admin key when ADMIN_KEY is unset: generated once (32 random bytes, hex), kept in `<dataDir>/admin_key` with
 * mode 0600 and reused on later starts; the same rule and file as on Node (src/runtime/node-common.ts).
 */
async function ensureAdminKey(dir: string): Promise<string> {
  const path = join(dir, 'admin_key');
  try {
    const key = (await Deno.readTextFile(path)).trim();
    if (key.length >= 16) {
      // Printed whatever LOG_LEVEL says, as on Node: the user must be able to find the key. Never the key itself.
      console.log(`fngate admin key: read from ${path}`);
      return key;
    }
    throw new Error(`${path} holds no usable key (at least 16 characters); delete it to generate a new one`);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  const key = hex(crypto.getRandomValues(new Uint8Array(32)));
  // createNew: never overwrite a key another process just wrote.
  const file = await Deno.open(path, { write: true, createNew: true, mode: 0o600 });
  try {
    const data = new TextEncoder().encode(`${key}\n`);
    for (let off = 0; off < data.length; ) off += await file.write(data.subarray(off));
    await file.sync();
  } finally {
    file.close();
  }
  console.log(`fngate admin key: generated and stored in ${path} (mode 0600); pass it as X-API-KEY`);
  return key;
}

async function openStore(settings: Settings, dataDir: string, logger: Logger): Promise<ConfigStore> {
  if (settings.configFile) {
    const { openStandaloneDeno } = await import('../store/standalone-deno.ts');
    const path = resolve(settings.configFile);
    logger.info(`store: standalone file ${path} (Admin API is read-only)`);
    return openStandaloneDeno({
      path,
      api: Deno,
      env: configFileEnv(),
      onError: (err: Error) => logger.error(`config file: ${err.message}`),
    });
  }
  if (settings.etcdHosts) {
    const { EtcdStore } = await import('../store/etcd.ts');
    logger.info(`store: etcd ${settings.etcdHosts.join(', ')} prefix ${settings.etcdPrefix}`);
    return EtcdStore.open({
      endpoints: settings.etcdHosts,
      prefix: settings.etcdPrefix,
      user: settings.etcdUser,
      password: settings.etcdPassword,
      logger,
    });
  }
  try {
    await Deno.mkdir(dataDir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new StoreError(`cannot create the data directory ${dataDir}: ${(err as Error).message}`, { cause: err });
  }
  const { DenoKvStore } = await import('../store/deno-kv.ts');
  const path = join(dataDir, 'fngate.kv');
  logger.info(`store: Deno KV ${path}`);
  return DenoKvStore.open({ path, onError: (err) => logger.error(`Deno KV store: ${err.message}`) });
}

export type DenoForwarder = Forwarder & { close(): void };

/**
 * V8's `gc`, there when Deno runs with `--v8-flags=--expose-gc` (`deno task start` does). The forwarder asks it for a
 * young-generation collection after every {@link STREAM_GC_BYTES} of streamed answers: without it a 100 MiB
 * download grew the gateway's RSS by ~60 MiB (chunks wait for a scavenge that a streaming transfer rarely
 * triggers), with it by ~15-20 (`npm run bench -- --sections streaming --runtimes deno`). Without the flag: none.
 */
const exposedGc = (globalThis as { gc?: (options?: { type?: 'minor' | 'major' }) => void }).gc;
const STREAM_GC_BYTES = 8 * 1024 * 1024;
/** Idle kept-alive connections on the TLS port close after this long (as Node's ports). */
const TLS_KEEPALIVE_TIMEOUT_MS = 60_000;
/** At most this many HTTP clients that present a client certificate (upstream `tls`). */
const MAX_CERT_CLIENTS = 64;

/** The forwarding client on Deno (see the file comment): Deno's fetch with one HTTP client per keep-alive setting. */
export function createDenoForwarder(): DenoForwarder {
  const clients = new Map<string, Deno.HttpClient>();
  // Clients that present a client certificate (upstream `tls`): per certificate identity × keep-alive setting, at
  // most MAX_CERT_CLIENTS, the oldest closed first.
  const certClients = new Map<string, Deno.HttpClient>();
  const clientFor = (k: ForwardRequest['keepalive'], cc: ClientCert | undefined): Deno.HttpClient => {
    const setting = k.enabled ? `${k.idleTimeoutMs}:${k.poolSize}` : 'off';
    const id = cc === undefined ? setting : `${setting}\n${cc.id}`;
    const cache = cc === undefined ? clients : certClients;
    let client = cache.get(id);
    if (!client) {
      if (cc !== undefined && certClients.size >= MAX_CERT_CLIENTS) {
        const [oldestId, oldest] = certClients.entries().next().value!;
        certClients.delete(oldestId);
        oldest.close();
      }
      client = Deno.createHttpClient({
        allowHost: true,
        poolMaxIdlePerHost: k.enabled ? Math.max(1, k.poolSize) : 0,
        poolIdleTimeout: k.enabled && k.idleTimeoutMs > 0 ? k.idleTimeoutMs : false,
        ...(cc ? { cert: cc.cert, key: cc.key } : {}),
      });
      cache.set(id, client);
    }
    return client;
  };
  const inner = createFetchForwarder({
    sharedClock: true,
    compressed: 'strip',
    // Deno decodes gzip and br even when Accept-Encoding is passed on; other codings arrive as sent.
    decodes: ['gzip', 'br'],
    honoursHost: true,
    refused: denoRefused,
    extraInit: (r) => ({ client: clientFor(r.keepalive, r.clientCert) }),
    collectGarbage: exposedGc ? { everyBytes: STREAM_GC_BYTES, collect: () => exposedGc({ type: 'minor' }) } : undefined,
  });
  const forwarder = (req: ForwardRequest): Promise<Response> => {
    if (!req.tlsVerify && req.url.startsWith('https:')) {
      return Promise.reject(
        new UpstreamError(
          'protocol',
          '"ssl_verify": false is not supported on Deno: its fetch always verifies TLS certificates',
        ),
      );
    }
    return inner(req);
  };
  return Object.assign(forwarder, {
    close() {
      for (const c of clients.values()) c.close();
      for (const c of certClients.values()) c.close();
      clients.clear();
      certClients.clear();
    },
  });
}

type DenoEnv = Deno.ServeHandlerInfo<Deno.NetAddr>;

/**
 * A request without a `Host` header: 400, as Node's server answers an HTTP/1.1 one (RFC 9112 §3.2). Deno routes it
 * with `localhost:<port>` in its URL, and tells HTTP/1.0 (where Host is optional) from 1.1 apart nowhere, so both are
 * refused; so is an HTTP/2 request on the plain port (prior knowledge), which carries `:authority` and no `Host`:
 * the core routes by `Host`, and such a request would pass host-restricted routes unchecked.
 */
const noHost = (): Response => {
  const res = errorResponse(400, 'bad request: no Host header');
  res.headers.set('connection', 'close');
  return res;
};

function serve(
  app: { fetch: (req: Request, env: DenoEnv) => Response | Promise<Response> },
  hostname: string,
  port: number,
  what: string,
  tls?: { cert: string; key: string },
  reusePort = false,
): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve(
    {
      hostname,
      port,
      reusePort,
      ...tls,
      onListen(addr) {
        const host = addr.hostname.includes(':') ? `[${addr.hostname}]` : addr.hostname;
        console.log(`fngate ${what} listening on ${tls ? 'https' : 'http'}://${host}:${addr.port}`);
      },
    },
    // An error answer to an upload ends the connection, after a bounded read of the rest (src/runtime/refused-body.ts).
    closeAfterRefusal(
      (req: Request, info: DenoEnv) =>
        req.headers.has('host') ? (framingError(req) ?? app.fetch(req, info)) : noHost(),
      {
        holdAnswer: false,
        ownChunkedBody: true,
      },
    ),
  );
}

function denoHostname(): string {
  try {
    return Deno.hostname();
  } catch {
    return '';
  }
}

const encoder = new TextEncoder();

/**
 * file-logger's appender on Deno: a file opened for append per path, written synchronously (small lines). Needs
 * write permission for the path (`deno task start` grants DATA_DIR only); a refusal is reported once per path.
 */
function denoFileAppender(logger: Logger): { append(path: string, text: string): void } {
  const files = new Map<string, Deno.FsFile>();
  const failed = new Set<string>();
  return {
    append(path, text) {
      if (failed.has(path)) return;
      try {
        let f = files.get(path);
        if (!f) {
          f = Deno.openSync(path, { append: true, create: true, mode: 0o600 });
          files.set(path, f);
        }
        const bytes = encoder.encode(text);
        let off = 0;
        while (off < bytes.length) off += f.writeSync(bytes.subarray(off));
      } catch (err) {
        failed.add(path);
        logger.error(`file-logger: cannot write ${path}: ${(err as Error).message}`);
      }
    },
  };
}

/** One access-log line to stdout (synchronous, as console.log is). */
function writeStdout(line: string): void {
  const bytes = encoder.encode(line);
  let off = 0;
  while (off < bytes.length) off += Deno.stdout.writeSync(bytes.subarray(off));
}

async function main(): Promise<void> {
  const command = 'deno task start   (or: deno run <flags> src/runtime/deno.ts)';
  const cli = parseCommandLine(Deno.args, ['--permission-flags', WORKER_ARG]);
  if (!cli.ok) {
    console.error(usageError(cli.message, command).trimEnd());
    Deno.exit(2);
  }
  if (cli.help) {
    console.log(helpText(command).trimEnd());
    return;
  }
  if (cli.flags.has('--permission-flags')) {
    await printPermissionFlags();
    return;
  }
  const settings = readSettings(readEnv(ENV_NAMES), denoCores());
  const logger = levelLogger(settings.logLevel);
  const dataDir = resolve(settings.dataDir);
  // WORKERS > 1 on Linux (src/runtime/workers-deno.ts): the primary serves the Admin, status and metrics ports and
  // owns the store; each worker (this script again, with WORKER_ARG) serves the proxy from the primary's state.
  const role = await denoCluster({
    workers: settings.workers,
    args: Deno.args,
    script: new URL(import.meta.url).pathname,
    envNames: ENV_NAMES,
    dataDir,
    host: settings.host,
    proxyPort: settings.proxyPort,
    proxyHttpsPort: settings.proxyHttpsPort,
    logger,
  });
  const realStore = role.kind === 'worker' ? undefined : await openStore(settings, dataDir, logger);
  const store = role.kind === 'worker' ? role.store : role.kind === 'primary' ? role.wrapStore(realStore!) : realStore!;
  const adminKeys = role.kind === 'worker' ? [] : (settings.adminKeys ?? [await ensureAdminKey(dataDir)]);
  const forwarder = createDenoForwarder();
  // The access log (ACCESS_LOG): the gateway hands over a few ms of lines at a time, one stdout write each.
  const accessLog = settings.accessLog ? writeStdout : undefined;
  // The Admin API's address, for the export server's CORS (set once it listens; ADMIN_PORT=0 takes a free port).
  let adminServer: Deno.HttpServer<Deno.NetAddr> | undefined;
  const names = localNames();
  const gateway = await createGateway({
    store,
    forwarder,
    adminKeys,
    logger,
    // The TLS port is node:tls + node:http(2) (src/runtime/node-tls.ts), whose env is the node request, not Deno's info.
    clientIp: (_req, env) =>
      'remoteAddr' in (env as object) ? (env as DenoEnv).remoteAddr.hostname : ((env as HttpBindings).incoming.socket.remoteAddress ?? ''),
    scheme: (_req, env) => ('incoming' in (env as object) ? 'https' : 'http'),
    capabilities: { runtime: 'deno', tlsVerifyOff: false, keepaliveRequests: false },
    adminAllow: settings.adminAllow,
    dataEncryptionKeys: settings.dataEncryptionKeys,
    // ssls: certificates and keys parsed and matched with node:crypto when the Admin API stores them.
    tlsValidator: nodeTlsValidator(),
    // Rate-limit `policy: "redis"`: node-redis, kept out of the core (and of the Worker bundle).
    limits: { redis: redisConnector(logger) },
    observability: {
      // Deno.hostname() needs --allow-sys, which the narrow permission set does not grant: no host name then.
      hostname: denoHostname(),
      refreshIntervalMs: settings.prometheusRefreshMs,
      // The export server answers CORS for the dashboard's origin (the Admin API's) only.
      dashboard: () =>
        adminServer
          ? { host: settings.adminHost, port: adminServer.addr.port, tls: !!(settings.adminTlsCert && settings.adminTlsKey), localNames: names }
          : undefined,
      collectors: [processCollector()],
      files: denoFileAppender(logger),
    },
    accessLog,
    // enable_websocket routes: a frame relay (websocket-deno.ts); on the TLS port (node:http) Node's socket pipe.
    websocket: tlsPortWebSocketConnector(denoWebSocketConnector()),
    proxy: role.kind !== 'primary',
  });

  // The primary of WORKERS > 1 serves no proxy (neither port); a worker serves nothing else.
  const proxyServer =
    role.kind === 'primary'
      ? undefined
      : role.kind === 'worker'
        ? serve({ fetch: finishDenoUpgrades(gateway.serveProxy) }, settings.host, role.proxyPort, 'proxy', undefined, true)
        : serve({ fetch: finishDenoUpgrades(gateway.serveProxy) }, settings.host, settings.proxyPort, 'proxy');
  // ADMIN_TLS_CERT/KEY: the Admin API speaks HTTPS only (the files read once, at start).
  const adminTls =
    role.kind !== 'worker' && settings.adminTlsCert && settings.adminTlsKey
      ? { cert: await Deno.readTextFile(settings.adminTlsCert), key: await Deno.readTextFile(settings.adminTlsKey) }
      : undefined;
  adminServer =
    role.kind === 'worker' ? undefined : serve(gateway.admin, settings.adminHost, settings.adminPort, 'admin API', adminTls);
  // The TLS port (PROXY_HTTPS_PORT): Node's (src/runtime/node-tls.ts) on Deno's node:tls, node:http and node:http2,
  // since Deno.serve takes one certificate and no SNI callback while Deno's node:tls server calls SNICallback.
  let tlsPort: TlsPort | undefined;
  if (settings.proxyHttpsPort !== undefined && role.kind !== 'primary') {
    tlsPort = await openTlsPort({
      host: settings.host,
      port: role.kind === 'worker' ? role.proxyHttpsPort! : settings.proxyHttpsPort,
      fetch: gateway.serveProxy,
      table: gateway.sniTable,
      onChange: gateway.onSniChange,
      logger,
      keepAliveTimeoutMs: TLS_KEEPALIVE_TIMEOUT_MS,
      handshakeTimeoutMs: settings.tlsHandshakeTimeoutMs,
      overrideGlobalObjects: false,
      reusePort: role.kind === 'worker',
    });
  }
  // The Prometheus export server: a port in use is reported, not fatal (several gateways on one host).
  let metricsServer: Deno.HttpServer<Deno.NetAddr> | undefined;
  if (settings.prometheusPort !== undefined && role.kind !== 'worker') {
    try {
      metricsServer = serve(
        {
          fetch: (req) =>
            role.kind === 'primary' ? role.serveMetrics(req, gateway.obs.exportCors(req)) : gateway.obs.serveMetrics(req),
        },
        settings.prometheusHost,
        settings.prometheusPort,
        'prometheus',
      );
    } catch (err) {
      logger.error(
        `prometheus: cannot listen on ${settings.prometheusHost}:${settings.prometheusPort} (${(err as Error).message}); metrics are not exported (PROMETHEUS_PORT)`,
      );
    }
  }

  // The status API (APISIX's /status, /status/ready): the config is loaded once the gateway exists; with WORKERS,
  // ready once every worker serves it; with etcd, while the watch is up or within its grace.
  let statusServer: Deno.HttpServer<Deno.NetAddr> | undefined;
  if (settings.statusPort !== undefined && role.kind !== 'worker') {
    const storeNotReady = storeReadiness(realStore ?? {});
    try {
      statusServer = serve(
        { fetch: statusHandler(() => (role.kind === 'primary' ? role.notReady() : undefined) ?? storeNotReady()) },
        settings.statusHost,
        settings.statusPort,
        'status API',
      );
    } catch (err) {
      logger.error(
        `status API: cannot listen on ${settings.statusHost}:${settings.statusPort} (${(err as Error).message}); not served (STATUS_PORT)`,
      );
    }
  }
  if (role.kind === 'primary') await role.start(store);
  if (role.kind === 'worker') role.started(() => gateway.refresh(), () => gateway.obs.metricsText());

  installShutdown({
    graceMs: settings.shutdownTimeoutMs,
    logger,
    role,
    closeServers: () =>
      Promise.all([proxyServer?.shutdown(), adminServer?.shutdown(), metricsServer?.shutdown(), tlsPort?.close()]),
    closeStatus: () => statusServer?.shutdown(),
    sweepIdle: () => tlsPort?.closeIdle(),
    force: () => Deno.exit(0),
    parts: [gateway, store, forwarder],
    exit: (code) => Deno.exit(code),
    unref: (t) => Deno.unrefTimer(t as unknown as number),
    onSignal: (signal, fn) => Deno.addSignalListener(signal, fn),
  });
}

/**
 * What WORKERS defaults to: the cores available to the process (`navigator.hardwareConcurrency`, which on Linux
 * follows the CPU affinity and cgroup quota, as Node's `os.availableParallelism()`); 1 elsewhere, where Deno.serve's
 * `reusePort` does not spread connections (src/runtime/workers-deno.ts).
 */
function denoCores(): number {
  return Deno.build.os === 'linux' ? navigator.hardwareConcurrency || 1 : 1;
}

/** Whether WORKERS (as readSettings reads it) asks for worker processes here: then the primary may run deno. */
function startsWorkers(workers: string | undefined): boolean {
  try {
    return readSettings({ WORKERS: workers }, denoCores()).workers > 1;
  } catch {
    return false; // a bad WORKERS: the gateway itself refuses it at start
  }
}

main().catch((err) => {
  console.error(startupError(err));
  Deno.exit(1);
});

/**
 * Deno's fetch names the phase that failed in its cause: `client error (Connect)` (refused, unreachable, DNS: nothing
 * was written) versus `client error (SendRequest)` (connected, then the connection broke: maybe sent). Probed on
 * Deno 2 against a closed port and a listener that resets after reading the request.
 */
function denoRefused(err: unknown): boolean {
  const cause = (err as { cause?: unknown } | null)?.cause;
  return cause instanceof Error && cause.message.includes('client error (Connect)');
}

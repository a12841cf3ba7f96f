import type { Context } from 'hono';
import { Hono } from 'hono';
import type { ConfigStore } from '../store/types.ts';
import { createAdmin } from './admin/index.ts';
import { createSnapshotCompiler, type Snapshot } from './config.ts';
import { consoleLogger, type Logger, RequestContext } from './context.ts';
import { errorResponse } from './errors.ts';
import { Observability, type ObservabilityOptions } from './observability/prometheus.ts';
import { pluginRegistry } from './plugins/index.ts';
import { type Capabilities, FULL_CAPABILITIES } from './plugins/check.ts';
import { type CompiledPlugin, type PluginList, pluginList, runPipeline } from './plugins/pipeline.ts';
import { accessLogQueue } from './observability/access-log-queue.ts';
import type { AnyPlugin } from './plugins/types.ts';
import { hostOf } from './router/host.ts';
import { normalizePath } from './router/path.ts';
import { createLimitBackends, type LimitBackendsOptions } from './limits/redis.ts';
import { policyRefusal } from './plugins/limit-common.ts';
import { createKeyring, createSecrets } from './secrets.ts';
import { compileSniTable, type SniTable, type SslEntry, sslVersionOf, type TlsValidator } from './ssl.ts';
import type { ClientCert, Forwarder } from './upstream/types.ts';
import type { WebSocketConnector } from './websocket.ts';

export interface GatewayOptions {
  store: ConfigStore;
  /** The runtime's forwarding client. */
  forwarder: Forwarder;
  /** Admin keys; none = the Admin API refuses every request. */
  adminKeys?: readonly string[];
  logger?: Logger;
  plugins?: readonly AnyPlugin[];
  /** The client's IP address, from the runtime's connection info ('' when unknown). */
  clientIp?: (req: Request, env: ServerEnv) => string;
  /** `https` when the runtime terminates TLS in front of the gateway. */
  scheme?: (req: Request, env: ServerEnv) => string;
  /**
   * The signal that fires when the client went away (default: the request's own `signal`). A runtime may give a
   * cheaper one its forwarder understands (Node: node-forwarder's `clientSignal`, no AbortController per request).
   */
  clientSignal?: (req: Request, env: ServerEnv) => AbortSignal | undefined;
  /**
   * The client's request headers as they came, flat (`[name, value, name, value, …]`, names in any case), for a
   * runtime that has them so (Node: `incoming.rawHeaders`). Undefined: `req.headers` is iterated. On Node that
   * iteration makes @hono/node-server build an undici `Headers` from the raw list (validating and sorting it).
   */
  rawHeaders?: (req: Request, env: ServerEnv) => readonly string[] | undefined;
  /**
   * The body of a GET request (null when it has none; the same stream on every call), for a runtime whose server
   * keeps it and whose forwarder can send it (Node: undici). APISIX forwards GET bodies; a WHATWG `Request` drops
   * them, and the fetch of Deno, Bun and workerd refuses to send one, so those runtimes leave this unset.
   */
  getBody?: (req: Request, env: ServerEnv) => ReadableStream<Uint8Array> | null;
  /** What the forwarder can do (default: everything, as on Node). */
  capabilities?: Capabilities;
  /** Client addresses/CIDRs allowed to reach the Admin API (ADMIN_ALLOW); undefined: no address check. */
  adminAllow?: readonly string[];
  /**
   * DATA_ENCRYPTION_KEY keyring (16- or 32-byte keys): plugin secret fields are encrypted at rest with the
   * first key and decrypted with any of them. Undefined or empty: stored in plaintext.
   */
  dataEncryptionKeys?: readonly string[];
  /**
   * Rate-limit backends (limit-count, limit-req, limit-conn): `redis` is the runtime's Redis client factory
   * (Node, Deno, Bun: src/runtime/redis.ts), injected so no client enters the core or the Worker bundle; without
   * it `policy: "redis"` is refused with 400. `localRefused` refuses `policy: "local"` (Workers). The gateway owns
   * the resulting state for its whole life (PluginEnv.limits), so counters survive config changes.
   */
  limits?: LimitBackendsOptions;
  /**
   * The access log: when set, every request's APISIX log entry (apisix-wave2.md §9.1, credentials redacted) is
   * written as one JSON line ending in a newline (ACCESS_LOG; the runtimes write it to stdout). Lines are built and
   * handed over in batches, several lines in one text (observability/access-log-queue.ts); `close()` hands over
   * the last of them.
   */
  accessLog?: (text: string) => void;
  /**
   * How long lines gather before they are built and handed over (default 5 ms); 0 hands each one over as its
   * request ends (Workers: a timer set during a request may never fire once its answer is sent).
   */
  accessLogDelayMs?: number;
  /** Keeps a request's background work (logger sends) alive after its answer: Workers' `ctx.waitUntil`. */
  waitUntil?: (req: Request, env: ServerEnv) => ((work: Promise<unknown>) => void) | undefined;
  /** Metrics settings (host name, scrape cache, the runtime's connection and process metrics). */
  observability?: ObservabilityOptions;
  /**
   * The runtime's WebSocket connector for `enable_websocket` routes (src/core/websocket.ts; Node: a socket pipe,
   * Deno, Bun, Workers: a frame relay). Undefined: an upgrade to such a route answers 501.
   */
  websocket?: WebSocketConnector;
  /**
   * The runtime's X.509 check of `ssls` certificates and keys (Node, Deno, Bun: node:crypto, src/runtime/tls-check.ts);
   * without it (Workers) the Admin API checks the PEM structure only.
   */
  tlsValidator?: TlsValidator;
  /**
   * false: this gateway serves only the Admin API (the primary of WORKERS > 1, whose workers serve the proxy), so
   * it compiles no snapshot of the config (its `serveProxy` answers 404 for everything). Default true.
   */
  proxy?: boolean;
}

/**
 * What a runtime's server hands a request handler along with the Request: @hono/node-server's
 * `{ incoming, outgoing }`, Bun's server, Deno's `ServeHandlerInfo`, a Worker's bindings. Hono calls it `c.env`.
 */
export type ServerEnv = unknown;

export interface Gateway {
  /**
   * The proxy (port 9080) as a fetch handler: what the runtime entries serve. Not a Hono app: the proxy has one
   * catch-all route and its own matcher, so Hono's per-request Context and dispatch would be pure cost (bench/README.md).
   * An unexpected error becomes a 500 with `error_msg`, as from the Admin API.
   */
  serveProxy(req: Request, env?: ServerEnv): Response | Promise<Response>;
  /** The same proxy as a Hono app (one catch-all route calling {@link Gateway.serveProxy}), for mounting. */
  proxy: Hono;
  /** The Admin API app (port 9180), serving `/apisix/admin/*`. */
  admin: Hono;
  /** One app for runtimes with a single port (Workers): admin under `/apisix/admin`, everything else proxied. */
  combined: Hono;
  /** Re-read the store and swap in a new snapshot. Concurrent calls coalesce. */
  refresh(): Promise<void>;
  /** The snapshot requests are served from now. */
  current(): Snapshot;
  /** The server certificates of the current config, by SNI (`ssls`), for a runtime that terminates TLS. */
  sniTable(): SniTable;
  /** Called with the new table whenever an `ssls` object changed (after the snapshot swap). Returns an unsubscribe. */
  onSniChange(fn: (table: SniTable) => void): () => void;
  /** The metrics (prometheus) and the export server's fetch handler (`obs.serveMetrics`, on PROMETHEUS_PORT). */
  obs: Observability;
  /** Stops watching the store and the metrics' timers, hands over the access log's waiting lines, closes the limits' backends. */
  close(): Promise<void>;
}

const NOT_FOUND_BODY = `${JSON.stringify({ error_msg: '404 Route Not Found' })}\n`;
const notFound = () => new Response(NOT_FOUND_BODY, { status: 404, headers: { 'content-type': 'application/json' } });

export async function createGateway(opts: GatewayOptions): Promise<Gateway> {
  const logger = opts.logger ?? consoleLogger;
  const plugins = pluginRegistry(opts.plugins);
  const { store, forwarder } = opts;
  const limits = createLimitBackends(opts.limits);
  const capabilities: Capabilities = {
    ...(opts.capabilities ?? FULL_CAPABILITIES),
    limitPolicyRefusal: (policy) => policyRefusal(policy, limits),
  };
  const obs = new Observability(opts.observability);
  // `type: client` ssls as client certificates (upstream `tls.client_cert_id`), from the current SNI table; one
  // object per ssl version, so a forwarder's per-certificate client is reused until the ssl changes.
  const clientCerts = new WeakMap<SslEntry, ClientCert>();
  const clientSsl = (id: string): ClientCert | string => {
    const entry = sni.client(id);
    // APISIX's messages (init.lua, resolve_upstream_client_cert).
    if (entry === undefined) return sni.isServer(id) ? "ssl type should be 'client'" : `ssl id [${id}] not exits`;
    let cc = clientCerts.get(entry);
    if (cc === undefined) {
      const { cert, key } = entry.pairs[0]!;
      cc = { cert, key, id: `${cert}\n${key}` };
      clientCerts.set(entry, cc);
    }
    return cc;
  };
  const compileEnv = { plugins, logger, prefix: store.prefix, capabilities, limits, obs, clientSsl };
  const keyring = opts.dataEncryptionKeys?.length ? await createKeyring(opts.dataEncryptionKeys) : undefined;
  // Secret fields are decrypted before compiling (WebCrypto is async, compiling is not).
  const secrets = createSecrets(plugins, keyring);

  // Each distinct problem is logged once, not on every rebuild (a fleet on etcd rebuilds often).
  let reported = new Set<string>();
  const compile = createSnapshotCompiler(compileEnv);
  const initial = await store.load();
  const compiles = opts.proxy !== false;
  // The ssls' SNI table, rebuilt only when an ssl object changed; runtimes with a TLS port listen for changes.
  let sni = await compileSniTable(initial, store.prefix, keyring, logger);
  let snapshot: Snapshot = compiles ? build(await secrets.openState(initial)) : compile({ revision: initial.revision, items: [] });
  const sniListeners = new Set<(table: SniTable) => void>();
  /** Rebuilds the table when an ssl object changed; returns what tells the listeners (run it after the snapshot swap). */
  async function updateSni(state: Awaited<ReturnType<ConfigStore['load']>>): Promise<(() => void) | undefined> {
    if (sslVersionOf(state, store.prefix) === sni.version) return undefined;
    sni = await compileSniTable(state, store.prefix, keyring, logger);
    const table = sni;
    return () => {
      for (const fn of sniListeners) {
        try {
          fn(table);
        } catch (err) {
          logger.error('tls: applying the changed ssls failed', { error: (err as Error).message });
        }
      }
    };
  }

  function build(state: Awaited<ReturnType<ConfigStore['load']>>): Snapshot {
    const started = performance.now();
    const snap = compile(state);
    const now = new Set(snap.problems);
    for (const p of now) if (!reported.has(p)) logger.warn(`config: ${p}`);
    reported = now;
    const ms = performance.now() - started;
    logger.info('config loaded', { revision: snap.revision, routes: snap.router.size, ms: Math.round(ms * 10) / 10 });
    return snap;
  }

  // Coalescing refresh: at most one load in flight, and one more queued behind it.
  // A store notification always rebuilds (a store can come back with other content at the same
  // revision, e.g. an etcd wiped and refilled); the Admin API's own writes rebuild when the revision moved.
  let running: Promise<void> | undefined;
  let again = false;
  let forceNext = false;
  function refresh(force = false): Promise<void> {
    if (!compiles) return Promise.resolve();
    if (force) forceNext = true;
    if (running) {
      again = true;
      return running.then(() => (again ? refresh() : undefined));
    }
    running = (async () => {
      try {
        do {
          again = false;
          const forced = forceNext;
          forceNext = false;
          const state = await store.load();
          if (forced || state.revision !== snapshot.revision) {
            // The ssls first: a route that names a client ssl written with it finds it at once.
            const notify = await updateSni(state);
            snapshot = build(await secrets.openState(state));
            notify?.();
          }
        } while (again);
      } catch (err) {
        logger.error('config reload failed; still serving the previous config', { error: (err as Error).message });
      } finally {
        running = undefined;
      }
    })();
    return running;
  }
  const unwatch = store.watch(() => void refresh(true));

  const clientIp = opts.clientIp ?? (() => '');
  const scheme = opts.scheme ?? (() => 'http');
  const clientSignal = opts.clientSignal ?? ((req: Request) => req.signal);
  const rawHeaders = opts.rawHeaders;
  const runEnv = { logger };
  // The access log runs as the last log handler of the global list, so every answer (404s, exits) is logged.
  const logEnv = { hostname: opts.observability?.hostname ?? '' };
  const accessLog = opts.accessLog && accessLogQueue(opts.accessLog, logEnv, { delayMs: opts.accessLogDelayMs });
  const accessLogger: CompiledPlugin | undefined = accessLog && {
    name: '(access log)',
    priority: Number.MIN_SAFE_INTEGER,
    auth: false,
    preferRoute: false,
    instance: { log: accessLog.log },
  };
  const withAccessLog = new WeakMap<PluginList, PluginList>();
  const globalsOf = (list: PluginList): PluginList => {
    if (!accessLogger) return list;
    let out = withAccessLog.get(list);
    if (!out) {
      out = pluginList([...list.all, accessLogger]);
      withAccessLog.set(list, out);
    }
    return out;
  };
  const getBody = opts.getBody;
  const websocket = opts.websocket;
  const waitUntil = opts.waitUntil;

  function handle(req: Request, env: ServerEnv): Response | Promise<Response> {
    obs.requests++;
    const url = req.url;
    const method = req.method; // read once: on workerd each read is a call into the runtime and a new string
    const pathStart = url.indexOf('/', url.indexOf('//') + 2);
    const q = url.indexOf('?', pathStart);
    const rawPath = pathStart < 0 ? '/' : q < 0 ? url.slice(pathStart) : url.slice(pathStart, q);
    const path = normalizePath(rawPath);
    if (path === null) return errorResponse(400, 'bad request: the path cannot be normalised (malformed percent-encoding, invalid UTF-8, a NUL byte, or a backslash or ";" making a ".." segment)');
    const hostHeader = req.headers.get('host');
    // Several Host headers arrive joined with ', ' (a valid Host never holds a comma): RFC 9112 §3.2 wants 400,
    // and routing on one while forwarding the other would be a host confusion.
    if (hostHeader?.includes(',')) return errorResponse(400, 'bad request: more than one Host header');
    const host = hostOf(hostHeader);
    const snap = snapshot;
    const ctx = new RequestContext({
      request: req,
      url,
      method,
      path,
      rawPath,
      query: q < 0 ? '' : url.slice(q + 1),
      host,
      hostHeader,
      clientIp: clientIp(req, env),
      scheme: scheme(req, env),
      rawHeaders: rawHeaders?.(req, env),
      getBody: getBody && method === 'GET' ? () => getBody(req, env) : undefined,
      clientSignal: () => clientSignal(req, env),
      forward: forwarder,
      env,
      websocket,
    });
    if (waitUntil) ctx.waitUntil = waitUntil(req, env);
    ctx.consumers = snap.consumers;
    ctx.metadata = snap.metadata;
    const m = snap.router.match({ method, host, path, remoteAddr: ctx.clientIp, ctx });
    if (m) {
      ctx.params = m.params;
      ctx.routeId = m.data.id;
      ctx.serviceId = m.data.serviceId;
      ctx.route = m.data.info;
    }
    return runPipeline(ctx, globalsOf(snap.globals), m?.data.pipeline, notFound, runEnv);
  }

  const internalError = (err: unknown): Response => {
    logger.error('proxy: unexpected error', { error: err instanceof Error ? err.message : String(err) });
    return errorResponse(500, 'internal error in the gateway');
  };
  const serveProxy = (req: Request, env?: ServerEnv): Response | Promise<Response> => {
    try {
      const res = handle(req, env);
      return res instanceof Promise ? res.catch(internalError) : res;
    } catch (err) {
      return internalError(err);
    }
  };

  const proxy = new Hono();
  proxy.all('*', (c) => serveProxy(c.req.raw, c.env));

  const admin = createAdmin({
    store,
    plugins,
    capabilities,
    keys: opts.adminKeys ?? [],
    afterWrite: () => refresh(),
    logger,
    clientIp: (c: Context) => clientIp(c.req.raw, c.env),
    allow: opts.adminAllow,
    keyring,
    tlsValidator: opts.tlsValidator,
  });
  admin.onError((err) => {
    logger.error('admin: unexpected error', { error: err.message });
    return errorResponse(500, 'internal error in the Admin API');
  });

  const combined = new Hono();
  combined.route('/', admin);
  combined.route('/', proxy);

  return {
    serveProxy,
    proxy,
    admin,
    combined,
    refresh,
    current: () => snapshot,
    sniTable: () => sni,
    onSniChange(fn) {
      sniListeners.add(fn);
      return () => sniListeners.delete(fn);
    },
    obs,
    async close() {
      unwatch();
      accessLog?.flush();
      obs.close();
      await running;
      await limits.close();
    },
  };
}

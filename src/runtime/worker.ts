/**
 * fngate on Cloudflare Workers (workerd): `npx wrangler dev` locally, `npx wrangler deploy` to publish.
 * One gateway per isolate, built lazily on the first request; proxy and Admin API share the one origin
 * (`/apisix/admin/*` is the Admin API, everything else is proxied).
 *
 * Bindings (wrangler.toml):
 * - `STANDALONE_CONFIG` (var): an APISIX standalone config (YAML ending in `#END`, or JSON, or a TOML table in
 *   `[vars]`); when set, its routes are served and the Admin API is read-only. `STANDALONE_FORMAT` = `yaml` |
 *   `json` overrides the guess (JSON when the text starts with `{`).
 * - `GATEWAY_KV` (KV namespace): the config store when STANDALONE_CONFIG is unset (see store/cloudflare-kv.ts
 *   for its consistency model). `KV_CACHE_TTL` (s, default 5), `KV_FULL_RELOAD` (s, default 300, 0 = never),
 *   `KV_PREFIX` (default `/apisix`).
 * - neither: an in-memory store per isolate (lost on eviction, not shared): for trying things out only.
 * - `ADMIN_KEY` (secret: `wrangler secret put ADMIN_KEY`; locally `.dev.vars` or `--var`): admin key(s),
 *   comma-separated, each at least 16 characters. Unset: there is NO Admin API; `/apisix/admin/...` is proxied
 *   like any other path (normally `404 Route Not Found`). There is no generated key as on Node: a Worker has no
 *   private place to write one.
 * - `LOG_LEVEL`: as on Node. `ADMIN_ALLOW` / `DATA_ENCRYPTION_KEY` (secret) are validated as on Node.
 * - `LIMITS` (Durable Object namespace of the class {@link LimitCounter}): the counters of limit-count, limit-req
 *   and limit-conn with `policy: "local"`, one object per counter key, shared by every isolate (src/core/limits/
 *   durable.ts). Without the binding such confs are refused with 400: per-isolate counters would limit nothing.
 *   `policy: "redis"` is refused (no TCP Redis client here).
 *
 * Runtime differences (handled here; listed in the README's runtime table, each backed by test/conformance/):
 * - `ssl_verify: false` cannot be honoured (Workers' fetch always verifies TLS): the Admin API refuses it and a
 *   stored route with it is skipped with a logged reason (capabilities.tlsVerifyOff = false).
 * - A client certificate to an upstream (`upstream.tls`) cannot be presented: a Worker's fetch presents one only
 *   through an `mtls_certificates` binding uploaded and bound at deploy time (`wrangler mtls-certificate upload`),
 *   not a certificate taken from the config at run time. The Admin API refuses it with 400 and a route stored with
 *   it is served without it, logged (capabilities.upstreamClientCert = false).
 * - `pass_host` pass/rewrite (a Host other than the URL's) cannot be sent: Workers derive Host from the URL, so
 *   both act as `node`.
 * - Function URLs with a bare IP (`http://127.0.0.1:9000/...`) work under local workerd only; in production
 *   Workers refuse fetches to IP addresses (error 1003): give functions a DNS name.
 * - Client IP from `CF-Connecting-IP` (set by Cloudflare's edge; locally Miniflare passes a client's own value
 *   through); scheme from the request URL.
 * - Headers named by the client's `Connection` header cannot be dropped: workerd removes `Connection` first.
 * - Cloudflare's edge gzips/brotlis text answers (text/plain, application/json, ...) for clients that accept it,
 *   which holds back the chunks of a streamed answer; `text/event-stream` and binary types stream as sent.
 * - Outgoing requests: 6 connections at a time per request, subrequest limits per plan (not enforced locally).
 */
import type { ExecutionContext } from 'hono';
import type { Logger } from '../core/context.ts';
import { errorResponse } from '../core/errors.ts';
import { DurableLimits, type DurableNamespaceLike, type DurableStateLike, LimitObject } from '../core/limits/durable.ts';
import { createGateway, type Gateway } from '../core/gateway.ts';
import { createFetchForwarder } from '../core/upstream/fetch-forwarder.ts';
import { CloudflareKVStore, type KVNamespaceLike } from '../store/cloudflare-kv.ts';
import { MemoryStore } from '../store/memory.ts';
import { type StandaloneFormat, StandaloneStore } from '../store/standalone.ts';
import type { ConfigStore } from '../store/types.ts';
import { levelLogger, readSettings, SettingsError } from './settings.ts';
import { finishWorkerUpgrade, workerWebSocketConnector } from './websocket-worker.ts';

export interface Env {
  GATEWAY_KV?: KVNamespaceLike;
  LIMITS?: DurableNamespaceLike;
  ADMIN_KEY?: string;
  STANDALONE_CONFIG?: string | Record<string, unknown>;
  STANDALONE_FORMAT?: string;
  KV_CACHE_TTL?: string;
  KV_FULL_RELOAD?: string;
  KV_PREFIX?: string;
  LOG_LEVEL?: string;
  [name: string]: unknown;
}

/** workerd's stream of a declared length (a global of the Workers runtime). */
declare const FixedLengthStream: new (length: number) => TransformStream<Uint8Array, Uint8Array>;

/**
 * A streamed answer of a known length as a `FixedLengthStream`: workerd then sends its `Content-Length`, and an answer
 * that breaks off (the body's timeout, the function's reset) ends short where the client can tell, instead of as a
 * complete chunked answer (workerd ends a JS stream's chunked answer cleanly even when the stream errors).
 */
function fixedLengthBody(body: ReadableStream<Uint8Array>, length: number): ReadableStream<Uint8Array> {
  const fixed = new FixedLengthStream(length);
  body.pipeTo(fixed.writable).catch(() => {});
  return fixed.readable;
}

/** The part of the Workers ExecutionContext used here. */
export interface ExecutionContextLike {
  waitUntil(promise: Promise<unknown>): void;
}

interface Booted {
  gateway: Gateway;
  /** The combined Hono app (Admin API + proxy); undefined when there is no Admin API (the proxy alone is served). */
  app: { fetch(req: Request, env: Env, ctx: ExecutionContext): Response | Promise<Response> } | undefined;
  kv?: CloudflareKVStore;
  logger: Logger;
}

let booting: Promise<Booted> | undefined;

/** String-valued bindings (vars and secrets), as a plain environment for settings and `${{VAR}}`. */
function stringVars(env: Env): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(env)) if (typeof v === 'string') out[k] = v;
  return out;
}

function seconds(env: Env, name: 'KV_CACHE_TTL' | 'KV_FULL_RELOAD', dflt: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return dflt * 1000;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new SettingsError(`${name}=${raw} is not a number of seconds (>= 0)`);
  return n * 1000;
}

async function openStore(
  env: Env,
  vars: Record<string, string | undefined>,
  logger: Logger,
): Promise<{ store: ConfigStore; kv?: CloudflareKVStore }> {
  const standalone = env.STANDALONE_CONFIG;
  if (standalone !== undefined && standalone !== '') {
    const text = typeof standalone === 'string' ? standalone : JSON.stringify(standalone);
    const hint = env.STANDALONE_FORMAT?.toLowerCase();
    if (hint !== undefined && hint !== 'yaml' && hint !== 'json')
      throw new SettingsError(`STANDALONE_FORMAT=${hint} is not yaml or json`);
    const format: StandaloneFormat =
      (hint as StandaloneFormat | undefined) ?? (text.trimStart().startsWith('{') ? 'json' : 'yaml');
    logger.info(`store: standalone config from STANDALONE_CONFIG (${format}; the Admin API is read-only)`);
    const store = await StandaloneStore.open({
      source: {
        describe: 'the STANDALONE_CONFIG variable',
        editHint: 'STANDALONE_CONFIG ([vars] in wrangler.toml) and deploy again',
        read: async () => text,
      },
      format,
      env: vars,
      onError: (err) => logger.error(`standalone config: ${err.message}`),
    });
    return { store };
  }
  if (env.GATEWAY_KV) {
    const kv = new CloudflareKVStore({
      kv: env.GATEWAY_KV,
      prefix: env.KV_PREFIX || undefined,
      cacheTtlMs: seconds(env, 'KV_CACHE_TTL', 5),
      fullReloadMs: seconds(env, 'KV_FULL_RELOAD', 300),
      onError: (err) => logger.error(`kv store: ${err.message}`),
    });
    logger.info(`store: Workers KV (GATEWAY_KV, prefix ${kv.prefix})`);
    return { store: kv, kv };
  }
  logger.warn(
    'store: neither STANDALONE_CONFIG nor the GATEWAY_KV binding is set: using an in-memory store that every isolate ' +
      'has on its own and loses when evicted; bind a KV namespace as GATEWAY_KV (see wrangler.toml)',
  );
  return { store: new MemoryStore() };
}

async function boot(env: Env): Promise<Booted> {
  const vars = stringVars(env);
  if (vars.ETCD_HOST) {
    // Never fall back to another store without saying so: the user meant this fleet to follow etcd.
    throw new Error(
      'ETCD_HOST is set, but the etcd store cannot run on Cloudflare Workers (no watch can stay open between ' +
        'requests); bind a KV namespace as GATEWAY_KV or set STANDALONE_CONFIG instead (README, "Runtimes")',
    );
  }
  // Only the settings that mean something on Workers (no ports, files or etcd). ADMIN_ALLOW and DATA_ENCRYPTION_KEY
  // are checked here too, so a bad value fails the boot rather than being ignored.
  const settings = readSettings({
    ADMIN_KEY: vars.ADMIN_KEY,
    ADMIN_ALLOW: vars.ADMIN_ALLOW,
    DATA_ENCRYPTION_KEY: vars.DATA_ENCRYPTION_KEY,
    LOG_LEVEL: vars.LOG_LEVEL,
    ACCESS_LOG: vars.ACCESS_LOG,
  });
  const logger = levelLogger(settings.logLevel);
  const { store, kv } = await openStore(env, vars, logger);
  const gateway = await createGateway({
    store,
    forwarder: createFetchForwarder({
      compressed: 'keep',
      honoursHost: false,
      bufferLimitedBodies: true,
      copyAnswerHeaders: true,
      recordHeaders: true,
      fixedLength: fixedLengthBody,
    }),
    adminKeys: settings.adminKeys ?? [],
    logger,
    clientIp: (req) => req.headers.get('cf-connecting-ip') ?? '',
    scheme: (req) => (req.url.startsWith('https:') ? 'https' : 'http'),
    capabilities: {
      runtime: 'Cloudflare Workers',
      tlsVerifyOff: false,
      keepaliveRequests: false,
      upstreamClientCert: false,
      // As the forwarder's `honoursHost: false` above: a Worker's fetch sends the URL's authority as Host.
      hostHeader: false,
    },
    // The Admin API shares the public origin here: the loopback default would lock out every real client,
    // so an address list applies only when ADMIN_ALLOW is set explicitly (the key is the protection).
    adminAllow: vars.ADMIN_ALLOW ? settings.adminAllow : undefined,
    dataEncryptionKeys: settings.dataEncryptionKeys,
    limits: env.LIMITS
      ? { local: new DurableLimits(env.LIMITS) }
      : {
          localRefused:
            'policy "local" needs the LIMITS Durable Object binding on Cloudflare Workers (see wrangler.toml): ' +
            "an isolate's own counters would limit nothing, as requests spread over isolates and locations",
        },
    // Workers Logs / `wrangler tail` get one line per request. No metrics: a Worker has no scrape target.
    accessLog: settings.accessLog ? (line) => console.log(line.trimEnd()) : undefined,
    // Each line as its request ends: a timer set during a request may never fire once its answer is sent.
    accessLogDelayMs: 0,
    // enable_websocket routes: fetch with Upgrade upstream, a WebSocketPair to the client (websocket-worker.ts).
    websocket: workerWebSocketConnector(),
    // Logger sends outlive the answer only through the request's ExecutionContext: the proxy alone is served with
    // the ExecutionContext as its ServerEnv (see `serve`), the combined app through executionContexts.
    waitUntil: (req, serverEnv) => {
      const ctx = serverEnv instanceof RequestEnv ? serverEnv.ctx : executionContexts.get(req);
      return ctx ? (work) => ctx.waitUntil(work) : undefined;
    },
  });
  if (!settings.adminKeys) logger.info('ADMIN_KEY is not set: no Admin API (/apisix/admin/* is proxied like any path)');
  return { gateway, app: settings.adminKeys ? gateway.combined : undefined, kv, logger };
}

/**
 * The Durable Object class of the `LIMITS` binding (wrangler.toml `[[durable_objects.bindings]]`): the rate-limit
 * counters of one key.
 */
export class LimitCounter {
  private readonly object: LimitObject;

  constructor(state: DurableStateLike) {
    this.object = new LimitObject(state);
  }

  fetch(req: Request): Promise<Response> {
    return this.object.fetch(req);
  }
}
/** The ExecutionContext of each request the combined app serves, for GatewayOptions.waitUntil. */
const executionContexts = new WeakMap<Request, ExecutionContextLike>();

/** The ServerEnv the proxy alone is served with: the request's ExecutionContext. */
class RequestEnv {
  constructor(readonly ctx: ExecutionContextLike) {}
}

/** The gateway once booted, when requests need nothing else first (no KV to poll): the synchronous path. */
let ready: Booted | undefined;

function serve(booted: Booted, request: Request, env: Env, ctx: ExecutionContextLike): Response | Promise<Response> {
  let res: Response | Promise<Response>;
  if (booted.app) {
    executionContexts.set(request, ctx);
    res = booted.app.fetch(request, env, ctx as ExecutionContext);
  } else res = booted.gateway.serveProxy(request, new RequestEnv(ctx));
  return res instanceof Promise ? res.then(finishWorkerUpgrade) : finishWorkerUpgrade(res);
}

async function bootAndServe(request: Request, env: Env, ctx: ExecutionContextLike): Promise<Response> {
  let booted: Booted;
  try {
    if (!booting) {
      booting = boot(env);
      // Other requests may wait on this boot: keep it going even if this request's client goes away.
      ctx.waitUntil(booting.catch(() => {}));
    }
    booted = await booting;
  } catch (err) {
    booting = undefined; // a later request tries again (KV may have been unreachable)
    // The reason goes to the Worker's log only: it may quote the config (`wrangler tail` shows it).
    console.error(`fngate: cannot start: ${err instanceof Error ? err.message : String(err)}`);
    return errorResponse(503, 'fngate cannot start; the reason is in the Worker log (wrangler tail)');
  }
  if (booted.kv) {
    // Lazily poll KV for changes (no timers run between requests); waitUntil keeps the shared check alive
    // even if the request that started it goes away.
    const { gateway } = booted;
    const fresh = booted.kv.ensureFresh().then((changed) => (changed ? gateway.refresh() : undefined));
    ctx.waitUntil(fresh);
    await fresh;
  } else ready = booted;
  return serve(booted, request, env, ctx);
}

export default {
  /**
   * Once booted without KV, a request goes to the gateway synchronously: no `async` entry, no await of the settled
   * boot, no per-request WeakMap entry for the proxy alone (bench/README.md, "workerd").
   */
  fetch(request: Request, env: Env, ctx: ExecutionContextLike): Response | Promise<Response> {
    const booted = ready;
    return booted !== undefined ? serve(booted, request, env, ctx) : bootAndServe(request, env, ctx);
  },
};

/**
 * fngate on Bun: `npm run start:bun` (= `bun run src/runtime/bun.ts`). Proxy on HOST:PROXY_PORT, Admin API on
 * ADMIN_HOST:ADMIN_PORT, the same settings, store and admin-key rule as on Node (src/runtime/node-common.ts: Bun
 * has `node:fs`). @hono/node-server is not loaded: `Bun.serve` serves the Hono apps directly.
 *
 * Forwarding: Bun's own fetch (createFetchForwarder), with Bun's extensions (checked on Bun 1.4.5):
 * - `decompress: false`: the body stays as the function encoded it and Bun adds no `Accept-Encoding` of its own,
 *   so the client's `Accept-Encoding` decides and `Content-Encoding` stays true (`compressed: 'keep'`);
 * - `tls.rejectUnauthorized` = the route's `ssl_verify`, per request; `tls.cert`/`tls.key` = the upstream's client
 *   certificate (upstream `tls`), per request;
 * - `keepalive: false` opens a new connection per request (`keepalive: false` on the route); otherwise Bun's
 *   shared pool is used. `keepalive_timeout` / `keepalive_pool` are not honoured: plain fetch has no per-request
 *   pool settings, and `Bun.FetchSession`'s `keepAlive.idleTimeout` had no visible effect on 1.4.5 (measured);
 * - `Host`: Bun sends a `Host` header set on the request, so `pass_host: pass|rewrite` works; the core never
 *   copies the client's `Host` (it drops it from the forwarded headers), so only the upstream's own or the
 *   configured one is sent;
 * - `timeout: false`: Bun's 5-minute socket idle timer is off; the core's per-route `timeout` decides.
 *
 * Server limits:
 * - `maxRequestBodySize`: Bun answers 413 by itself (plain, without `error_msg`) above it, for both
 *   Content-Length and chunked uploads. It is set out of reach so the route's `max_req_body_size` (the core's
 *   413) and the Admin API's 1.5 MiB limit are what decide.
 * - `idleTimeout`: Bun closes a connection after this many seconds without a byte in either direction, also
 *   while a handler is still waiting for the function. Set to Bun's maximum, 255 s; a function that stays silent
 *   for longer than that is cut on Bun even when the route's `timeout` allows more (Node has no such limit).
 *   Idle keep-alive connections are closed after the same 255 s.
 */
import { createGateway } from '../core/gateway.ts';
import { bunWebSocketConnector, bunWebSocketHandlers, finishBunUpgrades } from './websocket-bun.ts';
import { tlsPortWebSocketConnector } from './websocket-node.ts';
import { redisConnector } from './redis.ts';
import { createFetchForwarder } from '../core/upstream/fetch-forwarder.ts';
import type { ClientCert } from '../core/upstream/types.ts';
import { availableParallelism, hostname } from 'node:os';
import { framingError } from './framing.ts';
import { nodeTlsValidator } from './tls-check.ts';
import { adminTlsOptions, openTlsPort, type TlsPort } from './node-tls.ts';
import type { HttpBindings } from '@hono/node-server';
import { ensureAdminKey, openStore } from './node-common.ts';
import { nodeFileAppender } from './file-appender.ts';
import { processCollector } from './process-metrics.ts';
import { localNames } from './local-names.ts';
import { statusHandler, storeReadiness } from './status.ts';
import { freeProxyPort, nodeCluster } from './workers-node.ts';
import { closeAfterRefusal, originalRequest } from './refused-body.ts';
import {
  helpText,
  levelLogger,
  parseCommandLine,
  readSettings,
  startupError,
  usageError,
} from './settings.ts';
import { installShutdown } from './shutdown.ts';
import { bunAllocatorEnv } from './bun-allocator.ts';

/** The part of `Bun.serve`'s server used here (declared locally: no @types/bun in this repo). */
interface BunServer {
  readonly hostname: string;
  readonly port: number;
  requestIP(req: Request): { address: string; family: string; port: number } | null;
  stop(closeActiveConnections?: boolean): Promise<void>;
  /** Requests in flight. */
  readonly pendingRequests: number;
  upgrade(req: Request, opts: { data: unknown; headers?: Headers }): boolean;
}

interface BunServeOptions {
  hostname: string;
  port: number;
  /** Seconds without traffic before a connection is closed; at most 255, 0 = never. */
  idleTimeout?: number;
  maxRequestBodySize?: number;
  development?: boolean;
  /** SO_REUSEPORT (Linux): several processes listen on one port and the kernel spreads the connections. */
  reusePort?: boolean;
  fetch(req: Request, server: BunServer): Response | Promise<Response>;
  websocket?: typeof bunWebSocketHandlers;
  error?(err: Error): Response | Promise<Response>;
}

declare const Bun: {
  readonly version: string;
  serve(opts: BunServeOptions): BunServer;
};

/**
 * Header lines a request may have on the TLS port (node:http), 431 past it: Bun.serve's own limit on the plain
 * port (measured on Bun 1.4.5: 198 lines pass, 199 get 431). Bun's fetch sends at most 255 header lines, its own
 * included, and drops the rest without a word, so more would reach the function cut short.
 */
const MAX_HEADER_LINES = 198;
/** Idle kept-alive connections on the TLS port close after this long (as Node's and Deno's). */
const TLS_KEEPALIVE_TIMEOUT_MS = 60_000;
/** Bun's largest `idleTimeout`. */
const IDLE_TIMEOUT_S = 255;
/** Out of reach: the core's limits (route `max_req_body_size`, Admin API 1.5 MiB) decide, with their own 413. */
const MAX_REQUEST_BODY = Number.MAX_SAFE_INTEGER;

/** Bun's fetch extensions, one frozen object per TLS-verify x keep-alive setting (made once, not per request). */
const bunFetchExtras = [false, true].flatMap((tlsVerify) =>
  [false, true].map((keepalive) =>
    Object.freeze({
      decompress: false,
      tls: Object.freeze({ rejectUnauthorized: tlsVerify }),
      keepalive,
      timeout: false,
    }),
  ),
);

/** Bun's fetch extensions with a client certificate (upstream `tls`): per certificate x setting, at most 256 kept. */
const certExtras = new Map<string, Readonly<Record<string, unknown>>>();
function bunCertExtras(cc: ClientCert, tlsVerify: boolean, keepalive: boolean): Readonly<Record<string, unknown>> {
  const id = `${tlsVerify ? 'v' : 'n'}${keepalive ? 'k' : 'c'}\n${cc.id}`;
  let extras = certExtras.get(id);
  if (extras === undefined) {
    if (certExtras.size >= 256) certExtras.delete(certExtras.keys().next().value!);
    extras = Object.freeze({
      decompress: false,
      tls: Object.freeze({ rejectUnauthorized: tlsVerify, cert: cc.cert, key: cc.key }),
      keepalive,
      timeout: false,
    });
    certExtras.set(id, extras);
  }
  return extras;
}

async function main(): Promise<void> {
  const command = 'npm run start:bun   (or: bun run src/runtime/bun.ts)';
  const cli = parseCommandLine(process.argv.slice(2));
  if (!cli.ok) {
    process.stderr.write(usageError(cli.message, command));
    process.exit(2);
  }
  if (cli.help) {
    process.stdout.write(helpText(command));
    return;
  }
  const settings = readSettings(process.env, availableParallelism());
  const logger = levelLogger(settings.logLevel);
  // WORKERS > 1: Bun's node:cluster, each worker its own Bun.serve with `reusePort` (src/runtime/workers-node.ts).
  const role = nodeCluster(settings, logger);
  const realStore = role.kind === 'worker' ? undefined : await openStore(settings, logger);
  const store = role.kind === 'worker' ? role.store : role.kind === 'primary' ? role.wrapStore(realStore!) : realStore!;
  const adminKeys =
    role.kind === 'worker' ? [] : (settings.adminKeys ?? [await ensureAdminKey(settings.dataDir, logger)]);
  let proxyServer: BunServer | undefined;
  const forwarder = createFetchForwarder({
    sharedClock: true,
    editHeadersInPlace: true,
    compressed: 'keep',
    honoursHost: true,
    refused: bunRefused,
    extraInit: (r) =>
      r.clientCert === undefined
        ? bunFetchExtras[(r.tlsVerify ? 2 : 0) + (r.keepalive.enabled ? 1 : 0)]!
        : bunCertExtras(r.clientCert, r.tlsVerify, r.keepalive.enabled),
  });
  // The access log (ACCESS_LOG): the gateway hands over a few ms of lines at a time, one stdout write each.
  const accessLog = settings.accessLog ? (text: string) => void process.stdout.write(text) : undefined;
  // The Admin API's address, for the export server's CORS (set once it listens; ADMIN_PORT=0 takes a free port).
  let adminServer: BunServer | undefined;
  const names = localNames();
  const gateway = await createGateway({
    store,
    forwarder,
    adminKeys,
    logger,
    // The TLS port is node:tls + node:http(2) (src/runtime/node-tls.ts), whose env is the node request.
    clientIp: (req, env) =>
      'incoming' in (env as object)
        ? ((env as HttpBindings).incoming.socket.remoteAddress ?? '')
        : ((env as BunServer).requestIP(originalRequest(req))?.address ?? ''),
    adminAllow: settings.adminAllow,
    dataEncryptionKeys: settings.dataEncryptionKeys,
    // ssls: certificates and keys parsed and matched with node:crypto when the Admin API stores them.
    tlsValidator: nodeTlsValidator(),
    scheme: (_req, env) => ('incoming' in (env as object) ? 'https' : 'http'),
    // Bun's fetch has no per-request pool settings (see above): `keepalive_pool.requests` is refused.
    capabilities: { runtime: 'bun', tlsVerifyOff: true, keepaliveRequests: false },
    // Rate-limit `policy: "redis"`: node-redis, kept out of the core (and of the Worker bundle).
    limits: { redis: redisConnector(logger) },
    observability: {
      hostname: hostname(),
      refreshIntervalMs: settings.prometheusRefreshMs,
      // The export server answers CORS for the dashboard's origin (the Admin API's) only.
      dashboard: () =>
        adminServer
          ? { host: settings.adminHost, port: adminServer.port, tls: !!(settings.adminTlsCert && settings.adminTlsKey), localNames: names }
          : undefined,
      // Bun.serve reports requests in flight, not connections: `writing` is the closest nginx state.
      connections: () => ({ writing: proxyServer?.pendingRequests ?? 0 }),
      collectors: [processCollector()],
      files: nodeFileAppender(logger),
    },
    accessLog,
    // enable_websocket routes: a frame relay (websocket-bun.ts); on the TLS port (node:http) Node's socket pipe.
    websocket: tlsPortWebSocketConnector(bunWebSocketConnector()),
    proxy: role.kind !== 'primary',
  });

  const serve = (
    app: { fetch: (req: Request, env: BunServer) => Response | Promise<Response> },
    hostname: string,
    port: number,
    what: string,
    tls?: { cert: string; key: string },
  ) => {
    const server = Bun.serve({
      ...(tls ? { tls } : {}),
      hostname,
      port,
      idleTimeout: IDLE_TIMEOUT_S,
      maxRequestBodySize: MAX_REQUEST_BODY,
      development: false,
      websocket: bunWebSocketHandlers,
      // Workers share the proxy port through SO_REUSEPORT (Linux spreads the connections).
      reusePort: role.kind === 'worker',
      // An error answer to an upload ends the connection, after a bounded read of the rest (src/runtime/refused-body.ts).
      fetch: closeAfterRefusal((req: Request, srv: BunServer) => framingError(req) ?? app.fetch(req, srv), {
        holdAnswer: true,
        ownChunkedBody: true,
        confirmEnd: true,
      }),
      error(err) {
        logger.error(`${what}: unexpected error`, { error: err.message });
        return new Response(`${JSON.stringify({ error_msg: 'internal error in the gateway' })}\n`, {
          status: 500,
          headers: { 'content-type': 'application/json' },
        });
      },
    });
    const host = server.hostname.includes(':') ? `[${server.hostname}]` : server.hostname;
    console.log(`fngate ${what} listening on ${tls ? 'https' : 'http'}://${host}:${server.port}`);
    return server;
  };

  proxyServer =
    role.kind === 'primary'
      ? undefined
      : serve({ fetch: finishBunUpgrades(gateway.serveProxy, originalRequest) }, settings.host, settings.proxyPort, 'proxy');
  // The TLS port (PROXY_HTTPS_PORT): Node's (src/runtime/node-tls.ts) on Bun's node:tls, node:http and node:http2:
  // SNI by callback (a name without a certificate is refused), HTTP/2 by ALPN, rotation without a new listener.
  let tlsPort: TlsPort | undefined;
  if (settings.proxyHttpsPort !== undefined && role.kind !== 'primary') {
    tlsPort = await openTlsPort({
      host: settings.host,
      port: settings.proxyHttpsPort,
      fetch: gateway.serveProxy,
      table: gateway.sniTable,
      onChange: gateway.onSniChange,
      logger,
      keepAliveTimeoutMs: TLS_KEEPALIVE_TIMEOUT_MS,
      handshakeTimeoutMs: settings.tlsHandshakeTimeoutMs,
      // Bun.serve (the other ports) keeps Bun's own Request/Response.
      overrideGlobalObjects: false,
      hardening: { maxHeaderLines: MAX_HEADER_LINES },
    });
  }
  // ADMIN_TLS_CERT/KEY: the Admin API speaks HTTPS only (the files read once, at start).
  const adminTls =
    settings.adminTlsCert && settings.adminTlsKey ? adminTlsOptions(settings.adminTlsCert, settings.adminTlsKey) : undefined;
  adminServer =
    role.kind === 'worker' ? undefined : serve(gateway.admin, settings.adminHost, settings.adminPort, 'admin API', adminTls);
  // The Prometheus export and status servers: a port in use is reported, not fatal (several gateways on one host).
  const optional = (fetch: (req: Request) => Response | Promise<Response>, host: string, port: number, what: string, name: string) => {
    try {
      return serve({ fetch }, host, port, what);
    } catch (err) {
      logger.error(`${what}: cannot listen on ${host}:${port} (${(err as Error).message}); not served (${name})`);
      return undefined;
    }
  };
  const metricsServer =
    settings.prometheusPort === undefined || role.kind === 'worker'
      ? undefined
      : optional(
          role.kind === 'primary' ? (req) => role.serveMetrics(req, gateway.obs.exportCors(req)) : (req) => gateway.obs.serveMetrics(req),
          settings.prometheusHost,
          settings.prometheusPort,
          'prometheus',
          'PROMETHEUS_PORT',
        );
  const storeNotReady = storeReadiness(realStore ?? {});
  const statusServer =
    settings.statusPort === undefined || role.kind === 'worker'
      ? undefined
      : optional(
          statusHandler(() => (role.kind === 'primary' ? role.notReady() : undefined) ?? storeNotReady()),
          settings.statusHost,
          settings.statusPort,
          'status API',
          'STATUS_PORT',
        );
  // SO_REUSEPORT workers cannot share a port 0: the primary picks one for all of them.
  // The workers run with the allocator setting `npm run start:bun` gives (bun-allocator.ts), also when the primary
  // was started without it.
  if (role.kind === 'primary')
    role.start(store, {
      ...bunAllocatorEnv(),
      ...(settings.proxyPort === 0 ? { PROXY_PORT: String(await freeProxyPort(settings.host)) } : {}),
    });
  if (role.kind === 'worker') role.started(() => gateway.refresh(), () => gateway.obs.metricsText());

  installShutdown({
    graceMs: settings.shutdownTimeoutMs,
    logger,
    role,
    closeServers: () => Promise.all([proxyServer?.stop(), adminServer?.stop(), metricsServer?.stop(), tlsPort?.close()]),
    closeStatus: () => statusServer?.stop(),
    // Kept-alive TLS connections close once idle (a streaming answer's connection goes idle later).
    sweepIdle: () => tlsPort?.closeIdle(),
    force() {
      void proxyServer?.stop(true);
      void adminServer?.stop(true);
      void metricsServer?.stop(true);
      tlsPort?.closeAll();
      void statusServer?.stop(true);
    },
    parts: [gateway, store],
    exit: (code) => process.exit(code),
    unref: (t) => t.unref(),
    onSignal: (signal, fn) => process.on(signal, fn),
  });
}

main().catch((err) => {
  console.error(startupError(err));
  process.exit(1);
});

/**
 * Bun's fetch rejects with a `code`: `ECONNREFUSED` (older Bun: `ConnectionRefused`) or `FailedToOpenSocket` when
 * nothing was written; `ECONNRESET` when the connection broke after connecting (maybe sent).
 */
function bunRefused(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'ECONNREFUSED' || code === 'ConnectionRefused' || code === 'FailedToOpenSocket';
}

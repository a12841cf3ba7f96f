#!/usr/bin/env node
/**
 * fngate on Node: `npm start`. Proxy on HOST:PROXY_PORT, Admin API on ADMIN_HOST:ADMIN_PORT.
 * The forwarding client is an undici Agent (see node-forwarder.ts for why not the global fetch).
 */
import type { Server, ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { availableParallelism, hostname } from 'node:os';
import { type Http2Bindings, type HttpBindings, serve } from '@hono/node-server';
import { createGateway } from '../core/gateway.ts';
import { redisConnector } from './redis.ts';
import { clientSignal, createNodeForwarder } from './node-forwarder.ts';
import { ensureAdminKey, openStore } from './node-common.ts';
import { createHardenedServer, getRequestBody } from './node-http.ts';
import { proxyListener } from './node-serve.ts';
import { nodeFileAppender } from './file-appender.ts';
import { processCollector } from './process-metrics.ts';
import { localNames } from './local-names.ts';
import { nodeWebSocketConnector, serveUpgrades } from './websocket-node.ts';
import { nodeTlsValidator } from './tls-check.ts';
import { adminTlsOptions, openTlsPort, type TlsPort } from './node-tls.ts';
import { statusHandler, storeReadiness } from './status.ts';
import { nodeCluster } from './workers-node.ts';
import {
  helpText,
  levelLogger,
  parseCommandLine,
  readSettings,
  startupError,
  usageError,
} from './settings.ts';
import { installShutdown } from './shutdown.ts';

/**
 * Idle keep-alive connections of the proxy are closed after this long (nginx's and APISIX's
 * `keepalive_timeout` 60 s; Node's default of 5 s would make clients reconnect far more often).
 */
const KEEPALIVE_TIMEOUT_MS = 60_000;

async function main(): Promise<void> {
  const command = 'npm start   (or: node dist/runtime/node.js)';
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
  // WORKERS > 1 (src/runtime/workers-node.ts): the primary serves the Admin, status and metrics ports and owns the
  // store; each worker serves the proxy from the primary's replicated state.
  const role = nodeCluster(settings, logger);
  const realStore = role.kind === 'worker' ? undefined : await openStore(settings, logger);
  const store = role.kind === 'worker' ? role.store : role.kind === 'primary' ? role.wrapStore(realStore!) : realStore!;
  const adminKeys =
    role.kind === 'worker' ? [] : (settings.adminKeys ?? [await ensureAdminKey(settings.dataDir, logger)]);
  const forwarder = createNodeForwarder();
  // The proxy's connections, for apisix_nginx_http_current_connections (Node can say active/accepted/handled).
  const conns = { active: 0, accepted: 0 };
  // The access log (ACCESS_LOG): the gateway hands over a few ms of lines at a time, one stdout write each.
  const accessLog = settings.accessLog ? (text: string) => void process.stdout.write(text) : undefined;
  // The Admin API's address, for the export server's CORS (set once it listens; ADMIN_PORT=0 takes a free port).
  let adminServer: Server | undefined;
  const names = localNames();
  const gateway = await createGateway({
    store,
    forwarder,
    adminKeys,
    logger,
    clientIp: (_req, env) => (env as HttpBindings).incoming.socket.remoteAddress ?? '',
    // Not `req.signal`: both ports' Requests make an AbortController for it on first access (~3 % of the CPU per
    // proxied request in the profile); this one listens to the connection's `close` only when needed. An HTTP/2
    // stream can end (a reset) while its connection lives on: there `req.signal`, which follows the stream.
    clientSignal: (req, env) => {
      const { incoming, outgoing } = env as HttpBindings;
      return incoming.httpVersionMajor === 2 ? req.signal : clientSignal(incoming, outgoing);
    },
    scheme: (_req, env) => ((env as HttpBindings).incoming.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http',
    // ssls: certificates and keys are parsed and matched with node:crypto when the Admin API stores them.
    tlsValidator: nodeTlsValidator(),
    // Not an iteration of `req.headers`, which builds (validates, sorts) an undici Headers on both ports' Requests.
    rawHeaders: (_req, env) => (env as HttpBindings).incoming.rawHeaders,
    // A GET body, which a WHATWG Request (both ports' Requests) has none of, forwarded as APISIX does.
    getBody: (_req, env) => getRequestBody((env as HttpBindings).incoming),
    adminAllow: settings.adminAllow,
    dataEncryptionKeys: settings.dataEncryptionKeys,
    // Rate-limit `policy: "redis"`: node-redis, kept out of the core (and of the Worker bundle).
    limits: { redis: redisConnector(logger) },
    observability: {
      hostname: hostname(),
      refreshIntervalMs: settings.prometheusRefreshMs,
      // The export server answers CORS for the dashboard's origin (the Admin API's) only.
      dashboard: () => {
        const port = (adminServer?.address() as AddressInfo | null)?.port;
        return port === undefined ? undefined : { host: settings.adminHost, port, tls: !!(settings.adminTlsCert && settings.adminTlsKey), localNames: names };
      },
      connections: () => ({ active: conns.active, accepted: conns.accepted, handled: conns.accepted }),
      collectors: [processCollector()],
      files: nodeFileAppender(logger),
    },
    accessLog,
    // enable_websocket routes: the upgrade goes through the gateway, then the two sockets are piped (websocket-node.ts).
    websocket: nodeWebSocketConnector(),
    proxy: role.kind !== 'primary',
  });
  if (role.kind !== 'worker') logger.info(`admin API: clients allowed from ${settings.adminAllow.join(', ')} (ADMIN_ALLOW)`);
  if (settings.dataEncryptionKeys && role.kind !== 'worker') {
    logger.info(
      `secrets: plugin secret fields are encrypted at rest (${settings.dataEncryptionKeys.length} key(s) in DATA_ENCRYPTION_KEY)`,
    );
  }

  // Once shutting down, every response closes its connection (`Connection: close`), so that a kept-alive
  // client (a proxy in front, a load generator) cannot hold the process open by sending more requests.
  let stopping = false;
  const sockets = new Set<Socket>();
  type Bindings = HttpBindings | Http2Bindings;
  const listen = (
    app: { fetch: (req: Request, env: Bindings) => Response | Promise<Response> },
    hostname: string,
    port: number,
    what: string,
    tls?: { cert: string; key: string },
  ) =>
    new Promise<Server>((resolveListen, reject) => {
      const fetch = (req: Request, env: Bindings) => {
        if (stopping) (env.outgoing as ServerResponse).shouldKeepAlive = false;
        return app.fetch(req, env);
      };
      // node:http with issue 18's hardening (header count, protocol errors with a JSON body, CONNECT, codings,
      // absolute-form targets, Expect: 100-continue): src/runtime/node-http.ts.
      const createServer = tls
        ? (createHttpsServer as unknown as typeof import('node:http').createServer)
        : (createHardenedServer as unknown as typeof import('node:http').createServer);
      const options = { fetch, hostname, port, createServer, ...(tls ? { serverOptions: tls } : {}) };
      const server = serve(options as Parameters<typeof serve>[0], (info: AddressInfo) => {
        const host = info.family === 'IPv6' ? `[${info.address}]` : info.address;
        console.log(`fngate ${what} listening on ${tls ? 'https' : 'http'}://${host}:${info.port}`);
        resolveListen(server as Server);
      });
      server.once('error', reject);
      server.on('connection', (sock: Socket) => {
        sockets.add(sock);
        sock.once('close', () => sockets.delete(sock));
      });
    });

  // The proxy port: node:http with node-http.ts's hardening and our own listener (node-serve.ts), not
  // @hono/node-server's: its per-request Request and Response adapters cost the proxy more than it needs.
  const listenProxy = (hostname: string, port: number) =>
    new Promise<Server>((resolveListen, reject) => {
      const serve = (req: Request, env: HttpBindings) => {
        if (stopping) env.outgoing.shouldKeepAlive = false;
        return gateway.serveProxy(req, env);
      };
      const server = createHardenedServer({}, proxyListener(serve, { hostname }));
      server.once('error', reject);
      server.on('connection', (sock: Socket) => {
        sockets.add(sock);
        sock.once('close', () => sockets.delete(sock));
      });
      server.listen(port, hostname, () => {
        const info = server.address() as AddressInfo;
        const host = info.family === 'IPv6' ? `[${info.address}]` : info.address;
        console.log(`fngate proxy listening on http://${host}:${info.port}`);
        resolveListen(server);
      });
    });
  // The primary of WORKERS > 1 serves no proxy (neither port); a worker serves nothing else.
  const proxyServer = role.kind === 'primary' ? undefined : await listenProxy(settings.host, settings.proxyPort);
  const websockets = proxyServer && serveUpgrades(proxyServer, gateway.serveProxy);
  if (proxyServer) {
    proxyServer.keepAliveTimeout = KEEPALIVE_TIMEOUT_MS;
    proxyServer.on('connection', (sock: Socket) => {
      conns.active++;
      conns.accepted++;
      sock.once('close', () => conns.active--);
    });
  }
  // The TLS port (PROXY_HTTPS_PORT): certificates by SNI from ssls, HTTP/2 by ALPN (src/runtime/node-tls.ts).
  let tlsPort: TlsPort | undefined;
  if (settings.proxyHttpsPort !== undefined && role.kind !== 'primary') {
    tlsPort = await openTlsPort({
      host: settings.host,
      port: settings.proxyHttpsPort,
      fetch: (req, env) => {
        if (stopping && 'shouldKeepAlive' in env.outgoing) (env.outgoing as ServerResponse).shouldKeepAlive = false;
        return gateway.serveProxy(req, env);
      },
      table: gateway.sniTable,
      onChange: gateway.onSniChange,
      logger,
      keepAliveTimeoutMs: KEEPALIVE_TIMEOUT_MS,
      handshakeTimeoutMs: settings.tlsHandshakeTimeoutMs,
      onConnection: (sock) => {
        sockets.add(sock);
        sock.once('close', () => sockets.delete(sock));
      },
    });
  }
  const adminTls =
    settings.adminTlsCert && settings.adminTlsKey ? adminTlsOptions(settings.adminTlsCert, settings.adminTlsKey) : undefined;
  adminServer =
    role.kind === 'worker' ? undefined : await listen(gateway.admin, settings.adminHost, settings.adminPort, 'admin API', adminTls);
  // The Prometheus export and status servers: a port in use is reported, not fatal (several gateways on one host).
  const optional = async (fetch: (req: Request) => Response | Promise<Response>, host: string, port: number, what: string, name: string) => {
    try {
      return await listen({ fetch }, host, port, what);
    } catch (err) {
      logger.error(`${what}: cannot listen on ${host}:${port} (${(err as Error).message}); not served (${name})`);
      return undefined;
    }
  };
  const metricsServer =
    settings.prometheusPort === undefined || role.kind === 'worker'
      ? undefined
      : await optional(
          role.kind === 'primary' ? (req) => role.serveMetrics(req, gateway.obs.exportCors(req)) : (req) => gateway.obs.serveMetrics(req),
          settings.prometheusHost,
          settings.prometheusPort,
          'prometheus',
          'PROMETHEUS_PORT',
        );
  // The status API (APISIX's /status, /status/ready): the config is loaded once the gateway exists; with WORKERS,
  // ready once every worker serves it; with etcd, while the watch is up or within its grace.
  const storeNotReady = storeReadiness(realStore ?? {});
  const statusServer =
    settings.statusPort === undefined || role.kind === 'worker'
      ? undefined
      : await optional(
          statusHandler(() => (role.kind === 'primary' ? role.notReady() : undefined) ?? storeNotReady()),
          settings.statusHost,
          settings.statusPort,
          'status API',
          'STATUS_PORT',
        );
  if (role.kind === 'primary') role.start(store);
  if (role.kind === 'worker') role.started(() => gateway.refresh(), () => gateway.obs.metricsText());

  installShutdown({
    graceMs: settings.shutdownTimeoutMs,
    logger,
    role,
    closeServers() {
      stopping = true;
      // Responses still being prepared say `Connection: close` too (Node keeps the current one in `_httpMessage`).
      for (const sock of sockets) {
        const res = (sock as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
        if (res && !res.headersSent) res.shouldKeepAlive = false;
      }
      return Promise.all([
        proxyServer && closed(proxyServer),
        adminServer && closed(adminServer),
        metricsServer && closed(metricsServer),
        tlsPort?.close(),
      ]);
    },
    closeStatus: () => statusServer && closed(statusServer),
    sweepIdle() {
      proxyServer?.closeIdleConnections();
      adminServer?.closeIdleConnections();
      tlsPort?.closeIdle();
    },
    force() {
      proxyServer?.closeAllConnections();
      websockets?.closeAll();
      adminServer?.closeAllConnections();
      tlsPort?.closeAll();
      metricsServer?.closeAllConnections();
      statusServer?.closeAllConnections();
    },
    parts: [gateway, store, forwarder],
    exit: (code) => process.exit(code),
    unref: (t) => t.unref(),
    onSignal: (signal, fn) => process.on(signal, fn),
  });
}

/** Stops a node:http server from accepting; resolves when its connections are closed. */
function closed(s: Server): Promise<void> {
  return new Promise<void>((r) => {
    s.close(() => r());
    s.closeIdleConnections();
  });
}

main().catch((err) => {
  console.error(startupError(err));
  process.exit(1);
});

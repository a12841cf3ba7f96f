#!/usr/bin/env node
/**
 * fngate on Node: `npm start`. Proxy on HOST:PROXY_PORT, Admin API on ADMIN_HOST:ADMIN_PORT.
 * The forwarding client is an undici Agent (see node-forwarder.ts for why not the global fetch).
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type HttpBindings, serve } from '@hono/node-server';
import { createGateway } from '../core/gateway.ts';
import { createNodeForwarder } from './node-forwarder.ts';
import { ensureAdminKey, openStore } from './node-common.ts';
import { helpText, levelLogger, readSettings, SettingsError } from './settings.ts';

const SHUTDOWN_GRACE_MS = 10_000;

async function main(): Promise<void> {
  if (process.argv.includes('--help') || process.argv.includes('-h')) {
    process.stdout.write(helpText('npm start   (or: node dist/runtime/node.js)'));
    return;
  }
  const settings = readSettings(process.env);
  const logger = levelLogger(settings.logLevel);
  const store = await openStore(settings, logger);
  const adminKeys = settings.adminKeys ?? [await ensureAdminKey(settings.dataDir, logger)];
  const forwarder = createNodeForwarder();
  const gateway = await createGateway({
    store,
    forwarder,
    adminKeys,
    logger,
    clientIp: (c) => (c.env as HttpBindings).incoming.socket.remoteAddress ?? '',
  });

  const listen = (app: { fetch: (req: Request, env: unknown) => Response | Promise<Response> }, hostname: string, port: number, what: string) =>
    new Promise<Server>((resolveListen, reject) => {
      const server = serve({ fetch: app.fetch, hostname, port }, (info: AddressInfo) => {
        const host = info.family === 'IPv6' ? `[${info.address}]` : info.address;
        console.log(`fngate ${what} listening on http://${host}:${info.port}`);
        resolveListen(server as Server);
      });
      server.once('error', reject);
    });

  const proxyServer = await listen(gateway.proxy, settings.host, settings.proxyPort, 'proxy');
  const adminServer = await listen(gateway.admin, settings.adminHost, settings.adminPort, 'admin API');

  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info(`${signal}: no new connections; finishing requests in flight (up to ${SHUTDOWN_GRACE_MS} ms)`);
    const force = setTimeout(() => {
      logger.warn('shutdown: grace period over, closing remaining connections');
      proxyServer.closeAllConnections();
      adminServer.closeAllConnections();
    }, SHUTDOWN_GRACE_MS);
    force.unref();
    const closed = (s: Server) =>
      new Promise<void>((r) => {
        s.close(() => r());
        s.closeIdleConnections();
      });
    Promise.all([closed(proxyServer), closed(adminServer)])
      .then(() => gateway.close())
      .then(() => store.close())
      .then(() => forwarder.close())
      .then(
        () => process.exit(0),
        (err) => {
          logger.error(`shutdown: ${(err as Error).message}`);
          process.exit(1);
        },
      );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

main().catch((err) => {
  if (err instanceof SettingsError) console.error(`fngate: ${err.message}\n\nRun with --help for the settings.`);
  else console.error(`fngate: cannot start: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});

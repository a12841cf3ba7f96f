/**
 * The proxy's TLS port on Node (PROXY_HTTPS_PORT), and the optional HTTPS Admin API (ADMIN_TLS_CERT/KEY).
 *
 * One `tls.Server` does the handshakes and hands each connection, by the protocol ALPN chose, to one of two HTTP
 * servers that never listen themselves: `h2` to an http2 server, `http/1.1` (or no ALPN) to the same hardened
 * node:http server as the plain port (src/runtime/node-http.ts: issue 18's protocol checks hold on both ports).
 *
 * - The certificate is chosen per handshake by SNI from the gateway's SNI table (src/core/ssl.ts: exact name, then
 *   `*.parent`, then `*`), through `SNICallback`. A name with no certificate, or a client that sends no SNI (an IP
 *   address), fails the handshake with a fatal `handshake_failure` alert (40). APISIX's radixtree_sni fails it too,
 *   from its certificate callback, which makes OpenSSL send `internal_error` (80); Node has no way to send that one.
 * - A change of `ssls` builds new secure contexts (`tls.createSecureContext`) and swaps the table: handshakes from
 *   then on get the new certificate, connections already open keep theirs. No restart, nothing dropped.
 * - Bounded: a handshake must finish within TLS_HANDSHAKE_TIMEOUT (Node's default is 120 s), at most MAX_PENDING_HANDSHAKES run at once (more
 *   are closed at accept), idle connections close after the keep-alive timeout, and an HTTP/2 session may have at
 *   most H2_MAX_STREAMS streams at once; a stream the client resets aborts its function call (the request's signal),
 *   and Node ends sessions that reset streams faster than it serves them (its CVE-2023-44487 mitigation).
 */
import { readFileSync } from 'node:fs';
import type { Server as HttpServer } from 'node:http';
import {
  createServer as createHttp2Server,
  type Http2Server,
  type Http2ServerRequest,
  type Http2Session,
} from 'node:http2';
import type { Socket } from 'node:net';
import { createSecureContext, createServer as createTlsServer, type SecureContext, type TLSSocket } from 'node:tls';
import { createAdaptorServer, type Http2Bindings, type HttpBindings } from '@hono/node-server';
import type { Logger } from '../core/context.ts';
import type { SniTable, SslEntry } from '../core/ssl.ts';
import { createHardenedServer, type HardeningOptions } from './node-http.ts';
import { serveUpgrades } from './websocket-node.ts';

/** Connections accepted but not yet through their handshake; beyond this, new ones are closed at once. */
export const MAX_PENDING_HANDSHAKES = 1024;
/** SETTINGS_MAX_CONCURRENT_STREAMS of an HTTP/2 session (nginx's `http2_max_concurrent_streams`). */
export const H2_MAX_STREAMS = 128;

/** The secure context of a handshake refused for want of a certificate. */
const NO_CERTIFICATE = createSecureContext({});

type Bindings = HttpBindings | Http2Bindings;
type Fetch = (req: Request, env: Bindings) => Response | Promise<Response>;

export interface TlsPort {
  /** The HTTP/1.1 server behind the TLS port (keep-alive timeout, closeIdleConnections, drain). */
  readonly http1: HttpServer;
  readonly http2: Http2Server;
  readonly port: number;
  /** Stop accepting; idle connections are closed, the others when their requests ended (or `closeAll`). */
  close(): Promise<void>;
  closeIdle(): void;
  closeAll(): void;
}

/** `ssl_protocols` → the secure context's minVersion/maxVersion (Node takes a range, not a set). */
function versionRange(protocols: readonly string[] | undefined) {
  if (!protocols?.length) return {};
  const order = ['TLSv1.1', 'TLSv1.2', 'TLSv1.3'] as const;
  const idx = protocols.map((p) => order.indexOf(p as (typeof order)[number])).filter((i) => i >= 0);
  return { minVersion: order[Math.min(...idx)], maxVersion: order[Math.max(...idx)] };
}

/**
 * `ssl_protocols` after the handshake: OpenSSL (Node, Bun) picks the version before SNICallback swaps the context,
 * so the context's minVersion/maxVersion do not bind it (a TLSv1.2-only ssl was reached with TLSv1.3); a connection
 * whose version the ssl does not list is closed before a request is read. (Deno's rustls refuses it in the
 * handshake, with a `protocol_version` alert, as APISIX's OpenSSL does.)
 */
function protocolRefused(table: SniTable, sock: TLSSocket): { sni: string; protocol: string } | undefined {
  const protocols = table.match(sock.servername || undefined)?.protocols;
  if (!protocols?.length) return undefined;
  const protocol = sock.getProtocol();
  if (typeof protocol !== 'string' || protocols.includes(protocol)) return undefined;
  return { sni: String(sock.servername), protocol };
}

/** A secure context per ssl object of the table, built once per table version. */
function contextsOf(table: SniTable, logger: Logger): Map<SslEntry, SecureContext> {
  const out = new Map<SslEntry, SecureContext>();
  for (const entry of table.entries) {
    try {
      out.set(
        entry,
        createSecureContext({
          cert: entry.pairs.map((p) => p.cert),
          key: entry.pairs.map((p) => p.key),
          ...versionRange(entry.protocols),
        }),
      );
    } catch (err) {
      logger.error(`tls: ssl ${entry.id} cannot be used: ${(err as Error).message}`);
    }
  }
  return out;
}

/**
 * For an HTTP/2 request: the request's header list without pseudo-headers and with `host` from `:authority` (the
 * gateway routes on Host, and forwards the list as it is).
 */
function h2RawHeaders(incoming: Http2ServerRequest): void {
  const raw = incoming.rawHeaders;
  const out: string[] = [];
  let host = false;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.charCodeAt(0) === 58 /* : */) continue;
    if (name.length === 4 && name.toLowerCase() === 'host') host = true;
    out.push(name, raw[i + 1]!);
  }
  if (!host && incoming.authority) out.push('host', incoming.authority);
  Object.defineProperty(incoming, 'rawHeaders', { value: out });
}

export interface TlsPortOptions {
  host: string;
  port: number;
  fetch: Fetch;
  /** The current SNI table and its changes (Gateway.sniTable / onSniChange). */
  table: () => SniTable;
  onChange: (fn: (table: SniTable) => void) => void;
  logger: Logger;
  keepAliveTimeoutMs: number;
  /** TLS_HANDSHAKE_TIMEOUT. */
  handshakeTimeoutMs: number;
  /** Called for each accepted connection (metrics, drain bookkeeping). */
  onConnection?: (sock: Socket) => void;
  /**
   * Let @hono/node-server replace the global Request/Response with its lighter classes (its default, right on Node).
   * Deno passes false: Deno.serve (its other ports) accepts only Deno's own Response.
   */
  overrideGlobalObjects?: boolean;
  /** SO_REUSEPORT (Deno's WORKERS: each worker process listens on the port itself; src/runtime/workers-deno.ts). */
  reusePort?: boolean;
  /** The runtime's limits on top of node-http.ts's checks (Bun: the header lines its fetch can forward). */
  hardening?: HardeningOptions;
}

/**
 * The TLS port as every entry opens it (PROXY_HTTPS_PORT): a port that cannot be listened on is logged and the
 * gateway runs without TLS, as the other optional ports.
 */
export async function openTlsPort(opts: TlsPortOptions): Promise<TlsPort | undefined> {
  try {
    return await listenTlsPort(opts);
  } catch (err) {
    opts.logger.error(
      `tls: cannot listen on ${opts.host}:${opts.port} (${(err as Error).message}); the proxy serves no TLS (PROXY_HTTPS_PORT)`,
    );
    return undefined;
  }
}

export function listenTlsPort(opts: TlsPortOptions): Promise<TlsPort> {
  const { logger } = opts;
  let table = opts.table();
  let contexts = contextsOf(table, logger);
  opts.onChange((next) => {
    const built = contextsOf(next, logger);
    table = next;
    contexts = built;
    logger.info('tls: certificates changed', { ssls: next.entries.length });
  });

  const hardened: typeof createHardenedServer = (options, listener) => createHardenedServer(options, listener, opts.hardening);
  const http1 = createAdaptorServer({
    fetch: opts.fetch,
    createServer: hardened as unknown as typeof import('node:http').createServer,
    overrideGlobalObjects: opts.overrideGlobalObjects,
  }) as HttpServer;
  http1.keepAliveTimeout = opts.keepAliveTimeoutMs;
  // WebSocket upgrades (enable_websocket routes): the same handler as the plain port's on Node, the two sockets piped.
  const websockets = serveUpgrades(http1, opts.fetch as (req: Request, env: unknown) => Response | Promise<Response>);

  const h2fetch: Fetch = (req, env) => {
    h2RawHeaders(env.incoming as Http2ServerRequest);
    return opts.fetch(req, env);
  };
  const http2 = createAdaptorServer({
    fetch: h2fetch,
    createServer: createHttp2Server as unknown as typeof import('node:http').createServer,
    overrideGlobalObjects: opts.overrideGlobalObjects,
    serverOptions: { settings: { maxConcurrentStreams: H2_MAX_STREAMS } } as object,
  }) as unknown as Http2Server;
  // An idle HTTP/2 session is closed as an idle HTTP/1.1 connection is.
  http2.setTimeout(opts.keepAliveTimeoutMs, undefined as unknown as () => void);

  // Connections still in their handshake, by remote address and port (the raw socket and the TLS socket share it).
  const pending = new Set<string>();
  const peer = (s: { remoteAddress?: string; remotePort?: number }) => `${s.remoteAddress}|${s.remotePort}`;
  const sessions = new Set<Http2Session>();
  http2.on('session', (s: Http2Session) => {
    sessions.add(s);
    s.once('close', () => sessions.delete(s));
  });
  const server = createTlsServer(
    {
      ALPNProtocols: ['h2', 'http/1.1'],
      handshakeTimeout: opts.handshakeTimeoutMs,
      SNICallback(servername, cb) {
        const entry = table.match(servername);
        const ctx = entry && contexts.get(entry);
        if (!ctx) {
          // A context without a certificate: OpenSSL ends the handshake with a fatal handshake_failure alert, as
          // for a client without SNI. (An error here would close the TCP connection without any alert.)
          logger.warn('tls: no certificate for the SNI; handshake refused', { sni: servername });
          cb(null, NO_CERTIFICATE);
          return;
        }
        cb(null, ctx);
      },
    },
    (sock: TLSSocket) => {
      pending.delete(peer(sock));
      const refused = protocolRefused(table, sock);
      if (refused) {
        logger.warn('tls: protocol version not in the ssl\'s ssl_protocols; connection closed', refused);
        sock.destroy();
        return;
      }
      (sock.alpnProtocol === 'h2' ? http2 : http1).emit('connection', sock);
    },
  );
  // node:http closes a connection after its answer when its server is not listening (Deno's port of _http_server
  // destroys it: "the server is closing"; Node checks it on close only): http1 never listens itself, so it reports
  // the TLS server's state. Without this Deno served one request per HTTP/1.1 connection.
  Object.defineProperty(http1, 'listening', { configurable: true, get: () => server.listening });
  server.on('connection', (raw: Socket) => {
    if (pending.size >= MAX_PENDING_HANDSHAKES) {
      raw.destroy();
      return;
    }
    const key = peer(raw);
    pending.add(key);
    raw.once('close', () => pending.delete(key));
    opts.onConnection?.(raw);
  });
  // With a listener here Node leaves the socket open (a handshake timeout included): close it.
  server.on('tlsClientError', (err: Error, sock: TLSSocket) => {
    pending.delete(peer(sock));
    sock.destroy();
    logger.info('tls: handshake failed', { error: err.message, remote: sock.remoteAddress });
  });

  return new Promise((resolve, reject) => {
    server.once('error', reject);
    const listenOn = opts.reusePort ? { port: opts.port, host: opts.host, reusePort: true } : { port: opts.port, host: opts.host };
    server.listen(listenOn, () => {
      server.off('error', reject);
      const addr = server.address();
      const port = typeof addr === 'object' && addr ? addr.port : opts.port;
      console.log(`fngate proxy (TLS) listening on https://${opts.host.includes(':') ? `[${opts.host}]` : opts.host}:${port}`);
      resolve({
        http1,
        http2,
        port,
        close: () =>
          new Promise<void>((r) => {
            server.close(() => r());
            http1.closeIdleConnections();
            http2.close();
          }),
        closeIdle: () => http1.closeIdleConnections(),
        closeAll: () => {
          http1.closeAllConnections();
          websockets.closeAll();
          for (const s of sessions) s.destroy();
        },
      });
    });
  });

}

/** Reads the Admin API's certificate and key (ADMIN_TLS_CERT/KEY) once, at start. */
export function adminTlsOptions(certFile: string, keyFile: string): { cert: string; key: string } {
  return { cert: readFileSync(certFile, 'utf8'), key: readFileSync(keyFile, 'utf8') };
}

/**
 * The proxy's TLS port on Bun (PROXY_HTTPS_PORT): `Bun.serve` with one `tls` entry per SNI name of the `ssls`
 * (`serverName`, wildcards `*.example.com` included, matched by Bun's own SNI tree).
 *
 * Bun's limits, documented in the README's runtime table:
 * - `server.reload()` does not change `tls`, so a change of `ssls` starts a new server on the same port
 *   (`reusePort`) and stops the old one gracefully: requests in flight finish, new connections get the new
 *   certificates; an idle kept-alive connection of the old server is closed (the client reconnects).
 * - A name with no certificate, or no SNI, gets Bun's default context (the first entry) instead of a refused
 *   handshake; with no `ssls` at all no TLS server listens.
 * - HTTP/1.1 only: Bun.serve offers no HTTP/2 (no ALPN h2).
 */
import type { Logger } from '../core/context.ts';
import type { SniTable } from '../core/ssl.ts';

export interface BunTlsEntry {
  cert: string[];
  key: string[];
  serverName: string;
}

/** One entry per SNI name, exact names before wildcards (the first is Bun's default for unknown names). */
export function bunTlsEntries(table: SniTable): BunTlsEntry[] {
  const out: BunTlsEntry[] = [];
  for (const entry of table.entries) {
    for (const name of entry.names) {
      out.push({ cert: entry.pairs.map((p) => p.cert), key: entry.pairs.map((p) => p.key), serverName: name });
    }
  }
  return out.sort((a, b) => Number(a.serverName.startsWith('*')) - Number(b.serverName.startsWith('*')));
}

interface Stoppable {
  readonly port: number | undefined;
  stop(force?: boolean): Promise<void> | void;
}

/**
 * Keeps a TLS server for the current table: `start(entries, port)` starts one (with `reusePort`); a change starts
 * the next on the same port before the previous one stops.
 */
export function bunTlsPort<S extends Stoppable>(opts: {
  port: number;
  start: (entries: BunTlsEntry[], port: number) => S;
  table: () => SniTable;
  onChange: (fn: (table: SniTable) => void) => void;
  logger: Logger;
}): { current(): S | undefined; stop(force?: boolean): Promise<void> } {
  let port = opts.port;
  let server: S | undefined;
  const open = (table: SniTable) => {
    const entries = bunTlsEntries(table);
    if (entries.length === 0) return undefined;
    const s = opts.start(entries, port);
    port = s.port ?? port;
    return s;
  };
  server = open(opts.table());
  opts.onChange((table) => {
    const old = server;
    try {
      server = open(table);
    } catch (err) {
      opts.logger.error(`tls: the changed ssls cannot be served; keeping the previous certificates (${(err as Error).message})`);
      return;
    }
    void old?.stop();
    opts.logger.info('tls: certificates changed', { ssls: table.entries.length });
  });
  return {
    current: () => server,
    async stop(force) {
      await server?.stop(force);
    },
  };
}

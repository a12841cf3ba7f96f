/**
 * CORS on the metrics export server, for the dashboard only (fngate addition; APISIX's export server sends none).
 * The dashboard at /ui/ on the Admin API's port reads `/apisix/prometheus/metrics` from the browser, which is
 * another origin (port 9091). The export server lets exactly the Admin API's own origins read it: any other page
 * the operator's browser happens to show gets no CORS header, so it cannot read the metrics.
 */

/** Where the Admin API is served, as the runtime entry knows it. */
export interface AdminOrigin {
  /** ADMIN_HOST: an address, a name, or a wildcard (`0.0.0.0`, `::`). */
  host: string;
  /** ADMIN_PORT. */
  port: number;
  /** The Admin API speaks HTTPS (ADMIN_TLS_CERT/KEY). */
  tls: boolean;
  /**
   * Names and addresses of this machine (host name, interface addresses), for a wildcard ADMIN_HOST: the Admin API
   * is then served on each of them. Empty where the runtime cannot tell (Deno without `--allow-sys`).
   */
  localNames?: readonly string[];
}

const WILDCARDS = new Set(['', '0.0.0.0', '::', '[::]', '*']);
const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '::1'];

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/** A host as a browser writes it in `Origin`: lower case, IPv6 in brackets, no zone. */
function originHost(host: string): string {
  const h = host.toLowerCase().replace(/^\[|\]$/g, '');
  return h.includes(':') ? `[${h.replace(/%.*$/, '')}]` : h;
}

/**
 * The origins the dashboard is served from: `scheme://host[:port]` for ADMIN_HOST (plus `localhost` when it is a
 * loopback address, which the browser may have used instead), or, for a wildcard ADMIN_HOST, for the loopback names
 * and every name of this machine. The port is left out when it is the scheme's default, as browsers do.
 */
export function dashboardOrigins(admin: AdminOrigin): Set<string> {
  const scheme = admin.tls ? 'https' : 'http';
  const port = admin.port === (admin.tls ? 443 : 80) ? '' : `:${admin.port}`;
  const host = admin.host.trim().toLowerCase();
  const hosts = WILDCARDS.has(host)
    ? [...LOOPBACK_NAMES, ...(admin.localNames ?? [])]
    : isLoopback(host.replace(/^\[|\]$/g, ''))
      ? [host, 'localhost']
      : [host];
  const out = new Set<string>();
  for (const h of hosts) if (h !== '') out.add(`${scheme}://${originHost(h)}${port}`);
  return out;
}

/**
 * The CORS headers for one answer of the export server: `Access-Control-Allow-Origin` echoing the request's
 * `Origin` when it is one of `allowed`, else none; always `Vary: Origin` (the answer depends on it, for caches).
 */
export function exportCorsHeaders(origin: string | null, allowed: ReadonlySet<string>): Record<string, string> {
  if (origin !== null && allowed.has(origin.toLowerCase())) return { 'access-control-allow-origin': origin, vary: 'Origin' };
  return { vary: 'Origin' };
}

/**
 * Hop-by-hop and connection-specific headers (RFC 9110 §7.6.1) never cross the gateway, in either
 * direction; neither does any header the message's own `Connection` header names.
 */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/** Request headers the gateway sets itself; the client's values are dropped so they cannot be spoofed. */
const GATEWAY_SET = new Set(['host', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port', 'forwarded', 'x-real-ip']);

/** The header names a `Connection` header value lists (lower case, blanks dropped). */
export function connectionTokens(value: string): string[] {
  const out: string[] = [];
  for (const token of value.split(',')) {
    const t = token.trim().toLowerCase();
    if (t) out.push(t);
  }
  return out;
}

function connectionListed(headers: Headers): Set<string> | undefined {
  const conn = headers.get('connection');
  return conn ? new Set(connectionTokens(conn)) : undefined;
}

export interface ForwardedInfo {
  clientIp: string;
  scheme: string;
  /** The Host header the client sent, port included. */
  host: string | null;
}

/** Headers to send upstream: the client's, less hop-by-hop and gateway-set ones, plus `X-Forwarded-*`. */
export function requestHeadersForUpstream(incoming: Headers, fwd: ForwardedInfo): Headers {
  const listed = connectionListed(incoming);
  const out = new Headers();
  incoming.forEach((value, name) => {
    if (HOP_BY_HOP.has(name) || GATEWAY_SET.has(name) || listed?.has(name)) return;
    out.append(name, value);
  });
  if (fwd.clientIp) out.set('x-forwarded-for', fwd.clientIp);
  out.set('x-forwarded-proto', fwd.scheme);
  if (fwd.host) out.set('x-forwarded-host', fwd.host);
  return out;
}

/** Is `name` (lower case) a hop-by-hop header, one that never crosses the gateway? */
export function isHopByHop(name: string): boolean {
  return HOP_BY_HOP.has(name);
}

/**
 * Marks a Response whose headers its forwarder already cleaned by the rules of {@link cleanResponseHeaders}
 * (the Node forwarder filters the raw header list as it builds the response, so `forward()` does not read
 * the headers back; reading `res.headers` would make @hono/node-server's Response build a `Headers`).
 */
export const HEADERS_CLEANED: unique symbol = Symbol.for('fngate.headersCleaned');

/** Marks `res` as cleaned by its forwarder (see {@link HEADERS_CLEANED}); returns it. */
export function markCleaned(res: Response): Response {
  (res as { [HEADERS_CLEANED]?: boolean })[HEADERS_CLEANED] = true;
  return res;
}

/**
 * The upstream's response headers as name/value pairs, in one pass, without what must not reach the client (the
 * rules of {@link cleanResponseHeaders}) nor the names in `drop`; repeated headers (Set-Cookie) stay separate.
 * For a forwarder that builds its own Response anyway: cheaper than copying a `Headers` and then deleting from it
 * (Deno: ~1.4 vs ~6 µs per answer).
 */
export function cleanedResponsePairs(upstream: Headers, drop?: ReadonlySet<string>): [string, string][] {
  const out: [string, string][] = [];
  let connection: string | undefined;
  upstream.forEach((value, name) => {
    if (name === 'connection') connection = value;
    else if (!HOP_BY_HOP.has(name) && !drop?.has(name)) out.push([name, value]);
  });
  if (connection === undefined) return out;
  // Usually `keep-alive` or `close`: names that were dropped anyway.
  const listed = connectionTokens(connection).filter((t) => !HOP_BY_HOP.has(t));
  return listed.length === 0 ? out : out.filter(([name]) => !listed.includes(name));
}

/**
 * Remove what must not reach the client from the upstream's response headers, in place (the forwarder
 * contract says its Response headers are mutable). Repeated Set-Cookie headers are left as they are.
 */
export function cleanResponseHeaders(headers: Headers): void {
  const listed = connectionListed(headers);
  if (listed) for (const name of listed) headers.delete(name);
  for (const name of HOP_BY_HOP) if (headers.has(name)) headers.delete(name);
}

/** Characters that may stand in a URL path without encoding (RFC 3986 pchar and `/`). */
const NOT_PATH_SAFE = /[^A-Za-z0-9\-._~!$&'()*+,;=:@/]/g;

/**
 * Re-encode a decoded path for the wire. Used on paths the router normalised, so `..` segments cannot
 * occur; `%` itself is encoded, so a decoded `%2e%2e` cannot turn back into a traversal.
 */
export function encodePath(path: string): string {
  return path.replace(NOT_PATH_SAFE, (c) => encodeURIComponent(c));
}

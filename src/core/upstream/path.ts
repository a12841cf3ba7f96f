/**
 * Characters that may stand in a URL path without encoding (RFC 3986 pchar and `/`). With `u`, a character outside the
 * BMP (an emoji) is one match, encoded as its 4 UTF-8 bytes; without it each UTF-16 half was passed to
 * `encodeURIComponent` alone, which throws (`URI malformed`: a 500 for `/hello/%F0%9F%98%80`).
 */
const NOT_PATH_SAFE = /[^A-Za-z0-9\-._~!$&'()*+,;=:@/]/gu;

/**
 * Re-encode a decoded path for the wire. Used on paths the router normalised, so `..` segments cannot
 * occur; `%` itself is encoded, so a decoded `%2e%2e` cannot turn back into a traversal.
 */
export function encodePath(path: string): string {
  return path.replace(NOT_PATH_SAFE, (c) => encodeURIComponent(c));
}

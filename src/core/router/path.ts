/**
 * Request path normalisation, the equivalent of nginx's `$uri` that APISIX routes on:
 * percent-decoded once (`%2F` becomes `/`, `%252F` becomes `%2F`), `//` runs merged into one `/`,
 * `.` and `..` segments resolved (also when they came from `%2e`), query and fragment dropped.
 *
 * Deliberate differences from nginx:
 * - A `..` that would climb above `/` is clamped at `/` (`/a/../../b` → `/b`); nginx answers 400 there.
 * - Decoded bytes must form valid UTF-8 (the result is a JS string); otherwise the input is rejected.
 * - A backslash (`%5C`) that makes a `..` segment if `\` is read as a separator, as Windows servers, some
 *   frameworks and URL parsers do (`/hello/..%5Csecret`, `/a%5C..%5Cb`, `/x/..%5C`), is rejected: forwarded,
 *   such a server would resolve it outside the route's path (nginx on Linux passes it on). A backslash
 *   elsewhere (`/a%5Cb`, `/.%5Cx`, `/...%5Cx`) is ordinary text.
 * - Likewise a `..` segment with path parameters (`/fn/..;/admin`, `/fn/..%3b/admin`, `/..;jsessionid=x/`):
 *   servlet containers (Tomcat, Spring) drop the `;…` of each segment and resolve the `..`. A `;` elsewhere
 *   (`/a;b`, `/.;/x`) is ordinary text.
 */

const SLASH = 47;

/**
 * Returns the normalised path, or `null` when the input cannot be decoded (bad percent-encoding such as
 * `%zz` or a lone `%`, invalid UTF-8, a NUL byte, a path not starting with `/`) or holds a backslash or a
 * `;` that makes a `..` segment (see above): answer 400 then.
 * An empty input is `/`. When nothing needs changing the input string itself is returned (no allocation).
 */
export function normalizePath(rawPathname: string): string | null {
  if (rawPathname.length === 0) return '/';
  if (rawPathname.charCodeAt(0) !== SLASH) return null;
  // One RegExp test (no captures, so no allocation) was measurably faster than a charCodeAt loop here.
  return NEEDS_WORK.test(rawPathname) ? slowPath(rawPathname) : rawPathname;
}

/** `%`, `?`, `#`, NUL, `\`, `//`, or a `.` / `..` segment. */
const NEEDS_WORK = /[%?#\0\\]|\/(?:\/|\.\.?(?:[/;]|$))/;
/** `//`, or a `.` / `..` segment. */
const SLASH_OR_DOT_SEGMENT = /\/(?:\/|\.\.?(?:\/|$))/;
/**
 * A `..` segment when `\` separates segments too, or when `;` starts a segment's parameters (tested after
 * `/`-segments are resolved, so a plain `/../` is gone by then).
 */
const HIDDEN_DOT_DOT = /[\\/]\.\.(?:[\\/;]|$)/;

function slowPath(raw: string): string | null {
  let path = raw;
  const q = path.indexOf('?');
  if (q >= 0) path = path.slice(0, q);
  const h = path.indexOf('#');
  if (h >= 0) path = path.slice(0, h);
  if (path.indexOf('%') >= 0) {
    try {
      // Decodes each escape once and rejects `%zz`, a truncated `%`/`%a`, and invalid UTF-8.
      path = decodeURIComponent(path);
    } catch {
      return null;
    }
  }
  if (path.indexOf('\0') >= 0) return null;
  if (SLASH_OR_DOT_SEGMENT.test(path)) path = resolveSegments(path);
  // Resolved, the path has no `..` between slashes left: a match here has a backslash or a `;` beside it.
  if ((path.indexOf('\\') >= 0 || path.indexOf(';') >= 0) && HIDDEN_DOT_DOT.test(path)) return null;
  return path;
}

/** Merges `//` and resolves dot segments of a decoded path starting with `/`. */
function resolveSegments(path: string): string {
  const segments = path.split('/');
  // segments[0] is '' (the path starts with '/').
  const out: string[] = [];
  let trailingSlash = false;
  const last = segments.length - 1;
  for (let i = 1; i <= last; i++) {
    const seg = segments[i]!;
    if (seg === '' || seg === '.') {
      // `//` merged, `/./` dropped; at the end they leave a trailing slash.
      if (i === last) trailingSlash = true;
    } else if (seg === '..') {
      out.pop(); // never above the root
      if (i === last) trailingSlash = true;
    } else {
      out.push(seg);
      trailingSlash = false;
    }
  }
  if (out.length === 0) return '/';
  return trailingSlash ? '/' + out.join('/') + '/' : '/' + out.join('/');
}

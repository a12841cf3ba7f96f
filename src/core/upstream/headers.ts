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

/**
 * Request headers on their way upstream: `[name, value]` pairs, names in lower case, in the order they are sent. A
 * WHATWG `HeadersInit` as it stands (the fetch forwarders hand it to `fetch`), flattened for undici in one pass on
 * Node. A forwarder owns the list it is given and may add or remove entries; the pairs themselves may be shared
 * (a route's own headers) and are never changed in place.
 *
 * Why not a `Headers`: building one, then iterating it to send (every pass sorts it) costs ~0.9 µs per proxied
 * request with one client header and ~2.1 µs with five on Node 20, against 0.2 / 0.9 µs for this list; about
 * 2 µs of a 34 µs proxied request under load (bench/README.md, "Node hot path").
 */
export type HeaderList = [string, string][];

export interface ForwardedInfo {
  clientIp: string;
  scheme: string;
  /** The Host header the client sent, port included. */
  host: string | null;
}

/**
 * Headers to send upstream: the client's, less hop-by-hop and gateway-set ones, with the plugins' `overlay` applied
 * (a name it holds replaces the client's header, or removes it when null), plus `X-Forwarded-*`, plus `set`
 * (the target's own, e.g. the plugin's Authorization), which replace any header of the same name.
 *
 * `raw`, when given, is the client's header list as it came (`[name, value, name, value, …]`, Node's
 * `rawHeaders`): its lines are sent one by one, names in lower case, where iterating `incoming` joins a repeated
 * name into one `a, b` line. Both mean the same (RFC 9110 §5.3); nginx too passes the lines as they came.
 */
export function requestHeadersForUpstream(
  incoming: Headers,
  fwd: ForwardedInfo,
  set?: HeaderList,
  raw?: readonly string[],
  overlay?: ReadonlyMap<string, readonly string[] | null>,
): HeaderList {
  // From the raw lines where given: on Node, `incoming.get()` validates the name with a RegExp and looks it up twice.
  const conn = raw ? rawConnection(raw) : incoming.get('connection');
  const listed = conn ? connectionTokens(conn) : undefined;
  const out: HeaderList = [];
  const add = (value: string, name: string) => {
    if (HOP_BY_HOP.has(name) || GATEWAY_SET.has(name) || listed?.includes(name) || overlay?.has(name) || (set && named(set, name))) return;
    out.push([name, value]);
  };
  if (raw) for (let i = 0; i + 1 < raw.length; i += 2) add(raw[i + 1]!, raw[i]!.toLowerCase());
  else incoming.forEach(add);
  // The plugins' edits (RequestContext.headerOverlay): set or added values replace the client's, null removes.
  if (overlay) {
    for (const [name, values] of overlay) {
      if (values === null || HOP_BY_HOP.has(name) || (set && named(set, name))) continue;
      for (const value of values) out.push([name, value]);
    }
  }
  const own = (name: string) => (set !== undefined && named(set, name)) || overlay?.has(name) === true;
  if (fwd.clientIp && !own('x-forwarded-for')) out.push(['x-forwarded-for', fwd.clientIp]);
  if (!own('x-forwarded-proto')) out.push(['x-forwarded-proto', fwd.scheme]);
  if (fwd.host && !own('x-forwarded-host')) out.push(['x-forwarded-host', fwd.host]);
  if (set) for (const pair of set) out.push(pair);
  return out;
}

/** Every `Connection` line of a raw header list, joined with `, ` as `Headers#get` joins them; null without one. */
function rawConnection(raw: readonly string[]): string | null {
  let value: string | null = null;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 10 && name.toLowerCase() === 'connection') value = value === null ? raw[i + 1]! : `${value}, ${raw[i + 1]!}`;
  }
  return value;
}

const NO_NAMES: readonly string[] = [];

/**
 * The names an answer's `Connection` value lists besides hop-by-hop ones (which go anyway): what the three answer
 * clean-ups (in place, as pairs, the Node forwarder's record) drop. The usual `keep-alive` or `close` lists none and is
 * not split into tokens per answer (splitting `keep-alive` was 0.3 % of the Node gateway's samples under `wrk`).
 */
export function connectionListedNames(value: string): readonly string[] {
  if (value === 'keep-alive' || value === 'close') return NO_NAMES;
  return connectionTokens(value).filter((t) => !HOP_BY_HOP.has(t));
}

/**
 * A Content-Length of 1 to 9 digits as a number, else +Infinity: what `/^\d{1,9}$/` then `Number()` did, without a
 * regular expression per answer (the forwarders' "small enough to read whole" check).
 */
export function smallLength(value: string): number {
  const n = value.length;
  if (n === 0 || n > 9) return Number.POSITIVE_INFINITY;
  let out = 0;
  for (let i = 0; i < n; i++) {
    const d = value.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return Number.POSITIVE_INFINITY;
    out = out * 10 + d;
  }
  return out;
}

function named(list: HeaderList, name: string): boolean {
  for (const pair of list) if (pair[0] === name) return true;
  return false;
}

/** `content-length` alone, for {@link removeHeaders} and `Headers` clean-ups. */
export const CONTENT_LENGTH: ReadonlySet<string> = new Set(['content-length']);

/** Removes, in place, every entry of `list` whose name is in `names`. */
export function removeHeaders(list: HeaderList, names: ReadonlySet<string>): void {
  let kept = 0;
  for (let i = 0; i < list.length; i++) {
    const pair = list[i]!;
    if (!names.has(pair[0])) list[kept++] = pair;
  }
  list.length = kept;
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

/**
 * The body length a forwarder declared for a Response it made (its Content-Length), so that the response phases
 * can know it without reading `res.headers` (see {@link HEADERS_CLEANED} for why that is costly on Node).
 */
export const BODY_LENGTH: unique symbol = Symbol.for('fngate.bodyLength');

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
export function cleanedResponsePairs(upstream: Headers, drop?: ReadonlySet<string>): HeaderList {
  const out: HeaderList = [];
  let connection: string | undefined;
  upstream.forEach((value, name) => {
    if (name === 'connection') connection = value;
    else if (!HOP_BY_HOP.has(name) && !drop?.has(name)) out.push([name, value]);
  });
  if (connection === undefined) return out;
  const listed = connectionListedNames(connection);
  return listed.length === 0 ? out : out.filter(([name]) => !listed.includes(name));
}

/**
 * Remove what must not reach the client from the upstream's response headers, in place (the forwarder
 * contract says its Response headers are mutable). Repeated Set-Cookie headers are left as they are.
 */
export function cleanResponseHeaders(headers: Headers): void {
  const conn = headers.get('connection');
  if (conn !== null) for (const name of connectionListedNames(conn)) headers.delete(name);
  for (const name of HOP_BY_HOP) if (headers.has(name)) headers.delete(name);
}

/**
 * Marks a Response (Node) whose headers are still the plain record it was made with (lower-case names, cleaned): the
 * runtime's server writes that record out as it is, until someone reads `res.headers`, which turns it into a
 * `Headers` (validated, sorted, and copied back into an object to be written: ~1 µs a header on Node 20). The
 * response phases edit the record through {@link RecordHeaders} instead.
 */
export const PLAIN_HEADERS: unique symbol = Symbol.for('fngate.plainHeaders');

/**
 * `headers` as a plain record in one call, where the runtime's `Headers` has one: Bun's non-standard
 * `Headers#toJSON()` (lower-case names, repeated values joined by ", ", `set-cookie` a list of its values). Iterating
 * a native `Headers` entry by entry crosses into JS once per entry: on Bun 1.4.5 ~1.0 µs for 8 headers against ~0.7
 * for `toJSON()`. `undefined` where there is none (the other runtimes): iterate.
 */
export function headersRecord(headers: Headers): Record<string, string | string[]> | undefined {
  const toJSON = (headers as { toJSON?: () => unknown }).toJSON;
  return typeof toJSON === 'function' ? (toJSON.call(headers) as Record<string, string | string[]>) : undefined;
}

/** The plain header record of a Response marked with {@link PLAIN_HEADERS}, if any. */
export function plainHeadersOf(res: Response): Record<string, string | string[]> | undefined {
  return (res as { [PLAIN_HEADERS]?: Record<string, string | string[]> })[PLAIN_HEADERS];
}

const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const BAD_VALUE = /[\r\n\0]/;

/**
 * Names already found valid, with their lower-case form: plugins set the same few names on every answer
 * (X-RateLimit-*, CORS, request-id). Bounded, so random names cannot grow it.
 */
const validNames = new Map<string, string>();
const MAX_VALID_NAMES = 512;

/** The lower-case name, after checking the name and the (trimmed) value as `Headers` does. */
function checked(name: string, value: string): string {
  let lower = validNames.get(name);
  if (lower === undefined) {
    if (!HEADER_NAME.test(name)) throw new TypeError(`invalid header name: ${JSON.stringify(name)}`);
    lower = name.toLowerCase();
    if (validNames.size < MAX_VALID_NAMES) validNames.set(name, lower);
  }
  if (BAD_VALUE.test(value)) throw new TypeError(`invalid value for header ${name}`);
  return lower;
}

/**
 * The `Headers` methods the response phases use (get, has, set, append, delete, forEach), over a plain record that
 * the runtime writes as it is: edits cost a property write, not a `Headers`. Names and values are checked as
 * `Headers` checks them. A repeated `set-cookie` becomes an array (written as separate lines).
 */
export class RecordHeaders {
  constructor(private readonly record: Record<string, string | string[]>) {}

  get(name: string): string | null {
    const lower = name.toLowerCase();
    if (!Object.hasOwn(this.record, lower)) return null;
    const v = this.record[lower]!;
    return typeof v === 'string' ? v : v.join(', ');
  }

  has(name: string): boolean {
    return Object.hasOwn(this.record, name.toLowerCase());
  }

  set(name: string, value: string): void {
    const v = String(value).trim();
    const lower = checked(name, v);
    if (lower === '__proto__') throw new TypeError('invalid header name: "__proto__"');
    this.record[lower] = v;
  }

  append(name: string, value: string): void {
    const v = String(value).trim();
    const lower = checked(name, v);
    if (!Object.hasOwn(this.record, lower)) {
      this.set(name, v);
      return;
    }
    const old = this.record[lower]!;
    if (lower === 'set-cookie') this.record[lower] = typeof old === 'string' ? [old, v] : [...old, v];
    else this.record[lower] = `${typeof old === 'string' ? old : old.join(', ')}, ${v}`;
  }

  delete(name: string): void {
    delete this.record[name.toLowerCase()];
  }

  forEach(fn: (value: string, name: string) => void): void {
    for (const name of Object.keys(this.record).sort()) fn(this.get(name)!, name);
  }
}

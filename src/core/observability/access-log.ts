/**
 * The access log's line: APISIX's log entry ({@link fullLogEntry}) written straight to JSON text. Building the entry
 * object and running `JSON.stringify` over it cost 3.4-3.8 µs per request on Node 20, most of it turning the latencies
 * and start time into text; this writes the same JSON from the request context with one string per field, numbers
 * through number-text.ts, and knows each header name's JSON key and whether it holds a credential from a small cache
 * instead of testing and lower-casing every name of every request: 1.8-2.2 µs (in-process; the gateway figures,
 * `bench/observability.ts`, are in README's Performance section).
 *
 * `JSON.parse(accessLogLine(ctx, env))` deep-equals `fullLogEntry(ctx, env)` (test/unit/access-log.test.ts, a
 * fast-check property over header lists, queries and values with quotes, control characters and lone surrogates).
 */
import type { RequestContext } from '../context.ts';
import { scaledText } from '../number-text.ts';
import { headersRecord, plainHeadersOf } from '../upstream/headers.ts';
import { FNGATE_VERSION } from '../version.ts';
import { isSecretName, type LogEnv, queryObject, REDACTED, safeRequestUri, serverPort } from './log-entry.ts';
import { requestHeadersRecord, requestLength } from './prometheus.ts';

/** Characters JSON must escape, and lone-surrogate halves (JSON.stringify writes them as \u escapes). */
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;

/** `s` as a JSON string. */
export function jsonString(s: string): string {
  return NEEDS_ESCAPE.test(s) ? JSON.stringify(s) : `"${s}"`;
}

const JSON_REDACTED = JSON.stringify(REDACTED);

/** What the log needs of a header name: its lower-case form, its JSON key (`"name":`), whether it is a secret. */
interface NameInfo {
  lower: string;
  key: string;
  secret: boolean;
}

/**
 * Header names seen, as sent (a client's `User-Agent` and another's `user-agent` are two entries). Bounded: names
 * past the bound are worked out per request, so a client sending random names cannot grow the gateway's memory.
 */
const names = new Map<string, NameInfo>();
const MAX_NAMES = 1024;

function nameInfo(name: string): NameInfo {
  let info = names.get(name);
  if (info === undefined) {
    const lower = name.toLowerCase();
    info = { lower, key: `${jsonString(lower)}:`, secret: isSecretName(lower) };
    if (names.size < MAX_NAMES) names.set(name, info);
  }
  return info;
}

/** A raw header list (name, value, name, value…) as the entry's `headers` object (repeated names joined by ", "). */
function rawHeadersJson(raw: readonly string[]): string {
  let out = '{';
  for (let i = 0; i < raw.length; i += 2) {
    const info = nameInfo(raw[i]!);
    let repeated = false;
    for (let j = 0; j < i; j += 2) {
      if (raw[j]!.length === raw[i]!.length && nameInfo(raw[j]!).lower === info.lower) {
        repeated = true;
        break;
      }
    }
    if (repeated) continue;
    let value: string;
    if (info.secret) value = JSON_REDACTED;
    else {
      let v = raw[i + 1]!;
      for (let j = i + 2; j < raw.length; j += 2) {
        if (raw[j]!.length === raw[i]!.length && nameInfo(raw[j]!).lower === info.lower) v = `${v}, ${raw[j + 1]!}`;
      }
      value = jsonString(v);
    }
    out += out.length === 1 ? info.key + value : `,${info.key}${value}`;
  }
  return `${out}}`;
}

/** `set-cookie` values, each redacted: one as a string, several as a list (as the entry holds them). */
function cookiesJson(count: number): string {
  if (count === 1) return JSON_REDACTED;
  return `[${new Array<string>(count).fill(JSON_REDACTED).join(',')}]`;
}

/**
 * A header record with lower-case names: a Node forwarder's plain response record (repeated ones as arrays), or
 * Bun's `Headers#toJSON` (the request's and the answer's headers there). When every value is one string and no
 * name is a credential or `set-cookie` (nearly every request), the record is the entry's object as it is, and the
 * runtime's own `JSON.stringify` writes it: on Bun 0.2 µs against 0.5 µs for the loop below, which builds a string
 * per field (a rope to flatten later) and runs the escape test on every value.
 */
function recordHeadersJson(record: Record<string, string | string[]>): string {
  for (const k in record) {
    if (typeof record[k] !== 'string' || k === 'set-cookie' || nameInfo(k).secret) return recordHeadersLoop(record);
  }
  return JSON.stringify(record);
}

function recordHeadersLoop(record: Record<string, string | string[]>): string {
  let out = '{';
  for (const k in record) {
    const v = record[k]!;
    const info = nameInfo(k);
    let value: string;
    if (k === 'set-cookie') value = cookiesJson(Array.isArray(v) ? v.length : 1);
    else if (info.secret) value = JSON_REDACTED;
    else value = jsonString(Array.isArray(v) ? v.join(', ') : v);
    out += out.length === 1 ? info.key + value : `,${info.key}${value}`;
  }
  return `${out}}`;
}

/** A `Headers` (its names come lower-case, repeated values joined; `set-cookie` one entry per cookie). */
function headersJson(headers: Headers): string {
  let out = '{';
  let cookies = 0;
  for (const [k, v] of headers) {
    if (k === 'set-cookie') {
      cookies++;
      continue;
    }
    const info = nameInfo(k);
    const value = info.secret ? JSON_REDACTED : jsonString(v);
    out += out.length === 1 ? info.key + value : `,${info.key}${value}`;
  }
  if (cookies) out += `${out.length === 1 ? '' : ','}"set-cookie":${cookiesJson(cookies)}`;
  return `${out}}`;
}

function responseHeadersJson(res: Response): string {
  const record = plainHeadersOf(res) ?? headersRecord(res.headers);
  return record !== undefined ? recordHeadersJson(record) : headersJson(res.headers);
}

/** A value of the entry that is not known to be a string (ids from a config may be numbers). */
function anyJson(v: unknown): string {
  return typeof v === 'string' ? jsonString(v) : JSON.stringify(v);
}

/** A number as JSON writes it (non-finite ones as null). */
function num(n: number): string {
  return Number.isFinite(n) ? String(n) : 'null';
}

/** Milliseconds as the entry rounds them (3 decimals), the same text as `String(round3(ms))`. */
export function millis3(ms: number): string {
  return Number.isFinite(ms) ? scaledText(Math.round(ms * 1000), 3) : 'null';
}

/** The text of the last start_time written: requests finishing in the same millisecond share it. */
let lastStart = -1;
let lastStartText = '';

function startTimeText(t: number): string {
  if (t !== lastStart) {
    lastStart = t;
    lastStartText = num(t);
  }
  return lastStartText;
}

/**
 * A field whose text repeats from one request to the next (the method, the client's address, the upstream node,
 * the host name): its text is kept for the value last seen and worked out again when the value changes. One entry
 * per field, so nothing grows with the traffic.
 */
interface LastField {
  /** `,"name":` (what comes before the value) and what comes after it. */
  readonly key: string;
  readonly end: string;
  value: unknown;
  text: string;
}

const lastField = (key: string, end = ''): LastField => ({ key, end, value: undefined, text: '' });

/** `field.key`, `v` as JSON, `field.end`. */
function fieldText(field: LastField, v: unknown): string {
  if (v !== field.value || field.text === '') {
    field.value = v;
    field.text = field.key + anyJson(v) + field.end;
  }
  return field.text;
}

const METHOD = lastField(',"method":');
const CLIENT_IP = lastField(',"client_ip":');
const UPSTREAM = lastField(',"upstream":');
const CONSUMER = lastField(',"consumer":{"username":', '}');
/** `"server":{…}`: the host name (the runtime sets one at start) and the version. */
const SERVER = lastField(',"server":{"hostname":', `,"version":${jsonString(FNGATE_VERSION)}}`);

/** `,"service_id":…,"route_id":…` for the last route (or host, when none matched) seen. */
let lastServiceId: unknown;
let lastRouteId: unknown;
let lastIdsText: string | undefined;

function idsText(ctx: RequestContext): string {
  const serviceId = ctx.route ? ctx.serviceId : ctx.host;
  const routeId = ctx.route ? ctx.routeId : undefined;
  if (serviceId !== lastServiceId || routeId !== lastRouteId || lastIdsText === undefined) {
    lastServiceId = serviceId;
    lastRouteId = routeId;
    let text = '';
    if (serviceId !== undefined) text += `,"service_id":${anyJson(serviceId)}`;
    if (routeId !== undefined) text += `,"route_id":${anyJson(routeId)}`;
    lastIdsText = text;
  }
  return lastIdsText;
}

/** `scheme://host:port` of the last request seen, and whether it is JSON-safe as it is. */
let lastScheme = '';
let lastHost = '';
let lastPort = '';
let lastPrefix = '';
let lastPrefixPlain = false;

/** `request.url` as JSON, `uriJson` being `uri`'s. */
function urlJson(ctx: RequestContext, uri: string, uriJson: string): string {
  const port = serverPort(ctx);
  if (ctx.scheme !== lastScheme || ctx.host !== lastHost || port !== lastPort || lastPrefix === '') {
    lastScheme = ctx.scheme;
    lastHost = ctx.host;
    lastPort = port;
    lastPrefix = `${ctx.scheme}://${ctx.host}:${port}`;
    lastPrefixPlain = !NEEDS_ESCAPE.test(lastPrefix);
  }
  // Two JSON-safe halves join into a JSON-safe whole; otherwise the whole is escaped at once (a lone surrogate at
  // the end of one half and the start of the other make a pair, which JSON.stringify leaves as it is).
  return lastPrefixPlain && uriJson.length === uri.length + 2
    ? `"${lastPrefix}${uri}"`
    : jsonString(lastPrefix + uri);
}

/**
 * The access log's line for a finished request: {@link fullLogEntry} as one JSON line, newline included. The line is
 * one template of a few parts (each separate `+=` was one more string for the runtime to allocate and later flatten),
 * fields that repeat are kept as text ({@link LastField}, {@link idsText}, {@link urlJson}), and
 * header records are written by `JSON.stringify`. Timed around this call in the Bun gateway under `wrk` (stdout to
 * /dev/null, 2 × 50,000 requests each): 6.1-7.1 µs per line before, 5.2-5.3 after; in a loop it costs ~2 µs, the
 * rest being the cache misses and garbage of a loaded process, which is why the gateway builds its lines in batches
 * (access-log-queue.ts). `endedAt` is when the request ended (`performance.now()`); `epochOffset` (`Date.now() -
 * performance.now()`, read once per batch; by default the wall clock at `endedAt`) turns the request's start on the
 * monotonic clock into start_time, what `Date.now() - latency` gives at the request's end.
 */
export function accessLogLine(
  ctx: RequestContext,
  env: LogEnv,
  endedAt = performance.now(),
  epochOffset = Date.now() - endedAt,
): string {
  const latency = endedAt - ctx.startTime;
  const uri = safeRequestUri(ctx);
  const uriJson = jsonString(uri);
  // Where the runtime gives a request's headers as a record in one call (Bun), they are read once, for both fields.
  const record = requestHeadersRecord(ctx);
  const reqHeaders =
    ctx.rawHeaders !== undefined
      ? rawHeadersJson(ctx.rawHeaders)
      : record !== undefined
        ? recordHeadersJson(record)
        : headersJson(ctx.request.headers);
  const query = ctx.query ? JSON.stringify(queryObject(ctx.query)) : '{}';
  const addr = ctx.getVar('upstream_addr');
  const upstream = addr !== undefined ? fieldText(UPSTREAM, addr) : '';
  const consumer = ctx.consumer ? fieldText(CONSUMER, ctx.consumer.username) : '';
  const latencies =
    ctx.upstreamLatency !== undefined
      ? `,"upstream_latency":${millis3(ctx.upstreamLatency)},"apisix_latency":${millis3(Math.max(0, latency - ctx.upstreamLatency))}`
      : `,"apisix_latency":${millis3(latency)}`;
  return `{"request":{"url":${urlJson(ctx, uri, uriJson)},"uri":${uriJson}${fieldText(METHOD, ctx.method)},"headers":${reqHeaders},"querystring":${query},"size":${num(requestLength(ctx, record))}},"response":{"status":${num(ctx.status)},"headers":${ctx.response ? responseHeadersJson(ctx.response) : '{}'},"size":${num(ctx.bytesSent)}}${fieldText(SERVER, env.hostname)}${upstream}${idsText(ctx)}${consumer}${fieldText(CLIENT_IP, ctx.clientIp)},"start_time":${startTimeText(Math.round(epochOffset + ctx.startTime))},"latency":${millis3(latency)}${latencies}}\n`;
}

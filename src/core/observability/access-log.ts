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
import { isSecretName, type LogEnv, queryObject, REDACTED, requestUrlParts, startTime } from './log-entry.ts';
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

/** A Node forwarder's plain response header record (lower-case names; repeated ones as arrays). */
function recordHeadersJson(record: Record<string, string | string[]>): string {
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

/** The access log's line for a finished request: {@link fullLogEntry} as one JSON line, newline included. */
export function accessLogLine(ctx: RequestContext, env: LogEnv): string {
  const latency = performance.now() - ctx.startTime;
  const { url, uri } = requestUrlParts(ctx);
  // Where the runtime gives a request's headers as a record in one call (Bun), they are read once, for both fields.
  const record = requestHeadersRecord(ctx);
  const reqHeaders =
    ctx.rawHeaders !== undefined
      ? rawHeadersJson(ctx.rawHeaders)
      : record !== undefined
        ? recordHeadersJson(record)
        : headersJson(ctx.request.headers);
  const query = ctx.query ? JSON.stringify(queryObject(ctx.query)) : '{}';
  let line = `{"request":{"url":${jsonString(url)},"uri":${jsonString(uri)},"method":${jsonString(ctx.method)},"headers":${reqHeaders},"querystring":${query},"size":${num(requestLength(ctx, record))}},"response":{"status":${num(ctx.status)},"headers":${ctx.response ? responseHeadersJson(ctx.response) : '{}'},"size":${num(ctx.bytesSent)}},"server":{"hostname":${jsonString(env.hostname)},"version":${jsonString(FNGATE_VERSION)}}`;
  const addr = ctx.getVar('upstream_addr');
  if (addr !== undefined) line += `,"upstream":${anyJson(addr)}`;
  const serviceId = ctx.route ? ctx.serviceId : ctx.host;
  if (serviceId !== undefined) line += `,"service_id":${anyJson(serviceId)}`;
  if (ctx.route && ctx.routeId !== undefined) line += `,"route_id":${anyJson(ctx.routeId)}`;
  if (ctx.consumer) line += `,"consumer":{"username":${anyJson(ctx.consumer.username)}}`;
  line += `,"client_ip":${anyJson(ctx.clientIp)},"start_time":${startTimeText(startTime(latency))},"latency":${millis3(latency)}`;
  if (ctx.upstreamLatency !== undefined) {
    line += `,"upstream_latency":${millis3(ctx.upstreamLatency)},"apisix_latency":${millis3(Math.max(0, latency - ctx.upstreamLatency))}`;
  } else line += `,"apisix_latency":${millis3(latency)}`;
  return `${line}}\n`;
}

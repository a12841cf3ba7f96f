/**
 * APISIX's log entry (apisix/utils/log-util.lua `get_full_log`, apisix-wave2.md §9.1) and custom `log_format`s,
 * shared by the access log, http-logger and file-logger. Credentials never reach a log: Authorization, cookies,
 * API keys and tokens are replaced by {@link REDACTED} in headers and query arguments.
 */
import type { RequestContext } from '../context.ts';
import { plainHeadersOf } from '../upstream/headers.ts';
import { FNGATE_VERSION } from '../version.ts';
import { requestLength } from './prometheus.ts';

export const REDACTED = '[REDACTED]';

/**
 * Header and query-argument names whose values are credentials: Authorization (every auth plugin, the
 * openfunction token), cookies, key-auth's `apikey`/`X-API-KEY`, jwt-auth's `jwt`, tokens, secrets, passwords and
 * signatures (hmac-auth).
 */
const SECRET_NAME =
  /^(?:authorization|proxy-authorization|cookie|set-cookie|jwt|key|sign)$|api[-_]?key|token|secret|passw|credential|signature|session/i;

export function isSecretName(name: string): boolean {
  return SECRET_NAME.test(name);
}

/** Host name reported in `server.hostname` (set by the runtime entry). */
export interface LogEnv {
  hostname: string;
}

/** Header name → value (repeated ones joined by ", ", as `Headers` does), lower-case names, credentials redacted. */
function headerObject(headers: Headers): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of headers) {
    if (k === 'set-cookie') continue;
    out[k] = isSecretName(k) ? REDACTED : v;
  }
  const cookies = headers.getSetCookie?.() ?? [];
  if (cookies.length) out['set-cookie'] = cookies.length === 1 ? REDACTED : cookies.map(() => REDACTED);
  return out;
}

/**
 * The same from the runtime's raw request header list (Node's `incoming.rawHeaders`: name, value, name, value…):
 * reading `ctx.request.headers` there would make @hono/node-server build a `Headers` for this request alone.
 */
function rawHeaderObject(raw: readonly string[]): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = Object.create(null);
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i]!.toLowerCase();
    if (isSecretName(k)) {
      out[k] = REDACTED;
      continue;
    }
    const prev = out[k];
    out[k] = prev === undefined ? raw[i + 1]! : `${prev}, ${raw[i + 1]!}`;
  }
  return out;
}

/** The same from a Node forwarder's plain response header record ({@link plainHeadersOf}), without a `Headers`. */
function recordHeaderObject(record: Record<string, string | string[]>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = Object.create(null);
  for (const k in record) {
    const v = record[k]!;
    if (k === 'set-cookie') out[k] = Array.isArray(v) ? (v.length === 1 ? REDACTED : v.map(() => REDACTED)) : REDACTED;
    else out[k] = isSecretName(k) ? REDACTED : Array.isArray(v) ? v.join(', ') : v;
  }
  return out;
}

function responseHeaderObject(res: Response): Record<string, string | string[]> {
  const record = plainHeadersOf(res);
  return record !== undefined ? recordHeaderObject(record) : headerObject(res.headers);
}

export function queryObject(query: string): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  if (!query) return out;
  for (const [k, v] of new URLSearchParams(query)) {
    const value = isSecretName(k) ? REDACTED : v;
    const prev = out[k];
    if (prev === undefined) out[k] = value;
    else if (Array.isArray(prev)) prev.push(value);
    else out[k] = [prev, value];
  }
  return out;
}

/** `request_uri` with credential query arguments redacted. */
export function safeRequestUri(ctx: RequestContext): string {
  if (!ctx.query) return ctx.rawPath;
  const params = new URLSearchParams(ctx.query);
  let secret = false;
  for (const k of params.keys()) if (isSecretName(k)) secret = true;
  if (!secret) return `${ctx.rawPath}?${ctx.query}`;
  const out = new URLSearchParams();
  for (const [k, v] of params) out.append(k, isSecretName(k) ? REDACTED : v);
  return `${ctx.rawPath}?${out.toString()}`;
}

/** The port the client connected to, from the request URL (the scheme's default when the URL has none). */
export function serverPort(ctx: RequestContext): string {
  const url = ctx.url;
  const start = url.indexOf('//') + 2;
  let end = url.indexOf('/', start);
  if (end < 0) end = url.length;
  const colon = url.lastIndexOf(':', end - 1);
  // No port, or the last colon belongs to an IPv6 literal ("[::1]").
  if (colon < start || url.charCodeAt(end - 1) === 93) return ctx.scheme === 'https' ? '443' : '80';
  return url.slice(colon + 1, end);
}

export const round3 = (n: number): number => Math.round(n * 1000) / 1000;

/** The request's start in whole epoch milliseconds (APISIX: `ngx.req.start_time() * 1000`), from its latency so far. */
export const startTime = (latency: number): number => Math.round(Date.now() - latency);

export interface EntryOptions {
  /** The request body (include_req_body), already read. */
  reqBody?: string;
  /** The response body (include_resp_body), collected in body_filter. */
  respBody?: string;
  /** `route_id` when no route matched (http-logger: "no-matched"). */
  noRouteId?: string;
}

/** The entry's `request.url` and `request.uri` (credential query arguments redacted). */
export function requestUrlParts(ctx: RequestContext): { url: string; uri: string } {
  const uri = safeRequestUri(ctx);
  return { url: `${ctx.scheme}://${ctx.host}:${serverPort(ctx)}${uri}`, uri };
}

/** APISIX's default log entry for a finished request (the access log writes the same as text: access-log.ts). */
export function fullLogEntry(ctx: RequestContext, env: LogEnv, opts: EntryOptions = {}): Record<string, unknown> {
  const now = performance.now();
  const latency = now - ctx.startTime;
  const { url, uri } = requestUrlParts(ctx);
  const request: Record<string, unknown> = {
    url,
    uri,
    method: ctx.method,
    headers: ctx.rawHeaders !== undefined ? rawHeaderObject(ctx.rawHeaders) : headerObject(ctx.request.headers),
    querystring: queryObject(ctx.query),
    size: requestLength(ctx),
  };
  if (opts.reqBody !== undefined) request.body = opts.reqBody;
  const response: Record<string, unknown> = {
    status: ctx.status,
    headers: ctx.response ? responseHeaderObject(ctx.response) : {},
    size: ctx.bytesSent,
  };
  if (opts.respBody !== undefined) response.body = opts.respBody;
  const entry: Record<string, unknown> = {
    request,
    response,
    server: { hostname: env.hostname, version: FNGATE_VERSION },
  };
  const addr = ctx.getVar('upstream_addr');
  if (addr !== undefined) entry.upstream = addr;
  entry.service_id = ctx.route ? ctx.serviceId : ctx.host;
  const routeId = ctx.route ? ctx.routeId : opts.noRouteId;
  if (routeId !== undefined) entry.route_id = routeId;
  if (ctx.consumer) entry.consumer = { username: ctx.consumer.username };
  entry.client_ip = ctx.clientIp;
  entry.start_time = startTime(latency);
  entry.latency = round3(latency);
  if (ctx.upstreamLatency !== undefined) {
    entry.upstream_latency = round3(ctx.upstreamLatency);
    entry.apisix_latency = round3(Math.max(0, latency - ctx.upstreamLatency));
  } else entry.apisix_latency = round3(latency);
  return entry;
}

/** A `log_format` compiled once: `"$var"` string values are read from the request's variables. */
export type LogFormat = (ctx: RequestContext) => Record<string, unknown>;

const MAX_DEPTH = 5;

/**
 * Compiles APISIX's `log_format` (an object whose `$name` strings are variables, nested objects up to depth 5).
 * A variable without a value is logged as null; variables holding credentials (`http_authorization`,
 * `cookie_*`, `arg_apikey`, ...) are redacted. `route_id` and `service_id` are appended, as APISIX does.
 */
export function compileLogFormat(format: Record<string, unknown>): LogFormat {
  const build = (obj: Record<string, unknown>, depth: number): ((ctx: RequestContext) => Record<string, unknown>) => {
    const parts: ((ctx: RequestContext, out: Record<string, unknown>) => void)[] = [];
    for (const [key, value] of Object.entries(obj)) {
      if (typeof value === 'string' && value.startsWith('$')) {
        const name = value.slice(1);
        const secret = varIsSecret(name);
        if (QUERY_VARS.has(name)) {
          parts.push((ctx, out) => {
            const uri = safeRequestUri(ctx);
            const q = uri.indexOf('?');
            out[key] = name.endsWith('request_uri') ? uri : q < 0 ? null : uri.slice(q + 1);
          });
          continue;
        }
        parts.push((ctx, out) => {
          const v = ctx.getVar(name);
          out[key] = v === undefined ? null : secret ? REDACTED : v;
        });
      } else if (value !== null && typeof value === 'object' && !Array.isArray(value) && depth < MAX_DEPTH) {
        const inner = build(value as Record<string, unknown>, depth + 1);
        parts.push((ctx, out) => {
          out[key] = inner(ctx);
        });
      } else {
        parts.push((_ctx, out) => {
          out[key] = value;
        });
      }
    }
    return (ctx) => {
      const out: Record<string, unknown> = {};
      for (const p of parts) p(ctx, out);
      return out;
    };
  };
  const root = build(format, 1);
  return (ctx) => {
    const out = root(ctx);
    out.route_id = ctx.routeId || undefined;
    out.service_id = ctx.serviceId || undefined;
    return out;
  };
}

/** Variables holding the query string: logged with credential arguments redacted. */
const QUERY_VARS: ReadonlySet<string> = new Set(['request_uri', 'real_request_uri', 'args', 'query_string']);

function varIsSecret(name: string): boolean {
  if (name.startsWith('cookie_')) return true;
  if (name.startsWith('http_')) return isSecretName(name.slice(5).replaceAll('_', '-'));
  if (name.startsWith('arg_')) return isSecretName(name.slice(4));
  return isSecretName(name);
}

import * as v from 'valibot';
import type { Logger, RequestContext } from '../context.ts';
import { errorResponse } from '../errors.ts';
import { durationMs } from '../schema/common.ts';
import { INTEGER } from '../schema/format.ts';
import { forward } from '../upstream/forward.ts';
import type { HeaderList } from '../upstream/headers.ts';
import { encodePath } from '../upstream/path.ts';
import { type ColdStartConf, coldStartPolicy, coldStartSchema } from '../upstream/retry.ts';

/**
 * The one forwarder behind every function-as-a-service plugin (openfunction, azure-functions, aws-lambda,
 * openwhisk), as APISIX's `serverless/generic-upstream.lua`. A plugin declares a {@link Platform}: how the URL is
 * built, which headers it adds or signs, and how the answer is mapped; {@link serverlessForwarder} is the single
 * call path (one `forward` call) every platform goes through.
 */

const HTTP_URL = /^https?:\/\/[^/?#\s]+/i;

export function isHttpUrl(s: string): boolean {
  if (!HTTP_URL.test(s)) return false;
  try {
    const u = new URL(s);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.hostname !== '';
  } catch {
    return false;
  }
}

/** Schema fields every serverless plugin shares (APISIX generic-upstream), with APISIX's defaults. */
export const serverlessEntries = {
  function_uri: v.pipe(v.string(), v.check(isHttpUrl, 'must be a valid http(s) URL')),
  /**
   * APISIX: one number, ms, bounding the whole wait for the answer's head. fngate extension: an object
   * `{connect, send, read}` in ms (APISIX's upstream names, nginx's meaning): `connect` for the TCP (+TLS) connect,
   * `send` the longest gap between writes of the request, `read` (default 3000) from the request's end to the
   * answer's head and then between body chunks. `connect` takes precedence over `connect_timeout`.
   */
  timeout: v.optional(
    v.union([
      durationMs(100),
      v.strictObject({
        connect: v.optional(durationMs(1)),
        send: v.optional(durationMs(1)),
        read: v.optional(durationMs(100), 3000),
      }),
    ]),
    3000,
  ),
  /**
   * fngate extension: retry while the function starts (scale from zero): refused connects and the activator's
   * 502/503, with capped exponential backoff and jitter, within `deadline`; see src/core/upstream/retry.ts.
   */
  cold_start: v.optional(coldStartSchema),
  /**
   * fngate extension: the connect timeout, ms. Without it `timeout` bounds the whole wait for the answer's head
   * (connect, send, first byte); with it the connect gets its own bound and `timeout` starts once connected, so a
   * function that cold-starts can be given a long `timeout` and a short `connect_timeout`.
   */
  connect_timeout: v.optional(durationMs(1)),
  ssl_verify: v.optional(v.boolean(), true),
  keepalive: v.optional(v.boolean(), true),
  keepalive_timeout: v.optional(durationMs(1000), 60000),
  keepalive_pool: v.optional(v.pipe(v.number(INTEGER), v.integer(), v.minValue(1)), 5),
  max_req_body_size: v.optional(v.pipe(v.number(INTEGER), v.integer(), v.minValue(1)), 64 * 1024 * 1024),
};

/** The shared fields without `function_uri`, for a platform that builds its URL from other fields (openwhisk). */
export const { function_uri: _functionUri, ...transportEntries } = serverlessEntries;

export interface ServerlessConf {
  function_uri: string;
  timeout: number | { connect?: number; send?: number; read: number };
  cold_start?: ColdStartConf;
  connect_timeout?: number;
  ssl_verify: boolean;
  keepalive: boolean;
  keepalive_timeout: number;
  keepalive_pool: number;
  max_req_body_size: number;
}

/** The transport part of {@link ServerlessConf} (every platform has it, openwhisk without `function_uri`). */
export type TransportConf = Omit<ServerlessConf, 'function_uri'>;

/** One call to a function, as a platform's {@link Platform.prepare} may change it before it is sent. */
export interface FunctionCall {
  /** Absolute URL, query included. */
  url: string;
  /** The method sent (the client's, or the one a plugin rewrote, unless the platform fixes it). */
  method: string;
  /** Headers the platform sets (lower-case names), replacing the client's of the same names. */
  headers: HeaderList;
}

/**
 * What a serverless plugin declares; everything else (body limits, timeouts, keep-alive, streaming, errors) is
 * the shared forwarder's.
 */
export interface Platform {
  /** What the target is called in error messages and logs (`function`, `OpenWhisk action`). */
  label: string;
  /** Builds the URL of one call; default: `function_uri` + the route's `*` tail + queries ({@link functionUrl}). */
  url?: (ctx: RequestContext) => string;
  /** The method to send whatever the client used (openwhisk: POST); default the client's. */
  method?: string;
  /** Send only the platform's headers, none of the client's (openwhisk). */
  ownHeadersOnly?: boolean;
  /** Headers set on every call, computed once per config (openfunction's Basic auth). */
  headers?: HeaderList;
  /**
   * Per-request headers (decided from the client's headers or plugin_metadata), or a signature over the call
   * (aws-lambda SigV4, which may also rewrite the URL's query into its canonical form). May answer instead (a
   * body over the limit).
   */
  prepare?: (ctx: RequestContext, call: FunctionCall) => undefined | Response | Promise<undefined | Response>;
  /** Maps the function's answer to the client's (Lambda proxy integration, OpenWhisk results); default as is. */
  answer?: (res: Response, ctx: RequestContext) => Promise<Response>;
}

/** Split a function URI once, at config time. */
export function parseFunctionUri(uri: string): { origin: string; path: string; query: string } {
  const u = new URL(uri);
  return { origin: u.origin, path: u.pathname, query: u.search.slice(1) };
}

/** `base` + `/` + `tail`, with exactly one slash between (APISIX: `/api` + `x` → `/api/x`, `/api` + `` → `/api/`). */
export function joinPath(base: string, tail: string): string {
  if (base.endsWith('/') || tail.startsWith('/')) return base.endsWith('/') && tail.startsWith('/') ? base + tail.slice(1) : base + tail;
  return `${base}/${tail}`;
}

/**
 * The generic URL builder (openfunction, azure-functions, aws-lambda), from pieces split at config time: origin
 * and path of `function_uri`, the route's captured `*` tail, and the function_uri's own query followed by the
 * client's (or the one a plugin rewrote), byte for byte. As in APISIX, a rewritten path (proxy-rewrite `uri`) does
 * not change the function's URL.
 */
export function functionUrl(functionUri: string): (ctx: RequestContext) => string {
  const fn = parseFunctionUri(functionUri);
  const basePath = fn.path;
  return (ctx) => {
    const ext = ctx.params[':ext'];
    let path = ext === undefined ? basePath : joinPath(basePath, encodePath(ext));
    if (path === '') path = '/';
    const own = ctx.upstream.query ?? ctx.query;
    const query = fn.query && own ? `${fn.query}&${own}` : fn.query || own;
    return query ? `${fn.origin}${path}?${query}` : `${fn.origin}${path}`;
  };
}

/**
 * The call to the function (a plugin's `proxy`): the platform's URL, method and headers, the shared transport
 * settings (timeouts, cold-start retries, TLS, keep-alive), then the platform's answer mapping.
 */
export function serverlessForwarder(
  conf: TransportConf & { function_uri?: string },
  platform: Platform,
): (ctx: RequestContext) => Promise<Response> {
  const keepalive = { enabled: conf.keepalive, idleTimeoutMs: conf.keepalive_timeout, poolSize: conf.keepalive_pool };
  const urlOf = platform.url ?? functionUrl(conf.function_uri ?? '');
  const { prepare, answer, label } = platform;
  const fixed = platform.headers;
  const t = conf.timeout;
  const timeout = typeof t === 'number' ? t : t.read;
  const connectTimeout = (typeof t === 'number' ? undefined : t.connect) ?? conf.connect_timeout;
  const sendTimeout = typeof t === 'number' ? undefined : t.send;
  const retry = conf.cold_start && coldStartPolicy(conf.cold_start);
  const ownHeadersOnly = platform.ownHeadersOnly;
  const tlsVerify = conf.ssl_verify;
  const maxBodySize = conf.max_req_body_size;
  // Every field named (no spread of a per-config object: V8's CopyDataProperties was ~0.1 µs per request).
  const send = (ctx: RequestContext, url: string, method: string | undefined, setHeaders: HeaderList | undefined) =>
    forward(ctx, {
      url,
      method,
      ownHeadersOnly,
      timeout,
      connectTimeout,
      sendTimeout,
      retry,
      tlsVerify,
      keepalive,
      maxBodySize,
      setHeaders,
      label,
    });
  // openfunction: nothing decided per request, nothing mapped: the call itself, with no extra promise.
  if (!prepare && !answer) return (ctx) => send(ctx, urlOf(ctx), platform.method, fixed);
  return async (ctx: RequestContext): Promise<Response> => {
    let url = urlOf(ctx);
    let setHeaders = fixed;
    let method = platform.method;
    if (prepare) {
      const c: FunctionCall = { url, method: method ?? ctx.upstream.method ?? ctx.method, headers: fixed ? [...fixed] : [] };
      const early = await prepare(ctx, c);
      if (early) return early;
      url = c.url;
      setHeaders = c.headers.length ? c.headers : undefined;
      if (platform.method) method = c.method;
    }
    const res = await send(ctx, url, method, setHeaders);
    // `upstreamLatency` is set only when the function answered: the forwarder's own errors are never mapped.
    return answer && ctx.upstreamLatency !== undefined ? answer(res, ctx) : res;
  };
}

// ---- Answer mapping helpers (Lambda proxy integration, OpenWhisk results) ----

/** How much of a function's answer a mapping reads (Lambda's synchronous invocation answers at most 6 MB). */
export const MAX_MAPPED_ANSWER = 16 * 1024 * 1024;
/** How many header fields a mapped answer may set, and their total size (names + values): more is a 502. */
export const MAX_MAPPED_HEADERS = 200;
export const MAX_MAPPED_HEADER_BYTES = 64 * 1024;

export class BadAnswer extends Error {}

/** The answer's body, whole, at most {@link MAX_MAPPED_ANSWER} bytes. */
export async function readAnswer(res: Response): Promise<string> {
  const declared = Number(res.headers.get('content-length') ?? Number.NaN);
  if (declared > MAX_MAPPED_ANSWER) {
    await res.body?.cancel().catch(() => {});
    throw new BadAnswer(`the answer is larger than ${MAX_MAPPED_ANSWER} bytes`);
  }
  if (!res.body) return '';
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let size = 0;
  let text = '';
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > MAX_MAPPED_ANSWER) {
      void reader.cancel().catch(() => {});
      throw new BadAnswer(`the answer is larger than ${MAX_MAPPED_ANSWER} bytes`);
    }
    text += decoder.decode(value, { stream: true });
  }
  return text + decoder.decode();
}

const HOP_OR_FRAMING = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'te',
  'trailer',
  'content-length',
]);

/**
 * Adds a function's header object (`{name: value}` or, with `multi`, `{name: [values]}`) to `out`, checking
 * types, names and the bounds; framing and hop-by-hop headers are dropped (the gateway frames the body).
 */
export function addHeaderObject(out: Headers, obj: unknown, field: string, budget: { count: number; bytes: number }, multi = false): void {
  if (obj === undefined || obj === null) return;
  if (typeof obj !== 'object' || Array.isArray(obj)) throw new BadAnswer(`"${field}" is not an object`);
  for (const [name, raw] of Object.entries(obj as Record<string, unknown>)) {
    const values = multi ? raw : [raw];
    if (!Array.isArray(values)) throw new BadAnswer(`"${field}.${name}" is not an array`);
    for (const value of values) {
      if (typeof value !== 'string' && typeof value !== 'number' && typeof value !== 'boolean') {
        throw new BadAnswer(`"${field}.${name}" is not a string`);
      }
      const text = String(value);
      budget.count++;
      budget.bytes += name.length + text.length;
      if (budget.count > MAX_MAPPED_HEADERS || budget.bytes > MAX_MAPPED_HEADER_BYTES) {
        throw new BadAnswer(`more than ${MAX_MAPPED_HEADERS} headers or ${MAX_MAPPED_HEADER_BYTES} bytes of headers`);
      }
      if (HOP_OR_FRAMING.has(name.toLowerCase())) continue;
      try {
        out.append(name, text);
      } catch {
        throw new BadAnswer(`"${field}" has an invalid header ${JSON.stringify(name.slice(0, 64))}`);
      }
    }
  }
}

/** A function answered something the platform's mapping cannot use: 502 with the reason, and one log line. */
export function badAnswer(logger: Logger, plugin: string, ctx: RequestContext, reason: string): Response {
  logger.error(`${plugin}: the function's answer cannot be used: ${reason}`, { route: ctx.routeId });
  return errorResponse(502, `the function's answer cannot be used: ${reason}`);
}

import * as v from 'valibot';
import { durationMs } from '../schema/common.ts';
import { INTEGER } from '../schema/format.ts';
import type { RequestContext } from '../context.ts';
import { forward } from '../upstream/forward.ts';
import type { HeaderList } from '../upstream/headers.ts';
import { encodePath } from '../upstream/path.ts';
import { type ColdStartConf, coldStartPolicy, coldStartSchema } from '../upstream/retry.ts';

/**
 * The forwarding piece shared by every function-as-a-service plugin (openfunction today; azure-functions,
 * aws-lambda later), as APISIX's `serverless/generic-upstream.lua`. Each plugin adds only its auth.
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
 * Build the call to the function (a plugin's `proxy`). `setHeaders` are the plugin's credentials (lower-case
 * names). The URL is computed from pieces split at config time: origin and path of `function_uri`, the route's
 * captured `*` tail, and the function_uri's own query followed by the client's (or the one a plugin rewrote),
 * byte for byte. As in APISIX, a rewritten path (proxy-rewrite `uri`) does not change the function's URL.
 */
export function serverlessForwarder(conf: ServerlessConf, label: string, setHeaders?: HeaderList): (ctx: RequestContext) => Promise<Response> {
  const fn = parseFunctionUri(conf.function_uri);
  const keepalive = { enabled: conf.keepalive, idleTimeoutMs: conf.keepalive_timeout, poolSize: conf.keepalive_pool };
  const basePath = fn.path;
  return (ctx: RequestContext) => {
    const ext = ctx.params[':ext'];
    let path = ext === undefined ? basePath : joinPath(basePath, encodePath(ext));
    if (path === '') path = '/';
    const own = ctx.upstream.query ?? ctx.query;
    const query = fn.query && own ? `${fn.query}&${own}` : fn.query || own;
    const url = query ? `${fn.origin}${path}?${query}` : `${fn.origin}${path}`;
    const t = conf.timeout;
    return forward(ctx, {
      url,
      timeout: typeof t === 'number' ? t : t.read,
      connectTimeout: (typeof t === 'number' ? undefined : t.connect) ?? conf.connect_timeout,
      sendTimeout: typeof t === 'number' ? undefined : t.send,
      retry: conf.cold_start && coldStartPolicy(conf.cold_start),
      tlsVerify: conf.ssl_verify,
      keepalive,
      maxBodySize: conf.max_req_body_size,
      setHeaders,
      label,
    });
  };
}

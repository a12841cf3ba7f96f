import type { Handler } from '../context.ts';
import { errorResponse } from '../errors.ts';
import { normalizeNodes, type UpstreamConf } from '../schema/upstream.ts';
import { createPicker } from './balancer.ts';
import { forward, requestBody } from './forward.ts';
import { encodePath } from './path.ts';
import { UpstreamError } from './types.ts';

/** APISIX's upstream default: nginx's 60 s proxy timeouts. */
const DEFAULT_TIMEOUT_S = 60;

/**
 * Compiles an upstream (inline or by id) into the route's final handler: pick a node, forward the
 * request with its path unchanged. On a connect failure a body-less request is retried on the next node
 * (`retries`, default nodes - 1), as APISIX does.
 */
export function upstreamHandler(conf: UpstreamConf, routeTimeout?: { read: number }): Handler {
  const nodes = normalizeNodes(conf);
  if (typeof nodes === 'string') throw new Error(nodes);
  const picker = createPicker(nodes);
  if (!picker) return async () => errorResponse(503, 'no valid upstream node');
  const scheme = conf.scheme ?? 'http';
  const defaultPort = scheme === 'https' ? 443 : 80;
  const passHost = conf.pass_host ?? 'pass';
  const timeout = Math.round((routeTimeout?.read ?? conf.timeout?.read ?? DEFAULT_TIMEOUT_S) * 1000);
  const pool = conf.keepalive_pool;
  const keepalive = {
    enabled: true,
    idleTimeoutMs: Math.round((pool?.idle_timeout ?? 60) * 1000),
    poolSize: pool?.size ?? 320,
  };
  const retries = Math.min(conf.retries ?? picker.size - 1, picker.size - 1);
  const origins = new Map<string, string>();
  const originOf = (host: string, port: number) => {
    const key = `${host}:${port}`;
    let o = origins.get(key);
    if (o === undefined) {
      o = port === defaultPort ? `${scheme}://${host}` : `${scheme}://${host}:${port}`;
      origins.set(key, o);
    }
    return o;
  };

  return async (ctx) => {
    const retryable = requestBody(ctx) === null;
    const attempts = retryable ? retries + 1 : 1;
    // The path the router matched (decoded, dot segments resolved), re-encoded: the node must never see
    // a different path than the one the route's conditions were checked against. A plugin's rewrite
    // (RequestContext.upstream: proxy-rewrite) replaces it.
    const path = ctx.upstream.path ?? (ctx.path === ctx.rawPath ? ctx.rawPath : encodePath(ctx.path));
    const query = ctx.upstream.query ?? ctx.query;
    const pathAndQuery = query ? `${path}?${query}` : path;
    for (let attempt = 0; ; attempt++) {
      const node = picker.pick(attempt);
      ctx.upstreamNode = node.host;
      ctx.upstreamPort = node.port;
      let hostHeader: string | undefined;
      if (passHost === 'pass') hostHeader = ctx.request.headers.get('host') ?? undefined;
      else if (passHost === 'rewrite') hostHeader = conf.upstream_host;
      try {
        return await forward(
          ctx,
          {
            url: originOf(node.host, node.port) + pathAndQuery,
            hostHeader,
            timeout,
            tlsVerify: true,
            keepalive,
            label: 'upstream',
            // nginx/APISIX: no node could be reached -> 502 Bad Gateway.
            connectStatus: 502,
          },
          { throwOnConnect: attempt + 1 < attempts },
        );
      } catch (err) {
        if (!(err instanceof UpstreamError)) throw err;
        // connect failure with attempts left: try the next node
      }
    }
  };
}

import type { Handler } from '../context.ts';
import { errorResponse } from '../errors.ts';
import { normalizeNodes, type UpstreamConf } from '../schema/upstream.ts';
import { createPicker } from './balancer.ts';
import { type ForwardTarget, forward } from './forward.ts';
import type { ClientCert } from './types.ts';
import { encodePath } from './path.ts';
import { coldStartPolicy, failoverPolicy, type RetryPolicy } from './retry.ts';

/** APISIX's upstream default: nginx's 60 s proxy timeouts. */
const DEFAULT_TIMEOUT_S = 60;

/** `{connect, send, read}` in seconds (APISIX `timeout_def`). */
export interface TimeoutConf {
  connect: number;
  send: number;
  read: number;
}

/**
 * Compiles an upstream (inline or by id) into the route's final handler: pick a node, forward the
 * request with its path unchanged. On a connect failure (refused, or timed out) a body-less request is retried on
 * the next node (`retries`, default nodes - 1), as APISIX does, until `retry_timeout` seconds have passed since the
 * first attempt (0 or unset: no limit). The timeouts are the route's `timeout`, else the upstream's, else nginx's 60 s
 * each: connect, send and read apart. With `cold_start` (fngate extension) the retry becomes the cold-start one
 * (src/core/upstream/retry.ts): with backoff, also on 502/503 answers and for small buffered bodies, until
 * `cold_start.deadline` (instead of `retry_timeout`), at most `retries` times when it is set, walking the nodes.
 */
/**
 * The `type: client` ssl of an id as a client certificate, from the gateway's current ssls; or why there is none
 * (APISIX's words: `ssl id [<id>] not exits`, `ssl type should be 'client'`).
 */
export type ClientSslLookup = (id: string) => ClientCert | string;

/**
 * The client certificate of an https upstream (APISIX `upstream.tls`, applied only with `scheme: https` as APISIX
 * does): the inline `client_cert`/`client_key`, or the `type: client` ssl `client_cert_id` names, looked up on each
 * call (an ssl written after the route is used at once). An error answer when the certificate cannot be had: the
 * ssl is missing (deleted: the Admin API lets an ssl go while upstreams name it, as APISIX's) or not a client one
 * (502 `failed to get ssl cert: …`, as APISIX's init.lua), the inline key could not be decrypted (503, as APISIX's
 * `fetch_pkey` failing).
 */
function clientCertOf(conf: UpstreamConf, lookup: ClientSslLookup | undefined): (() => ClientCert | Response) | undefined {
  const tls = conf.tls;
  if ((conf.scheme ?? 'http') !== 'https' || tls === undefined) return undefined;
  if (tls.client_cert !== undefined && tls.client_key !== undefined) {
    const { client_cert: cert, client_key: key } = tls;
    if (!key.startsWith('---')) {
      return () => errorResponse(503, 'failed to decrypt the upstream client key (DATA_ENCRYPTION_KEY)');
    }
    const cc: ClientCert = { cert, key, id: `${cert}\n${key}` };
    return () => cc;
  }
  if (tls.client_cert_id === undefined) return undefined;
  const id = String(tls.client_cert_id);
  return () => {
    const cc = lookup?.(id) ?? `ssl id [${id}] not exits`;
    return typeof cc === 'string' ? errorResponse(502, `failed to get ssl cert: ${cc}`) : cc;
  };
}

export function upstreamHandler(conf: UpstreamConf, routeTimeout?: TimeoutConf, clientSsl?: ClientSslLookup): Handler {
  const nodes = normalizeNodes(conf);
  if (typeof nodes === 'string') throw new Error(nodes);
  const picker = createPicker(nodes);
  if (!picker) return async () => errorResponse(503, 'no valid upstream node');
  const scheme = conf.scheme ?? 'http';
  const defaultPort = scheme === 'https' ? 443 : 80;
  const passHost = conf.pass_host ?? 'pass';
  const t = routeTimeout ?? conf.timeout;
  const ms = (seconds: number | undefined) => Math.max(1, Math.round((seconds ?? DEFAULT_TIMEOUT_S) * 1000));
  const timeout = ms(t?.read);
  const connectTimeout = ms(t?.connect);
  const sendTimeout = ms(t?.send);
  const retryTimeoutMs = conf.retry_timeout ? conf.retry_timeout * 1000 : 0;
  const pool = conf.keepalive_pool;
  const keepalive = {
    enabled: true,
    idleTimeoutMs: Math.round((pool?.idle_timeout ?? 60) * 1000),
    poolSize: pool?.size ?? 320,
    maxRequests: pool?.requests,
  };
  const failover = Math.min(conf.retries ?? picker.size - 1, picker.size - 1);
  const retry: RetryPolicy | undefined = conf.cold_start
    ? coldStartPolicy(conf.cold_start, conf.retries === undefined ? Number.POSITIVE_INFINITY : conf.retries + 1)
    : failover > 0
      ? failoverPolicy(failover, retryTimeoutMs)
      : undefined;
  const clientCert = clientCertOf(conf, clientSsl);
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

  return (ctx) => {
    // The path the router matched (decoded, dot segments resolved), re-encoded: the node must never see
    // a different path than the one the route's conditions were checked against. A plugin's rewrite
    // (RequestContext.upstream: proxy-rewrite) replaces it.
    const path = ctx.upstream.path ?? (ctx.path === ctx.rawPath ? ctx.rawPath : encodePath(ctx.path));
    const query = ctx.upstream.query ?? ctx.query;
    const pathAndQuery = query ? `${path}?${query}` : path;
    const cert = clientCert?.();
    if (cert instanceof Response) return Promise.resolve(cert);
    const targetFor = (attempt: number): ForwardTarget => {
      const node = picker.pick(attempt);
      ctx.upstreamNode = node.host;
      ctx.upstreamPort = node.port;
      let hostHeader: string | undefined;
      if (passHost === 'pass') hostHeader = ctx.hostHeader ?? undefined;
      else if (passHost === 'rewrite') hostHeader = conf.upstream_host;
      return {
        url: originOf(node.host, node.port) + pathAndQuery,
        hostHeader,
        timeout,
        connectTimeout,
        sendTimeout,
        tlsVerify: true,
        clientCert: cert,
        keepalive,
        label: 'upstream',
        // nginx/APISIX: no node could be reached -> 502 Bad Gateway.
        connectStatus: 502,
        retry,
      };
    };
    // A connect failure with attempts left: the next node, unless `retry_timeout` has run out (nginx's
    // proxy_next_upstream_timeout): then the last failure is the answer (retry.ts).
    return forward(ctx, targetFor(0), { next: targetFor });
  };
}

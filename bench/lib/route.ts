/**
 * The route every benchmark proxies through: a real `openfunction` route to the nginx upstream's `/hello`, with a
 * `service_token` (so the gateway adds `Authorization: Basic …`, as the peers are told to), and where the gateway
 * and the load generator run.
 */

/** The route's `service_token`. */
export const SERVICE_TOKEN = 'bench:fngate-bench-token';
/** The Authorization header the token becomes (what the peers and floors add themselves). */
export const AUTHORIZATION = `Basic ${Buffer.from(SERVICE_TOKEN).toString('base64')}`;

/** The core the system under test is pinned to; the upstream and wrk share the other. */
export const GATEWAY_CORE = 1;
export const LOAD_CORE = 0;

/** Routes `id` at `uri` to the upstream on 127.0.0.1:`upstreamPort`, with `keepalive_pool: pool`. */
export function functionRoute(upstreamPort: number, pool: number): (id: string, uri: string) => Record<string, unknown> {
  return (id, uri) => ({
    id,
    uri,
    plugins: {
      openfunction: {
        function_uri: `http://127.0.0.1:${upstreamPort}/hello`,
        authorization: { service_token: SERVICE_TOKEN },
        keepalive_pool: pool,
      },
    },
  });
}

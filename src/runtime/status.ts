/**
 * APISIX's status API (`apisix.status` in conf/config.yaml; apisix/init.lua `status` / `status_ready`), on its
 * own port (STATUS_HOST:STATUS_PORT, 127.0.0.1:7085 by default). Portable: WHATWG Request/Response only.
 *
 * - `/status` (nginx `location /status`, a prefix): 200 `{"status":"ok"}` whenever the process runs.
 * - `/status/ready`: 200 `{"status":"ok"}` once every worker has loaded the config, else 503
 *   `{"status":"error","error":"…"}` with APISIX's texts (`worker count: N but status report count: M`,
 *   `worker id: N has not received configuration`), and fngate's own for an etcd watch down longer than the grace.
 * - any other path: 404, as nginx without a matching location.
 */

/** How long an interrupted etcd watch still counts as ready (the last good config is served meanwhile). */
export const ETCD_READY_GRACE_MS = 30_000;

const json = (status: number, body: Record<string, string>) =>
  new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });

/**
 * `notReady()`: undefined when ready, else the `error` text of the 503. The handler ignores the method, as
 * APISIX's `content_by_lua_block` does.
 */
export function statusHandler(notReady: () => string | undefined): (req: Request) => Response {
  return (req) => {
    const url = req.url;
    const start = url.indexOf('/', url.indexOf('//') + 2);
    const q = url.indexOf('?', start);
    const path = start < 0 ? '/' : q < 0 ? url.slice(start) : url.slice(start, q);
    if (path.startsWith('/status/ready')) {
      const error = notReady();
      return error === undefined ? json(200, { status: 'ok' }) : json(503, { status: 'error', error });
    }
    if (path.startsWith('/status')) return json(200, { status: 'ok' });
    return new Response(null, { status: 404 });
  };
}

/** Something whose health the readiness follows: the etcd store's watch. */
export interface WatchHealth {
  /** Since when (ms epoch) the watch has been down; undefined while it is healthy. */
  watchDownSince(): number | undefined;
}

/** The store's part of readiness: an etcd watch down for longer than the grace makes the instance not ready. */
export function storeReadiness(store: object, now = () => Date.now(), graceMs = ETCD_READY_GRACE_MS): () => string | undefined {
  const health = store as Partial<WatchHealth>;
  if (typeof health.watchDownSince !== 'function') return () => undefined;
  return () => {
    const since = health.watchDownSince!();
    if (since === undefined) return undefined;
    const down = now() - since;
    return down > graceMs ? `etcd watch down for ${Math.round(down / 1000)} s (grace ${graceMs / 1000} s)` : undefined;
  };
}

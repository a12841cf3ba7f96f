// What the Bun and Deno floors do with one request (bench/lib/floor-bun.ts, floor-deno.ts): answer the readiness
// probe; else send the client's headers less Host and Connection/Keep-Alive, plus the route's Authorization and
// X-Forwarded-For when the client's address is known, and return the upstream's Response as it is. No framework,
// no timeouts. WHATWG only (Deno runs it with --no-config). bench/lib/floor-worker.js does the same in plain JS:
// bare `workerd serve` runs that one module unbundled, with no imports.

/** Proxies `req` to `upstream` (http://127.0.0.1:port); `extra` is merged into the fetch options (the runtime's own). */
export function floorFetch(
  req: Request,
  upstream: string,
  authorization: string,
  clientIp: string | undefined,
  extra?: Record<string, unknown>,
): Response | Promise<Response> {
  const url = new URL(req.url);
  if (url.pathname === '/__bench_ready') return new Response('ok');
  const headers = new Headers(req.headers);
  headers.delete('host');
  headers.delete('connection');
  headers.delete('keep-alive');
  headers.set('authorization', authorization);
  if (clientIp) headers.set('x-forwarded-for', clientIp);
  const init: RequestInit = { method: req.method, headers, body: req.body, redirect: 'manual' };
  if (extra) Object.assign(init, extra);
  return fetch(upstream + url.pathname + url.search, init);
}

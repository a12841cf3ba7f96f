// The Bun floor: Bun.serve + Bun's fetch, returning the upstream's Response as it is (`bun run`, no bundling).
// Not a gateway (no routing, no header hygiene beyond dropping Host and Connection/Keep-Alive, no timeouts, no
// framework): the least a Bun process does to proxy one request. `decompress: false` keeps the body as the
// upstream encoded it and stops Bun adding an Accept-Encoding of its own (as fngate on Bun does).
// Env: PORT, UPSTREAM (http://127.0.0.1:port), AUTHORIZATION. Loopback only.

/** The part of Bun's API used here (declared locally: no @types/bun in this repo). */
interface BunServer {
  requestIP(req: Request): { address: string } | null;
}
declare const Bun: {
  env: Record<string, string | undefined>;
  serve(opts: {
    hostname: string;
    port: number;
    fetch(req: Request, server: BunServer): Response | Promise<Response>;
  }): BunServer;
};

const upstream = Bun.env.UPSTREAM!;
const authorization = Bun.env.AUTHORIZATION!;

Bun.serve({
  hostname: '127.0.0.1',
  port: Number(Bun.env.PORT),
  fetch(req, server) {
    const url = new URL(req.url);
    if (url.pathname === '/__bench_ready') return new Response('ok');
    const headers = new Headers(req.headers);
    headers.delete('host');
    headers.delete('connection');
    headers.delete('keep-alive');
    headers.set('authorization', authorization);
    const ip = server.requestIP(req)?.address;
    if (ip) headers.set('x-forwarded-for', ip);
    const init: RequestInit & { decompress: boolean } = {
      method: req.method,
      headers,
      body: req.body,
      decompress: false,
      redirect: 'manual',
    };
    return fetch(upstream + url.pathname + url.search, init);
  },
});

export {};

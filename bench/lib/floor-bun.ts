// The Bun floor: Bun.serve + Bun's fetch, returning the upstream's Response as it is (`bun run`, no bundling).
// Not a gateway (no routing, no header hygiene beyond dropping Host and Connection/Keep-Alive, no timeouts, no
// framework): the least a Bun process does to proxy one request. `decompress: false` keeps the body as the
// upstream encoded it and stops Bun adding an Accept-Encoding of its own (as fngate on Bun does).
// Env: PORT, UPSTREAM (http://127.0.0.1:port), AUTHORIZATION. Loopback only.

import { floorFetch } from './floor-fetch.ts';

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

// `decompress: false`: see above.
const BUN_FETCH = { decompress: false };

Bun.serve({
  hostname: '127.0.0.1',
  port: Number(Bun.env.PORT),
  fetch: (req, server) => floorFetch(req, upstream, authorization, server.requestIP(req)?.address, BUN_FETCH),
});

// The Deno floor: Deno.serve + Deno's fetch (its default client), returning the upstream's Response as it is.
// Not a gateway (no routing, no header hygiene beyond dropping Host and Connection/Keep-Alive, no timeouts, no
// framework): the least a Deno process does to proxy one request. Deno's fetch has no `decompress` switch.
// Run as `deno run --no-config --allow-net=127.0.0.1 --allow-env=PORT,UPSTREAM,AUTHORIZATION bench/lib/floor-deno.ts`.
// Env: PORT, UPSTREAM (http://127.0.0.1:port), AUTHORIZATION. Loopback only.

import { floorFetch } from './floor-fetch.ts';

/** The part of Deno's API used here (declared locally: tsc checks bench/ with Node's types). */
declare const Deno: {
  env: { get(name: string): string | undefined };
  serve(
    opts: { hostname: string; port: number; onListen?: () => void },
    handler: (req: Request, info: { remoteAddr: { hostname: string } }) => Response | Promise<Response>,
  ): unknown;
};

const upstream = Deno.env.get('UPSTREAM')!;
const authorization = Deno.env.get('AUTHORIZATION')!;

Deno.serve({ hostname: '127.0.0.1', port: Number(Deno.env.get('PORT')), onListen() {} }, (req, info) =>
  floorFetch(req, upstream, authorization, info.remoteAddr.hostname),
);

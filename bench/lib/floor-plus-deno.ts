// The Deno floor-plus: bench/lib/floor-deno.ts (Deno.serve + Deno's fetch, default client) with the steps a correct
// gateway must add (bench/lib/floor-plus-fetch.ts, switched by FLOOR_PLUS). Run as
// `deno run --no-config --unstable-no-legacy-abort --allow-net=127.0.0.1 --allow-env=PORT,UPSTREAM,AUTHORIZATION,FLOOR_PLUS,TIMEOUT_MS,CLOCK bench/lib/floor-plus-deno.ts`
// (`--unstable-no-legacy-abort` as `deno task start` runs fngate: the request's signal fires only when the client
// goes away). Loopback only.

import { floorPlus } from './floor-plus-fetch.ts';

/** The part of Deno's API used here (declared locally: tsc checks bench/ with Node's types). */
declare const Deno: {
  env: { get(name: string): string | undefined };
  serve(
    opts: { hostname: string; port: number; onListen?: () => void },
    handler: (req: Request, info: { remoteAddr: { hostname: string } }) => Response | Promise<Response>,
  ): unknown;
};

const handle = floorPlus({
  upstream: Deno.env.get('UPSTREAM')!,
  authorization: Deno.env.get('AUTHORIZATION')!,
  steps: Deno.env.get('FLOOR_PLUS'),
  timeoutMs: Deno.env.get('TIMEOUT_MS') ? Number(Deno.env.get('TIMEOUT_MS')) : undefined,
  decodes: true,
  // One 50 ms clock for all calls, as fngate on Deno (a timer per call costs ~1 µs there); CLOCK=timer: one per call.
  sharedClock: Deno.env.get('CLOCK') !== 'timer',
});

Deno.serve({ hostname: '127.0.0.1', port: Number(Deno.env.get('PORT')), onListen() {} }, (req, info) =>
  handle(req, { ip: info.remoteAddr.hostname, signal: () => req.signal }),
);

// The workerd floor-plus: bench/lib/floor-worker.js (the Worker's fetch) with the steps a correct gateway must add
// (bench/lib/floor-plus-fetch.ts, switched by the FLOOR_PLUS text binding). Bundled into one ES module by esbuild
// (launchWorkerdFloorPlus in gateways.ts) and run under bare `workerd serve` like the floor. X-Forwarded-For comes
// from CF-Connecting-IP when there is one (bare workerd sets none; fngate's Worker then sends none either).
// Bindings (text): UPSTREAM, AUTHORIZATION, FLOOR_PLUS, TIMEOUT_MS. Loopback only.
import { floorPlus } from './floor-plus-fetch.ts';

interface Env {
  UPSTREAM: string;
  AUTHORIZATION: string;
  FLOOR_PLUS?: string;
  TIMEOUT_MS?: string;
}

let handle: ReturnType<typeof floorPlus> | undefined;

export default {
  fetch(req: Request, env: Env): Response | Promise<Response> {
    handle ??= floorPlus({
      upstream: env.UPSTREAM,
      authorization: env.AUTHORIZATION,
      steps: env.FLOOR_PLUS,
      timeoutMs: env.TIMEOUT_MS ? Number(env.TIMEOUT_MS) : undefined,
      copyAnswerHeaders: true,
    });
    return handle(req, { ip: req.headers.get('cf-connecting-ip') ?? undefined, signal: () => req.signal });
  },
};

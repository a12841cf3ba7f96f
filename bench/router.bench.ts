/**
 * Router micro-benchmark: build time and ns per match for 1, 1,000 and 10,000 routes.
 * Run with `npx tsx bench/router.bench.ts`. Prints figures only.
 */
import { compileRouter, normalizePath, type MatchInput, type RouteSpec } from '../src/core/router/index.ts';

const SHAPES = ['hello/*', 'exact', 'user/:id'] as const;

function makeRoutes(n: number): RouteSpec<number>[] {
  const routes: RouteSpec<number>[] = [];
  for (let i = 0; i < n; i++) {
    const shape = SHAPES[i % SHAPES.length]!;
    routes.push({ id: String(i), paths: [`/fn${i}/${shape}`], methods: ['GET', 'POST'], priority: 0, data: i });
  }
  return routes;
}

function requestFor(i: number): MatchInput {
  const shape = SHAPES[i % SHAPES.length]!;
  const tail = shape === 'hello/*' ? 'hello/world' : shape === 'exact' ? 'exact' : 'user/42';
  return { method: 'GET', host: 'example.com', path: `/fn${i}/${tail}` };
}

let sink = 0;

/** Best of 5 runs (the machine may be shared; the minimum is the least disturbed figure). */
function nsPerMatch(match: (input: MatchInput) => unknown, inputs: MatchInput[], iterations: number): number {
  for (let i = 0; i < 20_000; i++) if (match(inputs[i % inputs.length]!) !== undefined) sink++;
  let best = Number.POSITIVE_INFINITY;
  for (let run = 0; run < 5; run++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < iterations; i++) if (match(inputs[i % inputs.length]!) !== undefined) sink++;
    best = Math.min(best, Number(process.hrtime.bigint() - start) / iterations);
  }
  return best;
}

const ITER = 200_000;
for (const n of [1, 1_000, 10_000]) {
  const routes = makeRoutes(n);
  let t0 = performance.now();
  let router = compileRouter(routes);
  const coldMs = performance.now() - t0; // first build of this size (JIT partly warm from smaller sizes)
  let buildMs = Number.POSITIVE_INFINITY;
  for (let run = 0; run < 5; run++) {
    t0 = performance.now();
    router = compileRouter(routes);
    buildMs = Math.min(buildMs, performance.now() - t0);
  }
  const match = (input: MatchInput) => router.match(input);
  const random: MatchInput[] = [];
  for (let k = 0; k < 1024; k++) random.push(requestFor(Math.floor(Math.random() * n)));
  const first = nsPerMatch(match, [requestFor(0)], ITER);
  const last = nsPerMatch(match, [requestFor(n - 1)], ITER);
  const rnd = nsPerMatch(match, random, ITER);
  const miss = nsPerMatch(match, [{ method: 'GET', host: 'example.com', path: `/fn${n + 7}/nothing/here` }], ITER);
  // Route 0 is `/fn0/hello/*` (prefix), route 1 `/fn1/exact`, route 2 `/fn2/user/:id` (param).
  const shapes =
    n >= 3
      ? `, exact ${nsPerMatch(match, [requestFor(1)], ITER).toFixed(0)}, param ${nsPerMatch(match, [requestFor(2)], ITER).toFixed(0)}`
      : '';
  console.log(
    `${String(n).padStart(6)} routes: build ${coldMs.toFixed(2)} ms first, ${buildMs.toFixed(2)} ms best of 5 | ` +
      `ns/match first ${first.toFixed(0)}, last ${last.toFixed(0)}, random ${rnd.toFixed(0)}, miss ${miss.toFixed(0)}${shapes}`,
  );
}

for (const p of ['/fn1/hello/world', '/fn1/a%2Fb/../c', '/a//b/./c/']) {
  let best = Number.POSITIVE_INFINITY;
  for (let run = 0; run < 5; run++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < ITER; i++) if (normalizePath(p) !== null) sink++;
    best = Math.min(best, Number(process.hrtime.bigint() - start) / ITER);
  }
  console.log(`normalizePath(${JSON.stringify(p)}): ${best.toFixed(0)} ns`);
}
if (sink === 42) console.log('');

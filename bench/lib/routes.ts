/**
 * The route table: does a big table cost throughput, how long does a rebuild take, how soon is an Admin API
 * change served, and do rebuilds hold up requests in flight?
 *
 * 1. Throughput, 1 route vs `count` routes (`/fn<i>/hello/*`, every one an openfunction route with a
 *    service_token), the LAST one requested (worst case for any scan), interleaved rounds, c=50.
 * 2. Matcher and snapshot rebuild times for `count` routes, in this process (Node): the router alone
 *    (`compileRouter`) and the whole snapshot (schema checks + plugin instances + router: what the gateway does
 *    on every config change; cold = from scratch at start, rebuild = one route changed, which the gateway's
 *    incremental compiler re-validates alone).
 * 3. Admin API → proxy, on the Node gateway with its file store (DATA_DIR) and 1 / `count` routes: PUT a route
 *    under a new URI, then send the very next request to it; and the rebuild time the gateway logs itself.
 * 4. Requests during rebuilds: wrk -c10 on the last route of `count` for the duration, with and without an Admin
 *    API write every 200 ms; the max / p99.9 latency show whether a rebuild stalls requests.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { silentLogger } from '../../src/core/context.ts';
import { createSnapshotCompiler } from '../../src/core/config.ts';
import { FULL_CAPABILITIES } from '../../src/core/plugins/check.ts';
import { pluginRegistry } from '../../src/core/plugins/index.ts';
import { compileRouter } from '../../src/core/router/index.ts';
import type { RouteSpec } from '../../src/core/router/types.ts';
import { serializeState } from '../../src/store/file.ts';
import { deepFreeze } from '../../src/store/memory.ts';
import type { StoredItem } from '../../src/store/types.ts';
import { LAUNCHERS, type LaunchContext, launchNode, type Target } from './gateways.ts';
import { type MeasureOptions, measure, type RunResult } from './measure.ts';
import { fixed, int, markdownTable, median, ratio, spread } from './stats.ts';
import { sleep } from './sys.ts';
import { runWrk } from './wrk.ts';

export interface RoutesOptions extends MeasureOptions {
  launch: LaunchContext;
  route: (id: string, uri: string) => Record<string, unknown>;
  count: number;
  rounds: number;
  runtimes: string[];
  expected: string;
  log: (s: string) => void;
}

const ADMIN_KEY = 'bench-admin-key-0123456789abcdef';

function table(o: RoutesOptions, n: number): Record<string, unknown>[] {
  const routes: Record<string, unknown>[] = [];
  for (let i = 0; i < n; i++) routes.push(o.route(`r${i}`, `/fn${i}/hello/*`));
  return routes;
}

export async function routesSection(o: RoutesOptions): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  const N = o.count;
  o.log(`\n## route table: 1 vs ${int(N)} routes`);

  // 1. Throughput
  const configs = {
    one: { config: JSON.stringify({ routes: table(o, 1) }), path: '/fn0/hello/world' },
    many: { config: JSON.stringify({ routes: table(o, N) }), path: `/fn${N - 1}/hello/world` },
  };
  const runs: (RunResult & { runtime: string; table: string })[] = [];
  for (let round = 0; round < o.rounds; round++) {
    const order = round % 2 === 0 ? (['one', 'many'] as const) : (['many', 'one'] as const);
    for (const runtime of o.runtimes) {
      for (const which of order) {
        const c = configs[which];
        let t: Target | undefined;
        try {
          t = await LAUNCHERS[runtime]!({ ...o.launch, config: c.config });
          const r = await measure(`${runtime}/${which}`, round, t.url + c.path, t.pid, o.expected, { ...o, c1S: 0 });
          runs.push({ ...r, runtime, table: which });
          o.log(
            `round ${round + 1} ${runtime} ${which === 'one' ? '1 route' : `${int(N)} routes (last)`}: ${int(r.rps)} req/s, ` +
              `p99 ${fixed(r.p99Us / 1000)} ms, ${fixed(r.cpuUsPerReq, 1)} µs CPU/req${r.errors || r.non2xx ? `, ERRORS ${r.errors}/${r.non2xx}` : ''}`,
          );
        } catch (err) {
          o.log(`round ${round + 1} ${runtime} ${which}: FAILED: ${(err as Error).message}`);
        } finally {
          await t?.stop();
        }
      }
    }
  }
  const throughput = o.runtimes.map((runtime) => {
    const per = (which: string) => runs.filter((r) => r.runtime === runtime && r.table === which);
    const ratios = [];
    for (let round = 0; round < o.rounds; round++) {
      const a = per('one').find((r) => r.round === round);
      const b = per('many').find((r) => r.round === round);
      if (a && b) ratios.push(b.rps / a.rps);
    }
    return {
      runtime,
      oneRps: median(per('one').map((r) => r.rps)),
      manyRps: median(per('many').map((r) => r.rps)),
      ratio: spread(ratios),
      oneCpu: median(per('one').map((r) => r.cpuUsPerReq)),
      manyCpu: median(per('many').map((r) => r.cpuUsPerReq)),
    };
  });
  out.throughput = { runs, summary: throughput };

  // 2. Matcher / snapshot rebuild, in this process.
  const micro = rebuildMicro(o, N);
  out.rebuildInProcess = micro;

  // 3. + 4. Admin API on the Node gateway with a file store.
  const admin: Record<string, unknown>[] = [];
  for (const n of [1, N]) admin.push(await adminVisibility(o, n));
  out.admin = admin;
  const stall = await stallDuringRebuilds(o, N);
  out.duringRebuilds = stall;

  o.log(`\n### Route table (median over ${o.rounds} round(s); c=${o.connections}; last route requested)\n`);
  o.log(
    markdownTable(
      ['runtime', '1 route req/s', `${int(N)} routes req/s`, `ratio ${int(N)} ÷ 1`, 'CPU µs/req (1 / many)'],
      throughput.map((t) => [t.runtime, int(t.oneRps), int(t.manyRps), ratio(t.ratio, 3), `${fixed(t.oneCpu, 1)} / ${fixed(t.manyCpu, 1)}`]),
    ),
  );
  o.log(`\n### Rebuild (in the bench process, Node ${process.version}; best / median of ${micro.runs} rebuilds, each differing by one route)\n`);
  o.log(
    markdownTable(
      ['what', `${int(N)} routes, cold ms`, 'rebuild ms (best / median)', 'match ns (last route)'],
      [
        ['router only (compileRouter)', fixed(micro.router.coldMs, 1), `${fixed(micro.router.bestMs, 1)} / ${fixed(micro.router.medianMs, 1)}`, int(micro.router.matchNs)],
        ['whole snapshot (schemas + plugins + router)', fixed(micro.snapshot.coldMs, 1), `${fixed(micro.snapshot.bestMs, 1)} / ${fixed(micro.snapshot.medianMs, 1)}`, '–'],
      ],
    ),
  );
  o.log('\n### Admin API change → proxy (Node gateway, file store; PUT a route under a new URI, then the next request)\n');
  o.log(
    markdownTable(
      ['routes', 'PUT acknowledged ms (median / max)', 'next request after the ack served it', 'PUT start → served ms (median / max)', 'rebuild logged by the gateway ms (median / max)'],
      admin.map((a) => [
        int(a.routes as number),
        `${fixed(a.ackMedianMs as number, 1)} / ${fixed(a.ackMaxMs as number, 1)}`,
        `${a.nextRequestOk}/${a.writes}`,
        `${fixed(a.visibleMedianMs as number, 1)} / ${fixed(a.visibleMaxMs as number, 1)}`,
        `${fixed(a.rebuildMedianMs as number, 1)} / ${fixed(a.rebuildMaxMs as number, 1)}`,
      ]),
    ),
  );
  o.log(`\n### Requests while the ${int(N)}-route table is rebuilt (Node, wrk -c10 ${stall.seconds}s on the last route; Admin API PUT every 200 ms)\n`);
  o.log(
    markdownTable(
      ['', 'req/s', 'p50 ms', 'p99 ms', 'p99.9 ms', 'max ms', 'rebuilds'],
      (['quiet', 'churn'] as const).map((k) => {
        const r = stall[k];
        return [k === 'quiet' ? 'no writes' : 'PUT every 200 ms', int(r.rps), fixed(r.p50 / 1000), fixed(r.p99 / 1000), fixed(r.p999 / 1000), fixed(r.max / 1000), String(r.rebuilds)];
      }),
    ),
  );
  return out;
}

function rebuildMicro(o: RoutesOptions, n: number) {
  const RUNS = 7;
  const specs = (variant: number): RouteSpec<number>[] => {
    const out: RouteSpec<number>[] = [];
    for (let i = 0; i < n; i++) {
      const path = i === n >> 1 ? `/fn${i}/v${variant}/*` : `/fn${i}/hello/*`;
      out.push({ id: `r${i}`, paths: [path], priority: 0, data: i });
    }
    return out;
  };
  let t = performance.now();
  let router = compileRouter(specs(0));
  const routerCold = performance.now() - t;
  const routerTimes: number[] = [];
  for (let k = 1; k <= RUNS; k++) {
    const s = specs(k);
    t = performance.now();
    router = compileRouter(s);
    router.match({ method: 'GET', host: '', path: `/fn${n - 1}/hello/world` });
    routerTimes.push(performance.now() - t);
  }
  const input = { method: 'GET', host: '', path: `/fn${n - 1}/hello/world` };
  let sink = 0;
  for (let i = 0; i < 20_000; i++) if (router.match(input)) sink++;
  const ITER = 200_000;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < ITER; i++) if (router.match(input)) sink++;
  const matchNs = Number(process.hrtime.bigint() - t0) / ITER;

  const env = { plugins: pluginRegistry(), logger: silentLogger, prefix: '/apisix', capabilities: FULL_CAPABILITIES };
  // As the memory and file stores hand them out: deep-frozen values, the same objects while unchanged.
  const values = table(o, n).map((value) => deepFreeze(value));
  const state = (variant: number) => {
    const items: StoredItem[] = values.map((value, i) => ({
      key: `/apisix/routes/r${i}`,
      value: i === n >> 1 ? deepFreeze({ ...value, uri: `/fn${i}/v${variant}/*` }) : value,
      createdIndex: 1,
      modifiedIndex: 1,
    }));
    return { revision: variant + 1, items };
  };
  // As the gateway does: one compiler for the life of the process, so a rebuild re-compiles only what changed.
  const compile = createSnapshotCompiler(env);
  let st = state(0);
  t = performance.now();
  let snap = compile(st);
  const snapCold = performance.now() - t;
  const snapTimes: number[] = [];
  for (let k = 1; k <= RUNS; k++) {
    st = state(k);
    t = performance.now();
    snap = compile(st);
    snapTimes.push(performance.now() - t);
  }
  if (snap.problems.length) o.log(`snapshot problems: ${snap.problems.slice(0, 3).join('; ')}`);
  if (sink === -1) o.log('');
  return {
    routes: n,
    runs: RUNS,
    router: { coldMs: routerCold, bestMs: Math.min(...routerTimes), medianMs: median(routerTimes), matchNs },
    snapshot: { coldMs: snapCold, bestMs: Math.min(...snapTimes), medianMs: median(snapTimes), routes: snap.router.size },
  };
}

/** A DATA_DIR whose file store holds `n` bench routes. */
function dataDirWith(o: RoutesOptions, n: number): string {
  const dir = join(o.launch.dir, `store-${n}-${Date.now()}`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const items: StoredItem[] = table(o, n).map((value, i) => ({ key: `/apisix/routes/r${i}`, value, createdIndex: i + 1, modifiedIndex: i + 1 }));
  writeFileSync(join(dir, 'config.json'), serializeState(n, items), { mode: 0o600 });
  return dir;
}

async function putRoute(t: Target, id: string, body: Record<string, unknown>): Promise<number> {
  const res = await fetch(`${t.adminUrl}/apisix/admin/routes/${id}`, {
    method: 'PUT',
    headers: { 'x-api-key': ADMIN_KEY, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  await res.arrayBuffer();
  return res.status;
}

/** `config loaded {"revision":..,"routes":..,"ms":..}` lines the gateway logged. */
function rebuildsLogged(t: Target): { routes: number; ms: number }[] {
  const out: { routes: number; ms: number }[] = [];
  for (const m of t.proc.stdout().matchAll(/config loaded (\{[^\n]*\})/g)) {
    try {
      const f = JSON.parse(m[1]!) as { routes: number; ms: number };
      out.push({ routes: f.routes, ms: f.ms });
    } catch {
      // not ours
    }
  }
  return out;
}

async function adminVisibility(o: RoutesOptions, n: number) {
  const WRITES = 20;
  const t = await launchNode({ ...o.launch, dataDir: dataDirWith(o, n), adminKey: ADMIN_KEY, logLevel: 'info' });
  try {
    const acks: number[] = [];
    const visible: number[] = [];
    let nextOk = 0;
    const before = rebuildsLogged(t).length;
    for (let k = 0; k < WRITES; k++) {
      const uri = `/probe${k}-${Date.now()}`;
      const t0 = performance.now();
      const status = await putRoute(t, 'probe', o.route('probe', `${uri}/*`));
      const t1 = performance.now();
      if (status !== 200 && status !== 201) throw new Error(`admin PUT answered ${status}`);
      acks.push(t1 - t0);
      let first = true;
      for (;;) {
        const res = await fetch(`${t.url}${uri}/world`);
        const text = await res.text();
        if (res.status === 200 && text === o.expected) {
          if (first) nextOk++;
          visible.push(performance.now() - t0);
          break;
        }
        first = false;
        if (performance.now() - t0 > 5000) {
          visible.push(Number.NaN);
          break;
        }
      }
      await sleep(50);
    }
    const logged = rebuildsLogged(t).slice(before).map((r) => r.ms);
    return {
      routes: n,
      writes: WRITES,
      ackMedianMs: median(acks),
      ackMaxMs: Math.max(...acks),
      nextRequestOk: nextOk,
      visibleMedianMs: median(visible),
      visibleMaxMs: Math.max(...visible),
      rebuildMedianMs: median(logged),
      rebuildMaxMs: logged.length ? Math.max(...logged) : Number.NaN,
      startupRebuildMs: rebuildsLogged(t)[0]?.ms,
    };
  } finally {
    await t.stop();
  }
}

async function stallDuringRebuilds(o: RoutesOptions, n: number) {
  const seconds = Math.max(o.durationS, 5);
  const t = await launchNode({ ...o.launch, dataDir: dataDirWith(o, n), adminKey: ADMIN_KEY, logLevel: 'info' });
  const url = `${t.url}/fn${n - 1}/hello/world`;
  const base = { wrk: o.wrk, taskset: o.taskset, core: o.loadCore, script: o.script, url, connections: 10 };
  try {
    await runWrk({ ...base, seconds: Math.max(o.warmupS, 2) });
    const quiet = { ...(await runWrk({ ...base, seconds })), rebuilds: 0 };
    let stop = false;
    let k = 0;
    const before = rebuildsLogged(t).length;
    const churn = (async () => {
      while (!stop) {
        await putRoute(t, 'churn', o.route('churn', `/churn${k++}/*`));
        await sleep(200);
      }
    })();
    const busy = await runWrk({ ...base, seconds });
    stop = true;
    await churn;
    const rebuilds = rebuildsLogged(t).slice(before);
    return { routes: n, seconds, quiet, churn: { ...busy, rebuilds: rebuilds.length, rebuildMedianMs: median(rebuilds.map((r) => r.ms)) } };
  } finally {
    await t.stop();
  }
}

/**
 * The plugin runtime's cost (issue 13's budget), printed, never asserted:
 *
 * 1. Plugin chain: on one gateway (Node, then Bun), paired wrk slices alternate between the openfunction-only route
 *    and the same function route with `request-id` + `cors` + `proxy-rewrite` + `response-rewrite` (headers only);
 *    each pair gives B ÷ A in CPU µs per request of the gateway's process tree, so the machine's drift cancels.
 *    (The openfunction-only route against the last release: `npx tsx bench/ab.ts --a <checkout of it>`.)
 * 2. Services: `routes` routes spread over `services` services (each route `service_id`, the service holding the
 *    function plugin), Node gateway with its file store: PUT a service with a new response header through the Admin
 *    API, then the very next request to one of its routes must carry it; and the rebuild time the gateway logs.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { serializeState } from '../../src/store/file.ts';
import type { StoredItem } from '../../src/store/types.ts';
import { LAUNCHERS, type LaunchContext, launchNode, type Target } from './gateways.ts';
import { fixed, int, markdownTable, median } from './stats.ts';
import { cpuOf, processTree, sleep } from './sys.ts';
import { runWrk } from './wrk.ts';

export interface PluginsOptions {
  launch: LaunchContext;
  wrk: string;
  taskset: string;
  loadCore: number;
  script: string;
  connections: number;
  /** Route `id` at `uri` (the bench's openfunction route). */
  route: (id: string, uri: string) => Record<string, unknown>;
  expected: string;
  runtimes: string[];
  pairs: number;
  sliceS: number;
  routes: number;
  services: number;
  log: (s: string) => void;
}

export const ADMIN_KEY = 'bench-admin-key-0123456789abcdef';

/** The plugins of route B besides the function call: headers only, as a typical function route carries them. */
export const CHAIN = {
  'request-id': {},
  cors: {},
  'proxy-rewrite': { headers: { set: { 'x-from-gateway': 'fngate' } } },
  'response-rewrite': { headers: { set: { 'x-served-by': 'fngate' } } },
};

export function dataDir(o: PluginsOptions, name: string, items: StoredItem[]): string {
  const dir = join(o.launch.dir, `plugins-${name}-${Date.now()}`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileSync(join(dir, 'config.json'), serializeState(items.length, items), { mode: 0o600 });
  return dir;
}

export const item = (key: string, value: Record<string, unknown>, i: number): StoredItem => ({
  key,
  value,
  createdIndex: i + 1,
  modifiedIndex: i + 1,
});

export async function pluginsSection(o: PluginsOptions) {
  const out: Record<string, unknown> = {};
  const chain: Record<string, unknown>[] = [];
  for (const rt of o.runtimes) {
    const launcher = LAUNCHERS[rt];
    if (!launcher) continue;
    const a = o.route('a', '/a/*');
    const b = o.route('b', '/b/*');
    b.plugins = { ...CHAIN, ...(b.plugins as Record<string, unknown>) };
    const t = await launcher({
      ...o.launch,
      dataDir: dataDir(o, rt, [item('/apisix/routes/a', a, 0), item('/apisix/routes/b', b, 1)]),
      adminKey: ADMIN_KEY,
    });
    try {
      chain.push({ runtime: rt, ...(await pairedSlices(o, t)) });
    } finally {
      await t.stop();
    }
  }
  out.chain = chain;
  o.log(
    `\n### Plugin chain: request-id + cors + proxy-rewrite + response-rewrite (headers) on a function route, ${o.pairs} paired ${o.sliceS} s slices on one gateway\n`,
  );
  o.log(
    markdownTable(
      [
        'runtime',
        'openfunction only, CPU µs/req',
        'with the chain, CPU µs/req',
        'B ÷ A (median [min–max])',
        'pairs where B cost more',
      ],
      chain.map((c) => [
        String(c.runtime),
        fixed(c.aMedian as number, 1),
        fixed(c.bMedian as number, 1),
        `${fixed(c.ratio as number, 3)} [${fixed(c.ratioMin as number, 3)}–${fixed(c.ratioMax as number, 3)}]`,
        `${c.bMore}/${o.pairs}`,
      ]),
    ),
  );
  out.services = await serviceChange(o);
  const s = out.services as Awaited<ReturnType<typeof serviceChange>>;
  o.log(
    `\n### A service change with ${int(o.routes)} routes over ${int(o.services)} services (Node, file store, ${s.writes} Admin API PUTs of one service)\n`,
  );
  o.log(
    markdownTable(
      [
        'next request after the ack served the change',
        'PUT acknowledged ms (median / max)',
        'rebuild logged by the gateway ms (median / max)',
        'start-up compile ms',
      ],
      [
        [
          `${s.nextRequestOk}/${s.writes}`,
          `${fixed(s.ackMedianMs, 1)} / ${fixed(s.ackMaxMs, 1)}`,
          `${fixed(s.rebuildMedianMs, 1)} / ${fixed(s.rebuildMaxMs, 1)}`,
          fixed(s.startupMs, 1),
        ],
      ],
    ),
  );
  return out;
}

export async function pairedSlices(o: PluginsOptions, t: Target, paths = { A: '/a/world', B: '/b/world' }) {
  const urls = { A: `${t.url}${paths.A}`, B: `${t.url}${paths.B}` };
  for (const url of Object.values(urls)) {
    const res = await fetch(url);
    const text = await res.text();
    if (res.status !== 200 || text !== o.expected)
      throw new Error(`${url} answered ${res.status}: ${text.slice(0, 200)}`);
  }
  const base = { wrk: o.wrk, taskset: o.taskset, core: o.loadCore, script: o.script, connections: o.connections };
  for (const url of Object.values(urls)) await runWrk({ ...base, url, seconds: 2 }); // warm-up
  const slice = async (url: string) => {
    const before = cpuOf(processTree(t.pid));
    const r = await runWrk({ ...base, url, seconds: o.sliceS });
    if (r.errors > 0 || r.requests === 0) throw new Error(`wrk ${url}: ${r.requests} requests, ${r.errors} errors`);
    return ((cpuOf(processTree(t.pid)) - before) * 1e6) / r.requests;
  };
  const a: number[] = [];
  const b: number[] = [];
  const ratios: number[] = [];
  for (let i = 0; i < o.pairs; i++) {
    let x: number;
    let y: number;
    if (i % 2 === 0) {
      x = await slice(urls.A);
      y = await slice(urls.B);
    } else {
      y = await slice(urls.B);
      x = await slice(urls.A);
    }
    a.push(x);
    b.push(y);
    ratios.push(y / x);
  }
  return {
    a,
    b,
    aMedian: median(a),
    bMedian: median(b),
    ratio: median(ratios),
    ratioMin: Math.min(...ratios),
    ratioMax: Math.max(...ratios),
    bMore: ratios.filter((r) => r > 1).length,
  };
}

async function serviceChange(o: PluginsOptions) {
  const WRITES = 20;
  const fn = o.route('x', '/x').plugins as Record<string, unknown>;
  const items: StoredItem[] = [];
  for (let s = 0; s < o.services; s++)
    items.push(item(`/apisix/services/s${s}`, { id: `s${s}`, plugins: fn }, items.length));
  for (let r = 0; r < o.routes; r++) {
    items.push(
      item(`/apisix/routes/r${r}`, { id: `r${r}`, uri: `/fn${r}/*`, service_id: `s${r % o.services}` }, items.length),
    );
  }
  const t = await launchNode({
    ...o.launch,
    dataDir: dataDir(o, 'services', items),
    adminKey: ADMIN_KEY,
    logLevel: 'info',
  });
  try {
    const logged = () =>
      [...t.proc.stdout().matchAll(/config loaded (\{[^\n]*\})/g)].map((m) => (JSON.parse(m[1]!) as { ms: number }).ms);
    const startupMs = logged()[0] ?? Number.NaN;
    const before = logged().length;
    const acks: number[] = [];
    let nextOk = 0;
    for (let k = 0; k < WRITES; k++) {
      const mark = `v${k}-${Date.now()}`;
      const t0 = performance.now();
      const res = await fetch(`${t.adminUrl}/apisix/admin/services/s0`, {
        method: 'PUT',
        headers: { 'x-api-key': ADMIN_KEY },
        body: JSON.stringify({ plugins: { ...fn, 'response-rewrite': { headers: { set: { 'x-mark': mark } } } } }),
      });
      await res.arrayBuffer();
      acks.push(performance.now() - t0);
      if (res.status !== 200 && res.status !== 201) throw new Error(`PUT /services/s0 answered ${res.status}`);
      // A route of s0, the last one of the table.
      const r = o.routes - o.services;
      const got = await fetch(`${t.url}/fn${r}/world`);
      await got.arrayBuffer();
      if (got.headers.get('x-mark') === mark) nextOk++;
      await sleep(50);
    }
    const rebuilds = logged().slice(before);
    return {
      routes: o.routes,
      services: o.services,
      writes: WRITES,
      nextRequestOk: nextOk,
      ackMedianMs: median(acks),
      ackMaxMs: Math.max(...acks),
      rebuildMedianMs: median(rebuilds),
      rebuildMaxMs: rebuilds.length ? Math.max(...rebuilds) : Number.NaN,
      startupMs,
    };
  } finally {
    await t.stop();
  }
}

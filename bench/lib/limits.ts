/**
 * What protecting a function route costs (issue 14's budget), printed, never asserted:
 *
 * 1. key-auth (1,000 consumers) + limit-count (policy local, a limit never reached) on a function route against the
 *    same route without them: paired wrk slices on one gateway (Node, then Bun), CPU µs per request of the
 *    gateway's process tree, as the plugins section does (bench/lib/plugins.ts). The key comes in the query
 *    (`?apikey=`, hidden from the function with `hide_credentials`), since wrk's script sends no extra headers.
 * 2. limit-count with policy redis against a local redis-server: the same Node gateway, sequential requests on one
 *    keep-alive connection alternating between the plain route and the Redis-limited one; the added p50/p99
 *    latency per request is the difference of the two routes' percentiles.
 */
import { startRedis } from '../../test/helpers/redis.ts';
import { LAUNCHERS, launchNode } from './gateways.ts';
import { ADMIN_KEY, dataDir, item, type PluginsOptions, pairedSlices } from './plugins.ts';
import { fixed, markdownTable, median } from './stats.ts';

const CONSUMERS = 1000;
const LATENCY_REQUESTS = 4000;

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

export async function limitsSection(o: PluginsOptions) {
  const consumers = Array.from({ length: CONSUMERS }, (_, i) =>
    item(`/apisix/consumers/c${i}`, { username: `c${i}`, plugins: { 'key-auth': { key: `key-${i}` } } }, i),
  );
  const protectedPlugins = {
    'key-auth': { hide_credentials: true },
    'limit-count': { count: 1_000_000_000, time_window: 3600 },
  };
  const cpu: Record<string, unknown>[] = [];
  for (const rt of o.runtimes) {
    const launcher = LAUNCHERS[rt];
    if (!launcher) continue;
    const a = o.route('a', '/a/*');
    const b = o.route('b', '/b/*');
    b.plugins = { ...protectedPlugins, ...(b.plugins as Record<string, unknown>) };
    // limit-count alone, to tell its share from key-auth's and the plugin runtime's.
    const c = o.route('c', '/c/*');
    c.plugins = { 'limit-count': protectedPlugins['limit-count'], ...(c.plugins as Record<string, unknown>) };
    const items = [
      ...consumers,
      item('/apisix/routes/a', a, CONSUMERS),
      item('/apisix/routes/b', b, CONSUMERS + 1),
      item('/apisix/routes/c', c, CONSUMERS + 2),
    ];
    const t = await launcher({ ...o.launch, dataDir: dataDir(o, `limits-${rt}`, items), adminKey: ADMIN_KEY });
    try {
      cpu.push({ runtime: rt, what: 'key-auth + limit-count', ...(await pairedSlices(o, t, { A: '/a/world', B: '/b/world?apikey=key-500' })) });
      cpu.push({ runtime: rt, what: 'limit-count alone', ...(await pairedSlices(o, t, { A: '/a/world', B: '/c/world' })) });
    } finally {
      await t.stop();
    }
  }
  o.log(
    `\n### key-auth (${CONSUMERS} consumers) + limit-count (local) on a function route, ${o.pairs} paired ${o.sliceS} s slices on one gateway\n`,
  );
  o.log(
    markdownTable(
      ['runtime', 'B', 'A: function route, CPU µs/req', 'B: with the plugins, CPU µs/req', 'B ÷ A (median [min–max])', 'pairs where B cost more'],
      cpu.map((c) => [
        String(c.runtime),
        String(c.what),
        fixed(c.aMedian as number, 1),
        fixed(c.bMedian as number, 1),
        `${fixed(c.ratio as number, 3)} [${fixed(c.ratioMin as number, 3)}–${fixed(c.ratioMax as number, 3)}]`,
        `${c.bMore}/${o.pairs}`,
      ]),
    ),
  );

  const redis = await startRedis();
  let latency: Record<string, number>;
  try {
    const a = o.route('a', '/a/*');
    const r = o.route('r', '/r/*');
    r.plugins = {
      'limit-count': { count: 1_000_000_000, time_window: 3600, policy: 'redis', redis_host: '127.0.0.1', redis_port: redis.port },
      ...(r.plugins as Record<string, unknown>),
    };
    const items = [item('/apisix/routes/a', a, 0), item('/apisix/routes/r', r, 1)];
    const t = await launchNode({ ...o.launch, dataDir: dataDir(o, 'limits-redis', items), adminKey: ADMIN_KEY });
    try {
      const once = async (path: string) => {
        const t0 = performance.now();
        const res = await fetch(`${t.url}${path}`);
        const text = await res.text();
        const ms = performance.now() - t0;
        if (res.status !== 200 || text !== o.expected) throw new Error(`${path} answered ${res.status}: ${text.slice(0, 200)}`);
        return ms;
      };
      for (let i = 0; i < 500; i++) {
        await once('/a/world');
        await once('/r/world');
      }
      const plain: number[] = [];
      const limited: number[] = [];
      for (let i = 0; i < LATENCY_REQUESTS; i++) {
        if (i % 2 === 0) {
          plain.push(await once('/a/world'));
          limited.push(await once('/r/world'));
        } else {
          limited.push(await once('/r/world'));
          plain.push(await once('/a/world'));
        }
      }
      latency = {
        plainP50: percentile(plain, 50),
        plainP99: percentile(plain, 99),
        redisP50: percentile(limited, 50),
        redisP99: percentile(limited, 99),
        medianPlain: median(plain),
      };
    } finally {
      await t.stop();
    }
  } finally {
    await redis.stop();
  }
  o.log(`\n### limit-count with policy redis (local redis-server), Node, ${LATENCY_REQUESTS} sequential requests per route\n`);
  o.log(
    markdownTable(
      ['route', 'p50 ms', 'p99 ms'],
      [
        ['function route', fixed(latency.plainP50!, 3), fixed(latency.plainP99!, 3)],
        ['with limit-count (redis)', fixed(latency.redisP50!, 3), fixed(latency.redisP99!, 3)],
        ['added by Redis', fixed(latency.redisP50! - latency.plainP50!, 3), fixed(latency.redisP99! - latency.plainP99!, 3)],
      ],
    ),
  );
  return { cpu, latency };
}

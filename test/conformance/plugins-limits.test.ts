/**
 * limit-count, limit-req and limit-conn through real HTTP, on every runtime: the cases of APISIX's
 * t/plugin/limit-count*.t, limit-req.t and limit-conn.t (apisix-wave2.md §4), counters shared by a service's routes,
 * and the Redis policy (Node, Deno, Bun) against a real redis-server: two gateways on one Redis enforce one limit,
 * a Redis that is down or answers garbage gives a 500 or a pass per allow_degradation, never a crash.
 * Schemas and the local store with a fake clock: test/unit/plugins-limits.test.ts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FunctionServers } from '../functions/functions.ts';
import { refusedPort, rmDir, tmpDir } from '../helpers/process.ts';
import { type RedisServer, startFakeRedis, startRedis } from '../helpers/redis.ts';
import { systemSkip } from '../helpers/system.ts';
import { type GatewayUnderTest, gatewayPerFile, RUNTIME, startGateway } from './harness.ts';

let gw: GatewayUnderTest;
let fn: FunctionServers;
gatewayPerFile((g, f) => {
  gw = g;
  fn = f;
});

const echoUpstream = () => ({ type: 'roundrobin', nodes: { [`127.0.0.1:${fn.ports.echo}`]: 1 } });
const slowUpstream = () => ({ type: 'roundrobin', nodes: { [`127.0.0.1:${fn.ports.slow}`]: 1 } });
const route = (uri: string, plugins: Record<string, unknown>, upstream = echoUpstream()) => ({ uri, plugins, upstream });

async function statuses(g: GatewayUnderTest, path: string, n: number, init?: RequestInit): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const res = await g.fetch(path, init);
    await res.arrayBuffer();
    out.push(res.status);
  }
  return out;
}

describe('limit-count (t/plugin/limit-count.t, limit-count2.t, limit-count4.t)', () => {
  test('limit-count.t TEST 3-4: count 2 → 200, 200, 503, 503', async () => {
    await gw.putRoute('lc1', route('/lc1', { 'limit-count': { count: 2, time_window: 60, rejected_code: 503, key: 'remote_addr' } }));
    assert.deepEqual(await statuses(gw, '/lc1', 4), [200, 200, 503, 503]);
  });

  test('limit-count.t TEST 6-7: count 3 → 200, 200, 200, 503', async () => {
    await gw.putRoute('lc2', route('/lc2', { 'limit-count': { count: 3, time_window: 60, rejected_code: 503, key: 'remote_addr' } }));
    assert.deepEqual(await statuses(gw, '/lc2', 4), [200, 200, 200, 503]);
  });

  test('limit-count2.t TEST 3-5: rejected_msg → {"error_msg": …} with the rejected code', async () => {
    await gw.putRoute(
      'lc3',
      route('/lc3', {
        'limit-count': {
          count: 1,
          time_window: 600,
          rejected_code: 503,
          rejected_msg: 'Requests are too frequent, please try again later.',
          key: 'remote_addr',
        },
      }),
    );
    assert.equal((await gw.fetch('/lc3')).status, 200);
    const res = await gw.fetch('/lc3');
    assert.equal(res.status, 503);
    assert.equal(await res.text(), '{"error_msg":"Requests are too frequent, please try again later."}\n');
  });

  test('limit-count2.t: the Admin API refuses a bad rejected_msg, and count with rules, with APISIX messages', async () => {
    const bad = async (conf: unknown) => (await gw.admin('PUT', '/routes/lcbad', route('/lcbad', { 'limit-count': conf }))).json;
    assert.deepEqual(await bad({ count: 1, time_window: 600, rejected_msg: true }), {
      error_msg:
        'failed to check the configuration of plugin limit-count err: property "rejected_msg" validation failed: wrong type: expected string, got boolean',
    });
    assert.deepEqual(await bad({ count: 1, time_window: 600, rejected_msg: '' }), {
      error_msg:
        'failed to check the configuration of plugin limit-count err: property "rejected_msg" validation failed: string too short, expected at least 1, got 0',
    });
    assert.deepEqual(await bad({ count: 1, time_window: 60, rules: [{ count: 1, time_window: 60, key: 'x' }] }), {
      error_msg:
        'failed to check the configuration of plugin limit-count err: count/time_window and rules cannot be specified at the same time',
    });
  });

  test('limit-count4.t TEST 3-4: X-RateLimit-Remaining 1, 0, 0 (the rejected answer has it too) and the limit', async () => {
    await gw.putRoute('lc4', route('/lc4', { 'limit-count': { count: 2, time_window: 60 } }));
    const remaining: (string | null)[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await gw.fetch('/lc4');
      await res.arrayBuffer();
      remaining.push(res.headers.get('x-ratelimit-remaining'));
      assert.equal(res.headers.get('x-ratelimit-limit'), '2');
    }
    assert.deepEqual(remaining, ['1', '0', '0']);
  });

  test('limit-count4.t TEST 1-2: X-RateLimit-Reset is the window first, then decreasing, and never 0 after a rejection', async () => {
    await gw.putRoute('lc5', route('/lc5', { 'limit-count': { count: 1, time_window: 60 } }));
    const first = await gw.fetch('/lc5');
    assert.equal(first.headers.get('x-ratelimit-reset'), '60');
    await new Promise((r) => setTimeout(r, 1100));
    const second = await gw.fetch('/lc5');
    assert.equal(second.status, 503);
    const reset = Number(second.headers.get('x-ratelimit-reset'));
    assert.ok(reset > 0 && reset < 60, `reset ${reset}`);
    assert.match(second.headers.get('x-ratelimit-reset')!, /^\d+(\.\d{1,2})?$/);
    assert.match(await second.text(), /<title>503 Service Temporarily Unavailable<\/title>/);
  });

  test('a limit on a service is shared by its routes (APISIX 3.15+ counter keys)', async () => {
    const svc = await gw.admin('PUT', '/services/lcs', { plugins: { 'limit-count': { count: 2, time_window: 60 } }, upstream: echoUpstream() });
    assert.ok(svc.status === 200 || svc.status === 201, svc.text);
    await gw.putRoute('lcs1', { uri: '/lcs/1', service_id: 'lcs' });
    await gw.putRoute('lcs2', { uri: '/lcs/2', service_id: 'lcs' });
    assert.deepEqual([...(await statuses(gw, '/lcs/1', 1)), ...(await statuses(gw, '/lcs/2', 2))], [200, 200, 503]);
    // Editing an unrelated route resets nothing.
    await gw.putRoute('lcs-other', route('/lcs-other', {}));
    assert.deepEqual(await statuses(gw, '/lcs/1', 1), [503]);
  });

  test('sliding window: the limit holds within the window', async () => {
    await gw.putRoute('lc6', route('/lc6', { 'limit-count': { count: 2, time_window: 60, window_type: 'sliding', rejected_code: 429 } }));
    assert.deepEqual(await statuses(gw, '/lc6', 3), [200, 200, 429]);
  });
});

describe('limit-req (t/plugin/limit-req.t)', () => {
  test('TEST 3-4: rate 4, burst 2 → four requests in a row all pass (the excess waits its turn)', async () => {
    await gw.putRoute('lr1', route('/lr1', { 'limit-req': { rate: 4, burst: 2, rejected_code: 503, key: 'remote_addr' } }));
    assert.deepEqual(await statuses(gw, '/lr1', 4), [200, 200, 200, 200]);
  });

  test('TEST 5-6: rate 0.1, burst 0.1 → 200, 503, 503, 503', async () => {
    await gw.putRoute('lr2', route('/lr2', { 'limit-req': { rate: 0.1, burst: 0.1, rejected_code: 503, key: 'remote_addr' } }));
    assert.deepEqual(await statuses(gw, '/lr2', 4), [200, 503, 503, 503]);
  });

  test('nodelay: the excess within burst passes at once; rejected_msg on the rest', async () => {
    await gw.putRoute(
      'lr3',
      route('/lr3', { 'limit-req': { rate: 0.1, burst: 1, nodelay: true, key: 'remote_addr', rejected_msg: 'slow down' } }),
    );
    const started = performance.now();
    assert.deepEqual(await statuses(gw, '/lr3', 2), [200, 200]);
    assert.ok(performance.now() - started < 5000, 'no 10 s wait with nodelay');
    const res = await gw.fetch('/lr3');
    assert.equal(res.status, 503);
    assert.equal(await res.text(), '{"error_msg":"slow down"}\n');
  });
});

describe('limit-conn (t/plugin/limit-conn.t)', () => {
  const concurrent = async (path: string, n: number) => {
    const all = await Promise.all(
      Array.from({ length: n }, async () => {
        const res = await gw.fetch(path);
        await res.arrayBuffer();
        return res.status;
      }),
    );
    return all.sort();
  };

  test('TEST 3-4: conn 100, burst 50 → 10 concurrent requests all pass', async () => {
    await gw.putRoute(
      'lconn1',
      route('/lconn1', { 'limit-conn': { conn: 100, burst: 50, default_conn_delay: 0.1, rejected_code: 503, key: 'remote_addr' } }, slowUpstream()),
    );
    assert.deepEqual(await concurrent('/lconn1?delay=300', 10), Array(10).fill(200));
  });

  test('TEST 5-6: conn 2, burst 1 → 3 × 200 and 7 × 503 for 10 concurrent requests', async () => {
    await gw.putRoute(
      'lconn2',
      route('/lconn2', { 'limit-conn': { conn: 2, burst: 1, default_conn_delay: 0.1, rejected_code: 503, key: 'remote_addr' } }, slowUpstream()),
    );
    assert.deepEqual(await concurrent('/lconn2?delay=1500', 10), [...Array(3).fill(200), ...Array(7).fill(503)]);
    // All done: the count is back to zero.
    assert.deepEqual(await concurrent('/lconn2?delay=10', 3), [200, 200, 200]);
  });

  test(
    'a request stops counting when its client goes away mid-answer (the log phase runs)',
    { skip: RUNTIME === 'workerd' && 'workerd does not tell a Worker that its client went away (README runtime table)' },
    async () => {
      await gw.putRoute(
        'lconn3',
        route('/lconn3', { 'limit-conn': { conn: 1, burst: 0, default_conn_delay: 0.1, key: 'remote_addr' } }, slowUpstream()),
      );
      const ac = new AbortController();
      const gone = gw.fetch('/lconn3?delay=10000', { signal: ac.signal }).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal((await gw.fetch('/lconn3?delay=10')).status, 503, 'the first request still counts');
      ac.abort();
      await gone;
      let status = 0;
      for (let i = 0; i < 40 && status !== 200; i++) {
        await new Promise((r) => setTimeout(r, 50));
        const res = await gw.fetch('/lconn3?delay=10');
        await res.arrayBuffer();
        status = res.status;
      }
      assert.equal(status, 200, 'the aborted request was uncounted');
    },
  );
});

describe('where the counters live', () => {
  test('Node, Deno, Bun: in the gateway process (a restart starts over); Workers: in a Durable Object (kept)', async () => {
    const dataDir = await tmpDir('fngate-limits-');
    try {
      let g = await startGateway({ dataDir });
      await g.putRoute('keep', route('/keep', { 'limit-count': { count: 1, time_window: 600 } }));
      assert.deepEqual(await statuses(g, '/keep', 2), [200, 503]);
      await g.stop();
      g = await startGateway({ dataDir, key: g.key });
      try {
        // The route comes back from the store; its counter only where the counters outlive the process.
        assert.deepEqual(await statuses(g, '/keep', 1), [RUNTIME === 'workerd' ? 503 : 200]);
      } finally {
        await g.stop();
      }
    } finally {
      await rmDir(dataDir);
    }
  });
});

const redisSkip =
  RUNTIME === 'workerd'
    ? 'Workers cannot open a TCP connection to Redis with a Node client; they count in a Durable Object (README runtime table)'
    : systemSkip('limit plugins with policy redis', ['redis-server'], ['redis-server']);

describe('policy redis (Node, Deno, Bun)', { skip: redisSkip }, () => {
  let redis: RedisServer;
  let gw2: GatewayUnderTest;
  before(async () => {
    redis = await startRedis();
    gw2 = await startGateway();
  });
  after(async () => {
    await gw2?.stop();
    await redis?.stop();
  });
  const redisConf = () => ({ policy: 'redis', redis_host: '127.0.0.1', redis_port: redis.port, redis_timeout: 1000 });

  test('two gateways on one Redis enforce one limit (limit-count, fixed and sliding)', async () => {
    for (const [id, extra] of [
      ['rc1', {}],
      ['rc2', { window_type: 'sliding' }],
    ] as const) {
      // The same route on both: the same owner key and conf, hence the same counter in Redis.
      const r = route(`/${id}`, { 'limit-count': { count: 3, time_window: 60, ...extra, ...redisConf() } });
      await gw.putRoute(id, r);
      await gw2.putRoute(id, r);
      const got = [
        ...(await statuses(gw, `/${id}`, 2)),
        ...(await statuses(gw2, `/${id}`, 1)),
        ...(await statuses(gw, `/${id}`, 1)),
        ...(await statuses(gw2, `/${id}`, 1)),
      ];
      assert.deepEqual(got, [200, 200, 200, 503, 503], `${id}`);
      const res = await gw2.fetch(`/${id}`);
      assert.equal(res.headers.get('x-ratelimit-remaining'), '0');
      assert.equal(res.headers.get('x-ratelimit-limit'), '3');
    }
  });

  test('limit-req and limit-conn on Redis', async () => {
    await gw.putRoute('rr1', route('/rr1', { 'limit-req': { rate: 0.1, burst: 0.1, key: 'remote_addr', ...redisConf() } }));
    await gw2.putRoute('rr1', route('/rr1', { 'limit-req': { rate: 0.1, burst: 0.1, key: 'remote_addr', ...redisConf() } }));
    assert.deepEqual([...(await statuses(gw, '/rr1', 1)), ...(await statuses(gw2, '/rr1', 1))], [200, 503]);
    const connRoute = route(
      '/rconn',
      { 'limit-conn': { conn: 1, burst: 0, default_conn_delay: 0.1, key: 'remote_addr', ...redisConf() } },
      slowUpstream(),
    );
    await gw.putRoute('rconn', connRoute);
    await gw2.putRoute('rconn', connRoute);
    const held = gw.fetch('/rconn?delay=1000').then(async (r) => {
      await r.arrayBuffer();
      return r.status;
    });
    await new Promise((r) => setTimeout(r, 300));
    assert.equal((await gw2.fetch('/rconn?delay=10')).status, 503, 'the other gateway sees the connection');
    assert.equal(await held, 200);
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(await statuses(gw2, '/rconn?delay=10', 1), [200], 'uncounted after it ended');
  });

  test('Redis unreachable: 500 without allow_degradation, a pass with it, within redis_timeout + 100 ms', async () => {
    const dead = await refusedPort();
    const silent = await startFakeRedis('silent');
    try {
      for (const port of [dead, silent.port]) {
        const conf = { count: 1, time_window: 60, policy: 'redis', redis_host: '127.0.0.1', redis_port: port, redis_timeout: 300 };
        await gw.putRoute('rdown', route('/rdown', { 'limit-count': conf }));
        await gw.putRoute('rdeg', route('/rdeg', { 'limit-count': { ...conf, allow_degradation: true } }));
        // The first call may pay for the connection attempt; every later one must answer within the bound.
        await statuses(gw, '/rdown', 1);
        await statuses(gw, '/rdeg', 1);
        for (const [path, want] of [
          ['/rdown', 500],
          ['/rdeg', 200],
        ] as const) {
          const started = performance.now();
          const res = await gw.fetch(path);
          await res.arrayBuffer();
          const ms = performance.now() - started;
          assert.equal(res.status, want, `${path} on port ${port}`);
          assert.ok(ms < 300 + 100, `${path} on port ${port} took ${Math.round(ms)} ms`);
        }
      }
    } finally {
      await silent.close();
    }
  });

  test('a Redis that answers garbage or the wrong shape: 500, or a pass with allow_degradation; never a crash, never a pass without it', async () => {
    for (const mode of ['garbage', 'wrong'] as const) {
      const fake = await startFakeRedis(mode);
      try {
        const conf = { count: 1, time_window: 60, policy: 'redis', redis_host: '127.0.0.1', redis_port: fake.port, redis_timeout: 300 };
        await gw.putRoute('rgarb', route('/rgarb', { 'limit-count': conf }));
        await gw.putRoute('rgarbd', route('/rgarbd', { 'limit-req': { rate: 1, burst: 0, key: 'remote_addr', ...conf, count: undefined, time_window: undefined, allow_degradation: true } }));
        for (let i = 0; i < 3; i++) {
          assert.deepEqual(await statuses(gw, '/rgarb', 1), [500], `${mode}`);
          assert.deepEqual(await statuses(gw, '/rgarbd', 1), [200], `${mode}`);
        }
      } finally {
        await fake.close();
      }
    }
    // Still serving.
    await gw.putRoute('ralive', route('/ralive', {}));
    assert.equal((await gw.fetch('/ralive')).status, 200);
  });
});

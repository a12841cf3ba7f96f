/**
 * limit-count, limit-req, limit-conn: schemas (APISIX's messages), the local counter store with a fake clock, and
 * counter identity through a real in-process gateway (memory store, Node forwarder, a real upstream on loopback):
 * a service's or consumer's limit is shared by its routes, an unrelated edit resets nothing, limit-conn is
 * uncounted when the client goes away. Redis: test/e2e/limits-redis.test.ts; every runtime:
 * test/conformance/plugins-limits.test.ts.
 * Run: node --import tsx --test test/unit/plugins-limits.test.ts
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { silentLogger } from '../../src/core/context.ts';
import { createGateway, type Gateway } from '../../src/core/gateway.ts';
import { LocalLimits } from '../../src/core/limits/backend.ts';
import { checkPluginConf } from '../../src/core/plugins/check.ts';
import { pluginRegistry } from '../../src/core/plugins/index.ts';
import { createNodeForwarder, type NodeForwarder } from '../../src/runtime/node-forwarder.ts';
import { MemoryStore } from '../../src/store/memory.ts';

const registry = pluginRegistry();
const checkMsg = (name: string, conf: unknown) => {
  const r = checkPluginConf(registry, name, conf);
  return r.ok ? 'ok' : (r.message ?? '');
};

describe('schemas (APISIX limit-count2.t, limit-req.t, limit-conn.t)', () => {
  it('limit-count refuses what APISIX refuses, with its messages', () => {
    assert.equal(
      checkMsg('limit-count', { count: 1, time_window: 60, rejected_msg: true }),
      'failed to check the configuration of plugin limit-count err: property "rejected_msg" validation failed: wrong type: expected string, got boolean',
    );
    assert.equal(
      checkMsg('limit-count', { count: 1, time_window: 60, rejected_msg: '' }),
      'failed to check the configuration of plugin limit-count err: property "rejected_msg" validation failed: string too short, expected at least 1, got 0',
    );
    assert.equal(
      checkMsg('limit-count', { count: 1, time_window: 60, rules: [{ count: 1, time_window: 1, key: 'a' }] }),
      'failed to check the configuration of plugin limit-count err: count/time_window and rules cannot be specified at the same time',
    );
    assert.match(checkMsg('limit-count', { count: 1 }), /matches none/);
    assert.match(
      checkMsg('limit-count', { rules: [{ count: 1, time_window: 1, key: 'a' }, { count: 2, time_window: 1, key: 'a' }] }),
      /duplicate key 'a' in rules/,
    );
    assert.match(checkMsg('limit-count', { count: 0, time_window: 60 }), /count/);
    assert.match(checkMsg('limit-count', { count: 1, time_window: 60, policy: 'redis' }), /redis_host/);
    assert.match(checkMsg('limit-count', { count: 1, time_window: 60, rejected_code: 600 }), /rejected_code/);
    assert.match(checkMsg('limit-count', { count: 1, time_window: 99999999999 }), /time_window/);
    assert.equal(checkMsg('limit-count', { count: 2, time_window: 60, key: 'remote_addr' }), 'ok');
    assert.equal(checkMsg('limit-count', { count: '$arg_n', time_window: 60, window_type: 'sliding' }), 'ok');
  });

  it('limit-req needs rate, burst and key; limit-conn one of its two shapes', () => {
    assert.match(checkMsg('limit-req', { burst: 1, key: 'remote_addr' }), /"rate" is required/);
    assert.match(checkMsg('limit-req', { rate: 0, burst: 1, key: 'remote_addr' }), /rate/);
    assert.equal(checkMsg('limit-req', { rate: 0.1, burst: 0.1, key: 'remote_addr', rejected_code: 503 }), 'ok');
    assert.match(checkMsg('limit-conn', { conn: 1, burst: 0, key: 'remote_addr' }), /matches none/);
    assert.equal(checkMsg('limit-conn', { conn: 2, burst: 1, default_conn_delay: 0.1, key: 'remote_addr' }), 'ok');
    assert.equal(
      checkMsg('limit-conn', { default_conn_delay: 0.1, rules: [{ conn: 1, burst: 0, key: '$remote_addr' }] }),
      'ok',
    );
  });
});

describe('LocalLimits (fake clock)', () => {
  it('fixed window: starts at the first hit, remaining counts down, reset is the window then the time left', () => {
    let now = 1_000_000;
    const l = new LocalLimits(() => now);
    assert.deepEqual(l.count('k', 2, 60, false), { allowed: true, remaining: 1, resetS: 60 });
    now += 2500;
    assert.deepEqual(l.count('k', 2, 60, false), { allowed: true, remaining: 0, resetS: 57.5 });
    assert.deepEqual(l.count('k', 2, 60, false), { allowed: false, remaining: 0, resetS: 57.5 });
    now += 57_500;
    assert.equal(l.count('k', 2, 60, false).allowed, true, 'a new window once the old one ended');
  });

  it('sliding window: the last window counts by the share of it still inside the window', () => {
    let now = 60_000 * 100; // start of a window
    const l = new LocalLimits(() => now);
    for (let i = 0; i < 4; i++) assert.equal(l.count('s', 4, 60, true).allowed, true);
    assert.equal(l.count('s', 4, 60, true).allowed, false);
    now += 60_000 + 15_000; // a quarter into the next window: 3 of the last 4 still count
    assert.equal(l.count('s', 4, 60, true).allowed, true);
    assert.equal(l.count('s', 4, 60, true).allowed, false);
  });

  it('leaky bucket (resty.limit.req): delay within burst, reject beyond, leaks at rate', () => {
    let now = 5_000_000;
    const l = new LocalLimits(() => now);
    assert.equal(l.leaky('r', 1, 1), 0);
    assert.equal(l.leaky('r', 1, 1), 1, 'second request at once: excess 1 → waits 1 s');
    assert.equal(l.leaky('r', 1, 1), -1, 'beyond the burst');
    now += 2000;
    assert.equal(l.leaky('r', 1, 1), 0.5 - 0.5, 'leaked: excess back to 0');
  });

  it('connection counts go up to max and back to zero (then the entry is gone)', () => {
    const l = new LocalLimits();
    assert.equal(l.connIn('c', 2), 1);
    assert.equal(l.connIn('c', 2), 2);
    assert.equal(l.connIn('c', 2), -1);
    l.connOut('c');
    l.connOut('c');
    assert.equal(l.size, 0);
  });

  it('a connection count whose decrement never came expires an hour after its last increment', () => {
    let now = 0;
    const l = new LocalLimits(() => now);
    assert.equal(l.connIn('lost', 1), 1);
    now += 3_599_000;
    assert.equal(l.connIn('lost', 1), -1, 'still counted within the hour');
    now += 2000;
    assert.equal(l.connIn('lost', 1), 1, 'dropped after it');
  });

  it('stays bounded: expired windows are evicted, and a full store drops its oldest entries', () => {
    let now = 0;
    const l = new LocalLimits(() => now, 1000);
    for (let i = 0; i < 5000; i++) l.count(`k${i}`, 1, 1, false);
    assert.ok(l.size <= 1000, `size ${l.size}`);
    now += 1001;
    l.count('fresh', 1, 1, false);
    l.sweep();
    assert.equal(l.size, 1);
  });
});

describe('through a gateway', () => {
  let upstreamAddr: string;
  let server: http.Server;
  let store: MemoryStore;
  let gateway: Gateway;
  let forwarder: NodeForwarder;
  const held: http.ServerResponse[] = [];

  before(async () => {
    server = http.createServer((req, res) => {
      if (req.url?.startsWith('/hold')) {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('started\n');
        held.push(res);
        return;
      }
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ url: req.url, headers: req.headers }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    upstreamAddr = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    store = new MemoryStore();
    forwarder = createNodeForwarder();
    gateway = await createGateway({ store, forwarder, logger: silentLogger, clientIp: () => '127.0.0.1' });
  });

  after(async () => {
    for (const r of held) r.destroy();
    await gateway.close();
    await forwarder.close();
    server.closeAllConnections();
    server.close();
  });

  const upstream = () => ({ type: 'roundrobin', nodes: { [upstreamAddr]: 1 } });
  const put = async (key: string, value: Record<string, unknown>) => {
    await store.put(`/apisix/${key}`, { id: key.split('/').pop(), ...value });
    await gateway.refresh();
  };
  async function get(path: string, headers: Record<string, string> = {}) {
    const res = await gateway.serveProxy(new Request(`http://gw.test${path}`, { headers }));
    const text = await res.text();
    await new Promise((r) => setImmediate(r));
    return { status: res.status, headers: res.headers, text };
  }

  it('a service limit is shared by its routes; an unrelated edit resets nothing; a changed limit starts anew', async () => {
    await put('services/s1', { plugins: { 'limit-count': { count: 3, time_window: 60 } }, upstream: upstream() });
    await put('routes/a', { uri: '/svc/a', service_id: 's1' });
    await put('routes/b', { uri: '/svc/b', service_id: 's1' });
    assert.equal((await get('/svc/a')).headers.get('x-ratelimit-remaining'), '2');
    assert.equal((await get('/svc/b')).headers.get('x-ratelimit-remaining'), '1');
    // An edit of another route (and of the routes themselves) recompiles: the counter stays.
    await put('routes/other', { uri: '/other', upstream: upstream() });
    await put('routes/a', { uri: '/svc/a', service_id: 's1', desc: 'edited' });
    const third = await get('/svc/a');
    assert.equal(third.status, 200);
    assert.equal(third.headers.get('x-ratelimit-remaining'), '0');
    const fourth = await get('/svc/b');
    assert.equal(fourth.status, 503);
    assert.equal(fourth.headers.get('x-ratelimit-remaining'), '0');
    assert.equal(fourth.headers.get('x-ratelimit-limit'), '3');
    assert.ok(Number(fourth.headers.get('x-ratelimit-reset')) > 0);
    assert.match(fourth.text, /503 Service Temporarily Unavailable/);
    // APISIX keys by a version of the conf: a changed limit counts from zero.
    await put('services/s1', { plugins: { 'limit-count': { count: 4, time_window: 60 } }, upstream: upstream() });
    assert.equal((await get('/svc/a')).status, 200);
  });

  it('two routes with the same conf count apart; a group counts them together', async () => {
    const conf = { count: 1, time_window: 60, rejected_code: 429 };
    await put('routes/g1', { uri: '/sep/1', plugins: { 'limit-count': conf }, upstream: upstream() });
    await put('routes/g2', { uri: '/sep/2', plugins: { 'limit-count': conf }, upstream: upstream() });
    assert.equal((await get('/sep/1')).status, 200);
    assert.equal((await get('/sep/2')).status, 200);
    const grouped = { ...conf, group: 'shared' };
    await put('routes/g3', { uri: '/grp/1', plugins: { 'limit-count': grouped }, upstream: upstream() });
    await put('routes/g4', { uri: '/grp/2', plugins: { 'limit-count': grouped }, upstream: upstream() });
    assert.equal((await get('/grp/1')).status, 200);
    assert.equal((await get('/grp/2')).status, 429);
  });

  it('a consumer-level limit follows the consumer across routes (key-auth), and not other consumers', async () => {
    await put('consumers/jack', {
      username: 'jack',
      plugins: { 'key-auth': { key: 'jack-key' }, 'limit-count': { count: 2, time_window: 60, key: 'consumer_name' } },
    });
    await put('consumers/rose', { username: 'rose', plugins: { 'key-auth': { key: 'rose-key' } } });
    await put('routes/c1', { uri: '/cons/1', plugins: { 'key-auth': {} }, upstream: upstream() });
    await put('routes/c2', { uri: '/cons/2', plugins: { 'key-auth': {} }, upstream: upstream() });
    const jack = { apikey: 'jack-key' };
    assert.deepEqual(
      [
        (await get('/cons/1', jack)).status,
        (await get('/cons/2', jack)).status,
        (await get('/cons/1', jack)).status,
      ],
      [200, 200, 503],
    );
    const rose = await get('/cons/2', { apikey: 'rose-key' });
    assert.equal(rose.status, 200);
    assert.equal(rose.headers.get('x-ratelimit-limit'), null, 'rose has no limit');
  });

  it('rules: one header set per rule with its prefix; a rule whose key does not resolve is skipped', async () => {
    await put('routes/rules', {
      uri: '/rules',
      plugins: {
        'limit-count': {
          rules: [
            { count: 5, time_window: 60, key: '$http_x_user' },
            { count: 2, time_window: 30, key: '$http_x_team', header_prefix: 'team' },
          ],
        },
      },
      upstream: upstream(),
    });
    const r = await get('/rules', { 'x-user': 'u1', 'x-team': 't1' });
    assert.equal(r.headers.get('x-1-ratelimit-limit'), '5');
    assert.equal(r.headers.get('x-1-ratelimit-remaining'), '4');
    assert.equal(r.headers.get('x-team-ratelimit-limit'), '2');
    assert.equal(r.headers.get('x-team-ratelimit-reset'), '30');
    const onlyUser = await get('/rules', { 'x-user': 'u1' });
    assert.equal(onlyUser.headers.get('x-1-ratelimit-remaining'), '3');
    assert.equal(onlyUser.headers.get('x-team-ratelimit-limit'), null);
    await get('/rules', { 'x-user': 'u2', 'x-team': 't1' });
    const rejected = await get('/rules', { 'x-user': 'u3', 'x-team': 't1' });
    assert.equal(rejected.status, 503);
    assert.equal(rejected.headers.get('x-team-ratelimit-remaining'), '0');
    assert.equal((await get('/rules')).status, 500, 'no rule applies: APISIX answers 500');
  });

  it('key_type var_combination and constant; a count that does not resolve is a 500, or a pass with allow_degradation', async () => {
    await put('routes/combo', {
      uri: '/combo',
      plugins: { 'limit-count': { count: 1, time_window: 60, key: '$http_x_a-$http_x_b', key_type: 'var_combination' } },
      upstream: upstream(),
    });
    assert.equal((await get('/combo', { 'x-a': '1', 'x-b': '2' })).status, 200);
    assert.equal((await get('/combo', { 'x-a': '1', 'x-b': '3' })).status, 200);
    assert.equal((await get('/combo', { 'x-a': '1', 'x-b': '2' })).status, 503);
    await put('routes/const', {
      uri: '/const',
      plugins: { 'limit-count': { count: 1, time_window: 60, key: 'all', key_type: 'constant' } },
      upstream: upstream(),
    });
    assert.equal((await get('/const', { 'x-a': '1' })).status, 200);
    assert.equal((await get('/const', { 'x-a': '2' })).status, 503);
    await put('routes/varcount', {
      uri: '/varcount',
      plugins: { 'limit-count': { count: '$arg_n', time_window: 60 } },
      upstream: upstream(),
    });
    assert.equal((await get('/varcount?n=2')).headers.get('x-ratelimit-limit'), '2');
    assert.equal((await get('/varcount?n=x')).status, 500);
    await put('routes/varcount', {
      uri: '/varcount',
      plugins: { 'limit-count': { count: '$arg_n', time_window: 60, allow_degradation: true } },
      upstream: upstream(),
    });
    assert.equal((await get('/varcount?n=-1')).status, 200);
  });

  it('show_limit_quota_header false: no headers; rejected_msg: the error_msg body', async () => {
    await put('routes/quiet', {
      uri: '/quiet',
      plugins: {
        'limit-count': {
          count: 1,
          time_window: 600,
          show_limit_quota_header: false,
          rejected_msg: 'Requests are too frequent, please try again later.',
        },
      },
      upstream: upstream(),
    });
    const first = await get('/quiet');
    assert.equal(first.headers.get('x-ratelimit-limit'), null);
    const second = await get('/quiet');
    assert.equal(second.status, 503);
    assert.equal(second.text, '{"error_msg":"Requests are too frequent, please try again later."}\n');
    assert.equal(second.headers.get('content-type'), 'text/plain; charset=utf-8');
  });

  it('plugin_metadata renames the headers', async () => {
    await put('plugin_metadata/limit-count', { limit_header: 'X-Limit-Quota', remaining_header: 'X-Quota-Left' });
    await put('routes/meta', { uri: '/meta', plugins: { 'limit-count': { count: 3, time_window: 60 } }, upstream: upstream() });
    const r = await get('/meta');
    assert.equal(r.headers.get('x-limit-quota'), '3');
    assert.equal(r.headers.get('x-quota-left'), '2');
    assert.equal(r.headers.get('x-ratelimit-reset'), '60');
    await store.delete('/apisix/plugin_metadata/limit-count');
    await gateway.refresh();
  });

  it('limit-conn: a request in flight counts until its answer ends or the client goes away', async () => {
    await put('routes/conn', {
      uri: '/hold',
      plugins: { 'limit-conn': { conn: 1, burst: 0, default_conn_delay: 0.1, key: 'remote_addr' } },
      upstream: upstream(),
    });
    const ac = new AbortController();
    const first = await gateway.serveProxy(new Request('http://gw.test/hold', { signal: ac.signal }));
    assert.equal(first.status, 200);
    const reader = first.body!.getReader();
    await reader.read();
    assert.equal((await get('/hold')).status, 503, 'the first one is still in flight');
    // The client goes away: the body is cancelled, the log phase runs, the count goes down.
    await reader.cancel();
    await new Promise((r) => setTimeout(r, 20));
    const again = await gateway.serveProxy(new Request('http://gw.test/hold'));
    assert.equal(again.status, 200);
    await again.body!.cancel();
  });

  it('limit-req: a delayed request gives up when its client goes away', async () => {
    await put('routes/req', {
      uri: '/req',
      plugins: { 'limit-req': { rate: 0.5, burst: 5, key: 'remote_addr' } },
      upstream: upstream(),
    });
    assert.equal((await get('/req')).status, 200);
    const ac = new AbortController();
    const started = performance.now();
    const pending = gateway.serveProxy(new Request('http://gw.test/req', { signal: ac.signal }));
    setTimeout(() => ac.abort(), 50);
    const res = await pending;
    assert.equal(res.status, 499);
    assert.ok(performance.now() - started < 1500, 'it did not wait its 2 s');
  });

  it('a runtime that refuses policy local answers 400 at the Admin API', async () => {
    const s = new MemoryStore();
    const gw = await createGateway({
      store: s,
      forwarder,
      logger: silentLogger,
      adminKeys: ['k'.repeat(32)],
      limits: { localRefused: 'per-isolate counters limit nothing' },
    });
    const res = await gw.admin.request('/apisix/admin/routes/1', {
      method: 'PUT',
      headers: { 'x-api-key': 'k'.repeat(32) },
      body: JSON.stringify({ uri: '/x', plugins: { 'limit-count': { count: 1, time_window: 1 } }, upstream: upstream() }),
    });
    assert.equal(res.status, 400);
    assert.match(await res.text(), /per-isolate counters limit nothing/);
    const redis = await gw.admin.request('/apisix/admin/routes/1', {
      method: 'PUT',
      headers: { 'x-api-key': 'k'.repeat(32) },
      body: JSON.stringify({
        uri: '/x',
        plugins: { 'limit-req': { rate: 1, burst: 0, key: 'remote_addr', policy: 'redis', redis_host: '127.0.0.1' } },
        upstream: upstream(),
      }),
    });
    assert.equal(redis.status, 400);
    assert.match(await redis.text(), /no Redis client/);
    await gw.close();
  });

  it('redis_password is encrypted at rest with DATA_ENCRYPTION_KEY', async () => {
    const s = new MemoryStore();
    const gw = await createGateway({
      store: s,
      forwarder,
      logger: silentLogger,
      adminKeys: ['k'.repeat(32)],
      dataEncryptionKeys: ['a'.repeat(16)],
      limits: { redis: () => ({ eval: () => new Promise(() => {}), close: async () => {} }) },
    });
    const res = await gw.admin.request('/apisix/admin/routes/pw', {
      method: 'PUT',
      headers: { 'x-api-key': 'k'.repeat(32) },
      body: JSON.stringify({
        uri: '/pw',
        plugins: { 'limit-count': { count: 1, time_window: 1, policy: 'redis', redis_host: '127.0.0.1', redis_password: 'hunter2-secret' } },
        upstream: upstream(),
      }),
    });
    assert.equal(res.status, 201, await res.text());
    const stored = JSON.stringify((await s.load()).items);
    assert.ok(!stored.includes('hunter2-secret'), 'the password is not stored in plaintext');
    assert.match(stored, /redis_password/);
    await gw.close();
  });
});

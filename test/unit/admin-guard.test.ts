// The Admin API's front door (src/core/admin/guard.ts wired in src/core/admin/index.ts): the ADMIN_ALLOW
// address list, constant-time key checks, and the limit on failed key checks per client.
// Run: node --import tsx --test test/unit/admin-guard.test.ts
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Hono } from 'hono';
import { keyChecker } from '../../src/core/admin/auth.ts';
import { AuthLimiter, clientBucket, compileAllowList, DEFAULT_ADMIN_ALLOW, displayIp } from '../../src/core/admin/guard.ts';
import type { AdminOptions } from '../../src/core/admin/index.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import { TEST_ADMIN_KEY, testAdmin } from '../helpers/admin.ts';

const KEY = TEST_ADMIN_KEY;

/** An Admin API whose client address is taken from the `x-test-ip` header, with a hand-driven clock. */
function adminApp(opts: Partial<AdminOptions> = {}) {
  const clock = { ms: 1_000_000 };
  const store = new MemoryStore();
  const app = testAdmin({
    store,
    clientIp: (c) => c.req.header('x-test-ip') ?? '',
    allow: [...DEFAULT_ADMIN_ALLOW],
    ...opts,
    authLimit: { now: () => clock.ms, ...opts.authLimit },
  });
  const call = async (ip: string, path = '/routes', init: { method?: string; key?: string | null; body?: unknown } = {}) => {
    const headers: Record<string, string> = { 'x-test-ip': ip };
    if (init.key !== null) headers['x-api-key'] = init.key ?? KEY;
    const res = await app.request(`http://admin.test/apisix/admin${path}`, {
      method: init.method ?? 'GET',
      headers,
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
    });
    const text = await res.text();
    let json: { error_msg?: string } | undefined;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, headers: res.headers, text, json };
  };
  return { app, store, clock, call };
}

describe('ADMIN_ALLOW', () => {
  test('default: 127.0.0.0/24 and ::1 (also IPv4 loopback as a dual-stack socket reports it)', async () => {
    const { call } = adminApp();
    for (const ip of ['127.0.0.1', '127.0.0.254', '::1', '::ffff:127.0.0.1']) {
      assert.equal((await call(ip)).status, 200, ip);
    }
    for (const ip of ['127.0.1.1', '10.0.0.1', '192.168.1.2', '::2', 'fe80::1', '::ffff:10.0.0.1', '', 'garbage']) {
      const res = await call(ip);
      assert.equal(res.status, 403, ip);
      assert.equal(res.headers.get('content-type'), 'application/json');
    }
  });

  test('403 body names the client address as people write it', async () => {
    const { call } = adminApp();
    assert.deepEqual((await call('10.1.2.3')).json, { error_msg: 'access from 10.1.2.3 is not allowed' });
    assert.deepEqual((await call('::ffff:10.1.2.3')).json, { error_msg: 'access from 10.1.2.3 is not allowed' });
    assert.deepEqual((await call('2001:db8::7')).json, { error_msg: 'access from 2001:db8::7 is not allowed' });
    assert.deepEqual((await call('')).json, { error_msg: 'access from an unknown address is not allowed' });
  });

  test('refused before the key is looked at, on every admin path and verb (HEAD, OPTIONS too)', async () => {
    const { call, store } = adminApp();
    for (const [method, path] of [
      ['GET', ''],
      ['HEAD', ''],
      ['OPTIONS', '/routes'],
      ['PUT', '/routes/1'],
      ['DELETE', '/routes/1'],
      ['GET', '/schema/route'],
      ['GET', '/plugins/list'],
    ] as const) {
      const res = await call('10.0.0.9', path, { method, body: method === 'PUT' ? { uri: '/x', plugins: {} } : undefined });
      assert.equal(res.status, 403, `${method} ${path}`);
    }
    assert.equal((await store.load()).items.length, 0);
  });

  test('CIDRs and exact addresses, IPv4 and IPv6; 0.0.0.0/0 opens IPv4, ::/0 opens IPv6', async () => {
    const a = adminApp({ allow: ['10.0.0.0/8', '192.168.1.7', '2001:db8::/32'] });
    assert.equal((await a.call('10.200.3.4')).status, 200);
    assert.equal((await a.call('192.168.1.7')).status, 200);
    assert.equal((await a.call('192.168.1.8')).status, 403);
    assert.equal((await a.call('2001:db8:1::1')).status, 200);
    assert.equal((await a.call('2001:db9::1')).status, 403);
    assert.equal((await a.call('127.0.0.1')).status, 403, 'loopback is not implied once ADMIN_ALLOW is set');
    const open4 = adminApp({ allow: ['0.0.0.0/0'] });
    assert.equal((await open4.call('203.0.113.9')).status, 200);
    assert.equal((await open4.call('::ffff:203.0.113.9')).status, 200);
    assert.equal((await open4.call('2001:db8::1')).status, 403);
    const openAll = adminApp({ allow: ['0.0.0.0/0', '::/0'] });
    assert.equal((await openAll.call('2001:db8::1')).status, 200);
  });

  test('no allow list given (an embedding without ADMIN_ALLOW): no address check', async () => {
    const { call } = adminApp({ allow: undefined });
    assert.equal((await call('203.0.113.9')).status, 200);
  });

  test('in a combined app (Workers) the guard only runs on /apisix/admin paths', async () => {
    const admin = testAdmin({
      clientIp: () => '203.0.113.1',
      allow: ['127.0.0.1'],
    });
    const proxy = new Hono().all('*', (c) => c.text('proxied'));
    const combined = new Hono().route('/', admin).route('/', proxy);
    assert.equal((await combined.request('/apisix/admin/routes', { headers: { 'x-api-key': KEY } })).status, 403);
    for (const p of ['/hello', '/apisix', '/apisix/adminx', '/apisix//admin/routes']) {
      const res = await combined.request(p);
      assert.equal(await res.text(), 'proxied', p);
    }
  });

  test('compileAllowList refuses what is not an address or CIDR', () => {
    for (const bad of ['localhost', '10.0.0.0/33', '::/129', '1.2.3', '*', '10.0.0.1/']) {
      assert.throws(() => compileAllowList([bad]), /invalid IP address/, bad);
    }
  });
});

describe('failed key checks are rate limited per client', () => {
  test('10 wrong keys → 401 each; then 429 with Retry-After, even with the right key, until the window passes', async () => {
    const { call, clock } = adminApp();
    for (let i = 0; i < 10; i++) {
      const res = await call('127.0.0.2', '/routes', { key: `wrong-${i}` });
      assert.equal(res.status, 401, `attempt ${i + 1}`);
      assert.deepEqual(res.json, { error_msg: 'failed to check token', description: 'wrong apikey' });
    }
    const blocked = await call('127.0.0.2');
    assert.equal(blocked.status, 429);
    assert.equal(blocked.headers.get('retry-after'), '60');
    assert.match(blocked.json!.error_msg!, /too many failed admin key checks/);
    assert.equal((await call('127.0.0.2', '/routes', { key: 'wrong' })).status, 429);

    // Another client is not affected.
    assert.equal((await call('127.0.0.3')).status, 200);

    clock.ms += 30_500;
    const later = await call('127.0.0.2');
    assert.equal(later.status, 429);
    assert.equal(later.headers.get('retry-after'), '30');

    clock.ms += 29_500;
    assert.equal((await call('127.0.0.2')).status, 200, 'still blocked after the window');
  });

  test('a success clears the count; failures spread over more than a window never block', async () => {
    const { call, clock } = adminApp();
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 9; i++) assert.equal((await call('127.0.0.4', '/routes', { key: 'bad' })).status, 401);
      assert.equal((await call('127.0.0.4')).status, 200);
    }
    for (let i = 0; i < 30; i++) {
      assert.equal((await call('127.0.0.5', '/routes', { key: 'bad' })).status, 401, `attempt ${i + 1}`);
      clock.ms += 7_000; // 9 failures per 63 s window at most
    }
  });

  test('a missing key is not counted (it guesses nothing)', async () => {
    const { call } = adminApp();
    for (let i = 0; i < 20; i++) assert.equal((await call('127.0.0.6', '/routes', { key: null })).status, 401);
    assert.equal((await call('127.0.0.6')).status, 200);
  });

  test('IPv6 clients are counted per /64', async () => {
    const { call } = adminApp({ allow: ['::/0'] });
    for (let i = 0; i < 10; i++) await call(`2001:db8:0:1::${i + 1}`, '/routes', { key: 'bad' });
    assert.equal((await call('2001:db8:0:1:ffff::1')).status, 429);
    assert.equal((await call('2001:db8:0:2::1')).status, 200);
  });

  test('custom limits', async () => {
    const { call } = adminApp({ authLimit: { maxFailures: 2, windowMs: 5_000 } });
    await call('127.0.0.7', '/routes', { key: 'bad' });
    await call('127.0.0.7', '/routes', { key: 'bad' });
    const res = await call('127.0.0.7');
    assert.equal(res.status, 429);
    assert.equal(res.headers.get('retry-after'), '5');
  });

  test('memory is bounded: beyond maxClients the least recently seen client is dropped', () => {
    let now = 0;
    const lim = new AuthLimiter({ maxClients: 100, now: () => now });
    for (let i = 0; i < 10_000; i++) {
      lim.fail(`10.0.${i >> 8}.${i & 255}`);
      now++;
    }
    assert.equal(lim.size, 100);
    // The most recent clients are kept, and a blocked one stays blocked while it keeps being seen.
    for (let i = 0; i < 10; i++) lim.fail('203.0.113.1');
    for (let i = 0; i < 99; i++) lim.fail(`198.51.100.${i}`);
    assert.ok(lim.blockedFor('203.0.113.1') > 0);
    assert.equal(lim.size, 100);
  });
});

describe('helpers', () => {
  test('clientBucket: IPv4 as is (IPv4-mapped too), IPv6 by /64', () => {
    assert.equal(clientBucket('10.1.2.3'), '10.1.2.3');
    assert.equal(clientBucket('::ffff:10.1.2.3'), '10.1.2.3');
    assert.equal(clientBucket('2001:db8:0:1::1'), clientBucket('2001:0db8:0000:0001:ffff:ffff:ffff:ffff'));
    assert.notEqual(clientBucket('2001:db8:0:1::1'), clientBucket('2001:db8:0:2::1'));
    assert.equal(clientBucket('fe80::1%eth0'), clientBucket('fe80::2'));
    assert.equal(clientBucket(''), '');
  });

  test('displayIp', () => {
    assert.equal(displayIp('::ffff:127.0.0.1'), '127.0.0.1');
    assert.equal(displayIp('::1'), '::1');
  });

  test('keyChecker: equal keys only; keys of any length; compares SHA-256 digests without early exit', async () => {
    const c = await keyChecker([KEY, 'second-key-abcdefghijkl']);
    assert.equal(await c.check(KEY), true);
    assert.equal(await c.check('second-key-abcdefghijkl'), true);
    for (const bad of ['', KEY.slice(0, -1), `${KEY}x`, KEY.toUpperCase(), 'x'.repeat(10_000)]) {
      assert.equal(await c.check(bad), false, bad.slice(0, 40));
    }
    assert.equal(await (await keyChecker([])).check(''), false, 'no keys: nothing is accepted');
  });
});

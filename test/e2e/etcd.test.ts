// Two (and more) Node gateway processes on one real etcd, as an APISIX fleet runs: propagation of Admin API writes
// between instances, config written straight into etcd in APISIX's shape, unknown plugins, global rules and
// plugin configs a control plane wrote, POST ids, concurrent PATCHes from two instances, writes through a gateway
// whose watch trails etcd, an etcd restart, a watch that fell behind a compaction, a cut connection, endpoint
// failover and ETCD_PREFIX. The tests run in order and build on each other's routes; the last one wipes etcd.
// Then, on an etcd of their own: ETCD_USER / ETCD_PASSWORD against etcd with authentication enabled.
// Needs etcd and etcdctl (Debian: etcd-server, etcd-client; .ci/run installs them).
// Run: npm run build && node --import tsx --test test/e2e/etcd.test.ts
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer, request as httpRequest } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { delimiter, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { type GatewayUnderTest, startGateway } from '../conformance/harness.ts';
import { type FunctionServers, startFunctions } from '../functions/functions.ts';
import {
  ETCD_INSTALL_HINT,
  type EtcdServer,
  etcdCompact,
  etcdGet,
  etcdPut,
  etcdRevision,
  etcdToken,
  startEtcd,
} from '../helpers/etcd.ts';
import { refusedPort } from '../helpers/process.ts';
import { systemSkip } from '../helpers/system.ts';

const NO_ETCD = systemSkip('etcd store tests', ['etcd', 'etcdctl'], ['etcd-server', 'etcd-client']);

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const execFileP = promisify(execFile);

let etcd: EtcdServer;
let fns: FunctionServers;
/** The two instances of the fleet: A takes the writes, B must follow. */
let A: GatewayUnderTest;
let B: GatewayUnderTest;
const gateways: GatewayUnderTest[] = [];
const proxies: EtcdProxy[] = [];

async function gateway(env: Record<string, string>): Promise<GatewayUnderTest> {
  const gw = await startGateway({ env });
  gateways.push(gw);
  return gw;
}

before(async () => {
  if (NO_ETCD) return;
  [etcd, fns] = await Promise.all([startEtcd(), startFunctions()]);
  [A, B] = await Promise.all([gateway({ ETCD_HOST: etcd.endpoint }), gateway({ ETCD_HOST: etcd.endpoint })]);
});

after(async () => {
  await Promise.all(gateways.map((gw) => gw.stop()));
  await Promise.all(proxies.map((p) => p.close()));
  await fns?.close();
  await etcd?.stop();
});

// ---------------------------------------------------------------------------------------------
// Helpers

const fnUri = (name: string) => `${fns.urls['function-sample']}/${name}`;
/** A route served by the `function-sample` function, answering `Hello, <name>!`. */
const fnRoute = (uri: string, name: string, extra: Record<string, unknown> = {}) => ({
  uri,
  plugins: { openfunction: { function_uri: fnUri(name) } },
  ...extra,
});

interface Hit {
  status: number;
  text: string;
}

async function hit(gw: GatewayUnderTest, path: string): Promise<Hit> {
  try {
    const res = await gw.fetch(path);
    return { status: res.status, text: await res.text() };
  } catch (err) {
    return { status: 0, text: String(err) };
  }
}

const hello = (name: string) => (h: Hit) => h.status === 200 && h.text === `Hello, ${name}!`;
const is404 = (h: Hit) => h.status === 404;

/**
 * Poll `path` on `gw` every `intervalMs` until `ok`; returns the ms since `since`. Fails with the last answer when
 * `timeoutMs` (counted from `since`) passes first.
 */
async function until(
  gw: GatewayUnderTest,
  path: string,
  ok: (h: Hit) => boolean,
  { since = performance.now(), timeoutMs = 5000, intervalMs = 20 } = {},
): Promise<number> {
  for (;;) {
    const last = await hit(gw, path);
    const ms = performance.now() - since;
    if (ok(last)) return ms;
    if (ms > timeoutMs) {
      assert.fail(
        `${gw.proxyUrl}${path}: no wanted answer within ${timeoutMs} ms; last: ${last.status} ${last.text.slice(0, 300)}`,
      );
    }
    await sleep(intervalMs);
  }
}

/** Poll an Admin API GET until it answers `status`. */
async function waitForAdmin(gw: GatewayUnderTest, path: string, status: number, timeoutMs = 5000): Promise<void> {
  const t0 = performance.now();
  for (;;) {
    const res = await gw.admin('GET', path);
    if (res.status === status) return;
    if (performance.now() - t0 > timeoutMs) assert.fail(`GET ${path} on ${gw.adminUrl}: ${res.status} ${res.text}`);
    await sleep(20);
  }
}

const logs = (gw: GatewayUnderTest) => gw.proc.stdout() + gw.proc.stderr();
const count = (hay: string, needle: string) => hay.split(needle).length - 1;
const round = (ms: number) => Math.round(ms);

function onPath(bin: string): boolean {
  return (process.env.PATH ?? '').split(delimiter).some((d) => d !== '' && existsSync(join(d, bin)));
}

/** Run `etcdctl` (v3 API) against `endpoint`. Fails when it is not installed: CI installs it, the tests never skip. */
async function etcdctl(endpoint: string, ...args: string[]): Promise<string> {
  if (!onPath('etcdctl')) throw new Error(`etcdctl is not installed (no etcdctl on the PATH); install it with: ${ETCD_INSTALL_HINT}`);
  const { stdout } = await execFileP('etcdctl', ['--endpoints', endpoint, ...args], {
    env: { ...process.env, ETCDCTL_API: '3' },
  });
  return stdout;
}

/** Write a key straight into etcd as an operator would: `etcdctl put`. */
async function etcdctlPut(key: string, value: string): Promise<void> {
  await etcdctl(etcd.endpoint, 'put', key, value);
}

/** Delete a key straight in etcd: `etcdctl del`. */
async function etcdctlDel(key: string): Promise<void> {
  await etcdctl(etcd.endpoint, 'del', key);
}

/**
 * A loopback HTTP proxy in front of etcd, to act on one gateway's connection to etcd only: `hold()` keeps new
 * watch requests waiting until `release()`; `down()` drops every connection and refuses new ones until `up()`.
 */
interface EtcdProxy {
  url: string;
  /** Watch requests held so far. */
  held(): number;
  /** The request headers of every watch request seen so far. */
  watchHeaders(): Array<Record<string, string | string[] | undefined>>;
  hold(): void;
  release(): void;
  down(): void;
  up(): void;
  close(): Promise<void>;
}

async function startEtcdProxy(target: string): Promise<EtcdProxy> {
  const t = new URL(target);
  const sockets = new Set<Socket>();
  let isDown = false;
  let gate: { promise: Promise<void>; open: () => void } | undefined;
  let heldCount = 0;
  const watchHeaders: Array<Record<string, string | string[] | undefined>> = [];
  const server = createServer((req, res) => {
    if (req.url === '/v3/watch') watchHeaders.push({ ...req.headers });
    const forward = () => {
      if (isDown) {
        res.destroy();
        return;
      }
      const up = httpRequest(
        { host: t.hostname, port: t.port, method: req.method, path: req.url, headers: req.headers, agent: false },
        (ur) => {
          res.writeHead(ur.statusCode ?? 502, ur.headers);
          ur.pipe(res);
        },
      );
      up.on('error', () => res.destroy());
      res.on('close', () => up.destroy());
      req.pipe(up);
    };
    if (req.url === '/v3/watch' && gate) {
      heldCount++;
      void gate.promise.then(forward);
    } else {
      forward();
    }
  });
  server.on('connection', (s: Socket) => {
    if (isDown) {
      s.destroy();
      return;
    }
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  const proxy: EtcdProxy = {
    url: `http://127.0.0.1:${port}`,
    held: () => heldCount,
    watchHeaders: () => watchHeaders,
    hold() {
      if (gate) return;
      let open = () => {};
      const promise = new Promise<void>((r) => {
        open = r;
      });
      gate = { promise, open };
    },
    release() {
      gate?.open();
      gate = undefined;
    },
    down() {
      isDown = true;
      for (const s of sockets) s.destroy();
    },
    up() {
      isDown = false;
    },
    async close() {
      proxy.release();
      proxy.down();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
  proxies.push(proxy);
  return proxy;
}

// ---------------------------------------------------------------------------------------------

describe('two gateways on one etcd', { skip: NO_ETCD }, () => {
  test('a PUT, a PATCH and a DELETE through A are served by B within 1 s', async (t) => {
    let t0 = performance.now();
    const put = await A.putRoute('prop', fnRoute('/prop', 'put-1'));
    assert.equal(put.status, 201, put.text);
    const putAck = performance.now() - t0;
    // Read-your-writes on the writing instance: served as soon as the Admin API answered.
    assert.ok(hello('put-1')(await hit(A, '/prop')), 'A serves its own write at once');
    const putMs = await until(B, '/prop', hello('put-1'), { since: t0, timeoutMs: 1000 });

    t0 = performance.now();
    const patch = await A.admin('PATCH', '/routes/prop', {
      plugins: { openfunction: { function_uri: fnUri('patched') } },
    });
    assert.equal(patch.status, 200, patch.text);
    assert.equal(patch.json.value.uri, '/prop');
    assert.ok(hello('patched')(await hit(A, '/prop')));
    const patchMs = await until(B, '/prop', hello('patched'), { since: t0, timeoutMs: 1000 });

    t0 = performance.now();
    const del = await A.admin('DELETE', '/routes/prop');
    assert.equal(del.status, 200, del.text);
    assert.ok(is404(await hit(A, '/prop')));
    const delMs = await until(B, '/prop', is404, { since: t0, timeoutMs: 1000 });

    // B's Admin API reads its mirror of etcd: the route is gone there too.
    assert.equal((await B.admin('GET', '/routes/prop')).status, 404);
    t.diagnostic(
      `B serves: PUT after ${round(putMs)} ms (A acked in ${round(putAck)} ms), PATCH after ${round(patchMs)} ms, DELETE after ${round(delMs)} ms`,
    );
  });

  test("a route written straight into etcd in APISIX's shape is served by both and listed with its indexes", async () => {
    const value = JSON.stringify({
      uri: '/direct',
      plugins: { openfunction: { function_uri: fnUri('x') } },
      id: '1',
      create_time: 1700000000,
      update_time: 1700000000,
    });
    const t0 = performance.now();
    await etcdctlPut('/apisix/routes/1', value);
    await until(A, '/direct', hello('x'), { since: t0, timeoutMs: 1000 });
    await until(B, '/direct', hello('x'), { since: t0, timeoutMs: 1000 });

    const { kv } = await etcdGet(etcd.endpoint, '/apisix/routes/1');
    assert.ok(kv);
    for (const gw of [A, B]) {
      const got = await gw.admin('GET', '/routes/1');
      assert.equal(got.status, 200, got.text);
      assert.deepEqual(got.json, {
        key: '/apisix/routes/1',
        value: JSON.parse(value),
        createdIndex: kv.createRevision,
        modifiedIndex: kv.modRevision,
      });
      const list = await gw.admin('GET', '/routes');
      assert.ok(
        list.json.list.some((i: { key: string }) => i.key === '/apisix/routes/1'),
        `route 1 in the list of ${gw.adminUrl}`,
      );
    }
  });

  test('a PUT through B keeps the create_time of a route written into etcd; update_time moves', async () => {
    const before = Math.floor(Date.now() / 1000);
    const res = await B.putRoute('1', fnRoute('/direct', 'x-again'));
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.value.create_time, 1700000000);
    assert.ok(res.json.value.update_time >= before, `update_time ${res.json.value.update_time}`);
    const stored = JSON.parse((await etcdGet(etcd.endpoint, '/apisix/routes/1')).kv!.value);
    assert.equal(stored.create_time, 1700000000);
    assert.equal(stored.id, '1');
    await until(A, '/direct', hello('x-again'), { timeoutMs: 1000 });
  });

  test('a route with upstream_id and its upstream written straight into etcd is served; an upstream change follows', async () => {
    await etcdctlPut(
      '/apisix/upstreams/u1',
      JSON.stringify({ id: 'u1', type: 'roundrobin', nodes: { [`127.0.0.1:${fns.ports.echo}`]: 1 } }),
    );
    // No `id` in the value: the key's suffix is the id (APISIX's data plane does the same).
    await etcdctlPut('/apisix/routes/up1', JSON.stringify({ uri: '/via-upstream', upstream_id: 'u1' }));
    const viaEcho = (h: Hit) => h.status === 200 && JSON.parse(h.text).url === '/via-upstream?q=1';
    for (const gw of [A, B]) await until(gw, '/via-upstream?q=1', viaEcho, { timeoutMs: 1000 });

    await etcdctlPut(
      '/apisix/upstreams/u1',
      // The array form of nodes, as dashboards and the data plane write it.
      JSON.stringify({
        id: 'u1',
        type: 'roundrobin',
        nodes: [{ host: '127.0.0.1', port: fns.ports['function-sample'], weight: 1 }],
        create_time: 1700000000,
        update_time: 1700000001,
      }),
    );
    for (const gw of [A, B]) await until(gw, '/via-upstream', hello('via-upstream'), { timeoutMs: 1000 });

    // The Admin API sees the stored upstream (a delete is refused while route up1 uses it).
    const del = await A.admin('DELETE', '/upstreams/u1');
    assert.equal(del.status, 400, del.text);
    assert.match(del.json.error_msg, /route \[up1\] is still using it/);
  });

  test('unknown plugins in etcd: an observability one is skipped (logged once), any other one answers 503', async (t) => {
    await etcdctlPut(
      '/apisix/routes/prom',
      JSON.stringify({
        uri: '/prom',
        plugins: { zipkin: {}, openfunction: { function_uri: fnUri('prom') } },
        id: 'prom',
      }),
    );
    await etcdctlPut(
      '/apisix/routes/ka',
      JSON.stringify({
        uri: '/ka',
        plugins: { 'ldap-auth': {}, openfunction: { function_uri: fnUri('ka') } },
        id: 'ka',
      }),
    );
    // Not auth plugins, and still not safe to drop: they decide or rewrite what is served (fail closed).
    const others = ['workflow', 'serverless-pre-function', 'ext-plugin-pre-req', 'traffic-split', 'ai-rate-limiting'];
    for (const name of others) {
      await etcdctlPut(
        `/apisix/routes/other-${name}`,
        JSON.stringify({ uri: `/other-${name}`, plugins: { [name]: {}, openfunction: { function_uri: fnUri(name) } } }),
      );
    }
    for (const gw of [A, B]) {
      await until(gw, '/prom', hello('prom'), { timeoutMs: 1000 });
      for (const [path, name] of [['/ka', 'ldap-auth'], ...others.map((n) => [`/other-${n}`, n])] as const) {
        await until(gw, path, (h) => h.status === 503, { timeoutMs: 1000 });
        const res = await gw.fetch(path);
        assert.equal(res.status, 503);
        const body = (await res.json()) as { error_msg?: string };
        assert.ok(body.error_msg?.includes(`plugin ${name}`), `${path}: ${JSON.stringify(body)}`);
      }
    }

    // Several later config changes, each rebuilding both snapshots.
    for (let i = 0; i < 6; i++) {
      if (i % 2 === 0) await A.putRoute(`churn-${i}`, fnRoute(`/churn-${i}`, `churn-${i}`));
      else
        await etcdPut(etcd.endpoint, `/apisix/routes/churn-${i}`, JSON.stringify(fnRoute(`/churn-${i}`, `churn-${i}`)));
    }
    for (const gw of [A, B]) await until(gw, '/churn-5', hello('churn-5'), { timeoutMs: 1000 });

    for (const [name, gw] of [
      ['A', A],
      ['B', B],
    ] as const) {
      const out = logs(gw);
      const prom = count(out, 'route prom: plugin zipkin is not available');
      const ka = count(out, 'route ka: plugin ldap-auth is not available');
      t.diagnostic(`${name}: zipkin warning ×${prom}, ldap-auth warning ×${ka}`);
      assert.equal(prom, 1, `${name} logs the skipped zipkin plugin once, not on every rebuild:\n${out}`);
      assert.equal(ka, 1, `${name} logs the missing ldap-auth plugin once:\n${out}`);
    }
  });

  test('global rules in etcd: a global plugin fngate lacks makes every request answer 503 until it is removed; a global zipkin is skipped', async (t) => {
    // A global plugin fngate does not have: one that only observes traffic can be skipped; one that may guard
    // access cannot, and serving every route without it would be worse than serving nothing.
    await etcdctlPut('/apisix/global_rules/', 'init_dir');
    await etcdctlPut('/apisix/global_rules/obs', JSON.stringify({ id: 'obs', plugins: { zipkin: {} } }));
    await etcdctlPut('/apisix/routes/gr-1', JSON.stringify(fnRoute('/gr-1', 'gr-1')));
    for (const gw of [A, B]) await until(gw, '/gr-1', hello('gr-1'), { timeoutMs: 1000 });

    await etcdctlPut('/apisix/global_rules/guard', JSON.stringify({ id: 'guard', plugins: { 'ldap-auth': {} } }));
    const blocked = (h: Hit) => h.status === 503 && /global rules/.test(h.text) && /ldap-auth/.test(h.text);
    for (const gw of [A, B]) {
      await until(gw, '/gr-1', blocked, { timeoutMs: 1000 });
      for (const path of ['/direct', '/prom', '/no-such-route']) {
        const h = await hit(gw, path);
        assert.ok(blocked(h), `${path}: ${h.status} ${h.text}`);
      }
      // The Admin API still answers: it is how the rule gets looked at and the routes fixed.
      assert.equal((await gw.admin('GET', '/routes/gr-1')).status, 200);
    }
    // Rebuilds while blocked (an Admin API write, a direct write): still blocked, and logged once.
    await A.putRoute('gr-2', fnRoute('/gr-2', 'gr-2'));
    await etcdctlPut('/apisix/routes/gr-3', JSON.stringify(fnRoute('/gr-3', 'gr-3')));
    for (const gw of [A, B]) await until(gw, '/gr-3', blocked, { timeoutMs: 1000 });
    assert.ok(blocked(await hit(A, '/gr-2')));

    await etcdctlDel('/apisix/global_rules/guard');
    for (const gw of [A, B]) {
      await until(gw, '/gr-3', hello('gr-3'), { timeoutMs: 1000 });
      assert.ok(hello('gr-2')(await hit(gw, '/gr-2')));
      assert.ok(is404(await hit(gw, '/no-such-route')));
    }
    await etcdctlDel('/apisix/global_rules/obs');
    for (const [name, gw] of [
      ['A', A],
      ['B', B],
    ] as const) {
      const out = logs(gw);
      assert.equal(count(out, 'global rule guard: plugin ldap-auth is not available'), 1, `${name}:\n${out}`);
      assert.equal(count(out, 'global rule obs: plugin zipkin is not available in fngate; it is skipped'), 1, `${name}:\n${out}`);
      t.diagnostic(`${name} logged: ${out.split('\n').find((l) => l.includes('global rule guard')) ?? ''}`);
    }
  });

  test('a route naming a plugin config or a service (written by a control plane) runs their plugins; a dangling one answers 503/404', async () => {
    await etcdctlPut('/apisix/plugin_configs/pc1', JSON.stringify({ id: 'pc1', plugins: { 'key-auth': {} } }));
    await etcdctlPut('/apisix/services/s1', JSON.stringify({ id: 's1', plugins: { 'ip-restriction': { whitelist: ['10.0.0.0/8'] } } }));
    await etcdctlPut(
      '/apisix/routes/pc',
      JSON.stringify({ id: 'pc', uri: '/pc', plugin_config_id: 'pc1', plugins: { openfunction: { function_uri: fnUri('pc') } } }),
    );
    await etcdctlPut(
      '/apisix/routes/svc',
      JSON.stringify({ id: 'svc', uri: '/svc', service_id: 's1', plugins: { openfunction: { function_uri: fnUri('svc') } } }),
    );
    await etcdctlPut('/apisix/routes/dangling', JSON.stringify({ id: 'dangling', uri: '/dangling', plugin_config_id: 'nope', plugins: {} }));
    for (const gw of [A, B]) {
      await until(gw, '/pc', (h) => h.status === 401, { timeoutMs: 1000 });
      await until(gw, '/svc', (h) => h.status === 403, { timeoutMs: 1000 });
      await until(gw, '/dangling', (h) => h.status === 503 && h.text.includes('plugin config nope of route dangling does not exist'), {
        timeoutMs: 1000,
      });
    }
    // The plugin config goes away: the route that named it answers 503 rather than run without it.
    await etcdctlDel('/apisix/plugin_configs/pc1');
    for (const gw of [A, B]) await until(gw, '/pc', (h) => h.status === 503, { timeoutMs: 1000 });
    for (const key of ['/apisix/routes/pc', '/apisix/routes/svc', '/apisix/routes/dangling', '/apisix/services/s1']) {
      await etcdctlDel(key);
    }
    for (const gw of [A, B]) await until(gw, '/pc', is404, { timeoutMs: 1000 });
  });

  test("APISIX's init_dir placeholders and /apisix/plugins are ignored quietly; a broken value is skipped", async () => {
    // What `apisix init` and a control plane leave in etcd (apisix-facts §7.1): not config objects.
    for (const dir of ['routes', 'upstreams', 'services', 'consumers']) await etcdctlPut(`/apisix/${dir}/`, 'init_dir');
    await etcdctlPut('/apisix/plugins', JSON.stringify([{ name: 'openfunction' }, { name: 'prometheus' }]));
    await etcdctlPut('/apisix/routes/broken', '{"uri": "/broken", ');
    await etcdctlPut('/apisix/routes/invalid', JSON.stringify({ uri: '/invalid', methods: ['FETCH'] }));
    await etcdctlPut('/apisix/routes/after-junk', JSON.stringify(fnRoute('/after-junk', 'after-junk')));
    for (const gw of [A, B]) {
      await until(gw, '/after-junk', hello('after-junk'), { timeoutMs: 1000 });
      assert.ok(is404(await hit(gw, '/broken')));
      assert.ok(is404(await hit(gw, '/invalid')));
      assert.ok(hello('x-again')(await hit(gw, '/direct')), 'the other routes are still served');
      const out = logs(gw);
      assert.doesNotMatch(
        out,
        /init_dir|"key":"\/apisix\/plugins"/,
        'placeholders are not warned about (LOG_LEVEL=warn)',
      );
      assert.equal(count(out, '/apisix/routes/broken'), 1, `the broken value is logged once:\n${out}`);
      assert.equal(count(out, 'route invalid:'), 1, `the invalid route is logged once:\n${out}`);
    }
    // The Admin API lists config objects only.
    const list = await A.admin('GET', '/routes');
    const keys: string[] = list.json.list.map((i: { key: string }) => i.key);
    assert.ok(!keys.includes('/apisix/routes/') && !keys.includes('/apisix/routes/broken'), keys.join(' '));
  });

  test("POST ids follow etcd's revision (20 digits, zero-padded, growing); create_time survives a later PUT", async () => {
    const p1 = await A.admin('POST', '/routes', fnRoute('/posted-1', 'posted-1'));
    assert.equal(p1.status, 201, p1.text);
    const id1: string = p1.json.value.id;
    assert.match(id1, /^\d{20}$/);
    assert.equal(p1.json.key, `/apisix/routes/${id1}`);
    // APISIX's scheme: the id is the revision of the write of <prefix>/gen_id.
    const gen = await etcdGet(etcd.endpoint, '/apisix/gen_id');
    assert.equal(gen.kv?.value, '1');
    assert.equal(String(gen.kv?.modRevision).padStart(20, '0'), id1);
    const stored = await etcdGet(etcd.endpoint, `/apisix/routes/${id1}`);
    assert.ok(stored.kv);
    assert.ok(stored.kv.createRevision > Number(id1));
    assert.equal(JSON.parse(stored.kv.value).id, id1);

    const p2 = await B.admin('POST', '/routes', fnRoute('/posted-2', 'posted-2'));
    assert.equal(p2.status, 201, p2.text);
    const id2: string = p2.json.value.id;
    assert.match(id2, /^\d{20}$/);
    assert.ok(id2 > id1, `${id2} > ${id1}`);
    assert.ok(Number(id2) > stored.kv.createRevision);

    await until(B, '/posted-1', hello('posted-1'), { timeoutMs: 1000 });
    await until(A, '/posted-2', hello('posted-2'), { timeoutMs: 1000 });

    // A PUT through the other instance keeps create_time.
    await until(B, '/posted-1', hello('posted-1'));
    const upd = await B.putRoute(id1, fnRoute('/posted-1', 'posted-1b'));
    assert.equal(upd.status, 200, upd.text);
    assert.equal(upd.json.value.create_time, p1.json.value.create_time);
    await until(A, '/posted-1', hello('posted-1b'), { timeoutMs: 1000 });
  });

  test('A and B PATCH different fields of one route 20 times each, concurrently: no update is lost', async (t) => {
    await A.putRoute('cc', { uris: ['/cc'], plugins: { openfunction: { function_uri: fnUri('a-start') } } });
    await until(B, '/cc', hello('a-start'), { timeoutMs: 1000 });
    const ROUNDS = 20;
    const conflicts = { A: 0, B: 0 };
    const statuses = new Map<string, number>();
    /** PATCH until it applies; a 503 "value changed before overwritten" is APISIX's answer to a lost race. */
    async function patch(gw: GatewayUnderTest, who: 'A' | 'B', body: unknown) {
      for (let attempt = 0; attempt < 100; attempt++) {
        const res = await gw.admin('PATCH', '/routes/cc', body);
        statuses.set(`${who} ${res.status}`, (statuses.get(`${who} ${res.status}`) ?? 0) + 1);
        if (res.status === 200) return res;
        assert.equal(res.status, 503, res.text);
        assert.equal(res.json.error_msg, 'value changed before overwritten');
        conflicts[who]++;
        await sleep(5);
      }
      assert.fail(`${who}: PATCH never applied`);
    }
    await Promise.all([
      (async () => {
        for (let i = 0; i < ROUNDS; i++) {
          const res = await patch(A, 'A', { plugins: { openfunction: { function_uri: fnUri(`a-${i}`) } } });
          assert.equal(res.json.value.plugins.openfunction.function_uri, fnUri(`a-${i}`));
        }
      })(),
      (async () => {
        for (let i = 0; i < ROUNDS; i++) {
          const res = await patch(B, 'B', { uris: ['/cc', `/cc-b-${i}`], desc: `b-${i}` });
          assert.deepEqual(res.json.value.uris, ['/cc', `/cc-b-${i}`]);
        }
      })(),
    ]);
    const last = ROUNDS - 1;
    const want = (v: Record<string, unknown> & { plugins?: { openfunction?: { function_uri?: string } } }) =>
      v.plugins?.openfunction?.function_uri === fnUri(`a-${last}`) &&
      JSON.stringify(v.uris) === JSON.stringify(['/cc', `/cc-b-${last}`]) &&
      v.desc === `b-${last}`;
    const inEtcd = JSON.parse((await etcdGet(etcd.endpoint, '/apisix/routes/cc')).kv!.value);
    assert.ok(want(inEtcd), `etcd holds both last values: ${JSON.stringify(inEtcd)}`);
    for (const gw of [A, B]) {
      await until(gw, `/cc-b-${last}`, hello(`a-${last}`), { timeoutMs: 1000 });
      assert.ok(hello(`a-${last}`)(await hit(gw, '/cc')));
      assert.ok(is404(await hit(gw, `/cc-b-${last - 1}`)));
      const got = await gw.admin('GET', '/routes/cc');
      assert.deepEqual(got.json.value, inEtcd);
    }
    t.diagnostic(
      `503 "value changed before overwritten" answers: A ${conflicts.A}, B ${conflicts.B} (for ${ROUNDS} PATCHes each); statuses ${JSON.stringify(Object.fromEntries(statuses))}`,
    );
  });

  test('A and B PUT one new id 15 times each at once: every PUT succeeds (a plain set, as in APISIX), one 201', async () => {
    const n = 30;
    const results = await Promise.all(
      Array.from({ length: n }, (_, i) => (i % 2 ? A : B).admin('PUT', '/routes/pp', fnRoute('/pp', `pp-${i}`))),
    );
    assert.deepEqual(
      results.map((r) => r.status).sort(),
      [...Array<number>(n - 1).fill(200), 201],
      results.find((r) => r.status >= 300)?.text,
    );
    const stored = JSON.parse((await etcdGet(etcd.endpoint, '/apisix/routes/pp')).kv!.value);
    for (const r of results) assert.equal(r.json.value.create_time, stored.create_time, 'one create_time for all');
    const name = stored.plugins.openfunction.function_uri.split('/').pop();
    assert.ok(results.some((r) => r.json.value.plugins.openfunction.function_uri === stored.plugins.openfunction.function_uri));
    for (const gw of [A, B]) await until(gw, '/pp', hello(name), { timeoutMs: 1000 });
  });

  test('writes through a gateway whose watch trails etcd: PUT keeps create_time, PATCH finds the route, no update is lost', async () => {
    // C's watch is held back from the start: its mirror knows nothing written after it started, as a gateway whose
    // watch is slow or in backoff. Every write through it must still be checked against etcd itself.
    const proxy = await startEtcdProxy(etcd.endpoint);
    proxy.hold();
    const C = await gateway({ ETCD_HOST: proxy.url });
    const t0 = performance.now();
    while (proxy.held() === 0) {
      assert.ok(performance.now() - t0 < 3000, 'C opened no watch');
      await sleep(5);
    }
    const apisixRoute = (uri: string, id: string) =>
      JSON.stringify({ ...fnRoute(uri, id), id, create_time: 1700000000, update_time: 1700000000 });
    await etcdctlPut('/apisix/routes/trail-1', apisixRoute('/trail-1', 'trail-1'));
    await etcdctlPut('/apisix/routes/trail-2', apisixRoute('/trail-2', 'trail-2'));
    assert.equal((await C.admin('GET', '/routes/trail-1')).status, 404, "C's mirror has not seen the routes");

    const put = await C.putRoute('trail-1', fnRoute('/trail-1', 'trail-1b'));
    assert.equal(put.status, 200, `an update of an existing route, not a creation: ${put.text}`);
    assert.equal(put.json.value.create_time, 1700000000, 'create_time of the stored route');
    assert.equal(JSON.parse((await etcdGet(etcd.endpoint, '/apisix/routes/trail-1')).kv!.value).create_time, 1700000000);

    const patch = await C.admin('PATCH', '/routes/trail-2', { desc: 'patched through C' });
    assert.equal(patch.status, 200, `PATCH of a route C has not seen yet: ${patch.text}`);
    assert.equal(patch.json.value.uri, '/trail-2');
    assert.equal(patch.json.value.create_time, 1700000000);
    const stored = JSON.parse((await etcdGet(etcd.endpoint, '/apisix/routes/trail-2')).kv!.value);
    assert.equal(stored.desc, 'patched through C');
    assert.equal(stored.create_time, 1700000000);

    // A changes a route C already knows (C wrote it): C's copy is now stale, and C's PATCH must not undo A's.
    const byA = await A.admin('PATCH', '/routes/trail-1', { name: 'renamed by A' });
    assert.equal(byA.status, 200, byA.text);
    const byC = await C.admin('PATCH', '/routes/trail-1', { desc: 'described by C' });
    assert.equal(byC.status, 200, byC.text);
    assert.equal(byC.json.value.name, 'renamed by A', "A's change survives C's PATCH");
    assert.equal(byC.json.value.desc, 'described by C');
    assert.equal(byC.json.value.create_time, 1700000000);

    // What C learnt on the way is served at once, before its watch catches up.
    assert.ok(hello('trail-2')(await hit(C, '/trail-2')));
    assert.ok(hello('trail-1b')(await hit(C, '/trail-1')));

    proxy.release();
    const t1 = performance.now();
    await A.putRoute('trail-3', fnRoute('/trail-3', 'trail-3'));
    await until(C, '/trail-3', hello('trail-3'), { since: t1, timeoutMs: 6000 });
    // Every watch C opened asked etcd to require a leader.
    const headers = proxy.watchHeaders();
    assert.ok(headers.length >= 1);
    for (const h of headers) assert.equal(h['grpc-metadata-hasleader'], 'true', JSON.stringify(h));
  });

  test('etcd restarts: both keep serving during the outage, writes answer 503, and then follow again', async (t) => {
    await A.putRoute('before-outage', fnRoute('/before-outage', 'before-outage'));
    await until(B, '/before-outage', hello('before-outage'), { timeoutMs: 1000 });

    await etcd.kill(); // the data stays: restart() brings the same etcd back
    const down = performance.now();
    let served = 0;
    while (performance.now() - down < 1000) {
      for (const gw of [A, B]) {
        const h = await hit(gw, '/before-outage');
        assert.ok(hello('before-outage')(h), `served during the outage: ${h.status} ${h.text}`);
        served++;
      }
      await sleep(50);
    }
    const w0 = performance.now();
    const write = await A.admin('PUT', '/routes/during-outage', fnRoute('/during-outage', 'during-outage'));
    const writeMs = performance.now() - w0;
    assert.equal(write.status, 503, write.text);
    assert.equal(typeof write.json?.error_msg, 'string', write.text);
    assert.ok(write.json.error_msg.length > 0);
    // Reads of the Admin API come from the mirror.
    const read = await B.admin('GET', '/routes/before-outage');
    assert.equal(read.status, 200, read.text);

    await etcd.restart();
    const back = performance.now();
    const t0 = performance.now();
    const put = await A.admin('PUT', '/routes/after-outage', fnRoute('/after-outage', 'after-outage'));
    assert.equal(put.status, 201, put.text);
    const bMs = await until(B, '/after-outage', hello('after-outage'), { since: t0, timeoutMs: 5000 });
    assert.ok(is404(await hit(B, '/during-outage')), 'the refused write was not applied');

    // B's watch is live again (not just one re-read): a direct write arrives within 1 s.
    const t1 = performance.now();
    await etcdPut(etcd.endpoint, '/apisix/routes/after-outage-2', JSON.stringify(fnRoute('/after-outage-2', 'ao2')));
    for (const gw of [A, B]) await until(gw, '/after-outage-2', hello('ao2'), { since: t1, timeoutMs: 1000 });
    t.diagnostic(
      `outage ${round(back - down)} ms, ${served} requests served during it; the refused write answered in ${round(writeMs)} ms: ${write.json.error_msg}`,
    );
    t.diagnostic(`after etcd came back, a write through A reached B in ${round(bMs)} ms`);

    // A graceful restart (SIGTERM, then start) under steady traffic: not one request fails.
    let stop = false;
    let sent = 0;
    const failures: string[] = [];
    const traffic = (async () => {
      while (!stop) {
        for (const gw of [A, B]) {
          const h = await hit(gw, '/after-outage-2');
          sent++;
          if (!hello('ao2')(h)) failures.push(`${h.status} ${h.text.slice(0, 100)}`);
        }
        await sleep(10);
      }
    })();
    await etcd.restart();
    const t2 = performance.now();
    await A.putRoute('after-restart', fnRoute('/after-restart', 'after-restart'));
    const rMs = await until(B, '/after-restart', hello('after-restart'), { since: t2, timeoutMs: 5000 });
    stop = true;
    await traffic;
    assert.deepEqual(failures, [], `${failures.length} of ${sent} requests failed during the restart`);
    t.diagnostic(`graceful etcd restart: ${sent} requests, none failed; B followed A's next write in ${round(rMs)} ms`);
  });

  test('a watch that fell behind a compaction re-reads and serves what was written meanwhile', async (t) => {
    const proxy = await startEtcdProxy(etcd.endpoint);
    proxy.hold(); // the first watch of C waits while etcd moves on and compacts
    const C = await gateway({ ETCD_HOST: proxy.url, LOG_LEVEL: 'info' });
    const t0 = performance.now();
    while (proxy.held() === 0) {
      assert.ok(performance.now() - t0 < 3000, 'C opened no watch');
      await sleep(5);
    }
    await etcdPut(etcd.endpoint, '/apisix/routes/compacted', JSON.stringify(fnRoute('/compacted', 'compacted')));
    for (let i = 0; i < 10; i++)
      await etcdPut(etcd.endpoint, '/apisix/routes/compacted-n', JSON.stringify(fnRoute('/cn', `cn-${i}`)));
    const rev = await etcdRevision(etcd.endpoint);
    await etcdCompact(etcd.endpoint, rev);
    assert.ok(is404(await hit(C, '/compacted')), 'C has not seen the write yet');
    const r0 = performance.now();
    proxy.release();
    const ms = await until(C, '/compacted', hello('compacted'), { since: r0, timeoutMs: 3000 });
    assert.ok(hello('cn-9')(await hit(C, '/cn')));
    assert.match(logs(C), /compacted revision/, 'C saw the compaction (canceled watch with compact_revision)');
    // And follows again.
    const t1 = performance.now();
    await A.putRoute('after-compaction', fnRoute('/after-compaction', 'after-compaction'));
    await until(C, '/after-compaction', hello('after-compaction'), { since: t1, timeoutMs: 1000 });
    t.diagnostic(`C served the write made behind its watch ${round(ms)} ms after the watch was let through`);
  });

  test('a cut connection to etcd: the gateway keeps serving, then re-syncs and serves the writes made meanwhile', async (t) => {
    const proxy = await startEtcdProxy(etcd.endpoint);
    const C = await gateway({ ETCD_HOST: proxy.url });
    await until(C, '/before-outage', hello('before-outage'), { timeoutMs: 1000 });

    proxy.down();
    const down = performance.now();
    await A.putRoute('meanwhile', fnRoute('/meanwhile', 'meanwhile'));
    await etcdPut(etcd.endpoint, '/apisix/routes/meanwhile-2', JSON.stringify(fnRoute('/meanwhile-2', 'meanwhile-2')));
    await A.admin('DELETE', '/routes/before-outage');
    await until(B, '/meanwhile-2', hello('meanwhile-2'), { timeoutMs: 1000 });
    assert.ok(hello('after-outage')(await hit(C, '/after-outage')), 'C serves its last config while cut off');
    assert.ok(is404(await hit(C, '/meanwhile')));
    const write = await C.admin('PUT', '/routes/cut', fnRoute('/cut', 'cut'));
    assert.equal(write.status, 503, write.text);
    assert.equal(typeof write.json?.error_msg, 'string');
    await sleep(500);

    proxy.up();
    const up = performance.now();
    const ms = await until(C, '/meanwhile', hello('meanwhile'), { since: up, timeoutMs: 6000 });
    await until(C, '/meanwhile-2', hello('meanwhile-2'), { timeoutMs: 1000 });
    await until(C, '/before-outage', is404, { timeoutMs: 1000 });
    const t1 = performance.now();
    await B.putRoute('after-cut', fnRoute('/after-cut', 'after-cut'));
    await until(C, '/after-cut', hello('after-cut'), { since: t1, timeoutMs: 1000 });
    t.diagnostic(`cut for ${round(up - down)} ms; C caught up ${round(ms)} ms after the connection came back`);
  });

  test('endpoint failover: a dead endpoint first in ETCD_HOST; and a live one that dies', async (t) => {
    const dead = `http://127.0.0.1:${await refusedPort()}`;
    const D = await gateway({ ETCD_HOST: `${dead},${etcd.endpoint}` });
    assert.ok(hello('meanwhile')(await hit(D, '/meanwhile')), 'D started and serves the stored routes');
    const put = await D.admin('PUT', '/routes/via-d', fnRoute('/via-d', 'via-d'));
    assert.equal(put.status, 201, put.text);
    await until(A, '/via-d', hello('via-d'), { timeoutMs: 1000 });
    const t0 = performance.now();
    await A.putRoute('to-d', fnRoute('/to-d', 'to-d'));
    await until(D, '/to-d', hello('to-d'), { since: t0, timeoutMs: 1000 });

    // The first endpoint works at start and then goes away: the watch moves to the second one.
    const proxy = await startEtcdProxy(etcd.endpoint);
    const F = await gateway({ ETCD_HOST: `${proxy.url},${etcd.endpoint}` });
    assert.ok(hello('to-d')(await hit(F, '/to-d')));
    proxy.down();
    const t1 = performance.now();
    await A.putRoute('failover', fnRoute('/failover', 'failover'));
    const ms = await until(F, '/failover', hello('failover'), { since: t1, timeoutMs: 5000 });
    const w = await F.admin('PUT', '/routes/via-f', fnRoute('/via-f', 'via-f'));
    assert.equal(w.status, 201, w.text);
    await until(B, '/via-f', hello('via-f'), { timeoutMs: 1000 });
    assert.match(logs(F), /switching to the next one/);
    t.diagnostic(`F followed a write ${round(ms)} ms after its first endpoint died`);

    // No endpoint answers at all: the gateway refuses to start, saying why.
    const dead2 = `http://127.0.0.1:${await refusedPort()}`;
    await assert.rejects(startGateway({ env: { ETCD_HOST: `${dead},${dead2}` } }), (err: Error) => {
      assert.match(err.message, /process exited before it was ready/);
      assert.match(err.message, /etcd is unreachable/);
      return true;
    });
  });

  test('ETCD_PREFIX=/custom: keys land under /custom, invisible to a gateway on /apisix', async () => {
    const E = await gateway({ ETCD_HOST: etcd.endpoint, ETCD_PREFIX: '/custom' });
    assert.ok(is404(await hit(E, '/meanwhile')), 'E does not see /apisix');
    const put = await E.admin('PUT', '/routes/c1', fnRoute('/c1', 'c1'));
    assert.equal(put.status, 201, put.text);
    assert.equal(put.json.key, '/custom/routes/c1');
    const kv = (await etcdGet(etcd.endpoint, '/custom/routes/c1')).kv;
    assert.ok(kv, 'the route is stored at /custom/routes/c1');
    assert.equal(JSON.parse(kv.value).uri, '/c1');
    assert.equal((await etcdGet(etcd.endpoint, '/apisix/routes/c1')).kv, undefined);
    assert.ok(hello('c1')(await hit(E, '/c1')));

    const posted = await E.admin('POST', '/routes', fnRoute('/c-posted', 'c-posted'));
    assert.equal(posted.status, 201, posted.text);
    assert.match(posted.json.key, /^\/custom\/routes\/\d{20}$/);
    const gen = await etcdGet(etcd.endpoint, '/custom/gen_id');
    assert.equal(String(gen.kv?.modRevision).padStart(20, '0'), posted.json.value.id);

    await etcdctlPut('/custom/routes/c2', JSON.stringify(fnRoute('/c2', 'c2')));
    await until(E, '/c2', hello('c2'), { timeoutMs: 1000 });
    // A write under /apisix after the ones under /custom: once A serves it, A has seen (and ignored) /custom.
    await etcdPut(etcd.endpoint, '/apisix/routes/marker', JSON.stringify(fnRoute('/marker', 'marker')));
    await until(A, '/marker', hello('marker'), { timeoutMs: 1000 });
    for (const path of ['/c1', '/c2', '/c-posted']) assert.ok(is404(await hit(A, path)), `A does not serve ${path}`);
    assert.equal((await A.admin('GET', '/routes/c1')).status, 404);
    assert.ok(is404(await hit(E, '/marker')));
  });

  test('after all of the above, each config problem is still logged once per gateway', () => {
    for (const gw of [A, B]) {
      const out = logs(gw);
      assert.equal(count(out, 'route prom: plugin zipkin is not available'), 1, out);
      assert.equal(count(out, 'route ka: plugin ldap-auth is not available'), 1, out);
    }
  });

  // Last: it empties etcd under everyone's feet.
  test('etcd wiped and refilled to the same revision while a gateway was cut off: the gateway serves the new config', async () => {
    const proxy = await startEtcdProxy(etcd.endpoint);
    const C = await gateway({ ETCD_HOST: proxy.url });
    assert.ok(hello('after-junk')(await hit(C, '/after-junk')));
    const rev = await etcdRevision(etcd.endpoint); // C's snapshot revision: it has seen everything
    proxy.down();
    await etcd.restart({ wipe: true });
    // The new etcd is filled up to exactly the same revision, with other content.
    while ((await etcdRevision(etcd.endpoint)) < rev - 1) await etcdPut(etcd.endpoint, '/apisix/pad/x', '{}');
    await etcdPut(etcd.endpoint, '/apisix/routes/after-wipe', JSON.stringify(fnRoute('/after-wipe', 'after-wipe')));
    assert.equal(await etcdRevision(etcd.endpoint), rev);
    proxy.up();
    // C's store re-reads etcd (its Admin API shows the new content) ...
    await waitForAdmin(C, '/routes/after-wipe', 200);
    assert.equal((await C.admin('GET', '/routes/after-junk')).status, 404);
    // ... and the proxy must follow it.
    await until(C, '/after-wipe', hello('after-wipe'), { timeoutMs: 2000 });
    await until(C, '/after-junk', is404, { timeoutMs: 1000 });
  });
});

describe('etcd with authentication: ETCD_USER / ETCD_PASSWORD', { skip: NO_ETCD }, () => {
  let secured: EtcdServer;
  const password = 'e2e-root-pa55';
  before(async () => {
    secured = await startEtcd();
    // As an operator enables it (etcdctl creates the root role on `auth enable`).
    await etcdctl(secured.endpoint, 'user', 'add', `root:${password}`);
    await etcdctl(secured.endpoint, 'auth', 'enable');
  });
  after(async () => {
    await secured?.stop();
  });

  test('a gateway with ETCD_USER and ETCD_PASSWORD reads, writes and follows an etcd with authentication enabled', async () => {
    await etcdctl(
      secured.endpoint,
      '--user',
      `root:${password}`,
      'put',
      '/apisix/routes/before',
      JSON.stringify(fnRoute('/auth-before', 'auth-before')),
    );
    const G = await gateway({ ETCD_HOST: secured.endpoint, ETCD_USER: 'root', ETCD_PASSWORD: password });
    assert.ok(hello('auth-before')(await hit(G, '/auth-before')), 'the start-up read was authenticated');

    const put = await G.putRoute('auth-1', fnRoute('/auth-1', 'auth-1'));
    assert.equal(put.status, 201, put.text);
    assert.ok(hello('auth-1')(await hit(G, '/auth-1')));
    const token = await etcdToken(secured.endpoint, 'root', password);
    assert.equal(JSON.parse((await etcdGet(secured.endpoint, '/apisix/routes/auth-1', { token })).kv!.value).uri, '/auth-1');

    // The watch is authenticated too: a direct write arrives.
    const t0 = performance.now();
    await etcdctl(
      secured.endpoint,
      '--user',
      `root:${password}`,
      'put',
      '/apisix/routes/auth-2',
      JSON.stringify(fnRoute('/auth-2', 'auth-2')),
    );
    await until(G, '/auth-2', hello('auth-2'), { since: t0, timeoutMs: 1000 });
  });

  test('no credentials, or a wrong password: the gateway refuses to start and says why', async () => {
    await assert.rejects(startGateway({ env: { ETCD_HOST: secured.endpoint } }), (err: Error) => {
      assert.match(err.message, /requires authentication/);
      return true;
    });
    await assert.rejects(
      startGateway({ env: { ETCD_HOST: secured.endpoint, ETCD_USER: 'root', ETCD_PASSWORD: 'wrong' } }),
      (err: Error) => {
        assert.match(err.message, /authentication failed for user "root"/);
        assert.ok(!err.message.includes(password));
        return true;
      },
    );
  });

  test('ETCD_PASSWORD without ETCD_USER, or ETCD_USER without ETCD_PASSWORD, is a start-up error', async () => {
    for (const [env, message] of [
      [{ ETCD_PASSWORD: password }, /ETCD_PASSWORD is set but ETCD_USER is not/],
      [{ ETCD_USER: 'root' }, /ETCD_USER is set but ETCD_PASSWORD is not/],
    ] as const) {
      await assert.rejects(startGateway({ env: { ETCD_HOST: secured.endpoint, ...env } }), (err: Error) => {
        assert.match(err.message, /process exited before it was ready/);
        assert.match(err.message, message);
        return true;
      });
    }
  });
});

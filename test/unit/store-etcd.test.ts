// The etcd config store against a real etcd (test/helpers/etcd.ts starts one; CI installs etcd-server).
// Run: node --import tsx --test test/unit/store-etcd.test.ts
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer } from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { EtcdStore, prefixRangeEnd } from '../../src/store/etcd.ts';
import type { EtcdLogger, EtcdStoreOptions } from '../../src/store/etcd.ts';
import { StoreConflictError, StoreError } from '../../src/store/types.ts';
import {
  etcdCompact,
  etcdDelete,
  etcdEnableAuth,
  etcdGet,
  etcdPut,
  etcdPutMany,
  etcdRevision,
  etcdToken,
  startEtcd,
  startEtcdCluster,
} from '../helpers/etcd.ts';
import type { EtcdServer } from '../helpers/etcd.ts';
import { refusedPort, waitFor } from '../helpers/process.ts';
import { systemSkip } from '../helpers/system.ts';

const NO_ETCD = systemSkip('etcd store tests', ['etcd', 'etcdctl'], ['etcd-server', 'etcd-client']);

// ---------------------------------------------------------------------------------------------
// Test plumbing

interface LogRecord {
  level: 'info' | 'warn' | 'error';
  msg: string;
  fields: Record<string, unknown> | undefined;
}

function memLogger(): { logger: EtcdLogger; records: LogRecord[] } {
  const records: LogRecord[] = [];
  const mk = (level: LogRecord['level']) => (msg: string, fields?: Record<string, unknown>) => {
    records.push({ level, msg, fields });
  };
  return { logger: { info: mk('info'), warn: mk('warn'), error: mk('error') }, records };
}

/**
 * A pass-through fetch that records requests and can hold back or cut the watch streams (the store still talks
 * to the real etcd; this only delays or drops its connection).
 */
function gate() {
  const calls: Array<{
    path: string;
    /** `http://host:port` the request went to. */
    origin: string;
    body: Record<string, unknown> | undefined;
    headers: Record<string, string>;
  }> = [];
  let held: { promise: Promise<void>; release: () => void } | undefined;
  const live = new Set<AbortController>();
  /** Canned watch answers by origin: the watch gets this stream instead of reaching etcd. */
  const fakeWatch = new Map<string, () => Response>();
  const fetchFn: typeof fetch = async (input, init) => {
    const href = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    const url = new URL(href);
    const path = url.pathname;
    const body = typeof init?.body === 'string' ? (JSON.parse(init.body) as Record<string, unknown>) : undefined;
    const headers = Object.fromEntries(new Headers(init?.headers).entries());
    calls.push({ path, origin: url.origin, body, headers });
    if (path !== '/v3/watch') return fetch(input, init);
    const fake = fakeWatch.get(url.origin);
    if (fake) return fake();
    const signal = init?.signal ?? undefined;
    if (held) {
      await Promise.race([
        held.promise,
        new Promise<never>((_, reject) => {
          if (signal?.aborted) reject(signal.reason);
          signal?.addEventListener('abort', () => reject(signal.reason), { once: true });
        }),
      ]);
    }
    const ac = new AbortController();
    signal?.addEventListener('abort', () => ac.abort(), { once: true });
    live.add(ac);
    return fetch(input, { ...init, signal: ac.signal });
  };
  return {
    fetch: fetchFn,
    calls,
    fakeWatch,
    count: (path: string) => calls.filter((c) => c.path === path).length,
    /** start_revision of every watch created so far. */
    watchStarts: () =>
      calls
        .filter((c) => c.path === '/v3/watch')
        .map((c) => Number((c.body?.create_request as { start_revision?: string } | undefined)?.start_revision)),
    hold() {
      let release!: () => void;
      const promise = new Promise<void>((r) => {
        release = r;
      });
      held = { promise, release };
    },
    release() {
      held?.release();
      held = undefined;
    },
    /** Cut every watch connection made so far (as a network failure would). */
    dropWatches() {
      for (const ac of live) ac.abort();
      live.clear();
    },
  };
}

const stores: EtcdStore[] = [];
async function open(opts: EtcdStoreOptions): Promise<EtcdStore> {
  const s = await EtcdStore.open(opts);
  stores.push(s);
  return s;
}

let prefixCounter = 0;
/** A prefix of its own for each test, so that tests sharing one etcd do not see each other's keys. */
const freshPrefix = (name: string) => `/t${++prefixCounter}-${name}`;

const APISIX_ROUTE =
  '{"uri":"/hello","plugins":{"openfunction":{"function_uri":"http://127.0.0.1:1/x"}},"id":"1","create_time":1700000000,"update_time":1700000000}';

/** A TCP proxy to `target` that can be killed like a dying etcd member. */
async function tcpProxy(target: string): Promise<{ endpoint: string; kill(): Promise<void> }> {
  const url = new URL(target);
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect(Number(url.port), url.hostname);
    sockets.add(client);
    sockets.add(upstream);
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    async kill() {
      const closed = new Promise((r) => server.close(r));
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}

after(async () => {
  await Promise.all(stores.map((s) => s.close()));
});

// ---------------------------------------------------------------------------------------------

test('prefix range end is the prefix with its last byte + 1 (as APISIX)', () => {
  assert.equal(atob(prefixRangeEnd('/apisix')), '/apisiy');
  assert.equal(atob(prefixRangeEnd('/a\u00ff')), '/a\xc3\xc0', 'byte-wise: U+00FF is C3 BF in UTF-8');
  assert.equal(atob(prefixRangeEnd('/')), '0');
});

describe('EtcdStore on one etcd', { skip: NO_ETCD }, () => {
  let etcd: EtcdServer;
  before(async () => {
    etcd = await startEtcd();
  });
  after(async () => {
    await Promise.all(stores.splice(0).map((s) => s.close()));
    await etcd?.stop();
  });

  test('every resource kind of the Admin API, nested credential keys too: stored, ordered, watched by a second store', async () => {
    const prefix = freshPrefix('kinds');
    const s = await open({ endpoints: [etcd.endpoint], prefix });
    const watcher = await open({ endpoints: [etcd.endpoint], prefix });
    const keys = [
      'consumer_groups/g',
      'consumers/jack',
      'consumers/jack-x',
      'consumers/jack/credentials/1',
      'global_rules/1',
      'plugin_configs/p',
      'plugin_metadata/openfunction',
      'services/s',
    ].map((k) => `${prefix}/${k}`);
    for (const key of [...keys].reverse()) await s.put(key, { id: key.split('/').pop() });
    assert.deepEqual((await s.load()).items.map((i) => i.key), keys);
    assert.equal((await etcdGet(etcd.endpoint, `${prefix}/consumers/jack/credentials/1`)).kv?.value, '{"id":"1"}');
    await waitFor(async () => (await watcher.get(`${prefix}/consumers/jack/credentials/1`)) !== undefined, {
      message: 'the second store never saw the credential',
    });
    await s.delete(`${prefix}/consumers/jack/credentials/1`);
    await waitFor(async () => (await watcher.get(`${prefix}/consumers/jack/credentials/1`)) === undefined, {
      message: 'the second store never saw the delete',
    });
  });

  test('load/get/put/delete round trip in the APISIX layout', async () => {
    const prefix = freshPrefix('crud');
    const s = await open({ endpoints: [etcd.endpoint], prefix });
    assert.equal(s.kind, 'etcd');
    assert.equal(s.prefix, prefix);
    const empty = await s.load();
    assert.deepEqual(empty.items, []);
    assert.equal(empty.revision, await etcdRevision(etcd.endpoint));

    const route = { uri: '/hello', id: '1', create_time: 1700000000, update_time: 1700000000 };
    const r1 = await s.put(`${prefix}/routes/1`, route);
    assert.equal(r1.created, true);
    assert.deepEqual(r1.item.value, route);
    const raw = await etcdGet(etcd.endpoint, `${prefix}/routes/1`);
    assert.equal(raw.kv?.value, JSON.stringify(route), 'stored as the plain JSON text APISIX reads');
    assert.equal(r1.item.createdIndex, raw.kv?.createRevision);
    assert.equal(r1.item.modifiedIndex, raw.kv?.modRevision);

    const r2 = await s.put(`${prefix}/routes/1`, { ...route, uri: '/v2' });
    assert.equal(r2.created, false);
    assert.equal(r2.item.createdIndex, r1.item.createdIndex);
    assert.ok(r2.item.modifiedIndex > r1.item.modifiedIndex);
    assert.deepEqual(await s.get(`${prefix}/routes/1`), r2.item);

    await s.put(`${prefix}/routes/10`, { uri: '/10' });
    await s.put(`${prefix}/routes/2`, { uri: '/2' });
    await s.put(`${prefix}/upstreams/1`, { nodes: { '127.0.0.1:80': 1 }, type: 'roundrobin' });
    const state = await s.load();
    assert.deepEqual(
      state.items.map((i) => i.key),
      [`${prefix}/routes/1`, `${prefix}/routes/10`, `${prefix}/routes/2`, `${prefix}/upstreams/1`],
      'etcd key byte order',
    );
    assert.equal(state.revision, await etcdRevision(etcd.endpoint));

    // Handed-out items are copies.
    state.items[0]!.value.uri = '/mutated';
    assert.equal((await s.get(`${prefix}/routes/1`))?.value.uri, '/v2');

    const gone = await s.delete(`${prefix}/routes/1`);
    assert.equal(gone?.key, `${prefix}/routes/1`);
    assert.equal(gone?.modifiedIndex, r2.item.modifiedIndex);
    assert.deepEqual(gone?.value, { ...route, uri: '/v2' });
    assert.equal(await s.get(`${prefix}/routes/1`), undefined);
    assert.equal((await etcdGet(etcd.endpoint, `${prefix}/routes/1`)).kv, undefined);
    assert.equal(await s.delete(`${prefix}/routes/1`), undefined, 'deleting a missing key');

    // A fresh instance reads the same state.
    const s2 = await open({ endpoints: [etcd.endpoint], prefix });
    assert.deepEqual((await s2.load()).items, (await s.load()).items);

    await assert.rejects(s.put('/elsewhere/routes/1', {}), StoreError);
    await assert.rejects(s.put(`${prefix}/routes/3`, [] as unknown as Record<string, unknown>), TypeError);
    await assert.rejects(s.put(`${prefix}/routes/3`, {}, { expect: -1 }), RangeError);
  });

  test('compare-and-set: expect 0, stale revisions and concurrent writers', async () => {
    const prefix = freshPrefix('cas');
    const s = await open({ endpoints: [etcd.endpoint], prefix });
    const key = `${prefix}/routes/1`;
    const a = await s.put(key, { uri: '/a' }, { expect: 0 });
    assert.equal(a.created, true);
    await assert.rejects(s.put(key, { uri: '/b' }, { expect: 0 }), StoreConflictError);
    const b = await s.put(key, { uri: '/b' }, { expect: a.item.modifiedIndex });
    assert.equal(b.created, false);
    assert.equal(b.item.createdIndex, a.item.createdIndex);
    await assert.rejects(s.put(key, { uri: '/c' }, { expect: a.item.modifiedIndex }), StoreConflictError);
    assert.deepEqual((await s.get(key))?.value, { uri: '/b' }, 'a failed write changes nothing');
    await assert.rejects(s.put(`${prefix}/routes/none`, { uri: '/x' }, { expect: 5 }), StoreConflictError);
    await assert.rejects(s.delete(key, { expect: a.item.modifiedIndex }), StoreConflictError);
    assert.ok(await s.get(key));

    // Two stores, same expected revision: exactly one wins.
    const other = await open({ endpoints: [etcd.endpoint], prefix });
    await waitFor(async () => (await other.get(key))?.modifiedIndex === b.item.modifiedIndex, { timeoutMs: 2000 });
    const results = await Promise.allSettled([
      s.put(key, { uri: '/s' }, { expect: b.item.modifiedIndex }),
      other.put(key, { uri: '/other' }, { expect: b.item.modifiedIndex }),
    ]);
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
    const lost = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    assert.ok(lost.reason instanceof StoreConflictError, String(lost.reason));

    // Two creators of the same new key: exactly one wins.
    const created = await Promise.allSettled([
      s.put(`${prefix}/routes/new`, { n: 1 }, { expect: 0 }),
      other.put(`${prefix}/routes/new`, { n: 2 }, { expect: 0 }),
    ]);
    assert.equal(created.filter((r) => r.status === 'fulfilled').length, 1);

    const cur = (await etcdGet(etcd.endpoint, key)).kv!;
    const del = await s.delete(key, { expect: cur.modRevision });
    assert.equal(del?.modifiedIndex, cur.modRevision);
    assert.equal(await s.get(key), undefined);
  });

  test('nextId grows and is the etcd revision of the gen_id write', async () => {
    const prefix = freshPrefix('genid');
    const { logger, records } = memLogger();
    const s = await open({ endpoints: [etcd.endpoint], prefix, logger });
    const a = await s.nextId();
    const b = await s.nextId();
    assert.ok(b > a, `${b} > ${a}`);
    const raw = await etcdGet(etcd.endpoint, `${prefix}/gen_id`);
    assert.equal(raw.kv?.value, '1');
    assert.equal(raw.kv?.modRevision, b);
    assert.equal(raw.revision, b);
    assert.equal(String(b).padStart(20, '0').length, 20);
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual((await s.load()).items, [], 'gen_id is not config');
    assert.deepEqual(
      records.filter((r) => r.level !== 'info'),
      [],
      'gen_id is skipped silently',
    );
  });

  test('a write and a delete from another instance arrive through the watch within 1 s', async () => {
    const prefix = freshPrefix('watch');
    const s1 = await open({ endpoints: [etcd.endpoint], prefix });
    const s2 = await open({ endpoints: [etcd.endpoint], prefix });
    let notified = 0;
    s1.watch(() => notified++);
    const { item } = await s2.put(`${prefix}/routes/7`, { uri: '/seven' });
    await waitFor(async () => (await s1.get(`${prefix}/routes/7`))?.modifiedIndex === item.modifiedIndex, {
      timeoutMs: 1000,
      message: 'put not seen',
    });
    assert.deepEqual(await s1.get(`${prefix}/routes/7`), item);
    await waitFor(() => notified >= 1, { timeoutMs: 500 });
    assert.equal((await s1.load()).revision, item.modifiedIndex);

    const before = notified;
    await s2.delete(`${prefix}/routes/7`);
    await waitFor(async () => (await s1.get(`${prefix}/routes/7`)) === undefined, {
      timeoutMs: 1000,
      message: 'delete not seen',
    });
    await waitFor(() => notified > before, { timeoutMs: 500 });
  });

  test("values written straight into etcd in APISIX's shape load; init_dir placeholders are skipped and logged once", async () => {
    const prefix = freshPrefix('apisix');
    await etcdPut(etcd.endpoint, `${prefix}/routes/`, 'init_dir');
    await etcdPut(etcd.endpoint, `${prefix}/plugins`, '[{"name":"openfunction"}]');
    await etcdPut(etcd.endpoint, `${prefix}-other/routes/1`, '{"uri":"/not-mine"}'); // inside the range, not the dir
    const rev1 = await etcdPut(etcd.endpoint, `${prefix}/routes/1`, APISIX_ROUTE);
    const { logger, records } = memLogger();
    const s = await open({ endpoints: [etcd.endpoint], prefix, logger });
    const st = await s.load();
    assert.deepEqual(st.items, [
      { key: `${prefix}/routes/1`, value: JSON.parse(APISIX_ROUTE), createdIndex: rev1, modifiedIndex: rev1 },
    ]);
    const skipped = () => records.filter((r) => /not a JSON object/.test(r.msg)).map((r) => r.fields?.key);
    assert.deepEqual(skipped().sort(), [`${prefix}/plugins`, `${prefix}/routes/`]);

    // Through the watch: an APISIX write appears, placeholders stay out and are logged once.
    const rev2 = await etcdPut(etcd.endpoint, `${prefix}/routes/2`, APISIX_ROUTE.replace('"id":"1"', '"id":"2"'));
    await etcdPut(etcd.endpoint, `${prefix}/upstreams/`, 'init_dir');
    await etcdPut(etcd.endpoint, `${prefix}/upstreams/`, 'init_dir');
    await etcdPut(etcd.endpoint, `${prefix}/routes/`, 'init_dir');
    const marker = await etcdPut(etcd.endpoint, `${prefix}/routes/3`, '{"uri":"/3"}');
    await waitFor(async () => (await s.load()).revision >= marker, { timeoutMs: 1000 });
    const keys = (await s.load()).items.map((i) => i.key);
    assert.deepEqual(keys, [`${prefix}/routes/1`, `${prefix}/routes/2`, `${prefix}/routes/3`]);
    assert.equal((await s.get(`${prefix}/routes/2`))?.createdIndex, rev2);
    assert.deepEqual(skipped().sort(), [`${prefix}/plugins`, `${prefix}/routes/`, `${prefix}/upstreams/`]);

    // A config key overwritten with a non-object value leaves the config.
    await etcdPut(etcd.endpoint, `${prefix}/routes/3`, '"oops"');
    await waitFor(async () => (await s.get(`${prefix}/routes/3`)) === undefined, { timeoutMs: 1000 });

    // A delete straight in etcd (APISIX's admin) removes it.
    await etcdDelete(etcd.endpoint, `${prefix}/routes/1`);
    await waitFor(async () => (await s.get(`${prefix}/routes/1`)) === undefined, { timeoutMs: 1000 });
    assert.deepEqual(
      (await s.load()).items.map((i) => i.key),
      [`${prefix}/routes/2`],
    );
  });

  test('one etcd revision with several keys gives one notification', async () => {
    const prefix = freshPrefix('batch');
    const s = await open({ endpoints: [etcd.endpoint], prefix });
    let notified = 0;
    s.watch(() => notified++);
    await etcdPutMany(etcd.endpoint, [
      [`${prefix}/routes/1`, '{"uri":"/1"}'],
      [`${prefix}/routes/2`, '{"uri":"/2"}'],
      [`${prefix}/upstreams/1`, '{"nodes":{}}'],
    ]);
    await waitFor(async () => (await s.load()).items.length === 3, { timeoutMs: 1000 });
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(notified, 1);
  });

  test('read-your-writes before the watch event arrives, and no resurrection by late events', async () => {
    const prefix = freshPrefix('ryw');
    const g = gate();
    g.hold(); // the watch is not connected until released
    const s = await open({ endpoints: [etcd.endpoint], prefix, fetch: g.fetch, requestTimeoutMs: 10_000 });
    const key = `${prefix}/routes/1`;
    const { item } = await s.put(key, { uri: '/one' });
    assert.deepEqual(await s.get(key), item);
    assert.deepEqual((await s.load()).items, [item]);
    assert.equal((await s.load()).revision, item.modifiedIndex);
    await s.put(`${prefix}/routes/2`, { uri: '/two' });
    assert.ok(await s.delete(key));
    assert.equal(await s.get(key), undefined);

    g.release(); // now the watch replays put(1), put(2), delete(1): nothing may come back
    const marker = await etcdPut(etcd.endpoint, `${prefix}/routes/3`, '{"uri":"/three"}');
    await waitFor(async () => (await s.get(`${prefix}/routes/3`)) !== undefined, { timeoutMs: 2000 });
    assert.deepEqual(
      (await s.load()).items.map((i) => i.key),
      [`${prefix}/routes/2`, `${prefix}/routes/3`],
    );
    assert.equal((await s.load()).revision, marker);
  });

  test('an unreachable etcd fails open with a StoreError naming the endpoint', async () => {
    const dead = `http://127.0.0.1:${await refusedPort()}`;
    await assert.rejects(
      EtcdStore.open({ endpoints: [dead], prefix: freshPrefix('dead') }),
      (err: Error) =>
        err instanceof StoreError && err.message.includes(dead) && /ECONNREFUSED|refused/i.test(err.message),
    );
  });

  test('failover: a dead first endpoint is skipped for requests and the watch', async () => {
    const prefix = freshPrefix('failover');
    const dead = `http://127.0.0.1:${await refusedPort()}`;
    const { logger, records } = memLogger();
    const s = await open({ endpoints: [dead, etcd.endpoint], prefix, logger });
    await s.put(`${prefix}/routes/1`, { uri: '/1' });
    const rev = await etcdPut(etcd.endpoint, `${prefix}/routes/2`, '{"uri":"/2"}');
    await waitFor(async () => (await s.get(`${prefix}/routes/2`))?.modifiedIndex === rev, { timeoutMs: 1000 });
    assert.equal(records.filter((r) => /switching/.test(r.msg)).length, 1, 'the dead endpoint was left once');
  });

  test('failover: the endpoint in use dies, the store moves on to the next one', async () => {
    const prefix = freshPrefix('failover2');
    const a = await tcpProxy(etcd.endpoint);
    const b = await tcpProxy(etcd.endpoint);
    try {
      const { logger, records } = memLogger();
      const s = await open({ endpoints: [a.endpoint, b.endpoint], prefix, logger });
      await s.put(`${prefix}/routes/1`, { uri: '/1' });
      await a.kill();
      const rev = await etcdPut(etcd.endpoint, `${prefix}/routes/2`, '{"uri":"/2"}');
      await waitFor(async () => (await s.get(`${prefix}/routes/2`))?.modifiedIndex === rev, {
        timeoutMs: 3000,
        message: 'the watch did not move to the second endpoint',
      });
      const { item } = await s.put(`${prefix}/routes/3`, { uri: '/3' });
      assert.equal((await etcdGet(etcd.endpoint, `${prefix}/routes/3`)).kv?.modRevision, item.modifiedIndex);
      assert.ok(records.some((r) => /switching/.test(r.msg) && r.fields?.failed === a.endpoint));
    } finally {
      await a.kill();
      await b.kill();
    }
  });

  test('a compacted watch start revision leads to a full re-read and a watch from the new revision', async () => {
    const prefix = freshPrefix('compact');
    const g = gate();
    const { logger, records } = memLogger();
    g.hold();
    const s = await open({ endpoints: [etcd.endpoint], prefix, fetch: g.fetch, logger, requestTimeoutMs: 10_000 });
    const start = (await s.load()).revision;
    await etcdPut(etcd.endpoint, `${prefix}/routes/1`, '{"uri":"/1"}');
    await etcdPut(etcd.endpoint, `${prefix}/routes/2`, '{"uri":"/2"}');
    const last = await etcdPut(etcd.endpoint, `${prefix}/routes/1`, '{"uri":"/1b"}');
    await etcdCompact(etcd.endpoint, last);
    assert.equal(g.count('/v3/kv/range'), 1);
    g.release();
    await waitFor(async () => (await s.load()).items.length === 2, { timeoutMs: 2000, message: 'no re-read' });
    assert.deepEqual((await s.get(`${prefix}/routes/1`))?.value, { uri: '/1b' });
    assert.equal(g.count('/v3/kv/range'), 2, 'one full re-read');
    assert.ok(records.some((r) => /compacted/.test(String(r.fields?.reason))));
    await waitFor(() => g.watchStarts().length >= 2, { timeoutMs: 2000 });
    const starts = g.watchStarts();
    assert.equal(starts[0], start + 1);
    assert.ok(starts[1]! > last, `the new watch starts after the compaction (${starts[1]} > ${last})`);
    // And it follows etcd again.
    const rev = await etcdPut(etcd.endpoint, `${prefix}/routes/3`, '{"uri":"/3"}');
    await waitFor(async () => (await s.get(`${prefix}/routes/3`))?.modifiedIndex === rev, { timeoutMs: 1000 });
  });

  test('a dropped watch connection leads to a re-read; the mirror is served meanwhile', async () => {
    const prefix = freshPrefix('drop');
    const g = gate();
    const { logger, records } = memLogger();
    const s = await open({ endpoints: [etcd.endpoint], prefix, fetch: g.fetch, logger });
    await s.put(`${prefix}/routes/1`, { uri: '/1' });
    await waitFor(() => g.count('/v3/watch') === 1, { timeoutMs: 1000 });
    g.hold(); // the next watch waits, so the re-read is what must bring the new key
    g.dropWatches();
    const rev = await etcdPut(etcd.endpoint, `${prefix}/routes/2`, '{"uri":"/2"}');
    assert.ok(await s.get(`${prefix}/routes/1`), 'served from the mirror');
    await waitFor(async () => (await s.get(`${prefix}/routes/2`))?.modifiedIndex === rev, {
      timeoutMs: 2000,
      message: 'no re-read after the watch was cut',
    });
    assert.equal(g.count('/v3/kv/range'), 2);
    assert.ok(records.some((r) => r.level === 'warn' && /watch interrupted/.test(r.msg)));
    g.release();
    const rev3 = await etcdPut(etcd.endpoint, `${prefix}/routes/3`, '{"uri":"/3"}');
    await waitFor(async () => (await s.get(`${prefix}/routes/3`))?.modifiedIndex === rev3, { timeoutMs: 2000 });
  });

  test('an idle watch is re-created from the same revision, never skipping ahead', async () => {
    const prefix = freshPrefix('idle');
    const g = gate();
    const s = await open({ endpoints: [etcd.endpoint], prefix, fetch: g.fetch, watchIdleMs: 150 });
    const rev0 = (await s.load()).revision;
    // Other prefixes move the etcd revision meanwhile; this watch sees nothing and must not skip ahead.
    await etcdPut(etcd.endpoint, `${prefix}-noise/x`, '{}');
    await waitFor(() => g.watchStarts().length >= 3, { timeoutMs: 2000 });
    assert.deepEqual(new Set(g.watchStarts()), new Set([rev0 + 1]));
    assert.equal(g.count('/v3/kv/range'), 1, 'an idle watch needs no re-read');
    const rev = await etcdPut(etcd.endpoint, `${prefix}/routes/1`, '{"uri":"/1"}');
    await waitFor(async () => (await s.get(`${prefix}/routes/1`))?.modifiedIndex === rev, { timeoutMs: 1000 });
    await waitFor(() => g.watchStarts().at(-1) === rev + 1, { timeoutMs: 2000 });
  });

  test('a failed compare hands back the key as etcd holds it and updates the mirror at once; getLatest reads etcd', async () => {
    const prefix = freshPrefix('cas-latest');
    const g = gate();
    g.hold(); // the watch never connects during this test: the mirror only learns through the store's own requests
    const s = await open({ endpoints: [etcd.endpoint], prefix, fetch: g.fetch, requestTimeoutMs: 10_000 });
    const key = `${prefix}/routes/1`;
    const conflictOf = async (p: Promise<unknown>) => {
      const err = await p.then(
        () => assert.fail('the write went through'),
        (e: unknown) => e,
      );
      assert.ok(err instanceof StoreConflictError, String(err));
      return err;
    };

    // Written behind the store's back, as another gateway would.
    const rev1 = await etcdPut(etcd.endpoint, key, APISIX_ROUTE);
    assert.equal(await s.get(key), undefined, 'the mirror has not seen it');
    const e1 = await conflictOf(s.put(key, { uri: '/mine' }, { expect: 0 }));
    const inEtcd = { key, value: JSON.parse(APISIX_ROUTE), createdIndex: rev1, modifiedIndex: rev1 };
    assert.deepEqual(e1.latest, { item: inEtcd, modifiedIndex: rev1 });
    assert.deepEqual(await s.get(key), inEtcd, 'the mirror holds what etcd answered');
    const { item } = await s.put(key, { uri: '/mine' }, { expect: e1.latest!.modifiedIndex });
    assert.equal(item.createdIndex, rev1);

    // Deleted behind its back: the conflict says the key is gone, and so does the mirror.
    await etcdDelete(etcd.endpoint, key);
    const e2 = await conflictOf(s.put(key, { uri: '/again' }, { expect: item.modifiedIndex }));
    assert.deepEqual(e2.latest, { item: undefined, modifiedIndex: 0 });
    assert.equal(await s.get(key), undefined);

    // A value that is not a config object: no item, but the revision to overwrite it with.
    const junk = `${prefix}/routes/junk`;
    const revJ = await etcdPut(etcd.endpoint, junk, 'init_dir');
    const e3 = await conflictOf(s.put(junk, { uri: '/j' }, { expect: 0 }));
    assert.deepEqual(e3.latest, { item: undefined, modifiedIndex: revJ });
    await s.put(junk, { uri: '/j' }, { expect: revJ });

    // getLatest: one linearizable read, into the mirror.
    const two = `${prefix}/routes/2`;
    const rev2 = await etcdPut(etcd.endpoint, two, '{"uri":"/2"}');
    assert.equal(await s.get(two), undefined);
    assert.deepEqual(await s.getLatest(two), { key: two, value: { uri: '/2' }, createdIndex: rev2, modifiedIndex: rev2 });
    assert.equal((await s.get(two))?.modifiedIndex, rev2);
    assert.equal(await s.getLatest(`${prefix}/routes/none`), undefined);
    await assert.rejects(s.getLatest('/elsewhere/routes/1'), StoreError);

    // The held watch now replays everything above: nothing older than what the mirror learnt comes back.
    g.release();
    const marker = await etcdPut(etcd.endpoint, `${prefix}/routes/9`, '{"uri":"/9"}');
    await waitFor(async () => (await s.get(`${prefix}/routes/9`)) !== undefined, { timeoutMs: 3000 });
    assert.deepEqual(
      (await s.load()).items.map((i) => [i.key, i.value.uri]),
      [
        [two, '/2'],
        [`${prefix}/routes/9`, '/9'],
        [junk, '/j'],
      ],
    );
    assert.equal((await s.load()).revision, marker);
  });

  test('every watch request requires a leader (Grpc-Metadata-hasleader: true); an idle watch moves to the next endpoint', async () => {
    const prefix = freshPrefix('hasleader');
    const second = await tcpProxy(etcd.endpoint);
    try {
      const g = gate();
      const { logger, records } = memLogger();
      const s = await open({ endpoints: [etcd.endpoint, second.endpoint], prefix, fetch: g.fetch, logger, watchIdleMs: 150 });
      await waitFor(() => g.count('/v3/watch') >= 4, { timeoutMs: 3000 });
      const watches = g.calls.filter((c) => c.path === '/v3/watch');
      for (const w of watches) assert.equal(w.headers['grpc-metadata-hasleader'], 'true', JSON.stringify(w.headers));
      for (const c of g.calls.filter((c) => c.path !== '/v3/watch')) {
        assert.equal(c.headers['grpc-metadata-hasleader'], undefined, `only the watch: ${c.path}`);
      }
      const a = new URL(etcd.endpoint).origin;
      const b = new URL(second.endpoint).origin;
      assert.deepEqual(
        watches.slice(0, 4).map((w) => w.origin),
        [a, b, a, b],
        'each re-created idle watch goes to the next endpoint',
      );
      assert.equal(g.count('/v3/kv/range'), 1, 'an idle watch needs no re-read');
      assert.ok(!records.some((r) => r.level === 'warn'), 'an idle watch is routine, not a warning');
      // And the rotating watch still follows etcd.
      const rev = await etcdPut(etcd.endpoint, `${prefix}/routes/1`, '{"uri":"/1"}');
      await waitFor(async () => (await s.get(`${prefix}/routes/1`))?.modifiedIndex === rev, { timeoutMs: 2000 });
    } finally {
      await second.kill();
    }
  });

  for (const [what, line] of [
    ['ends it with an error ("etcdserver: no leader")', { error: { grpc_code: 14, http_code: 503, message: 'etcdserver: no leader' } }],
    ['cancels it', { result: { canceled: true, cancel_reason: 'rpc error: code = Unavailable desc = member stopping' } }],
  ] as const) {
    test(`a member that ${what} is left: the watch is re-created on the next endpoint`, async () => {
      const prefix = freshPrefix('cancel');
      const second = await tcpProxy(etcd.endpoint);
      try {
        const g = gate();
        const { logger, records } = memLogger();
        const a = new URL(etcd.endpoint).origin;
        const b = new URL(second.endpoint).origin;
        const revision = String(await etcdRevision(etcd.endpoint));
        // The first endpoint's watch is created, then ended by "etcd".
        g.fakeWatch.set(a, () => {
          const text = `${JSON.stringify({ result: { header: { revision }, created: true } })}\n${JSON.stringify(line)}\n`;
          return new Response(text, { status: 200, headers: { 'content-type': 'application/json' } });
        });
        const s = await open({ endpoints: [etcd.endpoint, second.endpoint], prefix, fetch: g.fetch, logger });
        const rev = await etcdPut(etcd.endpoint, `${prefix}/routes/1`, '{"uri":"/1"}');
        await waitFor(async () => (await s.get(`${prefix}/routes/1`))?.modifiedIndex === rev, { timeoutMs: 3000 });
        const watches = g.calls.filter((c) => c.path === '/v3/watch').map((w) => w.origin);
        assert.deepEqual(watches.slice(0, 2), [a, b]);
        assert.ok(records.some((r) => /switching/.test(r.msg) && r.fields?.failed === etcd.endpoint));
      } finally {
        await second.kill();
      }
    });
  }

  test('re-watch attempts against a dead endpoint back off: doubling from backoffMinMs, capped at backoffMaxMs', async () => {
    const prefix = freshPrefix('backoff');
    const proxy = await tcpProxy(etcd.endpoint);
    const g = gate();
    const { logger, records } = memLogger();
    const MIN = 10;
    const MAX = 100;
    await open({ endpoints: [proxy.endpoint], prefix, fetch: g.fetch, logger, backoffMinMs: MIN, backoffMaxMs: MAX });
    await waitFor(() => g.count('/v3/watch') === 1, { timeoutMs: 1000 });
    await proxy.kill(); // the watch breaks, and every re-read is refused from now on
    const retries = () => records.filter((r) => r.fields?.retry_in_ms !== undefined);
    await waitFor(() => retries().length >= 10, { timeoutMs: 10_000, message: 'the store stopped retrying' });

    // The delays the store chose (it logs each one): MIN, 2 MIN, 4 MIN ... up to MAX, each with jitter x0.5-1.
    retries()
      .slice(0, 10)
      .forEach((r, i) => {
        const base = Math.min(MAX, MIN * 2 ** i);
        const ms = r.fields!.retry_in_ms as number;
        assert.equal(r.fields!.attempt, i + 1, JSON.stringify(r));
        assert.ok(ms >= base / 2 && ms <= base, `attempt ${i + 1}: ${ms} ms, expected ${base / 2}-${base}`);
      });

    // And it waits them: re-reads counted over 2 s once the delay is capped (50-100 ms each, so about 20-40).
    // Bounds far apart on purpose: no backoff would make thousands, an uncapped one (delays of 5 s and more
    // by now) one at most.
    const before = g.count('/v3/kv/range');
    await new Promise((r) => setTimeout(r, 2000));
    const reads = g.count('/v3/kv/range') - before;
    assert.ok(reads >= 5 && reads <= 80, `${reads} re-reads in 2 s`);
  });

  test('close() stops the watch and later calls fail', async () => {
    const s = await EtcdStore.open({ endpoints: [etcd.endpoint], prefix: freshPrefix('close') });
    await s.close();
    await s.close();
    await assert.rejects(s.load(), StoreError);
    await assert.rejects(s.put(`${s.prefix}/routes/1`, {}), StoreError);
  });
});

describe('EtcdStore across etcd restarts', { skip: NO_ETCD }, () => {
  let etcd: EtcdServer;
  before(async () => {
    etcd = await startEtcd();
  });
  after(async () => {
    await Promise.all(stores.splice(0).map((s) => s.close()));
    await etcd?.stop();
  });

  test('etcd goes down and comes back with its data: the store recovers without being recreated', async () => {
    const prefix = freshPrefix('restart');
    const { logger } = memLogger();
    const s = await open({
      endpoints: [etcd.endpoint],
      prefix,
      logger,
      requestTimeoutMs: 1000,
    });
    const { item } = await s.put(`${prefix}/routes/1`, { uri: '/1' });
    const other = await open({ endpoints: [etcd.endpoint], prefix, logger });

    await etcd.kill();
    await assert.rejects(
      s.put(`${prefix}/routes/2`, { uri: '/2' }),
      (err: Error) => err instanceof StoreError && err.message.includes(etcd.endpoint),
    );
    assert.deepEqual((await s.load()).items, [item], 'the last good mirror is served; the failed write left no trace');

    await etcd.restart();
    const rev = await etcdPut(etcd.endpoint, `${prefix}/routes/3`, '{"uri":"/3"}');
    assert.ok(rev > item.modifiedIndex);
    await waitFor(async () => (await s.get(`${prefix}/routes/3`))?.modifiedIndex === rev, {
      timeoutMs: 8000,
      message: 'the store did not follow etcd after the restart',
    });
    const w = await other.put(`${prefix}/routes/4`, { uri: '/4' });
    await waitFor(async () => (await s.get(`${prefix}/routes/4`))?.modifiedIndex === w.item.modifiedIndex, {
      timeoutMs: 1000,
    });
    assert.deepEqual(
      (await s.load()).items.map((i) => i.key),
      [`${prefix}/routes/1`, `${prefix}/routes/3`, `${prefix}/routes/4`],
    );
  });

  test('etcd back while the watch waits out a long backoff: an answer to another request resumes the watch at once', async () => {
    const prefix = freshPrefix('wake');
    const { logger, records } = memLogger();
    const s = await open({ endpoints: [etcd.endpoint], prefix, logger, requestTimeoutMs: 1000, backoffMaxMs: 8000 });
    await etcd.kill();
    // Wait until the store, failing to reach etcd, has started a wait of 2.5 s or more.
    const longWait = () =>
      records.find((r) => r.msg.startsWith('etcd: re-reading the config failed') && Number(r.fields?.retry_in_ms) >= 2500);
    await waitFor(() => longWait() !== undefined, {
      timeoutMs: 15_000,
      intervalMs: 10,
      message: 'no long backoff after etcd went away',
    });
    const waitEnds = performance.now() + Number(longWait()!.fields!.retry_in_ms);
    await etcd.restart();
    await s.put(`${prefix}/routes/own`, { uri: '/own' }); // etcd answers this store's own write
    const rev = await etcdPut(etcd.endpoint, `${prefix}/routes/other`, '{"uri":"/other"}');
    await waitFor(async () => (await s.get(`${prefix}/routes/other`))?.modifiedIndex === rev, {
      timeoutMs: 8000,
      intervalMs: 10,
    });
    const early = waitEnds - performance.now();
    assert.ok(early > 200, `the watch caught up only ${Math.round(-early)} ms after its backoff would have ended anyway`);
    assert.ok(records.some((r) => r.msg === 'etcd: answering again; resuming the watch now'));
    await s.close();
  });

  test('etcd restarted with empty data (revision goes backwards): the store re-reads', async () => {
    const prefix = freshPrefix('wipe');
    const { logger, records } = memLogger();
    for (let i = 0; i < 5; i++) await etcdPut(etcd.endpoint, `${prefix}/routes/${i}`, `{"uri":"/${i}"}`);
    const s = await open({ endpoints: [etcd.endpoint], prefix, logger, requestTimeoutMs: 1000 });
    assert.equal((await s.load()).items.length, 5);
    let notified = 0;
    s.watch(() => notified++);

    await etcd.restart({ wipe: true });
    await waitFor(async () => (await s.load()).items.length === 0, {
      timeoutMs: 8000,
      message: 'the store kept the data of the old etcd',
    });
    assert.ok(notified >= 1);
    assert.ok(records.some((r) => /backwards/.test(r.msg) || /backwards/.test(String(r.fields?.reason))));
    const rev = await etcdPut(etcd.endpoint, `${prefix}/routes/9`, '{"uri":"/9"}');
    await waitFor(async () => (await s.get(`${prefix}/routes/9`))?.modifiedIndex === rev, { timeoutMs: 2000 });
    const { item } = await s.put(`${prefix}/routes/10`, { uri: '/10' });
    assert.equal(item.createdIndex, rev + 1);
  });
});

describe('EtcdStore on a two-member etcd cluster that loses its quorum', { skip: NO_ETCD }, () => {
  let members: EtcdServer[];
  before(async () => {
    members = await startEtcdCluster(2);
  });
  after(async () => {
    await Promise.all(stores.splice(0).map((s) => s.close()));
    await Promise.all((members ?? []).map((m) => m.stop()));
  });

  test('the member left without a leader ends the watch ("etcdserver: no leader") instead of going silent', async () => {
    // Without the require-leader metadata etcd keeps such a watch open and silent until watchIdleMs (60 s here):
    // the store would not notice that its member stopped following the cluster.
    const [a, b] = members as [EtcdServer, EtcdServer];
    const prefix = freshPrefix('leader');
    const { logger, records } = memLogger();
    const s = await open({ endpoints: [a.endpoint], prefix, logger, requestTimeoutMs: 1000, backoffMaxMs: 500 });
    const rev = await etcdPut(a.endpoint, `${prefix}/routes/1`, '{"uri":"/1"}');
    await waitFor(async () => (await s.get(`${prefix}/routes/1`))?.modifiedIndex === rev, { timeoutMs: 2000 });

    await b.kill(); // a alone is no quorum: it loses its leader after a few election timeouts (200 ms each)
    await waitFor(() => records.some((r) => /no leader/.test(String(r.fields?.reason))), {
      timeoutMs: 10_000,
      message: 'the watch did not end when its member lost the leader',
    }).catch((err) => {
      throw new Error(`${err.message}; log: ${JSON.stringify(records)}`);
    });
    assert.ok(await s.get(`${prefix}/routes/1`), 'the last good config is still served');

    await b.restart();
    const rev2 = await etcdPut(a.endpoint, `${prefix}/routes/2`, '{"uri":"/2"}');
    await waitFor(async () => (await s.get(`${prefix}/routes/2`))?.modifiedIndex === rev2, {
      timeoutMs: 10_000,
      message: 'the store did not follow etcd once the quorum was back',
    });
  });
});

describe('EtcdStore with etcd authentication', { skip: NO_ETCD }, () => {
  let etcd: EtcdServer;
  let rootToken: string;
  const password = 'pa55-word';
  before(async () => {
    etcd = await startEtcd({ args: ['--auth-token-ttl', '1'] });
    rootToken = await etcdEnableAuth(etcd.endpoint, password);
  });
  after(async () => {
    await Promise.all(stores.splice(0).map((s) => s.close()));
    await etcd?.stop();
  });

  test('user/password work, an expired token is renewed, for requests and the watch', async () => {
    const prefix = freshPrefix('auth');
    const g = gate();
    const { logger } = memLogger();
    const s = await open({ endpoints: [etcd.endpoint], prefix, user: 'root', password, fetch: g.fetch, logger });
    assert.equal(g.count('/v3/auth/authenticate'), 1);
    const { item } = await s.put(`${prefix}/routes/1`, { uri: '/1' });
    assert.deepEqual(await s.get(`${prefix}/routes/1`), item);
    const rev = await etcdPut(etcd.endpoint, `${prefix}/routes/2`, '{"uri":"/2"}', { token: rootToken });
    await waitFor(async () => (await s.get(`${prefix}/routes/2`))?.modifiedIndex === rev, { timeoutMs: 1000 });

    // A second store whose idle watch is re-created (with its then expired token) after 2.5 s.
    const gw = gate();
    const w = await open({
      endpoints: [etcd.endpoint],
      prefix,
      user: 'root',
      password,
      fetch: gw.fetch,
      watchIdleMs: 2500,
      logger,
    });

    // Simple tokens die 1-2 s after their last use (--auth-token-ttl 1).
    await new Promise((r) => setTimeout(r, 2600));
    await s.put(`${prefix}/routes/3`, { uri: '/3' });
    assert.equal(g.count('/v3/auth/authenticate'), 2, 'the request path authenticated again');

    const token = await etcdToken(etcd.endpoint, 'root', password);
    const rev4 = await etcdPut(etcd.endpoint, `${prefix}/routes/4`, '{"uri":"/4"}', { token });
    await waitFor(async () => (await w.get(`${prefix}/routes/4`))?.modifiedIndex === rev4, {
      timeoutMs: 3000,
      message: 'the watch did not recover from its expired token',
    });
    assert.ok(gw.count('/v3/auth/authenticate') >= 2, 'the watch path authenticated again');
    assert.ok(gw.count('/v3/watch') >= 2);
  });

  test('a wrong password or missing credentials fail open with a clear StoreError', async () => {
    await assert.rejects(
      EtcdStore.open({ endpoints: [etcd.endpoint], user: 'root', password: 'wrong' }),
      (err: Error) =>
        err instanceof StoreError && /authentication failed/.test(err.message) && err.message.includes('"root"'),
    );
    await assert.rejects(
      EtcdStore.open({ endpoints: [etcd.endpoint] }),
      (err: Error) => err instanceof StoreError && /requires authentication/.test(err.message),
    );
  });
});

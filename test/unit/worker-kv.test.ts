/**
 * The Workers entry under the real workerd (Miniflare's Node API), with the bundle `wrangler deploy --dry-run`
 * builds: the Workers KV store picks up routes written straight into KV (as `wrangler kv key put` does), the Admin
 * API exists only with ADMIN_KEY, and STANDALONE_CONFIG serves a YAML config read-only. Then the KV store class
 * alone over a fake KV that can serve stale reads (own writes, CAS, revisions, throttling).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Miniflare } from 'miniflare';
import {
  CloudflareKVStore,
  type CloudflareKVStoreOptions,
  type KVNamespaceLike,
} from '../../src/store/cloudflare-kv.ts';
import { StoreConflictError, StoreError } from '../../src/store/types.ts';
import { type FunctionServer, startFunction } from '../functions/functions.ts';
import { rmDir, tmpDir } from '../helpers/process.ts';

const ROOT = new URL('../..', import.meta.url).pathname;
const KEY = 'worker-kv-test-admin-key-0123456789';
const ORIGIN = 'http://fngate.test';

let outDir: string;
let script: string;
let fn: FunctionServer;

before(async () => {
  outDir = await tmpDir('fngate-worker-bundle-');
  const res = spawnSync(
    process.execPath,
    [
      join(ROOT, 'node_modules/wrangler/bin/wrangler.js'),
      'deploy',
      '--dry-run',
      '--outdir',
      outDir,
      '--config',
      join(ROOT, 'wrangler.toml'),
    ],
    {
      cwd: ROOT,
      encoding: 'utf8',
      env: { ...process.env, WRANGLER_SEND_METRICS: 'false', WRANGLER_LOG_PATH: join(outDir, 'logs') },
    },
  );
  assert.equal(res.status, 0, `wrangler deploy --dry-run failed:\n${res.stdout}\n${res.stderr}`);
  script = join(outDir, 'worker.js');
  fn = await startFunction('function-sample');
});
after(async () => {
  await fn?.close();
  if (outDir) await rmDir(outDir);
});

interface WorkerOptions {
  bindings?: Record<string, string>;
  kv?: boolean;
}

async function startWorker(opts: WorkerOptions): Promise<Miniflare> {
  const toml = await readFile(join(ROOT, 'wrangler.toml'), 'utf8');
  const date = /^compatibility_date\s*=\s*"([^"]+)"/m.exec(toml)?.[1];
  assert.ok(date, 'wrangler.toml has a compatibility_date');
  const mf = new Miniflare({
    modules: true,
    scriptPath: script,
    modulesRoot: outDir,
    compatibilityDate: date,
    compatibilityFlags: ['enable_request_signal'],
    kvNamespaces: opts.kv === false ? [] : ['GATEWAY_KV'],
    bindings: { LOG_LEVEL: 'error', ACCESS_LOG: 'off', ...opts.bindings },
  });
  await mf.ready;
  return mf;
}

/** The KV namespace of a Miniflare instance, as a plain Node-side client (its types need workers-types). */
interface TestKV {
  get(key: string): Promise<string | null>;
  getWithMetadata<M>(key: string, type: 'json'): Promise<{ value: unknown; metadata: M | null }>;
  put(key: string, value: string): Promise<void>;
  list(): Promise<{ keys: { name: string }[] }>;
}

async function kvOf(mf: Miniflare): Promise<TestKV> {
  return (await mf.getKVNamespace('GATEWAY_KV')) as unknown as TestKV;
}

async function get(mf: Miniflare, path: string, init?: RequestInit): Promise<{ status: number; text: string }> {
  // biome-ignore lint/suspicious/noExplicitAny: Miniflare's fetch types are its own undici's
  const res = await mf.dispatchFetch(`${ORIGIN}${path}`, init as any);
  return { status: res.status, text: await res.text() };
}

const route = (uri: string, name: string) => ({
  uri,
  plugins: { openfunction: { function_uri: `${fn.url}/${name}` } },
});

async function until(what: string, ms: number, cond: () => Promise<boolean>): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    if (await cond()) return Date.now() - t0;
    if (Date.now() - t0 > ms) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('Workers KV store', () => {
  let mf: Miniflare;
  before(async () => {
    mf = await startWorker({ bindings: { ADMIN_KEY: KEY, KV_CACHE_TTL: '1', KV_FULL_RELOAD: '3' } });
  });
  after(async () => {
    await mf?.dispose();
  });

  test('a route written straight into KV is served within the TTL once the revision key moves', async () => {
    assert.equal((await get(mf, '/kv-direct')).status, 404); // boots the isolate and loads the (empty) config
    const kv = await kvOf(mf);
    // What `wrangler kv key put /apisix/routes/direct '…'` and a revision bump do: plain values, no metadata.
    await kv.put('/apisix/routes/direct', JSON.stringify(route('/kv-direct', 'direct')));
    await kv.put('/apisix/_meta/revision', String(Date.now()));
    const took = await until('route served', 2500, async () => (await get(mf, '/kv-direct')).status === 200);
    assert.ok(took <= 1500, `served after ${took} ms (TTL 1 s)`);
    assert.equal((await get(mf, '/kv-direct')).text, 'Hello, direct!');
    // The Admin API sees it too; a value written without fngate's metadata has indexes 1.
    const one = await get(mf, '/apisix/admin/routes/direct', { headers: { 'x-api-key': KEY } });
    assert.equal(one.status, 200, one.text);
    assert.equal(JSON.parse(one.text).createdIndex, 1);
  });

  test('without a revision bump, the periodic full reload picks the route up', async () => {
    const kv = await kvOf(mf);
    await kv.put('/apisix/routes/quiet', JSON.stringify(route('/kv-quiet', 'quiet')));
    await until('route served', 6000, async () => (await get(mf, '/kv-quiet')).status === 200);
  });

  test('Admin API writes land in KV with their indexes and are served at once; deletes too', async () => {
    const put = await get(mf, '/apisix/admin/routes/admin1', {
      method: 'PUT',
      headers: { 'x-api-key': KEY },
      body: JSON.stringify(route('/kv-admin', 'admin')),
    });
    assert.equal(put.status, 201, put.text);
    assert.equal((await get(mf, '/kv-admin')).text, 'Hello, admin!');
    const kv = await kvOf(mf);
    const stored = await kv.getWithMetadata<{ createdIndex: number; modifiedIndex: number }>(
      '/apisix/routes/admin1',
      'json',
    );
    assert.equal((stored.value as { uri: string }).uri, '/kv-admin');
    assert.ok(
      stored.metadata &&
        stored.metadata.modifiedIndex > 0 &&
        stored.metadata.createdIndex === stored.metadata.modifiedIndex,
    );
    assert.equal(await kv.get('/apisix/_meta/revision'), String(stored.metadata.modifiedIndex));
    const del = await get(mf, '/apisix/admin/routes/admin1', { method: 'DELETE', headers: { 'x-api-key': KEY } });
    assert.equal(del.status, 200, del.text);
    assert.equal((await get(mf, '/kv-admin')).status, 404);
    assert.equal(await kv.get('/apisix/routes/admin1'), null);
  });

  test('ssl_verify: false is refused on Workers (its fetch always verifies TLS)', async () => {
    const res = await get(mf, '/apisix/admin/routes/insecure', {
      method: 'PUT',
      headers: { 'x-api-key': KEY },
      body: JSON.stringify({
        uri: '/insecure',
        plugins: { openfunction: { function_uri: 'https://fn.example.com/x', ssl_verify: false } },
      }),
    });
    assert.equal(res.status, 400, res.text);
    assert.match(JSON.parse(res.text).error_msg, /"ssl_verify": false is not supported on Cloudflare Workers/);
  });
});

describe('without ADMIN_KEY', () => {
  let mf: Miniflare;
  before(async () => {
    mf = await startWorker({});
  });
  after(async () => {
    await mf?.dispose();
  });

  test('/apisix/admin/* is not an Admin API: it is proxied (404 Route Not Found)', async () => {
    for (const headers of [{}, { 'x-api-key': KEY }] as Record<string, string>[]) {
      const res = await get(mf, '/apisix/admin/routes', { headers });
      assert.equal(res.status, 404);
      assert.deepEqual(JSON.parse(res.text), { error_msg: '404 Route Not Found' });
    }
    const put = await get(mf, '/apisix/admin/routes/1', {
      method: 'PUT',
      headers: { 'x-api-key': KEY },
      body: JSON.stringify(route('/x', 'x')),
    });
    assert.equal(put.status, 404);
  });
});

describe('STANDALONE_CONFIG', () => {
  let mf: Miniflare;
  before(async () => {
    const yaml = `routes:\n  - id: hello\n    uri: /standalone\n    plugins:\n      openfunction:\n        function_uri: ${fn.url}/from-yaml\n#END\n`;
    mf = await startWorker({ bindings: { ADMIN_KEY: KEY, STANDALONE_CONFIG: yaml } });
  });
  after(async () => {
    await mf?.dispose();
  });

  test('serves the routes of the YAML; the Admin API reads them and refuses writes', async () => {
    const res = await get(mf, '/standalone');
    assert.equal(res.status, 200, res.text);
    assert.equal(res.text, 'Hello, from-yaml!');
    const list = await get(mf, '/apisix/admin/routes', { headers: { 'x-api-key': KEY } });
    assert.equal(list.status, 200);
    assert.equal(JSON.parse(list.text).total, 1);
    const put = await get(mf, '/apisix/admin/routes/2', {
      method: 'PUT',
      headers: { 'x-api-key': KEY },
      body: JSON.stringify(route('/two', 'two')),
    });
    assert.equal(put.status, 405, put.text);
    assert.match(JSON.parse(put.text).error_msg, /STANDALONE_CONFIG/);
    // KV is bound too, but STANDALONE_CONFIG wins: nothing was written there.
    const kv = await kvOf(mf);
    assert.equal((await kv.list()).keys.length, 0);
  });
});

describe('ETCD_HOST on Workers', () => {
  test('refuses to start (503, reason in the log) rather than silently using another store', async () => {
    const mf = await startWorker({ bindings: { ADMIN_KEY: KEY, ETCD_HOST: 'http://127.0.0.1:2379' } });
    try {
      const res = await get(mf, '/apisix/admin/routes', { headers: { 'x-api-key': KEY } });
      assert.equal(res.status, 503, res.text);
      assert.match(JSON.parse(res.text).error_msg, /cannot start/);
      const kv = await kvOf(mf);
      assert.equal((await kv.list()).keys.length, 0);
    } finally {
      await mf.dispose();
    }
  });
});

// ---------------------------------------------------------------------------------------------------------
// The store class alone, over an in-memory stand-in for a KV binding that can serve stale reads.

interface FakeValue {
  value: string;
  metadata?: unknown;
}

/** A KV namespace in memory. `freeze()` makes reads (get, list) serve the data as it was, as KV does elsewhere. */
class FakeKV {
  data = new Map<string, FakeValue>();
  frozen: Map<string, FakeValue> | undefined;
  reads = 0;
  lists = 0;
  throttleNextPuts = 0;

  private view(): Map<string, FakeValue> {
    return this.frozen ?? this.data;
  }
  freeze(): void {
    this.frozen = new Map(this.data);
  }
  thaw(): void {
    this.frozen = undefined;
  }
  async get(key: string): Promise<string | null> {
    this.reads++;
    return this.view().get(key)?.value ?? null;
  }
  async getWithMetadata(key: string | string[]): Promise<unknown> {
    this.reads++;
    const one = (k: string) => {
      const v = this.view().get(k);
      return { value: v?.value ?? null, metadata: v?.metadata ?? null };
    };
    return Array.isArray(key) ? new Map(key.map((k) => [k, one(k)])) : one(key);
  }
  async put(key: string, value: string, opts?: { metadata?: unknown }): Promise<void> {
    if (this.throttleNextPuts > 0) {
      this.throttleNextPuts--;
      throw new Error('KV PUT failed: 429 Too Many Requests');
    }
    this.data.set(key, { value, metadata: opts?.metadata });
  }
  async delete(key: string): Promise<void> {
    this.data.delete(key);
  }
  async list(opts: {
    prefix?: string;
    cursor?: string;
  }): Promise<{ keys: { name: string }[]; list_complete: boolean; cursor?: string }> {
    this.lists++;
    const names = [...this.view().keys()].filter((k) => k.startsWith(opts.prefix ?? '')).sort();
    const start = opts.cursor ? Number(opts.cursor) : 0;
    const page = names.slice(start, start + 2); // tiny pages, so paging is exercised
    const next = start + 2;
    return next < names.length
      ? { keys: page.map((name) => ({ name })), list_complete: false, cursor: String(next) }
      : { keys: page.map((name) => ({ name })), list_complete: true };
  }
}

describe('CloudflareKVStore (fake KV)', () => {
  async function open(kv: FakeKV, extra: Partial<CloudflareKVStoreOptions> = {}) {
    let clock = 1_000_000;
    const errors: string[] = [];
    const sleeps: number[] = [];
    const store = new CloudflareKVStore({
      kv: kv as unknown as KVNamespaceLike,
      cacheTtlMs: 1000,
      fullReloadMs: 0,
      now: () => clock,
      sleep: async (ms) => {
        sleeps.push(ms);
      },
      onError: (e) => errors.push(e.message),
      ...extra,
    });
    return { store, errors, sleeps, advance: (ms: number) => (clock += ms) };
  }

  test('loads plain values (indexes 1), pages through list, skips _meta and reports a bad value once', async () => {
    const kv = new FakeKV();
    for (const id of ['a', 'b', 'c']) kv.data.set(`/apisix/routes/${id}`, { value: JSON.stringify({ uri: `/${id}` }) });
    kv.data.set('/apisix/routes/bad', { value: '{oops' });
    kv.data.set('/apisix/_meta/revision', { value: '7' });
    const { store, errors, advance } = await open(kv);
    const state = await store.load();
    assert.deepEqual(
      state.items.map((i) => [i.key, i.createdIndex, i.modifiedIndex]),
      [
        ['/apisix/routes/a', 1, 1],
        ['/apisix/routes/b', 1, 1],
        ['/apisix/routes/c', 1, 1],
      ],
    );
    assert.equal(state.revision, 7);
    assert.equal(errors.length, 1);
    assert.match(errors[0]!, /\/apisix\/routes\/bad is not JSON/);
    kv.data.set('/apisix/_meta/revision', { value: '8' });
    advance(1000);
    assert.equal(await store.ensureFresh(), false, 'the revision moved but nothing changed');
    assert.equal(errors.length, 1, 'the same bad value is not reported again');
  });

  test('every resource kind, nested credential keys too: written, listed in etcd byte order, deleted (issue 13)', async () => {
    const kv = new FakeKV();
    const { store } = await open(kv);
    const keys = [
      '/apisix/consumer_groups/g',
      '/apisix/consumers/jack',
      '/apisix/consumers/jack-x',
      '/apisix/consumers/jack/credentials/1',
      '/apisix/global_rules/1',
      '/apisix/plugin_configs/p',
      '/apisix/plugin_metadata/openfunction',
      '/apisix/services/s',
    ];
    for (const key of [...keys].reverse()) await store.put(key, { id: key.split('/').pop() });
    assert.deepEqual((await store.load()).items.map((i) => i.key), keys);
    assert.ok(kv.data.has('/apisix/consumers/jack/credentials/1'), 'the KV key is the etcd key');
    assert.ok((await store.delete('/apisix/consumers/jack/credentials/1')) !== undefined);
    assert.equal(await store.get('/apisix/consumers/jack/credentials/1'), undefined);
    // A second isolate reads the same keys from KV.
    const other = await open(kv);
    assert.deepEqual((await other.store.load()).items.map((i) => i.key), keys.filter((k) => !k.includes('/credentials/')));
  });

  test('ensureFresh: one read per TTL; a moved revision reloads, notifies watchers and resolves true', async () => {
    const kv = new FakeKV();
    const { store, advance } = await open(kv);
    await store.load();
    let notified = 0;
    store.watch(() => notified++);
    const reads = kv.reads;
    assert.equal(await store.ensureFresh(), false);
    assert.equal(kv.reads, reads, 'within the TTL nothing is read');
    kv.data.set('/apisix/routes/x', { value: JSON.stringify({ uri: '/x' }) });
    advance(1000);
    assert.equal(await store.ensureFresh(), false, 'no revision bump, no full reload: not seen yet');
    kv.data.set('/apisix/_meta/revision', { value: 'bumped-by-hand' });
    advance(1000);
    assert.equal(await store.ensureFresh(), true);
    await new Promise((r) => setTimeout(r, 0));
    assert.equal(notified, 1);
    assert.deepEqual(
      (await store.load()).items.map((i) => i.key),
      ['/apisix/routes/x'],
    );
  });

  test('own writes are visible at once and survive stale reloads until KV catches up', async () => {
    const kv = new FakeKV();
    const { store, advance } = await open(kv, { cacheTtlMs: 0, fullReloadMs: 1, ownWritesMs: 60_000 });
    await store.load();
    kv.freeze(); // from now on KV answers reads with the old data
    const { item, created } = await store.put('/apisix/routes/mine', { uri: '/mine' });
    assert.equal(created, true);
    assert.ok(item.modifiedIndex > 0 && item.createdIndex === item.modifiedIndex);
    assert.deepEqual(
      (await store.load()).items.map((i) => i.key),
      ['/apisix/routes/mine'],
    );
    advance(10);
    await store.ensureFresh(); // full reload over the stale KV
    assert.deepEqual(
      (await store.load()).items.map((i) => i.key),
      ['/apisix/routes/mine'],
      'not undone by a stale read',
    );
    assert.equal((await store.get('/apisix/routes/mine'))?.value.uri, '/mine');
    advance(61_000);
    await store.ensureFresh();
    assert.deepEqual((await store.load()).items, [], 'after ownWritesMs KV is believed again');
    kv.thaw();
    advance(10);
    await store.ensureFresh();
    assert.deepEqual(
      (await store.load()).items.map((i) => i.key),
      ['/apisix/routes/mine'],
    );
  });

  test('CAS within an isolate is exact: of concurrent creates exactly one wins', async () => {
    const kv = new FakeKV();
    const { store } = await open(kv);
    const results = await Promise.allSettled(
      Array.from({ length: 8 }, (_, i) => store.put('/apisix/routes/race', { uri: `/${i}` }, { expect: 0 })),
    );
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
    for (const r of results) if (r.status === 'rejected') assert.ok(r.reason instanceof StoreConflictError);
    const cur = await store.get('/apisix/routes/race');
    const ok = await store.put('/apisix/routes/race', { uri: '/next' }, { expect: cur!.modifiedIndex });
    assert.equal(ok.created, false);
    assert.equal(ok.item.createdIndex, cur!.createdIndex);
    assert.ok(ok.item.modifiedIndex > cur!.modifiedIndex);
    await assert.rejects(
      store.put('/apisix/routes/race', { uri: '/stale' }, { expect: cur!.modifiedIndex }),
      StoreConflictError,
    );
    assert.equal(await store.delete('/apisix/routes/nope'), undefined);
    assert.equal((await store.delete('/apisix/routes/race'))?.value.uri, '/next');
    assert.equal(kv.data.has('/apisix/routes/race'), false);
  });

  test('revisions and ids grow; a throttled write (429) is retried', async () => {
    const kv = new FakeKV();
    const { store, sleeps } = await open(kv);
    const a = await store.nextId();
    const b = await store.nextId();
    assert.ok(b > a && Number.isSafeInteger(b));
    assert.equal(kv.data.get('/apisix/_meta/revision')?.value, String(b));
    kv.throttleNextPuts = 2;
    const { item } = await store.put('/apisix/routes/t', { uri: '/t' });
    assert.deepEqual(sleeps, [1000, 2000]);
    assert.ok(item.modifiedIndex > b);
    kv.throttleNextPuts = 3;
    await assert.rejects(
      store.put('/apisix/routes/t', { uri: '/u' }),
      (err: Error) => err instanceof StoreError && /429/.test(err.message),
    );
    await assert.rejects(store.put('/apisix/_meta/x', { a: 1 }), StoreError);
  });
});

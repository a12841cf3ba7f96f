// The Admin API's compare-and-set writes (casWrite in src/core/admin/crud.ts) over a store whose get() trails
// the back end, as the etcd store's mirror does while its watch is behind: a failed compare must be retried from
// the back end's state (StoreConflictError.latest or getLatest()), never from the stale copy, and never end in an
// unconditional write. The etcd version of this runs in test/e2e/etcd.test.ts.
// Run: node --import tsx --test test/unit/admin-cas.test.ts
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { copyItem } from '../../src/store/memory.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import type { ConfigStore, PutOptions, StoredItem, StoreState } from '../../src/store/types.ts';
import { StoreConflictError } from '../../src/store/types.ts';
import { TEST_ADMIN_KEY, testAdmin } from '../helpers/admin.ts';

const KEY = TEST_ADMIN_KEY;

interface Options {
  /** Conflicts carry the back end's state, as the etcd store's do. */
  latestInError?: boolean;
  /** The store has getLatest() (the etcd store has). */
  withGetLatest?: boolean;
  /** Every conditional put fails its compare. */
  alwaysConflict?: boolean;
}

/**
 * A store over a MemoryStore (the "back end") whose get() and load() answer from a copy taken by `freeze()`
 * and refreshed only by `thaw()`: a mirror whose watch is held back.
 */
class LaggingStore implements ConfigStore {
  readonly kind = 'lagging';
  readonly prefix = '/apisix';
  readonly backend = new MemoryStore();
  readonly puts: PutOptions[] = [];
  getLatestCalls = 0;
  private frozen: Map<string, StoredItem> | undefined;
  getLatest?: (key: string) => Promise<StoredItem | undefined>;

  constructor(private readonly opts: Options) {
    if (opts.withGetLatest) {
      this.getLatest = async (key) => {
        this.getLatestCalls++;
        return this.backend.get(key);
      };
    }
  }

  async freeze(): Promise<void> {
    this.frozen = new Map((await this.backend.load()).items.map((i) => [i.key, copyItem(i)]));
  }

  async load(): Promise<StoreState> {
    const state = await this.backend.load();
    return this.frozen ? { revision: state.revision, items: [...this.frozen.values()] } : state;
  }

  async get(key: string): Promise<StoredItem | undefined> {
    if (!this.frozen) return this.backend.get(key);
    const it = this.frozen.get(key);
    return it && copyItem(it);
  }

  async put(key: string, value: Record<string, unknown>, opts: PutOptions = {}) {
    this.puts.push({ ...opts });
    if (this.opts.alwaysConflict && opts.expect !== undefined) {
      const item = await this.backend.get(key);
      throw new StoreConflictError(`${key} changed`, { item, modifiedIndex: item?.modifiedIndex ?? 0 });
    }
    try {
      return await this.backend.put(key, value, opts);
    } catch (err) {
      if (!(err instanceof StoreConflictError) || !this.opts.latestInError) throw err;
      const item = await this.backend.get(key);
      throw new StoreConflictError(err.message, { item, modifiedIndex: item?.modifiedIndex ?? 0 });
    }
  }

  delete(key: string, opts?: PutOptions) {
    return this.backend.delete(key, opts);
  }
  nextId() {
    return this.backend.nextId();
  }
  watch(onChange: () => void) {
    return this.backend.watch(onChange);
  }
  close() {
    return this.backend.close();
  }
}

function admin(store: ConfigStore) {
  let now = 1_800_000_000;
  const app = testAdmin({ store, now: () => now++ });
  return async (method: string, path: string, body?: unknown) => {
    const res = await app.request(`http://admin.test/apisix/admin${path}`, {
      method,
      headers: { 'x-api-key': KEY },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, text, json: JSON.parse(text) };
  };
}

const route = (uri: string) => ({ uri, plugins: { openfunction: { function_uri: 'http://127.0.0.1:1/f' } } });
/** A route as another gateway (or APISIX) stored it, with its own create_time. */
const stored = (uri: string) => ({ ...route(uri), id: 'r1', create_time: 1_700_000_000, update_time: 1_700_000_000 });

describe('Admin API compare-and-set over a copy that trails the back end', () => {
  for (const [name, opts] of [
    ['as the etcd store: the conflict carries the current state, getLatest() reads one', { latestInError: true, withGetLatest: true }],
    ['only getLatest()', { withGetLatest: true }],
  ] as const) {
    test(`${name}: a PUT keeps create_time, a PATCH of a key the copy lacks applies, no update is lost`, async () => {
      const store = new LaggingStore(opts);
      await store.backend.put('/apisix/routes/r3', { ...stored('/three'), id: 'r3' });
      await store.freeze(); // the copy holds r3 as it is now, nothing else
      await store.backend.put('/apisix/routes/r1', stored('/one'));
      await store.backend.put('/apisix/routes/r3', { ...stored('/three'), id: 'r3', name: 'renamed' });
      const call = admin(store);

      const put = await call('PUT', '/routes/r1', route('/one-b'));
      assert.equal(put.status, 200, put.text);
      assert.equal(put.json.value.create_time, 1_700_000_000, 'create_time of the stored route, not of the copy');
      assert.equal((await store.backend.get('/apisix/routes/r1'))?.value.create_time, 1_700_000_000);

      await store.backend.put('/apisix/routes/r2', { ...stored('/two'), id: 'r2' });
      const patch = await call('PATCH', '/routes/r2', { desc: 'patched' });
      assert.equal(patch.status, 200, `a PATCH of an existing route is not a 404: ${patch.text}`);
      assert.equal(patch.json.value.desc, 'patched');
      assert.equal(patch.json.value.uri, '/two');
      assert.equal(patch.json.value.create_time, 1_700_000_000);

      // r3 changed in the back end after the copy was taken: the PATCH applies to the current value.
      const p3 = await call('PATCH', '/routes/r3', { desc: 'patched' });
      assert.equal(p3.status, 200, p3.text);
      assert.equal(p3.json.value.name, 'renamed', 'the change the copy had not seen is kept');
      assert.equal(p3.json.value.desc, 'patched');

      // A key missing in the back end too is still a 404.
      const missing = await call('PATCH', '/routes/none', { desc: 'x' });
      assert.equal(missing.status, 404, missing.text);
      assert.ok(
        store.puts.every((p) => p.expect !== undefined),
        `every write is conditional: ${JSON.stringify(store.puts)}`,
      );
    });
  }

  test('DELETE of a key the copy lacks deletes it; an invalid PATCH of such a key is a 400, not a 404', async () => {
    const store = new LaggingStore({ latestInError: true, withGetLatest: true });
    await store.freeze(); // the copy is empty
    await store.backend.put('/apisix/routes/r1', stored('/one'));
    await store.backend.put('/apisix/routes/r2', { ...stored('/two'), id: 'r2' });
    const call = admin(store);

    const bad = await call('PATCH', '/routes/r2', { uri: 42 });
    assert.equal(bad.status, 400, `the route exists in the back end; the merge is what is wrong: ${bad.text}`);
    assert.equal((await store.backend.get('/apisix/routes/r2'))?.value.uri, '/two', 'nothing written');

    const del = await call('DELETE', '/routes/r1');
    assert.equal(del.status, 200, del.text);
    assert.equal(await store.backend.get('/apisix/routes/r1'), undefined);
    assert.equal((await call('DELETE', '/routes/none')).status, 404);
  });

  test('a store whose get() is current needs no second read for a 404', async () => {
    const store = new LaggingStore({ withGetLatest: false });
    const call = admin(store);
    assert.equal((await call('PATCH', '/routes/none', { desc: 'x' })).status, 404);
    assert.deepEqual(store.puts, []);
  });

  test('30 concurrent PUTs to one id all succeed (APISIX: a plain set), all conditional, create_time kept', async () => {
    const store = new LaggingStore({ latestInError: true, withGetLatest: true });
    await store.backend.put('/apisix/routes/r1', stored('/one'));
    await store.freeze();
    const call = admin(store);
    const results = await Promise.all(Array.from({ length: 30 }, (_, i) => call('PUT', '/routes/r1', route(`/one-${i}`))));
    assert.deepEqual(
      results.map((r) => r.status),
      Array(30).fill(200),
      results.find((r) => r.status !== 200)?.text,
    );
    for (const r of results) assert.equal(r.json.value.create_time, 1_700_000_000);
    assert.ok(store.puts.every((p) => p.expect !== undefined));
    const last = await store.backend.get('/apisix/routes/r1');
    assert.ok(results.some((r) => r.json.value.uri === last?.value.uri), 'etcd holds one of the acknowledged bodies');
  });

  test('every attempt loses its race: 503, only conditional writes, nothing written', async () => {
    const store = new LaggingStore({ alwaysConflict: true, withGetLatest: true });
    await store.backend.put('/apisix/routes/r1', stored('/one'));
    const before = await store.backend.get('/apisix/routes/r1');
    const call = admin(store);
    for (const [method, body] of [
      ['PUT', route('/one-b')],
      ['PATCH', { desc: 'x' }],
    ] as const) {
      store.puts.length = 0;
      const res = await call(method, '/routes/r1', body);
      assert.equal(res.status, 503, res.text);
      assert.equal(res.json.error_msg, 'value changed before overwritten');
      // PUT is a plain set in APISIX: it keeps retrying much longer than a PATCH before giving up.
      assert.equal(store.puts.length, method === 'PUT' ? 100 : 5, `${method} attempts`);
      assert.ok(
        store.puts.every((p) => p.expect === before?.modifiedIndex),
        `${method}: every attempt compared against the stored revision: ${JSON.stringify(store.puts)}`,
      );
    }
    assert.deepEqual(await store.backend.get('/apisix/routes/r1'), before, 'nothing was written');
  });
});

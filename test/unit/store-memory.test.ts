import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { compareKeys, MemoryStore, normalizePrefix, StoreTable, stateFromItems } from '../../src/store/memory.ts';
import type { ConfigStore } from '../../src/store/types.ts';
import { StoreConflictError, StoreError } from '../../src/store/types.ts';

const tick = () => new Promise<void>((r) => setTimeout(r, 0));

describe('MemoryStore', () => {
  test('lists items in key byte order (etcd range order)', async () => {
    const s = new MemoryStore();
    for (const k of ['routes/2', 'routes/10', 'upstreams/1', 'routes/1', 'routes/a', 'routes/B', 'consumers/jack']) {
      await s.put(`/apisix/${k}`, { id: k.split('/')[1] });
    }
    const { items } = await s.load();
    assert.deepEqual(
      items.map((i) => i.key),
      [
        '/apisix/consumers/jack',
        '/apisix/routes/1',
        '/apisix/routes/10',
        '/apisix/routes/2',
        '/apisix/routes/B',
        '/apisix/routes/a',
        '/apisix/upstreams/1',
      ],
    );
  });

  test('compareKeys is UTF-8 byte order, also for astral vs U+E000..U+FFFF characters', () => {
    const keys = ['/a/\u{1F600}', '/a/\uFF21', '/a/z', '/a/é', '/a/', '/a/Z', '/a/\uE000', '/a/\u{10000}x'];
    const bytes = [...keys].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    assert.deepEqual([...keys].sort(compareKeys), bytes);
  });

  test('revisions: one store-wide counter, createdIndex kept, modifiedIndex moves', async () => {
    const s = new MemoryStore();
    assert.equal((await s.load()).revision, 0);
    const a = await s.put('/apisix/routes/1', { uri: '/a' });
    assert.deepEqual([a.created, a.item.createdIndex, a.item.modifiedIndex], [true, 1, 1]);
    const b = await s.put('/apisix/upstreams/1', { type: 'roundrobin' });
    assert.deepEqual([b.item.createdIndex, b.item.modifiedIndex], [2, 2]);
    const c = await s.put('/apisix/routes/1', { uri: '/c' });
    assert.deepEqual([c.created, c.item.createdIndex, c.item.modifiedIndex], [false, 1, 3]);
    assert.equal((await s.load()).revision, 3);
    const gone = await s.delete('/apisix/upstreams/1');
    assert.equal(gone?.modifiedIndex, 2);
    assert.equal((await s.load()).revision, 4);
    assert.equal(await s.delete('/apisix/upstreams/1'), undefined);
    assert.equal((await s.load()).revision, 4, 'deleting a missing key makes no revision');
    assert.equal(await s.nextId(), 5);
    assert.equal(await s.nextId(), 6);
    const d = await s.put('/apisix/routes/2', { uri: '/d' });
    assert.equal(d.item.modifiedIndex, 7);
    assert.equal((await s.get('/apisix/routes/1'))?.value.uri, '/c');
    assert.equal(await s.get('/apisix/routes/404'), undefined);
  });

  test('compare-and-set: expect 0, expect n, mismatch', async () => {
    await casContract(new MemoryStore());
  });

  test('watch: async, once per change, unsubscribe, a throwing listener does not stop others', async () => {
    const errors: unknown[] = [];
    const s = new MemoryStore({ onListenerError: (e) => errors.push(e) });
    let a = 0;
    let b = 0;
    s.watch(() => {
      throw new Error('boom');
    });
    const offA = s.watch(() => a++);
    s.watch(() => b++);
    const p = s.put('/apisix/routes/1', { uri: '/' });
    assert.equal(a, 0, 'not called synchronously');
    await p;
    await tick();
    assert.deepEqual([a, b, errors.length], [1, 1, 1]);
    await s.put('/apisix/routes/2', { uri: '/' });
    await s.delete('/apisix/routes/2');
    await tick();
    assert.deepEqual([a, b], [3, 3]);
    await s.delete('/apisix/routes/404'); // no change
    await s.nextId(); // no config change
    await assert.rejects(s.put('/apisix/routes/1', {}, { expect: 0 }), StoreConflictError);
    await tick();
    assert.deepEqual([a, b], [3, 3]);
    const p3 = s.put('/apisix/routes/3', {});
    offA(); // unsubscribed before delivery: not called
    await p3;
    await tick();
    assert.deepEqual([a, b], [3, 4]);
  });

  test('values are copied in and out and normalised like JSON', async () => {
    const s = new MemoryStore();
    const input: Record<string, unknown> = { uri: '/x', nested: { a: 1 }, gone: undefined };
    const { item } = await s.put('/apisix/routes/1', input);
    assert.deepEqual(item.value, { uri: '/x', nested: { a: 1 } });
    (input.nested as { a: number }).a = 2;
    (item.value.nested as { a: number }).a = 3;
    const got = await s.get('/apisix/routes/1');
    assert.deepEqual(got?.value, { uri: '/x', nested: { a: 1 } });
    (got!.value as { uri: string }).uri = '/changed';
    assert.equal((await s.load()).items[0]?.value.uri, '/x');
    await assert.rejects(s.put('/apisix/routes/2', [] as unknown as Record<string, unknown>), TypeError);
    await assert.rejects(s.put('/apisix/routes/2', { n: 1n }), TypeError);
    assert.equal((await s.load()).revision, 1, 'rejected values make no revision');
  });

  test('keys must lie under the prefix; the prefix is normalised', async () => {
    const s = new MemoryStore({ prefix: 'gw/' });
    assert.equal(s.prefix, '/gw');
    await assert.rejects(s.put('/apisix/routes/1', {}), StoreError);
    await assert.rejects(s.put('/gw/', {}), StoreError);
    await s.put('/gw/routes/1', {});
    assert.equal((await s.load()).items.length, 1);
    assert.equal(normalizePrefix(), '/apisix');
    assert.throws(() => normalizePrefix('/'), RangeError);
  });

  test('fromItems / stateFromItems seed a store (indexes filled in list order, keys sorted)', async () => {
    const s = MemoryStore.fromItems([
      { key: '/apisix/routes/2', value: { uri: '/2' } },
      { key: '/apisix/routes/10', value: { uri: '/10' }, modifiedIndex: 5, createdIndex: 3 },
      { key: '/apisix/routes/1', value: { uri: '/1' } },
    ]);
    const st = await s.load();
    assert.equal(st.revision, 7);
    assert.deepEqual(
      st.items.map((i) => [i.key, i.createdIndex, i.modifiedIndex]),
      [
        ['/apisix/routes/1', 7, 7],
        ['/apisix/routes/10', 3, 5],
        ['/apisix/routes/2', 6, 6],
      ],
    );
    const { item } = await s.put('/apisix/routes/3', {});
    assert.equal(item.modifiedIndex, 8);
    assert.equal(stateFromItems([], 42).revision, 42);
    assert.throws(
      () =>
        stateFromItems([
          { key: '/a/b', value: {} },
          { key: '/a/b', value: {} },
        ]),
      /duplicate key/,
    );
    // Items outside the prefix are kept but never listed.
    const other = new MemoryStore({ state: stateFromItems([{ key: '/other/routes/1', value: {} }]) });
    assert.deepEqual((await other.load()).items, []);
  });

  test('StoreTable.clone is independent of the original', () => {
    const t = new StoreTable();
    t.put('/apisix/routes/1', { v: 1 });
    const c = t.clone();
    c.put('/apisix/routes/1', { v: 2 });
    c.put('/apisix/routes/0', { v: 0 });
    assert.equal(t.revision, 1);
    assert.deepEqual(
      t.items().map((i) => i.value),
      [{ v: 1 }],
    );
    assert.deepEqual(
      c.items().map((i) => i.value),
      [{ v: 0 }, { v: 2 }],
    );
  });

  test('close: later calls fail, listeners dropped', async () => {
    const s = new MemoryStore();
    let n = 0;
    s.watch(() => n++);
    await s.close();
    await assert.rejects(s.load(), StoreError);
    await assert.rejects(s.put('/apisix/routes/1', {}), StoreError);
    await tick();
    assert.equal(n, 0);
  });
});

/** CAS behaviour every writable driver shares. */
async function casContract(s: ConfigStore): Promise<void> {
  const k = `${s.prefix}/routes/cas`;
  const a = await s.put(k, { v: 1 }, { expect: 0 });
  assert.equal(a.created, true);
  await assert.rejects(s.put(k, { v: 2 }, { expect: 0 }), StoreConflictError);
  const rev = (await s.load()).revision;
  await assert.rejects(s.put(k, { v: 2 }, { expect: a.item.modifiedIndex + 100 }), (e: unknown) => {
    assert.ok(e instanceof StoreConflictError && e instanceof StoreError);
    assert.match(e.message, /routes\/cas/);
    return true;
  });
  assert.equal((await s.load()).revision, rev, 'a failed CAS makes no revision');
  assert.deepEqual((await s.get(k))?.value, { v: 1 });
  const b = await s.put(k, { v: 2 }, { expect: a.item.modifiedIndex });
  assert.equal(b.created, false);
  await assert.rejects(s.put(k, { v: 3 }, { expect: a.item.modifiedIndex }), StoreConflictError, 'stale index');
  await assert.rejects(s.put(`${s.prefix}/routes/none`, {}, { expect: 7 }), StoreConflictError, 'missing key, n>0');
  await assert.rejects(s.delete(k, { expect: a.item.modifiedIndex }), StoreConflictError);
  await assert.rejects(s.delete(k, { expect: 0 }), StoreConflictError);
  assert.equal(await s.delete(`${s.prefix}/routes/none`, { expect: 0 }), undefined);
  assert.equal((await s.delete(k, { expect: b.item.modifiedIndex }))?.modifiedIndex, b.item.modifiedIndex);
  assert.equal(await s.get(k), undefined);
  await assert.rejects(s.put(k, {}, { expect: -1 }), RangeError);
}

// Every resource the Admin API stores, in the stores that run in Node without a service: APISIX's etcd keys
// for services, plugin_configs, global_rules, consumer_groups, plugin_metadata and nested credential keys
// (`/apisix/consumers/jack/credentials/1`): written, listed in etcd byte order, read, watched and deleted. The
// standalone format takes the same top-level lists as APISIX's apisix.yaml (core/config_yaml.lua: an item's key is
// its `id`, else a consumer's `username`; a credential is a `consumers` item whose id is
// `<username>/credentials/<id>`; plugin_metadata is keyed by the plugin name in `id`).
// Workers KV: worker-kv.test.ts; Deno KV and etcd use the same generic keys (deno-kv.ts, etcd.ts).
// Run: node --import tsx --test test/unit/store-resources.test.ts
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { FileStore } from '../../src/store/file.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import { loadYamlParser, parseStandalone } from '../../src/store/standalone.ts';
import type { ConfigStore } from '../../src/store/types.ts';

const KEYS = [
  '/apisix/consumer_groups/g',
  '/apisix/consumers/jack',
  '/apisix/consumers/jack-x',
  '/apisix/consumers/jack/credentials/1',
  '/apisix/global_rules/1',
  '/apisix/plugin_configs/p',
  '/apisix/plugin_metadata/openfunction',
  '/apisix/services/s',
];

async function contract(store: ConfigStore): Promise<void> {
  let changes = 0;
  const stop = store.watch(() => changes++);
  for (const key of [...KEYS].reverse()) await store.put(key, { id: key.split('/').pop() });
  const state = await store.load();
  // etcd byte order: `jack-x` ('-' 0x2d) before `jack/credentials/1` ('/' 0x2f).
  assert.deepEqual(
    state.items.map((i) => i.key),
    KEYS,
  );
  assert.deepEqual((await store.get('/apisix/consumers/jack/credentials/1'))?.value, { id: '1' });
  assert.ok((await store.delete('/apisix/consumers/jack/credentials/1')) !== undefined);
  assert.equal(await store.get('/apisix/consumers/jack/credentials/1'), undefined);
  assert.equal((await store.get('/apisix/consumers/jack'))?.value.id, 'jack', 'the consumer stays');
  await new Promise((r) => setTimeout(r, 50));
  assert.ok(changes >= 1, 'writes of the new keys are watched');
  stop();
}

describe('stores hold every resource kind, nested credential keys included', () => {
  test('memory store', async () => {
    const store = new MemoryStore();
    await contract(store);
    await store.close();
  });

  test('file store, also after a reopen', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fngate-res-'));
    try {
      const store = await FileStore.open({ dir, watchFile: false });
      await contract(store);
      await store.close();
      const again = await FileStore.open({ dir, watchFile: false });
      const keys = (await again.load()).items.map((i) => i.key);
      assert.deepEqual(keys, KEYS.filter((k) => !k.includes('/credentials/')));
      await again.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('standalone file: APISIX apisix.yaml lists of every resource', () => {
  before(loadYamlParser);
  test('services, consumers (+ credentials by id), plugin_configs, global_rules, consumer_groups, plugin_metadata', () => {
    const yaml = `
services:
  - id: s
    upstream: { type: roundrobin, nodes: { "127.0.0.1:1980": 1 } }
consumers:
  - username: jack
  - id: jack/credentials/1
    plugins: { key-auth: { key: k } }
plugin_configs:
  - id: p
    plugins: {}
global_rules:
  - id: 1
    plugins: {}
consumer_groups:
  - id: g
    plugins: {}
plugin_metadata:
  - id: openfunction
    any: thing
#END
`;
    const st = parseStandalone(yaml, { format: 'yaml', env: {} });
    assert.deepEqual(
      st.items.map((i) => i.key),
      KEYS.filter((k) => k !== '/apisix/consumers/jack-x'),
    );
    const cred = st.items.find((i) => i.key.endsWith('/credentials/1'));
    assert.equal(cred?.value.id, 'jack/credentials/1', 'APISIX keeps the whole id as value.id');
  });
});

// The Admin API's resource registry (src/core/admin/resources.ts) where the conformance suite cannot reach it: no
// auth plugin ships yet, so consumer/credential plugin rules are checked here with a small auth-type plugin
// registered only in this test (APISIX: t/admin/consumers*.t, credentials.t, consumer.lua check_duplicate_key),
// and a plugin with a metadata schema (t/admin/plugin-metadata.t). Also: secrets sealed in consumers, nested
// credential keys in the memory store.
// Run: node --import tsx --test test/unit/admin-resources.test.ts
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import * as v from 'valibot';
import { openfunction } from '../../src/core/plugins/openfunction.ts';
import { pluginRegistry } from '../../src/core/plugins/index.ts';
import type { AnyPlugin } from '../../src/core/plugins/types.ts';
import { createKeyring } from '../../src/core/secrets.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import { TEST_ADMIN_KEY, testAdmin } from '../helpers/admin.ts';

/** key-auth's shape: an empty route conf, a consumer conf with the key (a secret field), and metadata. */
const testKeyAuth: AnyPlugin = {
  name: 'test-key-auth',
  priority: 2500,
  version: 0.1,
  type: 'auth',
  schema: v.strictObject({ header: v.optional(v.string()) }),
  consumerSchema: v.strictObject({ key: v.pipe(v.string(), v.minLength(1)) }),
  metadataSchema: v.strictObject({ ikey: v.number(), skey: v.optional(v.string()) }),
  consumerKey: 'key',
  secretFields: ['key'],
  create: () => ({}),
};

function setup(opts: { keyring?: Awaited<ReturnType<typeof createKeyring>> } = {}) {
  const store = new MemoryStore();
  const app = testAdmin({ store, plugins: pluginRegistry([openfunction, testKeyAuth]), keyring: opts.keyring });
  const call = async (method: string, path: string, body?: unknown) => {
    const res = await app.fetch(
      new Request(`http://admin.test/apisix/admin${path}`, {
        method,
        headers: { 'x-api-key': TEST_ADMIN_KEY },
        body: body === undefined ? undefined : JSON.stringify(body),
      }),
    );
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : undefined, text };
  };
  return { store, call };
}

const auth = (key: string) => ({ 'test-key-auth': { key } });

describe('consumers and credentials with an auth plugin', () => {
  test('consumer confs are checked with the consumer schema: APISIX\'s "invalid plugins configuration" prefix', async () => {
    const { call } = setup();
    const bad = await call('PUT', '/consumers/jack', { username: 'jack', plugins: { 'test-key-auth': {} } });
    assert.equal(bad.status, 400);
    assert.equal(
      bad.json.error_msg,
      'invalid plugins configuration: failed to check the configuration of plugin test-key-auth err: property "key" is required',
    );
    assert.equal((await call('PUT', '/consumers/jack', { username: 'jack', plugins: auth('k1') })).status, 201);
    // On a route the same plugin is checked with its route schema: `key` is not a route field.
    const onRoute = await call('PUT', '/routes/r1', { uri: '/r', plugins: auth('k1') });
    assert.equal(onRoute.status, 400);
    assert.match(onRoute.json.error_msg, /additional properties forbidden, found key/);
  });

  test('duplicate keys across consumers and credentials are refused; a consumer may reuse its own', async () => {
    const { call } = setup();
    assert.equal((await call('PUT', '/consumers/jack', { username: 'jack', plugins: auth('auth-one') })).status, 201);
    const dup = await call('PUT', '/consumers/rose', { username: 'rose', plugins: auth('auth-one') });
    assert.equal(dup.status, 400);
    assert.equal(dup.json.error_msg, 'duplicate key of plugin test-key-auth found with consumer: jack');
    assert.equal((await call('GET', '/consumers/rose')).status, 404, 'a refused write stores nothing');
    // Replacing jack with the same key is not a duplicate of itself.
    assert.equal((await call('PUT', '/consumers/jack', { username: 'jack', plugins: auth('auth-one') })).status, 200);

    assert.equal((await call('PUT', '/consumers/alex', { username: 'alex' })).status, 201);
    assert.equal((await call('PUT', '/consumers/alex/credentials/c', { plugins: auth('cred-key') })).status, 201);
    const byCred = await call('PUT', '/consumers/rose', { username: 'rose', plugins: auth('cred-key') });
    assert.equal(byCred.json.error_msg, 'duplicate key of plugin test-key-auth found with credential: c of consumer: alex');
    const credVsConsumer = await call('PUT', '/consumers/alex/credentials/d', { plugins: auth('auth-one') });
    assert.equal(credVsConsumer.json.error_msg, 'duplicate key of plugin test-key-auth found with consumer: jack');
    const credVsCred = await call('PUT', '/consumers/alex/credentials/d', { plugins: auth('cred-key') });
    assert.equal(credVsCred.json.error_msg, 'duplicate key of plugin test-key-auth found with credential: c of consumer: alex');
    // A credential replaced with its own key; alex's own consumer conf may use its credential's key.
    assert.equal((await call('PUT', '/consumers/alex/credentials/c', { plugins: auth('cred-key') })).status, 200);
    assert.equal((await call('PUT', '/consumers/alex', { username: 'alex', plugins: auth('cred-key') })).status, 200);
    // Secret references cannot be resolved at write time: not checked.
    for (const u of ['s1', 's2']) {
      assert.equal((await call('PUT', `/consumers/${u}`, { username: u, plugins: auth('$env://SHARED') })).status, 201);
    }
  });

  test('a credential takes one auth plugin, checked with its consumer schema', async () => {
    const { call } = setup();
    assert.equal((await call('PUT', '/consumers/jack', { username: 'jack' })).status, 201);
    const res = await call('PUT', '/consumers/jack/credentials/34010989-ce4e', { plugins: auth('p7a3k6r4t9'), labels: { custom_id: 'x' } });
    assert.equal(res.status, 201, res.text);
    assert.equal(res.json.key, '/apisix/consumers/jack/credentials/34010989-ce4e');
    assert.equal(res.json.value.id, '34010989-ce4e');
    const notAuth = await call('PUT', '/consumers/jack/credentials/x', { plugins: { openfunction: { function_uri: 'http://127.0.0.1:1/' } } });
    assert.equal(notAuth.json.error_msg, 'only supports auth type plugins in consumer credential');
    const bad = await call('PUT', '/consumers/jack/credentials/x', { plugins: { 'test-key-auth': {} } });
    assert.match(bad.json.error_msg, /^invalid plugins configuration: failed to check the configuration of plugin test-key-auth err: property "key" is required$/);
  });

  test('with DATA_ENCRYPTION_KEY a consumer\'s key is sealed at rest, shown in clear by GET, and still a duplicate', async () => {
    const keyring = await createKeyring(['edd1c9f0985e76a2']);
    const { call, store } = setup({ keyring });
    const put = await call('PUT', '/consumers/jack', { username: 'jack', plugins: auth('the-key') });
    assert.equal(put.status, 201);
    const stored = await store.get('/apisix/consumers/jack');
    assert.ok(stored);
    const sealed = (stored.value.plugins as Record<string, { key: string }>)['test-key-auth']!.key;
    assert.notEqual(sealed, 'the-key');
    assert.equal((await call('GET', '/consumers/jack')).json.value.plugins['test-key-auth'].key, 'the-key');
    const dup = await call('PUT', '/consumers/rose', { username: 'rose', plugins: auth('the-key') });
    assert.equal(dup.json.error_msg, 'duplicate key of plugin test-key-auth found with consumer: jack');
  });

  test('deleting a consumer deletes its credentials from the store', async () => {
    const { call, store } = setup();
    await call('PUT', '/consumers/jack', { username: 'jack' });
    await call('PUT', '/consumers/jack/credentials/a', { plugins: auth('ka') });
    await call('PUT', '/consumers/jack/credentials/b', { plugins: auth('kb') });
    await call('PUT', '/consumers/jacky', { username: 'jacky' });
    await call('PUT', '/consumers/jacky/credentials/a', { plugins: auth('kc') });
    assert.equal((await call('DELETE', '/consumers/jack')).status, 200);
    assert.deepEqual(
      (await store.load()).items.map((i) => i.key),
      ['/apisix/consumers/jacky', '/apisix/consumers/jacky/credentials/a'],
    );
  });
});

describe('plugin_metadata and the plugin schema endpoints', () => {
  test('checked with the plugin\'s metadata schema (t/admin/plugin-metadata.t TEST 1, 7)', async () => {
    const { call } = setup();
    const ok = await call('PUT', '/plugin_metadata/test-key-auth', { skey: 'val', ikey: 1 });
    assert.equal(ok.status, 201);
    assert.deepEqual(ok.json, { key: '/apisix/plugin_metadata/test-key-auth', value: { skey: 'val', ikey: 1, id: 'test-key-auth' } });
    const bad = await call('PUT', '/plugin_metadata/test-key-auth', { skey: 'val' });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error_msg, 'invalid configuration: property "ikey" is required');
  });

  test('/schema/plugins/<name>?schema_type=consumer|metadata answer the plugin\'s own schemas', async () => {
    const { call } = setup();
    const consumer = await call('GET', '/schema/plugins/test-key-auth?schema_type=consumer');
    assert.equal(consumer.status, 200);
    assert.deepEqual(consumer.json.required, ['key']);
    const metadata = await call('GET', '/schema/plugins/test-key-auth?schema_type=metadata');
    assert.deepEqual(metadata.json.required, ['ikey']);
    const route = await call('GET', '/schema/plugins/test-key-auth');
    assert.ok(route.json.properties._meta, 'the route schema carries the injected _meta');
  });
});

describe('upstream.tls where the runtime cannot present a client certificate (Workers)', () => {
  test('refused with 400 naming the runtime, inline or by client_cert_id, in an upstream and a route; nothing stored', async () => {
    const store = new MemoryStore();
    const capabilities = { runtime: 'Cloudflare Workers', tlsVerifyOff: false, keepaliveRequests: false, upstreamClientCert: false };
    const app = testAdmin({ store, plugins: pluginRegistry([openfunction]), capabilities });
    const put = async (path: string, body: unknown) => {
      const res = await app.fetch(
        new Request(`http://admin.test/apisix/admin${path}`, {
          method: 'PUT',
          headers: { 'x-api-key': TEST_ADMIN_KEY },
          body: JSON.stringify(body),
        }),
      );
      return { status: res.status, json: await res.json() };
    };
    const upstream = { scheme: 'https', nodes: { '127.0.0.1:1': 1 }, tls: { client_cert_id: 'c1' } };
    const up = await put('/upstreams/1', upstream);
    assert.equal(up.status, 400);
    assert.match(up.json.error_msg, /^invalid configuration: property "tls" validation failed: client certificates to upstreams are not supported on Cloudflare Workers/);
    const route = await put('/routes/1', { uri: '/x', upstream });
    assert.equal(route.status, 400);
    assert.match(route.json.error_msg, /property "upstream" validation failed: property "tls" validation failed: .*mtls_certificates/);
    // Without a client certificate, `tls` (e.g. APISIX's kafka-only `verify`) is accepted.
    assert.equal((await put('/upstreams/2', { ...upstream, tls: { verify: true } })).status, 201);
    assert.equal((await store.load()).items.filter((i) => i.key.endsWith('/1')).length, 0);
  });
});

// Secrets at rest (src/core/secrets.ts): APISIX-compatible AES-CBC, keyrings, which fields are sealed.
// Run: node --import tsx --test test/unit/secrets.test.ts
import assert from 'node:assert/strict';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { pluginRegistry } from '../../src/core/plugins/index.ts';
import {
  createKeyring,
  createSecrets,
  KeyringError,
  metadataPluginOf,
  parseKeyring,
  secretPathsOf,
  secretValues,
  transformSecrets,
} from '../../src/core/secrets.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import { TEST_ADMIN_KEY, testAdmin } from '../helpers/admin.ts';

// APISIX t/plugin/openwhisk.t: TEST 4 stores this service_token with the default keyring, TEST 5 reads the
// ciphertext straight from etcd.
const OPENWHISK_TOKEN =
  '23bc46b1-71f6-4ed5-8c54-816aa4f8c502:123zO3xZCLrMN6v2BKK1dXYFpXlPkccOFqm12CdAsMgRU4VrNZ9lyGVCGuMDGIwP';
const OPENWHISK_CIPHERTEXT =
  'pe14btxogtzJ4qPM/W2qj0AQeUK/O5oegLkKJLkkSEsKUIjP+bgyO+qsTXuLrY/h/esLKrRulD2TOtf+Zt/Us+hxZ/svsMwXZqZ9T9/2wWyi8SKALLfTUZDiV69mxCwD2zNBze1jslMlPtdA9JFIOQ==';
/** APISIX's default `apisix.data_encryption.keyring`. */
const APISIX_KEYRING = ['qeddd145sfvddff3', 'edd1c9f0985e76a2'];

/** node:crypto reference: key = the key's bytes, IV = its first 16 bytes. */
function nodeEncrypt(key: string, plain: string): string {
  const k = Buffer.from(key);
  const c = createCipheriv(k.length === 32 ? 'aes-256-cbc' : 'aes-128-cbc', k, k.subarray(0, 16));
  return Buffer.concat([c.update(plain, 'utf8'), c.final()]).toString('base64');
}
function nodeDecrypt(key: string, b64: string): string {
  const k = Buffer.from(key);
  const d = createDecipheriv(k.length === 32 ? 'aes-256-cbc' : 'aes-128-cbc', k, k.subarray(0, 16));
  return Buffer.concat([d.update(Buffer.from(b64, 'base64')), d.final()]).toString('utf8');
}

describe('keyring', () => {
  test("interop: APISIX's openwhisk test token under its default key gives APISIX's ciphertext", async () => {
    const ring = await createKeyring(APISIX_KEYRING);
    assert.equal(await ring.encrypt(OPENWHISK_TOKEN), OPENWHISK_CIPHERTEXT);
    assert.equal(await ring.decrypt(OPENWHISK_CIPHERTEXT), OPENWHISK_TOKEN);
  });

  test('known answers against node:crypto, AES-128 and AES-256 (IV = first 16 bytes of the key)', async () => {
    const k16 = '0123456789abcdef';
    const k32 = '0123456789abcdef0123456789ABCDEF';
    for (const key of [k16, k32]) {
      const ring = await createKeyring([key]);
      for (const plain of ['', 'test:test', 'x'.repeat(16), 'ünïcødé:пароль', 'a'.repeat(1000)]) {
        const ours = await ring.encrypt(plain);
        assert.equal(ours, nodeEncrypt(key, plain), `${key.length}-byte key, ${JSON.stringify(plain)}`);
        assert.equal(nodeDecrypt(key, ours), plain);
      }
    }
    // A fixed vector, so that a change in both implementations cannot go unnoticed.
    assert.equal(await (await createKeyring([k16])).encrypt('test:test'), nodeEncrypt(k16, 'test:test'));
  });

  test('round trip of any text (fast-check)', async () => {
    const ring = await createKeyring(['qeddd145sfvddff3', '0123456789abcdef0123456789abcdef']);
    await fc.assert(
      fc.asyncProperty(fc.string({ unit: 'grapheme', maxLength: 200 }), async (s) => {
        assert.equal(await ring.decrypt(await ring.encrypt(s)), s);
      }),
      { seed: 4242, numRuns: 300 },
    );
  });

  test('decryption tries every key; encryption uses the first (key rotation)', async () => {
    const old = await createKeyring(['edd1c9f0985e76a2']);
    const sealedWithOld = await old.encrypt('user:secret');
    const rotated = await createKeyring(['qeddd145sfvddff3', 'edd1c9f0985e76a2']);
    assert.equal(await rotated.decrypt(sealedWithOld), 'user:secret');
    assert.equal(await rotated.encrypt('user:secret'), nodeEncrypt('qeddd145sfvddff3', 'user:secret'));
  });

  test('values no key decrypts give undefined: plaintext, bad base64, wrong length, wrong key', async () => {
    const ring = await createKeyring(['qeddd145sfvddff3']);
    const other = await createKeyring(['ffffffffffffffff']);
    for (const v of ['test:test', '', 'abc', '====', 'a b c d', 'QUJD', 'QUJDREVGR0hJSktMTU5PUA', await other.encrypt('x:y')]) {
      assert.equal(await ring.decrypt(v), undefined, JSON.stringify(v));
    }
  });

  test('parseKeyring: 16 or 32 bytes each, comma-separated; messages never repeat a key', () => {
    assert.deepEqual(parseKeyring('qeddd145sfvddff3, edd1c9f0985e76a2'), APISIX_KEYRING);
    assert.deepEqual(parseKeyring('0123456789abcdef0123456789abcdef'), ['0123456789abcdef0123456789abcdef']);
    for (const [bad, secret] of [
      ['qeddd145sfvddff3,tooshort', 'tooshort'],
      ['x'.repeat(24), 'x'.repeat(24)],
      ['abcdefghijklmnopq', 'abcdefghijklmnopq'],
    ] as const) {
      assert.throws(
        () => parseKeyring(bad),
        (err: Error) => err instanceof KeyringError && /each key must be 16 bytes/.test(err.message) && !err.message.includes(secret),
        bad,
      );
    }
    // 8 two-byte characters are 16 bytes of UTF-8: accepted, as APISIX counts bytes.
    assert.deepEqual(parseKeyring('éééééééé'), ['éééééééé']);
    assert.throws(() => parseKeyring('ééé'), /key 1 is 6 bytes long/);
  });

  test('createKeyring refuses an empty list and keys of other lengths', async () => {
    await assert.rejects(createKeyring([]), KeyringError);
    await assert.rejects(createKeyring(['0123456789']), KeyringError);
  });
});

describe('secret fields of plugins', () => {
  const registry = pluginRegistry();
  const paths = secretPathsOf(registry);
  const route = (token?: string) => ({
    uri: '/hello',
    plugins: {
      openfunction: {
        function_uri: 'http://127.0.0.1:30583/',
        ...(token === undefined ? {} : { authorization: { service_token: token } }),
      },
      'some-other-plugin': { service_token: 'not-a-secret-field-of-this-plugin' },
    },
  });

  test("openfunction declares authorization.service_token (APISIX's encrypt_fields)", () => {
    assert.deepEqual(paths.get('openfunction'), [['authorization', 'service_token']]);
  });

  test('the function platforms declare APISIX encrypt_fields; openwhisk.t TEST 5 and aws-lambda fields sealed', async () => {
    assert.deepEqual(paths.get('openwhisk'), [['service_token']]);
    assert.deepEqual(paths.get('azure-functions'), [['authorization', 'apikey']]);
    assert.deepEqual(paths.get('aws-lambda'), [
      ['authorization', 'apikey'],
      ['authorization', 'iam', 'accesskey'],
      ['authorization', 'iam', 'secretkey'],
    ]);
    const secrets = createSecrets(registry, await createKeyring(APISIX_KEYRING));
    const plain = {
      uri: '/x',
      plugins: {
        openwhisk: { api_host: 'http://127.0.0.1:3233', service_token: OPENWHISK_TOKEN, namespace: 'guest', action: 'a' },
        'aws-lambda': { function_uri: 'https://x.example', authorization: { apikey: 'k1', iam: { accesskey: 'ak', secretkey: 'sk' } } },
      },
    };
    // biome-ignore lint/suspicious/noExplicitAny: reading into a sealed copy
    const sealed = (await secrets.seal(plain)).plugins as Record<string, Record<string, any>>;
    assert.equal(sealed.openwhisk!.service_token, OPENWHISK_CIPHERTEXT);
    const aws = sealed['aws-lambda']!.authorization;
    assert.equal(aws.apikey, nodeEncrypt(APISIX_KEYRING[0]!, 'k1'));
    assert.equal(aws.iam.accesskey, nodeEncrypt(APISIX_KEYRING[0]!, 'ak'));
    assert.equal(aws.iam.secretkey, nodeEncrypt(APISIX_KEYRING[0]!, 'sk'));
    assert.deepEqual(await secrets.open({ ...plain, plugins: sealed }), plain);
  });

  test('seal encrypts only the declared fields, in a copy; open restores them', async () => {
    const secrets = createSecrets(registry, await createKeyring(APISIX_KEYRING));
    assert.equal(secrets.enabled, true);
    const plain = route(OPENWHISK_TOKEN);
    const before = structuredClone(plain);
    const sealed = await secrets.seal(plain);
    assert.deepEqual(plain, before, 'seal changed its input');
    const conf = (sealed.plugins as Record<string, Record<string, unknown>>).openfunction!;
    assert.deepEqual(conf.authorization, { service_token: OPENWHISK_CIPHERTEXT });
    assert.equal(conf.function_uri, 'http://127.0.0.1:30583/');
    assert.deepEqual((sealed.plugins as Record<string, unknown>)['some-other-plugin'], plain.plugins['some-other-plugin']);
    assert.deepEqual(await secrets.open(sealed), plain);
  });

  test('a resource without secret fields is returned as is (no copy)', async () => {
    const secrets = createSecrets(registry, await createKeyring(APISIX_KEYRING));
    const r = { uri: '/x', upstream: { nodes: { '127.0.0.1:1': 1 } } };
    assert.equal(await secrets.seal(r), r);
    const noToken = route();
    assert.deepEqual(await secrets.seal(noToken), noToken);
  });

  test('open keeps a value that does not decrypt (plaintext stored before the key was set)', async () => {
    const secrets = createSecrets(registry, await createKeyring(APISIX_KEYRING));
    assert.deepEqual(await secrets.open(route('user:plain')), route('user:plain'));
  });

  test('without a keyring nothing changes', async () => {
    const secrets = createSecrets(registry, undefined);
    assert.equal(secrets.enabled, false);
    const r = route('user:pass');
    assert.equal(await secrets.seal(r), r);
    assert.equal(await secrets.open(r), r);
  });

  test('openState decrypts every item and memoises by ciphertext', async () => {
    let calls = 0;
    const base = await createKeyring(APISIX_KEYRING);
    const counting = {
      ...base,
      decrypt: (v: string) => {
        calls++;
        return base.decrypt(v);
      },
    };
    const secrets = createSecrets(registry, counting);
    const sealed = await secrets.seal(route(OPENWHISK_TOKEN));
    const state = {
      revision: 7,
      items: [
        { key: '/apisix/routes/1', value: sealed, createdIndex: 1, modifiedIndex: 1 },
        { key: '/apisix/routes/2', value: sealed, createdIndex: 2, modifiedIndex: 2 },
        { key: '/apisix/upstreams/1', value: { nodes: {} }, createdIndex: 3, modifiedIndex: 3 },
      ],
    };
    const opened = await secrets.openState(state);
    assert.equal(opened.revision, 7);
    assert.equal(opened.items[2], state.items[2], 'an item without secrets is not copied');
    for (const i of [0, 1]) assert.deepEqual(secretValues(opened.items[i]!.value, paths), [OPENWHISK_TOKEN]);
    assert.equal(calls, 1);
    await secrets.openState(state);
    assert.equal(calls, 1, 'the second build decrypted again');
  });

  test("plugin_metadata/azure-functions: master_apikey sealed (APISIX's metadata encrypt_fields), opened by openState", async () => {
    assert.deepEqual([...secretPathsOf(registry, 'metadataSecretFields')], [['azure-functions', [['master_apikey']]]]);
    const secrets = createSecrets(registry, await createKeyring(APISIX_KEYRING));
    const meta = { id: 'azure-functions', master_apikey: 'master-key', master_clientid: 'client' };
    const sealed = await secrets.sealMetadata('azure-functions', meta);
    assert.deepEqual(sealed, { ...meta, master_apikey: nodeEncrypt(APISIX_KEYRING[0]!, 'master-key') });
    assert.equal(meta.master_apikey, 'master-key', 'sealed in a copy');
    assert.deepEqual(await secrets.openMetadata('azure-functions', sealed), meta);
    // Another plugin's metadata is its own business: nothing in it is sealed, even a field of that name.
    const other = { id: 'http-logger', master_apikey: 'x' };
    assert.equal(await secrets.sealMetadata('http-logger', other), other);
    const state = {
      revision: 3,
      items: [{ key: '/apisix/plugin_metadata/azure-functions', value: sealed, createdIndex: 1, modifiedIndex: 1 }],
    };
    assert.deepEqual((await secrets.openState(state)).items[0]!.value, meta);
  });

  test('metadataPluginOf: the plugin name of a plugin_metadata key only', () => {
    assert.equal(metadataPluginOf('/apisix/plugin_metadata/azure-functions'), 'azure-functions');
    assert.equal(metadataPluginOf('/custom/prefix/plugin_metadata/cors'), 'cors');
    assert.equal(metadataPluginOf('/apisix/routes/plugin_metadata'), undefined);
    assert.equal(metadataPluginOf('/apisix/routes/1'), undefined);
    assert.equal(metadataPluginOf('plugin_metadata'), undefined);
  });

  test('paths: arrays on the way are traversed; leaves may be strings, arrays or maps of strings', async () => {
    const p = new Map([['x', [['a', 'b']]]]);
    const up = async (s: string) => s.toUpperCase();
    const v = {
      plugins: { x: { a: [{ b: 'one' }, { b: ['two', 3] }, { b: { k: 'three', n: 4 } }, { c: 'keep' }] }, y: { a: { b: 'keep' } } },
    };
    const out = await transformSecrets(v, p, up);
    assert.deepEqual(out, {
      plugins: { x: { a: [{ b: 'ONE' }, { b: ['TWO', 3] }, { b: { k: 'THREE', n: 4 } }, { c: 'keep' }] }, y: { a: { b: 'keep' } } },
    });
    assert.deepEqual(secretValues(v, p), ['one', 'two', 'three']);
  });

  test('random keys: seal then open is the identity on any route-like object', async () => {
    const key = randomBytes(16).toString('hex'); // 32 ASCII characters: AES-256
    const secrets = createSecrets(registry, await createKeyring([key]));
    await fc.assert(
      fc.asyncProperty(
        fc.string({ maxLength: 80 }),
        fc.jsonValue({ maxDepth: 3 }),
        async (token, extra) => {
          const r = { ...route(token), extra };
          assert.deepEqual(await secrets.open(await secrets.seal(r)), r);
        },
      ),
      { seed: 99, numRuns: 200 },
    );
  });
});

describe('upstream client keys (upstream.tls.client_key)', () => {
  const PEM = '-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n';

  test("sealed as APISIX's aes_encrypt_pkey (PEM only) in an upstream and a route's inline upstream; opened back", async () => {
    // No plugin with secret fields: the client key is sealed all the same.
    const secrets = createSecrets(pluginRegistry([]), await createKeyring(APISIX_KEYRING));
    const upstream = { nodes: { '127.0.0.1:1': 1 }, scheme: 'https', tls: { client_cert: 'c', client_key: PEM } };
    const sealed = await secrets.seal(upstream);
    const cipher = (sealed.tls as { client_key: string }).client_key;
    assert.equal(nodeDecrypt(APISIX_KEYRING[0]!, cipher), PEM);
    assert.equal(upstream.tls.client_key, PEM, 'the input is not changed');
    assert.deepEqual(await secrets.open(sealed), upstream);
    // Already ciphertext: not sealed twice.
    assert.deepEqual(await secrets.seal(sealed), sealed);
    const route = { uri: '/x', upstream };
    const sealedRoute = await secrets.seal(route);
    assert.equal((sealedRoute.upstream as typeof upstream).tls.client_key, cipher);
    const state = await secrets.openState({ revision: 1, items: [{ key: '/apisix/routes/1', value: sealedRoute, createdIndex: 1, modifiedIndex: 1 }] });
    assert.deepEqual(state.items[0]!.value, route);
  });
});

describe('Admin API with DATA_ENCRYPTION_KEY', () => {
  const KEY = TEST_ADMIN_KEY;
  async function admin(keyring?: string[]) {
    const store = new MemoryStore();
    const app = testAdmin({
      store,
      keyring: keyring && (await createKeyring(keyring)),
    });
    const call = async (method: string, path: string, body?: unknown) => {
      const res = await app.request(`http://admin.test/apisix/admin${path}`, {
        method,
        headers: { 'x-api-key': KEY },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      // biome-ignore lint/suspicious/noExplicitAny: test convenience
      return { status: res.status, json: (await res.json()) as any };
    };
    // biome-ignore lint/suspicious/noExplicitAny: test convenience
    const stored = async (key: string) => (await store.get(key))?.value as Record<string, any>;
    return { call, stored, store };
  }
  const routeWith = (token: string) => ({
    uri: '/hello',
    plugins: { openfunction: { function_uri: 'http://127.0.0.1:3233/api', authorization: { service_token: token } } },
  });

  test('PUT: stored and answered as ciphertext (as APISIX); GET one and GET list answer plaintext', async () => {
    const { call, stored } = await admin(APISIX_KEYRING);
    const put = await call('PUT', '/routes/1', routeWith(OPENWHISK_TOKEN));
    assert.equal(put.status, 201);
    assert.equal(put.json.value.plugins.openfunction.authorization.service_token, OPENWHISK_CIPHERTEXT);
    assert.equal((await stored('/apisix/routes/1')).plugins.openfunction.authorization.service_token, OPENWHISK_CIPHERTEXT);
    const get = await call('GET', '/routes/1');
    assert.equal(get.json.value.plugins.openfunction.authorization.service_token, OPENWHISK_TOKEN);
    const list = await call('GET', '/routes');
    assert.equal(list.json.list[0].value.plugins.openfunction.authorization.service_token, OPENWHISK_TOKEN);
  });

  test('POST is sealed too', async () => {
    const { call, stored } = await admin(APISIX_KEYRING);
    const post = await call('POST', '/routes', routeWith('user:pw'));
    assert.equal(post.status, 201);
    const token = (await stored(post.json.key)).plugins.openfunction.authorization.service_token;
    assert.equal(token, nodeEncrypt(APISIX_KEYRING[0]!, 'user:pw'));
  });

  test('PATCH of another field keeps the secret; PATCH of the secret re-seals; both validate the plaintext', async () => {
    const { call, stored } = await admin(APISIX_KEYRING);
    await call('PUT', '/routes/1', routeWith('user:one'));
    const p1 = await call('PATCH', '/routes/1', { desc: 'patched' });
    assert.equal(p1.status, 200, JSON.stringify(p1.json));
    assert.equal((await stored('/apisix/routes/1')).plugins.openfunction.authorization.service_token, nodeEncrypt(APISIX_KEYRING[0]!, 'user:one'));
    const p2 = await call('PATCH', '/routes/1/plugins/openfunction/authorization/service_token', 'user:two');
    assert.equal(p2.status, 200, JSON.stringify(p2.json));
    assert.equal((await stored('/apisix/routes/1')).plugins.openfunction.authorization.service_token, nodeEncrypt(APISIX_KEYRING[0]!, 'user:two'));
    const bad = await call('PATCH', '/routes/1/plugins/openfunction/authorization/service_token', 'no-colon');
    assert.equal(bad.status, 400);
    assert.equal((await call('GET', '/routes/1')).json.value.plugins.openfunction.authorization.service_token, 'user:two');
  });

  test('a secret stored in plaintext before the key was set is shown as is, and sealed by the next write', async () => {
    const { call, stored, store } = await admin(APISIX_KEYRING);
    await store.put('/apisix/routes/old', { ...routeWith('user:legacy'), id: 'old' });
    assert.equal((await call('GET', '/routes/old')).json.value.plugins.openfunction.authorization.service_token, 'user:legacy');
    await call('PATCH', '/routes/old', { desc: 'touch' });
    assert.equal((await stored('/apisix/routes/old')).plugins.openfunction.authorization.service_token, nodeEncrypt(APISIX_KEYRING[0]!, 'user:legacy'));
  });

  test('plugin_metadata/azure-functions: master_apikey stored as ciphertext, GET answers it in plaintext', async () => {
    const { call, stored } = await admin(APISIX_KEYRING);
    const put = await call('PUT', '/plugin_metadata/azure-functions', { master_apikey: 'master-key', master_clientid: 'c1' });
    assert.equal(put.status, 201, JSON.stringify(put.json));
    const atRest = await stored('/apisix/plugin_metadata/azure-functions');
    assert.equal(atRest.master_apikey, nodeEncrypt(APISIX_KEYRING[0]!, 'master-key'));
    assert.equal(atRest.master_clientid, 'c1', 'not a secret field');
    const get = await call('GET', '/plugin_metadata/azure-functions');
    assert.equal(get.json.value.master_apikey, 'master-key');
    assert.equal(get.json.value.master_clientid, 'c1');
  });

  test('without DATA_ENCRYPTION_KEY: stored and answered in plaintext', async () => {
    const { call, stored } = await admin();
    const put = await call('PUT', '/routes/1', routeWith('user:plain'));
    assert.equal(put.json.value.plugins.openfunction.authorization.service_token, 'user:plain');
    assert.equal((await stored('/apisix/routes/1')).plugins.openfunction.authorization.service_token, 'user:plain');
  });
});

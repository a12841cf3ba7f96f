/**
 * gateway.serveProxy, the proxy as the runtimes serve it (a plain fetch handler, no Hono dispatch): the hooks get
 * the Request and the server's env, and an error nobody caught is still a 500 with `error_msg`, logged.
 * Run: node --import tsx --test test/unit/serve-proxy.test.ts
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as v from 'valibot';
import type { Logger } from '../../src/core/context.ts';
import { createGateway, type Gateway } from '../../src/core/gateway.ts';
import { BUILTIN_PLUGINS } from '../../src/core/plugins/index.ts';
import type { PluginDefinition } from '../../src/core/plugins/types.ts';
import { MemoryStore } from '../../src/store/memory.ts';

/** A plugin that fails the way a bug would: a synchronous throw, or a rejected promise. */
const boom: PluginDefinition<{ mode: 'sync' | 'async' }> = {
  name: 'boom',
  priority: 99_999,
  version: 0.1,
  schema: v.object({ mode: v.picklist(['sync', 'async']) }),
  create: (conf) => ({
    access:
      conf.mode === 'sync'
        ? () => {
            throw new Error('sync boom');
          }
        : async () => {
            throw new Error('async boom');
          },
  }),
};

/** Answers with what the gateway's hooks saw, without calling any upstream. */
const look: PluginDefinition<Record<string, never>> = {
  name: 'look',
  priority: 99_998,
  version: 0.1,
  schema: v.object({}),
  create: () => ({ access: (ctx) => Response.json({ ip: ctx.clientIp, scheme: ctx.scheme, raw: ctx.rawHeaders ?? null }) }),
};

const errors: string[] = [];
const logger: Logger = { info() {}, warn() {}, error: (msg, fields) => errors.push(`${msg} ${JSON.stringify(fields)}`) };
let gateway: Gateway;
const env = { ip: '192.0.2.9', raw: ['X-A', '1'] };

before(async () => {
  const store = new MemoryStore();
  await store.put('/apisix/routes/sync', { id: 'sync', uri: '/sync', plugins: { boom: { mode: 'sync' } } });
  await store.put('/apisix/routes/async', { id: 'async', uri: '/async', plugins: { boom: { mode: 'async' } } });
  await store.put('/apisix/routes/look', { id: 'look', uri: '/look', plugins: { look: {} } });
  gateway = await createGateway({
    store,
    forwarder: () => Promise.reject(new Error('no upstream in this test')),
    plugins: [...BUILTIN_PLUGINS, boom, look],
    logger,
    clientIp: (_req, e) => (e as typeof env).ip,
    scheme: (req) => (req.headers.get('x-test-scheme') === 'https' ? 'https' : 'http'),
    rawHeaders: (_req, e) => (e as typeof env).raw,
  });
});

after(() => gateway.close());

describe('gateway.serveProxy', () => {
  it('an error thrown by a route handler, or a rejection, is a 500 with error_msg, and is logged', async () => {
    for (const path of ['/sync', '/async']) {
      errors.length = 0;
      const res = await gateway.serveProxy(new Request(`http://gw.test${path}`), env);
      assert.equal(res.status, 500, path);
      assert.deepEqual(await res.json(), { error_msg: 'internal error in the gateway' });
      assert.equal(errors.length, 1, path);
      assert.match(errors[0]!, new RegExp(`proxy: unexpected error .*${path.slice(1)} boom`));
    }
  });

  it('the hooks get the Request and the env the server passed', async () => {
    const res = await gateway.serveProxy(new Request('http://gw.test/look', { headers: { 'x-test-scheme': 'https' } }), env);
    assert.deepEqual(await res.json(), { ip: '192.0.2.9', scheme: 'https', raw: ['X-A', '1'] });
  });

  it('gateway.proxy (the Hono app) serves the same, with Hono’s env', async () => {
    const res = await gateway.proxy.fetch(new Request('http://gw.test/look'), env);
    assert.deepEqual(await res.json(), { ip: '192.0.2.9', scheme: 'http', raw: ['X-A', '1'] });
    const missing = await gateway.proxy.fetch(new Request('http://gw.test/nowhere'), env);
    assert.equal(missing.status, 404);
    assert.deepEqual(await missing.json(), { error_msg: '404 Route Not Found' });
  });
});

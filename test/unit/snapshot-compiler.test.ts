/**
 * The incremental snapshot compiler (src/core/config.ts createSnapshotCompiler) through a real gateway: memory
 * store, the Node forwarder and real upstream servers on 127.0.0.1. A rebuild re-compiles only what changed, so
 * these tests check that every kind of change still reaches the proxy, and that unchanged routes are reused.
 * Run: node --import tsx --test test/unit/snapshot-compiler.test.ts
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { createSnapshotCompiler } from '../../src/core/config.ts';
import { FULL_CAPABILITIES } from '../../src/core/plugins/check.ts';
import { silentLogger } from '../../src/core/context.ts';
import { createGateway, type Gateway } from '../../src/core/gateway.ts';
import { pluginRegistry } from '../../src/core/plugins/index.ts';
import { createNodeForwarder, type NodeForwarder } from '../../src/runtime/node-forwarder.ts';
import { MemoryStore } from '../../src/store/memory.ts';

const servers: http.Server[] = [];
/** An upstream that answers `<name> <path>`. */
async function upstream(name: string): Promise<string> {
  const server = http.createServer((req, res) => res.end(`${name} ${req.url}`));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  servers.push(server);
  return `127.0.0.1:${(server.address() as AddressInfo).port}`;
}

let a: string;
let b: string;
let store: MemoryStore;
let gateway: Gateway;
let forwarder: NodeForwarder;

async function get(path: string): Promise<{ status: number; text: string }> {
  await gateway.refresh();
  const res = await gateway.proxy.fetch(new Request(`http://gw.test${path}`));
  return { status: res.status, text: await res.text() };
}

const route = (id: string, value: Record<string, unknown>) => store.put(`/apisix/routes/${id}`, { id, ...value });
const nodes = (addr: string) => ({ type: 'roundrobin', nodes: { [addr]: 1 } });

before(async () => {
  a = await upstream('A');
  b = await upstream('B');
  store = new MemoryStore();
  forwarder = createNodeForwarder();
  gateway = await createGateway({ store, forwarder, adminKeys: ['k'.repeat(32)], logger: silentLogger });
});

after(async () => {
  await gateway.close();
  await forwarder.close();
  for (const s of servers) s.close();
});

describe('incremental snapshot compiler', () => {
  it('a changed upstream reaches the routes that name it by upstream_id, and only those', async () => {
    await store.put('/apisix/upstreams/u1', { id: 'u1', ...nodes(a) });
    await route('by-id', { uri: '/by-id', upstream_id: 'u1' });
    await route('inline', { uri: '/inline', upstream: nodes(a) });
    assert.equal((await get('/by-id')).text, 'A /by-id');
    await store.put('/apisix/upstreams/u1', { id: 'u1', ...nodes(b) });
    assert.equal((await get('/by-id')).text, 'B /by-id');
    assert.equal((await get('/inline')).text, 'A /inline');
  });

  it('an upstream that is deleted, then created again, is followed by its routes', async () => {
    await store.put('/apisix/upstreams/u2', { id: 'u2', ...nodes(a) });
    await route('r2', { uri: '/r2', upstream_id: 'u2' });
    assert.equal((await get('/r2')).text, 'A /r2');
    await store.delete('/apisix/upstreams/u2');
    assert.equal((await get('/r2')).status, 502);
    await store.put('/apisix/upstreams/u2', { id: 'u2', ...nodes(b) });
    assert.equal((await get('/r2')).text, 'B /r2');
  });

  it('route edits, disables, deletes and re-creations all take effect', async () => {
    await route('r3', { uri: '/r3', upstream: nodes(a) });
    assert.equal((await get('/r3')).text, 'A /r3');
    await route('r3', { uri: '/r3', upstream: nodes(b) });
    assert.equal((await get('/r3')).text, 'B /r3');
    await route('r3', { uri: '/r3', status: 0, upstream: nodes(b) });
    assert.equal((await get('/r3')).status, 404);
    await route('r3', { uri: '/r3-moved', upstream: nodes(b) });
    assert.equal((await get('/r3')).status, 404);
    assert.equal((await get('/r3-moved')).text, 'B /r3-moved');
    await store.delete('/apisix/routes/r3');
    assert.equal((await get('/r3-moved')).status, 404);
    await route('r3', { uri: '/r3', upstream: nodes(a) });
    assert.equal((await get('/r3')).text, 'A /r3');
  });

  it('an invalid document written behind the Admin API is reported, and served again once fixed', async () => {
    await route('r4', { uri: '/r4', upstream: { type: 'roundrobin', nodes: 'nope' } });
    assert.equal((await get('/r4')).status, 404);
    assert.ok(gateway.current().problems.some((p) => p.startsWith('route r4:')));
    await route('r4', { uri: '/r4', upstream: nodes(a) });
    assert.equal((await get('/r4')).text, 'A /r4');
    assert.ok(!gateway.current().problems.some((p) => p.startsWith('route r4:')));
  });
});

describe('createSnapshotCompiler reuse', () => {
  const env = { plugins: pluginRegistry(), capabilities: FULL_CAPABILITIES, logger: silentLogger, prefix: '/apisix' };
  const item = (id: string, uri: string, rev: number) => ({
    key: `/apisix/routes/${id}`,
    value: { id, uri, upstream: nodes('127.0.0.1:9') },
    createdIndex: rev,
    modifiedIndex: rev,
  });
  const handlerOf = (snap: ReturnType<ReturnType<typeof createSnapshotCompiler>>, path: string) =>
    snap.router.match({ path, method: 'GET', host: '', remoteAddr: '127.0.0.1' })?.data.pipeline;

  it('keeps the compiled handler of an unchanged route (equal JSON, even as a new object) and rebuilds a changed one', () => {
    const compile = createSnapshotCompiler(env);
    const first = compile({ revision: 2, items: [item('1', '/one', 1), item('2', '/two', 2)] });
    const second = compile({ revision: 3, items: [item('1', '/one', 1), item('2', '/two-b', 3)] });
    assert.ok(handlerOf(first, '/one'));
    assert.equal(handlerOf(second, '/one'), handlerOf(first, '/one'));
    assert.equal(handlerOf(second, '/two'), undefined);
    assert.ok(handlerOf(second, '/two-b'));
    // A fresh compiler shares nothing with the first.
    const fresh = createSnapshotCompiler(env)({ revision: 3, items: [item('1', '/one', 1)] });
    assert.notEqual(handlerOf(fresh, '/one'), handlerOf(first, '/one'));
  });
});

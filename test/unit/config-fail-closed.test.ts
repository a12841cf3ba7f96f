// The snapshot compiler (src/core/config.ts) fails closed on config an APISIX control plane may write that fngate
// cannot run: unknown plugins other than the observability ones (on routes, services, plugin configs and global
// rules), broken global rules, dangling references.
// Run: node --import tsx --test test/unit/config-fail-closed.test.ts
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { compileSnapshot, FULL_CAPABILITIES, type Snapshot } from '../../src/core/config.ts';
import { RequestContext, silentLogger } from '../../src/core/context.ts';
import { runPipeline } from '../../src/core/plugins/pipeline.ts';
import { HARMLESS_PLUGIN_NAMES, isSkippablePlugin, pluginRegistry } from '../../src/core/plugins/index.ts';
import type { StoredItem } from '../../src/store/types.ts';

const env = { plugins: pluginRegistry(), capabilities: FULL_CAPABILITIES, logger: silentLogger, prefix: '/apisix' };
let index = 0;
const item = (key: string, value: Record<string, unknown>): StoredItem => ({
  key: `/apisix/${key}`,
  value,
  createdIndex: ++index,
  modifiedIndex: index,
});
const upstream = { type: 'roundrobin', nodes: { '127.0.0.1:1': 1 } };
const route = (id: string, extra: Record<string, unknown> = {}) =>
  item(`routes/${id}`, { id, uri: `/${id}`, upstream, ...extra });
const compile = (items: StoredItem[]) => compileSnapshot({ revision: index, items }, env);

/**
 * What a GET of `path` answers when the answer is decided at config time (a 503/502/404 of the route or of the
 * global rules), run through the real phase runner; undefined when nothing matched and no global rule answered.
 * The forwarder must not be reached: these answers come before any call.
 */
async function answer(snap: Snapshot, path: string): Promise<{ status: number; error?: string } | undefined> {
  const ctx = new RequestContext({
    request: new Request(`http://gw.test${path}`),
    method: 'GET',
    path,
    rawPath: path,
    query: '',
    host: 'gw.test',
    clientIp: '127.0.0.1',
    scheme: 'http',
    rawHeaders: undefined,
    clientSignal: () => undefined,
    forward: () => Promise.reject(new Error('the forwarder was called')),
  });
  const m = snap.router.match({ method: 'GET', host: 'gw.test', path, remoteAddr: '127.0.0.1', ctx });
  const NOT_FOUND = new Response(null, { status: 418 });
  const res = await runPipeline(ctx, snap.globals, m?.data.pipeline, () => NOT_FOUND, { logger: silentLogger });
  if (res === NOT_FOUND) return undefined;
  const text = await res.text();
  let error: string | undefined;
  try {
    error = (JSON.parse(text) as { error_msg?: string }).error_msg;
  } catch {}
  return { status: res.status, error };
}

describe('unknown plugins: skipped only when known to observe traffic only', () => {
  test('the allow-list holds observability plugins only', () => {
    for (const name of ['zipkin', 'skywalking', 'datadog', 'tcp-logger', 'kafka-logger']) {
      assert.ok(isSkippablePlugin(name), name);
    }
    for (const name of [
      'key-auth', 'ip-restriction', 'limit-count', 'workflow', 'saml-auth', 'ai-rate-limiting', 'ext-plugin-pre-req',
      'ext-plugin-post-resp', 'serverless-pre-function', 'serverless-post-function', 'proxy-rewrite', 'cors',
      'traffic-split', 'my-custom-plugin', 'evil-logger', '', '__proto__', 'constructor',
    ]) {
      assert.ok(!isSkippablePlugin(name), name);
    }
    for (const name of HARMLESS_PLUGIN_NAMES) assert.ok(!/auth|limit|restriction|rewrite|function/.test(name), name);
  });

  test('a route with an observability plugin is compiled without it; any other unknown plugin makes it answer 503', async () => {
    const snap = compile([
      route('obs', { plugins: { zipkin: {}, 'tcp-logger': { host: '127.0.0.1', port: 1 } } }),
      route('wf', { plugins: { workflow: { rules: [] } } }),
      route('custom', { plugins: { zipkin: {}, 'my-custom-plugin': {} } }),
    ]);
    const obs = snap.router.match({ method: 'GET', host: 'gw.test', path: '/obs' });
    assert.ok(obs, 'route obs is served');
    assert.deepEqual(await answer(snap, '/wf'), { status: 503, error: 'route wf needs plugin workflow, which this gateway does not have' });
    assert.equal((await answer(snap, '/custom'))?.status, 503);
    assert.ok(snap.problems.some((p) => p.startsWith('route obs: plugin zipkin is not available in fngate; it is skipped')));
    assert.ok(snap.problems.some((p) => p.startsWith('route wf: plugin workflow is not available in fngate; it answers 503')));
  });
});

describe('global rules', () => {
  test('a global rule with a plugin fngate does not have makes every request answer 503, matched or not', async () => {
    const snap = compile([route('a'), route('b'), item('global_rules/1', { id: '1', plugins: { 'no-such-plugin': {} } })]);
    for (const path of ['/a', '/b', '/', '/nothing/here']) {
      const got = await answer(snap, path);
      assert.equal(got?.status, 503, path);
      assert.match(got?.error ?? '', /global rules \(global rule 1 needs plugin no-such-plugin, which this gateway does not have\)/);
    }
    assert.ok(snap.problems.some((p) => p.startsWith('global rule 1: plugin no-such-plugin is not available in fngate')));
  });

  test('a broken plugins field or an invalid conf blocks every request; a plugin fngate has runs', async () => {
    for (const plugins of [['key-auth'], 'key-auth', { openfunction: { function_uri: 'not a url' } }]) {
      const snap = compile([route('a'), item('global_rules/g', { id: 'g', plugins })]);
      assert.equal((await answer(snap, '/a'))?.status, 503, JSON.stringify(plugins));
    }
    // A global openfunction makes the call for every request: here the forwarder, which this helper refuses.
    const snap = compile([route('a'), item('global_rules/g', { id: 'g', plugins: { openfunction: { function_uri: 'http://127.0.0.1:1/f' } } })]);
    assert.equal(snap.globals.proxy?.name, 'openfunction');
  });

  test('observability plugins, disabled plugins, empty rules and nested keys do not block', async () => {
    const snap = compile([
      route('a'),
      item('global_rules/obs', { id: 'obs', plugins: { zipkin: {}, 'kafka-logger': {} } }),
      item('global_rules/off', { id: 'off', plugins: { 'ip-restriction': { whitelist: ['10.0.0.0/8'], _meta: { disable: true } } } }),
      item('global_rules/empty', { id: 'empty', plugins: {} }),
      item('global_rules/none', { id: 'none' }),
      item('global_rules/nested/x', { plugins: { 'no-such-plugin': {} } }), // not a global rule: nested key
    ]);
    assert.equal(await answer(snap, '/nothing'), undefined, 'no catch-all');
    assert.ok(snap.router.match({ method: 'GET', host: 'gw.test', path: '/a' }));
    assert.ok(snap.problems.some((p) => p.startsWith('global rule obs: plugin zipkin is not available in fngate; it is skipped')));
  });
});

describe('plugin configs and services', () => {
  test('a route naming a missing one answers 404 (service) or 503 (plugin config), matched by its own conditions', async () => {
    const snap = compile([
      route('pc', { plugin_config_id: 'nope' }),
      item('routes/svc', { id: 'svc', uri: '/svc', service_id: 's1', methods: ['POST'] }),
    ]);
    assert.deepEqual(await answer(snap, '/pc'), { status: 503, error: 'plugin config nope of route pc does not exist' });
    assert.equal(snap.router.match({ method: 'GET', host: 'gw.test', path: '/svc' }), undefined, 'methods still apply');
    assert.ok(snap.router.match({ method: 'POST', host: 'gw.test', path: '/svc' }));
    assert.ok(snap.problems.some((p) => p === 'route svc: service s1 does not exist; the route answers 404'));
  });

  test('an unknown plugin in a service or plugin config makes its routes answer 503', async () => {
    const snap = compile([
      item('plugin_configs/pc', { id: 'pc', plugins: { 'no-such-plugin': {} } }),
      item('services/s', { id: 's', plugins: { 'other-plugin': {} }, upstream }),
      route('pc', { plugin_config_id: 'pc' }),
      item('routes/svc', { id: 'svc', uri: '/svc', service_id: 's' }),
    ]);
    assert.deepEqual(await answer(snap, '/pc'), { status: 503, error: 'plugin config pc needs plugin no-such-plugin, which this gateway does not have' });
    assert.deepEqual(await answer(snap, '/svc'), { status: 503, error: 'service s needs plugin other-plugin, which this gateway does not have' });
  });
});

describe('upstream fields a runtime cannot honour, written where the Admin API could not refuse them', () => {
  test('keepalive_pool.requests on a runtime without it: the route is served, one problem logged', () => {
    const denoEnv = { ...env, capabilities: { runtime: 'deno', tlsVerifyOff: false, keepaliveRequests: false } };
    const pooled = { ...upstream, keepalive_pool: { size: 1, idle_timeout: 1, requests: 10 } };
    const snap = compileSnapshot({ revision: ++index, items: [route('kr', { upstream: pooled })] }, denoEnv);
    assert.ok(snap.router.match({ method: 'GET', host: 'gw.test', path: '/kr', remoteAddr: '127.0.0.1', ctx: {} }));
    assert.ok(
      snap.problems.some((p) => /^route kr: .*"requests" is not supported on deno.*; the route is served without it$/.test(p)),
      snap.problems.join('\n'),
    );
    // Where it can be honoured, no problem.
    assert.deepEqual(compile([route('kr2', { upstream: pooled })]).problems, []);
  });
});

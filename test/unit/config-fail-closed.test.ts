// The snapshot compiler (src/core/config.ts) fails closed on config an APISIX control plane may write that fngate
// cannot run: unknown plugins other than the observability ones, global rules, plugin configs and services.
// Run: node --import tsx --test test/unit/config-fail-closed.test.ts
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { compileSnapshot, type Snapshot } from '../../src/core/config.ts';
import { FULL_CAPABILITIES } from '../../src/core/plugins/check.ts';
import type { RequestContext } from '../../src/core/context.ts';
import { silentLogger } from '../../src/core/context.ts';
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

/** What the route at `path` answers, when it answers by itself (a 503/502 decided at config time). */
async function answer(snap: Snapshot, path: string): Promise<{ status: number; error?: string } | undefined> {
  const m = snap.router.match({ method: 'GET', host: 'gw.test', path, remoteAddr: '127.0.0.1' });
  if (!m) return undefined;
  const res = await m.data.handler({ request: new Request(`http://gw.test${path}`) } as unknown as RequestContext);
  const text = await res.text();
  let error: string | undefined;
  try {
    error = (JSON.parse(text) as { error_msg?: string }).error_msg;
  } catch {}
  return { status: res.status, error };
}

describe('unknown plugins: skipped only when known to observe traffic only', () => {
  test('the allow-list holds observability plugins only', () => {
    for (const name of ['prometheus', 'zipkin', 'skywalking', 'opentelemetry', 'http-logger', 'file-logger', 'request-id']) {
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
      route('obs', { plugins: { prometheus: {}, 'http-logger': { uri: 'http://127.0.0.1:1/log' } } }),
      route('wf', { plugins: { workflow: { rules: [] } } }),
      route('custom', { plugins: { prometheus: {}, 'my-custom-plugin': {} } }),
    ]);
    const obs = snap.router.match({ method: 'GET', host: 'gw.test', path: '/obs' });
    assert.ok(obs, 'route obs is served');
    assert.deepEqual(await answer(snap, '/wf'), { status: 503, error: 'route wf needs plugin workflow, which this gateway does not have' });
    assert.equal((await answer(snap, '/custom'))?.status, 503);
    assert.ok(snap.problems.some((p) => p.startsWith('route obs: plugin prometheus is not available in fngate; it is skipped')));
    assert.ok(snap.problems.some((p) => p.startsWith('route wf: plugin workflow is not available in fngate; the route answers 503')));
  });
});

describe('global rules', () => {
  test('a global rule with a plugin fngate cannot run makes every request answer 503, matched or not', async () => {
    const snap = compile([route('a'), route('b'), item('global_rules/1', { id: '1', plugins: { 'key-auth': {} } })]);
    for (const path of ['/a', '/b', '/', '/nothing/here']) {
      const got = await answer(snap, path);
      assert.equal(got?.status, 503, path);
      assert.match(got?.error ?? '', /global rules \(plugin key-auth of global rule 1\)/);
    }
    assert.ok(snap.problems.some((p) => p.startsWith('global rule 1: plugin key-auth cannot be run by fngate')));
  });

  test('even a plugin fngate has, or a broken plugins field, blocks: fngate runs no global rules', async () => {
    for (const plugins of [{ openfunction: { function_uri: 'http://127.0.0.1:1/f' } }, ['key-auth'], 'key-auth']) {
      const snap = compile([route('a'), item('global_rules/g', { id: 'g', plugins })]);
      assert.equal((await answer(snap, '/a'))?.status, 503, JSON.stringify(plugins));
    }
  });

  test('observability plugins, disabled plugins, empty rules and init_dir placeholders do not block', async () => {
    const snap = compile([
      route('a'),
      item('global_rules/obs', { id: 'obs', plugins: { prometheus: {}, 'kafka-logger': {} } }),
      item('global_rules/off', { id: 'off', plugins: { 'ip-restriction': { whitelist: ['10.0.0.0/8'], _meta: { disable: true } } } }),
      item('global_rules/empty', { id: 'empty', plugins: {} }),
      item('global_rules/none', { id: 'none' }),
      item('global_rules/nested/x', { plugins: { 'key-auth': {} } }), // not a global rule: nested key
    ]);
    assert.equal(await answer(snap, '/nothing'), undefined, 'no catch-all');
    assert.ok(snap.router.match({ method: 'GET', host: 'gw.test', path: '/a' }));
    assert.ok(snap.problems.some((p) => p.startsWith('global rule obs: plugin prometheus is not run by fngate')));
  });
});

describe('plugin configs and services', () => {
  test('a route naming one answers 503 saying so; matched by its own uri, host and methods', async () => {
    const snap = compile([
      item('plugin_configs/pc', { id: 'pc', plugins: { 'key-auth': {} } }),
      route('pc', { plugin_config_id: 'pc' }),
      item('routes/svc', { id: 'svc', uri: '/svc', service_id: 's1', methods: ['POST'] }),
      route('both', { plugin_config_id: 1, service_id: 's1', vars: [['arg_x', '==', '1']] }),
    ]);
    assert.deepEqual(await answer(snap, '/pc'), { status: 503, error: 'route pc uses plugin_config_id "pc", which this gateway does not implement' });
    assert.equal(snap.router.match({ method: 'GET', host: 'gw.test', path: '/svc' }), undefined, 'methods still apply');
    const svc = snap.router.match({ method: 'POST', host: 'gw.test', path: '/svc' });
    assert.equal((await svc!.data.handler({} as RequestContext)).status, 503);
    // Anything else wrong with the route (here `vars`, not implemented): not served at all, as before.
    assert.equal(await answer(snap, '/both'), undefined);
    assert.ok(snap.problems.some((p) => p.startsWith('route pc: ') && p.includes('answers 503')));
  });
});

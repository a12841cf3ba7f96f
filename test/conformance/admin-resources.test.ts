/**
 * The Admin API's resources beyond routes and upstreams, black box on every runtime: services, plugin_configs,
 * global_rules, consumers (+ credentials), consumer_groups, plugin_metadata. Cases replicate APISIX's
 * t/admin/{services,plugin-configs,global-rules*,consumers*,credentials,consumer-group*,plugin-metadata}.t and the
 * reference (/work/shared/reference/apisix-wave2.md §2.2, §10; apisix-facts.md §1). No auth plugin exists yet,
 * so consumer/credential plugin rules that need one are covered by test/unit/admin-resources.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { FunctionServers } from '../functions/functions.ts';
import { type AdminResult, type GatewayUnderTest, gatewayPerFile } from './harness.ts';

let gw: GatewayUnderTest;
let fn: FunctionServers;
gatewayPerFile((g, f) => {
  gw = g;
  fn = f;
});

function assertError(res: AdminResult, status: number, msg: string | RegExp): void {
  assert.equal(res.status, status, res.text);
  assert.equal(typeof res.json?.error_msg, 'string', res.text);
  if (typeof msg === 'string') assert.equal(res.json.error_msg, msg);
  else assert.match(res.json.error_msg, msg);
}

const of = () => ({ openfunction: { function_uri: `${fn.urls.echo}/x` } });
const upstream = () => ({ type: 'roundrobin', nodes: { '127.0.0.1:1980': 1 } });

async function ok(method: string, path: string, body: unknown, status = 201): Promise<AdminResult> {
  const res = await gw.admin(method, path, body);
  assert.equal(res.status, status, `${method} ${path}: ${res.text}`);
  return res;
}

describe('services (t/admin/services.t)', () => {
  test('PUT 201 then 200, envelope, timestamps; GET one and list; POST 201 with a generated id', async () => {
    const created = await ok('PUT', '/services/s1', { name: 'svc', plugins: of(), upstream: upstream() });
    assert.equal(created.json.key, '/apisix/services/s1');
    assert.equal(created.json.value.id, 's1');
    assert.equal(typeof created.json.value.create_time, 'number');
    await ok('PUT', '/services/s1', { name: 'svc2', upstream: upstream() }, 200);
    const got = await ok('GET', '/services/s1', undefined, 200);
    assert.equal(got.json.value.name, 'svc2');
    assert.equal(typeof got.json.createdIndex, 'number');
    const list = await ok('GET', '/services', undefined, 200);
    assert.ok(list.json.list.some((i: { key: string }) => i.key === '/apisix/services/s1'));
    const posted = await ok('POST', '/services', { upstream: upstream() });
    assert.match(posted.json.value.id, /^\d{20}$/);
    await ok('PATCH', '/services/s1', { desc: 'patched' }, 200);
    const sub = await ok('PATCH', '/services/s1/name', '"by-sub-path"', 200);
    assert.equal(sub.json.value.name, 'by-sub-path');
    assert.equal(sub.json.value.desc, 'patched');
  });

  test('bad input: schema, unknown upstream_id, bad plugin conf; nothing written', async () => {
    assertError(await gw.admin('PUT', '/services/bad', { nope: 1 }), 400, 'invalid configuration: additional properties forbidden, found nope');
    assertError(
      await gw.admin('PUT', '/services/bad', { upstream_id: 'missing' }),
      400,
      'failed to fetch upstream info by upstream id [missing], response code: 404',
    );
    assertError(
      await gw.admin('PUT', '/services/bad', { plugins: { openfunction: {} } }),
      400,
      'failed to check the configuration of plugin openfunction err: property "function_uri" is required',
    );
    assertError(await gw.admin('PUT', '/services/bad', { hosts: [] }), 400, /^invalid configuration: property "hosts" validation failed/);
    assert.equal((await gw.admin('GET', '/services/bad')).status, 404);
  });

  test('a route may name a service (no plugins/upstream needed); a missing one is refused', async () => {
    await ok('PUT', '/services/s2', { upstream: upstream() });
    await ok('PUT', '/routes/rs2', { uri: '/rs2', service_id: 's2' });
    assertError(
      await gw.admin('PUT', '/routes/rs3', { uri: '/rs3', service_id: '99999999999999' }),
      400,
      'failed to fetch service info by service id [99999999999999], response code: 404',
    );
    // `?filter=service_id=` (APISIX's v3 list filter on routes).
    const filtered = await ok('GET', '/routes?filter=service_id%3Ds2', undefined, 200);
    assert.deepEqual(
      filtered.json.list.map((i: { key: string }) => i.key),
      ['/apisix/routes/rs2'],
    );
  });

  test('delete in use: refused, ?force=true deletes (t/admin/services-force-delete.t)', async () => {
    await ok('PUT', '/services/s3', { upstream: upstream() });
    await ok('PUT', '/routes/rs4', { uri: '/rs4', service_id: 's3' });
    assertError(await gw.admin('DELETE', '/services/s3'), 400, 'can not delete this service directly, route [rs4] is still using it now');
    assertError(await gw.admin('DELETE', '/services/s3?force=anyvalue'), 400, /route \[rs4\]/);
    assert.equal((await gw.admin('GET', '/services/s3')).status, 200);
    const del = await ok('DELETE', '/services/s3?force=true', undefined, 200);
    assert.deepEqual(del.json, { deleted: '1', key: '/apisix/services/s3' });
    await ok('DELETE', '/routes/rs4', undefined, 200);
  });

  test('an upstream used by a service is kept unless forced', async () => {
    await ok('PUT', '/upstreams/u1', upstream());
    await ok('PUT', '/services/s4', { upstream_id: 'u1' });
    assertError(await gw.admin('DELETE', '/upstreams/u1'), 400, 'can not delete this upstream, service [s4] is still using it now');
    await ok('DELETE', '/upstreams/u1?force=true', undefined, 200);
  });

  test("a route with service_id is served with the service's plugins; a change of the service is served next", async () => {
    await ok('PUT', '/services/s5', { plugins: of() });
    await ok('PUT', '/routes/rs5', { uri: '/rs5', service_id: 's5' });
    const res = await gw.fetch('/rs5');
    assert.equal(res.status, 200, await res.clone().text());
    assert.equal(((await res.json()) as { method: string }).method, 'GET');
    await ok('PUT', '/services/s5', { plugins: { ...of(), 'key-auth': {} } }, 200);
    const guarded = await gw.fetch('/rs5');
    assert.equal(guarded.status, 401);
    assert.deepEqual(await guarded.json(), { message: 'Missing API key in request' });
  });
});

describe('plugin_configs (t/admin/plugin-configs.t)', () => {
  test('PUT/GET/PATCH/DELETE; POST → 405; plugins required', async () => {
    const created = await ok('PUT', '/plugin_configs/p1', { plugins: of(), desc: 'd' });
    assert.equal(created.json.key, '/apisix/plugin_configs/p1');
    await ok('PUT', '/plugin_configs/p1', { plugins: of() }, 200);
    await ok('PATCH', '/plugin_configs/p1', { desc: 'x' }, 200);
    assertError(await gw.admin('POST', '/plugin_configs', { plugins: {} }), 405, 'not supported `POST` method for plugin config');
    assertError(await gw.admin('PUT', '/plugin_configs/p2', { desc: 'x' }), 400, 'invalid configuration: property "plugins" is required');
    assertError(await gw.admin('PUT', '/plugin_configs', { plugins: {} }), 400, 'missing plugin config id');
  });

  test('a route needs more than a plugin_config_id (APISIX anyOf); a missing one is refused', async () => {
    assertError(await gw.admin('PUT', '/routes/rp0', { uri: '/rp0', plugin_config_id: 'p1' }), 400, /^invalid configuration/);
    await ok('PUT', '/routes/rp1', { uri: '/rp1', plugin_config_id: 'p1', upstream: upstream() });
    assertError(
      await gw.admin('PUT', '/routes/rp2', { uri: '/rp2', plugin_config_id: 'not_found', plugins: {} }),
      400,
      'failed to fetch plugin config info by plugin config id [not_found], response code: 404',
    );
  });

  test('delete in use refused, forced delete works (t/admin/plugin-configs-force-delete.t)', async () => {
    assertError(await gw.admin('DELETE', '/plugin_configs/p1'), 400, 'can not delete this plugin config, route [rp1] is still using it now');
    await ok('DELETE', '/plugin_configs/p1?force=true', undefined, 200);
    await ok('DELETE', '/routes/rp1', undefined, 200);
  });
});

describe('global_rules (t/admin/global-rules*.t)', () => {
  test('PUT 201/200, POST 405, duplicate plugin across rules refused, nothing written', async () => {
    const created = await ok('PUT', '/global_rules/g1', { plugins: { prometheus_never: {} } }, 400);
    assertError(created, 400, 'unknown plugin [prometheus_never]');
    await ok('PUT', '/global_rules/g1', { plugins: { openfunction: { function_uri: `${fn.urls.echo}/g`, _meta: { disable: true } } } });
    await ok('PUT', '/global_rules/g1', { plugins: { openfunction: { function_uri: `${fn.urls.echo}/g`, _meta: { disable: true } } } }, 200);
    assertError(await gw.admin('POST', '/global_rules', { plugins: {} }), 405, 'not supported `POST` method for global rule');
    assertError(
      await gw.admin('PUT', '/global_rules/g2', { plugins: { openfunction: { function_uri: `${fn.urls.echo}/g` } } }),
      400,
      "plugin 'openfunction' already exists in global rule with id 'g1'",
    );
    assert.equal((await gw.admin('GET', '/global_rules/g2')).status, 404);
    assertError(await gw.admin('PUT', '/global_rules/g2', {}), 400, 'invalid configuration: property "plugins" is required');
    await ok('PUT', '/global_rules/g2', { plugins: {} });
    const list = await ok('GET', '/global_rules', undefined, 200);
    assert.equal(list.json.total, 2);
    await ok('DELETE', '/global_rules/g1', undefined, 200);
    await ok('DELETE', '/global_rules/g2', undefined, 200);
  });
});

describe('consumer_groups (t/admin/consumer-group*.t)', () => {
  test('PUT/GET/PATCH; POST 405; a consumer naming a missing group is refused; in-use delete and force', async () => {
    await ok('PUT', '/consumer_groups/company_a', { plugins: {}, desc: 'a' });
    await ok('PATCH', '/consumer_groups/company_a', { desc: 'b' }, 200);
    assertError(await gw.admin('POST', '/consumer_groups', { plugins: {} }), 405, 'not supported `POST` method for consumer group');
    assertError(
      await gw.admin('PUT', '/consumers/jack', { username: 'jack', group_id: 'nope' }),
      400,
      'failed to fetch consumer group info by consumer group id [nope], response code: 404',
    );
    await ok('PUT', '/consumers/jack', { username: 'jack', group_id: 'company_a' });
    assertError(await gw.admin('DELETE', '/consumer_groups/company_a'), 400, 'can not delete this consumer group, consumer [jack] is still using it now');
    await ok('DELETE', '/consumer_groups/company_a?force=true', undefined, 200);
    await ok('DELETE', '/consumers/jack', undefined, 200);
  });
});

describe('consumers and credentials (t/admin/consumers*.t, credentials.t)', () => {
  test('a username that is no username in the path: 400 naming the pattern, nothing written', async () => {
    assertError(await gw.admin('PUT', '/consumers/a.b', { username: 'a.b' }), 400, /^invalid configuration: property "username" validation failed: failed to match pattern/);
    assertError(await gw.admin('PUT', '/consumers/a.b/credentials/c', { plugins: {} }), 400, /property "username" validation failed/);
    assert.equal((await gw.admin('GET', '/consumers/a.b')).status, 400);
  });

  test('PUT by path or body username; wrong username; POST/PATCH 405; missing username', async () => {
    const a = await ok('PUT', '/consumers', { username: 'alice', desc: 'x' });
    assert.equal(a.json.key, '/apisix/consumers/alice');
    assert.equal(a.json.value.id, undefined, 'APISIX injects no id into a consumer');
    await ok('PUT', '/consumers/alice', { username: 'alice' }, 200);
    assertError(await gw.admin('PUT', '/consumers/alice', { username: 'bob' }), 400, 'wrong username');
    assertError(await gw.admin('PUT', '/consumers', { desc: 'x' }), 400, 'invalid configuration: property "username" is required');
    assertError(await gw.admin('POST', '/consumers', { username: 'x' }), 405, 'not supported `POST` method for consumer');
    assertError(await gw.admin('PATCH', '/consumers/alice', { desc: 'y' }), 405, 'not supported `PATCH` method for consumer');
    assertError(
      await gw.admin('PUT', '/consumers/x1', { username: 'x1', plugins: { 'no-such': {} } }),
      400,
      'invalid plugins configuration: unknown plugin [no-such]',
    );
  });

  test('credentials: consumer not found, missing id, only auth plugins, at most one plugin, POST/PATCH 405', async () => {
    assertError(await gw.admin('PUT', '/consumers/ghost/credentials/c1', { plugins: {} }), 404, 'consumer not found');
    assertError(await gw.admin('PUT', '/consumers/alice/credentials', { plugins: {} }), 400, 'missing credential id');
    assertError(
      await gw.admin('PUT', '/consumers/alice/credentials/c1', { plugins: of() }),
      400,
      /^invalid plugins configuration: |^only supports auth type plugins in consumer credential$/,
    );
    assertError(
      await gw.admin('PUT', '/consumers/alice/credentials/c1', { plugins: { a: {}, b: {} } }),
      400,
      'invalid configuration: property "plugins" validation failed: expect object to have at most 1 properties',
    );
    assertError(await gw.admin('POST', '/consumers/alice/credentials', { plugins: {} }), 405, 'not supported `POST` method for credential');
    assertError(await gw.admin('PATCH', '/consumers/alice/credentials/c1', {}), 405, 'not supported `PATCH` method for credential');
    assert.equal((await gw.admin('GET', '/consumers/alice/credentials/c1')).status, 404);
  });

  test('a credential is stored under its consumer; the consumer list leaves it out; deleting the consumer deletes it', async () => {
    const c = await ok('PUT', '/consumers/alice/credentials/c1', { plugins: {}, desc: 'cred' });
    assert.equal(c.json.key, '/apisix/consumers/alice/credentials/c1');
    await ok('PUT', '/consumers/alice/credentials', { id: 'c2', plugins: {} });
    const creds = await ok('GET', '/consumers/alice/credentials', undefined, 200);
    assert.equal(creds.json.total, 2);
    const consumers = await ok('GET', '/consumers', undefined, 200);
    assert.deepEqual(
      consumers.json.list.map((i: { key: string }) => i.key),
      ['/apisix/consumers/alice'],
    );
    await ok('DELETE', '/consumers/alice', undefined, 200);
    assert.equal((await gw.admin('GET', '/consumers/alice/credentials/c1')).status, 404);
    assert.equal((await gw.admin('GET', '/consumers/alice/credentials')).status, 404);
    // Re-created, the consumer has no credentials left.
    await ok('PUT', '/consumers/alice', { username: 'alice' });
    const none = await ok('GET', '/consumers/alice/credentials', undefined, 200);
    assert.equal(none.json.total, 0);
    await ok('DELETE', '/consumers/alice', undefined, 200);
  });
});

describe('lists of the new kinds (t/admin/filter.t)', () => {
  test('page + page_size by creation, total before paging, label filter', async () => {
    for (let i = 0; i < 12; i++) await ok('PUT', `/consumer_groups/pg${String(i).padStart(2, '0')}`, { plugins: {}, labels: i === 3 ? { team: 'x' } : undefined });
    const p2 = await ok('GET', '/consumer_groups?page=2&page_size=10', undefined, 200);
    assert.equal(p2.json.total, 12);
    assert.deepEqual(
      p2.json.list.map((i: { value: { id: string } }) => i.value.id),
      ['pg10', 'pg11'],
    );
    const labelled = await ok('GET', '/consumer_groups?label=team', undefined, 200);
    assert.deepEqual(
      labelled.json.list.map((i: { value: { id: string } }) => i.value.id),
      ['pg03'],
    );
    for (let i = 0; i < 12; i++) await ok('DELETE', `/consumer_groups/pg${String(i).padStart(2, '0')}`, undefined, 200);
    assert.deepEqual((await ok('GET', '/consumer_groups', undefined, 200)).json, { list: [], total: 0 });
  });
});

describe('plugin_metadata (t/admin/plugin-metadata*.t)', () => {
  test('PUT by plugin name (no timestamps, id = name), unknown plugin, missing name, POST/PATCH 405, DELETE', async () => {
    const res = await ok('PUT', '/plugin_metadata/openfunction', { any: 'thing' });
    assert.deepEqual(res.json, { key: '/apisix/plugin_metadata/openfunction', value: { any: 'thing', id: 'openfunction' } });
    await ok('PUT', '/plugin_metadata/openfunction', { any: 'thing' }, 200);
    assertError(await gw.admin('PUT', '/plugin_metadata/no-such-plugin', {}), 400, 'invalid plugin name');
    assertError(await gw.admin('PUT', '/plugin_metadata', {}), 400, 'missing plugin name');
    assertError(await gw.admin('POST', '/plugin_metadata', {}), 405, 'not supported `POST` method for plugin_metadata');
    assertError(await gw.admin('PATCH', '/plugin_metadata/openfunction', {}), 405, 'not supported `PATCH` method for plugin_metadata');
    const del = await ok('DELETE', '/plugin_metadata/openfunction', undefined, 200);
    assert.deepEqual(del.json, { deleted: '1', key: '/apisix/plugin_metadata/openfunction' });
  });
});

describe('schema endpoints (t/admin/schema.t)', () => {
  for (const name of ['service', 'consumer', 'credential', 'consumer_group', 'plugin_config', 'global_rule']) {
    test(`GET /schema/${name}`, async () => {
      const res = await ok('GET', `/schema/${name}`, undefined, 200);
      assert.equal(res.json.type, 'object');
      assert.ok(res.json.properties && typeof res.json.properties === 'object');
    });
  }

  test('required fields as APISIX: consumer username, plugin_config/global_rule/consumer_group plugins', async () => {
    assert.deepEqual((await gw.admin('GET', '/schema/consumer')).json.required, ['username']);
    for (const name of ['plugin_config', 'global_rule', 'consumer_group']) {
      assert.ok((await gw.admin('GET', `/schema/${name}`)).json.required.includes('plugins'), name);
    }
  });

  test('/schema/plugins/<name>?schema_type=consumer|metadata: 400 not found schema when the plugin has none', async () => {
    assertError(await gw.admin('GET', '/schema/plugins/openfunction?schema_type=consumer'), 400, 'not found schema');
    assertError(await gw.admin('GET', '/schema/plugins/openfunction?schema_type=metadata'), 400, 'not found schema');
  });
});

/**
 * The plugin runtime on every runtime: route `vars`, consumers and credentials with key-auth, the resource model
 * (services, plugin configs, global rules, consumer groups) and its merge precedence, `_meta`, global rules on
 * unmatched requests. Cases replicate APISIX's t/node/merge-route.t, consumer-plugin.t,
 * credential-plugin-set-request-header.t, plugin-configs.t, t/plugin/key-auth.t and plugin.t (apisix-wave2.md §1–2,
 * §3.1, §10). The phase order call by call is in test/unit/plugin-runtime.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { FunctionServers } from '../functions/functions.ts';
import { type GatewayUnderTest, gatewayPerFile } from './harness.ts';

let gw: GatewayUnderTest;
let fn: FunctionServers;
gatewayPerFile((g, f) => {
  gw = g;
  fn = f;
});

/** An openfunction plugin calling the echo function at `/e/<name>`: the echo's `url` tells who answered. */
const echoFn = (name: string) => ({ openfunction: { function_uri: `${fn.urls.echo}/e/${name}` } });
const echoUpstream = () => {
  const u = new URL(fn.urls.echo);
  return { type: 'roundrobin', nodes: { [u.host]: 1 } };
};

async function ok(method: string, path: string, body?: unknown) {
  const res = await gw.admin(method, path, body);
  assert.ok(res.status === 200 || res.status === 201, `${method} ${path} → ${res.status} ${res.text}`);
  return res;
}

interface Got {
  status: number;
  headers: Headers;
  text: string;
  // biome-ignore lint/suspicious/noExplicitAny: the echo function's JSON
  json: any;
}

async function get(path: string, headers: Record<string, string> = {}): Promise<Got> {
  const res = await gw.fetch(path, { headers });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {}
  return { status: res.status, headers: res.headers, text, json };
}

describe('route vars (lua-resty-expr)', () => {
  test('a route whose vars fail moves on to the next candidate', async () => {
    await ok('PUT', '/routes/v-prod', { uri: '/vars', priority: 1, vars: [['arg_env', '==', 'prod'], ['http_x_team', '~~', '^fn-']], plugins: echoFn('prod') });
    await ok('PUT', '/routes/v-any', { uri: '/vars', plugins: echoFn('any') });
    assert.equal((await get('/vars?env=prod', { 'x-team': 'fn-core' })).json.url, '/e/prod?env=prod');
    assert.equal((await get('/vars?env=prod', { 'x-team': 'web' })).json.url, '/e/any?env=prod');
    assert.equal((await get('/vars')).json.url, '/e/any');
  });

  test("a bad expression is refused with APISIX's message", async () => {
    const res = await gw.admin('PUT', '/routes/v-bad', { uri: '/vbad', vars: [['arg_a', '=', '1']], plugins: echoFn('x') });
    assert.equal(res.status, 400);
    assert.match(res.json.error_msg, /failed to validate the 'vars' expression: invalid operator '='/);
  });
});

describe('key-auth, consumers and credentials (t/plugin/key-auth.t, credential-plugin-set-request-header.t)', () => {
  test('missing and invalid keys: 401 with APISIX bodies and WWW-Authenticate; a good key reaches the function', async () => {
    await ok('PUT', '/consumers', { username: 'jack', plugins: { 'key-auth': { key: 'auth-one' } } });
    await ok('PUT', '/routes/ka', { uri: '/ka', plugins: { 'key-auth': {}, ...echoFn('ka') } });
    const missing = await get('/ka');
    assert.equal(missing.status, 401);
    assert.equal(missing.text, '{"message":"Missing API key in request"}\n');
    assert.equal(missing.headers.get('www-authenticate'), 'apikey realm="key"');
    const invalid = await get('/ka', { apikey: '123' });
    assert.equal(invalid.status, 401);
    assert.deepEqual(invalid.json, { message: 'Invalid API key in request' });
    const good = await get('/ka', { apikey: 'auth-one', 'x-consumer-username': 'spoofed', 'x-credential-identifier': 'spoofed' });
    assert.equal(good.status, 200);
    assert.equal(good.json.headers['x-consumer-username'], 'jack');
    assert.equal(good.json.headers['x-credential-identifier'], undefined, 'removed: a consumer-level key');
    assert.equal(good.json.headers.apikey, 'auth-one', 'without hide_credentials the key goes on');
  });

  test('query key, custom header, hide_credentials where the key was found', async () => {
    await ok('PUT', '/routes/ka2', { uri: '/ka2', plugins: { 'key-auth': { header: 'Authorization', query: 'auth', hide_credentials: true }, ...echoFn('ka2') } });
    const byHeader = await get('/ka2?auth=auth-one', { authorization: 'auth-one' });
    assert.equal(byHeader.status, 200);
    assert.equal(byHeader.json.headers.authorization, undefined);
    assert.equal(byHeader.json.url, '/e/ka2?auth=auth-one', 'only the source used is hidden');
    const byQuery = await get('/ka2?a=1&auth=auth-one&b=2');
    assert.equal(byQuery.status, 200);
    assert.equal(byQuery.json.url, '/e/ka2?a=1&b=2');
  });

  test('a credential authenticates for its consumer: X-Credential-Identifier, X-Consumer-Custom-ID from the consumer', async () => {
    await ok('PUT', '/consumers', { username: 'alex', labels: { custom_id: '495aec6a' } });
    await ok('PUT', '/consumers/alex/credentials/cred-a', { plugins: { 'key-auth': { key: 'p7a3k6r4t9' } } });
    const got = await get('/ka', { apikey: 'p7a3k6r4t9', 'x-consumer-custom-id': '271fc4a264bb' });
    assert.equal(got.status, 200, got.text);
    assert.equal(got.json.headers['x-consumer-username'], 'alex');
    assert.equal(got.json.headers['x-credential-identifier'], 'cred-a');
    assert.equal(got.json.headers['x-consumer-custom-id'], '495aec6a');
    // Deleting the consumer deletes its credential: the key stops working on the next request.
    await ok('DELETE', '/consumers/alex');
    assert.equal((await get('/ka', { apikey: 'p7a3k6r4t9' })).status, 401);
  });

  test('anonymous_consumer: a request without a key is served as that consumer; a missing one is 401', async () => {
    await ok('PUT', '/consumers', { username: 'guest' });
    await ok('PUT', '/routes/anon', { uri: '/anon', plugins: { 'key-auth': { anonymous_consumer: 'guest' }, ...echoFn('anon') } });
    const got = await get('/anon');
    assert.equal(got.status, 200);
    assert.equal(got.json.headers['x-consumer-username'], 'guest');
    await ok('PUT', '/routes/anon', { uri: '/anon', plugins: { 'key-auth': { anonymous_consumer: 'nobody' }, ...echoFn('anon') } });
    const none = await get('/anon');
    assert.equal(none.status, 401);
    assert.deepEqual(none.json, { message: 'Invalid user authorization' });
  });
});

describe('services, plugin configs and the merge precedence (t/node/merge-route.t, plugin-configs.t)', () => {
  test('a route takes the service upstream and plugins; its own conf of a plugin replaces the service one', async () => {
    await ok('PUT', '/services/svc', { plugins: { 'key-auth': {} }, upstream: echoUpstream() });
    await ok('PUT', '/routes/sv1', { uri: '/sv1', service_id: 'svc' });
    assert.equal((await get('/sv1')).status, 401, 'the service key-auth guards the route');
    const got = await get('/sv1', { apikey: 'auth-one' });
    assert.equal(got.status, 200, `${got.text} ${(await gw.admin('GET', '/consumers')).text}`);
    assert.equal(got.json.url, '/sv1', 'served by the service upstream');
    // The route disables the service's key-auth (merge-route.t TEST 7-8) and has its own call.
    await ok('PUT', '/routes/sv1', { uri: '/sv1', service_id: 'svc', plugins: { 'key-auth': { _meta: { disable: true } }, ...echoFn('own') } });
    const open = await get('/sv1');
    assert.equal(open.status, 200);
    assert.equal(open.json.url, '/e/own');
  });

  test('a plugin config fills what the route lacks; the route wins; a PATCH of it is served next', async () => {
    await ok('PUT', '/plugin_configs/pc', { plugins: { ...echoFn('pc'), 'key-auth': {} } });
    await ok('PUT', '/routes/pc1', { uri: '/pc1', plugin_config_id: 'pc', plugins: echoFn('route') });
    assert.equal((await get('/pc1')).status, 401);
    assert.equal((await get('/pc1', { apikey: 'auth-one' })).json.url, '/e/route');
    await ok('PATCH', '/plugin_configs/pc', { plugins: { 'key-auth': null } });
    assert.equal((await get('/pc1')).json.url, '/e/route');
  });

  test('a service change reaches its routes on the next request', async () => {
    await ok('PUT', '/services/svc2', { plugins: echoFn('v1') });
    await ok('PUT', '/routes/sv2', { uri: '/sv2', service_id: 'svc2' });
    assert.equal((await get('/sv2')).json.url, '/e/v1');
    await ok('PUT', '/services/svc2', { plugins: echoFn('v2') });
    assert.equal((await get('/sv2')).json.url, '/e/v2');
  });
});

describe('consumer groups and consumer plugins (t/node/consumer-group.t, plugin-configs.t TEST 5)', () => {
  test('Consumer > Consumer Group > Route: the group body, then the consumer body; a PATCH of the group is served next', async () => {
    await ok('PUT', '/consumer_groups/bar', { plugins: { 'response-rewrite': { body: 'hello' } } });
    await ok('PUT', '/consumers', { username: 'foo', group_id: 'bar', plugins: { 'key-auth': { key: 'foo-key' } } });
    await ok('PUT', '/routes/cg', { uri: '/cg', plugins: { 'key-auth': {}, 'response-rewrite': { body: 'route' }, ...echoFn('cg') } });
    assert.equal((await get('/cg', { apikey: 'foo-key' })).text, 'hello');
    await ok('PATCH', '/consumer_groups/bar', { plugins: { 'response-rewrite': { body: 'world' } } });
    assert.equal((await get('/cg', { apikey: 'foo-key' })).text, 'world');
    await ok('PUT', '/consumers', { username: 'foo', group_id: 'bar', plugins: { 'key-auth': { key: 'foo-key' }, 'response-rewrite': { body: 'mine' } } });
    assert.equal((await get('/cg', { apikey: 'foo-key' })).text, 'mine');
    // Another consumer without a group gets the route's conf.
    assert.equal((await get('/cg', { apikey: 'auth-one' })).text, 'route');
  });

  test("a plugin config's proxy-rewrite and the route's response-rewrite both apply (plugin-configs.t TEST 5)", async () => {
    await ok('PUT', '/plugin_configs/pc5', { plugins: { 'proxy-rewrite': { uri: '/hello' }, 'response-rewrite': { body: 'hello' } } });
    await ok('PUT', '/routes/pc5', { uri: '/helloaa', plugin_config_id: 'pc5', plugins: { 'response-rewrite': { body: 'world' } }, upstream: echoUpstream() });
    const got = await get('/helloaa');
    assert.equal(got.text, 'world');
    await ok('PUT', '/routes/pc5', { uri: '/helloaa', plugin_config_id: 'pc5', upstream: echoUpstream() });
    assert.equal((await get('/helloaa')).text, 'hello');
    await ok('PATCH', '/plugin_configs/pc5', { plugins: { 'response-rewrite': null } });
    assert.equal((await get('/helloaa')).json.url, '/hello', 'proxy-rewrite from the plugin config rewrote the path');
  });

  test('cors adds its headers to a 401 from key-auth (response phases run for every answer)', async () => {
    await ok('PUT', '/routes/cors-ka', { uri: '/cors-ka', plugins: { cors: {}, 'key-auth': {}, ...echoFn('ck') } });
    const got = await get('/cors-ka', { origin: 'https://app.example' });
    assert.equal(got.status, 401);
    assert.equal(got.headers.get('access-control-allow-origin'), '*');
  });
});

describe('_meta (t/plugin/plugin.t)', () => {
  test('error_response replaces the 401 body of key-auth (TEST 7-8)', async () => {
    await ok('PUT', '/routes/meta-er', { uri: '/meta-er', plugins: { 'key-auth': { _meta: { error_response: { message: 'Missing credential in request' } } }, ...echoFn('er') } });
    const got = await get('/meta-er');
    assert.equal(got.status, 401);
    assert.equal(got.text, '{"message":"Missing credential in request"}\n');
  });

  test('filter: key-auth applies only when the expression holds', async () => {
    await ok('PUT', '/routes/meta-f', { uri: '/meta-f', plugins: { 'key-auth': { _meta: { filter: [['arg_secure', '==', '1']] } }, ...echoFn('f') } });
    assert.equal((await get('/meta-f')).status, 200);
    assert.equal((await get('/meta-f?secure=1')).status, 401);
  });
});

describe('global rules', () => {
  test('run for every request, matched or not: a global key-auth guards routes and 404s alike', async () => {
    await ok('PUT', '/routes/open', { uri: '/open', plugins: echoFn('open') });
    assert.equal((await get('/open')).status, 200);
    await ok('PUT', '/global_rules/g', { plugins: { 'key-auth': {} } });
    try {
      assert.equal((await get('/open')).status, 401);
      assert.equal((await get('/no/such/route')).status, 401, 'global rewrite runs before the 404');
      assert.equal((await get('/no/such/route', { apikey: 'auth-one' })).status, 404);
      assert.equal((await get('/open', { apikey: 'auth-one' })).status, 200);
    } finally {
      await ok('DELETE', '/global_rules/g');
    }
    assert.equal((await get('/open')).status, 200);
  });
});

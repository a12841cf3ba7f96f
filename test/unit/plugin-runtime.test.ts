/**
 * The plugin runtime (src/core/plugins/pipeline.ts, src/core/config.ts) through a real gateway: a memory store, the
 * Node forwarder and a real upstream on 127.0.0.1 that answers with what it received. Test plugins record every
 * phase they run in, so the order APISIX defines (apisix-wave2.md §1.1) is checked call by call; the conformance
 * suite checks the same orders with the real plugins on every runtime.
 * Run: node --import tsx --test test/unit/plugin-runtime.test.ts
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, beforeEach, describe, it } from 'node:test';
import * as v from 'valibot';
import { type Logger, type RequestContext, silentLogger } from '../../src/core/context.ts';
import { pluginExit } from '../../src/core/errors.ts';
import { createGateway, type Gateway } from '../../src/core/gateway.ts';
import { BUILTIN_PLUGINS } from '../../src/core/plugins/index.ts';
import type { PluginDefinition, PluginInstance } from '../../src/core/plugins/types.ts';
import { createNodeForwarder, type NodeForwarder } from '../../src/runtime/node-forwarder.ts';
import { MemoryStore } from '../../src/store/memory.ts';

/** Every phase call, as `<plugin>.<tag>:<phase>`. */
const calls: string[] = [];

const traceConf = v.object({
  tag: v.optional(v.string(), ''),
  /** Phase in which to end the request with `status`. */
  exit: v.optional(v.picklist(['rewrite', 'access', 'beforeProxy'])),
  status: v.optional(v.number(), 403),
  /** Request header to set upstream in rewrite (`name: value`). */
  set: v.optional(v.string()),
  /** Add a response header in header_filter. */
  mark: v.optional(v.boolean(), false),
});

/** A plugin that records the phases it runs in. */
function tracer(name: string, priority: number): PluginDefinition<v.InferOutput<typeof traceConf>> {
  return {
    name,
    priority,
    version: 0.1,
    schema: traceConf,
    create(conf) {
      const label = conf.tag ? `${name}.${conf.tag}` : name;
      const phase = (p: 'rewrite' | 'access' | 'beforeProxy') => (ctx: RequestContext) => {
        calls.push(`${label}:${p}`);
        if (p === 'rewrite' && conf.set) {
          const [h, val] = conf.set.split(': ');
          ctx.setHeader(h!, val!);
        }
        return conf.exit === p ? pluginExit(conf.status, { message: `${label} says no` }) : undefined;
      };
      const instance: PluginInstance = {
        rewrite: phase('rewrite'),
        access: phase('access'),
        beforeProxy: phase('beforeProxy'),
        headerFilter(_ctx, head) {
          calls.push(`${label}:header_filter`);
          if (conf.mark) head.headers.append('x-marks', label);
        },
        bodyFilter(_ctx, chunk, last) {
          if (last) calls.push(`${label}:body_filter`);
          return chunk;
        },
        log() {
          calls.push(`${label}:log`);
        },
      };
      return instance;
    },
  };
}

/** An auth plugin: the consumer named by the `x-user` header, if it exists. */
const userAuth: PluginDefinition<Record<string, never>> = {
  name: 'user-auth',
  priority: 2500,
  version: 0.1,
  type: 'auth',
  schema: v.object({}),
  consumerSchema: v.object({ user: v.string() }),
  create: () => ({
    rewrite(ctx) {
      calls.push('user-auth:rewrite');
      const user = ctx.header('x-user');
      const entry = ctx.consumers.forPlugin('user-auth').find((e) => e.conf.user === user);
      if (!entry) return pluginExit(401, { message: 'who are you' });
      ctx.consumer = entry.consumer;
      return undefined;
    },
  }),
};

/** Async handlers (a promise from a phase must be awaited and keep the order). */
const slow: PluginDefinition<Record<string, never>> = {
  name: 'slow',
  priority: 2600,
  version: 0.1,
  schema: v.object({}),
  create: () => ({
    async rewrite() {
      await new Promise((r) => setTimeout(r, 5));
      calls.push('slow:rewrite');
      return undefined;
    },
  }),
};

/** Rewrites what goes upstream: method, path, query, host and headers (the overlay every forwarder honours). */
const overlay: PluginDefinition<Record<string, never>> = {
  name: 'overlay',
  priority: 1000,
  version: 0.1,
  schema: v.object({}),
  create: () => ({
    rewrite(ctx) {
      ctx.upstream.method = 'PUT';
      ctx.upstream.path = '/rewritten/p%20q';
      ctx.upstream.query = 'a=1';
      ctx.setHeader('host', 'rewritten.test');
      ctx.setHeader('x-set', 'set');
      ctx.addHeader('x-add', 'two');
      ctx.setHeader('x-gone', null);
      return undefined;
    },
  }),
};

const PLUGINS = [
  ...BUILTIN_PLUGINS,
  tracer('t-high', 3000),
  tracer('t-mid', 2000),
  tracer('t-low', 1000),
  tracer('t-cons', 500),
  userAuth,
  slow,
  overlay,
];

let upstreamAddr: string;
let hits = 0;
const servers: http.Server[] = [];
let store: MemoryStore;
let gateway: Gateway;
let forwarder: NodeForwarder;
const errors: string[] = [];
const logger: Logger = { ...silentLogger, error: (m, f) => errors.push(`${m} ${JSON.stringify(f)}`) };

before(async () => {
  const server = http.createServer((req, res) => {
    hits++;
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      res.end(
        JSON.stringify({ method: req.method, url: req.url, headers: req.headers, rawHeaders: req.rawHeaders, body }),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  servers.push(server);
  upstreamAddr = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  store = new MemoryStore();
  forwarder = createNodeForwarder();
  gateway = await createGateway({ store, forwarder, plugins: PLUGINS, logger, clientIp: () => '127.0.0.1' });
});

after(async () => {
  await gateway.close();
  await forwarder.close();
  for (const s of servers) s.close();
});

beforeEach(() => {
  calls.length = 0;
  errors.length = 0;
  hits = 0;
});

const upstream = () => ({ type: 'roundrobin', nodes: { [upstreamAddr]: 1 } });
const put = async (key: string, value: Record<string, unknown>) => {
  await store.put(`/apisix/${key}`, { id: key.split('/').pop(), ...value });
  await gateway.refresh();
};
const del = async (key: string) => {
  await store.delete(`/apisix/${key}`);
  await gateway.refresh();
};
async function get(path: string, headers: Record<string, string> = {}) {
  const res = await gateway.serveProxy(new Request(`http://gw.test${path}`, { headers }));
  const text = await res.text();
  // Log handlers run once the body was read to its end.
  await new Promise((r) => setImmediate(r));
  return { status: res.status, headers: res.headers, text, json: () => JSON.parse(text) };
}

describe('phase order (APISIX §1.1)', () => {
  it('global rewrite, route rewrite, global access, route access, before_proxy, the call, then the response phases, global first', async () => {
    await put('global_rules/g', { plugins: { 't-mid': { tag: 'g' } } });
    await put('routes/r', { uri: '/order', plugins: { 't-high': {}, 't-low': {} }, upstream: upstream() });
    const res = await get('/order');
    assert.equal(res.status, 200);
    assert.equal(hits, 1);
    assert.deepEqual(calls, [
      't-mid.g:rewrite',
      't-high:rewrite',
      't-low:rewrite',
      't-mid.g:access',
      't-high:access',
      't-low:access',
      't-mid.g:beforeProxy',
      't-high:beforeProxy',
      't-low:beforeProxy',
      't-mid.g:header_filter',
      't-high:header_filter',
      't-low:header_filter',
      't-mid.g:body_filter',
      't-high:body_filter',
      't-low:body_filter',
      't-mid.g:log',
      't-high:log',
      't-low:log',
    ]);
    await del('global_rules/g');
  });

  it('an exit in access skips the rest of the request phases and the call; every response phase still runs', async () => {
    await put('global_rules/g', { plugins: { 't-mid': { tag: 'g', mark: true } } });
    await put('routes/r', {
      uri: '/exit',
      plugins: { 't-high': { exit: 'access', mark: true }, 't-low': { mark: true } },
      upstream: upstream(),
    });
    const res = await get('/exit');
    assert.equal(res.status, 403);
    assert.deepEqual(res.json(), { message: 't-high says no' });
    assert.equal(res.headers.get('content-type'), 'text/plain; charset=utf-8');
    assert.equal(
      res.headers.get('x-marks'),
      't-mid.g, t-high, t-low',
      'header_filter ran for every plugin on the exit',
    );
    assert.equal(hits, 0, 'no upstream call');
    assert.deepEqual(calls, [
      't-mid.g:rewrite',
      't-high:rewrite',
      't-low:rewrite',
      't-mid.g:access',
      't-high:access',
      't-mid.g:header_filter',
      't-high:header_filter',
      't-low:header_filter',
      't-mid.g:body_filter',
      't-high:body_filter',
      't-low:body_filter',
      't-mid.g:log',
      't-high:log',
      't-low:log',
    ]);
    await del('global_rules/g');
  });

  it('no route matched: global rewrite and access, then the 404, then the global response phases', async () => {
    await put('global_rules/g', { plugins: { 't-mid': { tag: 'g', mark: true } } });
    const res = await get('/nothing-here');
    assert.equal(res.status, 404);
    assert.deepEqual(res.json(), { error_msg: '404 Route Not Found' });
    assert.equal(res.headers.get('x-marks'), 't-mid.g');
    assert.deepEqual(calls, [
      't-mid.g:rewrite',
      't-mid.g:access',
      't-mid.g:header_filter',
      't-mid.g:body_filter',
      't-mid.g:log',
    ]);
    // A global exit answers unmatched requests too.
    await put('global_rules/g', { plugins: { 't-mid': { tag: 'g', exit: 'rewrite', status: 401 } } });
    assert.equal((await get('/nothing-here')).status, 401);
    await del('global_rules/g');
  });

  it('async handlers keep the order', async () => {
    await put('routes/r', { uri: '/async', plugins: { slow: {}, 't-high': {}, 't-low': {} }, upstream: upstream() });
    await get('/async');
    assert.deepEqual(calls.slice(0, 3), ['t-high:rewrite', 'slow:rewrite', 't-low:rewrite']);
  });
});

describe('_meta', () => {
  it('priority reorders within the route list, never across global and route', async () => {
    await put('global_rules/g', { plugins: { 't-low': { tag: 'g' } } });
    await put('routes/r', {
      uri: '/prio',
      plugins: { 't-high': { _meta: { priority: 1 } }, 't-mid': {} },
      upstream: upstream(),
    });
    await get('/prio');
    assert.deepEqual(calls.slice(0, 3), ['t-low.g:rewrite', 't-mid:rewrite', 't-high:rewrite']);
    await del('global_rules/g');
  });

  it('disable skips the plugin; filter runs it only when the expression holds', async () => {
    await put('routes/r', {
      uri: '/meta',
      plugins: {
        't-high': { _meta: { disable: true } },
        't-mid': { _meta: { filter: [['arg_v', '==', '2']] } },
        't-low': {},
      },
      upstream: upstream(),
    });
    await get('/meta?v=1');
    assert.ok(!calls.some((c) => c.startsWith('t-high') || c.startsWith('t-mid')), calls.join());
    calls.length = 0;
    await get('/meta?v=2');
    assert.ok(calls.includes('t-mid:rewrite') && calls.includes('t-mid:log'));
    assert.ok(!calls.some((c) => c.startsWith('t-high')));
  });

  it('error_response replaces the body of an exit of 400 or more, status kept', async () => {
    await put('routes/r', {
      uri: '/err',
      plugins: {
        't-high': {
          exit: 'rewrite',
          status: 401,
          _meta: { error_response: { message: 'Missing credential in request' } },
        },
      },
      upstream: upstream(),
    });
    const res = await get('/err');
    assert.equal(res.status, 401);
    assert.equal(res.text, '{"message":"Missing credential in request"}\n');
    await put('routes/r', {
      uri: '/err',
      plugins: { 't-high': { exit: 'rewrite', status: 418, _meta: { error_response: 'plain' } } },
      upstream: upstream(),
    });
    assert.equal((await get('/err')).text, 'plain');
  });
});

describe('services, plugin configs and consumers', () => {
  it('Route > Plugin Config > Service per plugin name; the service upstream serves a route without one', async () => {
    await put('services/s', { plugins: { 't-high': { tag: 'svc' }, 't-mid': { tag: 'svc' } }, upstream: upstream() });
    await put('plugin_configs/pc', { plugins: { 't-mid': { tag: 'pc' }, 't-low': { tag: 'pc' } } });
    await put('routes/r', {
      uri: '/merged',
      service_id: 's',
      plugin_config_id: 'pc',
      plugins: { 't-low': { tag: 'route' } },
    });
    const res = await get('/merged');
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(
      calls.filter((c) => c.endsWith(':rewrite')),
      ['t-high.svc:rewrite', 't-mid.pc:rewrite', 't-low.route:rewrite'],
    );
    assert.equal(res.json().url, '/merged');
  });

  it('a service change reaches its routes on the next request, and only its routes are compiled again', async () => {
    await put('services/s', { plugins: { 't-high': { tag: 'one' } }, upstream: upstream() });
    await put('routes/a', { uri: '/sa', service_id: 's' });
    await put('routes/b', { uri: '/sb', plugins: { 't-low': {} }, upstream: upstream() });
    const pipe = (path: string) =>
      gateway.current().router.match({ method: 'GET', host: 'gw.test', path })!.data.pipeline;
    const before = { a: pipe('/sa'), b: pipe('/sb') };
    await put('services/s', { plugins: { 't-high': { tag: 'two' } }, upstream: upstream() });
    await get('/sa');
    assert.ok(calls.includes('t-high.two:rewrite'), calls.join());
    assert.notEqual(pipe('/sa'), before.a, 'the service route was compiled again');
    assert.equal(pipe('/sb'), before.b, 'the other route was not');
  });

  it('a dangling service answers 404, a dangling plugin config 503, with one problem each', async () => {
    await put('routes/r', { uri: '/dangling-s', service_id: 'nope' });
    assert.equal((await get('/dangling-s')).status, 404);
    await put('routes/r', { uri: '/dangling-pc', plugin_config_id: 'nope', upstream: upstream() });
    assert.equal((await get('/dangling-pc')).status, 503);
    assert.ok(gateway.current().problems.some((p) => p.includes('plugin config nope does not exist')));
  });

  it('consumer merge: after auth, Consumer > Consumer Group > Route; the plugins it brings run their rewrite', async () => {
    await put('consumer_groups/grp', { plugins: { 't-cons': { tag: 'group' }, 't-low': { tag: 'group' } } });
    await put('consumers/jack', {
      username: 'jack',
      group_id: 'grp',
      plugins: { 'user-auth': { user: 'jack' }, 't-cons': { tag: 'jack' } },
    });
    await put('consumers/anna', { username: 'anna', plugins: { 'user-auth': { user: 'anna' } } });
    await put('routes/r', {
      uri: '/who',
      plugins: { 'user-auth': {}, 't-low': { tag: 'route' } },
      upstream: upstream(),
    });
    assert.equal((await get('/who')).status, 401);
    calls.length = 0;
    assert.equal((await get('/who', { 'x-user': 'jack' })).status, 200);
    // Every plugin conf the consumer brings runs its rewrite (APISIX `rewrite_in_consumer`: `_from_consumer`), also one
    // that replaced a route conf whose rewrite already ran; then access uses the merged list.
    assert.deepEqual(calls.slice(0, 5), [
      'user-auth:rewrite',
      't-low.route:rewrite',
      't-low.group:rewrite',
      't-cons.jack:rewrite',
      't-low.group:access',
    ]);
    assert.ok(!calls.includes('t-low.route:access'), 'the group conf replaced the route conf');
    calls.length = 0;
    assert.equal((await get('/who', { 'x-user': 'anna' })).status, 200);
    assert.ok(calls.includes('t-low.route:access') && !calls.some((c) => c.startsWith('t-cons')));
    // A consumer whose group does not exist: 503 once it authenticated.
    await put('consumers/lost', { username: 'lost', group_id: 'missing', plugins: { 'user-auth': { user: 'lost' } } });
    assert.equal((await get('/who', { 'x-user': 'lost' })).status, 503);
  });

  it('credentials authenticate for their consumer', async () => {
    await put('consumers/cred', { username: 'cred' });
    await put('consumers/cred/credentials/c1', { plugins: { 'user-auth': { user: 'via-credential' } } });
    await put('routes/r', { uri: '/cred', plugins: { 'user-auth': {} }, upstream: upstream() });
    assert.equal((await get('/cred', { 'x-user': 'via-credential' })).status, 200);
    const entry = gateway
      .current()
      .consumers.forPlugin('user-auth')
      .find((e) => e.conf.user === 'via-credential');
    assert.equal(entry?.consumer.username, 'cred');
    assert.equal(entry?.consumer.credentialId, 'c1');
  });
});

describe('global rules', () => {
  it('a plugin in two global rules runs in neither (APISIX drops it), with a problem', async () => {
    await put('global_rules/1', { plugins: { 't-high': { tag: 'one' } } });
    await put('global_rules/2', { plugins: { 't-high': { tag: 'two' }, 't-low': { tag: 'two' } } });
    await put('routes/r', { uri: '/dup', upstream: upstream() });
    await get('/dup');
    assert.ok(!calls.some((c) => c.startsWith('t-high')), calls.join());
    assert.ok(calls.includes('t-low.two:rewrite'));
    assert.ok(gateway.current().problems.some((p) => p.includes('both have plugin t-high')));
    await del('global_rules/1');
    await del('global_rules/2');
  });

  it('global and route instances of the same plugin both run', async () => {
    await put('global_rules/1', { plugins: { 't-high': { tag: 'g' } } });
    await put('routes/r', { uri: '/twice', plugins: { 't-high': { tag: 'r' } }, upstream: upstream() });
    await get('/twice');
    assert.deepEqual(calls.slice(0, 2), ['t-high.g:rewrite', 't-high.r:rewrite']);
    await del('global_rules/1');
  });
});

describe('the upstream overlay', () => {
  it('method, path, query, Host and header edits reach the upstream', async () => {
    await put('routes/r', { uri: '/ov', plugins: { overlay: {} }, upstream: { ...upstream(), pass_host: 'pass' } });
    const res = await get('/ov?b=2', { 'x-add': 'one', 'x-gone': 'bye', 'x-set': 'client' });
    const got = res.json();
    assert.equal(got.method, 'PUT');
    assert.equal(got.url, '/rewritten/p%20q?a=1');
    assert.equal(got.headers.host, 'rewritten.test');
    assert.equal(got.headers['x-set'], 'set');
    assert.equal(got.headers['x-add'], 'one, two');
    assert.equal(got.headers['x-gone'], undefined);
  });

  it('the edits apply when the runtime hands the raw header list too (Node)', async () => {
    const gw = await createGateway({
      store,
      forwarder,
      plugins: PLUGINS,
      logger,
      rawHeaders: () => ['X-Set', 'client', 'X-Gone', 'bye', 'X-Keep', 'k'],
    });
    await put('routes/r', { uri: '/ov-raw', plugins: { overlay: {} }, upstream: upstream() });
    await gw.refresh();
    const res = await gw.serveProxy(
      new Request('http://gw.test/ov-raw', { headers: { 'x-set': 'client', 'x-gone': 'bye', 'x-keep': 'k' } }),
    );
    const got = (await res.json()) as { headers: Record<string, string> };
    assert.equal(got.headers['x-set'], 'set');
    assert.equal(got.headers['x-gone'], undefined);
    assert.equal(got.headers['x-keep'], 'k');
    await gw.close();
  });

  it('a header set in rewrite is what later plugins read', async () => {
    await put('routes/r', {
      uri: '/seen',
      plugins: { 't-high': { set: 'x-from: high' }, overlay: {} },
      upstream: upstream(),
    });
    const res = await get('/seen');
    assert.equal(res.json().headers['x-from'], 'high');
  });
});

describe('the call itself', () => {
  it('a route with a calling plugin only is served by the call directly (no phase runs)', async () => {
    await put('routes/r', { uri: '/fn', plugins: { openfunction: { function_uri: `http://${upstreamAddr}/f` } } });
    const res = await get('/fn');
    assert.equal(res.json().url, '/f');
    assert.equal(calls.length, 0);
  });

  it('a phase handler that throws is a 500, logged', async () => {
    const boom: PluginDefinition<Record<string, never>> = {
      name: 'boom',
      priority: 1,
      version: 0.1,
      schema: v.object({}),
      create: () => ({
        access() {
          throw new Error('kaboom');
        },
      }),
    };
    const gw = await createGateway({ store, forwarder, plugins: [...PLUGINS, boom], logger });
    await put('routes/r', { uri: '/boom', plugins: { boom: {} }, upstream: upstream() });
    await gw.refresh();
    const res = await gw.serveProxy(new Request('http://gw.test/boom'));
    assert.equal(res.status, 500);
    assert.ok(errors.some((e) => e.includes('kaboom')));
    await gw.close();
  });
});

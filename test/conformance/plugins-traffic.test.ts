/**
 * The traffic plugins cors, ip-restriction, real-ip and request-id through real HTTP, on every runtime: the cases
 * of APISIX's t/plugin/cors.t, cors2.t, ip-restriction.t, real-ip.t and request-id.t (apisix-wave2.md §5, §7), then
 * what they mean for fngate (answers made by other plugins, the upstream's own headers, what reaches the upstream).
 * Schema details without a gateway: test/unit/plugins-traffic.test.ts.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type FunctionServers, startFunctions } from '../functions/functions.ts';
import { rmDir, tmpDir } from '../helpers/process.ts';
import { type GatewayUnderTest, gatewayPerFile, startGateway } from './harness.ts';

let gw: GatewayUnderTest;
let fn: FunctionServers;
gatewayPerFile((g, f) => {
  gw = g;
  fn = f;
});

interface Echoed {
  method: string;
  url: string;
  headers: Record<string, string>;
}

/** A route on the echo function (it answers with the request it got) with `plugins`. */
const echoRoute = (uri: string, plugins: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
  uri,
  upstream: { type: 'roundrobin', nodes: { [`127.0.0.1:${fn.ports.echo}`]: 1 } },
  plugins,
  ...extra,
});

const ACA = [
  'access-control-allow-origin',
  'access-control-allow-methods',
  'access-control-allow-headers',
  'access-control-max-age',
  'access-control-expose-headers',
  'access-control-allow-credentials',
];

function noCorsHeaders(res: Response): void {
  for (const name of ACA) assert.equal(res.headers.get(name), null, `${name} should be absent`);
}

describe('cors (t/plugin/cors.t, cors2.t)', () => {
  test('TEST 6-7: cors {} → every default, no Vary, no expose/credentials headers', async () => {
    await gw.putRoute('cors1', echoRoute('/cors1', { cors: {} }));
    const res = await gw.fetch('/cors1');
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('access-control-allow-origin'), '*');
    assert.equal(res.headers.get('access-control-allow-methods'), '*');
    assert.equal(res.headers.get('access-control-allow-headers'), '*');
    assert.equal(res.headers.get('access-control-max-age'), '5');
    assert.equal(res.headers.get('vary'), null);
    assert.equal(res.headers.get('access-control-expose-headers'), null);
    assert.equal(res.headers.get('access-control-allow-credentials'), null);
    assert.equal(((await res.json()) as Echoed).method, 'GET');
  });

  test('TEST 8-10: an origin list with credentials; Vary appended to the upstream one; an unlisted origin gets nothing', async () => {
    await gw.putRoute(
      'cors2',
      echoRoute('/cors2', {
        cors: {
          allow_origins: 'http://sub.domain.com,http://sub2.domain.com',
          allow_methods: 'GET,POST',
          allow_headers: 'headr1,headr2',
          expose_headers: 'ex-headr1,ex-headr2',
          max_age: 50,
          allow_credential: true,
        },
      }),
    );
    const res = await gw.fetch('/cors2?set-header=vary:Via', { headers: { origin: 'http://sub2.domain.com' } });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('access-control-allow-origin'), 'http://sub2.domain.com');
    assert.equal(res.headers.get('access-control-allow-methods'), 'GET,POST');
    assert.equal(res.headers.get('access-control-allow-headers'), 'headr1,headr2');
    assert.equal(res.headers.get('access-control-expose-headers'), 'ex-headr1,ex-headr2');
    assert.equal(res.headers.get('access-control-max-age'), '50');
    assert.equal(res.headers.get('access-control-allow-credentials'), 'true');
    assert.equal(res.headers.get('vary'), 'Via, Origin');
    await res.body?.cancel();

    const other = await gw.fetch('/cors2?set-header=vary:Via', { headers: { origin: 'http://sub3.domain.com' } });
    assert.equal(other.status, 200);
    noCorsHeaders(other);
    assert.equal(other.headers.get('vary'), 'Via, Origin', 'Vary: Origin even when the origin is not allowed');
    await other.body?.cancel();

    const none = await gw.fetch('/cors2');
    noCorsHeaders(none);
    await none.body?.cancel();
  });

  test('TEST 11-12: ** everywhere echoes the origin and the requested headers, lists every method', async () => {
    await gw.putRoute(
      'cors3',
      echoRoute('/cors3', {
        cors: { allow_origins: '**', allow_methods: '**', allow_headers: '**', expose_headers: '*' },
      }),
    );
    const res = await gw.fetch('/cors3', {
      headers: { origin: 'https://sub.domain.com', 'access-control-request-headers': 'req-header1,req-header2' },
    });
    assert.equal(res.headers.get('access-control-allow-origin'), 'https://sub.domain.com');
    assert.equal(
      res.headers.get('access-control-allow-methods'),
      'GET,POST,PUT,DELETE,PATCH,HEAD,OPTIONS,CONNECT,TRACE',
    );
    assert.equal(res.headers.get('access-control-allow-headers'), 'req-header1,req-header2');
    assert.equal(res.headers.get('access-control-expose-headers'), '*');
    assert.equal(res.headers.get('vary'), 'Origin');
    await res.body?.cancel();
    // No Origin: `**` allows `*`; no Access-Control-Request-Headers: no allow-headers header.
    const bare = await gw.fetch('/cors3');
    assert.equal(bare.headers.get('access-control-allow-origin'), '*');
    assert.equal(bare.headers.get('access-control-allow-headers'), null);
    await bare.body?.cancel();
  });

  test('TEST 14: any OPTIONS is answered 200 with an empty body, never forwarded, with the CORS headers', async () => {
    await gw.putRoute('cors1', echoRoute('/cors1', { cors: {} }));
    const res = await gw.fetch('/cors1', { method: 'OPTIONS' });
    assert.equal(res.status, 200);
    assert.equal(await res.text(), '', 'the echo upstream would have answered with JSON');
    assert.equal(res.headers.get('access-control-allow-origin'), '*');
    const preflight = await gw.fetch('/cors1', {
      method: 'OPTIONS',
      headers: { origin: 'http://a.com', 'access-control-request-method': 'PUT' },
    });
    assert.equal(preflight.status, 200);
    assert.equal(await preflight.text(), '');
    assert.equal(preflight.headers.get('access-control-allow-origin'), '*');
  });

  test('TEST 15-16 (with ip-restriction for key-auth): an answer another plugin made carries the CORS headers', async () => {
    await gw.putRoute(
      'cors-deny',
      echoRoute('/cors-deny', {
        cors: { allow_origins: '**' },
        'ip-restriction': { blacklist: ['127.0.0.0/8', '::1'] },
      }),
    );
    const res = await gw.fetch('/cors-deny', { headers: { origin: 'http://app.test' } });
    assert.equal(res.status, 403);
    assert.equal(await res.text(), '{"message":"Your IP address is not allowed"}\n');
    assert.equal(res.headers.get('access-control-allow-origin'), 'http://app.test');
    assert.equal(res.headers.get('vary'), 'Origin');
    // The preflight is answered by cors (rewrite, priority 4000) before ip-restriction's access phase.
    const pre = await gw.fetch('/cors-deny', { method: 'OPTIONS', headers: { origin: 'http://app.test' } });
    assert.equal(pre.status, 200);
    await pre.body?.cancel();
  });

  test('upstream 404 and 5xx, and a gateway 502/503, carry the CORS headers; ACA* headers of the upstream are replaced', async () => {
    await gw.putRoute('cors-err', echoRoute('/cors-err', { cors: { allow_origins: 'http://app.test' } }));
    for (const status of [404, 500, 502]) {
      const res = await gw.fetch(`/cors-err?status=${status}`, { headers: { origin: 'http://app.test' } });
      assert.equal(res.status, status);
      assert.equal(res.headers.get('access-control-allow-origin'), 'http://app.test', `status ${status}`);
      await res.body?.cancel();
    }
    const spoof = await gw.fetch(
      '/cors-err?set-header=access-control-allow-origin:http://evil.test&set-header=access-control-allow-methods:EVIL',
      {
        headers: { origin: 'http://app.test' },
      },
    );
    assert.equal(spoof.headers.get('access-control-allow-origin'), 'http://app.test');
    assert.equal(spoof.headers.get('access-control-allow-methods'), '*');
    await spoof.body?.cancel();

    // Nothing listens on the upstream: the gateway's own error answer gets the headers too.
    await gw.putRoute('cors-down', {
      uri: '/cors-down',
      upstream: { type: 'roundrobin', nodes: { '127.0.0.1:1': 1 } },
      plugins: { cors: {} },
    });
    const down = await gw.fetch('/cors-down');
    assert.ok(down.status >= 500, `status ${down.status}`);
    assert.equal(down.headers.get('access-control-allow-origin'), '*');
    await down.body?.cancel();
  });

  test('cors2.t TEST 2-5: allow_origins_by_regex alone decides', async () => {
    await gw.putRoute(
      'cors-re',
      echoRoute('/cors-re', {
        cors: {
          allow_origins: 'http://sub.test.com',
          allow_origins_by_regex: ['.*\\.domain.com$', '^http://x\\.example$'],
        },
      }),
    );
    const miss = await gw.fetch('/cors-re', { headers: { origin: 'http://sub.test.com' } });
    assert.equal(miss.headers.get('access-control-allow-origin'), null, 'allow_origins is ignored once a regex is set');
    assert.equal(miss.headers.get('vary'), 'Origin');
    await miss.body?.cancel();
    const none = await gw.fetch('/cors-re');
    assert.equal(none.headers.get('access-control-allow-origin'), null);
    await none.body?.cancel();
    for (const origin of ['http://sub.domain.com', 'http://x.example']) {
      const hit = await gw.fetch('/cors-re', { headers: { origin } });
      assert.equal(hit.headers.get('access-control-allow-origin'), origin);
      assert.equal(hit.headers.get('access-control-allow-methods'), '*');
      await hit.body?.cancel();
    }
  });

  test('timing_allow_origins and timing_allow_origins_by_regex set Timing-Allow-Origin', async () => {
    await gw.putRoute(
      'cors-t',
      echoRoute('/cors-t', { cors: { timing_allow_origins: 'http://a.test,http://b.test' } }),
    );
    const a = await gw.fetch('/cors-t', { headers: { origin: 'http://b.test' } });
    assert.equal(a.headers.get('timing-allow-origin'), 'http://b.test');
    await a.body?.cancel();
    const c = await gw.fetch('/cors-t', { headers: { origin: 'http://c.test' } });
    assert.equal(c.headers.get('timing-allow-origin'), null);
    assert.equal(c.headers.get('access-control-allow-origin'), '*');
    await c.body?.cancel();
    await gw.putRoute(
      'cors-tr',
      echoRoute('/cors-tr', { cors: { timing_allow_origins_by_regex: ['\\.good\\.test$'] } }),
    );
    const g = await gw.fetch('/cors-tr', { headers: { origin: 'http://x.good.test' } });
    assert.equal(g.headers.get('timing-allow-origin'), 'http://x.good.test');
    await g.body?.cancel();
    const b = await gw.fetch('/cors-tr', { headers: { origin: 'http://x.bad.test' } });
    assert.equal(b.headers.get('timing-allow-origin'), null);
    await b.body?.cancel();
  });

  test('the Admin API refuses what APISIX refuses', async () => {
    const cred = await gw.admin(
      'PUT',
      '/routes/cors-bad',
      echoRoute('/cors-bad', { cors: { allow_credential: true } }),
    );
    assert.equal(cred.status, 400);
    assert.equal(
      cred.json.error_msg,
      "failed to check the configuration of plugin cors err: you can not set '*' for other option when 'allow_credential' is true",
    );
    const re = await gw.admin(
      'PUT',
      '/routes/cors-bad',
      echoRoute('/cors-bad', { cors: { allow_origins_by_regex: ['(a'] } }),
    );
    assert.equal(re.status, 400);
    assert.match(re.json.error_msg, /property "allow_origins_by_regex" validation failed: invalid regex/);
  });
});

describe('ip-restriction (t/plugin/ip-restriction.t)', () => {
  test('a whitelist with the client lets it in; one without it answers 403 with the message', async () => {
    await gw.putRoute('ipr', echoRoute('/ipr', { 'ip-restriction': { whitelist: ['127.0.0.0/24', '113.74.26.106'] } }));
    const ok = await gw.fetch('/ipr');
    assert.equal(ok.status, 200);
    await ok.body?.cancel();
    await gw.putRoute('ipr', echoRoute('/ipr', { 'ip-restriction': { whitelist: ['113.74.26.106', '::2'] } }));
    const denied = await gw.fetch('/ipr');
    assert.equal(denied.status, 403);
    assert.equal(denied.headers.get('content-type'), 'text/plain; charset=utf-8');
    assert.equal(await denied.text(), '{"message":"Your IP address is not allowed"}\n');
  });

  test('a blacklist with the client answers 403; a custom message and response_code 404', async () => {
    await gw.putRoute('ipr', echoRoute('/ipr', { 'ip-restriction': { blacklist: ['127.0.0.0/24'] } }));
    const denied = await gw.fetch('/ipr');
    assert.equal(denied.status, 403);
    assert.equal(await denied.text(), '{"message":"Your IP address is not allowed"}\n');
    await gw.putRoute(
      'ipr',
      echoRoute('/ipr', {
        'ip-restriction': { blacklist: ['127.0.0.1'], message: 'Do you want to do something bad?', response_code: 404 },
      }),
    );
    const custom = await gw.fetch('/ipr');
    assert.equal(custom.status, 404);
    assert.equal(await custom.text(), '{"message":"Do you want to do something bad?"}\n');
    await gw.putRoute('ipr', echoRoute('/ipr', { 'ip-restriction': { blacklist: ['10.0.0.0/8', 'fe80::/10'] } }));
    const other = await gw.fetch('/ipr');
    assert.equal(other.status, 200);
    await other.body?.cancel();
  });

  test('the Admin API refuses what APISIX refuses', async () => {
    const cases: [unknown, string][] = [
      [{}, 'value should match only one schema, but matches none'],
      [
        { whitelist: ['1.1.1.1'], blacklist: ['2.2.2.2'] },
        'value should match only one schema, but matches both schemas 1 and 2',
      ],
      [{ blacklist: [] }, 'property "blacklist" validation failed: expect array to have at least 1 items'],
      [{ whitelist: ['1.1.1.1/33'] }, 'property "whitelist" validation failed: invalid ip address: 1.1.1.1/33'],
    ];
    for (const [conf, msg] of cases) {
      const res = await gw.admin('PUT', '/routes/ipr-bad', echoRoute('/ipr-bad', { 'ip-restriction': conf }));
      assert.equal(res.status, 400, JSON.stringify(conf));
      assert.equal(res.json.error_msg, `failed to check the configuration of plugin ip-restriction err: ${msg}`);
    }
  });
});

describe('real-ip (t/plugin/real-ip.t)', () => {
  test('source http_xff + ip-restriction whitelist 1.1.1.1: address and address:port pass, the rest keeps the peer', async () => {
    await gw.putRoute(
      'rip',
      echoRoute('/rip', { 'real-ip': { source: 'http_xff' }, 'ip-restriction': { whitelist: ['1.1.1.1'] } }),
    );
    for (const [xff, status] of [
      ['1.1.1.1', 200],
      ['1.1.1.1:80', 200],
      [undefined, 403],
      ['1.1.1.1.1', 403],
      ['1.1.1.1:65536', 403],
      ['1.1.1.1:0', 403],
    ] as const) {
      const res = await gw.fetch('/rip', { headers: xff === undefined ? {} : { xff } });
      assert.equal(res.status, status, `XFF: ${xff}`);
      await res.body?.cancel();
    }
  });

  test('source http_x_forwarded_for takes the last element (::1, ::2 → ::2); upstream X-Forwarded-For is the new address', async () => {
    await gw.putRoute(
      'rip6',
      echoRoute('/rip6', { 'real-ip': { source: 'http_x_forwarded_for' }, 'ip-restriction': { whitelist: ['::2'] } }),
    );
    const res = await gw.fetch('/rip6', { headers: { 'x-forwarded-for': '::1, ::2' } });
    assert.equal(res.status, 200);
    const echoed = (await res.json()) as Echoed;
    assert.equal(echoed.headers['x-forwarded-for'], '::2');
    await gw.putRoute('rip4', echoRoute('/rip4', { 'real-ip': { source: 'http_x_forwarded_for' } }));
    const v4 = (await (
      await gw.fetch('/rip4', { headers: { 'x-forwarded-for': '9.9.9.9, 5.6.7.8:1234' } })
    ).json()) as Echoed;
    assert.equal(v4.headers['x-forwarded-for'], '5.6.7.8');
  });

  test('trusted_addresses: a peer outside them changes nothing; recursive skips trusted hops from the right', async () => {
    await gw.putRoute(
      'rip-t',
      echoRoute('/rip-t', { 'real-ip': { source: 'http_x_forwarded_for', trusted_addresses: ['10.0.0.0/8'] } }),
    );
    const untrusted = (await (
      await gw.fetch('/rip-t', { headers: { 'x-forwarded-for': '1.1.1.1' } })
    ).json()) as Echoed;
    assert.match(
      untrusted.headers['x-forwarded-for']!,
      /^(127\.0\.0\.1|::ffff:127\.0\.0\.1)$/,
      'the peer stays the client',
    );

    await gw.putRoute(
      'rip-r',
      echoRoute('/rip-r', {
        'real-ip': {
          source: 'http_x_forwarded_for',
          trusted_addresses: ['127.0.0.0/24', '10.0.0.0/8'],
          recursive: true,
        },
      }),
    );
    const xff = '5.5.5.5, 1.1.1.1, 10.1.1.1, 127.0.0.2';
    const rec = (await (await gw.fetch('/rip-r', { headers: { 'x-forwarded-for': xff } })).json()) as Echoed;
    assert.equal(rec.headers['x-forwarded-for'], '1.1.1.1');
    const allTrusted = (await (
      await gw.fetch('/rip-r', { headers: { 'x-forwarded-for': '10.0.0.9, 127.0.0.3' } })
    ).json()) as Echoed;
    assert.equal(allTrusted.headers['x-forwarded-for'], '10.0.0.9', 'every hop trusted: the leftmost');

    await gw.putRoute(
      'rip-nr',
      echoRoute('/rip-nr', { 'real-ip': { source: 'http_x_forwarded_for', trusted_addresses: ['127.0.0.0/24'] } }),
    );
    const last = (await (await gw.fetch('/rip-nr', { headers: { 'x-forwarded-for': xff } })).json()) as Echoed;
    assert.equal(last.headers['x-forwarded-for'], '127.0.0.2', 'not recursive: the last element');
  });

  test('another source: arg_realip', async () => {
    await gw.putRoute(
      'rip-arg',
      echoRoute('/rip-arg', { 'real-ip': { source: 'arg_realip' }, 'ip-restriction': { blacklist: ['3.3.3.3'] } }),
    );
    const blocked = await gw.fetch('/rip-arg?realip=3.3.3.3');
    assert.equal(blocked.status, 403);
    await blocked.body?.cancel();
    const passed = await gw.fetch('/rip-arg?realip=4.4.4.4');
    assert.equal(passed.status, 200);
    assert.equal(((await passed.json()) as Echoed).headers['x-forwarded-for'], '4.4.4.4');
  });
});

describe('request-id (t/plugin/request-id.t)', () => {
  const UUID4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

  test('TEST 4: a uuid in the answer, the same one upstream; each request its own', async () => {
    await gw.putRoute('rid', echoRoute('/rid', { 'request-id': {} }));
    const res = await gw.fetch('/rid');
    const id = res.headers.get('x-request-id');
    assert.match(id ?? '', UUID4);
    assert.equal(((await res.json()) as Echoed).headers['x-request-id'], id);
    const again = await gw.fetch('/rid');
    assert.notEqual(again.headers.get('x-request-id'), id);
    await again.body?.cancel();
  });

  test("TEST 14: the client's id is kept; an empty one is replaced", async () => {
    await gw.putRoute('rid', echoRoute('/rid', { 'request-id': {} }));
    const res = await gw.fetch('/rid', { headers: { 'X-Request-ID': '123' } });
    assert.equal(res.headers.get('x-request-id'), '123');
    assert.equal(((await res.json()) as Echoed).headers['x-request-id'], '123');
    const empty = await gw.fetch('/rid', { headers: { 'X-Request-ID': '' } });
    assert.match(empty.headers.get('x-request-id') ?? '', UUID4);
    await empty.body?.cancel();
  });

  test('TEST 8-9: include_in_response false: upstream only; an id the upstream answers with is left alone', async () => {
    await gw.putRoute('rid-no', echoRoute('/rid-no', { 'request-id': { include_in_response: false } }));
    const res = await gw.fetch('/rid-no');
    assert.equal(res.headers.get('x-request-id'), null);
    assert.match(((await res.json()) as Echoed).headers['x-request-id'] ?? '', UUID4);
    await gw.putRoute('rid', echoRoute('/rid', { 'request-id': {} }));
    const up = await gw.fetch('/rid?set-header=x-request-id:from-upstream');
    assert.equal(up.headers.get('x-request-id'), 'from-upstream');
    await up.body?.cancel();
  });

  test('header_name and every algorithm', async () => {
    const shapes: Record<string, RegExp> = {
      uuid: UUID4,
      uuidv7: /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
      nanoid: /^[-_0-9a-zA-Z]{21}$/,
      ksuid: /^[0-9A-Za-z]{27}$/,
      range_id: /^[xyz]{8}$/,
    };
    for (const [algorithm, shape] of Object.entries(shapes)) {
      await gw.putRoute(
        'rid-alg',
        echoRoute('/rid-alg', {
          'request-id': { header_name: 'Trace-Id', algorithm, range_id: { length: 8, char_set: 'xyzxyz' } },
        }),
      );
      const res = await gw.fetch('/rid-alg');
      const id = res.headers.get('trace-id') ?? '';
      assert.match(id, shape, algorithm);
      assert.equal(((await res.json()) as Echoed).headers['trace-id'], id);
    }
  });

  test('the id is $apisix_request_id for later plugins (an ip-restriction _meta.filter on it)', async () => {
    await gw.putRoute(
      'rid-var',
      echoRoute('/rid-var', {
        'request-id': {},
        'ip-restriction': {
          blacklist: ['127.0.0.0/8', '::/0'],
          _meta: { filter: [['apisix_request_id', '==', 'block-me']] },
        },
      }),
    );
    const blocked = await gw.fetch('/rid-var', { headers: { 'x-request-id': 'block-me' } });
    assert.equal(blocked.status, 403);
    assert.equal(blocked.headers.get('x-request-id'), 'block-me', 'the header is on plugin exits too');
    await blocked.body?.cancel();
    const passed = await gw.fetch('/rid-var', { headers: { 'x-request-id': 'other' } });
    assert.equal(passed.status, 200);
    await passed.body?.cancel();
  });

  test('TEST 12: an unknown algorithm is refused', async () => {
    const res = await gw.admin(
      'PUT',
      '/routes/rid-bad',
      echoRoute('/rid-bad', { 'request-id': { algorithm: 'bad_algorithm' } }),
    );
    assert.equal(res.status, 400);
    assert.equal(
      res.json.error_msg,
      'failed to check the configuration of plugin request-id err: property "algorithm" validation failed: matches none of the enum values',
    );
  });
});

describe('cors with plugin_metadata and a global rule (standalone config; Workers: STANDALONE_CONFIG)', () => {
  let sgw: GatewayUnderTest;
  let fns: FunctionServers;
  let dir: string;
  before(async () => {
    fns = await startFunctions();
    dir = await tmpDir('fngate-conf-traffic-');
    const file = join(dir, 'apisix.json');
    const upstream = { type: 'roundrobin', nodes: { [`127.0.0.1:${fns.ports.echo}`]: 1 } };
    const config = {
      plugin_metadata: [
        {
          id: 'cors',
          allow_origins: { company: 'https://a.test,https://b.test', partner: 'https://p.test', any: '*' },
        },
      ],
      global_rules: [
        {
          id: 'g',
          plugins: { cors: { allow_origins: 'https://g.test', _meta: { filter: [['uri', '==', '/nowhere']] } } },
        },
      ],
      routes: [
        { id: 'md1', uri: '/md1', upstream, plugins: { cors: { allow_origins_by_metadata: ['company'] } } },
        {
          id: 'md2',
          uri: '/md2',
          upstream,
          plugins: { cors: { allow_origins_by_metadata: ['partner'], allow_origins: 'https://own.test' } },
        },
        { id: 'md3', uri: '/md3', upstream, plugins: { cors: { allow_origins_by_metadata: ['missing', 'partner'] } } },
        { id: 'md4', uri: '/md4', upstream, plugins: { cors: { allow_origins_by_metadata: ['any'] } } },
      ],
    };
    await writeFile(file, JSON.stringify(config));
    sgw = await startGateway({ env: { CONFIG_FILE: file } });
  });
  after(async () => {
    await sgw?.stop();
    await fns?.close();
    if (dir) await rmDir(dir);
  });

  const acao = async (path: string, origin?: string) => {
    const res = await sgw.fetch(path, { headers: origin === undefined ? {} : { origin } });
    await res.body?.cancel();
    return { status: res.status, acao: res.headers.get('access-control-allow-origin') };
  };

  test('allow_origins_by_metadata: the named lists of plugin_metadata/cors decide', async () => {
    assert.deepEqual(await acao('/md1', 'https://b.test'), { status: 200, acao: 'https://b.test' });
    assert.deepEqual(await acao('/md1', 'https://a.test'), { status: 200, acao: 'https://a.test' });
    assert.deepEqual(await acao('/md1', 'https://p.test'), { status: 200, acao: null });
    assert.deepEqual(
      await acao('/md1'),
      { status: 200, acao: null },
      'the default allow_origins "*" does not apply with metadata',
    );
    assert.deepEqual(
      await acao('/md3', 'https://p.test'),
      { status: 200, acao: 'https://p.test' },
      'a missing key is skipped',
    );
    assert.deepEqual(
      await acao('/md4', 'https://z.test'),
      { status: 200, acao: 'https://z.test' },
      'a "*" list echoes the origin',
    );
  });

  test('allow_origins (not "*") still applies when the metadata lists do not allow the origin', async () => {
    assert.deepEqual(await acao('/md2', 'https://p.test'), { status: 200, acao: 'https://p.test' });
    assert.deepEqual(await acao('/md2', 'https://own.test'), { status: 200, acao: 'https://own.test' });
    assert.deepEqual(await acao('/md2', 'https://x.test'), { status: 200, acao: null });
  });

  test('a global rule cors answers an unmatched request (404) with its headers', async () => {
    const res = await sgw.fetch('/nowhere', { headers: { origin: 'https://g.test' } });
    assert.equal(res.status, 404);
    assert.equal(res.headers.get('access-control-allow-origin'), 'https://g.test');
    assert.equal(res.headers.get('vary'), 'Origin');
    assert.equal(await res.text(), '{"error_msg":"404 Route Not Found"}\n');
    const pre = await sgw.fetch('/nowhere', { method: 'OPTIONS', headers: { origin: 'https://g.test' } });
    assert.equal(pre.status, 200, 'the global rule answers the preflight before the 404');
    await pre.body?.cancel();
  });
});

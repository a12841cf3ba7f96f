/**
 * The traffic plugins ip-restriction, real-ip and request-id through real HTTP, on every runtime: the cases
 * of APISIX's t/plugin/ip-restriction.t, real-ip.t and request-id.t (apisix-wave2.md §7), then
 * what they mean for fngate (what reaches the upstream).
 * Schema details without a gateway: test/unit/plugins-traffic.test.ts.
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

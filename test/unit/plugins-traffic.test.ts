/**
 * Schemas and id generators of cors, ip-restriction, real-ip and request-id, without a gateway (the behaviour
 * through real HTTP: test/conformance/plugins-traffic.test.ts).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import * as v from 'valibot';
import { RequestContext } from '../../src/core/context.ts';
import { checkPluginConf } from '../../src/core/plugins/check.ts';
import { pluginRegistry } from '../../src/core/plugins/index.ts';
import { parseClientAddr } from '../../src/core/plugins/real-ip.ts';
import { ksuid, MAX_RANGE_ID_LENGTH, nanoid, rangeId, requestId, uuidv7 } from '../../src/core/plugins/request-id.ts';

const registry = pluginRegistry();
const err = (name: string, conf: unknown): string => {
  const r = checkPluginConf(registry, name, conf);
  assert.equal(r.ok, false, `${name} ${JSON.stringify(conf)} was accepted`);
  return r.message!;
};
const ok = (name: string, conf: unknown) => {
  const r = checkPluginConf(registry, name, conf);
  assert.ok(r.ok, `${name} ${JSON.stringify(conf)}: ${r.message}`);
};
const prefix = (name: string) => `failed to check the configuration of plugin ${name} err: `;

describe('cors schema', () => {
  test('defaults and valid confs', () => {
    ok('cors', {});
    ok('cors', {
      allow_origins: 'http://a.com,https://b.com:8080',
      allow_credential: true,
      allow_methods: 'GET',
      allow_headers: '**',
    });
    ok('cors', { allow_origins: '**', allow_methods: '**', allow_headers: '**', allow_credential: true });
    ok('cors', { allow_origins_by_regex: ['.*\\.domain\\.com$'], timing_allow_origins_by_regex: ['^http://x$'] });
    ok('cors', { allow_origins_by_metadata: ['company'] });
  });
  test("allow_credential refuses '*' in any option (defaults count)", () => {
    const msg = "you can not set '*' for other option when 'allow_credential' is true";
    assert.equal(err('cors', { allow_credential: true }), prefix('cors') + msg);
    assert.equal(
      err('cors', {
        allow_credential: true,
        allow_origins: '**',
        allow_methods: 'GET',
        allow_headers: 'x',
        expose_headers: '*',
      }),
      prefix('cors') + msg,
    );
    assert.equal(
      err('cors', {
        allow_credential: true,
        allow_origins: '**',
        allow_methods: 'GET',
        allow_headers: 'x',
        timing_allow_origins: '*',
      }),
      prefix('cors') + msg,
    );
  });
  test('origin pattern, regex compilation, unique items', () => {
    assert.match(
      err('cors', { allow_origins: 'a.com' }),
      /property "allow_origins" validation failed: failed to match pattern/,
    );
    assert.match(err('cors', { allow_origins: 'http://a.com,' }), /failed to match pattern/);
    assert.match(
      err('cors', { allow_origins_by_regex: ['(unclosed'] }),
      /property "allow_origins_by_regex" validation failed: invalid regex "\(unclosed"/,
    );
    // PCRE-only constructs are refused: the regex must run in linear time (RE2).
    assert.match(err('cors', { allow_origins_by_regex: ['(?=x)y'] }), /invalid regex/);
    assert.match(err('cors', { allow_origins_by_regex: [] }), /expect array to have at least 1 items/);
    assert.match(err('cors', { allow_origins_by_metadata: ['a', 'a'] }), /expected unique items/);
    assert.match(err('cors', { max_age: 1.5 }), /property "max_age" validation failed: wrong type: expected integer/);
    assert.match(err('cors', { foo: 1 }), /additional properties forbidden, found foo/);
  });
  test('metadata schema', () => {
    const schema = registry.get('cors')!.metadataSchema!;
    assert.ok(v.safeParse(schema, { allow_origins: { a: 'http://a.com,http://b.com', b: '**' } }).success);
    assert.equal(v.safeParse(schema, { allow_origins: { a: 'a.com' } }).success, false);
  });
});

describe('ip-restriction schema', () => {
  test('APISIX messages', () => {
    ok('ip-restriction', { whitelist: ['127.0.0.0/24', '113.74.26.106', '::1', 'fe80::/32'] });
    ok('ip-restriction', { blacklist: ['10.0.0.1'], message: 'Do you want to do something bad?', response_code: 404 });
    assert.equal(
      err('ip-restriction', {}),
      `${prefix('ip-restriction')}value should match only one schema, but matches none`,
    );
    assert.equal(
      err('ip-restriction', { whitelist: ['1.1.1.1'], blacklist: ['2.2.2.2'] }),
      `${prefix('ip-restriction')}value should match only one schema, but matches both schemas 1 and 2`,
    );
    assert.equal(
      err('ip-restriction', { blacklist: [] }),
      `${prefix('ip-restriction')}property "blacklist" validation failed: expect array to have at least 1 items`,
    );
    assert.match(err('ip-restriction', { whitelist: ['127.0.0.0/33'] }), /invalid ip address: 127\.0\.0\.0\/33/);
    assert.match(err('ip-restriction', { whitelist: ['::1/129'] }), /invalid ip address: ::1\/129/);
    assert.match(
      err('ip-restriction', { whitelist: ['1.1.1.1'], response_code: 405 }),
      /expected 405 to be at most 404/,
    );
    assert.match(
      err('ip-restriction', { whitelist: ['1.1.1.1'], message: '' }),
      /property "message" validation failed: string too short/,
    );
  });
});

describe('real-ip', () => {
  test('schema', () => {
    ok('real-ip', { source: 'http_x_forwarded_for', trusted_addresses: ['127.0.0.1', '::1/128'], recursive: true });
    assert.equal(err('real-ip', {}), `${prefix('real-ip')}property "source" is required`);
    assert.match(err('real-ip', { source: '' }), /property "source" validation failed: string too short/);
    assert.match(err('real-ip', { source: 'x', trusted_addresses: ['nope'] }), /invalid ip address: nope/);
  });
  test('address forms (APISIX parse_addr)', () => {
    assert.equal(parseClientAddr('1.1.1.1'), '1.1.1.1');
    assert.equal(parseClientAddr('1.1.1.1:80'), '1.1.1.1');
    assert.equal(parseClientAddr('::2'), '::2');
    assert.equal(parseClientAddr('[::2]'), '::2');
    assert.equal(parseClientAddr('[::2]:8080'), '::2');
    for (const bad of [
      '1.1.1.1.1',
      '1.1.1.1:65536',
      '1.1.1.1:0',
      '1.1.1.1:x',
      'example.com',
      '[::2',
      '[::2]x',
      '',
      '[1.1.1.1]',
    ]) {
      assert.equal(parseClientAddr(bad), undefined, bad);
    }
  });
});

describe('request-id', () => {
  test('schema', () => {
    ok('request-id', { algorithm: 'range_id', range_id: { length: 6, char_set: 'abcdef' } });
    assert.equal(
      err('request-id', { algorithm: 'bad_algorithm' }),
      `${prefix('request-id')}property "algorithm" validation failed: matches none of the enum values`,
    );
    assert.match(err('request-id', { range_id: { length: 5 } }), /expected 5 to be at least 6/);
    assert.match(err('request-id', { range_id: { length: MAX_RANGE_ID_LENGTH + 1 } }), /to be at most 1024/);
    assert.match(err('request-id', { range_id: { char_set: 'abc' } }), /string too short/);
    assert.match(err('request-id', { range_id: { char_set: 'abcdef\n' } }), /printable ASCII/);
    assert.match(err('request-id', { header_name: 'bad header' }), /property "header_name" validation failed/);
  });
  test('defaults', () => {
    const conf = v.parse(requestId.schema, {}) as Record<string, unknown>;
    assert.deepEqual(conf, {
      header_name: 'X-Request-Id',
      include_in_response: true,
      algorithm: 'uuid',
      range_id: { length: 16, char_set: 'abcdefghijklmnopqrstuvwxyzABCDEFGHIGKLMNOPQRSTUVWXYZ0123456789' },
    });
  });
  test('generators: shapes, and no repeats over 2000 ids', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 500; i++) {
      const a = uuidv7();
      assert.match(a, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      const b = nanoid();
      assert.match(b, /^[-_0-9a-zA-Z]{21}$/);
      const c = ksuid();
      assert.match(c, /^[0-9A-Za-z]{27}$/);
      const d = rangeId(16, 'abcdef');
      assert.match(d, /^[a-f]{16}$/);
      for (const id of [a, b, c, d]) seen.add(id);
    }
    assert.equal(seen.size, 2000);
    // uuidv7 carries the time: ids of later milliseconds sort after earlier ones.
    assert.ok(uuidv7(1_700_000_000_000) < uuidv7(1_700_000_000_001));
    assert.equal(uuidv7(0x0123456789ab).slice(0, 13), '01234567-89ab');
    // ksuid: the 20 bytes start with the seconds since 1400000000, so a later second sorts after.
    assert.ok(ksuid(1_400_000_000_000) < ksuid(3_000_000_000_000));
  });
  test('$request_id is 32 hex digits, one per request; $apisix_request_id is it until the plugin sets its own', () => {
    const ctx = () =>
      new RequestContext({
        request: new Request('http://gw.test/'),
        method: 'GET',
        path: '/',
        rawPath: '/',
        query: '',
        host: 'gw.test',
        clientIp: '127.0.0.1',
        scheme: 'http',
        rawHeaders: undefined,
        clientSignal: () => undefined,
        forward: () => Promise.reject(new Error('not used')),
      });
    const a = ctx();
    const id = a.getVar('request_id');
    assert.match(String(id), /^[0-9a-f]{32}$/);
    assert.equal(a.getVar('request_id'), id);
    assert.equal(a.getVar('apisix_request_id'), id);
    a.setVar('apisix_request_id', 'from-plugin');
    assert.equal(a.getVar('apisix_request_id'), 'from-plugin');
    assert.equal(a.getVar('request_id'), id);
    assert.notEqual(ctx().getVar('request_id'), id);
  });
  test('range_id draws every character of the set', () => {
    const counts = new Map<string, number>();
    for (const ch of rangeId(6000, 'abcdefg')) counts.set(ch, (counts.get(ch) ?? 0) + 1);
    assert.equal(counts.size, 7);
    for (const [, n] of counts) assert.ok(n > 600 && n < 1100, `count ${n}`);
  });
});

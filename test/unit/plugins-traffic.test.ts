/**
 * Schemas of ip-restriction and real-ip, without a gateway (the behaviour
 * through real HTTP: test/conformance/plugins-traffic.test.ts).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { checkPluginConf } from '../../src/core/plugins/check.ts';
import { pluginRegistry } from '../../src/core/plugins/index.ts';
import { parseClientAddr } from '../../src/core/plugins/real-ip.ts';

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

// biome-ignore-all lint/suspicious/noTemplateCurlyInString: APISIX templates are written ${name}, as plain strings
/**
 * proxy-rewrite and response-rewrite: the Admin API's checks of their configuration (APISIX's messages, from
 * t/plugin/proxy-rewrite*.t and response-rewrite*.t) and the nginx-style regex substitution they share. What the
 * plugins do to traffic is in test/conformance/plugins-rewrite.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkPluginConf } from '../../src/core/plugins/check.ts';
import { pluginRegistry } from '../../src/core/plugins/index.ts';
import { compileSub } from '../../src/core/plugins/regex-sub.ts';

const registry = pluginRegistry();
const check = (name: string, conf: unknown) => checkPluginConf(registry, name, conf);
const refused = (name: string, conf: unknown, message: string | RegExp) => {
  const res = check(name, conf);
  assert.equal(res.ok, false, `${JSON.stringify(conf)} was accepted`);
  const prefix = `failed to check the configuration of plugin ${name} err: `;
  assert.ok(res.message?.startsWith(prefix), res.message);
  const rest = res.message!.slice(prefix.length);
  if (typeof message === 'string') assert.equal(rest, message);
  else assert.match(rest, message);
};

describe('proxy-rewrite schema', () => {
  it('accepts the confs of APISIX tests', () => {
    for (const conf of [
      { uri: '/plugin_proxy_rewrite', host: 'apisix.iresty.com' },
      { regex_uri: ['^/test/(.*)/(.*)/(.*)', '/$1_$2_$3'] },
      { headers: { 'X-Api-Engine': 'APISIX', 'X-Api-Test': '' } },
      { headers: { add: { test: '123' }, set: { test2: 2233 }, remove: ['hello'] } },
      { headers: { set: { 'X-Multi': ['a', 'b'] } } },
      { method: 'POST' },
      { uri: '/x', use_real_request_uri_unsafe: true },
      { host: 'example.com:8080' },
    ]) {
      assert.deepEqual(check('proxy-rewrite', conf), { ok: true }, JSON.stringify(conf));
    }
  });
  it('refuses what APISIX refuses, with its messages', () => {
    refused('proxy-rewrite', {}, 'expect object to have at least 1 properties');
    refused('proxy-rewrite', { regex_uri: ['^/a', '/b', '^/c'] }, 'The length of regex_uri should be an even number');
    refused('proxy-rewrite', { regex_uri: ['^/a'] }, 'property "regex_uri" validation failed: expect array to have at least 2 items');
    // proxy-rewrite.t TEST 27-28
    refused('proxy-rewrite', { regex_uri: ['[^/test/(.*)/(.*)/(.*)', '/$1_$2_$3'] }, /^invalid regex_uri\(\[\^\/test/);
    refused('proxy-rewrite', { regex_uri: ['^/test/(.*)', '/$a'] }, 'invalid regex_uri(^/test/(.*), /$a): invalid capturing variable name found');
    // TEST 29
    refused('proxy-rewrite', { uri: 'home' }, 'property "uri" validation failed: failed to match pattern "^\\\\/.*" with "home"');
    // TEST 31-32
    refused('proxy-rewrite', { headers: { 'X-Api:Engine': 'v' } }, /invalid field character in header/);
    refused('proxy-rewrite', { headers: { 'X-Api-Engine': 'v\r\n' } }, /invalid value character in header/);
    // proxy-rewrite3.t TEST 5
    refused('proxy-rewrite', { method: 'GET1' }, 'property "method" validation failed: matches none of the enum values');
    refused('proxy-rewrite', { host: 'a b' }, /^property "host" validation failed: failed to match pattern/);
    refused('proxy-rewrite', { headers: { add: { 'a:b': 'x' } } }, /header names may not contain ":"/);
    // A PCRE construct RE2 does not run is refused when written, never at request time.
    refused('proxy-rewrite', { regex_uri: ['^/(?=a)', '/b'] }, /^invalid regex_uri\(\^\/\(\?=a\), \/b\): .*Perl syntax/);
    refused('proxy-rewrite', { uri: '/a', foo: 1 }, 'additional properties forbidden, found foo');
  });
});

describe('response-rewrite schema', () => {
  it('accepts the confs of APISIX tests', () => {
    for (const conf of [
      { headers: { Location: 'https://www.iresty.com' }, status_code: 302 },
      { body: 'SGVsbG8K', body_base64: true },
      { body: 'new body3\n', status_code: 403, vars: [['status', '==', 500]] },
      { headers: { add: ['X-Server-id: 3', 'X-Server-status: on'], set: { 'X-Server-balancer-addr': '$remote_addr' }, remove: ['X-TO-BE-REMOVED'] } },
      { filters: [{ regex: 'hello', replace: 'world', scope: 'global', options: 'jo' }], max_resp_body_size: 10 },
      { body: '' },
    ]) {
      assert.deepEqual(check('response-rewrite', conf), { ok: true }, JSON.stringify(conf));
    }
  });
  it('refuses what APISIX refuses, with its messages', () => {
    // response-rewrite.t TEST 2
    refused('response-rewrite', { status_code: 599 }, 'property "status_code" validation failed: expected 599 to be at most 598');
    // TEST 14, 21, 22
    refused('response-rewrite', { body: 'abc%', body_base64: true }, 'invalid base64 content');
    refused('response-rewrite', { body: '', body_base64: true }, 'invalid base64 content');
    refused('response-rewrite', { body_base64: true }, 'invalid base64 content');
    // TEST 17
    refused('response-rewrite', { vars: [['status', '=', 500]] }, /failed to validate the 'vars' expression: invalid operator '='/);
    // response-rewrite2.t TEST 3-6
    refused('response-rewrite', { filters: [] }, 'property "filters" validation failed: expect array to have at least 1 items');
    refused('response-rewrite', { filters: [{ regex: 'l' }] }, 'property "filters" validation failed: failed to validate item 1: property "replace" is required');
    refused('response-rewrite', { filters: [{ regex: 'l', replace: 'x', scope: 'two' }] }, 'property "filters" validation failed: failed to validate item 1: property "scope" validation failed: matches none of the enum values');
    refused('response-rewrite', { filters: [{ regex: '', replace: 'x' }] }, 'property "filters" validation failed: failed to validate item 1: property "regex" validation failed: string too short, expected at least 1, got 0');
    refused('response-rewrite', { filters: [{ regex: 'hello', replace: 'x', options: 'h' }] }, /regex "hello" validation failed: unknown flag "h" \(flags "h"\)/);
    refused('response-rewrite', { body: 'x', filters: [{ regex: 'a', replace: 'b' }] }, '"body" and "filters" cannot be used together');
    // response-rewrite2.t TEST 19: add entries are "Name: value"
    refused('response-rewrite', { headers: { add: ['X-Server-test:'] } }, /^property "headers" validation failed: /);
    refused('response-rewrite', { max_resp_body_size: 0 }, 'property "max_resp_body_size" validation failed: expected 0 to be at least 1');
  });
});

describe('regex substitution (ngx.re.sub / gsub)', () => {
  it('expands $0, $N, ${N} and $$; an unmatched group is empty', () => {
    const s = compileSub('^/test/(.*)/(.*)/(.*)', '/$1_${2}_$3 $$ $0');
    assert.equal(s.replace('/test/plugin/proxy/rewrite', false), '/plugin_proxy_rewrite $ /test/plugin/proxy/rewrite');
    assert.deepEqual(s.match('/test/a/b/c'), ['/test/a/b/c', 'a', 'b', 'c']);
    assert.equal(s.match('/nope'), undefined);
    assert.equal(compileSub('(a)|(b)', '[$1$2]').replace('xbx', false), 'x[b]x');
  });
  it('once replaces the first match, global every one; options i and a', () => {
    assert.equal(compileSub('l', 'L').replace('hello world', false), 'heLlo world');
    assert.equal(compileSub('l', 'L').replace('hello world', true), 'heLLo worLd');
    assert.equal(compileSub('HELLO', 'x', 'jio').replace('hello', true), 'x');
    assert.equal(compileSub('b', 'x', 'a').replace('abb', true), 'abb');
    assert.equal(compileSub('a', 'x', 'a').replace('aab', false), 'xab');
  });
  it('refuses bad templates and flags', () => {
    assert.throws(() => compileSub('a', '$x'), /invalid capturing variable name found/);
    assert.throws(() => compileSub('a', '${1'), /invalid capturing variable name found/);
    assert.throws(() => compileSub('a', 'b', 'jx'), /not supported by fngate/);
  });
});

// biome-ignore-all lint/suspicious/noTemplateCurlyInString: APISIX templates are written ${name}, as plain strings
/**
 * redirect, fault-injection and mocking without a gateway: their schemas (APISIX's messages), the redirect URI
 * tokenizer, nginx's URI escaping, the mocking example generator, and the delay that ends with the client.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import * as v from 'valibot';
import { RequestContext, silentLogger } from '../../src/core/context.ts';
import { checkPluginConf } from '../../src/core/plugins/check.ts';
import { faultInjection } from '../../src/core/plugins/fault-injection.ts';
import { pluginRegistry } from '../../src/core/plugins/index.ts';
import { exampleOf, generatedBody, mediaType, mocking } from '../../src/core/plugins/mocking.ts';
import { compileRegexUri, escapeUri, parseRedirectUri } from '../../src/core/plugins/redirect.ts';
import { FNGATE_VERSION } from '../../src/core/version.ts';
import { createLimitBackends } from '../../src/core/limits/redis.ts';

const registry = pluginRegistry();
const check = (name: string, conf: unknown) => checkPluginConf(registry, name, conf);
const errOf = (name: string, conf: unknown) => {
  const r = check(name, conf);
  assert.equal(r.ok, false, `expected ${JSON.stringify(conf)} to be refused`);
  return r.message!;
};

function ctxFor(path: string, signal?: AbortSignal): RequestContext {
  const [p, q = ''] = path.split('?');
  return new RequestContext({
    request: new Request(`http://gw.test${path}`),
    method: 'GET',
    path: p!,
    rawPath: p!,
    query: q,
    host: 'gw.test',
    clientIp: '127.0.0.1',
    scheme: 'http',
    rawHeaders: undefined,
    clientSignal: () => signal,
    forward: () => Promise.reject(new Error('no forwarding here')),
  });
}

const env = { logger: silentLogger, ownerKey: '/apisix/routes/1', limits: createLimitBackends() };

describe('redirect schema (t/plugin/redirect.t)', () => {
  test('TEST 1-2: uri with or without ret_code', () => {
    assert.ok(check('redirect', { ret_code: 302, uri: '/foo' }).ok);
    assert.ok(check('redirect', { uri: '/foo' }).ok);
  });
  test('TEST 25: http_to_https with uri matches two schemas', () => {
    assert.equal(
      errOf('redirect', { http_to_https: true, uri: '/hello' }),
      'failed to check the configuration of plugin redirect err: value should match only one schema, but matches both schemas 1 and 3',
    );
    assert.match(errOf('redirect', { regex_uri: ['^/a', '/b'], http_to_https: false }), /matches both schemas 2 and 3/);
    assert.match(errOf('redirect', { ret_code: 301 }), /value should match only one schema, but matches none/);
  });
  test('TEST 48: http_to_https with append_query_string', () => {
    assert.equal(
      errOf('redirect', { http_to_https: true, append_query_string: true }),
      'failed to check the configuration of plugin redirect err: only one of `http_to_https` and `append_query_string` can be configured.',
    );
    // redirect2.t TEST 3: append_query_string false is fine.
    assert.ok(check('redirect', { http_to_https: true, append_query_string: false }).ok);
  });
  test('field types and bounds', () => {
    assert.match(errOf('redirect', { uri: '/a', ret_code: 199 }), /property "ret_code" validation failed: expected 199 to be at least 200/);
    assert.match(errOf('redirect', { uri: '/a', ret_code: 600 }), /property "ret_code" validation failed/);
    assert.match(errOf('redirect', { uri: '/' }), /property "uri" validation failed: string too short/);
    assert.match(errOf('redirect', { uri: '\\\\' }), /property "uri" validation failed: failed to match pattern/);
    assert.match(errOf('redirect', { regex_uri: ['^/a'] }), /property "regex_uri" validation failed: expect array to have at least 2 items/);
  });
  test('an invalid regex_uri is refused with APISIX message', () => {
    assert.match(errOf('redirect', { regex_uri: ['^/(a', '/b'] }), /err: invalid regex_uri \(\^\/\(a, \/b\), err:/);
    assert.match(errOf('redirect', { regex_uri: ['^/(a)', '/$x'] }), /invalid regex_uri \(\^\/\(a\), \/\$x\), err:failed to compile the replacement template/);
    // A PCRE-only construct (backreference) cannot run in linear time: refused.
    assert.match(errOf('redirect', { regex_uri: ['^/(a)\\1', '/b'] }), /invalid regex_uri/);
  });
});

describe('redirect URI templates (APISIX parse_uri)', () => {
  const render = (tpl: string, vars: Record<string, string>) =>
    parseRedirectUri(tpl)
      .map((s) => (typeof s === 'string' ? s : (vars[s.v] ?? '')))
      .join('');
  const vars = { uri: '/hello', arg_name: 'json', host: 'foo.com', request_uri: '/hello?a=1' };
  test('the cases of t/plugin/redirect.t', () => {
    assert.equal(render('/test/add', vars), '/test/add');
    assert.equal(render('$uri/test/add', vars), '/hello/test/add');
    assert.equal(render('$uri/test/a${arg_name}c', vars), '/hello/test/ajsonc');
    assert.equal(render('/foo$$uri', vars), '/foo$/hello');
    assert.equal(render('\\$uri/foo$uri\\$uri/bar', vars), '\\$uri/foo/hello\\$uri/bar');
    assert.equal(render('$uri/$bad_var/bar', vars), '/hello//bar');
    assert.equal(render('https://$host$request_uri', vars), 'https://foo.com/hello?a=1');
  });
  test('names are [0-9a-zA-Z_]; braces only around a plain name; a stray backslash is dropped', () => {
    assert.equal(render('$uri.html', vars), '/hello.html');
    assert.equal(render('${ uri }', vars), '${ uri }');
    assert.equal(render('/a\\b', vars), '/ab');
    assert.equal(render('/a$', vars), '/a$');
  });
});

describe('regex_uri substitution (ngx.re.sub)', () => {
  test('first match replaced, captures, $$ and missing groups', () => {
    const sub = compileRegexUri('^/test/(.*)', 'http://test.com/${1}').sub!;
    assert.equal(sub('/test/1'), 'http://test.com/1');
    assert.equal(sub('/hello'), undefined);
    assert.equal(compileRegexUri('o', '0').sub!('/foo'), '/f0o');
    assert.equal(compileRegexUri('(a)', '$$$1$2$0').sub!('xay'), 'x$aay');
  });
});

describe('encode_uri (ngx_escape_uri NGX_ESCAPE_URI)', () => {
  test('space, #, %, ?, controls and non-ASCII are escaped; reserved characters are not', () => {
    assert.equal(escapeUri('/hello/with space'), '/hello/with%20space');
    assert.equal(escapeUri('http://a.b/x#y%z'), 'http://a.b/x%23y%25z');
    assert.equal(escapeUri('/é€😀'), '/%C3%A9%E2%82%AC%F0%9F%98%80');
    assert.equal(escapeUri("/a:b@c!$&'()*+,;=~_-."), "/a:b@c!$&'()*+,;=~_-.");
  });
});

describe('fault-injection schema (t/plugin/fault-injection.t)', () => {
  test('TEST 1-4: abort needs http_status >= 200, delay needs duration, one of them needed', () => {
    assert.match(errOf('fault-injection', { abort: { http_status: 100, body: 'x' } }), /property "abort" validation failed: property "http_status" validation failed/);
    assert.match(errOf('fault-injection', { abort: {} }), /property "http_status" is required/);
    assert.match(errOf('fault-injection', {}), /expect object to have at least 1 properties/);
    assert.match(errOf('fault-injection', { delay: {} }), /property "duration" is required/);
  });
  test('TEST 5: duration must be a number', () => {
    assert.match(errOf('fault-injection', { delay: { duration: 'test' } }), /wrong type: expected number, got string/);
  });
  test('TEST 26-27: vars are a list of expressions', () => {
    const vars = [[['arg_name', '==', 'jack'], ['arg_age', '!', '<', 18]], [['http_apikey', '==', 'api-key']]];
    assert.ok(check('fault-injection', { abort: { http_status: 403, body: 'x', vars }, delay: { duration: 2, vars } }).ok);
    assert.match(errOf('fault-injection', { abort: { http_status: 403, vars: [['arg_name', '!=', 'jack']] } }), /rule should be wrapped inside brackets/);
    assert.match(errOf('fault-injection', { abort: { http_status: 403, vars: ['a'] } }), /wrong type: expected array, got string/);
  });
  test('percentage 0-100, headers need a property, duration fits a timer', () => {
    assert.match(errOf('fault-injection', { abort: { http_status: 200, percentage: 101 } }), /property "percentage" validation failed/);
    assert.match(errOf('fault-injection', { abort: { http_status: 200, headers: {} } }), /expect object to have at least 1 properties/);
    assert.match(errOf('fault-injection', { abort: { http_status: 200, headers: { 'a b': 'x' } } }), /invalid header name/);
    assert.match(errOf('fault-injection', { abort: { http_status: 200, headers: { a: 'x\r\ny: z' } } }), /CR, LF and NUL are not allowed/);
    assert.match(errOf('fault-injection', { delay: { duration: 2147484 } }), /property "duration" validation failed: expected 2147484 to be at most 2147483/);
    assert.ok(check('fault-injection', { delay: { duration: 0.1 } }).ok);
  });
});

describe('fault-injection at run time', () => {
  const instance = (conf: unknown) => faultInjection.create(v.parse(faultInjection.schema, conf), env);

  test('percentage 0 never aborts, 100 always does, 50 about half the time', async () => {
    const never = instance({ abort: { http_status: 403, percentage: 0 } });
    const always = instance({ abort: { http_status: 403, percentage: 100 } });
    const half = instance({ abort: { http_status: 403, percentage: 50 } });
    let hits = 0;
    for (let i = 0; i < 1000; i++) {
      assert.equal(await never.rewrite!(ctxFor('/')), undefined);
      assert.equal(((await always.rewrite!(ctxFor('/'))) as Response).status, 403);
      if (await half.rewrite!(ctxFor('/'))) hits++;
    }
    // Binomial(1000, 0.5): sd ≈ 16; 350..650 is more than 9 sd either way.
    assert.ok(hits > 350 && hits < 650, `${hits} of 1000`);
  });

  test('an empty vars list never matches (APISIX vars_match of no expression is nil)', async () => {
    const p = instance({ abort: { http_status: 403, vars: [] } });
    assert.equal(await p.rewrite!(ctxFor('/')), undefined);
  });

  test('the delay ends when the client goes away, and leaves no timer behind', async () => {
    const p = instance({ delay: { duration: 3600 }, abort: { http_status: 200, body: 'late' } });
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const before = timers();
    const client = new AbortController();
    const pending = p.rewrite!(ctxFor('/', client.signal)) as Promise<Response>;
    assert.equal(timers(), before + 1);
    client.abort();
    const res = await pending;
    assert.equal(res.status, 499);
    assert.equal(timers(), before);
    // A client already gone: no timer at all.
    const gone = await (p.rewrite!(ctxFor('/', client.signal)) as Promise<Response>);
    assert.equal(gone.status, 499);
    assert.equal(timers(), before);
  });

  test('header values from request variables cannot split headers: CR, LF and wide characters are percent-encoded', async () => {
    const p = instance({ abort: { http_status: 200, headers: { 'x-name': '$arg_name' } } });
    const res = (await p.rewrite!(ctxFor('/?name=a%0D%0Aset-cookie:%20b%E2%82%AC%C3%A9'))) as Response;
    assert.equal(res.headers.get('x-name'), 'a%0D%0Aset-cookie: b%E2%82%ACé');
    assert.equal(res.headers.get('set-cookie'), null);
  });

  test('a delay that runs out goes on to the abort', async () => {
    const p = instance({ delay: { duration: 0.01 }, abort: { http_status: 202, body: 'after $uri' } });
    const res = (await p.rewrite!(ctxFor('/x', new AbortController().signal))) as Response;
    assert.equal(res.status, 202);
    assert.equal(await res.text(), 'after /x');
  });
});

describe('mocking', () => {
  test('schema: response_example or response_schema, supported content types', () => {
    assert.ok(check('mocking', { response_example: 'hello' }).ok);
    assert.match(errOf('mocking', { delay: 1 }), /value should match at least one schema, but matches none/);
    assert.match(errOf('mocking', { response_example: 'x', content_type: 'image/png' }), /err: unsupported content type!/);
    assert.ok(check('mocking', { response_example: 'x', content_type: 'text/xml; charset=utf-8' }).ok);
    assert.match(errOf('mocking', { response_example: 'x', response_status: 99 }), /property "response_status" validation failed/);
    assert.match(errOf('mocking', { response_example: 'x', delay: 1.5 }), /property "delay" validation failed: wrong type: expected integer/);
    assert.match(errOf('mocking', { response_example: 'x', response_headers: {} }), /expect object to have at least 1 properties/);
  });

  test('the media type is the part before the last ";" (APISIX parse_content_type)', () => {
    assert.equal(mediaType('application/json;charset=utf8'), 'application/json');
    assert.equal(mediaType('text/plain'), 'text/plain');
    assert.equal(mediaType('text/plain; a=b; c=d'), 'text/plain; a=b');
  });

  test('examples from a schema: example values, else fixed ones; unknown types left out', () => {
    const schema = {
      type: 'object',
      properties: {
        s: { type: 'string', example: 'hello' },
        i: { type: 'integer', example: 4.7 },
        n: { type: 'number', example: 5.5 },
        b: { type: 'boolean', example: false },
        o: { type: 'object' },
        a: { type: 'array', items: { type: 'string' } },
        d: { type: 'string', example: 3 },
        noItems: { type: 'array' },
        noType: { example: 1 },
      },
    };
    assert.deepEqual(exampleOf(schema), { s: 'hello', i: 4, n: 5.5, b: false, o: {}, a: ['string'], d: 'string' });
    assert.equal(generatedBody({ properties: { field1: { type: 'string', example: 'a<b' } } }, 'application/xml'), '<data>\n  <field1>a&lt;b</field1>\n</data>\n');
    assert.equal(generatedBody({ properties: { x: { type: 'integer' } } }, 'text/html'), '');
  });

  test('x-mock-by carries fngate version, which is package.json', async () => {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    assert.equal(FNGATE_VERSION, pkg.version);
    const p = mocking.create(v.parse(mocking.schema, { response_example: 'hi $arg_x', response_status: 201 }), env);
    const res = (await p.access!(ctxFor('/?x=1'))) as Response;
    assert.equal(res.status, 201);
    assert.equal(res.headers.get('x-mock-by'), `fngate/${FNGATE_VERSION}`);
    assert.equal(res.headers.get('content-type'), 'application/json;charset=utf8');
    assert.equal(await res.text(), 'hi 1');
  });
});

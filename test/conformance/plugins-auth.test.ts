/**
 * The auth plugins on every runtime: key-auth (the gaps of issue 14 item 1), basic-auth, jwt-auth (every algorithm,
 * through WebCrypto and `jose`), hmac-auth and consumer-restriction. Cases replicate APISIX's t/plugin/basic-auth.t,
 * jwt-auth.t, hmac-auth.t, consumer-restriction.t and key-auth.t (apisix-wave2.md §3; the tokens of jwt-auth.t
 * TEST 6–11 are APISIX's own). Tokens and signatures are made here, in the test process, with `jose` and node:crypto.
 */
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { describe, test } from 'node:test';
import { exportSPKI, generateKeyPair, SignJWT } from 'jose';
import type { FunctionServers } from '../functions/functions.ts';
import { type GatewayUnderTest, gatewayPerFile } from './harness.ts';

let gw: GatewayUnderTest;
let fn: FunctionServers;
gatewayPerFile((g, f) => {
  gw = g;
  fn = f;
});

const echoFn = (name: string) => ({ openfunction: { function_uri: `${fn.urls.echo}/e/${name}` } });

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

async function call(path: string, headers: Record<string, string> = {}, init: RequestInit = {}): Promise<Got> {
  const res = await gw.fetch(path, { ...init, headers });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {}
  return { status: res.status, headers: res.headers, text, json };
}

function assert401(got: Got, message: string, challenge?: string) {
  assert.equal(got.status, 401, got.text);
  assert.equal(got.text, `${JSON.stringify({ message })}\n`);
  if (challenge) assert.equal(got.headers.get('www-authenticate'), challenge);
}

const basic = (s: string) => `Basic ${Buffer.from(s).toString('base64')}`;

describe('key-auth: anonymous_consumer details (t/plugin/key-auth-anonymous-consumer.t)', () => {
  test('a missing anonymous consumer answers 401 with the challenge; hide_credentials strips a bad key from header and query', async () => {
    await ok('PUT', '/consumers', { username: 'ka_guest' });
    await ok('PUT', '/routes/ka-anon', { uri: '/ka-anon', plugins: { 'key-auth': { anonymous_consumer: 'ka_nobody' }, ...echoFn('ka') } });
    assert401(await call('/ka-anon'), 'Invalid user authorization', 'apikey realm="key"');
    await ok('PUT', '/routes/ka-anon', { uri: '/ka-anon', plugins: { 'key-auth': { anonymous_consumer: 'ka_guest', hide_credentials: true }, ...echoFn('ka') } });
    const got = await call('/ka-anon?apikey=wrong&a=1', { apikey: 'wrong' });
    assert.equal(got.status, 200);
    assert.equal(got.json.headers['x-consumer-username'], 'ka_guest');
    assert.equal(got.json.headers.apikey, undefined);
    assert.equal(got.json.url, '/e/ka?a=1');
  });
});

describe('basic-auth (t/plugin/basic-auth.t)', () => {
  test('consumer foo/bar: missing, malformed, unknown user, wrong password; every casing of the scheme passes', async () => {
    await ok('PUT', '/consumers', { username: 'foo', plugins: { 'basic-auth': { username: 'foo', password: 'bar' } } });
    await ok('PUT', '/routes/ba', { uri: '/ba', plugins: { 'basic-auth': {}, ...echoFn('ba') } });
    const realm = 'Basic realm="basic"';
    assert401(await call('/ba'), 'Missing authorization in request', realm);
    assert401(await call('/ba', { authorization: 'Bad_header YmFyOmJhcgo=' }), 'Invalid authorization in request', realm);
    assert401(await call('/ba', { authorization: 'Basic !!!notbase64' }), 'Invalid authorization in request', realm);
    assert401(await call('/ba', { authorization: basic('nocolon') }), 'Invalid authorization in request', realm);
    assert401(await call('/ba', { authorization: 'Basic YmFyOmJhcgo=' }), 'Invalid user authorization', realm);
    assert401(await call('/ba', { authorization: basic('foo:baz') }), 'Invalid user authorization', realm);
    for (const scheme of ['Basic', 'basic', 'BASIC', 'bASiC']) {
      const got = await call('/ba', { authorization: `${scheme} Zm9vOmJhcg==`, 'x-consumer-username': 'spoofed' });
      assert.equal(got.status, 200, scheme);
      assert.equal(got.json.headers['x-consumer-username'], 'foo');
      assert.equal(got.json.headers.authorization, `${scheme} Zm9vOmJhcg==`, 'without hide_credentials it goes on');
    }
    // Whitespace is stripped from user and password, as APISIX does.
    assert.equal((await call('/ba', { authorization: basic(' foo : bar ') })).status, 200);
  });

  test('a password with colons is split on the first colon (RFC 7617, APISIX #13836); hide_credentials; a credential', async () => {
    await ok('PUT', '/consumers', { username: 'colon', labels: { custom_id: 'c-1' } });
    await ok('PUT', '/consumers/colon/credentials/cred-ba', { plugins: { 'basic-auth': { username: 'colon', password: 'a:b:c' } } });
    await ok('PUT', '/routes/ba2', { uri: '/ba2', plugins: { 'basic-auth': { hide_credentials: true, realm: 'fn' }, ...echoFn('ba2') } });
    assert401(await call('/ba2', { authorization: basic('colon:a') }), 'Invalid user authorization', 'Basic realm="fn"');
    const got = await call('/ba2', { authorization: basic('colon:a:b:c') });
    assert.equal(got.status, 200, got.text);
    assert.equal(got.json.headers.authorization, undefined);
    assert.equal(got.json.headers['x-credential-identifier'], 'cred-ba');
    assert.equal(got.json.headers['x-consumer-custom-id'], 'c-1');
  });

  test('schema: username and password required; duplicate username refused across consumers', async () => {
    const bad = await gw.admin('PUT', '/consumers', { username: 'bad', plugins: { 'basic-auth': { username: 'x' } } });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error_msg, 'invalid plugins configuration: failed to check the configuration of plugin basic-auth err: property "password" is required');
    const dup = await gw.admin('PUT', '/consumers', { username: 'foo2', plugins: { 'basic-auth': { username: 'foo', password: 'x' } } });
    assert.equal(dup.status, 400);
    assert.equal(dup.json.error_msg, 'duplicate username of plugin basic-auth found with consumer: foo');
  });
});

// APISIX jwt-auth.t: consumer key "user-key", secret "my-secret-key" (HS256).
const APISIX_OK =
  'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJrZXkiOiJ1c2VyLWtleSIsImV4cCI6MTg3OTMxODU0MX0.fNtFJnNmJgzbiYmGB0Yjvm-l6A6M4jRV1l4mnVFSYjs';
const APISIX_EXPIRED =
  'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJrZXkiOiJ1c2VyLWtleSIsImV4cCI6MTU2Mzg3MDUwMX0.pPNVvh-TQsdDzorRwa-uuiLYiEBODscp9wv0cwD6c68';

const hs = (secret: string | Uint8Array, alg = 'HS256') => (claims: Record<string, unknown>) =>
  new SignJWT(claims).setProtectedHeader({ alg, typ: 'JWT' }).sign(typeof secret === 'string' ? new TextEncoder().encode(secret) : secret);
const now = () => Math.floor(Date.now() / 1000);

describe('jwt-auth (t/plugin/jwt-auth.t)', () => {
  const realm = 'Bearer realm="jwt"';
  test("APISIX's tokens: missing, invalid, expired; header (Bearer / bearer / bare), query and cookie pass", async () => {
    await ok('PUT', '/consumers', { username: 'jack_jwt', plugins: { 'jwt-auth': { key: 'user-key', secret: 'my-secret-key' } } });
    await ok('PUT', '/routes/jwt', { uri: '/jwt', plugins: { 'jwt-auth': {}, ...echoFn('jwt') } });
    assert401(await call('/jwt'), 'Missing JWT token in request', realm);
    assert401(await call('/jwt?jwt=invalid-eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJrZXkiOiJ1c2VyLWtleSIsImV4cCI6MTU2Mzg3MDUwMX0.pPNVvh-TQsdDzorRwa-uuiLYiEBODscp9wv0cwD6c68'), 'JWT token invalid', realm);
    assert401(await call(`/jwt?jwt=${APISIX_EXPIRED}`), 'failed to verify jwt', realm);
    const sources: Record<string, string>[] = [{ authorization: `Bearer ${APISIX_OK}` }, { authorization: `bearer ${APISIX_OK}` }, { authorization: APISIX_OK }, { cookie: `a=1; jwt=${APISIX_OK}` }];
    for (const h of sources) {
      const got = await call('/jwt', h);
      assert.equal(got.status, 200, JSON.stringify(h));
      assert.equal(got.json.headers['x-consumer-username'], 'jack_jwt');
    }
    assert.equal((await call(`/jwt?jwt=${APISIX_OK}`)).status, 200);
    // Other casings of the scheme are not stripped (APISIX compares 7 characters exactly).
    assert401(await call('/jwt', { authorization: `BEARER ${APISIX_OK}` }), 'JWT token invalid');
  });

  test('key claim missing or unknown; alg must be the consumer’s (RFC 8725); alg none; bad signature', async () => {
    const sign = hs('my-secret-key');
    assert401(await call('/jwt', { authorization: await sign({ sub: 'x' }) }), 'missing user key in JWT token', realm);
    assert401(await call('/jwt', { authorization: await sign({ key: 'nobody' }) }), 'Invalid user key in JWT token', realm);
    assert401(await call('/jwt', { authorization: await hs('my-secret-key', 'HS512')({ key: 'user-key' }) }), 'failed to verify jwt', realm);
    const none = `${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${Buffer.from('{"key":"user-key"}').toString('base64url')}.`;
    assert401(await call('/jwt', { authorization: none }), 'failed to verify jwt', realm);
    assert401(await call('/jwt', { authorization: await hs('other-secret')({ key: 'user-key' }) }), 'failed to verify jwt', realm);
    assert.equal((await call('/jwt', { authorization: await sign({ key: 'user-key' }) })).status, 200, 'exp is checked only when present');
  });

  test('claims_to_verify makes exp/nbf required; nbf in the future; lifetime_grace_period; key_claim_name; hide_credentials', async () => {
    await ok('PUT', '/consumers', { username: 'grace', plugins: { 'jwt-auth': { key: 'grace-key', secret: 'grace-secret', lifetime_grace_period: 100 } } });
    await ok('PUT', '/routes/jwt2', {
      uri: '/jwt2',
      plugins: { 'jwt-auth': { claims_to_verify: ['exp'], key_claim_name: 'iss', hide_credentials: true }, ...echoFn('jwt2') },
    });
    const sign = hs('grace-secret');
    assert401(await call('/jwt2', { authorization: await sign({ iss: 'grace-key' }) }), 'failed to verify jwt', realm);
    const within = await call('/jwt2?jwt=x', { authorization: await sign({ iss: 'grace-key', exp: now() - 50 }) });
    assert.equal(within.status, 200, 'expired 50 s ago, grace 100 s');
    assert.equal(within.json.headers.authorization, undefined, 'hide_credentials removes the header');
    assert401(await call('/jwt2', { authorization: await sign({ iss: 'grace-key', exp: now() - 200 }) }), 'failed to verify jwt');
    assert401(await call('/jwt2', { authorization: await sign({ iss: 'grace-key', exp: `${now() + 100}` }) }), 'failed to verify jwt'); // a string exp
    assert401(await call('/jwt', { authorization: await hs('my-secret-key')({ key: 'user-key', nbf: now() + 3600 }) }), 'failed to verify jwt');
    // A cookie is removed from the Cookie header, the other cookies go on.
    await ok('PUT', '/routes/jwt3', { uri: '/jwt3', plugins: { 'jwt-auth': { hide_credentials: true }, ...echoFn('jwt3') } });
    const cookie = await call('/jwt3', { cookie: `a=1; jwt=${APISIX_OK}; b=2` });
    assert.equal(cookie.status, 200);
    assert.equal(cookie.json.headers.cookie, 'a=1; b=2');
  });

  test('base64_secret, HS384/HS512 and every public-key algorithm (RS, PS, ES, EdDSA) through WebCrypto', async () => {
    const raw = new Uint8Array(32).map((_, i) => (i * 37 + 11) & 0xff);
    await ok('PUT', '/consumers', { username: 'b64', plugins: { 'jwt-auth': { key: 'b64-key', secret: Buffer.from(raw).toString('base64'), base64_secret: true, algorithm: 'HS512' } } });
    assert.equal((await call('/jwt', { authorization: await hs(raw, 'HS512')({ key: 'b64-key' }) })).status, 200);
    await ok('PUT', '/consumers', { username: 'h384', plugins: { 'jwt-auth': { key: 'h384-key', secret: 's384', algorithm: 'HS384' } } });
    assert.equal((await call('/jwt', { authorization: await hs('s384', 'HS384')({ key: 'h384-key' }) })).status, 200);
    for (const alg of ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA']) {
      const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
      const user = `pk_${alg.toLowerCase()}`;
      await ok('PUT', '/consumers', { username: user });
      await ok('PUT', `/consumers/${user}/credentials/c1`, { plugins: { 'jwt-auth': { key: `${user}-key`, public_key: await exportSPKI(publicKey), algorithm: alg } } });
      const token = await new SignJWT({ key: `${user}-key`, exp: now() + 60 }).setProtectedHeader({ alg }).sign(privateKey);
      const got = await call('/jwt', { authorization: `Bearer ${token}` });
      assert.equal(got.status, 200, `${alg}: ${got.text}`);
      assert.equal(got.json.headers['x-credential-identifier'], 'c1', alg);
      // The same token with its payload changed fails.
      const [h, , s] = token.split('.');
      const forged = `${h}.${Buffer.from(JSON.stringify({ key: `${user}-key`, exp: now() + 9999 })).toString('base64url')}.${s}`;
      assert401(await call('/jwt', { authorization: forged }), 'failed to verify jwt', realm);
    }
  });

  test("consumer schema checks with APISIX's messages", async () => {
    const put = (conf: unknown) => gw.admin('PUT', '/consumers', { username: 'jbad', plugins: { 'jwt-auth': conf } });
    const prefix = 'invalid plugins configuration: failed to check the configuration of plugin jwt-auth err: ';
    assert.equal((await put({ key: 'k' })).json.error_msg, `${prefix}property "secret" is required when using HS based algorithms`);
    assert.equal((await put({ key: 'k', algorithm: 'RS256' })).json.error_msg, `${prefix}missing valid public key`);
    assert.equal((await put({ key: 'k', secret: '%%%', base64_secret: true })).json.error_msg, `${prefix}base64_secret required but the secret is not in base64 format`);
    assert.equal((await put({ key: 'k', secret: 's', algorithm: 'none' })).status, 400);
    const pkcs1 = '-----BEGIN RSA PUBLIC KEY-----\nMAoCAwEAAQIDAQAB\n-----END RSA PUBLIC KEY-----';
    assert.equal((await put({ key: 'k', algorithm: 'RS256', public_key: pkcs1 })).json.error_msg, `${prefix}public_key must be a PEM "PUBLIC KEY" (SPKI) or "CERTIFICATE"`);
    const route = await gw.admin('PUT', '/routes/jbad', { uri: '/jbad', plugins: { 'jwt-auth': { claims_to_verify: ['iat'] } } });
    assert.equal(route.status, 400);
  });
});

/**
 * An hmac-auth Authorization header as APISIX's docs build it: keyId, then `name: value` per signed header
 * (`@request-target`: `METHOD /path?query`), `\n` after each.
 */
function hmacHeader(opts: { keyId: string; secret: string; alg?: string; headers: [string, string][]; signature?: string }) {
  const alg = opts.alg ?? 'hmac-sha256';
  const lines = [opts.keyId, ...opts.headers.map(([n, v]) => (n === '@request-target' ? v : `${n}: ${v}`))];
  const sig = opts.signature ?? createHmac(alg.slice(5), opts.secret).update(`${lines.join('\n')}\n`).digest('base64');
  return `Signature keyId="${opts.keyId}",algorithm="${alg}",headers="${opts.headers.map(([n]) => n).join(' ')}",signature="${sig}"`;
}

describe('hmac-auth (t/plugin/hmac-auth.t)', () => {
  const fail = "client request can't be validated";
  test('a valid signature passes; every failure is 401 with APISIX messages', async () => {
    await ok('PUT', '/consumers', { username: 'hmac_jack', plugins: { 'hmac-auth': { key_id: 'my-access-key', secret_key: 'my-secret-key' } } });
    await ok('PUT', '/routes/hm', { uri: '/hm', plugins: { 'hmac-auth': {}, ...echoFn('hm') } });
    const date = new Date().toUTCString();
    const good = hmacHeader({ keyId: 'my-access-key', secret: 'my-secret-key', headers: [['date', date], ['x-custom', 'v']] });
    const got = await call('/hm', { date, 'x-custom': 'v', authorization: good });
    assert.equal(got.status, 200, got.text);
    assert.equal(got.json.headers['x-consumer-username'], 'hmac_jack');
    const realm = 'hmac realm="hmac"';
    assert401(await call('/hm'), `${fail}: missing Authorization header`, realm);
    assert401(await call('/hm', { authorization: 'Basic Zm9vOmJhcg==' }), `${fail}: Authorization header does not start with 'Signature'`, realm);
    assert401(await call('/hm', { date, 'x-custom': 'other', authorization: good }), fail, realm);
    assert401(await call('/hm', { date, authorization: hmacHeader({ keyId: 'nobody', secret: 'my-secret-key', headers: [['date', date]] }) }), fail);
    assert401(await call('/hm', { date, authorization: hmacHeader({ keyId: 'my-access-key', secret: 'my-secret-key', alg: 'hmac-md5', headers: [['date', date]], signature: 'x' }) }), fail);
    const old = new Date(Date.now() - 3600_000).toUTCString();
    assert401(await call('/hm', { date: old, authorization: hmacHeader({ keyId: 'my-access-key', secret: 'my-secret-key', headers: [['date', old]] }) }), fail); // clock skew
    assert401(await call('/hm', { date: 'yesterday', authorization: hmacHeader({ keyId: 'my-access-key', secret: 'my-secret-key', headers: [['date', 'yesterday']] }) }), fail);
    assert401(await call('/hm', { date, 'x-custom': 'v', authorization: hmacHeader({ keyId: 'my-access-key', secret: 'my-secret-key', headers: [['x-custom', 'v']] }) }), fail); // date not signed
    assert401(await call('/hm', { authorization: 'Signature keyId="my-access-key",algorithm="hmac-sha256",signature="x"' }), fail);
  });

  test('@request-target, hmac-sha1/512, allowed_algorithms, hide_credentials, signed_headers', async () => {
    await ok('PUT', '/routes/hm2', {
      uri: '/hm2',
      plugins: { 'hmac-auth': { allowed_algorithms: ['hmac-sha512'], signed_headers: ['date', 'x-tenant'], hide_credentials: true }, ...echoFn('hm2') },
    });
    const date = new Date().toUTCString();
    const headers: [string, string][] = [['@request-target', 'GET /hm2?a=1'], ['date', date], ['x-tenant', 't1']];
    const auth = hmacHeader({ keyId: 'my-access-key', secret: 'my-secret-key', alg: 'hmac-sha512', headers });
    const got = await call('/hm2?a=1', { date, 'x-tenant': 't1', authorization: auth });
    assert.equal(got.status, 200, got.text);
    assert.equal(got.json.headers.authorization, undefined);
    const sha1 = hmacHeader({ keyId: 'my-access-key', secret: 'my-secret-key', alg: 'hmac-sha1', headers });
    assert401(await call('/hm2?a=1', { date, 'x-tenant': 't1', authorization: sha1 }), fail); // hmac-sha1 not allowed here
    assert.equal((await call('/hm', { date, 'x-tenant': 't1', authorization: hmacHeader({ keyId: 'my-access-key', secret: 'my-secret-key', alg: 'hmac-sha1', headers: [['@request-target', 'GET /hm'], ['date', date]] }) })).status, 200);
  });

  test('validate_request_body: Digest of the body, which still reaches the function; over max_req_body_size 413', async () => {
    await ok('PUT', '/routes/hm3', { uri: '/hm3', plugins: { 'hmac-auth': { validate_request_body: true, max_req_body_size: 1024 }, ...echoFn('hm3') } });
    const date = new Date().toUTCString();
    const auth = hmacHeader({ keyId: 'my-access-key', secret: 'my-secret-key', headers: [['date', date]] });
    const body = '{"hello":"world"}';
    const digest = `SHA-256=${createHash('sha256').update(body).digest('base64')}`;
    const got = await call('/hm3', { date, authorization: auth, digest, 'content-type': 'application/json' }, { method: 'POST', body });
    assert.equal(got.status, 200, got.text);
    assert.equal(got.json.body, body);
    assert401(await call('/hm3', { date, authorization: auth, digest }, { method: 'POST', body: '{"hello":"there"}' }), fail);
    assert401(await call('/hm3', { date, authorization: auth }, { method: 'POST', body }), fail); // no Digest
    const big = 'x'.repeat(2048);
    const tooBig = await call('/hm3', { date, authorization: auth, digest: `SHA-256=${createHash('sha256').update(big).digest('base64')}` }, { method: 'POST', body: big });
    assert.equal(tooBig.status, 413);
    assert.match(tooBig.text, /request size 2048 is greater than the maximum size 1024 allowed/);
  });
});

describe('anonymous_consumer and _meta.error_response on the other auth plugins', () => {
  test('basic-auth, jwt-auth, hmac-auth fall back to the anonymous consumer; a missing one is 401 with the challenge', async () => {
    await ok('PUT', '/consumers', { username: 'anon_user' });
    for (const [name, challenge] of [['basic-auth', 'Basic realm="basic"'], ['jwt-auth', 'Bearer realm="jwt"'], ['hmac-auth', 'hmac realm="hmac"']]) {
      await ok('PUT', '/routes/anon-x', { uri: '/anon-x', plugins: { [name!]: { anonymous_consumer: 'anon_user' }, ...echoFn('anon') } });
      const got = await call('/anon-x', { authorization: 'garbage' });
      assert.equal(got.status, 200, `${name}: ${got.text}`);
      assert.equal(got.json.headers['x-consumer-username'], 'anon_user', name);
      // hide_credentials applies to the anonymous fallback too (jwt-auth hides before it validates).
      await ok('PUT', '/routes/anon-x', { uri: '/anon-x', plugins: { [name!]: { anonymous_consumer: 'anon_user', hide_credentials: true }, ...echoFn('anon') } });
      assert.equal((await call('/anon-x', { authorization: 'garbage' })).json.headers.authorization, undefined, name);
      await ok('PUT', '/routes/anon-x', { uri: '/anon-x', plugins: { [name!]: { anonymous_consumer: 'anon_missing' }, ...echoFn('anon') } });
      assert401(await call('/anon-x'), 'Invalid user authorization', challenge);
    }
  });

  test('t/plugin/plugin.t TEST 7-8: jwt-auth with _meta.error_response', async () => {
    await ok('PUT', '/routes/jwt-meta', { uri: '/jwt-meta', plugins: { 'jwt-auth': { _meta: { error_response: { message: 'Missing credential in request' } } }, ...echoFn('m') } });
    const got = await call('/jwt-meta');
    assert.equal(got.status, 401);
    assert.equal(got.text, '{"message":"Missing credential in request"}\n');
  });
});

describe('consumer-restriction (t/plugin/consumer-restriction.t)', () => {
  test('whitelist and blacklist of consumer names, rejected_code/rejected_msg, a request without consumer', async () => {
    await ok('PUT', '/consumers', { username: 'cr_jack', plugins: { 'basic-auth': { username: 'cr_jack', password: 'p1' } } });
    await ok('PUT', '/consumers', { username: 'cr_rose', plugins: { 'basic-auth': { username: 'cr_rose', password: 'p2' } } });
    await ok('PUT', '/routes/cr', { uri: '/cr', plugins: { 'basic-auth': {}, 'consumer-restriction': { whitelist: ['cr_jack'] }, ...echoFn('cr') } });
    assert401(await call('/cr'), 'Missing authorization in request');
    assert.equal((await call('/cr', { authorization: basic('cr_jack:p1') })).status, 200);
    const rose = await call('/cr', { authorization: basic('cr_rose:p2') });
    assert.equal(rose.status, 403);
    assert.equal(rose.text, '{"message":"The consumer_name is forbidden."}\n');
    await ok('PUT', '/routes/cr', { uri: '/cr', plugins: { 'basic-auth': {}, 'consumer-restriction': { blacklist: ['cr_jack'], rejected_code: 401, rejected_msg: 'request is forbidden' }, ...echoFn('cr') } });
    const jack = await call('/cr', { authorization: basic('cr_jack:p1') });
    assert.equal(jack.status, 401);
    assert.equal(jack.text, '{"message":"request is forbidden"}\n');
    assert.equal((await call('/cr', { authorization: basic('cr_rose:p2') })).status, 200);
    await ok('PUT', '/routes/cr-none', { uri: '/cr-none', plugins: { 'consumer-restriction': { whitelist: ['cr_jack'] }, ...echoFn('cr') } });
    assert401(await call('/cr-none'), 'The request is rejected, please check the consumer_name for this request');
  });

  test('allowed_by_methods; type route_id and consumer_group_id', async () => {
    await ok('PUT', '/routes/crm', {
      uri: '/crm',
      plugins: { 'basic-auth': {}, 'consumer-restriction': { allowed_by_methods: [{ user: 'cr_jack', methods: ['POST'] }] }, ...echoFn('crm') },
    });
    assert.equal((await call('/crm', { authorization: basic('cr_jack:p1') })).status, 403, 'jack may only POST');
    assert.equal((await call('/crm', { authorization: basic('cr_jack:p1') }, { method: 'POST', body: 'x' })).status, 200);
    assert.equal((await call('/crm', { authorization: basic('cr_rose:p2') })).status, 200, 'rose has no entry: any method');
    await ok('PUT', '/routes/crr', { uri: '/crr', plugins: { 'consumer-restriction': { type: 'route_id', blacklist: ['crr'] }, ...echoFn('crr') } });
    const byRoute = await call('/crr');
    assert.equal(byRoute.status, 403);
    assert.deepEqual(byRoute.json, { message: 'The route_id is forbidden.' });
    await ok('PUT', '/consumer_groups/cr_group', { plugins: {} });
    await ok('PUT', '/consumers', { username: 'cr_member', group_id: 'cr_group', plugins: { 'basic-auth': { username: 'cr_member', password: 'p3' } } });
    await ok('PUT', '/routes/crg', { uri: '/crg', plugins: { 'basic-auth': {}, 'consumer-restriction': { type: 'consumer_group_id', whitelist: ['cr_group'] }, ...echoFn('crg') } });
    assert.equal((await call('/crg', { authorization: basic('cr_member:p3') })).status, 200);
    assert.equal((await call('/crg', { authorization: basic('cr_jack:p1') })).status, 401, 'no group: rejected as missing');
    await ok('PUT', '/services/cr_svc', { plugins: { 'consumer-restriction': { type: 'service_id', whitelist: ['cr_svc'] } } });
    await ok('PUT', '/routes/crs', { uri: '/crs', service_id: 'cr_svc', plugins: echoFn('crs') });
    assert.equal((await call('/crs')).status, 200, 'the service is whitelisted');
    await ok('PUT', '/routes/crs2', { uri: '/crs2', plugins: { 'consumer-restriction': { type: 'service_id', whitelist: ['cr_svc'] }, ...echoFn('crs2') } });
    assert401(await call('/crs2'), 'The request is rejected, please check the service_id for this request');
  });

  test('schema: one of blacklist, whitelist, allowed_by_methods; lists not empty', async () => {
    const none = await gw.admin('PUT', '/routes/crbad', { uri: '/crbad', plugins: { 'consumer-restriction': {} } });
    assert.equal(none.status, 400);
    const empty = await gw.admin('PUT', '/routes/crbad', { uri: '/crbad', plugins: { 'consumer-restriction': { whitelist: [] } } });
    assert.equal(empty.status, 400);
  });
});

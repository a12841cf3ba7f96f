/**
 * The auth plugins in-process, where the conformance suite cannot look: secrets sealed at rest in consumers and
 * credentials (and still authenticating), constant-time comparison and the cost of a failed lookup, hostile input
 * (malformed headers, 100 KB tokens, `alg: none`, huge JWT headers, base64 of invalid UTF-8), and a fast-check
 * property: no credential that is not configured ever yields a 2xx. A real gateway (memory store, Node forwarder)
 * and a real upstream on 127.0.0.1, as test/unit/plugin-runtime.test.ts.
 * Run: node --import tsx --test test/unit/plugins-auth.test.ts
 */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { SignJWT } from 'jose';
import { silentLogger } from '../../src/core/context.ts';
import { createGateway, type Gateway } from '../../src/core/gateway.ts';
import { timingSafeEqual } from '../../src/core/plugins/auth.ts';
import { parseBasic } from '../../src/core/plugins/basic-auth.ts';
import { parseHttpTime, parseSignature } from '../../src/core/plugins/hmac-auth.ts';
import { withoutArg } from '../../src/core/plugins/key-auth.ts';
import { BUILTIN_PLUGINS } from '../../src/core/plugins/index.ts';
import { createNodeForwarder, type NodeForwarder } from '../../src/runtime/node-forwarder.ts';
import { MemoryStore } from '../../src/store/memory.ts';

const ADMIN_KEY = 'plugins-auth-test-admin-key';
/** APISIX's default keyring (conf/config.yaml.example `data_encryption.keyring`). */
const KEYRING = ['qeddd145sfvddff3', 'edd1c9f0985e76a2'];

let upstreamAddr: string;
let server: http.Server;
let store: MemoryStore;
let gateway: Gateway;
let forwarder: NodeForwarder;

before(async () => {
  server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ url: req.url, headers: req.headers }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  upstreamAddr = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  store = new MemoryStore();
  forwarder = createNodeForwarder();
  gateway = await createGateway({
    store,
    forwarder,
    plugins: BUILTIN_PLUGINS,
    logger: silentLogger,
    clientIp: () => '127.0.0.1',
    adminKeys: [ADMIN_KEY],
    dataEncryptionKeys: KEYRING,
  });
  const upstream = { type: 'roundrobin', nodes: { [upstreamAddr]: 1 } };
  await admin('PUT', '/consumers', {
    username: 'jack',
    plugins: {
      'key-auth': { key: 'jack-api-key' },
      'basic-auth': { username: 'jack', password: 'jack-password' },
      'jwt-auth': { key: 'jack-jwt', secret: 'jack-jwt-secret' },
      'hmac-auth': { key_id: 'jack-hmac', secret_key: 'jack-hmac-secret' },
    },
  });
  await admin('PUT', '/consumers', { username: 'rose' });
  await admin('PUT', '/consumers/rose/credentials/rose-basic', { plugins: { 'basic-auth': { username: 'rose', password: 'rose:pass word' } } });
  for (const p of ['key-auth', 'basic-auth', 'jwt-auth', 'hmac-auth']) {
    await admin('PUT', `/routes/${p}`, { uri: `/${p}`, plugins: { [p]: {} }, upstream });
  }
});

after(async () => {
  await gateway.close();
  await forwarder.close();
  server.close();
});

async function admin(method: string, path: string, body?: unknown) {
  const res = await gateway.admin.fetch(
    new Request(`http://127.0.0.1/apisix/admin${path}`, {
      method,
      headers: { 'x-api-key': ADMIN_KEY },
      body: body === undefined ? undefined : JSON.stringify(body),
    }),
  );
  const text = await res.text();
  assert.ok(res.status < 300, `${method} ${path}: ${res.status} ${text}`);
  await gateway.refresh();
  return JSON.parse(text);
}

async function get(path: string, headers: Record<string, string> = {}) {
  const res = await gateway.serveProxy(new Request(`http://gw.test${path}`, { headers }));
  const text = await res.text();
  return { status: res.status, text };
}

const b64 = (s: string | Buffer) => Buffer.from(s).toString('base64');
const b64url = (s: string | Buffer) => Buffer.from(s).toString('base64url');

describe('helpers', () => {
  it('withoutArg (key-auth hide_credentials): every occurrence of the name, plain or escaped; the rest byte for byte', () => {
    assert.equal(withoutArg('apikey=k&a=1', 'apikey'), 'a=1');
    assert.equal(withoutArg('a=%20x&apikey=k&apikey=j&b', 'apikey'), 'a=%20x&b');
    assert.equal(withoutArg('api%6Bey=k&a=1', 'apikey'), 'a=1');
    assert.equal(withoutArg('my+key=k&my%20key=j&mykey=x', 'my key'), 'mykey=x');
    assert.equal(withoutArg('%E0%A4%A=1&apikey', 'apikey'), '%E0%A4%A=1', 'a malformed escape is kept');
    assert.equal(withoutArg('apikeyx=1&xapikey=2', 'apikey'), 'apikeyx=1&xapikey=2');
  });

  it('timingSafeEqual compares bytes, lengths included', () => {
    assert.ok(timingSafeEqual('abc', 'abc'));
    assert.ok(!timingSafeEqual('abc', 'abd'));
    assert.ok(!timingSafeEqual('abc', 'abcd'));
    assert.ok(!timingSafeEqual('', 'a'));
    assert.ok(timingSafeEqual('', ''));
    assert.ok(timingSafeEqual('é', new Uint8Array([0xc3, 0xa9])));
  });

  it('parseBasic: first colon, whitespace stripped, invalid UTF-8 gives no user, not base64 refused', () => {
    assert.deepEqual(parseBasic(`Basic ${b64('u:a:b')}`), { user: 'u', password: 'a:b' });
    assert.deepEqual(parseBasic(`xbasic ${b64(' u s : p ')}`), { user: 'us', password: 'p' }, 'unanchored as ngx.re.match');
    assert.deepEqual(parseBasic(`Basic ${b64(Buffer.from([0xff, 0x3a, 0xfe]))}`), { user: null, password: '' });
    assert.equal(parseBasic('Basic !!!'), undefined);
    assert.equal(parseBasic(`Basic ${b64('nocolon')}`), undefined);
    assert.equal(parseBasic('Bearer x'), undefined);
  });

  it('hmac-auth: Signature fields and HTTP dates as APISIX parses them', () => {
    assert.deepEqual(parseSignature('Signature keyId="k",algorithm="hmac-sha256",headers="date x",signature="c2ln"'), {
      keyId: 'k', algorithm: 'hmac-sha256', headers: ['date', 'x'], signature: 'c2ln',
    });
    assert.equal(parseHttpTime('Sun, 06 Nov 1994 08:49:37 GMT'), 784111777);
    assert.equal(parseHttpTime('Sunday, 06-Nov-94 08:49:37 GMT'), 784111777);
    assert.equal(parseHttpTime('Sun Nov  6 08:49:37 1994'), 784111777);
    assert.equal(parseHttpTime('1994-11-06T08:49:37Z'), undefined);
    assert.equal(parseHttpTime('yesterday'), undefined);
  });
});

describe('secrets of consumers and credentials are sealed at rest (DATA_ENCRYPTION_KEY)', () => {
  it('key, password, secret and secret_key are ciphertext in the store, in clear for GET, and authenticate', async () => {
    const stored = await store.get('/apisix/consumers/jack');
    const plugins = stored!.value.plugins as Record<string, Record<string, string>>;
    // APISIX's own ciphertext of `the-key`-style values under its default keyring: AES-128-CBC, IV = key.
    assert.notEqual(plugins['key-auth']!.key, 'jack-api-key');
    assert.notEqual(plugins['basic-auth']!.password, 'jack-password');
    assert.equal(plugins['basic-auth']!.username, 'jack', 'the username is not a secret');
    assert.notEqual(plugins['jwt-auth']!.secret, 'jack-jwt-secret');
    assert.notEqual(plugins['hmac-auth']!.secret_key, 'jack-hmac-secret');
    const cred = await store.get('/apisix/consumers/rose/credentials/rose-basic');
    const credPlugins = cred!.value.plugins as Record<string, Record<string, string>>;
    assert.notEqual(credPlugins['basic-auth']!.password, 'rose:pass word');
    const raw = JSON.stringify([stored, cred]);
    for (const secret of ['jack-api-key', 'jack-password', 'jack-jwt-secret', 'jack-hmac-secret', 'rose:pass word']) {
      assert.ok(!raw.includes(secret), `${secret} is not stored in clear`);
    }
    const shown = await admin('GET', '/consumers/jack');
    assert.equal(shown.value.plugins['key-auth'].key, 'jack-api-key');
    assert.equal((await get('/key-auth', { apikey: 'jack-api-key' })).status, 200);
    assert.equal((await get('/basic-auth', { authorization: `Basic ${b64('jack:jack-password')}` })).status, 200);
    assert.equal((await get('/basic-auth', { authorization: `Basic ${b64('rose:rose:pass word')}` })).status, 401, 'whitespace is stripped');
    const jwt = await new SignJWT({ key: 'jack-jwt' }).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode('jack-jwt-secret'));
    assert.equal((await get('/jwt-auth', { authorization: `Bearer ${jwt}` })).status, 200);
  });

  it("the ciphertext is APISIX's: `the-key` under its default keyring", async () => {
    // apisix-wave2.md §2.2: a credential written with key-auth `the-key` shows `JCX7x1qN5e9kHt0GuJfWpw==`.
    await admin('PUT', '/consumers', { username: 'interop' });
    const res = await admin('PUT', '/consumers/interop/credentials/c', { plugins: { 'key-auth': { key: 'the-key' } } });
    assert.equal(res.value.plugins['key-auth'].key, 'JCX7x1qN5e9kHt0GuJfWpw==');
    await admin('DELETE', '/consumers/interop');
  });
});

describe('jwt-auth caches the imported key, never the verdict', () => {
  it('one import per consumer per snapshot; a token signed by another key still fails after a good one', async () => {
    const { exportSPKI, generateKeyPair } = await import('jose');
    const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
    const other = await generateKeyPair('ES256');
    await admin('PUT', '/consumers', { username: 'es', plugins: { 'jwt-auth': { key: 'es-key', algorithm: 'ES256', public_key: await exportSPKI(publicKey) } } });
    const subtle = crypto.subtle as SubtleCrypto & { importKey: SubtleCrypto['importKey'] };
    const real = subtle.importKey;
    let imports = 0;
    subtle.importKey = ((...args: Parameters<SubtleCrypto['importKey']>) => {
      if (args[0] === 'spki') imports++;
      return (real as (...a: unknown[]) => Promise<CryptoKey>).apply(subtle, args);
    }) as SubtleCrypto['importKey'];
    try {
      const good = await new SignJWT({ key: 'es-key' }).setProtectedHeader({ alg: 'ES256' }).sign(privateKey);
      const forged = await new SignJWT({ key: 'es-key' }).setProtectedHeader({ alg: 'ES256' }).sign(other.privateKey);
      for (let i = 0; i < 5; i++) {
        assert.equal((await get('/jwt-auth', { authorization: `Bearer ${good}` })).status, 200);
        assert.equal((await get('/jwt-auth', { authorization: `Bearer ${forged}` })).status, 401);
      }
      assert.equal(imports, 1, 'imported once for ten requests');
      await admin('PUT', '/routes/unrelated', { uri: '/unrelated', plugins: { mocking: { response_example: 'x' } } });
      assert.equal((await get('/jwt-auth', { authorization: `Bearer ${good}` })).status, 200);
      assert.equal(imports, 2, 'a new snapshot imports it again');
    } finally {
      subtle.importKey = real;
    }
  });
});

/**
 * Medians of `n` timings each of `a` and `b` in µs, taken alternately (a, b, a, b, …) so that a burst of load on a
 * shared machine falls on both alike rather than on one block of measurements.
 */
async function mediansUs(a: () => Promise<unknown>, b: () => Promise<unknown>, n: number): Promise<[number, number]> {
  const ta: number[] = [];
  const tb: number[] = [];
  for (let i = 0; i < n; i++) {
    for (const [fn, times] of i % 2 ? ([[b, tb], [a, ta]] as const) : ([[a, ta], [b, tb]] as const)) {
      const t0 = performance.now();
      await fn();
      times.push((performance.now() - t0) * 1000);
    }
  }
  const median = (xs: number[]) => xs.sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
  return [median(ta), median(tb)];
}

describe('a failed lookup costs what a wrong password costs (no user enumeration by timing)', () => {
  it('basic-auth: unknown user vs wrong password, medians within 3×', async () => {
    const unknown = () => get('/basic-auth', { authorization: `Basic ${b64('nobody-at-all:jack-password')}` });
    const wrong = () => get('/basic-auth', { authorization: `Basic ${b64('jack:jack-passworX')}` });
    for (let i = 0; i < 200; i++) await Promise.all([unknown(), wrong()]); // warm up
    assert.equal((await unknown()).status, 401);
    assert.equal((await wrong()).status, 401);
    const [a, b] = await mediansUs(unknown, wrong, 400);
    const ratio = Math.max(a, b) / Math.min(a, b);
    assert.ok(ratio < 3, `unknown user ${a.toFixed(1)} µs, wrong password ${b.toFixed(1)} µs: ratio ${ratio.toFixed(2)}`);
  });

  it('hmac-auth: unknown key_id vs wrong signature, medians within 3×', async () => {
    const sig = (keyId: string, secret: string) => {
      const date = new Date().toUTCString();
      const mac = createHmac('sha256', secret).update(`${keyId}\ndate: ${date}\n`).digest('base64');
      return { date, authorization: `Signature keyId="${keyId}",algorithm="hmac-sha256",headers="date",signature="${mac}"` };
    };
    const unknown = () => get('/hmac-auth', sig('nobody', 'jack-hmac-secret'));
    const wrong = () => get('/hmac-auth', sig('jack-hmac', 'not-the-secret'));
    assert.equal((await get('/hmac-auth', sig('jack-hmac', 'jack-hmac-secret'))).status, 200);
    for (let i = 0; i < 200; i++) await Promise.all([unknown(), wrong()]);
    const [a, b] = await mediansUs(unknown, wrong, 400);
    const ratio = Math.max(a, b) / Math.min(a, b);
    assert.ok(ratio < 3, `unknown key_id ${a.toFixed(1)} µs, wrong signature ${b.toFixed(1)} µs: ratio ${ratio.toFixed(2)}`);
  });
});

describe('bad input: a 401 as APISIX answers it, never a crash, never a pass', () => {
  const big = 'A'.repeat(100 * 1024);
  const cases: [string, Record<string, string>, string][] = [
    ['/key-auth', { apikey: big }, 'Invalid API key in request'],
    ['/basic-auth', { authorization: 'Basic' }, 'Invalid authorization in request'],
    ['/basic-auth', { authorization: 'Basic ' }, 'Invalid authorization in request'],
    ['/basic-auth', { authorization: 'Basic ===' }, 'Invalid authorization in request'],
    ['/basic-auth', { authorization: `Basic ${big}` }, 'Invalid authorization in request'],
    ['/basic-auth', { authorization: `Basic ${b64(`jack:${big}`)}` }, 'Invalid user authorization'],
    ['/basic-auth', { authorization: `Basic ${b64(Buffer.from([0x6a, 0x61, 0x63, 0x6b, 0x3a, 0xff, 0xfe]))}` }, 'Invalid user authorization'],
    ['/basic-auth', { authorization: `Basic ${b64(Buffer.from([0xc3, 0x28, 0x3a, 0x70]))}` }, 'Invalid user authorization'],
    ['/jwt-auth', { authorization: 'Bearer ' }, 'JWT token invalid'],
    ['/jwt-auth', { authorization: 'Bearer a.b' }, 'JWT token invalid'],
    ['/jwt-auth', { authorization: 'Bearer ...' }, 'JWT token invalid'],
    ['/jwt-auth', { authorization: `Bearer ${big}.${big}.${big}` }, 'JWT token invalid'],
    ['/jwt-auth', { authorization: `Bearer ${b64url('{"alg":"none"}')}.${b64url('{"key":"jack-jwt"}')}.` }, 'failed to verify jwt'],
    ['/jwt-auth', { authorization: `Bearer ${b64url('{"alg":"HS256"}')}.${b64url('{"key":"jack-jwt"}')}.` }, 'failed to verify jwt'],
    ['/jwt-auth', { authorization: `Bearer ${b64url(`{"alg":"HS256","x":"${big}"}`)}.${b64url('{"key":"jack-jwt"}')}.c2ln` }, 'failed to verify jwt'],
    ['/jwt-auth', { authorization: `Bearer ${b64url('{"alg":"HS256"}')}.${b64url(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]))}.c2ln` }, 'JWT token invalid'],
    ['/jwt-auth', { authorization: `Bearer ${b64url('[1]')}.${b64url('{"key":"jack-jwt"}')}.c2ln` }, 'JWT token invalid'],
    ['/jwt-auth', { authorization: `Bearer ${b64url('{"alg":"HS256"}')}.${b64url('{"key":{"a":1}}')}.c2ln` }, 'Invalid user key in JWT token'],
    ['/hmac-auth', { authorization: 'Signature' }, "client request can't be validated"],
    ['/hmac-auth', { authorization: `Signature keyId="jack-hmac",algorithm="hmac-sha256",headers="",signature="${big}"`, date: new Date().toUTCString() }, "client request can't be validated"],
    ['/hmac-auth', { authorization: `Signature ${'a="b",'.repeat(10000)}`, date: new Date().toUTCString() }, "client request can't be validated"],
  ];
  for (const [path, headers, message] of cases) {
    it(`${path} ${JSON.stringify(headers).slice(0, 90)}`, async () => {
      const got = await get(path, headers);
      assert.equal(got.status, 401, got.text.slice(0, 200));
      assert.equal(got.text, `${JSON.stringify({ message })}\n`);
    });
  }
});

/** Header values any HTTP client can send: printable ASCII. */
const value = fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 80 });
const near = (real: string) => fc.oneof(value, fc.constant(real).chain((r) => fc.nat(r.length).map((i) => r.slice(0, i))), value.map((v) => real + v), fc.constant(`${real} `));
const jwtPart = fc.oneof(
  fc.jsonValue().map((j) => b64url(JSON.stringify(j))),
  fc.constantFrom('{"alg":"none"}', '{"alg":"HS256"}', '{"alg":"HS512"}', '{"alg":"RS256"}').map(b64url),
  fc.constant(b64url('{"key":"jack-jwt"}')),
  value,
);

describe('property: no credential that is not configured ever yields a 2xx', () => {
  it('random and near-miss credentials on every auth plugin', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          // A header value loses its surrounding whitespace on the wire (RFC 9110): `jack-api-key ` is the key.
          near('jack-api-key').filter((k) => k.trim() !== 'jack-api-key').map((k) => ['/key-auth', { apikey: k }] as const),
          fc.tuple(near('jack'), near('jack-password'), fc.constantFrom('Basic', 'basic', 'Bearer', ''))
            .filter(([u, p]) => !(u.trim() === 'jack' && p.trim() === 'jack-password'))
            .map(([u, p, s]) => ['/basic-auth', { authorization: `${s} ${b64(`${u}:${p}`)}` }] as const),
          fc.tuple(jwtPart, jwtPart, fc.oneof(value, fc.constant(''))).map(([h, p, s]) => ['/jwt-auth', { authorization: `Bearer ${h}.${p}.${s}` }] as const),
          fc.tuple(near('jack-hmac'), fc.constantFrom('hmac-sha1', 'hmac-sha256', 'hmac-sha512', 'hmac-md5'), value).map(([k, a, s]) => [
            '/hmac-auth',
            { date: new Date().toUTCString(), authorization: `Signature keyId="${k}",algorithm="${a}",headers="date",signature="${s}"` },
          ] as const),
          fc.tuple(fc.constantFrom('/key-auth', '/basic-auth', '/jwt-auth', '/hmac-auth'), value).map(([p, a]) => [p, { authorization: a, apikey: a }] as const),
        ),
        async ([path, headers]) => {
          const got = await get(path, headers as Record<string, string>);
          assert.equal(got.status, 401, `${path} ${JSON.stringify(headers)} → ${got.status} ${got.text}`);
        },
      ),
      { numRuns: 600 },
    );
  });
});

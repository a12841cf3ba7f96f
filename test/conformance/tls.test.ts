// TLS (issue 19 items 1 and 2): APISIX's `ssls` resource through the Admin API (checks, keys encrypted at rest,
// private keys left out of GETs), the proxy's TLS port (PROXY_HTTPS_PORT) choosing a certificate by SNI (exact,
// wildcard, none), certificate changes applied without a restart while a kept-alive connection lives on, and
// HTTP/2 by ALPN. Certificates are made at test time with the openssl CLI (test/helpers/tls.ts).
import assert from 'node:assert/strict';
import { createDecipheriv } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest, Agent as HttpsAgent } from 'node:https';
import { connect as h2connect } from 'node:http2';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { connect as tlsConnect, type PeerCertificate } from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { type FunctionServer, startFunction } from '../functions/functions.ts';
import { certFor, NO_OPENSSL } from '../helpers/tls.ts';
import { tmpDir } from '../helpers/process.ts';
import { type GatewayUnderTest, RUNTIME, startGateway, tlsPortOf } from './harness.ts';

const WHY_NOT: Partial<Record<typeof RUNTIME, string>> = {
  workerd: 'Cloudflare terminates TLS in front of a Worker: there is no TLS port (PROXY_HTTPS_PORT) to test',
};
const PORT_SKIP = WHY_NOT[RUNTIME] ?? NO_OPENSSL;
const ENCRYPTION_KEY = 'fngate-tls-key16';

const a = NO_OPENSSL ? undefined : certFor('a.example.com');
const a2 = NO_OPENSSL ? undefined : certFor('a.example.com');
const wild = NO_OPENSSL ? undefined : certFor('*.example.com');
const other = NO_OPENSSL ? undefined : certFor('other.test');
const expired = NO_OPENSSL ? undefined : certFor('old.example.com', { expired: true });

/** Handshake with `servername`; the certificate the gateway showed, or the error that ended the handshake. */
function handshake(port: number, servername: string | undefined): Promise<PeerCertificate | Error> {
  return new Promise((resolve) => {
    const sock = tlsConnect({ host: '127.0.0.1', port, servername, rejectUnauthorized: false }, () => {
      const cert = sock.getPeerCertificate();
      sock.end();
      resolve(cert);
    });
    sock.once('error', (err) => resolve(err));
  });
}

function get(
  port: number,
  host: string,
  path: string,
  agent?: HttpsAgent,
): Promise<{ status: number; body: string; cn: string; reused: boolean }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      { host: '127.0.0.1', port, path, servername: host, headers: { host }, rejectUnauthorized: false, agent },
      (res) => {
        const sock = res.socket as import('node:tls').TLSSocket;
        const cn = String(sock.getPeerCertificate().subject?.CN ?? '');
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          body += c;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, cn, reused: req.reusedSocket }));
      },
    );
    req.once('error', reject);
    req.end();
  });
}

describe('ssls Admin API', { skip: NO_OPENSSL }, () => {
  let gw: GatewayUnderTest;
  before(async () => {
    gw = await startGateway({ env: { DATA_ENCRYPTION_KEY: ENCRYPTION_KEY } });
  });
  after(() => gw?.stop());

  test('a bad certificate or key is refused with 400 naming the problem, and nothing is stored', async () => {
    const cases: [string, Record<string, unknown>, RegExp][] = [
      ['junk before the PEM', { cert: `junk\n${a!.cert}`, key: a!.key, sni: 'a.example.com' }, /^failed to parse cert: junk outside the PEM blocks/],
      ['junk in the key', { cert: a!.cert, key: a!.key.replace(/\n(.{8})/, '\n!!!!$1'), sni: 'a.example.com' }, /^failed to parse key: /],
      ['no sni', { cert: a!.cert, key: a!.key }, /^invalid configuration: .*"sni" or "snis"/],
      ['certs without keys', { cert: a!.cert, key: a!.key, sni: 'a.example.com', certs: [wild!.cert] }, /^mismatched number of certs and keys$/],
    ];
    // Workers checks the PEM structure only (no X.509 parser in the Worker bundle): README, Runtimes.
    if (RUNTIME !== 'workerd') {
      cases.push(
        ['key of another certificate', { cert: a!.cert, key: other!.key, sni: 'a.example.com' }, /key does not match the certificate/],
        ['second pair mismatched', { cert: a!.cert, key: a!.key, sni: 'a.example.com', certs: [wild!.cert], keys: [other!.key] }, /^failed to handle cert-key pair\[1\]: the key does not match/],
      );
    }
    if (RUNTIME !== 'workerd') cases.push(['expired', { cert: expired!.cert, key: expired!.key, sni: 'old.example.com' }, /^certificate expired: CN=old\.example\.com is valid until Jan {1,2}2 00:00:00 2020 GMT$/]);
    for (const [what, body, message] of cases) {
      const res = await gw.admin('PUT', '/ssls/bad', body);
      assert.equal(res.status, 400, `${what}: ${res.text}`);
      assert.match(res.json.error_msg, message, what);
    }
    assert.equal((await gw.admin('GET', '/ssls/bad')).status, 404);
    assert.equal((await gw.admin('GET', '/ssls')).json.total, 0);
  });

  test('stored with its key encrypted (DATA_ENCRYPTION_KEY); GET leaves the keys out, as APISIX', async () => {
    const put = await gw.admin('PUT', '/ssls/1', { cert: a!.cert, key: a!.key, snis: ['a.example.com'], labels: { env: 'test' } });
    assert.equal(put.status, 201, put.text);
    assert.equal(put.json.value.type, undefined);
    assert.ok(!String(put.json.value.key).startsWith('---'), 'the answer shows what was stored: ciphertext');
    const got = await gw.admin('GET', '/ssls/1');
    assert.equal(got.status, 200);
    assert.equal(got.json.value.key, undefined);
    assert.equal(got.json.value.cert, a!.cert);
    assert.deepEqual(got.json.value.snis, ['a.example.com']);
    const list = await gw.admin('GET', '/ssls');
    assert.equal(list.json.list[0].value.key, undefined);
    // A PATCH keeps the stored key (decrypted to check it, encrypted again).
    const patched = await gw.admin('PATCH', '/ssls/1', { snis: ['a.example.com', 'b.example.com'] });
    assert.equal(patched.status, 200, patched.text);
    // At rest: no byte of the PEM key in any store file; where the store is a JSON file, its value decrypts to it.
    if (RUNTIME !== 'workerd') {
      const body = a!.key.split('\n')[1]!;
      for (const f of readdirSync(gw.dataDir)) {
        if (f === 'admin_key') continue;
        const bytes = readFileSync(join(gw.dataDir, f), 'latin1');
        assert.ok(!bytes.includes(body), `${f} holds the private key in plaintext`);
      }
      if (RUNTIME === 'node' || RUNTIME === 'bun') {
        const doc = JSON.parse(readFileSync(join(gw.dataDir, 'config.json'), 'utf8'));
        const stored = JSON.stringify(doc).match(/"key":"([A-Za-z0-9+/=]{40,})"/)?.[1];
        assert.ok(stored, 'an encrypted key in config.json');
        const k = Buffer.from(ENCRYPTION_KEY);
        const d = createDecipheriv('aes-128-cbc', k, k);
        assert.equal(Buffer.concat([d.update(Buffer.from(stored, 'base64')), d.final()]).toString(), a!.key);
      }
    }
    assert.equal((await gw.admin('DELETE', '/ssls/1')).status, 200);
  });
});

describe('the TLS port: SNI, rotation, HTTP/2', { skip: PORT_SKIP, timeout: 60_000 }, () => {
  let gw: GatewayUnderTest;
  let port: number;
  before(async () => {
    gw = await startGateway({
      env: { PROXY_HTTPS_PORT: '0', DATA_ENCRYPTION_KEY: ENCRYPTION_KEY, TLS_HANDSHAKE_TIMEOUT: '1' },
    });
    await gw.putRoute('1', { uri: '/tls', plugins: { mocking: { response_example: 'over tls' } } });
    await gw.putRoute('2', { uri: '/scheme', plugins: { 'response-rewrite': { headers: { set: { 'x-scheme': '$scheme' } } }, mocking: { response_example: 'x' } } });
    assert.equal((await gw.admin('PUT', '/ssls/1', { cert: a!.cert, key: a!.key, sni: 'a.example.com' })).status, 201);
    assert.equal((await gw.admin('PUT', '/ssls/2', { cert: wild!.cert, key: wild!.key, sni: '*.example.com' })).status, 201);
    port = await tlsPortOf(gw);
  });
  after(() => gw?.stop());

  test('the certificate is chosen by SNI: exact first, then a one-label wildcard; no match or no SNI fails the handshake', async () => {
    const exact = await handshake(port, 'a.example.com');
    assert.ok(!(exact instanceof Error), String(exact));
    assert.equal(exact.subject.CN, 'a.example.com');
    const w = await handshake(port, 'B.Example.com');
    assert.ok(!(w instanceof Error), String(w));
    assert.equal(w.subject.CN, '*.example.com');
    for (const name of ['x.y.example.com', 'example.com', 'other.test', undefined]) {
      const res = await handshake(port, name);
      assert.ok(res instanceof Error, `${name}: a handshake without a matching certificate must fail`);
      // Deno's node:tls is rustls, which refuses with an `access_denied` alert (49), Bun's BoringSSL with
      // `internal_error` (80, as APISIX), where Node's OpenSSL sends `handshake_failure` (40) (README).
      const refused =
        RUNTIME === 'deno'
          ? /alert access denied/i
          : RUNTIME === 'bun'
            ? /alert internal error/i
            : /alert handshake failure|ECONNRESET|socket disconnected/i;
      assert.match(res.message, refused, `${name}: ${res.message}`);
    }
    const res = await get(port, 'a.example.com', '/tls');
    assert.equal(res.status, 200);
    assert.equal(res.body, 'over tls');
  });

  test('a certificate change applies to the next handshake; a kept-alive connection carries on', async () => {
    const agent = new HttpsAgent({ keepAlive: true, maxSockets: 1 });
    try {
      const first = await get(port, 'a.example.com', '/tls', agent);
      assert.equal(first.status, 200);
      const before = first.cn;
      const put = await gw.admin('PUT', '/ssls/1', { cert: a2!.cert, key: a2!.key, sni: 'a.example.com' });
      assert.equal(put.status, 200, put.text);
      const again = await get(port, 'a.example.com', '/tls', agent);
      assert.equal(again.status, 200);
      assert.ok(again.reused, 'the same connection served the request after the change');
      assert.equal(again.cn, before);
      // A new handshake gets the new certificate (compare the certificates themselves: both say a.example.com).
      const fresh = await handshake(port, 'a.example.com');
      assert.ok(!(fresh instanceof Error));
      const pem = (raw: Buffer) => raw.toString('base64');
      const want = a2!.cert.replace(/-----[A-Z ]+-----|\s/g, '');
      assert.equal(pem(fresh.raw), want);
      // Disabled (status 0): that name has no certificate any more, the wildcard takes it.
      assert.equal((await gw.admin('PATCH', '/ssls/1', { status: 0 })).status, 200);
      const off = await handshake(port, 'a.example.com');
      assert.ok(!(off instanceof Error));
      assert.equal(off.subject.CN, '*.example.com');
      assert.equal((await gw.admin('PATCH', '/ssls/1', { status: 1 })).status, 200);
    } finally {
      agent.destroy();
    }
  });

  test('HTTP/1.1 keep-alive: two requests on one TLS connection, the second on the reused connection', async () => {
    const agent = new HttpsAgent({ keepAlive: true, maxSockets: 1 });
    try {
      const first = await get(port, 'a.example.com', '/tls', agent);
      assert.equal(first.status, 200);
      assert.equal(first.reused, false);
      const second = await get(port, 'a.example.com', '/tls', agent);
      assert.equal(second.status, 200);
      assert.equal(second.body, 'over tls');
      assert.ok(second.reused, 'the second request went on the first one\'s connection');
    } finally {
      agent.destroy();
    }
  });

  test('ssl_protocols: a version the ssl does not list gets no request through', async () => {
    const p = certFor('p.example.com');
    const put = await gw.admin('PUT', '/ssls/p', { cert: p.cert, key: p.key, sni: 'p.example.com', ssl_protocols: ['TLSv1.2'] });
    assert.equal(put.status, 201, put.text);
    const call = (version: 'TLSv1.2' | 'TLSv1.3') =>
      new Promise<number | Error>((resolve) => {
        const req = httpsRequest(
          {
            host: '127.0.0.1',
            port,
            path: '/tls',
            servername: 'p.example.com',
            headers: { host: 'p.example.com' },
            rejectUnauthorized: false,
            minVersion: version,
            maxVersion: version,
            agent: false,
          },
          (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          },
        );
        req.once('error', (err) => resolve(err));
        req.end();
      });
    assert.equal(await call('TLSv1.2'), 200);
    // Deno (rustls) refuses the handshake with `protocol_version`; Node and Bun (OpenSSL picks the version before
    // the SNI callback) close the connection right after it, before reading a request.
    const refused = await call('TLSv1.3');
    assert.ok(refused instanceof Error, `TLSv1.3 got ${String(refused)}`);
    assert.equal((await gw.admin('DELETE', '/ssls/p')).status, 200);
  });

  test('$scheme is https on the TLS port', async () => {
    const res = await new Promise<string | undefined>((resolve, reject) => {
      const req = httpsRequest(
        { host: '127.0.0.1', port, path: '/scheme', servername: 'a.example.com', headers: { host: 'a.example.com' }, rejectUnauthorized: false },
        (r) => {
          r.resume();
          resolve(r.headers['x-scheme'] as string | undefined);
        },
      );
      req.once('error', reject);
      req.end();
    });
    assert.equal(res, 'https');
  });

  test('HTTP/2 by ALPN (h2), with the host from :authority', async () => {
    const session = h2connect(`https://127.0.0.1:${port}`, { servername: 'c.example.com', rejectUnauthorized: false });
    try {
      await gw.putRoute('3', { uri: '/h2', hosts: ['c.example.com'], plugins: { mocking: { response_example: 'h2 ok' } } });
      const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const stream = session.request({ ':path': '/h2', ':authority': 'c.example.com' });
        let status = 0;
        let body = '';
        stream.on('response', (h) => {
          status = Number(h[':status']);
        });
        stream.setEncoding('utf8');
        stream.on('data', (c: string) => {
          body += c;
        });
        stream.on('end', () => resolve({ status, body }));
        stream.on('error', reject);
        stream.end();
      });
      assert.equal(session.alpnProtocol, 'h2');
      assert.equal(status, 200);
      assert.equal(body, 'h2 ok');
    } finally {
      session.close();
    }
  });

  test('a handshake that stalls is closed after TLS_HANDSHAKE_TIMEOUT (1 s here)', async () => {
    const started = Date.now();
    await new Promise<void>((resolve, reject) => {
      const sock = createConnection({ host: '127.0.0.1', port });
      // Half a ClientHello's record header, then nothing.
      sock.once('connect', () => sock.write(Buffer.from([0x16, 0x03, 0x01])));
      sock.once('close', () => resolve());
      sock.once('error', () => undefined);
      setTimeout(() => reject(new Error('the stalled handshake was still open after 8 s')), 8000).unref();
    });
    const took = Date.now() - started;
    assert.ok(took >= 800, `closed after ${took} ms, before the timeout`);
  });

  test('HTTP/2 rapid reset: 128 streams per session, and every reset stream aborts its function call', async () => {
    const slow: FunctionServer = await startFunction('slow');
    await gw.putRoute('4', { uri: '/slow', upstream: { nodes: { [`127.0.0.1:${slow.port}`]: 1 } } });
    const session = h2connect(`https://127.0.0.1:${port}`, { servername: 'c.example.com', rejectUnauthorized: false });
    session.on('error', () => undefined);
    try {
      await new Promise<void>((resolve) => session.once('remoteSettings', () => resolve()));
      assert.equal(session.remoteSettings.maxConcurrentStreams, 128);
      // Open and reset at once, 400 times (CVE-2023-44487's pattern), each asking for a 30 s answer.
      for (let i = 0; i < 400 && !session.destroyed && !session.closed; i++) {
        const stream = session.request({ ':path': '/slow?delay=30000', ':authority': 'c.example.com' });
        stream.on('error', () => undefined);
        stream.close(0x8 /* NGHTTP2_CANCEL */);
        if (i % 50 === 49) await new Promise((r) => setImmediate(r));
      }
      // The calls that reached the function are aborted, not left running for 30 s.
      const deadline = Date.now() + 10_000;
      let open = Number.POSITIVE_INFINITY;
      while (Date.now() < deadline) {
        open = await new Promise<number>((r) => slow.server.getConnections((_e, n) => r(n)));
        if (open === 0) break;
        await new Promise((r) => setTimeout(r, 200));
      }
      assert.equal(open, 0, 'function connections still open 10 s after their streams were reset');
      // And the gateway still serves.
      const res = await get(port, 'a.example.com', '/tls');
      assert.equal(res.status, 200);
    } finally {
      session.destroy();
      await slow.close();
    }
  });
});

describe('the Admin API over TLS (ADMIN_TLS_CERT / ADMIN_TLS_KEY)', { skip: PORT_SKIP }, () => {
  let gw: GatewayUnderTest;
  const admin = NO_OPENSSL ? undefined : certFor('localhost');
  before(async () => {
    const dir = await tmpDir('fngate-admin-tls-');
    writeFileSync(join(dir, 'admin.crt'), admin!.cert);
    writeFileSync(join(dir, 'admin.key'), admin!.key, { mode: 0o600 });
    gw = await startGateway({ env: { ADMIN_TLS_CERT: join(dir, 'admin.crt'), ADMIN_TLS_KEY: join(dir, 'admin.key') } });
  });
  after(() => gw?.stop());

  test('HTTPS only, with the configured certificate (verified against it); plain HTTP gets no answer', async () => {
    assert.match(gw.adminUrl, /^https:\/\//);
    const url = new URL(gw.adminUrl);
    const res = await new Promise<{ status: number; body: string; cn: string }>((resolve, reject) => {
      const req = httpsRequest(
        {
          host: url.hostname,
          port: url.port,
          path: '/apisix/admin/routes',
          servername: 'localhost',
          ca: admin!.cert,
          headers: { 'x-api-key': gw.key },
        },
        (r) => {
          const cn = String((r.socket as import('node:tls').TLSSocket).getPeerCertificate().subject?.CN ?? '');
          let body = '';
          r.setEncoding('utf8');
          r.on('data', (c: string) => {
            body += c;
          });
          r.on('end', () => resolve({ status: r.statusCode ?? 0, body, cn }));
        },
      );
      req.once('error', reject);
      req.end();
    });
    assert.equal(res.status, 200, res.body);
    assert.equal(res.cn, 'localhost');
    assert.equal(JSON.parse(res.body).total, 0);
    // Plain HTTP on the same port: no Admin API answer (a closed connection, or a 400 from the TLS server).
    const plain = await new Promise<number | Error>((resolve) => {
      const req = httpRequest(
        { host: url.hostname, port: url.port, path: '/apisix/admin/routes', headers: { 'x-api-key': gw.key }, agent: false },
        (r) => {
          r.resume();
          resolve(r.statusCode ?? 0);
        },
      );
      req.setTimeout(5000, () => req.destroy(new Error('no answer within 5 s')));
      req.once('error', (err) => resolve(err));
      req.end();
    });
    assert.ok(plain instanceof Error || plain === 400, `plain HTTP got ${String(plain)}`);
  });
});

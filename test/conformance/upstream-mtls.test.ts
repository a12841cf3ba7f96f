// Client certificates to upstreams (issue 19 item 1, APISIX `upstream.tls`): the gateway presents the inline
// `client_cert`/`client_key` or the `type: client` ssl named by `client_cert_id` to an https upstream that requires
// one. The upstream here is a real node:https server on loopback with `requestCert` and `rejectUnauthorized` and a
// test CA (made at test time with openssl, test/helpers/tls.ts); it answers with the subject of the client
// certificate it got. The gateway trusts the test CA through NODE_EXTRA_CA_CERTS (Node, Bun) and DENO_CERT (Deno).
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { systemSkip } from '../helpers/system.ts';
import { type TestCa, testCa } from '../helpers/tls.ts';
import { type GatewayUnderTest, RUNTIME, startGateway, tmpDirsPerFile } from './harness.ts';

const SKIP =
  RUNTIME === 'workerd'
    ? "a Worker's fetch presents a client certificate only through an mtls_certificates binding made at deploy time: the Admin API refuses upstream.tls there (README, Runtimes)"
    : systemSkip('upstream-mtls.test.ts', ['openssl'], ['openssl']);
const ENCRYPTION_KEY = 'fngate-mtls-ke16';

describe('upstream client certificates (upstream.tls)', { skip: SKIP }, () => {
  const tmpDir = tmpDirsPerFile();
  let ca: TestCa;
  let rogueCa: TestCa;
  let upstream: Server;
  let port = 0;
  let gw: GatewayUnderTest;
  let inline: { key: string; cert: string };
  let byId: { key: string; cert: string };
  let rogue: { key: string; cert: string };

  before(async () => {
    ca = testCa();
    rogueCa = testCa('another CA');
    const server = ca.issue('localhost', 'server');
    inline = ca.issue('fngate-client-inline', 'client');
    byId = ca.issue('fngate-client-ssl', 'client');
    rogue = rogueCa.issue('fngate-client-inline', 'client');
    upstream = createServer(
      { key: server.key, cert: server.cert, ca: ca.cert, requestCert: true, rejectUnauthorized: true },
      (req, res) => {
        const peer = (req.socket as TLSSocket).getPeerCertificate();
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ cn: peer.subject?.CN ?? null, path: req.url }));
      },
    );
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    port = (upstream.address() as AddressInfo).port;
    const dir = await tmpDir('fngate-mtls-');
    const caFile = join(dir, 'ca.pem');
    writeFileSync(caFile, ca.cert);
    gw = await startGateway({
      env: { DATA_ENCRYPTION_KEY: ENCRYPTION_KEY, NODE_EXTRA_CA_CERTS: caFile, DENO_CERT: caFile },
    });
  });
  after(async () => {
    await gw?.stop();
    upstream?.closeAllConnections();
    await new Promise((r) => upstream?.close(r));
    ca?.close();
    rogueCa?.close();
  });

  const upstreamWith = (tls?: Record<string, unknown>) => ({
    scheme: 'https',
    pass_host: 'node',
    nodes: { [`127.0.0.1:${port}`]: 1 },
    ...(tls ? { tls } : {}),
  });

  test('inline client_cert/client_key: the upstream sees the certificate; the key is stored encrypted', async () => {
    const put = await gw.admin('PUT', '/upstreams/inline', upstreamWith({ client_cert: inline.cert, client_key: inline.key }));
    assert.equal(put.status, 201, put.text);
    assert.ok(!String(put.json.value.tls.client_key).startsWith('---'), 'the answer shows what was stored: ciphertext');
    assert.equal(put.json.value.tls.client_cert, inline.cert);
    await gw.putRoute('inline', { uri: '/inline', upstream_id: 'inline' });
    const res = await gw.fetch('/inline');
    assert.equal(res.status, 200, await res.clone().text());
    assert.deepEqual(await res.json(), { cn: 'fngate-client-inline', path: '/inline' });
    // Inline in a route, too (the key of a route's own upstream is encrypted as well).
    const route = await gw.putRoute('inline-route', {
      uri: '/inline-route',
      upstream: upstreamWith({ client_cert: inline.cert, client_key: inline.key }),
    });
    assert.ok(!String(route.json.value.upstream.tls.client_key).startsWith('---'));
    const res2 = await gw.fetch('/inline-route');
    assert.equal(res2.status, 200);
    assert.equal((await res2.json()).cn, 'fngate-client-inline');
  });

  test('client_cert_id: the `type: client` ssl is presented; a missing or server ssl is refused with 400', async () => {
    const missing = await gw.admin('PUT', '/upstreams/by-id', upstreamWith({ client_cert_id: 'client-1' }));
    assert.equal(missing.status, 400);
    assert.equal(missing.json.error_msg, 'failed to fetch ssl info by ssl id [client-1], response code: 404');
    const server = ca.issue('a.example.com', 'server');
    assert.equal((await gw.admin('PUT', '/ssls/server-1', { cert: server.cert, key: server.key, snis: ['a.example.com'] })).status, 201);
    const wrongType = await gw.admin('PUT', '/upstreams/by-id', upstreamWith({ client_cert_id: 'server-1' }));
    assert.equal(wrongType.status, 400);
    assert.equal(wrongType.json.error_msg, 'failed to fetch ssl info by ssl id [server-1], wrong ssl type');

    const ssl = await gw.admin('PUT', '/ssls/client-1', { type: 'client', cert: byId.cert, key: byId.key });
    assert.equal(ssl.status, 201, ssl.text);
    assert.equal((await gw.admin('PUT', '/upstreams/by-id', upstreamWith({ client_cert_id: 'client-1' }))).status, 201);
    await gw.putRoute('by-id', { uri: '/by-id', upstream_id: 'by-id' });
    const res = await gw.fetch('/by-id');
    assert.equal(res.status, 200, await res.clone().text());
    assert.equal((await res.json()).cn, 'fngate-client-ssl');

    // The ssl replaced by another client certificate: the next call presents the new one.
    const again = ca.issue('fngate-client-ssl-2', 'client');
    assert.equal((await gw.admin('PUT', '/ssls/client-1', { type: 'client', cert: again.cert, key: again.key })).status, 200);
    const res2 = await gw.fetch('/by-id');
    assert.equal(res2.status, 200);
    assert.equal((await res2.json()).cn, 'fngate-client-ssl-2');
  });

  test('an ssl that client_cert_id names may be deleted or made a server one (as APISIX); its users then answer 502', async () => {
    const cc = ca.issue('fngate-client-gone', 'client');
    assert.equal((await gw.admin('PUT', '/ssls/client-2', { type: 'client', cert: cc.cert, key: cc.key })).status, 201);
    // Named by an upstream object (through a route and through a service), by a route's own upstream, and by a
    // service's own upstream: APISIX's forms of the reference.
    assert.equal((await gw.admin('PUT', '/upstreams/gone', upstreamWith({ client_cert_id: 'client-2' }))).status, 201);
    await gw.putRoute('gone-up', { uri: '/gone/upstream', upstream_id: 'gone' });
    await gw.putRoute('gone-route', { uri: '/gone/route', upstream: upstreamWith({ client_cert_id: 'client-2' }) });
    const svc = await gw.admin('PUT', '/services/gone', { upstream: upstreamWith({ client_cert_id: 'client-2' }) });
    assert.equal(svc.status, 201, svc.text);
    await gw.putRoute('gone-service', { uri: '/gone/service', service_id: 'gone' });
    const svcUp = await gw.admin('PUT', '/services/gone-up', { upstream_id: 'gone' });
    assert.equal(svcUp.status, 201, svcUp.text);
    await gw.putRoute('gone-service-up', { uri: '/gone/service-upstream', service_id: 'gone-up' });
    const paths = ['/gone/upstream', '/gone/route', '/gone/service', '/gone/service-upstream'];
    for (const path of paths) {
      const res = await gw.fetch(path);
      assert.equal(res.status, 200, `${path}: ${await res.clone().text()}`);
      assert.equal((await res.json()).cn, 'fngate-client-gone', path);
    }

    // APISIX's ssls have no delete check (admin/ssl.lua: no delete_checker): deleted without ?force, 200.
    const del = await gw.admin('DELETE', '/ssls/client-2');
    assert.equal(del.status, 200, del.text);
    for (const path of paths) {
      const res = await gw.fetch(path);
      assert.equal(res.status, 502, path);
      assert.deepEqual(await res.json(), { error_msg: 'failed to get ssl cert: ssl id [client-2] not exits' }, path);
    }

    // Back as a server ssl (APISIX's t/node/upstream-mtls.t TEST 17-18): 502 too, saying so.
    const server = ca.issue('gone.example.com', 'server');
    assert.equal((await gw.admin('PUT', '/ssls/client-2', { cert: server.cert, key: server.key, snis: ['gone.example.com'] })).status, 201);
    for (const path of paths) {
      const res = await gw.fetch(path);
      assert.equal(res.status, 502, path);
      assert.deepEqual(await res.json(), { error_msg: "failed to get ssl cert: ssl type should be 'client'" }, path);
    }
    // A client ssl again: served again, no restart.
    assert.equal((await gw.admin('PUT', '/ssls/client-2', { type: 'client', cert: cc.cert, key: cc.key })).status, 200);
    const back = await gw.fetch('/gone/route');
    assert.equal(back.status, 200);
    assert.equal((await back.json()).cn, 'fngate-client-gone');
  });

  test('no client certificate, or one the upstream does not trust: 502', async () => {
    await gw.putRoute('none', { uri: '/none', upstream: upstreamWith() });
    const none = await gw.fetch('/none');
    assert.equal(none.status, 502, await none.clone().text());
    await none.body?.cancel();
    await gw.putRoute('rogue', { uri: '/rogue', upstream: upstreamWith({ client_cert: rogue.cert, client_key: rogue.key }) });
    const bad = await gw.fetch('/rogue');
    assert.equal(bad.status, 502, await bad.clone().text());
    await bad.body?.cancel();
  });

  test('bad input: a cert without its key, cert_id with a cert, a key of another certificate, junk: 400', async () => {
    const cases: [string, Record<string, unknown>, RegExp][] = [
      ['cert without key', { client_cert: inline.cert }, /"client_key" is required/],
      ['cert_id with cert', { client_cert_id: 'x', client_cert: inline.cert, client_key: inline.key }, /"client_cert_id" cannot be combined/],
      ['key of another certificate', { client_cert: inline.cert, client_key: byId.key }, /key does not match the certificate/],
      ['junk cert', { client_cert: `junk\n${inline.cert}`, client_key: inline.key }, /^failed to parse cert: junk outside the PEM blocks/],
    ];
    for (const [what, tls, message] of cases) {
      const res = await gw.admin('PUT', '/upstreams/bad', upstreamWith(tls));
      assert.equal(res.status, 400, `${what}: ${res.text}`);
      assert.match(res.json.error_msg, message, what);
    }
    assert.equal((await gw.admin('GET', '/upstreams/bad')).status, 404);
  });
});

/**
 * The dashboard's assets at /ui/ on the Admin API's origin, served by the same core code on every runtime (on
 * Workers: the single origin, since ADMIN_KEY is set). The browser-driven tests: test/e2e/dashboard.test.ts (Node).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { UI_ASSETS, UI_INDEX } from '../../src/core/admin/ui-assets.ts';
import { type GatewayUnderTest, gatewayPerFile } from './harness.ts';

let gw: GatewayUnderTest;
gatewayPerFile((g) => {
  gw = g;
});

describe('dashboard assets at /ui/', () => {
  test('index.html with no-cache and a strict CSP', async () => {
    const res = await fetch(`${gw.adminUrl}/ui/`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'text/html; charset=utf-8');
    assert.equal(res.headers.get('cache-control'), 'no-cache');
    assert.match(res.headers.get('content-security-policy') ?? '', /^default-src 'none'; script-src 'self'; style-src 'self';/);
    assert.equal(await res.text(), UI_INDEX);
  });

  test('every hashed asset, immutable, byte for byte', async () => {
    for (const [name, asset] of Object.entries(UI_ASSETS)) {
      const res = await fetch(`${gw.adminUrl}/ui/assets/${name}`);
      assert.equal(res.status, 200, name);
      assert.equal(res.headers.get('content-type'), asset.type);
      assert.equal(res.headers.get('cache-control'), 'public, max-age=31536000, immutable');
      assert.equal(await res.text(), asset.body, name);
    }
  });

  test('/ui redirects to /ui/; an unknown asset is 404', async () => {
    const res = await fetch(`${gw.adminUrl}/ui`, { redirect: 'manual' });
    assert.equal(res.status, 301);
    assert.equal(res.headers.get('location'), '/ui/');
    await res.body?.cancel();
    const missing = await fetch(`${gw.adminUrl}/ui/assets/app-000000000000.js`);
    assert.equal(missing.status, 404);
    await missing.body?.cancel();
  });
});

// The dashboard at /ui/ on the Admin API port, driven in a real headless Chromium (Debian `chromium`, through
// playwright-core; no browser is downloaded): sign in, create a function route through the form, call it through
// the proxy with "try it", an invalid plugin value answered by the Admin API's own message, an unknown plugin kept
// and editable as JSON, a stored `<img onerror>` shown as text, delete, a wrong key, the per-route metrics view (the
// gateway's prometheus export server on a free port, read by the page through CORS). One browser for the file.
// FNGATE_SCREENSHOTS=1 also writes the main screens to docs/screenshots/ (the README links them).
// Run: npm run build && node --import tsx --test --test-concurrency=1 test/e2e/dashboard.test.ts
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import { type GatewayUnderTest, ROOT, startGateway } from '../conformance/harness.ts';
import { type FunctionServers, startFunctions } from '../functions/functions.ts';
import { freePort, waitFor } from '../helpers/process.ts';
import { systemSkip } from '../helpers/system.ts';

const skip = systemSkip('dashboard (test/e2e/dashboard.test.ts)', ['chromium'], ['chromium']);
const SHOTS = process.env.FNGATE_SCREENSHOTS === '1' ? join(ROOT, 'docs/screenshots') : undefined;
const XSS_NAME = '<img src=x onerror="window.__xss=1">';

describe('dashboard in Chromium', { skip }, () => {
  let gw: GatewayUnderTest;
  let fns: FunctionServers;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  /** Console errors and CSP violations seen in any page of the file: none are expected. */
  const consoleErrors: string[] = [];
  let metricsUrl: string;

  before(async () => {
    fns = await startFunctions();
    const promPort = await freePort();
    metricsUrl = `http://127.0.0.1:${promPort}/apisix/prometheus/metrics`;
    gw = await startGateway({ env: { PROMETHEUS_PORT: String(promPort), PROMETHEUS_REFRESH_INTERVAL: '0' } });
    // Where systemSkip found it: on the PATH, else Debian's /usr/lib/chromium.
    const executablePath = execFileSync('sh', ['-c', 'command -v chromium || echo /usr/lib/chromium/chromium'], { encoding: 'utf8' }).trim();
    // --no-sandbox: the suite runs as root in CI containers, where Chromium's sandbox cannot start.
    browser = await chromium.launch({ executablePath, headless: true, args: ['--no-sandbox'] });
    context = await browser.newContext({ viewport: { width: 1100, height: 760 } });
    context.setDefaultTimeout(10_000);
    page = await context.newPage();
    page.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(m.text());
    });
    page.on('pageerror', (e) => consoleErrors.push(e.message));
  });
  after(async () => {
    await browser?.close();
    await gw?.stop();
    await fns?.close();
  });

  const shot = async (name: string, p: Page = page) => {
    if (SHOTS) await p.screenshot({ path: join(SHOTS, `${name}.png`) });
  };
  /** Clicks Save and waits for "Saved <key>" matching `re`; fails with the Admin API's message when it refused. */
  const save = async (p: Page, re: RegExp = /^Saved \//) => {
    await p.getByRole('button', { name: 'Save' }).click();
    const outcome = p.getByText(re).or(p.locator('#save-error'));
    await outcome.first().waitFor();
    const error = p.locator('#save-error');
    if ((await error.count()) > 0) assert.fail(`the save was refused: ${await error.textContent()}`);
  };
  /**
   * Clicks the list's New. Right after a click in the navigation the list being left can still be on the page for a
   * moment next to the new one (seen twice in CI at 360 px: two "New" buttons); it must be gone within a few seconds,
   * or the dashboard shows two lists and the test fails saying so.
   */
  const clickNew = async (p: Page) => {
    const news = p.getByRole('button', { name: 'New', exact: true });
    await news.first().waitFor();
    const until = Date.now() + 5000;
    while ((await news.count()) > 1) {
      if (Date.now() > until) assert.fail(`${await news.count()} lists, each with its New button, stayed on the page`);
      await new Promise((r) => setTimeout(r, 50));
    }
    await news.click();
  };
  const signIn = async (p: Page, key: string) => {
    await p.goto(`${gw.adminUrl}/ui/`);
    await p.getByLabel('Admin key').fill(key);
    await p.getByRole('button', { name: 'Sign in' }).click();
  };

  test('serves /ui/ with a strict CSP and cache headers, assets hashed and immutable', async () => {
    const index = await fetch(`${gw.adminUrl}/ui/`);
    assert.equal(index.status, 200);
    const csp = index.headers.get('content-security-policy') ?? '';
    assert.match(csp, /script-src 'self';/);
    assert.match(csp, /style-src 'self';/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    assert.equal(index.headers.get('cache-control'), 'no-cache');
    const html = await index.text();
    assert.doesNotMatch(html, /<script>|<style>|style=/, 'no inline script or style');
    const js = /src="(\/ui\/assets\/app-[0-9a-f]{12}\.js)"/.exec(html)?.[1];
    assert.ok(js, html);
    const asset = await fetch(`${gw.adminUrl}${js}`);
    assert.equal(asset.status, 200);
    assert.equal(asset.headers.get('cache-control'), 'public, max-age=31536000, immutable');
    assert.match(asset.headers.get('content-type') ?? '', /^text\/javascript/);
    const redirect = await fetch(`${gw.adminUrl}/ui`, { redirect: 'manual' });
    assert.equal(redirect.status, 301);
    assert.equal(redirect.headers.get('location'), '/ui/');
    assert.equal((await fetch(`${gw.adminUrl}/ui/assets/app-000000000000.js`)).status, 404);
    // Not on the proxy port: the dashboard belongs to the Admin API.
    assert.equal((await gw.fetch('/ui/')).status, 404);
  });

  test('a wrong key shows "failed to check token" and nothing else', async () => {
    const p = await context.newPage();
    await signIn(p, 'not-the-key-not-the-key');
    const error = p.locator('#signin-error');
    await error.waitFor();
    assert.equal((await error.textContent())?.trim(), 'failed to check token');
    assert.equal(await p.locator('nav').count(), 0, 'no navigation before a good key');
    assert.equal(await p.evaluate(() => sessionStorage.length), 0, 'the wrong key is not kept');
    await shot('sign-in-wrong-key', p);
    await p.close();
  });

  test('sign in, create a function route through the form, call it through the proxy with "try it"', async () => {
    await signIn(page, gw.key);
    await page.getByRole('heading', { name: 'Routes' }).waitFor();
    assert.equal(await page.evaluate(() => document.cookie), '', 'no cookie');
    await clickNew(page);
    await page.getByLabel('Name', { exact: true }).fill('hello-fn');
    await page.getByLabel('Path').fill('/dash/*');
    await page.getByLabel('GET', { exact: true }).check();
    await page.getByLabel('Send to function').selectOption('openfunction');
    await page.getByLabel('Function URL').fill(fns.urls['function-sample']);
    await page.getByLabel(/Allow "try it"/).check();
    await shot('route-form');
    await save(page, /^Saved \/apisix\/routes\//);
    const list = await gw.admin('GET', '/routes');
    const stored = list.json.list.find((i: { value: { name?: string } }) => i.value.name === 'hello-fn')?.value;
    assert.ok(stored, list.text);
    assert.deepEqual(stored.methods, ['GET']);
    assert.equal(stored.plugins.openfunction.function_uri, fns.urls['function-sample']);
    assert.equal(stored.plugins.cors.allow_origins, new URL(gw.adminUrl).origin);

    await page.getByLabel('Proxy URL').fill(gw.proxyUrl);
    await page.getByLabel('Path and query').fill('/dash/world');
    await page.getByRole('button', { name: 'Send' }).click();
    await page.locator('#try-result').waitFor();
    assert.equal(await page.locator('#try-status').textContent(), '200');
    assert.equal(await page.locator('#try-body-out').textContent(), 'Hello, world!');
    await shot('try-it');
    // The same answer outside the browser.
    assert.equal(await (await gw.fetch('/dash/world')).text(), 'Hello, world!');
  });

  test('an invalid plugin value shows the Admin API\'s own message next to the field, and nothing is stored', async () => {
    // Still on the route saved above: add request-id (a flat schema, so it gets a generated form).
    await page.getByLabel('Add a plugin').selectOption('request-id');
    await page.getByRole('button', { name: 'Add', exact: true }).click();
    const editor = page.locator('fieldset[data-plugin="request-id"]');
    await editor.getByLabel('header_name').fill('X-Req');
    await editor.getByLabel('include_in_response').check();
    await editor.getByLabel(/^algorithm/).waitFor();
    // A JSON edit with a wrong type: the live errors show it before any request.
    await editor.getByLabel('request-id configuration (JSON)').fill('{"header_name": 12}');
    await editor.locator('.live-errors').getByText(/header_name wrong type: expected string/).waitFor();
    await page.getByRole('button', { name: 'Save' }).click();
    const fieldError = editor.locator('#plugin-request-id-header_name-error');
    await fieldError.waitFor();
    const shown = (await fieldError.textContent()) ?? '';
    const res = await gw.admin('PUT', '/routes/probe', { uri: '/probe', plugins: { 'request-id': { header_name: 12 } } });
    assert.equal(res.status, 400);
    assert.equal(shown, res.json.error_msg, 'the Admin API\'s message, verbatim');
    assert.match(shown, /plugin request-id.*property "header_name"/);
    await shot('plugin-error');
    const stored = (await gw.admin('GET', '/routes')).json.list.find((i: { value: { name?: string } }) => i.value.name === 'hello-fn').value;
    assert.equal(stored.plugins['request-id'], undefined);
    // Fixed through the form: saved.
    await editor.getByLabel('header_name').fill('X-Req');
    await save(page);
    await waitFor(async () => {
      const r = await gw.fetch('/dash/x');
      return r.headers.get('x-req') !== null;
    });
  });

  test('list: a stored <img onerror> name is text, search, disable, delete (the function route too)', async () => {
    const xss = await gw.admin('PUT', '/routes/xss', { name: XSS_NAME, uri: '/xss', plugins: { openfunction: { function_uri: fns.urls['function-sample'] } } });
    assert.equal(xss.status, 201, xss.text);
    await page.getByRole('navigation').getByRole('button', { name: 'Routes' }).click();
    const row = page.locator('tr[data-id="xss"]');
    await row.waitFor();
    assert.equal(await row.locator('.item-name').textContent(), XSS_NAME);
    assert.equal(await page.locator('main img').count(), 0, 'no element made of the stored name');
    assert.equal(await page.evaluate(() => (window as { __xss?: number }).__xss), undefined);

    await page.getByLabel('Name contains').fill('hello');
    await page.getByRole('button', { name: 'Search' }).click();
    await page.locator('tr[data-id="xss"]').waitFor({ state: 'detached' });
    assert.equal(await page.locator('tbody tr').count(), 1);
    await shot('routes');
    await page.getByLabel('Name contains').fill('');
    await page.getByRole('button', { name: 'Search' }).click();
    await row.waitFor();

    await page.getByRole('button', { name: 'Disable xss' }).click();
    await page.getByRole('button', { name: 'Enable xss' }).waitFor();
    assert.equal((await gw.admin('GET', '/routes/xss')).json.value.status, 0);
    await page.getByRole('button', { name: 'Delete xss' }).click();
    await page.getByRole('button', { name: 'Really delete xss' }).click();
    await row.waitFor({ state: 'detached' });
    assert.equal((await gw.admin('GET', '/routes/xss')).status, 404);
    // And the function route made through the form: gone from the proxy too.
    const id = await page.locator('tbody tr', { hasText: 'hello-fn' }).getAttribute('data-id');
    await page.getByRole('button', { name: `Delete ${id}`, exact: true }).click();
    await page.getByRole('button', { name: `Really delete ${id}` }).click();
    await page.locator(`tr[data-id="${id}"]`).waitFor({ state: 'detached' });
    await waitFor(async () => (await gw.fetch('/dash/world')).status === 404);
  });

  test('a route with a plugin this gateway does not know is shown and editable as JSON, not dropped', async () => {
    // Written into the store as another gateway of the fleet (a newer APISIX) would: the Admin API refuses it.
    assert.equal((await gw.admin('PUT', '/routes/future', { uri: '/future', plugins: { 'x-future': { a: 1 } } })).status, 400);
    const file = join(gw.dataDir, 'config.json');
    const state = JSON.parse(await readFile(file, 'utf8')) as {
      revision: number;
      items: { key: string; value: Record<string, unknown>; createdIndex: number; modifiedIndex: number }[];
    };
    const revision = state.revision + 1;
    state.items.push({
      key: '/apisix/routes/future',
      value: { id: 'future', name: 'future-fn', uri: '/future', plugins: { 'x-future': { a: 1 } } },
      createdIndex: revision,
      modifiedIndex: revision,
    });
    state.revision = revision;
    await writeFile(`${file}.tmp`, JSON.stringify(state));
    await rename(`${file}.tmp`, file);
    await waitFor(async () => (await gw.admin('GET', '/routes/future')).status === 200);

    await page.getByRole('navigation').getByRole('button', { name: 'Routes' }).click();
    await page.getByRole('button', { name: 'Edit future' }).click();
    const editor = page.locator('fieldset[data-plugin="x-future"]');
    await editor.getByText('does not know this plugin').waitFor();
    assert.deepEqual(JSON.parse(await editor.getByLabel('x-future configuration (JSON)').inputValue()), { a: 1 });
    await editor.getByLabel('x-future configuration (JSON)').fill('{"a": 2}');
    await page.getByRole('button', { name: 'Save' }).click();
    // The Admin API refuses the unknown plugin; the message names it and is shown in its editor.
    await editor.getByText('unknown plugin [x-future]').waitFor();
    await editor.getByRole('button', { name: 'Remove plugin x-future' }).click();
    await save(page);
    assert.deepEqual((await gw.admin('GET', '/routes/future')).json.value.plugins, {});
  });

  test('other kinds: a consumer with a credential, an upstream, at 360 px', async () => {
    const p = await context.newPage();
    await p.setViewportSize({ width: 360, height: 740 });
    await p.goto(`${gw.adminUrl}/ui/`);
    // Same tab session? A new page of the context shares sessionStorage only when opened from the page; sign in.
    if ((await p.getByLabel('Admin key').count()) > 0) {
      await p.getByLabel('Admin key').fill(gw.key);
      await p.getByRole('button', { name: 'Sign in' }).click();
    }
    await p.getByRole('navigation').getByRole('button', { name: 'Consumers' }).click();
    await p.getByRole('heading', { name: 'Consumers' }).waitFor();
    await clickNew(p);
    await p.getByLabel('Consumers fields (JSON)').fill('{"username": "jack", "desc": "<b>bold?</b>"}');
    await save(p, /^Saved \/apisix\/consumers\/jack$/);
    await p.getByRole('button', { name: 'New credential' }).click();
    await p.getByLabel('ID').fill('cred-1');
    await p.getByLabel('Add a plugin').selectOption('key-auth');
    await p.getByRole('button', { name: 'Add', exact: true }).click();
    await p.locator('fieldset[data-plugin="key-auth"]').getByLabel('key (required)').fill('jack-secret-key');
    await save(p, /^Saved \/apisix\/consumers\/jack\/credentials\/cred-1/);
    const cred = await gw.admin('GET', '/consumers/jack/credentials/cred-1');
    assert.equal(cred.status, 200, cred.text);
    assert.equal(cred.json.value.plugins['key-auth'].key, 'jack-secret-key');
    await p.getByRole('button', { name: 'Back' }).click();
    await p.getByRole('button', { name: 'Delete credential cred-1' }).waitFor();
    await shot('consumer-360px', p);
    const scroll = await p.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(scroll <= 360, `no horizontal scrolling at 360 px (page is ${scroll} px wide)`);
    await p.close();
  });

  test('keyboard only, labels on every control, every kind lists without an error, dark scheme', async () => {
    const dark = await browser.newContext({ viewport: { width: 1000, height: 700 }, colorScheme: 'dark' });
    dark.setDefaultTimeout(10_000);
    const p = await dark.newPage();
    p.on('pageerror', (e) => consoleErrors.push(e.message));
    await p.goto(`${gw.adminUrl}/ui/`);
    // Sign in without a mouse: Tab to the key field, type, Enter.
    await p.keyboard.press('Tab');
    assert.equal(await p.evaluate(() => document.activeElement?.id), 'admin-key');
    await p.keyboard.type(gw.key);
    await p.keyboard.press('Enter');
    await p.getByRole('heading', { name: 'Routes' }).waitFor();
    const bg = await p.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert.equal(bg, 'rgb(15, 20, 25)', 'prefers-color-scheme: dark');
    // Open a route's editor by keyboard: focus its Edit button, Enter.
    await p.getByRole('button', { name: 'Edit future' }).focus();
    await p.keyboard.press('Enter');
    await p.getByLabel('Path', { exact: true }).waitFor();
    const unlabelled = await p.evaluate(() =>
      [...document.querySelectorAll('input, select, textarea')]
        .filter((el) => (el as HTMLInputElement).labels?.length === 0 && !el.getAttribute('aria-label'))
        .map((el) => el.outerHTML),
    );
    assert.deepEqual(unlabelled, []);
    await shot('route-dark', p);
    for (const kind of ['Routes', 'Upstreams', 'Services', 'Consumers', 'Consumer groups', 'Plugin configs', 'Global rules', 'Plugin metadata']) {
      await p.getByRole('navigation').getByRole('button', { name: kind, exact: true }).click();
      await p.getByRole('heading', { name: kind, exact: true }).waitFor();
      await p.locator('table').waitFor();
      assert.equal(await p.locator('main .error').count(), 0, `${kind}: ${await p.locator('main .error').allTextContents()}`);
    }
    await dark.close();
  });

  test('paging and the URI filter are the Admin API\'s own (page_size 10)', async () => {
    for (let i = 1; i <= 12; i++) {
      await gw.putRoute(`page-${i}`, { uri: `/page/${i}`, plugins: { openfunction: { function_uri: fns.urls['function-sample'] } } });
    }
    const total = (await gw.admin('GET', '/routes')).json.total as number;
    await page.getByRole('navigation').getByRole('button', { name: 'Routes' }).click();
    await page.getByText(`Page 1 of ${Math.ceil(total / 10)} (${total} in all)`).waitFor();
    assert.equal(await page.locator('tbody tr').count(), 10);
    await page.getByRole('button', { name: 'Next' }).click();
    await page.getByText(`Page 2 of ${Math.ceil(total / 10)}`).waitFor();
    await page.getByLabel('URI contains').fill('^/page/1');
    await page.getByRole('button', { name: 'Search' }).click();
    await page.getByText('Page 1 of 1 (4 in all)').waitFor();
    assert.deepEqual((await page.locator('tbody tr').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-id')))).sort(), [
      'page-1',
      'page-10',
      'page-11',
      'page-12',
    ]);
  });

  test('plugin metadata: the metadata schema\'s live errors, then saved', async () => {
    await page.getByRole('navigation').getByRole('button', { name: 'Plugin metadata' }).click();
    await clickNew(page);
    await page.getByLabel('Plugin', { exact: true }).selectOption('cors');
    const json = page.getByLabel('Plugin metadata fields (JSON)');
    await json.fill('{"allow_origins": 5}');
    await page.locator('.live-errors').getByText('allow_origins wrong type: expected object, got number').waitFor();
    await json.fill('{"allow_origins": {"dash": "http://a.example"}}');
    await page.locator('.live-errors').waitFor({ state: 'detached' });
    await save(page, /^Saved \/apisix\/plugin_metadata\/cors$/);
    assert.deepEqual((await gw.admin('GET', '/plugin_metadata/cors')).json.value.allow_origins, { dash: 'http://a.example' });
  });

  test('metrics view: per-route requests, errors and latency from the export server, which lets only this origin read it', async () => {
    await gw.putRoute('metered', {
      name: 'metered-fn',
      uri: '/metered/*',
      plugins: { prometheus: {}, openfunction: { function_uri: fns.urls['function-sample'] } },
    });
    // An upstream nobody listens on: 502s, counted as errors.
    const closed = await freePort();
    await gw.putRoute('metered-down', {
      uri: '/metered-down',
      plugins: { prometheus: {} },
      upstream: { type: 'roundrobin', nodes: { [`127.0.0.1:${closed}`]: 1 } },
    });
    for (let i = 0; i < 3; i++) assert.equal((await gw.fetch(`/metered/m${i}`)).status, 200);
    for (let i = 0; i < 2; i++) assert.equal((await gw.fetch('/metered-down')).status, 502);

    // Outside the browser: CORS for the Admin API's origin, none for another page's.
    const adminOrigin = new URL(gw.adminUrl).origin;
    const mine = await fetch(metricsUrl, { headers: { origin: adminOrigin } });
    assert.equal(mine.headers.get('access-control-allow-origin'), adminOrigin);
    assert.equal(mine.headers.get('vary'), 'Origin');
    await mine.text();
    const other = await fetch(metricsUrl, { headers: { origin: 'http://evil.example' } });
    assert.equal(other.headers.get('access-control-allow-origin'), null);
    await other.text();

    // The default URL is this host's port 9091; this gateway's export server is on another port. The setting is read
    // from localStorage when the view opens (it loads at once), as an edit in the view stores it (below).
    assert.equal(await page.evaluate(() => localStorage.getItem('fngate.metricsUrl')), null);
    await page.evaluate((url) => localStorage.setItem('fngate.metricsUrl', url), metricsUrl);
    await page.getByRole('navigation').getByRole('button', { name: 'Metrics' }).click();
    await page.getByRole('heading', { name: 'Metrics per route' }).waitFor();
    assert.equal(await page.getByLabel('Metrics URL').inputValue(), metricsUrl);
    const row = page.locator('#metrics-table tr[data-route="metered"]');
    await row.waitFor();
    assert.equal(await row.locator('td.requests').textContent(), '3');
    const cells = await row.locator('td').allTextContents();
    assert.deepEqual(cells.slice(0, 5), ['metered', '3', '0', '0', '0.0 %']);
    assert.match(cells[5]!, /^\d+(\.\d)?$/, `p50 ${cells[5]}`);
    const down = await page.locator('#metrics-table tr[data-route="metered-down"] td').allTextContents();
    assert.deepEqual(down.slice(0, 5), ['metered-down', '2', '0', '2', '100.0 %']);
    await shot('metrics');
    // Refreshed on demand: one more request is seen after Refresh.
    await gw.fetch('/metered/again');
    await page.getByRole('button', { name: 'Refresh' }).click();
    await waitFor(async () => (await row.locator('td.requests').textContent()) === '4');

    // Nothing listening there (PROMETHEUS_PORT off, Workers): the reason, not a table. Its own page, since the
    // browser logs the refused connection as a console error.
    const p = await context.newPage();
    await p.goto(`${gw.adminUrl}/ui/`);
    if ((await p.getByLabel('Admin key').count()) > 0) {
      await p.getByLabel('Admin key').fill(gw.key);
      await p.getByRole('button', { name: 'Sign in' }).click();
    }
    await p.getByRole('navigation').getByRole('button', { name: 'Metrics' }).click();
    await p.locator('#metrics-table').waitFor();
    const off = `http://127.0.0.1:${closed}/apisix/prometheus/metrics`;
    await p.getByLabel('Metrics URL').fill(off);
    await p.getByRole('button', { name: 'Refresh' }).click();
    const error = p.locator('#metrics-error');
    await error.waitFor();
    assert.match((await error.textContent()) ?? '', /^metrics unavailable \(http:\/\/127\.0\.0\.1:\d+\/apisix\/prometheus\/metrics could not be read/);
    assert.equal(await p.locator('#metrics-table').count(), 0);
    assert.equal(await p.evaluate(() => localStorage.getItem('fngate.metricsUrl')), off, 'an edited URL is stored');
    await p.close();
  });

  test('no console errors and no CSP violations in any page', () => {
    assert.deepEqual(consoleErrors.filter((e) => !/status of 40[014]/.test(e)), []);
  });
});

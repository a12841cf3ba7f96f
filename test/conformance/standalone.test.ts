// biome-ignore-all lint/suspicious/noTemplateCurlyInString: these tests are about APISIX's ${{VAR}} references
/**
 * Standalone mode on every runtime: CONFIG_FILE (an APISIX `apisix.yaml`) is served, with `${{VAR}}` substitution,
 * the Admin API reads it and refuses writes, and (where there is a file to watch) an edit is served without a
 * restart while a broken edit keeps the last good config. On Workers the launcher hands the file to the Worker as
 * the STANDALONE_CONFIG var, as a deploy would. Node-only depth (ConfigMap symlinks, JSON, refusing to start,
 * no failed request during reloads): test/e2e/standalone.test.ts.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type FunctionServers, startFunctions } from '../functions/functions.ts';
import { rmDir, tmpDir, waitFor } from '../helpers/process.ts';
import { type GatewayUnderTest, RUNTIME, startGateway } from './harness.ts';

/** The longest a change of the file may take to be served (the file is polled every second). */
const RELOAD_MS = 3000;
const WORKERS_NO_FILE =
  'Workers: the config is the STANDALONE_CONFIG var, read once per isolate; it changes only with a new deploy ' +
  '(there is no file to watch)';

let fns: FunctionServers;
let dir: string;
let file: string;
let gw: GatewayUnderTest;

/** A function route whose greeting comes from `${{FNGATE_GREETING}}`, and a route on a named upstream. */
function yamlConfig(opts: { greeting?: string; extraRoute?: string } = {}): string {
  return `# APISIX conf/apisix.yaml format
upstreams:
  - id: up-echo
    type: roundrobin
    nodes:
      "127.0.0.1:${fns.ports.echo}": 1
routes:
  - id: fn
    uri: /hello
    plugins:
      openfunction:
        function_uri: "${fns.urls['function-sample']}/default/function-sample/${opts.greeting ?? '${{FNGATE_GREETING}}'}"
        authorization:
          service_token: "test:test"
  - id: up
    uri: /echo/*
    upstream_id: up-echo
${opts.extraRoute ?? ''}#END
`;
}

/** Replace the file atomically (write a temp file, rename it over), as editors and config tools do. */
async function replaceFile(text: string): Promise<void> {
  const tmp = `${file}.tmp-${randomBytes(4).toString('hex')}`;
  await writeFile(tmp, text);
  await rename(tmp, file);
}

const hello = async () => (await gw.fetch('/hello')).text();

before(async () => {
  fns = await startFunctions();
  dir = await tmpDir('fngate-conf-standalone-');
  file = join(dir, 'apisix.yaml');
  await writeFile(file, yamlConfig());
  gw = await startGateway({ env: { CONFIG_FILE: file, FNGATE_GREETING: 'conformance' } });
});
after(async () => {
  await gw?.stop();
  await fns?.close();
  if (dir) await rmDir(dir);
});

describe('CONFIG_FILE (Workers: STANDALONE_CONFIG)', () => {
  test('the routes of the file are served, ${{VAR}} substituted from the environment', async () => {
    assert.equal(await hello(), 'Hello, conformance!');
    const viaId = await gw.fetch('/echo/a/b?q=1');
    assert.equal(viaId.status, 200);
    const echo = (await viaId.json()) as { url: string };
    assert.equal(echo.url, '/echo/a/b?q=1', 'upstream_id route');
    assert.equal((await gw.fetch('/nope')).status, 404);
  });

  test('the Admin API reads the config: GET lists and fetches routes and upstreams; the key is still needed', async () => {
    const list = await gw.admin('GET', '/routes');
    assert.equal(list.status, 200, list.text);
    assert.deepEqual(list.json.list.map((i: { value: { id: string } }) => i.value.id).sort(), ['fn', 'up']);
    const fn = await gw.admin('GET', '/routes/fn');
    assert.equal(fn.status, 200, fn.text);
    assert.equal(fn.json.key, '/apisix/routes/fn');
    assert.ok(fn.json.value.plugins.openfunction.function_uri.endsWith('/default/function-sample/conformance'));
    const up = await gw.admin('GET', '/upstreams/up-echo');
    assert.deepEqual(up.json.value.nodes, { [`127.0.0.1:${fns.ports.echo}`]: 1 });
    assert.equal((await gw.admin('GET', '/routes/none')).status, 404);
    const anon = await fetch(`${gw.adminUrl}/apisix/admin/routes`);
    assert.equal(anon.status, 401);
    await anon.arrayBuffer();
  });

  test('writes are refused with 405 and an error_msg naming where the config comes from; nothing changes', async () => {
    const where = RUNTIME === 'workerd' ? 'STANDALONE_CONFIG' : file;
    const writes: [string, string, unknown][] = [
      ['PUT', '/routes/fn', { uri: '/hijack', upstream: { nodes: { '127.0.0.1:1': 1 } } }],
      ['POST', '/routes', { uri: '/posted', upstream: { nodes: { '127.0.0.1:1': 1 } } }],
      ['PATCH', '/routes/fn', { uri: '/patched' }],
      ['DELETE', '/routes/fn', undefined],
      ['PUT', '/upstreams/up-echo', { nodes: { '127.0.0.1:1': 1 } }],
    ];
    for (const [method, path, payload] of writes) {
      const res = await gw.admin(method, path, payload);
      assert.equal(res.status, 405, `${method} ${path}: ${res.text}`);
      assert.ok(
        res.json?.error_msg?.includes(where),
        `${method} ${path}: error_msg does not name ${where}: ${res.text}`,
      );
    }
    assert.equal(await hello(), 'Hello, conformance!');
    for (const p of ['/hijack', '/posted', '/patched']) assert.equal((await gw.fetch(p)).status, 404, p);
    assert.equal((await gw.admin('GET', '/routes')).json.total, 2);
  });

  test('nothing is written to DATA_DIR (Deno: the gateway runs without --allow-write)', {
    skip: RUNTIME === 'workerd' && "Workers: DATA_DIR holds Miniflare's local state, not fngate's",
  }, async () => {
    assert.deepEqual(await readdir(gw.dataDir), []);
  });

  test('an edit of the file is served within 3 s without a restart; a route added and removed', {
    skip: RUNTIME === 'workerd' && WORKERS_NO_FILE,
  }, async () => {
    await writeFile(file, yamlConfig({ greeting: 'edited' })); // in place
    await waitFor(async () => (await hello()) === 'Hello, edited!', { timeoutMs: RELOAD_MS, message: 'in-place edit' });
    const extra = '  - id: added\n    uri: /added\n    upstream_id: up-echo\n';
    await replaceFile(yamlConfig({ greeting: 'renamed', extraRoute: extra })); // atomic rename
    await waitFor(async () => (await gw.fetch('/added')).status === 200, {
      timeoutMs: RELOAD_MS,
      message: 'added route',
    });
    assert.equal(await hello(), 'Hello, renamed!');
    assert.equal((await gw.admin('GET', '/routes/added')).status, 200);
    await replaceFile(yamlConfig());
    await waitFor(async () => (await gw.fetch('/added')).status === 404, {
      timeoutMs: RELOAD_MS,
      message: 'removed route',
    });
    assert.equal(await hello(), 'Hello, conformance!');
  });

  test('a broken edit keeps the last good config serving and is reported; the fixed file is applied', {
    skip: RUNTIME === 'workerd' && WORKERS_NO_FILE,
  }, async () => {
    const before = gw.proc.stderr().length;
    await replaceFile('routes:\n  - id: fn\n    uri: [/hello\n    upstream_id: : :\n#END\n');
    await new Promise((r) => setTimeout(r, 2000)); // two poll periods
    assert.equal(await hello(), 'Hello, conformance!');
    assert.equal((await gw.admin('GET', '/routes')).json.total, 2);
    // LOG_LEVEL is warn in the harness: errors are still logged.
    const log = gw.proc.stderr().slice(before);
    assert.match(log, /keeping the previous config/, `no error reported:\n${log}`);
    assert.ok(log.includes(file), `the report does not name the file:\n${log}`);
    await replaceFile(yamlConfig({ greeting: 'fixed' }));
    await waitFor(async () => (await hello()) === 'Hello, fixed!', { timeoutMs: RELOAD_MS, message: 'fixed file' });
  });
});

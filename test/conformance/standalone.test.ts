// biome-ignore-all lint/suspicious/noTemplateCurlyInString: these tests are about APISIX's ${{VAR}} references
/**
 * Standalone mode on every runtime: CONFIG_FILE (an APISIX `apisix.yaml`) is served, with `${{VAR}}` substitution,
 * the Admin API reads it and refuses writes, and (where there is a file to watch) an edit is served without a
 * restart while a broken edit keeps the last good config, with no request failing meanwhile. On Workers the
 * launcher hands the file to the Worker as the STANDALONE_CONFIG var, as a deploy would. Node-only depth (ConfigMap
 * symlinks, JSON, `${{VAR:=default}}`, refusing to start, many edits under load, a request in flight across a
 * reload, a deleted file, an invalid route): test/e2e/standalone.test.ts.
 */
import assert from 'node:assert/strict';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type FunctionServers, startFunctions } from '../functions/functions.ts';
import { rmDir, tmpDir, waitFor } from '../helpers/process.ts';
import { replaceFile as replace, type StandaloneYamlOptions, standaloneYaml } from '../helpers/standalone.ts';
import { type GatewayUnderTest, hammer, RUNTIME, startGateway } from './harness.ts';

/** The longest a change of the file may take to be served (the file is polled every second). */
const RELOAD_MS = 3000;
const WORKERS_NO_FILE =
  'Workers: the config is the STANDALONE_CONFIG var, read once per isolate; it changes only with a new deploy ' +
  '(there is no file to watch)';

let fns: FunctionServers;
let dir: string;
let file: string;
let gw: GatewayUnderTest;

/** The `/hello` function's greeting comes from `${{FNGATE_GREETING}}` unless `greeting` says otherwise. */
const yamlConfig = (opts: StandaloneYamlOptions = {}) => standaloneYaml(fns, opts);
const replaceFile = (text: string) => replace(file, text);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

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
    const res = await gw.fetch('/hello');
    assert.equal(res.status, 200);
    assert.equal(await res.text(), 'Hello, conformance!');
    const viaId = await gw.fetch('/echo/a/b?q=1');
    assert.equal(viaId.status, 200);
    assert.equal(((await viaId.json()) as { url: string }).url, '/echo/a/b?q=1', 'upstream_id route');
    const inline = await gw.fetch('/inline');
    assert.equal(inline.status, 200);
    assert.equal(((await inline.json()) as { url: string }).url, '/inline', 'inline upstream');
    assert.equal((await gw.fetch('/nope')).status, 404);
  });

  test('the Admin API reads the config: GET lists and fetches routes and upstreams; the key is still needed', async () => {
    const list = await gw.admin('GET', '/routes');
    assert.equal(list.status, 200, list.text);
    assert.equal(list.json.total, 3);
    assert.deepEqual(list.json.list.map((i: { value: { id: string } }) => i.value.id).sort(), ['fn', 'inline', 'up']);
    const fn = await gw.admin('GET', '/routes/fn');
    assert.equal(fn.status, 200, fn.text);
    assert.equal(fn.json.key, '/apisix/routes/fn');
    assert.equal(fn.json.value.uri, '/hello');
    assert.ok(fn.json.value.plugins.openfunction.function_uri.endsWith('/default/function-sample/conformance'));
    const up = await gw.admin('GET', '/upstreams/up-echo');
    assert.equal(up.status, 200, up.text);
    assert.deepEqual(up.json.value.nodes, { [`127.0.0.1:${fns.ports.echo}`]: 1 });
    assert.equal((await gw.admin('GET', '/routes/none')).status, 404);
    const anon = await fetch(`${gw.adminUrl}/apisix/admin/routes`);
    assert.equal(anon.status, 401, 'standalone mode still needs the admin key');
    await anon.arrayBuffer();
  });

  test('writes are refused with 405 and an error_msg naming where the config comes from; nothing changes', async () => {
    const upstream = { type: 'roundrobin', nodes: { '127.0.0.1:1': 1 } };
    const writes: [string, string, unknown][] = [
      ['PUT', '/routes/fn', { uri: '/hijack', upstream }],
      ['PUT', '/routes/new', { uri: '/new', upstream }],
      ['POST', '/routes', { uri: '/posted', upstream }],
      ['PATCH', '/routes/fn', { uri: '/patched' }],
      ['PATCH', '/routes/fn/uri', '"/patched"'],
      ['DELETE', '/routes/fn', undefined],
      ['PUT', '/upstreams/up-echo', upstream],
      ['DELETE', '/upstreams/up-echo', undefined],
    ];
    for (const [method, path, payload] of writes) {
      const res = await gw.admin(method, path, payload);
      assert.equal(res.status, 405, `${method} ${path}: ${res.text}`);
      assert.equal(typeof res.json?.error_msg, 'string', `${method} ${path}: ${res.text}`);
      const msg: string = res.json.error_msg;
      if (RUNTIME === 'workerd') {
        assert.ok(msg.includes('STANDALONE_CONFIG'), `${method} ${path}: error_msg does not name the var: ${msg}`);
      } else {
        assert.match(msg, /CONFIG_FILE/, `${method} ${path}`);
        assert.ok(msg.includes(file), `${method} ${path}: error_msg does not name ${file}: ${msg}`);
      }
    }
    assert.equal(await hello(), 'Hello, conformance!');
    assert.equal((await gw.fetch('/echo/x')).status, 200);
    for (const p of ['/hijack', '/new', '/posted', '/patched']) assert.equal((await gw.fetch(p)).status, 404, p);
    assert.equal((await gw.admin('GET', '/routes')).json.total, 3);
    assert.equal(await readFile(file, 'utf8'), yamlConfig(), 'the gateway wrote to CONFIG_FILE');
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
    assert.equal((await gw.admin('GET', '/routes/added')).status, 404);
    assert.equal(await hello(), 'Hello, conformance!');
  });

  test('a broken edit keeps the last good config serving, no request failing, and is reported; the fixed file is applied', {
    skip: RUNTIME === 'workerd' && WORKERS_NO_FILE,
  }, async () => {
    const before = gw.proc.stderr().length;
    const load = hammer(gw, ['/hello', '/echo/x'], (path, text) =>
      path === '/hello' ? text === 'Hello, conformance!' : JSON.parse(text).url === path,
    );
    // A real syntax error (with the end flag, so that only the YAML parser can refuse it).
    await replaceFile('routes:\n  - id: fn\n    uri: [/hello\n    upstream_id: : :\n#END\n');
    await sleep(2000); // two poll periods
    // A half-written file: no end flag.
    await writeFile(file, yamlConfig({ greeting: 'half' }).slice(0, 200));
    await sleep(1500);
    const { sent, failures } = await load.stop();
    assert.deepEqual(failures.slice(0, 10), [], `${failures.length} of ${sent} requests failed with a broken file`);
    assert.equal(await hello(), 'Hello, conformance!');
    assert.equal((await gw.admin('GET', '/routes')).json.total, 3);
    // LOG_LEVEL is warn in the harness: errors are still logged.
    const log = gw.proc.stderr().slice(before);
    assert.match(log, /keeping the previous config/, `no error reported:\n${log}`);
    assert.ok(log.includes(file), `the report does not name the file:\n${log}`);
    await replaceFile(yamlConfig({ greeting: 'fixed' }));
    await waitFor(async () => (await hello()) === 'Hello, fixed!', { timeoutMs: RELOAD_MS, message: 'fixed file' });
  });
});

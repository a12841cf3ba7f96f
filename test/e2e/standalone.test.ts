// Standalone mode, Node-only depth: CONFIG_FILE (APISIX `conf/apisix.yaml` / `apisix.json`) served by the Node
// gateway process, hot reload on file change without dropping requests, and refusal to start on a bad file. What
// holds on every runtime (the file served, the read-only Admin API, an edit applied, a broken edit kept out under
// load): test/conformance/standalone.test.ts, which runs on Node too.
// Run: npm run build && node --import tsx --test --test-concurrency=1 test/e2e/standalone.test.ts
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type GatewayUnderTest, hammer, ROOT, startGateway } from '../conformance/harness.ts';
import { type FunctionServers, startFunctions } from '../functions/functions.ts';
import { rmDir, startProcess, tmpDir, waitFor } from '../helpers/process.ts';
import { replaceFile, type StandaloneYamlOptions, standaloneYaml } from '../helpers/standalone.ts';

const GATEWAY = join(ROOT, 'dist/runtime/node.js');
/** The longest a change of the file may take to be served (APISIX polls every second). */
const RELOAD_MS = 3000;

/** `${{NAME}}` / `${{NAME:=default}}`: APISIX's environment reference in a config file. */
const envRef = (name: string, dflt?: string) => `\${{${name}${dflt === undefined ? '' : `:=${dflt}`}}}`;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

let fns: FunctionServers;
let dir: string;
before(async () => {
  fns = await startFunctions();
  dir = await tmpDir('fngate-e2e-standalone-');
});
after(async () => {
  await fns?.close();
  if (dir) await rmDir(dir);
});

let fileCounter = 0;
/** A fresh file name in the test directory. */
const newPath = (ext: string) => join(dir, `apisix-${++fileCounter}.${ext}`);

/** The shared config (test/helpers/standalone.ts), greeting `test` unless told otherwise. */
const yamlConfig = (opts: StandaloneYamlOptions = {}) => standaloneYaml(fns, { greeting: 'test', ...opts });

async function body(res: Response): Promise<string> {
  return res.text();
}

/** Run the gateway until it exits by itself (a start-up failure); fails if it is still running after `timeoutMs`. */
async function runToExit(env: Record<string, string | undefined>, timeoutMs = 8000) {
  const dataDir = await tmpDir('fngate-e2e-standalone-data-');
  const proc = await startProcess({
    cmd: process.execPath,
    args: [GATEWAY],
    env: {
      HOST: '127.0.0.1',
      PROXY_PORT: '0',
      ADMIN_HOST: '127.0.0.1',
      ADMIN_PORT: '0',
      ADMIN_KEY: randomBytes(16).toString('hex'),
      DATA_DIR: dataDir,
      ...env,
    },
    cwd: ROOT,
  });
  let timer: NodeJS.Timeout | undefined;
  const res = await Promise.race([
    proc.waitExit(),
    new Promise<'timeout'>((r) => {
      timer = setTimeout(() => r('timeout'), timeoutMs);
    }),
  ]);
  clearTimeout(timer);
  await rmDir(dataDir);
  if (res === 'timeout') {
    await proc.kill('SIGKILL');
    assert.fail(`the gateway did not exit within ${timeoutMs} ms:\n${proc.stdout()}\n${proc.stderr()}`);
  }
  return { ...res, stdout: proc.stdout(), stderr: proc.stderr() };
}

describe('YAML CONFIG_FILE', () => {
  let gw: GatewayUnderTest;
  let file: string;

  before(async () => {
    file = newPath('yaml');
    await writeFile(file, yamlConfig());
    gw = await startGateway({ env: { CONFIG_FILE: file } });
  });
  after(async () => {
    if (!gw) return;
    const exit = await gw.proc.kill('SIGTERM');
    assert.deepEqual(exit, { code: 0, signal: null }, `SIGTERM in standalone mode:\n${gw.proc.stderr()}`);
    await rmDir(gw.dataDir);
  });

  test('edits of the file are served within 3 s without a restart, and no request fails during the reloads', async (t) => {
    const greetings = ['world', 'fngate', 'again', 'apisix', 'one', 'two', 'three', 'four', 'five', 'last'];
    const valid = new Set(['Hello, test!', ...greetings.map((g) => `Hello, ${g}!`)]);
    const load = hammer(gw, ['/hello', '/echo/x', '/inline'], (path, text) =>
      path === '/hello' ? valid.has(text) : JSON.parse(text).url === path,
    );
    try {
      for (const [i, g] of greetings.entries()) {
        const text = yamlConfig({ greeting: g });
        const written = Date.now();
        // Alternate an in-place rewrite (truncate + write: a reader can see it half-written) and an atomic rename.
        if (i % 2 === 0) await writeFile(file, text);
        else await replaceFile(file, text);
        await waitFor(async () => (await body(await gw.fetch('/hello'))) === `Hello, ${g}!`, {
          timeoutMs: RELOAD_MS,
          intervalMs: 25,
          message: `edit ${i} (${i % 2 === 0 ? 'in place' : 'rename'}) not served`,
        });
        t.diagnostic(`edit ${i} (${i % 2 === 0 ? 'in place' : 'rename'}) served after ${Date.now() - written} ms`);
        await sleep(150); // keep the load on a little after each switch
      }
    } finally {
      const { sent, failures } = await load.stop();
      t.diagnostic(`${sent} requests during the reloads`);
      assert.deepEqual(failures.slice(0, 10), [], `${failures.length} of ${sent} requests failed during reloads`);
      assert.ok(sent > 200, `only ${sent} requests were sent`);
    }
    const fn = await gw.admin('GET', '/routes/fn');
    assert.ok(fn.json.value.plugins.openfunction.function_uri.endsWith('/last'), 'the Admin API shows the new config');
  });

  test('a request in flight when its route is removed from the file still completes', async () => {
    const slowRoute = `  - id: slow\n    uri: /slow\n    plugins:\n      openfunction:\n        function_uri: "${fns.urls.slow}/?delay=1200"\n`;
    await replaceFile(file, yamlConfig({ extraRoute: slowRoute }));
    await waitFor(async () => (await gw.admin('GET', '/routes/slow')).status === 200, { timeoutMs: RELOAD_MS });
    const inFlight = gw.fetch('/slow').then(async (r) => ({ status: r.status, text: await r.text() }));
    await sleep(200);
    await replaceFile(file, yamlConfig());
    await waitFor(async () => (await gw.admin('GET', '/routes/slow')).status === 404, { timeoutMs: RELOAD_MS });
    assert.deepEqual(await inFlight, { status: 200, text: 'slow done' });
    assert.equal((await gw.fetch('/slow')).status, 404);
  });

  test('the file deleted then created again: the old config serves meanwhile, the new one is applied', async () => {
    const { unlink } = await import('node:fs/promises');
    await unlink(file);
    await sleep(1500);
    assert.equal(await body(await gw.fetch('/hello')), 'Hello, test!', 'a deleted file dropped the config');
    await writeFile(file, yamlConfig({ greeting: 'recreated' }));
    await waitFor(async () => (await body(await gw.fetch('/hello'))) === 'Hello, recreated!', {
      timeoutMs: RELOAD_MS,
      message: 'the re-created file was not applied',
    });
    await replaceFile(file, yamlConfig());
    await waitFor(async () => (await body(await gw.fetch('/hello'))) === 'Hello, test!', { timeoutMs: RELOAD_MS });
  });

  test('an invalid route in the file is skipped; the others are served', async () => {
    const bad = '  - id: bad\n    uri: /bad\n    upstream:\n      type: no-such-balancer\n      nodes: 12\n';
    await replaceFile(file, yamlConfig({ greeting: 'partial', extraRoute: bad }));
    await waitFor(async () => (await body(await gw.fetch('/hello'))) === 'Hello, partial!', {
      timeoutMs: RELOAD_MS,
      message: 'a file with one invalid route was not applied at all',
    });
    assert.notEqual((await gw.fetch('/bad')).status, 200);
    assert.equal((await gw.fetch('/echo/x')).status, 200);
  });
});

describe('Kubernetes ConfigMap layout (CONFIG_FILE is a symlink through ..data)', () => {
  test('an atomic swap of the ..data symlink is served within 3 s', async () => {
    const { mkdir, symlink } = await import('node:fs/promises');
    const cm = join(dir, 'configmap');
    await mkdir(cm);
    // What the kubelet does: files in a timestamped directory, `..data` → it, `apisix.yaml` → `..data/apisix.yaml`.
    let generation = 0;
    const publish = async (text: string) => {
      const gen = `..gen_${++generation}`;
      await mkdir(join(cm, gen));
      await writeFile(join(cm, gen, 'apisix.yaml'), text);
      await symlink(gen, join(cm, '..data_tmp'));
      await rename(join(cm, '..data_tmp'), join(cm, '..data'));
    };
    await publish(yamlConfig({ greeting: 'cm1' }));
    await symlink('..data/apisix.yaml', join(cm, 'apisix.yaml'));
    const gw = await startGateway({ env: { CONFIG_FILE: join(cm, 'apisix.yaml') } });
    try {
      assert.equal(await body(await gw.fetch('/hello')), 'Hello, cm1!');
      await publish(yamlConfig({ greeting: 'cm2' }));
      await waitFor(async () => (await body(await gw.fetch('/hello'))) === 'Hello, cm2!', {
        timeoutMs: RELOAD_MS,
        message: 'the ConfigMap update was not served',
      });
    } finally {
      await gw.stop();
    }
  });
});

describe('JSON CONFIG_FILE', () => {
  test(`served, with ${envRef('VAR')} substitution, and reloaded on change`, async () => {
    const file = newPath('json');
    const config = (greeting: string) =>
      `${JSON.stringify(
        {
          routes: [
            {
              id: 1,
              uri: '/hello',
              plugins: {
                openfunction: {
                  function_uri: `${envRef('FN_URL')}/default/function-sample/${greeting}`,
                  authorization: { service_token: 'test:test' },
                },
              },
            },
            { id: 'up', uri: '/echo', upstream_id: 7 },
          ],
          upstreams: [{ id: 7, type: 'roundrobin', nodes: { [`127.0.0.1:${fns.ports.echo}`]: 1 } }],
        },
        null,
        2,
      )}\n`;
    await writeFile(file, config('json'));
    const gw = await startGateway({ env: { CONFIG_FILE: file, FN_URL: fns.urls['function-sample'] } });
    try {
      const hello = await gw.fetch('/hello');
      assert.equal(hello.status, 200);
      assert.equal(await body(hello), 'Hello, json!');
      const echo = await gw.fetch('/echo');
      assert.equal(echo.status, 200);
      assert.equal(JSON.parse(await body(echo)).url, '/echo');

      const r1 = await gw.admin('GET', '/routes/1');
      assert.equal(r1.status, 200, r1.text);
      assert.equal(r1.json.value.id, '1', 'numeric ids are stringified');
      const put = await gw.admin('PUT', '/routes/1', { uri: '/x', upstream_id: '7' });
      assert.equal(put.status, 405);
      assert.match(put.json.error_msg, /CONFIG_FILE/);

      await replaceFile(file, config('reloaded'));
      await waitFor(async () => (await body(await gw.fetch('/hello'))) === 'Hello, reloaded!', {
        timeoutMs: RELOAD_MS,
        message: 'JSON edit not served',
      });
      await replaceFile(file, '{"routes": [ {"id": 1, ');
      await sleep(1500);
      assert.equal(await body(await gw.fetch('/hello')), 'Hello, reloaded!', 'a broken JSON file replaced the config');
    } finally {
      await gw.stop();
    }
  });
});

describe('environment substitution in YAML', () => {
  test(`${envRef('FN_URL')} and ${envRef('VAR', 'default')} are replaced before parsing`, async () => {
    const file = newPath('yaml');
    await writeFile(
      file,
      yamlConfig({ fnUri: `${envRef('FN_URL')}/default/function-sample/${envRef('GREETING', 'env')}` }).replace(
        `"127.0.0.1:${fns.ports.echo}": 1\nroutes:`,
        `"${envRef('ECHO_NODE')}": 1\nroutes:`,
      ),
    );
    const gw = await startGateway({
      env: { CONFIG_FILE: file, FN_URL: fns.urls['function-sample'], ECHO_NODE: `127.0.0.1:${fns.ports.echo}` },
    });
    try {
      assert.equal(await body(await gw.fetch('/hello')), 'Hello, env!');
      const echo = await gw.fetch('/echo/sub');
      assert.equal(echo.status, 200);
      assert.equal(JSON.parse(await body(echo)).url, '/echo/sub');
      const fn = await gw.admin('GET', '/routes/fn');
      assert.equal(
        fn.json.value.plugins.openfunction.function_uri,
        `${fns.urls['function-sample']}/default/function-sample/env`,
      );
    } finally {
      await gw.stop();
    }
  });
});

describe('refusing to start', () => {
  test('a YAML file without #END → exit non-zero with a message about #END naming the file', async () => {
    const file = newPath('yaml');
    await writeFile(file, yamlConfig().replace('#END\n', ''));
    const res = await runToExit({ CONFIG_FILE: file });
    assert.notEqual(res.code, 0, `started without #END:\n${res.stdout}`);
    assert.match(res.stderr, /#END/);
    assert.ok(res.stderr.includes(file), res.stderr);
    assert.doesNotMatch(res.stdout, /listening on/);
  });

  test('a missing CONFIG_FILE → exit non-zero naming the file', async () => {
    const file = join(dir, 'does-not-exist.yaml');
    const res = await runToExit({ CONFIG_FILE: file });
    assert.notEqual(res.code, 0, `started without the file:\n${res.stdout}`);
    assert.ok(res.stderr.includes(file), res.stderr);
    assert.match(res.stderr, /ENOENT|not found|no such file/i);
  });

  test('a YAML syntax error at start → exit non-zero naming the file', async () => {
    const file = newPath('yaml');
    await writeFile(file, 'routes:\n  - id: 1\n    uri: [/x\n#END\n');
    const res = await runToExit({ CONFIG_FILE: file });
    assert.notEqual(res.code, 0, `started with a syntax error:\n${res.stdout}`);
    assert.ok(res.stderr.includes(file), res.stderr);
  });

  test(`an unset ${envRef('VAR')} → exit non-zero naming the variable`, async () => {
    const file = newPath('yaml');
    await writeFile(file, yamlConfig({ fnUri: `${envRef('FNGATE_E2E_UNSET_VAR')}/x` }));
    const res = await runToExit({ CONFIG_FILE: file, FNGATE_E2E_UNSET_VAR: undefined });
    assert.notEqual(res.code, 0, `started with an unset variable:\n${res.stdout}`);
    assert.match(res.stderr, /FNGATE_E2E_UNSET_VAR/);
  });

  test('an unknown file extension → exit non-zero with a clear message', async () => {
    const file = newPath('txt');
    await writeFile(file, yamlConfig());
    const res = await runToExit({ CONFIG_FILE: file });
    assert.notEqual(res.code, 0);
    assert.match(res.stderr, /\.yaml|\.json/);
  });
});

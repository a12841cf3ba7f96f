// The README walk-through, done the way a user does it: function servers from `test/functions/serve.ts
// --walkthrough`, the gateway from `node dist/runtime/node.js`, and curl-like requests (plain node:http, one
// connection per request, curl's default headers).
// Run: npm run build && node --import tsx --test --test-concurrency=1 test/e2e/walkthrough.test.ts
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type GatewayUnderTest, ROOT, startGateway } from '../conformance/harness.ts';
import { type FunctionServer, startFunction } from '../functions/functions.ts';
import { freePort, type Proc, rmDir, startProcess, tmpDir } from '../helpers/process.ts';

const GATEWAY = join(ROOT, 'dist/runtime/node.js');

/** Every setting `--help` must document (README configuration table). */
const ENV_VARS = [
  'HOST',
  'PROXY_PORT',
  'ADMIN_HOST',
  'ADMIN_PORT',
  'ADMIN_KEY',
  'DATA_DIR',
  'CONFIG_FILE',
  'ETCD_HOST',
  'ETCD_PREFIX',
  'ETCD_USER',
  'ETCD_PASSWORD',
  'LOG_LEVEL',
];

interface CurlResult {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/**
 * `curl -s [-X METHOD] [-H ...] [-d BODY] URL`: one fresh connection, curl's default headers; like curl `-d`, a
 * body goes out as `application/x-www-form-urlencoded` unless a Content-Type is given.
 */
function curl(url: string, opts: { method?: string; headers?: Record<string, string>; data?: string } = {}) {
  return new Promise<CurlResult>((resolve, reject) => {
    const headers: Record<string, string> = { 'user-agent': 'curl/8.5.0', accept: '*/*' };
    if (opts.data !== undefined) {
      headers['content-type'] = 'application/x-www-form-urlencoded';
      headers['content-length'] = String(Buffer.byteLength(opts.data));
    }
    for (const [k, v] of Object.entries(opts.headers ?? {})) headers[k.toLowerCase()] = v;
    const req = httpRequest(
      url,
      { method: opts.method ?? (opts.data === undefined ? 'GET' : 'POST'), headers, agent: false, timeout: 10_000 },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }),
        );
      },
    );
    req.on('timeout', () => req.destroy(new Error(`curl ${url}: timed out`)));
    req.on('error', reject);
    req.end(opts.data);
  });
}

/** Run the gateway with `env` (and `args`) until it exits by itself; fails if it is still running after `timeoutMs`. */
async function runToExit(env: Record<string, string | undefined>, args: string[] = [], timeoutMs = 10_000) {
  const proc = await startProcess({ cmd: process.execPath, args: [GATEWAY, ...args], env, cwd: ROOT });
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((r) => {
    timer = setTimeout(() => r('timeout'), timeoutMs);
  });
  const res = await Promise.race([proc.waitExit(), timeout]);
  clearTimeout(timer);
  if (res === 'timeout') {
    await proc.kill('SIGKILL');
    assert.fail(`the gateway was still running after ${timeoutMs} ms\n${proc.stdout()}\n${proc.stderr()}`);
  }
  return { ...res, stdout: proc.stdout(), stderr: proc.stderr() };
}

describe('README walk-through', () => {
  let functions: Proc;
  let functionPort: number;
  let echo: FunctionServer;
  let gw: GatewayUnderTest;

  before(async () => {
    // `npx tsx test/functions/serve.ts --walkthrough`, moved to a free port (the README's is 30583).
    functionPort = await freePort();
    functions = await startProcess({
      cmd: process.execPath,
      args: [
        '--import',
        'tsx',
        join(ROOT, 'test/functions/serve.ts'),
        '--walkthrough',
        '--base-port',
        String(functionPort),
      ],
      cwd: ROOT,
      readyLog: /test functions ready/,
      timeoutMs: 20_000,
    });
    assert.match(functions.stdout(), new RegExp(`function-sample\\s+http://127\\.0\\.0\\.1:${functionPort}`));
    echo = await startFunction('echo');
    // `npm start` with the default LOG_LEVEL, so that the output is what a user sees.
    gw = await startGateway({ env: { LOG_LEVEL: undefined } });
  });

  after(async () => {
    await gw?.stop();
    await functions?.kill('SIGTERM');
    await echo?.close();
  });

  test('the function answers on its own (curl the function_uri)', async () => {
    const res = await curl(`http://localhost:${functionPort}/default/function-sample/test`);
    assert.equal(res.status, 200);
    assert.equal(res.body, 'Hello, test!');
  });

  test('start-up prints the proxy and Admin API URLs', () => {
    const out = gw.proc.stdout();
    assert.ok(out.includes(`proxy listening on ${gw.proxyUrl}`), `proxy URL ${gw.proxyUrl} not in:\n${out}`);
    assert.ok(out.includes(`admin API listening on ${gw.adminUrl}`), `admin URL ${gw.adminUrl} not in:\n${out}`);
  });

  test('PUT route 1 with openfunction → 201, GET /hello → 200 "Hello, test!"', async () => {
    const data = JSON.stringify({
      uri: '/hello',
      plugins: {
        openfunction: {
          function_uri: `http://localhost:${functionPort}/default/function-sample/test`,
          authorization: { service_token: 'test:test' },
        },
      },
    });
    const put = await curl(`${gw.adminUrl}/apisix/admin/routes/1`, {
      method: 'PUT',
      headers: { 'X-API-KEY': gw.key },
      data,
    });
    assert.equal(put.status, 201, put.body);
    const doc = JSON.parse(put.body);
    assert.equal(doc.key, '/apisix/routes/1');
    assert.equal(doc.value.uri, '/hello');
    assert.equal(doc.value.id, '1');

    const hello = await curl(`${gw.proxyUrl}/hello`);
    assert.equal(hello.status, 200, hello.body);
    assert.equal(hello.body, 'Hello, test!');
  });

  test('PUT route 1 again with only an upstream → 200, GET /hello reaches the upstream with the path unchanged', async () => {
    const data = JSON.stringify({
      uri: '/hello',
      upstream: { type: 'roundrobin', nodes: { [`127.0.0.1:${echo.port}`]: 1 } },
    });
    const put = await curl(`${gw.adminUrl}/apisix/admin/routes/1`, {
      method: 'PUT',
      headers: { 'X-API-KEY': gw.key },
      data,
    });
    assert.equal(put.status, 200, put.body);
    const doc = JSON.parse(put.body);
    assert.equal(doc.value.plugins, undefined, 'PUT replaces the whole route: the openfunction plugin is gone');

    const hello = await curl(`${gw.proxyUrl}/hello?name=fngate`);
    assert.equal(hello.status, 200, hello.body);
    const seen = JSON.parse(hello.body);
    assert.equal(seen.method, 'GET');
    assert.equal(seen.url, '/hello?name=fngate');
    assert.equal(seen.headers['user-agent'], 'curl/8.5.0');
  });

  test('GET /apisix/admin/routes/1 shows the current route; without the key → 401', async () => {
    const got = await curl(`${gw.adminUrl}/apisix/admin/routes/1`, { headers: { 'X-API-KEY': gw.key } });
    assert.equal(got.status, 200, got.body);
    assert.deepEqual(JSON.parse(got.body).value.upstream.nodes, { [`127.0.0.1:${echo.port}`]: 1 });
    const anon = await curl(`${gw.adminUrl}/apisix/admin/routes/1`);
    assert.equal(anon.status, 401, anon.body);
  });

  test('an unknown path → 404 Route Not Found', async () => {
    const res = await curl(`${gw.proxyUrl}/nope`);
    assert.equal(res.status, 404);
    assert.deepEqual(JSON.parse(res.body), { error_msg: '404 Route Not Found' });
  });
});

describe('command line', () => {
  test('--help exits 0 and lists every setting', async () => {
    const res = await runToExit({}, ['--help']);
    assert.equal(res.code, 0, res.stderr);
    // Also every variable the settings module reads (a setting added later must be documented too).
    const source = await readFile(join(ROOT, 'src/runtime/settings.ts'), 'utf8');
    const read = [...source.matchAll(/\benv\.([A-Z][A-Z0-9_]*)|\bport\(env, '([A-Z][A-Z0-9_]*)'/g)].map(
      (m) => m[1] ?? m[2]!,
    );
    assert.ok(read.includes('LOG_LEVEL'), 'could not find the variables read in src/runtime/settings.ts');
    for (const name of new Set([...ENV_VARS, ...read])) {
      assert.ok(res.stdout.includes(name), `--help does not mention ${name}:\n${res.stdout}`);
    }
    assert.match(res.stdout, /9080/);
    assert.match(res.stdout, /9180/);
  });

  test('-h is --help too', async () => {
    const res = await runToExit({}, ['-h']);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /PROXY_PORT/);
  });

  // '0x50' and '4e4' are numbers to JavaScript (80, 40000) but not port numbers a user means.
  for (const bad of ['abc', '70000', '-1', '80.5', '0x50', '4e4']) {
    test(`PROXY_PORT=${bad} → exit 1 with a message naming PROXY_PORT`, async () => {
      const dataDir = await tmpDir('fngate-e2e-badport-');
      try {
        const env = { HOST: '127.0.0.1', PROXY_PORT: bad, ADMIN_PORT: String(await freePort()), DATA_DIR: dataDir };
        const res = await runToExit(env, [], 4000); // a settings error exits at once
        assert.equal(res.code, 1, `${res.stdout}\n${res.stderr}`);
        assert.ok(res.stderr.includes(`PROXY_PORT=${bad}`), res.stderr);
        assert.match(res.stderr, /not a port number/);
        assert.doesNotMatch(res.stdout, /listening on/);
      } finally {
        await rmDir(dataDir);
      }
    });
  }

  const otherBad: [string, string, RegExp][] = [
    ['ADMIN_PORT', '99999', /ADMIN_PORT=99999 is not a port number/],
    ['LOG_LEVEL', 'verbose', /LOG_LEVEL=verbose/],
    ['ADMIN_KEY', 'short', /ADMIN_KEY must be at least 16 characters/],
  ];
  for (const [name, value, message] of otherBad) {
    test(`${name}=${value} → exit 1 with a message naming ${name}`, async () => {
      const dataDir = await tmpDir('fngate-e2e-badenv-');
      try {
        const env = {
          HOST: '127.0.0.1',
          PROXY_PORT: String(await freePort()),
          ADMIN_PORT: String(await freePort()),
          DATA_DIR: dataDir,
          [name]: value,
        };
        const res = await runToExit(env, [], 4000);
        assert.equal(res.code, 1, `${res.stdout}\n${res.stderr}`);
        assert.match(res.stderr, message);
        assert.ok(!res.stderr.includes(value) || name !== 'ADMIN_KEY', 'the message echoes the admin key');
      } finally {
        await rmDir(dataDir);
      }
    });
  }

  test('PROXY_PORT already in use → exit 1 with a clear message', async () => {
    const dataDir = await tmpDir('fngate-e2e-busy-');
    const otherDir = await tmpDir('fngate-e2e-busy2-');
    const other = await startGateway({ dataDir: otherDir });
    try {
      const busyPort = new URL(other.proxyUrl).port;
      const res = await runToExit({
        HOST: '127.0.0.1',
        PROXY_PORT: busyPort,
        ADMIN_HOST: '127.0.0.1',
        ADMIN_PORT: String(await freePort()),
        ADMIN_KEY: other.key,
        DATA_DIR: dataDir,
      });
      assert.equal(res.code, 1, `${res.stdout}\n${res.stderr}`);
      assert.match(res.stderr, /EADDRINUSE|in use/i);
      assert.ok(res.stderr.includes(busyPort), `the message should name the port:\n${res.stderr}`);
    } finally {
      await other.stop();
      await rmDir(dataDir);
      await rmDir(otherDir);
    }
  });
});

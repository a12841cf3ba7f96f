/**
 * The gateway process and its DATA_DIR, on every runtime: a restart keeps the config, `kill -9` in the middle of
 * Admin API writes loses no acknowledged one, the store's files are owner-only, the generated admin key, and (on
 * Workers) no Admin API without ADMIN_KEY. Cases that cannot apply to a runtime are skipped with the reason here.
 * Node-only depth (10 kill rounds with the store file checked after each, an unusable admin_key file, corrupt
 * files, SIGTERM draining): test/e2e/persistence.test.ts.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { FunctionServers } from '../functions/functions.ts';
import { WriteLedger } from '../helpers/write-ledger.ts';
import { functionsPerFile, type GatewayUnderTest, RUNTIME, startGateway, tmpDirsPerFile } from './harness.ts';

let fns: FunctionServers;
functionsPerFile((f) => {
  fns = f;
});
const freshDir = tmpDirsPerFile();

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const echoUpstream = () => ({ type: 'roundrobin', nodes: { [`127.0.0.1:${fns.ports.echo}`]: 1 } });

/** Admin API call with an explicit key (or none). */
async function adminCall(gw: GatewayUnderTest, method: string, path: string, key: string | undefined, body?: unknown) {
  const res = await fetch(`${gw.adminUrl}/apisix/admin${path}`, {
    method,
    headers: key === undefined ? {} : { 'x-api-key': key },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, text: await res.text() };
}

const NO_WORKER_PROCESS =
  'Workers: there is no gateway process to kill; what a kill -9 of the local workerd would test is ' +
  "Miniflare's on-disk simulation of KV, not fngate (Workers KV writes are made by Cloudflare)";
const NO_WORKER_FILES =
  "Workers: the store is Workers KV; fngate writes no file (locally it is Miniflare's simulation of KV)";

// ---------------------------------------------------------------------------------------------------------
describe('restart on the same DATA_DIR (Workers: the same local KV namespace)', () => {
  test('routes survive SIGTERM + start; create_time and ids unchanged; new POST ids keep growing', async () => {
    const dataDir = await freshDir('fngate-conf-restart-');
    const key = randomBytes(16).toString('hex');
    let gw = await startGateway({ dataDir, key });
    let created: { value: Record<string, unknown> };
    let postedId: string;
    try {
      created = (await gw.putRoute('keep', { uri: '/keep', upstream: echoUpstream(), desc: 'kept' })).json;
      const posted = await gw.admin('POST', '/routes', { uri: '/posted', upstream: echoUpstream() });
      assert.equal(posted.status, 201, posted.text);
      postedId = posted.json.value.id;
      assert.equal((await gw.fetch('/keep')).status, 200);
      await sleep(1100); // so that a create_time rewritten at start-up would differ
    } finally {
      const exit = await gw.proc.kill('SIGTERM');
      // Workers: the process is the test's Miniflare launcher; a Worker has no exit status of its own.
      if (RUNTIME !== 'workerd')
        assert.deepEqual(exit, { code: 0, signal: null }, `SIGTERM exit:\n${gw.proc.stderr()}`);
    }

    gw = await startGateway({ dataDir, key });
    try {
      const res = await gw.fetch('/keep?x=1');
      assert.equal(res.status, 200);
      assert.equal(JSON.parse(await res.text()).url, '/keep?x=1');
      assert.equal((await gw.fetch('/posted')).status, 200);

      const got = await gw.admin('GET', '/routes/keep');
      assert.equal(got.status, 200, got.text);
      assert.equal(got.json.value.create_time, created.value.create_time);
      assert.equal(got.json.value.update_time, created.value.update_time);
      assert.equal(got.json.value.desc, 'kept');
      assert.equal((await gw.admin('GET', '/routes')).json.total, 2);

      const again = await gw.admin('POST', '/routes', { uri: '/posted2', upstream: echoUpstream() });
      assert.equal(again.status, 201, again.text);
      assert.ok(again.json.value.id > postedId, `POST id after restart ${again.json.value.id} <= ${postedId}`);

      const upd = await gw.putRoute('keep', { uri: '/keep', upstream: echoUpstream(), desc: 'changed' });
      assert.equal(upd.status, 200);
      assert.equal(upd.json.value.create_time, created.value.create_time);
    } finally {
      await gw.proc.kill('SIGTERM');
    }
  });

  test('a DELETE survives a restart', async () => {
    const dataDir = await freshDir('fngate-conf-delete-');
    const key = randomBytes(16).toString('hex');
    let gw = await startGateway({ dataDir, key });
    try {
      await gw.putRoute('a', { uri: '/a', upstream: echoUpstream() });
      await gw.putRoute('b', { uri: '/b', upstream: echoUpstream() });
      assert.equal((await gw.admin('DELETE', '/routes/a')).status, 200);
    } finally {
      await gw.proc.kill('SIGTERM');
    }
    gw = await startGateway({ dataDir, key });
    try {
      assert.equal((await gw.fetch('/a')).status, 404);
      assert.equal((await gw.fetch('/b')).status, 200);
      assert.equal((await gw.admin('GET', '/routes/a')).status, 404);
    } finally {
      await gw.proc.kill('SIGTERM');
    }
  });
});

// ---------------------------------------------------------------------------------------------------------
describe('kill -9 in the middle of writes', () => {
  const ROUNDS = 3;
  const WRITERS = 4;
  const ROUTES_PER_WRITER = 20;
  /** ~3.5 KB per route, so that each write takes a while (and stays far below Deno KV's 64 KiB per value). */
  const PAD = 'p'.repeat(3000);
  const idOf = (w: number, i: number) => `w${w}-r${i}`;
  const routeBody = (id: string, seq: number) => ({
    uris: [`/big/${id}`, `/pad/${id}/${PAD}`],
    desc: `seq=${seq}`,
    upstream: echoUpstream(),
  });
  const seqOf = (value: { desc?: string }) => Number(/^seq=(\d+)$/.exec(value.desc ?? '')?.[1]);

  test(`${ROUNDS} rounds of SIGKILL during admin PUTs lose no acknowledged write`, {
    skip: RUNTIME === 'workerd' && NO_WORKER_PROCESS,
  }, async (t) => {
    const dataDir = await freshDir('fngate-conf-kill9-');
    const key = randomBytes(16).toString('hex');
    const ledger = new WriteLedger(key, routeBody, seqOf);
    const check = async (gw: GatewayUnderTest, when: string) => {
      const list = await gw.admin('GET', '/routes?page=1&page_size=500');
      assert.equal(list.status, 200, list.text);
      ledger.adopt(ledger.check(list.json.list, when));
    };

    for (let round = 0; round < ROUNDS; round++) {
      const gw = await startGateway({ dataDir, key });
      await check(gw, `round ${round}`);
      const someId = [...ledger.acked.keys()][0];
      if (someId) assert.equal((await gw.fetch(`/big/${someId}`)).status, 200, `round ${round}: GET /big/${someId}`);

      const ackedBefore = ledger.total;
      const writers = ledger.startWriters(gw.adminUrl, WRITERS, (w, n) => idOf(w, (n * 7 + round) % ROUTES_PER_WRITER));
      await sleep(300 + Math.floor(Math.random() * 700));
      const exit = await gw.proc.kill('SIGKILL');
      const errors = writers.stop();
      assert.equal(exit.signal, 'SIGKILL');
      assert.equal(await errors, 0, `round ${round}: some PUTs were refused`);
      t.diagnostic(`round ${round}: killed after ${ledger.total - ackedBefore} acknowledged PUTs`);
    }
    assert.ok(ledger.total >= ROUNDS, `only ${ledger.total} PUTs were acknowledged: the test proved little`);
    const gw = await startGateway({ dataDir, key });
    try {
      await check(gw, 'last start');
    } finally {
      await gw.proc.kill('SIGTERM');
    }
  });
});

// ---------------------------------------------------------------------------------------------------------
describe('the files in DATA_DIR', () => {
  test('a DATA_DIR the gateway creates is 0700; the store files (Deno: fngate.kv and its -wal, -shm) are 0600', {
    skip: RUNTIME === 'workerd' && NO_WORKER_FILES,
  }, async () => {
    // Owner-only by the gateway's doing, not by a strict umask of whoever runs the tests.
    const umask = process.umask(0o022);
    const dataDir = join(await freshDir('fngate-conf-modes-'), 'data', 'nested'); // does not exist yet
    let gw: GatewayUnderTest | undefined;
    try {
      gw = await startGateway({ dataDir });
      await gw.putRoute('secret', {
        uri: '/secret',
        plugins: { openfunction: { function_uri: `${fns.urls.echo}/`, authorization: { service_token: 'u:p' } } },
      });
      const mode = async (p: string) => (await stat(p)).mode & 0o777;
      assert.equal((await mode(dataDir)).toString(8), '700', 'DATA_DIR');
      const files = (await readdir(dataDir)).sort();
      // While the gateway runs (SQLite removes -wal and -shm at a clean close; a crash leaves them).
      const expected = RUNTIME === 'deno' ? ['fngate.kv', 'fngate.kv-shm', 'fngate.kv-wal'] : ['config.json'];
      assert.deepEqual(files, expected);
      for (const f of files) assert.equal((await mode(join(dataDir, f))).toString(8), '600', f);
    } finally {
      process.umask(umask);
      await gw?.proc.kill('SIGTERM');
    }
  });
});

// ---------------------------------------------------------------------------------------------------------
describe('generated admin key', () => {
  // warn: the path of the key file must be printed whatever the level; info (the default level, the most the
  // gateway says short of debug): the key must still never be printed.
  for (const level of ['warn', 'info']) {
    test(`no ADMIN_KEY (LOG_LEVEL=${level}) → DATA_DIR/admin_key (0600) is created, is the only key accepted, is reused, is never printed`, {
      skip:
        RUNTIME === 'workerd' &&
        'Workers: a Worker has no private place to write a key, so none is generated; without the ADMIN_KEY secret ' +
          'there is no Admin API (see below)',
    }, async () => {
      const dataDir = join(await freshDir('fngate-conf-key-'), 'data'); // does not exist yet
      const keyFile = join(dataDir, 'admin_key');
      const env = { ADMIN_KEY: undefined, LOG_LEVEL: level };
      let gw = await startGateway({ dataDir, env });
      let key = '';
      try {
        const st = await stat(keyFile);
        assert.equal(st.mode & 0o777, 0o600, `admin_key mode ${(st.mode & 0o777).toString(8)}`);
        assert.equal((await stat(dataDir)).mode & 0o077, 0, 'DATA_DIR is readable by others');
        key = (await readFile(keyFile, 'utf8')).trim();
        assert.match(key, /^[0-9a-f]{64}$/);

        assert.equal((await adminCall(gw, 'GET', '/routes', key)).status, 200);
        const put = await adminCall(gw, 'PUT', '/routes/k', key, { uri: '/k', upstream: echoUpstream() });
        assert.equal(put.status, 201, put.text);
        assert.equal((await adminCall(gw, 'GET', '/routes', undefined)).status, 401);
        assert.equal((await adminCall(gw, 'GET', '/routes', '')).status, 401);
        assert.equal(
          (await adminCall(gw, 'GET', '/routes', gw.key)).status,
          401,
          "the harness's random key is not a key",
        );
        assert.equal((await adminCall(gw, 'GET', '/routes', key.slice(0, 32))).status, 401);
        assert.equal((await adminCall(gw, 'GET', '/routes', key.toUpperCase())).status, 401);

        const out = gw.proc.stdout() + gw.proc.stderr();
        assert.ok(out.includes(keyFile), `start-up output does not name ${keyFile}:\n${out}`);
        assert.ok(!out.includes(key), 'start-up output contains the admin key');
      } finally {
        const exit = await gw.proc.kill('SIGTERM');
        assert.equal(exit.code, 0);
      }
      const untilExit = gw.proc.stdout() + gw.proc.stderr();
      assert.ok(!untilExit.includes(key), 'the output up to the exit contains the admin key');

      gw = await startGateway({ dataDir, env });
      try {
        assert.equal((await readFile(keyFile, 'utf8')).trim(), key, 'the key file was rewritten');
        assert.equal((await stat(keyFile)).mode & 0o777, 0o600);
        const got = await adminCall(gw, 'GET', '/routes/k', key);
        assert.equal(got.status, 200, got.text);
        assert.equal((await adminCall(gw, 'GET', '/routes', gw.key)).status, 401);
        const out = gw.proc.stdout() + gw.proc.stderr();
        assert.ok(out.includes(keyFile), `second start-up output does not name ${keyFile}:\n${out}`);
        assert.ok(!out.includes(key), 'second start-up output contains the admin key');
      } finally {
        await gw.proc.kill('SIGTERM');
      }
    });
  }

  test('ADMIN_KEY set → only that key works, it is never printed, and no admin_key file is made', async () => {
    const dataDir = await freshDir('fngate-conf-setkey-');
    const gw = await startGateway({ dataDir });
    try {
      // Workers: DATA_DIR holds Miniflare's local state; a Worker writes no file anyway.
      if (RUNTIME !== 'workerd') assert.equal(existsSync(join(dataDir, 'admin_key')), false);
      assert.equal((await adminCall(gw, 'GET', '/routes', gw.key)).status, 200);
      assert.equal((await adminCall(gw, 'GET', '/routes', 'x'.repeat(32))).status, 401);
      assert.ok(!(gw.proc.stdout() + gw.proc.stderr()).includes(gw.key), 'output contains ADMIN_KEY');
    } finally {
      await gw.proc.kill('SIGTERM');
    }
  });

  test('Workers without ADMIN_KEY: no Admin API; /apisix/admin/* is proxied like any other path', {
    skip:
      RUNTIME !== 'workerd' &&
      `${RUNTIME}: the Admin API has its own port and a generated key when ADMIN_KEY is unset (test above)`,
  }, async () => {
    // No route: APISIX's 404, not the Admin API's 401.
    let gw = await startGateway({ env: { ADMIN_KEY: undefined } });
    try {
      const res = await adminCall(gw, 'GET', '/routes', undefined);
      assert.equal(res.status, 404, res.text);
      assert.deepEqual(JSON.parse(res.text), { error_msg: '404 Route Not Found' });
      assert.equal((await adminCall(gw, 'PUT', '/routes/x', 'k'.repeat(32), { uri: '/x' })).status, 404);
    } finally {
      await gw.stop();
    }
    // A route for that path (from the standalone config) is served like any other.
    const dir = await freshDir('fngate-conf-nokey-');
    const file = join(dir, 'apisix.yaml');
    await writeFile(
      file,
      `routes:\n  - id: adm\n    uri: /apisix/admin/*\n    plugins:\n      openfunction:\n        function_uri: "${fns.urls.echo}/fn"\n#END\n`,
    );
    gw = await startGateway({ env: { ADMIN_KEY: undefined, CONFIG_FILE: file } });
    try {
      const res = await fetch(`${gw.proxyUrl}/apisix/admin/routes`, { headers: { 'x-api-key': 'k'.repeat(32) } });
      assert.equal(res.status, 200);
      assert.equal(((await res.json()) as { url: string }).url, '/fn/routes');
    } finally {
      await gw.stop();
    }
  });

  test('Workers without ADMIN_KEY: an http-logger batch sent after the answer still arrives (ctx.waitUntil)', {
    skip: RUNTIME !== 'workerd' && `${RUNTIME}: no ExecutionContext; the sends outlive the answer by themselves`,
  }, async () => {
    // The proxy alone (no Admin API) is served with the request's ExecutionContext as its ServerEnv
    // (src/runtime/worker.ts): the batch goes out 1 s after the answer (inactive_timeout), which a Worker runs only
    // while the request's waitUntil keeps it alive.
    const got: string[] = [];
    const rx = createHttpServer((req, res) => {
      let body = '';
      req.on('data', (c) => {
        body += c;
      });
      req.on('end', () => {
        got.push(body);
        res.end('ok');
      });
    });
    await new Promise<void>((r) => rx.listen(0, '127.0.0.1', r));
    const dir = await freshDir('fngate-conf-nokey-log-');
    const file = join(dir, 'apisix.json');
    const logger = { uri: `http://127.0.0.1:${(rx.address() as AddressInfo).port}/log`, batch_max_size: 10, inactive_timeout: 1 };
    await writeFile(file, JSON.stringify({ routes: [{ id: 'lg', uri: '/lg', plugins: { 'http-logger': logger }, upstream: echoUpstream() }] }));
    const gw = await startGateway({ env: { ADMIN_KEY: undefined, CONFIG_FILE: file } });
    try {
      const res = await fetch(`${gw.proxyUrl}/lg`);
      assert.equal(res.status, 200);
      await res.text();
      for (let waited = 0; got.length === 0 && waited < 6000; waited += 50) await sleep(50);
      assert.equal(got.length, 1, 'the batch never arrived');
      assert.equal(JSON.parse(got[0]!)[0].route_id, 'lg');
    } finally {
      await gw.stop();
      rx.closeAllConnections();
      await new Promise<void>((r) => rx.close(() => r()));
    }
  });
});

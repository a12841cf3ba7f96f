// The Node gateway process and its file store in DATA_DIR: restarts, the generated admin key, kill -9 in the
// middle of writes, a corrupt store file, and a graceful SIGTERM.
// Run: npm run build && node --import tsx --test --test-concurrency=1 test/e2e/persistence.test.ts
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { Agent, request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type GatewayUnderTest, ROOT, startGateway } from '../conformance/harness.ts';
import { type FunctionServers, startFunctions } from '../functions/functions.ts';
import { freePort, rmDir, startProcess, tmpDir } from '../helpers/process.ts';

const GATEWAY = join(ROOT, 'dist/runtime/node.js');

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

let fns: FunctionServers;
const dirs: string[] = [];
async function freshDir(prefix: string): Promise<string> {
  const d = await tmpDir(prefix);
  dirs.push(d);
  return d;
}

before(async () => {
  fns = await startFunctions();
});
after(async () => {
  await fns?.close();
  for (const d of dirs) await rmDir(d);
});

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

/** Run the gateway until it exits by itself (a start-up failure); fails if it is still running after `timeoutMs`. */
async function runToExit(env: Record<string, string | undefined>, timeoutMs = 8000) {
  const proc = await startProcess({
    cmd: process.execPath,
    args: [GATEWAY],
    env: {
      HOST: '127.0.0.1',
      PROXY_PORT: String(await freePort()),
      ADMIN_HOST: '127.0.0.1',
      ADMIN_PORT: String(await freePort()),
      ADMIN_KEY: randomBytes(16).toString('hex'),
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
  if (res === 'timeout') {
    await proc.kill('SIGKILL');
    assert.fail(`the gateway did not exit within ${timeoutMs} ms:\n${proc.stdout()}\n${proc.stderr()}`);
  }
  return { ...res, stdout: proc.stdout(), stderr: proc.stderr() };
}

/** Resolves with the socket error code, or 'connected' when a TCP connection to `port` succeeds. */
function tryConnect(port: number): Promise<string> {
  return new Promise((resolve) => {
    const sock = connect({ host: '127.0.0.1', port });
    sock.setTimeout(2000);
    sock.once('connect', () => {
      sock.destroy();
      resolve('connected');
    });
    sock.once('timeout', () => {
      sock.destroy();
      resolve('timeout');
    });
    sock.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

/** One GET on its own connection (`Connection: close`); resolves with the status and body. */
function getOnce(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { agent: false, headers: { connection: 'close' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('restart on the same DATA_DIR', () => {
  test('routes survive SIGTERM + start; create_time and ids are unchanged; new POST ids keep growing', async () => {
    const dataDir = await freshDir('fngate-e2e-restart-');
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

      const list = await gw.admin('GET', '/routes');
      assert.equal(list.json.total, 2);

      const again = await gw.admin('POST', '/routes', { uri: '/posted2', upstream: echoUpstream() });
      assert.equal(again.status, 201, again.text);
      assert.ok(again.json.value.id > postedId, `POST id after restart ${again.json.value.id} <= ${postedId}`);

      // A PUT after the restart keeps the original create_time.
      const upd = await gw.putRoute('keep', { uri: '/keep', upstream: echoUpstream(), desc: 'changed' });
      assert.equal(upd.status, 200);
      assert.equal(upd.json.value.create_time, created.value.create_time);
    } finally {
      await gw.proc.kill('SIGTERM');
    }
  });

  test('a DELETE survives a restart', async () => {
    const dataDir = await freshDir('fngate-e2e-delete-');
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

describe('generated admin key', () => {
  test('no ADMIN_KEY → DATA_DIR/admin_key (0600) is created, is the only key accepted, is reused, is never printed', async () => {
    const base = await freshDir('fngate-e2e-key-');
    const dataDir = join(base, 'data'); // does not exist yet
    const keyFile = join(dataDir, 'admin_key');
    const env = { ADMIN_KEY: undefined, LOG_LEVEL: 'info' };

    let gw = await startGateway({ dataDir, env });
    let key: string;
    try {
      const st = await stat(keyFile);
      assert.equal(st.mode & 0o777, 0o600, `admin_key mode ${(st.mode & 0o777).toString(8)}`);
      assert.equal((await stat(dataDir)).mode & 0o077, 0, 'DATA_DIR is not readable by others');
      key = (await readFile(keyFile, 'utf8')).trim();
      assert.match(key, /^[0-9a-f]{64}$/);

      assert.equal((await adminCall(gw, 'GET', '/routes', key)).status, 200);
      assert.equal((await adminCall(gw, 'PUT', '/routes/k', key, { uri: '/k', upstream: echoUpstream() })).status, 201);
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
    const out1 = gw.proc.stdout() + gw.proc.stderr();
    assert.ok(!out1.includes(key), 'output contains the admin key');

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

  test('ADMIN_KEY set → no admin_key file, only that key works', async () => {
    const dataDir = await freshDir('fngate-e2e-setkey-');
    const gw = await startGateway({ dataDir });
    try {
      assert.equal(existsSync(join(dataDir, 'admin_key')), false);
      assert.equal((await adminCall(gw, 'GET', '/routes', gw.key)).status, 200);
      assert.equal((await adminCall(gw, 'GET', '/routes', 'x'.repeat(32))).status, 401);
      assert.ok(!(gw.proc.stdout() + gw.proc.stderr()).includes(gw.key), 'output contains ADMIN_KEY');
    } finally {
      await gw.proc.kill('SIGTERM');
    }
  });

  test('an unusable admin_key file → refuses to start, naming the file, and leaves it alone', async () => {
    const dataDir = await freshDir('fngate-e2e-badkey-');
    const keyFile = join(dataDir, 'admin_key');
    await writeFile(keyFile, 'short\n', { mode: 0o600 });
    const res = await runToExit({ ADMIN_KEY: undefined, DATA_DIR: dataDir });
    assert.notEqual(res.code, 0);
    assert.ok(res.stderr.includes(keyFile), res.stderr);
    assert.equal(await readFile(keyFile, 'utf8'), 'short\n');
  });
});

describe('kill -9 in the middle of writes', () => {
  const ROUNDS = 10;
  const WRITERS = 4;
  const ROUTES_PER_WRITER = 50;
  /** Makes every route ~3.5 KB, so that the store file is ~700 KB and each write takes a while. */
  const PAD = 'p'.repeat(3000);

  const idOf = (w: number, i: number) => `w${w}-r${i}`;
  const routeBody = (id: string, seq: number) => ({
    uris: [`/big/${id}`, `/pad/${id}/${PAD}`],
    desc: `seq=${seq};${'d'.repeat(200)}`,
    labels: { seq: String(seq) },
    upstream: echoUpstream(),
  });
  const seqOf = (value: { desc?: string }) => Number(/^seq=(\d+);/.exec(value.desc ?? '')?.[1]);

  test(`${ROUNDS} rounds of SIGKILL during admin PUTs lose no acknowledged write`, async (t) => {
    const dataDir = await freshDir('fngate-e2e-kill9-');
    const key = randomBytes(16).toString('hex');
    /** Highest sequence number acknowledged (2xx) per route. */
    const acked = new Map<string, number>();
    /** Highest sequence number sent per route (acknowledged or not). */
    const sent = new Map<string, number>();
    let totalAcked = 0;
    /** Rounds where the kill left a temp file behind, i.e. hit a write between open and rename. */
    let midWrite = 0;

    for (let round = 0; round < ROUNDS; round++) {
      const gw = await startGateway({ dataDir, key });
      const startOut = gw.proc.stdout() + gw.proc.stderr();

      // Every acknowledged write of the earlier rounds is there, with its value or a later one that was sent.
      const list = await gw.admin('GET', '/routes');
      assert.equal(list.status, 200, list.text);
      const stored = new Map<string, number>();
      for (const it of list.json.list as { value: { id: string; desc?: string } }[]) {
        stored.set(it.value.id, seqOf(it.value));
      }
      for (const [id, seq] of acked) {
        const have = stored.get(id);
        assert.ok(have !== undefined, `round ${round}: acknowledged route ${id} (seq ${seq}) is missing\n${startOut}`);
        assert.ok(have >= seq, `round ${round}: route ${id} went back from acknowledged seq ${seq} to ${have}`);
      }
      for (const [id, have] of stored) {
        const max = sent.get(id);
        assert.ok(max !== undefined && have <= max, `round ${round}: route ${id} holds seq ${have}, never sent`);
      }
      assert.equal(stored.size, list.json.total);
      // Temp files of the killed writer were cleaned up.
      const leftovers = (await readdir(dataDir)).filter((n) => n.startsWith('config.json.tmp'));
      assert.deepEqual(leftovers, [], `round ${round}: temp files left behind`);
      // And an acknowledged route is served.
      const someId = [...acked.keys()][round % Math.max(1, acked.size)];
      if (someId) {
        const res = await gw.fetch(`/big/${someId}`);
        assert.equal(res.status, 200, `round ${round}: GET /big/${someId}`);
        await res.arrayBuffer();
      }
      for (const [id, have] of stored) acked.set(id, Math.max(acked.get(id) ?? 0, have)); // the store's word now

      // Writers: each owns its routes and keeps one PUT in flight; acknowledged = a 2xx response was received.
      let stop = false;
      let errors = 0;
      const ackedBefore = totalAcked;
      const writer = async (w: number) => {
        for (let n = 0; !stop; n++) {
          const id = idOf(w, (n * 7 + round) % ROUTES_PER_WRITER);
          const seq = (sent.get(id) ?? 0) + 1;
          sent.set(id, seq);
          let status = 0;
          try {
            const res = await fetch(`${gw.adminUrl}/apisix/admin/routes/${id}`, {
              method: 'PUT',
              headers: { 'x-api-key': key, 'content-type': 'application/json' },
              body: JSON.stringify(routeBody(id, seq)),
            });
            await res.text();
            status = res.status;
          } catch {
            return; // the gateway is gone
          }
          if (status >= 200 && status < 300) {
            acked.set(id, seq);
            totalAcked++;
          } else if (!stop) {
            errors++;
          }
        }
      };
      // A reader hammering the proxy and the Admin API at the same time.
      const reader = async () => {
        while (!stop) {
          try {
            await (await gw.fetch(`/big/${idOf(0, 0)}`)).arrayBuffer();
            await (await fetch(`${gw.adminUrl}/apisix/admin/routes`, { headers: { 'x-api-key': key } })).arrayBuffer();
          } catch {
            return;
          }
        }
      };
      const running = [...Array.from({ length: WRITERS }, (_, w) => writer(w)), reader()];
      await sleep(150 + Math.floor(Math.random() * 900));
      const exit = await gw.proc.kill('SIGKILL');
      stop = true;
      assert.equal(exit.signal, 'SIGKILL');
      await Promise.all(running);
      assert.equal(errors, 0, `round ${round}: some PUTs were refused`);
      const tmpFiles = (await readdir(dataDir)).filter((n) => n.startsWith('config.json.tmp')).length;
      if (tmpFiles > 0) midWrite++;
      t.diagnostic(
        `round ${round}: killed after ${totalAcked - ackedBefore} acknowledged PUTs; temp files: ${tmpFiles}`,
      );

      // Whatever the moment of the kill, config.json is complete and parses.
      const text = await readFile(join(dataDir, 'config.json'), 'utf8');
      const doc = JSON.parse(text);
      assert.equal(doc.fngate_store, 1);
      assert.ok(Array.isArray(doc.items));
    }
    assert.ok(totalAcked >= ROUNDS, `only ${totalAcked} PUTs were acknowledged: the test proved little`);
    t.diagnostic(`${midWrite} of ${ROUNDS} kills landed between a temp file's creation and its rename`);

    // A last start: the final state holds every acknowledged write.
    const gw = await startGateway({ dataDir, key });
    try {
      for (const [id, seq] of acked) {
        const got = await gw.admin('GET', `/routes/${id}`);
        assert.equal(got.status, 200, `${id}: ${got.text}`);
        assert.ok(seqOf(got.json.value) >= seq, `${id}: seq ${seqOf(got.json.value)} < acknowledged ${seq}`);
      }
    } finally {
      await gw.proc.kill('SIGTERM');
    }
  });
});

describe('corrupt store file at start', () => {
  const cases: [string, string][] = [
    ['truncated JSON', '{"fngate_store":1,"revision":3,"items":[\n{"key":"/apisix/routes/1","value":{"uri":"/x"'],
    ['an empty file', ''],
    ['not JSON at all', 'hello world\n'],
    ['JSON of the wrong shape', '{"routes":[]}\n'],
    ['a NUL-filled file (power loss)', '\0'.repeat(4096)],
  ];
  for (const [what, content] of cases) {
    test(`config.json holding ${what} → exit non-zero naming the file; the file is left alone`, async () => {
      const dataDir = await freshDir('fngate-e2e-corrupt-');
      const file = join(dataDir, 'config.json');
      await writeFile(file, content);
      const res = await runToExit({ DATA_DIR: dataDir });
      assert.notEqual(res.code, 0, `started with a corrupt store:\n${res.stdout}`);
      assert.ok(res.stderr.includes(file), `the message does not name ${file}:\n${res.stderr}`);
      assert.match(res.stderr, /corrupt/);
      assert.doesNotMatch(res.stdout, /listening on/);
      assert.equal(await readFile(file, 'utf8'), content, 'the corrupt file was overwritten');
    });
  }

  test('DATA_DIR that is a regular file → exit non-zero naming it', async () => {
    const base = await freshDir('fngate-e2e-datafile-');
    const notDir = join(base, 'data');
    await writeFile(notDir, 'not a directory\n');
    const res = await runToExit({ DATA_DIR: notDir });
    assert.notEqual(res.code, 0);
    assert.ok(res.stderr.includes(notDir), res.stderr);
  });

  test('config.json that is a directory → exit non-zero naming it', async () => {
    const dataDir = await freshDir('fngate-e2e-corruptdir-');
    const { mkdir } = await import('node:fs/promises');
    await mkdir(join(dataDir, 'config.json'));
    const res = await runToExit({ DATA_DIR: dataDir });
    assert.notEqual(res.code, 0);
    assert.ok(res.stderr.includes(join(dataDir, 'config.json')), res.stderr);
  });
});

describe('SIGTERM', () => {
  test('a request in flight to the slow function completes with 200; new connections are refused; exit 0', async () => {
    const gw = await startGateway({ dataDir: await freshDir('fngate-e2e-sigterm-') });
    await gw.putRoute('slow', {
      uri: '/slow',
      plugins: { openfunction: { function_uri: `${fns.urls.slow}/?delay=1500`, timeout: 10_000 } },
    });
    await gw.putRoute('slowup', {
      uri: '/slowup',
      upstream: { type: 'roundrobin', nodes: { [`127.0.0.1:${fns.ports.slow}`]: 1 } },
    });
    const proxyPort = Number(new URL(gw.proxyUrl).port);
    const adminPort = Number(new URL(gw.adminUrl).port);

    const started = Date.now();
    // Requests with `Connection: close` (like curl): keep-alive clients are the next test's business.
    const inFlight = getOnce(`${gw.proxyUrl}/slow`);
    const inFlight2 = getOnce(`${gw.proxyUrl}/slowup?delay=1500`);
    await sleep(300); // both requests are now waiting on the function
    const exited = gw.proc.waitExit();
    process.kill(gw.proc.pid, 'SIGTERM');
    await sleep(200);

    assert.equal(gw.proc.exited, false, 'the gateway exited with requests in flight');
    assert.equal(await tryConnect(proxyPort), 'ECONNREFUSED', 'proxy port still accepts connections after SIGTERM');
    assert.equal(await tryConnect(adminPort), 'ECONNREFUSED', 'admin port still accepts connections after SIGTERM');

    const [r1, r2] = await Promise.all([inFlight, inFlight2]);
    assert.deepEqual(r1, { status: 200, body: 'slow done' });
    assert.deepEqual(r2, { status: 200, body: 'slow done' });
    assert.ok(Date.now() - started >= 1400);

    const exit = await exited;
    assert.deepEqual(exit, { code: 0, signal: null }, gw.proc.stderr());
  });

  test('after SIGTERM a keep-alive client cannot hold the process open; no request is reset', async () => {
    const gw = await startGateway({ dataDir: await freshDir('fngate-e2e-sigterm-ka-') });
    const agent = new Agent({ keepAlive: true, maxSockets: 1 }); // one reused connection, like a proxy in front
    try {
      await gw.putRoute('slow', {
        uri: '/slow',
        plugins: { openfunction: { function_uri: `${fns.urls.slow}/?delay=1000`, timeout: 10_000 } },
      });
      await gw.putRoute('fast', { uri: '/fast', upstream: echoUpstream() });
      const get = (path: string) =>
        new Promise<{ outcome: string; connection?: string; at: number }>((resolve) => {
          const req = httpRequest(`${gw.proxyUrl}${path}`, { agent }, (res) => {
            res.resume();
            res.on('end', () =>
              resolve({ outcome: String(res.statusCode), connection: res.headers.connection, at: Date.now() }),
            );
            res.on('error', (e: NodeJS.ErrnoException) => resolve({ outcome: e.code ?? e.message, at: Date.now() }));
          });
          req.on('error', (e: NodeJS.ErrnoException) => resolve({ outcome: e.code ?? e.message, at: Date.now() }));
          req.end();
        });
      assert.equal((await get('/fast')).outcome, '200');

      const inFlight = get('/slow');
      await sleep(300);
      let exitedAt = 0;
      const exited = gw.proc.waitExit().then((e) => {
        exitedAt = Date.now();
        return e;
      });
      process.kill(gw.proc.pid, 'SIGTERM');
      const slow = await inFlight;
      assert.equal(slow.outcome, '200', 'the request in flight at SIGTERM was not answered');

      // The client goes on sending on its kept-alive connection (for at most 3 s).
      const later: string[] = [];
      while (!exitedAt && Date.now() - slow.at < 3000) {
        const r = await get('/fast');
        later.push(r.outcome);
        if (r.outcome === 'ECONNREFUSED') break; // a new connection was needed and refused: the clean end
        await sleep(50);
      }
      const bad = later.filter((o) => o !== '200' && o !== 'ECONNREFUSED');
      assert.deepEqual(bad, [], `requests after SIGTERM failed mid-flight: ${later.join(' ')}`);
      await Promise.race([exited, sleep(1500)]);
      assert.ok(
        exitedAt && exitedAt - slow.at < 1500,
        `the gateway was still running ${Date.now() - slow.at} ms after answering the request in flight ` +
          `(that response said Connection: ${slow.connection}; ${later.length} more requests were served on the same ` +
          'connection after SIGTERM): responses sent while shutting down should close their connection',
      );
      assert.deepEqual(await exited, { code: 0, signal: null });
    } finally {
      agent.destroy();
      await gw.proc.kill('SIGKILL');
    }
  });

  test('SIGTERM during admin writes: writes in flight are answered, and every acknowledged one is on disk', async () => {
    const dataDir = await freshDir('fngate-e2e-sigterm-writes-');
    const key = randomBytes(16).toString('hex');
    let gw = await startGateway({ dataDir, key });
    const routeJson = (id: string, seq: number) =>
      JSON.stringify({ uri: `/w/${id}`, desc: `seq=${seq};`, upstream: echoUpstream() });
    /** A PUT on its own connection; `hold` sends only the first half of the body until `release()`. */
    const put = (id: string, seq: number, hold = false) => {
      const payload = Buffer.from(routeJson(id, seq));
      let release = () => {};
      const done = new Promise<string>((resolve) => {
        const req = httpRequest(
          `${gw.adminUrl}/apisix/admin/routes/${id}`,
          {
            method: 'PUT',
            agent: false,
            headers: { 'x-api-key': key, connection: 'close', 'content-length': String(payload.length) },
          },
          (res) => {
            res.resume();
            res.on('end', () => resolve(String(res.statusCode)));
            res.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
          },
        );
        req.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
        if (!hold) return void req.end(payload);
        const half = payload.length >> 1;
        req.write(payload.subarray(0, half));
        release = () => void req.end(payload.subarray(half));
      });
      return { done, release: () => release() };
    };

    // Writes whose request is half received when SIGTERM arrives: they must still be answered and saved.
    const held = [0, 1, 2].map((i) => ({ id: `held${i}`, ...put(`held${i}`, 1, true) }));
    // And writers sending one PUT after another, each on a new connection.
    const acked = new Map<string, number>();
    const outcomes: string[] = [];
    let stop = false;
    const writer = async (w: number) => {
      for (let seq = 1; !stop; seq++) {
        const outcome = await put(`sw${w}`, seq).done;
        outcomes.push(outcome);
        if (outcome === '200' || outcome === '201') acked.set(`sw${w}`, seq);
        else if (outcome === 'ECONNREFUSED') return;
      }
    };
    const writers = Array.from({ length: 4 }, (_, w) => writer(w));
    await sleep(400);
    const exited = gw.proc.waitExit();
    process.kill(gw.proc.pid, 'SIGTERM');
    await sleep(300);
    stop = true;
    await Promise.all(writers);
    for (const h of held) h.release();
    const heldOutcomes = await Promise.all(held.map((h) => h.done));
    assert.deepEqual(heldOutcomes, ['201', '201', '201'], 'PUTs half received at SIGTERM');
    assert.deepEqual(await exited, { code: 0, signal: null }, gw.proc.stderr());
    // ECONNRESET is tolerated for the writers: a connection still in the kernel's accept queue when the listening
    // socket closes is reset by the OS, before the gateway ever saw it (never acknowledged, so never promised).
    const bad = outcomes.filter((o) => !['200', '201', 'ECONNREFUSED', 'ECONNRESET'].includes(o));
    assert.deepEqual(bad, [], `admin writes failed during shutdown: ${bad.join(' ')}`);
    assert.equal(acked.size, 4, 'every writer got some writes through');

    gw = await startGateway({ dataDir, key });
    try {
      for (const [id, seq] of [...acked, ...held.map((h) => [h.id, 1] as const)]) {
        const got = await gw.admin('GET', `/routes/${id}`);
        assert.equal(got.status, 200, `${id}: ${got.text}`);
        const have = Number(/^seq=(\d+);/.exec(got.json.value.desc)?.[1]);
        assert.ok(have >= seq, `${id}: acknowledged seq ${seq}, stored ${have}`);
      }
    } finally {
      await gw.proc.kill('SIGTERM');
    }
  });

  test('SIGINT exits 0 as well', async () => {
    const gw = await startGateway({ dataDir: await freshDir('fngate-e2e-sigint-') });
    const exit = await gw.proc.kill('SIGINT');
    assert.deepEqual(exit, { code: 0, signal: null });
  });
});

// The Node gateway process and its file store in DATA_DIR, Node-only depth: an unusable admin_key file, 10 rounds
// of kill -9 in the middle of writes (with the store file checked after each), a corrupt store file, and a graceful
// SIGTERM. What holds on every runtime (restarts, the generated admin key, ADMIN_KEY, fewer kill -9 rounds):
// test/conformance/lifecycle.test.ts, which runs on Node too.
// Run: npm run build && node --import tsx --test --test-concurrency=1 test/e2e/persistence.test.ts
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { Agent, request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { functionsPerFile, ROOT, startGateway, tmpDirsPerFile } from '../conformance/harness.ts';
import type { FunctionServers } from '../functions/functions.ts';
import { startProcess } from '../helpers/process.ts';
import { WriteLedger } from '../helpers/write-ledger.ts';

const GATEWAY = join(ROOT, 'dist/runtime/node.js');

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

let fns: FunctionServers;
functionsPerFile((f) => {
  fns = f;
});
const freshDir = tmpDirsPerFile();

const echoUpstream = () => ({ type: 'roundrobin', nodes: { [`127.0.0.1:${fns.ports.echo}`]: 1 } });

/** Run the gateway until it exits by itself (a start-up failure); fails if it is still running after `timeoutMs`. */
async function runToExit(env: Record<string, string | undefined>, timeoutMs = 8000) {
  const proc = await startProcess({
    cmd: process.execPath,
    args: [GATEWAY],
    env: {
      HOST: '127.0.0.1',
      PROXY_PORT: '0',
      ADMIN_HOST: '127.0.0.1',
      ADMIN_PORT: '0',
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

describe('generated admin key', () => {
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
    const ledger = new WriteLedger(key, routeBody, seqOf);
    /** Rounds where the kill left a temp file behind, i.e. hit a write between open and rename. */
    let midWrite = 0;

    for (let round = 0; round < ROUNDS; round++) {
      const gw = await startGateway({ dataDir, key });
      const startOut = gw.proc.stdout() + gw.proc.stderr();

      // Every acknowledged write of the earlier rounds is there, with its value or a later one that was sent.
      const list = await gw.admin('GET', '/routes');
      assert.equal(list.status, 200, list.text);
      const stored = ledger.check(list.json.list, `round ${round}`, `\n${startOut}`);
      assert.equal(stored.size, list.json.total);
      // Temp files of the killed writer were cleaned up.
      const leftovers = (await readdir(dataDir)).filter((n) => n.startsWith('config.json.tmp'));
      assert.deepEqual(leftovers, [], `round ${round}: temp files left behind`);
      // And an acknowledged route is served.
      const someId = [...ledger.acked.keys()][round % Math.max(1, ledger.acked.size)];
      if (someId) {
        const res = await gw.fetch(`/big/${someId}`);
        assert.equal(res.status, 200, `round ${round}: GET /big/${someId}`);
        await res.arrayBuffer();
      }
      ledger.adopt(stored);

      // Writers: each owns its routes and keeps one PUT in flight; acknowledged = a 2xx response was received.
      const ackedBefore = ledger.total;
      const writers = ledger.startWriters(gw.adminUrl, WRITERS, (w, n) => idOf(w, (n * 7 + round) % ROUTES_PER_WRITER));
      // A reader hammering the proxy and the Admin API at the same time.
      let stop = false;
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
      const reading = reader();
      await sleep(150 + Math.floor(Math.random() * 900));
      const exit = await gw.proc.kill('SIGKILL');
      stop = true;
      const errors = writers.stop();
      assert.equal(exit.signal, 'SIGKILL');
      await reading;
      assert.equal(await errors, 0, `round ${round}: some PUTs were refused`);
      const tmpFiles = (await readdir(dataDir)).filter((n) => n.startsWith('config.json.tmp')).length;
      if (tmpFiles > 0) midWrite++;
      t.diagnostic(
        `round ${round}: killed after ${ledger.total - ackedBefore} acknowledged PUTs; temp files: ${tmpFiles}`,
      );

      // Whatever the moment of the kill, config.json is complete and parses.
      const text = await readFile(join(dataDir, 'config.json'), 'utf8');
      const doc = JSON.parse(text);
      assert.equal(doc.fngate_store, 1);
      assert.ok(Array.isArray(doc.items));
    }
    assert.ok(ledger.total >= ROUNDS, `only ${ledger.total} PUTs were acknowledged: the test proved little`);
    t.diagnostic(`${midWrite} of ${ROUNDS} kills landed between a temp file's creation and its rename`);

    // A last start: the final state holds every acknowledged write.
    const gw = await startGateway({ dataDir, key });
    try {
      for (const [id, seq] of ledger.acked) {
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

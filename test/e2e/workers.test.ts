// WORKERS on Node (issue 19 item 4) and the status API (item 5): one primary (Admin API, store, status, metrics)
// and node:cluster proxy workers sharing the proxy port; on Bun (node:cluster, reusePort) and Deno (the primary runs
// its script again per worker, Deno.serve reusePort: src/runtime/workers-deno.ts).
// Run: npm run build && node --import tsx --test --test-concurrency=1 test/e2e/workers.test.ts
import assert from 'node:assert/strict';
import { readdir, readFile, readlink } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { request } from 'node:http';
import { after, before, test } from 'node:test';
import { type FunctionServers, startFunctions } from '../functions/functions.ts';
import { LISTENING_LOG, listeningUrls, ROOT } from '../conformance/harness.ts';
import { type Proc, rmDir, startProcess, tmpDir } from '../helpers/process.ts';

const KEY = 'workers-test-admin-key-0123';
const dirs: string[] = [];
const procs: Proc[] = [];
let fns: FunctionServers;
before(async () => {
  fns = await startFunctions();
});
after(async () => {
  for (const p of procs) await p.kill('SIGKILL', 0);
  for (const d of dirs) await rmDir(d);
  await fns?.close();
});

/** One request on a fresh connection (`agent: false`), so that cluster hands each one to the next worker. */
function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false, headers: { connection: 'close', ...headers } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        body += c;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function admin(adminUrl: string, method: string, path: string, body?: unknown) {
  const res = await fetch(`${adminUrl}/apisix/admin${path}`, {
    method,
    headers: { 'x-api-key': KEY },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, text: await res.text() };
}

/** The pids whose parent is `pid` (the cluster workers of a primary). */
async function children(pid: number): Promise<number[]> {
  const out: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = await readFile(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return out.sort();
}

/** The TCP ports `pid` listens on (its socket inodes matched against /proc/net/tcp's listening entries). */
async function listeningPorts(pid: number): Promise<number[]> {
  const inodes = new Set<string>();
  for (const fd of await readdir(`/proc/${pid}/fd`)) {
    const m = /^socket:\[(\d+)\]$/.exec(await readlink(`/proc/${pid}/fd/${fd}`).catch(() => ''));
    if (m) inodes.add(m[1]!);
  }
  const ports: number[] = [];
  for (const line of (await readFile('/proc/net/tcp', 'utf8')).split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[3] === '0A' && inodes.has(f[9]!)) ports.push(Number.parseInt(f[1]!.split(':')[1]!, 16));
  }
  return ports;
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const LAUNCH = {
  node: { cmd: process.execPath, args: ['dist/runtime/node.js'] },
  bun: { cmd: join(ROOT, 'node_modules/.bin/bun'), args: ['run', 'src/runtime/bun.ts'] },
  // As a user starts it: the task computes the permissions (the primary's child processes are the workers).
  deno: { cmd: join(ROOT, 'node_modules/.bin/deno'), args: ['task', '--quiet', 'start'] },
};

async function startCluster(env: Record<string, string | undefined> = {}, runtime: 'node' | 'bun' | 'deno' = 'node') {
  const dataDir = await tmpDir('fngate-workers-');
  dirs.push(dataDir);
  const proc = await startProcess({
    ...LAUNCH[runtime],
    cwd: ROOT,
    env: {
      NO_COLOR: '1',
      DATA_DIR: dataDir,
      ADMIN_KEY: KEY,
      HOST: '127.0.0.1',
      PROXY_PORT: '0',
      ADMIN_PORT: '0',
      STATUS_PORT: '0',
      PROMETHEUS_PORT: '0',
      PROMETHEUS_REFRESH_INTERVAL: '0',
      LOG_LEVEL: 'info',
      ACCESS_LOG: 'off',
      WORKERS: '2',
      ...env,
    },
    readyLog: /fngate status API listening on http:\/\/\S+:\d+\n/,
    timeoutMs: 30_000,
  });
  procs.push(proc);
  const statusUrl = /fngate status API listening on (http:\/\/\S+:\d+)\n/.exec(proc.stdout())![1]!;
  // Polled from the moment the status API listens: the answers until every worker serves.
  const early: { status: number; body: string }[] = [];
  await until('/status/ready to answer 200', async () => {
    const r = await get(`${statusUrl}/status/ready`);
    early.push(r);
    return r.status === 200 ? true : undefined;
  });
  await until('both workers to listen', async () => (LISTENING_LOG.test(proc.stdout()) ? true : undefined));
  const { proxyUrl, adminUrl } = listeningUrls(proc);
  const metricsUrl = /fngate prometheus listening on (http:\/\/\S+:\d+)\n/.exec(proc.stdout())![1]!;
  if (runtime !== 'node' && env.WORKERS !== '1') {
    // Every worker listens on the same port (the primary picked it for PROXY_PORT=0).
    await until('both workers to listen', async () =>
      (proc.stdout().match(/fngate proxy listening on /g) ?? []).length === 2 ? true : undefined,
    );
    const ports = new Set([...proc.stdout().matchAll(/fngate proxy listening on http:\/\/\S+:(\d+)\n/g)].map((m) => m[1]));
    assert.equal(ports.size, 1, proc.stdout());
  }
  // `deno task` runs the gateway as its child: the primary is that child.
  const primary = runtime === 'deno' ? (await children(proc.pid))[0]! : proc.pid;
  return { proc, primary, proxyUrl: proxyUrl.replace('0.0.0.0', '127.0.0.1'), adminUrl, statusUrl, metricsUrl, early };
}

/**
 * Filler routes (Deno KV takes 64 KiB per value, so 60 KB bodies) make every state the workers receive ~0.7 MB, so
 * that applying one takes long enough to be seen if an Admin API answer did not wait for every worker (`await
 * this.sync()` in src/runtime/replica.ts): without that wait the Bun and Deno tests below fail (checked).
 */
async function fill(adminUrl: string): Promise<void> {
  for (let i = 0; i < 12; i++) {
    const put = await admin(adminUrl, 'PUT', `/routes/fill-${i}`, {
      uri: `/fill-${i}`,
      plugins: { 'response-rewrite': { body: 'x'.repeat(60_000) } },
      upstream: { type: 'roundrobin', nodes: { [`127.0.0.1:${fns.ports.echo}`]: 1 } },
    });
    assert.equal(put.status, 201, put.text);
  }
}

test('WORKERS=2: every Admin API write is served by every worker on the next request; status API; metrics summed', async () => {
  const gw = await startCluster();
  // Before the workers reported, /status/ready said so with APISIX's body; then 200 with APISIX's.
  const first = gw.early[0]!;
  assert.equal(first.status, 503, `the first /status/ready answer came after the workers were up: ${JSON.stringify(gw.early)}`);
  assert.match(first.body, /^\{"status":"error","error":"(worker count: 2 but status report count: [01]|worker id: \d+ has not received configuration)"\}$/);
  assert.deepEqual(gw.early.at(-1), { status: 200, body: '{"status":"ok"}' });
  assert.deepEqual(await get(`${gw.statusUrl}/status`), { status: 200, body: '{"status":"ok"}' });
  assert.equal((await get(`${gw.statusUrl}/elsewhere`)).status, 404);
  const workers = await children(gw.proc.pid);
  assert.equal(workers.length, 2, 'two worker processes');

  // 50 rounds: write a new answer, then 16 requests on fresh connections (cluster's round-robin alternates the
  // workers) must all see it. On Node this holds even without the Admin API's wait for the workers' acks (tried with
  // the Deno test's 0.7 MB states too): cluster hands each connection to a worker over the same IPC channel that
  // carried the state before it, so the worker has the state first. The Bun and Deno tests below are the ones that
  // fail without the wait (their kernels pick the worker: reusePort).
  let requests = 0;
  for (let round = 0; round < 50; round++) {
    const put = await admin(gw.adminUrl, 'PUT', '/routes/r', {
      uri: '/v',
      plugins: { 'response-rewrite': { body: `round ${round}` }, prometheus: {} },
      upstream: { type: 'roundrobin', nodes: { [`127.0.0.1:${fns.ports.echo}`]: 1 } },
    });
    assert.ok(put.status === 200 || put.status === 201, put.text);
    const answers = await Promise.all(Array.from({ length: 16 }, () => get(`${gw.proxyUrl}/v`)));
    requests += answers.length;
    for (const a of answers) assert.deepEqual(a, { status: 200, body: `round ${round}` }, `round ${round}`);
  }
  // A delete, too.
  assert.equal((await admin(gw.adminUrl, 'DELETE', '/routes/r')).status, 200);
  const gone = await Promise.all(Array.from({ length: 16 }, () => get(`${gw.proxyUrl}/v`)));
  requests += gone.length;
  for (const a of gone) assert.equal(a.status, 404);

  // One export for both workers: the request counts add up to every request made (one worker alone has half).
  // The dashboard (the Admin API's origin) may read the merged export from the browser; another page may not.
  const adminOrigin = new URL(gw.adminUrl).origin;
  const scrape = await fetch(`${gw.metricsUrl}/apisix/prometheus/metrics`, { headers: { origin: adminOrigin } });
  assert.equal(scrape.headers.get('access-control-allow-origin'), adminOrigin);
  assert.equal(scrape.headers.get('vary'), 'Origin');
  const metrics = await scrape.text();
  const evil = await fetch(`${gw.metricsUrl}/apisix/prometheus/metrics`, { headers: { origin: 'http://evil.example' } });
  assert.equal(evil.headers.get('access-control-allow-origin'), null);
  await evil.text();
  const total = Number(/^apisix_http_requests_total (\d+)$/m.exec(metrics)?.[1]);
  assert.equal(total, requests, metrics.slice(0, 2000));
  const status200 = [...metrics.matchAll(/^apisix_http_status\{code="200",route="r"[^}]*\} (\d+)$/gm)].reduce(
    (n, m) => n + Number(m[1]),
    0,
  );
  assert.equal(status200, 50 * 16);
  assert.equal((metrics.match(/^apisix_node_info\{/gm) ?? []).length, 1, 'one node_info series');
  assert.match(metrics, /^apisix_node_info\{[^}]*\} 1$/m);
});

/**
 * With `/slow` routed: a worker killed is logged, replaced and ready again, and the new one serves the config
 * written before it started; then SIGTERM to the primary alone (as from Kubernetes) lets the requests in flight on
 * the workers finish, and everything exits 0 without a restart during the drain.
 */
async function killOneThenDrain(gw: Awaited<ReturnType<typeof startCluster>>, primary: number): Promise<void> {
  const [victim, survivor] = await children(primary);
  process.kill(victim!, 'SIGKILL');
  await until('the death to be logged', async () =>
    /workers: a worker died; starting another/.test(gw.proc.stderr()) ? true : undefined,
  );
  assert.match(gw.proc.stderr(), new RegExp(`"pid":${victim},"code":null,"signal":"SIGKILL"`));
  const replaced = await until('a new worker', async () => {
    const now = await children(primary);
    return now.length === 2 && !now.includes(victim!) ? now : undefined;
  });
  assert.ok(replaced.includes(survivor!));
  await until('/status/ready 200 again', async () =>
    (await get(`${gw.statusUrl}/status/ready`)).status === 200 ? true : undefined,
  );
  const answers = await Promise.all(Array.from({ length: 8 }, () => get(`${gw.proxyUrl}/slow?delay=1`)));
  for (const a of answers) assert.deepEqual(a, { status: 200, body: 'slow done' });

  const inflight = Array.from({ length: 4 }, () => get(`${gw.proxyUrl}/slow?delay=1500`));
  await new Promise((r) => setTimeout(r, 300));
  process.kill(primary, 'SIGTERM');
  for (const a of await Promise.all(inflight)) assert.deepEqual(a, { status: 200, body: 'slow done' });
  const exit = await Promise.race([
    gw.proc.waitExit(),
    new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 15_000).unref()),
  ]);
  assert.deepEqual(exit, { code: 0, signal: null });
  for (const pid of replaced) assert.equal(alive(pid), false, `worker ${pid} outlived the primary`);
  assert.equal((gw.proc.stdout().match(/SIGTERM: no new connections/g) ?? []).length, 3, gw.proc.stdout());
  assert.doesNotMatch(gw.proc.stderr(), /starting another[\s\S]*starting another/, 'no restart during the drain');
}

test('WORKERS=2: a worker that dies is restarted and logged; SIGTERM to the primary drains every worker', async () => {
  const gw = await startCluster({ SHUTDOWN_TIMEOUT: '10' });
  const put = await admin(gw.adminUrl, 'PUT', '/routes/slow', {
    uri: '/slow',
    upstream: { type: 'roundrobin', nodes: { [`127.0.0.1:${fns.ports.slow}`]: 1 } },
  });
  assert.equal(put.status, 201, put.text);
  await killOneThenDrain(gw, gw.proc.pid);
});

for (const runtime of ['node', 'deno'] as const) {
  test(`WORKERS=1 (${runtime}): one process, the status API ready once the config is loaded`, async () => {
    const gw = await startCluster({ WORKERS: '1' }, runtime);
    assert.deepEqual(await children(gw.primary), []);
    assert.deepEqual(gw.early, [{ status: 200, body: '{"status":"ok"}' }]);
    assert.deepEqual(await get(`${gw.statusUrl}/status`), { status: 200, body: '{"status":"ok"}' });
  });
}

test('Bun, WORKERS=2 (node:cluster, Bun.serve reusePort): every write is served by every worker; metrics summed', async () => {
  // Started without the allocator setting `npm run start:bun` gives (src/runtime/bun-allocator.ts): the primary
  // hands it to the workers it forks, which serve every request.
  const gw = await startCluster({ MIMALLOC_PURGE_DELAY: undefined }, 'bun');
  assert.equal(gw.early[0]!.status, 503, JSON.stringify(gw.early));
  const environ = async (pid: number) => (await readFile(`/proc/${pid}/environ`, 'utf8')).split('\0');
  assert.ok(!(await environ(gw.primary)).some((kv) => kv.startsWith('MIMALLOC_PURGE_DELAY=')));
  const workers = await children(gw.primary);
  assert.equal(workers.length, 2);
  for (const pid of workers) assert.ok((await environ(pid)).includes('MIMALLOC_PURGE_DELAY=-1'), `worker ${pid}`);
  // Bun.serve's reusePort lets the kernel pick the worker, so a write acknowledged before every worker applied it
  // shows here (with the wait removed: 7 of 9 runs failed within 20 rounds, at rounds 0-17; 0 of 4 without the filler).
  await fill(gw.adminUrl);
  let requests = 0;
  for (let round = 0; round < 25; round++) {
    const put = await admin(gw.adminUrl, 'PUT', '/routes/r', {
      uri: '/v',
      plugins: { 'response-rewrite': { body: `round ${round}` } },
      upstream: { type: 'roundrobin', nodes: { [`127.0.0.1:${fns.ports.echo}`]: 1 } },
    });
    assert.ok(put.status === 200 || put.status === 201, put.text);
    const answers = await Promise.all(Array.from({ length: 16 }, () => get(`${gw.proxyUrl}/v`)));
    requests += answers.length;
    for (const a of answers) assert.deepEqual(a, { status: 200, body: `round ${round}` }, `round ${round}`);
  }
  const metrics = await (await fetch(`${gw.metricsUrl}/apisix/prometheus/metrics`)).text();
  assert.equal(Number(/^apisix_http_requests_total (\d+)$/m.exec(metrics)?.[1]), requests);
  process.kill(gw.proc.pid, 'SIGTERM');
  assert.deepEqual(await gw.proc.waitExit(), { code: 0, signal: null });
});

test('Deno, WORKERS=2 (workers started with Deno.Command, Deno.serve reusePort): writes served by every worker, metrics summed, a dead worker restarted, SIGTERM drains', async () => {
  const gw = await startCluster({ SHUTDOWN_TIMEOUT: '10', PROXY_HTTPS_PORT: '0' }, 'deno');
  // The TLS port too: one port, chosen by the primary, for both workers.
  const tlsPorts = [...gw.proc.stdout().matchAll(/fngate proxy \(TLS\) listening on https:\/\/\S+:(\d+)\n/g)].map((m) => m[1]);
  assert.equal(tlsPorts.length, 2, gw.proc.stdout());
  assert.equal(new Set(tlsPorts).size, 1, gw.proc.stdout());
  assert.equal(gw.early[0]!.status, 503, JSON.stringify(gw.early));
  assert.match(gw.early[0]!.body, /^\{"status":"error","error":"(worker count: 2 but status report count: [01]|worker id: \d+ has not received configuration)"\}$/);
  const workers = await children(gw.primary);
  assert.equal(workers.length, 2, 'two worker processes');
  // The primary may run the deno binary and nothing else; the workers may neither run nor read anything.
  const cmdline = async (pid: number) => (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
  const primaryArgs = await cmdline(gw.primary);
  assert.deepEqual(primaryArgs.filter((a) => a.startsWith('--allow-run')), [`--allow-run=${join(ROOT, 'node_modules/deno/deno')}`]);
  for (const pid of workers) {
    const args = await cmdline(pid);
    assert.ok(args.includes('--proxy-worker'), args.join(' '));
    assert.deepEqual(args.filter((a) => /^--allow-(run|read|sys|ffi|all)|^-A$/.test(a)), [], args.join(' '));
  }

  // The workers' channel (a loopback port of the primary's): a stranger without a worker's token gets nothing and
  // is cut off, whether it sends a wrong token or a long line.
  const known = [gw.adminUrl, gw.statusUrl, gw.metricsUrl].map((u) => Number(new URL(u).port));
  const channel = (await listeningPorts(gw.primary)).filter((p) => !known.includes(p));
  assert.equal(channel.length, 1, `the primary's other listening ports: ${channel}`);
  for (const probe of [`"${'0'.repeat(48)}"\n{"t":"hello"}\n`, 'x'.repeat(4096)]) {
    const got = await new Promise<{ data: string; closed: boolean }>((resolve) => {
      let data = '';
      const sock = connect(channel[0]!, '127.0.0.1', () => sock.write(probe));
      sock.setEncoding('utf8');
      sock.on('data', (c: string) => {
        data += c;
      });
      sock.on('error', () => {});
      sock.on('close', () => resolve({ data, closed: true }));
      setTimeout(() => {
        sock.destroy();
        resolve({ data, closed: false });
      }, 3_000).unref();
    });
    assert.deepEqual(got, { data: '', closed: true }, probe.slice(0, 60));
  }

  await fill(gw.adminUrl);
  let requests = 0;
  const hammer = async (round: number) => {
    const answers = await Promise.all(Array.from({ length: 16 }, () => get(`${gw.proxyUrl}/v`)));
    requests += answers.length;
    for (const a of answers) assert.deepEqual(a, { status: 200, body: `round ${round}` }, `round ${round}`);
  };
  for (let round = 0; round < 20; round++) {
    const put = await admin(gw.adminUrl, 'PUT', '/routes/r', {
      uri: '/v',
      plugins: { 'response-rewrite': { body: `round ${round}` }, prometheus: {} },
      upstream: { type: 'roundrobin', nodes: { [`127.0.0.1:${fns.ports.echo}`]: 1 } },
    });
    assert.ok(put.status === 200 || put.status === 201, put.text);
    await hammer(round);
  }
  const metrics = await (await fetch(`${gw.metricsUrl}/apisix/prometheus/metrics`)).text();
  assert.equal(Number(/^apisix_http_requests_total (\d+)$/m.exec(metrics)?.[1]), requests, metrics.slice(0, 2000));
  assert.equal((metrics.match(/^apisix_node_info\{/gm) ?? []).length, 1, 'one node_info series');

  // A worker killed: logged, replaced, ready again, and the new one serves the config written before it started.
  const slow = await admin(gw.adminUrl, 'PUT', '/routes/slow', {
    uri: '/slow',
    upstream: { type: 'roundrobin', nodes: { [`127.0.0.1:${fns.ports.slow}`]: 1 } },
  });
  assert.equal(slow.status, 201, slow.text);
  await killOneThenDrain(gw, gw.primary);
});

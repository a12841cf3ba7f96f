/**
 * Soak test: sustained load through a route to a function while the config changes every second.
 *
 *   npx tsx bench/soak.ts [--seconds 60] [--concurrency 200] [--pool <n>] [--warmup 10] [--rss-bound 32]
 *
 * Loopback only and bounded in time. Builds dist/ if it is missing or older than src/, starts a test function
 * (function-sample, its own process) and the Node gateway (its own process), then drives `concurrency`
 * keep-alive connections from this process with an undici Pool (one request in flight per connection) for
 * `seconds`, while a second loop PUTs the served route (changing its `desc`, so the snapshot is rebuilt on
 * the request path) and adds/removes a churn route through the Admin API once per second.
 * `--pool` is the route's openfunction `keepalive_pool` (default: = concurrency). fngate's Node forwarder
 * uses it as the cap on connections to the function, so APISIX's default of 5 would queue the load at the
 * forwarder (nginx caps only the *idle* kept connections); try `--pool 5` to see that.
 *
 * Prints: requests served, errors split into the gateway's fault (any non-200 or wrong body from the proxy,
 * a reset connection, a failed admin write) and other (requests this script cut at the end), p50/p90/p99/max
 * latency, throughput, and the gateway's RSS at start (after `--warmup` seconds of the same load, default
 * 10) and at the end (still under load, just before it stops), with samples every second in between.
 * Exit code 1, with the reason printed last, when any error was the gateway's fault or when the end RSS
 * exceeds the start RSS by more than `--rss-bound` MiB (default 32).
 */
import { execFileSync } from 'node:child_process';
import { setMaxListeners } from 'node:events';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { Pool } from 'undici';
import { freePort, type Proc, rmDir, startProcess, tmpDir } from '../test/helpers/process.ts';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** Newest mtime under `dir` (files only). */
function newest(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) t = Math.max(t, statSync(join(e.parentPath, e.name)).mtimeMs);
  }
  return t;
}

/** `npm run build` when dist/runtime/node.js is missing or older than anything in src/. */
export function buildIfNeeded(): void {
  const entry = join(ROOT, 'dist/runtime/node.js');
  let built = 0;
  try {
    built = statSync(entry).mtimeMs;
  } catch {
    built = 0;
  }
  if (built >= newest(join(ROOT, 'src'))) return;
  process.stdout.write('building dist/ (npm run build) ...\n');
  execFileSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'inherit' });
}

export function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Math.round(Number(m[1]) / 102.4) / 10 : Number.NaN;
}

export function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

export interface Setup {
  gateway: Proc;
  fn: Proc;
  fnPort: number;
  proxyPort: number;
  adminPort: number;
  key: string;
  admin(method: string, path: string, body?: unknown): Promise<number>;
  stop(): Promise<void>;
}

/** Starts function-sample and the gateway on loopback; the route `/soak/*` forwards to the function. */
export async function startSetup(extraEnv: Record<string, string> = {}, pool = 5): Promise<Setup> {
  const fnPort = await freePort();
  const fn = await startProcess({
    cmd: process.execPath,
    args: ['--import', 'tsx', join(ROOT, 'test/functions/serve.ts'), '--only', 'function-sample', '--port', String(fnPort)],
    cwd: ROOT,
    readyUrl: `http://127.0.0.1:${fnPort}/`,
  });
  const proxyPort = await freePort();
  const adminPort = await freePort();
  const key = randomBytes(16).toString('hex');
  const dataDir = await tmpDir('fngate-bench-');
  const gateway = await startProcess({
    cmd: process.execPath,
    args: [join(ROOT, 'dist/runtime/node.js')],
    cwd: ROOT,
    env: {
      HOST: '127.0.0.1',
      PROXY_PORT: String(proxyPort),
      ADMIN_HOST: '127.0.0.1',
      ADMIN_PORT: String(adminPort),
      ADMIN_KEY: key,
      DATA_DIR: dataDir,
      LOG_LEVEL: 'warn',
      // One proxy process, none of `npm start`'s extra ports.
      WORKERS: '1', STATUS_PORT: 'off', PROXY_HTTPS_PORT: 'off',
      ...extraEnv,
    },
    readyUrl: `http://127.0.0.1:${adminPort}/apisix/admin`,
  });
  const admin = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`http://127.0.0.1:${adminPort}/apisix/admin${path}`, {
      method,
      headers: { 'x-api-key': key },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    await res.arrayBuffer();
    return res.status;
  };
  const status = await admin('PUT', '/routes/soak', soakRoute(fnPort, 0, pool));
  if (status !== 201) throw new Error(`PUT /routes/soak answered ${status}`);
  return {
    gateway,
    fn,
    fnPort,
    proxyPort,
    adminPort,
    key,
    admin,
    async stop() {
      await gateway.kill('SIGTERM');
      await fn.kill('SIGTERM');
      await rmDir(dataDir);
    },
  };
}

export function soakRoute(fnPort: number, version: number, pool: number) {
  return {
    uri: '/soak/*',
    desc: `version ${version}`,
    plugins: { openfunction: { function_uri: `http://127.0.0.1:${fnPort}/`, timeout: 10_000, keepalive_pool: pool } },
  };
}

/** Latency histogram: 0.1 ms buckets up to 10 s, and one overflow bucket. */
class Histogram {
  private readonly buckets = new Uint32Array(100_001);
  count = 0;
  max = 0;
  add(ms: number): void {
    this.buckets[Math.min(100_000, Math.floor(ms * 10))]!++;
    this.count++;
    if (ms > this.max) this.max = ms;
  }
  reset(): void {
    this.buckets.fill(0);
    this.count = 0;
    this.max = 0;
  }
  quantile(q: number): number {
    const target = Math.ceil(this.count * q);
    let seen = 0;
    for (let i = 0; i < this.buckets.length; i++) {
      seen += this.buckets[i]!;
      if (seen >= target) return (i + 1) / 10;
    }
    return this.max;
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string', default: '60' },
      concurrency: { type: 'string', default: '200' },
      pool: { type: 'string' },
      warmup: { type: 'string', default: '10' },
      'rss-bound': { type: 'string', default: '32' },
    },
  });
  const seconds = Number(values.seconds);
  const concurrency = Number(values.concurrency);
  const poolSize = values.pool === undefined ? concurrency : Number(values.pool);
  const warmupSeconds = Number(values.warmup);
  const rssBound = Number(values['rss-bound']);
  if (!(seconds > 0 && seconds <= 3600) || !(concurrency >= 1 && concurrency <= 20_000)) {
    throw new Error('--seconds must be in (0, 3600] and --concurrency in [1, 20000]');
  }
  if (!(warmupSeconds >= 0 && warmupSeconds <= 600) || !(rssBound > 0)) {
    throw new Error('--warmup must be in [0, 600] seconds and --rss-bound a positive number of MiB');
  }
  buildIfNeeded();
  const setup = await startSetup({}, poolSize);
  const fnPort = setup.fnPort;
  const pool = new Pool(`http://127.0.0.1:${setup.proxyPort}`, {
    connections: concurrency,
    pipelining: 1,
    headersTimeout: 15_000,
    bodyTimeout: 15_000,
  });

  const hist = new Histogram();
  const faults = new Map<string, number>();
  const fault = (why: string) => faults.set(why, (faults.get(why) ?? 0) + 1);
  let ok = 0;
  let cut = 0;
  let stopping = false;
  const stopController = new AbortController();
  setMaxListeners(0, stopController.signal); // one listener per in-flight request

  async function worker(w: number): Promise<void> {
    let i = 0;
    while (!stopping) {
      const name = `w${w}r${i++ % 1000}`;
      const t0 = performance.now();
      try {
        const res = await pool.request({ method: 'GET', path: `/soak/${name}`, signal: stopController.signal });
        const body = await res.body.text();
        hist.add(performance.now() - t0);
        if (res.statusCode !== 200) fault(`status ${res.statusCode}: ${body.slice(0, 120)}`);
        else if (body !== `Hello, ${name}!`) fault(`wrong body: ${body.slice(0, 60)}`);
        else ok++;
      } catch (err) {
        if (stopping) cut++;
        else fault(`${(err as { code?: string }).code ?? ''} ${(err as Error).message}`.trim());
      }
    }
  }

  // Warm-up: the same load, then the start RSS. V8 grows its heap lazily and buffers and pools reach their
  // working size under load, so RSS climbs for a while before it levels off; the bound is on what follows.
  process.stdout.write(
    `soak: ${seconds} s after a ${warmupSeconds} s warm-up, ${concurrency} connections, keepalive_pool ${poolSize}, ` +
      `RSS bound +${rssBound} MiB, gateway pid ${setup.gateway.pid}\n`,
  );
  const workers = Array.from({ length: concurrency }, (_, w) => worker(w));
  await new Promise((r) => setTimeout(r, warmupSeconds * 1000));
  const warmOk = ok;
  const warmFaults = [...faults.values()].reduce((a, b) => a + b, 0);
  hist.reset();
  const rssStart = rssMiB(setup.gateway.pid);
  const started = performance.now();

  // Config changes once per second.
  let adminOk = 0;
  let version = 0;
  let adminWorst = 0;
  const churn = (async () => {
    while (!stopping) {
      // On a fixed 1 s grid (a slow write does not push the next one back).
      await new Promise((r) => setTimeout(r, Math.max(0, started + (version + 1) * 1000 - performance.now())));
      if (stopping) break;
      version++;
      const t0 = performance.now();
      try {
        const a = await setup.admin('PUT', '/routes/soak', soakRoute(fnPort, version, poolSize));
        const b =
          version % 2
            ? await setup.admin('PUT', `/routes/churn-${version}`, { uri: `/churn/${version}`, plugins: {}, desc: 'churn' })
            : await setup.admin('DELETE', `/routes/churn-${version - 1}`);
        if (a === 200 && (b === 200 || b === 201)) adminOk++;
        else fault(`admin write answered ${a}/${b}`);
        adminWorst = Math.max(adminWorst, performance.now() - t0);
      } catch (err) {
        fault(`admin: ${(err as Error).message}`);
      }
    }
  })();

  // RSS once a second (the curve shows whether it levels off or keeps climbing).
  const rssSamples: number[] = [];
  const sampler = setInterval(() => rssSamples.push(rssMiB(setup.gateway.pid)), 1000);
  await new Promise((r) => setTimeout(r, seconds * 1000));
  clearInterval(sampler);
  // Still under load, as at the start: the two figures are comparable.
  const rssEnd = rssMiB(setup.gateway.pid);
  const elapsed = (performance.now() - started) / 1000;
  const served = ok - warmOk;
  stopping = true;
  stopController.abort();
  await Promise.all(workers);
  await churn;
  const rssIdle = rssMiB(setup.gateway.pid);
  const hwm = Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${setup.gateway.pid}/status`, 'utf8'))?.[1]) / 1024;
  await pool.close();
  const stderr = setup.gateway.stderr();
  await setup.stop();

  const totalFaults = [...faults.values()].reduce((a, b) => a + b, 0) - warmFaults;
  const q = (x: number) => hist.quantile(x).toFixed(1);
  const step = rssSamples.length > 12 ? 10 : 1;
  const lines = [
    `duration            ${elapsed.toFixed(1)} s (after a ${warmupSeconds} s warm-up), ${concurrency} keep-alive connections`,
    `requests served     ${served} (200, body checked)  = ${Math.round(served / elapsed)} req/s`,
    `errors, gateway     ${totalFaults}`,
    `errors, other       ${cut} (requests cut by this script when it stopped)`,
    `latency ms          p50 ${q(0.5)}  p90 ${q(0.9)}  p99 ${q(0.99)}  max ${hist.max.toFixed(1)}`,
    `config changes      ${adminOk} of ${version} (route re-PUT + churn route add/delete, once a second; slowest pair ${adminWorst.toFixed(0)} ms)`,
    `gateway RSS         ${rssStart} MiB at start (after the warm-up) → ${rssEnd} MiB at end, both under load; ` +
      `${rssIdle} MiB once idle; peak ${hwm.toFixed(1)} MiB`,
    `RSS every ${step} s      ${rssSamples.filter((_, i) => i % step === step - 1).join(' ')} MiB`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  for (const [why, n] of faults) process.stdout.write(`  fault ×${n}: ${why}\n`);
  if (/unexpected error/.test(stderr)) process.stdout.write(`gateway stderr:\n${stderr.slice(-2000)}\n`);
  const failures: string[] = [];
  if (totalFaults > 0) failures.push(`${totalFaults} errors were the gateway's fault`);
  const growth = rssEnd - rssStart;
  if (!(growth <= rssBound)) {
    failures.push(`gateway RSS grew by ${growth.toFixed(1)} MiB (${rssStart} → ${rssEnd}), more than the bound of ${rssBound} MiB`);
  }
  if (failures.length) process.stdout.write(`FAIL: ${failures.join('; ')}\n`);
  else process.stdout.write(`ok: no gateway errors; RSS grew by ${growth.toFixed(1)} MiB (bound ${rssBound} MiB)\n`);
  process.exitCode = failures.length ? 1 : 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err) => {
    console.error(`soak: ${err instanceof Error ? err.stack : String(err)}`);
    process.exit(2);
  });
}

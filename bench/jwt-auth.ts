/**
 * jwt-auth RS256 verification cost per request, per runtime (issue 14, "Performance"): printed, never asserted.
 *
 * Each runtime serves one standalone config (CONFIG_FILE; on workerd the STANDALONE_CONFIG var) with two routes
 * answered by `mocking` (no upstream, so only the gateway works): `/plain` and `/jwt`, the same plus `jwt-auth`
 * whose consumer has an RS256 `public_key` (2048-bit). wrk (pinned to the load core) alternates slices between
 * the two, the `/jwt` slices carrying a valid token; the gateway's process tree is pinned to its own core and its
 * CPU time per request is measured per slice. The jwt-auth cost is the median over pairs of
 * (CPU µs per `/jwt` request − CPU µs per `/plain` request); the machine's drift cancels within a pair.
 * What is cached: the imported key, once per consumer per config; every request still verifies its signature.
 *
 *   npx tsx bench/jwt-auth.ts [--runtimes node,bun,deno,workerd] [--pairs 5] [--slice 3] [--connections 16]
 */
import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportSPKI, generateKeyPair, SignJWT } from 'jose';
import { LAUNCHERS, type LaunchContext, type Target } from './lib/gateways.ts';
import { fixed, markdownTable, median } from './lib/stats.ts';
import { cpuOf, processTree, requireTools } from './lib/sys.ts';
import { writeWrkScript } from './lib/wrk.ts';

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}
const runtimes = flag('runtimes', 'node,bun,deno,workerd').split(',');
const pairs = Number(flag('pairs', '5'));
const sliceS = Number(flag('slice', '3'));
const connections = Number(flag('connections', '16'));

const tools = requireTools();
/** As `npm run bench`: the gateway on core 1, wrk on core 0. */
const GATEWAY_CORE = 1;
const LOAD_CORE = 0;
const dir = mkdtempSync(join(tmpdir(), 'fngate-bench-jwt-'));
const doneLua = writeWrkScript(dir);

const { publicKey, privateKey } = await generateKeyPair('RS256', { modulusLength: 2048 });
const token = await new SignJWT({ key: 'bench-user', exp: Math.floor(Date.now() / 1000) + 86400 })
  .setProtectedHeader({ alg: 'RS256', typ: 'JWT' })
  .sign(privateKey);

const mocking = { mocking: { response_example: 'ok', content_type: 'text/plain', with_mock_header: false } };
const config = JSON.stringify({
  routes: [
    { id: 'ready', uri: '/__bench_ready', plugins: mocking },
    { id: 'plain', uri: '/plain', plugins: mocking },
    { id: 'jwt', uri: '/jwt', plugins: { 'jwt-auth': {}, ...mocking } },
  ],
  consumers: [
    { username: 'bench', plugins: { 'jwt-auth': { key: 'bench-user', algorithm: 'RS256', public_key: await exportSPKI(publicKey) } } },
  ],
});

interface Slice {
  requests: number;
  errors: number;
  cpuUsPerReq: number;
}

function wrk(url: string, headers: string[]): Promise<{ requests: number; errors: number }> {
  const args = ['-c', String(LOAD_CORE), tools.wrk, '-t1', `-c${connections}`, `-d${sliceS}s`, '-s', doneLua];
  for (const h of headers) args.push('-H', h);
  args.push(url);
  return new Promise((resolve, reject) => {
    execFile(tools.taskset, args, { maxBuffer: 1 << 20 }, (err, stdout) => {
      if (err) return reject(err);
      const line = stdout.split('\n').find((l) => l.startsWith('WRKJSON '));
      if (!line) return reject(new Error(`wrk printed no summary:\n${stdout}`));
      const r = JSON.parse(line.slice(8));
      resolve({ requests: r.requests, errors: r.connect + r.read + r.write + r.status + r.timeout });
    });
  });
}

async function slice(t: Target, path: string, headers: string[]): Promise<Slice> {
  const pids = processTree(t.pid);
  const cpu0 = cpuOf(pids);
  const r = await wrk(`${t.url}${path}`, headers);
  const cpu = cpuOf(pids) - cpu0;
  return { requests: r.requests, errors: r.errors, cpuUsPerReq: (cpu * 1e6) / Math.max(1, r.requests) };
}

const rows: string[][] = [];
for (const runtime of runtimes) {
  const launch = LAUNCHERS[runtime];
  if (!launch) throw new Error(`unknown runtime ${runtime}`);
  const ctx: LaunchContext = { taskset: tools.taskset, core: GATEWAY_CORE, dir, upstreamPort: 1, config, authorization: '' };
  const t = await launch(ctx);
  try {
    const check = await fetch(`${t.url}/jwt`, { headers: { authorization: `Bearer ${token}` } });
    const refused = await fetch(`${t.url}/jwt`);
    if (check.status !== 200 || refused.status !== 401) {
      throw new Error(`${runtime}: /jwt answered ${check.status} with the token and ${refused.status} without`);
    }
    await slice(t, '/jwt', [`Authorization: Bearer ${token}`]); // warm-up
    const deltas: number[] = [];
    const plain: number[] = [];
    const jwt: number[] = [];
    let errors = 0;
    for (let i = 0; i < pairs; i++) {
      const order = i % 2 === 0 ? ['plain', 'jwt'] : ['jwt', 'plain'];
      const got: Record<string, Slice> = {};
      for (const which of order) {
        got[which] = which === 'jwt' ? await slice(t, '/jwt', [`Authorization: Bearer ${token}`]) : await slice(t, '/plain', []);
      }
      errors += got.plain!.errors + got.jwt!.errors;
      plain.push(got.plain!.cpuUsPerReq);
      jwt.push(got.jwt!.cpuUsPerReq);
      deltas.push(got.jwt!.cpuUsPerReq - got.plain!.cpuUsPerReq);
    }
    rows.push([runtime, fixed(median(plain), 1), fixed(median(jwt), 1), fixed(median(deltas), 1), String(errors)]);
    console.error(`${runtime}: jwt-auth RS256 ${fixed(median(deltas), 1)} µs CPU per request`);
  } finally {
    await t.stop();
  }
}

console.log(`\njwt-auth RS256 (2048-bit key), CPU µs per request of the gateway's process tree, median of ${pairs} pairs of ${sliceS} s wrk slices (-c${connections})\n`);
console.log(markdownTable(['runtime', 'route without jwt-auth', 'with jwt-auth', 'jwt-auth costs', 'errors'], rows));

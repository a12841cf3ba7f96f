/**
 * The function platforms' cost (issue 15, "Performance"): printed, never asserted.
 *
 * 1. SigV4 signing cost per request on Node, Bun and Deno: bench/lib/sigv4-micro.ts signs `--n` calls with
 *    fngate's `signCall` (aws4fetch's AwsV4Signer over WebCrypto, the derived key cached per route as the plugin
 *    does; a 136-byte body hashed) in `--rounds` rounds on each runtime, pinned to the gateway core. Prints the
 *    median µs per signature and the range over the rounds. (workerd is not measured: its clock does not advance
 *    during a request's synchronous work, so an in-Worker loop cannot time itself.)
 * 2. aws-lambda route CPU ÷ openfunction route CPU on Node: one gateway (standalone CONFIG_FILE) pinned to core 1
 *    with `/of/*` (openfunction with a service_token, as `npm run bench`) and `/aws/*` (aws-lambda with
 *    `authorization.iam`: every request buffered, hashed and signed) to the same nginx upstream; wrk on core 0
 *    alternates slices of the two (A B, B A, ...), each pair gives a ratio of the gateway's CPU µs per request, so
 *    the machine's drift cancels. Prints every pair, the median ratio with its range, and how many pairs aws cost more.
 *
 *   npx tsx bench/serverless.ts [--pairs 6] [--slice 3] [--connections 16] [--n 5000] [--rounds 7] [--runtimes node,bun,deno]
 */
import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launchNode } from './lib/gateways.ts';
import { helloBody, startUpstream } from './lib/nginx.ts';
import { SERVICE_TOKEN } from './lib/route.ts';
import { fixed, markdownTable, median, ratio, spread } from './lib/stats.ts';
import { BIN, cpuOf, processTree, requireTools, ROOT } from './lib/sys.ts';
import { freePort } from '../test/helpers/process.ts';
import { runWrk, writeWrkScript } from './lib/wrk.ts';

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}
const pairs = Number(flag('pairs', '6'));
const sliceS = Number(flag('slice', '3'));
const connections = Number(flag('connections', '16'));
const n = flag('n', '5000');
const rounds = flag('rounds', '7');
const runtimes = flag('runtimes', 'node,bun,deno').split(',');

const tools = requireTools();
const GATEWAY_CORE = 1;
const LOAD_CORE = 0;
const dir = mkdtempSync(join(tmpdir(), 'fngate-bench-serverless-'));

// ---- 1. SigV4 signing per runtime ----
const micro = join(ROOT, 'bench/lib/sigv4-micro.ts');
const commands: Record<string, string[]> = {
  node: [process.execPath, '--import', 'tsx', micro],
  bun: [BIN.bun, 'run', micro],
  deno: [BIN.deno, 'run', '-A', micro],
};
const signRows: string[][] = [];
for (const rt of runtimes) {
  const cmd = commands[rt];
  if (!cmd) throw new Error(`unknown runtime ${rt}`);
  const out = await new Promise<string>((resolve, reject) =>
    execFile(tools.taskset, ['-c', String(GATEWAY_CORE), ...cmd, '--n', n, '--rounds', rounds], { cwd: ROOT, maxBuffer: 1 << 20 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${rt}: ${err.message}\n${stderr}`)) : resolve(stdout),
    ),
  );
  const line = out.split('\n').find((l) => l.startsWith('{'));
  if (!line) throw new Error(`${rt} printed no result:\n${out}`);
  const { us, wallUs } = JSON.parse(line) as { us: number[]; wallUs: number[] };
  const s = spread(us);
  const w = spread(wallUs);
  signRows.push([rt, fixed(s.median, 1), `${fixed(s.min, 1)}–${fixed(s.max, 1)}`, us.map((x) => fixed(x, 0)).join(' '), `${fixed(w.median, 1)} [${fixed(w.min, 0)}–${fixed(w.max, 0)}]`]);
  console.error(`${rt}: SigV4 ${fixed(s.median, 1)} µs per signature`);
}

// ---- 2. aws-lambda route vs openfunction route on Node ----
const upstreamPort = await freePort();
const upstream = await startUpstream(tools.nginx, tools.taskset, LOAD_CORE, dir, upstreamPort);
const fnUri = `http://127.0.0.1:${upstreamPort}/hello`;
const config = JSON.stringify({
  routes: [
    { id: 'of', uri: '/of/*', plugins: { openfunction: { function_uri: fnUri, authorization: { service_token: SERVICE_TOKEN }, keepalive_pool: 256 } } },
    {
      id: 'aws',
      uri: '/aws/*',
      plugins: {
        'aws-lambda': {
          function_uri: fnUri,
          keepalive_pool: 256,
          authorization: { iam: { accesskey: 'AKIDEXAMPLE', secretkey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY', service: 'lambda' } },
        },
      },
    },
  ],
});
const script = writeWrkScript(dir);
const t = await launchNode({ taskset: tools.taskset, core: GATEWAY_CORE, dir, upstreamPort, config, authorization: '' });
const pairRows: string[][] = [];
const ratios: number[] = [];
const ofUs: number[] = [];
const awsUs: number[] = [];
try {
  for (const path of ['/of/world', '/aws/world']) {
    const res = await fetch(`${t.url}${path}`);
    const text = await res.text();
    if (res.status !== 200 || text !== helloBody('world')) throw new Error(`${path} answered ${res.status}: ${text.slice(0, 200)}`);
  }
  const base = { wrk: tools.wrk, taskset: tools.taskset, core: LOAD_CORE, script, connections };
  const slice = async (path: string) => {
    const before = cpuOf(processTree(t.pid));
    const r = await runWrk({ ...base, url: `${t.url}${path}`, seconds: sliceS });
    if (r.errors > 0 || r.requests === 0) throw new Error(`wrk ${path}: ${r.requests} requests, ${r.errors} errors`);
    return ((cpuOf(processTree(t.pid)) - before) * 1e6) / r.requests;
  };
  await slice('/of/world');
  await slice('/aws/world'); // warm-up
  for (let i = 0; i < pairs; i++) {
    let of: number;
    let aws: number;
    if (i % 2 === 0) {
      of = await slice('/of/world');
      aws = await slice('/aws/world');
    } else {
      aws = await slice('/aws/world');
      of = await slice('/of/world');
    }
    ofUs.push(of);
    awsUs.push(aws);
    ratios.push(aws / of);
    pairRows.push([String(i + 1), fixed(of, 1), fixed(aws, 1), fixed(aws / of, 2)]);
  }
} finally {
  await t.stop();
  await upstream.stop();
}

console.log(`\nSigV4 signing (signCall: aws4fetch AwsV4Signer + WebCrypto, key cached), process CPU µs per signature, ${rounds} rounds of ${n}, pinned to one core\n`);
console.log(markdownTable(['runtime', 'CPU µs median', 'range', 'rounds', 'wall µs median [range]'], signRows));
console.log(`\nNode gateway CPU µs per request (process tree), ${pairs} pairs of ${sliceS} s wrk slices (-c${connections}), same nginx upstream\n`);
console.log(markdownTable(['pair', 'openfunction', 'aws-lambda (SigV4)', 'aws ÷ openfunction'], pairRows));
const rs = spread(ratios);
console.log(
  `\naws-lambda ÷ openfunction CPU per request: median ${ratio(rs)} (range over pairs); openfunction ${fixed(median(ofUs), 1)} µs, aws-lambda ${fixed(median(awsUs), 1)} µs; aws-lambda cost more in ${ratios.filter((r) => r > 1).length}/${pairs} pairs`,
);

/**
 * SigV4 signing cost on the runtime that runs this file (node via tsx, `bun run`, `deno run`): signs `--n` calls
 * with fngate's `signCall` (aws4fetch + WebCrypto, the signing key cached as in a route), `--rounds` times, and
 * prints one JSON line {runtime, us: [process CPU µs per signature of each round, all threads: WebCrypto may run
 * on a thread pool], wallUs: [wall µs]}. CPU rather than wall time: on a shared machine the wall clock also counts
 * the time other processes held the core. Used by bench/serverless.ts.
 */
import { SigningKeys, signCall } from '../../src/core/plugins/aws-lambda.ts';
import type { FunctionCall } from '../../src/core/plugins/serverless.ts';

const argv: string[] = (globalThis as { Deno?: { args: string[] } }).Deno?.args ?? (globalThis as unknown as { process: { argv: string[] } }).process.argv.slice(2);
const arg = (name: string, def: number) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? Number(argv[i + 1]) : def;
};
const n = arg('n', 5000);
const rounds = arg('rounds', 7);
const iam = { accesskey: 'AKIDEXAMPLE', secretkey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY', aws_region: 'us-east-1', service: 'lambda' };
const keys = new SigningKeys(iam);
const body = new TextEncoder().encode('{"hello":"world"}'.repeat(8));
const url = 'https://abcdefghij.lambda-url.us-east-1.on.aws/fn/hello%20world?b=2&a=1&flag';

const proc = (globalThis as unknown as { process: { cpuUsage(): { user: number; system: number } } }).process;
const cpu = () => {
  const u = proc.cpuUsage();
  return u.user + u.system;
};

async function round(count: number): Promise<{ cpu: number; wall: number }> {
  const t0 = performance.now();
  const c0 = cpu();
  for (let i = 0; i < count; i++) {
    const call: FunctionCall = { url, method: 'POST', headers: [] };
    await signCall(call, body, iam, keys);
  }
  return { cpu: (cpu() - c0) / count, wall: ((performance.now() - t0) * 1000) / count };
}

await round(Math.min(n, 1000)); // warm-up (JIT, key cache)
const us: number[] = [];
const wallUs: number[] = [];
for (let r = 0; r < rounds; r++) {
  const x = await round(n);
  us.push(x.cpu);
  wallUs.push(x.wall);
}
const runtime = 'Bun' in globalThis ? 'bun' : 'Deno' in globalThis ? 'deno' : 'node';
console.log(JSON.stringify({ runtime, us, wallUs }));

/**
 * Cold start with `cold_start` retries on (issue 15): the time from a function becoming ready to the first client
 * request being answered. Printed, never asserted. `npx tsx bench/cold-start.ts [--runs 20] [--runtimes
 * node,deno,bun,workerd] [--asleep 600,1400]` (after `npm run build`).
 *
 * Each run puts the function to sleep (test/functions/cold-start.ts: listener closed, connections dropped), sends one
 * GET through the gateway at once, and wakes the function after a random time in `--asleep` (ms); the figure is the
 * client's answer time minus the moment the function listened again. Two set-ups: `refused` (the gateway calls the
 * function directly: refused connects; not on workerd, whose fetch cannot tell a refused connect from a lost one)
 * and `activator` (a Knative-activator-like stand-in that answers 503 while the function is down). The route uses
 * the default `cold_start` ({} : backoff 25 ms doubling to 200 ms, equal jitter); the target is at most one backoff
 * step after readiness, ≤ 100 ms on average. Every run also checks that the function saw the request exactly once.
 */
import { parseArgs } from 'node:util';
import { startActivator, startSleepyFunction } from '../test/functions/cold-start.ts';
import type { Launched, Launcher } from '../test/conformance/harness.ts';
import { rmDir, tmpDir } from '../test/helpers/process.ts';

const { values: flags } = parseArgs({
  options: {
    runs: { type: 'string', default: '20' },
    runtimes: { type: 'string', default: 'node,deno,bun,workerd' },
    asleep: { type: 'string', default: '600,1400' },
  },
});
const RUNS = Number(flags.runs);
const [MIN_ASLEEP, MAX_ASLEEP] = flags.asleep!.split(',').map(Number) as [number, number];
const KEY = 'bench-admin-key-0123456789abcdef';

async function launch(runtime: string): Promise<{ gw: Launched; dataDir: string }> {
  const dataDir = await tmpDir('fngate-cold-bench-');
  const launcher = (await import(`../test/conformance/launchers/${runtime}.ts`)) as Launcher;
  const gw = await launcher.launch({
    dataDir,
    env: {
      HOST: '127.0.0.1',
      PROXY_PORT: '0',
      ADMIN_HOST: '127.0.0.1',
      ADMIN_PORT: '0',
      ADMIN_KEY: KEY,
      DATA_DIR: dataDir,
      LOG_LEVEL: 'warn',
      // One proxy process, none of `npm start`'s extra ports.
      WORKERS: '1', STATUS_PORT: 'off', PROXY_HTTPS_PORT: 'off',
      ACCESS_LOG: 'off',
      PROMETHEUS_PORT: 'off',
    },
  });
  return { gw, dataDir };
}

function summary(xs: number[]): string {
  const s = [...xs].sort((a, b) => a - b);
  const mean = s.reduce((a, b) => a + b, 0) / s.length;
  const p50 = s[Math.floor((s.length - 1) / 2)]!;
  return `mean ${mean.toFixed(1)} ms, p50 ${p50.toFixed(1)} ms, max ${s[s.length - 1]!.toFixed(1)} ms (n=${s.length})`;
}

const fn = await startSleepyFunction();
const lines: string[] = [];
for (const runtime of flags.runtimes!.split(',')) {
  const { gw, dataDir } = await launch(runtime);
  const activator = await startActivator(fn, '503');
  try {
    for (const setup of ['refused', 'activator'] as const) {
      if (setup === 'refused' && runtime === 'workerd') {
        lines.push(`${runtime.padEnd(8)} ${setup.padEnd(9)} n/a (workerd cannot tell a refused connect from a lost one)`);
        continue;
      }
      const target = setup === 'refused' ? fn.url : activator.url;
      const put = await fetch(`${gw.adminUrl}/apisix/admin/routes/cold`, {
        method: 'PUT',
        headers: { 'x-api-key': KEY },
        body: JSON.stringify({ uri: '/cold', plugins: { openfunction: { function_uri: `${target}/`, cold_start: {} } } }),
      });
      if (!put.ok) throw new Error(`PUT route: ${put.status} ${await put.text()}`);
      // The floor: one call through the gateway (and the activator) to the function awake, the part of each figure
      // that is not waiting for the next retry.
      const calls: number[] = [];
      for (let i = 0; i < 20; i++) {
        const t0 = performance.now();
        await (await fetch(`${gw.proxyUrl}/cold`)).arrayBuffer();
        calls.push(performance.now() - t0);
      }
      const times: number[] = [];
      let wrong = 0;
      for (let i = 0; i < RUNS; i++) {
        const asleep = MIN_ASLEEP + Math.random() * (MAX_ASLEEP - MIN_ASLEEP);
        const seen = fn.requests;
        const { woken } = await fn.sleepFor(asleep);
        const res = await fetch(`${gw.proxyUrl}/cold`);
        await res.arrayBuffer();
        const answered = performance.now();
        await woken;
        if (res.status !== 200 || fn.requests - seen !== 1) wrong++;
        else times.push(answered - fn.wokeAt);
      }
      lines.push(
        `${runtime.padEnd(8)} ${setup.padEnd(9)} readiness → first answer: ${summary(times)}; one call awake: ${summary(calls).split(',')[0]}${wrong ? `; ${wrong} runs not answered 200 exactly once` : ''}`,
      );
      console.log(lines[lines.length - 1]);
    }
  } finally {
    await activator.close();
    await gw.proc.kill('SIGTERM');
    await rmDir(dataDir);
  }
}
await fn.close();
console.log(`\nload average ${(await import('node:os')).loadavg().map((x) => x.toFixed(1)).join(' ')} on ${(await import('node:os')).cpus().length} cores`);
console.log(`Cold start, cold_start: {} (backoff 25 → 200 ms), function asleep ${MIN_ASLEEP}–${MAX_ASLEEP} ms, ${RUNS} runs:`);
for (const l of lines) console.log(l);

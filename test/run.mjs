#!/usr/bin/env node
// `npm test`: unit tests, then the black-box conformance suite against each runtime, then Node-only end-to-end tests.
// Usage: node test/run.mjs [unit] [conformance[:node|deno|bun|workerd]] [e2e] (default: all).
// Exits non-zero when anything failed.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const RUNTIMES = ['node', 'deno', 'bun', 'workerd'];
const args = process.argv.slice(2);
const want = (part) => args.length === 0 || args.some((a) => a === part || a.startsWith(`${part}:`));
const runtimes = () => {
  const picked = args.filter((a) => a.startsWith('conformance:')).map((a) => a.slice('conformance:'.length));
  return picked.length ? picked : RUNTIMES;
};
const files = (dir) =>
  readdirSync(join(root, dir))
    .filter((f) => f.endsWith('.test.ts'))
    .sort()
    .map((f) => join(dir, f));

// The Worker is bundled (and wrangler.toml read) once for the whole run, not once per test file that starts one
// (test/conformance/launchers/workerd.ts, FNGATE_WORKERD_CACHE): ~4 s saved per file on workerd.
const workerdCache = mkdtempSync(join(tmpdir(), 'fngate-workerd-cache-'));
process.on('exit', () => rmSync(workerdCache, { recursive: true, force: true }));

const summary = [];
function run(label, testArgs, env = {}) {
  console.log(`\n=== ${label}`);
  const started = Date.now();
  const res = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=spec', ...testArgs], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'inherit'],
    // The access log, the Prometheus export server (port 9091), the TLS port (9443), the status API (7085) and one
    // worker per core are the defaults of `npm start`; the gateways the tests start run without them unless a test
    // asks (test/conformance/observability.test.ts, tls.test.ts, test/e2e/workers.test.ts).
    env: { ...process.env, FNGATE_WORKERD_CACHE: workerdCache, ACCESS_LOG: 'off', PROMETHEUS_PORT: 'off', PROXY_HTTPS_PORT: 'off', STATUS_PORT: 'off', WORKERS: '1', ...env },
    maxBuffer: 256 * 1024 * 1024,
  });
  const out = res.stdout.toString();
  process.stdout.write(out);
  const count = (name) => Number(out.match(new RegExp(`^ℹ ${name} (\\d+)`, 'm'))?.[1] ?? 0);
  summary.push({ label, pass: count('pass'), fail: count('fail'), skipped: count('skipped'), todo: count('todo'), ok: res.status === 0, s: Math.round((Date.now() - started) / 1000) });
}

if (want('unit')) run('unit', ['--test-concurrency=2', ...files('test/unit')]);
if (want('conformance')) {
  for (const rt of runtimes()) run(`conformance on ${rt}`, ['--test-concurrency=1', ...files('test/conformance')], { FNGATE_RUNTIME: rt });
}
if (want('e2e')) run('end-to-end (node)', ['--test-concurrency=1', ...files('test/e2e')]);

console.log('\n=== summary');
for (const s of summary) {
  console.log(`${s.ok ? 'ok  ' : 'FAIL'} ${s.label.padEnd(24)} ${s.pass} passed, ${s.fail} failed, ${s.skipped} skipped, ${s.todo} todo (${s.s} s)`);
}
const total = summary.reduce((a, s) => ({ pass: a.pass + s.pass, fail: a.fail + s.fail, skipped: a.skipped + s.skipped }), { pass: 0, fail: 0, skipped: 0 });
const failed = summary.some((s) => !s.ok);
console.log(`${total.pass} passed, ${total.fail} failed, ${total.skipped} skipped`);
process.exit(failed ? 1 : 0);

#!/usr/bin/env node
// `npm test`: unit tests, then the black-box conformance suite against each runtime, then Node-only end-to-end tests.
// Usage: node test/run.mjs [unit|conformance|e2e ...] (default: all). Exits non-zero when anything failed.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const only = process.argv.slice(2);
const want = (part) => only.length === 0 || only.includes(part);
const files = (dir) =>
  readdirSync(join(root, dir))
    .filter((f) => f.endsWith('.test.ts'))
    .sort()
    .map((f) => join(dir, f));

let failed = false;
function run(label, args, env = {}) {
  console.log(`\n=== ${label}`);
  const res = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=spec', ...args], {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, ...env },
  });
  if (res.status !== 0) {
    failed = true;
    console.log(`=== ${label}: FAILED (exit ${res.status})`);
  }
}

if (want('unit')) run('unit tests', ['--test-concurrency=2', ...files('test/unit')]);
if (want('conformance')) run('conformance suite on node', ['--test-concurrency=1', ...files('test/conformance')], { FNGATE_RUNTIME: 'node' });
if (want('e2e')) run('end-to-end (node process)', ['--test-concurrency=1', ...files('test/e2e')]);

process.exit(failed ? 1 : 0);

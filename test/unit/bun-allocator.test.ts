// The allocator setting fngate's Bun processes start with (src/runtime/bun-allocator.ts): `npm run start:bun` must
// give the same one the Bun primary hands its workers and the benchmarks use, and an operator's own value wins.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { BUN_ALLOCATOR_ENV, bunAllocatorEnv } from '../../src/runtime/bun-allocator.ts';

const ROOT = join(import.meta.dirname, '../..');
const script: string = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).scripts['start:bun'];

/** The environment `npm run start:bun` would start Bun with (npm runs scripts with sh): its command swapped for `env`. */
function startEnv(outer: Record<string, string>): Record<string, string> {
  const command = 'bun run src/runtime/bun.ts';
  assert.ok(script.endsWith(`exec ${command}`), script);
  const out = execFileSync('sh', ['-c', `${script.slice(0, -command.length)}env`], { env: outer, encoding: 'utf8' });
  return Object.fromEntries(
    out
      .trim()
      .split('\n')
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );
}

test('npm run start:bun starts Bun with BUN_ALLOCATOR_ENV', () => {
  assert.ok(Object.keys(BUN_ALLOCATOR_ENV).length > 0);
  const env = startEnv({ PATH: process.env.PATH! });
  for (const [name, value] of Object.entries(BUN_ALLOCATOR_ENV)) assert.equal(env[name], value, name);
});

test("an operator's own allocator setting wins, in the script and for the workers", () => {
  const mine = Object.fromEntries(Object.keys(BUN_ALLOCATOR_ENV).map((name) => [name, '10']));
  const env = startEnv({ PATH: process.env.PATH!, ...mine });
  for (const name of Object.keys(BUN_ALLOCATOR_ENV)) assert.equal(env[name], '10', name);
  assert.deepEqual(bunAllocatorEnv(mine), {});
  assert.deepEqual(bunAllocatorEnv({}), BUN_ALLOCATOR_ENV);
});

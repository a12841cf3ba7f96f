// Issue 18 item 1: every duration field is bounded at write time (2^31-1 ms, the longest timer delay), so that no
// timer overflows and fires at once (`openfunction.timeout: 2147483648` answered 504 after ~12 ms).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { check, MAX_DURATION_MS, MAX_DURATION_S } from '../../src/core/schema/common.ts';
import { checkRoute } from '../../src/core/schema/route.ts';
import { checkUpstream } from '../../src/core/schema/upstream.ts';
import { openfunction } from '../../src/core/plugins/openfunction.ts';

const fnConf = (extra: Record<string, unknown>) => check(openfunction.schema, { function_uri: 'http://127.0.0.1:1/', ...extra });
const up = (extra: Record<string, unknown>) => checkUpstream({ nodes: { 'h:1': 1 }, ...extra });
const t = (k: string, n: number) => ({ connect: 1, send: 1, read: 1, [k]: n });

/** [field, check(value), largest accepted value, message prefix naming the field]. */
const FIELDS: [string, (n: number) => { ok: boolean; message?: string }, number, string][] = [
  ['openfunction.timeout', (n) => fnConf({ timeout: n }), MAX_DURATION_MS, 'property "timeout" validation failed'],
  ['openfunction.keepalive_timeout', (n) => fnConf({ keepalive_timeout: n }), MAX_DURATION_MS, 'property "keepalive_timeout" validation failed'],
  ...(['connect', 'send', 'read'] as const).flatMap((k): [string, (n: number) => { ok: boolean; message?: string }, number, string][] => [
    [`upstream.timeout.${k}`, (n) => up({ timeout: t(k, n) }), MAX_DURATION_S, `property "timeout" validation failed: property "${k}" validation failed`],
    [
      `route.timeout.${k}`,
      (n) => checkRoute({ uri: '/a', plugins: {}, timeout: t(k, n) }),
      MAX_DURATION_S,
      `invalid configuration: property "timeout" validation failed: property "${k}" validation failed`,
    ],
  ]),
  ['upstream.retry_timeout', (n) => up({ retry_timeout: n }), MAX_DURATION_S, 'property "retry_timeout" validation failed'],
  [
    'upstream.keepalive_pool.idle_timeout',
    (n) => up({ keepalive_pool: { idle_timeout: n } }),
    MAX_DURATION_S,
    'property "keepalive_pool" validation failed: property "idle_timeout" validation failed',
  ],
];

describe('duration fields are bounded by the longest timer (2^31-1 ms)', () => {
  it('the bound itself is accepted, one more is refused with a message naming the field and the bound', () => {
    assert.equal(MAX_DURATION_MS, 2147483647);
    assert.equal(MAX_DURATION_S, 2147483);
    for (const [name, run, max, prefix] of FIELDS) {
      assert.equal(run(max).ok, true, `${name}: ${max} refused: ${run(max).message}`);
      for (const over of [max + 1, 2 ** 31, 3000000, 1e300]) {
        if (over <= max) continue;
        const res = run(over);
        assert.equal(res.ok, false, `${name}: ${over} accepted`);
        assert.equal(res.message, `${prefix}: expected ${over} to be at most ${max}`, name);
      }
    }
  });

  it('the issue\'s values: openfunction.timeout 2147483648 ms and upstream timeout.read 3000000 s are refused', () => {
    assert.equal(fnConf({ timeout: 2147483648 }).ok, false);
    assert.equal(up({ timeout: t('read', 3000000) }).ok, false);
  });
});

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { check, ID_PATTERN, idSchema } from '../../src/core/schema/common.ts';

describe('ids: APISIX id_schema, less "." and ".."', () => {
  it('accepts what APISIX accepts, "..." and dotted names included', () => {
    for (const id of ['1', 'a', 'a.b-c_d', '...', '.a', 'a..', '.-.', 'x'.repeat(64), 1, 42]) {
      assert.equal(check(idSchema, id).ok, true, String(id));
      if (typeof id === 'string') assert.equal(ID_PATTERN.test(id), true, id);
    }
  });

  it('refuses "." and ".." (no URL can address them), in the body and in the path, with a message saying why', () => {
    for (const id of ['.', '..']) {
      const res = check(idSchema, id);
      assert.deepEqual(res, { ok: false, message: 'the ids "." and ".." are not allowed: no URL can address them' });
      assert.equal(ID_PATTERN.test(id), false, id);
    }
  });

  it('still refuses what APISIX refuses, with the same messages as before', () => {
    const cases: [unknown, string][] = [
      ['', 'string too short, expected at least 1, got 0'],
      ['a/b', String.raw`failed to match pattern "^[a-zA-Z0-9\\-_.]+$" with "a/b"`],
      ['a b', String.raw`failed to match pattern "^[a-zA-Z0-9\\-_.]+$" with "a b"`],
      ['é', String.raw`failed to match pattern "^[a-zA-Z0-9\\-_.]+$" with "é"`],
      ['x'.repeat(65), 'string too long, expected at most 64, got 65'],
      [0, 'expected 0 to be at least 1'],
      [1.5, 'wrong type: expected integer, got number'],
      [true, 'object matches none of the required'],
      [null, 'object matches none of the required'],
    ];
    for (const [id, message] of cases) {
      assert.deepEqual(check(idSchema, id), { ok: false, message }, JSON.stringify(id));
      if (typeof id === 'string') assert.equal(ID_PATTERN.test(id), false, id);
    }
  });
});

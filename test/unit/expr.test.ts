import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { compileExpr, type Expr, luaNumberToString, luaToNumber, type VarReader } from '../../src/core/expr.ts';

const reader =
  (vars: Record<string, unknown>): VarReader =>
  (name) =>
    Object.hasOwn(vars, name) ? vars[name] : undefined;

function compiled(rules: unknown): Expr {
  const c = compileExpr(rules);
  if (!c.ok) assert.fail(`${JSON.stringify(rules)} did not compile: ${c.message}`);
  return c.expr;
}
const evalWith = (rules: unknown, vars: Record<string, unknown>) => compiled(rules)(reader(vars));
function compileError(rules: unknown): string {
  const c = compileExpr(rules);
  if (c.ok) assert.fail(`${JSON.stringify(rules)} compiled`);
  return c.message;
}

describe('vars expressions (lua-resty-expr v1)', () => {
  // lua-resty-expr t/v1/sanity.t; a request's ngx.var is given as the variables it sets.
  it('t/v1/sanity.t: comparisons', () => {
    const cases: [string, unknown, Record<string, unknown>, boolean][] = [
      ['1 uri args', [['arg_k', '==', 'v']], { arg_k: 'v' }, true],
      ['2 uri args (not hit)', [['arg_k', 'v']], { arg_k: 'not_hit' }, false],
      ['3 http header', [['http_test', '==', 'v']], { http_test: 'v' }, true],
      ['4 http header (not hit)', [['http_test', 'v']], { http_test: 'not-hit' }, false],
      [
        '5 args + host + server_port',
        [
          ['arg_k', '==', 'v'],
          ['host', '==', 'localhost'],
          ['server_port', '==', '1984'],
        ],
        { arg_k: 'v', host: 'localhost', server_port: '1984' },
        true,
      ],
      [
        '6 same, not hit',
        [
          ['arg_k', 'v'],
          ['host', 'localhost'],
          ['server_port', '1984-not'],
        ],
        { arg_k: 'v', host: 'localhost', server_port: '1984' },
        false,
      ],
      ['7 ~= not hit', [['arg_k', '~=', 'v']], { arg_k: 'v' }, false],
      ['8 ~= hit', [['arg_k', '~=', '************']], { arg_k: 'v' }, true],
      ['9 > 10 hit', [['arg_k', '>', 10]], { arg_k: '11' }, true],
      ['10 > 10 not hit', [['arg_k', '>', 10]], { arg_k: '9' }, false],
      ['12 no uri args', [['arg_k', '>', 10]], {}, false],
      ['13 ~= nil', [['arg_k', '~=', null]], { arg_k: 'v' }, true],
      ['16 ngx.var', [['arg_k', '==', 'v']], { arg_k: 'v' }, true],
      ['24 bad argument for ~~', [['arg_k', '~~', 'A']], {}, false],
      ['25 bad argument for ~*', [['arg_k', '~*', 'A']], {}, false],
      ['26 ~= number, equal', [['arg_age', '~=', 18]], { arg_age: '18' }, false],
      ['27 ~= number, not equal', [['arg_age', '~=', 18]], { arg_age: '16' }, true],
      ['28 ~= number, lhs not a number', [['arg_age', '~=', 18]], { arg_age: 'aa' }, true],
      ['29 ~= numeric string', [['arg_age', '~=', '18']], { arg_age: '18' }, false],
      ['30 missing arg ~=', [['arg_name', '~=', 'jack']], {}, true],
      ['31 missing arg ~~', [['arg_name', '~~', '[a-z]{1,4}']], {}, false],
      ['32 missing arg ~*', [['arg_name', '~*', '[a-z]{1,4}']], {}, false],
      ['34 >= "2"', [['arg_k', '>=', '2']], { arg_k: '2' }, true],
      ['34 >= 3', [['arg_k', '>=', 3]], { arg_k: '2' }, false],
      ['35 <= "2"', [['arg_k', '<=', '2']], { arg_k: '3' }, false],
      ['35 <= 3', [['arg_k', '<=', 3]], { arg_k: '3' }, true],
      ['36 missing header ~= nil', [['http_test', '~=', null]], {}, false],
    ];
    for (const [name, rules, vars, expected] of cases) {
      assert.equal(evalWith(rules, vars), expected, name);
    }
  });

  it('t/v1/sanity.t: in, has, not, ~*, case-insensitive operators', () => {
    const inList = compiled([['arg_k', 'in', ['1', '2']]]);
    assert.deepEqual(
      [{ arg_k: '1' }, { arg_k: '2' }, { arg_k: '4' }, {}].map((v) => inList(reader(v))),
      [true, true, false, false],
    );
    const has = compiled([['x', 'has', 'a']]);
    assert.deepEqual(
      [['a', 'b'], ['a'], ['b'], []].map((x) => has(reader({ x }))),
      [true, true, false, false],
    );
    const notGt = compiled([['k', '!', '>', 10]]);
    assert.deepEqual([notGt(reader({ k: 11 })), notGt(reader({ k: 9 }))], [false, true]);
    const andNot = compiled([
      ['x', '>', 10],
      ['x', '!', '>', 15],
    ]);
    assert.deepEqual([andNot(reader({ x: 11 })), andNot(reader({ x: 16 }))], [true, false]);
    const notFind = compiled([['k', '!', '~~', '[a-z]']]);
    assert.deepEqual([notFind(reader({ k: 'a' })), notFind(reader({ k: '9' }))], [false, true]);
    const notIn = compiled([['k', '!', 'in', [1, 2]]]);
    assert.deepEqual([notIn(reader({ k: 3 })), notIn(reader({ k: 1 }))], [true, false]);
    const notHas = compiled([['k', '!', 'has', 1]]);
    assert.deepEqual([notHas(reader({ k: [2, 3] })), notHas(reader({ k: [1, 2] }))], [true, false]);
    const caseless = compiled([['x', '~*', 'A']]);
    assert.deepEqual(
      ['a', 'A', 'b', ''].map((x) => caseless(reader({ x }))),
      [true, true, false, false],
    );
    const notCaseless = compiled([['x', '!', '~*', 'A']]);
    assert.deepEqual(
      ['a', 'A', 'b', ''].map((x) => notCaseless(reader({ x }))),
      [false, false, true, true],
    );
    const upperOps = compiled(['or', ['x', 'HAS', 'a'], ['x', 'HAS', 'c']]);
    assert.deepEqual(
      [['a', 'b'], ['a'], ['b'], [], ['c']].map((x) => upperOps(reader({ x }))),
      [true, true, false, false, true],
    );
  });

  it('t/v1/and.t, or.t, not.t: logical groups, nested', () => {
    const w = (weight: number, height?: number, name?: string) =>
      reader({
        arg_weight: String(weight),
        ...(height === undefined ? {} : { arg_height: String(height) }),
        ...(name === undefined ? {} : { arg_name: name }),
      });
    const gt10notGt15 = [
      ['arg_weight', '>', 10],
      ['arg_weight', '!', '>', 15],
    ];
    assert.equal(compiled(['AND', ...gt10notGt15])(w(12)), true, 'and 1');
    assert.equal(compiled(['AND', ...gt10notGt15])(w(8)), false, 'and 2');
    const nestedAnd = [
      'AND',
      ['AND', ['arg_weight', '<', 20], ['arg_weight', '!', '<', 15]],
      [
        ['arg_height', '>', 10],
        ['arg_height', '!', '<', 15],
      ],
    ];
    assert.equal(compiled(nestedAnd)(w(16, 16)), true, 'and 3');
    assert.equal(compiled(nestedAnd)(w(14, 16)), false, 'and 4');

    assert.equal(compiled(['OR', ...gt10notGt15])(w(12)), true, 'or 1');
    assert.equal(compiled(['OR', ...gt10notGt15])(w(8)), true, 'or 2');
    assert.equal(compiled(['OR', ['arg_weight', '>', 20], ['arg_weight', '!', '>', 15]])(w(16)), false, 'or 3');
    const nestedOr = [
      'OR',
      ['OR', ['arg_weight', '>', 20], ['arg_weight', '!', '>', 15]],
      ['AND', ['arg_height', '>', 10], ['arg_height', '!', '<', 15]],
    ];
    assert.equal(compiled(nestedOr)(w(16, 16)), true, 'or 4');
    assert.equal(compiled(nestedOr)(w(16, 14)), false, 'or 5');
    const nestedPlain = [
      'OR',
      [['arg_weight', '!', '>', 15]],
      [
        ['arg_height', '>', 10],
        ['arg_height', '!', '<', 15],
      ],
    ];
    assert.equal(compiled(nestedPlain)(w(16, 16)), true, 'or 6');
    assert.equal(compiled(nestedPlain)(w(16, 14)), false, 'or 7');

    assert.equal(compiled(['!AND', ...gt10notGt15])(w(12)), false, 'not 1');
    assert.equal(compiled(['!AND', ...gt10notGt15])(w(8)), true, 'not 2');
    assert.equal(compiled(['!AND', ['arg_weight', '>', 10], ['arg_weight', '!', '<', 15]])(w(8)), true, 'not 3');
    assert.equal(compiled(['!OR', ...gt10notGt15])(w(12)), false, 'not 4');
    assert.equal(compiled(['!OR', ...gt10notGt15])(w(8)), false, 'not 5');
    assert.equal(compiled(['!OR', ['arg_weight', '>', 10], ['arg_weight', '!', '<', 15]])(w(8)), true, 'not 6');
    const not7 = [
      '!OR',
      ['AND', ['arg_weight', '<', 20], ['arg_weight', '!', '<', 15]],
      [
        ['arg_height', '>', 10],
        ['arg_height', '!', '<', 15],
      ],
      ['OR', ['arg_height', '>', 10], ['arg_height', '!', '<', 15]],
    ];
    assert.equal(compiled(not7)(w(16, 16)), false, 'not 7');
    const not8 = [
      '!OR',
      ['!AND', ['arg_weight', '<', 20], ['arg_weight', '!', '<', 15]],
      ['!OR', ['arg_height', '>', 10], ['arg_height', '!', '<', 15]],
    ];
    assert.equal(compiled(not8)(w(16, 16)), true, 'not 8');
    const mix = ['!AND', ['arg_name', '==', 'json'], ['OR', ['arg_weight', '>', 10], ['arg_height', '!', '>', 15]]];
    assert.equal(compiled(mix)(w(6, 6, 'json')), false, 'not 9');
    const mix2 = ['!AND', ['OR', ['arg_weight', '>', 10], ['arg_height', '!', '>', 15]], ['arg_name', '==', 'json']];
    assert.equal(compiled(mix2)(w(6, 6, 'xx')), true, 'not 10');
    const layers = [
      '!AND',
      ['arg_name', '==', 'json'],
      ['OR', ['AND', ['arg_weight', '>', 10], ['arg_height', '>', 10]], ['arg_height', '!', '>', 15]],
    ];
    assert.equal(compiled(layers)(w(6, 6, 'json')), false, 'not 11');
    assert.equal(compiled(['and', ['a', '==', '1'], ['b', '==', '2']])(reader({ a: '1', b: '2' })), true, 'lower-case');
    assert.equal(compiled(['!oR', ['a', '==', '1'], ['b', '==', '2']])(reader({ a: '1' })), false, 'mixed case');
  });

  it('t/v1/ipmatcher.t: ipmatch', () => {
    const local = reader({ remote_addr: '127.0.0.1', arg_real_ip: '127.0.0.1', http_real_ip: '127.0.0.1', arg_k: 'v' });
    assert.equal(compiled([['remote_addr', 'ipmatch', '127.0.0.1']])(local), true, '1 sanity');
    assert.equal(compiled([['remote_addr', 'ipmatch', ['127.0.0.1']]])(local), true, '3 list');
    assert.equal(compiled([['remote_addr', 'ipmatch', '127.0.0.0/16']])(local), true, '4 CIDR');
    assert.equal(compiled([['remote_addr', 'ipmatch', ['127.0.0.0/16']]])(local), true, '4 CIDR list');
    assert.equal(compiled([['remote_addr', 'ipmatch', ['127.0.0.1', '127.0.0.2']]])(local), true, '5');
    assert.equal(compiled([['remote_addr', 'ipmatch', ['127.0.0.2', '127.0.0.3']]])(local), false, '5 miss');
    assert.equal(compiled([['arg_real_ip', 'ipmatch', ['127.0.0.1']]])(local), true, '6 args');
    assert.equal(compiled([['arg_real_ip', 'ipmatch', ['127.0.0.2']]])(local), false, '6 args miss');
    assert.equal(compiled([['http_real_ip', 'ipmatch', ['127.0.0.1']]])(local), true, '7 header');
    assert.equal(compiled([['http_real_ip', 'ipmatch', ['127.0.0.2']]])(local), false, '7 header miss');
    const withOther = (ip: string) =>
      compiled([
        ['remote_addr', 'ipmatch', [ip]],
        ['arg_k', '==', 'v'],
      ])(local);
    assert.equal(withOther('127.0.0.1'), true, '8');
    assert.equal(withOther('127.0.0.2'), false, '8 miss');
    // IPv6, and what is not an address: false, not an error.
    const v6 = compiled([['remote_addr', 'ipmatch', ['2001:db8::/32', '10.0.0.0/8']]]);
    assert.equal(v6(reader({ remote_addr: '2001:db8::1' })), true);
    assert.equal(v6(reader({ remote_addr: '2001:db9::1' })), false);
    assert.equal(v6(reader({ remote_addr: '10.9.8.7' })), true);
    assert.equal(v6(reader({ remote_addr: 'not-an-ip' })), false);
    assert.equal(v6(reader({})), false);
    assert.equal(v6(reader({ remote_addr: ['10.0.0.1'] })), false);
  });

  it('t/validate.t and t/v1/ipmatcher.t TEST 2: compile errors with lua-resty-expr messages', () => {
    assert.equal(compileError([['arg_k', '=', 'v']]), "invalid operator '='");
    assert.equal(compileError([['arg_k', 'invalid', 10]]), "invalid operator 'invalid'");
    assert.equal(compileError([['arg_k', 'INVALID', 10]]), "invalid operator 'invalid'");
    assert.equal(compileError([['arg_k']]), 'invalid expression');
    assert.equal(compileError([[]]), 'rule too short');
    assert.equal(compileError([['!', 'arg_k', '==', '1']]), "bad 'not' expression");
    assert.equal(compileError(undefined), 'missing argument rule');
    assert.equal(compileError(['OR', ['arg_weight', '>', 10]]), 'rule too short');
    assert.equal(compileError(['OR', ['arg_weight', '>', 10], ['AND']]), 'rule too short');
    assert.equal(compileError(['arg_k', '==', 'v']), 'rule should be wrapped inside brackets');
    assert.equal(compileError([['remote_addr', 'ipmatch', null]]), 'invalid ip address');
    assert.equal(compileError([['remote_addr', 'ipmatch']]), 'invalid ip address');
    assert.equal(compileError([['remote_addr', 'ipmatch', '']]), 'invalid ip address');
    assert.equal(compileError([['remote_addr', 'ipmatch', []]]), 'invalid ip address');
    assert.equal(compileError([['remote_addr', 'ipmatch', ['']]]), 'invalid ip address: ');
    assert.equal(
      compileError([['remote_addr', 'ipmatch', ['10.0.0.0/8', '300.1.1.1/24']]]),
      'invalid ip address: 300.1.1.1',
    );
    // Empty rule list: always true (validate.t TEST 7).
    assert.equal(compiled([])(reader({})), true);
  });

  it('fngate refuses at config time what raises a Lua error per request in APISIX', () => {
    assert.match(compileError([['arg_k', '~~', '(a']]), /^invalid regex '\(a': /);
    assert.match(compileError([['arg_k', '~*', '(?=lookahead)']]), /^invalid regex/);
    assert.match(compileError([['arg_k', '~~', '(a)\\1']]), /^invalid regex/);
    assert.match(compileError([['arg_k', '~~', null]]), /^invalid expression/);
    assert.match(compileError([['arg_k', '~~', ['a']]]), /^invalid expression/);
    assert.match(compileError([[1, '==', 'a']]), /^invalid expression/);
    assert.match(compileError([['a', null]]), /^invalid expression/);
    assert.match(compileError([['a', ['x'], 'b']]), /^invalid expression/);
    assert.match(compileError([['a', '==', 'b'], 'c']), /^invalid expression/);
    assert.match(compileError(['OR', 'x', 'y']), /^invalid expression/);
    assert.equal(compileError([{}]), 'rule too short'); // Lua: # of an object is 0
    assert.equal(compileError({ a: 1 }), 'rule should be an array');
    assert.equal(compileError([null, ['a', '==', 'b']]), 'rule should be wrapped inside brackets');
    // Nesting is bounded (compiling and evaluating recurse per level); 64 levels still compile.
    const nest = (levels: number): unknown => {
      let r: unknown = ['a', '==', '1'];
      for (let i = 0; i < levels; i++) r = [r];
      return r;
    };
    assert.equal(evalWith(nest(63), { a: '1' }), true);
    assert.match(compileError(nest(64)), /nested deeper than 64 levels/);
    assert.match(compileError(JSON.parse('['.repeat(100_000) + ']'.repeat(100_000))), /nested deeper/);
  });

  it('APISIX _meta.filter cases (t/plugin/plugin.t TEST 12-14, 19-21)', () => {
    const version = compiled([['arg_version', '==', 'v2']]);
    assert.equal(version(reader({ arg_version: 'v2' })), true);
    assert.equal(version(reader({ arg_version: 'v1' })), false);
    const notOk = compiled([['upstream_status', '~=', 200]]);
    assert.equal(notOk(reader({ upstream_status: '502' })), true);
    assert.equal(notOk(reader({ upstream_status: 502 })), true);
    assert.equal(notOk(reader({ upstream_status: '200' })), false);
    assert.equal(notOk(reader({ upstream_status: 200 })), false);
    assert.equal(notOk(reader({})), true); // no upstream call: nil is not a number
  });

  it('lua-resty-expr quirks', () => {
    // [var, val]: the value goes through the operator's lower-casing.
    assert.equal(evalWith([['arg_name', 'Jack']], { arg_name: 'Jack' }), false);
    assert.equal(evalWith([['arg_name', 'Jack']], { arg_name: 'jack' }), true);
    assert.equal(evalWith([['arg_n', 5]], { arg_n: '5' }), true); // the number became the string "5"
    assert.equal(evalWith([['arg_n', 5]], { arg_n: 5 }), false);
    // [var, op] with a real operator: the value is nil.
    assert.equal(evalWith([['arg_x', '==']], {}), true);
    assert.equal(evalWith([['arg_x', '==']], { arg_x: '' }), false);
    // A 5-tuple is read as its first three elements.
    assert.equal(evalWith([['a', '==', 'b', 'ignored', 'too']], { a: 'b' }), true);
    // ==/~= without a number value: strict type and value; numbers are not strings.
    assert.equal(evalWith([['status', '==', '200']], { status: 200 }), false);
    assert.equal(evalWith([['status', '==', 200]], { status: '200' }), true);
    assert.equal(evalWith([['status', '==', 200]], { status: '0xc8' }), true); // Lua tonumber reads hex
    assert.equal(evalWith([['status', '==', 200]], { status: ' 200 ' }), true);
    assert.equal(evalWith([['status', '==', 200]], { status: '200px' }), false);
    assert.equal(evalWith([['status', '==', 200]], { status: true }), false);
    // in: no number conversion.
    assert.equal(evalWith([['status', 'in', [200, 404]]], { status: '200' }), false);
    assert.equal(evalWith([['status', 'in', ['200', '404']]], { status: '200' }), true);
    assert.equal(evalWith([['status', 'in', 'not-a-list']], { status: 'not-a-list' }), false);
    assert.equal(evalWith([['status', 'in', [null]]], {}), false);
    // Ordering: a value that is not a number is never ordered.
    assert.equal(evalWith([['a', '>', 'x']], { a: '5' }), false);
    assert.equal(evalWith([['a', '<', '1e3']], { a: '999' }), true);
    assert.equal(evalWith([['a', '>', 1]], { a: 'inf' }), true);
    assert.equal(evalWith([['a', '!', '>', 1]], { a: 'nan' }), true);
    // ~~ on a number searches its Lua string form; a table never matches.
    assert.equal(evalWith([['n', '~~', '^12$']], { n: 12 }), true);
    assert.equal(evalWith([['n', '~~', '^0\\.5$']], { n: 0.5 }), true);
    assert.equal(evalWith([['h', '~~', 'a']], { h: ['a'] }), false);
    assert.equal(evalWith([['h', '~~', '']], { h: '' }), true);
    assert.equal(evalWith([['u', '~~', '/api/']], { u: '/x/api/y' }), true);
    assert.equal(evalWith([['u', '~~', '^/api/']], { u: '/x/api/y' }), false);
    // A variable named like a logic operator inside a list reads as a group, as in Lua.
    assert.match(compileError([['and', '==', 'x']]), /^invalid expression/);
    // A nested list of rules is an AND group at any depth.
    assert.equal(evalWith([[[['a', '==', '1']], ['b', '==', '2']]], { a: '1', b: '2' }), true);
    assert.equal(evalWith([[[['a', '==', '1']], ['b', '==', '2']]], { a: '1', b: '3' }), false);
  });

  it('luaToNumber and luaNumberToString follow LuaJIT', () => {
    const num: [unknown, number | undefined][] = [
      ['12', 12],
      [' 12\t', 12],
      ['+5', 5],
      ['-5', -5],
      ['- 5', undefined],
      ['1.', 1],
      ['.5', 0.5],
      ['.', undefined],
      ['1e3', 1000],
      ['1E-2', 0.01],
      ['1e', undefined],
      ['0x10', 16],
      ['-0X1p4', -16],
      ['0x.8', 0.5],
      ['0x', undefined],
      ['0b101', 5],
      ['inf', Infinity],
      ['-Infinity', -Infinity],
      ['infx', undefined],
      ['12px', undefined],
      ['1LL', undefined],
      ['', undefined],
      ['\u00a012', undefined],
      [true, undefined],
      [['1'], undefined],
      [7, 7],
    ];
    for (const [input, expected] of num) assert.equal(luaToNumber(input), expected, JSON.stringify(input));
    assert.ok(Number.isNaN(luaToNumber('NaN')));
    const str: [number, string][] = [
      [1, '1'],
      [0.1, '0.1'],
      [-0, '-0'],
      [1 / 3, '0.33333333333333'],
      [1e14, '1e+14'],
      [99999999999999, '99999999999999'],
      [1e-5, '1e-05'],
      [123.456, '123.456'],
      [Infinity, 'inf'],
      [-Infinity, '-inf'],
    ];
    for (const [input, expected] of str) assert.equal(luaNumberToString(input), expected, String(input));
  });

  it('never throws on any JSON (fast-check): compiles or answers a message', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 5 }), (rules) => {
        const c = compileExpr(rules);
        if (c.ok) assert.equal(typeof c.expr(() => undefined), 'boolean');
        else assert.equal(typeof c.message, 'string');
      }),
      { numRuns: 2000 },
    );
  });
});

// ------------------------------------------------------------------------------------------------
// Reference model: a direct recursive interpreter of the rule JSON, written from lua-resty-expr's
// description (no compilation, no closures), and random rule trees over a few variables.

const OPS = ['==', '~=', '>', '>=', '<', '<=', '~~', '~*', 'in', 'has', 'ipmatch'];

function refEval(rule: unknown[], get: VarReader): boolean {
  const head = rule[0];
  const subs = (from: number) => rule.slice(from) as unknown[][];
  if (Array.isArray(head)) return subs(0).every((r) => refEval(r, get));
  const logic = String(head).toUpperCase();
  if (logic === 'AND') return subs(1).every((r) => refEval(r, get));
  if (logic === 'OR') return subs(1).some((r) => refEval(r, get));
  if (logic === '!AND') return !subs(1).every((r) => refEval(r, get));
  if (logic === '!OR') return !subs(1).some((r) => refEval(r, get));
  const name = rule[0] as string;
  if (rule.length === 2) return refCompare(get(name), '==', String(rule[1]).toLowerCase());
  if (rule.length === 4) return !refCompare(get(name), String(rule[2]).toLowerCase(), rule[3] ?? undefined);
  return refCompare(get(name), String(rule[1]).toLowerCase(), rule[2] ?? undefined);
}

function refCompare(l: unknown, op: string, r: unknown): boolean {
  const num = (v: unknown) => luaToNumber(v);
  switch (op) {
    case '==':
      return typeof r === 'number' ? num(l) === r : l === r;
    case '~=':
      return typeof r === 'number' ? num(l) === undefined || num(l) !== r : l !== r;
    case '>':
      return num(l) !== undefined && num(r) !== undefined && num(l)! > num(r)!;
    case '>=':
      return num(l) !== undefined && num(r) !== undefined && num(l)! >= num(r)!;
    case '<':
      return num(l) !== undefined && num(r) !== undefined && num(l)! < num(r)!;
    case '<=':
      return num(l) !== undefined && num(r) !== undefined && num(l)! <= num(r)!;
    case '~~':
    case '~*': {
      if (typeof l !== 'string' && typeof l !== 'number') return false;
      return new RegExp(String(r), op === '~*' ? 'i' : '').test(String(l));
    }
    case 'in':
      return Array.isArray(r) && l !== undefined && r.includes(l);
    case 'has':
      return Array.isArray(l) && l.includes(r);
    case 'ipmatch': {
      if (typeof l !== 'string') return false;
      return (Array.isArray(r) ? r : [r]).some((cidr) => refIpv4Match(l, String(cidr)));
    }
  }
  throw new Error(`reference model: no operator ${op}`);
}

function refIpv4Match(ip: string, cidr: string): boolean {
  const toInt = (s: string) => {
    const parts = s.split('.');
    if (parts.length !== 4 || parts.some((p) => !/^(0|[1-9]\d{0,2})$/.test(p) || Number(p) > 255)) return undefined;
    return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
  };
  const [addr, bits] = cidr.split('/') as [string, string | undefined];
  const a = toInt(ip);
  const b = toInt(addr);
  if (a === undefined || b === undefined) return false;
  const prefix = bits === undefined ? 32 : Number(bits);
  const block = 2 ** (32 - prefix);
  return Math.floor(a / block) === Math.floor(b / block);
}

const varNames = ['a', 'b', 'c'] as const;
const varValue = fc.oneof(
  fc.constantFrom('1', '2', '10', ' 10 ', '0x10', 'x', 'X', 'abc', 'ABC', '', 'nan', '127.0.0.1', '10.1.2.3'),
  fc.constantFrom(1, 2, 10, 16, 0.5),
  fc.constant(true),
  fc.constantFrom(['x', 'y'], ['1'], ['abc', '2'], []),
);
const varMap = fc.record({ a: varValue, b: varValue, c: varValue }, { requiredKeys: [] });
const scalar = fc.oneof(
  fc.constantFrom('1', '2', '10', 'x', 'abc', '', '0x10'),
  fc.constantFrom(1, 2, 10, 16, 0.5),
  fc.constant(null),
);
const operand: Record<string, fc.Arbitrary<unknown>> = {
  '==': scalar,
  '~=': scalar,
  '>': scalar,
  '>=': scalar,
  '<': scalar,
  '<=': scalar,
  '~~': fc.constantFrom('a', '^a', 'b$', '[0-9]+', 'x|1', '^$', '\\d\\d', 'A', 'y'),
  '~*': fc.constantFrom('a', '^A', 'B$', 'X', 'c'),
  in: fc.oneof(fc.array(fc.oneof(scalar, fc.constantFrom('y', 'X')), { maxLength: 3 }), scalar),
  has: fc.oneof(scalar, fc.constantFrom('x', 'y', 'abc')),
  ipmatch: fc.oneof(
    fc.constantFrom('127.0.0.1', '10.0.0.0/8', '127.0.0.0/16', '0.0.0.0/0'),
    fc.constantFrom(['127.0.0.2', '10.1.2.3'], ['10.1.0.0/16']),
  ),
};
const opCase = (op: string) => fc.constantFrom(op, op.toUpperCase());
const leaf: fc.Arbitrary<unknown[]> = fc
  .constantFrom(...OPS)
  .chain((op) =>
    fc.oneof(
      fc.tuple(fc.constantFrom(...varNames), opCase(op), operand[op]!),
      fc.tuple(fc.constantFrom(...varNames), fc.constant('!'), opCase(op), operand[op]!),
    ),
  )
  .map((t) => [...t]);
const twoTuple: fc.Arbitrary<unknown[]> = fc
  .tuple(fc.constantFrom(...varNames), fc.constantFrom('x', 'X', 'abc', 'Abc', '1', 10))
  .map((t) => [...t]);
const { rule } = fc.letrec<{ rule: unknown[] }>((tie) => ({
  rule: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    leaf,
    twoTuple,
    fc
      .tuple(
        fc.constantFrom('AND', 'OR', '!AND', '!OR', 'and', 'Or', '!and', '!oR'),
        fc.array(tie('rule'), { minLength: 2, maxLength: 4 }),
      )
      .map(([op, subs]) => [op, ...subs]),
    fc.array(tie('rule'), { minLength: 1, maxLength: 3 }),
  ),
}));
const topLevel = fc.oneof(
  fc.array(rule, { minLength: 1, maxLength: 4 }),
  fc
    .tuple(fc.constantFrom('AND', 'OR', '!AND', '!OR'), fc.array(rule, { minLength: 2, maxLength: 3 }))
    .map(([op, subs]) => [op, ...subs]),
);

describe('vars expressions: compiled evaluator = reference interpreter (fast-check)', () => {
  it('random rule trees over random variables', () => {
    fc.assert(
      fc.property(topLevel, fc.array(varMap, { minLength: 1, maxLength: 5 }), (rules, maps) => {
        const expr = compiled(rules);
        for (const vars of maps) {
          assert.equal(expr(reader(vars)), refEval(rules, reader(vars)), JSON.stringify({ rules, vars }));
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('reads the same variables in the same order as the reference (short-circuit left to right)', () => {
    fc.assert(
      fc.property(topLevel, varMap, (rules, vars) => {
        const recorder = (log: string[]): VarReader => {
          return (name) => {
            log.push(name);
            return vars[name as keyof typeof vars];
          };
        };
        const compiledReads: string[] = [];
        const referenceReads: string[] = [];
        compiled(rules)(recorder(compiledReads));
        refEval(rules, recorder(referenceReads));
        assert.deepEqual(compiledReads, referenceReads);
      }),
      { numRuns: 1000 },
    );
  });
});

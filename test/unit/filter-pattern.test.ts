import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  type Budget,
  compileFilterPattern,
  FILTER_WORK_BUDGET,
  FilterPatternError,
  listSearch,
  MAX_PATTERN_LENGTH,
} from '../../src/core/admin/filter-pattern.ts';

const budget = (): Budget => ({ work: FILTER_WORK_BUDGET });
const matches = (pattern: string, subject: string) => compileFilterPattern(pattern).test(subject, budget());

describe('admin list filter patterns (?name=, ?uri=): RE2 searches in linear time (re2js)', () => {
  it('APISIX examples: unanchored search, ^ and $', () => {
    assert.equal(matches('flt-alpha', 'flt-alphabet'), true);
    assert.equal(matches('^flt-b', 'flt-beta'), true);
    assert.equal(matches('^flt-b', 'x-flt-beta'), false);
    assert.equal(matches('flt-alpha$', 'flt-alpha'), true);
    assert.equal(matches('flt-alpha$', 'flt-alphabet'), false);
    assert.equal(matches('/flt-uri/', '/not-it/flt-uri/two'), true);
    assert.equal(matches('', 'anything'), true);
    assert.equal(matches('^$', ''), true);
    assert.equal(matches('^flt-alpha$', 'flt-alpha'), true);
    assert.equal(matches('^flt-alpha$', 'flt-alpha\n'), false); // RE2: $ is the end of the subject
  });

  it('the syntax people write: classes, escapes, groups, alternation, counted repetition, inline options', () => {
    const cases: [string, string, boolean][] = [
      ['^/api/v[0-9]+/', '/api/v12/users', true],
      ['^/api/v[0-9]+/', '/api/vx/users', false],
      ['\\d{3}-\\d{4}', 'call 555-1234', true],
      ['\\d{3}-\\d{4}', 'call 55-1234', false],
      ['^(foo|bar)-\\w+$', 'bar-baz_1', true],
      ['^(?:foo|bar)-\\w+$', 'baz-baz', false],
      ['^(?<kind>svc|fn)\\.', 'fn.hello', true],
      ['^(?P<kind>svc|fn)\\.', 'svcx', false],
      ['a.c', 'abc', true],
      ['a.c', 'a\nc', false],
      ['(?s)a.c', 'a\nc', true],
      ['[^/]+$', '/a/b', true],
      ['^[^/]+$', '/a/b', false],
      ['[\\]\\-]', 'a-b', true],
      ['[]a]', ']', true],
      ['[a-]', '-', true],
      ['\\bcat\\b', 'a cat here', true],
      ['\\bcat\\b', 'concatenate', false],
      ['\\Bcat', 'concat', true],
      ['x{2,3}$', 'axxx', true],
      ['^x{2,3}$', 'xxxx', false],
      ['^x{2,}$', 'xxxxxx', true],
      ['a{,2}', 'a{,2}', true], // not a quantifier: literal text (RE2, and PCRE before 10.43)
      ['\\Q.*+\\E$', 'a.*+', true],
      ['\\Q.*+\\E$', 'aaaa', false],
      ['\\x41\\x{42}', 'xABy', true],
      ['(?i)^HeLLo', 'hello world', true],
      ['(?i)[a-c]x', 'BX', true],
      ['^hello', 'Hello', false],
      ['a(?i)b', 'aB', true],
      ['a(?i:b)c', 'aBC', false],
      ['(?m)^b$', 'a\nb\nc', true],
      ['\\pL+\\d', 'caf\u00e9 9', false],
      ['^\\pL+$', 'caf\u00e9', true],
      ['^[[:alpha:]]+$', 'abc', true],
      ['^[[:alpha:]]+$', 'ab1', false],
      ['a$', 'a\n', false], // RE2: $ is the end of the subject only (PCRE: also before a final newline)
      ['a\\n?$', 'a\n', true], // what PCRE's \Z meant
      ['a\\z', 'a\n', false],
      ['\\Aa', 'ba', false],
      ['(a*)*b', 'aaab', true],
      ['(|a)+b', 'b', true],
      ['a*?b', 'aab', true],
      ['^\\.well-known/', '.well-known/x', true],
      ['caf\u00e9', 'un caf\u00e9', true],
      ['^.$', '\u{1F600}', true], // characters are code points (APISIX: bytes)
    ];
    for (const [pattern, subject, want] of cases)
      assert.equal(matches(pattern, subject), want, `${pattern} on ${JSON.stringify(subject)}`);
  });

  it('agrees with JavaScript RegExp on generated patterns and subjects (property)', () => {
    // Patterns from a small grammar whose meaning is the same in PCRE and JavaScript (subjects hold no \n,
    // where the two read `$` differently).
    const atom = fc.constantFrom('a', 'b', '1', ' ', '.', '[ab]', '[^a]', '[a-b1]', '\\d', '\\w', '\\s', '\\W', '\\.');
    const pattern: fc.Arbitrary<string> = fc.letrec((tie) => ({
      node: fc.oneof(
        { weight: 4, arbitrary: atom },
        { weight: 2, arbitrary: fc.tuple(tie('node'), tie('node')).map(([x, y]) => `${x}${y}`) },
        { weight: 1, arbitrary: fc.tuple(tie('node'), tie('node')).map(([x, y]) => `(?:${x}|${y})`) },
        { weight: 1, arbitrary: tie('node').map((x) => `(${x})`) },
        {
          weight: 2,
          arbitrary: fc
            .tuple(tie('node'), fc.constantFrom('*', '+', '?', '{2}', '{0,2}', '{1,}', '*?', '+?'))
            .map(([x, q]) => `(?:${x})${q}`),
        },
        { weight: 1, arbitrary: fc.constantFrom('^', '$', '\\b', '\\B') },
      ),
    })).node as fc.Arbitrary<string>;
    const subject = fc.stringMatching(/^[ab1 .x]{0,12}$/);
    fc.assert(
      fc.property(pattern, fc.array(subject, { minLength: 1, maxLength: 5 }), (p, subjects) => {
        const mine = compileFilterPattern(p);
        const js = new RegExp(p);
        for (const s of subjects) assert.equal(mine.test(s, budget()), js.test(s), `/${p}/ on ${JSON.stringify(s)}`);
      }),
      { seed: 20261125, numRuns: 3000 },
    );
  });

  it('catastrophic backtracking patterns answer at once', () => {
    // Each of these keeps a backtracking engine busy for longer than the age of the universe.
    const evil: [string, string, boolean][] = [
      ['(a+)+$', `${'a'.repeat(4000)}!`, false],
      ['^(a|a)*$', `${'a'.repeat(4000)}!`, false],
      ['(a|aa)+b', 'a'.repeat(4000), false],
      ['^(\\w+\\s?)*$', `${'word '.repeat(800)}!`, false],
      ['a*a*a*a*a*a*a*b', 'a'.repeat(4000), false],
      ['(.*a){20}b', 'a'.repeat(60), false],
      ['(.*a){20}', 'a'.repeat(60), true],
      ['(x+x+)+y', 'x'.repeat(4000), false],
    ];
    for (const [pattern, subject, want] of evil) {
      const started = performance.now();
      assert.equal(matches(pattern, subject), want, pattern);
      const ms = performance.now() - started;
      assert.ok(ms < 500, `${pattern}: ${ms.toFixed(0)} ms`);
    }
  });

  it('the work of one request is bounded: a budget shared by every item, refused with a message past it', () => {
    // Charged (length + 1) × program size per item, before matching: an upper bound on RE2's work.
    const p = compileFilterPattern('(a|b|c|d|e|f|g|h)*z');
    const b = budget();
    const name = 'abcdefgh'.repeat(32); // 256 characters, the longest name
    const started = performance.now();
    assert.throws(
      () => {
        for (let i = 0; i < 100_000; i++) p.test(name, b);
      },
      (err: unknown) => err instanceof FilterPatternError && /too costly/.test(err.message),
    );
    assert.ok(performance.now() - started < 3000, 'the budget did not stop the work');
    // Literal text (with ^ or $) is a string search, charged a fraction of a unit per character.
    const literal = compileFilterPattern('^/api/');
    const lb = budget();
    for (let i = 0; i < 100_000; i++) literal.test(`/api/${'x'.repeat(250)}`, lb);
    assert.ok(lb.work > FILTER_WORK_BUDGET / 2);
  });

  it('refuses what RE2 cannot run, and oversized patterns, with FilterPatternError', () => {
    for (const [pattern, why] of [
      ['(a)\\1', /backreferences/],
      ['(?<n>a)\\k<n>', /backreferences/],
      ['(?P<n>a)(?P=n)', /backreferences/],
      ['a(?=b)', /lookaround/],
      ['a(?!b)', /lookaround/],
      ['(?<=a)b', /lookaround/],
      ['(?<!a)b', /lookaround/],
      ['(?>a+)b', /atomic/],
      ['a++b', /possessive/],
      ['a{2}+b', /possessive/],
      ['(?R)', /recursion/],
      ['(a)(?1)', /recursion/],
      ['(a)?(?(1)b|c)', /conditional/],
      ['(?|(a)|(b))', /branch-reset/],
      ['(?#a comment)b', /comments/],
      ["(?'n'a)", /\(\?'name'…\) groups/],
      ['(?x)a b', /inline options .*x/],
      ['(*UTF)a', /verbs/],
      ['a\\Z', /\\Z is not supported .*\\n\?\$/],
      ['\\e', /escapes such as \\e/],
      ['\\G', /escapes such as \\G/],
      ['\\Ka', /escapes such as \\K/],
      ['a{1001}', /counts above 1000/],
      ['(?:(?:a{1000}){1000})', /counts above 1000/],
      ['.{1000}.{1000}.{1000}.{1000}.{1000}', /too large/],
      ['x'.repeat(MAX_PATTERN_LENGTH + 1), /longer than/],
    ] as const) {
      assert.throws(
        () => compileFilterPattern(pattern),
        (err: unknown) => err instanceof FilterPatternError && why.test(err.message),
        pattern,
      );
    }
  });

  it('a pattern that is not a regular expression at all is a SyntaxError (the Admin API then matches it as text)', () => {
    for (const pattern of ['(', ')', 'a)', '[a', '*a', 'a{2,1}', 'a{70000}', '\\', '\\i', '[z-a]', 'a**', '(?z)']) {
      assert.throws(() => compileFilterPattern(pattern), SyntaxError, pattern);
    }
  });

  it('listSearch: a 400 naming the construct, plain text for a non-pattern, a 400 when the budget runs out', async () => {
    const refused = listSearch(new URLSearchParams('uri=(a)\\1'));
    assert.ok(refused instanceof Response);
    assert.equal(refused.status, 400);
    assert.deepEqual(await refused.json(), {
      error_msg: 'invalid argument uri: backreferences are not supported in list filters',
    });

    const text = listSearch(new URLSearchParams({ name: 'a(b' }));
    assert.ok(!(text instanceof Response));
    assert.equal(text.name?.('xa(by'), true);
    assert.equal(text.name?.('ab'), false);
    assert.equal(text.uri, undefined);

    const costly = listSearch(new URLSearchParams({ name: '(a|b|c|d|e|f|g|h)*z' }));
    assert.ok(!(costly instanceof Response));
    for (let i = 0; i < 100_000; i++) costly.name?.('abcdefgh'.repeat(32));
    const answer = costly.refusal();
    assert.ok(answer);
    assert.equal(answer.status, 400);
    const body = (await answer.json()) as { error_msg: string };
    assert.match(body.error_msg, /^invalid argument name: .*too costly/);
  });
});

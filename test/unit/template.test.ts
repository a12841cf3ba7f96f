// biome-ignore-all lint/suspicious/noTemplateCurlyInString: APISIX templates are written ${name}, as plain strings
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { compileTemplate, type VarReader } from '../../src/core/template.ts';

const reader =
  (vars: Record<string, unknown>): VarReader =>
  (name) =>
    Object.hasOwn(vars, name) ? vars[name] : undefined;

describe('templates ($var, ${var ?? default}, $1): APISIX core.utils.resolve_var', () => {
  it('t/core/utils.t TEST 6: resolve_var', () => {
    const cases: [string, string][] = [
      ['', ''],
      ['xx', 'xx'],
      ['$me', 'David'],
      ['$me run', 'David run'],
      ['talk with $me', 'talk with David'],
      ['tell $me to', 'tell David to'],
      ['$you and $me', 'John and David'],
      ['$eva and $me', ' and David'],
      ['$you and \\$me', 'John and \\$me'],
      ['${you}_${me}', 'John_David'],
      ['${you}${me}', 'JohnDavid'],
      ['${you}$me', 'JohnDavid'],
      ['${you??}$me', 'JohnDavid'],
      ['${you??Rose}$me', 'JohnDavid'],
      ['${she??Rose}$me', 'RoseDavid'],
      ['${she ??Rose}$me', 'RoseDavid'],
      ['${she?? Rose}$me', 'RoseDavid'],
      ['${she ?? Rose}$me', 'RoseDavid'],
      ['${she   ??     Rose}$me', 'RoseDavid'],
      ['${ she ?? Rose }$me', 'RoseDavid'],
      ['${you ?? Rose}$he??', 'John??'],
      ['${you ?? Rose}$he??Jack', 'John??Jack'],
    ];
    const vars = reader({ you: 'John', me: 'David' });
    for (const [tpl, expected] of cases) assert.equal(compileTemplate(tpl)(vars), expected, tpl);
  });

  it('proxy-rewrite headers with regex_uri captures (proxy-rewrite3.t TEST 27-28)', () => {
    const captures = /^\/test\/(.*)\/(.*)\/(.*)/.exec('/test/plugin/proxy/rewrite')!;
    assert.equal(compileTemplate('$1/$2/$3')(reader({}), captures), 'plugin/proxy/rewrite');
    assert.equal(compileTemplate('${1}-${2}$3')(reader({}), captures), 'plugin-proxyrewrite');
    assert.equal(compileTemplate('[$0]')(reader({}), captures), '[/test/plugin/proxy/rewrite]');
    // Missing or unmatched captures, or none given: empty.
    assert.equal(compileTemplate('<$4><$10>')(reader({}), captures), '<><>');
    assert.equal(compileTemplate('a$1b')(reader({})), 'ab');
    assert.equal(compileTemplate('<$2>')(reader({}), /(a)|(b)/.exec('a')!), '<>');
    // APISIX's capture pattern \$\{?(\d+)\}? takes a brace on either side alone, and every digit.
    assert.equal(compileTemplate('${1|$1}|${1}}')(reader({}), ['', 'x']), 'x|x|x}');
    assert.equal(compileTemplate('$12')(reader({}), ['0', '1', '2']), '');
    // Captures and variables together; a capture's own text is not expanded again.
    assert.equal(
      compileTemplate('$1 from $remote_addr')(reader({ remote_addr: '127.0.0.1' }), ['', 'id']),
      'id from 127.0.0.1',
    );
    assert.equal(compileTemplate('$1')(reader({ host: 'h' }), ['', '$host']), '$host');
  });

  it('response-rewrite header values (response-rewrite.t TEST 23-24)', () => {
    const vars = reader({ remote_addr: '127.0.0.1', balancer_ip: '127.0.0.1', balancer_port: '1980' });
    assert.equal(compileTemplate('$remote_addr')(vars), '127.0.0.1');
    assert.equal(
      compileTemplate('from $remote_addr to $balancer_ip:$balancer_port')(vars),
      'from 127.0.0.1 to 127.0.0.1:1980',
    );
  });

  it('names, literal dollars and value types', () => {
    const vars = reader({ uri: '/a', arg_x: 'x', n: 1.5, big: 1e15, ok: true, multi: ['a', 'b'], 'arg_a.b': 'dot' });
    // $name takes [A-Za-z0-9_.]+, so a dot continues the name (write ${uri}.html).
    assert.equal(compileTemplate('$uri.html')(vars), '');
    assert.equal(compileTemplate('${uri}.html')(vars), '/a.html');
    assert.equal(compileTemplate('$arg_a.b')(vars), 'dot');
    assert.equal(compileTemplate('$arg_x-$arg_x/$arg_x?$arg_x')(vars), 'x-x/x?x');
    // A $ that starts nothing stays.
    assert.equal(compileTemplate('cost: $ 5, $-, ${}, $')(vars), 'cost: $ 5, $-, ${}, $');
    assert.equal(compileTemplate('$$arg_x')(vars), '$x');
    assert.equal(compileTemplate('${arg_x')(vars), '${arg_x');
    assert.equal(compileTemplate('\\\\$arg_x')(vars), '\\\\$arg_x');
    // ${ } and ${   } name the one-space variable (PCRE's lazy [^}]+? keeps a character).
    const space: VarReader = (name) => (name === ' ' ? 'space' : undefined);
    assert.equal(compileTemplate('[${ }]')(space), '[space]');
    assert.equal(compileTemplate('[${   }]')(space), '[space]');
    // Values: numbers as Lua prints them, booleans, multi-values joined as nginx joins repeated headers.
    assert.equal(compileTemplate('$n $big $ok $multi')(vars), '1.5 1e+15 true a, b');
    // Defaults only when nil: an empty string is a value.
    assert.equal(compileTemplate('${e ?? d}')(reader({ e: '' })), '');
    assert.equal(compileTemplate('${a ?? b ?? c}')(reader({})), 'b');
    assert.equal(compileTemplate('${a ?? }|${??b}')(reader({})), '|b');
  });

  it('escape option: applied to variable values and defaults only (proxy-rewrite uri escapes ?)', () => {
    const tpl = compileTemplate('/x?$arg_q&${arg_none ?? a?b}&$1', { escape: (v) => v.replaceAll('?', '%3F') });
    assert.equal(tpl(reader({ arg_q: 'p?q' }), ['', 'c?']), '/x?p%3Fq&a%3Fb&c?');
  });

  it('a template without $ is returned as is without reading a variable', () => {
    const tpl = compileTemplate('/plain/path?x=1');
    assert.equal(
      tpl(() => assert.fail('read a variable')),
      '/plain/path?x=1',
    );
  });
});

/**
 * Reference: APISIX's two passes as JavaScript regex replacements (resolve_var_with_captures, then
 * resolve_var), with the one documented difference: a capture's text is inserted as it is, never scanned
 * again, so pass 1 leaves a placeholder no pattern matches and the captures go in last. Templates with a
 * `$` inside braces (`${a$1}`) are left out: there pass 1 eats a `}` the brace pattern of pass 2 would need.
 */
const HOLE = '\uE000';
function reference(tpl: string, vars: Record<string, string>, captures: string[]): string {
  const inserted: string[] = [];
  const pass1 = tpl.replace(/(?<!\\)\$\{?(\d+)\}?/g, (_m, d: string) => {
    inserted.push(captures[Number(d)] ?? '');
    return HOLE;
  });
  const pass2 = pass1.replace(/(?<!\\)\$(\{\s*([^}]+?)\s*\}|([\w.]+))/g, (_m, _all, braced?: string, bare?: string) => {
    const segs = (braced ?? bare)!.split(/\s*\?\?\s*/);
    const v = Object.hasOwn(vars, segs[0]!) ? vars[segs[0]!] : undefined;
    if (v !== undefined) return v;
    return segs.length === 1 ? '' : segs[1]!;
  });
  let k = 0;
  return pass2.replace(/\uE000/g, () => inserted[k++]!);
}

describe('templates: compiled = APISIX two-pass regex reference (fast-check)', () => {
  it('random templates, variables and captures', () => {
    const piece = fc.constantFrom(
      '$',
      '{',
      '}',
      '\\',
      '?',
      '??',
      ' ',
      '.',
      '_',
      'a',
      'b',
      'ab',
      '1',
      '0',
      '12',
      '-',
      '/',
    );
    const template = fc.array(piece, { maxLength: 14 }).map((p) => p.join(''));
    const vars = fc.dictionary(
      fc.constantFrom('a', 'b', 'ab', 'a.b', '1', '_', ' ', 'b '),
      fc.string({ maxLength: 3 }),
    );
    const captures = fc.array(fc.oneof(fc.string({ maxLength: 3 }), template), { maxLength: 3 });
    fc.assert(
      fc.property(template, vars, captures, (tpl, v, caps) => {
        fc.pre(!/\{[^}]*\$/.test(tpl));
        assert.equal(compileTemplate(tpl)(reader(v), caps), reference(tpl, v, caps), JSON.stringify({ tpl, v, caps }));
      }),
      { numRuns: 5000 },
    );
  });
});

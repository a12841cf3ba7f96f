import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { compileIpMatcher, parseIPv4, parseIPv6 } from '../../src/core/router/ip.ts';
import {
  compileRouter,
  type MatchInput,
  normalizePath,
  type RouteSpec,
  resetRouterWork,
  routerWork,
} from '../../src/core/router/index.ts';

type Spec = Partial<RouteSpec<string>> & { id: string; paths: string[] };

function router(...specs: Spec[]) {
  return compileRouter<string>(specs.map((s) => ({ priority: 0, data: s.id, ...s })));
}

function req(path: string, extra: Partial<MatchInput> = {}): MatchInput {
  return { method: 'GET', host: 'example.com', path, ...extra };
}

/** The id of the matched route, or undefined. */
function hit(r: ReturnType<typeof router>, path: string, extra: Partial<MatchInput> = {}): string | undefined {
  return r.match(req(path, extra))?.data;
}

function params(r: ReturnType<typeof router>, path: string, extra: Partial<MatchInput> = {}) {
  const m = r.match(req(path, extra));
  assert.ok(m, `expected a match for ${path}`);
  return { ...m.params };
}

describe('path patterns', () => {
  it('exact paths match only themselves', () => {
    const r = router({ id: 'ab', paths: ['/a/b'] });
    assert.equal(hit(r, '/a/b'), 'ab');
    assert.equal(hit(r, '/a/b/'), undefined);
    assert.equal(hit(r, '/a/bc'), undefined);
    assert.equal(hit(r, '/a'), undefined);
    assert.equal(hit(r, '/A/B'), undefined);
  });

  it('/a/* is the prefix /a/: matches /a/ and deeper, not /a', () => {
    const r = router({ id: 'a', paths: ['/a/*'] });
    assert.equal(hit(r, '/a/'), 'a');
    assert.equal(hit(r, '/a/x'), 'a');
    assert.equal(hit(r, '/a/x/y'), 'a');
    assert.equal(hit(r, '/a'), undefined);
    assert.equal(hit(r, '/ab'), undefined);
  });

  it('/a* is the prefix /a with no segment boundary', () => {
    const r = router({ id: 'a', paths: ['/a*'] });
    assert.equal(hit(r, '/a'), 'a');
    assert.equal(hit(r, '/a/x'), 'a');
    assert.equal(hit(r, '/abc'), 'a');
    assert.equal(hit(r, '/b'), undefined);
    assert.equal(hit(r, '/'), undefined);
  });

  it('/foo* versus /foo/*', () => {
    const r = router({ id: 'star', paths: ['/foo*'] }, { id: 'slashstar', paths: ['/foo/*'] });
    assert.equal(hit(r, '/foo'), 'star');
    assert.equal(hit(r, '/foobar'), 'star');
    assert.equal(hit(r, '/foo/'), 'slashstar'); // longer prefix /foo/
    assert.equal(hit(r, '/foo/x'), 'slashstar');
    assert.deepEqual(params(r, '/foo'), { ':ext': '' });
    assert.deepEqual(params(r, '/foobar'), { ':ext': 'bar' });
    assert.deepEqual(params(r, '/foo/'), { ':ext': '' });
    assert.deepEqual(params(r, '/foo/x/y'), { ':ext': 'x/y' });
    const only = router({ id: 'slashstar', paths: ['/foo/*'] });
    assert.equal(hit(only, '/foo'), undefined);
    assert.equal(hit(only, '/foobar'), undefined);
  });

  it('a trailing * is captured as :ext', () => {
    const r = router({ id: 'h', paths: ['/hello/*'] }, { id: 'w', paths: ['/world*'] });
    assert.deepEqual(params(r, '/hello/openfunction'), { ':ext': 'openfunction' });
    assert.deepEqual(params(r, '/hello/a/b/c'), { ':ext': 'a/b/c' });
    assert.deepEqual(params(r, '/world/x'), { ':ext': '/x' });
    assert.deepEqual(params(r, '/worldly'), { ':ext': 'ly' });
  });

  it('a bare /* matches every path and * alone matches everything', () => {
    assert.deepEqual(params(router({ id: 'root', paths: ['/*'] }), '/x/y'), { ':ext': 'x/y' });
    assert.deepEqual(params(router({ id: 'root', paths: ['/*'] }), '/'), { ':ext': '' });
    assert.deepEqual(params(router({ id: 'all', paths: ['*'] }), '/x'), { ':ext': '/x' });
  });

  it(':name captures one non-empty segment', () => {
    const r = router({ id: 'u', paths: ['/user/:id'] }, { id: 'p', paths: ['/user/:id/posts/:post'] });
    assert.deepEqual(params(r, '/user/42'), { id: '42' });
    assert.deepEqual(params(r, '/user/42/posts/7'), { id: '42', post: '7' });
    assert.equal(hit(r, '/user/'), undefined);
    assert.equal(hit(r, '/user'), undefined);
    assert.equal(hit(r, '/user/42/'), undefined);
    assert.equal(hit(r, '/user/42/posts'), undefined);
    assert.equal(hit(r, '/user/42/posts/7/8'), undefined);
    assert.equal(hit(r, '/user/42/other/7'), undefined);
  });

  it(':name keeps a trailing slash of the pattern', () => {
    const r = router({ id: 'u', paths: ['/user/:id/'] });
    assert.deepEqual(params(r, '/user/1/'), { id: '1' });
    assert.equal(hit(r, '/user/1'), undefined);
  });

  it('*name captures the rest, including slashes, anywhere in the pattern', () => {
    const r = router({ id: 'f', paths: ['/files/*path'] }, { id: 'raw', paths: ['/raw/*path/view'] });
    assert.deepEqual(params(r, '/files/a/b/c.txt'), { path: 'a/b/c.txt' });
    assert.deepEqual(params(r, '/files/'), { path: '' });
    assert.equal(hit(r, '/files'), undefined);
    assert.deepEqual(params(r, '/raw/a/b/view'), { path: 'a/b' });
    assert.deepEqual(params(r, '/raw/a/view/x/view'), { path: 'a/view/x' });
    assert.equal(hit(r, '/raw/a/b'), undefined);
    const mid = router({ id: 'm', paths: ['/a/*/:id'] });
    assert.deepEqual(params(mid, '/a/x/y/42'), { ':ext': 'x/y', id: '42' });
    const twoNames = router({ id: 'n', paths: ['/a/*rest/:id'] });
    assert.deepEqual(params(twoNames, '/a/x/1'), { rest: 'x', id: '1' });
  });

  it('* and : are parsed even in a param route with a trailing *', () => {
    const r = router({ id: 'x', paths: ['/svc/:name/*'] });
    assert.deepEqual(params(r, '/svc/fn/a/b'), { name: 'fn', ':ext': 'a/b' });
    assert.deepEqual(params(r, '/svc/fn/'), { name: 'fn', ':ext': '' });
    assert.equal(hit(r, '/svc/fn'), undefined);
  });

  it('literal text in a param pattern is literal (no regex metacharacters)', () => {
    const r = router({ id: 'dot', paths: ['/v1.0/:id'] }, { id: 'mid', paths: ['/a/b:c'] });
    assert.equal(hit(r, '/v1.0/7'), 'dot');
    assert.equal(hit(r, '/v1x0/7'), undefined);
    assert.equal(hit(r, '/a/b:c'), 'mid');
    assert.equal(hit(r, '/a/bzz'), undefined);
  });
});

describe('which route wins', () => {
  it('an exact path beats a prefix regardless of priority', () => {
    const r = router({ id: 'prefix', paths: ['/a/*'], priority: 100 }, { id: 'exact', paths: ['/a/b'], priority: -5 });
    assert.equal(hit(r, '/a/b'), 'exact');
    assert.equal(hit(r, '/a/c'), 'prefix');
    const p = router({ id: 'param', paths: ['/a/:x'], priority: 100 }, { id: 'exact', paths: ['/a/b'] });
    assert.equal(hit(p, '/a/b'), 'exact');
  });

  it('the longest prefix wins regardless of priority', () => {
    const r = router(
      { id: 'short', paths: ['/a/*'], priority: 100 },
      { id: 'long', paths: ['/a/b/*'] },
      { id: 'param', paths: ['/a/b/c/:x'], priority: -1 },
    );
    assert.equal(hit(r, '/a/b/x'), 'long');
    assert.equal(hit(r, '/a/x'), 'short');
    assert.equal(hit(r, '/a/b/c/d'), 'param');
    assert.equal(hit(r, '/a/b/c/d/e'), 'long'); // param check failed → next shorter prefix
  });

  it('a longer prefix whose conditions fail falls back to a shorter one', () => {
    const r = router({ id: 'short', paths: ['/a/*'] }, { id: 'long', paths: ['/a/b/*'], methods: ['POST'] });
    assert.equal(hit(r, '/a/b/x'), 'short');
    assert.equal(hit(r, '/a/b/x', { method: 'POST' }), 'long');
  });

  it('priority orders routes with the identical path string', () => {
    const r = router({ id: 'low', paths: ['/p'], priority: 1 }, { id: 'high', paths: ['/p'], priority: 10 });
    assert.equal(hit(r, '/p'), 'high');
    const pre = router({ id: 'low', paths: ['/p/*'], priority: -1 }, { id: 'zero', paths: ['/p/*'] });
    assert.equal(hit(pre, '/p/x'), 'zero');
  });

  it('with equal priority and prefix, the longer original path string comes first', () => {
    const r = router({ id: 'star', paths: ['/a/*'] }, { id: 'param', paths: ['/a/:id'] });
    assert.equal(hit(r, '/a/x'), 'param'); // '/a/:id' is longer than '/a/*'
    assert.equal(hit(r, '/a/x/y'), 'star');
    const named = router({ id: 'star', paths: ['/a/*'] }, { id: 'rest', paths: ['/a/*rest'] });
    assert.equal(hit(named, '/a/x'), 'rest');
    // priority still comes before length
    const prio = router({ id: 'star', paths: ['/a/*'], priority: 1 }, { id: 'param', paths: ['/a/:id'] });
    assert.equal(hit(prio, '/a/x'), 'star');
  });

  it('insertion order breaks the remaining ties', () => {
    const r = router({ id: 'first', paths: ['/same'] }, { id: 'second', paths: ['/same'] });
    assert.equal(hit(r, '/same'), 'first');
    const p = router({ id: 'first', paths: ['/same/*'] }, { id: 'second', paths: ['/same/*'] });
    assert.equal(hit(p, '/same/x'), 'first');
    const later = router(
      { id: 'first', paths: ['/s'] },
      { id: 'second', paths: ['/s'] },
      { id: 'third', paths: ['/s'], priority: 1 },
    );
    assert.equal(hit(later, '/s'), 'third');
  });

  it('the first candidate whose conditions pass wins', () => {
    const r = router(
      { id: 'post', paths: ['/x'], methods: ['POST'], priority: 5 },
      { id: 'get', paths: ['/x'], methods: ['GET'] },
    );
    assert.equal(hit(r, '/x'), 'get');
    assert.equal(hit(r, '/x', { method: 'POST' }), 'post');
    assert.equal(hit(r, '/x', { method: 'PUT' }), undefined);
  });

  it('a route with several paths is indexed under each', () => {
    const r = router({ id: 'multi', paths: ['/one', '/two/*', '/three/:id'] }, { id: 'other', paths: ['/four'] });
    assert.equal(hit(r, '/one'), 'multi');
    assert.equal(hit(r, '/two/x'), 'multi');
    assert.deepEqual(params(r, '/three/3'), { id: '3' });
    assert.equal(hit(r, '/four'), 'other');
    assert.equal(hit(r, '/two'), undefined);
  });
});

describe('methods', () => {
  it('matches by exact membership; absent or empty means any', () => {
    const r = router(
      { id: 'get', paths: ['/g'], methods: ['GET'] },
      { id: 'multi', paths: ['/m'], methods: ['PUT', 'DELETE'] },
      { id: 'any', paths: ['/any'] },
      { id: 'empty', paths: ['/empty'], methods: [] },
    );
    assert.equal(hit(r, '/g'), 'get');
    assert.equal(hit(r, '/g', { method: 'POST' }), undefined);
    assert.equal(hit(r, '/g', { method: 'get' }), undefined);
    assert.equal(hit(r, '/m', { method: 'DELETE' }), 'multi');
    assert.equal(hit(r, '/m', { method: 'PUT' }), 'multi');
    assert.equal(hit(r, '/m'), undefined);
    assert.equal(hit(r, '/any', { method: 'PURGE' }), 'any');
    assert.equal(hit(r, '/empty', { method: 'OPTIONS' }), 'empty');
  });

  it('GET does not imply HEAD', () => {
    const r = router({ id: 'get', paths: ['/g'], methods: ['GET'] });
    assert.equal(hit(r, '/g', { method: 'HEAD' }), undefined);
  });
});

describe('hosts', () => {
  it('exact host', () => {
    const r = router({ id: 'foo', paths: ['/x'], hosts: ['foo.com'] });
    assert.equal(hit(r, '/x', { host: 'foo.com' }), 'foo');
    assert.equal(hit(r, '/x', { host: 'bar.foo.com' }), undefined);
    assert.equal(hit(r, '/x', { host: 'foo.co' }), undefined);
  });

  it('*.foo.com is the suffix .foo.com (not foo.com itself)', () => {
    const r = router({ id: 'w', paths: ['/x'], hosts: ['*.foo.com'] });
    assert.equal(hit(r, '/x', { host: 'a.foo.com' }), 'w');
    assert.equal(hit(r, '/x', { host: 'a.b.foo.com' }), 'w');
    assert.equal(hit(r, '/x', { host: 'foo.com' }), undefined);
    assert.equal(hit(r, '/x', { host: 'afoo.com' }), undefined);
    assert.equal(hit(r, '/x', { host: 'a.foo.co' }), undefined);
  });

  it('*foo.com is a plain suffix', () => {
    const r = router({ id: 'w', paths: ['/x'], hosts: ['*foo.com'] });
    assert.equal(hit(r, '/x', { host: 'barfoo.com' }), 'w');
    assert.equal(hit(r, '/x', { host: 'foo.com' }), 'w');
    assert.equal(hit(r, '/x', { host: 'oo.com' }), undefined);
  });

  it('* matches every host', () => {
    const r = router({ id: 'all', paths: ['/x'], hosts: ['*'] });
    assert.equal(hit(r, '/x', { host: 'anything.example' }), 'all');
    assert.equal(hit(r, '/x', { host: '' }), 'all');
  });

  it('exact host, then wildcards from the longest suffix, then *, then host-less', () => {
    const all: Spec[] = [
      { id: 'none', paths: ['/x'], priority: 100 },
      { id: 'star', paths: ['/x'], hosts: ['*'] },
      { id: 'com', paths: ['/x'], hosts: ['*.com'] },
      { id: 'foo', paths: ['/x'], hosts: ['*.foo.com'] },
      { id: 'exact', paths: ['/x'], hosts: ['a.foo.com'] },
    ];
    const r = router(...all);
    assert.equal(hit(r, '/x', { host: 'a.foo.com' }), 'exact');
    assert.equal(hit(r, '/x', { host: 'b.foo.com' }), 'foo');
    assert.equal(hit(r, '/x', { host: 'foo.com' }), 'com');
    assert.equal(hit(r, '/x', { host: 'foo.org' }), 'star');
    assert.equal(hit(router(all[0]!, all[2]!), '/x', { host: 'foo.org' }), 'none');
    // a bucket whose routes fail falls through to the next bucket
    assert.equal(hit(r, '/x', { host: 'a.foo.com', method: 'POST' }), 'exact');
    const methods = router(
      { id: 'exactPost', paths: ['/x'], hosts: ['a.foo.com'], methods: ['POST'] },
      { id: 'wild', paths: ['/x'], hosts: ['*.foo.com'] },
    );
    assert.equal(hit(methods, '/x', { host: 'a.foo.com' }), 'wild');
    assert.equal(hit(methods, '/x', { host: 'a.foo.com', method: 'POST' }), 'exactPost');
  });

  it('a host-bound route beats a host-less one with higher priority or a more specific path', () => {
    const r = router(
      { id: 'hostless-exact', paths: ['/a/b'], priority: 100 },
      { id: 'hostbound-prefix', paths: ['/a/*'], hosts: ['api.test'] },
    );
    assert.equal(hit(r, '/a/b', { host: 'api.test' }), 'hostbound-prefix');
    assert.equal(hit(r, '/a/b', { host: 'other.test' }), 'hostless-exact');
    // no host-bound route matches the path → host-less table
    assert.equal(hit(r, '/z', { host: 'api.test' }), undefined);
    const fall = router({ id: 'hostless', paths: ['/z'] }, { id: 'hostbound', paths: ['/a/*'], hosts: ['api.test'] });
    assert.equal(hit(fall, '/z', { host: 'api.test' }), 'hostless');
  });

  it('inside a host bucket the URI rules apply', () => {
    const r = router(
      { id: 'prefix', paths: ['/a/*'], hosts: ['h.test'], priority: 9 },
      { id: 'exact', paths: ['/a/b'], hosts: ['h.test'] },
      { id: 'longer', paths: ['/a/b/*'], hosts: ['h.test'] },
    );
    assert.equal(hit(r, '/a/b', { host: 'h.test' }), 'exact');
    assert.equal(hit(r, '/a/b/c', { host: 'h.test' }), 'longer');
    assert.equal(hit(r, '/a/c', { host: 'h.test' }), 'prefix');
  });

  it('route hosts are lower-cased at compile time', () => {
    const r = router(
      { id: 'up', paths: ['/x'], hosts: ['API.Example.COM'] },
      { id: 'w', paths: ['/y'], hosts: ['*.EXAMPLE.org'] },
    );
    assert.equal(hit(r, '/x', { host: 'api.example.com' }), 'up');
    assert.equal(hit(r, '/y', { host: 'a.example.org' }), 'w');
  });

  it('a route with several hosts is reachable from each', () => {
    const r = router({ id: 'multi', paths: ['/x'], hosts: ['a.test', '*.b.test', 'a.test'] });
    assert.equal(hit(r, '/x', { host: 'a.test' }), 'multi');
    assert.equal(hit(r, '/x', { host: 'c.b.test' }), 'multi');
    assert.equal(hit(r, '/x', { host: 'c.test' }), undefined);
  });
});

describe('remoteAddrs', () => {
  it('IPv4 addresses and CIDRs', () => {
    const r = router(
      { id: 'one', paths: ['/x'], remoteAddrs: ['192.168.1.10'] },
      { id: 'net', paths: ['/x'], remoteAddrs: ['10.0.0.0/8', '172.16.5.4/30'] },
      { id: 'all', paths: ['/all'], remoteAddrs: ['0.0.0.0/0'] },
    );
    assert.equal(hit(r, '/x', { remoteAddr: '192.168.1.10' }), 'one');
    assert.equal(hit(r, '/x', { remoteAddr: '192.168.1.11' }), undefined);
    assert.equal(hit(r, '/x', { remoteAddr: '10.255.1.2' }), 'net');
    assert.equal(hit(r, '/x', { remoteAddr: '11.0.0.1' }), undefined);
    assert.equal(hit(r, '/x', { remoteAddr: '172.16.5.7' }), 'net');
    assert.equal(hit(r, '/x', { remoteAddr: '172.16.5.8' }), undefined);
    assert.equal(hit(r, '/x'), undefined); // no client address → no match
    assert.equal(hit(r, '/all', { remoteAddr: '203.0.113.9' }), 'all');
    assert.equal(hit(r, '/all', { remoteAddr: '2001:db8::1' }), undefined);
    assert.equal(hit(r, '/all', { remoteAddr: 'garbage' }), undefined);
  });

  it('IPv6 addresses and CIDRs, including IPv4-mapped clients', () => {
    const r = router(
      { id: 'loop', paths: ['/x'], remoteAddrs: ['::1'] },
      { id: 'net', paths: ['/x'], remoteAddrs: ['2001:db8::/32'] },
      { id: 'v4', paths: ['/v4'], remoteAddrs: ['127.0.0.0/8'] },
    );
    assert.equal(hit(r, '/x', { remoteAddr: '::1' }), 'loop');
    assert.equal(hit(r, '/x', { remoteAddr: '0:0:0:0:0:0:0:1' }), 'loop');
    assert.equal(hit(r, '/x', { remoteAddr: '2001:DB8:ffff::42' }), 'net');
    assert.equal(hit(r, '/x', { remoteAddr: '2001:db9::1' }), undefined);
    assert.equal(hit(r, '/x', { remoteAddr: '::2' }), undefined);
    assert.equal(hit(r, '/v4', { remoteAddr: '::ffff:127.0.0.1' }), 'v4');
    assert.equal(hit(r, '/v4', { remoteAddr: '::1' }), undefined);
    assert.equal(hit(r, '/x', { remoteAddr: 'fe80::1%eth0' }), undefined);
    const ll = router({ id: 'll', paths: ['/x'], remoteAddrs: ['fe80::/10'] });
    assert.equal(hit(ll, '/x', { remoteAddr: 'fe80::1%eth0' }), 'll');
    assert.equal(hit(ll, '/x', { remoteAddr: 'febf::1' }), 'll');
    assert.equal(hit(ll, '/x', { remoteAddr: 'fec0::1' }), undefined);
  });

  it('rejects unparsable entries at compile time', () => {
    assert.throws(() => router({ id: 'bad', paths: ['/x'], remoteAddrs: ['300.1.1.1'] }), /route bad: invalid IP/);
    assert.throws(() => compileIpMatcher(['10.0.0.0/33']), /invalid IP/);
    assert.throws(() => compileIpMatcher(['::/129']), /invalid IP/);
    assert.throws(() => compileIpMatcher(['1.2.3.4/']), /invalid IP/);
    assert.throws(() => compileIpMatcher(['example.com']), /invalid IP/);
  });

  it('parses addresses strictly', () => {
    assert.equal(parseIPv4('1.2.3.4'), 0x01020304);
    assert.equal(parseIPv4('255.255.255.255'), 0xffffffff);
    for (const bad of ['1.2.3', '1.2.3.4.5', '1.2.3.256', '01.2.3.4', '1..3.4', '', '1.2.3.4 ', 'a.b.c.d']) {
      assert.equal(parseIPv4(bad), -1, bad);
    }
    assert.deepEqual(parseIPv6('::'), [0, 0, 0, 0]);
    assert.deepEqual(parseIPv6('::1'), [0, 0, 0, 1]);
    assert.deepEqual(parseIPv6('1::'), [0x10000, 0, 0, 0]);
    assert.deepEqual(parseIPv6('1:2:3:4:5:6:7:8'), [0x10002, 0x30004, 0x50006, 0x70008]);
    assert.deepEqual(parseIPv6('1:2:3:4:5:6:7::'), [0x10002, 0x30004, 0x50006, 0x70000]);
    assert.deepEqual(parseIPv6('::ffff:1.2.3.4'), [0, 0, 0xffff, 0x01020304]);
    assert.deepEqual(parseIPv6('2001:db8::8:800:200c:417a'), [0x20010db8, 0, 0x80800, 0x200c417a]);
    for (const bad of [
      ':::',
      '1:::2',
      '1::2::3',
      '1:2:3:4:5:6:7:8:9',
      '::1:2:3:4:5:6:7:8',
      '12345::',
      ':1',
      '1:',
      'g::',
      '1.2.3.4::',
    ]) {
      assert.equal(parseIPv6(bad), null, bad);
    }
  });
});

describe('filter', () => {
  it('a failing filter moves on to the next candidate and sees the captures', () => {
    const seen: Record<string, string>[] = [];
    const r = router(
      {
        id: 'filtered',
        paths: ['/u/:id'],
        priority: 1,
        filter: (input, p) => {
          seen.push({ ...p });
          return input.ctx === 'yes';
        },
      },
      { id: 'plain', paths: ['/u/:id'] },
    );
    assert.equal(hit(r, '/u/1', { ctx: 'yes' }), 'filtered');
    assert.equal(hit(r, '/u/2', { ctx: 'no' }), 'plain');
    assert.deepEqual(seen, [{ id: '1' }, { id: '2' }]);
  });
});

describe('results', () => {
  it('size counts routes; matches without captures share a frozen empty params object', () => {
    const r = router({ id: 'a', paths: ['/a', '/b'] }, { id: 'c', paths: ['/c'] });
    assert.equal(r.size, 2);
    const m1 = r.match(req('/a'));
    const m2 = r.match(req('/c'));
    assert.ok(m1 && m2);
    assert.deepEqual(m1.params, {});
    assert.equal(m1.params, m2.params);
    assert.ok(Object.isFrozen(m1.params));
    assert.equal(compileRouter([]).match(req('/')), undefined);
  });
});

describe('normalizePath', () => {
  const cases: [string, string | null][] = [
    ['/', '/'],
    ['', '/'],
    ['/a/b', '/a/b'],
    ['/a/b/', '/a/b/'],
    ['/a%2Fb', '/a/b'],
    ['/a%2fb%2F%2Fc', '/a/b/c'],
    ['/a//b', '/a/b'],
    ['//a///b//', '/a/b/'],
    ['/a/./b', '/a/b'],
    ['/a/b/.', '/a/b/'],
    ['/a/b/..', '/a/'],
    ['/a/../../b', '/b'],
    ['/../../..', '/'],
    ['/..', '/'],
    ['/a/%2e%2e/b', '/b'],
    ['/a/%2E%2E/%2e/b', '/b'],
    ['/a/%2e%2e%2f%2e%2e%2fetc', '/etc'],
    ['/a/.b/..c/...', '/a/.b/..c/...'],
    ['/a%20b', '/a b'],
    ['/caf%C3%A9', '/café'],
    ['/a%252Fb', '/a%2Fb'],
    ['/a?x=1', '/a'],
    ['/a/../b?x=/../..', '/b'],
    ['/a%3Fb', '/a?b'],
    ['/a#frag', '/a'],
    ['/a%zz', null],
    ['/a%', null],
    ['/a%2', null],
    ['/a%00b', null],
    ['/a\0b', null],
    ['/%ff', null],
    ['a/b', null],
    // A backslash that makes a `..` segment when read as a separator (as Windows servers do): refused.
    ['/hello/..%5csecret', null],
    ['/hello/..%5Csecret', null],
    ['/hello/%2e%2e%5csecret', null],
    ['/a%5c..%5cb', null],
    ['/a/..%5c', null],
    ['/a%5c..', null],
    ['/a/b%5c../c', null],
    ['/a/..\\b', null],
    ['/%5C..', null],
    // Elsewhere a backslash is text: no `..` segment, whichever the separator.
    ['/a%5cb', '/a\\b'],
    ['/a\\b', '/a\\b'],
    ['/.%5cx', '/.\\x'],
    ['/...%5cx', '/...\\x'],
    ['/a..%5cb', '/a..\\b'],
    ['/a%5c..b', '/a\\..b'],
    ['/a/../b%5cc', '/b\\c'],
    ['/a%255c..%255cb', '/a%5c..%5cb'], // decoded once: the function gets the text `%5c`
    // A `..` segment with `;` parameters (servlet containers drop the `;…` and resolve the `..`): refused.
    ['/fn/..;/admin', null],
    ['/fn/..%3b/admin', null],
    ['/fn/..%3B/admin', null],
    ['/fn/a/..;/..;/x', null],
    ['/fn/..;jsessionid=1/x', null],
    ['/fn/..;', null],
    ['/fn/%2e%2e;/x', null],
    ['/fn/..%5c;', null],
    // Elsewhere `;` is text.
    ['/fn/a;b', '/fn/a;b'],
    ['/fn/a%3bb', '/fn/a;b'],
    ['/fn/.;/x', '/fn/.;/x'],
    ['/fn/...;/x', '/fn/...;/x'],
    ['/fn/a..;/x', '/fn/a..;/x'],
    ['/fn/x/../a;b', '/fn/a;b'],
  ];
  for (const [input, expected] of cases) {
    it(`${JSON.stringify(input)} → ${JSON.stringify(expected)}`, () => {
      assert.equal(normalizePath(input), expected);
    });
  }

  it('is idempotent and leaves no //, dot segment, or query (property)', () => {
    const segment = fc.oneof(
      fc.constantFrom('', '.', '..', '%2e', '%2E%2e', '%2F', 'a', 'b.c', '%20', '...'),
      fc.stringMatching(/^[a-z0-9._~-]{1,6}$/),
    );
    fc.assert(
      fc.property(fc.array(segment, { maxLength: 8 }), (segs) => {
        const out = normalizePath('/' + segs.join('/'));
        assert.ok(out !== null);
        assert.ok(out.startsWith('/'));
        assert.ok(!out.includes('//'), out);
        assert.ok(!/\/\.\.?(\/|$)/.test(out), out);
        assert.equal(normalizePath(out.replaceAll('%', '%25')), out);
      }),
    );
  });
});

describe('a 10,000-route table', () => {
  const shapes = ['hello/*', 'exact', 'user/:id', 'files/*path/raw'];
  const specs: RouteSpec<number>[] = [];
  for (let i = 0; i < 10_000; i++) {
    specs.push({
      id: String(i),
      paths: [`/fn${i}/${shapes[i % shapes.length]}`],
      methods: i % 5 === 0 ? ['POST'] : undefined,
      hosts: i % 7 === 0 ? [`h${i}.test`] : undefined,
      priority: 0,
      data: i,
    });
  }
  const r = compileRouter(specs);

  function input(i: number, path: string): MatchInput {
    return { method: i % 5 === 0 ? 'POST' : 'GET', host: i % 7 === 0 ? `h${i}.test` : 'x.test', path };
  }

  it('returns the right route and captures for every route', () => {
    assert.equal(r.size, 10_000);
    for (let i = 0; i < 10_000; i++) {
      const shape = i % shapes.length;
      const path = [`/fn${i}/hello/w/${i}`, `/fn${i}/exact`, `/fn${i}/user/u${i}`, `/fn${i}/files/d/${i}/raw`][shape]!;
      const m = r.match(input(i, path));
      assert.ok(m, path);
      assert.equal(m.data, i, path);
      const expected = [{ ':ext': `w/${i}` }, {}, { id: `u${i}` }, { path: `d/${i}` }][shape];
      assert.deepEqual({ ...m.params }, expected, path);
    }
  });

  it('misses what it should', () => {
    assert.equal(r.match(input(2, '/fn2/exact')), undefined); // route 2 is user/:id
    assert.equal(r.match(input(2, '/fn2/user/')), undefined);
    assert.equal(r.match(input(2, '/fn2/user/a/b')), undefined);
    assert.equal(r.match(input(3, '/fn3/files/a/b')), undefined);
    assert.equal(r.match(input(0, '/fn0/hello')), undefined);
    assert.equal(r.match(input(10_001, '/fn10001/exact')), undefined);
    assert.equal(r.match({ method: 'GET', host: 'x.test', path: '/fn5/exact' }), undefined); // needs POST
    assert.equal(r.match({ method: 'POST', host: 'x.test', path: '/fn7/files/a/raw' }), undefined); // host-bound
    assert.equal(r.match({ method: 'GET', host: 'x.test', path: '/fn' }), undefined);
    assert.equal(r.match({ method: 'GET', host: 'x.test', path: '/' }), undefined);
  });
});

describe('matching cost does not grow with the number of routes (work counted, not time)', () => {
  // Same shapes as above, ids zero-padded so that the request paths have the same length in both tables: then
  // the only thing that differs is the number of routes. Every 7th route is bound to a host, every 11th to a
  // wildcard host, every 5th needs POST.
  const shapes = ['hello/*', 'exact', 'user/:id', 'files/*path/raw'];
  const pad = (i: number) => String(i).padStart(5, '0');
  function table(n: number) {
    const specs: RouteSpec<number>[] = [];
    for (let i = 0; i < n; i++) {
      specs.push({
        id: String(i),
        paths: [`/fn${pad(i)}/${shapes[i % shapes.length]}`],
        methods: i % 5 === 0 ? ['POST'] : undefined,
        hosts: i % 7 === 0 ? [`h${pad(i)}.test`] : i % 11 === 0 ? [`*.w${pad(i)}.test`] : undefined,
        priority: 0,
        data: i,
      });
    }
    return compileRouter(specs);
  }
  const requestOf = (i: number): MatchInput => ({
    method: i % 5 === 0 ? 'POST' : 'GET',
    host: i % 7 === 0 ? `h${pad(i)}.test` : i % 11 === 0 ? `a.w${pad(i)}.test` : 'x.test',
    path: [`/fn${pad(i)}/hello/w`, `/fn${pad(i)}/exact`, `/fn${pad(i)}/user/u`, `/fn${pad(i)}/files/d/raw`][i % 4]!,
  });

  /** The work of one match, and its result. */
  function work(r: ReturnType<typeof table>, input: MatchInput) {
    resetRouterWork();
    const m = r.match(input);
    return { ...routerWork(), data: m?.data };
  }

  const small = table(100);
  const large = table(10_000);

  it('the counter counts: 10,000 routes on one path (told apart by method only) are all tried', () => {
    const specs: RouteSpec<number>[] = [];
    for (let i = 0; i < 10_000; i++) specs.push({ id: String(i), paths: ['/same'], methods: [`M${i}`], priority: 0, data: i });
    const w = work(compileRouter(specs), { method: 'M9999', host: 'x.test', path: '/same' });
    assert.equal(w.data, 9999);
    assert.equal(w.candidates, 10_000);
  });

  it('a request for each of the last routes of each shape, for a host-bound and a wildcard-host route, and misses', () => {
    // Route numbers present in both tables, and the last ones of the large table (same shape and host kind).
    const cases: [number, number, string][] = [
      [96, 9992, 'hello/* (prefix)'],
      [97, 9997, 'exact'],
      [94, 9998, 'user/:id (param)'],
      [95, 9995, 'files/*path/raw'],
      [91, 9975, 'host-bound'],
      [88, 9988, 'wildcard host'],
    ];
    for (const [s, l, what] of cases) {
      assert.equal(s % 4, l % 4, what);
      const ws = work(small, requestOf(s));
      const wl = work(large, requestOf(l));
      assert.equal(ws.data, s, what);
      assert.equal(wl.data, l, what);
      const msg = `${what}: 100 routes ${JSON.stringify(ws)}, 10,000 routes ${JSON.stringify(wl)}`;
      const input = requestOf(l);
      assert.ok(wl.candidates <= 2, msg);
      assert.ok(wl.candidates <= ws.candidates + 1, msg);
      // The walk is bounded by the length of the path and host, not by the number of routes: 100 times the routes
      // add at most a node per extra branching digit of the ids (2 here), where a scan would do 100 times the work.
      assert.ok(wl.nodes <= ws.nodes + 4, msg);
      assert.ok(wl.nodes <= input.path.length + input.host.length, msg);
      // The tree walk is bounded by the length of the path (and host), not by the number of routes.
    }
    for (const path of ['/fn99999/exact', '/nope', '/fn0/exact', `/fn${pad(9999)}/hello`]) {
      const ws = work(small, { method: 'GET', host: 'x.test', path });
      const wl = work(large, { method: 'GET', host: 'x.test', path });
      assert.equal(wl.data, undefined, path);
      const msg = `miss ${path}: 100 routes ${JSON.stringify(ws)}, 10,000 routes ${JSON.stringify(wl)}`;
      assert.equal(wl.candidates, 0, msg);
      assert.ok(wl.nodes <= ws.nodes + 4 && wl.nodes <= path.length + 2, msg);
    }
  });
});

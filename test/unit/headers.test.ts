import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  cleanedResponsePairs,
  cleanResponseHeaders,
  type HeaderList,
  isHopByHop,
  removeHeaders,
  requestHeadersForUpstream,
  RecordHeaders,
} from '../../src/core/upstream/headers.ts';

/** An upstream answer's headers with every kind of header that must not reach the client. */
function upstreamHeaders(): Headers {
  const h = new Headers();
  h.append('content-type', 'text/plain');
  h.append('content-length', '5');
  h.append('connection', 'keep-alive, X-Private');
  h.append('keep-alive', 'timeout=5');
  h.append('transfer-encoding', 'chunked');
  h.append('x-private', 'secret');
  h.append('proxy-authenticate', 'Basic');
  h.append('te', 'trailers');
  h.append('trailer', 'x-t');
  h.append('upgrade', 'h2c');
  h.append('set-cookie', 'a=1');
  h.append('set-cookie', 'b=2');
  h.append('x-kept', 'yes');
  return h;
}

describe('response header cleaning', () => {
  it('cleanedResponsePairs drops hop-by-hop headers and those Connection names, keeps repeated Set-Cookie', () => {
    assert.deepEqual(cleanedResponsePairs(upstreamHeaders()), [
      ['content-length', '5'],
      ['content-type', 'text/plain'],
      ['set-cookie', 'a=1'],
      ['set-cookie', 'b=2'],
      ['x-kept', 'yes'],
    ]);
  });

  it('cleanedResponsePairs also drops the names it is given', () => {
    const pairs = cleanedResponsePairs(upstreamHeaders(), new Set(['content-length', 'x-kept']));
    assert.deepEqual(pairs.map(([n]) => n), ['content-type', 'set-cookie', 'set-cookie']);
  });

  it('gives the same answer as cleaning a Headers in place', () => {
    const inPlace = upstreamHeaders();
    cleanResponseHeaders(inPlace);
    assert.deepEqual([...new Headers(cleanedResponsePairs(upstreamHeaders()))], [...inPlace]);
  });
});

describe('the header name switches (hop-by-hop, gateway-set)', () => {
  const HOP = ['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade'];
  const GATEWAY = ['host', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port', 'forwarded', 'x-real-ip'];
  // Same lengths as the names above, or one letter off: none of them is dropped.
  const OTHERS = ['tf', 'ta', 'upgradf', 'trailers', 'connectiom', 'keep-alivf', 'content-type', 'proxy-connectiom', 'transfer-encodinh', 'content-encoding',
    'proxy-authenticatf', 'proxy-authorizatiom', 'hosts', 'hast', 'forwardex', 'x-real-iq', 'x-forwarded-fot', 'x-forwarded-hosu', 'x-forwarded-prot0',
    'x-forwarded-protocol', 'date', 'server', 'content-length', 'authorization', ''];

  it('isHopByHop is true for exactly the hop-by-hop names', () => {
    for (const name of HOP) assert.equal(isHopByHop(name), true, name);
    for (const name of [...GATEWAY, ...OTHERS]) assert.equal(isHopByHop(name), false, name);
  });

  it('requestHeadersForUpstream drops exactly the hop-by-hop and gateway-set names of the client', () => {
    const raw = [...HOP, ...GATEWAY, ...OTHERS].flatMap((name) => [name, 'v']);
    const out = requestHeadersForUpstream(new Headers(), { clientIp: '', scheme: 'http', host: null }, undefined, raw);
    assert.deepEqual(
      out.map(([name]) => name),
      [...OTHERS, 'x-forwarded-proto'],
    );
  });
});

describe('request headers for the upstream', () => {
  const fwd = { clientIp: '192.0.2.7', scheme: 'https', host: 'gw.example:9080' };

  it('drops hop-by-hop, gateway-set and Connection-named headers, then adds X-Forwarded-*', () => {
    const incoming = new Headers([
      ['Host', 'gw.example:9080'],
      ['Connection', 'keep-alive, X-Hop'],
      ['X-Hop', 'private'],
      ['Keep-Alive', 'timeout=5'],
      ['X-Forwarded-For', '203.0.113.1'],
      ['X-Real-IP', '203.0.113.1'],
      ['Accept', 'text/plain'],
      ['X-Multi', 'a'],
      ['X-Multi', 'b'],
    ]);
    assert.deepEqual(requestHeadersForUpstream(incoming, fwd), [
      ['accept', 'text/plain'],
      ['x-multi', 'a, b'],
      ['x-forwarded-for', '192.0.2.7'],
      ['x-forwarded-proto', 'https'],
      ['x-forwarded-host', 'gw.example:9080'],
    ]);
  });

  it('from a raw list (Node): the same rules, names in lower case, repeated lines kept as they came', () => {
    // biome-ignore format: one name/value pair per line
    const raw = [
      'Host', 'gw.example:9080',
      'Connection', 'keep-alive, X-Hop',
      'X-Hop', 'private',
      'Keep-Alive', 'timeout=5',
      'X-Forwarded-For', '203.0.113.1',
      'Authorization', 'Bearer client',
      'Accept', 'text/plain',
      'X-Multi', 'a',
      'x-multi', 'b',
    ];
    const incoming = new Headers();
    for (let i = 0; i < raw.length; i += 2) incoming.append(raw[i]!, raw[i + 1]!);
    const set: HeaderList = [['authorization', 'Basic dGVzdDp0ZXN0']];
    assert.deepEqual(requestHeadersForUpstream(incoming, fwd, set, raw), [
      ['accept', 'text/plain'],
      ['x-multi', 'a'],
      ['x-multi', 'b'],
      ['x-forwarded-for', '192.0.2.7'],
      ['x-forwarded-proto', 'https'],
      ['x-forwarded-host', 'gw.example:9080'],
      ['authorization', 'Basic dGVzdDp0ZXN0'],
    ]);
  });

  it('from a raw list: every Connection line counts, in any case', () => {
    // biome-ignore format: one name/value pair per line
    const raw = ['CONNECTION', 'x-a', 'X-A', '1', 'x-b', '2', 'connection', 'X-B', 'x-c', '3'];
    const out = requestHeadersForUpstream(new Headers(), { clientIp: '', scheme: 'http', host: null }, undefined, raw);
    assert.deepEqual(out, [['x-c', '3'], ['x-forwarded-proto', 'http']]);
  });

  it("the route's own headers replace the client's of the same name, X-Forwarded-* included", () => {
    const incoming = new Headers({ authorization: 'Bearer client', accept: '*/*' });
    const set: HeaderList = [
      ['authorization', 'Basic dGVzdDp0ZXN0'],
      ['x-forwarded-proto', 'http'],
    ];
    const out = requestHeadersForUpstream(incoming, { clientIp: '', scheme: 'https', host: null }, set);
    assert.deepEqual(out, [['accept', '*/*'], ...set]);
    out.push(['x-extra', '1']);
    assert.equal(set.length, 2, 'the route’s list is not the one returned');
  });

  it('removeHeaders drops every entry of the given names, in place, keeping the order of the rest', () => {
    const list: HeaderList = [
      ['a', '1'],
      ['host', 'x'],
      ['b', '2'],
      ['host', 'y'],
      ['content-length', '3'],
    ];
    removeHeaders(list, new Set(['host', 'content-length']));
    assert.deepEqual(list, [
      ['a', '1'],
      ['b', '2'],
    ]);
  });
});

describe('RecordHeaders (a plain header record edited in place, Node)', () => {
  it('get/has/set/append/delete/forEach as Headers does, on the record itself', () => {
    const rec: Record<string, string | string[]> = { 'content-type': 'text/plain', vary: 'Accept' };
    const h = new RecordHeaders(rec);
    assert.equal(h.get('Content-Type'), 'text/plain');
    assert.equal(h.has('VARY'), true);
    h.append('Vary', 'Origin');
    h.set('X-A', ' 1 ');
    h.append('set-cookie', 'a=1');
    h.append('set-cookie', 'b=2');
    h.delete('content-type');
    assert.deepEqual(rec, { vary: 'Accept, Origin', 'x-a': '1', 'set-cookie': ['a=1', 'b=2'] });
    assert.equal(h.get('set-cookie'), 'a=1, b=2');
    const seen: string[] = [];
    h.forEach((v, n) => {
      seen.push(`${n}=${v}`);
    });
    assert.deepEqual(seen, ['set-cookie=a=1, b=2', 'vary=Accept, Origin', 'x-a=1']);
    assert.equal(h.get('toString'), null, 'no prototype names');
  });

  it('refuses what Headers refuses: bad names, CR/LF/NUL in values', () => {
    const h = new RecordHeaders({});
    assert.throws(() => h.set('bad name', 'x'), TypeError);
    assert.throws(() => h.set('x-a', 'a\r\nInjected: 1'), TypeError);
    assert.throws(() => h.append('x-a', 'a\nb'), TypeError);
    assert.throws(() => h.set('__proto__', 'x'), TypeError);
  });
});

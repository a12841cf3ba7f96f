/**
 * `RequestContext.arg` reads a query without escapes as it is (`plainArg`, src/core/context.ts) instead of building a
 * `URLSearchParams`: it must answer what `URLSearchParams#get` answers, for every query and name.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { plainArg, RequestContext } from '../../src/core/context.ts';

/** A context holding `query` (only what `arg` reads). */
function contextWith(query: string): RequestContext {
  const req = new Request('http://gw/p');
  return new RequestContext({
    request: req,
    method: 'GET',
    path: '/p',
    rawPath: '/p',
    query,
    host: 'gw',
    clientIp: '10.0.0.7',
    scheme: 'http',
    rawHeaders: undefined,
    clientSignal: () => req.signal,
    // biome-ignore lint/suspicious/noExplicitAny: not called here
    forward: undefined as any,
    env: undefined,
    websocket: undefined,
  });
}

// Parts built from names, '=', '&' and a few other characters, so that names repeat and parts are empty or odd.
const piece = fc.constantFrom('apikey', 'a', 'b', '', '=', '&', '&&', '==', 'x=1', '?', 'é', '\ud800', '%41', '+', ';', ' ');
const query = fc.array(piece, { maxLength: 10 }).map((p) => p.join(''));
const name = fc.constantFrom('apikey', 'a', 'b', '', '?a', 'x', 'é', 'A', ' ');

describe('query arguments', () => {
  it('reads what URLSearchParams reads (fast-check)', () => {
    fc.assert(
      fc.property(query, name, (q, n) => {
        const want = new URLSearchParams(q).get(n) ?? undefined;
        assert.equal(contextWith(q).arg(n), q ? want : undefined, `${JSON.stringify(q)} ${JSON.stringify(n)}`);
      }),
      { numRuns: 2000 },
    );
  });

  it('searches a plain query as it is', () => {
    assert.equal(plainArg('apikey=key-500', 'apikey'), 'key-500');
    assert.equal(plainArg('a=1&apikey=k&apikey=j', 'apikey'), 'k');
    assert.equal(plainArg('apikey&a=1', 'apikey'), '');
    assert.equal(plainArg('apikeyx=1&x=a=b', 'x'), 'a=b');
    assert.equal(plainArg('&&=v', ''), 'v');
    assert.equal(plainArg('a=1', 'apikey'), undefined);
  });
});

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cleanedResponsePairs, cleanResponseHeaders } from '../../src/core/upstream/headers.ts';

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

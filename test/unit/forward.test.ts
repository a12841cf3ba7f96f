/**
 * `forward()`'s request-body decisions, seen by a forwarder that records what it is handed: which bodies are counted
 * against `max_req_body_size` and which go on as the runtime's own stream, and which lengths travel with them. The
 * conformance suite checks the same end to end on every runtime (openfunction.test.ts, "errors and limits").
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { RequestContext } from '../../src/core/context.ts';
import { forward } from '../../src/core/upstream/forward.ts';
import { encodePath } from '../../src/core/upstream/path.ts';
import type { ForwardRequest } from '../../src/core/upstream/types.ts';
import { bodyOf } from '../helpers/forward-request.ts';

/** Forwards a POST with `headers` and an `n`-byte body under `limit`; returns what the forwarder got and the status. */
async function send(headers: Record<string, string>, n: number, limit?: number) {
  const request = new Request('http://gw.test/up', { method: 'POST', headers, body: bodyOf(n), duplex: 'half' } as RequestInit);
  let got: ForwardRequest | undefined;
  let sent = -1;
  const ctx = {
    request,
    method: 'POST',
    clientIp: '127.0.0.1',
    scheme: 'http',
    clientSignal: () => undefined,
    forward: async (req: ForwardRequest) => {
      got = req;
      sent = req.body ? (await new Response(req.body).arrayBuffer()).byteLength : 0;
      return new Response('ok');
    },
  } as unknown as RequestContext;
  const target = { url: 'http://fn.test/', timeout: 1000, tlsVerify: true, keepalive: { enabled: true, idleTimeoutMs: 1000, poolSize: 1 }, label: 'function', maxBodySize: limit };
  const res = await forward(ctx, target);
  const length = got?.headers.filter(([name]) => name === 'content-length').map(([, v]) => v);
  return { status: res.status, got, sent, length, own: got?.body === request.body };
}

describe('forward(): request bodies', () => {
  it('a declared length within the limit: the runtime’s own stream, uncounted, with its length', async () => {
    const r = await send({ 'content-length': '1000' }, 1000, 2000);
    assert.equal(r.status, 200);
    assert.equal(r.own, true);
    assert.equal(r.got?.maxBodySize, undefined);
    assert.deepEqual(r.length, ['1000']);
    assert.equal(r.sent, 1000);
  });

  it('a declared length over the limit: 413, the function is not called', async () => {
    const r = await send({ 'content-length': '3000' }, 3000, 2000);
    assert.equal(r.status, 413);
    assert.equal(r.got, undefined);
  });

  it('no declared length (chunked): counted, and it fails past the limit', async () => {
    const ok = await send({}, 1000, 2000);
    assert.equal(ok.own, false);
    assert.equal(ok.got?.maxBodySize, 2000);
    assert.equal(ok.sent, 1000);
    const over = await send({}, 3000, 2000);
    assert.equal(over.got?.maxBodySize, 2000);
    assert.equal(over.status, 413);
  });

  it('no limit: the body goes on as it came', async () => {
    const r = await send({ 'content-length': '10' }, 10);
    assert.equal(r.own, true);
    assert.deepEqual(r.length, ['10']);
  });

  it('a Content-Length next to a Transfer-Encoding (workerd passes such requests on) is removed, and the body counted', async () => {
    for (const limit of [2000, undefined]) {
      const r = await send({ 'content-length': '3', 'transfer-encoding': 'chunked' }, 5, limit);
      assert.deepEqual(r.length, [], `limit ${limit}`);
      assert.equal(r.sent, 5);
      if (limit !== undefined) assert.equal(r.got?.maxBodySize, limit);
    }
  });
});

describe('encodePath (a normalised path re-encoded for the wire)', () => {
  // The global replace, without the fast path for paths that need nothing: each character outside RFC 3986's pchar and `/`.
  const byReplace = (p: string) => p.replace(/[^A-Za-z0-9\-._~!$&'()*+,;=:@/]/gu, (c) => encodeURIComponent(c));
  /** The answer, or the error's name (a lone UTF-16 surrogate, which no decoded path holds, throws URIError). */
  const outcome = (f: (p: string) => string, p: string) => {
    try {
      return f(p);
    } catch (err) {
      return `throws ${(err as Error).name}`;
    }
  };
  it('encodes a character outside the BMP as its UTF-8 bytes, not each UTF-16 half (which threw URIError)', () => {
    assert.equal(encodePath('😀'), '%F0%9F%98%80');
    assert.equal(encodePath('/a/é😀b c'), '/a/%C3%A9%F0%9F%98%80b%20c');
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme' }), (p) => decodeURIComponent(encodePath(p)) === p && /^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-F]{2})*$/.test(encodePath(p))),
      { numRuns: 2000 },
    );
  });

  it('answers what the global replace answered, for plain and unusual paths', () => {
    for (const p of ['', '/', 'world', '/a/b.c', "a-._~!$&'()*+,;=:@/", 'a b', '%', '%2e%2e', 'ü', '/x?y', 'a#b', '\\', '😀', 'a\u0000b', '\ud800']) {
      assert.equal(outcome(encodePath, p), outcome(byReplace, p), JSON.stringify(p));
    }
    fc.assert(
      fc.property(
        fc.oneof(fc.string(), fc.string({ unit: 'grapheme' }), fc.stringMatching(/^[a-z0-9/._~%-]{0,20}$/)),
        (p) => outcome(encodePath, p) === outcome(byReplace, p),
      ),
      { numRuns: 2000 },
    );
  });
});

import assert from 'node:assert/strict';
import { type ForwardRequest, UpstreamError, type UpstreamErrorKind } from '../../src/core/upstream/types.ts';

/** Keep-alive settings of {@link forwardRequest}. */
export const KEEPALIVE = { enabled: true, idleTimeoutMs: 10_000, poolSize: 8 };

/** A forwarder call for the forwarder unit tests: GET `url`, no headers or body, 5 s timeout, keep-alive on. */
export function forwardRequest(url: string, init: Partial<ForwardRequest> = {}): ForwardRequest {
  return {
    url,
    method: 'GET',
    headers: [],
    body: null,
    timeout: 5_000,
    tlsVerify: true,
    keepalive: KEEPALIVE,
    ...init,
  };
}

/** Asserts that `p` rejects with an UpstreamError of `kind` (whose message matches `message`, when given); returns it. */
export async function rejectsWith(p: Promise<unknown>, kind: UpstreamErrorKind, message?: RegExp): Promise<UpstreamError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof UpstreamError, `expected an UpstreamError, got ${String(err)}`);
    assert.equal(err.kind, kind, `expected kind ${kind}, got ${err.kind}: ${err.message}`);
    if (message) assert.match(err.message, message);
    return err;
  }
  assert.fail(`expected a rejection of kind ${kind}`);
}

/** A request body of `n` zero bytes in one chunk. */
export function bodyOf(n: number): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(c) {
      c.enqueue(new Uint8Array(n));
      c.close();
    },
  });
}

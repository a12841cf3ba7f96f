import type { ForwardRequest } from '../../src/core/upstream/types.ts';

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

/**
 * Framing checks that Node's HTTP parser makes and Bun's and Deno's servers do not (issue 18, "Also on Bun and
 * Deno"): both hand the handler a request with two `Content-Length`s (joined: `5, 5`) and one with an `Expect`
 * other than `100-continue`, and Deno one with a lower-case method. Node answers 400, 417 and 400; so do the Bun and
 * Deno entries, through this check, before anything is routed or forwarded. The connection is closed after a bad `Content-Length`: its framing is in doubt.
 * No `node:*` imports: both entries use it.
 */
import { errorResponse } from '../core/errors.ts';

const LOWER_CASE = /[a-z]/;

/** The answer to a request whose framing Node would refuse, or undefined for a request that may go on. */
export function framingError(req: Request): Response | undefined {
  // nginx's parser takes upper-case methods only; Deno passes `get` on as it came (Bun closes the connection).
  if (LOWER_CASE.test(req.method)) return errorResponse(400, 'bad request: the method is not upper-case');
  const cl = req.headers.get('content-length');
  if (cl?.includes(',')) {
    const res = errorResponse(400, 'bad request: more than one Content-Length');
    res.headers.set('connection', 'close');
    return res;
  }
  const expect = req.headers.get('expect');
  if (expect !== null && expect.toLowerCase() !== '100-continue') {
    return errorResponse(417, 'expectation failed: only "Expect: 100-continue" is understood');
  }
  return undefined;
}

/**
 * Ends the connection of a refused upload on Bun and Deno (issue 18, item 11).
 *
 * When the gateway answers a request that carries a body with an error (404 no route, 413 over
 * `max_req_body_size`, a 5xx before the body was sent on...), the body may not have been read to its end. Bun and
 * Deno then keep the connection for the next request and read the rest of the upload, however long it is: an
 * endless chunked POST kept a core busy for as long as the client sent. Cancelling the body's reader does not end
 * the connection there. What does (measured on Bun 1.4.5 and Deno 2.9.6):
 * - Bun: a response with `Connection: close` closes the connection once the response is complete, at once, unread
 *   upload or not (a client still sending then gets a reset and often never reads the answer);
 * - Deno: a response with `Connection: close` is not enough; the connection is closed once the body's reader is
 *   cancelled after that response was sent.
 * So every such answer says `Connection: close`, and the rest of the upload is read and dropped, at most
 * {@link LINGER}'s bytes and time ("lingering close", as nginx and Node do), so that a client still sending can
 * read the answer; then the connection ends: on Bun the answer's body is held open until then (`holdAnswer`),
 * on Deno the body's reader is cancelled. A body the core is still draining itself (a 413 on its Content-Length:
 * `drainInBackground`) is waited for, at most the same time; one the function call read is not waited for. On Deno
 * and Bun a chunked upload is read through this wrapper (`ownChunkedBody`): the core cancels it before its 413.
 *
 * Only for requests that announce a body (`Transfer-Encoding`, or a `Content-Length` other than 0) and answers of
 * 400 and above; everything else (the hot path) passes through untouched. No `node:*` imports: both entries use it.
 */

import { drainOf } from '../core/drain.ts';

/** How much of a refused upload is read and dropped before the connection is closed. */
export const LINGER = { bytes: 8 * 1024 * 1024, ms: 2000 } as const;

export interface RefusalOptions {
  /** Keep the answer's body open until the lingering read is over (Bun closes as soon as the answer is complete). */
  holdAnswer: boolean;
  /**
   * Hand the handler a copy of a chunked request whose body this wrapper reads, so that it can still read and
   * cancel the client's body after the answer when the core stopped reading it before (the core's 413 of a chunked
   * upload: it drains 8 MiB, then cancels). Bun closes only when the answer completes, Deno only when the body is
   * cancelled after the answer. Costs a Request and a JS stream per chunked upload, which the core counts through a
   * JS stream anyway; an upload with a Content-Length is left as it is. {@link originalRequest} gives the server's
   * request back (Bun's `requestIP` knows only that one).
   */
  ownChunkedBody: boolean;
  /**
   * With `ownChunkedBody`: before the end of a chunked body goes on, wait one timer tick and cut the body instead
   * when the client's connection closed meanwhile. Bun (1.4.5) ends a chunked body at its last chunk, before the
   * trailer section, which it then parses as the next request: it answers that with 400 and closes the connection,
   * discarding the answer in flight (oven-sh/bun#32887). Cut here, the function never gets a complete upload for
   * a request whose client was told 400 (issue 18, item 13).
   */
  confirmEnd?: boolean;
  bytes?: number;
  ms?: number;
}

type Handler<E> = (req: Request, env: E) => Response | Promise<Response>;

const hasBody = (req: Request): boolean => {
  if (req.headers.has('transfer-encoding')) return true;
  const cl = req.headers.get('content-length');
  return cl !== null && cl !== '0';
};

/** Wraps a server's fetch handler so that an error answer to an upload ends the connection (see the file comment). */
export function closeAfterRefusal<E>(handler: Handler<E>, opts: RefusalOptions): Handler<E> {
  const limits = { bytes: opts.bytes ?? LINGER.bytes, ms: opts.ms ?? LINGER.ms };
  return (req, env) => {
    if (!hasBody(req)) return handler(req, env);
    let own: ReadableStreamDefaultReader<Uint8Array> | undefined;
    let inner = req;
    if (opts.ownChunkedBody && req.body !== null && req.headers.has('transfer-encoding')) {
      own = req.body.getReader();
      inner = new Request(req, {
        body: passOn(own, opts.confirmEnd ? req.signal : undefined),
        duplex: 'half',
      } as RequestInit);
      originals.set(inner, req);
    }
    const after = (res: Response) => {
      if (res.status < 400) return res;
      const body = req.body;
      const reader = own ?? (body !== null && !body.locked ? body.getReader() : undefined);
      // A body the core is still draining itself (after a 413 on its Content-Length): wait for that, bounded.
      const lingering = reader ? linger(reader, limits) : within(body ? drainOf(body) : undefined, limits.ms);
      return refuse(res, lingering, opts);
    };
    const res = handler(inner, env);
    return res instanceof Promise ? res.then(after) : after(res);
  };
}

const originals = new WeakMap<Request, Request>();

/** The request the server handed over, for a copy {@link closeAfterRefusal} made (`ownChunkedBody`), else `req`. */
export function originalRequest(req: Request): Request {
  return originals.get(req) ?? req;
}

/**
 * A stream of what `reader` yields; cancelling it leaves `reader` to the wrapper (it lingers on it after an error).
 * With `confirmEnd` (the client's signal), the end waits one timer tick and becomes an error if the client is gone.
 */
function passOn(reader: ReadableStreamDefaultReader<Uint8Array>, confirmEnd?: AbortSignal): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const next = await reader.read();
      if (!next.done) {
        controller.enqueue(next.value);
        return;
      }
      if (confirmEnd) {
        await new Promise((resolve) => setTimeout(resolve, 0));
        if (confirmEnd.aborted) {
          controller.error(new Error('the client connection closed at the end of the body'));
          return;
        }
      }
      controller.close();
    },
  });
}

function refuse(res: Response, lingering: Promise<void>, opts: RefusalOptions): Response | Promise<Response> {
  let headers = res.headers;
  try {
    headers.set('connection', 'close');
  } catch {
    // Immutable headers (a fetch Response): copy them.
    headers = new Headers(res.headers);
    headers.set('connection', 'close');
  }
  const init = { status: res.status, statusText: res.statusText, headers };
  if (!opts.holdAnswer) return headers === res.headers ? res : new Response(res.body, init);
  if (res.body === null) return new Response(heldBody([], null, lingering), init);
  if (headers.has('content-length')) return new Response(heldBody([], res.body.getReader(), lingering), init);
  return readSmall(res.body.getReader()).then(({ chunks, size, rest }) => {
    if (rest === null) headers.set('content-length', String(size));
    return new Response(heldBody(chunks, rest, lingering), init);
  });
}

/** An answer up to this size without a `Content-Length` is read first, so that it is sent with one. */
const SMALL_ANSWER = 64 * 1024;

async function readSmall(reader: ReadableStreamDefaultReader<Uint8Array>) {
  const chunks: Uint8Array[] = [];
  let size = 0;
  while (size <= SMALL_ANSWER) {
    const next = await reader.read();
    if (next.done) return { chunks, size, rest: null };
    chunks.push(next.value);
    size += next.value.byteLength;
  }
  return { chunks, size, rest: reader };
}

/**
 * The answer's body (`first`, then what `rest` yields), whose end waits for `lingering`: the connection closes when
 * the answer is complete. With a `Content-Length` the client sees the answer complete meanwhile.
 */
function heldBody(
  first: Uint8Array[],
  rest: ReadableStreamDefaultReader<Uint8Array> | null,
  lingering: Promise<void>,
): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    start(controller) {
      for (const c of first) controller.enqueue(c);
    },
    async pull(controller) {
      const next = rest ? await rest.read() : { done: true as const, value: undefined };
      if (!next.done) {
        controller.enqueue(next.value);
        return;
      }
      await lingering;
      controller.close();
    },
    cancel(reason) {
      return rest?.cancel(reason);
    },
  });
}

/** `work`, or nothing, waited for at most `ms`. */
async function within(work: Promise<void> | undefined, ms: number): Promise<void> {
  if (!work) return;
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([work, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

/**
 * Reads and drops what the client is still sending, bounded in bytes and time (a read that never returns is cut by
 * the timer), then cancels the body.
 */
async function linger(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  limits: { bytes: number; ms: number },
): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, limits.ms);
  });
  const drained = (async () => {
    let n = 0;
    try {
      while (n < limits.bytes) {
        const { done, value } = await reader.read();
        if (done) return;
        n += value.byteLength;
      }
    } catch {
      // the client went away
    }
  })();
  await Promise.race([drained, expired]);
  clearTimeout(timer);
  await reader.cancel().catch(() => {});
}

import { cleanedResponsePairs, markCleaned, removeHeaders } from './headers.ts';
import { type ForwardRequest, type Forwarder, UpstreamError } from './types.ts';

export interface FetchForwarderOptions {
  /** The runtime's fetch (default: the global one). */
  fetch?: typeof fetch;
  /**
   * What the runtime's fetch does to a compressed answer:
   * - `strip`: it decodes the body, so `content-encoding`/`content-length` must go (Deno, Node's fetch);
   * - `keep`: the body stays as the upstream sent it (Bun with `decompress: false`, Workers, which re-encode
   *   on the way out), so the headers stay too (content-length is dropped when the runtime re-encodes).
   */
  compressed: 'strip' | 'keep';
  /** With `strip`: the codings the runtime's fetch decodes (default gzip, deflate, br); others pass through untouched. */
  decodes?: readonly string[];
  /** Runtime-specific additions to the fetch init (e.g. Bun's `tls`, `decompress`). */
  extraInit?: (req: ForwardRequest) => Record<string, unknown>;
  /** Whether the runtime's fetch honours a `Host` request header (Bun does, Deno with `allowHost`; Workers and undici's fetch do not). */
  honoursHost?: boolean;
  /**
   * Read a request body that has a size limit (`maxBodySize`) whole, at most that many bytes, before calling
   * `fetch`. For runtimes whose fetch ends the upload as if complete when the body stream errors (workerd does),
   * which would hand the function a truncated body instead of the client a 413. Bodies without a limit still stream.
   */
  bufferLimitedBodies?: boolean;
}

const DROP_LENGTH: ReadonlySet<string> = new Set(['content-length']);
/**
 * Request headers the forwarder drops, by (has a body, strips codings): `content-length` with a streamed body (the
 * runtime frames it), `accept-encoding` when the runtime's fetch decodes answers (it asks for its own codings), and
 * `host` always (a `Host` goes only where `hostHeader` says and the fetch honours it).
 */
const REQUEST_DROP: readonly ReadonlySet<string>[] = [
  new Set(['host']),
  new Set(['host', 'accept-encoding']),
  new Set(['host', 'content-length']),
  new Set(['host', 'content-length', 'accept-encoding']),
];
const DROP_CODING: ReadonlySet<string> = new Set(['content-encoding', 'content-length']);

/** Answers whose `content-length` is at most this many bytes are read whole before they are returned. */
const SMALL_BODY = 16 * 1024;

/**
 * A {@link Forwarder} over a WHATWG `fetch`, for runtimes whose native fetch is their best client
 * (Deno, Bun, Workers). Timeouts: `timeout` ms for the response headers, then for each gap between
 * body chunks. The client's abort signal cancels the call at any point.
 */
export function createFetchForwarder(opts: FetchForwarderOptions): Forwarder {
  const doFetch = opts.fetch ?? fetch;
  const decodes = new Set(opts.decodes ?? ['gzip', 'deflate', 'br']);
  const strip = opts.compressed === 'strip';
  return async (req) => {
    const ac = new AbortController();
    let timedOut = false;
    // One timer covers the headers and then a small body read whole: when the headers arrive the deadline moves
    // on by `timeout` and the timer, if it fires before that, waits for the rest (cheaper than a second timer).
    let deadline = 0;
    const onTimer = () => {
      const left = deadline - Date.now();
      if (left > 0) {
        timer = setTimeout(onTimer, left);
        return;
      }
      timedOut = true;
      ac.abort(new UpstreamError('timeout', deadline ? `body stalled for more than ${req.timeout} ms` : `no answer within ${req.timeout} ms`));
    };
    let timer: ReturnType<typeof setTimeout> | undefined = setTimeout(onTimer, req.timeout);
    const onClientAbort = () => ac.abort(new UpstreamError('aborted', 'client went away'));
    if (req.signal?.aborted) onClientAbort();
    req.signal?.addEventListener('abort', onClientAbort, { once: true });
    const cleanup = () => {
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      req.signal?.removeEventListener('abort', onClientAbort);
    };

    const headers = req.headers; // the forwarder's own (ForwardRequest contract): edited, not copied
    removeHeaders(headers, REQUEST_DROP[(req.body ? 2 : 0) + (strip ? 1 : 0)]!);
    if (req.hostHeader !== undefined && opts.honoursHost) headers.push(['host', req.hostHeader]);

    let bodyError: unknown;
    let body: ReadableStream<Uint8Array> | Uint8Array | null = req.body ? watchBody(req.body, (e) => (bodyError = e)) : null;
    if (body instanceof ReadableStream && opts.bufferLimitedBodies && req.maxBodySize !== undefined) {
      try {
        body = await readAll(body);
      } catch (err) {
        cleanup();
        if (bodyError instanceof UpstreamError) throw bodyError;
        if (timedOut) throw new UpstreamError('timeout', `no answer within ${req.timeout} ms`, { cause: err });
        throw new UpstreamError('aborted', 'client went away', { cause: err });
      }
    }

    let res: Response;
    try {
      const init: Record<string, unknown> = { method: req.method, headers, body, redirect: 'manual', signal: ac.signal };
      if (body instanceof ReadableStream) init.duplex = 'half';
      if (opts.extraInit) Object.assign(init, opts.extraInit(req));
      res = await doFetch(req.url, init as RequestInit);
    } catch (err) {
      cleanup();
      if (bodyError instanceof UpstreamError) throw bodyError;
      if (timedOut) throw new UpstreamError('timeout', `no answer within ${req.timeout} ms`, { cause: err });
      if (ac.signal.aborted) throw new UpstreamError('aborted', 'client went away', { cause: err });
      throw new UpstreamError('connect', describe(err), { cause: err });
    }
    const coding = res.headers.get('content-encoding')?.trim().toLowerCase();
    // A compressed answer loses its length when the runtime re-encodes it (`keep`) or decoded it (`strip`).
    const drop = !coding ? undefined : opts.compressed === 'keep' ? DROP_LENGTH : decodes.has(coding) ? DROP_CODING : undefined;
    const outHeaders = cleanedResponsePairs(res.headers, drop);
    if (!res.body) {
      cleanup();
      return markCleaned(new Response(null, { status: res.status, statusText: res.statusText, headers: outHeaders }));
    }
    // From here the timeout is the longest gap in the body (the deadline moves; the timer stays, see onTimer).
    deadline = Date.now() + req.timeout;
    // A small body of known length is read whole (the timeout then covers the body too) and handed on as bytes:
    // the runtime writes those natively, where a JS stream wrapper would pump every chunk through JS
    // (Deno, workerd: ~2x the CPU per proxied 1 KiB answer; `npm run bench`). Compressed answers always stream.
    const length = coding ? null : res.headers.get('content-length');
    if (length !== null && /^\d{1,9}$/.test(length) && Number(length) <= SMALL_BODY) {
      let bytes: ArrayBuffer;
      try {
        bytes = await res.arrayBuffer();
      } catch (err) {
        cleanup();
        if (timedOut) throw new UpstreamError('timeout', `body stalled for more than ${req.timeout} ms`, { cause: err });
        if (ac.signal.aborted) throw new UpstreamError('aborted', 'client went away', { cause: err });
        throw new UpstreamError('protocol', `upstream response body failed: ${describe(err)}`, { cause: err });
      }
      cleanup();
      return markCleaned(
        new Response(bytes.byteLength > 0 ? bytes : null, {
          status: res.status,
          statusText: res.statusText,
          headers: outHeaders,
        }),
      );
    }
    // Idle timeout between body chunks, and cleanup when the body ends or is cancelled.
    if (timer !== undefined) clearTimeout(timer);
    const reader = res.body.getReader();
    const stream = new ReadableStream<Uint8Array>({
      async pull(controller) {
        timer = setTimeout(() => {
          timedOut = true;
          ac.abort(new UpstreamError('timeout', `body stalled for more than ${req.timeout} ms`));
        }, req.timeout);
        try {
          const { done, value } = await reader.read();
          clearTimeout(timer);
          if (done) {
            cleanup();
            controller.close();
          } else controller.enqueue(value);
        } catch (err) {
          cleanup();
          controller.error(err);
        }
      },
      cancel(reason) {
        cleanup();
        ac.abort(new UpstreamError('aborted', 'client went away'));
        return reader.cancel(reason).catch(() => {});
      },
    });
    return markCleaned(new Response(stream, { status: res.status, statusText: res.statusText, headers: outHeaders }));
  };
}

/** The whole of a (size-limited) body. */
async function readAll(body: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const reader = body.getReader();
  const parts: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    size += value.byteLength;
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/** Remember an error raised by the request body (the gateway's size limit) so it is not reported as a connect failure. */
function watchBody(body: ReadableStream<Uint8Array>, onError: (e: unknown) => void): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { done, value } = await reader.read();
        if (done) controller.close();
        else controller.enqueue(value);
      } catch (err) {
        onError(err);
        controller.error(err);
      }
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
}

function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = (err as { cause?: unknown }).cause;
  return cause instanceof Error ? `${err.message}: ${cause.message}` : err.message;
}

import { readWithin } from '../body.ts';
import type { RequestContext } from '../context.ts';
import { drain, drainInBackground } from '../drain.ts';
import { errorResponse } from '../errors.ts';
import {
  CONTENT_LENGTH,
  cleanResponseHeaders,
  HEADERS_CLEANED,
  type HeaderList,
  removeHeaders,
  requestHeadersForUpstream,
} from './headers.ts';
import { type RetryPolicy, withRetries } from './retry.ts';
import { type ForwardRequest, UpstreamError } from './types.ts';

export interface ForwardTarget {
  /** Absolute URL to call, query included. */
  url: string;
  /** The method to send instead of the client's (openwhisk always POSTs). */
  method?: string;
  /** Send only `setHeaders`, none of the client's headers (openwhisk, as APISIX). */
  ownHeadersOnly?: boolean;
  /** Host header to send instead of the URL's authority. */
  hostHeader?: string;
  /** The read timeout, ms; with the connect and send timeouts see {@link ForwardRequest}. */
  timeout: number;
  connectTimeout?: number;
  sendTimeout?: number;
  tlsVerify: boolean;
  /** The client certificate to present to an https upstream (upstream `tls`). */
  clientCert?: ForwardRequest['clientCert'];
  keepalive: ForwardRequest['keepalive'];
  /** Request bodies larger than this many bytes are refused with 413 (checked while streaming). */
  maxBodySize?: number;
  /** Headers the gateway sets, replacing any the client sent under the same (lower-case) names: e.g. the plugin's Authorization. */
  setHeaders?: HeaderList;
  /** What the upstream is called in error messages, e.g. `function` or `upstream`. */
  label: string;
  /** Status when no connection could be made (503 for functions as APISIX; 502 for upstream nodes as nginx). */
  connectStatus?: number;
  /**
   * When the call is made again (src/core/upstream/retry.ts): an upstream's node failover, a `cold_start` retry.
   * Absent: one call.
   */
  retry?: RetryPolicy;
}

/**
 * Methods whose WHATWG `Request` has no body. A HEAD body is never forwarded; a GET body only where the runtime
 * keeps it ({@link RequestContext.getBody}, Node), see {@link requestBody}.
 */
export const NO_BODY_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD']);

/** The client's body to forward, or null: a call without one can be retried on another node. */
export function requestBody(ctx: RequestContext): ReadableStream<Uint8Array> | null {
  const read = ctx.bodyOverride;
  if (read !== undefined) {
    if (read.byteLength === 0) return null;
    return new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(read);
        controller.close();
      },
    });
  }
  // GET/HEAD first: on Node, reading `body` makes @hono/node-server build a full Request (~5 µs).
  if (NO_BODY_METHODS.has(ctx.method)) return ctx.getBody?.() ?? null;
  return ctx.request.body;
}

/** After a refused upload, how much more of it is read and thrown away so the client can read the 413. */
const DRAIN_BYTES = 8 * 1024 * 1024;
const DRAIN_MS = 2000;
const DRAIN = { bytes: DRAIN_BYTES, ms: DRAIN_MS };

/**
 * Wraps a request body so that it errors with `body-too-large` once more than `limit` bytes went through.
 * The rest of the upload is then drained (bounded) rather than cut: a client still sending would
 * otherwise get a reset instead of the 413 (the "lingering close" of nginx).
 */
export function limitBody(body: ReadableStream<Uint8Array>, limit: number): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  let seen = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const { done, value } = await reader.read();
      if (done) {
        controller.close();
        return;
      }
      seen += value.byteLength;
      if (seen > limit) {
        // Drain first, then fail: the 413 goes out once the upload is read (bounded), on a connection the
        // client can still read from (an answer sent mid-upload makes the client's write fail instead).
        await drain(reader, DRAIN);
        controller.error(new UpstreamError('body-too-large', `request body is larger than ${limit} bytes`));
        return;
      }
      controller.enqueue(value);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
}

/**
 * Sends the client's request to `target` and returns the upstream's answer, streamed, minus
 * hop-by-hop headers. Transport failures become gateway errors: 503 cannot connect, 504 timed out,
 * 502 broken answer, 413 body over the limit. With `target.retry` a failed call that can be made again is
 * (see retry.ts), to `opts.next(attempt)` when given (the upstream's next node), else to `target` again.
 *
 * Not an `async` function: a call without retries (every openfunction call) is the forwarder's promise and one
 * `then`, without the async function's own promise, its suspension at the `await` and the resumption (~0.5 µs of
 * promise machinery per request in a Node profile under load; bench/README.md, "Node hot path"). Whatever throws
 * before the call rejects the returned promise, as it did from the async function.
 */
export function forward(
  ctx: RequestContext,
  target: ForwardTarget,
  opts?: { next?: (attempt: number) => ForwardTarget },
): Promise<Response> {
  try {
    return forwardOrAnswer(ctx, target, opts);
  } catch (err) {
    return Promise.reject(err);
  }
}

function forwardOrAnswer(
  ctx: RequestContext,
  target: ForwardTarget,
  opts: { next?: (attempt: number) => ForwardTarget } | undefined,
): Promise<Response> {
  const req = ctx.request;
  // The plugins' edits (RequestContext.upstream, .headerOverlay) apply to every call, whatever the runtime.
  const method = target.method ?? ctx.upstream?.method ?? ctx.method;
  const headers = target.ownHeadersOnly
    ? [...(target.setHeaders ?? [])]
    : requestHeadersForUpstream(
        req.headers,
        { clientIp: ctx.clientIp, scheme: ctx.scheme, host: ctx.hostHeader },
        target.setHeaders,
        ctx.rawHeaders,
        ctx.headerOverlay,
      );

  // A body goes with the method sent; one rewritten to GET or HEAD (proxy-rewrite) carries none.
  let body = method !== ctx.method && NO_BODY_METHODS.has(method) ? null : requestBody(ctx);
  let counted = false;
  const source = body;
  if (source) {
    const limit = target.maxBodySize;
    // RFC 9112 §6.3: a Transfer-Encoding overrides a Content-Length, which an intermediary must remove before it
    // forwards the message. Node, Deno and Bun refuse such a request with 400; workerd hands it to the Worker.
    const chunked = req.headers.has('transfer-encoding');
    if (chunked) removeHeaders(headers, CONTENT_LENGTH);
    if (limit !== undefined) {
      const declared = req.headers.get('content-length');
      if (declared !== null && Number(declared) > limit) {
        // Read and drop (bounded) what the client is still sending, so it can read the 413.
        drainInBackground(source, DRAIN);
        return Promise.resolve(tooLarge(limit));
      }
      // A declared length within the limit bounds the body already (the runtime's HTTP server reads exactly that
      // many bytes), so it goes on as it came: the runtime's fetch can pipe it natively. Without one (chunked) the
      // body is counted on its way through.
      if (chunked || declared === null || !/^\d{1,15}$/.test(declared)) {
        body = limitBody(source, limit);
        counted = true;
      }
    }
  }

  const policy = target.retry;
  if (policy !== undefined && policy.attempts > 1) {
    if (body === null) return forwardWithRetries(ctx, target, opts?.next, policy, method, headers, null);
    if (policy.replayBodyLimit > 0) {
      const declared = req.headers.get('content-length');
      if (declared === null || Number(declared) <= policy.replayBodyLimit) {
        return forwardReplayable(ctx, target, opts?.next, policy, method, headers, body, counted);
      }
    }
  }
  return forwardOnce(ctx, target, method, headers, body, counted);
}

/** One call, no retries: the forwarder's answer (cleaned) or the gateway's answer to its failure. */
function forwardOnce(
  ctx: RequestContext,
  target: ForwardTarget,
  method: string,
  headers: HeaderList,
  body: ReadableStream<Uint8Array> | null,
  counted: boolean,
): Promise<Response> {
  ctx.proxied = true;
  const sent = performance.now();
  let pending: Promise<Response>;
  try {
    pending = ctx.forward({
      url: target.url,
      method,
      headers,
      hostHeader: ctx.upstream?.host ?? target.hostHeader,
      body,
      maxBodySize: counted ? target.maxBodySize : undefined,
      clientSignal: ctx.clientSignal,
      timeout: target.timeout,
      connectTimeout: target.connectTimeout,
      sendTimeout: target.sendTimeout,
      tlsVerify: target.tlsVerify,
      clientCert: target.clientCert,
      keepalive: target.keepalive,
    });
  } catch (err) {
    return Promise.resolve(failureResponse(err, target));
  }
  return pending.then(
    (res) => {
      ctx.upstreamLatency = performance.now() - sent;
      if ((res as { [HEADERS_CLEANED]?: boolean })[HEADERS_CLEANED] !== true) cleanResponseHeaders(res.headers);
      return res;
    },
    (err: unknown) => failureResponse(err, target),
  );
}

/** A request whose body may be replayed: read whole up to the policy's bound and retried, else sent once as it streams. */
async function forwardReplayable(
  ctx: RequestContext,
  target: ForwardTarget,
  next: ((attempt: number) => ForwardTarget) | undefined,
  policy: RetryPolicy,
  method: string,
  headers: HeaderList,
  body: ReadableStream<Uint8Array>,
  counted: boolean,
): Promise<Response> {
  let read: Uint8Array | ReadableStream<Uint8Array>;
  try {
    read = await readUpTo(body, policy.replayBodyLimit);
  } catch (err) {
    return failureResponse(err instanceof UpstreamError ? err : new UpstreamError('aborted', 'client went away'), target);
  }
  if (read instanceof Uint8Array) return forwardWithRetries(ctx, target, next, policy, method, headers, read);
  // Larger than the bound: sent once, as it streams (what was read first goes ahead of the rest).
  return forwardOnce(ctx, target, method, headers, read, counted);
}

/** The calls of a replayable request (no body, or `bytes` read whole) under `policy`. */
async function forwardWithRetries(
  ctx: RequestContext,
  first: ForwardTarget,
  next: ((attempt: number) => ForwardTarget) | undefined,
  policy: RetryPolicy,
  method: string,
  headers: HeaderList,
  bytes: Uint8Array | null,
): Promise<Response> {
  // The forwarder owns (and may edit) the list it is given: each call gets its own copy of the pairs.
  const pristine = headers.slice();
  let target = first;
  ctx.proxied = true;
  const sent = performance.now();
  const outcome = await withRetries(policy, {
    call(attempt, remainingMs) {
      if (attempt > 0 && next !== undefined) target = next(attempt);
      // A connect that would end past the deadline is cut at it.
      const ct = target.connectTimeout;
      const connectTimeout = ct !== undefined && remainingMs < ct ? Math.max(1, Math.ceil(remainingMs)) : ct;
      return ctx.forward({
        url: target.url,
        method,
        headers: attempt === 0 ? headers : pristine.slice(),
        hostHeader: ctx.upstream?.host ?? target.hostHeader,
        body: bytes === null ? null : bytesStream(bytes),
        clientSignal: ctx.clientSignal,
        timeout: target.timeout,
        connectTimeout,
        sendTimeout: target.sendTimeout,
        tlsVerify: target.tlsVerify,
        clientCert: target.clientCert,
        keepalive: target.keepalive,
      });
    },
    aborted: () => ctx.clientSignal()?.aborted === true,
  });
  if ('response' in outcome) {
    const res = outcome.response;
    ctx.upstreamLatency = performance.now() - sent;
    if ((res as { [HEADERS_CLEANED]?: boolean })[HEADERS_CLEANED] !== true) cleanResponseHeaders(res.headers);
    return res;
  }
  if ('stillStarting' in outcome) {
    return errorResponse(
      504,
      `the ${target.label} was still starting: no answer within the cold-start deadline of ${policy.deadlineMs} ms ` +
        `(${outcome.attempts} attempts in ${Math.round(outcome.elapsedMs)} ms; last: ${outcome.last})`,
    );
  }
  return failureResponse(outcome.error, target);
}

function bytesStream(bytes: Uint8Array): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    start(controller) {
      if (bytes.byteLength > 0) controller.enqueue(bytes);
      controller.close();
    },
  });
}

/**
 * Reads `body` whole when it has at most `limit` bytes (the bytes), else returns a stream of what was read followed by
 * the rest, unread. Errors of `body` (the client went away, `body-too-large`) are thrown.
 */
export async function readUpTo(
  body: ReadableStream<Uint8Array>,
  limit: number,
): Promise<Uint8Array | ReadableStream<Uint8Array>> {
  const read = await readWithin(body, limit);
  if (read instanceof Uint8Array) return read;
  const { chunks, reader } = read;
  let i = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (i < chunks.length) {
        controller.enqueue(chunks[i]!);
        chunks[i++] = EMPTY;
        return;
      }
      const r = await reader.read();
      if (r.done) controller.close();
      else controller.enqueue(r.value);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
}

const EMPTY = new Uint8Array(0);

function tooLarge(limit: number): Response {
  return errorResponse(413, `request body is larger than the ${limit} bytes allowed`);
}

/** The gateway's answer to a failed call: 503/502 cannot connect, 504 timed out, 502 broken answer, 413 too large. */
export function failureResponse(err: unknown, target: ForwardTarget): Response {
  const kind = err instanceof UpstreamError ? err.kind : 'protocol';
  const detail = err instanceof Error ? err.message : String(err);
  switch (kind) {
    case 'body-too-large':
      return tooLarge(target.maxBodySize ?? 0);
    case 'connect':
      return errorResponse(target.connectStatus ?? 503, `failed to connect to the ${target.label}: ${detail}`);
    case 'connect-timeout':
      // nginx: "upstream timed out (110: Connection timed out) while connecting to upstream" -> 504.
      return errorResponse(
        504,
        `the ${target.label} timed out while connecting (${target.connectTimeout === undefined ? detail : `connect timeout ${target.connectTimeout} ms`})`,
      );
    case 'timeout':
      // Without separate timeouts `timeout` bounded the whole wait; with them the forwarder says which one ran out.
      return errorResponse(
        504,
        target.connectTimeout === undefined && target.sendTimeout === undefined
          ? `the ${target.label} did not answer within ${target.timeout} ms`
          : `the ${target.label} timed out: ${detail}`,
      );
    case 'aborted':
      // The client is gone; nobody reads this.
      return errorResponse(499, 'client closed the request');
    default:
      return errorResponse(502, `bad answer from the ${target.label}: ${detail}`);
  }
}

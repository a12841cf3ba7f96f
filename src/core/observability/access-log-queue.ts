/**
 * The access log's queue: the log phase notes the finished request (its context and the time it ended) and the
 * lines of every request noted are built together, once per {@link ACCESS_LOG_DELAY_MS} or when
 * {@link ACCESS_LOG_MAX_PENDING} are waiting, then handed over as one text (one stdout write for the lot).
 *
 * Why not build each line as its request ends: in the middle of a request's work a line costs the gateway 2-3 times
 * what the same code costs in a loop (timed on Bun: 5.2 against ~2 µs, access-log.ts), its code and data no longer
 * in the caches. Built in one pass over the waiting requests, the access log's cost per request on Node went from
 * +13-18 % to +5-12 % of the gateway's CPU (bench/observability.ts, README "Performance"); on Bun it made no
 * difference the bench could see. The price: a request's context (its Request, Response and headers, already
 * finished with) lives a few ms longer, at most {@link ACCESS_LOG_MAX_PENDING} of them, and a line reaches stdout
 * up to {@link ACCESS_LOG_DELAY_MS} ms after its answer (the line writer before this one held lines as long).
 *
 * `delayMs: 0` builds and hands over each line as its request ends: Workers, where a timer set during a request
 * may never fire once the answer is sent.
 */
import type { RequestContext } from '../context.ts';
import { accessLogLine } from './access-log.ts';
import type { LogEnv } from './log-entry.ts';

export const ACCESS_LOG_DELAY_MS = 5;
export const ACCESS_LOG_MAX_PENDING = 128;

export interface AccessLogQueue {
  /** The log phase: `ctx`'s request has ended (its answer sent, or the client gone). */
  log(ctx: RequestContext): void;
  /** Build and hand over every waiting line now (shutdown). */
  flush(): void;
}

export interface AccessLogQueueOptions {
  delayMs?: number;
  maxPending?: number;
}

export function accessLogQueue(
  out: (text: string) => void,
  env: LogEnv,
  { delayMs = ACCESS_LOG_DELAY_MS, maxPending = ACCESS_LOG_MAX_PENDING }: AccessLogQueueOptions = {},
): AccessLogQueue {
  if (delayMs <= 0) {
    return {
      log: (ctx) => out(accessLogLine(ctx, env)),
      flush() {},
    };
  }
  // Parallel arrays, reused: a request costs two stores here, no object.
  const contexts: RequestContext[] = [];
  const endedAt: number[] = [];
  let timer: ReturnType<typeof setTimeout> | undefined;
  const flush = () => {
    if (timer !== undefined) {
      clearTimeout(timer);
      timer = undefined;
    }
    const n = contexts.length;
    if (n === 0) return;
    // One reading of the wall clock for the lot: each start_time is this offset plus the request's own start on
    // the monotonic clock, what `Date.now() - latency` gave at the request's end.
    const epochOffset = Date.now() - performance.now();
    let text = '';
    for (let i = 0; i < n; i++) text += accessLogLine(contexts[i]!, env, endedAt[i]!, epochOffset);
    contexts.length = 0;
    endedAt.length = 0;
    out(text);
  };
  return {
    log(ctx) {
      contexts.push(ctx);
      endedAt.push(performance.now());
      if (contexts.length >= maxPending) flush();
      else if (timer === undefined) timer = setTimeout(flush, delayMs);
    },
    flush,
  };
}

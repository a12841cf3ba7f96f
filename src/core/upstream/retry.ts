import * as v from 'valibot';
import { durationMs } from '../schema/common.ts';
import { INTEGER } from '../schema/format.ts';
import { UpstreamError } from './types.ts';

/**
 * When a call is tried again, and how long the gateway waits in between: the upstream's node failover (APISIX
 * `retries`/`retry_timeout`: connect failures, at once, on the next node) and fngate's cold-start retry (`cold_start`,
 * on serverless plugins and upstreams: connect failures and 502/503 answers, with capped exponential backoff and
 * jitter, within a total deadline). {@link forward} runs the loop; this module decides.
 *
 * A call is only ever made again when the request can be replayed (no body, or a body small enough to have been
 * buffered whole) and it surely never reached the upstream: the connect failed before the request was written, or the
 * answer was one the policy lists (502/503: a scale-to-zero platform's activator or ingress saying the function is not
 * there yet).
 */

/** 16 MiB: the most a cold-start retry buffers of a request body to be able to send it again. */
export const MAX_REPLAY_BODY = 16 * 1024 * 1024;

/** fngate extension `cold_start`, on serverless plugins and upstreams; durations in ms. */
export const coldStartSchema = v.strictObject({
  /** Total time, from the first attempt, within which attempts are made; then 504 "still starting". */
  deadline: v.optional(durationMs(1), 30000),
  /** The first backoff step, ms; each further step doubles, up to `max_delay`. */
  initial_delay: v.optional(durationMs(1), 25),
  /**
   * 150: at the cap each wait is 75–150 ms (equal jitter), so a function that became ready is called within one
   * step, on average after E[L²]/2E[L] ≈ 58 ms (`bench/cold-start.ts`; with 200 the mean through an activator came
   * to 106 ms on Deno, over the 100 ms goal), for ~9 calls a second while it starts.
   */
  max_delay: v.optional(durationMs(1), 150),
  /** Request bodies up to this many bytes are buffered so that they can be sent again; a larger one is sent once. */
  replay_body_limit: v.optional(
    v.pipe(v.number(INTEGER), v.integer(), v.minValue(0), v.maxValue(MAX_REPLAY_BODY)),
    65536,
  ),
  /** Answers that mean "not delivered, try again" (a Knative activator's or ingress's 502/503). */
  statuses: v.optional(v.array(v.picklist([502, 503])), [502, 503]),
});

export type ColdStartConf = v.InferOutput<typeof coldStartSchema>;

export interface RetryPolicy {
  /** At most this many calls in all (the first included); Infinity: as many as the deadline allows. */
  readonly attempts: number;
  /** Total ms from the first call within which a new call may start; 0: no deadline. */
  readonly deadlineMs: number;
  /** Backoff: the first step and the cap, ms; 0: the next call is made at once (node failover). */
  readonly initialDelayMs: number;
  readonly maxDelayMs: number;
  /** Statuses answered by the upstream that are retried (the answer is thrown away). */
  readonly statuses: readonly number[];
  /** Bodies up to this many bytes are buffered for a replay; 0: only requests without a body are retried. */
  readonly replayBodyLimit: number;
  /**
   * Which failures are retried: `unsent` only those where the request surely was not written (cold start);
   * `connect` any connect failure (APISIX node failover, for body-less requests only, as before).
   */
  readonly on: 'unsent' | 'connect';
  /** At the deadline (or out of attempts) the answer is a 504 saying the function was still starting. */
  readonly coldStart: boolean;
}

const policies = new WeakMap<ColdStartConf, RetryPolicy>();

/** The policy of a validated `cold_start` object (made once per config object). */
export function coldStartPolicy(conf: ColdStartConf, attempts = Number.POSITIVE_INFINITY): RetryPolicy {
  let p = policies.get(conf);
  if (p === undefined || p.attempts !== attempts) {
    p = {
      attempts,
      deadlineMs: conf.deadline,
      initialDelayMs: conf.initial_delay,
      maxDelayMs: Math.max(conf.initial_delay, conf.max_delay),
      statuses: conf.statuses,
      replayBodyLimit: conf.replay_body_limit,
      on: 'unsent',
      coldStart: true,
    };
    policies.set(conf, p);
  }
  return p;
}

/** APISIX's node failover: connect failures of body-less requests, on the next node at once. */
export function failoverPolicy(retries: number, retryTimeoutMs: number): RetryPolicy {
  return {
    attempts: retries + 1,
    deadlineMs: retryTimeoutMs,
    initialDelayMs: 0,
    maxDelayMs: 0,
    statuses: [],
    replayBodyLimit: 0,
    on: 'connect',
    coldStart: false,
  };
}

/**
 * The wait before retry number `retry` (1 = the first retry): a step of `initial * 2^(retry-1)` capped at `max`, and
 * "equal jitter" — half the step plus a random part of the other half — so that clients woken together spread out
 * while each wait stays at least half a step. `random` returns [0, 1).
 */
export function backoffDelay(
  retry: number,
  initialMs: number,
  maxMs: number,
  random: () => number = Math.random,
): number {
  if (initialMs <= 0) return 0;
  const step = Math.min(maxMs, initialMs * 2 ** Math.min(Math.max(0, retry - 1), 30));
  return step / 2 + random() * (step / 2);
}

/** Whether the failure of a call may be retried under `policy`. */
export function retryableFailure(policy: RetryPolicy, err: unknown): boolean {
  if (!(err instanceof UpstreamError)) return false;
  if (err.kind === 'connect-timeout') return true;
  if (err.kind !== 'connect') return false;
  return policy.on === 'connect' || !err.maybeSent;
}

/** Whether an answer with `status` is retried under `policy`. */
export function retryableStatus(policy: RetryPolicy, status: number): boolean {
  return policy.statuses.length > 0 && policy.statuses.includes(status);
}

/** What the retry loop needs from its caller; `now` and `sleep` are replaceable for the unit tests. */
export interface RetryHooks {
  /** One call; `attempt` counts from 0; `remainingMs` is the time left to the deadline (Infinity without one). */
  call(attempt: number, remainingMs: number): Promise<Response>;
  /** The client went away: stop. */
  aborted(): boolean;
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
  random?: () => number;
}

export type RetryOutcome =
  | { response: Response; attempts: number }
  | { error: unknown; attempts: number; attempt: number }
  /** The policy's cold start ran out: deadline or attempts. `last` is the final failure (an error or a status). */
  | { stillStarting: true; attempts: number; elapsedMs: number; last: string };

const sleepFor = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Calls until an answer that is not retried, a failure that is not retried, or the policy ran out. A retried
 * answer's body is cancelled. The caller checked that the request can be replayed (else attempts = 1).
 */
export async function withRetries(policy: RetryPolicy, hooks: RetryHooks): Promise<RetryOutcome> {
  const now = hooks.now ?? Date.now;
  const sleep = hooks.sleep ?? sleepFor;
  const started = now();
  const deadline = policy.deadlineMs > 0 ? started + policy.deadlineMs : Number.POSITIVE_INFINITY;
  for (let attempt = 0; ; attempt++) {
    let last: string;
    let lastError: unknown;
    try {
      const res = await hooks.call(attempt, deadline - now());
      if (!retryableStatus(policy, res.status)) return { response: res, attempts: attempt + 1 };
      last = `answered ${res.status}`;
      // Nobody reads it: let the connection go back to the pool (or close).
      res.body?.cancel().catch(() => {});
      lastError = undefined;
      // Out of attempts or time with a retried status: a cold start that did not finish. Without the cold start
      // (failover lists no statuses) this is not reached.
    } catch (err) {
      if (!retryableFailure(policy, err)) return { error: err, attempts: attempt + 1, attempt };
      last = err instanceof Error ? err.message : String(err);
      lastError = err;
    }
    const remaining = deadline - now();
    const out = attempt + 1 >= policy.attempts || remaining <= 0 || hooks.aborted();
    if (out) {
      if (policy.coldStart && !hooks.aborted()) {
        return { stillStarting: true, attempts: attempt + 1, elapsedMs: now() - started, last };
      }
      return { error: lastError ?? new UpstreamError('aborted', 'client went away'), attempts: attempt + 1, attempt };
    }
    const delay = Math.min(
      backoffDelay(attempt + 1, policy.initialDelayMs, policy.maxDelayMs, hooks.random),
      remaining,
    );
    if (delay > 0) await sleep(delay);
    if (hooks.aborted())
      return { error: new UpstreamError('aborted', 'client went away'), attempts: attempt + 1, attempt };
  }
}

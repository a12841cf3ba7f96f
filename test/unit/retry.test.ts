/**
 * The retry arithmetic of src/core/upstream/retry.ts: backoff steps, jitter bounds, the deadline, which failures and
 * answers are retried. A fake clock: `sleep` advances it, so the loop's timing is checked exactly.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import * as v from 'valibot';
import {
  backoffDelay,
  coldStartPolicy,
  coldStartSchema,
  failoverPolicy,
  retryableFailure,
  withRetries,
} from '../../src/core/upstream/retry.ts';
import type { RequestContext } from '../../src/core/context.ts';
import { serverlessForwarder } from '../../src/core/plugins/serverless.ts';
import { forward } from '../../src/core/upstream/forward.ts';
import { type ForwardRequest, UpstreamError } from '../../src/core/upstream/types.ts';

const conf = (c: Record<string, unknown> = {}) => v.parse(coldStartSchema, c);

describe('backoffDelay', () => {
  test('steps double from initial_delay and stop at max_delay; jitter keeps each wait within [step/2, step]', () => {
    const steps = [1, 2, 3, 4, 5, 6, 40].map((r) => backoffDelay(r, 25, 250, () => 0.999999));
    assert.deepEqual(
      steps.map((d) => Math.round(d)),
      [25, 50, 100, 200, 250, 250, 250],
    );
    const low = [1, 2, 3, 4, 5].map((r) => backoffDelay(r, 25, 250, () => 0));
    assert.deepEqual(low, [12.5, 25, 50, 100, 125]);
  });

  test('the mean wait at the cap is 3/4 of max_delay', () => {
    let s = 0;
    const n = 20000;
    for (let i = 0; i < n; i++) s += backoffDelay(10, 25, 250);
    assert.ok(Math.abs(s / n - 187.5) < 3, `mean ${s / n}`);
  });

  test('no initial delay: no wait (node failover); a huge retry count does not overflow', () => {
    assert.equal(backoffDelay(3, 0, 0), 0);
    assert.equal(
      backoffDelay(10_000, 25, 250, () => 1),
      250,
    );
  });
});

describe('which failures are retried', () => {
  const cold = coldStartPolicy(conf());
  const failover = failoverPolicy(2, 0);
  test('cold start: a connect failure known to be unsent, and a connect timeout; never one that may have been sent', () => {
    assert.equal(retryableFailure(cold, new UpstreamError('connect', 'refused')), true);
    assert.equal(retryableFailure(cold, new UpstreamError('connect-timeout', 'slow')), true);
    assert.equal(retryableFailure(cold, new UpstreamError('connect', 'lost', { maybeSent: true })), false);
    assert.equal(retryableFailure(cold, new UpstreamError('protocol', 'reset')), false);
    assert.equal(retryableFailure(cold, new UpstreamError('timeout', 'read')), false);
    assert.equal(retryableFailure(cold, new Error('other')), false);
  });
  test('failover (APISIX retries): any connect failure, as before', () => {
    assert.equal(retryableFailure(failover, new UpstreamError('connect', 'lost', { maybeSent: true })), true);
    assert.equal(retryableFailure(failover, new UpstreamError('protocol', 'reset')), false);
  });
});

/** A fake clock: `sleep` moves it on; each call takes `callMs`. */
function clock(callMs = 1) {
  let t = 1000;
  const sleeps: number[] = [];
  return {
    now: () => t,
    sleep: async (ms: number) => {
      sleeps.push(ms);
      t += ms;
    },
    spend: () => {
      t += callMs;
    },
    sleeps,
  };
}

describe('withRetries', () => {
  test('refused until the 4th call: 3 waits of the backoff, then the answer', async () => {
    const c = clock();
    let calls = 0;
    const out = await withRetries(coldStartPolicy(conf({ initial_delay: 10, max_delay: 1000 })), {
      async call() {
        c.spend();
        if (++calls < 4) throw new UpstreamError('connect', 'refused');
        return new Response('up');
      },
      aborted: () => false,
      now: c.now,
      sleep: c.sleep,
      random: () => 0.5,
    });
    assert.ok('response' in out);
    assert.equal(out.attempts, 4);
    assert.deepEqual(c.sleeps, [7.5, 15, 30]);
  });

  test('a retried status has its body cancelled; at the deadline: still starting, the last wait cut to the deadline', async () => {
    const c = clock(5);
    let cancelled = 0;
    const out = await withRetries(coldStartPolicy(conf({ deadline: 100, initial_delay: 20, max_delay: 40 })), {
      async call(_attempt, remaining) {
        assert.ok(remaining > -10, `called ${remaining} ms past the deadline`);
        c.spend();
        return new Response(new ReadableStream({ cancel: () => void cancelled++ }), { status: 503 });
      },
      aborted: () => false,
      now: c.now,
      sleep: c.sleep,
      random: () => 1,
    });
    assert.ok('stillStarting' in out);
    assert.equal(out.last, 'answered 503');
    // 5 call + 20 + 5 + 40 + 5 + 25 (cut: 100 - 75) + 5 call at the deadline = 105.
    assert.deepEqual(c.sleeps, [20, 40, 25]);
    assert.equal(out.attempts, 4);
    assert.equal(out.elapsedMs, 105);
    assert.equal(cancelled, 4);
  });

  test('a failure that may have been sent ends the loop at once with that failure', async () => {
    const c = clock();
    const err = new UpstreamError('connect', 'lost', { maybeSent: true });
    const out = await withRetries(coldStartPolicy(conf()), {
      call: async () => {
        throw err;
      },
      aborted: () => false,
      now: c.now,
      sleep: c.sleep,
    });
    assert.ok('error' in out);
    assert.equal(out.error, err);
    assert.equal(out.attempts, 1);
  });

  test('failover: retries + 1 calls, no wait, then the last failure (no 504)', async () => {
    const c = clock();
    const out = await withRetries(failoverPolicy(2, 0), {
      call: async (n) => {
        throw new UpstreamError('connect', `node ${n}`);
      },
      aborted: () => false,
      now: c.now,
      sleep: c.sleep,
    });
    assert.ok('error' in out);
    assert.equal((out.error as Error).message, 'node 2');
    assert.equal(out.attempts, 3);
    assert.deepEqual(c.sleeps, []);
  });

  test('failover: a 503 answer is the answer (no statuses)', async () => {
    const out = await withRetries(failoverPolicy(2, 0), {
      call: async () => new Response('x', { status: 503 }),
      aborted: () => false,
    });
    assert.ok('response' in out && out.response.status === 503 && out.attempts === 1);
  });

  test('the client went away: no more calls, no 504', async () => {
    const c = clock();
    let gone = false;
    let calls = 0;
    const out = await withRetries(coldStartPolicy(conf()), {
      call: async () => {
        calls++;
        gone = true;
        throw new UpstreamError('connect', 'refused');
      },
      aborted: () => gone,
      now: c.now,
      sleep: c.sleep,
    });
    assert.ok('error' in out);
    assert.equal((out.error as UpstreamError).kind, 'connect');
    assert.equal(calls, 1);
  });

  test('cold start with an attempt cap (upstream retries): still starting after retries + 1 calls', async () => {
    const c = clock();
    const out = await withRetries(coldStartPolicy(conf(), 3), {
      call: async () => {
        throw new UpstreamError('connect', 'refused');
      },
      aborted: () => false,
      now: c.now,
      sleep: c.sleep,
    });
    assert.ok('stillStarting' in out);
    assert.equal(out.attempts, 3);
  });
});

describe('forward() with a retry policy (a forwarder that records its calls)', () => {
  type Req = ForwardRequest;
  type Ctx = RequestContext;

  /** A POST whose body comes in `chunks` (no Content-Length: chunked); the forwarder refuses the first `refuse` calls. */
  function setup(chunks: number[], refuse: number) {
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        for (const n of chunks) c.enqueue(new Uint8Array(n).fill(97));
        c.close();
      },
    });
    const request = new Request('http://gw.test/up', { method: 'POST', body, duplex: 'half' } as RequestInit);
    const calls: { headers: [string, string][]; bytes: number; req: Req }[] = [];
    const ctx = {
      request,
      method: 'POST',
      clientIp: '127.0.0.1',
      scheme: 'http',
      params: {},
      upstream: {},
      query: '',
      clientSignal: () => undefined,
      forward: async (req: Req) => {
        const bytes = req.body ? (await new Response(req.body).arrayBuffer()).byteLength : 0;
        calls.push({ headers: req.headers.slice(), bytes, req });
        // The forwarder owns its list: an edit must not leak into the next call's.
        req.headers.push(['x-edited', String(calls.length)]);
        if (calls.length <= refuse) throw new UpstreamError('connect', 'refused');
        return new Response('ok');
      },
    } as unknown as Ctx;
    return { ctx, calls };
  }
  const base = {
    url: 'http://fn.test/',
    timeout: 1000,
    tlsVerify: true,
    keepalive: { enabled: true, idleTimeoutMs: 1000, poolSize: 1 },
    label: 'function',
  };
  const policy = coldStartPolicy(conf({ initial_delay: 1, max_delay: 2, replay_body_limit: 100 }));

  test('a chunked body within replay_body_limit is buffered and sent whole on every call, each with its own header list', async () => {
    const { ctx, calls } = setup([40, 40], 2);
    const res = await forward(ctx, { ...base, retry: policy });
    assert.equal(res.status, 200);
    assert.deepEqual(
      calls.map((c) => c.bytes),
      [80, 80, 80],
    );
    for (const c of calls) assert.equal(c.headers.filter(([n]) => n === 'x-edited').length, 0);
  });

  test('a body over replay_body_limit is sent once, whole (what was read first, then the rest): the refusal is the answer', async () => {
    const { ctx, calls } = setup([60, 60, 60], 1);
    const res = await forward(ctx, { ...base, retry: policy });
    assert.equal(res.status, 503);
    assert.deepEqual(
      calls.map((c) => c.bytes),
      [180],
    );
  });

  test('serverless timeout {connect, send, read}: the three bounds, connect before connect_timeout; a number stays the one APISIX bound', async () => {
    const run = async (extra: Record<string, unknown>) => {
      const { ctx, calls } = setup([], 0);
      const conf = {
        function_uri: 'http://fn.test/',
        ssl_verify: true,
        keepalive: true,
        keepalive_timeout: 60000,
        keepalive_pool: 5,
        max_req_body_size: 1024,
        timeout: 3000,
        ...extra,
      };
      await serverlessForwarder(conf as never, { label: 'function' })(ctx);
      const r = calls[0]!.req;
      return [r.connectTimeout, r.sendTimeout, r.timeout];
    };
    assert.deepEqual(
      await run({ timeout: { connect: 100, send: 200, read: 300 }, connect_timeout: 50 }),
      [100, 200, 300],
    );
    assert.deepEqual(await run({ timeout: { read: 300 }, connect_timeout: 50 }), [50, undefined, 300]);
    assert.deepEqual(await run({ timeout: 3000 }), [undefined, undefined, 3000]);
  });
});

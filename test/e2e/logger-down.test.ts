// http-logger with its log endpoint down for 30 s under load (issue 16, item 4): the gateway's memory stays bounded
// by `max_pending_entries` (the heap measured after full GCs), the entries it drops are counted and logged (never silently lost), and the clients'
// answers are not delayed by the endpoint. Two ways of being down: a port that refuses connections, and a server
// that accepts and never answers (each send waits for the logger's `timeout`).
// Run: npm run build && node --import tsx --test --test-concurrency=1 test/e2e/logger-down.test.ts
import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { Pool } from 'undici';
import { type GatewayUnderTest, startGateway } from '../conformance/harness.ts';
import { type FunctionServers, startFunctions } from '../functions/functions.ts';
import { INSPECTABLE, inspectMemory } from '../helpers/inspector.ts';
import { refusedPort } from '../helpers/process.ts';

const DOWN_MS = Number(process.env.LOGGER_DOWN_MS ?? 30_000);
const MAX_PENDING = 2000;

const mib = (n: number) => (n / 1048576).toFixed(1);

let fns: FunctionServers;
before(async () => {
  fns = await startFunctions();
});
after(async () => {
  await fns?.close();
});

/** Drives `conns` keep-alive connections of requests until `ms` passed. */
async function load(gw: GatewayUnderTest, path: string, ms: number, conns: number) {
  const pool = new Pool(gw.proxyUrl, { connections: conns, pipelining: 1 });
  const until = Date.now() + ms;
  let requests = 0;
  let slowest = 0;
  const statuses = new Map<number, number>();
  try {
    await Promise.all(
      Array.from({ length: conns }, async () => {
        while (Date.now() < until) {
          const t0 = performance.now();
          const res = await pool.request({ path, method: 'GET', headers: { 'x-note': 'x'.repeat(200) } });
          await res.body.arrayBuffer();
          slowest = Math.max(slowest, performance.now() - t0);
          statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1);
          requests++;
        }
      }),
    );
  } finally {
    await pool.close();
  }
  return { requests, slowest, statuses };
}

/**
 * What the gateway logged of its drops: entries refused because the backlog was full (reported at most once a second
 * with the count since the last report and the running total) and batches dropped after their last retry.
 */
function dropsLogged(gw: GatewayUnderTest): { fullReports: number; full: number; fullTotal: number; failed: number } {
  let fullReports = 0;
  let full = 0;
  let fullTotal = 0;
  let failed = 0;
  for (const line of gw.proc.stderr().split('\n')) {
    if (line.includes('log entries dropped, the backlog of')) {
      fullReports++;
      full += Number(/"dropped":(\d+)/.exec(line)?.[1] ?? 0);
      fullTotal = Math.max(fullTotal, Number(/"dropped_total":(\d+)/.exec(line)?.[1] ?? 0));
    }
    const batch = /batch of (\d+) log entries dropped/.exec(line);
    if (batch) failed += Number(batch[1]);
  }
  return { fullReports, full, fullTotal, failed };
}

// Both ways at once, each with its own gateway: the suite spends 30 s on this, not 60.
describe(`http-logger whose endpoint is down for ${DOWN_MS / 1000} s under load`, { concurrency: true }, () => {
  for (const mode of ['refuses connections', 'accepts and never answers'] as const) {
    describe(`http-logger whose endpoint ${mode} for ${DOWN_MS / 1000} s under load`, () => {
      let gw: GatewayUnderTest;
      const sockets = new Set<Socket>();
      const hang = createServer((s) => {
        sockets.add(s);
        s.on('error', () => {});
        s.on('close', () => sockets.delete(s));
        s.resume();
      });
      before(async () => {
        let uri: string;
        if (mode === 'refuses connections') uri = `http://127.0.0.1:${await refusedPort()}/log`;
        else {
          await new Promise<void>((r) => hang.listen(0, '127.0.0.1', r));
          uri = `http://127.0.0.1:${(hang.address() as { port: number }).port}/log`;
        }
        gw = await startGateway({ env: { LOG_LEVEL: 'warn', ...INSPECTABLE } });
        const md = await gw.admin('PUT', '/plugin_metadata/http-logger', { max_pending_entries: MAX_PENDING });
        assert.ok(md.status < 300, `plugin_metadata: ${md.status}`);
        await gw.putRoute('down', {
          uri: '/down',
          plugins: {
            // Small batches, sent often, each waiting the whole 1 s timeout when the endpoint hangs; two retries.
            'http-logger': {
              uri,
              batch_max_size: 50,
              inactive_timeout: 1,
              timeout: 1,
              max_retry_count: 2,
              retry_delay: 1,
            },
          },
          upstream: { type: 'roundrobin', nodes: { [new URL(fns.urls.echo).host]: 1 } },
        });
      });
      after(async () => {
        await gw?.stop();
        for (const s of sockets) s.destroy();
        hang.close();
      });

      test('memory bounded, drops counted and logged, answers not delayed', async () => {
        const mem = await inspectMemory(gw);
        try {
          // Warm-up, then the heap after full GCs at the start and at the end of the time the endpoint is down.
          const warm = await load(gw, '/down', 3000, 16);
          const m0 = await mem.measure();
          const r = await load(gw, '/down', DOWN_MS, 16);
          const m1 = await mem.measure();
          const d = dropsLogged(gw);
          const perSecond = r.requests / (DOWN_MS / 1000);
          const summary =
            `${r.requests} requests in ${DOWN_MS / 1000} s, statuses ${JSON.stringify([...r.statuses])}, slowest ${r.slowest.toFixed(0)} ms; ` +
            `heap after GC ${mib(m0.heapUsed)} → ${mib(m1.heapUsed)} MiB, RSS ${mib(m0.rss)} → ${mib(m1.rss)} MiB; dropped and logged: ` +
            `${d.full} for a full backlog (${d.fullReports} reports, total ${d.fullTotal}), ${d.failed} after their last retry`;
          console.log(`# ${mode}: ${summary}`);
          assert.deepEqual([...r.statuses.keys()], [200], summary);
          // Unbounded, every entry (~1 KB with the 200-byte header) of tens of thousands of requests would stay on the
          // heap: tens of MB. Bounded by max_pending_entries (2,000 entries, ~2 MB), the heap stays where it was.
          assert.ok(r.requests > 5 * MAX_PENDING, `too few requests to fill the backlog: ${summary}`);
          assert.ok(
            m1.heapUsed - m0.heapUsed < 8 * 1048576,
            `the heap grew by ${mib(m1.heapUsed - m0.heapUsed)} MiB: ${summary}`,
          );
          // Nothing silently lost: every entry is held (at most MAX_PENDING), or was dropped and logged; the drops of
          // the last second may not be reported yet.
          assert.equal(d.full, d.fullTotal, `the reports add up to the running total: ${summary}`);
          const all = warm.requests + r.requests;
          assert.ok(
            d.full + d.failed >= all - MAX_PENDING - 1.5 * perSecond,
            `dropped ${d.full + d.failed} of ${all}: ${summary}`,
          );
          assert.ok(d.full + d.failed <= all, summary);
          // A log endpoint that is down never delays a client's answer by its timeout (1 s).
          assert.ok(r.slowest < 900, summary);
        } finally {
          await mem.close();
        }
      });
    });
  }
});

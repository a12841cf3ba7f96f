/**
 * etcd propagation benchmark: how long after an Admin API write on gateway A does gateway B (another process on
 * the same etcd) serve the new route, and A itself (read-your-writes)?
 *
 * Starts a throw-away etcd on loopback, the `function-sample` function, and two Node gateways (the built
 * `dist/`: run `npm run build` first). Then ROUNDS times: PUT route `bench` through A with a new function path, and
 * poll A's and B's proxies (every ~1 ms, from the PUT's start, bounded by 5 s) until they answer with the new body.
 * Prints p50/p90/p99/max in ms, from the PUT's start and from its response. Figures only, no assertions.
 *
 * Run with `npx tsx bench/etcd-propagation.bench.ts` (ROUNDS=n to change the number of writes).
 */
import { type GatewayUnderTest, startGateway } from '../test/conformance/harness.ts';
import { type FunctionServer, startFunction } from '../test/functions/functions.ts';
import { type EtcdServer, startEtcd } from '../test/helpers/etcd.ts';

const ROUNDS = Number(process.env.ROUNDS ?? 200);
const WARMUP = 10;
const POLL_MS = 1;
const ROUND_LIMIT_MS = 5000;
const TOTAL_LIMIT_MS = 180_000;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
/** Round trip of every poll (the resolution of the figures). */
const pollTimes: number[] = [];

interface Round {
  /** PUT start -> Admin API response. */
  put: number;
  /** PUT start -> first correct answer; undefined when none within the limit. */
  a?: number;
  b?: number;
  /** A answered the old body in a request sent after the PUT's response (a read-your-writes miss). */
  aStaleAfterAck: boolean;
}

/** Poll `gw` until `/bench` answers `want`; returns performance.now() of that answer's arrival. */
async function firstCorrect(
  gw: GatewayUnderTest,
  want: string,
  deadline: number,
  ackedAt: () => number | undefined,
  onStaleAfterAck: () => void,
): Promise<number | undefined> {
  while (performance.now() < deadline) {
    const sent = performance.now();
    try {
      const res = await gw.fetch('/bench');
      const text = await res.text();
      const now = performance.now();
      pollTimes.push(now - sent);
      if (res.status === 200 && text === want) return now;
      const ack = ackedAt();
      if (ack !== undefined && sent >= ack) onStaleAfterAck();
    } catch {
      // a refused or reset connection counts as "not yet"
    }
    await sleep(POLL_MS);
  }
  return undefined;
}

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

function row(label: string, values: number[]): string {
  const s = [...values].sort((x, y) => x - y);
  const f = (n: number) => (Number.isNaN(n) ? '-' : n.toFixed(1)).padStart(8);
  return `${label.padEnd(38)}${f(pct(s, 50))}${f(pct(s, 90))}${f(pct(s, 99))}${f(s[s.length - 1] ?? Number.NaN)}${String(s.length).padStart(6)}`;
}

let etcd: EtcdServer | undefined;
let fn: FunctionServer | undefined;
const gateways: GatewayUnderTest[] = [];
try {
  etcd = await startEtcd();
  fn = await startFunction('function-sample');
  const env = { ETCD_HOST: etcd.endpoint, LOG_LEVEL: 'warn' };
  const [A, B] = await Promise.all([startGateway({ env }), startGateway({ env })]);
  gateways.push(A, B);

  const rounds: Round[] = [];
  const started = performance.now();
  for (let i = 0; i < WARMUP + ROUNDS && performance.now() - started < TOTAL_LIMIT_MS; i++) {
    const name = `v${i}`;
    const want = `Hello, ${name}!`;
    const t0 = performance.now();
    const deadline = t0 + ROUND_LIMIT_MS;
    let acked: number | undefined;
    let staleA = false;
    const aP = firstCorrect(
      A,
      want,
      deadline,
      () => acked,
      () => {
        staleA = true;
      },
    );
    const bP = firstCorrect(
      B,
      want,
      deadline,
      () => undefined,
      () => {},
    );
    const res = await A.admin('PUT', '/routes/bench', {
      uri: '/bench',
      plugins: { openfunction: { function_uri: `${fn.url}/${name}` } },
    });
    acked = performance.now();
    if (res.status !== 200 && res.status !== 201) throw new Error(`PUT answered ${res.status}: ${res.text}`);
    const [a, b] = await Promise.all([aP, bP]);
    if (i < WARMUP) continue;
    rounds.push({
      put: acked - t0,
      a: a === undefined ? undefined : a - t0,
      b: b === undefined ? undefined : b - t0,
      aStaleAfterAck: staleA,
    });
    await sleep(5);
  }

  const got = (k: 'a' | 'b') => rounds.filter((r) => r[k] !== undefined);
  const fromStart = (k: 'a' | 'b') => got(k).map((r) => r[k]!);
  const fromAck = (k: 'a' | 'b') => got(k).map((r) => r[k]! - r.put);
  console.log(
    `etcd propagation: ${rounds.length} PUTs through gateway A's Admin API; proxies polled every ~${POLL_MS} ms (etcd ${etcd.endpoint})`,
  );
  console.log(
    `${'ms'.padEnd(38)}${'p50'.padStart(8)}${'p90'.padStart(8)}${'p99'.padStart(8)}${'max'.padStart(8)}${'n'.padStart(6)}`,
  );
  console.log(row('one poll (proxy -> function -> back)', pollTimes));
  console.log(
    row(
      'PUT through A: response time',
      rounds.map((r) => r.put),
    ),
  );
  console.log(row('B serves it, from the PUT start', fromStart('b')));
  console.log(row('B serves it, from the PUT response', fromAck('b')));
  console.log(row('A serves it, from the PUT start', fromStart('a')));
  console.log(row('A serves it, from the PUT response', fromAck('a')));
  const bEarly = fromAck('b').filter((ms) => ms < 0).length;
  console.log(
    `B served the new route before A's Admin API answered in ${bEarly} of ${got('b').length} rounds (negative "from the PUT response")`,
  );
  console.log(
    `missed within ${ROUND_LIMIT_MS} ms: A ${rounds.length - got('a').length}, B ${rounds.length - got('b').length}; ` +
      `A answered the old route to a request sent after the PUT's response in ${rounds.filter((r) => r.aStaleAfterAck).length} rounds`,
  );
} finally {
  await Promise.all(gateways.map((gw) => gw.stop()));
  await fn?.close();
  await etcd?.stop();
}

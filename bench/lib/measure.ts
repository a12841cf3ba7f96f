/**
 * One measured run against one target: check the answer byte for byte, warm up, then wrk at c=N for the
 * duration while the target's process tree is accounted (CPU time, peak RSS) and the cores' busy % recorded,
 * then (optionally) wrk at c=1 for the unloaded latency.
 */
import { type TreeSample, busyPercent, coreTimes, cpuOf, sampleTree } from './sys.ts';
import { runWrk, type WrkResult } from './wrk.ts';

export interface MeasureOptions {
  wrk: string;
  taskset: string;
  /** Core of wrk (and the upstream). */
  loadCore: number;
  script: string;
  connections: number;
  warmupS: number;
  durationS: number;
  /** Seconds of c=1 after the main run; 0 = skip. */
  c1S: number;
}

export interface RunResult {
  variant: string;
  round: number;
  /** Position in the round (`start`/`end` for the references measured twice). */
  slot?: string;
  rps: number;
  p50Us: number;
  p99Us: number;
  p999Us: number;
  maxUs: number;
  errors: number;
  non2xx: number;
  requests: number;
  /** CPU µs per request of the target's process tree during the measured window. */
  cpuUsPerReq: number;
  /** Share of one core the target used during the window (%). */
  cpuPct: number;
  /** Sum of VmHWM over the target's process tree at the end of the window, MiB. */
  peakRssMiB: number;
  /** VmRSS sum at the end of the window, MiB. */
  rssMiB: number;
  /** Busy % of each core during the window. */
  coresBusy: number[];
  c1?: { p50Us: number; p99Us: number; rps: number };
  wrk: WrkResult;
}

/** GET `url`, expect 200 and exactly `body`. Throws with what came instead. */
export async function checkAnswer(url: string, body: string): Promise<void> {
  const res = await fetch(url);
  const text = await res.text();
  if (res.status !== 200 || text !== body) {
    throw new Error(`${url}: expected 200 with the upstream's ${body.length}-byte body, got ${res.status}: ${text.slice(0, 200)}`);
  }
}

export async function measure(
  variant: string,
  round: number,
  url: string,
  pid: number,
  expected: string,
  o: MeasureOptions,
  slot?: string,
): Promise<RunResult> {
  await checkAnswer(url, expected);
  const base = { wrk: o.wrk, taskset: o.taskset, core: o.loadCore, script: o.script, url };
  if (o.warmupS > 0) await runWrk({ ...base, connections: o.connections, seconds: o.warmupS });
  const before: TreeSample = sampleTree(pid);
  const cores0 = coreTimes();
  const w = await runWrk({ ...base, connections: o.connections, seconds: o.durationS });
  const cpuS = cpuOf(before.pids) - before.cpuS;
  const cores1 = coreTimes();
  const after = sampleTree(pid);
  let c1: RunResult['c1'];
  if (o.c1S > 0) {
    const r = await runWrk({ ...base, connections: 1, seconds: o.c1S });
    c1 = { p50Us: r.p50, p99Us: r.p99, rps: r.rps };
  }
  await checkAnswer(url, expected);
  const windowS = w.duration_us / 1e6;
  return {
    variant,
    round,
    slot,
    rps: w.rps,
    p50Us: w.p50,
    p99Us: w.p99,
    p999Us: w.p999,
    maxUs: w.max,
    errors: w.connect + w.read + w.write + w.timeout,
    non2xx: w.status,
    requests: w.requests,
    cpuUsPerReq: w.requests > 0 ? (cpuS * 1e6) / w.requests : Number.NaN,
    cpuPct: Math.round((cpuS / windowS) * 100),
    peakRssMiB: after.hwmMiB,
    rssMiB: after.rssMiB,
    coresBusy: busyPercent(cores0, cores1),
    c1,
    wrk: w,
  };
}

/**
 * The main matrix: direct, nginx reverse proxy and each gateway, c=50, 1 KiB answers, interleaved rounds.
 * Each round measures the references (direct, nginx) at its start and at its end, the gateways in between, and
 * reverses the gateways' order on the next round. Ratios are per round against that round's references (mean of
 * start and end); the summary shows the median over rounds with [min–max].
 */
import type { LaunchContext, Target } from './gateways.ts';
import { LAUNCHERS } from './gateways.ts';
import { type MeasureOptions, measure, type RunResult } from './measure.ts';
import type { Nginx } from './nginx.ts';
import { fixed, int, markdownTable, median, ratio, rate, type Spread, spread } from './stats.ts';
import { loadAverage } from './sys.ts';

export interface MatrixOptions extends MeasureOptions {
  rounds: number;
  variants: string[];
  path: string;
  expected: string;
  upstream: Nginx;
  proxy: Nginx;
  launch: LaunchContext;
  /** Extra gateway variants: name -> how to start it. */
  extraLaunchers?: Record<string, (ctx: LaunchContext) => Promise<Target>>;
  log: (s: string) => void;
}

export interface VariantSummary {
  variant: string;
  rps: Spread;
  vsDirect: Spread;
  vsNginx: Spread;
  p50Ms: number;
  p99Ms: number;
  p99VsNginx: Spread;
  c1P50Us: number;
  cpuUsPerReq: Spread;
  cpuVsNginx: Spread;
  cpuPct: number;
  peakRssMiB: number;
  errors: number;
  non2xx: number;
}

export async function runMatrix(o: MatrixOptions): Promise<{ runs: RunResult[]; summary: VariantSummary[]; failures: string[] }> {
  const runs: RunResult[] = [];
  const failures: string[] = [];
  const gateways = o.variants.filter((v) => v !== 'direct' && v !== 'nginx');
  const launchers = { ...LAUNCHERS, ...o.extraLaunchers };
  const one = async (variant: string, round: number, slot?: string) => {
    const label = `round ${round + 1}/${o.rounds} ${variant}${slot ? ` (${slot})` : ''}`;
    try {
      let r: RunResult;
      if (variant === 'direct') r = await measure(variant, round, o.upstream.url + o.path, o.upstream.proc.pid, o.expected, o, slot);
      else if (variant === 'nginx') r = await measure(variant, round, o.proxy.url + o.path, o.proxy.proc.pid, o.expected, o, slot);
      else {
        const launcher = launchers[variant];
        if (!launcher) throw new Error(`unknown variant ${variant}`);
        const t = await launcher(o.launch);
        try {
          r = await measure(variant, round, t.url + o.path, t.pid, o.expected, o, slot);
        } finally {
          await t.stop();
        }
      }
      runs.push(r);
      o.log(
        `${label}: ${int(r.rps)} req/s, p50 ${fixed(r.p50Us / 1000)} ms, p99 ${fixed(r.p99Us / 1000)} ms, ` +
          `${fixed(r.cpuUsPerReq, 1)} µs CPU/req (${r.cpuPct}% of a core), peak RSS ${fixed(r.peakRssMiB, 0)} MiB` +
          `${r.c1 ? `, c=1 p50 ${int(r.c1.p50Us)} µs` : ''}${r.errors || r.non2xx ? `, ERRORS ${r.errors} socket / ${r.non2xx} non-2xx` : ''}` +
          ` [cores ${r.coresBusy.join('/')}%, load ${loadAverage().join(' ')}]`,
      );
    } catch (err) {
      const msg = `${label}: FAILED: ${err instanceof Error ? err.message : String(err)}`;
      failures.push(msg);
      o.log(msg);
    }
  };
  const refs = o.variants.filter((v) => v === 'direct' || v === 'nginx');
  for (let round = 0; round < o.rounds; round++) {
    const order = round % 2 === 0 ? gateways : [...gateways].reverse();
    for (const ref of refs) await one(ref, round, 'start');
    for (const g of order) await one(g, round);
    for (const ref of [...refs].reverse()) await one(ref, round, 'end');
  }
  return { runs, summary: summarize(runs, o.variants), failures };
}

function summarize(runs: RunResult[], variants: string[]): VariantSummary[] {
  const rounds = [...new Set(runs.map((r) => r.round))];
  const refOf = (variant: string, round: number, f: (r: RunResult) => number) => {
    const xs = runs.filter((r) => r.variant === variant && r.round === round).map(f);
    return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : Number.NaN;
  };
  const out: VariantSummary[] = [];
  for (const variant of variants) {
    const mine = runs.filter((r) => r.variant === variant);
    if (mine.length === 0) continue;
    const per = (f: (r: RunResult, round: number) => number) =>
      spread(
        rounds.map((round) => {
          const xs = mine.filter((r) => r.round === round).map((r) => f(r, round));
          return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : Number.NaN;
        }),
      );
    out.push({
      variant,
      rps: per((r) => r.rps),
      vsDirect: per((r, round) => r.rps / refOf('direct', round, (x) => x.rps)),
      vsNginx: per((r, round) => r.rps / refOf('nginx', round, (x) => x.rps)),
      p50Ms: median(mine.map((r) => r.p50Us / 1000)),
      p99Ms: median(mine.map((r) => r.p99Us / 1000)),
      p99VsNginx: per((r, round) => r.p99Us / refOf('nginx', round, (x) => x.p99Us)),
      c1P50Us: median(mine.map((r) => r.c1?.p50Us ?? Number.NaN)),
      cpuUsPerReq: per((r) => r.cpuUsPerReq),
      cpuVsNginx: per((r, round) => r.cpuUsPerReq / refOf('nginx', round, (x) => x.cpuUsPerReq)),
      cpuPct: median(mine.map((r) => r.cpuPct)),
      peakRssMiB: Math.max(...mine.map((r) => r.peakRssMiB)),
      errors: mine.reduce((a, r) => a + r.errors, 0),
      non2xx: mine.reduce((a, r) => a + r.non2xx, 0),
    });
  }
  return out;
}

const LABELS: Record<string, string> = {
  direct: 'direct to the upstream (no proxy)',
  nginx: 'nginx reverse proxy (reference)',
  node: 'fngate on Node',
  bun: 'fngate on Bun',
  deno: 'fngate on Deno',
  workerd: 'fngate on workerd (bare `workerd serve`)',
  fastify: 'fastify + @fastify/reply-from (Node)',
  floor: 'node:http + undici Pool.stream (Node floor, not a gateway)',
  'bun-floor': 'Bun.serve + fetch, Response as it is (Bun floor, not a gateway)',
  'deno-floor': 'Deno.serve + fetch, Response as it is (Deno floor, not a gateway)',
  'workerd-floor': 'Worker fetch, Response as it is, bare `workerd serve` (workerd floor, not a gateway)',
};

export function matrixTable(summary: VariantSummary[]): string {
  const head = [
    'variant',
    'req/s',
    '÷ direct',
    '÷ nginx',
    'p50 / p99 ms',
    'p99 ÷ nginx',
    'c=1 p50 µs',
    'CPU µs/req',
    'CPU ÷ nginx',
    'core %',
    'peak RSS MiB',
    'errors',
  ];
  const rows = summary.map((s) => [
    LABELS[s.variant] ?? s.variant,
    rate(s.rps),
    ratio(s.vsDirect),
    ratio(s.vsNginx),
    `${fixed(s.p50Ms)} / ${fixed(s.p99Ms)}`,
    s.variant === 'nginx' ? '1.00' : ratio(s.p99VsNginx, 1),
    int(s.c1P50Us),
    fixed(s.cpuUsPerReq.median, 1),
    s.variant === 'nginx' ? '1.00' : ratio(s.cpuVsNginx, 1),
    int(s.cpuPct),
    int(s.peakRssMiB),
    s.errors || s.non2xx ? `${s.errors} / ${s.non2xx} non-2xx` : '0',
  ]);
  return markdownTable(head, rows);
}

/** The issue's goals, checked against the summary (median of the per-round ratios). */
export const GOALS: Record<string, { vsNginx: number; cpuVsNginx: number; rssMiB?: number }> = {
  node: { vsNginx: 0.5, cpuVsNginx: 2.5, rssMiB: 100 },
  bun: { vsNginx: 0.7, cpuVsNginx: 1.8, rssMiB: 60 },
  deno: { vsNginx: 0.35, cpuVsNginx: 3.5 },
  workerd: { vsNginx: 0.25, cpuVsNginx: 5 },
};

/** Each runtime's floor variant (`--floor`): the least a proxy does on that runtime (bench/lib/gateways.ts). */
export const FLOOR_OF: Record<string, string> = {
  node: 'floor',
  bun: 'bun-floor',
  deno: 'deno-floor',
  workerd: 'workerd-floor',
};

export interface GoalCheck {
  variant: string;
  goal: string;
  measured: string;
  met: boolean;
  /**
   * The same figure for the runtime's own floor when it ran (`--floor`), and whether the floor meets the goal:
   * a goal the floor misses cannot be met by a gateway on that runtime.
   */
  floor?: { measured: string; met: boolean };
}

export function checkGoals(summary: VariantSummary[]): GoalCheck[] {
  const out: GoalCheck[] = [];
  const by = new Map(summary.map((s) => [s.variant, s]));
  for (const [variant, g] of Object.entries(GOALS)) {
    const s = by.get(variant);
    if (!s) continue;
    const f = by.get(FLOOR_OF[variant] ?? '');
    const check = (goal: string, measure: (x: VariantSummary) => string, meets: (x: VariantSummary) => boolean) =>
      out.push({
        variant,
        goal,
        measured: measure(s),
        met: meets(s),
        floor: f ? { measured: measure(f), met: meets(f) } : undefined,
      });
    check(`req/s ≥ ${g.vsNginx}× nginx`, (x) => ratio(x.vsNginx), (x) => x.vsNginx.median >= g.vsNginx);
    check(`CPU/req ≤ ${g.cpuVsNginx}× nginx`, (x) => ratio(x.cpuVsNginx, 2), (x) => x.cpuVsNginx.median <= g.cpuVsNginx);
    check('p99 ≤ 3× nginx p99', (x) => ratio(x.p99VsNginx, 2), (x) => x.p99VsNginx.median <= 3);
    const rss = g.rssMiB;
    if (rss !== undefined) {
      check(`peak RSS ≤ ${rss} MB`, (x) => `${fixed(x.peakRssMiB, 0)} MiB`, (x) => x.peakRssMiB * 1.048576 <= rss);
    }
  }
  const node = by.get('node');
  const fastify = by.get('fastify');
  if (node && fastify) {
    out.push({
      variant: 'node',
      goal: 'ahead of fastify + reply-from (same run)',
      measured: `${int(node.rps.median)} vs ${int(fastify.rps.median)} req/s; ${fixed(node.cpuUsPerReq.median, 1)} vs ${fixed(fastify.cpuUsPerReq.median, 1)} µs CPU/req`,
      met: node.rps.median > fastify.rps.median && node.cpuUsPerReq.median < fastify.cpuUsPerReq.median,
    });
  }
  return out;
}

export function goalsTable(goals: GoalCheck[]): string {
  const withFloor = goals.some((g) => g.floor);
  const head = ['runtime', 'goal', 'measured (median [min–max] over rounds)', 'met'];
  if (withFloor) head.push("the runtime's floor, same run (`--floor`)");
  return markdownTable(
    head,
    goals.map((g) => {
      const row = [g.variant, g.goal, g.measured, g.met ? 'yes' : '**no**'];
      if (withFloor) row.push(g.floor ? `${g.floor.measured}${g.floor.met ? '' : ' (**the floor misses it too**)'}` : '');
      return row;
    }),
  );
}

/**
 * One line per runtime whose floor ran: fngate's CPU/req and req/s next to the floor's, both also ÷ nginx (medians),
 * and fngate ÷ floor in CPU per request round by round (the two windows run one after the other in each round, see
 * bench/run.ts), median [min–max]: the issue's ratio, with the host's drift between rounds left out.
 */
export function floorLines(summary: VariantSummary[], runs: readonly RunResult[] = []): string[] {
  const by = new Map(summary.map((s) => [s.variant, s]));
  const fig = (x: VariantSummary) =>
    `${fixed(x.cpuUsPerReq.median, 1)} µs CPU/req (${fixed(x.cpuVsNginx.median)}× nginx), ${int(x.rps.median)} req/s (${fixed(x.vsNginx.median)}× nginx)`;
  const cpu = (variant: string, round: number) => runs.find((r) => r.variant === variant && r.round === round)?.cpuUsPerReq;
  const out: string[] = [];
  for (const [runtime, floor] of Object.entries(FLOOR_OF)) {
    const f = by.get(floor);
    if (!f) continue;
    const s = by.get(runtime);
    const ratios: number[] = [];
    for (const round of new Set(runs.map((r) => r.round))) {
      const a = cpu(runtime, round);
      const b = cpu(floor, round);
      if (a !== undefined && b !== undefined && b > 0) ratios.push(a / b);
    }
    const r = spread(ratios);
    const perRound = r.n ? `; fngate ÷ floor, CPU/req per round: ${fixed(r.median)} [${fixed(r.min)}–${fixed(r.max)}] over ${r.n}` : '';
    out.push(`- floor on ${runtime} (${floor}): ${fig(f)}${s ? `; fngate on ${runtime}: ${fig(s)}` : ''}${perRound}`);
  }
  return out;
}

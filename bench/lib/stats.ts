export function median(xs: readonly number[]): number {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return Number.NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
}

export function min(xs: readonly number[]): number {
  return Math.min(...xs.filter((x) => Number.isFinite(x)));
}

export function max(xs: readonly number[]): number {
  return Math.max(...xs.filter((x) => Number.isFinite(x)));
}

export interface Spread {
  median: number;
  min: number;
  max: number;
  n: number;
}

export function spread(xs: readonly number[]): Spread {
  const v = xs.filter((x) => Number.isFinite(x));
  return { median: median(v), min: v.length ? min(v) : Number.NaN, max: v.length ? max(v) : Number.NaN, n: v.length };
}

/** 12345.6 -> "12,346" */
export function int(x: number): string {
  return Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : '–';
}

export function fixed(x: number, digits = 2): string {
  return Number.isFinite(x) ? x.toFixed(digits) : '–';
}

/** "0.52 [0.48–0.55]" (the range only with more than one value). */
export function ratio(s: Spread, digits = 2): string {
  if (!Number.isFinite(s.median)) return '–';
  if (s.n <= 1 || s.min === s.max) return s.median.toFixed(digits);
  return `${s.median.toFixed(digits)} [${s.min.toFixed(digits)}–${s.max.toFixed(digits)}]`;
}

/** "12,345 [11.2k–13.0k]" */
export function rate(s: Spread): string {
  if (!Number.isFinite(s.median)) return '–';
  const k = (x: number) => (x >= 10_000 ? `${(x / 1000).toFixed(1)}k` : int(x));
  if (s.n <= 1) return int(s.median);
  return `${int(s.median)} [${k(s.min)}–${k(s.max)}]`;
}

/** A Markdown table (GitHub style), columns padded for reading in a terminal too. */
export function markdownTable(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(head), `| ${widths.map((w) => '-'.repeat(w)).join(' | ')} |`, ...rows.map(line)].join('\n');
}

/**
 * A small Prometheus registry (text exposition format 0.0.4), runtime-agnostic. Built for the gateway's hot path:
 * a request finds its series through a few Map lookups on values it already has (the route object, the status,
 * the consumer name); label text is built once, when a series is first seen, never per request. Rendering walks
 * the series in slices and yields between them, so 100,000 series do not stall the proxy (see
 * {@link MetricsRegistry.render}).
 */

/** A label value as the exposition format wants it inside `"…"`: backslash, double quote and newline escaped. */
export function escapeLabelValue(value: string): string {
  if (!/[\\"\n]/.test(value)) return value;
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** HELP text escaping (backslash and newline). */
function escapeHelp(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

/** `name="value",…` for a list of label names and values (values escaped). */
export function labelText(names: readonly string[], values: readonly string[]): string {
  let s = '';
  for (let i = 0; i < names.length; i++) {
    if (i) s += ',';
    s += `${names[i]}="${escapeLabelValue(values[i] ?? '')}"`;
  }
  return s;
}

/** A number as Prometheus prints it. */
export function formatValue(n: number): string {
  if (Number.isNaN(n)) return 'NaN';
  if (n === Number.POSITIVE_INFINITY) return '+Inf';
  if (n === Number.NEGATIVE_INFINITY) return '-Inf';
  return String(n);
}

/** One counter or gauge series: its label text (fixed) and value. */
export class Series {
  value = 0;
  constructor(readonly labels: string) {}
}

/** One histogram series: cumulative on render, per bucket while counting. */
export class HistogramSeries {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  constructor(
    readonly labels: string,
    private readonly bounds: readonly number[],
  ) {
    this.counts = new Float64Array(bounds.length);
  }

  observe(v: number): void {
    const b = this.bounds;
    for (let i = 0; i < b.length; i++) {
      if (v <= b[i]!) {
        this.counts[i]!++;
        break;
      }
    }
    this.sum += v;
    this.count++;
  }
}

type Kind = 'counter' | 'gauge' | 'histogram';

/** A metric family: name, help, type, and its series by label text. */
export class Family<S extends Series | HistogramSeries = Series> {
  readonly series = new Map<string, S>();
  constructor(
    readonly name: string,
    readonly help: string,
    readonly kind: Kind,
    private readonly make: (labels: string) => S,
    /** Bucket upper bounds of a histogram, ascending. */
    readonly bounds: readonly number[] = [],
  ) {}

  /** The series with this label text (made on first use). Call once per new label set, not per request. */
  get(labels: string): S {
    let s = this.series.get(labels);
    if (s === undefined) {
      s = this.make(labels);
      this.series.set(labels, s);
    }
    return s;
  }
}

/** A family whose lines are computed when rendered (process metrics, gauges read from elsewhere). */
export interface Collector {
  /** Appends complete exposition lines (HELP, TYPE and samples) to `out`. */
  collect(out: string[]): void;
}

/** How many series are rendered between two yields to the event loop. */
const SLICE = 250;

export class MetricsRegistry {
  private readonly families: (Family<Series> | Family<HistogramSeries>)[] = [];
  private readonly collectors: Collector[] = [];

  counter(name: string, help: string): Family<Series> {
    const f = new Family<Series>(name, help, 'counter', (l) => new Series(l));
    this.families.push(f);
    return f;
  }

  gauge(name: string, help: string): Family<Series> {
    const f = new Family<Series>(name, help, 'gauge', (l) => new Series(l));
    this.families.push(f);
    return f;
  }

  histogram(name: string, help: string, bounds: readonly number[]): Family<HistogramSeries> {
    const sorted = [...bounds].sort((a, b) => a - b);
    const f = new Family<HistogramSeries>(name, help, 'histogram', (l) => new HistogramSeries(l, sorted), sorted);
    this.families.push(f);
    return f;
  }

  addCollector(c: Collector): void {
    this.collectors.push(c);
  }

  /**
   * The exposition text as UTF-8 chunks (one per slice: joining one string of many MB costs more than building
   * it). `yieldEvery` > 0 awaits `pause()` after that many series, so a large registry is rendered in slices between
   * which requests are served.
   */
  async render(pause: () => Promise<void> = macrotask, yieldEvery = SLICE): Promise<Uint8Array[]> {
    const chunks: Uint8Array[] = [];
    let out: string[] = [];
    let done = 0;
    const cut = async () => {
      chunks.push(encoder.encode(out.join('')));
      out = [];
      await pause();
    };
    for (const f of this.families) {
      if (f.series.size === 0) continue;
      out.push(`# HELP ${f.name} ${escapeHelp(f.help)}\n# TYPE ${f.name} ${f.kind}\n`);
      if (f.kind === 'histogram') {
        const les = f.bounds.map((b) => formatValue(b));
        for (const s of f.series.values() as Iterable<HistogramSeries>) {
          const sep = s.labels ? ',' : '';
          const pre = `${f.name}_bucket{${s.labels}${sep}le="`;
          let acc = 0;
          let text = '';
          for (let i = 0; i < les.length; i++) {
            acc += s.counts[i]!;
            text += `${pre}${les[i]}"} ${acc}\n`;
          }
          text += `${pre}+Inf"} ${s.count}\n`;
          const l = s.labels ? `{${s.labels}}` : '';
          text += `${f.name}_sum${l} ${formatValue(s.sum)}\n${f.name}_count${l} ${s.count}\n`;
          out.push(text);
          if (yieldEvery > 0 && ++done % yieldEvery === 0) await cut();
        }
      } else {
        for (const s of f.series.values() as Iterable<Series>) {
          out.push(s.labels ? `${f.name}{${s.labels}} ${formatValue(s.value)}\n` : `${f.name} ${formatValue(s.value)}\n`);
          if (yieldEvery > 0 && ++done % yieldEvery === 0) await cut();
        }
      }
    }
    for (const c of this.collectors) c.collect(out);
    chunks.push(encoder.encode(out.join('')));
    return chunks;
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The chunks of {@link MetricsRegistry.render} as one string (tests, small registries). */
export function chunksText(chunks: readonly Uint8Array[]): string {
  let s = '';
  for (const c of chunks) s += decoder.decode(c);
  return s;
}

/** Yield to the event loop (a timer turn, so I/O callbacks run in between). */
export function macrotask(): Promise<void> {
  return new Promise((r) => setTimeout(r, 0));
}

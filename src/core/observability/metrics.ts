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
  /** The label text as UTF-8, made by the first render. */
  bytes: Uint8Array | undefined = undefined;
  constructor(readonly labels: string) {}
}

/** One histogram series: cumulative on render, per bucket while counting. */
export class HistogramSeries {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  /** The label text as UTF-8, made by the first render. */
  bytes: Uint8Array | undefined = undefined;
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
   * The exposition text as UTF-8 chunks of about {@link CHUNK} bytes. It is written as bytes, not built as strings
   * and then encoded: each series' label text is encoded once, on its first render, and every sample line is a few
   * copies of those bytes and of the family's constant parts, and the value's digits (10,000 routes: ~480,000 lines,
   * ~80 MB). `yieldEvery` > 0 awaits `pause()` after that many series, so a large registry is rendered in slices
   * between which requests are served. `spare`: buffers of {@link RENDER_CHUNK} bytes from an earlier render that
   * nobody reads any more, written over instead of allocating new ones (tens of MB of fresh external memory per
   * render make V8 run full collections, tens of ms each, in the middle of the slices).
   */
  async render(pause: () => Promise<void> = macrotask, yieldEvery = SLICE, spare?: Uint8Array[]): Promise<Uint8Array[]> {
    const w = new ByteWriter(spare);
    let done = 0;
    for (const f of this.families) {
      if (f.series.size === 0) continue;
      w.text(`# HELP ${f.name} ${escapeHelp(f.help)}\n# TYPE ${f.name} ${f.kind}\n`);
      if (f.kind === 'histogram') {
        const bucket = encoder.encode(`${f.name}_bucket{`);
        const sum = encoder.encode(`${f.name}_sum`);
        const count = encoder.encode(`${f.name}_count`);
        const les = [...f.bounds.map((b) => formatValue(b)), '+Inf'].map((le) => encoder.encode(`le="${le}"} `));
        const n = f.bounds.length;
        for (const s of f.series.values() as Iterable<HistogramSeries>) {
          const labels = labelBytes(s);
          const sep = labels.length > 0;
          let acc = 0;
          for (let i = 0; i <= n; i++) {
            acc = i < n ? acc + s.counts[i]! : s.count;
            w.bytes(bucket);
            if (sep) {
              w.bytes(labels);
              w.byte(COMMA);
            }
            w.bytes(les[i]!);
            w.number(acc);
            w.byte(NEWLINE);
          }
          w.bytes(sum);
          w.labels(labels);
          w.number(s.sum);
          w.byte(NEWLINE);
          w.bytes(count);
          w.labels(labels);
          w.number(s.count);
          w.byte(NEWLINE);
          if (yieldEvery > 0 && ++done % yieldEvery === 0) await pause();
        }
      } else {
        const name = encoder.encode(f.name);
        for (const s of f.series.values() as Iterable<Series>) {
          w.bytes(name);
          w.labels(labelBytes(s));
          w.number(s.value);
          w.byte(NEWLINE);
          if (yieldEvery > 0 && ++done % yieldEvery === 0) await pause();
        }
      }
    }
    const out: string[] = [];
    for (const c of this.collectors) c.collect(out);
    w.text(out.join(''));
    return w.finish();
  }
}

/** A series' label text as UTF-8, encoded on its first render and kept. */
function labelBytes(s: Series | HistogramSeries): Uint8Array {
  if (s.bytes === undefined) s.bytes = encoder.encode(s.labels);
  return s.bytes;
}

/** Bytes per chunk of a render. */
export const RENDER_CHUNK = 256 * 1024;
const CHUNK = RENDER_CHUNK;
const COMMA = 0x2c;
const NEWLINE = 0x0a;
const SPACE = 0x20;

/** Appends bytes to fixed-size chunks. */
class ByteWriter {
  private readonly chunks: Uint8Array[] = [];
  private buf: Uint8Array;
  private pos = 0;

  constructor(private readonly spare: Uint8Array[] = []) {
    this.buf = spare.pop() ?? new Uint8Array(CHUNK);
  }

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    if (this.pos > 0) this.chunks.push(this.buf.subarray(0, this.pos));
    this.buf = (n <= CHUNK && this.spare.pop()) || new Uint8Array(Math.max(CHUNK, n));
    this.pos = 0;
  }

  byte(b: number): void {
    this.room(1);
    this.buf[this.pos++] = b;
  }

  bytes(b: Uint8Array): void {
    const n = b.length;
    this.room(n);
    const buf = this.buf;
    let p = this.pos;
    // Short label parts: a loop beats a call into set() for a few dozen bytes.
    if (n < 48) for (let i = 0; i < n; i++) buf[p++] = b[i]!;
    else {
      buf.set(b, p);
      p += n;
    }
    this.pos = p;
  }

  /** `{labels} ` or, without labels, ` `. */
  labels(b: Uint8Array): void {
    if (b.length > 0) {
      this.byte(0x7b);
      this.bytes(b);
      this.byte(0x7d);
    }
    this.byte(SPACE);
  }

  text(s: string): void {
    this.bytes(encoder.encode(s));
  }

  /** A sample value as Prometheus prints it; whole numbers digit by digit. */
  number(v: number): void {
    if (!Number.isSafeInteger(v) || v < 0) {
      // ASCII (digits, '.', 'e', '-', '+Inf', 'NaN'): written as is, without a TextEncoder allocation per value.
      const t = formatValue(v);
      this.room(t.length);
      for (let i = 0; i < t.length; i++) this.buf[this.pos++] = t.charCodeAt(i);
      return;
    }
    this.room(16);
    const buf = this.buf;
    if (v === 0) {
      buf[this.pos++] = 0x30;
      return;
    }
    let digits = 0;
    for (let x = v; x > 0; x = Math.floor(x / 10)) digits++;
    let p = this.pos + digits;
    this.pos = p;
    for (let x = v; x > 0; x = Math.floor(x / 10)) buf[--p] = 0x30 + (x % 10);
  }

  finish(): Uint8Array[] {
    if (this.pos > 0) this.chunks.push(this.buf.subarray(0, this.pos));
    this.pos = 0;
    return this.chunks;
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

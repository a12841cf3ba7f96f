/**
 * The dashboard's metrics view without a browser: a reader of the Prometheus text exposition format (0.0.4, what
 * the export server on PROMETHEUS_PORT answers) and the per-route summary the view shows: requests, 4xx/5xx, and
 * latency p50/p95 estimated from the `apisix_http_latency{type="request"}` buckets as PromQL's
 * `histogram_quantile` does.
 */

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Settings key of the metrics URL (localStorage: an address, not a secret; kept across sessions). */
export const METRICS_URL_ITEM = 'fngate.metricsUrl';
export const METRICS_PATH = '/apisix/prometheus/metrics';

/** Default metrics URL: this page's host, port 9091 (PROMETHEUS_PORT's default). */
export function defaultMetricsUrl(loc: { protocol: string; hostname: string }): string {
  const host = loc.hostname.includes(':') ? `[${loc.hostname}]` : loc.hostname;
  return `${loc.protocol === 'https:' ? 'https:' : 'http:'}//${host}:9091${METRICS_PATH}`;
}

function parseValue(text: string): number {
  if (text === '+Inf' || text === 'Inf') return Number.POSITIVE_INFINITY;
  if (text === '-Inf') return Number.NEGATIVE_INFINITY;
  if (text === 'NaN') return Number.NaN;
  const n = Number(text);
  if (text === '' || Number.isNaN(n)) throw new Error(`bad value "${text}"`);
  return n;
}

/**
 * The samples of an exposition text. Comments and blank lines are skipped; label values are unescaped (`\\`, `\"`,
 * `\n`). Throws, naming the line, on a line that is not a sample (an answer that is not metrics at all).
 */
export function parseExposition(text: string): Sample[] {
  const out: Sample[] = [];
  const lines = text.split('\n');
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n]!.trim();
    if (line === '' || line.startsWith('#')) continue;
    const fail = (why: string): never => {
      throw new Error(`line ${n + 1}: ${why}`);
    };
    const nameEnd = line.search(/[{\s]/);
    const name = nameEnd < 0 ? line : line.slice(0, nameEnd);
    if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(name)) fail('not a metric sample');
    const labels: Record<string, string> = {};
    let i = nameEnd < 0 ? line.length : nameEnd;
    if (line[i] === '{') {
      i++;
      for (;;) {
        while (line[i] === ' ' || line[i] === ',') i++;
        if (line[i] === '}') {
          i++;
          break;
        }
        const eq = line.indexOf('=', i);
        if (eq < 0 || line[eq + 1] !== '"') fail('bad label');
        const key = line.slice(i, eq).trim();
        let value = '';
        let j = eq + 2;
        for (; j < line.length && line[j] !== '"'; j++) {
          if (line[j] === '\\') {
            const c = line[++j];
            value += c === 'n' ? '\n' : (c ?? '');
          } else value += line[j];
        }
        if (j >= line.length) fail('unterminated label value');
        labels[key] = value;
        i = j + 1;
      }
    }
    const rest = line.slice(i).trim().split(/\s+/);
    let value = 0;
    try {
      value = parseValue(rest[0] ?? '');
    } catch (e) {
      fail((e as Error).message);
    }
    out.push({ name, labels, value });
  }
  return out;
}

export interface RouteStats {
  /** The `route` label: the route's id, or its name with `prefer_name`; '' for requests that matched no route. */
  route: string;
  requests: number;
  status4xx: number;
  status5xx: number;
  /** (4xx + 5xx) / requests; 0 without requests. */
  errorRate: number;
  /** Estimated from the request latency buckets (ms); undefined without observations. */
  p50: number | undefined;
  p95: number | undefined;
}

/**
 * PromQL `histogram_quantile` over cumulative buckets (upper bound → count): linear within the bucket, the first
 * bucket from 0; in the +Inf bucket, the largest finite bound.
 */
export function bucketQuantile(q: number, buckets: ReadonlyMap<number, number>): number | undefined {
  const sorted = [...buckets].sort((a, b) => a[0] - b[0]);
  const total = sorted.at(-1)?.[1] ?? 0;
  if (total <= 0 || sorted.at(-1)![0] !== Number.POSITIVE_INFINITY) return undefined;
  const rank = q * total;
  let prevBound = 0;
  let prevCount = 0;
  for (const [bound, count] of sorted) {
    if (count >= rank) {
      if (bound === Number.POSITIVE_INFINITY) return prevBound;
      if (count === prevCount) return bound;
      return prevBound + ((bound - prevBound) * (rank - prevCount)) / (count - prevCount);
    }
    prevBound = bound;
    prevCount = count;
  }
  return prevBound;
}

/**
 * Per route: requests and 4xx/5xx from `apisix_http_status` (summed over code, consumer, node, ...), p50/p95 from
 * `apisix_http_latency_bucket{type="request"}` (buckets summed over the other labels). Busiest route first.
 */
export function routeStats(samples: readonly Sample[]): RouteStats[] {
  const byRoute = new Map<string, { requests: number; s4: number; s5: number; buckets: Map<number, number> }>();
  const of = (route: string) => {
    let r = byRoute.get(route);
    if (!r) {
      r = { requests: 0, s4: 0, s5: 0, buckets: new Map() };
      byRoute.set(route, r);
    }
    return r;
  };
  for (const s of samples) {
    if (s.name === 'apisix_http_status') {
      const r = of(s.labels.route ?? '');
      r.requests += s.value;
      const code = s.labels.code ?? '';
      if (code.startsWith('4')) r.s4 += s.value;
      else if (code.startsWith('5')) r.s5 += s.value;
    } else if (s.name === 'apisix_http_latency_bucket' && s.labels.type === 'request') {
      const le = s.labels.le === undefined ? Number.NaN : Number(s.labels.le.replace(/^\+?Inf$/, 'Infinity'));
      if (Number.isNaN(le)) continue;
      const b = of(s.labels.route ?? '').buckets;
      b.set(le, (b.get(le) ?? 0) + s.value);
    }
  }
  return [...byRoute]
    .map(([route, r]) => ({
      route,
      requests: r.requests,
      status4xx: r.s4,
      status5xx: r.s5,
      errorRate: r.requests > 0 ? (r.s4 + r.s5) / r.requests : 0,
      p50: bucketQuantile(0.5, r.buckets),
      p95: bucketQuantile(0.95, r.buckets),
    }))
    .sort((a, b) => b.requests - a.requests || a.route.localeCompare(b.route));
}

/**
 * Sum the Prometheus exposition texts of several workers into one (WORKERS > 1: the export server of the primary
 * answers for all of them, as APISIX's one endpoint reports every nginx worker's shared-dict metrics).
 *
 * Counters and histograms (buckets, `_sum`, `_count`) are summed per series (same name and labels). Gauges are
 * summed too (connections, requests, memory), except those that describe the node rather than a worker, which take
 * the largest value: info series, etcd reachability/indexes, the start time, the event-loop lag.
 */
const MAX_GAUGES = new Set([
  'apisix_node_info',
  'apisix_etcd_reachable',
  'apisix_etcd_modify_indexes',
  'process_start_time_seconds',
  'nodejs_eventloop_lag_seconds',
]);

export function mergeExpositions(texts: readonly string[]): string {
  /** family name → header lines, in first-seen order; series key → value */
  const families = new Map<string, { header: string[]; series: Map<string, number> }>();
  const familyOf = new Map<string, string>();
  let current: string | undefined;
  for (const text of texts) {
    for (const line of text.split('\n')) {
      if (line === '') continue;
      if (line.startsWith('#')) {
        const m = /^# (HELP|TYPE) (\S+)/.exec(line);
        if (!m) continue;
        current = m[2]!;
        let f = families.get(current);
        if (!f) {
          f = { header: [], series: new Map() };
          families.set(current, f);
        }
        if (!f.header.includes(line) && f.header.length < 2) f.header.push(line);
        continue;
      }
      const sp = line.lastIndexOf(' ');
      if (sp < 0) continue;
      const key = line.slice(0, sp);
      const value = Number(line.slice(sp + 1));
      const name = key.includes('{') ? key.slice(0, key.indexOf('{')) : key;
      let fam = familyOf.get(name) ?? current ?? name;
      if (!families.has(fam)) {
        families.set(fam, { header: [], series: new Map() });
        fam = name;
      }
      familyOf.set(name, fam);
      const series = families.get(fam)!.series;
      const prev = series.get(key);
      if (prev === undefined) series.set(key, value);
      else series.set(key, MAX_GAUGES.has(fam) ? Math.max(prev, value) : prev + value);
    }
  }
  let out = '';
  for (const f of families.values()) {
    for (const h of f.header) out += `${h}\n`;
    for (const [key, value] of f.series) out += `${key} ${formatNumber(value)}\n`;
  }
  return out;
}

function formatNumber(n: number): string {
  if (Number.isNaN(n)) return 'NaN';
  if (n === Number.POSITIVE_INFINITY) return '+Inf';
  if (n === Number.NEGATIVE_INFINITY) return '-Inf';
  return String(n);
}

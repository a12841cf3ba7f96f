/**
 * APISIX's HTTP metrics (apisix/plugins/prometheus/exporter.lua, label sets of APISIX 3.17/3.18) and the cached
 * `/apisix/prometheus/metrics` endpoint. The prometheus plugin counts into this in its log phase; the runtime
 * entries serve {@link Observability.serveMetrics} on PROMETHEUS_PORT.
 *
 * Hot path: a request's series are found by identity and a few Map lookups: the route's label text is built once
 * per (route object, prefer_name, disabled_labels) and the leaf series once per (status, source, consumer, node).
 */
import type { RequestContext, RouteInfo } from '../context.ts';
import { headersRecord } from '../upstream/headers.ts';
import { FNGATE_VERSION } from '../version.ts';
import { type AdminOrigin, dashboardOrigins, exportCorsHeaders } from './export-cors.ts';
import {
  chunksText,
  type Collector,
  type Family,
  formatValue,
  type HistogramSeries,
  labelText,
  macrotask,
  MetricsRegistry,
  RENDER_CHUNK,
  type Series,
} from './metrics.ts';

/** APISIX's `DEFAULT_BUCKETS` of apisix_http_latency (ms). */
export const LATENCY_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000] as const;

export const STATUS_LABELS = [
  'code', 'route', 'matched_uri', 'matched_host', 'service', 'consumer', 'node',
  'request_type', 'request_llm_model', 'llm_model', 'response_source',
] as const;
export const LATENCY_LABELS = [
  'type', 'route', 'service', 'consumer', 'node', 'request_type', 'request_llm_model', 'llm_model',
] as const;

/** `plugin_metadata/prometheus` `disabled_labels`: label values exported as "" (APISIX 3.18). */
export interface DisabledLabels {
  http_status?: readonly string[];
  http_latency?: readonly string[];
  bandwidth?: readonly string[];
}

/** What a runtime can say about its connections (APISIX: nginx's stub_status states). */
export type ConnectionStates = Partial<Record<'active' | 'accepted' | 'handled' | 'reading' | 'writing' | 'waiting', number>>;

export interface ObservabilityOptions {
  /** Host name for `apisix_node_info` (the runtime's; '' when it has none). */
  hostname?: string;
  /** How long a rendered scrape is served from cache (APISIX `refresh_interval`, 15 s); 0 renders every scrape. */
  refreshIntervalMs?: number;
  /** The runtime's connection counters, for `apisix_nginx_http_current_connections`. */
  connections?: () => ConnectionStates;
  /** Whether the config store (etcd) answers, for `apisix_etcd_reachable`; undefined: not on etcd. */
  etcdReachable?: () => boolean;
  /** Further families computed at render time (process metrics of the runtime). */
  collectors?: readonly Collector[];
  /** The runtime's file appender (file-logger); undefined where there is no file system (Workers). */
  files?: FileAppender;
  /**
   * Where the Admin API (and so the dashboard) is served: the origins the export server answers CORS for. Asked at
   * each scrape (the port is known once the Admin API listens: ADMIN_PORT=0 takes a free one).
   */
  dashboard?: () => AdminOrigin | undefined;
}

/** Appends lines to files (file-logger), in order, without blocking the event loop for long. */
export interface FileAppender {
  /** Append `text` to the file at `path` (opened in append mode, created when missing, kept open). */
  append(path: string, text: string): void;
}

/** One render of the metrics, and how many scrapes are streaming it. */
interface Rendered {
  chunks: Uint8Array[];
  at: number;
  readers: number;
}

/** Background renders go on while a scrape came within this long (or ten refresh intervals, if longer). */
export const KEEP_RENDERING_MS = 5 * 60_000;

const NO_ROUTE: RouteInfo = { id: '', name: '', uri: '', host: '', serviceId: '', serviceName: '' };

/** The series of one response source/consumer/node combination under one route. */
interface LatencySet {
  request: HistogramSeries;
  /** Made on the first answer from upstream (a route that never proxies shows no upstream series, as APISIX). */
  upstream: HistogramSeries | undefined;
  upstreamLabels: string;
  apisix: HistogramSeries;
  ingress: Series;
  egress: Series;
}

/** Per route (and prefer_name, disabled_labels): its label text and its leaf series, found by lookups. */
class RouteSeries {
  /** status code → source index → consumer → node → series. */
  private readonly status = new Map<number, Map<string, Map<string, Series>>[]>();
  private readonly latency = new Map<string, Map<string, LatencySet>>();
  private readonly statusRoute: string[];
  private readonly latRoute: [string, string];
  private readonly bwRoute: [string, string];

  constructor(
    private readonly m: HttpMetrics,
    route: RouteInfo,
    preferName: boolean,
    private readonly dis: DisabledFlags,
  ) {
    const r = preferName && route.name ? route.name : route.id;
    const s = preferName && route.serviceName ? route.serviceName : route.serviceId;
    const d = dis.status;
    this.statusRoute = [d.has('route') ? '' : r, d.has('matched_uri') ? '' : route.uri, d.has('matched_host') ? '' : route.host, d.has('service') ? '' : s];
    this.latRoute = [dis.latency.has('route') ? '' : r, dis.latency.has('service') ? '' : s];
    this.bwRoute = [dis.bandwidth.has('route') ? '' : r, dis.bandwidth.has('service') ? '' : s];
  }

  statusSeries(code: number, source: number, consumer: string, node: string): Series {
    let bySource = this.status.get(code);
    if (bySource === undefined) {
      bySource = [new Map(), new Map(), new Map()];
      this.status.set(code, bySource);
    }
    const d = this.dis.status;
    const c = d.has('consumer') ? '' : consumer;
    const n = d.has('node') ? '' : node;
    let byConsumer = bySource[source]!.get(c);
    if (byConsumer === undefined) {
      byConsumer = new Map();
      bySource[source]!.set(c, byConsumer);
    }
    let s = byConsumer.get(n);
    if (s === undefined) {
      const [route, uri, host, service] = this.statusRoute;
      const values = [String(code), route!, uri!, host!, service!, c, n, 'traditional_http', '', '', SOURCES[source]!];
      s = this.m.status.get(labelText(STATUS_LABELS, values));
      byConsumer.set(n, s);
    }
    return s;
  }

  latencySet(consumer: string, node: string): LatencySet {
    let byNode = this.latency.get(consumer);
    if (byNode === undefined) {
      byNode = new Map();
      this.latency.set(consumer, byNode);
    }
    let set = byNode.get(node);
    if (set === undefined) {
      const dl = this.dis.latency;
      const db = this.dis.bandwidth;
      const lat = (type: string) =>
        labelText(LATENCY_LABELS, [type, this.latRoute[0], this.latRoute[1], dl.has('consumer') ? '' : consumer, dl.has('node') ? '' : node, 'traditional_http', '', '']);
      const bw = (type: string) =>
        labelText(LATENCY_LABELS, [type, this.bwRoute[0], this.bwRoute[1], db.has('consumer') ? '' : consumer, db.has('node') ? '' : node, 'traditional_http', '', '']);
      set = {
        request: this.m.latency.get(lat('request')),
        upstream: undefined,
        upstreamLabels: lat('upstream'),
        apisix: this.m.latency.get(lat('apisix')),
        ingress: this.m.bandwidth.get(bw('ingress')),
        egress: this.m.bandwidth.get(bw('egress')),
      };
      byNode.set(node, set);
    }
    return set;
  }
}

/** `response_source` values, by index. */
const SOURCES = ['apisix', 'upstream', 'nginx'] as const;

interface DisabledFlags {
  status: ReadonlySet<string>;
  latency: ReadonlySet<string>;
  bandwidth: ReadonlySet<string>;
}

const NONE: ReadonlySet<string> = new Set();
const NOTHING_DISABLED: DisabledFlags = { status: NONE, latency: NONE, bandwidth: NONE };

/** The HTTP families of APISIX's exporter and the per-route lookup into them. */
export class HttpMetrics {
  readonly status: Family<Series>;
  readonly latency: Family<HistogramSeries>;
  readonly bandwidth: Family<Series>;
  /** (metadata object or default) → route object → series, for prefer_name false and true. */
  private readonly byMeta = new WeakMap<object, [WeakMap<RouteInfo, RouteSeries>, WeakMap<RouteInfo, RouteSeries>]>();
  private readonly flags = new WeakMap<object, DisabledFlags>();

  constructor(registry: MetricsRegistry) {
    this.status = registry.counter('apisix_http_status', 'HTTP status codes per service in APISIX');
    this.latency = registry.histogram(
      'apisix_http_latency',
      'HTTP request latency in milliseconds per service in APISIX',
      LATENCY_BUCKETS,
    );
    this.bandwidth = registry.counter('apisix_bandwidth', 'Total bandwidth in bytes consumed per service in APISIX');
  }

  /** Count one finished request (the prometheus plugin's log phase). */
  record(ctx: RequestContext, preferName: boolean): void {
    const meta = ctx.metadata.get('prometheus') ?? NOTHING_DISABLED;
    let maps = this.byMeta.get(meta);
    if (maps === undefined) {
      maps = [new WeakMap(), new WeakMap()];
      this.byMeta.set(meta, maps);
    }
    const route = ctx.route ?? NO_ROUTE;
    const map = maps[preferName ? 1 : 0];
    let rs = map.get(route);
    if (rs === undefined) {
      rs = new RouteSeries(this, route, preferName, this.flagsOf(meta));
      map.set(route, rs);
    }
    const consumer = ctx.consumer?.username ?? '';
    const node = ctx.upstreamNode;
    const upstream = ctx.upstreamLatency;
    const source = upstream !== undefined ? 1 : ctx.proxied ? 2 : 0;
    rs.statusSeries(ctx.status, source, consumer, node).value++;
    const set = rs.latencySet(consumer, node);
    const total = performance.now() - ctx.startTime;
    set.request.observe(total);
    if (upstream !== undefined) {
      if (set.upstream === undefined) set.upstream = this.latency.get(set.upstreamLabels);
      set.upstream.observe(upstream);
      set.apisix.observe(total > upstream ? total - upstream : 0);
    } else set.apisix.observe(total);
    set.ingress.value += requestLength(ctx);
    set.egress.value += ctx.bytesSent;
  }

  private flagsOf(meta: object): DisabledFlags {
    if (meta === NOTHING_DISABLED) return NOTHING_DISABLED;
    let f = this.flags.get(meta);
    if (f === undefined) {
      const d = (meta as { disabled_labels?: DisabledLabels }).disabled_labels ?? {};
      f = {
        status: new Set(d.http_status ?? []),
        latency: new Set(d.http_latency ?? []),
        bandwidth: new Set(d.bandwidth ?? []),
      };
      this.flags.set(meta, f);
    }
    return f;
  }
}

/**
 * The request's headers as a record in one call where the runtime offers it ({@link headersRecord}), when the
 * request has no raw header list; else `undefined`.
 */
export function requestHeadersRecord(ctx: RequestContext): Record<string, string | string[]> | undefined {
  return ctx.rawHeaders === undefined ? headersRecord(ctx.request.headers) : undefined;
}

/**
 * nginx `$request_length` as far as the gateway knows it: request line, header lines and the body's declared
 * length (a chunked body counts 0). Header bytes come from the runtime's raw header list when it has one (Node),
 * else from the parsed headers.
 */
export function requestLength(ctx: RequestContext, record = requestHeadersRecord(ctx)): number {
  // "GET /path?query HTTP/1.1\r\n" (two spaces, "HTTP/1.1", CRLF: 12) and the blank line ending the head (2).
  let n = ctx.method.length + ctx.rawPath.length + (ctx.query ? ctx.query.length + 1 : 0) + 14;
  const raw = ctx.rawHeaders;
  let cl: string | null = null;
  if (raw !== undefined) {
    // Not ctx.request.headers: on Node that makes @hono/node-server build a Headers object from the raw list.
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!;
      n += name.length + raw[i + 1]!.length + 4; // ": " and "\r\n"
      if (name.length === 14 && name.toLowerCase() === 'content-length') cl = raw[i + 1]!;
    }
  } else if (record !== undefined) {
    for (const k in record) {
      const v = record[k]!;
      if (typeof v === 'string') n += k.length + v.length + 4;
      else for (const one of v) n += k.length + one.length + 4;
    }
    const declared = record['content-length'];
    if (typeof declared === 'string') cl = declared;
  } else {
    for (const [k, v] of ctx.request.headers) n += k.length + v.length + 4;
    cl = ctx.request.headers.get('content-length');
  }
  if (cl !== null) {
    const len = Number(cl);
    if (Number.isFinite(len)) n += len;
  }
  return n;
}

/** The gateway's metrics: registry, HTTP families, and the cached scrape endpoint. */
export class Observability {
  readonly registry = new MetricsRegistry();
  readonly http: HttpMetrics;
  /** Every request the proxy got (`apisix_http_requests_total`). */
  requests = 0;
  /** Host name of this node (log entries' `server.hostname`, `apisix_node_info`). */
  readonly hostname: string;
  readonly files: FileAppender | undefined;
  private cached: Rendered | undefined;
  /** The render `cached` replaced. */
  private previous: Rendered | undefined;
  private rendering: Promise<Rendered> | undefined;
  /** Buffers of renders nobody reads any more, for the next render to write over. */
  private spare: Uint8Array[] = [];
  private readonly refreshMs: number;
  private lastScrape = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private closed = false;
  private cors: { admin: string; origins: ReadonlySet<string> } | undefined;

  constructor(private readonly opts: ObservabilityOptions = {}) {
    this.http = new HttpMetrics(this.registry);
    this.hostname = opts.hostname ?? '';
    this.files = opts.files;
    this.refreshMs = opts.refreshIntervalMs ?? 15_000;
    const gauges: Collector = {
      collect: (out) => {
        const conns = this.opts.connections?.();
        if (conns) {
          let text = '# HELP apisix_nginx_http_current_connections Number of HTTP connections\n# TYPE apisix_nginx_http_current_connections gauge\n';
          for (const [state, value] of Object.entries(conns)) {
            text += `apisix_nginx_http_current_connections{state="${state}"} ${formatValue(value ?? 0)}\n`;
          }
          out.push(text);
        }
        out.push(
          `# HELP apisix_http_requests_total The total number of client requests since APISIX started\n# TYPE apisix_http_requests_total gauge\napisix_http_requests_total ${this.requests}\n`,
        );
        if (this.opts.etcdReachable) {
          out.push(
            `# HELP apisix_etcd_reachable Config server etcd reachable from APISIX, 0 is unreachable\n# TYPE apisix_etcd_reachable gauge\napisix_etcd_reachable ${this.opts.etcdReachable() ? 1 : 0}\n`,
          );
        }
        out.push(
          `# HELP apisix_node_info Info of APISIX node\n# TYPE apisix_node_info gauge\napisix_node_info{${labelText(['hostname', 'version'], [this.opts.hostname ?? '', FNGATE_VERSION])}} 1\n`,
        );
      },
    };
    this.registry.addCollector(gauges);
    for (const c of opts.collectors ?? []) this.registry.addCollector(c);
  }

  /**
   * The exposition text as UTF-8 chunks. As APISIX (which renders in a timer every `refresh_interval` and answers
   * scrapes from that cache), a scrape is answered from the latest render, and renders happen in the background,
   * every refresh interval, in slices between which requests are served, for as long as someone scrapes (see
   * {@link KEEP_RENDERING_MS}). The first scrape, and the first after a long pause, wait for a render. With a
   * refresh interval of 0 every scrape renders (tests).
   */
  async metricsChunks(): Promise<Uint8Array[]> {
    return (await this.latest()).chunks;
  }

  private async latest(): Promise<Rendered> {
    if (this.refreshMs === 0) return this.render();
    this.lastScrape = Date.now();
    const rendered = this.cached ?? (await this.render());
    this.schedule();
    return rendered;
  }

  /** One render at a time: concurrent callers share it. */
  private render(): Promise<Rendered> {
    if (!this.rendering) {
      this.rendering = this.registry.render(undefined, undefined, this.spare).then(
        (chunks) => {
          // The render before the one now replaced gives its buffers to the next render, unless a scrape still
          // reads it (then they are left to the collector). One render of slack: a scrape's last chunks may still be
          // in the socket's queue after it read them.
          const older = this.previous;
          this.previous = this.cached;
          const rendered: Rendered = { chunks, at: Date.now(), readers: 0 };
          this.cached = rendered;
          this.rendering = undefined;
          if (older && older.readers === 0) this.recycle(older);
          return rendered;
        },
        (err) => {
          this.rendering = undefined;
          throw err;
        },
      );
    }
    return this.rendering;
  }

  /** A render's buffers go to the next render once it is replaced and no scrape reads it. */
  private recycle(r: Rendered): void {
    for (const c of r.chunks) {
      if (c.buffer.byteLength === RENDER_CHUNK && this.spare.length < r.chunks.length) {
        this.spare.push(new Uint8Array(c.buffer, 0, RENDER_CHUNK));
      }
    }
  }

  /** The next background render, one refresh interval after the last one; none once scrapes stopped coming. */
  private schedule(): void {
    if (this.timer !== undefined || this.closed || this.cached === undefined) return;
    const wait = Math.max(0, this.cached.at + this.refreshMs - Date.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.closed) return;
      if (Date.now() - this.lastScrape > Math.max(KEEP_RENDERING_MS, 10 * this.refreshMs)) {
        // Nobody scrapes any more: stop, and let the next scrape render afresh rather than serve old figures.
        this.cached = undefined;
        this.spare = [];
        return;
      }
      this.render().then(
        () => this.schedule(),
        () => this.schedule(),
      );
    }, wait);
    // Not a reason to keep the process alive (Node, Bun; Deno has Deno.unrefTimer, left to its entry's shutdown).
    (this.timer as { unref?: () => void }).unref?.();
  }

  /** Stops the background renders (gateway close). */
  close(): void {
    this.closed = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** The exposition text as one string. */
  async metricsText(): Promise<string> {
    return chunksText(await this.metricsChunks());
  }

  /** CORS headers of an export-server answer: the dashboard's origin may read it, no other (export-cors.ts). */
  exportCors(req: Request): Record<string, string> {
    const admin = this.opts.dashboard?.();
    const key = admin ? JSON.stringify(admin) : '';
    if (this.cors?.admin !== key) this.cors = { admin: key, origins: admin ? dashboardOrigins(admin) : new Set() };
    return exportCorsHeaders(req.headers.get('origin'), this.cors.origins);
  }

  /**
   * The export server (APISIX `enable_export_server`, port 9091): GET `/apisix/prometheus/metrics` answers the
   * metrics (readable by the dashboard's origin, {@link exportCors}); any other method or path 404 with an empty
   * body, as APISIX's.
   */
  serveMetrics = async (req: Request): Promise<Response> => {
    const url = req.url;
    const start = url.indexOf('/', url.indexOf('//') + 2);
    const q = url.indexOf('?', start);
    const path = start < 0 ? '/' : q < 0 ? url.slice(start) : url.slice(start, q);
    if ((req.method !== 'GET' && req.method !== 'HEAD') || path !== '/apisix/prometheus/metrics') {
      return new Response(null, { status: 404 });
    }
    const rendered = await this.latest();
    const chunks = rendered.chunks;
    let length = 0;
    for (const c of chunks) length += c.byteLength;
    const headers = {
      'content-type': 'text/plain; version=0.0.4; charset=utf-8',
      'content-length': String(length),
      ...this.exportCors(req),
    };
    if (req.method === 'HEAD') return new Response(null, { status: 200, headers });
    // The render's chunks handed out one by one as the client reads, not copied (a Blob, or a copy per chunk,
    // allocates the whole text again: tens of MB of external memory per scrape, which makes V8 run full collections).
    // Node, Deno and Bun leave the buffers they are given as they are (checked). While this scrape reads, the
    // render's buffers are not reused.
    let i = 0;
    rendered.readers++;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      rendered.readers--;
    };
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        // A turn of the event loop every MiB: a fast reader on loopback would otherwise take the whole text in one go.
        if (i > 0 && i % 4 === 0) await macrotask();
        if (i < chunks.length) controller.enqueue(chunks[i++]!);
        else {
          controller.close();
          finish();
        }
      },
      cancel: finish,
    });
    return new Response(body, { status: 200, headers });
  };
}

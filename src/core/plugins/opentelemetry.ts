import { type Context, createContextKey, ROOT_CONTEXT, type Span, SpanKind, SpanStatusCode, type Tracer, trace } from '@opentelemetry/api';
import { type ExportResult, ExportResultCode, W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BasicTracerProvider,
  BatchSpanProcessor,
  type IdGenerator,
  ParentBasedSampler,
  type ReadableSpan,
  type Sampler,
  type SpanExporter,
  TraceIdRatioBasedSampler,
} from '@opentelemetry/sdk-trace-base';
import * as v from 'valibot';
import type { Logger, RequestContext } from '../context.ts';
import { safeRecord } from '../schema/common.ts';
import { INTEGER } from '../schema/format.ts';
import type { PluginDefinition } from './types.ts';

const fraction = v.optional(v.pipe(v.number(), v.minValue(0), v.maxValue(1)), 0);

const samplerName = v.picklist(['always_on', 'always_off', 'trace_id_ratio', 'parent_base']);

/** APISIX's opentelemetry route schema (sampler, additional attributes). */
const schema = v.strictObject({
  sampler: v.optional(
    v.strictObject({
      name: v.optional(samplerName, 'always_off'),
      options: v.optional(
        v.strictObject({
          fraction,
          root: v.optional(
            v.strictObject({
              name: v.optional(v.picklist(['always_on', 'always_off', 'trace_id_ratio']), 'always_off'),
              options: v.optional(v.strictObject({ fraction }), { fraction: 0 }),
            }),
          ),
        }),
        { fraction: 0 },
      ),
    }),
    { name: 'always_off', options: { fraction: 0 } },
  ),
  additional_attributes: v.optional(v.array(v.pipe(v.string(), v.minLength(1)))),
  additional_header_prefix_attributes: v.optional(v.array(v.pipe(v.string(), v.minLength(1)))),
});

type Conf = v.InferOutput<typeof schema>;

/**
 * Where spans go. APISIX reads these from config.yaml `plugin_attr.opentelemetry`; fngate has no config.yaml, so
 * they are `plugin_metadata/opentelemetry` (same field names and defaults).
 */
const metadataSchema = v.strictObject({
  collector: v.optional(
    v.strictObject({
      address: v.optional(v.pipe(v.string(), v.minLength(1)), '127.0.0.1:4318'),
      request_timeout: v.optional(v.pipe(v.number(INTEGER), v.integer(), v.minValue(1), v.maxValue(3600)), 3),
      request_headers: v.optional(safeRecord(v.string(), v.string())),
    }),
    { address: '127.0.0.1:4318', request_timeout: 3 },
  ),
  resource: v.optional(safeRecord(v.string(), v.string())),
  batch_span_processor: v.optional(
    v.strictObject({
      max_export_batch_size: v.optional(v.pipe(v.number(INTEGER), v.integer(), v.minValue(1), v.maxValue(100_000)), 16),
      inactive_timeout: v.optional(v.pipe(v.number(INTEGER), v.integer(), v.minValue(1), v.maxValue(3600)), 2),
      max_queue_size: v.optional(v.pipe(v.number(INTEGER), v.integer(), v.minValue(1), v.maxValue(10_000_000)), 1024),
    }),
    {},
  ),
});

interface Metadata {
  collector: { address: string; request_timeout: number; request_headers?: Record<string, string> };
  resource?: Record<string, string>;
  batch_span_processor: { max_export_batch_size?: number; inactive_timeout?: number; max_queue_size?: number };
}

const DEFAULT_META: Metadata = { collector: { address: '127.0.0.1:4318', request_timeout: 3 }, batch_span_processor: {} };

function randomHex(bytes: number): string {
  const b = crypto.getRandomValues(new Uint8Array(bytes));
  let s = '';
  for (const x of b) s += (x < 16 ? '0' : '') + x.toString(16);
  return s;
}

/** Ids from crypto.getRandomValues (the SDK's default generator uses Math.random). */
const idGenerator: IdGenerator = { generateTraceId: () => randomHex(16), generateSpanId: () => randomHex(8) };

function simple(name: string, fraction: number): Sampler {
  if (name === 'always_on') return new AlwaysOnSampler();
  if (name === 'trace_id_ratio') return new TraceIdRatioBasedSampler(fraction);
  return new AlwaysOffSampler();
}

/** APISIX's sampler names mapped onto the SDK's samplers (parent_base: the parent's decision, else `root`). */
function samplerOf(conf: Conf['sampler']): Sampler {
  if (conf.name !== 'parent_base') return simple(conf.name, conf.options.fraction);
  const root = conf.options.root;
  return new ParentBasedSampler({ root: root ? simple(root.name, root.options.fraction) : new AlwaysOffSampler() });
}

/**
 * The route's sampler travels in the span's context: one provider (and batch) per collector serves every route, each
 * with its own sampler.
 */
const SAMPLER = createContextKey('fngate.opentelemetry.sampler');
const routeSampler: Sampler = {
  shouldSample: (context, ...rest) => ((context.getValue(SAMPLER) as Sampler | undefined) ?? new AlwaysOffSampler()).shouldSample(context, ...rest),
  toString: () => 'fngate route sampler',
};

/**
 * The OTLP exporter, plus what a Worker needs: a promise per span that settles once the batch holding it was
 * exported (or failed), for `ctx.waitUntil`; and failures logged (the SDK only reports them to its `diag`).
 */
class WatchedExporter implements SpanExporter {
  private waiters: (() => void)[] = [];
  constructor(
    private readonly inner: SpanExporter,
    private readonly url: string,
    private readonly logger: Logger,
  ) {}
  export(spans: ReadableSpan[], done: (result: ExportResult) => void): void {
    const waiters = this.waiters;
    this.waiters = [];
    this.inner.export(spans, (result) => {
      if (result.code !== ExportResultCode.SUCCESS)
        this.logger.error(`opentelemetry: ${spans.length} spans dropped, sending them to ${this.url} failed: ${result.error?.message ?? 'unknown error'}`);
      for (const w of waiters) w();
      done(result);
    });
  }
  nextExport(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }
  shutdown(): Promise<void> {
    return this.inner.shutdown();
  }
  forceFlush(): Promise<void> {
    return this.inner.forceFlush?.() ?? Promise.resolve();
  }
}

interface Pipeline {
  tracer: Tracer;
  exporter: WatchedExporter;
}

/** One provider, batch and exporter per collector configuration (metadata object), shared by every route. */
const pipelines = new WeakMap<object, Pipeline>();

function pipelineOf(md: Metadata, hostname: string, logger: Logger): Pipeline {
  let p = pipelines.get(md);
  if (p) return p;
  const address = md.collector.address;
  const url = `${/^https?:\/\//.test(address) ? address : `http://${address}`}/v1/traces`;
  const attributes: Record<string, string> = { 'service.name': 'APISIX', ...md.resource };
  if (!md.resource?.['service.name']) attributes.hostname = hostname;
  const exporter = new WatchedExporter(
    new OTLPTraceExporter({ url, headers: { ...md.collector.request_headers }, timeoutMillis: md.collector.request_timeout * 1000 }),
    url,
    logger,
  );
  const bsp = md.batch_span_processor;
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes(attributes),
    sampler: routeSampler,
    idGenerator,
    spanProcessors: [
      new BatchSpanProcessor(exporter, {
        maxExportBatchSize: bsp.max_export_batch_size ?? 16,
        scheduledDelayMillis: (bsp.inactive_timeout ?? 2) * 1000,
        maxQueueSize: bsp.max_queue_size ?? 1024,
        exportTimeoutMillis: md.collector.request_timeout * 1000,
      }),
    ],
  });
  p = { tracer: provider.getTracer('fngate-opentelemetry', '0.1'), exporter };
  pipelines.set(md, p);
  return p;
}

const propagator = new W3CTraceContextPropagator();
const headerGetter = {
  keys: () => ['traceparent', 'tracestate'],
  get: (ctx: RequestContext, key: string) => ctx.header(key) ?? undefined,
};
const headerSetter = { set: (ctx: RequestContext, key: string, value: string) => ctx.setHeader(key, value) };

interface SpanState {
  span: Span;
  exporter: WatchedExporter;
}

/**
 * `opentelemetry` (APISIX priority 12009): continues the client's W3C trace (`traceparent`) or starts one, always
 * sends `traceparent` to the upstream or function (also when not sampled, flags `00`), and exports a server span
 * per sampled request by OTLP/HTTP (JSON encoding) to `plugin_metadata/opentelemetry` `collector.address`
 * (`/v1/traces`), batched. Spans, samplers, the W3C propagator, the batch and the exporter are the OpenTelemetry
 * JS SDK's (`@opentelemetry/sdk-trace-base`, `exporter-trace-otlp-http`). Samplers as APISIX: `always_off`
 * (default), `always_on`, `trace_id_ratio` (`options.fraction`), `parent_base` (the parent's decision, else
 * `options.root`).
 */
export const opentelemetry: PluginDefinition<Conf> = {
  name: 'opentelemetry',
  priority: 12009,
  version: 0.1,
  schema: schema as v.GenericSchema<unknown, Conf>,
  metadataSchema,
  create(conf, env) {
    const sampler = samplerOf(conf.sampler);
    const hostname = env.obs?.hostname ?? '';
    const instance = {
      rewrite(ctx: RequestContext) {
        const md = (ctx.metadata.get('opentelemetry') as Metadata | undefined) ?? DEFAULT_META;
        const { tracer, exporter } = pipelineOf(md, hostname, env.logger);
        const parent: Context = propagator.extract(ROOT_CONTEXT.setValue(SAMPLER, sampler), ctx, headerGetter);
        const span = tracer.startSpan(ctx.route ? `${ctx.method} ${ctx.route.uri}` : ctx.method, { kind: SpanKind.SERVER }, parent);
        ctx.setStateOf(instance, { span, exporter } satisfies SpanState);
        propagator.inject(trace.setSpan(ROOT_CONTEXT, span), ctx, headerSetter);
        return undefined;
      },
      log(ctx: RequestContext) {
        const s = ctx.stateOf<SpanState>(instance);
        if (!s?.span.isRecording()) return;
        const { span } = s;
        span.setAttributes({
          'net.host.name': ctx.host,
          'http.method': ctx.method,
          'http.scheme': ctx.scheme,
          'http.target': ctx.rawPath,
          'http.user_agent': ctx.header('user-agent') ?? '',
          'http.status_code': ctx.status,
        });
        if (ctx.route) {
          span.updateName(`${ctx.method} ${ctx.route.uri}`);
          span.setAttributes({ 'apisix.route_id': ctx.route.id, 'apisix.route_name': ctx.route.name, 'http.route': ctx.route.uri });
          if (ctx.route.serviceId) span.setAttribute('apisix.service_id', ctx.route.serviceId);
        }
        for (const name of conf.additional_attributes ?? []) {
          const val = ctx.getVar(name);
          if (val !== undefined) span.setAttribute(name, String(val));
        }
        for (const prefix of conf.additional_header_prefix_attributes ?? []) {
          const p = prefix.toLowerCase();
          for (const [k, val] of ctx.request.headers) if (k.startsWith(p)) span.setAttribute(k, val);
        }
        if (ctx.status >= 500) span.setStatus({ code: SpanStatusCode.ERROR, message: `${ctx.status}` });
        const done = ctx.waitUntil ? s.exporter.nextExport() : undefined;
        span.end();
        if (done) ctx.waitUntil!(done);
      },
    };
    return instance;
  },
};

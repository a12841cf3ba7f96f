import * as v from 'valibot';
import type { RequestContext } from '../context.ts';
import { BatchProcessor } from '../observability/batch.ts';
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

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const ZERO_TRACE = '0'.repeat(32);
const ZERO_SPAN = '0'.repeat(16);

function randomHex(bytes: number): string {
  const b = crypto.getRandomValues(new Uint8Array(bytes));
  let s = '';
  for (const x of b) s += (x < 16 ? '0' : '') + x.toString(16);
  return s;
}

interface SpanState {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  sampled: boolean;
  startNs: bigint;
}

type Sampler = (traceId: string, parentSampled: boolean | undefined) => boolean;

/** trace_id_ratio as OpenTelemetry: the trace id's low 8 bytes below fraction × 2^64 (here: 56 bits, enough). */
function ratio(fractionValue: number): Sampler {
  const bound = Math.floor(fractionValue * 2 ** 56);
  return (traceId) => Number.parseInt(traceId.slice(18, 32), 16) < bound;
}

function simple(name: string, f: number): Sampler {
  if (name === 'always_on') return () => true;
  if (name === 'trace_id_ratio') return ratio(f);
  return () => false;
}

function samplerOf(conf: Conf['sampler']): Sampler {
  if (conf.name !== 'parent_base') return simple(conf.name, conf.options.fraction);
  const root = conf.options.root;
  const rootSampler = root ? simple(root.name, root.options.fraction) : () => false;
  return (traceId, parentSampled) => (parentSampled === undefined ? rootSampler(traceId, undefined) : parentSampled);
}

const nowNs = () => BigInt(Date.now()) * 1_000_000n;

type AnyValue = { stringValue: string } | { intValue: string };
const attr = (key: string, value: string | number): { key: string; value: AnyValue } => ({
  key,
  value: typeof value === 'number' ? { intValue: String(value) } : { stringValue: value },
});

/** One exporter per collector configuration (metadata object), shared by every route. */
const exporters = new WeakMap<object, BatchProcessor<Record<string, unknown>>>();

/**
 * `opentelemetry` (APISIX priority 12009): continues the client's W3C trace (`traceparent`) or starts one, always
 * sends `traceparent` to the upstream or function (also when not sampled, flags `00`), and exports a server span
 * per sampled request by OTLP/HTTP (JSON encoding) to `plugin_metadata/opentelemetry` `collector.address`
 * (`/v1/traces`), batched. Samplers as APISIX: `always_off` (default), `always_on`, `trace_id_ratio`
 * (`options.fraction`), `parent_base` (the parent's decision, else `options.root`).
 */
export const opentelemetry: PluginDefinition<Conf> = {
  name: 'opentelemetry',
  priority: 12009,
  version: 0.1,
  schema: schema as v.GenericSchema<unknown, Conf>,
  metadataSchema,
  create(conf, env) {
    const sample = samplerOf(conf.sampler);
    const exporterOf = (md: Metadata): BatchProcessor<Record<string, unknown>> => {
      let p = exporters.get(md);
      if (!p) {
        const address = md.collector.address;
        const url = `${/^https?:\/\//.test(address) ? address : `http://${address}`}/v1/traces`;
        const resource = [attr('service.name', 'APISIX'), ...Object.entries(md.resource ?? {}).map(([k, val]) => attr(k, val))];
        if (!md.resource?.['service.name']) resource.push(attr('hostname', env.obs?.hostname ?? ''));
        const bsp = md.batch_span_processor;
        p = new BatchProcessor<Record<string, unknown>>(
          {
            name: 'opentelemetry',
            batch_max_size: bsp.max_export_batch_size ?? 16,
            inactive_timeout: bsp.inactive_timeout ?? 2,
            buffer_duration: 60,
            max_retry_count: 0,
            retry_delay: 0,
          },
          async (spans) => {
            const res = await fetch(url, {
              method: 'POST',
              headers: { 'content-type': 'application/json', ...md.collector.request_headers },
              body: JSON.stringify({
                resourceSpans: [
                  {
                    resource: { attributes: resource },
                    scopeSpans: [{ scope: { name: 'fngate-opentelemetry', version: '0.1' }, spans }],
                  },
                ],
              }),
              signal: AbortSignal.timeout(md.collector.request_timeout * 1000),
            });
            await res.body?.cancel().catch(() => {});
            if (res.status >= 400) throw new Error(`${url} answered ${res.status}`);
          },
          env.logger,
          bsp.max_queue_size ?? 1024,
        );
        exporters.set(md, p);
      }
      return p;
    };
    const instance = {
      rewrite(ctx: RequestContext) {
        const incoming = ctx.header('traceparent');
        const m = incoming ? TRACEPARENT.exec(incoming.trim().toLowerCase()) : null;
        let traceId: string;
        let parentSpanId = '';
        let parentSampled: boolean | undefined;
        if (m && m[1] !== 'ff' && m[2] !== ZERO_TRACE && m[3] !== ZERO_SPAN) {
          traceId = m[2]!;
          parentSpanId = m[3]!;
          parentSampled = (Number.parseInt(m[4]!, 16) & 1) === 1;
        } else traceId = randomHex(16);
        const state: SpanState = {
          traceId,
          spanId: randomHex(8),
          parentSpanId,
          sampled: sample(traceId, parentSampled),
          startNs: nowNs(),
        };
        ctx.setStateOf(instance, state);
        ctx.setHeader('traceparent', `00-${traceId}-${state.spanId}-${state.sampled ? '01' : '00'}`);
        return undefined;
      },
      log(ctx: RequestContext) {
        const s = ctx.stateOf<SpanState>(instance);
        if (!s?.sampled) return;
        const md = (ctx.metadata.get('opentelemetry') as Metadata | undefined) ?? DEFAULT_META;
        const attributes = [
          attr('net.host.name', ctx.host),
          attr('http.method', ctx.method),
          attr('http.scheme', ctx.scheme),
          attr('http.target', ctx.rawPath),
          attr('http.user_agent', ctx.header('user-agent') ?? ''),
          attr('http.status_code', ctx.status),
        ];
        if (ctx.route) {
          attributes.push(attr('apisix.route_id', ctx.route.id), attr('apisix.route_name', ctx.route.name), attr('http.route', ctx.route.uri));
          if (ctx.route.serviceId) attributes.push(attr('apisix.service_id', ctx.route.serviceId));
        }
        for (const name of conf.additional_attributes ?? []) {
          const val = ctx.getVar(name);
          if (val !== undefined) attributes.push(attr(name, String(val)));
        }
        for (const prefix of conf.additional_header_prefix_attributes ?? []) {
          const p = prefix.toLowerCase();
          for (const [k, val] of ctx.request.headers) if (k.startsWith(p)) attributes.push(attr(k, val));
        }
        const span: Record<string, unknown> = {
          traceId: s.traceId,
          spanId: s.spanId,
          name: ctx.route ? `${ctx.method} ${ctx.route.uri}` : ctx.method,
          kind: 2, // SERVER
          startTimeUnixNano: String(s.startNs),
          endTimeUnixNano: String(nowNs()),
          attributes,
          status: ctx.status >= 500 ? { code: 2, message: `${ctx.status}` } : { code: 0 },
        };
        if (s.parentSpanId) span.parentSpanId = s.parentSpanId;
        const done = exporterOf(md).push(span);
        if (done && ctx.waitUntil) ctx.waitUntil(done);
      },
    };
    return instance;
  },
};

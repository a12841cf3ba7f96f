/**
 * What every logger plugin shares (APISIX apisix/utils/log-util.lua): the log entry (the default one, or a
 * `log_format` from the conf or from plugin_metadata, plus `log_format_extra`), and the request/response bodies
 * when `include_req_body` / `include_resp_body` ask for them (with their `*_expr` conditions and byte caps).
 */
import { joinChunks } from '../body.ts';
import * as v from 'valibot';
import type { RequestContext } from '../context.ts';
import { compileExpr, type Expr } from '../expr.ts';
import { compileLogFormat, fullLogEntry, type LogFormat } from '../observability/log-entry.ts';
import { safeRecord } from '../schema/common.ts';
import { exprSchema } from '../schema/expr.ts';
import { INTEGER } from '../schema/format.ts';
import type { PluginEnv, PluginInstance } from './types.ts';

const bytes = (dflt: number) =>
  v.optional(v.pipe(v.number(INTEGER), v.integer(), v.minValue(1), v.maxValue(64 * 1024 * 1024)), dflt);

/** `log_format`: `{ "field": "$var", "nested": { ... } }`. */
export const logFormatSchema = safeRecord(v.string(), v.unknown());

export const logFields = {
  log_format: v.optional(logFormatSchema),
  log_format_extra: v.optional(logFormatSchema),
  include_req_body: v.optional(v.boolean(), false),
  include_req_body_expr: v.optional(exprSchema),
  max_req_body_bytes: bytes(524288),
  include_resp_body: v.optional(v.boolean(), false),
  include_resp_body_expr: v.optional(exprSchema),
  max_resp_body_bytes: bytes(524288),
};

export interface LogConf {
  log_format?: Record<string, unknown>;
  log_format_extra?: Record<string, unknown>;
  include_req_body: boolean;
  include_req_body_expr?: unknown[];
  max_req_body_bytes: number;
  include_resp_body: boolean;
  include_resp_body_expr?: unknown[];
  max_resp_body_bytes: number;
}

/** Metadata fields shared by the loggers (`log_format`, `log_format_extra`). */
export const logMetadataFields = {
  log_format: v.optional(logFormatSchema),
  log_format_extra: v.optional(logFormatSchema),
};

interface BodyState {
  req?: string;
  resp?: Uint8Array[];
  respBytes?: number;
  respOn?: boolean;
}

const compileOptional = (rules: unknown[] | undefined): Expr | undefined => {
  if (rules === undefined) return undefined;
  const c = compileExpr(rules);
  return c.ok ? c.expr : undefined;
};

/** Metadata log formats, compiled once per metadata object. */
const metaFormats = new WeakMap<object, { format?: LogFormat; extra?: LogFormat }>();

function metaFormatOf(md: Record<string, unknown>): { format?: LogFormat; extra?: LogFormat } {
  let f = metaFormats.get(md);
  if (!f) {
    f = {
      format: md.log_format ? compileLogFormat(md.log_format as Record<string, unknown>) : undefined,
      extra: md.log_format_extra ? compileExtra(md.log_format_extra as Record<string, unknown>) : undefined,
    };
    metaFormats.set(md, f);
  }
  return f;
}

/** `log_format_extra`: the fields only (no route_id/service_id appended). */
function compileExtra(format: Record<string, unknown>): LogFormat {
  const f = compileLogFormat(format);
  return (ctx) => {
    const { route_id: _r, service_id: _s, ...rest } = f(ctx);
    return rest;
  };
}

const decoder = new TextDecoder();

/**
 * The phase handlers of a logger: body capture when asked for, and `log` building the entry and handing it to
 * `deliver`. `filter` (file-logger `match`) decides per request whether anything is logged.
 */
export function loggerInstance(
  pluginName: string,
  conf: LogConf,
  env: PluginEnv,
  deliver: (entry: Record<string, unknown>, ctx: RequestContext) => void,
  opts: { noRouteId?: string; filter?: Expr } = {},
): PluginInstance {
  const own = conf.log_format ? compileLogFormat(conf.log_format) : undefined;
  const ownExtra = conf.log_format_extra ? compileExtra(conf.log_format_extra) : undefined;
  const reqExpr = compileOptional(conf.include_req_body_expr);
  const respExpr = compileOptional(conf.include_resp_body_expr);
  const logEnv = { hostname: env.obs?.hostname ?? '' };
  const instance: PluginInstance = {
    log(ctx) {
      if (opts.filter && !opts.filter((n) => ctx.getVar(n))) return;
      const md = ctx.metadata.get(pluginName);
      const state = ctx.stateOf<BodyState>(instance);
      let entry: Record<string, unknown>;
      const mf = md ? metaFormatOf(md) : undefined;
      const format = own ?? mf?.format;
      if (format) entry = format(ctx);
      else {
        let respBody: string | undefined;
        if (state?.resp) {
          respBody = decoder.decode(joinChunks(state.resp, state.respBytes ?? 0));
        }
        entry = fullLogEntry(ctx, logEnv, { reqBody: state?.req, respBody, noRouteId: opts.noRouteId });
        const extra = ownExtra ?? mf?.extra;
        if (extra) for (const [k, val] of Object.entries(extra(ctx))) if (!(k in entry)) entry[k] = val;
      }
      deliver(entry, ctx);
    },
  };
  if (conf.include_req_body) {
    instance.access = async (ctx) => {
      if (reqExpr && !reqExpr((n) => ctx.getVar(n))) return undefined;
      if (ctx.method === 'GET' || ctx.method === 'HEAD' || ctx.request.body === null) return undefined;
      // A tee of the body: the upstream still gets all of it; at most max_req_body_bytes are kept for the log.
      const reader = ctx.request.clone().body!.getReader();
      const chunks: Uint8Array[] = [];
      let n = 0;
      while (n < conf.max_req_body_bytes) {
        const { done, value } = await reader.read();
        if (done) break;
        const take = value.subarray(0, conf.max_req_body_bytes - n);
        chunks.push(take);
        n += take.byteLength;
      }
      void reader.cancel().catch(() => {});
      const state = ctx.stateOf<BodyState>(instance) ?? {};
      state.req = decoder.decode(joinChunks(chunks, n));
      ctx.setStateOf(instance, state);
      return undefined;
    };
  }
  if (conf.include_resp_body) {
    instance.bodyFilter = (ctx, chunk) => {
      let state = ctx.stateOf<BodyState>(instance);
      if (state?.respOn === undefined) {
        state = state ?? {};
        state.respOn = !respExpr || respExpr((n) => ctx.getVar(n));
        if (state.respOn) {
          state.resp = [];
          state.respBytes = 0;
        }
        ctx.setStateOf(instance, state);
      }
      if (state.respOn && chunk.byteLength && state.respBytes! < conf.max_resp_body_bytes) {
        const take = chunk.subarray(0, conf.max_resp_body_bytes - state.respBytes!);
        state.resp!.push(take.slice());
        state.respBytes! += take.byteLength;
      }
      return undefined;
    };
  }
  return instance;
}

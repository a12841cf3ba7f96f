/**
 * `fault-injection` (APISIX apisix/plugins/fault-injection.lua, priority 11000, phase rewrite): delays requests
 * and/or answers them itself, for a `percentage` of them and/or those matching `vars`, to test how clients cope
 * with a slow or failing function.
 *
 * - `delay: {duration, percentage, vars}`: waits `duration` seconds first. The wait ends early when the client goes
 *   away (the request ends there, its log phase sees 499): no timer outlives the client.
 * - `abort: {http_status, body, headers, percentage, vars}`: then answers `http_status` with `body` (`$var`
 *   templates; without `body`, a 4xx/5xx gets nginx's status page) and `headers` (string values are templates).
 * - `percentage` (0–100): the share of requests it applies to (absent: all). `vars`: a list of `vars`
 *   expressions; it applies when any of them matches (an empty list never matches, as in APISIX).
 */
import * as v from 'valibot';
import type { RequestContext } from '../context.ts';
import { pluginExit } from '../errors.ts';
import { compileExpr, type Expr, luaNumberToString } from '../expr.ts';
import { INTEGER } from '../schema/format.ts';
import { compileTemplate, type Template } from '../template.ts';
import { clientGone, delay, MAX_DELAY_SECONDS, responseHeadersSchema, safeHeaderValue } from './answer.ts';
import type { PhaseResult, PluginDefinition } from './types.ts';

const percentage = v.optional(v.pipe(v.number(INTEGER), v.integer(), v.minValue(0), v.maxValue(100)));

/** APISIX: an array of at most 20 arrays, each compiled as a `vars` expression (its error is the message). */
const varsList = v.optional(
  v.pipe(
    v.array(v.array(v.unknown())),
    v.maxLength(20),
    v.rawCheck(({ dataset, addIssue }) => {
      if (!dataset.typed) return;
      for (const rules of dataset.value) {
        const res = compileExpr(rules);
        if (!res.ok) {
          addIssue({ message: res.message });
          return;
        }
      }
    }),
  ),
);

const schema = v.pipe(
  v.strictObject({
    abort: v.optional(
      v.strictObject({
        // APISIX: minimum 200, no maximum; a Response cannot have a status over 599.
        http_status: v.pipe(v.number(INTEGER), v.integer(), v.minValue(200), v.maxValue(599)),
        body: v.optional(v.string()),
        headers: v.optional(responseHeadersSchema),
        percentage,
        vars: varsList,
      }),
    ),
    delay: v.optional(
      v.strictObject({
        // Seconds; bounded by what a timer holds (2^31-1 ms).
        duration: v.pipe(v.number(), v.minValue(0), v.maxValue(MAX_DELAY_SECONDS)),
        percentage,
        vars: varsList,
      }),
    ),
  }),
  v.check((c) => c.abort !== undefined || c.delay !== undefined, 'expect object to have at least 1 properties'),
);

interface Conf {
  abort?: { http_status: number; body?: string; headers?: Record<string, string | number>; percentage?: number; vars?: unknown[][] };
  delay?: { duration: number; percentage?: number; vars?: unknown[][] };
}

/** Does the fault apply to this request: its `vars` (any expression matches) and its sampled `percentage`. */
function trigger(percent: number | undefined, vars: unknown[][] | undefined): (ctx: RequestContext) => boolean {
  const exprs: Expr[] | undefined = vars?.map((rules) => {
    const res = compileExpr(rules);
    if (!res.ok) throw new Error(res.message); // checked by the schema
    return res.expr;
  });
  const sampled = percent === undefined ? () => true : () => Math.floor(Math.random() * 100) + 1 <= percent;
  if (exprs === undefined) return sampled;
  return (ctx) => {
    const reader = ctx.varReader;
    return exprs.some((e) => e(reader)) && sampled();
  };
}

export const faultInjection: PluginDefinition<Conf> = {
  name: 'fault-injection',
  priority: 11000,
  version: 0.1,
  schema: schema as v.GenericSchema<unknown, Conf>,
  create(conf) {
    let abort: ((ctx: RequestContext) => PhaseResult) | undefined;
    if (conf.abort) {
      const a = conf.abort;
      const applies = trigger(a.percentage, a.vars);
      const body: Template | undefined = a.body === undefined ? undefined : compileTemplate(a.body);
      const headers: [string, Template][] = Object.entries(a.headers ?? {}).map(([name, value]) => {
        if (typeof value === 'number') {
          const text = luaNumberToString(value);
          return [name, () => text];
        }
        return [name, compileTemplate(value)];
      });
      abort = (ctx) => {
        if (!applies(ctx)) return undefined;
        const reader = ctx.varReader;
        let h: Record<string, string> | undefined;
        if (headers.length) {
          h = {};
          for (const [name, tpl] of headers) h[name] = safeHeaderValue(tpl(reader));
        }
        return pluginExit(a.http_status, body?.(reader), h);
      };
    }
    if (!conf.delay) return abort ? { rewrite: abort } : {};
    const d = conf.delay;
    const delays = trigger(d.percentage, d.vars);
    const ms = Math.round(d.duration * 1000);
    return {
      rewrite(ctx) {
        if (!delays(ctx) || ms === 0) return abort?.(ctx);
        return delay(ctx, ms).then((done) => (done ? abort?.(ctx) : clientGone()));
      },
    };
  },
};

import * as v from 'valibot';
import type { RequestContext } from '../context.ts';
import { pluginExit } from '../errors.ts';
import type { LimitBackend } from '../limits/backend.ts';
import { MAX_DURATION_S } from '../schema/common.ts';
import { INTEGER } from '../schema/format.ts';
import { compileTemplate } from '../template.ts';
import {
  type Amount,
  compileAmount,
  backendFor,
  clientGone,
  compileKey,
  counterPrefix,
  delay,
  POLICIES,
  type PolicyConf,
  policyProblem,
  redisFields,
  SECRET_FIELDS,
} from './limit-common.ts';
import type { PluginDefinition } from './types.ts';

const MAX_CONN = 1_000_000_000;
const connSchema = v.union([v.pipe(v.number(INTEGER), v.integer(), v.gtValue(0), v.maxValue(MAX_CONN)), v.string()]);
const burstSchema = v.union([v.pipe(v.number(INTEGER), v.integer(), v.minValue(0), v.maxValue(MAX_CONN)), v.string()]);

const schema = v.pipe(
  v.object({
    conn: v.optional(connSchema),
    burst: v.optional(burstSchema),
    default_conn_delay: v.optional(v.pipe(v.number(), v.gtValue(0), v.maxValue(MAX_DURATION_S))),
    only_use_default_delay: v.optional(v.boolean(), false),
    key: v.optional(v.string()),
    key_type: v.optional(v.picklist(['var', 'var_combination']), 'var'),
    policy: v.optional(v.picklist(POLICIES), 'local'),
    rejected_code: v.optional(v.pipe(v.number(INTEGER), v.integer(), v.minValue(200), v.maxValue(599)), 503),
    rejected_msg: v.optional(v.pipe(v.string(), v.minLength(1))),
    allow_degradation: v.optional(v.boolean(), false),
    rules: v.optional(v.array(v.object({ conn: connSchema, burst: burstSchema, key: v.string() }))),
    key_ttl: v.optional(v.pipe(v.number(INTEGER), v.integer()), 3600),
    ...redisFields,
  }),
  v.rawCheck(({ dataset, addIssue }) => {
    if (!dataset.typed) return;
    const c = dataset.value;
    // APISIX: oneOf [{required: [conn, burst, default_conn_delay, key]}, {required: [default_conn_delay, rules]}].
    const simple =
      c.conn !== undefined && c.burst !== undefined && c.default_conn_delay !== undefined && c.key !== undefined;
    const withRules = c.default_conn_delay !== undefined && c.rules !== undefined;
    if (simple && withRules) addIssue({ message: 'value should match only one schema, but matches both schemas 1 and 2' });
    else if (!simple && !withRules) addIssue({ message: 'value should match only one schema, but matches none' });
    else {
      const problem = policyProblem(c);
      if (problem) addIssue({ message: problem });
    }
  }),
);

type Conf = v.InferOutput<typeof schema>;

/** A connection number: a whole number up to MAX_CONN (positive for `conn`, or 0 too for `burst`). */
const connAmount = (allowZero: boolean) => (n: number) => Number.isInteger(n) && (allowZero ? n >= 0 : n > 0) && n <= MAX_CONN;

interface Rule {
  conn: Amount;
  burst: Amount;
  key: (ctx: RequestContext) => string | undefined;
}

/**
 * `limit-conn` (APISIX priority 1003, access + log): at most `conn` requests in flight per key; up to `burst` more
 * wait (`default_conn_delay` seconds per `conn` ahead of them, at most 60 s, and only while the client is still
 * there); beyond that `rejected_code` (503). A counted request is uncounted in the log phase, which runs when the
 * answer has been sent or the client went away.
 */
export const limitConn: PluginDefinition<Conf> = {
  name: 'limit-conn',
  priority: 1003,
  version: 0.1,
  schema: schema as v.GenericSchema<unknown, Conf>,
  secretFields: SECRET_FIELDS,
  checkRuntime: (conf, caps) => caps.limitPolicyRefusal?.(typeof conf.policy === 'string' ? conf.policy : 'local'),
  create(conf, env) {
    const backend: LimitBackend = backendFor(conf as PolicyConf, env.limits);
    const prefix = counterPrefix('limit-conn', env.ownerKey, conf);
    const unitDelay = conf.default_conn_delay!;
    const rules: Rule[] =
      conf.rules === undefined
        ? [{ conn: compileAmount(conf.conn!, connAmount(false)), burst: compileAmount(conf.burst!, connAmount(true)), key: compileKey(conf.key!, conf.key_type) }]
        : conf.rules.map((r, i) => {
            const tpl = compileTemplate(r.key);
            return {
              conn: compileAmount(r.conn, connAmount(false)),
              burst: compileAmount(r.burst, connAmount(true)),
              key: (ctx: RequestContext) => {
                let resolved = 0;
                const out = tpl((name) => {
                  const value = ctx.getVar(name);
                  if (value !== undefined && value !== null) resolved++;
                  return value;
                });
                return resolved === 0 && r.key.includes('$') ? undefined : `${i}:${out}`;
              },
            };
          });
    const rejected = () =>
      pluginExit(conf.rejected_code, conf.rejected_msg === undefined ? undefined : { error_msg: conf.rejected_msg });
    const failed = (ctx: RequestContext, why: string) => {
      env.logger.error('limit-conn: cannot count the request', { route: ctx.routeId, error: why });
      return conf.allow_degradation ? undefined : pluginExit(500);
    };
    /** The keys this request is counted under, uncounted in log; the longest delay any rule asks for. */
    interface State {
      keys: string[];
      delayS: number;
    }
    const self = {};

    const admitted = (st: State, key: string, n: number, conn: number, burst: number) => {
      if (n < 0 || n > conn + burst) return rejected();
      st.keys.push(key);
      // resty.limit.conn: the excess waits unit_delay for every `conn` requests ahead of it.
      if (n > conn) st.delayS = Math.max(st.delayS, conf.only_use_default_delay ? unitDelay : unitDelay * Math.floor((n - 1) / conn));
      return undefined;
    };

    const finish = (ctx: RequestContext, st: State): Response | undefined | Promise<Response | undefined> => {
      if (st.delayS < 0.001) return undefined;
      return delay(ctx, st.delayS * 1000).then((stayed) => (stayed ? undefined : clientGone()));
    };

    const run = (ctx: RequestContext, st: State, from: number): Response | undefined | Promise<Response | undefined> => {
      for (let i = from; i < rules.length; i++) {
        const rule = rules[i]!;
        const conn = rule.conn(ctx);
        const burst = rule.burst(ctx);
        if (conn === undefined || burst === undefined) return failed(ctx, 'conn or burst does not resolve to a number');
        const keyValue = rule.key(ctx);
        if (keyValue === undefined) continue;
        const key = prefix + keyValue;
        let n: number | Promise<number>;
        try {
          n = backend.connIn(key, conn + burst);
        } catch (err) {
          return failed(ctx, (err as Error).message);
        }
        if (n instanceof Promise) {
          return n.then(
            (got) => admitted(st, key, got, conn, burst) ?? run(ctx, st, i + 1),
            (err: Error) => failed(ctx, err.message),
          );
        }
        const exit = admitted(st, key, n, conn, burst);
        if (exit) return exit;
      }
      return finish(ctx, st);
    };

    return {
      access(ctx) {
        const st: State = { keys: [], delayS: 0 };
        ctx.setStateOf(self, st);
        return run(ctx, st, 0);
      },
      log(ctx) {
        const st = ctx.stateOf<State>(self);
        if (!st) return;
        for (const key of st.keys) {
          try {
            const r = backend.connOut(key);
            if (r instanceof Promise) {
              r.catch((err: Error) => env.logger.error('limit-conn: cannot uncount a request', { error: err.message }));
            }
          } catch (err) {
            env.logger.error('limit-conn: cannot uncount a request', { error: (err as Error).message });
          }
        }
        st.keys = [];
      },
    };
  },
};

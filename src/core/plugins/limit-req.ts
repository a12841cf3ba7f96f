import * as v from 'valibot';
import type { RequestContext } from '../context.ts';
import { pluginExit } from '../errors.ts';
import { MAX_DURATION_S } from '../schema/common.ts';
import { INTEGER } from '../schema/format.ts';
import {
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

const schema = v.pipe(
  v.object({
    rate: v.pipe(v.number(), v.gtValue(0), v.maxValue(Number.MAX_SAFE_INTEGER)),
    burst: v.pipe(v.number(), v.minValue(0), v.maxValue(MAX_DURATION_S)),
    key: v.string(),
    key_type: v.optional(v.picklist(['var', 'var_combination']), 'var'),
    policy: v.optional(v.picklist(POLICIES), 'local'),
    rejected_code: v.optional(v.pipe(v.number(INTEGER), v.integer(), v.minValue(200), v.maxValue(599)), 503),
    rejected_msg: v.optional(v.pipe(v.string(), v.minLength(1))),
    nodelay: v.optional(v.boolean(), false),
    allow_degradation: v.optional(v.boolean(), false),
    ...redisFields,
  }),
  v.rawCheck(({ dataset, addIssue }) => {
    if (!dataset.typed) return;
    const problem = policyProblem(dataset.value);
    if (problem) addIssue({ message: problem });
  }),
);

type Conf = v.InferOutput<typeof schema>;

/**
 * `limit-req` (APISIX priority 1001, access): a leaky bucket per key (resty.limit.req) that drains `rate`
 * requests per second. A request beyond the rate but within `burst` waits until its turn (at most 60 s, and only
 * while the client is still there) unless `nodelay`; beyond the burst it gets `rejected_code` (503), with
 * `{"error_msg": rejected_msg}` when set. No rate-limit headers.
 */
export const limitReq: PluginDefinition<Conf> = {
  name: 'limit-req',
  priority: 1001,
  version: 0.1,
  schema: schema as v.GenericSchema<unknown, Conf>,
  secretFields: SECRET_FIELDS,
  checkRuntime: (conf, caps) => caps.limitPolicyRefusal?.(typeof conf.policy === 'string' ? conf.policy : 'local'),
  create(conf, env) {
    const backend = backendFor(conf as PolicyConf, env.limits);
    const prefix = counterPrefix('limit-req', env.ownerKey, conf);
    const keyOf = compileKey(conf.key, conf.key_type);
    const rejected = () =>
      pluginExit(conf.rejected_code, conf.rejected_msg === undefined ? undefined : { error_msg: conf.rejected_msg });
    const failed = (ctx: RequestContext, err: Error) => {
      env.logger.error('limit-req: cannot count the request', { route: ctx.routeId, error: err.message });
      return conf.allow_degradation ? undefined : pluginExit(500);
    };
    const after = (ctx: RequestContext, seconds: number): Response | undefined | Promise<Response | undefined> => {
      if (seconds < 0) return rejected();
      if (seconds < 0.001 || conf.nodelay) return undefined;
      return delay(ctx, seconds * 1000).then((stayed) => (stayed ? undefined : clientGone()));
    };
    return {
      access(ctx) {
        let d: number | Promise<number>;
        try {
          d = backend.leaky(prefix + keyOf(ctx), conf.rate, conf.burst);
        } catch (err) {
          return failed(ctx, err as Error);
        }
        if (d instanceof Promise) {
          return d.then(
            (s) => after(ctx, s),
            (err: Error) => failed(ctx, err),
          );
        }
        return after(ctx, d);
      },
    };
  },
};

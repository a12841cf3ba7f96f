import * as v from 'valibot';
import { pluginExit } from '../errors.ts';
import { INTEGER } from '../schema/format.ts';
import { HTTP_METHODS } from '../schema/route.ts';
import type { PluginDefinition } from './types.ts';

const TYPES = ['consumer_name', 'service_id', 'route_id', 'consumer_group_id'] as const;
const nameList = v.pipe(v.array(v.string()), v.minLength(1));

const schema = v.pipe(
  v.strictObject({
    type: v.optional(v.picklist(TYPES), 'consumer_name'),
    blacklist: v.optional(nameList),
    whitelist: v.optional(nameList),
    allowed_by_methods: v.optional(
      v.array(
        v.strictObject({
          user: v.optional(v.string()),
          methods: v.optional(v.pipe(v.array(v.picklist(HTTP_METHODS)), v.minLength(1))),
        }),
      ),
    ),
    rejected_code: v.optional(v.pipe(v.number(INTEGER), v.integer(), v.minValue(200), v.maxValue(599)), 403),
    rejected_msg: v.optional(v.string()),
  }),
  // APISIX: `anyOf: [{required: [blacklist]}, {required: [whitelist]}, {required: [allowed_by_methods]}]`.
  v.check(
    (c) => c.blacklist !== undefined || c.whitelist !== undefined || c.allowed_by_methods !== undefined,
    'value should match at least one schema, but matches none',
  ),
);

type Conf = v.InferOutput<typeof schema>;

/**
 * `consumer-restriction` (APISIX apisix/plugins/consumer-restriction.lua, priority 2400, access): lets a request in
 * or not by its consumer's name, its consumer group, or the id of its route or service (`type`): `blacklist` names
 * are refused, only `whitelist` names pass, and `allowed_by_methods` limits a name to some methods (a name it does
 * not list may use any). A request without that value (no consumer, a route without service) gets 401.
 */
export const consumerRestriction: PluginDefinition<Conf> = {
  name: 'consumer-restriction',
  priority: 2400,
  version: 0.1,
  schema: schema as v.GenericSchema<unknown, Conf>,
  create(conf) {
    const type = conf.type;
    const black = conf.blacklist?.length ? new Set(conf.blacklist) : undefined;
    const white = conf.whitelist?.length ? new Set(conf.whitelist) : undefined;
    const byMethods = conf.allowed_by_methods?.length ? conf.allowed_by_methods : undefined;
    const rejected = { message: conf.rejected_msg ?? `The ${type} is forbidden.` };
    const missing = { message: `The request is rejected, please check the ${type} for this request` };
    const methodAllowed = (method: string, value: string): boolean => {
      // APISIX is_method_allowed: the first entry for this user decides; a user with no entry may use any method.
      for (const entry of byMethods!) {
        if (entry.user === value) return (entry.methods ?? []).includes(method as (typeof HTTP_METHODS)[number]);
      }
      return true;
    };
    return {
      access(ctx) {
        const raw = ctx.getVar(type);
        if (raw === undefined || raw === null || raw === '') return pluginExit(401, missing);
        const value = String(raw);
        if (black?.has(value)) return pluginExit(conf.rejected_code, rejected);
        const whitelisted = white ? white.has(value) : false;
        let block = white !== undefined && !whitelisted;
        if (byMethods && !whitelisted && !methodAllowed(ctx.method, value)) block = true;
        return block ? pluginExit(conf.rejected_code, rejected) : undefined;
      },
    };
  },
};

import * as v from 'valibot';
import { pluginExit } from '../errors.ts';
import { compileIpMatcher } from '../router/ip.ts';
import { ipListSchema } from '../schema/ip.ts';
import { INTEGER } from '../schema/format.ts';
import type { PluginDefinition } from './types.ts';

const schema = v.pipe(
  v.strictObject({
    message: v.optional(v.pipe(v.string(), v.minLength(1), v.maxLength(1024)), 'Your IP address is not allowed'),
    response_code: v.optional(v.pipe(v.number(INTEGER), v.integer(), v.minValue(403), v.maxValue(404)), 403),
    whitelist: v.optional(ipListSchema),
    blacklist: v.optional(ipListSchema),
  }),
  // APISIX: `oneOf: [{required: [whitelist]}, {required: [blacklist]}]`.
  v.rawCheck(({ dataset, addIssue }) => {
    if (!dataset.typed) return;
    const { whitelist, blacklist } = dataset.value;
    if (whitelist === undefined && blacklist === undefined)
      addIssue({ message: 'value should match only one schema, but matches none' });
    else if (whitelist !== undefined && blacklist !== undefined) {
      addIssue({ message: 'value should match only one schema, but matches both schemas 1 and 2' });
    }
  }),
);

type Conf = v.InferOutput<typeof schema>;

/**
 * `ip-restriction` (APISIX priority 3000, access phase): lets only the addresses of `whitelist` in, or keeps the
 * addresses of `blacklist` out; the others get `<response_code> {"message":"<message>"}`. It matches the client
 * address as `real-ip` left it (`$remote_addr`); an unknown address ('') matches no entry.
 */
export const ipRestriction: PluginDefinition<Conf> = {
  name: 'ip-restriction',
  priority: 3000,
  version: 0.1,
  schema: schema as v.GenericSchema<unknown, Conf>,
  create(conf) {
    const allow = conf.whitelist !== undefined;
    const matcher = compileIpMatcher(conf.whitelist ?? conf.blacklist ?? []);
    const body = { message: conf.message };
    const status = conf.response_code;
    return {
      access(ctx) {
        if (matcher.match(ctx.clientIp) === allow) return undefined;
        return pluginExit(status, body);
      },
    };
  },
};

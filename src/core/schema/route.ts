import * as v from 'valibot';
import { INTEGER } from './format.ts';
import {
  check,
  descSchema,
  hostSchema,
  idSchema,
  isPlainObject,
  labelsSchema,
  nameSchema,
  safeRecord,
  timeoutSchema,
  timestampSchema,
  uniqueArray,
  unsupported,
} from './common.ts';
import { compileIpMatcher } from '../router/ip.ts';
import { checkUpstream } from './upstream.ts';
import { exprSchema } from './expr.ts';

export const HTTP_METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS', 'CONNECT', 'TRACE', 'PURGE'] as const;

function isIpOrCidr(s: string): boolean {
  try {
    compileIpMatcher([s]);
    return true;
  } catch {
    return false;
  }
}
const remoteAddrSchema = v.pipe(v.string(), v.check(isIpOrCidr, 'expected an IPv4 or IPv6 address or CIDR'));

/** APISIX's route schema (schema_def.lua `route`), limited to what fngate implements. */
export const routeSchema = v.strictObject({
  id: v.optional(idSchema),
  name: v.optional(nameSchema),
  desc: v.optional(descSchema),
  labels: v.optional(labelsSchema),
  create_time: v.optional(timestampSchema),
  update_time: v.optional(timestampSchema),
  uri: v.optional(v.pipe(v.string(), v.minLength(1), v.maxLength(4096))),
  uris: v.optional(v.pipe(uniqueArray(v.pipe(v.string(), v.minLength(1), v.maxLength(4096))), v.minLength(1))),
  priority: v.optional(v.pipe(v.number(INTEGER), v.integer())),
  methods: v.optional(uniqueArray(v.picklist(HTTP_METHODS))),
  host: v.optional(hostSchema),
  hosts: v.optional(v.pipe(uniqueArray(hostSchema), v.minLength(1))),
  remote_addr: v.optional(remoteAddrSchema),
  remote_addrs: v.optional(v.pipe(uniqueArray(remoteAddrSchema), v.minLength(1))),
  plugins: v.optional(safeRecord(v.string(), v.unknown())),
  upstream: v.optional(v.unknown()),
  upstream_id: v.optional(idSchema),
  timeout: v.optional(timeoutSchema),
  enable_websocket: v.optional(v.boolean()),
  status: v.optional(v.picklist([0, 1])),
  vars: v.optional(exprSchema),
  filter_func: v.optional(unsupported('it is Lua code and fngate runs no Lua')),
  script: v.optional(unsupported('it is Lua code and fngate runs no Lua')),
  service_id: v.optional(idSchema),
  plugin_config_id: v.optional(idSchema),
});

export type RouteConf = v.InferOutput<typeof routeSchema>;

/**
 * The route's own rules (schema, field combinations, inline upstream). Plugin configurations and
 * references (`upstream_id`, `service_id`, `plugin_config_id`) are checked by the caller, which knows the plugins
 * and the store.
 */
export function checkRoute(input: unknown): { ok: true; value: RouteConf } | { ok: false; message: string } {
  if (isPlainObject(input)) {
    // APISIX checks these before the schema.
    if (input.host !== undefined && input.hosts !== undefined) return { ok: false, message: 'only one of host or hosts is allowed' };
    if (input.remote_addr !== undefined && input.remote_addrs !== undefined) {
      return { ok: false, message: 'only one of remote_addr or remote_addrs is allowed' };
    }
  }
  const res = check(routeSchema, input);
  if (!res.ok) return { ok: false, message: `invalid configuration: ${res.message}` };
  const r = res.value;
  if ((r.uri === undefined) === (r.uris === undefined)) {
    return { ok: false, message: 'invalid configuration: exactly one of "uri" or "uris" is required' };
  }
  // APISIX's anyOf: a `plugin_config_id` alone is not enough, a `service_id` is (schema_def.lua `route`).
  if (r.plugins === undefined && r.upstream === undefined && r.upstream_id === undefined && r.service_id === undefined) {
    return {
      ok: false,
      message: 'invalid configuration: a route needs at least one of "plugins", "upstream", "upstream_id" or "service_id"',
    };
  }
  if (r.upstream !== undefined) {
    const up = checkUpstream(r.upstream);
    if (!up.ok) return { ok: false, message: `invalid configuration: property "upstream" validation failed: ${up.message}` };
  }
  return res;
}

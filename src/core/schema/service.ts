import * as v from 'valibot';
import {
  check,
  descSchema,
  hostSchema,
  idSchema,
  labelsSchema,
  nameSchema,
  pluginsSchema,
  timestampSchema,
  uniqueArray,
  unsupported,
} from './common.ts';
import { checkUpstream } from './upstream.ts';

/** APISIX's service schema (schema_def.lua `service`). Plugin confs and `upstream_id` are checked by the admin. */
export const serviceSchema = v.strictObject({
  id: v.optional(idSchema),
  name: v.optional(nameSchema),
  desc: v.optional(descSchema),
  labels: v.optional(labelsSchema),
  create_time: v.optional(timestampSchema),
  update_time: v.optional(timestampSchema),
  plugins: v.optional(pluginsSchema),
  upstream: v.optional(v.unknown()),
  upstream_id: v.optional(idSchema),
  script: v.optional(unsupported('it is Lua code and fngate runs no Lua')),
  enable_websocket: v.optional(v.boolean()),
  hosts: v.optional(v.pipe(uniqueArray(hostSchema), v.minLength(1))),
});

export type ServiceConf = v.InferOutput<typeof serviceSchema>;

export function checkService(input: unknown): { ok: true; value: ServiceConf } | { ok: false; message: string } {
  const res = check(serviceSchema, input);
  if (!res.ok) return { ok: false, message: `invalid configuration: ${res.message}` };
  if (res.value.upstream !== undefined) {
    const up = checkUpstream(res.value.upstream);
    // APISIX answers the upstream checker's own message here (services.lua), without a prefix.
    if (!up.ok) return { ok: false, message: `invalid configuration: property "upstream" validation failed: ${up.message}` };
  }
  return res;
}

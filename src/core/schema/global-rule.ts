import * as v from 'valibot';
import { idSchema, pluginsSchema, timestampSchema } from './common.ts';

/** APISIX's global_rule schema (schema_def.lua `global_rule`): `id` (from the URL) and `plugins` required. */
export const globalRuleSchema = v.strictObject({
  id: idSchema,
  create_time: v.optional(timestampSchema),
  update_time: v.optional(timestampSchema),
  plugins: pluginsSchema,
});

import * as v from 'valibot';
import { descSchema, idSchema, labelsSchema, pluginsSchema, timestampSchema } from './common.ts';

/** APISIX's plugin_config schema (schema_def.lua `plugin_config`): `id` (from the URL) and `plugins` required. */
export const pluginConfigSchema = v.strictObject({
  id: idSchema,
  name: v.optional(v.string()),
  desc: v.optional(descSchema),
  labels: v.optional(labelsSchema),
  create_time: v.optional(timestampSchema),
  update_time: v.optional(timestampSchema),
  plugins: pluginsSchema,
});

import * as v from 'valibot';
import { descSchema, idSchema, labelsSchema, nameSchema, pluginsSchema, timestampSchema } from './common.ts';

/** APISIX's consumer username: the consumer's key (`/apisix/consumers/<username>`). */
export const USERNAME_PATTERN = /^[a-zA-Z0-9_-]+$/;

/** APISIX's consumer schema (schema_def.lua `consumer`). Plugin confs are checked with their consumer schema. */
export const consumerSchema = v.strictObject({
  id: v.optional(idSchema),
  username: v.pipe(v.string(), v.minLength(1), v.maxLength(256), v.regex(USERNAME_PATTERN)),
  desc: v.optional(descSchema),
  labels: v.optional(labelsSchema),
  create_time: v.optional(timestampSchema),
  update_time: v.optional(timestampSchema),
  group_id: v.optional(idSchema),
  plugins: v.optional(pluginsSchema),
});

/** APISIX's credential schema (schema_def.lua `credential`): at most one plugin, which must be an auth plugin. */
export const credentialSchema = v.strictObject({
  id: v.optional(
    v.union([
      idSchema,
      v.pipe(v.string(), v.minLength(15), v.maxLength(128), v.regex(/^[a-zA-Z0-9_-]+\/credentials\/[a-zA-Z0-9_.-]+$/)),
    ]),
  ),
  name: v.optional(nameSchema),
  desc: v.optional(descSchema),
  labels: v.optional(labelsSchema),
  create_time: v.optional(timestampSchema),
  update_time: v.optional(timestampSchema),
  plugins: v.optional(
    v.pipe(
      pluginsSchema,
      v.check((p) => Object.keys(p).length <= 1, 'expect object to have at most 1 properties'),
    ),
  ),
});

/** APISIX's consumer_group schema (schema_def.lua `consumer_group`): `id` (from the URL) and `plugins` required. */
export const consumerGroupSchema = v.strictObject({
  id: idSchema,
  name: v.optional(nameSchema),
  desc: v.optional(descSchema),
  labels: v.optional(labelsSchema),
  create_time: v.optional(timestampSchema),
  update_time: v.optional(timestampSchema),
  plugins: pluginsSchema,
});

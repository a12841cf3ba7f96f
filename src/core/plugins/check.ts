import * as v from 'valibot';
import { check, isPlainObject } from '../schema/common.ts';
import { exprSchema } from '../schema/expr.ts';
import { INTEGER } from '../schema/format.ts';
import type { PluginRegistry } from './index.ts';

/** What the runtime's forwarding client can do; a config that needs more is refused rather than silently weakened. */
export interface Capabilities {
  /** Runtime name for messages, e.g. `workerd`. */
  runtime: string;
  /** Can skip TLS certificate verification per request (`ssl_verify: false`). */
  tlsVerifyOff: boolean;
}

export const FULL_CAPABILITIES: Capabilities = { runtime: 'node', tlsVerifyOff: true };


/** `_meta` APISIX injects into every plugin's schema (the parts fngate honours; `pre_function` is Lua). */
export const metaSchema = v.strictObject({
  disable: v.optional(v.boolean()),
  priority: v.optional(v.pipe(v.number(INTEGER), v.integer())),
  filter: v.optional(exprSchema),
  error_response: v.optional(v.union([v.string(), v.record(v.string(), v.unknown())])),
});

export type PluginMeta = v.InferOutput<typeof metaSchema>;

export interface PluginCheck {
  ok: boolean;
  message?: string;
}

/**
 * Check one plugin configuration as the Admin API does. Returns APISIX's messages:
 * `unknown plugin [x]`, `failed to check the configuration of plugin x err: ...`.
 */
export function checkPluginConf(
  registry: PluginRegistry,
  name: string,
  conf: unknown,
  caps: Capabilities = FULL_CAPABILITIES,
): PluginCheck {
  const plugin = registry.get(name);
  if (!plugin) return { ok: false, message: `unknown plugin [${name}]` };
  if (!isPlainObject(conf)) return { ok: false, message: `invalid plugin conf ${JSON.stringify(conf)} for plugin [${name}]` };
  const { _meta, ...rest } = conf;
  if (_meta !== undefined) {
    const meta = check(metaSchema, _meta);
    if (!meta.ok) return { ok: false, message: `failed to check the configuration of plugin ${name} err: property "_meta" validation failed: ${meta.message}` };
  }
  const res = check(plugin.schema, rest);
  if (!res.ok) return { ok: false, message: `failed to check the configuration of plugin ${name} err: ${res.message}` };
  if (rest.ssl_verify === false && !caps.tlsVerifyOff) {
    return {
      ok: false,
      message: `failed to check the configuration of plugin ${name} err: "ssl_verify": false is not supported on ${caps.runtime}: its fetch always verifies TLS certificates`,
    };
  }
  return { ok: true };
}

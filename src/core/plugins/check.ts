import * as v from 'valibot';
import { check, isPlainObject, safeRecord } from '../schema/common.ts';
import { exprSchema } from '../schema/expr.ts';
import { INTEGER } from '../schema/format.ts';
import type { PluginRegistry } from './index.ts';

/** `_meta` APISIX injects into every plugin's schema (the parts fngate honours; `pre_function` is Lua). */
export const metaSchema = v.strictObject({
  disable: v.optional(v.boolean()),
  priority: v.optional(v.pipe(v.number(INTEGER), v.integer())),
  filter: v.optional(exprSchema),
  error_response: v.optional(v.union([v.string(), safeRecord(v.string(), v.unknown())])),
});

export type PluginMeta = v.InferOutput<typeof metaSchema>;

/** What the runtime's forwarding client can do; a config that needs more is refused rather than silently weakened. */
export interface Capabilities {
  /** Runtime name for messages, e.g. `workerd`. */
  runtime: string;
  /** Can skip TLS certificate verification per request (`ssl_verify: false`). */
  tlsVerifyOff: boolean;
  /** Can close a kept-alive upstream connection after N requests (upstream `keepalive_pool.requests`). */
  keepaliveRequests: boolean;
  /** Can present a client certificate to an https upstream (upstream `tls`); undefined: yes. */
  upstreamClientCert?: boolean;
  /**
   * Sends the Host a plugin set (proxy-rewrite `host`, `pass_host: rewrite`); undefined: yes. Workers' fetch always
   * sends the URL's authority, so what signs the Host (aws-lambda's SigV4) must sign that one there.
   */
  hostHeader?: boolean;
  /**
   * Why a rate-limit `policy` (`local`, `redis`, `redis-cluster`) cannot run here, or undefined when it can (set by
   * the gateway from its limit backends; undefined: every policy runs).
   */
  limitPolicyRefusal?: (policy: string) => string | undefined;
}

export const FULL_CAPABILITIES: Capabilities = { runtime: 'node', tlsVerifyOff: true, keepaliveRequests: true };

/**
 * What an upstream asks for that this runtime's forwarding client cannot do, in the Admin API's words, or undefined.
 * `upstream` is a checked upstream object (inline in a route or service, or `/upstreams/<id>`).
 */
export function upstreamCapabilityProblem(upstream: unknown, caps: Capabilities): string | undefined {
  const tls = isPlainObject(upstream) ? upstream.tls : undefined;
  if (isPlainObject(tls) && caps.upstreamClientCert === false && (tls.client_cert !== undefined || tls.client_cert_id !== undefined)) {
    return `property "tls" validation failed: client certificates to upstreams are not supported on ${caps.runtime}: its fetch presents one only through an mtls_certificates binding made at deploy time`;
  }
  const pool = isPlainObject(upstream) ? upstream.keepalive_pool : undefined;
  if (isPlainObject(pool) && pool.requests !== undefined && !caps.keepaliveRequests) {
    return `property "keepalive_pool" validation failed: "requests" is not supported on ${caps.runtime}: its fetch cannot close a connection after a number of requests`;
  }
  return undefined;
}

export interface PluginCheck {
  ok: boolean;
  message?: string;
}

/**
 * Which of a plugin's schemas a conf is checked with (APISIX `schema_type`): `route` for a plugin on a route,
 * service, plugin_config, global rule or consumer group; `consumer` for a consumer's or a credential's conf (an
 * auth plugin's `consumerSchema`, else its schema); `metadata` for `plugin_metadata/<name>`.
 */
export type SchemaType = 'route' | 'consumer' | 'metadata';

/**
 * Check one plugin configuration as the Admin API does. Returns APISIX's messages:
 * `unknown plugin [x]`, `failed to check the configuration of plugin x err: ...`.
 * A `metadata` conf carries no `_meta` and is checked with the plugin's `metadataSchema` (the caller refuses a
 * plugin without one).
 */
export function checkPluginConf(
  registry: PluginRegistry,
  name: string,
  conf: unknown,
  caps: Capabilities = FULL_CAPABILITIES,
  schemaType: SchemaType = 'route',
): PluginCheck {
  const plugin = registry.get(name);
  if (!plugin) return { ok: false, message: `unknown plugin [${name}]` };
  if (!isPlainObject(conf))
    return { ok: false, message: `invalid plugin conf ${JSON.stringify(conf)} for plugin [${name}]` };
  if (schemaType === 'metadata') {
    const res = check(plugin.metadataSchema ?? v.looseObject({}), conf);
    return res.ok ? { ok: true } : { ok: false, message: res.message };
  }
  const { _meta, ...rest } = conf;
  if (_meta !== undefined) {
    const meta = check(metaSchema, _meta);
    if (!meta.ok)
      return {
        ok: false,
        message: `failed to check the configuration of plugin ${name} err: property "_meta" validation failed: ${meta.message}`,
      };
  }
  const schema = schemaType === 'consumer' && plugin.consumerSchema ? plugin.consumerSchema : plugin.schema;
  const res = check(schema, rest);
  if (!res.ok) return { ok: false, message: `failed to check the configuration of plugin ${name} err: ${res.message}` };
  if (rest.ssl_verify === false && !caps.tlsVerifyOff) {
    return {
      ok: false,
      message: `failed to check the configuration of plugin ${name} err: "ssl_verify": false is not supported on ${caps.runtime}: its fetch always verifies TLS certificates`,
    };
  }
  const refusal = plugin.checkRuntime?.(rest, caps);
  if (refusal) return { ok: false, message: `failed to check the configuration of plugin ${name} err: ${refusal}` };
  return { ok: true };
}

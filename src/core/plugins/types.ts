import type * as v from 'valibot';
import type { Logger, Middleware } from '../context.ts';

/**
 * A plugin is one file: a name, a priority, a valibot schema checked when the config is written, and a
 * factory that turns one validated configuration into a middleware, once per config snapshot.
 * Middlewares run by priority, highest first; a plugin answers by returning a Response without calling
 * `next` (as `openfunction` does), or wraps `next` to act before and after the rest of the chain.
 */
export interface PluginDefinition<C = unknown> {
  name: string;
  priority: number;
  version: number;
  /** The configuration schema; defaults are applied when the snapshot is compiled, never stored. */
  schema: v.GenericSchema<unknown, C>;
  /**
   * `auth`: an authentication plugin (APISIX `type = 'auth'`), the only kind a credential may carry.
   */
  type?: 'auth';
  /** Schema of a consumer's or credential's conf of this plugin (APISIX `consumer_schema`); else `schema`. */
  consumerSchema?: v.GenericSchema;
  /** Schema of `plugin_metadata/<name>` (APISIX `metadata_schema`); a plugin without one has no metadata. */
  metadataSchema?: v.GenericSchema;
  /**
   * The consumer-level attribute that identifies a credential (key-auth `key`, basic-auth `username`, jwt-auth
   * `key`, hmac-auth `key_id`): two consumers or credentials may not share a value (Admin API duplicate check).
   */
  consumerKey?: string;
  /** Dotted paths of secret fields: encrypted at rest when a key is configured, never logged. */
  secretFields?: readonly string[];
  /**
   * A plugin that guards access (authentication, rate limits, IP rules). A route whose stored config
   * names an unknown plugin of this kind is not served without it (503), see docs.
   */
  security?: boolean;
  create(conf: C, env: PluginEnv): Middleware;
}

export interface PluginEnv {
  logger: Logger;
  routeId: string;
}

// biome-ignore lint/suspicious/noExplicitAny: a registry holds plugins of every configuration type.
export type AnyPlugin = PluginDefinition<any>;

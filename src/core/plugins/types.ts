import type * as v from 'valibot';
import type { Logger, RequestContext } from '../context.ts';
import type { LimitBackends } from '../limits/backend.ts';
import type { Capabilities } from './check.ts';
import type { Observability } from '../observability/prometheus.ts';

/**
 * A plugin is one file: a name, a priority, a valibot schema checked when the config is written, and a factory
 * that turns one validated configuration into a {@link PluginInstance}: handlers for the phases it acts in.
 *
 * The phases and their order are APISIX's (apisix-wave2.md §1.1): for a matched route, global rules' `rewrite`,
 * then the route's `rewrite` (auth plugins attach a consumer here), consumer merge, global `access`, route
 * `access`, `beforeProxy`, the call upstream (or to a function: a plugin's `proxy`), then for EVERY answer (also
 * early exits, 404s and 5xx) `headerFilter`, `bodyFilter` and `log`, global rules first. Within a phase, plugins run
 * by priority, highest first (`_meta.priority` reorders).
 */
export interface PluginDefinition<C = unknown> {
  name: string;
  priority: number;
  version: number;
  /** The configuration schema; defaults are applied when the snapshot is compiled, never stored. */
  schema: v.GenericSchema<unknown, C>;
  /**
   * `auth`: an authentication plugin (APISIX `type = 'auth'`), the only kind a credential may carry. It identifies a
   * consumer in `rewrite`.
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
  /** The same for `plugin_metadata/<name>` (APISIX: the `encrypt_fields` of its `metadata_schema`). */
  metadataSecretFields?: readonly string[];
  /**
   * `prefer_route` (APISIX `run_policy`): the global rule's instance is skipped for a route that has the plugin
   * itself (prometheus).
   */
  runPolicy?: 'prefer_route';
  /**
   * A check of a valid conf against what this runtime can do (a limit `policy` it has no backend for): the reason
   * to refuse it (400 from the Admin API; the owner is not served when it comes from the store), or undefined.
   */
  checkRuntime?(conf: Record<string, unknown>, caps: Capabilities): string | undefined;
  create(conf: C, env: PluginEnv): PluginInstance;
}

export interface PluginEnv {
  logger: Logger;
  /**
   * Key of the object that owns this configuration (`/apisix/routes/1`, `/apisix/services/s`,
   * `/apisix/consumers/jack`, `/apisix/global_rules/1`, ...: APISIX `_meta.parent.resource_key`). State that must
   * outlive a snapshot (counters) is keyed by it, so that editing an unrelated route resets nothing.
   */
  ownerKey: string;
  /**
   * The gateway's rate-limit state (limit-count, limit-req, limit-conn): made once per gateway and shared by every
   * snapshot, so counters survive recompiles. `local` is this process's memory (expired windows evicted); `redis`
   * is the runtime's Redis client when it has one (GatewayOptions.limits). Key state by {@link ownerKey}, a hash
   * of the conf and the client's key, never by the instance.
   */
  limits: LimitBackends;
  /** The gateway's metrics and loggers (prometheus counts here); undefined outside a gateway. */
  obs?: Observability;
  /** False when the forwarder sends the URL's authority as Host whatever a plugin set (Capabilities.hostHeader). */
  hostHeader?: boolean;
}

/**
 * What a phase handler may return: nothing to go on, or a Response to end the request here (APISIX
 * `core.response.exit`; build one with `pluginExit`). The response phases still run for it.
 */
export type PhaseResult = Response | undefined;
export type PhaseHandler = (ctx: RequestContext) => PhaseResult | Promise<PhaseResult>;

/**
 * The answer on its way to the client, as the header_filter phase sees it: status and headers can be changed in
 * place, the body replaced.
 */
export interface ResponseHead {
  status: number;
  readonly headers: Headers;
  /** Replace the body (the headers that described the old one, Content-Length included, are the caller's job). */
  setBody(body: BodyInit | null): void;
}

/** One configured plugin, compiled once per configuration (and kept while the configuration is unchanged). */
export interface PluginInstance {
  rewrite?: PhaseHandler;
  access?: PhaseHandler;
  beforeProxy?: PhaseHandler;
  /**
   * Make the call upstream instead of the route's upstream (the serverless plugins: openfunction). The first
   * plugin by priority that has it makes the call; the answer goes through the response phases like any other.
   */
  proxy?: (ctx: RequestContext) => Promise<Response>;
  /** Change the answer's status and headers, or replace its body. */
  headerFilter?: (ctx: RequestContext, res: ResponseHead) => void;
  /**
   * Transform the body as it streams: called for each chunk, then once with `last` true and an empty chunk.
   * Returns what to send instead (undefined: the chunk as it is).
   */
  bodyFilter?: (ctx: RequestContext, chunk: Uint8Array, last: boolean) => Uint8Array | undefined;
  /** After the answer was sent (or the client went away). Must not throw; errors are logged. */
  log?: (ctx: RequestContext) => void;
}

// biome-ignore lint/suspicious/noExplicitAny: a registry holds plugins of every configuration type.
export type AnyPlugin = PluginDefinition<any>;

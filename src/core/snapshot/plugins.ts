/**
 * Plugin configurations → compiled plugins, for every kind of owner (route, service, plugin_config, global rule,
 * consumer, consumer group). An instance is made once per (owner, plugin, configuration) and kept across
 * snapshots while that stays the same, so a service's plugins are made once for all its routes, and an edit
 * elsewhere leaves them (and whatever they hold) alone.
 */
import * as v from 'valibot';
import type { Logger } from '../context.ts';
import { compileExpr } from '../expr.ts';
import { type Capabilities, checkPluginConf, type PluginMeta } from '../plugins/check.ts';
import { isSkippablePlugin, type PluginRegistry } from '../plugins/index.ts';
import type { CompiledPlugin } from '../plugins/pipeline.ts';
import type { LimitBackends } from '../limits/backend.ts';
import { createLimitBackends } from '../limits/redis.ts';
import type { Observability } from '../observability/prometheus.ts';
import { isPlainObject } from '../schema/common.ts';

export interface PluginCompileEnv {
  plugins: PluginRegistry;
  capabilities: Capabilities;
  logger: Logger;
  /** The gateway's rate-limit state (PluginEnv.limits); default: a local-only one made for this cache. */
  limits?: LimitBackends;
  obs?: Observability;
}

export interface PluginSet {
  plugins: CompiledPlugin[];
  /**
   * Plugins the owner names with `_meta.disable: true`: not run, yet they still replace a conf of the same name
   * from a lower object in a merge (a route disabling its service's key-auth, APISIX merge-route.t TEST 7-8).
   */
  disabled?: string[];
  /** Set when a plugin cannot be run and is not merely observing: the owner must answer 503 with this reason. */
  blocked?: string;
  /** Set when a configuration is invalid (written around the Admin API): the owner cannot be served. */
  error?: string;
}

/** A (owner, plugin, configuration) → compiled plugin cache, carried from one snapshot to the next. */
export class PluginCache {
  private prev = new Map<string, CompiledPlugin>();
  private next = new Map<string, CompiledPlugin>();

  private readonly limits: LimitBackends;

  constructor(private readonly env: PluginCompileEnv) {
    this.limits = env.limits ?? createLimitBackends();
  }

  /** Call once a snapshot is built: instances no owner used in it are dropped. */
  endBuild(): void {
    this.prev = this.next;
    this.next = new Map();
  }

  /**
   * Compile `plugins` of the owner stored at `ownerKey` (`label` names it in messages). Unknown plugins fail
   * closed (see plugins/index.ts); `skipAuth` leaves auth plugins out (a consumer's auth confs are credentials,
   * read by the auth plugins themselves, not run).
   */
  compile(ownerKey: string, label: string, plugins: unknown, problems: string[], skipAuth = false): PluginSet {
    if (plugins === undefined) return { plugins: [] };
    if (!isPlainObject(plugins)) return { plugins: [], error: `${label}: "plugins" is not an object` };
    const out: CompiledPlugin[] = [];
    const disabled: string[] = [];
    for (const [name, rawConf] of Object.entries(plugins)) {
      const meta = isPlainObject(rawConf) && isPlainObject(rawConf._meta) ? (rawConf._meta as PluginMeta) : undefined;
      if (meta?.disable === true) {
        disabled.push(name);
        continue;
      }
      const plugin = this.env.plugins.get(name);
      if (!plugin) {
        // Fail closed: only plugins known to merely observe traffic are skipped (plugins/index.ts).
        if (!isSkippablePlugin(name)) {
          problems.push(
            `${label}: plugin ${name} is not available in fngate; it answers 503 rather than run without it`,
          );
          return { plugins: [], blocked: `${label} needs plugin ${name}, which this gateway does not have` };
        }
        problems.push(`${label}: plugin ${name} is not available in fngate; it is skipped (it only observes traffic)`);
        continue;
      }
      if (skipAuth && plugin.type === 'auth') continue;
      const text = JSON.stringify(rawConf);
      const key = `${ownerKey}\u0000${name}\u0000${text}`;
      let compiled = this.next.get(key) ?? this.prev.get(key);
      if (compiled === undefined) {
        const checked = checkPluginConf(this.env.plugins, name, rawConf, this.env.capabilities);
        if (!checked.ok) return { plugins: [], error: `${label}: ${checked.message}` };
        const { _meta, ...conf } = rawConf as Record<string, unknown>;
        let instance: CompiledPlugin['instance'];
        try {
          instance = plugin.create(v.parse(plugin.schema, conf), {
            logger: this.env.logger,
            ownerKey,
            limits: this.limits,
            obs: this.env.obs,
            hostHeader: this.env.capabilities.hostHeader,
          });
        } catch (err) {
          return {
            plugins: [],
            error: `${label}: plugin ${name}: ${err instanceof Error ? err.message : String(err)}`,
          };
        }
        const filter = meta?.filter === undefined ? undefined : compileExpr(meta.filter);
        compiled = {
          name,
          priority: meta?.priority ?? plugin.priority,
          instance,
          filter: filter?.ok ? filter.expr : undefined,
          errorResponse: meta?.error_response,
          auth: plugin.type === 'auth',
          preferRoute: plugin.runPolicy === 'prefer_route',
        };
      }
      this.next.set(key, compiled);
      out.push(compiled);
    }
    return disabled.length ? { plugins: out, disabled } : { plugins: out };
  }
}

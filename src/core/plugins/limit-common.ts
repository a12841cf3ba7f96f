/**
 * What limit-count, limit-req and limit-conn share: APISIX's `key`/`key_type` resolution, the `policy` and redis
 * fields (apisix/utils/redis-schema.lua), the counter key (APISIX 3.15+ `gen_limit_key`: owner key + a hash of
 * the conf + the key value) and the choice of backend.
 */
import * as v from 'valibot';
import type { RequestContext } from '../context.ts';
import type { LimitBackend, LimitBackends, RedisConf } from '../limits/backend.ts';
import { confHash } from '../limits/backend.ts';
import { durationMs } from '../schema/common.ts';
import { INTEGER } from '../schema/format.ts';
import { compileTemplate } from '../template.ts';

export const POLICIES = ['local', 'redis', 'redis-cluster'] as const;

/** A count, window or connection number: fixed, or a `$var` template resolved per request. */
export type Amount = (ctx: RequestContext) => number | undefined;

/**
 * Compile a limit's amount (APISIX 3.15+ accepts `"$http_x_limit"` style strings for count/time_window/conn/burst):
 * a number is returned as is; a template is resolved per request and its number kept when `valid` says so, else
 * undefined (the plugin then refuses or passes, as its `allow_degradation` says).
 */
export function compileAmount(a: number | string, valid: (n: number) => boolean): Amount {
  if (typeof a === 'number') return () => a;
  const tpl = compileTemplate(a);
  return (ctx) => {
    const text = tpl(ctx.varReader).trim();
    const n = text === '' ? Number.NaN : Number(text);
    return valid(n) ? n : undefined;
  };
}

/** The redis fields every limit plugin accepts (both policies' sets; which are required depends on `policy`). */
export const redisFields = {
  redis_host: v.optional(v.pipe(v.string(), v.minLength(2))),
  redis_port: v.optional(v.pipe(v.number(INTEGER), v.integer(), v.minValue(1), v.maxValue(65535)), 6379),
  redis_username: v.optional(v.pipe(v.string(), v.minLength(1))),
  redis_password: v.optional(v.string()),
  redis_database: v.optional(v.pipe(v.number(INTEGER), v.integer(), v.minValue(0)), 0),
  redis_timeout: v.optional(durationMs(1), 1000),
  redis_ssl: v.optional(v.boolean(), false),
  redis_ssl_verify: v.optional(v.boolean(), false),
  redis_keepalive_timeout: v.optional(durationMs(1000), 10000),
  redis_keepalive_pool: v.optional(v.pipe(v.number(INTEGER), v.integer(), v.minValue(1)), 100),
  redis_cluster_nodes: v.optional(
    v.pipe(v.array(v.pipe(v.string(), v.minLength(2), v.maxLength(100))), v.minLength(1)),
  ),
  redis_cluster_name: v.optional(v.string()),
  redis_cluster_ssl: v.optional(v.boolean(), false),
  redis_cluster_ssl_verify: v.optional(v.boolean(), false),
};

export interface PolicyConf {
  policy: (typeof POLICIES)[number];
  redis_host?: string;
  redis_port: number;
  redis_username?: string;
  redis_password?: string;
  redis_database: number;
  redis_timeout: number;
  redis_ssl: boolean;
  redis_ssl_verify: boolean;
  redis_cluster_nodes?: string[];
  redis_cluster_name?: string;
  redis_cluster_ssl: boolean;
  redis_cluster_ssl_verify: boolean;
}

/** APISIX's `if policy == redis then required redis_host` (and the cluster's pair), as an issue on `addIssue`. */
export function policyProblem(conf: { policy?: string; redis_host?: unknown; redis_cluster_nodes?: unknown; redis_cluster_name?: unknown }): string | undefined {
  if (conf.policy === 'redis' && conf.redis_host === undefined)
    return 'then clause did not match: property "redis_host" is required';
  if (conf.policy === 'redis-cluster') {
    if (conf.redis_cluster_nodes === undefined) return 'then clause did not match: property "redis_cluster_nodes" is required';
    if (conf.redis_cluster_name === undefined) return 'then clause did not match: property "redis_cluster_name" is required';
  }
  return undefined;
}

export const SECRET_FIELDS = ['redis_password'] as const;

/**
 * The backend a conf's `policy` names. Throws (the owner cannot be served; the Admin API refuses it through
 * {@link policyRefusal}) when this runtime cannot honour it.
 */
export function backendFor(conf: PolicyConf, limits: LimitBackends): LimitBackend {
  const refused = policyRefusal(conf.policy, limits);
  if (refused) throw new Error(refused);
  if (conf.policy === 'local') return limits.local;
  const redis: RedisConf =
    conf.policy === 'redis'
      ? {
          cluster: false,
          nodes: [`${conf.redis_host}:${conf.redis_port}`],
          username: conf.redis_username,
          password: conf.redis_password,
          database: conf.redis_database,
          timeoutMs: conf.redis_timeout,
          ssl: conf.redis_ssl,
          sslVerify: conf.redis_ssl_verify,
        }
      : {
          cluster: true,
          nodes: conf.redis_cluster_nodes ?? [],
          password: conf.redis_password,
          database: 0,
          timeoutMs: conf.redis_timeout,
          ssl: conf.redis_cluster_ssl,
          sslVerify: conf.redis_cluster_ssl_verify,
        };
  return limits.redis!(redis);
}

/** Why this runtime cannot run a conf with `policy` (undefined: it can). */
export function policyRefusal(policy: string, limits: LimitBackends): string | undefined {
  if (policy === 'local') return limits.localRefused;
  if (!limits.redis) return `policy "${policy}" is not available on this runtime (no Redis client)`;
  return undefined;
}

/** A compiled `key`/`key_type`: the client's key value for a request (APISIX: falls back to `remote_addr`). */
export type KeyOf = (ctx: RequestContext) => string;

export function compileKey(key: string, keyType: 'var' | 'var_combination' | 'constant'): KeyOf {
  const fallback = (ctx: RequestContext) => String(ctx.getVar('remote_addr') ?? '');
  if (keyType === 'constant') return () => key;
  if (keyType === 'var') {
    return (ctx) => {
      const value = ctx.getVar(key);
      return value === undefined || value === null ? fallback(ctx) : String(value);
    };
  }
  const tpl = compileTemplate(key);
  return (ctx) => {
    // APISIX resolve_var: no variable resolved at all → nil → remote_addr.
    let resolved = 0;
    const out = tpl((name) => {
      const value = ctx.getVar(name);
      if (value !== undefined && value !== null) resolved++;
      return value;
    });
    return resolved === 0 ? fallback(ctx) : out;
  };
}

/**
 * The prefix of every counter key of one conf: `<plugin>:<owner key>:<hash of the conf>:` (APISIX
 * `gen_limit_key`), or `<plugin>:<group>:` for a limit-count `group`.
 */
export function counterPrefix(plugin: string, ownerKey: string, conf: unknown, group?: string): string {
  if (group !== undefined) return `${plugin}:group:${group}:${confHash(stableJson(conf))}:`;
  return `${plugin}:${ownerKey}:${confHash(stableJson(conf))}:`;
}

/** JSON with object keys sorted, so that a conf's hash does not depend on the order its fields were written in. */
function stableJson(x: unknown): string {
  if (Array.isArray(x)) return `[${x.map(stableJson).join(',')}]`;
  if (x !== null && typeof x === 'object') {
    const keys = Object.keys(x).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${stableJson((x as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  return JSON.stringify(x) ?? 'null';
}

/** The longest a delayed request waits (limit-req, limit-conn), whatever the conf says. */
export const MAX_DELAY_MS = 60_000;

/**
 * Waits `ms` (at most {@link MAX_DELAY_MS}); resolves false early when the client went away, so a delayed request
 * holds nothing for a client that left.
 */
export function delay(ctx: RequestContext, ms: number): Promise<boolean> {
  const signal = ctx.clientSignal();
  if (signal?.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const done = (ok: boolean) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      resolve(ok);
    };
    const onAbort = () => done(false);
    const timer = setTimeout(() => done(true), Math.min(ms, MAX_DELAY_MS));
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** The answer to a client that went away while delayed (nginx logs 499; nobody reads it). */
export const clientGone = () => new Response(null, { status: 499 });

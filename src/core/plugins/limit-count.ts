import * as v from 'valibot';
import { scaledText } from '../number-text.ts';
import type { RequestContext } from '../context.ts';
import { pluginExit } from '../errors.ts';
import type { CountDecision, LimitBackend } from '../limits/backend.ts';
import { MAX_DURATION_S } from '../schema/common.ts';
import { INTEGER } from '../schema/format.ts';
import { compileTemplate } from '../template.ts';
import {
  type Amount,
  compileAmount,
  backendFor,
  compileKey,
  counterPrefix,
  type KeyOf,
  POLICIES,
  type PolicyConf,
  policyProblem,
  redisFields,
  SECRET_FIELDS,
} from './limit-common.ts';
import type { PluginDefinition } from './types.ts';

/** A count or a time window: a positive integer, or (APISIX 3.16+) a `$var` template resolved per request. */
const amount = (max: number) =>
  v.union([v.pipe(v.number(INTEGER), v.integer(), v.gtValue(0), v.maxValue(max)), v.string()]);

const ruleSchema = v.object({
  count: amount(Number.MAX_SAFE_INTEGER),
  time_window: amount(MAX_DURATION_S),
  key: v.string(),
  header_prefix: v.optional(v.string()),
});

const schema = v.pipe(
  v.object({
    count: v.optional(amount(Number.MAX_SAFE_INTEGER)),
    time_window: v.optional(amount(MAX_DURATION_S)),
    window_type: v.optional(v.picklist(['fixed', 'sliding']), 'fixed'),
    rules: v.optional(v.array(ruleSchema)),
    group: v.optional(v.string()),
    key: v.optional(v.string(), 'remote_addr'),
    key_type: v.optional(v.picklist(['var', 'var_combination', 'constant']), 'var'),
    rejected_code: v.optional(v.pipe(v.number(INTEGER), v.integer(), v.minValue(200), v.maxValue(599)), 503),
    rejected_msg: v.optional(v.pipe(v.string(), v.minLength(1))),
    policy: v.optional(v.picklist(POLICIES), 'local'),
    allow_degradation: v.optional(v.boolean(), false),
    show_limit_quota_header: v.optional(v.boolean(), true),
    sync_interval: v.optional(v.number(), -1),
    ...redisFields,
  }),
  v.rawCheck(({ dataset, addIssue }) => {
    if (!dataset.typed) return;
    const c = dataset.value;
    const simple = c.count !== undefined || c.time_window !== undefined;
    // APISIX: oneOf [{required: [count, time_window]}, {required: [rules]}], then its own clearer messages.
    if (simple && c.rules !== undefined) {
      addIssue({ message: 'count/time_window and rules cannot be specified at the same time' });
      return;
    }
    if (c.rules === undefined && (c.count === undefined || c.time_window === undefined)) {
      addIssue({ message: 'value should match only one schema, but matches none' });
      return;
    }
    if (c.group !== undefined && c.rules !== undefined) {
      addIssue({ message: 'group and rules cannot be specified at the same time' });
      return;
    }
    const seen = new Set<string>();
    for (const r of c.rules ?? []) {
      if (seen.has(r.key)) {
        addIssue({ message: `duplicate key '${r.key}' in rules` });
        return;
      }
      seen.add(r.key);
    }
    if (c.policy !== 'local' && c.sync_interval !== -1) {
      if (c.sync_interval < 0.1) addIssue({ message: 'sync_interval should not be smaller than 0.1' });
      else if (typeof c.time_window === 'number' && c.sync_interval >= c.time_window)
        addIssue({ message: 'sync_interval should be smaller than time_window' });
      return;
    }
    const problem = policyProblem(c);
    if (problem) addIssue({ message: problem });
  }),
);

type Conf = v.InferOutput<typeof schema>;

const HEADER_DEFAULTS = {
  limit_header: 'X-RateLimit-Limit',
  remaining_header: 'X-RateLimit-Remaining',
  reset_header: 'X-RateLimit-Reset',
};

const metadataSchema = v.object({
  limit_header: v.optional(v.string(), HEADER_DEFAULTS.limit_header),
  remaining_header: v.optional(v.string(), HEADER_DEFAULTS.remaining_header),
  reset_header: v.optional(v.string(), HEADER_DEFAULTS.reset_header),
});

/** A count or window: a positive number up to `max`. */
const positiveUpTo = (max: number) => (n: number) => Number.isFinite(n) && n > 0 && n <= max;

interface Rule {
  count: Amount;
  window: Amount;
  /** The key value; undefined: the rule is skipped for this request (a rules[] key that resolved to nothing). */
  key: (ctx: RequestContext) => string | undefined;
  /** `X-1-RateLimit-Limit` style prefix (rules), or undefined for APISIX's plain names. */
  headerPrefix?: string;
}

type HeaderSet = [string, string][];

/** Header names per metadata object (one per snapshot) and rule prefix, computed once. */
const namesCache = new WeakMap<object, Map<string | undefined, [string, string, string]>>();

function headerNames(ctx: RequestContext, prefix: string | undefined): [string, string, string] {
  const meta = (ctx.metadata.get('limit-count') as typeof HEADER_DEFAULTS | undefined) ?? HEADER_DEFAULTS;
  let byPrefix = namesCache.get(meta);
  if (!byPrefix) {
    byPrefix = new Map();
    namesCache.set(meta, byPrefix);
  }
  let names = byPrefix.get(prefix);
  if (!names) {
    names = [meta.limit_header, meta.remaining_header, meta.reset_header];
    // APISIX: base:gsub("RateLimit%-", prefix .. "-RateLimit-", 1)
    if (prefix !== undefined)
      names = names.map((n) => n.replace('RateLimit-', `${prefix}-RateLimit-`)) as [string, string, string];
    byPrefix.set(prefix, names);
  }
  return names;
}

/**
 * `limit-count` (APISIX priority 1002, access): at most `count` requests per `time_window` seconds per key
 * (`key`/`key_type`, default the client address), in a fixed window that starts with the first request or a
 * sliding one; with `rules`, several limits at once. Over the limit: `rejected_code` (503), with
 * `{"error_msg": rejected_msg}` when set. `X-RateLimit-Limit`/`-Remaining`/`-Reset` on every counted answer.
 * Counters are per owner (route, service, consumer, ...) and conf (PluginEnv.limits), or per `group`.
 */
export const limitCount: PluginDefinition<Conf> = {
  name: 'limit-count',
  priority: 1002,
  version: 0.5,
  schema: schema as v.GenericSchema<unknown, Conf>,
  metadataSchema,
  secretFields: SECRET_FIELDS,
  checkRuntime: (conf, caps) => caps.limitPolicyRefusal?.(typeof conf.policy === 'string' ? conf.policy : 'local'),
  create(conf, env) {
    const backend: LimitBackend = backendFor(conf as PolicyConf, env.limits);
    const prefix = counterPrefix('limit-count', env.ownerKey, conf, conf.group);
    const sliding = conf.window_type === 'sliding';
    let rules: Rule[];
    if (conf.rules === undefined) {
      const keyOf: KeyOf = compileKey(conf.key, conf.key_type);
      rules = [
        {
          count: compileAmount(conf.count!, positiveUpTo(Number.MAX_SAFE_INTEGER)),
          window: compileAmount(conf.time_window!, positiveUpTo(MAX_DURATION_S)),
          key: keyOf,
        },
      ];
    } else {
      rules = conf.rules.map((r, i) => {
        const tpl = compileTemplate(r.key);
        return {
          count: compileAmount(r.count, positiveUpTo(Number.MAX_SAFE_INTEGER)),
          window: compileAmount(r.time_window, positiveUpTo(MAX_DURATION_S)),
          // APISIX: a rule key is resolved with resolve_var; when no variable in it resolved, the rule is skipped.
          key: (ctx: RequestContext) => {
            if (!r.key.includes('$')) return r.key;
            let resolved = 0;
            const out = tpl((name) => {
              const value = ctx.getVar(name);
              if (value !== undefined && value !== null) resolved++;
              return value;
            });
            return resolved === 0 ? undefined : out;
          },
          headerPrefix: r.header_prefix ?? String(i + 1),
        };
      });
    }
    const showHeaders = conf.show_limit_quota_header;
    const degrade = conf.allow_degradation;
    const rejected = () =>
      pluginExit(conf.rejected_code, conf.rejected_msg === undefined ? undefined : { error_msg: conf.rejected_msg });
    const failed = (ctx: RequestContext, why: string, body?: unknown) => {
      env.logger.error('limit-count: cannot count the request', { route: ctx.routeId, error: why });
      return degrade ? undefined : pluginExit(500, body);
    };
    const self = {} as { headers?: true };
    const single = conf.rules === undefined ? rules[0] : undefined;

    /** Record a decision's headers; the rejection when it is one. */
    const decide = (ctx: RequestContext, limit: number, rule: Rule, d: CountDecision): Response | undefined => {
      if (showHeaders) {
        const [l, r, s] = headerNames(ctx, rule.headerPrefix);
        let set = ctx.stateOf<HeaderSet>(self);
        if (!set) {
          set = [];
          ctx.setStateOf(self, set);
        }
        // Floored to 2 decimals (APISIX 3.18); such a number prints the same in JavaScript as in Lua (%.14g).
        set.push(
          [l, String(limit)],
          [r, String(d.allowed ? d.remaining : 0)],
          [s, scaledText(Math.floor(d.resetS * 100), 2)],
        );
      }
      return d.allowed ? undefined : rejected();
    };

    const run = (
      ctx: RequestContext,
      keys: (string | undefined)[],
      from: number,
    ): Response | undefined | Promise<Response | undefined> => {
      for (let i = from; i < rules.length; i++) {
        const rule = rules[i]!;
        const limit = rule.count(ctx);
        const window = rule.window(ctx);
        if (limit === undefined || window === undefined)
          return failed(ctx, 'count or time_window does not resolve to a positive number');
        const keyValue = keys[i];
        if (keyValue === undefined) continue;
        // Different rules of one conf keep apart by their key (APISIX: rules' keys are unique).
        const key = `${prefix}${conf.rules ? `${i}:` : ''}${keyValue}`;
        let d: CountDecision | Promise<CountDecision>;
        try {
          d = backend.count(key, limit, window, sliding);
        } catch (err) {
          return failed(ctx, (err as Error).message, { error_msg: 'failed to limit count' });
        }
        if (d instanceof Promise) {
          return d.then(
            (res) => decide(ctx, limit, rule, res) ?? run(ctx, keys, i + 1),
            (err: Error) => failed(ctx, err.message, { error_msg: 'failed to limit count' }),
          );
        }
        const exit = decide(ctx, limit, rule, d);
        if (exit) return exit;
      }
      return undefined;
    };

    return {
      access(ctx) {
        if (single !== undefined) {
          // One limit (no `rules`): its key, or APISIX's 500 when it resolves to nothing.
          const k = single.key(ctx);
          if (k === undefined) return failed(ctx, 'no rule applies to the request');
          return run(ctx, [k], 0);
        }
        const keys = rules.map((r) => r.key(ctx));
        // APISIX: no rule whose key resolved → "failed to get rate limit rules" → 500 (or a pass).
        if (keys.every((k) => k === undefined)) return failed(ctx, 'no rule applies to the request');
        return run(ctx, keys, 0);
      },
      ...(showHeaders
        ? {
            headerFilter(ctx, head) {
              const set = ctx.stateOf<HeaderSet>(self);
              if (set) for (const [name, value] of set) head.headers.set(name, value);
            },
          }
        : {}),
    };
  },
};

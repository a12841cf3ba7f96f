import { RE2JS } from 're2js';
import * as v from 'valibot';
import type { RequestContext } from '../context.ts';
import { pluginExit } from '../errors.ts';
import { safeRecord } from '../schema/common.ts';
import { INTEGER } from '../schema/format.ts';
import type { PluginDefinition } from './types.ts';

/** APISIX's `origins_pattern`: `*`, `**`, `null`, or a comma list of `scheme://host[:port]`. */
const ORIGINS = /^(\*|\*\*|null|\w+:\/\/[^,]+(,\w+:\/\/[^,]+)*)$/;
const ALL_METHODS = 'GET,POST,PUT,DELETE,PATCH,HEAD,OPTIONS,CONNECT,TRACE';

const origins = v.pipe(v.string(), v.regex(ORIGINS));

/** Compiles a user regex with RE2 (linear time); throws with the reason. */
function compileRegex(pattern: string): RE2JS {
  try {
    return RE2JS.compile(pattern);
  } catch (err) {
    throw new Error(`invalid regex "${pattern}": ${(err as Error).message}`);
  }
}

const regexList = v.pipe(
  v.array(v.pipe(v.string(), v.minLength(1), v.maxLength(4096))),
  v.minLength(1),
  v.check((list) => new Set(list).size === list.length, 'expected unique items'),
  v.rawCheck(({ dataset, addIssue }) => {
    if (!dataset.typed) return;
    for (const re of dataset.value) {
      try {
        compileRegex(re);
      } catch (err) {
        addIssue({ message: (err as Error).message });
        return;
      }
    }
  }),
);

const keyList = v.pipe(
  v.array(v.pipe(v.string(), v.minLength(1), v.maxLength(4096))),
  v.minLength(1),
  v.check((list) => new Set(list).size === list.length, 'expected unique items'),
);

const schema = v.pipe(
  v.strictObject({
    allow_origins: v.optional(origins, '*'),
    allow_methods: v.optional(v.string(), '*'),
    allow_headers: v.optional(v.string(), '*'),
    expose_headers: v.optional(v.string()),
    max_age: v.optional(v.pipe(v.number(INTEGER), v.integer()), 5),
    allow_credential: v.optional(v.boolean(), false),
    allow_origins_by_regex: v.optional(regexList),
    allow_origins_by_metadata: v.optional(keyList),
    timing_allow_origins: v.optional(origins),
    timing_allow_origins_by_regex: v.optional(regexList),
  }),
  v.check(
    (c) =>
      !c.allow_credential ||
      ![
        c.allow_origins ?? '*',
        c.allow_methods ?? '*',
        c.allow_headers ?? '*',
        c.expose_headers,
        c.timing_allow_origins,
      ].includes('*'),
    "you can not set '*' for other option when 'allow_credential' is true",
  ),
);

type Conf = v.InferOutput<typeof schema>;

/** `plugin_metadata/cors`: named origin lists that `allow_origins_by_metadata` refers to. */
const metadataSchema = v.object({
  allow_origins: v.optional(safeRecord(v.string(), origins)),
});

/**
 * The origin one `allow_origins`-style value allows for a request Origin (APISIX `process_with_allow_origins`):
 * `**` → the Origin (or `*` without one); a comma list → the Origin when listed; anything else as it is (the
 * caller compares it with the Origin, {@link matches}).
 */
type OriginList = (origin: string | undefined) => string | undefined;

function originList(allow: string): OriginList {
  if (allow === '**') return (origin) => origin ?? '*';
  if (!allow.includes(',')) return () => allow;
  const set = new Set(allow.split(','));
  return (origin) => (origin !== undefined && set.has(origin) ? origin : undefined);
}

/** APISIX `match_origins`: the value allows this Origin. */
function matches(origin: string | undefined, allowed: string | undefined): boolean {
  return allowed === '*' || origin === allowed;
}

function regexOrigins(list: readonly string[]): OriginList {
  // APISIX joins the rules with `|` and searches the Origin (unanchored).
  const re = compileRegex(list.join('|'));
  return (origin) => (origin !== undefined && re.test(origin) ? origin : undefined);
}

/** Compiled metadata lists, per metadata object (one per config snapshot). */
const metadataLists = new WeakMap<object, Map<string, OriginList>>();

function metadataOrigins(
  keys: readonly string[] | undefined,
): ((ctx: RequestContext, origin: string | undefined) => string | undefined) | undefined {
  if (keys === undefined) return undefined;
  return (ctx, origin) => {
    const meta = ctx.metadata.get('cors');
    const map = meta?.allow_origins as Record<string, string> | undefined;
    if (!meta || !map) return undefined;
    let lists = metadataLists.get(meta);
    if (!lists) {
      lists = new Map();
      metadataLists.set(meta, lists);
    }
    for (const key of keys) {
      if (!Object.hasOwn(map, key)) continue;
      let list = lists.get(key);
      if (!list) {
        list = originList(map[key]!);
        lists.set(key, list);
      }
      if (matches(origin, list(origin))) return origin;
    }
    return undefined;
  };
}

/**
 * `cors` (APISIX priority 4000, rewrite + header_filter). Any OPTIONS request is answered 200 with an empty body
 * in rewrite (before auth plugins; never forwarded). On every answer (also 401s, 404s and 5xx) the allowed origin
 * is worked out as APISIX does (metadata lists, then `allow_origins_by_regex` or `allow_origins`, then metadata
 * again) and, when there is one, the `Access-Control-*` headers are set, replacing the upstream's; `Vary: Origin`
 * is appended whenever `allow_origins` is not `*`.
 */
export const cors: PluginDefinition<Conf> = {
  name: 'cors',
  priority: 4000,
  version: 0.1,
  schema: schema as v.GenericSchema<unknown, Conf>,
  metadataSchema,
  create(conf) {
    const local: OriginList = conf.allow_origins_by_regex
      ? regexOrigins(conf.allow_origins_by_regex)
      : originList(conf.allow_origins);
    const byMetadata = metadataOrigins(conf.allow_origins_by_metadata);
    const localAfterMetadata = conf.allow_origins !== '*';
    const timing: OriginList | undefined = conf.timing_allow_origins_by_regex
      ? regexOrigins(conf.timing_allow_origins_by_regex)
      : conf.timing_allow_origins !== undefined
        ? originList(conf.timing_allow_origins)
        : undefined;
    const vary = conf.allow_origins !== '*';
    const methods = conf.allow_methods === '**' ? ALL_METHODS : conf.allow_methods;
    const maxAge = String(conf.max_age);
    const expose = conf.expose_headers ? conf.expose_headers : undefined;
    const echoHeaders = conf.allow_headers === '**';
    const credential = conf.allow_credential;

    const allowedOrigin = (ctx: RequestContext, origin: string | undefined): string | undefined => {
      let allowed: string | undefined;
      let useLocal = true;
      if (byMetadata) {
        allowed = byMetadata(ctx, origin);
        useLocal = !matches(origin, allowed) && localAfterMetadata;
      }
      if (useLocal) allowed = local(origin);
      if (!matches(origin, allowed)) allowed = byMetadata?.(ctx, origin);
      return allowed;
    };

    const instance = {
      rewrite(ctx: RequestContext) {
        // The Origin as the client sent it, kept for the answer (a later plugin may change the request's).
        ctx.setStateOf(instance, { origin: ctx.header('origin') });
        if (ctx.method === 'OPTIONS') return pluginExit(200);
        return undefined;
      },
    };
    return {
      ...instance,
      headerFilter(ctx, head) {
        const origin = ctx.stateOf<{ origin: string | undefined }>(instance)?.origin;
        const h = head.headers;
        const allowed = allowedOrigin(ctx, origin);
        if (vary) h.append('vary', 'Origin');
        if (allowed !== undefined) {
          h.set('access-control-allow-origin', allowed);
          h.set('access-control-allow-methods', methods);
          h.set('access-control-max-age', maxAge);
          if (expose !== undefined) h.set('access-control-expose-headers', expose);
          if (echoHeaders) {
            const requested = ctx.request.headers.get('access-control-request-headers');
            if (requested === null) h.delete('access-control-allow-headers');
            else h.set('access-control-allow-headers', requested);
          } else {
            h.set('access-control-allow-headers', conf.allow_headers);
          }
          if (credential) h.set('access-control-allow-credentials', 'true');
        }
        if (timing) {
          const t = timing(origin);
          if (t !== undefined && matches(origin, t)) h.set('timing-allow-origin', t);
        }
      },
    };
  },
};

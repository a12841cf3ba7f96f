/**
 * `proxy-rewrite` (APISIX apisix/plugins/proxy-rewrite.lua, priority 1008, phase rewrite): rewrites what is sent
 * upstream: the path (`uri` with `$var` templates, or the first matching pair of `regex_uri`), the method, the
 * Host, and request headers (`add`, then `set`, then `remove`; the old flat form sets). The client's query string
 * is appended to the rewritten path's own. Everything is compiled when the config is; a request only resolves
 * templates and runs at most the `regex_uri` regexes (RE2: linear time).
 *
 * On a route whose call is a function (openfunction), the method, Host and headers apply but the path does not
 * change the function's URL (as in APISIX, where the function URL is `function_uri` plus the route's `*` tail).
 */
import * as v from 'valibot';
import type { RequestContext } from '../context.ts';
import { luaNumberToString } from '../expr.ts';
import { isPlainObject, safeRecord } from '../schema/common.ts';
import { compileTemplate, type Template } from '../template.ts';
import { encodePath } from '../upstream/path.ts';
import { type CompiledSub, compileSub } from './regex-sub.ts';
import type { PluginDefinition } from './types.ts';

const METHODS = [
  'GET',
  'POST',
  'PUT',
  'HEAD',
  'DELETE',
  'OPTIONS',
  'MKCOL',
  'COPY',
  'MOVE',
  'PROPFIND',
  'LOCK',
  'UNLOCK',
  'PATCH',
  'TRACE',
] as const;

type Scalar = string | number;
const NAME = /^[^:]+$/;
const scalar = v.union([v.string(), v.number()]);
const multi = v.union([v.string(), v.number(), v.pipe(v.array(scalar), v.minLength(1))]);
const nonEmpty = (o: object) => Object.keys(o).length > 0;
const namesMatch = (o: object) => Object.keys(o).every((k) => NAME.test(k));
const headerMap = v.pipe(
  safeRecord(v.string(), multi),
  v.check((o) => nonEmpty(o), 'expect object to have at least 1 properties'),
  v.check((o) => namesMatch(o), 'header names may not contain ":"'),
);

const newHeaders = v.pipe(
  v.strictObject({
    add: v.optional(headerMap),
    set: v.optional(headerMap),
    remove: v.optional(v.pipe(v.array(v.pipe(v.string(), v.regex(NAME))), v.minLength(1))),
  }),
  v.check((o) => nonEmpty(o), 'expect object to have at least 1 properties'),
);

/** lua-resty-core `validate_header_field`: visible ASCII but `:`. */
const validField = (s: string) =>
  s.length > 0 && [...s].every((c) => c.charCodeAt(0) > 32 && c.charCodeAt(0) < 127 && c !== ':');
/** `validate_header_value`: no control characters, ASCII only. */
const validValue = (x: string | number) =>
  typeof x !== 'string' || [...x].every((c) => c.charCodeAt(0) >= 32 && c.charCodeAt(0) < 127);

/** The old flat form `{name: value}` (= set), checked as APISIX's `check_set_headers`. */
const flatHeaders = v.pipe(
  safeRecord(v.string(), scalar),
  v.check((o) => nonEmpty(o), 'expect object to have at least 1 properties'),
  v.check((o) => Object.keys(o).every(validField), 'invalid field character in header'),
  v.check((o) => Object.values(o).every(validValue), 'invalid value character in header'),
);

/** New form when any of add/set/remove holds a table (APISIX `is_new_headers_conf`). */
const isNewForm = (h: unknown) =>
  isPlainObject(h) && ['add', 'set', 'remove'].some((k) => typeof h[k] === 'object' && h[k] !== null);

const headersSchema = v.union([
  v.pipe(v.unknown(), v.check(isNewForm), newHeaders),
  v.pipe(
    v.unknown(),
    v.check((h) => !isNewForm(h)),
    flatHeaders,
  ),
]);

function checkRegexUri(list: string[]): string | undefined {
  if (list.length % 2 !== 0) return 'The length of regex_uri should be an even number';
  for (let i = 0; i < list.length; i += 2) {
    try {
      compileSub(list[i]!, list[i + 1]!);
    } catch (err) {
      return `invalid regex_uri(${list[i]}, ${list[i + 1]}): ${(err as Error).message}`;
    }
  }
  return undefined;
}

const schema = v.pipe(
  v.unknown(),
  v.check((o) => !isPlainObject(o) || Object.keys(o).length > 0, 'expect object to have at least 1 properties'),
  v.strictObject({
    uri: v.optional(v.pipe(v.string(), v.minLength(1), v.maxLength(4096), v.regex(/^\/.*/))),
    method: v.optional(v.picklist(METHODS)),
    regex_uri: v.optional(v.pipe(v.array(v.string()), v.minLength(2))),
    host: v.optional(v.pipe(v.string(), v.regex(/^[0-9a-zA-Z-.]+(:\d{1,5})?$/))),
    headers: v.optional(headersSchema),
    use_real_request_uri_unsafe: v.optional(v.boolean(), false),
  }),
  // APISIX's check_schema: its message is not prefixed with the property.
  v.rawCheck(({ dataset, addIssue }) => {
    if (!dataset.typed || dataset.value.regex_uri === undefined) return;
    const message = checkRegexUri(dataset.value.regex_uri);
    if (message) addIssue({ message });
  }),
);

interface Conf {
  uri?: string;
  method?: (typeof METHODS)[number];
  regex_uri?: string[];
  host?: string;
  headers?:
    | Record<string, Scalar>
    | { add?: Record<string, Scalar | Scalar[]>; set?: Record<string, Scalar | Scalar[]>; remove?: string[] };
  use_real_request_uri_unsafe: boolean;
}

const str = (x: Scalar) => (typeof x === 'number' ? luaNumberToString(x) : x);
type HeaderOp = [name: string, values: Template[]];
const compileOps = (m: Record<string, Scalar | Scalar[]> | undefined): HeaderOp[] =>
  Object.entries(m ?? {}).map(([name, value]) => [
    name,
    (Array.isArray(value) ? value : [value]).map((x) => compileTemplate(str(x))),
  ]);

/** `?` in a variable's value in `uri` would start the query: escaped as APISIX's `escape_separator`. */
const escapeSeparator = (s: string) => s.replaceAll('?', '%3F');
/** Control characters (CR, LF, ...) in the query part, percent-encoded (APISIX `escape_uri_control_chars`). */
const CONTROL = /[\u0000-\u001f\u007f]/g;
const escapeControl = (s: string) =>
  s.replace(CONTROL, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`);

export const proxyRewrite: PluginDefinition<Conf> = {
  name: 'proxy-rewrite',
  priority: 1008,
  version: 0.1,
  schema: schema as v.GenericSchema<unknown, Conf>,
  create(conf) {
    const uri = conf.uri === undefined ? undefined : compileTemplate(conf.uri, { escape: escapeSeparator });
    const regexUri: CompiledSub[] = [];
    if (uri === undefined && conf.regex_uri) {
      for (let i = 0; i < conf.regex_uri.length; i += 2)
        regexUri.push(compileSub(conf.regex_uri[i]!, conf.regex_uri[i + 1]!));
    }
    const unsafe = conf.use_real_request_uri_unsafe;
    const rewritesPath = uri !== undefined || regexUri.length > 0 || unsafe;
    const h = conf.headers;
    const newForm = isNewForm(h);
    const add = newForm ? compileOps((h as { add?: Record<string, Scalar | Scalar[]> }).add) : [];
    const set = newForm
      ? compileOps((h as { set?: Record<string, Scalar | Scalar[]> }).set)
      : compileOps(h as Record<string, Scalar> | undefined);
    const remove = newForm ? ((h as { remove?: string[] }).remove ?? []) : [];
    const { method, host } = conf;
    // Per-request regex_uri captures, for the header templates.
    const capturesKey = {};

    const rewritePath = (ctx: RequestContext): void => {
      let target = unsafe ? (ctx.getVar('real_request_uri') as string) : (ctx.getVar('uri') as string);
      let separatorEscaped = false;
      if (uri !== undefined) {
        separatorEscaped = true;
        // With use_real_request_uri_unsafe the client's query is re-appended (APISIX 3.18, issue #12623).
        const q = unsafe ? target.indexOf('?') : -1;
        const clientQuery = q >= 0 ? target.slice(q + 1) : undefined;
        target = uri(ctx.varReader);
        if (clientQuery !== undefined) target += (target.includes('?') ? '&' : '?') + clientQuery;
      } else if (regexUri.length) {
        if (!target.includes('?')) separatorEscaped = true;
        for (const sub of regexUri) {
          const captures = sub.match(target);
          if (captures) {
            ctx.setStateOf(capturesKey, captures);
            target = sub.replace(target, false);
            break;
          }
        }
      }
      if (unsafe) {
        // The raw request target, not re-encoded (only control characters are, so none reach the request line).
        const q = target.indexOf('?');
        ctx.upstream.path = escapeControl(q < 0 ? target : target.slice(0, q));
        ctx.upstream.query = q < 0 ? '' : escapeControl(target.slice(q + 1));
        return;
      }
      const index = separatorEscaped ? target.indexOf('?') : -1;
      const args = ctx.query;
      if (index >= 0) {
        ctx.upstream.path = encodePath(target.slice(0, index));
        const own = escapeControl(target.slice(index + 1));
        ctx.upstream.query = args ? `${own}&${args}` : own;
      } else {
        ctx.upstream.path = encodePath(target);
        ctx.upstream.query = args;
      }
    };

    return {
      rewrite(ctx) {
        if (host !== undefined) ctx.upstream.host = host;
        if (rewritesPath) rewritePath(ctx);
        if (add.length || set.length || remove.length) {
          const captures = ctx.stateOf<(string | undefined)[]>(capturesKey);
          const vars = ctx.varReader;
          for (const [name, values] of add) for (const t of values) ctx.addHeader(name, t(vars, captures));
          for (const [name, values] of set) {
            const resolved = values.map((t) => t(vars, captures));
            // nginx: setting a request header to "" removes it (the flat form's way to remove one).
            ctx.setHeader(name, resolved.length === 1 && resolved[0] === '' ? null : resolved);
          }
          for (const name of remove) ctx.setHeader(name, null);
        }
        if (method !== undefined) ctx.upstream.method = method;
        return undefined;
      },
    };
  },
};

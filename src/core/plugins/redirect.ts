/**
 * `redirect` (APISIX apisix/plugins/redirect.lua, priority 900, phase rewrite): answers with a redirect instead of
 * serving the route.
 *
 * - `http_to_https: true`: a request that did not come over https (the `X-Forwarded-Proto` header, else the
 *   connection's scheme) gets `https://$host$request_uri`, 301 for GET and HEAD, 308 for other methods (`ret_code`
 *   is ignored). fngate serves no TLS port of its own, so the target has no port (APISIX adds
 *   `plugin_attr.redirect.https_port` or one of `apisix.ssl.listen`, which fngate does not have).
 * - `uri`: a template of request variables, `$name` or `${name}` (names of `[0-9a-zA-Z_]`, a missing variable
 *   is empty), `\$name` kept as it is, any other `$` literal and, as APISIX's tokenizer does, a backslash that
 *   starts none of these dropped.
 * - `regex_uri: [regex, template]`: the first match of `regex` in `$uri` is replaced by `template` (`$0`, `$1`,
 *   `${1}`, `$$` for a `$`); no match, no redirect (the route is served). The regex runs on RE2 (linear time),
 *   compiled when the config is written: PCRE-only constructs are refused.
 * - `encode_uri` percent-encodes the target before its `?` as nginx's `ngx_escape_uri` (space, `#`, `%`, `?`,
 *   controls and non-ASCII); `append_query_string` appends the request's query string.
 * The answer has a `Location` header, the status `ret_code` (default 302) and, for 301/302/303/307/308, nginx's
 * status page as the body.
 */
import * as v from 'valibot';
import { RE2JS } from 're2js';
import type { RequestContext } from '../context.ts';
import { pluginExit } from '../errors.ts';
import { luaNumberToString, MAX_REGEX_PROGRAM_SIZE } from '../expr.ts';
import { INTEGER } from '../schema/format.ts';
import { percentEncode, safeHeaderValue } from './answer.ts';
import type { PluginDefinition } from './types.ts';

/** APISIX's `reg`, the pattern `uri` must match (it fails only for a string of backslashes). */
const URI_PATTERN = /(\\\$[0-9a-zA-Z_]+)|\$\{([0-9a-zA-Z_]+)\}|\$([0-9a-zA-Z_]+)|(\$|[^$\\]+)/;

const REQUIRED_ONE_OF = ['uri', 'regex_uri', 'http_to_https'] as const;

const schema = v.pipe(
  v.strictObject({
    // APISIX: minimum 200, no maximum; a Response cannot have a status over 599.
    ret_code: v.optional(v.pipe(v.number(INTEGER), v.integer(), v.minValue(200), v.maxValue(599)), 302),
    uri: v.optional(v.pipe(v.string(), v.minLength(2), v.regex(URI_PATTERN))),
    regex_uri: v.optional(v.pipe(v.array(v.string()), v.minLength(2), v.maxLength(2))),
    http_to_https: v.optional(v.boolean()),
    encode_uri: v.optional(v.boolean(), false),
    append_query_string: v.optional(v.boolean(), false),
  }),
  v.rawCheck(({ dataset, addIssue }) => {
    if (!dataset.typed) return;
    // APISIX: oneOf [{required: [uri]}, {required: [regex_uri]}, {required: [http_to_https]}].
    const present: number[] = [];
    REQUIRED_ONE_OF.forEach((key, i) => {
      if (dataset.value[key] !== undefined) present.push(i + 1);
    });
    if (present.length === 0) addIssue({ message: 'value should match only one schema, but matches none' });
    else if (present.length > 1) {
      addIssue({ message: `value should match only one schema, but matches both schemas ${present[0]} and ${present[1]}` });
    }
  }),
  v.rawCheck(({ dataset, addIssue }) => {
    if (!dataset.typed || !dataset.value.regex_uri) return;
    const [pattern, replacement] = dataset.value.regex_uri as [string, string];
    const err = compileRegexUri(pattern, replacement).error;
    if (err !== undefined) addIssue({ message: `invalid regex_uri (${pattern}, ${replacement}), err:${err}` });
  }),
  v.check(
    (c) => !(c.http_to_https && c.append_query_string),
    'only one of `http_to_https` and `append_query_string` can be configured.',
  ),
);

interface Conf {
  ret_code: number;
  uri?: string;
  regex_uri?: [string, string];
  http_to_https?: boolean;
  encode_uri: boolean;
  append_query_string: boolean;
}

type Vars = (name: string) => unknown;

// ---- the `uri` template, tokenised as APISIX's parse_uri does (ngx.re.gmatch with `reg`) ----

type Seg = string | { v: string };

const isNameChar = (c: number) => (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 95;

function nameEnd(s: string, from: number): number {
  let j = from;
  while (j < s.length && isNameChar(s.charCodeAt(j))) j++;
  return j;
}

/** The segments of a `uri` template: literal text and variable names. */
export function parseRedirectUri(tpl: string): Seg[] {
  const segs: Seg[] = [];
  let text = '';
  let i = 0;
  while (i < tpl.length) {
    const c = tpl[i];
    if (c === '\\') {
      // (\\\$[0-9a-zA-Z_]+): kept as it is, backslash included.
      if (tpl[i + 1] === '$') {
        const end = nameEnd(tpl, i + 2);
        if (end > i + 2) {
          text += tpl.slice(i, end);
          i = end;
          continue;
        }
      }
      i++; // No alternative matches a backslash here: gmatch skips it.
      continue;
    }
    if (c === '$') {
      if (tpl[i + 1] === '{') {
        const end = nameEnd(tpl, i + 2);
        if (end > i + 2 && tpl[end] === '}') {
          if (text) segs.push(text);
          text = '';
          segs.push({ v: tpl.slice(i + 2, end) });
          i = end + 1;
          continue;
        }
      }
      const end = nameEnd(tpl, i + 1);
      if (end > i + 1) {
        if (text) segs.push(text);
        text = '';
        segs.push({ v: tpl.slice(i + 1, end) });
        i = end;
        continue;
      }
      text += '$';
      i++;
      continue;
    }
    let j = i;
    while (j < tpl.length && tpl[j] !== '$' && tpl[j] !== '\\') j++;
    text += tpl.slice(i, j);
    i = j;
  }
  if (text) segs.push(text);
  return segs;
}

function varText(value: unknown): string {
  if (value === undefined || value === null) return '';
  if (typeof value === 'string') return value;
  if (typeof value === 'number') return luaNumberToString(value);
  if (Array.isArray(value)) return value.map(varText).join(', ');
  return String(value);
}

function compileUri(tpl: string): (vars: Vars) => string {
  const segs = parseRedirectUri(tpl);
  if (segs.every((s) => typeof s === 'string')) {
    const fixed = segs.join('');
    return () => fixed;
  }
  return (vars) => {
    let out = '';
    for (const s of segs) out += typeof s === 'string' ? s : varText(vars(s.v));
    return out;
  };
}

// ---- regex_uri: ngx.re.sub(uri, regex, template, "jo") on RE2 ----

type ReplPart = string | number;

/** An `ngx.re.sub` replacement template: `$N`, `${N}` (capture N), `$$` (a `$`); any other `$` is an error. */
function parseReplacement(tpl: string): ReplPart[] | undefined {
  const parts: ReplPart[] = [];
  let text = '';
  let i = 0;
  while (i < tpl.length) {
    const c = tpl[i]!;
    if (c !== '$') {
      text += c;
      i++;
      continue;
    }
    if (tpl[i + 1] === '$') {
      text += '$';
      i += 2;
      continue;
    }
    const braced = tpl[i + 1] === '{';
    let j = braced ? i + 2 : i + 1;
    const start = j;
    while (j < tpl.length && tpl.charCodeAt(j) >= 48 && tpl.charCodeAt(j) <= 57) j++;
    if (j === start) return undefined;
    if (braced) {
      if (tpl[j] !== '}') return undefined;
    }
    if (text) parts.push(text);
    text = '';
    parts.push(Number(tpl.slice(start, j)));
    i = braced ? j + 1 : j;
  }
  if (text) parts.push(text);
  return parts;
}

type RegexSub = (subject: string) => string | undefined;

/** Compile `regex_uri` once: the substitution, or APISIX-like error text. */
export function compileRegexUri(pattern: string, replacement: string): { sub?: RegexSub; error?: string } {
  let re: RE2JS;
  try {
    re = RE2JS.compile(pattern);
  } catch (err) {
    return { error: (err as Error).message };
  }
  if (re.programSize() > MAX_REGEX_PROGRAM_SIZE) return { error: `too large (over ${MAX_REGEX_PROGRAM_SIZE} instructions compiled)` };
  const parts = parseReplacement(replacement);
  if (!parts) return { error: 'failed to compile the replacement template' };
  const groups = re.groupCount();
  return {
    sub(subject) {
      const m = re.matcher(subject);
      if (!m.find()) return undefined;
      let out = subject.slice(0, m.start());
      for (const p of parts) out += typeof p === 'string' ? p : p <= groups ? (m.group(p) ?? '') : '';
      return out + subject.slice(m.end());
    },
  };
}

// ---- encode_uri: nginx's ngx_escape_uri(NGX_ESCAPE_URI) ----

/** Percent-encode what `ngx_escape_uri` escapes in a URI: controls, space, `#`, `%`, `?`, DEL and non-ASCII. */
export function escapeUri(s: string): string {
  let out = '';
  let from = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0x20 && c < 0x7f && c !== 0x23 && c !== 0x25 && c !== 0x3f) continue;
    out += s.slice(from, i);
    // A surrogate pair is one character: encode both halves together.
    const wide = c >= 0xd800 && c <= 0xdbff && i + 1 < s.length;
    const ch = wide ? s.slice(i, i + 2) : s[i]!;
    out += percentEncode(ch);
    if (wide) i++;
    from = i + 1;
  }
  return from === 0 ? s : out + s.slice(from);
}

function redirectTo(ctx: RequestContext, conf: Conf, status: number, target: string): Response {
  let location = target;
  const q = location.indexOf('?');
  if (conf.encode_uri) location = q < 0 ? escapeUri(location) : escapeUri(location.slice(0, q)) + location.slice(q);
  if (conf.append_query_string && ctx.query) location += (q < 0 ? '?' : '&') + ctx.query;
  return pluginExit(status, undefined, { location: safeHeaderValue(location) });
}

export const redirect: PluginDefinition<Conf> = {
  name: 'redirect',
  priority: 900,
  version: 0.1,
  schema: schema as v.GenericSchema<unknown, Conf>,
  create(conf) {
    if (conf.http_to_https) {
      return {
        rewrite(ctx) {
          const proto = ctx.header('x-forwarded-proto') ?? ctx.scheme;
          if (proto === 'https') return undefined;
          const method = ctx.upstream.method ?? ctx.method;
          const status = method === 'GET' || method === 'HEAD' ? 301 : 308;
          return redirectTo(ctx, conf, status, `https://${ctx.host}${varText(ctx.getVar('request_uri'))}`);
        },
      };
    }
    if (conf.uri !== undefined) {
      const uri = compileUri(conf.uri);
      return { rewrite: (ctx) => redirectTo(ctx, conf, conf.ret_code, uri(ctx.varReader)) };
    }
    if (conf.regex_uri !== undefined) {
      const sub = compileRegexUri(conf.regex_uri[0], conf.regex_uri[1]).sub!;
      return {
        rewrite(ctx) {
          const target = sub(varText(ctx.getVar('uri')));
          return target === undefined ? undefined : redirectTo(ctx, conf, conf.ret_code, target);
        },
      };
    }
    return {}; // `http_to_https: false`: nothing to do.
  },
};

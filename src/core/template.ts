/**
 * Plugin templates with request variables: APISIX's `core.utils.resolve_var` (proxy-rewrite `uri` and header
 * values, response-rewrite and fault-injection headers and bodies, ...) and `resolve_var_with_captures`
 * (proxy-rewrite's `$1`.. from `regex_uri`), compiled once at config time.
 *
 * The rules, from apisix/core/utils.lua and its test t/core/utils.t TEST 6:
 * - `$name` takes the longest run of `[A-Za-z0-9_.]` as the name (`$uri.html` is the variable `uri.html`, so
 *   write `${uri}.html`); `${name}` takes everything up to the next `}`, whitespace around it trimmed.
 * - `${name ?? default}` uses `default` when the variable is nil (only inside braces).
 * - A nil variable is the empty string; a number is written as Lua prints it, a boolean as `true`/`false`,
 *   a multi-value variable (string[]) as its values joined with `, ` (what nginx does for a repeated header).
 * - `$N` / `${N}` (digits) is the regex capture N of the `captures` given (0 = the whole match, as in a
 *   RegExp exec array; APISIX: `ngx.re.match`'s table); a missing or unmatched capture is the empty string.
 *   As in APISIX's capture pattern `\$\{?(\d+)\}?`, the braces are optional on each side.
 * - A `$` right after a backslash is left alone, and so is the backslash: `\$me` stays `\$me`.
 * - A `$` that starts none of these is literal text.
 *
 * Difference: APISIX resolves captures first and then variables in the result, so a capture whose text
 * contains `$name` (it comes from the request's path) is expanded again; here a capture is inserted as it is.
 */

import { luaNumberToString, type VarReader } from './expr.ts';

export type { VarReader } from './expr.ts';

export type Template = (vars: VarReader, captures?: readonly (string | undefined)[]) => string;

export interface TemplateOptions {
  /** Applied to each resolved variable (and `??` default), not to literal text or captures. APISIX
   *  proxy-rewrite's `uri` escapes `?` in values this way so a value cannot start the query string. */
  escape?: (value: string) => string;
}

type Part = string | { v: string; def: string | undefined } | { c: number };

/** Compiles `tpl`; a template without `$` resolves to itself without work. */
export function compileTemplate(tpl: string, options: TemplateOptions = {}): Template {
  if (!tpl.includes('$')) return () => tpl;
  const parts = parse(tpl);
  const escapeValue = options.escape;
  return (vars, captures) => {
    let out = '';
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i]!;
      if (typeof p === 'string') {
        out += p;
      } else if ('c' in p) {
        out += captures?.[p.c] ?? '';
      } else {
        const raw = vars(p.v);
        let s: string;
        if (raw === undefined || raw === null) {
          if (p.def === undefined) continue;
          s = p.def;
        } else {
          s = luaToString(raw);
        }
        out += escapeValue ? escapeValue(s) : s;
      }
    }
    return out;
  };
}

/** Lua's `tostring` for a variable's value (string[]: joined with `, `). */
function luaToString(v: unknown): string {
  if (typeof v === 'string') return v;
  if (typeof v === 'number') return luaNumberToString(v);
  if (Array.isArray(v)) return v.map(luaToString).join(', ');
  return String(v);
}

const isSpace = (c: number) => c === 32 || (c >= 9 && c <= 13); // PCRE \s: space, \t \n \v \f \r
const isDigit = (c: number) => c >= 48 && c <= 57;
const isNameChar = (c: number) => isDigit(c) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 95 || c === 46; // [\w.]
const DEFAULT_SPLIT = /[ \t\n\v\f\r]*\?\?[ \t\n\v\f\r]*/;

function parse(tpl: string): Part[] {
  const parts: Part[] = [];
  let text = '';
  const flush = () => {
    if (text) parts.push(text);
    text = '';
  };
  let i = 0;
  while (i < tpl.length) {
    const dollar = tpl.indexOf('$', i);
    if (dollar < 0) {
      text += tpl.slice(i);
      break;
    }
    text += tpl.slice(i, dollar);
    i = dollar + 1;
    if (dollar > 0 && tpl.charCodeAt(dollar - 1) === 92 /* \ */) {
      text += '$';
      continue;
    }
    // Capture: \$\{?(\d+)\}?
    let j = i;
    if (tpl.charCodeAt(j) === 123 /* { */) j++;
    const digitsStart = j;
    while (j < tpl.length && isDigit(tpl.charCodeAt(j))) j++;
    if (j > digitsStart) {
      const index = Number(tpl.slice(digitsStart, j));
      if (tpl.charCodeAt(j) === 125 /* } */) j++;
      flush();
      parts.push({ c: index });
      i = j;
      continue;
    }
    // Variable: \$(\{\s*([^}]+?)\s*\}|([\w\.]+))
    if (tpl.charCodeAt(i) === 123) {
      const close = tpl.indexOf('}', i + 1);
      if (close > i + 1) {
        flush();
        parts.push(braced(tpl.slice(i + 1, close)));
        i = close + 1;
        continue;
      }
    } else {
      j = i;
      while (j < tpl.length && isNameChar(tpl.charCodeAt(j))) j++;
      if (j > i) {
        flush();
        parts.push({ v: tpl.slice(i, j), def: undefined });
        i = j;
        continue;
      }
    }
    text += '$';
  }
  flush();
  return parts;
}

/** The inside of `${...}`: name, and the default after `??` if any. */
function braced(body: string): Part {
  let start = 0;
  let end = body.length;
  while (end > 0 && isSpace(body.charCodeAt(end - 1))) end--;
  // `[^}]+?` keeps at least one character: an all-space body names a one-space variable.
  if (end === 0) return { v: body.slice(-1), def: undefined };
  while (start < end && isSpace(body.charCodeAt(start))) start++;
  const segs = body.slice(start, end).split(DEFAULT_SPLIT);
  return { v: segs[0]!, def: segs.length > 1 ? segs[1]! : undefined };
}

/**
 * `ngx.re.sub` / `ngx.re.gsub` as proxy-rewrite's `regex_uri` and response-rewrite's `filters` use them, on RE2
 * (re2js: linear in the subject's length whatever the pattern), compiled once at config time.
 *
 * The replacement template is nginx's: `$0` is the whole match, `$1`..`$N` (or `${N}`) a capture group (an
 * unmatched or missing group is the empty string), `$$` a literal `$`; any other `$` is refused at config time
 * with lua-nginx-module's `invalid capturing variable name found`.
 *
 * Where RE2 differs from PCRE, RE2's meaning (see docs/apisix-compatibility.md): PCRE-only constructs
 * (backreferences, lookaround, ...) are refused when the config is written.
 */
import { RE2JS } from 're2js';

/** Largest RE2 program a plugin regex may compile to (bounds the per-character matching cost). */
export const MAX_PROGRAM_SIZE = 4096;

type Part = string | number;

export interface CompiledSub {
  readonly re: RE2JS;
  /** The regex's match with its groups (index 0 = whole match), or undefined when it does not match. */
  match(subject: string): (string | undefined)[] | undefined;
  /** Replace the first match (`ngx.re.sub`), or every match when `global` (`ngx.re.gsub`). */
  replace(subject: string, global: boolean): string;
}

/**
 * Compile `pattern` with ngx.re options (`j`, `o`, `u`, `U`, `D`, `J` change nothing here; `i` caseless, `m`
 * multi-line, `s` dot-all, `a` anchored at the start of the subject) and `template`. Throws an Error with the
 * reason for a pattern, option or template fngate cannot run.
 */
export function compileSub(pattern: string, template: string, options = 'jo'): CompiledSub {
  let flags = 0;
  let anchored = false;
  for (const o of options) {
    if (o === 'i') flags |= RE2JS.CASE_INSENSITIVE;
    else if (o === 'm') flags |= RE2JS.MULTILINE;
    else if (o === 's') flags |= RE2JS.DOTALL;
    else if (o === 'a') anchored = true;
    else if (!'joduUJD'.includes(o) || o === 'd') {
      // `x` (extended), `d` (DFA mode) and unknown letters.
      throw new Error(o === 'x' || o === 'd' ? `flag "${o}" is not supported by fngate (flags "${options}")` : `unknown flag "${o}" (flags "${options}")`);
    }
  }
  const re = RE2JS.compile(anchored ? `\\A(?:${pattern})` : pattern, flags);
  if (re.programSize() > MAX_PROGRAM_SIZE) throw new Error(`too large (over ${MAX_PROGRAM_SIZE} instructions compiled)`);
  const parts = parseTemplate(template);
  const expand = (groups: readonly (string | undefined)[]): string => {
    let out = '';
    for (const p of parts) out += typeof p === 'string' ? p : (groups[p] ?? '');
    return out;
  };
  const groupCount = re.groupCount();
  return {
    re,
    match(subject) {
      const m = re.matcher(subject);
      if (!m.find()) return undefined;
      const groups: (string | undefined)[] = [];
      for (let i = 0; i <= groupCount; i++) groups.push(m.group(i) ?? undefined);
      return groups;
    },
    replace(subject, global) {
      const m = re.matcher(subject);
      const replacer = (...args: unknown[]) => {
        const groups: (string | undefined)[] = [];
        for (let i = 0; i <= groupCount; i++) groups.push((args[i] as string | null | undefined) ?? undefined);
        return expand(groups);
      };
      return global ? m.replaceAll(replacer) : m.replaceFirst(replacer);
    },
  };
}

/** nginx's replacement template: literal text and group numbers. */
function parseTemplate(tpl: string): Part[] {
  const parts: Part[] = [];
  let text = '';
  for (let i = 0; i < tpl.length; i++) {
    const c = tpl[i]!;
    if (c !== '$') {
      text += c;
      continue;
    }
    const next = tpl[i + 1];
    if (next === '$') {
      text += '$';
      i++;
      continue;
    }
    let j = i + 1;
    const braced = next === '{';
    if (braced) j++;
    const start = j;
    while (j < tpl.length && tpl.charCodeAt(j) >= 48 && tpl.charCodeAt(j) <= 57) j++;
    if (j === start || (braced && tpl[j] !== '}')) throw new Error('invalid capturing variable name found');
    if (text) parts.push(text);
    text = '';
    parts.push(Number(tpl.slice(start, j)));
    i = braced ? j : j - 1;
  }
  if (text) parts.push(text);
  return parts;
}

/**
 * APISIX's `vars` expression language (lua-resty-expr v1, `lib/resty/expr/v1.lua`), used by a route's `vars`,
 * a plugin's `_meta.filter` and plugin fields such as response-rewrite's `vars`.
 *
 * A rule list is compiled once, at config time, into a tree of closures; evaluating it calls the var reader
 * once per comparison it reaches (AND/OR short-circuit as in lua-resty-expr) and allocates nothing else.
 *
 * Semantics are lua-resty-expr's, quirks included:
 * - `[[var, op, val], ...]` is an implicit AND; `["AND"|"OR"|"!AND"|"!OR", rule, rule, ...]` (case-insensitive,
 *   at least two sub-rules, nestable) is a group; a sub-rule that is itself a list of rules is an AND group.
 * - `[var, "!", op, val]` negates; `[var, val]` means `[var, "==", val]`, and since lua-resty-expr lower-cases
 *   the would-be operator before it knows it is a value, the value is lower-cased (`["arg_a", "Jack"]` matches
 *   `jack`, not `Jack`; a number value becomes a string).
 * - `==` / `~=` with a number value convert the variable with Lua's `tonumber` (a non-number variable: `==` is
 *   false, `~=` true); otherwise they compare type and value strictly (`"200"` is not `200`).
 *   `>`, `>=`, `<`, `<=` convert both sides; either not a number → false.
 * - `in`: the variable is one of the array's elements (strictly, no number conversion); `has`: the variable is
 *   an array containing the value; `ipmatch`: the variable is an IP in the value's IP/CIDR (or list of them).
 * - `~~` / `~*`: regex search anywhere in the variable (`~*` case-insensitive); a missing variable is false.
 * - JSON `null` as the value is nil: `["http_x", "==", null]` is true when the header is absent.
 * - An empty rule list is always true.
 *
 * Where fngate differs, it is stricter at config time rather than failing per request:
 * - Regexes run on RE2 (re2js), linear in the subject's length: PCRE-only constructs (backreferences,
 *   lookaround, ...) and invalid patterns are compile errors (lua-resty-expr compiles a regex on first use and
 *   an invalid one never matches); `$` is the end of the subject only; characters are code points and `~*`
 *   folds case the Unicode way (APISIX's PCRE: bytes, ASCII case). A regex matching allocates inside re2js.
 * - A variable name that is not a string, a regex that is not a string or number, and non-list sub-rules are
 *   compile errors; APISIX raises a Lua error on them when a request evaluates the rule. Rules nested deeper
 *   than {@link MAX_DEPTH} levels are refused.
 */

import { RE2JS } from 're2js';
import { compileIpMatcher, type IpMatcher, parseIPv4, parseIPv6 } from './router/ip.ts';

/** Reads one request variable (ctx.var); undefined = nil. Values: string, number, boolean, string[] (multi). */
export type VarReader = (name: string) => unknown;
export type Expr = (vars: VarReader) => boolean;
export type CompiledExpr = { ok: true; expr: Expr } | { ok: false; message: string };

/** Largest RE2 program a `~~` / `~*` regex may compile to (bounds the per-character matching cost). */
export const MAX_REGEX_PROGRAM_SIZE = 4096;
/** Deepest nesting of rule lists (compiling and evaluating recurse once per level). */
export const MAX_DEPTH = 64;

class ExprError extends Error {}

const ALWAYS_TRUE: Expr = () => true;

/**
 * Compile `rules` (the JSON of a route's `vars` or a plugin's `_meta.filter`). Errors carry lua-resty-expr's
 * wording, e.g. "invalid operator '='", "rule should be wrapped inside brackets"; callers prefix
 * "failed to validate the 'vars' expression: ".
 */
export function compileExpr(rules: unknown): CompiledExpr {
  if (rules === undefined || rules === null) return { ok: false, message: 'missing argument rule' };
  if (!Array.isArray(rules)) return { ok: false, message: 'rule should be an array' };
  if (rules.length === 0) return { ok: true, expr: ALWAYS_TRUE };
  const first = rules[0];
  if (!isTable(first) && logicOp(first) === undefined) {
    return { ok: false, message: 'rule should be wrapped inside brackets' };
  }
  try {
    return { ok: true, expr: compile(rules, 1) };
  } catch (err) {
    if (err instanceof ExprError) return { ok: false, message: err.message };
    throw err;
  }
}

/** A Lua table in cjson's decoding: an array or an object. */
function isTable(v: unknown): v is object {
  return typeof v === 'object' && v !== null;
}

type LogicOp = 'AND' | 'OR' | '!AND' | '!OR';

/** `str_upper(v)` looked up in the logic operators; a value `str_upper` would raise on is not one either. */
function logicOp(v: unknown): LogicOp | undefined {
  if (typeof v !== 'string' || v.length > 4) return undefined;
  const up = asciiUpper(v);
  return up === 'AND' || up === 'OR' || up === '!AND' || up === '!OR' ? up : undefined;
}

/** Lua's `string.upper` / `string.lower` are byte-wise ASCII (C locale), unlike `toUpperCase`. */
function asciiUpper(s: string): string {
  return s.replace(/[a-z]+/g, (m) => m.toUpperCase());
}
function asciiLower(s: string): string {
  return s.replace(/[A-Z]+/g, (m) => m.toLowerCase());
}

function compile(rules: unknown, depth: number): Expr {
  if (!Array.isArray(rules)) {
    // Lua's `#` of an object (no array part) or of "" is 0; other values raise a Lua error in lua-resty-expr.
    if ((isTable(rules) && !Array.isArray(rules)) || rules === '') throw new ExprError('rule too short');
    throw new ExprError('invalid expression: a rule must be a list');
  }
  const n = rules.length;
  if (n === 0) throw new ExprError('rule too short');
  if (depth > MAX_DEPTH) throw new ExprError(`invalid expression: rules nested deeper than ${MAX_DEPTH} levels`);
  const sub = (r: unknown) => compile(r, depth + 1);
  const first = rules[0];
  if (isTable(first)) return andOf(rules.map(sub));
  if (typeof first !== 'string' && typeof first !== 'number') {
    throw new ExprError('invalid expression: a rule must start with a variable name, a rule or AND/OR/!AND/!OR');
  }
  const op = logicOp(first);
  if (op === undefined) return compileComparison(rules);
  if (n <= 2) throw new ExprError('rule too short');
  const subs = rules.slice(1).map(sub);
  switch (op) {
    case 'AND':
      return andOf(subs);
    case 'OR':
      return orOf(subs);
    case '!AND': {
      const e = andOf(subs);
      return (vars) => !e(vars);
    }
    case '!OR': {
      const e = orOf(subs);
      return (vars) => !e(vars);
    }
  }
}

function andOf(subs: Expr[]): Expr {
  if (subs.length === 1) return subs[0]!;
  if (subs.length === 2) {
    const [a, b] = subs as [Expr, Expr];
    return (vars) => a(vars) && b(vars);
  }
  return (vars) => {
    for (let i = 0; i < subs.length; i++) if (!subs[i]!(vars)) return false;
    return true;
  };
}

function orOf(subs: Expr[]): Expr {
  if (subs.length === 2) {
    const [a, b] = subs as [Expr, Expr];
    return (vars) => a(vars) || b(vars);
  }
  return (vars) => {
    for (let i = 0; i < subs.length; i++) if (subs[i]!(vars)) return true;
    return false;
  };
}

const OPERATORS = new Set(['==', '~=', '>', '>=', '<', '<=', '~~', '~*', 'in', 'has', 'ipmatch']);

/** A comparison `[var, op, val]`, `[var, val]` or `[var, "!", op, val]` (lua-resty-expr `compile_expr`). */
function compileComparison(rule: unknown[]): Expr {
  let name: unknown;
  let rawOp: unknown;
  let value: unknown;
  let hasValue: boolean; // Lua: r_v ~= nil (a JSON null is cjson.null there, not nil)
  let reverse = false;
  if (rule.length === 4) {
    if (rule[1] !== '!') throw new ExprError("bad 'not' expression");
    reverse = true;
    [name, , rawOp, value] = rule;
    hasValue = true;
  } else {
    [name, rawOp, value] = rule;
    hasValue = rule.length >= 3; // a 5-tuple or longer is read as its first three elements, as in Lua
  }
  let op: string | undefined;
  if (reverse || rule.length >= 2) {
    if (typeof rawOp === 'string') op = asciiLower(rawOp);
    else if (typeof rawOp === 'number') op = luaNumberToString(rawOp);
    else throw new ExprError('invalid expression: the operator must be a string');
  }
  if (!hasValue && !(op !== undefined && OPERATORS.has(op))) {
    // [var, val] for compatibility: the lower-cased "operator" is the value.
    if (op === undefined) throw new ExprError('invalid expression');
    value = op;
    hasValue = true;
    op = '==';
  }
  if (op === undefined) throw new ExprError('invalid expression');
  if (typeof name !== 'string') throw new ExprError('invalid expression: the variable name must be a string');
  if (!OPERATORS.has(op)) throw new ExprError(`invalid operator '${op}'`);
  const test = comparison(op, value === null ? undefined : value);
  return reverse ? (vars) => !test(vars(name)) : (vars) => test(vars(name));
}

type Test = (v: unknown) => boolean;
const FALSE: Test = () => false;

function comparison(op: string, value: unknown): Test {
  switch (op) {
    case '==':
      if (typeof value === 'number') {
        return (v) => {
          const n = luaToNumber(v);
          return n !== undefined && n === value;
        };
      }
      return (v) => (v === null ? undefined : v) === value;
    case '~=':
      if (typeof value === 'number') {
        return (v) => {
          const n = luaToNumber(v);
          return n === undefined || n !== value;
        };
      }
      return (v) => (v === null ? undefined : v) !== value;
    case '>':
    case '>=':
    case '<':
    case '<=':
      return ordering(op, luaToNumber(value));
    case '~~':
    case '~*':
      return regexSearch(value, op === '~*');
    case 'in':
      if (!Array.isArray(value)) return FALSE;
      return (v) => {
        if (v === undefined || v === null) return false; // nil is never an element (JSON null is cjson.null)
        for (let i = 0; i < value.length; i++) if (value[i] === v) return true;
        return false;
      };
    case 'has':
      return (v) => {
        if (!Array.isArray(v)) return false;
        for (let i = 0; i < v.length; i++) if (v[i] === value) return true;
        return false;
      };
    case 'ipmatch': {
      const matcher = ipMatcher(value);
      return (v) => typeof v === 'string' && matcher.match(v);
    }
  }
  throw new ExprError(`invalid operator '${op}'`);
}

function ordering(op: '>' | '>=' | '<' | '<=', r: number | undefined): Test {
  if (r === undefined) return FALSE;
  switch (op) {
    case '>':
      return (v) => {
        const n = luaToNumber(v);
        return n !== undefined && n > r;
      };
    case '>=':
      return (v) => {
        const n = luaToNumber(v);
        return n !== undefined && n >= r;
      };
    case '<':
      return (v) => {
        const n = luaToNumber(v);
        return n !== undefined && n < r;
      };
    case '<=':
      return (v) => {
        const n = luaToNumber(v);
        return n !== undefined && n <= r;
      };
  }
}

function regexSearch(value: unknown, caseless: boolean): Test {
  let pattern: string;
  if (typeof value === 'string') pattern = value;
  else if (typeof value === 'number') pattern = luaNumberToString(value);
  else throw new ExprError('invalid expression: the regex must be a string');
  // A pattern that is plain text (no regex syntax) is a substring search.
  if (!caseless && !/[\\.+*?()|[\]{}^$]/.test(pattern)) {
    return (v) => {
      if (typeof v === 'string') return v.includes(pattern);
      if (typeof v === 'number') return luaNumberToString(v).includes(pattern);
      return false;
    };
  }
  let re: RE2JS;
  try {
    re = RE2JS.compile(pattern, caseless ? RE2JS.CASE_INSENSITIVE : 0);
  } catch (err) {
    throw new ExprError(`invalid regex '${pattern}': ${(err as Error).message}`);
  }
  if (re.programSize() > MAX_REGEX_PROGRAM_SIZE) {
    throw new ExprError(`invalid regex '${pattern}': too large (over ${MAX_REGEX_PROGRAM_SIZE} instructions compiled)`);
  }
  return (v) => {
    // lua-resty-expr: a nil (or false) variable is false; a number is searched as Lua prints it; a table
    // raises a Lua error there, and is false here.
    if (typeof v === 'string') return re.test(v);
    if (typeof v === 'number') return re.test(luaNumberToString(v));
    return false;
  };
}

function ipMatcher(value: unknown): IpMatcher {
  if (value === undefined || value === false || value === '') throw new ExprError('invalid ip address');
  const list: unknown[] = Array.isArray(value) ? value : isTable(value) ? [] : [value];
  if (list.length === 0) throw new ExprError('invalid ip address');
  const entries: string[] = [];
  for (const entry of list) {
    if (typeof entry !== 'string') throw new ExprError(`invalid ip address: ${String(entry)}`);
    entries.push(entry);
  }
  try {
    return compileIpMatcher(entries);
  } catch {
    // lua-resty-ipmatcher names the address part of the first bad entry; a bad prefix length names the entry.
    for (const entry of entries) {
      const addr = entry.split('/', 1)[0]!;
      if (parseIPv4(addr) < 0 && parseIPv6(addr) === null) throw new ExprError(`invalid ip address: ${addr}`);
      try {
        compileIpMatcher([entry]);
      } catch {
        throw new ExprError(`invalid ip address: ${entry}`);
      }
    }
    throw new ExprError('invalid ip address');
  }
}

// ------------------------------------------------------------------------------------------------
// Lua number conversions (LuaJIT `tonumber` = lj_strscan_num, `tostring` = "%.14g")

const WS = '[ \\t\\n\\v\\f\\r]*';
const DEC_RE = new RegExp(`^${WS}[+-]?(?:\\d+\\.?\\d*|\\.\\d+)(?:[eE][+-]?\\d+)?${WS}$`);
const HEX_RE = new RegExp(`^${WS}([+-]?)0[xX]([0-9a-fA-F]*)(?:\\.([0-9a-fA-F]*))?(?:[pP]([+-]?\\d+))?${WS}$`);
const BIN_RE = new RegExp(`^${WS}([+-]?)0[bB]([01]*)(?:\\.([01]*))?${WS}$`);
const SPECIAL_RE = new RegExp(`^${WS}([+-]?)(?:(inf)(?:inity)?|nan)${WS}$`, 'i');

/**
 * Lua's `tonumber(v)` (LuaJIT): a number is itself; a string is a decimal, hex (`0x1p4`), binary (`0b101`),
 * `inf`/`infinity`/`nan` (any case) number with optional sign and surrounding ASCII whitespace; anything else
 * (booleans, tables, nil, "", "12px") is undefined.
 */
export function luaToNumber(v: unknown): number | undefined {
  if (typeof v === 'number') return v;
  if (typeof v !== 'string') return undefined;
  // Fast path: a short run of decimal digits (status codes, ports, sizes).
  const len = v.length;
  if (len > 0 && len < 16) {
    let n = 0;
    let i = 0;
    for (; i < len; i++) {
      const d = v.charCodeAt(i) - 48;
      if (d < 0 || d > 9) break;
      n = n * 10 + d;
    }
    if (i === len) return n;
  }
  if (DEC_RE.test(v)) return Number(v);
  let m = HEX_RE.exec(v);
  if (m) return radixNumber(m[1]!, m[2]!, m[3] ?? '', 16, m[4]);
  m = BIN_RE.exec(v);
  if (m) return radixNumber(m[1]!, m[2]!, m[3] ?? '', 2, undefined);
  m = SPECIAL_RE.exec(v);
  if (m) return m[2] === undefined ? Number.NaN : m[1] === '-' ? -Infinity : Infinity;
  return undefined;
}

function radixNumber(sign: string, int: string, frac: string, radix: number, exp2: string | undefined) {
  if (int.length + frac.length === 0) return undefined;
  let n = 0;
  for (const c of int) n = n * radix + Number.parseInt(c, radix);
  let scale = 1;
  for (const c of frac) {
    scale /= radix;
    n += Number.parseInt(c, radix) * scale;
  }
  if (exp2 !== undefined) n *= 2 ** Number(exp2);
  return sign === '-' ? -n : n;
}

/** Lua's `tostring(n)` for a number (LuaJIT: `%.14g`; `inf`, `-inf`, `nan`). */
export function luaNumberToString(n: number): string {
  if (Number.isInteger(n) && Math.abs(n) < 1e14) return Object.is(n, -0) ? '-0' : String(n);
  if (Number.isNaN(n)) return 'nan';
  if (!Number.isFinite(n)) return n > 0 ? 'inf' : '-inf';
  const [mant, e] = n.toExponential(13).split('e') as [string, string];
  const exp = Number(e);
  if (exp < -4 || exp >= 14) {
    const digits = trimZeros(mant);
    return `${digits}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  }
  return trimZeros(n.toFixed(13 - exp));
}

function trimZeros(s: string): string {
  return s.includes('.') ? s.replace(/\.?0+$/, '') : s;
}

/**
 * The patterns of the Admin API's `?name=` and `?uri=` list filters.
 *
 * APISIX searches them as unanchored PCRE regular expressions (`ngx.re.find(value, pattern, "jo")`), so
 * `?name=^flt-b` and `?name=alpha$` work as they do there. A JavaScript RegExp backtracks, and some patterns
 * take exponential time (`(a+)+$` against a 40-character name runs for hours) in the thread that also proxies
 * traffic: a ReDoS for anyone holding an admin key. The patterns are run by re2js, a pure-JS port of RE2,
 * whose matching time is linear in the subject's length times the program's size; a request's matching
 * work has a budget on top (a pattern's program can be large, and a list can be long).
 *
 * The syntax and meaning are RE2's (https://github.com/google/re2/wiki/Syntax), which is PCRE's for what
 * people write in filters. Where the two differ RE2 wins: `$` is the end of the subject only (PCRE: also
 * before a final newline), `\s` leaves out `\v`, `\v` is the vertical tab alone, `{,n}` is literal text,
 * and characters are code points (APISIX: bytes). PCRE constructs RE2 cannot run in linear time, or does not
 * have (backreferences, lookaround, atomic groups, possessive quantifiers, recursion, conditionals, `\Z`,
 * `\G`, `\K`, ...), are refused with a message ({@link FilterPatternError}); a pattern that is not a regular
 * expression in either syntax (`(`, `[a`) matches as plain text.
 */

import { RE2JS, RE2JSCompileException, RE2JSSyntaxException } from 're2js';
import { adminError } from './json.ts';

/** A pattern fngate refuses (unsupported construct, too large, too costly): the request gets a 400. */
export class FilterPatternError extends Error {}

/**
 * Matching work one list request may spend, in units of (subject length + 1) × program size: an upper bound
 * on what RE2 does per subject. The slowest patterns measured spend ~13 ns a unit (a DFA that keeps
 * outgrowing its cache), so a request stops within ~250 ms; ordinary patterns (program size 5–40) on
 * ordinary names and URIs cost a few hundred to a few thousand units an item.
 */
export const FILTER_WORK_BUDGET = 20_000_000;
/** Longest pattern, and largest program it may compile to (RE2's `programSize()`, counted repetitions expand). */
export const MAX_PATTERN_LENGTH = 1024;
export const MAX_PROGRAM_SIZE = 4096;

export interface Budget {
  work: number;
}

export interface FilterPattern {
  /** Is there a match anywhere in `subject`? Throws {@link FilterPatternError} when `budget` runs out. */
  test(subject: string, budget: Budget): boolean;
}

/**
 * Compiles `pattern`. Throws {@link FilterPatternError} for what fngate refuses, and SyntaxError for a
 * pattern that is not a valid regular expression at all.
 */
export function compileFilterPattern(pattern: string): FilterPattern {
  if (pattern.length > MAX_PATTERN_LENGTH) {
    throw new FilterPatternError(`pattern longer than ${MAX_PATTERN_LENGTH} characters`);
  }
  const literal = literalOf(pattern);
  if (literal) return literal;
  let re: RE2JS;
  try {
    re = RE2JS.compile(pattern);
  } catch (err) {
    if (err instanceof RE2JSSyntaxException) {
      const refused = refusal(err, pattern);
      if (refused) throw new FilterPatternError(refused);
      throw new SyntaxError(err.message);
    }
    if (err instanceof RE2JSCompileException) throw new FilterPatternError(`pattern too large (${err.message})`);
    throw err;
  }
  const size = re.programSize();
  if (size > MAX_PROGRAM_SIZE) {
    throw new FilterPatternError(`pattern too large (over ${MAX_PROGRAM_SIZE} instructions once compiled)`);
  }
  return {
    test(subject, budget) {
      charge(budget, (subject.length + 1) * size);
      return re.test(subject);
    },
  };
}

/** The `?name=` and `?uri=` searches of one list request, sharing one budget. */
export interface ListSearch {
  name?: (subject: string) => boolean;
  uri?: (subject: string) => boolean;
  /** After filtering: the 400 to answer instead of the list when the budget ran out, else undefined. */
  refusal(): Response | undefined;
}

/**
 * The searches of a list request's `?name=` and `?uri=`, or the 400 for a pattern fngate refuses. A pattern
 * that is not a regular expression at all (`(`, `[a`) matches as plain text, as before.
 */
export function listSearch(query: URLSearchParams): ListSearch | Response {
  const budget: Budget = { work: FILTER_WORK_BUDGET };
  let refused: Response | undefined;
  const out: ListSearch = { refusal: () => refused };
  for (const param of ['name', 'uri'] as const) {
    const pattern = query.get(param);
    if (pattern === null) continue;
    let compiled: FilterPattern;
    try {
      compiled = compileFilterPattern(pattern);
    } catch (err) {
      if (err instanceof FilterPatternError) return adminError(400, `invalid argument ${param}: ${err.message}`);
      compiled = plainText(pattern);
    }
    out[param] = (subject) => {
      if (refused) return false;
      try {
        return compiled.test(subject, budget);
      } catch (err) {
        if (!(err instanceof FilterPatternError)) throw err;
        refused = adminError(400, `invalid argument ${param}: ${err.message}`);
        return false;
      }
    };
  }
  return out;
}

function charge(budget: Budget, work: number): void {
  budget.work -= work;
  if (budget.work < 0) {
    throw new FilterPatternError(
      `pattern too costly to match against every item (over ${FILTER_WORK_BUDGET} units of work; a unit is a character times an instruction)`,
    );
  }
}

/** Native string search: charged a fraction of a unit per character. */
const stringSearch = (matches: (s: string) => boolean): FilterPattern => ({
  test(subject, budget) {
    charge(budget, 1 + (subject.length >> 6));
    return matches(subject);
  },
});

function plainText(text: string): FilterPattern {
  return stringSearch((s) => s.includes(text));
}

/** A pattern that is only literal text, with `^`/`$` at its ends (RE2: `$` is the end of the subject). */
function literalOf(pattern: string): FilterPattern | undefined {
  const m = /^(\^?)([^\\.+*?()|[\]{}^$]*)(\$?)$/.exec(pattern);
  if (!m) return undefined;
  const [start, text, end] = [m[1] === '^', m[2]!, m[3] === '$'];
  if (start && end) return stringSearch((s) => s === text);
  if (start) return stringSearch((s) => s.startsWith(text));
  if (end) return stringSearch((s) => s.endsWith(text));
  return stringSearch((s) => s.includes(text));
}

// ------------------------------------------------------------------------------------------------
// What RE2's syntax errors mean for a PCRE pattern
//
// RE2 reports a PCRE construct it lacks with the same errors as a pattern that is no regular expression
// at all: `\1` and `\i` are both "invalid escape sequence", `(?=` and `(?z` both "invalid or unsupported
// Perl syntax". The error's `input` holds the offending piece (`\1`, `(?=`, `++`, `{1001}`); the PCRE
// constructs among them are refused by name, and the rest are plain syntax errors.

const ERR_INVALID_ESCAPE = 'invalid escape sequence';
const ERR_INVALID_PERL_OP = 'invalid or unsupported Perl syntax';
const ERR_INVALID_NAMED_CAPTURE = 'invalid named capture';
const ERR_INVALID_REPEAT_OP = 'invalid nested repetition operator';
const ERR_INVALID_REPEAT_SIZE = 'invalid repeat count';
const ERR_MISSING_REPEAT_ARGUMENT = 'missing argument to repetition operator';
const ERR_LARGE = 'expression too large';
const ERR_NESTING_DEPTH = 'expression nests too deeply';

/** PCRE escapes that RE2 does not have (backreferences apart). */
const PCRE_ONLY_ESCAPES = 'ZGKRXhHVNecoEC';

const notSupported = (what: string) => `${what} are not supported in list filters`;

/** The refusal message for a PCRE construct RE2 cannot run, or undefined for a plain syntax error. */
function refusal(err: RE2JSSyntaxException, pattern: string): string | undefined {
  const input = err.input ?? '';
  switch (err.error) {
    case ERR_INVALID_ESCAPE: {
      const c = input[1] ?? '';
      if (/^[1-9gk]$/.test(c)) return notSupported('backreferences');
      if (c === 'Z') return '\\Z is not supported in list filters ($ is the end of the subject here: write \\n?$)';
      if (c && PCRE_ONLY_ESCAPES.includes(c)) return notSupported(`escapes such as \\${c}`);
      return undefined;
    }
    case ERR_INVALID_PERL_OP:
      return perlGroup(input.slice(2), pattern);
    case ERR_INVALID_NAMED_CAPTURE:
      return /^\(\?<[=!]/.test(input) ? notSupported('lookaround assertions') : undefined;
    case ERR_INVALID_REPEAT_OP:
      return /^(?:[*+?]|\{\d+(?:,\d*)?\})\+$/.test(input) ? notSupported('possessive quantifiers') : undefined;
    case ERR_INVALID_REPEAT_SIZE: {
      const m = /^\{(\d+)(?:,(\d*))?\}$/.exec(input);
      if (!m) return undefined;
      const min = Number(m[1]);
      const max = m[2] ? Number(m[2]) : min;
      // PCRE takes counts up to 65535 (a count out of order, or above that, is an error there too).
      if (max < min || max > 65535) return undefined;
      return notSupported('repetition counts above 1000 (nested counts multiply)');
    }
    case ERR_MISSING_REPEAT_ARGUMENT:
      return input === '*' && /\(\*[A-Z]/.test(pattern) ? notSupported('PCRE verbs such as (*UTF)') : undefined;
    case ERR_LARGE:
    case ERR_NESTING_DEPTH:
      return `pattern too large (${err.error})`;
  }
  return undefined;
}

/** After `(?` in an "invalid or unsupported Perl syntax" error: which PCRE group it is, if one. */
function perlGroup(rest: string, pattern: string): string | undefined {
  const c = rest[0];
  if (c === '=' || c === '!') return notSupported('lookaround assertions');
  if (c === '>') return notSupported('atomic groups');
  if (c === '#') return notSupported('comments (?#…)');
  if (c === "'") return notSupported("(?'name'…) groups (write (?<name>…))");
  if (c === '|') return notSupported('branch-reset groups (?|…)');
  if (c === '(') return notSupported('conditional groups (?(…)…)');
  if (c === 'C') return notSupported('callouts (?C…)');
  if (c === 'R' || c === '&' || c === '+' || /^-?\d/.test(rest)) return notSupported('recursion and subroutine calls');
  if (c === 'P') {
    const next = /\(\?P([=>])/.exec(pattern)?.[1];
    if (next === '=') return notSupported('backreferences');
    if (next === '>') return notSupported('recursion and subroutine calls');
    return undefined;
  }
  // Inline options: RE2 has i, m, s and U; PCRE also x, n, J and ^.
  const option = /^[imsxnJU-]*([xnJ^])$/.exec(rest)?.[1];
  if (option) return notSupported(`inline options other than i, m, s and U (here ${option})`);
  return undefined;
}

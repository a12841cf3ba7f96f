/**
 * The patterns of the Admin API's `?name=` and `?uri=` list filters.
 *
 * APISIX searches them as unanchored PCRE regular expressions (`ngx.re.find(value, pattern, "jo")`), so
 * `?name=^flt-b` and `?name=alpha$` work as they do there. A JavaScript RegExp backtracks, and some patterns
 * take exponential time (`(a+)+$` against a 40-character name runs for hours) in the thread that also proxies
 * traffic: a ReDoS for anyone holding an admin key. PCRE has its `match_limit` for that; here the pattern is
 * compiled to a small program and run by a Pike VM (a Thompson NFA simulation), whose time is linear in
 * the subject's length times the program's size, and a request's matching work has a budget on top.
 *
 * Supported (the PCRE syntax people write in filters): literals and escaped punctuation, `.`, `[...]` and
 * `[^...]` with ranges, `\d \D \w \W \s \S`, `\n \r \t \f \e \a \xHH \x{H...}`, `\Q...\E`, anchors `^ $ \A \z \Z`,
 * `\b \B`, groups `(...)`, `(?:...)`, `(?<name>...)`, `(?P<name>...)`, alternation `|`, quantifiers
 * `* + ? {n} {n,} {n,m}` (lazy forms too: a filter asks only whether there is a match), and a leading
 * `(?i)`. Not supported, refused with a message ({@link FilterPatternError}): backreferences, lookaround,
 * atomic groups, possessive quantifiers, `\p{...}`, POSIX classes, other inline options: constructs whose
 * meaning a linear-time matcher cannot keep. Characters are UTF-16 code units (APISIX: bytes), which
 * differs only for `.` and classes against non-ASCII text.
 */

import { adminError } from './json.ts';

/** A pattern fngate refuses (unsupported construct, too large, too costly): the request gets a 400. */
export class FilterPatternError extends Error {}

const unsupported = (what: string) => new FilterPatternError(`${what} are not supported in list filters`);

/** Matching work one list request may spend, in VM steps (a few ns each): ~50–100 ms. */
export const FILTER_STEP_BUDGET = 10_000_000;
/** Longest pattern, and largest program it may compile to (counted repetitions expand). */
export const MAX_PATTERN_LENGTH = 1024;
export const MAX_PROGRAM_SIZE = 4096;

export interface Budget {
  steps: number;
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
  const parser = new Parser(pattern);
  const ast = parser.parse();
  const literal = literalOf(ast, parser.ignoreCase);
  if (literal) return literal;
  return vm(compile(ast, parser.ignoreCase));
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
  const budget: Budget = { steps: FILTER_STEP_BUDGET };
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

function plainText(text: string): FilterPattern {
  return {
    test(subject, budget) {
      budget.steps -= 1 + (subject.length >> 6); // native string search: a fraction of a VM step per character
      if (budget.steps < 0) throw tooCostly();
      return subject.includes(text);
    },
  };
}

// ------------------------------------------------------------------------------------------------
// Syntax

type CharTest = (c: number) => boolean;
type Assertion = 'start' | 'end' | 'endOrFinalNewline' | 'wordBoundary' | 'notWordBoundary';

type Node =
  | { type: 'char'; test: CharTest; literal?: number }
  | { type: 'assert'; kind: Assertion }
  | { type: 'concat'; items: Node[] }
  | { type: 'alt'; items: Node[] }
  | { type: 'repeat'; item: Node; min: number; max: number }; // max Infinity: unbounded

const NEWLINE = 10;
const isDigit: CharTest = (c) => c >= 48 && c <= 57;
const isWord: CharTest = (c) => (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 95;
// PCRE2 \s: space, \t, \n, \v, \f, \r.
const isSpace: CharTest = (c) => c === 32 || (c >= 9 && c <= 13);
const not =
  (t: CharTest): CharTest =>
  (c) =>
    !t(c);

class Parser {
  private pos = 0;
  ignoreCase = false;

  constructor(private readonly src: string) {}

  parse(): Node {
    if (this.src.startsWith('(?i)')) {
      this.ignoreCase = true;
      this.pos = 4;
    }
    const node = this.alternation();
    if (this.pos < this.src.length) throw new SyntaxError(`unmatched ) at ${this.pos}`);
    return node;
  }

  private peek(): string | undefined {
    return this.src[this.pos];
  }

  private alternation(): Node {
    const items = [this.sequence()];
    while (this.peek() === '|') {
      this.pos++;
      items.push(this.sequence());
    }
    return items.length === 1 ? items[0]! : { type: 'alt', items };
  }

  private sequence(): Node {
    const items: Node[] = [];
    for (;;) {
      const c = this.peek();
      if (c === undefined || c === '|' || c === ')') break;
      if (c === '\\' && this.src[this.pos + 1] === 'Q') {
        // \Q...\E: everything between is literal.
        this.pos += 2;
        const end = this.src.indexOf('\\E', this.pos);
        const text = end < 0 ? this.src.slice(this.pos) : this.src.slice(this.pos, end);
        this.pos = end < 0 ? this.src.length : end + 2;
        for (let i = 0; i < text.length; i++) items.push(this.quantified(literalNode(text.charCodeAt(i))));
        continue;
      }
      if (c === '\\' && this.src[this.pos + 1] === 'E') {
        this.pos += 2; // a stray \E is ignored, as PCRE does
        continue;
      }
      items.push(this.quantified(this.atom()));
    }
    return items.length === 1 ? items[0]! : { type: 'concat', items };
  }

  /** `atom` followed by any quantifiers. */
  private quantified(atom: Node): Node {
    let node = atom;
    for (;;) {
      const c = this.peek();
      let min: number;
      let max: number;
      if (c === '*') [min, max] = [0, Number.POSITIVE_INFINITY];
      else if (c === '+') [min, max] = [1, Number.POSITIVE_INFINITY];
      else if (c === '?') [min, max] = [0, 1];
      else if (c === '{') {
        const m = /^\{(\d+)(,(\d*))?\}/.exec(this.src.slice(this.pos));
        if (!m) return node; // not a quantifier: `{` is then a literal (PCRE)
        min = Number(m[1]);
        max = m[2] === undefined ? min : m[3] === '' ? Number.POSITIVE_INFINITY : Number(m[3]);
        if (max < min) throw new SyntaxError('numbers out of order in {} quantifier');
        if (min > 1000 || (max !== Number.POSITIVE_INFINITY && max > 1000)) {
          throw unsupported('repetition counts above 1000');
        }
        this.pos += m[0].length - 1;
      } else return node;
      this.pos++;
      const suffix = this.peek();
      if (suffix === '+') throw unsupported('possessive quantifiers');
      if (suffix === '?') this.pos++; // lazy: the same answer to "is there a match"
      node = { type: 'repeat', item: node, min, max };
    }
  }

  private atom(): Node {
    const c = this.src[this.pos++]!;
    switch (c) {
      case '.':
        return { type: 'char', test: (x) => x !== NEWLINE };
      case '^':
        return { type: 'assert', kind: 'start' };
      case '$':
        return { type: 'assert', kind: 'endOrFinalNewline' };
      case '[':
        return this.charClass();
      case '(':
        return this.group();
      case '\\': {
        const e = this.escape(false);
        if (typeof e === 'number') return literalNode(e);
        return typeof e === 'function' ? { type: 'char', test: e } : e;
      }
      case '*':
      case '+':
      case '?':
        throw new SyntaxError(`quantifier does not follow a repeatable item at ${this.pos - 1}`);
      default:
        return literalNode(c.charCodeAt(0));
    }
  }

  private group(): Node {
    if (this.peek() === '?') {
      const rest = this.src.slice(this.pos + 1);
      let skip: number;
      if (rest.startsWith(':')) skip = 2;
      else if (/^P?<[A-Za-z_][A-Za-z0-9_]*>/.test(rest)) skip = 1 + rest.indexOf('>') + 1;
      else if (/^'[A-Za-z_][A-Za-z0-9_]*'/.test(rest)) skip = 1 + rest.indexOf("'", 1) + 1;
      else if (rest.startsWith('#')) {
        // (?# comment )
        const end = this.src.indexOf(')', this.pos);
        if (end < 0) throw new SyntaxError('missing ) after (?# comment');
        this.pos = end + 1;
        return { type: 'concat', items: [] };
      } else if (/^(=|!|<=|<!)/.test(rest)) throw unsupported('lookaround assertions');
      else if (rest.startsWith('>')) throw unsupported('atomic groups');
      else throw unsupported(`groups (?${rest.slice(0, 2)}… (only (?:…), named groups and a leading (?i))`);
      this.pos += skip;
    }
    const node = this.alternation();
    if (this.peek() !== ')') throw new SyntaxError('missing )');
    this.pos++;
    return node;
  }

  /**
   * After a `\`: a code unit (`\n`, `\x41`, `\.`), a class test (`\d`) or, outside a class (`inClass`
   * false), an assertion (`\b`, `\A`, `\z`, `\Z`).
   */
  private escape(inClass: boolean): number | CharTest | Node {
    const c = this.src[this.pos++];
    if (c === undefined) throw new SyntaxError('\\ at end of pattern');
    switch (c) {
      case 'd':
        return isDigit;
      case 'D':
        return not(isDigit);
      case 'w':
        return isWord;
      case 'W':
        return not(isWord);
      case 's':
        return isSpace;
      case 'S':
        return not(isSpace);
      case 'n':
        return 10;
      case 'r':
        return 13;
      case 't':
        return 9;
      case 'f':
        return 12;
      case 'e':
        return 27;
      case 'a':
        return 7;
      case '0':
        return 0;
      case 'x': {
        if (this.peek() === '{') {
          const m = /^\{([0-9A-Fa-f]{1,4})\}/.exec(this.src.slice(this.pos));
          if (!m) throw unsupported('\\x{…} escapes beyond U+FFFF');
          this.pos += m[0].length;
          return Number.parseInt(m[1]!, 16);
        }
        const m = /^[0-9A-Fa-f]{0,2}/.exec(this.src.slice(this.pos))!;
        this.pos += m[0].length;
        return m[0] ? Number.parseInt(m[0], 16) : 0;
      }
    }
    if (!inClass) {
      switch (c) {
        case 'b':
          return { type: 'assert', kind: 'wordBoundary' };
        case 'B':
          return { type: 'assert', kind: 'notWordBoundary' };
        case 'A':
          return { type: 'assert', kind: 'start' };
        case 'z':
          return { type: 'assert', kind: 'end' };
        case 'Z':
          return { type: 'assert', kind: 'endOrFinalNewline' };
      }
    } else if (c === 'b') return 8; // in a class, \b is a backspace
    if ((c >= '1' && c <= '9') || c === 'g' || c === 'k') throw unsupported('backreferences');
    if (c === 'p' || c === 'P' || c === 'X' || c === 'R') throw unsupported(`Unicode escapes (\\${c})`);
    if (/[A-Za-z0-9]/.test(c)) throw new SyntaxError(`unrecognized escape \\${c}`);
    return c.charCodeAt(0); // escaped punctuation is itself
  }

  private charClass(): Node {
    let negate = false;
    if (this.peek() === '^') {
      negate = true;
      this.pos++;
    }
    const tests: CharTest[] = [];
    let first = true;
    for (;;) {
      const c = this.src[this.pos];
      if (c === undefined) throw new SyntaxError('missing terminating ] for character class');
      if (c === ']' && !first) {
        this.pos++;
        break;
      }
      first = false;
      if (c === '[' && /^\[[:=.]/.test(this.src.slice(this.pos))) throw unsupported('POSIX character classes');
      const lo = this.classAtom();
      if (
        this.peek() === '-' &&
        this.src[this.pos + 1] !== ']' &&
        this.src[this.pos + 1] !== undefined &&
        typeof lo === 'number'
      ) {
        this.pos++;
        const hi = this.classAtom();
        if (typeof hi !== 'number') throw new SyntaxError('invalid range in character class');
        if (hi < lo) throw new SyntaxError('range out of order in character class');
        tests.push((x) => x >= lo && x <= hi);
      } else if (typeof lo === 'number') tests.push((x) => x === lo);
      else tests.push(lo);
    }
    const inClass: CharTest = (x) => {
      for (const t of tests) if (t(x)) return true;
      return false;
    };
    return { type: 'char', test: negate ? not(inClass) : inClass };
  }

  /** One class member: a code unit, or a test for a class escape such as `\d`. */
  private classAtom(): number | CharTest {
    const c = this.src[this.pos++]!;
    if (c !== '\\') return c.charCodeAt(0);
    return this.escape(true) as number | CharTest;
  }
}

function literalNode(code: number): Node {
  return { type: 'char', test: (x) => x === code, literal: code };
}

/** A pattern that is only literal text (with `^`/`$` at its ends): matched with string search. */
function literalOf(ast: Node, ignoreCase: boolean): FilterPattern | undefined {
  if (ignoreCase) return undefined;
  const items = ast.type === 'concat' ? ast.items : [ast];
  let start = false;
  let end = false;
  let text = '';
  for (let i = 0; i < items.length; i++) {
    const n = items[i]!;
    if (n.type === 'assert' && n.kind === 'start' && i === 0) start = true;
    else if (n.type === 'assert' && n.kind === 'endOrFinalNewline' && i === items.length - 1) end = true;
    else if (n.type === 'char' && n.literal !== undefined) text += String.fromCharCode(n.literal);
    else return undefined;
  }
  const matches = (s: string): boolean => {
    if (start && end) return s === text || s === `${text}\n`;
    if (start) return s.startsWith(text);
    if (end) return s.endsWith(text) || s.endsWith(`${text}\n`);
    return s.includes(text);
  };
  return {
    test(subject, budget) {
      budget.steps -= 1 + (subject.length >> 6); // native string search: a fraction of a VM step per character
      if (budget.steps < 0) throw tooCostly();
      return matches(subject);
    },
  };
}

// ------------------------------------------------------------------------------------------------
// Program and VM

const CHAR = 0;
const SPLIT = 1;
const JMP = 2;
const ASSERT = 3;
const MATCH = 4;

interface Inst {
  op: number;
  test?: CharTest;
  x?: number;
  y?: number;
  kind?: Assertion;
}

function compile(ast: Node, ignoreCase: boolean): Inst[] {
  const prog: Inst[] = [];
  const emit = (inst: Inst): number => {
    if (prog.length >= MAX_PROGRAM_SIZE)
      throw new FilterPatternError(`pattern too large (over ${MAX_PROGRAM_SIZE} instructions once compiled)`);
    prog.push(inst);
    return prog.length - 1;
  };
  const fold = (t: CharTest): CharTest => {
    if (!ignoreCase) return t;
    return (c) => {
      if (t(c)) return true;
      const s = String.fromCharCode(c);
      const lo = s.toLowerCase();
      const up = s.toUpperCase();
      return (lo.length === 1 && t(lo.charCodeAt(0))) || (up.length === 1 && t(up.charCodeAt(0)));
    };
  };
  const gen = (n: Node): void => {
    switch (n.type) {
      case 'char':
        emit({ op: CHAR, test: fold(n.test) });
        return;
      case 'assert':
        emit({ op: ASSERT, kind: n.kind });
        return;
      case 'concat':
        for (const item of n.items) gen(item);
        return;
      case 'alt': {
        const jumps: number[] = [];
        for (let i = 0; i < n.items.length; i++) {
          if (i < n.items.length - 1) {
            const split = emit({ op: SPLIT });
            prog[split]!.x = prog.length;
            gen(n.items[i]!);
            jumps.push(emit({ op: JMP }));
            prog[split]!.y = prog.length;
          } else gen(n.items[i]!);
        }
        for (const j of jumps) prog[j]!.x = prog.length;
        return;
      }
      case 'repeat': {
        for (let i = 0; i < n.min; i++) gen(n.item);
        if (n.max === Number.POSITIVE_INFINITY) {
          // L: SPLIT body, out; body; JMP L
          const loop = emit({ op: SPLIT });
          prog[loop]!.x = prog.length;
          gen(n.item);
          emit({ op: JMP, x: loop });
          prog[loop]!.y = prog.length;
        } else {
          // (item (item (...)?)?)?: each optional copy may skip to the end.
          const splits: number[] = [];
          for (let i = n.min; i < n.max; i++) {
            const split = emit({ op: SPLIT });
            prog[split]!.x = prog.length;
            splits.push(split);
            gen(n.item);
          }
          for (const s of splits) prog[s]!.y = prog.length;
        }
        return;
      }
    }
  };
  gen(ast);
  emit({ op: MATCH });
  return prog;
}

function tooCostly(): FilterPatternError {
  return new FilterPatternError(`pattern too costly to match against every item (over ${FILTER_STEP_BUDGET} steps)`);
}

function assertHolds(kind: Assertion, s: string, i: number): boolean {
  switch (kind) {
    case 'start':
      return i === 0;
    case 'end':
      return i === s.length;
    case 'endOrFinalNewline':
      return i === s.length || (i === s.length - 1 && s.charCodeAt(i) === NEWLINE);
    case 'wordBoundary':
    case 'notWordBoundary': {
      const before = i > 0 && isWord(s.charCodeAt(i - 1));
      const after = i < s.length && isWord(s.charCodeAt(i));
      return (before !== after) === (kind === 'wordBoundary');
    }
  }
}

/** Pike VM: every thread advances in lock step over the subject; no backtracking. */
function vm(prog: Inst[]): FilterPattern {
  const n = prog.length;
  // Allocated once per pattern, reused for every subject (matching is synchronous).
  let clist = new Int32Array(n);
  let nlist = new Int32Array(n);
  // mark[pc] === generation: pc is already on the list being built for the current position.
  const mark = new Uint32Array(n);
  let generation = 0;
  const stack = new Int32Array(n * 2 + 2);
  let s = '';
  let steps = 0;

  /**
   * Adds `start`, and what it leads to without consuming input, to `list` (holding `count` threads) at
   * position `i`: the new count, or -1 when MATCH is reached.
   */
  const add = (list: Int32Array, count: number, start: number, i: number): number => {
    let sp = 0;
    stack[sp++] = start;
    while (sp > 0) {
      const pc = stack[--sp]!;
      if (mark[pc] === generation) continue;
      mark[pc] = generation;
      steps++;
      const inst = prog[pc]!;
      switch (inst.op) {
        case CHAR:
          list[count++] = pc;
          break;
        case MATCH:
          return -1;
        case JMP:
          stack[sp++] = inst.x!;
          break;
        case SPLIT:
          stack[sp++] = inst.y!;
          stack[sp++] = inst.x!;
          break;
        case ASSERT:
          if (assertHolds(inst.kind!, s, i)) stack[sp++] = pc + 1;
          break;
      }
    }
    return count;
  };

  const nextGeneration = () => {
    if (++generation === 0xffffffff) {
      mark.fill(0);
      generation = 1;
    }
  };

  const search = (budget: Budget): boolean => {
    nextGeneration();
    let ccount = 0;
    for (let i = 0; ; i++) {
      // Unanchored: a new thread starts at every position (same generation as the list it joins).
      ccount = add(clist, ccount, 0, i);
      if (ccount < 0) return true;
      if (i === s.length) return false;
      nextGeneration();
      let ncount = 0;
      if (ccount > 0) {
        const c = s.charCodeAt(i);
        for (let k = 0; k < ccount; k++) {
          const pc = clist[k]!;
          steps++;
          if (prog[pc]!.test!(c)) {
            ncount = add(nlist, ncount, pc + 1, i + 1);
            if (ncount < 0) return true;
          }
        }
      }
      if (steps > 4096) {
        budget.steps -= steps;
        steps = 0;
        if (budget.steps < 0) throw tooCostly();
      }
      [clist, nlist] = [nlist, clist];
      ccount = ncount;
    }
  };

  return {
    test(subject, budget) {
      s = subject;
      steps = 0;
      try {
        return search(budget);
      } finally {
        budget.steps -= steps;
        s = '';
      }
    },
  };
}

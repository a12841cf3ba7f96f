/**
 * Route matcher with the semantics of APISIX 3.x's default `radixtree_host_uri` router
 * (lua-resty-radixtree underneath); see /work/shared/reference/apisix-facts.md §3.
 *
 * Layout of a compiled router:
 * - host-bound routes: a `Map` from exact host to a URI table, plus a radix tree over *reversed* wildcard
 *   suffixes (`*.foo.com` → `moc.oof.`; `*` → the empty suffix at the root), each node holding a URI table;
 * - host-less routes: one URI table, tried only when no host-bound route matched.
 * A URI table is a `Map` from exact path to candidates, plus a radix tree over prefixes (for `/a/*`, `/a*`
 * and param patterns), each node holding the candidates whose prefix ends there.
 *
 * Why radix trees rather than "Map per prefix + list of distinct prefix lengths": the tree is walked once,
 * down along the request path (one child lookup by char code and one `startsWith` per node), then unwound
 * longest-first, which is exactly the "longest prefix first" order; it costs O(path length) whatever the
 * number of routes or of distinct prefix lengths, and it allocates nothing, where the length list needs a
 * `slice` (a new string, then a hash) per candidate length. The same walk, reading the host from its end,
 * gives the wildcard host buckets from the longest suffix to the shortest.
 *
 * Candidates inside a bucket are kept sorted as they are inserted at build time: priority desc, then longer
 * original path string first, then insertion order (the order of `routes`, then of a route's `paths`).
 * Nothing is compiled per request: param patterns become a segment list (or, rarely, a RegExp) at build time.
 */
import { compileIpMatcher, type IpMatcher } from './ip.ts';
import type { MatchInput, MatchResult, Router, RouteSpec } from './types.ts';

export type { MatchInput, MatchResult, Router, RouteSpec } from './types.ts';
export { normalizePath } from './path.ts';

/**
 * How much work `match` did, for test/unit/router.test.ts, which checks that it does not grow with the number of
 * routes: `candidates` counts the route paths whose conditions were checked, `nodes` the radix-tree nodes and
 * exact-path lookups visited, over every router since the last reset. Kept below 2^30 (small integers stay
 * unboxed); nothing but the tests reads them.
 */
let candidatesTried = 0;
let nodesVisited = 0;
const WORK_MASK = 0x3fffffff;

export function routerWork(): { candidates: number; nodes: number } {
  return { candidates: candidatesTried, nodes: nodesVisited };
}

export function resetRouterWork(): void {
  candidatesTried = 0;
  nodesVisited = 0;
}

/** Shared params object for matches without captures. */
const EMPTY_PARAMS: Record<string, string> = Object.freeze({}) as Record<string, string>;

const KIND_EXACT = 0;
/** Pattern ending in its only `*`: prefix match, the rest of the path is `:ext`. */
const KIND_PREFIX = 1;
/** Pattern with a `:` or a non-trailing `*`: prefix match, then the full pattern is checked (see parsePattern). */
const KIND_PARAM = 2;

interface Candidate<T> {
  readonly data: T;
  readonly filter: NonNullable<RouteSpec<T>['filter']> | null;
  readonly order: number;
  readonly priority: number;
  /** Length of the original path pattern (tie-break: longer first). */
  readonly patternLength: number;
  readonly kind: number;
  /** For KIND_PREFIX: length of the prefix, i.e. where `:ext` starts. */
  readonly prefixLength: number;
  readonly methods: ReadonlySet<string> | null;
  readonly ip: IpMatcher | null;
  /** For KIND_PARAM: where the compiled segments start (see ParsedPattern). */
  readonly tailStart: number;
  readonly segments: readonly string[] | null;
  readonly segmentKinds: readonly number[] | null;
  readonly regex: RegExp | null;
  readonly names: readonly string[];
  /** Precomputed result for matches without captures (KIND_EXACT), shared by all its matches. */
  readonly result: MatchResult<T> | null;
}

/** Above this many children a node indexes them in a Map; below, a linear scan of char codes is cheaper. */
const MAX_LINEAR_CHILDREN = 8;

class RadixNode<V> {
  label: string;
  /** First char code of each child's label, parallel to `nodes`. */
  keys: number[] | null = null;
  nodes: RadixNode<V>[] | null = null;
  /** Set instead of a linear scan once there are more than MAX_LINEAR_CHILDREN children. */
  map: Map<number, RadixNode<V>> | null = null;
  value: V | undefined = undefined;
  constructor(label: string) {
    this.label = label;
  }
}

function childOf<V>(node: RadixNode<V>, c: number): RadixNode<V> | undefined {
  if (node.map !== null) return node.map.get(c);
  const keys = node.keys;
  if (keys === null) return undefined;
  for (let i = 0; i < keys.length; i++) if (keys[i] === c) return node.nodes![i];
  return undefined;
}

function setChild<V>(node: RadixNode<V>, c: number, child: RadixNode<V>): void {
  if (node.map !== null) {
    node.map.set(c, child);
    return;
  }
  if (node.keys === null) {
    node.keys = [c];
    node.nodes = [child];
    return;
  }
  const keys = node.keys;
  const nodes = node.nodes!;
  const i = keys.indexOf(c);
  if (i >= 0) {
    nodes[i] = child;
  } else if (keys.length < MAX_LINEAR_CHILDREN) {
    keys.push(c);
    nodes.push(child);
  } else {
    const map = new Map<number, RadixNode<V>>();
    for (let k = 0; k < keys.length; k++) map.set(keys[k]!, nodes[k]!);
    map.set(c, child);
    node.map = map;
    node.keys = null;
    node.nodes = null;
  }
}

/** Returns the node for `key`, creating it (and splitting an edge) as needed. */
function radixInsert<V>(root: RadixNode<V>, key: string): RadixNode<V> {
  let node = root;
  let i = 0;
  for (;;) {
    if (i === key.length) return node;
    const c = key.charCodeAt(i);
    let child = childOf(node, c);
    if (child === undefined) {
      child = new RadixNode<V>(i === 0 ? key : key.slice(i));
      setChild(node, c, child);
      return child;
    }
    const label = child.label;
    let j = 1;
    while (j < label.length && i + j < key.length && label.charCodeAt(j) === key.charCodeAt(i + j)) j++;
    if (j < label.length) {
      // Split the edge: node → mid(label[0, j)) → child(label[j…]).
      const mid = new RadixNode<V>(label.slice(0, j));
      child.label = label.slice(j);
      setChild(mid, child.label.charCodeAt(0), child);
      setChild(node, c, mid);
      child = mid;
    }
    node = child;
    i += j;
  }
}

interface UriTable<T> {
  exact: Map<string, Candidate<T>[]>;
  prefix: RadixNode<Candidate<T>[]>;
  hasPrefix: boolean;
}

function newTable<T>(): UriTable<T> {
  return { exact: new Map(), prefix: new RadixNode(''), hasPrefix: false };
}

/** `a` before `b`: priority desc, then longer original path string, then insertion order. */
function comesBefore<T>(a: Candidate<T>, b: Candidate<T>): boolean {
  if (a.priority !== b.priority) return a.priority > b.priority;
  if (a.patternLength !== b.patternLength) return a.patternLength > b.patternLength;
  return a.order < b.order;
}

/** Inserts in order (routes arrive in insertion order, so this is usually a push). */
function insertInOrder<T>(list: Candidate<T>[], cand: Candidate<T>): void {
  let i = list.length;
  list.push(cand);
  while (i > 0 && comesBefore(cand, list[i - 1]!)) {
    list[i] = list[i - 1]!;
    i--;
  }
  list[i] = cand;
}

function addToTable<T>(table: UriTable<T>, cand: Candidate<T>, key: string): void {
  if (cand.kind === KIND_EXACT) {
    const list = table.exact.get(key);
    if (list === undefined) table.exact.set(key, [cand]);
    else insertInOrder(list, cand);
  } else {
    table.hasPrefix = true;
    const node = radixInsert(table.prefix, key);
    if (node.value === undefined) node.value = [cand];
    else insertInOrder(node.value, cand);
  }
}

function escapeRegExp(s: string): string {
  return s.replace(/[\\^$.*+?()[\]{}|/]/g, '\\$&');
}

const NO_NAMES: readonly string[] = [];
const EXT_NAMES: readonly string[] = [':ext'];

const SEG_LITERAL = 0;
/** `:name`: one non-empty segment, `([^/]+)`. */
const SEG_PARAM = 1;
/** `*name` / `*`: the rest of the path, `([\s\S]*)`; only as the last segment (else a RegExp is used). */
const SEG_REST = 2;

interface ParsedPattern {
  kind: number;
  /** Exact path, or the prefix for the radix tree. */
  key: string;
  /** KIND_PARAM: where the first segment holding a `:`/`*` starts; `segments` describe the path from there. */
  tailStart: number;
  /** KIND_PARAM: segment texts (literal text, or the capture name) and kinds; null when `regex` is used. */
  segments: string[] | null;
  segmentKinds: number[] | null;
  /** KIND_PARAM with a `*` segment that is not the last one (needs backtracking). */
  regex: RegExp | null;
  names: readonly string[];
}

/**
 * Splits a path pattern the way lua-resty-radixtree does (with `:name` parsing on):
 * - no `:` and no `*` → exact;
 * - the only `*` is the last char → prefix = the text before it, rest of the path = `:ext`;
 * - otherwise → param route: prefix = text before the first `:` or `*`, then the full pattern is checked:
 *   a segment `:name` is `([^/]+)`, a segment `*name` is `([\s\S]*)` (`*` alone → `:ext`), anything else
 *   is literal. Checked by a segment walk built here (no RegExp, no allocation on a miss); only a pattern
 *   with a `*` segment before its last segment, which needs backtracking, gets a RegExp (built here too).
 * Deliberate differences from lua-resty-radixtree (which builds the regex without escaping and without
 * anchors, and skips it when no segment names a capture): literal text is literal and the whole path must
 * match, so `/a/b*c` or `/a/b:c` only match themselves instead of any path under `/a/b`; and the `*`
 * capture group is single, so names after a `*name` segment are not shifted by an inner group.
 */
function parsePattern(pattern: string): ParsedPattern {
  const colon = pattern.indexOf(':');
  const star = pattern.indexOf('*');
  if (colon < 0 && star < 0) {
    return {
      kind: KIND_EXACT,
      key: pattern,
      tailStart: 0,
      segments: null,
      segmentKinds: null,
      regex: null,
      names: NO_NAMES,
    };
  }
  if (colon < 0 && star === pattern.length - 1) {
    return {
      kind: KIND_PREFIX,
      key: pattern.slice(0, star),
      tailStart: 0,
      segments: null,
      segmentKinds: null,
      regex: null,
      names: EXT_NAMES,
    };
  }
  const first = colon < 0 ? star : star < 0 ? colon : Math.min(colon, star);
  const key = pattern.slice(0, first);
  // Everything before the segment holding the first `:`/`*` is literal and already checked by the prefix
  // walk (the request path starts with `key`), so only the segments from there on are compiled.
  const tailStart = pattern.lastIndexOf('/', first) + 1;
  const segments = (tailStart === 0 ? pattern : pattern.slice(tailStart)).split('/');
  const segmentKinds: number[] = [];
  const names: string[] = [];
  let restBeforeEnd = false;
  for (let i = 0; i < segments.length; i++) {
    const seg = segments[i]!;
    const c = seg.charCodeAt(0);
    if (c === 58 /* : */) {
      segmentKinds.push(SEG_PARAM);
      segments[i] = seg.slice(1);
      names.push(segments[i]!);
    } else if (c === 42 /* * */) {
      segmentKinds.push(SEG_REST);
      segments[i] = seg.length === 1 ? ':ext' : seg.slice(1);
      names.push(segments[i]!);
      if (i < segments.length - 1) restBeforeEnd = true;
    } else {
      segmentKinds.push(SEG_LITERAL);
    }
  }
  // `push` leaves spare capacity (~17 slots); keep exact-size copies since thousands of these stay alive.
  const exactNames = names.slice();
  if (!restBeforeEnd) {
    return {
      kind: KIND_PARAM,
      key,
      tailStart,
      segments,
      segmentKinds: segmentKinds.slice(),
      regex: null,
      names: exactNames,
    };
  }
  let source = '^' + escapeRegExp(pattern.slice(0, tailStart));
  for (let i = 0; i < segments.length; i++) {
    if (i > 0) source += '\\/';
    const k = segmentKinds[i];
    source += k === SEG_PARAM ? '([^/]+)' : k === SEG_REST ? '([\\s\\S]*)' : escapeRegExp(segments[i]!);
  }
  return {
    kind: KIND_PARAM,
    key,
    tailStart,
    segments: null,
    segmentKinds: null,
    regex: new RegExp(source + '$'),
    names: exactNames,
  };
}

/** Capture boundaries of the last segment walk: start, end pairs. Reused (matching is synchronous). */
let captureBounds = new Int32Array(16);

/** Walks `path` along a param pattern; on success the captures are in `captureBounds`. */
function walkSegments(path: string, start: number, segments: readonly string[], kinds: readonly number[]): boolean {
  const len = path.length;
  let pos = start;
  let capture = 0;
  for (let i = 0; i < segments.length; i++) {
    if (i > 0) {
      if (pos >= len || path.charCodeAt(pos) !== 47 /* / */) return false;
      pos++;
    }
    const kind = kinds[i];
    if (kind === SEG_LITERAL) {
      const seg = segments[i]!;
      if (!path.startsWith(seg, pos)) return false;
      pos += seg.length;
    } else if (kind === SEG_PARAM) {
      let end = path.indexOf('/', pos);
      if (end < 0) end = len;
      if (end === pos) return false;
      captureBounds[capture++] = pos;
      captureBounds[capture++] = end;
      pos = end;
    } else {
      // SEG_REST, necessarily the last segment here.
      captureBounds[capture++] = pos;
      captureBounds[capture++] = len;
      pos = len;
    }
  }
  return pos === len;
}

function makeCandidate<T>(
  spec: RouteSpec<T>,
  pattern: string,
  parsed: ParsedPattern,
  order: number,
  methods: ReadonlySet<string> | null,
  ip: IpMatcher | null,
): Candidate<T> {
  if (parsed.names.length * 2 > captureBounds.length) captureBounds = new Int32Array(parsed.names.length * 2);
  return {
    data: spec.data,
    filter: spec.filter ?? null,
    order,
    priority: spec.priority || 0,
    patternLength: pattern.length,
    kind: parsed.kind,
    prefixLength: parsed.key.length,
    tailStart: parsed.tailStart,
    methods,
    ip,
    segments: parsed.segments,
    segmentKinds: parsed.segmentKinds,
    regex: parsed.regex,
    names: parsed.names,
    result: parsed.kind === KIND_EXACT ? { data: spec.data, params: EMPTY_PARAMS } : null,
  };
}

/** Method and remote address checks (the path is checked by the caller, the filter last). */
function conditionsPass<T>(cand: Candidate<T>, input: MatchInput): boolean {
  if (cand.methods !== null && !cand.methods.has(input.method)) return false;
  if (cand.ip !== null && (input.remoteAddr === undefined || !cand.ip.match(input.remoteAddr))) return false;
  return true;
}

function tryCandidates<T>(list: Candidate<T>[], input: MatchInput): MatchResult<T> | undefined {
  const path = input.path;
  for (let i = 0; i < list.length; i++) {
    const cand = list[i]!;
    candidatesTried = (candidatesTried + 1) & WORK_MASK;
    if (!conditionsPass(cand, input)) continue;
    let result: MatchResult<T>;
    if (cand.kind === KIND_EXACT) {
      result = cand.result!;
    } else if (cand.kind === KIND_PREFIX) {
      result = { data: cand.data, params: { ':ext': path.slice(cand.prefixLength) } };
    } else if (cand.regex === null) {
      if (!walkSegments(path, cand.tailStart, cand.segments!, cand.segmentKinds!)) continue;
      const params: Record<string, string> = {};
      const names = cand.names;
      for (let k = 0; k < names.length; k++)
        params[names[k]!] = path.slice(captureBounds[2 * k]!, captureBounds[2 * k + 1]!);
      result = { data: cand.data, params };
    } else {
      const m = cand.regex.exec(path);
      if (m === null) continue;
      const params: Record<string, string> = {};
      const names = cand.names;
      for (let k = 0; k < names.length; k++) params[names[k]!] = m[k + 1] ?? '';
      result = { data: cand.data, params };
    }
    if (cand.filter !== null && !cand.filter(input, result.params)) continue;
    return result;
  }
  return undefined;
}

/** Walks down the prefix tree along `path`, then tries the buckets on the way back up (longest first). */
function walkPrefix<T>(
  node: RadixNode<Candidate<T>[]>,
  path: string,
  pos: number,
  input: MatchInput,
): MatchResult<T> | undefined {
  nodesVisited = (nodesVisited + 1) & WORK_MASK;
  if (pos < path.length) {
    const child = childOf(node, path.charCodeAt(pos));
    if (child !== undefined && path.startsWith(child.label, pos)) {
      const r = walkPrefix(child, path, pos + child.label.length, input);
      if (r !== undefined) return r;
    }
  }
  const list = node.value;
  return list === undefined ? undefined : tryCandidates(list, input);
}

function matchTable<T>(table: UriTable<T>, input: MatchInput): MatchResult<T> | undefined {
  nodesVisited = (nodesVisited + 1) & WORK_MASK;
  const list = table.exact.get(input.path);
  if (list !== undefined) {
    const r = tryCandidates(list, input);
    if (r !== undefined) return r;
  }
  return table.hasPrefix ? walkPrefix(table.prefix, input.path, 0, input) : undefined;
}

/** Like walkPrefix, over reversed wildcard suffixes: `consumed` chars have been read from the host's end. */
function walkHostSuffix<T>(
  node: RadixNode<UriTable<T>>,
  host: string,
  consumed: number,
  input: MatchInput,
): MatchResult<T> | undefined {
  nodesVisited = (nodesVisited + 1) & WORK_MASK;
  const end = host.length - consumed; // host[0, end) is still unread
  if (end > 0) {
    const child = childOf(node, host.charCodeAt(end - 1));
    if (child !== undefined) {
      const label = child.label;
      const n = label.length;
      let ok = n <= end;
      for (let k = 1; ok && k < n; k++) ok = label.charCodeAt(k) === host.charCodeAt(end - 1 - k);
      if (ok) {
        const r = walkHostSuffix(child, host, consumed + n, input);
        if (r !== undefined) return r;
      }
    }
  }
  const table = node.value;
  return table === undefined ? undefined : matchTable(table, input);
}

function reverse(s: string): string {
  let r = '';
  for (let i = s.length - 1; i >= 0; i--) r += s[i];
  return r;
}

class CompiledRouter<T> implements Router<T> {
  readonly size: number;
  private readonly hostExact = new Map<string, UriTable<T>>();
  private readonly hostWild = new RadixNode<UriTable<T>>('');
  private hasHostWild = false;
  private readonly anyHost = newTable<T>();
  private readonly anyHostOnly: readonly UriTable<T>[] = [this.anyHost];

  constructor(routes: readonly RouteSpec<T>[]) {
    this.size = routes.length;
    // Routes mostly share a handful of method lists: one Set per distinct list.
    const methodSets = new Map<string, ReadonlySet<string>>();
    const methodSet = (methods: readonly string[]): ReadonlySet<string> => {
      const key = methods.length === 1 ? methods[0]! : methods.join(' ');
      let set = methodSets.get(key);
      if (set === undefined) {
        set = new Set(methods);
        methodSets.set(key, set);
      }
      return set;
    };
    let order = 0;
    for (const spec of routes) {
      const methods = spec.methods !== undefined && spec.methods.length > 0 ? methodSet(spec.methods) : null;
      let ip: IpMatcher | null = null;
      if (spec.remoteAddrs !== undefined && spec.remoteAddrs.length > 0) {
        try {
          ip = compileIpMatcher(spec.remoteAddrs);
        } catch (err) {
          throw new Error(`route ${spec.id}: ${(err as Error).message}`);
        }
      }
      const tables = this.tablesFor(spec.hosts);
      for (const pattern of spec.paths) {
        const parsed = parsePattern(pattern);
        const cand = makeCandidate(spec, pattern, parsed, order++, methods, ip);
        for (const table of tables) addToTable(table, cand, parsed.key);
      }
    }
  }

  /** The URI tables a route goes into: one per distinct host, or the host-less table. */
  private tablesFor(hosts: readonly string[] | undefined): readonly UriTable<T>[] {
    if (hosts === undefined || hosts.length === 0) return this.anyHostOnly;
    const tables = new Set<UriTable<T>>();
    for (const raw of hosts) {
      // Route hosts are lower-cased here while the request host is already lower-case. Deliberate
      // improvement over APISIX's radixtree_host_uri, where a route host with upper-case letters never
      // matches (it is reversed without lower-casing and compared with the lower-case `$host`).
      const host = raw.toLowerCase();
      if (host.charCodeAt(0) === 42 /* * */) {
        this.hasHostWild = true;
        const node = radixInsert(this.hostWild, reverse(host.slice(1)));
        node.value ??= newTable();
        tables.add(node.value);
      } else {
        let table = this.hostExact.get(host);
        if (table === undefined) {
          table = newTable();
          this.hostExact.set(host, table);
        }
        tables.add(table);
      }
    }
    return [...tables];
  }

  match(input: MatchInput): MatchResult<T> | undefined {
    if (this.hostExact.size > 0) {
      const table = this.hostExact.get(input.host);
      if (table !== undefined) {
        const r = matchTable(table, input);
        if (r !== undefined) return r;
      }
    }
    if (this.hasHostWild) {
      const r = walkHostSuffix(this.hostWild, input.host, 0, input);
      if (r !== undefined) return r;
    }
    return matchTable(this.anyHost, input);
  }
}

/**
 * Compiles routes into a matcher. Throws when a route's `remoteAddrs` holds an unparsable entry.
 * Match results may be shared between calls (an exact-path match returns the same object each time, with a
 * frozen empty `params`): treat them as read-only.
 */
export function compileRouter<T>(routes: RouteSpec<T>[]): Router<T> {
  return new CompiledRouter(routes);
}

/** What the router needs to know of one route. Built from a stored APISIX route at config time. */
export interface RouteSpec<T> {
  /** Route id, for stable ordering and diagnostics. */
  id: string;
  /** The route's `uri`, or each of its `uris`. */
  paths: string[];
  /** Upper-case method names; undefined or empty = any method. */
  methods?: string[];
  /** `hosts`, or `[host]`; undefined = any host. May hold `*.example.com` wildcards or `*`. */
  hosts?: string[];
  /** `remote_addrs` or `[remote_addr]`: IPv4/IPv6 addresses or CIDRs; undefined = any client. */
  remoteAddrs?: string[];
  /** Higher wins among routes with the identical path string. Default 0. */
  priority: number;
  /** Whatever the caller wants back on a match (the compiled route). */
  data: T;
  /**
   * Optional extra condition (APISIX `vars` / `filter_func`), called only for a candidate whose path,
   * methods and remote address already matched, with the captures it would get; `false` moves on to the
   * next candidate, exactly like a failing `vars` does in APISIX. Must be synchronous and cheap.
   */
  filter?: (input: MatchInput, params: Readonly<Record<string, string>>) => boolean;
}

export interface MatchInput {
  method: string;
  /** Lower-case host without port (nginx `$host`). */
  host: string;
  /** Normalised path (see normalizePath): decoded, `//` merged, dot segments resolved, no query. */
  path: string;
  /** Client address, for remote_addrs. */
  remoteAddr?: string;
  /** Opaque per-request context for `RouteSpec.filter` (e.g. the request's vars); the router ignores it. */
  ctx?: unknown;
}

export interface MatchResult<T> {
  data: T;
  /** Captures: `:name` and `*name` segments by name; a trailing `*` under the key `:ext` (APISIX). */
  params: Record<string, string>;
}

export interface Router<T> {
  match(input: MatchInput): MatchResult<T> | undefined;
  /** Number of routes compiled in. */
  readonly size: number;
}

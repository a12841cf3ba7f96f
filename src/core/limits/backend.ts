/**
 * Rate-limit state that outlives snapshots: the counters of limit-count, the leaky buckets of limit-req and the
 * connection counts of limit-conn. The gateway owns one {@link LimitBackends} for its whole life and hands it to
 * every plugin instance (PluginEnv.limits), so a recompiled instance (an edit elsewhere in the config) finds its
 * counters where it left them: state is keyed by the owner's key, a hash of the conf and the client's key value
 * (APISIX 3.15+ `gen_limit_key`), never by the instance.
 *
 * `local` is this process's memory (bounded: expired windows are evicted); `redis` is made by the runtime entry
 * (Node, Deno, Bun) from a connection conf; a runtime without it refuses `policy: "redis"` confs.
 */

/** One limit-count decision. `resetS`: seconds until the window ends (APISIX's X-RateLimit-Reset). */
export interface CountDecision {
  allowed: boolean;
  /** Requests left in the window after this one (0 when rejected). */
  remaining: number;
  resetS: number;
}

export type MaybePromise<T> = T | Promise<T>;

export interface LimitBackend {
  /** limit-count: counts one request against `limit` per `windowS` seconds, fixed or sliding window. */
  count(key: string, limit: number, windowS: number, sliding: boolean): MaybePromise<CountDecision>;
  /**
   * limit-req (resty.limit.req's leaky bucket): the seconds this request must wait (0: none), or -1 when it is
   * beyond `burst` and must be rejected (then it is not counted). `rate` requests/s, `burst` requests.
   */
  leaky(key: string, rate: number, burst: number): MaybePromise<number>;
  /** limit-conn: one more request in flight; the count including it, or -1 (not counted) when it would pass `max`. */
  connIn(key: string, max: number): MaybePromise<number>;
  /** limit-conn: a counted request ended (log phase). */
  connOut(key: string): MaybePromise<void>;
}

/** APISIX's redis fields (apisix/utils/redis-schema.lua), as a plugin conf carries them. */
export interface RedisConf {
  cluster: boolean;
  /** `host:port` of each node (one for `redis`, the seed nodes for `redis-cluster`). */
  nodes: string[];
  username?: string;
  password?: string;
  database: number;
  /** ms; a call that takes longer fails (→ 500, or a pass with allow_degradation). */
  timeoutMs: number;
  ssl: boolean;
  sslVerify: boolean;
}

/**
 * What the core needs of a Redis client: run a Lua script atomically (one round trip) and get its reply. The
 * runtime entries inject one (src/runtime/redis.ts: node-redis); the core never imports a client, so none enters
 * the Worker bundle.
 */
export interface RedisClient {
  eval(script: string, keys: string[], args: string[]): Promise<unknown>;
  close(): Promise<void>;
}

export type RedisConnector = (conf: RedisConf) => RedisClient;

export interface LimitBackends {
  local: LimitBackend;
  /** The backend of one Redis connection conf (clients are shared by identical confs); undefined: no Redis. */
  redis?: (conf: RedisConf) => LimitBackend;
  /**
   * Why `policy: "local"` cannot be honoured on this runtime (Workers: per-isolate counters would limit nothing);
   * such a conf is refused with 400.
   */
  localRefused?: string;
  close(): Promise<void>;
}

/** How long a connection count lives after its last increment (APISIX limit-conn `key_ttl` default, 3600 s). */
export const CONN_TTL_MS = 3_600_000;

/** Upper bound on entries in the local store; beyond it the oldest entries go first. */
const MAX_LOCAL_ENTRIES = 1_000_000;

interface Entry {
  /** limit-count: hits in the window; limit-req: excess in milli-requests; limit-conn: requests in flight. */
  n: number;
  /** limit-count: window end; limit-req: time of the last request (ms since epoch). */
  t: number;
  /** When the entry may be dropped (ms since epoch). */
  expires: number;
}

/** This process's counters: a Map with lazy eviction of expired entries (swept every 4096 writes and on growth). */
export class LocalLimits implements LimitBackend {
  private readonly map = new Map<string, Entry>();
  private writes = 0;

  constructor(
    private readonly now: () => number = Date.now,
    private readonly maxEntries = MAX_LOCAL_ENTRIES,
  ) {}

  get size(): number {
    return this.map.size;
  }

  private get(key: string, now: number): Entry | undefined {
    const e = this.map.get(key);
    if (e !== undefined && e.expires <= now) {
      this.map.delete(key);
      return undefined;
    }
    return e;
  }

  private put(key: string, e: Entry): void {
    if (!this.map.has(key) && (++this.writes & 4095) === 0) this.sweep();
    if (this.map.size >= this.maxEntries && !this.map.has(key)) {
      this.sweep();
      // Still full: drop the oldest entries (insertion order), never grow without bound.
      for (const k of this.map.keys()) {
        if (this.map.size < this.maxEntries) break;
        this.map.delete(k);
      }
    }
    this.map.set(key, e);
  }

  /** The live entries (for a Durable Object's storage); Infinity is written as null. */
  dump(): [string, { n: number; t: number; expires: number | null }][] {
    this.sweep();
    return [...this.map].map(([k, e]) => [k, { n: e.n, t: e.t, expires: Number.isFinite(e.expires) ? e.expires : null }]);
  }

  /** Restores what {@link dump} gave. */
  load(entries: [string, { n: number; t: number; expires: number | null }][]): void {
    for (const [k, e] of entries) this.map.set(k, { n: e.n, t: e.t, expires: e.expires ?? Number.POSITIVE_INFINITY });
  }

  /** Drops every expired entry. */
  sweep(): void {
    const now = this.now();
    for (const [k, e] of this.map) if (e.expires <= now) this.map.delete(k);
  }

  count(key: string, limit: number, windowS: number, sliding: boolean): CountDecision {
    const now = this.now();
    const windowMs = windowS * 1000;
    if (sliding) return this.slidingCount(key, limit, windowMs, now);
    const e = this.get(key, now);
    if (e === undefined) {
      if (limit < 1) return { allowed: false, remaining: 0, resetS: windowS };
      this.put(key, { n: 1, t: now + windowMs, expires: now + windowMs });
      // APISIX: the first request of a window reports exactly time_window, later ones the time left.
      return { allowed: true, remaining: limit - 1, resetS: windowS };
    }
    if (e.n + 1 > limit) return { allowed: false, remaining: 0, resetS: Math.max(0, (e.t - now) / 1000) };
    e.n++; // the entry is in the map already: no second write
    return { allowed: true, remaining: limit - e.n, resetS: (e.t - now) / 1000 };
  }

  /** APISIX 3.18 sliding window (limit-count/sliding-window): this window's count plus the last one's, weighted. */
  private slidingCount(key: string, limit: number, windowMs: number, now: number): CountDecision {
    const wid = Math.floor(now / windowMs);
    const curKey = `${key}.${wid}`;
    const remainingMs = windowMs - (now % windowMs);
    const last = Math.min(this.get(`${key}.${wid - 1}`, now)?.n ?? 0, limit);
    const cur = this.get(curKey, now);
    const curN = cur?.n ?? 0;
    const lastRate = last / windowMs;
    const estimated = lastRate * remainingMs + curN;
    if (curN >= limit || estimated >= limit) {
      let waitMs = remainingMs;
      if (curN < limit && lastRate > 0) waitMs = Math.max(0, remainingMs - (limit - curN) / lastRate);
      return { allowed: false, remaining: 0, resetS: Math.ceil(waitMs / 10) / 100 };
    }
    const n = curN + 1;
    this.put(curKey, { n, t: 0, expires: (wid + 2) * windowMs });
    return {
      allowed: true,
      remaining: Math.max(0, Math.floor(limit - n - lastRate * remainingMs)),
      resetS: Math.ceil(remainingMs / 10) / 100,
    };
  }

  leaky(key: string, rate: number, burst: number): number {
    const now = this.now();
    const e = this.get(key, now);
    let excess = 0;
    if (e !== undefined) {
      // resty.limit.req: rate and burst in milli-requests; `rate` leaks per second, i.e. `rate` milli-requests per ms.
      excess = Math.max(e.n - rate * Math.abs(now - e.t) + 1000, 0);
      if (excess > burst * 1000) return -1;
    }
    // Once the bucket has leaked empty the entry means nothing: it expires then.
    this.put(key, { n: excess, t: now, expires: now + (excess + 1000) / rate });
    return excess / (rate * 1000);
  }

  connIn(key: string, max: number): number {
    const now = this.now();
    const e = this.get(key, now);
    const n = (e?.n ?? 0) + 1;
    if (n > max) return -1;
    // A count nobody added to for an hour is dropped (APISIX limit-conn's redis `key_ttl`): should a decrement
    // never arrive (a Durable Object call the platform cancelled after the answer), the key is not locked for ever.
    const expires = now + CONN_TTL_MS;
    if (e) {
      e.n = n;
      e.expires = expires;
    } else this.put(key, { n, t: 0, expires });
    return n;
  }

  connOut(key: string): void {
    const e = this.map.get(key);
    if (!e) return;
    if (--e.n <= 0) this.map.delete(key);
  }
}

/** A 53-bit hash of a conf's text (cyrb53), for counter keys: a changed conf starts new counters, as in APISIX. */
export function confHash(text: string): string {
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 2654435761);
    h2 = Math.imul(h2 ^ c, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return (4294967296 * (2097151 & h2) + (h1 >>> 0)).toString(36);
}

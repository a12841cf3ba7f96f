/**
 * The Redis policy of limit-count, limit-req and limit-conn: each decision is ONE Lua script run atomically by
 * Redis (one round trip per request and rule), so any number of gateway instances on one Redis enforce one limit.
 * The client comes from the runtime entry (RedisConnector); a reply that is not what the script returns (a
 * garbage-speaking server, a proxy in between) is an error, never a pass; so is a call slower than `redis_timeout`.
 */
import {
  CONN_TTL_MS,
  type CountDecision,
  type LimitBackend,
  type LimitBackends,
  LocalLimits,
  type RedisClient,
  type RedisConnector,
} from './backend.ts';

/** A Redis failure (unreachable, timed out, garbage reply): the plugin answers 500, or passes with allow_degradation. */
export class LimitBackendError extends Error {
  override name = 'LimitBackendError';
}

const PREFIX = 'fngate:';

// Fixed window: the first hit creates the key with the window as its TTL (APISIX: the window starts at the first hit).
const COUNT_FIXED = `local n = redis.call('incr', KEYS[1])
local ttl = redis.call('pttl', KEYS[1])
if ttl < 0 then redis.call('pexpire', KEYS[1], ARGV[1]) ttl = tonumber(ARGV[1]) end
return {n, ttl}`;

// APISIX 3.18 sliding window check_and_incr: KEYS = this window's and the last window's counters.
// ARGV = limit, window ms, ms left in this window, expiry ms.
const COUNT_SLIDING = `local limit = tonumber(ARGV[1])
local last = tonumber(redis.call('get', KEYS[2]) or '0')
if last > limit then last = limit end
local cur = tonumber(redis.call('get', KEYS[1]) or '0')
local est = last / tonumber(ARGV[2]) * tonumber(ARGV[3]) + cur
if cur >= limit or est >= limit then return {0, cur, last} end
local n = redis.call('incr', KEYS[1])
if n == 1 then redis.call('pexpire', KEYS[1], ARGV[4]) end
return {1, n, last}`;

// resty.limit.req's leaky bucket on Redis's clock (the instances' clocks need not agree). ARGV = rate (req/s), burst.
const LEAKY = `local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[1])
local v = redis.call('hmget', KEYS[1], 'e', 't')
local excess = 0
if v[1] then
  excess = math.max(tonumber(v[1]) - rate * math.abs(now - tonumber(v[2])) + 1000, 0)
  if excess > tonumber(ARGV[2]) * 1000 then return '-1' end
end
redis.call('hset', KEYS[1], 'e', tostring(excess), 't', tostring(now))
redis.call('pexpire', KEYS[1], math.ceil((excess + 1000) / rate) + 1000)
return tostring(excess)`;

// ARGV = max, safety TTL ms (a gateway killed mid-request leaves no count behind for ever).
const CONN_IN = `local n = redis.call('incr', KEYS[1])
if n > tonumber(ARGV[1]) then redis.call('decr', KEYS[1]) return -1 end
redis.call('pexpire', KEYS[1], ARGV[2])
return n`;

const CONN_OUT = `local n = redis.call('decr', KEYS[1])
if n <= 0 then redis.call('del', KEYS[1]) end
return n`;


const isInt = (x: unknown): x is number => typeof x === 'number' && Number.isInteger(x);

function garbage(what: string, reply: unknown): never {
  let text: string;
  try {
    text = JSON.stringify(reply)?.slice(0, 100) ?? String(reply);
  } catch {
    text = typeof reply;
  }
  throw new LimitBackendError(`redis answered something that is not a ${what} reply: ${text}`);
}

function numberOf(reply: unknown, what: string): number {
  const n = typeof reply === 'string' && reply.trim() !== '' ? Number(reply) : Number.NaN;
  if (!Number.isFinite(n)) garbage(what, reply);
  return n;
}

export class RedisLimits implements LimitBackend {
  constructor(
    private readonly client: RedisClient,
    private readonly timeoutMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  private run(script: string, keys: string[], args: (string | number)[]): Promise<unknown> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new LimitBackendError(`redis did not answer within redis_timeout (${this.timeoutMs} ms)`)),
        this.timeoutMs,
      );
    });
    const call = this.client.eval(script, keys, args.map(String)).catch((err: unknown) => {
      throw err instanceof LimitBackendError
        ? err
        : new LimitBackendError(`redis: ${err instanceof Error ? err.message : String(err)}`);
    });
    return Promise.race([call, timeout]).finally(() => clearTimeout(timer));
  }

  async count(key: string, limit: number, windowS: number, sliding: boolean): Promise<CountDecision> {
    const windowMs = Math.round(windowS * 1000);
    if (!sliding) {
      const r = await this.run(COUNT_FIXED, [`${PREFIX}${key}`], [windowMs]);
      if (!Array.isArray(r) || r.length !== 2 || !isInt(r[0]) || !isInt(r[1]) || r[0] < 1) garbage('counter', r);
      const [n, ttl] = r as [number, number];
      if (n > limit) return { allowed: false, remaining: 0, resetS: Math.max(0, ttl / 1000) };
      return { allowed: true, remaining: limit - n, resetS: n === 1 ? windowS : ttl / 1000 };
    }
    const now = this.now();
    const wid = Math.floor(now / windowMs);
    const remainingMs = windowMs - (now % windowMs);
    // One hash tag, so both keys live in one slot of a Redis cluster.
    const base = `${PREFIX}{${key}}`;
    const r = await this.run(COUNT_SLIDING, [`${base}.${wid}`, `${base}.${wid - 1}`], [
      limit,
      windowMs,
      remainingMs,
      windowMs * 2,
    ]);
    if (!Array.isArray(r) || r.length !== 3 || !r.every(isInt) || (r[0] !== 0 && r[0] !== 1)) garbage('counter', r);
    const [accepted, cur, last] = r as [number, number, number];
    const lastRate = last / windowMs;
    if (accepted === 0) {
      let waitMs = remainingMs;
      if (cur < limit && lastRate > 0) waitMs = Math.max(0, remainingMs - (limit - cur) / lastRate);
      return { allowed: false, remaining: 0, resetS: Math.ceil(waitMs / 10) / 100 };
    }
    return {
      allowed: true,
      remaining: Math.max(0, Math.floor(limit - cur - lastRate * remainingMs)),
      resetS: Math.ceil(remainingMs / 10) / 100,
    };
  }

  async leaky(key: string, rate: number, burst: number): Promise<number> {
    const r = await this.run(LEAKY, [`${PREFIX}${key}`], [rate, burst]);
    const excess = numberOf(r, 'leaky bucket');
    if (excess === -1) return -1;
    if (excess < 0) garbage('leaky bucket', r);
    return excess / (rate * 1000);
  }

  async connIn(key: string, max: number): Promise<number> {
    const r = await this.run(CONN_IN, [`${PREFIX}${key}`], [max, CONN_TTL_MS]);
    if (!isInt(r) || r === 0 || r < -1) garbage('connection count', r);
    return r as number;
  }

  async connOut(key: string): Promise<void> {
    const r = await this.run(CONN_OUT, [`${PREFIX}${key}`], []);
    if (!isInt(r)) garbage('connection count', r);
  }
}

export interface LimitBackendsOptions {
  /** The backend of `policy: "local"` (default: this process's memory; Workers: Durable Objects). */
  local?: LimitBackend;
  /** The runtime's Redis client factory; without it `policy: "redis"` is refused. */
  redis?: RedisConnector;
  /** See LimitBackends.localRefused. */
  localRefused?: string;
}

/** The gateway's limit state: one local store, and one Redis client per distinct connection conf. */
export function createLimitBackends(opts: LimitBackendsOptions = {}): LimitBackends {
  const local = opts.local ?? new LocalLimits();
  const clients = new Map<string, { client: RedisClient; backend: RedisLimits }>();
  const connect = opts.redis;
  return {
    local,
    localRefused: opts.localRefused,
    redis: connect
      ? (conf) => {
          const id = JSON.stringify(conf);
          let entry = clients.get(id);
          if (!entry) {
            const client = connect(conf);
            entry = { client, backend: new RedisLimits(client, conf.timeoutMs) };
            clients.set(id, entry);
          }
          return entry.backend;
        }
      : undefined,
    async close() {
      const all = [...clients.values()];
      clients.clear();
      await Promise.allSettled(all.map((e) => e.client.close()));
    },
  };
}

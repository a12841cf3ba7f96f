/**
 * Who may talk to the Admin API at all, checked before the key: the client address allow list (APISIX's
 * `deployment.admin.allow_admin`) and a limit on failed key checks per client.
 */
import { compileIpMatcher, type IpMatcher, parseIPv4, parseIPv6 } from '../router/ip.ts';

/** APISIX's default `allow_admin`, plus IPv6 loopback (a dual-stack or `::1` listener reports it). */
export const DEFAULT_ADMIN_ALLOW: readonly string[] = ['127.0.0.0/24', '::1'];

/**
 * Compiles an allow list; throws `Error('invalid IP address: …')` on an entry that is not an IPv4/IPv6 address
 * or CIDR. `0.0.0.0/0` admits every IPv4 client (IPv4-mapped IPv6 ones too); add `::/0` for IPv6 clients.
 */
export function compileAllowList(entries: readonly string[]): IpMatcher {
  return compileIpMatcher(entries);
}

/** The address as people write it: `::ffff:1.2.3.4` (an IPv4 client of a dual-stack socket) → `1.2.3.4`. */
export function displayIp(ip: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  return m ? m[1]! : ip;
}

/**
 * The bucket a client's failures are counted in: the IPv4 address, or the /64 of an IPv6 address (one host
 * usually owns a whole /64, so counting single IPv6 addresses would let it rotate through them).
 */
export function clientBucket(ip: string): string {
  const shown = displayIp(ip);
  if (parseIPv4(shown) >= 0) return shown;
  let addr = shown;
  if (addr.startsWith('[') && addr.endsWith(']')) addr = addr.slice(1, -1);
  const zone = addr.indexOf('%');
  if (zone >= 0) addr = addr.slice(0, zone);
  const w = parseIPv6(addr);
  if (!w) return shown;
  const hex = (n: number) => n.toString(16).padStart(8, '0');
  return `${hex(w[0])}${hex(w[1])}::/64`;
}

export interface AuthLimitOptions {
  /** Failed key checks allowed per client within `windowMs`; the next one blocks the client. Default 10. */
  maxFailures?: number;
  /** Window of the failure count, and how long a blocked client stays blocked, ms. Default 60000. */
  windowMs?: number;
  /** Clients tracked at most; beyond that the least recently seen entry is dropped. Default 10000. */
  maxClients?: number;
  /** Clock in ms; injectable for tests. */
  now?: () => number;
}

interface Entry {
  /** Start of the current counting window. */
  since: number;
  failures: number;
  /** Set when blocked: ms timestamp until which every request of the client is refused with 429. */
  blockedUntil: number;
}

/**
 * Counts failed admin key checks per client. After `maxFailures` failures within `windowMs` the client is
 * blocked for `windowMs`: every admin request it sends, even with the right key, gets 429 and `Retry-After`.
 * A successful check clears the count. Memory is bounded: at most `maxClients` entries, least recently seen
 * dropped first (a Map keeps insertion order; an entry is re-inserted whenever it changes).
 */
export class AuthLimiter {
  readonly maxFailures: number;
  readonly windowMs: number;
  readonly maxClients: number;
  private readonly now: () => number;
  private readonly entries = new Map<string, Entry>();

  constructor(opts: AuthLimitOptions = {}) {
    this.maxFailures = opts.maxFailures ?? 10;
    this.windowMs = opts.windowMs ?? 60_000;
    this.maxClients = opts.maxClients ?? 10_000;
    this.now = opts.now ?? Date.now;
  }

  /** Seconds the client must still wait (≥ 1), or 0 when it may try. */
  blockedFor(bucket: string): number {
    const e = this.entries.get(bucket);
    if (!e || e.blockedUntil === 0) return 0;
    const left = e.blockedUntil - this.now();
    if (left <= 0) {
      this.entries.delete(bucket);
      return 0;
    }
    return Math.max(1, Math.ceil(left / 1000));
  }

  /** Records a failed check; returns the seconds the client is now blocked for (0 while under the limit). */
  fail(bucket: string): number {
    const t = this.now();
    let e = this.entries.get(bucket);
    if (e) this.entries.delete(bucket);
    if (!e || t - e.since >= this.windowMs) e = { since: t, failures: 0, blockedUntil: 0 };
    e.failures++;
    if (e.failures >= this.maxFailures) e.blockedUntil = t + this.windowMs;
    this.entries.set(bucket, e);
    while (this.entries.size > this.maxClients) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
    return e.blockedUntil ? Math.max(1, Math.ceil(this.windowMs / 1000)) : 0;
  }

  /** A successful check forgets the client's failures. */
  succeed(bucket: string): void {
    this.entries.delete(bucket);
  }

  /** Clients tracked now (for tests and metrics). */
  get size(): number {
    return this.entries.size;
  }
}

/**
 * IPv4 / IPv6 address and CIDR matching for a route's `remote_addrs` (APISIX uses lua-resty-ipmatcher).
 *
 * Route entries are compiled once into 32-bit words (IPv4: one uint32; IPv6: four uint32 words) plus masks.
 * A request address is parsed by a hand-written char loop into module-level scratch storage, so a match
 * allocates nothing; the last parsed address is cached (JS is single-threaded and matching is synchronous),
 * so trying several candidates with `remote_addrs` for one request parses the client address once.
 *
 * Written in-house rather than using `ipaddr.js`: ~150 lines, zero allocation per match, no dependency.
 */

/** Parses a strict dotted-quad IPv4 address in `s[start, end)`. Returns the uint32 value, or -1. */
function parseIPv4Range(s: string, start: number, end: number): number {
  let value = 0;
  let parts = 0;
  let i = start;
  while (parts < 4) {
    let octet = 0;
    let digits = 0;
    const first = i;
    while (i < end) {
      const c = s.charCodeAt(i);
      if (c < 48 || c > 57) break;
      octet = octet * 10 + (c - 48);
      digits++;
      i++;
    }
    // 1–3 digits, ≤ 255, no leading zero (like inet_pton).
    if (digits === 0 || digits > 3 || octet > 255 || (digits > 1 && s.charCodeAt(first) === 48)) return -1;
    value = value * 256 + octet;
    parts++;
    if (parts < 4) {
      if (i >= end || s.charCodeAt(i) !== 46) return -1;
      i++;
    }
  }
  return i === end ? value : -1;
}

/** Parses a strict dotted-quad IPv4 address. Returns the uint32 value, or -1 when `s` is not one. */
export function parseIPv4(s: string): number {
  return parseIPv4Range(s, 0, s.length);
}

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}

const groups = new Uint16Array(8);

/** Parses an IPv6 address in `s[start, end)` (with `::` and an IPv4 tail) into `groups`. */
function parseIPv6Groups(s: string, start: number, end: number): boolean {
  let n = 0;
  let gap = -1; // group index where `::` sits
  let i = start;
  if (i >= end) return false;
  if (s.charCodeAt(i) === 58) {
    if (i + 1 >= end || s.charCodeAt(i + 1) !== 58) return false;
    gap = 0;
    i += 2;
  }
  while (i < end) {
    if (n === 8) return false;
    let v = 0;
    let digits = 0;
    let j = i;
    while (j < end) {
      const h = hexValue(s.charCodeAt(j));
      if (h < 0) break;
      v = v * 16 + h;
      digits++;
      j++;
    }
    if (j < end && s.charCodeAt(j) === 46) {
      // Embedded IPv4 tail (`::ffff:1.2.3.4`): must be the last two groups.
      if (n > 6) return false;
      const v4 = parseIPv4Range(s, i, end);
      if (v4 < 0) return false;
      groups[n++] = v4 >>> 16;
      groups[n++] = v4 & 0xffff;
      break;
    }
    if (digits === 0 || digits > 4) return false;
    groups[n++] = v;
    if (j === end) break;
    if (s.charCodeAt(j) !== 58) return false;
    j++;
    if (j < end && s.charCodeAt(j) === 58) {
      if (gap >= 0) return false;
      gap = n;
      j++;
    } else if (j === end) {
      return false; // trailing single ':'
    }
    i = j;
  }
  if (gap < 0) return n === 8;
  if (n > 7) return false; // `::` stands for at least one zero group
  const tail = n - gap;
  for (let k = 0; k < tail; k++) groups[7 - k] = groups[n - 1 - k]!;
  for (let k = gap; k < 8 - tail; k++) groups[k] = 0;
  return true;
}

/** Parses an IPv6 address into four uint32 words (most significant first), or returns null. */
export function parseIPv6(s: string): [number, number, number, number] | null {
  if (!parseIPv6Groups(s, 0, s.length)) return null;
  return [word(0), word(1), word(2), word(3)];
}

function word(k: number): number {
  return ((groups[2 * k]! << 16) | groups[2 * k + 1]!) >>> 0;
}

function maskFor(bits: number): number {
  if (bits <= 0) return 0;
  if (bits >= 32) return 0xffffffff;
  return (0xffffffff << (32 - bits)) >>> 0;
}

// Cache of the last parsed request address (kind 0 = invalid, 4 = IPv4, 6 = IPv6).
let lastAddr: string | undefined;
let lastKind = 0;
let lastV4 = 0;
let lastMapped = false; // IPv6 `::ffff:a.b.c.d`; lastV4 then holds the IPv4 value
const lastV6 = new Uint32Array(4);

function parseRequestAddr(addr: string): void {
  lastAddr = addr;
  lastKind = 0;
  lastMapped = false;
  const v4 = parseIPv4Range(addr, 0, addr.length);
  if (v4 >= 0) {
    lastKind = 4;
    lastV4 = v4;
    return;
  }
  // Strip a zone id (`fe80::1%eth0`) and brackets (`[::1]`) on the request side.
  let start = 0;
  let end = addr.length;
  if (end > 1 && addr.charCodeAt(0) === 91 && addr.charCodeAt(end - 1) === 93) {
    start = 1;
    end--;
  }
  const zone = addr.indexOf('%', start);
  if (zone >= 0 && zone < end) end = zone;
  if (!parseIPv6Groups(addr, start, end)) return;
  lastKind = 6;
  for (let k = 0; k < 4; k++) lastV6[k] = word(k);
  if (lastV6[0] === 0 && lastV6[1] === 0 && lastV6[2] === 0xffff) {
    lastMapped = true;
    lastV4 = lastV6[3]!;
  }
}

export interface IpMatcher {
  /** True when `addr` (an IPv4 or IPv6 address, as the runtime reports it) is in one of the compiled ranges. */
  match(addr: string): boolean;
}

class CompiledIpMatcher implements IpMatcher {
  // Exact IPv4 addresses.
  private readonly v4Exact = new Set<number>();
  // IPv4 CIDRs: network and mask, pairwise.
  private readonly v4Net: number[] = [];
  private readonly v4Mask: number[] = [];
  // IPv6 entries (exact = /128): 4 network words then 4 mask words each.
  private readonly v6: number[] = [];

  constructor(entries: readonly string[]) {
    for (const raw of entries) this.add(raw);
  }

  private add(raw: string): void {
    const entry = raw.trim();
    const slash = entry.indexOf('/');
    const addr = slash < 0 ? entry : entry.slice(0, slash);
    let bits = -1;
    if (slash >= 0) {
      const b = entry.slice(slash + 1);
      if (!/^\d{1,3}$/.test(b)) throw new Error(`invalid IP address: ${raw}`);
      bits = Number(b);
    }
    const v4 = parseIPv4(addr);
    if (v4 >= 0) {
      if (bits > 32) throw new Error(`invalid IP address: ${raw}`);
      if (bits < 0 || bits === 32) {
        this.v4Exact.add(v4);
      } else {
        const mask = maskFor(bits);
        this.v4Net.push((v4 & mask) >>> 0);
        this.v4Mask.push(mask);
      }
      return;
    }
    if (!parseIPv6Groups(addr, 0, addr.length)) throw new Error(`invalid IP address: ${raw}`);
    if (bits > 128) throw new Error(`invalid IP address: ${raw}`);
    if (bits < 0) bits = 128;
    const masks = [maskFor(bits), maskFor(bits - 32), maskFor(bits - 64), maskFor(bits - 96)];
    for (let k = 0; k < 4; k++) this.v6.push((word(k) & masks[k]!) >>> 0);
    for (let k = 0; k < 4; k++) this.v6.push(masks[k]!);
  }

  private matchV4(v: number): boolean {
    if (this.v4Exact.has(v)) return true;
    const nets = this.v4Net;
    const masks = this.v4Mask;
    for (let i = 0; i < nets.length; i++) {
      if ((v & masks[i]!) >>> 0 === nets[i]) return true;
    }
    return false;
  }

  match(addr: string): boolean {
    if (addr !== lastAddr) parseRequestAddr(addr);
    if (lastKind === 4) return this.matchV4(lastV4);
    if (lastKind !== 6) return false;
    // An IPv4-mapped IPv6 client (`::ffff:1.2.3.4`, what a dual-stack Node socket reports for an IPv4 peer)
    // also matches IPv4 entries: nginx would see that peer as `1.2.3.4`.
    if (lastMapped && this.matchV4(lastV4)) return true;
    const v6 = this.v6;
    const w = lastV6;
    for (let i = 0; i < v6.length; i += 8) {
      if (
        (w[0]! & v6[i + 4]!) >>> 0 === v6[i] &&
        (w[1]! & v6[i + 5]!) >>> 0 === v6[i + 1] &&
        (w[2]! & v6[i + 6]!) >>> 0 === v6[i + 2] &&
        (w[3]! & v6[i + 7]!) >>> 0 === v6[i + 3]
      ) {
        return true;
      }
    }
    return false;
  }
}

/**
 * Compiles a `remote_addrs` list (IPv4/IPv6 addresses and CIDRs; host bits in a CIDR are ignored).
 * Throws `Error('invalid IP address: …')` on an entry it cannot parse, as lua-resty-radixtree does.
 */
export function compileIpMatcher(entries: readonly string[]): IpMatcher {
  return new CompiledIpMatcher(entries);
}

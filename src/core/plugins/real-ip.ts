import * as v from 'valibot';
import type { RequestContext } from '../context.ts';
import { compileIpMatcher, type IpMatcher, parseIPv4, parseIPv6 } from '../router/ip.ts';
import { ipListSchema } from '../schema/ip.ts';
import type { PluginDefinition } from './types.ts';

const schema = v.strictObject({
  source: v.pipe(v.string(), v.minLength(1)),
  trusted_addresses: v.optional(ipListSchema),
  recursive: v.optional(v.boolean(), false),
});

type Conf = v.InferOutput<typeof schema>;

/**
 * The address in `addr`, APISIX `core.utils.parse_addr` + the IP checks of real-ip: `1.2.3.4`, `1.2.3.4:80`,
 * `::1`, `[::1]`, `[::1]:80`. Undefined when it is not an IP address or the port is not 1–65535.
 */
export function parseClientAddr(addr: string): string | undefined {
  let ip = addr;
  let port: string | undefined;
  if (addr.startsWith('[')) {
    if (!addr.endsWith(']')) {
      const colon = addr.lastIndexOf(':');
      if (colon < 1 || addr[colon - 1] !== ']') return undefined;
      port = addr.slice(colon + 1);
      ip = addr.slice(0, colon);
    }
    ip = ip.slice(1, -1);
    if (parseIPv6(ip) === null) return undefined;
  } else {
    const first = addr.indexOf(':');
    // One colon: `host:port`; two or more: a bare IPv6 address.
    if (first >= 0 && addr.indexOf(':', first + 1) < 0) {
      ip = addr.slice(0, first);
      port = addr.slice(first + 1);
    }
    if (parseIPv4(ip) < 0 && (ip === addr ? parseIPv6(ip) === null : true)) return undefined;
  }
  if (port !== undefined) {
    if (!/^\d{1,5}$/.test(port)) return undefined;
    const n = Number(port);
    if (n < 1 || n > 65535) return undefined;
  }
  return ip;
}

/** The last element of an `X-Forwarded-For` list; with `trusted` (recursive), the rightmost one not trusted. */
function forwardedFor(value: string, trusted: IpMatcher | undefined): string {
  const comma = value.lastIndexOf(',');
  if (comma < 0) return value;
  if (trusted) {
    const parts = value.split(/,\s*/);
    for (let i = parts.length - 1; i >= 1; i--) if (!trusted.match(parts[i]!)) return parts[i]!;
    return parts[0]!;
  }
  return value.slice(comma + 1).trimStart();
}

/**
 * `real-ip` (APISIX priority 23000, rewrite): takes the client address from a request variable (`source`:
 * `http_x_forwarded_for`, `http_x_real_ip`, `arg_realip`, ...) when the peer is one of `trusted_addresses` (or
 * always, without them). The new address is `$remote_addr` for every later plugin and route `vars`, and the
 * `X-Forwarded-For` sent upstream. A missing or malformed value changes nothing.
 */
export const realIp: PluginDefinition<Conf> = {
  name: 'real-ip',
  priority: 23000,
  version: 0.1,
  schema: schema as v.GenericSchema<unknown, Conf>,
  create(conf) {
    const trusted = conf.trusted_addresses ? compileIpMatcher(conf.trusted_addresses) : undefined;
    const recursiveTrust = conf.recursive ? trusted : undefined;
    const source = conf.source;
    const read =
      source === 'http_x_forwarded_for'
        ? (ctx: RequestContext) => {
            const xff = ctx.header('x-forwarded-for');
            return xff === undefined ? undefined : forwardedFor(xff, recursiveTrust);
          }
        : (ctx: RequestContext) => {
            const value = ctx.getVar(source);
            return value === undefined || value === null ? undefined : String(value);
          };
    return {
      rewrite(ctx) {
        if (trusted && !trusted.match(ctx.clientIp)) return undefined;
        const addr = read(ctx);
        if (addr === undefined) return undefined;
        const ip = parseClientAddr(addr);
        if (ip !== undefined) ctx.clientIp = ip;
        return undefined;
      },
    };
  },
};

import * as v from 'valibot';
import type { RequestContext } from '../context.ts';
import { pluginExit } from '../errors.ts';
import { anonymousSchema, attachConsumer, authFailure, consumerByKey, realmSchema, timingSafeEqual } from './auth.ts';
import type { PluginDefinition } from './types.ts';

const schema = v.strictObject({
  hide_credentials: v.optional(v.boolean(), false),
  realm: v.optional(realmSchema, 'basic'),
  anonymous_consumer: v.optional(anonymousSchema),
});

type Conf = v.InferOutput<typeof schema>;

const consumerSchema = v.strictObject({ username: v.string(), password: v.string() });

/** APISIX `(?i:basic)\s(.+)`, unanchored as `ngx.re.match`. */
const BASIC = /basic\s(.+)/i;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const WHITESPACE = /\s+/g;
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** What a wrong user's password is compared with, so that an unknown user costs what a wrong password costs. */
const NO_PASSWORD = '\u0000'.repeat(32);

/**
 * `user:password` of an `Authorization: Basic …` header, whitespace stripped from both as APISIX does; split on
 * the first colon (RFC 7617; APISIX 3.18 split on every colon, #13835, fixed by #13836). Undefined when the header
 * is not Basic, not base64, or has no colon; `user` null when the bytes are not UTF-8 (no consumer has such a name).
 */
export function parseBasic(header: string): { user: string | null; password: string } | undefined {
  const m = BASIC.exec(header);
  if (!m) return undefined;
  const b64 = m[1]!;
  if (!BASE64.test(b64) || b64.length % 4 === 1) return undefined;
  let bin: string;
  try {
    bin = atob(b64);
  } catch {
    return undefined;
  }
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  // A colon is one byte in UTF-8 and never part of another character: split the bytes, then decode each side.
  const colon = bytes.indexOf(0x3a);
  if (colon < 0) return undefined;
  let user: string | null;
  let password: string;
  try {
    user = strictUtf8.decode(bytes.subarray(0, colon)).replace(WHITESPACE, '');
    password = strictUtf8.decode(bytes.subarray(colon + 1)).replace(WHITESPACE, '');
  } catch {
    // Not UTF-8 text: no configured (JSON, hence UTF-8) username or password has these bytes.
    user = null;
    password = '';
  }
  return { user, password };
}

/**
 * `basic-auth` (APISIX apisix/plugins/basic-auth.lua, priority 2520, rewrite): `Authorization: Basic
 * base64(user:password)` must name a consumer's or credential's `username` with its `password` (compared in
 * constant time; an unknown user is compared with a dummy password, so both failures cost the same).
 */
export const basicAuth: PluginDefinition<Conf> = {
  name: 'basic-auth',
  priority: 2520,
  version: 0.1,
  type: 'auth',
  schema,
  consumerSchema,
  consumerKey: 'username',
  secretFields: ['password'],
  create(conf) {
    const challenge = { 'www-authenticate': `Basic realm="${conf.realm}"` };
    const fail = (message: string) => () => pluginExit(401, { message }, challenge);
    const missing = fail('Missing authorization in request');
    const malformed = fail('Invalid authorization in request');
    const invalid = fail('Invalid user authorization');
    /** Attaches the consumer the header proves, or says which 401 it gets. */
    const check = (ctx: RequestContext): (() => Response) | undefined => {
      const header = ctx.header('authorization');
      if (header === undefined) return missing;
      const creds = parseBasic(header);
      if (!creds) return malformed;
      const found = creds.user === null ? undefined : consumerByKey(ctx, 'basic-auth', 'username', creds.user);
      const expected = found ? (found.conf.password as string) : NO_PASSWORD;
      if (!timingSafeEqual(creds.password, expected) || !found) return invalid;
      attachConsumer(ctx, found.consumer);
      return undefined;
    };
    return {
      rewrite(ctx) {
        const failure = check(ctx);
        if (failure) {
          // As basic-auth.lua: the anonymous consumer, then hide_credentials as for a found one.
          const res = authFailure(ctx, conf.anonymous_consumer, failure, challenge);
          if (res) return res;
        }
        if (conf.hide_credentials) ctx.setHeader('authorization', null);
        return undefined;
      },
    };
  },
};

import { compactVerify, decodeJwt, decodeProtectedHeader, importSPKI, importX509 } from 'jose';
import * as v from 'valibot';
import { fromBase64 } from '../base64.ts';
import type { RequestContext } from '../context.ts';
import { pluginExit } from '../errors.ts';
import { uniqueArray } from '../schema/common.ts';
import { INTEGER } from '../schema/format.ts';
import { anonymousSchema, attachConsumer, authFailure, consumerByKey, realmSchema } from './auth.ts';
import { withoutArg } from './key-auth.ts';
import type { PluginDefinition } from './types.ts';

const schema = v.strictObject({
  header: v.optional(v.string(), 'authorization'),
  query: v.optional(v.string(), 'jwt'),
  cookie: v.optional(v.string(), 'jwt'),
  hide_credentials: v.optional(v.boolean(), false),
  key_claim_name: v.optional(v.pipe(v.string(), v.minLength(1)), 'key'),
  store_in_ctx: v.optional(v.boolean(), false),
  realm: v.optional(realmSchema, 'jwt'),
  anonymous_consumer: v.optional(anonymousSchema),
  claims_to_verify: v.optional(uniqueArray(v.picklist(['exp', 'nbf']))),
});

type Conf = v.InferOutput<typeof schema>;

export const JWT_ALGORITHMS = [
  'HS256',
  'HS384',
  'HS512',
  'RS256',
  'RS384',
  'RS512',
  'ES256',
  'ES384',
  'ES512',
  'PS256',
  'PS384',
  'PS512',
  'EdDSA',
] as const;
type Alg = (typeof JWT_ALGORITHMS)[number];

const nonEmpty = v.pipe(v.string(), v.minLength(1));
const PEM = /-----BEGIN (PUBLIC KEY|CERTIFICATE)-----/;

/**
 * The consumer side (APISIX `consumer_schema`, which allows other properties: configs written for older APISIX
 * versions carry `private_key`, kept and unused). `exp` is accepted and unused, as in APISIX since 3.11.
 */
const consumerSchema = v.pipe(
  v.looseObject({
    key: nonEmpty,
    secret: v.optional(nonEmpty),
    public_key: v.optional(nonEmpty),
    algorithm: v.optional(v.picklist(JWT_ALGORITHMS), 'HS256'),
    exp: v.optional(v.pipe(v.number(INTEGER), v.integer(), v.minValue(1)), 86400),
    base64_secret: v.optional(v.boolean(), false),
    lifetime_grace_period: v.optional(v.pipe(v.number(INTEGER), v.integer(), v.minValue(0)), 0),
  }),
  v.rawCheck(({ dataset, addIssue }) => {
    if (!dataset.typed) return;
    const c = dataset.value;
    const hs = c.algorithm.startsWith('HS');
    if (hs && c.secret === undefined)
      addIssue({ message: 'property "secret" is required when using HS based algorithms' });
    else if (c.base64_secret && c.secret !== undefined && !fromBase64(c.secret)) {
      addIssue({ message: 'base64_secret required but the secret is not in base64 format' });
    } else if (!hs && c.public_key === undefined) addIssue({ message: 'missing valid public key' });
    else if (!hs && !PEM.test(c.public_key!)) {
      // jose (WebCrypto) imports SPKI and X.509; a PKCS#1 `RSA PUBLIC KEY` could never verify a token.
      addIssue({ message: 'public_key must be a PEM "PUBLIC KEY" (SPKI) or "CERTIFICATE"' });
    }
  }),
);

interface ConsumerConf {
  key: string;
  secret?: string;
  public_key?: string;
  algorithm: Alg;
  base64_secret: boolean;
  lifetime_grace_period: number;
}

const HMAC_HASH: Record<string, string> = { HS256: 'SHA-256', HS384: 'SHA-384', HS512: 'SHA-512' };
const utf8 = new TextEncoder();

/**
 * The verification key of a consumer conf: imported once per conf object, that is once per consumer per snapshot
 * (a changed consumer is a new object). Never the verdict: every token is verified. Undefined when the key cannot
 * be imported (the request then fails as a bad signature, as APISIX's `assert` does).
 */
const keys = new WeakMap<object, Promise<CryptoKey | undefined>>();
function keyOf(conf: ConsumerConf): Promise<CryptoKey | undefined> {
  let key = keys.get(conf);
  if (!key) {
    key = importKey(conf).catch(() => undefined);
    keys.set(conf, key);
  }
  return key;
}

async function importKey(conf: ConsumerConf): Promise<CryptoKey | undefined> {
  const alg = conf.algorithm;
  const hash = HMAC_HASH[alg];
  if (hash) {
    const secret =
      conf.secret === undefined ? undefined : conf.base64_secret ? fromBase64(conf.secret) : utf8.encode(conf.secret);
    if (!secret || secret.length === 0) return undefined;
    return crypto.subtle.importKey('raw', secret, { name: 'HMAC', hash }, false, ['verify']);
  }
  const pem = conf.public_key?.trim();
  if (!pem) return undefined;
  return pem.includes('BEGIN CERTIFICATE') ? importX509(pem, alg) : importSPKI(pem, alg);
}

/** APISIX `remove_specified_cookie`: the Cookie header without cookie `name`. */
function withoutCookie(header: string, name: string): string {
  return header
    .split(';')
    .map((p) => p.trim())
    .filter((p) => p !== '' && p.slice(0, p.indexOf('=') < 0 ? p.length : p.indexOf('=')).trim() !== name)
    .join('; ');
}

/** The token: header (a leading `Bearer ` / `bearer ` stripped), else query argument, else cookie. */
function fetchToken(conf: Conf, ctx: RequestContext): string | undefined {
  const fromHeader = ctx.header(conf.header);
  if (fromHeader !== undefined) {
    if (conf.hide_credentials) ctx.setHeader(conf.header, null);
    const prefix = fromHeader.slice(0, 7);
    return prefix === 'Bearer ' || prefix === 'bearer ' ? fromHeader.slice(7) : fromHeader;
  }
  const fromQuery = ctx.arg(conf.query);
  if (fromQuery !== undefined) {
    if (conf.hide_credentials) ctx.upstream.query = withoutArg(ctx.upstream.query ?? ctx.query, conf.query);
    return fromQuery;
  }
  const fromCookie = ctx.cookie(conf.cookie);
  if (fromCookie === undefined) return undefined;
  if (conf.hide_credentials) ctx.setHeader('cookie', withoutCookie(ctx.header('cookie') ?? '', conf.cookie) || null);
  return fromCookie;
}

/** Why a token is refused, or the consumer entry and payload it proves. */
type Verdict =
  | { message: string }
  | {
      entry: { consumer: NonNullable<RequestContext['consumer']>; conf: Record<string, unknown> };
      payload: Record<string, unknown>;
    };

async function verify(conf: Conf, ctx: RequestContext): Promise<Verdict> {
  const token = fetchToken(conf, ctx);
  if (token === undefined) return { message: 'Missing JWT token in request' };
  let header: { alg?: unknown };
  let payload: Record<string, unknown>;
  try {
    header = decodeProtectedHeader(token);
    payload = decodeJwt(token);
  } catch {
    return { message: 'JWT token invalid' };
  }
  const userKey = payload[conf.key_claim_name];
  if (userKey === undefined || userKey === null || userKey === false)
    return { message: 'missing user key in JWT token' };
  const entry = typeof userKey === 'string' ? consumerByKey(ctx, 'jwt-auth', 'key', userKey) : undefined;
  if (!entry) return { message: 'Invalid user key in JWT token' };
  const cc = entry.conf as unknown as ConsumerConf;
  const failed = { message: 'failed to verify jwt' };
  // RFC 8725: the token's alg must be the one the consumer is configured with (APISIX 3.17+, #13182).
  if (header.alg !== cc.algorithm) return failed;
  const key = await keyOf(cc);
  if (!key) return failed;
  try {
    await compactVerify(token, key, { algorithms: [cc.algorithm] });
  } catch {
    return failed;
  }
  if (!claimsValid(payload, conf.claims_to_verify, cc.lifetime_grace_period)) return failed;
  return { entry, payload };
}

/**
 * APISIX parser.lua `verify_claims`: without `claims_to_verify`, `exp` and `nbf` are checked when present; with it,
 * the listed claims are required. Each must be a number; `exp > now - grace`, `nbf < now + grace` (whole seconds).
 */
function claimsValid(
  payload: Record<string, unknown>,
  required: readonly string[] | undefined,
  grace: number,
): boolean {
  const now = Math.floor(Date.now() / 1000);
  const names = required?.length ? required : ['nbf', 'exp'];
  for (const name of names) {
    const value = payload[name];
    if (value === undefined || value === null) {
      if (required?.length) return false;
      continue;
    }
    if (typeof value !== 'number') return false;
    if (name === 'exp' && !(value > now - grace)) return false;
    if (name === 'nbf' && !(value < now + grace)) return false;
  }
  return true;
}

/**
 * `jwt-auth` (APISIX apisix/plugins/jwt-auth.lua, priority 2510, rewrite): a JWT from the `header` (default
 * `Authorization`, `Bearer ` stripped), the `query` argument or the `cookie` (both `jwt`), whose `key_claim_name`
 * claim names a consumer's or credential's `key`, signed with that consumer's `algorithm` (HS*, RS*, PS*, ES*,
 * EdDSA: WebCrypto through `jose`) and within its `exp`/`nbf`.
 */
export const jwtAuth: PluginDefinition<Conf> = {
  name: 'jwt-auth',
  priority: 2510,
  version: 0.1,
  type: 'auth',
  schema,
  consumerSchema,
  consumerKey: 'key',
  secretFields: ['secret'],
  create(conf) {
    const challenge = { 'www-authenticate': `Bearer realm="${conf.realm}"` };
    return {
      async rewrite(ctx) {
        const verdict = await verify(conf, ctx);
        if ('message' in verdict) {
          const message = verdict.message;
          return authFailure(ctx, conf.anonymous_consumer, () => pluginExit(401, { message }, challenge), challenge);
        }
        if (conf.store_in_ctx) ctx.setVar('jwt_auth_payload', verdict.payload);
        attachConsumer(ctx, verdict.entry.consumer);
        return undefined;
      },
    };
  },
};

import { dropOverflow, readWithin } from '../body.ts';
import * as v from 'valibot';
import { fromBase64, toBase64 } from '../base64.ts';
import type { RequestContext } from '../context.ts';
import { pluginExit } from '../errors.ts';
import { INTEGER } from '../schema/format.ts';
import { requestBody } from '../upstream/forward.ts';
import { anonymousSchema, attachConsumer, authFailure, consumerByKey, realmSchema, timingSafeEqual } from './auth.ts';
import type { PluginDefinition } from './types.ts';

const ALGORITHMS = ['hmac-sha1', 'hmac-sha256', 'hmac-sha512'] as const;
type Algorithm = (typeof ALGORITHMS)[number];
const HASH: Record<Algorithm, string> = { 'hmac-sha1': 'SHA-1', 'hmac-sha256': 'SHA-256', 'hmac-sha512': 'SHA-512' };

const schema = v.strictObject({
  allowed_algorithms: v.optional(v.pipe(v.array(v.picklist(ALGORITHMS)), v.minLength(1)), [...ALGORITHMS]),
  clock_skew: v.optional(v.pipe(v.number(INTEGER), v.integer(), v.minValue(1)), 300),
  signed_headers: v.optional(v.array(v.pipe(v.string(), v.minLength(1), v.maxLength(50))), ['date']),
  validate_request_body: v.optional(v.boolean(), false),
  max_req_body_size: v.optional(v.pipe(v.number(INTEGER), v.integer(), v.minValue(1)), 67108864),
  hide_credentials: v.optional(v.boolean(), false),
  realm: v.optional(realmSchema, 'hmac'),
  anonymous_consumer: v.optional(anonymousSchema),
});

type Conf = v.InferOutput<typeof schema>;

const secret256 = v.pipe(v.string(), v.minLength(1), v.maxLength(256));
const consumerSchema = v.strictObject({ key_id: secret256, secret_key: secret256 });

interface Params {
  keyId?: string;
  algorithm?: string;
  signature?: string;
  headers?: string[];
}

const FIELD = /\s*([A-Za-z0-9]+)="(.*?)"/;

/** APISIX `retrieve_hmac_fields`: `Signature keyId="…",algorithm="…",headers="a b",signature="…"`. */
export function parseSignature(auth: string): Params {
  const params: Params = {};
  for (const field of auth.slice(9).split(',')) {
    const m = FIELD.exec(field);
    if (!m) continue;
    const [, key, value] = m as unknown as [string, string, string];
    if (key === 'keyId' || key === 'algorithm' || key === 'signature') params[key] = value;
    else if (key === 'headers') params.headers = value.split(' ');
  }
  return params;
}

/** `ngx.parse_http_time`: RFC 1123, RFC 850 and asctime dates, in seconds; undefined otherwise. */
const HTTP_DATES = [
  /^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/,
  /^[A-Z][a-z]+, \d{2}-[A-Z][a-z]{2}-\d{2} \d{2}:\d{2}:\d{2} GMT$/,
  /^[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2} \d{4}$/,
];
export function parseHttpTime(s: string): number | undefined {
  if (!HTTP_DATES.some((re) => re.test(s))) return undefined;
  const ms = Date.parse(s.endsWith('GMT') ? s : `${s} GMT`);
  return Number.isNaN(ms) ? undefined : Math.floor(ms / 1000);
}

const utf8 = new TextEncoder();
/** A header name (RFC 9110 token); `@request-target` and other names no request can carry are looked up as absent. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** HMAC keys per consumer conf (once per consumer per snapshot) and algorithm. */
const keys = new WeakMap<object, Map<Algorithm, Promise<CryptoKey>>>();
/** What an unknown key_id is signed with, so that it costs what a wrong signature costs. */
const DUMMY = { secret_key: '\u0000unknown key id\u0000' };

function keyOf(conf: { secret_key: string }, alg: Algorithm): Promise<CryptoKey> {
  let byAlg = keys.get(conf);
  if (!byAlg) {
    byAlg = new Map();
    keys.set(conf, byAlg);
  }
  let key = byAlg.get(alg);
  if (!key) {
    key = crypto.subtle.importKey('raw', utf8.encode(conf.secret_key), { name: 'HMAC', hash: HASH[alg] }, false, [
      'sign',
    ]);
    byAlg.set(alg, key);
  }
  return key;
}

/** APISIX `generate_signature`: keyId, then each listed header as `name: value` (or `@request-target`), `\n` after each. */
function signingString(ctx: RequestContext, params: Params): string {
  const items = [params.keyId!];
  for (const h of params.headers ?? []) {
    const value = TOKEN.test(h) ? ctx.header(h) : undefined;
    if (value !== undefined) items.push(`${h}: ${value}`);
    else if (h === '@request-target') items.push(`${ctx.method} ${(ctx.getVar('request_uri') as string) || '/'}`);
  }
  return `${items.join('\n')}\n`;
}

class TooLarge {
  constructor(readonly message: string) {}
}

/** Reads the request body whole, at most `limit` bytes (APISIX `core.request.get_body(max)`). */
async function readBody(ctx: RequestContext, limit: number): Promise<Uint8Array<ArrayBuffer> | TooLarge> {
  const tooLarge = (size: number) =>
    new TooLarge(`request size ${size} is greater than the maximum size ${limit} allowed`);
  const declared = Number(ctx.header('content-length') ?? Number.NaN);
  if (declared > limit) return tooLarge(declared);
  const stream = requestBody(ctx);
  const body = stream ? await readWithin(stream, limit) : new Uint8Array(0);
  if (!(body instanceof Uint8Array)) {
    dropOverflow(body);
    return tooLarge(body.size);
  }
  ctx.bodyOverride = body;
  return body;
}

type Outcome = { consumer: NonNullable<RequestContext['consumer']> } | { message: string } | TooLarge;

const INVALID = { message: "client request can't be validated" };

async function validate(conf: Conf, ctx: RequestContext): Promise<Outcome> {
  const auth = ctx.header('authorization');
  if (auth === undefined) return { message: "client request can't be validated: missing Authorization header" };
  if (!auth.startsWith('Signature')) {
    return { message: "client request can't be validated: Authorization header does not start with 'Signature'" };
  }
  const params = parseSignature(auth);
  if (params.keyId === undefined || params.signature === undefined || params.algorithm === undefined) return INVALID;
  const entry = consumerByKey(ctx, 'hmac-auth', 'key_id', params.keyId);
  const alg = params.algorithm as Algorithm;
  if (!(conf.allowed_algorithms as string[]).includes(alg)) return INVALID;
  const date = ctx.header('date');
  if (date === undefined) return INVALID;
  const time = parseHttpTime(date);
  if (time === undefined || Math.abs(Math.floor(Date.now() / 1000) - time) > conf.clock_skew) return INVALID;
  const listed = new Set(params.headers ?? []);
  for (const h of conf.signed_headers) if (!listed.has(h)) return INVALID;
  // An unknown key_id is signed with a dummy key and refused after the comparison: both failures cost the same.
  const secret = entry ? (entry.conf as { secret_key: string }) : DUMMY;
  const mac = new Uint8Array(
    await crypto.subtle.sign('HMAC', await keyOf(secret, alg), utf8.encode(signingString(ctx, params))),
  );
  const given = fromBase64(params.signature) ?? new Uint8Array(0);
  if (!timingSafeEqual(given, mac) || !entry) return INVALID;
  if (conf.validate_request_body) {
    const digest = ctx.header('digest');
    if (digest === undefined) return INVALID;
    const body = await readBody(ctx, conf.max_req_body_size);
    if (body instanceof TooLarge) return body;
    const expected = `SHA-256=${toBase64(new Uint8Array(await crypto.subtle.digest('SHA-256', body)))}`;
    if (!timingSafeEqual(digest, expected)) return INVALID;
  }
  return { consumer: entry.consumer };
}

/**
 * `hmac-auth` (APISIX 3.x apisix/plugins/hmac-auth.lua, priority 2530, rewrite): `Authorization: Signature
 * keyId="…",algorithm="hmac-sha256",headers="@request-target date",signature="<base64>"`, the HMAC of the keyId and
 * the listed headers with the consumer's `secret_key`; `Date` within `clock_skew`; every `signed_headers` entry
 * signed; with `validate_request_body`, `Digest: SHA-256=<base64>` of the body (read whole, at most
 * `max_req_body_size`, else 413).
 */
export const hmacAuth: PluginDefinition<Conf> = {
  name: 'hmac-auth',
  priority: 2530,
  version: 0.1,
  type: 'auth',
  schema,
  consumerSchema,
  consumerKey: 'key_id',
  secretFields: ['secret_key'],
  create(conf) {
    const challenge = { 'www-authenticate': `hmac realm="${conf.realm}"` };
    return {
      async rewrite(ctx) {
        const outcome = await validate(conf, ctx);
        if (outcome instanceof TooLarge) return pluginExit(413, { message: outcome.message });
        if ('message' in outcome) {
          const message = outcome.message;
          const res = authFailure(
            ctx,
            conf.anonymous_consumer,
            () => pluginExit(401, { message }, challenge),
            challenge,
          );
          if (res) return res;
        } else attachConsumer(ctx, outcome.consumer);
        if (conf.hide_credentials) ctx.setHeader('authorization', null);
        return undefined;
      },
    };
  },
};

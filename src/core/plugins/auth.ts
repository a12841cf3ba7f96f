/**
 * What every auth plugin shares (APISIX consumer.lua): attaching the consumer it found to the request, the
 * `anonymous_consumer` fallback, and the consumer lookup by credential key, indexed once per snapshot.
 */
import * as v from 'valibot';
import type { ConsumerEntry, ConsumerInfo, RequestContext } from '../context.ts';
import { pluginExit } from '../errors.ts';

/**
 * Attach `consumer` to the request (APISIX `attach_consumer`): later plugins see it (`$consumer_name`, consumer
 * merge), and the upstream gets `X-Consumer-Username`, `X-Credential-Identifier` and `X-Consumer-Custom-ID`, set or
 * removed, never passed through from the client.
 */
export function attachConsumer(ctx: RequestContext, consumer: ConsumerInfo): void {
  ctx.consumer = consumer;
  ctx.setHeader('x-consumer-username', consumer.username);
  ctx.setHeader('x-credential-identifier', consumer.credentialId ?? null);
  ctx.setHeader('x-consumer-custom-id', consumer.labels?.custom_id ?? null);
}

/**
 * An auth failure: with `anonymous_consumer`, that consumer is attached instead (401 `Invalid user authorization`
 * when it does not exist); else the plugin's own 401.
 */
export function authFailure(
  ctx: RequestContext,
  anonymous: string | undefined,
  failure: () => Response,
  challenge?: Record<string, string>,
): Response | undefined {
  if (anonymous === undefined) return failure();
  const consumer = ctx.consumers.byName(anonymous);
  if (!consumer) return pluginExit(401, { message: 'Invalid user authorization' }, challenge);
  attachConsumer(ctx, consumer);
  return undefined;
}

const utf8 = new TextEncoder();

/**
 * Constant-time equality of two secrets (a password, an HMAC signature): every byte of the longer one is looked at
 * whatever the first difference, so the time taken says nothing about how much of a guess was right. Only the
 * lengths may show. Strings are compared as their UTF-8 bytes.
 */
export function timingSafeEqual(a: string | Uint8Array, b: string | Uint8Array): boolean {
  const x = typeof a === 'string' ? utf8.encode(a) : a;
  const y = typeof b === 'string' ? utf8.encode(b) : b;
  const n = Math.max(x.length, y.length);
  let diff = x.length ^ y.length;
  for (let i = 0; i < n; i++) diff |= (x[i] ?? 0) ^ (y[i] ?? 0);
  return diff === 0;
}

const indexes = new WeakMap<readonly ConsumerEntry[], Map<string, ConsumerEntry>>();

/**
 * The consumers and credentials of `plugin` by the string value of their conf attribute `attr` (key-auth `key`),
 * built once per snapshot's consumer list. A duplicate (the Admin API refuses them; a store written around it may
 * hold one) keeps the first.
 */
export function consumerByKey(
  ctx: RequestContext,
  plugin: string,
  attr: string,
  key: string,
): ConsumerEntry | undefined {
  const entries = ctx.consumers.forPlugin(plugin);
  let index = indexes.get(entries);
  if (!index) {
    index = new Map();
    for (const e of entries) {
      const k = e.conf[attr];
      if (typeof k === 'string' && !index.has(k)) index.set(k, e);
    }
    indexes.set(entries, index);
  }
  return index.get(key);
}

/** `realm`: 1–128 printable ASCII characters, no `"` or `\` (it is sent inside a quoted string). */
export const realmSchema = v.pipe(
  v.string(),
  v.minLength(1),
  v.maxLength(128),
  v.regex(/^[\x20-\x21\x23-\x5b\x5d-\x7e]+$/),
);
export const anonymousSchema = v.pipe(v.string(), v.minLength(1), v.maxLength(256), v.regex(/^[a-zA-Z0-9_-]+$/));

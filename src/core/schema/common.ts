import * as v from 'valibot';
import { INTEGER } from './format.ts';
import { formatIssue } from './format.ts';

/**
 * APISIX `id_schema`: a string of 1–64 of `[a-zA-Z0-9-_.]`, or an integer >= 1. Except `.` and `..`, which
 * APISIX's pattern allows but no URL can name (clients and servers resolve `/routes/..` and `/routes/%2e%2e`
 * as dot segments): a resource stored under one could never be fetched, changed or deleted again.
 */
export const idSchema = v.pipe(
  v.union([
    v.pipe(v.string(), v.minLength(1), v.maxLength(64), v.regex(/^[a-zA-Z0-9\-_.]+$/)),
    v.pipe(v.number(INTEGER), v.integer(), v.minValue(1)),
  ]),
  v.check((id) => id !== '.' && id !== '..', 'the ids "." and ".." are not allowed: no URL can address them'),
);

/** An id in a URL path or a store key: {@link idSchema}'s string form. */
export const ID_PATTERN = /^(?!\.\.?$)[a-zA-Z0-9\-_.]{1,64}$/;

/**
 * What is wrong with an id from a URL path or a key, in the words {@link idSchema} uses for an id in a body
 * (`string too long, expected at most 64, got 65`, `failed to match pattern …`); `undefined` when it is fine.
 */
export function idProblem(id: string): string | undefined {
  if (ID_PATTERN.test(id)) return undefined;
  const res = check(idSchema, id);
  const why = res.ok ? `failed to match pattern ${JSON.stringify(ID_PATTERN.source)} with ${JSON.stringify(id)}` : res.message;
  return `invalid configuration: property "id" validation failed: ${why}`;
}

export const nameSchema = v.pipe(v.string(), v.minLength(1), v.maxLength(256));
export const descSchema = v.pipe(v.string(), v.maxLength(256));
/**
 * Keys no record-shaped field may have: JavaScript gives them meaning on every object, and valibot's `v.record`
 * silently leaves them out of what it checks (so a `{"__proto__": …}` would be stored unvalidated).
 */
export const RESERVED_KEYS: readonly string[] = ['__proto__', 'constructor', 'prototype'];

/**
 * `v.record(key, value)` that also refuses the {@link RESERVED_KEYS} as own keys, with a 400 like any other bad
 * key. Every record-shaped field of every schema (plugins, upstream nodes, labels, metadata, and the services,
 * consumers and plugin confs added later) is built with this, never with `v.record` directly.
 */
export function safeRecord<
  TKey extends v.GenericSchema<string, string>,
  TValue extends v.GenericSchema,
>(key: TKey, value: TValue) {
  return v.pipe(
    v.custom<Record<string, unknown>>(
      (input) => typeof input !== 'object' || input === null || !RESERVED_KEYS.some((k) => Object.hasOwn(input, k)),
      (issue) => {
        const found = RESERVED_KEYS.find((k) => Object.hasOwn(issue.input as object, k));
        return `the key "${String(found)}" is not allowed (a reserved JavaScript property name)`;
      },
    ),
    v.record(key, value),
  );
}

export const labelsSchema = safeRecord(
  v.string(),
  v.pipe(v.string(), v.minLength(1), v.maxLength(256), v.regex(/^\S+$/)),
);
export const timestampSchema = v.pipe(v.number(INTEGER), v.integer());

/**
 * The longest duration any config field may hold: 2^31−1 ms (about 24.8 days), the longest delay a timer keeps
 * on every runtime (`setTimeout` fires at once, with a `TimeoutOverflowWarning` on Node, beyond it). Every
 * duration field of every schema is built with {@link durationMs} or {@link durationSeconds}, so it is refused
 * with a 400 naming the field at write time instead of firing at once.
 */
export const MAX_DURATION_MS = 2 ** 31 - 1;
/** {@link MAX_DURATION_MS} in whole seconds (2,147,483 s), the bound of fields given in seconds. */
export const MAX_DURATION_S = Math.floor(MAX_DURATION_MS / 1000);

/** A duration in whole milliseconds, from `min` to {@link MAX_DURATION_MS}. */
export function durationMs(min: number) {
  return v.pipe(v.number(INTEGER), v.integer(), v.minValue(min), v.maxValue(MAX_DURATION_MS));
}

/** A duration in seconds (fractions allowed), above 0 (`positive`) or from 0, to {@link MAX_DURATION_S}. */
export function durationSeconds(lower: 'positive' | 'non-negative') {
  return lower === 'positive'
    ? v.pipe(v.number(), v.gtValue(0), v.maxValue(MAX_DURATION_S))
    : v.pipe(v.number(), v.minValue(0), v.maxValue(MAX_DURATION_S));
}

/** `{connect, send, read}` in seconds, all three required (APISIX `timeout_def`). */
export const timeoutSchema = v.strictObject({
  connect: durationSeconds('positive'),
  send: durationSeconds('positive'),
  read: durationSeconds('positive'),
});

/** An array whose items are pairwise different (JSON schema `uniqueItems`). */
export function uniqueArray<T extends v.GenericSchema>(item: T) {
  return v.pipe(
    v.array(item),
    v.check((a) => new Set(a.map((x) => JSON.stringify(x))).size === a.length, 'expected unique items but items are not unique'),
  );
}

/** A resource's `plugins`: plugin name -> conf, each conf checked by the caller against the plugin's schema. */
export const pluginsSchema = safeRecord(v.string(), v.unknown());

/** Host pattern of APISIX's `host_def`. */
export const hostSchema = v.pipe(v.string(), v.regex(/^\*$|^\*?[0-9a-zA-Z\-._[\]:]+$/));

/** Fields the admin writes itself; refused in PUT/POST bodies as APISIX does. */
export const TIMESTAMP_FIELDS = ['create_time', 'update_time'] as const;

/** Validate `input` against `schema`; returns the first problem in APISIX's wording, or the parsed output. */
export function check<T>(
  schema: v.GenericSchema<unknown, T>,
  input: unknown,
): { ok: true; value: T } | { ok: false; message: string } {
  const res = v.safeParse(schema, input, { abortEarly: true, abortPipeEarly: true });
  if (res.success) return { ok: true, value: res.output };
  const issue = res.issues[0];
  return { ok: false, message: formatIssue(issue) };
}

export function isPlainObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** A field fngate does not implement: refused with a clear message instead of being silently ignored. */
export function unsupported(why: string) {
  return v.custom<never>(() => false, `not supported by fngate: ${why}`);
}

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

export const nameSchema = v.pipe(v.string(), v.minLength(1), v.maxLength(256));
export const descSchema = v.pipe(v.string(), v.maxLength(256));
export const labelsSchema = v.record(
  v.string(),
  v.pipe(v.string(), v.minLength(1), v.maxLength(256), v.regex(/^\S+$/)),
);
export const timestampSchema = v.pipe(v.number(INTEGER), v.integer());

/** `{connect, send, read}` in seconds, all three required (APISIX `timeout_def`). */
export const timeoutSchema = v.strictObject({
  connect: v.pipe(v.number(), v.gtValue(0)),
  send: v.pipe(v.number(), v.gtValue(0)),
  read: v.pipe(v.number(), v.gtValue(0)),
});

/** An array whose items are pairwise different (JSON schema `uniqueItems`). */
export function uniqueArray<T extends v.GenericSchema>(item: T) {
  return v.pipe(
    v.array(item),
    v.check((a) => new Set(a.map((x) => JSON.stringify(x))).size === a.length, 'expected unique items but items are not unique'),
  );
}

/** A resource's `plugins`: plugin name -> conf, each conf checked by the caller against the plugin's schema. */
export const pluginsSchema = v.record(v.string(), v.unknown());

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

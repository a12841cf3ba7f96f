import { readWithin } from '../body.ts';
import { drain } from '../drain.ts';
/** JSON helpers for the Admin API: APISIX's headers, merge/patch semantics, bounded body reading. */

export const ADMIN_HEADERS: Record<string, string> = {
  'content-type': 'application/json',
  'x-api-version': 'v3',
  'access-control-allow-origin': '*',
  'access-control-allow-credentials': 'true',
  'access-control-expose-headers': '*',
  'access-control-max-age': '3600',
};

export function json(status: number, body: unknown, extraHeaders?: Record<string, string>): Response {
  return new Response(`${JSON.stringify(body)}\n`, { status, headers: { ...ADMIN_HEADERS, ...extraHeaders } });
}

export function text(status: number, body: string): Response {
  return new Response(body, { status, headers: { ...ADMIN_HEADERS, 'content-type': 'text/plain; charset=utf-8' } });
}

export function adminError(
  status: number,
  errorMsg: string,
  extra?: Record<string, unknown>,
  headers?: Record<string, string>,
): Response {
  return json(status, { error_msg: errorMsg, ...extra }, headers);
}

export class BodyTooLarge extends Error {
  constructor(readonly size: number) {
    super(`request size ${size} is greater than the maximum size`);
  }
}

/** Read a request body as text, refusing more than `limit` bytes (checked while reading). */
export async function readBody(req: Request, limit: number): Promise<string> {
  const declared = req.headers.get('content-length');
  if (declared !== null && Number(declared) > limit) {
    // A body we can afford to read and drop is drained first, so that the client gets to read the 413.
    if (req.body && Number(declared) <= limit + DRAIN_BYTES)
      await drain(req.body.getReader(), { bytes: DRAIN_BYTES, ms: DRAIN_MS });
    throw new BodyTooLarge(Number(declared));
  }
  if (!req.body) return '';
  const all = await readWithin(req.body, limit);
  if (!(all instanceof Uint8Array)) {
    // The answer waits until the rest is read and dropped (bounded, as nginx's lingering close): a
    // connection closed on unread data is reset, and the client would never read the 413.
    await drain(all.reader, { bytes: DRAIN_BYTES, ms: DRAIN_MS });
    throw new BodyTooLarge(all.size);
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(all);
  } catch {
    throw new BadBody('the body is not valid UTF-8');
  }
}

/** A body that cannot be read as text: 400 `invalid request body: …`. */
export class BadBody extends Error {}

/** After a refused body: how much more is read and dropped, and for how long, before the answer goes out. */
const DRAIN_BYTES = 32 * 1024 * 1024;
const DRAIN_MS = 2000;

/** Depth of nesting of a parsed JSON value, computed without recursion. */
export function jsonDepth(value: unknown, max: number): number {
  let deepest = 0;
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length) {
    const [v, d] = stack.pop()!;
    if (typeof v !== 'object' || v === null) continue;
    if (d > deepest) deepest = d;
    if (deepest > max) return deepest;
    for (const child of Array.isArray(v) ? v : Object.values(v)) stack.push([child, d + 1]);
  }
  return deepest;
}

function isObj(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** APISIX `core.table.merge`: objects merge recursively, arrays and scalars replace, `null` deletes. */
export function mergePatch(target: Record<string, unknown>, patch: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...target };
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    // defineProperty, not assignment: a `__proto__` key from JSON stays a plain (and later refused) key.
    else if (isObj(v) && Object.hasOwn(out, k) && isObj(out[k]))
      define(out, k, mergePatch(out[k] as Record<string, unknown>, v));
    else define(out, k, v);
  }
  return out;
}

function define(o: Record<string, unknown>, k: string, v: unknown): void {
  Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
}

const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

/**
 * APISIX `core.table.patch` for `PATCH /<res>/<id>/<a>/<b>`: replace the value at the sub-path, creating
 * missing objects on the way. Returns an error text for a non-object on the way.
 */
export function patchAt(
  target: Record<string, unknown>,
  path: string[],
  value: unknown,
): Record<string, unknown> | string {
  for (let i = 0; i < path.length; i++) {
    if (FORBIDDEN_KEYS.has(path[i]!)) return `invalid sub-path: /${path.slice(0, i + 1).join('/')}`;
  }
  const root = structuredClone(target);
  let node: Record<string, unknown> = root;
  for (let i = 0; i < path.length - 1; i++) {
    const k = path[i]!;
    const next = Object.hasOwn(node, k) ? node[k] : undefined;
    if (next === undefined) define(node, k, {});
    else if (!isObj(next)) return `invalid sub-path: /${path.slice(0, i + 1).join('/')}`;
    node = node[k] as Record<string, unknown>;
  }
  const last = path[path.length - 1]!;
  if (value === null) delete node[last];
  else define(node, last, value);
  return root;
}

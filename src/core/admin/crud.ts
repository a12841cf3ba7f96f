/**
 * The Admin API's CRUD over the store, one code path for every kind of the registry (resources.ts): GET (list,
 * one), PUT, POST, PATCH (whole and sub-path), DELETE, with APISIX's envelopes, ids, timestamps, compare-and-set
 * writes and secrets sealed at rest.
 */
import { type ConfigStore, StoreConflictError, type StoredItem } from '../../store/types.ts';
import type { Logger } from '../context.ts';
import { itemsOf } from '../config.ts';
import { isPlainObject, TIMESTAMP_FIELDS } from '../schema/common.ts';
import type { Secrets } from '../secrets.ts';
import { listSearch } from './filter-pattern.ts';
import { adminError, json, jsonDepth, mergePatch, patchAt, readBody, text } from './json.ts';
import { type Method, type ResourceKind, validPathId } from './resources.ts';

/** APISIX's admin body cap (1.5 MiB). fngate answers 413 where APISIX answers 400. */
export const ADMIN_BODY_LIMIT = 1572864;
/** Nesting deeper than this is refused before any schema work. */
export const ADMIN_JSON_DEPTH = 64;
const CAS_ATTEMPTS = 5;
/** A PUT, a plain set in APISIX, retries its compare-and-set longer (see casWrite). */
const PUT_ATTEMPTS = 100;

export type Ctx = { req: Request; query: URLSearchParams; segments: string[] };

/** One Admin API call resolved against the registry. */
export interface Target {
  kind: ResourceKind;
  /** Store directory under the prefix: `routes`, or `consumers/jack/credentials` for a credential. */
  dir: string;
  id: string | undefined;
  /** PATCH sub-path. */
  sub: string[];
  /** Credentials: the owning consumer's username (it must exist). */
  parent?: string;
}

export interface CrudOptions {
  store: ConfigStore;
  secrets: Secrets;
  logger: Logger;
  now: () => number;
  afterWrite: () => Promise<void>;
}

export function createCrud(opts: CrudOptions): (t: Target, ctx: Ctx) => Promise<Response> {
  const { store, secrets, logger, now } = opts;
  const prefix = store.prefix;
  const keyOf = (dir: string, id: string) => `${prefix}/${dir}/${id}`;
  const envelope = (item: StoredItem) => ({ key: item.key, value: item.value, createdIndex: item.createdIndex, modifiedIndex: item.modifiedIndex });
  const notFound = () => json(404, { message: 'Key not found', error_msg: 'Key not found' });
  const seal = (kind: ResourceKind, v: Record<string, unknown>) => (kind.seal ? kind.seal(v) : secrets.seal(v));
  const open = (kind: ResourceKind, v: Record<string, unknown>) => (kind.open ? kind.open(v) : secrets.open(v));
  const shown = async (kind: ResourceKind, v: Record<string, unknown>) => (kind.present ? kind.present(v) : open(kind, v));
  const readOnly = () => (store.readOnly ? adminError(405, store.readOnly) : undefined);
  const parentExists = async (t: Target) =>
    t.parent === undefined || ((await store.get(keyOf('consumers', t.parent))) ?? (await store.getLatest?.(keyOf('consumers', t.parent)))) !== undefined;

  return async (t, ctx) => {
    const method = ctx.req.method as Method;
    if (t.kind.unsupported.has(method)) return adminError(405, `not supported \`${method}\` method for ${t.kind.kind}`);
    if (t.id !== undefined && t.id !== '') {
      const bad = validPathId(t.kind, t.id);
      if (bad) return adminError(400, bad);
    }
    switch (method) {
      case 'GET':
        if (!(await parentExists(t))) return notFound();
        return t.id === undefined ? list(t, ctx) : getOne(t, t.id);
      case 'PUT':
        return put(t, ctx);
      case 'POST':
        return post(t, ctx);
      case 'PATCH':
        return patch(t, ctx);
      case 'DELETE':
        return remove(t, ctx);
      default:
        return adminError(405, `not supported \`${method}\` method for ${t.kind.kind}`);
    }
  };

  async function list(t: Target, ctx: Ctx): Promise<Response> {
    const state = await store.load();
    // Items directly under the directory: a consumer list leaves its credentials out, as APISIX.
    let items = [...itemsOf(state, prefix, t.dir).values()];
    const search = listSearch(ctx.query);
    if (search instanceof Response) return search;
    const byName = search.name;
    if (byName) items = items.filter((i) => byName(String(i.value.name ?? 'nil')));
    const label = ctx.query.get('label');
    if (label !== null) items = items.filter((i) => isPlainObject(i.value.labels) && Object.hasOwn(i.value.labels, label));
    const byUri = search.uri;
    if (byUri) {
      items = items.filter((i) => {
        const uris = Array.isArray(i.value.uris) ? i.value.uris : [i.value.uri];
        return uris.some((u) => typeof u === 'string' && byUri(u));
      });
    }
    const refused = search.refusal();
    if (refused) return refused;
    const filter = ctx.query.get('filter');
    if (filter !== null && t.kind.dir === 'routes') {
      const f = new URLSearchParams(filter);
      for (const field of ['service_id', 'upstream_id']) {
        const want = f.get(field);
        if (want !== null) items = items.filter((i) => i.value[field] === want);
      }
    }
    const total = items.length;
    const page = ctx.query.get('page');
    const pageSize = ctx.query.get('page_size');
    if (page !== null && pageSize !== null && isNumeric(page) && isNumeric(pageSize)) {
      const size = Number(pageSize);
      if (size < 10 || size > 500) return text(400, 'page_size must be between 10 and 500');
      const p = Math.max(1, Math.floor(Number(page)));
      items.sort((a, b) => a.createdIndex - b.createdIndex);
      items = items.slice((p - 1) * size, p * size);
    }
    const out = await Promise.all(items.map(async (i) => envelope({ ...i, value: await shown(t.kind, i.value) })));
    return json(200, { total, list: out });
  }

  async function getOne(t: Target, id: string): Promise<Response> {
    const item = await store.get(keyOf(t.dir, id));
    return item ? json(200, envelope({ ...item, value: await shown(t.kind, item.value) })) : notFound();
  }

  /** Parse and check a JSON body. Returns the object, or an error Response. */
  async function readJson(ctx: Ctx, missingMsg: string): Promise<{ body: unknown } | Response> {
    const raw = await readBody(ctx.req, ADMIN_BODY_LIMIT);
    if (raw.trim() === '') return adminError(400, missingMsg);
    let body: unknown;
    try {
      body = JSON.parse(raw);
    } catch (err) {
      return adminError(400, `invalid request body: ${(err as Error).message}`);
    }
    if (jsonDepth(body, ADMIN_JSON_DEPTH) > ADMIN_JSON_DEPTH) {
      return adminError(400, `invalid request body: JSON nested deeper than ${ADMIN_JSON_DEPTH} levels`);
    }
    return { body };
  }

  function forbiddenTimestamps(body: Record<string, unknown>): Response | undefined {
    for (const f of TIMESTAMP_FIELDS) {
      if (body[f] !== undefined) return adminError(400, `the property is forbidden:  ${f}`);
      for (const nested of ['upstream', 'plugins']) {
        const n = body[nested];
        if (isPlainObject(n) && n[f] !== undefined) return adminError(400, `the property is forbidden:  ${nested}.${f}`);
      }
    }
    return undefined;
  }

  /**
   * Write with compare-and-set; `build` computes the new value from the current item.
   *
   * The first attempt starts from `store.get()`, which for etcd is a mirror that may trail etcd (propagation
   * delay, a watch in backoff). A failed compare hands back the key's state in the back end
   * (`StoreConflictError.latest`; else `getLatest()`, else `get()`) and the next attempt starts from that, so a
   * trailing mirror costs one extra round trip, not a lost create_time. An answer `build` gave from a copy that
   * may trail (404 for a route created through another gateway a moment ago, a 400 computed from an old value) is
   * checked once against the back end before it is returned.
   *
   * Every write is conditional, even APISIX's PUT, which is a plain set there (last write wins): an unconditional
   * write would store the create_time of whatever copy it last read. Such a write passes PUT_ATTEMPTS: it keeps
   * retrying, since every lost race means another write went through (with N writers at once, each one's write
   * lands within N attempts); anything else gives up after CAS_ATTEMPTS. Then
   * the answer is 503 `value changed before overwritten` (APISIX's message) and nothing was written.
   */
  async function casWrite(
    key: string,
    build: (current: StoredItem | undefined) => Promise<Record<string, unknown> | Response>,
    attempts = CAS_ATTEMPTS,
  ): Promise<{ item: StoredItem; created: boolean } | Response> {
    const latest = async () => {
      const item = await (store.getLatest ? store.getLatest(key) : store.get(key));
      return { item, modifiedIndex: item?.modifiedIndex ?? 0 };
    };
    let current = await store.get(key);
    let expect = current?.modifiedIndex ?? 0;
    /** `current` is the back end's own state (not a copy that may trail it). */
    let fresh = store.getLatest === undefined;
    for (let attempt = 0; attempt < attempts; attempt++) {
      const next = await build(current);
      if (next instanceof Response) {
        if (fresh) return next;
        ({ item: current, modifiedIndex: expect } = await latest());
        fresh = true;
        continue;
      }
      try {
        const res = await store.put(key, next, { expect });
        await opts.afterWrite();
        return res;
      } catch (err) {
        if (!(err instanceof StoreConflictError)) throw err;
        ({ item: current, modifiedIndex: expect } = err.latest ?? (await latest()));
        fresh = true;
      }
    }
    logger.warn('admin: a write lost the compare-and-set race every time; nothing was written', { key, attempts });
    return adminError(503, 'value changed before overwritten');
  }

  async function put(t: Target, ctx: Ctx): Promise<Response> {
    const ro = readOnly();
    if (ro) return ro;
    const { kind } = t;
    const parsed = await readJson(ctx, 'missing configurations');
    if (parsed instanceof Response) return parsed;
    const body = parsed.body;
    if (!isPlainObject(body)) return adminError(400, 'invalid configuration: wrong type: expected object, got ' + jsonType(body));
    let value: Record<string, unknown>;
    let finalId: string;
    if (kind.idField === 'username') {
      // Consumers: keyed by the body's username (checked against the URL by the kind); no id is injected.
      value = { ...body };
      finalId = t.id ?? (typeof body.username === 'string' ? body.username : '');
    } else {
      const bodyId = kind.idField === 'id' ? body.id : undefined;
      if (t.id === undefined && bodyId === undefined) return adminError(400, kind.missingId);
      if (t.id !== undefined && bodyId !== undefined && String(bodyId) !== t.id) return adminError(400, `wrong ${kind.kind} id`);
      value = { ...body, id: t.id ?? bodyId };
      finalId = String(value.id);
    }
    if (kind.timestamps) {
      const bad = forbiddenTimestamps(body);
      if (bad) return bad;
    }
    const err = await kind.validate(value, { id: finalId, parent: t.parent });
    if (err) return adminError(400, err);
    const badId = validPathId(kind, finalId);
    if (badId) return adminError(400, badId);
    if (!(await parentExists(t))) return adminError(404, 'consumer not found');
    const res = await casWrite(
      keyOf(t.dir, finalId),
      async (current) => {
        if (!kind.timestamps) return seal(kind, value);
        const tm = now();
        const createTime = current?.value.create_time;
        return seal(kind, { ...value, create_time: typeof createTime === 'number' ? createTime : tm, update_time: tm });
      },
      PUT_ATTEMPTS,
    );
    if (res instanceof Response) return res;
    return json(res.created ? 201 : 200, { key: res.item.key, value: res.item.value });
  }

  async function post(t: Target, ctx: Ctx): Promise<Response> {
    const ro = readOnly();
    if (ro) return ro;
    const parsed = await readJson(ctx, 'missing configurations');
    if (parsed instanceof Response) return parsed;
    const body = parsed.body;
    if (!isPlainObject(body)) return adminError(400, 'invalid configuration: wrong type: expected object, got ' + jsonType(body));
    if (t.id !== undefined || body.id !== undefined) return adminError(400, `wrong ${t.kind.kind} id, do not need it`);
    const bad = forbiddenTimestamps(body);
    if (bad) return bad;
    // No kind that accepts POST looks at the id when it validates; none is minted for a write that is refused.
    const err = await t.kind.validate(body, { id: '', parent: t.parent });
    if (err) return adminError(400, err);
    const newId = String(await store.nextId()).padStart(20, '0');
    const tm = now();
    const value = await seal(t.kind, { ...body, id: newId, create_time: tm, update_time: tm });
    const { item } = await store.put(keyOf(t.dir, newId), value, { expect: 0 });
    await opts.afterWrite();
    return json(201, { key: item.key, value: item.value });
  }

  async function patch(t: Target, ctx: Ctx): Promise<Response> {
    const ro = readOnly();
    if (ro) return ro;
    const { id, sub, kind } = t;
    if (id === undefined) return adminError(400, kind.missingId);
    const parsed = await readJson(ctx, 'missing new configuration');
    if (parsed instanceof Response) return parsed;
    const body = parsed.body;
    if (sub.length === 0 && !isPlainObject(body)) return adminError(400, 'invalid configuration');
    const key = keyOf(t.dir, id);
    let missing = false;
    const res = await casWrite(key, async (current) => {
      // Set on every attempt: a 404 from a copy that trailed the back end is followed by an attempt on its state.
      missing = !current;
      if (!current) return notFound();
      // Merged and validated in plaintext (a patch may leave a stored secret untouched), sealed again after.
      const currentValue = await open(kind, current.value);
      let next: Record<string, unknown> | string;
      if (sub.length === 0) {
        next = mergePatch(currentValue, body as Record<string, unknown>);
        if ((body as Record<string, unknown>).update_time === undefined) next.update_time = now();
      } else {
        next = patchAt(currentValue, sub, body);
        if (typeof next !== 'string') next.update_time = now();
      }
      if (typeof next === 'string') return adminError(400, next);
      next.id = current.value.id ?? id;
      if (next.create_time === undefined && current.value.create_time !== undefined) next.create_time = current.value.create_time;
      const err = await kind.validate(next, { id, parent: t.parent });
      return err ? adminError(400, err) : seal(kind, next);
    });
    if (res instanceof Response) return missing ? notFound() : res;
    return json(200, { key: res.item.key, value: res.item.value });
  }

  async function remove(t: Target, ctx: Ctx): Promise<Response> {
    const ro = readOnly();
    if (ro) return ro;
    const { id, kind } = t;
    if (id === undefined) return adminError(400, kind.missingId);
    const key = keyOf(t.dir, id);
    // The gateway's copy may trail the back end (etcd: a key another gateway wrote a moment ago): ask it before a 404.
    const current = (await store.get(key)) ?? (await store.getLatest?.(key));
    if (!current) return notFound();
    if (kind.inUse && ctx.query.get('force') !== 'true') {
      const why = await kind.inUse(id);
      if (why) return adminError(400, why);
    }
    if (kind.dir === 'consumers') {
      // APISIX removes the consumer's credentials first (`rmdir <key>/credentials/`).
      const under = `${key}/credentials/`;
      for (const item of (await store.load()).items) if (item.key.startsWith(under)) await store.delete(item.key);
    }
    const deleted = await store.delete(key);
    if (!deleted) return notFound();
    await opts.afterWrite();
    return json(200, { deleted: '1', key });
  }
}

export function isNumeric(s: string): boolean {
  return s.trim() !== '' && Number.isFinite(Number(s));
}

function jsonType(x: unknown): string {
  if (x === null) return 'null';
  if (Array.isArray(x)) return 'array';
  return typeof x;
}

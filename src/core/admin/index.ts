import { toJsonSchema } from '@valibot/to-json-schema';
import type { Context } from 'hono';
import { Hono } from 'hono';
import { type ConfigStore, StoreConflictError, StoreError, type StoredItem } from '../../store/types.ts';
import type { Logger } from '../context.ts';
import { type Capabilities, checkPluginConf, FULL_CAPABILITIES, itemsOf, metaSchema } from '../config.ts';
import type { PluginRegistry } from '../plugins/index.ts';
import { idProblem, isPlainObject, TIMESTAMP_FIELDS } from '../schema/common.ts';
import { checkRoute, routeSchema } from '../schema/route.ts';
import { checkUpstream, upstreamSchema } from '../schema/upstream.ts';
import { createSecrets, type Keyring } from '../secrets.ts';
import { keyChecker, presentedKey } from './auth.ts';
import { listSearch } from './filter-pattern.ts';
import { type AuthLimitOptions, AuthLimiter, clientBucket, compileAllowList, displayIp } from './guard.ts';
import { ADMIN_HEADERS, adminError, BadBody, BodyTooLarge, json, jsonDepth, mergePatch, patchAt, readBody, text } from './json.ts';

/** APISIX's admin body cap (1.5 MiB). fngate answers 413 where APISIX answers 400. */
export const ADMIN_BODY_LIMIT = 1572864;
/** Nesting deeper than this is refused before any schema work. */
export const ADMIN_JSON_DEPTH = 64;
const CAS_ATTEMPTS = 5;
/** A PUT, a plain set in APISIX, retries its compare-and-set longer (see casWrite). */
const PUT_ATTEMPTS = 100;

/**
 * JSON schema of the `_meta` a plugin conf may carry in fngate, generated from the valibot `metaSchema` that
 * checks it (config.ts), so the two cannot differ. Nested in each plugin schema, hence without `$schema`.
 */
const META_JSON_SCHEMA = (() => {
  const { $schema: _, ...schema } = toJsonSchema(metaSchema, { errorMode: 'ignore' });
  return schema;
})();

/** Writes that would store a key (APISIX gives these an etcd lease when `?ttl=` is set). */
const WRITE_METHODS = new Set(['PUT', 'POST', 'PATCH']);

export interface AdminOptions {
  store: ConfigStore;
  plugins: PluginRegistry;
  capabilities?: Capabilities;
  /** Accepted admin keys. Empty: every request is refused (the Admin API is closed). */
  keys: readonly string[];
  /** Called after every successful write, before answering, so the next proxied request sees the change. */
  afterWrite: () => Promise<void>;
  logger: Logger;
  /** Seconds since the epoch; injectable for tests. */
  now?: () => number;
  /** The client's IP address from the runtime's connection info ('' when unknown). */
  clientIp?: (c: Context) => string;
  /**
   * Client addresses/CIDRs allowed to use the Admin API at all (APISIX `allow_admin`); others get 403.
   * Undefined: no address check (the runtime entry decides; Node passes ADMIN_ALLOW, default loopback).
   */
  allow?: readonly string[];
  /** Limit on failed key checks per client (default: 10 per 60 s, then 429 for 60 s). */
  authLimit?: AuthLimitOptions;
  /**
   * DATA_ENCRYPTION_KEY: plugin secret fields are encrypted with it before they are stored; GET answers
   * show them decrypted, write answers show what was stored (ciphertext), as APISIX. Undefined: plaintext.
   */
  keyring?: Keyring;
}

interface ResourceDef {
  /** Singular, as APISIX names it in messages: `route`, `upstream`. */
  kind: string;
  /** Validate a full object about to be stored; return an error message or undefined. */
  validate(value: Record<string, unknown>): Promise<string | undefined>;
  /** Refuse a delete while something still refers to the item. */
  inUse?(id: string): Promise<string | undefined>;
}

type Ctx = { req: Request; query: URLSearchParams; segments: string[] };

export function createAdmin(opts: AdminOptions): Hono {
  const { store, plugins, logger } = opts;
  const now = opts.now ?? (() => Math.floor(Date.now() / 1000));
  const prefix = store.prefix;
  const checker = keyChecker(opts.keys);
  const secrets = createSecrets(plugins, opts.keyring);
  const allow = opts.allow && compileAllowList(opts.allow);
  const clientIp = opts.clientIp ?? (() => '');
  const limiter = new AuthLimiter(opts.authLimit);

  const resources: Record<string, ResourceDef> = {
    routes: {
      kind: 'route',
      async validate(value) {
        const res = checkRoute(value);
        if (!res.ok) return res.message;
        for (const [name, conf] of Object.entries(res.value.plugins ?? {})) {
          const pc = checkPluginConf(plugins, name, conf, opts.capabilities ?? FULL_CAPABILITIES);
          if (!pc.ok) return pc.message;
        }
        if (res.value.upstream_id !== undefined) {
          const up = await store.get(`${prefix}/upstreams/${String(res.value.upstream_id)}`);
          if (!up) return `failed to fetch upstream info by upstream id [${String(res.value.upstream_id)}], response code: 404`;
        }
        return undefined;
      },
    },
    upstreams: {
      kind: 'upstream',
      async validate(value) {
        const res = checkUpstream(value);
        return res.ok ? undefined : `invalid configuration: ${res.message}`;
      },
      async inUse(id) {
        const state = await store.load();
        for (const [routeId, item] of itemsOf(state, prefix, 'routes')) {
          if (item.value.upstream_id !== undefined && String(item.value.upstream_id) === id) {
            return `can not delete this upstream, route [${routeId}] is still using it now`;
          }
        }
        return undefined;
      },
    },
  };

  const schemas: Record<string, unknown> = {
    route: toJsonSchema(routeSchema, { errorMode: 'ignore' }),
    upstream: toJsonSchema(upstreamSchema, { errorMode: 'ignore' }),
  };

  const pluginsByPriority = [...plugins.values()].sort((a, b) => b.priority - a.priority);
  const pluginSchemas = new Map(
    pluginsByPriority.map((p) => {
      const schema = toJsonSchema(p.schema, { errorMode: 'ignore' }) as Record<string, unknown>;
      // APISIX injects `_meta` into every plugin schema; fngate accepts the parts it honours (config.ts).
      const properties = { ...(schema.properties as Record<string, unknown> | undefined), _meta: META_JSON_SCHEMA };
      return [p.name, { ...schema, properties, $comment: 'this is a mark for our injected plugin schema' }];
    }),
  );

  const app = new Hono();

  // Before anything else, on every admin path (HEAD and OPTIONS too, as nginx's `allow`/`deny` would):
  // the address allow list. Registered on the admin paths only, so that a combined app (Workers) does not
  // run it for proxied requests.
  app.use('/apisix/admin/*', async (c, next) => {
    if (allow) {
      const ip = clientIp(c);
      if (!allow.match(ip)) return adminError(403, `access from ${displayIp(ip) || 'an unknown address'} is not allowed`);
    }
    await next();
  });

  app.options('/apisix/admin/*', () =>
    new Response(null, {
      status: 200,
      headers: {
        ...ADMIN_HEADERS,
        'access-control-allow-methods': 'POST, GET, PUT, OPTIONS, DELETE, PATCH',
        'access-control-allow-headers': '*',
      },
    }),
  );

  app.all('/apisix/admin/*', async (c) => {
    const req = c.req.raw;
    const url = new URL(req.url);
    // The health probe (no key needed). Hono dispatches HEAD as GET, so a HEAD route would never match.
    if (req.method === 'HEAD' && (url.pathname === '/apisix/admin' || url.pathname === '/apisix/admin/')) {
      return new Response(null, { status: 200, headers: ADMIN_HEADERS });
    }
    const rest = url.pathname.slice('/apisix/admin/'.length);
    const segments: string[] = [];
    for (const raw of rest.split('/')) {
      try {
        segments.push(decodeURIComponent(raw));
      } catch {
        return adminError(400, `invalid path segment: ${raw}`);
      }
    }
    while (segments.length && segments[segments.length - 1] === '') segments.pop();

    // Failed key checks are counted per client; a client over the limit is refused even with the right key.
    const bucket = clientBucket(clientIp(c));
    const wait = limiter.blockedFor(bucket);
    if (wait > 0) {
      return adminError(429, `too many failed admin key checks from this address; try again in ${wait} s`, undefined, {
        'retry-after': String(wait),
      });
    }
    const key = presentedKey(req, url.searchParams);
    if (key === undefined) return adminError(401, 'failed to check token', { description: 'missing apikey' });
    if (!(await (await checker).check(key))) {
      limiter.fail(bucket);
      return adminError(401, 'failed to check token', { description: 'wrong apikey' });
    }
    limiter.succeed(bucket);

    const ctx: Ctx = { req, query: url.searchParams, segments };
    try {
      return await route(ctx);
    } catch (err) {
      if (err instanceof BadBody) return adminError(400, `invalid request body: ${err.message}`);
      if (err instanceof BodyTooLarge) {
        return adminError(413, `invalid request body: request size ${err.size} is greater than the maximum size ${ADMIN_BODY_LIMIT} allowed`);
      }
      if (err instanceof StoreError) {
        logger.error('admin: store failure', { error: err.message });
        return adminError(503, `failed to access the config store: ${err.message}`);
      }
      throw err;
    }
  });

  async function route(ctx: Ctx): Promise<Response> {
    const [resource, id, ...sub] = ctx.segments;
    const method = ctx.req.method;
    if (resource === undefined) return adminError(404, 'not found');
    if (resource === 'plugins') return pluginsEndpoint(method, id, sub, ctx.query);
    if (resource === 'schema') return schemaEndpoint(method, id, sub, ctx.query);
    // Own properties only: `constructor`, `__proto__`… are resource names a client may send (found by fuzzing).
    const def = Object.hasOwn(resources, resource) ? resources[resource] : undefined;
    if (!def) return adminError(404, `Unsupported resource type: ${resource}`);
    const badId = id !== undefined && id !== '' ? idProblem(id) : undefined;
    if (badId) return adminError(400, badId);
    const ttl = ttlRefusal(method, ctx.query);
    if (ttl) return ttl;
    switch (method) {
      case 'GET':
        return id === undefined ? list(resource, ctx) : getOne(resource, id);
      case 'PUT':
        return put(resource, def, id, ctx);
      case 'POST':
        return post(resource, def, id, ctx);
      case 'PATCH':
        return patch(resource, def, id, sub, ctx);
      case 'DELETE':
        return remove(resource, def, id, ctx);
      default:
        return adminError(405, `not supported \`${method}\` method for ${def.kind}`);
    }
  }

  /**
   * `?ttl=`: APISIX stores a write with an etcd lease so that the key expires. A non-number is refused as
   * APISIX does; a number on a write is refused too, since fngate's stores have no expiring keys and it never
   * accepts a rule it would then ignore. GET and DELETE ignore a numeric ttl, as in APISIX.
   */
  function ttlRefusal(method: string, query: URLSearchParams): Response | undefined {
    const ttl = query.getAll('ttl');
    if (ttl.length === 0) return undefined;
    if (ttl.length > 1 || !isNumeric(ttl[0]!)) return adminError(400, 'invalid argument ttl: should be a number');
    if (!WRITE_METHODS.has(method)) return undefined;
    return adminError(400, 'invalid argument ttl: fngate does not support expiring keys (APISIX\'s etcd leases); delete the item when it is no longer needed');
  }

  /**
   * APISIX's `?subsystem=`: `http` (the default) or `stream`. fngate has no stream subsystem, so it has no
   * stream plugins: the list is empty and every name is unknown there.
   */
  function pluginsEndpoint(method: string, name: string | undefined, sub: string[], query: URLSearchParams): Response {
    if (name === 'reload') {
      if (method !== 'PUT') return adminError(405, `please use PUT method to reload the plugins, ${method} method is not allowed.`);
      return text(200, 'done');
    }
    if (method !== 'GET' || sub.length) return adminError(404, 'not found');
    const subsystem = query.get('subsystem') ?? 'http';
    const known = subsystem === 'http' || subsystem === 'stream';
    if (name === 'list') {
      if (!known) return text(400, 'invalid subsystem passed');
      return json(200, subsystem === 'http' ? pluginsByPriority.map((p) => p.name) : []);
    }
    if (name === undefined) return json(200, Object.fromEntries(pluginsByPriority.map((p) => [p.name, { priority: p.priority, version: p.version }])));
    if (!known) return adminError(400, `unsupported subsystem: ${subsystem}`);
    const schema = subsystem === 'http' ? pluginSchemas.get(name) : undefined;
    return schema ? json(200, schema) : adminError(404, `plugin not found in subsystem ${subsystem}`);
  }

  function schemaEndpoint(method: string, name: string | undefined, sub: string[], query: URLSearchParams): Response {
    if (method !== 'GET') return adminError(404, 'not found');
    if (name === 'plugins' && sub.length === 1) return pluginsEndpoint('GET', sub[0], [], query);
    const schema = name === undefined || !Object.hasOwn(schemas, name) ? undefined : schemas[name];
    return schema ? json(200, schema) : adminError(400, `not found schema: ${name ?? ''}`);
  }

  const keyOf = (resource: string, id: string) => `${prefix}/${resource}/${id}`;
  const envelope = (item: StoredItem) => ({ key: item.key, value: item.value, createdIndex: item.createdIndex, modifiedIndex: item.modifiedIndex });
  const notFound = () => json(404, { message: 'Key not found', error_msg: 'Key not found' });
  const readOnly = () => (store.readOnly ? adminError(405, store.readOnly) : undefined);

  async function list(resource: string, ctx: Ctx): Promise<Response> {
    const state = await store.load();
    let items = [...itemsOf(state, prefix, resource).values()];
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
    if (filter !== null) {
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
    const shown = await Promise.all(items.map(async (i) => envelope({ ...i, value: await secrets.open(i.value) })));
    return json(200, { total, list: shown });
  }

  async function getOne(resource: string, id: string): Promise<Response> {
    const item = await store.get(keyOf(resource, id));
    return item ? json(200, envelope({ ...item, value: await secrets.open(item.value) })) : notFound();
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

  async function put(resource: string, def: ResourceDef, id: string | undefined, ctx: Ctx): Promise<Response> {
    const ro = readOnly();
    if (ro) return ro;
    const parsed = await readJson(ctx, 'missing configurations');
    if (parsed instanceof Response) return parsed;
    const body = parsed.body;
    if (!isPlainObject(body)) return adminError(400, 'invalid configuration: wrong type: expected object, got ' + jsonType(body));
    const bodyId = body.id;
    if (id === undefined && bodyId === undefined) return adminError(400, `missing ${def.kind} id`);
    if (id !== undefined && bodyId !== undefined && String(bodyId) !== id) return adminError(400, `wrong ${def.kind} id`);
    const bad = forbiddenTimestamps(body);
    if (bad) return bad;
    const value: Record<string, unknown> = { ...body, id: id ?? bodyId };
    const err = await def.validate(value);
    if (err) return adminError(400, err);
    const finalId = String(value.id);
    const badFinalId = idProblem(finalId);
    if (badFinalId) return adminError(400, badFinalId);
    const res = await casWrite(keyOf(resource, finalId), async (current) => {
      const t = now();
      const createTime = current?.value.create_time;
      return secrets.seal({ ...value, create_time: typeof createTime === 'number' ? createTime : t, update_time: t });
    }, PUT_ATTEMPTS);
    if (res instanceof Response) return res;
    return json(res.created ? 201 : 200, { key: res.item.key, value: res.item.value });
  }

  async function post(resource: string, def: ResourceDef, id: string | undefined, ctx: Ctx): Promise<Response> {
    const ro = readOnly();
    if (ro) return ro;
    const parsed = await readJson(ctx, 'missing configurations');
    if (parsed instanceof Response) return parsed;
    const body = parsed.body;
    if (!isPlainObject(body)) return adminError(400, 'invalid configuration: wrong type: expected object, got ' + jsonType(body));
    if (id !== undefined || body.id !== undefined) return adminError(400, `wrong ${def.kind} id, do not need it`);
    const bad = forbiddenTimestamps(body);
    if (bad) return bad;
    const err = await def.validate(body);
    if (err) return adminError(400, err);
    const newId = String(await store.nextId()).padStart(20, '0');
    const t = now();
    const value = await secrets.seal({ ...body, id: newId, create_time: t, update_time: t });
    const { item } = await store.put(keyOf(resource, newId), value, { expect: 0 });
    await opts.afterWrite();
    return json(201, { key: item.key, value: item.value });
  }

  async function patch(resource: string, def: ResourceDef, id: string | undefined, sub: string[], ctx: Ctx): Promise<Response> {
    const ro = readOnly();
    if (ro) return ro;
    if (id === undefined) return adminError(400, `missing ${def.kind} id`);
    const parsed = await readJson(ctx, 'missing new configuration');
    if (parsed instanceof Response) return parsed;
    const body = parsed.body;
    if (sub.length === 0 && !isPlainObject(body)) return adminError(400, 'invalid configuration');
    const key = keyOf(resource, id);
    let missing = false;
    const res = await casWrite(key, async (current) => {
      // Set on every attempt: a 404 from a copy that trailed the back end is followed by an attempt on its state.
      missing = !current;
      if (!current) return notFound();
      // Merged and validated in plaintext (a patch may leave a stored secret untouched), sealed again after.
      const currentValue = await secrets.open(current.value);
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
      const err = await def.validate(next);
      return err ? adminError(400, err) : secrets.seal(next);
    });
    if (res instanceof Response) return missing ? notFound() : res;
    return json(200, { key: res.item.key, value: res.item.value });
  }

  async function remove(resource: string, def: ResourceDef, id: string | undefined, ctx: Ctx): Promise<Response> {
    const ro = readOnly();
    if (ro) return ro;
    if (id === undefined) return adminError(400, `missing ${def.kind} id`);
    const key = keyOf(resource, id);
    // The gateway's copy may trail the back end (etcd: a key another gateway wrote a moment ago): ask it before a 404.
    const current = (await store.get(key)) ?? (await store.getLatest?.(key));
    if (!current) return notFound();
    if (def.inUse && ctx.query.get('force') !== 'true') {
      const why = await def.inUse(id);
      if (why) return adminError(400, why);
    }
    const deleted = await store.delete(key);
    if (!deleted) return notFound();
    await opts.afterWrite();
    return json(200, { deleted: '1', key });
  }

  return app;
}

function isNumeric(s: string): boolean {
  return s.trim() !== '' && Number.isFinite(Number(s));
}

function jsonType(x: unknown): string {
  if (x === null) return 'null';
  if (Array.isArray(x)) return 'array';
  return typeof x;
}

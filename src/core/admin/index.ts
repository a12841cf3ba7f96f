import type { Context, MiddlewareHandler } from 'hono';
import { Hono } from 'hono';
import { type ConfigStore, StoreError } from '../../store/types.ts';
import type { Logger } from '../context.ts';
import type { Capabilities } from '../plugins/check.ts';
import type { PluginRegistry } from '../plugins/index.ts';
import { createSecrets, type Keyring } from '../secrets.ts';
import type { TlsValidator } from '../ssl.ts';
import { keyChecker, presentedKey } from './auth.ts';
import { ADMIN_BODY_LIMIT, type Ctx, createCrud, isNumeric, type Target } from './crud.ts';
import { type AuthLimitOptions, AuthLimiter, clientBucket, compileAllowList, displayIp } from './guard.ts';
import { ADMIN_HEADERS, adminError, BadBody, BodyTooLarge } from './json.ts';
import { resourceRegistry, validPathId } from './resources.ts';
import { schemaEndpoints } from './schemas.ts';
import { serveUi } from './ui.ts';

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
  /** The runtime's X.509 check of ssls (src/core/ssl.ts). */
  tlsValidator?: TlsValidator;
}

export function createAdmin(opts: AdminOptions): Hono {
  const { store, plugins, logger } = opts;
  const now = opts.now ?? (() => Math.floor(Date.now() / 1000));
  const checker = keyChecker(opts.keys);
  const secrets = createSecrets(plugins, opts.keyring);
  const allow = opts.allow && compileAllowList(opts.allow);
  const clientIp = opts.clientIp ?? (() => '');
  const limiter = new AuthLimiter(opts.authLimit);

  const kinds = resourceRegistry({
    store,
    plugins,
    capabilities: opts.capabilities,
    secrets,
    keyring: opts.keyring,
    tlsValidator: opts.tlsValidator,
  });
  const endpoints = schemaEndpoints(plugins, kinds.values());
  const crud = createCrud({ store, secrets, logger, now, afterWrite: opts.afterWrite });

  const app = new Hono();

  // Before anything else, on every admin path (HEAD and OPTIONS too, as nginx's `allow`/`deny` would):
  // the address allow list. Registered on the admin paths only, so that a combined app (Workers) does not
  // run it for proxied requests.
  // The dashboard (/ui/) too: only clients the Admin API would serve get its pages.
  const allowed: MiddlewareHandler = async (c, next) => {
    if (allow) {
      const ip = clientIp(c);
      if (!allow.match(ip)) return adminError(403, `access from ${displayIp(ip) || 'an unknown address'} is not allowed`);
    }
    await next();
  };
  app.use('/apisix/admin/*', allowed);
  app.use('/ui', allowed);
  app.use('/ui/*', allowed);
  app.all('/ui', (c) => serveUi(c.req.raw));
  app.all('/ui/*', (c) => serveUi(c.req.raw));

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

  /** Resolve a path against the registry, then hand it to the CRUD code. */
  async function route(ctx: Ctx): Promise<Response> {
    const [resource, id, ...sub] = ctx.segments;
    const method = ctx.req.method;
    if (resource === undefined) return adminError(404, 'not found');
    if (resource === 'plugins') return endpoints.plugins(method, id, sub, ctx.query);
    if (resource === 'schema') return endpoints.schema(method, id, sub, ctx.query);
    // Own entries only: `constructor`, `__proto__`… are resource names a client may send (found by fuzzing).
    // `credentials` is a kind, but only under `consumers/<username>/credentials`.
    const kind = resource === 'credentials' ? undefined : kinds.get(resource);
    if (!kind) return adminError(404, `Unsupported resource type: ${resource}`);
    let target: Target = { kind, dir: resource, id, sub };
    if (resource === 'consumers' && id !== undefined && sub[0] === 'credentials') {
      if (sub.length > 2) return adminError(404, 'not found');
      const bad = validPathId(kind, id);
      if (bad) return adminError(400, bad);
      target = { kind: kinds.get('credentials')!, dir: `consumers/${id}/credentials`, id: sub[1], sub: [], parent: id };
    }
    const ttl = ttlRefusal(method, ctx.query);
    if (ttl) return ttl;
    return crud(target, ctx);
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

  return app;
}

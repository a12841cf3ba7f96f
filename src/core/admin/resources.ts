/**
 * The Admin API's resource registry: every kind of object the Admin API stores, with what differs between kinds
 * (directory, name in messages, schema, reference checks at write time, delete-while-in-use checks, unsupported
 * methods, the id field). The CRUD code (crud.ts) serves every kind through this table; APISIX's own per-kind
 * modules are apisix/admin/{routes,upstreams,services,consumers,credentials,consumer_group,plugin_config,
 * global_rules,plugin_metadata}.lua.
 */
import type * as v from 'valibot';
import type { ConfigStore, StoreState } from '../../store/types.ts';
import { itemsOf } from '../config.ts';
import {
  type Capabilities,
  checkPluginConf,
  FULL_CAPABILITIES,
  type SchemaType,
  upstreamCapabilityProblem,
} from '../plugins/check.ts';
import type { PluginRegistry } from '../plugins/index.ts';
import { check, idProblem, isPlainObject, pluginsSchema } from '../schema/common.ts';
import { consumerGroupSchema, consumerSchema, credentialSchema, USERNAME_PATTERN } from '../schema/consumer.ts';
import { globalRuleSchema } from '../schema/global-rule.ts';
import { pluginConfigSchema } from '../schema/plugin-config.ts';
import { checkRoute, routeSchema } from '../schema/route.ts';
import { checkService, serviceSchema } from '../schema/service.ts';
import { checkUpstream, upstreamSchema } from '../schema/upstream.ts';
import type { Keyring, Secrets } from '../secrets.ts';
import { checkSslConf, pemProblem, sslKeyCipher, type TlsValidator } from '../ssl.ts';
import { sslSchema } from '../schema/ssl.ts';

export type Method = 'GET' | 'PUT' | 'POST' | 'PATCH' | 'DELETE';

/** Where a write or a check happens: the item's id, and for a credential the consumer that owns it. */
export interface Place {
  id: string;
  /** Credentials: the consumer's username. */
  parent?: string;
}

export interface ResourceKind {
  /** The URL segment and store directory: `routes` -> `<prefix>/routes/<id>`. */
  dir: string;
  /** Singular, as APISIX names the kind in messages: `route`, `plugin config`, `consumer group`. */
  kind: string;
  /**
   * Name under `GET /apisix/admin/schema/<name>` (APISIX's schema_def key), and the valibot schema shown there;
   * no name: not shown (plugin_metadata, whose real schema is the plugin's).
   */
  schemaName?: string;
  schema: v.GenericSchema;
  /**
   * How the id is given: `id` (URL or body `id`, injected into the value), `username` (consumers: the body's
   * `username`, nothing injected) or `name` (plugin_metadata: the plugin name in the URL, injected as `id`).
   */
  idField: 'id' | 'username' | 'name';
  /** Methods answered 405 ``not supported `M` method for <kind>``. */
  unsupported: ReadonlySet<Method>;
  /** The admin sets `create_time`/`update_time` (all but plugin_metadata). */
  timestamps: boolean;
  /** The message of a PUT without an id (APISIX: `missing <kind> id`). */
  missingId: string;
  /** Full check of a value about to be stored (plaintext): APISIX's message, or undefined. */
  validate(value: Record<string, unknown>, at: Place): Promise<string | undefined>;
  /** Why the item may not be deleted now (unless `?force=true`), or undefined. */
  inUse?(id: string): Promise<string | undefined>;
  /** Encryption at rest for this kind instead of the plugin secret fields' (ssls: `key`, `keys`). */
  seal?(value: Record<string, unknown>): Promise<Record<string, unknown>>;
  /** The inverse of {@link ResourceKind.seal} (a PATCH merges and checks plaintext). */
  open?(value: Record<string, unknown>): Promise<Record<string, unknown>>;
  /** What a GET shows of a stored value, unopened (ssls: without the private keys, as APISIX). */
  present?(value: Record<string, unknown>): Record<string, unknown>;
}

export interface RegistryOptions {
  store: ConfigStore;
  plugins: PluginRegistry;
  capabilities?: Capabilities;
  secrets: Secrets;
  /** DATA_ENCRYPTION_KEY, for the private keys of ssls. */
  keyring?: Keyring;
  /** The runtime's X.509 check of ssls (src/core/ssl.ts); without it only the PEM structure is checked. */
  tlsValidator?: TlsValidator;
}

/** A valid path id of a kind: ids for most, usernames for consumers, plugin names for plugin_metadata. */
export function validPathId(kind: ResourceKind, id: string): string | undefined {
  if (kind.idField === 'username') {
    return id.length <= 256 && USERNAME_PATTERN.test(id)
      ? undefined
      : `invalid configuration: property "username" validation failed: failed to match pattern ${JSON.stringify(USERNAME_PATTERN.source)} with ${JSON.stringify(id)}`;
  }
  return idProblem(id);
}

const set = (...m: Method[]) => new Set<Method>(m);

/** Builds the registry: kind by directory (`routes`, ..., and `credentials` for `consumers/<u>/credentials`). */
export function resourceRegistry(opts: RegistryOptions): ReadonlyMap<string, ResourceKind> {
  const { store, plugins, secrets } = opts;
  const prefix = store.prefix;
  const caps = opts.capabilities ?? FULL_CAPABILITIES;
  const exists = async (dir: string, id: unknown) => (await store.get(`${prefix}/${dir}/${String(id)}`)) !== undefined;
  const missingRef = (what: string, id: unknown) =>
    `failed to fetch ${what} info by ${what} id [${String(id)}], response code: 404`;

  /** Every plugin conf of `value.plugins`, checked against the schema of `type`; the first problem. */
  const checkPlugins = (value: Record<string, unknown>, type: SchemaType = 'route'): string | undefined => {
    if (!isPlainObject(value.plugins)) return undefined;
    for (const [name, conf] of Object.entries(value.plugins)) {
      const res = checkPluginConf(plugins, name, conf, caps, type);
      if (!res.ok) return res.message;
    }
    return undefined;
  };

  /** Items of `dir` that refer to `id` through `field` (ids compared as strings, as APISIX's `tostring`). */
  const users = (state: StoreState, dir: string, field: string, id: string) => {
    const out: string[] = [];
    for (const [itemId, item] of itemsOf(state, prefix, dir)) {
      const ref = item.value[field];
      if (ref !== undefined && ref !== null && String(ref) === id) out.push(itemId);
    }
    return out;
  };

  /**
   * APISIX's `check_duplicate_key` (consumer.lua): an auth plugin's key attribute (`consumerKey`) may not be shared
   * by two consumers or credentials, since a request could then not tell them apart. A consumer never conflicts
   * with itself or its own credentials; a credential only not with itself. `$secret://` / `$env://` references
   * cannot be resolved at write time and are skipped.
   */
  async function duplicateKey(
    pluginConfs: unknown,
    consumer: string,
    credential?: string,
  ): Promise<string | undefined> {
    if (!isPlainObject(pluginConfs)) return undefined;
    const wanted: [string, string, string][] = [];
    for (const [name, conf] of Object.entries(pluginConfs)) {
      const attr = plugins.get(name)?.consumerKey;
      const value = attr && isPlainObject(conf) ? conf[attr] : undefined;
      if (attr && typeof value === 'string' && !isSecretRef(value)) wanted.push([name, attr, value]);
    }
    if (wanted.length === 0) return undefined;
    const base = `${prefix}/consumers/`;
    const state = await store.load();
    for (const item of state.items) {
      if (!item.key.startsWith(base)) continue;
      const parts = item.key.slice(base.length).split('/');
      let owner: { consumer: string; credential?: string };
      if (parts.length === 1) owner = { consumer: parts[0]! };
      else if (parts.length === 3 && parts[1] === 'credentials') owner = { consumer: parts[0]!, credential: parts[2]! };
      else continue;
      const self =
        credential === undefined
          ? owner.consumer === consumer
          : owner.consumer === consumer && owner.credential === credential;
      if (self) continue;
      const opened = await secrets.open(item.value);
      if (!isPlainObject(opened.plugins)) continue;
      for (const [name, attr, value] of wanted) {
        const conf = opened.plugins[name];
        if (!isPlainObject(conf) || conf[attr] !== value) continue;
        const desc =
          owner.credential === undefined
            ? `consumer: ${owner.consumer}`
            : `credential: ${owner.credential} of consumer: ${owner.consumer}`;
        return `duplicate ${attr} of plugin ${name} found with ${desc}`;
      }
    }
    return undefined;
  }

  const sslKeys = sslKeyCipher(opts.keyring);

  /**
   * APISIX's upstream.lua `check_upstream_conf` on `tls` (plaintext, after the schema): an inline client
   * certificate is checked as an ssl's pair; `client_cert_id` must name a stored ssl of `type: client`.
   */
  const upstreamTlsProblem = async (upstream: unknown): Promise<string | undefined> => {
    const tls = isPlainObject(upstream) ? upstream.tls : undefined;
    if (!isPlainObject(tls)) return undefined;
    const { client_cert: cert, client_key: key, client_cert_id: certId } = tls;
    if (typeof cert === 'string' && typeof key === 'string') {
      if (!key.startsWith('---')) return 'failed to decrypt previous encrypted key';
      return pemProblem('cert', cert) ?? pemProblem('key', key) ?? opts.tlsValidator?.(cert, key);
    }
    if (certId === undefined) return undefined;
    const ssl = await store.get(`${prefix}/ssls/${String(certId)}`);
    if (ssl === undefined) return missingRef('ssl', certId);
    if (ssl.value.type !== 'client') return `failed to fetch ssl info by ssl id [${String(certId)}], wrong ssl type`;
    return undefined;
  };

  const schemaCheck = (schema: v.GenericSchema, value: unknown) => {
    const res = check(schema, value);
    return res.ok ? undefined : `invalid configuration: ${res.message}`;
  };

  const kinds: ResourceKind[] = [
    {
      dir: 'routes',
      kind: 'route',
      schemaName: 'route',
      schema: routeSchema,
      idField: 'id',
      unsupported: set(),
      timestamps: true,
      missingId: 'missing route id',
      async validate(value) {
        const res = checkRoute(value);
        if (!res.ok) return res.message;
        const cannot = upstreamCapabilityProblem(res.value.upstream, caps);
        if (cannot) return `invalid configuration: property "upstream" validation failed: ${cannot}`;
        const tlsBad = await upstreamTlsProblem(res.value.upstream);
        if (tlsBad) return tlsBad;
        const bad = checkPlugins(value);
        if (bad) return bad;
        const r = res.value;
        if (r.upstream_id !== undefined && !(await exists('upstreams', r.upstream_id)))
          return missingRef('upstream', r.upstream_id);
        if (r.service_id !== undefined && !(await exists('services', r.service_id)))
          return missingRef('service', r.service_id);
        if (r.plugin_config_id !== undefined && !(await exists('plugin_configs', r.plugin_config_id))) {
          return missingRef('plugin config', r.plugin_config_id);
        }
        return undefined;
      },
    },
    {
      dir: 'upstreams',
      kind: 'upstream',
      schemaName: 'upstream',
      schema: upstreamSchema,
      idField: 'id',
      unsupported: set(),
      timestamps: true,
      missingId: 'missing upstream id',
      async validate(value) {
        const res = checkUpstream(value);
        if (!res.ok) return `invalid configuration: ${res.message}`;
        const cannot = upstreamCapabilityProblem(res.value, caps);
        return cannot ? `invalid configuration: ${cannot}` : upstreamTlsProblem(res.value);
      },
      async inUse(id) {
        const state = await store.load();
        const routes = users(state, 'routes', 'upstream_id', id);
        if (routes.length) return `can not delete this upstream, route [${routes[0]}] is still using it now`;
        const services = users(state, 'services', 'upstream_id', id);
        if (services.length) return `can not delete this upstream, service [${services[0]}] is still using it now`;
        return undefined;
      },
    },
    {
      dir: 'services',
      kind: 'service',
      schemaName: 'service',
      schema: serviceSchema,
      idField: 'id',
      unsupported: set(),
      timestamps: true,
      missingId: 'missing service id',
      async validate(value) {
        const res = checkService(value);
        if (!res.ok) return res.message;
        const cannot = upstreamCapabilityProblem(res.value.upstream, caps);
        if (cannot) return `invalid configuration: property "upstream" validation failed: ${cannot}`;
        const tlsBad = await upstreamTlsProblem(res.value.upstream);
        if (tlsBad) return tlsBad;
        const upId = res.value.upstream_id;
        if (upId !== undefined && !(await exists('upstreams', upId))) return missingRef('upstream', upId);
        return checkPlugins(value);
      },
      async inUse(id) {
        const routes = users(await store.load(), 'routes', 'service_id', id);
        return routes.length
          ? `can not delete this service directly, route [${routes[0]}] is still using it now`
          : undefined;
      },
    },
    {
      dir: 'plugin_configs',
      kind: 'plugin config',
      schemaName: 'plugin_config',
      schema: pluginConfigSchema,
      idField: 'id',
      unsupported: set('POST'),
      timestamps: true,
      missingId: 'missing plugin config id',
      async validate(value) {
        return schemaCheck(pluginConfigSchema, value) ?? checkPlugins(value);
      },
      async inUse(id) {
        const routes = users(await store.load(), 'routes', 'plugin_config_id', id);
        return routes.length
          ? `can not delete this plugin config, route [${routes[0]}] is still using it now`
          : undefined;
      },
    },
    {
      dir: 'global_rules',
      kind: 'global rule',
      schemaName: 'global_rule',
      schema: globalRuleSchema,
      idField: 'id',
      unsupported: set('POST'),
      timestamps: true,
      missingId: 'missing global rule id',
      async validate(value, at) {
        const bad = schemaCheck(globalRuleSchema, value) ?? checkPlugins(value);
        if (bad) return bad;
        // APISIX 3.15+ (#12800): a plugin in two global rules would be dropped from both at run time.
        const mine = value.plugins as Record<string, unknown>;
        for (const [id, item] of itemsOf(await store.load(), prefix, 'global_rules')) {
          if (id === at.id || !isPlainObject(item.value.plugins)) continue;
          for (const name of Object.keys(mine)) {
            if (Object.hasOwn(item.value.plugins, name))
              return `plugin '${name}' already exists in global rule with id '${String(item.value.id ?? id)}'`;
          }
        }
        return undefined;
      },
    },
    {
      dir: 'consumers',
      kind: 'consumer',
      schemaName: 'consumer',
      schema: consumerSchema,
      idField: 'username',
      unsupported: set('POST', 'PATCH'),
      timestamps: true,
      missingId: 'missing consumer id',
      async validate(value, at) {
        const bad = schemaCheck(consumerSchema, value);
        if (bad) return bad;
        if (at.id !== value.username) return 'wrong username';
        const plugin = checkPlugins(value, 'consumer');
        if (plugin) return `invalid plugins configuration: ${plugin}`;
        const dup = await duplicateKey(value.plugins, at.id);
        if (dup) return dup;
        if (value.group_id !== undefined && !(await exists('consumer_groups', value.group_id))) {
          return missingRef('consumer group', value.group_id);
        }
        return undefined;
      },
    },
    {
      dir: 'credentials',
      kind: 'credential',
      schemaName: 'credential',
      schema: credentialSchema,
      idField: 'id',
      unsupported: set('POST', 'PATCH'),
      timestamps: true,
      missingId: 'missing credential id',
      async validate(value, at) {
        const bad = schemaCheck(credentialSchema, value);
        if (bad) return bad;
        const plugin = checkPlugins(value, 'consumer');
        if (plugin) return `invalid plugins configuration: ${plugin}`;
        for (const name of Object.keys((value.plugins as Record<string, unknown> | undefined) ?? {})) {
          if (plugins.get(name)?.type !== 'auth') return 'only supports auth type plugins in consumer credential';
        }
        return duplicateKey(value.plugins, at.parent!, at.id);
      },
    },
    {
      dir: 'consumer_groups',
      kind: 'consumer group',
      schemaName: 'consumer_group',
      schema: consumerGroupSchema,
      idField: 'id',
      unsupported: set('POST'),
      timestamps: true,
      missingId: 'missing consumer group id',
      async validate(value) {
        return schemaCheck(consumerGroupSchema, value) ?? checkPlugins(value);
      },
      async inUse(id) {
        const consumers = users(await store.load(), 'consumers', 'group_id', id);
        return consumers.length
          ? `can not delete this consumer group, consumer [${consumers[0]}] is still using it now`
          : undefined;
      },
    },
    {
      dir: 'plugin_metadata',
      kind: 'plugin_metadata',
      // APISIX's core.schema.plugin_metadata: any object; the plugin's metadata schema does the real check.
      schema: pluginsSchema,
      idField: 'name',
      unsupported: set('POST', 'PATCH'),
      timestamps: false,
      missingId: 'missing plugin name',
      async validate(value, at) {
        if (!plugins.has(at.id)) return 'invalid plugin name';
        const { id: _, ...conf } = value;
        const res = checkPluginConf(plugins, at.id, conf, caps, 'metadata');
        return res.ok ? undefined : `invalid configuration: ${res.message}`;
      },
      // The value's `id` is the plugin name (injected from the URL); its metadata secret fields are its own.
      seal: (value) => secrets.sealMetadata(String(value.id), value),
      open: (value) => secrets.openMetadata(String(value.id), value),
    },
    {
      // apisix/admin/ssl.lua + apisix/ssl.lua `check_ssl_conf`; keys encrypted with the keyring (resource.lua).
      dir: 'ssls',
      kind: 'ssl',
      schemaName: 'ssl',
      schema: sslSchema,
      idField: 'id',
      unsupported: set(),
      timestamps: true,
      missingId: 'missing ssl id',
      async validate(value) {
        return checkSslConf(await sslKeys.open(value), opts.tlsValidator);
      },
      seal: (value) => sslKeys.seal(value),
      open: (value) => sslKeys.open(value),
      present(value) {
        const { key: _k, keys: _ks, ...shown } = value;
        return shown;
      },
    },
  ];
  return new Map(kinds.map((k) => [k.dir, k]));
}

function isSecretRef(s: string): boolean {
  return s.startsWith('$secret://') || s.startsWith('$env://');
}

/**
 * The snapshot compiler: a store state → one immutable, compiled view of the config (router, global rules,
 * consumers, plugin metadata). References (a route's service, plugin config and upstream; a consumer's group) are
 * resolved here, once, not per request; a rebuild recompiles only what changed or depends on what changed.
 */
import * as v from 'valibot';
import type { StoreState, StoredItem } from '../store/types.ts';
import type { ConsumerIndex, Handler, Logger, RequestContext } from './context.ts';
import { errorResponse } from './errors.ts';
import { compileExpr } from './expr.ts';
import type { Capabilities } from './plugins/check.ts';
import type { PluginRegistry } from './plugins/index.ts';
import { type CompiledPlugin, EMPTY_LIST, type PluginList, pluginList, type RoutePipeline, routePipeline } from './plugins/pipeline.ts';
import { compileRouter } from './router/index.ts';
import { compileIpMatcher } from './router/ip.ts';
import type { RouteSpec, Router } from './router/types.ts';
import { isPlainObject } from './schema/common.ts';
import { checkRoute } from './schema/route.ts';
import { checkUpstream, type UpstreamConf } from './schema/upstream.ts';
import { buildConsumerIndex, type ConsumerResources } from './snapshot/consumers.ts';
import { PluginCache } from './snapshot/plugins.ts';
import { upstreamHandler } from './upstream/upstream.ts';

export { type Capabilities, checkPluginConf, FULL_CAPABILITIES, metaSchema } from './plugins/check.ts';
export { hostOf } from './router/host.ts';

/** A route ready to serve: everything decided at config time. */
export interface CompiledRoute {
  id: string;
  /** The route's `service_id` ('' without one). */
  serviceId: string;
  pipeline: RoutePipeline;
}

/** One immutable, compiled view of the config. Swapped in one assignment; requests keep the one they started with. */
export interface Snapshot {
  revision: number;
  router: Router<CompiledRoute>;
  /** The plugins of every global rule, merged into one list (APISIX: one pseudo rule). */
  globals: PluginList;
  consumers: ConsumerIndex;
  /** `plugin_metadata/<name>`, validated (defaults applied), by plugin name. */
  metadata: ReadonlyMap<string, Record<string, unknown>>;
  /** Items that could not be served, with the reason (logged once per snapshot). */
  problems: string[];
}

export interface CompileEnv {
  plugins: PluginRegistry;
  capabilities: Capabilities;
  logger: Logger;
  prefix: string;
}

/** Items directly under `<prefix>/<dir>/`, as id -> item (nested keys such as credentials are skipped). */
export function itemsOf(state: StoreState, prefix: string, dir: string): Map<string, StoredItem> {
  const base = `${prefix}/${dir}/`;
  const out = new Map<string, StoredItem>();
  for (const item of state.items) {
    if (!item.key.startsWith(base)) continue;
    const id = item.key.slice(base.length);
    if (id === '' || id.includes('/')) continue;
    out.set(id, item);
  }
  return out;
}

/** The resources of a state, by kind, in one pass. */
interface Resources extends ConsumerResources {
  routes: Map<string, StoredItem>;
  upstreams: Map<string, StoredItem>;
  services: Map<string, StoredItem>;
  pluginConfigs: Map<string, StoredItem>;
  globalRules: Map<string, StoredItem>;
  metadata: Map<string, StoredItem>;
}

const CREDENTIALS = '/credentials/';

function collect(state: StoreState, prefix: string): Resources {
  const r: Resources = {
    routes: new Map(),
    upstreams: new Map(),
    services: new Map(),
    pluginConfigs: new Map(),
    globalRules: new Map(),
    metadata: new Map(),
    consumers: new Map(),
    credentials: new Map(),
    groups: new Map(),
  };
  const dirs: Record<string, Map<string, StoredItem>> = {
    routes: r.routes,
    upstreams: r.upstreams,
    services: r.services,
    plugin_configs: r.pluginConfigs,
    global_rules: r.globalRules,
    plugin_metadata: r.metadata,
    consumers: r.consumers,
    consumer_groups: r.groups,
  };
  const base = `${prefix}/`;
  for (const item of state.items) {
    if (!item.key.startsWith(base)) continue;
    const rest = item.key.slice(base.length);
    const slash = rest.indexOf('/');
    if (slash <= 0) continue;
    const map = Object.hasOwn(dirs, rest.slice(0, slash)) ? dirs[rest.slice(0, slash)] : undefined;
    if (!map) continue;
    const id = rest.slice(slash + 1);
    if (id === '') continue;
    if (!id.includes('/')) {
      map.set(id, item);
      continue;
    }
    // `consumers/<username>/credentials/<id>`
    const c = id.indexOf(CREDENTIALS);
    if (map !== r.consumers || c <= 0) continue;
    const username = id.slice(0, c);
    const credId = id.slice(c + CREDENTIALS.length);
    if (credId === '' || credId.includes('/')) continue;
    const list = r.credentials.get(username);
    if (list) list.push({ id: credId, item });
    else r.credentials.set(username, [{ id: credId, item }]);
  }
  return r;
}

/** A fixed answer with an `error_msg` body. */
const fixed = (status: number, msg: string): Handler => async () => errorResponse(status, msg);

/**
 * The JSON text of a stored document, the compiler's fingerprint of it. Stores that share deep-frozen values
 * (memory, file) hand out the same object while a document is unchanged, so its text is remembered per object;
 * a value that is not frozen could change in place and is serialized every time.
 */
const textCache = new WeakMap<object, string>();
function textOf(value: Record<string, unknown>): string {
  if (!Object.isFrozen(value)) return JSON.stringify(value);
  let text = textCache.get(value);
  if (text === undefined) {
    text = JSON.stringify(value);
    textCache.set(value, text);
  }
  return text;
}

interface UpstreamEntry {
  text: string;
  conf: UpstreamConf | null;
  problem: string | undefined;
}

/** A service or plugin config as routes use it: its plugins compiled once for all of them. */
interface SharedEntry {
  text: string;
  /** The service's upstream (inline, or by id: the object it resolved to, null when missing), for routes without their own. */
  upstream?: UpstreamConf | null;
  upstreamId?: string;
  hosts?: string[];
  plugins: CompiledPlugin[];
  blocked?: string;
  error?: string;
}

/** What one route compiled to, kept for the next rebuild while it and everything it depends on stay the same. */
interface RouteEntry {
  /** The route document as JSON: equal text, equal route (cheaper than validating it again: ~1 µs vs ~15 µs). */
  text: string;
  /** What it resolved its references to (compared by identity on the next build). */
  service?: SharedEntry | null;
  pluginConfig?: SharedEntry | null;
  upstreamId?: string;
  upstream?: UpstreamConf | null;
  spec: RouteSpec<CompiledRoute> | null;
  problems: string[];
}

/** Compile a store state into a snapshot. Never throws on bad items: they are reported in `problems` and skipped. */
export function compileSnapshot(state: StoreState, env: CompileEnv): Snapshot {
  return createSnapshotCompiler(env)(state);
}

/**
 * A compiler that remembers what each item compiled to, so a rebuild after one change re-validates and re-creates
 * only what changed (10,000 routes: ~150 ms from scratch, ~20 ms incremental, the rest being the JSON fingerprints
 * and the router; `npm run bench -- --sections routes`). Unchanged routes keep their pipeline, hence their plugin
 * instances. A route is compiled again when its service, plugin config or upstream changes; a service change
 * recompiles the service's routes and nothing else.
 */
export function createSnapshotCompiler(env: CompileEnv): (state: StoreState) => Snapshot {
  let routeCache = new Map<string, RouteEntry>();
  let upstreamCache = new Map<string, UpstreamEntry>();
  let serviceCache = new Map<string, SharedEntry>();
  let pluginConfigCache = new Map<string, SharedEntry>();
  const plugins = new PluginCache(env);
  const { prefix } = env;

  return (state) => {
    const problems: string[] = [];
    const res = collect(state, prefix);

    const upstreams = new Map<string, UpstreamConf>();
    const nextUpstreams = new Map<string, UpstreamEntry>();
    for (const [id, item] of res.upstreams) {
      const text = textOf(item.value);
      let entry = upstreamCache.get(id);
      if (entry?.text !== text) {
        const checked = checkUpstream({ ...item.value, id });
        entry = checked.ok
          ? { text, conf: checked.value, problem: undefined }
          : { text, conf: null, problem: `upstream ${id}: ${checked.message}` };
      }
      nextUpstreams.set(id, entry);
      if (entry.conf) upstreams.set(id, entry.conf);
      else problems.push(entry.problem!);
    }
    upstreamCache = nextUpstreams;

    const services = new Map<string, SharedEntry>();
    for (const [id, item] of res.services) {
      const text = textOf(item.value);
      const upstreamId = item.value.upstream_id === undefined ? undefined : String(item.value.upstream_id);
      let entry = serviceCache.get(id);
      if (entry === undefined || entry.text !== text || (upstreamId !== undefined && (upstreams.get(upstreamId) ?? null) !== entry.upstream)) {
        entry = compileService(id, item.value, text, upstreams, plugins, env, problems);
      } else if (entry.error) problems.push(entry.error);
      services.set(id, entry);
    }
    serviceCache = services;

    const pluginConfigs = new Map<string, SharedEntry>();
    for (const [id, item] of res.pluginConfigs) {
      const text = textOf(item.value);
      let entry = pluginConfigCache.get(id);
      if (entry === undefined || entry.text !== text) {
        const set = plugins.compile(`${prefix}/plugin_configs/${id}`, `plugin config ${id}`, item.value.plugins, problems);
        entry = { text, plugins: set.plugins, blocked: set.blocked, error: set.error };
        if (set.error) problems.push(set.error);
      } else if (entry.error) problems.push(entry.error);
      pluginConfigs.set(id, entry);
    }
    pluginConfigCache = pluginConfigs;

    const specs: RouteSpec<CompiledRoute>[] = [];
    const nextRoutes = new Map<string, RouteEntry>();
    for (const [id, item] of res.routes) {
      const text = textOf(item.value);
      let entry = routeCache.get(id);
      if (entry === undefined || entry.text !== text || !sameDeps(entry, item.value, services, pluginConfigs, upstreams)) {
        entry = compileRouteEntry(id, item.value, text, { services, pluginConfigs, upstreams }, plugins, env);
      }
      nextRoutes.set(id, entry);
      if (entry.spec) specs.push(entry.spec);
      for (const p of entry.problems) problems.push(p);
    }
    routeCache = nextRoutes;

    const globals = compileGlobalRules(res.globalRules, plugins, prefix, problems);
    const consumers = buildConsumerIndex(res, env.plugins, plugins, prefix, problems);
    const metadata = compileMetadata(res.metadata, env.plugins, problems);
    plugins.endBuild();
    return { revision: state.revision, router: compileRouter(specs), globals, consumers, metadata, problems };
  };
}

function compileService(
  id: string,
  value: Record<string, unknown>,
  text: string,
  upstreams: Map<string, UpstreamConf>,
  plugins: PluginCache,
  env: CompileEnv,
  problems: string[],
): SharedEntry {
  const label = `service ${id}`;
  const set = plugins.compile(`${env.prefix}/services/${id}`, label, value.plugins, problems);
  const entry: SharedEntry = { text, plugins: set.plugins, blocked: set.blocked, error: set.error };
  if (value.upstream !== undefined) {
    const up = checkUpstream(value.upstream);
    if (up.ok) entry.upstream = up.value;
    else entry.error ??= `${label}: invalid upstream: ${up.message}`;
  } else if (value.upstream_id !== undefined) {
    entry.upstreamId = String(value.upstream_id);
    entry.upstream = upstreams.get(entry.upstreamId) ?? null;
  }
  if (Array.isArray(value.hosts)) entry.hosts = value.hosts.map(String);
  if (entry.error) problems.push(entry.error);
  return entry;
}

function sameDeps(
  entry: RouteEntry,
  value: Record<string, unknown>,
  services: Map<string, SharedEntry>,
  pluginConfigs: Map<string, SharedEntry>,
  upstreams: Map<string, UpstreamConf>,
): boolean {
  if (value.service_id !== undefined && (services.get(String(value.service_id)) ?? null) !== entry.service) return false;
  if (value.plugin_config_id !== undefined && (pluginConfigs.get(String(value.plugin_config_id)) ?? null) !== entry.pluginConfig) return false;
  return entry.upstreamId === undefined || (upstreams.get(entry.upstreamId) ?? null) === entry.upstream;
}

interface Deps {
  services: Map<string, SharedEntry>;
  pluginConfigs: Map<string, SharedEntry>;
  upstreams: Map<string, UpstreamConf>;
}

/** A pipeline that runs no route plugin and answers `handler` (the global rules still run). */
const fixedPipeline = (handler: Handler): RoutePipeline => routePipeline(EMPTY_LIST, handler);

function compileRouteEntry(
  id: string,
  value: Record<string, unknown>,
  text: string,
  deps: Deps,
  plugins: PluginCache,
  env: CompileEnv,
): RouteEntry {
  const problems: string[] = [];
  const res = checkRoute({ ...value, id });
  if (!res.ok) return { text, spec: null, problems: [`route ${id}: ${res.message}`] };
  const route = res.value;
  const entry: RouteEntry = { text, spec: null, problems };
  const serviceId = route.service_id === undefined ? '' : String(route.service_id);
  const service = serviceId === '' ? undefined : (deps.services.get(serviceId) ?? null);
  const pcId = route.plugin_config_id === undefined ? undefined : String(route.plugin_config_id);
  const pluginConfig = pcId === undefined ? undefined : (deps.pluginConfigs.get(pcId) ?? null);
  entry.service = service;
  entry.pluginConfig = pluginConfig;
  if (route.status === 0) return entry;

  let upstream: UpstreamConf | null | undefined;
  let upstreamLabel = '';
  // The upstream: the route's (`upstream_id` wins over an inline one, as in APISIX), else the service's.
  if (route.upstream_id !== undefined) {
    entry.upstreamId = String(route.upstream_id);
    upstream = entry.upstream = deps.upstreams.get(entry.upstreamId) ?? null;
    upstreamLabel = `upstream ${entry.upstreamId} of route ${id}`;
  } else if (route.upstream !== undefined) {
    const up = checkUpstream(route.upstream);
    if (!up.ok) return { ...entry, problems: [`route ${id}: ${up.message}`] };
    upstream = up.value;
  } else if (service) {
    upstream = service.upstream;
    if (service.upstreamId !== undefined) {
      entry.upstreamId = service.upstreamId;
      entry.upstream = upstream;
      upstreamLabel = `upstream ${service.upstreamId} of service ${serviceId}`;
    }
  }

  try {
    const remoteAddrs = route.remote_addrs ?? (route.remote_addr ? [route.remote_addr] : undefined);
    // Checked here so that one bad address rejects its route, not the whole table.
    if (remoteAddrs) compileIpMatcher(remoteAddrs);
    let pipeline: RoutePipeline;
    if (service === null) {
      problems.push(`route ${id}: service ${serviceId} does not exist; the route answers 404`);
      pipeline = fixedPipeline(fixed(404, `service ${serviceId} of route ${id} does not exist`));
    } else if (pluginConfig === null) {
      problems.push(`route ${id}: plugin config ${pcId} does not exist; the route answers 503`);
      pipeline = fixedPipeline(fixed(503, `plugin config ${pcId} of route ${id} does not exist`));
    } else {
      const own = plugins.compile(`${env.prefix}/routes/${id}`, `route ${id}`, route.plugins, problems);
      const error = own.error ?? pluginConfig?.error ?? service?.error;
      if (error) return { ...entry, problems: [...problems, error] };
      const blocked = own.blocked ?? pluginConfig?.blocked ?? service?.blocked;
      if (blocked) pipeline = fixedPipeline(fixed(503, blocked));
      else {
        // Per plugin name: Route > Plugin Config > Service (the whole conf of the winner).
        const merged = new Map<string, CompiledPlugin>();
        for (const p of service?.plugins ?? []) merged.set(p.name, p);
        for (const p of pluginConfig?.plugins ?? []) merged.set(p.name, p);
        for (const p of own.plugins) merged.set(p.name, p);
        let call: Handler;
        if (upstream === null) call = fixed(502, `${upstreamLabel} does not exist`);
        else if (upstream === undefined) call = fixed(503, 'missing upstream configuration in Route or Service');
        else call = upstreamHandler(upstream, route.timeout);
        pipeline = routePipeline(pluginList([...merged.values()]), call);
      }
    }
    let filter: RouteSpec<CompiledRoute>['filter'];
    if (route.vars !== undefined) {
      const compiled = compileExpr(route.vars);
      if (!compiled.ok) return { ...entry, problems: [`route ${id}: failed to validate the 'vars' expression: ${compiled.message}`] };
      const expr = compiled.expr;
      filter = (input, params) => {
        const ctx = input.ctx as RequestContext;
        ctx.params = params as Record<string, string>;
        return expr((name) => ctx.getVar(name));
      };
    }
    const hosts = route.hosts ?? (route.host ? [route.host] : service?.hosts);
    entry.spec = {
      id,
      paths: route.uris ?? [route.uri!],
      methods: route.methods,
      hosts,
      remoteAddrs,
      priority: route.priority ?? 0,
      filter,
      data: { id, serviceId, pipeline },
    };
    return entry;
  } catch (err) {
    problems.push(`route ${id}: ${err instanceof Error ? err.message : String(err)}`);
    return entry;
  }
}

/**
 * APISIX's global rules (`<prefix>/global_rules/<id>`) run their plugins on every request, matched or not, merged
 * into one list. A plugin named by two rules is run by neither (APISIX drops it, and its Admin API refuses the
 * second); a plugin fngate does not have fails closed: every request answers 503 until the rule is removed.
 */
function compileGlobalRules(rules: Map<string, StoredItem>, plugins: PluginCache, prefix: string, problems: string[]): PluginList {
  if (rules.size === 0) return EMPTY_LIST;
  const byName = new Map<string, { rule: string; plugin: CompiledPlugin }>();
  const dropped = new Set<string>();
  const blocking: string[] = [];
  for (const [id, item] of rules) {
    const set = plugins.compile(`${prefix}/global_rules/${id}`, `global rule ${id}`, item.value.plugins, problems);
    if (set.error) {
      problems.push(`${set.error}; every request answers 503 rather than run without the rule`);
      blocking.push(`global rule ${id}`);
      continue;
    }
    if (set.blocked) {
      blocking.push(set.blocked);
      continue;
    }
    for (const p of set.plugins) {
      const seen = byName.get(p.name);
      if (seen) {
        problems.push(`global rules ${seen.rule} and ${id} both have plugin ${p.name}; it is not run (as APISIX)`);
        dropped.add(p.name);
      } else byName.set(p.name, { rule: id, plugin: p });
    }
  }
  if (blocking.length) {
    const msg = `this gateway cannot apply the configured global rules (${blocking.join('; ')}), so it serves nothing rather than serve routes without them`;
    return pluginList([
      { name: '(global rules)', priority: Number.MAX_SAFE_INTEGER, instance: { rewrite: () => errorResponse(503, msg) }, auth: false, preferRoute: false },
    ]);
  }
  return pluginList([...byName.values()].filter(({ plugin }) => !dropped.has(plugin.name)).map(({ plugin }) => plugin));
}

/** `plugin_metadata/<name>` items, validated with their plugin's metadata schema (defaults applied). */
function compileMetadata(items: Map<string, StoredItem>, registry: PluginRegistry, problems: string[]): Map<string, Record<string, unknown>> {
  const out = new Map<string, Record<string, unknown>>();
  for (const [name, item] of items) {
    const plugin = registry.get(name);
    if (!plugin?.metadataSchema) continue;
    const { id: _, create_time: _c, update_time: _u, ...rest } = item.value;
    const parsed = v.safeParse(plugin.metadataSchema, rest);
    if (!parsed.success) {
      problems.push(`plugin metadata ${name}: ${parsed.issues[0].message}; the plugin runs without it`);
      continue;
    }
    if (isPlainObject(parsed.output)) out.set(name, parsed.output);
  }
  return out;
}

/** Routes, services and plugin configs → what the router serves (see config.ts). */

import { websocketCall } from '../websocket.ts';
import type { CompiledRoute, CompileEnv } from '../config.ts';
import type { Handler, RequestContext } from '../context.ts';
import { errorResponse } from '../errors.ts';
import { compileExpr } from '../expr.ts';
import { type CompiledPlugin, EMPTY_LIST, pluginList, type RoutePipeline, routePipeline } from '../plugins/pipeline.ts';
import { compileIpMatcher } from '../router/ip.ts';
import type { RouteSpec } from '../router/types.ts';
import { checkRoute } from '../schema/route.ts';
import { upstreamCapabilityProblem } from '../plugins/check.ts';
import { checkUpstream, type UpstreamConf } from '../schema/upstream.ts';
import { upstreamHandler } from '../upstream/upstream.ts';
import type { PluginCache } from './plugins.ts';

/** A fixed answer with an `error_msg` body. */
const fixed =
  (status: number, msg: string): Handler =>
  async () =>
    errorResponse(status, msg);

/** A service or plugin config as routes use it: its plugins compiled once for all of them. */
export interface SharedEntry {
  text: string;
  /** The service's upstream (inline, or by id: the object it resolved to, null when missing), for routes without their own. */
  upstream?: UpstreamConf | null;
  upstreamId?: string;
  hosts?: string[];
  /** The service's `enable_websocket`, for routes that do not set theirs. */
  websocket?: boolean;
  /** The service's `name` (prometheus `prefer_name`). */
  name?: string;
  plugins: CompiledPlugin[];
  disabled?: string[];
  blocked?: string;
  error?: string;
}

/** What one route compiled to, kept for the next rebuild while it and everything it depends on stay the same. */
export interface RouteEntry {
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

export function compileService(
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
  const entry: SharedEntry = { text, plugins: set.plugins, disabled: set.disabled, blocked: set.blocked, error: set.error };
  if (value.upstream !== undefined) {
    const up = checkUpstream(value.upstream);
    if (up.ok) entry.upstream = up.value;
    else entry.error ??= `${label}: invalid upstream: ${up.message}`;
  } else if (value.upstream_id !== undefined) {
    entry.upstreamId = String(value.upstream_id);
    entry.upstream = upstreams.get(entry.upstreamId) ?? null;
  }
  if (Array.isArray(value.hosts)) entry.hosts = value.hosts.map(String);
  if (typeof value.enable_websocket === 'boolean') entry.websocket = value.enable_websocket;
  if (typeof value.name === 'string') entry.name = value.name;
  if (entry.error) problems.push(entry.error);
  return entry;
}

export function sameDeps(
  entry: RouteEntry,
  value: Record<string, unknown>,
  services: Map<string, SharedEntry>,
  pluginConfigs: Map<string, SharedEntry>,
  upstreams: Map<string, UpstreamConf>,
): boolean {
  if (value.service_id !== undefined && (services.get(String(value.service_id)) ?? null) !== entry.service)
    return false;
  if (
    value.plugin_config_id !== undefined &&
    (pluginConfigs.get(String(value.plugin_config_id)) ?? null) !== entry.pluginConfig
  )
    return false;
  return entry.upstreamId === undefined || (upstreams.get(entry.upstreamId) ?? null) === entry.upstream;
}

export interface Deps {
  services: Map<string, SharedEntry>;
  pluginConfigs: Map<string, SharedEntry>;
  upstreams: Map<string, UpstreamConf>;
}

/** A pipeline that runs no route plugin and answers `handler` (the global rules still run). */
const fixedPipeline = (handler: Handler): RoutePipeline => routePipeline(EMPTY_LIST, handler);

export function compileRouteEntry(
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
        for (const set of [service, pluginConfig, own]) {
          if (!set) continue;
          for (const name of set.disabled ?? []) merged.delete(name);
          for (const p of set.plugins) merged.set(p.name, p);
        }
        let call: Handler;
        if (upstream === null) call = fixed(502, `${upstreamLabel} does not exist`);
        else if (upstream === undefined) call = fixed(503, 'missing upstream configuration in Route or Service');
        else {
          // Written where the Admin API could not refuse it (etcd, a config file): served, the field left out.
          const cannot = upstreamCapabilityProblem(upstream, env.capabilities);
          if (cannot) problems.push(`route ${id}: ${cannot}; the route is served without it`);
          const served = cannot && env.capabilities.upstreamClientCert === false ? { ...upstream, tls: undefined } : upstream;
          call = upstreamHandler(served, route.timeout, env.clientSsl);
        }
        // APISIX: the route's `enable_websocket` unless unset, then the service's. An upgrade to such a route makes
        // its call through the runtime's WebSocket connector (src/core/websocket.ts), after the access phase.
        const websocket = route.enable_websocket ?? service?.websocket;
        pipeline = routePipeline(pluginList([...merged.values()]), call, websocket ? websocketCall : undefined);
      }
    }
    let filter: RouteSpec<CompiledRoute>['filter'];
    if (route.vars !== undefined) {
      const compiled = compileExpr(route.vars);
      if (!compiled.ok)
        return { ...entry, problems: [`route ${id}: failed to validate the 'vars' expression: ${compiled.message}`] };
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
      data: {
        id,
        serviceId,
        pipeline,
        info: {
          id,
          name: route.name ?? '',
          uri: (route.uris ?? [route.uri!])[0] ?? '',
          host: hosts?.length === 1 ? hosts[0]! : '',
          serviceId,
          serviceName: service?.name ?? '',
        },
      },
    };
    return entry;
  } catch (err) {
    problems.push(`route ${id}: ${err instanceof Error ? err.message : String(err)}`);
    return entry;
  }
}

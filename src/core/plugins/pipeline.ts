/**
 * The phase runner: runs a request through global rules and its route's plugins in APISIX's order
 * (apisix-wave2.md §1.1), compiled once per configuration into per-phase lists so that a request only visits the
 * plugins that act in each phase. A route whose plugins act in no phase but the call itself (openfunction alone)
 * is served by that call directly.
 *
 *   global rewrite → route rewrite (auth attaches a consumer) → consumer merge (+ rewrite of plugins the consumer
 *   brought) → global access → route access → global before_proxy → route before_proxy → the call (a plugin's
 *   `proxy`, else the route's upstream) → header_filter → body_filter → log (global rules first, every answer).
 *
 * A rewrite/access/before_proxy handler that returns a Response ends the request there: later request phases
 * are skipped, the response phases of every plugin (global and route) still run.
 */
import type { ConsumerInfo, Handler, Logger, RequestContext } from '../context.ts';
import { exitBody, NULL_BODY_STATUS, pluginExit } from '../errors.ts';
import { BODY_LENGTH } from '../upstream/headers.ts';
import type { Expr } from '../expr.ts';
import { plainHeadersOf, RecordHeaders } from '../upstream/headers.ts';
import type { PhaseHandler, PhaseResult, PluginInstance, ResponseHead } from './types.ts';

/** One configured plugin as the runner sees it: its instance and what `_meta` says. */
export interface CompiledPlugin {
  name: string;
  /** `_meta.priority`, else the plugin's priority. */
  priority: number;
  instance: PluginInstance;
  /** `_meta.filter`: the plugin's handlers run only when it holds (evaluated once per request). */
  filter?: Expr;
  /** `_meta.error_response`: replaces the body of an exit of 400 or more from this plugin's request phases. */
  errorResponse?: unknown;
  /** An auth plugin (it acts in rewrite, and is not run again when a consumer brings it). */
  auth: boolean;
  /** `run_policy: prefer_route`: as a global rule, skipped on routes that have the plugin themselves. */
  preferRoute: boolean;
}

type RequestPhase = 'rewrite' | 'access' | 'beforeProxy';

/** A sorted plugin list, split by phase once. */
export interface PluginList {
  readonly all: readonly CompiledPlugin[];
  readonly names: ReadonlySet<string>;
  readonly rewrite: readonly CompiledPlugin[];
  readonly access: readonly CompiledPlugin[];
  readonly beforeProxy: readonly CompiledPlugin[];
  readonly headerFilter: readonly CompiledPlugin[];
  readonly bodyFilter: readonly CompiledPlugin[];
  readonly log: readonly CompiledPlugin[];
  /** The plugin that makes the call (the first by priority with `proxy`). */
  readonly proxy: CompiledPlugin | undefined;
  /** No plugin acts in any phase but the call. */
  readonly callOnly: boolean;
  /** No plugin makes the call or acts in any phase but log (the access log; prometheus as a global rule). */
  readonly logOnly: boolean;
  /**
   * Every log handler runs on every request, whatever the route: none has a `_meta.filter` or yields to a route's
   * own instance (`prefer_route`). The response phases then hand {@link log} on as it is, with no list made per
   * request (the access log and prometheus as global rules).
   */
  readonly logAlways: boolean;
}

/**
 * Sorts `plugins` by priority, highest first (a `_meta.priority` counts as the priority; ties keep the plugins'
 * own priority order, then the given order) and splits them by phase.
 */
export function pluginList(plugins: readonly CompiledPlugin[]): PluginList {
  const all = [...plugins].sort((a, b) => b.priority - a.priority);
  const having = (phase: keyof PluginInstance) => all.filter((p) => p.instance[phase] !== undefined);
  const list = {
    all,
    names: new Set(all.map((p) => p.name)),
    rewrite: having('rewrite'),
    access: having('access'),
    beforeProxy: having('beforeProxy'),
    headerFilter: having('headerFilter'),
    bodyFilter: having('bodyFilter'),
    log: having('log'),
    proxy: all.find((p) => p.instance.proxy !== undefined),
  };
  const requestAndBody =
    list.rewrite.length +
    list.access.length +
    list.beforeProxy.length +
    list.headerFilter.length +
    list.bodyFilter.length;
  return {
    ...list,
    callOnly: requestAndBody + list.log.length === 0,
    logOnly: requestAndBody === 0 && list.proxy === undefined,
    logAlways: list.log.every((p) => p.filter === undefined && !p.preferRoute),
  };
}

export const EMPTY_LIST: PluginList = pluginList([]);

/** The part of a compiled route the runner needs. */
export interface RoutePipeline {
  plugins: PluginList;
  /** The call when no plugin makes it: the route's upstream (or a fixed error when it has none). */
  upstream: Handler;
  /** The route's list with a consumer's plugins merged in (memoised per consumer). */
  withConsumer(consumer: ConsumerInfo): PluginList;
  /** Answers instead of the call when it returns a Response (a WebSocket upgrade to an `enable_websocket` route). */
  refuse?: (ctx: RequestContext) => Response | undefined;
}

/**
 * A route's pipeline. `consumerPlugins` gives the non-auth plugins a consumer brings (its group's, overridden by
 * its own), which replace the route's plugins of the same name (Consumer > Consumer Group > Route).
 */
export function routePipeline(
  plugins: PluginList,
  upstream: Handler,
  refuse?: (ctx: RequestContext) => Response | undefined,
): RoutePipeline {
  const merged = new WeakMap<readonly CompiledPlugin[], PluginList>();
  return {
    plugins,
    upstream,
    refuse,
    withConsumer(consumer) {
      const extra = consumer.plugins;
      if (!extra || extra.length === 0) return plugins;
      let list = merged.get(extra);
      if (!list) {
        const byName = new Map(plugins.all.map((p) => [p.name, p]));
        for (const p of extra) byName.set(p.name, p);
        list = pluginList([...byName.values()]);
        merged.set(extra, list);
      }
      return list;
    },
  };
}

export interface RunEnv {
  logger: Logger;
}

/** Does `p` run for this request (its `_meta.filter`, evaluated once per request)? */
function applies(ctx: RequestContext, p: CompiledPlugin): boolean {
  if (p.filter === undefined) return true;
  let ok = ctx.stateOf<boolean>(p);
  if (ok === undefined) {
    ok = p.filter((name) => ctx.getVar(name));
    ctx.setStateOf(p, ok);
  }
  return ok;
}

/** The exit `p` made, with its `_meta.error_response` applied. */
function exitOf(p: CompiledPlugin, res: Response): Response {
  if (p.errorResponse === undefined || res.status < 400) return res;
  const b = exitBody(res.status, p.errorResponse)!;
  res.headers.set('content-type', b.type);
  res.headers.delete('content-length');
  return new Response(b.text, { status: res.status, headers: res.headers });
}

/**
 * Runs `phase` of `plugins` in order until one returns a Response (returned, with its error_response applied).
 * Synchronous until a handler returns a promise. `skip` names plugins a prefer_route global instance yields to.
 */
function runPhase(
  ctx: RequestContext,
  plugins: readonly CompiledPlugin[],
  phase: RequestPhase,
  from = 0,
  skip?: ReadonlySet<string>,
): PhaseResult | Promise<PhaseResult> {
  for (let i = from; i < plugins.length; i++) {
    const p = plugins[i]!;
    if (skip !== undefined && p.preferRoute && skip.has(p.name)) continue;
    if (!applies(ctx, p)) continue;
    const r = (p.instance[phase] as PhaseHandler)(ctx);
    if (r instanceof Promise) {
      return r.then((res) => (res ? exitOf(p, res) : runPhase(ctx, plugins, phase, i + 1, skip)));
    }
    if (r) return exitOf(p, r);
  }
  return undefined;
}

const UNSET = Symbol('async');

/**
 * Serves one request. `route` is the matched route's pipeline (undefined: nothing matched, and `notFound` makes
 * the answer once the global rules' request phases ran). Never throws synchronously for a plugin error: the
 * caller's catch turns a rejection into a 500.
 */
export function runPipeline(
  ctx: RequestContext,
  globals: PluginList,
  route: RoutePipeline | undefined,
  notFound: () => Response,
  env: RunEnv,
): Response | Promise<Response> {
  // A route whose plugins only make the call (openfunction alone) and no global rule: nothing else to run.
  if (route?.plugins.callOnly && globals.callOnly && globals.proxy === undefined) {
    const refused = route.refuse?.(ctx);
    if (refused) return refused;
    const call = route.plugins.proxy;
    return call ? call.instance.proxy!(ctx) : route.upstream(ctx);
  }
  // The same with global rules that only log (the access log, prometheus): the call, then the log handlers, without
  // the request phases' async runner.
  if (route?.plugins.callOnly && globals.logOnly) {
    const list = route.plugins;
    const refused = route.refuse?.(ctx);
    if (refused) return respond(ctx, refused, globals, list, list.names, env);
    const call = list.proxy;
    const answer = call ? call.instance.proxy!(ctx) : route.upstream(ctx);
    const done = (res: Response) => {
      ctx.upstreamStatus = res.status;
      return respond(ctx, res, globals, list, list.names, env);
    };
    return answer instanceof Promise ? answer.then(done) : done(answer);
  }
  return runAll(ctx, globals, route, notFound, env);
}

/** Where a request is in {@link advance}: its stages in order (APISIX's phases, module comment). */
const GLOBAL_REWRITE = 0;
const ROUTE_REWRITE = 1;
const CONSUMER_REWRITE = 2;
const GLOBAL_ACCESS = 3;
const ROUTE_ACCESS = 4;
const GLOBAL_BEFORE_PROXY = 5;
const ROUTE_BEFORE_PROXY = 6;
const REFUSE = 7;
const CALL = 8;

interface Run {
  ctx: RequestContext;
  globals: PluginList;
  route: RoutePipeline | undefined;
  /** The route's plugins, with a consumer's merged in once one is attached. */
  list: PluginList;
  /** The route's own plugin names: prefer_route global instances yield to them. */
  skip: ReadonlySet<string>;
  notFound: () => Response;
  env: RunEnv;
}

function runAll(
  ctx: RequestContext,
  globals: PluginList,
  route: RoutePipeline | undefined,
  notFound: () => Response,
  env: RunEnv,
): Response | Promise<Response> {
  const list = route?.plugins ?? EMPTY_LIST;
  const run: Run = { ctx, globals, route, list, skip: list.names, notFound, env };
  try {
    return advance(run, GLOBAL_REWRITE);
  } catch (err) {
    // A handler that threw: the caller turns the rejection into a 500, as for one that rejected.
    return Promise.reject(err);
  }
}

/**
 * Runs the stages from `from` until one answers, then the response phases. Synchronous until a handler returns a
 * promise, then continued from that promise: an `async` runner would cost a promise and a microtask turn per
 * phase even when every handler answers synchronously (most do: auth lookups, local counters, header edits).
 */
function advance(run: Run, from: number, answered?: Response): Response | Promise<Response> {
  const { ctx, globals, route } = run;
  let res: PhaseResult = answered;
  for (let stage = from; !res; stage++) {
    let step: PhaseResult | Promise<PhaseResult>;
    switch (stage) {
      case GLOBAL_REWRITE:
        step = phase(run, 'rewrite', true);
        break;
      case ROUTE_REWRITE:
        step = phase(run, 'rewrite', false);
        break;
      case CONSUMER_REWRITE:
        if (route && ctx.consumer) {
          const merged = route.withConsumer(ctx.consumer);
          if (merged !== run.list) {
            // The rewrite of the plugins the consumer brought (not auth plugins, which ran already).
            const before = run.list;
            const added = merged.rewrite.filter((p) => !p.auth && !before.all.includes(p));
            run.list = merged;
            if (added.length) step = runPhase(ctx, added, 'rewrite');
          }
        }
        break;
      case GLOBAL_ACCESS:
        step = phase(run, 'access', true);
        break;
      case ROUTE_ACCESS:
        step = phase(run, 'access', false);
        break;
      case GLOBAL_BEFORE_PROXY:
        step = route === undefined ? run.notFound() : phase(run, 'beforeProxy', true);
        break;
      case ROUTE_BEFORE_PROXY:
        step = phase(run, 'beforeProxy', false);
        break;
      case REFUSE:
        step = route!.refuse?.(ctx);
        break;
      case CALL: {
        // The plugin that makes the call, else the route's upstream.
        const list = run.list;
        const answer = list.proxy ? list.proxy.instance.proxy!(ctx) : route!.upstream(ctx);
        if (answer instanceof Promise) return answer.then((r) => called(run, r));
        return called(run, answer);
      }
    }
    if (step instanceof Promise) {
      const next = stage + 1;
      return step.then((r) => advance(run, next, r));
    }
    res = step;
  }
  return respond(ctx, res, globals, run.list, run.skip, run.env);
}

/** `name` of the global rules (prefer_route instances yielding to the route's) or of the route's plugins. */
function phase(run: Run, name: RequestPhase, global: boolean): PhaseResult | Promise<PhaseResult> {
  const plugins = (global ? run.globals : run.list)[name];
  return plugins.length ? runPhase(run.ctx, plugins, name, 0, global ? run.skip : undefined) : undefined;
}

function called(run: Run, res: Response): Response {
  run.ctx.upstreamStatus = res.status;
  return respond(run.ctx, res, run.globals, run.list, run.skip, run.env);
}

/** No plugins: what the response phases get when none acts, not a new array per request. */
const NONE: readonly CompiledPlugin[] = [];

/** The response phases, global rules first: header_filter, then body_filter and log as the body streams. */
function respond(
  ctx: RequestContext,
  res: Response,
  globals: PluginList,
  list: PluginList,
  skip: ReadonlySet<string>,
  env: RunEnv,
): Response {
  ctx.status = res.status;
  const pick = (g: readonly CompiledPlugin[], r: readonly CompiledPlugin[]) => {
    const out: CompiledPlugin[] = [];
    for (const p of g) if (!(p.preferRoute && skip.has(p.name)) && applies(ctx, p)) out.push(p);
    for (const p of r) if (applies(ctx, p)) out.push(p);
    return out;
  };
  if (globals.headerFilter.length || list.headerFilter.length) {
    const filters = pick(globals.headerFilter, list.headerFilter);
    if (filters.length) res = headerFilters(ctx, res, filters, env);
  }
  ctx.response = res;
  const bodyFilters =
    globals.bodyFilter.length || list.bodyFilter.length ? pick(globals.bodyFilter, list.bodyFilter) : NONE;
  const logs =
    list.log.length === 0 && globals.logAlways
      ? globals.log
      : globals.log.length || list.log.length
        ? pick(globals.log, list.log)
        : NONE;
  if (bodyFilters.length === 0 && logs.length === 0) return res;
  return streamPhases(ctx, res, bodyFilters, logs, env);
}

function headerFilters(ctx: RequestContext, res: Response, filters: CompiledPlugin[], env: RunEnv): Response {
  let body: BodyInit | null | typeof UNSET = UNSET;
  // A forwarder's plain header record (Node) is edited in place: reading `res.headers` would make a `Headers` of it.
  const plain = plainHeadersOf(res);
  const head: ResponseHead = {
    status: res.status,
    headers: plain ? (new RecordHeaders(plain) as unknown as Headers) : res.headers,
    setBody(b) {
      body = b;
    },
  };
  for (const p of filters) {
    try {
      p.instance.headerFilter!(ctx, head);
    } catch (err) {
      env.logger.error('plugin failed in header_filter', { plugin: p.name, error: (err as Error).message });
    }
    ctx.status = head.status;
  }
  if (body === UNSET && head.status === res.status) return res;
  let next: BodyInit | null = body === UNSET ? res.body : body;
  if (body !== UNSET) void res.body?.cancel().catch(() => {});
  if (NULL_BODY_STATUS.has(head.status)) next = null;
  return new Response(next, { status: head.status, headers: res.headers });
}

const EMPTY_CHUNK = new Uint8Array(0);

/** `chunk` through every body filter in turn (`last`: the body ends with it). */
function filterChunk(
  ctx: RequestContext,
  bodyFilters: readonly CompiledPlugin[],
  chunk: Uint8Array,
  last: boolean,
): Uint8Array {
  let out = chunk;
  for (const p of bodyFilters) {
    const next = p.instance.bodyFilter!(ctx, out, last);
    if (next !== undefined) out = next;
  }
  return out;
}

/** Body filters on each chunk, then the log handlers once the body ended or the client went away. */
function streamPhases(
  ctx: RequestContext,
  res: Response,
  bodyFilters: readonly CompiledPlugin[],
  logs: readonly CompiledPlugin[],
  env: RunEnv,
): Response {
  let logged = false;
  const log = () => {
    if (logged) return;
    logged = true;
    for (const p of logs) {
      try {
        p.instance.log!(ctx);
      } catch (err) {
        env.logger.error('plugin failed in log', { plugin: p.name, error: (err as Error).message });
      }
    }
  };
  if (bodyFilters.length) res.headers.delete('content-length');
  if (bodyFilters.length === 0) {
    // Log handlers only, and the body's length is known: log once the head is handed over rather than wrap the body
    // in a JavaScript stream, which costs the runtimes their native piping of the upstream's body. The forwarder's
    // note of the length first: reading res.body or res.headers makes Node's Response build a full undici Response
    // (bench/observability.ts).
    const declared = (res as { [BODY_LENGTH]?: string })[BODY_LENGTH] ?? res.headers.get('content-length');
    if (declared !== null && /^\d{1,15}$/.test(declared)) {
      if (!NULL_BODY_STATUS.has(res.status) && ctx.method !== 'HEAD') ctx.bytesSent = Number(declared);
      queueMicrotask(log);
      return res;
    }
  }
  const source = res.body;
  if (source === null) {
    const tail = bodyFilters.length ? filterChunk(ctx, bodyFilters, EMPTY_CHUNK, true) : EMPTY_CHUNK;
    // The answer has no body: it is complete once the runtime has its head, right after this returns.
    if (!NULL_BODY_STATUS.has(res.status)) ctx.bytesSent = tail.byteLength;
    queueMicrotask(log);
    if (tail.byteLength === 0 || NULL_BODY_STATUS.has(res.status)) return res;
    return new Response(tail as Uint8Array<ArrayBuffer>, { status: res.status, headers: res.headers });
  }
  const reader = source.getReader();
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        // Read until something can be enqueued: a pull that enqueues nothing is not called again, so a body
        // filter that holds chunks back (response-rewrite's filters buffer the body) would stall the answer.
        for (;;) {
          const { done, value } = await reader.read();
          if (done) {
            if (bodyFilters.length) {
              const tail = filterChunk(ctx, bodyFilters, EMPTY_CHUNK, true);
              if (tail.byteLength) {
                ctx.bytesSent += tail.byteLength;
                controller.enqueue(tail);
              }
            }
            controller.close();
            log();
            return;
          }
          const chunk = bodyFilters.length ? filterChunk(ctx, bodyFilters, value, false) : value;
          if (chunk.byteLength) {
            ctx.bytesSent += chunk.byteLength;
            controller.enqueue(chunk);
            return;
          }
        }
      } catch (err) {
        controller.error(err);
        log();
      }
    },
    cancel(reason) {
      log();
      return reader.cancel(reason);
    },
  });
  return new Response(body, { status: res.status, headers: res.headers });
}

export { pluginExit };

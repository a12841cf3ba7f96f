import type { CompiledPlugin } from './plugins/pipeline.ts';
import type { Forwarder } from './upstream/types.ts';
import type { WebSocketConnector } from './websocket.ts';

/**
 * A consumer an auth plugin found for the request (APISIX `ctx.consumer`): the stored consumer, resolved at config
 * time, and the credential it authenticated with, if any.
 */
export interface ConsumerInfo {
  username: string;
  /** `group_id` of the consumer (its consumer group), when it has one. */
  groupId?: string;
  /** The consumer's `labels` (`custom_id` is sent upstream as `X-Consumer-Custom-ID`). */
  labels?: Readonly<Record<string, string>>;
  /** Id of the credential (`/consumers/<u>/credentials/<id>`) that authenticated the request; undefined for a consumer-level conf. */
  credentialId?: string;
  /** The non-auth plugins the consumer brings (its group's, overridden by its own), compiled. */
  plugins?: readonly CompiledPlugin[];
}

/** A consumer or credential that carries an auth plugin, with that plugin's consumer-side conf (defaults applied). */
export interface ConsumerEntry {
  consumer: ConsumerInfo;
  conf: Record<string, unknown>;
}

/** The consumers of a snapshot, for the auth plugins (they index the entries by their key attribute themselves). */
export interface ConsumerIndex {
  /** Every consumer and credential that has plugin `name`; the same array while the consumers are unchanged. */
  forPlugin(name: string): readonly ConsumerEntry[];
  byName(username: string): ConsumerInfo | undefined;
}

const NO_CONSUMERS: ConsumerIndex = { forPlugin: () => [], byName: () => undefined };
const NO_METADATA: ReadonlyMap<string, Record<string, unknown>> = new Map();

/**
 * The request headers plugins set, add or remove on their way upstream (APISIX `core.request.set_header`). Every
 * forwarder applies them (forward() merges them into the header list it hands over, also when the runtime gives
 * the client's raw header list), and {@link RequestContext.header} reads through them, so a later plugin sees what
 * an earlier one set. A name maps to its new values, or to null when it is removed.
 */
export type HeaderOverlay = Map<string, string[] | null>;

/**
 * What plugins change about the call upstream; every forwarder honours it (`forward()` and the upstream balancer).
 * Unset fields keep the client's. `path` and `query` are wire forms (percent-encoded, no `?`).
 */
export interface UpstreamOverlay {
  method?: string;
  path?: string;
  query?: string;
  /** The Host header to send (proxy-rewrite `host`); wins over an upstream's `pass_host`. */
  host?: string;
}

/**
 * A matched route as metrics and logs name it, fixed at config time (one object per compiled route, kept while
 * the route is unchanged, so per-route state can be looked up by identity).
 */
export interface RouteInfo {
  id: string;
  /** The route's `name` ('' without one). */
  name: string;
  /** The route's path pattern (APISIX `matched_uri`; the first of `uris`). */
  uri: string;
  /** The route's host pattern when it has exactly one (`matched_host`), else ''. */
  host: string;
  serviceId: string;
  /** The service's `name` ('' without one). */
  serviceName: string;
}

/** Where {@link RequestContext.requestId} keeps the id (a var name no template can spell). */
const REQUEST_ID_VAR = ' request_id';

const NO_PARAMS: Record<string, string> = Object.freeze({}) as Record<string, string>;

export interface RequestContextInit {
  request: Request;
  /** `request.url`, when the caller read it already (on Bun and workerd every read of it makes a new string). */
  url?: string;
  method: string;
  path: string;
  rawPath: string;
  query: string;
  host: string;
  /** The Host header as the client sent it (port included), when the caller read it already; else it is read here. */
  hostHeader?: string | null;
  clientIp: string;
  scheme: string;
  rawHeaders: readonly string[] | undefined;
  getBody?: () => ReadableStream<Uint8Array> | null;
  clientSignal: () => AbortSignal | undefined;
  forward: Forwarder;
  /** What the runtime's server handed over with the request (GatewayOptions: `env`), for the WebSocket connector. */
  env?: unknown;
  /** The runtime's WebSocket connector (src/core/websocket.ts); undefined where the runtime has none. */
  websocket?: WebSocketConnector;
}

/**
 * Everything a plugin or the upstream forwarder knows of one proxied request. Built once per request, before
 * routing (route `vars` read its variables), and handed through every phase.
 */
export class RequestContext {
  readonly request: Request;
  /** `request.url`, read once (the log phase reads the port from it). */
  readonly url: string;
  /** The client's method. The method sent upstream is `upstream.method ?? method`. */
  readonly method: string;
  /** Normalised path the route matched on (decoded, `//` merged, dot segments resolved): nginx `$uri`. */
  readonly path: string;
  /** The path exactly as the client sent it (still percent-encoded). */
  readonly rawPath: string;
  /** Raw query string without the leading `?`; '' when there is none. */
  readonly query: string;
  /** Lower-case host without port. */
  readonly host: string;
  /**
   * The Host header as the client sent it, port included (null: none), read once per request: every `Headers` read
   * on workerd crosses into the runtime and back as a new string.
   */
  readonly hostHeader: string | null;
  /** The client's address: as the runtime saw it, or as `real-ip` set it; '' when unknown. */
  clientIp: string;
  /** `http` or `https`, as the client reached the gateway. */
  readonly scheme: string;
  /**
   * The client's headers as they came, flat (`[name, value, …]`, names in any case), when the runtime has them so
   * (GatewayOptions.rawHeaders); forward() then sends these (with the {@link headerOverlay} applied).
   */
  readonly rawHeaders: readonly string[] | undefined;
  /**
   * The body of a GET request, for a runtime whose server keeps it (GatewayOptions.getBody; Node): a WHATWG
   * `Request` has none for GET. Undefined, or null when the GET came without one: nothing is forwarded.
   */
  readonly getBody: (() => ReadableStream<Uint8Array> | null) | undefined;
  /** The signal that fires when the client went away, made when asked for (see ForwardRequest.clientSignal). */
  readonly clientSignal: () => AbortSignal | undefined;
  /** The call's client; a WebSocket upgrade to an `enable_websocket` route swaps in the connector (websocketCall). */
  forward: Forwarder;
  readonly env: unknown;
  readonly websocket: WebSocketConnector | undefined;
  /** Captures of the matched route (`:ext` for a trailing `*`). */
  params: Record<string, string> = NO_PARAMS;
  /** Id of the matched route; '' before routing or when nothing matched. */
  routeId = '';
  /** `service_id` of the matched route; '' without one. */
  serviceId = '';
  /** The matched route (undefined: nothing matched). */
  route: RouteInfo | undefined = undefined;
  /** Host (IP) of the upstream node the request went to (prometheus `node`); '' when none (a function, an exit). */
  upstreamNode = '';
  /** Port of that node. */
  upstreamPort = 0;
  /** The call upstream was made (APISIX: proxied), whether or not an answer came. */
  proxied = false;
  /** Milliseconds from the call upstream to its answer's head (`$upstream_response_time` × 1000). */
  upstreamLatency: number | undefined = undefined;
  /** Keeps work started for this request (a logger's send) alive after the answer (Workers' `ctx.waitUntil`). */
  waitUntil: ((work: Promise<unknown>) => void) | undefined = undefined;
  /** The answer as sent (after header_filter), for the log phase (read its headers only when needed: on Node
   * reading them makes the runtime's Response build a Headers object). */
  response: Response | undefined = undefined;
  /** Body bytes sent to the client so far (counted when a log handler runs). */
  bytesSent = 0;
  /** The consumer an auth plugin attached (undefined: anonymous). */
  consumer: ConsumerInfo | undefined = undefined;
  /** Upstream call edits (method, path, query, host). */
  readonly upstream: UpstreamOverlay = {};
  /** Request header edits, applied by every forwarder; undefined until a plugin edits a header. */
  headerOverlay: HeaderOverlay | undefined = undefined;
  /**
   * The request body a plugin read whole (hmac-auth's digest check), sent upstream instead of the client's stream
   * (which that read consumed). Undefined: the client's body streams on.
   */
  bodyOverride: Uint8Array<ArrayBuffer> | undefined = undefined;
  /** Status of the upstream's or function's answer, once it came (`$upstream_status`). */
  upstreamStatus: number | undefined = undefined;
  /** Status of the answer sent to the client, known from the header_filter phase on (`$status`). */
  status = 0;
  /** `performance.now()` when the gateway got the request. */
  readonly startTime: number;
  /** Extra variables set by plugins (`$request_id`, regex captures, ...), read by {@link getVar}. */
  vars: Map<string, unknown> | undefined = undefined;
  /** The consumers of the snapshot the request is served from (auth plugins look clients up here). */
  consumers: ConsumerIndex = NO_CONSUMERS;
  /** `plugin_metadata` of that snapshot, by plugin name (defaults applied). */
  metadata: ReadonlyMap<string, Record<string, unknown>> = NO_METADATA;
  /** Per-request state of plugin instances, keyed by the instance. */
  private pluginState: Map<object, unknown> | undefined = undefined;
  private cookies: Map<string, string> | undefined = undefined;
  private args: URLSearchParams | undefined = undefined;

  constructor(init: RequestContextInit) {
    this.request = init.request;
    this.url = init.url ?? init.request.url;
    this.method = init.method;
    this.path = init.path;
    this.rawPath = init.rawPath;
    this.query = init.query;
    this.host = init.host;
    this.hostHeader = init.hostHeader !== undefined ? init.hostHeader : init.request.headers.get('host');
    this.clientIp = init.clientIp;
    this.scheme = init.scheme;
    this.rawHeaders = init.rawHeaders;
    this.getBody = init.getBody;
    this.clientSignal = init.clientSignal;
    this.forward = init.forward;
    this.env = init.env;
    this.websocket = init.websocket;
    this.startTime = performance.now();
  }

  /** The request header as the upstream will get it (after the plugins' edits); undefined when absent. */
  header(name: string): string | undefined {
    const lower = name.toLowerCase();
    const edited = this.headerOverlay?.get(lower);
    if (edited !== undefined) return edited === null ? undefined : edited.join(', ');
    try {
      return this.request.headers.get(lower) ?? undefined;
    } catch {
      // Not a header name (a plugin's configured `header: "a b"`, hmac-auth's `@request-target`): no request has it.
      return undefined;
    }
  }

  /** Set (replace) a request header on its way upstream; null removes it (APISIX `core.request.set_header`). */
  setHeader(name: string, value: string | readonly string[] | null): void {
    const lower = name.toLowerCase();
    if (lower === 'host') {
      // The Host header is the call's (UpstreamOverlay.host), not a header line the forwarders copy.
      this.upstream.host = value === null ? undefined : typeof value === 'string' ? value : value[0];
      return;
    }
    if (!this.headerOverlay) this.headerOverlay = new Map();
    this.headerOverlay.set(lower, value === null ? null : typeof value === 'string' ? [value] : [...value]);
  }

  /** Add a value to a request header on its way upstream, after the values it has (APISIX `core.request.add_header`). */
  addHeader(name: string, value: string): void {
    const lower = name.toLowerCase();
    const edited = this.headerOverlay?.get(lower);
    let values: string[];
    if (edited !== undefined) values = edited === null ? [] : edited;
    else {
      const current = this.request.headers.get(lower);
      values = current === null ? [] : [current];
    }
    values.push(value);
    if (!this.headerOverlay) this.headerOverlay = new Map();
    this.headerOverlay.set(lower, values);
  }

  /** A plugin instance's state for this request. */
  stateOf<T>(owner: object): T | undefined {
    return this.pluginState?.get(owner) as T | undefined;
  }

  setStateOf(owner: object, value: unknown): void {
    if (!this.pluginState) this.pluginState = new Map();
    this.pluginState.set(owner, value);
  }

  /** Set a variable plugins and expressions can read (`$name`). */
  setVar(name: string, value: unknown): void {
    if (!this.vars) this.vars = new Map();
    this.vars.set(name, value);
  }

  /**
   * A request variable, as APISIX's `ctx.var` (nginx variables plus APISIX's own): undefined when it has no value.
   * `arg_<name>` is the first value of a query argument, `http_<name>` a request header (`-` written `_`),
   * `cookie_<name>` a cookie (case-sensitive name).
   */
  getVar(name: string): unknown {
    const own = this.vars?.get(name);
    if (own !== undefined) return own;
    switch (name) {
      case 'uri':
        // nginx `$uri`: what the client asked for, normalised; a rewrite changes `upstream_uri`, not this.
        return this.path;
      case 'request_uri':
        return this.query ? `${this.rawPath}?${this.query}` : this.rawPath;
      case 'real_request_uri':
        return this.query ? `${this.rawPath}?${this.query}` : this.rawPath;
      case 'args':
      case 'query_string':
        return this.query || undefined;
      case 'is_args':
        return this.query ? '?' : '';
      case 'host':
        return this.host;
      case 'server_name':
        return this.host;
      case 'http_host':
        return this.header('host');
      case 'request_method':
        return this.method;
      case 'scheme':
        return this.scheme;
      case 'remote_addr':
        return this.clientIp || undefined;
      case 'server_protocol':
        return 'HTTP/1.1';
      case 'route_id':
        return this.routeId || undefined;
      case 'service_id':
        return this.serviceId || undefined;
      case 'consumer_name':
        return this.consumer?.username;
      case 'consumer_group_id':
        return this.consumer?.groupId;
      case 'upstream_status':
        return this.upstreamStatus;
      case 'upstream_addr':
        return this.upstreamNode ? `${this.upstreamNode}:${this.upstreamPort}` : undefined;
      case 'upstream_response_time':
        return this.upstreamLatency === undefined ? undefined : Math.round(this.upstreamLatency) / 1000;
      case 'bytes_sent':
        return this.bytesSent;
      case 'route_name':
        return this.route?.name || undefined;
      case 'service_name':
        return this.route?.serviceName || undefined;
      case 'status':
        return this.status || undefined;
      case 'content_type':
        return this.header('content-type');
      case 'content_length':
        return this.header('content-length');
      case 'request_length':
        return this.header('content-length');
      case 'upstream_uri': {
        const path = this.upstream.path ?? this.rawPath;
        const query = this.upstream.query ?? this.query;
        return query ? `${path}?${query}` : path;
      }
      case 'request_time':
        return Math.round(performance.now() - this.startTime) / 1000;
      case 'request_id':
        return this.requestId();
      case 'apisix_request_id':
        // APISIX: `set $apisix_request_id $request_id`, replaced by the request-id plugin's id (set as a var).
        return this.requestId();
    }
    if (name.startsWith('arg_')) return this.arg(name.slice(4));
    if (name.startsWith('http_')) return this.header(name.slice(5).replaceAll('_', '-'));
    if (name.startsWith('cookie_')) return this.cookie(name.slice(7));
    if (name.startsWith('uri_param_')) return this.params[name.slice(10)];
    return undefined;
  }

  /** nginx `$request_id`: 32 random hex digits, made the first time it is read and kept for the request. */
  requestId(): string {
    let id = this.vars?.get(REQUEST_ID_VAR) as string | undefined;
    if (id === undefined) {
      const bytes = crypto.getRandomValues(new Uint8Array(16));
      id = '';
      for (const b of bytes) id += (b < 16 ? '0' : '') + b.toString(16);
      this.setVar(REQUEST_ID_VAR, id);
    }
    return id;
  }

  /**
   * The first value of query argument `name` (undefined when absent), as `URLSearchParams` reads it. A query with no
   * escapes (no `%`, no `+`), no lone surrogate (URLSearchParams makes them U+FFFD) and no leading `?` (which it
   * drops) is searched as it is: key-auth's `?apikey=` on every request of a protected route would
   * otherwise build a `URLSearchParams` per request (0.25-0.38 µs on Bun in a loop, against 0.07-0.09).
   */
  arg(name: string): string | undefined {
    const q = this.query;
    if (!q) return undefined;
    if (this.args === undefined && !NOT_PLAIN_QUERY.test(q) && q.charCodeAt(0) !== 63) return plainArg(q, name);
    if (!this.args) this.args = new URLSearchParams(q);
    return this.args.get(name) ?? undefined;
  }

  /** A cookie of the request (exact name). */
  cookie(name: string): string | undefined {
    if (!this.cookies) {
      this.cookies = new Map();
      const raw = this.request.headers.get('cookie');
      if (raw) {
        for (const part of raw.split(';')) {
          const eq = part.indexOf('=');
          if (eq < 0) continue;
          const k = part.slice(0, eq).trim();
          if (k && !this.cookies.has(k)) this.cookies.set(k, part.slice(eq + 1).trim());
        }
      }
    }
    return this.cookies.get(name);
  }

  /** A reader of this request's variables, for compiled expressions and templates. */
  get varReader(): (name: string) => unknown {
    return (name) => this.getVar(name);
  }
}

export type Handler = (ctx: RequestContext) => Promise<Response>;

export interface Logger {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export const consoleLogger: Logger = {
  info: (msg, fields) => console.log(fields ? `${msg} ${JSON.stringify(fields)}` : msg),
  warn: (msg, fields) => console.warn(fields ? `${msg} ${JSON.stringify(fields)}` : msg),
  error: (msg, fields) => console.error(fields ? `${msg} ${JSON.stringify(fields)}` : msg),
};

export const silentLogger: Logger = { info() {}, warn() {}, error() {} };

/** What makes a query's text differ from what `URLSearchParams` reads in it (see {@link RequestContext.arg}). */
const NOT_PLAIN_QUERY = /[%+\ud800-\udfff]/;

/**
 * The first value of argument `name` in a query with no escapes, as `URLSearchParams` reads it: `&`-separated
 * parts, empty ones skipped, the name up to the first `=` (the value empty without one).
 */
export function plainArg(query: string, name: string): string | undefined {
  let start = 0;
  while (start < query.length) {
    let end = query.indexOf('&', start);
    if (end < 0) end = query.length;
    if (end > start) {
      let eq = query.indexOf('=', start);
      if (eq < 0 || eq > end) eq = end;
      if (eq - start === name.length && query.startsWith(name, start)) return eq === end ? '' : query.slice(eq + 1, end);
    }
    start = end + 1;
  }
  return undefined;
}

import type { Forwarder } from './upstream/types.ts';

/** Everything a plugin or the upstream forwarder needs to know of one proxied request. Built once per request. */
export interface RequestContext {
  request: Request;
  method: string;
  /** Normalised path the route matched on (decoded, `//` merged, dot segments resolved). */
  path: string;
  /** The path exactly as the client sent it (still percent-encoded). */
  rawPath: string;
  /** Raw query string without the leading `?`; '' when there is none. */
  query: string;
  /** Lower-case host without port. */
  host: string;
  /** Captures of the matched route (`:ext` for a trailing `*`). */
  params: Record<string, string>;
  /** The client's address as the runtime saw it; '' when the runtime cannot tell. */
  clientIp: string;
  /** `http` or `https`, as the client reached the gateway. */
  scheme: string;
  routeId: string;
  /**
   * The client's headers as they came, flat (`[name, value, …]`, names in any case), when the runtime has them so
   * (GatewayOptions.rawHeaders); forward() then sends these instead of iterating `request.headers`.
   */
  rawHeaders?: readonly string[];
  /**
   * The body of a GET request, for a runtime whose server keeps it (GatewayOptions.getBody; Node): a WHATWG
   * `Request` has none for GET. Undefined, or null when the GET came without one: nothing is forwarded.
   */
  getBody?: () => ReadableStream<Uint8Array> | null;
  /** The signal that fires when the client went away, made when asked for (see ForwardRequest.clientSignal). */
  clientSignal: () => AbortSignal | undefined;
  forward: Forwarder;
}

export type Handler = (ctx: RequestContext) => Promise<Response>;
export type Middleware = (ctx: RequestContext, next: Handler) => Promise<Response>;

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

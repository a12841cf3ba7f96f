import type { HeaderList } from './headers.ts';

/**
 * The forwarding client contract. The core never calls `fetch` directly: each runtime's entry hands it
 * the best client it has (an undici Agent on Node, the native fetch elsewhere) behind this one signature.
 */
export interface ForwardRequest {
  /** Absolute http(s) URL, query string included. */
  url: string;
  method: string;
  /**
   * Headers to send, already cleaned by the core (no hop-by-hop headers, no `host`: the client derives
   * `Host` from `url`, or from `hostHeader` when given): lower-case name/value pairs, a `HeadersInit` for `fetch`.
   * A new list for every call, owned by the forwarder, which may add or remove entries rather than copy it (the
   * pairs themselves may be shared: never change one in place).
   */
  headers: HeaderList;
  /** Set a `Host` header other than the URL's authority (upstream `pass_host: pass|rewrite`). Clients that cannot honour it ignore it; see docs. */
  hostHeader?: string;
  /** Request body, streamed; null when the request has none. */
  body: ReadableStream<Uint8Array> | null;
  /**
   * The route's limit on the request body, in bytes, when the body is counted against it on its way (it came
   * without a `Content-Length`). `body` then errors with a `body-too-large` {@link UpstreamError} past the limit; a
   * client that cannot abort an upload in flight may read it whole first. A body with a declared length within
   * the limit comes without it: its framing bounds it, and it is the runtime's own stream.
   */
  maxBodySize?: number;
  /**
   * The signal that fires when the downstream client went away; the forwarder must abort the upstream call then.
   * A function, called at most once per call, when the forwarder wants it: some runtimes make a request's signal
   * (and its cancel hook) only when it is read, so a forwarder may ask only for calls that did not finish quickly.
   */
  clientSignal?: () => AbortSignal | undefined;
  /**
   * The read timeout, ms (nginx's `proxy_read_timeout`): how long the answer's headers may take once the request is
   * sent, and each gap between body chunks afterwards. Without `connectTimeout` and `sendTimeout` it bounds the whole
   * wait for the headers (connect + send + first byte), restarted whenever a request-body chunk is written.
   */
  timeout: number;
  /**
   * The connect timeout, ms (`proxy_connect_timeout`): how long the TCP (+ TLS) connect may take. A forwarder that
   * sees the connect fails a slower one with `connect-timeout`; one that cannot (a WHATWG fetch) adds it to its bound
   * on the wait for the headers. Absent: `timeout` covers the connect.
   */
  connectTimeout?: number;
  /**
   * The send timeout, ms (`proxy_send_timeout`): the longest gap between two writes of the request, from the connect
   * until the whole request is sent (then `timeout` starts). A forwarder that cannot see the writes adds it to its
   * bound on the wait for the headers. Absent: `timeout` covers the sending.
   */
  sendTimeout?: number;
  /** Verify the TLS certificate of an https upstream. */
  tlsVerify: boolean;
  /**
   * The client certificate to present to an https upstream (APISIX `upstream.tls`): only where the runtime's
   * `Capabilities.upstreamClientCert`. Absent: none (and never on a plain-http URL).
   */
  clientCert?: ClientCert;
  /** Connection reuse. A client that cannot tune it ignores the numbers. */
  keepalive: {
    enabled: boolean;
    idleTimeoutMs: number;
    poolSize: number;
    /** Close a connection after this many requests (upstream `keepalive_pool.requests`); absent: no limit. Only for runtimes whose `Capabilities.keepaliveRequests`. */
    maxRequests?: number;
  };
}

/** A TLS client certificate (PEM chain, leaf first) with its private key (PEM, decrypted). */
export interface ClientCert {
  cert: string;
  key: string;
  /**
   * Equal for an equal certificate and key, distinct otherwise (the two PEM texts themselves, made once per
   * compiled upstream or ssl): what a forwarder keys its per-identity clients (TLS contexts, pools) by.
   */
  id: string;
}

/**
 * Sends one request upstream. Resolves with the upstream's response as soon as its headers arrived
 * (a Response whose headers are mutable: the core edits them in place rather than copying),
 * body streaming (never buffered whole; a small body of known length, up to 16 KiB, may be read first and
 * handed on as bytes, with the `timeout` covering it). Redirects are never followed. Headers are the upstream's own:
 * the core removes hop-by-hop headers. A client that transparently decompressed the body must drop
 * `content-encoding` and `content-length` itself, so the response stays decodable.
 *
 * Rejects with an {@link UpstreamError} whose `kind` says what failed.
 */
export type Forwarder = (req: ForwardRequest) => Promise<Response>;

export type UpstreamErrorKind =
  /**
   * Could not connect: refused, DNS failure, unreachable, TLS handshake refused. -> 503. The request was not written,
   * unless the error says `maybeSent` (a client that cannot tell a refused connection from one that broke after the
   * request went out: a WHATWG fetch reports both as one TypeError).
   */
  | 'connect'
  /** No response headers within `timeout`, or a body or an upload that stalled. -> 504 */
  | 'timeout'
  /** The connect did not complete within `connectTimeout` (nginx: "upstream timed out while connecting"). -> 504 */
  | 'connect-timeout'
  /** Connected, then the connection broke or the answer was not valid HTTP. -> 502 */
  | 'protocol'
  /** The downstream client aborted (its signal fired). Nobody to answer. */
  | 'aborted'
  /** The request body broke the gateway's own limit (`max_req_body_size`). -> 413 */
  | 'body-too-large';

export class UpstreamError extends Error {
  override name = 'UpstreamError';
  /**
   * A `connect` failure the client could not prove happened before the request was written (see `connect`): the
   * function may have received it, so it is never re-sent by a cold-start retry (src/core/upstream/retry.ts).
   */
  readonly maybeSent: boolean;
  constructor(
    readonly kind: UpstreamErrorKind,
    message: string,
    options?: { cause?: unknown; maybeSent?: boolean },
  ) {
    super(message, options);
    this.maybeSent = options?.maybeSent ?? false;
  }
}

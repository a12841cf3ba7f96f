/** Errors are values with a status and an `error_msg`, formed here and nowhere else. */

const JSON_HEADERS = { 'content-type': 'application/json' } as const;

/** `{"error_msg": "..."}` with the given status, APISIX's shape for gateway-made errors. */
export function errorResponse(status: number, errorMsg: string, extra?: Record<string, unknown>): Response {
  return new Response(`${JSON.stringify({ error_msg: errorMsg, ...extra })}\n`, { status, headers: JSON_HEADERS });
}

const TEXT_HEADERS = 'text/plain; charset=utf-8';
const HTML_HEADERS = 'text/html; charset=utf-8';

/** nginx's reason phrases for the status pages APISIX's body-less exits produce. */
const REASONS: Record<number, string> = {
  301: 'Moved Permanently',
  302: 'Found',
  303: 'See Other',
  307: 'Temporary Redirect',
  308: 'Permanent Redirect',
  400: 'Bad Request',
  401: 'Authorization Required',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Not Allowed',
  406: 'Not Acceptable',
  408: 'Request Time-out',
  409: 'Conflict',
  410: 'Gone',
  413: 'Request Entity Too Large',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  501: 'Not Implemented',
  502: 'Bad Gateway',
  503: 'Service Temporarily Unavailable',
  504: 'Gateway Time-out',
};

/** The status page of a body-less exit (APISIX runtime's nginx page). */
export function statusPage(status: number): string {
  const title = `${status} ${REASONS[status] ?? ''}`.trimEnd();
  return `<html>\n<head><title>${title}</title></head>\n<body>\n<center><h1>${title}</h1></center>\n<hr><center>openresty</center>\n<p><em>Powered by <a href="https://apisix.apache.org/">APISIX</a>.</em></p></body>\n</html>\n`;
}

/** Redirect statuses nginx answers with a status page when a plugin exits without a body (`ngx_http_error_pages`). */
const REDIRECT_PAGES: ReadonlySet<number> = new Set([301, 302, 303, 307, 308]);

/**
 * The body of a plugin exit, as APISIX's `core.response.exit(code, body)` sends it: an object is JSON followed by
 * a newline, a string is sent as it is; both as `text/plain; charset=utf-8` (nginx's default type). Without a
 * body, a status of 400 or more (and the redirects 301, 302, 303, 307, 308) gets nginx's HTML status page,
 * anything else an empty body.
 */
export function exitBody(status: number, body?: unknown): { text: string; type: string } | undefined {
  if (body === undefined || body === null) {
    return status >= 400 || REDIRECT_PAGES.has(status) ? { text: statusPage(status), type: HTML_HEADERS } : undefined;
  }
  if (typeof body === 'string') return { text: body, type: TEXT_HEADERS };
  return { text: `${JSON.stringify(body)}\n`, type: TEXT_HEADERS };
}

/** A Response ending the request from a plugin phase (APISIX `core.response.exit`); see {@link exitBody}. */
export function pluginExit(status: number, body?: unknown, headers?: Record<string, string>): Response {
  const b = exitBody(status, body);
  const h = new Headers(headers);
  if (b && !h.has('content-type')) h.set('content-type', b.type);
  return new Response(b && !NULL_BODY_STATUS.has(status) ? b.text : null, { status, headers: h });
}

/** Statuses whose Response may not have a body. */
export const NULL_BODY_STATUS: ReadonlySet<number> = new Set([101, 103, 204, 205, 304]);

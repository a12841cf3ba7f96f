/** Errors are values with a status and an `error_msg`, formed here and nowhere else. */
export class GatewayError extends Error {
  override name = 'GatewayError';
  constructor(
    readonly status: number,
    readonly errorMsg: string,
    /** Extra fields for the JSON body (APISIX adds e.g. `description` or `req_body`). */
    readonly extra?: Record<string, unknown>,
  ) {
    super(errorMsg);
  }
}

const JSON_HEADERS = { 'content-type': 'application/json' } as const;

/** `{"error_msg": "..."}` with the given status, APISIX's shape for gateway-made errors. */
export function errorResponse(status: number, errorMsg: string, extra?: Record<string, unknown>): Response {
  return new Response(`${JSON.stringify({ error_msg: errorMsg, ...extra })}\n`, { status, headers: JSON_HEADERS });
}

export function toErrorResponse(err: GatewayError): Response {
  return errorResponse(err.status, err.errorMsg, err.extra);
}

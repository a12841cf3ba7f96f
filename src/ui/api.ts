/**
 * The dashboard's only way to the gateway: the public Admin API on this page's origin (`/apisix/admin/...`), the
 * key in `sessionStorage` (gone when the tab closes) sent as `X-API-KEY`. No cookie is ever set, so another site
 * cannot make the browser send the key (no CSRF surface).
 */

const KEY_ITEM = 'fngate.adminKey';

// biome-ignore lint/suspicious/noExplicitAny: the Admin API's JSON, read field by field where used
export type AnyJson = any;

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export const storedKey = (): string | null => sessionStorage.getItem(KEY_ITEM);
export const storeKey = (key: string) => sessionStorage.setItem(KEY_ITEM, key);
export const forgetKey = () => sessionStorage.removeItem(KEY_ITEM);

/** Calls `/apisix/admin<path>`; resolves with the parsed JSON, rejects with the Admin API's own `error_msg`. */
export async function admin(method: string, path: string, body?: unknown, key = storedKey() ?? ''): Promise<AnyJson> {
  const headers: Record<string, string> = { 'x-api-key': key };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`/apisix/admin${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
    credentials: 'omit',
  });
  const text = await res.text();
  let json: AnyJson;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  if (!res.ok) {
    const msg = json && typeof json === 'object' ? (json.error_msg ?? json.message) : undefined;
    throw new ApiError(res.status, typeof msg === 'string' ? msg : text.trim() || `HTTP ${res.status}`);
  }
  return json;
}

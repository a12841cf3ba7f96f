/** Admin key checks, in constant time: both sides are hashed to fixed-length digests, then compared without early exit. */

const enc = new TextEncoder();

async function digest(s: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', enc.encode(s)));
}

export interface KeyChecker {
  /** true when `candidate` equals one of the configured keys. */
  check(candidate: string): Promise<boolean>;
}

export async function keyChecker(keys: readonly string[]): Promise<KeyChecker> {
  const digests = await Promise.all(keys.map(digest));
  return {
    async check(candidate) {
      const d = await digest(candidate);
      let ok = false;
      for (const k of digests) {
        let diff = 0;
        for (let i = 0; i < k.length; i++) diff |= k[i]! ^ d[i]!;
        ok = ok || diff === 0;
      }
      return ok;
    },
  };
}

/** APISIX's lookup order: query `api_key`, then header `X-API-KEY`, then cookie `x_api_key`. */
export function presentedKey(req: Request, query: URLSearchParams): string | undefined {
  const q = query.get('api_key');
  if (q !== null) return q;
  const h = req.headers.get('x-api-key');
  if (h !== null) return h;
  const cookie = req.headers.get('cookie');
  if (cookie) {
    for (const part of cookie.split(';')) {
      const eq = part.indexOf('=');
      if (eq > 0 && part.slice(0, eq).trim() === 'x_api_key') {
        const raw = part.slice(eq + 1).trim();
        try {
          return decodeURIComponent(raw);
        } catch {
          return raw;
        }
      }
    }
  }
  return undefined;
}

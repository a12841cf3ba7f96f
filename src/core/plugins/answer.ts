/**
 * Pieces shared by the plugins that answer requests themselves or hold them (fault-injection, mocking, redirect):
 * a delay bounded by the client's life, response header maps as APISIX's schemas declare them, and header values
 * made safe for the Fetch API.
 */
import * as v from 'valibot';
import type { RequestContext } from '../context.ts';
import { safeRecord } from '../schema/common.ts';

/** The longest delay a timer can hold (2^31-1 ms), in seconds: a longer one would fire at once on every runtime. */
export const MAX_DELAY_SECONDS = 2147483;

/**
 * Wait `ms`, or less when the client goes away first (its signal aborts; the timer is cleared then, so nothing
 * outlives the request). Resolves true when the whole delay passed, false when the client left.
 */
export function delay(ctx: RequestContext, ms: number): Promise<boolean> {
  const signal = ctx.clientSignal();
  if (signal?.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const gone = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', gone);
      resolve(true);
    }, ms);
    signal?.addEventListener('abort', gone, { once: true });
  });
}

/**
 * The answer of a request whose client left during a plugin's delay: nobody reads it, it only ends the request
 * (the log phase sees 499, nginx's "client closed request", as APISIX's access log has it).
 */
export function clientGone(): Response {
  return new Response(null, { status: 499 });
}

/** RFC 9110 token: what a header name may be. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** What a header value may not hold (Fetch `Headers`: no NUL, CR, LF). */
const BAD_VALUE = /[\0\r\n]/;

/**
 * A map of response headers (fault-injection `abort.headers`, mocking `response_headers`): APISIX's
 * `minProperties: 1` and `^[^:]+$` names with string or number values. fngate also refuses, when the config is
 * written, a name that is not an HTTP token and a value with CR, LF or NUL: the runtime would refuse them on
 * every request.
 */
export const responseHeadersSchema = v.pipe(
  safeRecord(v.string(), v.union([v.string(), v.number()])),
  v.rawCheck(({ dataset, addIssue }) => {
    if (!dataset.typed) return;
    const entries = Object.entries(dataset.value);
    if (entries.length === 0) {
      addIssue({ message: 'expect object to have at least 1 properties' });
      return;
    }
    for (const [name, value] of entries) {
      if (!TOKEN.test(name)) {
        addIssue({ message: `invalid header name ${JSON.stringify(name)}` });
        return;
      }
      if (typeof value === 'string' && BAD_VALUE.test(value)) {
        addIssue({ message: `invalid value of header ${JSON.stringify(name)}: CR, LF and NUL are not allowed` });
        return;
      }
    }
  }),
);

/** Characters a header value cannot carry as they are: NUL, CR, LF and code points above U+00FF. */
const UNSAFE = /[\0\r\n\u0100-\u{10ffff}]/u;
const UNSAFE_ALL = /[\0\r\n\u0100-\u{10ffff}]/gu;

/**
 * A header value built from request variables, made sendable: the characters a Fetch `Headers` refuses (NUL, CR,
 * LF, anything above U+00FF) are percent-encoded as UTF-8. nginx would send the bytes; a TypeError per request
 * would answer 500 instead.
 */
export function safeHeaderValue(value: string): string {
  if (!UNSAFE.test(value)) return value;
  return value.replace(UNSAFE_ALL, percentEncode);
}

const utf8 = new TextEncoder();

/** `%XX` for each UTF-8 byte of `c` (a lone surrogate is U+FFFD, as TextEncoder writes it). */
export function percentEncode(c: string): string {
  let out = '';
  for (const b of utf8.encode(c)) out += `%${b < 16 ? '0' : ''}${b.toString(16).toUpperCase()}`;
  return out;
}

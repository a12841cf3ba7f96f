import { dropOverflow, readWithin } from '../body.ts';
import { AwsV4Signer } from 'aws4fetch';
import * as v from 'valibot';
import { fromBase64 } from '../base64.ts';
import type { Logger, RequestContext } from '../context.ts';
import { errorResponse } from '../errors.ts';
import { NO_BODY_METHODS, requestBody } from '../upstream/forward.ts';
import {
  BadAnswer,
  addHeaderObject,
  badAnswer,
  type FunctionCall,
  readAnswer,
  type ServerlessConf,
  serverlessEntries,
  serverlessForwarder,
} from './serverless.ts';
import type { PluginDefinition } from './types.ts';

const NAME = v.pipe(v.string(), v.minLength(1));

const schema = v.strictObject({
  ...serverlessEntries,
  authorization: v.optional(
    v.strictObject({
      apikey: v.optional(v.string()),
      iam: v.optional(
        v.strictObject({
          accesskey: NAME,
          secretkey: NAME,
          aws_region: v.optional(NAME, 'us-east-1'),
          service: v.optional(NAME, 'execute-api'),
        }),
      ),
    }),
  ),
  /**
   * fngate extension: the function answers in Lambda's proxy-integration shape (`statusCode`, `headers`,
   * `multiValueHeaders`, `cookies`, `body`, `isBase64Encoded`), as through the Invoke API, and that JSON is mapped
   * to the HTTP answer. Off: the answer passes through as is (Function URLs and API Gateway answer plain HTTP).
   */
  proxy_integration_response: v.optional(v.boolean(), false),
});

export interface Iam {
  accesskey: string;
  secretkey: string;
  aws_region: string;
  service: string;
}

type Conf = ServerlessConf & {
  authorization?: { apikey?: string; iam?: Iam };
  proxy_integration_response: boolean;
};

/** RFC 3986 unreserved characters stay; everything else is `%XX` (upper hex), as SigV4's `UriEncode`. */
function uriEncode(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function decode(s: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return s;
  }
}

/**
 * SigV4's canonical query of a raw query string: every arg decoded (`+` is a space, as nginx's args), then
 * `uriEncode(name)=uriEncode(value)`, valueless args `name=`, repeated args kept, sorted by name then value. As
 * APISIX, this exact string is what is sent, so the function's view of the query is what was signed.
 */
export function canonicalQuery(query: string): string {
  if (query === '') return '';
  const pairs: [string, string][] = [];
  for (const part of query.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const name = uriEncode(decode(eq < 0 ? part : part.slice(0, eq)));
    if (name === '') continue;
    pairs.push([name, uriEncode(decode(eq < 0 ? '' : part.slice(eq + 1)))]);
  }
  pairs.sort(([k1, v1], [k2, v2]) => (k1 < k2 ? -1 : k1 > k2 ? 1 : v1 < v2 ? -1 : v1 > v2 ? 1 : 0));
  return pairs.map(([k, val]) => `${k}=${val}`).join('&');
}

const EMPTY = new Uint8Array(0);

function hex(buf: ArrayBuffer): string {
  let out = '';
  for (const b of new Uint8Array(buf)) out += b.toString(16).padStart(2, '0');
  return out;
}

/** The body to sign and send, read whole (at most `limit` bytes), or the 413 answer. */
async function bufferBody(
  ctx: RequestContext,
  method: string,
  limit: number,
): Promise<Uint8Array<ArrayBuffer> | Response> {
  if (method !== ctx.method && NO_BODY_METHODS.has(method)) return EMPTY;
  const tooLarge = () => errorResponse(413, `request body is larger than the ${limit} bytes allowed`);
  const declared = Number(ctx.header('content-length') ?? Number.NaN);
  if (declared > limit) return tooLarge();
  if (ctx.bodyOverride !== undefined) return ctx.bodyOverride;
  const stream = requestBody(ctx);
  if (!stream) return EMPTY;
  const body = await readWithin(stream, limit);
  if (!(body instanceof Uint8Array)) {
    dropOverflow(body);
    return tooLarge();
  }
  ctx.bodyOverride = body;
  return body;
}

/** `YYYYMMDDTHHMMSSZ` of now. */
export function amzDate(now = new Date()): string {
  return now.toISOString().replace(/[:-]|\.\d{3}/g, '');
}

const enc = new TextEncoder();
/** SHA-256 of no bytes: a GET's payload hash, without a WebCrypto call. */
const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

async function hmac(key: BufferSource, data: string): Promise<ArrayBuffer> {
  const k = await crypto.subtle.importKey('raw', key, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  return crypto.subtle.sign('HMAC', k, enc.encode(data));
}

/**
 * The signing key of one day, imported once: `HMAC("AWS4"+secret, date) → region → service → "aws4_request"`.
 * One per route config (the secret, region and service are the config's), so it holds one day at a time.
 */
export class SigningKeys {
  private date = '';
  private key: Promise<CryptoKey> | undefined;
  constructor(private readonly iam: Iam) {}
  get(date: string): Promise<CryptoKey> {
    if (date !== this.date || !this.key) {
      const { secretkey, aws_region, service } = this.iam;
      this.date = date;
      this.key = (async () => {
        const kDate = await hmac(enc.encode(`AWS4${secretkey}`), date);
        const kSigning = await hmac(await hmac(await hmac(kDate, aws_region), service), 'aws4_request');
        return crypto.subtle.importKey('raw', kSigning, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
      })();
      // A failed derivation is not kept.
      this.key.catch(() => {
        this.key = undefined;
      });
    }
    return this.key;
  }
}

/**
 * aws4fetch's signer (its canonical request, the part that is easy to get wrong), with the day's signing key
 * imported once per route instead of once per request: one HMAC per signature.
 */
class Signer extends AwsV4Signer {
  constructor(
    init: ConstructorParameters<typeof AwsV4Signer>[0],
    private readonly keys: SigningKeys,
  ) {
    super(init);
  }
  override async signature(): Promise<string> {
    const key = await this.keys.get(this.datetime.slice(0, 8));
    return hex(await crypto.subtle.sign('HMAC', key, enc.encode(await this.stringToSign())));
  }
}

/**
 * Signs one call with SigV4 (aws4fetch's `AwsV4Signer`, WebCrypto on every runtime). The body is hashed whole
 * (AWS Lambda Function URLs and API Gateway refuse `UNSIGNED-PAYLOAD`), the hash goes in `x-amz-content-sha256`.
 * Signed headers: `host` (the one sent), `x-amz-content-sha256`, `x-amz-date`.
 */
export async function signCall(
  call: FunctionCall,
  body: Uint8Array<ArrayBuffer>,
  iam: Iam,
  keys: SigningKeys,
  host?: string,
  datetime = amzDate(),
): Promise<void> {
  const u = new URL(call.url);
  const qs = canonicalQuery(u.search.slice(1));
  u.search = qs;
  call.url = qs ? `${u.origin}${u.pathname}?${qs}` : `${u.origin}${u.pathname}`;
  // The Host header sent is the URL's authority unless a plugin set one (proxy-rewrite `host`): sign that one.
  if (host !== undefined) {
    // The URL `host` setter keeps the old port when the new value has none: set name and port apart.
    const h = new URL(`${u.protocol}//${host}`);
    u.hostname = h.hostname;
    u.port = h.port;
  }
  const sha = body.byteLength === 0 ? EMPTY_SHA256 : hex(await crypto.subtle.digest('SHA-256', body));
  const signer = new Signer(
    {
      method: call.method,
      url: u.toString(),
      headers: { 'x-amz-content-sha256': sha },
      accessKeyId: iam.accesskey,
      secretAccessKey: iam.secretkey,
      region: iam.aws_region,
      service: iam.service,
      datetime,
    },
    keys,
  );
  const signed = await signer.sign();
  for (const name of ['authorization', 'x-amz-date', 'x-amz-content-sha256']) {
    call.headers.push([name, signed.headers.get(name) ?? '']);
  }
}

/**
 * Maps a Lambda proxy-integration answer (`statusCode`, `headers`, `multiValueHeaders`, `cookies`, `body`,
 * `isBase64Encoded`) to the HTTP answer. A JSON object without `statusCode` is the body of a 200 (Lambda's
 * payload 2.0 rule); anything that cannot be mapped throws {@link BadAnswer}.
 */
export function mapProxyIntegration(text: string): Response {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new BadAnswer('not valid JSON (a Lambda proxy-integration response was expected)');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    throw new BadAnswer('not a JSON object (a Lambda proxy-integration response was expected)');
  }
  const r = doc as Record<string, unknown>;
  if (!('statusCode' in r)) return new Response(text, { status: 200, headers: { 'content-type': 'application/json' } });
  const status = r.statusCode;
  if (typeof status !== 'number' || !Number.isInteger(status) || status < 200 || status > 599) {
    throw new BadAnswer('"statusCode" is not an integer from 200 to 599');
  }
  const headers = new Headers();
  const budget = { count: 0, bytes: 0 };
  addHeaderObject(headers, r.headers, 'headers', budget);
  addHeaderObject(headers, r.multiValueHeaders, 'multiValueHeaders', budget, true);
  if (r.cookies !== undefined && r.cookies !== null) {
    if (!Array.isArray(r.cookies)) throw new BadAnswer('"cookies" is not an array');
    addHeaderObject(headers, { 'set-cookie': r.cookies }, 'cookies', budget, true);
  }
  let body: string | Uint8Array<ArrayBuffer> | null = null;
  if (r.body !== undefined && r.body !== null) {
    if (typeof r.body !== 'string') throw new BadAnswer('"body" is not a string');
    if (r.isBase64Encoded === true) {
      const bytes = fromBase64(r.body);
      if (!bytes) throw new BadAnswer('"body" is not base64 although "isBase64Encoded" is true');
      body = bytes;
    } else {
      body = r.body;
    }
  }
  if (r.isBase64Encoded !== undefined && typeof r.isBase64Encoded !== 'boolean') {
    throw new BadAnswer('"isBase64Encoded" is not a boolean');
  }
  const nullBody = status === 204 || status === 205 || status === 304;
  return new Response(nullBody ? null : body, { status, headers });
}

function proxyIntegrationAnswer(logger: Logger): (res: Response, ctx: RequestContext) => Promise<Response> {
  return async (res, ctx) => {
    // An error of the Invoke API itself (4xx/5xx) or of the function (X-Amz-Function-Error) is not a mapping.
    const fnError = res.headers.get('x-amz-function-error');
    if (fnError !== null) {
      await res.body?.cancel().catch(() => {});
      logger.error(`aws-lambda: the function failed (X-Amz-Function-Error: ${fnError.slice(0, 64)})`, {
        route: ctx.routeId,
      });
      return errorResponse(502, `the function failed: ${fnError.slice(0, 64)}`);
    }
    if (res.status !== 200) return res;
    try {
      return mapProxyIntegration(await readAnswer(res));
    } catch (err) {
      if (err instanceof BadAnswer) return badAnswer(logger, 'aws-lambda', ctx, err.message);
      return badAnswer(logger, 'aws-lambda', ctx, 'the answer could not be read');
    }
  };
}

/**
 * `aws-lambda`: forwards to an AWS Lambda Function URL or API Gateway endpoint (or the Invoke API with
 * `proxy_integration_response`). Auth as APISIX: a client without `x-api-key` gets `authorization.apikey` as one,
 * and nothing else; else a client without `Authorization` gets a SigV4 signature from `authorization.iam`.
 */
export const awsLambda: PluginDefinition<Conf> = {
  name: 'aws-lambda',
  priority: -1899,
  version: 0.1,
  schema: schema as v.GenericSchema<unknown, Conf>,
  secretFields: ['authorization.apikey', 'authorization.iam.accesskey', 'authorization.iam.secretkey'],
  create(conf, env) {
    const apikey = conf.authorization?.apikey;
    const iam = conf.authorization?.iam;
    // The day's signing key, derived and imported once per config.
    const keys = iam === undefined ? undefined : new SigningKeys(iam);
    const limit = conf.max_req_body_size;
    return {
      proxy: serverlessForwarder(conf, {
        label: 'function',
        prepare:
          apikey === undefined && iam === undefined
            ? undefined
            : async (ctx, call) => {
                if (apikey !== undefined && ctx.header('x-api-key') === undefined) {
                  call.headers.push(['x-api-key', apikey]);
                  return undefined;
                }
                if (iam === undefined || ctx.header('authorization') !== undefined) return undefined;
                const body = await bufferBody(ctx, call.method, limit);
                if (body instanceof Response) return body;
                // Signed for the Host that goes out: on a runtime that sends the URL's authority whatever a plugin
                // set (Workers), a rewritten Host would make the signature cover a header never sent.
                await signCall(call, body, iam, keys!, env.hostHeader === false ? undefined : ctx.upstream.host);
                return undefined;
              },
        answer: conf.proxy_integration_response ? proxyIntegrationAnswer(env.logger) : undefined,
      }),
    };
  },
};

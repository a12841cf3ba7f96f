import * as v from 'valibot';
import { textToBase64 } from '../base64.ts';
import type { Logger, RequestContext } from '../context.ts';
import { errorResponse } from '../errors.ts';
import { durationMs } from '../schema/common.ts';
import {
  addHeaderObject,
  BadAnswer,
  badAnswer,
  isHttpUrl,
  readAnswer,
  serverlessForwarder,
  type TransportConf,
  transportEntries,
} from './serverless.ts';
import type { PluginDefinition } from './types.ts';

/** APISIX's name rule for namespace, package and action: `\A([\w]|[\w][\w@ .-]*[\w@.-]+)\z`, at most 256. */
const ENTITY = v.pipe(
  v.string(),
  v.maxLength(256),
  v.regex(/^(?:\w|\w[\w@ .-]*[\w@.-]+)$/, 'must be an OpenWhisk entity name'),
);

const schema = v.strictObject({
  ...transportEntries,
  api_host: v.pipe(v.string(), v.check(isHttpUrl, 'must be a valid http(s) URL')),
  service_token: v.pipe(v.string(), v.check((s) => s.includes(':'), 'expected "uuid:key" (the Basic auth credentials)')),
  namespace: ENTITY,
  package: v.optional(ENTITY),
  action: ENTITY,
  result: v.optional(v.boolean(), true),
  // APISIX: 1 to 60000 ms (OpenWhisk's own bound on a blocking call).
  timeout: v.optional(v.pipe(durationMs(1), v.maxValue(60000)), 3000),
});

type Conf = TransportConf & {
  api_host: string;
  service_token: string;
  namespace: string;
  package?: string;
  action: string;
  result: boolean;
};

/** The action's URL (APISIX openwhisk.lua): `<api_host>/api/v1/namespaces/<ns>/actions/[<pkg>/]<action>?blocking=true&result=..&timeout=..`. */
export function actionUrl(conf: Conf): string {
  const host = conf.api_host.replace(/\/+$/, '');
  const pkg = conf.package === undefined ? '' : `${encodeURIComponent(conf.package)}/`;
  return `${host}/api/v1/namespaces/${encodeURIComponent(conf.namespace)}/actions/${pkg}${encodeURIComponent(conf.action)}?blocking=true&result=${conf.result}&timeout=${conf.timeout}`;
}

/**
 * The action's answer, as APISIX: a JSON object's `headers` become response headers, `statusCode` the status and
 * `body` the body (a string as is, anything else JSON and a newline); a JSON object without them is returned as it
 * came. A body that is not JSON is a 503 (APISIX). An activation without a result (a blocking call that ran past
 * OpenWhisk's wait answers 202 with only an `activationId`) is a 502.
 */
export function mapResult(text: string, status: number, headersIn: Headers, result: boolean): Response {
  // No body: the status passes through (APISIX).
  if (text === '') return new Response(null, { status, headers: headersIn });
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new NotJson();
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return new Response(text, { status, headers: headersIn });
  const r = doc as Record<string, unknown>;
  if (status === 202 || (!result && isObjectWithout(r, 'response'))) {
    const id = typeof r.activationId === 'string' ? ` (activation ${r.activationId.slice(0, 64)})` : '';
    throw new BadAnswer(`the OpenWhisk activation has no result${id}: it is still running or it failed`);
  }
  if (!result) return new Response(text, { status, headers: headersIn });
  const headers = new Headers(headersIn);
  if (r.headers !== undefined) {
    headers.delete('content-type');
    addHeaderObject(headers, r.headers, 'headers', { count: 0, bytes: 0 });
  }
  let out = status;
  if (r.statusCode !== undefined) {
    const s = r.statusCode;
    if (typeof s !== 'number' || !Number.isInteger(s) || s < 200 || s > 599) throw new BadAnswer('"statusCode" is not an integer from 200 to 599');
    out = s;
  }
  let body: string = text;
  if (r.body !== undefined) body = typeof r.body === 'string' ? r.body : `${JSON.stringify(r.body)}\n`;
  headers.delete('content-length');
  return new Response(out === 204 || out === 304 ? null : body, { status: out, headers });
}

class NotJson extends Error {}

function isObjectWithout(r: Record<string, unknown>, key: string): boolean {
  const x = r[key];
  return typeof x !== 'object' || x === null || !('result' in x);
}

function openwhiskAnswer(conf: Conf, logger: Logger): (res: Response, ctx: RequestContext) => Promise<Response> {
  return async (res, ctx) => {
    try {
      const text = await readAnswer(res);
      const headers = new Headers(res.headers);
      headers.delete('content-length');
      return mapResult(text, res.status, headers, conf.result);
    } catch (err) {
      if (err instanceof NotJson) {
        // APISIX: 503 for an answer that is not JSON.
        logger.error('openwhisk: failed to process openwhisk action, err: the answer is not JSON', { route: ctx.routeId });
        return errorResponse(503, 'the OpenWhisk answer is not JSON');
      }
      return badAnswer(logger, 'openwhisk', ctx, err instanceof BadAnswer ? err.message : 'the answer could not be read');
    }
  };
}

/**
 * `openwhisk`: invokes an Apache OpenWhisk action: always a blocking `POST` with the client's body, Basic auth
 * from `service_token` and `Content-Type: application/json`, none of the client's headers, path or query.
 */
export const openwhisk: PluginDefinition<Conf> = {
  name: 'openwhisk',
  priority: -1901,
  version: 0.1,
  schema: schema as v.GenericSchema<unknown, Conf>,
  secretFields: ['service_token'],
  create(conf, env) {
    const url = actionUrl(conf);
    return {
      proxy: serverlessForwarder(conf, {
        label: 'OpenWhisk action',
        url: () => url,
        method: 'POST',
        ownHeadersOnly: true,
        headers: [
          ['authorization', `Basic ${textToBase64(conf.service_token)}`],
          ['content-type', 'application/json'],
        ],
        answer: openwhiskAnswer(conf, env.logger),
      }),
    };
  },
};

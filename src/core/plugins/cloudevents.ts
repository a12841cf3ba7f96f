import * as v from 'valibot';
import type { RequestContext } from '../context.ts';
import { safeRecord } from '../schema/common.ts';
import { compileTemplate, type Template } from '../template.ts';
import type { PluginDefinition } from './types.ts';

/**
 * `cloudevents` (fngate plugin, no APISIX counterpart): turns the plain HTTP request into a CloudEvents 1.0
 * binary-mode request (HTTP protocol binding v1.0.2 §3.1) for event-driven functions (Knative Eventing, OpenFunction
 * async functions, any CloudEvents SDK receiver). The body stays the body (the event's `data`) and its Content-Type
 * the event's `datacontenttype`; the attributes go in `ce-` headers: `ce-specversion: 1.0`, `ce-id` (a new UUID, or a
 * request header such as the request-id plugin's), `ce-source` and `ce-type` (configured, with `$var` templates),
 * `ce-time` (when the gateway received the request, RFC 3339), and the optional `ce-subject`, `ce-dataschema` and
 * extension attributes. `ce-` headers the client sent are removed first: the gateway, not the client, states what the
 * event is. A separate plugin rather than a field of each serverless plugin: it applies as well to an upstream (a
 * Knative broker or a plain receiver) and to every function platform.
 *
 * Answers pass through unchanged: a binary-mode answer keeps its `ce-` headers, a structured-mode one
 * (`application/cloudevents+json`) keeps the event in its body, whole and streamed; reshaping it would mean holding
 * the answer until its end (the headers go out before the body is read).
 *
 * Written here rather than with the `cloudevents` npm SDK (10.0.0): the SDK imports Node's `http`, `https`, `events`
 * and `util` (it does not bundle for workerd without Node polyfills, and the core imports no Node module) and ajv for
 * validation, 34.7 KB gzipped for binary mode alone; the binding is a handful of headers.
 */

/** Attribute names: lower-case letters and digits (CloudEvents 1.0 §3.1.1; "SHOULD NOT exceed 20 characters"). */
const ATTRIBUTE_NAME = /^[a-z0-9]{1,20}$/;
/** Context attributes this plugin sets itself, which an extension may not name. */
const OWN = new Set([
  'specversion',
  'id',
  'source',
  'type',
  'time',
  'subject',
  'dataschema',
  'datacontenttype',
  'data',
  'data_base64',
]);
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

const nonEmpty = v.pipe(v.string(), v.minLength(1), v.maxLength(4096));

const schema = v.strictObject({
  /** `ce-type` (template), e.g. `com.example.order.created`. */
  type: nonEmpty,
  /** `ce-source` (template; a URI-reference), e.g. `/orders` or `https://$host$uri`. */
  source: nonEmpty,
  subject: v.optional(nonEmpty),
  dataschema: v.optional(nonEmpty),
  /** Take `ce-id` from this request header when the request has it (e.g. `X-Request-Id`); otherwise a new UUID. */
  id_header: v.optional(v.pipe(v.string(), v.regex(HEADER_NAME))),
  /** Extension attributes: name → value (template). */
  extensions: v.optional(
    safeRecord(
      v.pipe(
        v.string(),
        v.regex(ATTRIBUTE_NAME, 'an extension attribute name is 1-20 lower-case letters or digits'),
        v.check((n) => !OWN.has(n), 'names an attribute the plugin sets itself'),
      ),
      nonEmpty,
    ),
  ),
});

type Conf = v.InferOutput<typeof schema>;

const HEX = '0123456789ABCDEF';
const encoder = new TextEncoder();

/**
 * A header value per the binding (v1.0.2 §3.1.3.2): the UTF-8 bytes of space, `"`, `%` and anything outside printable
 * ASCII (U+0021–U+007E) percent-encoded, the rest as it is.
 */
export function encodeHeaderValue(value: string): string {
  if (/^[\x21\x23\x24\x26-\x7e]*$/.test(value)) return value;
  let out = '';
  for (const byte of encoder.encode(value)) {
    if (byte > 0x20 && byte < 0x7f && byte !== 0x22 && byte !== 0x25) out += String.fromCharCode(byte);
    else out += `%${HEX[byte >> 4]}${HEX[byte & 15]}`;
  }
  return out;
}

export const cloudevents: PluginDefinition<Conf> = {
  name: 'cloudevents',
  // After auth (rewrite) and the rewrites, in access: just before the call; below every APISIX plugin that acts there.
  priority: -1800,
  version: 0.1,
  schema: schema as v.GenericSchema<unknown, Conf>,
  create(conf) {
    const type = compileTemplate(conf.type);
    const source = compileTemplate(conf.source);
    const optional: [string, Template][] = [];
    if (conf.subject !== undefined) optional.push(['ce-subject', compileTemplate(conf.subject)]);
    if (conf.dataschema !== undefined) optional.push(['ce-dataschema', compileTemplate(conf.dataschema)]);
    for (const [name, value] of Object.entries(conf.extensions ?? {}))
      optional.push([`ce-${name}`, compileTemplate(value)]);
    const idHeader = conf.id_header;
    return {
      access(ctx: RequestContext) {
        for (const [name] of ctx.request.headers) if (name.startsWith('ce-')) ctx.setHeader(name, null);
        const vars = ctx.varReader;
        ctx.setHeader('ce-specversion', '1.0');
        const id = idHeader === undefined ? undefined : ctx.header(idHeader);
        ctx.setHeader('ce-id', encodeHeaderValue(id || crypto.randomUUID()));
        ctx.setHeader('ce-source', encodeHeaderValue(source(vars)));
        ctx.setHeader('ce-type', encodeHeaderValue(type(vars)));
        ctx.setHeader('ce-time', new Date(Date.now() - (performance.now() - ctx.startTime)).toISOString());
        for (const [name, tpl] of optional) {
          const value = tpl(vars);
          ctx.setHeader(name, value === '' ? null : encodeHeaderValue(value));
        }
        return undefined;
      },
    };
  },
};

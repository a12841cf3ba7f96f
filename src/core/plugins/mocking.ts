/**
 * `mocking` (APISIX apisix/plugins/mocking.lua, priority 10900, phase access): answers the route itself with a
 * fixed answer, a stub of the function or upstream behind it.
 *
 * - `response_example` (a `$var` template), else a body generated from `response_schema` (a JSON schema of an
 *   object): each property's `example` when it has one of the right type, else a fixed value of its `type`
 *   (`"string"`, `1`, `1.5`, `true`, an array of one item, an object of its `properties`). APISIX draws random
 *   values instead; fngate's are deterministic, so the body is computed once, when the config is compiled. A
 *   property without a known `type` (or an array without `items`) is left out. The body is JSON for
 *   `application/json` and `text/plain`, XML under a `<data>` root for `application/xml` and `text/xml`, empty
 *   for `text/html`.
 * - `content_type` (default `application/json;charset=utf8`; its type before any `;` must be one of those five),
 *   `response_status` (default 200), `response_headers` (values are templates; added after the others),
 *   `with_mock_header` (default true: `x-mock-by: fngate/<version>`, APISIX sends `APISIX/<version>`).
 * - `delay`: seconds to wait before answering (ends early, with nothing sent, when the client goes away).
 */
import * as v from 'valibot';
import type { RequestContext } from '../context.ts';
import { NULL_BODY_STATUS } from '../errors.ts';
import { luaNumberToString } from '../expr.ts';
import { safeRecord } from '../schema/common.ts';
import { INTEGER } from '../schema/format.ts';
import { compileTemplate, type Template } from '../template.ts';
import { FNGATE_VERSION } from '../version.ts';
import { clientGone, delay, MAX_DELAY_SECONDS, responseHeadersSchema, safeHeaderValue } from './answer.ts';
import type { PluginDefinition } from './types.ts';

const SUPPORTED_TYPES: ReadonlySet<string> = new Set([
  'application/xml',
  'application/json',
  'text/plain',
  'text/html',
  'text/xml',
]);

const schema = v.pipe(
  v.strictObject({
    // Seconds. APISIX: any integer, only > 0 waits; fngate bounds it by what a timer holds (2^31-1 ms).
    delay: v.optional(v.pipe(v.number(INTEGER), v.integer(), v.maxValue(MAX_DELAY_SECONDS)), 0),
    // APISIX: minimum 100, no maximum; a Response must have a status of 200 to 599.
    response_status: v.optional(v.pipe(v.number(INTEGER), v.integer(), v.minValue(200), v.maxValue(599)), 200),
    content_type: v.optional(v.string(), 'application/json;charset=utf8'),
    response_example: v.optional(v.string()),
    response_schema: v.optional(safeRecord(v.string(), v.unknown())),
    with_mock_header: v.optional(v.boolean(), true),
    response_headers: v.optional(responseHeadersSchema),
  }),
  v.rawCheck(({ dataset, addIssue }) => {
    if (!dataset.typed) return;
    const c = dataset.value;
    // APISIX: anyOf [{required: [response_example]}, {required: [response_schema]}].
    if (c.response_example === undefined && c.response_schema === undefined) {
      addIssue({ message: 'value should match at least one schema, but matches none' });
      return;
    }
    if (!SUPPORTED_TYPES.has(mediaType(c.content_type ?? 'application/json;charset=utf8'))) {
      addIssue({ message: 'unsupported content type!' });
    }
  }),
);

interface Conf {
  delay: number;
  response_status: number;
  content_type: string;
  response_example?: string;
  response_schema?: Record<string, unknown>;
  with_mock_header: boolean;
  response_headers?: Record<string, string | number>;
}

const isPrintable = (c: number) => c >= 0x20 && c <= 0x7e;

/**
 * APISIX's `parse_content_type`: `ngx.re.match(ct, "([ -~]*);([ -~]*)")` (unanchored, greedy) gives the part
 * before the last `;` of the first run of printable ASCII that has one; without a `;`, the whole string.
 */
export function mediaType(contentType: string): string {
  let start = 0;
  while (start < contentType.length) {
    let end = start;
    while (end < contentType.length && isPrintable(contentType.charCodeAt(end))) end++;
    const semi = contentType.lastIndexOf(';', end - 1);
    if (end > start && semi >= start) return contentType.slice(start, semi);
    start = end + 1;
  }
  return contentType;
}

// ---- the example generator: deterministic, from the schema's `type` and `example` ----

type Json = string | number | boolean | Json[] | { [k: string]: Json };

/** Deepest nesting the generator follows (a schema is config, but a deep one should not overflow the stack). */
const MAX_SCHEMA_DEPTH = 32;

function genProperty(property: unknown, depth: number): Json | undefined {
  if (typeof property !== 'object' || property === null || Array.isArray(property) || depth > MAX_SCHEMA_DEPTH)
    return undefined;
  const p = property as Record<string, unknown>;
  const type = typeof p.type === 'string' ? p.type.toLowerCase() : undefined;
  const example = p.example;
  switch (type) {
    case 'array': {
      if (p.items === undefined) return undefined;
      const item = genProperty(p.items, depth + 1);
      return item === undefined ? [] : [item];
    }
    case 'object':
      return genObject(p, depth + 1);
    case 'string':
      return typeof example === 'string' ? example : 'string';
    case 'number':
      return typeof example === 'number' ? example : 1.5;
    case 'integer':
      return typeof example === 'number' ? Math.floor(example) : 1;
    case 'boolean':
      return typeof example === 'boolean' ? example : true;
    default:
      return undefined;
  }
}

function genObject(schema: Record<string, unknown>, depth: number): { [k: string]: Json } {
  const out: { [k: string]: Json } = {};
  const props = schema.properties;
  if (typeof props !== 'object' || props === null || Array.isArray(props)) return out;
  for (const [k, p] of Object.entries(props)) {
    const value = genProperty(p, depth);
    if (value !== undefined) out[k] = value;
  }
  return out;
}

/** The example object `response_schema` describes. */
export function exampleOf(responseSchema: Record<string, unknown>): { [k: string]: Json } {
  return genObject(responseSchema, 0);
}

function xmlEscape(s: string): string {
  return s.replace(/[&<>]/g, (c) => (c === '&' ? '&amp;' : c === '<' ? '&lt;' : '&gt;'));
}

function xmlScalar(v: Json): string {
  return xmlEscape(typeof v === 'number' ? luaNumberToString(v) : String(v));
}

/** XML of `value` as element `name` (an array: one element per item), indented by `indent`. */
function xmlElement(name: string, value: Json, indent: string): string {
  if (Array.isArray(value)) return value.map((item) => xmlElement(name, item, indent)).join('');
  if (typeof value === 'object') {
    const inner = Object.entries(value)
      .map(([k, v]) => xmlElement(k, v, `${indent}  `))
      .join('');
    return inner ? `${indent}<${name}>\n${inner}${indent}</${name}>\n` : `${indent}<${name}></${name}>\n`;
  }
  return `${indent}<${name}>${xmlScalar(value)}</${name}>\n`;
}

/** The body `response_schema` generates for the content type (APISIX: JSON, XML under `<data>`, else empty). */
export function generatedBody(responseSchema: Record<string, unknown>, contentType: string): string {
  const type = mediaType(contentType);
  const example = exampleOf(responseSchema);
  if (type === 'application/xml' || type === 'text/xml') return xmlElement('data', example, '');
  if (type === 'application/json' || type === 'text/plain') return JSON.stringify(example);
  return '';
}

export const mocking: PluginDefinition<Conf> = {
  name: 'mocking',
  priority: 10900,
  version: 0.1,
  schema: schema as v.GenericSchema<unknown, Conf>,
  create(conf) {
    const body: Template = compileTemplate(
      conf.response_example !== undefined
        ? conf.response_example
        : generatedBody(conf.response_schema ?? {}, conf.content_type),
    );
    const extra: [string, Template][] = Object.entries(conf.response_headers ?? {}).map(([name, value]) => {
      if (typeof value === 'number') {
        const text = luaNumberToString(value);
        return [name, () => text];
      }
      return [name, compileTemplate(value)];
    });
    const status = conf.response_status;
    const contentType = safeHeaderValue(conf.content_type);
    const mockBy = conf.with_mock_header ? `fngate/${FNGATE_VERSION}` : undefined;
    const answer = (ctx: RequestContext): Response => {
      const reader = ctx.varReader;
      const headers = new Headers({ 'content-type': contentType });
      if (mockBy) headers.set('x-mock-by', mockBy);
      for (const [name, tpl] of extra) headers.append(name, safeHeaderValue(tpl(reader)));
      return new Response(NULL_BODY_STATUS.has(status) ? null : body(reader), { status, headers });
    };
    const ms = conf.delay > 0 ? conf.delay * 1000 : 0;
    if (ms === 0) return { access: answer };
    return { access: (ctx) => delay(ctx, ms).then((done) => (done ? answer(ctx) : clientGone())) };
  },
};

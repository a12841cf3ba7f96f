/**
 * `response-rewrite` (APISIX apisix/plugins/response-rewrite.lua, priority 899, phases header_filter +
 * body_filter): changes the answer on its way to the client, upstream answers and the gateway's own (404s, plugin
 * exits) alike: `status_code`, the whole `body` (`body_base64`: decoded once, at config time), headers (flat
 * form = set; or `add` as `"Name: value"` strings, then `set`, then `remove`, values with `$var` templates), and
 * `filters`: regex substitutions (RE2) on the body, buffered up to `max_resp_body_size` bytes (longer bodies are
 * cut there). `vars` is evaluated against the response (`status`, `upstream_status`, ...): false, nothing changes.
 * When the body changes, Content-Length, Content-Encoding, ETag and Last-Modified go.
 *
 * A conf without `filters` has no body-phase handler, so it costs nothing per chunk; `body` replaces the body in
 * header_filter without reading the old one.
 */
import * as v from 'valibot';
import type { RequestContext } from '../context.ts';
import { compileExpr, type Expr, luaNumberToString } from '../expr.ts';
import { isPlainObject, safeRecord } from '../schema/common.ts';
import { exprSchema } from '../schema/expr.ts';
import { INTEGER } from '../schema/format.ts';
import { compileTemplate, type Template } from '../template.ts';
import { type CompiledSub, compileSub } from './regex-sub.ts';
import type { PluginDefinition, PluginInstance } from './types.ts';

const NAME = /^[^:]+$/;
const scalar = v.union([v.string(), v.number()]);
const nonEmpty = (o: object) => Object.keys(o).length > 0;
const setMap = v.pipe(
  safeRecord(v.string(), scalar),
  v.check((o) => nonEmpty(o), 'expect object to have at least 1 properties'),
  v.check((o) => Object.keys(o).every((k) => NAME.test(k)), 'header names may not contain ":"'),
);

/** `add` entries: `"Name: value"` (APISIX's schema pattern, then the runtime's split `^([^:\s]+)\s*:\s*([^:]+)$`). */
const ADD_PATTERN = /^[^:]+:[^:]*[^/]$/;
const ADD_SPLIT = /^([^:\s]+)\s*:\s*([^:]+)$/;

const isNewForm = (h: unknown) =>
  isPlainObject(h) && ['add', 'set', 'remove'].some((k) => typeof h[k] === 'object' && h[k] !== null);

const newHeaders = v.strictObject({
  add: v.optional(
    v.pipe(
      v.array(
        v.pipe(
          v.string(),
          v.regex(ADD_PATTERN),
          v.check((s) => ADD_SPLIT.test(s), 'expected "Name: value" (one colon, no space in the name)'),
        ),
      ),
      v.minLength(1),
    ),
  ),
  set: v.optional(setMap),
  remove: v.optional(v.pipe(v.array(v.pipe(v.string(), v.regex(NAME))), v.minLength(1))),
});

const headersSchema = v.union([
  v.pipe(v.unknown(), v.check(isNewForm), newHeaders),
  v.pipe(
    v.unknown(),
    v.check((h) => !isNewForm(h)),
    setMap,
  ),
]);

const filterSchema = v.pipe(
  v.strictObject({
    regex: v.pipe(v.string(), v.minLength(1)),
    replace: v.string(),
    scope: v.optional(v.picklist(['once', 'global']), 'once'),
    options: v.optional(v.string(), 'jo'),
  }),
  v.rawCheck(({ dataset, addIssue }) => {
    if (!dataset.typed) return;
    const f = dataset.value;
    try {
      compileSub(f.regex, f.replace, f.options);
    } catch (err) {
      addIssue({ message: `regex "${f.regex}" validation failed: ${(err as Error).message}` });
    }
  }),
);

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{2,3})?$/;

const schema = v.pipe(
  v.strictObject({
    max_resp_body_size: v.optional(
      v.pipe(v.number(INTEGER), v.integer(), v.minValue(1), v.maxValue(2 ** 31 - 1)),
      64 * 1024 * 1024,
    ),
    headers: v.optional(headersSchema),
    body: v.optional(v.string()),
    body_base64: v.optional(v.boolean(), false),
    status_code: v.optional(v.pipe(v.number(INTEGER), v.integer(), v.minValue(200), v.maxValue(598))),
    vars: v.optional(exprSchema),
    filters: v.optional(v.pipe(v.array(filterSchema), v.minLength(1))),
  }),
  v.check((c) => c.body === undefined || c.filters === undefined, '"body" and "filters" cannot be used together'),
  v.check(
    (c) => !c.body_base64 || (c.body !== undefined && c.body.length > 0 && BASE64.test(c.body)),
    'invalid base64 content',
  ),
);

type Conf = v.InferOutput<typeof schema>;

/** Headers that describe a body: gone when the body changes (APISIX `clear_header_as_body_modified`). */
const BODY_HEADERS = ['content-length', 'content-encoding', 'last-modified', 'etag'];

function decodeBase64(s: string): Uint8Array<ArrayBuffer> {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

interface Filter {
  sub: CompiledSub;
  global: boolean;
}

/** Per-request body buffer of `filters`. */
interface Buffered {
  chunks: Uint8Array[];
  bytes: number;
  /** The cap was reached: the filtered body went out, the rest is dropped. */
  done: boolean;
}

const EMPTY = new Uint8Array(0);

export const responseRewrite: PluginDefinition<Conf> = {
  name: 'response-rewrite',
  priority: 899,
  version: 0.1,
  schema: schema as v.GenericSchema<unknown, Conf>,
  create(conf, env) {
    const vars: Expr | undefined =
      conf.vars === undefined ? undefined : (compileExpr(conf.vars) as { ok: true; expr: Expr }).expr;
    const h = conf.headers;
    const tpl = (x: string | number) => compileTemplate(typeof x === 'number' ? luaNumberToString(x) : x);
    let add: [string, Template][] = [];
    let set: [string, Template][] = [];
    let remove: string[] = [];
    if (isNewForm(h)) {
      const n = h as { add?: string[]; set?: Record<string, string | number>; remove?: string[] };
      add = (n.add ?? []).map((line) => {
        const m = ADD_SPLIT.exec(line)!;
        return [m[1]!, tpl(m[2]!)];
      });
      set = Object.entries(n.set ?? {}).map(([k, x]) => [k, tpl(x)]);
      remove = n.remove ?? [];
    } else if (h) {
      set = Object.entries(h as Record<string, string | number>).map(([k, x]) => [k, tpl(x)]);
    }
    const hasHeaders = add.length + set.length + remove.length > 0;
    const body =
      conf.body === undefined
        ? undefined
        : conf.body_base64
          ? decodeBase64(conf.body)
          : new TextEncoder().encode(conf.body);
    const filters: Filter[] | undefined = conf.filters?.map((f) => ({
      sub: compileSub(f.regex, f.replace, f.options),
      global: f.scope === 'global',
    }));
    const max = conf.max_resp_body_size;
    const status = conf.status_code;
    // Per request: does this answer's body go through the filters (vars matched, body not compressed)?
    const state = {};

    const instance: PluginInstance = {
      headerFilter(ctx: RequestContext, head) {
        if (vars !== undefined && !vars(ctx.varReader)) return;
        if (status !== undefined) head.status = status;
        if (body !== undefined) {
          for (const name of BODY_HEADERS) head.headers.delete(name);
          head.setBody(body.byteLength ? body.slice() : null);
        } else if (filters) {
          const encoding = head.headers.get('content-encoding');
          if (encoding && encoding.toLowerCase() !== 'identity') {
            // Compressed answers are left as they are: decoding would need an async stream (the proxy-side
            // rewrite asks for `identity`, so this only happens when a runtime's fetch asks for more itself).
            env.logger.warn('response-rewrite: filters skipped on a compressed answer', { encoding });
          } else {
            for (const name of BODY_HEADERS) head.headers.delete(name);
            ctx.setStateOf(state, { chunks: [], bytes: 0, done: false } satisfies Buffered);
          }
        }
        if (hasHeaders) {
          const reader = ctx.varReader;
          for (const [name, t] of add) head.headers.append(name, t(reader));
          for (const [name, t] of set) {
            const value = t(reader);
            // nginx: a response header set to "" is removed.
            if (value === '') head.headers.delete(name);
            else head.headers.set(name, value);
          }
          for (const name of remove) head.headers.delete(name);
        }
      },
    };

    if (filters) {
      const run = (bytes: Uint8Array): Uint8Array => {
        let text: string;
        try {
          text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
        } catch {
          env.logger.warn('response-rewrite: filters skipped on a body that is not UTF-8 text');
          return bytes;
        }
        for (const f of filters) text = f.sub.replace(text, f.global);
        return new TextEncoder().encode(text);
      };
      instance.bodyFilter = (ctx, chunk, last) => {
        const buf = ctx.stateOf<Buffered>(state);
        if (buf === undefined) return undefined;
        if (buf.done) return EMPTY;
        if (chunk.byteLength) {
          buf.chunks.push(chunk);
          buf.bytes += chunk.byteLength;
          if (buf.bytes >= max) {
            buf.done = true;
            return run(concat(buf.chunks, max));
          }
        }
        if (!last) return EMPTY;
        buf.done = true;
        return run(concat(buf.chunks, buf.bytes));
      };
      // Ask for an uncompressed answer: the filters work on text.
      instance.rewrite = (ctx) => {
        ctx.setHeader('accept-encoding', 'identity');
        return undefined;
      };
    }
    return instance;
  },
};

/** The first `n` bytes of `chunks`, joined. */
function concat(chunks: Uint8Array[], n: number): Uint8Array {
  if (chunks.length === 1 && chunks[0]!.byteLength <= n) return chunks[0]!;
  const out = new Uint8Array(n);
  let at = 0;
  for (const c of chunks) {
    if (at >= n) break;
    const part = c.byteLength <= n - at ? c : c.subarray(0, n - at);
    out.set(part, at);
    at += part.byteLength;
  }
  return out;
}

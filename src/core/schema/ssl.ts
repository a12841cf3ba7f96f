import * as v from 'valibot';
import { check, descSchema, idSchema, labelsSchema, timestampSchema, uniqueArray, unsupported } from './common.ts';

/** APISIX's `certificate_scheme` and `private_key_schema` (schema_def.lua). */
const certificate = v.pipe(v.string(), v.minLength(128), v.maxLength(64 * 1024));
const privateKey = v.pipe(v.string(), v.minLength(64), v.maxLength(64 * 1024));
/** APISIX's `host_def_pat`: a host name, optionally starting with `*` (a wildcard SNI). */
const sni = v.pipe(v.string(), v.regex(/^\*?[0-9a-zA-Z\-._]+$/));

/** APISIX's `ssl` schema (schema_def.lua `_M.ssl`); `client` (mTLS of clients) is not implemented. */
export const sslSchema = v.pipe(
  v.strictObject({
    id: v.optional(idSchema),
    desc: v.optional(descSchema),
    labels: v.optional(labelsSchema),
    create_time: v.optional(timestampSchema),
    update_time: v.optional(timestampSchema),
    type: v.optional(v.picklist(['server', 'client']), 'server'),
    cert: v.optional(certificate),
    key: v.optional(privateKey),
    sni: v.optional(sni),
    snis: v.optional(v.pipe(v.array(sni), v.minLength(1))),
    certs: v.optional(v.array(certificate)),
    keys: v.optional(v.array(privateKey)),
    client: v.optional(unsupported('verifying client certificates (ssl "client") is not implemented')),
    status: v.optional(v.picklist([1, 0]), 1),
    ssl_protocols: v.optional(
      v.pipe(uniqueArray(v.picklist(['TLSv1.1', 'TLSv1.2', 'TLSv1.3'])), v.maxLength(3)),
    ),
  }),
  // APISIX's if/then/else: a server certificate needs `key`, `cert` and exactly one of `sni`/`snis`.
  v.check(
    (s) => s.cert !== undefined && s.key !== undefined,
    (i) => `property "${(i.input as { cert?: unknown }).cert === undefined ? 'cert' : 'key'}" is required`,
  ),
  v.check(
    (s) => s.type !== 'server' || (s.sni !== undefined) !== (s.snis !== undefined),
    (i) =>
      (i.input as { sni?: unknown }).sni === undefined
        ? 'value should match only one schema, but matches none: a server certificate needs "sni" or "snis"'
        : 'value should match only one schema, but matches both: give "sni" or "snis", not both',
  ),
);

export type SslConf = v.InferOutput<typeof sslSchema>;

/** Checks a whole ssl object: the parsed value (defaults filled in), or APISIX's `invalid configuration: ...`. */
export function checkSsl(value: unknown): { ok: true; value: SslConf } | { ok: false; message: string } {
  const res = check(sslSchema, value);
  return res.ok ? res : { ok: false, message: `invalid configuration: ${res.message}` };
}

import * as v from 'valibot';
import { coldStartSchema } from '../upstream/retry.ts';
import { INTEGER } from './format.ts';
import {
  check,
  descSchema,
  durationSeconds,
  hostSchema,
  idSchema,
  labelsSchema,
  nameSchema,
  safeRecord,
  timeoutSchema,
  timestampSchema,
  unsupported,
} from './common.ts';

const nodeArrayItem = v.strictObject({
  host: hostSchema,
  port: v.optional(v.pipe(v.number(INTEGER), v.integer(), v.minValue(1), v.maxValue(65535))),
  weight: v.pipe(v.number(INTEGER), v.integer(), v.minValue(0)),
  priority: v.optional(v.pipe(v.number(INTEGER), v.integer())),
  metadata: v.optional(safeRecord(v.string(), v.unknown())),
});

/**
 * APISIX's `upstream.tls` (schema_def.lua): a client certificate for the TLS connection to the nodes, inline
 * (`client_cert` + `client_key`, the key encrypted at rest as an ssl's) or an `ssls` object of `type: client` by id.
 * `verify` is APISIX's kafka-only switch: accepted, not used (`ssl_verify` is the plugins' and is always on here).
 */
export const upstreamTlsSchema = v.pipe(
  v.strictObject({
    client_cert_id: v.optional(idSchema),
    client_cert: v.optional(v.pipe(v.string(), v.minLength(128), v.maxLength(64 * 1024))),
    client_key: v.optional(v.pipe(v.string(), v.minLength(64), v.maxLength(64 * 1024))),
    verify: v.optional(v.boolean()),
  }),
  v.check(
    (t) => (t.client_cert === undefined) === (t.client_key === undefined),
    (i) =>
      (i.input as { client_cert?: unknown }).client_cert === undefined
        ? 'property "client_cert" is required when "client_key" is set'
        : 'property "client_key" is required when "client_cert" is set',
  ),
  v.check(
    (t) => t.client_cert_id === undefined || t.client_cert === undefined,
    'property "client_cert_id" cannot be combined with "client_cert" and "client_key"',
  ),
);

const nodesMap = safeRecord(v.string(), v.pipe(v.number(INTEGER), v.integer(), v.minValue(0)));

export const SUPPORTED_BALANCERS = ['roundrobin'] as const;

/** The upstream object, as APISIX's `upstream_schema` (the parts fngate implements). */
export const upstreamSchema = v.strictObject({
  id: v.optional(idSchema),
  name: v.optional(nameSchema),
  desc: v.optional(descSchema),
  labels: v.optional(labelsSchema),
  create_time: v.optional(timestampSchema),
  update_time: v.optional(timestampSchema),
  nodes: v.union([nodesMap, v.array(nodeArrayItem)]),
  type: v.optional(
    v.pipe(
      v.string(),
      v.check(
        (t) => (SUPPORTED_BALANCERS as readonly string[]).includes(t),
        (i) => `balancer type "${String(i.input)}" is not supported by fngate (supported: ${SUPPORTED_BALANCERS.join(', ')})`,
      ),
    ),
  ),
  scheme: v.optional(v.picklist(['http', 'https'])),
  pass_host: v.optional(v.picklist(['pass', 'node', 'rewrite'])),
  upstream_host: v.optional(hostSchema),
  timeout: v.optional(timeoutSchema),
  retries: v.optional(v.pipe(v.number(INTEGER), v.integer(), v.minValue(0))),
  retry_timeout: v.optional(durationSeconds('non-negative')),
  /** fngate extension: retry while the upstream starts (src/core/upstream/retry.ts); durations in ms. */
  cold_start: v.optional(coldStartSchema),
  keepalive_pool: v.optional(
    v.strictObject({
      size: v.optional(v.pipe(v.number(INTEGER), v.integer(), v.minValue(1))),
      idle_timeout: v.optional(durationSeconds('non-negative')),
      requests: v.optional(v.pipe(v.number(INTEGER), v.integer(), v.minValue(1))),
    }),
  ),
  hash_on: v.optional(v.picklist(['vars', 'header', 'cookie', 'consumer', 'vars_combinations'])),
  key: v.optional(v.string()),
  checks: v.optional(unsupported('health checks are not implemented yet')),
  tls: v.optional(upstreamTlsSchema),
  service_name: v.optional(unsupported('service discovery is not implemented')),
  discovery_type: v.optional(unsupported('service discovery is not implemented')),
});

export type UpstreamConf = v.InferOutput<typeof upstreamSchema>;

export interface UpstreamNode {
  host: string;
  port: number;
  weight: number;
  priority: number;
}

/** Split `host:port` (IPv6 in brackets); port defaults from the scheme. Returns an error text on bad input. */
export function parseNodeKey(key: string, scheme: string): { host: string; port: number } | string {
  let host = key;
  let portText: string | undefined;
  if (key.startsWith('[')) {
    const end = key.indexOf(']');
    if (end < 0) return `invalid node address ${key}`;
    host = key.slice(0, end + 1);
    const rest = key.slice(end + 1);
    if (rest.startsWith(':')) portText = rest.slice(1);
    else if (rest !== '') return `invalid node address ${key}`;
  } else {
    const colon = key.indexOf(':');
    if (colon >= 0) {
      if (key.indexOf(':', colon + 1) >= 0) return `IPv6 address must be enclosed with '[' and ']'`;
      host = key.slice(0, colon);
      portText = key.slice(colon + 1);
    }
  }
  if (host === '' || host === '[]') return `invalid node address ${key}`;
  const defaultPort = scheme === 'https' ? 443 : 80;
  if (portText === undefined) return { host, port: defaultPort };
  const port = Number(portText);
  if (!/^\d+$/.test(portText) || port < 1 || port > 65535) return `invalid port ${portText}`;
  return { host, port };
}

/** The nodes of an upstream in array form, as the data plane uses them. */
export function normalizeNodes(conf: UpstreamConf): UpstreamNode[] | string {
  const scheme = conf.scheme ?? 'http';
  const out: UpstreamNode[] = [];
  if (Array.isArray(conf.nodes)) {
    for (const n of conf.nodes) {
      if (n.host.includes(':') && !n.host.startsWith('[')) return `IPv6 address must be enclosed with '[' and ']'`;
      out.push({ host: n.host, port: n.port ?? (scheme === 'https' ? 443 : 80), weight: n.weight, priority: n.priority ?? 0 });
    }
  } else {
    for (const [key, weight] of Object.entries(conf.nodes)) {
      const parsed = parseNodeKey(key, scheme);
      if (typeof parsed === 'string') return parsed;
      out.push({ ...parsed, weight, priority: 0 });
    }
  }
  return out;
}

/** Full check of an upstream object: schema, node addresses, pass_host rules. */
export function checkUpstream(input: unknown): { ok: true; value: UpstreamConf } | { ok: false; message: string } {
  const res = check(upstreamSchema, input);
  if (!res.ok) return res;
  const nodes = normalizeNodes(res.value);
  if (typeof nodes === 'string') return { ok: false, message: nodes };
  if (res.value.pass_host === 'rewrite' && !res.value.upstream_host) {
    return { ok: false, message: '`upstream_host` can\'t be empty when `pass_host` is `rewrite`' };
  }
  return res;
}

import * as v from 'valibot';
import { Observability, STATUS_LABELS, LATENCY_LABELS } from '../observability/prometheus.ts';
import type { PluginDefinition } from './types.ts';

const schema = v.strictObject({
  /** Label routes and services by `name` instead of id (falls back to the id when unnamed). */
  prefer_name: v.optional(v.boolean(), false),
});

type Conf = v.InferOutput<typeof schema>;

const labelList = (names: readonly string[]) => v.optional(v.array(v.picklist(names)));

/**
 * `plugin_metadata/prometheus` (APISIX 3.18 #13202): label values exported as "". The structural labels `code`
 * (http_status) and `type` (latency, bandwidth) cannot be disabled.
 */
const metadataSchema = v.strictObject({
  disabled_labels: v.optional(
    v.strictObject({
      http_status: labelList(STATUS_LABELS.filter((l) => l !== 'code')),
      http_latency: labelList(LATENCY_LABELS.filter((l) => l !== 'type')),
      bandwidth: labelList(LATENCY_LABELS.filter((l) => l !== 'type')),
    }),
  ),
});

/** Used when the gateway gave the plugin no metrics of its own (a plugin made outside a gateway, in a test). */
let fallback: Observability | undefined;

/**
 * `prometheus` (APISIX priority 500, log phase, `run_policy: prefer_route`): counts every answer of the route
 * (or, as a global rule, of every request, 404s included) into APISIX's `apisix_http_status`,
 * `apisix_http_latency` and `apisix_bandwidth`; the runtimes export them on PROMETHEUS_PORT.
 */
export const prometheus: PluginDefinition<Conf> = {
  name: 'prometheus',
  priority: 500,
  version: 0.2,
  schema: schema as v.GenericSchema<unknown, Conf>,
  metadataSchema,
  runPolicy: 'prefer_route',
  create(conf, env) {
    if (!env.obs && !fallback) fallback = new Observability();
    const http = (env.obs ?? fallback!).http;
    const preferName = conf.prefer_name;
    return {
      log(ctx) {
        http.record(ctx, preferName);
      },
    };
  },
};

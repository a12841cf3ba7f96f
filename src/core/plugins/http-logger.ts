import * as v from 'valibot';
import { BatchProcessor, batchFields, DEFAULT_MAX_PENDING } from '../observability/batch.ts';
import { INTEGER } from '../schema/format.ts';
import { type LogConf, logFields, logMetadataFields } from './logger-common.ts';
import { loggerInstance } from './logger-common.ts';
import type { PluginDefinition } from './types.ts';

const schema = v.strictObject({
  uri: v.pipe(
    v.string(),
    v.regex(/^[^/]+:\/\/([\da-zA-Z.-]+|\[[\da-fA-F:]+\])(:\d+)?/, 'uri must be an absolute http(s) URL'),
    v.check((u) => /^https?:\/\//i.test(u), 'uri: only http:// and https:// endpoints are supported'),
  ),
  auth_header: v.optional(v.string()),
  timeout: v.optional(v.pipe(v.number(INTEGER), v.integer(), v.minValue(1), v.maxValue(3600)), 3),
  concat_method: v.optional(v.picklist(['json', 'new_line']), 'json'),
  ssl_verify: v.optional(v.boolean(), false),
  ...logFields,
  ...batchFields('http logger'),
});

type Conf = v.InferOutput<typeof schema>;

const metadataSchema = v.strictObject({
  ...logMetadataFields,
  max_pending_entries: v.optional(v.pipe(v.number(INTEGER), v.integer(), v.minValue(1), v.maxValue(10_000_000)), DEFAULT_MAX_PENDING),
});

/**
 * `http-logger` (APISIX priority 410): POSTs log entries to `uri` in batches (the batch processor of
 * src/core/observability/batch.ts). `batch_max_size: 1` sends one JSON object, else a JSON array (`json`) or objects
 * joined by newlines (`new_line`). A status ≥ 400 or a network error is a failure, retried as configured. The send
 * happens after the answer; on Workers it is kept alive with `waitUntil`.
 */
export const httpLogger: PluginDefinition<Conf> = {
  name: 'http-logger',
  priority: 410,
  version: 0.1,
  schema: schema as v.GenericSchema<unknown, Conf>,
  metadataSchema,
  secretFields: ['auth_header'],
  create(conf, env) {
    const url = new URL(conf.uri);
    const headers: Record<string, string> = {
      'content-type': conf.concat_method === 'json' ? 'application/json' : 'text/plain',
    };
    if (conf.auth_header) headers.authorization = conf.auth_header;
    const send = async (entries: Record<string, unknown>[]) => {
      let body: string;
      if (conf.batch_max_size === 1 && entries.length === 1) body = JSON.stringify(entries[0]);
      else if (conf.concat_method === 'json') body = JSON.stringify(entries);
      else body = entries.map((e) => JSON.stringify(e)).join('\n');
      const res = await fetch(url, {
        method: 'POST',
        headers,
        body,
        signal: AbortSignal.timeout(conf.timeout * 1000),
      });
      await res.body?.cancel().catch(() => {});
      if (res.status >= 400) throw new Error(`${conf.uri} answered ${res.status}`);
    };
    const processor = new BatchProcessor<Record<string, unknown>>(conf, send, env.logger);
    return loggerInstance(
      'http-logger',
      conf as LogConf,
      env,
      (entry, ctx) => {
        const md = ctx.metadata.get('http-logger');
        processor.maxPending = (md?.max_pending_entries as number | undefined) ?? DEFAULT_MAX_PENDING;
        const done = processor.push(entry);
        if (done && ctx.waitUntil) ctx.waitUntil(done);
      },
      { noRouteId: 'no-matched' },
    );
  },
};

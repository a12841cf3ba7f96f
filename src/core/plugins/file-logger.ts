import * as v from 'valibot';
import { compileExpr } from '../expr.ts';
import { exprSchema } from '../schema/expr.ts';
import { type LogConf, logFields, logMetadataFields, loggerInstance } from './logger-common.ts';
import type { PluginDefinition } from './types.ts';

const pathSchema = v.pipe(v.string(), v.minLength(1), v.maxLength(4096));

const schema = v.strictObject({
  path: v.optional(pathSchema),
  match: v.optional(v.pipe(exprSchema, v.maxLength(20))),
  ...logFields,
});

type Conf = v.InferOutput<typeof schema>;

const metadataSchema = v.strictObject({
  ...logMetadataFields,
  path: v.optional(pathSchema),
});

/**
 * `file-logger` (APISIX priority 399): appends each request's log entry as one JSON line to `path` (from the conf,
 * else from plugin_metadata), when `match` (if any) holds. No batching, as APISIX. The runtime appends (Node, Bun:
 * a write stream per file; Deno: a file opened for append, needs write permission for the path); Workers have no
 * file system, so a route with it cannot be served there.
 */
export const fileLogger: PluginDefinition<Conf> = {
  name: 'file-logger',
  priority: 399,
  version: 0.1,
  schema: schema as v.GenericSchema<unknown, Conf>,
  metadataSchema,
  create(conf, env) {
    const files = env.obs?.files;
    if (!files) throw new Error('file-logger needs a file system, which this runtime does not have');
    const compiled = conf.match === undefined ? undefined : compileExpr(conf.match);
    const filter = compiled?.ok ? compiled.expr : undefined;
    let warned = false;
    return loggerInstance(
      'file-logger',
      conf as LogConf,
      env,
      (entry, ctx) => {
        const path = conf.path ?? (ctx.metadata.get('file-logger')?.path as string | undefined);
        if (!path) {
          if (!warned) env.logger.error('file-logger: property "path" is not set in either the plugin conf or the metadata');
          warned = true;
          return;
        }
        files.append(path, `${JSON.stringify(entry)}\n`);
      },
      { filter },
    );
  },
};

import * as v from 'valibot';
import type { HeaderList } from '../upstream/headers.ts';
import { type ServerlessConf, serverlessEntries, serverlessForwarder } from './serverless.ts';
import type { PluginDefinition } from './types.ts';

const schema = v.strictObject({
  ...serverlessEntries,
  authorization: v.optional(
    v.strictObject({
      apikey: v.optional(v.string()),
      clientid: v.optional(v.string()),
    }),
  ),
});

/** `plugin_metadata/azure-functions`: the master keys used by routes whose conf has no `authorization`. */
const metadataSchema = v.strictObject({
  master_apikey: v.optional(v.string(), ''),
  master_clientid: v.optional(v.string(), ''),
});

type Conf = ServerlessConf & { authorization?: { apikey?: string; clientid?: string } };

/** The two headers, leaving out an unset or empty value (APISIX's metadata defaults are `""`). */
function keyHeaders(apikey: unknown, clientid: unknown): HeaderList {
  const out: HeaderList = [];
  if (typeof apikey === 'string' && apikey !== '') out.push(['x-functions-key', apikey]);
  if (typeof clientid === 'string' && clientid !== '') out.push(['x-functions-clientid', clientid]);
  return out;
}

/**
 * `azure-functions`: forwards to an Azure Functions HTTP trigger. Only when the client sent neither
 * `x-functions-key` nor `x-functions-clientid`: the route's `authorization.apikey`/`clientid` become those
 * headers; without `authorization`, the `master_apikey`/`master_clientid` of `plugin_metadata/azure-functions`.
 */
export const azureFunctions: PluginDefinition<Conf> = {
  name: 'azure-functions',
  priority: -1900,
  version: 0.1,
  schema: schema as v.GenericSchema<unknown, Conf>,
  metadataSchema,
  secretFields: ['authorization.apikey'],
  // APISIX's metadata_schema.encrypt_fields: the master key is stored encrypted, as a route's `apikey`.
  metadataSecretFields: ['master_apikey'],
  create(conf) {
    const own = conf.authorization ? keyHeaders(conf.authorization.apikey, conf.authorization.clientid) : undefined;
    return {
      proxy: serverlessForwarder(conf, {
        label: 'function',
        prepare(ctx, call) {
          if (ctx.header('x-functions-key') !== undefined || ctx.header('x-functions-clientid') !== undefined) return undefined;
          if (own) {
            call.headers.push(...own);
            return undefined;
          }
          const meta = ctx.metadata.get('azure-functions');
          if (meta) call.headers.push(...keyHeaders(meta.master_apikey, meta.master_clientid));
          return undefined;
        },
      }),
    };
  },
};

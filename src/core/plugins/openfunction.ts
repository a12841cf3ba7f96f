import * as v from 'valibot';
import { textToBase64 } from '../base64.ts';
import { type ServerlessConf, serverlessEntries, serverlessForwarder } from './serverless.ts';
import type { PluginDefinition } from './types.ts';

const schema = v.strictObject({
  ...serverlessEntries,
  authorization: v.optional(
    v.strictObject({
      service_token: v.optional(
        v.pipe(
          v.string(),
          v.check((s) => s.includes(':'), 'expected "user:password" (the Basic auth credentials)'),
        ),
      ),
    }),
  ),
});

type Conf = ServerlessConf & { authorization?: { service_token?: string } };

/**
 * `openfunction`: forwards the route's requests to a CNCF OpenFunction (Knative) function URL.
 * With `authorization.service_token`, the function receives `Authorization: Basic base64(token)`
 * (replacing the client's); without it the client's own Authorization header passes through.
 */
export const openfunction: PluginDefinition<Conf> = {
  name: 'openfunction',
  priority: -1902,
  version: 0.1,
  schema: schema as v.GenericSchema<unknown, Conf>,
  secretFields: ['authorization.service_token'],
  create(conf) {
    const token = conf.authorization?.service_token;
    // Computed once per config snapshot, not per request.
    return {
      proxy: serverlessForwarder(conf, {
        label: 'function',
        headers: token === undefined ? undefined : [['authorization', `Basic ${textToBase64(token)}`]],
      }),
    };
  },
};

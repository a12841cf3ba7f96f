import * as v from 'valibot';
import { pluginExit } from '../errors.ts';
import { anonymousSchema, attachConsumer, authFailure, consumerByKey, realmSchema } from './auth.ts';
import type { PluginDefinition } from './types.ts';

const schema = v.strictObject({
  header: v.optional(v.string(), 'apikey'),
  query: v.optional(v.string(), 'apikey'),
  hide_credentials: v.optional(v.boolean(), false),
  realm: v.optional(realmSchema, 'key'),
  anonymous_consumer: v.optional(anonymousSchema),
});

type Conf = v.InferOutput<typeof schema>;

const consumerSchema = v.strictObject({ key: v.string() });

/**
 * `key-auth` (APISIX apisix/plugins/key-auth.lua): the client's key, from the `header` (default `apikey`) or, only
 * when the header is absent, the `query` argument, must be a consumer's or credential's `key`.
 */
export const keyAuth: PluginDefinition<Conf> = {
  name: 'key-auth',
  priority: 2500,
  version: 0.1,
  type: 'auth',
  schema,
  consumerSchema,
  consumerKey: 'key',
  secretFields: ['key'],
  create(conf) {
    const header = conf.header.toLowerCase();
    const challenge = { 'www-authenticate': `apikey realm="${conf.realm}"` };
    const missing = () => pluginExit(401, { message: 'Missing API key in request' }, challenge);
    const invalid = () => pluginExit(401, { message: 'Invalid API key in request' }, challenge);
    return {
      rewrite(ctx) {
        let key = ctx.header(header);
        const fromHeader = key !== undefined;
        if (!fromHeader) key = ctx.arg(conf.query);
        const found = key === undefined ? undefined : consumerByKey(ctx, 'key-auth', 'key', key);
        if (!found) {
          // APISIX: with an anonymous consumer and hide_credentials, a bad key is stripped from header and query.
          if (conf.anonymous_consumer !== undefined && conf.hide_credentials) {
            if (ctx.header(header) !== undefined) ctx.setHeader(header, null);
            if (ctx.arg(conf.query) !== undefined) ctx.upstream.query = withoutArg(ctx.upstream.query ?? ctx.query, conf.query);
          }
          return authFailure(ctx, conf.anonymous_consumer, key === undefined ? missing : invalid, challenge);
        }
        if (conf.hide_credentials) {
          if (fromHeader) ctx.setHeader(header, null);
          else ctx.upstream.query = withoutArg(ctx.upstream.query ?? ctx.query, conf.query);
        }
        attachConsumer(ctx, found.consumer);
        return undefined;
      },
    };
  },
};

/** `query` without the argument `name` (every occurrence), the other arguments byte for byte. */
export function withoutArg(query: string, name: string): string {
  return query
    .split('&')
    .filter((part) => {
      const eq = part.indexOf('=');
      const raw = eq < 0 ? part : part.slice(0, eq);
      // Most names are plain (no escapes): compared as they are, without decoding.
      if (!raw.includes('%') && !raw.includes('+')) return raw !== name;
      try {
        return decodeURIComponent(raw.replaceAll('+', ' ')) !== name;
      } catch {
        return true;
      }
    })
    .join('&');
}

import { openfunction } from './openfunction.ts';
import type { AnyPlugin } from './types.ts';

/** Every plugin fngate ships, by name. */
export const BUILTIN_PLUGINS: readonly AnyPlugin[] = [openfunction];

/**
 * Plugin names that guard access in APISIX. A stored route that names one of these while fngate does not
 * implement it is answered with 503 instead of being served unprotected.
 */
export const SECURITY_PLUGIN_NAMES = new Set([
  'basic-auth', 'key-auth', 'jwt-auth', 'hmac-auth', 'ldap-auth', 'openid-connect', 'authz-keycloak', 'authz-casbin',
  'authz-casdoor', 'wolf-rbac', 'forward-auth', 'opa', 'multi-auth', 'cas-auth', 'ip-restriction', 'ua-restriction',
  'referer-restriction', 'uri-blocker', 'consumer-restriction', 'csrf', 'limit-req', 'limit-conn', 'limit-count',
  'api-breaker', 'request-validation', 'chaitin-waf', 'jwe-decrypt',
]);

export type PluginRegistry = ReadonlyMap<string, AnyPlugin>;

export function pluginRegistry(plugins: readonly AnyPlugin[] = BUILTIN_PLUGINS): PluginRegistry {
  return new Map(plugins.map((p) => [p.name, p]));
}

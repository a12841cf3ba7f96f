/**
 * The Admin API's read-only endpoints about plugins and schemas: `/plugins/list`, `/plugins/<name>`,
 * `/plugins/reload`, `/schema/<kind>` and `/schema/plugins/<name>`, all generated from the valibot schemas that
 * check the writes, so the two cannot differ.
 */
import { toJsonSchema } from '@valibot/to-json-schema';
import type * as v from 'valibot';
import { metaSchema } from '../plugins/check.ts';
import type { PluginRegistry } from '../plugins/index.ts';
import { adminError, json, text } from './json.ts';
import type { ResourceKind } from './resources.ts';

const jsonSchemaOf = (schema: v.GenericSchema) => toJsonSchema(schema, { errorMode: 'ignore' }) as Record<string, unknown>;

/**
 * JSON schema of the `_meta` a plugin conf may carry in fngate, generated from the valibot `metaSchema` that
 * checks it (plugins/check.ts). Nested in each plugin schema, hence without `$schema`.
 */
const META_JSON_SCHEMA = (() => {
  const { $schema: _, ...schema } = jsonSchemaOf(metaSchema);
  return schema;
})();

export type SchemaEndpoints = {
  plugins(method: string, name: string | undefined, sub: string[], query: URLSearchParams): Response;
  schema(method: string, name: string | undefined, sub: string[], query: URLSearchParams): Response;
};

export function schemaEndpoints(plugins: PluginRegistry, kinds: Iterable<ResourceKind>): SchemaEndpoints {
  const schemas = new Map<string, unknown>();
  for (const k of kinds) if (k.schemaName) schemas.set(k.schemaName, jsonSchemaOf(k.schema));

  const pluginsByPriority = [...plugins.values()].sort((a, b) => b.priority - a.priority);
  const pluginSchemas = new Map(
    pluginsByPriority.map((p) => {
      const schema = jsonSchemaOf(p.schema);
      // APISIX injects `_meta` into every plugin schema; fngate accepts the parts it honours (plugins/check.ts).
      const properties = { ...(schema.properties as Record<string, unknown> | undefined), _meta: META_JSON_SCHEMA };
      return [p.name, { ...schema, properties, $comment: 'this is a mark for our injected plugin schema' }];
    }),
  );

  /**
   * APISIX's `?subsystem=`: `http` (the default) or `stream`. fngate has no stream subsystem, so it has no
   * stream plugins: the list is empty and every name is unknown there. `?schema_type=consumer` answers the
   * plugin's consumer schema, `metadata` (an fngate addition) its metadata schema; 400 `not found schema` when
   * it has none, as APISIX.
   */
  function pluginsEndpoint(method: string, name: string | undefined, sub: string[], query: URLSearchParams): Response {
    if (name === 'reload') {
      if (method !== 'PUT') return adminError(405, `please use PUT method to reload the plugins, ${method} method is not allowed.`);
      return text(200, 'done');
    }
    if (method !== 'GET' || sub.length) return adminError(404, 'not found');
    const subsystem = query.get('subsystem') ?? 'http';
    const known = subsystem === 'http' || subsystem === 'stream';
    if (name === 'list') {
      if (!known) return text(400, 'invalid subsystem passed');
      return json(200, subsystem === 'http' ? pluginsByPriority.map((p) => p.name) : []);
    }
    if (name === undefined) return json(200, Object.fromEntries(pluginsByPriority.map((p) => [p.name, { priority: p.priority, version: p.version }])));
    if (!known) return adminError(400, `unsupported subsystem: ${subsystem}`);
    const plugin = subsystem === 'http' ? plugins.get(name) : undefined;
    if (!plugin) return adminError(404, `plugin not found in subsystem ${subsystem}`);
    const type = query.get('schema_type');
    if (type === 'consumer' || type === 'metadata') {
      const schema = type === 'consumer' ? plugin.consumerSchema : plugin.metadataSchema;
      return schema ? json(200, jsonSchemaOf(schema)) : adminError(400, 'not found schema');
    }
    return json(200, pluginSchemas.get(name));
  }

  function schemaEndpoint(method: string, name: string | undefined, sub: string[], query: URLSearchParams): Response {
    if (method !== 'GET') return adminError(404, 'not found');
    if (name === 'plugins' && sub.length === 1) return pluginsEndpoint('GET', sub[0], [], query);
    const schema = name === undefined ? undefined : schemas.get(name);
    return schema ? json(200, schema) : adminError(400, `not found schema: ${name ?? ''}`);
  }

  return { plugins: pluginsEndpoint, schema: schemaEndpoint };
}

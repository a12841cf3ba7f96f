/** Global rules and plugin metadata → what every request runs with (see config.ts). */
import * as v from 'valibot';
import type { StoredItem } from '../../store/types.ts';
import { errorResponse } from '../errors.ts';
import type { PluginRegistry } from '../plugins/index.ts';
import { type CompiledPlugin, EMPTY_LIST, type PluginList, pluginList } from '../plugins/pipeline.ts';
import { isPlainObject } from '../schema/common.ts';
import type { PluginCache } from './plugins.ts';

/**
 * APISIX's global rules (`<prefix>/global_rules/<id>`) run their plugins on every request, matched or not, merged
 * into one list. A plugin named by two rules is run by neither (APISIX drops it, and its Admin API refuses the
 * second); a plugin fngate does not have fails closed: every request answers 503 until the rule is removed.
 */
export function compileGlobalRules(
  rules: Map<string, StoredItem>,
  plugins: PluginCache,
  prefix: string,
  problems: string[],
): PluginList {
  if (rules.size === 0) return EMPTY_LIST;
  const byName = new Map<string, { rule: string; plugin: CompiledPlugin }>();
  const dropped = new Set<string>();
  const blocking: string[] = [];
  for (const [id, item] of rules) {
    const set = plugins.compile(`${prefix}/global_rules/${id}`, `global rule ${id}`, item.value.plugins, problems);
    if (set.error) {
      problems.push(`${set.error}; every request answers 503 rather than run without the rule`);
      blocking.push(`global rule ${id}`);
      continue;
    }
    if (set.blocked) {
      blocking.push(set.blocked);
      continue;
    }
    for (const p of set.plugins) {
      const seen = byName.get(p.name);
      if (seen) {
        problems.push(`global rules ${seen.rule} and ${id} both have plugin ${p.name}; it is not run (as APISIX)`);
        dropped.add(p.name);
      } else byName.set(p.name, { rule: id, plugin: p });
    }
  }
  if (blocking.length) {
    const msg = `this gateway cannot apply the configured global rules (${blocking.join('; ')}), so it serves nothing rather than serve routes without them`;
    return pluginList([
      {
        name: '(global rules)',
        priority: Number.MAX_SAFE_INTEGER,
        instance: { rewrite: () => errorResponse(503, msg) },
        auth: false,
        preferRoute: false,
      },
    ]);
  }
  return pluginList([...byName.values()].filter(({ plugin }) => !dropped.has(plugin.name)).map(({ plugin }) => plugin));
}

/** `plugin_metadata/<name>` items, validated with their plugin's metadata schema (defaults applied). */
export function compileMetadata(
  items: Map<string, StoredItem>,
  registry: PluginRegistry,
  problems: string[],
): Map<string, Record<string, unknown>> {
  const out = new Map<string, Record<string, unknown>>();
  for (const [name, item] of items) {
    const plugin = registry.get(name);
    if (!plugin?.metadataSchema) continue;
    const { id: _, create_time: _c, update_time: _u, ...rest } = item.value;
    const parsed = v.safeParse(plugin.metadataSchema, rest);
    if (!parsed.success) {
      problems.push(`plugin metadata ${name}: ${parsed.issues[0].message}; the plugin runs without it`);
      continue;
    }
    if (isPlainObject(parsed.output)) out.set(name, parsed.output);
  }
  return out;
}

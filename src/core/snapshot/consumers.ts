/**
 * Consumers, their credentials and consumer groups, resolved at config time (APISIX consumer.lua): what an auth
 * plugin looks a client up in, and the plugins a consumer brings to the routes it calls (its group's, overridden
 * by its own: Consumer > Consumer Group > Route).
 */
import * as v from 'valibot';
import type { StoredItem } from '../../store/types.ts';
import type { ConsumerEntry, ConsumerIndex, ConsumerInfo } from '../context.ts';
import { pluginExit } from '../errors.ts';
import type { PluginRegistry } from '../plugins/index.ts';
import type { CompiledPlugin } from '../plugins/pipeline.ts';
import { isPlainObject } from '../schema/common.ts';
import type { PluginCache } from './plugins.ts';

const EMPTY: readonly ConsumerEntry[] = Object.freeze([]);

/** A plugin that ends the request with 503: a consumer whose group does not exist (APISIX answers 503 then). */
function missingGroup(groupId: string): CompiledPlugin {
  return {
    name: `(consumer group ${groupId})`,
    priority: Number.MAX_SAFE_INTEGER,
    instance: { rewrite: () => pluginExit(503) },
    auth: false,
    preferRoute: false,
  };
}

export interface ConsumerResources {
  consumers: Map<string, StoredItem>;
  /** `/consumers/<username>/credentials/<id>` items, by username. */
  credentials: Map<string, { id: string; item: StoredItem }[]>;
  groups: Map<string, StoredItem>;
}

/**
 * Builds the consumer index of a snapshot. Auth confs are validated with the plugin's consumer schema (defaults
 * applied); a consumer or credential whose conf is invalid is left out (it cannot authenticate), with a problem.
 */
export function buildConsumerIndex(
  res: ConsumerResources,
  registry: PluginRegistry,
  cache: PluginCache,
  prefix: string,
  problems: string[],
): ConsumerIndex {
  const byPlugin = new Map<string, ConsumerEntry[]>();
  const byName = new Map<string, ConsumerInfo>();
  const groupPlugins = new Map<string, CompiledPlugin[] | null>();
  const pluginsOfGroup = (id: string): CompiledPlugin[] | null => {
    let list = groupPlugins.get(id);
    if (list !== undefined) return list;
    const item = res.groups.get(id);
    if (!item) list = null;
    else {
      const set = cache.compile(
        `${prefix}/consumer_groups/${id}`,
        `consumer group ${id}`,
        item.value.plugins,
        problems,
        true,
      );
      list = set.error || set.blocked ? [missingGroupOr(set.error ?? set.blocked!)] : set.plugins;
    }
    groupPlugins.set(id, list);
    return list;
  };
  const addEntry = (plugin: string, entry: ConsumerEntry) => {
    const list = byPlugin.get(plugin);
    if (list) list.push(entry);
    else byPlugin.set(plugin, [entry]);
  };
  const authConfs = (owner: string, plugins: unknown): [string, Record<string, unknown>][] | string => {
    if (!isPlainObject(plugins)) return [];
    const out: [string, Record<string, unknown>][] = [];
    for (const [name, conf] of Object.entries(plugins)) {
      const plugin = registry.get(name);
      if (plugin?.type !== 'auth' || !isPlainObject(conf)) continue;
      if (isPlainObject(conf._meta) && conf._meta.disable === true) continue;
      const { _meta, ...rest } = conf;
      const parsed = v.safeParse(plugin.consumerSchema ?? plugin.schema, rest);
      if (!parsed.success) return `${owner}: plugin ${name}: ${parsed.issues[0].message}`;
      out.push([name, parsed.output as Record<string, unknown>]);
    }
    return out;
  };

  for (const [username, item] of res.consumers) {
    const value = item.value;
    const groupId = value.group_id === undefined ? undefined : String(value.group_id);
    const own = cache.compile(`${prefix}/consumers/${username}`, `consumer ${username}`, value.plugins, problems, true);
    let plugins: CompiledPlugin[];
    if (own.error || own.blocked) plugins = [missingGroupOr(own.error ?? own.blocked!)];
    else {
      const group = groupId === undefined ? [] : pluginsOfGroup(groupId);
      if (group === null) {
        problems.push(`consumer ${username}: consumer group ${groupId} does not exist; its requests answer 503`);
        plugins = [missingGroup(groupId!)];
      } else if (group.length === 0) plugins = own.plugins;
      else {
        const merged = new Map(group.map((p) => [p.name, p]));
        for (const p of own.plugins) merged.set(p.name, p);
        plugins = [...merged.values()];
      }
    }
    const labels = isPlainObject(value.labels) ? (value.labels as Record<string, string>) : undefined;
    const consumer: ConsumerInfo = { username, groupId, labels, plugins };
    byName.set(username, consumer);
    const confs = authConfs(`consumer ${username}`, value.plugins);
    if (typeof confs === 'string') problems.push(`${confs}; the consumer cannot authenticate with it`);
    else for (const [name, conf] of confs) addEntry(name, { consumer, conf });
    for (const { id, item: cred } of res.credentials.get(username) ?? []) {
      const credConfs = authConfs(`credential ${id} of consumer ${username}`, cred.value.plugins);
      if (typeof credConfs === 'string') {
        problems.push(`${credConfs}; it cannot authenticate`);
        continue;
      }
      const viaCredential: ConsumerInfo = { ...consumer, credentialId: id };
      for (const [name, conf] of credConfs) addEntry(name, { consumer: viaCredential, conf });
    }
  }
  return {
    forPlugin: (name) => byPlugin.get(name) ?? EMPTY,
    byName: (username) => byName.get(username),
  };
}

/** A plugin that ends the request with 503 because a consumer's or group's plugins cannot be run. */
function missingGroupOr(reason: string): CompiledPlugin {
  return {
    name: '(consumer plugins)',
    priority: Number.MAX_SAFE_INTEGER,
    instance: { rewrite: () => pluginExit(503, { error_msg: reason }) },
    auth: false,
    preferRoute: false,
  };
}

/** The resources of a store state, grouped by kind in one pass, and the fingerprint of a stored document. */
import type { StoredItem, StoreState } from '../../store/types.ts';
import type { ConsumerResources } from './consumers.ts';

/** Items directly under `<prefix>/<dir>/`, as id -> item (nested keys such as credentials are skipped). */
export function itemsOf(state: StoreState, prefix: string, dir: string): Map<string, StoredItem> {
  const base = `${prefix}/${dir}/`;
  const out = new Map<string, StoredItem>();
  for (const item of state.items) {
    if (!item.key.startsWith(base)) continue;
    const id = item.key.slice(base.length);
    if (id === '' || id.includes('/')) continue;
    out.set(id, item);
  }
  return out;
}

/** The resources of a state, by kind, in one pass. */
export interface Resources extends ConsumerResources {
  routes: Map<string, StoredItem>;
  upstreams: Map<string, StoredItem>;
  services: Map<string, StoredItem>;
  pluginConfigs: Map<string, StoredItem>;
  globalRules: Map<string, StoredItem>;
  metadata: Map<string, StoredItem>;
}

const CREDENTIALS = '/credentials/';

export function collect(state: StoreState, prefix: string): Resources {
  const r: Resources = {
    routes: new Map(),
    upstreams: new Map(),
    services: new Map(),
    pluginConfigs: new Map(),
    globalRules: new Map(),
    metadata: new Map(),
    consumers: new Map(),
    credentials: new Map(),
    groups: new Map(),
  };
  const dirs: Record<string, Map<string, StoredItem>> = {
    routes: r.routes,
    upstreams: r.upstreams,
    services: r.services,
    plugin_configs: r.pluginConfigs,
    global_rules: r.globalRules,
    plugin_metadata: r.metadata,
    consumers: r.consumers,
    consumer_groups: r.groups,
  };
  const base = `${prefix}/`;
  for (const item of state.items) {
    if (!item.key.startsWith(base)) continue;
    const rest = item.key.slice(base.length);
    const slash = rest.indexOf('/');
    if (slash <= 0) continue;
    const map = Object.hasOwn(dirs, rest.slice(0, slash)) ? dirs[rest.slice(0, slash)] : undefined;
    if (!map) continue;
    const id = rest.slice(slash + 1);
    if (id === '') continue;
    if (!id.includes('/')) {
      map.set(id, item);
      continue;
    }
    // `consumers/<username>/credentials/<id>`
    const c = id.indexOf(CREDENTIALS);
    if (map !== r.consumers || c <= 0) continue;
    const username = id.slice(0, c);
    const credId = id.slice(c + CREDENTIALS.length);
    if (credId === '' || credId.includes('/')) continue;
    const list = r.credentials.get(username);
    if (list) list.push({ id: credId, item });
    else r.credentials.set(username, [{ id: credId, item }]);
  }
  return r;
}

/**
 * The JSON text of a stored document, the compiler's fingerprint of it. Stores that share deep-frozen values
 * (memory, file) hand out the same object while a document is unchanged, so its text is remembered per object;
 * a value that is not frozen could change in place and is serialized every time.
 */
const textCache = new WeakMap<object, string>();
export function textOf(value: Record<string, unknown>): string {
  if (!Object.isFrozen(value)) return JSON.stringify(value);
  let text = textCache.get(value);
  if (text === undefined) {
    text = JSON.stringify(value);
    textCache.set(value, text);
  }
  return text;
}

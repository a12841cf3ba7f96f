/**
 * APISIX standalone (declarative) config, runtime-agnostic (no node:*): {@link parseStandalone} turns the text of
 * an `apisix.yaml` / `apisix.json` into a {@link StoreState}, and {@link StandaloneStore} serves it read-only
 * through the {@link ConfigStore} contract, re-reading its {@link StandaloneSource} on change.
 *
 * File format (APISIX `core/config_yaml.lua`):
 * - top-level keys are resource directories (`routes`, `upstreams`, `services`, `consumers`, `plugin_configs`,
 *   `global_rules`, `plugin_metadata`, `ssls`, ...), each a list of the objects the Admin API stores;
 * - an item's id is `item.id`, else `item.username` for consumers, else `arr_<1-based index>`; it is stringified
 *   and written back into `value.id`; `plugin_metadata` items carry the plugin name as `id`;
 * - an optional per-item `modifiedIndex` becomes the item's index (and is removed from the value);
 * - YAML must end with `#END` (checked on the last 10 bytes) and gets `${{VAR}}` / `${{VAR:=default}}`
 *   substituted in the raw text before parsing; JSON has no end flag and gets the substitution in string values
 *   after parsing.
 * - the single-key `plugins` list (APISIX's hot plugin list) is kept as `<prefix>/plugins` with value
 *   `{ plugins: [...] }` (store values are objects); `<dir>_conf_version` numbers are ignored.
 */
import { compareKeys, copyItem, isPlainObject, normalizePrefix, StoreTable, WatchHub } from './memory.ts';
import type { ConfigStore, PutOptions, StoredItem, StoreState } from './types.ts';
import { StoreError } from './types.ts';

export type StandaloneFormat = 'yaml' | 'json';

export interface ParseStandaloneOptions {
  format: StandaloneFormat;
  /** Environment for `${{VAR}}` substitution. */
  env: Record<string, string | undefined>;
  /** Key prefix, `/apisix` by default. */
  prefix?: string;
  /** Index of items without `modifiedIndex`, and the least revision of the state. Default 1. */
  version?: number;
  /** Names the config in error messages, e.g. `CONFIG_FILE /etc/fngate/apisix.yaml`. */
  source?: string;
}

type YamlParse = (text: string) => unknown;
let parseYaml: YamlParse | undefined;

/**
 * Loads the YAML parser, which {@link parseStandalone} needs for `format: 'yaml'` ({@link StandaloneStore.open}
 * calls it). Loaded on first use, not at start: a gateway whose config is JSON, a file store, Deno KV or etcd
 * never pays for it (idle RSS with a JSON CONFIG_FILE: Node 69-70 -> 66 MiB, Bun 47 -> 45-46 MiB).
 */
export async function loadYamlParser(): Promise<void> {
  parseYaml ??= (await import('yaml')).parse as YamlParse;
}

/** A write was refused because the config comes from a file or variable (standalone mode). Admin API: 400. */
export class ReadOnlyStoreError extends StoreError {
  override name = 'ReadOnlyStoreError';
}

const END_FLAG = /#END\s*$/;
const ENV_REF = /\$\{\{(.*?)\}\}/g;
const ENV_NAME = /^\w+$/;
const DIR_NAME = /^[A-Za-z0-9_]+$/;

/** Does the text end with APISIX's `#END` flag? Checked on the last 10 bytes, as APISIX does. */
export function hasEndFlag(text: string): boolean {
  const tail = new TextEncoder().encode(text.slice(-10));
  return END_FLAG.test(new TextDecoder().decode(tail.subarray(Math.max(0, tail.length - 10))));
}

/**
 * Replace `${{VAR}}` and `${{VAR:=default}}` (spaces allowed inside the braces, the default is trimmed) as APISIX's
 * `cli/file.lua` does. An unset variable without default throws; an empty variable is used as is.
 */
export function substituteEnv(text: string, env: Record<string, string | undefined>, where = 'the config'): string {
  if (!text.includes('${{')) return text;
  return text.replace(ENV_REF, (whole, inner: string) => {
    const body = inner.trim();
    const sep = body.indexOf(':=');
    const name = (sep === -1 ? body : body.slice(0, sep)).trim();
    if (!ENV_NAME.test(name)) {
      throw new Error(`failed to handle configuration in ${where}: invalid environment variable reference ${whole}`);
    }
    const value = env[name] ?? (sep === -1 ? undefined : body.slice(sep + 2).trim());
    if (value === undefined) {
      throw new Error(`failed to handle configuration in ${where}: can't find environment variable ${name}`);
    }
    return value;
  });
}

function substituteJson(v: unknown, env: Record<string, string | undefined>, where: string): unknown {
  if (typeof v === 'string') return substituteEnv(v, env, where);
  if (Array.isArray(v)) return v.map((x) => substituteJson(x, env, where));
  if (isPlainObject(v)) {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = substituteJson(x, env, where);
    return out;
  }
  return v;
}

function idOf(dir: string, item: Record<string, unknown>, index: number, where: string): string {
  let id = item.id;
  if (id === undefined && dir === 'consumers') id = item.username;
  if (id === undefined) {
    if (dir === 'plugin_metadata') throw new Error(`${where}: plugin_metadata[${index}] needs "id" (the plugin name)`);
    return `arr_${index}`;
  }
  if (typeof id === 'number' && Number.isFinite(id)) return String(id);
  if (typeof id === 'string' && id !== '') return id;
  throw new Error(
    `${where}: ${dir}[${index}] has an invalid id ${JSON.stringify(id)}: use a non-empty string or a number`,
  );
}

/**
 * Parse an APISIX standalone config into a store state (items in key byte order). Throws an Error with a clear
 * message on a syntax error, a missing `#END` (YAML), an unset environment variable or a malformed item. YAML
 * needs {@link loadYamlParser} to have been awaited once.
 */
export function parseStandalone(text: string, opts: ParseStandaloneOptions): StoreState {
  const prefix = normalizePrefix(opts.prefix);
  const version = opts.version ?? 1;
  const where = opts.source ?? `the standalone ${opts.format.toUpperCase()} config`;
  let doc: unknown;
  if (opts.format === 'yaml') {
    if (!hasEndFlag(text)) {
      throw new Error(
        `missing valid end flag in ${where}: a standalone YAML config must end with a line "#END" ` +
          '(it marks the file as completely written); add "#END" as the last line',
      );
    }
    if (parseYaml === undefined) throw new Error('parseStandalone: call loadYamlParser() before parsing YAML');
    const resolved = substituteEnv(text, opts.env, where);
    try {
      doc = parseYaml(resolved);
    } catch (err) {
      throw new Error(`failed to parse ${where} as YAML: ${(err as Error).message}`);
    }
  } else if (opts.format === 'json') {
    try {
      doc = JSON.parse(text);
    } catch (err) {
      throw new Error(`failed to parse ${where} as JSON: ${(err as Error).message}`);
    }
    doc = substituteJson(doc, opts.env, where);
  } else {
    throw new Error(`unknown standalone config format ${JSON.stringify(opts.format)}: use yaml or json`);
  }

  if (doc === null || doc === undefined) return { revision: version, items: [] }; // only comments / #END
  if (!isPlainObject(doc)) throw new Error(`${where}: the top level must be a mapping of resource lists`);

  const table = new Map<string, StoredItem>();
  let revision = version;
  for (const [dir, list] of Object.entries(doc)) {
    if (list === null || list === undefined) continue; // `routes:` with nothing under it
    if (dir.endsWith('_conf_version') && typeof list === 'number') continue; // API-driven standalone versions
    if (!DIR_NAME.test(dir)) throw new Error(`${where}: invalid top-level key ${JSON.stringify(dir)}`);
    if (!Array.isArray(list)) throw new Error(`${where}: "${dir}" must be a list of objects`);
    if (dir === 'plugins') {
      const key = `${prefix}/plugins`;
      table.set(key, { key, value: { plugins: list }, createdIndex: version, modifiedIndex: version });
      continue;
    }
    list.forEach((raw: unknown, i: number) => {
      const index = i + 1;
      if (!isPlainObject(raw)) throw new Error(`${where}: ${dir}[${index}] must be an object`);
      const id = idOf(dir, raw, index, where);
      const { modifiedIndex, ...rest } = raw;
      let mod = version;
      if (modifiedIndex !== undefined) {
        if (typeof modifiedIndex !== 'number' || !Number.isSafeInteger(modifiedIndex) || modifiedIndex < 1) {
          throw new Error(`${where}: ${dir}[${index}] has an invalid modifiedIndex: use a positive integer`);
        }
        mod = modifiedIndex;
      }
      const key = `${prefix}/${dir}/${id}`;
      if (table.has(key)) throw new Error(`${where}: duplicate id "${id}" in ${dir}`);
      revision = Math.max(revision, mod);
      table.set(key, { key, value: { ...rest, id }, createdIndex: mod, modifiedIndex: mod });
    });
  }
  return { revision, items: [...table.values()].sort((a, b) => compareKeys(a.key, b.key)) };
}

/** Where a standalone config comes from: a file (Node, Bun, Deno) or a string (a Workers `vars` binding). */
export interface StandaloneSource {
  /** The current text of the config. */
  read(): Promise<string>;
  /** Names the source in messages, e.g. `CONFIG_FILE /etc/fngate/apisix.yaml`. */
  readonly describe: string;
  /** What to edit instead of calling the Admin API; `that file` by default. */
  readonly editHint?: string;
  /** Call `onChange` when the source may have changed; returns a stop function. Absent: never reloads by itself. */
  watch?(onChange: () => void): () => void;
}

export interface StandaloneStoreOptions {
  source: StandaloneSource;
  format: StandaloneFormat;
  /** Environment for `${{VAR}}` substitution; none by default. */
  env?: Record<string, string | undefined>;
  prefix?: string;
  /** A reload failed (the previous config stays in force). Default: console.error. */
  onError?: (err: Error) => void;
}

/**
 * A read-only config store over an APISIX standalone config. Writes throw {@link ReadOnlyStoreError} with the
 * {@link readOnly} text. Each applied reload replaces the whole state with a new, higher revision (items without
 * `modifiedIndex` get that revision) and notifies watchers; a reload that fails keeps the previous state.
 */
export class StandaloneStore implements ConfigStore {
  readonly kind: string = 'standalone';
  readonly prefix: string;
  readonly readOnly: string;
  readonly source: StandaloneSource;
  private readonly format: StandaloneFormat;
  private readonly env: Record<string, string | undefined>;
  private readonly onError: (err: Error) => void;
  private readonly hub = new WatchHub();
  private table: StoreTable;
  private lastText: string;
  /** The last text that failed to parse: not reported again until the source changes. */
  private badText: string | undefined;
  private stopWatch: (() => void) | undefined;
  private running: Promise<boolean> | undefined;
  private again = false;
  private closed = false;

  private constructor(opts: StandaloneStoreOptions, text: string, state: StoreState) {
    this.source = opts.source;
    this.format = opts.format;
    this.env = opts.env ?? {};
    this.prefix = normalizePrefix(opts.prefix);
    this.onError = opts.onError ?? ((err) => console.error(`standalone config: ${err.message}`));
    this.readOnly =
      `the config is read from ${opts.source.describe} (standalone mode); ` +
      `edit ${opts.source.editHint ?? 'that file'} instead of calling the Admin API`;
    this.table = new StoreTable(state);
    this.lastText = text;
  }

  /** Read and parse the source once; throws a {@link StoreError} when it cannot be read or parsed. */
  static async open(opts: StandaloneStoreOptions): Promise<StandaloneStore> {
    let text: string;
    try {
      text = await opts.source.read();
    } catch (err) {
      throw new StoreError(`cannot read the config from ${opts.source.describe}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    let state: StoreState;
    try {
      if (opts.format === 'yaml') await loadYamlParser();
      state = parseStandalone(text, {
        format: opts.format,
        env: opts.env ?? {},
        prefix: opts.prefix,
        source: opts.source.describe,
      });
    } catch (err) {
      throw new StoreError((err as Error).message, { cause: err });
    }
    const store = new StandaloneStore(opts, text, state);
    store.stopWatch = opts.source.watch?.(() => {
      void store.reload();
    });
    return store;
  }

  /**
   * Re-read the source. Resolves true when a new config was applied, false when the text is unchanged or the
   * new text is invalid (then `onError` hears why and the previous config stays). Never rejects.
   * Concurrent calls are coalesced: one more read runs after the current one.
   */
  reload(): Promise<boolean> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    const run = async (): Promise<boolean> => {
      let applied = false;
      do {
        this.again = false;
        applied = (await this.reloadOnce()) || applied;
      } while (this.again && !this.closed);
      return applied;
    };
    this.running = run().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async reloadOnce(): Promise<boolean> {
    if (this.closed) return false;
    let text: string | undefined;
    try {
      text = await this.source.read();
      if (text === this.lastText) this.badText = undefined;
      if (text === this.lastText || text === this.badText || this.closed) return false;
      const state = parseStandalone(text, {
        format: this.format,
        env: this.env,
        prefix: this.prefix,
        version: this.table.revision + 1,
        source: this.source.describe,
      });
      this.table = new StoreTable(state);
      this.lastText = text;
      this.badText = undefined;
      this.hub.emit();
      return true;
    } catch (err) {
      this.badText = text;
      const e = err instanceof Error ? err : new Error(String(err));
      this.onError(new Error(`reload of ${this.source.describe} failed, keeping the previous config: ${e.message}`));
      return false;
    }
  }

  async load(): Promise<StoreState> {
    return this.table.snapshot(this.prefix);
  }

  async get(key: string): Promise<StoredItem | undefined> {
    const it = this.table.get(key);
    return it && copyItem(it);
  }

  async put(
    _key: string,
    _value: Record<string, unknown>,
    _opts?: PutOptions,
  ): Promise<{ item: StoredItem; created: boolean }> {
    throw new ReadOnlyStoreError(this.readOnly);
  }

  async delete(_key: string, _opts?: PutOptions): Promise<StoredItem | undefined> {
    throw new ReadOnlyStoreError(this.readOnly);
  }

  async nextId(): Promise<number> {
    throw new ReadOnlyStoreError(this.readOnly);
  }

  watch(onChange: () => void): () => void {
    return this.hub.add(onChange);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.stopWatch?.();
    this.stopWatch = undefined;
    this.hub.clear();
    await this.running;
  }
}

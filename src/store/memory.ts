/**
 * The in-memory config store: the reference implementation of {@link ConfigStore}, runtime-agnostic
 * (no node:*). Its pieces are shared by the other drivers:
 *
 * - {@link StoreTable}: the etcd-like state (a key map, one store-wide revision, CAS checks). The file store
 *   clones it, applies a write to the clone, persists the clone and only then swaps it in.
 * - {@link WatchHub}: watch listeners, called asynchronously (one microtask per change).
 * - {@link compareKeys}: etcd range order (UTF-8 byte order) of keys.
 */
import type { ConfigStore, PutOptions, StoredItem, StoreState } from './types.ts';
import { StoreConflictError, StoreError } from './types.ts';

export const DEFAULT_PREFIX = '/apisix';

/** `/apisix`, `apisix`, `/apisix/` -> `/apisix`. Throws on an empty prefix. */
export function normalizePrefix(prefix: string = DEFAULT_PREFIX): string {
  let p = prefix.trim();
  while (p.endsWith('/')) p = p.slice(0, -1);
  if (p === '') throw new RangeError(`invalid store prefix ${JSON.stringify(prefix)}: it must not be empty`);
  return p.startsWith('/') ? p : `/${p}`;
}

const isSurrogate = (c: number): boolean => c >= 0xd800 && c <= 0xdfff;

/**
 * Compare keys in UTF-8 byte order, the order of an etcd range (`/apisix/routes/1` < `/apisix/routes/10` <
 * `/apisix/routes/2`). Plain `<` on JS strings compares UTF-16 code units, which disagrees with byte order
 * only between U+E000..U+FFFF and astral characters; that case is handled here.
 */
export function compareKeys(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    const xs = isSurrogate(x);
    if (xs !== isSurrogate(y)) return xs ? 1 : -1;
    return x - y;
  }
  return a.length - b.length;
}

/** True when `v` is a JSON object (not null, not an array). */
export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A copy of a stored item whose value the caller may change freely. */
export function copyItem(item: StoredItem): StoredItem {
  return {
    key: item.key,
    value: structuredClone(item.value),
    createdIndex: item.createdIndex,
    modifiedIndex: item.modifiedIndex,
  };
}

/** Freeze a JSON value and everything in it, so that it can be shared with every reader instead of copied. */
export function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/** Normalise a value the way a JSON back end would (drops `undefined`, turns Dates into strings, ...). */
function toJsonValue(key: string, value: Record<string, unknown>): Record<string, unknown> {
  if (!isPlainObject(value)) throw new TypeError(`the value stored at ${key} must be a JSON object`);
  let out: unknown;
  try {
    out = JSON.parse(JSON.stringify(value));
  } catch (err) {
    throw new TypeError(`the value stored at ${key} is not JSON-serialisable: ${(err as Error).message}`);
  }
  if (!isPlainObject(out)) throw new TypeError(`the value stored at ${key} must be a JSON object`);
  return out;
}

/** Check a compare-and-set condition; `current` is the item now stored at `key`, if any. */
export function checkExpect(key: string, current: StoredItem | undefined, expect: number | undefined): void {
  if (expect === undefined) return;
  if (!Number.isSafeInteger(expect) || expect < 0) {
    throw new RangeError(`invalid expect ${expect}: it must be 0 or a modifiedIndex`);
  }
  const index = current?.modifiedIndex ?? 0;
  if (index === expect) return;
  if (expect === 0) throw new StoreConflictError(`${key} already exists (modifiedIndex ${index})`);
  if (!current) throw new StoreConflictError(`${key} does not exist (expected modifiedIndex ${expect})`);
  throw new StoreConflictError(`${key} was changed by someone else (modifiedIndex ${index}, expected ${expect})`);
}

/** An item to seed a store with; missing indexes are assigned in list order. */
export interface SeedItem {
  key: string;
  value: Record<string, unknown>;
  createdIndex?: number;
  modifiedIndex?: number;
}

/**
 * Build a {@link StoreState} from a list of items. Items without indexes get fresh revisions after the highest
 * given index, in list order; `revision` is at least the highest index. Throws on a duplicate key.
 */
export function stateFromItems(items: Iterable<SeedItem>, revision = 0): StoreState {
  const list = [...items];
  let max = revision;
  for (const it of list) max = Math.max(max, it.createdIndex ?? 0, it.modifiedIndex ?? 0);
  let next = list.reduce((m, it) => Math.max(m, it.createdIndex ?? 0, it.modifiedIndex ?? 0), 0);
  const seen = new Set<string>();
  const out: StoredItem[] = [];
  for (const it of list) {
    if (seen.has(it.key)) throw new Error(`duplicate key ${it.key}`);
    seen.add(it.key);
    const modifiedIndex = it.modifiedIndex ?? it.createdIndex ?? ++next;
    const createdIndex = it.createdIndex ?? modifiedIndex;
    out.push({ key: it.key, value: toJsonValue(it.key, it.value), createdIndex, modifiedIndex });
  }
  max = Math.max(max, next);
  out.sort((a, b) => compareKeys(a.key, b.key));
  return { revision: max, items: out };
}

/**
 * The mutable etcd-like table behind the stores. Stored item objects are never changed in place (a write
 * replaces the object), so {@link clone} is a cheap shallow copy and old snapshots stay valid.
 */
export class StoreTable {
  revision: number;
  private readonly map: Map<string, StoredItem>;
  private sorted: StoredItem[] | undefined;

  constructor(state: StoreState = { revision: 0, items: [] }) {
    this.revision = state.revision;
    this.map = new Map(state.items.map((it) => [it.key, { ...it, value: deepFreeze(it.value) }]));
  }

  clone(): StoreTable {
    const t = new StoreTable();
    t.revision = this.revision;
    for (const [k, v] of this.map) t.map.set(k, v);
    t.sorted = this.sorted;
    return t;
  }

  get size(): number {
    return this.map.size;
  }

  get(key: string): StoredItem | undefined {
    return this.map.get(key);
  }

  /** All items in key byte order (the internal objects: copy before handing out). */
  items(): readonly StoredItem[] {
    if (!this.sorted) this.sorted = [...this.map.values()].sort((a, b) => compareKeys(a.key, b.key));
    return this.sorted;
  }

  /**
   * The items under `<prefix>/`, with the store-wide revision. The item objects are new, their values are the
   * stored ones, deep-frozen (see {@link ConfigStore.load}): copying 10,000 routes with structuredClone on every
   * load took ~40 ms of a rebuild.
   */
  snapshot(prefix: string): StoreState {
    const dir = `${prefix}/`;
    const items: StoredItem[] = [];
    for (const it of this.items()) if (it.key.startsWith(dir)) items.push({ ...it });
    return { revision: this.revision, items };
  }

  /** Write one item (CAS-checked first: a failed check changes nothing). */
  put(key: string, value: Record<string, unknown>, expect?: number): { item: StoredItem; created: boolean } {
    const current = this.map.get(key);
    checkExpect(key, current, expect);
    const json = deepFreeze(toJsonValue(key, value));
    const revision = this.revision + 1;
    const item: StoredItem = {
      key,
      value: json,
      createdIndex: current?.createdIndex ?? revision,
      modifiedIndex: revision,
    };
    this.revision = revision;
    if (current) {
      this.map.set(key, item);
      if (this.sorted) this.sorted = this.sorted.map((it) => (it.key === key ? item : it));
    } else {
      this.map.set(key, item);
      this.sorted = undefined;
    }
    return { item, created: !current };
  }

  /** Delete one item; a missing key changes nothing (no new revision, as etcd). */
  delete(key: string, expect?: number): StoredItem | undefined {
    const current = this.map.get(key);
    checkExpect(key, current, expect);
    if (!current) return undefined;
    this.map.delete(key);
    this.sorted = undefined;
    this.revision += 1;
    return current;
  }

  /** A new revision without a change of config (APISIX's write of `/apisix/gen_id`). */
  bump(): number {
    this.revision += 1;
    return this.revision;
  }
}

/** Watch listeners. Each {@link emit} calls every listener once, in a microtask, never synchronously. */
export class WatchHub {
  private readonly listeners = new Set<() => void>();

  constructor(private readonly onError: (err: unknown) => void = reportListenerError) {}

  get size(): number {
    return this.listeners.size;
  }

  add(onChange: () => void): () => void {
    // Wrap so that the same function may be subscribed twice and unsubscribed independently.
    const entry = () => onChange();
    this.listeners.add(entry);
    return () => {
      this.listeners.delete(entry);
    };
  }

  emit(): void {
    if (this.listeners.size === 0) return;
    const targets = [...this.listeners];
    queueMicrotask(() => {
      for (const fn of targets) {
        if (!this.listeners.has(fn)) continue; // unsubscribed meanwhile
        try {
          fn();
        } catch (err) {
          this.onError(err);
        }
      }
    });
  }

  clear(): void {
    this.listeners.clear();
  }
}

function reportListenerError(err: unknown): void {
  console.error('config store: a watch listener threw:', err);
}

/** Throws unless `key` lies under `<prefix>/`. */
export function checkKey(prefix: string, key: string): void {
  if (typeof key !== 'string' || !key.startsWith(`${prefix}/`) || key.length === prefix.length + 1) {
    throw new StoreError(`invalid key ${JSON.stringify(key)}: keys must look like ${prefix}/<dir>/<id>`);
  }
}

export interface MemoryStoreOptions {
  /** Key prefix, `/apisix` by default. */
  prefix?: string;
  /** Initial state (e.g. from {@link stateFromItems}); items outside the prefix are kept but never listed. */
  state?: StoreState;
  /** Called when a watch listener throws (default: console.error). */
  onListenerError?: (err: unknown) => void;
}

/** A config store that lives in memory only: for tests, Workers isolates and as the base of other drivers. */
export class MemoryStore implements ConfigStore {
  readonly kind: string = 'memory';
  readonly prefix: string;
  private readonly table: StoreTable;
  private readonly hub: WatchHub;
  private closed = false;

  constructor(opts: MemoryStoreOptions = {}) {
    this.prefix = normalizePrefix(opts.prefix);
    const state = opts.state ?? { revision: 0, items: [] };
    // Copied so that the caller's objects never alias the stored ones.
    this.table = new StoreTable({ revision: state.revision, items: state.items.map(copyItem) });
    this.hub = new WatchHub(opts.onListenerError);
  }

  /** A store seeded with `items` (see {@link stateFromItems} for how missing indexes are filled). */
  static fromItems(
    items: Iterable<SeedItem>,
    opts: Omit<MemoryStoreOptions, 'state'> & { revision?: number } = {},
  ): MemoryStore {
    return new MemoryStore({ ...opts, state: stateFromItems(items, opts.revision) });
  }

  private assertOpen(): void {
    if (this.closed) throw new StoreError('the memory config store is closed');
  }

  async load(): Promise<StoreState> {
    this.assertOpen();
    return this.table.snapshot(this.prefix);
  }

  async get(key: string): Promise<StoredItem | undefined> {
    this.assertOpen();
    const it = this.table.get(key);
    return it && copyItem(it);
  }

  async put(
    key: string,
    value: Record<string, unknown>,
    opts: PutOptions = {},
  ): Promise<{ item: StoredItem; created: boolean }> {
    this.assertOpen();
    checkKey(this.prefix, key);
    const { item, created } = this.table.put(key, value, opts.expect);
    this.hub.emit();
    return { item: copyItem(item), created };
  }

  async delete(key: string, opts: PutOptions = {}): Promise<StoredItem | undefined> {
    this.assertOpen();
    checkKey(this.prefix, key);
    const gone = this.table.delete(key, opts.expect);
    if (gone) this.hub.emit();
    return gone && copyItem(gone);
  }

  async nextId(): Promise<number> {
    this.assertOpen();
    return this.table.bump();
  }

  watch(onChange: () => void): () => void {
    return this.hub.add(onChange);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.hub.clear();
  }
}

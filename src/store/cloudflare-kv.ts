/**
 * A {@link ConfigStore} over a Cloudflare Workers KV namespace (runtime-agnostic code: only the binding's
 * methods are used, typed by the small {@link KVNamespaceLike} interface, so no @cloudflare/workers-types).
 *
 * ## Key layout
 * The same as every other driver: the KV key is the etcd key, `/apisix/routes/<id>`, `/apisix/upstreams/<id>`,
 * ..., and the KV value is the plain JSON document the Admin API stores (so `wrangler kv key put` can write
 * one). The store's own bookkeeping lives in KV metadata and in one extra key:
 * - metadata of each item written by fngate: `{ createdIndex, modifiedIndex }`. An item written by someone else
 *   (no metadata) has both indexes = 1.
 * - `<prefix>/_meta/revision`: the store-wide revision, a decimal integer, rewritten on every Admin API write.
 *   It is also the change signal other isolates poll: anything that writes KV behind fngate's back (e.g.
 *   `wrangler kv key put`) should also write a new value there (any new text works, e.g. `date +%s`).
 *
 * ## Consistency (KV has no transactions, no watch, and propagates writes eventually)
 * - Within one isolate: reads are served from an in-memory copy of the whole config. The entry calls
 *   {@link CloudflareKVStore.ensureFresh} before handling a request; at most once per `cacheTtlMs` (default
 *   5 s) it reads the revision key (one KV read), and when that changed, it reloads everything (one `list` per
 *   1000 keys, one bulk read per 100 keys). Additionally a full reload runs every `fullReloadMs` (default 300 s)
 *   whatever the revision says, so writes that did not bump the revision key are picked up too.
 *   Workers have no background timers between requests, so all of this happens lazily, on a request.
 * - This isolate's own writes are visible to it at once (they update the in-memory copy), and for
 *   `ownWritesMs` (default 60 s, KV's propagation time) a reload that still returns an older version of a key
 *   this isolate wrote or deleted does not undo that write.
 * - Across isolates and locations: a write is seen after KV propagates it (usually at once in the location
 *   that wrote it, up to ~60 s or more elsewhere; KV reads are cached at the edge for at least 30 s) plus at
 *   most `cacheTtlMs`; a write whose revision bump was missed (or a `list` that lagged) is seen at the next
 *   full reload at the latest.
 * - Compare-and-set (`expect`): the writes of one isolate run one at a time (read, compare, write), so CAS is
 *   exact between requests served by the same isolate. Across isolates it is best effort: two writers in
 *   different isolates (or locations) can both pass the check and the last write wins. The Admin API's
 *   read-modify-write (PUT, PATCH) inherits this.
 * - Revisions are `max(last seen + 1, Date.now() * 1000 + random 0..999)`: they grow within an isolate and
 *   roughly with time across isolates, and two isolates writing in the same millisecond collide with a
 *   chance of 1/1000 (so do the POST ids taken from them). APISIX's ids from etcd are small counters; these
 *   are 16-digit numbers (still zero-padded to 20 digits).
 * - KV allows 1 write per second to one key: the revision key is written on every change, so a burst of
 *   Admin API writes is throttled by KV (a 429 is retried twice, after 1 s and 2 s, then answered 503).
 *
 * Costs (Workers KV billing): per isolate that serves traffic, one read per `cacheTtlMs`; per change or per
 * `fullReloadMs`, one list + reads of all keys; per Admin API write, 2 reads + 2 writes.
 */
import { checkExpect, checkKey, compareKeys, isPlainObject, normalizePrefix, WatchHub } from './memory.ts';
import type { ConfigStore, PutOptions, StoredItem, StoreState } from './types.ts';
import { StoreError } from './types.ts';

/** The methods of a Workers KV binding this store uses. */
export interface KVNamespaceLike {
  get(key: string, options?: { type?: 'text'; cacheTtl?: number }): Promise<string | null>;
  getWithMetadata(
    key: string,
    options?: { type?: 'text'; cacheTtl?: number },
  ): Promise<{ value: string | null; metadata: unknown }>;
  /** Bulk read (up to 100 keys, counted as one operation); absent or refused on older runtimes. */
  getWithMetadata(
    keys: string[],
    options?: { type?: 'text'; cacheTtl?: number },
  ): Promise<Map<string, { value: string | null; metadata: unknown }>>;
  put(key: string, value: string, options?: { metadata?: unknown; expirationTtl?: number }): Promise<void>;
  delete(key: string): Promise<void>;
  list(options: { prefix?: string; cursor?: string; limit?: number }): Promise<{
    keys: { name: string; metadata?: unknown }[];
    list_complete: boolean;
    cursor?: string;
  }>;
}

export interface CloudflareKVStoreOptions {
  kv: KVNamespaceLike;
  /** Key prefix, `/apisix` by default. */
  prefix?: string;
  /** How long the in-memory copy is trusted before the revision key is read again. Default 5000 ms. */
  cacheTtlMs?: number;
  /** Reload everything at least this often, whatever the revision key says. Default 300000 ms; 0 = never. */
  fullReloadMs?: number;
  /** How long this isolate's own writes win over older versions a reload returns. Default 60000 ms. */
  ownWritesMs?: number;
  /** A reload failed or found an unusable value (the previous config stays). Default: console.error. */
  onError?: (err: Error) => void;
  /** Milliseconds clock; injectable for tests. */
  now?: () => number;
  /** Pause between retries of a throttled write; injectable for tests. */
  sleep?: (ms: number) => Promise<void>;
}

interface Indexes {
  createdIndex: number;
  modifiedIndex: number;
}

/** One key as last seen: the parsed item and its raw text (to tell a changed value cheaply). */
interface Entry {
  item: StoredItem;
  raw: string;
}

/** A write this isolate made recently: `entry` for a put, undefined for a delete at `revision`. */
interface OwnWrite {
  entry?: Entry;
  revision: number;
  at: number;
}

const BULK_MAX = 100;
const RETRY_DELAYS_MS = [1000, 2000];
const MAX_SAFE_REVISION = Number.MAX_SAFE_INTEGER;
const WRITE_QUEUE_WAIT_MS = 10_000;

function indexesOf(metadata: unknown): Indexes {
  if (isPlainObject(metadata)) {
    const c = metadata.createdIndex;
    const m = metadata.modifiedIndex;
    if (Number.isSafeInteger(m) && (m as number) > 0) {
      const mod = m as number;
      return { createdIndex: Number.isSafeInteger(c) && (c as number) > 0 ? (c as number) : mod, modifiedIndex: mod };
    }
  }
  return { createdIndex: 1, modifiedIndex: 1 };
}

/** The counter in the revision key's text (0 when absent or not a plain integer, e.g. an external token). */
function counterOf(raw: string | null): number {
  if (raw === null) return 0;
  const t = raw.trim();
  if (!/^\d{1,16}$/.test(t)) return 0;
  const n = Number(t);
  return Number.isSafeInteger(n) ? n : 0;
}

function isThrottled(err: unknown): boolean {
  const msg = err instanceof Error ? err.message : String(err);
  return /\b429\b|too many requests/i.test(msg);
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

export class CloudflareKVStore implements ConfigStore {
  readonly kind: string = 'cloudflare-kv';
  readonly prefix: string;
  /** The KV key of the store-wide revision (and change signal). */
  readonly revisionKey: string;
  private readonly kv: KVNamespaceLike;
  private readonly metaDir: string;
  private readonly cacheTtlMs: number;
  private readonly fullReloadMs: number;
  private readonly ownWritesMs: number;
  private readonly onError: (err: Error) => void;
  private readonly now: () => number;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly hub = new WatchHub();

  /** The in-memory copy: key -> entry (own writes applied). Undefined until the first load. */
  private entries: Map<string, Entry> | undefined;
  private revision = 0;
  /** Raw text of the revision key at the last reload (null = absent). */
  private revisionToken: string | null = null;
  private checkedAt = Number.NEGATIVE_INFINITY;
  private fullAt = Number.NEGATIVE_INFINITY;
  /** Set when a reload is due whatever the revision key says (e.g. another writer raced with ours). */
  private dirty = false;
  private readonly own = new Map<string, OwnWrite>();
  /** Unusable values already reported (key -> raw text), so a bad value is logged once, not on every reload. */
  private readonly reported = new Map<string, string>();
  private fresh: Promise<boolean> | undefined;
  /** Tail of the queue of this isolate's writes (they run one at a time, so CAS is exact within the isolate). */
  private writing: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(opts: CloudflareKVStoreOptions) {
    this.kv = opts.kv;
    this.prefix = normalizePrefix(opts.prefix);
    this.metaDir = `${this.prefix}/_meta/`;
    this.revisionKey = `${this.metaDir}revision`;
    this.cacheTtlMs = opts.cacheTtlMs ?? 5000;
    this.fullReloadMs = opts.fullReloadMs ?? 300_000;
    this.ownWritesMs = opts.ownWritesMs ?? 60_000;
    this.onError = opts.onError ?? ((err) => console.error(`cloudflare-kv store: ${err.message}`));
    this.now = opts.now ?? (() => Date.now());
    this.sleep = opts.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
  }

  private assertOpen(): void {
    if (this.closed) throw new StoreError('the cloudflare-kv config store is closed');
  }

  /**
   * Bring the in-memory copy up to date if it is older than `cacheTtlMs`: read the revision key, reload
   * everything when it changed (or a full reload is due). Resolves true when the config changed (watchers are
   * notified too). Never rejects: a failure is reported through `onError` and the previous copy stays.
   * Concurrent calls share one check.
   */
  ensureFresh(): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    if (this.fresh) return this.fresh;
    const t = this.now();
    if (this.entries && !this.dirty && t - this.checkedAt < this.cacheTtlMs) return Promise.resolve(false);
    this.fresh = this.check(t).finally(() => {
      this.fresh = undefined;
    });
    return this.fresh;
  }

  private async check(t: number): Promise<boolean> {
    try {
      const token = await this.kv.get(this.revisionKey);
      this.checkedAt = t;
      const due = this.fullReloadMs > 0 && t - this.fullAt >= this.fullReloadMs;
      if (this.entries && !this.dirty && !due && token === this.revisionToken) return false;
      return await this.reload(token);
    } catch (err) {
      // Try again after the TTL, not on every request.
      this.checkedAt = t;
      this.onError(new Error(`reading KV failed, still serving the previous config: ${asError(err).message}`));
      return false;
    }
  }

  /** Read every key under the prefix; swap in the result. `token` is the revision key's text read just before. */
  private async reload(token: string | null): Promise<boolean> {
    const names: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await this.kv.list({ prefix: `${this.prefix}/`, cursor });
      for (const k of page.keys) if (!k.name.startsWith(this.metaDir)) names.push(k.name);
      cursor = page.list_complete ? undefined : page.cursor;
    } while (cursor);
    const values = await this.readMany(names);

    const t = this.now();
    const next = new Map<string, Entry>();
    let maxIndex = 0;
    for (const key of names) {
      const got = values.get(key);
      if (!got || got.value === null) continue; // deleted between list and read
      const entry = this.parse(key, got.value, got.metadata);
      if (!entry) continue;
      next.set(key, entry);
    }
    // This isolate's recent writes win over older versions (KV may not have propagated them yet).
    for (const [key, w] of this.own) {
      if (t - w.at > this.ownWritesMs) {
        this.own.delete(key);
        continue;
      }
      const seen = next.get(key);
      if (seen && seen.item.modifiedIndex >= w.revision) continue; // KV has it, or something newer
      if (w.entry) next.set(key, w.entry);
      else next.delete(key);
    }
    for (const e of next.values()) maxIndex = Math.max(maxIndex, e.item.modifiedIndex);

    const changed = !this.entries || !sameEntries(this.entries, next);
    this.revisionToken = token;
    this.fullAt = t;
    this.dirty = false;
    if (!changed) return false;
    let revision = Math.max(counterOf(token), maxIndex);
    if (this.entries && revision <= this.revision) revision = this.revision + 1; // a change nobody numbered
    this.revision = Math.max(revision, this.revision);
    const first = !this.entries;
    this.entries = next;
    if (!first) this.hub.emit();
    return !first;
  }

  /** Values and metadata of `keys`: bulk reads of 100 where the runtime has them, else one read each. */
  private async readMany(keys: string[]): Promise<Map<string, { value: string | null; metadata: unknown }>> {
    const out = new Map<string, { value: string | null; metadata: unknown }>();
    for (let i = 0; i < keys.length; i += BULK_MAX) {
      const chunk = keys.slice(i, i + BULK_MAX);
      let bulk: Map<string, { value: string | null; metadata: unknown }> | undefined;
      try {
        bulk = await this.kv.getWithMetadata(chunk, { type: 'text' });
      } catch (err) {
        if (!(err instanceof TypeError)) throw err; // TypeError: this runtime has no bulk read
      }
      if (bulk instanceof Map) {
        for (const [k, v] of bulk) out.set(k, v);
      } else {
        const got = await Promise.all(chunk.map((k) => this.kv.getWithMetadata(k, { type: 'text' })));
        chunk.forEach((k, j) => {
          out.set(k, got[j]!);
        });
      }
    }
    return out;
  }

  private parse(key: string, raw: string, metadata: unknown): Entry | undefined {
    let value: unknown;
    try {
      value = JSON.parse(raw);
    } catch (err) {
      this.report(key, raw, `is not JSON (${(err as Error).message}); skipped`);
      return undefined;
    }
    if (!isPlainObject(value)) {
      this.report(key, raw, 'is not a JSON object; skipped');
      return undefined;
    }
    this.reported.delete(key);
    return { item: { key, value, ...indexesOf(metadata) }, raw };
  }

  private report(key: string, raw: string, what: string): void {
    if (this.reported.get(key) === raw) return;
    this.reported.set(key, raw);
    this.onError(new Error(`the value of KV key ${key} ${what}`));
  }

  private async entriesNow(): Promise<Map<string, Entry>> {
    if (!this.entries) {
      const token = await this.kv.get(this.revisionKey);
      this.checkedAt = this.now();
      await this.reload(token);
    }
    return this.entries!;
  }

  async load(): Promise<StoreState> {
    this.assertOpen();
    let entries: Map<string, Entry>;
    try {
      entries = await this.entriesNow();
    } catch (err) {
      throw new StoreError(`cannot read the config from Workers KV: ${asError(err).message}`, { cause: err });
    }
    const items = [...entries.values()].map((e) => copy(e.item)).sort((a, b) => compareKeys(a.key, b.key));
    return { revision: this.revision, items };
  }

  /** One key, read from KV (not from the in-memory copy), with this isolate's recent writes applied. */
  async get(key: string): Promise<StoredItem | undefined> {
    this.assertOpen();
    const entry = await this.readOne(key);
    return entry && copy(entry.item);
  }

  private async readOne(key: string): Promise<Entry | undefined> {
    let got: { value: string | null; metadata: unknown };
    try {
      got = await this.kv.getWithMetadata(key, { type: 'text' });
    } catch (err) {
      throw new StoreError(`cannot read ${key} from Workers KV: ${asError(err).message}`, { cause: err });
    }
    let entry = got.value === null ? undefined : this.parse(key, got.value, got.metadata);
    const w = this.own.get(key);
    if (w && this.now() - w.at <= this.ownWritesMs && (!entry || entry.item.modifiedIndex < w.revision))
      entry = w.entry;
    return entry;
  }

  async put(
    key: string,
    value: Record<string, unknown>,
    opts: PutOptions = {},
  ): Promise<{ item: StoredItem; created: boolean }> {
    this.assertOpen();
    checkKey(this.prefix, key);
    if (key.startsWith(this.metaDir))
      throw new StoreError(`invalid key ${key}: ${this.metaDir} is reserved for the store`);
    if (!isPlainObject(value)) throw new TypeError(`the value stored at ${key} must be a JSON object`);
    const raw = JSON.stringify(value);
    return this.serial(() => this.putNow(key, raw, opts));
  }

  private async putNow(key: string, raw: string, opts: PutOptions): Promise<{ item: StoredItem; created: boolean }> {
    const current = await this.readOne(key);
    checkExpect(key, current?.item, opts.expect);
    const revision = await this.bump();
    const item: StoredItem = {
      key,
      value: JSON.parse(raw) as Record<string, unknown>,
      createdIndex: current?.item.createdIndex ?? revision,
      modifiedIndex: revision,
    };
    await this.write(key, () =>
      this.kv.put(key, raw, { metadata: { createdIndex: item.createdIndex, modifiedIndex: revision } }),
    );
    const entry: Entry = { item, raw };
    this.own.set(key, { entry, revision, at: this.now() });
    await this.applyOwn(key, entry);
    return { item: copy(item), created: !current };
  }

  async delete(key: string, opts: PutOptions = {}): Promise<StoredItem | undefined> {
    this.assertOpen();
    checkKey(this.prefix, key);
    return this.serial(() => this.deleteNow(key, opts));
  }

  private async deleteNow(key: string, opts: PutOptions): Promise<StoredItem | undefined> {
    const current = await this.readOne(key);
    checkExpect(key, current?.item, opts.expect);
    if (!current) return undefined;
    const revision = await this.bump();
    await this.write(key, () => this.kv.delete(key));
    this.own.set(key, { revision, at: this.now() });
    await this.applyOwn(key, undefined);
    return copy(current.item);
  }

  async nextId(): Promise<number> {
    this.assertOpen();
    return this.serial(() => this.bump());
  }

  /**
   * Run one write after the previous ones of this isolate. A predecessor that hangs (its request was cancelled
   * mid-write, which workerd can do to I/O) holds the queue for at most WRITE_QUEUE_WAIT_MS.
   */
  private serial<T>(op: () => Promise<T>): Promise<T> {
    const before = this.writing;
    const run = (async () => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([before, new Promise((r) => (timer = setTimeout(r, WRITE_QUEUE_WAIT_MS)))]).catch(() => {});
      clearTimeout(timer);
      return op();
    })();
    this.writing = run.catch(() => {});
    return run;
  }

  /** Put this isolate's write into the in-memory copy and tell the watchers. */
  private async applyOwn(key: string, entry: Entry | undefined): Promise<void> {
    if (!this.entries) {
      try {
        await this.entriesNow();
      } catch {
        // The next ensureFresh() loads everything, own writes included.
        return;
      }
    }
    const next = new Map(this.entries);
    if (entry) next.set(key, entry);
    else next.delete(key);
    this.entries = next;
    this.hub.emit();
  }

  /** Take a new store-wide revision and write it to the revision key (best effort, see the module doc). */
  private async bump(): Promise<number> {
    let raw: string | null;
    try {
      raw = await this.kv.get(this.revisionKey);
    } catch (err) {
      throw new StoreError(`cannot read ${this.revisionKey} from Workers KV: ${asError(err).message}`, { cause: err });
    }
    if (raw !== this.revisionToken) this.dirty = true; // someone else wrote since our last reload: reload next time
    const stamp = this.now() * 1000 + Math.floor(Math.random() * 1000);
    const revision = Math.max(counterOf(raw) + 1, this.revision + 1, Math.min(stamp, MAX_SAFE_REVISION));
    const text = String(revision);
    await this.write(this.revisionKey, () => this.kv.put(this.revisionKey, text));
    this.revision = revision;
    // Our own bump is no news to us; but if someone else's bump was missed, `dirty` still forces a reload.
    this.revisionToken = text;
    return revision;
  }

  /** One KV write; a throttled one (429: KV allows 1 write/s per key) is retried after 1 s and 2 s. */
  private async write(key: string, op: () => Promise<void>): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await op();
        return;
      } catch (err) {
        if (isThrottled(err) && attempt < RETRY_DELAYS_MS.length) {
          await this.sleep(RETRY_DELAYS_MS[attempt]!);
          continue;
        }
        throw new StoreError(`cannot write ${key} to Workers KV: ${asError(err).message}`, { cause: err });
      }
    }
  }

  watch(onChange: () => void): () => void {
    return this.hub.add(onChange);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.hub.clear();
    await this.fresh;
  }
}

function copy(item: StoredItem): StoredItem {
  return {
    key: item.key,
    value: structuredClone(item.value),
    createdIndex: item.createdIndex,
    modifiedIndex: item.modifiedIndex,
  };
}

function sameEntries(a: Map<string, Entry>, b: Map<string, Entry>): boolean {
  if (a.size !== b.size) return false;
  for (const [key, e] of b) {
    const old = a.get(key);
    if (
      !old ||
      old.raw !== e.raw ||
      old.item.modifiedIndex !== e.item.modifiedIndex ||
      old.item.createdIndex !== e.item.createdIndex
    ) {
      return false;
    }
  }
  return true;
}

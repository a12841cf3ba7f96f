/**
 * The Deno KV config store: the default store of the Deno entry (`DATA_DIR/fngate.kv`, a SQLite file).
 * Deno only: type-checked with `deno check src/runtime/deno.ts` (tsconfig.json excludes this file), and needs
 * `--unstable-kv` (deno.json sets `"unstable": ["kv"]`).
 *
 * Layout (APISIX's etcd keys, one KV key part per path segment):
 * - `/apisix/routes/1` is stored at `['apisix', 'routes', '1']` as `{ value, createdIndex, modifiedIndex }`;
 * - the store-wide revision is a number at `[0, 'revision']` (a number first part, so it can never collide with
 *   an item key, whose parts are all strings). Every write, delete and `nextId` raises it by one in the same
 *   atomic operation as the change, so `modifiedIndex` is etcd's `mod_revision`.
 *
 * Writes of this process run one at a time (a queue): every write moves the one revision entry, so concurrent
 * writes, even to different keys, would make each other's commits fail and retry (100 parallel Admin API PUTs gave
 * 30 % of 503s after 64 attempts each); queued, none conflicts, and each still commits in one atomic operation.
 *
 * Compare-and-set: each write reads the revision entry and the item entry, checks `expect` against the item, and
 * commits with `kv.atomic().check(revision).check(item)`; a commit that lost a race (another write moved the
 * revision) is retried, and re-checks `expect` on the new state, so a stale `expect` fails with
 * {@link StoreConflictError} exactly as on the other stores.
 *
 * Files: the database and SQLite's `-wal` and `-shm` next to it (the latest writes, service tokens included, sit in
 * the `-wal` until a checkpoint) are all mode 0600; the Deno entry creates DATA_DIR 0700.
 *
 * Limits: Deno KV values are at most 64 KiB (serialised), keys 2 KiB. A larger route fails with a
 * {@link StoreError} that says so (the Admin API answers 503 with that text); nothing is written.
 *
 * Change notices: `kv.watch([revision])` (immediate, in this process), plus a read of the revision entry every
 * `pollIntervalMs` (1 s by default). The poll is there because a local SQLite KV does not deliver `watch` events
 * for writes made by another process (denoland/deno#21640, still true on Deno 2.9.6: measured). So several Deno
 * gateways may share one `fngate.kv` on one host: each sees the others' Admin API writes within about a second.
 * `watch` returns the latest state rather than every intermediate change; that is all the gateway needs (it
 * reloads the whole config on any notice).
 */
import { checkExpect, checkKey, compareKeys, isPlainObject, normalizePrefix, WatchHub } from './memory.ts';
import type { ConfigStore, PutOptions, StoredItem, StoreState } from './types.ts';
import { StoreError } from './types.ts';

/** The store-wide revision counter. */
export const REVISION_KEY: Deno.KvKey = [0, 'revision'];

/** Deno KV's limit on one value, bytes (V8-serialised size). */
export const KV_VALUE_LIMIT = 65536;

/** How often a commit that lost a race on the revision key is retried before giving up. */
const MAX_ATTEMPTS = 64;
/** How often `load` re-lists when writes keep landing while it reads. */
const LOAD_ATTEMPTS = 16;

/** What one item key holds. */
interface StoredEntry {
  value: Record<string, unknown>;
  createdIndex: number;
  modifiedIndex: number;
}

export interface DenoKvStoreOptions {
  /** Path of the KV file, e.g. `<DATA_DIR>/fngate.kv`. Its directory must exist. */
  path: string;
  /** Key prefix, `/apisix` by default. */
  prefix?: string;
  /** Poll of the revision entry (changes by other processes), ms. Default 1000; 0 disables it. */
  pollIntervalMs?: number;
  /** Background problems (a failed poll or watch). Default console.error. */
  onError?: (err: Error) => void;
}

/** The files of one SQLite KV store: the database and its write-ahead log and shared-memory index. */
export const KV_FILE_SUFFIXES: readonly string[] = ['', '-wal', '-shm'];

/** Create `path` empty with mode 0600 unless it exists (then it is left as it is). */
async function createOwnerOnly(path: string): Promise<void> {
  try {
    const file = await Deno.open(path, { write: true, createNew: true, mode: 0o600 });
    file.close();
  } catch (err) {
    if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
  }
}

const isIndex = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 1;

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** `/apisix/routes/1` -> `['apisix', 'routes', '1']`. */
function kvKeyOf(key: string): string[] {
  return key.slice(1).split('/');
}

/** The KV key parts of an item back into its etcd key; undefined for an entry that is not an item. */
function keyOfKv(parts: Deno.KvKey): string | undefined {
  let key = '';
  for (const p of parts) {
    if (typeof p !== 'string') return undefined;
    key += `/${p}`;
  }
  return key;
}

/** Normalise a value the way a JSON back end would; the same rules as the memory store. */
function toJsonValue(key: string, value: Record<string, unknown>): Record<string, unknown> {
  if (!isPlainObject(value)) throw new TypeError(`the value stored at ${key} must be a JSON object`);
  let out: unknown;
  try {
    out = JSON.parse(JSON.stringify(value));
  } catch (err) {
    throw new TypeError(`the value stored at ${key} is not JSON-serialisable: ${describe(err)}`);
  }
  if (!isPlainObject(out)) throw new TypeError(`the value stored at ${key} must be a JSON object`);
  return out;
}

export class DenoKvStore implements ConfigStore {
  readonly kind: string = 'deno-kv';
  readonly prefix: string;
  /** Path of the KV file. */
  readonly path: string;

  private readonly kv: Deno.Kv;
  private readonly prefixParts: string[];
  private readonly hub = new WatchHub();
  private readonly onError: (err: Error) => void;
  /** Versionstamp of the newest revision this process has seen or written (versionstamps grow, as strings). */
  private lastStamp: string | null = null;
  private closed = false;
  private timer: ReturnType<typeof setInterval> | undefined;
  private watchReader: ReadableStreamDefaultReader<Deno.KvEntryMaybe<unknown>[]> | undefined;
  private lastBackgroundError = '';
  /** The tail of the write queue (see the file comment); never rejects. */
  private writeTail: Promise<unknown> = Promise.resolve();

  private constructor(kv: Deno.Kv, path: string, prefix: string, onError: (err: Error) => void) {
    this.kv = kv;
    this.path = path;
    this.prefix = prefix;
    this.prefixParts = kvKeyOf(prefix);
    this.onError = onError;
  }

  /** Open (or create) the KV file. Throws a {@link StoreError} when Deno KV is unavailable or the file cannot be opened. */
  static async open(opts: DenoKvStoreOptions): Promise<DenoKvStore> {
    const prefix = normalizePrefix(opts.prefix);
    if (typeof Deno.openKv !== 'function') {
      throw new StoreError('Deno KV is not available: run Deno with --unstable-kv (deno.json sets "unstable": ["kv"])');
    }
    let kv: Deno.Kv;
    try {
      // The config holds credentials (service tokens): owner-only, as the file store's config.json. SQLite creates
      // its `-wal` and `-shm` files (which hold the latest writes) with the mode of the database file, so the file
      // is created 0600 before SQLite opens it (an empty file is an empty database) rather than chmod-ed after.
      await createOwnerOnly(opts.path);
      kv = await Deno.openKv(opts.path);
    } catch (err) {
      throw new StoreError(`cannot open the Deno KV store ${opts.path}: ${describe(err)}`, { cause: err });
    }
    // An existing file (or -wal/-shm left by a crash, or by a version that chmod-ed only the main file) may be
    // readable by others: make every one owner-only.
    for (const suffix of KV_FILE_SUFFIXES) await Deno.chmod(`${opts.path}${suffix}`, 0o600).catch(() => {});
    const store = new DenoKvStore(
      kv,
      opts.path,
      prefix,
      opts.onError ?? ((err) => console.error(`config store: ${err.message}`)),
    );
    try {
      store.lastStamp = (await kv.get(REVISION_KEY)).versionstamp;
    } catch (err) {
      kv.close();
      throw new StoreError(`cannot read the Deno KV store ${opts.path}: ${describe(err)}`, { cause: err });
    }
    store.startWatching(opts.pollIntervalMs ?? 1000);
    return store;
  }

  private assertOpen(): void {
    if (this.closed) throw new StoreError('the Deno KV config store is closed');
  }

  /** Run a KV call; anything it throws becomes a {@link StoreError} naming the file. */
  private async io<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof StoreError) throw err;
      throw new StoreError(`cannot ${what} the Deno KV store ${this.path}: ${describe(err)}`, { cause: err });
    }
  }

  private toItem(key: string, raw: unknown): StoredItem {
    const e = raw as Partial<StoredEntry> | null;
    if (!isPlainObject(e) || !isPlainObject(e.value) || !isIndex(e.createdIndex) || !isIndex(e.modifiedIndex)) {
      throw new StoreError(
        `the Deno KV store ${this.path} holds a malformed entry at ${key} (expected {value, createdIndex, modifiedIndex}); ` +
          'delete that key or restore the file',
      );
    }
    // Values come out of KV as fresh objects (structured clone): no copy needed.
    return { key, value: e.value, createdIndex: e.createdIndex, modifiedIndex: e.modifiedIndex };
  }

  /** Read every item under the prefix at one revision (re-listed when a write landed meanwhile). */
  async load(): Promise<StoreState> {
    this.assertOpen();
    return this.io('read', async () => {
      for (let attempt = 0; attempt < LOAD_ATTEMPTS; attempt++) {
        const before = await this.kv.get<number>(REVISION_KEY);
        const items: StoredItem[] = [];
        for await (const e of this.kv.list({ prefix: this.prefixParts })) {
          const key = keyOfKv(e.key);
          if (key === undefined || !key.startsWith(`${this.prefix}/`)) continue;
          items.push(this.toItem(key, e.value));
        }
        const after = await this.kv.get<number>(REVISION_KEY);
        if (before.versionstamp !== after.versionstamp) continue;
        items.sort((a, b) => compareKeys(a.key, b.key));
        return { revision: before.value ?? 0, items };
      }
      throw new StoreError(
        `cannot read a consistent config from ${this.path}: it changed on each of ${LOAD_ATTEMPTS} reads`,
      );
    });
  }

  async get(key: string): Promise<StoredItem | undefined> {
    this.assertOpen();
    if (typeof key !== 'string' || !key.startsWith('/')) return undefined;
    const e = await this.io('read', () => this.kv.get(kvKeyOf(key)));
    return e.versionstamp === null ? undefined : this.toItem(key, e.value);
  }

  async put(
    key: string,
    value: Record<string, unknown>,
    opts: PutOptions = {},
  ): Promise<{ item: StoredItem; created: boolean }> {
    this.assertOpen();
    checkKey(this.prefix, key);
    const json = toJsonValue(key, value);
    return this.queued(() => this.putNow(key, json, opts));
  }

  private async putNow(
    key: string,
    json: Record<string, unknown>,
    opts: PutOptions,
  ): Promise<{ item: StoredItem; created: boolean }> {
    const kvKey = kvKeyOf(key);
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const [rev, cur] = await this.io('read', () => this.kv.getMany<[number, unknown]>([REVISION_KEY, kvKey]));
      const current = cur.versionstamp === null ? undefined : this.toItem(key, cur.value);
      checkExpect(key, current, opts.expect);
      const revision = (rev.value ?? 0) + 1;
      const entry: StoredEntry = {
        value: json,
        createdIndex: current?.createdIndex ?? revision,
        modifiedIndex: revision,
      };
      const res = await this.commit(key, json, () =>
        this.kv.atomic().check(rev, cur).set(REVISION_KEY, revision).set(kvKey, entry).commit(),
      );
      if (!res.ok) continue;
      this.sawOwnWrite(res.versionstamp, true);
      return { item: { key, ...entry }, created: !current };
    }
    throw this.contended(key);
  }

  async delete(key: string, opts: PutOptions = {}): Promise<StoredItem | undefined> {
    this.assertOpen();
    checkKey(this.prefix, key);
    return this.queued(() => this.deleteNow(key, opts));
  }

  private async deleteNow(key: string, opts: PutOptions): Promise<StoredItem | undefined> {
    const kvKey = kvKeyOf(key);
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const [rev, cur] = await this.io('read', () => this.kv.getMany<[number, unknown]>([REVISION_KEY, kvKey]));
      const current = cur.versionstamp === null ? undefined : this.toItem(key, cur.value);
      checkExpect(key, current, opts.expect);
      if (!current) return undefined; // nothing to delete: no new revision, as etcd
      const revision = (rev.value ?? 0) + 1;
      const res = await this.commit(key, undefined, () =>
        this.kv.atomic().check(rev, cur).set(REVISION_KEY, revision).delete(kvKey).commit(),
      );
      if (!res.ok) continue;
      this.sawOwnWrite(res.versionstamp, true);
      return current;
    }
    throw this.contended(key);
  }

  /** A new revision without a change of config (APISIX's `/apisix/gen_id` write); watchers are not woken. */
  async nextId(): Promise<number> {
    this.assertOpen();
    return this.queued(() => this.nextIdNow());
  }

  private async nextIdNow(): Promise<number> {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const rev = await this.io('read', () => this.kv.get<number>(REVISION_KEY));
      const revision = (rev.value ?? 0) + 1;
      const res = await this.commit('the revision counter', undefined, () =>
        this.kv.atomic().check(rev).set(REVISION_KEY, revision).commit(),
      );
      if (!res.ok) continue;
      this.sawOwnWrite(res.versionstamp, false);
      return revision;
    }
    throw this.contended('the revision counter');
  }

  /** Run `write` after every write queued before it (see the file comment). */
  private queued<T>(write: () => Promise<T>): Promise<T> {
    const run = this.writeTail.then(() => {
      this.assertOpen();
      return write();
    });
    this.writeTail = run.catch(() => {});
    return run;
  }

  /** Commit, turning KV's size errors into a {@link StoreError} that says which limit was hit. */
  private async commit(
    key: string,
    json: Record<string, unknown> | undefined,
    run: () => Promise<Deno.KvCommitResult | Deno.KvCommitError>,
  ): Promise<Deno.KvCommitResult | Deno.KvCommitError> {
    try {
      return await run();
    } catch (err) {
      const msg = describe(err);
      if (json && /value too large/i.test(msg)) {
        const bytes = new TextEncoder().encode(JSON.stringify(json)).length;
        throw new StoreError(
          `cannot store ${key}: its value is about ${bytes} bytes, above Deno KV's limit of ${KV_VALUE_LIMIT} bytes per value ` +
            '(make the resource smaller, or use ETCD_HOST); nothing was written',
          { cause: err },
        );
      }
      if (/key too large/i.test(msg)) {
        throw new StoreError(
          `cannot store ${key}: the key is above Deno KV's limit of 2048 bytes; nothing was written`,
          {
            cause: err,
          },
        );
      }
      throw new StoreError(`cannot write ${key} to the Deno KV store ${this.path}: ${msg}; nothing was written`, {
        cause: err,
      });
    }
  }

  private contended(key: string): StoreError {
    return new StoreError(`cannot write ${key}: the Deno KV store kept changing under us (${MAX_ATTEMPTS} attempts)`);
  }

  /** Remember our own commit so its watch/poll echo is not reported again; notify now when the config changed. */
  private sawOwnWrite(stamp: string, changed: boolean): void {
    if (this.lastStamp === null || stamp > this.lastStamp) this.lastStamp = stamp;
    if (changed) this.hub.emit();
  }

  /** A revision versionstamp seen by the watch or the poll: notify when it is newer than anything seen. */
  private seen(stamp: string | null): void {
    if (stamp === null || (this.lastStamp !== null && stamp <= this.lastStamp)) return;
    this.lastStamp = stamp;
    this.hub.emit();
  }

  private reportBackground(err: unknown): void {
    const e = err instanceof Error ? err : new Error(String(err));
    if (e.message !== this.lastBackgroundError) this.onError(e); // once per distinct problem
    this.lastBackgroundError = e.message;
  }

  private startWatching(pollIntervalMs: number): void {
    void this.watchLoop();
    if (pollIntervalMs > 0) {
      let polling = false;
      const timer = setInterval(async () => {
        if (polling || this.closed) return;
        polling = true;
        try {
          this.seen((await this.kv.get(REVISION_KEY)).versionstamp);
          this.lastBackgroundError = '';
        } catch (err) {
          if (!this.closed)
            this.reportBackground(new StoreError(`cannot poll the Deno KV store ${this.path}: ${describe(err)}`));
        } finally {
          polling = false;
        }
      }, pollIntervalMs);
      Deno.unrefTimer(timer);
      this.timer = timer;
    }
  }

  private async watchLoop(): Promise<void> {
    try {
      this.watchReader = this.kv.watch([REVISION_KEY]).getReader();
      for (;;) {
        const { done, value } = await this.watchReader.read();
        if (done || this.closed) return;
        this.seen(value[0]?.versionstamp ?? null);
      }
    } catch (err) {
      // The poll still notices changes; say once that the fast path is gone.
      if (!this.closed)
        this.reportBackground(new StoreError(`Deno KV watch on ${this.path} stopped: ${describe(err)}`));
    }
  }

  watch(onChange: () => void): () => void {
    return this.hub.add(onChange);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    this.hub.clear();
    await this.watchReader?.cancel().catch(() => {});
    this.kv.close();
  }
}

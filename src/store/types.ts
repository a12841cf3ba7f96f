/**
 * The configuration store contract. Every back end (memory, file, env, Workers KV, Deno KV, etcd)
 * fills this one interface, and every one uses APISIX's etcd key layout:
 * `<prefix>/routes/<id>`, `<prefix>/upstreams/<id>`, ... with `prefix` = `/apisix` by default.
 *
 * Values are the JSON documents the Admin API stores (APISIX's shape, with `id`, `create_time`,
 * `update_time`). Revisions follow etcd: one store-wide counter that grows on every write;
 * `createdIndex` / `modifiedIndex` are that counter at creation / last change.
 */

export interface StoredItem {
  /** Full key, e.g. `/apisix/routes/1`. */
  key: string;
  /** The stored JSON document. */
  value: Record<string, unknown>;
  createdIndex: number;
  modifiedIndex: number;
}

export interface StoreState {
  /** Store-wide revision of this state (etcd `header.revision`). */
  revision: number;
  /** Every item under the prefix, in key byte order (etcd range order). */
  items: StoredItem[];
}

export interface PutOptions {
  /**
   * Compare-and-set. `undefined`: unconditional. `0`: the key must not exist.
   * `n > 0`: the key's `modifiedIndex` must still be `n`. A failed check throws {@link StoreConflictError}.
   */
  expect?: number;
}

export interface ConfigStore {
  /** Short driver name for logs and `--help`, e.g. `file`, `etcd`. */
  readonly kind: string;
  /** Set when the store cannot be written through the Admin API (standalone/env config); the text says why. */
  readonly readOnly?: string;
  /** Key prefix, `/apisix` unless configured otherwise. */
  readonly prefix: string;

  /**
   * Read everything under the prefix. Throws {@link StoreError} when the back end cannot be read.
   * The values may be shared with the store and frozen (the memory and file stores do so): never change them.
   */
  load(): Promise<StoreState>;
  get(key: string): Promise<StoredItem | undefined>;
  /** Write one item; returns the stored item and whether it was created. Atomic: a failed write changes nothing. */
  put(key: string, value: Record<string, unknown>, opts?: PutOptions): Promise<{ item: StoredItem; created: boolean }>;
  /** Delete one item; returns the item that was deleted, or undefined when there was none. */
  delete(key: string, opts?: PutOptions): Promise<StoredItem | undefined>;
  /**
   * Read one item from the back end itself rather than from a local copy (etcd: a linearizable range, which also
   * refreshes the mirror). Only stores whose `get()` may trail the back end (etcd) have it; for the others
   * `get()` is already current.
   */
  getLatest?(key: string): Promise<StoredItem | undefined>;
  /** Mint a new, unique, ever-growing numeric id (APISIX: etcd revision, zero-padded to 20 digits by the caller). */
  nextId(): Promise<number>;
  /**
   * Call `onChange` after any change of the stored config, whether written through this process or another
   * (file edited, etcd watch event, KV change). Returns an unsubscribe function.
   */
  watch(onChange: () => void): () => void;
  close(): Promise<void>;
}

/** The back end failed (I/O error, disk full, unreachable). The Admin API answers 503 with `error_msg`. */
export class StoreError extends Error {
  override name = 'StoreError';
}

/** The state of one key in the back end, read when a compare-and-set failed. */
export interface LatestState {
  /** The config item; undefined when the key does not exist or holds something that is not a JSON object. */
  item: StoredItem | undefined;
  /** The key's modifiedIndex in the back end (0: the key does not exist): what to `expect` when retrying. */
  modifiedIndex: number;
}

/**
 * A compare-and-set failed because someone else changed the key first. `latest`, when set, is the key's state
 * in the back end at the time of the failed compare, so that a caller can retry from it without reading a local
 * copy that may trail the back end (etcd's mirror follows a watch).
 */
export class StoreConflictError extends StoreError {
  override name = 'StoreConflictError';
  readonly latest: LatestState | undefined;
  constructor(message: string, latest?: LatestState) {
    super(message);
    this.latest = latest;
  }
}

/**
 * The etcd config store: APISIX's own back end, spoken through etcd v3's HTTP/JSON gRPC gateway with the
 * WHATWG `fetch` only (no node:*, no etcd client library), so it runs unchanged on Node, Deno, Bun and Workers.
 *
 * It follows etcd the way an APISIX data plane does (apisix-facts §7.2):
 *
 * - {@link EtcdStore.open} reads the whole prefix once (`/v3/kv/range`, `key=/apisix`, `range_end=/apisiy`) into
 *   an in-memory mirror and keeps the response's `header.revision`.
 * - One prefix watch (`/v3/watch`, `/apisix/` .. `/apisix0`, `start_revision = revision + 1`) applies every PUT and
 *   DELETE to the mirror; the listeners get one notification per batch of events read from the stream.
 * - {@link EtcdStore.load} and {@link EtcdStore.get} answer from the mirror (no network). Writes go to etcd and
 *   their result is applied to the mirror at once (read-your-writes); the watch event for the same revision is
 *   then ignored, as is any event not newer than what the mirror already holds for that key.
 * - Values that are not JSON objects (`init_dir` placeholders such as `/apisix/routes/`, `/apisix/plugins`,
 *   `/apisix/gen_id`) are not part of the config: they are skipped and logged once per key.
 *
 * Recovery: the watch is re-created from the SAME revision when nothing arrived for `watchIdleMs` (60 s; it asks
 * for etcd's progress notifications, which count as traffic). When the stream ends, fails, or etcd cancels it
 * (compaction: `compact_revision`), the store re-reads the whole prefix and watches again from the new revision,
 * retrying with exponential backoff (100 ms doubling to 5 s, with jitter; each log line says `retry_in_ms`);
 * meanwhile `load()` keeps serving the last good mirror. A wait that follows etcd being unreachable ends early
 * when another request of this store (an Admin API write or read) gets an answer from etcd: etcd is back, so the
 * watch resumes at once instead of sleeping out up to 5 s in which other gateways' writes would not be seen. A
 * revision going backwards (etcd restarted with empty data) also leads to a full re-read. Progress notifications
 * never advance the watch revision (etcd < 3.4.24 may send them early).
 *
 * The watch is created with the gRPC metadata `hasleader=true` (header `Grpc-Metadata-hasleader: true`, which
 * etcd's grpc-gateway passes on as metadata; what `clientv3.WithRequireLeader` and `etcdctl watch` send): a member
 * that loses its leader (partitioned from the quorum) ends the watch with `etcdserver: no leader` instead of
 * keeping a stream open that will never deliver another event.
 *
 * Endpoints: requests and the watch go to the current endpoint; a connection failure moves to the next one and
 * reads retry there. A watch that went idle, was canceled by etcd (other than for a compaction or an expired
 * token) or ended also moves to the next endpoint before it is re-created, so one member that stopped following
 * the cluster does not keep the store behind. A write is retried on the next endpoint only when the connection was
 * refused (it cannot have been applied); after a timeout or a dropped connection it fails with a
 * {@link StoreError}, since it may or may not have been applied.
 *
 * Compare-and-set writes (`expect`) are etcd transactions whose failure branch reads the key: a failed compare
 * throws a {@link StoreConflictError} carrying the key's current state in etcd (`latest`), and that state is put
 * into the mirror at once, so a retry does not depend on the watch having caught up. {@link EtcdStore.getLatest}
 * reads one key from etcd (linearizable) the same way.
 *
 * Auth: with `user`/`password` the store authenticates (`/v3/auth/authenticate`), sends the token as the
 * `Authorization` header and authenticates again when etcd reports the token invalid (simple tokens expire).
 */
import { checkExpect, checkKey, compareKeys, copyItem, isPlainObject, normalizePrefix, WatchHub } from './memory.ts';
import type { ConfigStore, PutOptions, StoredItem, StoreState } from './types.ts';
import { StoreConflictError, StoreError } from './types.ts';

export interface EtcdLogger {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export interface EtcdStoreOptions {
  /** etcd client URLs, e.g. `http://127.0.0.1:2379` (a bare `host:port` means http). */
  endpoints: string[];
  /** Key prefix, `/apisix` by default. */
  prefix?: string;
  user?: string;
  password?: string;
  /** Default: warnings and errors to `console.error`, info dropped. */
  logger?: EtcdLogger;
  /** The fetch to use (default: the global one). */
  fetch?: typeof fetch;
  /** Time limit of one request, and of a watch until etcd confirms it; ms, default 5000. */
  requestTimeoutMs?: number;
  /** Re-create the watch (from the same revision) when nothing arrived for this long; ms, default 60000. */
  watchIdleMs?: number;
  /** First retry delay after a failed watch or re-read; ms, default 100. */
  backoffMinMs?: number;
  /** Longest retry delay; ms, default 5000. */
  backoffMaxMs?: number;
}

// ---------------------------------------------------------------------------------------------
// etcd's JSON shapes (int64 fields are strings).

interface EtcdHeader {
  cluster_id?: string;
  member_id?: string;
  revision?: string;
  raft_term?: string;
}
interface EtcdKv {
  key?: string;
  create_revision?: string;
  mod_revision?: string;
  version?: string;
  value?: string;
}
interface RangeResponse {
  header?: EtcdHeader;
  kvs?: EtcdKv[];
  count?: string;
}
interface PutResponse {
  header?: EtcdHeader;
  prev_kv?: EtcdKv;
}
interface DeleteRangeResponse {
  header?: EtcdHeader;
  deleted?: string;
  prev_kvs?: EtcdKv[];
}
interface TxnResponse {
  header?: EtcdHeader;
  succeeded?: boolean;
  responses?: Array<{
    response_put?: PutResponse;
    response_range?: RangeResponse;
    response_delete_range?: DeleteRangeResponse;
  }>;
}
interface WatchEvent {
  type?: 'PUT' | 'DELETE';
  kv?: EtcdKv;
}
interface WatchResult {
  header?: EtcdHeader;
  watch_id?: string;
  created?: boolean;
  canceled?: boolean;
  compact_revision?: string;
  cancel_reason?: string;
  events?: WatchEvent[];
}
interface EtcdErrorBody {
  error?: string;
  message?: string;
  code?: number;
}

// ---------------------------------------------------------------------------------------------
// Encoding helpers (UTF-8 + base64 without Buffer).

const utf8 = new TextEncoder();

function bytesToBase64(bytes: Uint8Array): string {
  let bin = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}

/** base64 of the UTF-8 bytes of `s`. */
export function b64(s: string): string {
  return bytesToBase64(utf8.encode(s));
}

/** UTF-8 text of base64 `s` (empty for a missing value). */
export function unb64(s: string | undefined): string {
  if (!s) return '';
  const bin = atob(s);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new TextDecoder().decode(bytes);
}

/** base64 of the smallest key after every key starting with `prefix` (last byte + 1: `/apisix` -> `/apisiy`). */
export function prefixRangeEnd(prefix: string): string {
  const bytes = utf8.encode(prefix);
  for (let i = bytes.length - 1; i >= 0; i--) {
    if (bytes[i]! < 0xff) {
      const end = bytes.slice(0, i + 1);
      end[i]! += 1;
      return bytesToBase64(end);
    }
  }
  return bytesToBase64(new Uint8Array([0])); // "\0": to the end of the key space
}

const num = (s: string | number | undefined): number => (s === undefined ? 0 : Number(s));

function describeError(err: unknown): string {
  const parts: string[] = [];
  let e: unknown = err;
  for (let depth = 0; e !== undefined && e !== null && depth < 4; depth++) {
    const msg = e instanceof Error ? e.message : String(e);
    const code = (e as { code?: unknown }).code;
    const text = typeof code === 'string' && !msg.includes(code) ? `${code}: ${msg}` : msg;
    if (text && !parts.includes(text)) parts.push(text);
    e = (e as { cause?: unknown }).cause;
  }
  return parts.join(': ') || 'unknown error';
}

const CONNECT_CODES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'ConnectionRefused',
  'UND_ERR_CONNECT_TIMEOUT',
]);
const CONNECT_RE = /ECONNREFUSED|connection refused|unable to connect|tcp connect error|ENOTFOUND|EHOSTUNREACH/i;

/** True when the request surely never reached etcd (so even a write may be retried elsewhere). */
function isConnectError(err: unknown): boolean {
  let e: unknown = err;
  for (let depth = 0; e !== undefined && e !== null && depth < 4; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && CONNECT_CODES.has(code)) return true;
    for (const sub of (e as { errors?: unknown[] }).errors ?? []) if (isConnectError(sub)) return true;
    if (CONNECT_RE.test(e instanceof Error ? e.message : String(e))) return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

function normalizeEndpoint(ep: string): string {
  let s = String(ep).trim();
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(s)) s = `http://${s}`;
  let url: URL;
  try {
    url = new URL(s);
  } catch {
    throw new RangeError(`invalid etcd endpoint ${JSON.stringify(ep)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new RangeError(`invalid etcd endpoint ${JSON.stringify(ep)}: only http and https are supported`);
  }
  return s.replace(/\/+$/, '');
}

function toJsonText(key: string, value: Record<string, unknown>): string {
  if (!isPlainObject(value)) throw new TypeError(`the value stored at ${key} must be a JSON object`);
  let text: string;
  try {
    text = JSON.stringify(value);
  } catch (err) {
    throw new TypeError(`the value stored at ${key} is not JSON-serialisable: ${(err as Error).message}`);
  }
  return text;
}

/** grpc-gateway turns `Grpc-Metadata-<name>` request headers into gRPC metadata `<name>`. */
export const REQUIRE_LEADER_HEADER = 'Grpc-Metadata-hasleader';

const defaultLogger: EtcdLogger = {
  info() {},
  warn(msg, fields) {
    console.error(`[etcd] warn: ${msg}`, fields ?? '');
  },
  error(msg, fields) {
    console.error(`[etcd] error: ${msg}`, fields ?? '');
  },
};

/** etcd refused the token (expired simple token) or wants one. */
class EtcdAuthError extends StoreError {
  override name = 'StoreError';
}

/** No endpoint could be connected to (a read tried them all). */
class EtcdUnreachableError extends StoreError {
  override name = 'StoreError';
}

type WatchOutcome =
  | { kind: 'closed' }
  | { kind: 'idle' }
  /** `unreachable`: the watch could not connect to etcd at all */
  | { kind: 'resync'; reason: string; established: boolean; level: 'info' | 'warn'; unreachable?: boolean };

/** A write of this process, kept until the watch has caught up with it (`item` undefined: a delete). */
interface LocalWrite {
  rev: number;
  item: StoredItem | undefined;
}

export class EtcdStore implements ConfigStore {
  readonly kind = 'etcd';
  readonly prefix: string;

  private readonly endpoints: string[];
  private current = 0;
  private readonly fetchFn: typeof fetch;
  private readonly log: EtcdLogger;
  private readonly requestTimeoutMs: number;
  private readonly watchIdleMs: number;
  private readonly backoffMinMs: number;
  private readonly backoffMaxMs: number;
  private readonly credentials: { name: string; password: string } | undefined;
  private token: string | undefined;
  private authDisabled = false;
  private authing: Promise<void> | undefined;

  /** The mirror: config items under `<prefix>/`. Item objects are replaced, never changed in place. */
  private items = new Map<string, StoredItem>();
  private sorted: StoredItem[] | undefined;
  /** Every event up to this revision has been applied (range revision or last watch event). */
  private watchRev = 0;
  /** The revision `load()` reports: `watchRev` or a newer own write. */
  private stateRev = 0;
  private clusterId: string | undefined;
  private readonly local = new Map<string, LocalWrite>();
  private readonly skippedLogged = new Set<string>();

  private readonly hub = new WatchHub();
  private closed = false;
  private readonly closing = new AbortController();
  private watchAbort: AbortController | undefined;
  private wake: (() => void) | undefined;
  /** The watch loop is waiting after etcd was unreachable: an answer from etcd to any request ends the wait. */
  private wakeWhenReachable = false;
  private loop: Promise<void> | undefined;
  /** Since when the watch has been interrupted (until a re-read succeeds); undefined while it is healthy. */
  private downSince: number | undefined;

  /** For the status API's readiness (src/runtime/status.ts): since when the watch is down, if it is. */
  watchDownSince(): number | undefined {
    return this.downSince;
  }

  private constructor(opts: EtcdStoreOptions) {
    if (!opts || !Array.isArray(opts.endpoints) || opts.endpoints.length === 0) {
      throw new RangeError('the etcd store needs at least one endpoint');
    }
    this.endpoints = opts.endpoints.map(normalizeEndpoint);
    this.prefix = normalizePrefix(opts.prefix);
    const f = opts.fetch ?? globalThis.fetch;
    if (typeof f !== 'function') throw new StoreError('the etcd store needs fetch');
    this.fetchFn = (input, init) => f(input, init);
    this.log = opts.logger ?? defaultLogger;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 5000;
    this.watchIdleMs = opts.watchIdleMs ?? 60_000;
    this.backoffMinMs = opts.backoffMinMs ?? 100;
    this.backoffMaxMs = Math.max(this.backoffMinMs, opts.backoffMaxMs ?? 5000);
    if (opts.user !== undefined && opts.user !== '') {
      this.credentials = { name: opts.user, password: opts.password ?? '' };
    }
  }

  /** Connect, read the whole prefix and start following it. Throws {@link StoreError} when etcd cannot be read. */
  static async open(opts: EtcdStoreOptions): Promise<EtcdStore> {
    const store = new EtcdStore(opts);
    try {
      await store.resync();
    } catch (err) {
      await store.close();
      throw err;
    }
    store.loop = store.runWatch();
    return store;
  }

  // -------------------------------------------------------------------------------------------
  // ConfigStore

  async load(): Promise<StoreState> {
    this.assertOpen();
    if (!this.sorted) this.sorted = [...this.items.values()].sort((a, b) => compareKeys(a.key, b.key));
    return { revision: this.stateRev, items: this.sorted.map(copyItem) };
  }

  async get(key: string): Promise<StoredItem | undefined> {
    this.assertOpen();
    const it = this.items.get(key);
    return it && copyItem(it);
  }

  /** Read `key` from etcd (a linearizable range) and bring the mirror up to date with it. */
  async getLatest(key: string): Promise<StoredItem | undefined> {
    this.assertOpen();
    checkKey(this.prefix, key);
    const res = await this.request<RangeResponse>('/v3/kv/range', { key: b64(key) }, false);
    const item = this.noteLatest(key, res.kvs?.[0], num(res.header?.revision));
    return item && copyItem(item);
  }

  async put(
    key: string,
    value: Record<string, unknown>,
    opts: PutOptions = {},
  ): Promise<{ item: StoredItem; created: boolean }> {
    this.assertOpen();
    checkKey(this.prefix, key);
    const expect = validExpect(opts.expect);
    const text = toJsonText(key, value);
    const stored = JSON.parse(text) as Record<string, unknown>;
    const put = { key: b64(key), value: b64(text), prev_kv: true };
    let header: EtcdHeader | undefined;
    let prev: EtcdKv | undefined;
    if (expect === undefined) {
      const res = await this.request<PutResponse>('/v3/kv/put', put, true);
      header = res.header;
      prev = res.prev_kv;
    } else {
      const res = await this.request<TxnResponse>('/v3/kv/txn', this.casTxn(key, expect, { request_put: put }), true);
      if (!res.succeeded) this.conflict(key, expect, res);
      header = res.header;
      prev = res.responses?.[0]?.response_put?.prev_kv;
    }
    const rev = num(header?.revision);
    const item: StoredItem = {
      key,
      value: stored,
      createdIndex: prev ? num(prev.create_revision) : rev,
      modifiedIndex: rev,
    };
    this.applyLocal(key, rev, item);
    return { item: copyItem(item), created: !prev };
  }

  async delete(key: string, opts: PutOptions = {}): Promise<StoredItem | undefined> {
    this.assertOpen();
    checkKey(this.prefix, key);
    const expect = validExpect(opts.expect);
    const del = { key: b64(key), prev_kv: true };
    let res: DeleteRangeResponse | undefined;
    let header: EtcdHeader | undefined;
    if (expect === undefined) {
      res = await this.request<DeleteRangeResponse>('/v3/kv/deleterange', del, true);
      header = res.header;
    } else {
      const txn = await this.request<TxnResponse>(
        '/v3/kv/txn',
        this.casTxn(key, expect, { request_delete_range: del }),
        true,
      );
      if (!txn.succeeded) this.conflict(key, expect, txn);
      header = txn.header;
      res = txn.responses?.[0]?.response_delete_range;
    }
    const prev = res?.prev_kvs?.[0];
    if (num(res?.deleted) === 0 || !prev) {
      // Nothing there in etcd: a stale mirror entry goes away with the watch event of whoever deleted it.
      return undefined;
    }
    const rev = num(header?.revision);
    const parsed = this.parseValue(key, prev.value, false);
    const gone: StoredItem = {
      key,
      value: parsed ?? {},
      createdIndex: num(prev.create_revision),
      modifiedIndex: num(prev.mod_revision),
    };
    this.applyLocal(key, rev, undefined);
    return gone;
  }

  /** APISIX's id scheme: write `<prefix>/gen_id` = `1` and take the revision of that write. */
  async nextId(): Promise<number> {
    this.assertOpen();
    const res = await this.request<PutResponse>(
      '/v3/kv/put',
      { key: b64(`${this.prefix}/gen_id`), value: b64('1') },
      true,
    );
    const rev = num(res.header?.revision);
    if (!(rev > 0)) throw new StoreError('etcd answered a put of gen_id without a revision');
    return rev;
  }

  watch(onChange: () => void): () => void {
    return this.hub.add(onChange);
  }

  async close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.closing.abort();
      this.watchAbort?.abort();
      this.wake?.();
      this.hub.clear();
    }
    await this.loop;
  }

  // -------------------------------------------------------------------------------------------
  // Mirror

  private assertOpen(): void {
    if (this.closed) throw new StoreError('the etcd config store is closed');
  }

  /** The JSON object stored in `value`, or undefined (logged once per key when `logSkip`). */
  private parseValue(key: string, value: string | undefined, logSkip: boolean): Record<string, unknown> | undefined {
    const text = unb64(value);
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    if (isPlainObject(parsed)) {
      this.skippedLogged.delete(key);
      return parsed;
    }
    if (logSkip && key !== `${this.prefix}/gen_id` && !this.skippedLogged.has(key)) {
      this.skippedLogged.add(key);
      const placeholder = key.endsWith('/') || key === `${this.prefix}/plugins`;
      this.log[placeholder ? 'info' : 'warn']('etcd: skipping a key whose value is not a JSON object', {
        key,
        value: text.length > 80 ? `${text.slice(0, 80)}…` : text,
      });
    }
    return undefined;
  }

  /** The config item of a range/watch kv, or undefined when it is outside `<prefix>/` or not a JSON object. */
  private toItem(kv: EtcdKv): StoredItem | undefined {
    const key = unb64(kv.key);
    if (!key.startsWith(`${this.prefix}/`)) return undefined;
    const value = this.parseValue(key, kv.value, true);
    if (!value) return undefined;
    return { key, value, createdIndex: num(kv.create_revision), modifiedIndex: num(kv.mod_revision) };
  }

  private changed(): void {
    this.sorted = undefined;
  }

  /** Apply the result of an own write at revision `rev` (read-your-writes). */
  private applyLocal(key: string, rev: number, item: StoredItem | undefined): void {
    if (!(rev > 0) || rev <= this.watchRev) return; // the watch has already applied this and maybe more
    const known = this.local.get(key);
    if (known && known.rev >= rev) return;
    const cur = this.items.get(key);
    if (cur && cur.modifiedIndex >= rev) return;
    this.local.set(key, { rev, item });
    if (item) this.items.set(key, item);
    else if (!this.items.delete(key)) {
      this.stateRev = Math.max(this.stateRev, rev);
      return;
    }
    this.changed();
    this.stateRev = Math.max(this.stateRev, rev);
    this.hub.emit();
  }

  /** Apply one batch of watch events; true when the config changed. */
  private applyEvents(events: WatchEvent[]): boolean {
    const dir = `${this.prefix}/`;
    let changed = false;
    let maxRev = this.watchRev;
    for (const ev of events) {
      const kv = ev.kv;
      if (!kv) continue;
      const rev = num(kv.mod_revision);
      maxRev = Math.max(maxRev, rev);
      const key = unb64(kv.key);
      if (!key.startsWith(dir)) continue;
      const own = this.local.get(key);
      if (own) {
        if (own.rev >= rev) {
          if (own.rev === rev) this.local.delete(key); // our own write, already applied
          continue;
        }
        this.local.delete(key); // someone changed the key after our write
      }
      const cur = this.items.get(key);
      if (cur && cur.modifiedIndex >= rev) continue;
      if (ev.type === 'DELETE') {
        if (cur) {
          this.items.delete(key);
          changed = true;
        }
        continue;
      }
      const item = this.toItem(kv);
      if (item) {
        this.items.set(key, item);
        changed = true;
      } else if (cur) {
        this.items.delete(key); // overwritten with something that is not a config object
        changed = true;
      }
    }
    this.watchRev = maxRev;
    this.stateRev = Math.max(this.stateRev, maxRev);
    for (const [key, w] of this.local) if (w.rev <= maxRev) this.local.delete(key);
    if (changed) this.changed();
    return changed;
  }

  /** Read the whole prefix and replace the mirror (kept as it was when the read fails). */
  private async resync(): Promise<void> {
    const res = await this.request<RangeResponse>(
      '/v3/kv/range',
      { key: b64(this.prefix), range_end: prefixRangeEnd(this.prefix) },
      false,
    );
    const rev = num(res.header?.revision);
    const clusterId = res.header?.cluster_id;
    const items = new Map<string, StoredItem>();
    for (const kv of res.kvs ?? []) {
      const item = this.toItem(kv);
      if (item) items.set(item.key, item);
    }
    let lostHistory = false;
    if (this.loop !== undefined || this.watchRev > 0) {
      if (rev < this.watchRev) {
        lostHistory = true;
        this.log.warn('etcd: the revision went backwards (etcd lost its data?); the config is read afresh', {
          from: this.watchRev,
          to: rev,
        });
      } else if (clusterId && this.clusterId && clusterId !== this.clusterId) {
        lostHistory = true;
        this.log.warn('etcd: the cluster id changed; the config is read afresh', {
          from: this.clusterId,
          to: clusterId,
        });
      }
    }
    if (clusterId) this.clusterId = clusterId;
    if (lostHistory) this.local.clear();
    let localRev = 0;
    for (const [key, w] of this.local) {
      if (w.rev <= rev) {
        this.local.delete(key);
        continue;
      }
      localRev = Math.max(localRev, w.rev);
      if (w.item) items.set(key, w.item);
      else items.delete(key);
    }
    let changed = lostHistory || items.size !== this.items.size;
    if (!changed) {
      for (const [key, it] of items) {
        const old = this.items.get(key);
        if (!old || old.modifiedIndex !== it.modifiedIndex || old.createdIndex !== it.createdIndex) {
          changed = true;
          break;
        }
      }
    }
    this.items = items;
    this.watchRev = rev;
    this.stateRev = Math.max(rev, localRev);
    this.changed();
    if (changed && this.loop !== undefined) this.hub.emit();
  }

  // -------------------------------------------------------------------------------------------
  // Watch loop

  private async runWatch(): Promise<void> {
    let failures = 0;
    let needResync = false;
    while (!this.closed) {
      if (needResync) {
        try {
          await this.resync();
          needResync = false;
          this.downSince = undefined;
          this.log.info('etcd: config re-read', { revision: this.watchRev, items: this.items.size });
        } catch (err) {
          if (this.closed) break;
          failures++;
          const delay = this.backoffDelay(failures);
          this.log.warn('etcd: re-reading the config failed; serving the last good config', {
            error: describeError(err),
            attempt: failures,
            retry_in_ms: delay,
          });
          await this.backoff(delay, err instanceof EtcdUnreachableError);
          continue;
        }
      }
      let outcome: WatchOutcome;
      try {
        outcome = await this.watchOnce();
      } catch (err) {
        outcome = {
          kind: 'resync',
          reason: describeError(err),
          established: false,
          level: 'warn',
          unreachable: isConnectError(err),
        };
      }
      if (this.closed || outcome.kind === 'closed') break;
      if (outcome.kind === 'idle') {
        this.log.info('etcd: watch idle; re-creating it from the same revision', { revision: this.watchRev + 1 });
        continue;
      }
      needResync = true;
      this.downSince ??= Date.now();
      if (outcome.established) failures = 0;
      failures++;
      const delay = this.backoffDelay(failures);
      this.log[outcome.level]('etcd: watch interrupted; re-reading the config', {
        reason: outcome.reason,
        attempt: failures,
        retry_in_ms: delay,
      });
      await this.backoff(delay, outcome.unreachable === true);
    }
  }

  /** The wait before retry number `failures` (1, 2, ...): `backoffMinMs` doubling up to `backoffMaxMs`, times 0.5-1. */
  private backoffDelay(failures: number): number {
    const base = Math.min(this.backoffMaxMs, this.backoffMinMs * 2 ** Math.min(failures - 1, 30));
    return Math.round(base * (0.5 + Math.random() * 0.5));
  }

  /**
   * Wait `ms`, or until the store is closed; with `untilReachable` (etcd could not be reached), also until another
   * request gets an answer from etcd.
   */
  private backoff(ms: number, untilReachable = false): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.wake = undefined;
        this.wakeWhenReachable = false;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wake = done;
      this.wakeWhenReachable = untilReachable;
    });
  }

  /** etcd answered a request: a watch loop waiting for etcd to be reachable again goes on now. */
  private reachable(): void {
    if (!this.wakeWhenReachable) return;
    this.log.info('etcd: answering again; resuming the watch now');
    this.wake?.();
  }

  /** Follow the prefix from `watchRev + 1` until the stream stops; says what to do next. */
  private async watchOnce(): Promise<WatchOutcome> {
    const idx = this.current;
    const endpoint = this.endpoints[idx]!;
    const start = this.watchRev + 1;
    const ac = new AbortController();
    this.watchAbort = ac;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let timedOut = false;
    let established = false;
    const arm = (ms: number) => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        timedOut = true;
        ac.abort();
      }, ms);
    };
    arm(this.requestTimeoutMs);
    // Require a leader (gRPC metadata `hasleader: true`): a member cut off from the quorum ends the watch with
    // "etcdserver: no leader" rather than leaving it open and silent.
    const headers: Record<string, string> = { 'content-type': 'application/json', [REQUIRE_LEADER_HEADER]: 'true' };
    if (this.token) headers.authorization = this.token;
    const body = JSON.stringify({
      create_request: {
        key: b64(`${this.prefix}/`),
        range_end: b64(`${this.prefix}0`),
        start_revision: String(start),
        progress_notify: true,
      },
    });
    try {
      if (this.closed) return { kind: 'closed' };
      if (this.credentials && !this.token && !this.authDisabled) {
        await this.authenticate();
        if (this.token) headers.authorization = this.token;
      }
      const res = await this.fetchFn(`${endpoint}/v3/watch`, { method: 'POST', headers, body, signal: ac.signal });
      if (!res.ok || !res.body) {
        const text = await res.text().catch(() => '');
        const msg = errorMessage(text) ?? `HTTP ${res.status}`;
        if (isAuthProblem(res.status, msg)) this.token = undefined;
        else this.rotate(idx, `${endpoint}/v3/watch answered ${res.status}: ${msg}`);
        return {
          kind: 'resync',
          reason: `${endpoint}/v3/watch answered ${res.status}: ${msg}`,
          established,
          level: 'warn',
        };
      }
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) {
          // The last message may have no newline: grpc-gateway ends the stream right after an error message
          // (e.g. "etcdserver: no leader"), so what is left is read as one more line.
          buf += decoder.decode();
          if (buf.trim() === '') {
            this.rotate(idx, 'the watch stream ended');
            return { kind: 'resync', reason: `${endpoint}: the watch stream ended`, established, level: 'warn' };
          }
          buf += '\n';
        } else {
          buf += decoder.decode(value, { stream: true });
        }
        let changed = false;
        let nl = buf.indexOf('\n');
        while (nl >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          nl = buf.indexOf('\n');
          if (!line) continue;
          let msg: { result?: WatchResult; error?: { message?: string; grpc_code?: number } };
          try {
            msg = JSON.parse(line);
          } catch {
            return { kind: 'resync', reason: `${endpoint}: unreadable watch message`, established, level: 'warn' };
          }
          if (msg.error) {
            const text = msg.error.message ?? JSON.stringify(msg.error);
            if (isAuthProblem(0, text)) this.token = undefined;
            else this.rotate(idx, `watch error: ${text}`); // e.g. "etcdserver: no leader"
            if (changed) this.hub.emit();
            return { kind: 'resync', reason: `${endpoint}: watch error: ${text}`, established, level: 'warn' };
          }
          const r = msg.result;
          if (!r) continue;
          if (r.canceled) {
            if (changed) this.hub.emit();
            if (r.compact_revision !== undefined && num(r.compact_revision) > 0) {
              return {
                kind: 'resync',
                reason: `etcd compacted revision ${r.compact_revision} (the watch wanted ${start})`,
                established: true,
                level: 'info',
              };
            }
            const reason = r.cancel_reason ?? 'no reason given';
            const auth = isAuthProblem(0, reason);
            if (auth) this.token = undefined; // expired simple token: routine, renewed by the re-read
            else this.rotate(idx, `watch canceled: ${reason}`);
            return {
              kind: 'resync',
              reason: `${endpoint}: watch canceled: ${reason}`,
              established,
              level: auth ? 'info' : 'warn',
            };
          }
          if (r.created) {
            const rev = num(r.header?.revision);
            const cluster = r.header?.cluster_id;
            if (rev < this.watchRev || (cluster && this.clusterId && cluster !== this.clusterId)) {
              return {
                kind: 'resync',
                reason: `the revision went backwards (${this.watchRev} -> ${rev}) or the cluster changed`,
                established: true,
                level: 'warn',
              };
            }
            established = true;
          }
          if (r.events?.length && this.applyEvents(r.events)) changed = true;
          arm(this.watchIdleMs); // any message (created, events, progress) shows the watch is alive
        }
        if (changed) this.hub.emit();
      }
    } catch (err) {
      if (this.closed) return { kind: 'closed' };
      if (timedOut && established) {
        // Nothing, not even a progress notification, for watchIdleMs: this member may have stopped following
        // the cluster; the watch is re-created (from the same revision) on the next endpoint.
        this.rotate(idx, `no watch message for ${this.watchIdleMs} ms`, 'info');
        return { kind: 'idle' };
      }
      this.rotate(idx, err);
      const reason = timedOut
        ? `${endpoint}/v3/watch: no answer within ${this.requestTimeoutMs} ms`
        : `${endpoint}/v3/watch: ${describeError(err)}`;
      return { kind: 'resync', reason, established, level: 'warn', unreachable: !timedOut && isConnectError(err) };
    } finally {
      clearTimeout(timer);
      ac.abort(); // etcd keeps a canceled watch's stream open
      if (this.watchAbort === ac) this.watchAbort = undefined;
    }
  }

  // -------------------------------------------------------------------------------------------
  // Requests

  private casTxn(key: string, expect: number, op: Record<string, unknown>): Record<string, unknown> {
    const compare =
      expect === 0
        ? { key: b64(key), target: 'CREATE', result: 'EQUAL', create_revision: '0' }
        : { key: b64(key), target: 'MOD', result: 'EQUAL', mod_revision: String(expect) };
    return { compare: [compare], success: [op], failure: [{ request_range: { key: b64(key) } }] };
  }

  /**
   * Throw the conflict of a failed compare. The failure branch read the key's current state: it goes into the
   * mirror (which may trail etcd) and into the error, for the caller to retry from.
   */
  private conflict(key: string, expect: number, res: TxnResponse): never {
    const kv = res.responses?.[0]?.response_range?.kvs?.[0];
    const item = this.noteLatest(key, kv, num(res.responses?.[0]?.response_range?.header?.revision ?? res.header?.revision));
    const index: StoredItem | undefined = kv
      ? { key, value: {}, createdIndex: num(kv.create_revision), modifiedIndex: num(kv.mod_revision) }
      : undefined;
    let message = `${key} was changed by someone else (expected modifiedIndex ${expect})`;
    try {
      checkExpect(key, index, expect);
    } catch (err) {
      message = (err as Error).message;
    }
    throw new StoreConflictError(message, { item: item && copyItem(item), modifiedIndex: index?.modifiedIndex ?? 0 });
  }

  /**
   * Put a key's state read from etcd at `rev` (`kv` undefined: the key does not exist) into the mirror, unless the
   * mirror already holds something as new; returns the config item (undefined: absent or not a JSON object).
   */
  private noteLatest(key: string, kv: EtcdKv | undefined, rev: number): StoredItem | undefined {
    const item = kv ? this.toItem(kv) : undefined;
    const at = kv ? num(kv.mod_revision) : rev;
    // Kept as an own write until the watch catches up: older watch events for the key are then ignored.
    this.applyLocal(key, at, item);
    return item;
  }

  private rotate(failed: number, err: unknown, level: 'info' | 'warn' = 'warn'): void {
    if (this.endpoints.length < 2 || this.current !== failed) return;
    this.current = (failed + 1) % this.endpoints.length;
    this.log[level](level === 'warn' ? 'etcd: endpoint failed; switching to the next one' : 'etcd: switching to the next endpoint', {
      failed: this.endpoints[failed],
      next: this.endpoints[this.current],
      error: describeError(err),
    });
  }

  /** POST a JSON request to etcd, authenticating first / again when needed. */
  private async request<T>(path: string, body: unknown, write: boolean): Promise<T> {
    if (this.credentials && !this.token && !this.authDisabled) await this.authenticate();
    try {
      return await this.send<T>(path, body, write, true);
    } catch (err) {
      if (!(err instanceof EtcdAuthError) || !this.credentials || this.closed) throw err;
      this.token = undefined;
      this.authDisabled = false;
      await this.authenticate();
      return await this.send<T>(path, body, write, true);
    }
  }

  /** One request, tried on each endpoint in turn (from the current one) while they fail to connect. */
  private async send<T>(path: string, body: unknown, write: boolean, withToken: boolean): Promise<T> {
    const failures: string[] = [];
    const payload = JSON.stringify(body);
    for (let tries = 0; tries < this.endpoints.length; tries++) {
      this.assertOpen();
      const idx = this.current;
      const url = `${this.endpoints[idx]}${path}`;
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      if (withToken && this.token) headers.authorization = this.token;
      const ac = new AbortController();
      const onClose = () => ac.abort();
      this.closing.signal.addEventListener('abort', onClose);
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        ac.abort();
      }, this.requestTimeoutMs);
      let status: number;
      let text: string;
      try {
        const res = await this.fetchFn(url, { method: 'POST', headers, body: payload, signal: ac.signal });
        status = res.status;
        text = await res.text();
      } catch (err) {
        if (this.closed) throw new StoreError('the etcd config store is closed');
        const why = timedOut ? `no answer within ${this.requestTimeoutMs} ms` : describeError(err);
        failures.push(`${url}: ${why}`);
        this.rotate(idx, timedOut ? why : err);
        if (write && (timedOut || !isConnectError(err))) {
          throw new StoreError(`etcd request ${url} failed: ${why} (the write may or may not have been applied)`);
        }
        continue;
      } finally {
        clearTimeout(timer);
        this.closing.signal.removeEventListener('abort', onClose);
      }
      if (status >= 200 && status < 300) {
        this.reachable();
        try {
          return JSON.parse(text) as T;
        } catch {
          throw new StoreError(`etcd request ${url} answered ${status} with a body that is not JSON`);
        }
      }
      const msg = errorMessage(text) ?? (text.trim().slice(0, 200) || `HTTP ${status}`);
      if (isAuthProblem(status, msg)) {
        const hint = this.credentials ? '' : ' (etcd requires authentication: configure a user and password)';
        throw new EtcdAuthError(`etcd request ${url} was refused: ${msg}${hint}`);
      }
      if (status === 503 && !write) {
        // e.g. "etcdserver: no leader": another member may do better.
        failures.push(`${url}: ${status} ${msg}`);
        this.rotate(idx, msg);
        continue;
      }
      throw new StoreError(`etcd request ${url} answered ${status}: ${msg}`);
    }
    throw new EtcdUnreachableError(`etcd is unreachable: ${failures.join('; ')}`);
  }

  private authenticate(): Promise<void> {
    this.authing ??= this.doAuthenticate().finally(() => {
      this.authing = undefined;
    });
    return this.authing;
  }

  private async doAuthenticate(): Promise<void> {
    const creds = this.credentials!;
    try {
      const res = await this.send<{ token?: string }>('/v3/auth/authenticate', creds, false, false);
      if (!res.token) throw new StoreError('etcd answered /v3/auth/authenticate without a token');
      this.token = res.token;
      this.authDisabled = false;
    } catch (err) {
      if (err instanceof StoreError && /authentication is not enabled/.test(err.message)) {
        if (!this.authDisabled) {
          this.log.warn('etcd: a user is configured but etcd authentication is not enabled; going on without it', {
            user: creds.name,
          });
        }
        this.authDisabled = true;
        this.token = undefined;
        return;
      }
      if (err instanceof StoreError && !(err instanceof EtcdAuthError) && /authentication failed/.test(err.message)) {
        throw new StoreError(`etcd authentication failed for user ${JSON.stringify(creds.name)}: ${err.message}`);
      }
      throw err;
    }
  }
}

function validExpect(expect: number | undefined): number | undefined {
  if (expect === undefined) return undefined;
  if (!Number.isSafeInteger(expect) || expect < 0) {
    throw new RangeError(`invalid expect ${expect}: it must be 0 or a modifiedIndex`);
  }
  return expect;
}

/** The `message`/`error` of an etcd error body, if the text is one. */
function errorMessage(text: string): string | undefined {
  try {
    const body = JSON.parse(text) as EtcdErrorBody;
    return body.message || body.error || undefined;
  } catch {
    return undefined;
  }
}

/** etcd rejected the token (expired, wrong) or wanted one. */
function isAuthProblem(status: number, msg: string): boolean {
  return status === 401 || /invalid auth token|user name is empty|auth token is expired/i.test(msg);
}

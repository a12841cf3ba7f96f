/**
 * The file config store for Node and Bun: the memory store's state, persisted as one JSON file
 * `<dir>/config.json` holding the revision and every item.
 *
 * Durability: writes are serialised through a queue. Each write computes the new state on a copy of the table,
 * writes it to `config.json.tmp-<pid>-<n>` (mode 0600), fsyncs it, renames it over `config.json` and fsyncs
 * the directory; only then does the in-memory state change. A crash at any moment leaves the old or the new
 * complete file; a failed write leaves memory and file as they were and throws a {@link StoreError}.
 *
 * Other processes: before each write and on every change notice, the store compares `config.json`'s
 * inode/size/mtime with what it last read or wrote, and re-reads the file when it differs. Changes are noticed
 * by `fs.watch` on the directory (fast, best effort) plus a stat poll every `pollIntervalMs` (1 s by default).
 * There is no lock: two processes writing at the same instant can still lose one write; use one writer.
 */
import * as nodeFs from 'node:fs';
import * as fsp from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { checkKey, copyItem, isPlainObject, normalizePrefix, StoreTable, WatchHub } from './memory.ts';
import type { ConfigStore, PutOptions, StoredItem, StoreState } from './types.ts';
import { StoreError } from './types.ts';

/** The subset of `node:fs/promises` the store uses; tests may inject failures through it. */
export type FileStoreFs = Pick<typeof fsp, 'open' | 'rename' | 'unlink' | 'readdir' | 'mkdir' | 'stat'>;

export interface FileStoreOptions {
  /** Directory of `config.json`; created with mode 0700 when missing. */
  dir: string;
  /** Key prefix, `/apisix` by default. */
  prefix?: string;
  /** Notice other processes replacing `config.json` (fs.watch + stat poll). Default true. */
  watchFile?: boolean;
  /** Stat poll interval for other processes' changes, ms. Default 1000. */
  pollIntervalMs?: number;
  /** Background problems (another process wrote a corrupt file, a directory fsync failed). Default console.error. */
  onError?: (err: Error) => void;
  /** File system functions; for tests only. */
  fs?: FileStoreFs;
}

export const CONFIG_FILE_NAME = 'config.json';
const TMP_RE = /^config\.json\.tmp-(\d+)-(\d+)$/;
/** The on-disk format version, written as `"fngate_store"`. */
const FORMAT = 1;

/** Temp file counter: module-wide so that two stores on one directory in one process never collide. */
let tmpCounter = 0;
/** Temp files being written by this process right now (never removed as leftovers). */
const inFlight = new Set<string>();

function errCode(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : 'EUNKNOWN';
}

/**
 * `mkdir -p` without `{ recursive: true }`: Node's (libuv's) recursive mkdir never returns for a path under a file
 * system that refuses to create anything, such as `/proc/nope` (it loops at 100 % CPU), where this fails with
 * ENOENT. Each missing ancestor is created with a plain mkdir, from the top down; one that exists must be a directory.
 */
export async function makeDirectory(dir: string, mode: number, fs: Pick<FileStoreFs, 'mkdir' | 'stat'> = fsp): Promise<void> {
  try {
    await fs.mkdir(dir, { mode });
    return;
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'EEXIST') {
      if ((await fs.stat(dir)).isDirectory()) return;
      throw Object.assign(new Error(`${dir} exists and is not a directory`), { code: 'ENOTDIR' });
    }
    if (code !== 'ENOENT' || dirname(dir) === dir) throw err;
  }
  await makeDirectory(dirname(dir), mode, fs);
  try {
    await fs.mkdir(dir, { mode });
  } catch (err) {
    // Created by someone else meanwhile: fine if it is a directory.
    if ((err as { code?: string }).code !== 'EEXIST' || !(await fs.stat(dir)).isDirectory()) throw err;
  }
}

function describeErr(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  const msg = err instanceof Error ? err.message : String(err);
  return typeof code === 'string' && !msg.startsWith(code) ? `${code}: ${msg}` : msg;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errCode(err) === 'EPERM';
  }
}

/** The text of the store file: one item per line so that it stays readable and diffable. */
/**
 * One line of the file per item. The table replaces an item object on every write and never changes one in
 * place, so the line of an unchanged item is remembered: a write to a 10,000-route store serializes one route.
 */
const lineCache = new WeakMap<StoredItem, string>();
function lineOf(item: StoredItem): string {
  let line = lineCache.get(item);
  if (line === undefined) {
    line = JSON.stringify(item);
    lineCache.set(item, line);
  }
  return line;
}

export function serializeState(revision: number, items: readonly StoredItem[]): string {
  const lines = items.map(lineOf);
  const body = lines.length ? `\n${lines.join(',\n')}\n` : '';
  return `{"fngate_store":${FORMAT},"revision":${revision},"items":[${body}]}\n`;
}

const isIndex = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 1;

/** Parse and check the text of a store file. Throws a {@link StoreError} naming `path` on any defect. */
export function parseStateFile(text: string, path: string): StoreState {
  const fail = (why: string): never => {
    throw new StoreError(
      `the config store file ${path} is corrupt (${why}); refusing to start with an empty config: ` +
        'restore the file from a backup, or move it away to start empty',
    );
  };
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    return fail(text.trim() === '' ? 'the file is empty' : `invalid JSON: ${(err as Error).message}`);
  }
  if (!isPlainObject(doc)) return fail('the top level is not an object');
  if (doc.fngate_store !== FORMAT)
    return fail(`unknown format ${JSON.stringify(doc.fngate_store)}, expected ${FORMAT}`);
  const revision = doc.revision;
  if (revision !== 0 && !isIndex(revision)) return fail('"revision" is not a non-negative integer');
  if (!Array.isArray(doc.items)) return fail('"items" is not an array');
  const seen = new Set<string>();
  const items: StoredItem[] = [];
  for (const [i, raw] of (doc.items as unknown[]).entries()) {
    if (!isPlainObject(raw)) return fail(`items[${i}] is not an object`);
    const { key, value, createdIndex, modifiedIndex } = raw;
    if (typeof key !== 'string' || key === '') return fail(`items[${i}].key is not a string`);
    if (seen.has(key)) return fail(`duplicate key ${key}`);
    seen.add(key);
    if (!isPlainObject(value)) return fail(`the value of ${key} is not an object`);
    if (!isIndex(createdIndex) || !isIndex(modifiedIndex) || createdIndex > modifiedIndex) {
      return fail(`bad createdIndex/modifiedIndex of ${key}`);
    }
    if (modifiedIndex > (revision as number)) return fail(`modifiedIndex of ${key} is above the store revision`);
    items.push({ key, value, createdIndex, modifiedIndex });
  }
  return { revision: revision as number, items };
}

interface Signature {
  ino: number;
  size: number;
  mtimeMs: number;
}
const sameSig = (a: Signature | undefined, b: Signature | undefined): boolean =>
  !!a && !!b && a.ino === b.ino && a.size === b.size && a.mtimeMs === b.mtimeMs;
const sigOf = (st: { ino: number; size: number; mtimeMs: number }): Signature => ({
  ino: st.ino,
  size: st.size,
  mtimeMs: st.mtimeMs,
});

export class FileStore implements ConfigStore {
  readonly kind: string = 'file';
  readonly prefix: string;
  /** Absolute path of `config.json`. */
  readonly file: string;
  readonly dir: string;

  private table: StoreTable;
  private sig: Signature | undefined;
  private readonly hub = new WatchHub();
  private readonly fs: FileStoreFs;
  private readonly onError: (err: Error) => void;
  private tail: Promise<unknown> = Promise.resolve();
  private closed = false;
  private timer: ReturnType<typeof setInterval> | undefined;
  private watcher: nodeFs.FSWatcher | undefined;
  private refreshQueued = false;
  private lastBackgroundError = '';

  private constructor(dir: string, prefix: string, fs: FileStoreFs, onError: (err: Error) => void) {
    this.dir = dir;
    this.file = join(dir, CONFIG_FILE_NAME);
    this.prefix = prefix;
    this.fs = fs;
    this.onError = onError;
    this.table = new StoreTable();
  }

  /**
   * Open (or create) the store in `dir`. Removes temp files left by a crashed writer, reads `config.json`
   * (a missing file starts an empty store and is written at once), and throws a {@link StoreError} when the
   * directory cannot be created or read, or when the file is corrupt.
   */
  static async open(opts: FileStoreOptions): Promise<FileStore> {
    const fs = opts.fs ?? fsp;
    const dir = resolve(opts.dir);
    const store = new FileStore(
      dir,
      normalizePrefix(opts.prefix),
      fs,
      opts.onError ?? ((err) => console.error(`config store: ${err.message}`)),
    );
    try {
      await makeDirectory(dir, 0o700, fs);
    } catch (err) {
      throw new StoreError(`cannot create the config store directory ${dir}: ${describeErr(err)}`, { cause: err });
    }
    await store.removeLeftovers();
    const read = await store.readFile();
    if (read) {
      store.table = new StoreTable(read.state);
      store.sig = read.sig;
    } else {
      await store.persist(store.table);
    }
    if (opts.watchFile !== false) store.startWatching(opts.pollIntervalMs ?? 1000);
    return store;
  }

  /** Delete `config.json.tmp-*` files whose writer is gone (a crash or kill between write and rename). */
  private async removeLeftovers(): Promise<void> {
    let names: string[];
    try {
      names = await this.fs.readdir(this.dir);
    } catch (err) {
      throw new StoreError(`cannot read the config store directory ${this.dir}: ${describeErr(err)}`, { cause: err });
    }
    for (const name of names) {
      const m = TMP_RE.exec(name);
      if (!m) continue;
      const path = join(this.dir, name);
      const pid = Number(m[1]);
      if (inFlight.has(path) || (pid !== process.pid && pidAlive(pid))) continue;
      await this.fs.unlink(path).catch((err: unknown) => {
        if (errCode(err) !== 'ENOENT') this.onError(new StoreError(`cannot remove ${path}: ${describeErr(err)}`));
      });
    }
  }

  /** Read and parse `config.json`; undefined when it does not exist. Stat and content come from one handle. */
  private async readFile(): Promise<{ state: StoreState; sig: Signature } | undefined> {
    let fh: fsp.FileHandle;
    try {
      fh = await this.fs.open(this.file, 'r');
    } catch (err) {
      if (errCode(err) === 'ENOENT') return undefined;
      throw new StoreError(`cannot read the config store file ${this.file}: ${describeErr(err)}`, { cause: err });
    }
    let text: string;
    let sig: Signature;
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw Object.assign(new Error('not a regular file'), { code: 'EISDIR' });
      sig = sigOf(st);
      text = await fh.readFile('utf8');
    } catch (err) {
      throw new StoreError(`cannot read the config store file ${this.file}: ${describeErr(err)}`, { cause: err });
    } finally {
      await fh.close().catch(() => {});
    }
    return { state: parseStateFile(text, this.file), sig };
  }

  /**
   * Write `table` to disk atomically. On failure nothing visible changed (the temp file is removed) and a
   * {@link StoreError} naming the path and the OS error code is thrown.
   */
  private async persist(table: StoreTable): Promise<void> {
    const text = serializeState(table.revision, table.items());
    let tmp = '';
    let fh: fsp.FileHandle | undefined;
    let sig: Signature;
    try {
      for (let attempt = 0; ; attempt++) {
        tmp = join(this.dir, `${CONFIG_FILE_NAME}.tmp-${process.pid}-${++tmpCounter}`);
        inFlight.add(tmp);
        try {
          fh = await this.fs.open(tmp, 'wx', 0o600);
          break;
        } catch (err) {
          inFlight.delete(tmp);
          // A leftover of an earlier process that had our pid: take the next number.
          if (errCode(err) !== 'EEXIST' || attempt >= 100) {
            tmp = '';
            throw err;
          }
        }
      }
      await fh.writeFile(text, 'utf8');
      await fh.sync();
      sig = sigOf(await fh.stat());
      await fh.close();
      fh = undefined;
      await this.fs.rename(tmp, this.file);
    } catch (err) {
      if (fh) await fh.close().catch(() => {});
      if (tmp) await this.fs.unlink(tmp).catch(() => {});
      throw new StoreError(
        `cannot write the config store file ${this.file}: ${describeErr(err)}; the change was not saved`,
        { cause: err },
      );
    } finally {
      if (tmp) inFlight.delete(tmp);
    }
    this.sig = sig;
    // The new file is in place and visible: a failed directory fsync only weakens durability across a power
    // loss, so it is reported, not thrown (throwing would claim the change failed while readers already see it).
    await this.syncDir().catch((err: unknown) => {
      this.onError(new StoreError(`cannot fsync the config store directory ${this.dir}: ${describeErr(err)}`));
    });
  }

  private async syncDir(): Promise<void> {
    let dh: fsp.FileHandle | undefined;
    try {
      dh = await this.fs.open(this.dir, 'r');
      await dh.sync();
    } catch (err) {
      // Platforms without directory fsync (Windows, some network file systems).
      if (!['EISDIR', 'EINVAL', 'EPERM', 'ENOTSUP', 'EBADF'].includes(errCode(err))) throw err;
    } finally {
      await dh?.close().catch(() => {});
    }
  }

  /** Run `task` after every earlier write/refresh has finished. */
  private enqueue<T>(task: () => Promise<T>): Promise<T> {
    const run = this.tail.then(task);
    this.tail = run.catch(() => {});
    return run;
  }

  /**
   * If another process replaced `config.json` since we last read or wrote it, load its content.
   * Returns true when the state was replaced. Throws a {@link StoreError} when the new file cannot be used.
   */
  private async refresh(): Promise<boolean> {
    let st: nodeFs.Stats;
    try {
      st = await this.fs.stat(this.file);
    } catch (err) {
      if (errCode(err) === 'ENOENT') return false; // removed: our state stays; the next write recreates it
      throw new StoreError(`cannot stat the config store file ${this.file}: ${describeErr(err)}`, { cause: err });
    }
    if (sameSig(this.sig, sigOf(st))) return false;
    const read = await this.readFile();
    if (!read) return false;
    this.table = new StoreTable(read.state);
    this.sig = read.sig;
    this.hub.emit();
    return true;
  }

  /** Apply `change` to a copy of the table, persist the copy, then swap it in. */
  private async mutate<T>(change: (next: StoreTable) => { result: T; changed: boolean; notify: boolean }): Promise<T> {
    this.assertOpen(); // checked at call time: writes queued before close() still complete
    return this.enqueue(async () => {
      await this.refresh();
      const next = this.table.clone();
      const { result, changed, notify } = change(next);
      if (!changed) return result;
      await this.persist(next);
      this.table = next;
      if (notify) this.hub.emit();
      return result;
    });
  }

  private startWatching(pollIntervalMs: number): void {
    const poke = () => this.scheduleRefresh();
    this.timer = setInterval(poke, pollIntervalMs);
    this.timer.unref?.();
    try {
      this.watcher = nodeFs.watch(this.dir, { persistent: false }, (_event, name) => {
        if (name == null || String(name) === CONFIG_FILE_NAME) poke();
      });
      this.watcher.on('error', () => {
        this.watcher?.close();
        this.watcher = undefined; // the poll still runs
      });
    } catch {
      this.watcher = undefined; // fs.watch unsupported here: rely on the poll
    }
  }

  private scheduleRefresh(): void {
    if (this.refreshQueued || this.closed) return;
    this.refreshQueued = true;
    void this.enqueue(async () => {
      this.refreshQueued = false;
      if (this.closed) return;
      try {
        await this.refresh();
        this.lastBackgroundError = '';
      } catch (err) {
        const e = err instanceof Error ? err : new Error(String(err));
        if (e.message !== this.lastBackgroundError) this.onError(e); // once per distinct problem
        this.lastBackgroundError = e.message;
      }
    });
  }

  private assertOpen(): void {
    if (this.closed) throw new StoreError(`the config store ${this.file} is closed`);
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
    checkKey(this.prefix, key);
    return this.mutate((next) => {
      const { item, created } = next.put(key, value, opts.expect);
      return { result: { item: copyItem(item), created }, changed: true, notify: true };
    });
  }

  async delete(key: string, opts: PutOptions = {}): Promise<StoredItem | undefined> {
    checkKey(this.prefix, key);
    return this.mutate((next) => {
      const gone = next.delete(key, opts.expect);
      return { result: gone && copyItem(gone), changed: !!gone, notify: !!gone };
    });
  }

  /** A new revision, persisted before it is returned: unique across restarts. Watchers are not notified. */
  async nextId(): Promise<number> {
    return this.mutate((next) => ({ result: next.bump(), changed: true, notify: false }));
  }

  watch(onChange: () => void): () => void {
    return this.hub.add(onChange);
  }

  /** Stop watching the file and wait for queued writes to finish. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.watcher?.close();
    this.watcher = undefined;
    this.hub.clear();
    await this.tail;
  }
}

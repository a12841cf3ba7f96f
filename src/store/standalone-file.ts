/**
 * The Node/Bun source of a {@link StandaloneStore}: the file named by `CONFIG_FILE` (APISIX's `conf/apisix.yaml`).
 * The format follows the extension (`.yaml` / `.yml` / `.json`). Changes are noticed like APISIX does, by a
 * stat poll every second (mtime, size and inode), plus `fs.watch` on the file's directory for a faster reaction
 * (best effort; editors that replace the file by rename are seen by both). A reload whose text is unchanged does
 * nothing; one that fails to parse keeps the previous config and is reported through `onError`.
 */
import * as nodeFs from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { basename, dirname, extname, resolve } from 'node:path';
import type { StandaloneFormat, StandaloneSource } from './standalone.ts';
import { StandaloneStore } from './standalone.ts';
import { StoreError } from './types.ts';

/** The config format of `path`, from its extension. Throws a {@link StoreError} for any other extension. */
export function standaloneFormatOf(path: string): StandaloneFormat {
  const ext = extname(path).toLowerCase();
  if (ext === '.yaml' || ext === '.yml') return 'yaml';
  if (ext === '.json') return 'json';
  throw new StoreError(`CONFIG_FILE ${path}: unknown config format "${ext}"; name the file *.yaml, *.yml or *.json`);
}

export interface StandaloneFileSourceOptions {
  /** Stat poll interval, ms. Default 1000 (APISIX's timer). 0 disables polling. */
  pollIntervalMs?: number;
  /** Also use fs.watch on the directory. Default true. */
  fsWatch?: boolean;
}

/** A {@link StandaloneSource} reading `path`. */
export function standaloneFileSource(path: string, opts: StandaloneFileSourceOptions = {}): StandaloneSource {
  const file = resolve(path);
  const describe = `CONFIG_FILE ${file}`;
  return {
    describe,
    async read() {
      try {
        return await readFile(file, 'utf8');
      } catch (err) {
        const code = (err as { code?: string }).code;
        throw new StoreError(`cannot read ${describe}: ${code ?? (err as Error).message}`, { cause: err });
      }
    },
    watch(onChange) {
      const pollMs = opts.pollIntervalMs ?? 1000;
      let last = '';
      let stopped = false;
      const signature = async (): Promise<string> => {
        try {
          const st = await stat(file);
          return `${st.ino}:${st.size}:${st.mtimeMs}`;
        } catch (err) {
          return `error:${(err as { code?: string }).code ?? 'unknown'}`;
        }
      };
      // `last` starts unknown, so the first check re-reads once: a change made between the store's first read
      // and this point is not missed (an unchanged text costs one read and nothing else).
      const check = async () => {
        const s = await signature();
        if (stopped || s === last) return;
        last = s;
        onChange();
      };
      let timer: ReturnType<typeof setInterval> | undefined;
      if (pollMs > 0) {
        timer = setInterval(() => void check(), pollMs);
        timer.unref?.();
      }
      let watcher: nodeFs.FSWatcher | undefined;
      if (opts.fsWatch !== false) {
        try {
          const name = basename(file);
          watcher = nodeFs.watch(dirname(file), { persistent: false }, (_event, changed) => {
            // The stat check still decides, so that events for our own reads or for other files cost nothing.
            if (changed == null || String(changed) === name) void check();
          });
          watcher.on('error', () => {
            watcher?.close();
            watcher = undefined;
          });
        } catch {
          watcher = undefined; // unsupported here: the poll still runs
        }
      }
      return () => {
        stopped = true;
        if (timer) clearInterval(timer);
        watcher?.close();
      };
    },
  };
}

export interface OpenStandaloneFileOptions extends StandaloneFileSourceOptions {
  /** The `CONFIG_FILE` path. */
  path: string;
  /** Environment for `${{VAR}}` substitution; `process.env` by default. */
  env?: Record<string, string | undefined>;
  prefix?: string;
  /** A reload failed and the previous config stays in force. Default: console.error. */
  onError?: (err: Error) => void;
}

/**
 * Open a read-only store over `CONFIG_FILE`. A missing, unreadable or invalid file throws a {@link StoreError}
 * with a clear message: the gateway should refuse to start.
 */
export async function openStandaloneFile(opts: OpenStandaloneFileOptions): Promise<StandaloneStore> {
  return StandaloneStore.open({
    source: standaloneFileSource(opts.path, opts),
    format: standaloneFormatOf(opts.path),
    env: opts.env ?? process.env,
    prefix: opts.prefix,
    onError: opts.onError,
  });
}

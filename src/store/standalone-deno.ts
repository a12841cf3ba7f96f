/**
 * The Deno source of a {@link StandaloneStore}: the file named by `CONFIG_FILE`, read with `Deno.readTextFile`
 * and re-read when a `Deno.stat` poll (every second, as APISIX's timer) sees its mtime, size or inode change.
 * The mirror of standalone-file.ts (Node, Bun) without `node:fs`.
 *
 * The `Deno` functions are passed in ({@link DenoFileApi}) rather than taken from the global, so that this file
 * also type-checks under Node's tsc and can be unit-tested anywhere; the Deno entry passes `Deno` itself.
 */
import type { StandaloneFormat, StandaloneSource } from './standalone.ts';
import { StandaloneStore } from './standalone.ts';
import { StoreError } from './types.ts';

/** The part of the `Deno` namespace used here (`Deno` itself satisfies it). */
export interface DenoFileApi {
  readTextFile(path: string): Promise<string>;
  stat(path: string): Promise<{ mtime: Date | null; size: number; ino: number | null }>;
  /** `Deno.unrefTimer`: the poll must not keep the process alive. */
  unrefTimer?(id: number): void;
}

/** The config format of `path`, from its extension (the same rule as standalone-file.ts). */
export function standaloneFormatOfPath(path: string): StandaloneFormat {
  const dot = path.lastIndexOf('.');
  const ext = dot > Math.max(path.lastIndexOf('/'), path.lastIndexOf('\\')) ? path.slice(dot).toLowerCase() : '';
  if (ext === '.yaml' || ext === '.yml') return 'yaml';
  if (ext === '.json') return 'json';
  throw new StoreError(`CONFIG_FILE ${path}: unknown config format "${ext}"; name the file *.yaml, *.yml or *.json`);
}

/** `NotFound`, `PermissionDenied`/`NotCapable` (with the missing flag), or the message. */
function reason(err: unknown): string {
  const e = err as { name?: string; code?: string; message?: string };
  if (e?.name === 'NotCapable' || e?.name === 'PermissionDenied') return `${e.name}: ${e.message ?? ''}`.trim();
  return e?.code ?? e?.name ?? String(err);
}

export interface DenoFileSourceOptions {
  /** Stat poll interval, ms. Default 1000. 0 disables polling. */
  pollIntervalMs?: number;
}

/** A {@link StandaloneSource} reading the absolute `path`. */
export function standaloneDenoSource(
  path: string,
  api: DenoFileApi,
  opts: DenoFileSourceOptions = {},
): StandaloneSource {
  const describe = `CONFIG_FILE ${path}`;
  return {
    describe,
    async read() {
      try {
        return await api.readTextFile(path);
      } catch (err) {
        throw new StoreError(`cannot read ${describe}: ${reason(err)}`, { cause: err });
      }
    },
    watch(onChange) {
      const pollMs = opts.pollIntervalMs ?? 1000;
      if (pollMs <= 0) return () => {};
      // Unknown at first, so the first poll re-reads once: a change made between the store's first read and
      // now is not missed (an unchanged text costs one read and nothing else).
      let last = '';
      let stopped = false;
      let busy = false;
      const check = async () => {
        if (busy) return;
        busy = true;
        try {
          let sig: string;
          try {
            const st = await api.stat(path);
            sig = `${st.ino ?? ''}:${st.size}:${st.mtime?.getTime() ?? ''}`;
          } catch (err) {
            sig = `error:${reason(err)}`;
          }
          if (stopped || sig === last) return;
          last = sig;
          onChange();
        } finally {
          busy = false;
        }
      };
      const timer = setInterval(() => void check(), pollMs);
      api.unrefTimer?.(timer as unknown as number);
      return () => {
        stopped = true;
        clearInterval(timer);
      };
    },
  };
}

export interface OpenStandaloneDenoOptions extends DenoFileSourceOptions {
  /** The absolute `CONFIG_FILE` path. */
  path: string;
  api: DenoFileApi;
  /** Environment for `${{VAR}}` substitution. */
  env: Record<string, string | undefined>;
  prefix?: string;
  /** A reload failed and the previous config stays in force. Default: console.error. */
  onError?: (err: Error) => void;
}

/** Open a read-only store over `CONFIG_FILE`; a missing, unreadable or invalid file throws a {@link StoreError}. */
export function openStandaloneDeno(opts: OpenStandaloneDenoOptions): Promise<StandaloneStore> {
  return StandaloneStore.open({
    source: standaloneDenoSource(opts.path, opts.api, opts),
    format: standaloneFormatOfPath(opts.path),
    env: opts.env,
    prefix: opts.prefix,
    onError: opts.onError,
  });
}

/**
 * The `deno run` permission flags `deno task start` gives the Deno entry (src/runtime/deno.ts `--permission-flags`),
 * computed from the settings. Portable (no `Deno.*`): the Deno entry does the reading, this decides, so the rule is
 * unit-tested under Node too (test/unit/deno-permissions.test.ts).
 *
 * - `--allow-net`: any host (the functions, etcd);
 * - `--allow-env=<names>`: the settings, plus every `${{VAR}}` the CONFIG_FILE names (nothing else is readable);
 * - `--allow-read=DATA_DIR[,CONFIG_FILE][,ADMIN_TLS_CERT,ADMIN_TLS_KEY]`;
 * - `--allow-write=DATA_DIR` only when something is written there: the Deno KV store (no CONFIG_FILE, no ETCD_HOST),
 *   or the generated admin key (ADMIN_KEY unset and no `DATA_DIR/admin_key` yet). CONFIG_FILE or etcd with
 *   ADMIN_KEY set (or a key file already there) run without any write access.
 * - `--allow-run=<the deno binary>` only with WORKERS > 1 on Linux: the primary starts its proxy workers by running
 *   its own script again with that binary (src/runtime/workers-deno.ts), which gives each worker the subset of these
 *   permissions a worker uses (no read, no run). No other program may be run.
 */

/** `${{NAME}}` / `${{NAME:=default}}` references in a standalone config (the rule of src/store/standalone.ts). */
export function envRefs(text: string): string[] {
  const names = new Set<string>();
  for (const m of text.matchAll(/\$\{\{(.*?)\}\}/g)) {
    const body = (m[1] ?? '').trim();
    const sep = body.indexOf(':=');
    const name = (sep === -1 ? body : body.slice(0, sep)).trim();
    if (/^\w+$/.test(name)) names.add(name);
  }
  return [...names];
}

export interface PermissionInput {
  /** DATA_DIR, absolute. */
  dataDir: string;
  /** CONFIG_FILE, absolute; undefined when unset. */
  configFile?: string;
  /** The text of CONFIG_FILE; undefined when unset or unreadable now (the gateway then reports it at start). */
  configText?: string;
  /** ETCD_HOST is set (etcd is the store). */
  etcd: boolean;
  /** ADMIN_KEY is set (no key file to generate). */
  adminKey: boolean;
  /** `DATA_DIR/admin_key` exists already (it is only read). */
  adminKeyFile: boolean;
  /** The environment variables the entry reads (src/runtime/deno.ts ENV_NAMES). */
  envNames: readonly string[];
  /** WORKERS > 1 on Linux: the deno binary (absolute) the primary runs to start its workers. */
  spawnWorkers?: string;
  /** Other files read at start, absolute (the Admin API's certificate and key, ADMIN_TLS_CERT/KEY). */
  readFiles?: readonly string[];
}

export interface PermissionResult {
  flags: string[];
  /** Set when a path cannot be passed as a permission and the whole file system is granted instead. */
  warning?: string;
}

/** Does the gateway write anything into DATA_DIR with these settings? */
export function writesDataDir(
  input: Pick<PermissionInput, 'configFile' | 'etcd' | 'adminKey' | 'adminKeyFile'>,
): boolean {
  const kvStore = !input.configFile && !input.etcd;
  const generatesKey = !input.adminKey && !input.adminKeyFile;
  return kvStore || generatesKey;
}

/**
 * The flags. The task's shell splits the output on whitespace, and Deno splits each list on commas: a path holding
 * either falls back to whole-file-system access, with a warning (run `deno run` with explicit flags to avoid that).
 */
export function permissionFlags(input: PermissionInput): PermissionResult {
  const envNames = new Set(input.envNames);
  if (input.configText !== undefined) for (const n of envRefs(input.configText)) envNames.add(n);
  const write = writesDataDir(input);
  const paths = [input.dataDir, ...(input.configFile ? [input.configFile] : []), ...(input.readFiles ?? [])];
  const flags = ['--no-prompt', '--allow-net', `--allow-env=${[...envNames].join(',')}`];
  const awkward = (p: string) => /[\s,]/.test(p);
  if (paths.some(awkward)) {
    flags.push('--allow-read');
    if (write) flags.push('--allow-write');
    return {
      flags,
      warning:
        `fngate: ${paths.filter(awkward).join(', ')} holds a space or a comma, which deno task cannot pass as a ` +
        `permission; granting ${write ? 'read/write' : 'read'} access to the whole file system. Run \`deno run\` ` +
        'with explicit flags instead.',
    };
  }
  flags.push(`--allow-read=${paths.join(',')}`);
  if (write) flags.push(`--allow-write=${input.dataDir}`);
  if (input.spawnWorkers !== undefined) {
    if (awkward(input.spawnWorkers)) {
      return {
        flags,
        warning:
          `fngate: the deno binary's path ${input.spawnWorkers} holds a space or a comma, which deno task cannot pass ` +
          'as a permission: no --allow-run, so WORKERS starts no workers (one process serves).',
      };
    }
    flags.push(`--allow-run=${input.spawnWorkers}`);
  }
  return { flags };
}

/**
 * What the harness reads from the system: the tools it needs (checked, never installed), and the CPU time and
 * memory of a process tree from /proc (Linux only).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bunAllocatorEnv } from '../../src/runtime/bun-allocator.ts';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const BIN = {
  bun: join(ROOT, 'node_modules/.bin/bun'),
  deno: join(ROOT, 'node_modules/.bin/deno'),
  workerd: join(ROOT, 'node_modules/.bin/workerd'),
  wrangler: join(ROOT, 'node_modules/wrangler/bin/wrangler.js'),
};

/** The runtimes fngate runs on as a process of its own (workerd is started from its Worker bundle instead). */
export type ProcessRuntime = 'node' | 'bun' | 'deno';

export interface FngateCommand {
  cmd: string;
  args: string[];
  /** What the start adds to the environment (Bun's allocator setting, as `npm run start:bun`). */
  env: Record<string, string>;
  /** Where it must run, if anywhere in particular: `deno task` reads the checkout's deno.json. */
  cwd?: string;
}

/**
 * How a user starts fngate on `runtime` from the checkout at `root` (package.json's `start` and `start:bun`,
 * deno.json's `start` task), as every bench starts it: Node `dist/runtime/node.js` (after `npm run build` there),
 * Bun `bun run src/runtime/bun.ts` with src/runtime/bun-allocator.ts's setting unless `env` (the caller's environment
 * for the gateway, over this process's) sets it, Deno `deno task --quiet start` in the checkout (the task computes
 * the permissions; the checkout's own deno binary, so another checkout runs its own pinned version).
 */
export function fngateCommand(
  runtime: ProcessRuntime,
  opts: { root?: string; env?: Record<string, string | undefined>; nodeEntry?: string; nodeArgs?: string[] } = {},
): FngateCommand {
  const root = opts.root ?? ROOT;
  if (runtime === 'node') {
    const entry = opts.nodeEntry ?? join(root, 'dist/runtime/node.js');
    return { cmd: process.execPath, args: [...(opts.nodeArgs ?? []), entry], env: {} };
  }
  if (runtime === 'bun') {
    return {
      cmd: BIN.bun,
      args: ['run', join(root, 'src/runtime/bun.ts')],
      env: bunAllocatorEnv({ ...process.env, ...opts.env }),
    };
  }
  return { cmd: join(root, 'node_modules/deno/deno'), args: ['task', '--quiet', 'start'], env: { NO_COLOR: '1' }, cwd: root };
}

/** Absolute path of a program on PATH (or in /usr/sbin, where Debian puts nginx), or undefined. */
export function which(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin', '/usr/local/sbin'];
  for (const d of dirs) {
    if (!d) continue;
    const p = join(d, name);
    if (existsSync(p)) return p;
  }
  return undefined;
}

export interface Tools {
  nginx: string;
  wrk: string;
  taskset: string;
}

/**
 * The system tools the benchmark needs. Nothing is installed: when one is missing this prints the exact
 * command that installs it and exits.
 */
export function requireTools(): Tools {
  if (process.platform !== 'linux') {
    console.error('bench: Linux only (it reads /proc and pins processes with taskset).');
    process.exit(2);
  }
  const nginx = which('nginx');
  const wrk = which('wrk');
  const taskset = which('taskset');
  const missing: string[] = [];
  if (!nginx) missing.push('nginx');
  if (!wrk) missing.push('wrk');
  if (!taskset) missing.push('util-linux'); // taskset
  if (missing.length) {
    console.error(`bench: missing ${missing.join(', ')}. Nothing is installed by the benchmark itself; on Debian/Ubuntu run:\n`);
    console.error(`  sudo apt-get update && sudo apt-get install -y ${missing.join(' ')}\n`);
    console.error('(installing the nginx package does not start a service inside a container; elsewhere it may start one on port 80,');
    console.error(' which the benchmark does not use: it runs its own nginx processes on loopback ports with their own config.)');
    process.exit(2);
  }
  for (const [name, p] of Object.entries(BIN)) {
    if (!existsSync(p)) {
      console.error(`bench: ${p} is missing (${name}); run \`npm install\` first.`);
      process.exit(2);
    }
  }
  if (availableParallelism() < 2) {
    console.error('bench: needs at least 2 CPU cores (gateway on one, upstream + load generator on the other).');
    process.exit(2);
  }
  return { nginx: nginx!, wrk: wrk!, taskset: taskset! };
}

export function versionOf(cmd: string, args: string[]): string {
  const res = spawnSync(cmd, args, { encoding: 'utf8' });
  const text = `${res.stdout ?? ''}\n${res.stderr ?? ''}`.trim();
  return text.split('\n')[0]!.trim() || 'unknown';
}

const CLK_TCK = 100; // USER_HZ on every Linux build that matters

/** Direct and indirect children of `pid` (the process itself included), from /proc. */
export function processTree(pid: number): number[] {
  const parent = new Map<number, number>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      parent.set(Number(e), Number(rest[1]));
    } catch {
      // gone meanwhile
    }
  }
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    for (const [child, ppid] of parent) if (ppid === out[i]) out.push(child);
  }
  return out.filter((p) => parent.has(p));
}

/** CPU seconds (user + system, all threads) of one process; 0 when it is gone. */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields after the comm: state(0) ppid(1) ... utime(11) stime(12)
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch {
    return 0;
  }
}

function statusKb(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  try {
    const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

export interface TreeSample {
  pids: number[];
  cpuS: number;
  /** Sum of VmRSS over the tree, MiB. */
  rssMiB: number;
  /** Sum of VmHWM (peak RSS) over the tree, MiB. */
  hwmMiB: number;
}

export function sampleTree(pid: number): TreeSample {
  const pids = processTree(pid);
  let cpuS = 0;
  let rss = 0;
  let hwm = 0;
  for (const p of pids) {
    cpuS += cpuSeconds(p);
    rss += statusKb(p, 'VmRSS');
    hwm += statusKb(p, 'VmHWM');
  }
  return { pids, cpuS, rssMiB: rss / 1024, hwmMiB: hwm / 1024 };
}

/** CPU seconds of a known set of processes (the tree sampled before a run: same set after it). */
export function cpuOf(pids: readonly number[]): number {
  let s = 0;
  for (const p of pids) s += cpuSeconds(p);
  return s;
}

/** Per-core busy jiffies from /proc/stat: [busy, total] for each core. */
export function coreTimes(): [number, number][] {
  const out: [number, number][] = [];
  for (const line of readFileSync('/proc/stat', 'utf8').split('\n')) {
    const m = /^cpu(\d+)\s+(.*)$/.exec(line);
    if (!m) continue;
    const v = m[2]!.split(/\s+/).map(Number);
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
    out[Number(m[1])] = [total - idle, total];
  }
  return out;
}

/** Busy % of each core between two `coreTimes()` samples. */
export function busyPercent(a: [number, number][], b: [number, number][]): number[] {
  return b.map(([busy, total], i) => {
    const [b0, t0] = a[i] ?? [0, 0];
    return total > t0 ? Math.round(((busy - b0) / (total - t0)) * 100) : 0;
  });
}

export function loadAverage(): number[] {
  try {
    return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).map(Number);
  } catch {
    return [];
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A script's `--help`: the first doc comment of the file at `moduleUrl` (its `import.meta.url`), as plain text. */
export function docComment(moduleUrl: string): string {
  const text = readFileSync(new URL(moduleUrl), 'utf8');
  return /\/\*\*([\s\S]*?)\*\//.exec(text)?.[1]?.replace(/^ \* ?/gm, '').trim() ?? '';
}

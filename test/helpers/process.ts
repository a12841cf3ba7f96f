/**
 * Helpers for black-box tests that spawn real processes (the gateway, function servers, …).
 *
 * - `startProcess` spawns a command in its own process group, captures stdout/stderr (bounded),
 *   waits until it is ready (an HTTP URL answers with any status, and/or a log line matches) and
 *   rejects with the captured output if it exits first or the timeout passes.
 * - Every spawned process group is killed when the test process exits (or gets SIGINT/SIGTERM/SIGHUP),
 *   so nothing leaks even when a test forgets `kill()`.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect, createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface StartProcessOptions {
  cmd: string;
  args?: readonly string[];
  /**
   * merged over `process.env` (set a key to `undefined` to remove it) unless `inheritEnv: false`;
   * the inherited `NODE_TEST_CONTEXT` of the node:test runner is dropped
   */
  env?: Record<string, string | undefined>;
  /** default true */
  inheritEnv?: boolean;
  cwd?: string;
  /** ready when a GET to this URL gets any HTTP response (polled every 50 ms) */
  readyUrl?: string;
  /** ready when stdout or stderr matches (tested against the captured text so far). With both
   *  `readyUrl` and `readyLog`, both must hold; with neither, ready as soon as it is spawned. */
  readyLog?: RegExp;
  /** default 15000; on timeout the process is killed and the promise rejects with its output */
  timeoutMs?: number;
  /** characters kept per stream (the tail is kept); default 1 MiB */
  maxOutput?: number;
}

export interface Proc {
  child: ChildProcess;
  pid: number;
  stdout(): string;
  stderr(): string;
  /** true once the process has exited */
  readonly exited: boolean;
  /**
   * Signal the whole process group (default SIGTERM), escalate to SIGKILL after `graceMs`
   * (default 5000), resolve with the exit status. Safe to call more than once / after exit.
   */
  kill(signal?: NodeJS.Signals, graceMs?: number): Promise<ExitInfo>;
  waitExit(): Promise<ExitInfo>;
}

/** The lowest port the OS hands out for port 0 (and for the local end of outgoing connections). */
let ephemeralLow: Promise<number> | undefined;
function ephemeralRangeLow(): Promise<number> {
  ephemeralLow ??= readFile('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').then(
    (text) => {
      const low = Number(text.trim().split(/\s+/)[0]);
      return Number.isInteger(low) && low > 0 ? low : 32768;
    },
    () => 32768, // Linux's default
  );
  return ephemeralLow;
}

/** True when a server can listen on `host`:`port` right now (it is closed again at once). */
export function canListen(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, host, () => srv.close(() => resolve(true)));
  });
}

/** Ports `freePort` picks from: 20000-29999, below the range port 0 is served from. */
export const FREE_PORT_RANGE = { from: 20_000, to: 30_000 } as const;
const handedOut = new Set<string>();

/**
 * A free TCP port on `host`, for a server that must be told its port before it starts (one that cannot take
 * port 0 and say which it got: prefer that where it can). Never the same port twice in one test process.
 *
 * Picked at random from FREE_PORT_RANGE and checked to be bindable. A port from the OS's port-0 range would not
 * do: once it is closed, the OS may hand it to the next server that listens on port 0, or make it the local end
 * of an outgoing connection, before the server it was meant for binds it. Where that range starts lower than
 * usual, falls back to asking the OS (listen on 0, close).
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const below = (await ephemeralRangeLow()) >= FREE_PORT_RANGE.to;
  for (let attempt = 0; attempt < 1000; attempt++) {
    const port = below ? randomPortInRange() : await osPort(host);
    const id = `${host} ${port}`;
    if (handedOut.has(id) || (below && !(await canListen(host, port)))) continue;
    handedOut.add(id);
    return port;
  }
  throw new Error(`freePort: no free port found on ${host}`);
}

function randomPortInRange(): number {
  return FREE_PORT_RANGE.from + Math.floor(Math.random() * (FREE_PORT_RANGE.to - FREE_PORT_RANGE.from));
}

/** The port the OS gives a server listening on port 0, closed again. */
function osPort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const { port } = srv.address() as AddressInfo;
      srv.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}

let nextRefusedCandidate: Promise<number> | undefined;

function connectionRefused(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ host, port });
    sock.once('connect', () => {
      sock.destroy();
      resolve(false);
    });
    sock.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'));
  });
}

/**
 * A TCP port on `host` that refuses connections, for "the function/upstream/etcd is down" tests; a different
 * one on every call in this process. A port that was merely free a moment ago cannot serve: the OS can hand it
 * to the next server that listens on port 0 (a fault server of the same test, say), and the "refused" target
 * then answers. These ports lie just below the range port 0 is served from (and above FREE_PORT_RANGE),
 * so no test server can take them; each is checked to refuse before it is handed out. (Where that range starts
 * at 10080 or lower, falls back to `freePort()`.)
 */
export async function refusedPort(host = '127.0.0.1'): Promise<number> {
  for (;;) {
    // Claimed before the await, so calls side by side never check the same port.
    const candidate = nextRefusedCandidate ?? ephemeralRangeLow().then((low) => low - 1);
    nextRefusedCandidate = candidate.then((p) => p - 1);
    const port = await candidate;
    // Above 10080, the last of the Fetch standard's "bad ports", which a fetch refuses without connecting. Where
    // the OS's range starts that low, a port that is merely free now is the best there is.
    if (port <= 10080) return freePort(host);
    if (await connectionRefused(host, port)) return port;
  }
}

export interface WaitForOptions {
  /** default 5000 */
  timeoutMs?: number;
  /** default 50 */
  intervalMs?: number;
  /** prefix of the timeout error message */
  message?: string;
}

export type Truthy<T> = Exclude<T, undefined | null | false | 0 | ''>;

/**
 * Poll `fn` until it returns a truthy value (which is returned). Exceptions thrown by `fn` count
 * as "not yet" (so assertions can be polled); on timeout the last exception is rethrown as the cause.
 */
export async function waitFor<T>(
  fn: () => T | Promise<T>,
  { timeoutMs = 5000, intervalMs = 50, message = 'waitFor timed out' }: WaitForOptions = {},
): Promise<Truthy<T>> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await fn();
      if (value) return value as Truthy<T>;
      lastError = undefined;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const detail = lastError instanceof Error ? `: ${lastError.message}` : '';
      throw new Error(`${message} after ${timeoutMs} ms${detail}`, { cause: lastError });
    }
    await delay(intervalMs);
  }
}

/** Create a fresh directory under `os.tmpdir()` whose name starts with `prefix`. */
export function tmpDir(prefix = 'fngate-test-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

/** Remove a directory tree; missing is fine. */
export async function rmDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true, maxRetries: 3 });
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------------------------------------
// Cleanup of spawned processes when the test process goes away.

const live = new Set<ChildProcess>();
let hooksInstalled = false;

/** Signal the child's process group; `evenIfExited` also reaches grandchildren of a leader that is gone. */
function signalGroup(child: ChildProcess, signal: NodeJS.Signals, evenIfExited = false): void {
  if (child.pid === undefined) return;
  if (!evenIfExited && (child.exitCode !== null || child.signalCode !== null)) return;
  try {
    if (process.platform === 'win32') child.kill(signal);
    else process.kill(-child.pid, signal); // detached → own process group
  } catch {
    try {
      child.kill(signal);
    } catch {
      // already gone
    }
  }
}

function killAllLive(): void {
  for (const child of live) signalGroup(child, 'SIGKILL');
  live.clear();
}

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', killAllLive);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = () => {
      killAllLive();
      process.off(sig, onSignal);
      // Nobody else handles it → restore the default action (terminate) by re-raising.
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    };
    process.on(sig, onSignal);
  }
}

// ---------------------------------------------------------------------------------------------

class Tail {
  private text = '';
  constructor(private readonly max: number) {}
  push(s: string): void {
    this.text += s;
    if (this.text.length > this.max) this.text = this.text.slice(this.text.length - this.max);
  }
  toString(): string {
    return this.text;
  }
}

/** One GET to `url`; resolves true on any HTTP response, false on a transport error. */
function probe(url: string, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      return resolve(false);
    }
    const req = (u.protocol === 'https:' ? httpsRequest : httpRequest)(
      u,
      { method: 'GET', agent: false, headers: { connection: 'close' }, timeout: timeoutMs, rejectUnauthorized: false },
      (res) => {
        res.resume();
        resolve(true);
      },
    );
    req.on('timeout', () => req.destroy(new Error('probe timeout')));
    req.on('error', () => resolve(false));
    req.end();
  });
}

function describe(opts: StartProcessOptions, pid: number | undefined, out: Tail, err: Tail): string {
  return (
    `command: ${[opts.cmd, ...(opts.args ?? [])].join(' ')}${pid === undefined ? '' : ` (pid ${pid})`}\n` +
    `--- stdout ---\n${out.toString()}\n--- stderr ---\n${err.toString()}`
  );
}

/** Spawn a process and wait until it is ready (see `StartProcessOptions`). */
export async function startProcess(opts: StartProcessOptions): Promise<Proc> {
  installHooks();
  const timeoutMs = opts.timeoutMs ?? 15_000;
  const out = new Tail(opts.maxOutput ?? 1 << 20);
  const err = new Tail(opts.maxOutput ?? 1 << 20);

  const env: Record<string, string> = {};
  // The child is a plain program, not a node:test file: drop the runner's marker unless asked for.
  const { NODE_TEST_CONTEXT: _testContext, ...inherited } = process.env;
  const base = opts.inheritEnv === false ? {} : inherited;
  for (const [k, v] of Object.entries({ ...base, ...opts.env })) if (v !== undefined) env[k] = v;

  const child = spawn(opts.cmd, [...(opts.args ?? [])], {
    cwd: opts.cwd,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: process.platform !== 'win32',
  });
  live.add(child);

  let exitInfo: ExitInfo | undefined;
  let spawnError: Error | undefined;
  const exited = new Promise<ExitInfo>((resolve) => {
    const finish = (code: number | null, signal: NodeJS.Signals | null) => {
      if (exitInfo) return;
      exitInfo = { code, signal };
      live.delete(child);
      // Give the pipes a moment to flush the last output ('close' may never come if a grandchild
      // still holds them).
      let settled = false;
      const settle = () => {
        if (settled) return;
        settled = true;
        resolve(exitInfo!);
      };
      child.once('close', settle);
      setTimeout(settle, 200).unref();
    };
    child.once('exit', finish);
    child.once('error', (e) => {
      spawnError = e;
      finish(null, null);
    });
  });

  let readyLogHit = false;
  const checkLog = () => {
    if (opts.readyLog && !readyLogHit && (opts.readyLog.test(out.toString()) || opts.readyLog.test(err.toString()))) {
      readyLogHit = true;
    }
  };
  child.stdout!.setEncoding('utf8').on('data', (s: string) => {
    out.push(s);
    checkLog();
  });
  child.stderr!.setEncoding('utf8').on('data', (s: string) => {
    err.push(s);
    checkLog();
  });

  const proc: Proc = {
    child,
    pid: child.pid ?? -1,
    stdout: () => out.toString(),
    stderr: () => err.toString(),
    get exited() {
      return exitInfo !== undefined;
    },
    waitExit: () => exited,
    async kill(signal: NodeJS.Signals = 'SIGTERM', graceMs = 5000) {
      if (exitInfo) {
        signalGroup(child, 'SIGKILL', true); // leftovers of the group, if any
        return exited;
      }
      signalGroup(child, signal);
      const escalate = setTimeout(() => signalGroup(child, 'SIGKILL'), graceMs);
      try {
        return await exited;
      } finally {
        clearTimeout(escalate);
        // The leader is gone; make sure no grandchild of the group survives it.
        signalGroup(child, 'SIGKILL', true);
      }
    },
  };

  // Wait until spawned (or failed to spawn).
  await new Promise<void>((resolve) => {
    const done = () => {
      child.off('spawn', done);
      child.off('error', done);
      resolve();
    };
    child.once('spawn', done);
    child.once('error', done);
  });

  // Wait for readiness. Readiness latches: a process that became ready and then exited resolves
  // (check `proc.exited`); one that exited without ever being ready rejects with its output.
  const deadline = Date.now() + timeoutMs;
  let urlReady = !opts.readyUrl;
  const isReady = () => {
    checkLog();
    return urlReady && (!opts.readyLog || readyLogHit);
  };
  for (;;) {
    if (!spawnError && isReady()) return proc;
    if (exitInfo) {
      await exited; // lets the last output arrive
      if (!spawnError && isReady()) return proc;
      const why = spawnError
        ? `failed to spawn: ${spawnError.message}`
        : `code ${exitInfo.code}, signal ${exitInfo.signal}`;
      throw new Error(`process exited before it was ready (${why})\n${describe(opts, child.pid, out, err)}`, {
        cause: spawnError,
      });
    }
    if (!urlReady && opts.readyUrl) {
      urlReady = await probe(opts.readyUrl, Math.min(1000, Math.max(50, deadline - Date.now())));
      if (urlReady) continue;
    }
    if (Date.now() >= deadline) {
      await proc.kill('SIGKILL');
      throw new Error(`process not ready after ${timeoutMs} ms\n${describe(opts, child.pid, out, err)}`);
    }
    await Promise.race([delay(50), exited]);
  }
}

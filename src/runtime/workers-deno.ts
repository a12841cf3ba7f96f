/**
 * WORKERS on Deno (Linux): the design of src/runtime/workers-node.ts and src/runtime/replica.ts, with Deno's own
 * means. The primary opens the store, serves the Admin API, the status API and the summed Prometheus export, and
 * starts WORKERS proxy workers; each worker serves PROXY_PORT with `Deno.serve({ reusePort: true })` (Linux
 * SO_REUSEPORT: the kernel spreads the connections) from a {@link ReplicaStore} that the primary keeps current: an
 * Admin API write is acknowledged once every worker applied it.
 *
 * Why not node:cluster: Deno 2.9's `cluster.fork()` does start a process with IPC, but it needs access to the whole
 * environment (`--allow-env` without a list: it copies `process.env`) and the worker it starts runs with every
 * permission (`-A`: measured, a primary allowed to read /tmp only had a worker that could read /etc and run
 * programs). So the primary starts its own script again, `deno run <flags> src/runtime/deno.ts --proxy-worker`,
 * with `Deno.Command`, and flags derived from what the primary itself was granted (never more:
 * {@link workerFlags}); it needs `--allow-run=<the deno binary>` for that and nothing else.
 *
 * The channel: the worker's stdin carries one line, `{"port","token","prefix","proxyPort"}`, and then stays open
 * (its end, EOF, tells the worker that the primary is gone, even after a `kill -9`); the worker connects to the
 * primary's loopback listener (127.0.0.1, a random port) and proves itself with the token, which only went through
 * the pipe. Both ways, one JSON message per line: the messages of replica.ts (`ToWorker`/`ToPrimary`), as
 * node:cluster's IPC carries them on Node. stdout and stderr are inherited (the workers' logs and access log go to
 * the gateway's own).
 *
 * A worker that dies is logged and started again (with the current state); five deaths in a row before serving
 * stop the gateway (exit 1). SIGTERM/SIGINT to the primary are passed to every worker, which drain as a single
 * process does; the primary exits once all have.
 */
import type { Logger } from '../core/context.ts';
import type { ConfigStore } from '../store/types.ts';
import {
  isToPrimary,
  type PrimaryRole,
  ReplicaStore,
  type ToPrimary,
  type ToWorker,
  WorkerBook,
  type WorkerRole,
  workerEnd,
} from './replica.ts';

/** A connection to the primary's channel that has not shown a worker's token by then is closed. */
const HANDSHAKE_TIMEOUT_MS = 5_000;
/** The argument that makes src/runtime/deno.ts a proxy worker. */
export const WORKER_ARG = '--proxy-worker';

/** Deno's primary starts its workers with `Deno.Command` (workers-deno.ts). */
export type DenoPrimaryRole = PrimaryRole<Deno.Signal, (store: ConfigStore) => Promise<void>>;

export interface DenoWorkerRole extends WorkerRole {
  /** The proxy port every worker listens on (the primary chose it when PROXY_PORT=0). */
  proxyPort: number;
  /** The TLS port every worker listens on (likewise for PROXY_HTTPS_PORT=0); undefined = off. */
  proxyHttpsPort: number | undefined;
}

export type DenoClusterRole = { kind: 'single' } | DenoPrimaryRole | DenoWorkerRole;

/** The first line on a worker's stdin. */
interface Handshake {
  port: number;
  token: string;
  prefix: string;
  proxyPort: number;
  proxyHttpsPort: number | undefined;
}

const encoder = new TextEncoder();

/**
 * Reads one JSON message per line from a byte stream until it ends, fails, carries something that is not JSON, or
 * `onLine` answers 'stop'. `maxPending()`: the most characters a line may have before its newline (checked as the
 * bytes arrive; the primary allows a connection that has not shown a worker's token a short line only).
 */
async function readLines(
  stream: ReadableStream<Uint8Array>,
  onLine: (msg: unknown) => unknown,
  maxPending: () => number = () => Number.POSITIVE_INFINITY,
): Promise<void> {
  const decoder = new TextDecoder();
  let buf = '';
  try {
    for await (const chunk of stream) {
      // Only the new text is searched for a newline: a state of many MB arrives in many chunks.
      const text = decoder.decode(chunk, { stream: true });
      const first = text.indexOf('\n');
      let nl = first < 0 ? -1 : buf.length + first;
      buf += text;
      while (nl >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line !== '') {
          let msg: unknown;
          try {
            msg = JSON.parse(line);
          } catch {
            return; // not our protocol: the caller closes
          }
          if (onLine(msg) === 'stop') return;
        }
        nl = buf.indexOf('\n');
      }
      if (buf.length > maxPending()) return;
    }
  } catch {
    // the connection broke: same as its end
  }
}

/** Writes messages as JSON lines, in order (one writer per connection). */
function lineSender(conn: Deno.Conn): (msg: unknown) => void {
  const writer = conn.writable.getWriter();
  let broken = false;
  return (msg) => {
    if (broken) return;
    writer.write(encoder.encode(`${JSON.stringify(msg)}\n`)).catch(() => {
      broken = true;
    });
  };
}

/**
 * The flags a worker runs with: what the primary was granted, for what a worker does, and nothing else. A worker
 * opens no store and generates no key: the network (`--allow-net`, required), the settings' environment variables
 * the primary may read, write access to DATA_DIR when the primary has it (file-logger's files are written by the
 * workers, which serve the routes), `--v8-flags=--expose-gc` when the primary has `gc`, `--unstable-net` for
 * `reusePort`. No read, no run, no KV.
 */
export function workerFlags(envNames: readonly string[], dataDir: string): string[] | string {
  const granted = (d: Deno.PermissionDescriptor) => Deno.permissions.querySync(d).state === 'granted';
  if (!granted({ name: 'net' })) return 'the workers need --allow-net (any host), which this process does not have';
  const env = envNames.filter((variable) => granted({ name: 'env', variable }));
  // `--unstable-net`: Deno 2.9 refuses `reusePort` without it ("Unstable API 'Deno.listen({ reusePort: true })'").
  const flags = ['--no-prompt', '--unstable-no-legacy-abort', '--unstable-net', '--allow-net'];
  if (env.length > 0) flags.push(`--allow-env=${env.join(',')}`);
  if (granted({ name: 'write', path: dataDir })) flags.push(`--allow-write=${dataDir}`);
  if (typeof (globalThis as { gc?: unknown }).gc === 'function') flags.push('--v8-flags=--expose-gc');
  return flags;
}

/**
 * The role of this process. `args`: Deno.args (WORKER_ARG makes it a worker). `script`: the entry's path, started
 * again for each worker. A primary that cannot start workers (not Linux, no `--allow-run` for the deno binary)
 * says why and serves everything itself.
 */
export async function denoCluster(opts: {
  workers: number;
  args: readonly string[];
  script: string;
  envNames: readonly string[];
  dataDir: string;
  host: string;
  proxyPort: number;
  proxyHttpsPort: number | undefined;
  logger: Logger;
}): Promise<DenoClusterRole> {
  if (opts.args.includes(WORKER_ARG)) return await workerRole();
  if (opts.workers <= 1) return { kind: 'single' };
  const { logger } = opts;
  if (Deno.build.os !== 'linux') {
    logger.warn(
      `workers: WORKERS=${opts.workers} needs SO_REUSEPORT's load balancing, which Deno.serve has on Linux only (elsewhere the option is ignored); serving from one process`,
    );
    return { kind: 'single' };
  }
  const deno = Deno.execPath();
  if (Deno.permissions.querySync({ name: 'run', command: deno }).state !== 'granted') {
    logger.warn(
      `workers: WORKERS=${opts.workers} needs --allow-run=${deno} to start the workers (deno task start grants it); serving from one process`,
    );
    return { kind: 'single' };
  }
  const flags = workerFlags(opts.envNames, opts.dataDir);
  if (typeof flags === 'string') {
    logger.warn(`workers: ${flags}; serving from one process`);
    return { kind: 'single' };
  }
  return primaryRole(opts.workers, deno, [...flags, opts.script, WORKER_ARG], opts, logger);
}

async function workerRole(): Promise<DenoWorkerRole> {
  // The handshake: the first line on stdin. The rest of stdin is only watched for its end.
  const reader = Deno.stdin.readable.getReader();
  const decoder = new TextDecoder();
  let first = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done)
      throw new Error(`${WORKER_ARG}: stdin ended before the primary's handshake (this is started by the primary)`);
    first += decoder.decode(value, { stream: true });
    if (first.includes('\n')) break;
  }
  const hs = JSON.parse(first.slice(0, first.indexOf('\n'))) as Handshake;
  const conn = await Deno.connect({ hostname: '127.0.0.1', port: hs.port });
  conn.setNoDelay(true);
  const send = lineSender(conn);
  send(hs.token);
  const store = new ReplicaStore(hs.prefix);
  const end = workerEnd(store, send as (msg: ToPrimary) => void);
  let orphaned: (() => void) | undefined;
  let gone = false;
  const primaryGone = () => {
    if (gone) return;
    gone = true;
    orphaned?.();
  };
  void readLines(conn.readable, (msg) => end.onMessage(msg as ToWorker)).then(primaryGone);
  void (async () => {
    try {
      while (!(await reader.read()).done) {
        // nothing else comes on stdin
      }
    } catch {
      // closed: same as its end
    }
    primaryGone();
  })();
  send({ t: 'hello' } satisfies ToPrimary);
  return {
    kind: 'worker',
    store,
    proxyPort: hs.proxyPort,
    proxyHttpsPort: hs.proxyHttpsPort ?? undefined,
    started(refresh, metricsText) {
      end.started(refresh, metricsText);
      send({ t: 'ready' } satisfies ToPrimary);
    },
    onOrphaned(fn) {
      orphaned = fn;
      if (gone) fn();
    },
  };
}

interface Child {
  id: number;
  token: string;
  process: Deno.ChildProcess;
  started: number;
  send?: (msg: ToWorker) => void;
  conn?: Deno.Conn;
  exited: boolean;
}

const hex = (bytes: Uint8Array) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');

/** A free port for the proxy when PROXY_PORT=0: every worker must listen on the same one. */
function freePort(host: string): number {
  const l = Deno.listen({ hostname: host, port: 0 });
  const { port } = l.addr as Deno.NetAddr;
  l.close();
  return port;
}

function primaryRole(
  count: number,
  deno: string,
  args: string[],
  ports: { host: string; proxyPort: number; proxyHttpsPort: number | undefined },
  logger: Logger,
): DenoPrimaryRole {
  const book = new WorkerBook(count, logger);
  let prefix = '/apisix';
  let stopping = false;
  let nextId = 0;
  let { proxyPort, proxyHttpsPort } = ports;
  const children = new Map<number, Child>();
  const byToken = new Map<string, Child>();
  let listener: Deno.Listener | undefined;

  /** Sends to a worker whose channel is connected; false when it is not (yet, or any more). */
  const sendTo = (child: Child, m: ToWorker): boolean => {
    if (!child.send) return false;
    child.send(m);
    return true;
  };

  const peerOf = (child: Child) => ({
    id: child.id,
    send: (m: ToWorker) => {
      sendTo(child, m);
    },
    kill: () => {
      try {
        child.process.kill('SIGKILL');
      } catch {
        // gone already
      }
    },
  });

  /** A connection to the channel: its first line must be the token of a worker not connected yet. */
  const accept = (conn: Deno.Conn) => {
    let child: Child | undefined;
    const timer = setTimeout(() => {
      if (!child) conn.close();
    }, HANDSHAKE_TIMEOUT_MS);
    void readLines(
      conn.readable,
      (msg) => {
        if (!child) {
          const c = typeof msg === 'string' ? byToken.get(msg) : undefined;
          if (!c || c.conn || c.exited) return 'stop';
          clearTimeout(timer);
          child = c;
          c.conn = conn;
          c.send = lineSender(conn);
          return;
        }
        if (isToPrimary(msg)) book.onMessage(peerOf(child), msg);
      },
      // Before the token, one short line: a stranger cannot make the primary buffer much.
      () => (child ? Number.POSITIVE_INFINITY : 256),
    ).finally(() => {
      clearTimeout(timer);
      try {
        conn.close();
      } catch {
        // closed already
      }
    });
  };

  const spawn = () => {
    const id = ++nextId;
    const token = hex(crypto.getRandomValues(new Uint8Array(24)));
    const proc = new Deno.Command(deno, {
      args: ['run', ...args],
      stdin: 'piped',
      stdout: 'inherit',
      stderr: 'inherit',
    }).spawn();
    const child: Child = { id, token, process: proc, started: Date.now(), exited: false };
    children.set(id, child);
    byToken.set(token, child);
    // The handshake; the pipe then stays open (its end tells the worker that the primary is gone).
    const stdin = proc.stdin.getWriter();
    const hs: Handshake = { port: (listener!.addr as Deno.NetAddr).port, token, prefix, proxyPort, proxyHttpsPort };
    stdin.write(encoder.encode(`${JSON.stringify(hs)}\n`)).catch(() => {
      // the worker died at once: its exit is handled below
    });
    void proc.status.then(({ code, signal }) => {
      child.exited = true;
      children.delete(id);
      byToken.delete(token);
      void stdin.close().catch(() => {});
      try {
        child.conn?.close();
      } catch {
        // closed already
      }
      // Exit 0 is a drained worker: it got SIGTERM/SIGINT itself (a signal to the process group), not a crash.
      const next = book.exited(id, stopping || code === 0, {
        pid: proc.pid,
        code: signal ? null : code,
        signal,
        uptime_ms: Date.now() - child.started,
      });
      if (next && 'giveUp' in next) role.onFatal?.(next.giveUp);
      else if (next) {
        // A crash loop is slowed down: the next start waits a little longer after each early death.
        const t = setTimeout(() => {
          if (!stopping) spawn();
        }, next.restartInMs);
        Deno.unrefTimer(t);
      }
    });
  };

  const role: DenoPrimaryRole = {
    kind: 'primary',
    wrapStore: (store) => book.wrapStore(store),
    async start(store) {
      prefix = store.prefix;
      // SO_REUSEPORT workers cannot share a port 0: the primary picks one for all of them (taken by listening and
      // closing, so another process could take it in between).
      if (proxyPort === 0) proxyPort = freePort(ports.host);
      if (proxyHttpsPort === 0) proxyHttpsPort = freePort(ports.host);
      listener = Deno.listen({ hostname: '127.0.0.1', port: 0 });
      void (async () => {
        for await (const conn of listener!) accept(conn);
      })().catch(() => {
        // the listener was closed (stop)
      });
      logger.info(`workers: starting ${count} proxy workers (WORKERS)`);
      for (let i = 0; i < count; i++) spawn();
    },
    notReady: () => book.notReady(),
    serveMetrics: (req, extraHeaders) =>
      book.serveMetrics(
        req,
        extraHeaders,
        [...children.values()].map((c) => ({ id: c.id, send: (m: ToWorker) => sendTo(c, m) })),
      ),
    async stop(signal) {
      stopping = true;
      await Promise.all(
        [...children.values()].map(async (c) => {
          try {
            c.process.kill(signal);
          } catch {
            // exited meanwhile
          }
          await c.process.status;
        }),
      );
      try {
        listener?.close();
      } catch {
        // closed already
      }
    },
  };
  return role;
}

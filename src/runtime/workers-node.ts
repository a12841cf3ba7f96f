/**
 * WORKERS on Node: node:cluster (Node 20 has no `reusePort`; it came in Node 22.12/23.1). The primary opens the
 * store, serves the Admin API, the status API and the aggregated Prometheus export, and forks WORKERS proxy workers
 * that share PROXY_PORT (cluster's round-robin distribution on Linux). Every worker serves a {@link ReplicaStore}
 * kept current by the primary's {@link Replicator}: an Admin API write is acknowledged once every worker applied it.
 *
 * A worker that dies is logged and forked again (with the current state); five deaths in a row before becoming
 * ready stop the gateway (exit 1) instead of looping. SIGTERM/SIGINT to the primary are passed to every worker,
 * which drain as a single process does (src/runtime/node.ts); the primary exits once all of them have.
 */
import cluster, { type Worker } from 'node:cluster';
import { type AddressInfo, createServer } from 'node:net';
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
import type { Settings } from './settings.ts';

/** Node and Bun start their workers with `cluster.fork`, `env` added to the workers' environment. */
export type NodePrimaryRole = PrimaryRole<NodeJS.Signals, (store: ConfigStore, env?: Record<string, string>) => void>;

export type ClusterRole = { kind: 'single' } | NodePrimaryRole | WorkerRole;

export function nodeCluster(settings: Settings, logger: Logger): ClusterRole {
  if (cluster.isWorker) return workerRole();
  if (settings.workers <= 1) return { kind: 'single' };
  return primaryRole(settings.workers, logger);
}

function workerRole(): WorkerRole {
  const send = (msg: ToPrimary) => {
    if (process.connected) process.send?.(msg);
  };
  const store = new ReplicaStore(process.env.FNGATE_STORE_PREFIX || '/apisix');
  const end = workerEnd(store, send);
  process.on('message', (msg: ToWorker) => end.onMessage(msg));
  send({ t: 'hello' });
  return {
    kind: 'worker',
    store,
    started(refresh, metricsText) {
      end.started(refresh, metricsText);
      send({ t: 'ready' });
    },
    onOrphaned(fn) {
      process.once('disconnect', fn);
    },
  };
}

function primaryRole(count: number, logger: Logger): NodePrimaryRole {
  const book = new WorkerBook(count, logger);
  let prefix = '/apisix';
  let extraEnv: Record<string, string> = {};
  let stopping = false;

  const fork = () => {
    const worker = cluster.fork({ ...extraEnv, FNGATE_STORE_PREFIX: prefix });
    const started = Date.now();
    const peer = {
      id: worker.id,
      send: (m: ToWorker) => {
        if (worker.isConnected()) worker.send(m);
      },
      kill: () => worker.process.kill('SIGKILL'),
    };
    worker.on('message', (msg: unknown) => {
      if (isToPrimary(msg)) book.onMessage(peer, msg);
    });
    worker.once('exit', (code, signal) => {
      // Exit 0 is a drained worker: it got SIGTERM/SIGINT itself (a signal to the process group), not a crash.
      const next = book.exited(worker.id, stopping || code === 0, {
        pid: worker.process.pid,
        code,
        signal,
        uptime_ms: Date.now() - started,
      });
      if (next && 'giveUp' in next) role.onFatal?.(next.giveUp);
      // A crash loop is slowed down: the next fork waits a little longer after each early death.
      else if (next) setTimeout(fork, next.restartInMs).unref();
    });
  };

  const role: NodePrimaryRole = {
    kind: 'primary',
    wrapStore: (store) => book.wrapStore(store),
    start(store, env = {}) {
      prefix = store.prefix;
      extraEnv = env;
      logger.info(`workers: starting ${count} proxy workers (WORKERS)`);
      for (let i = 0; i < count; i++) fork();
    },
    notReady: () => book.notReady(),
    serveMetrics: (req, extraHeaders) =>
      book.serveMetrics(
        req,
        extraHeaders,
        Object.values(cluster.workers ?? {})
          .filter((w): w is Worker => !!w)
          .map((w) => ({ id: w.id, send: (m: ToWorker) => w.isConnected() && w.send(m) })),
      ),
    stop(signal) {
      stopping = true;
      const alive = Object.values(cluster.workers ?? {}).filter((w): w is Worker => !!w && !w.isDead());
      return Promise.all(
        alive.map(
          (w) =>
            new Promise<void>((resolve) => {
              if (w.isDead()) return resolve();
              w.once('exit', () => resolve());
              w.process.kill(signal);
            }),
        ),
      ).then(() => undefined);
    },
  };
  return role;
}

/**
 * A free port for the proxy when PROXY_PORT=0 and the workers listen with SO_REUSEPORT themselves (Bun): each
 * would get its own port 0 otherwise. Taken by listening and closing, so another process could take it in between.
 */
export function freeProxyPort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const { port } = srv.address() as AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

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
import { mergeExpositions } from '../core/observability/merge.ts';
import type { ConfigStore } from '../store/types.ts';
import { isToPrimary, ReplicaStore, Replicator, type ToPrimary, type ToWorker, workerEnd } from './replica.ts';
import type { Settings } from './settings.ts';

/** How long the primary waits for every worker to apply a change before it restarts the ones that did not. */
const ACK_TIMEOUT_MS = 10_000;
/** How long a metrics scrape waits for a worker's part. */
const METRICS_TIMEOUT_MS = 5_000;
/** Deaths before ready, in a row, after which the primary gives up. */
const MAX_EARLY_DEATHS = 5;

export interface PrimaryRole {
  kind: 'primary';
  /** The store for the primary's gateway/Admin API: writes resolve once every worker serves them. */
  wrapStore(store: ConfigStore): ConfigStore;
  /** Fork the workers (after the store is open: they get its prefix), with `env` added to their environment. */
  start(store: ConfigStore, env?: Record<string, string>): void;
  /** The status API's readiness: undefined when every worker serves the config. */
  notReady(): string | undefined;
  /** The export server's handler: every worker's metrics, summed. */
  /** `extraHeaders`: the export server's CORS headers for this request (Observability.exportCors). */
  serveMetrics(req: Request, extraHeaders?: Record<string, string>): Promise<Response>;
  /** Pass the signal to every worker; resolves when all have exited. */
  stop(signal: NodeJS.Signals): Promise<void>;
  /** Called when the primary must give up (workers keep dying): the entry exits 1. */
  onFatal?: (why: string) => void;
}

export interface WorkerRole {
  kind: 'worker';
  store: ReplicaStore;
  /** The gateway is built and the proxy listens: acks flow, and the primary counts this worker ready. */
  started(refresh: () => Promise<void>, metricsText: () => Promise<string>): void;
  /** Called when the primary went away: the entry drains and exits. */
  onOrphaned(fn: () => void): void;
}

export type ClusterRole = { kind: 'single' } | PrimaryRole | WorkerRole;

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

function primaryRole(count: number, logger: Logger): PrimaryRole {
  let replicator: Replicator | undefined;
  let prefix = '/apisix';
  let extraEnv: Record<string, string> = {};
  let stopping = false;
  let earlyDeaths = 0;
  /** Workers that said hello (APISIX's "status report"), and those serving (listening with the config). */
  const reported = new Set<number>();
  const ready = new Set<number>();
  let metricsId = 0;
  const metricsWaiters = new Map<number, (text: string) => void>();

  const fork = () => {
    const worker = cluster.fork({ ...extraEnv, FNGATE_STORE_PREFIX: prefix });
    const started = Date.now();
    worker.on('message', (msg: unknown) => {
      if (!isToPrimary(msg)) return;
      onMessage(worker, msg);
    });
    worker.once('exit', (code, signal) => {
      reported.delete(worker.id);
      const wasReady = ready.delete(worker.id);
      replicator?.removePeer(worker.id);
      // Exit 0 is a drained worker: it got SIGTERM/SIGINT itself (a signal to the process group), not a crash.
      if (stopping || code === 0) return;
      logger.error('workers: a worker died; starting another', {
        worker: worker.id,
        pid: worker.process.pid,
        code,
        signal,
        uptime_ms: Date.now() - started,
      });
      earlyDeaths = wasReady ? 0 : earlyDeaths + 1;
      if (earlyDeaths >= MAX_EARLY_DEATHS) {
        role.onFatal?.(`${earlyDeaths} workers in a row died before serving; giving up`);
        return;
      }
      // A crash loop is slowed down: the next fork waits a little longer after each early death.
      setTimeout(fork, Math.min(100 * 2 ** earlyDeaths, 5_000)).unref();
    });
  };

  const onMessage = (worker: Worker, msg: ToPrimary) => {
    const send = (m: ToWorker) => {
      if (worker.isConnected()) worker.send(m);
    };
    switch (msg.t) {
      case 'hello':
        reported.add(worker.id);
        void replicator?.addPeer({
          id: worker.id,
          send,
          kill: () => worker.process.kill('SIGKILL'),
        });
        break;
      case 'applied':
        replicator?.applied(worker.id, msg.seq);
        break;
      case 'ready':
        ready.add(worker.id);
        earlyDeaths = 0;
        break;
      case 'metrics':
        metricsWaiters.get(msg.id)?.(msg.text);
        break;
    }
  };

  const role: PrimaryRole = {
    kind: 'primary',
    wrapStore(store) {
      replicator = new Replicator(store, ACK_TIMEOUT_MS, logger);
      return replicator.wrap();
    },
    start(store, env = {}) {
      prefix = store.prefix;
      extraEnv = env;
      logger.info(`workers: starting ${count} proxy workers (WORKERS)`);
      for (let i = 0; i < count; i++) fork();
    },
    notReady() {
      if (reported.size !== count) return `worker count: ${count} but status report count: ${reported.size}`;
      for (const id of reported) if (!ready.has(id)) return `worker id: ${id} has not received configuration`;
      return undefined;
    },
    async serveMetrics(req, extraHeaders) {
      const url = new URL(req.url);
      if ((req.method !== 'GET' && req.method !== 'HEAD') || url.pathname !== '/apisix/prometheus/metrics') {
        return new Response(null, { status: 404 });
      }
      const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => !!w && ready.has(w.id));
      const parts = await Promise.all(
        workers.map(
          (w) =>
            new Promise<string>((resolve) => {
              const id = ++metricsId;
              const timer = setTimeout(() => done(''), METRICS_TIMEOUT_MS);
              const done = (text: string) => {
                clearTimeout(timer);
                metricsWaiters.delete(id);
                resolve(text);
              };
              metricsWaiters.set(id, done);
              if (w.isConnected()) w.send({ t: 'metrics', id } satisfies ToWorker);
              else done('');
            }),
        ),
      );
      return new Response(req.method === 'HEAD' ? null : mergeExpositions(parts), {
        status: 200,
        headers: { 'content-type': 'text/plain; version=0.0.4; charset=utf-8', ...extraHeaders },
      });
    },
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

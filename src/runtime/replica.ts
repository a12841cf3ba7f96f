/**
 * WORKERS > 1: one primary owns the real store and the Admin API; every worker serves the proxy from a
 * {@link ReplicaStore}, a read-only copy of the store's state that the primary pushes over a message channel
 * (node:cluster IPC on Node). Portable (no node:* imports) so that a thread-based runtime can reuse it.
 *
 * The guarantee: a write through the Admin API is answered only after EVERY live worker has rebuilt its snapshot
 * from a state that includes the write ({@link Replicator.sync} waits for each worker's `applied` ack). A worker
 * that does not ack within `ackTimeoutMs` is killed (and restarted by the primary with the current state), so no
 * worker keeps serving an older config after the Admin API said the change is done.
 */
import type { Logger } from '../core/context.ts';
import { mergeExpositions } from '../core/observability/merge.ts';
import {
  type ConfigStore,
  type PutOptions,
  type StoredItem,
  StoreError,
  type StoreState,
} from '../store/types.ts';

/** Primary → worker. */
export type ToWorker = { t: 'state'; seq: number; state: StoreState } | { t: 'metrics'; id: number };
/** Worker → primary. */
export type ToPrimary =
  | { t: 'hello' }
  | { t: 'applied'; seq: number }
  | { t: 'ready' }
  | { t: 'metrics'; id: number; text: string };

export function isToPrimary(msg: unknown): msg is ToPrimary {
  return typeof msg === 'object' && msg !== null && typeof (msg as { t?: unknown }).t === 'string';
}

/** The worker's store: the last state the primary sent. Writes are refused (the Admin API runs in the primary). */
export class ReplicaStore implements ConfigStore {
  readonly kind = 'replica';
  readonly readOnly = 'this is a proxy worker; the Admin API is served by the primary process';
  private state: StoreState | undefined;
  private seq = 0;
  private first: Promise<void>;
  private gotFirst!: () => void;
  private readonly listeners = new Set<() => void>();

  constructor(readonly prefix: string) {
    this.first = new Promise((r) => {
      this.gotFirst = r;
    });
  }

  /** A state from the primary: later `load()`s return it and the watchers are told. Returns its sequence number. */
  apply(seq: number, state: StoreState): number {
    if (seq <= this.seq) return this.seq; // an older message overtaken by a newer one: keep the newer state
    this.seq = seq;
    this.state = state;
    this.gotFirst();
    for (const l of this.listeners) l();
    return seq;
  }

  async load(): Promise<StoreState> {
    await this.first;
    return this.state!;
  }
  async get(key: string): Promise<StoredItem | undefined> {
    return (await this.load()).items.find((i) => i.key === key);
  }
  put(): Promise<{ item: StoredItem; created: boolean }> {
    return Promise.reject(new StoreError(this.readOnly));
  }
  delete(): Promise<StoredItem | undefined> {
    return Promise.reject(new StoreError(this.readOnly));
  }
  nextId(): Promise<number> {
    return Promise.reject(new StoreError(this.readOnly));
  }
  watch(onChange: () => void): () => void {
    this.listeners.add(onChange);
    return () => this.listeners.delete(onChange);
  }
  async close(): Promise<void> {
    this.listeners.clear();
  }
}

/**
 * A worker's end: applies the primary's states, and acks each one once `refresh()` (the gateway's snapshot rebuild)
 * has finished after it. Acks wait for the gateway to exist (`setRefresh`): a state that arrives while the worker
 * starts is acked once the gateway's first load (which reads the newest state) is done.
 */
export function workerEnd(store: ReplicaStore, send: (msg: ToPrimary) => void) {
  let refresh: (() => Promise<void>) | undefined;
  let started!: () => void;
  const gatewayUp = new Promise<void>((r) => {
    started = r;
  });
  let metrics: (() => Promise<string>) | undefined;
  return {
    onMessage(msg: ToWorker): void {
      if (msg.t === 'state') {
        const seq = store.apply(msg.seq, msg.state);
        void gatewayUp
          .then(() => refresh?.())
          .then(() => send({ t: 'applied', seq }));
      } else if (msg.t === 'metrics') {
        void (metrics ? metrics() : Promise.resolve('')).then(
          (text) => send({ t: 'metrics', id: msg.id, text }),
          () => send({ t: 'metrics', id: msg.id, text: '' }),
        );
      }
    },
    /** The gateway is built: acks may flow. */
    started(gatewayRefresh: () => Promise<void>, metricsText: () => Promise<string>): void {
      refresh = gatewayRefresh;
      metrics = metricsText;
      started();
    },
  };
}

export interface Peer {
  id: number;
  send(msg: ToWorker): void;
  /** Kill it: it failed to apply a state in time (the primary restarts it). */
  kill(reason: string): void;
}

/** The primary's end: pushes the store's state to every worker and waits for their acks. */
export class Replicator {
  private seq = 0;
  /** The last state pushed to the workers. */
  private sent = { revision: -1, seq: 0 };
  private readonly peers = new Map<number, { peer: Peer; applied: number }>();
  private readonly waiters = new Set<{ seq: number; check: () => void }>();

  constructor(
    private readonly store: ConfigStore,
    private readonly ackTimeoutMs: number,
    private readonly log: { warn(msg: string, f?: Record<string, unknown>): void },
  ) {}

  /** A new worker said hello: it gets the current state at once. */
  async addPeer(peer: Peer): Promise<void> {
    this.peers.set(peer.id, { peer, applied: 0 });
    // Sequence numbers are taken before the load and the store's loads answer in call order (they read its
    // in-memory state), so a higher number always carries a state at least as new.
    const seq = ++this.seq;
    const state = await this.store.load();
    if (!this.peers.has(peer.id)) return;
    peer.send({ t: 'state', seq, state });
  }

  removePeer(id: number): void {
    this.peers.delete(id);
    for (const w of this.waiters) w.check();
  }

  applied(id: number, seq: number): void {
    const p = this.peers.get(id);
    if (p && seq > p.applied) p.applied = seq;
    for (const w of this.waiters) w.check();
  }

  /**
   * Send the store's current state to every worker; resolves when each worker alive now has applied it (or died,
   * or was killed for not answering within ackTimeoutMs).
   */
  async sync(fromWatch = false): Promise<void> {
    let seq = ++this.seq;
    const state = await this.store.load();
    const targets = [...this.peers.values()];
    if (state.revision === this.sent.revision) {
      // Already pushed (the store notifies its watchers of a write before put() resolves): a watch has nothing to
      // wait for, a write waits for the acks of that push.
      if (fromWatch) return;
      seq = this.sent.seq;
    } else {
      this.sent = { revision: state.revision, seq };
      for (const p of targets) p.peer.send({ t: 'state', seq, state });
    }
    await new Promise<void>((resolve) => {
      const waiter = {
        seq,
        check: () => {
          const behind = targets.filter((p) => this.peers.get(p.peer.id) === p && p.applied < seq);
          if (behind.length === 0) {
            clearTimeout(timer);
            this.waiters.delete(waiter);
            resolve();
          }
        },
      };
      const timer = setTimeout(() => {
        for (const p of targets) {
          if (this.peers.get(p.peer.id) === p && p.applied < seq) {
            this.log.warn('workers: a worker did not apply a config change in time; restarting it', {
              worker: p.peer.id,
              timeout_ms: this.ackTimeoutMs,
            });
            this.removePeer(p.peer.id);
            p.peer.kill('config change not applied in time');
          }
        }
        waiter.check();
      }, this.ackTimeoutMs);
      this.waiters.add(waiter);
      waiter.check();
    });
  }

  /**
   * The store the primary's gateway and Admin API use: the real one, whose `put`/`delete` resolve only once every
   * worker serves the change. Changes from elsewhere (file edited, etcd watch) are pushed too.
   */
  wrap(): ConfigStore {
    const inner = this.store;
    const stopWatch = inner.watch(() => void this.sync(true));
    return {
      kind: inner.kind,
      readOnly: inner.readOnly,
      prefix: inner.prefix,
      load: () => inner.load(),
      get: (key) => inner.get(key),
      getLatest: inner.getLatest && ((key) => inner.getLatest!(key)),
      nextId: () => inner.nextId(),
      put: async (key, value, opts?: PutOptions) => {
        const out = await inner.put(key, value, opts);
        await this.sync();
        return out;
      },
      delete: async (key, opts?: PutOptions) => {
        const out = await inner.delete(key, opts);
        await this.sync();
        return out;
      },
      watch: (onChange) => inner.watch(onChange),
      close: async () => {
        stopWatch();
        await inner.close();
      },
    };
  }
}

/**
 * A WORKERS primary as its entry sees it (workers-node.ts on Node and Bun, workers-deno.ts on Deno). `Signal` is
 * the runtime's signal name type; `Start` how the workers are started.
 */
export interface PrimaryRole<Signal, Start> {
  kind: 'primary';
  /** The store for the primary's gateway/Admin API: writes resolve once every worker serves them. */
  wrapStore(store: ConfigStore): ConfigStore;
  /** Start the workers (after the store is open: they get its prefix). */
  start: Start;
  /** The status API's readiness: undefined when every worker serves the config. */
  notReady(): string | undefined;
  /** The export server's handler: every worker's metrics, summed; `extraHeaders`: its CORS headers. */
  serveMetrics(req: Request, extraHeaders?: Record<string, string>): Promise<Response>;
  /** Pass the signal to every worker; resolves when all have exited. */
  stop(signal: Signal): Promise<void>;
  /** Called when the primary must give up (workers keep dying): the entry exits 1. */
  onFatal?: (why: string) => void;
}

/** A WORKERS worker as its entry sees it. */
export interface WorkerRole {
  kind: 'worker';
  store: ReplicaStore;
  /** The gateway is built and the proxy listens: acks flow, and the primary counts this worker ready. */
  started(refresh: () => Promise<void>, metricsText: () => Promise<string>): void;
  /** Called when the primary went away: the entry drains and exits. */
  onOrphaned(fn: () => void): void;
}

/** How long the primary waits for every worker to apply a change before it restarts the ones that did not. */
const ACK_TIMEOUT_MS = 10_000;
/** How long a metrics scrape waits for a worker's part. */
const METRICS_TIMEOUT_MS = 5_000;
/** Deaths before ready, in a row, after which the primary gives up. */
const MAX_EARLY_DEATHS = 5;

/**
 * What a primary knows of its workers, whatever starts them (node:cluster on Node and Bun, `Deno.Command` on
 * Deno): which reported and which serve (APISIX's status API), the replicator that holds Admin API writes until
 * every worker applied them, the crash-loop count, and the metrics scrape that sums every worker's export.
 */
export class WorkerBook {
  /** Workers that said hello (APISIX's "status report"), and those serving (listening with the config). */
  private readonly reported = new Set<number>();
  private readonly ready = new Set<number>();
  private replicator: Replicator | undefined;
  private earlyDeaths = 0;
  private metricsId = 0;
  private readonly metricsWaiters = new Map<number, (text: string) => void>();

  constructor(
    private readonly count: number,
    private readonly logger: Logger,
  ) {}

  /** The store the primary's gateway and Admin API use: writes resolve once every worker applied them. */
  wrapStore(store: ConfigStore): ConfigStore {
    this.replicator = new Replicator(store, ACK_TIMEOUT_MS, this.logger);
    return this.replicator.wrap();
  }

  onMessage(worker: Peer, msg: ToPrimary): void {
    switch (msg.t) {
      case 'hello':
        this.reported.add(worker.id);
        void this.replicator?.addPeer(worker);
        break;
      case 'applied':
        this.replicator?.applied(worker.id, msg.seq);
        break;
      case 'ready':
        this.ready.add(worker.id);
        this.earlyDeaths = 0;
        break;
      case 'metrics':
        this.metricsWaiters.get(msg.id)?.(msg.text);
        break;
    }
  }

  /**
   * Worker `id` exited. A drained one (the primary stopping, or exit 0: it got the signal itself) is forgotten;
   * a crash is logged and gives the delay before its replacement starts (longer after each death before serving),
   * or `giveUp` with the reason after MAX_EARLY_DEATHS of those in a row.
   */
  exited(
    id: number,
    drained: boolean,
    detail: Record<string, unknown>,
  ): { restartInMs: number } | { giveUp: string } | undefined {
    this.reported.delete(id);
    const wasReady = this.ready.delete(id);
    this.replicator?.removePeer(id);
    if (drained) return undefined;
    this.logger.error('workers: a worker died; starting another', { worker: id, ...detail });
    this.earlyDeaths = wasReady ? 0 : this.earlyDeaths + 1;
    if (this.earlyDeaths >= MAX_EARLY_DEATHS) {
      return { giveUp: `${this.earlyDeaths} workers in a row died before serving; giving up` };
    }
    return { restartInMs: Math.min(100 * 2 ** this.earlyDeaths, 5_000) };
  }

  isReady(id: number): boolean {
    return this.ready.has(id);
  }

  /** The status API's readiness, APISIX's messages: undefined once every worker serves the config. */
  notReady(): string | undefined {
    const { count, reported, ready } = this;
    if (reported.size !== count) return `worker count: ${count} but status report count: ${reported.size}`;
    for (const id of reported) if (!ready.has(id)) return `worker id: ${id} has not received configuration`;
    return undefined;
  }

  /**
   * The export server's answer: the serving workers' metrics, summed (a worker that does not answer within
   * METRICS_TIMEOUT_MS counts as empty). `send` asks one worker; false when it cannot be reached.
   */
  async serveMetrics(
    req: Request,
    extraHeaders: Record<string, string> | undefined,
    workers: readonly { id: number; send(msg: ToWorker): boolean }[],
  ): Promise<Response> {
    const url = new URL(req.url);
    if ((req.method !== 'GET' && req.method !== 'HEAD') || url.pathname !== '/apisix/prometheus/metrics') {
      return new Response(null, { status: 404 });
    }
    const parts = await Promise.all(
      workers
        .filter((w) => this.ready.has(w.id))
        .map(
          (w) =>
            new Promise<string>((resolve) => {
              const id = ++this.metricsId;
              const timer = setTimeout(() => done(''), METRICS_TIMEOUT_MS);
              const done = (text: string) => {
                clearTimeout(timer);
                this.metricsWaiters.delete(id);
                resolve(text);
              };
              this.metricsWaiters.set(id, done);
              if (!w.send({ t: 'metrics', id })) done('');
            }),
        ),
    );
    return new Response(req.method === 'HEAD' ? null : mergeExpositions(parts), {
      status: 200,
      headers: { 'content-type': 'text/plain; version=0.0.4; charset=utf-8', ...extraHeaders },
    });
  }
}

/**
 * The shutdown sequence every self-hosted entry (node.ts, bun.ts, deno.ts) follows on SIGTERM/SIGINT, or when a
 * worker's primary is gone: stop accepting, let requests in flight finish within SHUTDOWN_TIMEOUT, close connections
 * as they go idle, cut what is left at the deadline, then close the gateway, the access log, the store and the
 * forwarder in that order and exit. A primary (WORKERS > 1) stops its workers before its status API closes, so a
 * probe sees the instance until they are gone. What differs per runtime is how a server closes; that is passed in.
 */
import { finishShutdown } from './settings.ts';

/** The part of a WORKERS role the sequence needs (workers-node.ts, workers-deno.ts). */
export type ShutdownSignal = 'SIGTERM' | 'SIGINT';

export type ShutdownRole =
  | { kind: 'single' }
  | { kind: 'primary'; stop(signal: ShutdownSignal): Promise<void>; onFatal?: (why: string) => void }
  | { kind: 'worker'; onOrphaned(fn: () => void): void };

export interface ShutdownPlan {
  graceMs: number;
  logger: { info(msg: string): void; warn(msg: string): void; error(msg: string): void };
  role: ShutdownRole;
  /** Stops every server but the status API from accepting; resolves once their requests in flight finished. */
  closeServers(): Promise<unknown>;
  /** Closes the status API (after the workers, on a primary). */
  closeStatus(): Promise<unknown> | undefined;
  /** Every 100 ms while draining: closes connections that went idle (a streaming answer's goes idle later). */
  sweepIdle?(): void;
  /** The grace period is over: cuts what is left. */
  force(): void;
  /** Closed in order once the servers are: the gateway, the access log, the store, the forwarder. */
  parts: readonly ({ close(): unknown } | undefined)[];
  exit(code: number): void;
  /** Lets a timer not keep the process alive (Deno: `Deno.unrefTimer`). */
  unref(timer: ReturnType<typeof setTimeout>): void;
  /** Subscribes to a signal. */
  onSignal(signal: ShutdownSignal, fn: () => void): void;
}

/**
 * Installs the sequence (signal handlers, the orphaned worker's, the primary's fatal error); returns whether a
 * shutdown has begun (the Node entry answers `Connection: close` from then on).
 */
export function installShutdown(plan: ShutdownPlan): () => boolean {
  const { logger, role } = plan;
  let stopping = false;
  const shutdown = (why: string, signal: ShutdownSignal) => {
    if (stopping) return;
    stopping = true;
    logger.info(`${why}: no new connections; finishing requests in flight (up to ${plan.graceMs} ms)`);
    const force = setTimeout(() => {
      logger.warn('shutdown: grace period over, closing remaining connections');
      plan.force();
    }, plan.graceMs);
    plan.unref(force);
    if (plan.sweepIdle) plan.unref(setInterval(plan.sweepIdle, 100));
    finishShutdown(
      Promise.all([
        plan.closeServers(),
        role.kind === 'primary' ? role.stop(signal).then(() => plan.closeStatus()) : plan.closeStatus(),
      ]),
      plan.parts,
      logger,
      plan.exit,
    );
  };
  plan.onSignal('SIGTERM', () => shutdown('SIGTERM', 'SIGTERM'));
  plan.onSignal('SIGINT', () => shutdown('SIGINT', 'SIGINT'));
  if (role.kind === 'worker') role.onOrphaned(() => shutdown('primary gone', 'SIGTERM'));
  if (role.kind === 'primary') {
    role.onFatal = (why) => {
      logger.error(`workers: ${why}`);
      void role.stop('SIGTERM').then(() => plan.exit(1));
    };
  }
  return () => stopping;
}

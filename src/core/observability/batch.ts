/**
 * APISIX's batch processor (apisix/utils/batch-processor.lua, apisix-wave2.md §9.3) for the loggers: entries are
 * collected into a batch sent when it reaches `batch_max_size`, when no entry came for `inactive_timeout` seconds,
 * or when its oldest entry is `buffer_duration` seconds old. A failed send is retried `max_retry_count` times,
 * `retry_delay` seconds apart, then dropped with an error log. Memory is bounded: at most `maxPending` entries are
 * held (buffered or waiting for a retry); beyond that new entries are dropped, counted and reported (one log line
 * per second at most, with the count).
 */
import * as v from 'valibot';
import type { Logger } from '../context.ts';
import { MAX_DURATION_S } from '../schema/common.ts';
import { INTEGER } from '../schema/format.ts';

const seconds = (min: number, dflt: number) =>
  v.optional(v.pipe(v.number(INTEGER), v.integer(), v.minValue(min), v.maxValue(MAX_DURATION_S)), dflt);

/** The batch-processor fields every logger's schema has (APISIX `batch_processor_manager:wrap_schema`). */
export const batchFields = (name: string) => ({
  name: v.optional(v.pipe(v.string(), v.minLength(1), v.maxLength(256)), name),
  batch_max_size: v.optional(v.pipe(v.number(INTEGER), v.integer(), v.minValue(1), v.maxValue(1_000_000)), 1000),
  inactive_timeout: seconds(1, 5),
  buffer_duration: seconds(1, 60),
  max_retry_count: v.optional(v.pipe(v.number(INTEGER), v.integer(), v.minValue(0), v.maxValue(1000)), 0),
  retry_delay: seconds(0, 1),
});

export interface BatchConf {
  name: string;
  batch_max_size: number;
  inactive_timeout: number;
  buffer_duration: number;
  max_retry_count: number;
  retry_delay: number;
}

/** APISIX's `max_pending_entries` default (plugin metadata). */
export const DEFAULT_MAX_PENDING = 8192;

export interface BatchStats {
  /** Entries held now (buffered and waiting for a retry). */
  pending: number;
  sent: number;
  /** Dropped because the backlog was full. */
  droppedFull: number;
  /** Dropped after the last retry failed. */
  droppedFailed: number;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class BatchProcessor<E> {
  private batch: E[] = [];
  private first = 0;
  private last = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  /** Resolves when the current batch was handed over (sent or dropped): what a Worker's waitUntil keeps alive. */
  private flushed: { promise: Promise<void>; resolve: () => void } | undefined;
  private inFlight = 0;
  private lastReport = 0;
  private unreported = 0;
  readonly stats: BatchStats = { pending: 0, sent: 0, droppedFull: 0, droppedFailed: 0 };

  constructor(
    private readonly conf: BatchConf,
    private readonly send: (entries: E[]) => Promise<void>,
    private readonly logger: Logger,
    /** At most this many entries are held (APISIX `max_pending_entries`). */
    public maxPending = DEFAULT_MAX_PENDING,
  ) {}

  /**
   * Queue an entry. Returns a promise that settles once the batch holding it is sent or dropped (a Worker passes
   * it to `waitUntil`); undefined when the entry was dropped at once (backlog full).
   */
  push(entry: E): Promise<void> | undefined {
    if (this.stats.pending >= this.maxPending) {
      this.stats.droppedFull++;
      this.unreported++;
      const now = Date.now();
      if (now - this.lastReport >= 1000) {
        this.logger.error(`${this.conf.name}: log entries dropped, the backlog of ${this.maxPending} is full (max_pending_entries)`, {
          dropped: this.unreported,
          dropped_total: this.stats.droppedFull,
        });
        this.lastReport = now;
        this.unreported = 0;
      }
      return undefined;
    }
    const now = Date.now();
    if (this.batch.length === 0) this.first = now;
    this.last = now;
    this.batch.push(entry);
    this.stats.pending++;
    if (!this.flushed) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => {
        resolve = r;
      });
      this.flushed = { promise, resolve };
    }
    const done = this.flushed.promise;
    if (this.batch.length >= this.conf.batch_max_size) this.flush();
    else if (this.timer === undefined) this.arm(this.conf.inactive_timeout * 1000);
    return done;
  }

  private arm(ms: number): void {
    this.timer = setTimeout(() => this.tick(), ms);
    (this.timer as { unref?: () => void }).unref?.();
  }

  private tick(): void {
    this.timer = undefined;
    if (this.batch.length === 0) return;
    const now = Date.now();
    const idle = now - this.last;
    const age = now - this.first;
    const inactive = this.conf.inactive_timeout * 1000;
    const buffer = this.conf.buffer_duration * 1000;
    if (idle >= inactive || age >= buffer) this.flush();
    else this.arm(Math.max(1, Math.min(inactive - idle, buffer - age)));
  }

  /** Send what is buffered now. */
  flush(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.batch.length === 0) return;
    const entries = this.batch;
    const flushed = this.flushed;
    this.batch = [];
    this.flushed = undefined;
    this.inFlight++;
    void this.deliver(entries).finally(() => {
      this.inFlight--;
      this.stats.pending -= entries.length;
      flushed?.resolve();
    });
  }

  private async deliver(entries: E[]): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.send(entries);
        this.stats.sent += entries.length;
        return;
      } catch (err) {
        const msg = err instanceof Error ? err.message : String(err);
        if (attempt >= this.conf.max_retry_count) {
          this.stats.droppedFailed += entries.length;
          this.logger.error(
            `${this.conf.name}: batch of ${entries.length} log entries dropped: ${msg}${this.conf.max_retry_count ? ' (exceeded the max_retry_count)' : ''}`,
            { dropped_total: this.stats.droppedFailed },
          );
          return;
        }
        this.logger.warn(`${this.conf.name}: sending ${entries.length} log entries failed, retrying: ${msg}`);
        await sleep(this.conf.retry_delay * 1000);
      }
    }
  }

  /** Batches being sent now. */
  get sending(): number {
    return this.inFlight;
  }
}

/**
 * file-logger's appender on Node and Bun: one append-mode write stream per path (writes stay in order and never
 * block the event loop). A file that cannot be opened is reported once per path.
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import type { Logger } from '../core/context.ts';
import type { FileAppender } from '../core/observability/prometheus.ts';

/** Bytes queued for one file beyond which lines are dropped (and counted) rather than held in memory. */
const MAX_QUEUED = 16 * 1024 * 1024;

export function nodeFileAppender(logger: Logger): FileAppender {
  const streams = new Map<string, WriteStream>();
  const failed = new Set<string>();
  let dropped = 0;
  return {
    append(path, text) {
      if (failed.has(path)) return;
      let s = streams.get(path);
      if (!s) {
        s = createWriteStream(path, { flags: 'a', mode: 0o600 });
        s.on('error', (err) => {
          failed.add(path);
          streams.delete(path);
          logger.error(`file-logger: cannot write ${path}: ${err.message}`);
        });
        streams.set(path, s);
      }
      if (s.writableLength > MAX_QUEUED) {
        dropped++;
        if (dropped % 1000 === 1) logger.error(`file-logger: ${path} is not keeping up; log lines dropped`, { dropped });
        return;
      }
      s.write(text);
    },
  };
}

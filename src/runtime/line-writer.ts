/**
 * The access log's writer on Node, Deno and Bun: lines are gathered and written to stdout together, once per
 * {@link LINE_DELAY_MS} or when {@link LINE_BYTES} have gathered, instead of one write (a system call on a file or
 * /dev/null, a write request on a pipe) per request. `close()` writes what is left; the entries call it on shutdown.
 */
export const LINE_DELAY_MS = 5;
export const LINE_BYTES = 64 * 1024;

export interface LineWriter {
  /** Queue one line (ending in a newline). */
  write(line: string): void;
  /** Write what is queued now. */
  flush(): void;
  /** The same, for the shutdown sequence. */
  close(): void;
}

export function lineWriter(out: (text: string) => void, delayMs = LINE_DELAY_MS, maxBytes = LINE_BYTES): LineWriter {
  let lines: string[] = [];
  let size = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const flush = () => {
    if (timer !== undefined) {
      clearTimeout(timer);
      timer = undefined;
    }
    if (lines.length === 0) return;
    const text = lines.length === 1 ? lines[0]! : lines.join('');
    lines = [];
    size = 0;
    out(text);
  };
  return {
    write(line) {
      lines.push(line);
      size += line.length;
      if (size >= maxBytes) flush();
      else if (timer === undefined) timer = setTimeout(flush, delayMs);
    },
    flush,
    close: flush,
  };
}

/**
 * Process metrics for the Prometheus export server on Node, Deno and Bun (each has Node's `process` global):
 * the names prom-client's default metrics use, so existing dashboards read them: CPU seconds, resident memory,
 * heap, start time, and the event-loop lag (measured by a timer's drift, sampled every 500 ms).
 */
import type { Collector } from '../core/observability/metrics.ts';

interface ProcessLike {
  cpuUsage(): { user: number; system: number };
  memoryUsage(): { rss: number; heapUsed: number; heapTotal: number };
  uptime(): number;
}

const SAMPLE_MS = 500;

export function processCollector(): Collector {
  const proc = (globalThis as { process?: ProcessLike }).process;
  const startSeconds = Date.now() / 1000 - (proc?.uptime() ?? 0);
  let lag = 0;
  let expected = performance.now() + SAMPLE_MS;
  const timer = setInterval(() => {
    const now = performance.now();
    lag = Math.max(0, now - expected) / 1000;
    expected = now + SAMPLE_MS;
  }, SAMPLE_MS);
  (timer as { unref?: () => void }).unref?.();
  const g = (name: string, help: string, type: string, value: number) =>
    `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n${name} ${value}\n`;
  return {
    collect(out) {
      if (!proc) return;
      const cpu = proc.cpuUsage();
      const mem = proc.memoryUsage();
      out.push(
        g('process_cpu_user_seconds_total', 'Total user CPU time spent in seconds.', 'counter', cpu.user / 1e6) +
          g('process_cpu_system_seconds_total', 'Total system CPU time spent in seconds.', 'counter', cpu.system / 1e6) +
          g('process_cpu_seconds_total', 'Total user and system CPU time spent in seconds.', 'counter', (cpu.user + cpu.system) / 1e6) +
          g('process_resident_memory_bytes', 'Resident memory size in bytes.', 'gauge', mem.rss) +
          g('process_start_time_seconds', 'Start time of the process since unix epoch in seconds.', 'gauge', Math.round(startSeconds)) +
          g('nodejs_heap_size_used_bytes', 'Process heap size used from the JavaScript engine in bytes.', 'gauge', mem.heapUsed) +
          g('nodejs_heap_size_total_bytes', 'Process heap size from the JavaScript engine in bytes.', 'gauge', mem.heapTotal) +
          g('nodejs_eventloop_lag_seconds', 'Lag of event loop in seconds.', 'gauge', lag),
      );
    },
  };
}

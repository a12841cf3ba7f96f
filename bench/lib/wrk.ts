/**
 * wrk, pinned to the load generator's core, with a Lua `done()` hook that prints the summary and exact
 * latency percentiles (µs) as one JSON line.
 */
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

const DONE_LUA = `
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
`;

export interface WrkResult {
  requests: number;
  duration_us: number;
  bytes: number;
  /** Socket errors (connect/read/write/timeout) and non-2xx/3xx answers. */
  connect: number;
  read: number;
  write: number;
  status: number;
  timeout: number;
  /** Latencies in µs. */
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
  rps: number;
  errors: number;
}

export function writeWrkScript(dir: string): string {
  const file = join(dir, 'wrk-done.lua');
  writeFileSync(file, DONE_LUA);
  return file;
}

export interface WrkOptions {
  wrk: string;
  taskset: string;
  core: number;
  script: string;
  url: string;
  connections: number;
  seconds: number;
  threads?: number;
  timeoutS?: number;
}

export function runWrk(o: WrkOptions): Promise<WrkResult> {
  const args = [
    '-c',
    String(o.core),
    o.wrk,
    `-t${o.threads ?? 1}`,
    `-c${o.connections}`,
    `-d${o.seconds}s`,
    `--timeout`,
    `${o.timeoutS ?? 5}s`,
    '-s',
    o.script,
    o.url,
  ];
  return new Promise((resolve, reject) => {
    execFile(o.taskset, args, { encoding: 'utf8', timeout: (o.seconds + 30) * 1000 }, (err, stdout, stderr) => {
      const line = stdout.split('\n').find((l) => l.startsWith('WRKJSON '));
      if (!line) {
        reject(new Error(`wrk failed: ${err?.message ?? ''}\n${stdout}\n${stderr}`));
        return;
      }
      const r = JSON.parse(line.slice(8)) as WrkResult;
      r.rps = r.requests / (r.duration_us / 1e6);
      r.errors = r.connect + r.read + r.write + r.status + r.timeout;
      resolve(r);
    });
  });
}

/**
 * The memory of a Node gateway under test, measured after full garbage collections forced through its V8 inspector
 * (opened with NODE_OPTIONS: the gateway's own `gc()` does not exist, and `--expose-gc` would have to be in its
 * command line, which the harness owns).
 */
import { readFileSync } from 'node:fs';
import { WebSocket } from 'undici';
import type { GatewayUnderTest } from '../conformance/harness.ts';
import { waitFor } from './process.ts';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function rssKiB(pid: number): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
}

/**
 * Environment that opens the V8 inspector of a Node gateway on a free loopback port (the gateway's own
 * `gc()` does not exist: `--expose-gc` would have to be in its command line, which the harness owns).
 */
export const INSPECTABLE = { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --inspect=127.0.0.1:0`.trim() };

/** The memory of a gateway started with {@link INSPECTABLE}, measured after full garbage collections. */
export async function inspectMemory(gw: GatewayUnderTest): Promise<{
  /** Forces two full GCs, then reads `process.memoryUsage()` in the gateway and its RSS. */
  measure(): Promise<{ heapUsed: number; external: number; rss: number }>;
  close(): Promise<void>;
}> {
  const url = await waitFor(() => /Debugger listening on (ws:\/\/\S+)/.exec(gw.proc.stderr())?.[1], {
    timeoutMs: 5000,
    message: 'the gateway did not open its inspector',
  });
  const ws = new WebSocket(url);
  await new Promise<void>((resolve, reject) => {
    ws.onopen = () => resolve();
    ws.onerror = () => reject(new Error(`cannot connect to the inspector at ${url}`));
  });
  let nextId = 1;
  const pending = new Map<number, (reply: { result?: { result?: { value?: unknown } }; error?: unknown }) => void>();
  ws.onmessage = (e) => {
    const msg = JSON.parse(String(e.data));
    pending.get(msg.id)?.(msg);
    pending.delete(msg.id);
  };
  const call = (method: string, params: object = {}) =>
    new Promise<{ result?: { result?: { value?: unknown } }; error?: unknown }>((resolve) => {
      const id = nextId++;
      pending.set(id, resolve);
      ws.send(JSON.stringify({ id, method, params }));
    });
  return {
    async measure() {
      // Twice: objects freed by the first collection's weak callbacks and finalizers go in the second.
      await call('HeapProfiler.collectGarbage');
      await call('HeapProfiler.collectGarbage');
      const reply = await call('Runtime.evaluate', { expression: 'JSON.stringify(process.memoryUsage())', returnByValue: true });
      if (reply.error || typeof reply.result?.result?.value !== 'string') throw new Error(`inspector: ${JSON.stringify(reply)}`);
      const m = JSON.parse(reply.result.result.value) as { heapUsed: number; external: number };
      return { heapUsed: m.heapUsed, external: m.external, rss: rssKiB(gw.proc.pid) * 1024 };
    },
    async close() {
      // Before the gateway is stopped: with a debugger attached, Node waits for it to disconnect at exit.
      if (ws.readyState === WebSocket.CLOSED) return;
      const closed = new Promise<void>((resolve) => ws.addEventListener('close', () => resolve()));
      ws.close();
      await Promise.race([closed, sleep(2000)]);
    },
  };
}


/**
 * A WebSocket client that never reads (issue 19, Bad input): the gateway's memory must stay bounded.
 *
 *   npm run build && npx tsx bench/websocket-backpressure.ts [--runtime node|deno|bun] [--seconds 30] [--clients 4] [--tls]
 *
 * Loopback only, at most 60 s. Starts the WebSocket test function (test/functions/websocket.ts), whose `/flood`
 * sends 64 KiB messages as fast as its socket drains, and the gateway on the runtime (the conformance launchers),
 * with an `enable_websocket` route to it; opens `clients` WebSockets through the gateway that complete the
 * handshake and then never read. Every 5 s it prints the gateway's RSS (all processes of its group), how much the
 * function managed to send, and how many tunnels are still open. Node pauses the function's side while the
 * client's socket buffer is full (stream.pipe), so the function can send only what the socket buffers hold; the
 * frame relays (Deno, Bun) close a tunnel once 16 MiB wait for its client. Exit code 1 when the RSS grew by more
 * than `--max-growth` MiB (default 150).
 *
 * `--tls`: the same over the TLS port (`wss://` on PROXY_HTTPS_PORT, SNI `ws.example.com`, a certificate made with
 * the openssl CLI). There every runtime serves the upgrade through node:tls + node:http and pipes the two sockets
 * (src/runtime/node-tls.ts, websocket-node.ts), so Deno and Bun get Node's pause-while-full backpressure too, on
 * their node:tls.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { GatewayUnderTest } from '../test/conformance/harness.ts';
import { parseArgs } from 'node:util';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** RSS in MiB of every process in the process group `pgid` (a runtime's launcher may be a wrapper: deno task). */
export function groupRssMiB(pgid: number): number {
  let kb = 0;
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[2]) !== pgid) continue;
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${d}/status`, 'utf8'));
      if (m) kb += Number(m[1]);
    } catch {
      // gone meanwhile
    }
  }
  return Math.round(kb / 102.4) / 10;
}

/** Where the clients connect over TLS (`wss://`): the gateway's TLS port and the SNI its ssl answers. */
export interface TlsTarget {
  port: number;
  servername: string;
}

/**
 * A WebSocket handshake on a raw socket (a TLS socket with `tls`); resolves once the 101 head is in, then the
 * socket is never read again.
 */
function silentClient(proxyUrl: string, path: string, tls?: TlsTarget): Promise<Socket> {
  const u = new URL(proxyUrl);
  return new Promise((resolve, reject) => {
    const opened = () => {
      s.write(
        `GET ${path} HTTP/1.1\r\nHost: ${u.host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
          'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
      );
    };
    // A paused TLS socket stops reading its TCP connection too: the gateway's TLS writes back up the same way.
    const s: Socket = tls
      ? tlsConnect({ host: u.hostname, port: tls.port, servername: tls.servername, rejectUnauthorized: false }, opened)
      : connect(Number(u.port), u.hostname, opened);
    let head = '';
    const onData = (d: Buffer) => {
      head += d.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      s.off('data', onData);
      if (!head.startsWith('HTTP/1.1 101')) {
        s.destroy();
        reject(new Error(`no 101: ${head.split('\r\n')[0]}`));
        return;
      }
      // Never read again: the kernel's receive buffer fills, then the gateway's send buffer.
      s.pause();
      resolve(s);
    };
    s.on('data', onData);
    s.on('error', reject);
  });
}

export interface BackpressureResult {
  baselineMiB: number;
  peakMiB: number;
  /** RSS at the last sample. */
  endMiB: number;
  growthMiB: number;
  /** Bytes the function handed to its sockets during the run. */
  floodedMiB: number;
  /** Tunnels still open at the end. */
  open: number;
  lines: string[];
}

/** Runs the scenario against a started gateway (`pgid` its process group) and a started WebSocket function. */
export async function runBackpressure(opts: {
  proxyUrl: string;
  pgid: number;
  fn: { flooded: number };
  clients: number;
  seconds: number;
  /** Over the TLS port (`wss://`) rather than the plain one. */
  tls?: TlsTarget;
  print?: (line: string) => void;
}): Promise<BackpressureResult> {
  const lines: string[] = [];
  const say = (l: string) => {
    lines.push(l);
    opts.print?.(l);
  };
  await sleep(300);
  const baselineMiB = groupRssMiB(opts.pgid);
  const startFlooded = opts.fn.flooded;
  say(`baseline gateway RSS ${baselineMiB} MiB`);
  const sockets: Socket[] = [];
  const closed = new Set<Socket>();
  for (let i = 0; i < opts.clients; i++) {
    const s = await silentClient(opts.proxyUrl, `/flood/${i}`, opts.tls);
    s.on('close', () => closed.add(s));
    sockets.push(s);
  }
  let peakMiB = baselineMiB;
  let endMiB = baselineMiB;
  const started = Date.now();
  const end = started + Math.min(opts.seconds, 60) * 1000;
  while (Date.now() < end) {
    await sleep(Math.min(5000, end - Date.now()));
    const rss = groupRssMiB(opts.pgid);
    peakMiB = Math.max(peakMiB, rss);
    endMiB = rss;
    const flooded = Math.round(((opts.fn.flooded - startFlooded) / 1048576) * 10) / 10;
    say(
      `t=${Math.round((Date.now() - started) / 1000)} s  gateway RSS ${rss} MiB (+${Math.round((rss - baselineMiB) * 10) / 10})  ` +
        `function sent ${flooded} MiB  tunnels open ${sockets.length - closed.size}/${sockets.length}`,
    );
  }
  const floodedMiB = Math.round(((opts.fn.flooded - startFlooded) / 1048576) * 10) / 10;
  const open = sockets.length - closed.size;
  for (const s of sockets) s.destroy();
  const growthMiB = Math.round((peakMiB - baselineMiB) * 10) / 10;
  say(
    `gateway RSS ${baselineMiB} MiB at start, ${peakMiB} at peak (+${growthMiB}), ${endMiB} at the end, over ` +
      `${opts.clients} never-reading clients; the function sent ${floodedMiB} MiB`,
  );
  return { baselineMiB, peakMiB, endMiB, growthMiB, floodedMiB, open, lines };
}

/** The SNI of the `--tls` runs' ssl. */
export const WSS_SNI = 'ws.example.com';

/** Gives a gateway started with PROXY_HTTPS_PORT an ssl for {@link WSS_SNI}; where its wss:// clients connect. */
export async function wssTarget(gw: GatewayUnderTest): Promise<TlsTarget> {
  const { certFor } = await import('../test/helpers/tls.ts');
  const { tlsPortOf } = await import('../test/conformance/harness.ts');
  const { cert, key } = certFor(WSS_SNI);
  const res = await gw.admin('PUT', '/ssls/wss', { cert, key, sni: WSS_SNI });
  if (res.status !== 200 && res.status !== 201) throw new Error(`PUT /ssls/wss answered ${res.status}: ${res.text}`);
  return { port: await tlsPortOf(gw), servername: WSS_SNI };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      runtime: { type: 'string', default: process.env.FNGATE_RUNTIME ?? 'node' },
      seconds: { type: 'string', default: '30' },
      clients: { type: 'string', default: '4' },
      'max-growth': { type: 'string', default: '150' },
      tls: { type: 'boolean', default: false },
    },
  });
  process.env.FNGATE_RUNTIME = values.runtime;
  // Imported after FNGATE_RUNTIME is set: the harness reads it when loaded.
  const { startGateway } = await import('../test/conformance/harness.ts');
  const { startWebSocketFunction } = await import('../test/functions/websocket.ts');
  const fn = await startWebSocketFunction();
  const gw = await startGateway(values.tls ? { env: { PROXY_HTTPS_PORT: '0' } } : {});
  try {
    let tls: TlsTarget | undefined;
    if (values.tls) tls = await wssTarget(gw);
    await gw.putRoute('flood', {
      uri: '/flood/*',
      enable_websocket: true,
      timeout: { connect: 5, send: 120, read: 120 },
      upstream: { type: 'roundrobin', nodes: { [`127.0.0.1:${fn.port}`]: 1 } },
    });
    console.log(`runtime ${values.runtime}, ${values.clients} clients, ${values.seconds} s, ${tls ? 'wss:// (TLS port)' : 'ws://'}`);
    const r = await runBackpressure({
      proxyUrl: gw.proxyUrl,
      pgid: gw.proc.pid,
      fn,
      clients: Number(values.clients),
      seconds: Number(values.seconds),
      tls,
      print: (l) => console.log(l),
    });
    if (r.growthMiB > Number(values['max-growth'])) {
      console.log(`FAIL: grew by more than ${values['max-growth']} MiB`);
      process.exitCode = 1;
    }
  } finally {
    await gw.stop();
    await fn.close();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main();

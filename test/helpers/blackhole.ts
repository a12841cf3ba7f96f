/**
 * A loopback address whose connects never complete, for connect-timeout tests.
 *
 * How: a child Node process listens on 127.0.0.1 with a backlog of 1 and then blocks its event loop
 * (`Atomics.wait`), so it never accepts. The kernel completes the handshakes of the first connections into the
 * accept queue; this helper opens such filler connections until one stalls. From then on the queue is full and
 * Linux drops every new SYN (`tcp_abort_on_overflow` = 0, the default), so a client's connect hangs, retrying its
 * SYN, until the client gives up: a real black hole on loopback, with no firewall rule and no root. (A routable
 * address such as 10.255.255.1 is no use here: this machine's network answers it.)
 */
import { type ChildProcess, spawn } from 'node:child_process';
import net from 'node:net';

export interface BlackHole {
  host: string;
  port: number;
  /** `host:port`. */
  addr: string;
  close(): Promise<void>;
}

const CHILD = `
const s = require('node:net').createServer();
s.listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => {
  process.stdout.write(s.address().port + '\\n');
  setTimeout(() => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0), 20);
});`;

function connects(port: number, ms: number): Promise<{ socket: net.Socket; ok: boolean }> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.on('error', () => {});
    const timer = setTimeout(() => resolve({ socket, ok: false }), ms);
    socket.once('connect', () => {
      clearTimeout(timer);
      resolve({ socket, ok: true });
    });
  });
}

export async function startBlackHole(): Promise<BlackHole> {
  const child: ChildProcess = spawn(process.execPath, ['-e', CHILD], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.stdout!.once('data', (d) => resolve(Number(String(d).trim())));
  });
  await new Promise((r) => setTimeout(r, 100)); // the child's loop is blocked by now
  const fillers: net.Socket[] = [];
  for (let i = 0; ; i++) {
    const { socket, ok } = await connects(port, 300);
    fillers.push(socket);
    if (!ok) break;
    if (i >= 64) {
      child.kill('SIGKILL');
      for (const f of fillers) f.destroy();
      throw new Error('black hole: the accept queue never filled up');
    }
  }
  return {
    host: '127.0.0.1',
    port,
    addr: `127.0.0.1:${port}`,
    async close() {
      for (const f of fillers) f.destroy();
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGKILL');
        await exited;
      }
    },
  };
}

/**
 * A real, throw-away `redis-server` on a free loopback port (Debian: `apt-get install redis-server`), no
 * persistence, for the rate-limit tests; and a fake "Redis" that answers garbage, for the bad-input cases.
 * Suites that use it pass `systemSkip(suite, ['redis-server'], ['redis-server'])` as their `skip` option.
 */
import net from 'node:net';
import { freePort, type Proc, startProcess, waitFor } from './process.ts';

export interface RedisServer {
  host: string;
  port: number;
  /** Stop redis-server. Safe to call twice. */
  stop(): Promise<void>;
}

/** Sends one inline command and resolves with the first reply line. */
export function redisCommand(port: number, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let got = '';
    sock.setTimeout(2000, () => sock.destroy(new Error('redis did not answer')));
    sock.on('connect', () => sock.write(`${command}\r\n`));
    sock.on('data', (d) => {
      got += d.toString();
      if (got.includes('\r\n')) {
        sock.end();
        resolve(got.slice(0, got.indexOf('\r\n')));
      }
    });
    sock.on('error', reject);
  });
}

export async function startRedis(): Promise<RedisServer> {
  const port = await freePort();
  const proc: Proc = await startProcess({
    cmd: 'redis-server',
    args: ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'warning'],
    timeoutMs: 10_000,
  });
  await waitFor(
    async () => {
      if (proc.exited) throw new Error(`redis-server exited\n${proc.stdout()}${proc.stderr()}`);
      return (await redisCommand(port, 'PING').catch(() => '')) === '+PONG';
    },
    { timeoutMs: 10_000, message: `redis-server on ${port} did not answer PING` },
  );
  return {
    host: '127.0.0.1',
    port,
    async stop() {
      await proc.kill('SIGTERM', 3000);
    },
  };
}

/**
 * A TCP server that speaks no Redis: `mode` `garbage` answers every command with bytes that are no RESP reply,
 * `wrong` with a well-formed reply of the wrong shape (a bulk string where the scripts return numbers),
 * `silent` never answers.
 */
export async function startFakeRedis(mode: 'garbage' | 'wrong' | 'silent'): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    sock.on('data', (d) => {
      const text = d.toString();
      // Let the client's handshake through (HELLO, CLIENT SETINFO, SELECT) so that its commands get sent.
      if (/HELLO/i.test(text)) {
        sock.write('-ERR unknown command HELLO\r\n');
        return;
      }
      if (/CLIENT|SELECT|AUTH/i.test(text) && !/EVAL/i.test(text)) {
        sock.write('+OK\r\n');
        return;
      }
      if (mode === 'garbage') sock.write('\u0000\u00ff}not redis at all{\r\n*x\r\n');
      else if (mode === 'wrong') sock.write('$5\r\nhello\r\n');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/**
 * Idle keep-alive connections: how many the Node gateway holds, and whether it still serves meanwhile.
 *
 *   npx tsx bench/idle-connections.ts [--connections 10000] [--hold 10] [--settle 10]
 *
 * Loopback only, bounded in time. Starts function-sample and the gateway (see bench/soak.ts), opens up to
 * `connections` TCP connections to the proxy in batches, sends one request on each (so each is a kept-alive
 * HTTP connection, idle after its response), holds them all for `hold` seconds while checking that a fresh
 * client still gets answered, then sends a second request on a sample of the idle connections. Prints the
 * figure reached, errors, and the gateway's RSS and open file descriptors. Then the clients close, and it
 * waits (up to `--settle` seconds, default 10) for the gateway's file descriptors to return to their
 * baseline; connections the gateway keeps open to the function (its idle keep-alive pool, opened by this
 * run) are counted apart, since they are meant to stay. Exit code 1 when anything failed, including
 * descriptors that did not return.
 *
 * File descriptors: both this process and the gateway need one per connection (+ a few hundred). Node raises
 * its soft RLIMIT_NOFILE to the hard limit at start-up, so only the hard limit matters: when it is too low
 * the script says so and tries fewer connections. Raise it first (as root `ulimit -Hn 65536` in the shell
 * that runs this, or LimitNOFILE= in a systemd unit).
 * The proxy closes idle keep-alive connections after 60 s (KEEPALIVE_TIMEOUT_MS in src/runtime/node.ts), so
 * `--hold` is capped at 50 s.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { parseArgs } from 'node:util';
import { buildIfNeeded, fdCount, rssMiB, startSetup } from './soak.ts';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function fdLimits(): { soft: number; hard: number } {
  const read = (flag: string) => {
    const out = execFileSync('sh', ['-c', `ulimit ${flag}`], { encoding: 'utf8' }).trim();
    return out === 'unlimited' ? Number.POSITIVE_INFINITY : Number(out);
  };
  return { soft: read('-Sn'), hard: read('-Hn') };
}

/**
 * Open TCP connections of process `pid` whose remote port is `port` (the gateway's connections to the
 * function): its socket inodes matched against /proc/<pid>/net/tcp{,6}.
 */
function connectionsTo(pid: number, port: number): number {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch {
      // closed meanwhile
    }
  }
  let n = 0;
  for (const table of ['tcp', 'tcp6']) {
    let text = '';
    try {
      text = readFileSync(`/proc/${pid}/net/${table}`, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 10) continue;
      const remotePort = Number.parseInt(cols[2]!.split(':')[1]!, 16);
      if (remotePort === port && cols[3] === '01' && inodes.has(cols[9]!)) n++; // 01: ESTABLISHED
    }
  }
  return n;
}

/** One kept-alive connection: connect, one request, wait for the whole response; resolves with the socket. */
function openOne(port: number, id: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host: '127.0.0.1', port });
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error('no response within 15 s'));
    }, 15_000);
    sock.setNoDelay(true);
    sock.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    sock.on('connect', () => sock.write(`GET /soak/c${id} HTTP/1.1\r\nHost: bench\r\n\r\n`));
    const onData = (d: Buffer) => {
      buf += d.toString('latin1');
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const len = Number(/content-length: (\d+)/i.exec(buf.slice(0, end))?.[1] ?? Number.NaN);
      if (buf.length < end + 4 + len) return;
      clearTimeout(timer);
      sock.off('data', onData);
      if (!buf.startsWith('HTTP/1.1 200')) reject(new Error(buf.split('\r\n')[0]));
      else resolve(sock);
    };
    sock.on('data', onData);
  });
}

/** A second request on an idle connection; resolves with the status line. */
function reuse(sock: Socket, id: number): Promise<string> {
  return new Promise((resolve) => {
    if (sock.destroyed) return resolve('closed');
    let buf = '';
    const timer = setTimeout(() => resolve('timeout'), 10_000);
    const onData = (d: Buffer) => {
      buf += d.toString('latin1');
      if (buf.includes('\r\n\r\n')) {
        clearTimeout(timer);
        sock.off('data', onData);
        resolve(buf.split('\r\n')[0]!);
      }
    };
    sock.on('data', onData);
    sock.once('close', () => resolve(buf ? buf.split('\r\n')[0]! : 'closed'));
    sock.write(`GET /soak/again${id} HTTP/1.1\r\nHost: bench\r\n\r\n`);
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      connections: { type: 'string', default: '10000' },
      hold: { type: 'string', default: '10' },
      batch: { type: 'string', default: '250' },
      settle: { type: 'string', default: '10' },
    },
  });
  const settle = Number(values.settle);
  const wanted = Number(values.connections);
  const hold = Math.min(50, Number(values.hold));
  const batch = Number(values.batch);

  // What a child of this process gets (Node has already raised its own soft limit to the hard one).
  const { soft: limit, hard } = fdLimits();
  const reachable = Math.min(wanted, limit - 512);
  if (reachable < wanted) {
    process.stdout.write(`note: ulimit -n is ${limit} (hard ${hard}); trying ${reachable} connections, not ${wanted}\n`);
  }

  buildIfNeeded();
  const setup = await startSetup({}, 5);
  const pid = setup.gateway.pid;
  const rss0 = rssMiB(pid);
  const fd0 = fdCount(pid);
  process.stdout.write(`idle connections: target ${reachable}, gateway pid ${pid}, RSS ${rss0} MiB, ${fd0} fds\n`);

  const open: Socket[] = [];
  const errors = new Map<string, number>();
  const started = performance.now();
  for (let i = 0; i < reachable; i += batch) {
    const n = Math.min(batch, reachable - i);
    const results = await Promise.allSettled(Array.from({ length: n }, (_, k) => openOne(setup.proxyPort, i + k)));
    for (const r of results) {
      if (r.status === 'fulfilled') {
        r.value.on('error', () => {});
        open.push(r.value);
      } else {
        const why = (r.reason as { code?: string }).code ?? (r.reason as Error).message;
        errors.set(why, (errors.get(why) ?? 0) + 1);
      }
    }
  }
  const openMs = performance.now() - started;
  process.stdout.write(`opened ${open.length} kept-alive connections in ${(openMs / 1000).toFixed(1)} s\n`);

  // Hold them idle; meanwhile a fresh client must still be served promptly.
  let probes = 0;
  let probeFailures = 0;
  let worstProbe = 0;
  const holdUntil = Date.now() + hold * 1000;
  while (Date.now() < holdUntil) {
    const t0 = performance.now();
    try {
      const res = await fetch(`http://127.0.0.1:${setup.proxyPort}/soak/probe`);
      if (res.status !== 200 || (await res.text()) !== 'Hello, probe!') probeFailures++;
    } catch {
      probeFailures++;
    }
    worstProbe = Math.max(worstProbe, performance.now() - t0);
    probes++;
    await sleep(500);
  }
  const stillOpen = open.filter((s) => !s.destroyed).length;
  const rss1 = rssMiB(pid);
  const fd1 = fdCount(pid);

  // Are the idle connections still usable? A second request on a sample of them.
  const sample = open.filter((_, i) => i % Math.max(1, Math.floor(open.length / 200)) === 0).slice(0, 200);
  const reused = await Promise.all(sample.map((s, i) => reuse(s, i)));
  const reusedOk = reused.filter((r) => r.startsWith('HTTP/1.1 200')).length;

  // The clients close; the gateway's descriptors must come back to the baseline (the pool of idle
  // connections to the function aside: it is meant to stay, up to keepalive_timeout).
  for (const s of open) s.destroy();
  const closedAt = performance.now();
  let fd2 = fdCount(pid);
  let pooled = connectionsTo(pid, setup.fnPort);
  while (fd2 - pooled > fd0 && performance.now() - closedAt < settle * 1000) {
    await sleep(100);
    fd2 = fdCount(pid);
    pooled = connectionsTo(pid, setup.fnPort);
  }
  const settledMs = performance.now() - closedAt;
  const fdsBack = fd2 - pooled <= fd0;
  await setup.stop();

  const lines = [
    `connections reached ${open.length} of ${reachable} (errors: ${[...errors].map(([k, n]) => `${k}×${n}`).join(', ') || 'none'})`,
    `held idle           ${hold} s; still open after the hold: ${stillOpen}`,
    `fresh client        ${probes - probeFailures}/${probes} probes answered during the hold, worst ${worstProbe.toFixed(1)} ms`,
    `reused after hold   ${reusedOk}/${sample.length} sampled idle connections answered a second request`,
    `gateway RSS         ${rss0} MiB idle → ${rss1} MiB holding ${stillOpen} connections (${(((rss1 - rss0) * 1024) / Math.max(1, stillOpen)).toFixed(1)} KiB each)`,
    `gateway fds         ${fd0} → ${fd1} while holding → ${fd2} after the clients closed, of which ${pooled} idle ` +
      `connections to the function (its keep-alive pool)`,
    fdsBack
      ? `fds back to baseline yes, ${(settledMs / 1000).toFixed(1)} s after the clients closed (${fd2 - pooled} ≤ ${fd0} without the pool)`
      : `fds back to baseline NO: ${fd2 - pooled - fd0} above the baseline of ${fd0} (pool aside) ${settle} s after the clients closed`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  const ok = errors.size === 0 && probeFailures === 0 && stillOpen === open.length && reusedOk === sample.length && fdsBack;
  process.exitCode = ok ? 0 : 1;
}

main().catch((err) => {
  console.error(`idle-connections: ${err instanceof Error ? err.stack : String(err)}`);
  process.exit(2);
});

/**
 * TLS cost (issue 19): handshakes (new connections per second, `Connection: close` on every request) and
 * per-request cost on kept-alive connections, over TLS and plain, for fngate on each runtime that has a TLS port
 * and for nginx terminating TLS in the same run. Every target proxies `GET /hello/world` to the same nginx upstream
 * (1 KiB answer); the target is pinned to core 1, the upstream and wrk share core 0 (as `npm run bench`).
 * CPU per request is the target's process tree's CPU time over the window ÷ requests served.
 *
 *   npm run build && npx tsx bench/tls.ts [--seconds 5] [--rounds 1] [--runtimes node] [--tls-first]
 *
 * Certificates: an EC P-256 key and a self-signed certificate made with the openssl CLI for SNI `localhost` (wrk
 * sends the URL's host as SNI: the TLS URLs say `localhost`, since Deno's node:tls (rustls) drops an IP address sent
 * as SNI, which RFC 6066 §3 forbids, and the handshake then has no name to match); fngate gets it through the Admin
 * API (`ssls`), nginx from files.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { type Proc, startProcess } from '../test/helpers/process.ts';
import { startUpstream } from './lib/nginx.ts';
import { cpuOf, fngateCommand, type ProcessRuntime, processTree, requireTools, ROOT, sleep } from './lib/sys.ts';
import { runWrk, writeWrkScript } from './lib/wrk.ts';

const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '1' },
    runtimes: { type: 'string', default: 'node' },
    /** Measure the TLS windows before the plain ones (to see an order effect). */
    'tls-first': { type: 'boolean', default: false },
  },
});
const SECONDS = Number(args.seconds);
const ROUNDS = Number(args.rounds);
const tools = requireTools();
const dir = mkdtempSync(join(tmpdir(), 'fngate-bench-tls-'));
const KEY = 'bench-tls-admin-key-0123456789';
const port = (n: number) => 20000 + Math.floor(Math.random() * 20000) + n;

execFileSync(
  'openssl',
  [
    ...['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1'],
    ...['-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-subj', '/CN=localhost'],
  ],
  { stdio: 'ignore' },
);
const cert = readFileSync(join(dir, 'cert.pem'), 'utf8');
const key = readFileSync(join(dir, 'key.pem'), 'utf8');
const keepScript = writeWrkScript(dir);
const closeScript = join(dir, 'wrk-close.lua');
writeFileSync(closeScript, `wrk.headers["Connection"] = "close"\n${readFileSync(keepScript, 'utf8')}`);

interface Target {
  name: string;
  pid: number;
  plain: string;
  tls: string;
  proc: Proc;
}

async function nginxTarget(upstreamPort: number): Promise<Target> {
  const plain = port(1);
  const tls = port(2);
  const tmp = join(dir, 'ngx-tmp');
  const conf = `worker_processes 1; daemon off; master_process on; pid ${join(dir, 'ngx.pid')};
error_log ${join(dir, 'ngx-error.log')} warn;
events { worker_connections 8192; multi_accept on; }
http {
  access_log off; client_body_temp_path ${tmp}; proxy_temp_path ${tmp}; fastcgi_temp_path ${tmp};
  uwsgi_temp_path ${tmp}; scgi_temp_path ${tmp}; keepalive_requests 10000000; keepalive_timeout 75s;
  upstream fn { server 127.0.0.1:${upstreamPort}; keepalive 256; keepalive_requests 10000000; }
  server {
    listen 127.0.0.1:${plain} backlog=4096;
    listen 127.0.0.1:${tls} ssl backlog=4096;
    ssl_certificate ${join(dir, 'cert.pem')};
    ssl_certificate_key ${join(dir, 'key.pem')};
    ssl_session_tickets off;
    ssl_session_cache off;
    location /hello/ { proxy_pass http://fn; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
`;
  writeFileSync(join(dir, 'ngx.conf'), conf);
  const proc = await startProcess({
    cmd: tools.taskset,
    args: ['-c', '1', tools.nginx, '-p', dir, '-c', join(dir, 'ngx.conf'), '-e', join(dir, 'ngx-error.log')],
    readyUrl: `http://127.0.0.1:${plain}/`,
  });
  return { name: 'nginx (TLS terminated by nginx)', pid: proc.pid, plain: `http://127.0.0.1:${plain}`, tls: `https://localhost:${tls}`, proc };
}

async function fngateTarget(runtime: string, upstreamPort: number): Promise<Target> {
  const [plain, tls, admin] = [port(3), port(4), port(5)];
  // Bun as `npm run start:bun` runs it (its allocator setting), unless this shell says otherwise.
  const start = fngateCommand(runtime as ProcessRuntime);
  const proc = await startProcess({
    cmd: tools.taskset,
    args: ['-c', '1', start.cmd, ...start.args],
    cwd: ROOT,
    env: {
      ...start.env,
      HOST: '127.0.0.1',
      PROXY_PORT: String(plain),
      PROXY_HTTPS_PORT: String(tls),
      ADMIN_PORT: String(admin),
      ADMIN_KEY: KEY,
      DATA_DIR: join(dir, `data-${runtime}`),
      LOG_LEVEL: 'error',
      WORKERS: '1',
      STATUS_PORT: 'off',
      ACCESS_LOG: 'off',
      PROMETHEUS_PORT: 'off',
    },
    readyUrl: `http://127.0.0.1:${admin}/`,
    timeoutMs: 30_000,
  });
  const put = async (path: string, body: unknown) => {
    const res = await fetch(`http://127.0.0.1:${admin}/apisix/admin${path}`, {
      method: 'PUT',
      headers: { 'x-api-key': KEY },
      body: JSON.stringify(body),
    });
    if (res.status >= 300) throw new Error(`PUT ${path}: ${res.status} ${await res.text()}`);
  };
  await put('/ssls/1', { cert, key, sni: 'localhost' });
  await put('/routes/1', { uri: '/hello/*', upstream: { nodes: { [`127.0.0.1:${upstreamPort}`]: 1 }, keepalive_pool: { size: 256 } } });
  await sleep(300);
  return { name: `fngate on ${runtime}`, pid: proc.pid, plain: `http://127.0.0.1:${plain}`, tls: `https://localhost:${tls}`, proc };
}

interface Figure {
  rps: number;
  cpuUs: number;
  errors: number;
}

async function measure(t: Target, url: string, close: boolean): Promise<Figure> {
  const pids = processTree(t.pid);
  // Warm-up (JIT, pools): 3 s.
  await runWrk({ ...tools, core: 0, script: close ? closeScript : keepScript, url, connections: close ? 16 : 50, seconds: 3 });
  const cpu0 = cpuOf(pids);
  const r = await runWrk({ ...tools, core: 0, script: close ? closeScript : keepScript, url, connections: close ? 16 : 50, seconds: SECONDS });
  const cpu = cpuOf(pids) - cpu0;
  return { rps: r.rps, cpuUs: (cpu * 1e6) / Math.max(1, r.requests), errors: r.errors };
}

const upstream = await startUpstream(tools.nginx, tools.taskset, 0, dir, port(0));
const rows: string[] = [];
const fmt = (n: number, d = 0) => n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });
try {
  for (let round = 1; round <= ROUNDS; round++) {
    const targets = [() => nginxTarget(upstream.port), ...args.runtimes.split(',').map((r) => () => fngateTarget(r, upstream.port))];
    for (const start of targets) {
      const t = await start();
      try {
        const pair = async (close: boolean) => {
          if (!args['tls-first']) {
            const plain = await measure(t, `${t.plain}/hello/world`, close);
            return [plain, await measure(t, `${t.tls}/hello/world`, close)] as const;
          }
          const tls = await measure(t, `${t.tls}/hello/world`, close);
          return [await measure(t, `${t.plain}/hello/world`, close), tls] as const;
        };
        const [kPlain, kTls] = await pair(false);
        const [cPlain, cTls] = await pair(true);
        const errors = kPlain.errors + kTls.errors + cPlain.errors + cTls.errors;
        rows.push(
          `| ${t.name} (round ${round}) | ${fmt(kPlain.rps)} / ${fmt(kPlain.cpuUs, 1)} | ${fmt(kTls.rps)} / ${fmt(kTls.cpuUs, 1)} | ${fmt(kTls.cpuUs / kPlain.cpuUs, 2)} | ${fmt(cPlain.rps)} / ${fmt(cPlain.cpuUs, 1)} | ${fmt(cTls.rps)} / ${fmt(cTls.cpuUs, 1)} | ${fmt(cTls.cpuUs - cPlain.cpuUs, 1)} | ${errors} |`,
        );
        console.log(rows[rows.length - 1]);
      } finally {
        await t.proc.kill('SIGTERM', 5000);
      }
    }
  }
} finally {
  await upstream.stop();
  rmSync(dir, { recursive: true, force: true });
}
console.log(`\nTLS cost, ${SECONDS} s windows, wrk -t1 (-c50 kept alive, -c16 with Connection: close), target on core 1:`);
console.log('| target | kept-alive plain: req/s / CPU µs per req | kept-alive TLS: req/s / CPU µs | TLS ÷ plain CPU | new connection per request, plain: conn/s / CPU µs | new TLS connection per request: conn/s / CPU µs | handshake CPU µs (TLS − plain) | errors |');
console.log('|---|---|---|---|---|---|---|---|');
for (const r of rows) console.log(r);

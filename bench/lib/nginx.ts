/**
 * nginx (the Debian package's binary, never its service or config) in two roles, each its own master + one worker
 * with a config file under the run's temp directory, listening on 127.0.0.1 only:
 * - the upstream "function": `GET /hello/<name>` answers 1,024 bytes (`Hello, <name>!\n` + `x` padding), as in
 *   APISIX's benchmark;
 * - the reference reverse proxy, in front of that upstream, doing what the gateway route does (Basic
 *   Authorization added, X-Forwarded-* set), with an upstream keep-alive pool.
 */
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Proc, startProcess } from '../../test/helpers/process.ts';

export const BODY_BYTES = 1024;

/** The upstream's answer to `/hello/<name>`, byte for byte. */
export function helloBody(name: string): string {
  const head = `Hello, ${name}!\n`;
  return head + 'x'.repeat(BODY_BYTES - head.length);
}

/** Padding such that `/hello/world` answers exactly 1,024 bytes. */
const PAD = BODY_BYTES - 'Hello, world!\n'.length;

function common(dir: string, name: string): string {
  const tmp = join(dir, `${name}-tmp`);
  mkdirSync(tmp, { recursive: true });
  // Running as root, nginx's worker runs as `nobody` and must be able to enter the directory.
  chmodSync(dir, 0o755);
  chmodSync(tmp, 0o755);
  return `
worker_processes 1;
daemon off;
master_process on;
pid ${join(dir, `${name}.pid`)};
error_log ${join(dir, `${name}-error.log`)} warn;
events { worker_connections 8192; multi_accept on; }
http {
  access_log off;
  client_body_temp_path ${tmp}/body;
  proxy_temp_path ${tmp}/proxy;
  fastcgi_temp_path ${tmp}/fastcgi;
  uwsgi_temp_path ${tmp}/uwsgi;
  scgi_temp_path ${tmp}/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 75s;
  server_tokens off;
`;
}

export interface Nginx {
  proc: Proc;
  port: number;
  url: string;
  stop(): Promise<void>;
}

async function start(nginxBin: string, taskset: string, core: number, dir: string, name: string, conf: string, port: number): Promise<Nginx> {
  const file = join(dir, `${name}.conf`);
  writeFileSync(file, conf);
  const url = `http://127.0.0.1:${port}`;
  const proc = await startProcess({
    cmd: taskset,
    args: ['-c', String(core), nginxBin, '-p', dir, '-c', file, '-e', join(dir, `${name}-error.log`)],
    readyUrl: `${url}/`,
    timeoutMs: 10_000,
  });
  return {
    proc,
    port,
    url,
    async stop() {
      await proc.kill('SIGQUIT', 3000);
    },
  };
}

/** The upstream "function" on `core`. */
export function startUpstream(nginxBin: string, taskset: string, core: number, dir: string, port: number): Promise<Nginx> {
  const conf = `${common(dir, 'upstream')}
  server {
    listen 127.0.0.1:${port} reuseport backlog=4096;
    location ~ ^/hello/(?<name>[^/?]+)$ {
      default_type text/plain;
      return 200 "Hello, $name!\\n${'x'.repeat(PAD)}";
    }
    location / { return 404; }
  }
}
`;
  return start(nginxBin, taskset, core, dir, 'upstream', conf, port);
}

/** The reference reverse proxy on `core`, in front of `upstreamPort`. */
export function startNginxProxy(
  nginxBin: string,
  taskset: string,
  core: number,
  dir: string,
  port: number,
  upstreamPort: number,
  authorization: string,
): Promise<Nginx> {
  const conf = `${common(dir, 'proxy')}
  upstream fn {
    server 127.0.0.1:${upstreamPort};
    keepalive 256;
    keepalive_requests 10000000;
  }
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location /hello/ {
      proxy_pass http://fn;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "${authorization}";
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
    }
    location / { return 404; }
  }
}
`;
  return start(nginxBin, taskset, core, dir, 'proxy', conf, port);
}

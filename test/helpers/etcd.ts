/**
 * A real, throw-away etcd for tests, plus a few raw etcd v3 HTTP calls for writing "as APISIX would".
 *
 * `startEtcd()` runs the `etcd` binary (Debian: `apt-get install -y etcd-server etcd-client`; or set `ETCD_BIN`)
 * on free loopback ports with a fresh data directory, and waits until `/health` says true. When etcd is not
 * installed it throws (tests must fail, not skip: CI installs it).
 */
import { existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { freePort, rmDir, startProcess, tmpDir, waitFor } from './process.ts';
import type { Proc } from './process.ts';

export const ETCD_INSTALL_HINT = 'apt-get update && apt-get install -y etcd-server etcd-client';

export interface EtcdServer {
  /** Client URL, e.g. `http://127.0.0.1:41234`. */
  endpoint: string;
  dataDir: string;
  /** Stop etcd (SIGTERM) and remove its data directory. Safe to call twice. */
  stop(): Promise<void>;
  /** Stop etcd if it runs and start it again on the same ports; `wipe: true` empties the data directory first. */
  restart(opts?: { wipe?: boolean }): Promise<void>;
  /** SIGKILL etcd, keeping its data (as a crash); `restart()` brings it back. */
  kill(): Promise<void>;
  /** etcd's log so far (for failure messages). */
  log(): string;
}

export interface StartEtcdOptions {
  /** Extra etcd flags, e.g. `['--auth-token-ttl', '1']`. */
  args?: string[];
}

/** The etcd binary: `$ETCD_BIN`, else `etcd` on the PATH or in the usual places. Throws when there is none. */
export function etcdBinary(): string {
  const fromEnv = process.env.ETCD_BIN;
  if (fromEnv) {
    if (!existsSync(fromEnv)) throw new Error(`ETCD_BIN=${fromEnv} does not exist`);
    return fromEnv;
  }
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/bin', '/usr/local/bin', '/usr/sbin'];
  for (const dir of dirs) {
    if (dir && existsSync(join(dir, 'etcd'))) return join(dir, 'etcd');
  }
  throw new Error(`etcd is not installed (no etcd on the PATH); install it with: ${ETCD_INSTALL_HINT}`);
}

/** Start a single-member etcd on free loopback ports with a fresh data directory. */
export async function startEtcd(opts: StartEtcdOptions = {}): Promise<EtcdServer> {
  const [member] = await startEtcdCluster(1, opts);
  return member!;
}

/**
 * Start an etcd cluster of `size` members on free loopback ports, each with a fresh data directory; resolves once
 * every member says it is healthy (which needs a leader, so all members are started before any is waited for).
 * Each member can be killed and restarted on its own (with its data: it rejoins the cluster).
 */
export async function startEtcdCluster(size: number, opts: StartEtcdOptions = {}): Promise<EtcdServer[]> {
  const bin = etcdBinary();
  const specs: Array<{ name: string; dataDir: string; endpoint: string; peer: string }> = [];
  for (let i = 0; i < size; i++) {
    const clientPort = await freePort(); // never the same port twice in this process
    const peerPort = await freePort();
    specs.push({
      name: `fngate-test-${clientPort}`,
      dataDir: await tmpDir('fngate-etcd-'),
      endpoint: `http://127.0.0.1:${clientPort}`,
      peer: `http://127.0.0.1:${peerPort}`,
    });
  }
  const initialCluster = specs.map((m) => `${m.name}=${m.peer}`).join(',');
  const members = specs.map((m) =>
    member(bin, m.dataDir, m.endpoint, [
      '--name',
      m.name,
      '--data-dir',
      m.dataDir,
      '--listen-client-urls',
      m.endpoint,
      '--advertise-client-urls',
      m.endpoint,
      '--listen-peer-urls',
      m.peer,
      '--initial-advertise-peer-urls',
      m.peer,
      '--initial-cluster',
      initialCluster,
      '--initial-cluster-state',
      'new',
      '--heartbeat-interval',
      '20',
      '--election-timeout',
      '200',
      '--logger',
      'zap',
      '--log-level',
      'warn',
      ...(opts.args ?? []),
    ]),
  );
  try {
    await Promise.all(members.map((m) => m.start()));
    await Promise.all(members.map((m) => m.healthy()));
  } catch (err) {
    await Promise.all(members.map((m) => m.server.stop()));
    throw err;
  }
  return members.map((m) => m.server);
}

/** One etcd process: started without waiting (`start`), then waited for (`healthy`). */
function member(bin: string, dataDir: string, endpoint: string, args: string[]) {
  let proc: Proc | undefined;
  let stopped = false;
  let logs = '';

  const start = async () => {
    proc = await startProcess({ cmd: bin, args, timeoutMs: 20_000 });
  };
  const healthy = async () => {
    const p = proc;
    await waitFor(
      async () => {
        if (!p || p.exited) throw new Error(`etcd exited\n${p?.stderr() ?? ''}`);
        const res = await fetch(`${endpoint}/health`);
        const body = (await res.json()) as { health?: string };
        return body.health === 'true';
      },
      { timeoutMs: 20_000, message: `etcd at ${endpoint} did not become healthy` },
    );
  };
  const halt = async (signal: NodeJS.Signals) => {
    const p = proc;
    proc = undefined;
    if (!p) return;
    await p.kill(signal, 5000);
    logs += p.stderr();
  };
  const server: EtcdServer = {
    endpoint,
    dataDir,
    async stop() {
      if (stopped) return;
      stopped = true;
      await halt('SIGTERM');
      await rmDir(dataDir);
    },
    async restart(o = {}) {
      await halt('SIGTERM');
      if (o.wipe) await rmDir(dataDir);
      await start();
      await healthy();
    },
    async kill() {
      await halt('SIGKILL');
    },
    log: () => logs + (proc?.stderr() ?? ''),
  };
  return { start, healthy, server };
}

// ---------------------------------------------------------------------------------------------
// Raw etcd v3 HTTP calls.

const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');
const unb64 = (s: string | undefined) => (s ? Buffer.from(s, 'base64').toString('utf8') : '');

export interface EtcdCallOptions {
  /** Auth token for the `Authorization` header. */
  token?: string;
}

/** POST a JSON body to etcd; returns the JSON answer, throws on a non-2xx status. */
export async function etcdCall<T = Record<string, unknown>>(
  endpoint: string,
  path: string,
  body: unknown,
  opts: EtcdCallOptions = {},
): Promise<T> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (opts.token) headers.authorization = opts.token;
  const res = await fetch(`${endpoint}${path}`, { method: 'POST', headers, body: JSON.stringify(body) });
  const text = await res.text();
  if (!res.ok) throw new Error(`etcd ${path} answered ${res.status}: ${text}`);
  return JSON.parse(text) as T;
}

/** Write `key` = `value` (a raw string, e.g. a JSON document) straight into etcd; returns the new revision. */
export async function etcdPut(
  endpoint: string,
  key: string,
  value: string,
  opts: EtcdCallOptions = {},
): Promise<number> {
  const res = await etcdCall<{ header: { revision: string } }>(
    endpoint,
    '/v3/kv/put',
    { key: b64(key), value: b64(value) },
    opts,
  );
  return Number(res.header.revision);
}

/** Write several keys in one transaction (one revision, one watch event batch); returns the revision. */
export async function etcdPutMany(
  endpoint: string,
  pairs: Array<[key: string, value: string]>,
  opts: EtcdCallOptions = {},
): Promise<number> {
  const res = await etcdCall<{ header: { revision: string } }>(
    endpoint,
    '/v3/kv/txn',
    { success: pairs.map(([k, v]) => ({ request_put: { key: b64(k), value: b64(v) } })) },
    opts,
  );
  return Number(res.header.revision);
}

/** Delete `key` straight in etcd; returns the revision. */
export async function etcdDelete(endpoint: string, key: string, opts: EtcdCallOptions = {}): Promise<number> {
  const res = await etcdCall<{ header: { revision: string } }>(endpoint, '/v3/kv/deleterange', { key: b64(key) }, opts);
  return Number(res.header.revision);
}

export interface RawKv {
  key: string;
  value: string;
  createRevision: number;
  modRevision: number;
}

/** Read one key straight from etcd, with the store-wide revision. */
export async function etcdGet(
  endpoint: string,
  key: string,
  opts: EtcdCallOptions = {},
): Promise<{ revision: number; kv: RawKv | undefined }> {
  const res = await etcdCall<{
    header: { revision: string };
    kvs?: Array<{ key: string; value?: string; create_revision: string; mod_revision: string }>;
  }>(endpoint, '/v3/kv/range', { key: b64(key) }, opts);
  const kv = res.kvs?.[0];
  return {
    revision: Number(res.header.revision),
    kv: kv && {
      key: unb64(kv.key),
      value: unb64(kv.value),
      createRevision: Number(kv.create_revision),
      modRevision: Number(kv.mod_revision),
    },
  };
}

/** The current store-wide revision. */
export async function etcdRevision(endpoint: string, opts: EtcdCallOptions = {}): Promise<number> {
  return (await etcdGet(endpoint, '/', opts)).revision;
}

/** Compact the history up to `revision` (watches from before it are canceled with `compact_revision`). */
export async function etcdCompact(endpoint: string, revision: number, opts: EtcdCallOptions = {}): Promise<void> {
  await etcdCall(endpoint, '/v3/kv/compaction', { revision: String(revision), physical: true }, opts);
}

/** Create user `root` with `password`, give it the root role and enable auth; returns a root token. */
export async function etcdEnableAuth(endpoint: string, password: string): Promise<string> {
  await etcdCall(endpoint, '/v3/auth/user/add', { name: 'root', password });
  await etcdCall(endpoint, '/v3/auth/role/add', { name: 'root' });
  await etcdCall(endpoint, '/v3/auth/user/grant', { user: 'root', role: 'root' });
  await etcdCall(endpoint, '/v3/auth/enable', {});
  return etcdToken(endpoint, 'root', password);
}

/** Authenticate and return the token. */
export async function etcdToken(endpoint: string, name: string, password: string): Promise<string> {
  const res = await etcdCall<{ token: string }>(endpoint, '/v3/auth/authenticate', { name, password });
  return res.token;
}

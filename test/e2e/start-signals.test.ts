// `npm start` and `npm run start:bun|start:deno` hand SIGTERM on to the gateway (issue 18, item 16): a process
// manager or a container signals the process it started, npm, and the gateway must drain and exit, not live on as
// an orphan (dash, npm's script shell, neither forwards the signal nor execs a lone command; the scripts use `exec`).
// Only npm's own process is signalled here, as a process manager does (not the process group).
// Run: node --import tsx --test --test-concurrency=1 test/e2e/start-signals.test.ts
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, test } from 'node:test';
import { listeningUrls, LISTENING_LOG, ROOT } from '../conformance/harness.ts';
import { type Proc, rmDir, startProcess, tmpDir } from '../helpers/process.ts';

const dirs: string[] = [];
const procs: Proc[] = [];
after(async () => {
  for (const p of procs) await p.kill('SIGKILL', 0);
  for (const d of dirs) await rmDir(d);
});

/** Resolves true when something accepts a connection on `url`'s port. */
const accepts = (url: string) =>
  new Promise<boolean>((resolve) => {
    const u = new URL(url);
    const s = connect(Number(u.port), u.hostname === '0.0.0.0' ? '127.0.0.1' : u.hostname);
    s.on('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });

for (const script of ['start', 'start:bun', 'start:deno']) {
  test(`SIGTERM to \`npm run ${script}\` stops the gateway`, async () => {
    const dataDir = await tmpDir('fngate-signals-');
    dirs.push(dataDir);
    const proc = await startProcess({
      cmd: 'npm',
      args: ['run', '--silent', script],
      cwd: ROOT,
      env: {
        DATA_DIR: dataDir,
        ADMIN_KEY: 'signals-test-admin-key-0123',
        HOST: '127.0.0.1',
        PROXY_PORT: '0',
        ADMIN_PORT: '0',
        NO_COLOR: '1',
      },
      readyLog: LISTENING_LOG,
      // `npm start` builds first (prestart).
      timeoutMs: 90_000,
    });
    procs.push(proc);
    const { proxyUrl, adminUrl } = listeningUrls(proc);
    assert.ok(await accepts(proxyUrl), 'the gateway listens');

    process.kill(proc.pid, 'SIGTERM');
    const exit = await Promise.race([
      proc.waitExit(),
      new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 20_000).unref()),
    ]);
    assert.notEqual(exit, 'timeout', 'npm did not exit within 20 s of SIGTERM');
    // npm exits once its child did; the gateway's ports are closed, its shutdown logged.
    assert.equal(await accepts(proxyUrl), false, `the proxy still listens after npm exited:\n${proc.stdout()}`);
    assert.equal(await accepts(adminUrl), false, 'the Admin API still listens after npm exited');
    assert.match(proc.stdout() + proc.stderr(), /SIGTERM: no new connections/);
  });
}

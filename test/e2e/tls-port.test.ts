// PROXY_HTTPS_PORT already taken (issue 19): the gateway logs one line naming the address and the cause and keeps
// serving plain HTTP without a TLS port, on Node, Deno and Bun alike (they all open it through
// src/runtime/node-tls.ts's openTlsPort), rather than failing to start or dying later.
// Run: npm run build && node --import tsx --test --test-concurrency=1 test/e2e/tls-port.test.ts
import assert from 'node:assert/strict';
import { connect, createServer, type Server } from 'node:net';
import { after, before, test } from 'node:test';
import { type RuntimeName, startGateway } from '../conformance/harness.ts';
import { type FunctionServers, startFunctions } from '../functions/functions.ts';

let fns: FunctionServers;
/** A plain TCP listener holding the port the gateways are told to use for TLS; counts the connections it gets. */
let holder: Server;
let held = 0;
let accepted = 0;
before(async () => {
  fns = await startFunctions();
  holder = createServer((s) => {
    accepted++;
    s.destroy();
  });
  await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
  held = (holder.address() as { port: number }).port;
});
after(async () => {
  holder?.close();
  await fns?.close();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

for (const runtime of ['node', 'deno', 'bun'] as RuntimeName[]) {
  test(`${runtime}: a PROXY_HTTPS_PORT in use is logged once, and the proxy serves plain HTTP without TLS`, async () => {
    const gw = await startGateway({ runtime, env: { PROXY_HTTPS_PORT: String(held) } });
    try {
      const line = new RegExp(
        `^tls: cannot listen on 127\\.0\\.0\\.1:${held} \\([^\\n]*EADDRINUSE[^\\n]*\\); the proxy serves no TLS \\(PROXY_HTTPS_PORT\\)$`,
        'gm',
      );
      const output = () => `${gw.proc.stdout()}${gw.proc.stderr()}`;
      for (let i = 0; i < 100 && !line.test(output()); i++) await sleep(50);
      line.lastIndex = 0;
      assert.equal(output().match(line)?.length, 1, `one "tls: cannot listen" line in:\n${output()}`);
      assert.doesNotMatch(output(), /fngate proxy \(TLS\) listening/);

      // Plain HTTP is served as usual.
      await gw.putRoute('echo', { uri: '/echo', plugins: { openfunction: { function_uri: fns.urls.echo } } });
      const res = await gw.fetch('/echo');
      assert.equal(res.status, 200, await res.text());
      assert.equal(gw.proc.exited, false);

      // The port is still the other listener's: a connection to it reaches that listener, not the gateway.
      const before = accepted;
      await new Promise<void>((resolve, reject) => {
        const s = connect(held, '127.0.0.1', () => s.once('close', () => resolve()));
        s.on('error', reject);
      });
      assert.equal(accepted, before + 1);
    } finally {
      await gw.stop();
    }
  });
}

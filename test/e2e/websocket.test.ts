// WebSocket Bad input (issue 19): clients that never read do not grow the gateway's memory, because the tunnel
// pauses the function's side while the client's socket buffer is full. Bounded runs (5 s) of
// bench/websocket-backpressure.ts: on Node's plain port (ws://), and on the TLS port (wss://) of Node, Deno and Bun,
// which all serve it through node:tls + node:http and the same socket pipe (src/runtime/node-tls.ts,
// websocket-node.ts). The bench itself runs up to 60 s (`--tls` for wss://) and on Deno's and Bun's plain ports too.
//
// The bound: after the 101 the gateway holds, per tunnel, what the pipe has read but the client's socket has not
// taken (one 64 KiB read, and the TLS layer's record of it); the rest waits in the kernel's socket buffers (the
// client's receive buffer and the gateway's send buffer, ~10 MiB per tunnel on this Linux), which is all the
// function can hand over before it is paused (measured: 37-47 MiB for 4 tunnels, +9-27 MiB RSS, on the three
// runtimes). Without backpressure the function sends at loopback speed (GiBs in 5 s) and the gateway buffers it
// all, so the bounds below (256 MiB sent, 128 MiB RSS growth) are far from both.
// Run: npm run build && node --import tsx --test --test-concurrency=1 test/e2e/websocket.test.ts
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { type BackpressureResult, runBackpressure, wssTarget } from '../../bench/websocket-backpressure.ts';
import { type GatewayUnderTest, type RuntimeName, startGateway } from '../conformance/harness.ts';
import { startWebSocketFunction, type WebSocketFunction } from '../functions/websocket.ts';
import { systemSkip } from '../helpers/system.ts';

/** The wss:// cases make their certificate with the openssl CLI. */
const NO_OPENSSL = systemSkip('test/e2e/websocket.test.ts (wss://)', ['openssl'], ['openssl']);

let fn: WebSocketFunction;
before(async () => {
  fn = await startWebSocketFunction();
});
after(async () => {
  await fn?.close();
});

/** The `enable_websocket` route to the flooding function. */
function floodRoute(gw: GatewayUnderTest) {
  return gw.putRoute('flood', {
    uri: '/flood/*',
    enable_websocket: true,
    timeout: { connect: 5, send: 60, read: 60 },
    upstream: { type: 'roundrobin', nodes: { [`127.0.0.1:${fn.port}`]: 1 } },
  });
}

function assertBounded(r: BackpressureResult): void {
  assert.ok(r.floodedMiB < 256, `the function could send ${r.floodedMiB} MiB: nothing paused it\n${r.lines.join('\n')}`);
  assert.ok(r.growthMiB < 128, `the gateway grew by ${r.growthMiB} MiB\n${r.lines.join('\n')}`);
  assert.equal(r.open, 4, `the tunnels stay open (paused, not dropped)\n${r.lines.join('\n')}`);
}

test('4 WebSocket clients that never read, flooded by the function for 5 s: the gateway stays within a bound', async () => {
  const gw = await startGateway({ runtime: 'node' });
  try {
    await floodRoute(gw);
    assertBounded(await runBackpressure({ proxyUrl: gw.proxyUrl, pgid: gw.proc.pid, fn, clients: 4, seconds: 5 }));
  } finally {
    await gw.stop();
  }
});

for (const runtime of ['node', 'deno', 'bun'] as RuntimeName[]) {
  test(`wss:// on ${runtime}: 4 clients that never read, flooded for 5 s over the TLS port: the gateway stays within a bound`, { skip: NO_OPENSSL }, async () => {
    const gw = await startGateway({ runtime, env: { PROXY_HTTPS_PORT: '0' } });
    try {
      await floodRoute(gw);
      const tls = await wssTarget(gw);
      assertBounded(await runBackpressure({ proxyUrl: gw.proxyUrl, pgid: gw.proc.pid, fn, clients: 4, seconds: 5, tls }));
    } finally {
      await gw.stop();
    }
  });
}

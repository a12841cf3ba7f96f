// WebSocket Bad input on Node (issue 19): clients that never read do not grow the gateway's memory, because the
// tunnel pauses the function's side while the client's socket buffer is full. A bounded run (8 s) of
// bench/websocket-backpressure.ts; the bench itself runs up to 60 s and on Deno and Bun too.
// Run: npm run build && node --import tsx --test test/e2e/websocket.test.ts
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { runBackpressure } from '../../bench/websocket-backpressure.ts';
import { type GatewayUnderTest, startGateway } from '../conformance/harness.ts';
import { startWebSocketFunction, type WebSocketFunction } from '../functions/websocket.ts';

let gw: GatewayUnderTest;
let fn: WebSocketFunction;
before(async () => {
  fn = await startWebSocketFunction();
  gw = await startGateway();
  await gw.putRoute('flood', {
    uri: '/flood/*',
    enable_websocket: true,
    timeout: { connect: 5, send: 60, read: 60 },
    upstream: { type: 'roundrobin', nodes: { [`127.0.0.1:${fn.port}`]: 1 } },
  });
});
after(async () => {
  await gw?.stop();
  await fn?.close();
});

test('4 WebSocket clients that never read, flooded by the function for 8 s: the gateway stays within a bound', async () => {
  const r = await runBackpressure({ proxyUrl: gw.proxyUrl, pgid: gw.proc.pid, fn, clients: 4, seconds: 8 });
  // Without backpressure the function sends at loopback speed (GiBs in 8 s) and the gateway buffers it all.
  assert.ok(r.floodedMiB < 256, `the function could send ${r.floodedMiB} MiB: nothing paused it\n${r.lines.join('\n')}`);
  assert.ok(r.growthMiB < 128, `the gateway grew by ${r.growthMiB} MiB\n${r.lines.join('\n')}`);
  assert.equal(r.open, 4, `the tunnels stay open (paused, not dropped)\n${r.lines.join('\n')}`);
});

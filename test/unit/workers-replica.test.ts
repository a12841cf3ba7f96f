// The portable parts of WORKERS and the status API (issue 19 items 4, 5): the replica store and the primary's
// replicator over an in-process message channel, the metrics merge, the status handler and the etcd readiness.
// Run: node --import tsx --test test/unit/workers-replica.test.ts
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mergeExpositions } from '../../src/core/observability/merge.ts';
import { ReplicaStore, Replicator, type ToPrimary, type ToWorker, workerEnd } from '../../src/runtime/replica.ts';
import { statusHandler, storeReadiness } from '../../src/runtime/status.ts';
import { MemoryStore } from '../../src/store/memory.ts';

const quiet = { warn() {} };

/** A worker over a message channel with a delay (as IPC), whose "gateway" takes `rebuildMs` to apply a state. */
function fakeWorker(id: number, replicator: Replicator, rebuildMs: number) {
  const store = new ReplicaStore('/apisix');
  let served = -1;
  const toPrimary = (msg: ToPrimary) =>
    setTimeout(() => {
      if (msg.t === 'applied') replicator.applied(id, msg.seq);
    }, 1);
  const end = workerEnd(store, toPrimary);
  end.started(
    async () => {
      const state = await store.load();
      // Unref'd: the stuck worker's minute-long rebuild must not keep the test process alive after the tests.
      await new Promise((r) => setTimeout(r, rebuildMs).unref());
      served = state.revision;
    },
    async () => '',
  );
  const peer = {
    id,
    send: (msg: ToWorker) => setTimeout(() => end.onMessage(msg), 1),
    kill: () => {
      killed = true;
    },
  };
  let killed = false;
  return { peer, served: () => served, killed: () => killed };
}

test('a write resolves only once every worker has rebuilt from a state that includes it', async () => {
  const inner = new MemoryStore();
  const replicator = new Replicator(inner, 5_000, quiet);
  const store = replicator.wrap();
  const workers = [fakeWorker(1, replicator, 5), fakeWorker(2, replicator, 30)];
  for (const w of workers) await replicator.addPeer(w.peer);
  for (let i = 0; i < 5; i++) {
    const { item } = await store.put(`/apisix/routes/${i}`, { uri: `/${i}` });
    const revision = (await inner.load()).revision;
    assert.ok(item.modifiedIndex <= revision);
    for (const w of workers) assert.equal(w.served(), revision, `worker serves revision ${revision} when put resolves`);
  }
  await store.delete('/apisix/routes/0');
  const revision = (await inner.load()).revision;
  for (const w of workers) assert.equal(w.served(), revision);
  await store.close();
});

test('a worker that does not apply in time is killed and the write resolves', async () => {
  const inner = new MemoryStore();
  const replicator = new Replicator(inner, 100, quiet);
  const store = replicator.wrap();
  const fast = fakeWorker(1, replicator, 1);
  const stuck = fakeWorker(2, replicator, 60_000);
  await replicator.addPeer(fast.peer);
  await replicator.addPeer(stuck.peer);
  const started = Date.now();
  await store.put('/apisix/routes/a', { uri: '/a' });
  assert.ok(Date.now() - started < 5_000);
  assert.equal(stuck.killed(), true);
  assert.equal(fast.killed(), false);
  assert.equal(fast.served(), (await inner.load()).revision);
  await store.close();
});

test('the replica store refuses writes and keeps the newest state', async () => {
  const r = new ReplicaStore('/apisix');
  r.apply(2, { revision: 7, items: [] });
  r.apply(1, { revision: 5, items: [] }); // overtaken: ignored
  assert.equal((await r.load()).revision, 7);
  await assert.rejects(r.put(), /primary process/);
  await assert.rejects(r.delete(), /primary process/);
});

test('metrics of several workers are summed series by series; node gauges take the largest value', () => {
  const w = (reqs: number, ok: number, lag: number) =>
    [
      '# HELP apisix_http_status HTTP status codes per service in APISIX',
      '# TYPE apisix_http_status counter',
      `apisix_http_status{code="200",route="r"} ${ok}`,
      '# HELP apisix_http_latency HTTP request latency in milliseconds per service in APISIX',
      '# TYPE apisix_http_latency histogram',
      `apisix_http_latency_bucket{type="request",le="1"} ${ok}`,
      `apisix_http_latency_bucket{type="request",le="+Inf"} ${ok + 1}`,
      `apisix_http_latency_sum{type="request"} ${ok / 2}`,
      `apisix_http_latency_count{type="request"} ${ok + 1}`,
      '# TYPE apisix_http_requests_total gauge',
      `apisix_http_requests_total ${reqs}`,
      '# TYPE apisix_node_info gauge',
      'apisix_node_info{hostname="h",version="1"} 1',
      '# TYPE nodejs_eventloop_lag_seconds gauge',
      `nodejs_eventloop_lag_seconds ${lag}`,
      '',
    ].join('\n');
  const merged = mergeExpositions([w(10, 4, 0.002), w(7, 3, 0.005)]);
  assert.match(merged, /^apisix_http_status\{code="200",route="r"\} 7$/m);
  assert.match(merged, /^apisix_http_latency_bucket\{type="request",le="\+Inf"\} 9$/m);
  assert.match(merged, /^apisix_http_latency_sum\{type="request"\} 3\.5$/m);
  assert.match(merged, /^apisix_http_latency_count\{type="request"\} 9$/m);
  assert.match(merged, /^apisix_http_requests_total 17$/m);
  assert.match(merged, /^apisix_node_info\{hostname="h",version="1"\} 1$/m);
  assert.match(merged, /^nodejs_eventloop_lag_seconds 0\.005$/m);
  assert.equal((merged.match(/^# TYPE apisix_http_latency histogram$/gm) ?? []).length, 1);
  // HELP then TYPE, then the family's series: one block per family.
  assert.match(merged, /# HELP apisix_http_status [^\n]*\n# TYPE apisix_http_status counter\napisix_http_status\{/);
});

test('status API: APISIX bodies and codes', async () => {
  let error: string | undefined = 'worker id: 2 has not received configuration';
  const h = statusHandler(() => error);
  const call = async (path: string, method = 'GET') => {
    const res = h(new Request(`http://x${path}`, { method }));
    return [res.status, await res.text()];
  };
  assert.deepEqual(await call('/status'), [200, '{"status":"ok"}']);
  assert.deepEqual(await call('/status/ready'), [503, '{"status":"error","error":"worker id: 2 has not received configuration"}']);
  error = undefined;
  assert.deepEqual(await call('/status/ready?x=1', 'HEAD'), [200, '{"status":"ok"}']);
  assert.deepEqual(await call('/metrics'), [404, '']);
});

test('readiness follows an etcd watch: down longer than the grace is not ready', () => {
  let since: number | undefined;
  let now = 1_000_000;
  const check = storeReadiness({ watchDownSince: () => since }, () => now, 30_000);
  assert.equal(check(), undefined);
  since = now;
  now += 29_000;
  assert.equal(check(), undefined, 'within the grace');
  now += 2_000;
  assert.equal(check(), 'etcd watch down for 31 s (grace 30 s)');
  since = undefined;
  assert.equal(check(), undefined);
  assert.equal(storeReadiness({})(), undefined, 'stores without a watch are always ready');
});

/**
 * The fetch forwarder's timeouts and client signal, with both clocks (a timer per call, as on Workers; one shared
 * interval, as on Deno and Bun), run here with Node's global fetch against real loopback servers. The conformance
 * suite covers the same forwarder end to end on Bun, Deno and workerd.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { createFetchForwarder, TICK_MS } from '../../src/core/upstream/fetch-forwarder.ts';
import { UpstreamError } from '../../src/core/upstream/types.ts';
import { type BlackHole, startBlackHole } from '../helpers/blackhole.ts';
import { bodyOf, forwardRequest, rejectsWith } from '../helpers/forward-request.ts';

let hole: BlackHole;
before(async () => {
  hole = await startBlackHole();
});

const servers: http.Server[] = [];
after(async () => {
  await hole.close();
  for (const s of servers) s.closeAllConnections();
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
});

async function serve(handler: http.RequestListener): Promise<string> {
  const s = http.createServer(handler);
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
}

const request = forwardRequest;

for (const sharedClock of [false, true]) {
  describe(`fetch forwarder, ${sharedClock ? 'shared clock' : 'timer per call'}`, () => {
    const fwd = createFetchForwarder({ compressed: 'strip', sharedClock });
    // The shared clock fires up to one tick late; the per-call timer on time. Both well inside the slack.
    const late = sharedClock ? TICK_MS : 0;

    it('no answer within the timeout → timeout, on time', async () => {
      const url = await serve(() => {}); // never answers
      const t0 = Date.now();
      await rejectsWith(fwd(request(url, { timeout: 200 })), 'timeout', /no answer within 200 ms/);
      const took = Date.now() - t0;
      assert.ok(took >= 190, `fired early, after ${took} ms`);
      assert.ok(took < 200 + late + 300, `fired late, after ${took} ms`);
    });

    it('many calls in flight that end in any order: each times out at its own deadline, none is left unwatched', { timeout: 10_000 }, async () => {
      // The shared clock keeps its calls in a linked list (fetch-forwarder.ts); calls ending first, last and in the
      // middle of it, while others still wait, must leave every other call watched.
      const never = await serve(() => {}); // never answers
      const quick = await serve((req, res) => {
        const delay = Number(new URL(req.url!, 'http://x').searchParams.get('d'));
        setTimeout(() => res.end('ok'), delay);
      });
      const t0 = Date.now();
      const calls: Promise<string>[] = [];
      for (let i = 0; i < 24; i++) {
        const n = (i * 7) % 24; // an order that is neither the start order nor its reverse
        if (n % 3 === 0) {
          calls.push(fwd(request(`${quick}/?d=${n * 10}`, { timeout: 2_000 })).then((r) => r.text()));
        } else {
          const timeout = 150 + n * 15;
          calls.push(
            rejectsWith(fwd(request(never, { timeout })), 'timeout').then(() => {
              const took = Date.now() - t0;
              assert.ok(took >= timeout - 10, `a ${timeout} ms call timed out early, after ${took} ms`);
              assert.ok(took < timeout + late + 400, `a ${timeout} ms call timed out late, after ${took} ms`);
              return 'timeout';
            }),
          );
        }
      }
      const got = await Promise.all(calls);
      assert.equal(got.filter((x) => x === 'ok').length, 8);
      assert.equal(got.filter((x) => x === 'timeout').length, 16);
      // The clock stops when it finds no call, and starts again with the next one.
      await new Promise((r) => setTimeout(r, 3 * TICK_MS));
      await rejectsWith(fwd(request(never, { timeout: 100 })), 'timeout', /no answer within 100 ms/);
    });

    it('with connect and send timeouts the wait for the headers is bounded by connect + send + read (fetch cannot see the connect)', async () => {
      const url = await serve(() => {}); // never answers
      const t0 = Date.now();
      await rejectsWith(
        fwd(request(url, { connectTimeout: 300, sendTimeout: 200, timeout: 200 })),
        'timeout',
        /no answer within 700 ms \(connect \+ send \+ read/,
      );
      const took = Date.now() - t0;
      assert.ok(took >= 690, `fired early, after ${took} ms`);
      assert.ok(took < 700 + late + 300, `fired late, after ${took} ms`);
    });

    it('a connect that never completes: the same bound, connect + send + read', async () => {
      const t0 = Date.now();
      await rejectsWith(fwd(request(`http://${hole.addr}/`, { connectTimeout: 300, sendTimeout: 100, timeout: 100 })), 'timeout', /500 ms/);
      const took = Date.now() - t0;
      assert.ok(took >= 490 && took < 500 + late + 300, `after ${took} ms`);
    });

    it('after the headers, body gaps are bounded by the read timeout alone', async () => {
      const url = await serve((_req, res) => {
        res.writeHead(200, { 'content-length': '100' });
        res.write('x'); // and never the rest
      });
      await rejectsWith(
        fwd(request(url, { connectTimeout: 1_000, sendTimeout: 1_000, timeout: 200 })),
        'timeout',
        /body stalled for more than 200 ms/,
      );
    });

    it('a small body that stalls after the headers → timeout naming the body', async () => {
      const url = await serve((_req, res) => {
        res.writeHead(200, { 'content-length': '100' });
        res.write('x'.repeat(10)); // and never the rest
      });
      await rejectsWith(fwd(request(url, { timeout: 200 })), 'timeout', /body stalled for more than 200 ms/);
    });

    it('a streamed body: the timeout is the gap between chunks, not the whole transfer', async () => {
      // 6 chunks 100 ms apart (600 ms in all) under a 300 ms timeout: never a gap of 300 ms, so it completes.
      const url = await serve((_req, res) => {
        res.writeHead(200, { 'content-type': 'text/plain' }); // no length: streamed
        let n = 0;
        const t = setInterval(() => {
          res.write(`${n}`);
          if (++n === 6) {
            clearInterval(t);
            res.end();
          }
        }, 100);
      });
      const res = await fwd(request(url, { timeout: 300 }));
      assert.equal(await res.text(), '012345');
    });

    it('a streamed body that stalls → the body errors with a timeout', async () => {
      const url = await serve((_req, res) => {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('some'); // and never more
      });
      const res = await fwd(request(url, { timeout: 200 }));
      const reader = res.body!.getReader();
      assert.equal(new TextDecoder().decode((await reader.read()).value), 'some');
      await assert.rejects(reader.read());
    });

    it('a consumer that does not read is not an upstream stall', async () => {
      const url = await serve((_req, res) => {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('a');
        setTimeout(() => res.end('b'), 50);
      });
      const res = await fwd(request(url, { timeout: 150 }));
      await new Promise((r) => setTimeout(r, 400)); // the consumer waits longer than the timeout before reading
      assert.equal(await res.text(), 'ab');
    });

    it('a client gone before the answer aborts the call, and the upstream sees its connection close', async () => {
      let closed!: () => void;
      const upstreamClosed = new Promise<void>((r) => (closed = r));
      let arrived!: () => void;
      const reached = new Promise<void>((r) => (arrived = r));
      const url = await serve((req) => {
        req.socket.on('close', closed);
        arrived();
      });
      const ac = new AbortController();
      const p = fwd(request(url, { clientSignal: () => ac.signal }));
      await reached;
      ac.abort();
      await rejectsWith(p, 'aborted');
      await upstreamClosed;
    });

    it('a client already gone when its signal is first asked for aborts the call at once', async () => {
      const url = await serve(() => {}); // never answers
      const t0 = Date.now();
      await rejectsWith(fwd(request(url, { clientSignal: () => AbortSignal.abort(), timeout: 5_000 })), 'aborted');
      assert.ok(Date.now() - t0 < 1_000, 'it waited for the timeout');
    });

    it(
      'a quick call never asks for the client signal; one in flight for a few ticks does',
      async () => {
        const url = await serve((req, res) => {
          const delay = Number(new URL(req.url!, 'http://x').searchParams.get('delay') ?? 0);
          setTimeout(() => res.end('ok'), delay);
        });
        let asked = 0;
        const clientSignal = () => {
          asked++;
          return new AbortController().signal;
        };
        const quick = await fwd(request(`${url}/?delay=0`, { clientSignal }));
        assert.equal(await quick.text(), 'ok');
        assert.equal(asked, 0);
        const slow = await fwd(request(`${url}/?delay=${3 * TICK_MS}`, { clientSignal }));
        assert.equal(await slow.text(), 'ok');
        assert.equal(asked, 1);
      },
    );
  });
}

describe('fetch forwarder, request bodies', () => {
  /** A server answering with the number of body bytes it read; and a forwarder whose fetch records the body it was given. */
  async function setup(opts: { bufferLimitedBodies?: boolean } = {}) {
    const url = await serve(async (req, res) => {
      let n = 0;
      for await (const c of req) n += (c as Buffer).length;
      res.end(String(n));
    });
    const given: unknown[] = [];
    const fwd = createFetchForwarder({
      compressed: 'strip',
      ...opts,
      fetch: ((input: string, init: RequestInit) => {
        given.push(init.body);
        return fetch(input, init);
      }) as typeof fetch,
    });
    return { url, given, fwd };
  }

  it('a body without a limit to count against goes to fetch as it came (the runtime can pipe it natively)', async () => {
    const { url, given, fwd } = await setup({ bufferLimitedBodies: true });
    const body = bodyOf(1000);
    const res = await fwd(request(url, { method: 'POST', body }));
    assert.equal(await res.text(), '1000');
    assert.equal(given[0], body);
  });

  it('a counted body is read whole first where the runtime asks for it (bufferLimitedBodies), else wrapped', async () => {
    const buffered = await setup({ bufferLimitedBodies: true });
    const res = await buffered.fwd(request(buffered.url, { method: 'POST', body: bodyOf(1000), maxBodySize: 2000 }));
    assert.equal(await res.text(), '1000');
    assert.ok(buffered.given[0] instanceof Uint8Array, 'not read whole');
    const streamed = await setup();
    const body = bodyOf(1000);
    const res2 = await streamed.fwd(request(streamed.url, { method: 'POST', body, maxBodySize: 2000 }));
    assert.equal(await res2.text(), '1000');
    assert.ok(streamed.given[0] instanceof ReadableStream && streamed.given[0] !== body, 'not wrapped');
  });

  it("a counted body's own error (the gateway's limit) is reported as it is, not as a connect failure", async () => {
    const { url, fwd } = await setup();
    const body = new ReadableStream<Uint8Array>({
      pull(c) {
        c.error(new UpstreamError('body-too-large', 'request body is larger than 10 bytes'));
      },
    });
    await rejectsWith(fwd(request(url, { method: 'POST', body, maxBodySize: 10 })), 'body-too-large');
  });
});

describe('fetch forwarder, collectGarbage', () => {
  it('asks for a collection after every everyBytes of streamed answers, counted across calls', async () => {
    const MiB = 1024 * 1024;
    const url = await serve((req, res) => {
      const size = Number(new URL(req.url!, 'http://x').searchParams.get('size'));
      res.writeHead(200, { 'content-type': 'application/octet-stream' }); // no length: streamed
      res.end(Buffer.alloc(size));
    });
    let collected = 0;
    const fwd = createFetchForwarder({ compressed: 'strip', collectGarbage: { everyBytes: 4 * MiB, collect: () => collected++ } });
    const read = async (size: number) => (await (await fwd(request(`${url}/?size=${size}`))).arrayBuffer()).byteLength;
    assert.equal(await read(10 * MiB), 10 * MiB);
    assert.equal(collected, 2);
    // 2 MiB left over from the first call, 3 more: the third 4 MiB ends inside the second call.
    assert.equal(await read(3 * MiB), 3 * MiB);
    assert.equal(collected, 3);
  });
});

describe('fetch forwarder, header handling (pairs, or a record and a copied Headers as on workerd)', () => {
  /** An upstream that echoes the request headers it got and answers with headers that must not all reach the client. */
  async function upstream(): Promise<string> {
    return serve((req, res) => {
      const got: Record<string, string[]> = {};
      for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
        const name = req.rawHeaders[i]!.toLowerCase();
        got[name] = [...(got[name] ?? []), req.rawHeaders[i + 1]!];
      }
      const body = JSON.stringify(got);
      const coding = new URL(req.url!, 'http://x').searchParams.get('coding');
      res.writeHead(200, [
        ['Content-Type', 'application/json'],
        ['Content-Length', String(Buffer.byteLength(body))],
        ['Connection', 'keep-alive, X-Private'],
        ['Keep-Alive', 'timeout=5'],
        ['X-Private', 'secret'],
        ['Proxy-Authenticate', 'Basic'],
        ['Set-Cookie', 'a=1'],
        ['Set-Cookie', 'b=2'],
        ['X-Kept', 'yes'],
        ...(coding ? [['Content-Encoding', coding]] : []),
      ] as unknown as http.OutgoingHttpHeaders);
      res.end(body);
    });
  }

  for (const native of [false, true]) {
    const fwd = createFetchForwarder({ compressed: 'keep', copyAnswerHeaders: native, recordHeaders: native });
    const mode = native ? 'record + copied Headers' : 'pairs';

    it(`${mode}: the request headers arrive, a repeated name as one line of its values`, async () => {
      const url = await upstream();
      const res = await fwd(
        request(url, { headers: [['x-a', '1'], ['x-b', 'two'], ['x-a', '3'], ['authorization', 'Basic eA==']] }),
      );
      const got = (await res.json()) as Record<string, string[]>;
      assert.deepEqual(got['x-a'], ['1, 3']);
      assert.deepEqual(got['x-b'], ['two']);
      assert.deepEqual(got.authorization, ['Basic eA==']);
    });

    it(`${mode}: hop-by-hop headers and those Connection names are dropped, repeated Set-Cookie kept, the answer mutable`, async () => {
      const url = await upstream();
      const res = await fwd(request(url));
      const names = [...res.headers.keys()];
      for (const gone of ['connection', 'keep-alive', 'x-private', 'proxy-authenticate'])
        assert.ok(!names.includes(gone), `${gone} reached the client`);
      assert.deepEqual(res.headers.getSetCookie(), ['a=1', 'b=2']);
      assert.equal(res.headers.get('x-kept'), 'yes');
      assert.ok(res.headers.get('content-length'));
      res.headers.set('x-added', '1'); // the core edits the answer's headers in place
      assert.equal(res.headers.get('x-added'), '1');
      await res.arrayBuffer();
    });

    it(`${mode}: a compressed answer loses its content-length where the runtime re-encodes (keep)`, async () => {
      const url = await upstream();
      const res = await fwd(request(`${url}/?coding=x-test`));
      assert.equal(res.headers.get('content-encoding'), 'x-test');
      assert.equal(res.headers.get('content-length'), null);
      await res.arrayBuffer();
    });
  }
});

/**
 * The pipeline's body phase with a body filter that holds chunks back (returns empty chunks until the end, as
 * response-rewrite's `filters` do): the answer must still complete.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RequestContext, silentLogger } from '../../src/core/context.ts';
import { type CompiledPlugin, EMPTY_LIST, pluginList, routePipeline, runPipeline } from '../../src/core/plugins/pipeline.ts';

function context(): RequestContext {
  return new RequestContext({
    request: new Request('http://gw.test/a'),
    method: 'GET',
    path: '/a',
    rawPath: '/a',
    query: '',
    host: 'gw.test',
    clientIp: '127.0.0.1',
    scheme: 'http',
    rawHeaders: undefined,
    clientSignal: () => undefined,
    forward: () => Promise.reject(new Error('not used')),
  });
}

describe('pipeline body filters', () => {
  it('a filter that returns empty chunks until the last one does not stall the answer', { timeout: 5000 }, async () => {
    const seen: string[] = [];
    const hold: CompiledPlugin = {
      name: 'hold',
      priority: 0,
      auth: false,
      preferRoute: false,
      instance: {
        bodyFilter(_ctx, chunk, last) {
          seen.push(new TextDecoder().decode(chunk));
          return last ? new TextEncoder().encode(`held:${seen.join('')}`) : new Uint8Array(0);
        },
      },
    };
    const upstream = async () =>
      new Response(
        new ReadableStream<Uint8Array>({
          start(c) {
            for (const part of ['one ', 'two ', 'three']) c.enqueue(new TextEncoder().encode(part));
            c.close();
          },
        }),
      );
    const route = routePipeline(pluginList([hold]), upstream);
    const res = await runPipeline(context(), EMPTY_LIST, route, () => new Response(null, { status: 404 }), { logger: silentLogger });
    assert.equal(await res.text(), 'held:one two three');
  });
});

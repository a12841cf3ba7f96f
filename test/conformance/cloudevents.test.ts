/**
 * The `cloudevents` plugin (issue 15 item 6): a plain HTTP request reaches the function as a CloudEvents 1.0
 * binary-mode request. What the echo function received is read back with the official `cloudevents` SDK
 * (`HTTP.toEvent`, which validates the event against the spec's schema): an implementation independent of fngate's.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type CloudEvent, HTTP } from 'cloudevents';
import type { FunctionServers } from '../functions/functions.ts';
import { type GatewayUnderTest, gatewayPerFile, openfunctionPlugins as of } from './harness.ts';

let gw: GatewayUnderTest;
let fn: FunctionServers;
gatewayPerFile((g, f) => {
  gw = g;
  fn = f;
});

interface Echo {
  method: string;
  headers: Record<string, string>;
  body: string;
}

/** The event the function received, as the SDK reads it (it throws on an invalid event). */
function received(echo: Echo): CloudEvent<unknown> {
  return HTTP.toEvent({ headers: echo.headers, body: echo.body }) as CloudEvent<unknown>;
}

describe('cloudevents: binary mode', () => {
  test('a plain POST arrives as a valid binary-mode event: attributes in ce- headers, the body as data', async () => {
    await gw.putRoute('ce1', {
      uri: '/orders/*',
      plugins: {
        ...of(`${fn.urls.echo}/`),
        cloudevents: { type: 'com.example.order.created', source: 'https://example.com$uri' },
      },
    });
    const before = Date.now();
    const res = await gw.fetch('/orders/42', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ qty: 3 }),
    });
    assert.equal(res.status, 200);
    const echo = (await res.json()) as Echo;
    assert.equal(echo.headers['ce-specversion'], '1.0');
    assert.equal(echo.headers['content-type'], 'application/json');
    assert.equal(echo.body, '{"qty":3}');
    const ev = received(echo);
    assert.equal(ev.specversion, '1.0');
    assert.equal(ev.type, 'com.example.order.created');
    assert.equal(ev.source, 'https://example.com/orders/42');
    assert.match(ev.id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(ev.datacontenttype, 'application/json');
    assert.deepEqual(ev.data, { qty: 3 });
    const time = Date.parse(echo.headers['ce-time']!);
    assert.match(echo.headers['ce-time']!, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.ok(time >= before - 1000 && time <= Date.now() + 1000, `ce-time ${echo.headers['ce-time']}`);
    // Each request is its own event.
    const again = (await (await gw.fetch('/orders/42', { method: 'POST', body: 'x' })).json()) as Echo;
    assert.notEqual(again.headers['ce-id'], ev.id);
  });

  test("the client's own ce- headers are replaced or removed: the gateway states what the event is", async () => {
    await gw.putRoute('ce1', {
      uri: '/ce',
      plugins: { ...of(`${fn.urls.echo}/`), cloudevents: { type: 't.real', source: '/real' } },
    });
    const res = await gw.fetch('/ce', {
      method: 'POST',
      headers: {
        'ce-type': 'spoofed',
        'ce-source': '/spoofed',
        'ce-specversion': '0.3',
        'ce-admin': 'true',
        'content-type': 'text/plain',
      },
      body: 'hello',
    });
    const echo = (await res.json()) as Echo;
    const ev = received(echo);
    assert.equal(ev.type, 't.real');
    assert.equal(ev.source, '/real');
    assert.equal(ev.specversion, '1.0');
    assert.equal(echo.headers['ce-admin'], undefined);
    assert.equal(ev.data, 'hello');
  });

  test('id_header, subject, dataschema and extensions; non-ASCII values percent-encoded (binding §3.1.3.2)', async () => {
    await gw.putRoute('ce1', {
      uri: '/ce/:name',
      plugins: {
        ...of(`${fn.urls.echo}/`),
        cloudevents: {
          type: 't',
          source: '/s',
          subject: 'café "$arg_who" 100%',
          dataschema: 'https://example.com/schema.json',
          id_header: 'X-Request-Id',
          extensions: { tenant: '$http_x_tenant', empty: '$http_x_absent' },
        },
      },
    });
    const res = await gw.fetch('/ce/n?who=me', {
      method: 'POST',
      headers: { 'x-request-id': 'req-123', 'x-tenant': 'acme' },
      body: '',
    });
    const echo = (await res.json()) as Echo;
    assert.equal(echo.headers['ce-subject'], 'caf%C3%A9%20%22me%22%20100%25');
    assert.equal(echo.headers['ce-tenant'], 'acme');
    assert.equal(echo.headers['ce-empty'], undefined, 'an extension whose template is empty is not sent');
    const ev = received(echo);
    assert.equal(ev.id, 'req-123');
    assert.equal(ev.dataschema, 'https://example.com/schema.json');
    assert.equal((ev as unknown as Record<string, unknown>).tenant, 'acme');
    // Without the header: a UUID.
    const res2 = await gw.fetch('/ce/n', { method: 'POST', body: '' });
    assert.match(((await res2.json()) as Echo).headers['ce-id']!, /^[0-9a-f-]{36}$/);
  });

  test('a structured-mode answer (application/cloudevents+json) passes through unchanged', async () => {
    await gw.putRoute('ce1', {
      uri: '/ce',
      plugins: {
        ...of(`${fn.urls.echo}/?set-header=content-type:application/cloudevents%2Bjson&set-header=ce-id:x`),
        cloudevents: { type: 't', source: '/s' },
      },
    });
    const res = await gw.fetch('/ce', { method: 'POST', body: 'b' });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/cloudevents+json');
    assert.equal(res.headers.get('ce-id'), 'x');
    const echo = (await res.json()) as Echo;
    assert.equal(echo.body, 'b');
  });

  test('on an upstream route too', async () => {
    const port = new URL(fn.urls.echo).port;
    await gw.putRoute('ce2', {
      uri: '/ce-up',
      upstream: { nodes: { [`127.0.0.1:${port}`]: 1 } },
      plugins: { cloudevents: { type: 't.up', source: '/up' } },
    });
    const echo = (await (await gw.fetch('/ce-up', { method: 'PUT', body: 'z' })).json()) as Echo;
    assert.equal(received(echo).type, 't.up');
  });

  test('schema: type and source are required; extension names are checked', async () => {
    const put = (conf: unknown) =>
      gw.admin('PUT', '/routes/cex', { uri: '/cex', plugins: { ...of(`${fn.urls.echo}/`), cloudevents: conf } });
    assert.equal((await put({ type: 't' })).status, 400);
    assert.equal((await put({ source: '/s' })).status, 400);
    assert.equal((await put({ type: 't', source: '/s', extensions: { 'Bad-Name': 'x' } })).status, 400);
    assert.equal((await put({ type: 't', source: '/s', extensions: { id: 'x' } })).status, 400);
    assert.equal((await put({ type: 't', source: '/s', extensions: { __proto__x: 'x' } })).status, 400);
    assert.equal((await put({ type: 't', source: '/s', extensions: { traceparent2: 'x' } })).status, 201);
  });
});

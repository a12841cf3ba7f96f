/**
 * The CloudEvents HTTP binding's header-value encoding (v1.0.2 §3.1.3.2), the one piece of src/core/plugins/cloudevents.ts
 * with arithmetic; the plugin end to end is test/conformance/cloudevents.test.ts.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeHeaderValue } from '../../src/core/plugins/cloudevents.ts';

test('printable ASCII other than space, " and % is kept; those and non-ASCII (UTF-8 bytes) are percent-encoded', () => {
  assert.equal(encodeHeaderValue('com.example/a-b_c~!#$&*+=?@[]{}|'), 'com.example/a-b_c~!#$&*+=?@[]{}|');
  assert.equal(encodeHeaderValue('a b"c%d'), 'a%20b%22c%25d');
  assert.equal(encodeHeaderValue('café ☕'), 'caf%C3%A9%20%E2%98%95');
  assert.equal(encodeHeaderValue('tab\there\r\n'), 'tab%09here%0D%0A');
  assert.equal(encodeHeaderValue('\x7f'), '%7F');
  assert.equal(decodeURIComponent(encodeHeaderValue('ünï "x" 100%')), 'ünï "x" 100%');
});

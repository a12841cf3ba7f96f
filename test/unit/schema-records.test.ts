// Issue 18 item 3: `__proto__`, `constructor` and `prototype` keys in record-shaped fields are refused like any
// other bad key (valibot's `v.record` silently skips them, so they were stored unvalidated).
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { metaSchema } from '../../src/core/plugins/check.ts';
import { check, RESERVED_KEYS } from '../../src/core/schema/common.ts';
import { consumerGroupSchema, consumerSchema, credentialSchema } from '../../src/core/schema/consumer.ts';
import { globalRuleSchema } from '../../src/core/schema/global-rule.ts';
import { pluginConfigSchema } from '../../src/core/schema/plugin-config.ts';
import { checkService } from '../../src/core/schema/service.ts';
import { checkRoute } from '../../src/core/schema/route.ts';
import { checkUpstream } from '../../src/core/schema/upstream.ts';

const SRC = new URL('../../src/', import.meta.url).pathname;

/** Every record-shaped field, as a function putting `rec` (a JSON object text) in a valid document. */
const RECORD_FIELDS: { name: string; check: (doc: unknown) => { ok: boolean; message?: string }; doc: (rec: string) => string }[] = [
  { name: 'route.plugins', check: checkRoute, doc: (rec) => `{"uri":"/a","plugins":${rec}}` },
  { name: 'route.labels', check: checkRoute, doc: (rec) => `{"uri":"/a","plugins":{},"labels":${rec}}` },
  { name: 'route.upstream.labels', check: checkRoute, doc: (rec) => `{"uri":"/a","upstream":{"nodes":{"h:1":1},"labels":${rec}}}` },
  { name: 'route.upstream.nodes', check: checkRoute, doc: (rec) => `{"uri":"/a","upstream":{"nodes":${rec}}}` },
  { name: 'upstream.nodes', check: checkUpstream, doc: (rec) => `{"nodes":${rec}}` },
  { name: 'upstream.labels', check: checkUpstream, doc: (rec) => `{"nodes":{"h:1":1},"labels":${rec}}` },
  {
    name: 'upstream.nodes[].metadata',
    check: checkUpstream,
    doc: (rec) => `{"nodes":[{"host":"h","weight":1,"metadata":${rec}}]}`,
  },
  { name: 'service.plugins', check: checkService, doc: (rec) => `{"plugins":${rec}}` },
  { name: 'service.labels', check: checkService, doc: (rec) => `{"plugins":{},"labels":${rec}}` },
  { name: 'consumer.plugins', check: (d) => check(consumerSchema, d), doc: (rec) => `{"username":"jack","plugins":${rec}}` },
  { name: 'consumer.labels', check: (d) => check(consumerSchema, d), doc: (rec) => `{"username":"jack","labels":${rec}}` },
  { name: 'credential.plugins', check: (d) => check(credentialSchema, d), doc: (rec) => `{"plugins":${rec}}` },
  { name: 'consumer_group.plugins', check: (d) => check(consumerGroupSchema, d), doc: (rec) => `{"id":"g","plugins":${rec}}` },
  { name: 'plugin_config.plugins', check: (d) => check(pluginConfigSchema, d), doc: (rec) => `{"id":"p","plugins":${rec}}` },
  { name: 'global_rule.plugins', check: (d) => check(globalRuleSchema, d), doc: (rec) => `{"id":"g","plugins":${rec}}` },
  { name: '_meta.error_response', check: (d) => check(metaSchema, d), doc: (rec) => `{"error_response":${rec}}` },
];

/** A value each record field accepts for an ordinary key (a node weight, a label, a plugin conf, metadata). */
const GOOD_VALUE: Record<string, string> = {
  'route.plugins': '{}',
  'route.labels': '"v"',
  'route.upstream.labels': '"v"',
  'route.upstream.nodes': '1',
  'upstream.nodes': '1',
  'upstream.labels': '"v"',
  'upstream.nodes[].metadata': '"v"',
  'service.plugins': '{}',
  'service.labels': '"v"',
  'consumer.plugins': '{}',
  'consumer.labels': '"v"',
  'credential.plugins': '{}',
  'consumer_group.plugins': '{}',
  'plugin_config.plugins': '{}',
  'global_rule.plugins': '{}',
  '_meta.error_response': '"v"',
};

describe('record-shaped fields refuse reserved JavaScript keys (safeRecord)', () => {
  it('property: a reserved key anywhere among valid keys, with any JSON value, is refused naming the key', () => {
    const goodKey = fc.constantFrom('h:1', '127.0.0.1:80', 'a', 'env', 'x-y');
    fc.assert(
      fc.property(
        fc.constantFrom(...RECORD_FIELDS),
        fc.constantFrom(...RESERVED_KEYS),
        fc.oneof(fc.json(), fc.constant('1'), fc.constant('"v"'), fc.constant('{}')),
        fc.uniqueArray(goodKey, { maxLength: 3 }),
        fc.nat(),
        (field, reserved, value, others, at) => {
          const entries = others.map((k) => `${JSON.stringify(k)}:${GOOD_VALUE[field.name]}`);
          entries.splice(at % (entries.length + 1), 0, `${JSON.stringify(reserved)}:${value}`);
          const text = field.doc(`{${entries.join(',')}}`);
          const res = field.check(JSON.parse(text));
          assert.equal(res.ok, false, `${field.name}: ${text} was accepted`);
          assert.match(res.message ?? '', new RegExp(`the key "${reserved}" is not allowed`), text);
        },
      ),
      { seed: 18, numRuns: 500 },
    );
  });

  it('the same documents with an ordinary key instead are accepted (the property is not vacuous)', () => {
    for (const field of RECORD_FIELDS) {
      const text = field.doc(`{"h:1":${GOOD_VALUE[field.name]}}`);
      assert.deepEqual(field.check(JSON.parse(text)).ok, true, `${field.name}: ${text}`);
    }
  });

  it('no schema in src/ builds a record with v.record directly (only safeRecord does)', () => {
    const offenders: string[] = [];
    const walk = (dir: string) => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const p = join(dir, e.name);
        if (e.isDirectory()) walk(p);
        else if (p.endsWith('.ts') && !p.endsWith(join('schema', 'common.ts')) && /\bv\.record\(/.test(readFileSync(p, 'utf8'))) {
          offenders.push(p.slice(SRC.length));
        }
      }
    };
    walk(SRC);
    assert.deepEqual(offenders, []);
  });
});

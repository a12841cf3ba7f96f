// biome-ignore-all lint/suspicious/noTemplateCurlyInString: these tests are about APISIX's ${{VAR}} references
import assert from 'node:assert/strict';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { StandaloneSource } from '../../src/store/standalone.ts';
import {
  hasEndFlag,
  loadYamlParser,
  parseStandalone,
  ReadOnlyStoreError,
  StandaloneStore,
  substituteEnv,
} from '../../src/store/standalone.ts';
import { openStandaloneFile, standaloneFormatOf } from '../../src/store/standalone-file.ts';
import type { StoreState } from '../../src/store/types.ts';
import { StoreError } from '../../src/store/types.ts';

const yaml = (opts: { env?: Record<string, string | undefined>; prefix?: string; version?: number } = {}) => ({
  format: 'yaml' as const,
  env: opts.env ?? {},
  ...opts,
});
const json = (env: Record<string, string | undefined> = {}) => ({ format: 'json' as const, env });
const keys = (s: StoreState) => s.items.map((i) => i.key);
const tick = (ms = 0) => new Promise<void>((r) => setTimeout(r, ms));

async function waitFor(cond: () => boolean | Promise<boolean>, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`condition not met within ${ms} ms`);
    await tick(25);
  }
}

const SAMPLE = `
routes:
  - uri: /hello
    upstream:
      nodes:
        "127.0.0.1:1980": 1
      type: roundrobin
  - id: 10
    uri: /ten
    upstream_id: 1
  - id: "2"
    uri: /two
    modifiedIndex: 7
  - uri: /third-without-id
upstreams:
  - id: 1
    nodes:
      "127.0.0.1:1980": 1
    type: roundrobin
consumers:
  - username: jack
    plugins:
      key-auth:
        key: user-key
plugin_metadata:
  - id: http-logger
    log_format:
      host: "$host"
global_rules:
services:
#END
`;

describe('parseStandalone', () => {
  before(loadYamlParser);
  test('YAML: ids (item.id, consumers username, arr_<n>), stringified into value.id, key byte order', () => {
    const st = parseStandalone(SAMPLE, yaml());
    assert.deepEqual(keys(st), [
      '/apisix/consumers/jack',
      '/apisix/plugin_metadata/http-logger',
      '/apisix/routes/10',
      '/apisix/routes/2',
      '/apisix/routes/arr_1',
      '/apisix/routes/arr_4',
      '/apisix/upstreams/1',
    ]);
    const byKey = new Map(st.items.map((i) => [i.key, i]));
    assert.equal(byKey.get('/apisix/routes/arr_1')?.value.id, 'arr_1');
    assert.equal(byKey.get('/apisix/routes/10')?.value.id, '10');
    assert.equal(byKey.get('/apisix/routes/10')?.value.upstream_id, 1, 'other fields keep their YAML types');
    assert.equal(byKey.get('/apisix/upstreams/1')?.value.id, '1');
    assert.equal(byKey.get('/apisix/consumers/jack')?.value.id, 'jack');
    assert.equal(byKey.get('/apisix/consumers/jack')?.value.username, 'jack');
    assert.deepEqual(byKey.get('/apisix/plugin_metadata/http-logger')?.value, {
      id: 'http-logger',
      log_format: { host: '$host' },
    });
    // modifiedIndex: taken from the item (and removed from the value), else the version
    const two = byKey.get('/apisix/routes/2')!;
    assert.deepEqual([two.createdIndex, two.modifiedIndex, two.value.modifiedIndex], [7, 7, undefined]);
    assert.equal(byKey.get('/apisix/routes/10')?.modifiedIndex, 1);
    assert.equal(st.revision, 7);
    assert.equal(parseStandalone(SAMPLE, yaml({ version: 20 })).revision, 20);
    assert.deepEqual(keys(parseStandalone(SAMPLE, yaml({ prefix: '/gw' })))[0], '/gw/consumers/jack');
  });

  test('JSON: same rules, no end flag needed', () => {
    const st = parseStandalone(
      JSON.stringify({
        routes: [{ uri: '/a' }, { id: 5, uri: '/b' }],
        consumers: [{ username: 'rose' }, { id: 'c1', username: 'ignored-for-id' }],
        routes_conf_version: 3,
      }),
      json(),
    );
    assert.deepEqual(keys(st), [
      '/apisix/consumers/c1',
      '/apisix/consumers/rose',
      '/apisix/routes/5',
      '/apisix/routes/arr_1',
    ]);
    assert.equal(st.items[2]?.value.id, '5');
  });

  test('#END: required in the last 10 bytes of YAML, trailing whitespace allowed', () => {
    const body = 'routes:\n  - uri: /a\n';
    for (const ok of [`${body}#END`, `${body}#END\n`, `${body}#END  \n\n`, `${body}#END\r\n`, '#END']) {
      assert.ok(hasEndFlag(ok), JSON.stringify(ok));
      assert.equal(parseStandalone(ok, yaml()).items.length, ok === '#END' ? 0 : 1);
    }
    for (const bad of [
      body,
      `${body}#END\n# more`,
      `${body}#END${' '.repeat(7)}\n`,
      `${body}#end\n`,
      `#END\n${body}`,
    ]) {
      assert.ok(!hasEndFlag(bad), JSON.stringify(bad));
      assert.throws(
        () => parseStandalone(bad, yaml()),
        (e: Error) => /missing valid end flag/.test(e.message) && /must end with a line "#END"/.test(e.message),
      );
    }
    assert.throws(() => parseStandalone(body, { ...yaml(), source: 'CONFIG_FILE /x.yaml' }), /CONFIG_FILE \/x\.yaml/);
  });

  test('env substitution in YAML text: ${{VAR}}, spaces, defaults, YAML decides the type', () => {
    const text = `
routes:
  - id: \${{ROUTE_ID}}
    uri: "\${{ PREFIX }}/x"
    host: \${{HOST:=example.com}}
    desc: "\${{ DESC := a default with spaces }}"
    priority: \${{PRIO}}
    name: "\${{EMPTY:=not used}}"
#END`;
    const st = parseStandalone(text, yaml({ env: { ROUTE_ID: 'r1', PREFIX: '/api', PRIO: '12', EMPTY: '' } }));
    assert.deepEqual(st.items[0]?.value, {
      id: 'r1',
      uri: '/api/x',
      host: 'example.com',
      desc: 'a default with spaces',
      priority: 12,
      name: '',
    });
    const withHost = parseStandalone(text, yaml({ env: { ROUTE_ID: 'r1', PREFIX: '', PRIO: '1', HOST: 'h.test' } }));
    assert.equal(withHost.items[0]?.value.host, 'h.test');
    assert.throws(
      () => parseStandalone(text, yaml({ env: { ROUTE_ID: 'r1' } })),
      /can't find environment variable PREFIX/,
    );
    assert.throws(() => substituteEnv('${{NOT-A-NAME}}', {}), /invalid environment variable reference/);
    assert.equal(substituteEnv('no refs ${x} $VAR', {}), 'no refs ${x} $VAR');
  });

  test('env substitution in JSON: string values after parsing, types kept', () => {
    const text = JSON.stringify({
      routes: [{ id: '${{ID}}', uri: '${{P:=/p}}/y', priority: 3, vars: [['arg_x', '==', '${{X}}']] }],
    });
    const st = parseStandalone(text, json({ ID: '7', X: '1' }));
    assert.deepEqual(st.items[0]?.value, { id: '7', uri: '/p/y', priority: 3, vars: [['arg_x', '==', '1']] });
    assert.equal(st.items[0]?.key, '/apisix/routes/7');
    assert.throws(() => parseStandalone(text, json({ ID: '7' })), /can't find environment variable X/);
  });

  test('clear errors for malformed configs', () => {
    const cases: Array<[string, 'yaml' | 'json', RegExp]> = [
      ['routes: [\n#END', 'yaml', /failed to parse .* as YAML/],
      ['{"routes": [}', 'json', /failed to parse .* as JSON/],
      ['- a\n- b\n#END', 'yaml', /top level must be a mapping/],
      ['routes:\n  uri: /a\n#END', 'yaml', /"routes" must be a list/],
      ['routes:\n  - 12\n#END', 'yaml', /routes\[1\] must be an object/],
      ['routes:\n  - id: 1\n  - id: "1"\n#END', 'yaml', /duplicate id "1" in routes/],
      ['plugin_metadata:\n  - log_format: {}\n#END', 'yaml', /plugin_metadata\[1\] needs "id"/],
      ['routes:\n  - id: [1]\n#END', 'yaml', /invalid id/],
      ['routes:\n  - id: 1\n    modifiedIndex: -1\n#END', 'yaml', /invalid modifiedIndex/],
      ['routes:\n  - id: 1\nroutes:\n  - id: 2\n#END', 'yaml', /failed to parse/],
    ];
    for (const [text, format, re] of cases) {
      assert.throws(() => parseStandalone(text, { format, env: {} }), re, text);
    }
  });

  test('plugins list and empty configs', () => {
    const st = parseStandalone('plugins:\n  - name: ip-restriction\n  - name: limit-count\n#END\n', yaml());
    assert.deepEqual(st.items, [
      {
        key: '/apisix/plugins',
        value: { plugins: [{ name: 'ip-restriction' }, { name: 'limit-count' }] },
        createdIndex: 1,
        modifiedIndex: 1,
      },
    ]);
    assert.deepEqual(parseStandalone('# nothing yet\n#END\n', yaml()), { revision: 1, items: [] });
    assert.deepEqual(parseStandalone('{}', json()), { revision: 1, items: [] });
  });
});

/** A source held in memory (like a Workers `vars` string) that tests can change. */
function memorySource(text: string): StandaloneSource & { text: string; fire?: () => void } {
  const src: StandaloneSource & { text: string; fire?: () => void } = {
    text,
    describe: 'the FNGATE_CONFIG variable',
    editHint: 'that variable',
    async read() {
      return src.text;
    },
    watch(onChange) {
      src.fire = onChange;
      return () => {
        src.fire = undefined;
      };
    },
  };
  return src;
}

describe('StandaloneStore', () => {
  test('is read-only: writes throw ReadOnlyStoreError (a StoreError) with the readOnly reason', async () => {
    const store = await StandaloneStore.open({ source: memorySource(SAMPLE), format: 'yaml' });
    assert.equal(store.kind, 'standalone');
    assert.equal(
      store.readOnly,
      'the config is read from the FNGATE_CONFIG variable (standalone mode); edit that variable instead of calling the Admin API',
    );
    for (const attempt of [
      () => store.put('/apisix/routes/1', {}),
      () => store.delete('/apisix/routes/10'),
      () => store.nextId(),
    ]) {
      await assert.rejects(attempt(), (e: unknown) => {
        assert.ok(e instanceof ReadOnlyStoreError && e instanceof StoreError);
        assert.equal(e.message, store.readOnly);
        return true;
      });
    }
    assert.equal((await store.get('/apisix/routes/10'))?.value.uri, '/ten');
    assert.equal((await store.load()).items.length, 7);
    await store.close();
  });

  test('reload: applies a changed text with a higher revision and notifies; keeps the old state on error', async () => {
    const src = memorySource('routes:\n  - id: a\n    uri: /a\n#END\n');
    const errors: Error[] = [];
    const store = await StandaloneStore.open({ source: src, format: 'yaml', onError: (e) => errors.push(e) });
    let notified = 0;
    store.watch(() => notified++);
    const first = await store.load();
    assert.equal(await store.reload(), false, 'unchanged text: nothing to do');

    src.text = 'routes:\n  - id: a\n    uri: /a2\n  - id: b\n    uri: /b\n#END\n';
    src.fire?.();
    await waitFor(() => notified === 1, 1000);
    const second = await store.load();
    assert.deepEqual(keys(second), ['/apisix/routes/a', '/apisix/routes/b']);
    assert.ok(second.revision > first.revision);
    assert.equal(second.items[0]?.modifiedIndex, second.revision);

    src.text = 'routes:\n  - id: a\n    uri: /broken\n'; // no #END: a half-written file
    assert.equal(await store.reload(), false);
    assert.equal(errors.length, 1);
    assert.match(errors[0]!.message, /keeping the previous config: missing valid end flag/);
    assert.deepEqual(await store.load(), second);
    assert.equal(await store.reload(), false);
    assert.equal(errors.length, 1, 'the same bad text is reported once');
    await tick();
    assert.equal(notified, 1);
    await store.close();
  });

  test('open: an invalid or unreadable source throws StoreError', async () => {
    await assert.rejects(
      StandaloneStore.open({ source: memorySource('routes: []\n'), format: 'yaml' }),
      (e: unknown) => e instanceof StoreError && /missing valid end flag in the FNGATE_CONFIG variable/.test(e.message),
    );
    const failing: StandaloneSource = {
      describe: 'CONFIG_FILE /nope.yaml',
      read: () => Promise.reject(new Error('ENOENT: no such file')),
    };
    await assert.rejects(
      StandaloneStore.open({ source: failing, format: 'yaml' }),
      /cannot read the config from CONFIG_FILE/,
    );
  });
});

describe('openStandaloneFile (CONFIG_FILE)', () => {
  const dirP = mkdtemp(join(tmpdir(), 'fngate-standalone-'));
  after(async () => rm(await dirP, { recursive: true, force: true }));

  test('format from the extension', () => {
    assert.equal(standaloneFormatOf('/etc/apisix.yaml'), 'yaml');
    assert.equal(standaloneFormatOf('a.YML'), 'yaml');
    assert.equal(standaloneFormatOf('a.json'), 'json');
    assert.throws(() => standaloneFormatOf('a.toml'), /unknown config format ".toml"/);
  });

  test('a missing or invalid file at start refuses to open, naming the file', async () => {
    const dir = await dirP;
    const missing = join(dir, 'missing.yaml');
    await assert.rejects(
      openStandaloneFile({ path: missing, env: {} }),
      (e: unknown) => e instanceof StoreError && e.message.includes(missing) && e.message.includes('ENOENT'),
    );
    const bad = join(dir, 'bad.json');
    await writeFile(bad, '{"routes": [');
    await assert.rejects(openStandaloneFile({ path: bad, env: {} }), (e: unknown) => {
      return e instanceof StoreError && e.message.includes(bad) && /failed to parse .* as JSON/.test(e.message);
    });
  });

  test('YAML file: reload on change within 3 s (in-place and rename), bad edits keep the old state', async () => {
    const dir = await dirP;
    const path = join(dir, 'apisix.yaml');
    await writeFile(path, 'routes:\n  - id: 1\n    uri: ${{URI:=/one}}\n#END\n');
    const errors: Error[] = [];
    const store = await openStandaloneFile({ path, env: {}, onError: (e) => errors.push(e) });
    assert.match(
      store.readOnly,
      new RegExp(`CONFIG_FILE ${path.replace(/[.]/g, '\\.')} \\(standalone mode\\); edit that file`),
    );
    let notified = 0;
    store.watch(() => notified++);
    const uri = async () => (await store.get('/apisix/routes/1'))?.value.uri;
    assert.equal(await uri(), '/one');

    await writeFile(path, 'routes:\n  - id: 1\n    uri: /two\n#END\n'); // in place
    const t0 = Date.now();
    await waitFor(async () => (await uri()) === '/two', 3000);
    assert.ok(Date.now() - t0 < 3000);
    await waitFor(() => notified >= 1, 1000);

    await writeFile(`${path}.new`, 'routes:\n  - id: 1\n    uri: /three\n  - uri: /four\n#END\n');
    await rename(`${path}.new`, path); // the way editors and config managers replace files
    await waitFor(async () => (await uri()) === '/three', 3000);
    const good = await store.load();
    assert.deepEqual(keys(good), ['/apisix/routes/1', '/apisix/routes/arr_2']);

    const seen = errors.length;
    await writeFile(path, 'routes:\n  - id: 1\n    uri: /half-writ'); // parse error (no #END)
    await waitFor(() => errors.length > seen, 3000);
    assert.match(errors.at(-1)!.message, /missing valid end flag in CONFIG_FILE/);
    assert.deepEqual(await store.load(), good);

    await writeFile(path, 'routes:\n  - id: 1\n    uri: /five\n#END\n');
    await waitFor(async () => (await uri()) === '/five', 3000);
    await assert.rejects(store.put('/apisix/routes/9', {}), ReadOnlyStoreError);
    await store.close();
  });

  test('JSON file with env substitution and reload', async () => {
    const dir = await dirP;
    const path = join(dir, 'apisix.json');
    await writeFile(
      path,
      JSON.stringify({ upstreams: [{ id: 'u', nodes: { '${{NODE}}': 1 }, type: '${{T:=chash}}' }] }),
    );
    const store = await openStandaloneFile({ path, env: { NODE: 'x' }, pollIntervalMs: 100, fsWatch: false });
    // substitution applies to string values, not to keys
    assert.deepEqual((await store.get('/apisix/upstreams/u'))?.value, {
      id: 'u',
      nodes: { '${{NODE}}': 1 },
      type: 'chash',
    });
    await writeFile(path, JSON.stringify({ upstreams: [{ id: 'u', type: '${{NODE}}' }] }));
    await waitFor(async () => (await store.get('/apisix/upstreams/u'))?.value.type === 'x', 3000);
    await store.close();
  });
});

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fsp from 'node:fs/promises';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import type { FileStoreFs } from '../../src/store/file.ts';
import { FileStore, makeDirectory } from '../../src/store/file.ts';
import { compareKeys } from '../../src/store/memory.ts';
import type { ConfigStore, StoredItem, StoreState } from '../../src/store/types.ts';
import { StoreConflictError, StoreError } from '../../src/store/types.ts';

const THIS_FILE = fileURLToPath(import.meta.url);
const ROOT = resolve(dirname(THIS_FILE), '../..');

// ---------------------------------------------------------------------------------------------------------------
// Child processes. This file doubles as the child program (FNGATE_STORE_TEST_CHILD set): it never registers tests.

/** The kill -9 writer's deterministic history: write number r puts slot r % SLOTS; the state depends only on r. */
const SLOTS = 24;
const PAD = 40_000; // ~1 MB per config file
const keyFor = (r: number) => `/apisix/routes/${r % SLOTS}`;
const valueFor = (r: number) => ({ id: String(r % SLOTS), uri: `/r/${r}`, rev: r, pad: String(r).padEnd(PAD, 'x') });

function expectedState(revision: number): StoreState {
  const items: StoredItem[] = [];
  for (let slot = 0; slot < SLOTS; slot++) {
    const first = slot === 0 ? SLOTS : slot;
    if (first > revision) continue;
    const latest = revision - ((((revision - slot) % SLOTS) + SLOTS) % SLOTS);
    items.push({ key: keyFor(first), value: valueFor(latest), createdIndex: first, modifiedIndex: latest });
  }
  items.sort((a, b) => compareKeys(a.key, b.key));
  return { revision, items };
}

async function childWriter(dir: string): Promise<void> {
  const store = await FileStore.open({ dir, watchFile: false });
  let r = (await store.load()).revision;
  process.stdout.write('ready\n');
  for (;;) {
    r += 1;
    const { item } = await store.put(keyFor(r), valueFor(r));
    if (item.modifiedIndex !== r) process.exit(3);
  }
}

async function childBigWrite(dir: string): Promise<void> {
  const store = await FileStore.open({ dir, watchFile: false });
  const before = await store.load();
  let error = '';
  try {
    await store.put('/apisix/routes/big', { pad: 'x'.repeat(8 << 20) });
  } catch (err) {
    error = `${(err as Error).name}: ${(err as Error).message}`;
  }
  const same = isDeepStrictEqual(await store.load(), before);
  await store.close();
  process.stdout.write(JSON.stringify({ error, same }));
}

function childEnv(mode: string, dir: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, FNGATE_STORE_TEST_CHILD: mode, FNGATE_STORE_TEST_DIR: dir };
  delete env.NODE_TEST_CONTEXT; // the child is a plain program, not a test file
  return env;
}

// ---------------------------------------------------------------------------------------------------------------

/** The parent's scratch directory (children get theirs through the environment). */
let tmpRoot = '';
let dirCount = 0;
const newDir = () => join(tmpRoot, `s${++dirCount}`);
const tick = (ms = 0) => new Promise<void>((r) => setTimeout(r, ms));
const tmpFiles = async (dir: string) => (await readdir(dir)).filter((n) => n.includes('.tmp-')).sort();

async function waitFor(cond: () => boolean | Promise<boolean>, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`condition not met within ${ms} ms`);
    await tick(20);
  }
}

const isRoot = process.getuid?.() === 0;
function mountTmpfs(dir: string, size: string): boolean {
  if (!isRoot) return false;
  return spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir]).status === 0;
}
function umount(dir: string): void {
  spawnSync('umount', [dir]);
}

function osError(code: string, syscall: string): Error {
  return Object.assign(new Error(`${code}: injected failure, ${syscall}`), { code, syscall });
}

async function casContract(s: ConfigStore): Promise<void> {
  const k = `${s.prefix}/routes/cas`;
  const a = await s.put(k, { v: 1 }, { expect: 0 });
  assert.equal(a.created, true);
  await assert.rejects(s.put(k, { v: 2 }, { expect: 0 }), StoreConflictError);
  const rev = (await s.load()).revision;
  await assert.rejects(s.put(k, { v: 2 }, { expect: a.item.modifiedIndex + 100 }), StoreConflictError);
  assert.equal((await s.load()).revision, rev, 'a failed CAS makes no revision');
  const b = await s.put(k, { v: 2 }, { expect: a.item.modifiedIndex });
  assert.equal(b.created, false);
  await assert.rejects(s.put(k, { v: 3 }, { expect: a.item.modifiedIndex }), StoreConflictError);
  await assert.rejects(s.put(`${s.prefix}/routes/none`, {}, { expect: 7 }), StoreConflictError);
  await assert.rejects(s.delete(k, { expect: 0 }), StoreConflictError);
  assert.equal((await s.delete(k, { expect: b.item.modifiedIndex }))?.modifiedIndex, b.item.modifiedIndex);
  assert.equal(await s.get(k), undefined);
}

const mode = process.env.FNGATE_STORE_TEST_CHILD;
if (mode === 'writer') await childWriter(process.env.FNGATE_STORE_TEST_DIR!);
else if (mode === 'big-write') await childBigWrite(process.env.FNGATE_STORE_TEST_DIR!);
else {
  tmpRoot = await mkdtemp(join(tmpdir(), 'fngate-file-store-'));
  after(() => rm(tmpRoot, { recursive: true, force: true }));

  describe('FileStore', () => {
    test('creates the directory (0700) and config.json (0600); CAS, revisions and key order as the memory store', async () => {
      const dir = join(newDir(), 'nested');
      const s = await FileStore.open({ dir, watchFile: false });
      assert.equal(s.kind, 'file');
      assert.equal((await stat(dir)).mode & 0o777, 0o700);
      assert.equal((await stat(s.file)).mode & 0o777, 0o600);
      assert.deepEqual(await s.load(), { revision: 0, items: [] });
      await casContract(s);
      for (const k of ['2', '10', '1']) await s.put(`/apisix/routes/${k}`, { id: k });
      assert.deepEqual(
        (await s.load()).items.map((i) => i.key),
        ['/apisix/routes/1', '/apisix/routes/10', '/apisix/routes/2'],
      );
      assert.equal((await stat(s.file)).mode & 0o777, 0o600, 'the mode survives rewrites');
      await s.close();
      await assert.rejects(s.load(), StoreError);
    });

    test('persists revision and items across reopen; the file is one JSON document', async () => {
      const dir = newDir();
      const a = await FileStore.open({ dir, watchFile: false });
      await a.put('/apisix/routes/1', { uri: '/one', id: '1' });
      await a.put('/apisix/upstreams/u', { nodes: { '127.0.0.1:1980': 1 } });
      await a.put('/apisix/routes/1', { uri: '/uno', id: '1' });
      await a.put('/apisix/routes/2', { uri: '/two' });
      await a.delete('/apisix/routes/2');
      const before = await a.load();
      await a.close();
      const doc = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'));
      assert.equal(doc.revision, 5);
      assert.equal(doc.items.length, 2);
      const b = await FileStore.open({ dir, watchFile: false });
      assert.deepEqual(await b.load(), before);
      assert.deepEqual((await b.get('/apisix/routes/1'))?.value, { uri: '/uno', id: '1' });
      const { item } = await b.put('/apisix/routes/3', {});
      assert.equal(item.modifiedIndex, 6);
      await b.close();
    });

    test('nextId: unique, persisted, growing across reopen and under concurrency', async () => {
      const dir = newDir();
      const a = await FileStore.open({ dir, watchFile: false });
      let notified = 0;
      a.watch(() => notified++);
      const ids = await Promise.all(Array.from({ length: 20 }, () => a.nextId()));
      assert.equal(new Set(ids).size, 20);
      await a.put('/apisix/routes/1', {});
      await tick();
      assert.equal(notified, 1, 'nextId does not notify watchers');
      await a.close();
      const b = await FileStore.open({ dir, watchFile: false });
      const next = await b.nextId();
      assert.ok(next > Math.max(...ids) + 1, `${next} must follow every earlier id and write`);
      await b.close();
      const c = await FileStore.open({ dir, watchFile: false });
      assert.ok((await c.nextId()) > next);
      await c.close();
    });

    test('writes are serialised: parallel puts all land, parallel CAS creates let exactly one win', async () => {
      const dir = newDir();
      const s = await FileStore.open({ dir, watchFile: false });
      const puts = await Promise.all(Array.from({ length: 30 }, (_, i) => s.put(`/apisix/routes/${i}`, { i })));
      assert.deepEqual(
        puts.map((p) => p.item.modifiedIndex).sort((x, y) => x - y),
        [...Array(30).keys()].map((i) => i + 1),
      );
      const race = await Promise.allSettled(
        Array.from({ length: 10 }, (_, i) => s.put('/apisix/routes/race', { i }, { expect: 0 })),
      );
      assert.equal(race.filter((r) => r.status === 'fulfilled').length, 1);
      assert.ok(race.every((r) => r.status === 'fulfilled' || r.reason instanceof StoreConflictError));
      const state = await s.load();
      await s.close();
      const again = await FileStore.open({ dir, watchFile: false });
      assert.deepEqual(await again.load(), state);
      assert.equal(state.items.length, 31);
      await again.close();
    });

    test('watch: notified asynchronously after own writes', async () => {
      const s = await FileStore.open({ dir: newDir(), watchFile: false });
      let n = 0;
      const off = s.watch(() => n++);
      await s.put('/apisix/routes/1', {});
      await tick();
      assert.equal(n, 1);
      await s.delete('/apisix/routes/1');
      await s.delete('/apisix/routes/1'); // nothing to delete: no change
      await tick();
      assert.equal(n, 2);
      off();
      await s.put('/apisix/routes/1', {});
      await tick();
      assert.equal(n, 2);
      await s.close();
    });

    test('watch: notices another process replacing config.json (fs.watch + 1 s stat poll)', async () => {
      const dir = newDir();
      const errors: Error[] = [];
      const a = await FileStore.open({ dir, pollIntervalMs: 200, onError: (e) => errors.push(e) });
      await a.put('/apisix/routes/a', { by: 'a' });
      let n = 0;
      a.watch(() => n++);
      const b = await FileStore.open({ dir, watchFile: false });
      await b.put('/apisix/routes/b', { by: 'b' });
      await waitFor(() => n > 0, 3000);
      assert.deepEqual(
        (await a.load()).items.map((i) => i.key),
        ['/apisix/routes/a', '/apisix/routes/b'],
      );
      // a's next write starts from b's state (re-read before writing), so b's write is not lost
      const { item } = await a.put('/apisix/routes/c', { by: 'a' });
      assert.equal(item.modifiedIndex, 3);
      await b.put('/apisix/routes/d', { by: 'b' }); // b re-reads too
      await b.close();
      await waitFor(async () => (await a.load()).items.length === 4, 3000);

      // Another process writes garbage: a keeps its state, reports once, and refuses to overwrite it.
      const before = await a.load();
      await writeFile(join(dir, 'garbage'), '{"fngate_store":1,"revision":');
      await rename(join(dir, 'garbage'), join(dir, 'config.json'));
      await waitFor(() => errors.length > 0, 3000);
      assert.match(errors[0]!.message, /config\.json is corrupt/);
      assert.deepEqual(await a.load(), before);
      await assert.rejects(a.put('/apisix/routes/e', {}), /is corrupt/);
      await a.close();
      assert.equal(errors.length, 1, 'the same problem is reported once');
    });

    test('a corrupt or unusable config.json at open throws StoreError naming the path', async () => {
      const cases: Array<[string, string | null, RegExp]> = [
        ['not json', '{"fngate_store":1,"revision":3,"items":[', /invalid JSON/],
        ['empty', '', /the file is empty/],
        ['wrong shape', '{"fngate_store":1,"revision":2,"items":{}}', /"items" is not an array/],
        ['foreign', '{"routes":[]}', /unknown format/],
        [
          'bad index',
          '{"fngate_store":1,"revision":1,"items":[{"key":"/apisix/routes/1","value":{},"createdIndex":1,"modifiedIndex":9}]}',
          /above the store revision/,
        ],
        ['directory', null, /EISDIR/],
      ];
      for (const [name, text, re] of cases) {
        const dir = newDir();
        await mkdir(dir);
        const file = join(dir, 'config.json');
        if (text === null) await mkdir(file);
        else await writeFile(file, text);
        await assert.rejects(FileStore.open({ dir, watchFile: false }), (e: unknown) => {
          assert.ok(e instanceof StoreError, name);
          assert.ok(e.message.includes(file), `${name}: ${e.message}`);
          assert.match(e.message, re, name);
          return true;
        });
        if (text !== null) assert.equal(await readFile(file, 'utf8'), text, `${name}: the file is left alone`);
      }
    });

    test('temp files left by a crashed writer are removed at open (live writers are left alone)', async () => {
      const dir = newDir();
      await mkdir(dir);
      const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
      await writeFile(join(dir, 'config.json'), '{"fngate_store":1,"revision":0,"items":[]}\n');
      for (const n of [`config.json.tmp-${dead}-1`, `config.json.tmp-${process.pid}-999999`, 'config.json.tmp-1-5']) {
        await writeFile(join(dir, n), '{"half":');
      }
      await writeFile(join(dir, 'notes.txt'), 'keep');
      const s = await FileStore.open({ dir, watchFile: false });
      assert.deepEqual(await tmpFiles(dir), ['config.json.tmp-1-5'], 'pid 1 is alive: its temp file stays');
      assert.ok((await readdir(dir)).includes('notes.txt'));
      await s.put('/apisix/routes/1', {});
      assert.deepEqual(await tmpFiles(dir), ['config.json.tmp-1-5']);
      await s.close();
    });

    describe('a failed write changes neither memory nor file, and throws StoreError with path and code', () => {
      async function checkUnchanged(s: FileStore, before: StoreState, bytes: Buffer): Promise<void> {
        assert.deepEqual(await s.load(), before);
        assert.deepEqual(await readFile(s.file), bytes);
        assert.deepEqual(await tmpFiles(s.dir), []);
      }
      const expectStoreError = (s: FileStore, code: string) => (e: unknown) => {
        assert.ok(e instanceof StoreError, String(e));
        assert.ok(e.message.includes(s.file), e.message);
        assert.ok(e.message.includes(code), e.message);
        return true;
      };

      test('ENOSPC on a full file system (a 256 KiB tmpfs)', async (t) => {
        const mnt = newDir();
        await mkdir(mnt);
        if (!mountTmpfs(mnt, '256k')) return t.skip('cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)');
        try {
          const s = await FileStore.open({ dir: join(mnt, 'store'), watchFile: false });
          await s.put('/apisix/routes/1', { uri: '/1' });
          const before = await s.load();
          const bytes = await readFile(s.file);
          await assert.rejects(s.put('/apisix/routes/2', { pad: 'x'.repeat(1 << 20) }), expectStoreError(s, 'ENOSPC'));
          await checkUnchanged(s, before, bytes);
          const { item } = await s.put('/apisix/routes/2', { uri: '/2' });
          assert.equal(item.modifiedIndex, before.revision + 1, 'the failed write used no revision');
          await s.close();
        } finally {
          umount(mnt);
        }
      });

      test('EROFS on a read-only file system (tmpfs remounted ro); nextId fails too', async (t) => {
        const mnt = newDir();
        await mkdir(mnt);
        if (!mountTmpfs(mnt, '4m')) return t.skip('cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)');
        try {
          const s = await FileStore.open({ dir: join(mnt, 'store'), watchFile: false });
          await s.put('/apisix/routes/1', { uri: '/1' });
          const before = await s.load();
          const bytes = await readFile(s.file);
          assert.equal(spawnSync('mount', ['-o', 'remount,ro', mnt]).status, 0);
          await assert.rejects(s.put('/apisix/routes/2', {}), expectStoreError(s, 'EROFS'));
          await assert.rejects(s.delete('/apisix/routes/1'), expectStoreError(s, 'EROFS'));
          await assert.rejects(s.nextId(), expectStoreError(s, 'EROFS'));
          await checkUnchanged(s, before, bytes);
          assert.equal(spawnSync('mount', ['-o', 'remount,rw', mnt]).status, 0);
          assert.equal((await s.nextId()) as number, before.revision + 1);
          await s.close();
        } finally {
          umount(mnt);
        }
      });

      test('EFBIG past the file size limit (ulimit -f in a child process)', async () => {
        const dir = newDir();
        const s = await FileStore.open({ dir, watchFile: false });
        await s.put('/apisix/routes/1', { uri: '/1' });
        await s.put('/apisix/routes/2', { uri: '/2' });
        const before = await s.load();
        await s.close();
        const bytes = await readFile(join(dir, 'config.json'));
        const child = spawnSync(
          '/bin/sh',
          ['-c', 'ulimit -f 4096 && exec "$@"', 'sh', process.execPath, '--import', 'tsx', THIS_FILE],
          {
            cwd: ROOT,
            env: childEnv('big-write', dir),
            encoding: 'utf8',
          },
        );
        assert.equal(child.status, 0, child.stderr);
        const out = JSON.parse(child.stdout) as { error: string; same: boolean };
        assert.match(out.error, /^StoreError: cannot write the config store file .*config\.json: EFBIG/);
        assert.ok(out.same, 'memory state unchanged in the child');
        assert.deepEqual(await readFile(join(dir, 'config.json')), bytes);
        assert.deepEqual(await tmpFiles(dir), []);
        const again = await FileStore.open({ dir, watchFile: false });
        assert.deepEqual(await again.load(), before);
        await again.close();
      });

      test('config.json replaced by a directory (EISDIR); writes work again once it is gone', async () => {
        const dir = newDir();
        const s = await FileStore.open({ dir, watchFile: false });
        await s.put('/apisix/routes/1', {});
        const before = await s.load();
        await rm(s.file);
        await mkdir(s.file);
        await assert.rejects(s.put('/apisix/routes/2', {}), expectStoreError(s, 'EISDIR'));
        assert.deepEqual(await s.load(), before);
        await rmdir(s.file);
        await s.put('/apisix/routes/2', {});
        await s.close();
        const again = await FileStore.open({ dir, watchFile: false });
        assert.equal((await again.load()).items.length, 2);
        await again.close();
      });

      test('fsync and rename failures (EIO, injected through the fs option)', async () => {
        let failSync = false;
        let failRename = false;
        const fs: FileStoreFs = {
          ...fsp,
          open: (async (...args: Parameters<typeof fsp.open>) => {
            const fh = await fsp.open(...args);
            if (String(args[0]).includes('.tmp-')) {
              const sync = fh.sync.bind(fh);
              fh.sync = async () => {
                if (failSync) throw osError('EIO', 'fsync');
                return sync();
              };
            }
            return fh;
          }) as typeof fsp.open,
          rename: async (from, to) => {
            if (failRename) throw osError('EIO', 'rename');
            return fsp.rename(from, to);
          },
        };
        const s = await FileStore.open({ dir: newDir(), watchFile: false, fs });
        await s.put('/apisix/routes/1', { v: 1 });
        const before = await s.load();
        const bytes = await readFile(s.file);
        failSync = true;
        await assert.rejects(s.put('/apisix/routes/1', { v: 2 }), expectStoreError(s, 'EIO'));
        await checkUnchanged(s, before, bytes);
        failSync = false;
        failRename = true;
        await assert.rejects(s.put('/apisix/routes/1', { v: 3 }), expectStoreError(s, 'EIO'));
        await checkUnchanged(s, before, bytes);
        failRename = false;
        assert.equal((await s.put('/apisix/routes/1', { v: 4 })).item.modifiedIndex, 2);
        await s.close();
      });
    });

    test('kill -9 at random moments of a writer leaves a complete old or new state (20 kills)', {
      timeout: 180_000,
    }, async (t) => {
      const dir = newDir();
      let last = 0;
      let killedMidWrite = 0;
      for (let round = 1; round <= 20; round++) {
        const child = spawn(process.execPath, ['--import', 'tsx', THIS_FILE], {
          cwd: ROOT,
          env: childEnv('writer', dir),
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let stderr = '';
        child.stderr.on('data', (d) => {
          stderr += d;
        });
        const exited = new Promise<NodeJS.Signals | number | null>((r) =>
          child.on('exit', (code, signal) => r(signal ?? code)),
        );
        await new Promise<void>((ready, fail) => {
          child.stdout.on('data', (d: Buffer) => {
            if (d.toString().includes('ready')) ready();
          });
          child.on('exit', () => fail(new Error(`writer exited before it was ready: ${stderr}`)));
        });
        await tick(10 + Math.random() * 250);
        child.kill('SIGKILL');
        assert.equal(await exited, 'SIGKILL', stderr);
        if ((await tmpFiles(dir)).length > 0) killedMidWrite++;

        const s = await FileStore.open({ dir, watchFile: false });
        const state = await s.load();
        await s.close();
        assert.ok(state.revision >= last, `round ${round}: revision went back from ${last} to ${state.revision}`);
        assert.ok(isDeepStrictEqual(state, expectedState(state.revision)), `round ${round}: not a complete state`);
        assert.deepEqual(await tmpFiles(dir), [], 'leftover temp files removed');
        last = state.revision;
      }
      t.diagnostic(`final revision ${last}; ${killedMidWrite} of 20 kills left a temp file behind`);
      assert.ok(last > 20, 'the writer made progress');
    });
  });

  describe('makeDirectory (mkdir -p without the recursive flag)', () => {
    test('creates missing ancestors with the mode, accepts an existing directory, refuses a file and /proc/nope', async () => {
      const root = await mkdtemp(join(tmpdir(), 'fngate-mkdir-'));
      try {
        const deep = join(root, 'a', 'b', 'c');
        await makeDirectory(deep, 0o700);
        assert.equal((await stat(deep)).mode & 0o777, 0o700);
        assert.equal((await stat(join(root, 'a'))).mode & 0o777, 0o700);
        await makeDirectory(deep, 0o700); // exists: fine
        await writeFile(join(root, 'f'), 'x');
        await assert.rejects(makeDirectory(join(root, 'f'), 0o700), /not a directory/);
        await assert.rejects(makeDirectory(join(root, 'f', 'sub'), 0o700), { code: 'ENOTDIR' });
        // Node's recursive mkdir never returns here (100 % CPU); this one fails at once.
        await assert.rejects(makeDirectory('/proc/nope/x', 0o700), { code: 'ENOENT' });
      } finally {
        await rm(root, { recursive: true, force: true });
      }
    });
  });
}

// biome-ignore-all lint/suspicious/noTemplateCurlyInString: these tests are about APISIX's ${{VAR}} references
/**
 * The permissions `deno task start` grants the Deno entry: the rule (src/runtime/deno-permissions.ts), and the
 * real first step of the task (deno.json: `deno run ... src/runtime/deno.ts --permission-flags`) run by the Deno of
 * devDependencies with a CONFIG_FILE, DATA_DIR, ADMIN_KEY and ETCD_HOST in its environment.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { envRefs, permissionFlags, writesDataDir } from '../../src/runtime/deno-permissions.ts';

const ROOT = new URL('../..', import.meta.url).pathname;

const base = {
  dataDir: '/srv/fngate',
  etcd: false,
  adminKey: true,
  adminKeyFile: false,
  envNames: ['DATA_DIR', 'LOG_LEVEL'],
};
const flag = (flags: string[], name: string) => flags.find((f) => f === name || f.startsWith(`${name}=`));
const envList = (flags: string[]) => flag(flags, '--allow-env')?.slice('--allow-env='.length).split(',') ?? [];

describe('permissionFlags (the rule)', () => {
  test('${{VAR}} and ${{VAR:=default}} of CONFIG_FILE join the settings in --allow-env; nothing else does', () => {
    const { flags } = permissionFlags({
      ...base,
      configFile: '/etc/fngate/apisix.yaml',
      configText: 'routes:\n  - uri: ${{ FOO }}\n    x: "${{BAR:=x}}"\n    y: ${{bad name}}\n#END\n',
    });
    assert.deepEqual(envList(flags).sort(), ['BAR', 'DATA_DIR', 'FOO', 'LOG_LEVEL']);
    assert.deepEqual(envRefs('${{A}} ${{A}} ${{ B := 1 }}'), ['A', 'B']);
  });

  test('the Deno KV store: read and write of DATA_DIR only', () => {
    const { flags } = permissionFlags(base);
    assert.equal(flag(flags, '--allow-read'), '--allow-read=/srv/fngate');
    assert.equal(flag(flags, '--allow-write'), '--allow-write=/srv/fngate');
    assert.ok(flags.includes('--no-prompt') && flags.includes('--allow-net'));
  });

  test('CONFIG_FILE or etcd with ADMIN_KEY set write nothing: no --allow-write', () => {
    const cf = permissionFlags({ ...base, configFile: '/etc/a.yaml', configText: 'routes: []\n#END\n' });
    assert.equal(flag(cf.flags, '--allow-write'), undefined, cf.flags.join(' '));
    assert.equal(flag(cf.flags, '--allow-read'), '--allow-read=/srv/fngate,/etc/a.yaml');
    const etcd = permissionFlags({ ...base, etcd: true });
    assert.equal(flag(etcd.flags, '--allow-write'), undefined, etcd.flags.join(' '));
  });

  test('without ADMIN_KEY the key file is generated in DATA_DIR (write), unless it exists already', () => {
    assert.equal(writesDataDir({ configFile: '/etc/a.yaml', etcd: false, adminKey: false, adminKeyFile: false }), true);
    assert.equal(writesDataDir({ configFile: undefined, etcd: true, adminKey: false, adminKeyFile: true }), false);
    assert.equal(writesDataDir({ configFile: undefined, etcd: false, adminKey: false, adminKeyFile: true }), true);
  });

  test('WORKERS > 1: --allow-run for the deno binary only, never a bare --allow-run', () => {
    assert.equal(flag(permissionFlags(base).flags, '--allow-run'), undefined);
    const { flags, warning } = permissionFlags({ ...base, spawnWorkers: '/opt/deno/bin/deno' });
    assert.deepEqual(
      flags.filter((f) => f.startsWith('--allow-run')),
      ['--allow-run=/opt/deno/bin/deno'],
    );
    assert.equal(warning, undefined);
    // A path the task cannot pass: no run permission at all (the gateway then serves from one process), and a warning.
    const odd = permissionFlags({ ...base, spawnWorkers: '/opt/my deno/deno' });
    assert.equal(flag(odd.flags, '--allow-run'), undefined, odd.flags.join(' '));
    assert.match(odd.warning ?? '', /no --allow-run, so WORKERS starts no workers/);
  });

  test('a path with a comma or space: whole-file-system read, write only when needed, and a warning', () => {
    const ro = permissionFlags({ ...base, configFile: '/etc/my config.yaml', configText: '' });
    assert.ok(ro.flags.includes('--allow-read'));
    assert.equal(flag(ro.flags, '--allow-write'), undefined);
    assert.match(ro.warning ?? '', /space or a comma.*read access/);
    const rw = permissionFlags({ ...base, dataDir: '/srv/a,b' });
    assert.ok(rw.flags.includes('--allow-write'));
  });
});

describe('deno task start, first step (--permission-flags), run by Deno', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fngate-deno-perm-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** The command inside `$(...)` of deno.json's `start` task, run with `env`; returns the flags it printed. */
  function taskFlags(env: Record<string, string>): string[] {
    const task = JSON.parse(readFileSync(join(ROOT, 'deno.json'), 'utf8')).tasks.start;
    const command: string = typeof task === 'string' ? task : task.command;
    const inner = /\$\(([^)]*)\)/.exec(command)?.[1];
    assert.ok(inner, `no $(...) in the start task: ${command}`);
    const [cmd, ...args] = inner.trim().split(/\s+/);
    const { ADMIN_KEY: _k, ETCD_HOST: _e, CONFIG_FILE: _c, DATA_DIR: _d, ADMIN_TLS_CERT: _tc, ADMIN_TLS_KEY: _tk, ...inherited } =
      process.env;
    const res = spawnSync(join(ROOT, cmd!), args, {
      cwd: ROOT,
      encoding: 'utf8',
      env: { ...inherited, NO_COLOR: '1', ...env },
      timeout: 30_000,
    });
    assert.equal(res.status, 0, `${inner}\n${res.stdout}\n${res.stderr}`);
    return res.stdout.trim().split(/\s+/);
  }

  test('a CONFIG_FILE naming ${{FOO}}: FOO is in --allow-env; with ADMIN_KEY there is no --allow-write', async () => {
    const file = join(dir, 'apisix.yaml');
    await writeFile(file, 'routes:\n  - uri: /a\n    upstream:\n      nodes:\n        "${{FOO}}": 1\n#END\n');
    const dataDir = join(dir, 'data');
    const flags = taskFlags({ CONFIG_FILE: file, DATA_DIR: dataDir, ADMIN_KEY: 'k'.repeat(32) });
    assert.ok(envList(flags).includes('FOO'), flags.join(' '));
    assert.ok(envList(flags).includes('ADMIN_KEY'), flags.join(' '));
    assert.equal(flag(flags, '--allow-read'), `--allow-read=${dataDir},${file}`);
    assert.equal(flag(flags, '--allow-write'), undefined, flags.join(' '));
  });

  test('the same without ADMIN_KEY: write access to DATA_DIR for the generated key; once it exists, none', async () => {
    const file = join(dir, 'apisix.yaml');
    await writeFile(file, 'routes: []\n#END\n');
    const dataDir = join(dir, 'data2');
    assert.equal(
      flag(taskFlags({ CONFIG_FILE: file, DATA_DIR: dataDir }), '--allow-write'),
      `--allow-write=${dataDir}`,
    );
    await mkdir(dataDir, { recursive: true });
    await writeFile(join(dataDir, 'admin_key'), `${'a'.repeat(64)}\n`, { mode: 0o600 });
    assert.equal(flag(taskFlags({ CONFIG_FILE: file, DATA_DIR: dataDir }), '--allow-write'), undefined);
  });

  test('WORKERS=2 on Linux: --allow-run=<the deno binary> for the primary; WORKERS=1: none', () => {
    const env = { DATA_DIR: join(dir, 'data4'), ADMIN_KEY: 'k'.repeat(32) };
    const two = taskFlags({ ...env, WORKERS: '2' });
    assert.deepEqual(
      two.filter((f) => f.startsWith('--allow-run')),
      process.platform === 'linux' ? [`--allow-run=${join(ROOT, 'node_modules/deno/deno')}`] : [],
      two.join(' '),
    );
    const one = taskFlags({ ...env, WORKERS: '1' });
    assert.deepEqual(
      one.filter((f) => f.startsWith('--allow-run')),
      [],
      one.join(' '),
    );
  });

  test('etcd with ADMIN_KEY: no --allow-write; the Deno KV default: --allow-write=DATA_DIR', () => {
    const dataDir = join(dir, 'data3');
    const etcd = taskFlags({ ETCD_HOST: 'http://127.0.0.1:2379', ADMIN_KEY: 'k'.repeat(32), DATA_DIR: dataDir });
    assert.equal(flag(etcd, '--allow-write'), undefined, etcd.join(' '));
    assert.equal(
      flag(taskFlags({ DATA_DIR: dataDir, ADMIN_KEY: 'k'.repeat(32) }), '--allow-write'),
      `--allow-write=${dataDir}`,
    );
  });

  test('ADMIN_TLS_CERT/ADMIN_TLS_KEY: both files join --allow-read (the HTTPS Admin API reads them at start)', () => {
    const dataDir = join(dir, 'data4');
    const flags = taskFlags({
      DATA_DIR: dataDir,
      ADMIN_KEY: 'k'.repeat(32),
      ADMIN_TLS_CERT: '/etc/fngate/admin.crt',
      ADMIN_TLS_KEY: '/etc/fngate/admin.key',
    });
    assert.equal(flag(flags, '--allow-read'), `--allow-read=${dataDir},/etc/fngate/admin.crt,/etc/fngate/admin.key`);
  });
});

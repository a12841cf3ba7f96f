// readSettings (src/runtime/settings.ts) for the etcd credentials: both or neither. The start-up error of a real
// gateway process is checked in test/e2e/etcd.test.ts.
// Run: node --import tsx --test test/unit/settings-etcd.test.ts
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { readSettings, SettingsError, startupError } from '../../src/runtime/settings.ts';

test('ETCD_USER and ETCD_PASSWORD: both or neither', () => {
  assert.equal(readSettings({}).etcdUser, undefined);
  assert.equal(readSettings({ ETCD_USER: '', ETCD_PASSWORD: '' }).etcdPassword, undefined, 'empty is unset');
  const both = readSettings({ ETCD_HOST: 'http://127.0.0.1:2379', ETCD_USER: 'root', ETCD_PASSWORD: 's3cret' });
  assert.equal(both.etcdUser, 'root');
  assert.equal(both.etcdPassword, 's3cret');

  for (const [env, message] of [
    [{ ETCD_PASSWORD: 's3cret' }, 'ETCD_PASSWORD is set but ETCD_USER is not'],
    [{ ETCD_USER: '', ETCD_PASSWORD: 's3cret' }, 'ETCD_PASSWORD is set but ETCD_USER is not'],
    [{ ETCD_USER: 'root' }, 'ETCD_USER is set but ETCD_PASSWORD is not'],
  ] as const) {
    assert.throws(
      () => readSettings({ ETCD_HOST: 'http://127.0.0.1:2379', ...env }),
      (err: Error) => {
        assert.ok(err instanceof SettingsError);
        assert.ok(err.message.startsWith(message), err.message);
        assert.ok(!err.message.includes('s3cret'), 'the password is never echoed');
        assert.match(startupError(err), /Run with --help/);
        return true;
      },
    );
  }
});

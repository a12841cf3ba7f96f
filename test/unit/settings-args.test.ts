// Issue 18 item 9: unknown command-line arguments are an error (exit 2 with the usage text), never ignored.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseCommandLine, usageError } from '../../src/runtime/settings.ts';

describe('parseCommandLine', () => {
  it('accepts no arguments, -h and --help, and the entry\'s own flags', () => {
    assert.deepEqual(parseCommandLine([]), { ok: true, help: false, flags: new Set() });
    assert.deepEqual(parseCommandLine(['-h']), { ok: true, help: true, flags: new Set() });
    assert.deepEqual(parseCommandLine(['--help']), { ok: true, help: true, flags: new Set() });
    assert.deepEqual(parseCommandLine(['--permission-flags'], ['--permission-flags']), {
      ok: true,
      help: false,
      flags: new Set(['--permission-flags']),
    });
  });

  it('refuses anything else, naming it', () => {
    for (const [args, msg] of [
      [['--config', '/x.yaml'], 'unknown option "--config"'],
      [['--port=31999'], 'unknown option "--port=31999"'],
      [['serve'], 'unexpected argument "serve"'],
      [['--help', '-v'], 'unknown option "-v"'],
      [['--permission-flags'], 'unknown option "--permission-flags"'],
    ] as [string[], string][]) {
      const res = parseCommandLine(args);
      assert.equal(res.ok, false, args.join(' '));
      assert.ok(!res.ok && res.message.startsWith(msg), !res.ok ? res.message : '');
    }
  });

  it('the usage error holds the message and the whole help text', () => {
    const text = usageError('unknown option "--x"', 'npm start');
    assert.match(text, /^fngate: unknown option "--x"/);
    assert.match(text, /Usage: npm start \[-h \| --help\]/);
    assert.match(text, /ADMIN_KEY/);
  });
});

// The README walk-through, done the way a user does it: function servers from `test/functions/serve.ts
// --walkthrough`, the gateway from `node dist/runtime/node.js`, and curl-like requests (plain node:http, one
// connection per request, curl's default headers).
// Run: npm run build && node --import tsx --test --test-concurrency=1 test/e2e/walkthrough.test.ts
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type GatewayUnderTest, ROOT, startGateway } from '../conformance/harness.ts';
import { canListen, FREE_PORT_RANGE, type Proc, rmDir, startProcess, tmpDir } from '../helpers/process.ts';

const GATEWAY = join(ROOT, 'dist/runtime/node.js');

const README_TEXT = readFileSync(join(ROOT, 'README.md'), 'utf8');

interface SettingRow {
  names: string[];
  default: string;
  meaning: string;
}

/** The rows of the README's configuration table (`| \`NAME\` | default | meaning |`). */
function readmeSettings(): SettingRow[] {
  const section = readmeSection(README_TEXT, 'Configuration');
  const rows: SettingRow[] = [];
  for (const line of section.split('\n')) {
    const m = line.match(/^\| (`[A-Z][^|]*) \| ([^|]*) \| (.*) \|$/);
    if (!m) continue;
    rows.push({
      names: [...m[1]!.matchAll(/`([A-Z][A-Z0-9_]*)`/g)].map((n) => n[1]!),
      default: m[2]!.replaceAll('`', '').trim(),
      meaning: m[3]!.trim(),
    });
  }
  return rows;
}

/** The rows `--help` prints (`  NAME[ / NAME]  meaning (default: x)`); `(unset)`/`(generated)` lose their brackets. */
function helpSettings(help: string): SettingRow[] {
  const rows: SettingRow[] = [];
  for (const line of help.split('\n')) {
    const m = line.match(/^ {2}([A-Z][A-Z0-9_]*(?: \/ [A-Z][A-Z0-9_]*)*) +(.*) \(default: (.*)\)$/);
    if (!m) continue;
    rows.push({ names: m[1]!.split(' / '), default: m[3]!.replace(/^\((.*)\)$/, '$1'), meaning: m[2]! });
  }
  return rows;
}

/**
 * `n` consecutive free ports on 127.0.0.1 (the function layout of test/functions/serve.ts), from freePort's
 * FREE_PORT_RANGE: below the range the OS serves port 0 from, so a server that later listens on port 0 cannot
 * be given one of them before the functions take them.
 */
async function freePortRange(n: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = FREE_PORT_RANGE.from + Math.floor(Math.random() * (FREE_PORT_RANGE.to - FREE_PORT_RANGE.from - n));
    let ok = true;
    for (let p = base; ok && p < base + n; p++) ok = await canListen('127.0.0.1', p);
    if (ok) return base;
  }
  throw new Error(`no ${n} consecutive free ports found`);
}

interface CurlResult {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/**
 * `curl -s [-X METHOD] [-H ...] [-d BODY] URL`: one fresh connection, curl's default headers; like curl `-d`, a
 * body goes out as `application/x-www-form-urlencoded` unless a Content-Type is given.
 */
function curl(url: string, opts: { method?: string; headers?: Record<string, string>; data?: string } = {}) {
  return new Promise<CurlResult>((resolve, reject) => {
    const headers: Record<string, string> = { 'user-agent': 'curl/8.5.0', accept: '*/*' };
    if (opts.data !== undefined) {
      headers['content-type'] = 'application/x-www-form-urlencoded';
      headers['content-length'] = String(Buffer.byteLength(opts.data));
    }
    for (const [k, v] of Object.entries(opts.headers ?? {})) headers[k.toLowerCase()] = v;
    const req = httpRequest(
      url,
      { method: opts.method ?? (opts.data === undefined ? 'GET' : 'POST'), headers, agent: false, timeout: 10_000 },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }),
        );
      },
    );
    req.on('timeout', () => req.destroy(new Error(`curl ${url}: timed out`)));
    req.on('error', reject);
    req.end(opts.data);
  });
}

/** Run the gateway with `env` (and `args`) until it exits by itself; fails if it is still running after `timeoutMs`. */
async function runToExit(env: Record<string, string | undefined>, args: string[] = [], timeoutMs = 10_000) {
  const proc = await startProcess({ cmd: process.execPath, args: [GATEWAY, ...args], env, cwd: ROOT });
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((r) => {
    timer = setTimeout(() => r('timeout'), timeoutMs);
  });
  const res = await Promise.race([proc.waitExit(), timeout]);
  clearTimeout(timer);
  if (res === 'timeout') {
    await proc.kill('SIGKILL');
    assert.fail(`the gateway was still running after ${timeoutMs} ms\n${proc.stdout()}\n${proc.stderr()}`);
  }
  return { ...res, stdout: proc.stdout(), stderr: proc.stderr() };
}

/** One shell command of the README: its words, with single quotes removed (what the shell passes on). */
type Command = string[];

/** The text of the README section whose heading starts with `heading`. */
function readmeSection(readme: string, heading: string): string {
  const at = readme.indexOf(`\n## ${heading}`);
  assert.ok(at >= 0, `README has no "## ${heading}" section`);
  const next = readme.indexOf('\n## ', at + 1);
  return readme.slice(at, next === -1 ? undefined : next);
}

/**
 * The commands of a section's ```sh blocks, as a shell splits them: words separated by blanks, `'…'` quoted
 * (across lines too), `#` to the end of the line a comment, a newline or `&&` outside quotes ends a command.
 */
function shellCommands(section: string): Command[] {
  const commands: Command[] = [];
  for (const block of section.matchAll(/```sh\n([\s\S]*?)```/g)) {
    const src = block[1]!;
    let words: string[] = [];
    let word: string | undefined;
    const endWord = () => {
      if (word !== undefined) words.push(word);
      word = undefined;
    };
    const endCommand = () => {
      endWord();
      if (words.length) commands.push(words);
      words = [];
    };
    for (let i = 0; i < src.length; i++) {
      const c = src[i]!;
      if (c === "'") {
        const close = src.indexOf("'", i + 1);
        assert.ok(close > i, `unterminated quote in the README:\n${src}`);
        word = (word ?? '') + src.slice(i + 1, close);
        i = close;
      } else if (c === '#' && word === undefined) {
        while (i + 1 < src.length && src[i + 1] !== '\n') i++;
      } else if (c === '\n') {
        endCommand();
      } else if (c === ' ' || c === '\t') {
        endWord();
      } else if (c === '&' && src[i + 1] === '&' && word === undefined) {
        endCommand();
        i++;
      } else {
        word = (word ?? '') + c;
      }
    }
    endCommand();
  }
  return commands;
}

/** `curl [-i] [-H 'K: V']… [-X M] [-d DATA] URL` → its parts (the only options the README uses). */
function parseCurl(words: Command): { url: string; method?: string; headers: Record<string, string>; data?: string } {
  const headers: Record<string, string> = {};
  let url: string | undefined;
  let method: string | undefined;
  let data: string | undefined;
  for (let i = 1; i < words.length; i++) {
    const w = words[i]!;
    if (w === '-H') {
      const h = words[++i]!;
      const colon = h.indexOf(':');
      headers[h.slice(0, colon).trim()] = h.slice(colon + 1).trim();
    } else if (w === '-X') method = words[++i];
    else if (w === '-d') data = words[++i];
    else if (w === '-i' || w === '-s') continue;
    else if (w.startsWith('-')) assert.fail(`the README uses a curl option this test does not know: ${w}`);
    else url = w;
  }
  assert.ok(url, `curl without a URL: ${words.join(' ')}`);
  return { url, method, headers, data };
}

describe('README walk-through, command by command', () => {
  const section = readmeSection(README_TEXT, 'Walk-through');
  const commands = shellCommands(section);
  /** Ports the README uses for the function servers: each is moved to the same offset from a free base. */
  const README_BASE = 30583;
  let base: number;
  const functionServers: Proc[] = [];
  let gw: GatewayUnderTest;
  const readmeKey = commands
    .flat()
    .find((w) => w.startsWith('ADMIN_KEY='))
    ?.slice('ADMIN_KEY='.length);

  /** A README URL or body with its ports replaced by the ones of this run. */
  function localize(text: string): string {
    return text
      .replaceAll('127.0.0.1:9180', new URL(gw.adminUrl).host)
      .replaceAll('127.0.0.1:9080', new URL(gw.proxyUrl).host)
      .replace(/\b(localhost|127\.0\.0\.1):(30[5-9]\d\d)\b/g, (_m, host: string, port: string) => {
        const offset = Number(port) - README_BASE;
        assert.ok(offset >= 0 && offset <= 10, `README port ${port} is outside the function layout`);
        return `${host}:${base + offset}`;
      });
  }

  before(async () => {
    base = await freePortRange(11);
    assert.ok(readmeKey, 'the walk-through sets ADMIN_KEY');
    // `ADMIN_KEY=… npm start` (the built entry, with the README's key and the default LOG_LEVEL).
    gw = await startGateway({ key: readmeKey, env: { LOG_LEVEL: undefined } });
  });

  after(async () => {
    await gw?.stop();
    for (const p of functionServers) await p.kill('SIGTERM');
  });

  test('the walk-through has the commands this test expects', () => {
    const kinds = commands.map((c) => (c[0] === 'npx' ? 'serve' : c[0] === 'curl' ? 'curl' : c[0]));
    assert.ok(kinds.filter((k) => k === 'serve').length >= 1, `no \`npx tsx test/functions/serve.ts\` in:\n${section}`);
    assert.ok(kinds.filter((k) => k === 'curl').length >= 4, `expected the PUT/GET curl pairs in:\n${section}`);
  });

  test('every command, in the README order: function servers start beside each other, each curl answers as shown', async () => {
    const puts: number[] = [];
    const gets: { status: number; body: string }[] = [];
    for (const words of commands) {
      if (words[0] === 'npm' || words[0]?.startsWith('ADMIN_KEY=')) continue; // the gateway, started in before()
      if (words[0] === 'npx') {
        // `npx tsx test/functions/serve.ts <args>`: run as the README says (all of them stay running, as in
        // separate terminals), every port moved by the same offset with --base-port.
        assert.deepEqual(words.slice(1, 3), ['tsx', 'test/functions/serve.ts'], words.join(' '));
        const args = [...words.slice(3), '--base-port', String(base)];
        const proc = await startProcess({
          cmd: process.execPath,
          args: ['--import', 'tsx', join(ROOT, 'test/functions/serve.ts'), ...args],
          cwd: ROOT,
          readyLog: /test functions ready|cannot start/,
          timeoutMs: 20_000,
        }).catch((err: Error) => assert.fail(`\`${words.join(' ')}\` did not start: ${err.message}`));
        functionServers.push(proc);
        assert.doesNotMatch(proc.stderr(), /cannot start|EADDRINUSE/, `\`${words.join(' ')}\` failed:\n${proc.stderr()}`);
        continue;
      }
      assert.equal(words[0], 'curl', `a command this test does not know: ${words.join(' ')}`);
      const c = parseCurl(words);
      const res = await curl(localize(c.url), {
        method: c.method,
        headers: c.headers,
        data: c.data === undefined ? undefined : localize(c.data),
      });
      if (c.method === 'PUT') {
        assert.ok(res.status === 200 || res.status === 201, `${words.join(' ')}\n→ ${res.status} ${res.body}`);
        puts.push(res.status);
      } else {
        gets.push({ status: res.status, body: res.body });
      }
    }
    // The first PUT creates route 1, the second replaces it; the first GET is the function's answer as the
    // README shows it, the second the echo upstream's (the request it received, path unchanged).
    assert.deepEqual(puts, [201, 200]);
    assert.equal(gets.length, 2);
    assert.equal(gets[0]!.status, 200, gets[0]!.body);
    assert.ok(section.includes(`# ${gets[0]!.body}`), `the README shows another answer than ${JSON.stringify(gets[0]!.body)}`);
    assert.equal(gets[0]!.body, 'Hello, test!');
    assert.equal(gets[1]!.status, 200, gets[1]!.body);
    const seen = JSON.parse(gets[1]!.body);
    assert.equal(seen.method, 'GET');
    assert.equal(seen.url, '/hello');
    assert.equal(seen.headers['user-agent'], 'curl/8.5.0');
  });

  test('start-up prints the proxy and Admin API URLs', () => {
    const out = gw.proc.stdout();
    assert.ok(out.includes(`proxy listening on ${gw.proxyUrl}`), `proxy URL ${gw.proxyUrl} not in:\n${out}`);
    assert.ok(out.includes(`admin API listening on ${gw.adminUrl}`), `admin URL ${gw.adminUrl} not in:\n${out}`);
  });

  test('the `*` route of the walk-through forwards its tail', async () => {
    // "`"uri": "/hello/*"` with `"function_uri": "http://localhost:30583"` sends `GET /hello/openfunction` to
    // `http://localhost:30583/openfunction`": the walk-through's function answers with the last segment.
    const m = section.match(/"function_uri": "(http:\/\/localhost:\d+)"/);
    assert.ok(m, 'the tail example is gone from the README');
    const put = await curl(`${gw.adminUrl}/apisix/admin/routes/tail`, {
      method: 'PUT',
      headers: { 'X-API-KEY': gw.key },
      data: JSON.stringify({ uri: '/hello/*', plugins: { openfunction: { function_uri: localize(m[1]!) } } }),
    });
    assert.equal(put.status, 201, put.body);
    const res = await curl(`${gw.proxyUrl}/hello/openfunction`);
    assert.equal(res.status, 200, res.body);
    assert.equal(res.body, 'Hello, openfunction!');
  });

  test('GET /apisix/admin/routes/1 without the key → 401', async () => {
    const anon = await curl(`${gw.adminUrl}/apisix/admin/routes/1`);
    assert.equal(anon.status, 401, anon.body);
  });

  test('an unknown path → 404 Route Not Found', async () => {
    const res = await curl(`${gw.proxyUrl}/nope`);
    assert.equal(res.status, 404);
    assert.deepEqual(JSON.parse(res.body), { error_msg: '404 Route Not Found' });
  });
});

describe('command line', () => {
  test('--help exits 0 and lists every setting', async () => {
    const res = await runToExit({}, ['--help']);
    assert.equal(res.code, 0, res.stderr);
    // Also every variable the settings module reads (a setting added later must be documented too).
    const source = await readFile(join(ROOT, 'src/runtime/settings.ts'), 'utf8');
    const read = [...source.matchAll(/\benv\.([A-Z][A-Z0-9_]*)|\bport\(env, '([A-Z][A-Z0-9_]*)'/g)].map(
      (m) => m[1] ?? m[2]!,
    );
    assert.ok(read.includes('LOG_LEVEL'), 'could not find the variables read in src/runtime/settings.ts');
    for (const name of new Set([...readmeSettings().flatMap((r) => r.names), ...read])) {
      assert.ok(res.stdout.includes(name), `--help does not mention ${name}:\n${res.stdout}`);
    }
    assert.match(res.stdout, /9080/);
    assert.match(res.stdout, /9180/);
  });

  test('--help and the README configuration table list the same variables, defaults and meanings', async () => {
    const res = await runToExit({}, ['--help']);
    assert.equal(res.code, 0, res.stderr);
    const readme = readmeSettings();
    const help = helpSettings(res.stdout);
    assert.ok(readme.length >= 10, `README configuration table not found (${readme.length} rows)`);
    assert.deepEqual(
      help.map((r) => r.names),
      readme.map((r) => r.names),
      'the variables (and their order) differ between --help and the README',
    );
    assert.deepEqual(help, readme);
    // The rule readSettings enforces is stated in both.
    assert.match(help.find((r) => r.names.includes('ADMIN_KEY'))!.meaning, /at least 16 characters/);
  });

  test('-h is --help too', async () => {
    const res = await runToExit({}, ['-h']);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /PROXY_PORT/);
  });

  // Issue 18: Node's recursive mkdir loops forever (100 % CPU) under /proc; the gateway must say so and exit.
  test('DATA_DIR=/proc/nope → exit 1 at once naming the directory (file store, and generated admin key)', async () => {
    const cfgDir = await tmpDir('fngate-e2e-procdir-');
    try {
      const cfg = join(cfgDir, 'apisix.yaml');
      await writeFile(cfg, 'routes: []\n#END\n');
      for (const env of [{}, { CONFIG_FILE: cfg }]) {
        const res = await runToExit({ HOST: '127.0.0.1', PROXY_PORT: '0', ADMIN_PORT: '0', DATA_DIR: '/proc/nope', ...env }, [], 4000);
        assert.equal(res.code, 1, `${res.stdout}\n${res.stderr}`);
        assert.match(res.stderr, /fngate: cannot start: cannot create .*\/proc\/nope.*ENOENT/);
        assert.doesNotMatch(res.stdout, /listening on/);
      }
    } finally {
      await rmDir(cfgDir);
    }
  });

  // Issue 18 item 9: `--config /x.yaml --port 31999` started on the defaults.
  for (const args of [['--config', '/x.yaml', '--port', '31999'], ['--port=31999'], ['serve'], ['-h', '--verbose']]) {
    test(`unknown arguments ${args.join(' ')} → exit 2 with the usage text, nothing started`, async () => {
      const dataDir = await tmpDir('fngate-e2e-args-');
      try {
        const env = { HOST: '127.0.0.1', PROXY_PORT: '0', ADMIN_PORT: '0', DATA_DIR: dataDir };
        const res = await runToExit(env, args, 4000);
        assert.equal(res.code, 2, `${res.stdout}\n${res.stderr}`);
        const bad = args.find((a) => a !== '-h')!;
        assert.ok(res.stderr.includes(`"${bad}"`), res.stderr);
        assert.match(res.stderr, /Usage: /);
        assert.match(res.stderr, /PROXY_PORT/);
        assert.doesNotMatch(res.stdout, /listening on/);
      } finally {
        await rmDir(dataDir);
      }
    });
  }

  // '0x50' and '4e4' are numbers to JavaScript (80, 40000) but not port numbers a user means.
  for (const bad of ['abc', '70000', '-1', '80.5', '0x50', '4e4']) {
    test(`PROXY_PORT=${bad} → exit 1 with a message naming PROXY_PORT`, async () => {
      const dataDir = await tmpDir('fngate-e2e-badport-');
      try {
        const env = { HOST: '127.0.0.1', PROXY_PORT: bad, ADMIN_PORT: '0', DATA_DIR: dataDir };
        const res = await runToExit(env, [], 4000); // a settings error exits at once
        assert.equal(res.code, 1, `${res.stdout}\n${res.stderr}`);
        assert.ok(res.stderr.includes(`PROXY_PORT=${bad}`), res.stderr);
        assert.match(res.stderr, /not a port number/);
        assert.doesNotMatch(res.stdout, /listening on/);
      } finally {
        await rmDir(dataDir);
      }
    });
  }

  const otherBad: [string, string, RegExp][] = [
    ['ADMIN_PORT', '99999', /ADMIN_PORT=99999 is not a port number/],
    ['LOG_LEVEL', 'verbose', /LOG_LEVEL=verbose/],
    ['ADMIN_KEY', 'short', /ADMIN_KEY must be at least 16 characters/],
  ];
  for (const [name, value, message] of otherBad) {
    test(`${name}=${value} → exit 1 with a message naming ${name}`, async () => {
      const dataDir = await tmpDir('fngate-e2e-badenv-');
      try {
        const env = {
          HOST: '127.0.0.1',
          PROXY_PORT: '0',
          ADMIN_PORT: '0',
          DATA_DIR: dataDir,
          [name]: value,
        };
        const res = await runToExit(env, [], 4000);
        assert.equal(res.code, 1, `${res.stdout}\n${res.stderr}`);
        assert.match(res.stderr, message);
        assert.ok(!res.stderr.includes(value) || name !== 'ADMIN_KEY', 'the message echoes the admin key');
      } finally {
        await rmDir(dataDir);
      }
    });
  }

  test('PROXY_PORT already in use → exit 1 with a clear message', async () => {
    const dataDir = await tmpDir('fngate-e2e-busy-');
    const otherDir = await tmpDir('fngate-e2e-busy2-');
    const other = await startGateway({ dataDir: otherDir });
    try {
      const busyPort = new URL(other.proxyUrl).port;
      const res = await runToExit({
        HOST: '127.0.0.1',
        PROXY_PORT: busyPort,
        ADMIN_HOST: '127.0.0.1',
        ADMIN_PORT: '0',
        ADMIN_KEY: other.key,
        DATA_DIR: dataDir,
      });
      assert.equal(res.code, 1, `${res.stdout}\n${res.stderr}`);
      assert.match(res.stderr, /EADDRINUSE|in use/i);
      assert.ok(res.stderr.includes(busyPort), `the message should name the port:\n${res.stderr}`);
    } finally {
      await other.stop();
      await rmDir(dataDir);
      await rmDir(otherDir);
    }
  });
});

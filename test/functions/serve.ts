/**
 * Run fngate's test functions as standalone servers (README walk-through, manual poking).
 *
 *   npx tsx test/functions/serve.ts                 # all functions, fixed ports from 30583
 *   npx tsx test/functions/serve.ts --walkthrough   # only function-sample, on 30583
 *
 * Port layout (`--base-port B`, default 30583): the three APISIX CI functions keep their CI ports,
 * the rest follow:
 *
 *   test-header     B+0   30583   (APISIX CI)
 *   test-uri        B+1   30584   (APISIX CI)
 *   test-body       B+2   30585   (APISIX CI)
 *   function-sample B+3   30586
 *   echo            B+4   30587
 *   slow            B+5   30588
 *   stream          B+6   30589
 *   upload          B+7   30590
 *   redirect        B+8   30591
 *   gzip            B+9   30592
 *   status          B+10  30593
 *
 * Port clash with the walk-through: the openfunction walk-through (from the APISIX blog / issue) uses
 * `function_uri: http://localhost:30583/default/function-sample/test`, while APISIX CI puts
 * test-header on 30583. Resolution: the default layout keeps the CI ports (so APISIX's
 * t/plugin/openfunction.t URLs work unchanged), and `--walkthrough` starts **only function-sample
 * on 30583** (i.e. `--only function-sample --port 30583`), where
 * `GET /default/function-sample/test` answers `Hello, test!`. `--base-port` also moves the
 * walk-through port.
 *
 * Flags:
 *   --host <addr>          listen address (default 127.0.0.1)
 *   --base-port <n>        first port of the layout above (default 30583; 0 = all ephemeral)
 *   --only <a,b,…>         start only these functions (repeatable or comma-separated)
 *   --port <name=n>|<n>    override one function's port; the bare form needs exactly one --only
 *   --walkthrough          = --only function-sample --port <base-port>
 *   --help
 *
 * Runs until SIGINT/SIGTERM, then closes every server and exits 0.
 */
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { FUNCTION_NAMES, startFunction } from './functions.ts';
import type { FunctionName, FunctionServer } from './functions.ts';

export const DEFAULT_BASE_PORT = 30583;

/** Offset of each function from `--base-port`. */
export const PORT_OFFSETS: Record<FunctionName, number> = {
  'test-header': 0,
  'test-uri': 1,
  'test-body': 2,
  'function-sample': 3,
  echo: 4,
  slow: 5,
  stream: 6,
  upload: 7,
  redirect: 8,
  gzip: 9,
  status: 10,
  aws: 11,
  lambda: 12,
  openwhisk: 13,
};

export interface ServePlan {
  host: string;
  /** functions to start, in layout order, with their ports (0 = ephemeral) */
  functions: { name: FunctionName; port: number }[];
}

/** Function names in port-layout order. */
const LAYOUT_ORDER: FunctionName[] = [...FUNCTION_NAMES].sort((a, b) => PORT_OFFSETS[a] - PORT_OFFSETS[b]);

const USAGE = `Usage: npx tsx test/functions/serve.ts [options]

Starts fngate's test functions, each on its own HTTP server, and prints their URLs.

Options:
  --host <addr>         listen address (default 127.0.0.1)
  --base-port <n>       first port of the layout (default ${DEFAULT_BASE_PORT}; 0 = all ephemeral)
  --only <a,b,...>      start only these functions (repeatable or comma-separated)
  --port <name=n>|<n>   override a function's port (bare <n> needs exactly one --only)
  --walkthrough         only function-sample, on the base port (README walk-through:
                        http://localhost:${DEFAULT_BASE_PORT}/default/function-sample/test -> "Hello, test!")
  --help                show this help

Default layout (base ${DEFAULT_BASE_PORT}):
${LAYOUT_ORDER.map((n) => `  ${n.padEnd(16)} base+${String(PORT_OFFSETS[n]).padEnd(3)} ${DEFAULT_BASE_PORT + PORT_OFFSETS[n]}`).join('\n')}

Functions: ${FUNCTION_NAMES.join(', ')}`;

function isFunctionName(s: string): s is FunctionName {
  return (FUNCTION_NAMES as readonly string[]).includes(s);
}

function parsePort(raw: string, what: string): number {
  if (!/^\d+$/.test(raw) || Number(raw) > 65535) throw new Error(`invalid ${what}: ${JSON.stringify(raw)}`);
  return Number(raw);
}

/** Parse CLI arguments; returns `'help'` for --help. Throws on bad input. */
export function parseServeArgs(argv: readonly string[]): ServePlan | 'help' {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      host: { type: 'string' },
      'base-port': { type: 'string' },
      only: { type: 'string', multiple: true },
      port: { type: 'string', multiple: true },
      walkthrough: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: false,
    strict: true,
  });
  if (values.help) return 'help';

  const host = values.host ?? '127.0.0.1';
  const base = values['base-port'] === undefined ? DEFAULT_BASE_PORT : parsePort(values['base-port'], '--base-port');
  if (base !== 0 && base + 10 > 65535) throw new Error(`--base-port ${base} leaves no room for the layout`);

  let only: FunctionName[] | undefined;
  if (values.only) {
    only = [];
    for (const n of values.only
      .flatMap((s) => s.split(','))
      .map((s) => s.trim())
      .filter(Boolean)) {
      if (!isFunctionName(n))
        throw new Error(`unknown function ${JSON.stringify(n)} (known: ${FUNCTION_NAMES.join(', ')})`);
      if (!only.includes(n)) only.push(n);
    }
  }

  const overrides = new Map<FunctionName, number>();
  if (values.walkthrough) {
    if (only && (only.length !== 1 || only[0] !== 'function-sample')) {
      throw new Error('--walkthrough starts only function-sample; do not combine it with another --only');
    }
    only = ['function-sample'];
    overrides.set('function-sample', base);
  }
  for (const spec of values.port ?? []) {
    const eq = spec.indexOf('=');
    if (eq === -1) {
      if (only?.length !== 1) throw new Error(`--port ${spec} without a name needs exactly one --only`);
      overrides.set(only[0]!, parsePort(spec, '--port'));
    } else {
      const name = spec.slice(0, eq);
      if (!isFunctionName(name)) throw new Error(`unknown function ${JSON.stringify(name)} in --port ${spec}`);
      overrides.set(name, parsePort(spec.slice(eq + 1), '--port'));
    }
  }

  const names = LAYOUT_ORDER.filter((n) => !only || only.includes(n));
  return {
    host,
    functions: names.map((name) => ({
      name,
      port: overrides.get(name) ?? (base === 0 ? 0 : base + PORT_OFFSETS[name]),
    })),
  };
}

const NOTES: Record<FunctionName, string> = {
  'function-sample': 'GET /default/function-sample/test -> Hello, test!',
  'test-header': 'APISIX CI: [<Authorization>]',
  'test-uri': 'APISIX CI: /<greeting> -> Hello, <greeting>!',
  'test-body': 'APISIX CI: Hello, <body>!',
  echo: 'JSON of the request; ?status=, ?set-header=n:v',
  slow: '?delay=<ms> (5000); GET /__stats',
  stream: '?chunks=&interval= | ?size=<bytes>; GET /__stats',
  upload: '-> {bytes, sha256}; GET /__stats',
  redirect: '302 Location: /elsewhere',
  gzip: 'gzip iff Accept-Encoding: gzip',
  status: '/<code> -> that status',
  aws: 'SigV4 check (@smithy/signature-v4) -> JSON {verified, reason, ...}',
  lambda: 'Lambda proxy-integration answers: /ok, /multi, /base64, ...',
  openwhisk: 'POST /api/v1/namespaces/<ns>/actions/[<pkg>/]<action> (Basic auth)',
};

export function formatTable(servers: readonly FunctionServer[]): string {
  const w = Math.max(8, ...servers.map((s) => s.name.length));
  const uw = Math.max(3, ...servers.map((s) => s.url.length));
  const lines = [`${'FUNCTION'.padEnd(w)}  ${'URL'.padEnd(uw)}  NOTES`];
  for (const s of servers) lines.push(`${s.name.padEnd(w)}  ${s.url.padEnd(uw)}  ${NOTES[s.name]}`);
  return lines.join('\n');
}

async function main(argv: readonly string[]): Promise<void> {
  let plan: ServePlan | 'help';
  try {
    plan = parseServeArgs(argv);
  } catch (err) {
    process.stderr.write(`serve: ${err instanceof Error ? err.message : String(err)}\n\n${USAGE}\n`);
    process.exit(2);
  }
  if (plan === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return;
  }

  const servers: FunctionServer[] = [];
  const closeAll = () => Promise.all(servers.map((s) => s.close()));
  try {
    for (const f of plan.functions) servers.push(await startFunction(f.name, { host: plan.host, port: f.port }));
  } catch (err) {
    await closeAll();
    process.stderr.write(`serve: cannot start functions: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  }

  process.stdout.write(`${formatTable(servers)}\n\nfngate test functions ready (${servers.length}). Ctrl+C to stop.\n`);

  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    process.stdout.write(`\n${signal}: stopping\n`);
    closeAll().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main(process.argv.slice(2));
}

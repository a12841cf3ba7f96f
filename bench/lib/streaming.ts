/**
 * Streaming memory: a 100 MiB response and a 100 MiB upload through a function route (openfunction,
 * max_req_body_size raised to 256 MiB), on each runtime. The function is a node:http server in this process
 * (it streams the download from one reused 64 KiB buffer and counts the upload). The gateway's RSS (sum over its
 * process tree) is sampled every 20 ms; growth = the highest sample during the transfer − the RSS before it
 * (after a 1 MiB warm-up transfer each way). The goal: growth < 32 MB.
 * With `floors`, each runtime's floor (bench/lib/gateways.ts) moves the same bytes right after it, pointed at the
 * same function: what the runtime itself grows by when it does no more than pass a body through.
 */
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { type LaunchContext, LAUNCHERS } from './gateways.ts';
import { fixed, markdownTable, median } from './stats.ts';
import { sampleTree, sleep } from './sys.ts';

const MiB = 1024 * 1024;
const SIZE = 100 * MiB;
const CHUNK = Buffer.alloc(64 * 1024, 'x');

function chunks(total: number): Readable {
  let left = total;
  return new Readable({
    read() {
      if (left <= 0) {
        this.push(null);
        return;
      }
      const n = Math.min(left, CHUNK.length);
      left -= n;
      this.push(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n));
    },
  });
}

function startFunction(): Promise<Server> {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname.endsWith('/download')) {
      const size = Number(url.searchParams.get('size') ?? SIZE);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(size) });
      chunks(size).pipe(res);
      return;
    }
    if (url.pathname.endsWith('/upload')) {
      let n = 0;
      req.on('data', (c: Buffer) => {
        n += c.length;
      });
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ bytes: n }));
      });
      return;
    }
    res.writeHead(404);
    res.end();
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

function download(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false }, (res) => {
      let n = 0;
      res.on('data', (c: Buffer) => {
        n += c.length;
      });
      res.on('end', () => (res.statusCode === 200 ? resolve(n) : reject(new Error(`status ${res.statusCode}`))));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

function upload(url: string, size: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', agent: false, headers: { 'content-length': String(size), 'content-type': 'application/octet-stream' } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        text += c;
      });
      res.on('end', () => {
        if (res.statusCode !== 200) return reject(new Error(`status ${res.statusCode}: ${text.slice(0, 200)}`));
        try {
          resolve((JSON.parse(text) as { bytes: number }).bytes);
        } catch (err) {
          reject(err);
        }
      });
    });
    req.on('error', reject);
    chunks(size).pipe(req);
  });
}

/** Run `fn` while sampling the tree's RSS every 20 ms; returns fn's result, the highest sample and the time. */
async function sampled<T>(pid: number, fn: () => Promise<T>): Promise<{ value: T; peakMiB: number; seconds: number }> {
  let peak = 0;
  let done = false;
  const sampler = (async () => {
    while (!done) {
      peak = Math.max(peak, sampleTree(pid).rssMiB);
      await sleep(20);
    }
  })();
  const t0 = performance.now();
  try {
    const value = await fn();
    return { value, peakMiB: Math.max(peak, sampleTree(pid).rssMiB), seconds: (performance.now() - t0) / 1000 };
  } finally {
    done = true;
    await sampler;
  }
}

async function steadyRss(pid: number): Promise<number> {
  await sleep(300);
  const xs: number[] = [];
  for (let i = 0; i < 5; i++) {
    xs.push(sampleTree(pid).rssMiB);
    await sleep(40);
  }
  return median(xs);
}

export interface StreamingRow {
  runtime: string;
  baseMiB?: number;
  download?: { growthMiB: number; mibPerS: number; bytesOk: boolean };
  upload?: { growthMiB: number; mibPerS: number; bytesOk: boolean };
  error?: string;
}

export async function streamingSection(o: {
  launch: LaunchContext;
  runtimes: string[];
  /** runtime → its floor's launcher name; a floor runs right after its runtime */
  floors?: Record<string, string>;
  log: (s: string) => void;
}) {
  o.log('\n## streaming: 100 MiB down and 100 MiB up through a function route');
  const fn = await startFunction();
  const fnPort = (fn.address() as AddressInfo).port;
  const config = JSON.stringify({
    routes: [
      {
        id: 'stream',
        uri: '/stream/*',
        plugins: {
          openfunction: {
            function_uri: `http://127.0.0.1:${fnPort}/s`,
            max_req_body_size: 256 * MiB,
            timeout: 60_000,
          },
        },
      },
    ],
  });
  const rows: StreamingRow[] = [];
  const variants = o.runtimes.flatMap((rt) => (o.floors?.[rt] ? [rt, o.floors[rt]] : [rt]));
  try {
    for (const runtime of variants) {
      const row: StreamingRow = { runtime };
      rows.push(row);
      // The floors proxy every path to `upstreamPort`, the function here; fngate reads its route from `config`.
      const t = await LAUNCHERS[runtime]!({ ...o.launch, config, upstreamPort: fnPort }).catch((err: Error) => {
        row.error = err.message.split('\n')[0];
        return undefined;
      });
      if (!t) continue;
      try {
        await download(`${t.url}/stream/download?size=${MiB}`);
        await upload(`${t.url}/stream/upload`, MiB);
        const base = await steadyRss(t.pid);
        row.baseMiB = base;
        const d = await sampled(t.pid, () => download(`${t.url}/stream/download`));
        row.download = { growthMiB: d.peakMiB - base, mibPerS: SIZE / MiB / d.seconds, bytesOk: d.value === SIZE };
        const base2 = await steadyRss(t.pid);
        const u = await sampled(t.pid, () => upload(`${t.url}/stream/upload`, SIZE));
        row.upload = { growthMiB: u.peakMiB - base2, mibPerS: SIZE / MiB / u.seconds, bytesOk: u.value === SIZE };
        o.log(
          `${runtime}: RSS before ${fixed(base, 0)} MiB; download +${fixed(row.download.growthMiB, 1)} MiB at ${fixed(row.download.mibPerS, 0)} MiB/s` +
            `${row.download.bytesOk ? '' : ' (WRONG SIZE)'}; upload +${fixed(row.upload.growthMiB, 1)} MiB at ${fixed(row.upload.mibPerS, 0)} MiB/s${row.upload.bytesOk ? '' : ' (WRONG SIZE)'}`,
        );
      } catch (err) {
        row.error = (err as Error).message.split('\n')[0];
        o.log(`${runtime}: FAILED: ${row.error}`);
      } finally {
        await t.stop();
      }
    }
  } finally {
    await new Promise<void>((r) => fn.close(() => r()));
  }
  o.log('\n### Streaming memory (gateway RSS growth while 100 MiB pass through; goal < 32 MB)\n');
  o.log(
    markdownTable(
      ['variant', 'RSS before MiB', '100 MiB download: RSS growth MiB (MiB/s)', '100 MiB upload: RSS growth MiB (MiB/s)'],
      rows.map((r) => [
        r.runtime,
        fixed(r.baseMiB ?? Number.NaN, 0),
        r.download ? `+${fixed(r.download.growthMiB, 1)} (${fixed(r.download.mibPerS, 0)})${r.download.bytesOk ? '' : ' WRONG SIZE'}` : (r.error ?? '–'),
        r.upload ? `+${fixed(r.upload.growthMiB, 1)} (${fixed(r.upload.mibPerS, 0)})${r.upload.bytesOk ? '' : ' WRONG SIZE'}` : (r.error ?? '–'),
      ]),
    ),
  );
  return { sizeMiB: SIZE / MiB, rows };
}

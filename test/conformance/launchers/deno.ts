import { join } from 'node:path';
import { startProcess } from '../../helpers/process.ts';
import { type LaunchOptions, type Launched, LISTENING_LOG, listeningUrls, ROOT } from '../harness.ts';

/** Deno: `deno task start` (deno.json), with the narrow permissions the task computes, as a user starts it. */
export async function launch(opts: LaunchOptions): Promise<Launched> {
  const proc = await startProcess({
    cmd: join(ROOT, 'node_modules/.bin/deno'),
    args: ['task', '--quiet', 'start'],
    env: { NO_COLOR: '1', ...opts.env },
    cwd: ROOT,
    readyLog: LISTENING_LOG,
    timeoutMs: 20000,
  });
  return { proc, ...listeningUrls(proc) };
}

import { join } from 'node:path';
import { startProcess } from '../../helpers/process.ts';
import { type LaunchOptions, type Launched, LISTENING_LOG, listeningUrls, ROOT } from '../harness.ts';

/** Bun: the TypeScript entry run directly, as `npm run start:bun` does. */
export async function launch(opts: LaunchOptions): Promise<Launched> {
  const proc = await startProcess({
    cmd: join(ROOT, 'node_modules/.bin/bun'),
    args: ['run', 'src/runtime/bun.ts'],
    env: opts.env,
    cwd: ROOT,
    readyLog: LISTENING_LOG,
    timeoutMs: 15000,
  });
  return { proc, ...listeningUrls(proc) };
}

import { join } from 'node:path';
import { startProcess } from '../../helpers/process.ts';
import { type LaunchOptions, type Launched, LISTENING_LOG, listeningUrls, ROOT } from '../harness.ts';

/** Node: the built entry, as `npm start` runs it. */
export async function launch(opts: LaunchOptions): Promise<Launched> {
  const proc = await startProcess({
    cmd: process.execPath,
    args: [join(ROOT, 'dist/runtime/node.js')],
    env: opts.env,
    cwd: ROOT,
    readyLog: LISTENING_LOG,
    timeoutMs: 15000,
  });
  return { proc, ...listeningUrls(proc) };
}

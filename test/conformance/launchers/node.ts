import { join } from 'node:path';
import { startProcess } from '../../helpers/process.ts';
import { type LaunchOptions, type Launched, ROOT } from '../harness.ts';

/** Node: the built entry, as `npm start` runs it. */
export async function launch(opts: LaunchOptions): Promise<Launched> {
  const adminUrl = `http://127.0.0.1:${opts.adminPort}`;
  const proc = await startProcess({
    cmd: process.execPath,
    args: [join(ROOT, 'dist/runtime/node.js')],
    env: opts.env,
    cwd: ROOT,
    readyUrl: `${adminUrl}/apisix/admin`,
    timeoutMs: 15000,
  });
  return { proc, proxyUrl: `http://127.0.0.1:${opts.proxyPort}`, adminUrl };
}

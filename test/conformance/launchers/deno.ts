import { join } from 'node:path';
import { startProcess } from '../../helpers/process.ts';
import { type LaunchOptions, type Launched, ROOT } from '../harness.ts';

/** Deno: `deno task start` (deno.json), with the narrow permissions the task computes, as a user starts it. */
export async function launch(opts: LaunchOptions): Promise<Launched> {
  const adminUrl = `http://127.0.0.1:${opts.adminPort}`;
  const proc = await startProcess({
    cmd: join(ROOT, 'node_modules/.bin/deno'),
    args: ['task', '--quiet', 'start'],
    env: { NO_COLOR: '1', ...opts.env },
    cwd: ROOT,
    readyUrl: `${adminUrl}/apisix/admin`,
    timeoutMs: 20000,
  });
  return { proc, proxyUrl: `http://127.0.0.1:${opts.proxyPort}`, adminUrl };
}

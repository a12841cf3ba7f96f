import { join } from 'node:path';
import { startProcess } from '../../helpers/process.ts';
import { type LaunchOptions, type Launched, ROOT } from '../harness.ts';

/** Bun: the TypeScript entry run directly, as `npm run start:bun` does. */
export async function launch(opts: LaunchOptions): Promise<Launched> {
  const adminUrl = `http://127.0.0.1:${opts.adminPort}`;
  const proc = await startProcess({
    cmd: join(ROOT, 'node_modules/.bin/bun'),
    args: ['run', 'src/runtime/bun.ts'],
    env: opts.env,
    cwd: ROOT,
    readyUrl: `${adminUrl}/apisix/admin`,
    timeoutMs: 15000,
  });
  return { proc, proxyUrl: `http://127.0.0.1:${opts.proxyPort}`, adminUrl };
}

/**
 * Start-up pieces shared by the entries whose runtime has a file system and `node:*` modules (Node, Bun):
 * choosing the store from the settings, and the generated admin key.
 */
import { randomBytes } from 'node:crypto';
import { link, open, readFile, unlink } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Logger } from '../core/context.ts';
import { FileStore, makeDirectory } from '../store/file.ts';
import type { ConfigStore } from '../store/types.ts';
import type { Settings } from './settings.ts';

export async function openStore(settings: Settings, logger: Logger): Promise<ConfigStore> {
  if (settings.configFile) {
    const { openStandaloneFile } = await import('../store/standalone-file.ts');
    const path = resolve(settings.configFile);
    logger.info(`store: standalone file ${path} (Admin API is read-only)`);
    return openStandaloneFile({
      path,
      env: process.env,
      onError: (err: Error) => logger.error(`config file: ${err.message}`),
    });
  }
  if (settings.etcdHosts) {
    const { EtcdStore } = await import('../store/etcd.ts');
    logger.info(`store: etcd ${settings.etcdHosts.join(', ')} prefix ${settings.etcdPrefix}`);
    return EtcdStore.open({
      endpoints: settings.etcdHosts,
      prefix: settings.etcdPrefix,
      user: settings.etcdUser,
      password: settings.etcdPassword,
      logger,
    });
  }
  const dir = resolve(settings.dataDir);
  logger.info(`store: file ${join(dir, 'config.json')}`);
  return FileStore.open({ dir, onError: (err) => logger.error(`file store: ${err.message}`) });
}

/**
 * The admin key when ADMIN_KEY is unset: generated once (32 random bytes, hex), kept in
 * `<dataDir>/admin_key` with mode 0600 and reused on later starts. Never a built-in default.
 */
export async function ensureAdminKey(dataDir: string, logger: Logger): Promise<string> {
  const dir = resolve(dataDir);
  const path = join(dir, 'admin_key');
  try {
    const key = (await readFile(path, 'utf8')).trim();
    if (key.length >= 16) {
      // Printed whatever LOG_LEVEL says: the user must be able to find the key. Never the key itself.
      console.log(`fngate admin key: read from ${path}`);
      return key;
    }
    throw new Error(`${path} holds no usable key (at least 16 characters); delete it to generate a new one`);
  } catch (err) {
    if ((err as { code?: string }).code !== 'ENOENT') throw err;
  }
  try {
    await makeDirectory(dir, 0o700);
  } catch (err) {
    throw new Error(`cannot create DATA_DIR ${dir} for the generated admin key: ${(err as Error).message}`, { cause: err });
  }
  const key = randomBytes(32).toString('hex');
  // Written to a temp file, then link()ed into place: a crash never leaves an empty admin_key, and link fails
  // rather than overwrite a key another process just created.
  const tmp = `${path}.tmp-${process.pid}`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(`${key}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await link(tmp, path);
  } catch (err) {
    if ((err as { code?: string }).code === 'EEXIST') {
      await unlink(tmp);
      return ensureAdminKey(dataDir, logger);
    }
    throw err;
  } finally {
    await unlink(tmp).catch(() => {});
  }
  console.log(`fngate admin key: generated and stored in ${path} (mode 0600); pass it as X-API-KEY`);
  return key;
}
